//! The replicated schema: node and rel tables, their columns, and per-property merge policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Stamp;
use crate::error::EngineError;
use crate::limits;
use crate::value::{DataType, Value};

/// Name of the hidden property that holds a replicated edge's key in Kuzu.
pub const EDGE_KEY_COLUMN: &str = "_ks_eid";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Multiplicity {
    ManyMany,
    /// Each source node has at most one edge of this table.
    ManyOne,
    /// Each destination node has at most one edge of this table.
    OneMany,
    /// Both.
    OneOne,
}

impl Multiplicity {
    pub fn one_per_source(self) -> bool {
        matches!(self, Multiplicity::ManyOne | Multiplicity::OneOne)
    }
    pub fn one_per_destination(self) -> bool {
        matches!(self, Multiplicity::OneMany | Multiplicity::OneOne)
    }
    pub fn keyword(self) -> &'static str {
        match self {
            Multiplicity::ManyMany => "MANY_MANY",
            Multiplicity::ManyOne => "MANY_ONE",
            Multiplicity::OneMany => "ONE_MANY",
            Multiplicity::OneOne => "ONE_ONE",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: DataType,
    /// A literal default; an unset property reads as this (else NULL).
    pub default: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeTableDef {
    pub name: String,
    /// All columns, the primary key included, in declaration order.
    pub columns: Vec<Column>,
    pub primary_key: String,
}

impl NodeTableDef {
    /// The primary-key column. `None` only for a definition that has not been validated.
    pub fn key_column(&self) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == self.primary_key)
    }

    /// The position of the primary-key column among `columns`.
    pub fn key_index(&self) -> Option<usize> {
        self.columns.iter().position(|c| c.name == self.primary_key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RelTableDef {
    pub name: String,
    /// (FROM table, TO table) pairs.
    pub connections: Vec<(String, String)>,
    /// Property columns, in declaration order (the edge key is not among them).
    pub columns: Vec<Column>,
    pub multiplicity: Multiplicity,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TableDef {
    Node(NodeTableDef),
    Rel(RelTableDef),
}

impl TableDef {
    pub fn name(&self) -> &str {
        match self {
            TableDef::Node(t) => &t.name,
            TableDef::Rel(t) => &t.name,
        }
    }
    pub fn columns(&self) -> &[Column] {
        match self {
            TableDef::Node(t) => &t.columns,
            TableDef::Rel(t) => &t.columns,
        }
    }
    fn columns_mut(&mut self) -> &mut Vec<Column> {
        match self {
            TableDef::Node(t) => &mut t.columns,
            TableDef::Rel(t) => &mut t.columns,
        }
    }
    /// Case-insensitive column lookup, as Kuzu does.
    pub fn column(&self, name: &str) -> Option<&Column> {
        let cols = self.columns();
        cols.iter()
            .find(|c| c.name == name)
            .or_else(|| cols.iter().find(|c| c.name.eq_ignore_ascii_case(name)))
    }
    pub fn column_index(&self, name: &str) -> Option<usize> {
        let cols = self.columns();
        cols.iter()
            .position(|c| c.name == name)
            .or_else(|| cols.iter().position(|c| c.name.eq_ignore_ascii_case(name)))
    }
}

/// How concurrent writes to one property merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Last writer wins: causal order, then HLC, then peer id.
    #[default]
    Lww,
    /// `increment` deltas sum, each exactly once; a set resets the deltas it has seen.
    Counter,
    /// Among concurrent writes, the one a hub sealed first wins (see `Op::Seal`); writes no
    /// hub has sealed yet resolve as `Lww` meanwhile.
    OnlineWins,
}

impl Policy {
    pub fn strategy_name(self) -> &'static str {
        match self {
            Policy::Lww => "last_write_wins",
            Policy::Counter => "cumulative",
            Policy::OnlineWins => "online_wins",
        }
    }
}

/// What a constraint checks (ARCHITECTURE.md, "Transactions on replicas").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// An integer property never below the bound.
    Min(i64),
    /// No two live nodes of the table hold the same non-null value.
    Unique,
    /// A MANY_ONE or ONE_ONE rel table's rule: at most one live edge per source (and per
    /// target for ONE_ONE).
    Single,
}

/// The one replica that may change a guarded key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// This peer, for every key of the constraint.
    Peer(String),
    /// The peer id held by this STRING property of the guarded node (`min` only).
    Column(String),
}

