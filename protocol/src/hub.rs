//! The hub: many clients, any transport, one port, on tokio.
//!
//! Each connection is a task. Its first four bytes say what it speaks: `GET ` and `POST`
//! go to hyper (a WebSocket upgrade, or HTTP push/pull), anything else is raw frames on
//! TCP. With a TLS configuration every connection is TLS first (rustls), then the same.
//! Every session's replica work runs on the replica's one writer thread
//! ([`Shared::run`]); sessions wake on new events through the replica's `watch` channel.

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use kuzu_sync_engine::ports::{EventStore, GraphStore};
use kuzu_sync_engine::sync::{Lifecycle, Message, Session, SessionConfig};

use crate::frame::{Encoder, DEFAULT_MAX_FRAME};
use crate::http::{HttpRegistry, HttpSessionLink};
use crate::link::{ws_config, BoxStream, Link, Prefixed, StreamLink, WsLink};
use crate::net::{cancel_on, drive_hub_session, DriveOptions, EventSink, Shared};

/// Connections a hub serves at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Connections past the cap that are answered with a refusal at once; more are dropped.
const MAX_REFUSING: usize = 16;
/// Largest HTTP head the hub reads.
const MAX_HTTP_HEAD: usize = 16 << 10;

/// Whether a connection's first bytes begin an HTTP request (else: raw frames). A raw
/// frame starts with its length, little-endian: these would be frames of more than 1 GiB,
/// over any frame limit.
fn is_http(head: &[u8; 4]) -> bool {
    matches!(
        head,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PATC" | b"CONN" | b"TRAC"
    )
}

/// How a hub serves.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub session: SessionConfig,
    pub max_frame: usize,
    /// See [`DriveOptions::frame_timeout`].
    pub frame_timeout: Duration,
    /// See [`DriveOptions::handshake_timeout`]. The TLS handshake and the first bytes
    /// must arrive within it too.
    pub handshake_timeout: Duration,
    /// See [`DriveOptions::pong_timeout`].
    pub pong_timeout: Duration,
    /// Connections served at once; a connection past it is refused (see [`serve`]). An
    /// HTTP push/pull session counts as one more, for as long as it lives.
    pub max_connections: usize,
    /// Serve TLS only (`wss://`, `https://`, `tls://`); see [`crate::link::server_tls`].
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Bytes of large frames (1 MiB or more) all sessions may be receiving and decoding
    /// at once: a decoded message takes several times its frame's bytes, so this bounds
    /// what large frames can make the hub hold. At least `max_frame + 4`.
    pub decode_budget: usize,
    /// The replica's part in transactions (see [`crate::txnet::ParticipantEndpoint`]);
    /// None: a transaction message is a protocol error.
    pub tx: Option<Arc<dyn crate::txnet::TxEndpoint>>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            session: SessionConfig {
                seal: true,
                ..SessionConfig::default()
            },
            max_frame: DEFAULT_MAX_FRAME,
            frame_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            pong_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
            decode_budget: 256 << 20,
            tx: None,
        }
    }
}

/// Serves sessions on `listener` until `stop` is set: raw TCP frames, WebSocket
/// (`GET` upgrade) and HTTP push/pull (`POST`) on the same port, TLS if configured. One
/// failing connection never affects the others. Past `max_connections`, a new connection
/// is answered with a refusal in its own protocol (an `Error` frame, or HTTP 503) and
/// closed.
///
/// Blocking: runs a tokio runtime of its own (two worker threads), so it must not be
/// called from inside one (use [`serve_async`] there).
pub fn serve<E, G>(
    listener: std::net::TcpListener,
    shared: Arc<Shared<E, G>>,
    config: HubConfig,
    stop: Arc<AtomicBool>,
    events: EventSink,
) -> io::Result<()>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async move {
            listener.set_nonblocking(true)?;
            let listener = TcpListener::from_std(listener)?;
            let cancel = CancellationToken::new();
            cancel_on(stop, cancel.clone());
            serve_async(listener, shared, config, cancel, events).await
        })
}

/// Everything a connection's task needs.
struct Hub<E: EventStore, G: GraphStore> {
    shared: Arc<Shared<E, G>>,
    config: HubConfig,
    events: EventSink,
    cancel: CancellationToken,
    tasks: TaskTracker,
    http: HttpRegistry,
    decode_budget: Arc<Semaphore>,
}

