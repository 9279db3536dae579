//! The transaction state machines: each transition, then a deterministic simulation of a
//! coordinator and three participants with message loss, duplication, reordering,
//! partitions, storage failures and crashes between any two actions.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// The ops of the simulation: a bounded counter (never below 0), a unique value, and a
/// MANY_ONE link (a source links at most once).
#[derive(Clone, Debug, PartialEq)]
enum SimOp {
    Add { counter: String, delta: i64 },
    Claim { value: String, owner: String },
    Link { from: String, to: String },
}

/// A participant's durable state: what its committed transactions applied.
#[derive(Clone, Debug, Default)]
struct Model {
    counters: BTreeMap<String, i64>,
    claims: BTreeMap<String, String>,
    links: BTreeMap<String, String>,
    applied: BTreeSet<TxId>,
    /// Constraint violations seen while applying (must stay empty).
    violations: Vec<String>,
}

impl Model {
    fn new() -> Self {
        let mut m = Model::default();
        m.counters.insert("stock".into(), START);
        m
    }

    /// Applies a committed transaction's ops, once.
    fn apply(&mut self, tx: &TxId, ops: &[SimOp]) {
        if !self.applied.insert(tx.clone()) {
            return;
        }
        for op in ops {
            match op {
                SimOp::Add { counter, delta } => {
                    let v = self.counters.entry(counter.clone()).or_insert(0);
                    *v += delta;
                    if *v < 0 {
                        self.violations.push(format!("{tx}: {counter} = {v}"));
                    }
                }
                SimOp::Claim { value, owner } => {
                    if let Some(old) = self.claims.insert(value.clone(), owner.clone()) {
                        self.violations
                            .push(format!("{tx}: {value} claimed by {old} and {owner}"));
                    }
                }
                SimOp::Link { from, to } => {
                    if let Some(old) = self.links.insert(from.clone(), to.clone()) {
                        self.violations
                            .push(format!("{tx}: {from} linked to {old} and {to}"));
                    }
                }
            }
        }
    }
}

const START: i64 = 10;

impl TxRules<SimOp> for Model {
    fn locks(&self, ops: &[SimOp]) -> Result<Vec<Lock>, String> {
        ops.iter()
            .map(|op| match op {
                SimOp::Add { counter, .. } if counter.is_empty() => {
                    Err("a counter needs a name".to_string())
                }
                SimOp::Add { counter, .. } => Ok(Lock(format!("counter:{counter}"))),
                SimOp::Claim { value, .. } => Ok(Lock(format!("unique:{value}"))),
                SimOp::Link { from, .. } => Ok(Lock(format!("one:{from}"))),
            })
            .collect()
    }

    fn check(&self, ops: &[SimOp], prepared: &[&[SimOp]]) -> Result<(), String> {
        let mut counters = self.counters.clone();
        let mut claimed: BTreeSet<&String> = self.claims.keys().collect();
        let mut linked: BTreeSet<&String> = self.links.keys().collect();
        // The prepared ops may commit: count their decrements and their claims.
        for op in prepared.iter().flat_map(|p| p.iter()) {
            match op {
                SimOp::Add { counter, delta } if *delta < 0 => {
                    *counters.entry(counter.clone()).or_insert(0) += delta
                }
                SimOp::Add { .. } => {}
                SimOp::Claim { value, .. } => {
                    claimed.insert(value);
                }
                SimOp::Link { from, .. } => {
                    linked.insert(from);
                }
            }
        }
        for op in ops {
            match op {
                SimOp::Add { counter, delta } => {
                    let v = counters.entry(counter.clone()).or_insert(0);
                    *v += delta;
                    if *v < 0 {
                        return Err(format!("{counter} would be {v}, below 0"));
                    }
                }
                SimOp::Claim { value, .. } => {
                    if !claimed.insert(value) {
                        return Err(format!("{value} is taken"));
                    }
                }
                SimOp::Link { from, .. } => {
                    if !linked.insert(from) {
                        return Err(format!("{from} already links"));
                    }
                }
            }
        }
        Ok(())
    }
}

fn tx(seq: u64) -> TxId {
    TxId {
        coordinator: "c".into(),
        epoch: 1,
        seq,
    }
}

fn add(delta: i64) -> SimOp {
    SimOp::Add {
        counter: "stock".into(),
        delta,
    }
}

fn prepare(t: &TxId, ops: Vec<SimOp>, deadline: u64) -> TxMsg<SimOp> {
    TxMsg::Prepare {
        tx: t.clone(),
        participants: vec!["p1".into(), "p2".into()],
        ops,
        deadline,
        addresses: Default::default(),
    }
}

fn decide(t: &TxId, decision: Decision) -> TxMsg<SimOp> {
    TxMsg::Decide {
        tx: t.clone(),
        decision,
    }
}

fn vote_of(actions: &[Action<SimOp, PartRecord<SimOp>>]) -> Option<Vote> {
    actions.iter().find_map(|a| match a {
        Action::Send {
            msg: TxMsg::Vote { vote, .. },
            ..
        } => Some(vote.clone()),
        _ => None,
    })
}

fn reason(actions: &[Action<SimOp, PartRecord<SimOp>>]) -> Option<Reason> {
    match vote_of(actions)? {
        Vote::No { reason, .. } => Some(reason),
        Vote::Yes => None,
    }
}

