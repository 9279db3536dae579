//! The hub over real loopback sockets, with in-memory replicas: convergence of several
//! clients, `online_wins` through a hub, and every bad input of the protocol.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::sync::{Hello, Lifecycle, Message, SessionConfig, PROTOCOL_VERSION};
use kuzu_sync_engine::{
    Column, DataType, Entity, FixedClock, MemoryEventStore, NodeRef, NodeTableDef, Op, PeerId,
    Policy, Replica, SchemaOp, Value, VersionVector,
};
use kuzu_sync_protocol::frame::{decode_frame, Decoded, Encoder};
use kuzu_sync_protocol::net::{self, no_events, DriveOptions, EventSink, HubConfig, Shared};

type S = Shared<MemoryEventStore, MemoryGraphStore>;

fn replica(peer: &str, now: u64) -> Arc<S> {
    Shared::new(
        Replica::create(
            MemoryEventStore::default(),
            MemoryGraphStore::new(),
            PeerId::new(peer).unwrap(),
            Box::new(FixedClock(now)),
        )
        .unwrap(),
    )
}

struct Hub {
    url: String,
    addr: String,
    shared: Arc<S>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    log: Arc<Mutex<Vec<Lifecycle>>>,
}

impl Hub {
    fn start(config: HubConfig) -> Hub {
        Hub::serve_on("127.0.0.1:0", replica("hub", 500), config)
    }

    /// A hub on a given address over a given replica (a hub restarted from a backup).
    fn start_at(addr: &str, shared: Arc<S>) -> Hub {
        Hub::serve_on(addr, shared, HubConfig::default())
    }

    fn serve_on(addr: &str, shared: Arc<S>, config: HubConfig) -> Hub {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink: EventSink = {
            let log = log.clone();
            Arc::new(move |_, e| log.lock().unwrap().push(e.clone()))
        };
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || net::serve(listener, shared, config, stop, sink).unwrap())
        };
        Hub {
            url: format!("tcp://{addr}"),
            addr,
            shared,
            stop,
            thread: Some(thread),
            log,
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
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

fn set_status(name: &str, v: &str) -> Op {
    Op::Update {
        entity: Entity::Node(NodeRef {
            table: "User".into(),
            key: Value::from(name),
        }),
        prop: "status".into(),
        value: Value::from(v),
    }
}

fn sync(c: &S, hub: &Hub) -> net::SessionReport {
    net::sync_once(c, &hub.url, SessionConfig::default(), no_events()).unwrap()
}

#[test]
fn three_clients_converge_through_a_hub() {
    let hub = Hub::start(HubConfig::default());
    let clients: Vec<Arc<S>> = (0..3)
        .map(|i| replica(&format!("c{i}"), 1_000 + i))
        .collect();
    clients[0].write(vec![user_table()]).unwrap();
    sync(&clients[0], &hub);
    for (i, c) in clients.iter().enumerate() {
        sync(c, &hub);
        c.write((0..50).map(|k| add_user(&format!("u{i}-{k}"))).collect())
            .unwrap();
    }
    for _ in 0..2 {
        for c in &clients {
            let r = sync(c, &hub);
            assert!(r.synced);
        }
    }
    let want = hub.shared.lock().dump().unwrap();
    assert_eq!(want.values().map(Vec::len).sum::<usize>(), 150);
    for c in &clients {
        assert_eq!(c.lock().dump().unwrap(), want);
    }
}

#[test]
fn live_clients_receive_changes_as_they_happen() {
    let hub = Hub::start(HubConfig::default());
    let a = replica("a", 1_000);
    let b = replica("b", 1_000);
    let stop = Arc::new(AtomicBool::new(false));
    let opts = DriveOptions {
        stop: stop.clone(),
        ..DriveOptions::default()
    };
    let watchers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|r| {
            let (url, opts) = (hub.url.clone(), opts.clone());
            thread::spawn(move || net::watch(r, &[url], SessionConfig::default(), opts))
        })
        .collect();
    a.write(vec![user_table(), add_user("ann")]).unwrap();
    b_waits_for(&b, 2);
    b.write(vec![add_user("bob")]).unwrap();
    b_waits_for(&a, 3);
    stop.store(true, Ordering::SeqCst);
    for w in watchers {
        assert!(w.join().unwrap().is_empty());
    }
    assert_eq!(a.lock().dump().unwrap(), b.lock().dump().unwrap());
}

fn b_waits_for(r: &S, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.lock().version_vector().total() < total {
        assert!(Instant::now() < deadline, "the change never arrived");
        thread::sleep(Duration::from_millis(10));
    }
}

/// SPEC §4 through a hub: node_b online sets `banned`; node_a, offline, had set
/// `inactive` (with a later clock); when node_a syncs, `banned` wins on every replica.
#[test]
fn spec_offline_conflict_online_wins_through_a_hub() {
    let hub = Hub::start(HubConfig::default());
    let a = replica("node_a", 9_000);
    let b = replica("node_b", 3_000);
    a.write(vec![
        user_table(),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "status".into(),
            policy: Policy::OnlineWins,
        }),
        add_user("user_1"),
    ])
    .unwrap();
    sync(&a, &hub);
    sync(&b, &hub);
    // node_a goes offline and writes; node_b, online, writes and syncs.
    a.write(vec![set_status("user_1", "inactive")]).unwrap();
    b.write(vec![set_status("user_1", "banned")]).unwrap();
    sync(&b, &hub);
    // node_a comes back.
    sync(&a, &hub);
    sync(&b, &hub);
    let status = |r: &S| {
        let d = r.lock().dump().unwrap();
        format!("{:?}", d)
    };
    for r in [&a, &b, &hub.shared] {
        let s = status(r);
        assert!(s.contains("banned") && !s.contains("inactive"), "{s}");
    }
    let conflicts = hub.shared.lock().conflicts().to_vec();
    assert!(
        conflicts.iter().any(|c| c.strategy == "online_wins"),
        "{conflicts:?}"
    );
}

