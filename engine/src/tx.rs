//! Coordinated transactions: two-phase commit with presumed abort, as pure state machines
//! (sans-IO, like [`crate::sync::Session`]). ARCHITECTURE.md, "Coordinated transactions",
//! holds the semantics and the invariants.
//!
//! A [`Coordinator`] and each [`Participant`] take messages and clock ticks and return
//! [`Action`]s for their host to carry out in order: write a record durably (before any
//! later action), send a message. A participant's commit is the record
//! [`PartRecord::Committed`], which the host writes once the events the ops become are in
//! the event log (their commit marker is what recovery trusts), before it acknowledges. What the ops lock and whether they keep the constraints is
//! the host's knowledge, asked through [`TxRules`]; the state machines only hold the
//! locks, the records and the protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;

mod host;
mod operator;
mod rules;
pub mod visibility;
pub use host::{
    FailingTxLog, MemoryTxLog, Outbox, Prepared, Sink, TxCoordinator, TxLog, TxParticipant,
};
pub use operator::{Mismatch, OperatorDecision, ResolveError};
pub use rules::EngineRules;

/// The most participants one transaction may name.
pub const MAX_PARTICIPANTS: usize = 64;
/// The most ops one participant's part of a transaction may hold.
pub const MAX_TX_OPS: usize = 10_000;

/// A transaction: its coordinator, the coordinator's epoch (one more at each start) and
/// a number within the epoch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId {
    pub coordinator: String,
    pub epoch: u64,
    pub seq: u64,
}

impl std::str::FromStr for TxId {
    type Err = EngineError;
    /// `coordinator/epoch/seq`, as [`TxId`] displays.
    fn from_str(s: &str) -> Result<Self, EngineError> {
        let bad = |why: &str| EngineError::Parse {
            what: "transaction id".into(),
            reason: format!(
                "{:?}: {why} (expected coordinator/epoch/seq)",
                s.chars().take(200).collect::<String>()
            ),
        };
        let mut parts = s.split('/');
        let (Some(c), Some(e), Some(q), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not three parts"));
        };
        let coordinator =
            crate::clock::PeerId::new(c).map_err(|_| bad("the coordinator is not a peer id"))?;
        Ok(TxId {
            coordinator: coordinator.as_str().to_owned(),
            epoch: e.parse().map_err(|_| bad("the epoch is not a number"))?,
            seq: q.parse().map_err(|_| bad("the sequence is not a number"))?,
        })
    }
}

/// Checks a commit marker's fields (`Op::Tx`), as a received one must be checked: a peer
/// id as coordinator, 1 to [`MAX_PARTICIPANTS`] distinct peer ids, at most
/// [`MAX_TX_OPS`] ops.
pub fn check_marker(tx: &TxId, participants: &[String], ops: u32) -> Result<(), EngineError> {
    let bad = |reason: String| EngineError::InvalidOp {
        table: String::new(),
        reason: format!("commit marker of {tx}: {reason}"),
    };
    crate::clock::PeerId::new(tx.coordinator.as_str())
        .map_err(|e| bad(format!("coordinator: {e}")))?;
    if participants.is_empty() || participants.len() > MAX_PARTICIPANTS {
        return Err(bad(format!(
            "{} participants (1 to {MAX_PARTICIPANTS} allowed)",
            participants.len()
        )));
    }
    let mut seen = BTreeSet::new();
    for p in participants {
        crate::clock::PeerId::new(p.as_str()).map_err(|e| bad(format!("participant: {e}")))?;
        if !seen.insert(p) {
            return Err(bad(format!("participant {p} named twice")));
        }
    }
    if ops as usize > MAX_TX_OPS {
        return Err(bad(format!("{ops} ops (at most {MAX_TX_OPS})")));
    }
    Ok(())
}

/// A transaction message on the wire: a prepare's ops travel as JSON op lines (the format
/// of `kuzu-sync write`), which the participant reads against its own schema.
pub type WireMsg = TxMsg<String>;

/// Longest JSON op line a prepare may carry.
pub const MAX_OP_LINE: usize = 64 << 10;

