//! The node-load model: one window's figures per container and for the node, turned into
//! [`score::LoadInputs`] and smoothed with an EWMA on every collection; scored (with reasons)
//! only when someone asks, because formatting 500 reasons a second would cost more than the
//! whole collection. Pure: time is an argument.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{
    score::{
        resource_loads, score, LoadInputs, LoadScore, Resource, ResourceLoad, ScoreConfig,
        SmoothedLoad,
    },
    WindowLoad,
};

/// Scores of one window: smoothed (what decisions use) and raw (the last window alone).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    pub smoothed: LoadScore,
    pub raw: LoadScore,
}

/// The loads of one subject after a window: raw and smoothed, ready to be scored.
#[derive(Clone, Debug, PartialEq)]
pub struct SubjectLoad {
    pub raw: BTreeMap<Resource, ResourceLoad>,
    pub smoothed: BTreeMap<Resource, ResourceLoad>,
    /// Shown next to the score, never part of it.
    pub throttled_share: Option<f64>,
}

impl SubjectLoad {
    pub fn scored(&self, config: &ScoreConfig) -> Scored {
        Scored {
            smoothed: score(&self.smoothed, self.throttled_share, config),
            raw: score(&self.raw, self.throttled_share, config),
        }
    }
}

/// The loads of the node and of each container (by cgroup id) after a window.
#[derive(Clone, Debug, PartialEq)]
pub struct Scores {
    pub config: ScoreConfig,
    pub node: SubjectLoad,
    pub containers: BTreeMap<u64, SubjectLoad>,
}

/// What the model remembers between windows: one EWMA set per subject.
#[derive(Debug)]
pub struct LoadModel {
    config: ScoreConfig,
    node: SmoothedLoad,
    containers: HashMap<u64, SmoothedLoad>,
}

