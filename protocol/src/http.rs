//! HTTP push/pull transport, for networks that only let HTTP through.
//!
//! Minimal HTTP/1.1 over a keep-alive [`TcpStream`], written by hand. The client names its
//! session with a random id and polls: each `POST` carries the frames it has to send
//! (possibly none) and answers with the frames the hub has for it, waiting up to
//! `X-Kuzu-Sync-Wait-Ms` for some to arrive. Requests are numbered so that a request
//! retried after a dropped connection is answered again, not applied twice.
//!
//! ```text
//! POST /PATH HTTP/1.1
//! Host: HOST:PORT
//! Content-Type: application/octet-stream
//! Content-Length: N                 frames, concatenated (0 to just poll)
//! X-Kuzu-Sync-Session: ID           16-128 characters of [A-Za-z0-9_-]
//! X-Kuzu-Sync-Seq: S                1 for the first request of a session, then +1 each
//! X-Kuzu-Sync-Wait-Ms: W            how long the hub may wait for frames (capped at 5 s)
//! X-Kuzu-Sync-Close: 1              optional: the client ends the session
//!
//! HTTP/1.1 200 OK                   body: frames for the client, concatenated (maybe none)
//! ```
//!
//! Other answers (text bodies): `400` malformed request, `405` not a `POST`, `409` request
//! out of sequence, `410` unknown or finished session, `411`/`501` no `Content-Length`,
//! `413` body over the limit, `431` head over 16 KiB, `503` too many sessions.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::frame::DEFAULT_MAX_FRAME;
use crate::transport::Transport;

/// Header naming the session.
pub const HEADER_SESSION: &str = "X-Kuzu-Sync-Session";
/// Header numbering the requests of a session: 1, 2, 3, …
pub const HEADER_SEQ: &str = "X-Kuzu-Sync-Seq";
/// Header giving how long the hub may hold the request waiting for frames.
pub const HEADER_WAIT: &str = "X-Kuzu-Sync-Wait-Ms";
/// Header (`1`) ending the session.
pub const HEADER_CLOSE: &str = "X-Kuzu-Sync-Close";

/// Largest body, either way: the largest frame with its 4-byte length.
pub const MAX_BODY: usize = DEFAULT_MAX_FRAME + 4;
/// Largest request or response head.
const MAX_HEAD: usize = 16 << 10;
/// Longest a request is held waiting for frames.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// A session without a request for this long is over.
pub const IDLE: Duration = Duration::from_secs(60);
/// An idle keep-alive connection is closed after this long.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a request, once started, may take to arrive whole.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client waits for an answer beyond the wait it asked for.
const RESPONSE_GRACE: Duration = Duration::from_secs(60);
/// The client sends what it has buffered once it reaches this much.
const FLUSH_AT: usize = 8 << 20;
/// One answer carries whole frames up to about this much.
const REPLY_LIMIT: usize = 8 << 20;
/// The hub's session blocks in `send` while this much waits for the client.
const OUTBOUND_LIMIT: usize = 16 << 20;
/// A request is held while this much of earlier requests is not yet taken by the session.
const INBOUND_LIMIT: usize = 16 << 20;
/// Most sessions a hub keeps at once.
const MAX_SESSIONS: usize = 4096;

// ---------------------------------------------------------------------------------------
// HTTP messages
// ---------------------------------------------------------------------------------------

/// A request or response head: the start line and the headers (names lowercased).
#[derive(Debug)]
struct Head {
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (like `Connection`) has `token`.
    fn has_token(&self, name: &str, token: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The body length: `Content-Length`, 0 if absent.
    fn content_length(&self) -> Result<u64, String> {
        let mut found: Option<u64> = None;
        for (_, v) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| format!("Content-Length {v:?} is not a number"))?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length headers".into());
            }
            found = Some(n);
        }
        Ok(found.unwrap_or(0))
    }
}

#[derive(Debug)]
enum HeadError {
    Io(io::Error),
    TooLarge,
    Malformed(String),
}

impl From<io::Error> for HeadError {
    fn from(e: io::Error) -> Self {
        HeadError::Io(e)
    }
}

