//! A randomized multi-replica simulator: random ops of every kind on several replicas,
//! random partial exchanges, duplicate deliveries and crashes, then a full exchange and a
//! check that every replica holds the same graph. Generic over the stores, so the same
//! scenarios run in memory and on real SQLite + Kuzu.

use std::collections::BTreeSet;

use crate::clock::{PeerId, VersionVector, WallClock};
use crate::event::{EdgeRef, Entity, NodeRef, Op};
use crate::ports::{EventStore, GraphDump, GraphStore};
use crate::replica::{Replica, ReplicaError};
use crate::schema::{Column, Multiplicity, NodeTableDef, Policy, RelTableDef, SchemaOp};
use crate::value::{DataType, Value};

/// SplitMix64: small, fast, deterministic; enough to drive scenarios from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A wall clock that reads a shared counter, so replicas have skewed but moving time.
#[derive(Debug, Clone)]
pub struct SkewedClock {
    pub base: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub skew_ms: i64,
}

impl WallClock for SkewedClock {
    fn now_ms(&self) -> u64 {
        let t = self.base.load(std::sync::atomic::Ordering::Relaxed) as i64 + self.skew_ms;
        t.max(0) as u64
    }
}

/// The schema every scenario starts from: users (with a counter), cities, and one rel table
/// of each multiplicity.
pub fn base_schema() -> Vec<SchemaOp> {
    let col = |name: &str, ty: DataType| Column {
        name: name.into(),
        ty,
        default: None,
    };
    vec![
        SchemaOp::CreateNodeTable(NodeTableDef {
            name: "User".into(),
            columns: vec![
                col("id", DataType::Int64),
                col("name", DataType::String),
                col("stock", DataType::Int64),
            ],
            primary_key: "id".into(),
        }),
        SchemaOp::CreateNodeTable(NodeTableDef {
            name: "City".into(),
            columns: vec![col("name", DataType::String), col("pop", DataType::Int64)],
            primary_key: "name".into(),
        }),
        SchemaOp::CreateRelTable(RelTableDef {
            name: "Follows".into(),
            connections: vec![("User".into(), "User".into())],
            columns: vec![col("since", DataType::Int64)],
            multiplicity: Multiplicity::ManyMany,
        }),
        SchemaOp::CreateRelTable(RelTableDef {
            name: "LivesIn".into(),
            connections: vec![("User".into(), "City".into())],
            columns: vec![],
            multiplicity: Multiplicity::ManyOne,
        }),
        SchemaOp::CreateRelTable(RelTableDef {
            name: "Marries".into(),
            connections: vec![("User".into(), "User".into())],
            columns: vec![col("note", DataType::String)],
            multiplicity: Multiplicity::OneOne,
        }),
        SchemaOp::SetPolicy {
            table: "User".into(),
            column: "stock".into(),
            policy: Policy::Counter,
        },
        SchemaOp::SetPolicy {
            table: "City".into(),
            column: "pop".into(),
            policy: Policy::OnlineWins,
        },
    ]
}

const NAMES: [&str; 4] = ["ann", "bob", "cy", "dee"];
const CITIES: [&str; 3] = ["Oslo", "Rome", "Lima"];

