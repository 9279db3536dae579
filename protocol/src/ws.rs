//! WebSocket transport: one binary WebSocket message per frame.
//!
//! Plain `ws://` over a blocking [`TcpStream`] (no TLS: put a reverse proxy in front for
//! `wss://`). Text and pong messages are ignored, pings are answered, a close message or a
//! dropped connection ends the channel with an `UnexpectedEof` error.

use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, Message, WebSocket};

use crate::frame::DEFAULT_MAX_FRAME;
use crate::transport::Transport;

/// Largest WebSocket message accepted: the largest frame and its 4-byte length.
const MAX_MESSAGE: usize = DEFAULT_MAX_FRAME + 4;
/// Largest HTTP head of an upgrade request the hub waits for.
const MAX_UPGRADE_HEAD: usize = 16 << 10;
/// How long closing waits for the other side to acknowledge.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// A WebSocket connection carrying frames.
#[derive(Debug)]
pub struct WsTransport {
    socket: WebSocket<TcpStream>,
    peer: String,
    closed: bool,
}

fn config(max: usize) -> WebSocketConfig {
    // A frame travels as one unfragmented message: both limits must fit the largest.
    WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

impl WsTransport {
    /// Connects to `ws://HOST:PORT/PATH` (port 80 if none is given).
    pub fn connect(url: &str, timeout: Duration) -> io::Result<Self> {
        let authority = authority(url)?;
        let stream = crate::transport::connect_tcp(&authority, timeout)?;
        let peer = peer_name(stream.peer_addr());
        // The handshake must not hang on a silent server.
        let timeout = timeout.max(Duration::from_millis(1));
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let (socket, _response) =
            tungstenite::client::client_with_config(url, stream, Some(config(MAX_MESSAGE)))
                .map_err(|e| handshake_error(e, &format!("ws://{peer}")))?;
        socket.get_ref().set_write_timeout(None)?;
        Ok(WsTransport {
            socket,
            peer,
            closed: false,
        })
    }

    /// Completes the server side of the upgrade on an accepted stream whose first bytes are
    /// `GET `. A plain `GET` that is no WebSocket upgrade is answered with
    /// `426 Upgrade Required` and an explanation, and fails.
    pub fn accept(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let peer = peer_name(stream.peer_addr());
        let timeout = Duration::from_secs(10);
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        if !is_upgrade(&stream)? {
            refuse_plain_get(&stream);
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("ws://{peer}: a GET request that is no WebSocket upgrade"),
            ));
        }
        // Until the session's handshake completes, a client may send no more than a
        // handshake frame: tungstenite reserves what a frame header announces.
        let socket = tungstenite::accept_with_config(
            stream,
            Some(config(crate::frame::HANDSHAKE_MAX_FRAME + 4)),
        )
        .map_err(|e| handshake_error(e, &format!("ws://{peer}")))?;
        socket.get_ref().set_write_timeout(None)?;
        Ok(WsTransport {
            socket,
            peer,
            closed: false,
        })
    }

    fn eof(&self) -> io::Error {
        io::Error::new(
            ErrorKind::UnexpectedEof,
            format!("{} closed the connection", self.describe()),
        )
    }

    /// Maps an error of the WebSocket layer to the transport's I/O error.
    fn error(&mut self, e: WsError) -> io::Error {
        match e {
            WsError::Io(e) => {
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) {
                    self.closed = true;
                }
                e
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                self.closed = true;
                self.eof()
            }
            WsError::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
                self.closed = true;
                self.eof()
            }
            other => {
                self.closed = true;
                io::Error::new(
                    ErrorKind::InvalidData,
                    format!("{}: WebSocket error: {other}", self.describe()),
                )
            }
        }
    }
}

/// `HOST:PORT` of a `ws://` URL, with port 80 if none is given.
fn authority(url: &str) -> io::Result<String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!("{url:?} is not a ws:// URL (wss:// is not supported)"),
        )
    })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("{url:?}: expected ws://HOST:PORT/PATH"),
        ));
    }
    // A port is present unless the authority is a bare name or a bracketed IPv6 address.
    let has_port = match authority.rfind(':') {
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    Ok(if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    })
}

fn peer_name(addr: io::Result<SocketAddr>) -> String {
    addr.map(|a| a.to_string()).unwrap_or_else(|_| "?".into())
}

