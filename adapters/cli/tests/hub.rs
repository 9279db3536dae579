//! The hub as a process facing the network: TLS (`serve --tls-cert/--tls-key`, clients on
//! `wss://`, `https://`, `tls://`), and 10,000 idle live connections held at once with the
//! hub's resident memory per connection measured.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use kuzu_sync::engine::sync::{Hello, Message, PROTOCOL_VERSION};
use kuzu_sync::engine::VersionVector;
use kuzu_sync::protocol::frame::{Encoder, FrameDecoder, DEFAULT_MAX_FRAME};

mod common;
use common::{ks, ks_stdin, lines, ok, p, BIN};

/// `kuzu-sync serve`, its stdout lines on a channel; SIGTERM on drop.
struct Hub {
    child: Child,
    lines: Receiver<Json>,
    addr: String,
}

impl Hub {
    fn start(dir: &Path, extra: &[&str]) -> Hub {
        let mut args = vec!["serve", p(dir), "--listen", "127.0.0.1:0"];
        args.extend(extra);
        let mut child = Command::new(BIN)
            .args(&args)
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
        let addr = loop {
            let j = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the hub never said it was listening");
            if j["event"] == "listening" {
                break j["address"].as_str().unwrap().to_string();
            }
        };
        Hub { child, lines, addr }
    }

    fn port(&self) -> &str {
        self.addr.rsplit(':').next().unwrap()
    }

    /// Resident memory of the hub process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        kb * 1024
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        while self.lines.try_recv().is_ok() {}
    }
}

const SCHEMA: &str =
    r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(name STRING, PRIMARY KEY (name))"}"#;

fn replica(dir: &Path, name: &str) -> std::path::PathBuf {
    let r = dir.join(name);
    ok(ks(&["init", p(&r), "--peer-id", name]));
    r
}

fn names(r: &Path) -> Vec<Json> {
    lines(&ok(ks(&[
        "query",
        p(r),
        "MATCH (u:User) RETURN u.name AS name ORDER BY name",
    ])))
}

fn sync_with_ca(r: &Path, url: &str, ca: Option<&Path>) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(["sync", p(r), "--remote", url]);
    match ca {
        Some(ca) => c.env("KUZU_SYNC_TLS_CA", ca),
        None => c.env_remove("KUZU_SYNC_TLS_CA"),
    };
    c.output().unwrap()
}

#[test]
fn a_tls_hub_serves_wss_https_and_tls_clients() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, cert.cert.pem()).unwrap();
    std::fs::write(&key_pem, cert.signing_key.serialize_pem()).unwrap();
    let h = replica(dir.path(), "hub");
    ok(ks_stdin(&["write", p(&h)], SCHEMA));
    let hub = Hub::start(&h, &["--tls-cert", p(&cert_pem), "--tls-key", p(&key_pem)]);
    let port = hub.port().to_string();
    let mut expected = Vec::new();
    for (i, url) in [
        format!("wss://localhost:{port}/sync"),
        format!("https://127.0.0.1:{port}/sync"),
        format!("tls://localhost:{port}"),
    ]
    .iter()
    .enumerate()
    {
        let r = replica(dir.path(), &format!("r{i}"));
        // Without the authority, the self-signed certificate is refused, clearly.
        let out = sync_with_ca(&r, url, None);
        assert!(
            !out.status.success(),
            "{url}: synced with an untrusted certificate"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("certificate"), "{url}: {err}");
        // With it, a write goes up and everything comes down.
        let line = format!(r#"{{"op":"add_node","table":"User","props":{{"name":"u{i}"}}}}"#);
        ok(sync_with_ca(&r, url, Some(&cert_pem)));
        ok(ks_stdin(&["write", p(&r)], &line));
        let out = sync_with_ca(&r, url, Some(&cert_pem));
        ok(out);
        expected.push(serde_json::json!({"name": format!("u{i}")}));
        assert_eq!(names(&r).len(), i + 1, "{url}");
    }
    // A plain client on a TLS port gets nowhere.
    let r = replica(dir.path(), "plain");
    assert!(!ks(&[
        "sync",
        p(&r),
        "--remote",
        &format!("tcp://127.0.0.1:{port}")
    ])
    .status
    .success());
    drop(hub);
    assert_eq!(names(&h), expected);
}

