//! Arbitrary bytes through the offline bundle decoder (`kuzu_sync_protocol::decode`).
//! Input: a mode byte (`seeds::BundleMode`: the rest is the file, or the zstd payload with
//! a header and checksum made to fit, or the MessagePack inside), then the bytes.
//!
//! Checks: no panic, no huge allocation (run with `-malloc_limit_mb`); a bundle that
//! decodes re-encodes to one that decodes to the same bundle.
#![no_main]

use kuzu_sync_fuzz::seeds::{bundle_bytes, BundleMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = bundle_bytes(BundleMode::of(mode), rest);
    if let Ok(bundle) = kuzu_sync_protocol::decode(&bytes) {
        let again = kuzu_sync_protocol::decode(&kuzu_sync_protocol::encode(&bundle))
            .expect("a re-encoded bundle decodes");
        assert_eq!(again, bundle, "re-encoding changed the bundle");
    }
});
