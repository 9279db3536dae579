use super::*;
use kuzu_sync_engine::{EventId, Hlc, NodeRef, Op, PeerId, Value};

fn bundle(n: u64) -> Bundle {
    let peer = PeerId::new("a").unwrap();
    let events = (1..=n)
        .map(|c| Event {
            id: EventId {
                peer: peer.clone(),
                counter: c,
            },
            deps: [(peer.clone(), c - 1)].into_iter().collect(),
            hlc: Hlc {
                wall_ms: 1000 + c,
                logical: 0,
            },
            op: Op::DeleteNode(NodeRef {
                table: "User".into(),
                key: Value::Int64(c as i64),
            }),
        })
        .collect();
    Bundle::V1(BundleV1 {
        source_peer: "a".into(),
        since: VersionVector::new(),
        until: [(peer, n)].into_iter().collect(),
        events,
        snapshot: None,
    })
}

/// Bundles written before snapshots existed (four fields) still decode.
#[test]
fn a_bundle_without_the_snapshot_field_decodes() {
    #[derive(serde::Serialize)]
    struct OldV1 {
        source_peer: String,
        since: VersionVector,
        until: VersionVector,
        events: Vec<kuzu_sync_engine::Event>,
    }
    #[derive(serde::Serialize)]
    enum Old {
        V1(OldV1),
    }
    let new = bundle(3);
    let v1 = new.v1().clone();
    let old = Old::V1(OldV1 {
        source_peer: v1.source_peer,
        since: v1.since,
        until: v1.until,
        events: v1.events,
    });
    let decoded: Bundle = rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
    assert_eq!(decoded, new);
}

#[test]
fn round_trip() {
    let b = bundle(100);
    assert_eq!(decode(&encode(&b)).unwrap(), b);
}

#[test]
fn every_truncation_is_reported_not_panicked() {
    let bytes = encode(&bundle(20));
    for cut in 0..bytes.len() {
        let err = decode(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, BundleError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn every_flipped_byte_is_detected() {
    let bytes = encode(&bundle(20));
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x55;
        assert!(decode(&b).is_err(), "flip at {i} went unnoticed");
    }
}

#[test]
fn bad_magic_and_version_are_named() {
    let mut bytes = encode(&bundle(1));
    assert!(matches!(
        decode(b"hello world, this is no bundle at all......"),
        Err(BundleError::BadMagic)
    ));
    bytes[8] = 9;
    assert_eq!(
        decode(&bytes).unwrap_err().to_string(),
        "bundle format version 9 is not supported (this build reads version 1)"
    );
}
