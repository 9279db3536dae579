//! Integration tests of the engine on in-memory stores: randomized convergence.

use kuzu_sync_engine::sim::{
    assert_did_work, check_repeated_apply_failures, run, FailPoint, MemoryBackend, Rng, Scenario,
    SimStats,
};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Replicas that end up with the same events hold identical graphs, whatever the order,
    /// duplication and partial exchanges on the way, with crashes, and with graph-store
    /// failures (once, twice or three times in a row) between log append and graph apply.
    #[test]
    fn replicas_converge(seed in any::<u64>(), replicas in 3usize..=5, steps in 5usize..60, keys in 2u64..6, schema in any::<bool>(), faults in 0u32..=3) {
        let sc = Scenario { seed, replicas, steps, keys, schema_changes: schema, crash_percent: 5, compact_percent: 5, fault_percent: 10, faults_in_a_row: faults };
        let report = run(&mut MemoryBackend, &sc).unwrap();
        assert_did_work(&sc, &report.stats);
    }
}

/// The randomized test is not vacuous: over a fixed set of scenarios like the proptest's,
/// every kind of work happens, and in every fault mode failures strike and replicas are
/// checked after recovering from them. `--nocapture` prints the totals.
#[test]
fn the_simulator_does_every_kind_of_work() {
    let mut rng = Rng::new(7);
    let mut total = SimStats::default();
    let mut by_mode = [
        SimStats::default(),
        SimStats::default(),
        SimStats::default(),
        SimStats::default(),
    ];
    for seed in 0..400u64 {
        let faults = (seed % 4) as u32;
        let sc = Scenario {
            seed,
            replicas: 3 + rng.below(3) as usize,
            steps: 5 + rng.below(55) as usize,
            keys: 2 + rng.below(4),
            schema_changes: rng.chance(50),
            crash_percent: 5,
            compact_percent: 5,
            fault_percent: 10,
            faults_in_a_row: faults,
        };
        let report = run(&mut MemoryBackend, &sc).unwrap();
        assert_did_work(&sc, &report.stats);
        by_mode[faults as usize].add(&report.stats);
        total.add(&report.stats);
    }
    for (mode, st) in by_mode.iter().enumerate() {
        println!("faults in a row {mode}:\n{st}\n");
        // Crashes and snapshot installs inject failures in every mode.
        assert!(
            st.failures_fired > 0 && st.expected_errors > 0,
            "mode {mode}: {st}"
        );
        assert!(st.recovered_checks > 0, "mode {mode}: {st}");
        if mode > 0 {
            assert!(
                st.writes_failed > 0 && st.imports_failed > 0,
                "mode {mode}: {st}"
            );
            assert!(st.retries > 0, "mode {mode}: {st}");
        }
    }
    println!("all:\n{total}");
    let st = &total;
    assert_eq!(st.runs, 400);
    assert!(st.writes_ok * 100 >= st.ops_attempted * 35, "{st}");
    assert!(st.events_applied >= 40 * st.runs, "{st}");
    assert!(
        st.duplicates > 0 && st.snapshots_installed > 0 && st.installs_failed > 0,
        "{st}"
    );
    assert!(
        st.crashes > 0 && st.compactions > 0 && st.events_compacted > 0,
        "{st}"
    );
    for kind in ["NoSuchNode", "NoSuchEdge", "InvalidOp"] {
        assert!(
            st.refused.get(kind).is_some_and(|&n| n > 0),
            "no {kind} refusal: {st}"
        );
    }
}

/// Failures found by the randomized test, kept as permanent regression cases.
#[test]
fn regressions() {
    {
        let (seed, replicas, steps, keys, schema) = (0u64, 3usize, 40usize, 3u64, true);
        let sc = Scenario {
            seed,
            replicas,
            steps,
            keys,
            schema_changes: schema,
            crash_percent: 5,
            compact_percent: 5,
            fault_percent: 0,
            faults_in_a_row: 0,
        };
        let report = run(&mut MemoryBackend, &sc).unwrap();
        assert_did_work(&sc, &report.stats);
    }
}

/// A graph store that fails in apply once, twice (the write's or import's apply, then the
/// recovery right after it) or three times in a row, before or after committing: once a
/// call succeeds again, no batch is missing from the graph, also after a reopen.
#[test]
fn graph_store_failures_in_a_row_lose_no_batch() {
    for n in 1..=3 {
        for at in [FailPoint::Before, FailPoint::After] {
            check_repeated_apply_failures(&mut MemoryBackend, n, at);
        }
    }
}

/// The in-memory graph store against the shared suite (the reference against itself checks
/// the suite's own consistency: idempotence, watermarks).
#[test]
fn memory_graph_store_conformance() {
    kuzu_sync_engine::conformance::graph_store_suite(
        &mut kuzu_sync_engine::memory::MemoryGraphStore::new,
    );
}

/// A replica on the in-memory stores, with a clock fixed at `now_ms`.
fn memory_replica(
    peer: &str,
    now_ms: u64,
) -> kuzu_sync_engine::Replica<
    kuzu_sync_engine::MemoryEventStore,
    kuzu_sync_engine::memory::MemoryGraphStore,
> {
    kuzu_sync_engine::Replica::create(
        kuzu_sync_engine::MemoryEventStore::default(),
        kuzu_sync_engine::memory::MemoryGraphStore::new(),
        kuzu_sync_engine::PeerId::new(peer).unwrap(),
        Box::new(kuzu_sync_engine::FixedClock(now_ms)),
    )
    .unwrap()
}

