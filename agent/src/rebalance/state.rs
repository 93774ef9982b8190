//! What the planner remembers between rounds. Serialisable: the leader persists it in the cluster
//! so that a new leader continues with the same memory. `RebalanceState::default()` is a fresh
//! start (no history, a full token bucket).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::snapshot::{Timestamp, WorkloadKey};
use crate::load::score::Resource;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RebalanceState {
    /// Hysteresis per node name and resource. Nodes that left the cluster are dropped.
    #[serde(default)]
    pub nodes: BTreeMap<String, BTreeMap<Resource, Hysteresis>>,
    /// Cooldowns, backoff and in-flight evictions per workload. Entries with nothing left to
    /// remember are dropped.
    #[serde(default)]
    pub workloads: BTreeMap<WorkloadKey, WorkloadMemory>,
    #[serde(default)]
    pub tokens: TokenBucket,
    /// Rounds planned so far.
    #[serde(default)]
    pub rounds: u64,
}

/// One node resource's place in the hysteresis: counting abnormal rounds while normal, counting
/// normal rounds while a source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hysteresis {
    pub source: bool,
    /// Consecutive abnormal rounds (while not a source).
    pub abnormal_rounds: u32,
    /// Consecutive normal rounds (while a source).
    pub normal_rounds: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadMemory {
    /// No eviction before this.
    #[serde(default)]
    pub cooldown_until: Option<Timestamp>,
    /// Times the workload came back to a hot node (see [`super::limits`]); each doubles the
    /// cooldown. Cleared by a backoff window without one.
    #[serde(default)]
    pub strikes: u32,
    /// The latest strike.
    #[serde(default)]
    pub last_strike: Option<Timestamp>,
    /// The eviction whose replacement is not Ready yet; blocks the next one.
    #[serde(default)]
    pub in_flight: Option<InFlight>,
    /// Where its replacements were seen Ready within the backoff window, oldest first, one
    /// entry per node: being evicted from one of them again is coming back to a hot node.
    #[serde(default)]
    pub arrivals: Vec<Arrival>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub pod_uid: String,
    pub pod_name: String,
    pub source: String,
    pub evicted_at: Timestamp,
}

/// A replacement seen Ready on `node` at `at` (the round that released its eviction).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrival {
    pub node: String,
    pub at: Timestamp,
}

/// Tokens left and when they were last counted. `updated: None` means a full bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    pub tokens: f64,
    pub updated: Option<Timestamp>,
}
