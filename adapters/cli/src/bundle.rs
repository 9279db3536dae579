//! Offline bundles between replica directories: export what another replica lacks, import
//! what this one lacks. Importing the same bundle twice changes nothing.

use std::io::Write;
use std::path::Path;

use kuzu_sync_engine::replica::{ImportOutcome, InstallReport};
use kuzu_sync_engine::VersionVector;
use kuzu_sync_protocol::{decode, encode, Bundle, BundleV1};

use crate::{Error, KuzuReplica};

/// What an export wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportOutcome {
    pub events: usize,
    /// Events the included snapshot stands for (0: no snapshot; `since` lacked nothing
    /// compacted away).
    pub snapshot_events: u64,
    pub bytes: usize,
    pub since: VersionVector,
    pub until: VersionVector,
}

/// Writes the events `since` lacks to `out`, atomically (a temporary file renamed into place).
pub fn export(
    replica: &KuzuReplica,
    since: &VersionVector,
    out: &Path,
) -> Result<ExportOutcome, Error> {
    // Events before the floor are compacted away: the snapshot stands for them.
    let snapshot = if since.dominates(replica.floor()) {
        None
    } else {
        Some(replica.snapshot_for(&VersionVector::new())?)
    };
    let mut after = since.clone();
    if let Some(s) = &snapshot {
        after.merge(&s.version_vector);
    }
    let events = replica.events_since(&after)?;
    let bundle = Bundle::V1(BundleV1 {
        source_peer: replica.peer().to_string(),
        since: since.clone(),
        until: replica.version_vector().clone(),
        events,
        snapshot,
    });
    let bytes = encode(&bundle);
    let tmp = out.with_extension("partial");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    let v1 = bundle.v1();
    Ok(ExportOutcome {
        events: v1.events.len(),
        snapshot_events: v1.snapshot.as_ref().map_or(0, |s| s.event_count),
        bytes: bytes.len(),
        since: v1.since.clone(),
        until: v1.until.clone(),
    })
}

/// Reads and checks a bundle file.
pub fn read(path: &Path) -> Result<Bundle, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

/// Imports a bundle file: its snapshot first, if it has one with events this replica
/// lacks (the install's report is returned), then its events.
pub fn import(
    replica: &mut KuzuReplica,
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(ImportOutcome, Option<InstallReport>), Error> {
    let bundle = read(path)?;
    let mut installed = None;
    if let Some(snap) = bundle.snapshot() {
        if !replica.version_vector().dominates(&snap.version_vector) {
            installed = Some(replica.install_snapshot(snap)?);
        }
    }
    let outcome = replica.import_with_progress(bundle.into_events(), progress)?;
    Ok((outcome, installed))
}
