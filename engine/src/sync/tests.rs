use super::*;
use crate::clock::FixedClock;
use crate::event::{Entity, NodeRef};
use crate::memory::MemoryGraphStore;
use crate::memory_log::MemoryEventStore;
use crate::schema::{Column, NodeTableDef, SchemaOp};
use crate::value::{DataType, Value};

type R = Replica<MemoryEventStore, MemoryGraphStore>;

fn replica(peer: &str) -> R {
    Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(peer).unwrap(),
        Box::new(FixedClock(1_000)),
    )
    .unwrap()
}

fn user_table() -> Op {
    Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "User".into(),
        columns: vec![
            Column {
                name: "name".into(),
                ty: DataType::String,
                default: None,
            },
            Column {
                name: "status".into(),
                ty: DataType::String,
                default: None,
            },
        ],
        primary_key: "name".into(),
    }))
}

fn add_user(name: &str) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![("name".into(), Value::from(name))],
    }
}

/// Runs a client and a server session to quiescence, passing messages directly. Returns
/// every lifecycle event, tagged "c" or "s".
fn pump(
    client: &mut Session,
    c: &mut R,
    server: &mut Session,
    s: &mut R,
    mut to_server: Vec<Output>,
) -> Vec<(&'static str, Lifecycle)> {
    let mut events = Vec::new();
    let mut to_client: Vec<Output> = Vec::new();
    for _ in 0..1000 {
        if to_server.is_empty() && to_client.is_empty() {
            // What the sessions send without being asked (snapshot parts), as a driver
            // asks for it whenever its link has room.
            to_server.extend(client.poll_send());
            to_client.extend(server.poll_send());
            if to_server.is_empty() && to_client.is_empty() {
                return events;
            }
        }
        for o in std::mem::take(&mut to_server) {
            match o {
                Output::Send(m) => to_client.extend(server.receive(m, s)),
                Output::Event(e) => events.push(("c", e)),
                Output::Close | Output::Pong(_) | Output::Tx { .. } => {}
            }
        }
        for o in std::mem::take(&mut to_client) {
            match o {
                Output::Send(m) => to_server.extend(client.receive(m, c)),
                Output::Event(e) => events.push(("s", e)),
                Output::Close | Output::Pong(_) | Output::Tx { .. } => {}
            }
        }
    }
    panic!("sessions did not settle");
}

