//! A randomized multi-replica simulator: random ops of every kind on several replicas,
//! random partial exchanges, duplicate deliveries and crashes, then a full exchange and a
//! check that every replica holds the same graph. Generic over the stores, so the same
//! scenarios run in memory and on real SQLite + Kuzu.
//!
//! Nothing passes silently: a run counts what it did ([`SimStats`]), an invalid random op
//! may be refused by validation, and any other error fails the run unless an injected
//! graph-store failure ([`FailingGraph`]) caused it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::change::{ApplyBatch, GraphChange};
use crate::clock::{PeerId, VersionVector, WallClock};
use crate::error::EngineError;
use crate::event::{EdgeRef, Entity, Event, NodeRef, Op};
use crate::ports::{EventStore, GraphDump, GraphStore, StoreError};
use crate::replica::{Replica, ReplicaError};
use crate::schema::{Column, Multiplicity, NodeTableDef, Policy, RelTableDef, Schema, SchemaOp};
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
    /// Percent of local writes and of imports before which the replica's graph store is set
    /// to fail (`faults_in_a_row` applies in a row). Ignored by backends without a
    /// [`GraphProbe`].
    pub fault_percent: u64,
    /// How many graph applies fail in a row once a fault is armed: 1 fails the write or
    /// import itself; 2 also fails the recovery that runs right after it; 3 also the next
    /// call's attempt to recover. A quarter of the faults strike after the store committed
    /// (an error after COMMIT), the rest before it applied anything. 0 arms none (crashes
    /// and snapshot installs still inject their own, as before).
    pub faults_in_a_row: u32,
}

/// The message of every injected graph-store failure (errors that wrap it repeat it).
pub const INJECTED_FAILURE: &str = "injected graph-store failure";

/// The error an injected failure returns, as the source of a [`StoreError::Backend`].
#[derive(Debug, Clone, Copy)]
pub struct InjectedFailure;

impl std::fmt::Display for InjectedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(INJECTED_FAILURE)
    }
}

impl std::error::Error for InjectedFailure {}

/// Where an injected failure strikes an apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailPoint {
    /// Before the batch reaches the store: nothing is applied (the process died between
    /// appending to the log and applying to the graph).
    #[default]
    Before,
    /// After the store applied and committed the batch with its watermark: the caller sees
    /// an error although the batch is stored ("maybe applied").
    After,
}

/// The failure switch of a [`FailingGraph`], and what it counted.
#[derive(Clone, Debug, Default)]
pub struct GraphProbe {
    /// How many of the next applies fail, one after another.
    pub pending: u32,
    pub at: FailPoint,
    /// Failures that struck.
    pub fired: u64,
    /// Batches the inner store applied (a failure after COMMIT included).
    pub batches: u64,
    /// New nodes of one table, new edges of one rel table: a batch with at least this many
    /// counts as bulk (on Kuzu, the batches that take the COPY path when these are the
    /// store's COPY thresholds). None: nothing counts as bulk.
    pub bulk_thresholds: Option<(usize, usize)>,
    pub bulk_batches: u64,
}

impl GraphProbe {
    /// Makes the next `n` applies fail, at `at`.
    pub fn fail_next(&mut self, n: u32, at: FailPoint) {
        self.pending = n;
        self.at = at;
    }
}

/// A [`GraphStore`] that fails on demand, before or after delegating to `inner`, and counts
/// the batches it passes on. Reads (`watermark`, `dump`) never fail.
#[derive(Debug, Default)]
pub struct FailingGraph<G> {
    pub inner: G,
    pub probe: GraphProbe,
}

impl<G> FailingGraph<G> {
    pub fn new(inner: G) -> Self {
        FailingGraph {
            inner,
            probe: GraphProbe::default(),
        }
    }

    /// Counts batches with at least `nodes` new nodes of one table, or `edges` new edges of
    /// one rel table, as bulk.
    pub fn with_bulk_thresholds(inner: G, nodes: usize, edges: usize) -> Self {
        let mut g = Self::new(inner);
        g.probe.bulk_thresholds = Some((nodes, edges));
        g
    }

    /// Makes the next `n` applies fail, at `at`.
    pub fn fail_next(&mut self, n: u32, at: FailPoint) {
        self.probe.fail_next(n, at);
    }
}

