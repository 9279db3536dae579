//! kuzu-sync's core for JavaScript, through `wasm-bindgen`: the engine decides, the JS glue
//! (`js/`) runs what it decides on the application's own Kuzu connection (`kuzu` or
//! `kuzu-wasm`) and confirms. See ARCHITECTURE.md, "JavaScript and WASM".
//!
//! Values cross as JSON text, bytes and numbers; errors as JS `Error`s carrying the native
//! engine's message. [`host`] holds the logic, testable without a JS engine.

pub mod host;

use host::{Host, HostError};
use wasm_bindgen::prelude::*;

fn js_err(e: HostError) -> JsError {
    JsError::new(&e.0)
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data always serializes")
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
pub fn setup_statements() -> String {
    to_json(&host::setup_statements())
}

/// The query reading the log's bodies in order.
#[wasm_bindgen(js_name = readLogQuery)]
pub fn read_log_query() -> String {
    host::read_log_query()
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

/// One replica's core.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Core {
    host: Host,
}

#[wasm_bindgen]
impl Core {
    /// Opens from the logged bodies (in log order), the stored offline mark (or
    /// undefined) and queue capacity (or undefined).
    pub fn open(
        peer: &str,
        log: Vec<String>,
        offline_mark: Option<f64>,
        queue_capacity: Option<f64>,
    ) -> Result<Core, JsError> {
        let mark = offline_mark.map(|m| whole("offline mark", m)).transpose()?;
        let cap = queue_capacity
            .map(|c| whole("queue capacity", c).map(|c| c as usize))
            .transpose()?;
        let host = Host::open(peer, &log, mark, cap).map_err(js_err)?;
        Ok(Core { host })
    }

    /// Stages local ops (JSON lines, the format of `kuzu-sync write`); returns the plan as
    /// JSON: `{ddl, data: [{cypher, params}], tables}`.
    pub fn write(&mut self, op_lines: &str, now_ms: f64) -> Result<String, JsError> {
        let now = whole("now", now_ms.floor())?;
        let plan = self.host.write(op_lines, now).map_err(js_err)?;
        Ok(to_json(&plan))
    }

    /// Stages a bundle's events; returns the plan as `write` does.
    #[wasm_bindgen(js_name = importBundle)]
    pub fn import_bundle(&mut self, bytes: &[u8], now_ms: f64) -> Result<String, JsError> {
        let now = whole("now", now_ms.floor())?;
        let plan = self.host.import_bundle(bytes, now).map_err(js_err)?;
        Ok(to_json(&plan))
    }

    /// The staged change is committed: returns its outcome as JSON.
    pub fn confirm(&mut self) -> Result<String, JsError> {
        let out = self.host.confirm().map_err(js_err)?;
        Ok(to_json(&out))
    }

    /// The staged change could not be committed: the core refuses work until reopened.
    pub fn abort(&mut self, reason: &str) {
        self.host.abort(reason);
    }

    /// A bundle of the logged events not in `since` (a JSON version vector, or undefined).
    #[wasm_bindgen(js_name = exportBundle)]
    pub fn export_bundle(
        &self,
        log: Vec<String>,
        since: Option<String>,
    ) -> Result<Vec<u8>, JsError> {
        let since = since
            .map(|s| {
                serde_json::from_str::<kuzu_sync_engine::VersionVector>(&s).map_err(|e| {
                    JsError::new(&format!("the version vector {s:?} is not valid: {e}"))
                })
            })
            .transpose()?;
        self.host
            .export_bundle(&log, since.as_ref())
            .map_err(js_err)
    }

    pub fn status(&self) -> String {
        to_json(&self.host.status())
    }

    pub fn conflicts(&self) -> String {
        to_json(&self.host.conflicts())
    }

    #[wasm_bindgen(js_name = queueStatus)]
    pub fn queue_status(&self) -> String {
        to_json(&self.host.queue_status())
    }

    /// Goes offline: the mark to store, or undefined if already offline.
    #[wasm_bindgen(js_name = goOffline)]
    pub fn go_offline(&mut self) -> Option<f64> {
        self.host.go_offline().map(|m| m as f64)
    }

    #[wasm_bindgen(js_name = goOnline)]
    pub fn go_online(&mut self) {
        self.host.go_online()
    }

    /// The version vector as JSON.
    #[wasm_bindgen(js_name = versionVector)]
    pub fn version_vector(&self) -> String {
        to_json(self.host.core().version_vector())
    }
}