#[test]
fn a_participant_persists_before_voting_yes_and_repeats_its_vote() {
    let model = Model::new();
    let mut p = Participant::recover("p1", [], 0);
    let out = p.handle(&model, "c", prepare(&tx(1), vec![add(-2)], 100), 0);
    assert!(
        matches!(out[0], Action::Persist(PartRecord::Prepared { .. })),
        "{out:?}"
    );
    assert_eq!(vote_of(&out), Some(Vote::Yes));
    assert_eq!(p.locks().len(), 1);
    // A duplicated prepare: the same vote, nothing written again.
    let again = p.handle(&model, "c", prepare(&tx(1), vec![add(-2)], 100), 1);
    assert_eq!(again.len(), 1);
    assert_eq!(vote_of(&again), Some(Vote::Yes));
    // A local write on the locked counter is refused, naming the transaction.
    assert_eq!(p.guard(&[Lock("counter:stock".into())]), Err(&tx(1)));
    assert_eq!(p.guard(&[Lock("unique:x".into())]), Ok(()));
}

#[test]
fn votes_abort_with_each_reason() {
    let model = Model::new();
    let mut p = Participant::recover("p1", [], 0);
    p.handle(&model, "c", prepare(&tx(1), vec![add(-2)], 100), 0);
    // locked: the counter is held by tx 1.
    let out = p.handle(&model, "c", prepare(&tx(2), vec![add(1)], 100), 0);
    assert_eq!(reason(&out), Some(Reason::Locked));
    // constraint: 10 - 11 < 0 on a fresh participant.
    let mut q = Participant::recover("p2", [], 0);
    let out = q.handle(&model, "c", prepare(&tx(3), vec![add(-11)], 100), 0);
    assert_eq!(reason(&out), Some(Reason::Constraint));
    // constraint against a prepared op: tx 4 claims alice, tx 5 too.
    let claim = |owner: &str| SimOp::Claim {
        value: "alice".into(),
        owner: owner.into(),
    };
    q.handle(&model, "c", prepare(&tx(4), vec![claim("a")], 100), 0);
    let out = q.handle(&model, "c", prepare(&tx(5), vec![claim("b")], 100), 0);
    // The lock on the value is found first.
    assert_eq!(reason(&out), Some(Reason::Locked));
    // invalid.
    let bad = SimOp::Add {
        counter: String::new(),
        delta: 1,
    };
    let out = q.handle(&model, "c", prepare(&tx(6), vec![bad], 100), 0);
    assert_eq!(reason(&out), Some(Reason::Invalid));
    // late: past the deadline.
    let out = q.handle(&model, "c", prepare(&tx(7), vec![add(1)], 100), 101);
    assert_eq!(reason(&out), Some(Reason::Late));
    // storage: the host could not write the record.
    let out = q.handle(&model, "c", prepare(&tx(8), vec![add(1)], 100), 0);
    assert_eq!(vote_of(&out), Some(Vote::Yes));
    let out = q.prepare_failed(&tx(8), "c", "disk_full");
    assert_eq!(reason(&out), Some(Reason::Storage));
    assert!(
        q.locks().values().all(|t| *t != tx(8)),
        "its locks are released"
    );
    // Each refusal left a tombstone: a repeated prepare is late.
    let out = q.handle(&model, "c", prepare(&tx(3), vec![add(1)], 100), 0);
    assert_eq!(reason(&out), Some(Reason::Late));
}

/// The model's rules without locks, so that only the constraint check separates
/// transactions.
struct NoLocks(Model);

impl TxRules<SimOp> for NoLocks {
    fn locks(&self, _ops: &[SimOp]) -> Result<Vec<Lock>, String> {
        Ok(Vec::new())
    }
    fn check(&self, ops: &[SimOp], prepared: &[&[SimOp]]) -> Result<(), String> {
        self.0.check(ops, prepared)
    }
}

#[test]
fn the_constraint_is_checked_against_the_state_plus_every_prepared_op() {
    let rules = NoLocks(Model::new());
    let mut p = Participant::recover("p1", [], 0);
    // stock = 10: -9 fits; then -2 would not (10 - 9 - 2), -1 does.
    assert_eq!(
        vote_of(&p.handle(&rules, "c", prepare(&tx(1), vec![add(-9)], 100), 0)),
        Some(Vote::Yes)
    );
    let out = p.handle(&rules, "c", prepare(&tx(2), vec![add(-2)], 100), 0);
    assert_eq!(reason(&out), Some(Reason::Constraint));
    assert_eq!(
        vote_of(&p.handle(&rules, "c", prepare(&tx(3), vec![add(-1)], 100), 0)),
        Some(Vote::Yes)
    );
    // Once tx 1 is aborted, its decrement no longer counts.
    p.handle(
        &rules,
        "c",
        TxMsg::Decide {
            tx: tx(1),
            decision: Decision::Abort,
        },
        1,
    );
    assert_eq!(
        vote_of(&p.handle(&rules, "c", prepare(&tx(4), vec![add(-2)], 100), 1)),
        Some(Vote::Yes)
    );
}