/// A constraint on a property (or, for [`Check::Single`], on a rel table), checked when a
/// transaction prepares and on its owner's local writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Constraint {
    pub check: Check,
    pub owner: Owner,
}

/// A replicated schema change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchemaOp {
    CreateNodeTable(NodeTableDef),
    CreateRelTable(RelTableDef),
    AddColumn {
        table: String,
        column: Column,
    },
    SetPolicy {
        table: String,
        column: String,
        policy: Policy,
    },
    /// Declares (or, with `None`, lifts) the constraint on `table.column`; `column` is
    /// empty for a rel table's [`Check::Single`]. Last writer wins per (table, column).
    SetConstraint {
        table: String,
        column: String,
        constraint: Option<Constraint>,
    },
}

impl SchemaOp {
    pub fn table(&self) -> &str {
        match self {
            SchemaOp::CreateNodeTable(t) => &t.name,
            SchemaOp::CreateRelTable(t) => &t.name,
            SchemaOp::AddColumn { table, .. }
            | SchemaOp::SetPolicy { table, .. }
            | SchemaOp::SetConstraint { table, .. } => table,
        }
    }
}

/// What applying one schema op did to a table, for the graph store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// Nothing visible changed.
    None,
    /// The table is new.
    Created,
    /// Columns were appended; existing rows read them as their default.
    ColumnsAdded(Vec<Column>),
    /// The definition changed in another way (a concurrent create with an earlier stamp
    /// arrived late): the stored table must be rebuilt from scratch.
    Redefined,
    /// Only a merge policy changed.
    PolicyChanged,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TableEntry {
    /// Every create/add-column op ever applied to this table, sorted by stamp.
    ops: Vec<(Stamp, SchemaOp)>,
    resolved: TableDef,
}

/// The schema as the engine resolved it. Tables are never dropped and columns never removed,
/// so the schema only grows. A table's definition is a pure function of the set of DDL ops
/// for it (see [`Schema::apply`]), so replicas agree whatever the arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Keyed by lower-cased name: Kuzu names are case-insensitive.
    tables: BTreeMap<String, TableEntry>,
    /// Each table's resolved spelling → its key in `tables`, so that the common lookup (by
    /// the spelling events carry) allocates nothing.
    spellings: BTreeMap<String, String>,
    /// (table, column) → (stamp, policy), last writer wins.
    policies: BTreeMap<(String, String), (Stamp, Policy)>,
    /// (table, column) → (stamp, constraint or none), last writer wins; lower-cased keys.
    #[serde(default)]
    constraints: BTreeMap<(String, String), (Stamp, Option<Constraint>)>,
    /// Number of schema ops applied.
    pub version: u64,
}