fn connect(
    c: &mut R,
    s: &mut R,
    cc: SessionConfig,
    sc: SessionConfig,
) -> (Session, Session, Vec<(&'static str, Lifecycle)>) {
    let mut client = Session::client(cc);
    let mut server = Session::server(sc);
    let start = client.start(c);
    let ev = pump(&mut client, c, &mut server, s, start);
    (client, server, ev)
}

/// SPEC §1: node_a's `add_node User {name: Alice}` (clock {node_a: 1}) reaches node_b,
/// which applies exactly that event; node_b's clock then has node_a = 1 and node_b = 1.
#[test]
fn spec_delta_exchange() {
    let mut b = replica("node_b");
    b.write(vec![user_table()]).unwrap();
    let mut a = replica("node_a");
    a.import(b.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    let ids = a.write(vec![add_user("Alice")]).unwrap();
    assert_eq!(ids[0].counter, 1);

    let (client, server, events) = connect(
        &mut a,
        &mut b,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    assert!(client.is_synced(), "{events:?}");
    assert!(server.is_established());
    let connect = events
        .iter()
        .find_map(|(_, e)| match e {
            Lifecycle::Connect {
                status,
                protocol_version,
                sync_mode,
                ..
            } => Some((*status, protocol_version.clone(), *sync_mode)),
            _ => None,
        })
        .unwrap();
    assert_eq!(connect, ("established", "1.0".to_string(), "incremental"));
    let applied: Vec<usize> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Lifecycle::Change { events, .. } => Some(*events),
            _ => None,
        })
        .collect();
    assert_eq!(applied, vec![1], "applied_count = 1");
    let vv = b.version_vector();
    assert_eq!(vv.get(&PeerId::new("node_a").unwrap()), 1);
    assert_eq!(vv.get(&PeerId::new("node_b").unwrap()), 1);
    assert_eq!(a.dump().unwrap(), b.dump().unwrap());
    // Both sides saw the other's EOSE.
    assert_eq!(
        events
            .iter()
            .filter(|(_, e)| matches!(e, Lifecycle::Eose { .. }))
            .count(),
        2
    );
}

#[test]
fn full_mode_for_an_empty_client_and_batches() {
    let mut hub = replica("hub");
    hub.write(vec![user_table()]).unwrap();
    hub.write((0..10).map(|i| add_user(&format!("u{i}"))).collect())
        .unwrap();
    let mut c = replica("c");
    let cfg = SessionConfig {
        batch_size: 3,
        probe_batch: 3,
        ..SessionConfig::default()
    };
    let mut client = Session::client(SessionConfig::default());
    let mut server = Session::server(cfg);
    let hello = client.start(&c);
    let Output::Send(hello) = &hello[0] else {
        panic!()
    };
    let out = server.receive(hello.clone(), &mut hub);
    let Some(Output::Send(Message::Welcome(w))) = out.first() else {
        panic!("{out:?}")
    };
    assert_eq!(w.sync_mode, SyncMode::Full);
    assert_eq!(w.status, "established");
    // Flow control: one batch in flight before anything is measured.
    let batches = |o: &[Output]| -> Vec<usize> {
        o.iter()
            .filter_map(|o| match o {
                Output::Send(Message::Events(e)) => Some(e.len()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(batches(&out), vec![3]);
    // Each ack lets the next batch go; 11 events in batches of 3, then EOSE.
    let mut sizes = batches(&out);
    let mut to_client: Vec<Output> = out;
    let mut saw_eose = false;
    for _ in 0..20 {
        let mut to_server = Vec::new();
        for o in std::mem::take(&mut to_client) {
            if let Output::Send(m) = o {
                saw_eose |= m == Message::Eose;
                to_server.extend(client.receive(m, &mut c));
            }
        }
        for o in to_server {
            if let Output::Send(m) = o {
                let back = server.receive(m, &mut hub);
                sizes.extend(batches(&back));
                to_client.extend(back);
            }
        }
    }
    assert_eq!(sizes, vec![3, 3, 3, 2]);
    assert!(saw_eose);
    assert!(client.is_synced());
    assert_eq!(c.dump().unwrap(), hub.dump().unwrap());
}

#[test]
fn strategy_thresholds() {
    let q = |rtt_ms: f64, mbps: f64| NetworkQuality {
        rtt_ms,
        throughput_bps: mbps * 1e6,
    };
    assert_eq!(choose_strategy(&q(20.0, 100.0)), Strategy::Streaming);
    assert_eq!(choose_strategy(&q(500.0, 100.0)), Strategy::Streaming);
    assert_eq!(choose_strategy(&q(501.0, 100.0)), Strategy::BatchOptimized);
    assert_eq!(choose_strategy(&q(20.0, 0.99)), Strategy::PriorityBased);
    assert_eq!(choose_strategy(&q(900.0, 0.5)), Strategy::PriorityBased);
    assert_eq!(choose_strategy(&q(20.0, 1.0)), Strategy::Streaming);
}

/// With little bandwidth, the critical table's events go first, with exactly the causal
/// past they need, ahead of an independent peer's bulk; everything still arrives, in a
/// causal order, and the result is the same.
#[test]
fn priority_based_sends_critical_events_first_in_causal_order() {
    let alerts = Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "Alert".into(),
        columns: vec![Column {
            name: "id".into(),
            ty: DataType::String,
            default: None,
        }],
        primary_key: "id".into(),
    }));
    // x writes a bulk of users; y, who never saw x, writes alerts; the hub has both.
    let mut x = replica("x");
    x.write(vec![user_table()]).unwrap();
    x.write((0..300).map(|i| add_user(&format!("u{i}"))).collect())
        .unwrap();
    let mut y = replica("y");
    y.write(vec![alerts]).unwrap();
    y.write(
        (0..5)
            .map(|i| Op::AddNode {
                table: "Alert".into(),
                props: vec![("id".into(), Value::from(format!("a{i}").as_str()))],
            })
            .collect(),
    )
    .unwrap();
    let mut hub = replica("hub");
    hub.import(x.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    hub.import(y.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    let cfg = SessionConfig {
        batch_size: 50,
        probe_batch: 50,
        critical_tables: vec!["alert".into()],
        ..SessionConfig::default()
    };
    let mut c = replica("c");
    let mut client = Session::client(SessionConfig::default());
    let mut server = Session::server(cfg);
    let hello = client.start(&c);
    let Output::Send(hello) = hello.into_iter().next().unwrap() else {
        panic!()
    };
    let mut to_client = server.receive(hello, &mut hub);
    // The link turns out slow: 200 kbit/s.
    let switched = server.set_quality(NetworkQuality {
        rtt_ms: 80.0,
        throughput_bps: 200_000.0,
    });
    assert!(switched.iter().any(|o| matches!(
        o,
        Output::Event(Lifecycle::Strategy {
            strategy: "priority_based",
            ..
        })
    )));
    to_client.extend(switched);
    let mut order: Vec<String> = Vec::new();
    for _ in 0..50 {
        let mut to_server = Vec::new();
        for o in std::mem::take(&mut to_client) {
            if let Output::Send(m) = o {
                if let Message::Events(ev) = &m {
                    order.extend(ev.iter().map(|e| e.op.table().to_string()));
                }
                to_server.extend(client.receive(m, &mut c));
            }
        }
        for o in to_server {
            if let Output::Send(m) = o {
                to_client.extend(server.receive(m, &mut hub));
            }
        }
    }
    assert!(client.is_synced());
    // The probe batch (50 of x's events) went before anything was measured; then y's
    // six events (its CREATE of the Alert table and the five alerts: their causal past is
    // only y's), before the rest of x's bulk.
    assert!(order[..50].iter().all(|t| t == "User"), "{order:?}");
    assert!(order[50..56].iter().all(|t| t == "Alert"), "{order:?}");
    assert!(order[56..].iter().all(|t| t == "User"), "{order:?}");
    assert_eq!(order.len(), 307);
    assert_eq!(c.dump().unwrap(), hub.dump().unwrap());
}

#[test]
fn live_changes_stream_after_eose_and_are_not_echoed() {
    let mut hub = replica("hub");
    let mut c = replica("c");
    c.write(vec![user_table()]).unwrap();
    let (mut client, mut server, _) = connect(
        &mut c,
        &mut hub,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    // Nothing to send back: the hub has exactly what the client sent.
    assert!(server.local_changed(&hub).is_empty());
    c.write(vec![add_user("Zoe")]).unwrap();
    let out = client.local_changed(&c);
    assert!(
        matches!(&out[..], [Output::Send(Message::Events(e))] if e.len() == 1),
        "{out:?}"
    );
    pump(&mut client, &mut c, &mut server, &mut hub, out);
    assert_eq!(c.dump().unwrap(), hub.dump().unwrap());
    assert!(client.local_changed(&c).is_empty());
    assert!(server.local_changed(&hub).is_empty());
}

fn refused(events: &[(&str, Lifecycle)]) -> String {
    events
        .iter()
        .find_map(|(_, e)| match e {
            Lifecycle::Refused { reason } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("not refused: {events:?}"))
}

#[test]
fn auth_is_required_when_the_hub_has_a_token() {
    let mut hub = replica("hub");
    let mut c = replica("c");
    c.write(vec![user_table()]).unwrap();
    let hub_cfg = SessionConfig {
        auth_token: Some("s3cret".into()),
        ..SessionConfig::default()
    };
    let (client, _, ev) = connect(&mut c, &mut hub, SessionConfig::default(), hub_cfg.clone());
    assert!(client.is_closed());
    assert!(
        refused(&ev).contains("requires an auth token"),
        "{}",
        refused(&ev)
    );
    let wrong = SessionConfig {
        auth_token: Some("guess".into()),
        ..SessionConfig::default()
    };
    let (_, _, ev) = connect(&mut c, &mut hub, wrong, hub_cfg.clone());
    assert!(refused(&ev).contains("not valid"));
    assert!(
        hub.version_vector().is_empty(),
        "nothing entered the hub's log"
    );
    let right = SessionConfig {
        auth_token: Some("s3cret".into()),
        ..SessionConfig::default()
    };
    let (client, _, _) = connect(&mut c, &mut hub, right, hub_cfg);
    assert!(client.is_synced());
    assert_eq!(hub.version_vector(), c.version_vector());
}

#[test]
fn outdated_clients_are_refused_and_keep_their_writes() {
    let mut hub = replica("hub");
    let mut c = replica("c");
    c.write(vec![user_table()]).unwrap();
    let hub_cfg = SessionConfig {
        schema_version: 3,
        ..SessionConfig::default()
    };
    let old = SessionConfig {
        schema_version: 2,
        ..SessionConfig::default()
    };
    let (_, _, ev) = connect(&mut c, &mut hub, old, hub_cfg.clone());
    assert!(ev
        .iter()
        .any(|(_, e)| matches!(e, Lifecycle::Outdated { required: 3, .. })));
    assert!(refused(&ev).contains("requires 3"));
    assert!(hub.version_vector().is_empty());
    assert_eq!(c.version_vector().total(), 1, "the client's write is kept");
    let upgraded = SessionConfig {
        schema_version: 3,
        ..SessionConfig::default()
    };
    let (client, _, _) = connect(&mut c, &mut hub, upgraded, hub_cfg);
    assert!(client.is_synced());
    assert_eq!(hub.version_vector().total(), 1, "and sent once it upgrades");
}

#[test]
fn wrong_protocol_version_and_own_peer_id_are_refused() {
    let mut hub = replica("hub");
    let mut server = Session::server(SessionConfig::default());
    let hello = |peer: &str, v: &str| {
        Message::Hello(Hello {
            peer: peer.into(),
            protocol_version: v.into(),
            schema_version: 0,
            capabilities: vec![],
            auth_token: None,
            version_vector: VersionVector::new(),
            sync_point: None,
            compacted: VersionVector::new(),
        })
    };
    let out = server.receive(hello("c", "2.0"), &mut hub);
    assert!(out.iter().any(|o| matches!(o,
        Output::Send(Message::Refused(Refused::ProtocolVersion { got, .. })) if got == "2.0")));
    assert!(out.contains(&Output::Close));
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(hello("hub", "1.0"), &mut hub);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Send(Message::Refused(Refused::Peer { .. })))));
    // A minor version difference is fine.
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(hello("c", "1.7"), &mut hub);
    assert!(
        matches!(&out[0], Output::Send(Message::Welcome(_))),
        "{out:?}"
    );
}

#[test]
fn events_before_the_handshake_are_a_protocol_error() {
    let mut hub = replica("hub");
    let mut c = replica("c");
    c.write(vec![user_table()]).unwrap();
    let events = c.events_since(&VersionVector::new()).unwrap();
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(Message::Events(events), &mut hub);
    assert!(out.iter().any(|o| matches!(o,
        Output::Send(Message::Error(r)) if r.contains("unexpected events message before the handshake"))),
        "{out:?}");
    assert!(server.is_closed());
    assert!(hub.version_vector().is_empty());
}

#[test]
fn an_invalid_event_closes_the_session_and_applies_nothing() {
    let mut hub = replica("hub");
    let mut c = replica("c");
    c.write(vec![user_table()]).unwrap();
    let (client, mut server, _) = connect(
        &mut c,
        &mut hub,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    assert!(client.is_synced());
    // A forged batch: a valid add, then an update of a column that does not exist.
    let mut forged = replica("c");
    forged
        .import(c.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    forged.write(vec![add_user("Ann")]).unwrap();
    let mut events = forged.events_since(c.version_vector()).unwrap();
    let mut bad = events[0].clone();
    bad.id.counter += 1;
    bad.deps.observe(&events[0].id);
    bad.hlc.logical += 1;
    bad.op = Op::Update {
        entity: Entity::Node(NodeRef {
            table: "User".into(),
            key: Value::from("Ann"),
        }),
        prop: "no_such_column".into(),
        value: Value::Int64(1),
    };
    events.push(bad);
    let before = hub.version_vector().clone();
    let out = server.receive(Message::Events(events), &mut hub);
    assert!(out.iter().any(|o| matches!(o,
        Output::Send(Message::Error(r)) if r.contains("invalid event") && r.contains("no_such_column"))),
        "{out:?}");
    assert!(server.is_closed());
    assert_eq!(
        hub.version_vector(),
        &before,
        "nothing of the batch was applied"
    );
}

/// A server never installs a snapshot from a client, whatever the client claims: the
/// session is closed with an error and the hub's state is unchanged.
#[test]
fn a_server_never_installs_a_snapshot_from_a_client() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann")]).unwrap();
    let mut forger = replica("forger");
    forger
        .write(vec![user_table(), add_user("mallory")])
        .unwrap();
    let snap = forger.snapshot_for(&VersionVector::new()).unwrap();
    let mut server = Session::server(SessionConfig::default());
    let mut client = Session::client(SessionConfig::default());
    let hello = client.start(&forger);
    for o in hello {
        if let Output::Send(m) = o {
            server.receive(m, &mut hub);
        }
    }
    let before = hub.dump().unwrap();
    let out = server.receive(
        Message::SnapshotPart(SnapshotPart {
            version_vector: snap.version_vector.clone(),
            event_count: snap.event_count,
            checksum: snap.checksum,
            total_bytes: snap.state.len() as u64,
            bytes: snap.state.clone(),
        }),
        &mut hub,
    );
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Send(Message::Error(r)) if r.contains("a server never installs one"))),
        "{out:?}"
    );
    assert!(out.contains(&Output::Close));
    assert_eq!(hub.dump().unwrap(), before);
    assert!(hub.floor().is_empty());
}

/// A client takes a snapshot only from a server whose log is compacted past it: an
/// unsolicited one is an error, and the client's state is unchanged.
#[test]
fn a_client_refuses_an_unsolicited_snapshot() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann")]).unwrap();
    let mut c = replica("c");
    c.write(vec![user_table(), add_user("bob")]).unwrap();
    let snap = hub.snapshot_for(&VersionVector::new()).unwrap();
    let (mut client, _server, _) = connect(
        &mut c,
        &mut hub,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    let before = c.dump().unwrap();
    let out = client.receive(
        Message::SnapshotPart(SnapshotPart {
            version_vector: snap.version_vector.clone(),
            event_count: snap.event_count,
            checksum: snap.checksum,
            total_bytes: snap.state.len() as u64,
            bytes: snap.state.clone(),
        }),
        &mut c,
    );
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Send(Message::Error(r)) if r.contains("a snapshot was sent"))),
        "{out:?}"
    );
    assert_eq!(c.dump().unwrap(), before);
}

