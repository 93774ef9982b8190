//! What the planner sees of the cluster in one round: nodes, pods, PDBs and the agents' load.
//!
//! Plain data, serialisable as JSON (the format `ballast plan --snapshot` reads, see README.md
//! beside this file). Names follow the Kubernetes objects they are captured from; only what the
//! planner uses is kept. A load figure that was not measured is `None` (absent in JSON), never 0:
//! a node without fresh load is neither a source nor a destination.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

use crate::load::score::{Resource, ResourceLoad};

/// Seconds since the Unix epoch. The planner never reads a clock: `now` comes in as an argument.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Seconds from `earlier` to `self`; negative when `earlier` is later.
    pub fn seconds_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn plus_seconds(self, seconds: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Everything one planning round looks at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterSnapshot {
    pub nodes: Vec<Node>,
    /// Pods that are not terminated (phase Pending or Running); pending pods have no `node`.
    pub pods: Vec<Pod>,
    #[serde(default)]
    pub pdbs: Vec<Pdb>,
    /// Smoothed load per node name, from that node's agent. A node missing here has unknown load.
    #[serde(default)]
    pub node_loads: BTreeMap<String, NodeLoad>,
    /// Smoothed load per pod uid. A pod missing here has unknown load and is never moved.
    #[serde(default)]
    pub pod_loads: BTreeMap<String, PodLoad>,
}

/// Why a snapshot cannot be planned on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: node {0:?} appears twice in nodes; node names must be unique")]
    DuplicateNode(String),
    #[error("snapshot: pod uid {0:?} appears twice in pods; pod uids must be unique")]
    DuplicatePod(String),
}

impl ClusterSnapshot {
    /// Checks what the planner relies on: unique node names and pod uids.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let mut names = std::collections::HashSet::new();
        if let Some(node) = self.nodes.iter().find(|n| !names.insert(n.name.as_str())) {
            return Err(SnapshotError::DuplicateNode(node.name.clone()));
        }
        let mut uids = std::collections::HashSet::new();
        if let Some(pod) = self.pods.iter().find(|p| !uids.insert(p.uid.as_str())) {
            return Err(SnapshotError::DuplicatePod(pod.uid.clone()));
        }
        Ok(())
    }
}

/// CPU, memory and extended resources, as in a node's allocatable or a pod's requests / limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default)]
    pub cpu_millicores: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    /// Extended resources by name (e.g. `nvidia.com/gpu`), in their own integer unit.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, u64>,
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub allocatable: Resources,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    #[serde(default)]
    pub unschedulable: bool,
    /// The `Ready` condition is `True`.
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: TaintEffect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    /// Soft: the scheduler avoids the node but may use it. Ballast puts it on hot nodes.
    PreferNoSchedule,
    NoExecute,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    /// `None` (empty key) with `Exists` tolerates every taint.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub operator: TolerationOperator,
    #[serde(default)]
    pub value: String,
    /// `None` tolerates every effect.
    #[serde(default)]
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Kubernetes' matching: no key with `Exists` tolerates every taint, no effect every effect.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|effect| effect != taint.effect) {
            return false;
        }
        match (&self.key, self.operator) {
            (None, TolerationOperator::Exists) => true,
            (None, TolerationOperator::Equal) => false,
            (Some(key), TolerationOperator::Exists) => *key == taint.key,
            (Some(key), TolerationOperator::Equal) => {
                *key == taint.key && self.value == taint.value
            }
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// The pod's controlling owner. A capture should resolve a ReplicaSet to its Deployment so that
/// all pods of one Deployment count as one workload across rollouts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Owner {
    /// `Deployment`, `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, `Node` (static pods), ...
    pub kind: String,
    pub name: String,
    /// StatefulSets only: `spec.podManagementPolicy`. `None` when the capture did not say; it is
    /// then unknown, not Kubernetes' default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_management_policy: Option<PodManagementPolicy>,
}

/// How a StatefulSet controller creates and replaces its pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PodManagementPolicy {
    /// One at a time, in ordinal order, each waiting for the previous to be Ready (the default).
    OrderedReady,
    /// All at once, no ordering.
    Parallel,
}

/// Kubernetes QoS class, in eviction order: best effort goes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Qos {
    BestEffort,
    Burstable,
    Guaranteed,
}

/// The kinds of volume the eligibility rules distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum VolumeKind {
    /// Node-local scratch: lost on eviction.
    EmptyDir,
    /// Node-local path: the data stays behind.
    HostPath,
    PersistentVolumeClaim,
    ConfigMap,
    Secret,
    Projected,
    DownwardApi,
    Other,
}

