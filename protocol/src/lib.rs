//! Wire formats of kuzu-sync. For now the offline bundle: the events one replica has and
//! another lacks, in a versioned, checksummed, zstd-compressed container.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic   8 bytes  "KZSYNCB\0"
//! version 1 byte   1
//! length  8 bytes  length of the compressed payload
//! payload n bytes  zstd(MessagePack(Bundle::V1(BundleV1)))
//! sha256 32 bytes  of everything before it
//! ```
//!
//! The decoder works over plain bytes and answers a truncated, corrupted or unknown input
//! with an error that says which, never a panic.

pub mod codec;
pub mod frame;
#[cfg(feature = "net")]
pub mod http;
#[cfg(feature = "net")]
pub mod hub;
#[cfg(feature = "net")]
pub mod link;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod txnet;

pub use frame::{FrameDecoder, FrameError};
#[cfg(feature = "net")]
pub use link::{Link, Throttled};
#[cfg(feature = "net")]
pub use net::{
    drive, serve, serve_async, sync_once, watch, watch_async, HubConfig, NetError, SessionReport,
    Shared, DEFAULT_MAX_CONNECTIONS,
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use kuzu_sync_engine::{Event, Snapshot, VersionVector};

pub const MAGIC: &[u8; 8] = b"KZSYNCB\0";
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 8;
const TRAILER_LEN: usize = 32;
/// zstd level for bundles: a good ratio at a modest cost.
const ZSTD_LEVEL: i32 = 9;
/// Refuse to inflate a payload beyond this (a corrupted or hostile length): 4 GiB, or 1 GiB
/// where `usize` has 32 bits (WASM), since `4 << 30` wraps to 0 there and refused every
/// bundle.
const MAX_DECOMPRESSED: usize = if usize::BITS > 32 { 4 << 30 } else { 1 << 30 };

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("not a kuzu-sync bundle (bad magic bytes at offset 0)")]
    BadMagic,
    #[error(
        "bundle format version {0} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u8),
    #[error("bundle is truncated: {needed} bytes needed, {available} present")]
    Truncated { needed: u64, available: u64 },
    #[error("bundle checksum mismatch: the file is corrupted")]
    Checksum,
    #[error("bundle payload cannot be decompressed: {0}")]
    Decompress(String),
    #[error("bundle payload cannot be decoded: {0}")]
    Decode(String),
    #[error("bundle has {0} trailing bytes after the checksum")]
    TrailingBytes(usize),
}

/// The contents of a bundle, version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleV1 {
    /// The replica that made the bundle.
    pub source_peer: String,
    /// The bundle holds the source's events not contained in this vector.
    pub since: VersionVector,
    /// The source's version vector when it made the bundle.
    pub until: VersionVector,
    pub events: Vec<Event>,
    /// When `since` lacks events the source has compacted away: its snapshot. The events
    /// are then those after `since` joined with the snapshot's vector.
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
}

/// A versioned bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bundle {
    V1(BundleV1),
}

impl Bundle {
    pub fn events(&self) -> &[Event] {
        match self {
            Bundle::V1(b) => &b.events,
        }
    }

    pub fn into_events(self) -> Vec<Event> {
        match self {
            Bundle::V1(b) => b.events,
        }
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        match self {
            Bundle::V1(b) => b.snapshot.as_ref(),
        }
    }

    pub fn v1(&self) -> &BundleV1 {
        match self {
            Bundle::V1(b) => b,
        }
    }
}

/// Encodes a bundle.
pub fn encode(bundle: &Bundle) -> Vec<u8> {
    let raw = rmp_serde::to_vec(bundle).expect("bundles always serialize");
    let payload = codec::compress(&raw, ZSTD_LEVEL);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// Decodes a bundle, checking magic, version, length and checksum before touching the
/// payload.
pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            BundleError::Truncated {
                needed: (HEADER_LEN + TRAILER_LEN) as u64,
                available: bytes.len() as u64,
            }
        } else {
            BundleError::BadMagic
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(BundleError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(BundleError::Truncated {
            needed: (HEADER_LEN + TRAILER_LEN) as u64,
            available: bytes.len() as u64,
        });
    }
    if bytes[8] != FORMAT_VERSION {
        return Err(BundleError::UnsupportedVersion(bytes[8]));
    }
    let len = u64::from_le_bytes(bytes[9..17].try_into().expect("8 bytes"));
    let needed = (HEADER_LEN as u64)
        .saturating_add(len)
        .saturating_add(TRAILER_LEN as u64);
    if (bytes.len() as u64) < needed {
        return Err(BundleError::Truncated {
            needed,
            available: bytes.len() as u64,
        });
    }
    let end = needed as usize;
    if bytes.len() > end {
        return Err(BundleError::TrailingBytes(bytes.len() - end));
    }
    let body_end = end - TRAILER_LEN;
    let sum: [u8; 32] = Sha256::digest(&bytes[..body_end]).into();
    if sum[..] != bytes[body_end..end] {
        return Err(BundleError::Checksum);
    }
    let payload = &bytes[HEADER_LEN..body_end];
    // Inflated as a stream, growing with what really comes out (a frame header may claim
    // any content size), and never past the limit.
    let raw = codec::inflate(payload, MAX_DECOMPRESSED)
        .map_err(|e| BundleError::Decompress(e.to_string()))?;
    if raw.len() > MAX_DECOMPRESSED {
        return Err(BundleError::Decompress(format!(
            "the payload inflates past the limit of {MAX_DECOMPRESSED} bytes"
        )));
    }
    kuzu_sync_engine::limits::check_msgpack(&raw, kuzu_sync_engine::limits::MAX_NESTING)
        .map_err(BundleError::Decode)?;
    rmp_serde::from_slice(&raw).map_err(|e| BundleError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests;
