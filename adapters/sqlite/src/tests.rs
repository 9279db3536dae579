//! Unit tests of the SQLite event store: the shared conformance suite, in memory and on disk,
//! plus durability, atomicity and corruption checks specific to SQLite.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kuzu_sync_engine::conformance::{
    conflicting_event, event_store_suite, make_event, make_events,
};
use kuzu_sync_engine::ports::all_events;
use kuzu_sync_engine::{EventStore, PeerId, StoreError, VersionVector};

use super::SqliteEventStore;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kuzu-sync-sqlite-{}-{name}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vv(entries: &[(&str, u64)]) -> VersionVector {
    entries
        .iter()
        .map(|&(p, c)| (PeerId::new(p).unwrap(), c))
        .collect()
}

#[test]
fn conformance_in_memory() {
    event_store_suite(&mut || SqliteEventStore::open_in_memory().unwrap());
}

#[test]
fn conformance_file_backed() {
    let dir = TempDir::new("conformance");
    let mut n = 0;
    event_store_suite(&mut || {
        n += 1;
        SqliteEventStore::open(&dir.path().join(format!("events-{n}.db"))).unwrap()
    });
}

#[test]
fn events_and_meta_persist_across_reopen() {
    let dir = TempDir::new("reopen");
    let path = dir.path().join("events.db");
    let mut events = make_events("a", 1, 5);
    events.extend(make_events("b", 1, 3));
    {
        let mut store = SqliteEventStore::open(&path).unwrap();
        assert_eq!(store.path(), path);
        assert_eq!(store.append(&events).unwrap(), 8);
        store.set_meta("peer_id", "a").unwrap();
    }
    let mut store = SqliteEventStore::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), 8);
    assert_eq!(all_events(&store).unwrap(), events);
    assert_eq!(store.meta("peer_id").unwrap().as_deref(), Some("a"));
    // Still writable, and still deduplicating against what was stored before.
    assert_eq!(store.append(&make_events("a", 5, 6)).unwrap(), 1);
    assert_eq!(store.count().unwrap(), 9);
}

#[test]
fn file_store_uses_wal_full_sync_and_schema_version() {
    let dir = TempDir::new("pragmas");
    let store = SqliteEventStore::open(&dir.path().join("events.db")).unwrap();
    let pragma = |name: &str| -> String {
        store
            .conn
            .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|v| match v {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .unwrap()
    };
    assert_eq!(pragma("journal_mode"), "wal");
    assert_eq!(pragma("synchronous"), "2", "2 is FULL");
    assert_eq!(pragma("foreign_keys"), "1");
    assert_eq!(pragma("user_version"), "2");
}

/// A log written by version 1 (no snapshot table) opens, gains the table, keeps its events
/// and can be compacted.
#[test]
fn version_1_store_is_migrated_with_its_events() {
    let dir = TempDir::new("migrate");
    let path = dir.path().join("events.db");
    {
        let mut store = SqliteEventStore::open(&path).unwrap();
        store.append(&make_events("a", 1, 3)).unwrap();
        store
            .conn
            .execute_batch("DROP TABLE snapshot; PRAGMA user_version = 1;")
            .unwrap();
    }
    let mut store = SqliteEventStore::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), 3);
    assert!(store.snapshot().unwrap().is_none());
    let mut vv = VersionVector::new();
    vv.set(PeerId::new("a").unwrap(), 2);
    let snap = kuzu_sync_engine::Snapshot {
        version_vector: vv,
        event_count: 2,
        checksum: [1; 16],
        state: vec![9],
    };
    assert_eq!(store.compact(&snap, &[]).unwrap(), 2);
    drop(store);
    // The floor survives a reopen: covered events are still not stored again.
    let mut store = SqliteEventStore::open(&path).unwrap();
    assert_eq!(store.snapshot().unwrap(), Some(snap));
    assert_eq!(store.append(&make_events("a", 1, 3)).unwrap(), 0);
    assert_eq!(store.count().unwrap(), 1);
}

