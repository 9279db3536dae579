//! Bounds on what a peer may send, checked before anything it sent is used.
//!
//! Every size, count and index in a protocol message comes from a peer that may be hostile.
//! Frames bound the bytes (the `protocol` crate: a small limit until the handshake
//! completes, a larger one after); decoding bounds the counts that would otherwise grow
//! without limit in memory (events in a batch, peers in a version vector); and
//! [`check_message`] bounds the rest before the session looks at the message. Merkle
//! questions are also checked against the index they ask about (see `MerkleIndex`).
//! ARCHITECTURE.md ("Hostile peers") lists each bound and why it is what it is.

use crate::event::Event;
use crate::merkle::MAX_BUCKET_BITS;
use crate::sync::{Message, SNAPSHOT_PART_BYTES};

/// Events in one `Events` message. Senders batch 4,096 by default (at least 1,000 on slow
/// links); four times that leaves room for a configured batch size.
pub const MAX_EVENTS_PER_MESSAGE: usize = 16_384;
/// Peers in one version vector. A replica's vector names every peer that ever wrote.
pub const MAX_VECTOR_PEERS: usize = 100_000;
/// Peers a replica remembers as known (what each holds, so compaction keeps what they
/// still need). Each handshake names a peer; past this many, a new peer is not recorded:
/// compaction does not wait for it, and if it falls behind the compaction floor it is
/// brought up to date from a snapshot, as a peer unknown to the hub always is. Without the
/// bound, one client claiming many peer ids would pin compaction and grow the stored list
/// (rewritten at each new peer) without limit. `kuzu-sync compact --forget-peer` frees slots.
pub const MAX_KNOWN_PEERS: usize = 4_096;
/// Events a snapshot may stand for (2^53): no replica will hold more, and a forged count
/// near `u64::MAX` would overflow the next counter of its peers.
pub const MAX_EVENT_COUNT: u64 = 1 << 53;
/// Capabilities in a handshake, and the length of each.
pub const MAX_CAPABILITIES: usize = 32;
pub const MAX_CAPABILITY_LEN: usize = 64;
/// Bytes of an auth token.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Bytes of a protocol version string or a sync point checksum.
pub const MAX_SHORT_TEXT: usize = 64;
/// Bytes of an error text that are kept (longer ones are cut when reported).
pub const MAX_ERROR_TEXT: usize = 4096;
/// The entity count a Merkle asker may claim. Bucket bits stop growing long before
/// (`suggested_bucket_bits` caps them at [`MAX_BUCKET_BITS`]); anything larger is a lie.
pub const MAX_MERKLE_LEN: u64 = 1 << 40;
/// How far ahead of this replica's clock a received event's hybrid timestamp may be: a
/// day. An event from further ahead would win every last-writer-wins conflict until then
/// (and one near the end of time would exhaust the clock), so it is refused; it is
/// accepted once the receiver's clock is within a day of it.
pub const MAX_CLOCK_AHEAD_MS: u64 = 24 * 60 * 60 * 1000;
/// Bytes of an identifier (table, column, field name).
pub const MAX_IDENTIFIER_LEN: usize = 128;

/// Checks every count, size and index of `msg` that this module bounds. The error names
/// the message, the field and the value.
pub fn check_message(msg: &Message) -> Result<(), String> {
    let too = |what: &str, got: usize, max: usize| {
        Err(format!(
            "{} with {got} {what} is over the limit of {max}",
            msg.kind()
        ))
    };
    match msg {
        Message::Hello(h) => {
            if h.capabilities.len() > MAX_CAPABILITIES {
                return too("capabilities", h.capabilities.len(), MAX_CAPABILITIES);
            }
            if let Some(c) = h.capabilities.iter().find(|c| c.len() > MAX_CAPABILITY_LEN) {
                return too("bytes in a capability", c.len(), MAX_CAPABILITY_LEN);
            }
            if let Some(t) = &h.auth_token {
                if t.len() > MAX_TOKEN_LEN {
                    return too("bytes of auth token", t.len(), MAX_TOKEN_LEN);
                }
            }
            if h.protocol_version.len() > MAX_SHORT_TEXT {
                return too(
                    "bytes of protocol version",
                    h.protocol_version.len(),
                    MAX_SHORT_TEXT,
                );
            }
            if let Some(sp) = &h.sync_point {
                if sp.checksum.len() > MAX_SHORT_TEXT {
                    return too("bytes of checksum", sp.checksum.len(), MAX_SHORT_TEXT);
                }
            }
            Ok(())
        }
        Message::Welcome(w) => {
            if w.capabilities.len() > MAX_CAPABILITIES {
                return too("capabilities", w.capabilities.len(), MAX_CAPABILITIES);
            }
            if w.protocol_version.len() > MAX_SHORT_TEXT {
                return too(
                    "bytes of protocol version",
                    w.protocol_version.len(),
                    MAX_SHORT_TEXT,
                );
            }
            Ok(())
        }
        Message::Events(events) if events.len() > MAX_EVENTS_PER_MESSAGE => {
            too("events", events.len(), MAX_EVENTS_PER_MESSAGE)
        }
        Message::SnapshotPart(p) if p.bytes.len() > SNAPSHOT_PART_BYTES => {
            too("bytes", p.bytes.len(), SNAPSHOT_PART_BYTES)
        }
        Message::MerkleSummary { len } if *len > MAX_MERKLE_LEN => Err(format!(
            "merkle_summary claims {len} entities, over the limit of {MAX_MERKLE_LEN}"
        )),
        Message::MerkleDescendants { depth, .. } if *depth > MAX_BUCKET_BITS => Err(format!(
            "merkle_descendants asks for depth {depth}, over the tree's most of {MAX_BUCKET_BITS}"
        )),
        Message::MerkleSummaryReply { bucket_bits, .. } if *bucket_bits > MAX_BUCKET_BITS => {
            Err(format!(
                "merkle_summary_reply names {bucket_bits} bucket bits, over the most of \
                 {MAX_BUCKET_BITS}"
            ))
        }
        Message::Tx(m) => crate::tx::check_wire(m),
        _ => Ok(()),
    }
}