#[test]
fn decisions_are_idempotent_and_an_abort_before_the_prepare_refuses_it() {
    let model = Model::new();
    let mut p = Participant::recover("p1", [], 0);
    p.handle(&model, "c", prepare(&tx(1), vec![add(-2)], 100), 0);
    let commit = TxMsg::Decide {
        tx: tx(1),
        decision: Decision::Commit,
    };
    let out = p.handle(&model, "c", commit.clone(), 1);
    assert!(
        matches!(&out[0], Action::Persist(PartRecord::Committed { ops, .. }) if ops == &vec![add(-2)])
    );
    assert!(p.locks().is_empty());
    // Again: only the acknowledgement.
    let out = p.handle(&model, "c", commit, 2);
    assert!(
        matches!(
            &out[..],
            [Action::Send {
                msg: TxMsg::Ack { .. },
                ..
            }]
        ),
        "{out:?}"
    );
    // A contradicting abort changes nothing.
    let out = p.handle(
        &model,
        "c",
        TxMsg::Decide {
            tx: tx(1),
            decision: Decision::Abort,
        },
        3,
    );
    assert!(out.is_empty());
    assert_eq!(p.state(&tx(1)), Some(&PartState::Committed));
    // An abort overtakes its prepare.
    let out = p.handle(
        &model,
        "c",
        TxMsg::Decide {
            tx: tx(2),
            decision: Decision::Abort,
        },
        4,
    );
    assert!(matches!(
        &out[0],
        Action::Persist(PartRecord::Aborted { .. })
    ));
    let out = p.handle(&model, "c", prepare(&tx(2), vec![add(1)], 100), 5);
    assert_eq!(reason(&out), Some(Reason::Late));
    // A commit of a transaction never prepared here is ignored.
    let out = p.handle(
        &model,
        "c",
        TxMsg::Decide {
            tx: tx(9),
            decision: Decision::Commit,
        },
        6,
    );
    assert!(out.is_empty());
    assert_eq!(p.state(&tx(9)), None);
}

#[test]
fn in_doubt_a_participant_asks_and_peers_answer_what_they_know() {
    let model = Model::new();
    let mut p1 = Participant::recover("p1", [], 0);
    p1.handle(&model, "c", prepare(&tx(1), vec![add(-1)], 100), 0);
    // Before the deadline: silent. After: the coordinator, then everyone.
    assert!(p1.tick(50).is_empty());
    let first = p1.tick(101);
    assert_eq!(first.len(), 1);
    assert!(p1.tick(150).is_empty());
    let second = p1.tick(101 + RETRY_MS);
    let to: Vec<&str> = second
        .iter()
        .map(|a| match a {
            Action::Send { to, .. } => to.as_str(),
            _ => "",
        })
        .collect();
    assert_eq!(to, ["c", "p2"]);
    // p1 asks with the deadline.
    assert!(second.iter().all(|a| matches!(
        a,
        Action::Send {
            msg: TxMsg::Ask {
                deadline: Some(100),
                ..
            },
            ..
        }
    )));
    // p2 never saw the prepare. Before the deadline (or not told it) it cannot say: a
    // prepare could still come, and it writes nothing for a question.
    let mut p2: Participant<SimOp> = Participant::recover("p2", [], 0);
    let ask = |deadline| TxMsg::Ask {
        tx: tx(1),
        deadline,
    };
    assert!(p2.handle(&model, "p1", ask(Some(100)), 100).is_empty());
    assert!(p2.handle(&model, "p1", ask(None), 120).is_empty());
    // Past the deadline it can never vote yes: abort, and still nothing written.
    let out = p2.handle(&model, "p1", ask(Some(100)), 120);
    assert!(
        matches!(
            &out[..],
            [Action::Send { to, msg: TxMsg::Decide { decision: Decision::Abort, .. } }] if to == "p1"
        ),
        "{out:?}"
    );
    assert!(p2.state(&tx(1)).is_none());
    // Its prepare, arriving after that, is refused by the deadline.
    let out = p2.handle(&model, "c", prepare(&tx(1), vec![add(1)], 100), 121);
    assert_eq!(reason(&out), Some(Reason::Late));
    // A restart keeps p1 in doubt, its lock held.
    let records = vec![PartRecord::Prepared {
        tx: tx(1),
        participants: vec!["p1".into(), "p2".into()],
        ops: vec![add(-1)],
        locks: vec![Lock("counter:stock".into())],
        deadline: 100,
        addresses: Default::default(),
    }];
    let p1 = Participant::recover("p1", records, 500);
    assert_eq!(p1.prepared().count(), 1);
    assert_eq!(p1.guard(&[Lock("counter:stock".into())]), Err(&tx(1)));
}

/// A decision is taken from the coordinator or from a participant the PREPARED record
/// names (an answer to a question); a stranger's changes nothing, whatever it says and
/// whether or not the transaction is known here.
#[test]
fn a_decision_counts_only_from_the_coordinator_or_a_fellow_participant() {
    let model = Model::new();
    let mut p1 = Participant::recover("p1", [], 0);
    p1.handle(&model, "c", prepare(&tx(1), vec![add(-1)], 100), 0);
    for d in [Decision::Commit, Decision::Abort] {
        assert!(p1
            .handle(&model, "mallory", decide(&tx(1), d), 150)
            .is_empty());
        assert!(p1
            .handle(&model, "mallory", decide(&tx(2), d), 150)
            .is_empty());
    }
    assert!(matches!(p1.state(&tx(1)), Some(PartState::Prepared { .. })));
    assert!(p1.state(&tx(2)).is_none());
    // p2 is named in the prepare: its answer decides, and the acknowledgement goes to
    // the coordinator.
    let out = p1.handle(&model, "p2", decide(&tx(1), Decision::Commit), 150);
    assert!(matches!(
        out[0],
        Action::Persist(PartRecord::Committed { .. })
    ));
    assert!(matches!(&out[1], Action::Send { to, msg: TxMsg::Ack { .. } } if to == "c"));
    assert_eq!(p1.state(&tx(1)), Some(&PartState::Committed));
    assert!(p1.locks().is_empty());
}

