//! An in-memory [`EventStore`]: the reference implementation of the event-log port, for tests
//! and for replicas that do not need durability.

use std::collections::{BTreeMap, HashMap};

use crate::clock::{EventId, PeerId, VersionVector};
use crate::event::Event;
use crate::ports::{EventStore, StoreError};
use crate::snapshot::Snapshot;

/// Events in insertion order, an index by id, and the metadata area. Nothing survives a drop.
#[derive(Debug, Default, Clone)]
pub struct MemoryEventStore {
    events: Vec<Event>,
    /// The position of each event in `events` (for `scan_page`): increasing, never reused.
    positions: Vec<u64>,
    next_position: u64,
    /// Id → (position in `events`, digest of the stored event).
    index: HashMap<EventId, (usize, [u8; 32])>,
    meta: BTreeMap<String, String>,
    snapshot: Option<Snapshot>,
}

impl MemoryEventStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, event: Event) {
        self.events.push(event);
        self.positions.push(self.next_position);
        self.next_position += 1;
    }

    /// Keeps the events `keep` accepts, with their positions.
    fn retain(&mut self, keep: impl Fn(&Event) -> bool) {
        let mut i = 0;
        self.positions.retain(|_| {
            i += 1;
            keep(&self.events[i - 1])
        });
        self.events.retain(keep);
    }

    fn reindex(&mut self) {
        self.index = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), (i, e.digest())))
            .collect();
    }

    /// The stored event with this id, if any.
    pub fn get(&self, id: &EventId) -> Option<&Event> {
        self.index.get(id).map(|&(i, _)| &self.events[i])
    }
}

impl EventStore for MemoryEventStore {
    fn append(&mut self, events: &[Event]) -> Result<usize, StoreError> {
        // Check everything first, store afterwards: the call is all-or-nothing.
        let mut fresh: HashMap<&EventId, [u8; 32]> = HashMap::new();
        let mut to_store: Vec<&Event> = Vec::new();
        let floor = self.snapshot.as_ref().map(|s| &s.version_vector);
        for event in events {
            if floor.is_some_and(|f| f.contains(&event.id)) {
                continue;
            }
            let digest = event.digest();
            let known = self
                .index
                .get(&event.id)
                .map(|&(_, d)| d)
                .or_else(|| fresh.get(&event.id).copied());
            match known {
                Some(d) if d == digest => {}
                Some(_) => {
                    return Err(StoreError::Equivocation {
                        id: event.id.clone(),
                    })
                }
                None => {
                    fresh.insert(&event.id, digest);
                    to_store.push(event);
                }
            }
        }
        let added = to_store.len();
        self.events.reserve(added);
        for event in to_store {
            let digest = fresh[&event.id];
            self.index
                .insert(event.id.clone(), (self.events.len(), digest));
            self.push(event.clone());
        }
        Ok(added)
    }

    fn scan(
        &self,
        since: &VersionVector,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for event in &self.events {
            if !since.contains(&event.id) {
                f(event.clone())?;
            }
        }
        Ok(())
    }

    fn scan_page(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(u64, bool), StoreError> {
        let start = self.positions.partition_point(|&p| p < from);
        let mut taken = 0;
        for (event, &pos) in self.events[start..].iter().zip(&self.positions[start..]) {
            if taken == limit {
                return Ok((pos, false));
            }
            if !since.contains(&event.id) {
                f(event.clone())?;
                taken += 1;
            }
        }
        Ok((self.next_position.max(from), true))
    }

    fn count(&self) -> Result<u64, StoreError> {
        Ok(self.events.len() as u64)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.snapshot.clone())
    }

    fn compact(&mut self, snapshot: &Snapshot, meta: &[(&str, &str)]) -> Result<u64, StoreError> {
        let before = self.events.len();
        self.retain(|e| !snapshot.version_vector.contains(&e.id));
        self.reindex();
        self.snapshot = Some(snapshot.clone());
        for (k, v) in meta {
            self.meta.insert((*k).to_owned(), (*v).to_owned());
        }
        Ok((before - self.events.len()) as u64)
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
        self.retain(|e| !(e.id.peer == *peer && e.id.counter > after));
        for e in events {
            self.push(e.clone());
        }
        self.reindex();
        for (k, v) in meta {
            self.meta.insert((*k).to_owned(), (*v).to_owned());
        }
        Ok(())
    }
}

/// Checks that `events` are `peer`'s, numbered `after + 1`, `after + 2`, …, and that none
/// of the events to replace is folded into the store's snapshot (whose vector is `floor`):
/// those are gone from the log, and other replicas may hold them.
pub fn check_suffix(
    peer: &PeerId,
    after: u64,
    events: &[Event],
    floor: Option<&VersionVector>,
) -> Result<(), StoreError> {
    let covered = floor.map_or(0, |f| f.get(peer));
    if covered > after {
        return Err(StoreError::Corrupt(format!(
            "replacing the events of {peer} after {after}: the snapshot covers them up to \
             {peer}:{covered}, and compacted events cannot be rewritten"
        )));
    }
    for (i, e) in events.iter().enumerate() {
        if e.id.peer != *peer || e.id.counter != after + 1 + i as u64 {
            return Err(StoreError::Corrupt(format!(
                "replacing the events of {peer} after {after}: event {} is out of sequence",
                e.id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{conflicting_event, event_store_suite, make_event};

    #[test]
    fn conformance() {
        event_store_suite(&mut MemoryEventStore::new);
    }

    #[test]
    fn get_returns_stored_event() {
        let mut store = MemoryEventStore::new();
        let e = make_event("a", 1);
        store.append(std::slice::from_ref(&e)).unwrap();
        assert_eq!(store.get(&e.id), Some(&e));
        assert_eq!(store.get(&make_event("a", 2).id), None);
    }

    #[test]
    fn equivocation_within_one_call_names_the_event() {
        let mut store = MemoryEventStore::new();
        let err = store
            .append(&[make_event("a", 1), conflicting_event("a", 1)])
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Equivocation { id } if id.to_string() == "a:1"),
            "{err}"
        );
        assert_eq!(store.count().unwrap(), 0);
    }
}