/// A no-exchange hello, then the issue's 1.1 KB attack: a summary claiming 2^40 entities
/// and a request for 1,000 × 2^20 descendants. It aborted a hub with a 33 GB allocation;
/// now each oversized question is refused with an error naming it, and nothing changes.
fn no_exchange_session(hub: &mut R) -> Session {
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(
        Message::Hello(Hello {
            peer: "mallory".into(),
            protocol_version: PROTOCOL_VERSION.into(),
            schema_version: 0,
            capabilities: vec![CAP_NO_EXCHANGE.into()],
            auth_token: None,
            version_vector: VersionVector::new(),
            sync_point: None,
            compacted: VersionVector::new(),
        }),
        hub,
    );
    assert!(server.is_established(), "{out:?}");
    server
}

fn error_of(out: &[Output]) -> String {
    out.iter()
        .find_map(|o| match o {
            Output::Send(Message::Error(r)) => Some(r.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error in {out:?}"))
}

#[test]
fn oversized_merkle_questions_are_refused_before_anything_is_allocated() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann"), add_user("bob")])
        .unwrap();
    let before = hub.dump().unwrap();

    let mut server = no_exchange_session(&mut hub);
    let out = server.receive(Message::MerkleSummary { len: 1 << 41 }, &mut hub);
    assert!(error_of(&out).contains("2199023255552 entities"), "{out:?}");
    assert!(server.is_closed());

    // A claim within bounds still cannot make the hub build a large tree: the bits
    // follow the hub's own size (4 entities here). The descendants request is then
    // refused for its depth, or for a level that does not exist.
    let mut server = no_exchange_session(&mut hub);
    let out = server.receive(Message::MerkleSummary { len: 1 << 40 }, &mut hub);
    assert!(
        matches!(&out[0], Output::Send(Message::MerkleSummaryReply { bucket_bits, .. })
            if *bucket_bits <= 7),
        "{out:?}"
    );
    let out = server.receive(
        Message::MerkleDescendants {
            level: 0,
            depth: 20,
            parents: vec![0; 1000],
        },
        &mut hub,
    );
    assert!(
        error_of(&out).contains("names a level or node that does not exist"),
        "{out:?}"
    );
    let mut server = no_exchange_session(&mut hub);
    server.receive(Message::MerkleSummary { len: 1 << 40 }, &mut hub);
    let out = server.receive(
        Message::MerkleDescendants {
            level: 0,
            depth: 21,
            parents: vec![0],
        },
        &mut hub,
    );
    assert!(error_of(&out).contains("depth 21"), "{out:?}");

    // Repeated buckets or entries would multiply the answer: refused.
    for (ask, what) in [
        (
            Message::MerkleFingerprints(vec![3; 10_000]),
            "distinct buckets",
        ),
        (
            Message::MerkleEntries(vec![(0, 0); 10_000]),
            "distinct entries",
        ),
        (
            Message::MerkleRows(vec![0; 16 * 1000]),
            "asks for 1000 rows, more than the",
        ),
    ] {
        let mut server = no_exchange_session(&mut hub);
        server.receive(Message::MerkleSummary { len: 0 }, &mut hub);
        let out = server.receive(ask, &mut hub);
        assert!(error_of(&out).contains(what), "{what}: {out:?}");
        assert!(server.is_closed());
    }
    assert_eq!(hub.dump().unwrap(), before);
}

#[test]
fn a_no_exchange_session_cannot_send_events() {
    let mut hub = replica("hub");
    let mut c = replica("c");
    c.write(vec![user_table()]).unwrap();
    let mut server = no_exchange_session(&mut hub);
    let out = server.receive(
        Message::Events(c.events_since(&VersionVector::new()).unwrap()),
        &mut hub,
    );
    assert!(error_of(&out).contains("no-exchange"), "{out:?}");
    assert!(hub.version_vector().is_empty());
}

#[test]
fn oversized_handshake_fields_are_refused() {
    let mut hub = replica("hub");
    let hello = |caps: Vec<String>, token: Option<String>| {
        Message::Hello(Hello {
            peer: "c".into(),
            protocol_version: PROTOCOL_VERSION.into(),
            schema_version: 0,
            capabilities: caps,
            auth_token: token,
            version_vector: VersionVector::new(),
            sync_point: None,
            compacted: VersionVector::new(),
        })
    };
    for (msg, what) in [
        (hello(vec!["x".into(); 33], None), "33 capabilities"),
        (
            hello(vec!["x".repeat(65)], None),
            "65 bytes in a capability",
        ),
        (
            hello(vec![], Some("t".repeat(5000))),
            "5000 bytes of auth token",
        ),
    ] {
        let mut server = Session::server(SessionConfig::default());
        let out = server.receive(msg, &mut hub);
        assert!(error_of(&out).contains(what), "{what}: {out:?}");
        assert!(server.is_closed());
    }
}

/// A client behind a compacted log that cannot take snapshots (an older build) is
/// refused, with the capability it needs named; one that can gets `sync_mode: snapshot`.
#[test]
fn a_client_behind_the_floor_needs_the_snapshot_capability() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann")]).unwrap();
    hub.compact().unwrap();
    assert!(!hub.floor().is_empty());
    let hello = |caps: Vec<String>| {
        Message::Hello(Hello {
            peer: "c".into(),
            protocol_version: PROTOCOL_VERSION.into(),
            schema_version: 0,
            capabilities: caps,
            auth_token: None,
            version_vector: VersionVector::new(),
            sync_point: None,
            compacted: VersionVector::new(),
        })
    };
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(hello(vec![CAP_ZSTD.into()]), &mut hub);
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Send(Message::Refused(Refused::ProtocolVersion { supported, .. }))
                if supported.contains("\"snapshot\" capability"))),
        "{out:?}"
    );
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(hello(vec![CAP_SNAPSHOT.into()]), &mut hub);
    assert!(
        out.iter().any(|o| matches!(o,
            Output::Send(Message::Welcome(w)) if w.sync_mode == SyncMode::Snapshot)),
        "{out:?}"
    );
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Send(Message::SnapshotPart(_)))));
}

