//! Links: the byte channels sessions run over, on tokio. A link moves frames' bytes and
//! knows nothing of messages.
//!
//! - [`StreamLink`]: frames straight on a byte stream (TCP, or TLS over TCP).
//! - [`WsLink`]: the byte stream cut into binary WebSocket messages of at most
//!   [`WS_CHUNK`] bytes (a frame may span messages; the receiver concatenates).
//! - `crate::http`: HTTP push/pull, client and hub sides.
//! - [`Throttled`]: adds latency and limits bandwidth, for tests on loopback.
//!
//! A link is driven through one poll method that both writes what is queued and reads
//! what arrived, so a session never stops reading while it waits to write (two sides
//! writing into full sockets at once would otherwise wait for each other forever).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, ErrorKind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

/// What a call to [`Link::poll_io`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many bytes were appended to the buffer.
    Received(usize),
    /// Queued bytes were written (see [`Link::queued`] for what is left).
    Sent,
}

/// A bidirectional byte channel carrying frames (see [`crate::frame`]). Implement it to
/// add a transport: the session driver ([`crate::net::drive`]) runs unchanged over it.
pub trait Link: Send {
    /// Writes queued bytes and (if `read`) reads arrived ones; ready when either made
    /// progress. Received bytes are appended to `buf`. A closed channel is an error of
    /// kind `UnexpectedEof`. Must be cancel-safe: nothing is lost if the caller stops
    /// polling. A hub passes `read = false` while much is queued for a peer
    /// (backpressure); a client always reads, so two sides never both stop reading.
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        read: bool,
    ) -> Poll<io::Result<Progress>>;
    /// Queues one whole frame; it is written by later calls to `poll_io`.
    fn queue(&mut self, frame: Vec<u8>);
    /// Bytes queued and not yet written.
    fn queued(&self) -> usize;
    /// Shuts the channel down once what is queued is written (best effort).
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// What this is, for messages: `tcp://127.0.0.1:7000`.
    fn describe(&self) -> String;
    /// The largest message the other side may send from here on, for links that buffer
    /// whole messages before the driver sees them. The driver raises it once the session's
    /// handshake completes.
    fn set_max_message(&mut self, _bytes: usize) {}
}

impl std::fmt::Debug for dyn Link + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("describe", &self.describe())
            .field("queued", &self.queued())
            .finish()
    }
}

/// Waits for progress on `link`.
pub async fn io(link: &mut dyn Link, buf: &mut Vec<u8>) -> io::Result<Progress> {
    poll_fn(|cx| link.poll_io(cx, buf, true)).await
}

/// Waits for progress on `link`, reading only if `read`.
pub async fn io_maybe_reading(
    link: &mut dyn Link,
    buf: &mut Vec<u8>,
    read: bool,
) -> io::Result<Progress> {
    poll_fn(|cx| link.poll_io(cx, buf, read)).await
}

/// Writes everything queued, then shuts the link down; gives up after `limit`. Bytes that
/// arrive meanwhile are dropped.
pub async fn close(link: &mut dyn Link, limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        let mut sink = Vec::new();
        while link.queued() > 0 {
            sink.clear();
            if io(link, &mut sink).await.is_err() {
                return;
            }
        }
        let _ = poll_fn(|cx| link.poll_shutdown(cx)).await;
    })
    .await;
}

/// Writes everything queued, reading (and keeping) what arrives meanwhile.
pub async fn flush(link: &mut dyn Link, buf: &mut Vec<u8>) -> io::Result<()> {
    while link.queued() > 0 {
        io(link, buf).await?;
    }
    Ok(())
}

/// Reads are made in chunks of this much; an idle link holds no more.
const READ_CHUNK: usize = 8 << 10;

/// Anything a [`StreamLink`] can run over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// Frames straight on a byte stream.
pub struct StreamLink<S> {
    io: S,
    name: String,
    out: VecDeque<Vec<u8>>,
    /// Bytes of the front frame already written.
    head: usize,
    queued: usize,
    /// Written since the last flush (TLS buffers records until flushed).
    dirty: bool,
}

