//! The load scenario shared by the load test and the hub benchmark: one hub, many live
//! clients over loopback (half raw TCP, half WebSocket), every client writing; then
//! every replica must hold the same graph.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::sync::SessionConfig;
use kuzu_sync_engine::{FixedClock, MemoryEventStore, Op, PeerId, Replica, Value};
use kuzu_sync_protocol::net::{self, no_events, DriveOptions, HubConfig, Shared};
use tokio_util::sync::CancellationToken;

pub type S = Shared<MemoryEventStore, MemoryGraphStore>;

pub fn replica(peer: &str) -> Arc<S> {
    Shared::new(
        Replica::create(
            MemoryEventStore::default(),
            MemoryGraphStore::new(),
            PeerId::new(peer).unwrap(),
            Box::new(FixedClock(1_000)),
        )
        .unwrap(),
    )
}

fn user(id: i64) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("name".into(), Value::from(format!("user {id}"))),
        ],
    }
}

/// What a run did and how long it took.
#[derive(Debug)]
pub struct LoadReport {
    pub clients: usize,
    /// Events the clients wrote.
    pub written: u64,
    /// Events received by replicas (hub and clients), counted from version vectors.
    pub delivered: u64,
    /// From the first write until every replica held every event.
    pub elapsed: Duration,
    /// How long it took all clients to connect and complete their first exchange.
    pub connect: Duration,
}

impl LoadReport {
    /// Events delivered per second through the hub.
    pub fn per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` live clients, each writing `writes` nodes, through one hub; checks that
/// every replica ends up with the hub's graph and that the hub still serves.
pub fn run(clients: usize, writes: usize) -> LoadReport {
    let hub = replica("hub");
    let mut ops: Vec<Op> = kuzu_sync_engine::sim::base_schema()
        .into_iter()
        .map(Op::Schema)
        .collect();
    ops.push(user(-1));
    hub.write(ops).unwrap();
    let base = hub.lock().version_vector().total();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (hub, stop) = (hub.clone(), stop.clone());
        // No seals: with a seal per import, every replica would also hold one event per
        // client write, doubling the work measured without adding to what it shows.
        let mut config = HubConfig {
            max_connections: clients + 64,
            ..HubConfig::default()
        };
        config.session.seal = false;
        thread::spawn(move || net::serve(listener, hub, config, stop, no_events()).unwrap())
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let replicas: Vec<Arc<S>> = (0..clients).map(|i| replica(&format!("c{i}"))).collect();
    let started = Instant::now();
    let tasks: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let url = if i % 2 == 0 {
                format!("tcp://{addr}")
            } else {
                format!("ws://{addr}/sync")
            };
            let opts = DriveOptions {
                cancel: cancel.clone(),
                ..DriveOptions::default()
            };
            let r = r.clone();
            rt.spawn(
                async move { net::watch_async(&r, &[url], SessionConfig::default(), opts).await },
            )
        })
        .collect();
    let all_hold = |total: u64, limit: Duration| {
        let deadline = Instant::now() + limit;
        loop {
            let behind = replicas
                .iter()
                .filter(|r| r.lock().version_vector().total() < total)
                .count();
            if behind == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{behind} of {clients} clients still lack events after {limit:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    all_hold(base, Duration::from_secs(120));
    let connect = started.elapsed();
    let written = (clients * writes) as u64;
    let started = Instant::now();
    for (i, r) in replicas.iter().enumerate() {
        for w in 0..writes {
            r.write(vec![user((i * writes + w) as i64)]).unwrap();
        }
    }
    all_hold(base + written, Duration::from_secs(300));
    let elapsed = started.elapsed();
    let total = hub.lock().version_vector().total();
    assert_eq!(total, base + written, "the hub holds events nobody wrote");
    // Every client received every event but its own; the hub every client's.
    let delivered = written * clients as u64;
    let expected = hub.lock().dump().unwrap();
    assert_eq!(expected["User"].len(), 1 + clients * writes);
    for (i, r) in replicas.iter().enumerate() {
        assert!(
            r.lock().dump().unwrap() == expected,
            "client {i} differs from the hub"
        );
    }
    cancel.cancel();
    for t in tasks {
        let errors = rt.block_on(t).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
    }
    // The hub still serves a newcomer.
    let late = replica("late");
    net::sync_once(
        &late,
        &format!("tcp://{addr}"),
        SessionConfig::default(),
        no_events(),
    )
    .unwrap();
    assert!(late.lock().dump().unwrap() == expected);
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    LoadReport {
        clients,
        written,
        delivered,
        elapsed,
        connect,
    }
}
