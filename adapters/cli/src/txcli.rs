//! The CLI's two-phase commit: `coordinator`, `tx`, `tx-status`, `tx-resolve`, and the
//! participant side of `serve` (ARCHITECTURE.md, "Coordinated transactions").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use kuzu_sync::protocol::txnet::{self, Address, CoordinatorEndpoint, TxRequest};
use kuzu_sync_engine::tx::{
    CoordRecord, Decision, FailingTxLog, OperatorDecision, PartRecord, PartState, Participant,
    TxId, TxLog, TxParticipant,
};
use kuzu_sync_engine::{EventStore, GraphStore, Op, Replica, StoreError};
use kuzu_sync_sqlite::{ExclusiveLock, SqliteTxLog};

/// A replica's transaction records, beside its event log.
pub const TX_LOG: &str = "tx.sqlite";
/// Locked by the one process that takes part in, or resolves, a replica's transactions.
const TX_LOCK: &str = "tx.lock";
/// The longest `--reason` of `tx-resolve`.
const MAX_REASON: usize = 4096;
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

/// The participant's record log of the replica in `dir`, with the directory's
/// transaction lock held as long as the log lives.
pub fn participant_log(dir: &Path) -> Result<txnet::BoxedPartLog> {
    let lock = lock_transactions(dir)?;
    locked_log(dir, lock)
}

/// Takes `dir`'s transaction lock (released when the process ends, however it ends), or
/// says that another process holds it.
fn lock_transactions(dir: &Path) -> Result<ExclusiveLock> {
    let path = dir.join(TX_LOCK);
    match ExclusiveLock::try_lock(&path)? {
        Some(lock) => Ok(lock),
        None => bail!(
            "the transactions of {} are in use by another kuzu-sync process (a running \
             `serve`?): stop it, then try again",
            dir.display()
        ),
    }
}

/// A participant's record log and the lock that makes it this process's alone.
struct LockedLog<L> {
    log: L,
    _lock: ExclusiveLock,
}

impl<L: TxLog<PartRecord<Op>>> TxLog<PartRecord<Op>> for LockedLog<L> {
    fn append(&mut self, record: &PartRecord<Op>) -> Result<(), StoreError> {
        self.log.append(record)
    }
    fn records(&self) -> Result<Vec<PartRecord<Op>>, StoreError> {
        self.log.records()
    }
}

fn locked_log(dir: &Path, lock: ExclusiveLock) -> Result<txnet::BoxedPartLog> {
    let path = dir.join(TX_LOG);
    let inner = SqliteTxLog::open(&path)
        .with_context(|| format!("opening the transaction log {}", path.display()))?;
    let fail = match std::env::var(INJECT_ENV) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{INJECT_ENV}={v:?}: expected a number"))?,
        Err(_) => 0,
    };
    Ok(Box::new(LockedLog {
        log: FailingTxLog {
            inner,
            fail: Arc::new(AtomicUsize::new(fail)),
        },
        _lock: lock,
    }))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// The participant endpoint of a hub serving the replica in `dir`; `ask_token` is what
