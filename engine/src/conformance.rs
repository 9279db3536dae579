//! A conformance suite for [`EventStore`] implementations, shared by the in-memory store and
//! every adapter so that all of them keep the same contract.
//!
//! Call [`event_store_suite`] from a test with a factory that returns a fresh, empty store on
//! every call. Each check panics with a message naming the case and what went wrong.

use crate::clock::{EventId, Hlc, PeerId, VersionVector};
use crate::event::{Event, NodeRef, Op};
use crate::ports::{all_events, EventStore, StoreError};
use crate::value::Value;

/// A valid event `peer:counter` whose causal past is the peer's own previous event.
/// Every third event adds a node with a few properties so stores round-trip more than one op.
///
/// Panics if `peer` is not a valid peer id or `counter` is 0.
pub fn make_event(peer: &str, counter: u64) -> Event {
    make_event_with_key(peer, counter, counter as i64)
}

/// An event with the same id as [`make_event`]`(peer, counter)` but different contents: storing
/// both is equivocation.
pub fn conflicting_event(peer: &str, counter: u64) -> Event {
    make_event_with_key(peer, counter, -(counter as i64) - 1)
}

fn make_event_with_key(peer: &str, counter: u64, key: i64) -> Event {
    assert!(counter > 0, "event counters start at 1");
    let peer = PeerId::new(peer).unwrap_or_else(|e| panic!("test peer id: {e}"));
    let mut deps = VersionVector::new();
    deps.set(peer.clone(), counter - 1);
    let op = if counter % 3 == 0 {
        Op::AddNode {
            table: "T".into(),
            props: vec![
                ("id".into(), Value::Int64(key)),
                ("name".into(), Value::String(format!("{peer}-{counter}"))),
                ("score".into(), Value::Double(counter as f64 / 4.0)),
                ("note".into(), Value::Null),
            ],
        }
    } else {
        Op::DeleteNode(NodeRef {
            table: "T".into(),
            key: Value::Int64(key),
        })
    };
    Event {
        id: EventId { peer, counter },
        deps,
        hlc: Hlc {
            wall_ms: 1_700_000_000_000 + counter,
            logical: 0,
        },
        op,
    }
}

/// Events `first..=last` of `peer`.
pub fn make_events(peer: &str, first: u64, last: u64) -> Vec<Event> {
    (first..=last).map(|c| make_event(peer, c)).collect()
}

/// Runs every check against stores made by `make`, which must return a fresh, empty store on
/// each call. Panics on the first failure.
pub fn event_store_suite<S: EventStore>(make: &mut dyn FnMut() -> S) {
    empty_store(&mut make());
    append_counts_new_events(&mut make());
    reappend_is_idempotent(&mut make());
    equivocation_is_rejected_atomically(&mut make());
    scan_follows_insertion_order(&mut make());
    scan_skips_events_in_since(&mut make());
    scan_stops_at_callback_error(&mut make());
    scan_pages_miss_nothing(&mut make());
    meta_get_set_overwrite(&mut make());
    replace_suffix_rewrites_own_events_atomically(&mut make());
    compact_replaces_covered_events_with_the_snapshot(&mut make());
    ten_thousand_events(&mut make());
}

fn compact_replaces_covered_events_with_the_snapshot(store: &mut dyn EventStore) {
    let case = "compact";
    assert!(
        store.snapshot().unwrap().is_none(),
        "{case}: no snapshot yet"
    );
    append(store, case, &make_events("a", 1, 5));
    append(store, case, &make_events("b", 1, 3));
    let mut vv = VersionVector::new();
    vv.set(peer("a"), 3);
    vv.set(peer("b"), 1);
    let snap = crate::snapshot::Snapshot {
        version_vector: vv.clone(),
        event_count: 4,
        checksum: [7; 16],
        state: vec![1, 2, 3],
    };
    let removed = store
        .compact(&snap, &[("graph_rebuild", "1")])
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    assert_eq!(removed, 4, "{case}: a:1..3 and b:1 are covered");
    assert_eq!(store.snapshot().unwrap().as_ref(), Some(&snap), "{case}");
    assert_eq!(
        ids(&scan_all(store, case)),
        vec!["a:4", "a:5", "b:2", "b:3"],
        "{case}: the tail stays, in order"
    );
    assert_eq!(count(store, case), 4, "{case}");
    assert_eq!(store.meta("graph_rebuild").unwrap().as_deref(), Some("1"));
    // Covered events are not stored again, even with other contents.
    assert_eq!(append(store, case, &make_events("a", 1, 3)), 0, "{case}");
    assert_eq!(
        append(store, case, &[conflicting_event("a", 2)]),
        0,
        "{case}"
    );
    assert_eq!(count(store, case), 4, "{case}");
    // Covered events cannot be rewritten: refused, naming the floor, and nothing changes.
    let err = store
        .replace_suffix(
            &peer("a"),
            2,
            &[make_event_with_key("a", 3, 42)],
            &[("mark", "x")],
        )
        .unwrap_err();
    assert!(err.to_string().contains("up to a:3"), "{case}: {err}");
    assert_eq!(
        ids(&scan_all(store, case)),
        vec!["a:4", "a:5", "b:2", "b:3"],
        "{case}: a refused rewrite changes nothing"
    );
    assert_eq!(store.meta("mark").unwrap(), None, "{case}");
    // A later snapshot replaces the first.
    let mut vv2 = vv.clone();
    vv2.set(peer("a"), 5);
    let snap2 = crate::snapshot::Snapshot {
        version_vector: vv2,
        event_count: 6,
        checksum: [8; 16],
        state: vec![4],
    };
    assert_eq!(store.compact(&snap2, &[]).unwrap(), 2, "{case}");
    assert_eq!(store.snapshot().unwrap().as_ref(), Some(&snap2), "{case}");
    assert_eq!(ids(&scan_all(store, case)), vec!["b:2", "b:3"], "{case}");
}

