//! An in-memory [`EventStore`] that keeps each event encoded (MessagePack, back to back in
//! blocks) rather than as Rust values: the log copy of hosts that must fit a small memory
//! budget (the JS host in WASM, see ARCHITECTURE.md, "Memory of the JS host").
//!
//! Events are appended to an open block; once it holds [`BLOCK_BYTES`] it is sealed,
//! through a [`BlockCodec`] (the JS host compresses sealed blocks with zstd; [`Plain`]
//! keeps them as they are). Blocks never grow past their size, so a long log costs no
//! doubling slack and no reallocation peak. Per event the store holds its encoding and 36
//! bytes of bookkeeping: where it is, its scan position, its id, and an entry in a
//! per-peer index sorted by counter. Reading an event inflates its block (a scan, once
//! per block) and decodes it; events `since` contains are skipped by their id alone.
//!
//! Equivocation is found by comparing encodings: an event's digest is the SHA-256 of its
//! encoding ([`Event::digest`]), so equal encodings are equal digests.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::chunked::Chunked;
use crate::clock::{EventId, PeerId, VersionVector};
use crate::event::Event;
use crate::memory_log::check_suffix;
use crate::ports::{EventStore, StoreError};
use crate::snapshot::Snapshot;

/// Bytes of encodings in a block before it is sealed.
pub const BLOCK_BYTES: usize = 32 << 10;

/// How sealed blocks are kept.
pub trait BlockCodec: Default + std::fmt::Debug + Send {
    /// A block's bytes, packed (returning them as they are is allowed).
    fn pack(&self, raw: &[u8]) -> Vec<u8>;
    /// A packed block's bytes: exactly `raw_len` of them, or an error.
    fn unpack<'a>(&self, packed: &'a [u8], raw_len: usize) -> Result<Cow<'a, [u8]>, String>;
}

/// Sealed blocks kept as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plain;

impl BlockCodec for Plain {
    fn pack(&self, raw: &[u8]) -> Vec<u8> {
        raw.to_vec()
    }

    fn unpack<'a>(&self, packed: &'a [u8], _raw_len: usize) -> Result<Cow<'a, [u8]>, String> {
        Ok(Cow::Borrowed(packed))
    }
}

/// One stored event.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Its scan position: increasing, never reused.
    position: u64,
    counter: u64,
    /// Its peer, as an index into `peers`.
    peer: u32,
    /// Its block (`sealed.len()`: the open one), and where its encoding starts there (it
    /// ends where the next event of the block starts, or at the block's end).
    block: u32,
    offset: u32,
}

/// A sealed block.
#[derive(Debug, Clone)]
struct Sealed {
    bytes: Box<[u8]>,
    raw_len: u32,
    /// Whether `bytes` went through the codec (else they are the raw bytes: packing made
    /// them larger).
    packed: bool,
}

/// Events encoded in blocks, with an index by id. Nothing survives a drop.
#[derive(Debug, Default, Clone)]
pub struct PackedEventStore<C: BlockCodec = Plain> {
    codec: C,
    sealed: Vec<Sealed>,
    open: Vec<u8>,
    /// In chunks: a `Vec` of them would double into one block of up to twice their size.
    entries: Chunked<Entry>,
    next_position: u64,
    /// Every peer seen, once; entries name them by index.
    peers: Vec<PeerId>,
    peer_index: HashMap<PeerId, u32>,
    /// Per peer (same index as `peers`): (counter, index into `entries`), sorted by counter.
    /// Indexes into `entries`, sorted by the entries' counters (4 bytes an event: the
    /// counter is read from the entry).
    by_counter: Vec<Vec<u32>>,
    meta: BTreeMap<String, String>,
    snapshot: Option<Snapshot>,
}

impl PackedEventStore<Plain> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<C: BlockCodec> PackedEventStore<C> {
    pub fn with_codec(codec: C) -> Self {
        PackedEventStore {
            codec,
            ..Self::default()
        }
    }

