//! [`Chunked`]: a growable sequence kept in fixed-size chunks, for the engine's long
//! vectors (entity slots, HLCs per peer, the packed log's entries).
//!
//! A `Vec` doubles its capacity when full, so right after growing it holds up to twice the
//! memory its items need, all of it counted where the heap is the limit (a WASM linear
//! memory grows to fit every allocation, touched or not). A `Chunked` has spare room only
//! in its last chunk, which grows by doubling up to the chunk size (so a small sequence
//! stays small), and never copies the items of full chunks.

use std::ops::{Index, IndexMut};

/// Items per chunk: small enough that the last chunk's spare room is negligible beside a
/// large state, large enough that the chunk list itself is.
const CHUNK: usize = 1024;

#[derive(Debug, Clone)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn push(&mut self, item: T) {
        if self.len % CHUNK == 0 {
            self.chunks.push(Vec::new());
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(item);
        self.len += 1;
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    /// Room in the chunk list for `additional` more items (the chunks are made as needed).
    pub(crate) fn reserve(&mut self, additional: usize) {
        let chunks = (self.len + additional).div_ceil(CHUNK);
        self.chunks
            .reserve_exact(chunks.saturating_sub(self.chunks.len()));
    }

    /// Removes every item, freeing the chunks.
    pub(crate) fn clear(&mut self) {
        self.chunks = Vec::new();
        self.len = 0;
    }

    /// The items from index `start` on, in order.
    pub(crate) fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        self.chunks
            .iter()
            .skip(start / CHUNK)
            .flatten()
            .skip(start % CHUNK)
    }

    /// The index of the first item `pred` rejects, given that it accepts a prefix of the
    /// items and rejects the rest (as [`slice::partition_point`]).
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        // Chunks are never empty: the first chunk whose last item is rejected holds the point.
        let c = self
            .chunks
            .partition_point(|chunk| chunk.last().is_some_and(&mut pred));
        match self.chunks.get(c) {
            Some(chunk) => c * CHUNK + chunk.partition_point(pred),
            None => self.len,
        }
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_across_chunks() {
        let mut c = Chunked::default();
        assert_eq!(c.last(), None);
        for i in 0..(3 * CHUNK + 5) {
            c.push(i);
            assert_eq!(c.len(), i + 1);
            assert_eq!(c.last(), Some(&i));
        }
        for i in 0..c.len() {
            assert_eq!(c[i], i);
            assert_eq!(c.get(i), Some(&i));
        }
        assert_eq!(c.get(c.len()), None);
        c[CHUNK] = 7;
        assert_eq!(c[CHUNK], 7);
        assert_eq!(c.chunks.len(), 4);
        // Full chunks have no spare room; the last one grew by doubling.
        assert!(c.chunks[..3].iter().all(|ch| ch.capacity() == CHUNK));
        assert!(c.chunks[3].capacity() < 16, "{}", c.chunks[3].capacity());
    }

    #[test]
    fn iterates_and_searches_from_any_index() {
        let mut c = Chunked::default();
        assert_eq!(c.partition_point(|&x: &usize| x < 5), 0);
        assert_eq!(c.iter_from(0).count(), 0);
        let n = 2 * CHUNK + 7;
        for i in 0..n {
            c.push(i);
        }
        for start in [
            0,
            1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 1,
            2 * CHUNK,
            n - 1,
            n,
            n + 3,
        ] {
            let from: Vec<usize> = c.iter_from(start).copied().collect();
            assert_eq!(from, (start.min(n)..n).collect::<Vec<_>>(), "from {start}");
            assert_eq!(
                c.partition_point(|&x| x < start),
                start.min(n),
                "point {start}"
            );
        }
        c.clear();
        assert_eq!((c.len(), c.last(), c.chunks.len()), (0, None, 0));
    }
}
