//! A participant that does not serve: `kuzu-sync sync DIR --watch` connected to the
//! coordinator's participants address takes part in a transaction beside a `serve`
//! participant the coordinator dials. Its token is bound to its peer id; a token bound to
//! another peer, or none, gets it refused.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

mod common;
use common::{ks, ks_stdin, lines, ok, p, user_ids as users, Listening, BIN};

const SCHEMA: &str =
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(id STRING, PRIMARY KEY (id))"}"#;

/// `sync --watch`, its stdout lines on a channel; SIGTERM on drop.
struct Watching {
    child: Child,
    lines: Receiver<Json>,
}

impl Watching {
    fn start(dir: &Path, remote: &str, token: &Path) -> Watching {
        let mut child = Command::new(BIN)
            .args(["sync", p(dir), "--watch", "--remote", remote])
            .args(["--auth-token-file", p(token)])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(j) = serde_json::from_str::<Json>(&line) {
                    let _ = tx.send(j);
                }
            }
        });
        Watching { child, lines }
    }

    /// The first line whose `event` is one of `events`.
    fn wait_for(&self, events: &[&str]) -> Json {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let j = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no {events:?}"));
            if events.iter().any(|e| j["event"] == *e) {
                return j;
            }
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[test]
fn a_watching_replica_takes_part_through_its_own_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (p1, p2) = (dir.join("p1"), dir.join("p2"));
    ok(ks(&["init", p(&p1), "--peer-id", "p1"]));
    ok(ks(&["init", p(&p2), "--peer-id", "p2"]));
    for r in [&p1, &p2] {
        ok(ks_stdin(&["write", p(r)], SCHEMA));
    }
    let creds = dir.join("participants.json");
    std::fs::write(
        &creds,
        json!({"credentials": [
            {"token": "p2-secret", "peers": ["p2"], "role": "replica"},
            {"token": "p3-secret", "peers": ["p3"], "role": "replica"},
        ]})
        .to_string(),
    )
    .unwrap();
    let (tok2, tok3) = (dir.join("p2.token"), dir.join("p3.token"));
    std::fs::write(&tok2, "p2-secret\n").unwrap();
    std::fs::write(&tok3, "p3-secret\n").unwrap();

    let hub = Listening::start(&["serve", p(&p1), "--listen", "127.0.0.1:0"]);
    let coord = Listening::start(&[
        "coordinator",
        p(&dir.join("coord")),
        "--listen",
        "127.0.0.1:0",
        "--participants-listen",
        "127.0.0.1:0",
        "--credentials",
        p(&creds),
    ]);
    let participants = coord
        .before
        .iter()
        .find(|j| j["event"] == "listening_for_participants")
        .expect("the participants address")["address"]
        .as_str()
        .unwrap()
        .to_string();
    let remote = format!("tcp://{participants}");

    // p2's token is bound to p2: p2 connects; with p3's token, p2 is refused.
    let wrong = Watching::start(&p2, &remote, &tok3);
    let refused = wrong.wait_for(&["refused", "error", "connect"]);
    assert_ne!(refused["event"], "connect", "{refused}");
    drop(wrong);
    let watching = Watching::start(&p2, &remote, &tok2);
    let connected = watching.wait_for(&["connect"]);
    assert_eq!(connected["peer"], "coordinator", "{connected}");

    let f = dir.join("tx.json");
    std::fs::write(
        &f,
        json!({"participants": {
            "p1": {"url": format!("tcp://{}", hub.addr), "ops": [{"op":"add_node","table":"User","props":{"id":"from_p1"}}]},
            "p2": {"ops": [{"op":"add_node","table":"User","props":{"id":"from_p2"}}]},
        }})
        .to_string(),
    )
    .unwrap();
    let answer = lines(&ok(ks(&[
        "tx",
        "--coordinator",
        &format!("http://{}", coord.addr),
        p(&f),
    ])))
    .remove(0);
    assert_eq!(answer["decision"], "commit", "{answer}");
    assert_eq!(answer["participants"]["p1"], "committed", "{answer}");
    assert_eq!(answer["participants"]["p2"], "committed", "{answer}");
    drop(watching);
    drop(hub);
    assert_eq!(users(&p2), ["from_p2"]);
    assert_eq!(users(&p1), ["from_p1"]);
    // The coordinator's hub exchanged no events with p2: its log holds only its own.
    let status = common::json(&ok(ks(&["status", p(&p2)])));
    assert_eq!(
        status["version_vector"].as_object().unwrap().len(),
        1,
        "{status}"
    );
}