/// Reads a head up to its blank line. `None` at a clean end of stream before any byte.
fn read_head<R: BufRead>(r: &mut R) -> Result<Option<Head>, HeadError> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let allowed = (MAX_HEAD - total + 1) as u64;
        let n = r.by_ref().take(allowed).read_until(b'\n', &mut line)?;
        total += n;
        if total > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        if n == 0 {
            if total == 0 {
                return Ok(None);
            }
            return Err(HeadError::Io(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed in the middle of an HTTP head",
            )));
        }
        if line.pop() != Some(b'\n') {
            return Err(HeadError::Io(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed in the middle of an HTTP head",
            )));
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            // Blank lines before the start line are tolerated (RFC 9112, 2.2).
            if lines.is_empty() {
                continue;
            }
            break;
        }
        let line = String::from_utf8(line)
            .map_err(|_| HeadError::Malformed("the head is not valid UTF-8".into()))?;
        lines.push(line);
    }
    let mut lines = lines.into_iter();
    let start = lines.next().unwrap_or_default();
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(HeadError::Malformed(
                "folded header lines are not supported".into(),
            ));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HeadError::Malformed(format!("header line without colon: {line:?}")))?;
        if name.is_empty() || name.contains(|c: char| c.is_ascii_whitespace()) {
            return Err(HeadError::Malformed(format!("bad header name {name:?}")));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(Some(Head { start, headers }))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a whole response.
fn respond(w: &mut impl Write, status: u16, body: &[u8], close: bool) -> io::Result<()> {
    let content_type = if status == 200 {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\n",
        reason(status),
        body.len()
    );
    if status == 405 {
        head.push_str("Allow: POST\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

/// A session id: 16 to 128 characters of `[A-Za-z0-9_-]`.
fn valid_session_id(id: &str) -> bool {
    (16..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh, unguessable session id: 32 hex digits.
fn new_session_id() -> String {
    use sha2::{Digest, Sha256};
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = Sha256::new();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(n.to_le_bytes());
    // The standard library seeds each RandomState from the operating system's randomness.
    for i in 0..2u64 {
        let mut s = std::collections::hash_map::RandomState::new().build_hasher();
        s.write_u64(n ^ i);
        h.update(s.finish().to_le_bytes());
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// Client side: buffers the frames to send and exchanges them for the hub's on each poll.
#[derive(Debug)]
pub struct HttpClientTransport {
    url: String,
    /// `HOST:PORT` to connect to and send as `Host`.
    authority: String,
    path: String,
    session: String,
    /// The number of the last request made.
    seq: u64,
    conn: Option<Conn>,
    connect_timeout: Duration,
    /// Frames not yet sent.
    outbox: Vec<u8>,
    /// Bytes received (by a flush in `send`) not yet handed to `recv`.
    inbox: Vec<u8>,
    closed: bool,
}

impl HttpClientTransport {
    /// Prepares a session with `http://HOST:PORT/PATH` (port 80 if none is given) and opens
    /// the connection, so an unreachable hub is reported here.
    pub fn connect(url: &str, timeout: Duration) -> io::Result<Self> {
        let (authority, path) = split_url(url)?;
        let mut t = HttpClientTransport {
            url: url.to_string(),
            authority,
            path,
            session: new_session_id(),
            seq: 0,
            conn: None,
            connect_timeout: timeout.max(Duration::from_millis(1)),
            outbox: Vec::new(),
            inbox: Vec::new(),
            closed: false,
        };
        t.open()?;
        Ok(t)
    }

    /// The session id this client presents.
    pub fn session_id(&self) -> &str {
        &self.session
    }

    fn open(&mut self) -> io::Result<&mut Conn> {
        if self.conn.is_none() {
            let stream = crate::transport::connect_tcp(&self.authority, self.connect_timeout)?;
            let writer = stream.try_clone()?;
            self.conn = Some(Conn {
                reader: BufReader::with_capacity(64 << 10, stream),
                writer,
            });
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    fn eof(&self, why: &str) -> io::Error {
        io::Error::new(ErrorKind::UnexpectedEof, format!("{}: {why}", self.url))
    }

    /// One request: sends the buffered frames, returns the hub's bytes. A request that
    /// fails on the wire is retried once on a new connection (same number: the hub
    /// answers a repeated request without applying it twice).
    fn exchange(&mut self, wait: Duration, close: bool) -> io::Result<Vec<u8>> {
        self.seq += 1;
        let body = std::mem::take(&mut self.outbox);
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n{HEADER_SESSION}: {}\r\n{HEADER_SEQ}: {}\r\n\
             {HEADER_WAIT}: {}\r\n",
            self.path,
            self.authority,
            body.len(),
            self.session,
            self.seq,
            wait.as_millis()
        );
        if close {
            head.push_str(HEADER_CLOSE);
            head.push_str(": 1\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(&body);
        drop(body);
        let read_timeout = wait.min(MAX_WAIT) + RESPONSE_GRACE;
        let mut attempt = 0;
        let (status, head, body) = loop {
            attempt += 1;
            let conn = self.open()?;
            match round_trip(conn, &request, read_timeout) {
                Ok(r) => break r,
                Err(e) => {
                    self.conn = None;
                    if attempt >= 2 {
                        return Err(e);
                    }
                }
            }
        };
        if head.has_token("connection", "close") {
            self.conn = None;
        }
        match status {
            200 => Ok(body),
            410 => {
                self.closed = true;
                self.conn = None;
                Err(self.eof("the hub ended the session"))
            }
            _ => {
                self.closed = true;
                self.conn = None;
                let text = String::from_utf8_lossy(&body);
                Err(io::Error::other(format!(
                    "{}: HTTP {status} {}: {}",
                    self.url,
                    reason(status),
                    text.trim()
                )))
            }
        }
    }
}

/// `(HOST:PORT, /PATH)` of an `http://` URL.
fn split_url(url: &str) -> io::Result<(String, String)> {
    let bad = || {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("{url:?}: expected http://HOST:PORT/PATH (https is not supported)"),
        )
    };
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if authority.is_empty()
        || authority.contains('@')
        || path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(bad());
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path))
}

/// Writes `request` and reads the response: (status, head, body).
fn round_trip(
    conn: &mut Conn,
    request: &[u8],
    read_timeout: Duration,
) -> io::Result<(u16, Head, Vec<u8>)> {
    conn.writer.write_all(request)?;
    conn.writer.flush()?;
    conn.reader.get_ref().set_read_timeout(Some(read_timeout))?;
    let head = match read_head(&mut conn.reader) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the hub closed the connection without answering",
            ))
        }
        Err(HeadError::Io(e)) => return Err(e),
        Err(HeadError::TooLarge) => {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "the response head is over 16 KiB",
            ))
        }
        Err(HeadError::Malformed(why)) => {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("malformed response: {why}"),
            ))
        }
    };
    let status = head
        .start
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("not an HTTP/1.x response: {:?}", head.start),
            )
        })?;
    if head.get("transfer-encoding").is_some() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "the response uses Transfer-Encoding, which this client does not read",
        ));
    }
    let len = head
        .content_length()
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
    if len > MAX_BODY as u64 {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("a response body of {len} bytes is over the limit of {MAX_BODY}"),
        ));
    }
    let body = read_body(&mut conn.reader, len)?;
    Ok((status, head, body))
}

