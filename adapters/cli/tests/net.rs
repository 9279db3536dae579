//! Live sync between real processes over loopback: `kuzu-sync serve` and `kuzu-sync sync`,
//! each replica a real Kuzu database and SQLite log in its own process.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

mod common;
use common::{fails, json as parse, ks, ks_stdin, lines, ok, p, Rng, BIN};

const SCHEMA: &str = r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(name STRING, visits INT64, status STRING, PRIMARY KEY (name))"}
{"op":"ddl","cypher":"CREATE REL TABLE Follows(FROM User TO User, since INT64)"}
{"op":"set_policy","table":"User","prop":"visits","policy":"counter"}
{"op":"set_policy","table":"User","prop":"status","policy":"online_wins"}"#;

/// The schema, then one `add_node` per name, each with `visits` set.
fn schema_with_users<S: AsRef<str>>(names: &[S], visits: i64) -> String {
    let mut s = SCHEMA.to_string();
    for n in names {
        let op =
            json!({"op":"add_node","table":"User","props":{"name":n.as_ref(),"visits":visits}});
        s.push('\n');
        s.push_str(&op.to_string());
    }
    s
}

fn init(dir: &Path, name: &str) -> PathBuf {
    let r = dir.join(name);
    ok(ks(&["init", p(&r), "--peer-id", name]));
    r
}

/// A running `kuzu-sync` process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: Receiver<Json>,
    stdin: Option<ChildStdin>,
    /// Op lines sent on stdin, and how many the process has confirmed writing.
    sent: usize,
    confirmed: usize,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Ok(j) = serde_json::from_str::<Json>(&line) {
                    if tx.send(j).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            lines: rx,
            stdin,
            sent: 0,
            confirmed: 0,
        }
    }

    /// Waits for a line whose "event" is `event`, returning it.
    fn wait_for(&self, event: &str, secs: u64) -> Json {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(j) if j["event"] == event => return j,
                Ok(_) => {}
                Err(_) => panic!("no {event:?} line within {secs} s"),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        self.sent += 1;
    }

    /// Waits until every op line sent has been written to the replica's log.
    fn drain_written(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.confirmed < self.sent {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(j) if j["event"] == "written" => self.confirmed += 1,
                Ok(j) if j["event"] == "error" && j.get("line").is_some() => {
                    panic!("an op failed: {j}")
                }
                Ok(_) => {}
                Err(_) => panic!("only {} of {} ops written", self.confirmed, self.sent),
            }
        }
    }

    /// SIGTERM, then waits for a clean exit.
    fn terminate(mut self) {
        self.stdin.take();
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exited with {status:?} after SIGTERM");
    }

    /// SIGKILL: a crash.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn hub(dir: &Path, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", p(dir), "--listen", listen];
    args.extend(extra);
    let proc = Proc::spawn(&args);
    let line = proc.wait_for("listening", 120);
    let addr = line["address"].as_str().unwrap().to_string();
    (proc, addr)
}

fn sync(r: &Path, url: &str) -> Vec<Json> {
    lines(&ok(ks(&["sync", p(r), "--remote", url])))
}

fn users(r: &Path) -> Vec<Json> {
    let out = ok(ks(&[
        "query",
        p(r),
        "MATCH (u:User) RETURN u.name AS name, u.visits AS visits, u.status AS status ORDER BY name",
    ]));
    lines(&out)
}

fn follows(r: &Path) -> Vec<Json> {
    let out = ok(ks(&[
        "query",
        p(r),
        "MATCH (a:User)-[f:Follows]->(b:User) RETURN a.name AS a, b.name AS b, f.since AS since ORDER BY a.name, b.name, f.since",
    ]));
    lines(&out)
}

fn status(r: &Path) -> Json {
    parse(&ok(ks(&["status", p(r)])))
}

