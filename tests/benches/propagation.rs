//! Live propagation latency through a hub, per transport, measured on the `kuzu-sync`
//! binary from the outside, so that an old binary and a new one can be compared in the
//! same run.
//!
//! What is measured: a write made on replica A reaches replica B (another process) through
//! a hub. For each sample the bench writes one op line (`add_node` on a one-table schema)
//! to the stdin of `kuzu-sync sync A --watch --stdin`, and takes the time at which
//! `kuzu-sync sync B --watch` prints the `change` line that applies it. Latency = time B's
//! `change` line is read - time the op line was written to A's stdin: A's local write,
//! A -> hub, the hub's log and apply, hub -> B, B's log and apply, and whatever waits (the
//! builds before tokio polled a change counter every 20 ms, 250 ms over HTTP) in between.
//!
//! How: for each transport (`tcp://`, `ws://…/sync`, `http://…/sync`, all on the hub's one
//! port) and each binary, alternating (baseline tcp, this build tcp, baseline ws, …), a
//! fresh cluster in fresh temporary directories:
//!
//! - hub: `kuzu-sync init HUB --peer-id hub`, `kuzu-sync schema HUB schema.cypher` (one
//!   node table `Item`), `kuzu-sync serve HUB --listen 127.0.0.1:PORT` on a free port;
//! - A: `kuzu-sync init` then `kuzu-sync sync A --remote URL --watch --stdin`;
//! - B: `kuzu-sync init` then `kuzu-sync sync B --remote URL --watch`.
//!
//! The schema replicates from the hub; sampling starts once both A and B printed `eose`.
//! Then 10 warm-up writes, then N samples, one op each, each waiting for its own `change`
//! line on B (B's applied events are counted, so a late change is never taken for a later
//! sample's). A sample not applied within 10 s is a failure. Between samples the bench
//! waits 15-35 ms (uniformly random), so that writes do not line up with a 20 ms poll
//! timer. The processes are stopped with SIGTERM (then killed after 5 s) and the
//! directories removed.
//!
//! Output: a markdown table (transport | binary | samples | p50 ms | p99 ms | max ms |
//! failures) on stdout, progress on stderr, and the same as JSON in `$PROP_OUT` if set
//! (with, per row, `a_local_write_p50_ms`: op line -> A's `written` line, A's own write).
//! Exit code 1 if a run could not complete (its row says why). The processes share the
//! bench's process group, so Ctrl-C stops them too; a bench killed alone leaves them.
//!
//! Run (the bench drives a built `kuzu-sync` binary; it does not build it):
//!
//! ```sh
//! source scripts/env.sh && cargo build -p kuzu-sync
//! cp "$CARGO_TARGET_DIR/debug/kuzu-sync" /tmp/kuzu-sync-old   # e.g. before a change
//! KUZU_SYNC_BASELINE_BIN=/tmp/kuzu-sync-old \
//!     cargo bench --profile dev -p kuzu-sync-tests --bench propagation
//! ```
//!
//! (`--profile dev` as for the other benches: the default bench profile would build Kuzu's
//! C++ a second time.)
//!
//! Environment:
//!
//! - `KUZU_SYNC_BIN`: the binary labelled "this build" (default
//!   `$CARGO_TARGET_DIR/debug/kuzu-sync`, or `~/.cache/kuzu-sync/target/debug/kuzu-sync`);
//! - `KUZU_SYNC_BASELINE_BIN`: if set, also measure this binary, labelled "baseline";
//! - `PROP_SAMPLES`: samples per transport and binary (default 200);
//! - `PROP_OUT`: a path to write the results to as JSON.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const SCHEMA: &str = "CREATE NODE TABLE Item(id INT64, v INT64, PRIMARY KEY(id));\n";
const TABLE: &str = "Item";
const DEFAULT_SAMPLES: usize = 200;
const WARMUP: usize = 10;
/// A sample not applied on B within this time is a failure.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After this many failures in a row the run is abandoned (B no longer receives anything).
const MAX_CONSECUTIVE_FAILURES: usize = 3;
/// How long the hub may take to listen, and A and B to connect and catch up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Gap between samples: GAP_MIN_MS + uniform [0, GAP_JITTER_MS).
const GAP_MIN_MS: u64 = 15;
const GAP_JITTER_MS: u64 = 20;
/// How long a process may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a process's stdout and stderr kept for error messages.
const TAIL_LINES: usize = 6;
/// Characters of a failed run's error shown in the table (all of it is on stderr and in
/// `$PROP_OUT`).
const TABLE_ERROR_CHARS: usize = 100;

