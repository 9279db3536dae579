//! Atomic visibility on replicas (ARCHITECTURE.md, "Atomic visibility on every replica"):
//! a transaction's parts reach a third replica one by one, and it shows none of them
//! until it holds all of them.

use super::replica_tests::{replica, R};
use super::*;
use crate::event::{Event, Op};
use crate::value::Value;
use crate::{PeerId, Replica};

const SCHEMA: &str = "CREATE NODE TABLE User(id STRING, n INT64, PRIMARY KEY(id));";

fn ops(r: &R, lines: &[&str]) -> Vec<Op> {
    lines
        .iter()
        .map(|l| crate::json::op_from_json(l, r.engine().schema()).unwrap())
        .collect()
}

fn add(r: &R, id: &str) -> Vec<Op> {
    ops(
        r,
        &[&format!(
            r#"{{"op":"add_node","table":"User","props":{{"id":"{id}","n":1}}}}"#
        )],
    )
}

/// The ids of the users `r`'s graph shows, sorted.
fn users(r: &mut R) -> Vec<String> {
    let mut out: Vec<String> = r
        .dump()
        .unwrap()
        .get("User")
        .map(|rows| {
            rows.iter()
                .map(|row| match &row[0] {
                    Value::String(s) => s.clone(),
                    v => panic!("{v:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn since(from: &R, to: &R) -> Vec<Event> {
    from.events_since(to.version_vector()).unwrap()
}

/// Replicas `p`, `q`, `r` sharing the schema, and transaction `c/1/1` committed on `p`
/// (two users) and `q` (one user): `r` has neither part.
fn world() -> (R, R, R, TxId) {
    let (mut p, mut q, mut r) = (replica("p"), replica("q"), replica("r"));
    let mut schema = p.engine().schema().clone();
    let ddl = crate::json::schema_ops(SCHEMA, &mut schema).unwrap();
    p.write(ddl.into_iter().map(Op::Schema).collect()).unwrap();
    let base = since(&p, &q);
    q.import(base.clone()).unwrap();
    r.import(base).unwrap();
    let tx: TxId = "c/1/1".parse().unwrap();
    let names = vec!["p".to_string(), "q".to_string()];
    let mut mine = add(&p, "p1");
    mine.extend(add(&p, "p2"));
    p.commit_tx(&tx, &names, mine).unwrap();
    q.commit_tx(&tx, &names, add(&q, "q1")).unwrap();
    (p, q, r, tx)
}

#[test]
fn a_third_replica_shows_a_transaction_only_once_it_holds_every_part() {
    let (mut p, q, mut r, _) = world();
    // p's part alone: held, nothing shown, nothing in the vector or the log.
    let logged = r.status().unwrap().stored_events;
    let out = r.import(since(&p, &r)).unwrap();
    assert_eq!((out.applied, out.held), (0, 3));
    assert!(users(&mut r).is_empty());
    let status = r.status().unwrap();
    assert_eq!(status.held_events, 3);
    assert_eq!(status.stored_events, logged);
    assert_eq!(r.version_vector().get(&PeerId::new("p").unwrap()), 1);
    // p writes after the transaction: that event waits behind it.
    let later = add(&p, "p3");
    p.write(later).unwrap();
    let out = r.import(since(&p, &r)).unwrap();
    assert_eq!((out.applied, out.duplicates, out.held), (0, 3, 4));
    assert!(users(&mut r).is_empty());
    // q's part completes it: everything is applied in this one import.
    let out = r.import(since(&q, &r)).unwrap();
    assert_eq!((out.applied, out.held), (6, 0));
    assert_eq!(users(&mut r), ["p1", "p2", "p3", "q1"]);
    assert_eq!(r.status().unwrap().held_events, 0);
    assert_eq!(r.version_vector(), &{
        let mut vv = p.version_vector().clone();
        vv.merge(q.version_vector());
        vv
    });
}

#[test]
fn every_delivery_order_ends_in_one_step_from_nothing_to_everything() {
    let (p, q, _, _) = world();
    let parts = [since(&p, &replica("x")), since(&q, &replica("x"))];
    // The events of both parts, after the schema, in several interleavings.
    let mut tx_events: Vec<Event> = parts
        .iter()
        .flatten()
        .filter(|e| !matches!(e.op, Op::Schema(_)))
        .cloned()
        .collect();
    let schema: Vec<Event> = parts[0]
        .iter()
        .filter(|e| matches!(e.op, Op::Schema(_)))
        .cloned()
        .collect();
    for rotation in 0..tx_events.len() {
        tx_events.rotate_left(1);
        // One event at a time: each of p's and q's events comes in its own import.
        let mut r = replica("r");
        r.import(schema.clone()).unwrap();
        let mut shown = Vec::new();
        let mut pending: Vec<Event> = tx_events.clone();
        while !pending.is_empty() {
            // The first event of the rotation that is ready (its peer's next one).
            let i = pending
                .iter()
                .position(|e| {
                    r.import(vec![e.clone()])
                        .is_ok_and(|o| o.applied + o.held > 0)
                        || r.engine().is_applied(&e.id)
                })
                .unwrap_or(0);
            pending.remove(i);
            shown.push(users(&mut r).len());
        }
        // Nothing, nothing, ..., then all three at once.
        let last = shown.pop().unwrap();
        assert_eq!(last, 3, "rotation {rotation}");
        assert!(
            shown.iter().all(|n| *n == 0),
            "rotation {rotation}: {shown:?}"
        );
    }
}

#[test]
fn both_parts_in_one_import_apply_at_once_and_held_duplicates_are_recognized() {
    let (p, q, mut r, _) = world();
    let mut all = since(&p, &r);
    all.extend(since(&q, &r));
    let out = r.import(all).unwrap();
    assert_eq!((out.applied, out.held), (5, 0));
    assert_eq!(users(&mut r), ["p1", "p2", "q1"]);

    // A held event sent again is a duplicate; a different event under its id is refused.
    let mut r = replica("r2");
    r.import(since(&p, &replica("x")).into_iter().take(1).collect())
        .unwrap();
    let part = since(&p, &r);
    r.import(part.clone()).unwrap();
    let out = r.import(part.clone()).unwrap();
    assert_eq!((out.applied, out.duplicates, out.held), (0, 3, 3));
    let mut forged = part[1].clone();
    forged.hlc.wall_ms += 1;
    let err = r.import(vec![forged]).unwrap_err().to_string();
    assert!(err.contains("differs from the event held here"), "{err}");
    assert_eq!(r.status().unwrap().held_events, 3);
}

#[test]
fn held_events_survive_a_restart() {
    let (p, q, mut r, _) = world();
    r.import(since(&p, &r)).unwrap();
    assert_eq!(r.status().unwrap().held_events, 3);
    let (events, graph) = r.into_parts();
    let mut r = Replica::open(events, graph, Box::new(crate::FixedClock(1_000))).unwrap();
    assert_eq!(r.status().unwrap().held_events, 3);
    assert!(users(&mut r).is_empty());
    // q's part, after the restart, completes the transaction held before it.
    let out = r.import(since(&q, &r)).unwrap();
    assert_eq!((out.applied, out.held), (5, 0));
    assert_eq!(users(&mut r), ["p1", "p2", "q1"]);
    let (events, graph) = r.into_parts();
    let mut r = Replica::open(events, graph, Box::new(crate::FixedClock(1_000))).unwrap();
    assert_eq!(r.status().unwrap().held_events, 0);
    assert_eq!(users(&mut r), ["p1", "p2", "q1"]);
}

#[test]
fn a_participant_shows_its_own_part_and_holds_the_others_until_they_are_whole() {
    let (mut p, q, _, tx) = world();
    assert_eq!(users(&mut p), ["p1", "p2"]);
    let out = p.import(since(&q, &p)).unwrap();
    assert_eq!((out.applied, out.held), (2, 0));
    assert_eq!(users(&mut p), ["p1", "p2", "q1"]);
    assert_eq!(p.engine().tx_markers(&tx).unwrap().parts.len(), 2);
}

#[test]
fn a_local_write_while_a_transaction_is_held_does_not_claim_it_in_its_past() {
    let (p, _, mut r, _) = world();
    r.import(since(&p, &r)).unwrap();
    let ids = r.write(add(&r, "r1")).unwrap();
    let mine = r.events_since(&crate::VersionVector::new()).unwrap();
    let e = mine.iter().find(|e| e.id == ids[0]).unwrap();
    // p's schema event only: the held marker (p:2) is not in the write's causal past.
    assert_eq!(e.deps.get(&PeerId::new("p").unwrap()), 1);
}

#[test]
fn over_the_bound_everything_held_is_released() {
    let (p, _, mut r, _) = world();
    r.set_held_limit(2);
    let out = r.import(since(&p, &r)).unwrap();
    assert_eq!((out.applied, out.held), (3, 0));
    assert_eq!(users(&mut r), ["p1", "p2"]);
    assert_eq!(r.status().unwrap().released_incomplete, 1);
}

#[test]
fn a_part_compacted_into_a_snapshot_still_counts() {
    let (p, mut q, _, tx) = world();
    q.compact_to(&q.version_vector().clone()).unwrap();
    let snap = q.snapshot_for(&crate::VersionVector::new()).unwrap();
    let mut s = replica("s");
    s.install_snapshot(&snap).unwrap();
    assert_eq!(users(&mut s), ["q1"]);
    assert!(s.engine().tx_markers(&tx).is_some_and(|m| m.has("q")));
    let out = s.import(since(&p, &s)).unwrap();
    assert_eq!((out.applied, out.held), (3, 0));
    assert_eq!(users(&mut s), ["p1", "p2", "q1"]);
}

#[test]
fn a_marker_naming_a_participant_that_never_commits_holds_its_part() {
    let (mut p, _, mut r, _) = world();
    let tx: TxId = "c/1/2".parse().unwrap();
    let names = vec!["p".to_string(), "ghost".to_string()];
    let o = add(&p, "p9");
    p.commit_tx(&tx, &names, o).unwrap();
    let out = r.import(since(&p, &r)).unwrap();
    // c/1/1 is incomplete too (q's part is missing), so all of p's events wait.
    assert_eq!((out.applied, out.held), (0, 5));
    assert!(users(&mut r).is_empty());
}

#[test]
fn many_transactions_from_one_peer_are_each_found_and_held_until_whole() {
    let (mut p, mut q, mut r, _) = world();
    q.import(since(&p, &q)).unwrap();
    let names = vec!["p".to_string(), "q".to_string()];
    for k in 2..52 {
        let tx: TxId = format!("c/1/{k}").parse().unwrap();
        let o = add(&p, &format!("p-{k}"));
        p.commit_tx(&tx, &names, o).unwrap();
        let o = add(&q, &format!("q-{k}"));
        q.commit_tx(&tx, &names, o).unwrap();
    }
    // p's parts of 51 transactions: all held (c/1/1's q part is missing too).
    let out = r.import(since(&p, &r)).unwrap();
    assert_eq!((out.applied, out.held), (0, 3 + 50 * 2));
    assert!(users(&mut r).is_empty());
    // q's parts complete every one of them.
    let out = r.import(since(&q, &r)).unwrap();
    assert_eq!(out.held, 0);
    assert_eq!(users(&mut r).len(), 3 + 100);
}

/// `p`, `q` and `z` sharing the schema, and `q`'s participant with `c/1/1` (parts on
/// `p` and `q`) prepared: it voted yes and its coordinator is silent.
fn in_doubt() -> (R, R, R, TxParticipant<MemoryTxLog<PartRecord<Op>>>, TxId) {
    let (mut p, mut q, mut z) = (replica("p"), replica("q"), replica("z"));
    let mut schema = p.engine().schema().clone();
    let ddl = crate::json::schema_ops(SCHEMA, &mut schema).unwrap();
    p.write(ddl.into_iter().map(Op::Schema).collect()).unwrap();
    let base = since(&p, &q);
    q.import(base.clone()).unwrap();
    z.import(base).unwrap();
    let tx: TxId = "c/1/1".parse().unwrap();
    let mut part = TxParticipant::open(&q, MemoryTxLog::default(), 0).unwrap();
    let prepare = TxMsg::Prepare {
        tx: tx.clone(),
        participants: vec!["p".into(), "q".into()],
        ops: add(&q, "q1"),
        deadline: 100,
        addresses: Default::default(),
    };
    let out = part.handle(&mut q, "c", prepare, 0).unwrap();
    assert!(matches!(&out[..], [(to, TxMsg::Vote { vote: Vote::Yes, .. })] if to == "c"));
    (p, q, z, part, tx)
}

/// Cooperative termination by evidence (ARCHITECTURE.md, "Cooperative termination
/// between processes"): `q` is in doubt; `p`'s committed part reaches it by sync and is
/// held (q's own part is not in). At its next tick `q` finds p's marker, commits its
/// part, acknowledges to the coordinator, and then shows the whole transaction at once.
#[test]
fn a_participant_in_doubt_commits_on_another_participants_marker() {
    let (mut p, mut q, _, mut part, tx) = in_doubt();
    assert!(part.tick(&mut q, 50).unwrap().is_empty());
    let names = vec!["p".to_string(), "q".to_string()];
    p.commit_tx(&tx, &names, add(&p, "p1")).unwrap();
    let got = q.import(since(&p, &q)).unwrap();
    assert_eq!((got.applied, got.held), (0, 2));
    assert!(users(&mut q).is_empty());
    assert_eq!(part.evidence(&q), vec![(tx.clone(), "p".to_string())]);
    // The tick commits (before the deadline even: the marker is the decision).
    let out = part.tick(&mut q, 60).unwrap();
    assert!(
        out.iter()
            .any(|(to, m)| to == "c" && matches!(m, TxMsg::Ack { .. })),
        "{out:?}"
    );
    assert_eq!(part.participant().state(&tx), Some(&PartState::Committed));
    assert!(part.participant().locks().is_empty());
    // The whole transaction shows at once, nothing is held any more.
    assert_eq!(users(&mut q), ["p1", "q1"]);
    assert_eq!(q.status().unwrap().held_events, 0);
    assert!(part.evidence(&q).is_empty());
    // The same graph as a replica that got both parts the ordinary way.
    let mut r = replica("r");
    r.import(since(&p, &r)).unwrap();
    r.import(since(&q, &r)).unwrap();
    assert_eq!(users(&mut r), ["p1", "q1"]);
}

/// A marker of the same transaction id from a peer the prepared transaction does not
/// name proves nothing: `q` stays in doubt.
#[test]
fn a_strangers_marker_is_no_evidence() {
    let (_, mut q, mut z, mut part, tx) = in_doubt();
    z.commit_tx(&tx, &["z".into(), "q".into()], add(&z, "z1"))
        .unwrap();
    let got = q.import(since(&z, &q)).unwrap();
    assert_eq!(got.held, 2);
    assert!(part.evidence(&q).is_empty());
    assert!(part
        .tick(&mut q, 500)
        .unwrap()
        .iter()
        .all(|(_, m)| matches!(m, TxMsg::Ask { .. })));
    assert!(matches!(
        part.participant().state(&tx),
        Some(PartState::Prepared { .. })
    ));
}
