//! WebSocket transport against a real hub on 127.0.0.1, and the test harness the HTTP
//! tests share.

use std::net::{TcpListener, TcpStream};
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
fn garbage_gets_an_error_and_a_close_while_others_sync() {
    let hub = Hub::start();
    let url = hub.url("ws");
    let mut bad = WsTransport::connect(&url, Duration::from_secs(5)).unwrap();
    bad.send(&garbage_frame()).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        match bad.recv(&mut got, Duration::from_millis(200)) {
            Ok(_) if Instant::now() < deadline => {}
            Ok(_) => break false,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
                break true;
            }
        }
    };
    assert!(closed, "the hub kept the connection open");
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

/// A message that arrives in pieces across many receive timeouts is put together whole.
#[test]
fn a_message_split_across_timeouts_arrives_whole() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let server = {
        let big = big.clone();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut t = WsTransport::accept(stream).unwrap();
            // As the driver does once a session's handshake completes.
            t.set_max_message(crate::frame::DEFAULT_MAX_FRAME + 4);
            let mut buf = Vec::new();
            let mut empty_polls = 0;
            while buf.len() < big.len() {
                match t.recv(&mut buf, Duration::from_millis(1)).unwrap() {
                    0 => empty_polls += 1,
                    n => assert_eq!(n, big.len(), "a message arrived in part"),
                }
            }
            assert_eq!(buf, big);
            t.send(b"done").unwrap();
            t.close();
            empty_polls
        })
    };
    // Write the client's message by hand, slowly, so the server times out mid-message.
    let mut client =
        WsTransport::connect(&format!("ws://127.0.0.1:{port}/x"), Duration::from_secs(5)).unwrap();
    // One final binary frame, masked as a client must: FIN + binary, 64-bit length.
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut raw = vec![0x82, 0x80 | 127];
    raw.extend_from_slice(&(big.len() as u64).to_be_bytes());
    raw.extend_from_slice(&mask);
    raw.extend(big.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    {
        use std::io::Write;
        let stream: &mut TcpStream = client.socket.get_mut();
        for chunk in raw.chunks(raw.len() / 7 + 1) {
            stream.write_all(chunk).unwrap();
            stream.flush().unwrap();
            thread::sleep(Duration::from_millis(30));
        }
    }
    let mut got = Vec::new();
    while got.is_empty() {
        client.recv(&mut got, Duration::from_secs(5)).unwrap();
    }
    assert_eq!(got, b"done");
    let empty_polls = server.join().unwrap();
    assert!(empty_polls > 5, "the message never straddled a timeout");
    // After the server's close, the client sees the end.
    let e = client
        .recv(&mut got, Duration::from_secs(5))
        .expect_err("closed");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn a_plain_get_is_told_what_this_is() {
    let hub = Hub::start();
    let mut s = TcpStream::connect(hub.addr()).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 426"), "{text}");
    assert!(text.contains("kuzu-sync hub"), "{text}");
}

#[test]
fn urls() {
    assert_eq!(authority("ws://h:1/p").unwrap(), "h:1");
    assert_eq!(authority("ws://h/p").unwrap(), "h:80");
    assert_eq!(authority("ws://[::1]/p").unwrap(), "[::1]:80");
    assert_eq!(authority("ws://[::1]:7/p").unwrap(), "[::1]:7");
    assert_eq!(authority("ws://h:9").unwrap(), "h:9");
    assert!(authority("wss://h:9/").is_err());
    assert!(authority("ws:///x").is_err());
}

#[test]
fn an_unreachable_hub_is_an_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = WsTransport::connect(&format!("ws://127.0.0.1:{port}/"), Duration::from_secs(2))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
}

/// Until the driver raises it, a server accepts no WebSocket message larger than a
/// handshake frame: tungstenite would otherwise reserve what a frame header announces.
#[test]
fn a_server_takes_only_handshake_sized_messages_until_raised() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut t = WsTransport::accept(stream).unwrap();
        let mut buf = Vec::new();
        loop {
            match t.recv(&mut buf, Duration::from_millis(50)) {
                Ok(0) => continue,
                Ok(n) => return Ok(n),
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let mut client = WsTransport::connect(
        &format!("ws://127.0.0.1:{port}/sync"),
        Duration::from_secs(5),
    )
    .unwrap();
    client
        .send(&vec![0u8; crate::frame::HANDSHAKE_MAX_FRAME + 5])
        .unwrap();
    let _ = client.flush(Duration::from_secs(5));
    let got = server.join().unwrap();
    assert!(
        matches!(&got, Err(e) if e.contains("Message too long")),
        "{got:?}"
    );
}