/// A transport: its name and the URL of the hub listening on a port.
#[derive(Clone, Copy, Debug)]
struct Transport {
    name: &'static str,
    url: fn(u16) -> String,
}

const TRANSPORTS: [Transport; 3] = [
    Transport {
        name: "tcp",
        url: |port| format!("tcp://127.0.0.1:{port}"),
    },
    Transport {
        name: "ws",
        url: |port| format!("ws://127.0.0.1:{port}/sync"),
    },
    Transport {
        name: "http",
        url: |port| format!("http://127.0.0.1:{port}/sync"),
    },
];

/// A binary under measurement.
#[derive(Clone, Debug)]
struct Binary {
    label: &'static str,
    path: PathBuf,
}

/// The result of one transport on one binary.
#[derive(Debug)]
struct Row {
    transport: &'static str,
    binary: Binary,
    outcome: Result<Stats, String>,
}

/// Latencies of the samples applied on B, and how many were not.
#[derive(Debug, Default)]
struct Stats {
    latencies: Vec<Duration>,
    /// Op line written to A's stdin -> A's `written` line (A's local write), per sample.
    local_writes: Vec<Duration>,
    failures: usize,
}

fn main() -> ExitCode {
    let samples = match samples_from_env() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("propagation: {e}");
            return ExitCode::FAILURE;
        }
    };
    let binaries = match binaries_from_env() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("propagation: {e}");
            return ExitCode::FAILURE;
        }
    };
    for b in &binaries {
        eprintln!("propagation: {} = {}", b.label, b.path.display());
    }
    let mut rng = Rng::seeded();
    let mut rows = Vec::new();
    for transport in TRANSPORTS {
        for binary in &binaries {
            eprintln!(
                "propagation: {} / {}: {WARMUP} warm-up + {samples} samples",
                transport.name, binary.label
            );
            let outcome = measure(binary, transport, samples, &mut rng);
            if let Err(e) = &outcome {
                eprintln!(
                    "propagation: {} / {} failed: {e}",
                    transport.name, binary.label
                );
            }
            rows.push(Row {
                transport: transport.name,
                binary: binary.clone(),
                outcome,
            });
        }
    }
    println!("{}", markdown(&rows));
    if let Some(out) = std::env::var_os("PROP_OUT") {
        let out = PathBuf::from(out);
        let text = serde_json::to_string_pretty(&results_json(&rows, samples))
            .expect("results serialize as JSON");
        if let Err(e) = std::fs::write(&out, text + "\n") {
            eprintln!("propagation: writing {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
        eprintln!("propagation: results written to {}", out.display());
    }
    if rows.iter().any(|r| r.outcome.is_err()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn samples_from_env() -> Result<usize, String> {
    match std::env::var("PROP_SAMPLES") {
        Err(_) => Ok(DEFAULT_SAMPLES),
        Ok(s) => match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("PROP_SAMPLES={s:?} is not a positive integer")),
        },
    }
}

/// The baseline (if `KUZU_SYNC_BASELINE_BIN` is set) first, then this build.
fn binaries_from_env() -> Result<Vec<Binary>, String> {
    let mut binaries = Vec::new();
    if let Some(p) = std::env::var_os("KUZU_SYNC_BASELINE_BIN") {
        binaries.push(Binary {
            label: "baseline",
            path: PathBuf::from(p),
        });
    }
    let this = match std::env::var_os("KUZU_SYNC_BIN") {
        Some(p) => PathBuf::from(p),
        None => default_target_dir()?.join("debug").join("kuzu-sync"),
    };
    binaries.push(Binary {
        label: "this build",
        path: this,
    });
    for b in &binaries {
        if !b.path.is_file() {
            return Err(format!(
                "{} binary {} does not exist (build it with `cargo build -p kuzu-sync`, \
                 or set KUZU_SYNC_BIN / KUZU_SYNC_BASELINE_BIN)",
                b.label,
                b.path.display()
            ));
        }
    }
    Ok(binaries)
}

/// `$CARGO_TARGET_DIR`, else the scripts' `~/.cache/kuzu-sync/target`.
fn default_target_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .ok_or("neither KUZU_SYNC_BIN, CARGO_TARGET_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/kuzu-sync/target"))
}

