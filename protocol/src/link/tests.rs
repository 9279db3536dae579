//! Links against a real hub on 127.0.0.1 (WebSocket mostly), and the test harness the
//! HTTP tests share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::ports::GraphDump;
use kuzu_sync_engine::sync::{Message, SessionConfig};
use kuzu_sync_engine::{FixedClock, MemoryEventStore, Op, PeerId, Replica, Value};

use super::*;
use crate::frame::{FrameDecoder, DEFAULT_MAX_FRAME};
use crate::net::{self, no_events, DriveOptions, HubConfig, Shared};
use std::net::{TcpListener, TcpStream};

pub(crate) type Mem = Shared<MemoryEventStore, MemoryGraphStore>;

pub(crate) fn replica(peer: &str) -> Arc<Mem> {
    Shared::new(
        Replica::create(
            MemoryEventStore::default(),
            MemoryGraphStore::new(),
            PeerId::new(peer).unwrap(),
            Box::new(FixedClock(1_000)),
        )
        .unwrap(),
    )
}

/// The schema and users `0..n`.
pub(crate) fn schema_and_users(n: i64) -> Vec<Op> {
    let mut ops: Vec<Op> = kuzu_sync_engine::sim::base_schema()
        .into_iter()
        .map(Op::Schema)
        .collect();
    ops.extend(users(0, n));
    ops
}

pub(crate) fn users(from: i64, to: i64) -> Vec<Op> {
    (from..to)
        .map(|i| Op::AddNode {
            table: "User".into(),
            props: vec![
                ("id".into(), Value::Int64(i)),
                ("name".into(), Value::from(format!("user {i}"))),
            ],
        })
        .collect()
}

pub(crate) fn dump(shared: &Mem) -> GraphDump {
    shared.lock().dump().unwrap()
}