fn replace_suffix_rewrites_own_events_atomically(store: &mut dyn EventStore) {
    let case = "replace_suffix";
    append(store, case, &make_events("a", 1, 5));
    append(store, case, &make_events("b", 1, 2));
    // a:4 and a:5 become one new a:4 (different contents: a rewrite, not equivocation).
    let new = make_event_with_key("a", 4, 99);
    store
        .replace_suffix(&peer("a"), 3, std::slice::from_ref(&new), &[("mark", "3")])
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let all = scan_all(store, case);
    assert_eq!(
        ids(&all),
        vec!["a:1", "a:2", "a:3", "b:1", "b:2", "a:4"],
        "{case}: the rewritten suffix comes last"
    );
    assert_eq!(all.last().unwrap(), &new, "{case}");
    assert_eq!(count(store, case), 6, "{case}");
    assert_eq!(store.meta("mark").unwrap().as_deref(), Some("3"), "{case}");
    // The new event is stored as any other: appending it again is a no-op, and a
    // different a:4 is equivocation.
    assert_eq!(append(store, case, std::slice::from_ref(&new)), 0, "{case}");
    expect_equivocation(store, case, &make_events("a", 4, 4), "a:4");
    // Out-of-sequence replacements are refused and change nothing.
    let bad = make_events("a", 6, 6);
    assert!(
        store
            .replace_suffix(&peer("a"), 3, &bad, &[("mark", "x")])
            .is_err(),
        "{case}"
    );
    assert_eq!(
        scan_all(store, case),
        all,
        "{case}: a refused rewrite changes nothing"
    );
    assert_eq!(store.meta("mark").unwrap().as_deref(), Some("3"), "{case}");
}

fn append(store: &mut dyn EventStore, case: &str, events: &[Event]) -> usize {
    store
        .append(events)
        .unwrap_or_else(|e| panic!("{case}: append of {} events failed: {e}", events.len()))
}

fn scan_all(store: &dyn EventStore, case: &str) -> Vec<Event> {
    all_events(store).unwrap_or_else(|e| panic!("{case}: scan failed: {e}"))
}

