//! The replica's failure handling on the in-memory stores (the same suite runs on real
//! Kuzu in `tests/tests/it.rs`).

#[test]
fn replica_failure_suite_in_memory() {
    crate::conformance::replica_failure_suite(&mut crate::memory::MemoryGraphStore::new);
}

fn seal_from(peer: &str, wall_ms: u64) -> crate::Event {
    crate::Event {
        id: crate::EventId {
            peer: crate::PeerId::new(peer).unwrap(),
            counter: 1,
        },
        deps: crate::VersionVector::new(),
        hlc: crate::Hlc {
            wall_ms,
            logical: 0,
        },
        op: crate::Op::Seal,
    }
}

fn memory_replica(
    now_ms: u64,
) -> crate::Replica<crate::MemoryEventStore, crate::memory::MemoryGraphStore> {
    crate::Replica::create(
        crate::MemoryEventStore::default(),
        crate::memory::MemoryGraphStore::new(),
        crate::PeerId::new("me").unwrap(),
        Box::new(crate::FixedClock(now_ms)),
    )
    .unwrap()
}

/// An event stamped more than a day ahead of this replica's clock is refused (it would
/// win every last-writer-wins conflict until then, and one at the end of time would
/// exhaust the clock); within a day it is accepted.
#[test]
fn events_from_far_in_the_future_are_refused() {
    let now = 1_700_000_000_000;
    let mut r = memory_replica(now);
    let day = crate::limits::MAX_CLOCK_AHEAD_MS;
    let err = r.import(vec![seal_from("far", now + day + 1)]).unwrap_err();
    assert!(err.to_string().contains("more than a day ahead"), "{err}");
    let err = r.import(vec![seal_from("end", u64::MAX)]).unwrap_err();
    assert!(err.to_string().contains("more than a day ahead"), "{err}");
    assert!(r.version_vector().is_empty());
    r.import(vec![seal_from("near", now + day)]).unwrap();
    // A local write after it still moves forward.
    r.write(vec![crate::Op::Seal]).unwrap();
}

/// An import that would take the version vector past the number of peers anyone can
/// decode is refused whole.
#[test]
fn an_import_past_the_peer_limit_is_refused() {
    let mut r = memory_replica(1_000);
    let events: Vec<_> = (0..=crate::limits::MAX_VECTOR_PEERS)
        .map(|i| seal_from(&format!("p{i}"), 500))
        .collect();
    let err = r.import(events).unwrap_err();
    assert!(
        err.to_string()
            .contains("100001 peers, over the limit of 100000"),
        "{err}"
    );
    assert!(r.version_vector().is_empty());
}

/// A seal by `peer` (its event `counter`) that depends on `deps`.
fn seal_after(peer: &str, counter: u64, deps: &[(&str, u64)]) -> crate::Event {
    let mut vv = crate::VersionVector::new();
    for (p, c) in deps {
        vv.set(crate::PeerId::new(*p).unwrap(), *c);
    }
    if counter > 1 {
        vv.set(crate::PeerId::new(peer).unwrap(), counter - 1);
    }
    crate::Event {
        id: crate::EventId {
            peer: crate::PeerId::new(peer).unwrap(),
            counter,
        },
        deps: vv,
        hlc: crate::Hlc {
            wall_ms: 1_000,
            logical: counter as u32,
        },
        op: crate::Op::Seal,
    }
}