/// Sends raw bytes on a fresh connection and returns the messages the hub answered
/// before closing.
fn raw_exchange(hub: &Hub, bytes: &[u8], then_close: bool) -> Vec<Message> {
    let mut s = TcpStream::connect(&hub.addr).unwrap();
    s.write_all(bytes).unwrap();
    if then_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Decoded::Message(m, used)) = decode_frame(&got[at..], 1 << 26) {
        out.push(*m);
        at += used;
    }
    out
}

fn frame(msg: &Message) -> Vec<u8> {
    Encoder::default().encode(msg).unwrap().0
}

fn hello(peer: &str, version: &str) -> Message {
    Message::Hello(Hello {
        peer: peer.into(),
        protocol_version: version.into(),
        schema_version: 0,
        capabilities: vec![],
        auth_token: None,
        version_vector: VersionVector::new(),
        sync_point: None,
        compacted: VersionVector::new(),
    })
}

fn error_of(msgs: &[Message]) -> String {
    msgs.iter()
        .find_map(|m| match m {
            Message::Error(r) => Some(r.clone()),
            Message::Refused(r) => Some(r.to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no error message in {msgs:?}"))
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let hub = Hub::start(HubConfig {
        max_frame: 1 << 20,
        frame_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    });
    let good = replica("good", 1_000);
    good.write(vec![user_table(), add_user("ann")]).unwrap();
    sync(&good, &hub);
    let hub_vv = || hub.shared.lock().version_vector().clone();
    let before = hub_vv();

    // Garbage bytes: their first four read as a length far over the limit.
    let e = error_of(&raw_exchange(
        &hub,
        b"\x13\x37garbage bytes, not a frame",
        false,
    ));
    assert!(e.contains("over the limit"), "{e}");
    // A frame over the limit: before the handshake, the limit is 64 KiB whatever the
    // hub's `max_frame`; after it, `max_frame`.
    let mut big = ((2u32 << 20) + 1).to_le_bytes().to_vec();
    big.push(0);
    let e = error_of(&raw_exchange(&hub, &big, false));
    assert!(
        e.contains("2097153 bytes is over the limit of 65536"),
        "{e}"
    );
    let mut after_hello = frame(&hello("late", PROTOCOL_VERSION));
    after_hello.extend(&big);
    let e = error_of(&raw_exchange(&hub, &after_hello, false));
    assert!(
        e.contains("2097153 bytes is over the limit of 1048576"),
        "{e}"
    );
    // A truncated frame: the header promises 100 bytes, 10 come, then nothing.
    let mut cut = 101u32.to_le_bytes().to_vec();
    cut.extend([0u8; 10]);
    let e = error_of(&raw_exchange(&hub, &cut, false));
    assert!(e.contains("truncated frame"), "{e}");
    // A wrong protocol version.
    let e = error_of(&raw_exchange(&hub, &frame(&hello("x", "2.0")), false));
    assert!(
        e.contains("protocol version \"2.0\" is not supported"),
        "{e}"
    );
    // An unknown message type.
    #[derive(serde::Serialize)]
    enum Future {
        #[allow(dead_code)]
        Hello(u8),
        Teleport(u32),
    }
    let body = rmp_serde::to_vec(&Future::Teleport(1)).unwrap();
    let mut unknown = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    unknown.push(0);
    unknown.extend(body);
    let e = error_of(&raw_exchange(&hub, &unknown, false));
    assert!(e.contains("unknown message type"), "{e}");
    // Events before the handshake.
    let events = good.lock().events_since(&VersionVector::new()).unwrap();
    let e = error_of(&raw_exchange(&hub, &frame(&Message::Events(events)), false));
    assert!(e.contains("before the handshake"), "{e}");
    // A valid frame carrying invalid events, after a valid handshake: an unknown table,
    // then a wrong type.
    for (op, want) in [
        (
            Op::AddNode {
                table: "Ghost".into(),
                props: vec![("name".into(), Value::from("x"))],
            },
            "Ghost",
        ),
        (
            Op::AddNode {
                table: "User".into(),
                props: vec![("name".into(), Value::Int64(5))],
            },
            "does not fit type STRING",
        ),
    ] {
        let mut forger = Replica::create(
            MemoryEventStore::default(),
            MemoryGraphStore::new(),
            PeerId::new("forger").unwrap(),
            Box::new(FixedClock(2_000)),
        )
        .unwrap();
        forger
            .import(good.lock().events_since(&VersionVector::new()).unwrap())
            .unwrap();
        let mut ev = forger.engine().prepare(add_user("tmp"), 2_000).unwrap();
        ev.op = op;
        let mut bytes = frame(&Message::Hello(Hello {
            peer: "forger".into(),
            protocol_version: "1.0".into(),
            schema_version: 0,
            capabilities: vec![],
            auth_token: None,
            version_vector: forger.version_vector().clone(),
            sync_point: None,
            compacted: VersionVector::new(),
        }));
        bytes.extend(frame(&Message::Events(vec![ev])));
        let msgs = raw_exchange(&hub, &bytes, false);
        assert!(
            matches!(msgs.first(), Some(Message::Welcome(_))),
            "{msgs:?}"
        );
        let e = error_of(&msgs);
        assert!(e.contains("invalid event") && e.contains(want), "{e}");
    }
    // Nothing of any of it was applied, and the hub still serves.
    assert_eq!(hub_vv(), before);
    let other = replica("other", 1_000);
    let r = sync(&other, &hub);
    assert!(r.synced);
    assert_eq!(other.lock().dump().unwrap(), good.lock().dump().unwrap());
    let errors = hub
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Lifecycle::Error { .. } | Lifecycle::Refused { .. }))
        .count();
    assert!(errors >= 8, "the hub reported each failure ({errors})");
}

#[test]
fn auth_token_is_enforced_by_the_hub() {
    let hub = Hub::start(HubConfig {
        session: SessionConfig {
            auth_token: Some("tok".into()),
            seal: true,
            ..SessionConfig::default()
        },
        ..HubConfig::default()
    });
    let c = replica("c", 1_000);
    c.write(vec![user_table()]).unwrap();
    let err = net::sync_once(&c, &hub.url, SessionConfig::default(), no_events()).unwrap_err();
    assert!(err.is_permanent());
    assert!(err.to_string().contains("requires an auth token"), "{err}");
    assert!(hub.shared.lock().version_vector().is_empty());
    let ok = SessionConfig {
        auth_token: Some("tok".into()),
        ..SessionConfig::default()
    };
    assert!(
        net::sync_once(&c, &hub.url, ok, no_events())
            .unwrap()
            .synced
    );
    assert_eq!(hub.shared.lock().version_vector().total(), 1);
}

/// One replica on several transports at once: A watches two hubs (one over TCP, one over
/// WebSocket) and carries changes between B (on the first) and C (on the second). Both
/// hubs seal (the schema has an `online_wins` property), and seals do not ping-pong.
#[test]
fn one_replica_on_two_transports_bridges_two_hubs() {
    let h1 = Hub::start(HubConfig::default());
    let h2 = Hub::start(HubConfig::default());
    let (a, b, c) = (
        replica("a", 1_000),
        replica("b", 1_000),
        replica("c", 1_000),
    );
    b.write(vec![
        user_table(),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "status".into(),
            policy: Policy::OnlineWins,
        }),
        add_user("ann"),
    ])
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let a = a.clone();
        let urls = vec![h1.url.clone(), format!("ws://{}/sync", h2.addr)];
        let opts = DriveOptions {
            stop: stop.clone(),
            ..DriveOptions::default()
        };
        thread::spawn(move || net::watch(a, &urls, SessionConfig::default(), opts))
    };
    sync(&b, &h1);
    b_waits_for(&h2.shared, 3);
    sync(&c, &h2);
    c.write(vec![set_status("ann", "from c")]).unwrap();
    sync(&c, &h2);
    let want_b = |r: &S| {
        let d = format!("{:?}", r.lock().dump().unwrap());
        d.contains("from c")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want_b(&h1.shared) {
        assert!(
            Instant::now() < deadline,
            "c's write never reached the first hub"
        );
        thread::sleep(Duration::from_millis(10));
    }
    sync(&b, &h1);
    assert!(want_b(&b));
    // Quiet now: the number of events stops growing.
    thread::sleep(Duration::from_millis(500));
    let n1 = a.lock().version_vector().total();
    thread::sleep(Duration::from_millis(500));
    assert_eq!(a.lock().version_vector().total(), n1, "seals keep coming");
    stop.store(true, Ordering::SeqCst);
    assert!(watcher.join().unwrap().is_empty());
    sync(&c, &h2);
    let want = a.lock().dump().unwrap();
    for r in [&b, &c, &h1.shared, &h2.shared] {
        assert_eq!(r.lock().dump().unwrap(), want);
    }
}