/// A random op for `replica`'s current state. It may be invalid locally (for example an
/// update of a node that does not exist there); the caller skips those.
pub fn random_op(rng: &mut Rng, keys: u64, schema_changes: bool) -> Op {
    let user = |rng: &mut Rng| NodeRef {
        table: "User".into(),
        key: Value::Int64(rng.below(keys) as i64),
    };
    let city = |rng: &mut Rng| NodeRef {
        table: "City".into(),
        key: Value::String(CITIES[rng.below(CITIES.len() as u64) as usize].into()),
    };
    let edge = |rng: &mut Rng| {
        let (table, from, to) = match rng.below(3) {
            0 => ("Follows", user(rng), user(rng)),
            1 => ("LivesIn", user(rng), city(rng)),
            _ => ("Marries", user(rng), user(rng)),
        };
        let key = if table == "Follows" && rng.chance(30) {
            format!("k{}", rng.below(2))
        } else {
            String::new()
        };
        EdgeRef {
            table: table.into(),
            from,
            to,
            key,
        }
    };
    if rng.chance(8) {
        // `online_wins`: concurrent sets of a city's population, and seals by any replica
        // (so the sequencer, too, is contested).
        return if rng.chance(50) {
            Op::Seal
        } else {
            Op::Update {
                entity: Entity::Node(city(rng)),
                prop: "pop".into(),
                value: Value::Int64(rng.below(1000) as i64),
            }
        };
    }
    match rng.below(if schema_changes { 100 } else { 96 }) {
        0..=17 => {
            let mut props = vec![("id".to_string(), Value::Int64(rng.below(keys) as i64))];
            if rng.chance(70) {
                props.push((
                    "name".into(),
                    Value::String(NAMES[rng.below(4) as usize].into()),
                ));
            }
            if rng.chance(30) {
                props.push(("stock".into(), Value::Int64(rng.below(100) as i64)));
            }
            Op::AddNode {
                table: "User".into(),
                props,
            }
        }
        18..=23 => Op::AddNode {
            table: "City".into(),
            props: vec![
                (
                    "name".into(),
                    Value::String(CITIES[rng.below(3) as usize].into()),
                ),
                ("pop".into(), Value::Int64(rng.below(1000) as i64)),
            ],
        },
        24..=35 => Op::Update {
            entity: Entity::Node(user(rng)),
            prop: "name".into(),
            value: if rng.chance(10) {
                Value::Null
            } else {
                Value::String(NAMES[rng.below(4) as usize].into())
            },
        },
        36..=47 => Op::Increment {
            entity: Entity::Node(user(rng)),
            prop: "stock".into(),
            delta: Value::Int64(rng.below(11) as i64 - 5),
        },
        48..=53 => Op::DeleteNode(user(rng)),
        54..=55 => Op::DeleteNode(city(rng)),
        56..=77 => {
            let e = edge(rng);
            let props = match e.table.as_str() {
                "Follows" => vec![("since".into(), Value::Int64(2000 + rng.below(30) as i64))],
                "Marries" if rng.chance(50) => vec![("note".into(), Value::String("x".into()))],
                _ => vec![],
            };
            Op::AddEdge { edge: e, props }
        }
        78..=85 => Op::DeleteEdge(edge(rng)),
        86..=91 => Op::Update {
            entity: Entity::Edge(EdgeRef {
                table: "Follows".into(),
                from: user(rng),
                to: user(rng),
                key: String::new(),
            }),
            prop: "since".into(),
            value: Value::Int64(1990 + rng.below(40) as i64),
        },
        92..=95 => Op::Update {
            entity: Entity::Node(user(rng)),
            prop: "stock".into(),
            value: Value::Int64(rng.below(50) as i64),
        },
        _ => {
            // Concurrent schema changes: the same column name, maybe different types.
            let ty = if rng.chance(50) {
                DataType::Int64
            } else {
                DataType::String
            };
            let name = format!("extra{}", rng.below(2));
            Op::Schema(SchemaOp::AddColumn {
                table: if rng.chance(50) { "User" } else { "Follows" }.into(),
                column: Column {
                    name,
                    ty,
                    default: None,
                },
            })
        }
    }
}

/// What a scenario does, step by step.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub replicas: usize,
    pub steps: usize,
    /// Node keys per table: small means many conflicts.
    pub keys: u64,
    pub schema_changes: bool,
    /// Percent of steps that crash (reopen) a replica.
    pub crash_percent: u64,
    /// Percent of steps that compact a replica's log. The floor is the meet of every
    /// replica's vector, except that the others may have forgotten the last replica (it
    /// then gets snapshots, as a peer behind a compacted log does).
    pub compact_percent: u64,
}

/// The stores of one simulated replica, and how to reopen them after a crash.
pub trait SimBackend {
    type Events: EventStore;
    type Graph: GraphStore;
    fn create(&mut self, index: usize) -> (Self::Events, Self::Graph);
    /// Simulates a crash: the stores are dropped without ceremony and reopened.
    fn reopen(
        &mut self,
        index: usize,
        events: Self::Events,
        graph: Self::Graph,
    ) -> (Self::Events, Self::Graph);
    /// Makes the next graph apply fail, as if the process died between appending to the log
    /// and applying to the graph. Backends that cannot do this do nothing.
    fn inject_apply_failure(&mut self, _graph: &mut Self::Graph) {}
}