/// Containers nested in one MessagePack document (a message, an event, a bundle, a
/// snapshot). Decoding recurses once per level (rmp-serde counts no depth for enums), so
/// an unchecked document of a few KB of nested one-entry maps overflows the stack and
/// aborts the process. Legitimate documents nest a few dozen levels (nested types and
/// values are at most [`crate::schema::MAX_TYPE_DEPTH`] deep).
pub const MAX_NESTING: usize = 100;

/// Checks that `bytes` is one well-formed MessagePack value nesting at most `max_depth`
/// containers, whose every declared length fits in the bytes that follow. Iterative: it
/// reads markers and lengths only, so it cannot itself be made to recurse or allocate
/// more than a stack of `max_depth` counters. Run it before decoding anything a peer sent.
pub fn check_msgpack(bytes: &[u8], max_depth: usize) -> Result<(), String> {
    let mut at = 0usize;
    // Items still to read in each open container.
    let mut open: Vec<u64> = Vec::new();
    // Moves past `n` bytes, if there are that many.
    let skip = |at: &mut usize, n: u64| -> Result<(), String> {
        let end = u64::try_from(*at)
            .ok()
            .and_then(|a| a.checked_add(n))
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or_else(|| format!("a length at byte {at} runs past the end"))?;
        *at = end as usize;
        Ok(())
    };
    // Reads a big-endian length of `n` (1, 2 or 4) bytes.
    let len = |at: &mut usize, n: usize| -> Result<u64, String> {
        let start = *at;
        skip(at, n as u64)?;
        Ok(bytes[start..*at]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    loop {
        let Some(&marker) = bytes.get(at) else {
            return Err(format!("MessagePack cut short at byte {at}"));
        };
        at += 1;
        // (bytes to skip, items a container holds)
        let (payload, items): (u64, Option<u64>) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, None),
            0x80..=0x8f => (0, Some(2 * u64::from(marker & 0x0f))),
            0x90..=0x9f => (0, Some(u64::from(marker & 0x0f))),
            0xa0..=0xbf => (u64::from(marker & 0x1f), None),
            0xc4 | 0xd9 => (len(&mut at, 1)?, None),
            0xc5 | 0xda => (len(&mut at, 2)?, None),
            0xc6 | 0xdb => (len(&mut at, 4)?, None),
            0xc7 => (len(&mut at, 1)? + 1, None),
            0xc8 => (len(&mut at, 2)? + 1, None),
            0xc9 => (len(&mut at, 4)? + 1, None),
            0xca => (4, None),
            0xcb => (8, None),
            0xcc | 0xd0 => (1, None),
            0xcd | 0xd1 => (2, None),
            0xce | 0xd2 => (4, None),
            0xcf | 0xd3 => (8, None),
            0xd4 => (2, None),
            0xd5 => (3, None),
            0xd6 => (5, None),
            0xd7 => (9, None),
            0xd8 => (17, None),
            0xdc => (0, Some(len(&mut at, 2)?)),
            0xdd => (0, Some(len(&mut at, 4)?)),
            0xde => (0, Some(2 * len(&mut at, 2)?)),
            0xdf => (0, Some(2 * len(&mut at, 4)?)),
            0xc1 => {
                return Err(format!(
                    "invalid MessagePack marker 0xc1 at byte {}",
                    at - 1
                ))
            }
        };
        skip(&mut at, payload)?;
        // The value just read fills one item of the innermost open container.
        if let Some(top) = open.last_mut() {
            *top -= 1;
        }
        match items {
            Some(n) if n > 0 => {
                // Every item takes at least one byte: a count past the bytes left is a lie.
                if n > (bytes.len() - at) as u64 {
                    return Err(format!(
                        "a container at byte {at} claims {n} items, more than the bytes left"
                    ));
                }
                if open.len() == max_depth {
                    return Err(format!(
                        "MessagePack nests more than {max_depth} levels deep (at byte {at})"
                    ));
                }
                open.push(n);
            }
            _ => {}
        }
        while open.last() == Some(&0) {
            open.pop();
        }
        if open.is_empty() {
            return if at == bytes.len() {
                Ok(())
            } else {
                Err(format!(
                    "{} bytes after the MessagePack value",
                    bytes.len() - at
                ))
            };
        }
    }
}