/// Reads a body of `len` bytes (already checked against [`MAX_BODY`]), growing the buffer
/// as bytes arrive rather than allocating what the header claims up front.
fn read_body(reader: &mut impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::with_capacity((len as usize).min(64 << 10));
    reader.take(len).read_to_end(&mut body)?;
    if (body.len() as u64) < len {
        return Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            format!(
                "the body ended after {} of its {len} bytes (Content-Length)",
                body.len()
            ),
        ));
    }
    Ok(body)
}

impl Transport for HttpClientTransport {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.closed {
            return Err(self.eof("the session is closed"));
        }
        if !self.outbox.is_empty() && self.outbox.len() + frame.len() > FLUSH_AT {
            let got = self.exchange(Duration::ZERO, false)?;
            self.inbox.extend_from_slice(&got);
        }
        self.outbox.extend_from_slice(frame);
        Ok(())
    }

    /// Frames go out with the next poll, which `recv` makes.
    fn flush(&mut self, _timeout: Duration) -> io::Result<bool> {
        Ok(true)
    }

    /// Each wait is a held HTTP request: poll less often than a socket would.
    fn poll_interval(&self) -> Option<Duration> {
        Some(Duration::from_millis(250))
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize> {
        if self.closed {
            return Err(self.eof("the session is closed"));
        }
        if self.inbox.is_empty() || !self.outbox.is_empty() {
            let wait = if self.inbox.is_empty() {
                timeout
            } else {
                Duration::ZERO
            };
            let got = self.exchange(wait, false)?;
            self.inbox.extend_from_slice(&got);
        }
        let n = self.inbox.len();
        buf.append(&mut self.inbox);
        Ok(n)
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        // Deliver what is buffered (a last ack, an error) with the goodbye.
        let _ = self.exchange(Duration::ZERO, true);
        self.closed = true;
        if let Some(conn) = self.conn.take() {
            let _ = conn.writer.shutdown(Shutdown::Both);
        }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

// ---------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------

/// One session's queues, shared by the hub's request handlers and the session's transport.
#[derive(Debug)]
struct Cell {
    id: String,
    state: Mutex<CellState>,
    cond: Condvar,
}

#[derive(Debug)]
struct CellState {
    /// From the client, not yet taken by the session.
    inbound: Vec<u8>,
    /// From the session, not yet answered to the client: whole frames.
    outbound: VecDeque<Vec<u8>>,
    outbound_bytes: usize,
    /// The client said goodbye, or stopped polling.
    client_gone: bool,
    /// The session closed its transport (or dropped it).
    server_closed: bool,
    /// The server side is closed and everything it sent has been answered.
    finished: bool,
    last_seen: Instant,
    /// The last request's number and answer (for a retried request).
    last_seq: u64,
    last_reply: Vec<u8>,
    reply_ready: bool,
}

impl Cell {
    fn new(id: String) -> Self {
        Cell {
            id,
            state: Mutex::new(CellState {
                inbound: Vec::new(),
                outbound: VecDeque::new(),
                outbound_bytes: 0,
                client_gone: false,
                server_closed: false,
                finished: false,
                last_seen: Instant::now(),
                last_seq: 0,
                last_reply: Vec::new(),
                reply_ready: true,
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a change, at most `d`.
    fn wait<'a>(&self, g: MutexGuard<'a, CellState>, d: Duration) -> MutexGuard<'a, CellState> {
        self.cond
            .wait_timeout(g, d)
            .unwrap_or_else(|p| p.into_inner())
            .0
    }
}

#[derive(Debug, Default)]
struct RegistryInner {
    sessions: Mutex<HashMap<String, Arc<Cell>>>,
    shutdown: AtomicBool,
}

/// Server side: the hub's HTTP sessions, by session id.
#[derive(Debug, Clone, Default)]
pub struct HttpRegistry {
    inner: Arc<RegistryInner>,
}

/// The server side transport of one HTTP session.
#[derive(Debug)]
pub struct HttpServerTransport {
    cell: Arc<Cell>,
    registry: HttpRegistry,
    name: String,
}

/// What the connection does after a request.
enum Next {
    KeepAlive,
    Close,
}

/// Why a request got no 200 (or 410).
enum Fail {
    /// Answer this status and text, close the connection and report it.
    Refuse(u16, String),
    /// The connection failed.
    Io(io::Error),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl HttpRegistry {
    /// Serves the HTTP request(s) on `stream` (whose first bytes are `POST`). A request for a
    /// new session calls `spawn` with the server side transport of that session.
    ///
    /// Returns when the client closes the connection, after 30 s without a request, after
    /// [`HttpRegistry::shutdown`], or with an error after answering a bad request.
    pub fn handle(&self, stream: TcpStream, spawn: &dyn Fn(Box<dyn Transport>)) -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::with_capacity(64 << 10, stream);
        loop {
            if !self.await_request(&mut reader)? {
                return Ok(());
            }
            reader.get_ref().set_read_timeout(Some(REQUEST_TIMEOUT))?;
            let result = match read_head(&mut reader) {
                Ok(Some(head)) => self.serve(&head, &mut reader, &mut writer, &peer, spawn),
                Ok(None) => return Ok(()),
                Err(HeadError::Io(e)) => return Err(e),
                Err(HeadError::TooLarge) => Err(Fail::Refuse(
                    431,
                    format!("the request head is over {MAX_HEAD} bytes"),
                )),
                Err(HeadError::Malformed(why)) => {
                    Err(Fail::Refuse(400, format!("malformed request: {why}")))
                }
            };
            match result {
                Ok(Next::KeepAlive) => {}
                Ok(Next::Close) => return Ok(()),
                Err(Fail::Io(e)) => return Err(e),
                Err(Fail::Refuse(status, text)) => {
                    // The rest of the request may be unread: answer and close.
                    respond(&mut writer, status, format!("{text}\n").as_bytes(), true)?;
                    let _ = writer.shutdown(Shutdown::Write);
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("http://{peer}: HTTP {status} {}: {text}", reason(status)),
                    ));
                }
            }
        }
    }

    /// Ends every keep-alive connection at its next idle moment (within a second) and
    /// holds no more requests. For a hub that stops.
    pub fn shutdown(&self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        for cell in self.sessions().values() {
            cell.cond.notify_all();
        }
    }

    /// How many sessions the registry holds.
    pub fn len(&self) -> usize {
        self.sessions().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<Cell>>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn remove(&self, cell: &Arc<Cell>) {
        let mut map = self.sessions();
        if map.get(&cell.id).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            map.remove(&cell.id);
        }
    }

    /// Waits until the next request starts. False: the connection is over.
    fn await_request(&self, reader: &mut BufReader<TcpStream>) -> io::Result<bool> {
        if !reader.buffer().is_empty() {
            return Ok(true);
        }
        let start = Instant::now();
        let mut byte = [0u8; 1];
        loop {
            if self.inner.shutdown.load(Ordering::SeqCst) || start.elapsed() > KEEP_ALIVE {
                return Ok(false);
            }
            reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(1)))?;
            match reader.get_ref().peek(&mut byte) {
                Ok(0) => return Ok(false),
                Ok(_) => return Ok(true),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves one request whose head has been read.
    fn serve(
        &self,
        head: &Head,
        reader: &mut BufReader<TcpStream>,
        writer: &mut TcpStream,
        peer: &str,
        spawn: &dyn Fn(Box<dyn Transport>),
    ) -> Result<Next, Fail> {
        let bad = |text: String| Fail::Refuse(400, text);
        let mut parts = head.start.split_whitespace();
        let (method, _target, version) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
            _ => return Err(bad(format!("bad request line {:?}", head.start))),
        };
        let keep_alive = match version {
            "HTTP/1.1" => !head.has_token("connection", "close"),
            "HTTP/1.0" => head.has_token("connection", "keep-alive"),
            _ => return Err(bad(format!("unsupported HTTP version {version:?}"))),
        };
        if method != "POST" {
            return Err(Fail::Refuse(
                405,
                format!(
                    "method {method} is not allowed: this kuzu-sync hub takes POST (HTTP \
                     push/pull) or a WebSocket upgrade (GET)"
                ),
            ));
        }
        if head.get("transfer-encoding").is_some() {
            return Err(Fail::Refuse(
                501,
                "Transfer-Encoding is not supported: send the body with Content-Length".into(),
            ));
        }
        let len = head.content_length().map_err(|e| Fail::Refuse(400, e))?;
        if len > MAX_BODY as u64 {
            return Err(Fail::Refuse(
                413,
                format!("a body of {len} bytes is over the limit of {MAX_BODY} bytes"),
            ));
        }
        if head.has_token("expect", "100-continue") {
            let _ = writer
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .and_then(|_| writer.flush());
        }
        let body = read_body(reader, len)?;

        // The body has been read: from here on the connection stays usable.
        let id = head
            .get(HEADER_SESSION)
            .filter(|id| valid_session_id(id))
            .ok_or_else(|| {
                bad(format!(
                    "missing or invalid {HEADER_SESSION} header (16-128 characters of \
                     [A-Za-z0-9_-])"
                ))
            })?
            .to_string();
        let seq: u64 = head
            .get(HEADER_SEQ)
            .and_then(|s| s.parse().ok())
            .filter(|&s| s >= 1)
            .ok_or_else(|| bad(format!("missing or invalid {HEADER_SEQ} header")))?;
        let wait = match head.get(HEADER_WAIT) {
            None => Duration::ZERO,
            Some(w) => Duration::from_millis(
                w.parse()
                    .map_err(|_| bad(format!("invalid {HEADER_WAIT} header {w:?}")))?,
            ),
        }
        .min(MAX_WAIT);
        let close = head.get(HEADER_CLOSE).is_some_and(|v| v.trim() == "1");

        let cell = match self.session(&id, seq, close, peer, spawn)? {
            Some(cell) => cell,
            None => return self.gone(writer, keep_alive),
        };
        let reply = match self.exchange(&cell, seq, body, wait, close)? {
            Some(reply) => reply,
            None => return self.gone(writer, keep_alive),
        };
        respond(writer, 200, &reply, !keep_alive)?;
        Ok(if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        })
    }

    /// Answers 410: the session is unknown or over.
    fn gone(&self, writer: &mut TcpStream, keep_alive: bool) -> Result<Next, Fail> {
        let text = b"unknown or finished session: start a new one\n";
        respond(writer, 410, text, !keep_alive)?;
        Ok(if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        })
    }

    /// The session's cell, made (and its session spawned) for the first request of a new
    /// id. None: unknown or finished (410).
    fn session(
        &self,
        id: &str,
        seq: u64,
        close: bool,
        peer: &str,
        spawn: &dyn Fn(Box<dyn Transport>),
    ) -> Result<Option<Arc<Cell>>, Fail> {
        let cell = {
            let mut map = self.sessions();
            if let Some(cell) = map.get(id) {
                return Ok(Some(cell.clone()));
            }
            if seq != 1 || close {
                return Ok(None);
            }
            // Forget sessions whose client stopped polling.
            map.retain(|_, c| c.lock().last_seen.elapsed() <= IDLE);
            if map.len() >= MAX_SESSIONS {
                return Err(Fail::Refuse(
                    503,
                    format!("the hub holds {MAX_SESSIONS} HTTP sessions: try again later"),
                ));
            }
            let cell = Arc::new(Cell::new(id.to_string()));
            map.insert(id.to_string(), cell.clone());
            cell
        };
        spawn(Box::new(HttpServerTransport {
            cell: cell.clone(),
            registry: self.clone(),
            name: format!("http://{peer} (session {})", &id[..8]),
        }));
        Ok(Some(cell))
    }

    /// Hands the request's frames to the session and waits for its answer. None: the
    /// session is over (410).
    fn exchange(
        &self,
        cell: &Arc<Cell>,
        seq: u64,
        body: Vec<u8>,
        wait: Duration,
        close: bool,
    ) -> Result<Option<Vec<u8>>, Fail> {
        let mut st = cell.lock();
        st.last_seen = Instant::now();
        if seq == st.last_seq {
            // A retry after a lost answer: answer the same again.
            let deadline = Instant::now() + MAX_WAIT + REQUEST_TIMEOUT;
            while !st.reply_ready && Instant::now() < deadline {
                st = cell.wait(st, deadline.saturating_duration_since(Instant::now()));
            }
            if !st.reply_ready {
                return Err(Fail::Refuse(
                    503,
                    "the first attempt of this request is still being answered".into(),
                ));
            }
            return Ok(Some(st.last_reply.clone()));
        }
        if seq != st.last_seq + 1 {
            return Err(Fail::Refuse(
                409,
                format!(
                    "request {seq} is out of sequence: the session expects {}",
                    st.last_seq + 1
                ),
            ));
        }
        if st.finished || (st.server_closed && st.outbound.is_empty()) {
            drop(st);
            self.remove(cell);
            return Ok(None);
        }
        st.last_seq = seq;
        st.reply_ready = false;
        st.last_reply = Vec::new();
        // Hold the request while the session has much to take, unless it has something to
        // answer (it may be blocked sending: holding then would deadlock).
        let hold_until = Instant::now() + REQUEST_TIMEOUT;
        while st.inbound.len() > INBOUND_LIMIT
            && st.outbound.is_empty()
            && !st.server_closed
            && !st.client_gone
            && Instant::now() < hold_until
        {
            st = cell.wait(st, Duration::from_millis(100));
        }
        if !st.server_closed {
            st.inbound.extend_from_slice(&body);
        }
        if close {
            st.client_gone = true;
        }
        cell.cond.notify_all();
        let deadline = Instant::now() + if close { Duration::ZERO } else { wait };
        while st.outbound.is_empty()
            && !st.server_closed
            && !self.inner.shutdown.load(Ordering::SeqCst)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = cell.wait(st, left);
        }
        let mut reply = Vec::new();
        while let Some(frame) = st.outbound.front() {
            if !reply.is_empty() && reply.len() + frame.len() > REPLY_LIMIT {
                break;
            }
            let frame = st.outbound.pop_front().expect("a frame is there");
            st.outbound_bytes -= frame.len();
            reply.extend_from_slice(&frame);
        }
        if close || (st.server_closed && st.outbound.is_empty()) {
            st.finished = true;
        }
        st.last_reply = reply.clone();
        st.reply_ready = true;
        st.last_seen = Instant::now();
        cell.cond.notify_all();
        Ok(Some(reply))
    }
}

