//! Cost curves (issue 13): how each cost grows with the work, printed as tables and drawn
//! to `docs/curves/{import,open,sync_bytes}.svg`. Run with
//! `cargo bench --profile dev -p kuzu-sync-tests --bench curves`.
//!
//! - **Import**: a bundle of N events (10k, 100k, 1M) imported into a fresh replica on real
//!   Kuzu + SQLite, opened as the CLI opens one (`KuzuConfig::default()`), with
//!   `bundle::import` as `kuzu-sync import` calls it. Time, time per event, and where it
//!   goes (bundle read and decode + ordering, the engine staging the events in memory,
//!   then storing: the SQLite append and the Kuzu apply); memory as the peak of the live
//!   Rust heap above the fresh replica's (a counting global allocator, `cap`), which does
//!   not see Kuzu's C++ allocations and buffer pool, and as the process's peak resident
//!   set (`VmHWM`), which does.
//! - **Open**: the replica the import left, opened (its log replayed into the engine; the
//!   graph is up to date), then compacted (`Replica::compact`, the whole log into a
//!   snapshot) and opened from the snapshot.
//! - **Sync bytes per op**: a replica with a batch of k new ops (1 … 10k) syncs one-shot
//!   with a hub over loopback TCP; the bytes of every frame both ways (the session's own
//!   count), per op; beside it the `Events` frames alone, encoded by the crate's `Encoder`
//!   (zstd) as the session sends them, and their MessagePack before compression.
//!
//! The workload is deterministic: 5 schema events (two node tables, two rel tables, a
//! counter policy), then a fixed mix of ops drawn by a seeded generator: new users and
//! posts, follows and likes edges, score updates, like increments and follows deletions.
//!
//! Each timed point runs in a fresh child process (this binary again, with
//! `KS_CURVES_CHILD` set), so the heap peak and `VmHWM` are the point's own. Times are the
//! median of several runs (fewer at 1M); the table gives min and max too. Sizes and runs:
//! `KS_CURVES_SIZES=10000:5,100000:3,1000000:2` (the default).

use std::alloc::System;
use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cap::Cap;
use kuzu_sync::protocol::frame::Encoder;
use kuzu_sync::protocol::net::{self, no_events, HubConfig, Shared};
use kuzu_sync::{KuzuConfig, KuzuGraphStore, SqliteEventStore};
use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::replica::causal_order;
use kuzu_sync_engine::sync::{Message, SessionConfig};
use kuzu_sync_engine::{
    EdgeRef, Entity, Event, EventStore, FixedClock, MemoryEventStore, NodeRef, Op, PeerId, Replica,
    Value, VersionVector,
};
use kuzu_sync_protocol::{Bundle, BundleV1};

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

const DEFAULT_SIZES: &str = "10000:5,100000:3,1000000:2";
const BATCHES: [usize; 5] = [1, 10, 100, 1_000, 10_000];
const SOURCE: &str = "source";
/// The source's fixed clock (2025-11-20): deterministic events, in the receiver's past.
const SOURCE_CLOCK_MS: u64 = 1_763_600_000_000;

const SCHEMA: [&str; 5] = [
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(id INT64, name STRING, score INT64, PRIMARY KEY (id))"}"#,
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE Post(id INT64, title STRING, likes INT64, PRIMARY KEY (id))"}"#,
    r#"{"op":"set_policy","table":"Post","prop":"likes","policy":"counter"}"#,
    r#"{"op":"ddl","cypher":"CREATE REL TABLE Follows(FROM User TO User, since INT64)"}"#,
    r#"{"op":"ddl","cypher":"CREATE REL TABLE Likes(FROM User TO Post, at INT64)"}"#,
];

// ---------------------------------------------------------------------------------------
// The workload

/// A seeded stream of mixed ops over the schema above; every op is valid where it falls.
struct Workload {
    state: u64,
    users: i64,
    posts: i64,
    follows: Vec<(i64, i64)>,
    follow_set: HashSet<(i64, i64)>,
    likes: HashSet<(i64, i64)>,
    /// How many ops of each kind were drawn.
    counts: BTreeMap<&'static str, u64>,
}

fn node(table: &str, id: i64) -> NodeRef {
    NodeRef {
        table: table.into(),
        key: Value::Int64(id),
    }
}

fn edge(table: &str, from: NodeRef, to: NodeRef) -> EdgeRef {
    EdgeRef {
        table: table.into(),
        from,
        to,
        key: String::new(),
    }
}