/// Whether `name` can be a table, column or field name: 1 to [`MAX_IDENTIFIER_LEN`] bytes,
/// a letter or `_` first, then letters, digits or `_` (Unicode letters and digits count,
/// as in Kuzu's unquoted identifiers). Names never become file names; this keeps them
/// printable and unambiguous in statements and messages.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_IDENTIFIER_LEN
        && (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// Deserializes a list of events, refusing more than [`MAX_EVENTS_PER_MESSAGE`] as it
/// reads (before the rest is decoded or allocated).
pub(crate) fn bounded_events<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Event>, D::Error> {
    bounded_seq(d, MAX_EVENTS_PER_MESSAGE, "events")
}

/// A sequence of at most `max` items; `what` names them in the error.
pub(crate) fn bounded_seq<'de, D, T>(
    d: D,
    max: usize,
    what: &'static str,
) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Visit<T> {
        max: usize,
        what: &'static str,
        item: std::marker::PhantomData<T>,
    }
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a list of at most {} {}", self.max, self.what)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            if let Some(n) = seq.size_hint() {
                if n > self.max {
                    return Err(serde::de::Error::custom(format!(
                        "{n} {} is over the limit of {}",
                        self.what, self.max
                    )));
                }
            }
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
            while let Some(item) = seq.next_element()? {
                if out.len() == self.max {
                    return Err(serde::de::Error::custom(format!(
                        "more than {} {}",
                        self.max, self.what
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Visit {
        max,
        what,
        item: std::marker::PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in [
            "User",
            "_x",
            "a1",
            "Person_knows_Person",
            "été",
            "x".repeat(128).as_str(),
        ] {
            assert!(is_identifier(ok), "{ok:?}");
        }
        for bad in [
            "",
            "1a",
            "a b",
            "../etc",
            "a/b",
            "a.b",
            "a`b",
            "a-b",
            "x".repeat(129).as_str(),
        ] {
            assert!(!is_identifier(bad), "{bad:?}");
        }
    }

    #[test]
    fn msgpack_nesting_is_bounded_without_recursion() {
        // Real messages pass.
        let e = Event {
            id: crate::EventId {
                peer: crate::PeerId::new("a").unwrap(),
                counter: 1,
            },
            deps: crate::VersionVector::new(),
            hlc: crate::Hlc::default(),
            op: crate::Op::Seal,
        };
        let bytes = rmp_serde::to_vec(&Message::Events(vec![e; 3])).unwrap();
        check_msgpack(&bytes, MAX_NESTING).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                check_msgpack(&bytes[..cut], MAX_NESTING).is_err(),
                "cut at {cut}"
            );
        }
        // 100,000 nested one-entry maps: refused at once, no recursion.
        let mut deep = Vec::new();
        for _ in 0..100_000 {
            deep.extend([0x81, 0x00]);
        }
        deep.push(0xc0);
        check_msgpack(&deep, 1 << 20).unwrap();
        let err = check_msgpack(&deep, MAX_NESTING).unwrap_err();
        assert!(err.contains("more than 100 levels"), "{err}");
        // A count larger than the bytes, a length past the end, trailing bytes.
        assert!(check_msgpack(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0], 8).is_err());
        assert!(check_msgpack(&[0xdb, 0, 0, 1, 0, b'a'], 8).is_err());
        assert!(check_msgpack(&[0xc0, 0xc0], 8).is_err());
        assert!(check_msgpack(&[0xc1], 8).is_err());
    }

    #[test]
    fn events_past_the_limit_are_refused_while_decoding() {
        let e = Event {
            id: crate::EventId {
                peer: crate::PeerId::new("a").unwrap(),
                counter: 1,
            },
            deps: crate::VersionVector::new(),
            hlc: crate::Hlc::default(),
            op: crate::Op::Seal,
        };
        let ok = Message::Events(vec![e.clone(); MAX_EVENTS_PER_MESSAGE]);
        let bytes = rmp_serde::to_vec(&ok).unwrap();
        assert_eq!(rmp_serde::from_slice::<Message>(&bytes).unwrap(), ok);
        let over = Message::Events(vec![e; MAX_EVENTS_PER_MESSAGE + 1]);
        let err = rmp_serde::from_slice::<Message>(&rmp_serde::to_vec(&over).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("16385 events is over the limit of 16384"),
            "{err}"
        );
    }
}