/// One random op for replica `i`: adds, counter increments, updates and edges over a small
/// key space (so replicas collide). Returns the op and the increment it makes, if any.
fn random_op(rng: &mut Rng, i: usize, names: &[String]) -> (String, Option<(String, i64)>) {
    let name = &names[rng.below(names.len() as u64) as usize];
    match rng.below(4) {
        0 => (
            json!({"op":"update","table":"User","key":name,"prop":"status","value":format!("s{i}-{}", rng.below(5))})
                .to_string(),
            None,
        ),
        1 | 2 => {
            let d = rng.below(9) as i64 + 1;
            (
                json!({"op":"increment","table":"User","key":name,"prop":"visits","delta":d})
                    .to_string(),
                Some((name.clone(), d)),
            )
        }
        _ => {
            let other = &names[rng.below(names.len() as u64) as usize];
            (
                json!({"op":"add_edge","table":"Follows","from":name,"to":other,"props":{"since":2000 + rng.below(20)}})
                    .to_string(),
                None,
            )
        }
    }
}

/// The issue's multi-process test: a hub and three replicas in their own processes,
/// random writes while connected, one replica partitioned (killed, written offline,
/// restarted), a client killed mid-sync and the hub killed mid-sync and restarted.
/// At the end every replica and the hub hold the same graph and the same log, and every
/// counter increment is counted exactly once.
#[test]
fn three_replicas_and_a_hub_converge_through_partitions_and_crashes() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let reps: Vec<PathBuf> = (0..3).map(|i| init(tmp.path(), &format!("r{i}"))).collect();
    let names: Vec<String> = (0..6).map(|k| format!("u{k}")).collect();
    ok(ks_stdin(
        &["write", p(&reps[0])],
        &schema_with_users(&names, 0),
    ));

    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &[]);
    let url = format!("tcp://{addr}");
    let watch = |r: &Path| {
        let w = Proc::spawn(&["sync", p(r), "--remote", &url, "--watch", "--stdin"]);
        w.wait_for("eose", 120);
        w
    };
    // Everyone starts from the schema and the users (one-shot syncs), then goes live.
    for r in &reps {
        sync(r, &url);
    }
    let mut watchers: Vec<Option<Proc>> = reps.iter().map(|r| Some(watch(r))).collect();
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut expected: std::collections::BTreeMap<String, i64> = Default::default();
    let write = |w: &mut Proc,
                 i: usize,
                 rng: &mut Rng,
                 n: usize,
                 expected: &mut std::collections::BTreeMap<String, i64>| {
        for _ in 0..n {
            let (op, inc) = random_op(rng, i, &names);
            w.send(&op);
            if let Some((k, d)) = inc {
                *expected.entry(k).or_default() += d;
            }
        }
    };
    // Phase 1: everyone online, writing while the others' changes stream in.
    for round in 0..3 {
        for (i, w) in watchers.iter_mut().enumerate() {
            write(w.as_mut().unwrap(), i, &mut rng, 5 + round, &mut expected);
        }
    }
    for w in watchers.iter_mut() {
        w.as_mut().unwrap().drain_written();
    }
    // Phase 2: r2 is partitioned (its process dies) and writes offline while the others
    // keep writing.
    watchers[2].take().unwrap().kill();
    let mut offline = String::new();
    let mut offline_w = |rng: &mut Rng| {
        let (op, inc) = random_op(rng, 2, &names);
        offline.push_str(&op);
        offline.push('\n');
        inc
    };
    let mut offline_incs = Vec::new();
    for _ in 0..15 {
        offline_incs.extend(offline_w(&mut rng));
    }
    for (i, w) in watchers.iter_mut().enumerate().take(2) {
        write(w.as_mut().unwrap(), i, &mut rng, 8, &mut expected);
    }
    for (k, d) in offline_incs {
        *expected.entry(k).or_default() += d;
    }
    ok(ks_stdin(&["write", p(&reps[2])], &offline));
    // Phase 3: the hub crashes mid-stream and comes back on the same port; the live
    // clients reconnect by themselves, r2 comes back online.
    for (i, w) in watchers.iter_mut().enumerate().take(2) {
        write(w.as_mut().unwrap(), i, &mut rng, 10, &mut expected);
    }
    hub_proc.kill();
    let (hub_proc, addr2) = hub(&hub_dir, &addr, &[]);
    assert_eq!(addr2, addr);
    watchers[2] = Some(watch(&reps[2]));
    for (i, w) in watchers.iter_mut().enumerate() {
        write(w.as_mut().unwrap(), i, &mut rng, 4, &mut expected);
    }
    // A client killed mid-sync: r0 crashes right after its writes reach its log.
    {
        let w = watchers[0].as_mut().unwrap();
        write(w, 0, &mut rng, 10, &mut expected);
        w.drain_written();
    }
    watchers[0].take().unwrap().kill();
    // Stop the live sessions cleanly, then one-shot syncs until everyone has everything.
    for mut w in watchers.into_iter().flatten() {
        w.drain_written();
        w.terminate();
    }
    for _ in 0..2 {
        for r in &reps {
            sync(r, &url);
        }
    }
    // Merkle verification: every replica's root equals the hub's.
    for r in &reps {
        let out = lines(&ok(ks(&["sync", p(r), "--remote", &url, "--verify"])));
        let summary = out.last().unwrap();
        assert_eq!(summary["verified"][0]["converged"], true, "{summary}");
    }
    hub_proc.terminate();

    // The same log everywhere, with no event twice.
    let hub_status = status(&hub_dir);
    for r in &reps {
        let s = status(r);
        assert_eq!(
            s["version_vector"],
            hub_status["version_vector"],
            "{}",
            r.display()
        );
        assert_eq!(s["events"]["stored"], s["events"]["applied"]);
        assert_eq!(s["events"]["stored"], hub_status["events"]["stored"]);
    }
    let total: u64 = hub_status["version_vector"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(hub_status["events"]["stored"].as_u64().unwrap(), total);
    // 10 setup ops and 139 random ones, plus the hub's seals.
    assert!(total > 149, "{total} events");
    // The same graph everywhere.
    let want_users = users(&hub_dir);
    let want_follows = follows(&hub_dir);
    assert_eq!(want_users.len(), names.len());
    for r in &reps {
        assert_eq!(users(r), want_users, "{}", r.display());
        assert_eq!(follows(r), want_follows, "{}", r.display());
    }
    // Every increment counted exactly once.
    for u in &want_users {
        let name = u["name"].as_str().unwrap();
        assert_eq!(
            u["visits"].as_i64().unwrap(),
            expected.get(name).copied().unwrap_or(0),
            "visits of {name}"
        );
    }
}

