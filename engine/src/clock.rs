//! Identity and time: peer ids, event ids, version vectors and the hybrid logical clock.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::limits::MAX_VECTOR_PEERS;

/// The id of a replica. 1–64 characters of `[A-Za-z0-9_.-]`.
/// Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerId(Arc<str>);

/// By the id's text; two handles on one shared copy compare without reading it.
impl Ord for PeerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl PartialOrd for PeerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PeerId {
    /// Checks the spelling and returns the id, or an error naming the bad id.
    pub fn new(id: impl Into<String>) -> Result<Self, EngineError> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if ok {
            Ok(PeerId(Arc::from(id)))
        } else {
            Err(EngineError::InvalidPeerId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PeerId {
    type Error = EngineError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PeerId::new(s)
    }
}

impl From<PeerId> for String {
    fn from(p: PeerId) -> String {
        p.0.to_string()
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's id: the writing peer and that peer's counter (1, 2, 3, …).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId {
    pub peer: PeerId,
    pub counter: u64,
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.peer, self.counter)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.peer, self.counter)
    }
}

/// Peer → highest counter seen. Because events of one peer are applied in counter order, a
/// version vector describes a causally closed set of events exactly.
///
/// Kept as a vector of entries sorted by peer: an event's causal past is stored with every
/// write it made, and a sorted vector of a few entries costs a fraction of a tree's node.
/// It serializes as a map, in peer order, exactly as a `BTreeMap` would.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct VersionVector(Vec<(PeerId, u64)>);

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(p, c)| (p, c)))
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = VersionVector;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a map of at most {MAX_VECTOR_PEERS} peers to counters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionVector, A::Error> {
                // Bounded as it is read: a vector comes from peers, in messages and bundles.
                let mut entries = BTreeMap::new();
                while let Some((peer, counter)) = map.next_entry::<PeerId, u64>()? {
                    if entries.len() == MAX_VECTOR_PEERS {
                        return Err(serde::de::Error::custom(format!(
                            "a version vector of more than {MAX_VECTOR_PEERS} peers"
                        )));
                    }
                    entries.insert(peer, counter);
                }
                Ok(VersionVector(
                    entries.into_iter().filter(|(_, c)| *c > 0).collect(),
                ))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl VersionVector {
    pub const fn new() -> Self {
        VersionVector(Vec::new())
    }

    fn find(&self, peer: &PeerId) -> Result<usize, usize> {
        self.0.binary_search_by(|(p, _)| p.cmp(peer))
    }

    /// Peers named (with a counter above 0).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, peer: &PeerId) -> u64 {
        match self.find(peer) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    pub fn set(&mut self, peer: PeerId, counter: u64) {
        match (self.find(&peer), counter) {
            (Ok(i), 0) => {
                self.0.remove(i);
            }
            (Ok(i), c) => self.0[i].1 = c,
            (Err(_), 0) => {}
            (Err(i), c) => self.0.insert(i, (peer, c)),
        }
    }

    /// True if the event `id` is in the set this vector describes.
    pub fn contains(&self, id: &EventId) -> bool {
        self.get(&id.peer) >= id.counter
    }

    /// Raises every entry to the maximum of both vectors.
    pub fn merge(&mut self, other: &VersionVector) {
        for (p, c) in &other.0 {
            self.raise(p, *c);
        }
    }

    fn raise(&mut self, peer: &PeerId, counter: u64) {
        match self.find(peer) {
            Ok(i) => {
                if counter > self.0[i].1 {
                    self.0[i].1 = counter;
                }
            }
            Err(i) => self.0.insert(i, (peer.clone(), counter)),
        }
    }

    /// Records that `id` is included (raises the peer's entry if lower).
    pub fn observe(&mut self, id: &EventId) {
        self.raise(&id.peer, id.counter);
    }

    /// True if every entry of `other` is ≤ the entry here.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(p, c)| self.get(p) >= *c)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, u64)> {
        self.0.iter().map(|(p, c)| (p, *c))
    }

    /// The events both vectors hold: the smaller counter of each peer.
    pub fn meet(&self, other: &VersionVector) -> VersionVector {
        let mut out = VersionVector::new();
        for (p, c) in self.iter() {
            let m = c.min(other.get(p));
            if m > 0 {
                out.0.push((p.clone(), m));
            }
        }
        out
    }

    /// How many events this vector holds that `other` does not.
    pub fn count_missing(&self, other: &VersionVector) -> u64 {
        self.iter()
            .map(|(p, c)| c.saturating_sub(other.get(p)))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total number of events described.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, c)| c).sum()
    }

    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.0.iter().map(|(p, _)| p)
    }

    /// Frees spare capacity (for vectors kept long, such as a write's causal past).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(p, c)| (p, c)))
            .finish()
    }
}

impl FromIterator<(PeerId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (PeerId, u64)>>(iter: T) -> Self {
        let mut vv = VersionVector::new();
        for (p, c) in iter {
            vv.set(p, c);
        }
        vv
    }
}

/// A hybrid logical clock reading: wall-clock milliseconds, then a logical counter that
/// orders readings within one millisecond. Ordered lexicographically.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub wall_ms: u64,
    pub logical: u32,
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

impl Hlc {
    /// The next reading after `self`, given the physical time `now_ms`.
    /// Always strictly greater than `self`.
    pub fn tick(self, now_ms: u64) -> Hlc {
        if now_ms > self.wall_ms {
            Hlc {
                wall_ms: now_ms,
                logical: 0,
            }
        } else if self.logical < u32::MAX {
            Hlc {
                wall_ms: self.wall_ms,
                logical: self.logical + 1,
            }
        } else {
            // Unreachable in practice: received HLCs more than a day ahead of this
            // replica's clock are refused (see `limits::MAX_CLOCK_AHEAD_MS`). Saturating
            // keeps a forged reading from panicking a write.
            Hlc {
                wall_ms: self.wall_ms.saturating_add(1),
                logical: 0,
            }
        }
    }
}

/// The total order used by last-writer-wins: HLC, then peer id, then counter. Because every
/// replica raises its HLC past every event it receives, an event always has a greater HLC than
/// everything in its causal past, so this order extends causality: "causality first" holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub hlc: Hlc,
    pub peer: PeerId,
    pub counter: u64,
}

impl Stamp {
    pub fn id(&self) -> EventId {
        EventId {
            peer: self.peer.clone(),
            counter: self.counter,
        }
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{:?}", self.peer, self.counter, self.hlc)
    }
}

/// The physical time source. Adapters pass the system clock; tests pass a fake one.
pub trait WallClock {
    fn now_ms(&self) -> u64;
}

/// A wall clock that always reads the same time. For tests and deterministic replays.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedClock(pub u64);

impl WallClock for FixedClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests;