/// A received event that names an unknown column or carries a wrongly typed value is refused
/// with an error naming the event, and nothing of the import is applied (all or nothing),
/// even the valid events before it.
#[test]
fn an_invalid_received_event_rejects_the_whole_import() {
    use kuzu_sync_engine::sim::base_schema;
    use kuzu_sync_engine::{Entity, NodeRef, Op, Value, VersionVector};
    let mut a = memory_replica("a", 1_000);
    let mut ops: Vec<Op> = base_schema().into_iter().map(Op::Schema).collect();
    ops.push(Op::AddNode {
        table: "User".into(),
        props: vec![("id".into(), Value::Int64(1))],
    });
    ops.push(Op::Update {
        entity: Entity::Node(NodeRef {
            table: "User".into(),
            key: Value::Int64(1),
        }),
        prop: "name".into(),
        value: Value::from("ok"),
    });
    a.write(ops).unwrap();
    let good = a.events_since(&VersionVector::new()).unwrap();
    for (what, tamper) in [
        ("wrong type", Value::Int64(5)),
        ("unknown column", Value::from("x")),
    ] {
        let mut events = good.clone();
        let last = events.last_mut().unwrap();
        if let Op::Update { prop, value, .. } = &mut last.op {
            *value = tamper;
            if what == "unknown column" {
                *prop = "shoe_size".into();
            }
        }
        let bad_id = last.id.to_string();
        let mut b = memory_replica("b", 2_000);
        let err = b.import(events).unwrap_err().to_string();
        assert!(
            err.contains(&bad_id),
            "{what}: the error names the event: {err}"
        );
        assert!(
            b.version_vector().is_empty(),
            "{what}: nothing applied, not even the valid events before it"
        );
        assert_eq!(
            b.status().unwrap().stored_events,
            0,
            "{what}: nothing logged"
        );
        // The untampered events still import.
        b.import(good.clone()).unwrap();
        assert_eq!(b.dump().unwrap(), a.dump().unwrap());
    }
}

// ------------------------------------------------------------------------------------------
// Review tests: competing DDL, rebuilds, policies, multiplicity groups, change emission.
// ------------------------------------------------------------------------------------------

mod review {
    use kuzu_sync_engine::memory::MemoryGraphStore;
    use kuzu_sync_engine::sim::{describe_diff, Rng};
    use kuzu_sync_engine::{
        Column, DataType, EdgeRef, Engine, EngineError, Entity, Event, GraphDump, GraphStore,
        Multiplicity, NodeRef, NodeTableDef, Op, PeerId, Policy, RelTableDef, SchemaOp, TableDef,
        Value,
    };

    pub fn col(name: &str, ty: DataType) -> Column {
        Column {
            name: name.into(),
            ty,
            default: None,
        }
    }

