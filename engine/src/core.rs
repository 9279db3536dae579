//! The core both hosts drive: it decides, the host executes (ARCHITECTURE.md, "JavaScript
//! and WASM").
//!
//! A change is staged in two steps. [`Core::stage_write`] and [`Core::stage_import`] check
//! the input, apply it to the in-memory [`Engine`] and return a [`Staged`] change: the
//! events to append to the log and the [`ApplyBatch`] to apply to the graph. The host
//! stores both (the native [`crate::Replica`] through its ports, synchronously; the JS host
//! in one Kuzu transaction, asynchronously), then calls [`Core::confirm`]. Until then the
//! core refuses another change. If the host cannot store it, the in-memory state is ahead of
//! the stores: the core stays *stale* and refuses work until the host rebuilds it from its
//! stores (`Replica::recover`, which also catches the graph up).
//!
//! The [`crate::Replica`] is the one host of this core: natively over SQLite and Kuzu, and
//! in the JS host (`adapters/wasm`) over an in-memory copy of the log and a graph store
//! that records batches for JS to run (ARCHITECTURE.md, "JavaScript and WASM").
//!
//! A refusal before anything was applied in memory leaves the core as it was (not stale):
//! bad input is cheap.

use crate::change::ApplyBatch;
use crate::clock::{EventId, PeerId, WallClock};
use crate::conflict::Conflict;
use crate::error::EngineError;
use crate::event::{Event, Op};
use crate::replica::{causal_order, ReplicaError};
use crate::state::Engine;

/// Own events a replica keeps queued offline unless told otherwise.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;

/// Progress of long work: (done, total).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// The replication state both hosts share: the engine, the conflicts it recorded, the
/// offline queue's mark and capacity, and whether the in-memory state can be trusted.
#[derive(Debug)]
pub struct Core {
    pub(crate) engine: Engine,
    pub(crate) conflicts: Vec<Conflict>,
    /// Own counter when the replica went offline.
    pub(crate) offline_mark: Option<u64>,
    pub(crate) queue_capacity: usize,
    /// Why the in-memory state may be ahead of the stores: a staged change not yet
    /// confirmed, a change that failed halfway, a failed rebuild, or a panic. Until a
    /// rebuild clears it, every change is refused; otherwise the next one would store a
    /// state (and a watermark) covering events the stores never got.
    pub(crate) stale: Option<String>,
    /// Received events waiting for the rest of a transaction (ARCHITECTURE.md, "Atomic
    /// visibility on every replica"), in a causal order: not applied, not logged, not in
    /// the version vector.
    pub(crate) held: Vec<Event>,
    /// How many times the bound on held events made an import apply transactions not all
    /// here.
    pub(crate) released_incomplete: u64,
    /// [`crate::tx::visibility::MAX_HELD_EVENTS`], lower in tests.
    pub(crate) held_limit: usize,
}

/// A change the core has applied in memory and the host must now store: append
/// [`Staged::events`] to the log, apply [`Staged::batch`] to the graph, then
/// [`Core::confirm`].
#[derive(Debug)]
pub struct Staged {
    /// New events first, in the order they were applied, then the duplicates received (the
    /// log checks those for equivocation).
    pub events: Vec<Event>,
    pub batch: ApplyBatch,
    /// Events applied (the new ones); the rest of `events` are duplicates.
    pub applied: usize,
    pub duplicates: usize,
    conflicts: Vec<Conflict>,
    /// The received events held after this change, if it changed them (the native host
    /// stores them before the events; see [`Core::held`]).
    pub held: Option<Vec<Event>>,
}

impl Staged {
    /// The ids of the new events.
    pub fn ids(&self) -> Vec<EventId> {
        self.events[..self.applied]
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    /// Conflicts this change recorded.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }
}

const PENDING: &str = "a staged change was neither confirmed nor rebuilt from the stores";

impl Core {
    pub fn new(peer: PeerId) -> Self {
        Core {
            engine: Engine::new(peer),
            conflicts: Vec::new(),
            offline_mark: None,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            stale: None,
            held: Vec::new(),
            released_incomplete: 0,
            held_limit: crate::tx::visibility::MAX_HELD_EVENTS,
        }
    }

