use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::sim::Rng;

/// Entity `i` with content version `v`.
fn entity(i: u64, v: u64) -> Entry {
    (
        key_hash(&i.to_le_bytes()),
        digest(format!("{i}/{v}").as_bytes()),
    )
}

fn entities(n: u64) -> Vec<Entry> {
    (0..n).map(|i| entity(i, 0)).collect()
}

fn index(entries: Vec<Entry>, bits: u32) -> MerkleIndex {
    MerkleIndex::build(entries, bits)
}

/// Diffs `local` against `remote` through an [`IndexRemote`], checking that the report's
/// cost counters agree with the remote's.
fn run_diff(local: &MerkleIndex, remote: &MerkleIndex) -> DiffReport {
    let mut wire = IndexRemote::new(remote);
    let report = diff(local, &mut wire).expect("diff succeeds");
    assert_eq!(report.round_trips, wire.round_trips());
    assert_eq!(report.bytes, wire.bytes());
    report
}

/// The exact differences, computed naively: (missing here, missing there, different).
fn naive(local: &[Entry], remote: &[Entry]) -> (Vec<Key>, Vec<Key>, Vec<Key>) {
    let mine: BTreeMap<Key, Digest> = local.iter().copied().collect();
    let theirs: BTreeMap<Key, Digest> = remote.iter().copied().collect();
    let missing_here = theirs
        .keys()
        .filter(|k| !mine.contains_key(*k))
        .copied()
        .collect();
    let missing_there = mine
        .keys()
        .filter(|k| !theirs.contains_key(*k))
        .copied()
        .collect();
    let different = mine
        .iter()
        .filter(|(k, d)| theirs.get(*k).is_some_and(|t| t != *d))
        .map(|(k, _)| *k)
        .collect();
    (missing_here, missing_there, different)
}

fn assert_exact(local: &[Entry], remote: &[Entry], bits: u32) -> DiffReport {
    let report = run_diff(&index(local.to_vec(), bits), &index(remote.to_vec(), bits));
    let (here, there, different) = naive(local, remote);
    assert_eq!(report.missing_here, here, "missing here");
    assert_eq!(report.missing_there, there, "missing there");
    assert_eq!(report.different, different, "different");
    report
}