/// One transport on one binary: a fresh cluster, warm-up, samples, shutdown.
fn measure(
    binary: &Binary,
    transport: Transport,
    samples: usize,
    rng: &mut Rng,
) -> Result<Stats, String> {
    let dir = TempDir::new(&format!(
        "{}-{}",
        transport.name,
        binary.label.replace(' ', "-")
    ))?;
    let mut cluster = Cluster::start(&binary.path, transport, &dir)?;
    let result = run_samples(&mut cluster, samples, rng);
    cluster.stop();
    drop(dir);
    result
}

/// Writes WARMUP + `samples` ops to A, each after the previous one reached B (or timed
/// out), and times those after the warm-up.
fn run_samples(cluster: &mut Cluster, samples: usize, rng: &mut Rng) -> Result<Stats, String> {
    let mut stats = Stats::default();
    let mut sent: Vec<Instant> = Vec::with_capacity(WARMUP + samples);
    // Events applied on B since it caught up; op `i` is applied once this exceeds `i`.
    let mut applied = 0usize;
    let mut failures_in_a_row = 0;
    for i in 0..WARMUP + samples {
        let timed = i >= WARMUP;
        sent.push(cluster.write_op(i)?);
        let deadline = sent[i] + SAMPLE_TIMEOUT;
        loop {
            let Some(line) = cluster.next_line(deadline)? else {
                failures_in_a_row += 1;
                if timed {
                    stats.failures += 1;
                }
                eprintln!("propagation: op {i} not applied on B within {SAMPLE_TIMEOUT:?}");
                if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    return Err(format!(
                        "{failures_in_a_row} ops in a row not applied on B within \
                         {SAMPLE_TIMEOUT:?}; {}",
                        cluster.context()
                    ));
                }
                break;
            };
            match (line.who, event(&line.json)) {
                (Who::B, "change") => {
                    applied += count(&line.json, "events")?;
                    if applied > i {
                        failures_in_a_row = 0;
                        if timed {
                            stats.latencies.push(line.at - sent[i]);
                        }
                        break;
                    }
                }
                (Who::A, "written") => {
                    // Lines are numbered from 1 and the bench sends no blank lines.
                    let op = count(&line.json, "line")?.saturating_sub(1);
                    let events = count(&line.json, "events")?;
                    if events != 1 {
                        return Err(format!("A wrote {events} events for op {op}, not 1"));
                    }
                    if op >= WARMUP && op < sent.len() {
                        stats.local_writes.push(line.at - sent[op]);
                    }
                }
                (Who::A, "error") if line.json.get("line").is_some() => {
                    return Err(format!("A refused an op line: {}", line.json));
                }
                (_, "error" | "disconnect" | "refused") => {
                    eprintln!("propagation: {}: {}", line.who.name(), line.json);
                }
                _ => {}
            }
        }
        thread::sleep(Duration::from_millis(GAP_MIN_MS + rng.below(GAP_JITTER_MS)));
    }
    Ok(stats)
}

/// The `event` field of a lifecycle line ("" if none).
fn event(v: &Value) -> &str {
    v.get("event").and_then(Value::as_str).unwrap_or("")
}

/// A non-negative integer field of a lifecycle line.
fn count(v: &Value, field: &str) -> Result<usize, String> {
    v.get(field)
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("no integer {field:?} in {v}"))
}

/// The three processes of one run: who printed a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Hub,
    A,
    B,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Hub => "hub",
            Who::A => "A",
            Who::B => "B",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A line a process printed on stdout, with the time it was read; `None` at end of file.
