//! Two-phase commit on real replicas over loopback TCP (issue 12): what one transaction
//! costs against the same writes made the ordinary way, how many run per second, and what
//! running transactions costs ordinary CRDT writes. Run with
//! `cargo bench --profile dev -p kuzu-sync-tests --bench tx`.
//!
//! The cluster, in this one process, is wired as `kuzu-sync serve` and `kuzu-sync
//! coordinator` wire it: three participant hubs `p1`, `p2`, `p3`, each a real replica
//! (Kuzu + SQLite event log) in a temporary directory, served by `protocol::serve` (its
//! own two-worker tokio runtime, as in `serve`) on `127.0.0.1:0` with a
//! `ParticipantEndpoint` over a durable `SqliteTxLog` in `DIR/tx.sqlite` (`synchronous =
//! FULL`); and a `CoordinatorEndpoint` with its decision log in `coordinator.sqlite` on a
//! two-worker runtime, dialing the three over TCP. Every transaction writes one op on each
//! participant: `add_node` of an `Item` with a key never used before, so no two
//! transactions share a lock and every one commits (the bench checks that it did).
//!
//! - `tx_latency/2pc_3_participants`: one transaction, from `CoordinatorEndpoint::run`'s
//!   call to its return with the decision logged and all three acknowledgements in: two
//!   round trips and, on the critical path, four forced appends (PREPARED, then the
//!   commit's events and COMMITTED on each participant; the commit at the coordinator).
//!   Each participant applies its part to Kuzu after acknowledging, and the coordinator
//!   writes its end record after the acknowledgements are in; back to back, the next
//!   transaction's prepare waits behind that apply. Criterion gives the mean; p50 / p99
//!   come from individual samples taken for `TX_SAMPLE_SECS` (default 30) and printed,
//!   back to back and [`GAP_MS`] apart (each transaction on an idle cluster).
//! - `tx_latency/plain_writes_sequential` and `…_parallel`: the baseline, the same three
//!   op lines written the ordinary (CRDT) way, `write_json_lines` (the `kuzu-sync write`
//!   path) on each participant's replica: one after another, and one thread each.
//! - `tx_throughput/16_in_flight`: transactions per second with 16 callers running
//!   transactions back to back; printed too for 1, 4 and 16 callers.
//! - `crdt_write_10_ops/no_transactions` and `…/while_transactions_run`: an ordinary
//!   write of 10 new nodes on `p1`'s replica, as an application holding a hub's replica
//!   writes, with nothing else running and while a background task keeps transactions
//!   over the three participants running back to back. Same work both ways; p50 / p99
//!   printed for both, with the background's transactions per second.
//! - Printed, for where the time goes: one forced append to a `SqliteTxLog` on this disk;
//!   an ordinary one-op write on a replica with its Kuzu graph and with an in-memory graph
//!   (what Kuzu adds to a write); and, during the latency samples, the time the
//!   participants' and the coordinator's record logs took per transaction (the logs are
//!   wrapped in a timer, the bench's only change to the CLI's wiring).
//!
//! Set `TX_SAMPLE_SECS` to shorten the sampled phases (the criterion ones stay).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use kuzu_sync::protocol::net::{self, EventSink, HubConfig, Shared};
use kuzu_sync::protocol::txnet::{
    Address, BoxedPartLog, CoordinatorEndpoint, Part, ParticipantEndpoint, TxOutcome,
};
use kuzu_sync::{KuzuGraphStore, SqliteEventStore};
use kuzu_sync_engine::sync::Lifecycle;
use kuzu_sync_engine::tx::{CoordRecord, FailingTxLog, TxLog};
use kuzu_sync_engine::StoreError;
use kuzu_sync_sqlite::SqliteTxLog;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

const PEERS: [&str; 3] = ["p1", "p2", "p3"];
const DDL: &str =
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE Item(id INT64, v INT64, PRIMARY KEY (id))"}"#;
/// Votes are due within this (as `kuzu-sync tx`'s default), and the caller waits as long
/// for the acknowledgements.
const TX_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys of the ordinary writes of `crdt_write_10_ops`, apart from the transactions' keys.
const CRDT_KEYS: i64 = 1 << 40;
const CRDT_BATCH: i64 = 10;
/// The pause before each sample of the "apart" latencies: longer than a participant's
/// graph apply, so each transaction starts on an idle cluster.
const GAP_MS: u64 = 20;
/// Callers running transactions at once for `tx_throughput`.
const IN_FLIGHT: usize = 16;

