//! The codec of the in-memory log's sealed blocks: zstd frames made by the pure-Rust
//! ruzstd, with a match finder of our own, sized for one block.
//!
//! ruzstd's own (`CompressionLevel::Fastest`) is made for 128 KiB windows: for each 32 KiB
//! block it took a 128 KiB space and a 256 KiB table, and those 256 KiB tables were the
//! allocations that grew the WASM memory during the engine bench. It also matches each
//! 5 bytes against their first occurrence only. [`BlockMatcher`] takes a space of the
//! block's size, a 32 KiB table and 2 bytes a position of hash chains, and takes the
//! longest of the latest 16 candidates (with one step of lazy matching). On the engine
//! bench's log (100,000 events, 10.8 MB of MessagePack in 330 blocks) the blocks hold
//! 1,490,261 bytes instead of 2,283,065, in about the same time. (The C zstd at level 1
//! makes 903,185: it also uses repeated offsets, which ruzstd's encoder does not emit.)
//!
//! Any zstd decoder reads the frames; these are only ever kept in memory.

use std::borrow::Cow;

use ruzstd::decoding::FrameDecoder;
use ruzstd::encoding::{CompressionLevel, FrameCompressor, Matcher, Sequence};

/// zstd's largest block: a space (matched on its own) holds at most this.
const MAX_SPACE: usize = 128 << 10;
/// The shortest match taken (zstd's least is 3).
const MIN_MATCH: usize = 4;
/// Bits of the hash of a position's first `MIN_MATCH` bytes.
const HASH_BITS: u32 = 13;
/// Earlier positions of the same hash tried for each position.
const CHAIN_DEPTH: usize = 16;

thread_local! {
    /// Where frames are written before they are copied out at their size: the compressor
    /// writes a frame's checksum after its block, which doubled a `Vec` drain that the
    /// store then shrank (a realloc and a hole per sealed block).
    static DRAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `raw` as one zstd frame, in a `Vec` of its exact size.
pub fn pack(raw: &[u8]) -> Vec<u8> {
    DRAIN.with_borrow_mut(|drain| {
        drain.clear();
        let mut compressor = FrameCompressor::new_with_matcher(
            BlockMatcher::new(raw.len()),
            CompressionLevel::Fastest,
        );
        compressor.set_source(raw);
        compressor.set_drain(&mut *drain);
        compressor.compress();
        drop(compressor);
        drain.as_slice().to_vec()
    })
}

/// The `raw_len` bytes of the frame `packed`, or why not.
pub fn unpack(packed: &[u8], raw_len: usize) -> Result<Cow<'static, [u8]>, String> {
    let mut decoder = FrameDecoder::new();
    let mut raw = Vec::with_capacity(raw_len);
    decoder
        .decode_all_to_vec(packed, &mut raw)
        .map_err(|e| e.to_string())?;
    if raw.len() != raw_len || !decoder.is_finished() {
        return Err(format!(
            "the block holds {} bytes, not {raw_len}",
            raw.len()
        ));
    }
    let (stated, computed) = (
        decoder.get_checksum_from_data(),
        decoder.get_calculated_checksum(),
    );
    if stated.is_some() && stated != computed {
        return Err("the block's checksum does not match".into());
    }
    Ok(Cow::Owned(raw))
}

/// Finds matches within each space (one per zstd block), through hash chains.
struct BlockMatcher {
    space_len: usize,
    data: Vec<u8>,
    /// Per hash: its latest position + 1 (0: none yet).
    head: Vec<u32>,
    /// Per position: how far back the previous one of its hash is (0: none, or too far).
    prev: Vec<u16>,
}

impl BlockMatcher {
    /// For a frame of `len` bytes: one space if it fits in a zstd block (one more byte
    /// than the data, so the compressor sees its end in the first read).
    fn new(len: usize) -> Self {
        BlockMatcher {
            space_len: (len + 1).min(MAX_SPACE),
            data: Vec::new(),
            head: Vec::new(),
            prev: Vec::new(),
        }
    }
}

