//! A durable [`EventStore`] over SQLite (rusqlite, WAL): the event log of a kuzu-sync replica.
//!
//! Events are stored in one table in the order they were appended, each with its canonical
//! encoding ([`Event::encode`]) and its digest, so equivocation is caught on append and
//! corruption on read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kuzu_sync_engine::{Event, EventId, EventStore, PeerId, Snapshot, StoreError, VersionVector};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

mod tx_log;
pub use tx_log::{ExclusiveLock, SqliteTxLog};

/// The schema version this code writes, kept in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    peer    TEXT    NOT NULL,
    counter INTEGER NOT NULL,
    digest  BLOB    NOT NULL,
    body    BLOB    NOT NULL,
    UNIQUE (peer, counter)
);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

/// Version 2: the snapshot the log was compacted into (at most one row).
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS snapshot (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    version_vector  TEXT    NOT NULL,
    event_count     INTEGER NOT NULL,
    checksum        BLOB    NOT NULL,
    state           BLOB    NOT NULL
);
";

/// The first bytes of a zstd frame: a snapshot state stored compressed (MessagePack state
/// starts with an array marker, never with these).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zstd level for snapshots at rest: most of the size gain of higher levels, at a fraction
/// of their time.
const SNAPSHOT_ZSTD_LEVEL: i32 = 3;

/// A compressed snapshot state, decompressed into one allocation of the size its frame
/// header gives (`compact` writes it), not a buffer grown by doubling: the engine is read
/// from it next, and freed growth buffers of this size would stay in the process.
fn decompress(state: &[u8]) -> std::io::Result<Vec<u8>> {
    const MAX: u64 = 4 << 30;
    match zstd::zstd_safe::get_frame_content_size(state) {
        Ok(Some(size)) if size <= MAX => zstd::bulk::decompress(state, size as usize),
        _ => zstd::decode_all(state),
    }
}

/// Reads each peer's highest stored counter into `cache` (see [`SqliteEventStore::peers`])
/// unless it holds them as of the database's current `PRAGMA data_version` (which another
/// connection's commit changes, and this connection's does not).
fn refresh_peers(
    conn: &Connection,
    cache: &RefCell<Option<(i64, HashMap<String, u64>)>>,
) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA data_version", [], |row| row.get(0))?;
    let mut cache = cache.borrow_mut();
    if cache.as_ref().is_none_or(|(v, _)| *v != version) {
        let mut stmt =
            conn.prepare_cached("SELECT peer, MAX(counter) FROM events GROUP BY peer")?;
        let peers = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?.max(0) as u64,
                ))
            })?
            .collect::<Result<HashMap<_, _>, _>>()?;
        *cache = Some((version, peers));
    }
    Ok(())
}

const LOOKUP_DIGEST: &str = "SELECT digest FROM events WHERE peer = ?1 AND counter = ?2";
const INSERT_EVENT: &str =
    "INSERT INTO events (peer, counter, digest, body) VALUES (?1, ?2, ?3, ?4)";
const SCAN_EVENTS: &str =
    "SELECT seq, peer, counter, digest, body FROM events WHERE seq >= ?1 ORDER BY seq";
/// The position of `peer`'s first stored event after counter `?2` (an index seek on
/// `UNIQUE (peer, counter)`; a peer's events are stored in counter order).
const FIRST_AFTER: &str =
    "SELECT seq FROM events WHERE peer = ?1 AND counter > ?2 ORDER BY counter LIMIT 1";
/// Past this many peers with events a scan's `since` lacks, the scan walks the log from
/// its start rather than seeking each peer's first missing event.
const MAX_SEEKS: usize = 256;

/// The event log in one SQLite database file.
pub struct SqliteEventStore {
    conn: Connection,
    path: PathBuf,
    /// The stored snapshot's vector: events it covers are not stored again.
    floor: Option<VersionVector>,
    /// Per peer, the highest counter stored (or once stored: entries only grow), and the
    /// `PRAGMA data_version` it was read at: where a scan from the log's start can begin
    /// (see [`SqliteEventStore::start_of_missing`]). Read on first use; kept up to date by
    /// this connection's writes, and read again when another connection has committed.
    peers: RefCell<Option<(i64, HashMap<String, u64>)>>,
}

