//! Where the engine keeps its entities: dense slots with small ids, not maps keyed by
//! `NodeRef`/`EdgeRef` (see ARCHITECTURE.md, "The entity store").
//!
//! - Table names (lower-cased) are interned to [`TableId`]s.
//! - Nodes are slots (table id, key, state) in one [`Chunked`] vector, found through a
//!   hash table of slot numbers.
//! - Edges are slots (table id, endpoint node ids, key, state), found the same way. An
//!   edge's endpoints get node slots when the edge is first seen.
//! - Slots are never freed: an entity's state is also its tombstone.
//!
//! Callers pass normalized references only (table names lower-cased, see `norm_node`):
//! another spelling would intern a second table id. Debug builds check it.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};

use super::stored::Stored;
use super::EntityState;
use crate::chunked::Chunked;
use crate::event::{EdgeRef, NodeRef};
use crate::value::Value;

pub(super) type TableId = u32;
pub(super) type NodeId = u32;
pub(super) type EdgeId = u32;

#[derive(Debug)]
struct NodeSlot {
    table: TableId,
    key: Stored,
    state: EntityState,
}

#[derive(Debug)]
struct EdgeSlot {
    table: TableId,
    from: NodeId,
    to: NodeId,
    key: Box<str>,
    state: EntityState,
}

/// A node's adjacency, edge slot ids in ascending order: up to two in place, more in a
/// boxed slice. Most nodes have one or two edges, and in place they cost no allocation (16
/// bytes of WASM heap each with the allocator's header; 50,000 of them in the memory
/// bench) while the enum still fits in `EntityState`'s padding there.
#[derive(Clone, Debug)]
pub(crate) enum Links {
    /// `len` (0 to 2) ids, the first `len` of `ids`.
    Few { len: u8, ids: [EdgeId; 2] },
    /// Three or more.
    Many(Box<[EdgeId]>),
}

impl Default for Links {
    fn default() -> Self {
        Links::Few {
            len: 0,
            ids: [0; 2],
        }
    }
}

impl std::ops::Deref for Links {
    type Target = [EdgeId];
    fn deref(&self) -> &[EdgeId] {
        match self {
            Links::Few { len, ids } => &ids[..*len as usize],
            Links::Many(ids) => ids,
        }
    }
}

impl Links {
    fn of(ids: Vec<EdgeId>) -> Links {
        match *ids.as_slice() {
            [] => Links::default(),
            [a] => Links::Few {
                len: 1,
                ids: [a, 0],
            },
            [a, b] => Links::Few {
                len: 2,
                ids: [a, b],
            },
            _ => Links::Many(ids.into_boxed_slice()),
        }
    }

    /// Adds `e` if absent (in place while there is room: no allocation).
    fn insert(&mut self, e: EdgeId) {
        let Err(i) = self.binary_search(&e) else {
            return;
        };
        if let Links::Few { len, ids } = self {
            if *len < 2 {
                ids.copy_within(i..*len as usize, i + 1);
                ids[i] = e;
                *len += 1;
                return;
            }
        }
        let mut v = Vec::with_capacity(self.len() + 1);
        v.extend_from_slice(self);
        v.insert(i, e);
        *self = Links::of(v);
    }

    /// Removes `e` if present (in place when few: no allocation).
    fn remove(&mut self, e: EdgeId) {
        let Ok(i) = self.binary_search(&e) else {
            return;
        };
        if let Links::Few { len, ids } = self {
            ids.copy_within(i + 1..*len as usize, i);
            *len -= 1;
            return;
        }
        let mut v = self.to_vec();
        v.remove(i);
        *self = Links::of(v);
    }
}