/// SPEC: A holds 10,000 entities, B the same less 10 at random positions. `diff(B, A)`
/// finds exactly those 10, with under 100 node comparisons and few enough bytes that the 10
/// records (~60 bytes each) still fit in 10 KB. Checked over 100 seeds.
#[test]
fn spec_ten_missing_among_ten_thousand() {
    const N: u64 = 10_000;
    let all = entities(N);
    let bits = suggested_bucket_bits(N as usize);
    assert_eq!(bits, 8);
    let a = index(all.clone(), bits);
    let mut comparisons = Vec::new();
    let mut bytes = Vec::new();
    let mut round_trips = Vec::new();
    for seed in 0..100 {
        let mut rng = Rng::new(seed);
        let mut removed = Vec::new();
        while removed.len() < 10 {
            let i = rng.below(N);
            if !removed.contains(&i) {
                removed.push(i);
            }
        }
        let b_entries: Vec<Entry> = (0..N)
            .filter(|i| !removed.contains(i))
            .map(|i| all[i as usize])
            .collect();
        let b = index(b_entries, bits);
        assert_eq!(b.len(), 9_990);

        let report = run_diff(&b, &a);
        let mut expected: Vec<Key> = removed.iter().map(|&i| all[i as usize].0).collect();
        expected.sort_unstable();
        assert_eq!(report.missing_here, expected, "seed {seed}");
        assert!(report.missing_there.is_empty(), "seed {seed}");
        assert!(report.different.is_empty(), "seed {seed}");
        assert!(
            report.comparisons < 100,
            "seed {seed}: {} comparisons",
            report.comparisons
        );
        assert!(
            report.bytes + 10 * 60 < 10_000,
            "seed {seed}: {} bytes",
            report.bytes
        );
        comparisons.push(report.comparisons);
        bytes.push(report.bytes);
        round_trips.push(report.round_trips);
    }
    comparisons.sort_unstable();
    bytes.sort_unstable();
    round_trips.sort_unstable();
    let spread = |v: &[u64]| {
        format!(
            "min {} median {} max {}",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    println!(
        "spec over 100 seeds: comparisons {}; bytes {}; round trips {}..={}",
        spread(&comparisons),
        spread(&bytes),
        round_trips[0],
        round_trips[round_trips.len() - 1]
    );
}

#[test]
fn equal_sets_cost_one_comparison() {
    let all = entities(5_000);
    let mut shuffled = all.clone();
    shuffled.reverse();
    let bits = suggested_bucket_bits(all.len());
    let a = index(all, bits);
    let b = index(shuffled, bits);
    assert_eq!(a.root(), b.root());
    let report = run_diff(&a, &b);
    assert!(report.is_empty());
    assert_eq!(report.comparisons, 1);
    assert_eq!(report.round_trips, 1);
    assert_eq!(report.entries_compared, 0);
}

#[test]
fn changed_digests_are_different() {
    let local = entities(2_000);
    let mut remote = local.clone();
    for i in [3u64, 700, 1999] {
        remote[i as usize] = entity(i, 1);
    }
    let report = assert_exact(&local, &remote, suggested_bucket_bits(2_000));
    assert_eq!(report.different.len(), 3);
    assert!(report.missing_here.is_empty() && report.missing_there.is_empty());
}

#[test]
fn one_sided_entries_land_in_the_right_list() {
    let shared = entities(1_000);
    let mut local = shared.clone();
    local.extend((5_000..5_004).map(|i| entity(i, 0)));
    let mut remote = shared;
    remote.extend((6_000..6_007).map(|i| entity(i, 0)));
    let report = assert_exact(&local, &remote, 5);
    assert_eq!(report.missing_there.len(), 4);
    assert_eq!(report.missing_here.len(), 7);
    assert!(report.different.is_empty());
}

#[test]
fn mixed_differences_in_both_directions() {
    let base = entities(3_000);
    let mut local = base.clone();
    let mut remote = base;
    local.remove(10);
    remote.remove(2_500);
    remote[100] = entity(100, 7);
    local.push(entity(9_000, 0));
    let report = assert_exact(&local, &remote, 6);
    let reverse = assert_exact(&remote, &local, 6);
    assert_eq!(report.missing_here, reverse.missing_there);
    assert_eq!(report.missing_there, reverse.missing_here);
    assert_eq!(report.different, reverse.different);
}

#[test]
fn empty_against_non_empty() {
    let some = entities(300);
    for bits in [0, 3, suggested_bucket_bits(300)] {
        let report = assert_exact(&[], &some, bits);
        assert_eq!(report.missing_here.len(), 300);
        let report = assert_exact(&some, &[], bits);
        assert_eq!(report.missing_there.len(), 300);
    }
}

#[test]
fn one_against_none_and_none_against_none() {
    let one = vec![entity(42, 0)];
    for bits in [0, 1, 4] {
        let report = assert_exact(&[], &one, bits);
        assert_eq!(report.missing_here, vec![one[0].0]);
        let report = assert_exact(&one, &[], bits);
        assert_eq!(report.missing_there, vec![one[0].0]);
        let report = assert_exact(&[], &[], bits);
        assert!(report.is_empty());
        assert_eq!(report.comparisons, 1);
        let report = assert_exact(&one, &[entity(42, 1)], bits);
        assert_eq!(report.different, vec![one[0].0]);
    }
}

#[test]
fn tree_shape_and_nodes() {
    let idx = index(entities(1_000), 4);
    assert_eq!(idx.bucket_count(), 16);
    assert_eq!(idx.len(), 1_000);
    for level in 0..=4 {
        assert_eq!(idx.level(level).map(<[Hash]>::len), Some(1 << level));
    }
    assert!(idx.level(5).is_none());
    assert!(idx.node(4, 16).is_none());
    // Each inner node hashes its two children, as rs_merkle defines it.
    for level in 0..4 {
        for i in 0..(1u32 << level) {
            let left = idx.node(level + 1, 2 * i).unwrap();
            let right = idx.node(level + 1, 2 * i + 1).unwrap();
            assert_eq!(
                idx.node(level, i),
                Some(TreeHasher::concat_and_hash(&left, Some(&right)))
            );
        }
    }
    // Leaves hash their bucket's entries; buckets partition the entries by top key bits.
    let mut total = 0;
    for b in 0..16 {
        let entries = idx.bucket(b).unwrap();
        total += entries.len();
        assert!(entries.iter().all(|(key, _)| bucket_of(key, 4) == b));
        let bytes: Vec<u8> = entries
            .iter()
            .flat_map(|(k, d)| k.iter().chain(d))
            .copied()
            .collect();
        assert_eq!(idx.node(4, b), Some(TreeHasher::hash(&bytes)));
    }
    assert_eq!(total, 1_000);
    assert_eq!(idx.get(&entity(7, 0).0), Some(entity(7, 0).1));
    assert_eq!(idx.get(&entity(7_000, 0).0), None);
    assert!(format!("{idx:?}").contains("bucket_bits: 4"));
}

#[test]
fn build_ignores_order_and_keeps_one_entry_per_key() {
    let mut entries = entities(100);
    entries.push(entity(5, 1));
    entries.push(entity(5, 0));
    let forward = index(entries.clone(), 3);
    entries.reverse();
    let backward = index(entries, 3);
    assert_eq!(forward.root(), backward.root());
    assert_eq!(forward.len(), 100);
}

#[test]
fn empty_indexes_agree_and_zero_bits_is_one_bucket() {
    assert_eq!(index(vec![], 5).root(), index(vec![], 5).root());
    assert_ne!(index(vec![], 5).root(), index(vec![entity(1, 0)], 5).root());
    let flat = index(entities(10), 0);
    assert_eq!(flat.bucket_count(), 1);
    assert_eq!(flat.level(0).map(<[Hash]>::len), Some(1));
    assert_eq!(flat.bucket(0).map(<[Entry]>::len), Some(10));
}

#[test]
fn suggested_bits_keep_buckets_between_32_and_64() {
    assert_eq!(suggested_bucket_bits(0), 0);
    assert_eq!(suggested_bucket_bits(63), 0);
    assert_eq!(suggested_bucket_bits(64), 1);
    assert_eq!(suggested_bucket_bits(10_000), 8);
    assert_eq!(suggested_bucket_bits(1_000_000), 14);
    assert_eq!(suggested_bucket_bits(usize::MAX), MAX_BUCKET_BITS);
    for n in [64usize, 100, 1_000, 12_345, 1 << 20, 3_000_000] {
        let per_bucket = n >> suggested_bucket_bits(n);
        assert!((32..64).contains(&per_bucket), "n {n}: {per_bucket}");
    }
}

#[test]
fn different_bucket_bits_are_refused() {
    let a = index(entities(10), 2);
    let b = index(entities(10), 3);
    assert_eq!(
        diff(&a, &mut IndexRemote::new(&b)),
        Err(MerkleError::BucketBitsMismatch {
            local: 2,
            remote: 3
        })
    );
}

/// A remote that answers the walk with too few hashes.
#[derive(Debug)]
struct ShortAnswers<'a>(IndexRemote<'a>);

impl MerkleRemote for ShortAnswers<'_> {
    fn summary(&mut self) -> Result<Summary, MerkleError> {
        self.0.summary()
    }
    fn descendants(
        &mut self,
        level: u32,
        parents: &[u32],
        depth: u32,
    ) -> Result<Vec<Hash>, MerkleError> {
        let mut hashes = self.0.descendants(level, parents, depth)?;
        hashes.pop();
        Ok(hashes)
    }
    fn fingerprints(&mut self, buckets: &[u32]) -> Result<Vec<Vec<Fingerprint>>, MerkleError> {
        self.0.fingerprints(buckets)
    }
    fn entries(&mut self, picks: &[(u32, u32)]) -> Result<Vec<Entry>, MerkleError> {
        self.0.entries(picks)
    }
}