#[test]
fn the_coordinator_forces_commit_presumes_abort_and_recovers() {
    let mut c = Coordinator::recover::<SimOp>("c", [], 0).0;
    assert_eq!(c.epoch(), 1);
    let (t, out) = c.begin(
        vec![("p1".into(), vec![add(-1)]), ("p2".into(), vec![add(1)])],
        100,
    );
    assert_eq!(out.len(), 2);
    let yes = || TxMsg::<SimOp>::Vote {
        tx: t.clone(),
        vote: Vote::Yes,
    };
    assert!(c.handle::<SimOp>("p1", yes(), 1).is_empty());
    let out = c.handle::<SimOp>("p2", yes(), 2);
    assert!(
        matches!(&out[0], Action::Persist(CoordRecord::Commit { .. })),
        "commit is forced first"
    );
    assert_eq!(out.len(), 3);
    // Crash before the acknowledgements: the commit is sent again, in a new epoch.
    let records = vec![
        CoordRecord::Epoch(1),
        CoordRecord::Commit {
            tx: t.clone(),
            participants: vec!["p1".into(), "p2".into()],
        },
    ];
    let (mut c2, out) = Coordinator::recover::<SimOp>("c", records.clone(), 10);
    assert_eq!(c2.epoch(), 2);
    assert_eq!(out.len(), 3);
    assert!(c2
        .handle::<SimOp>("p1", TxMsg::Ack { tx: t.clone() }, 11)
        .is_empty());
    let out = c2.handle::<SimOp>("p2", TxMsg::Ack { tx: t.clone() }, 12);
    assert!(matches!(
        &out[..],
        [Action::Persist(CoordRecord::End { .. })]
    ));
    // A transaction of epoch 1 with no commit record: presumed abort.
    let old = TxId {
        coordinator: "c".into(),
        epoch: 1,
        seq: 7,
    };
    let out = c2.handle::<SimOp>(
        "p1",
        TxMsg::Vote {
            tx: old.clone(),
            vote: Vote::Yes,
        },
        13,
    );
    assert!(matches!(
        &out[..],
        [Action::Send {
            msg: TxMsg::Decide {
                decision: Decision::Abort,
                ..
            },
            ..
        }]
    ));
    // Votes not in by the deadline: abort, nothing written.
    let (t2, _) = c2.begin(vec![("p1".into(), vec![add(-1)])], 200);
    let out = c2.tick::<SimOp>(201);
    assert!(out.iter().all(|a| matches!(a, Action::Send { .. })));
    assert_eq!(c2.decision(&t2), Some(Decision::Abort));
    // A no vote aborts at once.
    let (t3, _) = c2.begin(
        vec![("p1".into(), vec![add(-1)]), ("p2".into(), vec![add(1)])],
        300,
    );
    let no = TxMsg::<SimOp>::Vote {
        tx: t3.clone(),
        vote: Vote::No {
            reason: Reason::Storage,
            detail: "disk_full".into(),
        },
    };
    let out = c2.handle::<SimOp>("p2", no, 250);
    assert_eq!(out.len(), 2);
    assert_eq!(c2.decision(&t3), Some(Decision::Abort));
}

// ------------------------------------------------------------------ the simulation

/// A small deterministic generator (xorshift), so a seed names a run.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PARTS: [&str; 3] = ["p1", "p2", "p3"];

struct Part {
    name: &'static str,
    records: Vec<PartRecord<SimOp>>,
    model: Model,
    live: Option<Participant<SimOp>>,
}

