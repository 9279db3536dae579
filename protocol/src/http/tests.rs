//! HTTP push/pull: against a real hub on 127.0.0.1, through the client link and by hand at
//! the HTTP level.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use kuzu_sync_engine::sync::{Hello, Message, SessionConfig, PROTOCOL_VERSION};
use kuzu_sync_engine::VersionVector;

use super::*;
use crate::frame::Encoder;
use crate::link::tests::{dump, garbage_frame, messages, replica, schema_and_users, Hub};
use crate::net::{self, no_events};

/// One request on a fresh connection: `(status, head, body)`.
fn request(addr: &str, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut raw = format!(
        "{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    s.write_all(&raw).unwrap();
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8_lossy(&all[..end]).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head, all[end + 4..].to_vec())
}

fn push_head(session: &str, seq: u64) -> String {
    format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {session}\r\n{HEADER_SEQ}: {seq}")
}

fn poll_head(session: &str, poll: u64, wait_ms: u64) -> String {
    format!(
        "POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {session}\r\n{HEADER_POLL}: {poll}\r\n\
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
    crate::link::tests::one_shot_round_trip("http");
}

#[test]
fn live_sync_over_http() {
    crate::link::tests::live("http");
}

#[test]
fn garbage_gets_an_error_then_gone_while_others_sync() {
    let hub = Hub::start();
    let id = new_session_id();
    let (status, _, _) = request(&hub.addr(), &push_head(&id, 1), &garbage_frame());
    assert_eq!(status, 200);
    let (status, _, body) = request(&hub.addr(), &poll_head(&id, 1, 5_000), b"");
    assert_eq!(status, 200);
    let msgs = messages(&body);
    assert!(
        matches!(msgs.as_slice(), [Message::Error(reason)] if reason.contains("not a valid message")),
        "{msgs:?}"
    );
    // The session is over: the next poll is told so.
    let mut poll = 2;
    loop {
        let (status, _, body) = request(&hub.addr(), &poll_head(&id, poll, 100), b"");
        if status == 410 {
            break;
        }
        assert_eq!((status, body), (200, vec![]));
        assert!(poll < 50, "the session never ended");
        poll += 1;
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
fn bad_requests_get_a_clear_status() {
    let hub = Hub::start();
    let id = new_session_id();
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (
            push_head(&new_session_id(), 1),
            vec![0; MAX_BODY + 1],
            413,
            "over the limit",
        ),
        ("POST /sync HTTP/1.1".into(), vec![], 400, HEADER_SESSION),
        (
            format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: short\r\n{HEADER_SEQ}: 1"),
            vec![],
            400,
            HEADER_SESSION,
        ),
        (
            format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {id}"),
            vec![],
            400,
            "exactly one",
        ),
        (
            format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {id}\r\n{HEADER_SEQ}: x"),
            vec![],
            400,
            "not a number",
        ),
        (
            format!("POST /sync HTTP/1.1\r\n{HEADER_SESSION}: {id}\r\n{HEADER_SEQ}: 7"),
            vec![],
            410,
            "unknown",
        ),
        ("DELETE /sync HTTP/1.1".into(), vec![], 405, "POST"),
        ("GET / HTTP/1.1".into(), vec![], 426, "kuzu-sync hub"),
    ];
    for (head, body, want, says) in cases {
        let (status, _, text) = request(&hub.addr(), &head, &body);
        let text = String::from_utf8_lossy(&text);
        assert_eq!(status, want, "{head:?} got {text}");
        assert!(text.contains(says), "{head:?} got {text}");
    }
    // Malformed HTTP and an oversized head are answered by hyper, and closed.
    for raw in [
        "POST /sync HTTP/1.1\r\nno colon here\r\n\r\n".to_string(),
        format!(
            "POST /sync HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(40_000)
        ),
    ] {
        let mut s = TcpStream::connect(hub.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(raw.as_bytes());
        let (status, _, _) = read_response(&mut s);
        assert!(status == 400 || status == 431, "{status}");
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
fn a_repeated_push_is_not_applied_twice_and_a_repeated_poll_is_answered_again() {
    let hub = Hub::start();
    hub.shared.write(schema_and_users(3)).unwrap();
    let id = new_session_id();
    let addr = hub.addr();
    assert_eq!(request(&addr, &push_head(&id, 1), &hello_frame("a")).0, 200);
    let (status, _, first) = request(&addr, &poll_head(&id, 1, 5_000), b"");
    assert_eq!(status, 200);
    let msgs = messages(&first);
    assert!(
        matches!(msgs.first(), Some(Message::Welcome(_))),
        "{msgs:?}"
    );
    // The same poll again, as after a lost answer: the same answer.
    let (status, _, again) = request(&addr, &poll_head(&id, 1, 5_000), b"");
    assert_eq!(status, 200);
    assert_eq!(again, first);
    // The same push again: acknowledged, not applied (a second Hello would be an error).
    assert_eq!(request(&addr, &push_head(&id, 1), &hello_frame("a")).0, 200);
    // Skipped numbers are refused.
    let (status, _, body) = request(&addr, &push_head(&id, 5), b"");
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let (status, _, body) = request(&addr, &poll_head(&id, 5, 0), b"");
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    // The session went on unharmed.
    let (status, _, body) = request(&addr, &poll_head(&id, 2, 300), b"");
    assert_eq!(status, 200);
    assert!(
        !messages(&body)
            .iter()
            .any(|m| matches!(m, Message::Error(_))),
        "{:?}",
        messages(&body)
    );
}

/// A held poll is answered as soon as the hub has something for the client: no timer.
#[test]
fn a_held_poll_returns_as_soon_as_there_is_news() {
    let hub = Hub::start();
    hub.shared.write(schema_and_users(3)).unwrap();
    let id = new_session_id();
    let addr = hub.addr();
    // The poll comes first (it opens the session) and is held: nothing to say yet.
    let poller = {
        let (addr, id) = (addr.clone(), id.clone());
        thread::spawn(move || {
            let started = std::time::Instant::now();
            let (status, _, body) = request(&addr, &poll_head(&id, 1, 20_000), b"");
            (status, messages(&body), started.elapsed())
        })
    };
    thread::sleep(Duration::from_millis(500));
    assert_eq!(request(&addr, &push_head(&id, 1), &hello_frame("a")).0, 200);
    let (status, msgs, took) = poller.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        matches!(msgs.first(), Some(Message::Welcome(_))),
        "{msgs:?}"
    );
    // Answered when the Welcome existed, not when the 20 s wait ran out.
    assert!(
        took < Duration::from_secs(10),
        "the held poll took {took:?}"
    );
}

#[test]
fn ids() {
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
    let e = crate::net::block_on(crate::link::connect(
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_secs(2),
    ))
    .unwrap()
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
}
