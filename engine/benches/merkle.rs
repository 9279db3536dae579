//! Criterion benchmarks of Merkle anti-entropy (`kuzu_sync_engine::merkle`), side by side
//! with the `negentropy` crate (range-based set reconciliation) on the same sets. Run with
//! `cargo bench --profile dev -p kuzu-sync-engine --bench merkle`.
//!
//! Sets of 10,000 and 1,000,000 entities; the remote holds all of them and the local side
//! differs in 10: either 10 entities missing (the SPEC case) or a mix (4 missing here,
//! 3 missing there, 3 changed). Negentropy reconciles `(timestamp 0, key ‖ digest)` items,
//! so a changed digest is a different item on each side. Both run in process, both sides in
//! the timed loop. After criterion's output, a table gives each method's cost in node
//! comparisons, round trips and bytes.
//!
//! **The bytes here are not wire bytes and do not compare like with like.** Ours are the
//! idealized payload `merkle::IndexRemote` counts (no MessagePack, no frame headers);
//! negentropy's are its encoded messages, both ways. This bench is for the algorithm's
//! time and shape (comparisons, round trips, index build). For bytes on the wire, both
//! sides framed as our transport frames them, see `protocol/benches/merkle_wire.rs`.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion};
use kuzu_sync_engine::merkle::{
    diff, digest, key_hash, suggested_bucket_bits, DiffReport, Entry, IndexRemote, Key, MerkleIndex,
};
use kuzu_sync_engine::sim::Rng;
use negentropy::{Id, Negentropy, NegentropyStorageVector};

/// Entity `i` with content version `v`.
fn entity(i: u64, v: u64) -> Entry {
    (
        key_hash(&i.to_le_bytes()),
        digest(format!("{i}/{v}").as_bytes()),
    )
}

/// `count` distinct positions below `n`.
fn positions(rng: &mut Rng, n: u64, count: usize) -> Vec<u64> {
    let mut out = BTreeSet::new();
    while out.len() < count {
        out.insert(rng.below(n));
    }
    out.into_iter().collect()
}

/// One reconciliation scenario, with the differences it must find.
struct Case {
    name: String,
    n: u64,
    local: Vec<Entry>,
    remote: Vec<Entry>,
    missing_here: Vec<Key>,
    missing_there: Vec<Key>,
    different: Vec<Key>,
}

/// The remote holds entities `0..n`; the local side lacks 10 of them.
fn missing_case(n: u64) -> Case {
    let remote: Vec<Entry> = (0..n).map(|i| entity(i, 0)).collect();
    let gone = positions(&mut Rng::new(n), n, 10);
    let local = (0..n)
        .filter(|i| gone.binary_search(i).is_err())
        .map(|i| remote[i as usize])
        .collect();
    Case {
        name: format!("{}k, 10 missing", n / 1000),
        n,
        local,
        missing_here: sorted(gone.iter().map(|&i| remote[i as usize].0)),
        remote,
        missing_there: Vec::new(),
        different: Vec::new(),
    }
}

/// The remote holds entities `0..n`; the local side lacks 4, changed 3 and has 3 more.
fn mixed_case(n: u64) -> Case {
    let remote: Vec<Entry> = (0..n).map(|i| entity(i, 0)).collect();
    let picked = positions(&mut Rng::new(n + 1), n, 7);
    let (gone, changed) = picked.split_at(4);
    let mut local: Vec<Entry> = (0..n)
        .filter(|i| gone.binary_search(i).is_err())
        .map(|i| {
            if changed.contains(&i) {
                entity(i, 1)
            } else {
                entity(i, 0)
            }
        })
        .collect();
    let extra: Vec<Entry> = (n..n + 3).map(|i| entity(i, 0)).collect();
    local.extend(&extra);
    Case {
        name: format!("{}k, 10 mixed", n / 1000),
        n,
        local,
        missing_here: sorted(gone.iter().map(|&i| remote[i as usize].0)),
        missing_there: sorted(extra.iter().map(|e| e.0)),
        different: sorted(changed.iter().map(|&i| remote[i as usize].0)),
        remote,
    }
}

fn sorted(keys: impl Iterator<Item = Key>) -> Vec<Key> {
    let mut keys: Vec<Key> = keys.collect();
    keys.sort_unstable();
    keys
}

fn bits(case: &Case) -> u32 {
    suggested_bucket_bits(case.local.len().max(case.remote.len()))
}

fn check(case: &Case, found: (&[Key], &[Key], &[Key]), who: &str) {
    assert_eq!(
        found.0, case.missing_here,
        "{who}, {}: missing here",
        case.name
    );
    assert_eq!(
        found.1, case.missing_there,
        "{who}, {}: missing there",
        case.name
    );
    assert_eq!(found.2, case.different, "{who}, {}: different", case.name);
}

fn merkle_diff(local: &MerkleIndex, remote: &MerkleIndex) -> DiffReport {
    diff(local, &mut IndexRemote::new(remote)).expect("local diff succeeds")
}

fn storage(entries: &[Entry]) -> NegentropyStorageVector {
    let mut storage = NegentropyStorageVector::with_capacity(entries.len());
    for (key, digest) in entries {
        let mut id = [0u8; 32];
        id[..16].copy_from_slice(key);
        id[16..].copy_from_slice(digest);
        storage
            .insert(0, Id::from_byte_array(id))
            .expect("unsealed storage");
    }
    storage.seal().expect("sealed once");
    storage
}