/// SPEC §4 across processes: node_b (online) sets `banned`; node_a, offline, had set
/// `inactive` later by the clock; after both sync, `banned` holds everywhere and the
/// conflict is reported with strategy `online_wins`.
#[test]
fn online_wins_across_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let a = init(tmp.path(), "node_a");
    let b = init(tmp.path(), "node_b");
    ok(ks_stdin(
        &["write", p(&a)],
        &schema_with_users(&["user_1"], 0),
    ));
    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &[]);
    let url = format!("tcp://{addr}");
    sync(&a, &url);
    sync(&b, &url);
    let set = |r: &Path, v: &str| {
        ok(ks_stdin(
            &["write", p(r)],
            &json!({"op":"update","table":"User","key":"user_1","prop":"status","value":v})
                .to_string(),
        ));
    };
    set(&b, "banned");
    std::thread::sleep(Duration::from_millis(20));
    set(&a, "inactive");
    sync(&b, &url);
    let events = sync(&a, &url);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "conflict" && e["conflict"]["strategy"] == "online_wins"),
        "{events:?}"
    );
    sync(&b, &url);
    hub_proc.terminate();
    for r in [&hub_dir, &a, &b] {
        assert_eq!(users(r)[0]["status"], "banned", "{}", r.display());
    }
}