#[derive(Debug)]
struct Msg {
    who: Who,
    at: Instant,
    line: Option<String>,
}

/// A JSON line a process printed.
#[derive(Debug)]
struct Line {
    who: Who,
    at: Instant,
    json: Value,
}

/// A hub and two live replicas on one transport, their stdout lines merged in one channel.
#[derive(Debug)]
struct Cluster {
    // Stopped in this order (A, B, hub) by `stop`, or by their `Drop` on an early return.
    a: Proc,
    b: Proc,
    hub: Proc,
    a_stdin: ChildStdin,
    lines: Receiver<Msg>,
    /// The last stdout lines of each process (indexed by `Who::index`), for errors.
    tails: [VecDeque<String>; 3],
}

impl Cluster {
    /// Creates the three replicas, starts the hub, then A and B, and waits until both
    /// caught up with the hub (`eose`).
    fn start(bin: &Path, transport: Transport, dir: &TempDir) -> Result<Cluster, String> {
        let schema = dir.path.join("schema.cypher");
        std::fs::write(&schema, SCHEMA)
            .map_err(|e| format!("writing {}: {e}", schema.display()))?;
        let (hub_dir, a_dir, b_dir) =
            (dir.path.join("hub"), dir.path.join("a"), dir.path.join("b"));
        let cmd = |subcommand: &str, dir: &Path| {
            let mut c = Command::new(bin);
            c.arg(subcommand).arg(dir);
            c
        };
        run(cmd("init", &hub_dir).args(["--peer-id", "hub"]))?;
        run(cmd("schema", &hub_dir).arg(&schema))?;
        run(cmd("init", &a_dir).args(["--peer-id", "a"]))?;
        run(cmd("init", &b_dir).args(["--peer-id", "b"]))?;

        let (tx, lines) = mpsc::channel();
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut hub = Proc::spawn(
            Who::Hub,
            cmd("serve", &hub_dir).args(["--listen", &listen]),
            false,
            &tx,
        )?;
        let mut tails: [VecDeque<String>; 3] = Default::default();
        wait_for(
            &lines,
            &mut tails,
            &mut [&mut hub],
            "the hub to listen",
            |l| l.who == Who::Hub && event(&l.json) == "listening",
        )?;

        let url = (transport.url)(port);
        let sync = |dir: &Path| {
            let mut c = cmd("sync", dir);
            c.args(["--remote", &url, "--watch"]);
            c
        };
        let mut a = Proc::spawn(Who::A, sync(&a_dir).arg("--stdin"), true, &tx)?;
        let mut b = Proc::spawn(Who::B, &mut sync(&b_dir), false, &tx)?;
        let a_stdin = a
            .child
            .stdin
            .take()
            .expect("A was spawned with a piped stdin");
        let (mut a_ready, mut b_ready) = (false, false);
        wait_for(
            &lines,
            &mut tails,
            &mut [&mut hub, &mut a, &mut b],
            "A and B to catch up (eose)",
            |l| {
                if event(&l.json) == "eose" {
                    a_ready |= l.who == Who::A;
                    b_ready |= l.who == Who::B;
                }
                a_ready && b_ready
            },
        )?;
        Ok(Cluster {
            a,
            b,
            hub,
            a_stdin,
            lines,
            tails,
        })
    }

    /// Writes op `i` (a new `Item` node) to A's stdin; returns the time it was written.
    fn write_op(&mut self, i: usize) -> Result<Instant, String> {
        let op = json!({"op": "add_node", "table": TABLE, "props": {"id": i, "v": i}});
        let at = Instant::now();
        writeln!(self.a_stdin, "{op}")
            .and_then(|()| self.a_stdin.flush())
            .map_err(|e| {
                format!(
                    "writing op {i} to A's stdin: {e}; {}",
                    self.a.died(&self.tails)
                )
            })?;
        Ok(at)
    }

    /// The next JSON line any process printed, or `None` at `deadline`; an error if a
    /// process ended.
    fn next_line(&mut self, deadline: Instant) -> Result<Option<Line>, String> {
        next_line(
            &self.lines,
            &mut self.tails,
            &mut [&mut self.hub, &mut self.a, &mut self.b],
            deadline,
        )
    }