impl<S> std::fmt::Debug for StreamLink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLink")
            .field("name", &self.name)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<S: ByteStream> StreamLink<S> {
    /// `name`: how the link describes itself, e.g. `tcp://127.0.0.1:7000`.
    pub fn new(io: S, name: String) -> Self {
        StreamLink {
            io,
            name,
            out: VecDeque::new(),
            head: 0,
            queued: 0,
            dirty: false,
        }
    }

    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut sent = false;
        while let Some(front) = self.out.front() {
            match Pin::new(&mut self.io).poll_write(cx, &front[self.head..]) {
                Poll::Ready(Ok(0)) => return Err(ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    sent = true;
                    self.dirty = true;
                    self.head += n;
                    self.queued -= n;
                    if self.head == front.len() {
                        self.out.pop_front();
                        self.head = 0;
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        if self.out.is_empty() && self.dirty {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(sent)
    }
}

/// Reads what is there into `buf`, growing it by a chunk at most.
fn poll_read_into<R: AsyncRead + Unpin>(
    r: &mut R,
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    let n = match tokio_util::io::poll_read_buf(Pin::new(r), cx, buf) {
        Poll::Ready(Ok(n)) => n,
        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
        Poll::Pending => return Poll::Pending,
    };
    if n == 0 {
        return Poll::Ready(Err(io::Error::new(
            ErrorKind::UnexpectedEof,
            "the other side closed the connection",
        )));
    }
    Poll::Ready(Ok(n))
}

impl<S: ByteStream> Link for StreamLink<S> {
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        read: bool,
    ) -> Poll<io::Result<Progress>> {
        let sent = self.poll_write_queue(cx)?;
        if !read {
            return if sent {
                Poll::Ready(Ok(Progress::Sent))
            } else {
                Poll::Pending
            };
        }
        match poll_read_into(&mut self.io, cx, buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(Progress::Received(n))),
            Poll::Ready(Err(e)) if e.kind() == ErrorKind::UnexpectedEof => {
                Poll::Ready(Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("{} closed the connection", self.name),
                )))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if sent => Poll::Ready(Ok(Progress::Sent)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn queue(&mut self, frame: Vec<u8>) {
        self.queued += frame.len();
        self.out.push_back(frame);
    }

    fn queued(&self) -> usize {
        self.queued
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// Largest WebSocket message sent or accepted: frames are cut into messages of at most
/// this much, so the limit holds before and after the handshake, and a hub never reserves
/// more than this for a message a client announces.
pub const WS_CHUNK: usize = 64 << 10;

/// The WebSocket configuration of both sides: small messages, small buffers (an idle
/// connection holds little), nothing buffered for writing.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(WS_CHUNK))
        .max_frame_size(Some(WS_CHUNK))
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_write_buffer_size(WS_CHUNK * 4)
}

/// The byte stream carried by binary WebSocket messages.
pub struct WsLink<S> {
    ws: WebSocketStream<S>,
    name: String,
    out: VecDeque<Vec<u8>>,
    queued: usize,
    dirty: bool,
}

impl<S> std::fmt::Debug for WsLink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsLink")
            .field("name", &self.name)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

impl<S: ByteStream> WsLink<S> {
    pub fn new(ws: WebSocketStream<S>, name: String) -> Self {
        WsLink {
            ws,
            name,
            out: VecDeque::new(),
            queued: 0,
            dirty: false,
        }
    }

    fn ws_err(&self, e: tokio_tungstenite::tungstenite::Error) -> io::Error {
        use tokio_tungstenite::tungstenite::Error as E;
        match e {
            E::ConnectionClosed | E::AlreadyClosed => io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("{} closed the connection", self.name),
            ),
            E::Io(e) => e,
            e => io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", self.name)),
        }
    }
}

impl<S: ByteStream> Link for WsLink<S> {
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        read: bool,
    ) -> Poll<io::Result<Progress>> {
        let mut sent = false;
        while !self.out.is_empty() {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let chunk = self.out.pop_front().expect("not empty");
                    self.queued -= chunk.len();
                    Pin::new(&mut self.ws)
                        .start_send(WsMessage::Binary(chunk.into()))
                        .map_err(|e| self.ws_err(e))?;
                    sent = true;
                    self.dirty = true;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.ws_err(e))),
                Poll::Pending => break,
            }
        }
        if self.dirty {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.dirty = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.ws_err(e))),
                Poll::Pending => {}
            }
        }
        if !read {
            return if sent {
                Poll::Ready(Ok(Progress::Sent))
            } else {
                Poll::Pending
            };
        }
        loop {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(WsMessage::Binary(b)))) => {
                    buf.extend_from_slice(&b);
                    return Poll::Ready(Ok(Progress::Received(b.len())));
                }
                Poll::Ready(Some(Ok(WsMessage::Close(_)))) | Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("{} closed the connection", self.name),
                    )))
                }
                // Pings are answered by tungstenite; pongs say nothing here.
                Poll::Ready(Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_)))) => continue,
                Poll::Ready(Some(Ok(m))) => {
                    return Poll::Ready(Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "{}: a {} WebSocket message (frames travel as binary messages)",
                            self.name,
                            if m.is_text() { "text" } else { "raw frame" }
                        ),
                    )))
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(self.ws_err(e))),
                Poll::Pending if sent => return Poll::Ready(Ok(Progress::Sent)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn queue(&mut self, frame: Vec<u8>) {
        self.queued += frame.len();
        if frame.len() <= WS_CHUNK {
            self.out.push_back(frame);
        } else {
            self.out.extend(frame.chunks(WS_CHUNK).map(|c| c.to_vec()));
        }
    }

    fn queued(&self) -> usize {
        self.queued
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(|e| self.ws_err(e))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// A stream whose first bytes were already read (to tell the protocol): they are read
/// again first.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A link that adds latency and limits bandwidth, both ways: for testing the adaptive
/// strategy on loopback, or simulating a poor link. Bytes are delayed by half the round
/// trip and by their transmission time at `bits_per_second`.
pub struct Throttled {
    inner: Box<dyn Link>,
    one_way: Duration,
    bits_per_second: Option<u64>,
    outgoing: VecDeque<(Instant, Vec<u8>)>,
    out_bytes: usize,
    out_free: Instant,
    incoming: VecDeque<(Instant, Vec<u8>)>,
    in_free: Instant,
    scratch: Vec<u8>,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The inner link failed with bytes still on their way: they are delivered first.
    ended: Option<io::Error>,
}

impl std::fmt::Debug for Throttled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttled")
            .field("inner", &self.inner.describe())
            .field("one_way", &self.one_way)
            .field("bits_per_second", &self.bits_per_second)
            .finish_non_exhaustive()
    }
}