    /// The received events waiting for the rest of their transactions.
    pub fn held(&self) -> &[Event] {
        &self.held
    }

    /// Takes back held events (stored by the host, read on open): those applied since are
    /// dropped.
    pub fn restore_held(&mut self, events: Vec<Event>) {
        self.held = events
            .into_iter()
            .filter(|e| !self.engine.is_applied(&e.id))
            .collect();
    }

    /// How many imports released incomplete transactions because of the bound.
    pub fn released_incomplete(&self) -> u64 {
        self.released_incomplete
    }

    fn own_counter(&self) -> u64 {
        self.engine.version_vector().get(self.engine.peer())
    }

    fn refuse_if_stale(&self) -> Result<(), ReplicaError> {
        match &self.stale {
            None => Ok(()),
            Some(reason) => Err(ReplicaError::Unrecovered {
                reason: reason.clone(),
            }),
        }
    }

    /// Prepares local ops as one atomic write: every op becomes an event, applied in memory,
    /// or (on the first refused op) the call fails naming it. A refused first op leaves the
    /// core as it was; a later one leaves it stale.
    pub fn stage_write(
        &mut self,
        ops: Vec<Op>,
        clock: &dyn WallClock,
        progress: Progress,
    ) -> Result<Staged, ReplicaError> {
        self.refuse_if_stale()?;
        if let Some(mark) = self.offline_mark {
            let queued = (self.own_counter() - mark) as usize;
            if queued + ops.len() > self.queue_capacity {
                return Err(ReplicaError::QueueFull {
                    capacity: self.queue_capacity,
                    queued,
                    adding: ops.len(),
                });
            }
        }
        let total = ops.len() as u64;
        let mut events = Vec::with_capacity(ops.len());
        let mut ops = ops.into_iter().enumerate();
        // A refused first op changes nothing (`prepare` only reads, `apply` checks an
        // event before it changes anything).
        if let Some((i, op)) = ops.next() {
            let e = self
                .engine
                .prepare(op, clock.now_ms())
                .map_err(|source| ReplicaError::Op { index: i, source })?;
            self.engine.apply(&e)?;
            events.push(e);
        }
        self.stale = Some(PENDING.into());
        for (i, op) in ops {
            let e = self
                .engine
                .prepare(op, clock.now_ms())
                .map_err(|source| ReplicaError::Op { index: i, source })
                .map_err(|e| self.failed(e))?;
            self.engine.apply(&e).map_err(|e| self.failed(e.into()))?;
            events.push(e);
            if i % 10_000 == 9_999 {
                progress(i as u64 + 1, total * 2);
            }
        }
        let (batch, conflicts) = self.engine.take_batch();
        let applied = events.len();
        Ok(Staged {
            events,
            batch,
            applied,
            duplicates: 0,
            conflicts,
            held: None,
        })
    }

