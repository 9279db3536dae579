//! The `kuzu-sync` command. Every subcommand prints JSON (one object, or JSON lines for
//! row-like output) on stdout; progress bars and errors go to stderr.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kuzu_sync::protocol::net::{DriveOptions, EventSink};
use kuzu_sync::protocol::{HubConfig, NetError, Shared};
use kuzu_sync::{bundle, load, net, ops, KuzuConfig, KuzuGraphStore, SqliteEventStore};
use kuzu_sync_engine::json::value_to_json;
use kuzu_sync_engine::sync::SessionConfig;
use kuzu_sync_engine::{GraphStore, VersionVector};
use kuzu_sync_kuzu::convert::untyped;

mod txcli;

#[derive(Parser)]
#[command(
    name = "kuzu-sync",
    version,
    about = "Offline-first replication for KuzuDB",
    long_about = "Offline-first replication for KuzuDB. A replica is a directory holding a Kuzu \
                  database (graph.kuzu) and a SQLite event log (events.sqlite). Every write \
                  becomes a replicated event; replicas exchange events through offline bundles \
                  or live sync through a hub (serve / sync) and converge to the same graph."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a replica: a Kuzu database and an event log side by side in DIR.
    Init {
        dir: PathBuf,
        /// This replica's id: 1-64 characters of A-Z a-z 0-9 _ . -
        #[arg(long)]
        peer_id: String,
    },
    /// Apply a DDL script (CREATE NODE TABLE, CREATE REL TABLE, ALTER TABLE … ADD) as
    /// replicated schema ops.
    Schema { dir: PathBuf, file: PathBuf },
    /// Load the CSV files a Kuzu COPY script names; every row becomes a replicated op.
    Load {
        dir: PathBuf,
        /// A script of `COPY table FROM "file" (options);` statements. Relative paths resolve
        /// against the script's folder.
        script: PathBuf,
        /// Ops per atomic write.
        #[arg(long, default_value_t = 50_000)]
        batch: usize,
    },
    /// Write ops given as JSON lines (from FILE, or stdin), as one atomic write.
    Write {
        dir: PathBuf,
        file: Option<PathBuf>,
        /// Go offline first (if not already): writes are queued until the next `sync`,
        /// which coalesces them (superseded sets dropped, increments summed) and sends them.
        #[arg(long)]
        offline: bool,
        /// With --offline: how many ops the queue may hold (default 10,000; remembered).
        #[arg(long, requires = "offline")]
        queue_capacity: Option<usize>,
    },
    /// Run a read-only Cypher query; rows are printed as JSON lines.
    Query { dir: PathBuf, cypher: String },
    /// Write the events another replica lacks to an offline bundle.
    Export {
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The other replica's version vector as JSON, e.g. '{"node_b":12}' (default: all).
        #[arg(long)]
        since: Option<String>,
    },
    /// Import an offline bundle. Importing the same bundle twice changes nothing.
    Import { dir: PathBuf, bundle: PathBuf },
    /// Peer id, version vector, event counts, schema version, apply watermark, the
    /// offline queue and compaction (the snapshot's floor, the known peers).
    Status { dir: PathBuf },
    /// Fold the events every known peer holds into a snapshot and remove them from the
    /// log. The graph does not change. Peers that sync later than the floor get the
    /// snapshot, then the events after it.
    Compact {
        dir: PathBuf,
        /// Stop keeping events for this peer (one that will not come back); repeatable.
        #[arg(long)]
        forget_peer: Vec<String>,
    },
    /// The conflicts detected in this replica's history, as JSON lines.
    Conflicts { dir: PathBuf },
    /// Make a database created with plain Kuzu into a new replica in DIR. The source is
    /// opened read-only and copied (exported, then loaded as replicated ops); it is never
    /// modified.
    Adopt {
        dir: PathBuf,
        /// The Kuzu database to adopt (Kuzu 0.11: the database file; its WAL beside it).
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        peer_id: String,
    },
    /// Compare this replica's resolved state with a remote's by Merkle tree, without
    /// exchanging events, and print what differs. With --repair, copy the remote's rows
    /// of the entities that differ (and delete those the remote lacks) as local writes.
    Diff {
        dir: PathBuf,
        #[arg(long)]
        remote: String,
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        auth_token_file: Option<PathBuf>,
        #[arg(long, default_value_t = 0)]
        schema_version: u64,
    },
    /// Find rows written straight into the Kuzu database, bypassing kuzu-sync, and either
    /// capture them as new events (--capture) or revert them (--revert).
    Drift {
        dir: PathBuf,
        #[arg(long, conflicts_with = "revert")]
        capture: bool,
        #[arg(long)]
        revert: bool,
    },
    /// Run a hub: accept sync clients (raw TCP, WebSocket and HTTP on one port) until
    /// SIGINT/SIGTERM. Lifecycle events are printed as JSON lines.
    Serve {
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:7700.
        #[arg(long)]
        listen: String,
        /// A file holding the token clients must present. Without it (and without
        /// --credentials) the hub is open.
        #[arg(long, conflicts_with = "credentials")]
        auth_token_file: Option<PathBuf>,
        /// A JSON file of tokens bound to peer ids and roles (replica, relay, read-only):
        /// {"credentials": [{"token": "…", "peers": ["laptop-1"], "role": "replica"}]}.
        #[arg(long, value_name = "FILE")]
        credentials: Option<PathBuf>,
        /// Most connections served at once; past it a new connection gets a clear refusal.
        #[arg(long, default_value_t = kuzu_sync::protocol::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Serve TLS only (clients use wss://, https:// or tls://): the certificate chain,
        /// PEM. Clients trust the Mozilla roots plus the PEM file named by KUZU_SYNC_TLS_CA.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key, PEM.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Keep only the event log (no Kuzu database): a hub that validates and forwards.
        #[arg(long)]
        relay: bool,
        /// Peer id of a relay being created (DIR without an event log yet).
        #[arg(long)]
        peer_id: Option<String>,
        /// The application schema version this hub requires; older clients get `outdated`.
        #[arg(long, default_value_t = 0)]
        schema_version: u64,
        /// A table whose events go first to clients on a slow link (repeatable).
        #[arg(long)]
        critical: Vec<String>,
        /// Compact the log every SECS seconds (as `kuzu-sync compact` does), while serving;
        /// sessions wait while it runs. A `compacted` line reports each compaction that
        /// removed events.
        #[arg(long, value_name = "SECS")]
        compact_every: Option<u64>,
        /// The token to present when this replica, in doubt about a transaction whose
        /// coordinator does not answer, dials the other participants to ask them
        /// (their hubs must accept it as this replica's peer id).
        #[arg(long, value_name = "FILE")]
        tx_auth_token_file: Option<PathBuf>,
    },
    /// Run a coordinator of two-phase commit transactions: `kuzu-sync tx` sends it
    /// transactions over HTTP (POST /tx); it reaches the participants (replicas running
    /// `serve`) over the sync protocol, keeps its decisions in DIR/coordinator.sqlite and
    /// recovers from it on restart. Runs until SIGINT/SIGTERM.
    Coordinator {
        dir: PathBuf,
        /// Address of its HTTP face, e.g. 127.0.0.1:7800.
        #[arg(long)]
        listen: String,
        /// A file holding the token `kuzu-sync tx` must present.
        #[arg(long)]
        auth_token_file: Option<PathBuf>,
        /// Its peer id, which transaction ids carry and participants see (default
        /// `coordinator`; kept in DIR on first start).
        #[arg(long)]
        name: Option<String>,
        /// Also accept participants that connect to it (`kuzu-sync sync DIR --watch
        /// --remote tcp://THIS`), on this address: a transaction file reaches them by
        /// giving no `url`. Requires --credentials, which binds each token to its peer.
        #[arg(long, value_name = "ADDR", requires = "credentials")]
        participants_listen: Option<String>,
        /// Tokens of the participants that connect, bound to their peer ids (the format of
        /// `serve --credentials`).
        #[arg(long, value_name = "FILE", requires = "participants_listen")]
        credentials: Option<PathBuf>,
    },
    /// Run one transaction through a coordinator: FILE.json names, for each participant
    /// (its peer id), its url, optional token and ops (in the format of `write`):
    /// {"participants": {"p1": {"url": "tcp://…", "ops": [{"op": "add_node", …}]}},
    /// "timeout_ms": 5000}. Prints the decision and each participant's state as JSON.
    /// Exit code 4: the decision was abort.
    Tx {
        /// The coordinator, http://HOST:PORT.
        #[arg(long)]
        coordinator: String,
        file: PathBuf,
        #[arg(long)]
        auth_token_file: Option<PathBuf>,
    },
    /// List a replica's transactions prepared and not decided: their age past the
    /// deadline (in doubt), participants and what they hold locked; and those an operator
    /// decided (`tx-resolve`), with the reason, when, and any mismatch with the decision
    /// that came later. Reads DIR's transaction log only (safe beside a running `serve`).
    TxStatus { dir: PathBuf },
    /// Decide, as the operator, a transaction prepared on this replica and left in doubt
    /// (its coordinator lost): --commit applies its prepared ops as the coordinator's
    /// commit would, --abort drops them (a tombstone). Logged as the operator's decision;
    /// if the coordinator later decides the other way, the operator's stands and
    /// `tx-status` shows the mismatch. Stop `serve` on DIR first.
    #[command(group(clap::ArgGroup::new("decision").required(true).args(["commit", "abort"])))]
    TxResolve {
        dir: PathBuf,
        /// The transaction, coordinator/epoch/seq (as `tx-status` lists it).
        tx: String,
        #[arg(long)]
        commit: bool,
        #[arg(long)]
        abort: bool,
        /// Why, for the record (`tx-status` shows it).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Sync with one or more remotes (tcp://HOST:PORT, ws://HOST:PORT/sync,
    /// http://HOST:PORT/sync; with TLS tls://, wss://, https://): exchange, EOSE, exit with a summary; or stay connected
    /// with --watch. Lifecycle events are printed as JSON lines. Exit code 3: refused.
    Sync {
        dir: PathBuf,
        /// A remote URL; repeat to sync with several at once.
        #[arg(long, required = true)]
        remote: Vec<String>,
        /// Stay connected, stream changes both ways, reconnect with backoff (max 30 s).
        #[arg(long)]
        watch: bool,
        /// With --watch: also read ops as JSON lines from stdin and write each line.
        #[arg(long, requires = "watch")]
        stdin: bool,
        #[arg(long)]
        auth_token_file: Option<PathBuf>,
        /// This application's schema version (0 if unset).
        #[arg(long, default_value_t = 0)]
        schema_version: u64,
        /// After a one-shot sync, compare Merkle roots with each remote: `converged` in
        /// the summary (false if the remote changed meanwhile, or if histories differ).
        #[arg(long, conflicts_with = "watch")]
        verify: bool,
        /// A table whose events go first to the remote on a slow link (repeatable).
        #[arg(long)]
        critical: Vec<String>,
        /// With --watch:
        /// the token to present when this replica, in doubt about a transaction whose
        /// coordinator does not answer, dials the other participants to ask them
        /// (their hubs must accept it as this replica's peer id).
        #[arg(long, value_name = "FILE")]
        tx_auth_token_file: Option<PathBuf>,
    },
}