impl Throttled {
    /// `round_trip`: added round-trip latency; `bits_per_second`: None for unlimited.
    /// Must be made inside a tokio runtime (it holds a timer).
    pub fn new(inner: Box<dyn Link>, round_trip: Duration, bits_per_second: Option<u64>) -> Self {
        let now = Instant::now();
        Throttled {
            inner,
            one_way: round_trip / 2,
            bits_per_second,
            outgoing: VecDeque::new(),
            out_bytes: 0,
            out_free: now,
            incoming: VecDeque::new(),
            in_free: now,
            scratch: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(now)),
            ended: None,
        }
    }

    fn transmission(&self, bytes: usize) -> Duration {
        match self.bits_per_second {
            Some(bps) if bps > 0 => Duration::from_secs_f64(bytes as f64 * 8.0 / bps as f64),
            _ => Duration::ZERO,
        }
    }
}

impl Link for Throttled {
    fn poll_io(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
        read: bool,
    ) -> Poll<io::Result<Progress>> {
        let mut sent = false;
        loop {
            let now = Instant::now();
            while self.outgoing.front().is_some_and(|(due, _)| *due <= now) {
                let (_, frame) = self.outgoing.pop_front().expect("front");
                self.out_bytes -= frame.len();
                self.inner.queue(frame);
            }
            if self.ended.is_none() {
                self.scratch.clear();
                match self.inner.poll_io(cx, &mut self.scratch, read) {
                    Poll::Ready(Ok(Progress::Received(n))) => {
                        let start = self.in_free.max(now);
                        self.in_free = start + self.transmission(n);
                        let bytes = std::mem::take(&mut self.scratch);
                        self.incoming
                            .push_back((self.in_free + self.one_way, bytes));
                        continue;
                    }
                    Poll::Ready(Ok(Progress::Sent)) => {
                        sent = true;
                        continue;
                    }
                    Poll::Ready(Err(e)) => self.ended = Some(e),
                    Poll::Pending => {}
                }
            }
            let mut delivered = 0;
            while read && self.incoming.front().is_some_and(|(due, _)| *due <= now) {
                let (_, bytes) = self.incoming.pop_front().expect("front");
                delivered += bytes.len();
                buf.extend_from_slice(&bytes);
            }
            if delivered > 0 {
                return Poll::Ready(Ok(Progress::Received(delivered)));
            }
            if self.incoming.is_empty() {
                if let Some(e) = self.ended.take() {
                    return Poll::Ready(Err(e));
                }
            }
            if sent {
                return Poll::Ready(Ok(Progress::Sent));
            }
            // Bytes due for delivery wait while reading is paused: not a deadline then.
            let incoming = if read { self.incoming.front() } else { None };
            let next = [self.outgoing.front(), incoming]
                .into_iter()
                .flatten()
                .map(|(due, _)| *due)
                .min();
            match next {
                Some(due) => {
                    self.timer.as_mut().reset(due);
                    if self.timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
                None => return Poll::Pending,
            }
        }
    }

    fn queue(&mut self, frame: Vec<u8>) {
        let start = self.out_free.max(Instant::now());
        self.out_free = start + self.transmission(frame.len());
        self.out_bytes += frame.len();
        self.outgoing
            .push_back((self.out_free + self.one_way, frame));
    }

    fn queued(&self) -> usize {
        self.out_bytes + self.inner.queued()
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_shutdown(cx)
    }

    fn describe(&self) -> String {
        format!("throttled+{}", self.inner.describe())
    }

    fn set_max_message(&mut self, bytes: usize) {
        self.inner.set_max_message(bytes);
    }
}

use std::future::Future;

// ---------------------------------------------------------------------------------------
// Connecting
// ---------------------------------------------------------------------------------------

/// Environment variable naming a PEM file of extra certificate authorities a client
/// trusts (beside the Mozilla roots), e.g. for a hub with a self-signed certificate.
pub const TLS_CA_ENV: &str = "KUZU_SYNC_TLS_CA";

/// The client's TLS configuration: the Mozilla roots, plus the authorities in the file
/// named by [`TLS_CA_ENV`].
pub fn client_tls() -> io::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(path) = std::env::var_os(TLS_CA_ENV) {
                let certs = read_certs(std::path::Path::new(&path)).map_err(|e| e.to_string())?;
                for c in certs {
                    roots.add(c).map_err(|e| {
                        format!(
                            "{}: not a usable certificate authority: {e}",
                            path.to_string_lossy()
                        )
                    })?;
                }
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
        .map_err(io::Error::other)
}

/// The certificates in a PEM file.
pub fn read_certs(
    path: &std::path::Path,
) -> io::Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("{}: no PEM certificate in the file", path.display()),
        ));
    }
    Ok(certs)
}