struct Sim {
    rng: Rng,
    now: u64,
    faults: bool,
    coord_records: Vec<CoordRecord>,
    coord: Option<Coordinator>,
    parts: Vec<Part>,
    net: Vec<(String, String, TxMsg<SimOp>)>,
    /// Nodes cut off, until which step.
    cut: BTreeMap<String, u64>,
    steps: u64,
    began: Vec<TxId>,
    reasons: BTreeMap<String, usize>,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut sim = Sim {
            rng: Rng::new(seed),
            now: 0,
            faults: true,
            coord_records: Vec::new(),
            coord: None,
            parts: PARTS
                .iter()
                .map(|&name| Part {
                    name,
                    records: Vec::new(),
                    model: Model::new(),
                    live: Some(Participant::recover(name, [], 0)),
                })
                .collect(),
            net: Vec::new(),
            cut: BTreeMap::new(),
            steps: 0,
            began: Vec::new(),
            reasons: BTreeMap::new(),
        };
        sim.restart_coordinator();
        sim
    }

    fn restart_coordinator(&mut self) {
        let (c, out) = Coordinator::recover("c", self.coord_records.clone(), self.now);
        self.coord = Some(c);
        self.run_coord(out);
    }

    /// Carries out the coordinator's actions in order; may crash between two.
    fn run_coord(&mut self, actions: Vec<Action<SimOp, CoordRecord>>) {
        for a in actions {
            if self.faults && self.rng.below(1000) < 5 {
                self.coord = None;
                return;
            }
            match a {
                Action::Persist(r) => self.coord_records.push(r),
                Action::Send { to, msg } => self.net.push(("c".into(), to, msg)),
            }
        }
    }

    fn run_part(&mut self, i: usize, actions: Vec<Action<SimOp, PartRecord<SimOp>>>) {
        let mut queue: std::collections::VecDeque<_> = actions.into();
        while let Some(a) = queue.pop_front() {
            if self.faults && self.rng.below(1000) < 5 {
                self.parts[i].live = None;
                return;
            }
            match a {
                Action::Persist(PartRecord::Prepared { tx, .. })
                    if self.faults && self.rng.chance(5) =>
                {
                    // The disk is full: the record is not written, the vote is no.
                    let p = self.parts[i].live.as_mut().expect("running");
                    queue = p.prepare_failed(&tx, "c", "disk_full").into();
                }
                Action::Persist(r) => {
                    let part = &mut self.parts[i];
                    if let PartRecord::Committed { tx, ops } = &r {
                        part.model.apply(tx, ops);
                    }
                    part.records.push(r);
                }
                Action::Send { to, msg } => {
                    if let TxMsg::Vote {
                        vote: Vote::No { reason, .. },
                        ..
                    } = &msg
                    {
                        *self.reasons.entry(reason.to_string()).or_default() += 1;
                    }
                    self.net.push((self.parts[i].name.into(), to, msg));
                }
            }
        }
    }

    /// A random transaction over two or three participants.
    fn begin(&mut self) {
        let Some(c) = self.coord.as_mut() else { return };
        let n = 2 + self.rng.below(2) as usize;
        let first = self.rng.below(3) as usize;
        let seq = self.began.len();
        let mut work = Vec::new();
        let kind = self.rng.below(3);
        let amount = 1 + self.rng.below(3) as i64;
        for k in 0..n {
            let p = PARTS[(first + k) % 3];
            let op = match kind {
                // A transfer: the first gives, the others receive.
                0 if k == 0 => add(-amount * (n as i64 - 1)),
                0 => add(amount),
                // Eight names raced for by every transaction.
                1 => SimOp::Claim {
                    value: format!("name{}", self.rng.below(8)),
                    owner: format!("t{seq}"),
                },
                _ => SimOp::Link {
                    from: format!("u{}", self.rng.below(8)),
                    to: format!("t{seq}"),
                },
            };
            work.push((p.to_string(), vec![op]));
        }
        let deadline = self.now + 50 + self.rng.below(100);
        let (t, out) = c.begin(work, deadline);
        self.began.push(t);
        self.run_coord(out);
    }

    fn deliver(&mut self) {
        if self.net.is_empty() {
            return;
        }
        let k = self.rng.below(self.net.len() as u64) as usize;
        let (from, to, msg) = if self.faults && self.rng.chance(10) {
            self.net[k].clone() // duplicated: a copy stays in flight
        } else {
            self.net.swap_remove(k)
        };
        if self.faults && self.rng.chance(5) {
            return; // lost
        }
        if self.cut.contains_key(&from) || self.cut.contains_key(&to) {
            return;
        }
        let now = self.now;
        if to == "c" {
            if let Some(c) = self.coord.as_mut() {
                let out = c.handle(&from, msg, now);
                self.run_coord(out);
            }
        } else if let Some(i) = self.parts.iter().position(|p| p.name == to) {
            let part = &mut self.parts[i];
            if let Some(p) = part.live.as_mut() {
                let out = p.handle(&part.model, &from, msg, now);
                self.run_part(i, out);
            }
        }
    }

    fn tick(&mut self) {
        self.now += 5 + self.rng.below(25);
        let now = self.now;
        if let Some(c) = self.coord.as_mut() {
            let out = c.tick(now);
            self.run_coord(out);
        }
        for i in 0..self.parts.len() {
            if let Some(p) = self.parts[i].live.as_mut() {
                let out = p.tick(now);
                self.run_part(i, out);
            }
        }
    }

    fn restart_parts(&mut self) {
        for part in &mut self.parts {
            if part.live.is_none() {
                part.live = Some(Participant::recover(
                    part.name,
                    part.records.clone(),
                    self.now,
                ));
            }
        }
    }

    /// One random step under faults.
    fn step(&mut self) {
        self.steps += 1;
        let steps = self.steps;
        self.cut.retain(|_, until| *until > steps);
        match self.rng.below(100) {
            0..=7 => self.begin(),
            8..=79 => self.deliver(),
            80..=89 => self.tick(),
            90..=91 if self.faults => {
                // A crash of one node (it restarts later).
                let who = self.rng.below(4) as usize;
                if who == 3 {
                    self.coord = None;
                } else {
                    self.parts[who].live = None;
                }
            }
            92..=96 => {
                if self.coord.is_none() {
                    self.restart_coordinator();
                }
                self.restart_parts();
            }
            97.. if self.faults => {
                // A partition: one node cut off for 10 to 60 steps.
                let who = ["c", "p1", "p2", "p3"][self.rng.below(4) as usize];
                let until = steps + 10 + self.rng.below(50);
                self.cut.insert(who.into(), until);
            }
            _ => {}
        }
    }

    /// No more faults: everyone restarts (the coordinator only if `coordinator_back`),
    /// the network heals and runs until quiet.
    fn heal(&mut self, coordinator_back: bool) {
        self.faults = false;
        self.cut.clear();
        if coordinator_back && self.coord.is_none() {
            self.restart_coordinator();
        }
        if !coordinator_back {
            self.coord = None;
        }
        self.restart_parts();
        for _ in 0..200 {
            while !self.net.is_empty() {
                self.deliver();
            }
            self.tick();
            let doubt = self
                .parts
                .iter()
                .any(|p| p.live.as_ref().is_some_and(|l| l.prepared().count() > 0));
            if self.net.is_empty() && !doubt {
                break;
            }
        }
    }

    /// The decision each participant holds for `t`: committed, aborted, in doubt, none.
    fn states(&self, t: &TxId) -> Vec<(&'static str, &'static str)> {
        self.parts
            .iter()
            .map(|p| {
                let s = match p.live.as_ref().and_then(|l| l.state(t)) {
                    Some(PartState::Committed) => "committed",
                    Some(PartState::Aborted) => "aborted",
                    Some(PartState::Prepared { .. }) => "prepared",
                    None => "none",
                };
                (p.name, s)
            })
            .collect()
    }

    /// Checks the invariants; returns (committed, aborted) transactions.
    fn check(&self, seed: u64, coordinator_back: bool) -> (usize, usize) {
        let logged: BTreeMap<&TxId, &Vec<String>> = self
            .coord_records
            .iter()
            .filter_map(|r| match r {
                CoordRecord::Commit { tx, participants } => Some((tx, participants)),
                _ => None,
            })
            .collect();
        let (mut committed, mut aborted) = (0, 0);
        for t in &self.began {
            let states = self.states(t);
            let has = |s: &str| states.iter().any(|(_, x)| *x == s);
            // 1. atomicity.
            assert!(
                !(has("committed") && has("aborted")),
                "seed {seed}: {t} committed and aborted: {states:?}"
            );
            // 2. a participant commits only what the coordinator logged.
            if has("committed") {
                assert!(
                    logged.contains_key(t),
                    "seed {seed}: {t} committed, not logged: {states:?}"
                );
                committed += 1;
            } else {
                aborted += 1;
            }
            if coordinator_back {
                // 3. nothing in doubt; every participant of a logged commit committed.
                assert!(
                    !has("prepared"),
                    "seed {seed}: {t} still in doubt: {states:?}"
                );
                if let Some(ps) = logged.get(t) {
                    for (name, s) in &states {
                        if ps.iter().any(|p| p == name) {
                            assert_eq!(*s, "committed", "seed {seed}: {t} at {name}: {states:?}");
                        }
                    }
                }
            } else if has("prepared") {
                // Without the coordinator, doubt remains only where every participant
                // voted yes (none can tell).
                let involved: Vec<_> = states.iter().filter(|(_, s)| *s != "none").collect();
                assert!(
                    involved.iter().all(|(_, s)| *s == "prepared"),
                    "seed {seed}: {t} left in doubt though a participant knows: {states:?}"
                );
            }
        }
        for part in &self.parts {
            let live = part.live.as_ref().expect("restarted");
            if coordinator_back {
                assert!(
                    live.locks().is_empty(),
                    "seed {seed}: {} holds {:?}",
                    part.name,
                    live.locks()
                );
            }
            // 4. constraints.
            assert!(
                part.model.violations.is_empty(),
                "seed {seed}: {:?}",
                part.model.violations
            );
            // 5. the counter is the start plus the committed deltas, each once.
            let mut seen = BTreeSet::new();
            let mut sum = START;
            for r in &part.records {
                if let PartRecord::Committed { tx, ops } = r {
                    if seen.insert(tx) {
                        for op in ops {
                            if let SimOp::Add { delta, .. } = op {
                                sum += delta;
                            }
                        }
                    }
                }
            }
            assert_eq!(
                part.model.counters["stock"], sum,
                "seed {seed}: {}",
                part.name
            );
        }
        (committed, aborted)
    }
}