/// Both sides have megabytes the other lacks and send at the same time: neither may block
/// the other (a side stuck writing into a full socket while the other does the same would
/// never read).
#[test]
fn large_exchange_both_ways_does_not_deadlock() {
    let hub = Hub::start(HubConfig::default());
    let c = replica("c", 1_000);
    // Noise that zstd cannot shrink much, so the frames outgrow the socket buffers.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        (0..24)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{x:016x}")
            })
            .collect::<String>()
    };
    hub.shared.write(vec![user_table()]).unwrap();
    sync(&c, &hub);
    let big = |prefix: &str, noise: &mut dyn FnMut() -> String| -> Vec<Op> {
        (0..30_000)
            .map(|k| Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("name".into(), Value::from(format!("{prefix}{k}").as_str())),
                    ("status".into(), Value::from(noise().as_str())),
                ],
            })
            .collect()
    };
    hub.shared.write(big("h", &mut noise)).unwrap();
    c.write(big("c", &mut noise)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (c2, url) = (c.clone(), hub.url.clone());
    thread::spawn(move || {
        let r = net::sync_once(&c2, &url, SessionConfig::default(), no_events());
        let _ = tx.send(r.map(|r| r.synced).map_err(|e| e.to_string()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the sync deadlocked");
    assert_eq!(got, Ok(true));
    assert_eq!(c.lock().dump().unwrap(), hub.shared.lock().dump().unwrap());
}

fn follows(from: &str, to: &str) -> Op {
    Op::AddEdge {
        edge: kuzu_sync_engine::EdgeRef {
            table: "Follows".into(),
            from: NodeRef {
                table: "User".into(),
                key: Value::from(from),
            },
            to: NodeRef {
                table: "User".into(),
                key: Value::from(to),
            },
            key: String::new(),
        },
        props: vec![],
    }
}

fn follows_table() -> Op {
    Op::Schema(SchemaOp::CreateRelTable(kuzu_sync_engine::RelTableDef {
        name: "Follows".into(),
        connections: vec![("User".into(), "User".into())],
        columns: vec![],
        multiplicity: kuzu_sync_engine::Multiplicity::ManyMany,
    }))
}

/// SPEC §4: three offline writes, then `sync_offline_changes()`: `synced_operations = 3`,
/// `conflicts_resolved = 0`, and the queue is empty; the hub has them.
#[test]
fn spec_sync_offline_changes() {
    let hub = Hub::start(HubConfig::default());
    let a = replica("node_a", 1_000);
    a.write(vec![
        user_table(),
        follows_table(),
        add_user("user_1"),
        add_user("user_2"),
    ])
    .unwrap();
    sync(&a, &hub);
    a.lock().go_offline().unwrap();
    a.write(vec![add_user("Bob")]).unwrap();
    a.write(vec![follows("user_1", "user_2")]).unwrap();
    a.write(vec![set_status("user_1", "active")]).unwrap();
    let q = a.lock().queue_status().unwrap();
    assert_eq!(q.size, 3);
    assert!(q.estimated_size_bytes < 1 << 20);
    let r = net::sync_offline_changes(&a, &hub.url, SessionConfig::default(), no_events()).unwrap();
    assert_eq!(r.synced_operations, 3);
    assert_eq!(r.conflicts_resolved, 0);
    assert_eq!(r.raw_operations, 3);
    assert_eq!(a.lock().queue_status().unwrap().size, 0);
    assert!(!a.lock().is_offline());
    assert_eq!(hub.shared.lock().dump().unwrap(), a.lock().dump().unwrap());
}

/// SPEC §4's offline conflict through `sync_offline_changes`: the resolution is reported
/// and `banned` holds everywhere.
#[test]
fn spec_offline_conflict_via_sync_offline_changes() {
    let hub = Hub::start(HubConfig::default());
    let a = replica("node_a", 9_000);
    let b = replica("node_b", 3_000);
    a.write(vec![
        user_table(),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "status".into(),
            policy: Policy::OnlineWins,
        }),
        add_user("user_1"),
    ])
    .unwrap();
    sync(&a, &hub);
    sync(&b, &hub);
    a.lock().go_offline().unwrap();
    a.write(vec![set_status("user_1", "inactive")]).unwrap();
    b.write(vec![set_status("user_1", "banned")]).unwrap();
    sync(&b, &hub);
    let r = net::sync_offline_changes(&a, &hub.url, SessionConfig::default(), no_events()).unwrap();
    assert_eq!(r.synced_operations, 1);
    assert!(r.conflicts_resolved >= 1, "{r:?}");
    sync(&b, &hub);
    for s in [&a, &b, &hub.shared] {
        let d = format!("{:?}", s.lock().dump().unwrap());
        assert!(d.contains("banned") && !d.contains("inactive"), "{d}");
    }
}

fn numbered_user(id: i64) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![
            ("name".into(), Value::from(format!("user-{id}").as_str())),
            ("status".into(), Value::from("ok")),
        ],
    }
}

