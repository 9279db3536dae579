//! Two-phase commit as a user runs it: three `serve` participants, a `coordinator`
//! process, `kuzu-sync tx FILE.json` and `kuzu-sync tx-status`. SPEC §3's two examples:
//! one participant's record log fails (`disk_full`, injected) and the decision is abort,
//! rolled back everywhere; then all vote commit and the ops are in each replica's Kuzu.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

mod common;
use common::{fails, ks, ks_stdin, lines, ok, p, BIN};

/// A long-running `kuzu-sync` process, its stdout lines on a channel; SIGTERM on drop.
struct Proc {
    child: Child,
    lines: Receiver<Json>,
    addr: String,
    first: Json,
}

impl Proc {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
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
        let deadline = Instant::now() + Duration::from_secs(120);
        let first = loop {
            let j = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the process never said it was listening");
            if j["event"] == "listening" {
                break j;
            }
        };
        let addr = first["address"].as_str().unwrap().to_string();
        Proc {
            child,
            lines,
            addr,
            first,
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        while self.lines.try_recv().is_ok() {}
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SCHEMA: &str = r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(id STRING, name STRING, PRIMARY KEY (id))"}
{"op":"ddl","cypher":"CREATE REL TABLE Follows(FROM User TO User)"}
{"op":"add_node","table":"User","props":{"id":"user_1","name":"Ann"}}
{"op":"add_node","table":"User","props":{"id":"user_2","name":"Bo"}}
"#;

fn replica(dir: &Path, name: &str) -> std::path::PathBuf {
    let r = dir.join(name);
    ok(ks(&["init", p(&r), "--peer-id", name]));
    ok(ks_stdin(&["write", p(&r)], SCHEMA));
    r
}

fn query(r: &Path, cypher: &str) -> Vec<Json> {
    lines(&ok(ks(&["query", p(r), cypher])))
}

fn tx_file(dir: &Path, name: &str, parts: &[(&str, &Proc, Json)]) -> std::path::PathBuf {
    let mut participants = serde_json::Map::new();
    for (peer, hub, op) in parts {
        participants.insert(
            peer.to_string(),
            json!({"url": format!("tcp://{}", hub.addr), "ops": [op]}),
        );
    }
    let f = dir.join(name);
    std::fs::write(
        &f,
        json!({"participants": participants, "timeout_ms": 5000}).to_string(),
    )
    .unwrap();
    f
}

#[test]
fn spec_examples_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rs: Vec<_> = ["p1", "p2", "p3"].iter().map(|n| replica(dir, n)).collect();
    let token = dir.join("coord.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let hubs: Vec<Proc> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            // p2's record log fails once: its first prepare cannot be recorded.
            let env: &[(&str, &str)] = if i == 1 {
                &[("KUZU_SYNC_INJECT_TX_LOG_FAILURES", "1")]
            } else {
                &[]
            };
            Proc::start(&["serve", p(r), "--listen", "127.0.0.1:0"], env)
        })
        .collect();
    let cdir = dir.join("coord");
    let coord = Proc::start(
        &[
            "coordinator",
            p(&cdir),
            "--listen",
            "127.0.0.1:0",
            "--auth-token-file",
            p(&token),
        ],
        &[],
    );
    assert_eq!(coord.first["coordinator"], "coordinator");
    let epoch = coord.first["epoch"].as_u64().unwrap();
    let url = format!("http://{}", coord.addr);