impl Workload {
    fn new() -> Self {
        Workload {
            state: 0x5eed_cafe_f00d_0013,
            users: 0,
            posts: 0,
            follows: Vec::new(),
            follow_set: HashSet::new(),
            likes: HashSet::new(),
            counts: BTreeMap::new(),
        }
    }

    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: i64) -> i64 {
        (self.next() % n as u64) as i64
    }

    fn op(&mut self) -> Op {
        let roll = self.next() % 100;
        let (kind, op) = match roll {
            _ if self.users < 2 || self.posts < 1 => {
                if self.users < 2 {
                    ("add user", self.add_user())
                } else {
                    ("add post", self.add_post())
                }
            }
            0..=29 => ("add user", self.add_user()),
            30..=44 => ("add post", self.add_post()),
            45..=69 => self.follow(),
            70..=79 => self.like(),
            80..=91 => ("update score", self.update_score()),
            92..=96 => ("increment likes", self.increment_likes()),
            _ => match self.unfollow() {
                Some(op) => ("delete follows", op),
                None => ("add user", self.add_user()),
            },
        };
        *self.counts.entry(kind).or_default() += 1;
        op
    }

    fn add_user(&mut self) -> Op {
        let id = self.users;
        self.users += 1;
        Op::AddNode {
            table: "User".into(),
            props: vec![
                ("id".into(), Value::Int64(id)),
                ("name".into(), Value::String(format!("user {id}"))),
                ("score".into(), Value::Int64(id % 1000)),
            ],
        }
    }

    fn add_post(&mut self) -> Op {
        let id = self.posts;
        self.posts += 1;
        Op::AddNode {
            table: "Post".into(),
            props: vec![
                ("id".into(), Value::Int64(id)),
                ("title".into(), Value::String(format!("post number {id}"))),
                ("likes".into(), Value::Int64(0)),
            ],
        }
    }

    fn update_score(&mut self) -> Op {
        let id = self.below(self.users);
        let score = self.below(1_000_000);
        Op::Update {
            entity: Entity::Node(node("User", id)),
            prop: "score".into(),
            value: Value::Int64(score),
        }
    }

    fn increment_likes(&mut self) -> Op {
        let id = self.below(self.posts);
        Op::Increment {
            entity: Entity::Node(node("Post", id)),
            prop: "likes".into(),
            delta: Value::Int64(1),
        }
    }

    /// A new follows edge, or (the pair already follows) an update of its `since`.
    fn follow(&mut self) -> (&'static str, Op) {
        let a = self.below(self.users);
        let b = (a + 1 + self.below(self.users - 1)) % self.users;
        let since = 2000 + self.below(25);
        let e = edge("Follows", node("User", a), node("User", b));
        if self.follow_set.insert((a, b)) {
            self.follows.push((a, b));
            (
                "add follows",
                Op::AddEdge {
                    edge: e,
                    props: vec![("since".into(), Value::Int64(since))],
                },
            )
        } else {
            (
                "update follows",
                Op::Update {
                    entity: Entity::Edge(e),
                    prop: "since".into(),
                    value: Value::Int64(since),
                },
            )
        }
    }

    /// A new likes edge, or (already liked) an increment of the post's likes.
    fn like(&mut self) -> (&'static str, Op) {
        let u = self.below(self.users);
        let p = self.below(self.posts);
        if self.likes.insert((u, p)) {
            let at = self.below(1_000_000);
            (
                "add likes",
                Op::AddEdge {
                    edge: edge("Likes", node("User", u), node("Post", p)),
                    props: vec![("at".into(), Value::Int64(at))],
                },
            )
        } else {
            ("increment likes", self.increment_likes())
        }
    }

    fn unfollow(&mut self) -> Option<Op> {
        if self.follows.is_empty() {
            return None;
        }
        let i = self.below(self.follows.len() as i64) as usize;
        let (a, b) = self.follows.swap_remove(i);
        self.follow_set.remove(&(a, b));
        Some(Op::DeleteEdge(edge(
            "Follows",
            node("User", a),
            node("User", b),
        )))
    }
}

/// Writes the schema, one event per line.
fn write_schema<E: EventStore, G: kuzu_sync_engine::GraphStore>(r: &mut Replica<E, G>) {
    for line in SCHEMA {
        let ops = kuzu_sync::parse_json_lines(line, r.engine().schema()).unwrap();
        r.write(ops).unwrap();
    }
}

/// The first `n` events of the workload (the schema's included), written by an in-memory
/// replica with a fixed clock, as a bundle file; returns the op mix.
fn write_bundle(n: usize, path: &Path) -> BTreeMap<&'static str, u64> {
    let mut r = Replica::create(
        MemoryEventStore::new(),
        MemoryGraphStore::new(),
        PeerId::new(SOURCE).unwrap(),
        Box::new(FixedClock(SOURCE_CLOCK_MS)),
    )
    .unwrap();
    write_schema(&mut r);
    let mut w = Workload::new();
    let mut left = n - SCHEMA.len();
    while left > 0 {
        let k = left.min(10_000);
        r.write((0..k).map(|_| w.op()).collect()).unwrap();
        left -= k;
    }
    let events = r.events_since(&VersionVector::new()).unwrap();
    assert_eq!(events.len(), n);
    let bundle = Bundle::V1(BundleV1 {
        source_peer: SOURCE.into(),
        since: VersionVector::new(),
        until: r.version_vector().clone(),
        events,
        snapshot: None,
    });
    drop(r);
    std::fs::write(path, kuzu_sync_protocol::encode(&bundle)).unwrap();
    w.counts
}