    pub fn node_table(name: &str, pk: &str, cols: Vec<Column>) -> Op {
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: name.into(),
            columns: cols,
            primary_key: pk.into(),
        }))
    }

    pub fn rel_table(name: &str, from: &str, to: &str, cols: Vec<Column>, m: Multiplicity) -> Op {
        Op::Schema(SchemaOp::CreateRelTable(RelTableDef {
            name: name.into(),
            connections: vec![(from.into(), to.into())],
            columns: cols,
            multiplicity: m,
        }))
    }

    pub fn add_node(table: &str, props: Vec<(&str, Value)>) -> Op {
        Op::AddNode {
            table: table.into(),
            props: props.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    pub fn nref(table: &str, key: Value) -> NodeRef {
        NodeRef {
            table: table.into(),
            key,
        }
    }

    pub fn eref(table: &str, from: NodeRef, to: NodeRef) -> EdgeRef {
        EdgeRef {
            table: table.into(),
            from,
            to,
            key: String::new(),
        }
    }

    pub fn add_edge(table: &str, from: NodeRef, to: NodeRef) -> Op {
        Op::AddEdge {
            edge: eref(table, from, to),
            props: vec![],
        }
    }

    pub fn user(k: i64) -> NodeRef {
        nref("User", Value::Int64(k))
    }

    pub fn city(k: &str) -> NodeRef {
        nref("City", Value::String(k.into()))
    }

    /// Engines that write and exchange events; each has a memory graph store fed with its
    /// batches after every step, checked against the engine's own view.
    pub struct Net {
        pub engines: Vec<Engine>,
        pub stores: Vec<MemoryGraphStore>,
        /// Every event, in creation order (which is a causal order).
        pub log: Vec<Event>,
    }

    impl Net {
        /// Full exchange, then the checks every scenario ends with: all replicas equal, every
        /// row well formed, and the whole log replayed in `orders` random causal orders.
        pub fn finish(&mut self, orders: u64) {
            self.sync_all();
            self.assert_converged();
            for e in &self.engines {
                assert_well_formed(e);
            }
            check_orders(&self.log.clone(), orders);
        }

        pub fn new(n: usize) -> Self {
            let names = ["a", "b", "c", "d", "e"];
            Net {
                engines: (0..n)
                    .map(|i| Engine::new(PeerId::new(names[i]).unwrap()))
                    .collect(),
                stores: (0..n).map(|_| MemoryGraphStore::new()).collect(),
                log: Vec::new(),
            }
        }

        pub fn write(&mut self, i: usize, op: Op, now_ms: u64) -> Event {
            let e = self.engines[i]
                .prepare(op, now_ms)
                .unwrap_or_else(|err| panic!("replica {i}: local op refused: {err}"));
            self.engines[i].apply(&e).unwrap();
            self.log.push(e.clone());
            self.flush(i);
            e
        }

        /// Applies to `to` every logged event `from` holds and `to` lacks, in log order.
        pub fn try_sync(&mut self, from: usize, to: usize) -> Result<(), EngineError> {
            let events: Vec<Event> = self
                .log
                .iter()
                .filter(|e| {
                    self.engines[from].is_applied(&e.id) && !self.engines[to].is_applied(&e.id)
                })
                .cloned()
                .collect();
            for e in &events {
                self.engines[to].apply(e)?;
            }
            self.flush(to);
            Ok(())
        }

        pub fn sync(&mut self, from: usize, to: usize) {
            self.try_sync(from, to)
                .unwrap_or_else(|err| panic!("sync {from} -> {to}: {err}"));
        }

        pub fn sync_all(&mut self) {
            let n = self.engines.len();
            for _ in 0..2 {
                for i in 0..n {
                    for j in 0..n {
                        if i != j {
                            self.sync(i, j);
                        }
                    }
                }
            }
        }

        pub fn flush(&mut self, i: usize) {
            let (batch, _) = self.engines[i].take_batch();
            self.stores[i]
                .apply(&batch, self.engines[i].schema())
                .unwrap_or_else(|err| panic!("replica {i}: the store refused a batch: {err}"));
            let stored = self.stores[i].dump(self.engines[i].schema()).unwrap();
            let view = self.engines[i].dump();
            assert!(
                stored == view,
                "replica {i}: the store differs from the engine's view:\n{}",
                describe_diff(&view, &stored)
            );
        }

        /// All replicas hold the same graph.
        pub fn assert_converged(&self) {
            let d0 = self.engines[0].dump();
            for (i, e) in self.engines.iter().enumerate().skip(1) {
                let d = e.dump();
                assert!(
                    d == d0,
                    "replica {i} diverged from replica 0:\n{}",
                    describe_diff(&d0, &d)
                );
            }
        }
    }

    /// A random causal order of `log`, with duplicates re-delivered.
    pub fn random_causal_order(log: &[Event], rng: &mut Rng) -> Vec<Event> {
        let mut applied = kuzu_sync_engine::VersionVector::new();
        let mut pending: Vec<Event> = log.to_vec();
        let mut out = Vec::new();
        while !pending.is_empty() {
            let ready: Vec<usize> = pending
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.id.counter == applied.get(&e.id.peer) + 1 && applied.dominates(&e.deps)
                })
                .map(|(i, _)| i)
                .collect();
            assert!(!ready.is_empty(), "the log is not causally closed");
            let pick = ready[rng.below(ready.len() as u64) as usize];
            let e = pending.remove(pick);
            applied.observe(&e.id);
            out.push(e.clone());
            if rng.chance(10) && !out.is_empty() {
                let d = out[rng.below(out.len() as u64) as usize].clone();
                out.push(d);
            }
        }
        out
    }

    /// Applies the whole log to fresh engines in many random causal orders (with
    /// duplicates) and to fresh replicas in random chunks; every result must be the same
    /// graph, and every replica's store must equal its engine's view after every import.
    pub fn check_orders(log: &[Event], orders: u64) -> GraphDump {
        let mut reference: Option<GraphDump> = None;
        for seed in 0..orders {
            let mut rng = Rng::new(seed);
            let order = random_causal_order(log, &mut rng);
            // Engine alone, batches into a memory store after random prefixes.
            let mut e = Engine::new(PeerId::new("z").unwrap());
            let mut store = MemoryGraphStore::new();
            for ev in &order {
                e.apply(ev)
                    .unwrap_or_else(|err| panic!("order {seed}: {ev:?}: {err}"));
                if rng.chance(40) {
                    let (batch, _) = e.take_batch();
                    store.apply(&batch, e.schema()).unwrap_or_else(|err| {
                        panic!("order {seed}: the store refused a batch: {err}")
                    });
                }
            }
            let (batch, _) = e.take_batch();
            store
                .apply(&batch, e.schema())
                .unwrap_or_else(|err| panic!("order {seed}: the store refused a batch: {err}"));
            let view = e.dump();
            let stored = store.dump(e.schema()).unwrap();
            assert!(
                stored == view,
                "order {seed}: store differs from engine view:\n{}",
                describe_diff(&view, &stored)
            );
            match &reference {
                None => reference = Some(view),
                Some(r) => assert!(
                    *r == view,
                    "order {seed}: diverged from order 0:\n{}",
                    describe_diff(r, &view)
                ),
            }
            // A replica importing random chunks of the same order.
            let mut rep = super::memory_replica("y", 1);
            let mut i = 0;
            while i < order.len() {
                let n = 1 + rng.below(4) as usize;
                let chunk: Vec<Event> = order[i..(i + n).min(order.len())].to_vec();
                i += n;
                rep.import(chunk)
                    .unwrap_or_else(|err| panic!("order {seed}: replica import: {err}"));
                let stored = rep.dump().unwrap();
                let view = rep.engine().dump();
                assert!(
                    stored == view,
                    "order {seed}: replica store differs from its engine:\n{}",
                    describe_diff(&view, &stored)
                );
            }
            assert!(
                rep.engine().dump() == *reference.as_ref().unwrap(),
                "order {seed}: chunked replica diverged"
            );
        }
        reference.unwrap()
    }

    /// Every visible edge's endpoints are visible nodes, and every value fits its column's
    /// resolved type (what a Kuzu store needs to accept the rows).
    pub fn assert_well_formed(e: &Engine) {
        let dump = e.dump();
        let schema = e.schema();
        for t in schema.tables() {
            let rows = dump.get(t.name()).cloned().unwrap_or_default();
            match t {
                TableDef::Node(n) => {
                    for row in &rows {
                        for (c, v) in n.columns.iter().zip(row) {
                            assert!(
                                v.conforms_to(&c.ty),
                                "{}.{}: value {v:?} does not fit {}",
                                n.name,
                                c.name,
                                c.ty
                            );
                            if c.name == n.primary_key {
                                assert!(!v.is_null(), "{}: NULL primary key", n.name);
                            }
                        }
                    }
                }
                TableDef::Rel(r) => {
                    for row in &rows {
                        for (tcol, kcol) in [(0, 1), (2, 3)] {
                            let Value::String(tn) = &row[tcol] else {
                                panic!("bad row")
                            };
                            let end_def = schema.table(tn);
                            let Some(TableDef::Node(nd)) = end_def else {
                                panic!(
                                    "{}: edge {row:?} has an endpoint in {tn}, which is not a node table",
                                    r.name
                                );
                            };
                            let pk_idx = nd
                                .columns
                                .iter()
                                .position(|c| c.name == nd.primary_key)
                                .unwrap();
                            let present = dump
                                .get(&nd.name)
                                .is_some_and(|ns| ns.iter().any(|n| n[pk_idx] == row[kcol]));
                            assert!(
                                present,
                                "{}: edge {row:?} dangles (endpoint not a visible node)",
                                r.name
                            );
                        }
                        for (c, v) in r.columns.iter().zip(&row[5..]) {
                            assert!(
                                v.conforms_to(&c.ty),
                                "{}.{}: value {v:?} does not fit {}",
                                r.name,
                                c.name,
                                c.ty
                            );
                        }
                    }
                }
            }
        }
    }

    /// User(id, name, stock) with a counter, City(name, pop), LivesIn MANY_ONE, Marries
    /// ONE_ONE, Follows MANY_MANY, written by replica 0 at `t` and delivered to all.
    pub fn base(net: &mut Net, t: u64) {
        for op in kuzu_sync_engine::sim::base_schema() {
            net.write(0, Op::Schema(op), t);
        }
        for j in 1..net.engines.len() {
            net.sync(0, j);
        }
    }

    pub fn set(entity: Entity, prop: &str, v: Value) -> Op {
        Op::Update {
            entity,
            prop: prop.into(),
            value: v,
        }
    }

    pub fn inc(entity: Entity, prop: &str, v: Value) -> Op {
        Op::Increment {
            entity,
            prop: prop.into(),
            delta: v,
        }
    }

    pub fn set_policy(table: &str, column: &str, policy: Policy) -> Op {
        Op::Schema(SchemaOp::SetPolicy {
            table: table.into(),
            column: column.into(),
            policy,
        })
    }
}

