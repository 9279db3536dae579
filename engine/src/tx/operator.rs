//! The operator's way out of doubt: `kuzu-sync tx-resolve` decides a transaction prepared
//! here, logged as the operator's ([`PartRecord::Resolved`]) before it takes effect. A
//! decision that arrives later the other way is a heuristic mismatch (XA's term): the
//! operator's outcome stands, the mismatch is recorded ([`PartRecord::Mismatch`]) and
//! acknowledged, nothing is applied again. ARCHITECTURE.md, "The operator's decision",
//! says why.

use serde::{Deserialize, Serialize};

use super::{Action, Decision, PartAction, PartRecord, PartState, Participant, TxId};
use crate::replica::ReplicaError;

/// An operator's decision on a transaction that was prepared here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDecision {
    pub decision: Decision,
    /// Who ran the command, as the host names them.
    pub by: String,
    pub reason: String,
    /// When, in milliseconds of the host's wall clock.
    pub at: u64,
    /// The first decision received afterwards that contradicts this one.
    pub mismatch: Option<Mismatch>,
}

/// A decision received after an operator's, contradicting it: recorded, not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// What the sender decided.
    pub decision: Decision,
    /// Who sent it: the coordinator, or a participant answering a question in doubt.
    pub from: String,
    /// When it arrived, in milliseconds of the host's wall clock.
    pub at: u64,
}

/// Why an operator's decision was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("transaction {tx} is not known here: it was never prepared on this replica")]
    Unknown { tx: TxId },
    #[error(
        "transaction {tx} is not prepared here: it is already {}{}",
        outcome(*decision),
        if *by_operator { " (by an operator)" } else { "" }
    )]
    Decided {
        tx: TxId,
        decision: Decision,
        by_operator: bool,
    },
    /// The decision was logged, or not, and then a store failed: the participant is as
    /// its records say (a logged commit not applied leaves the transaction prepared).
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

fn outcome(d: Decision) -> &'static str {
    match d {
        Decision::Commit => "committed",
        Decision::Abort => "aborted",
    }
}

impl<O: Clone> Participant<O> {
    /// An operator decides `tx`, which must be prepared here: the record of the
    /// operator's decision, then what a coordinator's decision would do (a commit's
    /// COMMITTED record; an abort's tombstone is the operator's record itself). The locks
    /// are released. Nothing is sent: the coordinator's decision, when it comes, is
    /// acknowledged (see [`Mismatch`]).
    pub fn resolve(
        &mut self,
        tx: &TxId,
        decision: Decision,
        by: String,
        reason: String,
        now: u64,
    ) -> Result<Vec<PartAction<O>>, ResolveError> {
        let ops = match self.txs.get(tx) {
            Some(PartState::Prepared { ops, .. }) => ops.clone(),
            Some(done @ (PartState::Committed | PartState::Aborted)) => {
                return Err(ResolveError::Decided {
                    tx: tx.clone(),
                    decision: if matches!(done, PartState::Committed) {
                        Decision::Commit
                    } else {
                        Decision::Abort
                    },
                    by_operator: self.operator.contains_key(tx),
                });
            }
            None => return Err(ResolveError::Unknown { tx: tx.clone() }),
        };
        self.operator.insert(
            tx.clone(),
            OperatorDecision {
                decision,
                by: by.clone(),
                reason: reason.clone(),
                at: now,
                mismatch: None,
            },
        );
        let mut out = vec![Action::Persist(PartRecord::Resolved {
            tx: tx.clone(),
            decision,
            by,
            reason,
            at: now,
        })];
        match decision {
            Decision::Commit => {
                self.finish(tx.clone(), PartState::Committed);
                out.push(Action::Persist(PartRecord::Committed {
                    tx: tx.clone(),
                    ops,
                }));
            }
            Decision::Abort => self.finish(tx.clone(), PartState::Aborted),
        }
        Ok(out)
    }

    /// The operator's decision on `tx`, if an operator decided it here. While `tx` is
    /// still prepared, the decision was logged and its commit never applied.
    pub fn operator_decision(&self, tx: &TxId) -> Option<&OperatorDecision> {
        self.operator.get(tx)
    }

    /// Every transaction an operator decided here.
    pub fn operator_decisions(&self) -> impl Iterator<Item = (&TxId, &OperatorDecision)> {
        self.operator.iter()
    }

    pub(super) fn recover_resolved(
        &mut self,
        tx: TxId,
        decision: Decision,
        by: String,
        reason: String,
        at: u64,
    ) {
        self.operator.insert(
            tx.clone(),
            OperatorDecision {
                decision,
                by,
                reason,
                at,
                mismatch: None,
            },
        );
        if decision == Decision::Abort {
            self.finish(tx, PartState::Aborted);
        }
    }

    pub(super) fn recover_mismatch(
        &mut self,
        tx: &TxId,
        decision: Decision,
        from: String,
        at: u64,
    ) {
        if let Some(o) = self.operator.get_mut(tx) {
            o.mismatch.get_or_insert(Mismatch { decision, from, at });
        }
    }

    /// `from` decided `tx` the other way after an operator did: the first such decision
    /// is recorded, later ones change nothing.
    pub(super) fn mismatch(
        &mut self,
        tx: &TxId,
        decision: Decision,
        from: &str,
        now: u64,
    ) -> Vec<PartAction<O>> {
        let Some(o) = self.operator.get_mut(tx) else {
            return Vec::new();
        };
        if o.mismatch.is_some() {
            return Vec::new();
        }
        o.mismatch = Some(Mismatch {
            decision,
            from: from.to_owned(),
            at: now,
        });
        vec![Action::Persist(PartRecord::Mismatch {
            tx: tx.clone(),
            decision,
            from: from.to_owned(),
            at: now,
        })]
    }
}