fn hello(peer: &str) -> Vec<u8> {
    let m = Message::Hello(Hello {
        peer: peer.into(),
        protocol_version: PROTOCOL_VERSION.into(),
        schema_version: 0,
        capabilities: vec![],
        auth_token: None,
        version_vector: VersionVector::new(),
        sync_point: None,
        compacted: Default::default(),
    });
    Encoder::default().encode(&m).unwrap().0
}

/// One idle live client: handshake, then answers pings until told to stop. Reports when
/// its handshake completed.
async fn idle_client(
    addr: String,
    peer: String,
    ready: tokio::sync::mpsc::UnboundedSender<Result<(), String>>,
    stop: tokio_util::sync::CancellationToken,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("connect: {e}")));
            return;
        }
    };
    if let Err(e) = s.write_all(&hello(&peer)).await {
        let _ = ready.send(Err(format!("hello: {e}")));
        return;
    }
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; 4096];
    let mut welcomed = false;
    loop {
        let n = tokio::select! {
            r = s.read(&mut buf) => r,
            _ = stop.cancelled() => return,
        };
        let n = match n {
            Ok(0) | Err(_) => {
                if !welcomed {
                    let _ = ready.send(Err("closed before the welcome".into()));
                }
                return;
            }
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        while let Ok(Some(m)) = decoder.next_message() {
            match m {
                Message::Welcome(_) if !welcomed => {
                    welcomed = true;
                    let _ = ready.send(Ok(()));
                }
                Message::Ping(n) => {
                    let pong = Encoder::default().encode(&Message::Pong(n)).unwrap().0;
                    if s.write_all(&pong).await.is_err() {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

/// Opens `n` idle live connections, at most `at_once` connecting at a time; waits until
/// every one has its welcome.
fn open_idle(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    from: usize,
    n: usize,
    stop: &tokio_util::sync::CancellationToken,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let at_once = 200;
    let mut started = 0;
    let mut done = 0;
    rt.block_on(async {
        while done < n {
            while started < n && started - done < at_once {
                rt.spawn(idle_client(
                    addr.to_string(),
                    format!("idle-{}", from + started),
                    tx.clone(),
                    stop.clone(),
                ));
                started += 1;
            }
            let r = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .expect("a connection got no welcome within 60 s")
                .unwrap();
            if let Err(e) = r {
                panic!("connection {} failed: {e}", from + done);
            }
            done += 1;
        }
    });
}

#[test]
fn a_hub_holds_ten_thousand_idle_connections_in_little_memory() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let h = replica(dir.path(), "hub");
    ok(ks_stdin(&["write", p(&h)], SCHEMA));
    let hub = Hub::start(&h, &["--max-connections", &(N + 300).to_string()]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    // Warm up (code paths, allocator arenas), then measure from there.
    open_idle(&rt, &hub.addr, 0, 200, &stop);
    std::thread::sleep(Duration::from_secs(1));
    let before = hub.rss();
    open_idle(&rt, &hub.addr, 200, N, &stop);
    // Let every session settle: initial exchange sent, a ping round trip made.
    std::thread::sleep(Duration::from_secs(4));
    let after = hub.rss();
    let per = after.saturating_sub(before) / N as u64;
    eprintln!(
        "hub RSS: {} KiB before, {} KiB with {N} more idle connections: {} bytes each",
        before / 1024,
        after / 1024,
        per
    );
    // The hub still serves a real client meanwhile.
    let r = replica(dir.path(), "late");
    ok(ks(&[
        "sync",
        p(&r),
        "--remote",
        &format!("ws://{}/sync", hub.addr),
    ]));
    assert_eq!(names(&r), Vec::<Json>::new());
    assert!(
        per < 64 << 10,
        "{per} bytes of hub memory per idle connection (aim: under 64 KiB)"
    );
    stop.cancel();
    drop(rt);
}
