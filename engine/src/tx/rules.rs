//! [`TxRules`] for the engine's ops on a replica's state: which locks ops take, who owns
//! what they change, and whether they keep the declared constraints (ARCHITECTURE.md,
//! "Transactions on replicas").

use std::collections::{BTreeMap, BTreeSet};

use super::{Lock, TxRules};
use crate::event::{EdgeRef, Entity, NodeRef, Op};
use crate::schema::{Check, Constraint, Owner, TableDef};
use crate::state::Engine;
use crate::value::Value;

/// The rules of one replica (`me`) on its engine's current state.
#[derive(Debug)]
pub struct EngineRules<'a> {
    pub engine: &'a Engine,
    pub me: &'a str,
}

/// A key a constraint guards, with the constraint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Guarded {
    /// (table, key, column): a `min` property of one node.
    Min(String, String, String),
    /// (table, column, value): a `unique` value.
    Unique(String, String, String),
    /// (rel, "from"/"to", node): a `single` slot.
    Single(String, &'static str, String),
}

impl Guarded {
    fn lock(&self) -> Lock {
        Lock(match self {
            Guarded::Min(t, k, c) => format!("min:{t}/{k}.{c}"),
            Guarded::Unique(t, c, v) => format!("unique:{t}.{c}={v}"),
            Guarded::Single(r, end, n) => format!("single:{r}/{end}={n}"),
        })
    }
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn node_name(n: &NodeRef) -> String {
    format!("{}({})", n.table, n.key)
}

fn as_int(v: &Value) -> Option<i128> {
    Some(match v {
        Value::Int8(x) => (*x).into(),
        Value::Int16(x) => (*x).into(),
        Value::Int32(x) => (*x).into(),
        Value::Int64(x) => (*x).into(),
        Value::Int128(x) => *x,
        Value::UInt8(x) => (*x).into(),
        Value::UInt16(x) => (*x).into(),
        Value::UInt32(x) => (*x).into(),
        Value::UInt64(x) => (*x).into(),
        _ => return None,
    })
}

impl EngineRules<'_> {
    fn constraint(&self, table: &str, column: &str) -> Option<&Constraint> {
        self.engine.schema().constraint(table, column)
    }

    /// The node's property as the ops so far left it, else as the state holds it.
    fn value_after(&self, n: &NodeRef, column: &str, ops: &[&Op]) -> Option<Value> {
        let mut v = self.engine.node_value(n, column);
        for op in ops {
            match op {
                Op::AddNode { table, props } if same_node(table, props, n) => {
                    if let Some((_, x)) = props.iter().find(|(c, _)| c.eq_ignore_ascii_case(column))
                    {
                        v = Some(x.clone());
                    }
                }
                Op::Update {
                    entity: Entity::Node(m),
                    prop,
                    value,
                } if same_ref(m, n) && prop.eq_ignore_ascii_case(column) => v = Some(value.clone()),
                Op::Increment {
                    entity: Entity::Node(m),
                    prop,
                    delta,
                } if same_ref(m, n) && prop.eq_ignore_ascii_case(column) => {
                    let base = v.as_ref().and_then(as_int).unwrap_or(0);
                    let d = as_int(delta).unwrap_or(0);
                    v = Some(Value::Int128(base.saturating_add(d)));
                }
                Op::DeleteNode(m) if same_ref(m, n) => v = None,
                _ => {}
            }
        }
        v
    }

    /// The owner of a guarded key, or why it has none.
    fn owner(&self, c: &Constraint, node: Option<&NodeRef>, ops: &[&Op]) -> Result<String, String> {
        match &c.owner {
            Owner::Peer(p) => Ok(p.clone()),
            Owner::Column(col) => {
                let n = node.expect("column owners are for node constraints");
                match self.value_after(n, col, ops) {
                    Some(Value::String(p)) if !p.is_empty() => Ok(p),
                    _ => Err(format!(
                        "{} has no owner: its {col} property names none",
                        node_name(n)
                    )),
                }
            }
        }
    }