/// Checks a received transaction message's sizes and names before it is used.
pub fn check_wire(msg: &WireMsg) -> Result<(), String> {
    let tx = msg.tx();
    crate::clock::PeerId::new(tx.coordinator.as_str())
        .map_err(|e| format!("transaction id: {e}"))?;
    match msg {
        TxMsg::Prepare {
            participants,
            ops,
            addresses,
            ..
        } => {
            check_marker(
                tx,
                participants,
                u32::try_from(ops.len()).unwrap_or(u32::MAX),
            )
            .map_err(|e| e.to_string())?;
            check_addresses(participants, addresses)?;
            if let Some(l) = ops.iter().find(|l| l.len() > MAX_OP_LINE) {
                return Err(format!(
                    "a prepare's op of {} bytes is over the limit of {MAX_OP_LINE}",
                    l.len()
                ));
            }
            Ok(())
        }
        TxMsg::Vote {
            vote: Vote::No { detail, .. },
            ..
        } if detail.len() > crate::limits::MAX_ERROR_TEXT => Err(format!(
            "a vote's detail of {} bytes is over the limit of {}",
            detail.len(),
            crate::limits::MAX_ERROR_TEXT
        )),
        _ => Ok(()),
    }
}

/// Longest participant URL a prepare may carry.
pub const MAX_URL: usize = 2048;

/// A prepare's addresses: only of named participants, each URL within [`MAX_URL`].
fn check_addresses(
    participants: &[String],
    addresses: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (peer, url) in addresses {
        if !participants.contains(peer) {
            return Err(format!(
                "a prepare's address for {peer}, which is not one of its participants"
            ));
        }
        if url.len() > MAX_URL {
            return Err(format!(
                "a prepare's URL for {peer} of {} bytes is over the limit of {MAX_URL}",
                url.len()
            ));
        }
    }
    Ok(())
}

/// The wire form of a message.
pub fn to_wire(msg: TxMsg<crate::event::Op>) -> WireMsg {
    let line = |o: &crate::event::Op| crate::json::op_to_json(o).to_string();
    msg.map_ops(|ops| Ok::<_, std::convert::Infallible>(ops.iter().map(line).collect()))
        .unwrap_or_else(|never| match never {})
}

/// A received message with its ops read against `schema`; an op that does not read is
/// the error (the participant votes `invalid` with it).
pub fn from_wire(
    msg: WireMsg,
    schema: &crate::schema::Schema,
) -> Result<TxMsg<crate::event::Op>, String> {
    msg.map_ops(|ops| {
        ops.iter()
            .enumerate()
            .map(|(i, l)| {
                crate::json::op_from_json(l, schema).map_err(|e| format!("op {}: {e}", i + 1))
            })
            .collect()
    })
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.coordinator, self.epoch, self.seq)
    }
}

/// Why a participant votes abort.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Another prepared transaction holds a lock the ops need.
    Locked,
    /// The ops would break a constraint, given the state and the prepared ops.
    Constraint,
    /// The ops are not valid here (unknown table, wrong type, …).
    Invalid,
    /// The PREPARED record could not be written.
    Storage,
    /// The transaction is past its deadline, or already aborted here.
    Late,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Locked => "locked",
            Reason::Constraint => "constraint",
            Reason::Invalid => "invalid",
            Reason::Storage => "storage",
            Reason::Late => "late",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    Yes,
    No { reason: Reason, detail: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Commit,
    Abort,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
        })
    }
}

/// A lock key, derived by the host from the ops (`node:User/alice`, `one:Owns/u1`,
/// `unique:User.name=alice`, …). Two transactions conflict when they share one.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lock(pub String);

/// What the coordinator and the participants send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxMsg<O> {
    /// Coordinator → participant: prepare these ops, vote by `deadline` (ms).
    Prepare {
        tx: TxId,
        participants: Vec<String>,
        ops: Vec<O>,
        deadline: u64,
        /// Where the coordinator reaches participants by URL (peer → URL; never a
        /// token), so that a participant in doubt can dial the others.
        #[serde(default)]
        addresses: BTreeMap<String, String>,
    },
    /// Participant → coordinator.
    Vote { tx: TxId, vote: Vote },
    /// The decision: from the coordinator, or from a participant that knows it.
    Decide { tx: TxId, decision: Decision },
    /// Participant → coordinator: the decision is applied here.
    Ack { tx: TxId },
    /// A participant in doubt asks (the coordinator, or another participant), with the
    /// transaction's vote deadline: a participant that never prepared it and is past
    /// that deadline can answer abort (it can never vote yes).
    Ask {
        tx: TxId,
        #[serde(default)]
        deadline: Option<u64>,
    },
}

