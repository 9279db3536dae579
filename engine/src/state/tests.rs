use super::*;
use crate::schema::{Column, NodeTableDef, Policy};

fn peer(s: &str) -> PeerId {
    PeerId::new(s).unwrap()
}

fn schema_ops() -> Vec<Op> {
    vec![
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: "User".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: DataType::String,
                    default: None,
                },
                Column {
                    name: "email".into(),
                    ty: DataType::String,
                    default: None,
                },
                Column {
                    name: "stock".into(),
                    ty: DataType::Int64,
                    default: None,
                },
            ],
            primary_key: "id".into(),
        })),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "stock".into(),
            policy: Policy::Counter,
        }),
        Op::AddNode {
            table: "User".into(),
            props: vec![
                ("id".into(), Value::from("user_123")),
                ("stock".into(), Value::Int64(100)),
            ],
        },
    ]
}

/// Two engines that share the schema and user_123, written by `node_a`.
fn pair() -> (Engine, Engine) {
    let mut a = Engine::new(peer("node_a"));
    let mut b = Engine::new(peer("node_b"));
    for op in schema_ops() {
        let e = a.prepare(op, 1_000).unwrap();
        a.apply(&e).unwrap();
        b.apply(&e).unwrap();
    }
    a.take_batch();
    b.take_batch();
    (a, b)
}

fn user() -> Entity {
    Entity::Node(NodeRef {
        table: "User".into(),
        key: Value::from("user_123"),
    })
}

fn email(e: &Engine) -> Value {
    e.property_value(&norm_entity(&user()), "email").unwrap()
}

#[test]
fn spec_concurrent_email_update_later_timestamp_wins() {
    let (mut a, mut b) = pair();
    // node_a at 10:00:00, node_b at 10:00:01, concurrently.
    let ea = a
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("alice@a.com"),
            },
            36_000_000,
        )
        .unwrap();
    let eb = b
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("alice@b.com"),
            },
            36_001_000,
        )
        .unwrap();
    a.apply(&ea).unwrap();
    a.apply(&eb).unwrap();
    b.apply(&eb).unwrap();
    b.apply(&ea).unwrap();
    assert_eq!(email(&a), Value::from("alice@b.com"));
    assert_eq!(email(&b), Value::from("alice@b.com"));
    let (_, ca) = a.take_batch();
    let c = ca
        .iter()
        .find(|c| c.kind == ConflictKind::ConcurrentUpdate)
        .expect("conflict recorded");
    assert_eq!(c.strategy, "last_write_wins");
    assert_eq!(c.property.as_deref(), Some("email"));
    assert_eq!(c.winner.value, "alice@b.com");
    assert_eq!(c.loser.value, "alice@a.com");
    assert_eq!(c.entity, "User(user_123)");
    let (_, cb) = b.take_batch();
    assert!(cb.iter().any(|c| c.winner.value == "alice@b.com"));
}

#[test]
fn ties_break_by_peer_id() {
    let (mut a, mut b) = pair();
    let ea = a
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("from-a"),
            },
            5_000,
        )
        .unwrap();
    let eb = b
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("from-b"),
            },
            5_000,
        )
        .unwrap();
    assert_eq!(ea.hlc, eb.hlc);
    for e in [&ea, &eb] {
        a.apply(e).unwrap();
    }
    for e in [&eb, &ea] {
        b.apply(e).unwrap();
    }
    // Same timestamp: the greater peer id wins, on both.
    assert_eq!(email(&a), Value::from("from-b"));
    assert_eq!(email(&b), Value::from("from-b"));
}