/// A hub's TLS configuration from a PEM certificate chain and a PEM private key.
pub fn server_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls_pki_types::pem::PemObject;
    let certs = read_certs(cert)?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        io::Error::new(
            ErrorKind::InvalidData,
            format!("the certificate and key: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// A byte stream, plain or TLS.
pub type BoxStream = Box<dyn ByteStream>;

/// The parts of a URL a client connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: String,
    /// `HOST:PORT`, the port defaulted from the scheme.
    pub authority: String,
    pub host: String,
    /// `/PATH` (`/` if none).
    pub path: String,
    pub tls: bool,
}

/// Splits `SCHEME://HOST[:PORT][/PATH]` for the schemes kuzu-sync speaks.
pub fn parse_url(url: &str) -> Option<Target> {
    let (scheme, rest) = url.split_once("://")?;
    let (tls, port) = match scheme {
        "tcp" => (false, None),
        "tls" => (true, None),
        "ws" | "http" => (false, Some(80)),
        "wss" | "https" => (true, Some(443)),
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    let has_port = match authority.rfind(':') {
        Some(i) => !authority.ends_with(']') && authority[i + 1..].parse::<u16>().is_ok(),
        None => false,
    };
    let host = if has_port {
        &authority[..authority.rfind(':').expect("has a colon")]
    } else {
        authority
    };
    let authority = match (has_port, port) {
        (true, _) => authority.to_string(),
        (false, Some(p)) => format!("{authority}:{p}"),
        (false, None) => return None,
    };
    Some(Target {
        scheme: scheme.to_string(),
        authority,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        path: path.to_string(),
        tls,
    })
}

/// Opens a byte stream to `target` (TCP with Nagle off, then TLS if the scheme says so).
pub async fn open_stream(target: &Target, timeout: Duration) -> io::Result<(BoxStream, String)> {
    let connect = async {
        let tcp = TcpStream::connect(&target.authority).await?;
        tcp.set_nodelay(true)?;
        let peer = tcp
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| target.authority.clone());
        if !target.tls {
            return Ok((Box::new(tcp) as BoxStream, peer));
        }
        let name = rustls_pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
            io::Error::new(ErrorKind::InvalidInput, format!("{:?}: {e}", target.host))
        })?;
        let tls = tokio_rustls::TlsConnector::from(client_tls()?)
            .connect(name, tcp)
            .await?;
        Ok((Box::new(tls) as BoxStream, peer))
    };
    tokio::time::timeout(timeout, connect).await.map_err(|_| {
        io::Error::new(
            ErrorKind::TimedOut,
            format!(
                "{}: no connection within {} s",
                target.authority,
                timeout.as_secs()
            ),
        )
    })?
}