fn hash(b: &[u8]) -> usize {
    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let chunks = a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .take_while(|(x, y)| x == y)
        .count();
    let n = chunks * 8;
    n + a[n..]
        .iter()
        .zip(&b[n..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Enters position `i` of `data` into the chains.
fn insert(data: &[u8], head: &mut [u32], prev: &mut [u16], i: usize) {
    if i + MIN_MATCH > data.len() {
        return;
    }
    let h = hash(&data[i..]);
    let last = head[h] as usize;
    prev[i] = match last {
        0 => 0,
        l => u16::try_from(i + 1 - l).unwrap_or(0),
    };
    head[h] = (i + 1) as u32;
}

/// The longest match for position `i` among earlier ones: (offset, length).
fn longest(data: &[u8], head: &[u32], prev: &[u16], i: usize) -> Option<(usize, usize)> {
    if i + MIN_MATCH > data.len() {
        return None;
    }
    let mut candidate = head[hash(&data[i..])] as usize;
    let mut best: Option<(usize, usize)> = None;
    for _ in 0..CHAIN_DEPTH {
        if candidate == 0 {
            break;
        }
        let c = candidate - 1;
        // Only a match longer than the best so far counts: check its last byte first.
        let best_len = best.map_or(MIN_MATCH - 1, |(_, l)| l);
        if i + best_len < data.len() && data[c + best_len] == data[i + best_len] {
            let len = common_prefix(&data[c..], &data[i..]);
            if len > best_len {
                best = Some((i - c, len));
            }
        }
        match prev[c] as usize {
            0 => break,
            d => candidate = c + 1 - d,
        }
    }
    best
}

impl Matcher for BlockMatcher {
    fn get_next_space(&mut self) -> Vec<u8> {
        vec![0; self.space_len]
    }

    fn get_last_space(&mut self) -> &[u8] {
        &self.data
    }

    fn commit_space(&mut self, space: Vec<u8>) {
        self.data = space;
    }

    fn skip_matching(&mut self) {}

    fn start_matching(&mut self, mut handle_sequence: impl for<'a> FnMut(Sequence<'a>)) {
        let data = &self.data;
        self.head.clear();
        self.head.resize(1 << HASH_BITS, 0);
        self.prev.clear();
        self.prev.resize(data.len(), 0);
        let (head, prev) = (&mut self.head, &mut self.prev);
        let mut i = 0;
        let mut literals_from = 0;
        while i + MIN_MATCH <= data.len() {
            let Some((offset, mut len)) = longest(data, head, prev, i) else {
                insert(data, head, prev, i);
                i += 1;
                continue;
            };
            // One step of lazy matching: a longer match at the next position wins.
            insert(data, head, prev, i);
            if let Some((o, l)) = longest(data, head, prev, i + 1) {
                if l > len {
                    i += 1;
                    len = l;
                    insert(data, head, prev, i);
                    for j in i + 1..i + len {
                        insert(data, head, prev, j);
                    }
                    handle_sequence(Sequence::Triple {
                        literals: &data[literals_from..i],
                        offset: o,
                        match_len: len,
                    });
                    i += len;
                    literals_from = i;
                    continue;
                }
            }
            for j in i + 1..i + len {
                insert(data, head, prev, j);
            }
            handle_sequence(Sequence::Triple {
                literals: &data[literals_from..i],
                offset,
                match_len: len,
            });
            i += len;
            literals_from = i;
        }
        if literals_from < data.len() {
            handle_sequence(Sequence::Literals {
                literals: &data[literals_from..],
            });
        }
        self.head = Vec::new();
        self.prev = Vec::new();
    }

    fn reset(&mut self, _level: CompressionLevel) {
        self.data = Vec::new();
    }

    fn window_size(&self) -> u64 {
        self.space_len as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(raw: &[u8]) -> usize {
        let packed = pack(raw);
        assert_eq!(unpack(&packed, raw.len()).unwrap().as_ref(), raw);
        // Any zstd decoder reads it.
        assert_eq!(
            kuzu_sync_protocol::codec::inflate(&packed, raw.len()).unwrap(),
            raw
        );
        packed.len()
    }

    #[test]
    fn blocks_round_trip() {
        round_trip(b"");
        round_trip(b"a");
        round_trip(b"abcd");
        round_trip(&[7; 100_000]);
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"person {i}\"}}").into_bytes())
            .collect();
        assert!(text.len() > MAX_SPACE);
        let n = round_trip(&text[..33_000]);
        assert!(n < 33_000 / 4, "{n}");
        round_trip(&text);
        let noise: Vec<u8> = (0..50_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        round_trip(&noise);
    }

    #[test]
    fn a_cut_or_changed_block_is_refused() {
        let raw: Vec<u8> = (0..5_000u32)
            .flat_map(|i| (i % 300).to_le_bytes())
            .collect();
        let packed = pack(&raw);
        assert!(unpack(&packed[..packed.len() - 1], raw.len()).is_err());
        assert!(unpack(&packed, raw.len() + 1).is_err());
        let mut changed = packed.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert!(unpack(&changed, raw.len()).is_err());
    }
}
