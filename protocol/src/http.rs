//! HTTP push/pull, for networks that only let HTTP through: hyper on both sides.
//!
//! A client names its session with a random id and uses two kinds of `POST`, each on its
//! own keep-alive connection, so that sending never waits for a held poll:
//!
//! ```text
//! POST /PATH HTTP/1.1                   a push: frames for the hub
//! X-Kuzu-Sync-Session: ID               16-128 characters of [A-Za-z0-9_-]
//! X-Kuzu-Sync-Seq: S                    1 for the first push of a session, then +1 each
//! X-Kuzu-Sync-Close: 1                  optional: the client ends the session
//! (body: frames, concatenated)          answer: 200, empty, once the hub has the frames
//!
//! POST /PATH HTTP/1.1                   a poll: frames for the client
//! X-Kuzu-Sync-Session: ID
//! X-Kuzu-Sync-Poll: P                   1 for the first poll, then +1 each
//! X-Kuzu-Sync-Wait-Ms: W                how long the hub may hold it (capped at 25 s)
//! (no body)                             answer: 200, frames (maybe none)
//! ```
//!
//! The hub holds a poll until it has frames for the client (or the wait ends), so a
//! change reaches a polling client as soon as it exists. Numbers make retries safe: a
//! push repeated after a dropped connection is acknowledged without being applied again,
//! and a poll repeated gets the same answer again (asking for poll `P+1` confirms the
//! answer to `P`). Other answers (text bodies): `400` malformed request, `405` not a
//! `POST`, `409` out of sequence, `410` unknown or finished session, `413` body over the
//! limit, `503` too many sessions or connections.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::link::{Link, Progress, Target};

/// Header naming the session.
pub const HEADER_SESSION: &str = "x-kuzu-sync-session";
/// Header numbering the pushes of a session: 1, 2, 3, …
pub const HEADER_SEQ: &str = "x-kuzu-sync-seq";
/// Header numbering the polls of a session: 1, 2, 3, …
pub const HEADER_POLL: &str = "x-kuzu-sync-poll";
/// Header giving how long the hub may hold a poll waiting for frames.
pub const HEADER_WAIT: &str = "x-kuzu-sync-wait-ms";
/// Header (`1`) ending the session.
pub const HEADER_CLOSE: &str = "x-kuzu-sync-close";

/// Largest body, either way. Bodies carry the frame stream as bytes (a frame may span
/// bodies), so any frame fits, and a body crosses a slow link well within its deadline.
pub const MAX_BODY: usize = 1 << 20;
/// Largest push body before the session's handshake completes (as for frames on the
/// other transports).
pub const HANDSHAKE_MAX_BODY: usize = crate::frame::HANDSHAKE_MAX_FRAME + 4;
/// How long a push's body may take to arrive once its headers did.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a poll is held waiting for frames.
pub const MAX_WAIT: Duration = Duration::from_secs(25);
/// A session without a request for this long is over.
pub const IDLE: Duration = Duration::from_secs(60);
/// How long a client waits for an answer beyond the wait it asked for.
const RESPONSE_GRACE: Duration = Duration::from_secs(60);
/// One answer carries at most this many bytes of the frame stream.
const REPLY_LIMIT: usize = MAX_BODY;
/// The hub's session waits to send while this much waits for the client.
const OUTBOUND_LIMIT: usize = 16 << 20;
/// A push is held while this much of earlier pushes is not yet taken by the session.
const INBOUND_LIMIT: usize = 16 << 20;
/// How long a push may be held for that.
const PUSH_HOLD: Duration = Duration::from_secs(30);

