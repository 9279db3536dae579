//! The state machines of [`super`] hosted on real stores: a [`TxParticipant`] drives a
//! [`Participant`] on a [`Replica`] and a record log, a [`TxCoordinator`] drives a
//! [`Coordinator`] on a record log. Each carries out the actions in order: a record is
//! written (durably, by the log) before anything after it is sent. What to send comes
//! back as `(to, message)` pairs for the transport.

use super::{
    Action, CoordRecord, Coordinator, Decision, PartRecord, PartState, Participant, TxId, TxMsg,
};
use crate::event::Op;
use crate::ports::{EventStore, GraphStore, StoreError};
use crate::replica::{Replica, ReplicaError};

/// A durable, append-only record log (the SQLite one is `SqliteTxLog` in the sqlite
/// adapter).
pub trait TxLog<R> {
    /// Writes one record durably: it is in `records` after any crash once this returns.
    fn append(&mut self, record: &R) -> Result<(), StoreError>;
    /// Every record, in the order written.
    fn records(&self) -> Result<Vec<R>, StoreError>;
}

/// A record log in memory, for fast tests: "durable" for as long as the value lives
/// (a crash is simulated by dropping the host and keeping the log). `fail_next` makes the
/// next appends fail, as a full disk would.
#[derive(Debug, Clone)]
pub struct MemoryTxLog<R> {
    pub records: Vec<R>,
    pub fail_next: usize,
}

impl<R> Default for MemoryTxLog<R> {
    fn default() -> Self {
        MemoryTxLog {
            records: Vec::new(),
            fail_next: 0,
        }
    }
}

impl<R: Clone> TxLog<R> for MemoryTxLog<R> {
    fn append(&mut self, record: &R) -> Result<(), StoreError> {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(StoreError::backend(
                "append to transaction log",
                std::io::Error::other("disk_full (injected)"),
            ));
        }
        self.records.push(record.clone());
        Ok(())
    }
    fn records(&self) -> Result<Vec<R>, StoreError> {
        Ok(self.records.clone())
    }
}

/// A record log whose next appends fail, as a full disk would (`disk_full (injected)`),
/// while its counter is above zero: how tests (and the CLI's
/// `KUZU_SYNC_INJECT_TX_LOG_FAILURES`) make a participant vote `storage`.
#[derive(Debug)]
pub struct FailingTxLog<L> {
    pub inner: L,
    pub fail: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<R, L: TxLog<R>> TxLog<R> for FailingTxLog<L> {
    fn append(&mut self, record: &R) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::backend(
                "append to the transaction log",
                std::io::Error::other("disk_full (injected)"),
            ));
        }
        self.inner.append(record)
    }
    fn records(&self) -> Result<Vec<R>, StoreError> {
        self.inner.records()
    }
}

impl<R, L: TxLog<R> + ?Sized> TxLog<R> for Box<L> {
    fn append(&mut self, record: &R) -> Result<(), StoreError> {
        (**self).append(record)
    }
    fn records(&self) -> Result<Vec<R>, StoreError> {
        (**self).records()
    }
}

impl<R, L: TxLog<R> + ?Sized> TxLog<R> for &mut L {
    fn append(&mut self, record: &R) -> Result<(), StoreError> {
        (**self).append(record)
    }
    fn records(&self) -> Result<Vec<R>, StoreError> {
        (**self).records()
    }
}

/// Messages for the transport: (recipient, message).
pub type Outbox = Vec<(String, TxMsg<Op>)>;

/// Where a participant sends what may leave before its handling of a message is done
/// (see [`TxParticipant::handle_with`]).
pub type Sink<'a> = &'a mut dyn FnMut(String, TxMsg<Op>);

/// What `tx-status` shows of one transaction prepared here and not decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub tx: TxId,
    pub participants: Vec<String>,
    pub ops: usize,
    pub locks: Vec<String>,
    pub deadline: u64,
    /// Past its deadline with no decision: waiting for the coordinator or the others.
    pub in_doubt: bool,
}

/// A replica taking part in coordinated transactions.
#[derive(Debug)]
pub struct TxParticipant<L: TxLog<PartRecord<Op>>> {
    part: Participant<Op>,
    log: L,
}

impl<L: TxLog<PartRecord<Op>>> TxParticipant<L> {
    /// Recovers from the record log. A prepared transaction whose commit marker is in the
    /// replica's log committed before a crash took its COMMITTED record: that record is
    /// written now.
    pub fn open<E: EventStore, G: GraphStore>(
        replica: &Replica<E, G>,
        mut log: L,
        now: u64,
    ) -> Result<Self, ReplicaError> {
        let part = recover(replica, &mut log, now)?;
        Ok(TxParticipant { part, log })
    }

