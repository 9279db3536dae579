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
    /// The largest message the other side may send from here on, for transports that
    /// buffer whole messages before the driver sees them (WebSocket). A server's starts at
    /// the handshake limit; the driver raises it once the handshake completes.
    fn set_max_message(&mut self, _bytes: usize) {}
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

/// A transport that adds latency and limits bandwidth, both ways: for testing the adaptive
/// strategy on loopback, or simulating a poor link. Frames are delayed by half the round
/// trip and by their transmission time at `bits_per_second`, without blocking the caller
/// (sends wait in a queue that `flush` releases when due).
#[derive(Debug)]
pub struct ThrottledTransport<T: Transport> {
    inner: T,
    one_way: Duration,
    bits_per_second: Option<u64>,
    outgoing: std::collections::VecDeque<(Instant, Vec<u8>)>,
    out_free: Instant,
    incoming: std::collections::VecDeque<(Instant, Vec<u8>)>,
    in_free: Instant,
    /// The inner transport failed (or closed) with bytes still on their way: they are
    /// delivered first, then this error.
    ended: Option<io::Error>,
}

impl<T: Transport> ThrottledTransport<T> {
    /// `round_trip`: added round-trip latency; `bits_per_second`: None for unlimited.
    pub fn new(inner: T, round_trip: Duration, bits_per_second: Option<u64>) -> Self {
        let now = Instant::now();
        ThrottledTransport {
            inner,
            one_way: round_trip / 2,
            bits_per_second,
            outgoing: Default::default(),
            out_free: now,
            incoming: Default::default(),
            in_free: now,
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

impl<T: Transport> Transport for ThrottledTransport<T> {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let start = self.out_free.max(Instant::now());
        self.out_free = start + self.transmission(frame.len());
        self.outgoing
            .push_back((self.out_free + self.one_way, frame.to_vec()));
        self.flush(Duration::ZERO).map(|_| ())
    }

    fn flush(&mut self, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            while self
                .outgoing
                .front()
                .is_some_and(|(due, _)| *due <= Instant::now())
            {
                let (_, frame) = self.outgoing.pop_front().expect("front");
                self.inner.send(&frame)?;
            }
            let done = self.inner.flush(Duration::from_millis(1))?;
            if self.outgoing.is_empty() {
                return Ok(done);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.incoming.is_empty() {
                if let Some(e) = self.ended.take() {
                    return Err(e);
                }
            }
            let mut got = Vec::new();
            let n = if self.ended.is_some() {
                0
            } else {
                match self.inner.recv(&mut got, Duration::from_millis(1)) {
                    Ok(n) => n,
                    Err(e) if self.incoming.is_empty() => return Err(e),
                    Err(e) => {
                        self.ended = Some(e);
                        0
                    }
                }
            };
            if n > 0 {
                let start = self.in_free.max(Instant::now());
                self.in_free = start + self.transmission(n);
                self.incoming.push_back((self.in_free + self.one_way, got));
            }
            let mut delivered = 0;
            while self
                .incoming
                .front()
                .is_some_and(|(due, _)| *due <= Instant::now())
            {
                let (_, bytes) = self.incoming.pop_front().expect("front");
                delivered += bytes.len();
                buf.extend_from_slice(&bytes);
            }
            // Keep the sends moving while waiting.
            if self.ended.is_none() {
                self.flush(Duration::ZERO)?;
            }
            if delivered > 0 || Instant::now() >= deadline {
                return Ok(delivered);
            }
            if self.ended.is_some() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn close(&mut self) {
        let _ = self.flush(Duration::from_secs(30));
        self.inner.close();
    }

    fn describe(&self) -> String {
        format!("throttled+{}", self.inner.describe())
    }
    fn set_max_message(&mut self, bytes: usize) {
        self.inner.set_max_message(bytes);
    }
}
