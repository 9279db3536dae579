//! The resolved replicated state and the engine that applies events to it.
//!
//! Every visible row is a pure function of the *set* of applied events (see ARCHITECTURE.md,
//! "Semantics"), which is what makes replicas converge whatever the arrival order:
//!
//! - An entity exists if one of its adds has not been seen by a delete (observed-remove: a
//!   delete removes the adds in its causal past; an add concurrent with a delete survives).
//!   A node delete also removes the edges attached to it that it had seen.
//! - A property holds the write with the greatest [`Stamp`]; a delete counts as a write of
//!   "unset" to every property of its entity, stamped by the delete.
//! - A counter property holds that base value plus every increment the base write had not
//!   seen, each exactly once.
//! - An edge is visible if it exists, both endpoints exist, and in a MANY_ONE / ONE_MANY /
//!   ONE_ONE table it has the greatest priority (latest live add) among the existing edges
//!   that share its constrained endpoint.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::change::{ApplyBatch, GraphChange};
use crate::clock::{EventId, Hlc, PeerId, Stamp, VersionVector};
use crate::conflict::{Conflict, ConflictKind, ConflictSide};
use crate::error::EngineError;
use crate::event::{EdgeRef, Entity, Event, NodeRef, Op};
use crate::ports::GraphDump;
use crate::schema::{Column, Multiplicity, Policy, Schema, SchemaOp, TableChange, TableDef};
use crate::value::{DataType, Value};

/// A property write: who, when, what, and what the writer had seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Write {
    stamp: Stamp,
    value: Stored,
    /// What the writer had seen, without its own entry (which is always `counter - 1`, see
    /// [`Engine::check`]): so the consecutive writes of one writer share one vector.
    deps: Arc<VersionVector>,
}

/// How many events of `peer` the write stamped `stamp` had seen, from its stored causal
/// past without the writer's own entry (see [`Write::deps`]).
fn seen_by(stamp: &Stamp, others: &VersionVector, peer: &PeerId) -> u64 {
    if *peer == stamp.peer {
        stamp.counter.saturating_sub(1)
    } else {
        others.get(peer)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct PropState {
    /// The property's name (see [`NameId`]), kept here rather than beside the state so that
    /// it fills the state's padding (see [`KeyedSlice`]). Not serialized: snapshots spell
    /// names out (`snapshot::EntityOut`).
    #[serde(skip)]
    name: NameId,
    /// The winning set by stamp, if any.
    reg: Option<Write>,
    /// Concurrent writes and increments, boxed: most properties never have either.
    rare: Option<Box<Rare>>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Rare {
    /// The other writes of the multi-value register: sets concurrent with `reg` and with
    /// each other, not in the causal past of any later set, in stamp order. Almost always
    /// empty; the `online_wins` policy chooses among `reg` and these.
    others: Vec<Write>,
    /// Increments per peer, in counter order: (counter, delta).
    incs: SmallMap<PeerId, Vec<(u64, Value)>>,
}

impl Keyed for PropState {
    type Key = NameId;
    fn key(&self) -> NameId {
        self.name
    }
    fn set_key(&mut self, key: NameId) {
        self.name = key;
    }
}

impl PropState {
    fn others(&self) -> &[Write] {
        self.rare.as_ref().map_or(&[], |r| &r.others)
    }

    fn incs(&self) -> impl Iterator<Item = (&PeerId, &Vec<(u64, Value)>)> {
        self.rare.iter().flat_map(|r| r.incs.iter())
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Adds a concurrent write, keeping them in stamp order: their order is then a function
    /// of the set, whatever order they arrived in (snapshots write them as they are).
    fn push_other(&mut self, w: Write) {
        let others = &mut self.rare_mut().others;
        let i = others.partition_point(|o| o.stamp < w.stamp);
        others.insert(i, w);
    }

    /// Drops the concurrent writes this write had seen.
    fn drop_seen(&mut self, deps: &VersionVector) {
        if let Some(r) = &mut self.rare {
            r.others.retain(|w| !deps.contains(&w.stamp.id()));
            if r.others.is_empty() && r.incs.is_empty() {
                self.rare = None;
            }
        }
    }
}

/// Written to and read from snapshots through `snapshot::EntityOut` / `EntityIn`, which
/// spell property names out.
#[derive(Clone, Debug, Default)]
struct EntityState {
    /// Latest add per peer: (counter, hlc).
    adds: OneOrMap<PeerId, (u64, Hlc)>,
    /// What deletes did, if any were applied (boxed: most entities are never deleted).
    deleted: Option<Box<Deleted>>,
    /// By the id of the lower-cased column name (see `Engine::names`).
    props: KeyedSlice<PropState>,
    /// A node's adjacency: the edges attached to it with a live add, either direction,
    /// sorted by edge slot id (which differs between replicas: nothing may depend on this
    /// order). Derived (rebuilt from the edges when a snapshot is read).
    links: Links,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Deleted {
    /// Merged causal pasts of the deletes of this entity.
    removed: VersionVector,
    /// The latest delete: an unset-write to every property.
    cleared: Option<(Stamp, Arc<VersionVector>)>,
}

static NO_EVENTS: VersionVector = VersionVector::new();

impl EntityState {
    /// No add, no delete, no property: a slot made only to be an edge's endpoint.
    fn is_blank(&self) -> bool {
        self.adds.is_empty() && self.deleted.is_none() && self.props.is_empty()
    }

    fn removed(&self) -> &VersionVector {
        self.deleted.as_ref().map_or(&NO_EVENTS, |d| &d.removed)
    }

    fn cleared(&self) -> Option<&(Stamp, Arc<VersionVector>)> {
        self.deleted.as_ref().and_then(|d| d.cleared.as_ref())
    }

    fn deleted_mut(&mut self) -> &mut Deleted {
        self.deleted.get_or_insert_with(Box::default)
    }

    /// The latest add not seen by any delete in `removed` (and the extra thresholds).
    fn live_add(&self, extra: &[&VersionVector]) -> Option<Stamp> {
        self.adds
            .iter()
            .filter(|(p, (c, _))| {
                *c > self.removed().get(p) && extra.iter().all(|vv| *c > vv.get(p))
            })
            .map(|(p, (c, h))| Stamp {
                hlc: *h,
                peer: p.clone(),
                counter: *c,
            })
            .max()
    }
}

/// The id of a (lower-cased) property name in `Engine::names`: entities key their
/// properties by it, 4 bytes instead of a 16-byte shared string.
type NameId = u32;

/// An [`Hlc`] in 12 bytes aligned to 4, where an `Hlc` takes 16 (its `u64` aligns it to
/// 8): the engine keeps one per applied event (`Engine::peer_hlcs`), 400 KB less for
/// 100,000 events.
#[derive(Clone, Copy, Debug)]
struct PackedHlc([u32; 3]);

impl From<Hlc> for PackedHlc {
    fn from(h: Hlc) -> Self {
        PackedHlc([h.wall_ms as u32, (h.wall_ms >> 32) as u32, h.logical])
    }
}

impl PackedHlc {
    fn hlc(self) -> Hlc {
        let [lo, hi, logical] = self.0;
        Hlc {
            wall_ms: u64::from(lo) | (u64::from(hi) << 32),
            logical,
        }
    }
}

/// The hubs' seals (`Op::Seal`), for the `online_wins` policy.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Seals {
    /// Per sealing peer, the causal past of each of its seals, in counter order (so each
    /// contains the previous one).
    by_peer: HashMap<PeerId, Vec<Arc<VersionVector>>>,
    /// The sequencer: the author of the seal with the smallest stamp.
    sequencer: Option<(Stamp, PeerId)>,
}

impl Seals {
    /// The index of the sequencer's first seal that covers `id`, if any.
    fn position(&self, id: &EventId) -> Option<usize> {
        let (_, peer) = self.sequencer.as_ref()?;
        let list = self.by_peer.get(peer)?;
        let i = list.partition_point(|vv| !vv.contains(id));
        (i < list.len()).then_some(i)
    }

    /// The `online_wins` winner among the register's writes: the earliest sealed (ties by
    /// smaller stamp); if none is sealed, the latest stamp.
    fn winner<'a>(&self, ps: &'a PropState) -> Option<&'a Write> {
        let reg = ps.reg.as_ref()?;
        std::iter::once(reg)
            .chain(ps.others().iter())
            .filter_map(|w| self.position(&w.stamp.id()).map(|p| (p, w)))
            .min_by(|a, b| (a.0, &a.1.stamp).cmp(&(b.0, &b.1.stamp)))
            .map(|(_, w)| w)
            .or(Some(reg))
    }
}

/// Lower-cased table name: Kuzu names are case-insensitive, so internal keys are too.
fn norm_node(n: &NodeRef) -> NodeRef {
    NodeRef {
        table: n.table.to_ascii_lowercase(),
        key: n.key.clone(),
    }
}

fn norm_edge(e: &EdgeRef) -> EdgeRef {
    EdgeRef {
        table: e.table.to_ascii_lowercase(),
        from: norm_node(&e.from),
        to: norm_node(&e.to),
        key: e.key.clone(),
    }
}

type Row = Option<Vec<Value>>;

/// An entity by its slot in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Slot {
    Node(NodeId),
    Edge(EdgeId),
}

/// The replication engine of one replica: resolved state, local event creation, and the
/// changes and conflicts produced by applying events. Pure: time comes in as arguments.
#[derive(Debug)]
pub struct Engine {
    peer: PeerId,
    schema: Schema,
    applied: VersionVector,
    hlc: Hlc,
    /// HLC of the applied events, per peer: (counter of the first one kept, HLCs in
    /// counter order). A snapshot keeps only each peer's latest.
    peer_hlcs: HashMap<PeerId, (u64, Chunked<PackedHlc>)>,
    /// Nodes and edges (see `store`).
    store: Entities,
    /// Property names, as ids in every entity's property map.
    names: Interner,
    /// Peer ids, shared by every stamp and add.
    peers: HashSet<PeerId>,
    seals: Seals,
    /// Properties whose register holds concurrent writes: (entity, lower-cased property).
    contended: BTreeSet<(Entity, String)>,
    /// The coordinated transactions whose commit markers (`Op::Tx`) are applied here: the
    /// participants they name and, per participant whose marker it is, where its part is.
    tx_markers: BTreeMap<crate::tx::TxId, TxMarks>,

    /// The last stored causal past, to share with the next event's (see `shared_past`).
    last_past: Option<Arc<VersionVector>>,
    /// Whether changes and conflicts are being collected (off during silent replay).
    tracking: bool,
    /// The rows of the entities touched since the last batch, as they were before, by
    /// slot: ids, not cloned references (the batch is built from the slots).
    before_nodes: HashMap<NodeId, Row>,
    before_edges: HashMap<EdgeId, Row>,
    edges_added: HashSet<EdgeId>,
    /// Property names as events spell them → the id of the lower-cased name, so that the
    /// usual lookup neither lower-cases nor allocates. Derived (filled as names are seen).
    spelled: HashMap<Box<str>, NameId>,
    ddl: Vec<GraphChange>,
    rebuild: BTreeSet<String>,
    conflicts: Vec<Conflict>,
}

/// The commit markers of one transaction applied on a replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxMarks {
    /// The participants, as the first applied marker names them.
    pub participants: Vec<String>,
    /// Per participant whose marker is applied: the marker's counter and how many of its
    /// peer's events after it are the participant's ops.
    pub parts: BTreeMap<PeerId, (u64, u32)>,
}

