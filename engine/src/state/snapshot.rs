//! Writing the engine's state into a snapshot and reading it back.

use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::*;

/// Bumped whenever the layout below changes; an unknown format is refused, not guessed.
const FORMAT: u32 = 1;

/// The snapshot's layout, borrowing the engine's entity states. Read back field by field
/// by [`Reader`], in this order.
#[derive(Serialize)]
struct StateRef<'a> {
    format: u32,
    schema: Schema,
    applied: VersionVector,
    hlc: Hlc,
    /// Per peer: the counter and HLC of its latest applied event.
    last_hlcs: Vec<(PeerId, u64, Hlc)>,
    nodes: Vec<(NodeRef, EntityOut<'a>)>,
    edges: Vec<(EdgeRef, EntityOut<'a>)>,
    seals: Seals,
    contended: Vec<(Entity, String)>,
    conflicts: Vec<ConflictRecord>,
    /// The commit markers applied (added after format 1's first release: a snapshot
    /// without them reads as none).
    tx_markers: Vec<(&'a crate::tx::TxId, &'a TxMarks)>,
}

/// An [`EntityState`] as written: its properties by name, in name order (ids are
/// assigned in apply order, which differs between replicas).
#[derive(Serialize)]
struct EntityOut<'a> {
    adds: &'a OneOrMap<PeerId, (u64, Hlc)>,
    deleted: &'a Option<Box<Deleted>>,
    props: Vec<(&'a str, &'a PropState)>,
}

/// An [`EntityState`] as read (see [`Reader::entity`]).
#[derive(Deserialize)]
struct EntityIn {
    adds: OneOrMap<PeerId, (u64, Hlc)>,
    deleted: Option<Box<Deleted>>,
    props: Vec<(String, PropState)>,
}

impl Engine {
    fn entity_out<'a>(&'a self, state: &'a EntityState) -> EntityOut<'a> {
        let mut props: Vec<(&str, &PropState)> = state
            .props
            .iter()
            .map(|ps| (self.names.get(ps.name), ps))
            .collect();
        props.sort_by(|a, b| a.0.cmp(b.0));
        EntityOut {
            adds: &state.adds,
            deleted: &state.deleted,
            props,
        }
    }
}

/// A [`Conflict`] as stored: the strategy as an owned name.
#[derive(Serialize, Deserialize)]
struct ConflictRecord {
    kind: ConflictKind,
    strategy: String,
    entity: String,
    property: Option<String>,
    winner: ConflictSide,
    loser: ConflictSide,
    resolved: Option<String>,
    detected_at: String,
}

impl From<&Conflict> for ConflictRecord {
    fn from(c: &Conflict) -> Self {
        ConflictRecord {
            kind: c.kind,
            strategy: c.strategy.to_string(),
            entity: c.entity.clone(),
            property: c.property.clone(),
            winner: c.winner.clone(),
            loser: c.loser.clone(),
            resolved: c.resolved.clone(),
            detected_at: c.detected_at.clone(),
        }
    }
}

impl ConflictRecord {
    fn into_conflict(self) -> Result<Conflict, EngineError> {
        let strategy = crate::conflict::static_strategy(&self.strategy).ok_or_else(|| {
            EngineError::InvalidSnapshot(format!("unknown conflict strategy {:?}", self.strategy))
        })?;
        Ok(Conflict {
            kind: self.kind,
            strategy,
            entity: self.entity,
            property: self.property,
            winner: self.winner,
            loser: self.loser,
            resolved: self.resolved,
            detected_at: self.detected_at,
        })
    }
}