#[test]
fn causality_beats_wall_clocks() {
    let (mut a, mut b) = pair();
    // node_a's clock is far ahead; node_b writes after seeing node_a's write, with a clock
    // an hour behind. The causally later write wins.
    let ea = a
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("first"),
            },
            10_000_000,
        )
        .unwrap();
    a.apply(&ea).unwrap();
    b.apply(&ea).unwrap();
    let eb = b
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("second"),
            },
            10_000_000 - 3_600_000,
        )
        .unwrap();
    assert!(eb.hlc > ea.hlc, "HLC moves past what it has seen");
    b.apply(&eb).unwrap();
    a.apply(&eb).unwrap();
    assert_eq!(email(&a), Value::from("second"));
    let (_, conflicts) = a.take_batch();
    assert!(
        conflicts
            .iter()
            .all(|c| c.kind != ConflictKind::ConcurrentUpdate),
        "a causally ordered pair is not a conflict: {conflicts:?}"
    );
}

#[test]
fn spec_concurrent_decrements_sum() {
    let (mut a, mut b) = pair();
    let inc = |delta| Op::Increment {
        entity: user(),
        prop: "stock".into(),
        delta: Value::Int64(delta),
    };
    let ea = a.prepare(inc(-5), 2_000).unwrap();
    let eb = b.prepare(inc(-3), 2_000).unwrap();
    a.apply(&ea).unwrap();
    a.apply(&eb).unwrap();
    b.apply(&eb).unwrap();
    b.apply(&ea).unwrap();
    // Duplicates change nothing.
    a.apply(&eb).unwrap();
    let stock = |e: &Engine| e.property_value(&norm_entity(&user()), "stock").unwrap();
    assert_eq!(stock(&a), Value::Int64(92), "100 - 5 - 3");
    assert_eq!(stock(&b), Value::Int64(92));
    let (_, conflicts) = a.take_batch();
    let c = conflicts
        .iter()
        .find(|c| c.strategy == "cumulative")
        .expect("counter conflict recorded");
    assert_eq!(c.resolved.as_deref(), Some("92"));
}

#[test]
fn a_set_resets_the_increments_it_has_seen_but_not_concurrent_ones() {
    let (mut a, mut b) = pair();
    let inc = |delta| Op::Increment {
        entity: user(),
        prop: "stock".into(),
        delta: Value::Int64(delta),
    };
    let i1 = a.prepare(inc(10), 2_000).unwrap();
    a.apply(&i1).unwrap();
    b.apply(&i1).unwrap();
    // a sets stock to 50 having seen +10; b concurrently adds +1.
    let set = a
        .prepare(
            Op::Update {
                entity: user(),
                prop: "stock".into(),
                value: Value::Int64(50),
            },
            3_000,
        )
        .unwrap();
    let i2 = b.prepare(inc(1), 3_000).unwrap();
    for e in [&set, &i2] {
        a.apply(e).unwrap();
    }
    for e in [&i2, &set] {
        b.apply(e).unwrap();
    }
    let stock = |e: &Engine| e.property_value(&norm_entity(&user()), "stock").unwrap();
    assert_eq!(stock(&a), Value::Int64(51));
    assert_eq!(stock(&b), Value::Int64(51));
}

#[test]
fn increment_needs_the_counter_policy() {
    let (a, _) = pair();
    let err = a
        .prepare(
            Op::Increment {
                entity: user(),
                prop: "email".into(),
                delta: Value::from("x"),
            },
            1,
        )
        .unwrap_err();
    assert!(err.to_string().contains("counter policy"), "{err}");
}

