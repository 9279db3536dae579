//! Writing the engine's state into a snapshot and reading it back.

use serde::{Deserialize, Serialize};

use super::*;

/// Bumped whenever the layout below changes; an unknown format is refused, not guessed.
const FORMAT: u32 = 1;

/// [`State`] as written, borrowing the engine's entity states.
#[derive(Serialize)]
struct StateRef<'a> {
    format: u32,
    schema: Schema,
    applied: VersionVector,
    hlc: Hlc,
    last_hlcs: Vec<(PeerId, u64, Hlc)>,
    nodes: Vec<(NodeRef, &'a EntityState)>,
    edges: Vec<(EdgeRef, &'a EntityState)>,
    seals: Seals,
    contended: Vec<(Entity, String)>,
    conflicts: Vec<ConflictRecord>,
}

#[derive(Deserialize)]
struct State {
    format: u32,
    schema: Schema,
    applied: VersionVector,
    hlc: Hlc,
    /// Per peer: the counter and HLC of its latest applied event.
    last_hlcs: Vec<(PeerId, u64, Hlc)>,
    nodes: Vec<(NodeRef, EntityState)>,
    edges: Vec<(EdgeRef, EntityState)>,
    seals: Seals,
    contended: Vec<(Entity, String)>,
    conflicts: Vec<ConflictRecord>,
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
        let mut nodes: Vec<(NodeRef, &EntityState)> = (0..self.store.node_count())
            .map(|i| {
                let i = i as u32;
                (self.store.node_ref(i), self.store.node_state(i))
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        let mut edges: Vec<(EdgeRef, &EntityState)> = (0..self.store.edge_count())
            .map(|i| {
                let i = i as u32;
                (self.store.edge_ref(i), self.store.edge_state(i))
            })
            .collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        let mut last_hlcs: Vec<(PeerId, u64, Hlc)> = self
            .peer_hlcs
            .iter()
            .filter_map(|(p, (first, v))| {
                let last = *v.last()?;
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
        };
        rmp_serde::to_vec(&state).expect("the engine state serializes")
    }

    /// An engine for `peer` holding the state in `bytes` (from [`Engine::snapshot_state`]),
    /// and the conflicts recorded with it. Change tracking is off: the caller decides what
    /// the graph store needs (see [`Engine::rebuild_all`]).
    pub fn from_snapshot_state(
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<(Engine, Vec<Conflict>), EngineError> {
        let bad = |reason: String| EngineError::InvalidSnapshot(reason);
        let s: State = rmp_serde::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if s.format != FORMAT {
            return Err(bad(format!(
                "snapshot format {} (this build reads format {FORMAT})",
                s.format
            )));
        }
        let mut e = Engine::new(peer);
        e.schema = s.schema;
        e.applied = s.applied;
        e.hlc = s.hlc;
        e.peer_hlcs = s
            .last_hlcs
            .into_iter()
            .map(|(p, c, h)| (p, (c, vec![h])))
            .collect();
        // Each stored causal past was read into its own allocation: share equal ones again.
        let mut pasts: HashMap<VersionVector, Arc<VersionVector>> = HashMap::default();
        let mut share = |a: &mut Arc<VersionVector>| {
            *a = pasts
                .entry((**a).clone())
                .or_insert_with(|| a.clone())
                .clone();
        };
        let mut nodes = s.nodes;
        let mut edges = s.edges;
        for state in nodes
            .iter_mut()
            .map(|(_, st)| st)
            .chain(edges.iter_mut().map(|(_, st)| st))
        {
            if let Some(d) = state.deleted.as_mut() {
                if let Some((stamp, past)) = d.cleared.as_mut() {
                    share(past);
                    stamp.peer = e.intern_peer(&stamp.peer);
                }
            }
            state.adds.share_keys(|p| e.intern_peer(p));
            state.props.share_keys(|k| {
                if let Some(n) = e.names.get(&**k) {
                    return n.clone();
                }
                e.names.insert(k.clone());
                k.clone()
            });
            for ps in state.props.values_mut() {
                if let Some(w) = ps.reg.as_mut() {
                    share(&mut w.deps);
                    w.stamp.peer = e.intern_peer(&w.stamp.peer);
                }
                if let Some(r) = ps.rare.as_mut() {
                    for w in &mut r.others {
                        share(&mut w.deps);
                        w.stamp.peer = e.intern_peer(&w.stamp.peer);
                    }
                    r.incs.share_keys(|p| e.intern_peer(p));
                }
            }
        }
        for (n, state) in nodes {
            *e.store.node_entry(&n) = state;
        }
        for (ed, state) in edges {
            *e.store.edge_entry(&ed).1 = state;
        }
        e.seals = s.seals;
        e.contended = s.contended.into_iter().collect();
        // The adjacency index holds exactly the edges with a live add (see `prune_adjacency`).
        for ed in 0..e.store.edge_count() as u32 {
            if e.edge_id_priority(ed).is_some() {
                e.store.link(ed);
            }
        }
        e.tracking = false;
        let conflicts = s
            .conflicts
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