/// Exit code when a remote refuses the session (auth, outdated schema, protocol version).
const EXIT_REFUSED: u8 = 3;
/// Exit code of `tx` when the decision was abort.
const EXIT_ABORTED: u8 = 4;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let refused = e
                .downcast_ref::<NetError>()
                .is_some_and(|n| matches!(n, NetError::Refused { .. }));
            if refused {
                ExitCode::from(EXIT_REFUSED)
            } else if e.downcast_ref::<txcli::Aborted>().is_some() {
                ExitCode::from(EXIT_ABORTED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn open(dir: &Path) -> Result<kuzu_sync::KuzuReplica> {
    let pb = bar(0, "replaying");
    let r = kuzu_sync::open_with(dir, &KuzuConfig::default(), &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })
    .with_context(|| format!("opening replica {}", dir.display()))?;
    pb.finish_and_clear();
    Ok(r)
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { dir, peer_id } => {
            let r = kuzu_sync::init(&dir, &peer_id)
                .with_context(|| format!("creating replica {}", dir.display()))?;
            print(json!({"dir": dir, "peer_id": r.peer().to_string()}));
        }
        Command::Schema { dir, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let mut r = open(&dir)?;
            let mut schema = r.engine().schema().clone();
            let schema_ops = ops::schema_ops(&text, &mut schema)
                .with_context(|| format!("in {}", file.display()))?;
            let n = schema_ops.len();
            r.write(
                schema_ops
                    .into_iter()
                    .map(kuzu_sync_engine::Op::Schema)
                    .collect(),
            )?;
            print(json!({"schema_ops": n, "schema_version": r.engine().schema().version}));
        }
        Command::Load { dir, script, batch } => {
            let mut r = open(&dir)?;
            let pb = bar(0, "loading");
            pb.set_length(u64::MAX);
            pb.set_style(
                ProgressStyle::with_template("{msg:>20} {pos} rows ({per_sec})")
                    .expect("valid template"),
            );
            let loaded = load::load_script(&mut r, &script, batch.max(1), &mut |table, done| {
                pb.set_message(table.to_string());
                pb.set_position(done);
            })
            .with_context(|| format!("loading {}", script.display()))?;
            pb.finish_and_clear();
            let total: usize = loaded.iter().map(|l| l.rows).sum();
            print(json!({"rows": total, "files": loaded}));
        }
        Command::Write {
            dir,
            file,
            offline,
            queue_capacity,
        } => {
            let text = match &file {
                Some(f) => std::fs::read_to_string(f)
                    .with_context(|| format!("reading {}", f.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s
                }
            };
            let mut r = open(&dir)?;
            if offline {
                r.go_offline()?;
                if let Some(c) = queue_capacity {
                    r.set_queue_capacity(c)?;
                }
            }
            let ids = kuzu_sync::write_json_lines(&mut r, &text).with_context(|| {
                format!(
                    "in {}",
                    file.as_ref()
                        .map(|f| f.display().to_string())
                        .unwrap_or_else(|| "stdin".into())
                )
            })?;
            let mut out = json!({
                "written": ids.len(),
                "version_vector": r.version_vector(),
            });
            if r.is_offline() {
                out["offline_queue"] = serde_json::to_value(r.queue_status()?)?;
            }
            print(out);
        }
        Command::Query { dir, cypher } => query(&dir, &cypher)?,
        Command::Export { dir, out, since } => {
            let since: VersionVector = match since {
                Some(s) => serde_json::from_str(&s).with_context(|| {
                    format!("--since {s:?} is not a version vector like {{\"node_a\": 3}}")
                })?,
                None => VersionVector::new(),
            };
            let r = open(&dir)?;
            let outcome = bundle::export(&r, &since, &out)?;
            print(serde_json::to_value(outcome)?);
        }
        Command::Import { dir, bundle: path } => {
            // Check the bundle before opening (and replaying) the replica.
            bundle::read(&path)?;
            let mut r = open(&dir)?;
            let pb = bar(0, "importing");
            let (outcome, installed) = bundle::import(&mut r, &path, &mut |done, total| {
                pb.set_length(total);
                pb.set_position(done);
            })
            .with_context(|| format!("importing {}", path.display()))?;
            pb.finish_and_clear();
            print(json!({
                "received": outcome.received,
                "applied": outcome.applied,
                "duplicates": outcome.duplicates,
                "conflicts": outcome.conflicts,
                "held": outcome.held,
                "snapshot_installed": installed,
                "version_vector": r.version_vector(),
            }));
        }
        Command::Status { dir } => {
            let mut r = open(&dir)?;
            let s = r.status()?;
            print(json!({
                "peer_id": s.peer_id,
                "version_vector": s.version_vector,
                "events": {"stored": s.stored_events, "applied": s.applied_events},
                "schema_version": s.schema_version,
                "apply_watermark": s.apply_watermark,
                "transactions": {
                    "held_events": s.held_events,
                    "released_incomplete": s.released_incomplete,
                },
                "graph": {"nodes": s.nodes, "edges": s.edges},
                "conflicts": s.conflicts,
                "offline_queue": r.queue_status()?,
                "compaction": {
                    "floor": s.compacted_floor,
                    "snapshot_events": s.compacted_events,
                    "known_peers": r.known_peers()?,
                },
            }));
        }
        Command::Compact { dir, forget_peer } => {
            let mut r = open(&dir)?;
            let ids: Vec<&str> = forget_peer.iter().map(String::as_str).collect();
            r.forget_peers(&ids).context("--forget-peer")?;
            let pb = bar(0, "compacting");
            let report = r.compact_with_progress(&mut |done, total| {
                pb.set_length(total);
                pb.set_position(done);
            })?;
            pb.finish_and_clear();
            let mut out = serde_json::to_value(report)?;
            out["forgotten"] = json!(forget_peer);
            print(out);
        }
        Command::Conflicts { dir } => {
            let r = open(&dir)?;
            for c in r.conflicts() {
                print(serde_json::to_value(c)?);
            }
        }
        Command::Adopt { dir, from, peer_id } => {
            let pb = bar(0, "adopting");
            pb.set_length(u64::MAX);
            pb.set_style(
                ProgressStyle::with_template("{msg:>20} {pos} rows ({per_sec})")
                    .expect("valid template"),
            );
            let (r, outcome) =
                kuzu_sync::adopt::adopt(&dir, &from, &peer_id, &mut |table, done| {
                    pb.set_message(table.to_string());
                    pb.set_position(done);
                })
                .with_context(|| format!("adopting {} into {}", from.display(), dir.display()))?;
            pb.finish_and_clear();
            print(json!({
                "dir": dir,
                "peer_id": r.peer().to_string(),
                "source": outcome.source,
                "copied": true,
                "schema_ops": outcome.schema_ops,
                "rows": outcome.rows,
                "files": outcome.files,
                "version_vector": r.version_vector(),
            }));
        }
        Command::Diff {
            dir,
            remote,
            repair,
            auth_token_file,
            schema_version,
        } => {
            let config = session_config(auth_token_file.as_deref(), schema_version)?;
            let shared = Shared::new(open(&dir)?);
            let d = kuzu_sync::protocol::net::remote_diff(&shared, &remote, config)?;
            let label = |r: &kuzu_sync_engine::antientropy::EntityRow| r.label.clone();
            let mut out = json!({
                "equal": d.equal,
                "local_root": d.local_root,
                "remote_root": d.remote_root,
                "local_entities": d.local_entities,
                "remote_entities": d.remote_entities,
                "missing_here": d.missing_here.iter().map(label).collect::<Vec<_>>(),
                "missing_there": d.missing_there.iter().map(label).collect::<Vec<_>>(),
                "different": d.different.iter().map(|c| label(&c.local)).collect::<Vec<_>>(),
                "comparisons": d.comparisons,
                "round_trips": d.round_trips,
                "wire_bytes": d.wire_bytes,
            });
            if repair && !d.equal {
                let repaired =
                    kuzu_sync::protocol::net::pull_repair(&shared, &d).context("repairing")?;
                out["repaired"] = serde_json::to_value(repaired)?;
            }
            print(out);
        }
        Command::Drift {
            dir,
            capture,
            revert,
        } => {
            let mut r = open(&dir)?;
            let d = r.drift()?;
            let label = |r: &kuzu_sync_engine::antientropy::EntityRow| r.label.clone();
            let mut out = json!({
                "drift": !d.is_empty(),
                "extra": d.extra.iter().map(label).collect::<Vec<_>>(),
                "missing": d.missing.iter().map(label).collect::<Vec<_>>(),
                "different": d.different.iter().map(|(m, _)| label(m)).collect::<Vec<_>>(),
                "comparisons": d.comparisons,
            });
            if capture && !d.is_empty() {
                out["captured"] = json!(r.capture_drift(&d)?.len());
            }
            if revert && !d.is_empty() {
                out["reverted"] = json!(r.revert_drift(&d)?);
            }
            print(out);
        }
        Command::Serve {
            dir,
            listen,
            auth_token_file,
            credentials,
            max_connections,
            tls_cert,
            tls_key,
            relay,
            peer_id,
            schema_version,
            critical,
            compact_every,
            tx_auth_token_file,
        } => {
            let ask_token = tx_auth_token_file
                .as_deref()
                .map(net::read_token)
                .transpose()?;
            if compact_every == Some(0) {
                bail!("--compact-every 0: give a number of seconds of at least 1");
            }
            let compact_every = compact_every.map(Duration::from_secs);
            let config = HubConfig {
                session: SessionConfig {
                    seal: true,
                    critical_tables: critical,
                    credentials: credentials
                        .as_deref()
                        .map(net::read_credentials)
                        .transpose()?
                        .map(Arc::new),
                    ..session_config(auth_token_file.as_deref(), schema_version)?
                },
                max_connections,
                tls: match (tls_cert, tls_key) {
                    (Some(cert), Some(key)) => Some(
                        kuzu_sync::protocol::link::server_tls(&cert, &key)
                            .context("reading --tls-cert and --tls-key")?,
                    ),
                    _ => None,
                },
                ..HubConfig::default()
            };
            if relay {
                let shared = Shared::new(net::open_relay(&dir, peer_id.as_deref())?);
                let config = HubConfig {
                    tx: Some(txcli::participant(&shared, &dir, ask_token.clone())?),
                    ..config
                };
                serve(shared, &listen, config, true, compact_every)?;
            } else {
                anyhow::ensure!(
                    peer_id.is_none(),
                    "--peer-id is for creating a relay; create a replica with `kuzu-sync init`"
                );
                let shared = Shared::new(open(&dir)?);
                let config = HubConfig {
                    tx: Some(txcli::participant(&shared, &dir, ask_token.clone())?),
                    ..config
                };
                serve(shared, &listen, config, false, compact_every)?;
            }
        }
        Command::Coordinator {
            dir,
            listen,
            auth_token_file,
            name,
            participants_listen,
            credentials,
        } => txcli::coordinator(
            &dir,
            &listen,
            auth_token_file.as_deref(),
            name.as_deref(),
            participants_listen.as_deref().zip(credentials.as_deref()),
        )?,
        Command::Tx {
            coordinator,
            file,
            auth_token_file,
        } => {
            if !txcli::tx(&coordinator, &file, auth_token_file.as_deref())? {
                return Err(txcli::Aborted.into());
            }
        }
        Command::TxStatus { dir } => txcli::tx_status(&dir)?,
        Command::TxResolve {
            dir,
            tx,
            commit,
            abort: _,
            reason,
        } => {
            let decision = if commit {
                kuzu_sync_engine::tx::Decision::Commit
            } else {
                kuzu_sync_engine::tx::Decision::Abort
            };
            txcli::tx_resolve(&dir, &tx, decision, reason.as_deref())?
        }
        Command::Sync {
            dir,
            remote,
            watch,
            stdin,
            auth_token_file,
            schema_version,
            verify,
            critical,
            tx_auth_token_file,
        } => {
            if tx_auth_token_file.is_some() && !watch {
                bail!("--tx-auth-token-file is for --watch (a replica that takes part in transactions)");
            }
            let ask_token = tx_auth_token_file
                .as_deref()
                .map(net::read_token)
                .transpose()?;
            let config = SessionConfig {
                critical_tables: critical,
                ..session_config(auth_token_file.as_deref(), schema_version)?
            };
            let shared = Shared::new(open(&dir)?);
            if watch {
                // A replica that stays connected takes part in transactions: prepares
                // come from a coordinator among its remotes.
                let tx = txcli::participant(&shared, &dir, ask_token)?;
                sync_watch(shared, &remote, config, stdin, tx)?;
            } else {
                sync_once(&shared, &remote, config, verify)?;
            }
        }
    }
    Ok(())
}

fn session_config(token_file: Option<&Path>, schema_version: u64) -> Result<SessionConfig> {
    Ok(SessionConfig {
        auth_token: token_file.map(net::read_token).transpose()?,
        schema_version,
        ..SessionConfig::default()
    })
}

fn print_events() -> EventSink {
    Arc::new(|remote, e| print(net::lifecycle_json(remote, e)))
}

/// Sets the returned flag on SIGINT or SIGTERM.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the SIGINT/SIGTERM handler")?;
    Ok(stop)
}