/// Snapshots are stored zstd-compressed and read back exactly; a row written before
/// compression at rest (the state as it is) still reads; a damaged compressed state is
/// reported as corrupt.
#[test]
fn snapshot_state_is_compressed_at_rest() {
    let dir = TempDir::new("compressed");
    let path = dir.path().join("events.db");
    let mut store = SqliteEventStore::open(&path).unwrap();
    store.append(&make_events("a", 1, 3)).unwrap();
    let mut vv = VersionVector::new();
    vv.set(PeerId::new("a").unwrap(), 2);
    // MessagePack-like state: an array marker, then repetitive content.
    let mut state = vec![0x9a];
    for i in 0..20_000u32 {
        state.extend_from_slice(&(i % 97).to_le_bytes());
    }
    let snap = kuzu_sync_engine::Snapshot {
        version_vector: vv,
        event_count: 2,
        checksum: [3; 16],
        state,
    };
    store.compact(&snap, &[]).unwrap();
    let stored: Vec<u8> = store
        .conn
        .query_row("SELECT state FROM snapshot", [], |r| r.get(0))
        .unwrap();
    assert!(stored.starts_with(&super::ZSTD_MAGIC));
    assert_eq!(
        store.snapshot_bytes_at_rest().unwrap(),
        Some(stored.len() as u64)
    );
    assert!(
        stored.len() * 10 < snap.state.len(),
        "{} bytes stored for {}",
        stored.len(),
        snap.state.len()
    );
    drop(store);
    let store = SqliteEventStore::open(&path).unwrap();
    assert_eq!(store.snapshot().unwrap().as_ref(), Some(&snap));
    // An uncompressed row, as written before.
    store
        .conn
        .execute("UPDATE snapshot SET state = ?1", [&snap.state])
        .unwrap();
    assert_eq!(store.snapshot().unwrap().as_ref(), Some(&snap));
    // A damaged compressed state.
    let mut damaged = stored.clone();
    damaged.truncate(stored.len() / 2);
    store
        .conn
        .execute("UPDATE snapshot SET state = ?1", [&damaged])
        .unwrap();
    let err = store.snapshot().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
    assert!(err.to_string().contains("does not decompress"), "{err}");
}

