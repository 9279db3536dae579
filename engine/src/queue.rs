//! Coalescing of the offline queue (ARCHITECTURE.md, "Offline queue").
//!
//! The queue is a chain of one replica's own events that no other replica has seen yet, so
//! it may be rewritten before it is first sent: superseded property sets are dropped and
//! runs of increments of one property merge into one. The visible result is unchanged.

use std::collections::HashMap;

use crate::clock::VersionVector;
use crate::event::{Entity, Event, NodeRef, Op};

/// Raw and coalesced sizes of a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoalesceReport {
    pub raw: usize,
    pub coalesced: usize,
}

/// What a write to one property is keyed by: the entity (table lower-cased) and the
/// property (lower-cased).
type Slot = (Entity, String);

fn norm(e: &Entity) -> Entity {
    match e {
        Entity::Node(n) => Entity::Node(NodeRef {
            table: n.table.to_ascii_lowercase(),
            key: n.key.clone(),
        }),
        Entity::Edge(ed) => {
            let mut ed = ed.clone();
            ed.table = ed.table.to_ascii_lowercase();
            ed.from.table = ed.from.table.to_ascii_lowercase();
            ed.to.table = ed.to.table.to_ascii_lowercase();
            Entity::Edge(ed)
        }
    }
}

/// The coalesced ops of a queue, each with the index of the raw event whose hybrid
/// timestamp and causal past it takes (always the last raw op it stands for, so the
/// timestamps stay increasing along the chain).
pub fn coalesce_ops(queue: &[Event]) -> Vec<(Op, usize)> {
    let mut out: Vec<Option<(Op, usize)>> = Vec::with_capacity(queue.len());
    let mut last_set: HashMap<Slot, usize> = HashMap::new();
    let mut last_inc: HashMap<Slot, usize> = HashMap::new();
    let forget = |entity: &Entity, map: &mut HashMap<Slot, usize>| {
        map.retain(|(e, _), _| e != entity);
    };
    // The events of a coordinated transaction (a commit marker and the ops after it) are
    // kept as they are: the marker counts them.
    let mut in_tx = 0u32;
    for (i, e) in queue.iter().enumerate() {
        if in_tx > 0 {
            in_tx -= 1;
            last_set.clear();
            last_inc.clear();
            out.push(Some((e.op.clone(), i)));
            continue;
        }
        match &e.op {
            Op::Tx { ops, .. } => {
                in_tx = *ops;
                last_set.clear();
                last_inc.clear();
                out.push(Some((e.op.clone(), i)));
            }
            Op::Update { entity, prop, .. } => {
                let slot = (norm(entity), prop.to_ascii_lowercase());
                if let Some(j) = last_set.get(&slot) {
                    out[*j] = None;
                }
                last_inc.remove(&slot);
                last_set.insert(slot, out.len());
                out.push(Some((e.op.clone(), i)));
            }
            Op::Increment {
                entity,
                prop,
                delta,
            } => {
                let slot = (norm(entity), prop.to_ascii_lowercase());
                let merged = last_inc.get(&slot).and_then(|&j| match &out[j] {
                    Some((Op::Increment { delta: d0, .. }, _)) => {
                        d0.checked_add(delta).map(|sum| (j, sum))
                    }
                    _ => None,
                });
                let op = match merged {
                    Some((j, sum)) => {
                        out[j] = None;
                        Op::Increment {
                            entity: entity.clone(),
                            prop: prop.clone(),
                            delta: sum,
                        }
                    }
                    None => e.op.clone(),
                };
                last_inc.insert(slot, out.len());
                out.push(Some((op, i)));
            }
            Op::AddNode { table, props } => {
                if let Some((_, key)) = props.first() {
                    let n = Entity::Node(NodeRef {
                        table: table.to_ascii_lowercase(),
                        key: key.clone(),
                    });
                    forget(&n, &mut last_set);
                    forget(&n, &mut last_inc);
                }
                out.push(Some((e.op.clone(), i)));
            }
            Op::AddEdge { edge, .. } | Op::DeleteEdge(edge) => {
                let ed = norm(&Entity::Edge(edge.clone()));
                forget(&ed, &mut last_set);
                forget(&ed, &mut last_inc);
                out.push(Some((e.op.clone(), i)));
            }
            // A node delete also removes edges; schema ops and seals change how everything
            // resolves: barriers for every property.
            Op::DeleteNode(_) | Op::Schema(_) | Op::Seal => {
                last_set.clear();
                last_inc.clear();
                out.push(Some((e.op.clone(), i)));
            }
        }
    }
    out.into_iter().flatten().collect()
}

/// The coalesced events replacing `queue` (own events numbered from `after + 1`).
pub fn coalesce(queue: &[Event], after: u64) -> Vec<Event> {
    coalesce_ops(queue)
        .into_iter()
        .enumerate()
        .map(|(pos, (op, i))| {
            let raw = &queue[i];
            let mut id = raw.id.clone();
            id.counter = after + 1 + pos as u64;
            let mut deps: VersionVector = raw.deps.clone();
            deps.set(id.peer.clone(), after + pos as u64);
            Event {
                id,
                deps,
                hlc: raw.hlc,
                op,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
