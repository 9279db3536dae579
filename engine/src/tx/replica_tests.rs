//! Transactions on real replicas (in-memory stores): SPEC §3's two examples, the
//! constraints and their owners, the commit marker, recovery, and the three scenarios
//! (a stock transfer, a username race, a single-edge race). Each ends by syncing every
//! replica with every other and comparing their graphs.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::event::Op;
use crate::memory::MemoryGraphStore;
use crate::{MemoryEventStore, PeerId, Replica, ReplicaError};

pub(super) type R = Replica<MemoryEventStore, MemoryGraphStore>;
type PLog = MemoryTxLog<PartRecord<Op>>;

struct Node {
    r: R,
    p: TxParticipant<PLog>,
}

struct World {
    now: u64,
    coord: TxCoordinator<MemoryTxLog<CoordRecord>>,
    nodes: BTreeMap<String, Node>,
    /// (from, to, message)
    wire: VecDeque<(String, String, TxMsg<Op>)>,
    delivered: usize,
}

const SCHEMA: &str = "CREATE NODE TABLE User(id STRING, name STRING, PRIMARY KEY(id));\
    CREATE REL TABLE Follows(FROM User TO User);\
    CREATE REL TABLE Mentor(FROM User TO User, MANY_ONE);\
    CREATE NODE TABLE Warehouse(id STRING, stock INT64, site STRING, PRIMARY KEY(id));";

/// A replica on in-memory stores, its clock fixed.
pub(super) fn replica(name: &str) -> R {
    Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(name).unwrap(),
        Box::new(crate::FixedClock(1_000)),
    )
    .unwrap()
}

fn ops(r: &R, lines: &[&str]) -> Vec<Op> {
    lines
        .iter()
        .map(|l| crate::json::op_from_json(l, r.engine().schema()).unwrap())
        .collect()
}

fn sync_all(nodes: &mut BTreeMap<String, Node>) {
    let names: Vec<String> = nodes.keys().cloned().collect();
    for _ in 0..2 {
        for a in &names {
            for b in &names {
                if a == b {
                    continue;
                }
                let since = nodes[b].r.version_vector().clone();
                let events = nodes[a].r.events_since(&since).unwrap();
                nodes.get_mut(b).unwrap().r.import(events).unwrap();
            }
        }
    }
}

impl World {
    /// Replicas `names` holding [`SCHEMA`] (written on the first, synced), and a
    /// coordinator `coord`.
    fn new(names: &[&str], setup: &[(&str, &[&str])]) -> World {
        let mut nodes = BTreeMap::new();
        for (i, n) in names.iter().enumerate() {
            let mut r = replica(n);
            if i == 0 {
                let mut schema = r.engine().schema().clone();
                let ddl = crate::json::schema_ops(SCHEMA, &mut schema).unwrap();
                r.write(ddl.into_iter().map(Op::Schema).collect()).unwrap();
            }
            let p = TxParticipant::open(&r, MemoryTxLog::default(), 0).unwrap();
            nodes.insert(n.to_string(), Node { r, p });
        }
        sync_all(&mut nodes);
        for (who, lines) in setup {
            let node = nodes.get_mut(*who).unwrap();
            let o = ops(&node.r, lines);
            node.r.write(o).unwrap();
            sync_all(&mut nodes);
        }
        let (coord, out) = TxCoordinator::open("coord", MemoryTxLog::default(), 0).unwrap();
        assert!(out.is_empty());
        World {
            now: 0,
            coord,
            nodes,
            wire: VecDeque::new(),
            delivered: 0,
        }
    }

    fn begin(&mut self, work: &[(&str, &[&str])]) -> TxId {
        let work = work
            .iter()
            .map(|(p, lines)| (p.to_string(), ops(&self.nodes[*p].r, lines)))
            .collect();
        let (tx, out) = self.coord.begin(work, self.now + 1_000).unwrap();
        self.post("coord", out);
        tx
    }

    fn post(&mut self, from: &str, out: Outbox) {
        for (to, msg) in out {
            self.wire.push_back((from.to_owned(), to, msg));
        }
    }

    /// Delivers one message; store errors of a participant are returned.
    fn step(&mut self) -> Option<Result<(), ReplicaError>> {
        let (from, to, msg) = self.wire.pop_front()?;
        self.delivered += 1;
        let now = self.now;
        if to == "coord" {
            let out = self.coord.handle(&from, msg, now).unwrap();
            self.post("coord", out);
            return Some(Ok(()));
        }
        let node = self.nodes.get_mut(&to).unwrap();
        match node.p.handle(&mut node.r, &from, msg, now) {
            Ok(out) => {
                self.post(&to, out);
                Some(Ok(()))
            }
            Err(e) => Some(Err(e)),
        }
    }

