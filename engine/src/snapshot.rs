//! Snapshots: the engine's whole CRDT state at a version vector, for compaction and for
//! bootstrapping a replica (see ARCHITECTURE.md, "Compaction, snapshots and bootstrap").

use serde::{Deserialize, Serialize};

use crate::clock::{PeerId, VersionVector};
use crate::conflict::Conflict;
use crate::error::EngineError;
use crate::state::Engine;

/// The engine's state after exactly the events inside `version_vector`, with the checksum
/// of those events (so that sync points stay verifiable after the events are gone).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version_vector: VersionVector,
    /// How many events it covers.
    pub event_count: u64,
    /// XOR of the covered events' digests, truncated to 128 bits (as in sync points).
    pub checksum: [u8; 16],
    /// MessagePack of the engine state and the conflicts seen (private format, versioned).
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version_vector", &self.version_vector)
            .field("event_count", &self.event_count)
            .field("checksum", &hex::encode(self.checksum))
            .field("state_bytes", &self.state.len())
            .finish()
    }
}

impl Snapshot {
    /// An engine for `peer` holding the snapshot's state, and the conflicts recorded with
    /// it. Refused if the state is not the state of `version_vector`.
    pub fn engine(&self, peer: PeerId) -> Result<(Engine, Vec<Conflict>), EngineError> {
        let (engine, conflicts) = Engine::from_snapshot_state(peer, &self.state)?;
        if engine.version_vector() != &self.version_vector {
            return Err(EngineError::InvalidSnapshot(format!(
                "it claims {:?} but holds the state of {:?}",
                self.version_vector,
                engine.version_vector()
            )));
        }
        Ok((engine, conflicts))
    }

    /// Folds one event's digest into a checksum.
    pub fn fold(checksum: &mut [u8; 16], digest: &[u8; 32]) {
        for (s, d) in checksum.iter_mut().zip(digest) {
            *s ^= d;
        }
    }
}