impl Schema {
    /// Case-insensitive table lookup, as Kuzu does.
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        // Internal keys are lower case already; events carry the resolved spelling.
        if let Some(e) = self.tables.get(name) {
            return Some(&e.resolved);
        }
        if let Some(key) = self.spellings.get(name) {
            return self.tables.get(key).map(|e| &e.resolved);
        }
        self.tables
            .get(&name.to_ascii_lowercase())
            .map(|e| &e.resolved)
    }

    /// The table's key in lower case (how the engine's store names it), for any spelling,
    /// without allocating when `name` is the key or the resolved spelling.
    pub fn table_key(&self, name: &str) -> Option<&str> {
        if let Some((k, _)) = self.tables.get_key_value(name) {
            return Some(k);
        }
        if let Some(k) = self.spellings.get(name) {
            return Some(k);
        }
        self.tables
            .get_key_value(&name.to_ascii_lowercase())
            .map(|(k, _)| k.as_str())
    }

    pub fn node_table(&self, name: &str) -> Result<&NodeTableDef, EngineError> {
        match self.table(name) {
            Some(TableDef::Node(t)) => Ok(t),
            Some(TableDef::Rel(_)) => Err(EngineError::WrongTableKind {
                table: name.to_string(),
                expected: "node",
            }),
            None => Err(EngineError::UnknownTable(name.to_string())),
        }
    }

    pub fn rel_table(&self, name: &str) -> Result<&RelTableDef, EngineError> {
        match self.table(name) {
            Some(TableDef::Rel(t)) => Ok(t),
            Some(TableDef::Node(_)) => Err(EngineError::WrongTableKind {
                table: name.to_string(),
                expected: "rel",
            }),
            None => Err(EngineError::UnknownTable(name.to_string())),
        }
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.tables.values().map(|e| &e.resolved)
    }

    /// Rel tables that have `node_table` as a FROM or TO table.
    pub fn rel_tables_touching(&self, node_table: &str) -> Vec<String> {
        self.tables()
            .filter_map(|t| match t {
                TableDef::Rel(r)
                    if r.connections.iter().any(|(f, to)| {
                        f.eq_ignore_ascii_case(node_table) || to.eq_ignore_ascii_case(node_table)
                    }) =>
                {
                    Some(r.name.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub fn policy(&self, table: &str, column: &str) -> Policy {
        // Few properties have a policy; every write and every resolved column asks. The
        // keys are lower case, so a case-insensitive scan finds what the lower-cased lookup
        // would, without making two strings.
        if self.policies.len() <= 16 {
            return self
                .policies
                .iter()
                .find(|((t, c), _)| t.eq_ignore_ascii_case(table) && c.eq_ignore_ascii_case(column))
                .map(|(_, (_, p))| *p)
                .unwrap_or_default();
        }
        self.policies
            .get(&(table.to_ascii_lowercase(), column.to_ascii_lowercase()))
            .map(|(_, p)| *p)
            .unwrap_or_default()
    }

    /// The constraint on `table.column` (`column` empty for a rel table's), if any.
    pub fn constraint(&self, table: &str, column: &str) -> Option<&Constraint> {
        self.constraints
            .get(&(table.to_ascii_lowercase(), column.to_ascii_lowercase()))
            .and_then(|(_, c)| c.as_ref())
    }

    /// (table, column, constraint) for every constraint in force, lower-cased names.
    pub fn constraints(&self) -> impl Iterator<Item = (&str, &str, &Constraint)> {
        self.constraints
            .iter()
            .filter_map(|((t, c), (_, k))| k.as_ref().map(|k| (t.as_str(), c.as_str(), k)))
    }

    /// (table, column, policy) for every property with a non-default policy.
    pub fn policies(&self) -> Vec<(String, String, Policy)> {
        self.policies
            .iter()
            .map(|((t, c), (_, p))| (t.clone(), c.clone(), *p))
            .collect()
    }

    /// Every type ever declared for `table.column` by any create or add-column op, resolved
    /// definition first. A received value is accepted if it fits one of them.
    pub fn declared_types(&self, table: &str, column: &str) -> Vec<&DataType> {
        let Some(entry) = self.tables.get(&table.to_ascii_lowercase()) else {
            return Vec::new();
        };
        let mut out: Vec<&DataType> = entry
            .resolved
            .column(column)
            .map(|c| vec![&c.ty])
            .unwrap_or_default();
        for (_, op) in &entry.ops {
            let cols: &[Column] = match op {
                SchemaOp::CreateNodeTable(d) => &d.columns,
                SchemaOp::CreateRelTable(d) => &d.columns,
                SchemaOp::AddColumn { column, .. } => std::slice::from_ref(column),
                SchemaOp::SetPolicy { .. } | SchemaOp::SetConstraint { .. } => &[],
            };
            for c in cols {
                if c.name.eq_ignore_ascii_case(column) && !out.contains(&&c.ty) {
                    out.push(&c.ty);
                }
            }
        }
        out
    }

    /// True if more than one definition was applied for `table` and they differ.
    pub fn has_competing_definitions(&self, table: &str) -> bool {
        self.tables
            .get(&table.to_ascii_lowercase())
            .map(|e| {
                let creates: Vec<_> = e
                    .ops
                    .iter()
                    .filter(|(_, op)| {
                        matches!(
                            op,
                            SchemaOp::CreateNodeTable(_) | SchemaOp::CreateRelTable(_)
                        )
                    })
                    .collect();
                creates.windows(2).any(|w| w[0].1 != w[1].1)
            })
            .unwrap_or(false)
    }

    /// Checks a schema that did not come from this replica's own ops (a snapshot's, which
    /// a peer sent) as its ops would have been checked: every table and column name an
    /// identifier, each table well formed (primary key, connections to node tables), each
    /// entry under its own name, every recorded op and policy naming identifiers and
    /// existing columns. Names from a snapshot become DDL on the graph store.
    pub fn check_received(&self) -> Result<(), EngineError> {
        for (key, entry) in &self.tables {
            let def = &entry.resolved;
            if *key != def.name().to_ascii_lowercase() {
                return Err(EngineError::InvalidSchema {
                    table: def
                        .name()
                        .chars()
                        .take(limits::MAX_IDENTIFIER_LEN)
                        .collect(),
                    reason: "listed under another table's name".into(),
                });
            }
            let create = match def {
                TableDef::Node(t) => SchemaOp::CreateNodeTable(t.clone()),
                TableDef::Rel(t) => SchemaOp::CreateRelTable(t.clone()),
            };
            self.validate_structure(&create)?;
            for (_, op) in &entry.ops {
                match op {
                    SchemaOp::CreateNodeTable(t) => {
                        validate_table_name(&t.name)?;
                        validate_columns(&t.name, &t.columns)?;
                    }
                    SchemaOp::CreateRelTable(t) => {
                        validate_table_name(&t.name)?;
                        validate_columns(&t.name, &t.columns)?;
                    }
                    SchemaOp::AddColumn { table, column } => {
                        validate_table_name(table)?;
                        validate_columns(table, std::slice::from_ref(column))?;
                    }
                    SchemaOp::SetPolicy { table, .. } | SchemaOp::SetConstraint { table, .. } => {
                        validate_table_name(table)?
                    }
                }
            }
        }
        for (spelling, key) in &self.spellings {
            if !self.tables.contains_key(key) || spelling.to_ascii_lowercase() != *key {
                return Err(EngineError::InvalidSchema {
                    table: spelling.chars().take(limits::MAX_IDENTIFIER_LEN).collect(),
                    reason: "a spelling of no table".into(),
                });
            }
        }
        for (table, column) in self.policies.keys() {
            let t = self.table(table).ok_or_else(|| {
                EngineError::UnknownTable(table.chars().take(limits::MAX_IDENTIFIER_LEN).collect())
            })?;
            if t.column(column).is_none() {
                return Err(EngineError::UnknownColumn {
                    table: t.name().to_string(),
                    column: column.chars().take(limits::MAX_IDENTIFIER_LEN).collect(),
                });
            }
        }
        for ((table, column), (_, constraint)) in &self.constraints {
            let op = SchemaOp::SetConstraint {
                table: table.clone(),
                column: column.clone(),
                constraint: constraint.clone(),
            };
            self.validate_structure(&op)?;
        }
        Ok(())
    }

    /// Checks a schema op against this schema, as a local write is checked.
    pub fn validate(&self, op: &SchemaOp) -> Result<(), EngineError> {
        match op {
            SchemaOp::CreateNodeTable(def) if self.table(&def.name).is_some() => {
                Err(EngineError::TableExists(def.name.clone()))
            }
            SchemaOp::CreateRelTable(def) if self.table(&def.name).is_some() => {
                Err(EngineError::TableExists(def.name.clone()))
            }
            _ => self.validate_structure(op),
        }
    }

    /// Checks a schema op's own well-formedness, allowing a create of an existing table name
    /// (a received concurrent create merges, see [`Schema::apply`]).
    pub fn validate_structure(&self, op: &SchemaOp) -> Result<(), EngineError> {
        match op {
            SchemaOp::CreateNodeTable(def) => {
                validate_table_name(&def.name)?;
                validate_columns(&def.name, &def.columns)?;
                let pk = def.key_column().ok_or_else(|| EngineError::InvalidSchema {
                    table: def.name.clone(),
                    reason: format!("primary key {} is not a column", def.primary_key),
                })?;
                if !pk.ty.is_valid_primary_key() {
                    return Err(EngineError::InvalidSchema {
                        table: def.name.clone(),
                        reason: format!("type {} cannot be a primary key", pk.ty),
                    });
                }
                Ok(())
            }
            SchemaOp::CreateRelTable(def) => {
                validate_table_name(&def.name)?;
                validate_columns(&def.name, &def.columns)?;
                if def.connections.is_empty() {
                    return Err(EngineError::InvalidSchema {
                        table: def.name.clone(),
                        reason: "a rel table needs at least one FROM … TO … pair".into(),
                    });
                }
                for (from, to) in &def.connections {
                    self.node_table(from)?;
                    self.node_table(to)?;
                }
                Ok(())
            }
            SchemaOp::AddColumn { table, column } => {
                let t = self
                    .table(table)
                    .ok_or_else(|| EngineError::UnknownTable(table.clone()))?;
                if t.column(&column.name).is_some() {
                    return Err(EngineError::InvalidSchema {
                        table: table.clone(),
                        reason: format!("column {} already exists", column.name),
                    });
                }
                validate_columns(table, std::slice::from_ref(column))
            }
            SchemaOp::SetPolicy {
                table,
                column,
                policy,
            } => {
                let t = self
                    .table(table)
                    .ok_or_else(|| EngineError::UnknownTable(table.clone()))?;
                let c = t.column(column).ok_or_else(|| EngineError::UnknownColumn {
                    table: table.clone(),
                    column: column.clone(),
                })?;
                if *policy == Policy::Counter && !c.ty.is_numeric() {
                    return Err(EngineError::InvalidSchema {
                        table: table.clone(),
                        reason: format!(
                            "column {} has type {}; the counter policy needs a numeric type",
                            column, c.ty
                        ),
                    });
                }
                if let TableDef::Node(n) = t {
                    if n.primary_key.eq_ignore_ascii_case(&c.name) {
                        return Err(EngineError::InvalidSchema {
                            table: table.clone(),
                            reason: format!("{column} is the primary key; it has no policy"),
                        });
                    }
                }
                Ok(())
            }
            SchemaOp::SetConstraint {
                table,
                column,
                constraint,
            } => self.validate_constraint(table, column, constraint.as_ref()),
        }
    }

    fn validate_constraint(
        &self,
        table: &str,
        column: &str,
        constraint: Option<&Constraint>,
    ) -> Result<(), EngineError> {
        let invalid = |reason: String| EngineError::InvalidSchema {
            table: table.chars().take(limits::MAX_IDENTIFIER_LEN).collect(),
            reason,
        };
        let t = self.table(table).ok_or_else(|| {
            EngineError::UnknownTable(table.chars().take(limits::MAX_IDENTIFIER_LEN).collect())
        })?;
        let unknown_column = |c: &str| EngineError::UnknownColumn {
            table: t.name().to_string(),
            column: c.chars().take(limits::MAX_IDENTIFIER_LEN).collect(),
        };
        let Some(constraint) = constraint else {
            if !column.is_empty() && t.column(column).is_none() {
                return Err(unknown_column(column));
            }
            return Ok(());
        };
        match &constraint.owner {
            Owner::Peer(p) => {
                crate::clock::PeerId::new(p.as_str())
                    .map_err(|e| invalid(format!("owner peer: {e}")))?;
            }
            Owner::Column(c) => {
                if constraint.check != Check::Unique && constraint.check != Check::Single {
                    let col = t.column(c).ok_or_else(|| unknown_column(c))?;
                    if col.ty != DataType::String {
                        return Err(invalid(format!(
                            "owner column {c} has type {}; it must be STRING (a peer id)",
                            col.ty
                        )));
                    }
                } else {
                    return Err(invalid(
                        "a unique or single constraint spans entities: its owner must be a peer"
                            .into(),
                    ));
                }
            }
        }
        match (&constraint.check, t) {
            (Check::Single, TableDef::Rel(r)) => {
                if !column.is_empty() {
                    return Err(invalid(format!(
                        "the single constraint is on the rel table, not on column {column}"
                    )));
                }
                if !r.multiplicity.one_per_source() {
                    return Err(invalid(format!(
                        "single needs a MANY_ONE or ONE_ONE table; {} is {}",
                        r.name,
                        r.multiplicity.keyword()
                    )));
                }
                Ok(())
            }
            (Check::Single, TableDef::Node(_)) => Err(invalid(
                "the single constraint is for MANY_ONE and ONE_ONE rel tables".into(),
            )),
            (Check::Min(_) | Check::Unique, TableDef::Node(n)) => {
                let c = t.column(column).ok_or_else(|| unknown_column(column))?;
                if n.primary_key.eq_ignore_ascii_case(&c.name) {
                    return Err(invalid(format!(
                        "{column} is the primary key: unique already, never changed"
                    )));
                }
                if matches!(constraint.check, Check::Min(_)) && !c.ty.is_integer() {
                    return Err(invalid(format!(
                        "column {column} has type {}; a min constraint needs an integer type",
                        c.ty
                    )));
                }
                Ok(())
            }
            (Check::Min(_) | Check::Unique, TableDef::Rel(_)) => Err(invalid(
                "min and unique constraints are for node tables".into(),
            )),
        }
    }

    /// Applies a schema op of an accepted event, stamped by that event. Concurrent DDL merges
    /// deterministically: the ops for a table are sorted by stamp; the earliest create gives
    /// the table's kind, key, multiplicity and first columns; later ops add the columns (and
    /// FROM/TO pairs) that are not there yet. A column's type is that of the earliest op that
    /// declares it. Policies are last-writer-wins by stamp.
    pub fn apply(&mut self, op: &SchemaOp, stamp: &Stamp) -> TableChange {
        let change = match op {
            SchemaOp::SetConstraint {
                table,
                column,
                constraint,
            } => {
                let key = (table.to_ascii_lowercase(), column.to_ascii_lowercase());
                if !matches!(self.constraints.get(&key), Some((s, _)) if s >= stamp) {
                    self.constraints
                        .insert(key, (stamp.clone(), constraint.clone()));
                }
                TableChange::None
            }
            SchemaOp::SetPolicy {
                table,
                column,
                policy,
            } => {
                let key = (table.to_ascii_lowercase(), column.to_ascii_lowercase());
                match self.policies.get(&key) {
                    Some((s, _)) if s >= stamp => TableChange::None,
                    Some((_, p)) if p == policy => {
                        self.policies.insert(key, (stamp.clone(), *policy));
                        TableChange::None
                    }
                    _ => {
                        self.policies.insert(key, (stamp.clone(), *policy));
                        TableChange::PolicyChanged
                    }
                }
            }
            _ => {
                let key = op.table().to_ascii_lowercase();
                match self.tables.get_mut(&key) {
                    None => match resolve(&[(stamp.clone(), op.clone())]) {
                        Some(resolved) => {
                            self.tables.insert(
                                key,
                                TableEntry {
                                    ops: vec![(stamp.clone(), op.clone())],
                                    resolved,
                                },
                            );
                            TableChange::Created
                        }
                        // An add-column for a table no create has reached: causal delivery
                        // rules this out; ignore rather than invent a table.
                        None => TableChange::None,
                    },
                    Some(entry) => {
                        if entry.ops.iter().any(|(s, _)| s == stamp) {
                            return TableChange::None;
                        }
                        let pos = entry.ops.partition_point(|(s, _)| s < stamp);
                        entry.ops.insert(pos, (stamp.clone(), op.clone()));
                        let new = resolve(&entry.ops).expect("entry has a create");
                        let old = std::mem::replace(&mut entry.resolved, new.clone());
                        diff_tables(&old, &new)
                    }
                }
            }
        };
        if change != TableChange::None {
            self.version += 1;
        }
        if let Some(entry) = self.tables.get(&op.table().to_ascii_lowercase()) {
            self.spellings
                .retain(|_, key| *key != op.table().to_ascii_lowercase());
            self.spellings.insert(
                entry.resolved.name().to_string(),
                op.table().to_ascii_lowercase(),
            );
        }
        change
    }
}

/// The resolved definition of one table from its ops, sorted by stamp.
fn resolve(ops: &[(Stamp, SchemaOp)]) -> Option<TableDef> {
    let mut def: Option<TableDef> = None;
    for (_, op) in ops {
        match (op, &mut def) {
            (SchemaOp::CreateNodeTable(n), None) => def = Some(TableDef::Node(n.clone())),
            (SchemaOp::CreateRelTable(r), None) => def = Some(TableDef::Rel(r.clone())),
            (SchemaOp::CreateNodeTable(n), Some(d @ TableDef::Node(_))) => {
                add_missing(d, &n.columns)
            }
            (SchemaOp::CreateRelTable(r), Some(TableDef::Rel(d))) => {
                for c in &r.connections {
                    if !d.connections.contains(c) {
                        d.connections.push(c.clone());
                    }
                }
                let mut td = TableDef::Rel(d.clone());
                add_missing(&mut td, &r.columns);
                if let TableDef::Rel(r2) = td {
                    *d = r2;
                }
            }
            (SchemaOp::AddColumn { column, .. }, Some(d)) => {
                add_missing(d, std::slice::from_ref(column))
            }
            _ => {}
        }
    }
    def
}

fn add_missing(def: &mut TableDef, columns: &[Column]) {
    for c in columns {
        if def.column(&c.name).is_none() {
            def.columns_mut().push(c.clone());
        }
    }
}

fn diff_tables(old: &TableDef, new: &TableDef) -> TableChange {
    if old == new {
        return TableChange::None;
    }
    let prefix_same = match (old, new) {
        (TableDef::Node(o), TableDef::Node(n)) => {
            o.primary_key == n.primary_key && n.columns.starts_with(&o.columns)
        }
        (TableDef::Rel(o), TableDef::Rel(n)) => {
            o.connections == n.connections
                && o.multiplicity == n.multiplicity
                && n.columns.starts_with(&o.columns)
        }
        _ => false,
    };
    if prefix_same {
        TableChange::ColumnsAdded(new.columns()[old.columns().len()..].to_vec())
    } else {
        TableChange::Redefined
    }
}

/// Whether `name` starts with `_ks_` in any case: kuzu-sync's own tables (`_ks_meta`, the
/// JS host's `_ks_log`, the stage tables `_ks_stage_T`) and hidden columns. Kuzu's names are
/// case-insensitive, so `_KS_meta` would be the same table.
pub(crate) fn is_reserved(name: &str) -> bool {
    name.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("_ks_"))
}

/// A table name as a received or local create must spell it (see [`limits::is_identifier`]),
/// and not one of kuzu-sync's own ([`is_reserved`]): a replicated `_ks_meta` would be the
/// replica's watermark table.
pub(crate) fn validate_table_name(name: &str) -> Result<(), EngineError> {
    if limits::is_identifier(name) && is_reserved(name) {
        Err(EngineError::InvalidSchema {
            table: name.to_string(),
            reason: format!("table name {name:?} is reserved (the _ks_ prefix is kuzu-sync's own)"),
        })
    } else if limits::is_identifier(name) {
        Ok(())
    } else {
        Err(EngineError::InvalidSchema {
            table: name.chars().take(limits::MAX_IDENTIFIER_LEN).collect(),
            reason: format!(
                "table name {:?} is not an identifier (a letter or _, then letters, digits \
                 or _, at most {} bytes)",
                name.chars()
                    .take(limits::MAX_IDENTIFIER_LEN)
                    .collect::<String>(),
                limits::MAX_IDENTIFIER_LEN
            ),
        })
    }
}

/// Most levels of nesting in a column type (`INT64[][]` is three).
pub const MAX_TYPE_DEPTH: usize = 16;
/// The longest fixed-size ARRAY a column may declare.
pub const MAX_ARRAY_LEN: u32 = 1 << 16;

/// A column type's field names, nesting, array lengths and decimal precision are within
/// bounds; `column` names it in the error.
fn validate_type(
    table: &str,
    column: &str,
    ty: &DataType,
    depth: usize,
) -> Result<(), EngineError> {
    let bad = |reason: String| EngineError::InvalidSchema {
        table: table.to_string(),
        reason: format!("column {column}: {reason}"),
    };
    if depth > MAX_TYPE_DEPTH {
        return Err(bad(format!(
            "types nest more than {MAX_TYPE_DEPTH} levels deep"
        )));
    }
    match ty {
        DataType::Decimal { precision, scale } => {
            if !(1..=38).contains(precision) || scale > precision {
                return Err(bad(format!(
                    "DECIMAL({precision}, {scale}) is invalid: the precision must be 1-38 and \
                     the scale at most the precision"
                )));
            }
            Ok(())
        }
        DataType::List(inner) => validate_type(table, column, inner, depth + 1),
        DataType::Array(inner, n) => {
            if *n == 0 || *n > MAX_ARRAY_LEN {
                return Err(bad(format!(
                    "an ARRAY of {n} elements (1 to {MAX_ARRAY_LEN} are allowed)"
                )));
            }
            validate_type(table, column, inner, depth + 1)
        }
        DataType::Map(k, v) => {
            validate_type(table, column, k, depth + 1)?;
            validate_type(table, column, v, depth + 1)
        }
        DataType::Struct(fields) | DataType::Union(fields) => {
            if fields.is_empty() {
                return Err(bad("a STRUCT or UNION without fields".into()));
            }
            for (name, inner) in fields {
                if !limits::is_identifier(name) {
                    return Err(bad(format!("field name {name:?} is not an identifier")));
                }
                validate_type(table, column, inner, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Column names are identifiers, not reserved, not repeated; types and defaults are valid.
pub(crate) fn validate_columns(table: &str, columns: &[Column]) -> Result<(), EngineError> {
    let mut seen = std::collections::BTreeSet::new();
    for c in columns {
        if !limits::is_identifier(&c.name) {
            return Err(EngineError::InvalidSchema {
                table: table.to_string(),
                reason: format!(
                    "column name {:?} is not an identifier (a letter or _, then letters, \
                     digits or _, at most {} bytes)",
                    c.name
                        .chars()
                        .take(limits::MAX_IDENTIFIER_LEN)
                        .collect::<String>(),
                    limits::MAX_IDENTIFIER_LEN
                ),
            });
        }
        validate_type(table, &c.name, &c.ty, 1)?;
        if c.name.is_empty() || is_reserved(&c.name) {
            return Err(EngineError::InvalidSchema {
                table: table.to_string(),
                reason: format!(
                    "column name {:?} is empty or reserved (_ks_ prefix)",
                    c.name
                ),
            });
        }
        if !seen.insert(c.name.to_ascii_lowercase()) {
            return Err(EngineError::InvalidSchema {
                table: table.to_string(),
                reason: format!("column {} is declared twice", c.name),
            });
        }
        if let Some(d) = &c.default {
            if !d.conforms_to(&c.ty) {
                return Err(EngineError::InvalidSchema {
                    table: table.to_string(),
                    reason: format!("default {d} of column {} is not a {}", c.name, c.ty),
                });
            }
        }
    }
    Ok(())
}