    /// What each process printed last, for an error message.
    fn context(&mut self) -> String {
        let tails = &self.tails;
        [&mut self.hub, &mut self.a, &mut self.b]
            .map(|p| p.describe(tails))
            .join("; ")
    }

    fn stop(&mut self) {
        self.a.stop();
        self.b.stop();
        self.hub.stop();
    }
}

/// Reads lines until `done` says so; an error (with what the processes printed) if a
/// process ends or START_TIMEOUT passes first.
fn wait_for(
    lines: &Receiver<Msg>,
    tails: &mut [VecDeque<String>; 3],
    procs: &mut [&mut Proc],
    what: &str,
    mut done: impl FnMut(&Line) -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while let Some(line) = next_line(lines, tails, procs, deadline)? {
        if done(&line) {
            return Ok(());
        }
    }
    let context: Vec<String> = procs.iter_mut().map(|p| p.describe(tails)).collect();
    Err(format!(
        "timed out after {START_TIMEOUT:?} waiting for {what}; {}",
        context.join("; ")
    ))
}

/// The next JSON line from `lines` (other lines are only kept in `tails`), `None` at
/// `deadline`, an error if one of `procs` ended.
fn next_line(
    lines: &Receiver<Msg>,
    tails: &mut [VecDeque<String>; 3],
    procs: &mut [&mut Proc],
    deadline: Instant,
) -> Result<Option<Line>, String> {
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let msg = match lines.recv_timeout(wait) {
            Ok(msg) => msg,
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                return Err("every process closed its stdout".into())
            }
        };
        let Some(text) = msg.line else {
            let ended = procs.iter_mut().find(|p| p.who == msg.who);
            return Err(match ended {
                Some(p) => p.died(tails),
                None => format!("{} closed its stdout", msg.who.name()),
            });
        };
        push_tail(&mut tails[msg.who.index()], text.clone());
        if let Ok(json) = serde_json::from_str::<Value>(&text) {
            return Ok(Some(Line {
                who: msg.who,
                at: msg.at,
                json,
            }));
        }
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

/// Runs a short `kuzu-sync` command to completion; an error with its stderr if it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// A port free on 127.0.0.1 a moment ago (the hub binds it right after).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port on 127.0.0.1: {e}"))
}

