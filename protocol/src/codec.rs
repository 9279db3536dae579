//! zstd for frames and bundles: the C library (`zstd` crate, feature `zstd-c`, the default)
//! where it builds, else a pure-Rust one (`ruzstd`), which builds for
//! `wasm32-unknown-unknown`, where the C library does not (no C toolchain or libc there).
//! Both read every zstd frame the other writes (tested below), so native and WASM replicas
//! exchange compressed frames and bundles either way. `ruzstd` compresses at its fastest
//! level (about zstd's level 1) whatever level the C library is given (3 for frames, 9
//! for bundles).

use std::io::{self, Read};

/// `raw`, compressed as one zstd frame, at `level` with the C library.
pub fn compress(raw: &[u8], level: i32) -> Vec<u8> {
    #[cfg(feature = "zstd-c")]
    {
        c::compress(raw, level)
    }
    #[cfg(not(feature = "zstd-c"))]
    {
        let _ = level;
        rust::compress(raw)
    }
}

/// Inflates one zstd frame, reading at most `max + 1` bytes of output (so that a result
/// longer than `max` means "over the limit"), growing the buffer with what really comes
/// out: nothing is reserved on the strength of the compressed size or a claimed content
/// size.
pub fn inflate(body: &[u8], max: usize) -> io::Result<Vec<u8>> {
    #[cfg(feature = "zstd-c")]
    {
        c::inflate(body, max)
    }
    #[cfg(not(feature = "zstd-c"))]
    {
        rust::inflate(body, max)
    }
}

fn read_bounded(reader: impl Read, body_len: usize, max: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body_len.min(max));
    reader.take(max as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(feature = "zstd-c")]
mod c {
    pub fn compress(raw: &[u8], level: i32) -> Vec<u8> {
        zstd::bulk::compress(raw, level).expect("in-memory zstd cannot fail")
    }

    pub fn inflate(body: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
        super::read_bounded(zstd::stream::read::Decoder::new(body)?, body.len(), max)
    }
}

#[cfg_attr(feature = "zstd-c", allow(dead_code))]
mod rust {
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    pub fn compress(raw: &[u8]) -> Vec<u8> {
        compress_to_vec(raw, CompressionLevel::Fastest)
    }

    pub fn inflate(body: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        let mut decoder =
            ruzstd::decoding::StreamingDecoder::new(body).map_err(|e| bad(e.to_string()))?;
        let out = super::read_bounded(&mut decoder, body.len(), max)?;
        if out.len() > max {
            return Ok(out);
        }
        // The C library refuses a frame that does not finish, and so must this, or the two
        // would accept different bodies (ruzstd reports most cuts itself; this makes sure).
        if !decoder.decoder.is_finished() {
            return Err(bad("the zstd frame is cut short".into()));
        }
        let (stated, computed) = (
            decoder.decoder.get_checksum_from_data(),
            decoder.decoder.get_calculated_checksum(),
        );
        if stated.is_some() && stated != computed {
            return Err(bad("the zstd frame's checksum does not match".into()));
        }
        Ok(out)
    }
}

#[cfg(all(test, feature = "zstd-c"))]
mod tests {
    use super::{c, rust};

    fn payloads() -> Vec<Vec<u8>> {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("event {i} of peer p{}; ", i % 7).into_bytes())
            .collect();
        let noise: Vec<u8> = (0..100_000u64)
            .map(|i| (i.wrapping_mul(6364136223846793005).rotate_left(17) >> 24) as u8)
            .collect();
        vec![Vec::new(), b"x".to_vec(), text, noise]
    }

    /// Each implementation reads what the other writes, exactly.
    #[test]
    fn c_and_rust_read_each_other() {
        for p in payloads() {
            let from_c = c::compress(&p, 3);
            let from_rust = rust::compress(&p);
            assert_eq!(rust::inflate(&from_c, p.len()).unwrap(), p);
            assert_eq!(c::inflate(&from_rust, p.len()).unwrap(), p);
            assert_eq!(rust::inflate(&from_rust, p.len()).unwrap(), p);
        }
    }

    /// A frame cut between two of its blocks (or near there) is refused by both, not
    /// returned as the blocks before the cut.
    #[test]
    fn a_frame_cut_between_blocks_is_refused() {
        // Incompressible, so stored as raw blocks of 128 KiB + a 3-byte header each.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for z in [c::compress(&noise, 3), rust::compress(&noise)] {
            let mut cuts = 0;
            for k in 1..=2usize {
                for p in (k * 131_075).saturating_sub(8)..(k * 131_075 + 24).min(z.len()) {
                    cuts += 1;
                    assert!(rust::inflate(&z[..p], 1 << 20).is_err(), "cut at {p}");
                    assert!(c::inflate(&z[..p], 1 << 20).is_err(), "cut at {p}");
                }
            }
            assert!(
                cuts > 40 && z.len() > 290_000,
                "{cuts} cuts of {} bytes",
                z.len()
            );
        }
    }

    /// Both stop at the bound: a body that inflates past `max` yields `max + 1` bytes, not
    /// the whole output; garbage is an error, not a panic.
    #[test]
    fn both_stop_at_the_bound() {
        let big = vec![7u8; 10 << 20];
        let z = c::compress(&big, 3);
        assert!(z.len() < 4096, "{}", z.len());
        assert_eq!(c::inflate(&z, 1000).unwrap().len(), 1001);
        assert_eq!(rust::inflate(&z, 1000).unwrap().len(), 1001);
        for bad in [&b"not zstd at all"[..], &z[..z.len() / 2]] {
            assert!(rust::inflate(bad, 16 << 20).is_err(), "{} bytes", bad.len());
            assert!(c::inflate(bad, 16 << 20).is_err(), "{} bytes", bad.len());
        }
    }
}
