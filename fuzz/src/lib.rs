//! Shared code of the kuzu-sync fuzz targets (see README.md):
//!
//! - [`alloc`]: the global allocator that bounds every single allocation (the targets run
//!   without a sanitizer);
//! - [`fixture`]: the in-memory replicas the `hub_session` target starts from (a hub with a
//!   small schema and history, a client that holds the same history, a forged snapshot);
//! - [`hub`]: the `hub_session` harness. Its own mirror types derive `Arbitrary` (the
//!   engine's types are left alone) and map to `kuzu_sync_engine::sync::Message`;
//! - [`seeds`]: valid messages and bundles for the seed corpora (`examples/seed.rs`).
//!
//! The harness lives here rather than in `fuzz_targets/hub_session.rs` so that the seed
//! generator can run it too (to keep seeds that reach deep states).

pub mod alloc;
pub mod fixture;
pub mod hub;
pub mod seeds;
