//! Atomic visibility of committed transactions (ARCHITECTURE.md, "Atomic visibility on every
//! replica"): of the events an import would apply, which must wait because a transaction
//! they belong to, or depend on, is not all here yet.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap as HashMap;

use super::TxId;
use crate::clock::PeerId;
use crate::event::{Event, Op};
use crate::state::Engine;

/// At most this many received events wait for the rest of their transactions. An import
/// that would hold more releases them all (see [`Gate::release_all`]).
pub const MAX_HELD_EVENTS: usize = 100_000;

/// Rounds of [`gate`]'s fixed point before it holds every transaction of its input.
pub const MAX_GATE_ROUNDS: usize = 32;

/// What an import may apply now and what it must hold.
#[derive(Debug, Default)]
pub struct Gate {
    /// The input, in its (causal) order.
    order: Vec<Event>,
    /// Whether each event of `order` is held.
    held: Vec<bool>,
    /// The transactions whose events are held.
    pub waiting: BTreeSet<TxId>,
}

impl Gate {
    /// How many events are held.
    pub fn held(&self) -> usize {
        self.held.iter().filter(|h| **h).count()
    }

    /// Holds nothing: everything is applied, whole transactions or not (the bound was
    /// reached).
    pub fn release_all(&mut self) {
        self.held.fill(false);
    }

    /// The events to apply now and those to hold, each in the input's order.
    pub fn split(self) -> (Vec<Event>, Vec<Event>) {
        let (mut apply, mut hold) = (Vec::with_capacity(self.order.len()), Vec::new());
        for (e, h) in self.order.into_iter().zip(self.held) {
            if h {
                hold.push(e);
            } else {
                apply.push(e);
            }
        }
        (apply, hold)
    }
}

/// Per transaction in an import: the participants its markers name, and per participant
/// whose marker is in the import, the marker's counter and op count.
type Markers<'a> = BTreeMap<&'a TxId, (BTreeSet<&'a str>, BTreeMap<&'a str, (u64, u32)>)>;

/// Splits `order` (events in a causal order, none applied on `engine`, each peer's without
/// a gap after what `engine` has applied) into what may be applied now and what must be
/// held: the events of a transaction whose parts are not all in `engine` or `order`, and
/// every event after one of those on its peer or depending on one.
pub fn gate(order: Vec<Event>, engine: &Engine) -> Gate {
    // The markers in the input; without any, nothing waits (a marker applied before was
    // either part of a whole transaction or this replica's own part).
    let mut txs: Markers = BTreeMap::new();
    for e in &order {
        if let Op::Tx {
            tx,
            participants,
            ops,
        } = &e.op
        {
            let (names, parts) = txs.entry(tx).or_default();
            names.extend(participants.iter().map(String::as_str));
            parts.insert(e.id.peer.as_str(), (e.id.counter, *ops));
        }
    }
    if txs.is_empty() {
        let held = vec![false; order.len()];
        return Gate {
            order,
            held,
            waiting: BTreeSet::new(),
        };
    }
    // What will be here once `order` is applied: per peer, the last counter.
    let mut last: HashMap<&str, u64> = HashMap::default();
    for e in &order {
        last.insert(e.id.peer.as_str(), e.id.counter);
    }
    let have = |peer: &str| -> u64 {
        last.get(peer)
            .copied()
            .unwrap_or_else(|| PeerId::new(peer).map_or(0, |p| engine.version_vector().get(&p)))
    };
    let mut incomplete: BTreeSet<&TxId> = BTreeSet::new();
    for (tx, (names, parts)) in &txs {
        let applied = engine.tx_markers(tx);
        let whole = names.iter().all(|q| {
            let part = parts.get(q).copied().or_else(|| {
                applied.and_then(|m| {
                    m.parts
                        .iter()
                        .find(|(p, _)| p.as_str() == *q)
                        .map(|(_, part)| *part)
                })
            });
            part.is_some_and(|(c, n)| have(q) >= c + u64::from(n))
        });
        if !whole {
            incomplete.insert(tx);
        }
    }
    // Per peer, the counter ranges (marker and ops) of each transaction in the input.
    let mut ranges: HashMap<&str, Vec<(u64, u64, &TxId)>> = HashMap::default();
    for (tx, (_, parts)) in &txs {
        for (peer, (c, n)) in parts {
            ranges
                .entry(peer)
                .or_default()
                .push((*c, c + u64::from(*n), tx));
        }
    }
    for rs in ranges.values_mut() {
        rs.sort_unstable_by_key(|(from, _, _)| *from);
    }
    // The range starting last at or before the event's counter (an honest peer's ranges
    // never overlap): a binary search, so a peer sending many markers costs log time.
    let tx_of = |e: &Event| -> Option<&TxId> {
        let rs = ranges.get(e.id.peer.as_str())?;
        let i = rs.partition_point(|(from, _, _)| *from <= e.id.counter);
        let (_, to, tx) = rs.get(i.checked_sub(1)?)?;
        (e.id.counter <= *to).then_some(*tx)
    };
    // Held: an incomplete transaction's events and everything after them. A complete
    // transaction with an event held that way is held whole too; repeat until stable
    // (each round holds at least one more transaction).
    let mut rounds = 0;
    let held = loop {
        rounds += 1;
        let mut from: HashMap<&str, u64> = HashMap::default();
        let mut held = vec![false; order.len()];
        for (i, e) in order.iter().enumerate() {
            let peer = e.id.peer.as_str();
            let blocked = tx_of(e).is_some_and(|tx| incomplete.contains(tx))
                || from.get(peer).is_some_and(|b| *b < e.id.counter)
                || e.deps
                    .iter()
                    .any(|(q, d)| from.get(q.as_str()).is_some_and(|b| *b <= d));
            if blocked {
                held[i] = true;
                from.entry(peer).or_insert(e.id.counter);
            }
        }
        let more: Vec<&TxId> = order
            .iter()
            .zip(&held)
            .filter(|(_, h)| **h)
            .filter_map(|(e, _)| tx_of(e))
            .filter(|tx| !incomplete.contains(*tx))
            .collect();
        if more.is_empty() {
            break held;
        }
        incomplete.extend(more);
        // Each round costs a pass over the input; a crafted chain of transactions, each
        // held by the one before, would otherwise take a round per link. Past the bound,
        // every transaction of the input is held (never shown in part; the next import
        // decides again).
        if rounds == MAX_GATE_ROUNDS {
            incomplete.extend(txs.keys().copied());
        }
    };
    let waiting = incomplete.into_iter().cloned().collect();
    Gate {
        order,
        held,
        waiting,
    }
}
