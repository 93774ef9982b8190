//! The `/v1/load` document: node summary and per-container figures of the last window.
//!
//! Versioned by `schema`; fields are only added within a version. Figures that are not measured
//! in the current mode are `null`, never 0. `ballast top` and (later) the leader read it.

use serde::{Deserialize, Serialize};

use crate::{
    collect::sample::Mode,
    load::{
        cpu::{CpuRates, NodeCpuRates},
        memory::{MemoryFigures, NodeMemoryFigures},
        model::Scored,
        network::NetworkFigures,
    },
    state::{AgentState, View},
};

pub const LOAD_SCHEMA: &str = "ballast.io/load/v1";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadResponse {
    pub schema: String,
    pub node: String,
    /// How each signal is measured: "ebpf", "cgroupfs" or "unavailable".
    pub modes: Modes,
    /// Why eBPF is not used, when it is not.
    pub fallback_reason: Option<String>,
    /// Whether run-queue wait excludes time throttled by the container's own quota (`null` when
    /// wait is not measured).
    pub runqueue_wait_excludes_throttling: Option<bool>,
    pub window_seconds: f64,
    pub cpu: NodeCpuRates,
    pub memory: NodeMemoryFigures,
    pub network: NetworkFigures,
    /// The node's load score (smoothed and last window) with the reason for it.
    pub score: Option<Scored>,
    /// Containers (and other cgroups with activity), most CPU-pressured first.
    pub containers: Vec<ContainerLoad>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Modes {
    pub cpu: Mode,
    pub memory: Mode,
    pub network: Mode,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerLoad {
    pub cgroup_id: u64,
    /// Path below the cgroup v2 mount.
    pub cgroup: String,
    /// Short human label: container id, unit name or path.
    pub name: String,
    pub workload: String,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    pub qos: Option<String>,
    pub cpu: CpuRates,
    pub memory: MemoryFigures,
    pub network: NetworkFigures,
    pub score: Option<Scored>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl LoadResponse {
    /// `None` until two collections made a window.
    pub fn from_view(state: &AgentState, view: &View) -> Option<Self> {
        let load = view.load.as_ref()?;
        let snapshot = view.snapshot.as_ref()?;
        let mut containers: Vec<ContainerLoad> = load
            .cpu
            .cgroups
            .iter()
            .filter_map(|(id, cpu)| {
                let entry = snapshot.cgroups.get(id)?;
                let labels = super::metrics::identity_labels(&entry.identity);
                Some(ContainerLoad {
                    cgroup_id: *id,
                    cgroup: entry.identity.path.clone(),
                    name: entry.identity.short_label(),
                    workload: labels.workload.to_string(),
                    pod_uid: labels.pod_uid,
                    container_id: labels.container_id,
                    qos: labels.qos.map(str::to_string),
                    cpu: cpu.clone(),
                    memory: load.memory.get(id).cloned().unwrap_or_default(),
                    network: load.network.get(id).cloned().unwrap_or_default(),
                    score: view
                        .scores
                        .as_ref()
                        .and_then(|s| Some(s.containers.get(id)?.scored(&s.config))),
                })
            })
            .collect();
        containers.sort_by(|a, b| {
            pressure_key(b)
                .total_cmp(&pressure_key(a))
                .then(a.cgroup_id.cmp(&b.cgroup_id))
        });
        Some(Self {
            schema: LOAD_SCHEMA.into(),
            node: state.node_name.clone(),
            modes: Modes {
                cpu: load.cpu.mode,
                memory: load.memory_mode,
                network: load.network_mode,
            },
            fallback_reason: state.fallback_reason.clone(),
            runqueue_wait_excludes_throttling: state.wait_excludes_throttling,
            window_seconds: load.cpu.window_seconds,
            cpu: load.cpu.node.clone(),
            memory: load.node_memory.clone(),
            network: load.node_network.clone(),
            score: view.scores.as_ref().map(|s| s.node.scored(&s.config)),
            containers,
        })
    }
}

/// Sort key "most CPU-pressured first": contention (wait per second) first, then cores used.
pub fn pressure_key(c: &ContainerLoad) -> f64 {
    let contention = c
        .cpu
        .runqueue_wait_per_second
        .or(c.cpu.psi_some_share)
        .unwrap_or(0.0);
    contention * 1000.0 + c.cpu.cores_used
}