fn serve<G>(
    shared: Arc<Shared<SqliteEventStore, G>>,
    listen: &str,
    config: HubConfig,
    relay: bool,
    compact_every: Option<Duration>,
) -> Result<()>
where
    G: GraphStore + Send + 'static,
{
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen:?}"))?;
    // Each connection is a file descriptor: take the most the system allows this process.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: could not raise the open-files limit: {e}");
    }
    let stop = stop_on_signal()?;
    let compactor = compact_every.map(|every| {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                match shared.lock().compact() {
                    Ok(r) if r.removed_events > 0 => {
                        let mut out = serde_json::to_value(r).expect("serializable");
                        out["event"] = json!("compacted");
                        print(out);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        print(json!({"event": "error", "reason": format!("compacting: {e}")}))
                    }
                }
            }
        })
    });
    let (peer, vv) = {
        let r = shared.lock();
        (r.peer().to_string(), r.version_vector().clone())
    };
    let auth = config.session.auth_token.is_some() || config.session.credentials.is_some();
    if !auth {
        eprintln!(
            "warning: no --auth-token-file or --credentials: any client may sync with this hub"
        );
    }
    print(json!({
        "event": "listening",
        "address": listener.local_addr()?.to_string(),
        "peer": peer,
        "relay": relay,
        "auth": auth,
        "tls": config.tls.is_some(),
        "schema_version": config.session.schema_version,
        "version_vector": vv,
    }));
    kuzu_sync::protocol::serve(
        listener,
        shared.clone(),
        config,
        stop.clone(),
        print_events(),
    )?;
    stop.store(true, Ordering::SeqCst);
    if let Some(t) = compactor {
        let _ = t.join();
    }
    let vv = shared.lock().version_vector().clone();
    drop(shared);
    print(json!({"event": "stopped", "version_vector": vv}));
    Ok(())
}