/// it presents when it dials another participant to ask about a transaction in doubt.
pub fn participant<G>(
    shared: &Arc<kuzu_sync::protocol::Shared<kuzu_sync::SqliteEventStore, G>>,
    dir: &Path,
    ask_token: Option<String>,
) -> Result<Arc<dyn txnet::TxEndpoint>>
where
    G: kuzu_sync_engine::GraphStore + Send + 'static,
{
    let endpoint = txnet::ParticipantEndpoint::new(
        shared.clone(),
        participant_log(dir)?,
        crate::print_events(),
        ask_token,
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
    participants: Option<(&str, &Path)>,
) -> Result<()> {
    let participants = participants
        .map(|(addr, file)| Ok::<_, anyhow::Error>((addr, kuzu_sync::net::read_credentials(file)?)))
        .transpose()?;
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
        if let Some((addr, credentials)) = participants {
            serve_participants(&name, addr, credentials, &endpoint, &cancel).await?;
        }
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

/// Accepts the participants that connect to the coordinator on `addr`: a hub over an
/// empty in-memory replica named as the coordinator, that declares no-exchange (no events
/// flow) and hands transaction messages to the coordinator; each token is bound to its
/// participant's peer id, so nobody votes for another.
async fn serve_participants(
    name: &str,
    addr: &str,
    credentials: kuzu_sync_engine::auth::Credentials,
    endpoint: &Arc<CoordinatorEndpoint>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    use kuzu_sync::protocol::{HubConfig, Shared};
    use kuzu_sync_engine::sync::SessionConfig;
    let replica = Replica::create(
        kuzu_sync_engine::MemoryEventStore::default(),
        kuzu_sync_engine::memory::MemoryGraphStore::new(),
        kuzu_sync_engine::PeerId::new(name)?,
        Box::new(kuzu_sync_engine::FixedClock(0)),
    )?;
    let config = HubConfig {
        session: SessionConfig {
            credentials: Some(Arc::new(credentials)),
            capabilities: vec![kuzu_sync_engine::sync::CAP_NO_EXCHANGE.to_string()],
            ..SessionConfig::default()
        },
        tx: Some(endpoint.clone() as Arc<dyn txnet::TxEndpoint>),
        ..HubConfig::default()
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for participants on {addr:?}"))?;
    crate::print(json!({
        "event": "listening_for_participants",
        "address": listener.local_addr()?.to_string(),
    }));
    let cancel = cancel.clone();
    tokio::spawn(async move {
        let served = kuzu_sync::protocol::serve_async(
            listener,
            Shared::new(replica),
            config,
            cancel,
            crate::print_events(),
        )
        .await;
        if let Err(e) = served {
            crate::print(
                json!({"event": "error", "reason": format!("participants listener: {e}")}),
            );
        }
    });
    Ok(())
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
            addresses,
            ..
        } = s
        {
            prepared.push(json!({
                "tx": tx.to_string(),
                "coordinator": tx.coordinator,
                "participants": participants,
                "addresses": addresses,
                "ops": ops.len(),
                "locks": locks.iter().map(|l| &l.0).collect::<Vec<_>>(),
                "deadline_ms": deadline,
                "in_doubt": now > *deadline,
                "in_doubt_for_ms": now.saturating_sub(*deadline),
            }));
        }
    }
    let resolved: Vec<_> = part
        .operator_decisions()
        .map(|(tx, o)| {
            let state = match part.state(tx) {
                Some(PartState::Committed) => "committed",
                Some(PartState::Aborted) => "aborted",
                // Logged, and interrupted before its commit took effect.
                Some(PartState::Prepared { .. }) | None => "prepared",
            };
            let mut j = operator_json(tx, o);
            j["state"] = json!(state);
            j
        })
        .collect();
    crate::print(json!({"prepared": prepared, "resolved": resolved}));
    Ok(())
}

/// `kuzu-sync tx-resolve DIR TX_ID --commit|--abort [--reason TEXT]`.
pub fn tx_resolve(dir: &Path, tx: &str, decision: Decision, reason: Option<&str>) -> Result<()> {
    let tx: TxId = tx.parse()?;
    let reason = reason.unwrap_or_default();
    if reason.len() > MAX_REASON {
        bail!(
            "--reason of {} bytes is over the limit of {MAX_REASON}",
            reason.len()
        );
    }
    if !dir.join(kuzu_sync::EVENT_LOG).exists() {
        bail!(
            "{} is not a replica (no {})",
            dir.display(),
            kuzu_sync::EVENT_LOG
        );
    }
    // Before the replica: a running `serve` holds it.
    let lock = lock_transactions(dir)?;
    let by = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let now = txnet::now_ms();
    let opening = || format!("opening replica {}", dir.display());
    let decided = if dir.join(kuzu_sync::GRAPH_DB).exists() {
        let mut r = kuzu_sync::open(dir).with_context(opening)?;
        resolve_on(&mut r, dir, lock, &tx, decision, &by, reason, now)?
    } else {
        let mut r = kuzu_sync::net::open_relay(dir, None).with_context(opening)?;
        resolve_on(&mut r, dir, lock, &tx, decision, &by, reason, now)?
    };
    let mut out = operator_json(&tx, &decided);
    out["state"] = json!(match decided.decision {
        Decision::Commit => "committed",
        Decision::Abort => "aborted",
    });
    crate::print(out);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn resolve_on<E: EventStore, G: GraphStore>(
    r: &mut Replica<E, G>,
    dir: &Path,
    lock: ExclusiveLock,
    tx: &TxId,
    decision: Decision,
    by: &str,
    reason: &str,
    now: u64,
) -> Result<OperatorDecision> {
    let log = locked_log(dir, lock)?;
    let mut part =
        TxParticipant::open(r, log, now).context("recovering the replica's transactions")?;
    Ok(part.resolve(r, tx, decision, by, reason, now)?)
}

/// An operator's decision as `tx-resolve` prints it and `tx-status` lists it.
fn operator_json(tx: &TxId, o: &OperatorDecision) -> serde_json::Value {
    json!({
        "tx": tx.to_string(),
        "decision": o.decision.to_string(),
        "by": "operator",
        "user": o.by,
        "reason": (!o.reason.is_empty()).then_some(&o.reason),
        "at_ms": o.at,
        "time": utc(o.at),
        "mismatch": o.mismatch.as_ref().map(|m| json!({
            "decision": m.decision.to_string(),
            "from": m.from,
            "at_ms": m.at,
            "time": utc(m.at),
        })),
    })
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`2026-05-01T12:00:00.000Z`).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_formats_rfc_3339() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(super::utc(1_777_636_800_000), "2026-05-01T12:00:00.000Z");
    }
}