impl Engine {
    /// The engine's CRDT state, with the conflicts seen so far, as snapshot bytes.
    /// Deterministic: equal states give equal bytes.
    pub fn snapshot_state(&self, conflicts: &[Conflict]) -> Vec<u8> {
        // A node slot with no state of its own is written only if an edge that was added
        // ends at it (as the adjacency used to create them): the slots of edges that were
        // only ever deleted or updated make no difference to the state.
        let mut ends = vec![false; self.store.node_count()];
        for i in 0..self.store.edge_count() as u32 {
            if !self.store.edge_state(i).adds.is_empty() {
                let (_, from, to) = self.store.edge_ends(i);
                ends[from as usize] = true;
                ends[to as usize] = true;
            }
        }
        let mut nodes: Vec<(NodeRef, EntityOut)> = (0..self.store.node_count() as u32)
            .filter(|&i| ends[i as usize] || !self.store.node_state(i).is_blank())
            .map(|i| {
                let state = self.entity_out(self.store.node_state(i));
                (self.store.node_ref(i), state)
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut edges: Vec<(EdgeRef, EntityOut)> = (0..self.store.edge_count())
            .map(|i| {
                let i = i as u32;
                let state = self.entity_out(self.store.edge_state(i));
                (self.store.edge_ref(i), state)
            })
            .collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        let mut last_hlcs: Vec<(PeerId, u64, Hlc)> = self
            .peer_hlcs
            .iter()
            .filter_map(|(p, (first, v))| {
                let last = v.last()?.hlc();
                Some((p.clone(), first + v.len() as u64 - 1, last))
            })
            .collect();
        last_hlcs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut seals = self.seals.clone();
        let mut by_peer: Vec<_> = seals.by_peer.drain().collect();
        by_peer.sort_by(|a, b| a.0.cmp(&b.0));
        let state = StateRef {
            format: FORMAT,
            schema: self.schema.clone(),
            applied: self.applied.clone(),
            hlc: self.hlc,
            last_hlcs,
            nodes,
            edges,
            seals: Seals {
                by_peer: by_peer.into_iter().collect(),
                sequencer: seals.sequencer,
            },
            contended: self.contended.iter().cloned().collect(),
            conflicts: conflicts.iter().map(ConflictRecord::from).collect(),
            tx_markers: self.tx_markers.iter().collect(),
        };
        rmp_serde::to_vec(&state).expect("the engine state serializes")
    }

    /// An engine for `peer` holding the state in `bytes` (from [`Engine::snapshot_state`]),
    /// and the conflicts recorded with it. Change tracking is off: the caller decides what
    /// the graph store needs (see [`Engine::rebuild_all`]).
    ///
    /// Entities go into the engine's store as they are read, not through a list of them
    /// all: the list would double the memory the state needs while it is read.
    pub fn from_snapshot_state(
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<(Engine, Vec<Conflict>), EngineError> {
        let mut reader = Reader {
            engine: Engine::new(peer),
            pasts: HashMap::default(),
            conflicts: Vec::new(),
        };
        crate::limits::check_msgpack(bytes, crate::limits::MAX_NESTING)
            .map_err(EngineError::InvalidSnapshot)?;
        let mut de = rmp_serde::Deserializer::new(bytes);
        (&mut reader)
            .deserialize(&mut de)
            .map_err(|e| EngineError::InvalidSnapshot(e.to_string()))?;
        let Reader {
            engine: mut e,
            conflicts,
            ..
        } = reader;
        e.schema
            .check_received()
            .map_err(|err| EngineError::InvalidSnapshot(format!("its schema: {err}")))?;
        // The adjacency index holds exactly the edges with a live add (see `prune_adjacency`).
        for ed in 0..e.store.edge_count() as u32 {
            if e.edge_id_priority(ed).is_some() {
                e.store.link(ed);
            }
        }
        e.tracking = false;
        let conflicts = conflicts
            .into_iter()
            .map(ConflictRecord::into_conflict)
            .collect::<Result<_, _>>()?;
        Ok((e, conflicts))
    }

    /// Queues the changes that rebuild the whole graph store from this state: every table
    /// dropped (if it exists) and created again, every visible row inserted. Collected by
    /// the next [`Engine::take_batch`].
    pub fn rebuild_all(&mut self) {
        self.rebuild = self
            .schema
            .tables()
            .map(|t| t.name().to_ascii_lowercase())
            .collect();
    }
}

/// Reads a snapshot into an engine (see [`Engine::from_snapshot_state`]).
struct Reader {
    engine: Engine,
    /// Each stored causal past is read into its own allocation: equal ones are shared again.
    pasts: HashMap<VersionVector, Arc<VersionVector>>,
    conflicts: Vec<ConflictRecord>,
}

const FIELDS: &[&str] = &[
    "format",
    "schema",
    "applied",
    "hlc",
    "last_hlcs",
    "nodes",
    "edges",
    "seals",
    "contended",
    "conflicts",
    "tx_markers",
];

impl Reader {
    /// The entity's state, sharing causal pasts and peer ids with the engine's, and with
    /// its property names as the engine's ids.
    fn entity(&mut self, read: EntityIn) -> EntityState {
        let EntityIn {
            adds,
            deleted,
            props,
        } = read;
        let props: Vec<PropState> = props
            .into_iter()
            .map(|(name, mut ps)| {
                ps.name = self.engine.names.intern(&name);
                ps
            })
            .collect();
        let mut state = EntityState {
            adds,
            deleted,
            props: KeyedSlice::from_unsorted(props),
            links: Links::default(),
        };
        self.share(&mut state);
        state
    }

    fn share(&mut self, state: &mut EntityState) {
        let Reader {
            engine: e, pasts, ..
        } = self;
        let mut share = |a: &mut Arc<VersionVector>| {
            *a = pasts
                .entry((**a).clone())
                .or_insert_with(|| a.clone())
                .clone();
        };
        if let Some(d) = state.deleted.as_mut() {
            if let Some((stamp, past)) = d.cleared.as_mut() {
                share(past);
                stamp.peer = e.intern_peer(&stamp.peer);
            }
        }
        state.adds.share_keys(|p| e.intern_peer(p));
        for ps in state.props.iter_mut() {
            if let Some(w) = ps.reg.as_mut() {
                share(&mut w.deps);
                w.stamp.peer = e.intern_peer(&w.stamp.peer);
            }
            if let Some(r) = ps.rare.as_mut() {
                // Snapshots written before the engine kept them in stamp order.
                r.others.sort_by(|a, b| a.stamp.cmp(&b.stamp));
                for w in &mut r.others {
                    share(&mut w.deps);
                    w.stamp.peer = e.intern_peer(&w.stamp.peer);
                }
                r.incs.share_keys(|p| e.intern_peer(p));
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for &mut Reader {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_struct("State", FIELDS, self)
    }
}

impl<'de> Visitor<'de> for &mut Reader {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a kuzu-sync engine snapshot")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        fn next<'de, T: Deserialize<'de>, A: SeqAccess<'de>>(
            seq: &mut A,
            field: &str,
        ) -> Result<T, A::Error> {
            seq.next_element()?
                .ok_or_else(|| A::Error::custom(format!("the snapshot ends before {field}")))
        }
        let format: u32 = next(&mut seq, "format")?;
        if format != FORMAT {
            return Err(A::Error::custom(format!(
                "snapshot format {format} (this build reads format {FORMAT})"
            )));
        }
        self.engine.schema = next(&mut seq, "schema")?;
        self.engine.applied = next(&mut seq, "applied")?;
        self.engine.hlc = next(&mut seq, "hlc")?;
        let last_hlcs: Vec<(PeerId, u64, Hlc)> = next(&mut seq, "last_hlcs")?;
        self.engine.peer_hlcs = last_hlcs
            .into_iter()
            .map(|(p, c, h)| {
                let mut hlcs = Chunked::default();
                hlcs.push(h.into());
                (p, (c, hlcs))
            })
            .collect();
        for edges in [false, true] {
            let field = if edges { "edges" } else { "nodes" };
            seq.next_element_seed(EntitySeq {
                reader: &mut *self,
                edges,
            })?
            .ok_or_else(|| A::Error::custom(format!("the snapshot ends before {field}")))?;
        }
        self.engine.seals = next(&mut seq, "seals")?;
        let contended: Vec<(Entity, String)> = next(&mut seq, "contended")?;
        self.engine.contended = contended.into_iter().collect();
        self.conflicts = next(&mut seq, "conflicts")?;
        let markers: Vec<(crate::tx::TxId, TxMarks)> = seq.next_element()?.unwrap_or_default();
        for (tx, marks) in markers {
            crate::tx::check_marker(&tx, &marks.participants, 0)
                .map_err(|e| A::Error::custom(e.to_string()))?;
            self.engine.tx_markers.insert(tx, marks);
        }
        Ok(())
    }
}

/// The nodes (or the edges) of a snapshot, each put into the store as it is read.
struct EntitySeq<'r> {
    reader: &'r mut Reader,
    edges: bool,
}

impl<'de> DeserializeSeed<'de> for EntitySeq<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntitySeq<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(if self.edges { "edges" } else { "nodes" })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let r = self.reader;
        // The count is the snapshot's word (checked against its bytes, not its truth): at
        // most a million slots are reserved up front, the rest grow as entities come.
        let count = seq.size_hint().unwrap_or(0).min(1 << 20);
        if self.edges {
            r.engine.store.reserve(0, count);
        } else {
            r.engine.store.reserve(count, 0);
        }
        if self.edges {
            while let Some((ed, state)) = seq.next_element::<(EdgeRef, EntityIn)>()? {
                let state = r.entity(state);
                *r.engine.store.edge_entry(&ed).1 = state;
            }
        } else {
            while let Some((n, state)) = seq.next_element::<(NodeRef, EntityIn)>()? {
                let state = r.entity(state);
                *r.engine.store.node_entry(&n) = state;
            }
        }
        Ok(())
    }
}