use kuzu_sync_engine::Op;
use review::*;

// Regression (was failing): Engine::apply(AddNode) keys a node by the primary key resolved at arrival time; a late earlier concurrent create changes the pk, so replicas key the same node differently.
#[test]
fn competing_primary_keys_converge() {
    use kuzu_sync_engine::{DataType, Value};
    let mut net = Net::new(2);
    // a's create is earlier (pk id), b's later (pk name).
    net.write(
        0,
        node_table(
            "Pet",
            "id",
            vec![col("id", DataType::Int64), col("name", DataType::String)],
        ),
        1_000,
    );
    net.write(
        1,
        node_table(
            "Pet",
            "name",
            vec![col("name", DataType::String), col("id", DataType::Int64)],
        ),
        2_000,
    );
    net.write(
        0,
        add_node("Pet", vec![("id", Value::Int64(1)), ("name", "rex".into())]),
        1_100,
    );
    net.write(
        1,
        add_node("Pet", vec![("name", "tom".into()), ("id", Value::Int64(2))]),
        2_100,
    );
    net.sync(0, 1);
    net.sync(1, 0);
    net.assert_converged();
    for e in &net.engines {
        assert_well_formed(e);
    }
    check_orders(&net.log.clone(), 20);
}

// Regression (was failing): resolve() ignores a concurrent create of the other kind, then Engine::check_op rejects the losing side's data events (WrongTableKind): the import can never succeed.
#[test]
fn competing_table_kinds_still_import_and_converge() {
    use kuzu_sync_engine::{DataType, Multiplicity, Value};
    let mut net = Net::new(2);
    base(&mut net, 1_000);
    net.write(0, add_node("User", vec![("id", Value::Int64(1))]), 1_100);
    net.write(0, add_node("User", vec![("id", Value::Int64(2))]), 1_110);
    net.sync(0, 1);
    // Concurrently: a makes Likes a node table, b a rel table (earlier).
    net.write(
        0,
        node_table("Likes", "id", vec![col("id", DataType::Int64)]),
        3_000,
    );
    net.write(0, add_node("Likes", vec![("id", Value::Int64(7))]), 3_100);
    net.write(
        1,
        rel_table("Likes", "User", "User", vec![], Multiplicity::ManyMany),
        2_000,
    );
    net.write(1, add_edge("Likes", user(1), user(2)), 2_100);
    let ab = net.try_sync(0, 1);
    let ba = net.try_sync(1, 0);
    assert!(
        ab.is_ok() && ba.is_ok(),
        "events valid where written are refused elsewhere: a->b {ab:?}, b->a {ba:?}"
    );
    net.assert_converged();
}

// Regression (was failing): after a node table turns into a rel table, edge_row/node_exists ignore the endpoint table's kind, so take_batch re-inserts edges whose endpoints are no nodes (store refuses the batch).
#[test]
fn node_table_redefined_as_rel_table_leaves_no_dangling_edges() {
    use kuzu_sync_engine::{DataType, Multiplicity, Value};
    let mut net = Net::new(2);
    base(&mut net, 1_000);
    net.write(0, add_node("User", vec![("id", Value::Int64(1))]), 1_100);
    net.sync(0, 1);
    // b (earlier): Place is a rel table.
    net.write(
        1,
        rel_table("Place", "User", "User", vec![], Multiplicity::ManyMany),
        2_000,
    );
    // a (later): Place is a node table, with a rel table and an edge into it.
    net.write(
        0,
        node_table("Place", "name", vec![col("name", DataType::String)]),
        3_000,
    );
    net.write(
        0,
        rel_table("Visits", "User", "Place", vec![], Multiplicity::ManyMany),
        3_010,
    );
    net.write(0, add_node("Place", vec![("name", "Oslo".into())]), 3_020);
    net.write(
        0,
        add_edge("Visits", user(1), nref("Place", "Oslo".into())),
        3_030,
    );
    // Only b's create reaches a: valid there, and it must not break a's graph.
    net.sync(1, 0);
    assert_well_formed(&net.engines[0]);
}

// Regression (was failing): Engine::node_row emits the node key as the pk value without checking it against the resolved pk type (STRING key in an INT64 pk after concurrent creates).
#[test]
fn concurrent_primary_key_types_keep_rows_well_typed() {
    use kuzu_sync_engine::{DataType, Value};
    let mut net = Net::new(2);
    net.write(
        0,
        node_table(
            "Pet",
            "id",
            vec![col("id", DataType::Int64), col("n", DataType::Int64)],
        ),
        1_000,
    );
    net.write(
        1,
        node_table(
            "Pet",
            "id",
            vec![col("id", DataType::String), col("n", DataType::Int64)],
        ),
        2_000,
    );
    net.write(0, add_node("Pet", vec![("id", Value::Int64(1))]), 1_100);
    net.write(1, add_node("Pet", vec![("id", "x".into())]), 2_100);
    net.sync_all();
    net.assert_converged();
    check_orders(&net.log.clone(), 10);
    for e in &net.engines {
        assert_well_formed(e);
    }
}