fn hub_with_credentials() -> SessionConfig {
    SessionConfig {
        credentials: Some(std::sync::Arc::new(
            crate::auth::Credentials::from_json(
                r#"{"credentials": [
                    {"token": "t-laptop", "peers": ["laptop"], "role": "replica"},
                    {"token": "t-bridge", "peers": ["*"], "role": "relay"},
                    {"token": "t-dash", "peers": ["dash"], "role": "read-only"}
                ]}"#,
            )
            .unwrap(),
        )),
        ..SessionConfig::default()
    }
}

fn with_token(token: &str) -> SessionConfig {
    SessionConfig {
        auth_token: Some(token.into()),
        ..SessionConfig::default()
    }
}

fn session_error(events: &[(&str, Lifecycle)]) -> String {
    events
        .iter()
        .find_map(|(_, e)| match e {
            Lifecycle::Error { reason } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error: {events:?}"))
}

/// A token claims only its own peer ids: another device's id is refused with `auth`.
#[test]
fn a_token_cannot_claim_another_peer() {
    let mut hub = replica("hub");
    let mut phone = replica("phone");
    phone.write(vec![user_table()]).unwrap();
    let (client, _, ev) = connect(
        &mut phone,
        &mut hub,
        with_token("t-laptop"),
        hub_with_credentials(),
    );
    assert!(client.is_closed());
    let reason = refused(&ev);
    assert!(
        reason.starts_with("authentication failed: this token may not claim peer \"phone\""),
        "{reason}"
    );
    assert!(hub.version_vector().is_empty());
}

/// A replica credential sends its own events and events the hub holds, but not another
/// peer's events the hub lacks (it would write in that device's name).
#[test]
fn a_replica_credential_sends_only_its_own_events() {
    let mut hub = replica("hub");
    let mut laptop = replica("laptop");
    laptop.write(vec![user_table(), add_user("ann")]).unwrap();
    let (client, _, _) = connect(
        &mut laptop,
        &mut hub,
        with_token("t-laptop"),
        hub_with_credentials(),
    );
    assert!(client.is_synced());
    assert_eq!(hub.version_vector(), laptop.version_vector());

    // Events of "phone" that the hub never had, forwarded by the laptop: refused whole.
    let mut phone = replica("phone");
    phone
        .import(laptop.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    phone.write(vec![add_user("mallory")]).unwrap();
    laptop
        .import(phone.events_since(laptop.version_vector()).unwrap())
        .unwrap();
    laptop.write(vec![add_user("bob")]).unwrap();
    let before = hub.dump().unwrap();
    let (_, _, ev) = connect(
        &mut laptop,
        &mut hub,
        with_token("t-laptop"),
        hub_with_credentials(),
    );
    let reason = session_error(&ev);
    assert!(
        reason.contains("may send only its own events") && reason.contains("phone:1"),
        "{reason}"
    );
    assert_eq!(hub.dump().unwrap(), before, "nothing of the batch applied");

    // The same through a relay credential is accepted.
    let (client, _, _) = connect(
        &mut laptop,
        &mut hub,
        with_token("t-bridge"),
        hub_with_credentials(),
    );
    assert!(client.is_synced());
    assert_eq!(hub.version_vector(), laptop.version_vector());
}

/// A read-only credential receives everything and may send nothing.
#[test]
fn a_read_only_credential_receives_only() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann")]).unwrap();
    let mut dash = replica("dash");
    let (client, _, _) = connect(
        &mut dash,
        &mut hub,
        with_token("t-dash"),
        hub_with_credentials(),
    );
    assert!(client.is_synced());
    assert_eq!(dash.version_vector(), hub.version_vector());
    dash.write(vec![add_user("eve")]).unwrap();
    let before = hub.version_vector().clone();
    let (_, _, ev) = connect(
        &mut dash,
        &mut hub,
        with_token("t-dash"),
        hub_with_credentials(),
    );
    assert!(session_error(&ev).contains("read-only"), "{ev:?}");
    assert_eq!(hub.version_vector(), &before);
}

/// Merkle answers come from rows and indexes the replica computes once per state and
/// shares: many diff sessions about an unchanged state hold one copy, not one each. A
/// session asks for one summary.
#[test]
fn diff_sessions_share_one_merkle_index_per_state() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann"), add_user("bob")])
        .unwrap();
    let (rows, index) = hub.merkle(crate::merkle::suggested_bucket_bits);
    let (rows2, index2) = hub.merkle(crate::merkle::suggested_bucket_bits);
    assert!(std::sync::Arc::ptr_eq(&rows, &rows2));
    assert!(std::sync::Arc::ptr_eq(&index, &index2));
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut server = no_exchange_session(&mut hub);
        let out = server.receive(Message::MerkleSummary { len: 3 }, &mut hub);
        assert!(
            matches!(&out[0], Output::Send(Message::MerkleSummaryReply { root, .. }) if root[..] == index.root()[..]),
            "{out:?}"
        );
        sessions.push(server);
    }
    // The sessions hold the replica's rows: no copies beyond this test's two handles,
    // the cache's and the three sessions'.
    assert_eq!(std::sync::Arc::strong_count(&rows), 2 + 1 + 3);
    // A second summary in one session is refused.
    let out = sessions[0].receive(Message::MerkleSummary { len: 3 }, &mut hub);
    assert!(
        error_of(&out).contains("one merkle_summary per session"),
        "{out:?}"
    );
    // A new state gets new rows.
    hub.write(vec![add_user("cid")]).unwrap();
    let (rows3, _) = hub.merkle(crate::merkle::suggested_bucket_bits);
    assert!(!std::sync::Arc::ptr_eq(&rows, &rows3));
    assert_eq!(rows3.len(), rows.len() + 1);
}