    // SPEC §3, second example: p2 votes abort (disk_full); everyone rolls back.
    let f = tx_file(
        dir,
        "abort.json",
        &[
            (
                "p1",
                &hubs[0],
                json!({"op":"add_node","table":"User","props":{"id":"user_9"}}),
            ),
            (
                "p2",
                &hubs[1],
                json!({"op":"add_node","table":"User","props":{"id":"user_8"}}),
            ),
            (
                "p3",
                &hubs[2],
                json!({"op":"delete_node","table":"User","key":"user_1"}),
            ),
        ],
    );
    let out = ks(&[
        "tx",
        "--coordinator",
        &url,
        p(&f),
        "--auth-token-file",
        p(&token),
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let answer = lines(&String::from_utf8(out.stdout).unwrap()).remove(0);
    assert_eq!(answer["decision"], "abort", "{answer}");
    for peer in ["p1", "p2", "p3"] {
        assert_eq!(answer["participants"][peer], "rolled_back", "{answer}");
    }
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains("p2: storage") && reason.contains("disk_full"),
        "{reason}"
    );

    // SPEC §3, first example: all vote commit.
    let f = tx_file(
        dir,
        "commit.json",
        &[
            (
                "p1",
                &hubs[0],
                json!({"op":"add_edge","table":"Follows","from":"user_1","to":"user_2"}),
            ),
            (
                "p2",
                &hubs[1],
                json!({"op":"add_node","table":"User","props":{"id":"user_3","name":"Cy"}}),
            ),
            (
                "p3",
                &hubs[2],
                json!({"op":"update","table":"User","key":"user_1","prop":"name","value":"Annie"}),
            ),
        ],
    );
    let answer = lines(&ok(ks(&[
        "tx",
        "--coordinator",
        &url,
        p(&f),
        "--auth-token-file",
        p(&token),
    ])))
    .remove(0);
    assert_eq!(answer["decision"], "commit", "{answer}");
    for peer in ["p1", "p2", "p3"] {
        assert_eq!(answer["participants"][peer], "committed", "{answer}");
    }
    assert!(answer["tx"]
        .as_str()
        .unwrap()
        .starts_with(&format!("coordinator/{epoch}/")));

    // Bad input: no token; a bad file; a participant that is not who its url serves.
    let err = fails(ks(&["tx", "--coordinator", &url, p(&f)]));
    assert!(err.contains("401") && err.contains("auth"), "{err}");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"participants": {"p1": {"url": "nope", "ops": []}}}"#,
    )
    .unwrap();
    let err = fails(ks(&["tx", "--coordinator", &url, p(&bad)]));
    assert!(err.contains("bad url") && err.contains("nope"), "{err}");
    let f = tx_file(
        dir,
        "wrong.json",
        &[(
            "p9",
            &hubs[0],
            json!({"op":"add_node","table":"User","props":{"id":"user_7"}}),
        )],
    );
    std::fs::write(
        &f,
        std::fs::read_to_string(&f).unwrap().replace("5000", "1000"),
    )
    .unwrap();
    let out = ks(&[
        "tx",
        "--coordinator",
        &url,
        p(&f),
        "--auth-token-file",
        p(&token),
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    // Nothing is left prepared anywhere.
    for r in &rs {
        let s = lines(&ok(ks(&["tx-status", p(r)]))).remove(0);
        assert_eq!(s["prepared"], json!([]), "{s}");
    }

    // A restarted coordinator takes the next epoch.
    coord.kill();
    let coord = Proc::start(&["coordinator", p(&cdir), "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(coord.first["epoch"].as_u64(), Some(epoch + 1));
    coord.stop();
    for h in hubs {
        h.stop();
    }

    // The committed transaction is in each replica's Kuzu; the aborted one nowhere.
    assert_eq!(
        query(
            &rs[0],
            "MATCH (a:User)-[:Follows]->(b:User) RETURN a.id AS a, b.id AS b"
        ),
        vec![json!({"a": "user_1", "b": "user_2"})]
    );
    assert_eq!(
        query(&rs[1], "MATCH (u:User) RETURN u.id AS id ORDER BY id"),
        vec![
            json!({"id": "user_1"}),
            json!({"id": "user_2"}),
            json!({"id": "user_3"})
        ]
    );
    assert_eq!(
        query(
            &rs[2],
            "MATCH (u:User) WHERE u.id = 'user_1' RETURN u.name AS name"
        ),
        vec![json!({"name": "Annie"})]
    );
    assert_eq!(
        query(&rs[0], "MATCH (u:User) RETURN count(*) AS n"),
        vec![json!({"n": 2})]
    );
}

fn signal(proc: &Proc, sig: &str) {
    let pid = proc.child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// `tx-status DIR`, polled until `done` holds of it (or a minute has passed).
fn status_until(r: &Path, what: &str, done: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = lines(&ok(ks(&["tx-status", p(r)]))).remove(0);
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "never {what}: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `kuzu-sync tx FILE` in the background: p1 adds `id1`, p2 adds `id2`.
fn tx_in_background(dir: &Path, url: &str, hubs: [&Proc; 2], ids: [&str; 2]) -> Child {
    let f = dir.join(format!("{}.json", ids[0]));
    let part = |hub: &Proc, id: &str| {
        json!({"url": format!("tcp://{}", hub.addr),
               "ops": [{"op":"add_node","table":"User","props":{"id": id}}]})
    };
    let body = json!({"participants": {"p1": part(hubs[0], ids[0]), "p2": part(hubs[1], ids[1])},
                      "timeout_ms": 120_000});
    std::fs::write(&f, body.to_string()).unwrap();
    Command::new(BIN)
        .args(["tx", "--coordinator", url, p(&f)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn has_user(r: &Path, id: &str) -> bool {
    !query(
        r,
        &format!("MATCH (u:User) WHERE u.id = '{id}' RETURN u.id AS id"),
    )
    .is_empty()
}

/// A participant left in doubt (it voted yes, then died; its coordinator decided commit
/// meanwhile) is decided by the operator with `tx-resolve`, against the coordinator: the
/// operator's abort stands, and once the participant is back the coordinator's commit is
/// acknowledged and shown as a mismatch. Then an operator commit with the coordinator
/// lost applies the ops. `tx-resolve` beside a running `serve` fails, changing nothing.
#[test]
fn an_operator_resolves_a_participant_left_in_doubt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (r1, r2) = (replica(dir, "p1"), replica(dir, "p2"));
    let h1 = Proc::start(&["serve", p(&r1), "--listen", "127.0.0.1:0"], &[]);
    let h2 = Proc::start(&["serve", p(&r2), "--listen", "127.0.0.1:0"], &[]);
    let cdir = dir.join("coord");
    let coord = Proc::start(&["coordinator", p(&cdir), "--listen", "127.0.0.1:0"], &[]);
    let url = format!("http://{}", coord.addr);
    // A first transaction links the coordinator to both.
    let f = tx_file(
        dir,
        "first.json",
        &[
            (
                "p1",
                &h1,
                json!({"op":"add_edge","table":"Follows","from":"user_1","to":"user_2"}),
            ),
            (
                "p2",
                &h2,
                json!({"op":"add_node","table":"User","props":{"id":"user_3"}}),
            ),
        ],
    );
    let answer = lines(&ok(ks(&["tx", "--coordinator", &url, p(&f)]))).remove(0);
    assert_eq!(answer["decision"], "commit", "{answer}");

    // p2 is stopped, so its vote waits; p1 prepares and votes yes, then dies.
    signal(&h2, "-STOP");
    let client = tx_in_background(dir, &url, [&h1, &h2], ["user_5", "user_6"]);
    let s = status_until(&r1, "prepared", |s| {
        s["prepared"].as_array().unwrap().len() == 1
    });
    let tx = s["prepared"][0]["tx"].as_str().unwrap().to_string();
    assert!(tx.starts_with("coordinator/"), "{s}");
    let p1_addr = h1.addr.clone();
    h1.kill();
    // p2 votes yes: the coordinator decides commit, and p2 commits.
    signal(&h2, "-CONT");
    status_until(&r2, "committed on p2", |s| s["prepared"] == json!([]));

    // Bad commands change nothing.
    let err = fails(ks(&["tx-resolve", p(&r1), &tx]));
    assert!(err.contains("--commit|--abort"), "{err}");
    let err = fails(ks(&["tx-resolve", p(&r1), &tx, "--commit", "--abort"]));
    assert!(err.contains("cannot be used with"), "{err}");
    let err = fails(ks(&["tx-resolve", p(&r1), "p1-tx", "--commit"]));
    assert!(err.contains("\"p1-tx\""), "{err}");
    let err = fails(ks(&["tx-resolve", p(&r1), "coordinator/99/1", "--abort"]));
    assert!(
        err.contains("coordinator/99/1") && err.contains("not known"),
        "{err}"
    );
    let s = lines(&ok(ks(&["tx-status", p(&r1)]))).remove(0);
    assert_eq!(s["prepared"][0]["tx"], tx.as_str(), "{s}");
    assert_eq!(s["resolved"], json!([]), "{s}");

    // The operator guesses abort.
    let out = lines(&ok(ks(&[
        "tx-resolve",
        p(&r1),
        &tx,
        "--abort",
        "--reason",
        "coordinator unreachable",
    ])))
    .remove(0);
    assert_eq!(out["tx"], tx.as_str(), "{out}");
    assert_eq!(out["decision"], "abort", "{out}");
    assert_eq!(out["by"], "operator", "{out}");
    assert_eq!(out["reason"], "coordinator unreachable", "{out}");
    assert_eq!(out["state"], "aborted", "{out}");
    assert!(out["at_ms"].as_u64().is_some(), "{out}");
    assert!(out["time"].as_str().unwrap().ends_with('Z'), "{out}");
    let err = fails(ks(&["tx-resolve", p(&r1), &tx, "--commit"]));
    assert!(err.contains("already aborted (by an operator)"), "{err}");
    let s = lines(&ok(ks(&["tx-status", p(&r1)]))).remove(0);
    assert_eq!(s["prepared"], json!([]), "{s}");
    let resolved = &s["resolved"][0];
    assert_eq!(resolved["tx"], tx.as_str(), "{s}");
    assert_eq!(resolved["decision"], "abort", "{s}");
    assert_eq!(resolved["reason"], "coordinator unreachable", "{s}");
    assert_eq!(resolved["at_ms"], out["at_ms"], "{s}");
    assert_eq!(resolved["mismatch"], Json::Null, "{s}");
    assert!(!has_user(&r1, "user_5"));

    // p1 is back (where the coordinator knows it); tx-resolve beside it fails cleanly.
    let h1 = Proc::start(&["serve", p(&r1), "--listen", &p1_addr], &[]);
    let err = fails(ks(&["tx-resolve", p(&r1), &tx, "--commit"]));
    assert!(err.contains("in use") && err.contains("serve"), "{err}");
    // The coordinator's commit arrives: acknowledged, recorded as a mismatch, not applied.
    let s = status_until(&r1, "shown a mismatch", |s| {
        !s["resolved"][0]["mismatch"].is_null()
    });
    let resolved = &s["resolved"][0];
    assert_eq!(resolved["state"], "aborted", "{s}");
    assert_eq!(resolved["mismatch"]["decision"], "commit", "{s}");
    assert_eq!(resolved["mismatch"]["from"], "coordinator", "{s}");
    let answer =
        lines(&String::from_utf8(client.wait_with_output().unwrap().stdout).unwrap()).remove(0);
    assert_eq!(answer["decision"], "commit", "{answer}");
    assert_eq!(
        answer["participants"]["p1"], "committed",
        "acknowledged: {answer}"
    );

    // Now the coordinator is lost for good after p1 voted yes: the operator commits.
    signal(&h2, "-STOP");
    let mut client = tx_in_background(dir, &url, [&h1, &h2], ["user_7", "user_8"]);
    let s = status_until(&r1, "prepared", |s| {
        s["prepared"].as_array().unwrap().len() == 1
    });
    let tx2 = s["prepared"][0]["tx"].as_str().unwrap().to_string();
    coord.kill();
    let _ = client.kill();
    let _ = client.wait();
    signal(&h2, "-CONT");
    h1.stop();
    let out = lines(&ok(ks(&["tx-resolve", p(&r1), &tx2, "--commit"]))).remove(0);
    assert_eq!(out["decision"], "commit", "{out}");
    assert_eq!(out["state"], "committed", "{out}");
    assert_eq!(out["reason"], Json::Null, "{out}");
    let s = lines(&ok(ks(&["tx-status", p(&r1)]))).remove(0);
    assert_eq!(s["prepared"], json!([]), "{s}");
    let resolved = s["resolved"].as_array().unwrap();
    assert_eq!(resolved.len(), 2, "{s}");
    let second = resolved.iter().find(|r| r["tx"] == tx2.as_str()).unwrap();
    assert_eq!(second["decision"], "commit", "{s}");
    assert_eq!(second["state"], "committed", "{s}");
    // p2 voted yes to a coordinator that is gone: still in doubt, as the operator's
    // commit on p1 cannot tell it anything.
    status_until(&r2, "in doubt on p2", |s| {
        s["prepared"][0]["tx"] == tx2.as_str()
    });
    h2.stop();

    assert!(has_user(&r1, "user_7"), "the operator's commit applied");
    assert!(!has_user(&r1, "user_5"), "the operator's abort stands");
    assert!(has_user(&r2, "user_6"), "the coordinator's commit on p2");
    assert!(!has_user(&r2, "user_8"));
}