/// Whether `batch` holds at least `nodes` new nodes of one table or `edges` new edges of one
/// rel table (between the same node tables), counted as the Kuzu store groups them.
fn is_bulk(batch: &ApplyBatch, (nodes, edges): (usize, usize)) -> bool {
    let mut n: BTreeMap<String, usize> = BTreeMap::new();
    let mut e: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for c in &batch.changes {
        match c {
            GraphChange::UpsertNode {
                node, is_new: true, ..
            } if !batch.may_exist => *n.entry(node.table.to_ascii_lowercase()).or_default() += 1,
            GraphChange::UpsertEdge {
                edge, is_new: true, ..
            } => {
                let key = (
                    edge.table.to_ascii_lowercase(),
                    edge.from.table.to_ascii_lowercase(),
                    edge.to.table.to_ascii_lowercase(),
                );
                *e.entry(key).or_default() += 1;
            }
            _ => {}
        }
    }
    n.values().any(|&c| c >= nodes) || e.values().any(|&c| c >= edges)
}

impl<G: GraphStore> GraphStore for FailingGraph<G> {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        self.inner.watermark()
    }

    fn apply(&mut self, batch: &ApplyBatch, schema: &Schema) -> Result<(), StoreError> {
        let fail = self.probe.pending > 0;
        if fail {
            self.probe.pending -= 1;
            self.probe.fired += 1;
            if self.probe.at == FailPoint::Before {
                return Err(StoreError::backend("graph apply", InjectedFailure));
            }
        }
        self.inner.apply(batch, schema)?;
        self.probe.batches += 1;
        if self
            .probe
            .bulk_thresholds
            .is_some_and(|t| is_bulk(batch, t))
        {
            self.probe.bulk_batches += 1;
        }
        if fail {
            return Err(StoreError::backend("graph apply", InjectedFailure));
        }
        Ok(())
    }

    fn dump(&mut self, schema: &Schema) -> Result<GraphDump, StoreError> {
        self.inner.dump(schema)
    }
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
    /// The failure switch and counters of a replica's graph store (see [`FailingGraph`]).
    /// Backends without one return None: then no failure is injected.
    fn probe<'g>(&self, _graph: &'g mut Self::Graph) -> Option<&'g mut GraphProbe> {
        None
    }
}

/// What a run did. Sums over runs with [`SimStats::add`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub runs: u64,
    /// Local writes tried (one op each, retries and the closing writes included; the
    /// schema written at the start not).
    pub ops_attempted: u64,
    pub writes_ok: u64,
    /// Writes refused by validation (the random op was invalid there), by error kind.
    pub refused: BTreeMap<String, u64>,
    /// Writes that failed on an injected failure (their event may still have been logged).
    pub writes_failed: u64,
    /// Events created by writes, the schema's included (whatever the write returned).
    pub events_written: u64,
    pub imports_ok: u64,
    /// Imports that failed on an injected failure.
    pub imports_failed: u64,
    /// Events handed to successful imports, duplicates included.
    pub events_delivered: u64,
    /// Of those, events applied (new to the receiver).
    pub events_applied: u64,
    pub duplicates: u64,
    /// How much the receivers' vectors grew, by imports and snapshot installs (failed ones
    /// included: their events were logged). Equals (replicas - 1) × every event written.
    pub events_received: u64,
    pub snapshots_installed: u64,
    pub installs_failed: u64,
    pub crashes: u64,
    pub compactions: u64,
    /// Events removed from logs by compaction.
    pub events_compacted: u64,
    /// Failures set to strike, and those that struck (the rest died with a crash or were
    /// disarmed before the final exchange).
    pub failures_armed: u64,
    pub failures_fired: u64,
    /// Errors the replicas returned because of injected failures.
    pub expected_errors: u64,
    /// Calls retried after such an error.
    pub retries: u64,
    /// Times a replica that had failed was checked, at its next success, to hold in its
    /// graph exactly its engine's view.
    pub recovered_checks: u64,
    /// Batches the graph stores applied, and of those the bulk ones (see [`GraphProbe`]).
    pub graph_batches: u64,
    pub bulk_batches: u64,
}