fn scan_since(store: &dyn EventStore, case: &str, since: &VersionVector) -> Vec<Event> {
    let mut out = Vec::new();
    store
        .scan(since, &mut |e| {
            out.push(e);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{case}: scan since {since:?} failed: {e}"));
    out
}

fn count(store: &dyn EventStore, case: &str) -> u64 {
    store
        .count()
        .unwrap_or_else(|e| panic!("{case}: count failed: {e}"))
}

fn ids(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.to_string()).collect()
}

/// Asserts that `got` equals `want`, event by event, naming the first difference.
fn assert_events(case: &str, got: &[Event], want: &[Event]) {
    if got.len() != want.len() {
        panic!(
            "{case}: expected {} events, got {}\n  want {:?}\n  got  {:?}",
            want.len(),
            got.len(),
            ids(want),
            ids(got)
        );
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g != w {
            panic!("{case}: event #{i} differs: expected {w:?}, got {g:?}");
        }
    }
}

fn peer(id: &str) -> PeerId {
    PeerId::new(id).unwrap_or_else(|e| panic!("test peer id: {e}"))
}

fn empty_store(store: &mut dyn EventStore) {
    let case = "empty store";
    assert_eq!(count(store, case), 0, "{case}: count of a new store");
    assert_events(case, &scan_all(store, case), &[]);
    let since: VersionVector = [(peer("a"), 5)].into_iter().collect();
    assert_events(case, &scan_since(store, case, &since), &[]);
    let meta = store
        .meta("peer_id")
        .unwrap_or_else(|e| panic!("{case}: meta failed: {e}"));
    assert_eq!(meta, None, "{case}: meta of a new store");
}

fn append_counts_new_events(store: &mut dyn EventStore) {
    let case = "append returns the number of new events";
    assert_eq!(append(store, case, &[]), 0, "{case}: empty slice");
    assert_eq!(count(store, case), 0, "{case}: count after empty slice");
    let batch = make_events("a", 1, 3);
    assert_eq!(append(store, case, &batch), 3, "{case}: first batch");
    assert_eq!(count(store, case), 3, "{case}: count after first batch");
    let mut second = make_events("b", 1, 2);
    second.extend(make_events("a", 4, 4));
    assert_eq!(append(store, case, &second), 3, "{case}: second batch");
    assert_eq!(count(store, case), 6, "{case}: count after second batch");
    let mut want = batch;
    want.extend(second);
    assert_events(case, &scan_all(store, case), &want);
}

fn reappend_is_idempotent(store: &mut dyn EventStore) {
    let case = "re-append is idempotent";
    let batch = make_events("a", 1, 4);
    assert_eq!(append(store, case, &batch), 4, "{case}: first append");
    assert_eq!(append(store, case, &batch), 0, "{case}: same batch again");
    assert_eq!(append(store, case, &batch[1..3]), 0, "{case}: a sub-slice");
    // Old and new mixed, and a duplicate inside one call: only the new event counts, once.
    let e5 = make_event("a", 5);
    let mixed = vec![batch[0].clone(), e5.clone(), batch[3].clone(), e5.clone()];
    assert_eq!(append(store, case, &mixed), 1, "{case}: mixed batch");
    assert_eq!(count(store, case), 5, "{case}: count");
    let mut want = batch;
    want.push(e5);
    assert_events(case, &scan_all(store, case), &want);
}

fn equivocation_is_rejected_atomically(store: &mut dyn EventStore) {
    let case = "equivocation is rejected atomically";
    let stored = make_events("a", 1, 3);
    append(store, case, &stored);
    store
        .set_meta("k", "v")
        .unwrap_or_else(|e| panic!("{case}: set_meta failed: {e}"));

    // New events around one that conflicts with a stored event.
    let batch = vec![
        make_event("b", 1),
        make_event("a", 4),
        conflicting_event("a", 2),
        make_event("b", 2),
    ];
    expect_equivocation(store, case, &batch, "a:2");
    assert_eq!(count(store, case), 3, "{case}: count after rejected batch");
    assert_events(case, &scan_all(store, case), &stored);

    // Two versions of the same new event inside one call.
    let batch = vec![
        make_event("c", 1),
        make_event("c", 2),
        conflicting_event("c", 2),
    ];
    expect_equivocation(store, case, &batch, "c:2");
    assert_eq!(
        count(store, case),
        3,
        "{case}: count after in-batch conflict"
    );
    assert_events(case, &scan_all(store, case), &stored);

    // The store still works, and still holds the original version.
    assert_eq!(
        append(store, case, &[make_event("b", 1), stored[1].clone()]),
        1,
        "{case}: append after the rejected batches"
    );
    let mut want = stored;
    want.push(make_event("b", 1));
    assert_events(case, &scan_all(store, case), &want);
    let meta = store
        .meta("k")
        .unwrap_or_else(|e| panic!("{case}: meta failed: {e}"));
    assert_eq!(meta.as_deref(), Some("v"), "{case}: meta after rejection");
}

fn expect_equivocation(store: &mut dyn EventStore, case: &str, batch: &[Event], id: &str) {
    match store.append(batch) {
        Err(StoreError::Equivocation { id: got }) => assert_eq!(
            got.to_string(),
            id,
            "{case}: the error must name the equivocating event"
        ),
        Err(other) => panic!("{case}: expected equivocation on {id}, got error {other}"),
        Ok(n) => panic!("{case}: expected equivocation on {id}, but append stored {n} events"),
    }
}

fn scan_follows_insertion_order(store: &mut dyn EventStore) {
    let case = "scan order is insertion order";
    // Interleaved peers, and ids that sort differently from insertion order.
    let batches = [
        vec![make_event("zed", 1), make_event("a", 1)],
        vec![make_event("m", 1), make_event("zed", 2), make_event("m", 2)],
        vec![make_event("a", 2)],
        vec![make_event("b", 1), make_event("zed", 3), make_event("a", 3)],
    ];
    let mut want = Vec::new();
    for batch in &batches {
        append(store, case, batch);
        want.extend(batch.iter().cloned());
        assert_events(case, &scan_all(store, case), &want);
    }
}

fn scan_skips_events_in_since(store: &mut dyn EventStore) {
    let case = "scan skips events in since";
    let mut all = Vec::new();
    for c in 1..=5 {
        all.push(make_event("a", c));
        all.push(make_event("b", c));
        if c <= 2 {
            all.push(make_event("c", c));
        }
    }
    append(store, case, &all);

    let check = |store: &dyn EventStore, since: VersionVector| {
        let want: Vec<Event> = all
            .iter()
            .filter(|e| !since.contains(&e.id))
            .cloned()
            .collect();
        let got = scan_since(store, case, &since);
        assert_events(&format!("{case} (since {since:?})"), &got, &want);
    };
    check(store, VersionVector::new());
    // Partly covered, absent, beyond the stored events, and an unknown peer.
    check(store, [(peer("a"), 3)].into_iter().collect());
    check(
        store,
        [(peer("a"), 2), (peer("c"), 9), (peer("nobody"), 4)]
            .into_iter()
            .collect(),
    );
    check(
        store,
        [(peer("a"), 5), (peer("b"), 5), (peer("c"), 2)]
            .into_iter()
            .collect(),
    );
}

/// Reads `since`'s complement page by page from `from`; returns the events and where to go on.
fn pages(
    store: &dyn EventStore,
    case: &str,
    since: &VersionVector,
    mut from: u64,
    limit: usize,
) -> (Vec<Event>, u64) {
    let mut got = Vec::new();
    loop {
        let mut page = Vec::new();
        let (next, done) = store
            .scan_page(since, from, limit, &mut |e| {
                page.push(e);
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{case}: scan_page failed: {e}"));
        assert!(
            page.len() <= limit,
            "{case}: a page of {} > {limit}",
            page.len()
        );
        assert!(
            next >= from,
            "{case}: position went back from {from} to {next}"
        );
        if !done {
            assert_eq!(
                page.len(),
                limit,
                "{case}: a short page that is not the end"
            );
        }
        got.extend(page);
        from = next;
        if done {
            return (got, from);
        }
    }
}

/// Paging through the log gives what one scan gives, whatever the page size and the
/// `since`; an event appended after the end was reached comes from the returned position;
/// after compaction and a rewrite of a suffix, paging from an old position misses nothing
/// that is still stored after it.
fn scan_pages_miss_nothing(store: &mut dyn EventStore) {
    let case = "scan_page";
    let mut all = Vec::new();
    for c in 1..=6 {
        all.push(make_event("a", c));
        all.push(make_event("b", c));
    }
    append(store, case, &all);
    for since in [
        VersionVector::new(),
        [(peer("a"), 4)].into_iter().collect(),
        [(peer("a"), 6), (peer("b"), 5)].into_iter().collect(),
        [(peer("a"), 6), (peer("b"), 6)].into_iter().collect(),
    ] {
        for limit in [1, 2, 5, 12, 100] {
            let (got, _) = pages(store, case, &since, 0, limit);
            assert_events(
                &format!("{case} (since {since:?}, pages of {limit})"),
                &got,
                &scan_since(store, case, &since),
            );
        }
    }
    let (_, end) = pages(store, case, &VersionVector::new(), 0, 5);
    append(store, case, &make_events("c", 1, 3));
    let (got, end2) = pages(store, case, &VersionVector::new(), end, 2);
    assert_events(
        &format!("{case}: after the end"),
        &got,
        &make_events("c", 1, 3),
    );
    assert!(end2 > end, "{case}: the end moved on");
    let (got, _) = pages(store, case, &VersionVector::new(), end2, 2);
    assert!(got.is_empty(), "{case}: nothing after the end");

    // A page stopped in the middle, then the log is compacted and a suffix rewritten.
    let mut first = Vec::new();
    let (mid, done) = store
        .scan_page(&VersionVector::new(), 0, 3, &mut |e| {
            first.push(e);
            Ok(())
        })
        .unwrap();
    assert!(!done && first.len() == 3, "{case}: a first page of 3");
    let floor: VersionVector = [(peer("a"), 2), (peer("b"), 2)].into_iter().collect();
    let snapshot = crate::snapshot::Snapshot {
        version_vector: floor.clone(),
        event_count: 4,
        checksum: [0; 16],
        state: Vec::new(),
    };
    store.compact(&snapshot, &[]).unwrap();
    let rewritten = make_events("c", 3, 3);
    store
        .replace_suffix(&peer("c"), 2, &rewritten, &[])
        .unwrap();
    let (rest, _) = pages(store, case, &VersionVector::new(), mid, 4);
    let mut want: Vec<Event> = all[3..]
        .iter()
        .filter(|e| !floor.contains(&e.id))
        .cloned()
        .collect();
    want.extend(make_events("c", 1, 2));
    want.extend(rewritten);
    assert_events(
        &format!("{case}: from a position after changes"),
        &rest,
        &want,
    );
}

fn scan_stops_at_callback_error(store: &mut dyn EventStore) {
    let case = "scan stops at the callback's error";
    append(store, case, &make_events("a", 1, 5));
    let mut seen = 0;
    let result = store.scan(&VersionVector::new(), &mut |_| {
        seen += 1;
        if seen == 2 {
            Err(StoreError::Corrupt("stop here".into()))
        } else {
            Ok(())
        }
    });
    match result {
        Err(StoreError::Corrupt(msg)) if msg == "stop here" => {}
        other => panic!("{case}: expected the callback's error back, got {other:?}"),
    }
    assert_eq!(seen, 2, "{case}: callback calls after its error");
}

fn meta_get_set_overwrite(store: &mut dyn EventStore) {
    let case = "meta get/set/overwrite";
    let get = |store: &dyn EventStore, key: &str| {
        store
            .meta(key)
            .unwrap_or_else(|e| panic!("{case}: meta({key:?}) failed: {e}"))
    };
    let set = |store: &mut dyn EventStore, key: &str, value: &str| {
        store
            .set_meta(key, value)
            .unwrap_or_else(|e| panic!("{case}: set_meta({key:?}, {value:?}) failed: {e}"))
    };
    assert_eq!(get(store, "peer_id"), None, "{case}: unset key");
    set(store, "peer_id", "alice");
    set(store, "settings", "{\"x\": 1}");
    assert_eq!(get(store, "peer_id").as_deref(), Some("alice"), "{case}");
    set(store, "peer_id", "bob");
    assert_eq!(
        get(store, "peer_id").as_deref(),
        Some("bob"),
        "{case}: overwrite"
    );
    assert_eq!(
        get(store, "settings").as_deref(),
        Some("{\"x\": 1}"),
        "{case}: other key after overwrite"
    );
    set(store, "empty", "");
    assert_eq!(
        get(store, "empty").as_deref(),
        Some(""),
        "{case}: empty value"
    );
    assert_eq!(
        get(store, "Peer_id"),
        None,
        "{case}: keys are case-sensitive"
    );
    assert_eq!(count(store, case), 0, "{case}: meta is not an event");
}

fn ten_thousand_events(store: &mut dyn EventStore) {
    let case = "10,000-event append and scan";
    let peers = ["p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"];
    let mut all = Vec::with_capacity(10_000);
    for c in 1..=1_000 {
        for p in peers {
            all.push(make_event(p, c));
        }
    }
    assert_eq!(append(store, case, &all), 10_000, "{case}: new events");
    assert_eq!(count(store, case), 10_000, "{case}: count");
    assert_events(case, &scan_all(store, case), &all);
    assert_eq!(append(store, case, &all), 0, "{case}: re-append");

    let since: VersionVector = peers.iter().map(|p| (peer(p), 500)).collect();
    let want: Vec<Event> = all.iter().filter(|e| e.id.counter > 500).cloned().collect();
    assert_events(case, &scan_since(store, case, &since), &want);
}

// ------------------------------------------------------------------ graph stores

use crate::change::{ApplyBatch, GraphChange};
use crate::event::EdgeRef;
use crate::memory::MemoryGraphStore;
use crate::ports::{GraphDump, GraphStore};
use crate::schema::{Column, Multiplicity, NodeTableDef, RelTableDef, Schema, SchemaOp, TableDef};
use crate::value::DataType;

fn col(name: &str, ty: DataType) -> Column {
    Column {
        name: name.into(),
        ty,
        default: None,
    }
}

/// A node table with a column of every type Kuzu has, and sample values for it (a full row,
/// and one of NULLs).
pub fn every_type_table() -> (NodeTableDef, Vec<Vec<Value>>) {
    let s = |v: &str| Value::String(v.into());
    let columns = vec![
        (col("id", DataType::String), s("k1"), s("k2")),
        (col("b", DataType::Bool), Value::Bool(true), Value::Null),
        (col("i8", DataType::Int8), Value::Int8(-8), Value::Null),
        (col("i16", DataType::Int16), Value::Int16(-16), Value::Null),
        (col("i32", DataType::Int32), Value::Int32(-32), Value::Null),
        (col("i64", DataType::Int64), Value::Int64(-64), Value::Null),
        (
            col("i128", DataType::Int128),
            Value::Int128(-170_141_183_460_469_231_731_687_303_715_884_105_727),
            Value::Null,
        ),
        (col("u8", DataType::UInt8), Value::UInt8(255), Value::Null),
        (
            col("u16", DataType::UInt16),
            Value::UInt16(65_535),
            Value::Null,
        ),
        (
            col("u32", DataType::UInt32),
            Value::UInt32(4_000_000_000),
            Value::Null,
        ),
        (
            col("u64", DataType::UInt64),
            Value::UInt64(u64::MAX),
            Value::Null,
        ),
        (col("f", DataType::Float), Value::Float(1.5), Value::Null),
        (
            col("d", DataType::Double),
            Value::Double(-2.25e100),
            Value::Null,
        ),
        (
            col(
                "dec",
                DataType::Decimal {
                    precision: 18,
                    scale: 3,
                },
            ),
            Value::Decimal {
                mantissa: 123_456,
                scale: 3,
            },
            Value::Null,
        ),
        (
            col("s", DataType::String),
            s("héllo, 'world' \"x\" [1]"),
            Value::Null,
        ),
        (
            col("blob", DataType::Blob),
            Value::Blob(vec![0, 1, 0xAA, b'z']),
            Value::Null,
        ),
        (
            col("u", DataType::Uuid),
            Value::Uuid(0xA0EE_BC99_9C0B_4EF8_BB6D_6BB9_BD38_0A11),
            Value::Null,
        ),
        (
            col("date", DataType::Date),
            Value::Date(-25_567),
            Value::Null,
        ),
        (
            col("ts", DataType::Timestamp),
            Value::Timestamp(1_313_839_530_000_123),
            Value::Null,
        ),
        (
            col("ts_ns", DataType::TimestampNs),
            Value::TimestampNs(1_313_839_530_123_456_789),
            Value::Null,
        ),
        (
            col("ts_ms", DataType::TimestampMs),
            Value::TimestampMs(1_313_839_530_123),
            Value::Null,
        ),
        (
            col("ts_sec", DataType::TimestampSec),
            Value::TimestampSec(1_313_839_530),
            Value::Null,
        ),
        (
            col("ts_tz", DataType::TimestampTz),
            Value::TimestampTz(1_313_839_530_000_001),
            Value::Null,
        ),
        (
            col("iv", DataType::Interval),
            Value::Interval {
                months: 38,
                days: 2,
                micros: 46_920_000_024,
            },
            Value::Null,
        ),
        (
            col("ivs", DataType::List(Box::new(DataType::Interval))),
            Value::List(vec![
                Value::Interval {
                    months: 14,
                    days: 3,
                    micros: 1_500_000,
                },
                Value::Null,
            ]),
            Value::Null,
        ),
        (
            col("list", DataType::List(Box::new(DataType::Int64))),
            Value::List(vec![Value::Int64(1), Value::Null, Value::Int64(3)]),
            Value::Null,
        ),
        (
            col(
                "nested",
                DataType::List(Box::new(DataType::List(Box::new(DataType::String)))),
            ),
            Value::List(vec![
                Value::List(vec![s("a"), s("b,c")]),
                Value::List(vec![]),
            ]),
            Value::Null,
        ),
        (
            col("arr", DataType::Array(Box::new(DataType::Double), 2)),
            Value::List(vec![Value::Double(0.5), Value::Double(-1.0)]),
            Value::Null,
        ),
        (
            col(
                "st",
                DataType::Struct(vec![
                    ("revenue".into(), DataType::Int16),
                    (
                        "location".into(),
                        DataType::List(Box::new(DataType::String)),
                    ),
                ]),
            ),
            Value::Struct(vec![
                ("revenue".into(), Value::Int16(7)),
                ("location".into(), Value::List(vec![s("toronto")])),
            ]),
            Value::Null,
        ),
        (
            col(
                "m",
                DataType::Map(Box::new(DataType::String), Box::new(DataType::Int64)),
            ),
            Value::Map(vec![(s("a"), Value::Int64(1)), (s("b"), Value::Int64(2))]),
            Value::Null,
        ),
        (
            col(
                "un",
                DataType::Union(vec![
                    ("price".into(), DataType::Float),
                    ("movein".into(), DataType::Date),
                    ("note".into(), DataType::String),
                ]),
            ),
            Value::Union {
                tag: "movein".into(),
                value: Box::new(Value::Date(18_000)),
            },
            Value::Null,
        ),
    ];
    let def = NodeTableDef {
        name: "Everything".into(),
        columns: columns.iter().map(|(c, _, _)| c.clone()).collect(),
        primary_key: "id".into(),
    };
    let full: Vec<Value> = columns.iter().map(|(_, v, _)| v.clone()).collect();
    // A second full row with other values (a bulk write path that repeats one row's value
    // for every row must not pass), then a row of NULLs.
    let mut other: Vec<Value> = full.iter().map(alternate).collect();
    other[0] = s("k3");
    let rows = vec![
        full,
        columns.iter().map(|(_, _, v)| v.clone()).collect(),
        other,
    ];
    (def, rows)
}

/// A different value of the same type.
fn alternate(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::Bool(b) => Value::Bool(!b),
        Value::Int8(x) => Value::Int8(x.wrapping_add(1)),
        Value::Int16(x) => Value::Int16(x.wrapping_add(1)),
        Value::Int32(x) => Value::Int32(x.wrapping_add(1)),
        Value::Int64(x) => Value::Int64(x.wrapping_add(1)),
        Value::Int128(x) => Value::Int128(x.wrapping_add(1)),
        Value::UInt8(x) => Value::UInt8(x.wrapping_sub(1)),
        Value::UInt16(x) => Value::UInt16(x.wrapping_sub(1)),
        Value::UInt32(x) => Value::UInt32(x.wrapping_sub(1)),
        Value::UInt64(x) => Value::UInt64(x.wrapping_sub(1)),
        Value::Float(x) => Value::Float(x + 1.0),
        Value::Double(x) => Value::Double(x / 2.0),
        Value::Decimal { mantissa, scale } => Value::Decimal {
            mantissa: mantissa - 1,
            scale: *scale,
        },
        Value::String(x) => Value::String(format!("{x}!")),
        Value::Blob(x) => Value::Blob(x.iter().rev().cloned().collect()),
        Value::Uuid(x) => Value::Uuid(x ^ 1),
        Value::Date(x) => Value::Date(x + 1),
        Value::Timestamp(x) => Value::Timestamp(x + 1),
        Value::TimestampNs(x) => Value::TimestampNs(x + 1),
        Value::TimestampMs(x) => Value::TimestampMs(x + 1),
        Value::TimestampSec(x) => Value::TimestampSec(x + 1),
        Value::TimestampTz(x) => Value::TimestampTz(x + 1),
        Value::Interval {
            months,
            days,
            micros,
        } => Value::Interval {
            months: months + 1,
            days: *days,
            micros: micros + 1,
        },
        Value::List(items) => Value::List(items.iter().map(alternate).collect()),
        Value::Struct(f) => {
            Value::Struct(f.iter().map(|(n, v)| (n.clone(), alternate(v))).collect())
        }
        Value::Map(e) => Value::Map(e.iter().map(|(k, v)| (k.clone(), alternate(v))).collect()),
        Value::Union { tag, .. } if tag == "note" => Value::Union {
            tag: "price".into(),
            value: Box::new(Value::Float(2.5)),
        },
        Value::Union { .. } => Value::Union {
            tag: "note".into(),
            value: Box::new(Value::String("plain note".into())),
        },
    }
}

fn node(table: &str, key: Value) -> NodeRef {
    NodeRef {
        table: table.into(),
        key,
    }
}

fn edge(table: &str, from: i64, to: i64, key: &str) -> EdgeRef {
    EdgeRef {
        table: table.into(),
        from: node("P", Value::Int64(from)),
        to: node("P", Value::Int64(to)),
        key: key.into(),
    }
}

fn wm(n: u64) -> VersionVector {
    let mut v = VersionVector::new();
    v.set(PeerId::new("conf").expect("valid"), n);
    v
}

/// The batches of the graph-store suite, with the schema each needs.
fn graph_batches() -> Vec<(Schema, ApplyBatch)> {
    let mut schema = Schema::default();
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut step = |schema: &mut Schema, ops: Vec<SchemaOp>, changes: Vec<GraphChange>| {
        for op in ops {
            n += 1;
            let stamp = crate::clock::Stamp {
                hlc: Hlc {
                    wall_ms: n,
                    logical: 0,
                },
                peer: PeerId::new("conf").expect("valid"),
                counter: n,
            };
            schema.apply(&op, &stamp);
        }
        n += 1;
        (
            schema.clone(),
            ApplyBatch {
                changes,
                watermark: wm(n),
                may_exist: false,
            },
        )
    };
    let (every, every_rows) = every_type_table();
    let p = NodeTableDef {
        name: "P".into(),
        columns: vec![col("id", DataType::Int64), col("name", DataType::String)],
        primary_key: "id".into(),
    };
    let knows = RelTableDef {
        name: "Knows".into(),
        connections: vec![("P".into(), "P".into())],
        columns: vec![
            col("since", DataType::Int64),
            col("tags", DataType::List(Box::new(DataType::String))),
        ],
        multiplicity: Multiplicity::ManyMany,
    };
    let likes = RelTableDef {
        name: "Likes".into(),
        connections: vec![("P".into(), "P".into())],
        columns: vec![
            col("weight", DataType::Double),
            col("note", DataType::String),
        ],
        multiplicity: Multiplicity::ManyMany,
    };
    let boss = RelTableDef {
        name: "Boss".into(),
        connections: vec![("P".into(), "P".into())],
        columns: vec![],
        multiplicity: Multiplicity::ManyOne,
    };
    let ops = vec![
        SchemaOp::CreateNodeTable(p.clone()),
        SchemaOp::CreateNodeTable(every.clone()),
        SchemaOp::CreateRelTable(knows.clone()),
        SchemaOp::CreateRelTable(boss.clone()),
        SchemaOp::CreateRelTable(likes.clone()),
    ];
    let mut changes: Vec<GraphChange> = vec![
        GraphChange::CreateTable(TableDef::Node(p.clone())),
        GraphChange::CreateTable(TableDef::Node(every.clone())),
        GraphChange::CreateTable(TableDef::Rel(knows.clone())),
        GraphChange::CreateTable(TableDef::Rel(boss.clone())),
        GraphChange::CreateTable(TableDef::Rel(likes)),
    ];
    for row in every_rows.iter() {
        changes.push(GraphChange::UpsertNode {
            node: node("Everything", row[0].clone()),
            values: row.clone(),
            is_new: true,
            changed: Vec::new(),
        });
    }
    // 300 people: enough rows to take the bulk (COPY) paths of a store that has them. Some
    // names are hard for a CSV path: empty, NULL, quotes, commas, line breaks.
    for i in 0..300 {
        let name = match i {
            1 => Value::Null,
            2 => Value::String("line one\nline \"two\", three".into()),
            _ => Value::String(format!("p{i}")),
        };
        changes.push(GraphChange::UpsertNode {
            node: node("P", Value::Int64(i)),
            values: vec![Value::Int64(i), name],
            is_new: true,
            changed: Vec::new(),
        });
    }
    out.push(step(&mut schema, ops, changes));
    // Many new edges at once, multi-edges included; and many new nodes into a table that is
    // not empty.
    let mut changes = Vec::new();
    for i in 300..550 {
        changes.push(GraphChange::UpsertNode {
            node: node("P", Value::Int64(i)),
            values: vec![Value::Int64(i), Value::String(format!("late {i}"))],
            is_new: true,
            changed: Vec::new(),
        });
    }
    for i in 0..300 {
        changes.push(GraphChange::UpsertEdge {
            edge: edge("Knows", i, (i + 1) % 300, ""),
            values: vec![
                Value::Int64(2000 + i),
                Value::List(vec![Value::String("x".into())]),
            ],
            is_new: true,
        });
    }
    // Simple-typed edges: a store's fastest bulk path (Kuzu: a CSV file and COPY).
    for i in 0..250 {
        changes.push(GraphChange::UpsertEdge {
            edge: edge(
                "Likes",
                i,
                (i * 3 + 1) % 300,
                if i % 50 == 0 { "k, \"q\"" } else { "" },
            ),
            values: vec![
                Value::Double(i as f64 / 3.0),
                if i == 7 {
                    Value::Null
                } else {
                    Value::String(format!("n{i}\n,x"))
                },
            ],
            is_new: true,
        });
    }
    changes.push(GraphChange::UpsertEdge {
        edge: edge("Knows", 0, 1, "second"),
        values: vec![Value::Null, Value::Null],
        is_new: true,
    });
    changes.push(GraphChange::UpsertEdge {
        edge: edge("Boss", 5, 6, ""),
        values: vec![],
        is_new: true,
    });
    out.push(step(&mut schema, vec![], changes));
    // Updates, deletes, a few new edges (the single-row path).
    let changes = vec![
        GraphChange::UpsertNode {
            node: node("P", Value::Int64(1)),
            values: vec![Value::Int64(1), Value::String(String::new())],
            is_new: false,
            changed: Vec::new(),
        },
        GraphChange::UpsertNode {
            node: node("Everything", Value::String("k2".into())),
            values: every_rows[0]
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if i == 0 {
                        Value::String("k2".into())
                    } else {
                        v.clone()
                    }
                })
                .collect(),
            is_new: false,
            changed: Vec::new(),
        },
        GraphChange::UpsertEdge {
            edge: edge("Knows", 0, 1, "second"),
            values: vec![Value::Int64(1999), Value::List(vec![])],
            is_new: false,
        },
        GraphChange::DeleteEdge(edge("Knows", 2, 3, "")),
        GraphChange::DeleteNode(node("P", Value::Int64(10))),
        GraphChange::UpsertEdge {
            edge: edge("Knows", 7, 7, "self"),
            values: vec![Value::Int64(1), Value::Null],
            is_new: true,
        },
    ];
    out.push(step(&mut schema, vec![], changes));
    // A new column with a default, then a row that sets it.
    let age = Column {
        name: "age".into(),
        ty: DataType::Int64,
        default: Some(Value::Int64(18)),
    };
    let changes = vec![
        GraphChange::AddColumns {
            table: "P".into(),
            columns: vec![age.clone()],
        },
        GraphChange::UpsertNode {
            node: node("P", Value::Int64(2)),
            values: vec![
                Value::Int64(2),
                Value::String("p2".into()),
                Value::Int64(40),
            ],
            is_new: false,
            changed: Vec::new(),
        },
    ];
    out.push(step(
        &mut schema,
        vec![SchemaOp::AddColumn {
            table: "P".into(),
            column: age,
        }],
        changes,
    ));
    // A table rebuilt from scratch (as after a late, competing definition).
    let changes = vec![
        GraphChange::DropTable("Boss".into()),
        GraphChange::CreateTable(TableDef::Rel(boss)),
        GraphChange::UpsertEdge {
            edge: edge("Boss", 8, 9, ""),
            values: vec![],
            is_new: true,
        },
    ];
    out.push(step(&mut schema, vec![], changes));
    out
}