/// A long-running `kuzu-sync` process: its stdout lines go to the cluster's channel, the
/// tail of its stderr is kept for errors. Stopped (SIGTERM, then kill) when dropped.
#[derive(Debug)]
struct Proc {
    who: Who,
    child: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd`, with a piped stdin if `stdin` (else none).
    fn spawn(
        who: Who,
        cmd: &mut Command,
        stdin: bool,
        lines: &Sender<Msg>,
    ) -> Result<Proc, String> {
        let mut child = cmd
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {} ({cmd:?}): {e}", who.name()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = lines.clone();
        thread::spawn(move || forward_lines(who, stdout, &lines));
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let keep = tail.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                push_tail(&mut keep.lock().unwrap_or_else(|e| e.into_inner()), line);
            }
        });
        Ok(Proc {
            who,
            child,
            stderr: tail,
            exited: None,
        })
    }

    /// Why the process ended (waiting a moment for its exit status), with the last lines
    /// it printed.
    fn died(&mut self, tails: &[VecDeque<String>; 3]) -> String {
        let end = Instant::now() + Duration::from_secs(2);
        while self.exit_status().is_none() && Instant::now() < end {
            thread::sleep(Duration::from_millis(20));
        }
        format!(
            "{} ended unexpectedly {}",
            self.who.name(),
            self.output(tails)
        )
    }

    /// Its state, for an error message: `A (running); stdout tail: …; stderr tail: …`.
    fn describe(&mut self, tails: &[VecDeque<String>; 3]) -> String {
        format!("{} {}", self.who.name(), self.output(tails))
    }

    /// `(exit status or running); stdout tail: [last lines]; stderr tail: [last lines]`.
    fn output(&mut self, tails: &[VecDeque<String>; 3]) -> String {
        let status = match self.exit_status() {
            Some(s) => s.to_string(),
            None => "running".into(),
        };
        let stdout: Vec<&str> = tails[self.who.index()].iter().map(String::as_str).collect();
        // Give the stderr reader a moment to catch up with a process that just ended.
        thread::sleep(Duration::from_millis(50));
        let stderr: Vec<String> = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        format!(
            "({status}); stdout tail: [{}]; stderr tail: [{}]",
            stdout.join(" | "),
            stderr.join(" | ")
        )
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// SIGTERM (through `kill`, std has no signals), up to STOP_GRACE to exit, then kill.
    fn stop(&mut self) {
        if self.exit_status().is_some() {
            return;
        }
        let pid = self.child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let end = Instant::now() + if termed { STOP_GRACE } else { Duration::ZERO };
        while Instant::now() < end {
            if self.exit_status().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "propagation: {} did not exit on SIGTERM; killing it",
            self.who.name()
        );
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends each stdout line of a process, timestamped as it is read, then `None` at EOF.
fn forward_lines(who: Who, stdout: impl Read, lines: &Sender<Msg>) {
    for line in BufReader::new(stdout).lines() {
        let at = Instant::now();
        let Ok(line) = line else { break };
        if lines
            .send(Msg {
                who,
                at,
                line: Some(line),
            })
            .is_err()
        {
            return;
        }
    }
    let _ = lines.send(Msg {
        who,
        at: Instant::now(),
        line: None,
    });
}

/// A fresh directory under the system's temporary directory, removed when dropped.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(tag: &str) -> Result<TempDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "kuzu-sync-propagation-{}-{nanos}-{tag}",
            std::process::id()
        ));
        std::fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// xorshift64*: enough randomness for jitter, without a crate.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng((nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    /// Uniform enough in [0, n) for small n.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The nearest-rank percentile `p` (0-100] of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(ms(sorted[rank.clamp(1, sorted.len()) - 1]))
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// p50, p99 and max of `latencies`, in milliseconds.
fn summary(latencies: &[Duration]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    (
        percentile_ms(&sorted, 50.0),
        percentile_ms(&sorted, 99.0),
        sorted.last().copied().map(ms),
    )
}

fn markdown(rows: &[Row]) -> String {
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut out = String::from(
        "| transport | binary | samples | p50 ms | p99 ms | max ms | failures |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let line = match &r.outcome {
            Ok(s) => {
                let (p50, p99, max) = summary(&s.latencies);
                format!(
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    r.transport,
                    r.binary.label,
                    s.latencies.len(),
                    cell(p50),
                    cell(p99),
                    cell(max),
                    s.failures
                )
            }
            Err(e) => {
                let mut short: String = e.chars().take(TABLE_ERROR_CHARS).collect();
                if short.len() < e.len() {
                    short.push('…');
                }
                format!(
                    "| {} | {} | - | - | - | - | run failed: {} |",
                    r.transport,
                    r.binary.label,
                    short.replace('|', "/").replace('\n', " ")
                )
            }
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn results_json(rows: &[Row], samples: usize) -> Value {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = json!({
                "transport": r.transport,
                "binary": r.binary.label,
                "path": r.binary.path,
            });
            match &r.outcome {
                Ok(s) => {
                    let (p50, p99, max) = summary(&s.latencies);
                    let (write_p50, _, _) = summary(&s.local_writes);
                    v["samples"] = json!(s.latencies.len());
                    v["p50_ms"] = json!(p50);
                    v["p99_ms"] = json!(p99);
                    v["max_ms"] = json!(max);
                    v["failures"] = json!(s.failures);
                    v["a_local_write_p50_ms"] = json!(write_p50);
                }
                Err(e) => v["error"] = json!(e),
            }
            v
        })
        .collect();
    json!({
        "bench": "propagation",
        "measure": "op line written to A's stdin -> B's change line read, through a hub",
        "warmup": WARMUP,
        "samples_requested": samples,
        "sample_timeout_ms": SAMPLE_TIMEOUT.as_millis() as u64,
        "rows": rows,
    })
}
