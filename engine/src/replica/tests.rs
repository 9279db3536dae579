//! The replica's failure handling on the in-memory stores (the same suite runs on real
//! Kuzu in `tests/tests/it.rs`).

#[test]
fn replica_failure_suite_in_memory() {
    crate::conformance::replica_failure_suite(&mut crate::memory::MemoryGraphStore::new);
}

fn seal_from(peer: &str, wall_ms: u64) -> crate::Event {
    crate::Event {
        id: crate::EventId {
            peer: crate::PeerId::new(peer).unwrap(),
            counter: 1,
        },
        deps: crate::VersionVector::new(),
        hlc: crate::Hlc {
            wall_ms,
            logical: 0,
        },
        op: crate::Op::Seal,
    }
}

fn memory_replica(
    now_ms: u64,
) -> crate::Replica<crate::MemoryEventStore, crate::memory::MemoryGraphStore> {
    crate::Replica::create(
        crate::MemoryEventStore::default(),
        crate::memory::MemoryGraphStore::new(),
        crate::PeerId::new("me").unwrap(),
        Box::new(crate::FixedClock(now_ms)),
    )
    .unwrap()
}

/// An event stamped more than a day ahead of this replica's clock is refused (it would
/// win every last-writer-wins conflict until then, and one at the end of time would
/// exhaust the clock); within a day it is accepted.
#[test]
fn events_from_far_in_the_future_are_refused() {
    let now = 1_700_000_000_000;
    let mut r = memory_replica(now);
    let day = crate::limits::MAX_CLOCK_AHEAD_MS;
    let err = r.import(vec![seal_from("far", now + day + 1)]).unwrap_err();
    assert!(err.to_string().contains("more than a day ahead"), "{err}");
    let err = r.import(vec![seal_from("end", u64::MAX)]).unwrap_err();
    assert!(err.to_string().contains("more than a day ahead"), "{err}");
    assert!(r.version_vector().is_empty());
    r.import(vec![seal_from("near", now + day)]).unwrap();
    // A local write after it still moves forward.
    r.write(vec![crate::Op::Seal]).unwrap();
}

/// An import that would take the version vector past the number of peers anyone can
/// decode is refused whole.
#[test]
fn an_import_past_the_peer_limit_is_refused() {
    let mut r = memory_replica(1_000);
    let events: Vec<_> = (0..=crate::limits::MAX_VECTOR_PEERS)
        .map(|i| seal_from(&format!("p{i}"), 500))
        .collect();
    let err = r.import(events).unwrap_err();
    assert!(
        err.to_string()
            .contains("100001 peers, over the limit of 100000"),
        "{err}"
    );
    assert!(r.version_vector().is_empty());
}
