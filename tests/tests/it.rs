//! kuzu-sync's cross-crate tests on real SQLite and Kuzu: conformance of the real stores,
//! and randomized convergence of replicas whose graphs are real Kuzu databases.

use kuzu_sync_engine::sim::{run, Scenario};
use kuzu_sync_kuzu::{KuzuConfig, KuzuGraphStore};
use kuzu_sync_sqlite::SqliteEventStore;
use kuzu_sync_tests::KuzuBackend;
use proptest::prelude::*;

/// The suite twice: with the default thresholds, and with low ones so that its batches take
/// the COPY paths (CSV files, COPY from a parameter list, the checkpointed commit).
#[test]
fn kuzu_graph_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [
        ("default", KuzuConfig::small()),
        (
            "copy",
            KuzuConfig {
                node_copy_threshold: 100,
                edge_copy_threshold: 100,
                ..KuzuConfig::small()
            },
        ),
    ] {
        let mut n = 0;
        kuzu_sync_engine::conformance::graph_store_suite(&mut || {
            n += 1;
            KuzuGraphStore::open(&dir.path().join(format!("{name}{n}.kuzu")), &config).unwrap()
        });
    }
}

#[test]
fn sqlite_event_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    kuzu_sync_engine::conformance::event_store_suite(&mut || {
        n += 1;
        SqliteEventStore::open(&dir.path().join(format!("e{n}.sqlite"))).unwrap()
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// The convergence invariant with real Kuzu graphs: replicas that end with the same
    /// events hold identical Kuzu databases (and each equals its engine's view).
    #[test]
    fn kuzu_replicas_converge(seed in any::<u64>(), replicas in 3usize..=5, steps in 5usize..30, keys in 2u64..5, schema in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let sc = Scenario { seed, replicas, steps, keys, schema_changes: schema, crash_percent: 5, compact_percent: 5 };
        run(&mut KuzuBackend::new(dir.path()), &sc).unwrap();
    }
}

/// The offline queue on real SQLite + Kuzu: coalescing changes no row, survives a reopen,
/// and a crash between the log rewrite and the move of Kuzu's watermark (simulated by
/// rewriting the log behind the replica's back) is repaired on open, after which new
/// writes are applied, not mistaken for applied ones.
#[test]
fn offline_queue_rewrite_on_kuzu_survives_a_crash_before_the_watermark_moves() {
    use kuzu_sync_engine::queue::coalesce;
    use kuzu_sync_engine::{EventStore, FixedClock, PeerId, Replica};
    let dir = tempfile::tempdir().unwrap();
    let (ev, gr) = (
        dir.path().join("events.sqlite"),
        dir.path().join("graph.kuzu"),
    );
    let open = || {
        (
            SqliteEventStore::open(&ev).unwrap(),
            KuzuGraphStore::open(&gr, &KuzuConfig::small()).unwrap(),
        )
    };
    let write = |r: &mut Replica<SqliteEventStore, KuzuGraphStore>, lines: &str| {
        let ops = kuzu_sync_engine::json::parse_op_lines(lines, r.engine().schema()).unwrap();
        r.write(ops.into_iter().map(|(_, op)| op).collect())
            .unwrap();
    };
    let (e, g) = open();
    let mut r = Replica::create(e, g, PeerId::new("a").unwrap(), Box::new(FixedClock(1))).unwrap();
    let mut schema = r.engine().schema().clone();
    let ddl = kuzu_sync_engine::json::schema_ops(
        "CREATE NODE TABLE U(id INT64, s STRING, n INT64, PRIMARY KEY(id))",
        &mut schema,
    )
    .unwrap();
    r.write(ddl.into_iter().map(kuzu_sync_engine::Op::Schema).collect())
        .unwrap();
    write(
        &mut r,
        r#"{"op":"set_policy","table":"U","prop":"n","policy":"counter"}
{"op":"add_node","table":"U","props":{"id":1,"s":"x","n":0}}"#,
    );
    r.go_offline().unwrap();
    let offline = r#"{"op":"update","table":"U","key":1,"prop":"s","value":"a"}
{"op":"increment","table":"U","key":1,"prop":"n","delta":2}
{"op":"update","table":"U","key":1,"prop":"s","value":"b"}
{"op":"increment","table":"U","key":1,"prop":"n","delta":3}"#;
    write(&mut r, offline);
    let before = r.dump().unwrap();
    // 1. The normal path: coalesce, no row changes, reopen agrees.
    let report = r.coalesce_offline_queue().unwrap();
    assert_eq!((report.raw, report.coalesced), (4, 2));
    assert_eq!(r.dump().unwrap(), before);
    drop(r);
    let (e, g) = open();
    let mut r = Replica::open(e, g, Box::new(FixedClock(2))).unwrap();
    assert_eq!(r.dump().unwrap(), before);
    assert_eq!(r.queue_status().unwrap().size, 2);
    // 2. A crash between the log rewrite and the watermark move: queue 4 more ops, then
    //    rewrite the log directly (as `rewrite_queue` does) and "crash" before Kuzu's
    //    watermark is touched.
    write(&mut r, offline);
    let before = r.dump().unwrap();
    let queue = r.offline_queue().unwrap();
    assert_eq!(queue.len(), 6);
    let mark = queue[0].id.counter - 1;
    let rewritten = coalesce(&queue, mark);
    drop(r);
    {
        let mut log = SqliteEventStore::open(&ev).unwrap();
        log.replace_suffix(
            &PeerId::new("a").unwrap(),
            mark,
            &rewritten,
            &[("offline_queue_rewritten", "1")],
        )
        .unwrap();
    }
    let (e, g) = open();
    let mut r = Replica::open(e, g, Box::new(FixedClock(3))).unwrap();
    assert_eq!(
        r.dump().unwrap(),
        before,
        "the rows are those of the raw queue"
    );
    assert_eq!(
        r.queue_status().unwrap().size,
        2,
        "8 queued ops coalesced into 2"
    );
    let wm = r.status().unwrap().apply_watermark;
    assert_eq!(
        &wm,
        r.version_vector(),
        "the watermark is back inside the log"
    );
    // New writes after the repair are applied (a watermark left beyond the log would have
    // made them look applied already, and a reopen would skip them).
    write(
        &mut r,
        r#"{"op":"increment","table":"U","key":1,"prop":"n","delta":100}"#,
    );
    let after = r.dump().unwrap();
    drop(r);
    let (e, g) = open();
    let mut r = Replica::open(e, g, Box::new(FixedClock(4))).unwrap();
    assert_eq!(r.dump().unwrap(), after);
    assert_eq!(
        after["U"][0][2],
        kuzu_sync_engine::Value::Int64(110),
        "{after:?}"
    );
}
