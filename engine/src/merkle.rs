//! Merkle anti-entropy: find which entities two replicas disagree on by comparing hash
//! trees, asking the other side only for the few tree nodes and buckets that differ.
//!
//! Pure: no IO. Each entity is an [`Entry`], `(key, digest)`: `key` hashes the entity's
//! identity, `digest` its resolved content ([`key_hash`] and [`digest`] are the helpers;
//! both are SHA-256 truncated to 128 bits). A [`MerkleIndex`] sorts the entries into
//! `2^bucket_bits` buckets by the top bits of the key; a bucket's leaf hash is SHA-256 over
//! its entries in key order, and a binary Merkle tree is built over the leaves. Level 0 is
//! the root, level `bucket_bits` the bucket leaves; level `l` has `2^l` nodes.
//!
//! [`diff`] compares a local index with a remote one reachable only through questions
//! ([`MerkleRemote`], one round trip each), so the same walk can later run over the network:
//!
//! 1. the remote's [`Summary`] (root, size, bucket bits): equal roots end the diff;
//! 2. a top-down walk, one round trip per step, descending only into differing nodes. A
//!    node known to differ has at least one differing child, so when all but the last of its
//!    children compare equal the last one is taken as differing without a comparison. A step
//!    normally goes one level down; it goes two (the four grandchildren at once) at the start
//!    and whenever at least 3/4 of the nodes of the previous step differed, where differences
//!    are dense and the intermediate level would cost comparisons and a round trip for
//!    nothing;
//! 3. the 8-byte [`fingerprint`]s of the remote's entries in the differing buckets: entries
//!    whose fingerprint the other side lacks are the differences;
//! 4. the full entries for the remote's unmatched fingerprints (skipped when there are none).
//!
//! Fingerprints instead of full entries make a bucket four times cheaper to compare, which
//! lets buckets be bigger (see [`suggested_bucket_bits`]) and the tree shallower: fewer
//! comparisons and round trips for the same bytes. A fingerprint collision between two
//! different entries of one bucket (about `64² / 2^64` per differing bucket) would hide that
//! difference until either entry changes again.
//!
//! ## The tree crate (for ARCHITECTURE.md)
//!
//! The tree is built with `rs_merkle` (its `Sha256` hasher, binary tree, odd nodes promoted).
//! Its `MerkleTree` only exposes the root, the leaves and proofs, but the `PartialTree` it is
//! built on is public and `PartialTree::from_leaves` + `layer_nodes()` hand back every layer,
//! which is what a top-down walk between two trees needs: read any node by (level, index).
//! We keep those layers (top-down) and drop the rest; no hashing is written by hand, leaves
//! and inner nodes are `rs_merkle::algorithms::Sha256`, keys, digests and fingerprints are
//! the `sha2` crate. Since the number of leaves is always a power of two, the tree is full
//! and rs_merkle's odd-node promotion never applies (its layer list then repeats the root
//! once more at the top, which we drop). `rs_merkle` is pure Rust and `no_std`-capable, so
//! the engine still builds for `wasm32-unknown-unknown`.

use rs_merkle::algorithms::Sha256 as TreeHasher;
use rs_merkle::{Hasher as _, PartialTree};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Hash of an entity's identity: SHA-256 truncated to 128 bits.
pub type Key = [u8; 16];
/// Hash of an entity's resolved content: SHA-256 truncated to 128 bits.
pub type Digest = [u8; 16];
/// One entity as the index sees it.
pub type Entry = (Key, Digest);
/// A tree node: SHA-256.
pub type Hash = [u8; 32];
/// Short hash of a whole entry, exchanged instead of the entry when comparing buckets.
pub type Fingerprint = [u8; 8];

/// Largest supported `bucket_bits` (a million buckets).
pub const MAX_BUCKET_BITS: u32 = 20;
/// [`suggested_bucket_bits`] keeps the average bucket between this and twice this.
pub const TARGET_BUCKET_SIZE: usize = 32;

/// Wire size of one tree hash.
const HASH_BYTES: u64 = 32;
/// Wire size of one entry.
const ENTRY_BYTES: u64 = 32;
/// Wire size of one fingerprint.
const FINGERPRINT_BYTES: u64 = 8;
/// Wire size of an index, a level or a list length.
const INDEX_BYTES: u64 = 4;
/// Wire size of a [`Summary`]: root, entry count, bucket bits.
const SUMMARY_BYTES: u64 = HASH_BYTES + 8 + INDEX_BYTES;
/// Levels a walk step descends at the start and where differences are dense.
const DENSE_STEP: u32 = 2;