    /// The vector of the snapshot the log is compacted into (empty: none). Unlike
    /// [`EventStore::snapshot`], copies no state.
    pub fn floor(&self) -> VersionVector {
        self.snapshot
            .as_ref()
            .map(|s| s.version_vector.clone())
            .unwrap_or_default()
    }

    /// The encodings' total size.
    pub fn raw_bytes(&self) -> usize {
        self.sealed
            .iter()
            .map(|b| b.raw_len as usize)
            .sum::<usize>()
            + self.open.len()
    }

    /// The bytes the blocks hold (sealed ones as packed), bookkeeping not counted.
    pub fn held_bytes(&self) -> usize {
        self.sealed.iter().map(|b| b.bytes.len()).sum::<usize>() + self.open.len()
    }

    /// Calls `f` with the encoding of each event stored at or after position `from`, in
    /// order, and returns the position after the last one (as a last page of
    /// [`EventStore::scan_page`] would): for a host that logs the encodings as they are.
    pub fn scan_encoded(&self, from: u64, mut f: impl FnMut(&[u8])) -> Result<u64, StoreError> {
        let start = self.entries.partition_point(|e| e.position < from);
        self.each_encoding(
            start,
            |_| true,
            |_, encoding| {
                f(encoding);
                Ok(true)
            },
        )?;
        Ok(self.next_position.max(from))
    }