type HubShared = Shared<SqliteEventStore, KuzuGraphStore>;

/// One participant hub, as `kuzu-sync serve DIR` runs it.
struct Hub {
    peer: String,
    address: Address,
    shared: Arc<HubShared>,
    stop: Arc<AtomicBool>,
    server: JoinHandle<()>,
}

/// Reports session errors (a bench that silently aborted would measure nothing).
fn stderr_errors(who: &'static str) -> EventSink {
    Arc::new(move |remote, e| {
        if let Lifecycle::Error { reason } = e {
            eprintln!("tx bench: {who} ({remote}): {reason}");
        }
    })
}

/// Time spent in a record log's forced appends, in microseconds, and how many.
#[derive(Default)]
struct AppendClock {
    micros: AtomicU64,
    appends: AtomicU64,
}

impl AppendClock {
    fn take(&self) -> (u64, u64) {
        (
            self.micros.swap(0, Ordering::Relaxed),
            self.appends.swap(0, Ordering::Relaxed),
        )
    }
}

/// A record log that times its appends (the bench's only addition to the wiring).
struct Timed<L> {
    inner: L,
    clock: Arc<AppendClock>,
}

impl<R, L: TxLog<R>> TxLog<R> for Timed<L> {
    fn append(&mut self, record: &R) -> Result<(), StoreError> {
        let t = Instant::now();
        let out = self.inner.append(record);
        self.clock
            .micros
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.clock.appends.fetch_add(1, Ordering::Relaxed);
        out
    }
    fn records(&self) -> Result<Vec<R>, StoreError> {
        self.inner.records()
    }
}

/// `txcli::participant_log` (the CLI binary's): the SQLite record log beside the event
/// log, behind the failure injection `serve` always wraps it in (here: no failures).
fn participant_log(dir: &Path, clock: Arc<AppendClock>) -> BoxedPartLog {
    Box::new(Timed {
        inner: FailingTxLog {
            inner: SqliteTxLog::open(&dir.join("tx.sqlite")).unwrap(),
            fail: Arc::new(AtomicUsize::new(0)),
        },
        clock,
    })
}

impl Hub {
    fn start(dir: &Path, peer: &str, clock: Arc<AppendClock>) -> Hub {
        let dir = dir.join(peer);
        let mut r = kuzu_sync::init(&dir, peer).unwrap();
        kuzu_sync::write_json_lines(&mut r, DDL).unwrap();
        drop(r);
        // `serve` opens an existing replica.
        let shared = Shared::new(kuzu_sync::open(&dir).unwrap());
        let endpoint = ParticipantEndpoint::new(
            shared.clone(),
            participant_log(&dir, clock),
            stderr_errors("participant"),
            None,
        )
        .unwrap();
        let config = HubConfig {
            tx: Some(endpoint),
            ..HubConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = Address {
            url: format!("tcp://{}", listener.local_addr().unwrap()),
            token: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || {
                net::serve(listener, shared, config, stop, stderr_errors("hub")).unwrap()
            })
        };
        Hub {
            peer: peer.to_owned(),
            address,
            shared,
            stop,
            server,
        }
    }

    /// An ordinary write of op lines, as `kuzu-sync write` makes it, then the hub's
    /// sessions are woken as for any application write.
    fn write(&self, lines: &str) {
        kuzu_sync::write_json_lines(&mut self.shared.lock(), lines).unwrap();
        self.shared.changed();
    }
}