/// The adversarial batch for taking peers in turns: 16,384 peers with one event each,
/// each depending on the next peer's, listed so that every turn round the peers frees one
/// event (16,384² steps before). Ordered in linear time now; the order is causal, complete,
/// and an unmeetable dependency is still reported as missing history.
#[test]
fn causal_order_of_a_long_chain_across_peers() {
    let n = crate::limits::MAX_EVENTS_PER_MESSAGE;
    let name = |i: usize| format!("p{i:05}");
    let names: Vec<String> = (0..n).map(name).collect();
    // p00000 depends on p00001, … ; the last depends on nobody. Peer names sort in the
    // order of the chain, so taking peers in turns frees one event per round.
    let events: Vec<crate::Event> = (0..n)
        .map(|i| {
            let deps: Vec<(&str, u64)> = if i + 1 < n {
                vec![(names[i + 1].as_str(), 1)]
            } else {
                vec![]
            };
            seal_after(&names[i], 1, &deps)
        })
        .collect();
    let ordered = super::causal_order(events, &crate::VersionVector::new()).unwrap();
    assert_eq!(ordered.len(), n);
    let mut have = crate::VersionVector::new();
    for e in &ordered {
        assert!(have.dominates(&e.deps), "{:?} came before its past", e.id);
        have.observe(&e.id);
    }
    // A dependency nobody sent: reported, naming it.
    let stuck = vec![seal_after("a", 1, &[("ghost", 3)]), seal_after("a", 2, &[])];
    match super::causal_order(stuck, &crate::VersionVector::new()) {
        Err(crate::ReplicaError::MissingHistory { count, needs, .. }) => {
            assert_eq!(count, 2);
            assert!(needs.contains("ghost up to 3"), "{needs}");
        }
        other => panic!("{other:?}"),
    }
}

/// A random causal history: `steps` events by up to four peers, each depending on a
/// random part of what the others had written before it; returned in a causal order.
fn random_history(steps: &[(u8, [u8; 4])]) -> Vec<crate::Event> {
    let peers = ["a", "b", "c", "d"];
    let mut written = [0u64; 4];
    let mut events = Vec::new();
    for (who, seen) in steps {
        let who = *who as usize % 4;
        let deps: Vec<(&str, u64)> = (0..4)
            .filter(|q| *q != who && written[*q] > 0)
            .map(|q| (peers[q], 1 + u64::from(seen[q]) % written[q]))
            .collect();
        written[who] += 1;
        events.push(seal_after(peers[who], written[who], &deps));
    }
    events
}

proptest::proptest! {
    /// The one-pass check gives what Kahn's algorithm gives, on inputs already in causal
    /// order (a log, a bundle) and on ones that are not: moved events, repeats, events
    /// already applied, a missing event (the same error).
    #[test]
    fn causal_order_takes_the_input_as_it_is_only_where_that_is_causal(
        steps in proptest::collection::vec((0u8..4, proptest::array::uniform4(0u8..=255)), 1..60),
        applied_prefix in 0usize..60,
        moves in proptest::collection::vec((0usize..60, 0usize..60), 0..3),
        repeats in proptest::collection::vec(0usize..60, 0..3),
        drop in proptest::option::of(0usize..60),
    ) {
        let history = random_history(&steps);
        let mut applied = crate::VersionVector::new();
        for e in history.iter().take(applied_prefix.min(history.len() / 2)) {
            applied.observe(&e.id);
        }
        let mut input = history.clone();
        for (from, to) in &moves {
            let e = input.remove(from % input.len());
            input.insert(to % (input.len() + 1), e);
        }
        for r in &repeats {
            let e = input[r % input.len()].clone();
            input.push(e);
        }
        if let Some(d) = drop {
            if input.len() > 1 {
                input.remove(d % input.len());
            }
        }
        let ids = |r: Result<Vec<crate::Event>, crate::ReplicaError>| {
            r.map(|v| v.into_iter().map(|e| e.id).collect::<Vec<_>>())
                .map_err(|e| e.to_string())
        };
        let fast = ids(super::causal_order(input.clone(), &applied));
        let kahn = ids(super::reorder(input.clone(), &applied));
        proptest::prop_assert_eq!(&fast, &kahn);
        if moves.is_empty() && repeats.is_empty() && drop.is_none() {
            // Untouched, the history comes back as it is, less what was applied.
            let expected: Vec<_> = history
                .iter()
                .filter(|e| !applied.contains(&e.id))
                .map(|e| e.id.clone())
                .collect();
            proptest::prop_assert_eq!(fast, Ok(expected));
        }
    }
}