impl TxMarks {
    /// Whether `peer`'s marker is applied.
    pub fn has(&self, peer: &str) -> bool {
        self.parts.keys().any(|p| p.as_str() == peer)
    }
}

impl Engine {
    pub fn new(peer: PeerId) -> Self {
        Engine {
            peer,
            schema: Schema::default(),
            applied: VersionVector::new(),
            hlc: Hlc::default(),
            peer_hlcs: HashMap::default(),
            store: Entities::default(),
            names: Interner::default(),
            peers: HashSet::default(),
            seals: Seals::default(),
            contended: BTreeSet::new(),
            tx_markers: BTreeMap::new(),
            last_past: None,
            tracking: true,
            before_nodes: HashMap::default(),
            before_edges: HashMap::default(),
            edges_added: HashSet::default(),
            spelled: HashMap::default(),
            ddl: Vec::new(),
            rebuild: BTreeSet::new(),
            conflicts: Vec::new(),
        }
    }

    pub fn peer(&self) -> &PeerId {
        &self.peer
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The version vector of the applied events.
    pub fn version_vector(&self) -> &VersionVector {
        &self.applied
    }

    pub fn hlc(&self) -> Hlc {
        self.hlc
    }

    /// Turns change collection on or off. Off is for replaying events whose effects the
    /// graph store already holds. Conflicts are recorded either way (replay rebuilds them),
    /// except multiplicity conflicts, which are found while computing changes.
    pub fn set_tracking(&mut self, on: bool) {
        self.tracking = on;
    }

    pub fn is_applied(&self, id: &EventId) -> bool {
        self.applied.contains(id)
    }

    /// True if `e` is the next event of its peer and everything it depends on is applied.
    pub fn is_ready(&self, e: &Event) -> bool {
        e.id.counter == self.applied.get(&e.id.peer) + 1 && self.applied.dominates(&e.deps)
    }

    // ---------------------------------------------------------------- local writes

    /// Validates a local op against the current state and makes the next local event.
    /// The event is not applied: pass it to [`Engine::apply`] (after storing it durably).
    pub fn prepare(&self, op: Op, now_ms: u64) -> Result<Event, EngineError> {
        let op = self.validate_local(op)?;
        let counter = self.applied.get(&self.peer) + 1;
        Ok(Event {
            id: EventId {
                peer: self.peer.clone(),
                counter,
            },
            deps: self.applied.clone(),
            hlc: self.hlc.tick(now_ms),
            op,
        })
    }

    /// Checks a local op and returns it with table and column names in the schema's spelling.
    fn validate_local(&self, op: Op) -> Result<Op, EngineError> {
        match op {
            Op::Seal => Ok(Op::Seal),
            Op::Tx {
                tx,
                participants,
                ops,
            } => {
                crate::tx::check_marker(&tx, &participants, ops)?;
                Ok(Op::Tx {
                    tx,
                    participants,
                    ops,
                })
            }
            Op::Schema(s) => {
                self.schema.validate(&s)?;
                Ok(Op::Schema(s))
            }
            Op::AddNode { table, props } => {
                let def = self.schema.node_table(&table)?;
                let mut out = Vec::with_capacity(props.len());
                // By column position: a table's column names differ in any case.
                let mut seen = vec![false; def.columns.len()];
                for (name, value) in props {
                    let at = def
                        .columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(&name));
                    let at = at.ok_or_else(|| EngineError::UnknownColumn {
                        table: def.name.clone(),
                        column: name.clone(),
                    })?;
                    let col = &def.columns[at];
                    check_type(&def.name, col, &value)?;
                    if std::mem::replace(&mut seen[at], true) {
                        return Err(EngineError::InvalidOp {
                            table: def.name.clone(),
                            reason: format!("property {} is given twice", col.name),
                        });
                    }
                    out.push((respelled(name, &col.name), value));
                }
                let pk = out
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&def.primary_key));
                match pk {
                    Some((_, v)) if !v.is_null() => {}
                    _ => {
                        return Err(EngineError::InvalidOp {
                            table: def.name.clone(),
                            reason: format!(
                                "add_node needs a non-null primary key {}",
                                def.primary_key
                            ),
                        })
                    }
                }
                // The key goes first: a received add_node is keyed by its first property,
                // whatever primary key the receiver's schema resolves to at that moment (a
                // concurrent create of the same table may disagree), so that every replica
                // gives the node the same identity.
                let pk_pos = out
                    .iter()
                    .position(|(n, _)| n.eq_ignore_ascii_case(&def.primary_key))
                    .expect("checked above");
                out[..=pk_pos].rotate_right(1);
                Ok(Op::AddNode {
                    table: respelled(table, &def.name),
                    props: out,
                })
            }
            Op::DeleteNode(n) => {
                let n = self.canonical_node(n)?;
                if !self.node_exists_any(&n) {
                    return Err(EngineError::NoSuchNode {
                        table: n.table,
                        key: n.key.to_string(),
                    });
                }
                Ok(Op::DeleteNode(n))
            }
            Op::AddEdge { edge, props } => {
                let edge = self.canonical_edge(edge)?;
                let def = self.schema.rel_table(&edge.table)?;
                for end in [&edge.from, &edge.to] {
                    if !self.node_exists_any(end) {
                        return Err(EngineError::NoSuchNode {
                            table: end.table.clone(),
                            key: end.key.to_string(),
                        });
                    }
                }
                let mut out = Vec::with_capacity(props.len());
                for (name, value) in props {
                    let col = def
                        .columns
                        .iter()
                        .find(|c| c.name.eq_ignore_ascii_case(&name));
                    let col = col.ok_or_else(|| EngineError::UnknownColumn {
                        table: def.name.clone(),
                        column: name.clone(),
                    })?;
                    check_type(&def.name, col, &value)?;
                    out.push((respelled(name, &col.name), value));
                }
                self.check_multiplicity(&edge, def.multiplicity)?;
                Ok(Op::AddEdge { edge, props: out })
            }
            Op::DeleteEdge(e) => {
                let e = self.canonical_edge(e)?;
                if !self.edge_visible_ref(&norm_edge(&e)) {
                    return Err(EngineError::NoSuchEdge(e.to_string()));
                }
                Ok(Op::DeleteEdge(e))
            }
            Op::Update {
                entity,
                prop,
                value,
            } => {
                let (entity, col) = self.local_property_target(entity, &prop)?;
                check_type(entity.table(), &col, &value)?;
                Ok(Op::Update {
                    entity,
                    prop: col.name,
                    value,
                })
            }
            Op::Increment {
                entity,
                prop,
                delta,
            } => {
                let (entity, col) = self.local_property_target(entity, &prop)?;
                if self.schema.policy(entity.table(), &col.name) != Policy::Counter {
                    return Err(EngineError::InvalidOp {
                        table: entity.table().to_string(),
                        reason: format!(
                            "increment needs the counter policy on {}; set it with \
                             {{\"op\":\"set_policy\",\"table\":\"{}\",\"prop\":\"{}\",\"policy\":\"counter\"}}",
                            col.name,
                            entity.table(),
                            col.name
                        ),
                    });
                }
                if delta.is_null() {
                    return Err(EngineError::InvalidOp {
                        table: entity.table().to_string(),
                        reason: "increment delta must not be null".into(),
                    });
                }
                check_type(entity.table(), &col, &delta)?;
                Ok(Op::Increment {
                    entity,
                    prop: col.name,
                    delta,
                })
            }
        }
    }

    fn local_property_target(
        &self,
        entity: Entity,
        prop: &str,
    ) -> Result<(Entity, Column), EngineError> {
        let entity = match entity {
            Entity::Node(n) => {
                let n = self.canonical_node(n)?;
                if !self.node_exists_any(&n) {
                    return Err(EngineError::NoSuchNode {
                        table: n.table,
                        key: n.key.to_string(),
                    });
                }
                Entity::Node(n)
            }
            Entity::Edge(e) => {
                let e = self.canonical_edge(e)?;
                if !self.edge_visible_ref(&norm_edge(&e)) {
                    return Err(EngineError::NoSuchEdge(e.to_string()));
                }
                Entity::Edge(e)
            }
        };
        let def = self
            .schema
            .table(entity.table())
            .ok_or_else(|| EngineError::UnknownTable(entity.table().to_string()))?;
        let col = def
            .column(prop)
            .ok_or_else(|| EngineError::UnknownColumn {
                table: def.name().to_string(),
                column: prop.to_string(),
            })?
            .clone();
        if let TableDef::Node(n) = def {
            if n.primary_key.eq_ignore_ascii_case(&col.name) {
                return Err(EngineError::InvalidOp {
                    table: n.name.clone(),
                    reason: format!(
                        "{} is the primary key and cannot be changed; delete the node and add a new one",
                        col.name
                    ),
                });
            }
        }
        Ok((entity, col))
    }

    /// The node with its table in the schema's spelling (its strings reused when they
    /// already match).
    fn canonical_node(&self, n: NodeRef) -> Result<NodeRef, EngineError> {
        let def = self.schema.node_table(&n.table)?;
        let pk = def.key_column().expect("validated primary key");
        if n.key.is_null() || !n.key.conforms_to(&pk.ty) {
            return Err(EngineError::TypeMismatch {
                table: def.name.clone(),
                column: pk.name.clone(),
                expected: pk.ty.to_string(),
                value: format!("{:?}", n.key),
            });
        }
        Ok(NodeRef {
            table: respelled(n.table, &def.name),
            key: n.key,
        })
    }

    fn canonical_edge(&self, e: EdgeRef) -> Result<EdgeRef, EngineError> {
        let def = self.schema.rel_table(&e.table)?;
        let from = self.canonical_node(e.from)?;
        let to = self.canonical_node(e.to)?;
        let connected = def
            .connections
            .iter()
            .any(|(f, t)| f.eq_ignore_ascii_case(&from.table) && t.eq_ignore_ascii_case(&to.table));
        if !connected {
            return Err(EngineError::InvalidOp {
                table: def.name.clone(),
                reason: format!(
                    "{} does not connect {} to {}",
                    def.name, from.table, to.table
                ),
            });
        }
        Ok(EdgeRef {
            table: respelled(e.table, &def.name),
            from,
            to,
            key: e.key,
        })
    }

    fn check_multiplicity(&self, edge: &EdgeRef, m: Multiplicity) -> Result<(), EngineError> {
        if !m.one_per_source() && !m.one_per_destination() {
            return Ok(());
        }
        let e = norm_edge(edge);
        let table = self.store.table_id(&e.table);
        let me = self.store.edge_id(&e);
        let clash = |end: &NodeRef, source_side: bool| -> Option<EdgeRef> {
            let end = self.store.node_id(end)?;
            self.group(table?, end, source_side)
                .find(|&other| Some(other) != me && self.edge_visible(other))
                .map(|other| self.store.edge_ref(other))
        };
        if m.one_per_source() {
            if let Some(other) = clash(&e.from, true) {
                return Err(EngineError::InvalidOp {
                    table: edge.table.clone(),
                    reason: format!(
                        "{} is {}: {} already has edge {}; delete it first",
                        edge.table,
                        m.keyword(),
                        edge.from,
                        other
                    ),
                });
            }
        }
        if m.one_per_destination() {
            if let Some(other) = clash(&e.to, false) {
                return Err(EngineError::InvalidOp {
                    table: edge.table.clone(),
                    reason: format!(
                        "{} is {}: {} already has edge {}; delete it first",
                        edge.table,
                        m.keyword(),
                        edge.to,
                        other
                    ),
                });
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------- received events

    /// Checks an event received from elsewhere before it is stored or applied: structure,
    /// causal metadata, HLC against its causal past, and the op against the schema.
    /// Does not require the event to be ready (its dependencies may still be missing), but
    /// the schema checks assume they are applied; call it when the event is ready.
    pub fn check(&self, e: &Event) -> Result<(), EngineError> {
        let bad = |reason: String| EngineError::InvalidEvent {
            id: e.id.clone(),
            reason,
        };
        if e.id.counter == 0 {
            return Err(bad("counter must start at 1".into()));
        }
        if e.deps.get(&e.id.peer) != e.id.counter - 1 {
            return Err(bad(format!(
                "its causal past names {} events of its own peer, expected {}",
                e.deps.get(&e.id.peer),
                e.id.counter - 1
            )));
        }
        for (p, c) in e.deps.iter() {
            if c == 0 {
                continue;
            }
            let h = self
                .peer_hlcs
                .get(p)
                .and_then(|(first, v)| v.get(c.checked_sub(*first)? as usize))
                .map(|h| h.hlc());
            if let Some(h) = h {
                if h >= e.hlc {
                    return Err(bad(format!(
                        "its hybrid timestamp {:?} is not after that of {}:{} ({:?}) in its causal past",
                        e.hlc, p, c, h
                    )));
                }
            }
        }
        self.check_op(&e.op).map_err(|err| err.in_event(&e.id))
    }

    fn check_op(&self, op: &Op) -> Result<(), EngineError> {
        match op {
            Op::Seal => Ok(()),
            Op::Schema(s) => match s {
                SchemaOp::CreateNodeTable(_) | SchemaOp::CreateRelTable(_) => {
                    self.schema.validate_structure(s)
                }
                SchemaOp::AddColumn { table, column } => {
                    self.schema
                        .table(table)
                        .ok_or_else(|| EngineError::UnknownTable(table.clone()))?;
                    // Name and type as a create would check them; a concurrent add of the
                    // same column is legitimate, so "already exists" is not checked here.
                    crate::schema::validate_columns(table, std::slice::from_ref(column))?;
                    if let Some(d) = &column.default {
                        if !d.conforms_to(&column.ty) {
                            return Err(EngineError::InvalidSchema {
                                table: table.clone(),
                                reason: format!(
                                    "default of {} is not a {}",
                                    column.name, column.ty
                                ),
                            });
                        }
                    }
                    Ok(())
                }
                SchemaOp::SetPolicy { table, column, .. } => {
                    let t = self
                        .schema
                        .table(table)
                        .ok_or_else(|| EngineError::UnknownTable(table.clone()))?;
                    t.column(column).ok_or_else(|| EngineError::UnknownColumn {
                        table: table.clone(),
                        column: column.clone(),
                    })?;
                    Ok(())
                }
                // Checked as a local one would be: a constraint names columns and peers of
                // this schema, and is never turned into DDL.
                SchemaOp::SetConstraint { .. } => self.schema.validate_structure(s),
            },
            Op::Tx {
                tx,
                participants,
                ops,
            } => crate::tx::check_marker(tx, participants, *ops),
            Op::AddNode { table, props } => {
                // The table must exist, of either kind: a concurrent create of the other kind
                // may have won, and the event must still be accepted (its rows stay hidden).
                self.schema
                    .table(table)
                    .ok_or_else(|| EngineError::UnknownTable(table.clone()))?;
                match props.first() {
                    Some((_, v)) if !v.is_null() => {}
                    _ => {
                        return Err(EngineError::InvalidOp {
                            table: table.clone(),
                            reason: "add_node without a primary key first".into(),
                        })
                    }
                }
                self.check_remote_values(table, props)
            }
            Op::DeleteNode(n) => self.check_remote_node(n),
            Op::AddEdge { edge, props } => {
                self.check_remote_edge(edge)?;
                self.check_remote_values(&edge.table, props)
            }
            Op::DeleteEdge(e) => self.check_remote_edge(e),
            Op::Update {
                entity,
                prop,
                value,
            } => {
                self.check_remote_entity(entity)?;
                self.check_remote_value(entity.table(), prop, value)
            }
            Op::Increment {
                entity,
                prop,
                delta,
            } => {
                self.check_remote_entity(entity)?;
                if delta.is_null() {
                    return Err(EngineError::InvalidOp {
                        table: entity.table().to_string(),
                        reason: "increment delta is null".into(),
                    });
                }
                self.check_remote_value(entity.table(), prop, delta)
            }
        }
    }

    fn check_remote_entity(&self, e: &Entity) -> Result<(), EngineError> {
        match e {
            Entity::Node(n) => self.check_remote_node(n),
            Entity::Edge(e) => self.check_remote_edge(e),
        }
    }

    /// A received node reference: its table exists (of either kind, see `check_op`) and its
    /// key is not null. The key's type is not checked against the resolved key column, which
    /// a concurrent create may have changed; a key that does not fit leaves the node hidden.
    fn check_remote_node(&self, n: &NodeRef) -> Result<(), EngineError> {
        self.schema
            .table(&n.table)
            .ok_or_else(|| EngineError::UnknownTable(n.table.clone()))?;
        if n.key.is_null() {
            return Err(EngineError::InvalidOp {
                table: n.table.clone(),
                reason: "null primary key".into(),
            });
        }
        Ok(())
    }

    fn check_remote_edge(&self, e: &EdgeRef) -> Result<(), EngineError> {
        self.schema
            .table(&e.table)
            .ok_or_else(|| EngineError::UnknownTable(e.table.clone()))?;
        self.check_remote_node(&e.from)?;
        self.check_remote_node(&e.to)
    }

    /// [`Engine::check_remote_value`] of each property, the table looked up once.
    fn check_remote_values(
        &self,
        table: &str,
        props: &[(String, Value)],
    ) -> Result<(), EngineError> {
        let def = self.schema.table(table);
        for (name, v) in props {
            let fits = def
                .and_then(|t| t.column(name))
                .is_some_and(|c| v.conforms_to(&c.ty));
            if !fits {
                self.check_remote_value(table, name, v)?;
            }
        }
        Ok(())
    }

    fn check_remote_value(&self, table: &str, column: &str, v: &Value) -> Result<(), EngineError> {
        // The common case: the value fits the column's resolved type.
        if let Some(c) = self.schema.table(table).and_then(|t| t.column(column)) {
            if v.conforms_to(&c.ty) {
                return Ok(());
            }
        }
        let types = self.schema.declared_types(table, column);
        if types.is_empty() {
            return Err(EngineError::UnknownColumn {
                table: table.to_string(),
                column: column.to_string(),
            });
        }
        if types.iter().any(|t| v.conforms_to(t)) {
            Ok(())
        } else {
            Err(EngineError::TypeMismatch {
                table: table.to_string(),
                column: column.to_string(),
                expected: types[0].to_string(),
                value: format!("{v:?}"),
            })
        }
    }

    // ------------------------------------------------------------------- applying

    /// Applies one event. It must be ready ([`Engine::is_ready`]) and valid
    /// ([`Engine::check`], which this calls). Applying an already applied event is a no-op.
    pub fn apply(&mut self, e: &Event) -> Result<(), EngineError> {
        if self.is_applied(&e.id) {
            return Ok(());
        }
        if !self.is_ready(e) {
            return Err(EngineError::InvalidEvent {
                id: e.id.clone(),
                reason: format!(
                    "not ready: its causal past {:?} is not all applied here ({:?})",
                    e.deps, self.applied
                ),
            });
        }
        self.check(e)?;
        // One shared copy of each peer id: what the state keeps refers to it, not to the
        // received event's own copy (one allocation per event otherwise).
        let peer = self.intern_peer(&e.id.peer);
        let stamp = Stamp {
            peer: peer.clone(),
            ..e.stamp()
        };
        let deps = self.shared_past(e);
        match &e.op {
            Op::Schema(s) => self.apply_schema(s, &stamp, &e.id),
            Op::AddNode { table, props } => {
                // Keyed by the first property, the author's primary key (see `prepare`).
                let key = props.first().map(|(_, v)| v.clone()).expect("checked");
                let n = NodeRef {
                    table: table.to_ascii_lowercase(),
                    key,
                };
                let id = self.store.node_id_or_insert(&n);
                // Re-adding a node that exists changes no edge's visibility: only its row.
                if self.node_exists_id(id) {
                    self.touch_node_row(id);
                } else {
                    self.touch_node_id(id);
                }
                let state = self.store.node_state(id);
                if let Some((del, _)) = state.cleared() {
                    if !e.deps.contains(&del.id()) {
                        let loser = ConflictSide::new(&del.id(), "delete");
                        self.conflicts.push(Conflict {
                            kind: ConflictKind::AddDelete,
                            strategy: "add_wins",
                            entity: self.display_node(&n).to_string(),
                            property: None,
                            winner: ConflictSide::new(&e.id, "add"),
                            loser,
                            resolved: None,
                            detected_at: e.id.to_string(),
                        });
                    }
                }
                let state = self.store.node_state_mut(id);
                state.adds.insert(peer.clone(), (e.id.counter, e.hlc));
                let entity = Entity::Node(n);
                for (name, value) in &props[1..] {
                    self.write_prop(&entity, Slot::Node(id), name, value, e, &stamp, &deps);
                }
            }
            Op::DeleteNode(n) => {
                let n = norm_node(n);
                let id = self.store.node_id_or_insert(&n);
                self.touch_node_id(id);
                let state = self.store.node_state_mut(id);
                let d = state.deleted_mut();
                d.removed.merge(&e.deps);
                if d.cleared.as_ref().is_none_or(|(s, _)| *s < stamp) {
                    d.cleared = Some((stamp.clone(), deps.clone()));
                }
                let survivor = state.live_add(&[]);
                self.prune_adjacency(id);
                if let Some(add) = survivor {
                    {
                        self.conflicts.push(Conflict {
                            kind: ConflictKind::AddDelete,
                            strategy: "add_wins",
                            entity: self.display_node(&n).to_string(),
                            property: None,
                            winner: ConflictSide::new(&add.id(), "add"),
                            loser: ConflictSide::new(&e.id, "delete"),
                            resolved: None,
                            detected_at: e.id.to_string(),
                        });
                    }
                }
            }
            Op::AddEdge { edge, props } => {
                let ed = norm_edge(edge);
                let id = self.store.edge_entry(&ed).0;
                self.touch_edge_id(id, true);
                let state = self.store.edge_state_mut(id);
                state.adds.insert(peer.clone(), (e.id.counter, e.hlc));
                self.store.link(id);
                if self.tracking {
                    self.edges_added.insert(id);
                }
                let entity = Entity::Edge(ed);
                for (name, value) in props {
                    self.write_prop(&entity, Slot::Edge(id), name, value, e, &stamp, &deps);
                }
            }
            Op::DeleteEdge(edge) => {
                let ed = norm_edge(edge);
                let id = self.store.edge_entry(&ed).0;
                self.touch_edge_id(id, true);
                let state = self.store.edge_state_mut(id);
                let d = state.deleted_mut();
                d.removed.merge(&e.deps);
                if d.cleared.as_ref().is_none_or(|(s, _)| *s < stamp) {
                    d.cleared = Some((stamp.clone(), deps.clone()));
                }
                if self.edge_id_priority(id).is_none() {
                    self.store.unlink(id);
                }
            }
            Op::Seal => self.apply_seal(e, &stamp),
            Op::Tx {
                tx,
                participants,
                ops,
            } => {
                let marks = self.tx_markers.entry(tx.clone()).or_default();
                if marks.participants.is_empty() {
                    marks.participants = participants.clone();
                }
                marks.parts.insert(peer.clone(), (e.id.counter, *ops));
            }
            Op::Update {
                entity,
                prop,
                value,
            } => {
                let entity = norm_entity(entity);
                let slot = self.slot_of(&entity);
                self.touch_slot(slot);
                self.note_delete_conflict(&entity, slot, prop, e);
                self.write_prop(&entity, slot, prop, value, e, &stamp, &deps);
            }
            Op::Increment {
                entity,
                prop,
                delta,
            } => {
                let entity = norm_entity(entity);
                let slot = self.slot_of(&entity);
                self.touch_slot(slot);
                self.note_delete_conflict(&entity, slot, prop, e);
                let name = self.intern_name(prop);
                let state = self.slot_state_mut(slot);
                let ps = state.props.entry(name);
                let concurrent: Option<(PeerId, u64, Value)> = {
                    ps.incs()
                        .filter(|(p, _)| **p != e.id.peer)
                        .filter_map(|(p, list)| {
                            list.last()
                                .filter(|(c, _)| *c > e.deps.get(p))
                                .map(|(c, d)| (p.clone(), *c, d.clone()))
                        })
                        .next()
                };
                ps.rare_mut()
                    .incs
                    .entry(&e.id.peer, || peer.clone())
                    .push((e.id.counter, delta.clone()));
                if let Some((p, c, d)) = concurrent {
                    let resolved = self.property_value(&entity, prop);
                    self.conflicts.push(Conflict {
                        kind: ConflictKind::ConcurrentUpdate,
                        strategy: Policy::Counter.strategy_name(),
                        entity: self.display_entity(&entity).to_string(),
                        property: Some(prop.clone()),
                        winner: ConflictSide::new(&e.id, format!("{delta:?}")),
                        loser: ConflictSide::new(
                            &EventId {
                                peer: p,
                                counter: c,
                            },
                            format!("{d:?}"),
                        ),
                        resolved: resolved.map(|v| format!("{v:?}")),
                        detected_at: e.id.to_string(),
                    });
                }
            }
        }
        self.applied.observe(&e.id);
        self.peer_hlcs
            .entry(peer)
            .or_insert_with(|| (e.id.counter, Chunked::default()))
            .1
            .push(e.hlc.into());
        if e.hlc > self.hlc {
            self.hlc = e.hlc;
        }
        Ok(())
    }

    /// The event's causal past without its author's entry, shared with the previous event's
    /// when equal (the usual case for consecutive writes of one writer).
    fn shared_past(&mut self, e: &Event) -> Arc<VersionVector> {
        // The usual case first, compared in place: the same past as the previous event's.
        if let Some(last) = &self.last_past {
            let mut others = e.deps.iter().filter(|(p, c)| **p != e.id.peer && *c != 0);
            if last.iter().all(|(p, c)| others.next() == Some((p, c))) && others.next().is_none() {
                return last.clone();
            }
        }
        let mut others = VersionVector::new();
        for (p, c) in e.deps.iter() {
            if *p != e.id.peer {
                let p = self.intern_peer(p);
                others.set(p, c);
            }
        }
        if let Some(last) = &self.last_past {
            if **last == others {
                return last.clone();
            }
        }
        let shared = Arc::new(others);
        self.last_past = Some(shared.clone());
        shared
    }

    fn apply_schema(&mut self, s: &SchemaOp, stamp: &Stamp, id: &EventId) {
        if let SchemaOp::SetPolicy { table, .. } = s {
            // Only `online_wins` reads the policy when resolving, and only where the
            // register holds concurrent writes: those rows may change.
            let touched: Vec<Entity> = self
                .contended
                .iter()
                .filter(|(e, _)| e.table().eq_ignore_ascii_case(table))
                .map(|(e, _)| e.clone())
                .collect();
            for e in touched {
                self.touch_entity(&e);
            }
        }
        let competing_before = self.schema.has_competing_definitions(s.table());
        let change = self.schema.apply(s, stamp);
        let table_name = self
            .schema
            .table(s.table())
            .map(|t| t.name().to_string())
            .unwrap_or_else(|| s.table().to_string());
        if !competing_before && self.schema.has_competing_definitions(s.table()) {
            self.conflicts.push(Conflict {
                kind: ConflictKind::SchemaDefinition,
                strategy: "earliest_definition_wins",
                entity: table_name.clone(),
                property: None,
                winner: ConflictSide::new(id, "definition"),
                loser: ConflictSide::new(id, "definition"),
                resolved: self
                    .schema
                    .table(s.table())
                    .map(crate::ddl::render_table_ddl),
                detected_at: id.to_string(),
            });
        }
        match change {
            TableChange::None | TableChange::PolicyChanged => {}
            TableChange::Created => {
                let def = self.schema.table(s.table()).expect("created").clone();
                if let Some(def) = self.materializable(&def) {
                    self.ddl.push(GraphChange::CreateTable(def));
                }
            }
            TableChange::ColumnsAdded(columns) => self.ddl.push(GraphChange::AddColumns {
                table: table_name,
                columns,
            }),
            TableChange::Redefined => {
                self.rebuild.insert(table_name.to_ascii_lowercase());
            }
        }
    }

    /// Records a seal. Where it changes an `online_wins` winner, the row is recomputed and
    /// the change recorded as a conflict.
    fn apply_seal(&mut self, e: &Event, stamp: &Stamp) {
        let watched: Vec<(Entity, String)> = self
            .contended
            .iter()
            .filter(|(ent, prop)| self.schema.policy(ent.table(), prop) == Policy::OnlineWins)
            .cloned()
            .collect();
        let winners_before: Vec<Option<Stamp>> = watched
            .iter()
            .map(|(ent, prop)| self.online_winner(ent, prop))
            .collect();
        for (ent, _) in &watched {
            self.touch_entity(ent);
        }
        let list = self.seals.by_peer.entry(stamp.peer.clone()).or_default();
        let first = list.is_empty();
        list.push(Arc::new(e.deps.clone()));
        if first && self.seals.sequencer.as_ref().is_none_or(|(s, _)| stamp < s) {
            self.seals.sequencer = Some((stamp.clone(), stamp.peer.clone()));
        }
        for ((ent, prop), before) in watched.iter().zip(winners_before) {
            let after = self.online_winner(ent, prop);
            if after == before {
                continue;
            }
            if let (Some(w), Some(l)) = (after, before) {
                let resolved = self.property_value(ent, prop);
                self.conflicts.push(Conflict {
                    kind: ConflictKind::ConcurrentUpdate,
                    strategy: Policy::OnlineWins.strategy_name(),
                    entity: self.display_entity(ent).to_string(),
                    property: Some(prop.clone()),
                    winner: ConflictSide::new(&w.id(), "sealed first"),
                    loser: ConflictSide::new(&l.id(), "sealed later or not at all"),
                    resolved: resolved.map(|v| format!("{v:?}")),
                    detected_at: e.id.to_string(),
                });
            }
        }
    }

    /// The stamp of the `online_wins` winner of one property's register.
    fn online_winner(&self, entity: &Entity, prop: &str) -> Option<Stamp> {
        let state = self.entity(entity)?;
        let ps = state.props.get(self.names.id(prop)?)?;
        self.seals.winner(ps).map(|w| w.stamp.clone())
    }

    fn note_delete_conflict(&mut self, entity: &Entity, slot: Slot, prop: &str, e: &Event) {
        let exists = match slot {
            Slot::Node(n) => self.node_exists_id(n),
            Slot::Edge(ed) => self.edge_live_id(ed),
        };
        if exists {
            return;
        }
        let cleared = self.slot_state(slot).cleared().cloned();
        if let Some((del, _)) = cleared {
            if !e.deps.contains(&del.id()) {
                self.conflicts.push(Conflict {
                    kind: ConflictKind::DeleteUpdate,
                    strategy: "delete_wins",
                    entity: self.display_entity(entity).to_string(),
                    property: Some(prop.to_string()),
                    winner: ConflictSide::new(&del.id(), "delete"),
                    loser: ConflictSide::new(&e.id, "write"),
                    resolved: None,
                    detected_at: e.id.to_string(),
                });
            }
        }
    }

    fn entity(&self, entity: &Entity) -> Option<&EntityState> {
        match entity {
            Entity::Node(n) => self.store.node(n),
            Entity::Edge(e) => self.store.edge(e),
        }
    }

    /// The entity's slot, made (with empty state) if it has none.
    fn slot_of(&mut self, entity: &Entity) -> Slot {
        match entity {
            Entity::Node(n) => Slot::Node(self.store.node_id_or_insert(n)),
            Entity::Edge(e) => Slot::Edge(self.store.edge_entry(e).0),
        }
    }

    fn slot_state(&self, slot: Slot) -> &EntityState {
        match slot {
            Slot::Node(i) => self.store.node_state(i),
            Slot::Edge(i) => self.store.edge_state(i),
        }
    }

    fn slot_state_mut(&mut self, slot: Slot) -> &mut EntityState {
        match slot {
            Slot::Node(i) => self.store.node_state_mut(i),
            Slot::Edge(i) => self.store.edge_state_mut(i),
        }
    }

    /// The id of a property name (any case), if it was ever written.
    fn name_id(&self, name: &str) -> Option<NameId> {
        if let Some(&i) = self.spelled.get(name) {
            return Some(i);
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.names.id(&name.to_ascii_lowercase())
        } else {
            self.names.id(name)
        }
    }

    /// The id of a property name (any case), interned if new.
    fn intern_name(&mut self, name: &str) -> NameId {
        if let Some(&i) = self.spelled.get(name) {
            return i;
        }
        let i = self.names.intern(&name.to_ascii_lowercase());
        self.spelled.insert(name.into(), i);
        i
    }

    /// The shared copy of a peer id.
    fn intern_peer(&mut self, p: &PeerId) -> PeerId {
        if let Some(shared) = self.peers.get(p) {
            return shared.clone();
        }
        self.peers.insert(p.clone());
        p.clone()
    }

    /// The state of the entity's property `name` (any case), if it has one.
    fn prop<'a>(&self, state: &'a EntityState, name: &str) -> Option<&'a PropState> {
        state.props.get(self.name_id(name)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_prop(
        &mut self,
        entity: &Entity,
        slot: Slot,
        prop: &str,
        value: &Value,
        e: &Event,
        stamp: &Stamp,
        stored_past: &Arc<VersionVector>,
    ) {
        let (deps, id) = (&e.deps, &e.id);
        let policy = self.schema.policy(entity.table(), prop);
        let name = self.intern_name(prop);
        let state = self.slot_state_mut(slot);
        let ps = state.props.entry(name);
        // In `contended` exactly while the register holds concurrent writes.
        let was_contended = !ps.others().is_empty();
        let new = Write {
            stamp: stamp.clone(),
            value: Stored::new(value),
            deps: stored_past.clone(),
        };
        // The multi-value register: drop what this write had seen, keep what it had not.
        ps.drop_seen(deps);
        let (conflict, wins) = match &ps.reg {
            None => (None, true),
            Some(old) => {
                let concurrent = !deps.contains(&old.stamp.id());
                let wins = old.stamp < *stamp;
                let c = if concurrent && !old.value.is(value) {
                    Some(if wins {
                        (new.clone(), old.clone())
                    } else {
                        (old.clone(), new.clone())
                    })
                } else {
                    None
                };
                (c, wins)
            }
        };
        let concurrent_old = ps
            .reg
            .as_ref()
            .filter(|old| !deps.contains(&old.stamp.id()))
            .cloned();
        if wins {
            if let Some(old) = concurrent_old {
                ps.push_other(old);
            }
            ps.reg = Some(new);
        } else {
            ps.push_other(new);
        }
        let contended = !ps.others().is_empty();
        let online = policy == Policy::OnlineWins;
        let online_pick = online.then(|| {
            let ps = self.slot_state(slot).props.get(name)?;
            self.seals.winner(ps).map(|w| w.stamp.clone())
        });
        if contended != was_contended {
            let key = (entity.clone(), self.names.get(name).to_string());
            if contended {
                self.contended.insert(key);
            } else {
                self.contended.remove(&key);
            }
        }
        if let Some((mut w, mut l)) = conflict {
            if let Some(Some(pick)) = online_pick {
                if l.stamp == pick {
                    std::mem::swap(&mut w, &mut l);
                }
            }
            let strategy = if online {
                Policy::OnlineWins.strategy_name()
            } else {
                Policy::Lww.strategy_name()
            };
            let resolved = self.property_value_slot(entity.table(), slot, prop);
            self.conflicts.push(Conflict {
                kind: ConflictKind::ConcurrentUpdate,
                strategy,
                entity: self.display_entity(entity).to_string(),
                property: Some(prop.to_string()),
                winner: ConflictSide::new(&w.stamp.id(), format!("{:?}", w.value)),
                loser: ConflictSide::new(&l.stamp.id(), format!("{:?}", l.value)),
                resolved: resolved.map(|v| format!("{v:?}")),
                detected_at: id.to_string(),
            });
        }
        {
            if let Some(col) = self
                .schema
                .table(entity.table())
                .and_then(|t| t.column(prop))
            {
                if !value.conforms_to(&col.ty) {
                    self.conflicts.push(Conflict {
                        kind: ConflictKind::TypeMismatch,
                        strategy: "null_on_type_mismatch",
                        entity: self.display_entity(entity).to_string(),
                        property: Some(prop.to_string()),
                        winner: ConflictSide::new(id, col.ty.to_string()),
                        loser: ConflictSide::new(id, format!("{value:?}")),
                        resolved: Some(String::new()),
                        detected_at: id.to_string(),
                    });
                }
            }
        }
    }

    /// Drops the edges attached to `n` that no longer have a live add from the adjacency
    /// index (their state stays, for a later re-add). A dead edge is dead for good: only a
    /// new add, which links it again, can revive it.
    fn prune_adjacency(&mut self, id: NodeId) {
        let dead: Vec<EdgeId> = self
            .store
            .node_state(id)
            .links
            .iter()
            .copied()
            .filter(|&e| self.edge_id_priority(e).is_none())
            .collect();
        for e in dead {
            self.store.unlink(e);
        }
    }

    // --------------------------------------------------------- visibility (reads)

    /// Visible: alive, its table resolves to a node table, and its key fits that table's
    /// key type (after competing creates of one table, some nodes may not).
    fn node_exists(&self, n: &NodeRef) -> bool {
        self.store
            .node_id(n)
            .is_some_and(|i| self.node_exists_id(i))
    }

    /// [`Engine::node_exists`] of a node whose table is in any spelling.
    fn node_exists_any(&self, n: &NodeRef) -> bool {
        self.schema
            .table_key(&n.table)
            .and_then(|t| self.store.node_id_parts(t, &n.key))
            .is_some_and(|i| self.node_exists_id(i))
    }

    fn node_exists_id(&self, i: NodeId) -> bool {
        self.store.node_state(i).live_add(&[]).is_some() && self.node_fits_schema(i)
    }

    fn node_fits_schema(&self, i: NodeId) -> bool {
        let (table, key) = self.store.node_parts(i);
        match self.schema.table(self.store.table_name(table)) {
            Some(TableDef::Node(def)) => def
                .key_column()
                .is_some_and(|pk| !key.is_null() && key.conforms_to(&pk.ty)),
            _ => false,
        }
    }

    /// A table definition as a store can hold it: a rel table keeps only the FROM/TO pairs
    /// that are node tables now (None if none is). Competing creates of one name with
    /// different kinds can leave a rel table pointing at a table that is not a node table.
    fn materializable(&self, def: &TableDef) -> Option<TableDef> {
        match def {
            TableDef::Node(_) => Some(def.clone()),
            TableDef::Rel(r) => {
                let mut r = r.clone();
                r.connections.retain(|(f, t)| {
                    self.schema.node_table(f).is_ok() && self.schema.node_table(t).is_ok()
                });
                (!r.connections.is_empty()).then_some(TableDef::Rel(r))
            }
        }
    }

    /// The latest live add of the edge, counting deletes of its endpoints; None if dead.
    fn edge_id_priority(&self, e: EdgeId) -> Option<Stamp> {
        let (_, from, to) = self.store.edge_ends(e);
        let from_removed = self.store.node_state(from).removed();
        let to_removed = self.store.node_state(to).removed();
        self.store
            .edge_state(e)
            .live_add(&[from_removed, to_removed])
    }

    /// Alive, and both endpoints exist (multiplicity aside).
    fn edge_live_id(&self, e: EdgeId) -> bool {
        self.edge_live_priority(e).is_some()
    }

    /// The edge's priority if it is alive and both endpoints exist.
    fn edge_live_priority(&self, e: EdgeId) -> Option<Stamp> {
        let (_, from, to) = self.store.edge_ends(e);
        self.edge_id_priority(e)
            .filter(|_| self.node_exists_id(from) && self.node_exists_id(to))
    }

    /// Visible (it has a row): alive, both endpoints exist, not hidden by multiplicity,
    /// and its table resolves to a rel table.
    fn edge_visible(&self, e: EdgeId) -> bool {
        let (table, _, _) = self.store.edge_ends(e);
        self.edge_live_id(e)
            && self.hidden_by(e).is_none()
            && matches!(
                self.schema.table(self.store.table_name(table)),
                Some(TableDef::Rel(_))
            )
    }

    fn edge_visible_ref(&self, e: &EdgeRef) -> bool {
        self.store.edge_id(e).is_some_and(|i| self.edge_visible(i))
    }

    /// The edges of rel table `table` that share `end` on the given side, in slot order.
    fn group(
        &self,
        table: TableId,
        end: NodeId,
        source_side: bool,
    ) -> impl Iterator<Item = EdgeId> + '_ {
        self.store
            .node_state(end)
            .links
            .iter()
            .copied()
            .filter(move |&o| {
                let (t, from, to) = self.store.edge_ends(o);
                t == table && if source_side { from == end } else { to == end }
            })
    }

    /// The winner of the group: the live edge with the greatest priority (then the
    /// greatest reference, should two share one).
    fn group_winner(&self, table: TableId, end: NodeId, source_side: bool) -> Option<EdgeId> {
        let mut best: Option<(Stamp, EdgeId)> = None;
        for o in self.group(table, end, source_side) {
            let Some(p) = self.edge_live_priority(o) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((bp, bo)) => match p.cmp(bp) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => self.store.edge_ref(o) > self.store.edge_ref(*bo),
                },
            };
            if better {
                best = Some((p, o));
            }
        }
        best.map(|(_, o)| o)
    }

    fn multiplicity(&self, table: &str) -> Multiplicity {
        match self.schema.table(table) {
            Some(TableDef::Rel(r)) => r.multiplicity,
            _ => Multiplicity::ManyMany,
        }
    }

    /// The edge that hides `e` by multiplicity, if any.
    fn hidden_by(&self, e: EdgeId) -> Option<EdgeId> {
        let (table, from, to) = self.store.edge_ends(e);
        let m = self.multiplicity(self.store.table_name(table));
        if m.one_per_source() {
            if let Some(w) = self.group_winner(table, from, true) {
                if w != e {
                    return Some(w);
                }
            }
        }
        if m.one_per_destination() {
            if let Some(w) = self.group_winner(table, to, false) {
                if w != e {
                    return Some(w);
                }
            }
        }
        None
    }

    /// The seals, if the column resolves by `online_wins`.
    fn online(&self, table: &str, column: &str) -> Option<&Seals> {
        (self.schema.policy(table, column) == Policy::OnlineWins).then_some(&self.seals)
    }

    /// The resolved value of one property (None if the entity has no state).
    fn property_value(&self, entity: &Entity, prop: &str) -> Option<Value> {
        let slot = match entity {
            Entity::Node(n) => Slot::Node(self.store.node_id(n)?),
            Entity::Edge(e) => Slot::Edge(self.store.edge_id(e)?),
        };
        self.property_value_slot(entity.table(), slot, prop)
    }

    /// The latest delete that clears the entity's properties: its own, or for an edge, an
    /// endpoint's if later.
    fn cleared(&self, slot: Slot) -> Option<&(Stamp, Arc<VersionVector>)> {
        match slot {
            Slot::Node(i) => self.store.node_state(i).cleared(),
            Slot::Edge(i) => {
                let (_, from, to) = self.store.edge_ends(i);
                [
                    self.store.edge_state(i).cleared(),
                    self.store.node_state(from).cleared(),
                    self.store.node_state(to).cleared(),
                ]
                .into_iter()
                .flatten()
                .max_by(|a, b| a.0.cmp(&b.0))
            }
        }
    }

    /// [`Engine::property_value`] of the entity in `slot`, of table `table` (any case).
    fn property_value_slot(&self, table: &str, slot: Slot, prop: &str) -> Option<Value> {
        let def = self.schema.table(table)?;
        let col = def.column(prop)?;
        Some(resolve_property(
            self.prop(self.slot_state(slot), &col.name),
            self.cleared(slot),
            col,
            self.online(table, &col.name),
        ))
    }

    fn node_row(&self, n: &NodeRef) -> Row {
        self.node_row_id(self.store.node_id(n)?)
    }

    fn node_row_id(&self, i: NodeId) -> Row {
        if !self.node_exists_id(i) {
            return None;
        }
        let (table, key) = self.store.node_parts(i);
        let Some(TableDef::Node(def)) = self.schema.table(self.store.table_name(table)) else {
            return None;
        };
        let state = self.store.node_state(i);
        Some(
            def.columns
                .iter()
                .map(|c| {
                    if c.name == def.primary_key {
                        key.value()
                    } else {
                        resolve_property(
                            self.prop(state, &c.name),
                            state.cleared(),
                            c,
                            self.online(&def.name, &c.name),
                        )
                    }
                })
                .collect(),
        )
    }

    fn edge_row(&self, e: &EdgeRef) -> Row {
        self.edge_row_id(self.store.edge_id(e)?)
    }

    fn edge_row_id(&self, e: EdgeId) -> Row {
        if !self.edge_visible(e) {
            return None;
        }
        let (table, _, _) = self.store.edge_ends(e);
        let Some(TableDef::Rel(def)) = self.schema.table(self.store.table_name(table)) else {
            return None;
        };
        let state = self.store.edge_state(e);
        let cleared = self.cleared(Slot::Edge(e));
        Some(
            def.columns
                .iter()
                .map(|c| {
                    resolve_property(
                        self.prop(state, &c.name),
                        cleared,
                        c,
                        self.online(&def.name, &c.name),
                    )
                })
                .collect(),
        )
    }

    // ------------------------------------------------------------ batch tracking

    fn touch_entity(&mut self, entity: &Entity) {
        if self.tracking {
            let slot = self.slot_of(entity);
            self.touch_slot(slot);
        }
    }

    /// Records the entity's row before it changes (for an edge, not its group's).
    fn touch_slot(&mut self, slot: Slot) {
        match slot {
            Slot::Node(i) => self.touch_node_row(i),
            Slot::Edge(i) => self.touch_edge_id(i, false),
        }
    }

    fn touch_node_row(&mut self, i: NodeId) {
        if self.tracking && !self.before_nodes.contains_key(&i) {
            let row = self.node_row_id(i);
            self.before_nodes.insert(i, row);
        }
    }

    /// Records the node's row, and those of every edge whose visibility its existence
    /// decides, before they change.
    fn touch_node_id(&mut self, i: NodeId) {
        if !self.tracking {
            return;
        }
        self.touch_node_row(i);
        let links = &self.store.node_state(i).links;
        if links.is_empty() {
            return;
        }
        for e in links.clone().iter() {
            self.touch_edge_id(*e, true);
        }
    }

    /// Records the edge's row (and, if `groups`, those of the edges competing with it).
    fn touch_edge_id(&mut self, e: EdgeId, groups: bool) {
        if !self.tracking {
            return;
        }
        if !self.before_edges.contains_key(&e) {
            let row = self.edge_row_id(e);
            self.before_edges.insert(e, row);
        }
        if !groups {
            return;
        }
        let (table, from, to) = self.store.edge_ends(e);
        let m = self.multiplicity(self.store.table_name(table));
        let mut others = Vec::new();
        if m.one_per_source() {
            others.extend(self.group(table, from, true));
        }
        if m.one_per_destination() {
            others.extend(self.group(table, to, false));
        }
        for o in others {
            if !self.before_edges.contains_key(&o) {
                let row = self.edge_row_id(o);
                self.before_edges.insert(o, row);
            }
        }
    }

    /// The changes accumulated since the last call, with the current watermark, and the
    /// conflicts detected.
    pub fn take_batch(&mut self) -> (ApplyBatch, Vec<Conflict>) {
        let mut changes = std::mem::take(&mut self.ddl);
        let before_nodes = std::mem::take(&mut self.before_nodes);
        let before_edges = std::mem::take(&mut self.before_edges);
        let added = std::mem::take(&mut self.edges_added);
        let mut conflicts = std::mem::take(&mut self.conflicts);

        // Tables to rebuild: redefined tables, and the rel tables attached to them.
        let mut rebuild: BTreeSet<String> = std::mem::take(&mut self.rebuild);
        for t in rebuild.clone() {
            for r in self.schema.rel_tables_touching(&t) {
                rebuild.insert(r.to_ascii_lowercase());
            }
        }
        if !rebuild.is_empty() {
            let defs: Vec<TableDef> = self
                .schema
                .tables()
                .filter(|t| rebuild.contains(&t.name().to_ascii_lowercase()))
                .cloned()
                .collect();
            let (rels, nodes): (Vec<_>, Vec<_>) =
                defs.iter().partition(|t| matches!(t, TableDef::Rel(_)));
            for t in rels.iter().chain(nodes.iter()) {
                changes.push(GraphChange::DropTable(t.name().to_string()));
            }
            for t in nodes.iter().chain(rels.iter()) {
                if let Some(def) = self.materializable(t) {
                    changes.push(GraphChange::CreateTable(def));
                }
            }
        }

        let mut edge_deletes = Vec::new();
        let mut node_deletes = Vec::new();
        let mut node_upserts = Vec::new();
        let mut edge_upserts = Vec::new();

        // The rows in the order of their references (table name, then key; an edge's
        // endpoints, then its key), whatever their slots (which differ between replicas):
        // tables ranked by lower-cased name once, then each row's key compared, not whole
        // references.
        let tables = self.store.table_count();
        let mut by_name: Vec<TableId> = (0..tables as TableId).collect();
        by_name.sort_by(|a, b| self.store.table_name(*a).cmp(self.store.table_name(*b)));
        let mut rank = vec![0u32; tables];
        for (r, t) in by_name.iter().enumerate() {
            rank[*t as usize] = r as u32;
        }
        // Each table in the schema's spelling, as the graph store gets it.
        let shown: Vec<String> = (0..tables as TableId)
            .map(|t| {
                let name = self.store.table_name(t);
                self.schema
                    .table(name)
                    .map_or(name, |d| d.name())
                    .to_string()
            })
            .collect();
        let rebuilt: Vec<bool> = (0..tables as TableId)
            .map(|t| rebuild.contains(self.store.table_name(t)))
            .collect();

        let mut nodes: Vec<(u32, Value, NodeId, Row)> = before_nodes
            .into_iter()
            .filter_map(|(i, before)| {
                let (t, key) = self.store.node_parts(i);
                (!rebuilt[t as usize]).then(|| (rank[t as usize], key.value(), i, before))
            })
            .collect();
        nodes.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (_, key, i, before) in nodes {
            let after = self.node_row_id(i);
            let (t, _) = self.store.node_parts(i);
            let out = NodeRef {
                table: shown[t as usize].clone(),
                key,
            };
            match (before, after) {
                (Some(_), None) => node_deletes.push(GraphChange::DeleteNode(out)),
                (None, Some(values)) => node_upserts.push(GraphChange::UpsertNode {
                    node: out,
                    values,
                    is_new: true,
                    changed: Vec::new(),
                }),
                (Some(b), Some(values)) if b != values => {
                    let changed = if b.len() == values.len() {
                        b.iter().zip(&values).map(|(x, y)| x != y).collect()
                    } else {
                        Vec::new()
                    };
                    node_upserts.push(GraphChange::UpsertNode {
                        node: out,
                        values,
                        is_new: false,
                        changed,
                    })
                }
                _ => {}
            }
        }
        type EdgeSortKey = (u32, u32, Value, u32, Value);
        let mut edges: Vec<(EdgeSortKey, EdgeId, Row)> = before_edges
            .into_iter()
            .filter_map(|(i, before)| {
                let (t, from, to) = self.store.edge_ends(i);
                if rebuilt[t as usize] {
                    return None;
                }
                let (ft, fk) = self.store.node_parts(from);
                let (tt, tk) = self.store.node_parts(to);
                let key = (
                    rank[t as usize],
                    rank[ft as usize],
                    fk.value(),
                    rank[tt as usize],
                    tk.value(),
                );
                Some((key, i, before))
            })
            .collect();
        edges.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| self.store.edge_key(a.1).cmp(self.store.edge_key(b.1)))
        });
        for ((_, _, from_key, _, to_key), i, before) in edges {
            let after = self.edge_row_id(i);
            if after.is_none() && self.tracking {
                if let Some(winner) = self.edge_live_id(i).then(|| self.hidden_by(i)).flatten() {
                    if before.is_some() || added.contains(&i) {
                        let e = self.store.edge_ref(i);
                        let w = self.store.edge_ref(winner);
                        conflicts.push(Conflict {
                            kind: ConflictKind::Multiplicity,
                            strategy: "latest_edge_wins",
                            entity: self.display_edge(&e).to_string(),
                            property: None,
                            winner: ConflictSide::new(
                                &self.edge_id_priority(winner).expect("live").id(),
                                w.to_string(),
                            ),
                            loser: ConflictSide::new(
                                &self.edge_id_priority(i).expect("live").id(),
                                e.to_string(),
                            ),
                            resolved: None,
                            detected_at: String::new(),
                        });
                    }
                }
            }
            let (t, from, to) = self.store.edge_ends(i);
            let (ft, _) = self.store.node_parts(from);
            let (tt, _) = self.store.node_parts(to);
            let out = EdgeRef {
                table: shown[t as usize].clone(),
                from: NodeRef {
                    table: shown[ft as usize].clone(),
                    key: from_key,
                },
                to: NodeRef {
                    table: shown[tt as usize].clone(),
                    key: to_key,
                },
                key: self.store.edge_key(i).to_string(),
            };
            match (before, after) {
                (Some(_), None) => edge_deletes.push(GraphChange::DeleteEdge(out)),
                (None, Some(values)) => edge_upserts.push(GraphChange::UpsertEdge {
                    edge: out,
                    values,
                    is_new: true,
                }),
                (Some(b), Some(values)) if b != values => {
                    edge_upserts.push(GraphChange::UpsertEdge {
                        edge: out,
                        values,
                        is_new: false,
                    })
                }
                _ => {}
            }
        }

        // Rebuilt tables: every visible row, inserted fresh.
        if !rebuild.is_empty() {
            let mut ns: Vec<NodeRef> = self
                .store
                .node_refs()
                .filter(|n| rebuild.contains(&n.table))
                .collect();
            ns.sort();
            for n in &ns {
                if let Some(values) = self.node_row(n) {
                    node_upserts.push(GraphChange::UpsertNode {
                        node: self.display_node(n),
                        values,
                        is_new: true,
                        changed: Vec::new(),
                    });
                }
            }
            let mut es: Vec<EdgeRef> = self
                .store
                .edge_refs()
                .filter(|e| {
                    rebuild.contains(&e.table)
                        || rebuild.contains(&e.from.table)
                        || rebuild.contains(&e.to.table)
                })
                .collect();
            es.sort();
            for e in &es {
                if let Some(values) = self.edge_row(e) {
                    edge_upserts.push(GraphChange::UpsertEdge {
                        edge: self.display_edge(e),
                        values,
                        is_new: true,
                    });
                }
            }
        }

        changes.extend(edge_deletes);
        changes.extend(node_deletes);
        changes.extend(node_upserts);
        changes.extend(edge_upserts);
        (
            ApplyBatch {
                changes,
                watermark: self.applied.clone(),
                may_exist: false,
            },
            conflicts,
        )
    }

    fn display_entity(&self, e: &Entity) -> Entity {
        match e {
            Entity::Node(n) => Entity::Node(self.display_node(n)),
            Entity::Edge(ed) => Entity::Edge(self.display_edge(ed)),
        }
    }

    /// The node with its table in the schema's spelling.
    fn display_node(&self, n: &NodeRef) -> NodeRef {
        NodeRef {
            table: self
                .schema
                .table(&n.table)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| n.table.clone()),
            key: n.key.clone(),
        }
    }

    fn display_edge(&self, e: &EdgeRef) -> EdgeRef {
        EdgeRef {
            table: self
                .schema
                .table(&e.table)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| e.table.clone()),
            from: self.display_node(&e.from),
            to: self.display_node(&e.to),
            key: e.key.clone(),
        }
    }

    /// The visible graph, in the canonical form of [`GraphDump`].
    pub fn dump(&self) -> GraphDump {
        let mut out = GraphDump::new();
        for t in self.schema.tables() {
            out.insert(t.name().to_string(), Vec::new());
        }
        for n in self.store.node_refs() {
            if let Some(row) = self.node_row(&n) {
                let name = self.display_node(&n).table;
                out.entry(name).or_default().push(row);
            }
        }
        for e in self.store.edge_refs() {
            if let Some(props) = self.edge_row(&e) {
                let d = self.display_edge(&e);
                let mut row = vec![
                    Value::String(d.from.table.clone()),
                    d.from.key.clone(),
                    Value::String(d.to.table.clone()),
                    d.to.key.clone(),
                    Value::String(d.key.clone()),
                ];
                row.extend(props);
                out.entry(d.table).or_default().push(row);
            }
        }
        for rows in out.values_mut() {
            rows.sort();
        }
        out
    }

    /// Number of visible nodes and edges.
    pub fn visible_counts(&self) -> (usize, usize) {
        let n = self
            .store
            .node_refs()
            .filter(|n| self.node_exists(n))
            .count();
        let e = self
            .store
            .edge_refs()
            .filter(|e| self.edge_visible_ref(e))
            .count();
        (n, e)
    }

    /// The commit markers of `tx` applied here, if any.
    pub fn tx_markers(&self, tx: &crate::tx::TxId) -> Option<&TxMarks> {
        self.tx_markers.get(tx)
    }

    /// The value of a visible node's property (`None` if the node is not visible or the
    /// table has no such column).
    pub fn node_value(&self, n: &NodeRef, column: &str) -> Option<Value> {
        let n = norm_node(n);
        if !self.node_exists(&n) {
            return None;
        }
        let def = self.schema.node_table(&n.table).ok()?;
        let c = def
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(column))?;
        if c.name == def.primary_key {
            return Some(n.key.clone());
        }
        Some(
            self.property_value(&Entity::Node(n), &c.name)
                .unwrap_or(Value::Null),
        )
    }

    /// The visible nodes of `table` (keys), in no particular order.
    pub fn node_keys<'a>(&'a self, table: &'a str) -> impl Iterator<Item = NodeRef> + 'a {
        self.store
            .node_refs()
            .filter(move |n| n.table.eq_ignore_ascii_case(table) && self.node_exists(n))
            .map(|n| self.display_node(&n))
    }

    /// The visible edges of rel `table`, in no particular order.
    pub fn edges<'a>(&'a self, table: &'a str) -> impl Iterator<Item = EdgeRef> + 'a {
        self.store
            .edge_refs()
            .filter(move |e| e.table.eq_ignore_ascii_case(table) && self.edge_visible_ref(e))
            .map(|e| self.display_edge(&e))
    }

    /// Whether the node is visible (for callers that need to know before writing).
    pub fn contains_node(&self, n: &NodeRef) -> bool {
        self.node_exists_any(n)
    }
}

