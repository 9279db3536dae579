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

    /// The map of `entries`, whose keys are distinct, in any order.
    pub(super) fn from_unsorted(mut entries: Vec<(K, V)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        SmallMap(entries.into_boxed_slice())
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

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.0.iter_mut().map(|(_, v)| v)
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

/// A [`SmallMap`] that keeps a single entry in place, with no allocation: for the adds of
/// an entity, which almost always come from one event. Serializes as a `SmallMap` does.
#[derive(Clone, Debug, Default)]
pub(super) enum OneOrMap<K, V> {
    #[default]
    Empty,
    One((K, V)),
    Many(SmallMap<K, V>),
}

impl<K: Ord, V> OneOrMap<K, V> {
    fn entries(&self) -> &[(K, V)] {
        match self {
            OneOrMap::Empty => &[],
            OneOrMap::One(entry) => std::slice::from_ref(entry),
            OneOrMap::Many(m) => &m.0,
        }
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        match self {
            OneOrMap::Empty => *self = OneOrMap::One((key, value)),
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
            OneOrMap::Empty => {}
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
            0 => OneOrMap::Empty,
            1 => OneOrMap::One(entries.pop().expect("one entry")),
            _ => OneOrMap::Many(SmallMap(entries.into_boxed_slice())),
        })
    }
}