#[test]
fn malformed_answers_are_errors_not_panics() {
    let a = index(entities(100), 3);
    let b = index(entities(99), 3);
    let result = diff(&a, &mut ShortAnswers(IndexRemote::new(&b)));
    assert!(
        matches!(result, Err(MerkleError::Malformed(_))),
        "{result:?}"
    );
}

/// Entity sets over a small id space: each id is absent, or present with one of 3 contents.
fn entity_set() -> impl Strategy<Value = Vec<Entry>> {
    proptest::collection::vec(proptest::option::of(0u64..3), 0..300).prop_map(|slots| {
        slots
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| entity(i as u64, v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn diff_is_the_exact_set_difference(
        local in entity_set(),
        remote in entity_set(),
        bits in 0u32..7,
    ) {
        let report = run_diff(&index(local.clone(), bits), &index(remote.clone(), bits));
        let (here, there, different) = naive(&local, &remote);
        prop_assert_eq!(report.missing_here, here);
        prop_assert_eq!(report.missing_there, there);
        prop_assert_eq!(report.different, different);
    }

    #[test]
    fn few_changes_in_a_big_shared_set(
        changes in proptest::collection::vec((0u64..2_000, 0u64..3), 0..12),
    ) {
        let local = entities(2_000);
        let mut remote: BTreeMap<u64, u64> = (0..2_000).map(|i| (i, 0)).collect();
        for (i, what) in changes {
            match what {
                0 => { remote.remove(&i); }
                1 => { remote.insert(i, 1); }
                _ => { remote.insert(10_000 + i, 0); }
            }
        }
        let remote: Vec<Entry> = remote.into_iter().map(|(i, v)| entity(i, v)).collect();
        let bits = suggested_bucket_bits(local.len().max(remote.len()));
        assert_exact(&local, &remote, bits);
    }
}