/// SPEC §5 over the network: the hub wrote 10,000 users, the client wrote 9,990 of the
/// same users itself (unrelated histories, so version vectors cannot help). The Merkle
/// diff finds the 10 in fewer than 100 comparisons, moves exactly those 10 rows, and
/// everything on the wire (handshake and frames included) stays under 10 KB. Copying the
/// 10 rows repairs the client: the roots then match.
#[test]
fn spec_merkle_diff_over_the_network() {
    let hub = Hub::start(HubConfig::default());
    hub.shared.write(vec![user_table()]).unwrap();
    hub.shared
        .write((0..10_000).map(numbered_user).collect())
        .unwrap();
    let c = replica("c", 1_000);
    let gone: Vec<i64> = (0..10).map(|i| i * 991 + 7).collect();
    c.write(vec![user_table()]).unwrap();
    c.write(
        (0..10_000)
            .filter(|i| !gone.contains(i))
            .map(numbered_user)
            .collect(),
    )
    .unwrap();
    let d = net::remote_diff(&c, &hub.url, SessionConfig::default()).unwrap();
    assert!(!d.equal);
    assert_eq!(d.missing_here.len(), 10, "{:?}", d.missing_here);
    assert!(d.missing_there.is_empty() && d.different.is_empty());
    assert!(d.comparisons < 100, "{} comparisons", d.comparisons);
    assert!(d.wire_bytes < 10_000, "{} bytes on the wire", d.wire_bytes);
    println!(
        "merkle diff 10,000 vs 9,990: {} comparisons, {} round trips, {} bytes on the wire",
        d.comparisons, d.round_trips, d.wire_bytes
    );
    let mut labels: Vec<String> = d.missing_here.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    let mut want: Vec<String> = gone.iter().map(|i| format!("User(user-{i})")).collect();
    want.sort();
    assert_eq!(labels, want);
    // Nothing was exchanged: the hub's log did not grow, and neither did the client's.
    assert_eq!(hub.shared.lock().version_vector().total(), 10_001);
    assert_eq!(c.lock().version_vector().total(), 9_991);
    // Repair: copy the 10 rows.
    let schema = c.lock().engine().schema().clone();
    let ops: Vec<Op> = d
        .missing_here
        .iter()
        .map(|r| kuzu_sync_engine::antientropy::upsert_op(r, &schema).unwrap())
        .collect();
    c.write(ops).unwrap();
    let again = net::remote_diff(&c, &hub.url, SessionConfig::default()).unwrap();
    assert!(again.equal, "{again:?}");
    assert_eq!(again.local_root, again.remote_root);
    assert_eq!(again.round_trips, 2, "equal roots end the walk at once");
}

fn strategies(log: &[Lifecycle]) -> Vec<&'static str> {
    log.iter()
        .filter_map(|e| match e {
            Lifecycle::Strategy { strategy, .. } => Some(*strategy),
            _ => None,
        })
        .collect()
}

/// A live client behind 700 ms of round trip: both sides measure it and switch to
/// `batch_optimized`, and the client's 300 quick single writes reach the hub in batches of
/// more than 100 instead of one by one.
#[test]
fn long_round_trips_switch_to_batch_optimized() {
    let hub = Hub::start(HubConfig::default());
    hub.shared.write(vec![user_table()]).unwrap();
    let c = replica("c", 1_000);
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = {
        let (c, url, log, stop) = (c.clone(), hub.addr.clone(), log.clone(), stop.clone());
        thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let tcp = net::connect(&format!("tcp://{url}"), Duration::from_secs(5))
                    .await
                    .unwrap();
                let mut t =
                    kuzu_sync_protocol::Throttled::new(tcp, Duration::from_millis(700), None);
                let opts = DriveOptions {
                    stop,
                    events: Arc::new(move |_, e| log.lock().unwrap().push(e.clone())),
                    ..DriveOptions::default()
                };
                net::drive(
                    &mut t,
                    kuzu_sync_engine::sync::Session::client(SessionConfig::default()),
                    &c,
                    &opts,
                )
                .await
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !strategies(&log.lock().unwrap()).contains(&"batch_optimized") {
        assert!(
            Instant::now() < deadline,
            "no switch: {:?}",
            log.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(20));
    }
    for i in 0..300 {
        c.write(vec![add_user(&format!("u{i}"))]).unwrap();
    }
    b_waits_for(&hub.shared, 301);
    stop.store(true, Ordering::SeqCst);
    driver.join().unwrap().unwrap();
    let batches: Vec<usize> = hub
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            Lifecycle::Change { events, .. } => Some(*events),
            _ => None,
        })
        .collect();
    assert!(batches.iter().any(|&n| n > 100), "{batches:?}");
    assert!(batches.len() <= 10, "{batches:?}");
    assert!(strategies(&hub.log.lock().unwrap()).contains(&"batch_optimized"));
    assert_eq!(c.lock().dump().unwrap(), hub.shared.lock().dump().unwrap());
}

