//! Valid inputs for the seed corpora, and the input layouts the decoder targets share with
//! them.

use kuzu_sync_engine::antientropy;
use kuzu_sync_engine::sync::{
    Hello, Message, Refused, SnapshotPart, SyncMode, Welcome, CAP_SNAPSHOT, CAP_ZSTD,
    PROTOCOL_VERSION,
};
use kuzu_sync_engine::VersionVector;
use kuzu_sync_protocol::frame::Encoder;
use kuzu_sync_protocol::{Bundle, BundleV1, FORMAT_VERSION, MAGIC};
use sha2::{Digest, Sha256};

use crate::fixture::{fixture, reopen, CLIENT, HUB_CLOCK};

/// `frame_decoder` input: the first byte picks the frame limit (bits 0–1, see
/// [`frame_limit`]) and seeds the chunk sizes (bits 2–7); the rest is the byte stream.
pub fn frame_limit(control: u8) -> usize {
    match control & 3 {
        0 => kuzu_sync_protocol::frame::DEFAULT_MAX_FRAME,
        1 => 4096,
        2 => 64,
        _ => 1,
    }
}

/// `bundle_decoder` input: the first byte `% 3` is the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleMode {
    /// The rest is the bundle file.
    Raw,
    /// The rest is the (zstd) payload: header and checksum are made to fit, so the
    /// decompressor is reached.
    Payload,
    /// The rest is the MessagePack inside: compressed and wrapped to fit, so the
    /// MessagePack decoder is reached.
    Inner,
}

impl BundleMode {
    pub fn of(byte: u8) -> Self {
        match byte % 3 {
            0 => BundleMode::Raw,
            1 => BundleMode::Payload,
            _ => BundleMode::Inner,
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            BundleMode::Raw => 0,
            BundleMode::Payload => 1,
            BundleMode::Inner => 2,
        }
    }
}

/// A bundle file around `payload`, with the right length and checksum (the layout of
/// protocol/src/lib.rs).
pub fn wrap_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 1 + 8 + payload.len() + 32);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// The bundle bytes a `bundle_decoder` input stands for.
pub fn bundle_bytes(mode: BundleMode, rest: &[u8]) -> Vec<u8> {
    match mode {
        BundleMode::Raw => rest.to_vec(),
        BundleMode::Payload => wrap_payload(rest),
        BundleMode::Inner => {
            wrap_payload(&zstd::bulk::compress(rest, 1).expect("in-memory zstd cannot fail"))
        }
    }
}

/// A real bundle: the fixture hub's events after its first four.
pub fn bundle() -> Bundle {
    let hub = reopen(&fixture().hub, HUB_CLOCK);
    let since: VersionVector = [(hub.peer().clone(), 4)].into_iter().collect();
    Bundle::V1(BundleV1 {
        source_peer: hub.peer().to_string(),
        since: since.clone(),
        until: hub.version_vector().clone(),
        events: hub.events_since(&since).unwrap(),
        snapshot: None,
    })
}

/// A bundle with a snapshot: the compacted hub's, for a replica with nothing.
pub fn bundle_with_snapshot() -> Bundle {
    let hub = reopen(&fixture().hub_compacted, HUB_CLOCK);
    let snap = hub.snapshot_for(&VersionVector::new()).unwrap();
    let events = hub.events_since(&snap.version_vector).unwrap();
    Bundle::V1(BundleV1 {
        source_peer: hub.peer().to_string(),
        since: VersionVector::new(),
        until: hub.version_vector().clone(),
        events,
        snapshot: Some(snap),
    })
}

/// One message of every kind, with real contents where there are any.
pub fn messages() -> Vec<Message> {
    let f = fixture();
    let hub = reopen(&f.hub, HUB_CLOCK);
    let client = reopen(&f.client, HUB_CLOCK);
    let events = hub.events_since(&VersionVector::new()).unwrap();
    let engine = hub.engine();
    let rows = antientropy::entities(&engine.dump(), engine.schema(), true);
    let index = antientropy::index(&rows, 0);
    let snap = &f.forged[0];
    vec![
        Message::Hello(Hello {
            peer: CLIENT.into(),
            protocol_version: PROTOCOL_VERSION.into(),
            schema_version: 0,
            capabilities: vec![CAP_ZSTD.into(), CAP_SNAPSHOT.into()],
            auth_token: Some("s3cret".into()),
            version_vector: client.version_vector().clone(),
            sync_point: client.sync_point(client.version_vector()).unwrap(),
            compacted: VersionVector::new(),
        }),
        Message::Welcome(Welcome {
            peer: hub.peer().to_string(),
            protocol_version: PROTOCOL_VERSION.into(),
            status: "established".into(),
            sync_mode: SyncMode::Incremental,
            schema_version: 0,
            capabilities: vec![CAP_ZSTD.into()],
            version_vector: hub.version_vector().clone(),
            full_resync_required: false,
            compacted: VersionVector::new(),
        }),
        Message::Refused(Refused::Outdated {
            required: 2,
            got: 1,
        }),
        Message::Events(events[..3].to_vec()),
        Message::Events(events),
        Message::Eose,
        Message::Ack(hub.version_vector().clone()),
        Message::SnapshotPart(SnapshotPart {
            version_vector: snap.version_vector.clone(),
            event_count: snap.event_count,
            checksum: snap.checksum,
            total_bytes: snap.state.len() as u64,
            bytes: snap.state.clone(),
        }),
        Message::Error("unexpected events message before the handshake".into()),
        Message::MerkleSummary { len: 10 },
        Message::MerkleSummaryReply {
            bucket_bits: 0,
            len: index.len() as u64,
            root: index.root().to_vec(),
        },
        Message::MerkleDescendants {
            level: 0,
            parents: vec![0],
            depth: 0,
        },
        Message::MerkleHashes(index.root().to_vec()),
        Message::MerkleFingerprints(vec![0]),
        Message::MerkleFingerprintLists(vec![serde_bytes::ByteBuf::from(vec![7u8; 16])]),
        Message::MerkleEntries(vec![(0, 0), (0, 1)]),
        Message::MerkleEntryList(vec![1u8; 64]),
        Message::MerkleRows(rows.iter().take(2).flat_map(|r| r.key).collect()),
        Message::MerkleRowList(rows.into_iter().take(2).collect()),
        Message::Ping(42),
        Message::Pong(42),
    ]
}

/// Frames of `m`: plain, and compressed (threshold 0) when zstd makes it smaller.
pub fn frames(m: &Message) -> Vec<Vec<u8>> {
    let plain = Encoder::default().encode(m).unwrap().0;
    let z = Encoder {
        compress: true,
        threshold: 0,
        ..Encoder::default()
    }
    .encode(m)
    .unwrap()
    .0;
    if z == plain {
        vec![plain]
    } else {
        vec![plain, z]
    }
}
