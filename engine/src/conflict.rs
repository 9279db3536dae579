//! Conflict records: every concurrent write the engine had to resolve, observable by users.

use serde::{Deserialize, Serialize};

use crate::clock::EventId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConflictKind {
    /// Two concurrent writes to one property.
    ConcurrentUpdate,
    /// A write concurrent with a delete of its entity.
    DeleteUpdate,
    /// An add concurrent with a delete of the same entity.
    AddDelete,
    /// Concurrent edges that together break a MANY_ONE / ONE_MANY / ONE_ONE rel table.
    Multiplicity,
    /// The same table created concurrently with different definitions.
    SchemaDefinition,
    /// A value written under a concurrent column definition of another type.
    TypeMismatch,
}

/// One side of a conflict: the event and the value it wrote (Kuzu text form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictSide {
    pub event: String,
    pub value: String,
}

impl ConflictSide {
    pub fn new(event: &EventId, value: impl Into<String>) -> Self {
        ConflictSide {
            event: event.to_string(),
            value: value.into(),
        }
    }
}

/// A detected conflict and how it was resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    #[serde(rename = "type")]
    pub kind: ConflictKind,
    /// `last_write_wins`, `cumulative`, `online_wins`, `delete_wins`, `add_wins`, `latest_edge_wins`,
    /// `earliest_definition_wins`, `null_on_type_mismatch`.
    pub strategy: &'static str,
    /// The entity, e.g. `User(Alice)` or `Adam-[Follows]->Karissa`.
    pub entity: String,
    pub property: Option<String>,
    pub winner: ConflictSide,
    pub loser: ConflictSide,
    /// The value the property holds after resolution, if a property is concerned.
    pub resolved: Option<String>,
    /// The event whose arrival revealed the conflict.
    pub detected_at: String,
}

/// Every strategy name the engine writes into a [`Conflict`].
pub const STRATEGIES: &[&str] = &[
    "last_write_wins",
    "cumulative",
    "online_wins",
    "delete_wins",
    "add_wins",
    "latest_edge_wins",
    "earliest_definition_wins",
    "null_on_type_mismatch",
];

/// The strategy name among [`STRATEGIES`] spelled `s`, for reading records back.
pub fn static_strategy(s: &str) -> Option<&'static str> {
    STRATEGIES.iter().find(|k| **k == s).copied()
}
