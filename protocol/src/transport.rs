//! Transports move frames' bytes between two sides; they know nothing of messages.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A bidirectional byte channel carrying frames (see [`crate::frame`]).
///
/// Implement it to add a transport: the sync session runs unchanged over it.
pub trait Transport: Send {
    /// Sends one whole frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Waits up to `timeout` for bytes and appends them to `buf`. Returns how many arrived
    /// (0 if none in time). A closed channel is an error of kind `UnexpectedEof`.
    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<usize>;
    /// Closes the channel (best effort).
    fn close(&mut self);
    /// What this is, for messages: `tcp://127.0.0.1:7000`.
    fn describe(&self) -> String;
}

/// Frames straight on a TCP stream.
#[derive(Debug)]
pub struct TcpTransport {
    stream: TcpStream,
    peer: String,
    chunk: Vec<u8>,
}

impl TcpTransport {
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Self> {
        use std::net::ToSocketAddrs;
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address"));
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => return Self::from_stream(s),
                Err(e) => last = e,
            }
        }
        Err(last)
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
        })
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.stream.write_all(frame)
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
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn describe(&self) -> String {
        format!("tcp://{}", self.peer)
    }
}