/// A write refused at its first op changed nothing, so it costs no rebuild from the stores
/// (a rebuild replays the whole log); one refused at a later op, after earlier ops were
/// applied in memory, is rebuilt, and leaves the replica as it was either way.
#[test]
fn a_write_refused_at_its_first_op_costs_no_rebuild() {
    use crate::conformance::FlakyGraph;
    use crate::schema::{Column, NodeTableDef, SchemaOp};
    use crate::{DataType, Op, Value};

    let mut r = crate::Replica::create(
        crate::MemoryEventStore::default(),
        FlakyGraph::new(crate::memory::MemoryGraphStore::new()),
        crate::PeerId::new("me").unwrap(),
        Box::new(crate::FixedClock(1_700_000_000_000)),
    )
    .unwrap();
    r.write(vec![Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "T".into(),
        columns: vec![Column {
            name: "id".into(),
            ty: DataType::Int64,
            default: None,
        }],
        primary_key: "id".into(),
    }))])
    .unwrap();
    let add = |id: Value| Op::AddNode {
        table: "T".into(),
        props: vec![("id".into(), id)],
    };
    r.write(vec![add(Value::Int64(1))]).unwrap();
    let vv = r.version_vector().clone();
    let dump = r.engine().dump();
    let reads = r.graph().watermark_reads;

    let bad = add(Value::String("one".into()));
    let err = r.write(vec![bad.clone()]).unwrap_err().to_string();
    assert!(err.starts_with("op 1:"), "{err}");
    assert_eq!(
        r.graph().watermark_reads,
        reads,
        "no rebuild for a first op"
    );
    let err = r.write(vec![add(Value::Int64(2)), bad]).unwrap_err();
    assert!(err.to_string().starts_with("op 2:"), "{err}");
    assert!(r.graph().watermark_reads > reads, "a later op is rebuilt");
    assert_eq!((r.version_vector(), &r.engine().dump()), (&vv, &dump));

    r.write(vec![add(Value::Int64(3))]).unwrap();
    assert_eq!(
        r.version_vector().get(&crate::PeerId::new("me").unwrap()),
        3
    );
}

/// A replica remembers at most `MAX_KNOWN_PEERS` peers: a client claiming ever new peer ids
/// with empty vectors cannot pin compaction or grow the stored list without limit. Known
/// peers still count, and forgetting one frees a slot.
#[test]
fn known_peers_are_bounded() {
    use crate::limits::MAX_KNOWN_PEERS;
    use crate::schema::{Column, NodeTableDef, SchemaOp};
    use crate::{DataType, Op, VersionVector};

    let mut r = memory_replica(1_700_000_000_000);
    r.write(vec![Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "T".into(),
        columns: vec![Column {
            name: "id".into(),
            ty: DataType::Int64,
            default: None,
        }],
        primary_key: "id".into(),
    }))])
    .unwrap();
    let everything = r.version_vector().clone();
    for i in 0..MAX_KNOWN_PEERS - 1 {
        assert!(r.note_remote(&format!("p{i}"), &everything).unwrap());
    }
    // The last slot goes to a peer that holds nothing: it pins the floor.
    assert!(r.note_remote("laggard", &VersionVector::new()).unwrap());
    assert!(r.compaction_floor().unwrap().is_empty());
    // Past the bound a new peer is not recorded; known ones still progress.
    assert!(!r.note_remote("mallory", &VersionVector::new()).unwrap());
    assert_eq!(r.known_peers().unwrap().len(), MAX_KNOWN_PEERS);
    assert!(!r.known_peers().unwrap().contains_key("mallory"));
    assert!(r.note_remote("laggard", &everything).unwrap());
    assert_eq!(r.compaction_floor().unwrap(), everything);
    r.forget_peer("p0").unwrap();
    assert!(r.note_remote("mallory", &VersionVector::new()).unwrap());
    assert!(r.compaction_floor().unwrap().is_empty());
}

