//! Events and the operations they carry.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::{EventId, Hlc, Stamp, VersionVector};
use crate::schema::SchemaOp;
use crate::value::Value;

/// A node, by table and primary key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef {
    pub table: String,
    pub key: Value,
}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.table, self.key)
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.table, self.key)
    }
}

/// An edge: rel table, endpoints, and the edge key that tells multi-edges apart. The default
/// key is the empty string, so adding the same (table, from, to) twice names one edge.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EdgeRef {
    pub table: String,
    pub from: NodeRef,
    pub to: NodeRef,
    pub key: String,
}

impl fmt::Debug for EdgeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for EdgeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-[{}", self.from, self.table)?;
        if !self.key.is_empty() {
            write!(f, " {:?}", self.key)?;
        }
        write!(f, "]->{}", self.to)
    }
}

/// What a property write addresses.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Entity {
    Node(NodeRef),
    Edge(EdgeRef),
}

impl Entity {
    pub fn table(&self) -> &str {
        match self {
            Entity::Node(n) => &n.table,
            Entity::Edge(e) => &e.table,
        }
    }
}

impl fmt::Debug for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::Node(n) => write!(f, "{n}"),
            Entity::Edge(e) => write!(f, "{e}"),
        }
    }
}

/// One replicated operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    Schema(SchemaOp),
    /// Creates the node (or re-adds it) and sets the given properties. The primary key must
    /// be among them.
    AddNode {
        table: String,
        props: Vec<(String, Value)>,
    },
    /// Removes the node and every edge attached to it that the writer had seen.
    DeleteNode(NodeRef),
    AddEdge {
        edge: EdgeRef,
        props: Vec<(String, Value)>,
    },
    DeleteEdge(EdgeRef),
    /// Sets one property (last writer wins, or resets a counter).
    Update {
        entity: Entity,
        prop: String,
        value: Value,
    },
    /// Adds `delta` to a property with the counter policy.
    Increment {
        entity: Entity,
        prop: String,
        delta: Value,
    },
    /// A hub's statement that every event in this event's causal past (`deps`) has reached
    /// the shared history, in that order relative to the hub's earlier seals. It changes no
    /// row; it orders writes for the `online_wins` policy.
    Seal,
    /// A participant's commit of a coordinated transaction: the `ops` events that follow
    /// it (its author's next counters, in the same log transaction) are the transaction's
    /// ops here. It changes no row (ARCHITECTURE.md, "Transactions on replicas").
    Tx {
        tx: crate::tx::TxId,
        participants: Vec<String>,
        ops: u32,
    },
}

impl Op {
    /// The table the op writes to ("" for a seal, which writes to none).
    pub fn table(&self) -> &str {
        match self {
            Op::Schema(s) => s.table(),
            Op::AddNode { table, .. } => table,
            Op::DeleteNode(n) => &n.table,
            Op::AddEdge { edge, .. } => &edge.table,
            Op::DeleteEdge(e) => &e.table,
            Op::Update { entity, .. } | Op::Increment { entity, .. } => entity.table(),
            Op::Seal | Op::Tx { .. } => "",
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Schema(_) => "schema",
            Op::AddNode { .. } => "add_node",
            Op::DeleteNode(_) => "delete_node",
            Op::AddEdge { .. } => "add_edge",
            Op::DeleteEdge(_) => "delete_edge",
            Op::Update { .. } => "update",
            Op::Increment { .. } => "increment",
            Op::Seal => "seal",
            Op::Tx { .. } => "tx",
        }
    }
}

/// An event: one op, who wrote it, and when, in causal and hybrid-clock terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    /// The writer's version vector just before this event: its causal past. Excludes the
    /// event itself, so `deps[id.peer] == id.counter - 1`.
    pub deps: VersionVector,
    pub hlc: Hlc,
    pub op: Op,
}

impl Event {
    pub fn stamp(&self) -> Stamp {
        Stamp {
            hlc: self.hlc,
            peer: self.id.peer.clone(),
            counter: self.id.counter,
        }
    }

    /// The canonical binary encoding (MessagePack), used for hashing and storage.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("events always serialize")
    }

    pub fn decode(bytes: &[u8]) -> Result<Event, crate::EngineError> {
        crate::limits::check_msgpack(bytes, crate::limits::MAX_NESTING).map_err(|reason| {
            crate::EngineError::Parse {
                what: "event".into(),
                reason,
            }
        })?;
        rmp_serde::from_slice(bytes).map_err(|e| crate::EngineError::Parse {
            what: "event".into(),
            reason: e.to_string(),
        })
    }

    /// SHA-256 of the canonical encoding: the same id with a different digest is equivocation.
    pub fn digest(&self) -> [u8; 32] {
        Self::digest_of(&self.encode())
    }

    /// [`Event::digest`] from the event's encoding (`encode()`), for a caller that has it.
    pub fn digest_of(encoding: &[u8]) -> [u8; 32] {
        Sha256::digest(encoding).into()
    }

    /// True if `other` is in this event's causal past.
    pub fn happened_after(&self, other: &EventId) -> bool {
        self.deps.contains(other)
    }
}