/// [`serve`] for async code: serves until `cancel` is cancelled, then closes every
/// session and returns once they are done.
pub async fn serve_async<E, G>(
    listener: TcpListener,
    shared: Arc<Shared<E, G>>,
    config: HubConfig,
    cancel: CancellationToken,
    events: EventSink,
) -> io::Result<()>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    if let Some(endpoint) = &config.tx {
        endpoint.start(cancel.clone());
    }
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let tasks = TaskTracker::new();
    let hub = Arc::new_cyclic(|weak: &std::sync::Weak<Hub<E, G>>| {
        let weak = weak.clone();
        let spawn: crate::http::Spawn = Arc::new(move |link: HttpSessionLink| {
            if let Some(hub) = weak.upgrade() {
                let h = hub.clone();
                hub.tasks
                    .spawn(async move { h.session(Box::new(link), Instant::now()).await });
            }
        });
        let budget = config.decode_budget.max(config.max_frame + 4);
        Hub {
            shared,
            decode_budget: Arc::new(Semaphore::new(budget)),
            http: HttpRegistry::new(permits.clone(), config.max_connections, spawn),
            config,
            events,
            cancel: cancel.clone(),
            tasks: tasks.clone(),
        }
    });
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = cancel.cancelled() => break,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: report it and keep serving those there are.
                (hub.events)(
                    "hub",
                    &Lifecycle::Error {
                        reason: format!("accepting a connection: {e}"),
                    },
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let h = hub.clone();
                tasks.spawn(async move { h.connection(stream, addr, permit).await });
            }
            Err(_) => {
                // Else dropped: closing is the only answer left that costs nothing.
                if let Ok(p) = refusing.clone().try_acquire_owned() {
                    let h = hub.clone();
                    tasks.spawn(async move { h.refuse_busy(stream, p).await });
                }
            }
        }
    }
    drop(listener);
    tasks.close();
    // Sessions see the cancellation and close; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
    Ok(())
}