    pub fn participant(&self) -> &Participant<Op> {
        &self.part
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// The transactions prepared here and not decided yet, with what they hold.
    pub fn prepared(&self, now: u64) -> Vec<Prepared> {
        self.part
            .prepared()
            .filter_map(|(tx, s)| match s {
                PartState::Prepared {
                    participants,
                    ops,
                    locks,
                    deadline,
                    ..
                } => Some(Prepared {
                    tx: tx.clone(),
                    participants: participants.clone(),
                    ops: ops.len(),
                    locks: locks.iter().map(|l| l.0.clone()).collect(),
                    deadline: *deadline,
                    in_doubt: now > *deadline,
                }),
                _ => None,
            })
            .collect()
    }

    /// Handles a message from `from` and returns what to send. On a store failure the
    /// participant is rebuilt from its records (what was not written did not happen) and
    /// the error returned; nothing is sent.
    pub fn handle<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        from: &str,
        msg: TxMsg<Op>,
        now: u64,
    ) -> Result<Outbox, ReplicaError> {
        self.handle_with(replica, from, msg, now, None)
    }

    /// [`TxParticipant::handle`], with `early` given: a commit's acknowledgement goes to
    /// `early` as soon as the commit is durable (its events logged, COMMITTED recorded),
    /// before the graph applies it (ARCHITECTURE.md, "Acknowledging a commit once it is
    /// durable"); what reached `early` is not in the returned outbox, even on an error
    /// after it.
    pub fn handle_with<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        from: &str,
        msg: TxMsg<Op>,
        now: u64,
        early: Option<Sink<'_>>,
    ) -> Result<Outbox, ReplicaError> {
        // The participant list of a commit, for its marker: the state forgets it.
        let committing = match (&msg, self.part.state(msg.tx())) {
            (
                TxMsg::Decide {
                    decision: Decision::Commit,
                    ..
                },
                Some(PartState::Prepared { participants, .. }),
            ) => Some(participants.clone()),
            _ => None,
        };
        let me = self.part.name().to_owned();
        let actions = {
            let rules = super::EngineRules {
                engine: replica.engine(),
                me: &me,
            };
            self.part.handle(&rules, from, msg, now)
        };
        self.carry_out(replica, actions, from, committing.as_deref(), now, early)
    }

    /// Refuses a prepare of `tx` from `from` before reading it (its ops do not read
    /// here): a vote against with `reason`, and its tombstone. One already known here
    /// gets what a duplicate gets.
    pub fn refuse<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        from: &str,
        tx: TxId,
        reason: super::Reason,
        detail: String,
        now: u64,
    ) -> Result<Outbox, ReplicaError> {
        if self.part.state(&tx).is_some() {
            let dup = TxMsg::Prepare {
                tx,
                participants: Vec::new(),
                ops: Vec::new(),
                deadline: u64::MAX,
                addresses: Default::default(),
            };
            return self.handle(replica, from, dup, now);
        }
        let actions = self.part.refuse(tx, from, reason, detail);
        self.carry_out(replica, actions, from, None, now, None)
    }

    /// An operator decides `tx`, prepared here (`kuzu-sync tx-resolve`): the decision is
    /// logged as the operator's, then carried out as a coordinator's would be (a commit
    /// appends its marker and ops in one append and applies them; an abort leaves its
    /// tombstone), and the locks are released. Returns the decision as recorded.
    pub fn resolve<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        tx: &TxId,
        decision: Decision,
        by: &str,
        reason: &str,
        now: u64,
    ) -> Result<super::OperatorDecision, super::ResolveError> {
        // The participant list of a commit, for its marker: the state forgets it.
        let participants = match self.part.state(tx) {
            Some(PartState::Prepared { participants, .. }) => Some(participants.clone()),
            _ => None,
        };
        let actions = self
            .part
            .resolve(tx, decision, by.to_owned(), reason.to_owned(), now)?;
        self.carry_out(replica, actions, "", participants.as_deref(), now, None)?;
        Ok(self
            .part
            .operator_decision(tx)
            .cloned()
            .expect("an operator's decision is kept once carried out"))
    }

    /// Time passes: a transaction prepared here whose commit marker has arrived from
    /// another participant commits (see [`TxParticipant::evidence`]); those still in
    /// doubt ask.
    pub fn tick<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        now: u64,
    ) -> Result<Outbox, ReplicaError> {
        let mut out = Vec::new();
        for (tx, author) in self.evidence(replica) {
            let decide = TxMsg::Decide {
                tx,
                decision: Decision::Commit,
            };
            out.extend(self.handle(replica, &author, decide, now)?);
        }
        let actions = self.part.tick(now);
        out.extend(self.carry_out(replica, actions, "", None, now, None)?);
        Ok(out)
    }

    /// The transactions prepared here that another of their participants committed, with
    /// that participant: the replica has received its commit marker, applied or held
    /// (atomic visibility holds the others' parts until this one's is in). A marker is
    /// written only on a commit, so it proves the decision. Markers from peers that are
    /// not among the transaction's participants prove nothing and are passed over.
    pub fn evidence<E: EventStore, G: GraphStore>(
        &self,
        replica: &Replica<E, G>,
    ) -> Vec<(TxId, String)> {
        let me = self.part.name();
        let mut waiting: std::collections::BTreeMap<&TxId, &[String]> = self
            .part
            .prepared()
            .filter_map(|(tx, s)| match s {
                PartState::Prepared { participants, .. } => Some((tx, participants.as_slice())),
                _ => None,
            })
            .collect();
        let fellow = |participants: &[String], peer: &str| {
            peer != me && participants.iter().any(|p| p == peer)
        };
        let mut found = Vec::new();
        waiting.retain(|tx, participants| {
            let author = replica.engine().tx_markers(tx).and_then(|marks| {
                marks
                    .parts
                    .keys()
                    .find(|p| fellow(participants, p.as_str()))
            });
            match author {
                Some(p) => {
                    found.push(((*tx).clone(), p.as_str().to_owned()));
                    false
                }
                None => true,
            }
        });
        if waiting.is_empty() {
            return found;
        }
        for e in replica.held() {
            let Op::Tx { tx, .. } = &e.op else { continue };
            if let Some(participants) = waiting.get(tx) {
                if fellow(participants, e.id.peer.as_str()) {
                    found.push((tx.clone(), e.id.peer.as_str().to_owned()));
                    waiting.remove(tx);
                }
            }
        }
        found
    }

    /// A local write outside any transaction: refused if a constraint refuses it, given
    /// the transactions prepared here, or if one of them holds a lock it needs.
    pub fn write<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        ops: Vec<Op>,
    ) -> Result<Vec<crate::clock::EventId>, ReplicaError> {
        let prepared: Vec<&[Op]> = self
            .part
            .prepared()
            .filter_map(|(_, s)| match s {
                PartState::Prepared { ops, .. } => Some(ops.as_slice()),
                _ => None,
            })
            .collect();
        let locks = replica.check_constraints(&ops, &prepared)?;
        if let Err(tx) = self.part.guard(&locks) {
            let held: Vec<&str> = locks
                .iter()
                .filter(|l| self.part.locks().get(l) == Some(tx))
                .map(|l| l.0.as_str())
                .collect();
            return Err(ReplicaError::Constraint(format!(
                "transaction {tx} is prepared here and holds {}",
                held.join(", ")
            )));
        }
        replica.write(ops)
    }

    fn carry_out<E: EventStore, G: GraphStore>(
        &mut self,
        replica: &mut Replica<E, G>,
        actions: Vec<Action<Op, PartRecord<Op>>>,
        from: &str,
        committing: Option<&[String]>,
        now: u64,
        mut early: Option<Sink<'_>>,
    ) -> Result<Outbox, ReplicaError> {
        let mut out = Vec::new();
        let mut queue = std::collections::VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send { to, msg } => out.push((to, msg)),
                Action::Persist(record) => {
                    let written = match &record {
                        PartRecord::Committed { tx, ops } => {
                            let participants = committing.unwrap_or_default();
                            // The commit stands once its events are logged: COMMITTED
                            // is recorded then, before the graph applies them, and the
                            // sends that follow (the acknowledgement) may leave.
                            let log = &mut self.log;
                            let mut recorded = Ok(());
                            let mut logged = || {
                                recorded = log.append(&record);
                                let Some(sink) = early.as_mut().filter(|_| recorded.is_ok()) else {
                                    return;
                                };
                                while matches!(queue.front(), Some(Action::Send { .. })) {
                                    if let Some(Action::Send { to, msg }) = queue.pop_front() {
                                        sink(to, msg);
                                    }
                                }
                            };
                            replica
                                .commit_tx_then(tx, participants, ops.clone(), &mut logged)
                                .and_then(|_| recorded.map_err(Into::into))
                        }
                        _ => self.log.append(&record).map_err(Into::into),
                    };
                    if let Err(e) = written {
                        if let PartRecord::Prepared { tx, .. } = &record {
                            // Not prepared after all: vote abort instead (`storage`).
                            queue.clear();
                            let to = if from.is_empty() {
                                &tx.coordinator
                            } else {
                                from
                            };
                            queue.extend(self.part.prepare_failed(tx, to, &e.to_string()));
                            continue;
                        }
                        self.part = recover(replica, &mut self.log, now)?;
                        return Err(e);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn recover<E: EventStore, G: GraphStore, L: TxLog<PartRecord<Op>>>(
    replica: &Replica<E, G>,
    log: &mut L,
    now: u64,
) -> Result<Participant<Op>, ReplicaError> {
    let me = replica.peer().as_str().to_owned();
    let mut records = log.records()?;
    let part = Participant::recover(me.clone(), records.clone(), now);
    let mut done = Vec::new();
    for (tx, s) in part.prepared() {
        if let PartState::Prepared { ops, .. } = s {
            if replica
                .engine()
                .tx_markers(tx)
                .is_some_and(|marks| marks.has(&me))
            {
                done.push(PartRecord::Committed {
                    tx: tx.clone(),
                    ops: ops.clone(),
                });
            }
        }
    }
    if done.is_empty() {
        return Ok(part);
    }
    for r in &done {
        log.append(r)?;
    }
    records.extend(done);
    Ok(Participant::recover(me, records, now))
}

/// A coordinator on its record log.
#[derive(Debug)]
pub struct TxCoordinator<L: TxLog<CoordRecord>> {
    coord: Coordinator,
    log: L,
    name: String,
    /// Set when even the epoch record of a restart could not be written: a new
    /// transaction could then reuse an id, so none is begun.
    broken: Option<String>,
}

impl<L: TxLog<CoordRecord>> TxCoordinator<L> {
    /// Recovers from the log: a new epoch, and the commits not acknowledged by everyone
    /// sent again (returned).
    pub fn open(name: &str, mut log: L, now: u64) -> Result<(Self, Outbox), StoreError> {
        let (coord, actions) = Coordinator::recover(name, log.records()?, now);
        let out = run(&mut log, actions)?;
        Ok((
            TxCoordinator {
                coord,
                log,
                name: name.to_owned(),
                broken: None,
            },
            out,
        ))
    }

    pub fn coordinator(&self) -> &Coordinator {
        &self.coord
    }

    /// Starts a transaction: the prepares to send. The ops are of any form the
    /// participants read (engine ops, or their wire form).
    #[allow(clippy::type_complexity)]
    pub fn begin<O: Clone>(
        &mut self,
        work: Vec<(String, Vec<O>)>,
        deadline: u64,
    ) -> Result<(TxId, Vec<(String, TxMsg<O>)>), StoreError> {
        if let Some(why) = &self.broken {
            return Err(StoreError::Corrupt(format!(
                "the coordinator's log could not record its restart ({why}); restart it"
            )));
        }
        let (tx, actions) = self.coord.begin(work, deadline);
        let out = actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Send { to, msg } => Some((to, msg)),
                Action::Persist(_) => None,
            })
            .collect();
        Ok((tx, out))
    }

    pub fn handle(&mut self, from: &str, msg: TxMsg<Op>, now: u64) -> Result<Outbox, StoreError> {
        let actions = self.coord.handle(from, msg, now);
        self.carry_out(actions, now)
    }

    pub fn tick(&mut self, now: u64) -> Result<Outbox, StoreError> {
        let actions = self.coord.tick(now);
        self.carry_out(actions, now)
    }

    /// A record that cannot be written stops everything after it; the coordinator then
    /// restarts from its log, as after a crash (a commit not logged is an abort, presumed).
    fn carry_out(
        &mut self,
        actions: Vec<Action<Op, CoordRecord>>,
        now: u64,
    ) -> Result<Outbox, StoreError> {
        match run(&mut self.log, actions) {
            Ok(out) => Ok(out),
            Err(e) => {
                let (coord, actions) =
                    Coordinator::recover::<Op>(&self.name, self.log.records()?, now);
                self.coord = coord;
                // Its resent commits go out with the next tick.
                if let Err(again) = run(&mut self.log, actions) {
                    self.broken = Some(again.to_string());
                }
                Err(e)
            }
        }
    }
}

fn run<L: TxLog<CoordRecord>>(
    log: &mut L,
    actions: Vec<Action<Op, CoordRecord>>,
) -> Result<Outbox, StoreError> {
    let mut out = Vec::new();
    for a in actions {
        match a {
            Action::Persist(r) => log.append(&r)?,
            Action::Send { to, msg } => out.push((to, msg)),
        }
    }
    Ok(out)
}