fn handshake_error<R: tungstenite::handshake::HandshakeRole>(
    e: HandshakeError<R>,
    name: &str,
) -> io::Error {
    match e {
        HandshakeError::Interrupted(_) => io::Error::new(
            ErrorKind::TimedOut,
            format!("{name}: the WebSocket handshake timed out"),
        ),
        HandshakeError::Failure(WsError::Io(e)) => e,
        HandshakeError::Failure(WsError::Http(response)) => io::Error::new(
            ErrorKind::ConnectionRefused,
            format!(
                "{name}: the server refused the WebSocket upgrade with HTTP {}",
                response.status()
            ),
        ),
        HandshakeError::Failure(e) => io::Error::new(
            ErrorKind::InvalidData,
            format!("{name}: WebSocket handshake failed: {e}"),
        ),
    }
}

/// Peeks at the request head (without consuming it) and tells whether it asks for a
/// WebSocket upgrade.
fn is_upgrade(stream: &TcpStream) -> io::Result<bool> {
    let mut buf = vec![0u8; MAX_UPGRADE_HEAD];
    let start = Instant::now();
    loop {
        let n = stream.peek(&mut buf)?;
        let head = &buf[..n];
        let end = head.windows(4).position(|w| w == b"\r\n\r\n");
        if end.is_some() || n == buf.len() {
            let head = String::from_utf8_lossy(&head[..end.unwrap_or(n)]).to_ascii_lowercase();
            return Ok(head.lines().skip(1).any(|line| {
                line.split_once(':').is_some_and(|(name, value)| {
                    name.trim() == "upgrade" && value.trim().contains("websocket")
                })
            }));
        }
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "connection closed in the WebSocket upgrade request",
            ));
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(io::Error::new(
                ErrorKind::TimedOut,
                "the WebSocket upgrade request did not arrive in 10 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Answers a plain `GET` (a browser, a health check) with an explanation.
fn refuse_plain_get(stream: &TcpStream) {
    use std::io::Write;
    let body = "This is a kuzu-sync hub. Connect with a WebSocket (ws://HOST:PORT/PATH), \
                HTTP push/pull (POST, http://HOST:PORT/PATH) or raw TCP (tcp://HOST:PORT).\n";
    let response = format!(
        "HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = stream;
    let _ = s.write_all(response.as_bytes());
    let _ = s.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

impl Transport for WsTransport {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        if self.closed {
            return Err(self.eof());
        }
        // Queue the message; tungstenite keeps what the socket does not take now.
        self.socket
            .get_ref()
            .set_write_timeout(Some(Duration::from_millis(1)))?;
        match self.socket.write(Message::Binary(frame.to_vec().into())) {
            Ok(()) => self.flush(Duration::from_millis(1)).map(|_| ()),
            Err(WsError::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                Ok(())
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn flush(&mut self, timeout: Duration) -> io::Result<bool> {
        if self.closed {
            return Err(self.eof());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.socket
                .get_ref()
                .set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.socket.flush() {
                Ok(()) => return Ok(true),
                Err(WsError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(self.error(e)),
            }
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize> {
        if self.closed {
            return Err(self.eof());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero timeout would mean "block forever".
            self.socket
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            // On a timeout, tungstenite keeps what it has read of a message and resumes.
            match self.socket.read() {
                Ok(Message::Binary(data)) if !data.is_empty() => {
                    buf.extend_from_slice(&data);
                    return Ok(data.len());
                }
                Ok(Message::Ping(_)) => {
                    // The pong is queued by tungstenite: send it now.
                    if let Err(e) = self.socket.flush() {
                        return Err(self.error(e));
                    }
                }
                Ok(Message::Close(_)) => {
                    // Complete the closing handshake (the reply is queued), then report.
                    let _ = self.socket.flush();
                    self.closed = true;
                    let _ = self.socket.get_ref().shutdown(Shutdown::Both);
                    return Err(self.eof());
                }
                Ok(_) => {} // text, pong, empty binary: nothing for us
                Err(WsError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(self.error(e)),
            }
            if Instant::now() >= deadline {
                return Ok(0);
            }
        }
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        let _ = self.flush(Duration::from_secs(5));
        self.closed = true;
        // Send our close message, then give the other side a moment to answer so the
        // frames before it are not lost to a reset.
        if self.socket.close(None).is_ok() {
            let deadline = Instant::now() + CLOSE_WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero()
                    || self
                        .socket
                        .get_ref()
                        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                        .is_err()
                {
                    break;
                }
                match self.socket.read() {
                    Ok(_) => {}
                    Err(WsError::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        }
        let _ = self.socket.get_ref().shutdown(Shutdown::Both);
    }

    fn describe(&self) -> String {
        format!("ws://{}", self.peer)
    }
    fn set_max_message(&mut self, bytes: usize) {
        self.socket.set_config(|c| {
            c.max_message_size = Some(bytes);
            c.max_frame_size = Some(bytes);
        });
    }
}

#[cfg(test)]
pub(crate) mod tests;