fn simulate(
    seeds: std::ops::Range<u64>,
    coordinator_back: bool,
) -> (usize, usize, BTreeMap<String, usize>) {
    let (mut committed, mut aborted) = (0, 0);
    let mut reasons = BTreeMap::new();
    for seed in seeds {
        let mut sim = Sim::new(seed);
        for _ in 0..300 {
            sim.step();
        }
        sim.heal(coordinator_back);
        let (c, a) = sim.check(seed, coordinator_back);
        committed += c;
        aborted += a;
        for (r, n) in sim.reasons {
            *reasons.entry(r).or_default() += n;
        }
    }
    (committed, aborted, reasons)
}

#[test]
fn simulated_faults_never_split_a_decision_and_everything_ends_once_healed() {
    let (committed, aborted, reasons) = simulate(0..3_000, true);
    // The runs did real work: both outcomes, and every kind of refusal.
    assert!(
        committed > 3_000 && aborted > 3_000,
        "{committed} committed, {aborted} aborted, no votes {reasons:?}"
    );
    for r in ["locked", "constraint", "storage", "late"] {
        assert!(reasons.contains_key(r), "no vote of {r}: {reasons:?}");
    }
}

#[test]
fn with_the_coordinator_lost_for_good_participants_settle_what_they_can() {
    let (committed, aborted, _) = simulate(10_000..11_000, false);
    assert!(
        committed > 0 && aborted > 0,
        "{committed} committed, {aborted} aborted"
    );
}