    /// The keys `op` (the `i`-th of `ops`) touches that a constraint guards, each with its
    /// owner.
    fn guarded(&self, ops: &[&Op], i: usize) -> Result<Vec<(Guarded, String)>, String> {
        let op = ops[i];
        let before = &ops[..=i];
        let mut out = Vec::new();
        let mut column = |n: &NodeRef, col: &str, value: Option<&Value>| -> Result<(), String> {
            let Some(c) = self.constraint(&n.table, col) else {
                return Ok(());
            };
            match c.check {
                Check::Min(_) => out.push((
                    Guarded::Min(lower(&n.table), n.key.to_string(), lower(col)),
                    self.owner(c, Some(n), before)?,
                )),
                Check::Unique => {
                    if let Some(v) = value.filter(|v| !v.is_null()) {
                        out.push((
                            Guarded::Unique(lower(&n.table), lower(col), v.to_string()),
                            self.owner(c, Some(n), before)?,
                        ))
                    }
                }
                Check::Single => {}
            }
            Ok(())
        };
        match op {
            Op::AddNode { table, props } => {
                let n = NodeRef {
                    table: table.clone(),
                    key: props.first().map(|(_, v)| v.clone()).unwrap_or(Value::Null),
                };
                for (col, v) in props {
                    column(&n, col, Some(v))?;
                }
            }
            Op::Update {
                entity: Entity::Node(n),
                prop,
                value,
            } => column(n, prop, Some(value))?,
            Op::Increment {
                entity: Entity::Node(n),
                prop,
                ..
            } => column(n, prop, None)?,
            Op::AddEdge { edge, .. } => {
                if let Some(c) = self.constraint(&edge.table, "") {
                    let owner = self.owner(c, None, before)?;
                    out.push((
                        Guarded::Single(lower(&edge.table), "from", node_name(&edge.from)),
                        owner.clone(),
                    ));
                    if let Ok(r) = self.engine.schema().rel_table(&edge.table) {
                        if r.multiplicity.one_per_destination() {
                            out.push((
                                Guarded::Single(lower(&edge.table), "to", node_name(&edge.to)),
                                owner,
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Checks a write made outside any transaction: valid, and every guarded key it
    /// touches owned here and kept within its constraint. Returns the locks it needs, for
    /// the caller to check against the prepared transactions.
    pub fn check_local(&self, ops: &[Op], prepared: &[&[Op]]) -> Result<Vec<Lock>, String> {
        let locks = self.locks(ops)?;
        self.check(ops, prepared)?;
        Ok(locks)
    }
}

fn same_ref(a: &NodeRef, b: &NodeRef) -> bool {
    a.table.eq_ignore_ascii_case(&b.table) && a.key == b.key
}

fn same_node(table: &str, props: &[(String, Value)], n: &NodeRef) -> bool {
    table.eq_ignore_ascii_case(&n.table) && props.first().is_some_and(|(_, k)| *k == n.key)
}

fn edge_lock(e: &EdgeRef) -> Lock {
    Lock(format!(
        "edge:{}/{}->{}/{}",
        lower(&e.table),
        node_name(&e.from),
        node_name(&e.to),
        e.key
    ))
}

impl TxRules<Op> for EngineRules<'_> {
    fn locks(&self, ops: &[Op]) -> Result<Vec<Lock>, String> {
        let refs: Vec<&Op> = ops.iter().collect();
        let mut locks = BTreeSet::new();
        for (i, op) in ops.iter().enumerate() {
            let at = |e: String| format!("op {}: {e}", i + 1);
            match op {
                Op::Schema(_) | Op::Seal | Op::Tx { .. } => {
                    return Err(at(format!(
                        "a transaction holds data ops only, not {}",
                        op.kind()
                    )))
                }
                _ => {}
            }
            self.engine
                .prepare(op.clone(), 0)
                .map_err(|e| at(e.to_string()))?;
            for (key, owner) in self.guarded(&refs, i).map_err(at)? {
                if owner != self.me {
                    return Err(at(format!(
                        "{} is guarded by a constraint and owned by {owner}, not by this replica ({})",
                        key.lock().0,
                        self.me
                    )));
                }
                locks.insert(key.lock());
            }
            match op {
                Op::AddNode { table, props } => {
                    let key = props
                        .first()
                        .map(|(_, v)| v.to_string())
                        .unwrap_or_default();
                    locks.insert(Lock(format!("node:{}({key})", lower(table))));
                }
                Op::DeleteNode(n)
                | Op::Update {
                    entity: Entity::Node(n),
                    ..
                }
                | Op::Increment {
                    entity: Entity::Node(n),
                    ..
                } => {
                    locks.insert(Lock(format!("node:{}({})", lower(&n.table), n.key)));
                }
                Op::AddEdge { edge, .. }
                | Op::DeleteEdge(edge)
                | Op::Update {
                    entity: Entity::Edge(edge),
                    ..
                }
                | Op::Increment {
                    entity: Entity::Edge(edge),
                    ..
                } => {
                    locks.insert(edge_lock(edge));
                }
                Op::Schema(_) | Op::Seal | Op::Tx { .. } => {}
            }
        }
        Ok(locks.into_iter().collect())
    }

    fn check(&self, ops: &[Op], prepared: &[&[Op]]) -> Result<(), String> {
        let refs: Vec<&Op> = ops.iter().collect();
        // What the prepared transactions claim: unique values and single slots (their
        // nodes are locked, so their `min` properties cannot be touched here).
        let mut claimed: BTreeSet<Guarded> = BTreeSet::new();
        for p in prepared {
            let prefs: Vec<&Op> = p.iter().collect();
            for i in 0..prefs.len() {
                for (g, _) in self.guarded(&prefs, i).unwrap_or_default() {
                    if !matches!(g, Guarded::Min(..)) {
                        claimed.insert(g);
                    }
                }
            }
        }
        // Unique values and single slots this transaction claims, by the node or edge
        // claiming them.
        let mut mine: BTreeMap<Guarded, String> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            let at = |e: String| format!("op {}: {e}", i + 1);
            for (g, _) in self.guarded(&refs, i).map_err(at)? {
                match &g {
                    Guarded::Min(..) => {}
                    _ if claimed.contains(&g) => {
                        return Err(at(format!(
                            "{} is claimed by a transaction prepared here",
                            g.lock().0
                        )))
                    }
                    _ => {
                        let by = match op {
                            Op::AddEdge { edge, .. } => edge_lock(edge).0,
                            Op::AddNode { table, props } => format!(
                                "{}({})",
                                table,
                                props
                                    .first()
                                    .map(|(_, v)| v.to_string())
                                    .unwrap_or_default()
                            ),
                            Op::Update { entity, .. } => match entity {
                                Entity::Node(n) => node_name(n),
                                Entity::Edge(e) => edge_lock(e).0,
                            },
                            _ => String::new(),
                        };
                        if let Some(other) = mine.get(&g).filter(|o| **o != by) {
                            return Err(at(format!(
                                "{} is claimed twice in this transaction ({other} and {by})",
                                g.lock().0
                            )));
                        }
                        mine.insert(g, by);
                    }
                }
            }
        }
        // Each guarded key, as the state with the ops applied leaves it.
        for (i, op) in ops.iter().enumerate() {
            let at = |e: String| format!("op {}: {e}", i + 1);
            for (g, _) in self.guarded(&refs, i).map_err(at)? {
                match &g {
                    Guarded::Min(..) => {
                        let (n, col) = match op {
                            Op::AddNode { table, props } => (
                                NodeRef {
                                    table: table.clone(),
                                    key: props[0].1.clone(),
                                },
                                g_column(&g),
                            ),
                            Op::Update {
                                entity: Entity::Node(n),
                                ..
                            }
                            | Op::Increment {
                                entity: Entity::Node(n),
                                ..
                            } => (n.clone(), g_column(&g)),
                            _ => continue,
                        };
                        let Some(Check::Min(bound)) =
                            self.constraint(&n.table, &col).map(|c| c.check.clone())
                        else {
                            continue;
                        };
                        let after = self.value_after(&n, &col, &refs);
                        let v = after.as_ref().and_then(as_int).unwrap_or(0);
                        if v < i128::from(bound) {
                            return Err(format!(
                                "{}.{col} would be {v}, below its minimum {bound}",
                                node_name(&n)
                            ));
                        }
                    }
                    Guarded::Unique(table, col, value) => {
                        let me = match op {
                            Op::AddNode { props, .. } => props[0].1.clone(),
                            Op::Update {
                                entity: Entity::Node(n),
                                ..
                            } => n.key.clone(),
                            _ => continue,
                        };
                        let table_name = self
                            .engine
                            .schema()
                            .table(table)
                            .map(|t| t.name().to_string())
                            .unwrap_or_else(|| table.clone());
                        for other in self.engine.node_keys(&table_name) {
                            if other.key == me {
                                continue;
                            }
                            let holds = self
                                .value_after(&other, col, &refs)
                                .is_some_and(|v| !v.is_null() && v.to_string() == *value);
                            if holds {
                                return Err(format!(
                                    "{table_name}.{col} = {value} is taken by {}",
                                    node_name(&other)
                                ));
                            }
                        }
                    }
                    Guarded::Single(rel, end, node) => {
                        let Op::AddEdge { edge, .. } = op else {
                            continue;
                        };
                        let rel_name = match self.engine.schema().table(rel) {
                            Some(TableDef::Rel(r)) => r.name.clone(),
                            _ => continue,
                        };
                        for other in self.engine.edges(&rel_name) {
                            let same_end = if *end == "from" {
                                same_ref(&other.from, &edge.from)
                            } else {
                                same_ref(&other.to, &edge.to)
                            };
                            let same_edge = same_ref(&other.from, &edge.from)
                                && same_ref(&other.to, &edge.to)
                                && other.key == edge.key;
                            let deleted = ops.iter().any(|o| match o {
                                Op::DeleteEdge(d) => {
                                    same_ref(&d.from, &other.from)
                                        && same_ref(&d.to, &other.to)
                                        && d.key == other.key
                                }
                                Op::DeleteNode(n) => {
                                    same_ref(n, &other.from) || same_ref(n, &other.to)
                                }
                                _ => false,
                            });
                            if same_end && !same_edge && !deleted {
                                return Err(format!(
                                    "{rel_name} allows one edge per {}; {node} already has one ({} -> {})",
                                    if *end == "from" { "source" } else { "target" },
                                    node_name(&other.from),
                                    node_name(&other.to)
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn g_column(g: &Guarded) -> String {
    match g {
        Guarded::Min(_, _, c) | Guarded::Unique(_, c, _) => c.clone(),
        Guarded::Single(..) => String::new(),
    }
}