/// Competing rel definitions (multiplicity, columns): the rebuild of the rel table emits
/// exactly the engine's view, and replicas converge.
#[test]
fn competing_rel_multiplicity_rebuild_converges() {
    use kuzu_sync_engine::{DataType, Multiplicity, Value};
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    for k in 1..=3 {
        net.write(0, add_node("User", vec![("id", Value::Int64(k))]), 1_100);
    }
    net.sync(0, 1);
    net.sync(0, 2);
    // b: MANY_ONE (earliest), a: MANY_MANY with a column, c: ONE_ONE.
    net.write(
        1,
        rel_table("Boss", "User", "User", vec![], Multiplicity::ManyOne),
        2_000,
    );
    net.write(
        0,
        rel_table(
            "Boss",
            "User",
            "User",
            vec![col("w", DataType::Int64)],
            Multiplicity::ManyMany,
        ),
        3_000,
    );
    net.write(
        2,
        rel_table("Boss", "User", "User", vec![], Multiplicity::OneOne),
        2_500,
    );
    net.write(1, add_edge("Boss", user(1), user(2)), 2_010);
    net.write(
        0,
        Op::AddEdge {
            edge: eref("Boss", user(1), user(3)),
            props: vec![("w".into(), Value::Int64(5))],
        },
        3_010,
    );
    net.write(0, add_edge("Boss", user(1), user(1)), 3_020);
    net.write(0, add_edge("Boss", user(2), user(3)), 3_030);
    net.write(2, add_edge("Boss", user(3), user(2)), 2_510);
    // Partial exchanges first, each checked against the store.
    net.sync(0, 2);
    net.sync(2, 1);
    net.sync(1, 0);
    net.write(0, Op::DeleteEdge(eref("Boss", user(1), user(1))), 4_000);
    net.finish(30);
}

/// Competing node definitions (column order, types, defaults) rebuild the node table and
/// every rel table attached to it; edges survive the rebuild, also when a node of another
/// table is deleted in the same batch.
#[test]
fn node_table_rebuild_keeps_attached_edges() {
    use kuzu_sync_engine::{DataType, Multiplicity, Value};
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    for k in 1..=3 {
        net.write(0, add_node("User", vec![("id", Value::Int64(k))]), 1_100);
    }
    net.sync(0, 1);
    net.sync(0, 2);
    // a (latest): Place(name, pop INT64) + Visits(User->Place) + rows.
    net.write(
        0,
        node_table(
            "Place",
            "name",
            vec![col("name", DataType::String), col("pop", DataType::Int64)],
        ),
        5_000,
    );
    net.write(
        0,
        rel_table(
            "Visits",
            "User",
            "Place",
            vec![col("n", DataType::Int64)],
            Multiplicity::ManyOne,
        ),
        5_010,
    );
    net.write(
        0,
        add_node(
            "Place",
            vec![("name", "Oslo".into()), ("pop", Value::Int64(7))],
        ),
        5_020,
    );
    net.write(0, add_node("Place", vec![("name", "Rome".into())]), 5_030);
    net.write(
        0,
        Op::AddEdge {
            edge: eref("Visits", user(1), nref("Place", "Oslo".into())),
            props: vec![("n".into(), Value::Int64(1))],
        },
        5_040,
    );
    net.write(
        0,
        add_edge("Visits", user(2), nref("Place", "Rome".into())),
        5_050,
    );
    net.write(0, add_edge("Follows", user(2), user(3)), 5_060);
    // b (earlier): Place(name, pop STRING default 'big', area DOUBLE).
    let mut pop = col("pop", DataType::String);
    pop.default = Some(Value::String("big".into()));
    net.write(
        1,
        node_table(
            "Place",
            "name",
            vec![
                col("name", DataType::String),
                pop,
                col("area", DataType::Double),
            ],
        ),
        3_000,
    );
    net.write(
        1,
        add_node(
            "Place",
            vec![("name", "Oslo".into()), ("area", Value::Double(1.5))],
        ),
        3_010,
    );
    // b deletes user 2 (seen: its Follows edge is not yet known to b).
    net.write(1, Op::DeleteNode(user(2)), 3_020);
    // c: a third definition, earliest, with a different default and column order.
    net.write(
        2,
        node_table(
            "Place",
            "name",
            vec![col("area", DataType::Double), col("name", DataType::String)],
        ),
        2_000,
    );
    // a learns b's events (rebuild + user delete in one batch), then c's.
    net.sync(1, 0);
    net.sync(2, 0);
    net.finish(30);
}

/// A policy change concurrent with increments and sets: the value does not depend on the
/// policy, whatever the order.
#[test]
fn set_policy_concurrent_with_increments_and_sets_converges() {
    use kuzu_sync_engine::{Entity, Policy, Value};
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    net.write(
        0,
        add_node(
            "User",
            vec![("id", Value::Int64(1)), ("stock", Value::Int64(10))],
        ),
        1_100,
    );
    net.sync(0, 1);
    net.sync(0, 2);
    let u = Entity::Node(user(1));
    net.write(0, inc(u.clone(), "stock", Value::Int64(-5)), 2_000);
    net.write(1, inc(u.clone(), "stock", Value::Int64(-3)), 2_000);
    net.write(2, set_policy("User", "stock", Policy::Lww), 1_900);
    net.write(2, set(u.clone(), "stock", Value::Int64(100)), 1_950);
    net.sync(1, 0);
    net.write(0, set_policy("User", "stock", Policy::Lww), 2_100);
    net.write(0, set_policy("User", "stock", Policy::Counter), 2_200);
    net.write(0, inc(u.clone(), "stock", Value::Int64(1)), 2_300);
    net.sync(2, 1);
    net.write(1, set_policy("User", "stock", Policy::Counter), 2_400);
    net.write(1, inc(u.clone(), "stock", Value::Int64(7)), 2_500);
    net.sync_all();
    net.assert_converged();
    check_orders(&net.log.clone(), 40);
}

/// A node delete concurrent with a MANY_ONE edge swap, then a re-add of the node: the
/// concurrent edge reappears, the old one stays dead, and changes match the view.
#[test]
fn node_delete_concurrent_with_many_one_edge_add_and_readd() {
    use kuzu_sync_engine::Value;
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    net.write(0, add_node("User", vec![("id", Value::Int64(1))]), 1_100);
    for c in ["Oslo", "Rome", "Lima"] {
        net.write(0, add_node("City", vec![("name", c.into())]), 1_100);
    }
    net.write(0, add_edge("LivesIn", user(1), city("Oslo")), 1_200);
    net.sync(0, 1);
    net.sync(0, 2);
    // a deletes the user; b moves it to Rome; c moves it to Lima.
    net.write(0, Op::DeleteNode(user(1)), 2_000);
    net.write(
        1,
        Op::DeleteEdge(eref("LivesIn", user(1), city("Oslo"))),
        1_900,
    );
    net.write(1, add_edge("LivesIn", user(1), city("Rome")), 1_950);
    net.write(
        2,
        Op::DeleteEdge(eref("LivesIn", user(1), city("Oslo"))),
        2_100,
    );
    net.write(2, add_edge("LivesIn", user(1), city("Lima")), 2_150);
    net.sync(1, 0);
    // a re-adds the user: the concurrent Rome edge shows again.
    net.write(0, add_node("User", vec![("id", Value::Int64(1))]), 2_500);
    net.sync(2, 0);
    net.write(
        0,
        Op::DeleteEdge(eref("LivesIn", user(1), city("Lima"))),
        2_600,
    );
    net.finish(40);
}

