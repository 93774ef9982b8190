//! Test fixtures for the planner: small builders and a proptest generator of random clusters.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{
    plan::SkipReason,
    snapshot::{
        ClusterSnapshot, LabelSelector, Node, NodeLoad, Owner, Pdb, Pod, PodLoad, Qos, Resources,
        Taint, TaintEffect, Timestamp, Toleration, TolerationOperator,
    },
};
use crate::load::score::ResourceLoad;

pub const GIB: u64 = 1 << 30;

/// The skip reasons of the eligibility rules (the others are about load, limits and
/// destinations).
pub const ELIGIBILITY_REASONS: [SkipReason; 16] = [
    SkipReason::Mirror,
    SkipReason::DaemonSet,
    SkipReason::NoController,
    SkipReason::SystemCritical,
    SkipReason::OptedOut,
    SkipReason::Namespace,
    SkipReason::LocalStorage,
    SkipReason::ExtendedResources,
    SkipReason::NotReady,
    SkipReason::TooYoung,
    SkipReason::StatefulSetsDisallowed,
    SkipReason::StatefulSetUnsettled,
    SkipReason::InFlight,
    SkipReason::MinReplicas,
    SkipReason::Cooldown,
    SkipReason::CameBack,
];

/// A ready node with `cpu_millicores` and `memory_bytes` allocatable.
pub fn node(name: &str, cpu_millicores: u64, memory_bytes: u64) -> Node {
    Node {
        name: name.to_owned(),
        allocatable: Resources {
            cpu_millicores,
            memory_bytes,
            extended: BTreeMap::new(),
        },
        labels: BTreeMap::new(),
        taints: Vec::new(),
        unschedulable: false,
        ready: true,
    }
}

/// A Ready, Burstable Deployment pod started at time 0, requesting 100m and 128 MiB, in
/// namespace `default`, owned by Deployment `name` up to its last `-`.
pub fn pod(name: &str, node: &str) -> Pod {
    let workload = name.rsplit_once('-').map_or(name, |(w, _)| w);
    Pod {
        namespace: "default".to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        node: Some(node.to_owned()),
        owner: Some(Owner {
            kind: "Deployment".to_owned(),
            name: workload.to_owned(),
            pod_management_policy: None,
        }),
        labels: BTreeMap::from([("app".to_owned(), workload.to_owned())]),
        annotations: BTreeMap::new(),
        priority: 0,
        qos: Qos::Burstable,
        requests: Resources {
            cpu_millicores: 100,
            memory_bytes: 128 << 20,
            extended: BTreeMap::new(),
        },
        limits: Resources::default(),
        volumes: Vec::new(),
        tolerations: Vec::new(),
        node_selector: BTreeMap::new(),
        required_affinity: Vec::new(),
        ready: true,
        has_readiness_probe: Some(true),
        start_time: Timestamp(0),
        mirror: false,
    }
}

/// Fresh node load with CPU and memory utilisation and no pressure.
pub fn node_load(cpu: f64, memory: f64) -> NodeLoad {
    NodeLoad {
        cpu: ResourceLoad {
            utilisation: Some(cpu),
            pressure: Some(0.0),
        },
        memory: ResourceLoad {
            utilisation: Some(memory),
            pressure: Some(0.0),
        },
        network: ResourceLoad::default(),
        cpu_throttled_share: None,
        network_capacity_bytes_per_second: None,
        fresh: true,
    }
}

pub fn pod_load(cores: f64, working_set_bytes: f64) -> PodLoad {
    PodLoad {
        cpu_cores: Some(cores),
        working_set_bytes: Some(working_set_bytes),
        ..PodLoad::default()
    }
}

/// A PDB over the pods labelled `app=<app>` in `default`.
pub fn pdb(app: &str, disruptions_allowed: u32) -> Pdb {
    Pdb {
        namespace: "default".to_owned(),
        name: app.to_owned(),
        selector: LabelSelector {
            match_labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            match_expressions: Vec::new(),
        },
        disruptions_allowed,
    }
}