#[test]
fn auth_and_outdated_schema_are_refused_with_exit_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let c = init(tmp.path(), "c");
    ok(ks_stdin(&["write", p(&c)], SCHEMA));
    let token = tmp.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let (hub_proc, addr) = hub(
        &hub_dir,
        "127.0.0.1:0",
        &["--auth-token-file", p(&token), "--schema-version", "2"],
    );
    let url = format!("tcp://{addr}");
    let out = ks(&["sync", p(&c), "--remote", &url, "--schema-version", "2"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires an auth token"));
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let out = ks(&[
        "sync",
        p(&c),
        "--remote",
        &url,
        "--auth-token-file",
        p(&wrong),
        "--schema-version",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"));
    let out = ks(&[
        "sync",
        p(&c),
        "--remote",
        &url,
        "--auth-token-file",
        p(&token),
        "--schema-version",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let events = lines(&String::from_utf8_lossy(&out.stdout));
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "outdated" && e["required"] == 2),
        "{events:?}"
    );
    let out = ks(&[
        "sync",
        p(&c),
        "--remote",
        &url,
        "--auth-token-file",
        p(&token),
        "--schema-version",
        "2",
    ]);
    let events = lines(&ok(out));
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["sent"], 4);
    hub_proc.terminate();
    // Only the authenticated, up-to-date session wrote into the hub's log: its 4 events,
    // and the hub's seal of them (the schema has an online_wins property).
    let s = status(&hub_dir);
    assert_eq!(s["version_vector"], json!({"c": 4, "hub": 1}));
}

/// Credentials bind tokens to peer ids: the laptop's token cannot claim the phone's id,
/// a read-only token cannot send, and a bad credentials file is refused at start.
#[test]
fn credentials_bind_tokens_to_peers_and_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let laptop = init(tmp.path(), "laptop");
    let phone = init(tmp.path(), "phone");
    let dash = init(tmp.path(), "dash");
    ok(ks_stdin(&["write", p(&laptop)], SCHEMA));
    let creds = tmp.path().join("credentials.json");
    std::fs::write(
        &creds,
        r#"{"credentials": [
            {"token": "laptop-secret", "peers": ["laptop"], "role": "replica"},
            {"token": "dash-secret", "peers": ["dash"], "role": "read-only"}
        ]}"#,
    )
    .unwrap();
    let token = |name: &str, text: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f
    };
    let laptop_token = token("laptop.token", "laptop-secret\n");
    let dash_token = token("dash.token", "dash-secret");

    let bad = token(
        "bad.json",
        r#"{"credentials": [{"token": "x", "peers": ["no way"], "role": "replica"}]}"#,
    );
    let err = fails(ks(&[
        "serve",
        p(&hub_dir),
        "--listen",
        "127.0.0.1:0",
        "--credentials",
        p(&bad),
    ]));
    assert!(
        err.contains("credential 0 (0-based)") && err.contains("no way"),
        "{err}"
    );

    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &["--credentials", p(&creds)]);
    let url = format!("tcp://{addr}");
    let sync_with = |dir: &Path, tok: &Path| {
        ks(&[
            "sync",
            p(dir),
            "--remote",
            &url,
            "--auth-token-file",
            p(tok),
        ])
    };
    // The phone borrows the laptop's token: refused, naming why.
    let out = sync_with(&phone, &laptop_token);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("this token may not claim peer \"phone\""),
        "{err}"
    );
    // The laptop syncs with its own.
    let summary = lines(&ok(sync_with(&laptop, &laptop_token))).pop().unwrap();
    assert_eq!(summary["event"], "summary");
    // The dashboard receives, and may not send.
    ok(sync_with(&dash, &dash_token));
    assert_eq!(status(&dash)["version_vector"]["laptop"], 4);
    ok(ks_stdin(
        &["write", p(&dash)],
        r#"{"op":"add_node","table":"User","props":{"name":"eve"}}"#,
    ));
    let out = sync_with(&dash, &dash_token);
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("read-only"), "{text}");
    hub_proc.terminate();
    assert!(
        status(&hub_dir)["version_vector"].get("dash").is_none(),
        "nothing of the read-only peer reached the hub"
    );
}

