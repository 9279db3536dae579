//! Writes the seed corpora: `cargo run --manifest-path fuzz/Cargo.toml --example seed`
//! (from the repository root). Replaces the files it writes, leaves others alone.
//!
//! - `corpus/frame_decoder`: a frame of every message kind (plain and zstd), and a stream
//!   of a whole session's frames;
//! - `corpus/bundle_decoder`: real bundles (with and without a snapshot) in each input
//!   mode;
//! - `corpus/hub_session`: structured inputs found by a seeded random search, each kept
//!   because it reaches a (message kind, outcome) pair the earlier ones do not.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use kuzu_sync_fuzz::hub::{CompactedChoice, Harness, Input, Numbers, Pairs, Rows, Step};
use kuzu_sync_fuzz::seeds::{self, BundleMode};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn with(first: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    v.extend_from_slice(rest);
    v
}

/// Inputs too slow or too large for a seed (the fuzzer finds those by itself).
fn cheap(input: &Input) -> bool {
    input.steps.len() <= 12
        && input.steps.iter().all(|s| match s {
            Step::MerkleSummary { len } => matches!(len, kuzu_sync_fuzz::hub::Count::Small(_)),
            Step::MerkleDescendants { depth, parents, .. } => depth.get() <= 4 && small(parents),
            Step::MerkleFingerprints(n) => small(n),
            Step::MerkleEntries(Pairs::Repeat { count, .. } | Pairs::Range { count, .. }) => {
                *count <= 16
            }
            Step::MerkleRows(Rows::Repeat { count }) => *count <= 16,
            Step::SnapshotPart {
                bytes, total_bytes, ..
            } => bytes.len() <= 64 && matches!(total_bytes, kuzu_sync_fuzz::hub::Count::Small(_)),
            _ => true,
        })
}

fn small(n: &Numbers) -> bool {
    match n {
        Numbers::List(v) => v.len() <= 16,
        Numbers::Repeat { count, .. } | Numbers::Range { count, .. } => *count <= 16,
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");

    // frame_decoder
    let dir = root.join("frame_decoder");
    let messages = seeds::messages();
    let mut stream = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        for (j, f) in seeds::frames(m).iter().enumerate() {
            let name = format!("{i:02}-{}{}", m.kind(), if j == 1 { "-zstd" } else { "" });
            write(&dir, &name, &with(0, f));
        }
        if !matches!(m, kuzu_sync_engine::sync::Message::SnapshotPart(_)) {
            stream.extend_from_slice(&seeds::frames(m)[0]);
        }
    }
    write(&dir, "stream", &with(0b1000_0000, &stream));
    write(&dir, "stream-limit-4096", &with(0b0100_0001, &stream));

    // bundle_decoder
    let dir = root.join("bundle_decoder");
    for (name, bundle) in [
        ("bundle", seeds::bundle()),
        ("bundle-snapshot", seeds::bundle_with_snapshot()),
    ] {
        let file = kuzu_sync_protocol::encode(&bundle);
        write(
            &dir,
            &format!("{name}-raw"),
            &with(BundleMode::Raw.byte(), &file),
        );
        let payload = &file[17..file.len() - 32];
        write(
            &dir,
            &format!("{name}-payload"),
            &with(BundleMode::Payload.byte(), payload),
        );
        let inner = rmp_serde::to_vec(&bundle).unwrap();
        write(
            &dir,
            &format!("{name}-inner"),
            &with(BundleMode::Inner.byte(), &inner),
        );
        assert_eq!(
            kuzu_sync_protocol::decode(&seeds::bundle_bytes(BundleMode::Inner, &inner)).unwrap(),
            bundle
        );
    }

    // hub_session: a seeded random search for inputs reaching new (kind, outcome) pairs.
    let dir = root.join("hub_session");
    std::panic::set_hook(Box::new(|_| {}));
    let mut seen = BTreeSet::new();
    let mut flags = BTreeSet::new();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for _ in 0..200_000 {
        if kept.len() == 40 {
            break;
        }
        // Fresh bytes, or a kept seed with some bytes changed and more appended.
        let pick = rng.next();
        let mut byte = || {
            let r = rng.next();
            if r.is_multiple_of(3) {
                0
            } else {
                (r >> 8) as u8 % if r.is_multiple_of(5) { 255 } else { 24 }
            }
        };
        let bytes: Vec<u8> = if kept.is_empty() || pick.is_multiple_of(2) {
            let len = 16 + (pick >> 8) as usize % 400;
            (0..len).map(|_| byte()).collect()
        } else {
            let mut b = kept[(pick >> 8) as usize % kept.len()].clone();
            for _ in 0..(pick >> 16) % 4 {
                let at = (pick >> 24) as usize % b.len();
                b[at] = byte();
            }
            let extra = (pick >> 32) as usize % 64;
            b.extend((0..extra).map(|_| byte()));
            b
        };
        let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(&bytes)) else {
            continue;
        };
        if !cheap(&input) {
            continue;
        }
        let Ok(h) = std::panic::catch_unwind(|| Harness::run(&input)) else {
            continue; // a failing check: the fuzzer's to find, not a seed
        };
        let s = &h.stats;
        // A client that claims a compaction floor the hub lacks, then pushes a snapshot:
        // the way to make a hub install one (refused since c3d6cbc).
        let floor_claim = input.skip_hello < 224
            && matches!(&input.hello.compacted, CompactedChoice::Custom(v) if !v.0.is_empty())
            && input
                .steps
                .iter()
                .any(|st| matches!(st, Step::ForgedSnapshot { .. }));
        let mut new = false;
        for pair in &s.seen {
            new |= seen.insert(*pair);
        }
        for (flag, on) in [
            ("established", s.established),
            ("imported", s.imported > 0),
            ("imported-3", s.imported >= 3),
            ("merkle", s.merkle_answers > 0),
            ("merkle-3", s.merkle_answers >= 3),
            ("snapshot-sent", s.snapshots_sent > 0),
            ("refused", s.refusals > 0),
            ("floor-claim-then-snapshot", s.established && floor_claim),
        ] {
            if on {
                new |= flags.insert(flag);
            }
        }
        if new {
            write(&dir, &format!("search-{:02}", kept.len()), &bytes);
            kept.push(bytes);
        }
    }
    // One input the search above rarely reaches: a floor claim, then a forged snapshot.
    if !flags.contains("floor-claim-then-snapshot") {
        for _ in 0..2_000_000 {
            let len = 32 + rng.next() as usize % 200;
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next() >> 8) as u8).collect();
            let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(&bytes)) else {
                continue;
            };
            let claim = input.skip_hello < 224
                && matches!(&input.hello.compacted, CompactedChoice::Custom(v) if !v.0.is_empty())
                && input
                    .steps
                    .iter()
                    .any(|st| matches!(st, Step::ForgedSnapshot { .. }));
            if !claim || !cheap(&input) {
                continue;
            }
            // Kept if the handshake succeeds; a failed check (the hub took the snapshot)
            // is kept too: that is the regression this seed is for.
            let established = match std::panic::catch_unwind(|| Harness::run(&input)) {
                Ok(h) => h.stats.established,
                Err(_) => true,
            };
            if established {
                write(&dir, "floor-claim-then-snapshot", &bytes);
                flags.insert("floor-claim-then-snapshot");
                break;
            }
        }
    }
    let _ = std::panic::take_hook();
    println!(
        "hub_session: {} seeds, {} (kind, outcome) pairs, flags {flags:?}",
        kept.len(),
        seen.len()
    );
}
