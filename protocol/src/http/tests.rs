//! HTTP push/pull transport: against a real hub on 127.0.0.1, at the HTTP level by hand,
//! and the transports alone over a bare registry.

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread;

use kuzu_sync_engine::sync::{Hello, Message, SessionConfig, PROTOCOL_VERSION};
use kuzu_sync_engine::VersionVector;

use super::*;
use crate::frame::Encoder;
use crate::net::{self, no_events};
use crate::ws::tests::{dump, garbage_frame, messages, replica, schema_and_users, Hub};

/// A raw keep-alive connection to a hub.
fn conn(addr: &str) -> Conn {
    let stream = TcpStream::connect(addr).unwrap();
    Conn {
        reader: BufReader::new(stream.try_clone().unwrap()),
        writer: stream,
    }
}

/// Sends a request made of `head` (without its blank line) and `body`.
fn request(c: &mut Conn, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut raw = format!("{head}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    raw.extend_from_slice(body);
    let (status, _, body) = round_trip(c, &raw, Duration::from_secs(20)).unwrap();
    (status, body)
}

fn poll_head(session: &str, seq: u64, wait_ms: u64) -> String {
    format!(
        "POST /sync HTTP/1.1\r\nHost: x\r\n{HEADER_SESSION}: {session}\r\n{HEADER_SEQ}: {seq}\r\n\
         {HEADER_WAIT}: {wait_ms}"
    )
}

fn hello_frame(peer: &str) -> Vec<u8> {
    let hello = Message::Hello(Hello {
        peer: peer.into(),
        protocol_version: PROTOCOL_VERSION.into(),
        schema_version: 0,
        capabilities: vec![],
        auth_token: None,
        version_vector: VersionVector::new(),
        sync_point: None,
        compacted: Default::default(),
    });
    Encoder::default().encode(&hello).unwrap().0
}

#[test]
fn one_shot_sync_over_http() {
    crate::ws::tests::one_shot_round_trip("http");
}

#[test]
fn live_sync_over_http() {
    crate::ws::tests::live("http");
}

#[test]
fn garbage_gets_an_error_then_gone_while_others_sync() {
    let hub = Hub::start();
    let mut c = conn(&hub.addr());
    let id = new_session_id();
    let (status, body) = request(&mut c, &poll_head(&id, 1, 3_000), &garbage_frame());
    assert_eq!(status, 200);
    let msgs = messages(&body);
    assert!(
        matches!(msgs.as_slice(), [Message::Error(reason)] if reason.contains("not a valid message")),
        "{msgs:?}"
    );
    // The session is over; the connection still serves.
    // (The hub may answer the error before its session has closed: then once more, empty.)
    let mut seq = 2;
    loop {
        let (status, body) = request(&mut c, &poll_head(&id, seq, 100), b"");
        if status == 410 {
            break;
        }
        assert_eq!((status, body), (200, vec![]));
        assert!(seq < 50, "the session never ended");
        seq += 1;
    }
    // Another client syncs.
    let a = replica("a");
    a.write(schema_and_users(5)).unwrap();
    let report =
        net::sync_once(&a, &hub.url("http"), SessionConfig::default(), no_events()).unwrap();
    assert!(report.synced);
    assert_eq!(dump(&hub.shared), dump(&a));
}

#[test]
fn bad_requests_get_a_clear_status_and_a_closed_connection() {
    let hub = Hub::start();
    let id = new_session_id();
    let cases: Vec<(String, u16, &str)> = vec![
        (
            format!(
                "POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {id}\r\n{HEADER_SEQ}: 1\r\n\
                 Content-Length: 99999999999\r\n\r\n"
            ),
            413,
            "over the limit",
        ),
        (
            "POST /sync HTTP/1.1\r\nContent-Length: 0\r\n\r\n".into(),
            400,
            HEADER_SESSION,
        ),
        (
            format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: short\r\n{HEADER_SEQ}: 1\r\n\r\n"),
            400,
            HEADER_SESSION,
        ),
        (
            format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {id}\r\n\r\n"),
            400,
            HEADER_SEQ,
        ),
        (
            "POST /sync HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            501,
            "Content-Length",
        ),
        (
            "POST /sync HTTP/1.1\r\nno colon here\r\n\r\n".into(),
            400,
            "malformed",
        ),
        (
            format!(
                "POST /sync HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20_000)
            ),
            431,
            "head",
        ),
        ("POST /sync SPDY/3\r\n\r\n".into(), 400, "version"),
        (
            format!(
                "POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {id}\r\n{HEADER_SEQ}: 1\r\n\
                 Content-Length: 0\r\n\r\nDELETE / HTTP/1.1\r\n\r\n"
            ),
            405,
            "POST",
        ),
    ];
    for (raw, want, says) in cases {
        let mut s = TcpStream::connect(hub.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(raw.as_bytes()).unwrap();
        let mut text = Vec::new();
        let _ = s.read_to_end(&mut text); // the hub closes after a refusal
        let text = String::from_utf8_lossy(&text);
        let last = text
            .rfind("HTTP/1.1 ")
            .unwrap_or_else(|| panic!("{raw:?}: {text}"));
        let status: u16 = text[last + 9..last + 12].parse().unwrap();
        assert_eq!(status, want, "{raw:?} got {text}");
        assert!(text[last..].contains(says), "{raw:?} got {text}");
        assert!(text[last..].contains("Connection: close"), "{text}");
    }
    // The hub still serves.
    let a = replica("a");
    a.write(schema_and_users(2)).unwrap();
    assert!(
        net::sync_once(&a, &hub.url("http"), SessionConfig::default(), no_events())
            .unwrap()
            .synced
    );
}

#[test]
fn a_retried_request_is_answered_again_not_applied_twice() {
    let hub = Hub::start();
    hub.shared.write(schema_and_users(3)).unwrap();
    let id = new_session_id();
    let mut c = conn(&hub.addr());
    let (status, first) = request(&mut c, &poll_head(&id, 1, 3_000), &hello_frame("a"));
    assert_eq!(status, 200);
    let msgs = messages(&first);
    assert!(
        matches!(msgs.first(), Some(Message::Welcome(_))),
        "{msgs:?}"
    );
    // The same request again, on another connection, as after a lost answer.
    let mut c2 = conn(&hub.addr());
    let (status, again) = request(&mut c2, &poll_head(&id, 1, 3_000), &hello_frame("a"));
    assert_eq!(status, 200);
    assert_eq!(again, first);
    // A skipped number is refused.
    let (status, _, body) = round_trip(
        &mut c2,
        format!("{}\r\nContent-Length: 0\r\n\r\n", poll_head(&id, 5, 0)).as_bytes(),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    // The session went on unharmed: a second Hello would have been an error.
    let (status, body) = request(&mut c, &poll_head(&id, 2, 200), b"");
    assert_eq!(status, 200);
    assert!(
        !messages(&body)
            .iter()
            .any(|m| matches!(m, Message::Error(_))),
        "{:?}",
        messages(&body)
    );
}

/// The transports alone, over a registry served on a bare listener.
#[test]
fn client_and_server_transports_exchange_and_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/p", listener.local_addr().unwrap());
    let registry = HttpRegistry::default();
    let (tx, rx) = mpsc::channel::<Box<dyn Transport>>();
    {
        let registry = registry.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let (registry, tx) = (registry.clone(), tx.clone());
                thread::spawn(move || {
                    let spawn = |t: Box<dyn Transport>| tx.send(t).unwrap();
                    let _ = registry.handle(stream.unwrap(), &spawn);
                });
            }
        });
    }
    let recv_all = |t: &mut dyn Transport, want: usize| {
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while buf.len() < want && Instant::now() < deadline {
            t.recv(&mut buf, Duration::from_millis(50)).unwrap();
        }
        buf
    };

    let mut client = HttpClientTransport::connect(&url, Duration::from_secs(5)).unwrap();
    assert_eq!(client.describe(), url);
    client.send(b"one").unwrap();
    client.send(b"two").unwrap();
    let mut nothing = Vec::new();
    assert_eq!(
        client
            .recv(&mut nothing, Duration::from_millis(10))
            .unwrap(),
        0
    );
    let mut server = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(server.describe().starts_with("http://127.0.0.1:"));
    assert_eq!(recv_all(&mut *server, 6), b"onetwo");
    assert_eq!(registry.len(), 1);

    // Server to client; a large burst comes in several answers.
    let big = vec![7u8; 3 << 20];
    for _ in 0..4 {
        server.send(&big).unwrap();
    }
    server.send(b"end").unwrap();
    let got = recv_all(&mut client, 4 * big.len() + 3);
    assert_eq!(got.len(), 4 * big.len() + 3);
    assert!(got.ends_with(b"end"));

    // The server closes: the client gets what was queued, then the end.
    server.send(b"bye").unwrap();
    server.close();
    assert_eq!(recv_all(&mut client, 3), b"bye");
    let e = client
        .recv(&mut Vec::new(), Duration::from_millis(10))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    drop(server);
    assert!(registry.is_empty());

    // A client that closes: the server sees what it sent last, then the end.
    let mut client = HttpClientTransport::connect(&url, Duration::from_secs(5)).unwrap();
    client.send(b"first").unwrap();
    client.recv(&mut Vec::new(), Duration::ZERO).unwrap();
    let mut server = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    client.send(b"last").unwrap();
    client.close();
    assert_eq!(recv_all(&mut *server, 9), b"firstlast");
    let e = server
        .recv(&mut Vec::new(), Duration::from_millis(10))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "{e}");
    assert!(server.send(b"late").is_err());
    drop(server);
    assert!(registry.is_empty());
    registry.shutdown();
}

#[test]
fn urls_and_ids() {
    assert_eq!(
        split_url("http://h:1/a/b?c").unwrap(),
        ("h:1".to_string(), "/a/b?c".to_string())
    );
    assert_eq!(
        split_url("http://h").unwrap(),
        ("h:80".to_string(), "/".to_string())
    );
    assert_eq!(
        split_url("http://[::1]/x").unwrap(),
        ("[::1]:80".to_string(), "/x".to_string())
    );
    assert!(split_url("https://h/").is_err());
    assert!(split_url("http:///x").is_err());
    let (a, b) = (new_session_id(), new_session_id());
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
    assert!(valid_session_id(&a));
    assert!(!valid_session_id("abc"));
    assert!(!valid_session_id("0123456789abcdef 0123"));
}

#[test]
fn an_unreachable_hub_is_an_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e =
        HttpClientTransport::connect(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2))
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}
