//! kuzu-sync's replication core: events, clocks, deterministic conflict resolution and the
//! ports to storage. Pure: no IO, no threads, no clocks of its own; builds for
//! `wasm32-unknown-unknown`.
//!
//! Events go in ([`Engine::apply`]), graph changes and conflict records come out. The
//! [`Replica`] drives an engine against an [`EventStore`] and a [`GraphStore`].

pub mod antientropy;
pub mod auth;
pub mod change;
mod chunked;
pub mod clock;
pub mod conflict;
pub mod conformance;
pub mod core;
pub mod cypher;
pub mod ddl;
pub mod error;
pub mod event;
pub mod json;
pub mod limits;
pub mod memory;
pub mod memory_log;
pub mod merkle;
pub mod packed_log;
pub mod ports;
pub mod queue;
pub mod replica;
pub mod schema;
pub mod sim;
pub mod snapshot;
pub mod state;
pub mod sync;
pub mod text;
pub mod tx;
pub mod value;

pub use change::{ApplyBatch, GraphChange};
pub use clock::{EventId, FixedClock, Hlc, PeerId, Stamp, VersionVector, WallClock};
pub use conflict::{Conflict, ConflictKind};
pub use error::EngineError;
pub use event::{EdgeRef, Entity, Event, NodeRef, Op};
pub use memory_log::MemoryEventStore;
pub use packed_log::PackedEventStore;
pub use ports::{EventStore, GraphDump, GraphStore, StoreError};
pub use replica::{Replica, ReplicaError, ReplicaStatus};
pub use schema::{
    Column, Multiplicity, NodeTableDef, Policy, RelTableDef, Schema, SchemaOp, TableDef,
};
pub use snapshot::Snapshot;
pub use state::Engine;
pub use value::{DataType, Value};