/// Runs a scenario and returns the final dumps (one per replica) after full exchange.
/// Panics with the seed in the message if the replicas do not converge.
pub fn run<B: SimBackend>(backend: &mut B, sc: &Scenario) -> Result<Vec<GraphDump>, ReplicaError> {
    let mut rng = Rng::new(sc.seed);
    let base = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_700_000_000_000));
    let clock = |i: usize| -> Box<dyn WallClock + Send> {
        Box::new(SkewedClock {
            base: base.clone(),
            // Replica clocks disagree by up to a few seconds, in both directions.
            skew_ms: (i as i64 - 1) * 1_500,
        })
    };
    let mut replicas: Vec<Option<Replica<B::Events, B::Graph>>> = Vec::new();
    for i in 0..sc.replicas {
        let (ev, gr) = backend.create(i);
        let peer = PeerId::new(format!("r{i}")).expect("valid");
        replicas.push(Some(Replica::create(ev, gr, peer, clock(i))?));
    }
    // Replica 0 creates the schema; everybody receives it.
    replicas[0]
        .as_mut()
        .expect("open")
        .write(base_schema().into_iter().map(Op::Schema).collect())?;
    let schema_events = replicas[0]
        .as_ref()
        .expect("open")
        .events_since(&VersionVector::new())?;
    for r in replicas.iter_mut().skip(1) {
        r.as_mut().expect("open").import(schema_events.clone())?;
    }

    let last = sc.replicas - 1;
    for _ in 0..sc.steps {
        base.fetch_add(rng.below(700), std::sync::atomic::Ordering::Relaxed);
        let i = rng.below(sc.replicas as u64) as usize;
        let roll = rng.below(100);
        if roll < sc.compact_percent {
            let forget_last = i != last && rng.chance(50);
            let mut floor = replicas[i].as_ref().expect("open").version_vector().clone();
            for (k, r) in replicas.iter().enumerate() {
                if k != i && !(forget_last && k == last) {
                    floor = floor.meet(r.as_ref().expect("open").version_vector());
                }
            }
            let r = replicas[i].as_mut().expect("open");
            let before = r.engine().dump();
            r.compact_to(&floor)?;
            assert_eq!(
                r.engine().dump(),
                before,
                "seed {}: compaction changed replica {i}'s state",
                sc.seed
            );
        } else if roll < sc.compact_percent + sc.crash_percent {
            // Crash and reopen; half the time a write first dies between log and graph.
            if rng.chance(50) {
                let r = replicas[i].as_mut().expect("open");
                backend.inject_apply_failure(r.graph());
                let op = random_op(&mut rng, sc.keys, sc.schema_changes);
                let _ = r.write(vec![op]);
            }
            let r = replicas[i].take().expect("open");
            let (ev, gr) = r.into_parts();
            let (ev, gr) = backend.reopen(i, ev, gr);
            replicas[i] = Some(Replica::open(ev, gr, clock(i))?);
        } else if roll < 60 {
            let n = 1 + rng.below(3);
            let mut ops = Vec::new();
            for _ in 0..n {
                ops.push(random_op(&mut rng, sc.keys, sc.schema_changes));
            }
            // Each op separately, so an invalid one only drops itself.
            for op in ops {
                let _ = replicas[i].as_mut().expect("open").write(vec![op]);
            }
        } else {
            // Partial exchange from i to j: a causal prefix of what j lacks, shuffled, with
            // duplicates.
            let j = rng.below(sc.replicas as u64) as usize;
            if i == j {
                continue;
            }
            let jvv = replicas[j].as_ref().expect("open").version_vector().clone();
            let since = if rng.chance(20) {
                VersionVector::new() // re-deliver everything: duplicates
            } else {
                jvv
            };
            let since = deliver_snapshot(backend, &mut replicas, i, j, since, &mut rng, &clock)?;
            let mut events = replicas[i].as_ref().expect("open").events_since(&since)?;
            if rng.chance(50) && !events.is_empty() {
                let keep = 1 + rng.below(events.len() as u64) as usize;
                events.truncate(keep);
            }
            shuffle(&mut rng, &mut events);
            replicas[j].as_mut().expect("open").import(events)?;
        }
    }

    // Full exchange until everyone has everything.
    let mut all = VersionVector::new();
    for r in replicas.iter().flatten() {
        all.merge(r.version_vector());
    }
    for _round in 0..2 {
        for i in 0..sc.replicas {
            for j in 0..sc.replicas {
                if i == j {
                    continue;
                }
                let jvv = replicas[j].as_ref().expect("open").version_vector().clone();
                let since = deliver_snapshot(backend, &mut replicas, i, j, jvv, &mut rng, &clock)?;
                let mut events = replicas[i].as_ref().expect("open").events_since(&since)?;
                shuffle(&mut rng, &mut events);
                replicas[j].as_mut().expect("open").import(events)?;
            }
        }
    }
    let mut dumps = Vec::new();
    for (i, r) in replicas.iter_mut().enumerate() {
        let r = r.as_mut().expect("open");
        assert_eq!(
            r.version_vector(),
            &all,
            "seed {}: replica {i} did not receive every event",
            sc.seed
        );
        let stored = r.dump()?;
        let engine_view = r.engine().dump();
        assert_eq!(
            stored, engine_view,
            "seed {}: replica {i}: the graph store differs from the engine's view",
            sc.seed
        );
        dumps.push(stored);
    }
    for (i, d) in dumps.iter().enumerate().skip(1) {
        if d != &dumps[0] {
            panic!(
                "seed {}: replica {i} diverged from replica 0:\n{}",
                sc.seed,
                describe_diff(&dumps[0], d)
            );
        }
    }
    Ok(dumps)
}