/// A client behind 400 kbit/s: the hub measures the first batch's throughput, switches to
/// `priority_based`, and the critical table's events overtake the rest of an independent
/// peer's bulk. Unthrottled, the same sync stays `streaming` and the bulk comes first.
#[test]
fn scarce_bandwidth_switches_to_priority_based() {
    let run = |throttle: bool| -> (Vec<&'static str>, Vec<Vec<String>>) {
        let hub = Hub::start(HubConfig {
            session: SessionConfig {
                seal: true,
                batch_size: 150,
                probe_batch: 150,
                critical_tables: vec!["Alert".into()],
                ..SessionConfig::default()
            },
            ..HubConfig::default()
        });
        let x = replica("x", 1_000);
        x.write(vec![user_table()]).unwrap();
        let mut n = 0x1234_5678_9abc_def0u64;
        x.write(
            (0..1200)
                .map(|i| {
                    n ^= n << 13;
                    n ^= n >> 7;
                    n ^= n << 17;
                    Op::AddNode {
                        table: "User".into(),
                        props: vec![
                            ("name".into(), Value::from(format!("u{i}").as_str())),
                            (
                                "status".into(),
                                Value::from(format!("{n:016x}{n:x}").as_str()),
                            ),
                        ],
                    }
                })
                .collect(),
        )
        .unwrap();
        let y = replica("y", 1_000);
        y.write(vec![Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: "Alert".into(),
            columns: vec![Column {
                name: "id".into(),
                ty: DataType::String,
                default: None,
            }],
            primary_key: "id".into(),
        }))])
        .unwrap();
        y.write(
            (0..5)
                .map(|i| Op::AddNode {
                    table: "Alert".into(),
                    props: vec![("id".into(), Value::from(format!("a{i}").as_str()))],
                })
                .collect(),
        )
        .unwrap();
        sync(&x, &hub);
        sync(&y, &hub);
        let c = replica("c", 1_000);
        let log = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tcp = rt
            .block_on(net::connect(
                &format!("tcp://{}", hub.addr),
                Duration::from_secs(5),
            ))
            .unwrap();
        let opts = DriveOptions {
            one_shot: true,
            events: {
                let log = log.clone();
                Arc::new(move |_, e| log.lock().unwrap().push(e.clone()))
            },
            ..DriveOptions::default()
        };
        let session = kuzu_sync_engine::sync::Session::client(SessionConfig::default());
        let report = if throttle {
            rt.block_on(async {
                let mut t = kuzu_sync_protocol::Throttled::new(
                    tcp,
                    Duration::from_millis(20),
                    Some(400_000),
                );
                net::drive(&mut t, session, &c, &opts).await
            })
            .unwrap()
        } else {
            let mut t = tcp;
            rt.block_on(net::drive(&mut *t, session, &c, &opts))
                .unwrap()
        };
        assert!(report.synced);
        assert_eq!(c.lock().dump().unwrap(), hub.shared.lock().dump().unwrap());
        let changes = log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Lifecycle::Change { tables, .. } => Some(tables.clone()),
                _ => None,
            })
            .collect();
        let s = strategies(&hub.log.lock().unwrap());
        (s, changes)
    };
    let (s, changes) = run(true);
    assert!(s.contains(&"priority_based"), "{s:?}");
    let first_alert = changes
        .iter()
        .position(|t| t.contains(&"Alert".to_string()));
    let last_user = changes
        .iter()
        .rposition(|t| t.contains(&"User".to_string()));
    assert!(first_alert.unwrap() < last_user.unwrap(), "{changes:?}");
    let (s, changes) = run(false);
    assert!(!s.contains(&"priority_based"), "{s:?}");
    let first_alert = changes
        .iter()
        .position(|t| t.contains(&"Alert".to_string()));
    let last_user = changes
        .iter()
        .rposition(|t| t.contains(&"User".to_string()));
    assert!(first_alert.unwrap() >= last_user.unwrap(), "{changes:?}");
}

/// SPEC §5: a sync point at 1,000 events; 100 new events later, the next sync moves
/// exactly those 100 and reports `full_resync_required = false`.
#[test]
fn spec_incremental_sync_from_a_sync_point() {
    let hub = Hub::start(HubConfig::default());
    let c = replica("c", 1_000);
    c.write(vec![user_table()]).unwrap();
    c.write((0..999).map(|i| add_user(&format!("u{i}"))).collect())
        .unwrap();
    let first = sync(&c, &hub);
    assert_eq!(first.events_sent, 1000);
    let sp = c.lock().stored_sync_point(&hub.url).unwrap().unwrap();
    assert_eq!(sp.event_count, 1000);
    assert_eq!(sp.checksum.len(), 32);
    assert!(hub.shared.lock().verify_sync_point(&sp).unwrap());
    c.write((0..100).map(|i| add_user(&format!("new{i}"))).collect())
        .unwrap();
    let next = sync(&c, &hub);
    assert_eq!(next.events_sent, 100);
    assert!(!next.full_resync_required);
    assert_eq!(next.repaired, 0);
    let sp = c.lock().stored_sync_point(&hub.url).unwrap().unwrap();
    assert_eq!(sp.event_count, 1100);
}