impl<O> TxMsg<O> {
    /// The same message with a prepare's ops turned into other ones by `f` (the others
    /// carry none).
    pub fn map_ops<P, E>(self, f: impl FnOnce(Vec<O>) -> Result<Vec<P>, E>) -> Result<TxMsg<P>, E> {
        Ok(match self {
            TxMsg::Prepare {
                tx,
                participants,
                ops,
                deadline,
                addresses,
            } => TxMsg::Prepare {
                tx,
                participants,
                ops: f(ops)?,
                deadline,
                addresses,
            },
            TxMsg::Vote { tx, vote } => TxMsg::Vote { tx, vote },
            TxMsg::Decide { tx, decision } => TxMsg::Decide { tx, decision },
            TxMsg::Ack { tx } => TxMsg::Ack { tx },
            TxMsg::Ask { tx, deadline } => TxMsg::Ask { tx, deadline },
        })
    }

    pub fn tx(&self) -> &TxId {
        match self {
            TxMsg::Prepare { tx, .. }
            | TxMsg::Vote { tx, .. }
            | TxMsg::Decide { tx, .. }
            | TxMsg::Ack { tx }
            | TxMsg::Ask { tx, .. } => tx,
        }
    }
}

/// What a state machine asks its host to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action<O, R> {
    /// Write this record durably before carrying out any later action.
    Persist(R),
    Send {
        to: String,
        msg: TxMsg<O>,
    },
}

/// The coordinator's durable records. Presumed abort: no record is written for an abort.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordRecord {
    /// The coordinator started with this epoch.
    Epoch(u64),
    /// The decision to commit, forced before any commit is sent.
    Commit { tx: TxId, participants: Vec<String> },
    /// Every participant acknowledged the commit: the transaction can be forgotten.
    End { tx: TxId },
}

/// A participant's durable records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PartRecord<O> {
    /// Written before voting yes.
    Prepared {
        tx: TxId,
        participants: Vec<String>,
        ops: Vec<O>,
        locks: Vec<Lock>,
        deadline: u64,
        /// The participants' URLs, from the prepare (absent from older records).
        #[serde(default)]
        addresses: BTreeMap<String, String>,
    },
    /// The ops are committed: the host writes this record in the same log transaction as
    /// the events the ops become.
    Committed { tx: TxId, ops: Vec<O> },
    /// A tombstone: a later prepare of this transaction is refused.
    Aborted { tx: TxId },
    /// An operator decided a transaction prepared here (`kuzu-sync tx-resolve`), written
    /// before the decision takes effect. An abort is this record alone (it is the
    /// tombstone); a commit is followed by its COMMITTED record, without which the
    /// transaction is still prepared (the command was interrupted).
    Resolved {
        tx: TxId,
        decision: Decision,
        /// Who ran the command (the operating system's user name, as the host knows it).
        by: String,
        reason: String,
        /// When, in milliseconds of the host's wall clock.
        at: u64,
    },
    /// After an operator's decision, `from` sent the other one (a heuristic mismatch):
    /// kept for the operator to see, not applied.
    Mismatch {
        tx: TxId,
        decision: Decision,
        from: String,
        at: u64,
    },
}

/// What only the host knows: the locks the ops take, and whether they keep the
/// constraints.
pub trait TxRules<O> {
    /// The locks the ops need, or why they are invalid.
    fn locks(&self, ops: &[O]) -> Result<Vec<Lock>, String>;
    /// Whether the ops keep every constraint on the current state with `prepared` (the
    /// ops of the transactions prepared here and not decided yet) also applied.
    fn check(&self, ops: &[O], prepared: &[&[O]]) -> Result<(), String>;
}

/// How often a participant in doubt asks again, and a coordinator re-sends a commit (ms).
pub const RETRY_MS: u64 = 200;

/// A participant's view of one transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum PartState<O> {
    /// Voted yes; holds its locks until the decision.
    Prepared {
        participants: Vec<String>,
        ops: Vec<O>,
        locks: Vec<Lock>,
        deadline: u64,
        /// Where the other participants are, from the prepare (peer → URL).
        addresses: BTreeMap<String, String>,
        /// When to ask about the decision next, and how many times it has asked.
        next_ask: u64,
        asked: u32,
    },
    Committed,
    Aborted,
}

