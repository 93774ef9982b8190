//! How demand turns into the figures the agents would measure.
//!
//! Each bound pod demands CPU, memory and network from its trace. A Ready replica also takes its
//! share of the replicas that are not Ready (a service's traffic goes to its ready endpoints); a
//! starting one burns half its CPU and serves no traffic. On each node:
//! - CPU: with demand D on C cores, work waits in the run queue. Below saturation the wait per
//!   CPU-second grows steeply with D/C (queueing); above it, (D - C) / C of every CPU-second is
//!   spent waiting, and every pod gets its fair share C / D of its demand. A pod above its own
//!   CPU limit is throttled, which is not contention and does not load the node.
//! - memory: reclaim starts when the working sets fill 80 % of the node and the stall grows
//!   quadratically; at 95 % it reaches the load model's "fully pressured" 5 %.
//! - network: retransmissions per packet rise once traffic passes 70 % of the link.
//!
//! The figures go through [`resource_loads`] and [`SmoothedLoad`], the agents' own load model, so
//! the planner sees exactly what it would see on a real node. The link capacity is given to the
//! model (as a configured capacity would be), so network utilisation is known.

use std::collections::BTreeMap;

use crate::load::score::{
    resource_loads, LoadInputs, Resource, ResourceLoad, ScoreConfig, SmoothedLoad,
};

use super::{
    cluster::{Phase, World},
    scenario::{GIB, MBIT},
};

/// Average bytes per packet, to turn traffic into packet counts.
const BYTES_PER_PACKET: f64 = 1_000.0;

/// Run-queue wait per CPU-second at D = C, from queueing alone.
const CPU_WAIT_AT_SATURATION: f64 = 0.15;
/// Steepness of the queueing wait below saturation (wait ~ (D/C)^k).
const CPU_QUEUEING_EXPONENT: i32 = 8;
const MEMORY_RECLAIM_START: f64 = 0.80;
const MEMORY_RECLAIM_FULL: f64 = 0.95;
/// Stall share at [`MEMORY_RECLAIM_FULL`].
const MEMORY_STALL_FULL: f64 = 0.05;
const NETWORK_LOSS_START: f64 = 0.70;
const NETWORK_BACKGROUND_LOSS: f64 = 0.0002;
const NETWORK_LOSS_AT_LINK_RATE: f64 = 0.01;

pub fn cpu_wait_per_cpu_second(demand_share: f64) -> f64 {
    CPU_WAIT_AT_SATURATION * demand_share.min(1.0).powi(CPU_QUEUEING_EXPONENT)
        + (demand_share - 1.0).max(0.0)
}

pub fn reclaim_stall_per_second(working_set_share: f64) -> f64 {
    let over = (working_set_share - MEMORY_RECLAIM_START).max(0.0)
        / (MEMORY_RECLAIM_FULL - MEMORY_RECLAIM_START);
    (MEMORY_STALL_FULL * over * over).min(1.0)
}

pub fn retransmits_per_packet(link_share: f64) -> f64 {
    let over = (link_share - NETWORK_LOSS_START).max(0.0) / (1.0 - NETWORK_LOSS_START);
    NETWORK_BACKGROUND_LOSS + NETWORK_LOSS_AT_LINK_RATE * over * over
}

/// One pod's demand in one tick (cores, bytes, bytes per second), after its CPU limit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Demand {
    cpu: f64,
    memory: f64,
    network: f64,
    throttled_share: Option<f64>,
}

/// What really happens on a node in one tick: the ground truth the metrics judge by.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeTruth {
    /// Demand over capacity (CPU may exceed 1: that is the contention).
    pub cpu_share: f64,
    pub memory_share: f64,
    /// Pressure per resource divided by the load model's "fully pressured" scale.
    pub pressure: BTreeMap<Resource, f64>,
}

impl NodeTruth {
    /// The node's worst normalised pressure.
    pub fn max_pressure(&self) -> f64 {
        self.pressure.values().copied().fold(0.0, f64::max)
    }

    /// The higher of CPU and memory utilisation (what requests describe).
    pub fn utilisation(&self) -> f64 {
        self.cpu_share.max(self.memory_share)
    }
}

/// The agents' smoothed loads of every node and bound pod, updated tick by tick.
#[derive(Clone, Debug)]
pub struct Loads {
    half_life_ns: u64,
    pub nodes: Vec<SmoothedLoad>,
    /// By pod uid; a pod's history ends with the pod.
    pub pods: BTreeMap<u64, PodLoad>,
}

