//! Live propagation through a hub without durable storage: client A writes, client B (its
//! own session and runtime) receives and applies, through a hub on loopback, all on
//! in-memory replicas. What it measures is what the networking adds (runtime, wake-ups,
//! framing, the hub's writer thread): `tests/benches/propagation.rs` measures the same
//! path across processes on real SQLite and Kuzu, where each replica's durable write
//! dominates.
//!
//! Run: `cargo bench --profile dev -p kuzu-sync-protocol --bench live_latency`
//! (`LIVE_SAMPLES`, default 500).

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::sync::{Lifecycle, SessionConfig};
use kuzu_sync_engine::{FixedClock, MemoryEventStore, Op, PeerId, Replica, Value};
use kuzu_sync_protocol::net::{self, no_events, DriveOptions, EventSink, HubConfig, Shared};

type S = Shared<MemoryEventStore, MemoryGraphStore>;

fn replica(peer: &str) -> Arc<S> {
    Shared::new(
        Replica::create(
            MemoryEventStore::default(),
            MemoryGraphStore::new(),
            PeerId::new(peer).expect("a valid peer id"),
            Box::new(FixedClock(1_000)),
        )
        .expect("a memory replica"),
    )
}

fn user(id: i64) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![("id".into(), Value::Int64(id))],
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Starts a live client on its own thread; returns its stop flag and the thread.
fn live(
    shared: Arc<S>,
    url: String,
    events: EventSink,
) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let opts = DriveOptions {
        stop: stop.clone(),
        events,
        ..DriveOptions::default()
    };
    let t = thread::spawn(move || {
        let errors = net::watch(shared, &[url], SessionConfig::default(), opts);
        assert!(errors.is_empty(), "{errors:?}");
    });
    (stop, t)
}

fn measure(scheme: &str, samples: usize) -> Vec<f64> {
    let hub = replica("hub");
    let mut ops: Vec<Op> = kuzu_sync_engine::sim::base_schema()
        .into_iter()
        .map(Op::Schema)
        .collect();
    ops.push(user(-1));
    hub.write(ops).expect("the schema");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = listener.local_addr().expect("its address");
    let hub_stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (hub, stop) = (hub.clone(), hub_stop.clone());
        thread::spawn(move || {
            net::serve(listener, hub, HubConfig::default(), stop, no_events()).expect("serve")
        })
    };
    let url = match scheme {
        "tcp" => format!("tcp://{addr}"),
        s => format!("{s}://{addr}/sync"),
    };
    let (a, b) = (replica("a"), replica("b"));
    let (tx, rx) = mpsc::channel::<Instant>();
    let on_b: EventSink = Arc::new(move |_, e| {
        if matches!(e, Lifecycle::Change { .. }) {
            let _ = tx.send(Instant::now());
        }
    });
    let (stop_b, tb) = live(b.clone(), url.clone(), on_b);
    let (stop_a, ta) = live(a.clone(), url, no_events());
    // Both hold the schema: connected and past their first exchange.
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.lock().version_vector().total() == 0 || b.lock().version_vector().total() == 0 {
        assert!(Instant::now() < deadline, "the clients never synced");
        thread::sleep(Duration::from_millis(5));
    }
    while rx.try_recv().is_ok() {}
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + 10 {
        let before = b.lock().version_vector().total();
        let sent = Instant::now();
        a.write(vec![user(i as i64)]).expect("a write");
        loop {
            let at = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("B never applied the write");
            if b.lock().version_vector().total() > before {
                if i >= 10 {
                    out.push(at.duration_since(sent).as_secs_f64() * 1000.0);
                }
                break;
            }
        }
        thread::sleep(Duration::from_millis(2 + (i % 7) as u64));
    }
    stop_a.store(true, Ordering::SeqCst);
    stop_b.store(true, Ordering::SeqCst);
    ta.join().expect("client A");
    tb.join().expect("client B");
    hub_stop.store(true, Ordering::SeqCst);
    server.join().expect("the hub");
    out
}

fn main() {
    let samples: usize =
        std::env::var("LIVE_SAMPLES").map_or(500, |v| v.parse().expect("LIVE_SAMPLES is a number"));
    println!("| transport | samples | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|");
    for scheme in ["tcp", "ws", "http"] {
        let mut ms = measure(scheme, samples);
        ms.sort_by(|x, y| x.total_cmp(y));
        println!(
            "| {scheme} | {} | {:.3} | {:.3} | {:.3} |",
            ms.len(),
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms[ms.len() - 1]
        );
    }
}