type PartAction<O> = Action<O, PartRecord<O>>;

/// A participant: a replica that takes part in transactions.
#[derive(Debug)]
pub struct Participant<O> {
    name: String,
    txs: BTreeMap<TxId, PartState<O>>,
    locks: BTreeMap<Lock, TxId>,
    /// The transactions an operator decided here, and any mismatch seen since.
    operator: BTreeMap<TxId, OperatorDecision>,
}

impl<O: Clone> Participant<O> {
    /// A participant from its durable records, in the order they were written: prepared
    /// transactions hold their locks again and are in doubt.
    pub fn recover(
        name: impl Into<String>,
        records: impl IntoIterator<Item = PartRecord<O>>,
        now: u64,
    ) -> Self {
        let mut p = Participant {
            name: name.into(),
            txs: BTreeMap::new(),
            locks: BTreeMap::new(),
            operator: BTreeMap::new(),
        };
        for record in records {
            match record {
                PartRecord::Prepared {
                    tx,
                    participants,
                    ops,
                    locks,
                    deadline,
                    addresses,
                } => {
                    for l in &locks {
                        p.locks.insert(l.clone(), tx.clone());
                    }
                    p.txs.insert(
                        tx,
                        PartState::Prepared {
                            participants,
                            ops,
                            locks,
                            deadline,
                            addresses,
                            next_ask: deadline.max(now),
                            asked: 0,
                        },
                    );
                }
                PartRecord::Committed { tx, .. } => p.finish(tx, PartState::Committed),
                PartRecord::Aborted { tx } => p.finish(tx, PartState::Aborted),
                PartRecord::Resolved {
                    tx,
                    decision,
                    by,
                    reason,
                    at,
                } => p.recover_resolved(tx, decision, by, reason, at),
                PartRecord::Mismatch {
                    tx,
                    decision,
                    from,
                    at,
                } => p.recover_mismatch(&tx, decision, from, at),
            }
        }
        p
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self, tx: &TxId) -> Option<&PartState<O>> {
        self.txs.get(tx)
    }

    /// The transactions prepared here and not decided: in doubt once past their deadline.
    pub fn prepared(&self) -> impl Iterator<Item = (&TxId, &PartState<O>)> {
        self.txs
            .iter()
            .filter(|(_, s)| matches!(s, PartState::Prepared { .. }))
    }

    /// Where to reach the other participants of the transactions prepared here (peer →
    /// URL, from their prepares): the peers a participant in doubt may have to dial.
    pub fn addresses(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (_, s) in self.prepared() {
            if let PartState::Prepared { addresses, .. } = s {
                for (peer, url) in addresses {
                    if *peer != self.name {
                        out.insert(peer.clone(), url.clone());
                    }
                }
            }
        }
        out
    }

    /// The locks held, and by which transaction.
    pub fn locks(&self) -> &BTreeMap<Lock, TxId> {
        &self.locks
    }

    /// Whether a local write outside any transaction that takes `locks` may go ahead:
    /// refused with the transaction holding one of them.
    pub fn guard(&self, locks: &[Lock]) -> Result<(), &TxId> {
        match locks.iter().find_map(|l| self.locks.get(l)) {
            Some(tx) => Err(tx),
            None => Ok(()),
        }
    }

    fn finish(&mut self, tx: TxId, state: PartState<O>) {
        if let Some(PartState::Prepared { locks, .. }) = self.txs.get(&tx) {
            for l in locks {
                if self.locks.get(l) == Some(&tx) {
                    self.locks.remove(l);
                }
            }
            // An operator's decision that never took effect (its command was interrupted
            // before the commit) is overtaken by the other one.
            let outcome = match state {
                PartState::Committed => Some(Decision::Commit),
                PartState::Aborted => Some(Decision::Abort),
                PartState::Prepared { .. } => None,
            };
            if self
                .operator
                .get(&tx)
                .is_some_and(|o| Some(o.decision) != outcome)
            {
                self.operator.remove(&tx);
            }
        }
        self.txs.insert(tx, state);
    }