// ---------------------------------------------------------------------------------------
// Child processes: one measurement each, printed as `key=value` pairs on one line.

fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

fn env_path(name: &str) -> PathBuf {
    PathBuf::from(std::env::var(name).unwrap_or_else(|_| panic!("{name} is set")))
}

/// Times at which the engine's progress callback reached each multiple of 10,000 events.
struct Marks {
    start: Instant,
    at: Vec<(u64, f64)>,
}

impl Marks {
    fn new() -> Self {
        Marks {
            start: Instant::now(),
            at: Vec::new(),
        }
    }

    fn mark(&mut self, done: u64, _total: u64) {
        self.at.push((done, self.start.elapsed().as_secs_f64()));
    }

    /// The marks of the in-memory pass: the engine reports every 10,000 events, and the
    /// last call of all is the final "done" after storing.
    fn pass(&self) -> &[(u64, f64)] {
        &self.at[..self.at.len().saturating_sub(1)]
    }

    /// When the in-memory pass ended (its last mark).
    fn pass_end(&self) -> Option<f64> {
        self.pass().last().map(|m| m.1)
    }

    /// (seconds before the in-memory pass, its seconds per event), from its first and
    /// last marks; `None` with fewer than two.
    fn split(&self) -> Option<(f64, f64)> {
        let (&(d0, t0), &(d1, t1)) = (self.pass().first()?, self.pass().last()?);
        if d1 <= d0 {
            return None;
        }
        let per_event = (t1 - t0) / (d1 - d0) as f64;
        Some((t0 - per_event * d0 as f64, per_event))
    }
}

fn child(mode: &str) {
    let dir = env_path("KS_CURVES_DIR");
    let mut out: Vec<(&str, f64)> = Vec::new();
    match mode {
        "import" => {
            let bundle = env_path("KS_CURVES_BUNDLE");
            let n: usize = std::env::var("KS_CURVES_N").unwrap().parse().unwrap();
            let mut r = kuzu_sync::init_with(&dir, "receiver", &KuzuConfig::default()).unwrap();
            let heap0 = HEAP.allocated();
            let rss0 = proc_status_bytes("VmRSS");
            let mut marks = Marks::new();
            let (outcome, _) =
                kuzu_sync::bundle::import(&mut r, &bundle, &mut |d, t| marks.mark(d, t)).unwrap();
            let secs = marks.start.elapsed().as_secs_f64();
            assert_eq!(outcome.applied, n, "every event applied");
            let peak = HEAP.max_allocated().saturating_sub(heap0);
            let live = HEAP.allocated().saturating_sub(heap0);
            let hwm = proc_status_bytes("VmHWM");
            let t = Instant::now();
            drop(r);
            out.push(("close_s", t.elapsed().as_secs_f64()));
            out.extend([
                ("secs", secs),
                ("peak_heap", peak as f64),
                ("live_heap", live as f64),
                ("hwm", hwm as f64),
                ("rss_before", rss0 as f64),
            ]);
            if let Some((before, per_event)) = marks.split() {
                out.extend([
                    ("before_engine_s", before),
                    ("engine_per_event_s", per_event),
                ]);
            }
            if let Some(end) = marks.pass_end() {
                out.push(("store_s", secs - end));
            }
        }
        "append" => {
            // Parts of an import measured alone, on the same events: ordering them
            // causally; the SQLite half of storing (appended in one call to a fresh log,
            // as `Replica::import` appends them, then again in ten calls to see whether
            // the cost per event grows with the log); reading and decoding the bundle.
            let bundle = kuzu_sync::bundle::read(&env_path("KS_CURVES_BUNDLE")).unwrap();
            let events = bundle.into_events();
            let copy = events.clone();
            let t = Instant::now();
            let ordered = causal_order(copy, &VersionVector::new()).unwrap();
            out.push(("order_s", t.elapsed().as_secs_f64()));
            drop(ordered);
            std::fs::create_dir_all(&dir).unwrap();
            let mut log = SqliteEventStore::open(&dir.join(kuzu_sync::EVENT_LOG)).unwrap();
            let t = Instant::now();
            log.append(&events).unwrap();
            out.push(("append_s", t.elapsed().as_secs_f64()));
            drop(log);
            let mut log = SqliteEventStore::open(&dir.join("tenths.sqlite")).unwrap();
            let tenth = events.len().div_ceil(10);
            let mut times = Vec::new();
            for chunk in events.chunks(tenth) {
                let t = Instant::now();
                log.append(chunk).unwrap();
                times.push(t.elapsed().as_secs_f64() / chunk.len() as f64);
            }
            out.push(("append_first_tenth_per_event_s", times[0]));
            out.push(("append_last_tenth_per_event_s", times[times.len() - 1]));
            drop(log);
            drop(events);
            let t = Instant::now();
            let decoded = kuzu_sync::bundle::read(&env_path("KS_CURVES_BUNDLE")).unwrap();
            out.push(("read_decode_s", t.elapsed().as_secs_f64()));
            drop(decoded);
            // A Kuzu database opened as the CLI opens one, empty: the fixed cost of opening.
            let t = Instant::now();
            let g = KuzuGraphStore::open(&dir.join("empty.kuzu"), &KuzuConfig::default()).unwrap();
            out.push(("kuzu_open_empty_s", t.elapsed().as_secs_f64()));
            drop(g);
        }
        "scan" => {
            // Parts of an open measured alone: reading the whole log from SQLite, and
            // ordering it causally.
            let t = Instant::now();
            let log = SqliteEventStore::open(&dir.join(kuzu_sync::EVENT_LOG)).unwrap();
            let all = kuzu_sync_engine::ports::all_events(&log).unwrap();
            out.push(("scan_s", t.elapsed().as_secs_f64()));
            let t = Instant::now();
            let ordered = causal_order(all, &VersionVector::new()).unwrap();
            out.push(("order_s", t.elapsed().as_secs_f64()));
            drop(ordered);
        }
        "open" => {
            let n: u64 = std::env::var("KS_CURVES_N").unwrap().parse().unwrap();
            let heap0 = HEAP.allocated();
            let mut marks = Marks::new();
            let r =
                kuzu_sync::open_with(&dir, &KuzuConfig::default(), &mut |d, t| marks.mark(d, t))
                    .unwrap();
            let secs = marks.start.elapsed().as_secs_f64();
            assert_eq!(
                r.version_vector().get(&PeerId::new(SOURCE).unwrap()),
                n,
                "the whole history is there"
            );
            out.extend([
                ("secs", secs),
                (
                    "peak_heap",
                    HEAP.max_allocated().saturating_sub(heap0) as f64,
                ),
                ("live_heap", HEAP.allocated().saturating_sub(heap0) as f64),
                ("hwm", proc_status_bytes("VmHWM") as f64),
            ]);
            if let Some((before, per_event)) = marks.split() {
                out.extend([
                    ("before_replay_s", before),
                    ("replay_per_event_s", per_event),
                ]);
            }
            if let Some(end) = marks.pass_end() {
                out.push(("after_replay_s", secs - end));
            }
            drop(r);
        }
        "compact" => {
            let mut r = kuzu_sync::open(&dir).unwrap();
            let t = Instant::now();
            let report = r.compact().unwrap();
            out.push(("secs", t.elapsed().as_secs_f64()));
            assert_eq!(report.remaining_events, 0, "the whole log compacted");
            out.push(("snapshot_bytes", report.snapshot_bytes as f64));
            drop(r);
            let log = SqliteEventStore::open(&dir.join(kuzu_sync::EVENT_LOG)).unwrap();
            let at_rest = log.snapshot_bytes_at_rest().unwrap().expect("compacted");
            out.push(("at_rest_bytes", at_rest as f64));
        }
        other => panic!("unknown child mode {other}"),
    }
    let line: Vec<String> = out.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
}

