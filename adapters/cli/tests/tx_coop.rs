//! Cooperative termination between real processes: participants in doubt whose
//! coordinator is gone for good learn the decision from the other participants
//! (ARCHITECTURE.md, "Cooperative termination between processes").
//!
//! - By asking: the coordinator is SIGKILLed after two participants voted yes and before
//!   the third, down then, got its prepare. Once the deadline has passed and the third
//!   is back, the two dial it (URLs from the prepare, tokens from
//!   `--tx-auth-token-file`), hear that it never prepared the transaction, and abort.
//! - By evidence: with the coordinator lost, an operator commits on one participant
//!   (`tx-resolve`), which then syncs with another; that one finds the commit marker in
//!   what it received and commits too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

mod common;
use common::{json as parse, ks, ks_stdin, lines, ok, p, Listening, BIN};

const SCHEMA: &str =
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE Mark(id STRING, PRIMARY KEY (id))"}"#;

/// Replicas `names` under `root`, one schema (written on the first, carried to the others
/// by a bundle), and one credentials file every hub uses: a token per peer, bound to it.
fn replicas(root: &Path, names: &[&str]) -> (Vec<PathBuf>, PathBuf) {
    let dirs: Vec<PathBuf> = names.iter().map(|n| root.join(n)).collect();
    for (n, d) in names.iter().zip(&dirs) {
        ok(ks(&["init", p(d), "--peer-id", n]));
    }
    ok(ks_stdin(&["write", p(&dirs[0])], SCHEMA));
    let bundle = root.join("schema.bundle");
    ok(ks(&["export", p(&dirs[0]), "--out", p(&bundle)]));
    for d in &dirs[1..] {
        ok(ks(&["import", p(d), p(&bundle)]));
    }
    let mut creds =
        vec![json!({"token": "coordinator-secret", "peers": ["coordinator"], "role": "replica"})];
    for n in names {
        creds.push(json!({"token": format!("{n}-secret"), "peers": [n], "role": "replica"}));
        std::fs::write(root.join(format!("{n}.token")), format!("{n}-secret\n")).unwrap();
    }
    let file = root.join("credentials.json");
    std::fs::write(&file, json!({ "credentials": creds }).to_string()).unwrap();
    (dirs, file)
}