/// Truncated SHA-256 of an entity's identity bytes.
pub fn key_hash(bytes: &[u8]) -> Key {
    truncate(Sha256::digest(bytes).as_slice())
}

/// Truncated SHA-256 of an entity's resolved content bytes.
pub fn digest(bytes: &[u8]) -> Digest {
    truncate(Sha256::digest(bytes).as_slice())
}

/// The 8-byte fingerprint of an entry: truncated SHA-256 of `key ‖ digest`.
pub fn fingerprint(entry: &Entry) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(entry.0);
    hasher.update(entry.1);
    truncate(hasher.finalize().as_slice())
}

fn truncate<const N: usize>(full: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&full[..N]);
    out
}

/// Bucket bits for an index of `n` entries: the average bucket holds 32 to 64 entries
/// (fewer below 64 entries, where a single bucket is used), capped at [`MAX_BUCKET_BITS`].
///
/// Both sides of a diff must use the same bits: the initiator picks them from the larger of
/// the two sizes.
pub fn suggested_bucket_bits(n: usize) -> u32 {
    (n / TARGET_BUCKET_SIZE)
        .checked_ilog2()
        .unwrap_or(0)
        .min(MAX_BUCKET_BITS)
}

/// The bucket of `key` among `2^bucket_bits`: the top `bucket_bits` bits of the key.
pub fn bucket_of(key: &Key, bucket_bits: u32) -> u32 {
    if bucket_bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    top >> (32 - bucket_bits)
}

/// A set of entries bucketed by key, with a Merkle tree over the buckets.
#[derive(Clone)]
pub struct MerkleIndex {
    bucket_bits: u32,
    /// Sorted by key, one entry per key.
    entries: Vec<Entry>,
    /// Bucket `b` is `entries[bounds[b]..bounds[b + 1]]`.
    bounds: Vec<usize>,
    /// `levels[0] == [root]`, `levels[bucket_bits]` are the bucket leaves.
    levels: Vec<Vec<Hash>>,
}

impl fmt::Debug for MerkleIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleIndex")
            .field("bucket_bits", &self.bucket_bits)
            .field("len", &self.entries.len())
            .field("root", &hex::encode(self.root()))
            .finish()
    }
}

impl MerkleIndex {
    /// Builds the index of `entries` with `2^bucket_bits` buckets.
    ///
    /// Keys are meant to be unique; if a key comes more than once, the entry with the
    /// smallest digest is kept (so the result does not depend on the input order).
    ///
    /// # Panics
    /// If `bucket_bits > MAX_BUCKET_BITS`.
    pub fn build(mut entries: Vec<Entry>, bucket_bits: u32) -> Self {
        assert!(
            bucket_bits <= MAX_BUCKET_BITS,
            "bucket_bits {bucket_bits} > {MAX_BUCKET_BITS}"
        );
        entries.sort_unstable();
        entries.dedup_by(|later, kept| later.0 == kept.0);

        let buckets = 1usize << bucket_bits;
        let mut bounds = Vec::with_capacity(buckets + 1);
        let mut leaves = Vec::with_capacity(buckets);
        let mut buf = Vec::new();
        let mut start = 0;
        for bucket in 0..buckets {
            bounds.push(start);
            let len = entries[start..]
                .iter()
                .take_while(|(key, _)| bucket_of(key, bucket_bits) as usize == bucket)
                .count();
            buf.clear();
            for (key, digest) in &entries[start..start + len] {
                buf.extend_from_slice(key);
                buf.extend_from_slice(digest);
            }
            leaves.push(TreeHasher::hash(&buf));
            start += len;
        }
        bounds.push(start);
        debug_assert_eq!(start, entries.len());

        let mut levels = PartialTree::<TreeHasher>::from_leaves(&leaves)
            .expect("a tree built from all of its leaves needs no helper nodes")
            .layer_nodes();
        // rs_merkle lists the root once more above a power-of-two leaf count.
        levels.truncate(bucket_bits as usize + 1);
        levels.reverse();
        debug_assert!(levels
            .iter()
            .enumerate()
            .all(|(level, nodes)| nodes.len() == 1 << level));

        MerkleIndex {
            bucket_bits,
            entries,
            bounds,
            levels,
        }
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        self.levels[0][0]
    }

    /// Number of entries (distinct keys).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bits the buckets were chosen by; the tree has levels `0..=bucket_bits`.
    pub fn bucket_bits(&self) -> u32 {
        self.bucket_bits
    }

    /// Number of buckets, `2^bucket_bits`.
    pub fn bucket_count(&self) -> u32 {
        1 << self.bucket_bits
    }

