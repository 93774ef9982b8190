//! The simulated cluster: nodes, the pods of each workload and their lifecycle. An evicted pod is
//! replaced at once by its controller (same replica slot, new uid; a StatefulSet keeps the name),
//! bound by the scheduler model after the reschedule delay, and Ready after the startup delay.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    rng::{name_hash, SplitMix64},
    scenario::{Scenario, Workload, WorkloadKind, GIB, MBIT},
    scheduler::{self, Candidate, PodNeeds},
    SimError,
};
use crate::rebalance::snapshot::{Taint, TaintEffect};

/// The soft taint the executor keeps on nodes the planner is relieving (see
/// [`World::set_soft_tainted`]).
pub const SOFT_TAINT_KEY: &str = "ballast.io/hot";

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub cpu: f64,
    pub memory_bytes: f64,
    pub network_bytes: f64,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Created, waiting to be bound (since this time, in seconds).
    Pending {
        since: u64,
    },
    /// Bound, not Ready before this time.
    Starting {
        ready_at: u64,
    },
    Running,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub uid: u64,
    pub name: String,
    pub workload: usize,
    /// The replica this pod is; its load follows the slot from pod to pod.
    pub slot: u32,
    pub node: Option<usize>,
    pub phase: Phase,
    pub created_at: u64,
    /// The node its predecessor was evicted from.
    pub evicted_from: Option<usize>,
}

impl Pod {
    pub fn ready(&self) -> bool {
        self.phase == Phase::Running
    }
}

/// A replacement pod that has just been bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Landing {
    pub workload: usize,
    pub slot: u32,
    pub node: usize,
    pub evicted_from: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct World {
    pub nodes: Vec<Node>,
    pub workloads: Vec<Workload>,
    /// By uid: creation order.
    pub pods: BTreeMap<u64, Pod>,
    next_uid: u64,
    reschedule_seconds: u64,
    startup_seconds: u64,
    /// Nodes carrying the soft taint.
    soft_tainted: BTreeSet<usize>,
    soft_taint: Taint,
}

/// How long before the run the initial pods started: old enough for any minimum-age rule.
pub const INITIAL_AGE_SECONDS: u64 = 86_400;

impl World {
    /// The cluster at the start of the run: every replica bound and Ready.
    pub fn new(scenario: &Scenario, rng: &mut SplitMix64) -> Result<Self, SimError> {
        let names = scenario.node_names();
        let nodes = scenario
            .nodes
            .iter()
            .flat_map(|group| std::iter::repeat_n(group, group.count as usize))
            .zip(&names)
            .map(|(group, name)| Node {
                name: name.clone(),
                cpu: group.cpu,
                memory_bytes: group.memory_gib * GIB,
                network_bytes: group.network_mbit * MBIT,
                labels: group.labels.clone(),
                taints: group.taints.clone(),
                unschedulable: group.unschedulable,
            })
            .collect();
        let mut world = Self {
            nodes,
            workloads: scenario.workloads.clone(),
            pods: BTreeMap::new(),
            next_uid: 1,
            reschedule_seconds: u64::from(scenario.timing.reschedule_seconds),
            startup_seconds: u64::from(scenario.timing.startup_seconds),
            soft_tainted: BTreeSet::new(),
            soft_taint: Taint {
                key: SOFT_TAINT_KEY.into(),
                value: String::new(),
                effect: TaintEffect::PreferNoSchedule,
            },
        };
        for (index, workload) in scenario.workloads.iter().enumerate() {
            for slot in 0..workload.replicas {
                let uid = world.create(index, slot, 0, None);
                let node = match workload
                    .place_on
                    .get(slot as usize % workload.place_on.len().max(1))
                {
                    Some(name) => names.iter().position(|n| n == name),
                    None => world.schedule(uid, rng),
                }
                .filter(|node| world.fits(uid, *node))
                .ok_or_else(|| SimError::InitialPlacement {
                    workload: workload.name.clone(),
                    slot,
                })?;
                if let Some(pod) = world.pods.get_mut(&uid) {
                    pod.node = Some(node);
                    pod.phase = Phase::Running;
                }
            }
        }
        Ok(world)
    }

    fn create(&mut self, workload: usize, slot: u32, now: u64, evicted_from: Option<usize>) -> u64 {
        let uid = self.next_uid;
        self.next_uid += 1;
        let spec = &self.workloads[workload];
        let name = match spec.kind {
            WorkloadKind::StatefulSet => format!("{}-{slot}", spec.name),
            // A ReplicaSet's pods get a random suffix; the uid keeps it unique and reproducible.
            WorkloadKind::Deployment => format!("{}-{:05x}", spec.name, uid),
        };
        self.pods.insert(
            uid,
            Pod {
                uid,
                name,
                workload,
                slot,
                node: None,
                phase: Phase::Pending { since: now },
                created_at: now,
                evicted_from,
            },
        );
        uid
    }