/// ONE_ONE chains: the winner of one group decides the visibility of the edges of the
/// neighbouring group; node deletes and re-adds along the chain must emit every change.
#[test]
fn one_one_chains_emit_every_visibility_change() {
    use kuzu_sync_engine::Value;
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    for k in 1..=6 {
        net.write(0, add_node("User", vec![("id", Value::Int64(k))]), 1_100);
    }
    net.sync(0, 1);
    net.sync(0, 2);
    // Concurrent marriages forming a chain 1->2 <-3 ->4 <-5 ->6.
    net.write(0, add_edge("Marries", user(1), user(2)), 2_000);
    net.write(1, add_edge("Marries", user(3), user(2)), 2_100);
    net.write(2, add_edge("Marries", user(3), user(4)), 2_200);
    net.write(0, add_edge("Marries", user(5), user(4)), 2_300);
    net.write(1, add_edge("Marries", user(5), user(6)), 2_400);
    net.sync(0, 1);
    net.sync(1, 2);
    net.sync(2, 0);
    net.write(2, Op::DeleteNode(user(6)), 3_000);
    net.sync(2, 1);
    net.write(1, Op::DeleteNode(user(4)), 3_100);
    net.write(0, add_node("User", vec![("id", Value::Int64(6))]), 3_050);
    net.write(0, add_edge("Marries", user(5), user(6)), 3_060);
    net.sync(1, 0);
    net.write(0, add_node("User", vec![("id", Value::Int64(4))]), 3_200);
    net.write(0, Op::DeleteEdge(eref("Marries", user(3), user(2))), 3_205);
    net.write(0, add_edge("Marries", user(3), user(4)), 3_210);
    net.write(2, add_edge("Marries", user(1), user(2)), 3_220);
    net.finish(40);
}

/// add_node of a node that already exists (here and concurrently elsewhere), with edges
/// attached and a concurrent delete: only the row changes, and the result is order-free.
#[test]
fn add_node_of_existing_node_with_edges_and_concurrent_delete() {
    use kuzu_sync_engine::Value;
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    for k in 1..=3 {
        net.write(0, add_node("User", vec![("id", Value::Int64(k))]), 1_100);
    }
    net.write(0, add_node("City", vec![("name", "Oslo".into())]), 1_100);
    net.write(0, add_edge("Follows", user(1), user(2)), 1_200);
    net.write(0, add_edge("LivesIn", user(1), city("Oslo")), 1_200);
    net.write(0, add_edge("Marries", user(1), user(3)), 1_200);
    net.sync(0, 1);
    net.sync(0, 2);
    net.write(
        1,
        add_node(
            "User",
            vec![("id", Value::Int64(1)), ("name", "ann".into())],
        ),
        2_000,
    );
    net.write(0, Op::DeleteNode(user(1)), 2_100);
    net.write(
        2,
        add_node(
            "User",
            vec![("id", Value::Int64(1)), ("stock", Value::Int64(4))],
        ),
        2_050,
    );
    net.write(2, add_edge("Follows", user(1), user(3)), 2_060);
    net.sync(1, 2);
    net.write(
        2,
        add_node("User", vec![("id", Value::Int64(1)), ("name", "bo".into())]),
        2_200,
    );
    net.finish(40);
}

/// Concurrent ADD COLUMN of one name with different types (and a counter policy on one):
/// values of the losing type read as NULL everywhere, whatever the order; rebuilds match.
#[test]
fn concurrent_add_column_types_with_counters_converge() {
    use kuzu_sync_engine::{Column, DataType, Entity, Policy, SchemaOp, Value};
    let mut net = Net::new(3);
    base(&mut net, 1_000);
    for k in 1..=2 {
        net.write(0, add_node("User", vec![("id", Value::Int64(k))]), 1_100);
    }
    net.write(0, add_edge("Follows", user(1), user(2)), 1_200);
    net.sync(0, 1);
    net.sync(0, 2);
    let addc = |t: &str, ty: DataType, d: Option<Value>| {
        Op::Schema(SchemaOp::AddColumn {
            table: t.into(),
            column: Column {
                name: "score".into(),
                ty,
                default: d,
            },
        })
    };
    let u1 = Entity::Node(user(1));
    let f = Entity::Edge(eref("Follows", user(1), user(2)));
    net.write(0, addc("User", DataType::Int64, None), 3_000);
    net.write(0, set_policy("User", "score", Policy::Counter), 3_010);
    net.write(0, inc(u1.clone(), "score", Value::Int64(2)), 3_020);
    net.write(
        0,
        addc("Follows", DataType::Int64, Some(Value::Int64(9))),
        3_030,
    );
    net.write(0, set(f.clone(), "score", Value::Int64(1)), 3_040);
    net.write(1, addc("User", DataType::Double, None), 2_000);
    net.write(1, set_policy("User", "score", Policy::Counter), 2_010);
    net.write(1, inc(u1.clone(), "score", Value::Double(0.5)), 2_020);
    net.write(1, addc("Follows", DataType::String, None), 2_030);
    net.write(1, set(f.clone(), "score", Value::String("x".into())), 2_040);
    net.write(
        2,
        addc("User", DataType::Int64, Some(Value::Int64(3))),
        2_500,
    );
    net.sync(2, 0);
    net.sync(0, 2);
    net.write(2, inc(u1.clone(), "score", Value::Int64(5)), 3_500);
    net.sync(1, 2);
    net.finish(40);
}

