//! A durable, append-only log of two-phase-commit records over SQLite: the coordinator's
//! decision log ([`CoordRecord`](kuzu_sync_engine::tx::CoordRecord)), or a participant's
//! records. Each append is one transaction with `synchronous = FULL`: once `append`
//! returns, the record survives a crash or a power cut, which is what "force-write the
//! commit decision before sending it" needs. Records come back in the order they were
//! written, as the state machines' `recover` wants them.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use kuzu_sync_engine::StoreError;
use rusqlite::{params, Connection};
use serde::de::DeserializeOwned;
use serde::Serialize;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tx_records (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    body BLOB NOT NULL
);
";

/// Records of type `R`, MessagePack-encoded, one row each.
pub struct SqliteTxLog<R> {
    conn: Connection,
    path: PathBuf,
    _records: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for SqliteTxLog<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTxLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<R: Serialize + DeserializeOwned> SqliteTxLog<R> {
    /// Opens the log at `path`, creating the file and its table if needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |e| StoreError::backend(format!("open transaction log {}", path.display()), e);
        let conn = Connection::open(path).map_err(err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::backend(
                format!("open transaction log {}", path.display()),
                format!("cannot enable WAL journal mode (got {mode:?})"),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(SqliteTxLog {
            conn,
            path: path.to_owned(),
            _records: PhantomData,
        })
    }

    /// Writes one record durably.
    pub fn append(&mut self, record: &R) -> Result<(), StoreError> {
        let body = rmp_serde::to_vec(record)
            .map_err(|e| StoreError::backend("encode a transaction record", e))?;
        self.conn
            .execute("INSERT INTO tx_records (body) VALUES (?1)", params![body])
            .map_err(|e| {
                StoreError::backend(
                    format!("append to transaction log {}", self.path.display()),
                    e,
                )
            })?;
        Ok(())
    }

    /// Every record, in the order written. A row that does not decode is named.
    pub fn records(&self) -> Result<Vec<R>, StoreError> {
        let err =
            |e| StoreError::backend(format!("read transaction log {}", self.path.display()), e);
        let mut stmt = self
            .conn
            .prepare("SELECT seq, body FROM tx_records ORDER BY seq")
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let seq: i64 = row.get(0).map_err(err)?;
            let body: Vec<u8> = row.get(1).map_err(err)?;
            let record = rmp_serde::from_slice(&body).map_err(|e| {
                StoreError::Corrupt(format!(
                    "transaction log {}: record {seq} does not decode: {e}",
                    self.path.display()
                ))
            })?;
            out.push(record);
        }
        Ok(out)
    }

    /// Deletes, in one transaction, the records `drop` selects (those of transactions
    /// that have ended), so the log does not grow for ever. Returns how many.
    pub fn prune(&mut self, drop: impl Fn(&R) -> bool) -> Result<usize, StoreError> {
        let err =
            |e| StoreError::backend(format!("prune transaction log {}", self.path.display()), e);
        let mut doomed = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT seq, body FROM tx_records ORDER BY seq")
                .map_err(err)?;
            let mut rows = stmt.query([]).map_err(err)?;
            while let Some(row) = rows.next().map_err(err)? {
                let seq: i64 = row.get(0).map_err(err)?;
                let body: Vec<u8> = row.get(1).map_err(err)?;
                // A row that does not decode stays: `records` reports it.
                if rmp_serde::from_slice::<R>(&body).is_ok_and(|r| drop(&r)) {
                    doomed.push(seq);
                }
            }
        }
        let tx = self.conn.transaction().map_err(err)?;
        for seq in &doomed {
            tx.execute("DELETE FROM tx_records WHERE seq = ?1", params![seq])
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(doomed.len())
    }
}

impl<R: Serialize + DeserializeOwned> kuzu_sync_engine::tx::TxLog<R> for SqliteTxLog<R> {
    fn append(&mut self, record: &R) -> Result<(), StoreError> {
        SqliteTxLog::append(self, record)
    }
    fn records(&self) -> Result<Vec<R>, StoreError> {
        SqliteTxLog::records(self)
    }
}

/// An exclusive lock on a file, held by SQLite for as long as the value lives and
/// released by the system when the process ends, however it ends: the one process that
/// takes part in (or resolves) a replica's transactions holds it.
pub struct ExclusiveLock {
    _conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for ExclusiveLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExclusiveLock")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ExclusiveLock {
    /// Takes the lock of the file at `path` (created if missing) without waiting:
    /// `None` if another holder has it.
    pub fn try_lock(path: &Path) -> Result<Option<Self>, StoreError> {
        let err = |e| StoreError::backend(format!("lock {}", path.display()), e);
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::ZERO).map_err(err)?;
        // In exclusive locking mode, the lock a write takes is kept until the connection
        // closes.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err)?;
        match conn
            .execute_batch("BEGIN EXCLUSIVE; CREATE TABLE IF NOT EXISTS held (at INTEGER); COMMIT;")
        {
            Ok(()) => Ok(Some(ExclusiveLock {
                _conn: conn,
                path: path.to_owned(),
            })),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuzu_sync_engine::tx::{CoordRecord, Coordinator, TxId};

    fn tx(seq: u64) -> TxId {
        TxId {
            coordinator: "c".into(),
            epoch: 1,
            seq,
        }
    }

    #[test]
    fn records_survive_a_reopen_in_order_and_drive_the_coordinators_recovery() {
        let dir = std::env::temp_dir().join(format!("kuzu-sync-txlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("decisions.sqlite");
        let written = vec![
            CoordRecord::Epoch(1),
            CoordRecord::Commit {
                tx: tx(1),
                participants: vec!["p1".into(), "p2".into()],
            },
            CoordRecord::Commit {
                tx: tx(2),
                participants: vec!["p1".into()],
            },
            CoordRecord::End { tx: tx(1) },
        ];
        {
            let mut log = SqliteTxLog::<CoordRecord>::open(&path).unwrap();
            for r in &written {
                log.append(r).unwrap();
            }
        }
        let mut log = SqliteTxLog::<CoordRecord>::open(&path).unwrap();
        assert_eq!(log.records().unwrap(), written);
        // Recovery from the file: a new epoch, and tx 2 (committed, not ended) sent again.
        let (c, out) = Coordinator::recover::<()>("c", log.records().unwrap(), 0);
        assert_eq!(c.epoch(), 2);
        assert!(c.is_open(&tx(2)) && !c.is_open(&tx(1)));
        assert_eq!(out.len(), 2, "{out:?}");
        // Pruning what ended keeps the rest.
        let ended = |r: &CoordRecord| match r {
            CoordRecord::Commit { tx, .. } | CoordRecord::End { tx } => tx.seq == 1,
            CoordRecord::Epoch(_) => false,
        };
        assert_eq!(log.prune(ended).unwrap(), 2);
        assert_eq!(
            log.records().unwrap(),
            vec![written[0].clone(), written[2].clone()]
        );
        // A corrupt row is named.
        log.conn
            .execute("INSERT INTO tx_records (body) VALUES (x'c1')", [])
            .unwrap();
        let err = log.records().unwrap_err().to_string();
        assert!(err.contains("record 5 does not decode"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_exclusive_lock_has_one_holder_at_a_time() {
        let dir = std::env::temp_dir().join(format!("kuzu-sync-txlock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tx.lock");
        let held = ExclusiveLock::try_lock(&path).unwrap().expect("free");
        assert!(ExclusiveLock::try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(ExclusiveLock::try_lock(&path).unwrap().is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