/// The hub is restored from an older backup, then writes new events that reuse the
/// counters it lost (its history is rewritten). The client's sync point no longer
/// verifies: `full_resync_required`, the Merkle repair copies each side's missing rows, and
/// afterwards both hold everything: nothing is lost.
#[test]
fn a_rewritten_hub_history_is_detected_and_repaired_by_merkle() {
    let hub = Hub::start(HubConfig::default());
    hub.shared.write(vec![user_table()]).unwrap();
    hub.shared
        .write((0..50).map(|i| add_user(&format!("hub-old{i}"))).collect())
        .unwrap();
    let c = replica("c", 1_000);
    sync(&c, &hub);
    c.write((0..20).map(|i| add_user(&format!("c{i}"))).collect())
        .unwrap();
    sync(&c, &hub);
    // The backup: the hub's first 11 events only (schema + 10 users).
    let backup: Vec<_> = hub
        .shared
        .lock()
        .events_since(&VersionVector::new())
        .unwrap()
        .into_iter()
        .filter(|e| e.id.peer.as_str() == "hub" && e.id.counter <= 11)
        .collect();
    let addr = hub.addr.clone();
    drop(hub);
    let restored = replica("hub", 500);
    restored.import(backup).unwrap();
    // Then it writes anew, reusing counters 12.. with other contents.
    restored
        .write((0..5).map(|i| add_user(&format!("hub-new{i}"))).collect())
        .unwrap();
    let hub2 = Hub::start_at(&addr, restored);
    let report = sync(&c, &hub2);
    assert!(report.full_resync_required);
    assert!(report.repaired > 0);
    let d = net::remote_diff(&c, &hub2.url, SessionConfig::default()).unwrap();
    assert!(d.equal, "{d:?}");
    let dump = format!("{:?}", c.lock().dump().unwrap());
    for name in ["hub-old40", "hub-new3", "c19"] {
        assert!(dump.contains(name), "{name} lost");
    }
    // The same ids still name different events on the two sides, so every later sync
    // with this hub reports it again, and finds nothing left to repair.
    let again = sync(&c, &hub2);
    assert!(again.full_resync_required);
    assert_eq!(again.repaired, 0);
}

/// A hub whose log is compacted (every known peer had everything) bootstraps a new replica
/// from its snapshot plus the tail written since: the new replica holds the same graph,
/// its log holds only the tail, and the Merkle roots agree.
#[test]
fn a_new_replica_bootstraps_from_a_compacted_hub() {
    let hub = Hub::start(HubConfig::default());
    let a = replica("a", 1_000);
    a.write(vec![user_table()]).unwrap();
    a.write((0..200).map(numbered_user).collect()).unwrap();
    sync(&a, &hub);
    let report = hub.shared.lock().compact().unwrap();
    assert_eq!(report.known_peers, vec!["a".to_string()]);
    assert_eq!(report.removed_events, 201, "{report:?}");
    assert_eq!(report.remaining_events, 0);
    assert_eq!(report.floor.total(), 201);
    // The tail: written after the compaction.
    a.write((200..210).map(numbered_user).collect()).unwrap();
    sync(&a, &hub);

    let n = replica("n", 2_000);
    let r = sync(&n, &hub);
    assert_eq!(r.snapshot_installed, 201, "{r:?}");
    assert_eq!(r.events_received, 10, "only the tail comes as events");
    assert!(
        !r.full_resync_required,
        "an empty replica has nothing to repair"
    );
    let want = hub.shared.lock().dump().unwrap();
    assert_eq!(want["User"].len(), 210);
    assert_eq!(n.lock().dump().unwrap(), want);
    assert_eq!(
        n.lock().version_vector(),
        hub.shared.lock().version_vector()
    );
    let status = n.lock().status().unwrap();
    assert_eq!(
        status.stored_events, 10,
        "the new replica's log holds only the tail"
    );
    assert_eq!(status.compacted_events, 201);
    let d = net::remote_diff(&n, &hub.url, SessionConfig::default()).unwrap();
    assert!(d.equal, "{d:?}");
    // The bootstrapped replica writes and syncs like any other.
    n.write(vec![set_status("user-3", "from n")]).unwrap();
    sync(&n, &hub);
    sync(&a, &hub);
    assert_eq!(a.lock().dump().unwrap(), n.lock().dump().unwrap());
}

/// Compaction keeps what a known peer has not acknowledged: the floor is the meet of the
/// peers' vectors, and that peer then syncs incrementally, with no snapshot.
#[test]
fn compaction_waits_for_every_known_peer() {
    let hub = Hub::start(HubConfig::default());
    let (a, b) = (replica("a", 1_000), replica("b", 1_100));
    a.write(vec![user_table()]).unwrap();
    a.write((0..50).map(numbered_user).collect()).unwrap();
    sync(&a, &hub);
    sync(&b, &hub);
    a.write((50..80).map(numbered_user).collect()).unwrap();
    sync(&a, &hub);
    let report = hub.shared.lock().compact().unwrap();
    assert_eq!(
        report.floor,
        *b.lock().version_vector(),
        "b has acked only 51 events"
    );
    assert_eq!(report.removed_events, 51);
    assert_eq!(report.remaining_events, 30);
    let r = sync(&b, &hub);
    assert_eq!(r.snapshot_installed, 0, "b is not behind the floor");
    assert_eq!(r.events_received, 30);
    assert_eq!(b.lock().dump().unwrap(), hub.shared.lock().dump().unwrap());
}

