//! The replica's failure handling on the in-memory stores (the same suite runs on real
//! Kuzu in `tests/tests/it.rs`).

#[test]
fn replica_failure_suite_in_memory() {
    crate::conformance::replica_failure_suite(&mut crate::memory::MemoryGraphStore::new);
}