/// `serve` on `listen` (a port just freed may take a moment to be bound again).
fn serve(dir: &Path, name: &str, listen: &str, creds: &Path, root: &Path) -> Listening {
    let token = root.join(format!("{name}.token"));
    let args = [
        "serve",
        p(dir),
        "--listen",
        listen,
        "--credentials",
        p(creds),
        "--tx-auth-token-file",
        p(&token),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match std::panic::catch_unwind(|| Listening::start(&args)) {
            Ok(proc) => return proc,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// Starts `kuzu-sync tx` on a transaction adding `Mark` `{tx}-{peer}` on each of
/// `parts` (peer, hub address), votes due within `timeout_ms`.
fn start_tx(root: &Path, coordinator: &str, parts: &[(&str, &str)], timeout_ms: u64) -> Child {
    let mut participants = serde_json::Map::new();
    for (peer, addr) in parts {
        participants.insert(
            peer.to_string(),
            json!({"url": format!("tcp://{addr}"), "token": "coordinator-secret", "ops": [
                {"op": "add_node", "table": "Mark", "props": {"id": format!("t-{peer}")}},
            ]}),
        );
    }
    let f = root.join("tx.json");
    std::fs::write(
        &f,
        json!({"participants": participants, "timeout_ms": timeout_ms}).to_string(),
    )
    .unwrap();
    Command::new(BIN)
        .args([
            "tx",
            "--coordinator",
            &format!("http://{coordinator}"),
            p(&f),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn prepared(dir: &Path) -> Vec<Json> {
    parse(&ok(ks(&["tx-status", p(dir)])))["prepared"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits up to `secs` for `cond`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn marks(dir: &Path) -> Vec<String> {
    lines(&ok(ks(&[
        "query",
        p(dir),
        "MATCH (m:Mark) RETURN m.id AS id ORDER BY id",
    ])))
    .into_iter()
    .map(|j| j["id"].as_str().unwrap().to_string())
    .collect()
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Three replicas; `p1` and `p2` serving, `p3` down (its address kept); a transaction
/// over the three started through a coordinator, which prepares the two it reaches
/// (they vote yes) and is SIGKILLed, for good, before its deadline.
struct InDoubt {
    dirs: Vec<PathBuf>,
    creds: PathBuf,
    h1: Listening,
    h2: Listening,
    a3: String,
}

fn in_doubt(root: &Path) -> InDoubt {
    let (dirs, creds) = replicas(root, &["p1", "p2", "p3"]);
    let h1 = serve(&dirs[0], "p1", "127.0.0.1:0", &creds, root);
    let h2 = serve(&dirs[1], "p2", "127.0.0.1:0", &creds, root);
    let h3 = serve(&dirs[2], "p3", "127.0.0.1:0", &creds, root);
    let a3 = h3.addr.clone();
    drop(h3);
    let coord = Listening::start(&[
        "coordinator",
        p(&root.join("coord")),
        "--listen",
        "127.0.0.1:0",
    ]);
    let run = start_tx(
        root,
        &coord.addr,
        &[("p1", &h1.addr), ("p2", &h2.addr), ("p3", &a3)],
        3_000,
    );
    // The coordinator waits for p3's link (up to the vote timeout), then prepares the two
    // it reaches. Without p3's vote it cannot decide before the deadline.
    wait_for(30, "p1 and p2 prepared", || {
        prepared(&dirs[0]).len() == 1 && prepared(&dirs[1]).len() == 1
    });
    coord.kill();
    kill(run);
    InDoubt {
        dirs,
        creds,
        h1,
        h2,
        a3,
    }
}

#[test]
fn participants_in_doubt_dial_one_that_never_prepared_and_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let InDoubt {
        dirs,
        creds,
        h1,
        h2,
        a3,
    } = in_doubt(root);
    let tx = prepared(&dirs[0])[0].clone();
    assert_eq!(
        tx["addresses"],
        json!({"p1": format!("tcp://{}", h1.addr), "p2": format!("tcp://{}", h2.addr), "p3": format!("tcp://{a3}")}),
        "the prepare carried the participants' URLs"
    );
    // Past the deadline, with p3 still down, they stay in doubt: the only ones they can
    // ask are each other, in doubt too.
    let deadline = tx["deadline_ms"].as_u64().unwrap();
    wait_for(30, "the deadline", || {
        prepared(&dirs[0])[0]["in_doubt_for_ms"].as_u64().unwrap() > 1_000
    });
    assert_eq!(prepared(&dirs[0]).len(), 1, "p1 decided alone");
    assert_eq!(prepared(&dirs[1]).len(), 1, "p2 decided alone");
    // p3 comes back: it never prepared the transaction and it is past the deadline, so it
    // can never vote yes. Asked, it says abort, and both abort.
    let h3 = serve(&dirs[2], "p3", &a3, &creds, root);
    wait_for(30, "p1 and p2 abort", || {
        prepared(&dirs[0]).is_empty() && prepared(&dirs[1]).is_empty()
    });
    drop((h1, h2, h3));
    for d in &dirs {
        assert!(marks(d).is_empty(), "{}: {:?}", d.display(), marks(d));
        assert!(prepared(d).is_empty());
    }
    // p3 answered without writing anything: it has no record of the transaction, and a
    // prepare of it would be refused by its deadline (tested on the state machine).
    let st = parse(&ok(ks(&["tx-status", p(&dirs[2])])));
    assert_eq!(st, json!({"prepared": [], "resolved": []}));
    eprintln!(
        "aborted {} by cooperative termination, {} ms after its deadline",
        tx["tx"],
        now_ms().saturating_sub(deadline)
    );
}

#[test]
fn a_participant_in_doubt_commits_on_a_commit_marker_it_received_by_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // p3 stays down for good.
    let InDoubt { dirs, h1, h2, .. } = in_doubt(root);
    let tx = prepared(&dirs[0])[0]["tx"].as_str().unwrap().to_string();
    // An operator commits on p1 (stopped for it), then p1's history reaches p2 by a
    // one-shot sync, with p1 still down (so p2 cannot ask it).
    drop(h1);
    ok(ks(&[
        "tx-resolve",
        p(&dirs[0]),
        &tx,
        "--commit",
        "--reason",
        "coordinator lost",
    ]));
    assert_eq!(marks(&dirs[0]), ["t-p1"]);
    let token = root.join("p1.token");
    let out = ok(ks(&[
        "sync",
        p(&dirs[0]),
        "--remote",
        &format!("tcp://{}", h2.addr),
        "--auth-token-file",
        p(&token),
    ]));
    let summary = lines(&out).pop().unwrap();
    assert!(summary["sent"].as_u64().unwrap() >= 2, "{out}");
    // p2 holds p1's part (its own is not in), finds the marker and commits its part: its
    // own part shows, and p1's stays held, as it does on every replica, until the part
    // of p3 (named by the transaction, never prepared: the operator's commit was a
    // heuristic one) exists.
    wait_for(30, "p2 commits", || prepared(&dirs[1]).is_empty());
    drop(h2);
    assert_eq!(marks(&dirs[1]), ["t-p2"]);
    let status = parse(&ok(ks(&["status", p(&dirs[1])])));
    assert_eq!(status["transactions"]["held_events"], 2, "{status}");
    assert!(marks(&dirs[2]).is_empty());
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