fn sum(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

impl LoadModel {
    /// `config` must have passed [`ScoreConfig::validate`].
    pub fn new(config: ScoreConfig) -> Self {
        Self {
            node: SmoothedLoad::new(config.half_life_ns),
            containers: HashMap::new(),
            config,
        }
    }

    /// Folds one window in at `now_ns`; containers that are gone are forgotten.
    pub fn update(&mut self, load: &WindowLoad, now_ns: u64) -> Scores {
        let node = smooth(&mut self.node, &node_inputs(load), now_ns);
        self.containers
            .retain(|id, _| load.cpu.cgroups.contains_key(id));
        let mut containers = BTreeMap::new();
        for id in load.cpu.cgroups.keys() {
            let half_life = self.config.half_life_ns;
            let average = self
                .containers
                .entry(*id)
                .or_insert_with(|| SmoothedLoad::new(half_life));
            containers.insert(*id, smooth(average, &container_inputs(load, *id), now_ns));
        }
        Scores {
            config: self.config.clone(),
            node,
            containers,
        }
    }
}

/// Updates one subject's averages with its inputs.
fn smooth(average: &mut SmoothedLoad, inputs: &LoadInputs, now_ns: u64) -> SubjectLoad {
    let raw = resource_loads(inputs);
    average.update(&raw, now_ns);
    SubjectLoad {
        smoothed: average.smoothed(),
        raw,
        throttled_share: inputs.throttled_share,
    }
}

/// The node's inputs: CPUs as capacity, wait per CPU-second over all tasks, memory in use
/// (total minus available) against the total, all sockets' traffic.
fn node_inputs(load: &WindowLoad) -> LoadInputs {
    let cpu = &load.cpu.node;
    let memory = &load.node_memory;
    let network = &load.node_network;
    LoadInputs {
        cores_used: Some(cpu.cores_used),
        cores_allocatable: Some(f64::from(cpu.cpus)),
        runqueue_wait_per_cpu_second: cpu
            .runqueue_wait_per_second
            .filter(|_| cpu.cores_used > 0.0)
            .map(|wait| wait / cpu.cores_used),
        throttled_share: None,
        working_set_bytes: memory.used_bytes.map(|b| b as f64),
        memory_allocatable_bytes: memory.total_bytes.map(|b| b as f64),
        reclaim_stall_per_second: memory.reclaim_stall_per_second,
        network_bytes_per_second: sum(
            network.receive_bytes_per_second,
            network.transmit_bytes_per_second,
        ),
        network_capacity_bytes_per_second: None,
        retransmits_per_second: network.tcp_retransmits_per_second,
        packets_per_second: sum(
            network.receive_packets_per_second,
            network.transmit_packets_per_second,
        ),
    }
}

/// A container's inputs. Its utilisation is against its own limits (CFS quota, memory limit)
/// where it has them, else against the node (cores over the node's CPUs, working set over the
/// node's memory): an unlimited container can use the whole node.
fn container_inputs(load: &WindowLoad, id: u64) -> LoadInputs {
    let cpu = load.cpu.cgroups.get(&id);
    let memory = load.memory.get(&id);
    let network = load.network.get(&id);
    LoadInputs {
        cores_used: cpu.map(|c| c.cores_used),
        cores_allocatable: cpu
            .and_then(|c| c.limit_cores)
            .or(Some(f64::from(load.cpu.node.cpus))),
        runqueue_wait_per_cpu_second: cpu.and_then(|c| c.runqueue_wait_per_cpu_second),
        throttled_share: cpu.and_then(|c| c.throttled_share),
        working_set_bytes: memory.and_then(|m| m.working_set_bytes).map(|b| b as f64),
        memory_allocatable_bytes: memory
            .and_then(|m| m.limit_bytes)
            .or(load.node_memory.total_bytes)
            .map(|b| b as f64),
        reclaim_stall_per_second: memory.and_then(|m| m.reclaim_stall_per_second),
        network_bytes_per_second: network
            .and_then(|n| sum(n.receive_bytes_per_second, n.transmit_bytes_per_second)),
        network_capacity_bytes_per_second: None,
        retransmits_per_second: network.and_then(|n| n.tcp_retransmits_per_second),
        packets_per_second: network
            .and_then(|n| sum(n.receive_packets_per_second, n.transmit_packets_per_second)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{
        fixtures::{ebpf_cpu, snapshot},
        window_load,
    };

    const SECOND: u64 = 1_000_000_000;

    /// Two containers using the same CPU, one waiting 10x longer for it.
    fn window(at: u64) -> WindowLoad {
        let before = snapshot(at, vec![(1, ebpf_cpu(0, 0, 0)), (2, ebpf_cpu(0, 0, 0))]);
        let after = snapshot(
            at + SECOND,
            vec![
                (1, ebpf_cpu(SECOND / 2, SECOND / 20, 10)),
                (2, ebpf_cpu(SECOND / 2, SECOND / 2, 10)),
            ],
        );
        window_load(&before, &after).expect("a window")
    }

    #[test]
    fn contention_ranks_containers_and_explains_the_node() {
        let mut model = LoadModel::new(ScoreConfig::default());
        let scores = model.update(&window(0), SECOND);
        let config = ScoreConfig::default();
        let calm = scores.containers[&1]
            .scored(&config)
            .raw
            .score
            .expect("measured");
        let contended = scores.containers[&2].scored(&config);
        let contended_score = contended.raw.score.expect("measured");
        assert!(contended_score > calm, "{contended_score} > {calm}");
        assert!(contended.raw.reason.contains("cpu"));
        let node = scores.node.scored(&config);
        assert!(node.raw.score.is_some());
        // The first window is all the average knows.
        assert_eq!(node.smoothed, node.raw);
    }

    #[test]
    fn gone_containers_are_forgotten() {
        let mut model = LoadModel::new(ScoreConfig::default());
        model.update(&window(0), SECOND);
        let mut later = window(10 * SECOND);
        later.cpu.cgroups.remove(&2);
        let scores = model.update(&later, 11 * SECOND);
        assert!(!scores.containers.contains_key(&2));
        assert_eq!(model.containers.len(), 1);
    }

    #[test]
    fn containers_are_measured_against_their_own_limits() {
        let mut load = window(0);
        // Both use half a core; container 1 is limited to one core, container 2 is not.
        if let Some(rates) = load.cpu.cgroups.get_mut(&1) {
            rates.limit_cores = Some(1.0);
        }
        let cpus = f64::from(load.cpu.node.cpus);
        let limited = container_inputs(&load, 1);
        let unlimited = container_inputs(&load, 2);
        assert_eq!(limited.cores_allocatable, Some(1.0));
        assert_eq!(unlimited.cores_allocatable, Some(cpus));
        let utilisation = |inputs: &LoadInputs| resource_loads(inputs)[&Resource::Cpu].utilisation;
        assert_eq!(utilisation(&limited), Some(0.5));
        assert_eq!(utilisation(&unlimited), Some(0.5 / cpus));
    }
}