#[test]
fn a_relay_hub_keeps_only_the_log_and_forwards() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = tmp.path().join("relay");
    let a = init(tmp.path(), "a");
    let b = init(tmp.path(), "b");
    ok(ks_stdin(&["write", p(&a)], SCHEMA));
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"add_node","table":"User","props":{"name":"ann","visits":3}}"#,
    ));
    let (proc, addr) = hub(&relay, "127.0.0.1:0", &["--relay", "--peer-id", "relay"]);
    for url in [
        format!("tcp://{addr}"),
        format!("ws://{addr}/sync"),
        format!("http://{addr}/sync"),
    ] {
        sync(&a, &url);
        sync(&b, &url);
    }
    proc.terminate();
    assert!(relay.join("events.sqlite").exists());
    assert!(
        !relay.join("graph.kuzu").exists(),
        "a relay has no Kuzu database"
    );
    assert_eq!(users(&a), users(&b));
    assert_eq!(users(&b)[0]["visits"], 3);
    // Restarting the relay replays its log.
    let (proc, addr) = hub(&relay, "127.0.0.1:0", &["--relay"]);
    let c = init(tmp.path(), "c");
    sync(&c, &format!("tcp://{addr}"));
    proc.terminate();
    assert_eq!(users(&c), users(&a));
}

/// The offline queue from the command line: `write --offline` queues (with a capacity),
/// `status` shows the queue, `sync` coalesces it, sends it and goes online.
#[test]
fn offline_writes_queue_coalesce_and_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let a = init(tmp.path(), "a");
    ok(ks_stdin(&["write", p(&a)], &schema_with_users(&["u"], 0)));
    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &[]);
    let url = format!("tcp://{addr}");
    sync(&a, &url);
    let mut ops = String::new();
    for i in 0..5 {
        ops.push_str(&format!(
            "{{\"op\":\"increment\",\"table\":\"User\",\"key\":\"u\",\"prop\":\"visits\",\"delta\":{i}}}\n"
        ));
    }
    let out: Json = parse(&ok(ks_stdin(
        &["write", p(&a), "--offline", "--queue-capacity", "6"],
        &ops,
    )));
    assert_eq!(out["offline_queue"]["size"], 5, "{out}");
    assert_eq!(out["offline_queue"]["capacity"], 6);
    // The queue holds 5 of 6: two more ops are refused whole, with a clear error.
    let two =
        "{\"op\":\"increment\",\"table\":\"User\",\"key\":\"u\",\"prop\":\"visits\",\"delta\":1}\n"
            .repeat(2);
    let refused = ks_stdin(&["write", p(&a)], &two);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("offline queue is full"));
    let s = status(&a);
    assert_eq!(s["offline_queue"]["size"], 5);
    assert_eq!(s["offline_queue"]["offline"], true);
    // Back online: the five increments travel as one.
    let events = sync(&a, &url);
    let summary = events.last().unwrap();
    assert_eq!(summary["offline_queue"]["raw_operations"], 5, "{summary}");
    assert_eq!(summary["offline_queue"]["coalesced_operations"], 1);
    assert_eq!(summary["sent"], 1);
    assert_eq!(status(&a)["offline_queue"]["offline"], false);
    hub_proc.terminate();
    assert_eq!(users(&hub_dir)[0]["visits"], 10);
    assert_eq!(users(&a), users(&hub_dir));
}