fn norm_entity(e: &Entity) -> Entity {
    match e {
        Entity::Node(n) => Entity::Node(norm_node(n)),
        Entity::Edge(ed) => Entity::Edge(norm_edge(ed)),
    }
}

/// `name` if it is spelled `spelling` already, else `spelling`: the name in the schema's
/// spelling without a new string in the usual case.
fn respelled(name: String, spelling: &str) -> String {
    if name == spelling {
        name
    } else {
        spelling.to_string()
    }
}

fn check_type(table: &str, col: &Column, value: &Value) -> Result<(), EngineError> {
    if value.conforms_to(&col.ty) {
        Ok(())
    } else {
        Err(EngineError::TypeMismatch {
            table: table.to_string(),
            column: col.name.clone(),
            expected: col.ty.to_string(),
            value: format!("{value:?}"),
        })
    }
}

/// Zero of a numeric type, the start of a counter with no base.
fn zero(ty: &DataType) -> Value {
    match ty {
        DataType::Int8 => Value::Int8(0),
        DataType::Int16 => Value::Int16(0),
        DataType::Int32 => Value::Int32(0),
        DataType::Int64 => Value::Int64(0),
        DataType::Int128 => Value::Int128(0),
        DataType::UInt8 => Value::UInt8(0),
        DataType::UInt16 => Value::UInt16(0),
        DataType::UInt32 => Value::UInt32(0),
        DataType::UInt64 => Value::UInt64(0),
        DataType::Float => Value::Float(0.0),
        DataType::Double => Value::Double(0.0),
        _ => Value::Null,
    }
}