/// A snapshot comes from a peer and is checked like the events it stands for: names in
/// its schema must be identifiers, its event count must match its vector, and its clock
/// may not be more than a day ahead. A refused snapshot changes nothing; the real one
/// installs.
#[test]
fn forged_snapshots_are_refused() {
    use crate::schema::{Column, NodeTableDef, SchemaOp};
    use crate::{DataType, Op, Value, VersionVector};

    let now = 1_700_000_000_000;
    let table = |name: &str| {
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: name.into(),
            columns: vec![Column {
                name: "id".into(),
                ty: DataType::Int64,
                default: None,
            }],
            primary_key: "id".into(),
        }))
    };
    let node = |t: &str| Op::AddNode {
        table: t.into(),
        props: vec![("id".into(), Value::Int64(7))],
    };
    let snapshot_of = |clock: u64| {
        let mut hub = crate::Replica::create(
            crate::MemoryEventStore::default(),
            crate::memory::MemoryGraphStore::new(),
            crate::PeerId::new("hub").unwrap(),
            Box::new(crate::FixedClock(clock)),
        )
        .unwrap();
        hub.write(vec![table("Userx"), node("Userx")]).unwrap();
        hub.snapshot_for(&VersionVector::new()).unwrap()
    };
    let good = snapshot_of(now);
    let replace = |bytes: &[u8], from: &[u8], to: &[u8]| -> Vec<u8> {
        let mut out = bytes.to_vec();
        let mut i = 0;
        let mut n = 0;
        while i + from.len() <= out.len() {
            if &out[i..i + from.len()] == from {
                out[i..i + from.len()].copy_from_slice(to);
                n += 1;
            }
            i += 1;
        }
        assert!(n > 0, "{from:?} not in the state");
        out
    };
    let mut bad_name = good.clone();
    bad_name.state = replace(&good.state, b"Userx", b"Use`x");
    bad_name.state = replace(&bad_name.state, b"userx", b"use`x");
    let mut reserved = good.clone();
    reserved.state = replace(&good.state, b"Userx", b"_ks_x");
    reserved.state = replace(&reserved.state, b"userx", b"_ks_x");
    let mut wrong_key = good.clone();
    wrong_key.state = replace(&good.state, b"userx", b"usery");
    let mut lying_count = good.clone();
    lying_count.event_count = u64::MAX;
    let ahead = snapshot_of(now + 2 * crate::limits::MAX_CLOCK_AHEAD_MS);

    let mut r = memory_replica(now);
    r.write(vec![table("Mine"), node("Mine")]).unwrap();
    let before = (
        r.version_vector().clone(),
        r.engine().dump(),
        r.dump().unwrap(),
    );
    for (snap, want) in [
        (&bad_name, "is not an identifier"),
        (&reserved, "table name \"_ks_x\" is reserved"),
        (&wrong_key, "listed under another table's name"),
        (&lying_count, "claims 18446744073709551615 events"),
        (&ahead, "more than a day ahead"),
    ] {
        let err = r.install_snapshot(snap).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?}: {err}");
        let after = (
            r.version_vector().clone(),
            r.engine().dump(),
            r.dump().unwrap(),
        );
        assert_eq!(after, before, "{want}: the replica changed");
    }
    r.install_snapshot(&good).unwrap();
    assert!(r.engine().schema().table("Userx").is_some());
}