/// `kuzu-sync diff` between replicas with unrelated histories (a restored backup, say),
/// then `--repair`, which copies the hub's rows: afterwards the roots are equal.
#[test]
fn diff_and_repair_against_a_hub() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let a = init(tmp.path(), "a");
    let rows = |names: &[&str]| schema_with_users(names, 1);
    ok(ks_stdin(
        &["write", p(&hub_dir)],
        &rows(&["ann", "bob", "cy", "dee"]),
    ));
    ok(ks_stdin(&["write", p(&a)], &rows(&["ann", "bob", "eve"])));
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"update","table":"User","key":"bob","prop":"visits","value":5}"#,
    ));
    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &[]);
    let url = format!("tcp://{addr}");
    let d: Json = parse(&ok(ks(&["diff", p(&a), "--remote", &url])));
    assert_eq!(d["equal"], false, "{d}");
    let sorted = |v: &Json| {
        let mut l: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        l.sort();
        l
    };
    assert_eq!(sorted(&d["missing_here"]), ["User(cy)", "User(dee)"]);
    assert_eq!(sorted(&d["missing_there"]), ["User(eve)"]);
    assert_eq!(sorted(&d["different"]), ["User(bob)"]);
    let r: Json = parse(&ok(ks(&["diff", p(&a), "--remote", &url, "--repair"])));
    assert_eq!(r["repaired"]["written"], 4, "{r}");
    let again: Json = parse(&ok(ks(&["diff", p(&a), "--remote", &url])));
    assert_eq!(again["equal"], true, "{again}");
    assert_eq!(again["local_root"], again["remote_root"]);
    hub_proc.terminate();
    assert_eq!(users(&a), users(&hub_dir));
}