/// Polls `f` until it holds or `secs` pass.
pub(crate) fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A hub serving a memory replica on a free port of 127.0.0.1, stopped on drop.
pub(crate) struct Hub {
    pub port: u16,
    pub shared: Arc<Mem>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Hub {
    pub fn start() -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = replica("hub");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                net::serve(listener, shared, HubConfig::default(), stop, no_events())
            })
        };
        Hub {
            port,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, scheme: &str) -> String {
        match scheme {
            "tcp" => format!("tcp://127.0.0.1:{}", self.port),
            _ => format!("{scheme}://127.0.0.1:{}/sync", self.port),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A writes and syncs, B syncs: all three hold the same graph.
pub(crate) fn one_shot_round_trip(scheme: &str) {
    let hub = Hub::start();
    let url = hub.url(scheme);
    let a = replica("a");
    let b = replica("b");
    a.write(schema_and_users(50)).unwrap();
    let report = net::sync_once(&a, &url, SessionConfig::default(), no_events()).unwrap();
    assert!(report.synced, "{report:?}");
    assert!(report.events_sent > 0, "{report:?}");
    assert_eq!(report.remote, "hub");
    let report = net::sync_once(&b, &url, SessionConfig::default(), no_events()).unwrap();
    assert!(report.synced, "{report:?}");
    assert!(report.events_received > 0, "{report:?}");
    let expected = dump(&a);
    assert_eq!(expected["User"].len(), 50);
    assert_eq!(dump(&hub.shared), expected);
    assert_eq!(dump(&b), expected);

    // Both directions at once, with enough events for several batches and compressed frames.
    b.write(users(1_000, 6_000)).unwrap();
    a.write(users(10_000, 12_000)).unwrap();
    net::sync_once(&a, &url, SessionConfig::default(), no_events()).unwrap();
    let report = net::sync_once(&b, &url, SessionConfig::default(), no_events()).unwrap();
    assert!(report.synced);
    assert_eq!(report.events_sent, 5_000);
    net::sync_once(&a, &url, SessionConfig::default(), no_events()).unwrap();
    let expected = dump(&hub.shared);
    assert_eq!(expected["User"].len(), 50 + 5_000 + 2_000);
    assert_eq!(dump(&a), expected);
    assert_eq!(dump(&b), expected);
}

/// B watches; A's writes reach B within seconds.
pub(crate) fn live(scheme: &str) {
    let hub = Hub::start();
    let url = hub.url(scheme);
    let a = replica("a");
    let b = replica("b");
    a.write(schema_and_users(3)).unwrap();
    net::sync_once(&a, &url, SessionConfig::default(), no_events()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (b, url, stop) = (b.clone(), url.clone(), stop.clone());
        thread::spawn(move || {
            let opts = DriveOptions {
                stop,
                ..DriveOptions::default()
            };
            net::watch(b, &[url], SessionConfig::default(), opts)
        })
    };
    assert!(
        eventually(10, || dump(&b).get("User").map(Vec::len) == Some(3)),
        "the initial state never reached the watcher"
    );
    // A live writer: A also watches, and its writes stream to the hub and on to B.
    let stop_a = Arc::new(AtomicBool::new(false));
    let watcher_a = {
        let (a, url, stop) = (a.clone(), url.clone(), stop_a.clone());
        thread::spawn(move || {
            let opts = DriveOptions {
                stop,
                ..DriveOptions::default()
            };
            net::watch(a, &[url], SessionConfig::default(), opts)
        })
    };
    for round in 0..3 {
        let from = 100 + round * 10;
        a.write(users(from, from + 10)).unwrap();
        let want = 3 + (round as usize + 1) * 10;
        assert!(
            eventually(10, || dump(&b).get("User").map(Vec::len) == Some(want)),
            "round {round}: B has {:?} users, wants {want}",
            dump(&b).get("User").map(Vec::len)
        );
    }
    // Without a live writer: a one-shot sync of a fresh write.
    stop_a.store(true, Ordering::SeqCst);
    assert!(watcher_a.join().unwrap().is_empty());
    a.write(users(500, 501)).unwrap();
    net::sync_once(&a, &url, SessionConfig::default(), no_events()).unwrap();
    assert!(
        eventually(10, || dump(&b) == dump(&a)),
        "B missed the last write"
    );
    stop.store(true, Ordering::SeqCst);
    let errors = watcher.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(dump(&hub.shared), dump(&a));
}

/// A frame of 8 bytes whose body is no message.
pub(crate) fn garbage_frame() -> Vec<u8> {
    let mut f = 8u32.to_le_bytes().to_vec();
    f.push(0); // flags: uncompressed
    f.extend_from_slice(&[0xc1, 0xff, 0x00, 0x13, 0x37, 0xc1, 0xc1]);
    f
}

/// The messages in `bytes`.
pub(crate) fn messages(bytes: &[u8]) -> Vec<Message> {
    let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME);
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(m) = d.next_message().unwrap() {
        out.push(m);
    }
    out
}

#[test]
fn one_shot_sync_over_websocket() {
    one_shot_round_trip("ws");
}

#[test]
fn live_sync_over_websocket() {
    live("ws");
}

#[test]
fn one_shot_sync_over_tcp() {
    one_shot_round_trip("tcp");
}

#[test]
fn live_sync_over_tcp() {
    live("tcp");
}

/// Reads from `link` until it ends; what arrived, and how it ended.
async fn read_to_end(link: &mut dyn Link) -> (Vec<u8>, io::Error) {
    let mut got = Vec::new();
    let e = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = io(link, &mut got).await {
                return e;
            }
        }
    })
    .await
    .expect("the hub kept the connection open");
    (got, e)
}

