//! The leader's recent rounds, for `/v1/decisions`: each round's plan (evictions with reasons,
//! skipped candidates with reasons), what became of each eviction at the API, the taint
//! changes and the nodes left out, newest first.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Mutex, PoisonError},
};

use serde::Serialize;
use tokio::time::Instant;

use super::{fence::Fence, loads::Exclusion};
use crate::rebalance::{plan::PodRef, Directives, Plan, Timestamp};

/// Why a round ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundTrigger {
    /// The round interval.
    Schedule,
    /// An alert arrived asking to relieve or drain a node: run at once, off the interval.
    Alert,
    /// A node is being drained: its next pod may go before the next scheduled round.
    Evacuation,
}

/// How a round ended (`ballast_rounds_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundResult {
    /// Planned and executed (or, in dry-run, recorded).
    Planned,
    /// Something failed before or while executing; see `error`.
    Failed,
    /// Leadership ended during the round: it stopped at once.
    Fenced,
}

impl RoundResult {
    pub fn as_str(self) -> &'static str {
        match self {
            RoundResult::Planned => "planned",
            RoundResult::Failed => "failed",
            RoundResult::Fenced => "fenced",
        }
    }
}

/// What became of one planned eviction (`ballast_evictions_total{result}`, except `fenced`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictionResult {
    Evicted,
    /// 429: a PodDisruptionBudget allows no disruption now.
    PdbBlocked,
    /// 409: the pod changed (e.g. it was replaced under the same name).
    Conflict,
    /// 404: the pod is gone already.
    NotFound,
    /// Any other error, or no answer in time.
    Failed,
    /// Dry-run: recorded, not sent.
    DryRun,
    /// Not sent: leadership ended before it.
    Fenced,
}

impl EvictionResult {
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionResult::Evicted => "evicted",
            EvictionResult::PdbBlocked => "pdb_blocked",
            EvictionResult::Conflict => "conflict",
            EvictionResult::NotFound => "not_found",
            EvictionResult::Failed => "failed",
            EvictionResult::DryRun => "dry_run",
            EvictionResult::Fenced => "fenced",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExecutedEviction {
    pub pod: PodRef,
    pub source: String,
    /// The hot resource of its source it was chosen for.
    pub resource: String,
    pub result: EvictionResult,
    /// The API's message, or why it was not sent.
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaintChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Nodes whose taint could not be changed, with why.
    pub failed: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExcludedNode {
    pub reason: Exclusion,
    pub detail: String,
}

/// One round as it happened.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundRecord {
    pub at: Timestamp,
    pub leader: String,
    pub term: u64,
    pub trigger: RoundTrigger,
    /// What the alerts firing asked of this round (nodes to relieve, to drain, with the alerts).
    #[serde(skip_serializing_if = "Directives::is_empty")]
    pub alerts: Directives,
    pub dry_run: bool,
    pub result: RoundResult,
    pub error: Option<String>,
    pub duration_seconds: f64,
    /// Nodes left out of both sides of the decision, with why.
    pub excluded_nodes: BTreeMap<String, ExcludedNode>,
    /// Objects the capture could not read.
    pub capture_problems: Vec<String>,
    pub evictions: Vec<ExecutedEviction>,
    pub taints: TaintChanges,
    /// The planner's output: evictions and every skipped candidate, with reasons.
    pub plan: Option<Plan>,
}

/// The `/v1/decisions` document.
#[derive(Clone, Debug, Serialize)]
pub struct DecisionsDocument {
    pub identity: String,
    /// Whether this agent leads now; rounds may be from an earlier leadership.
    pub leading: bool,
    /// Newest first.
    pub rounds: Vec<RoundRecord>,
}

/// The last `capacity` rounds.
#[derive(Debug)]
pub struct DecisionLog {
    identity: String,
    fence: Fence,
    capacity: usize,
    rounds: Mutex<VecDeque<RoundRecord>>,
}

impl DecisionLog {
    pub fn new(identity: String, fence: Fence, capacity: usize) -> Self {
        Self {
            identity,
            fence,
            capacity: capacity.max(1),
            rounds: Mutex::new(VecDeque::new()),
        }
    }

    pub fn record(&self, round: RoundRecord) {
        let mut rounds = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        rounds.push_front(round);
        rounds.truncate(self.capacity);
    }

    pub fn document(&self) -> DecisionsDocument {
        let rounds = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        DecisionsDocument {
            identity: self.identity.clone(),
            leading: self.fence.permit(Instant::now()).is_ok(),
            rounds: rounds.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn round(at: i64) -> RoundRecord {
        RoundRecord {
            at: Timestamp(at),
            leader: "a".into(),
            term: 1,
            trigger: RoundTrigger::Schedule,
            alerts: Directives::default(),
            dry_run: false,
            result: RoundResult::Planned,
            error: None,
            duration_seconds: 0.1,
            excluded_nodes: BTreeMap::new(),
            capture_problems: Vec::new(),
            evictions: Vec::new(),
            taints: TaintChanges::default(),
            plan: None,
        }
    }

    #[test]
    fn keeps_the_newest_rounds_first() {
        let fence = Fence::new(Duration::from_secs(10));
        let log = DecisionLog::new("a".into(), fence.clone(), 3);
        for at in 1..=5 {
            log.record(round(at));
        }
        let doc = log.document();
        let ats: Vec<i64> = doc.rounds.iter().map(|r| r.at.0).collect();
        assert_eq!(ats, [5, 4, 3]);
        assert!(!doc.leading);
        fence.renewed(Instant::now(), Instant::now());
        assert!(log.document().leading);
        let json = serde_json::to_value(log.document()).expect("serialises");
        assert_eq!(json["rounds"][0]["result"], "planned");
    }
}