#[test]
fn delete_wins_over_a_concurrent_update_and_add_wins_over_a_concurrent_delete() {
    let (mut a, mut b) = pair();
    let del = a
        .prepare(
            Op::DeleteNode(NodeRef {
                table: "User".into(),
                key: Value::from("user_123"),
            }),
            5_000,
        )
        .unwrap();
    let upd = b
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("late@b.com"),
            },
            6_000,
        )
        .unwrap();
    for e in [&del, &upd] {
        a.apply(e).unwrap();
    }
    for e in [&upd, &del] {
        b.apply(e).unwrap();
    }
    let n = norm_node(&NodeRef {
        table: "User".into(),
        key: Value::from("user_123"),
    });
    assert!(
        !a.node_exists(&n) && !b.node_exists(&n),
        "the update does not resurrect"
    );
    let (_, ca) = a.take_batch();
    assert!(ca.iter().any(|c| c.kind == ConflictKind::DeleteUpdate));

    // Re-adding the key after the delete brings it back, with only what the re-add and later
    // concurrent writes set.
    let readd = b
        .prepare(
            Op::AddNode {
                table: "User".into(),
                props: vec![("id".into(), Value::from("user_123"))],
            },
            7_000,
        )
        .unwrap();
    b.apply(&readd).unwrap();
    a.apply(&readd).unwrap();
    assert!(a.node_exists(&n));
    // The update (stamp 6000) is later than the delete (5000), so it shows after the re-add.
    assert_eq!(email(&a), Value::from("late@b.com"));
    assert_eq!(a.dump(), b.dump());
}

#[test]
fn many_one_concurrent_edges_keep_the_latest() {
    use crate::schema::{Multiplicity, RelTableDef};
    let (mut a, mut b) = pair();
    let mk = |e: &mut Engine, op: Op, t: u64| {
        let ev = e.prepare(op, t).unwrap();
        e.apply(&ev).unwrap();
        ev
    };
    let mut shared = Vec::new();
    shared.push(mk(
        &mut a,
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: "City".into(),
            columns: vec![Column {
                name: "name".into(),
                ty: DataType::String,
                default: None,
            }],
            primary_key: "name".into(),
        })),
        10,
    ));
    shared.push(mk(
        &mut a,
        Op::Schema(SchemaOp::CreateRelTable(RelTableDef {
            name: "LivesIn".into(),
            connections: vec![("User".into(), "City".into())],
            columns: vec![],
            multiplicity: Multiplicity::ManyOne,
        })),
        11,
    ));
    for c in ["Oslo", "Rome"] {
        shared.push(mk(
            &mut a,
            Op::AddNode {
                table: "City".into(),
                props: vec![("name".into(), Value::from(c))],
            },
            12,
        ));
    }
    for e in &shared {
        b.apply(e).unwrap();
    }
    let lives = |city: &str| Op::AddEdge {
        edge: EdgeRef {
            table: "LivesIn".into(),
            from: NodeRef {
                table: "User".into(),
                key: Value::from("user_123"),
            },
            to: NodeRef {
                table: "City".into(),
                key: Value::from(city),
            },
            key: String::new(),
        },
        props: vec![],
    };
    let ea = mk(&mut a, lives("Oslo"), 100);
    // a materializes Oslo before it hears of Rome.
    let _ = a.take_batch();
    let eb = mk(&mut b, lives("Rome"), 200);
    // Locally, a second edge from the same user is refused, like Kuzu does.
    assert!(a.prepare(lives("Rome"), 150).is_err());
    a.apply(&eb).unwrap();
    b.apply(&ea).unwrap();
    let (batch, conflicts) = a.take_batch();
    assert_eq!(a.dump(), b.dump());
    let rows = &a.dump()["LivesIn"];
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][3], Value::from("Rome"), "the later edge wins");
    assert!(conflicts
        .iter()
        .any(|c| c.kind == ConflictKind::Multiplicity));
    // a had Oslo materialized; the batch deletes it and adds Rome.
    assert!(batch
        .changes
        .iter()
        .any(|c| matches!(c, GraphChange::DeleteEdge(e) if e.to.key == Value::from("Oslo"))));
}

#[test]
fn received_events_with_a_bad_clock_or_history_are_rejected() {
    let (mut a, b) = pair();
    let mut e = a
        .prepare(
            Op::Update {
                entity: user(),
                prop: "email".into(),
                value: Value::from("x"),
            },
            1_000,
        )
        .unwrap();
    // Its HLC is not after its causal past (the schema events at t=1000).
    e.hlc = Hlc::default();
    let err = b.check(&e).unwrap_err();
    assert!(err.to_string().contains("hybrid timestamp"), "{err}");
    e.hlc = a.hlc().tick(2_000);
    e.deps = VersionVector::new();
    let err = b.check(&e).unwrap_err();
    assert!(err.to_string().contains("causal past"), "{err}");
    let _ = a.take_batch();
    let _ = &mut a;
}