    /// The nodes of `level` (0 = root, `bucket_bits` = bucket leaves), if it exists.
    pub fn level(&self, level: u32) -> Option<&[Hash]> {
        self.levels.get(level as usize).map(Vec::as_slice)
    }

    /// One tree node, if it exists.
    pub fn node(&self, level: u32, index: u32) -> Option<Hash> {
        self.level(level)?.get(index as usize).copied()
    }

    /// The entries of one bucket, sorted by key, if the bucket exists.
    pub fn bucket(&self, index: u32) -> Option<&[Entry]> {
        let index = index as usize;
        let start = *self.bounds.get(index)?;
        let end = *self.bounds.get(index + 1)?;
        Some(&self.entries[start..end])
    }

    /// All entries, sorted by key.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The digest stored for `key`.
    pub fn get(&self, key: &Key) -> Option<Digest> {
        let at = self.entries.binary_search_by(|(k, _)| k.cmp(key)).ok()?;
        Some(self.entries[at].1)
    }

    /// What a remote tells first about this index.
    pub fn summary(&self) -> Summary {
        Summary {
            bucket_bits: self.bucket_bits,
            len: self.entries.len() as u64,
            root: self.root(),
        }
    }

    /// The `2^depth` descendants at `level + depth` of each node in `parents` (at `level`),
    /// parent by parent; `None` if a node does not exist or `parents` are not strictly
    /// ascending. So the answer is never larger than one level of the tree, whatever a
    /// remote asks: every parent is checked before anything is allocated.
    pub fn descendants(&self, level: u32, parents: &[u32], depth: u32) -> Option<Vec<Hash>> {
        let parent_count = self.level(level)?.len();
        let nodes = self.level(level.checked_add(depth)?)?;
        let fan = 1usize.checked_shl(depth)?;
        let in_order = parents.windows(2).all(|w| w[0] < w[1]);
        if !in_order || parents.iter().any(|&p| p as usize >= parent_count) {
            return None;
        }
        let mut out = Vec::with_capacity(parents.len() * fan);
        for &parent in parents {
            let first = (parent as usize).checked_mul(fan)?;
            out.extend_from_slice(nodes.get(first..first.checked_add(fan)?)?);
        }
        Some(out)
    }

    /// The fingerprints of a bucket's entries, in key order.
    pub fn fingerprints(&self, bucket: u32) -> Option<Vec<Fingerprint>> {
        Some(self.bucket(bucket)?.iter().map(fingerprint).collect())
    }
}

/// The first answer of a remote: enough to tell whether the sets are equal, and whether the
/// two trees have the same shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    pub bucket_bits: u32,
    pub len: u64,
    pub root: Hash,
}

/// Why a diff could not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("bucket bits differ: local {local}, remote {remote}")]
    BucketBitsMismatch { local: u32, remote: u32 },
    #[error("malformed answer from the remote: {0}")]
    Malformed(String),
    #[error("remote failed: {0}")]
    Remote(String),
}

/// The other side of a diff, reachable only by questions; each call is one round trip.
pub trait MerkleRemote {
    /// Root, size and bucket bits.
    fn summary(&mut self) -> Result<Summary, MerkleError>;
    /// For each node of `parents` at `level`, its `2^depth` descendants at `level + depth`,
    /// parent by parent, left to right.
    fn descendants(
        &mut self,
        level: u32,
        parents: &[u32],
        depth: u32,
    ) -> Result<Vec<Hash>, MerkleError>;
    /// For each bucket, the fingerprints of its entries in key order.
    fn fingerprints(&mut self, buckets: &[u32]) -> Result<Vec<Vec<Fingerprint>>, MerkleError>;
    /// The entries at `(bucket, position)`, position as in [`MerkleRemote::fingerprints`].
    fn entries(&mut self, picks: &[(u32, u32)]) -> Result<Vec<Entry>, MerkleError>;
}

/// Payload bytes of each question and its answer, as if on the wire: 32 per hash, 32 per
/// entry, 8 per fingerprint, 8 for the entry count, 4 per index, level, depth or list
/// length; framing is not counted. [`diff`] and [`IndexRemote`] count the same way.
mod wire {
    use super::*;

    pub(super) fn summary() -> u64 {
        SUMMARY_BYTES
    }
    pub(super) fn descendants(parents: usize, depth: u32) -> u64 {
        2 * INDEX_BYTES + parents as u64 * (INDEX_BYTES + (HASH_BYTES << depth))
    }
    pub(super) fn fingerprints(lists: &[Vec<Fingerprint>]) -> u64 {
        lists
            .iter()
            .map(|list| 2 * INDEX_BYTES + list.len() as u64 * FINGERPRINT_BYTES)
            .sum()
    }
    pub(super) fn entries(picks: usize) -> u64 {
        picks as u64 * (2 * INDEX_BYTES + ENTRY_BYTES)
    }
}