    /// Votes abort on `tx` (and records its tombstone): for a prepare the host refuses
    /// before the state machine sees it (ops that do not read here).
    pub fn refuse(
        &mut self,
        tx: TxId,
        to: &str,
        reason: Reason,
        detail: String,
    ) -> Vec<PartAction<O>> {
        let mut out = Vec::new();
        if !matches!(self.txs.get(&tx), Some(PartState::Aborted)) {
            out.push(Action::Persist(PartRecord::Aborted { tx: tx.clone() }));
            self.finish(tx.clone(), PartState::Aborted);
        }
        out.push(Action::Send {
            to: to.to_owned(),
            msg: TxMsg::Vote {
                tx,
                vote: Vote::No { reason, detail },
            },
        });
        out
    }

    /// Handles a message from `from`.
    pub fn handle(
        &mut self,
        rules: &dyn TxRules<O>,
        from: &str,
        msg: TxMsg<O>,
        now: u64,
    ) -> Vec<PartAction<O>> {
        match msg {
            TxMsg::Prepare {
                tx,
                participants,
                ops,
                deadline,
                addresses,
            } => self.prepare(
                rules,
                from,
                tx,
                participants,
                ops,
                (deadline, addresses),
                now,
            ),
            TxMsg::Decide { tx, decision } => self.decide(from, tx, decision, now),
            TxMsg::Ask { tx, deadline } => self.answer(from, tx, deadline, now),
            // Not for participants: ignored.
            TxMsg::Vote { .. } | TxMsg::Ack { .. } => Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &mut self,
        rules: &dyn TxRules<O>,
        from: &str,
        tx: TxId,
        participants: Vec<String>,
        ops: Vec<O>,
        (deadline, addresses): (u64, BTreeMap<String, String>),
        now: u64,
    ) -> Vec<PartAction<O>> {
        match self.txs.get(&tx) {
            Some(PartState::Prepared { .. }) => {
                // A duplicate: the same vote again.
                return vec![Action::Send {
                    to: from.to_owned(),
                    msg: TxMsg::Vote {
                        tx,
                        vote: Vote::Yes,
                    },
                }];
            }
            Some(PartState::Committed) => return Vec::new(),
            Some(PartState::Aborted) => {
                return self.refuse(tx, from, Reason::Late, "already aborted here".into())
            }
            None => {}
        }
        if now > deadline {
            return self.refuse(
                tx,
                from,
                Reason::Late,
                format!("deadline {deadline} passed at {now}"),
            );
        }
        let locks = match rules.locks(&ops) {
            Ok(l) => l,
            Err(e) => return self.refuse(tx, from, Reason::Invalid, e),
        };
        if let Some((lock, holder)) = locks.iter().find_map(|l| self.locks.get(l).map(|h| (l, h))) {
            let detail = format!("{} is held by {holder}", lock.0);
            return self.refuse(tx, from, Reason::Locked, detail);
        }
        let prepared: Vec<&[O]> = self
            .prepared()
            .map(|(_, s)| match s {
                PartState::Prepared { ops, .. } => ops.as_slice(),
                _ => unreachable!("filtered"),
            })
            .collect();
        if let Err(e) = rules.check(&ops, &prepared) {
            return self.refuse(tx, from, Reason::Constraint, e);
        }
        for l in &locks {
            self.locks.insert(l.clone(), tx.clone());
        }
        self.txs.insert(
            tx.clone(),
            PartState::Prepared {
                participants: participants.clone(),
                ops: ops.clone(),
                locks: locks.clone(),
                deadline,
                addresses: addresses.clone(),
                next_ask: deadline,
                asked: 0,
            },
        );
        vec![
            Action::Persist(PartRecord::Prepared {
                tx: tx.clone(),
                participants,
                ops,
                locks,
                deadline,
                addresses,
            }),
            Action::Send {
                to: from.to_owned(),
                msg: TxMsg::Vote {
                    tx,
                    vote: Vote::Yes,
                },
            },
        ]
    }

    /// The host could not write the PREPARED record of `tx`: it votes abort instead.
    /// Drops the actions that followed that record (the yes vote); carry these out
    /// instead.
    pub fn prepare_failed(
        &mut self,
        tx: &TxId,
        coordinator: &str,
        error: &str,
    ) -> Vec<PartAction<O>> {
        self.refuse(tx.clone(), coordinator, Reason::Storage, error.to_owned())
    }

    fn decide(&mut self, from: &str, tx: TxId, decision: Decision, now: u64) -> Vec<PartAction<O>> {
        // A decision comes from the coordinator, or from a fellow participant answering a
        // question (named in the PREPARED record). Anyone else's is ignored: it could
        // otherwise commit what the coordinator aborted, or leave tombstones.
        let fellow = matches!(
            self.txs.get(&tx),
            Some(PartState::Prepared { participants, .. }) if participants.iter().any(|p| p == from)
        );
        if from != tx.coordinator && !fellow {
            return Vec::new();
        }
        let ack = |tx: TxId| Action::Send {
            to: tx.coordinator.clone(),
            msg: TxMsg::Ack { tx },
        };
        match (self.txs.get(&tx), decision) {
            (Some(PartState::Prepared { ops, .. }), Decision::Commit) => {
                let ops = ops.clone();
                self.finish(tx.clone(), PartState::Committed);
                vec![
                    Action::Persist(PartRecord::Committed {
                        tx: tx.clone(),
                        ops,
                    }),
                    ack(tx),
                ]
            }
            (Some(PartState::Prepared { .. }) | None, Decision::Abort) => {
                // Before the prepare too: the tombstone refuses it when it comes.
                self.finish(tx.clone(), PartState::Aborted);
                vec![
                    Action::Persist(PartRecord::Aborted { tx: tx.clone() }),
                    ack(tx),
                ]
            }
            (Some(PartState::Committed), Decision::Commit)
            | (Some(PartState::Aborted), Decision::Abort) => vec![ack(tx)],
            // Contradicting an operator's decision: the operator's stands, the mismatch is
            // recorded, and the sender is acknowledged so that it stops sending.
            (Some(PartState::Aborted), Decision::Commit)
            | (Some(PartState::Committed), Decision::Abort)
                if self.operator.contains_key(&tx) =>
            {
                let mut out = self.mismatch(&tx, decision, from, now);
                out.push(ack(tx));
                out
            }
            // A commit of a transaction never prepared here, or a decision contradicting
            // the one taken: a protocol error from the sender. Nothing changes.
            (None, Decision::Commit)
            | (Some(PartState::Aborted), Decision::Commit)
            | (Some(PartState::Committed), Decision::Abort) => Vec::new(),
        }
    }

    /// Another participant in doubt asks about `tx`, whose votes were due by
    /// `deadline`. The answer changes nothing here.
    fn answer(
        &mut self,
        from: &str,
        tx: TxId,
        deadline: Option<u64>,
        now: u64,
    ) -> Vec<PartAction<O>> {
        let decision = match self.txs.get(&tx) {
            Some(PartState::Committed) => Decision::Commit,
            Some(PartState::Aborted) => Decision::Abort,
            // In doubt too: nothing to say.
            Some(PartState::Prepared { .. }) => return Vec::new(),
            // Never prepared here, and past its deadline: a prepare of it is refused from
            // now on (`prepare` refuses past the deadline), so this replica never votes
            // yes and the coordinator cannot commit. Nothing needs writing.
            None if deadline.is_some_and(|d| now > d) => Decision::Abort,
            // Not past the deadline (or unknown): a prepare could still come. Answering
            // abort would need a tombstone, which would let any peer that can ask abort
            // a coordinator's next transactions.
            None => return Vec::new(),
        };
        vec![Action::Send {
            to: from.to_owned(),
            msg: TxMsg::Decide { tx, decision },
        }]
    }

    /// Time passes: transactions in doubt (past their deadline, undecided) ask the
    /// coordinator, and from the second time on the other participants too.
    pub fn tick(&mut self, now: u64) -> Vec<PartAction<O>> {
        let mut out = Vec::new();
        for (tx, state) in &mut self.txs {
            let PartState::Prepared {
                participants,
                next_ask,
                asked,
                deadline,
                ..
            } = state
            else {
                continue;
            };
            if now < *next_ask {
                continue;
            }
            *next_ask = now + RETRY_MS;
            *asked += 1;
            let ask = || TxMsg::Ask {
                tx: tx.clone(),
                deadline: Some(*deadline),
            };
            out.push(Action::Send {
                to: tx.coordinator.clone(),
                msg: ask(),
            });
            if *asked > 1 {
                for p in participants.iter().filter(|p| **p != self.name) {
                    out.push(Action::Send {
                        to: p.clone(),
                        msg: ask(),
                    });
                }
            }
        }
        out
    }
}

/// The coordinator's view of one transaction it has not forgotten.
#[derive(Clone, Debug, PartialEq, Eq)]
enum CoordState {
    /// Collecting votes.
    Voting {
        participants: Vec<String>,
        yes: BTreeSet<String>,
        deadline: u64,
    },
    /// Commit logged; waiting for acknowledgements.
    Committing {
        participants: Vec<String>,
        pending: BTreeSet<String>,
        resend_at: u64,
    },
}

type CoordAction<O> = Action<O, CoordRecord>;

/// The coordinator of transactions.
#[derive(Debug)]
pub struct Coordinator {
    name: String,
    epoch: u64,
    next_seq: u64,
    txs: BTreeMap<TxId, CoordState>,
    /// Decisions taken since this start, for the caller (not durable: aborts are
    /// presumed).
    decided: BTreeMap<TxId, Decision>,
}

impl Coordinator {
    /// A coordinator from its durable records: a new epoch, and every commit without an
    /// end record sent again. Everything else is forgotten: aborted, presumed.
    pub fn recover<O>(
        name: impl Into<String>,
        records: impl IntoIterator<Item = CoordRecord>,
        now: u64,
    ) -> (Self, Vec<CoordAction<O>>) {
        let mut epoch = 0;
        let mut open: BTreeMap<TxId, Vec<String>> = BTreeMap::new();
        for r in records {
            match r {
                CoordRecord::Epoch(e) => epoch = epoch.max(e),
                CoordRecord::Commit { tx, participants } => {
                    open.insert(tx, participants);
                }
                CoordRecord::End { tx } => {
                    open.remove(&tx);
                }
            }
        }
        let mut c = Coordinator {
            name: name.into(),
            epoch: epoch + 1,
            next_seq: 1,
            txs: BTreeMap::new(),
            decided: BTreeMap::new(),
        };
        let mut out = vec![Action::Persist(CoordRecord::Epoch(c.epoch))];
        for (tx, participants) in open {
            out.extend(commit_messages(&tx, &participants));
            c.decided.insert(tx.clone(), Decision::Commit);
            c.txs.insert(
                tx,
                CoordState::Committing {
                    pending: participants.iter().cloned().collect(),
                    participants,
                    resend_at: now + RETRY_MS,
                },
            );
        }
        (c, out)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The decision on `tx`, if taken since this start.
    pub fn decision(&self, tx: &TxId) -> Option<Decision> {
        self.decided.get(tx).copied()
    }

    /// Whether `tx` is still open (votes or acknowledgements outstanding).
    pub fn is_open(&self, tx: &TxId) -> bool {
        self.txs.contains_key(tx)
    }

    /// Starts a transaction: each participant with its ops, votes due by `deadline`.
    pub fn begin<O: Clone>(
        &mut self,
        work: Vec<(String, Vec<O>)>,
        deadline: u64,
    ) -> (TxId, Vec<CoordAction<O>>) {
        let tx = TxId {
            coordinator: self.name.clone(),
            epoch: self.epoch,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let participants: Vec<String> = work.iter().map(|(p, _)| p.clone()).collect();
        let out = work
            .into_iter()
            .map(|(p, ops)| Action::Send {
                to: p,
                msg: TxMsg::Prepare {
                    tx: tx.clone(),
                    participants: participants.clone(),
                    ops,
                    deadline,
                    addresses: BTreeMap::new(),
                },
            })
            .collect();
        self.txs.insert(
            tx.clone(),
            CoordState::Voting {
                participants,
                yes: BTreeSet::new(),
                deadline,
            },
        );
        (tx, out)
    }

    fn abort<O>(&mut self, tx: &TxId) -> Vec<CoordAction<O>> {
        let Some(CoordState::Voting { participants, .. }) = self.txs.remove(tx) else {
            return Vec::new();
        };
        self.decided.insert(tx.clone(), Decision::Abort);
        participants
            .into_iter()
            .map(|p| Action::Send {
                to: p,
                msg: TxMsg::Decide {
                    tx: tx.clone(),
                    decision: Decision::Abort,
                },
            })
            .collect()
    }

    /// Handles a message from participant `from`.
    pub fn handle<O: Clone>(&mut self, from: &str, msg: TxMsg<O>, now: u64) -> Vec<CoordAction<O>> {
        match msg {
            TxMsg::Vote { tx, vote } => self.vote(from, tx, vote, now),
            TxMsg::Ack { tx } => {
                let Some(CoordState::Committing { pending, .. }) = self.txs.get_mut(&tx) else {
                    return Vec::new();
                };
                pending.remove(from);
                if pending.is_empty() {
                    self.txs.remove(&tx);
                    return vec![Action::Persist(CoordRecord::End { tx })];
                }
                Vec::new()
            }
            TxMsg::Ask { tx, .. } => self.answer(from, tx),
            TxMsg::Prepare { .. } | TxMsg::Decide { .. } => Vec::new(),
        }
    }

    fn answer<O>(&self, from: &str, tx: TxId) -> Vec<CoordAction<O>> {
        let decision = match self.txs.get(&tx) {
            Some(CoordState::Committing { .. }) => Decision::Commit,
            // Still collecting: the deadline will decide.
            Some(CoordState::Voting { .. }) => return Vec::new(),
            // Forgotten: either ended (committed, and every participant acknowledged, so
            // nobody asks) or never committed: presumed abort.
            None if self.decided.get(&tx) == Some(&Decision::Commit) => Decision::Commit,
            None => Decision::Abort,
        };
        vec![Action::Send {
            to: from.to_owned(),
            msg: TxMsg::Decide { tx, decision },
        }]
    }

    fn vote<O: Clone>(
        &mut self,
        from: &str,
        tx: TxId,
        vote: Vote,
        now: u64,
    ) -> Vec<CoordAction<O>> {
        match self.txs.get_mut(&tx) {
            Some(CoordState::Voting {
                participants, yes, ..
            }) => {
                if !participants.iter().any(|p| p == from) {
                    return Vec::new();
                }
                if let Vote::No { .. } = vote {
                    return self.abort(&tx);
                }
                yes.insert(from.to_owned());
                if yes.len() < participants.len() {
                    return Vec::new();
                }
                let participants = participants.clone();
                let mut out = vec![Action::Persist(CoordRecord::Commit {
                    tx: tx.clone(),
                    participants: participants.clone(),
                })];
                out.extend(commit_messages(&tx, &participants));
                self.decided.insert(tx.clone(), Decision::Commit);
                self.txs.insert(
                    tx,
                    CoordState::Committing {
                        pending: participants.iter().cloned().collect(),
                        participants,
                        resend_at: now + RETRY_MS,
                    },
                );
                out
            }
            Some(CoordState::Committing { .. }) => {
                // A duplicate vote after the decision: the decision again.
                vec![Action::Send {
                    to: from.to_owned(),
                    msg: TxMsg::Decide {
                        tx,
                        decision: Decision::Commit,
                    },
                }]
            }
            // An unknown or older-epoch transaction: presumed abort, so a participant that
            // voted yes does not wait.
            None => self.answer(from, tx),
        }
    }

    /// Time passes: votes not in by the deadline abort; commits not acknowledged are sent
    /// again.
    pub fn tick<O: Clone>(&mut self, now: u64) -> Vec<CoordAction<O>> {
        let late: Vec<TxId> = self
            .txs
            .iter()
            .filter(|(_, s)| matches!(s, CoordState::Voting { deadline, .. } if now > *deadline))
            .map(|(tx, _)| tx.clone())
            .collect();
        let mut out = Vec::new();
        for tx in late {
            out.extend(self.abort(&tx));
        }
        for (tx, state) in &mut self.txs {
            if let CoordState::Committing {
                pending, resend_at, ..
            } = state
            {
                if now >= *resend_at {
                    *resend_at = now + RETRY_MS;
                    let pending: Vec<String> = pending.iter().cloned().collect();
                    out.extend(commit_messages(tx, &pending));
                }
            }
        }
        out
    }
}

fn commit_messages<O>(tx: &TxId, to: &[String]) -> Vec<CoordAction<O>> {
    to.iter()
        .map(|p| Action::Send {
            to: p.clone(),
            msg: TxMsg::Decide {
                tx: tx.clone(),
                decision: Decision::Commit,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod replica_sim;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod visibility_tests;
