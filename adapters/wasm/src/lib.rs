//! kuzu-sync's core for JavaScript, through `wasm-bindgen`: the engine decides, the JS glue
//! (`js/`) runs what it decides on the application's own Kuzu connection (`kuzu` or
//! `kuzu-wasm`) and confirms. See ARCHITECTURE.md, "JavaScript and WASM".
//!
//! Values cross as JSON text, bytes and numbers; errors as JS `Error`s carrying the native
//! engine's message. [`host`] holds the logic, testable without a JS engine.

mod blocks;
pub mod host;

use host::{Host, HostError, Loader, Stored};
use js_sys::JsString;
use wasm_bindgen::prelude::*;

fn js_err(e: HostError) -> JsError {
    JsError::new(&e.0)
}

/// `v` as JSON text, made into a JS string piece by piece: a plan's text runs to hundreds
/// of KiB, and written whole into the WASM memory (which never shrinks) it took a block
/// of its size above everything else, as no freed space was that large: the memory grew
/// by the text's size every few writes. Pieces of [`JSON_PIECE`] fit in freed space.
fn to_json<T: serde::Serialize>(v: &T) -> JsString {
    let mut text = JsonPieces {
        text: JsString::from(""),
        piece: Vec::with_capacity(JSON_PIECE),
    };
    serde_json::to_writer(&mut text, v).expect("plain data always serializes");
    text.hand_over();
    text.text
}

/// Bytes of JSON text gathered in the WASM memory before they are handed to JS.
const JSON_PIECE: usize = 32 << 10;

/// JSON text handed to JS as it is written, in pieces of whole characters.
struct JsonPieces {
    text: JsString,
    piece: Vec<u8>,
}

impl JsonPieces {
    /// Hands the piece's whole characters to JS, keeping a character cut at its end.
    fn hand_over(&mut self) {
        let whole = match std::str::from_utf8(&self.piece) {
            Ok(s) => s,
            Err(e) => {
                std::str::from_utf8(&self.piece[..e.valid_up_to()]).expect("valid up to there")
            }
        };
        let len = whole.len();
        self.text = self.text.concat(&JsString::from(whole));
        self.piece.drain(..len);
    }
}

impl std::io::Write for JsonPieces {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.piece.extend_from_slice(bytes);
        if self.piece.len() >= JSON_PIECE {
            self.hand_over();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A counter or capacity from JS: a non-negative integer below 2^53.
fn whole(name: &str, v: f64) -> Result<u64, JsError> {
    if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9_007_199_254_740_992.0 {
        Ok(v as u64)
    } else {
        Err(JsError::new(&format!(
            "{name} must be a non-negative integer, got {v}"
        )))
    }
}

/// The statements to run once on a database before opening it (JSON array of strings).
#[wasm_bindgen(js_name = setupStatements)]
pub fn setup_statements() -> JsString {
    to_json(&host::setup_statements())
}

/// The query reading the log's extent: one row, its row count and highest `seq` (null
/// when empty), as strings.
#[wasm_bindgen(js_name = logExtentQuery)]
pub fn log_extent_query() -> String {
    host::log_extent_query()
}

/// The query reading the log's bodies with `from <= seq < to`, in order.
#[wasm_bindgen(js_name = readLogPageQuery)]
pub fn read_log_page_query(from: f64, to: f64) -> Result<String, JsError> {
    Ok(host::read_log_page_query(
        whole("from", from)?,
        whole("to", to)?,
    ))
}

/// Log rows to read per page when opening.
#[wasm_bindgen(js_name = logPage)]
pub fn log_page() -> f64 {
    host::LOG_PAGE as f64
}

/// The query reading the stored snapshot's parts in order.
#[wasm_bindgen(js_name = readSnapshotQuery)]
pub fn read_snapshot_query() -> String {
    host::read_snapshot_query()
}

/// The query reading one meta value (`$k`).
#[wasm_bindgen(js_name = readMetaQuery)]
pub fn read_meta_query() -> String {
    host::read_meta_query()
}

/// The statement writing one meta value (`$k`, `$v`).
#[wasm_bindgen(js_name = writeMetaStatement)]
pub fn write_meta_statement() -> String {
    host::write_meta_statement()
}

/// The allocator, counting the bytes allocated and not freed (`heapBytes`).
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOC: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// The WASM core's live heap, in bytes: what its allocations hold now (0 outside WASM).
/// `memoryBytes` is its high-water mark plus the allocator's free space.
#[wasm_bindgen(js_name = heapBytes)]
pub fn heap_bytes() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        ALLOC.allocated() as f64
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0.0
    }
}