#[test]
fn unknown_table_and_wrong_type_are_rejected_locally_naming_the_input() {
    let (a, _) = pair();
    let err = a
        .prepare(
            Op::AddNode {
                table: "Nope".into(),
                props: vec![],
            },
            1,
        )
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown table \"Nope\"");
    let err = a
        .prepare(
            Op::Update {
                entity: user(),
                prop: "stock".into(),
                value: Value::from("many"),
            },
            1,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("User.stock") && err.to_string().contains("INT64"),
        "{err}"
    );
}

/// Engines sharing the simulator's base schema (User, City, Follows, LivesIn, Marries) and
/// users 1..=3.
fn sim_pair() -> (Engine, Engine) {
    let mut engines = sim_engines(&["a", "b"]);
    let b = engines.pop().unwrap();
    (engines.pop().unwrap(), b)
}

/// [`sim_pair`] for any number of peers (the first writes the shared events).
fn sim_engines(peers: &[&str]) -> Vec<Engine> {
    let mut engines: Vec<Engine> = peers.iter().map(|p| Engine::new(peer(p))).collect();
    let mut ops: Vec<Op> = crate::sim::base_schema()
        .into_iter()
        .map(Op::Schema)
        .collect();
    for i in 1..=3 {
        ops.push(Op::AddNode {
            table: "User".into(),
            props: vec![("id".into(), Value::Int64(i))],
        });
    }
    for op in ops {
        let e = engines[0].prepare(op, 1_000).unwrap();
        for engine in &mut engines {
            engine.apply(&e).unwrap();
        }
    }
    for engine in &mut engines {
        let _ = engine.take_batch();
    }
    engines
}

fn uref(i: i64) -> NodeRef {
    NodeRef {
        table: "User".into(),
        key: Value::Int64(i),
    }
}

fn rel(table: &str, from: i64, to: i64) -> EdgeRef {
    EdgeRef {
        table: table.into(),
        from: uref(from),
        to: uref(to),
        key: String::new(),
    }
}

#[test]
fn an_edge_added_concurrently_with_deleting_its_endpoint_is_hidden_until_the_node_returns() {
    let (mut a, mut b) = sim_pair();
    let del = a.prepare(Op::DeleteNode(uref(2)), 2_000).unwrap();
    let add = b
        .prepare(
            Op::AddEdge {
                edge: rel("Follows", 1, 2),
                props: vec![],
            },
            2_000,
        )
        .unwrap();
    for e in [&del, &add] {
        a.apply(e).unwrap();
    }
    for e in [&add, &del] {
        b.apply(e).unwrap();
    }
    assert_eq!(a.dump(), b.dump());
    assert!(a.dump()["Follows"].is_empty(), "no dangling edge");
    // b had materialized the edge; its batch removes it again (never a dangling edge in Kuzu).
    let (batch, _) = b.take_batch();
    assert!(batch
        .changes
        .iter()
        .any(|c| matches!(c, GraphChange::DeleteEdge(_) | GraphChange::DeleteNode(_))));
    // Re-adding user 2 brings the concurrent edge back; an edge the delete had seen stays gone.
    let readd = a
        .prepare(
            Op::AddNode {
                table: "User".into(),
                props: vec![("id".into(), Value::Int64(2))],
            },
            3_000,
        )
        .unwrap();
    a.apply(&readd).unwrap();
    b.apply(&readd).unwrap();
    assert_eq!(a.dump()["Follows"].len(), 1);
    assert_eq!(a.dump(), b.dump());
}