/// As a session does: if replica `j` lacks events `i` has
/// compacted away, `i` sends a snapshot and `j` installs it. Sometimes the install dies
/// before the graph is rebuilt, and `j` is reopened. Returns what to send events after.
#[allow(clippy::type_complexity)]
fn deliver_snapshot<B: SimBackend>(
    backend: &mut B,
    replicas: &mut [Option<Replica<B::Events, B::Graph>>],
    i: usize,
    j: usize,
    mut since: VersionVector,
    rng: &mut Rng,
    clock: &dyn Fn(usize) -> Box<dyn WallClock + Send>,
) -> Result<VersionVector, ReplicaError> {
    let from = replicas[i].as_ref().expect("open");
    // A session knows the remote's real vector (`since` may ask for duplicates).
    let has = replicas[j].as_ref().expect("open").version_vector();
    if has.dominates(from.floor()) {
        return Ok(since);
    }
    let to_floor = replicas[j].as_ref().expect("open").floor().clone();
    let snap = from.snapshot_for(&to_floor)?;
    since.merge(&snap.version_vector);
    let r = replicas[j].as_mut().expect("open");
    if rng.chance(25) {
        backend.inject_apply_failure(r.graph());
        if r.install_snapshot(&snap).is_ok() {
            return Ok(since);
        }
        let r = replicas[j].take().expect("open");
        let (ev, gr) = r.into_parts();
        let (ev, gr) = backend.reopen(j, ev, gr);
        replicas[j] = Some(Replica::open(ev, gr, clock(j))?);
    } else {
        r.install_snapshot(&snap)?;
    }
    Ok(since)
}

fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// A readable description of where two dumps differ.
pub fn describe_diff(a: &GraphDump, b: &GraphDump) -> String {
    let mut out = String::new();
    let tables: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for t in tables {
        let ra = a.get(t).cloned().unwrap_or_default();
        let rb = b.get(t).cloned().unwrap_or_default();
        if ra != rb {
            let sa: BTreeSet<_> = ra.iter().collect();
            let sb: BTreeSet<_> = rb.iter().collect();
            for r in sa.difference(&sb) {
                out.push_str(&format!("  {t}: only in first:  {r:?}\n"));
            }
            for r in sb.difference(&sa) {
                out.push_str(&format!("  {t}: only in second: {r:?}\n"));
            }
        }
    }
    out
}

/// In-memory stores for fast scenarios. A crash keeps the log and the graph as they were,
/// and sometimes makes the next graph apply fail (a crash between log append and apply).
#[derive(Debug, Default)]
pub struct MemoryBackend;

impl SimBackend for MemoryBackend {
    type Events = crate::memory_log::MemoryEventStore;
    type Graph = crate::memory::MemoryGraphStore;
    fn create(&mut self, _index: usize) -> (Self::Events, Self::Graph) {
        Default::default()
    }
    fn reopen(
        &mut self,
        _index: usize,
        events: Self::Events,
        mut graph: Self::Graph,
    ) -> (Self::Events, Self::Graph) {
        // An injected failure dies with the process it was meant for.
        graph.fail_next_apply = false;
        (events, graph)
    }
    fn inject_apply_failure(&mut self, graph: &mut Self::Graph) {
        graph.fail_next_apply = true;
    }
}
