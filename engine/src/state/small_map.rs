//! A map kept as a vector sorted by key: for the few entries per entity (adds per peer,
//! properties, increments per peer), where a tree or hash table costs far more memory than
//! the entries themselves. A boxed slice, not a `Vec`: no capacity word, no spare room.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SmallMap<K, V>(Box<[(K, V)]>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Box::default())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    fn find<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub(super) fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        match self.find(&key) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.insert_at(i, key, value),
        }
    }

    /// The value under `key`, inserted as the default (with the key `make` builds) if absent.
    pub(super) fn entry<Q: Ord + ?Sized>(&mut self, key: &Q, make: impl FnOnce() -> K) -> &mut V
    where
        K: Borrow<Q>,
        V: Default,
    {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.insert_at(i, make(), V::default());
                i
            }
        };
        &mut self.0[i].1
    }

    /// Exactly one more slot: most maps hold one to three entries for good, and a boxed
    /// slice has no spare capacity to pay for.
    fn insert_at(&mut self, i: usize, key: K, value: V) {
        let mut v = std::mem::take(&mut self.0).into_vec();
        v.reserve_exact(1);
        v.insert(i, (key, value));
        self.0 = v.into_boxed_slice();
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces each key by an equal one (a shared copy); the order does not change.
    pub(super) fn share_keys(&mut self, mut f: impl FnMut(&K) -> K) {
        for (k, _) in &mut self.0 {
            let shared = f(k);
            debug_assert!(shared == *k, "share_keys must keep keys equal");
            *k = shared;
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}

impl<K, V, Q: Ord + ?Sized> std::ops::Index<&Q> for SmallMap<K, V>
where
    K: Ord + Borrow<Q>,
{
    type Output = V;
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("key present")
    }
}

/// An entry of a [`KeyedSlice`]: it holds its own key.
pub(super) trait Keyed: Default {
    type Key: Ord + Copy;
    fn key(&self) -> Self::Key;
    fn set_key(&mut self, key: Self::Key);
}

/// A [`SmallMap`] whose entries carry their key themselves: for an entity's properties,
/// whose state has room for the name's 4-byte id in its own padding. As `(NameId,
/// PropState)` pairs an entry took 80 bytes in WASM; as a `PropState` holding its name, 72
/// (150,000 properties in the memory bench: 1.2 MB).
#[derive(Clone, Debug)]
pub(super) struct KeyedSlice<T>(Box<[T]>);

impl<T> Default for KeyedSlice<T> {
    fn default() -> Self {
        KeyedSlice(Box::default())
    }
}

impl<T: Keyed> KeyedSlice<T> {
    fn find(&self, key: T::Key) -> Result<usize, usize> {
        self.0.binary_search_by(|e| e.key().cmp(&key))
    }

    pub(super) fn get(&self, key: T::Key) -> Option<&T> {
        self.find(key).ok().map(|i| &self.0[i])
    }

    /// The entry under `key`, inserted as the default if absent (exactly one more slot, as
    /// [`SmallMap::insert_at`]).
    pub(super) fn entry(&mut self, key: T::Key) -> &mut T {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.reserve_exact(1);
                let mut e = T::default();
                e.set_key(key);
                v.insert(i, e);
                self.0 = v.into_boxed_slice();
                i
            }
        };
        &mut self.0[i]
    }

    /// The slice of `entries`, whose keys are distinct, in any order.
    pub(super) fn from_unsorted(mut entries: Vec<T>) -> Self {
        entries.sort_by_key(|e| e.key());
        KeyedSlice(entries.into_boxed_slice())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut()
    }
}

/// A [`SmallMap`] that keeps a single entry in place, with no allocation: for the adds of
/// an entity, which almost always come from one event. Serializes as a `SmallMap` does.
///
/// Empty is an empty `Many` (which allocates nothing), not a third variant: with two, the
/// tag lives in the key's niche (a `PeerId`'s non-null pointer), so an entity's adds take
/// 32 bytes in WASM instead of 40 (800 KB for 100,000 entities).
#[derive(Clone, Debug)]
pub(super) enum OneOrMap<K, V> {
    One((K, V)),
    Many(SmallMap<K, V>),
}

impl<K, V> Default for OneOrMap<K, V> {
    fn default() -> Self {
        OneOrMap::Many(SmallMap::default())
    }
}

impl<K: Ord, V> OneOrMap<K, V> {
    fn entries(&self) -> &[(K, V)] {
        match self {
            OneOrMap::One(entry) => std::slice::from_ref(entry),
            OneOrMap::Many(m) => &m.0,
        }
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        match self {
            OneOrMap::Many(m) if m.is_empty() => *self = OneOrMap::One((key, value)),
            OneOrMap::One((k, v)) if *k == key => *v = value,
            OneOrMap::One(_) => {
                let OneOrMap::One((k, v)) = std::mem::take(self) else {
                    unreachable!("matched above")
                };
                let mut m = SmallMap::default();
                m.insert(k, v);
                m.insert(key, value);
                *self = OneOrMap::Many(m);
            }
            OneOrMap::Many(m) => m.insert(key, value),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Replaces each key by an equal one (a shared copy).
    pub(super) fn share_keys(&mut self, mut f: impl FnMut(&K) -> K) {
        match self {
            OneOrMap::One((k, _)) => *k = f(k),
            OneOrMap::Many(m) => m.share_keys(f),
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries().iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for OneOrMap<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries().serialize(s)
    }
}

impl<'de, K: Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for OneOrMap<K, V> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut entries = Vec::<(K, V)>::deserialize(d)?;
        Ok(match entries.len() {
            1 => OneOrMap::One(entries.pop().expect("one entry")),
            _ => OneOrMap::Many(SmallMap(entries.into_boxed_slice())),
        })
    }
}