impl VolumeKind {
    /// Data that lives on the node and is lost or left behind when the pod moves.
    pub fn is_local_storage(self) -> bool {
        matches!(self, VolumeKind::EmptyDir | VolumeKind::HostPath)
    }
}

/// One `requiredDuringSchedulingIgnoredDuringExecution` node selector term: its expressions are
/// ANDed, the terms of a pod are ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSelectorTerm {
    #[serde(default)]
    pub match_expressions: Vec<NodeSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSelectorRequirement {
    pub key: String,
    pub operator: NodeSelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// The label, read as an integer, is greater than the single value.
    Gt,
    /// The label, read as an integer, is less than the single value.
    Lt,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`; `None` while pending.
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub owner: Option<Owner>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub priority: i32,
    pub qos: Qos,
    #[serde(default)]
    pub requests: Resources,
    #[serde(default)]
    pub limits: Resources,
    #[serde(default)]
    pub volumes: Vec<VolumeKind>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity terms (ORed); empty means no constraint.
    #[serde(default)]
    pub required_affinity: Vec<NodeSelectorTerm>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Some container declares a readiness probe, so Ready waits for it (`Some(true)`); none does,
    /// so Ready only means the containers started (`Some(false)`). `None` when the capture did not
    /// say: unknown, never assumed either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_readiness_probe: Option<bool>,
    /// `status.startTime`.
    pub start_time: Timestamp,
    /// A mirror pod (static pod managed by the kubelet; `kubernetes.io/config.mirror`).
    #[serde(default)]
    pub mirror: bool,
}

/// A PodDisruptionBudget: which pods it covers and how many may be disrupted now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pdb {
    pub namespace: String,
    pub name: String,
    pub selector: LabelSelector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: u32,
}

/// A label selector; an empty one matches every pod of the namespace (policy/v1 semantics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: LabelSelectorOperator,
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelSelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// A node's smoothed load, as its agent's load model produces it (see `load::score`).
///
/// Pressure units: cpu = run-queue wait per CPU-second (contention only: CFS throttling is never
/// in it), memory = reclaim stall seconds per second, network = retransmits per packet.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    #[serde(default)]
    pub cpu: ResourceLoad,
    #[serde(default)]
    pub memory: ResourceLoad,
    #[serde(default)]
    pub network: ResourceLoad,
    /// Share of CFS periods throttled across the node's containers: shown, never a reason.
    #[serde(default)]
    pub cpu_throttled_share: Option<f64>,
    /// Link or shaped capacity; without it network utilisation cannot be predicted after a move.
    #[serde(default)]
    pub network_capacity_bytes_per_second: Option<f64>,
    /// The agent answered in time this round; stale load is treated as unknown.
    pub fresh: bool,
}

impl NodeLoad {
    pub fn resource(&self, resource: Resource) -> &ResourceLoad {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
            Resource::Network => &self.network,
        }
    }
}

/// A pod's smoothed load (summed over its containers).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PodLoad {
    /// Cores used (1.0 = one full core).
    #[serde(default)]
    pub cpu_cores: Option<f64>,
    /// Run-queue wait per CPU-second: it suffers from neighbours, moving it helps it.
    #[serde(default)]
    pub cpu_contention: Option<f64>,
    /// Share of CFS periods throttled by its own limit: moving it does not help; never a reason.
    #[serde(default)]
    pub cpu_throttled_share: Option<f64>,
    #[serde(default)]
    pub working_set_bytes: Option<f64>,
    /// Reclaim stall seconds per second.
    #[serde(default)]
    pub memory_reclaim: Option<f64>,
    #[serde(default)]
    pub network_bytes_per_second: Option<f64>,
    /// Retransmits per packet.
    #[serde(default)]
    pub network_retransmit: Option<f64>,
}

impl Pod {
    /// The workload the pod belongs to, `None` without a controller.
    pub fn workload(&self) -> Option<WorkloadKey> {
        self.owner
            .as_ref()
            .map(|owner| WorkloadKey::new(&self.namespace, &owner.kind, &owner.name))
    }

    pub fn extended_requests(&self) -> bool {
        self.requests.extended.values().any(|v| *v > 0)
            || self.limits.extended.values().any(|v| *v > 0)
    }
}

/// `namespace/Kind/name`: a string, so that it can key a JSON map in [`super::state`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkloadKey(pub String);

impl WorkloadKey {
    pub fn new(namespace: &str, kind: &str, name: &str) -> Self {
        Self(format!("{namespace}/{kind}/{name}"))
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