impl<E, G> Hub<E, G>
where
    E: EventStore + Send + 'static,
    G: GraphStore + Send + 'static,
{
    fn report(&self, who: &str, e: &dyn std::fmt::Display) {
        (self.events)(
            who,
            &Lifecycle::Error {
                reason: e.to_string(),
            },
        );
    }

    fn opts(&self) -> DriveOptions {
        DriveOptions {
            one_shot: false,
            max_frame: self.config.max_frame,
            cancel: self.cancel.clone(),
            events: self.events.clone(),
            idle_timeout: None,
            frame_timeout: self.config.frame_timeout,
            handshake_timeout: self.config.handshake_timeout,
            pong_timeout: self.config.pong_timeout,
            decode_budget: Some(self.decode_budget.clone()),
            tx: self.config.tx.clone(),
            ..DriveOptions::default()
        }
    }

    /// A server session over `link`, reported if it fails.
    async fn session(&self, mut link: Box<dyn Link>, started: Instant) {
        let session = Session::server(self.config.session.clone());
        if let Err(e) = drive_hub_session(
            &mut *link,
            session,
            &self.shared,
            &self.opts(),
            started.into_std(),
        )
        .await
        {
            self.report(&link.describe(), &e);
        }
    }

    /// TLS (if configured), then the first four bytes, within the handshake deadline.
    async fn open(
        &self,
        stream: TcpStream,
        deadline: Instant,
    ) -> io::Result<(Prefixed<BoxStream>, [u8; 4])> {
        let mut stream: BoxStream = match &self.config.tls {
            None => Box::new(stream),
            Some(tls) => {
                let accept = tokio_rustls::TlsAcceptor::from(tls.clone()).accept(stream);
                Box::new(
                    tokio::time::timeout_at(deadline, accept)
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "no TLS handshake in time")
                        })??,
                )
            }
        };
        let mut head = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match tokio::time::timeout_at(deadline, stream.read(&mut head[got..])).await {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => got += n,
                Ok(Err(e)) => return Err(e),
            }
        }
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed or silent before its first bytes",
            ));
        }
        Ok((Prefixed::new(head[..got].to_vec(), stream), head))
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        addr: std::net::SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let started = Instant::now();
        let scheme = if self.config.tls.is_some() {
            "tls"
        } else {
            "tcp"
        };
        let who = format!("{scheme}://{addr}");
        let (stream, head) = match self
            .open(stream, started + self.config.handshake_timeout)
            .await
        {
            Ok(s) => s,
            Err(e) => return self.report(&who, &e),
        };
        if is_http(&head) {
            self.http(stream, addr, Arc::new(permit), started).await;
        } else {
            let link = StreamLink::new(stream, who);
            self.session(Box::new(link), started).await;
            drop(permit);
        }
    }

    /// An HTTP connection: WebSocket upgrades and push/pull requests.
    async fn http(
        self: &Arc<Self>,
        stream: Prefixed<BoxStream>,
        addr: std::net::SocketAddr,
        permit: Arc<OwnedSemaphorePermit>,
        started: Instant,
    ) {
        let peer = addr.to_string();
        let hub = self.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (hub, peer, permit) = (hub.clone(), peer.clone(), permit.clone());
            async move {
                Ok::<_, std::convert::Infallible>(hub.request(req, &peer, permit, started).await)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.config.handshake_timeout)
            .max_buf_size(MAX_HTTP_HEAD.max(8192))
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::select! {
            r = conn => if let Err(e) = r {
                // A client that goes away mid-request is no news.
                if !e.is_incomplete_message() && !e.is_canceled() {
                    self.report(&format!("http://{addr}"), &e);
                }
            },
            _ = self.cancel.cancelled() => {}
        }
    }

    async fn request(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: &str,
        permit: Arc<OwnedSemaphorePermit>,
        started: Instant,
    ) -> Response<Full<Bytes>> {
        if req.method() == hyper::Method::GET {
            return self.upgrade(req, peer, permit, started);
        }
        self.http.handle(req, peer).await
    }

    /// Answers a WebSocket upgrade and starts its session on the upgraded connection. A
    /// plain `GET` is told what this is.
    fn upgrade(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        peer: &str,
        permit: Arc<OwnedSemaphorePermit>,
        started: Instant,
    ) -> Response<Full<Bytes>> {
        use hyper::header::{
            HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY,
            SEC_WEBSOCKET_VERSION, UPGRADE,
        };
        let has = |name, token: &str| {
            req.headers().get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        let key = req.headers().get(SEC_WEBSOCKET_KEY).cloned();
        let (true, true, Some(key), true) = (
            has(UPGRADE, "websocket"),
            has(CONNECTION, "upgrade"),
            key,
            has(SEC_WEBSOCKET_VERSION, "13"),
        ) else {
            let mut r = Response::new(Full::new(Bytes::from(
                "This is a kuzu-sync hub. It speaks WebSocket (ws://HOST:PORT/sync), HTTP \
                 push/pull (POST), and raw frames on TCP (tcp://HOST:PORT); a plain GET \
                 gets nothing here.\n",
            )));
            *r.status_mut() = StatusCode::UPGRADE_REQUIRED;
            r.headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            return r;
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        let scheme = if self.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        let name = format!("{scheme}://{peer}");
        let hub = self.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        tokio_tungstenite::tungstenite::protocol::Role::Server,
                        Some(ws_config()),
                    )
                    .await;
                    hub.session(Box::new(WsLink::new(ws, name)), started).await;
                }
                Err(e) => hub.report(&name, &e),
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header"),
        );
        r
    }

    /// Answers a connection past the cap in its own protocol, then closes it.
    async fn refuse_busy(self: Arc<Self>, stream: TcpStream, _permit: OwnedSemaphorePermit) {
        let max = self.config.max_connections;
        let reason = format!("the hub is serving its limit of {max} connections; try again later");
        let deadline = Instant::now() + Duration::from_secs(2);
        let Ok((stream, head)) = self.open(stream, deadline).await else {
            return;
        };
        let bytes = if is_http(&head) {
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
                 Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{reason}",
                reason.len()
            )
            .into_bytes()
        } else {
            match Encoder::default().encode(&Message::Error(reason)) {
                Ok((frame, _)) => frame,
                Err(_) => return,
            }
        };
        crate::link::write_and_close(stream, &bytes, Duration::from_secs(2)).await;
    }
}
