//! A seeded simulation of transactions on real replicas (in-memory stores): a coordinator,
//! three participants that each own a warehouse whose stock may not go below zero, and an
//! observer that never takes part. Transfers of stock between two or three participants
//! run while messages are lost, duplicated and reordered, replicas sync with each other in
//! random pairs, nodes are cut off, and the coordinator and participants crash and restart
//! from their stores. Checked all along: the observer always sees the total stock whole
//! (atomic visibility), no replica shows part of a remote participant's share of a
//! transaction without the rest, every stock stays at or above zero. Checked at the end,
//! once healed: every participant agrees with the coordinator's log, nobody is in doubt,
//! no lock or held event is left, each stock is its start plus the committed deltas, and
//! every replica holds the same graph.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::replica_tests::{replica, R};
use super::tests::Rng;
use super::*;
use crate::event::Op;
use crate::value::Value;
use crate::Replica;

/// A record log that outlives the host holding it (the host is dropped in a crash).
#[derive(Clone, Debug)]
struct Durable<T>(Rc<RefCell<Vec<T>>>);

impl<T> Default for Durable<T> {
    fn default() -> Self {
        Durable(Rc::new(RefCell::new(Vec::new())))
    }
}

impl<T: Clone> TxLog<T> for Durable<T> {
    fn append(&mut self, record: &T) -> Result<(), crate::ports::StoreError> {
        self.0.borrow_mut().push(record.clone());
        Ok(())
    }
    fn records(&self) -> Result<Vec<T>, crate::ports::StoreError> {
        Ok(self.0.borrow().clone())
    }
}

const PARTS: [&str; 3] = ["a", "b", "c"];
const OBSERVER: &str = "o";
const START: i64 = 10;
const SCHEMA: &str = "CREATE NODE TABLE Warehouse(id STRING, stock INT64, site STRING, \
    PRIMARY KEY(id)); CREATE NODE TABLE Mark(id STRING, PRIMARY KEY(id));";

struct Node {
    r: Option<R>,
    p: Option<TxParticipant<Durable<PartRecord<Op>>>>,
    log: Durable<PartRecord<Op>>,
}

impl Node {
    fn r(&mut self) -> &mut R {
        self.r.as_mut().expect("open")
    }
}

/// One transfer: its id, who takes part and the stock each one's share changes.
struct Transfer {
    id: TxId,
    deltas: BTreeMap<String, i64>,
}

struct Sim {
    rng: Rng,
    now: u64,
    coord: TxCoordinator<Durable<CoordRecord>>,
    coord_log: Durable<CoordRecord>,
    nodes: BTreeMap<String, Node>,
    wire: Vec<(String, String, TxMsg<Op>)>,
    cut: BTreeSet<String>,
    cut_until: u64,
    /// By the number the simulation gave them (their marks are `k-participant`).
    txs: BTreeMap<u64, Transfer>,
    /// Times a replica held events when checked (the test must see the gate work).
    seen_held: usize,
    /// The reasons of the no votes delivered.
    reasons: BTreeMap<String, usize>,
}

fn op(r: &R, line: &str) -> Op {
    crate::json::op_from_json(line, r.engine().schema()).unwrap()
}