fn item(key: i64) -> String {
    format!(r#"{{"op":"add_node","table":"Item","props":{{"id":{key},"v":1}}}}"#)
}

/// What a caller needs to run transactions over the three participants.
#[derive(Clone)]
struct Txs {
    coordinator: Arc<CoordinatorEndpoint>,
    participants: Vec<(String, Address)>,
    next_key: Arc<AtomicI64>,
}

impl Txs {
    /// One transaction, one `add_node` of a fresh key on each participant; panics unless
    /// it committed everywhere.
    async fn run_one(&self) -> TxOutcome {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let parts = self
            .participants
            .iter()
            .map(|(peer, address)| Part {
                peer: peer.clone(),
                address: address.clone(),
                ops: vec![item(key)],
            })
            .collect();
        let out = self
            .coordinator
            .run(parts, TX_TIMEOUT, TX_TIMEOUT)
            .await
            .unwrap();
        assert!(
            out.decision == "commit" && out.participants.values().all(|s| s == "committed"),
            "a transaction of fresh keys did not commit everywhere: {out:?}"
        );
        out
    }

    /// `total` transactions by `callers` callers running them back to back; the time.
    async fn run_many(&self, total: usize, callers: usize) -> Duration {
        let started = Instant::now();
        let taken = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let (txs, taken) = (self.clone(), taken.clone());
            tasks.spawn(async move {
                while taken.fetch_add(1, Ordering::Relaxed) < total {
                    txs.run_one().await;
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        started.elapsed()
    }
}

/// The three hubs and the coordinator.
struct Cluster {
    _dir: tempfile::TempDir,
    hubs: Vec<Hub>,
    rt: Runtime,
    cancel: CancellationToken,
    txs: Txs,
    /// The three participants' record logs, together; the coordinator's decision log.
    part_appends: Arc<AppendClock>,
    coord_appends: Arc<AppendClock>,
}

impl Cluster {
    fn start() -> Cluster {
        // On the disk, not a tmpfs: forced appends must reach the device.
        let dir = tempfile::tempdir().unwrap();
        let part_appends = Arc::new(AppendClock::default());
        let coord_appends = Arc::new(AppendClock::default());
        let hubs: Vec<Hub> = PEERS
            .iter()
            .map(|p| Hub::start(dir.path(), p, part_appends.clone()))
            .collect();
        // As `kuzu-sync coordinator` runs it.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cancel = CancellationToken::new();
        let log: SqliteTxLog<CoordRecord> =
            SqliteTxLog::open(&dir.path().join("coordinator.sqlite")).unwrap();
        let coordinator = {
            let _in = rt.enter();
            CoordinatorEndpoint::start(
                "coordinator",
                Box::new(Timed {
                    inner: log,
                    clock: coord_appends.clone(),
                }),
                BTreeMap::new(),
                stderr_errors("coordinator"),
                cancel.clone(),
            )
            .unwrap()
        };
        let txs = Txs {
            coordinator,
            participants: hubs
                .iter()
                .map(|h| (h.peer.clone(), h.address.clone()))
                .collect(),
            next_key: Arc::new(AtomicI64::new(0)),
        };
        let cluster = Cluster {
            _dir: dir,
            hubs,
            rt,
            cancel,
            txs,
            part_appends,
            coord_appends,
        };
        // The links come up; the first transactions warm everything.
        cluster.rt.block_on(async {
            for _ in 0..20 {
                cluster.txs.run_one().await;
            }
        });
        cluster
    }

    fn tx(&self) {
        self.rt.block_on(self.txs.run_one());
    }

    /// The baseline: the three op lines of a transaction, written the ordinary way.
    fn plain_sequential(&self) {
        let key = self.txs.next_key.fetch_add(1, Ordering::Relaxed);
        for h in &self.hubs {
            h.write(&item(key));
        }
    }

    fn plain_parallel(&self) {
        let key = self.txs.next_key.fetch_add(1, Ordering::Relaxed);
        std::thread::scope(|s| {
            for h in &self.hubs {
                s.spawn(move || h.write(&item(key)));
            }
        });
    }

    fn stop(self) {
        self.cancel.cancel();
        for h in self.hubs {
            h.stop.store(true, Ordering::SeqCst);
            h.server.join().unwrap();
        }
        self.rt.shutdown_timeout(Duration::from_secs(5));
    }
}

/// The ordinary writes of `crdt_write_10_ops`, on `p1`.
struct CrdtWrites<'a> {
    hub: &'a Hub,
    next: i64,
}

impl CrdtWrites<'_> {
    fn write(&mut self) {
        let lines: Vec<String> = (0..CRDT_BATCH)
            .map(|i| item(CRDT_KEYS + self.next + i))
            .collect();
        self.next += CRDT_BATCH;
        self.hub.write(&lines.join("\n"));
    }
}

/// A task that runs transactions back to back, `callers` at a time, until stopped.
struct Background {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Background {
    fn start(c: &Cluster, callers: usize) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let tasks = (0..callers)
            .map(|_| {
                let (txs, stop, done) = (c.txs.clone(), stop.clone(), done.clone());
                c.rt.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        txs.run_one().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Background {
            stop,
            done,
            tasks,
            started: Instant::now(),
        }
    }

    /// Stops it; transactions per second while it ran.
    fn stop(self, c: &Cluster) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64();
        let done = self.done.load(Ordering::Relaxed);
        c.rt.block_on(async {
            for t in self.tasks {
                t.await.unwrap();
            }
        });
        done as f64 / secs
    }
}

fn sample_secs() -> f64 {
    std::env::var("TX_SAMPLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30.0)
}

/// Individual samples of `f`, for `secs` or at most `max` of them.
fn samples(secs: f64, max: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut out = Vec::new();
    while out.len() < max && Instant::now() < until {
        let t = Instant::now();
        f();
        out.push(t.elapsed());
    }
    out
}

/// [`samples`], with `gap` between one sample and the next (not counted): each one then
/// starts on an idle cluster, as an isolated transaction would, rather than behind the
/// work the previous one left (a participant's graph apply after its early
/// acknowledgement).
fn samples_apart(secs: f64, max: usize, gap: Duration, mut f: impl FnMut()) -> Vec<Duration> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut out = Vec::new();
    while out.len() < max && Instant::now() < until {
        std::thread::sleep(gap);
        let t = Instant::now();
        f();
        out.push(t.elapsed());
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `name: n samples, p50 …, p99 …, max …, mean …` (milliseconds); returns (p50, p99).
fn summary(name: &str, mut s: Vec<Duration>) -> (f64, f64) {
    assert!(!s.is_empty(), "{name}: no samples");
    s.sort();
    let at = |q: f64| ms(s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]);
    let mean = s.iter().map(|d| ms(*d)).sum::<f64>() / s.len() as f64;
    let (p50, p99) = (at(0.50), at(0.99));
    println!(
        "{name}: {} samples, p50 {p50:.2} ms, p99 {p99:.2} ms, max {:.2} ms, mean {mean:.2} ms",
        s.len(),
        ms(*s.last().unwrap())
    );
    (p50, p99)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// One forced append to a `SqliteTxLog` on this disk: the unit most of a transaction's
/// durable steps cost.
fn forced_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log: SqliteTxLog<String> = SqliteTxLog::open(&dir.path().join("probe.sqlite")).unwrap();
    let record = "x".repeat(200);
    for _ in 0..20 {
        log.append(&record).unwrap();
    }
    summary(
        "forced SqliteTxLog append (synchronous = FULL)",
        samples(3.0, 2000, || log.append(&record).unwrap()),
    );
}

/// An ordinary one-op write on a replica of its own, with its Kuzu graph and with an
/// in-memory one: how much of a write (and of a participant's commit) is Kuzu's.
fn write_split(secs: f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut kuzu = kuzu_sync::init(&dir.path().join("kuzu"), "k").unwrap();
    let mut memory = kuzu_sync_engine::Replica::create(
        SqliteEventStore::open(&dir.path().join("events.sqlite")).unwrap(),
        kuzu_sync_engine::memory::MemoryGraphStore::new(),
        kuzu_sync_engine::PeerId::new("m").unwrap(),
        Box::new(kuzu_sync::SystemClock),
    )
    .unwrap();
    kuzu_sync::write_json_lines(&mut kuzu, DDL).unwrap();
    let ddl = kuzu_sync::parse_json_lines(DDL, memory.engine().schema()).unwrap();
    memory.write(ddl).unwrap();
    let mut key = 0;
    summary(
        "one-op write, SQLite event log + Kuzu",
        samples(secs, 2000, || {
            key += 1;
            kuzu_sync::write_json_lines(&mut kuzu, &item(key)).unwrap();
        }),
    );
    summary(
        "one-op write, SQLite event log + in-memory graph",
        samples(secs, 2000, || {
            key += 1;
            let ops = kuzu_sync::parse_json_lines(&item(key), memory.engine().schema()).unwrap();
            memory.write(ops).unwrap();
        }),
    );
}

fn benches(c: &mut Criterion) {
    println!("load average at start: {}", load_average());
    forced_append();
    write_split(3.0);
    let cluster = Cluster::start();
    let secs = sample_secs();

    // Latency: the transaction and its baseline, individual samples then criterion.
    cluster.part_appends.take();
    cluster.coord_appends.take();
    let s = samples(secs, 5000, || cluster.tx());
    let n = s.len() as f64;
    let (part_us, part_n) = cluster.part_appends.take();
    let (coord_us, coord_n) = cluster.coord_appends.take();
    let (tx50, _) = summary("2pc, 3 participants, 1 op each", s);
    println!(
        "  per transaction: {:.1} participant record appends, {:.2} ms each on average \
         (each participant spends {:.2} ms in them); {:.1} coordinator appends, {:.2} ms each \
         ({:.2} ms in all)",
        part_n as f64 / n,
        part_us as f64 / 1e3 / part_n.max(1) as f64,
        part_us as f64 / 1e3 / n / PEERS.len() as f64,
        coord_n as f64 / n,
        coord_us as f64 / 1e3 / coord_n.max(1) as f64,
        coord_us as f64 / 1e3 / n,
    );
    let apart = Duration::from_millis(GAP_MS);
    let (apart50, _) = summary(
        &format!("2pc, 3 participants, 1 op each, {GAP_MS} ms apart"),
        samples_apart(secs / 3.0, 5000, apart, || cluster.tx()),
    );
    let (seq50, _) = summary(
        "plain writes, the same 3 ops one after another",
        samples(secs / 3.0, 5000, || cluster.plain_sequential()),
    );
    let (par50, _) = summary(
        "plain writes, the same 3 ops in parallel",
        samples(secs / 3.0, 5000, || cluster.plain_parallel()),
    );
    let (par_apart50, _) = summary(
        &format!("plain writes, the same 3 ops in parallel, {GAP_MS} ms apart"),
        samples_apart(secs / 3.0, 5000, apart, || cluster.plain_parallel()),
    );
    println!(
        "2pc p50 / plain p50: {:.1}x (sequential), {:.1}x (parallel); {GAP_MS} ms apart: \
         {:.1}x (parallel)",
        tx50 / seq50,
        tx50 / par50,
        apart50 / par_apart50
    );
    let mut g = c.benchmark_group("tx_latency");
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("2pc_3_participants", |b| b.iter(|| cluster.tx()));
    g.bench_function("plain_writes_sequential", |b| {
        b.iter(|| cluster.plain_sequential())
    });
    g.bench_function("plain_writes_parallel", |b| {
        b.iter(|| cluster.plain_parallel())
    });
    g.finish();

    // Throughput.
    for callers in [1, 4, IN_FLIGHT] {
        let mut total = 0;
        let until = Instant::now() + Duration::from_secs_f64(secs / 3.0);
        let mut took = Duration::ZERO;
        while Instant::now() < until {
            let n = 8 * callers;
            took += cluster.rt.block_on(cluster.txs.run_many(n, callers));
            total += n;
        }
        let n = total;
        println!(
            "throughput, {callers} callers: {n} transactions in {:.1} s, {:.0} tx/s",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64()
        );
    }
    let mut g = c.benchmark_group("tx_throughput");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("{IN_FLIGHT}_in_flight"), |b| {
        b.iter_custom(|iters| {
            cluster
                .rt
                .block_on(cluster.txs.run_many(iters as usize, IN_FLIGHT))
        })
    });
    g.finish();

    // Ordinary CRDT writes on p1, without and with transactions running.
    let mut writes = CrdtWrites {
        hub: &cluster.hubs[0],
        next: 0,
    };
    let (none50, none99) = summary(
        "crdt write of 10 ops on p1, no transactions",
        samples(secs / 3.0, 5000, || writes.write()),
    );
    for callers in [1, 4] {
        let bg = Background::start(&cluster, callers);
        let s = samples(secs / 3.0, 5000, || writes.write());
        let rate = bg.stop(&cluster);
        let (p50, p99) = summary(
            &format!(
                "crdt write of 10 ops on p1, {callers} callers running transactions \
                 (they ran {rate:.0} tx/s meanwhile)"
            ),
            s,
        );
        println!(
            "  against none: p50 {:.2}x, p99 {:.2}x",
            p50 / none50,
            p99 / none99
        );
    }
    let mut g = c.benchmark_group("crdt_write_10_ops");
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("no_transactions", |b| b.iter(|| writes.write()));
    let bg = Background::start(&cluster, 1);
    g.bench_function("while_transactions_run", |b| b.iter(|| writes.write()));
    let rate = bg.stop(&cluster);
    g.finish();
    println!("(the background ran {rate:.0} tx/s during while_transactions_run)");

    println!("load average at the end: {}", load_average());
    cluster.stop();
}

criterion_group!(tx, benches);
criterion_main!(tx);