/// A session id: 16 to 128 characters of `[A-Za-z0-9_-]`.
pub fn valid_session_id(id: &str) -> bool {
    (16..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh, unguessable session id: 32 hex digits.
pub fn new_session_id() -> String {
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

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn frames(body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    r
}

// ---------------------------------------------------------------------------------------
// Hub side
// ---------------------------------------------------------------------------------------

/// One session's queues, shared by the hub's request handlers and the session's link.
#[derive(Debug)]
struct Cell {
    state: Mutex<CellState>,
    /// Frames arrived for polls, or the session closed.
    for_polls: Notify,
    /// The session's link waits here for pushes and for room to send.
    link_waker: AtomicWaker,
    /// The largest push body taken: small until the session's handshake completes.
    max_body: AtomicUsize,
    /// Pushes wait here for the session to take earlier ones.
    taken: Notify,
}

#[derive(Debug)]
struct CellState {
    /// From the client, not yet taken by the session.
    inbound: VecDeque<Bytes>,
    inbound_bytes: usize,
    /// From the session, not yet answered to the client: whole frames.
    outbound: VecDeque<Vec<u8>>,
    outbound_bytes: usize,
    /// The client said goodbye.
    client_gone: bool,
    /// The session closed its link (or dropped it).
    server_closed: bool,
    last_seen: Instant,
    last_seq: u64,
    /// The last poll's number and, once made, its answer (for a repeated poll).
    last_poll: u64,
    last_reply: Option<Bytes>,
}

impl Cell {
    fn new() -> Self {
        Cell {
            state: Mutex::new(CellState {
                inbound: VecDeque::new(),
                inbound_bytes: 0,
                outbound: VecDeque::new(),
                outbound_bytes: 0,
                client_gone: false,
                server_closed: false,
                last_seen: Instant::now(),
                last_seq: 0,
                last_poll: 0,
                last_reply: None,
            }),
            for_polls: Notify::new(),
            link_waker: AtomicWaker::new(),
            max_body: AtomicUsize::new(HANDSHAKE_MAX_BODY),
            taken: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session is over for good: closed, and everything it sent was answered.
    fn finished(st: &CellState) -> bool {
        st.server_closed && st.outbound.is_empty() && st.last_reply.is_some()
    }

    /// Wakes every held poll (the session closed).
    fn wake_polls(&self) {
        self.for_polls.notify_waiters();
        self.for_polls.notify_one();
    }
}

/// Starts the session of a new HTTP session id (the hub's driver for it).
pub type Spawn = Arc<dyn Fn(HttpSessionLink) + Send + Sync>;

/// The hub's HTTP sessions, by session id.
#[derive(Clone)]
pub struct HttpRegistry {
    sessions: Arc<Mutex<HashMap<String, Arc<Cell>>>>,
    /// Each session holds one of the hub's connection permits while it lives.
    permits: Arc<Semaphore>,
    max: usize,
    spawn: Spawn,
}

impl std::fmt::Debug for HttpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRegistry")
            .field("sessions", &self.len())
            .finish_non_exhaustive()
    }
}

impl HttpRegistry {
    /// `permits`: the hub's connection cap (of `max`), shared with its other connections.
    pub fn new(permits: Arc<Semaphore>, max: usize, spawn: Spawn) -> Self {
        HttpRegistry {
            sessions: Default::default(),
            permits,
            max,
            spawn,
        }
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Cell>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one request. Headers are checked before any of the body is read.
    pub async fn handle(&self, req: Request<Incoming>, peer: &str) -> Response<Full<Bytes>> {
        match self.route(req, peer).await {
            Ok(r) => r,
            Err((status, why)) => text(status, why),
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: &str,
    ) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        let bad = |why: String| (StatusCode::BAD_REQUEST, format!("malformed request: {why}"));
        if req.method() != hyper::Method::POST {
            return Err((
                StatusCode::METHOD_NOT_ALLOWED,
                format!(
                    "{} is not served here: kuzu-sync takes POST (HTTP push/pull) and \
                     WebSocket upgrades",
                    req.method()
                ),
            ));
        }
        let header = |name: &str| -> Result<Option<&str>, (StatusCode, String)> {
            match req.headers().get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(Some)
                    .map_err(|_| bad(format!("{name} is not text"))),
            }
        };
        let number = |name: &str| -> Result<Option<u64>, (StatusCode, String)> {
            header(name)?
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(format!("{name} {v:?} is not a number from 1")))
                })
                .transpose()
        };
        let id = header(HEADER_SESSION)?
            .ok_or_else(|| bad(format!("no {HEADER_SESSION} header")))?
            .to_string();
        if !valid_session_id(&id) {
            return Err(bad(format!(
                "{HEADER_SESSION} {:?} is not 16-128 characters of [A-Za-z0-9_-]",
                id.chars().take(140).collect::<String>()
            )));
        }
        let seq = number(HEADER_SEQ)?;
        let poll = number(HEADER_POLL)?;
        let close = header(HEADER_CLOSE)? == Some("1");
        let wait = match header(HEADER_WAIT)? {
            None => Duration::ZERO,
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(|ms| Duration::from_millis(ms).min(MAX_WAIT))
                .map_err(|_| bad(format!("{HEADER_WAIT} {v:?} is not a number")))?,
        };
        let first = match (seq, poll) {
            (Some(s), None) => s == 1,
            (None, Some(p)) => p == 1,
            _ => {
                return Err(bad(format!(
                    "a request carries exactly one of {HEADER_SEQ} (a push) and {HEADER_POLL} \
                     (a poll)"
                )))
            }
        };
        let Some(cell) = self.cell(&id, first && !close, peer)? else {
            return Err((
                StatusCode::GONE,
                "unknown or finished session: start a new one".into(),
            ));
        };
        match (seq, poll) {
            (Some(seq), _) => self.push(&cell, seq, close, req.into_body()).await,
            (_, Some(poll)) => self.poll(&id, &cell, poll, wait).await,
            _ => unreachable!("checked above"),
        }
    }

    /// The session's cell; made (and its session started) for the first request of a new
    /// id. None: unknown or finished.
    fn cell(
        &self,
        id: &str,
        may_create: bool,
        peer: &str,
    ) -> Result<Option<Arc<Cell>>, (StatusCode, String)> {
        let mut map = self.map();
        if let Some(cell) = map.get(id) {
            return Ok(Some(cell.clone()));
        }
        if !may_create {
            return Ok(None);
        }
        // Forget sessions that are over (once a retry of their last answer is no longer
        // to be expected) or whose client stopped asking.
        map.retain(|_, c| {
            let st = c.lock();
            let quiet = st.last_seen.elapsed();
            let over = Cell::finished(&st) && quiet > MAX_WAIT + RESPONSE_GRACE
                || st.server_closed && quiet > IDLE;
            !over
        });
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the hub is serving its limit of {} connections; try again later",
                    self.max
                ),
            ));
        };
        let cell = Arc::new(Cell::new());
        map.insert(id.to_string(), cell.clone());
        drop(map);
        (self.spawn)(HttpSessionLink {
            cell: cell.clone(),
            name: format!("http://{peer} (session {})", &id[..8]),
            out: VecDeque::new(),
            queued: 0,
            last_outbound: 0,
            _permit: permit,
        });
        Ok(Some(cell))
    }

    async fn push(
        &self,
        cell: &Arc<Cell>,
        seq: u64,
        close: bool,
        body: Incoming,
    ) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        {
            let mut st = cell.lock();
            st.last_seen = Instant::now();
            if seq <= st.last_seq {
                // A push repeated after a lost answer: it is already applied.
                return Ok(frames(Bytes::new()));
            }
            if seq != st.last_seq + 1 {
                return Err((
                    StatusCode::CONFLICT,
                    format!(
                        "push {seq} is out of sequence: the session expects {}",
                        st.last_seq + 1
                    ),
                ));
            }
        }
        if cell.lock().server_closed {
            return Err((StatusCode::GONE, "the session is over".into()));
        }
        // The body grows as it arrives, never past the limit, and must come in time.
        let max = cell.max_body.load(Ordering::SeqCst);
        let body = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect())
            .await
            .map_err(|_| {
                (
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {} s",
                        BODY_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a body over the limit of {max} bytes"),
                    )
                } else {
                    (
                        StatusCode::BAD_REQUEST,
                        format!("the body could not be read: {e}"),
                    )
                }
            })?
            .to_bytes();
        // Hold the push while the session has much to take.
        let hold = Instant::now() + PUSH_HOLD;
        loop {
            let taken = cell.taken.notified();
            {
                let mut st = cell.lock();
                if st.server_closed {
                    return Err((StatusCode::GONE, "the session is over".into()));
                }
                if seq <= st.last_seq {
                    return Ok(frames(Bytes::new()));
                }
                if st.inbound_bytes <= INBOUND_LIMIT || Instant::now() > hold {
                    if st.inbound_bytes > INBOUND_LIMIT {
                        return Err((
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the session is not taking what it was sent; try again".into(),
                        ));
                    }
                    st.last_seq = seq;
                    st.last_seen = Instant::now();
                    if !body.is_empty() {
                        st.inbound_bytes += body.len();
                        st.inbound.push_back(body.clone());
                    }
                    if close {
                        st.client_gone = true;
                    }
                    drop(st);
                    cell.link_waker.wake();
                    return Ok(frames(Bytes::new()));
                }
            }
            let _ = tokio::time::timeout_at(hold, taken).await;
        }
    }

    async fn poll(
        &self,
        id: &str,
        cell: &Arc<Cell>,
        poll: u64,
        wait: Duration,
    ) -> Result<Response<Full<Bytes>>, (StatusCode, String)> {
        let deadline = Instant::now() + wait;
        {
            let mut st = cell.lock();
            st.last_seen = Instant::now();
            if poll == st.last_poll + 1 {
                if Cell::finished(&st) {
                    drop(st);
                    self.map().remove(id);
                    return Err((StatusCode::GONE, "the session is over".into()));
                }
                st.last_poll = poll;
                st.last_reply = None;
            } else if poll != st.last_poll {
                return Err((
                    StatusCode::CONFLICT,
                    format!(
                        "poll {poll} is out of sequence: the session expects {}",
                        st.last_poll + 1
                    ),
                ));
            }
        }
        loop {
            let arrived = cell.for_polls.notified();
            {
                let mut st = cell.lock();
                if st.last_poll != poll {
                    return Err((StatusCode::CONFLICT, format!("poll {poll} was superseded")));
                }
                if let Some(reply) = &st.last_reply {
                    return Ok(frames(reply.clone()));
                }
                if !st.outbound.is_empty() || st.server_closed || Instant::now() >= deadline {
                    // At most REPLY_LIMIT bytes of the stream: the front frame may be cut,
                    // its rest goes in the next answer.
                    let mut reply = Vec::new();
                    while let Some(frame) = st.outbound.front_mut() {
                        let room = REPLY_LIMIT - reply.len();
                        if frame.len() > room {
                            let rest = frame.split_off(room);
                            reply.extend_from_slice(frame);
                            *frame = rest;
                            st.outbound_bytes -= room;
                            break;
                        }
                        let frame = st.outbound.pop_front().expect("a frame is there");
                        st.outbound_bytes -= frame.len();
                        reply.extend_from_slice(&frame);
                    }
                    let reply = Bytes::from(reply);
                    st.last_reply = Some(reply.clone());
                    st.last_seen = Instant::now();
                    drop(st);
                    // Room to send again.
                    cell.link_waker.wake();
                    return Ok(frames(reply));
                }
            }
            let _ = tokio::time::timeout_at(deadline, arrived).await;
        }
    }
}

