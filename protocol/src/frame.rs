//! Framing of sync messages on a byte stream.
//!
//! ```text
//! length  u32 LE   bytes that follow (flags + body), at most the frame limit
//! flags   u8       bit 0: body is zstd-compressed; other bits must be 0
//! body    bytes    MessagePack of `engine::sync::Message`
//! ```
//!
//! Frames whose MessagePack is larger than the compression threshold are compressed when
//! both sides announced the `zstd` capability. The decoder works over plain bytes: given a
//! prefix of a stream it answers "need more", a message, or an error naming what is wrong,
//! never a panic.

use kuzu_sync_engine::sync::Message;

/// Default largest frame, compressed or not: 64 MiB.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
/// Largest frame before the handshake completes: a `Hello`, `Welcome` or `Refused` is far
/// smaller, and a connection nobody has authenticated gets no more.
pub const HANDSHAKE_MAX_FRAME: usize = 64 << 10;
/// Frames smaller than this are sent uncompressed: zstd gains little on them.
pub const DEFAULT_COMPRESS_THRESHOLD: usize = 512;
const ZSTD_LEVEL: i32 = 3;
const FLAG_ZSTD: u8 = 1;
const HEADER: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame is empty (no flags byte)")]
    Empty,
    #[error("frame has unknown flags {0:#04x}")]
    BadFlags(u8),
    #[error("frame body cannot be decompressed: {0}")]
    Decompress(String),
    #[error("unknown message type: {0}")]
    UnknownMessage(String),
    #[error("frame body is not a valid message: {0}")]
    Decode(String),
}

/// Encodes messages into frames.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub compress: bool,
    pub threshold: usize,
    pub max_frame: usize,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            compress: false,
            threshold: DEFAULT_COMPRESS_THRESHOLD,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Sizes of one encoded frame, for traffic statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameStats {
    /// MessagePack bytes before compression.
    pub raw: usize,
    /// Bytes on the wire, header included.
    pub wire: usize,
}

impl Encoder {
    /// One frame for `msg`. Fails only if the frame would be over the limit.
    pub fn encode(&self, msg: &Message) -> Result<(Vec<u8>, FrameStats), FrameError> {
        let raw = rmp_serde::to_vec(msg).expect("messages always serialize");
        let (flags, body) = if self.compress && raw.len() >= self.threshold {
            let z = crate::codec::compress(&raw, ZSTD_LEVEL);
            if z.len() < raw.len() {
                (FLAG_ZSTD, z)
            } else {
                (0, raw.clone())
            }
        } else {
            (0, raw.clone())
        };
        let len = body.len() + 1;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.push(flags);
        out.extend_from_slice(&body);
        let stats = FrameStats {
            raw: raw.len(),
            wire: out.len(),
        };
        Ok((out, stats))
    }
}

/// The outcome of decoding at the start of a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A whole message, and how many bytes of the buffer it took.
    Message(Box<Message>, usize),
    /// The buffer holds only part of a frame: at least this many bytes are needed in all.
    NeedMore(usize),
}

/// Decodes the frame at the start of `buf`.
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<Decoded, FrameError> {
    if buf.len() < 4 {
        return Ok(Decoded::NeedMore(4));
    }
    let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let total = 4 + len;
    if buf.len() < total {
        return Ok(Decoded::NeedMore(total));
    }
    let flags = buf[4];
    let body = &buf[HEADER..total];
    let msg = match flags {
        0 => decode_body(body)?,
        FLAG_ZSTD => decode_body(&decompress(body, max_frame)?)?,
        other => return Err(FrameError::BadFlags(other)),
    };
    Ok(Decoded::Message(Box::new(msg), total))
}

/// Inflates a compressed body, refusing to grow past `max` bytes (a zstd bomb).
fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    let bad = |e: std::io::Error| FrameError::Decompress(e.to_string());
    // Grows as the body inflates, never past `max + 1`: nothing is reserved on the
    // strength of the compressed size.
    let out = crate::codec::inflate(body, max).map_err(bad)?;
    if out.len() > max {
        return Err(FrameError::TooLarge {
            len: out.len(),
            max,
        });
    }
    Ok(out)
}

fn decode_body(body: &[u8]) -> Result<Message, FrameError> {
    // Checked first, without recursion: decoding recurses once per nesting level.
    kuzu_sync_engine::limits::check_msgpack(body, kuzu_sync_engine::limits::MAX_NESTING)
        .map_err(FrameError::Decode)?;
    rmp_serde::from_slice(body).map_err(|e| {
        let text = e.to_string();
        if text.contains("unknown variant") {
            FrameError::UnknownMessage(text)
        } else {
            FrameError::Decode(text)
        }
    })
}

/// A stream decoder: push bytes as they arrive, take messages as they complete.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if any. After an error the stream cannot be trusted:
    /// the caller closes the connection.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        match decode_frame(&self.buf[self.start..], self.max_frame)? {
            Decoded::Message(m, used) => {
                self.start += used;
                if self.start > (1 << 20) && self.start * 2 > self.buf.len() {
                    self.buf.drain(..self.start);
                    self.start = 0;
                }
                Ok(Some(*m))
            }
            Decoded::NeedMore(_) => Ok(None),
        }
    }

    /// Changes the largest frame accepted from here on (raised once a handshake completes).
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame;
    }

    /// Gives back the buffer's memory once everything received is decoded and the buffer
    /// grew past 64 KiB: an idle connection keeps no large buffer.
    pub fn release_idle(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > 64 << 10 {
                self.buf = Vec::new();
            }
        }
    }

    /// The size (header included) of the frame being received, if its header is here and
    /// its body is not complete yet.
    pub fn incomplete_frame(&self) -> Option<usize> {
        let rest = &self.buf[self.start..];
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().expect("4 bytes")) as usize;
        (rest.len() < 4 + len).then_some(4 + len)
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests;