#[test]
fn a_node_delete_removes_the_edges_it_had_seen_for_good() {
    let (mut a, mut b) = sim_pair();
    let add = a
        .prepare(
            Op::AddEdge {
                edge: rel("Follows", 1, 2),
                props: vec![],
            },
            2_000,
        )
        .unwrap();
    a.apply(&add).unwrap();
    b.apply(&add).unwrap();
    let del = b.prepare(Op::DeleteNode(uref(2)), 3_000).unwrap();
    b.apply(&del).unwrap();
    a.apply(&del).unwrap();
    let readd = a
        .prepare(
            Op::AddNode {
                table: "User".into(),
                props: vec![("id".into(), Value::Int64(2))],
            },
            4_000,
        )
        .unwrap();
    a.apply(&readd).unwrap();
    b.apply(&readd).unwrap();
    assert!(a.dump()["Follows"].is_empty(), "{:?}", a.dump()["Follows"]);
    assert_eq!(a.dump(), b.dump());
}

#[test]
fn one_one_concurrent_marriages_keep_one_per_person_and_never_break_the_constraint() {
    let (mut a, mut b) = sim_pair();
    // a: 1 marries 2; b: 1 marries 3 (later). Both sides of ONE_ONE are constrained.
    let ea = a
        .prepare(
            Op::AddEdge {
                edge: rel("Marries", 1, 2),
                props: vec![],
            },
            2_000,
        )
        .unwrap();
    let eb = b
        .prepare(
            Op::AddEdge {
                edge: rel("Marries", 1, 3),
                props: vec![],
            },
            2_500,
        )
        .unwrap();
    for e in [&ea, &eb] {
        a.apply(e).unwrap();
    }
    for e in [&eb, &ea] {
        b.apply(e).unwrap();
    }
    let rows = &a.dump()["Marries"];
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][3], Value::Int64(3), "the later edge wins");
    assert_eq!(a.dump(), b.dump());
    // Deleting the winner lets the other one show.
    let del = a
        .prepare(Op::DeleteEdge(rel("Marries", 1, 3)), 3_000)
        .unwrap();
    a.apply(&del).unwrap();
    b.apply(&del).unwrap();
    let rows = &a.dump()["Marries"];
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][3], Value::Int64(2));
    assert_eq!(a.dump(), b.dump());
}