/// The running checksums give what reading the log gives, for every vector asked, through
/// writes, imports (with duplicates), compaction, an offline queue rewritten by coalescing,
/// and a reopen.
#[test]
fn running_checksums_match_the_log() {
    use crate::schema::{Column, NodeTableDef, SchemaOp};
    use crate::{DataType, Op, PeerId, Value, VersionVector};

    let table = Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "T".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: DataType::Int64,
                default: None,
            },
            Column {
                name: "v".into(),
                ty: DataType::Int64,
                default: None,
            },
        ],
        primary_key: "id".into(),
    }));
    let upsert = |id: i64, v: i64| Op::AddNode {
        table: "T".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("v".into(), Value::Int64(v)),
        ],
    };
    let mut rs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|p| {
            crate::Replica::create(
                crate::MemoryEventStore::default(),
                crate::memory::MemoryGraphStore::new(),
                PeerId::new(*p).unwrap(),
                Box::new(crate::FixedClock(1_700_000_000_000)),
            )
            .unwrap()
        })
        .collect();
    rs[0].write(vec![table]).unwrap();
    let first = rs[0].events_since(&VersionVector::new()).unwrap();
    for r in &mut rs[1..] {
        r.import(first.clone()).unwrap();
    }
    let mut x = 7u64;
    let mut rnd = |n: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % n
    };
    let mut checked = 0;
    for step in 0..300 {
        let i = rnd(3) as usize;
        match rnd(10) {
            0..=4 => {
                let id = rnd(5) as i64;
                let _ = rs[i].write(vec![upsert(id, step)]);
            }
            5..=6 => {
                let j = rnd(3) as usize;
                if i != j {
                    let evs = rs[j].events_since(&VersionVector::new()).unwrap();
                    let _ = rs[i].import(evs);
                }
            }
            7 => {
                let floor = rs[i].version_vector().clone();
                let floor = floor.meet(&rs[(i + 1) % 3].version_vector().clone());
                let _ = rs[i].compact_to(&floor);
            }
            8 => {
                if rs[i].go_offline().is_ok() {
                    for k in 0..3 {
                        let _ = rs[i].write(vec![upsert(9, k)]);
                    }
                    rs[i].go_online().unwrap();
                }
            }
            _ => {
                let r = std::mem::replace(
                    &mut rs[i],
                    crate::Replica::create(
                        crate::MemoryEventStore::default(),
                        crate::memory::MemoryGraphStore::new(),
                        PeerId::new("tmp").unwrap(),
                        Box::new(crate::FixedClock(0)),
                    )
                    .unwrap(),
                );
                let (ev, gr) = r.into_parts();
                rs[i] =
                    crate::Replica::open(ev, gr, Box::new(crate::FixedClock(1_700_000_000_000)))
                        .unwrap();
            }
        }
        // Vectors to ask about: each replica's own, the meets, and one past everything.
        for r in &rs {
            let own = r.version_vector().clone();
            let mut asks = vec![own.clone()];
            for o in &rs {
                asks.push(own.meet(o.version_vector()));
            }
            let mut beyond = own.clone();
            for (p, c) in own.iter() {
                beyond.set(p.clone(), c + 5);
            }
            asks.push(beyond);
            for vv in asks {
                let fast = r.checksum_within(&vv).unwrap();
                let slow = vv
                    .dominates(r.floor())
                    .then(|| r.checksum_within_by_scan(&vv).unwrap());
                assert_eq!(fast, slow, "step {step}, {vv:?}");
                checked += fast.is_some() as usize;
            }
        }
    }
    assert!(checked > 1_000, "{checked} checksums compared");
    assert!(
        rs.iter().all(|r| !r.floor().is_empty()),
        "compaction happened"
    );
}

