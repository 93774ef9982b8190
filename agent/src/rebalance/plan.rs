//! The planner's output: evictions with their predicted effect and reason, and every node and pod
//! that was considered but not chosen, with a typed reason and a line of text.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use super::{
    directives::Directives,
    policy::Policy,
    snapshot::{ClusterSnapshot, Pod, Timestamp, WorkloadKey},
    state::RebalanceState,
};
use crate::load::score::{Resource, ResourceLoad};

/// Utilisation and pressure of every resource of one node, measured or predicted.
pub type Figures = BTreeMap<Resource, ResourceLoad>;

/// One round's decisions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The `now` the plan was made for.
    pub at: Timestamp,
    /// Planned as usual but not to be executed (policy `dry_run`).
    pub dry_run: bool,
    /// In the order they were chosen.
    pub evictions: Vec<Eviction>,
    /// Pods on source nodes that were considered and not chosen.
    pub skipped_pods: Vec<PodSkip>,
    /// Nodes that are sources, on their way to becoming one, or left out; normal nodes are only
    /// counted in the summary.
    pub nodes: Vec<NodeReport>,
    /// Evictions in flight given up on this round: no Ready replacement within
    /// `limits.in_flight_timeout_seconds`, so their workloads may be moved again.
    #[serde(default)]
    pub expired_in_flight: Vec<ExpiredInFlight>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub nodes: usize,
    pub nodes_with_fresh_load: usize,
    pub sources: usize,
    pub pods_considered: usize,
    pub evictions: usize,
    /// Token-bucket tokens left after this round.
    pub tokens_left: f64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl From<&Pod> for PodRef {
    fn from(pod: &Pod) -> Self {
        Self {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }
    }
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Evict `pod` from `source`; the scheduler then places it, predicted on one of `destinations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Eviction {
    pub pod: PodRef,
    pub workload: WorkloadKey,
    pub source: String,
    /// Nodes it fits on, best first (lowest score); the prediction below assumes the first.
    pub destinations: Vec<Destination>,
    /// The source before this eviction (after the ones chosen before it in this round) and after.
    pub source_before: Figures,
    pub source_after: Figures,
    /// Why this pod, from this node, now.
    pub reason: String,
}

/// An eviction whose replacement never became Ready in time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiredInFlight {
    pub workload: WorkloadKey,
    pub pod: String,
    pub source: String,
    pub evicted_at: Timestamp,
}

/// A node the pod fits on, with its load before and predicted after placement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub node: String,
    /// Weighted load after placement relative to the node's high thresholds: lower is better.
    pub score: f64,
    pub before: Figures,
    pub after: Figures,
}

/// A pod that was considered and not chosen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodSkip {
    pub pod: PodRef,
    pub node: String,
    pub reason: SkipReason,
    pub detail: String,
}

/// Why a pod on a source node was not evicted. Eligibility first, then state, then limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Static pod mirrored by the kubelet: the API server cannot move it.
    Mirror,
    DaemonSet,
    /// No controller would recreate it.
    NoController,
    SystemCritical,
    /// Annotation `ballast.io/evict: "false"`.
    OptedOut,
    /// Not in `namespaces_include`, or in `namespaces_exclude`.
    Namespace,
    LocalStorage,
    ExtendedResources,
    NotReady,
    TooYoung,
    StatefulSetsDisallowed,
    /// A StatefulSet with a pod not Ready: strictly one at a time.
    StatefulSetUnsettled,
    /// The workload's previous eviction has no Ready replacement yet.
    InFlight,
    MinReplicas,
    Cooldown,
    /// Its workload was moved onto this node within the backoff window: moving it off again
    /// would be ping-pong.
    CameBack,
    /// A covering PodDisruptionBudget allows no more disruptions.
    Pdb,
    /// No load measured for the pod: its effect cannot be predicted.
    LoadUnknown,
    /// It uses nothing of the resources the node is hot on.
    NoRelief,
    /// The node already reached its target with earlier evictions this round.
    TargetReached,
    /// The workload already has an eviction this round.
    WorkloadLimit,
    NodeLimit,
    NamespaceLimit,
    RoundLimit,
    /// The token bucket is empty.
    RateLimit,
    /// No node fits it with its predicted load under the destination's thresholds.
    NoDestination,
    /// Its node is being evacuated one pod at a time and another pod goes first.
    EvacuationQueued,
}

/// A node worth reporting: a source, one on its way to becoming one, or one left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub status: NodeStatus,
    /// Resources in the source state (for `Source`) or abnormal this round (for `Abnormal`).
    pub resources: Vec<Resource>,
    /// Set when the node is left out, or is a source that was not brought under its target.
    pub skip: Option<NodeSkip>,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Abnormal for enough consecutive rounds: pods are moved off it.
    Source,
    /// Abnormal this round, not yet for enough rounds.
    Abnormal,
    /// Neither source nor destination this round.
    Excluded,
    /// An alert asks to drain it: its eligible pods move off one at a time, whatever its load.
    Evacuating,
    /// An alert asks to relieve it, but it is at or under its release thresholds (the
    /// hysteresis floor): left alone.
    Alerted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSkip {
    /// No fresh load from its agent: unknown, never read as idle.
    LoadUnknown,
    NotReady,
    /// A source that is already under its release threshold (waiting out the hysteresis).
    UnderTarget,
    /// A source whose hot resource lacks the utilisation figure needed to predict relief.
    LoadIncomplete,
    /// A source still above its target after this round (see the skipped pods).
    TargetNotReached,
    /// The round's eviction limit or the token bucket ran out before this source was reached.
    LimitReached,
    /// A round run for an alert on another node: this source waits for the next scheduled round.
    OffSchedule,
}

/// [`plan_directed`] with no alert active: a scheduled round.
pub fn plan(
    snapshot: &ClusterSnapshot,
    state: &RebalanceState,
    policy: &Policy,
    now: Timestamp,
) -> (Plan, RebalanceState) {
    plan_directed(snapshot, state, policy, now, &Directives::default())
}

/// One planning round: classify the nodes of `snapshot` (with the hysteresis in `state`), choose
/// the evictions that bring sources under their target within `policy`'s limits, and return them
/// with the state for the next round; `directives` adds what active alerts ask for (nodes to
/// relieve now, nodes to drain). Pure and deterministic: equal inputs give equal outputs.
pub fn plan_directed(
    snapshot: &ClusterSnapshot,
    state: &RebalanceState,
    policy: &Policy,
    now: Timestamp,
    directives: &Directives,
) -> (Plan, RebalanceState) {
    super::round::run(snapshot, state, policy, now, directives)
}