fn mark(k: u64, part: &str) -> String {
    format!("{k}-{part}")
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut nodes = BTreeMap::new();
        for name in PARTS.iter().chain([&OBSERVER]) {
            let r = replica(name);
            let log = Durable::default();
            let p = TxParticipant::open(&r, log.clone(), 0).unwrap();
            nodes.insert(
                name.to_string(),
                Node {
                    r: Some(r),
                    p: Some(p),
                    log,
                },
            );
        }
        let coord_log = Durable::default();
        let (coord, _) = TxCoordinator::open("coord", coord_log.clone(), 0).unwrap();
        let mut sim = Sim {
            rng: Rng::new(seed),
            now: 0,
            coord,
            coord_log,
            nodes,
            wire: Vec::new(),
            cut: BTreeSet::new(),
            cut_until: 0,
            txs: BTreeMap::new(),
            seen_held: 0,
            reasons: BTreeMap::new(),
        };
        let a = sim.nodes.get_mut("a").unwrap().r();
        let mut schema = a.engine().schema().clone();
        let mut setup: Vec<Op> = crate::json::schema_ops(SCHEMA, &mut schema)
            .unwrap()
            .into_iter()
            .map(Op::Schema)
            .collect();
        a.write(std::mem::take(&mut setup)).unwrap();
        let c = op(
            a,
            r#"{"op":"set_constraint","table":"Warehouse","prop":"stock","min":0,"owner":{"column":"site"}}"#,
        );
        let counter = op(
            a,
            r#"{"op":"set_policy","table":"Warehouse","prop":"stock","policy":"counter"}"#,
        );
        a.write(vec![counter, c]).unwrap();
        sim.sync_everyone();
        for p in PARTS {
            let r = sim.nodes.get_mut(p).unwrap().r();
            let w = op(
                r,
                &format!(
                    r#"{{"op":"add_node","table":"Warehouse","props":{{"id":"w{p}","stock":{START},"site":"{p}"}}}}"#
                ),
            );
            r.write(vec![w]).unwrap();
        }
        sim.sync_everyone();
        sim
    }

    fn sync(&mut self, from: &str, to: &str) {
        let since = self.nodes.get_mut(to).unwrap().r().version_vector().clone();
        let events = self
            .nodes
            .get_mut(from)
            .unwrap()
            .r()
            .events_since(&since)
            .unwrap();
        // Sometimes only a prefix arrives (a session cut short).
        let n = if events.len() > 1 && self.rng.chance(30) {
            1 + self.rng.below(events.len() as u64 - 1) as usize
        } else {
            events.len()
        };
        let events = events.into_iter().take(n).collect();
        self.nodes.get_mut(to).unwrap().r().import(events).unwrap();
        self.check_visible(to);
    }

    fn sync_everyone(&mut self) {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for _ in 0..3 {
            for a in &names {
                for b in &names {
                    if a != b {
                        let since = self.nodes.get_mut(b).unwrap().r().version_vector().clone();
                        let events = self
                            .nodes
                            .get_mut(a)
                            .unwrap()
                            .r()
                            .events_since(&since)
                            .unwrap();
                        self.nodes.get_mut(b).unwrap().r().import(events).unwrap();
                        self.check_visible(b);
                    }
                }
            }
        }
    }

    fn stocks(&mut self, node: &str) -> BTreeMap<String, i64> {
        let dump = self.nodes.get_mut(node).unwrap().r().dump().unwrap();
        dump.get("Warehouse")
            .into_iter()
            .flatten()
            .map(|row| match (&row[0], &row[1]) {
                (Value::String(id), Value::Int64(s)) => (id.clone(), *s),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn marks(&mut self, node: &str) -> BTreeSet<String> {
        let dump = self.nodes.get_mut(node).unwrap().r().dump().unwrap();
        dump.get("Mark")
            .into_iter()
            .flatten()
            .map(|row| match &row[0] {
                Value::String(id) => id.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// What `node`'s graph shows never holds part of the other participants' shares of a
    /// transaction without the rest, and no stock is below zero; on the observer, the
    /// total stock is whole.
    fn check_visible(&mut self, node: &str) {
        let marks = self.marks(node);
        for (k, t) in &self.txs {
            let others: BTreeSet<String> = t
                .deltas
                .keys()
                .filter(|p| p.as_str() != node)
                .map(|p| mark(*k, p))
                .collect();
            let shown: BTreeSet<String> = others.intersection(&marks).cloned().collect();
            assert!(
                shown.is_empty() || shown == others,
                "{node} shows {shown:?} of {}'s {others:?}",
                t.id
            );
        }
        let stocks = self.stocks(node);
        assert!(stocks.values().all(|s| *s >= 0), "{node}: {stocks:?}");
        if node == OBSERVER && stocks.len() == PARTS.len() {
            let total: i64 = stocks.values().sum();
            assert_eq!(total, START * PARTS.len() as i64, "{node}: {stocks:?}");
        }
        if self
            .nodes
            .get_mut(node)
            .unwrap()
            .r()
            .status()
            .unwrap()
            .held_events
            > 0
        {
            self.seen_held += 1;
        }
    }

    fn begin(&mut self) {
        let n = 2 + self.rng.below(2) as usize;
        let mut who: Vec<&str> = PARTS.to_vec();
        while who.len() > n {
            who.remove(self.rng.below(who.len() as u64) as usize);
        }
        let amount = 1 + self.rng.below(8) as i64;
        let seq = self.txs.len() as u64;
        let mut deltas = BTreeMap::new();
        let mut work = Vec::new();
        for (i, p) in who.iter().enumerate() {
            // The first gives, the second takes, a third only marks.
            let delta = match i {
                0 => -amount,
                1 => amount,
                _ => 0,
            };
            let r = self.nodes.get_mut(*p).unwrap().r();
            let mut ops = vec![op(
                r,
                &format!(r#"{{"op":"add_node","table":"Mark","props":{{"id":"{seq}-{p}"}}}}"#),
            )];
            if delta != 0 {
                ops.push(op(
                    r,
                    &format!(
                        r#"{{"op":"increment","table":"Warehouse","key":"w{p}","prop":"stock","delta":{delta}}}"#
                    ),
                ));
            }
            deltas.insert(p.to_string(), delta);
            work.push((p.to_string(), ops));
        }
        let (id, out) = self.coord.begin(work, self.now + 3_000).unwrap();
        self.post("coord", out);
        self.txs.insert(seq, Transfer { id, deltas });
    }

    fn post(&mut self, from: &str, out: Outbox) {
        for (to, msg) in out {
            self.wire.push((from.to_owned(), to, msg));
        }
    }

    fn deliver(&mut self) {
        if self.wire.is_empty() {
            return;
        }
        let i = self.rng.below(self.wire.len() as u64) as usize;
        let (from, to, msg) = self.wire[i].clone();
        if self.cut.contains(&from) || self.cut.contains(&to) {
            return;
        }
        if !self.rng.chance(10) {
            self.wire.swap_remove(i);
        }
        if self.rng.chance(5) {
            return; // lost
        }
        let now = self.now;
        if to == "coord" {
            if let TxMsg::Vote {
                vote: Vote::No { reason, .. },
                ..
            } = &msg
            {
                *self.reasons.entry(format!("{reason:?}")).or_default() += 1;
            }
            let out = self.coord.handle(&from, msg, now).unwrap();
            self.post("coord", out);
            return;
        }
        let node = self.nodes.get_mut(&to).unwrap();
        let (Some(r), Some(p)) = (node.r.as_mut(), node.p.as_mut()) else {
            return;
        };
        let out = p.handle(r, &from, msg, now).unwrap();
        self.post(&to, out);
        self.check_visible(&to);
    }

    fn tick(&mut self) {
        self.now += 50 + self.rng.below(300);
        self.tick_all();
        if self.now > self.cut_until {
            self.cut.clear();
        }
    }

    /// The coordinator and every participant act on the time.
    fn tick_all(&mut self) {
        let out = self.coord.tick(self.now).unwrap();
        self.post("coord", out);
        for name in PARTS {
            let now = self.now;
            let node = self.nodes.get_mut(name).unwrap();
            let out = node
                .p
                .as_mut()
                .unwrap()
                .tick(node.r.as_mut().unwrap(), now)
                .unwrap();
            self.post(name, out);
        }
    }

    fn crash(&mut self, name: &str) {
        let now = self.now;
        let node = self.nodes.get_mut(name).unwrap();
        node.p = None;
        let (events, graph) = node.r.take().unwrap().into_parts();
        let r = Replica::open(events, graph, Box::new(crate::FixedClock(1_000))).unwrap();
        node.p = Some(TxParticipant::open(&r, node.log.clone(), now).unwrap());
        node.r = Some(r);
    }

    fn crash_coordinator(&mut self) {
        let (coord, out) = TxCoordinator::open("coord", self.coord_log.clone(), self.now).unwrap();
        self.coord = coord;
        self.post("coord", out);
    }

    fn step(&mut self) {
        let names: Vec<&str> = PARTS.iter().copied().chain([OBSERVER]).collect();
        match self.rng.below(100) {
            0..=5 => self.begin(),
            6..=54 => self.deliver(),
            55..=69 => self.tick(),
            70..=89 => {
                let a = names[self.rng.below(4) as usize];
                let b = names[self.rng.below(4) as usize];
                if a != b && !self.cut.contains(a) && !self.cut.contains(b) {
                    self.sync(a, b);
                }
            }
            90..=93 => {
                let n = PARTS[self.rng.below(3) as usize];
                self.crash(n);
            }
            94..=95 => self.crash_coordinator(),
            _ => {
                let n = names[self.rng.below(4) as usize];
                self.cut.insert(n.to_string());
                self.cut_until = self.now + 500 + self.rng.below(3_000);
            }
        }
    }

    /// Heals the network and lets time pass until nothing is in flight and nobody is in
    /// doubt, then syncs everyone.
    fn heal(&mut self) {
        self.cut.clear();
        for _ in 0..200 {
            while !self.wire.is_empty() {
                let (from, to, msg) = self.wire.remove(0);
                let now = self.now;
                if to == "coord" {
                    let out = self.coord.handle(&from, msg, now).unwrap();
                    self.post("coord", out);
                } else {
                    let node = self.nodes.get_mut(&to).unwrap();
                    let out = node
                        .p
                        .as_mut()
                        .unwrap()
                        .handle(node.r.as_mut().unwrap(), &from, msg, now)
                        .unwrap();
                    self.post(&to, out);
                }
            }
            let doubt = PARTS.iter().any(|p| {
                self.nodes[*p]
                    .p
                    .as_ref()
                    .unwrap()
                    .participant()
                    .prepared()
                    .next()
                    .is_some()
            });
            if !doubt {
                break;
            }
            self.now += RETRY_MS;
            self.tick_all();
        }
        self.sync_everyone();
    }

    /// The end-of-run checks; returns (committed, aborted).
    fn check(&mut self, seed: u64) -> (usize, usize) {
        let logged: BTreeSet<TxId> = self
            .coord_log
            .records()
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                CoordRecord::Commit { tx, .. } => Some(tx),
                _ => None,
            })
            .collect();
        let mut expected: BTreeMap<String, i64> =
            PARTS.iter().map(|p| (format!("w{p}"), START)).collect();
        let (mut committed, mut aborted) = (0, 0);
        for t in self.txs.values() {
            let id = &t.id;
            let is_committed = logged.contains(id);
            for p in t.deltas.keys() {
                let state = self.nodes[p].p.as_ref().unwrap().participant().state(id);
                if is_committed {
                    assert!(
                        matches!(state, Some(PartState::Committed)),
                        "seed {seed}: {id} is logged committed, {p} is {state:?}"
                    );
                } else {
                    assert!(
                        matches!(state, None | Some(PartState::Aborted)),
                        "seed {seed}: {id} is not logged committed, {p} is {state:?}"
                    );
                }
            }
            if is_committed {
                committed += 1;
                for (p, d) in &t.deltas {
                    *expected.get_mut(&format!("w{p}")).unwrap() += d;
                }
            } else {
                aborted += 1;
            }
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        let mut dumps = Vec::new();
        for n in &names {
            let node = self.nodes.get_mut(n).unwrap();
            if let Some(p) = &node.p {
                assert!(p.participant().locks().is_empty(), "seed {seed}: {n} locks");
            }
            let status = node.r().status().unwrap();
            assert_eq!(status.held_events, 0, "seed {seed}: {n} holds events");
            assert_eq!(status.released_incomplete, 0, "seed {seed}: {n}");
            assert_eq!(self.stocks(n), expected, "seed {seed}: {n}'s stocks");
            dumps.push(self.nodes.get_mut(n).unwrap().r().dump().unwrap());
        }
        for d in &dumps[1..] {
            assert_eq!(d, &dumps[0], "seed {seed}: replicas diverge");
        }
        (committed, aborted)
    }
}

#[test]
fn transfers_on_replicas_stay_atomic_visible_bounded_and_convergent_under_faults() {
    let (mut committed, mut aborted, mut held) = (0, 0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..1_000 {
        let mut sim = Sim::new(seed);
        for _ in 0..200 {
            sim.step();
        }
        sim.heal();
        let (c, a) = sim.check(seed);
        committed += c;
        aborted += a;
        held += sim.seen_held;
        for (r, n) in sim.reasons {
            *reasons.entry(r).or_default() += n;
        }
    }
    eprintln!(
        "{committed} committed, {aborted} aborted, held seen {held} times; no votes: {reasons:?}"
    );
    // The runs did real work: transactions both ways, and replicas holding parts.
    assert!(committed > 300, "{committed} committed");
    assert!(aborted > 100, "{aborted} aborted");
    assert!(held > 300, "replicas held events {held} times");
    for reason in ["Constraint", "Locked", "Late"] {
        assert!(reasons.get(reason).is_some_and(|n| *n > 50), "{reasons:?}");
    }
}