/// A pod's smoothed load and, as the agents report it beside the score, the last window's share
/// of CFS periods throttled by its own limit (`None` without a CPU limit).
#[derive(Clone, Debug)]
pub struct PodLoad {
    pub load: SmoothedLoad,
    pub throttled_share: Option<f64>,
}

impl Loads {
    pub fn new(nodes: usize, half_life_seconds: u32) -> Self {
        let half_life_ns = u64::from(half_life_seconds) * 1_000_000_000;
        Self {
            half_life_ns,
            nodes: vec![SmoothedLoad::new(half_life_ns); nodes],
            pods: BTreeMap::new(),
        }
    }

    pub fn node(&self, node: usize) -> BTreeMap<Resource, ResourceLoad> {
        self.nodes[node].smoothed()
    }
}

fn demands(world: &World, seconds: u64, seed: u64, tick: u64) -> BTreeMap<u64, (usize, Demand)> {
    let ready: Vec<u32> = (0..world.workloads.len()).map(|w| world.ready(w)).collect();
    let t = seconds as f64;
    world
        .pods
        .values()
        .filter_map(|pod| {
            let node = pod.node?;
            let spec = &world.workloads[pod.workload];
            let stream = world.stream(pod.workload, pod.slot);
            let trace = |trace: &super::trace::Trace| trace.at(t, seed, stream, tick);
            let memory = trace(&spec.load.memory_gib) * GIB;
            let (cpu, network) = match pod.phase {
                Phase::Running => {
                    let share = f64::from(spec.replicas) / f64::from(ready[pod.workload].max(1));
                    (
                        trace(&spec.load.cpu) * share,
                        trace(&spec.load.network_mbit) * MBIT * share,
                    )
                }
                _ => (trace(&spec.load.cpu) * 0.5, 0.0),
            };
            let (cpu, throttled_share) = match spec.limits.cpu {
                Some(limit) if cpu > limit => (limit, Some((cpu - limit) / cpu)),
                Some(_) => (cpu, Some(0.0)),
                None => (cpu, None),
            };
            Some((
                pod.uid,
                (
                    node,
                    Demand {
                        cpu,
                        memory,
                        network,
                        throttled_share,
                    },
                ),
            ))
        })
        .collect()
}