/// Runs the graph-store suite: the same batches go to the store under test and to the
/// in-memory reference; after each, dumps and watermarks must be equal. Re-applying a batch
/// must change nothing but the watermark (apply is idempotent), and every Kuzu type must
/// round-trip.
pub fn graph_store_suite<G: GraphStore>(make: &mut dyn FnMut() -> G) {
    graph_store_suite_with(make, &|_| {});
}

/// [`graph_store_suite`] for a store with a documented loss: `normalize` is applied to both
/// the stored and the reference dumps before they are compared (say, cutting TIMESTAMP_NS
/// values to the microsecond; see [`to_microseconds`]).
pub fn graph_store_suite_with<G: GraphStore>(
    make: &mut dyn FnMut() -> G,
    normalize: &dyn Fn(&mut GraphDump),
) {
    let mut store = make();
    let mut reference = MemoryGraphStore::new();
    assert_eq!(
        store.watermark().expect("watermark of an empty store"),
        VersionVector::new(),
        "graph store: a new store has an empty watermark"
    );
    for (i, (schema, batch)) in graph_batches().into_iter().enumerate() {
        reference.apply(&batch, &schema).expect("reference applies");
        store
            .apply(&batch, &schema)
            .unwrap_or_else(|e| panic!("graph store: batch {i} failed: {e}"));
        let mut want = reference.dump(&schema).expect("reference dump");
        let mut got = store.dump(&schema).expect("dump");
        normalize(&mut want);
        normalize(&mut got);
        assert_eq!(
            got,
            want,
            "graph store: after batch {i} the stored graph differs from the reference:\n{}",
            crate::sim::describe_diff(&want, &got)
        );
        assert_eq!(
            store.watermark().expect("watermark"),
            batch.watermark,
            "graph store: watermark after batch {i}"
        );
        // Idempotence: the data changes of the batch again (DDL is idempotent too, but a
        // rebuild's DROP would legitimately empty a table, so it is left out).
        if !batch
            .changes
            .iter()
            .any(|c| matches!(c, GraphChange::DropTable(_)))
        {
            // As in recovery after a crash between two commit steps: the inserts again,
            // flagged as possibly present.
            let again = ApplyBatch {
                changes: batch
                    .changes
                    .iter()
                    .filter(|c| !matches!(c, GraphChange::DeleteNode(_)))
                    .cloned()
                    .collect(),
                watermark: batch.watermark.clone(),
                may_exist: true,
            };
            store
                .apply(&again, &schema)
                .unwrap_or_else(|e| panic!("graph store: re-applying batch {i} failed: {e}"));
            let mut got = store.dump(&schema).expect("dump");
            normalize(&mut got);
            assert_eq!(
                got, want,
                "graph store: re-applying batch {i} changed the graph"
            );
        }
    }
}

