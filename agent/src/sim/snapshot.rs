//! What the planner is shown of the simulated cluster each round: the same [`ClusterSnapshot`] a
//! capture from a real cluster would give, with the agents' smoothed loads.

use std::collections::BTreeMap;

use super::{
    cluster::{World, INITIAL_AGE_SECONDS},
    physics::Loads,
    scenario::{WorkloadKind, GIB},
};
use crate::{
    load::score::Resource,
    rebalance::snapshot::{
        ClusterSnapshot, LabelSelector, Node, NodeLoad, Owner, Pdb, Pod, PodLoad, Resources,
        Timestamp,
    },
};

/// Simulated time 0 on the planner's clock (2026-01-01T00:00:00Z).
pub const EPOCH: i64 = 1_767_225_600;

/// The label every replica carries, and its PDB selects.
pub const APP_LABEL: &str = "app";

pub fn timestamp(seconds: u64) -> Timestamp {
    Timestamp(EPOCH + seconds as i64)
}

/// The snapshot's uid for a simulated pod.
pub fn uid(uid: u64) -> String {
    format!("sim-{uid}")
}

/// The simulated pod a snapshot uid names.
pub fn parse_uid(uid: &str) -> Option<u64> {
    uid.strip_prefix("sim-")?.parse().ok()
}

fn millicores(cores: f64) -> u64 {
    (cores * 1000.0).round() as u64
}

fn bytes(gib: f64) -> u64 {
    (gib * GIB).round() as u64
}