fn sync_once(
    shared: &Shared<SqliteEventStore, KuzuGraphStore>,
    remotes: &[String],
    config: SessionConfig,
    verify: bool,
) -> Result<()> {
    let started = Instant::now();
    let mut reports = Vec::new();
    // An offline replica comes back: its queue is coalesced and it goes online first.
    let offline = shared.lock().go_online()?;
    for url in remotes {
        let report = kuzu_sync::protocol::sync_once(shared, url, config.clone(), print_events())?;
        reports.push(report);
    }
    let mut verified = Vec::new();
    if verify {
        for url in remotes {
            let d = kuzu_sync::protocol::net::remote_diff(shared, url, config.clone())?;
            verified.push(json!({"remote": url, "converged": d.equal, "root": d.local_root}));
        }
    }
    let r = shared.lock();
    print(json!({
        "event": "summary",
        "sessions": reports,
        "sent": reports.iter().map(|r| r.events_sent).sum::<u64>(),
        "received": reports.iter().map(|r| r.events_received).sum::<u64>(),
        "version_vector": r.version_vector(),
        "offline_queue": {
            "raw_operations": offline.raw,
            "coalesced_operations": offline.coalesced,
        },
        "ms": started.elapsed().as_millis() as u64,
        "verified": verified,
    }));
    Ok(())
}