/// The value of one property from its state: the later of the winning set and the latest
/// delete is the base; increments the base had not seen are added; a value that does not fit
/// the column's (resolved) type reads as NULL; unset reads as the column default.
fn resolve_property(
    ps: Option<&PropState>,
    cleared: Option<&(Stamp, Arc<VersionVector>)>,
    col: &Column,
    online: Option<&Seals>,
) -> Value {
    let unset = || col.default.clone().unwrap_or(Value::Null);
    let Some(ps) = ps else {
        return unset();
    };
    let set = match online {
        Some(seals) => seals.winner(ps),
        None => ps.reg.as_ref(),
    };
    // The base, and what it had seen: (stamp, stored causal past) of the write or delete.
    type Past<'a> = Option<(&'a Stamp, &'a VersionVector)>;
    let (base, base_past): (Option<Value>, Past) = match (set, cleared) {
        (Some(w), Some((s, d))) => {
            if w.stamp > *s {
                (Some(w.value.value()), Some((&w.stamp, &w.deps)))
            } else {
                (None, Some((s, d.as_ref())))
            }
        }
        (Some(w), None) => (Some(w.value.value()), Some((&w.stamp, &w.deps))),
        (None, Some((s, d))) => (None, Some((s, d.as_ref()))),
        (None, None) => (None, None),
    };
    let mut value = base.unwrap_or_else(unset);
    let mut counted = false;
    for (p, list) in ps.incs() {
        let seen = base_past.map_or(0, |(s, d)| seen_by(s, d, p));
        let start = list.partition_point(|(c, _)| *c <= seen);
        for (_, delta) in &list[start..] {
            if !counted && value.is_null() {
                value = zero(&col.ty);
            }
            counted = true;
            value = match value.checked_add(delta) {
                Some(v) => v,
                None => return Value::Null,
            };
        }
    }
    if value.conforms_to(&col.ty) {
        value
    } else {
        Value::Null
    }
}

mod small_map;
mod snapshot;
mod store;
mod stored;

use crate::chunked::Chunked;
use small_map::{Keyed, KeyedSlice, OneOrMap, SmallMap};
use store::{EdgeId, Entities, Interner, Links, NodeId, TableId};
use stored::Stored;
#[cfg(test)]
mod tests;
