//! Helpers shared by the end-to-end tests of the `kuzu-sync` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

pub const BIN: &str = env!("CARGO_BIN_EXE_kuzu-sync");

pub fn ks(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run kuzu-sync")
}

pub fn ks_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kuzu-sync");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs and expects success; returns stdout.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "kuzu-sync failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and expects failure; returns stderr.
pub fn fails(out: Output) -> String {
    assert!(
        !out.status.success(),
        "kuzu-sync should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

pub fn json(s: &str) -> Json {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

pub fn lines(s: &str) -> Vec<Json> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .collect()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A `kuzu-sync` process that listens (serve, coordinator), stopped on drop.
pub struct Listening {
    pub child: Child,
    pub addr: String,
    /// The JSON lines it printed before saying it listens.
    pub before: Vec<Json>,
}

impl Listening {
    pub fn start(args: &[&str]) -> Listening {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut before = Vec::new();
        let addr = loop {
            assert!(Instant::now() < deadline, "{args:?} never said it listens");
            let mut line = String::new();
            assert!(out.read_line(&mut line).unwrap() > 0, "{args:?} exited");
            if let Ok(j) = serde_json::from_str::<Json>(&line) {
                if j["event"] == "listening" {
                    break j["address"].as_str().unwrap().to_string();
                }
                before.push(j);
            }
        };
        // Keep reading so that the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Listening {
            child,
            addr,
            before,
        }
    }
}

impl Listening {
    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// A small deterministic generator, so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The ids of the `User` nodes of replica `r`, sorted.
pub fn user_ids(r: &Path) -> Vec<String> {
    lines(&ok(ks(&[
        "query",
        p(r),
        "MATCH (u:User) RETURN u.id AS id ORDER BY id",
    ])))
    .into_iter()
    .map(|j| j["id"].as_str().unwrap().to_string())
    .collect()
}
