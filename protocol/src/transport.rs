//! Transports move frames' bytes between two sides; they know nothing of messages.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// A bidirectional byte channel carrying frames (see [`crate::frame`]).
///
/// Implement it to add a transport: the sync session runs unchanged over it.
///
/// Sending must not block for long: both sides of a session send at once, and a side
/// stuck writing into a full socket while the other does the same would never read. So
/// `send` queues (writing what it can at once) and `flush` writes for a bounded time;
/// the session driver alternates `flush` and `recv`.
pub trait Transport: Send {
    /// Queues one whole frame, writing what can be written without waiting.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Writes queued bytes for at most `timeout`. `Ok(true)` when nothing is left queued.
    fn flush(&mut self, timeout: Duration) -> io::Result<bool>;
    /// Waits up to `timeout` for bytes and appends them to `buf`. Returns how many arrived
    /// (0 if none in time). A closed channel is an error of kind `UnexpectedEof`.
    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize>;
    /// Closes the channel (best effort).
    fn close(&mut self);
    /// What this is, for messages: `tcp://127.0.0.1:7000`.
    fn describe(&self) -> String;
    /// How long the driver should wait in `recv` between looks for local changes, if
    /// this transport wants something other than the driver's default (a polling
    /// transport wants longer waits).
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
}

/// Frames straight on a TCP stream.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
    peer: String,
    chunk: Vec<u8>,
    /// Queued bytes, written from `written` on.
    out: Vec<u8>,
    written: usize,
}

/// Connects to `HOST:PORT`, trying each address it resolves to, with Nagle off.
pub fn connect_tcp(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl TcpTransport {
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Self> {
        Self::from_stream(connect_tcp(addr, timeout)?)
    }

    pub fn from_stream(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        Ok(TcpTransport {
            stream,
            peer,
            chunk: vec![0; 256 << 10],
            out: Vec::new(),
            written: 0,
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(frame);
        self.flush(Duration::from_millis(1)).map(|_| ())
    }

    fn flush(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        while self.written < self.out.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            // A zero timeout would mean "block forever".
            self.stream
                .set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(true)
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        match self.stream.read(&mut self.chunk) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} closed the connection", self.describe()),
            )),
            Ok(n) => {
                buf.extend_from_slice(&self.chunk[..n]);
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn close(&mut self) {
        let _ = self.flush(Duration::from_secs(5));
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn describe(&self) -> String {
        format!("tcp://{}", self.peer)
    }
}