/// Random clusters for the property tests: 2..12 nodes of 4 or 8 cores, some tainted, cordoned
/// or without load; 0..8 pods each from a handful of workloads, some of them ineligible; random
/// utilisation consistent with the pods placed; a few PDBs.
pub fn cluster() -> impl Strategy<Value = ClusterSnapshot> {
    let node_strategy = (
        prop::bool::weighted(0.5),                // 8 cores instead of 4
        prop::bool::weighted(0.15),               // hard taint
        prop::bool::weighted(0.1),                // cordoned
        prop::bool::weighted(0.1),                // no fresh load
        prop::option::weighted(0.5, 0.0..0.6f64), // cpu pressure
        0.0..0.3f64,                              // memory used outside pods
        prop::collection::vec(pod_strategy(), 0..8),
    );
    (
        prop::collection::vec(node_strategy, 2..12),
        prop::collection::vec((0..6u32, 0..3u32), 0..4),
    )
        .prop_map(|(nodes, pdbs)| {
            let mut snapshot = ClusterSnapshot::default();
            for (i, (big, tainted, cordoned, stale, cpu_pressure, base_memory, pods)) in
                nodes.into_iter().enumerate()
            {
                let name = format!("node-{i:02}");
                let cores = if big { 8.0 } else { 4.0 };
                let mut n = node(&name, (cores * 1000.0) as u64, 16 * GIB);
                n.labels.insert("pool".to_owned(), format!("p{}", i % 2));
                if tainted {
                    n.taints.push(Taint {
                        key: "dedicated".to_owned(),
                        value: "batch".to_owned(),
                        effect: TaintEffect::NoSchedule,
                    });
                }
                n.unschedulable = cordoned;
                let mut used_cores = 0.0;
                let mut used_memory = base_memory * (16 * GIB) as f64;
                for (j, generated) in pods.into_iter().enumerate() {
                    let mut p = generated.pod;
                    p.name = format!("w{}-{i}-{j}", generated.workload);
                    p.uid = format!("uid-{i}-{j}");
                    p.node = Some(name.clone());
                    let app = format!("w{}", generated.workload);
                    p.owner = p.owner.map(|o| Owner {
                        name: app.clone(),
                        ..o
                    });
                    p.labels.insert("app".to_owned(), app);
                    used_cores += generated.cores;
                    used_memory += generated.memory;
                    snapshot
                        .pod_loads
                        .insert(p.uid.clone(), pod_load(generated.cores, generated.memory));
                    snapshot.pods.push(p);
                }
                if !stale {
                    let mut load = node_load(used_cores / cores, used_memory / (16 * GIB) as f64);
                    load.cpu.pressure = cpu_pressure;
                    snapshot.node_loads.insert(name.clone(), load);
                }
                snapshot.nodes.push(n);
            }
            for (app, allowed) in pdbs {
                snapshot.pdbs.push(pdb(&format!("w{app}"), allowed));
            }
            snapshot
        })
}

#[derive(Clone, Debug)]
struct GeneratedPod {
    pod: Pod,
    workload: u32,
    cores: f64,
    memory: f64,
}

fn pod_strategy() -> impl Strategy<Value = GeneratedPod> {
    (
        0..6u32, // workload
        prop_oneof![Just("Deployment"), Just("StatefulSet"), Just("DaemonSet")],
        prop::bool::weighted(0.9), // ready
        prop::bool::weighted(0.2), // tolerates the taint
        prop::bool::weighted(0.2), // pinned to pool p0
        0.05..2.5f64,              // cores used
        0.1..4.0f64,               // GiB used
        prop_oneof![
            Just(Qos::BestEffort),
            Just(Qos::Burstable),
            Just(Qos::Guaranteed)
        ],
        0..3i32, // priority
    )
        .prop_map(
            |(workload, kind, ready, tolerant, pinned, cores, gib, qos, priority)| {
                let mut p = pod("x", "x");
                p.owner = Some(Owner {
                    kind: kind.to_owned(),
                    name: String::new(),
                    pod_management_policy: None,
                });
                p.ready = ready;
                p.qos = qos;
                p.priority = priority * 100;
                p.requests.cpu_millicores = (cores * 800.0) as u64;
                p.requests.memory_bytes = (gib * 0.8 * GIB as f64) as u64;
                if tolerant {
                    p.tolerations.push(Toleration {
                        key: Some("dedicated".to_owned()),
                        operator: TolerationOperator::Exists,
                        value: String::new(),
                        effect: None,
                    });
                }
                if pinned {
                    p.node_selector.insert("pool".to_owned(), "p0".to_owned());
                }
                GeneratedPod {
                    pod: p,
                    workload,
                    cores,
                    memory: gib * GIB as f64,
                }
            },
        )
}
