//! The agents' /v1/load documents -> the planner's [`NodeLoad`] and [`PodLoad`]. Pure.
//!
//! A node's load is its smoothed score figures (utilisation and pressure per resource). A pod's
//! load sums its containers (leaf cgroups: the pod's own cgroup is left out, since cgroupfs
//! figures of a parent include its children): cores and working set are the smoothed
//! utilisations turned back into amounts against what each container was measured against (its
//! limit, else the node), contention is the core-weighted mean wait per CPU-second, reclaim
//! stalls add up, network bytes and retransmits per packet come from the last window (there is
//! no capacity to smooth a utilisation against). A figure no container measured stays `None`.
//!
//! A node whose document is missing, unreachable, stale or about another node is left out of
//! `node_loads` altogether, so that the planner treats it as unknown on both sides: neither a
//! source nor a destination.

use std::{collections::BTreeMap, fmt, time::Duration};

use serde::Serialize;

use super::capture::Loads;
use crate::{
    load::score::{Resource, ResourceLoad},
    rebalance::snapshot::{NodeLoad, PodLoad},
    serve::api::{ContainerLoad, LoadResponse},
};

/// Why a node's load was left out this round (`ballast_nodes_excluded{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// Older than accepted.
    Stale,
    /// No agent on the node, or its answer had no load in it (no window yet, wrong node).
    Missing,
    /// The agent did not answer in time, or answered with an error.
    Unreachable,
}