fn sync_watch(
    shared: Arc<Shared<SqliteEventStore, KuzuGraphStore>>,
    remotes: &[String],
    config: SessionConfig,
    stdin: bool,
    tx: Arc<dyn kuzu_sync::protocol::txnet::TxEndpoint>,
) -> Result<()> {
    let stop = stop_on_signal()?;
    let offline = shared.lock().go_online()?;
    if offline.raw > 0 {
        print(json!({
            "event": "online",
            "raw_operations": offline.raw,
            "coalesced_operations": offline.coalesced,
        }));
    }
    if stdin {
        let shared = shared.clone();
        std::thread::spawn(move || {
            for (n, line) in std::io::stdin().lines().enumerate() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let result = kuzu_sync::write_json_lines(&mut shared.lock(), &line);
                match result {
                    Ok(ids) => {
                        shared.changed();
                        print(json!({"event": "written", "line": n + 1, "events": ids.len()}));
                    }
                    Err(e) => {
                        print(json!({"event": "error", "line": n + 1, "reason": format!("{e:#}")}))
                    }
                }
            }
        });
    }
    let opts = DriveOptions {
        stop,
        events: print_events(),
        tx: Some(tx),
        ..DriveOptions::default()
    };
    let errors = kuzu_sync::protocol::watch(shared.clone(), remotes, config, opts);
    let vv = shared.lock().version_vector().clone();
    print(json!({"event": "stopped", "version_vector": vv}));
    if let Some(e) = errors.into_iter().next() {
        return Err(e.into());
    }
    Ok(())
}

