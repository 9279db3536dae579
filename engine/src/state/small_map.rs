//! A map kept as a vector sorted by key: for the few entries per entity (adds per peer,
//! properties, increments per peer), where a tree or hash table costs far more memory than
//! the entries themselves.

use std::borrow::Borrow;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
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
            Err(i) => {
                // Exactly one more: most maps hold one to three entries for good.
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value));
            }
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
                self.0.reserve_exact(1);
                self.0.insert(i, (make(), V::default()));
                i
            }
        };
        &mut self.0[i].1
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