impl SimStats {
    /// Writes refused by validation, of every kind.
    pub fn refusals(&self) -> u64 {
        self.refused.values().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &SimStats) {
        self.runs += other.runs;
        self.ops_attempted += other.ops_attempted;
        self.writes_ok += other.writes_ok;
        for (k, n) in &other.refused {
            *self.refused.entry(k.clone()).or_default() += n;
        }
        self.writes_failed += other.writes_failed;
        self.events_written += other.events_written;
        self.imports_ok += other.imports_ok;
        self.imports_failed += other.imports_failed;
        self.events_delivered += other.events_delivered;
        self.events_applied += other.events_applied;
        self.duplicates += other.duplicates;
        self.events_received += other.events_received;
        self.snapshots_installed += other.snapshots_installed;
        self.installs_failed += other.installs_failed;
        self.crashes += other.crashes;
        self.compactions += other.compactions;
        self.events_compacted += other.events_compacted;
        self.failures_armed += other.failures_armed;
        self.failures_fired += other.failures_fired;
        self.expected_errors += other.expected_errors;
        self.retries += other.retries;
        self.recovered_checks += other.recovered_checks;
        self.graph_batches += other.graph_batches;
        self.bulk_batches += other.bulk_batches;
    }
}

impl std::fmt::Display for SimStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "runs {}; writes: {} attempted, {} ok, {} refused {:?}, {} failed (injected); \
             {} events written",
            self.runs,
            self.ops_attempted,
            self.writes_ok,
            self.refusals(),
            self.refused,
            self.writes_failed,
            self.events_written
        )?;
        writeln!(
            f,
            "imports: {} ok, {} failed (injected); events {} delivered, {} applied, {} \
             duplicates, {} received; snapshots {} installed, {} failed",
            self.imports_ok,
            self.imports_failed,
            self.events_delivered,
            self.events_applied,
            self.duplicates,
            self.events_received,
            self.snapshots_installed,
            self.installs_failed
        )?;
        write!(
            f,
            "crashes {}; compactions {} ({} events removed); failures {} armed, {} fired, {} \
             expected errors, {} retries, {} recovered replicas checked; graph batches {} ({} \
             bulk)",
            self.crashes,
            self.compactions,
            self.events_compacted,
            self.failures_armed,
            self.failures_fired,
            self.expected_errors,
            self.retries,
            self.recovered_checks,
            self.graph_batches,
            self.bulk_batches
        )
    }
}

/// The outcome of a run: the final dumps (one per replica, all equal) and what was done.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub dumps: Vec<GraphDump>,
    pub stats: SimStats,
}

/// How one local write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Refused,
    /// Failed on an injected failure.
    Failed,
}

/// The name of an error's variant (`NoSuchNode`, …).
fn kind(e: &EngineError) -> String {
    format!("{e:?}")
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .next()
        .unwrap_or_default()
        .to_string()
}

type Slot<B> = Option<Replica<<B as SimBackend>::Events, <B as SimBackend>::Graph>>;

/// A running scenario.
struct Sim<'a, B: SimBackend> {
    backend: &'a mut B,
    sc: &'a Scenario,
    rng: Rng,
    base: Arc<AtomicU64>,
    replicas: Vec<Slot<B>>,
    /// Per replica: an injected failure struck it since its last success. Only then is an
    /// error from it expected (if it names the injected failure).
    affected: Vec<bool>,
    stats: SimStats,
}