    /// Prepares events received from another replica (a bundle, a sync message): events
    /// already held are kept aside as duplicates; the rest must connect to this replica's
    /// history. All or nothing: an invalid event refuses the whole import, naming it.
    /// Refusals up to the first event applied in memory leave the core as it was.
    pub fn stage_import(
        &mut self,
        events: Vec<Event>,
        now_ms: u64,
        progress: Progress,
    ) -> Result<Staged, ReplicaError> {
        self.refuse_if_stale()?;
        let (fresh, mut dups): (Vec<Event>, Vec<Event>) = events
            .into_iter()
            .partition(|e| !self.engine.is_applied(&e.id));
        // An event held here is a duplicate too; one with a held event's id and other
        // content is refused, as the log refuses one that differs from a logged event.
        let (fresh, held_dups) = self.split_held(fresh)?;
        let mut all = self.held.clone();
        let fresh_ids: std::collections::HashSet<EventId> =
            fresh.iter().map(|e| e.id.clone()).collect();
        all.extend(fresh);
        let order = causal_order(all, self.engine.version_vector())?;
        let mut gate = crate::tx::visibility::gate(order, &self.engine);
        let mut released = false;
        if gate.held() > self.held_limit {
            gate.release_all();
            released = true;
        }
        let (order, held) = gate.split();
        if let Some(first) = order.first() {
            self.engine.check(first)?;
        }
        if let Some(e) = order
            .iter()
            .find(|e| e.hlc.wall_ms > now_ms.saturating_add(crate::limits::MAX_CLOCK_AHEAD_MS))
        {
            return Err(EngineError::InvalidEvent {
                id: e.id.clone(),
                reason: format!(
                    "its hybrid timestamp {} ms is more than a day ahead of this replica's \
                     clock ({now_ms} ms)",
                    e.hlc.wall_ms
                ),
            }
            .into());
        }
        // The vector names every peer that ever wrote; past the limit a vector can no
        // longer be decoded by anyone, so the import that would get there is refused.
        let mut new_peers: Vec<&PeerId> = order
            .iter()
            .map(|e| &e.id.peer)
            .filter(|p| self.engine.version_vector().get(p) == 0)
            .collect();
        new_peers.sort();
        new_peers.dedup();
        let peers = self.engine.version_vector().len() + new_peers.len();
        if peers > crate::limits::MAX_VECTOR_PEERS {
            return Err(EngineError::InvalidEvent {
                id: order[0].id.clone(),
                reason: format!(
                    "this import would bring the replica to {peers} peers, over the limit \
                     of {}",
                    crate::limits::MAX_VECTOR_PEERS
                ),
            }
            .into());
        }
        self.stale = Some(PENDING.into());
        // `apply` checks each event once its causal past is applied (schema checks need the
        // tables its author had). Progress: applying in memory is the first half of the
        // work, storing and writing the graph the second.
        let total = order.len() as u64 * 2;
        for (i, e) in order.iter().enumerate() {
            self.engine.apply(e).map_err(|e| self.failed(e.into()))?;
            if i % 10_000 == 9_999 {
                progress(i as u64 + 1, total);
            }
        }
        // Held events are checked as they arrive, as far as the schema applied here (with
        // this import's own schema changes) can tell: up to the first held schema change
        // (what follows it may need it).
        for e in held.iter().take_while(|e| !matches!(e.op, Op::Schema(_))) {
            if fresh_ids.contains(&e.id) {
                self.engine.check(e).map_err(|e| self.failed(e.into()))?;
            }
        }
        let (batch, conflicts) = self.engine.take_batch();
        let applied = order.len();
        let duplicates = dups.len() + held_dups;
        let changed = held != self.held;
        if released {
            self.released_incomplete += 1;
        }
        self.held = held;
        let mut events = order;
        events.append(&mut dups);
        Ok(Staged {
            events,
            batch,
            applied,
            duplicates,
            conflicts,
            held: changed.then(|| self.held.clone()),
        })
    }

    /// Separates received events already held here (counted) from the rest.
    fn split_held(&self, fresh: Vec<Event>) -> Result<(Vec<Event>, usize), ReplicaError> {
        if self.held.is_empty() {
            return Ok((fresh, 0));
        }
        let held: std::collections::HashMap<&EventId, &Event> =
            self.held.iter().map(|e| (&e.id, e)).collect();
        let mut dups = 0;
        let mut rest = Vec::with_capacity(fresh.len());
        for e in fresh {
            match held.get(&e.id) {
                Some(h) if **h == e => dups += 1,
                Some(_) => {
                    return Err(EngineError::InvalidEvent {
                        id: e.id.clone(),
                        reason: "it differs from the event held here with that id \
                                 (equivocation)"
                            .into(),
                    }
                    .into())
                }
                None => rest.push(e),
            }
        }
        Ok((rest, dups))
    }