/// With credentials, the hub records as known (so compaction waits for it) only a peer
/// whose credential names its id; a wildcard token's sessions claim ids they cannot
/// prove, and are not recorded. Without credentials every remote is recorded.
#[test]
fn only_credential_bound_peers_are_recorded() {
    let mut hub = replica("hub");
    hub.write(vec![user_table(), add_user("ann")]).unwrap();
    let known = |hub: &R| -> Vec<String> { hub.known_peers().unwrap().into_keys().collect() };
    for (peer, token) in [
        ("laptop", "t-laptop"),
        ("dash", "t-dash"),
        ("ghost", "t-bridge"),
    ] {
        let mut client = replica(peer);
        let (session, _, _) = connect(
            &mut client,
            &mut hub,
            with_token(token),
            hub_with_credentials(),
        );
        assert!(session.is_synced(), "{peer}");
    }
    assert_eq!(known(&hub), ["dash", "laptop"]);

    let mut other = replica("hub2");
    other.write(vec![user_table()]).unwrap();
    let mut ghost = replica("ghost");
    let (session, _, _) = connect(
        &mut ghost,
        &mut other,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    assert!(session.is_synced());
    assert_eq!(known(&other), ["ghost"]);
}

/// A server streams a long log in pages: its outbox never holds more than the read-ahead
/// (two windows of batches, at least 1,024 events), however far behind the client is, and
/// the client still gets everything. Before, the whole missing log was queued at once.
#[test]
fn a_long_log_is_streamed_in_pages() {
    let mut hub = replica("hub");
    hub.write(vec![user_table()]).unwrap();
    let n = 12_000;
    hub.write((0..n).map(|i| add_user(&format!("u{i}"))).collect())
        .unwrap();
    let mut client = replica("phone");
    let config = SessionConfig {
        batch_size: 300,
        probe_batch: 300,
        ..SessionConfig::default()
    };
    let mut c = Session::client(config.clone());
    let mut s = Session::server(config);
    let mut to_server = c.start(&client);
    let mut max_pending = 0;
    let mut batches = 0;
    for _ in 0..10_000 {
        if to_server.is_empty() {
            break;
        }
        let mut to_client = Vec::new();
        for o in std::mem::take(&mut to_server) {
            if let Output::Send(m) = o {
                to_client.extend(s.receive(m, &mut hub));
                max_pending = max_pending.max(s.pending());
            }
        }
        for o in to_client {
            if let Output::Send(m) = o {
                batches += matches!(m, Message::Events(_)) as usize;
                to_server.extend(c.receive(m, &mut client));
            }
        }
    }
    assert!(c.is_synced());
    assert_eq!(client.dump().unwrap(), hub.dump().unwrap());
    assert!(batches >= n / 300, "{batches} batches");
    // Unmeasured sessions send one batch at a time: a read-ahead of 1,024 events.
    assert!(
        (300..=1_024).contains(&max_pending),
        "the server queued {max_pending} events at once"
    );
}

/// A snapshot larger than one part goes out one part at a time, as the driver asks
/// (`poll_send`), with no events before its last part; two sessions sending the same
/// stored snapshot share its bytes; the client installs it and ends equal to the hub.
#[test]
fn a_large_snapshot_goes_out_part_by_part() {
    let mut hub = replica("hub");
    hub.write(vec![user_table()]).unwrap();
    let padding = "x".repeat(200);
    hub.write(
        (0..40_000)
            .map(|i| Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("name".into(), Value::from(format!("u{i}").as_str())),
                    ("status".into(), Value::from(padding.as_str())),
                ],
            })
            .collect(),
    )
    .unwrap();
    hub.compact().unwrap();
    assert!(!hub.floor().is_empty());
    let first = hub.shared_snapshot_for(&VersionVector::new()).unwrap();
    assert!(
        first.state.len() > 2 * SNAPSHOT_PART_BYTES,
        "{}",
        first.state.len()
    );
    let again = hub.shared_snapshot_for(&VersionVector::new()).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &again),
        "one copy for every session"
    );
    hub.write(vec![add_user("after")]).unwrap();

    let mut phone = replica("phone");
    let mut client = Session::client(SessionConfig::default());
    let mut server = Session::server(SessionConfig::default());
    let mut to_server = client.start(&phone);
    let mut parts = 0;
    let mut events_before_last_part = 0;
    for _ in 0..1_000 {
        let mut to_client = Vec::new();
        for o in std::mem::take(&mut to_server) {
            if let Output::Send(m) = o {
                to_client.extend(server.receive(m, &mut hub));
            }
        }
        if to_client.is_empty() {
            to_client = server.poll_send();
        }
        let sent: Vec<_> = to_client
            .iter()
            .filter(|o| matches!(o, Output::Send(Message::SnapshotPart(_))))
            .collect();
        assert!(sent.len() <= 1, "{} parts at once", sent.len());
        parts += sent.len();
        if server.is_sending_snapshot() {
            events_before_last_part += to_client
                .iter()
                .filter(|o| matches!(o, Output::Send(Message::Events(_))))
                .count();
        }
        for o in to_client {
            if let Output::Send(m) = o {
                to_server.extend(client.receive(m, &mut phone));
            }
        }
        if to_server.is_empty() && !server.is_sending_snapshot() {
            break;
        }
    }
    assert!(parts >= 3, "{parts} parts");
    assert_eq!(events_before_last_part, 0);
    assert!(client.is_synced());
    assert_eq!(phone.dump().unwrap(), hub.dump().unwrap());
}