    fn run(&mut self) {
        while let Some(r) = self.step() {
            r.unwrap();
        }
    }

    /// Time passes until nothing is in flight and nobody is in doubt.
    fn settle(&mut self) {
        for _ in 0..50 {
            self.run();
            self.now += RETRY_MS;
            let out = self.coord.tick(self.now).unwrap();
            self.post("coord", out);
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for n in names {
                let now = self.now;
                let node = self.nodes.get_mut(&n).unwrap();
                let out = node.p.tick(&mut node.r, now).unwrap();
                self.post(&n, out);
            }
            if self.wire.is_empty() {
                return;
            }
        }
        panic!("did not settle: {:?}", self.wire);
    }

    fn state(&self, node: &str, tx: &TxId) -> Option<&PartState<Op>> {
        self.nodes[node].p.participant().state(tx)
    }

    fn rows(&mut self, node: &str, table: &str) -> Vec<Vec<crate::value::Value>> {
        let dump = self.nodes.get_mut(node).unwrap().r.dump().unwrap();
        dump.get(table).cloned().unwrap_or_default()
    }

    /// Syncs every replica with every other; asserts they hold one graph, and returns it.
    fn converge(&mut self) -> crate::GraphDump {
        sync_all(&mut self.nodes);
        let mut dumps = self
            .nodes
            .values_mut()
            .map(|n| n.r.dump().unwrap())
            .collect::<Vec<_>>();
        let first = dumps.pop().unwrap();
        for d in dumps {
            assert_eq!(d, first, "replicas diverge");
        }
        first
    }
}

fn committed(s: Option<&PartState<Op>>) -> bool {
    matches!(s, Some(PartState::Committed))
}

fn rolled_back(s: Option<&PartState<Op>>) -> bool {
    matches!(s, Some(PartState::Aborted))
}