/// What a negentropy reconciliation found and cost.
struct NegReport {
    have: Vec<Id>,
    need: Vec<Id>,
    round_trips: u32,
    bytes: u64,
}

/// The local side initiates; each round trip is one message to the remote and its answer.
fn negentropy_diff(local: &NegentropyStorageVector, remote: &NegentropyStorageVector) -> NegReport {
    let mut client = Negentropy::borrowed(local, 0).expect("no frame limit");
    let mut server = Negentropy::borrowed(remote, 0).expect("no frame limit");
    let mut report = NegReport {
        have: Vec::new(),
        need: Vec::new(),
        round_trips: 0,
        bytes: 0,
    };
    let mut query = client.initiate().expect("first message");
    loop {
        let answer = server.reconcile(&query).expect("server reconciles");
        report.round_trips += 1;
        report.bytes += (query.len() + answer.len()) as u64;
        match client
            .reconcile_with_ids(&answer, &mut report.have, &mut report.need)
            .expect("client reconciles")
        {
            Some(next) => query = next,
            None => return report,
        }
    }
}

/// Negentropy's ids sorted into our three lists.
fn negentropy_lists(report: &NegReport) -> (Vec<Key>, Vec<Key>, Vec<Key>) {
    let key = |id: &Id| -> Key { id[..16].try_into().expect("16 bytes") };
    let have: BTreeSet<Key> = report.have.iter().map(key).collect();
    let need: BTreeSet<Key> = report.need.iter().map(key).collect();
    (
        need.difference(&have).copied().collect(),
        have.difference(&need).copied().collect(),
        have.intersection(&need).copied().collect(),
    )
}

/// Mean wall time of `f` over at least 3 runs and about half a second.
fn mean_time<T>(mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    let mut runs = 0u32;
    while runs < 3 || start.elapsed() < Duration::from_millis(500) {
        black_box(f());
        runs += 1;
    }
    start.elapsed() / runs
}

/// One row of the closing table.
struct Row {
    case: String,
    bits: u32,
    ours: DiffReport,
    ours_time: Duration,
    neg: NegReport,
    neg_time: Duration,
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let cases = [
        missing_case(10_000),
        mixed_case(10_000),
        missing_case(1_000_000),
        mixed_case(1_000_000),
    ];

    let mut build = c.benchmark_group("merkle_build");
    build.sample_size(10);
    for case in cases.iter().filter(|case| case.name.ends_with("missing")) {
        let bits = bits(case);
        build.bench_with_input(BenchmarkId::new("ours", case.n), &case.remote, |b, set| {
            b.iter_batched(
                || set.clone(),
                |set| MerkleIndex::build(set, bits),
                BatchSize::LargeInput,
            )
        });
        build.bench_with_input(
            BenchmarkId::new("negentropy", case.n),
            &case.remote,
            |b, set| b.iter(|| storage(set)),
        );
    }
    build.finish();

    let mut rows = Vec::new();
    let mut group = c.benchmark_group("merkle_diff");
    group.sample_size(10);
    for case in &cases {
        let bits = bits(case);
        let local = MerkleIndex::build(case.local.clone(), bits);
        let remote = MerkleIndex::build(case.remote.clone(), bits);
        let ours = merkle_diff(&local, &remote);
        check(
            case,
            (&ours.missing_here, &ours.missing_there, &ours.different),
            "ours",
        );
        let neg_local = storage(&case.local);
        let neg_remote = storage(&case.remote);
        let neg = negentropy_diff(&neg_local, &neg_remote);
        let lists = negentropy_lists(&neg);
        check(case, (&lists.0, &lists.1, &lists.2), "negentropy");

        group.bench_function(BenchmarkId::new("ours", &case.name), |b| {
            b.iter(|| merkle_diff(&local, &remote))
        });
        group.bench_function(BenchmarkId::new("negentropy", &case.name), |b| {
            b.iter(|| negentropy_diff(&neg_local, &neg_remote))
        });
        rows.push(Row {
            case: case.name.clone(),
            bits,
            ours,
            ours_time: mean_time(|| merkle_diff(&local, &remote)),
            neg,
            neg_time: mean_time(|| negentropy_diff(&neg_local, &neg_remote)),
        });
    }
    group.finish();
    c.final_summary();

    println!();
    println!("10 differences: Merkle anti-entropy (ours) vs negentropy, same sets");
    println!(
        "{:<18} {:>4} | {:>5} {:>6} {:>3} {:>7} {:>10} | {:>3} {:>7} {:>10}",
        "case", "bits", "comps", "entries", "rt", "bytes", "time", "rt", "bytes", "time"
    );
    println!("{:-<18} {:->4} | {:->40} | {:->23}", "", "", "", "");
    for row in &rows {
        println!(
            "{:<18} {:>4} | {:>5} {:>7} {:>3} {:>7} {:>10.2?} | {:>3} {:>7} {:>10.2?}",
            row.case,
            row.bits,
            row.ours.comparisons,
            row.ours.entries_compared,
            row.ours.round_trips,
            row.ours.bytes,
            row.ours_time,
            row.neg.round_trips,
            row.neg.bytes,
            row.neg_time,
        );
    }
    println!("(left: ours, node comparisons / entries compared / round trips / payload bytes;");
    println!(" right: negentropy, round trips / message bytes; times are in-process, both sides;");
    println!(" payload bytes are not wire bytes: see protocol/benches/merkle_wire.rs)");
}