/// The WASM core's linear memory, in bytes: it never shrinks, so this is its high-water
/// mark (0 outside WASM).
#[wasm_bindgen(js_name = memoryBytes)]
pub fn memory_bytes() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        (core::arch::wasm32::memory_size(0) * 65536) as f64
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0.0
    }
}

/// Opens a `Core` from a log given in pages, so that the core never holds the whole log
/// as text: `new CoreLoader(...)` with what `Core.open` takes besides the log, `push` each
/// page of bodies in log order, then `finish()` (which consumes the loader).
#[wasm_bindgen]
#[derive(Debug)]
pub struct CoreLoader {
    loader: Loader,
}

#[wasm_bindgen]
impl CoreLoader {
    #[wasm_bindgen(constructor)]
    pub fn new(
        peer: &str,
        snapshot: Option<String>,
        rebuilding: bool,
        offline_mark: Option<f64>,
        queue_capacity: Option<f64>,
    ) -> Result<CoreLoader, JsError> {
        let offline_mark = offline_mark.map(|m| whole("offline mark", m)).transpose()?;
        let queue_capacity = queue_capacity
            .map(|c| whole("queue capacity", c).map(|c| c as usize))
            .transpose()?;
        let stored = Stored {
            snapshot,
            rebuilding,
            offline_mark,
            queue_capacity,
        };
        let loader = Loader::new(peer, stored).map_err(js_err)?;
        Ok(CoreLoader { loader })
    }

    /// The next page of logged bodies, in log order.
    pub fn push(&mut self, bodies: Vec<String>) -> Result<(), JsError> {
        self.loader.push(&bodies).map_err(js_err)
    }

    /// The core, over every page pushed.
    pub fn finish(self) -> Result<Core, JsError> {
        let host = self.loader.finish().map_err(js_err)?;
        Ok(Core { host })
    }
}

/// One replica's core.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Core {
    host: Host,
}

#[wasm_bindgen]
impl Core {
    /// Opens from the logged bodies (in log order), the stored snapshot's parts joined (or
    /// undefined), whether the graph-rebuild mark is set, the stored offline mark (or
    /// undefined) and queue capacity (or undefined). Then commit `recoveryPlan()`. A long
    /// log is better given in pages, through a `CoreLoader`.
    pub fn open(
        peer: &str,
        log: Vec<String>,
        snapshot: Option<String>,
        rebuilding: bool,
        offline_mark: Option<f64>,
        queue_capacity: Option<f64>,
    ) -> Result<Core, JsError> {
        let mut loader = CoreLoader::new(peer, snapshot, rebuilding, offline_mark, queue_capacity)?;
        loader.push(log)?;
        loader.finish()
    }

    /// After `open`: the plan that finishes an interrupted graph rebuild (empty if none),
    /// to commit and confirm before anything else.
    #[wasm_bindgen(js_name = recoveryPlan)]
    pub fn recovery_plan(&mut self) -> Result<JsString, JsError> {
        let plan = self.host.recovery_plan().map_err(js_err)?;
        Ok(to_json(&plan))
    }

    /// Writes local ops (JSON lines, the format of `kuzu-sync write`); returns the plan to
    /// commit as JSON: `{ddl, data: [{cypher, params}], tables}` (empty: nothing to do).
    pub fn write(&mut self, op_lines: &str, now_ms: f64) -> Result<JsString, JsError> {
        let now = whole("now", now_ms.floor())?;
        let plan = self.host.write(op_lines, now).map_err(js_err)?;
        Ok(to_json(&plan))
    }

    /// Imports a bundle's events; returns the plan as `write` does.
    #[wasm_bindgen(js_name = importBundle)]
    pub fn import_bundle(&mut self, bytes: &[u8], now_ms: f64) -> Result<JsString, JsError> {
        let now = whole("now", now_ms.floor())?;
        let plan = self.host.import_bundle(bytes, now).map_err(js_err)?;
        Ok(to_json(&plan))
    }

    /// The plan given last is committed.
    pub fn confirm(&mut self) -> Result<(), JsError> {
        self.host.confirm().map_err(js_err)
    }

    /// The plan given last could not be committed: this core refuses all work; open a new
    /// one from the log.
    pub fn abort(&mut self, reason: &str) {
        self.host.abort(reason);
    }

    /// A bundle of the events not in `since` (a JSON version vector, or undefined).
    #[wasm_bindgen(js_name = exportBundle)]
    pub fn export_bundle(&self, since: Option<String>) -> Result<Vec<u8>, JsError> {
        let since = since
            .map(|s| {
                serde_json::from_str::<kuzu_sync_engine::VersionVector>(&s).map_err(|e| {
                    JsError::new(&format!("the version vector {s:?} is not valid: {e}"))
                })
            })
            .transpose()?;
        self.host.export_bundle(since.as_ref()).map_err(js_err)
    }