/// Advances the loads by one tick at `seconds`; returns each node's ground truth.
pub fn tick(
    world: &World,
    loads: &mut Loads,
    seconds: u64,
    seed: u64,
    tick: u64,
) -> Vec<NodeTruth> {
    let demands = demands(world, seconds, seed, tick);
    let mut totals = vec![Demand::default(); world.nodes.len()];
    for (node, demand) in demands.values() {
        totals[*node].cpu += demand.cpu;
        totals[*node].memory += demand.memory;
        totals[*node].network += demand.network;
    }
    let now_ns = seconds * 1_000_000_000;
    let scales = ScoreConfig::default();
    let mut truths = Vec::with_capacity(world.nodes.len());
    let mut node_figures = Vec::with_capacity(world.nodes.len());
    for (i, node) in world.nodes.iter().enumerate() {
        let total = totals[i];
        let cpu_share = total.cpu / node.cpu;
        let memory_share = total.memory / node.memory_bytes;
        let network_share = total.network / node.network_bytes;
        let wait = cpu_wait_per_cpu_second(cpu_share);
        let stall = reclaim_stall_per_second(memory_share);
        let loss = retransmits_per_packet(network_share);
        let packets = total.network / BYTES_PER_PACKET;
        let inputs = LoadInputs {
            cores_used: Some(total.cpu.min(node.cpu)),
            cores_allocatable: Some(node.cpu),
            runqueue_wait_per_cpu_second: Some(wait),
            throttled_share: None,
            working_set_bytes: Some(total.memory),
            memory_allocatable_bytes: Some(node.memory_bytes),
            reclaim_stall_per_second: Some(stall),
            network_bytes_per_second: Some(total.network),
            network_capacity_bytes_per_second: Some(node.network_bytes),
            retransmits_per_second: Some(loss * packets),
            packets_per_second: Some(packets),
        };
        loads.nodes[i].update(&resource_loads(&inputs), now_ns);
        truths.push(NodeTruth {
            cpu_share,
            memory_share,
            pressure: BTreeMap::from([
                (Resource::Cpu, wait / scales.cpu.pressure_scale),
                (Resource::Memory, stall / scales.memory.pressure_scale),
                (Resource::Network, loss / scales.network.pressure_scale),
            ]),
        });
        node_figures.push((wait, stall, loss, (node.cpu / total.cpu).min(1.0)));
    }
    loads.pods.retain(|uid, _| demands.contains_key(uid));
    for (uid, (node, demand)) in &demands {
        let (wait, stall, loss, fair_share) = node_figures[*node];
        let capacity = &world.nodes[*node];
        let packets = demand.network / BYTES_PER_PACKET;
        // As the agents see a container: its share of the node (its limit is not known there).
        let inputs = LoadInputs {
            cores_used: Some(demand.cpu * fair_share),
            cores_allocatable: Some(capacity.cpu),
            runqueue_wait_per_cpu_second: Some(wait),
            throttled_share: demand.throttled_share,
            working_set_bytes: Some(demand.memory),
            memory_allocatable_bytes: Some(capacity.memory_bytes),
            reclaim_stall_per_second: Some(stall),
            network_bytes_per_second: Some(demand.network),
            network_capacity_bytes_per_second: Some(capacity.network_bytes),
            retransmits_per_second: Some(loss * packets),
            packets_per_second: Some(packets),
        };
        let half_life_ns = loads.half_life_ns;
        let pod = loads.pods.entry(*uid).or_insert_with(|| PodLoad {
            load: SmoothedLoad::new(half_life_ns),
            throttled_share: None,
        });
        pod.load.update(&resource_loads(&inputs), now_ns);
        pod.throttled_share = demand.throttled_share;
    }
    truths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{rng::SplitMix64, scenario::parse};

    #[test]
    fn pressure_curves_are_flat_then_steep() {
        assert!(cpu_wait_per_cpu_second(0.5) < 0.001);
        assert!((cpu_wait_per_cpu_second(1.0) - 0.15).abs() < 1e-12);
        assert!((cpu_wait_per_cpu_second(1.5) - 0.65).abs() < 1e-12);
        assert_eq!(reclaim_stall_per_second(0.7), 0.0);
        assert!((reclaim_stall_per_second(0.95) - 0.05).abs() < 1e-12);
        assert!(reclaim_stall_per_second(3.0) <= 1.0);
        assert!((retransmits_per_packet(0.5) - NETWORK_BACKGROUND_LOSS).abs() < 1e-12);
        assert!(retransmits_per_packet(1.0) > 0.01);
    }

    const SCENARIO: &str = r#"
name = "t"
description = "t"
[[nodes]]
name = "a"
cpu = 2
memory_gib = 10
[[nodes]]
name = "b"
cpu = 2
memory_gib = 10
[[workloads]]
name = "hog"
kind = "Deployment"
replicas = 2
requests = { cpu = 0.5, memory_gib = 1 }
limits = { cpu = 1.0 }
place_on = ["a"]
load = { cpu = [{ constant = 1.5 }], memory_gib = [{ constant = 4.5 }] }
[[workloads]]
name = "calm"
kind = "Deployment"
replicas = 1
requests = { cpu = 0.5, memory_gib = 1 }
place_on = ["b"]
load = { cpu = [{ constant = 0.5 }], network_mbit = [{ constant = 8000 }] }
"#;

    #[test]
    fn the_model_sees_contention_reclaim_and_loss_where_they_are() {
        let scenario = parse("t", SCENARIO).expect("valid");
        let world = World::new(&scenario, &mut SplitMix64::new(0)).expect("fits");
        let mut loads = Loads::new(2, 30);
        let truths = tick(&world, &mut loads, 15, 0, 1);
        // Two hogs limited to 1 core each on 2 cores: full, no contention beyond queueing.
        assert!((truths[0].cpu_share - 1.0).abs() < 1e-12);
        assert!((truths[0].memory_share - 0.9).abs() < 1e-12);
        assert!(truths[0].pressure[&Resource::Memory] > 0.4);
        assert!(truths[1].pressure[&Resource::Network] > truths[0].pressure[&Resource::Network]);
        let a = loads.node(0);
        assert_eq!(a[&Resource::Cpu].utilisation, Some(1.0));
        assert!(a[&Resource::Memory].pressure.expect("measured") > 0.0);
        assert_eq!(a[&Resource::Network].utilisation, Some(0.0));
        let b = loads.node(1);
        assert!((b[&Resource::Network].utilisation.expect("known link") - 0.8).abs() < 1e-12);
        assert_eq!(loads.pods.len(), 3);
        // Throttling is reported on the pod, never as node pressure.
        let hog = *world.pods.keys().next().expect("pod");
        assert_eq!(
            loads.pods[&hog].load.raw()[&Resource::Cpu].utilisation,
            Some(0.5)
        );
        assert!((loads.pods[&hog].throttled_share.expect("limited") - 1.0 / 3.0).abs() < 1e-12);
    }
}