/// Writes made with plain Kuzu into a replica's database, bypassing kuzu-sync, are found
/// by `kuzu-sync drift`, and reverted or captured by policy.
#[test]
fn drift_in_the_kuzu_database_is_reverted_or_captured() {
    use kuzu_sync_kuzu::kuzu::{Connection, Database, SystemConfig};
    let tmp = tempfile::tempdir().unwrap();
    let a = init(tmp.path(), "a");
    ok(ks_stdin(
        &["write", p(&a)],
        &schema_with_users(&["ann", "bob", "cy"], 1),
    ));
    let clean = users(&a);
    let tamper = || {
        let db = Database::new(a.join("graph.kuzu"), SystemConfig::default()).unwrap();
        let conn = Connection::new(&db).unwrap();
        for q in [
            "CREATE (:User {name: 'zed', visits: 7})",
            "MATCH (u:User {name: 'ann'}) SET u.visits = 99",
            "MATCH (u:User {name: 'cy'}) DETACH DELETE u",
        ] {
            conn.query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    };
    tamper();
    let tampered = users(&a);
    let d: Json = parse(&ok(ks(&["drift", p(&a)])));
    assert_eq!(d["drift"], true);
    assert_eq!(d["extra"], json!(["User(zed)"]));
    assert_eq!(d["missing"], json!(["User(cy)"]));
    assert_eq!(d["different"], json!(["User(ann)"]));
    let r: Json = parse(&ok(ks(&["drift", p(&a), "--revert"])));
    assert_eq!(r["reverted"], 3);
    assert_eq!(users(&a), clean);
    let events = status(&a)["events"]["stored"].clone();
    assert_eq!(parse(&ok(ks(&["drift", p(&a)])))["drift"], false);
    tamper();
    let c: Json = parse(&ok(ks(&["drift", p(&a), "--capture"])));
    assert_eq!(c["captured"], 3);
    assert_eq!(users(&a), tampered);
    assert_eq!(
        status(&a)["events"]["stored"].as_u64().unwrap(),
        events.as_u64().unwrap() + 3,
        "captured as three new events"
    );
    // The captured drift replicates.
    let b = init(tmp.path(), "b");
    let bundle = tmp.path().join("a.bundle");
    ok(ks(&["export", p(&a), "--out", p(&bundle)]));
    ok(ks(&["import", p(&b), p(&bundle)]));
    assert_eq!(users(&b), tampered);
}

/// A hub that compacts while serving (`--compact-every`): once both clients hold every
/// event, its log is folded into a snapshot. A new replica bootstraps from it (sync_mode
/// `snapshot`), and a client the hub was told to forget, which wrote meanwhile, gets the
/// snapshot, keeps its writes and converges. The hub restarts from its snapshot.
#[test]
fn a_compacting_hub_bootstraps_new_and_forgotten_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let hub_dir = init(tmp.path(), "hub");
    let (a, b) = (init(tmp.path(), "a"), init(tmp.path(), "b"));
    ok(ks_stdin(
        &["write", p(&a)],
        &schema_with_users(&["ann", "bob"], 1),
    ));
    // b knows the hub once; then the hub is told to forget it.
    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &[]);
    let url = format!("tcp://{addr}");
    sync(&a, &url);
    sync(&b, &url);
    hub_proc.terminate();
    let err = fails(ks(&["compact", p(&hub_dir), "--forget-peer", "nobody"]));
    assert!(err.contains("not a known peer"), "{err}");
    // All or nothing: a bad id after a good one forgets neither.
    let err = fails(ks(&[
        "compact",
        p(&hub_dir),
        "--forget-peer",
        "b",
        "--forget-peer",
        "nobody",
    ]));
    assert!(
        err.contains("--forget-peer: \"nobody\" is not a known peer"),
        "{err}"
    );
    let st = status(&hub_dir);
    assert!(st["compaction"]["known_peers"].get("b").is_some(), "{st}");
    let report = parse(&ok(ks(&["compact", p(&hub_dir), "--forget-peer", "b"])));
    assert_eq!(report["known_peers"], json!(["a"]), "{report}");
    // b writes while the hub compacts past it.
    ok(ks_stdin(
        &["write", p(&b)],
        r#"{"op":"add_node","table":"User","props":{"name":"bea","visits":2}}
{"op":"increment","table":"User","key":"ann","prop":"visits","delta":10}"#,
    ));
    let (hub_proc, addr) = hub(&hub_dir, "127.0.0.1:0", &["--compact-every", "1"]);
    let url = format!("tcp://{addr}");
    ok(ks_stdin(
        &["write", p(&a)],
        r#"{"op":"increment","table":"User","key":"ann","prop":"visits","delta":100}"#,
    ));
    sync(&a, &url);
    // The hub compacts a's new event. The seal it wrote in answer may stay in the log: a
    // one-shot client can leave before it receives (and acknowledges) it.
    let compacted = hub_proc.wait_for("compacted", 60);
    assert!(
        compacted["removed_events"].as_u64().unwrap() >= 1,
        "{compacted}"
    );
    let tail = compacted["remaining_events"].clone();

    // A new replica: the snapshot, then the tail.
    let c = init(tmp.path(), "c");
    let out = sync(&c, &url);
    let connect = out.iter().find(|l| l["event"] == "connect").unwrap();
    assert_eq!(connect["sync_mode"], "snapshot", "{out:?}");
    assert!(out
        .iter()
        .any(|l| l["event"] == "snapshot" && l["direction"] == "installed"));
    assert_eq!(users(&c), users(&a));
    assert_eq!(
        status(&c)["events"]["stored"],
        tail,
        "c's log holds only the tail"
    );

    // The forgotten client: snapshot, its own writes kept and delivered, Merkle-verified.
    let out = sync(&b, &url);
    let summary = out.last().unwrap();
    let session = &summary["sessions"][0];
    assert_eq!(session["full_resync_required"], true, "{summary}");
    assert!(
        session["snapshot_installed"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(session["repaired"], 0, "{summary}");
    let out = sync(&b, &url);
    assert_eq!(out.last().unwrap()["sessions"][0]["snapshot_installed"], 0);
    sync(&a, &url);
    sync(&c, &url);
    hub_proc.terminate();
    let want = users(&hub_dir);
    assert_eq!(
        want,
        vec![
            json!({"name":"ann","status":null,"visits":111}),
            json!({"name":"bea","status":null,"visits":2}),
            json!({"name":"bob","status":null,"visits":1}),
        ]
    );
    for r in [&a, &b, &c] {
        assert_eq!(users(r), want, "{}", r.display());
    }
}