impl<B: SimBackend> Sim<'_, B> {
    fn clock(&self, i: usize) -> Box<dyn WallClock + Send> {
        Box::new(SkewedClock {
            base: self.base.clone(),
            // Replica clocks disagree by up to a few seconds, in both directions.
            skew_ms: (i as i64 - 1) * 1_500,
        })
    }

    fn r(&mut self, i: usize) -> &mut Replica<B::Events, B::Graph> {
        self.replicas[i].as_mut().expect("open")
    }

    fn vv(&self, i: usize) -> &VersionVector {
        self.replicas[i].as_ref().expect("open").version_vector()
    }

    /// Collects what replica `i`'s graph store counted; a failure that struck marks it.
    fn drain(&mut self, i: usize) {
        let graph = self.replicas[i].as_mut().expect("open").graph();
        if let Some(p) = self.backend.probe(graph) {
            if p.fired > 0 {
                self.affected[i] = true;
            }
            self.stats.failures_fired += std::mem::take(&mut p.fired);
            self.stats.graph_batches += std::mem::take(&mut p.batches);
            self.stats.bulk_batches += std::mem::take(&mut p.bulk_batches);
        }
    }

    /// Makes replica `i`'s next `n` graph applies fail.
    fn arm(&mut self, i: usize, n: u32) {
        if n == 0 {
            return;
        }
        let at = if self.rng.chance(25) {
            FailPoint::After
        } else {
            FailPoint::Before
        };
        let graph = self.replicas[i].as_mut().expect("open").graph();
        if let Some(p) = self.backend.probe(graph) {
            p.fail_next(n, at);
            self.stats.failures_armed += u64::from(n);
        }
    }

    fn disarm(&mut self, i: usize) {
        let graph = self.replicas[i].as_mut().expect("open").graph();
        if let Some(p) = self.backend.probe(graph) {
            p.pending = 0;
        }
    }

    /// An error from replica `i` is expected only if an injected failure struck it since
    /// its last success and the error names that failure; any other error fails the run.
    fn expect_injected(&mut self, i: usize, what: &str, e: &ReplicaError) {
        if self.affected[i] && e.to_string().contains(INJECTED_FAILURE) {
            self.stats.expected_errors += 1;
        } else {
            panic!(
                "seed {}: replica {i}: {what} failed unexpectedly: {e}",
                self.sc.seed
            );
        }
    }

    /// After a success on replica `i`: if injected failures struck it before, its graph
    /// must now hold exactly its engine's view, no batch missing.
    fn succeeded(&mut self, i: usize, what: &str) {
        if !std::mem::take(&mut self.affected[i]) {
            return;
        }
        let seed = self.sc.seed;
        let r = self.r(i);
        let stored = r
            .dump()
            .unwrap_or_else(|e| panic!("seed {seed}: replica {i}: dump: {e}"));
        let view = r.engine().dump();
        assert!(
            stored == view,
            "seed {seed}: replica {i}: after injected graph-store failures, a successful \
             {what} left the graph store different from the engine's view (first: engine, \
             second: graph):\n{}",
            describe_diff(&view, &stored)
        );
        self.stats.recovered_checks += 1;
    }

    /// One local write of one op.
    fn write(&mut self, i: usize, op: Op) -> Outcome {
        self.stats.ops_attempted += 1;
        let peer = self.r(i).peer().clone();
        let before = self.vv(i).get(&peer);
        let res = self.r(i).write(vec![op]);
        self.drain(i);
        self.stats.events_written += self.vv(i).get(&peer).saturating_sub(before);
        match res {
            Ok(_) => {
                self.stats.writes_ok += 1;
                self.succeeded(i, "write");
                Outcome::Ok
            }
            Err(ReplicaError::Op { source, .. }) => {
                *self.stats.refused.entry(kind(&source)).or_default() += 1;
                Outcome::Refused
            }
            Err(e) => {
                self.expect_injected(i, "write", &e);
                self.stats.writes_failed += 1;
                Outcome::Failed
            }
        }
    }

    /// A write of a random op, sometimes with the graph store set to fail first.
    fn write_step(&mut self, i: usize, op: Op) {
        if self.rng.chance(self.sc.fault_percent) {
            self.arm(i, self.sc.faults_in_a_row);
        }
        if self.write(i, op.clone()) == Outcome::Failed {
            self.follow_up(i, |s| s.write(i, op.clone()) != Outcome::Failed);
        }
    }

    /// Imports `events` into replica `j`; whether it succeeded.
    fn import(&mut self, j: usize, events: &[Event]) -> bool {
        let before = self.vv(j).total();
        let res = self.r(j).import(events.to_vec());
        self.drain(j);
        self.stats.events_received += self.vv(j).total().saturating_sub(before);
        match res {
            Ok(out) => {
                self.stats.imports_ok += 1;
                self.stats.events_delivered += out.received as u64;
                self.stats.events_applied += out.applied as u64;
                self.stats.duplicates += out.duplicates as u64;
                self.succeeded(j, "import");
                true
            }
            Err(e) => {
                self.expect_injected(j, "import", &e);
                self.stats.imports_failed += 1;
                false
            }
        }
    }

    /// After a call failed on an injected failure: retry it until it succeeds, or crash the
    /// replica, or carry on (its next calls meet whatever the failure left).
    fn follow_up(&mut self, i: usize, mut retry: impl FnMut(&mut Self) -> bool) {
        match self.rng.below(3) {
            0 => {
                for attempt in 1.. {
                    assert!(
                        attempt <= 5,
                        "seed {}: replica {i}: still failing after 5 retries",
                        self.sc.seed
                    );
                    self.stats.retries += 1;
                    if retry(self) {
                        break;
                    }
                }
            }
            1 => self.crash(i),
            _ => {}
        }
    }

    /// Crashes replica `i` and reopens it: pending failures die with the process. Opening
    /// recovers, and loses no event.
    fn crash(&mut self, i: usize) {
        self.drain(i);
        self.disarm(i);
        let before = self.vv(i).clone();
        let (ev, gr) = self.replicas[i].take().expect("open").into_parts();
        let (ev, gr) = self.backend.reopen(i, ev, gr);
        let clock = self.clock(i);
        let seed = self.sc.seed;
        let r = Replica::open(ev, gr, clock)
            .unwrap_or_else(|e| panic!("seed {seed}: replica {i}: reopening failed: {e}"));
        self.replicas[i] = Some(r);
        self.stats.crashes += 1;
        assert_eq!(
            self.vv(i),
            &before,
            "seed {seed}: replica {i}: the reopened replica holds other events"
        );
        self.drain(i);
        self.succeeded(i, "reopen");
    }

    /// Compacts replica `i`'s log up to what every replica holds (sometimes forgetting the
    /// last replica); the engine's state must not change.
    fn compact(&mut self, i: usize) {
        let last = self.sc.replicas - 1;
        let forget_last = i != last && self.rng.chance(50);
        let mut floor = self.vv(i).clone();
        for k in 0..self.sc.replicas {
            if k != i && !(forget_last && k == last) {
                floor = floor.meet(self.vv(k));
            }
        }
        let before = self.r(i).engine().dump();
        let res = self.r(i).compact_to(&floor);
        self.drain(i);
        match res {
            Ok(report) => {
                self.stats.compactions += 1;
                self.stats.events_compacted += report.removed_events;
                // The graph is not touched: whether it lacks a batch shows at the next
                // apply that succeeds.
                assert!(
                    self.r(i).engine().dump() == before,
                    "seed {}: compaction changed replica {i}'s state",
                    self.sc.seed
                );
            }
            Err(e) => self.expect_injected(i, "compaction", &e),
        }
    }

    /// Sends replica `j` what replica `i` holds beyond `since`: a snapshot first if `j`
    /// lacks events `i` compacted away, then the events, shuffled. `partial` sends a causal
    /// prefix half the time, and sometimes sets `j`'s graph store to fail first.
    fn exchange(&mut self, i: usize, j: usize, since: VersionVector, partial: bool) {
        let since = self.deliver_snapshot(i, j, since);
        let seed = self.sc.seed;
        let mut events = self
            .r(i)
            .events_since(&since)
            .unwrap_or_else(|e| panic!("seed {seed}: replica {i}: reading the log: {e}"));
        if partial && self.rng.chance(50) && !events.is_empty() {
            let keep = 1 + self.rng.below(events.len() as u64) as usize;
            events.truncate(keep);
        }
        shuffle(&mut self.rng, &mut events);
        if partial && self.rng.chance(self.sc.fault_percent) {
            self.arm(j, self.sc.faults_in_a_row);
        }
        if !self.import(j, &events) {
            self.follow_up(j, |s| s.import(j, &events));
        }
    }

    /// As a session does: if replica `j` lacks events `i` has compacted away, `i` sends a
    /// snapshot and `j` installs it. Sometimes the install dies before the graph is
    /// rebuilt; `j` then retries or is reopened, until it holds the snapshot. Returns what
    /// to send events after.
    fn deliver_snapshot(&mut self, i: usize, j: usize, mut since: VersionVector) -> VersionVector {
        let from_floor = self.replicas[i].as_ref().expect("open").floor().clone();
        // A session knows the remote's real vector (`since` may ask for duplicates).
        if self.vv(j).dominates(&from_floor) {
            return since;
        }
        let to_floor = self.r(j).floor().clone();
        let seed = self.sc.seed;
        let snap = self
            .r(i)
            .snapshot_for(&to_floor)
            .unwrap_or_else(|e| panic!("seed {seed}: replica {i}: snapshot: {e}"));
        since.merge(&snap.version_vector);
        if self.rng.chance(25) {
            self.arm(j, 1);
        }
        for attempt in 1.. {
            assert!(
                attempt <= 6,
                "seed {seed}: replica {j}: the snapshot install kept failing"
            );
            if self.install(j, &snap) {
                break;
            }
            if self.rng.chance(50) {
                self.crash(j);
                if self.vv(j).dominates(&snap.version_vector) {
                    break;
                }
            } else {
                self.stats.retries += 1;
            }
        }
        since
    }

    fn install(&mut self, j: usize, snap: &crate::snapshot::Snapshot) -> bool {
        let before = self.vv(j).total();
        let res = self.r(j).install_snapshot(snap);
        self.drain(j);
        self.stats.events_received += self.vv(j).total().saturating_sub(before);
        match res {
            Ok(_) => {
                self.stats.snapshots_installed += 1;
                self.succeeded(j, "snapshot install");
                true
            }
            Err(e) => {
                self.expect_injected(j, "snapshot install", &e);
                self.stats.installs_failed += 1;
                false
            }
        }
    }
}

