//! Errors of the engine. Each names the input that was wrong.

use crate::clock::EventId;

#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineError {
    #[error("invalid peer id {0:?}: use 1-64 characters of A-Z a-z 0-9 _ . -")]
    InvalidPeerId(String),
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error("table {table:?} is not a {expected} table")]
    WrongTableKind {
        table: String,
        expected: &'static str,
    },
    #[error("table {0:?} already exists")]
    TableExists(String),
    #[error("table {table:?} has no column {column:?}")]
    UnknownColumn { table: String, column: String },
    #[error("invalid schema for table {table:?}: {reason}")]
    InvalidSchema { table: String, reason: String },
    #[error("value for {table}.{column} does not fit type {expected}: {value}")]
    TypeMismatch {
        table: String,
        column: String,
        expected: String,
        value: String,
    },
    #[error("{table}: {reason}")]
    InvalidOp { table: String, reason: String },
    #[error("node {table}({key}) does not exist")]
    NoSuchNode { table: String, key: String },
    #[error("edge {0} does not exist")]
    NoSuchEdge(String),
    #[error("event {id}: {reason}")]
    InvalidEvent { id: EventId, reason: String },
    #[error("event {id} was received twice with different contents (equivocation)")]
    Equivocation { id: EventId },
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    #[error("cannot parse {what}: {reason}")]
    Parse { what: String, reason: String },
    /// An error in one line of a multi-line input (1-based).
    #[error("line {line}: {source}")]
    AtLine {
        line: usize,
        source: Box<EngineError>,
    },
}

impl EngineError {
    /// Wraps this error as the reason an event was rejected.
    pub fn in_event(self, id: &EventId) -> EngineError {
        match self {
            e @ (EngineError::InvalidEvent { .. } | EngineError::Equivocation { .. }) => e,
            other => EngineError::InvalidEvent {
                id: id.clone(),
                reason: other.to_string(),
            },
        }
    }
}