impl HttpServerTransport {
    fn eof(&self, why: &str) -> io::Error {
        io::Error::new(ErrorKind::UnexpectedEof, format!("{}: {why}", self.name))
    }
}

impl Transport for HttpServerTransport {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let cell = &self.cell;
        let mut st = cell.lock();
        loop {
            if st.client_gone {
                return Err(self.eof("the client ended the session"));
            }
            if st.server_closed {
                return Err(self.eof("the session is closed"));
            }
            if st.outbound.is_empty() || st.outbound_bytes + frame.len() <= OUTBOUND_LIMIT {
                st.outbound.push_back(frame.to_vec());
                st.outbound_bytes += frame.len();
                cell.cond.notify_all();
                return Ok(());
            }
            if st.last_seen.elapsed() > IDLE {
                st.client_gone = true;
                return Err(self.eof("the client stopped polling"));
            }
            st = cell.wait(st, Duration::from_secs(1));
        }
    }

    /// Frames are handed to the client's next poll.
    fn flush(&mut self, _timeout: Duration) -> io::Result<bool> {
        Ok(true)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize> {
        let cell = &self.cell;
        let deadline = Instant::now() + timeout;
        let mut st = cell.lock();
        loop {
            if !st.inbound.is_empty() {
                let n = st.inbound.len();
                buf.append(&mut st.inbound);
                cell.cond.notify_all();
                return Ok(n);
            }
            if st.client_gone {
                return Err(self.eof("the client ended the session"));
            }
            if st.last_seen.elapsed() > IDLE {
                st.client_gone = true;
                return Err(self.eof(&format!("no request for {} s", IDLE.as_secs())));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            st = cell.wait(st, left);
        }
    }

    fn close(&mut self) {
        let mut st = self.cell.lock();
        st.server_closed = true;
        st.inbound = Vec::new();
        self.cell.cond.notify_all();
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Drop for HttpServerTransport {
    fn drop(&mut self) {
        self.close();
        let gone = self.cell.lock().client_gone;
        if gone {
            self.registry.remove(&self.cell);
        }
    }
}

#[cfg(test)]
mod tests;