/// The hub's side of one HTTP session, driven like any link.
pub struct HttpSessionLink {
    cell: Arc<Cell>,
    name: String,
    /// Frames not yet handed to the cell (while it holds its limit).
    out: VecDeque<Vec<u8>>,
    queued: usize,
    /// What waited for polls when last looked at (less now: the client took some).
    last_outbound: usize,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for HttpSessionLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSessionLink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Link for HttpSessionLink {
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        read: bool,
    ) -> Poll<io::Result<Progress>> {
        self.cell.link_waker.register(cx.waker());
        let mut st = self.cell.lock();
        let mut sent = false;
        while let Some(frame) = self.out.front() {
            if st.outbound_bytes > 0 && st.outbound_bytes + frame.len() > OUTBOUND_LIMIT {
                break;
            }
            let frame = self.out.pop_front().expect("front");
            self.queued -= frame.len();
            st.outbound_bytes += frame.len();
            st.outbound.push_back(frame);
            sent = true;
        }
        if sent {
            self.cell.for_polls.notify_one();
        }
        // The client took frames: progress for a driver waiting for its queue to drain.
        let taken = st.outbound_bytes < self.last_outbound;
        self.last_outbound = st.outbound_bytes;
        sent |= taken;
        if !read {
            return if sent {
                Poll::Ready(Ok(Progress::Sent))
            } else {
                Poll::Pending
            };
        }
        if let Some(bytes) = st.inbound.pop_front() {
            st.inbound_bytes -= bytes.len();
            drop(st);
            self.cell.taken.notify_waiters();
            buf.extend_from_slice(&bytes);
            return Poll::Ready(Ok(Progress::Received(bytes.len())));
        }
        if st.client_gone {
            return Poll::Ready(Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("{} ended the session", self.name),
            )));
        }
        if sent {
            Poll::Ready(Ok(Progress::Sent))
        } else {
            Poll::Pending
        }
    }

    fn queue(&mut self, frame: Vec<u8>) {
        self.queued += frame.len();
        self.out.push_back(frame);
    }

    fn queued(&self) -> usize {
        // What waits for polls counts too: the client has not taken it yet.
        self.queued + self.cell.lock().outbound_bytes
    }

    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cell.lock().server_closed = true;
        self.cell.wake_polls();
        Poll::Ready(Ok(()))
    }

    fn set_max_message(&mut self, _bytes: usize) {
        // The handshake is done: pushes may now be as large as any body (a frame of any
        // size spans bodies).
        self.cell.max_body.store(MAX_BODY, Ordering::SeqCst);
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl Drop for HttpSessionLink {
    fn drop(&mut self) {
        let mut st = self.cell.lock();
        st.server_closed = true;
        // Nobody will take what the client sent.
        st.inbound.clear();
        st.inbound_bytes = 0;
        drop(st);
        self.cell.wake_polls();
        self.cell.taken.notify_waiters();
    }
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive connection to the hub, reopened when it fails.
struct Conn {
    target: Target,
    timeout: Duration,
    sender: Option<Sender>,
}

impl Conn {
    async fn open(&mut self) -> io::Result<&mut Sender> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            let sender = self.sender.as_mut().expect("checked");
            // The connection takes the next request once it has finished the last.
            sender.ready().await.map_err(io::Error::other)?;
            return Ok(sender);
        }
        let (stream, _) = crate::link::open_stream(&self.target, self.timeout).await?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(self.sender.insert(sender))
    }

    /// One request and its whole answer; a failure on the wire is retried once on a new
    /// connection (the numbers make that safe).
    async fn round_trip(
        &mut self,
        headers: &[(&str, String)],
        body: Bytes,
        limit: Duration,
    ) -> io::Result<(StatusCode, Bytes)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_round_trip(headers, body.clone(), limit).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.sender = None;
                    if attempt >= 2 {
                        return Err(e);
                    }
                }
            }
        }
    }

    async fn try_round_trip(
        &mut self,
        headers: &[(&str, String)],
        body: Bytes,
        limit: Duration,
    ) -> io::Result<(StatusCode, Bytes)> {
        let mut req = Request::post(&self.target.path)
            .header(hyper::header::HOST, &self.target.authority)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Full::new(body)).map_err(io::Error::other)?;
        let exchange = async {
            let sender = self.open().await?;
            let res = sender.send_request(req).await.map_err(io::Error::other)?;
            let status = res.status();
            let body = Limited::new(res.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            Ok::<_, io::Error>((status, body))
        };
        tokio::time::timeout(limit, exchange).await.map_err(|_| {
            io::Error::new(
                ErrorKind::TimedOut,
                format!(
                    "{}: no answer within {} s",
                    self.target.authority,
                    limit.as_secs()
                ),
            )
        })?
    }
}