/// A local [`MerkleIndex`] as a remote, counting round trips and bytes as if on the wire.
#[derive(Debug)]
pub struct IndexRemote<'a> {
    index: &'a MerkleIndex,
    round_trips: u32,
    bytes: u64,
}

impl<'a> IndexRemote<'a> {
    pub fn new(index: &'a MerkleIndex) -> Self {
        IndexRemote {
            index,
            round_trips: 0,
            bytes: 0,
        }
    }

    /// Questions answered so far.
    pub fn round_trips(&self) -> u32 {
        self.round_trips
    }

    /// Bytes of questions and answers so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn count(&mut self, bytes: u64) {
        self.round_trips += 1;
        self.bytes += bytes;
    }
}

impl MerkleRemote for IndexRemote<'_> {
    fn summary(&mut self) -> Result<Summary, MerkleError> {
        self.count(wire::summary());
        Ok(self.index.summary())
    }

    fn descendants(
        &mut self,
        level: u32,
        parents: &[u32],
        depth: u32,
    ) -> Result<Vec<Hash>, MerkleError> {
        self.count(wire::descendants(parents.len(), depth));
        self.index
            .descendants(level, parents, depth)
            .ok_or_else(|| MerkleError::Remote(format!("no such nodes below level {level}")))
    }

    fn fingerprints(&mut self, buckets: &[u32]) -> Result<Vec<Vec<Fingerprint>>, MerkleError> {
        let lists = buckets
            .iter()
            .map(|&bucket| {
                self.index
                    .fingerprints(bucket)
                    .ok_or_else(|| MerkleError::Remote(format!("no bucket {bucket}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.count(wire::fingerprints(&lists));
        Ok(lists)
    }

    fn entries(&mut self, picks: &[(u32, u32)]) -> Result<Vec<Entry>, MerkleError> {
        self.count(wire::entries(picks.len()));
        picks
            .iter()
            .map(|&(bucket, position)| {
                self.index
                    .bucket(bucket)
                    .and_then(|entries| entries.get(position as usize))
                    .copied()
                    .ok_or_else(|| MerkleError::Remote(format!("no entry {bucket}/{position}")))
            })
            .collect()
    }
}

/// What [`diff`] found and what it cost. Key lists are sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Keys the remote has and the local side lacks.
    pub missing_here: Vec<Key>,
    /// Keys the local side has and the remote lacks.
    pub missing_there: Vec<Key>,
    /// Keys both sides have, with different digests.
    pub different: Vec<Key>,
    /// Tree-node hash comparisons (the root's included; inferred nodes not).
    pub comparisons: u64,
    /// Entries looked at in differing buckets, both sides counted.
    pub entries_compared: u64,
    /// Questions asked of the remote.
    pub round_trips: u32,
    /// Bytes of questions and answers, counted as by [`IndexRemote`].
    pub bytes: u64,
}

impl DiffReport {
    /// Whether the two sets are equal.
    pub fn is_empty(&self) -> bool {
        self.missing_here.is_empty() && self.missing_there.is_empty() && self.different.is_empty()
    }
}

/// Finds the differences between `local` and the index behind `remote`, which must have the
/// same bucket bits. See the module documentation for the walk.
pub fn diff(local: &MerkleIndex, remote: &mut dyn MerkleRemote) -> Result<DiffReport, MerkleError> {
    let mut report = DiffReport::default();

    let summary = remote.summary()?;
    report.round_trips += 1;
    report.bytes += wire::summary();
    if summary.bucket_bits != local.bucket_bits {
        return Err(MerkleError::BucketBitsMismatch {
            local: local.bucket_bits,
            remote: summary.bucket_bits,
        });
    }
    report.comparisons += 1;
    if summary.root == local.root() {
        return Ok(report);
    }

    let buckets = walk(local, remote, &mut report)?;
    compare_buckets(local, remote, &buckets, &mut report)?;
    Ok(report)
}

/// The top-down walk from a differing root; returns the differing buckets, ascending.
fn walk(
    local: &MerkleIndex,
    remote: &mut dyn MerkleRemote,
    report: &mut DiffReport,
) -> Result<Vec<u32>, MerkleError> {
    let mut frontier: Vec<u32> = vec![0];
    let mut level = 0;
    let mut step = DENSE_STEP;
    while level < local.bucket_bits {
        let depth = step.min(local.bucket_bits - level);
        let fan = 1usize << depth;
        let hashes = remote.descendants(level, &frontier, depth)?;
        report.round_trips += 1;
        report.bytes += wire::descendants(frontier.len(), depth);
        if hashes.len() != frontier.len() * fan {
            return Err(MerkleError::Malformed(format!(
                "{} hashes for {} nodes of fan-out {fan}",
                hashes.len(),
                frontier.len()
            )));
        }
        let mine = &local.levels[(level + depth) as usize];
        let mut next = Vec::new();
        for (&parent, theirs) in frontier.iter().zip(hashes.chunks_exact(fan)) {
            let first = parent << depth;
            let before = next.len();
            for (offset, hash) in theirs.iter().enumerate() {
                let index = first + offset as u32;
                if offset == fan - 1 && next.len() == before {
                    // The parent differs, so some descendant does: the last one.
                    next.push(index);
                    break;
                }
                report.comparisons += 1;
                if mine[index as usize] != *hash {
                    next.push(index);
                }
            }
        }
        step = if 4 * next.len() >= 3 * frontier.len() * fan {
            DENSE_STEP
        } else {
            1
        };
        frontier = next;
        level += depth;
    }
    Ok(frontier)
}

/// Compares the differing buckets by fingerprint, fetches the remote's unmatched entries and
/// sorts the differences into the report.
fn compare_buckets(
    local: &MerkleIndex,
    remote: &mut dyn MerkleRemote,
    buckets: &[u32],
    report: &mut DiffReport,
) -> Result<(), MerkleError> {
    let lists = remote.fingerprints(buckets)?;
    report.round_trips += 1;
    report.bytes += wire::fingerprints(&lists);
    if lists.len() != buckets.len() {
        return Err(MerkleError::Malformed(format!(
            "{} fingerprint lists for {} buckets",
            lists.len(),
            buckets.len()
        )));
    }

    let mut picks: Vec<(u32, u32)> = Vec::new();
    let mut local_only: Vec<Entry> = Vec::new();
    for (&bucket, theirs) in buckets.iter().zip(&lists) {
        let entries = local.bucket(bucket).unwrap_or_default();
        report.entries_compared += (entries.len() + theirs.len()) as u64;
        let mut mine: Vec<(Fingerprint, &Entry)> = entries
            .iter()
            .map(|entry| (fingerprint(entry), entry))
            .collect();
        mine.sort_unstable();
        let mut theirs_sorted = theirs.clone();
        theirs_sorted.sort_unstable();
        for (position, fp) in theirs.iter().enumerate() {
            if mine.binary_search_by(|(own, _)| own.cmp(fp)).is_err() {
                picks.push((bucket, position as u32));
            }
        }
        let first_local_only = local_only.len();
        local_only.extend(
            mine.iter()
                .filter(|(fp, _)| theirs_sorted.binary_search(fp).is_err())
                .map(|(_, entry)| **entry),
        );
        local_only[first_local_only..].sort_unstable();
    }

    let mut remote_only = Vec::new();
    if !picks.is_empty() {
        remote_only = remote.entries(&picks)?;
        report.round_trips += 1;
        report.bytes += wire::entries(picks.len());
        if remote_only.len() != picks.len() {
            return Err(MerkleError::Malformed(format!(
                "{} entries for {} picks",
                remote_only.len(),
                picks.len()
            )));
        }
        for (entry, &(bucket, _)) in remote_only.iter().zip(&picks) {
            if bucket_of(&entry.0, local.bucket_bits) != bucket {
                return Err(MerkleError::Malformed(format!(
                    "an entry of bucket {} answered for bucket {bucket}",
                    bucket_of(&entry.0, local.bucket_bits)
                )));
            }
        }
    }

    // Merge by key. `local_only` is sorted (buckets ascend, each bucket is sorted); the
    // remote's answer is sorted by contract, and sorted again here rather than trusted.
    remote_only.sort_unstable();
    let (mut i, mut j) = (0, 0);
    loop {
        match (local_only.get(i), remote_only.get(j)) {
            (None, None) => break,
            (Some(mine), Some(theirs)) if mine.0 == theirs.0 => {
                report.different.push(mine.0);
                i += 1;
                j += 1;
            }
            (Some(mine), Some(theirs)) if theirs.0 < mine.0 => {
                report.missing_here.push(theirs.0);
                j += 1;
            }
            (None, Some(theirs)) => {
                report.missing_here.push(theirs.0);
                j += 1;
            }
            (Some(mine), _) => {
                report.missing_there.push(mine.0);
                i += 1;
            }
        }
    }
    report.missing_here.dedup();
    Ok(())
}

#[cfg(test)]
mod tests;
