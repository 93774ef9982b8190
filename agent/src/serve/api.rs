//! The `/v1/load` document: node summary and per-container figures of the last window.
//!
//! Versioned by `schema`; fields are only added within a version (added fields have defaults, so
//! older documents still read). Figures that are not measured in the current mode are `null`,
//! never 0. `ballast top` and the leader (`cluster::gather`) read it.

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
    /// Where the figures come from: measured by this agent's collectors, or read from a file
    /// (`--load-from`, for tests and demos: nothing was measured).
    #[serde(default)]
    pub source: LoadSource,
    /// Seconds between the last collection and this answer; the leader leaves a node out when
    /// its load is older than it accepts. In a `--load-from` file it is whatever the file says
    /// (0 when absent), so that tests can serve stale load on purpose.
    #[serde(default)]
    pub age_seconds: f64,
    /// The agent's collection interval, seconds (`null` when read from a file that omits it).
    #[serde(default)]
    pub interval_seconds: Option<f64>,
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadSource {
    #[default]
    Collectors,
    File,
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
    /// Names from the Kubernetes API (cluster mode), where the pod is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// `null` for the pod's own cgroup and the sandbox, which the API does not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
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
    /// `None` until two collections made a window. `now_ns` (monotonic) dates the answer.
    pub fn from_view(state: &AgentState, view: &View, now_ns: u64) -> Option<Self> {
        let load = view.load.as_ref()?;
        let snapshot = view.snapshot.as_ref()?;
        let directory = state.names();
        let mut containers: Vec<ContainerLoad> = load
            .cpu
            .cgroups
            .iter()
            .filter_map(|(id, cpu)| {
                let entry = snapshot.cgroups.get(id)?;
                let labels = super::metrics::identity_labels(&entry.identity);
                let names = directory.names(&entry.identity);
                let mut identity = (*entry.identity).clone();
                if let Some(names) = names.clone() {
                    identity.attach_names(names);
                }
                Some(ContainerLoad {
                    cgroup_id: *id,
                    cgroup: entry.identity.path.clone(),
                    name: identity.short_label(),
                    workload: labels.workload.to_string(),
                    pod_uid: labels.pod_uid.map(str::to_owned),
                    container_id: labels.container_id.map(str::to_owned),
                    namespace: names.as_ref().map(|n| n.namespace.clone()),
                    pod: names.as_ref().map(|n| n.pod.clone()),
                    container: names.and_then(|n| n.container),
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
            source: LoadSource::Collectors,
            age_seconds: now_ns.saturating_sub(snapshot.at_ns) as f64 / 1e9,
            interval_seconds: Some(state.interval_seconds),
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

/// Why a `--load-from` file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum LoadFileError {
    #[error("cannot read the load file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a /v1/load document (schema {LOAD_SCHEMA}, see README): {source}")]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has schema {found:?}; this agent serves {LOAD_SCHEMA}")]
    Schema {
        path: std::path::PathBuf,
        found: String,
    },
    #[error("{path} describes node {found:?}, but this agent runs on {node:?} (NODE_NAME)")]
    Node {
        path: std::path::PathBuf,
        found: String,
        node: String,
    },
}

impl LoadResponse {
    /// The document in `path` (read now), marked as coming from a file. It must name `node`.
    pub fn from_file(path: &std::path::Path, node: &str) -> Result<Self, LoadFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut load: LoadResponse =
            serde_json::from_str(&text).map_err(|source| LoadFileError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if load.schema != LOAD_SCHEMA {
            return Err(LoadFileError::Schema {
                path: path.to_owned(),
                found: load.schema,
            });
        }
        if load.node != node {
            return Err(LoadFileError::Node {
                path: path.to_owned(),
                found: load.node,
                node: node.to_owned(),
            });
        }
        load.source = LoadSource::File;
        Ok(load)
    }
}