/// The cluster as a capture would show it (soft taints included).
pub fn capture(world: &World, loads: &Loads) -> ClusterSnapshot {
    let nodes = world
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| Node {
            name: node.name.clone(),
            allocatable: Resources {
                cpu_millicores: millicores(node.cpu),
                memory_bytes: node.memory_bytes.round() as u64,
                extended: BTreeMap::new(),
            },
            labels: node.labels.clone(),
            taints: world.taints(i),
            unschedulable: node.unschedulable,
            ready: true,
        })
        .collect();
    let node_loads = world
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let load = loads.node(i);
            let of = |r: Resource| load.get(&r).cloned().unwrap_or_default();
            (
                node.name.clone(),
                NodeLoad {
                    cpu: of(Resource::Cpu),
                    memory: of(Resource::Memory),
                    network: of(Resource::Network),
                    cpu_throttled_share: None,
                    network_capacity_bytes_per_second: Some(node.network_bytes),
                    fresh: true,
                },
            )
        })
        .collect();
    let mut pods = Vec::with_capacity(world.pods.len());
    let mut pod_loads = BTreeMap::new();
    for pod in world.pods.values() {
        let spec = &world.workloads[pod.workload];
        let kind = match spec.kind {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        };
        let start = if pod.created_at == 0 {
            timestamp(0).plus_seconds(-(INITIAL_AGE_SECONDS as i64))
        } else {
            timestamp(pod.created_at)
        };
        pods.push(Pod {
            namespace: spec.namespace.clone(),
            name: pod.name.clone(),
            uid: uid(pod.uid),
            node: pod.node.map(|n| world.nodes[n].name.clone()),
            owner: Some(Owner {
                kind: kind.into(),
                name: spec.name.clone(),
                pod_management_policy: None,
            }),
            labels: BTreeMap::from([(APP_LABEL.to_string(), spec.name.clone())]),
            annotations: spec.annotations.clone(),
            priority: spec.priority,
            qos: spec.qos(),
            requests: Resources {
                cpu_millicores: millicores(spec.requests.cpu),
                memory_bytes: bytes(spec.requests.memory_gib),
                extended: BTreeMap::new(),
            },
            limits: Resources {
                cpu_millicores: spec.limits.cpu.map_or(0, millicores),
                memory_bytes: spec.limits.memory_gib.map_or(0, bytes),
                extended: BTreeMap::new(),
            },
            volumes: spec.volumes.clone(),
            tolerations: spec.tolerations.clone(),
            node_selector: spec.node_selector.clone(),
            required_affinity: Vec::new(),
            ready: pod.ready(),
            has_readiness_probe: None,
            start_time: start,
            mirror: false,
        });
        if let (Some(node), Some(load)) = (pod.node, loads.pods.get(&pod.uid)) {
            let node = &world.nodes[node];
            let figures = load.load.smoothed();
            let figure = |r: Resource| figures.get(&r).cloned().unwrap_or_default();
            let (cpu, memory, network) = (
                figure(Resource::Cpu),
                figure(Resource::Memory),
                figure(Resource::Network),
            );
            // The agents report shares of the node; a capture turns them back into amounts.
            pod_loads.insert(
                uid(pod.uid),
                PodLoad {
                    cpu_cores: cpu.utilisation.map(|u| u * node.cpu),
                    cpu_contention: cpu.pressure,
                    cpu_throttled_share: load.throttled_share,
                    working_set_bytes: memory.utilisation.map(|u| u * node.memory_bytes),
                    memory_reclaim: memory.pressure,
                    network_bytes_per_second: network.utilisation.map(|u| u * node.network_bytes),
                    network_retransmit: network.pressure,
                },
            );
        }
    }
    let pdbs = world
        .workloads
        .iter()
        .enumerate()
        .filter(|(_, spec)| spec.pdb.is_some())
        .map(|(i, spec)| Pdb {
            namespace: spec.namespace.clone(),
            name: spec.name.clone(),
            selector: LabelSelector {
                match_labels: BTreeMap::from([(APP_LABEL.to_string(), spec.name.clone())]),
                match_expressions: Vec::new(),
            },
            disruptions_allowed: world.disruptions_allowed(i),
        })
        .collect();
    ClusterSnapshot {
        nodes,
        pods,
        pdbs,
        node_loads,
        pod_loads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{physics, rng::SplitMix64, scenario::parse};

    const SCENARIO: &str = r#"
name = "t"
description = "t"
[[nodes]]
name = "a"
cpu = 4
memory_gib = 8
[[workloads]]
name = "db"
namespace = "data"
kind = "StatefulSet"
replicas = 2
requests = { cpu = 0.5, memory_gib = 1 }
limits = { cpu = 0.5, memory_gib = 1 }
pdb = { max_unavailable = 1 }
load = { cpu = [{ constant = 0.4 }], memory_gib = [{ constant = 0.5 }] }
"#;

    #[test]
    fn the_capture_carries_requests_owners_pdbs_and_loads() {
        let scenario = parse("t", SCENARIO).expect("valid");
        let mut world = World::new(&scenario, &mut SplitMix64::new(0)).expect("fits");
        let mut loads = Loads::new(1, 30);
        physics::tick(&world, &mut loads, 15, 0, 1);
        let first = *world.pods.keys().next().expect("pod");
        world.evict(first, 15);
        let snapshot = capture(&world, &loads);
        assert_eq!(snapshot.nodes[0].allocatable.cpu_millicores, 4000);
        assert_eq!(snapshot.pods.len(), 2);
        let running = &snapshot.pods[0];
        assert_eq!(
            running.owner.as_ref().map(|o| o.kind.as_str()),
            Some("StatefulSet")
        );
        assert_eq!(running.qos, crate::rebalance::snapshot::Qos::Guaranteed);
        assert_eq!(running.requests.cpu_millicores, 500);
        assert!(running.start_time < timestamp(0));
        let pending = &snapshot.pods[1];
        assert_eq!(pending.node, None);
        assert!(!pending.ready);
        assert_eq!(
            pending.name, "db-0",
            "a StatefulSet replacement keeps the name"
        );
        assert_eq!(snapshot.pdbs[0].disruptions_allowed, 0);
        let load = &snapshot.pod_loads[&running.uid];
        assert!((load.cpu_cores.expect("measured") - 0.4).abs() < 1e-9);
        assert!((load.working_set_bytes.expect("measured") - 0.5 * GIB).abs() < 1.0);
        assert!(snapshot.node_loads["a"].fresh);
        assert_eq!(parse_uid(&running.uid), Some(2));
        assert_eq!(parse_uid("other"), None);
    }
}