/// Cuts every TIMESTAMP_NS value in `dump` (at any depth) to the microsecond: the one loss
/// of the portable statements (`cypher`), since Kuzu 0.11 reads TIMESTAMP_NS from text to
/// the microsecond.
pub fn to_microseconds(dump: &mut GraphDump) {
    fn cut(v: &mut Value) {
        match v {
            Value::TimestampNs(ns) => *ns -= ns.rem_euclid(1_000),
            Value::List(items) => items.iter_mut().for_each(cut),
            Value::Struct(fields) => fields.iter_mut().for_each(|(_, v)| cut(v)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                cut(k);
                cut(v);
            }),
            Value::Union { value, .. } => cut(value),
            _ => {}
        }
    }
    for rows in dump.values_mut() {
        for row in rows.iter_mut() {
            row.iter_mut().for_each(cut);
        }
        rows.sort();
    }
}

/// A graph store that fails on demand: the next `fail_applies` calls to `apply` fail before
/// reaching the wrapped store (which is left unchanged), as a full disk or a crashed
/// database would. For tests of the replica's failure handling over any graph store.
#[derive(Debug)]
pub struct FlakyGraph<G> {
    pub inner: G,
    pub fail_applies: u32,
    /// Applies refused so far.
    pub failed: u32,
    /// Watermark reads so far (every rebuild from the stores starts with one).
    pub watermark_reads: u32,
}