/// The operator's decision (`kuzu-sync tx-resolve`) on the state machine.
mod operator {
    use super::*;

    type Actions = Vec<Action<SimOp, PartRecord<SimOp>>>;

    /// What a host writes of `actions`, appended to `log`.
    fn persist(log: &mut Vec<PartRecord<SimOp>>, actions: &Actions) {
        log.extend(actions.iter().filter_map(|a| match a {
            Action::Persist(r) => Some(r.clone()),
            Action::Send { .. } => None,
        }));
    }

    fn is_ack(a: &Action<SimOp, PartRecord<SimOp>>) -> bool {
        matches!(a, Action::Send { to, msg: TxMsg::Ack { .. } } if to == "c")
    }

    /// p1 with `tx(1)` prepared (stock -2), and its records so far.
    fn prepared() -> (Participant<SimOp>, Vec<PartRecord<SimOp>>) {
        let mut p = Participant::recover("p1", [], 0);
        let mut log = Vec::new();
        let out = p.handle(&Model::new(), "c", prepare(&tx(1), vec![add(-2)], 100), 0);
        persist(&mut log, &out);
        assert_eq!(vote_of(&out), Some(Vote::Yes));
        (p, log)
    }

    #[test]
    fn an_operator_commit_is_logged_first_then_commits_as_a_coordinator_would() {
        let (mut p, _) = prepared();
        let out = p
            .resolve(&tx(1), Decision::Commit, "ann".into(), "lost".into(), 500)
            .unwrap();
        assert_eq!(
            out,
            vec![
                Action::Persist(PartRecord::Resolved {
                    tx: tx(1),
                    decision: Decision::Commit,
                    by: "ann".into(),
                    reason: "lost".into(),
                    at: 500,
                }),
                Action::Persist(PartRecord::Committed {
                    tx: tx(1),
                    ops: vec![add(-2)],
                }),
            ]
        );
        assert_eq!(p.state(&tx(1)), Some(&PartState::Committed));
        assert!(p.locks().is_empty() && p.prepared().next().is_none());
        let o = p.operator_decision(&tx(1)).unwrap();
        assert_eq!(
            (o.decision, o.at, o.mismatch.clone()),
            (Decision::Commit, 500, None)
        );
        // The lock is free for the next transaction; a peer asking hears commit.
        let out = p.handle(&Model::new(), "c", prepare(&tx(2), vec![add(-1)], 900), 600);
        assert_eq!(vote_of(&out), Some(Vote::Yes));
        let out = p.handle(
            &Model::new(),
            "p2",
            TxMsg::Ask {
                tx: tx(1),
                deadline: None,
            },
            700,
        );
        assert!(matches!(
            &out[..],
            [Action::Send { to, msg: TxMsg::Decide { decision: Decision::Commit, .. } }] if to == "p2"
        ));
    }