/// Strings interned to small ids, numbered in the order first seen: table names here,
/// property names in the engine.
#[derive(Debug, Default)]
pub(super) struct Interner {
    list: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Interner {
    pub(super) fn id(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub(super) fn intern(&mut self, s: &str) -> u32 {
        if let Some(i) = self.id(s) {
            return i;
        }
        let i = id(self.list.len());
        let shared: Arc<str> = s.into();
        self.list.push(shared.clone());
        self.ids.insert(shared, i);
        i
    }

    pub(super) fn get(&self, i: u32) -> &str {
        &self.list[i as usize]
    }
}

#[derive(Debug, Default)]
pub(super) struct Entities {
    tables: Interner,
    nodes: Chunked<NodeSlot>,
    node_index: HashTable<NodeId>,
    edges: Chunked<EdgeSlot>,
    edge_index: HashTable<EdgeId>,
}

fn node_hash(table: TableId, key: &Value) -> u64 {
    FxBuildHasher.hash_one((table, key))
}

fn edge_hash(table: TableId, from: NodeId, to: NodeId, key: &str) -> u64 {
    FxBuildHasher.hash_one((table, from, to, key))
}

fn id(len: usize) -> u32 {
    u32::try_from(len).expect("fewer than 2^32 of each")
}

impl Entities {
    pub(super) fn table_id(&self, table: &str) -> Option<TableId> {
        self.tables.id(table)
    }

    /// How many tables have ids (ids are `0..table_count()`).
    pub(super) fn table_count(&self) -> usize {
        self.tables.list.len()
    }

    fn table_id_or_insert(&mut self, table: &str) -> TableId {
        self.tables.intern(table)
    }

    /// The table's name (lower-cased).
    pub(super) fn table_name(&self, t: TableId) -> &str {
        self.tables.get(t)
    }

    /// Room for `nodes` more nodes and `edges` more edges, so that filling a store of known
    /// size (reading a snapshot) does not grow and copy its vectors and indexes.
    pub(super) fn reserve(&mut self, nodes: usize, edges: usize) {
        self.nodes.reserve(nodes);
        self.edges.reserve(edges);
        let slots = &self.nodes;
        self.node_index.reserve(nodes, |&j| {
            let s = &slots[j as usize];
            node_hash(s.table, &s.key.value())
        });
        let slots = &self.edges;
        self.edge_index.reserve(edges, |&j| {
            let s = &slots[j as usize];
            edge_hash(s.table, s.from, s.to, &s.key)
        });
    }

    pub(super) fn node_id(&self, n: &NodeRef) -> Option<NodeId> {
        self.node_id_parts(&n.table, &n.key)
    }

    /// [`Entities::node_id`] of the node (`table`, `key`), `table` lower-cased.
    pub(super) fn node_id_parts(&self, table: &str, key: &Value) -> Option<NodeId> {
        debug_assert!(!table.bytes().any(|b| b.is_ascii_uppercase()), "{table}");
        let t = self.table_id(table)?;
        let nodes = &self.nodes;
        self.node_index
            .find(node_hash(t, key), |&i| {
                let s = &nodes[i as usize];
                s.table == t && s.key.is(key)
            })
            .copied()
    }

    /// The node's slot, created (with empty state) if absent.
    pub(super) fn node_id_or_insert(&mut self, n: &NodeRef) -> NodeId {
        if let Some(i) = self.node_id(n) {
            return i;
        }
        let t = self.table_id_or_insert(&n.table);
        let i = id(self.nodes.len());
        self.nodes.push(NodeSlot {
            table: t,
            key: Stored::new(&n.key),
            state: EntityState::default(),
        });
        let nodes = &self.nodes;
        self.node_index
            .insert_unique(node_hash(t, &n.key), i, |&j| {
                let s = &nodes[j as usize];
                node_hash(s.table, &s.key.value())
            });
        i
    }

    pub(super) fn node(&self, n: &NodeRef) -> Option<&EntityState> {
        self.node_id(n).map(|i| &self.nodes[i as usize].state)
    }

    pub(super) fn node_entry(&mut self, n: &NodeRef) -> &mut EntityState {
        let i = self.node_id_or_insert(n);
        &mut self.nodes[i as usize].state
    }

    pub(super) fn node_state(&self, i: NodeId) -> &EntityState {
        &self.nodes[i as usize].state
    }

    pub(super) fn node_state_mut(&mut self, i: NodeId) -> &mut EntityState {
        &mut self.nodes[i as usize].state
    }

    /// The node's table and key.
    pub(super) fn node_parts(&self, i: NodeId) -> (TableId, &Stored) {
        let s = &self.nodes[i as usize];
        (s.table, &s.key)
    }

    pub(super) fn node_ref(&self, i: NodeId) -> NodeRef {
        let s = &self.nodes[i as usize];
        NodeRef {
            table: self.table_name(s.table).to_string(),
            key: s.key.value(),
        }
    }

    pub(super) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn edge_id(&self, e: &EdgeRef) -> Option<EdgeId> {
        debug_assert!(!e.table.bytes().any(|b| b.is_ascii_uppercase()), "{e:?}");
        let t = self.table_id(&e.table)?;
        let from = self.node_id(&e.from)?;
        let to = self.node_id(&e.to)?;
        let edges = &self.edges;
        self.edge_index
            .find(edge_hash(t, from, to, &e.key), |&i| {
                let s = &edges[i as usize];
                s.table == t && s.from == from && s.to == to && *s.key == *e.key
            })
            .copied()
    }

    pub(super) fn edge(&self, e: &EdgeRef) -> Option<&EntityState> {
        self.edge_id(e).map(|i| &self.edges[i as usize].state)
    }

    /// The edge's slot (created with empty state if absent, with slots for its endpoints).
    pub(super) fn edge_entry(&mut self, e: &EdgeRef) -> (EdgeId, &mut EntityState) {
        let i = match self.edge_id(e) {
            Some(i) => i,
            None => {
                let t = self.table_id_or_insert(&e.table);
                let from = self.node_id_or_insert(&e.from);
                let to = self.node_id_or_insert(&e.to);
                let i = id(self.edges.len());
                self.edges.push(EdgeSlot {
                    table: t,
                    from,
                    to,
                    key: e.key.as_str().into(),
                    state: EntityState::default(),
                });
                let edges = &self.edges;
                self.edge_index
                    .insert_unique(edge_hash(t, from, to, &e.key), i, |&j| {
                        let s = &edges[j as usize];
                        edge_hash(s.table, s.from, s.to, &s.key)
                    });
                i
            }
        };
        (i, &mut self.edges[i as usize].state)
    }

    pub(super) fn edge_state(&self, i: EdgeId) -> &EntityState {
        &self.edges[i as usize].state
    }

    pub(super) fn edge_state_mut(&mut self, i: EdgeId) -> &mut EntityState {
        &mut self.edges[i as usize].state
    }

    /// The edge's key (the one that tells multi-edges apart).
    pub(super) fn edge_key(&self, i: EdgeId) -> &str {
        &self.edges[i as usize].key
    }

    /// The edge's table and endpoints.
    pub(super) fn edge_ends(&self, i: EdgeId) -> (TableId, NodeId, NodeId) {
        let s = &self.edges[i as usize];
        (s.table, s.from, s.to)
    }

    pub(super) fn edge_ref(&self, i: EdgeId) -> EdgeRef {
        let s = &self.edges[i as usize];
        EdgeRef {
            table: self.table_name(s.table).to_string(),
            from: self.node_ref(s.from),
            to: self.node_ref(s.to),
            key: s.key.to_string(),
        }
    }

    pub(super) fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Every node ever seen (including edge endpoints never added), in slot order.
    pub(super) fn node_refs(&self) -> impl Iterator<Item = NodeRef> + '_ {
        (0..id(self.nodes.len())).map(|i| self.node_ref(i))
    }

    /// Every edge ever seen, in slot order.
    pub(super) fn edge_refs(&self) -> impl Iterator<Item = EdgeRef> + '_ {
        (0..id(self.edges.len())).map(|i| self.edge_ref(i))
    }

    /// Adds the edge to its endpoints' adjacency.
    pub(super) fn link(&mut self, e: EdgeId) {
        let (_, from, to) = self.edge_ends(e);
        for end in [from, to] {
            self.nodes[end as usize].state.links.insert(e);
        }
    }

    /// Removes the edge from its endpoints' adjacency.
    pub(super) fn unlink(&mut self, e: EdgeId) {
        let (_, from, to) = self.edge_ends(e);
        for end in [from, to] {
            self.nodes[end as usize].state.links.remove(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Links;
    use proptest::prelude::*;

    proptest! {
        /// Links hold what a sorted set would, in place up to two and boxed beyond, through
        /// any sequence of inserts and removes (ids from a small range, so both repeat).
        #[test]
        fn links_are_a_sorted_set(ops in proptest::collection::vec((any::<bool>(), 0u32..6), 0..40)) {
            let mut links = Links::default();
            let mut set = std::collections::BTreeSet::new();
            for (insert, e) in ops {
                if insert {
                    links.insert(e);
                    set.insert(e);
                } else {
                    links.remove(e);
                    set.remove(&e);
                }
                prop_assert_eq!(links.to_vec(), set.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(matches!(links, Links::Few { .. }), set.len() <= 2);
            }
        }
    }
}