/// SPEC §4: node_a, offline, sets `status = inactive`; node_b, online, sets `banned`, which
/// the hub seals; when node_a comes back, `banned` wins everywhere, in every arrival order,
/// even though node_a's write has the later timestamp.
#[test]
fn spec_offline_conflict_online_wins() {
    let status_col = Column {
        name: "status".into(),
        ty: DataType::String,
        default: None,
    };
    let (mut a, mut b) = pair();
    let mut hub = Engine::new(peer("hub"));
    let setup: Vec<Event> = {
        let mut out = Vec::new();
        for op in [
            Op::Schema(SchemaOp::AddColumn {
                table: "User".into(),
                column: status_col,
            }),
            Op::Schema(SchemaOp::SetPolicy {
                table: "User".into(),
                column: "status".into(),
                policy: Policy::OnlineWins,
            }),
        ] {
            let e = a.prepare(op, 2_000).unwrap();
            a.apply(&e).unwrap();
            out.push(e);
        }
        out
    };
    let base = {
        let mut v: Vec<Event> = Vec::new();
        // Replay node_a's first events into b and the hub: b already has the schema ops.
        let mut fresh = Engine::new(peer("node_a"));
        for op in schema_ops() {
            let e = fresh.prepare(op, 1_000).unwrap();
            fresh.apply(&e).unwrap();
            v.push(e);
        }
        v
    };
    for e in base.iter().chain(&setup) {
        hub.apply(e).unwrap();
    }
    for e in &setup {
        b.apply(e).unwrap();
    }
    let status = |e: &Engine| e.property_value(&norm_entity(&user()), "status").unwrap();
    let set = |e: &mut Engine, v: &str, t: u64| {
        let ev = e
            .prepare(
                Op::Update {
                    entity: user(),
                    prop: "status".into(),
                    value: Value::from(v),
                },
                t,
            )
            .unwrap();
        e.apply(&ev).unwrap();
        ev
    };
    // node_b online: banned at t=3000, reaches the hub, which seals it.
    let banned = set(&mut b, "banned", 3_000);
    hub.apply(&banned).unwrap();
    let seal1 = hub.prepare(Op::Seal, 3_100).unwrap();
    hub.apply(&seal1).unwrap();
    // node_a offline: inactive at t=9000, later than banned by the clock.
    let inactive = set(&mut a, "inactive", 9_000);
    assert_eq!(
        status(&a),
        Value::from("inactive"),
        "provisional while offline"
    );
    // node_a comes back: the hub takes its write (and seals it second), then node_a
    // receives banned and the first seal.
    hub.apply(&inactive).unwrap();
    let seal2 = hub.prepare(Op::Seal, 9_100).unwrap();
    hub.apply(&seal2).unwrap();
    assert_eq!(status(&hub), Value::from("banned"));
    let (_, conflicts) = hub.take_batch();
    let online_conflicts: Vec<&Conflict> = conflicts
        .iter()
        .filter(|c| c.strategy == Policy::OnlineWins.strategy_name())
        .collect();
    assert_eq!(online_conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(online_conflicts[0].winner.event, banned.id.to_string());
    for e in [&banned, &seal1, &seal2] {
        a.apply(e).unwrap();
    }
    assert_eq!(status(&a), Value::from("banned"));
    for e in [&inactive, &seal1, &seal2] {
        b.apply(e).unwrap();
    }
    assert_eq!(status(&b), Value::from("banned"));
    // Plain LWW would have kept the later write: the register's latest stamp is
    // `inactive`, so the policy made the difference.
    let reg = a
        .store
        .node(&norm_node(&NodeRef {
            table: "User".into(),
            key: Value::from("user_123"),
        }))
        .unwrap()
        .props
        .get(a.names.id("status").unwrap())
        .unwrap()
        .reg
        .clone()
        .unwrap();
    assert_eq!(reg.value.value(), Value::from("inactive"));
    // A write made after seeing `banned` wins as usual.
    let active = set(&mut a, "active", 10_000);
    b.apply(&active).unwrap();
    assert_eq!(status(&a), Value::from("active"));
    assert_eq!(status(&b), Value::from("active"));
}

/// The snapshot's bytes are a function of the applied event set: three engines that
/// applied the same events in different orders write the same bytes (three, so that a
/// register can hold several concurrent writes), and reading them back gives an engine
/// that writes them again and shows the same graph.
#[test]
fn snapshot_bytes_depend_only_on_the_event_set() {
    let mut several_concurrent = 0;
    for seed in 0..60 {
        let mut rng = crate::sim::Rng::new(seed);
        let mut engines = sim_engines(&["a", "b", "c"]);
        let mut written: Vec<Vec<Event>> = vec![Vec::new(); 3];
        for step in 0..60 {
            let op = crate::sim::random_op(&mut rng, 4, false);
            let w = rng.below(3) as usize;
            if let Ok(e) = engines[w].prepare(op, 2_000 + step) {
                engines[w].apply(&e).unwrap();
                written[w].push(e);
            }
        }
        // Engine i receives the others' events starting with engine i + 1's.
        for (i, engine) in engines.iter_mut().enumerate() {
            for k in 1..3 {
                for e in &written[(i + k) % 3] {
                    engine.apply(e).unwrap();
                }
            }
        }
        several_concurrent += engines[0]
            .contended
            .iter()
            .filter(|(ent, prop)| {
                let state = engines[0].entity(ent).unwrap();
                engines[0].prop(state, prop).unwrap().others().len() > 1
            })
            .count();
        let bytes = engines[0].snapshot_state(&[]);
        for e in &engines[1..] {
            assert_eq!(e.snapshot_state(&[]), bytes, "seed {seed}");
        }
        let (read, _) = Engine::from_snapshot_state(peer("d"), &bytes).unwrap();
        assert_eq!(read.snapshot_state(&[]), bytes, "seed {seed}");
        assert_eq!(read.dump(), engines[0].dump(), "seed {seed}");
    }
    assert!(
        several_concurrent > 0,
        "no register held several concurrent writes: the test would miss their order"
    );
}

#[test]
fn a_snapshot_of_another_format_or_cut_short_is_refused() {
    let (a, _) = sim_pair();
    let mut bytes = a.snapshot_state(&[]);
    // An 11-field array (0x9b), then the format as a positive fixint.
    assert_eq!(bytes[..2], [0x9b, 1]);
    // A snapshot written before commit markers were kept (10 fields: no trailing empty
    // list of markers) still reads.
    assert_eq!(bytes.last(), Some(&0x90));
    let mut old = bytes[..bytes.len() - 1].to_vec();
    old[0] = 0x9a;
    let (read, _) = Engine::from_snapshot_state(peer("c"), &old).unwrap();
    assert_eq!(read.dump(), a.dump());
    bytes[1] = 2;
    let err = Engine::from_snapshot_state(peer("c"), &bytes).unwrap_err();
    assert!(
        err.to_string()
            .contains("snapshot format 2 (this build reads format 1)"),
        "{err}"
    );
    bytes[1] = 1;
    assert!(Engine::from_snapshot_state(peer("c"), &bytes).is_ok());
    let err = Engine::from_snapshot_state(peer("c"), &bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, EngineError::InvalidSnapshot(_)), "{err}");
}

