//! The CLI's two-phase commit: `coordinator`, `tx`, `tx-status`, and the participant
//! side of `serve` (ARCHITECTURE.md, "Coordinated transactions").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use kuzu_sync::protocol::txnet::{self, Address, CoordinatorEndpoint, TxRequest};
use kuzu_sync_engine::tx::{CoordRecord, FailingTxLog, PartRecord, PartState, Participant};
use kuzu_sync_engine::Op;
use kuzu_sync_sqlite::SqliteTxLog;

/// A replica's transaction records, beside its event log.
pub const TX_LOG: &str = "tx.sqlite";
const COORD_LOG: &str = "coordinator.sqlite";
const COORD_NAME: &str = "name";
const COORD_ADDRESSES: &str = "participants.json";

/// Set to N, the next N appends to a participant's transaction log fail as a full disk
/// would (`disk_full (injected)`): how the tests make a participant vote abort.
pub const INJECT_ENV: &str = "KUZU_SYNC_INJECT_TX_LOG_FAILURES";

/// `tx`'s error when the decision was abort (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("the transaction was aborted")]
pub struct Aborted;

/// The participant's record log of the replica in `dir`.
pub fn participant_log(dir: &Path) -> Result<txnet::BoxedPartLog> {
    let path = dir.join(TX_LOG);
    let inner = SqliteTxLog::open(&path)
        .with_context(|| format!("opening the transaction log {}", path.display()))?;
    let fail = match std::env::var(INJECT_ENV) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{INJECT_ENV}={v:?}: expected a number"))?,
        Err(_) => 0,
    };
    Ok(Box::new(FailingTxLog {
        inner,
        fail: Arc::new(AtomicUsize::new(fail)),
    }))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// The participant endpoint of a hub serving the replica in `dir`.
pub fn participant<G>(
    shared: &Arc<kuzu_sync::protocol::Shared<kuzu_sync::SqliteEventStore, G>>,
    dir: &Path,
) -> Result<Arc<dyn txnet::TxEndpoint>>
where
    G: kuzu_sync_engine::GraphStore + Send + 'static,
{
    let endpoint = txnet::ParticipantEndpoint::new(
        shared.clone(),
        participant_log(dir)?,
        crate::print_events(),
    )
    .context("recovering the replica's transactions")?;
    Ok(endpoint)
}

/// `kuzu-sync coordinator DIR --listen ADDR`.
pub fn coordinator(
    dir: &Path,
    listen: &str,
    token_file: Option<&Path>,
    name: Option<&str>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name_file = dir.join(COORD_NAME);
    let stored = std::fs::read_to_string(&name_file).ok();
    let name = match (stored.as_deref().map(str::trim), name) {
        (Some(s), Some(n)) if s != n => bail!(
            "{} belongs to coordinator {s}, not {n} (its transaction ids carry its name)",
            dir.display()
        ),
        (Some(s), _) => s.to_string(),
        (None, n) => {
            let n = n.unwrap_or("coordinator").to_string();
            kuzu_sync_engine::PeerId::new(n.as_str())?;
            std::fs::write(&name_file, &n)
                .with_context(|| format!("writing {}", name_file.display()))?;
            n
        }
    };
    let token = token_file.map(kuzu_sync::net::read_token).transpose()?;
    if token.is_none() {
        eprintln!(
            "warning: no --auth-token-file: anyone who reaches {listen} may run transactions"
        );
    }
    let log_path = dir.join(COORD_LOG);
    let log: SqliteTxLog<CoordRecord> = SqliteTxLog::open(&log_path)
        .with_context(|| format!("opening the decision log {}", log_path.display()))?;
    let addresses_path = dir.join(COORD_ADDRESSES);
    let addresses: BTreeMap<String, Address> = match std::fs::read(&addresses_path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("reading {}", addresses_path.display()))?,
        Err(_) => BTreeMap::new(),
    };
    let stop = crate::stop_on_signal()?;
    runtime()?.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        let endpoint = CoordinatorEndpoint::start(
            &name,
            Box::new(log),
            addresses,
            crate::print_events(),
            cancel.clone(),
        )?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen:?}"))?;
        crate::print(json!({
            "event": "listening",
            "address": listener.local_addr()?.to_string(),
            "coordinator": name,
            "epoch": endpoint.epoch(),
            "auth": token.is_some(),
        }));
        let save: Arc<dyn Fn(&CoordinatorEndpoint) + Send + Sync> = Arc::new(move |c| {
            let tmp = addresses_path.with_extension("json.tmp");
            let body = serde_json::to_vec_pretty(&c.addresses()).expect("serializable");
            let saved = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, &addresses_path));
            if let Err(e) = saved {
                crate::print(json!({"event": "error", "reason": format!("saving {}: {e}", addresses_path.display())}));
            }
        });
        {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                cancel.cancel();
            });
        }
        txnet::serve_coordinator(listener, endpoint, token, save, cancel).await?;
        Ok::<(), anyhow::Error>(())
    })
}

/// `kuzu-sync tx --coordinator URL FILE`: true if committed.
pub fn tx(url: &str, file: &Path, token_file: Option<&Path>) -> Result<bool> {
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let request =
        TxRequest::parse(&body).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let token = token_file.map(kuzu_sync::net::read_token).transpose()?;
    let wait =
        Duration::from_millis(request.timeout_ms.unwrap_or(5_000)) * 2 + Duration::from_secs(30);
    let (status, answer) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(txnet::post_tx(url, token.as_deref(), body, wait))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if status != 200 {
        let why = answer["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| answer.to_string());
        bail!("the coordinator refused the transaction ({status}): {why}");
    }
    crate::print(answer.clone());
    Ok(answer["decision"] == "commit")
}

/// `kuzu-sync tx-status DIR`.
pub fn tx_status(dir: &Path) -> Result<()> {
    let path: PathBuf = dir.join(TX_LOG);
    if !dir.join(kuzu_sync::EVENT_LOG).exists() {
        bail!(
            "{} is not a replica (no {})",
            dir.display(),
            kuzu_sync::EVENT_LOG
        );
    }
    let log: SqliteTxLog<PartRecord<Op>> = SqliteTxLog::open(&path)
        .with_context(|| format!("opening the transaction log {}", path.display()))?;
    let now = txnet::now_ms();
    let records = log.records()?;
    let part = Participant::recover("", records, now);
    let mut prepared = Vec::new();
    for (tx, s) in part.prepared() {
        if let PartState::Prepared {
            participants,
            ops,
            locks,
            deadline,
            ..
        } = s
        {
            prepared.push(json!({
                "tx": tx.to_string(),
                "coordinator": tx.coordinator,
                "participants": participants,
                "ops": ops.len(),
                "locks": locks.iter().map(|l| &l.0).collect::<Vec<_>>(),
                "deadline_ms": deadline,
                "in_doubt": now > *deadline,
                "in_doubt_for_ms": now.saturating_sub(*deadline),
            }));
        }
    }
    crate::print(json!({"prepared": prepared}));
    Ok(())
}