#[test]
fn garbage_gets_an_error_and_a_close_while_others_sync() {
    let hub = Hub::start();
    let url = hub.url("ws");
    let (got, e) = crate::net::block_on(async {
        let mut bad = connect(&url, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        bad.queue(garbage_frame());
        read_to_end(&mut *bad).await
    });
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    let msgs = messages(&got);
    assert!(
        matches!(msgs.as_slice(), [Message::Error(reason)] if reason.contains("not a valid message")),
        "{msgs:?}"
    );
    // The hub still serves.
    let a = replica("a");
    a.write(schema_and_users(5)).unwrap();
    let report = net::sync_once(&a, &url, SessionConfig::default(), no_events()).unwrap();
    assert!(report.synced);
    assert_eq!(dump(&hub.shared), dump(&a));
}

/// A frame larger than a WebSocket message travels as many messages and arrives whole,
/// both ways, and a close is seen as the end.
#[test]
fn a_large_frame_crosses_many_websocket_messages() {
    crate::net::block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let server = {
            let big = big.clone();
            tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
                    .await
                    .unwrap();
                let mut link = WsLink::new(ws, "server".into());
                let mut buf = Vec::new();
                let mut reads = 0;
                while buf.len() < big.len() {
                    io(&mut link, &mut buf).await.unwrap();
                    reads += 1;
                }
                assert_eq!(buf, big);
                link.queue(big.clone());
                close(&mut link, Duration::from_secs(10)).await;
                reads
            })
        };
        let mut client = connect(&format!("ws://127.0.0.1:{port}/x"), Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        client.queue(big.clone());
        let (got, e) = read_to_end(&mut *client).await;
        assert_eq!(got, big);
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        let reads = server.await.unwrap();
        assert!(reads >= big.len() / WS_CHUNK, "{reads} reads");
    });
}

/// A WebSocket message over the limit is refused before it is buffered: the limit is the
/// same before and after a session's handshake.
#[test]
fn a_websocket_message_over_the_limit_is_refused() {
    crate::net::block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
                .await
                .unwrap();
            let mut link = WsLink::new(ws, "server".into());
            let mut buf = Vec::new();
            loop {
                if let Err(e) = io(&mut link, &mut buf).await {
                    return e.to_string();
                }
            }
        });
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut ws, _) =
            tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), stream)
                .await
                .unwrap();
        use futures_util::SinkExt;
        let _ = ws
            .send(WsMessage::Binary(vec![0u8; WS_CHUNK + 1].into()))
            .await;
        let e = server.await.unwrap();
        assert!(e.contains("too long") || e.contains("Space limit"), "{e}");
    });
}

#[test]
fn a_plain_get_is_told_what_this_is() {
    let hub = Hub::start();
    let mut s = TcpStream::connect(hub.addr()).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    assert!(text.contains("kuzu-sync hub"), "{text}");
}

#[test]
fn urls() {
    let t = |u: &str| parse_url(u).map(|t| (t.authority, t.path, t.tls));
    assert_eq!(t("ws://h:1/p"), Some(("h:1".into(), "/p".into(), false)));
    assert_eq!(t("ws://h/p"), Some(("h:80".into(), "/p".into(), false)));
    assert_eq!(t("wss://h/p"), Some(("h:443".into(), "/p".into(), true)));
    assert_eq!(t("https://h"), Some(("h:443".into(), "/".into(), true)));
    assert_eq!(
        t("http://h:8/a/b?c"),
        Some(("h:8".into(), "/a/b?c".into(), false))
    );
    assert_eq!(
        t("ws://[::1]/p"),
        Some(("[::1]:80".into(), "/p".into(), false))
    );
    assert_eq!(
        t("ws://[::1]:7/p"),
        Some(("[::1]:7".into(), "/p".into(), false))
    );
    assert_eq!(t("tcp://h:9"), Some(("h:9".into(), "/".into(), false)));
    assert_eq!(t("tls://h:9"), Some(("h:9".into(), "/".into(), true)));
    assert_eq!(parse_url("wss://[::1]/p").unwrap().host, "::1");
    assert_eq!(t("tcp://h"), None, "raw TCP has no default port");
    assert_eq!(t("ws:///x"), None);
    assert_eq!(t("ftp://h:1/"), None);
    assert_eq!(t("ws://user@h/"), None);
}

#[test]
fn an_unreachable_hub_is_an_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for scheme in ["tcp", "ws"] {
        let url = match scheme {
            "tcp" => format!("tcp://127.0.0.1:{port}"),
            _ => format!("ws://127.0.0.1:{port}/"),
        };
        let e = crate::net::block_on(connect(&url, Duration::from_secs(2)))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{url}: {e}");
    }
}