/// The simulator's scenario with competing table definitions: every replica first creates
/// its own version of `Pet` (columns, types, defaults) and `Owns` (multiplicity, columns)
/// concurrently, then random ops (the simulator's and ones on the competing tables),
/// partial exchanges with duplicates, and crashes. Primary keys and table kinds agree (see
/// the tests above for those).
fn run_competing_ddl(seed: u64, replicas: usize, steps: usize) {
    use kuzu_sync_engine::memory::MemoryGraphStore;
    use kuzu_sync_engine::sim::{base_schema, describe_diff, random_op, Rng, SkewedClock};
    use kuzu_sync_engine::{
        DataType, Entity, MemoryEventStore, Multiplicity, Op, PeerId, Replica, Value,
        VersionVector, WallClock,
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let mut rng = Rng::new(seed);
    let base = Arc::new(AtomicU64::new(1_700_000_000_000));
    let clock = |i: usize| -> Box<dyn WallClock + Send> {
        Box::new(SkewedClock {
            base: base.clone(),
            skew_ms: (i as i64 - 1) * 1_500,
        })
    };
    let mut reps: Vec<Option<Replica<MemoryEventStore, MemoryGraphStore>>> = (0..replicas)
        .map(|i| {
            Some(
                Replica::create(
                    MemoryEventStore::default(),
                    MemoryGraphStore::new(),
                    PeerId::new(format!("r{i}")).unwrap(),
                    clock(i),
                )
                .unwrap(),
            )
        })
        .collect();
    let r0 = reps[0].as_mut().unwrap();
    r0.write(base_schema().into_iter().map(Op::Schema).collect())
        .unwrap();
    let ev = r0.events_since(&VersionVector::new()).unwrap();
    for r in reps.iter_mut().skip(1) {
        r.as_mut().unwrap().import(ev.clone()).unwrap();
    }
    let mut dflt = col("name", DataType::String);
    dflt.default = Some(Value::String("x".into()));
    let pets = [
        vec![
            col("id", DataType::Int64),
            col("name", DataType::String),
            col("w", DataType::Int64),
        ],
        vec![col("id", DataType::Int64), col("w", DataType::Double), dflt],
        vec![col("id", DataType::Int64), col("age", DataType::Int64)],
        vec![col("id", DataType::Int64), col("name", DataType::String)],
    ];
    let owns = [
        (Multiplicity::ManyMany, vec![col("since", DataType::Int64)]),
        (Multiplicity::ManyOne, vec![col("since", DataType::String)]),
        (Multiplicity::OneMany, vec![]),
        (Multiplicity::OneOne, vec![col("since", DataType::Int64)]),
    ];
    for (i, r) in reps.iter_mut().enumerate() {
        base.fetch_add(rng.below(500), Ordering::Relaxed);
        let v = (i + seed as usize) % pets.len();
        let w = (i + (seed >> 8) as usize) % owns.len();
        r.as_mut()
            .unwrap()
            .write(vec![
                node_table("Pet", "id", pets[v].clone()),
                rel_table("Owns", "User", "Pet", owns[w].1.clone(), owns[w].0),
            ])
            .unwrap();
    }
    let pet = |rng: &mut Rng| nref("Pet", Value::Int64(rng.below(3) as i64));
    let pet_value = |rng: &mut Rng| match rng.below(4) {
        0 => (
            "name",
            Value::String(["a", "b"][rng.below(2) as usize].into()),
        ),
        1 => ("w", Value::Int64(rng.below(9) as i64)),
        2 => ("w", Value::Double(rng.below(9) as f64 / 2.0)),
        _ => ("age", Value::Int64(rng.below(9) as i64)),
    };
    for _ in 0..steps {
        base.fetch_add(rng.below(700), Ordering::Relaxed);
        let i = rng.below(replicas as u64) as usize;
        let roll = rng.below(100);
        if roll < 4 {
            let r = reps[i].take().unwrap();
            let (e, g) = r.into_parts();
            reps[i] = Some(Replica::open(e, g, clock(i)).unwrap());
        } else if roll < 60 {
            let op = match rng.below(12) {
                0..=2 => random_op(&mut rng, 3, true),
                3 => add_node("User", vec![("id", Value::Int64(rng.below(3) as i64))]),
                4 | 5 => {
                    let (c, v) = pet_value(&mut rng);
                    let mut props = vec![("id", pet(&mut rng).key)];
                    if rng.chance(60) {
                        props.push((c, v));
                    }
                    add_node("Pet", props)
                }
                6 => {
                    let (c, v) = pet_value(&mut rng);
                    set(Entity::Node(pet(&mut rng)), c, v)
                }
                7 => Op::DeleteNode(pet(&mut rng)),
                8..=10 => {
                    let u = nref("User", Value::Int64(rng.below(3) as i64));
                    let props = match rng.below(5) {
                        0 => vec![("since".to_string(), Value::Int64(5))],
                        1 => vec![("since".to_string(), Value::String("s".into()))],
                        _ => vec![],
                    };
                    Op::AddEdge {
                        edge: eref("Owns", u, pet(&mut rng)),
                        props,
                    }
                }
                _ => {
                    let u = nref("User", Value::Int64(rng.below(3) as i64));
                    Op::DeleteEdge(eref("Owns", u, pet(&mut rng)))
                }
            };
            let _ = reps[i].as_mut().unwrap().write(vec![op]);
        } else {
            let j = rng.below(replicas as u64) as usize;
            if i == j {
                continue;
            }
            let since = if rng.chance(20) {
                VersionVector::new()
            } else {
                reps[j].as_ref().unwrap().version_vector().clone()
            };
            let mut events = reps[i].as_ref().unwrap().events_since(&since).unwrap();
            if rng.chance(50) && !events.is_empty() {
                let keep = 1 + rng.below(events.len() as u64) as usize;
                events.truncate(keep);
            }
            for k in (1..events.len()).rev() {
                let m = rng.below(k as u64 + 1) as usize;
                events.swap(k, m);
            }
            reps[j]
                .as_mut()
                .unwrap()
                .import(events)
                .unwrap_or_else(|e| panic!("seed {seed}: import: {e}"));
        }
        let r = reps[i].as_mut().unwrap();
        let stored = r.dump().unwrap();
        let view = r.engine().dump();
        assert!(
            stored == view,
            "seed {seed}: replica {i}: store differs from engine:\n{}",
            describe_diff(&view, &stored)
        );
    }
    for _ in 0..2 {
        for i in 0..replicas {
            for j in 0..replicas {
                if i != j {
                    let jvv = reps[j].as_ref().unwrap().version_vector().clone();
                    let ev = reps[i].as_ref().unwrap().events_since(&jvv).unwrap();
                    reps[j]
                        .as_mut()
                        .unwrap()
                        .import(ev)
                        .unwrap_or_else(|e| panic!("seed {seed}: import: {e}"));
                }
            }
        }
    }
    let mut dumps = Vec::new();
    for (i, r) in reps.iter_mut().enumerate() {
        let r = r.as_mut().unwrap();
        let stored = r.dump().unwrap();
        let view = r.engine().dump();
        assert!(
            stored == view,
            "seed {seed}: replica {i}: store differs from engine:\n{}",
            describe_diff(&view, &stored)
        );
        assert_well_formed(r.engine());
        dumps.push(stored);
    }
    for (i, d) in dumps.iter().enumerate().skip(1) {
        assert!(
            *d == dumps[0],
            "seed {seed}: replica {i} diverged:\n{}",
            describe_diff(&dumps[0], d)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Replicas converge when tables are defined concurrently in competing ways (the
    /// rebuild path of take_batch), with crashes, duplicates and partial exchanges.
    #[test]
    fn replicas_converge_with_competing_table_definitions(seed in any::<u64>(), replicas in 2usize..=4, steps in 10usize..120) {
        run_competing_ddl(seed, replicas, steps);
    }
}

/// Compaction leaves the offline queue in the log, even when asked to compact everything:
/// the queue still coalesces, and the graph and the queue survive a reopen.
#[test]
fn compaction_keeps_the_offline_queue() {
    use kuzu_sync_engine::sim::base_schema;
    use kuzu_sync_engine::{Entity, FixedClock, NodeRef, Op, Replica, Value};
    let mut a = memory_replica("a", 1_000);
    a.write(base_schema().into_iter().map(Op::Schema).collect())
        .unwrap();
    let schema_events = a.version_vector().total();
    a.go_offline().unwrap();
    let set = |v: &str| Op::Update {
        entity: Entity::Node(NodeRef {
            table: "User".into(),
            key: Value::Int64(1),
        }),
        prop: "name".into(),
        value: Value::from(v),
    };
    a.write(vec![Op::AddNode {
        table: "User".into(),
        props: vec![("id".into(), Value::Int64(1))],
    }])
    .unwrap();
    a.write(vec![set("x")]).unwrap();
    a.write(vec![set("y")]).unwrap();
    let everything = a.version_vector().clone();
    let report = a.compact_to(&everything).unwrap();
    assert_eq!(
        report.floor.total(),
        schema_events,
        "the queue is not compacted"
    );
    assert_eq!(a.queue_status().unwrap().size, 3);
    let before = a.dump().unwrap();
    let (ev, gr) = a.into_parts();
    let mut a = Replica::open(ev, gr, Box::new(FixedClock(2_000))).unwrap();
    assert_eq!(a.dump().unwrap(), before);
    let coalesced = a.go_online().unwrap();
    assert_eq!((coalesced.raw, coalesced.coalesced), (3, 2));
    assert_eq!(a.dump().unwrap(), before);
}

/// What a read-only caller checks before reading the graph: behind the log, behind the
/// snapshot, or waiting for a snapshot's rebuild.
#[test]
fn graph_is_behind_counts_the_snapshot_and_the_rebuild_flag() {
    use kuzu_sync_engine::replica::graph_is_behind;
    use kuzu_sync_engine::sim::base_schema;
    use kuzu_sync_engine::{EventStore, Op, VersionVector};
    let mut a = memory_replica("a", 1_000);
    a.write(base_schema().into_iter().map(Op::Schema).collect())
        .unwrap();
    let all = a.version_vector().clone();
    assert!(!graph_is_behind(a.event_store(), &all).unwrap());
    assert!(graph_is_behind(a.event_store(), &VersionVector::new()).unwrap());
    a.compact().unwrap();
    assert_eq!(a.event_store().count().unwrap(), 0);
    assert!(!graph_is_behind(a.event_store(), &all).unwrap());
    assert!(graph_is_behind(a.event_store(), &VersionVector::new()).unwrap());
    let (mut ev, _) = a.into_parts();
    ev.set_meta("graph_rebuild", "1").unwrap();
    assert!(graph_is_behind(&ev, &all).unwrap());
}

/// A snapshot whose state is not the state of the vector it claims is refused, naming both,
/// and the replica is unchanged.
#[test]
fn a_snapshot_that_misstates_its_vector_is_refused() {
    use kuzu_sync_engine::sim::base_schema;
    use kuzu_sync_engine::{EventStore, Op, PeerId};
    let mut a = memory_replica("a", 1_000);
    a.write(base_schema().into_iter().map(Op::Schema).collect())
        .unwrap();
    a.compact().unwrap();
    let mut snap = a.event_store().snapshot().unwrap().expect("compacted");
    snap.version_vector.set(PeerId::new("a").unwrap(), 99);
    let mut b = memory_replica("b", 2_000);
    let err = b.install_snapshot(&snap).unwrap_err().to_string();
    assert!(
        err.contains("it claims {a: 99} but holds the state of {a: 7}"),
        "{err}"
    );
    assert_eq!(b.version_vector().total(), 0);
}

/// `forget_peers` forgets all the ids it is given or none: an unknown id is refused, naming
/// it and the known peers, and every known peer stays known (also after a reopen).
#[test]
fn forget_peers_is_all_or_nothing() {
    use kuzu_sync_engine::{FixedClock, Replica, ReplicaError, VersionVector};
    let mut a = memory_replica("a", 1_000);
    for p in ["b", "c"] {
        a.note_remote(p, &VersionVector::new()).unwrap();
    }
    let err = a.forget_peers(&["b", "nobody"]).unwrap_err();
    assert!(matches!(err, ReplicaError::UnknownPeer { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        r#""nobody" is not a known peer of this replica (known: ["b", "c"])"#
    );
    let (ev, gr) = a.into_parts();
    let mut a = Replica::open(ev, gr, Box::new(FixedClock(2_000))).unwrap();
    let known: Vec<String> = a.known_peers().unwrap().into_keys().collect();
    assert_eq!(known, ["b", "c"]);
    a.forget_peers(&["b", "c"]).unwrap();
    let (ev, gr) = a.into_parts();
    let a = Replica::open(ev, gr, Box::new(FixedClock(3_000))).unwrap();
    assert!(a.known_peers().unwrap().is_empty());
}