    /// The host stored a staged change: its conflicts are recorded and the core takes the
    /// next change.
    pub fn confirm(&mut self, staged: Staged) {
        self.conflicts.extend(staged.conflicts);
        self.stale = None;
    }

    fn failed(&mut self, e: ReplicaError) -> ReplicaError {
        self.stale = Some(format!("a change failed halfway: {e}"));
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::json::parse_op_lines;

    const TABLE: &str = r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(name STRING, age INT64, PRIMARY KEY(name))"}"#;
    const X: &str = r#"{"op":"add_node","table":"User","props":{"name":"x","age":3}}"#;
    const BAD: &str = r#"{"op":"add_node","table":"Nope","props":{"name":"x"}}"#;

    fn stage(core: &mut Core, lines: &[&str]) -> Result<Staged, ReplicaError> {
        let text = lines.join("\n");
        let ops = parse_op_lines(&text, core.engine.schema())?
            .into_iter()
            .map(|(_, op)| op)
            .collect();
        core.stage_write(ops, &FixedClock(1_000), &mut |_, _| {})
    }

    #[test]
    fn a_staged_change_blocks_the_next_until_confirmed() {
        let mut core = Core::new(PeerId::new("a").unwrap());
        let staged = stage(&mut core, &[TABLE]).unwrap();
        assert_eq!(staged.events.len(), 1);
        let err = stage(&mut core, &[X]).unwrap_err();
        assert!(matches!(err, ReplicaError::Unrecovered { .. }), "{err}");
        core.confirm(staged);
        let staged = stage(&mut core, &[X]).unwrap();
        assert_eq!(staged.ids()[0].counter, 2);
        assert!(!staged.batch.changes.is_empty());
    }

    #[test]
    fn a_refused_first_op_leaves_the_core_usable_and_a_later_one_stale() {
        let mut core = Core::new(PeerId::new("a").unwrap());
        let staged = stage(&mut core, &[TABLE]).unwrap();
        core.confirm(staged);
        let err = stage(&mut core, &[BAD]).unwrap_err();
        assert!(err.to_string().contains("Nope"), "{err}");
        assert!(core.stale.is_none());
        // A second op refused after the first was applied in memory.
        let mut ops: Vec<Op> = parse_op_lines(X, core.engine.schema())
            .unwrap()
            .into_iter()
            .map(|(_, op)| op)
            .collect();
        ops.push(Op::AddNode {
            table: "Nope".into(),
            props: Vec::new(),
        });
        let err = core
            .stage_write(ops, &FixedClock(1_000), &mut |_, _| {})
            .unwrap_err();
        assert!(err.to_string().contains("Nope"), "{err}");
        assert!(core.stale.is_some());
        assert!(matches!(
            stage(&mut core, &[X]).unwrap_err(),
            ReplicaError::Unrecovered { .. }
        ));
    }

    #[test]
    fn an_import_of_a_log_rebuilds_its_state_and_a_second_is_all_duplicates() {
        let mut a = Core::new(PeerId::new("a").unwrap());
        let staged = stage(&mut a, &[TABLE, X]).unwrap();
        let log = staged.events.clone();
        a.confirm(staged);
        let mut c = Core::new(PeerId::new("c").unwrap());
        let staged = c.stage_import(log.clone(), 1_000, &mut |_, _| {}).unwrap();
        assert_eq!((staged.applied, staged.duplicates), (2, 0));
        c.confirm(staged);
        assert_eq!(c.engine.dump(), a.engine.dump());
        let staged = c.stage_import(log, 1_000, &mut |_, _| {}).unwrap();
        assert_eq!((staged.applied, staged.duplicates), (0, 2));
        assert!(staged.batch.changes.is_empty());
    }
}