#[test]
fn a_packed_hlc_is_the_same_hlc() {
    for (wall_ms, logical) in [
        (0, 0),
        (1, 2),
        (u64::MAX, u32::MAX),
        (1 << 32, 7),
        (u32::MAX as u64, 1),
    ] {
        let h = Hlc { wall_ms, logical };
        assert_eq!(PackedHlc::from(h).hlc(), h);
    }
}

#[test]
fn one_or_map_keeps_one_entry_in_place_and_more_in_a_map() {
    let mut m: OneOrMap<u32, &str> = OneOrMap::default();
    assert!(m.is_empty());
    m.insert(5, "a");
    assert!(matches!(m, OneOrMap::One(_)));
    m.insert(5, "b");
    assert_eq!(m.iter().collect::<Vec<_>>(), [(&5, &"b")]);
    m.insert(2, "c");
    assert!(matches!(m, OneOrMap::Many(_)));
    assert_eq!(m.iter().collect::<Vec<_>>(), [(&2, &"c"), (&5, &"b")]);
    for n in 0..3 {
        let entries: Vec<(u32, u32)> = (0..n)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|i| (i, i))
            .collect();
        let bytes = rmp_serde::to_vec(&entries).unwrap();
        let back: OneOrMap<u32, u32> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(rmp_serde::to_vec(&back).unwrap(), bytes);
        assert_eq!(back.iter().count(), n as usize);
    }
}

#[test]
fn a_keyed_slice_finds_and_inserts_by_the_entries_own_key() {
    let mut props: KeyedSlice<PropState> = KeyedSlice::default();
    assert!(props.is_empty() && props.get(3).is_none());
    for name in [3, 1, 2, 3] {
        props.entry(name);
    }
    assert_eq!(props.iter().map(|p| p.name).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(props.get(2).map(|p| p.name), Some(2));
    let unsorted = [7, 4].map(|name| PropState {
        name,
        ..PropState::default()
    });
    let props = KeyedSlice::from_unsorted(unsorted.to_vec());
    assert_eq!(props.iter().map(|p| p.name).collect::<Vec<_>>(), [4, 7]);
}