type Sample = BTreeMap<String, f64>;

fn run_child(mode: &str, env: &[(&str, &Path)], n: usize) -> Sample {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.env("KS_CURVES_CHILD", mode)
        .env("KS_CURVES_N", n.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child {mode} (n = {n}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse::<f64>().unwrap()))
        .collect()
}

/// Median, min and max of one key over several samples.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(samples: &[Sample], key: &str) -> Option<Stat> {
    let mut v: Vec<f64> = samples.iter().filter_map(|s| s.get(key).copied()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[v.len() - 1],
    })
}

fn med(samples: &[Sample], key: &str) -> f64 {
    stat(samples, key).map_or(f64::NAN, |s| s.median)
}

// ---------------------------------------------------------------------------------------
// The curves

struct SizePoint {
    n: usize,
    runs: usize,
    bundle_bytes: u64,
    import: Vec<Sample>,
    append: Sample,
    log_bytes: u64,
    graph_bytes: u64,
    open: Vec<Sample>,
    scan: Sample,
    compact: Sample,
    open_snapshot: Vec<Sample>,
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|it| it.flatten().map(|e| dir_bytes(&e.path())).sum())
        .unwrap_or(0)
}

fn sizes() -> Vec<(usize, usize)> {
    let spec = std::env::var("KS_CURVES_SIZES").unwrap_or_else(|_| DEFAULT_SIZES.into());
    spec.split(',')
        .map(|p| {
            let (n, runs) = p.split_once(':').unwrap_or((p, "3"));
            (n.trim().parse().unwrap(), runs.trim().parse().unwrap())
        })
        .collect()
}