    /// The (cpu, memory bytes) requested by the pods bound to each node.
    pub fn requested(&self) -> Vec<(f64, f64)> {
        let mut sums = vec![(0.0, 0.0); self.nodes.len()];
        for pod in self.pods.values() {
            if let Some(node) = pod.node {
                let requests = &self.workloads[pod.workload].requests;
                sums[node].0 += requests.cpu;
                sums[node].1 += requests.memory_gib * GIB;
            }
        }
        sums
    }

    /// A node's taints, with the soft taint while it is set.
    pub fn taints(&self, node: usize) -> Vec<Taint> {
        let mut taints = self.nodes[node].taints.clone();
        if self.soft_tainted.contains(&node) {
            taints.push(self.soft_taint.clone());
        }
        taints
    }

    fn needs(&self, uid: u64) -> Option<(PodNeeds<'_>, usize)> {
        let pod = self.pods.get(&uid)?;
        let spec = &self.workloads[pod.workload];
        Some((
            PodNeeds {
                cpu: spec.requests.cpu,
                memory: spec.requests.memory_gib * GIB,
                node_selector: &spec.node_selector,
                tolerations: &spec.tolerations,
            },
            pod.workload,
        ))
    }

    fn candidates<'a>(&'a self, workload: usize, taints: &'a [Vec<Taint>]) -> Vec<Candidate<'a>> {
        let requested = self.requested();
        let mut siblings = vec![0u32; self.nodes.len()];
        for pod in self.pods.values().filter(|p| p.workload == workload) {
            if let Some(node) = pod.node {
                siblings[node] += 1;
            }
        }
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, node)| Candidate {
                cpu: node.cpu,
                memory: node.memory_bytes,
                requested_cpu: requested[i].0,
                requested_memory: requested[i].1,
                labels: &node.labels,
                taints: &taints[i],
                unschedulable: node.unschedulable,
                siblings: siblings[i],
            })
            .collect()
    }

    fn all_taints(&self) -> Vec<Vec<Taint>> {
        (0..self.nodes.len()).map(|i| self.taints(i)).collect()
    }

    fn fits(&self, uid: u64, node: usize) -> bool {
        let Some((needs, workload)) = self.needs(uid) else {
            return false;
        };
        let taints = self.all_taints();
        scheduler::fits(&needs, &self.candidates(workload, &taints)[node])
    }

    fn schedule(&self, uid: u64, rng: &mut SplitMix64) -> Option<usize> {
        let (needs, workload) = self.needs(uid)?;
        let taints = self.all_taints();
        scheduler::place(&needs, &self.candidates(workload, &taints), rng)
    }

    /// Ready replicas of a workload.
    pub fn ready(&self, workload: usize) -> u32 {
        self.pods
            .values()
            .filter(|p| p.workload == workload && p.ready())
            .count() as u32
    }

    /// Evictions the workload's PDB allows right now (`u32::MAX` without a PDB).
    pub fn disruptions_allowed(&self, workload: usize) -> u32 {
        let spec = &self.workloads[workload];
        let ready = self.ready(workload);
        match &spec.pdb {
            None => u32::MAX,
            Some(pdb) => match (pdb.min_available, pdb.max_unavailable) {
                (Some(min), _) => ready.saturating_sub(min),
                (None, Some(max)) => {
                    let unavailable = spec.replicas.saturating_sub(ready);
                    max.saturating_sub(unavailable)
                }
                (None, None) => u32::MAX,
            },
        }
    }

    /// Evicts a bound pod: it is gone and its controller creates the replacement, pending.
    /// Returns the replacement's uid, or `None` when there is no such bound pod.
    pub fn evict(&mut self, uid: u64, now: u64) -> Option<u64> {
        let pod = self.pods.get(&uid).filter(|p| p.node.is_some())?;
        let (workload, slot, node) = (pod.workload, pod.slot, pod.node);
        self.pods.remove(&uid);
        Some(self.create(workload, slot, now, node))
    }

    /// Exactly these nodes carry the soft taint from now on.
    pub fn set_soft_tainted(&mut self, nodes: BTreeSet<usize>) {
        self.soft_tainted = nodes;
    }

    /// Whether a replacement created by an eviction less than `timeout` seconds before `now` is
    /// not Ready yet (older ones no longer block, as in the planner's
    /// `limits.in_flight_timeout_seconds`).
    pub fn in_flight(&self, workload: usize, now: u64, timeout: u64) -> bool {
        self.pods.values().any(|p| {
            p.workload == workload
                && p.evicted_from.is_some()
                && !p.ready()
                && p.created_at.saturating_add(timeout) > now
        })
    }

    /// Moves every pod along its lifecycle up to `now`; returns the pods bound in this step.
    pub fn advance(&mut self, now: u64, rng: &mut SplitMix64) -> Vec<Landing> {
        let mut landings = Vec::new();
        let uids: Vec<u64> = self.pods.keys().copied().collect();
        for uid in uids {
            let Some(pod) = self.pods.get(&uid) else {
                continue;
            };
            match pod.phase {
                Phase::Starting { ready_at } if ready_at <= now => {
                    if let Some(pod) = self.pods.get_mut(&uid) {
                        pod.phase = Phase::Running;
                    }
                }
                Phase::Pending { since } if since + self.reschedule_seconds <= now => {
                    let Some(node) = self.schedule(uid, rng) else {
                        continue;
                    };
                    let startup = self.startup_seconds;
                    if let Some(pod) = self.pods.get_mut(&uid) {
                        pod.node = Some(node);
                        pod.phase = Phase::Starting {
                            ready_at: now + startup,
                        };
                        landings.push(Landing {
                            workload: pod.workload,
                            slot: pod.slot,
                            node,
                            evicted_from: pod.evicted_from,
                        });
                    }
                }
                _ => {}
            }
        }
        landings
    }

    /// A stable noise stream for one replica slot.
    pub fn stream(&self, workload: usize, slot: u32) -> u64 {
        let spec = &self.workloads[workload];
        name_hash(&format!("{}/{}/{slot}", spec.namespace, spec.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::parse;

    const TWO_NODES: &str = r#"
name = "t"
description = "t"
[timing]
tick_seconds = 5
round_seconds = 10
reschedule_seconds = 5
startup_seconds = 10
[[nodes]]
name = "a"
cpu = 6
memory_gib = 8
[[nodes]]
name = "b"
cpu = 4
memory_gib = 8
[[workloads]]
name = "web"
kind = "Deployment"
replicas = 3
requests = { cpu = 1, memory_gib = 1 }
pdb = { min_available = 2 }
place_on = ["a"]
load = {}
[[workloads]]
name = "db"
kind = "StatefulSet"
replicas = 2
requests = { cpu = 1, memory_gib = 1 }
load = {}
"#;

    fn world() -> World {
        let scenario = parse("t", TWO_NODES).expect("valid");
        World::new(&scenario, &mut SplitMix64::new(1)).expect("fits")
    }

    #[test]
    fn initial_pods_are_placed_ready_and_spread() {
        let world = world();
        assert_eq!(world.pods.len(), 5);
        assert!(world.pods.values().all(|p| p.ready()));
        let on_a = world
            .pods
            .values()
            .filter(|p| p.workload == 0 && p.node == Some(0))
            .count();
        assert_eq!(on_a, 3, "place_on pins the rollout");
        let db_nodes: Vec<_> = world
            .pods
            .values()
            .filter(|p| p.workload == 1)
            .map(|p| p.node)
            .collect();
        // b is emptier, then spreading the StatefulSet outweighs it.
        assert_eq!(db_nodes, [Some(1), Some(0)]);
        assert_eq!(world.requested()[0], (4.0, 4.0 * GIB));
    }

    #[test]
    fn eviction_replaces_then_binds_then_readies() {
        let mut world = world();
        let mut rng = SplitMix64::new(2);
        let web = *world.pods.keys().next().expect("a pod");
        assert_eq!(world.disruptions_allowed(0), 1);
        let replacement = world.evict(web, 100).expect("bound");
        assert_eq!(world.disruptions_allowed(0), 0);
        assert!(world.advance(104, &mut rng).is_empty(), "reschedule delay");
        let landings = world.advance(105, &mut rng);
        assert_eq!(landings.len(), 1);
        assert_eq!(landings[0].evicted_from, Some(0));
        assert_eq!(
            world.pods[&replacement].phase,
            Phase::Starting { ready_at: 115 }
        );
        world.advance(115, &mut rng);
        assert!(world.pods[&replacement].ready());
        assert_eq!(world.disruptions_allowed(0), 1);
    }

    #[test]
    fn statefulset_replacements_keep_their_name() {
        let mut world = world();
        let db = *world
            .pods
            .iter()
            .find(|(_, p)| p.workload == 1)
            .expect("db")
            .0;
        let name = world.pods[&db].name.clone();
        let replacement = world.evict(db, 0).expect("bound");
        assert_eq!(world.pods[&replacement].name, name);
        assert_ne!(replacement, db);
        assert_eq!(
            world.evict(replacement, 0),
            None,
            "pending pods cannot be evicted"
        );
    }

    #[test]
    fn soft_taint_steers_the_replacement_away() {
        let mut world = world();
        let mut rng = SplitMix64::new(3);
        world.set_soft_tainted(BTreeSet::from([1]));
        assert_eq!(world.taints(1).len(), 1);
        assert!(world.taints(0).is_empty());
        let db = *world
            .pods
            .iter()
            .find(|(_, p)| p.workload == 1)
            .expect("db")
            .0;
        world.evict(db, 0);
        assert!(world.in_flight(1, 0, 600));
        assert!(!world.in_flight(1, 600, 600), "timed out");
        let landings = world.advance(5, &mut rng);
        assert_eq!(landings[0].node, 0);
        world.set_soft_tainted(BTreeSet::new());
        assert!(world.taints(1).is_empty());
    }

    #[test]
    fn a_replica_that_fits_nowhere_is_an_error() {
        let text = TWO_NODES.replace("replicas = 2", "replicas = 20");
        let scenario = parse("t", &text).expect("valid");
        let error = World::new(&scenario, &mut SplitMix64::new(1)).expect_err("too big");
        assert!(error.to_string().contains("db"), "{error}");
    }
}