fn prepare(coordinator: &str, ops: Vec<String>) -> Message {
    Message::Tx(crate::tx::TxMsg::Prepare {
        tx: crate::tx::TxId {
            coordinator: coordinator.into(),
            epoch: 1,
            seq: 1,
        },
        participants: vec!["hub".into()],
        ops,
        deadline: u64::MAX,
        addresses: Default::default(),
    })
}

/// A transaction message is checked before the driver's endpoint sees it: only after the
/// handshake, a prepare only from its own coordinator, within the bounds, never from a
/// read-only credential; and the session hands a good one over with the sender's
/// authenticated peer id. Decisions and questions from other peers are handed over (the
/// participant judges them: cooperative termination). None of it touches the replica.
#[test]
fn transaction_messages_are_checked_before_they_are_handed_over() {
    let mut hub = replica("hub");
    let before = hub.version_vector().clone();
    let op = r#"{"op":"add_node","table":"User","props":{"name":"x"}}"#.to_string();
    // Before the handshake.
    let mut server = Session::server(SessionConfig::default());
    let out = server.receive(prepare("mallory", vec![op.clone()]), &mut hub);
    assert!(error_of(&out).contains("unexpected tx message before the handshake"));
    // A prepare in another coordinator's name.
    let mut server = no_exchange_session(&mut hub);
    let out = server.receive(prepare("coord", vec![op.clone()]), &mut hub);
    let e = error_of(&out);
    assert!(
        e.contains("from mallory, which is not its coordinator"),
        "{e}"
    );
    assert!(server.is_closed());
    // A decision or a question from another peer is handed over: the participant
    // takes a decision only from the coordinator or a fellow participant, and a
    // question changes nothing on it (tx/tests.rs).
    let theirs = crate::tx::TxId {
        coordinator: "coord".into(),
        epoch: 1,
        seq: 2,
    };
    for msg in [
        crate::tx::TxMsg::Decide {
            tx: theirs.clone(),
            decision: crate::tx::Decision::Abort,
        },
        crate::tx::TxMsg::Ask {
            tx: theirs,
            deadline: Some(1),
        },
    ] {
        let mut server = no_exchange_session(&mut hub);
        let out = server.receive(Message::Tx(msg), &mut hub);
        assert!(
            matches!(&out[..], [Output::Tx { from, .. }] if from == "mallory"),
            "{out:?}"
        );
        assert!(!server.is_closed());
    }
    // Over the bounds: too many participants, an op line too long.
    let mut server = no_exchange_session(&mut hub);
    let mut m = prepare("mallory", vec![op.clone()]);
    if let Message::Tx(crate::tx::TxMsg::Prepare { participants, .. }) = &mut m {
        *participants = (0..=crate::tx::MAX_PARTICIPANTS)
            .map(|i| format!("p{i}"))
            .collect();
    }
    let e = error_of(&server.receive(m, &mut hub));
    assert!(e.contains("65 participants"), "{e}");
    let mut server = no_exchange_session(&mut hub);
    let long = "x".repeat(crate::tx::MAX_OP_LINE + 1);
    let e = error_of(&server.receive(prepare("mallory", vec![long]), &mut hub));
    assert!(e.contains("over the limit"), "{e}");
    // A good one is handed over, naming its sender.
    let mut server = no_exchange_session(&mut hub);
    let out = server.receive(prepare("mallory", vec![op]), &mut hub);
    assert!(
        matches!(&out[..], [Output::Tx { from, .. }] if from == "mallory"),
        "{out:?}"
    );
    // A read-only credential takes no part.
    let dash = replica("dash");
    let mut server = Session::server(hub_with_credentials());
    let mut client = Session::client(with_token("t-dash"));
    let hello = client.start(&dash);
    let Some(Output::Send(h)) = hello.into_iter().next() else {
        panic!("no hello")
    };
    let _ = server.receive(h, &mut hub);
    assert!(server.is_established());
    let e = error_of(&server.receive(prepare("dash", vec![]), &mut hub));
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(hub.version_vector(), &before);
}