impl<G> FlakyGraph<G> {
    pub fn new(inner: G) -> Self {
        FlakyGraph {
            inner,
            fail_applies: 0,
            failed: 0,
            watermark_reads: 0,
        }
    }

    /// Fails if an injected failure is due.
    fn inject(&mut self) -> Result<(), StoreError> {
        if self.fail_applies > 0 {
            self.fail_applies -= 1;
            self.failed += 1;
            return Err(StoreError::Corrupt("injected graph store failure".into()));
        }
        Ok(())
    }
}

impl<G: GraphStore> GraphStore for FlakyGraph<G> {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        self.watermark_reads += 1;
        self.inner.watermark()
    }
    fn apply(&mut self, batch: &ApplyBatch, schema: &Schema) -> Result<(), StoreError> {
        self.inject()?;
        self.inner.apply(batch, schema)
    }
    fn apply_when(
        &mut self,
        batch: &ApplyBatch,
        schema: &Schema,
        ready: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.inject()?;
        self.inner.apply_when(batch, schema, ready)
    }
    fn overlaps_append(&self) -> bool {
        self.inner.overlaps_append()
    }
    fn dump(&mut self, schema: &Schema) -> Result<GraphDump, StoreError> {
        self.inner.dump(schema)
    }
}

/// An event store that fails on demand: the next `fail_appends` calls to `append` fail,
/// storing nothing, after `delay` (a slow disk that then reports an error). For tests of
/// the order between the log and a graph store that works while the log is written. The
/// count is shared, so a test sets it while the replica owns the store.
#[derive(Debug, Default)]
pub struct FlakyEvents<E> {
    pub inner: E,
    pub fail_appends: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub delay: std::time::Duration,
}