#[test]
fn newer_schema_version_is_refused_with_the_path() {
    let dir = TempDir::new("version");
    let path = dir.path().join("events.db");
    {
        let store = SqliteEventStore::open(&path).unwrap();
        store.conn.pragma_update(None, "user_version", 7).unwrap();
    }
    let err = SqliteEventStore::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("schema version 7"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn open_error_names_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("no-such-dir").join("events.db");
    let msg = SqliteEventStore::open(&path).unwrap_err().to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn equivocation_leaves_the_store_unchanged() {
    let dir = TempDir::new("equivocation");
    let path = dir.path().join("events.db");
    let stored = make_events("a", 1, 3);
    let mut store = SqliteEventStore::open(&path).unwrap();
    store.append(&stored).unwrap();

    let batch = [
        make_event("b", 1),
        make_event("a", 4),
        conflicting_event("a", 3),
    ];
    match store.append(&batch) {
        Err(StoreError::Equivocation { id }) => assert_eq!(id.to_string(), "a:3"),
        other => panic!("expected equivocation on a:3, got {other:?}"),
    }
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(all_events(&store).unwrap(), stored);
    drop(store);
    // Nothing of the rejected batch reached the file either.
    let store = SqliteEventStore::open(&path).unwrap();
    assert_eq!(all_events(&store).unwrap(), stored);
}

#[test]
fn duplicates_are_skipped() {
    let mut store = SqliteEventStore::open_in_memory().unwrap();
    let e1 = make_event("a", 1);
    let e2 = make_event("a", 2);
    assert_eq!(
        store.append(&[e1.clone(), e1.clone(), e2.clone()]).unwrap(),
        2
    );
    assert_eq!(store.append(&[e2.clone(), e1.clone()]).unwrap(), 0);
    assert_eq!(store.count().unwrap(), 2);
    assert_eq!(all_events(&store).unwrap(), vec![e1, e2]);
}

#[test]
fn scan_filters_by_since() {
    let mut store = SqliteEventStore::open_in_memory().unwrap();
    let mut events = Vec::new();
    for c in 1..=4 {
        events.push(make_event("a", c));
        events.push(make_event("b", c));
    }
    store.append(&events).unwrap();
    let scan = |since: VersionVector| {
        let mut ids = Vec::new();
        store
            .scan(&since, &mut |e| {
                ids.push(e.id.to_string());
                Ok(())
            })
            .unwrap();
        ids
    };
    assert_eq!(
        scan(vv(&[("a", 3), ("b", 1)])),
        ["b:2", "b:3", "a:4", "b:4"]
    );
    assert_eq!(scan(vv(&[("a", 9), ("b", 4)])), Vec::<String>::new());
    assert_eq!(scan(vv(&[("zz", 2)])).len(), 8);
}

#[test]
fn tampered_body_is_reported_as_corrupt_naming_the_event() {
    let mut store = SqliteEventStore::open_in_memory().unwrap();
    store.append(&make_events("a", 1, 3)).unwrap();
    store
        .conn
        .execute(
            "UPDATE events SET body = x'c1c2c3' WHERE peer = 'a' AND counter = 2",
            [],
        )
        .unwrap();
    let mut seen = Vec::new();
    let err = store
        .scan(&VersionVector::new(), &mut |e| {
            seen.push(e.id.to_string());
            Ok(())
        })
        .unwrap_err();
    let StoreError::Corrupt(msg) = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert!(msg.contains("a:2"), "{msg}");
    assert!(msg.contains("seq 2"), "{msg}");
    assert!(msg.contains("decode"), "{msg}");
    assert_eq!(seen, ["a:1"], "events before the bad row are delivered");
    // A `since` that skips the bad row never decodes it.
    assert_eq!(all_events_since(&store, vv(&[("a", 2)])).unwrap().len(), 1);
}

#[test]
fn body_not_matching_its_digest_is_reported_as_corrupt() {
    let mut store = SqliteEventStore::open_in_memory().unwrap();
    store.append(&make_events("a", 1, 2)).unwrap();
    // A well-formed body, but not the one the digest was computed for.
    store
        .conn
        .execute(
            "UPDATE events SET body = ?1 WHERE peer = 'a' AND counter = 1",
            [conflicting_event("a", 1).encode()],
        )
        .unwrap();
    let err = all_events(&store).unwrap_err();
    let StoreError::Corrupt(msg) = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert!(msg.contains("a:1") && msg.contains("digest"), "{msg}");

    // A body that holds another event than its row says.
    store
        .conn
        .execute(
            "UPDATE events SET body = ?1 WHERE peer = 'a' AND counter = 1",
            [make_event("a", 2).encode()],
        )
        .unwrap();
    let msg = all_events(&store).unwrap_err().to_string();
    assert!(
        msg.contains("a:1") && msg.contains("holds event a:2"),
        "{msg}"
    );
}

fn all_events_since(
    store: &SqliteEventStore,
    since: VersionVector,
) -> Result<Vec<kuzu_sync_engine::Event>, StoreError> {
    let mut out = Vec::new();
    store.scan(&since, &mut |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn debug_shows_the_path() {
    let store = SqliteEventStore::open_in_memory().unwrap();
    assert!(format!("{store:?}").contains(":memory:"));
}

/// 100,000 events in one call to a file-backed store. Prints the throughput (run with
/// `--nocapture` to see it).
#[test]
fn append_100k_events_in_one_call() {
    let dir = TempDir::new("bulk");
    let mut store = SqliteEventStore::open(&dir.path().join("events.db")).unwrap();
    let peers = ["p0", "p1", "p2", "p3"];
    let events: Vec<_> = (1..=25_000)
        .flat_map(|c| peers.iter().map(move |p| make_event(p, c)))
        .collect();
    let start = Instant::now();
    assert_eq!(store.append(&events).unwrap(), 100_000);
    let append = start.elapsed();
    let start = Instant::now();
    let mut n = 0;
    store
        .scan(&VersionVector::new(), &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    let scan = start.elapsed();
    assert_eq!(n, 100_000);
    let start = Instant::now();
    assert_eq!(store.append(&events).unwrap(), 0);
    let reappend = start.elapsed();
    eprintln!(
        "100k events: append {append:?} ({:.0} events/s), scan {scan:?}, re-append {reappend:?}",
        100_000.0 / append.as_secs_f64()
    );
}

/// A scan from the log's start begins at the first event `since` lacks (one index seek
/// per peer): what it returns, and the position it hands back for the next page, are those
/// of a walk of the whole log; an event another connection appends is seen; with nothing
/// missing the position is past the end, and an event appended later is read from there.
#[test]
fn a_scan_from_the_start_seeks_the_first_missing_event() {
    let dir = TempDir::new("seek");
    let path = dir.path().join("events.sqlite");
    let mut store = SqliteEventStore::open(&path).unwrap();
    let mut events = Vec::new();
    for c in 1..=300 {
        events.push(make_event("a", c));
        if c % 3 == 0 {
            events.push(make_event("b", c / 3));
        }
    }
    store.append(&events).unwrap();
    let page = |store: &SqliteEventStore, since: &VersionVector, from: u64| {
        let mut ids = Vec::new();
        let (next, done) = store
            .scan_page(since, from, 1_000, &mut |e| {
                ids.push(e.id.to_string());
                Ok(())
            })
            .unwrap();
        (ids, next, done)
    };
    // The last 4 events: a:299, a:300, b:100 after a:300.
    let (ids, next, done) = page(&store, &vv(&[("a", 298), ("b", 99)]), 0);
    assert_eq!(ids, ["a:299", "a:300", "b:100"]);
    assert!(done);
    assert_eq!(
        next,
        events.len() as u64 + 1,
        "the position after the last row"
    );
    // A peer `since` does not name starts at its first event.
    let (ids, _, _) = page(&store, &vv(&[("a", 300)]), 0);
    assert_eq!(ids.len(), 100);
    assert_eq!(ids[0], "b:1");
    // Nothing missing: the position is past the end, and what is appended after is read.
    let (ids, next, _) = page(&store, &vv(&[("a", 300), ("b", 100)]), 0);
    assert!(ids.is_empty());
    store.append(&[make_event("c", 1)]).unwrap();
    let (ids, _, _) = page(&store, &vv(&[("a", 300), ("b", 100)]), next);
    assert_eq!(ids, ["c:1"]);
    // Another connection's append is seen by a scan from the start.
    let mut other = SqliteEventStore::open(&path).unwrap();
    other
        .append(&[make_event("d", 1), make_event("a", 301)])
        .unwrap();
    let (ids, _, _) = page(&store, &vv(&[("a", 300), ("b", 100), ("c", 1)]), 0);
    assert_eq!(ids, ["d:1", "a:301"]);
    // Past MAX_SEEKS peers behind, the walk starts at 0 and still finds everything.
    let many: Vec<_> = (0..=super::MAX_SEEKS)
        .map(|i| make_event(&format!("p{i}"), 1))
        .collect();
    store.append(&many).unwrap();
    let (ids, _, _) = page(
        &store,
        &vv(&[("a", 301), ("b", 100), ("c", 1), ("d", 1)]),
        0,
    );
    assert_eq!(ids.len(), super::MAX_SEEKS + 1);
}

/// An append looks up only events at or below the peer's highest stored counter: the
/// others cannot be stored. That bound must hold across connections: another connection's
/// commit is seen (a version of an event it stored is an equivocation, not a constraint
/// error; the same event again adds nothing), and so is a duplicate within one call.
#[test]
fn appends_skip_lookups_only_above_what_any_connection_stored() {
    let dir = TempDir::new("append-bound");
    let path = dir.path().join("events.sqlite");
    let mut a = SqliteEventStore::open(&path).unwrap();
    let mut b = SqliteEventStore::open(&path).unwrap();
    // Both connections have read the peers' counters.
    assert_eq!(a.append(&make_events("p", 1, 2)).unwrap(), 2);
    assert_eq!(b.append(&make_events("q", 1, 1)).unwrap(), 1);
    // `a` stores p:3 and p:4; `b` last read p's counter as 2.
    assert_eq!(a.append(&make_events("p", 3, 4)).unwrap(), 2);
    match b.append(&[conflicting_event("p", 4)]) {
        Err(StoreError::Equivocation { id }) => assert_eq!(id.to_string(), "p:4"),
        other => panic!("expected an equivocation on p:4, got {other:?}"),
    }
    assert_eq!(
        b.append(&make_events("p", 3, 5)).unwrap(),
        1,
        "only p:5 is new"
    );
    // Within one call: p:6 new, then a second version of it.
    match a.append(&[make_event("p", 6), conflicting_event("p", 6)]) {
        Err(StoreError::Equivocation { id }) => assert_eq!(id.to_string(), "p:6"),
        other => panic!("expected an equivocation on p:6, got {other:?}"),
    }
    assert_eq!(
        a.append(&[make_event("p", 6), make_event("p", 6)]).unwrap(),
        1
    );
    let stored = all_events(&a).unwrap();
    let ids: Vec<String> = stored.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, ["p:1", "p:2", "q:1", "p:3", "p:4", "p:5", "p:6"]);
}