/// A coordinator's hub (participants connect to it): it declares no-exchange itself, so
/// a client that did not ask for it sends and takes no events; and a participant's
/// question about one of the coordinator's own transactions is handed over.
#[test]
fn a_coordinators_hub_declares_no_exchange_and_hears_its_participants_questions() {
    let mut coord = replica("coord");
    let mut p2 = replica("p2");
    p2.write(vec![user_table(), add_user("a")]).unwrap();
    let mut server = Session::server(SessionConfig {
        capabilities: vec![CAP_NO_EXCHANGE.into()],
        ..SessionConfig::default()
    });
    let mut client = Session::client(SessionConfig::default());
    let mut to_server = client.start(&p2);
    let mut rounds = 0;
    while !to_server.is_empty() && rounds < 10 {
        rounds += 1;
        let mut to_client = Vec::new();
        for o in to_server.drain(..) {
            if let Output::Send(m) = o {
                to_client.extend(server.receive(m, &mut coord));
            }
        }
        for o in to_client {
            if let Output::Send(m) = o {
                to_server.extend(client.receive(m, &mut p2));
            }
        }
    }
    assert!(server.is_established() && client.is_established());
    assert!(
        coord.version_vector().is_empty(),
        "no events reached the coordinator"
    );
    let mine = crate::tx::TxId {
        coordinator: "coord".into(),
        epoch: 1,
        seq: 1,
    };
    let out = server.receive(
        Message::Tx(crate::tx::TxMsg::Ask {
            tx: mine,
            deadline: None,
        }),
        &mut coord,
    );
    assert!(
        matches!(&out[..], [Output::Tx { from, .. }] if from == "p2"),
        "{out:?}"
    );
}

/// A client that pushes half a coordinated transaction to a hub: the hub holds it (atomic
/// visibility) and acknowledges it as received, so the client's one-shot sync ends; the
/// hub neither shows it nor counts it in its version vector. (Before, the hub
/// acknowledged only its version vector and the client waited for good.)
#[test]
fn a_hub_acknowledges_the_half_transaction_it_holds() {
    let mut hub = replica("hub");
    hub.write(vec![user_table()]).unwrap();
    let mut p = replica("p");
    p.import(hub.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    let tx: crate::tx::TxId = "c/1/1".parse().unwrap();
    p.commit_tx(&tx, &["p".into(), "q".into()], vec![add_user("a")])
        .unwrap();
    let (client, _server, events) = connect(
        &mut p,
        &mut hub,
        SessionConfig::default(),
        SessionConfig::default(),
    );
    assert!(client.is_synced(), "{events:?}");
    assert_eq!(hub.held().len(), 2);
    assert_eq!(hub.version_vector().get(&PeerId::new("p").unwrap()), 0);
    assert_eq!(hub.received_vector().get(&PeerId::new("p").unwrap()), 2);
    assert!(hub
        .dump()
        .unwrap()
        .get("User")
        .is_none_or(|rows| rows.is_empty()));
}
