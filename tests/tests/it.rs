//! kuzu-sync's cross-crate tests on real SQLite and Kuzu: conformance of the real stores,
//! and randomized convergence of replicas whose graphs are real Kuzu databases.

use kuzu_sync_engine::sim::{
    assert_did_work, check_repeated_apply_failures, run, FailPoint, Scenario, SimStats,
};
use kuzu_sync_kuzu::{KuzuConfig, KuzuGraphStore};
use kuzu_sync_sqlite::SqliteEventStore;
use kuzu_sync_tests::KuzuBackend;
use proptest::prelude::*;

/// The suite three times: with the default thresholds; with low ones so that its batches
/// take the COPY paths (CSV files, COPY from a parameter list, the checkpointed commit); and
/// with every update of existing nodes going through the stage table's join (every type).
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
        (
            "join",
            KuzuConfig {
                update_join_threshold: 1,
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

/// The portable statements (`engine::cypher`: scalars as strings under `CAST`, nested
/// values as literals; what the JS hosts will run) pass the same suite on real Kuzu: every
/// type, re-applies under recovery. Their one loss, TIMESTAMP_NS below the microsecond, is
/// cut from both sides before comparing.
#[test]
fn portable_statements_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    kuzu_sync_engine::conformance::graph_store_suite_with(
        &mut || {
            n += 1;
            kuzu_sync_kuzu::portable::PortableGraphStore::open(
                &dir.path().join(format!("portable{n}.kuzu")),
                &KuzuConfig::small(),
            )
            .unwrap()
        },
        &kuzu_sync_engine::conformance::to_microseconds,
    );
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
    /// events hold identical Kuzu databases (and each equals its engine's view), with
    /// crashes and with Kuzu applies failing once, twice or three times in a row (before
    /// Kuzu sees the batch, or after it committed). In half the cases the COPY thresholds
    /// are 1 to 3 rows, so that batches take the COPY paths too.
    #[test]
    fn kuzu_replicas_converge(seed in any::<u64>(), replicas in 3usize..=5, steps in 5usize..30, keys in 2u64..5, schema in any::<bool>(), faults in 0u32..=3, copy in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let sc = Scenario { seed, replicas, steps, keys, schema_changes: schema, crash_percent: 5, compact_percent: 5, fault_percent: 10, faults_in_a_row: faults };
        let mut backend = if copy {
            KuzuBackend::with_copy_threshold(dir.path(), 1 + (seed % 3) as usize)
        } else {
            KuzuBackend::new(dir.path())
        };
        let report = run(&mut backend, &sc).unwrap();
        assert_did_work(&sc, &report.stats);
        if !copy {
            prop_assert_eq!(report.stats.bulk_batches, 0, "{}", report.stats);
        }
    }
}

/// The randomized test on Kuzu is not vacuous: a few fixed scenarios with a COPY threshold
/// of one row and faults twice in a row take the COPY path, and replicas are checked after
/// recovering from failures. `--nocapture` prints the totals.
#[test]
fn kuzu_simulator_takes_the_copy_path_and_recovers_from_failures() {
    let mut total = SimStats::default();
    for seed in 0..4u64 {
        let dir = tempfile::tempdir().unwrap();
        let sc = Scenario {
            seed,
            replicas: 3,
            steps: 25,
            keys: 4,
            schema_changes: seed % 2 == 0,
            crash_percent: 5,
            compact_percent: 5,
            fault_percent: 20,
            faults_in_a_row: 2,
        };
        let report = run(&mut KuzuBackend::with_copy_threshold(dir.path(), 1), &sc).unwrap();
        assert_did_work(&sc, &report.stats);
        total.add(&report.stats);
    }
    println!("{total}");
    assert!(total.bulk_batches > 0, "{total}");
    assert!(
        total.failures_fired > 0 && total.recovered_checks > 0,
        "{total}"
    );
    assert!(total.events_applied > 0 && total.crashes > 0, "{total}");
}

/// A Kuzu store whose applies fail once, twice (a write's or an import's, then the
/// recovery's right after it) or three times in a row, before Kuzu sees the batch or after
/// it committed: once a call succeeds again, no batch is missing from Kuzu, also after a
/// reopen; with the default thresholds and with COPY for every batch.
#[test]
fn kuzu_failures_in_a_row_lose_no_batch() {
    for copy in [false, true] {
        for n in 1..=3 {
            for at in [FailPoint::Before, FailPoint::After] {
                let dir = tempfile::tempdir().unwrap();
                let mut backend = if copy {
                    KuzuBackend::with_copy_threshold(dir.path(), 1)
                } else {
                    KuzuBackend::new(dir.path())
                };
                check_repeated_apply_failures(&mut backend, n, at);
            }
        }
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

/// Compaction and snapshot installs on real SQLite + Kuzu:
/// - compacting changes no Kuzu row, and a reopen replays only the tail;
/// - a replica behind another's compacted log installs its snapshot: Kuzu is rebuilt
///   (node and rel tables dropped and created again) and the replica's own writes stay;
/// - a crash after the snapshot is stored but before Kuzu is rebuilt (the log compacted
///   behind the replica's back, with the rebuild flag set, as `install_snapshot` does) is
///   finished on open.
#[test]
fn snapshots_on_kuzu_compact_install_and_survive_a_crash_before_the_rebuild() {
    use kuzu_sync_engine::{EventStore, FixedClock, PeerId, Replica, VersionVector};
    type R = Replica<SqliteEventStore, KuzuGraphStore>;
    let dir = tempfile::tempdir().unwrap();
    let paths = |name: &str| {
        (
            dir.path().join(format!("{name}.sqlite")),
            dir.path().join(format!("{name}.kuzu")),
        )
    };
    let open = |name: &str| -> R {
        let (ev, gr) = paths(name);
        Replica::open(
            SqliteEventStore::open(&ev).unwrap(),
            KuzuGraphStore::open(&gr, &KuzuConfig::small()).unwrap(),
            Box::new(FixedClock(9)),
        )
        .unwrap()
    };
    let create = |name: &str, now: u64| -> R {
        let (ev, gr) = paths(name);
        Replica::create(
            SqliteEventStore::open(&ev).unwrap(),
            KuzuGraphStore::open(&gr, &KuzuConfig::small()).unwrap(),
            PeerId::new(name).unwrap(),
            Box::new(FixedClock(now)),
        )
        .unwrap()
    };
    let write = |r: &mut R, lines: &str| {
        let ops = kuzu_sync_engine::json::parse_op_lines(lines, r.engine().schema()).unwrap();
        r.write(ops.into_iter().map(|(_, op)| op).collect())
            .unwrap();
    };
    let users = |from: i64, to: i64| -> String {
        (from..to)
            .map(|i| {
                format!(r#"{{"op":"add_node","table":"U","props":{{"id":{i},"s":"u{i}","n":0}}}}"#)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let knows = |from: i64, to: i64| -> String {
        (from..to)
            .map(|i| format!(r#"{{"op":"add_edge","table":"K","from":{i},"to":{},"key":"k{i}","props":{{"since":{i}}}}}"#, i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let mut hub = create("hub", 1_000);
    let mut schema = hub.engine().schema().clone();
    let ddl = kuzu_sync_engine::json::schema_ops(
        "CREATE NODE TABLE U(id INT64, s STRING, n INT64, PRIMARY KEY(id));
         CREATE REL TABLE K(FROM U TO U, since INT64)",
        &mut schema,
    )
    .unwrap();
    hub.write(ddl.into_iter().map(kuzu_sync_engine::Op::Schema).collect())
        .unwrap();
    write(
        &mut hub,
        r#"{"op":"set_policy","table":"U","prop":"n","policy":"counter"}"#,
    );
    write(&mut hub, &users(0, 40));
    write(&mut hub, &knows(0, 30));
    // The client gets everything so far, then writes on its own.
    let mut client = create("client", 2_000);
    client
        .import(hub.events_since(&VersionVector::new()).unwrap())
        .unwrap();
    write(&mut client, &users(100, 105));
    write(
        &mut client,
        r#"{"op":"increment","table":"U","key":3,"prop":"n","delta":5}
{"op":"update","table":"U","key":4,"prop":"s","value":"client"}"#,
    );
    // The hub carries on, then compacts everything (it knows no peer).
    write(&mut hub, &users(40, 60));
    write(
        &mut hub,
        r#"{"op":"increment","table":"U","key":3,"prop":"n","delta":7}
{"op":"delete_node","table":"U","key":10}"#,
    );
    let before = hub.dump().unwrap();
    let report = hub.compact().unwrap();
    assert_eq!(report.remaining_events, 0);
    assert_eq!(
        hub.dump().unwrap(),
        before,
        "compaction changes no Kuzu row"
    );
    drop(hub);
    let mut hub = open("hub");
    assert_eq!(hub.dump().unwrap(), before, "reopened from the snapshot");
    assert_eq!(hub.status().unwrap().stored_events, 0);

    // What the client must end with: every event of both, applied the plain way.
    let mut want_replica = create("plain", 3_000);
    let (hub_floor, client_events) = (
        hub.floor().clone(),
        client.events_since(&VersionVector::new()).unwrap(),
    );
    assert!(!hub_floor.is_empty());
    let snap = hub.snapshot_for(client.floor()).unwrap();
    let mut plain_events = client_events.clone();
    drop(client);
    // The hub's events: only its snapshot holds them now, so the plain replica installs it
    // too, then takes the client's events.
    want_replica.install_snapshot(&snap).unwrap();
    want_replica.import(plain_events.split_off(0)).unwrap();
    let want = want_replica.dump().unwrap();
    assert_eq!(
        want["U"].len(),
        64,
        "60 of the hub's minus one deleted, 5 of the client's"
    );

    // 1. A crash after the snapshot is stored, before Kuzu is rebuilt.
    {
        let (ev, _) = paths("client");
        let mut log = SqliteEventStore::open(&ev).unwrap();
        log.compact(&snap, &[("graph_rebuild", "1")]).unwrap();
    }
    let mut client = open("client");
    assert_eq!(client.dump().unwrap(), want, "open finished the rebuild");
    assert_eq!(client.engine().dump(), want);
    let own = client_events
        .iter()
        .filter(|e| e.id.peer.as_str() == "client")
        .count();
    assert_eq!(
        client.status().unwrap().stored_events,
        own as u64,
        "only its own stay"
    );
    drop(client);
    let mut client = open("client");
    assert_eq!(
        client.dump().unwrap(),
        want,
        "and once finished, it stays so"
    );

    // 2. The normal path, on a fresh copy of the client's history (what the client held
    //    before the crash): install keeps its own events and rebuilds Kuzu.
    let mut again = create("again", 4_000);
    again.import(client_events.clone()).unwrap();
    let report = again.install_snapshot(&snap).unwrap();
    assert_eq!(report.snapshot_events, snap.event_count);
    assert_eq!(report.kept_events, own as u64);
    assert_eq!(again.dump().unwrap(), want);
    assert_eq!(again.engine().dump(), want);
    // And the hub, given the client's events, agrees.
    hub.import(client.events_since(hub.version_vector()).unwrap())
        .unwrap();
    assert_eq!(hub.dump().unwrap(), want);
}

/// The replica's failure handling (a failed rebuild is remembered; no watermark over a
/// batch Kuzu never got; refusals before any change touch nothing) on real Kuzu.
#[test]
fn replica_failure_suite_on_kuzu() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    kuzu_sync_engine::conformance::replica_failure_suite(&mut || {
        n += 1;
        KuzuGraphStore::open(&dir.path().join(format!("f{n}.kuzu")), &KuzuConfig::small()).unwrap()
    });
}