/// SPEC §3, first example: three participants vote commit; each ends committed, with the
/// ops in its graph, and a third replica (and everyone, after sync) holds all of it.
#[test]
fn spec_all_vote_commit() {
    let users = [
        r#"{"op":"add_node","table":"User","props":{"id":"user_1","name":"Ann"}}"#,
        r#"{"op":"add_node","table":"User","props":{"id":"user_2","name":"Bo"}}"#,
    ];
    let mut w = World::new(&["a", "b", "c", "d"], &[("d", &users)]);
    let tx = w.begin(&[
        (
            "a",
            &[r#"{"op":"add_edge","table":"Follows","from":"user_1","to":"user_2"}"#],
        ),
        (
            "b",
            &[r#"{"op":"add_node","table":"User","props":{"id":"user_3","name":"Cy"}}"#],
        ),
        (
            "c",
            &[r#"{"op":"update","table":"User","key":"user_1","prop":"name","value":"Annie"}"#],
        ),
    ]);
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&tx), Some(Decision::Commit));
    for p in ["a", "b", "c"] {
        assert!(committed(w.state(p, &tx)), "{p}: {:?}", w.state(p, &tx));
        assert!(w.nodes[p].p.participant().locks().is_empty());
    }
    assert_eq!(w.rows("a", "Follows").len(), 1);
    assert_eq!(w.rows("b", "User").len(), 3);
    let g = w.converge();
    assert_eq!(g["Follows"].len(), 1);
    assert_eq!(g["User"].len(), 3);
    assert!(g["User"]
        .iter()
        .any(|r| r.contains(&crate::value::Value::String("Annie".into()))));
    // Every replica, the third one too, holds the three commit markers.
    for n in w.nodes.values() {
        let markers = n.r.engine().tx_markers(&tx).unwrap();
        assert_eq!(markers.parts.len(), 3, "{:?}", n.r.peer());
    }
    // The coordinator ended it: every acknowledgement came back.
    assert!(!w.coord.coordinator().is_open(&tx));
    assert!(
        w.delivered >= 9,
        "prepare, vote, commit, ack each: {}",
        w.delivered
    );
}

/// SPEC §3, second example: one participant cannot write its PREPARED record
/// (`disk_full`, injected); it votes abort with reason `storage`, the decision is abort,
/// and every participant is rolled back with nothing of the transaction anywhere.
#[test]
fn spec_one_votes_abort_disk_full() {
    let users = [r#"{"op":"add_node","table":"User","props":{"id":"user_1","name":"Ann"}}"#];
    let mut w = World::new(&["a", "b", "c"], &[("a", &users)]);
    let before = w.converge();
    w.nodes.get_mut("b").unwrap().p = {
        let node = &w.nodes["b"];
        let mut log = node.p.log().clone();
        log.fail_next = 1;
        TxParticipant::open(&node.r, log, 0).unwrap()
    };
    let tx = w.begin(&[
        (
            "a",
            &[r#"{"op":"add_node","table":"User","props":{"id":"user_2","name":"Bo"}}"#],
        ),
        (
            "b",
            &[r#"{"op":"add_edge","table":"Follows","from":"user_1","to":"user_1"}"#],
        ),
        (
            "c",
            &[r#"{"op":"update","table":"User","key":"user_1","prop":"name","value":"X"}"#],
        ),
    ]);
    // Watch b's vote go by.
    let mut reason = None;
    while let Some((from, to, msg)) = w.wire.front().cloned() {
        if let (
            TxMsg::Vote {
                vote: Vote::No { reason: r, detail },
                ..
            },
            "b",
        ) = (&msg, from.as_str())
        {
            assert!(detail.contains("disk_full"), "{detail}");
            reason = Some(*r);
        }
        let _ = (to, w.step().unwrap());
    }
    assert_eq!(reason, Some(Reason::Storage));
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&tx), Some(Decision::Abort));
    for p in ["a", "b", "c"] {
        assert!(rolled_back(w.state(p, &tx)), "{p}: {:?}", w.state(p, &tx));
        assert!(w.nodes[p].p.participant().locks().is_empty());
        assert!(w.nodes[p].r.engine().tx_markers(&tx).is_none());
    }
    assert_eq!(
        w.converge(),
        before,
        "nothing of the aborted transaction is visible"
    );
}

/// A participant that crashed after its commit reached the log, before its COMMITTED
/// record: reopened from the PREPARED record alone, it finds its marker and is committed,
/// not in doubt, and the ops are in its graph once.
#[test]
fn a_commit_in_the_log_without_its_record_recovers_as_committed() {
    let mut w = World::new(&["a", "b"], &[]);
    let tx = w.begin(&[
        (
            "a",
            &[r#"{"op":"add_node","table":"User","props":{"id":"u1","name":"Ann"}}"#],
        ),
        (
            "b",
            &[r#"{"op":"add_node","table":"User","props":{"id":"u2","name":"Bo"}}"#],
        ),
    ]);
    // Prepare and vote only.
    for _ in 0..4 {
        w.step().unwrap().unwrap();
    }
    let prepared_only = w.nodes["a"].p.log().clone();
    assert_eq!(prepared_only.records.len(), 1);
    w.settle();
    assert!(committed(w.state("a", &tx)));
    // The crash: a's record log lost the COMMITTED record.
    let node = w.nodes.get_mut("a").unwrap();
    node.p = TxParticipant::open(&node.r, prepared_only, w.now).unwrap();
    assert!(committed(w.state("a", &tx)), "{:?}", w.state("a", &tx));
    assert!(w.nodes["a"].p.prepared(w.now).is_empty());
    assert!(matches!(
        w.nodes["a"].p.log().records.last(),
        Some(PartRecord::Committed { .. })
    ));
    assert_eq!(w.rows("a", "User").len(), 1);
    // A commit sent again is acknowledged and applies nothing twice.
    w.wire.push_back((
        "coord".into(),
        "a".into(),
        TxMsg::Decide {
            tx: tx.clone(),
            decision: Decision::Commit,
        },
    ));
    w.settle();
    assert_eq!(w.rows("a", "User").len(), 1);
    assert_eq!(w.converge()["User"].len(), 2);
}

/// A commit whose COMMITTED record fails to be written (after the marker's append) is
/// not acknowledged; the participant rebuilds itself from its records and the marker,
/// and the commit sent again is acknowledged.
#[test]
fn a_failed_committed_record_is_recovered_from_the_marker() {
    let mut w = World::new(&["a"], &[]);
    let tx = w.begin(&[(
        "a",
        &[r#"{"op":"add_node","table":"User","props":{"id":"u1","name":"Ann"}}"#],
    )]);
    w.step().unwrap().unwrap(); // prepare
    w.step().unwrap().unwrap(); // vote → commit logged
    let node = w.nodes.get_mut("a").unwrap();
    let mut log = node.p.log().clone();
    log.fail_next = 1;
    node.p = TxParticipant::open(&node.r, log, 0).unwrap();
    let err = w.step().unwrap().unwrap_err(); // the commit
    assert!(err.to_string().contains("disk_full"), "{err}");
    assert!(committed(w.state("a", &tx)));
    w.settle();
    assert!(
        !w.coord.coordinator().is_open(&tx),
        "acknowledged in the end"
    );
    assert_eq!(w.rows("a", "User").len(), 1);
}

/// With a sink for early sends, a commit is acknowledged once its events are logged,
/// before the graph applies them: a graph apply that fails after the log append leaves the
/// acknowledgement sent, and the participant (rebuilt from its records and stores) is
/// committed with the ops in its graph. Without a sink, nothing is sent then.
#[test]
fn a_commit_is_acknowledged_once_logged_before_the_graph_applies() {
    let work: &[(&str, &[&str])] = &[(
        "a",
        &[r#"{"op":"add_node","table":"User","props":{"id":"u1","name":"Ann"}}"#],
    )];
    for early in [true, false] {
        let mut w = World::new(&["a"], &[]);
        let tx = w.begin(work);
        w.step().unwrap().unwrap(); // prepare
        w.step().unwrap().unwrap(); // vote → commit decided
        let (from, to, decide) = w.wire.pop_front().unwrap();
        assert_eq!(to, "a");
        assert!(matches!(decide, TxMsg::Decide { .. }));
        let node = w.nodes.get_mut("a").unwrap();
        node.r.graph().fail_next_apply = true;
        let mut sent = Vec::new();
        let mut sink = |to: String, msg: TxMsg<Op>| sent.push((to, msg));
        let sink: Option<Sink<'_>> = if early { Some(&mut sink) } else { None };
        let err = node
            .p
            .handle_with(&mut node.r, &from, decide.clone(), w.now, sink)
            .unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert!(committed(w.state("a", &tx)), "the marker is in the log");
        assert_eq!(
            w.rows("a", "User").len(),
            1,
            "the graph got it from the log"
        );
        if early {
            assert_eq!(
                sent,
                vec![("coord".to_owned(), TxMsg::Ack { tx: tx.clone() })],
                "acknowledged before the failed apply"
            );
            w.post("a", sent);
            w.run();
            assert!(!w.coord.coordinator().is_open(&tx), "the coordinator ended");
        } else {
            assert!(sent.is_empty());
            assert!(w.coord.coordinator().is_open(&tx));
        }
    }
    // Without a failure, what went to the sink is not returned again.
    let mut w = World::new(&["a"], &[]);
    let tx = w.begin(work);
    w.step().unwrap().unwrap();
    w.step().unwrap().unwrap();
    let (from, _, decide) = w.wire.pop_front().unwrap();
    let node = w.nodes.get_mut("a").unwrap();
    let mut sent = Vec::new();
    let out = node
        .p
        .handle_with(
            &mut node.r,
            &from,
            decide,
            w.now,
            Some(&mut |to, msg| sent.push((to, msg))),
        )
        .unwrap();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(sent, vec![("coord".to_owned(), TxMsg::Ack { tx })]);
    assert_eq!(w.rows("a", "User").len(), 1);
}

const WAREHOUSES: [&str; 3] = [
    r#"{"op":"set_constraint","table":"Warehouse","prop":"stock","min":0,"owner":{"column":"site"}}"#,
    r#"{"op":"set_policy","table":"Warehouse","prop":"stock","policy":"counter"}"#,
    r#"{"op":"add_node","table":"User","props":{"id":"nobody"}}"#,
];

fn stock(w: &mut World, node: &str, wh: &str) -> i64 {
    let n = crate::NodeRef {
        table: "Warehouse".into(),
        key: crate::value::Value::String(wh.into()),
    };
    match w.nodes[node].r.engine().node_value(&n, "stock") {
        Some(v) => v.to_string().parse().unwrap(),
        None => panic!("no {wh} on {node}"),
    }
}

/// A stock transfer between two replicas that own one warehouse each: it commits while
/// the stock allows, votes `constraint` when it would go below zero, and the counters
/// equal the start plus the committed deltas on every replica. Outside a transaction,
/// only a warehouse's owner may change its stock, and not while a transaction holds it.
#[test]
fn stock_transfer_between_two_owners() {
    let mut w = World::new(
        &["r1", "r2", "r3"],
        &[
            ("r1", &WAREHOUSES),
            (
                "r1",
                &[
                    r#"{"op":"add_node","table":"Warehouse","props":{"id":"w1","stock":10,"site":"r1"}}"#,
                ],
            ),
            (
                "r2",
                &[
                    r#"{"op":"add_node","table":"Warehouse","props":{"id":"w2","stock":5,"site":"r2"}}"#,
                ],
            ),
        ],
    );
    let take = |n: i64| {
        format!(r#"{{"op":"increment","table":"Warehouse","key":"w1","prop":"stock","delta":{n}}}"#)
    };
    let give = |n: i64| {
        format!(r#"{{"op":"increment","table":"Warehouse","key":"w2","prop":"stock","delta":{n}}}"#)
    };
    let t1 = w.begin(&[("r1", &[take(-7).as_str()]), ("r2", &[give(7).as_str()])]);
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&t1), Some(Decision::Commit));
    // 3 left: moving 7 again would take w1 to -4.
    let t2 = w.begin(&[("r1", &[take(-7).as_str()]), ("r2", &[give(7).as_str()])]);
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&t2), Some(Decision::Abort));
    assert!(rolled_back(w.state("r1", &t2)) && rolled_back(w.state("r2", &t2)));
    w.converge();
    for n in ["r1", "r2", "r3"] {
        assert_eq!(
            (stock(&mut w, n, "w1"), stock(&mut w, n, "w2")),
            (3, 12),
            "{n}"
        );
    }
    // r1's stock sent to r2, which does not own it: `invalid`, naming the owner.
    let t3 = w.begin(&[("r2", &[take(-1).as_str()])]);
    let mut detail = String::new();
    while let Some((from, _, msg)) = w.wire.front().cloned() {
        if let (
            TxMsg::Vote {
                vote: Vote::No { reason, detail: d },
                ..
            },
            "r2",
        ) = (&msg, from.as_str())
        {
            assert_eq!(*reason, Reason::Invalid);
            detail = d.clone();
        }
        w.step().unwrap().unwrap();
    }
    assert!(detail.contains("owned by r1"), "{detail}");
    assert_eq!(w.coord.coordinator().decision(&t3), Some(Decision::Abort));
    // Outside a transaction: the owner may, within the bound; others may not.
    let node = w.nodes.get_mut("r2").unwrap();
    let o = ops(&node.r, &[take(-1).as_str()]);
    let err = node.p.write(&mut node.r, o).unwrap_err();
    assert!(err.to_string().contains("owned by r1"), "{err}");
    let node = w.nodes.get_mut("r1").unwrap();
    let o = ops(&node.r, &[take(-4).as_str()]);
    let err = node.p.write(&mut node.r, o).unwrap_err();
    assert!(
        err.to_string().contains("would be -1, below its minimum 0"),
        "{err}"
    );
    // Plain `Replica::write` checks the same.
    let o = ops(&node.r, &[take(-4).as_str()]);
    assert!(matches!(node.r.write(o), Err(ReplicaError::Constraint(_))));
    let o = ops(&node.r, &[take(-1).as_str()]);
    node.p.write(&mut node.r, o).unwrap();
    // While a transaction holds w1, r1's own write of it is refused, naming it.
    let t4 = w.begin(&[("r1", &[take(-1).as_str()]), ("r2", &[give(1).as_str()])]);
    for _ in 0..2 {
        w.step().unwrap().unwrap(); // both prepares
    }
    let node = w.nodes.get_mut("r1").unwrap();
    let o = ops(&node.r, &[take(-1).as_str()]);
    let err = node.p.write(&mut node.r, o).unwrap_err().to_string();
    assert!(
        err.contains(&t4.to_string()) && err.contains("min:warehouse/w1.stock"),
        "{err}"
    );
    assert_eq!(w.nodes["r1"].p.prepared(w.now).len(), 1);
    w.settle();
    w.converge();
    for n in ["r1", "r2", "r3"] {
        // 10 - 7 (t1) - 1 (local) - 1 (t4) and 5 + 7 + 1.
        assert_eq!(
            (stock(&mut w, n, "w1"), stock(&mut w, n, "w2")),
            (1, 13),
            "{n}"
        );
    }
}

const NAMES: [&str; 1] = [
    r#"{"op":"set_constraint","table":"User","prop":"name","unique":true,"owner":{"peer":"hub"}}"#,
];

/// Two devices race to claim the same username through the hub, which owns the names:
/// concurrently, the second finds it locked; one after the other, the second finds it
/// taken. One user holds the name on every replica.
#[test]
fn username_race() {
    let mut w = World::new(&["hub", "d1", "d2"], &[("hub", &NAMES)]);
    let claim = |id: &str| {
        format!(r#"{{"op":"add_node","table":"User","props":{{"id":"{id}","name":"bob"}}}}"#)
    };
    let mark = |id: &str| {
        format!(r#"{{"op":"add_node","table":"Warehouse","props":{{"id":"{id}","stock":0}}}}"#)
    };
    // Both prepares reach the hub before any decision.
    let t1 = w.begin(&[
        ("hub", &[claim("u1").as_str()]),
        ("d1", &[mark("d1").as_str()]),
    ]);
    let t2 = w.begin(&[
        ("hub", &[claim("u2").as_str()]),
        ("d2", &[mark("d2").as_str()]),
    ]);
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&t1), Some(Decision::Commit));
    assert_eq!(w.coord.coordinator().decision(&t2), Some(Decision::Abort));
    assert!(rolled_back(w.state("d2", &t2)));
    // One after the other.
    let t3 = w.begin(&[
        ("hub", &[claim("u3").as_str()]),
        ("d2", &[mark("d2").as_str()]),
    ]);
    let mut detail = String::new();
    while let Some((from, _, msg)) = w.wire.front().cloned() {
        if let (
            TxMsg::Vote {
                vote: Vote::No { reason, detail: d },
                ..
            },
            "hub",
        ) = (&msg, from.as_str())
        {
            assert_eq!(*reason, Reason::Constraint);
            detail = d.clone();
        }
        w.step().unwrap().unwrap();
    }
    assert!(detail.contains("taken by User(u1)"), "{detail}");
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&t3), Some(Decision::Abort));
    // A device cannot take a name by itself.
    let node = w.nodes.get_mut("d2").unwrap();
    let o = ops(&node.r, &[claim("u4").as_str()]);
    let err = node.r.write(o).unwrap_err().to_string();
    assert!(err.contains("owned by hub"), "{err}");
    let g = w.converge();
    let bobs = g["User"]
        .iter()
        .filter(|r| r.contains(&crate::value::Value::String("bob".into())))
        .count();
    assert_eq!(bobs, 1);
    assert_eq!(g["Warehouse"].len(), 1, "only d1's part committed");
}

/// The SPEC's edge, on a MANY_ONE table whose rule is a constraint: two transactions
/// want the same source's one slot; one commits, the other is refused, and the rule holds
/// everywhere. A `single` constraint needs a MANY_ONE or ONE_ONE table.
#[test]
fn single_edge_race() {
    let setup: [&str; 4] = [
        r#"{"op":"set_constraint","table":"Mentor","single":true,"owner":{"peer":"hub"}}"#,
        r#"{"op":"add_node","table":"User","props":{"id":"user_1"}}"#,
        r#"{"op":"add_node","table":"User","props":{"id":"user_2"}}"#,
        r#"{"op":"add_node","table":"User","props":{"id":"user_3"}}"#,
    ];
    let mut w = World::new(&["hub", "a"], &[("hub", &setup)]);
    let edge =
        |to: &str| format!(r#"{{"op":"add_edge","table":"Mentor","from":"user_1","to":"{to}"}}"#);
    let t1 = w.begin(&[("hub", &[edge("user_2").as_str()])]);
    let t2 = w.begin(&[("hub", &[edge("user_3").as_str()])]);
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&t1), Some(Decision::Commit));
    assert_eq!(w.coord.coordinator().decision(&t2), Some(Decision::Abort));
    let t3 = w.begin(&[("hub", &[edge("user_3").as_str()])]);
    w.settle();
    assert_eq!(w.coord.coordinator().decision(&t3), Some(Decision::Abort));
    let g = w.converge();
    assert_eq!(g["Mentor"].len(), 1);
    // Not for a MANY_MANY table.
    let r = &w.nodes["a"].r;
    let err = crate::json::op_from_json(
        r#"{"op":"set_constraint","table":"Follows","single":true,"owner":{"peer":"hub"}}"#,
        r.engine().schema(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("MANY_MANY"), "{err}");
}

/// `set_constraint` reads and prints back the same, and bad ones are refused naming the
/// bad value.
#[test]
fn set_constraint_json() {
    let r = {
        let mut r = replica("a");
        let mut schema = r.engine().schema().clone();
        let ddl = crate::json::schema_ops(SCHEMA, &mut schema).unwrap();
        r.write(ddl.into_iter().map(Op::Schema).collect()).unwrap();
        r
    };
    let s = r.engine().schema();
    for line in [
        r#"{"op":"set_constraint","table":"Warehouse","prop":"stock","min":0,"owner":{"column":"site"}}"#,
        r#"{"op":"set_constraint","table":"User","prop":"name","unique":true,"owner":{"peer":"hub"}}"#,
        r#"{"op":"set_constraint","table":"Mentor","single":true,"owner":{"peer":"hub"}}"#,
        r#"{"op":"set_constraint","table":"User","prop":"name","none":true}"#,
    ] {
        let op = crate::json::op_from_json(line, s).unwrap();
        let back = crate::json::op_to_json(&op).to_string();
        assert_eq!(crate::json::op_from_json(&back, s).unwrap(), op, "{back}");
    }
    for (line, says) in [
        (
            r#"{"op":"set_constraint","table":"User","prop":"name","min":0,"owner":{"peer":"hub"}}"#,
            "integer type",
        ),
        (
            r#"{"op":"set_constraint","table":"User","prop":"nope","unique":true,"owner":{"peer":"hub"}}"#,
            "nope",
        ),
        (
            r#"{"op":"set_constraint","table":"User","prop":"name","unique":true,"owner":{"peer":"bad id!"}}"#,
            "bad id!",
        ),
        (
            r#"{"op":"set_constraint","table":"User","prop":"name","unique":true,"owner":{"column":"name"}}"#,
            "must be a peer",
        ),
        (
            r#"{"op":"set_constraint","table":"User","prop":"name","unique":true}"#,
            "needs an \"owner\"",
        ),
        (
            r#"{"op":"set_constraint","table":"User","prop":"name","unique":true,"min":1,"owner":{"peer":"hub"}}"#,
            "exactly one",
        ),
        (
            r#"{"op":"set_constraint","table":"User","prop":"id","unique":true,"owner":{"peer":"hub"}}"#,
            "primary key",
        ),
        (
            r#"{"op":"set_constraint","table":"Warehouse","prop":"stock","min":0,"owner":{"column":"stock"}}"#,
            "must be STRING",
        ),
        (
            r#"{"op":"tx","tx":"c/1/1","participants":["a"],"ops":1}"#,
            "commit markers",
        ),
    ] {
        let err = crate::json::op_from_json(line, s).unwrap_err().to_string();
        assert!(err.contains(says), "{line}: {err}");
    }
}

/// A received commit marker is bounded and checked before it is applied.
#[test]
fn a_bad_commit_marker_is_refused() {
    let tx = TxId {
        coordinator: "c".into(),
        epoch: 1,
        seq: 1,
    };
    assert!(check_marker(&tx, &["a".into()], 1).is_ok());
    let many: Vec<String> = (0..=MAX_PARTICIPANTS).map(|i| format!("p{i}")).collect();
    for (participants, ops, says) in [
        (vec![], 1, "0 participants"),
        (many, 1, "65 participants"),
        (vec!["a".into(), "a".into()], 1, "named twice"),
        (vec!["no way".into()], 1, "no way"),
        (vec!["a".into()], MAX_TX_OPS as u32 + 1, "ops (at most"),
    ] {
        let err = check_marker(&tx, &participants, ops)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{err}");
    }
    let bad = TxId {
        coordinator: "x/y".into(),
        ..tx
    };
    assert!(check_marker(&bad, &["a".into()], 1).is_err());
    assert_eq!("c/1/7".parse::<TxId>().unwrap().seq, 7);
    assert!("c/1".parse::<TxId>().is_err());
}

/// The operator's decision (`kuzu-sync tx-resolve`) on real replicas: it commits or
/// aborts as a coordinator's decision would, survives a reopen, and a coordinator that
/// later decides the other way gets an acknowledgement and a recorded mismatch, nothing
/// applied.
mod operator_decisions {
    use super::*;

    const U1: &str = r#"{"op":"add_node","table":"User","props":{"id":"u1","name":"Ann"}}"#;
    const U2: &str = r#"{"op":"add_node","table":"User","props":{"id":"u2","name":"Bo"}}"#;

    fn resolve(
        w: &mut World,
        node: &str,
        tx: &TxId,
        d: Decision,
    ) -> Result<OperatorDecision, ResolveError> {
        let now = w.now;
        let n = w.nodes.get_mut(node).unwrap();
        n.p.resolve(&mut n.r, tx, d, "ann", "coordinator lost", now)
    }

    fn operator(w: &World, node: &str, tx: &TxId) -> Option<OperatorDecision> {
        w.nodes[node].p.participant().operator_decision(tx).cloned()
    }

    /// The coordinator never hears the votes: `a` and `b` are prepared, in doubt.
    fn in_doubt() -> (World, TxId) {
        let mut w = World::new(&["a", "b"], &[]);
        let tx = w.begin(&[("a", &[U1]), ("b", &[U2])]);
        w.step().unwrap().unwrap();
        w.step().unwrap().unwrap();
        w.wire.clear();
        w.now = 5_000;
        assert_eq!(w.nodes["a"].p.prepared(w.now).len(), 1);
        (w, tx)
    }

    #[test]
    fn an_operator_commit_applies_the_ops_once_releases_the_locks_and_survives_a_reopen() {
        let (mut w, tx) = in_doubt();
        let d = resolve(&mut w, "a", &tx, Decision::Commit).unwrap();
        assert_eq!(
            (d.decision, d.by.as_str(), d.reason.as_str(), d.at),
            (Decision::Commit, "ann", "coordinator lost", 5_000)
        );
        assert!(committed(w.state("a", &tx)));
        assert_eq!(w.rows("a", "User").len(), 1);
        assert!(w.nodes["a"].r.engine().tx_markers(&tx).is_some());
        assert!(w.nodes["a"].p.participant().locks().is_empty());
        let records = &w.nodes["a"].p.log().records;
        assert!(matches!(
            &records[records.len() - 2..],
            [
                PartRecord::Resolved {
                    decision: Decision::Commit,
                    ..
                },
                PartRecord::Committed { .. }
            ]
        ));
        // The lock is released: a local write of the node goes ahead.
        let n = w.nodes.get_mut("a").unwrap();
        let update = ops(
            &n.r,
            &[r#"{"op":"update","table":"User","key":"u1","prop":"name","value":"Annie"}"#],
        );
        n.p.write(&mut n.r, update).unwrap();
        // A reopen from the records keeps the operator's decision.
        let log = n.p.log().clone();
        n.p = TxParticipant::open(&n.r, log, w.now).unwrap();
        assert!(committed(w.state("a", &tx)));
        assert_eq!(operator(&w, "a", &tx), Some(d));
        // The coordinator's deadline passes: abort, presumed. `a` keeps its commit,
        // acknowledges and records the mismatch; `b` rolls back.
        let applied = w.nodes["a"].r.version_vector().clone();
        w.settle();
        assert!(committed(w.state("a", &tx)));
        assert!(rolled_back(w.state("b", &tx)));
        let m = operator(&w, "a", &tx).unwrap().mismatch.unwrap();
        assert_eq!((m.decision, m.from.as_str()), (Decision::Abort, "coord"));
        assert_eq!(
            w.nodes["a"].r.version_vector(),
            &applied,
            "nothing applied again"
        );
        assert_eq!(w.rows("a", "User").len(), 1);
        assert!(w.rows("b", "User").is_empty());
    }

    #[test]
    fn an_operator_abort_leaves_a_tombstone_and_the_coordinators_commit_is_a_mismatch() {
        let mut w = World::new(&["a", "b"], &[]);
        let tx = w.begin(&[("a", &[U1]), ("b", &[U2])]);
        let prepare_a = w.wire.front().cloned().unwrap();
        // Prepares, votes: the coordinator logs commit. Its commit to `a` is lost.
        for _ in 0..4 {
            w.step().unwrap().unwrap();
        }
        w.wire.retain(|(_, to, _)| to != "a");
        w.run();
        assert!(committed(w.state("b", &tx)));
        let logged = w.nodes["a"].p.log().records.len();
        let d = resolve(&mut w, "a", &tx, Decision::Abort).unwrap();
        assert_eq!(d.decision, Decision::Abort);
        assert!(rolled_back(w.state("a", &tx)));
        assert!(w.nodes["a"].p.participant().locks().is_empty());
        assert_eq!(w.nodes["a"].p.log().records.len(), logged + 1);
        assert!(w.rows("a", "User").is_empty());
        // The prepare again is refused as late.
        w.wire.push_back(prepare_a);
        w.step().unwrap().unwrap();
        assert!(
            matches!(
                w.wire.back(),
                Some((_, to, TxMsg::Vote { vote: Vote::No { reason: Reason::Late, .. }, .. }))
                    if to == "coord"
            ),
            "{:?}",
            w.wire
        );
        // The coordinator sends its commit again: acknowledged, recorded, not applied.
        w.settle();
        assert!(rolled_back(w.state("a", &tx)));
        assert!(w.rows("a", "User").is_empty());
        assert!(
            !w.coord.coordinator().is_open(&tx),
            "every participant acked"
        );
        let m = operator(&w, "a", &tx).unwrap().mismatch.unwrap();
        assert_eq!((m.decision, m.from.as_str()), (Decision::Commit, "coord"));
        let mismatches = w.nodes["a"]
            .p
            .log()
            .records
            .iter()
            .filter(|r| matches!(r, PartRecord::Mismatch { .. }))
            .count();
        assert_eq!(mismatches, 1);
    }

    #[test]
    fn an_operator_decision_on_an_unknown_or_decided_transaction_is_refused_and_writes_nothing() {
        let (mut w, tx) = in_doubt();
        let unknown = TxId {
            seq: 99,
            ..tx.clone()
        };
        let logged = w.nodes["a"].p.log().records.len();
        let err = resolve(&mut w, "a", &unknown, Decision::Commit).unwrap_err();
        assert!(matches!(err, ResolveError::Unknown { .. }), "{err}");
        assert!(err.to_string().contains("coord/1/99"), "{err}");
        resolve(&mut w, "a", &tx, Decision::Abort).unwrap();
        let logged_after = w.nodes["a"].p.log().records.len();
        assert_eq!(logged_after, logged + 1);
        let err = resolve(&mut w, "a", &tx, Decision::Commit).unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::Decided {
                    decision: Decision::Abort,
                    by_operator: true,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(w.nodes["a"].p.log().records.len(), logged_after);
        // `b`, decided by its coordinator.
        w.settle();
        let err = resolve(&mut w, "b", &tx, Decision::Commit)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&tx.to_string()) && err.ends_with("already aborted"),
            "{err}"
        );
    }
}