impl fmt::Debug for SqliteEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteEventStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteEventStore {
    /// `scan_page`; positions are `seq`, which AUTOINCREMENT never reuses.
    fn walk(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(u64, bool), StoreError> {
        let err = self.err("scan");
        let path = self.path.display();
        // Filtering happens here rather than in SQL, before the body is decoded, so skipped
        // rows cost only a map lookup; the query stays a plain walk of the primary key.
        let seen: HashMap<&str, i64> = since
            .iter()
            .map(|(p, c)| (p.as_str(), i64::try_from(c).unwrap_or(i64::MAX)))
            .collect();
        let from = if from == 0 {
            self.start_of_missing(&seen)?
        } else {
            from
        };
        let mut stmt = self.conn.prepare_cached(SCAN_EVENTS).map_err(&err)?;
        let mut rows = stmt
            .query([i64::try_from(from).unwrap_or(i64::MAX)])
            .map_err(&err)?;
        let mut next = from;
        let mut taken = 0;
        while let Some(row) = rows.next().map_err(&err)? {
            let seq: i64 = row.get(0).map_err(&err)?;
            if taken == limit {
                return Ok((seq as u64, false));
            }
            next = seq as u64 + 1;
            let peer = row.get_ref(1).map_err(&err)?;
            let peer = peer.as_str().map_err(|e| {
                StoreError::Corrupt(format!("event store {path}: row seq {seq}: peer: {e}"))
            })?;
            let counter: i64 = row.get(2).map_err(&err)?;
            if seen.get(peer).is_some_and(|&c| counter <= c) {
                continue;
            }
            let corrupt = |what: String| {
                StoreError::Corrupt(format!(
                    "event store {path}: row seq {seq} (event {peer}:{counter}): {what}"
                ))
            };
            let digest = row
                .get_ref(3)
                .map_err(&err)?
                .as_blob()
                .map_err(|e| corrupt(format!("digest: {e}")))?;
            let body = row
                .get_ref(4)
                .map_err(&err)?
                .as_blob()
                .map_err(|e| corrupt(format!("body: {e}")))?;
            let event =
                Event::decode(body).map_err(|e| corrupt(format!("cannot decode body: {e}")))?;
            if event.id.peer.as_str() != peer || i64::try_from(event.id.counter) != Ok(counter) {
                return Err(corrupt(format!("body holds event {}", event.id)));
            }
            if event.digest()[..] != *digest {
                return Err(corrupt("body does not match its stored digest".into()));
            }
            f(event)?;
            taken += 1;
        }
        Ok((next, true))
    }

    /// Where a scan from the log's start for the events `seen` (a scan's `since`) lacks
    /// can begin: the
    /// position of the first of them. For each peer with stored events past its entry in
    /// `since` (at most [`MAX_SEEKS`]; more, and the scan starts at 0), one index seek
    /// finds its first such event; the earliest is the start, since every event a scan
    /// returns is one of those or a later one of the same peer. With none, the start is
    /// past the last stored event, so a session that reads on from there still sees what
    /// is appended later (positions only grow). Without this, a session walked the whole
    /// log to find the last 1,000 events: most of a delta sync's time against a hub whose
    /// log holds 100,000 (README, "Delta sync").
    fn start_of_missing(&self, seen: &HashMap<&str, i64>) -> Result<u64, StoreError> {
        let err = self.err("find where the events to send start");
        refresh_peers(&self.conn, &self.peers).map_err(&err)?;
        let cache = self.peers.borrow();
        let (_, peers) = cache.as_ref().expect("just read");
        let behind: Vec<(&str, i64)> = peers
            .iter()
            .filter_map(|(p, &max)| {
                let have = seen.get(p.as_str()).copied().unwrap_or(0);
                (i64::try_from(max).unwrap_or(i64::MAX) > have).then_some((p.as_str(), have))
            })
            .take(MAX_SEEKS + 1)
            .collect();
        if behind.len() > MAX_SEEKS {
            return Ok(0);
        }
        let mut seek = self.conn.prepare_cached(FIRST_AFTER).map_err(&err)?;
        let mut start: Option<i64> = None;
        for (peer, have) in behind {
            let seq: Option<i64> = seek
                .query_row(params![peer, have], |row| row.get(0))
                .optional()
                .map_err(&err)?;
            if let Some(seq) = seq {
                start = Some(start.map_or(seq, |s| s.min(seq)));
            }
        }
        let start = match start {
            Some(seq) => seq,
            None => self
                .conn
                .query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM events", [], |row| {
                    row.get(0)
                })
                .map_err(&err)?,
        };
        Ok(start.max(0) as u64)
    }

    /// Notes events this connection stored, for [`SqliteEventStore::start_of_missing`] and
    /// [`EventStore::append`].
    fn note_stored<'a>(&self, ids: impl Iterator<Item = &'a EventId>) {
        if let Some((_, peers)) = self.peers.borrow_mut().as_mut() {
            for id in ids {
                let max = peers.entry(id.peer.as_str().to_string()).or_default();
                *max = (*max).max(id.counter);
            }
        }
    }

    /// Opens the store at `path`, creating the file and the schema if needed. The directory
    /// must exist.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)
            .map_err(|e| StoreError::backend(format!("open event store {}", path.display()), e))?;
        let mut store = SqliteEventStore {
            conn,
            path: path.to_owned(),
            floor: None,
            peers: RefCell::new(None),
        };
        store.configure(true)?;
        store.migrate()?;
        store.floor = store.snapshot()?.map(|s| s.version_vector);
        Ok(store)
    }

    /// A store that lives in memory and disappears when dropped. For tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory()
            .map_err(|e| StoreError::backend("open in-memory event store", e))?;
        let store = SqliteEventStore {
            conn,
            path: PathBuf::from(":memory:"),
            floor: None,
            peers: RefCell::new(None),
        };
        store.configure(false)?;
        store.migrate()?;
        Ok(store)
    }

    /// The database file (`:memory:` for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes the snapshot's state takes in the file (compressed), if there is one.
    pub fn snapshot_bytes_at_rest(&self) -> Result<Option<u64>, StoreError> {
        self.conn
            .prepare_cached("SELECT length(state) FROM snapshot WHERE id = 1")
            .and_then(|mut s| s.query_row([], |row| row.get::<_, i64>(0)).optional())
            .map(|n| n.map(|n| n as u64))
            .map_err(self.err("read the snapshot's size"))
    }

    /// Wraps a rusqlite error with the operation and the file it failed on.
    fn err(&self, operation: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        let context = format!("{operation} in event store {}", self.path.display());
        move |e| StoreError::backend(context.clone(), e)
    }

    fn configure(&self, on_disk: bool) -> Result<(), StoreError> {
        let err = self.err("configure connection");
        self.conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
        if on_disk {
            let mode: String = self
                .conn
                .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
                .map_err(&err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::backend(
                    format!("configure event store {}", self.path.display()),
                    format!("cannot enable WAL journal mode (got {mode:?})"),
                ));
            }
        }
        // An acknowledged append must survive power failure: peers may discard what they sent
        // once we have it. In WAL mode, `NORMAL` only syncs at checkpoints, so the last
        // committed transactions can vanish on power loss; `FULL` syncs the WAL on every
        // commit. Since `append` commits once per call, the cost is one sync per batch.
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(&err)?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(&err)?;
        Ok(())
    }

    /// Creates the schema in a new database, or checks the version of an existing one.
    fn migrate(&self) -> Result<(), StoreError> {
        let err = self.err("create schema");
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(&err)?;
        match version {
            0 | 1 => {
                // The version is written in the same transaction as the tables, so a crash
                // leaves either the old schema or a complete new one. Version 1 lacks only
                // the snapshot table; every step is IF NOT EXISTS.
                self.conn
                    .execute_batch(&format!(
                        "BEGIN IMMEDIATE;{SCHEMA}{SCHEMA_V2}\
                         PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
                    ))
                    .map_err(|e| {
                        // Leave no transaction open if a statement in the batch failed.
                        let _ = self.conn.execute_batch("ROLLBACK");
                        err(e)
                    })
            }
            SCHEMA_VERSION => Ok(()),
            other => Err(StoreError::backend(
                format!("open event store {}", self.path.display()),
                format!(
                    "schema version {other} is not supported (this build reads version \
                     {SCHEMA_VERSION})"
                ),
            )),
        }
    }
}