/// SPEC: a peer too far behind a compacted log gets a full resync, never an error. Here
/// the hub forgot `b` and compacted past it; `b` meanwhile wrote offline, including a
/// concurrent update of a row `a` also changed. `b` gets the snapshot, keeps its own
/// writes, delivers them, and ends with the hub's Merkle root; nothing is lost.
#[test]
fn a_peer_behind_the_compacted_log_gets_a_full_resync_and_keeps_its_writes() {
    let hub = Hub::start(HubConfig::default());
    let (a, b) = (replica("a", 1_000), replica("b", 1_100));
    a.write(vec![user_table()]).unwrap();
    a.write((0..100).map(numbered_user).collect()).unwrap();
    sync(&a, &hub);
    sync(&b, &hub);
    // b, offline: its own rows and a change to one of a's.
    b.write((1_000..1_005).map(numbered_user).collect())
        .unwrap();
    b.write(vec![set_status("user-7", "b was here")]).unwrap();
    // a carries on; the hub forgets b and compacts everything.
    a.write((100..150).map(numbered_user).collect()).unwrap();
    a.write(vec![set_status("user-7", "a was here")]).unwrap();
    sync(&a, &hub);
    assert!(hub.shared.lock().forget_peer("b").unwrap());
    let report = hub.shared.lock().compact().unwrap();
    assert_eq!(report.remaining_events, 0, "{report:?}");

    let r = sync(&b, &hub);
    assert!(r.full_resync_required, "{r:?}");
    assert_eq!(r.snapshot_installed, report.snapshot_events, "{r:?}");
    assert_eq!(
        r.repaired, 0,
        "the snapshot left nothing for the Merkle repair"
    );
    assert!(r.events_sent >= 6, "b's own writes went to the hub: {r:?}");
    let hub_dump = hub.shared.lock().dump().unwrap();
    assert_eq!(b.lock().dump().unwrap(), hub_dump);
    assert_eq!(hub_dump["User"].len(), 155, "a's 150 and b's 5");
    let d = net::remote_diff(&b, &hub.url, SessionConfig::default()).unwrap();
    assert!(d.equal, "{d:?}");
    // The same resolution as without compaction: a plain replica given every event.
    let plain = replica("plain", 3_000);
    plain
        .lock()
        .import(a.lock().events_since(&VersionVector::new()).unwrap())
        .unwrap();
    plain
        .lock()
        .import(b.lock().events_since(&VersionVector::new()).unwrap())
        .unwrap();
    assert_eq!(plain.lock().dump().unwrap(), hub_dump);
    sync(&a, &hub);
    assert_eq!(a.lock().dump().unwrap(), hub_dump);
}

/// Bootstrap from a compacted hub works over every transport, with a snapshot in several
/// 4 MiB parts: WebSocket and HTTP push/pull as well as raw TCP.
#[test]
fn bootstrap_from_a_snapshot_over_every_transport() {
    let hub = Hub::start(HubConfig::default());
    let a = replica("a", 1_000);
    a.write(vec![user_table()]).unwrap();
    // Long values, so that the snapshot needs more than one part.
    let long = "x".repeat(200);
    a.write(
        (0..60_000)
            .map(|i| Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("name".into(), Value::from(format!("user-{i}"))),
                    ("status".into(), Value::from(format!("{long}{i}"))),
                ],
            })
            .collect(),
    )
    .unwrap();
    sync(&a, &hub);
    let report = hub.shared.lock().compact().unwrap();
    assert!(
        report.snapshot_bytes > 2 * kuzu_sync_engine::sync::SNAPSHOT_PART_BYTES as u64,
        "{report:?}"
    );
    let want = hub.shared.lock().dump().unwrap();
    for (i, url) in [
        hub.url.clone(),
        format!("ws://{}/sync", hub.addr),
        format!("http://{}/sync", hub.addr),
    ]
    .iter()
    .enumerate()
    {
        let n = replica(&format!("n{i}"), 2_000);
        let r = net::sync_once(&n, url, SessionConfig::default(), no_events()).unwrap();
        assert_eq!(r.snapshot_installed, 60_001, "{url}: {r:?}");
        assert_eq!(n.lock().dump().unwrap(), want, "{url}");
    }
}

/// The issue's attack, end to end: under 1.1 KB (a no-exchange hello, a summary claiming
/// 2^40 entities, then 1,000 × 2^20 descendants) aborted a hub with a 33 GB allocation.
/// Now the connection gets an error naming the request and closes; the hub keeps serving.
#[test]
fn the_merkle_allocation_attack_is_refused_and_the_hub_keeps_serving() {
    let hub = Hub::start(HubConfig::default());
    let good = replica("good", 1_000);
    good.write(vec![user_table(), add_user("ann")]).unwrap();
    sync(&good, &hub);
    let before = hub.shared.lock().dump().unwrap();

    let mut attack = frame(&Message::Hello(Hello {
        capabilities: vec![kuzu_sync_engine::sync::CAP_NO_EXCHANGE.into()],
        ..match hello("mallory", PROTOCOL_VERSION) {
            Message::Hello(h) => h,
            _ => unreachable!(),
        }
    }));
    attack.extend(frame(&Message::MerkleSummary { len: 1 << 40 }));
    attack.extend(frame(&Message::MerkleDescendants {
        level: 0,
        depth: 20,
        parents: vec![0; 1000],
    }));
    assert!(attack.len() < 1200, "{} bytes", attack.len());
    let answers = raw_exchange(&hub, &attack, true);
    let e = error_of(&answers);
    assert!(
        e.contains("merkle_descendants names a level or node that does not exist"),
        "{e}"
    );

    assert_eq!(hub.shared.lock().dump().unwrap(), before);
    let other = replica("other", 2_000);
    other.write(vec![user_table(), add_user("bob")]).unwrap();
    sync(&other, &hub);
    assert_eq!(
        other.lock().version_vector(),
        hub.shared.lock().version_vector()
    );
}