impl Exclusion {
    pub const ALL: [Exclusion; 3] = [Exclusion::Stale, Exclusion::Missing, Exclusion::Unreachable];

    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::Stale => "stale",
            Exclusion::Missing => "missing",
            Exclusion::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What came back from one node's agent.
#[derive(Clone, Debug)]
pub enum Answer {
    Load(Box<LoadResponse>),
    /// No agent runs on the node (none Running with an IP).
    NoAgent,
    /// No answer, or an error status, with what happened.
    Failed(String),
}

/// How old a document may be: `max_age` when given, else three of the sending agent's
/// collection intervals (3 s when it does not say).
pub fn accepted_age(doc: &LoadResponse, max_age: Option<Duration>) -> f64 {
    max_age.map_or_else(
        || 3.0 * doc.interval_seconds.filter(|i| *i > 0.0).unwrap_or(1.0),
        |age| age.as_secs_f64(),
    )
}

/// One node's load and its pods' ([`node_loads`]), or why it is left out.
pub type NodeLoads = Result<(NodeLoad, BTreeMap<String, PodLoad>), (Exclusion, String)>;

/// The loads of the nodes in `answers` (keyed by node name), and why the others were left out.
pub fn assemble(
    answers: BTreeMap<String, NodeLoads>,
) -> (Loads, BTreeMap<String, (Exclusion, String)>) {
    let mut loads = Loads::default();
    let mut excluded = BTreeMap::new();
    for (node, answer) in answers {
        match answer {
            Ok((node_load, pods)) => {
                loads.nodes.insert(node, node_load);
                loads.pods.extend(pods);
            }
            Err(why) => {
                excluded.insert(node, why);
            }
        }
    }
    (loads, excluded)
}

/// What node `node`'s answer says: its load and its pods', or why it is left out.
pub fn node_loads(node: &str, answer: Answer, max_age: Option<Duration>) -> NodeLoads {
    let doc = match answer {
        Answer::Load(doc) => doc,
        Answer::Failed(why) => return Err((Exclusion::Unreachable, why)),
        Answer::NoAgent => {
            return Err((Exclusion::Missing, "no agent is Running on the node".into()))
        }
    };
    if doc.node != node {
        return Err((
            Exclusion::Missing,
            format!("the agent on {node} answered for node {:?}", doc.node),
        ));
    }
    let limit = accepted_age(&doc, max_age);
    if doc.age_seconds.is_nan() || doc.age_seconds > limit {
        return Err((
            Exclusion::Stale,
            format!(
                "load is {:.1} s old; at most {limit:.1} s is accepted",
                doc.age_seconds
            ),
        ));
    }
    let Some(score) = &doc.score else {
        return Err((Exclusion::Missing, "the answer has no node score".into()));
    };
    let figure = |resource: Resource| {
        score
            .smoothed
            .per_resource
            .get(&resource)
            .map(|s| ResourceLoad {
                utilisation: s.utilisation,
                pressure: s.pressure,
            })
            .unwrap_or_default()
    };
    let node_load = NodeLoad {
        cpu: figure(Resource::Cpu),
        memory: figure(Resource::Memory),
        network: figure(Resource::Network),
        cpu_throttled_share: None,
        network_capacity_bytes_per_second: None,
        fresh: true,
    };
    Ok((node_load, pod_loads(&doc)))
}

/// Adds `value` to an optional total; a total exists once any part was measured.
fn add(total: &mut Option<f64>, value: Option<f64>) {
    if let Some(value) = value.filter(|v| v.is_finite() && *v >= 0.0) {
        *total = Some(total.unwrap_or(0.0) + value);
    }
}

fn smoothed(container: &ContainerLoad, resource: Resource) -> ResourceLoad {
    container
        .score
        .as_ref()
        .and_then(|s| s.smoothed.per_resource.get(&resource))
        .map(|s| ResourceLoad {
            utilisation: s.utilisation,
            pressure: s.pressure,
        })
        .unwrap_or_default()
}

#[derive(Default)]
struct PodSums {
    cores: Option<f64>,
    /// Σ contention × cores, and the cores it was weighted by.
    weighted_wait: Option<f64>,
    wait_weight: f64,
    max_wait: Option<f64>,
    throttled: Option<f64>,
    working_set: Option<f64>,
    reclaim: Option<f64>,
    network_bytes: Option<f64>,
    retransmits: Option<f64>,
    packets: Option<f64>,
}

fn pod_loads(doc: &LoadResponse) -> BTreeMap<String, PodLoad> {
    let node_cpus = f64::from(doc.cpu.cpus);
    let node_memory = doc.memory.total_bytes.map(|b| b as f64);
    let mut sums: BTreeMap<&str, PodSums> = BTreeMap::new();
    for container in doc.containers.iter().filter(|c| c.workload == "container") {
        let Some(uid) = container.pod_uid.as_deref() else {
            continue;
        };
        let sum = sums.entry(uid).or_default();
        let cpu = smoothed(container, Resource::Cpu);
        let cpu_capacity = container.cpu.limit_cores.unwrap_or(node_cpus);
        let cores = cpu
            .utilisation
            .map(|u| u * cpu_capacity)
            .or(Some(container.cpu.cores_used));
        add(&mut sum.cores, cores);
        let wait = cpu.pressure.or(container.cpu.runqueue_wait_per_cpu_second);
        if let Some(wait) = wait.filter(|w| w.is_finite() && *w >= 0.0) {
            let weight = cores.unwrap_or(0.0).max(0.0);
            add(&mut sum.weighted_wait, Some(wait * weight));
            sum.wait_weight += weight;
            sum.max_wait = Some(sum.max_wait.map_or(wait, |m| m.max(wait)));
        }
        if let Some(share) = container.cpu.throttled_share {
            sum.throttled = Some(sum.throttled.map_or(share, |m| m.max(share)));
        }
        let memory = smoothed(container, Resource::Memory);
        let memory_capacity = container
            .memory
            .limit_bytes
            .map(|b| b as f64)
            .or(node_memory);
        let working_set = memory
            .utilisation
            .zip(memory_capacity)
            .map(|(u, capacity)| u * capacity)
            .or(container.memory.working_set_bytes.map(|b| b as f64));
        add(&mut sum.working_set, working_set);
        add(
            &mut sum.reclaim,
            memory
                .pressure
                .or(container.memory.reclaim_stall_per_second),
        );
        let network = &container.network;
        add(&mut sum.network_bytes, network.receive_bytes_per_second);
        add(&mut sum.network_bytes, network.transmit_bytes_per_second);
        add(&mut sum.retransmits, network.tcp_retransmits_per_second);
        add(&mut sum.packets, network.receive_packets_per_second);
        add(&mut sum.packets, network.transmit_packets_per_second);
    }
    sums.into_iter()
        .map(|(uid, s)| {
            let contention = match s.weighted_wait {
                Some(weighted) if s.wait_weight > 0.0 => Some(weighted / s.wait_weight),
                _ => s.max_wait,
            };
            let retransmit = match (s.retransmits, s.packets) {
                (Some(0.0), Some(_)) => Some(0.0),
                (Some(r), Some(p)) if p > 0.0 => Some(r / p),
                _ => None,
            };
            (
                uid.to_owned(),
                PodLoad {
                    cpu_cores: s.cores,
                    cpu_contention: contention,
                    cpu_throttled_share: s.throttled,
                    working_set_bytes: s.working_set,
                    memory_reclaim: s.reclaim,
                    network_bytes_per_second: s.network_bytes,
                    network_retransmit: retransmit,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