impl<E: EventStore> EventStore for FlakyEvents<E> {
    fn append(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        use std::sync::atomic::Ordering;
        std::thread::sleep(self.delay);
        let due = self
            .fail_appends
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if due.is_ok() {
            return Err(StoreError::Corrupt("injected event store failure".into()));
        }
        self.inner.append(events)
    }
    fn scan(
        &self,
        since: &VersionVector,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.inner.scan(since, f)
    }
    fn scan_page(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(u64, bool), StoreError> {
        self.inner.scan_page(since, from, limit, f)
    }
    fn count(&self) -> Result<u64, StoreError> {
        self.inner.count()
    }
    fn snapshot(&self) -> Result<Option<crate::snapshot::Snapshot>, StoreError> {
        self.inner.snapshot()
    }
    fn compact(
        &mut self,
        snapshot: &crate::snapshot::Snapshot,
        meta: &[(&str, &str)],
    ) -> Result<u64, StoreError> {
        self.inner.compact(snapshot, meta)
    }
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.meta(key)
    }
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set_meta(key, value)
    }
    fn replace_suffix(
        &mut self,
        peer: &PeerId,
        after: u64,
        events: &[Event],
        meta: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        self.inner.replace_suffix(peer, after, events, meta)
    }
}

/// The replica's failure handling over a real graph store, made to fail through
/// [`FlakyGraph`]:
/// - a write whose graph apply fails, and whose rebuild fails too, leaves the replica
///   refusing work (`Unrecovered`) until a rebuild succeeds; then the graph holds every
///   logged event, the failed batch included (it was logged before the apply), and equals
///   the engine's view: never a watermark over rows the graph lacks;
/// - the same for an import;
/// - an import refused before it changed anything (a gap in causality, an invalid first
///   event) costs no rebuild: the graph store is not touched.
///
/// `make` returns a fresh, empty graph store on every call.
pub fn replica_failure_suite<G: GraphStore>(make: &mut dyn FnMut() -> G) {
    use crate::memory_log::MemoryEventStore;
    use crate::replica::{Replica, ReplicaError};
    use crate::schema::{Column, SchemaOp};

    let table = Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "T".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: DataType::Int64,
                default: None,
            },
            Column {
                name: "name".into(),
                ty: DataType::String,
                default: None,
            },
        ],
        primary_key: "id".into(),
    }));
    let add = |id: i64| Op::AddNode {
        table: "T".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("name".into(), Value::String(format!("n{id}"))),
        ],
    };
    let open = |graph: FlakyGraph<G>, peer: &str| {
        Replica::create(
            MemoryEventStore::default(),
            graph,
            PeerId::new(peer).unwrap(),
            Box::new(crate::clock::FixedClock(1_700_000_000_000)),
        )
        .unwrap()
    };
    // The graph's rows, and whether they are the engine's view.
    fn rows<G: GraphStore>(r: &mut Replica<MemoryEventStore, FlakyGraph<G>>) -> GraphDump {
        let schema = r.engine().schema().clone();
        let stored = r.graph().dump(&schema).unwrap();
        assert_eq!(stored, r.engine().dump(), "graph store vs engine view");
        stored
    }
    let names = |d: &GraphDump| -> Vec<String> {
        d.values()
            .flat_map(|t| t.iter().map(|row| format!("{row:?}")))
            .collect()
    };

    // Case 1: a write fails in apply, then in the rebuild that follows; the next write
    // (the graph works again) must first rebuild, so the failed batch reaches the graph.
    let mut r = open(FlakyGraph::new(make()), "a");
    r.write(vec![table.clone(), add(1)]).unwrap();
    r.graph().fail_applies = 2;
    let err = r.write(vec![add(2)]).unwrap_err();
    assert!(err.to_string().contains("injected"), "case 1: {err}");
    assert_eq!(
        r.graph().failed,
        2,
        "case 1: the apply and the rebuild both failed"
    );
    assert!(r.is_unrecovered(), "case 1: a failed rebuild is remembered");
    r.write(vec![add(4)]).unwrap();
    assert!(!r.is_unrecovered());
    let shown = names(&rows(&mut r)).join(" ");
    for id in [1, 2, 4] {
        assert!(
            shown.contains(&format!("n{id}]")),
            "case 1: node {id} missing from the graph: {shown}"
        );
    }
    assert_eq!(
        r.graph().watermark().unwrap(),
        *r.version_vector(),
        "case 1: watermark"
    );
    // While the graph keeps failing, every write is refused, naming why, and none is
    // applied.
    r.graph().fail_applies = 3;
    assert!(r.write(vec![add(5)]).is_err());
    let err = r.write(vec![add(6)]).unwrap_err();
    assert!(
        matches!(err, ReplicaError::Unrecovered { .. }),
        "case 1: a write before a successful rebuild must be refused, got {err}"
    );
    r.write(vec![add(7)]).unwrap();
    let shown = names(&rows(&mut r)).join(" ");
    assert!(
        shown.contains("n5]") && shown.contains("n7]"),
        "case 1: {shown}"
    );
    assert!(
        !shown.contains("n6]"),
        "case 1: the refused write is not applied: {shown}"
    );

    // Case 2: the same for an import.
    let mut src = open(FlakyGraph::new(make()), "src");
    src.write(vec![table.clone(), add(10), add(11)]).unwrap();
    let mut dst = open(FlakyGraph::new(make()), "dst");
    dst.graph().fail_applies = 2;
    let all = src.events_since(&VersionVector::new()).unwrap();
    assert!(dst.import(all.clone()).is_err());
    assert!(dst.is_unrecovered(), "case 2");
    dst.write(vec![]).unwrap();
    assert_eq!(
        dst.version_vector(),
        src.version_vector(),
        "case 2: the logged import"
    );
    assert_eq!(
        rows(&mut dst),
        rows(&mut src),
        "case 2: the graph got the import"
    );

    // Case 3: refusals that change nothing do not touch the graph store.
    let mut dst = open(FlakyGraph::new(make()), "dst3");
    dst.write(vec![table.clone(), add(20)]).unwrap();
    let before = rows(&mut dst);
    dst.graph().fail_applies = 1_000;
    let gap = all[1..].to_vec();
    let err = dst.import(gap).unwrap_err();
    assert!(
        matches!(err, ReplicaError::MissingHistory { .. }),
        "case 3: {err}"
    );
    let mut bad = all.clone();
    bad[0].op = Op::AddNode {
        table: "NoSuchTable".into(),
        props: vec![("id".into(), Value::Int64(1))],
    };
    let err = dst.import(bad).unwrap_err();
    assert!(err.to_string().contains("NoSuchTable"), "case 3: {err}");
    assert_eq!(dst.graph().failed, 0, "case 3: no rebuild was attempted");
    assert!(!dst.is_unrecovered());
    dst.graph().fail_applies = 0;
    assert_eq!(rows(&mut dst), before, "case 3");

    // Case 4: the log append fails (slowly, so a store that works beside it is mid-batch):
    // the graph holds nothing of the batch, a write or an import, and its watermark has
    // not moved; the replica goes on. With a store that committed before the log was
    // durable, the rows would be there.
    let fail_appends = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut r = Replica::create(
        FlakyEvents {
            inner: MemoryEventStore::default(),
            fail_appends: fail_appends.clone(),
            delay: std::time::Duration::from_millis(30),
        },
        FlakyGraph::new(make()),
        PeerId::new("a4").unwrap(),
        Box::new(crate::clock::FixedClock(1_700_000_000_000)),
    )
    .unwrap();
    r.write(vec![table.clone(), add(30)]).unwrap();
    let schema = r.engine().schema().clone();
    let before = r.graph().dump(&schema).unwrap();
    let watermark = r.graph().watermark().unwrap();
    fail_appends.store(2, std::sync::atomic::Ordering::SeqCst);
    let err = r.write((31..36).map(add).collect()).unwrap_err();
    assert!(
        err.to_string().contains("injected event store"),
        "case 4: {err}"
    );
    let err = r.import(all.clone()).unwrap_err();
    assert!(
        err.to_string().contains("injected event store"),
        "case 4: {err}"
    );
    assert_eq!(r.graph().dump(&schema).unwrap(), before, "case 4: graph");
    assert_eq!(
        r.graph().watermark().unwrap(),
        watermark,
        "case 4: watermark"
    );
    assert_eq!(r.event_store().count().unwrap(), 2, "case 4: log");
    r.write(vec![add(36)]).unwrap();
    r.import(all.clone()).unwrap();
    let schema = r.engine().schema().clone();
    let shown = names(&r.graph().dump(&schema).unwrap()).join(" ");
    assert!(
        shown.contains("n36]") && shown.contains("n10]") && !shown.contains("n31]"),
        "case 4: {shown}"
    );
    assert_eq!(
        r.graph().dump(&schema).unwrap(),
        r.engine().dump(),
        "case 4"
    );
}