/// A connection that does not complete its handshake in time gets an error and is
/// closed; one that sends a hello in time is served.
#[test]
fn a_silent_connection_is_closed_at_the_handshake_deadline() {
    let hub = Hub::start(HubConfig {
        handshake_timeout: Duration::from_millis(300),
        ..HubConfig::default()
    });
    // Four bytes of a frame header, then nothing: the first bytes are sniffed, the frame
    // never completes.
    let started = Instant::now();
    let mut s = TcpStream::connect(&hub.addr).unwrap();
    s.write_all(&[9, 0, 0, 0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = match decode_frame(&got, 1 << 20) {
        Ok(Decoded::Message(m, _)) => error_of(&[*m]),
        other => panic!("{other:?}"),
    };
    assert!(e.contains("no handshake within 300 ms"), "{e}");
    // Entirely silent: closed without an answer, within the deadline's order.
    let started = Instant::now();
    let mut s = TcpStream::connect(&hub.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.read_to_end(&mut got);
    assert!(started.elapsed() < Duration::from_secs(10));
    let good = replica("good", 1_000);
    good.write(vec![user_table()]).unwrap();
    sync(&good, &hub);
}

/// Past `max_connections`, a new connection is refused in its own protocol (an error
/// frame for raw TCP, HTTP 503 for WebSocket and HTTP) and closed; once a slot frees, a
/// client is served.
#[test]
fn connections_past_the_cap_are_refused_clearly() {
    let hub = Hub::start(HubConfig {
        max_connections: 2,
        ..HubConfig::default()
    });
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(&hub.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    let e = error_of(&raw_exchange(
        &hub,
        &frame(&hello("c", PROTOCOL_VERSION)),
        false,
    ));
    assert!(
        e.contains("the hub is serving its limit of 2 connections"),
        "{e}"
    );
    let mut s = TcpStream::connect(&hub.addr).unwrap();
    s.write_all(b"GET /sync HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(
        got.starts_with("HTTP/1.1 503 Service Unavailable") && got.contains("limit of 2"),
        "{got}"
    );
    drop(idle);
    // The idle connections end at their handshake deadline or when closed; then a
    // client is served again.
    let good = replica("good", 1_000);
    good.write(vec![user_table()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match net::sync_once(&good, &hub.url, SessionConfig::default(), no_events()) {
            Ok(r) if r.synced => break,
            other => {
                assert!(Instant::now() < deadline, "never served again: {other:?}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A thread that panics while it holds the replica poisons the lock; the next holder gets
/// a replica rebuilt from its stores, never the possibly half-changed one as it was.
#[test]
fn a_panic_while_holding_the_replica_makes_it_rebuild_from_its_stores() {
    use kuzu_sync_engine::conformance::FlakyGraph;
    let shared = Shared::new(
        Replica::create(
            MemoryEventStore::default(),
            FlakyGraph::new(MemoryGraphStore::new()),
            PeerId::new("r").unwrap(),
            Box::new(FixedClock(1_000)),
        )
        .unwrap(),
    );
    shared.write(vec![user_table(), add_user("ann")]).unwrap();
    let (before, reads) = {
        let mut r = shared.lock();
        (r.dump().unwrap(), r.graph().watermark_reads)
    };
    // No rebuild while nothing went wrong.
    assert_eq!(shared.lock().graph().watermark_reads, reads);
    let s = shared.clone();
    let panicked = thread::spawn(move || {
        let _r = s.lock();
        panic!("a bug in a session");
    })
    .join();
    assert!(panicked.is_err());
    let mut r = shared.lock();
    assert!(
        r.graph().watermark_reads > reads,
        "the replica was rebuilt from its stores"
    );
    assert!(!r.is_unrecovered());
    assert_eq!(r.dump().unwrap(), before);
    drop(r);
    shared.write(vec![add_user("bob")]).unwrap();
}

/// Reads whatever arrives within `wait` and decodes the messages in it.
fn read_for(s: &mut TcpStream, wait: Duration) -> Vec<Message> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Decoded::Message(m, used)) = decode_frame(&got[at..], 1 << 26) {
        out.push(*m);
        at += used;
    }
    out
}

/// Large frames share the hub's decode budget: while one peer holds most of it with a
/// frame it never finishes, another peer's large frame waits (its bytes are not read);
/// once the first goes away, the second is read, decoded and answered.
#[test]
fn large_frames_wait_for_the_hubs_decode_budget() {
    let hub = Hub::start(HubConfig {
        max_frame: 2 << 20,
        decode_budget: 2 << 20,
        ..HubConfig::default()
    });
    let established = |peer: &str| {
        let mut s = TcpStream::connect(&hub.addr).unwrap();
        s.write_all(&frame(&hello(peer, "1.0"))).unwrap();
        let msgs = read_for(&mut s, Duration::from_millis(500));
        assert!(
            matches!(msgs.first(), Some(Message::Welcome(_))),
            "{msgs:?}"
        );
        s
    };
    // A 1.5 MiB frame of garbage: its header, flags, and part of its body.
    let big = 3 << 19;
    let mut head = (big as u32).to_le_bytes().to_vec();
    head.push(0);
    let mut x = established("x");
    x.write_all(&head).unwrap();
    x.write_all(&vec![0xc1; 100_000]).unwrap();
    thread::sleep(Duration::from_millis(300));
    // The second peer sends a whole 1.5 MiB frame of garbage: it is not read while the
    // first holds the budget, so no error comes back.
    let mut z = established("z");
    let sender = {
        let mut z = z.try_clone().unwrap();
        let mut whole = head.clone();
        whole.extend(std::iter::repeat_n(0xc1u8, big - 1));
        thread::spawn(move || {
            let _ = z.write_all(&whole);
        })
    };
    let early = read_for(&mut z, Duration::from_secs(1));
    assert!(
        !early.iter().any(|m| matches!(m, Message::Error(_))),
        "the second large frame was decoded while the budget was taken: {early:?}"
    );
    // The first goes away: the second is read and refused as the garbage it is.
    drop(x);
    let later = read_for(&mut z, Duration::from_secs(5));
    assert!(
        error_of(&later).contains("not a valid message"),
        "{later:?}"
    );
    sender.join().unwrap();
    // Everyone else was served meanwhile.
    let good = replica("good", 1_000);
    good.write(vec![user_table()]).unwrap();
    sync(&good, &hub);
}