/// Runs a scenario: random writes, partial exchanges, crashes, compactions and injected
/// graph-store failures, then one valid write per replica and a full exchange. Returns the
/// final dumps (one per replica) and statistics.
///
/// Panics, naming the seed, if the replicas do not converge, if a graph store differs from
/// its engine's view (at the end, or when a replica succeeds again after injected
/// failures), if a crash loses events, or on any error that is neither the refusal of an
/// invalid random op nor caused by an injected failure.
pub fn run<B: SimBackend>(backend: &mut B, sc: &Scenario) -> Result<SimReport, ReplicaError> {
    let mut sim = Sim {
        backend,
        sc,
        rng: Rng::new(sc.seed),
        base: Arc::new(AtomicU64::new(1_700_000_000_000)),
        replicas: Vec::new(),
        affected: vec![false; sc.replicas],
        stats: SimStats {
            runs: 1,
            ..SimStats::default()
        },
    };
    for i in 0..sc.replicas {
        let (ev, gr) = sim.backend.create(i);
        let peer = PeerId::new(format!("r{i}")).expect("valid");
        let clock = sim.clock(i);
        sim.replicas
            .push(Some(Replica::create(ev, gr, peer, clock)?));
    }
    // Replica 0 creates the schema; everybody receives it.
    let ids = sim
        .r(0)
        .write(base_schema().into_iter().map(Op::Schema).collect())?;
    sim.stats.events_written += ids.len() as u64;
    sim.drain(0);
    let schema_events = sim.r(0).events_since(&VersionVector::new())?;
    for j in 1..sc.replicas {
        assert!(sim.import(j, &schema_events));
    }

    for _ in 0..sc.steps {
        sim.base.fetch_add(sim.rng.below(700), Ordering::Relaxed);
        let i = sim.rng.below(sc.replicas as u64) as usize;
        let roll = sim.rng.below(100);
        if roll < sc.compact_percent {
            sim.compact(i);
        } else if roll < sc.compact_percent + sc.crash_percent {
            // Crash and reopen; half the time a write first dies between log and graph (its
            // apply fails, and so does the recovery right after it).
            if sim.rng.chance(50) {
                sim.arm(i, 2);
                let op = random_op(&mut sim.rng, sc.keys, sc.schema_changes);
                sim.write(i, op);
            }
            sim.crash(i);
        } else if roll < 60 {
            let n = 1 + sim.rng.below(3);
            let mut ops = Vec::new();
            for _ in 0..n {
                ops.push(random_op(&mut sim.rng, sc.keys, sc.schema_changes));
            }
            // Each op separately, so an invalid one only drops itself.
            for op in ops {
                sim.write_step(i, op);
            }
        } else {
            // Partial exchange from i to j: a causal prefix of what j lacks, shuffled, with
            // duplicates.
            let j = sim.rng.below(sc.replicas as u64) as usize;
            if i == j {
                continue;
            }
            let since = if sim.rng.chance(20) {
                VersionVector::new() // re-deliver everything: duplicates
            } else {
                sim.vv(j).clone()
            };
            sim.exchange(i, j, since, true);
        }
    }

    // No more faults armed by the steps (a replica may still wait for its recovery). Every
    // replica writes once more, with an op that is always valid, so that every run has
    // writes to exchange.
    for i in 0..sc.replicas {
        sim.disarm(i);
        let op = Op::AddNode {
            table: "User".into(),
            props: vec![
                ("id".into(), Value::Int64(sim.rng.below(sc.keys) as i64)),
                (
                    "name".into(),
                    Value::String(NAMES[sim.rng.below(4) as usize].into()),
                ),
            ],
        };
        let outcome = sim.write(i, op);
        assert_eq!(
            outcome,
            Outcome::Ok,
            "seed {}: replica {i}: the closing write failed",
            sc.seed
        );
    }

    // Full exchange until everyone has everything.
    let mut all = VersionVector::new();
    for r in sim.replicas.iter().flatten() {
        all.merge(r.version_vector());
    }
    for _round in 0..2 {
        for i in 0..sc.replicas {
            for j in 0..sc.replicas {
                if i != j {
                    let jvv = sim.vv(j).clone();
                    sim.exchange(i, j, jvv, false);
                }
            }
        }
    }
    let mut dumps = Vec::new();
    for i in 0..sc.replicas {
        sim.drain(i);
        let r = sim.r(i);
        assert_eq!(
            r.version_vector(),
            &all,
            "seed {}: replica {i} did not receive every event",
            sc.seed
        );
        let stored = r.dump()?;
        let engine_view = r.engine().dump();
        assert!(
            stored == engine_view,
            "seed {}: replica {i}: the graph store differs from the engine's view (first: \
             engine, second: graph):\n{}",
            sc.seed,
            describe_diff(&engine_view, &stored)
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
    // The counts add up: every event written reached every other replica once.
    let stats = sim.stats;
    assert_eq!(
        stats.events_written,
        all.total(),
        "seed {}: events counted as written",
        sc.seed
    );
    assert_eq!(
        stats.events_received,
        (sc.replicas as u64 - 1) * all.total(),
        "seed {}: events counted as received",
        sc.seed
    );
    assert_eq!(
        stats.ops_attempted,
        stats.writes_ok + stats.refusals() + stats.writes_failed,
        "seed {}: writes counted",
        sc.seed
    );
    Ok(SimReport { dumps, stats })
}

/// What every run must show, so that it cannot pass vacuously: every replica's closing
/// write succeeded and reached the others (as did the schema), a share of all writes
/// succeeded (over many runs about 44 %, in 4,000 never under 12 %), the graph stores
/// applied batches, and every injected failure that struck was answered by an error
/// (which the run accepted only as caused by it). For callers of [`run`].
pub fn assert_did_work(sc: &Scenario, st: &SimStats) {
    let r = sc.replicas as u64;
    let ctx = || format!("{sc:?}\n{st}");
    assert!(st.writes_ok >= r, "too few writes succeeded: {}", ctx());
    assert!(
        st.writes_ok * 100 >= st.ops_attempted * 5,
        "under 5 % of the writes succeeded: {}",
        ctx()
    );
    let schema = base_schema().len() as u64;
    assert!(
        st.events_received >= (r - 1) * (schema + r),
        "too few events received: {}",
        ctx()
    );
    assert!(st.graph_batches >= r, "too few graph batches: {}", ctx());
    assert!(
        st.expected_errors <= st.failures_fired
            && (st.failures_fired == 0) == (st.expected_errors == 0),
        "injected failures and the errors they caused do not match: {}",
        ctx()
    );
}

/// The scenario of a graph store that fails `in_a_row` applies in a row at `at`, on a
/// writer and then on a receiver: a write (an import) whose apply fails, the recovery
/// right after it failing too (2), and the next call's attempt to recover (3); then the
/// store works again. Every error meanwhile must name the injected failure, and once a
/// call succeeds the graph must hold exactly the engine's view, no batch missing, also
/// after a reopen; the two replicas then converge.
pub fn check_repeated_apply_failures<B: SimBackend>(backend: &mut B, in_a_row: u32, at: FailPoint) {
    let fixed = |ms: u64| -> Box<dyn WallClock + Send> { Box::new(crate::clock::FixedClock(ms)) };
    let user = |id: i64, name: &str| Op::AddNode {
        table: "User".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("name".into(), Value::String(name.into())),
        ],
    };
    let arm = |backend: &mut B, graph: &mut B::Graph| {
        backend
            .probe(graph)
            .expect("this check needs a backend that injects failures")
            .fail_next(in_a_row, at);
    };
    let ctx = format!("{in_a_row} failures in a row, {at:?}");
    let same = |r: &mut Replica<B::Events, B::Graph>, what: &str| {
        let stored = r.dump().expect("dump");
        let view = r.engine().dump();
        assert!(
            stored == view,
            "{ctx}: {what}: the graph store differs from the engine's view (first: engine, \
             second: graph):\n{}",
            describe_diff(&view, &stored)
        );
        stored
    };
    // Calls until one succeeds: the ones before must fail on the injected failure.
    fn until_ok<T>(ctx: &str, what: &str, mut call: impl FnMut() -> Result<T, ReplicaError>) {
        for attempt in 1..=4 {
            match call() {
                Ok(_) => return,
                Err(e) if e.to_string().contains(INJECTED_FAILURE) && attempt < 4 => {}
                Err(e) => panic!("{ctx}: {what}, attempt {attempt}: {e}"),
            }
        }
    }

    let (ev, gr) = backend.create(0);
    let mut a =
        Replica::create(ev, gr, PeerId::new("a").expect("valid"), fixed(1_000)).expect("create a");
    let (ev, gr) = backend.create(1);
    let mut b =
        Replica::create(ev, gr, PeerId::new("b").expect("valid"), fixed(2_000)).expect("create b");
    a.write(base_schema().into_iter().map(Op::Schema).collect())
        .expect("schema");
    a.write(vec![user(1, "ann")]).expect("write");
    b.import(a.events_since(&VersionVector::new()).expect("log"))
        .expect("import");

    // The writer.
    arm(backend, a.graph());
    let first = a.write(vec![user(2, "bob")]);
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.to_string().contains(INJECTED_FAILURE)),
        "{ctx}: the write whose apply failed: {first:?}"
    );
    until_ok(&ctx, "the next write", || a.write(vec![user(3, "cy")]));
    let want = same(&mut a, "writer, after the store works again");
    let (ev, gr) = a.into_parts();
    let (ev, gr) = backend.reopen(0, ev, gr);
    let mut a = Replica::open(ev, gr, fixed(3_000)).expect("reopen a");
    assert!(
        same(&mut a, "writer, reopened") == want,
        "{ctx}: the writer's graph changed on reopen"
    );

    // The receiver.
    let events = a.events_since(b.version_vector()).expect("log");
    arm(backend, b.graph());
    let first = b.import(events.clone());
    assert!(
        first
            .as_ref()
            .is_err_and(|e| e.to_string().contains(INJECTED_FAILURE)),
        "{ctx}: the import whose apply failed: {first:?}"
    );
    until_ok(&ctx, "the import again", || b.import(events.clone()));
    b.write(vec![user(4, "dee")])
        .expect("write after the import");
    same(&mut b, "receiver, after the store works again");
    let (ev, gr) = b.into_parts();
    let (ev, gr) = backend.reopen(1, ev, gr);
    let mut b = Replica::open(ev, gr, fixed(4_000)).expect("reopen b");
    same(&mut b, "receiver, reopened");

    // Both hold everything, and the same graph.
    a.import(b.events_since(a.version_vector()).expect("log"))
        .expect("import into a");
    let (da, db) = (
        same(&mut a, "writer, at the end"),
        same(&mut b, "receiver, at the end"),
    );
    assert!(
        da == db,
        "{ctx}: the replicas diverged:\n{}",
        describe_diff(&da, &db)
    );
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

/// In-memory stores for fast scenarios. A crash keeps the log and the graph as they were;
/// the graph store fails on demand (see [`FailingGraph`]).
#[derive(Debug, Default)]
pub struct MemoryBackend;

impl SimBackend for MemoryBackend {
    type Events = crate::memory_log::MemoryEventStore;
    type Graph = FailingGraph<crate::memory::MemoryGraphStore>;
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
        graph.probe.pending = 0;
        (events, graph)
    }
    fn probe<'g>(&self, graph: &'g mut Self::Graph) -> Option<&'g mut GraphProbe> {
        Some(&mut graph.probe)
    }
}