/// Runs a query on the database opened read-only. If the graph is behind the log (a crash
/// before apply), the replica is opened first to catch up.
fn query(dir: &Path, cypher: &str) -> Result<()> {
    let log = dir.join(kuzu_sync::EVENT_LOG);
    anyhow::ensure!(log.exists(), "{} is not a kuzu-sync replica", dir.display());
    let events = SqliteEventStore::open(&log)?;
    let db_path = dir.join(kuzu_sync::GRAPH_DB);
    let read_only = KuzuConfig {
        read_only: true,
        ..KuzuConfig::default()
    };
    let behind = {
        let mut g = KuzuGraphStore::open(&db_path, &read_only)?;
        kuzu_sync_engine::replica::graph_is_behind(&events, &g.watermark()?)?
    };
    drop(events);
    if behind {
        drop(open(dir)?);
    }
    let g = KuzuGraphStore::open(&db_path, &read_only)?;
    let (names, rows) = g
        .query(cypher)
        .with_context(|| format!("query {cypher:?}"))?;
    for row in rows {
        let mut obj = serde_json::Map::new();
        for (name, v) in names.iter().zip(row) {
            let v = untyped(v).map_err(anyhow::Error::msg)?;
            obj.insert(name.clone(), value_to_json(&v));
        }
        print(serde_json::Value::Object(obj));
    }
    Ok(())
}