    /// Starts a sync session on a new connection: a step (see `SyncStep`).
    #[wasm_bindgen(js_name = syncStart)]
    pub fn sync_start(&mut self, token: Option<String>, now_ms: f64) -> Result<SyncStep, JsError> {
        let now = whole("now", now_ms.floor())?;
        self.host
            .sync_start(token, now)
            .map(SyncStep::from)
            .map_err(js_err)
    }

    /// Bytes received on the connection (empty to continue after `more`).
    #[wasm_bindgen(js_name = syncReceive)]
    pub fn sync_receive(&mut self, bytes: &[u8], now_ms: f64) -> Result<SyncStep, JsError> {
        let now = whole("now", now_ms.floor())?;
        self.host
            .sync_receive(bytes, now)
            .map(SyncStep::from)
            .map_err(js_err)
    }

    /// After local writes: what streams them to the hub.
    #[wasm_bindgen(js_name = syncLocalChanged)]
    pub fn sync_local_changed(&mut self, now_ms: f64) -> Result<SyncStep, JsError> {
        let now = whole("now", now_ms.floor())?;
        self.host
            .sync_local_changed(now)
            .map(SyncStep::from)
            .map_err(js_err)
    }

    /// The connection ended.
    #[wasm_bindgen(js_name = syncEnd)]
    pub fn sync_end(&mut self) {
        self.host.sync_end()
    }

    pub fn status(&mut self) -> Result<JsString, JsError> {
        Ok(to_json(&self.host.status().map_err(js_err)?))
    }

    pub fn conflicts(&self) -> JsString {
        to_json(&self.host.conflicts())
    }

    #[wasm_bindgen(js_name = queueStatus)]
    pub fn queue_status(&self) -> Result<JsString, JsError> {
        Ok(to_json(&self.host.queue_status().map_err(js_err)?))
    }

    /// Goes offline: the mark to store, or undefined if already offline.
    #[wasm_bindgen(js_name = goOffline)]
    pub fn go_offline(&mut self) -> Result<Option<f64>, JsError> {
        Ok(self.host.go_offline().map_err(js_err)?.map(|m| m as f64))
    }

    #[wasm_bindgen(js_name = goOnline)]
    pub fn go_online(&mut self) -> Result<(), JsError> {
        self.host.go_online().map_err(js_err)
    }

    /// Whether this core refuses all work (a plan was aborted): open a new one from the log.
    #[wasm_bindgen(js_name = isDead)]
    pub fn is_dead(&self) -> bool {
        self.host.is_dead()
    }

    /// The version vector as JSON.
    #[wasm_bindgen(js_name = versionVector)]
    pub fn version_vector(&self) -> JsString {
        to_json(self.host.replica().version_vector())
    }
}

/// One step of a sync session, in the order to carry it out: commit `plan` (JSON; empty:
/// nothing) and confirm, send each of `frames`, report `events` (JSON array), then close
/// the connection if `close`. `more`: received messages wait (call `syncReceive` with no
/// bytes). `synced`: everything both sides held at the handshake is exchanged.
#[wasm_bindgen]
#[derive(Debug)]
pub struct SyncStep {
    plan: JsString,
    frames: Vec<Vec<u8>>,
    events: JsString,
    close: bool,
    synced: bool,
    more: bool,
}

impl From<host::SyncStep> for SyncStep {
    fn from(s: host::SyncStep) -> Self {
        SyncStep {
            plan: to_json(&s.plan),
            events: to_json(&s.events),
            frames: s.frames,
            close: s.close,
            synced: s.synced,
            more: s.more,
        }
    }
}

#[wasm_bindgen]
impl SyncStep {
    #[wasm_bindgen(getter)]
    pub fn plan(&self) -> JsString {
        self.plan.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn events(&self) -> JsString {
        self.events.clone()
    }

    /// How many frames to send; each with `frame(i)`.
    #[wasm_bindgen(getter, js_name = frameCount)]
    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn frame(&self, i: usize) -> Vec<u8> {
        self.frames.get(i).cloned().unwrap_or_default()
    }

    #[wasm_bindgen(getter)]
    pub fn close(&self) -> bool {
        self.close
    }

    #[wasm_bindgen(getter)]
    pub fn synced(&self) -> bool {
        self.synced
    }

    #[wasm_bindgen(getter)]
    pub fn more(&self) -> bool {
        self.more
    }
}