    #[test]
    fn an_operator_abort_is_the_tombstone_so_the_prepare_again_is_late() {
        let (mut p, _) = prepared();
        let out = p
            .resolve(&tx(1), Decision::Abort, "ann".into(), String::new(), 500)
            .unwrap();
        assert!(
            matches!(
                &out[..],
                [Action::Persist(PartRecord::Resolved {
                    decision: Decision::Abort,
                    ..
                })]
            ),
            "{out:?}"
        );
        assert_eq!(p.state(&tx(1)), Some(&PartState::Aborted));
        assert!(p.locks().is_empty());
        let out = p.handle(&Model::new(), "c", prepare(&tx(1), vec![add(-2)], 900), 600);
        assert_eq!(reason(&out), Some(Reason::Late));
        let out = p.handle(
            &Model::new(),
            "p2",
            TxMsg::Ask {
                tx: tx(1),
                deadline: None,
            },
            700,
        );
        assert!(matches!(
            &out[..],
            [Action::Send {
                msg: TxMsg::Decide {
                    decision: Decision::Abort,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn an_operator_decides_only_a_transaction_prepared_here_and_says_why_not() {
        let (mut p, _) = prepared();
        let err = p
            .resolve(&tx(9), Decision::Commit, "ann".into(), String::new(), 1)
            .unwrap_err();
        assert!(matches!(&err, ResolveError::Unknown { tx: t } if *t == tx(9)));
        assert!(err.to_string().contains("c/1/9") && err.to_string().contains("not known"));
        // Decided by its coordinator.
        p.handle(&Model::new(), "c", decide(&tx(1), Decision::Commit), 2);
        let err = p
            .resolve(&tx(1), Decision::Abort, "ann".into(), String::new(), 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c/1/1") && err.ends_with("already committed"),
            "{err}"
        );
        assert!(p.operator_decision(&tx(1)).is_none());
        // Aborted here before its prepare (a tombstone), then decided by an operator.
        p.handle(&Model::new(), "c", decide(&tx(3), Decision::Abort), 4);
        let err = p
            .resolve(&tx(3), Decision::Commit, "ann".into(), String::new(), 5)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("already aborted"), "{err}");
        p.handle(&Model::new(), "c", prepare(&tx(4), vec![add(1)], 100), 6);
        p.resolve(&tx(4), Decision::Abort, "ann".into(), String::new(), 7)
            .unwrap();
        let err = p
            .resolve(&tx(4), Decision::Commit, "ann".into(), String::new(), 8)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("already aborted (by an operator)"), "{err}");
        assert_eq!(p.state(&tx(4)), Some(&PartState::Aborted));
    }

    #[test]
    fn the_coordinator_deciding_the_other_way_is_a_mismatch_recorded_once_and_acknowledged() {
        // The operator aborted; the coordinator had committed.
        let (mut p, _) = prepared();
        p.resolve(&tx(1), Decision::Abort, "ann".into(), String::new(), 500)
            .unwrap();
        let out = p.handle(&Model::new(), "c", decide(&tx(1), Decision::Commit), 800);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            out[0],
            Action::Persist(PartRecord::Mismatch {
                tx: tx(1),
                decision: Decision::Commit,
                from: "c".into(),
                at: 800,
            })
        );
        assert!(is_ack(&out[1]));
        assert_eq!(p.state(&tx(1)), Some(&PartState::Aborted));
        let m = p
            .operator_decision(&tx(1))
            .unwrap()
            .mismatch
            .clone()
            .unwrap();
        assert_eq!(
            (m.decision, m.from.as_str(), m.at),
            (Decision::Commit, "c", 800)
        );
        // The coordinator sends its commit again: acknowledged, nothing recorded.
        let out = p.handle(&Model::new(), "c", decide(&tx(1), Decision::Commit), 1_000);
        assert!(out.len() == 1 && is_ack(&out[0]), "{out:?}");
        assert_eq!(
            p.operator_decision(&tx(1))
                .unwrap()
                .mismatch
                .as_ref()
                .unwrap()
                .at,
            800
        );

        // The operator committed; the coordinator had aborted (presumed, on a question).
        let (mut p, _) = prepared();
        p.resolve(&tx(1), Decision::Commit, "ann".into(), String::new(), 500)
            .unwrap();
        let out = p.handle(&Model::new(), "c", decide(&tx(1), Decision::Abort), 800);
        assert!(
            matches!(
                &out[..],
                [Action::Persist(PartRecord::Mismatch { decision: Decision::Abort, .. }), ack]
                    if is_ack(ack)
            ),
            "{out:?}"
        );
        assert_eq!(p.state(&tx(1)), Some(&PartState::Committed));
    }

    #[test]
    fn the_coordinator_agreeing_with_the_operator_is_a_plain_duplicate() {
        for d in [Decision::Commit, Decision::Abort] {
            let (mut p, _) = prepared();
            p.resolve(&tx(1), d, "ann".into(), String::new(), 500)
                .unwrap();
            for now in [800, 900] {
                let out = p.handle(&Model::new(), "c", decide(&tx(1), d), now);
                assert!(out.len() == 1 && is_ack(&out[0]), "{d:?}: {out:?}");
            }
            assert_eq!(p.operator_decision(&tx(1)).unwrap().mismatch, None);
        }
    }

    #[test]
    fn a_restarted_participant_keeps_the_operators_decision_and_its_mismatch() {
        for d in [Decision::Commit, Decision::Abort] {
            let (mut p, mut log) = prepared();
            let out = p
                .resolve(&tx(1), d, "ann".into(), "lost".into(), 500)
                .unwrap();
            persist(&mut log, &out);
            let other = match d {
                Decision::Commit => Decision::Abort,
                Decision::Abort => Decision::Commit,
            };
            let out = p.handle(&Model::new(), "c", decide(&tx(1), other), 800);
            persist(&mut log, &out);
            let p = Participant::recover("p1", log.clone(), 1_000);
            let state = match d {
                Decision::Commit => PartState::Committed,
                Decision::Abort => PartState::Aborted,
            };
            assert_eq!(p.state(&tx(1)), Some(&state));
            assert!(p.locks().is_empty() && p.prepared().next().is_none());
            let o = p.operator_decision(&tx(1)).unwrap();
            assert_eq!(
                (o.decision, o.by.as_str(), o.reason.as_str(), o.at),
                (d, "ann", "lost", 500)
            );
            assert_eq!(
                o.mismatch,
                Some(Mismatch {
                    decision: other,
                    from: "c".into(),
                    at: 800
                })
            );
            assert_eq!(p.operator_decisions().count(), 1);
        }
    }

    #[test]
    fn an_operator_commit_interrupted_before_it_took_effect_leaves_the_transaction_prepared() {
        // The operator's record was written, the commit was not.
        let (mut p, mut log) = prepared();
        let out = p
            .resolve(&tx(1), Decision::Commit, "ann".into(), String::new(), 500)
            .unwrap();
        persist(&mut log, &out[..1].to_vec());
        let mut p = Participant::recover("p1", log.clone(), 600);
        assert!(matches!(p.state(&tx(1)), Some(PartState::Prepared { .. })));
        assert_eq!(p.guard(&[Lock("counter:stock".into())]), Err(&tx(1)));
        assert_eq!(
            p.operator_decision(&tx(1)).map(|o| o.decision),
            Some(Decision::Commit)
        );
        // The coordinator's abort then decides: the operator's commit never happened.
        let out = p.handle(&Model::new(), "c", decide(&tx(1), Decision::Abort), 700);
        persist(&mut log, &out);
        assert_eq!(p.state(&tx(1)), Some(&PartState::Aborted));
        assert!(p.operator_decision(&tx(1)).is_none());
        let p = Participant::recover("p1", log, 800);
        assert_eq!(p.state(&tx(1)), Some(&PartState::Aborted));
        assert!(p.operator_decision(&tx(1)).is_none());
    }
}