fn size_point(work: &Path, n: usize, runs: usize) -> SizePoint {
    let bundle = work.join(format!("bundle-{n}.ksb"));
    let t = Instant::now();
    let mix = write_bundle(n, &bundle);
    let bundle_bytes = std::fs::metadata(&bundle).unwrap().len();
    println!(
        "n = {n}: bundle of {:.1} MiB generated in {:.1} s; ops: {}",
        mib(bundle_bytes as f64),
        t.elapsed().as_secs_f64(),
        mix.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let kept = work.join(format!("replica-{n}"));
    let mut import = Vec::new();
    for run in 0..runs {
        let dir = if run == 0 {
            kept.clone()
        } else {
            work.join(format!("replica-{n}-{run}"))
        };
        let s = run_child(
            "import",
            &[
                ("KS_CURVES_DIR", dir.as_path()),
                ("KS_CURVES_BUNDLE", bundle.as_path()),
            ],
            n,
        );
        println!("  import run {run}: {:.2} s", s["secs"]);
        import.push(s);
        if run > 0 {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let append_dir = work.join(format!("append-{n}"));
    let append = run_child(
        "append",
        &[
            ("KS_CURVES_DIR", append_dir.as_path()),
            ("KS_CURVES_BUNDLE", bundle.as_path()),
        ],
        n,
    );
    std::fs::remove_dir_all(&append_dir).unwrap();
    std::fs::remove_file(&bundle).unwrap();
    let log_bytes = dir_bytes(&kept.join(kuzu_sync::EVENT_LOG));
    let graph_bytes = dir_bytes(&kept.join(kuzu_sync::GRAPH_DB));
    let open: Vec<Sample> = (0..runs)
        .map(|_| run_child("open", &[("KS_CURVES_DIR", kept.as_path())], n))
        .collect();
    let scan = run_child("scan", &[("KS_CURVES_DIR", kept.as_path())], n);
    println!("  open (replay): {:.2} s", med(&open, "secs"));
    let compact = run_child("compact", &[("KS_CURVES_DIR", kept.as_path())], n);
    let open_snapshot: Vec<Sample> = (0..runs)
        .map(|_| run_child("open", &[("KS_CURVES_DIR", kept.as_path())], n))
        .collect();
    println!(
        "  compact: {:.2} s, open (snapshot): {:.2} s",
        compact["secs"],
        med(&open_snapshot, "secs")
    );
    std::fs::remove_dir_all(&kept).unwrap();
    SizePoint {
        n,
        runs,
        bundle_bytes,
        import,
        append,
        log_bytes,
        graph_bytes,
        open,
        scan,
        compact,
        open_snapshot,
    }
}

struct SyncPoint {
    ops: usize,
    sent: u64,
    /// MessagePack bytes sent before compression.
    sent_raw: u64,
    received: u64,
    frames_sent: u64,
    events_raw: usize,
    events_wire: usize,
    events_frames: usize,
}

/// A replica that shares the schema with a hub (synced before) writes `k` ops and syncs
/// one-shot over loopback TCP.
fn sync_point(work: &Path, k: usize) -> SyncPoint {
    let config = KuzuConfig {
        buffer_pool_bytes: 128 << 20,
        ..KuzuConfig::default()
    };
    let hub = kuzu_sync::init_with(&work.join(format!("hub-{k}")), "hub", &config).unwrap();
    let mut client =
        kuzu_sync::init_with(&work.join(format!("client-{k}")), "client", &config).unwrap();
    write_schema(&mut client);
    let hub = Shared::new(hub);
    let client = Shared::new(client);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (hub, stop) = (hub.clone(), stop.clone());
        std::thread::spawn(move || {
            net::serve(listener, hub, HubConfig::default(), stop, no_events()).unwrap()
        })
    };
    let first = net::sync_once(&client, &url, SessionConfig::default(), no_events()).unwrap();
    assert_eq!(first.events_sent, SCHEMA.len() as u64);
    let before = client.lock().version_vector().clone();
    let mut w = Workload::new();
    client.write((0..k).map(|_| w.op()).collect()).unwrap();
    let report = net::sync_once(&client, &url, SessionConfig::default(), no_events()).unwrap();
    assert_eq!(report.events_sent, k as u64);
    // The events alone, as the session frames them.
    let events: Vec<Event> = client.lock().events_since(&before).unwrap();
    let enc = Encoder {
        compress: true,
        ..Encoder::default()
    };
    let (mut events_raw, mut events_wire, mut events_frames) = (0, 0, 0);
    for chunk in events.chunks(kuzu_sync_engine::sync::DEFAULT_BATCH) {
        let (_, stats) = enc.encode(&Message::Events(chunk.to_vec())).unwrap();
        events_raw += stats.raw;
        events_wire += stats.wire;
        events_frames += 1;
    }
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    SyncPoint {
        ops: k,
        sent: report.wire_bytes_sent,
        sent_raw: report.raw_bytes_sent,
        received: report.wire_bytes_received,
        frames_sent: report.frames_sent,
        events_raw,
        events_wire,
        events_frames,
    }
}

fn mib(b: f64) -> f64 {
    b / (1024.0 * 1024.0)
}

fn label(n: u64) -> String {
    match n {
        n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1000 => format!("{}k", n / 1000),
        n => n.to_string(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn print_tables(points: &[SizePoint], syncs: &[SyncPoint]) {
    println!();
    println!("IMPORT: a bundle of N events into a fresh replica (Kuzu + SQLite), bundle::import");
    println!(
        "{:>7} {:>4} {:>8} | {:>20} {:>8} | {:>7} {:>8} {:>7} | {:>7} {:>7} {:>6} | {:>8} {:>7} {:>8} {:>8}",
        "events", "runs", "bundle", "time s (min-max)", "us/event", "before", "engine", "store",
        "append", "kuzu", "close", "peak hp", "B/event", "live hp", "VmHWM"
    );
    for p in points {
        let t = stat(&p.import, "secs").unwrap();
        let per_event = |s: f64| s * 1e6 / p.n as f64;
        let store = med(&p.import, "store_s");
        let append = p.append["append_s"];
        println!(
            "{:>7} {:>4} {:>6.1}Mi | {:>6.2} ({:>5.2}-{:>5.2}) {:>8.1} | {:>7.2} {:>8.2} {:>7.2} | {:>7.2} {:>7.2} {:>6.2} | {:>6.1}Mi {:>7.0} {:>6.1}Mi {:>6.1}Mi",
            label(p.n as u64),
            p.runs,
            mib(p.bundle_bytes as f64),
            t.median,
            t.min,
            t.max,
            per_event(t.median),
            med(&p.import, "before_engine_s"),
            med(&p.import, "engine_per_event_s") * 1e6,
            store,
            append,
            store - append,
            med(&p.import, "close_s"),
            mib(med(&p.import, "peak_heap")),
            med(&p.import, "peak_heap") / p.n as f64,
            mib(med(&p.import, "live_heap")),
            mib(med(&p.import, "hwm")),
        );
    }
    println!(
        "(time: median of runs, the import call alone; before: reading and decoding the \
         bundle, ordering, until the engine's in-memory pass (s); engine: that pass, us per \
         event; store: after it, the SQLite append and the Kuzu apply (s); append: the same \
         events appended alone to a fresh SQLite log (s, one run); kuzu: store - append; \
         close: dropping the replica; peak hp: peak live Rust heap above the fresh \
         replica's, which does not count Kuzu's C++ allocations or buffer pool; live hp: \
         live heap left after the import (the engine's state); VmHWM: the child process's \
         peak resident set, Kuzu included)"
    );
    for p in points {
        println!(
            "  {}: alone (one run each): bundle read + decode {:.2} s, causal order {:.2} s \
             ({:.2} us/event); SQLite append in ten calls: {:.2} us/event for the first \
             tenth, {:.2} for the last; opening an empty Kuzu database {:.3} s; resident \
             before the import {:.1} MiB",
            label(p.n as u64),
            p.append["read_decode_s"],
            p.append["order_s"],
            p.append["order_s"] * 1e6 / p.n as f64,
            p.append["append_first_tenth_per_event_s"] * 1e6,
            p.append["append_last_tenth_per_event_s"] * 1e6,
            p.append["kuzu_open_empty_s"],
            mib(med(&p.import, "rss_before")),
        );
    }

    println!();
    println!(
        "OPEN: the replica the import left, log replayed; then compacted, opened from the snapshot"
    );
    println!(
        "{:>7} {:>8} {:>8} | {:>20} {:>8} {:>7} {:>8} {:>7} | {:>8} {:>8} | {:>7} {:>8} {:>8} | {:>20} {:>8} {:>8}",
        "events", "log", "graph", "replay s (min-max)", "us/event", "before", "replay", "after",
        "live hp", "VmHWM", "compact", "snapshot", "at rest", "snapshot s (min-max)", "live hp",
        "VmHWM"
    );
    for p in points {
        let o = stat(&p.open, "secs").unwrap();
        let s = stat(&p.open_snapshot, "secs").unwrap();
        println!(
            "{:>7} {:>6.1}Mi {:>6.1}Mi | {:>6.2} ({:>5.2}-{:>5.2}) {:>8.1} {:>7.2} {:>8.2} {:>7.2} | {:>6.1}Mi {:>6.1}Mi | {:>7.2} {:>6.1}Mi {:>6.1}Mi | {:>6.2} ({:>5.2}-{:>5.2}) {:>6.1}Mi {:>6.1}Mi",
            label(p.n as u64),
            mib(p.log_bytes as f64),
            mib(p.graph_bytes as f64),
            o.median,
            o.min,
            o.max,
            o.median * 1e6 / p.n as f64,
            med(&p.open, "before_replay_s"),
            med(&p.open, "replay_per_event_s") * 1e6,
            med(&p.open, "after_replay_s"),
            mib(med(&p.open, "live_heap")),
            mib(med(&p.open, "hwm")),
            p.compact["secs"],
            mib(p.compact["snapshot_bytes"]),
            mib(p.compact["at_rest_bytes"]),
            s.median,
            s.min,
            s.max,
            mib(med(&p.open_snapshot, "live_heap")),
            mib(med(&p.open_snapshot, "hwm")),
        );
    }
    println!(
        "(log, graph: events.sqlite and graph.kuzu on disk after the import; replay: \
         kuzu_sync::open_with, median of runs; before: opening SQLite and Kuzu, reading the \
         log and ordering it, until the engine's replay (s); replay: us per event; after: \
         what follows the replay (s); live hp, VmHWM: as above, after open; compact: \
         Replica::compact of the whole log (s, one run); snapshot: its state, uncompressed; \
         at rest: zstd in SQLite)"
    );
    for p in points {
        println!(
            "  {}: alone (one run each): reading the log from SQLite {:.2} s ({:.2} us/event), \
             causal order {:.2} s ({:.2} us/event)",
            label(p.n as u64),
            p.scan["scan_s"],
            p.scan["scan_s"] * 1e6 / p.n as f64,
            p.scan["order_s"],
            p.scan["order_s"] * 1e6 / p.n as f64,
        );
    }

    println!();
    println!("SYNC BYTES: a batch of k new ops, one-shot sync with a hub over loopback TCP");
    println!(
        "{:>6} | {:>9} {:>9} {:>9} {:>7} {:>9} | {:>9} {:>9} {:>6} | {:>9} {:>9} {:>9}",
        "ops",
        "sent raw",
        "sent",
        "received",
        "frames",
        "B/op",
        "events",
        "ev. zstd",
        "frames",
        "ev. B/op",
        "zstd B/op",
        "fixed"
    );
    for s in syncs {
        let total = (s.sent + s.received) as f64;
        println!(
            "{:>6} | {:>9} {:>9} {:>9} {:>7} {:>9.1} | {:>9} {:>9} {:>6} | {:>9.1} {:>9.1} {:>9.0}",
            label(s.ops as u64),
            s.sent_raw,
            s.sent,
            s.received,
            s.frames_sent,
            total / s.ops as f64,
            s.events_raw,
            s.events_wire,
            s.events_frames,
            s.events_raw as f64 / s.ops as f64,
            s.events_wire as f64 / s.ops as f64,
            total - s.events_wire as f64,
        );
    }
    println!(
        "(sent raw: the MessagePack the client sent, before compression; sent, received: \
         the client session's wire bytes, every frame both ways, headers \
         included; frames: frames sent; B/op: both ways per op; events: the Events frames \
         alone, MessagePack before compression, and as framed by the Encoder with zstd (the \
         session negotiates it); fixed: session bytes that are not Events frames, i.e. \
         handshake, vectors, EOSE and acks)"
    );
}

// ---------------------------------------------------------------------------------------
// The plots

type Series = (&'static str, Rgb, Vec<(f64, f64)>);
type Rgb = (u8, u8, u8);

const BLUE: Rgb = (31, 119, 180);
const RED: Rgb = (214, 39, 40);
const GREEN: Rgb = (44, 160, 44);
const GREY: Rgb = (127, 127, 127);

struct Panel {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    series: Vec<Series>,
    /// Series drawn dashed (reference lines).
    dashed: Vec<Series>,
    /// Where the legend goes (out of the data's way).
    legend: plotters::chart::SeriesLabelPosition,
}

/// A log-log plot of each panel, side by side.
fn draw(path: &Path, panels: &[Panel]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    let width = 520 * panels.len() as u32;
    let root = SVGBackend::new(path, (width, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, panel) in areas.iter().zip(panels) {
        let all = || {
            panel
                .series
                .iter()
                .chain(&panel.dashed)
                .flat_map(|s| s.2.iter())
                .filter(|p| p.1.is_finite() && p.1 > 0.0)
        };
        let (x_lo, x_hi) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y_lo, y_hi) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x_lo / 1.5..x_hi * 1.5).log_scale(),
                (y_lo / 1.6..y_hi * 1.6).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc(panel.x_desc)
            .y_desc(panel.y_desc)
            .light_line_style(WHITE)
            .y_labels(8)
            .x_label_formatter(&|x| label(x.round() as u64))
            .y_label_formatter(&|y| {
                if *y >= 100.0 {
                    format!("{:.0}", y)
                } else if *y >= 1.0 {
                    format!("{:.1}", y)
                } else {
                    format!("{:.3}", y)
                }
            })
            .draw()?;
        for (name, (r, g, b), points) in &panel.series {
            let color = RGBColor(*r, *g, *b);
            let points: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(4))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        for (name, (r, g, b), points) in &panel.dashed {
            let color = RGBColor(*r, *g, *b);
            // Dashes: short segments along the line, interpolated in log space.
            let mut segments = Vec::new();
            for w in points.windows(2) {
                let (a, b) = (w[0], w[1]);
                let steps = 24;
                for i in (0..steps).step_by(2) {
                    let at = |f: f64| {
                        (
                            (a.0.ln() + (b.0.ln() - a.0.ln()) * f).exp(),
                            (a.1.ln() + (b.1.ln() - a.1.ln()) * f).exp(),
                        )
                    };
                    segments.push(vec![
                        at(i as f64 / steps as f64),
                        at((i + 1) as f64 / steps as f64),
                    ]);
                }
            }
            chart
                .draw_series(
                    segments
                        .into_iter()
                        .map(|s| PathElement::new(s, color.stroke_width(1))),
                )?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(1))
                });
        }
        chart
            .configure_series_labels()
            .position(panel.legend.clone())
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The line through the first point with slope 1 (linear growth), for reference.
fn linear_from(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let Some(&(x0, y0)) = points.first() else {
        return Vec::new();
    };
    points.iter().map(|&(x, _)| (x, y0 * x / x0)).collect()
}

fn draw_all(docs: &Path, points: &[SizePoint], syncs: &[SyncPoint]) {
    let xs = |f: &dyn Fn(&SizePoint) -> f64| -> Vec<(f64, f64)> {
        points.iter().map(|p| (p.n as f64, f(p))).collect()
    };
    let import_time = xs(&|p| med(&p.import, "secs"));
    let import = [
        Panel {
            legend: plotters::chart::SeriesLabelPosition::UpperLeft,
            title: "import: time vs events".into(),
            x_desc: "events in the bundle (log scale)",
            y_desc: "seconds (median, log scale)",
            dashed: vec![(
                "linear from the first point",
                GREY,
                linear_from(&import_time),
            )],
            series: vec![
                ("bundle::import, Kuzu + SQLite", BLUE, import_time),
                (
                    "of which storing (SQLite + Kuzu)",
                    GREEN,
                    xs(&|p| med(&p.import, "store_s")),
                ),
            ],
        },
        Panel {
            legend: plotters::chart::SeriesLabelPosition::LowerRight,
            title: "import: memory vs events".into(),
            x_desc: "events in the bundle (log scale)",
            y_desc: "MiB (log scale)",
            dashed: vec![],
            series: vec![
                (
                    "peak resident set (VmHWM, Kuzu incl.)",
                    RED,
                    xs(&|p| mib(med(&p.import, "hwm"))),
                ),
                (
                    "peak Rust heap (not Kuzu's C++)",
                    BLUE,
                    xs(&|p| mib(med(&p.import, "peak_heap"))),
                ),
                (
                    "Rust heap left: engine state",
                    GREEN,
                    xs(&|p| mib(med(&p.import, "live_heap"))),
                ),
            ],
        },
    ];
    let path = docs.join("import.svg");
    draw(&path, &import).expect("import curve drawn");
    println!("curve written to {}", path.display());

    let replay = xs(&|p| med(&p.open, "secs"));
    let open = [Panel {
        legend: plotters::chart::SeriesLabelPosition::LowerRight,
        title: "open: time vs events in the log".into(),
        x_desc: "events in the log (log scale)",
        y_desc: "seconds (median, log scale)",
        dashed: vec![("linear from the first point", GREY, linear_from(&replay))],
        series: vec![
            ("open, replaying the log", BLUE, replay),
            (
                "open from the snapshot (compacted)",
                GREEN,
                xs(&|p| med(&p.open_snapshot, "secs")),
            ),
            ("compaction itself", RED, xs(&|p| p.compact["secs"])),
        ],
    }];
    let path = docs.join("open.svg");
    draw(&path, &open).expect("open curve drawn");
    println!("curve written to {}", path.display());

    let per_op = |f: &dyn Fn(&SyncPoint) -> f64| -> Vec<(f64, f64)> {
        syncs
            .iter()
            .map(|s| (s.ops as f64, f(s) / s.ops as f64))
            .collect()
    };
    let sync = [Panel {
        legend: plotters::chart::SeriesLabelPosition::UpperRight,
        title: "sync: bytes on the wire per op vs batch size".into(),
        x_desc: "ops in the batch (log scale)",
        y_desc: "bytes per op (log scale)",
        dashed: vec![],
        series: vec![
            (
                "whole session, both ways",
                BLUE,
                per_op(&|s| (s.sent + s.received) as f64),
            ),
            (
                "Events frames, zstd",
                GREEN,
                per_op(&|s| s.events_wire as f64),
            ),
            (
                "Events, MessagePack uncompressed",
                RED,
                per_op(&|s| s.events_raw as f64),
            ),
        ],
    }];
    let path = docs.join("sync_bytes.svg");
    draw(&path, &sync).expect("sync curve drawn");
    println!("curve written to {}", path.display());
}

fn main() {
    if let Ok(mode) = std::env::var("KS_CURVES_CHILD") {
        return child(&mode);
    }
    // `cargo bench` passes `--bench`; a name filter is not supported here.
    let started = Instant::now();
    println!("load average at start: {}", load_average());
    let work = tempfile::tempdir().unwrap();
    let mut syncs = Vec::new();
    for k in BATCHES {
        let s = sync_point(work.path(), k);
        println!("sync of {k} ops: {} bytes both ways", s.sent + s.received);
        syncs.push(s);
    }
    let mut points = Vec::new();
    for (n, runs) in sizes() {
        points.push(size_point(work.path(), n, runs));
        println!("  load average: {}", load_average());
    }
    print_tables(&points, &syncs);
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/curves");
    draw_all(&docs, &points, &syncs);
    println!(
        "load average at end: {}; whole run {:.0} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
}