    /// Block `b`'s raw bytes.
    fn block(&self, b: u32) -> Result<Cow<'_, [u8]>, StoreError> {
        let Some(sealed) = self.sealed.get(b as usize) else {
            return Ok(Cow::Borrowed(&self.open));
        };
        if !sealed.packed {
            return Ok(Cow::Borrowed(&sealed.bytes));
        }
        let raw = self
            .codec
            .unpack(&sealed.bytes, sealed.raw_len as usize)
            .map_err(|e| StoreError::Corrupt(format!("the packed log's block {b}: {e}")))?;
        if raw.len() != sealed.raw_len as usize {
            return Err(StoreError::Corrupt(format!(
                "the packed log's block {b} unpacks to {} bytes, not {}",
                raw.len(),
                sealed.raw_len
            )));
        }
        Ok(raw)
    }

    /// Entry `i`'s encoding, within its block's raw bytes.
    fn span(&self, i: usize, block: &[u8]) -> std::ops::Range<usize> {
        let e = &self.entries[i];
        let end = match self.entries.get(i + 1) {
            Some(next) if next.block == e.block => next.offset as usize,
            _ => block.len(),
        };
        e.offset as usize..end
    }

    /// Calls `f` with the index and encoding of each entry from `start` on that `want`
    /// accepts, inflating each block once; stops when `f` returns false.
    fn each_encoding(
        &self,
        start: usize,
        want: impl Fn(&Entry) -> bool,
        mut f: impl FnMut(usize, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut cur: Option<(u32, Cow<'_, [u8]>)> = None;
        for (i, entry) in (start..).zip(self.entries.iter_from(start)) {
            if !want(entry) {
                continue;
            }
            if cur.as_ref().is_none_or(|(b, _)| *b != entry.block) {
                cur = Some((entry.block, self.block(entry.block)?));
            }
            let block = &cur.as_ref().expect("loaded above").1;
            if !f(i, &block[self.span(i, block)])? {
                break;
            }
        }
        Ok(())
    }

    fn decode(i: usize, encoding: &[u8]) -> Result<Event, StoreError> {
        Event::decode(encoding).map_err(|e| {
            StoreError::Corrupt(format!("the packed log's entry {i} does not decode: {e}"))
        })
    }

    fn id(&self, entry: &Entry) -> EventId {
        EventId {
            peer: self.peers[entry.peer as usize].clone(),
            counter: entry.counter,
        }
    }

    fn contains(&self, since: &VersionVector, entry: &Entry) -> bool {
        since.get(&self.peers[entry.peer as usize]) >= entry.counter
    }

    /// Whether the stored event with this id (if any) has this encoding.
    fn stored_is(&self, id: &EventId, encoding: &[u8]) -> Result<Option<bool>, StoreError> {
        let Some(&peer) = self.peer_index.get(&id.peer) else {
            return Ok(None);
        };
        let list = &self.by_counter[peer as usize];
        let entries = &self.entries;
        let Ok(k) = list.binary_search_by_key(&id.counter, |&i| entries[i as usize].counter) else {
            return Ok(None);
        };
        let i = list[k] as usize;
        let block = self.block(self.entries[i].block)?;
        Ok(Some(&block[self.span(i, &block)] == encoding))
    }

    fn intern(&mut self, peer: &PeerId) -> u32 {
        if let Some(&i) = self.peer_index.get(peer) {
            return i;
        }
        let i = u32::try_from(self.peers.len()).expect("fewer than 2^32 peers");
        self.peers.push(peer.clone());
        self.peer_index.insert(peer.clone(), i);
        self.by_counter.push(Vec::new());
        i
    }

    /// Stores one encoded event (its id not stored yet) at `position`.
    fn push(&mut self, id: &EventId, position: u64, encoding: &[u8]) {
        let peer = self.intern(&id.peer);
        let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 events");
        if self.open.capacity() == 0 {
            self.open.reserve_exact(BLOCK_BYTES.max(encoding.len()));
        }
        self.entries.push(Entry {
            position,
            counter: id.counter,
            peer,
            block: u32::try_from(self.sealed.len()).expect("fewer than 2^32 blocks"),
            offset: u32::try_from(self.open.len()).expect("blocks under 4 GiB"),
        });
        self.open.extend_from_slice(encoding);
        if self.open.len() >= BLOCK_BYTES {
            self.seal();
        }
        let list = &mut self.by_counter[peer as usize];
        let entries = &self.entries;
        // A peer's events usually come in counter order: then this is a push.
        let at = list.partition_point(|&i| entries[i as usize].counter < id.counter);
        list.insert(at, index);
    }

    fn seal(&mut self) {
        let raw = std::mem::take(&mut self.open);
        let packed = self.codec.pack(&raw);
        let sealed = if packed.len() <= raw.len() {
            Sealed {
                bytes: packed.into_boxed_slice(),
                raw_len: raw.len() as u32,
                packed: true,
            }
        } else {
            Sealed {
                raw_len: raw.len() as u32,
                bytes: raw.into_boxed_slice(),
                packed: false,
            }
        };
        self.sealed.push(sealed);
    }

    /// Keeps the events whose ids `keep` accepts, with their positions, and packs them
    /// into new blocks. Returns how many were removed.
    fn retain(&mut self, keep: impl Fn(&EventId) -> bool) -> Result<u64, StoreError> {
        let mut kept: Vec<(EventId, u64, Vec<u8>)> = Vec::new();
        self.each_encoding(
            0,
            |e| keep(&self.id(e)),
            |i, encoding| {
                let e = &self.entries[i];
                kept.push((self.id(e), e.position, encoding.to_vec()));
                Ok(true)
            },
        )?;
        let removed = (self.entries.len() - kept.len()) as u64;
        self.sealed.clear();
        self.open = Vec::new();
        self.entries.clear();
        for list in &mut self.by_counter {
            list.clear();
        }
        for (id, position, encoding) in kept {
            self.push(&id, position, &encoding);
        }
        Ok(removed)
    }
}

impl<C: BlockCodec> EventStore for PackedEventStore<C> {
    fn append(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        // Check everything first, store afterwards: the call is all-or-nothing.
        let mut fresh: HashMap<&EventId, usize> = HashMap::new();
        let mut to_store: Vec<(&EventId, Vec<u8>)> = Vec::new();
        let floor = self.snapshot.as_ref().map(|s| &s.version_vector);
        for event in events {
            if floor.is_some_and(|f| f.contains(&event.id)) {
                continue;
            }
            let encoding = event.encode();
            let same = match fresh.get(&event.id) {
                Some(&k) => Some(to_store[k].1 == encoding),
                None => self.stored_is(&event.id, &encoding)?,
            };
            match same {
                Some(true) => {}
                Some(false) => {
                    return Err(StoreError::Equivocation {
                        id: event.id.clone(),
                    })
                }
                None => {
                    fresh.insert(&event.id, to_store.len());
                    to_store.push((&event.id, encoding));
                }
            }
        }
        let added = to_store.len();
        self.entries.reserve(added);
        for (id, encoding) in to_store {
            let position = self.next_position;
            self.next_position += 1;
            self.push(id, position, &encoding);
        }
        Ok(added)
    }

    fn scan(
        &self,
        since: &VersionVector,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.each_encoding(
            0,
            |e| !self.contains(since, e),
            |i, encoding| {
                f(Self::decode(i, encoding)?)?;
                Ok(true)
            },
        )
    }

    fn scan_page(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(u64, bool), StoreError> {
        let start = self.entries.partition_point(|e| e.position < from);
        let mut taken = 0;
        let mut stopped_at = None;
        self.each_encoding(
            start,
            |e| !self.contains(since, e),
            |i, encoding| {
                if taken == limit {
                    stopped_at = Some(self.entries[i].position);
                    return Ok(false);
                }
                f(Self::decode(i, encoding)?)?;
                taken += 1;
                Ok(true)
            },
        )?;
        Ok(match stopped_at {
            Some(position) => (position, false),
            None => (self.next_position.max(from), true),
        })
    }

    fn count(&self) -> Result<u64, StoreError> {
        Ok(self.entries.len() as u64)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn compact(&mut self, snapshot: &Snapshot, meta: &[(&str, &str)]) -> Result<u64, StoreError> {
        let removed = self.retain(|id| !snapshot.version_vector.contains(id))?;
        self.snapshot = Some(snapshot.clone());
        for (k, v) in meta {
            self.meta.insert((*k).to_owned(), (*v).to_owned());
        }
        Ok(removed)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.meta.get(key).cloned())
    }

    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn replace_suffix(
        &mut self,
        peer: &PeerId,
        after: u64,
        events: &[Event],
        meta: &[(&str, &str)],
    ) -> Result<(), StoreError> {
        let floor = self.snapshot.as_ref().map(|s| &s.version_vector);
        check_suffix(peer, after, events, floor)?;
        self.retain(|id| !(id.peer == *peer && id.counter > after))?;
        for e in events {
            let position = self.next_position;
            self.next_position += 1;
            self.push(&e.id, position, &e.encode());
        }
        for (k, v) in meta {
            self.meta.insert((*k).to_owned(), (*v).to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{conflicting_event, event_store_suite, make_event};
    use crate::ports::all_events;

    /// A codec that changes every byte, so reads that skip `unpack` would decode garbage.
    #[derive(Debug, Default)]
    struct Flip;

    impl BlockCodec for Flip {
        fn pack(&self, raw: &[u8]) -> Vec<u8> {
            raw.iter().map(|b| b ^ 0x5a).collect()
        }

        fn unpack<'a>(&self, packed: &'a [u8], _raw_len: usize) -> Result<Cow<'a, [u8]>, String> {
            Ok(Cow::Owned(packed.iter().map(|b| b ^ 0x5a).collect()))
        }
    }

    /// A codec whose sealed blocks cannot be read back.
    #[derive(Debug, Default)]
    struct Lossy;

    impl BlockCodec for Lossy {
        fn pack(&self, raw: &[u8]) -> Vec<u8> {
            raw[..raw.len() / 2].to_vec()
        }

        fn unpack<'a>(&self, _packed: &'a [u8], _raw_len: usize) -> Result<Cow<'a, [u8]>, String> {
            Err("lost".into())
        }
    }

    /// Enough events of two peers, interleaved, to fill several blocks.
    fn many() -> Vec<Event> {
        (1..=2_000)
            .flat_map(|c| [make_event("a", c), make_event("b", c)])
            .collect()
    }

    #[test]
    fn conformance() {
        event_store_suite(&mut PackedEventStore::new);
        event_store_suite(&mut || PackedEventStore::with_codec(Flip));
    }

    #[test]
    fn equivocation_against_a_stored_event_changes_nothing() {
        let mut store = PackedEventStore::new();
        store
            .append(&[make_event("a", 1), make_event("b", 1)])
            .unwrap();
        let before = store.raw_bytes();
        let err = store
            .append(&[make_event("a", 2), conflicting_event("a", 1)])
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Equivocation { id } if id.to_string() == "a:1"),
            "{err}"
        );
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.raw_bytes(), before);
    }

    #[test]
    fn out_of_order_counters_are_found_and_scanned_in_stored_order() {
        let mut store = PackedEventStore::new();
        let events = [
            make_event("a", 3),
            make_event("a", 1),
            make_event("b", 7),
            make_event("a", 2),
        ];
        store.append(&events).unwrap();
        assert_eq!(all_events(&store).unwrap(), events.to_vec());
        // Each is found by id: appending them again adds nothing.
        assert_eq!(store.append(&events).unwrap(), 0);
        let mut since = VersionVector::new();
        since.observe(&make_event("a", 1).id);
        since.observe(&make_event("a", 2).id);
        let mut left = Vec::new();
        store
            .scan(&since, &mut |e| {
                left.push(e.id.to_string());
                Ok(())
            })
            .unwrap();
        assert_eq!(left, ["a:3", "b:7"]);
    }

    #[test]
    fn events_across_sealed_blocks_read_back_page_by_page_and_after_compaction() {
        let events = many();
        let mut store = PackedEventStore::with_codec(Flip);
        for chunk in events.chunks(333) {
            store.append(chunk).unwrap();
        }
        let encoded: usize = events.iter().map(|e| e.encode().len()).sum();
        assert_eq!(store.raw_bytes(), encoded);
        assert!(store.sealed.len() >= 4, "{} blocks", store.sealed.len());
        assert!(store
            .sealed
            .iter()
            .all(|b| b.raw_len as usize >= BLOCK_BYTES));
        assert_eq!(all_events(&store).unwrap(), events);
        // Every event is found by id in its block: none is added again, a changed one is
        // equivocation.
        assert_eq!(store.append(&events).unwrap(), 0);
        assert!(matches!(
            store.append(&[conflicting_event("b", 1_500)]),
            Err(StoreError::Equivocation { .. })
        ));
        // Pages of 250 from a vector that holds a's first half.
        let mut since = VersionVector::new();
        since.observe(&make_event("a", 1_000).id);
        let (mut from, mut seen) = (0, Vec::new());
        loop {
            let (next, done) = store
                .scan_page(&since, from, 250, &mut |e| {
                    seen.push(e);
                    Ok(())
                })
                .unwrap();
            from = next;
            if done {
                break;
            }
        }
        let want: Vec<Event> = events
            .iter()
            .filter(|e| !since.contains(&e.id))
            .cloned()
            .collect();
        assert_eq!(seen, want);
        // Compaction repacks what is left, positions and lookups included.
        let snap = Snapshot {
            version_vector: since.clone(),
            event_count: 1_000,
            checksum: [0; 16],
            state: Vec::new(),
        };
        assert_eq!(store.compact(&snap, &[]).unwrap(), 1_000);
        assert_eq!(all_events(&store).unwrap(), want);
        assert_eq!(store.append(&want).unwrap(), 0);
        assert_eq!(store.floor(), since);
    }

    #[test]
    fn a_block_that_cannot_be_unpacked_is_reported_as_corrupt() {
        let mut store = PackedEventStore::with_codec(Lossy);
        store.append(&many()).unwrap();
        assert!(store.held_bytes() < store.raw_bytes());
        let err = all_events(&store).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("block 0: lost")),
            "{err}"
        );
    }
}