enum Out {
    Frame(Vec<u8>),
    Close(oneshot::Sender<()>),
}

/// The client side of an HTTP session: a task that pushes what is queued and a task that
/// keeps a poll open.
pub struct HttpLink {
    url: String,
    inbound: mpsc::UnboundedReceiver<io::Result<Bytes>>,
    out: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
    last_queued: usize,
    closing: Option<oneshot::Receiver<()>>,
    poller: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HttpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpLink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn status_error(url: &str, status: StatusCode, body: &[u8]) -> io::Error {
    if status == StatusCode::GONE {
        return io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("{url}: the hub ended the session"),
        );
    }
    io::Error::other(format!(
        "{url}: HTTP {status}: {}",
        String::from_utf8_lossy(body).trim()
    ))
}

impl HttpLink {
    /// Opens a session with `http[s]://HOST[:PORT]/PATH`. The first connection is made
    /// here, so an unreachable hub is reported here.
    pub async fn connect(url: &str, target: Target, timeout: Duration) -> io::Result<Self> {
        let session = new_session_id();
        let mut push_conn = Conn {
            target: target.clone(),
            timeout,
            sender: None,
        };
        push_conn.open().await?;
        let poll_conn = Conn {
            target,
            timeout,
            sender: None,
        };
        let (in_tx, inbound) = mpsc::unbounded_channel();
        let (out, out_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let waker = Arc::new(AtomicWaker::new());
        tokio::spawn(pusher(
            url.to_string(),
            session.clone(),
            push_conn,
            out_rx,
            in_tx.clone(),
            queued.clone(),
            waker.clone(),
        ));
        let poller = tokio::spawn(poller(url.to_string(), session, poll_conn, in_tx));
        Ok(HttpLink {
            url: url.to_string(),
            inbound,
            out,
            queued,
            waker,
            last_queued: 0,
            closing: None,
            poller,
        })
    }
}

async fn pusher(
    url: String,
    session: String,
    mut conn: Conn,
    mut rx: mpsc::UnboundedReceiver<Out>,
    errors: mpsc::UnboundedSender<io::Result<Bytes>>,
    queued: Arc<AtomicUsize>,
    waker: Arc<AtomicWaker>,
) {
    let mut seq = 0u64;
    // Bytes of the stream not yet pushed: bodies cut it at MAX_BODY, frames or not.
    let mut stream: Vec<u8> = Vec::new();
    let mut close = None;
    loop {
        if stream.is_empty() && close.is_none() {
            match rx.recv().await {
                Some(Out::Frame(f)) => stream = f,
                Some(Out::Close(done)) => close = Some(done),
                None => return,
            }
        }
        while stream.len() < MAX_BODY && close.is_none() {
            match rx.try_recv() {
                Ok(Out::Frame(f)) => stream.extend_from_slice(&f),
                Ok(Out::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        let rest = if stream.len() > MAX_BODY {
            stream.split_off(MAX_BODY)
        } else {
            Vec::new()
        };
        let body = std::mem::replace(&mut stream, rest);
        // The close goes with the last bytes.
        let closing = close.is_some() && stream.is_empty();
        let len = body.len();
        seq += 1;
        let mut headers = vec![
            (HEADER_SESSION, session.clone()),
            (HEADER_SEQ, seq.to_string()),
        ];
        if closing {
            headers.push((HEADER_CLOSE, "1".into()));
        }
        let result = conn
            .round_trip(&headers, Bytes::from(body), RESPONSE_GRACE)
            .await;
        queued.fetch_sub(len, Ordering::SeqCst);
        waker.wake();
        let failed = match result {
            Ok((StatusCode::OK, _)) => None,
            Ok((status, body)) => Some(status_error(&url, status, &body)),
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            let _ = errors.send(Err(e));
            if let Some(done) = close {
                let _ = done.send(());
            }
            return;
        }
        if closing {
            if let Some(done) = close {
                let _ = done.send(());
            }
            return;
        }
    }
}

async fn poller(
    url: String,
    session: String,
    mut conn: Conn,
    inbound: mpsc::UnboundedSender<io::Result<Bytes>>,
) {
    let mut poll = 0u64;
    loop {
        poll += 1;
        let headers = [
            (HEADER_SESSION, session.clone()),
            (HEADER_POLL, poll.to_string()),
            (HEADER_WAIT, MAX_WAIT.as_millis().to_string()),
        ];
        let result = conn
            .round_trip(&headers, Bytes::new(), MAX_WAIT + RESPONSE_GRACE)
            .await;
        let item = match result {
            Ok((StatusCode::OK, body)) if body.is_empty() => continue,
            Ok((StatusCode::OK, body)) => Ok(body),
            Ok((status, body)) => Err(status_error(&url, status, &body)),
            Err(e) => Err(e),
        };
        let failed = item.is_err();
        if inbound.send(item).is_err() || failed {
            return;
        }
    }
}

impl Link for HttpLink {
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        read: bool,
    ) -> Poll<io::Result<Progress>> {
        self.waker.register(cx.waker());
        let received = if read {
            self.inbound.poll_recv(cx)
        } else {
            Poll::Pending
        };
        match received {
            Poll::Ready(Some(Ok(bytes))) => {
                buf.extend_from_slice(&bytes);
                return Poll::Ready(Ok(Progress::Received(bytes.len())));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => {
                return Poll::Ready(Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("{}: the session ended", self.url),
                )))
            }
            Poll::Pending => {}
        }
        let now = self.queued.load(Ordering::SeqCst);
        if now < self.last_queued {
            self.last_queued = now;
            return Poll::Ready(Ok(Progress::Sent));
        }
        self.last_queued = now;
        Poll::Pending
    }

    fn queue(&mut self, frame: Vec<u8>) {
        let n = self.queued.fetch_add(frame.len(), Ordering::SeqCst) + frame.len();
        self.last_queued = n;
        let _ = self.out.send(Out::Frame(frame));
    }

    fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closing.is_none() {
            let (tx, rx) = oneshot::channel();
            if self.out.send(Out::Close(tx)).is_err() {
                return Poll::Ready(Ok(()));
            }
            self.closing = Some(rx);
        }
        let rx = self.closing.as_mut().expect("set above");
        std::pin::Pin::new(rx).poll(cx).map(|_| {
            self.poller.abort();
            Ok(())
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

impl Drop for HttpLink {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

use std::future::Future;

#[cfg(test)]
mod tests;