/// SQLite integers are signed; counters beyond `i64::MAX` cannot be stored.
/// Sets metadata entries, on a connection or inside a transaction.
fn write_meta(conn: &Connection, meta: &[(&str, &str)]) -> rusqlite::Result<()> {
    let mut set = conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    for (k, v) in meta {
        set.execute([k, v])?;
    }
    Ok(())
}

fn sql_counter(id: &EventId, path: &Path) -> Result<i64, StoreError> {
    i64::try_from(id.counter).map_err(|_| {
        StoreError::backend(
            format!("append event {id} to event store {}", path.display()),
            "counter does not fit a signed 64-bit integer",
        )
    })
}

impl EventStore for SqliteEventStore {
    fn append(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let context = format!("append to event store {}", self.path.display());
        let err = |e| StoreError::backend(context.clone(), e);
        let event_err = |id: &EventId, e| {
            StoreError::backend(
                format!("append event {id} to event store {}", self.path.display()),
                e,
            )
        };
        // IMMEDIATE takes the write lock up front, so the lookups below cannot be invalidated
        // by another writer, and a busy database fails (after the timeout) before any work.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut added = 0;
        {
            // Each peer's highest counter stored, read under the write lock: an event above
            // it cannot be stored, so it needs no lookup (a bulk import's events are all new).
            // Raised as this call inserts, so a duplicate within the call is looked up.
            refresh_peers(&tx, &self.peers).map_err(err)?;
            let mut maxes: HashMap<&str, u64> = HashMap::new();
            let cached = self.peers.borrow();
            let stored_max = |peer: &str| cached.as_ref().and_then(|(_, m)| m.get(peer).copied());
            let mut lookup = tx.prepare_cached(LOOKUP_DIGEST).map_err(err)?;
            let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(err)?;
            for event in events {
                let id = &event.id;
                if self.floor.as_ref().is_some_and(|f| f.contains(id)) {
                    continue;
                }
                let counter = sql_counter(id, &self.path)?;
                let body = event.encode();
                let digest = Event::digest_of(&body);
                let peer = id.peer.as_str();
                let max = maxes.get(peer).copied().or_else(|| stored_max(peer));
                let stored: Option<Vec<u8>> = if max.is_some_and(|m| id.counter <= m) {
                    lookup
                        .query_row(params![peer, counter], |row| row.get(0))
                        .optional()
                        .map_err(|e| event_err(id, e))?
                } else {
                    None
                };
                if stored.is_none() {
                    let m = maxes.entry(peer).or_insert(0);
                    *m = (*m).max(id.counter).max(max.unwrap_or(0));
                }
                match stored {
                    Some(d) if d == digest => {}
                    // Returning drops `tx`, which rolls the whole call back.
                    Some(_) => return Err(StoreError::Equivocation { id: id.clone() }),
                    None => {
                        insert
                            .execute(params![id.peer.as_str(), counter, &digest[..], body])
                            .map_err(|e| event_err(id, e))?;
                        added += 1;
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        self.note_stored(events.iter().map(|e| &e.id));
        Ok(added)
    }

    fn scan(
        &self,
        since: &VersionVector,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.walk(since, 0, usize::MAX, f).map(|_| ())
    }

    fn scan_page(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(u64, bool), StoreError> {
        self.walk(since, from, limit, f)
    }

    fn count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM events")
            .and_then(|mut s| s.query_row([], |row| row.get(0)))
            .map_err(self.err("count events"))?;
        Ok(n as u64)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        let path = self.path.display();
        let row = self
            .conn
            .prepare_cached(
                "SELECT version_vector, event_count, checksum, state FROM snapshot WHERE id = 1",
            )
            .and_then(|mut s| {
                s.query_row([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, Vec<u8>>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(self.err("read the snapshot"))?;
        let Some((vv, count, checksum, state)) = row else {
            return Ok(None);
        };
        let corrupt =
            |what: String| StoreError::Corrupt(format!("event store {path}: snapshot: {what}"));
        Ok(Some(Snapshot {
            version_vector: serde_json::from_str(&vv)
                .map_err(|e| corrupt(format!("version vector {vv:?}: {e}")))?,
            event_count: count as u64,
            checksum: checksum
                .try_into()
                .map_err(|c: Vec<u8>| corrupt(format!("checksum of {} bytes", c.len())))?,
            // Rows written before compression at rest hold the state as it is.
            state: if state.starts_with(&ZSTD_MAGIC) {
                decompress(&state).map_err(|e| {
                    corrupt(format!(
                        "the compressed state ({} bytes) does not decompress: {e}",
                        state.len()
                    ))
                })?
            } else {
                state
            },
        }))
    }

    fn compact(&mut self, snapshot: &Snapshot, meta: &[(&str, &str)]) -> Result<u64, StoreError> {
        let context = format!("compact event store {}", self.path.display());
        let err = |e| StoreError::backend(context.clone(), e);
        let vv = serde_json::to_string(&snapshot.version_vector).expect("serializable");
        let state = zstd::bulk::compress(&snapshot.state, SNAPSHOT_ZSTD_LEVEL)
            .map_err(|e| StoreError::backend(format!("{context}: compress the snapshot"), e))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let mut removed = 0u64;
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM events WHERE peer = ?1 AND counter <= ?2")
                .map_err(err)?;
            for (peer, counter) in snapshot.version_vector.iter() {
                let counter = i64::try_from(counter).unwrap_or(i64::MAX);
                removed += delete
                    .execute(params![peer.as_str(), counter])
                    .map_err(err)? as u64;
            }
            tx.execute(
                "INSERT INTO snapshot (id, version_vector, event_count, checksum, state) \
                 VALUES (1, ?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET version_vector = excluded.version_vector, \
                 event_count = excluded.event_count, checksum = excluded.checksum, \
                 state = excluded.state",
                params![
                    vv,
                    i64::try_from(snapshot.event_count).unwrap_or(i64::MAX),
                    &snapshot.checksum[..],
                    &state
                ],
            )
            .map_err(err)?;
            write_meta(&tx, meta).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.floor = Some(snapshot.version_vector.clone());
        Ok(removed)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
            .map_err(self.err(&format!("read meta {key:?}")))
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        write_meta(&self.conn, &[(key, value)]).map_err(self.err(&format!("write meta {key:?}")))
    }

    fn replace_suffix(
        &mut self,
        peer: &PeerId,
        after: u64,
        events: &[Event],
        meta: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        kuzu_sync_engine::memory_log::check_suffix(peer, after, events, self.floor.as_ref())?;
        let context = format!("rewrite the events of {peer} in {}", self.path.display());
        let err = |e| StoreError::backend(context.clone(), e);
        let after = i64::try_from(after).map_err(|e| StoreError::backend(context.clone(), e))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "DELETE FROM events WHERE peer = ?1 AND counter > ?2",
            params![peer.as_str(), after],
        )
        .map_err(err)?;
        {
            let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(err)?;
            for event in events {
                let counter = sql_counter(&event.id, &self.path)?;
                let body = event.encode();
                insert
                    .execute(params![
                        event.id.peer.as_str(),
                        counter,
                        &Event::digest_of(&body)[..],
                        body
                    ])
                    .map_err(err)?;
            }
            write_meta(&tx, meta).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        self.note_stored(events.iter().map(|e| &e.id));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