/// Opens a link to a remote URL: `tcp://HOST:PORT`, `tls://HOST:PORT`,
/// `ws[s]://HOST[:PORT]/PATH` or `http[s]://HOST[:PORT]/PATH`. `None`: not such a URL.
pub async fn connect(url: &str, timeout: Duration) -> Option<io::Result<Box<dyn Link>>> {
    let target = parse_url(url)?;
    Some(connect_target(url, &target, timeout).await)
}

async fn connect_target(
    url: &str,
    target: &Target,
    timeout: Duration,
) -> io::Result<Box<dyn Link>> {
    match target.scheme.as_str() {
        "tcp" | "tls" => {
            let (stream, peer) = open_stream(target, timeout).await?;
            Ok(Box::new(StreamLink::new(
                stream,
                format!("{}://{peer}", target.scheme),
            )))
        }
        "ws" | "wss" => {
            let (stream, peer) = open_stream(target, timeout).await?;
            let handshake =
                tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()));
            let (ws, _) = tokio::time::timeout(timeout, handshake)
                .await
                .map_err(|_| {
                    io::Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "{url}: no WebSocket handshake within {} s",
                            timeout.as_secs()
                        ),
                    )
                })?
                .map_err(|e| io::Error::other(format!("{url}: WebSocket handshake: {e}")))?;
            Ok(Box::new(WsLink::new(
                ws,
                format!("{}://{peer}", target.scheme),
            )))
        }
        _ => Ok(Box::new(
            crate::http::HttpLink::connect(url, target.clone(), timeout).await?,
        )),
    }
}

/// Writes all of `bytes` to a stream and shuts it down (for refusals), within `limit`.
pub async fn write_and_close<S: AsyncWrite + Unpin>(mut s: S, bytes: &[u8], limit: Duration) {
    let _ = tokio::time::timeout(limit, async {
        s.write_all(bytes).await?;
        s.shutdown().await
    })
    .await;
}

#[cfg(test)]
pub(crate) mod tests;
