//! `adopt`: turn a database made with plain Kuzu into a replica, with no data loss.
//!
//! The source is **copied, not used in place**: it is opened read-only, exported with
//! Kuzu's own `EXPORT DATABASE` (schema and CSV files), and the export is loaded into a
//! new replica as replicated ops (schema ops, then one `add_node` / `add_edge` per row),
//! through the same path as `kuzu-sync schema` + `kuzu-sync load`. The original file and
//! its WAL are never written, so it stays a backup, and a failed adopt leaves nothing
//! behind. The cost is the disk space of a second copy and the time of a full load.

use std::path::{Path, PathBuf};

use kuzu_sync_engine::Op;
use kuzu_sync_kuzu::kuzu::{Connection, Database, SystemConfig};
use serde::Serialize;

use crate::load::{load_script, LoadedFile};
use crate::{init, ops, Error, KuzuReplica, EVENT_LOG};

/// What `adopt` did.
#[derive(Debug, Clone, Serialize)]
pub struct AdoptOutcome {
    pub source: PathBuf,
    pub schema_ops: usize,
    pub rows: usize,
    pub files: Vec<LoadedFile>,
}

/// Makes the Kuzu database at `from` into a new replica in `dir` with peer id `peer_id`.
/// `progress` gets (table, rows loaded so far).
pub fn adopt(
    dir: &Path,
    from: &Path,
    peer_id: &str,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<(KuzuReplica, AdoptOutcome), Error> {
    if !from.exists() {
        return Err(Error::Invalid(format!(
            "{}: no such Kuzu database",
            from.display()
        )));
    }
    if dir.join(EVENT_LOG).exists() {
        return Err(Error::AlreadyExists(dir.to_path_buf()));
    }
    let existed = dir.exists();
    let result = adopt_inner(dir, from, peer_id, progress);
    if result.is_err() {
        // Leave nothing half-made behind (the source was never touched).
        if existed {
            for name in [EVENT_LOG, crate::GRAPH_DB, EXPORT_DIR] {
                let p = dir.join(name);
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    result
}

const EXPORT_DIR: &str = "adopt-export";

fn adopt_inner(
    dir: &Path,
    from: &Path,
    peer_id: &str,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<(KuzuReplica, AdoptOutcome), Error> {
    kuzu_sync_engine::PeerId::new(peer_id)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let export = dir.join(EXPORT_DIR);
    export_database(from, &export)?;
    let mut replica = init(dir, peer_id)?;
    let schema_file = export.join("schema.cypher");
    let text = std::fs::read_to_string(&schema_file).map_err(|e| Error::io(&schema_file, e))?;
    let mut schema = replica.engine().schema().clone();
    let schema_ops = ops::schema_ops(&text, &mut schema)
        .map_err(|e| Error::Invalid(format!("{} (exported schema): {e}", from.display())))?;
    let n_schema = schema_ops.len();
    replica.write(schema_ops.into_iter().map(Op::Schema).collect())?;
    let copy = export.join("copy.cypher");
    let files = if copy.exists() {
        load_script(&mut replica, &copy, 50_000, progress)?
    } else {
        Vec::new()
    };
    std::fs::remove_dir_all(&export).map_err(|e| Error::io(&export, e))?;
    let rows = files.iter().map(|f| f.rows).sum();
    Ok((
        replica,
        AdoptOutcome {
            source: from.to_path_buf(),
            schema_ops: n_schema,
            rows,
            files,
        },
    ))
}

/// Kuzu's own export of the whole database: schema.cypher, copy.cypher and CSV files.
fn export_database(from: &Path, to: &Path) -> Result<(), Error> {
    let fail = |what: &str, e: kuzu_sync_kuzu::kuzu::Error| {
        Error::Invalid(format!("{}: {what}: {e}", from.display()))
    };
    let db = Database::new(from, SystemConfig::default().read_only(true))
        .map_err(|e| fail("cannot open it as a Kuzu database (read-only)", e))?;
    let conn = Connection::new(&db).map_err(|e| fail("cannot connect", e))?;
    let target = to.display().to_string().replace('\'', "\\'");
    conn.query(&format!(
        "EXPORT DATABASE '{target}' (format=\"csv\", header=true)"
    ))
    .map_err(|e| fail("EXPORT DATABASE failed", e))?;
    Ok(())
}