/// An event sent with too small a causal past (an edge between nodes its `deps` do not
/// cover) applies where its nodes came first. Replaying the log must apply it in the same
/// place: before, recovery took peers in name order, applied it before its nodes and
/// failed, and the replica could never be rebuilt or reopened (one client could brick a
/// hub: the forged event, then any refused import). Found by the hub_session fuzzer.
#[test]
fn an_event_with_a_short_causal_past_replays_where_it_was_applied() {
    use crate::schema::{Column, Multiplicity, NodeTableDef, RelTableDef, SchemaOp};
    use crate::{
        DataType, EdgeRef, Event, EventId, Hlc, NodeRef, Op, PeerId, Value, VersionVector,
    };

    let mut hub = memory_replica(1_700_000_000_000);
    hub.write(vec![
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: "User".into(),
            columns: vec![Column {
                name: "name".into(),
                ty: DataType::String,
                default: None,
            }],
            primary_key: "name".into(),
        })),
        Op::Schema(SchemaOp::CreateRelTable(RelTableDef {
            name: "Follows".into(),
            connections: vec![("User".into(), "User".into())],
            columns: vec![],
            multiplicity: Multiplicity::ManyMany,
        })),
        Op::AddNode {
            table: "User".into(),
            props: vec![("name".into(), Value::from("Carol"))],
        },
    ])
    .unwrap();
    let carol = NodeRef {
        table: "User".into(),
        key: Value::from("Carol"),
    };
    // "a" (before "me" in name order) claims to know nothing, yet links Carol.
    let forged = Event {
        id: EventId {
            peer: PeerId::new("a").unwrap(),
            counter: 1,
        },
        deps: VersionVector::new(),
        hlc: Hlc {
            wall_ms: 1_700_000_000_000,
            logical: 9,
        },
        op: Op::AddEdge {
            edge: EdgeRef {
                table: "Follows".into(),
                from: carol.clone(),
                to: carol,
                key: String::new(),
            },
            props: vec![],
        },
    };
    hub.import(vec![forged]).unwrap();
    let vv = hub.version_vector().clone();
    let dump = hub.dump().unwrap();
    // An equivocating copy of one of the hub's own events: refused in the log, after the
    // engine applied it, so the replica rebuilds from its stores.
    let mut twin = hub
        .events_since(&VersionVector::new())
        .unwrap()
        .into_iter()
        .find(|e| e.id.peer.as_str() == "me" && e.id.counter == 3)
        .unwrap();
    twin.op = Op::AddNode {
        table: "User".into(),
        props: vec![("name".into(), Value::from("Dave"))],
    };
    let next = Event {
        id: EventId {
            peer: PeerId::new("b").unwrap(),
            counter: 1,
        },
        deps: vv.clone(),
        hlc: Hlc {
            wall_ms: 1_700_000_000_001,
            logical: 0,
        },
        op: Op::AddNode {
            table: "User".into(),
            props: vec![("name".into(), Value::from("Eve"))],
        },
    };
    assert!(hub.import(vec![next, twin]).is_err());
    assert!(
        !hub.is_unrecovered(),
        "the rebuild from the stores succeeded"
    );
    assert_eq!(hub.dump().unwrap(), dump);
    assert_eq!(hub.version_vector(), &vv);
    let (ev, gr) = hub.into_parts();
    let hub = crate::Replica::open(ev, gr, Box::new(crate::FixedClock(1_700_000_000_000)))
        .expect("the replica reopens");
    assert_eq!(hub.version_vector(), &vv);
}

/// kuzu-sync's own names (`_ks_` in any case: `_ks_meta` is the watermark table, `_ks_log`
/// the JS host's log, `_ks_stage_T` a stage) are refused as table and column names, whether
/// written here or received from a peer, and the refusal names them and changes nothing.
#[test]
fn kuzu_sync_s_own_names_are_refused_written_or_received() {
    use crate::schema::{Column, NodeTableDef, SchemaOp};
    use crate::{DataType, Op};

    let now = 1_700_000_000_000;
    let table = |name: &str, column: &str| {
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: name.into(),
            columns: vec![Column {
                name: column.into(),
                ty: DataType::Int64,
                default: None,
            }],
            primary_key: column.into(),
        }))
    };
    let mut r = memory_replica(now);
    r.write(vec![table("Mine", "id")]).unwrap();
    let before = (r.version_vector().clone(), r.engine().dump());
    for (op, bad) in [
        (
            table("_ks_meta", "id"),
            "table name \"_ks_meta\" is reserved",
        ),
        (table("_KS_log", "id"), "table name \"_KS_log\" is reserved"),
        (
            table("_ks_stage_Mine", "id"),
            "table name \"_ks_stage_Mine\" is reserved",
        ),
        (
            table("T", "_KS_stage_row"),
            "column name \"_KS_stage_row\" is empty or reserved",
        ),
    ] {
        let err = r.write(vec![op.clone()]).unwrap_err().to_string();
        assert!(err.contains(bad), "want {bad:?}: {err}");
        let received = crate::Event {
            id: crate::EventId {
                peer: crate::PeerId::new("peer").unwrap(),
                counter: 1,
            },
            deps: crate::VersionVector::new(),
            hlc: crate::Hlc {
                wall_ms: now,
                logical: 0,
            },
            op,
        };
        let err = r.import(vec![received]).unwrap_err().to_string();
        assert!(err.contains(bad), "received, want {bad:?}: {err}");
        assert_eq!((r.version_vector().clone(), r.engine().dump()), before);
    }
}
