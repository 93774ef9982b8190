//! The baseline: the descheduler's LowNodeUtilization strategy, which judges nodes by the
//! *requests* of their pods, not by what they use.
//!
//! A node is underutilised when every resource's requests are below `thresholds`, and
//! overutilised when any is above `target_thresholds` (percent of allocatable). With at least one
//! underutilised node, pods are evicted from overutilised nodes (most requested first) until the
//! node drops below every target, or the room the underutilised nodes have below their targets is
//! used up, or a limit is reached. Candidates are ordered lowest priority first (then smaller
//! QoS class), and pods the descheduler's default evictor would skip are skipped: pods of no
//! controller, local storage, system-critical priority, and pods whose PDB allows no disruption
//! now (the Eviction API would refuse them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{cluster::World, scenario::GIB};
use crate::rebalance::policy::{Limits, SYSTEM_CRITICAL_PRIORITY};

/// Percentages of allocatable, per resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percentages {
    pub cpu: f64,
    pub memory: f64,
}

/// The strategy's parameters. Its eviction limits (the descheduler's maxNoOfPodsToEvictPerNode,
/// ...PerNamespace, ...Total) are the planner policy's, so that both play by the same rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LowNodeUtilization {
    pub thresholds: Percentages,
    pub target_thresholds: Percentages,
}

impl Default for LowNodeUtilization {
    /// The values of the descheduler's documented example.
    fn default() -> Self {
        Self {
            thresholds: Percentages {
                cpu: 20.0,
                memory: 20.0,
            },
            target_thresholds: Percentages {
                cpu: 50.0,
                memory: 50.0,
            },
        }
    }
}

fn within(limit: u32, count: u32) -> bool {
    count < limit
}

impl LowNodeUtilization {
    /// `(field, problem)` for the first bad value.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, low, high) in [
            ("cpu", self.thresholds.cpu, self.target_thresholds.cpu),
            (
                "memory",
                self.thresholds.memory,
                self.target_thresholds.memory,
            ),
        ] {
            if !(0.0..=100.0).contains(&low) || !(0.0..=100.0).contains(&high) {
                return Err((
                    format!("thresholds.{name}"),
                    "must be a percentage between 0 and 100 (and so must target_thresholds)".into(),
                ));
            }
            if low > high {
                return Err((
                    format!("thresholds.{name}"),
                    "must not be above target_thresholds".into(),
                ));
            }
        }
        Ok(())
    }

    /// One descheduling cycle: the uids to evict, in order.
    pub fn round(&self, world: &World, limits: &Limits) -> Vec<u64> {
        let requested: Vec<(f64, f64)> = world
            .requested()
            .iter()
            .zip(&world.nodes)
            .map(|((cpu, memory), node)| {
                (100.0 * cpu / node.cpu, 100.0 * memory / node.memory_bytes)
            })
            .collect();
        let low = &self.thresholds;
        let high = &self.target_thresholds;
        let under: Vec<usize> = (0..world.nodes.len())
            .filter(|i| {
                !world.nodes[*i].unschedulable
                    && requested[*i].0 < low.cpu
                    && requested[*i].1 < low.memory
            })
            .collect();
        let mut over: Vec<usize> = (0..world.nodes.len())
            .filter(|i| requested[*i].0 > high.cpu || requested[*i].1 > high.memory)
            .collect();
        if under.is_empty() || over.is_empty() {
            return Vec::new();
        }
        over.sort_by(|a, b| {
            let sum = |i: usize| requested[i].0 + requested[i].1;
            sum(*b).total_cmp(&sum(*a)).then(a.cmp(b))
        });
        // Room below the targets on the underutilised nodes, in cores and bytes.
        let mut room_cpu: f64 = under
            .iter()
            .map(|i| (high.cpu - requested[*i].0) / 100.0 * world.nodes[*i].cpu)
            .sum();
        let mut room_memory: f64 = under
            .iter()
            .map(|i| (high.memory - requested[*i].1) / 100.0 * world.nodes[*i].memory_bytes)
            .sum();
        let mut allowed: BTreeMap<usize, u32> = BTreeMap::new();
        let mut per_namespace: BTreeMap<&str, u32> = BTreeMap::new();
        let mut evictions = Vec::new();
        for node in over {
            let capacity = &world.nodes[node];
            let (mut cpu, mut memory) = (
                requested[node].0 / 100.0 * capacity.cpu,
                requested[node].1 / 100.0 * capacity.memory_bytes,
            );
            let mut candidates: Vec<_> = world
                .pods
                .values()
                .filter(|p| p.node == Some(node))
                .filter(|p| {
                    let spec = &world.workloads[p.workload];
                    spec.priority < SYSTEM_CRITICAL_PRIORITY
                        && !spec.volumes.iter().any(|v| v.is_local_storage())
                })
                .collect();
            candidates.sort_by_key(|p| {
                let spec = &world.workloads[p.workload];
                // BestEffort before Burstable before Guaranteed, as the descheduler sorts.
                (spec.priority, spec.qos(), p.uid)
            });
            let mut from_node = 0;
            for pod in candidates {
                let still_over = 100.0 * cpu / capacity.cpu > high.cpu
                    || 100.0 * memory / capacity.memory_bytes > high.memory;
                if !still_over || room_cpu <= 0.0 || room_memory <= 0.0 {
                    break;
                }
                let spec = &world.workloads[pod.workload];
                if !within(limits.per_round, evictions.len() as u32)
                    || !within(limits.per_node, from_node)
                {
                    break;
                }
                let namespace_count = per_namespace.entry(&spec.namespace).or_insert(0);
                if !within(limits.per_namespace, *namespace_count) {
                    continue;
                }
                let budget = allowed
                    .entry(pod.workload)
                    .or_insert_with(|| world.disruptions_allowed(pod.workload));
                if *budget == 0 {
                    continue;
                }
                *budget -= 1;
                *namespace_count += 1;
                from_node += 1;
                let (pod_cpu, pod_memory) = (spec.requests.cpu, spec.requests.memory_gib * GIB);
                cpu -= pod_cpu;
                memory -= pod_memory;
                room_cpu -= pod_cpu;
                room_memory -= pod_memory;
                evictions.push(pod.uid);
            }
        }
        evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{rng::SplitMix64, scenario::parse};

    /// a: 6 of 8 cores requested (75 %), b and c idle; b is only underutilised by requests.
    fn scenario(extra: &str) -> String {
        format!(
            r#"
name = "t"
description = "t"
{extra}
[[nodes]]
name = "a"
cpu = 8
memory_gib = 32
[[nodes]]
name = "b"
cpu = 8
memory_gib = 32
[[workloads]]
name = "web"
kind = "Deployment"
replicas = 6
requests = {{ cpu = 1, memory_gib = 1 }}
place_on = ["a"]
load = {{}}
[[workloads]]
name = "batch"
kind = "Deployment"
replicas = 1
priority = -10
requests = {{ cpu = 0.5, memory_gib = 1 }}
place_on = ["a"]
load = {{}}
"#
        )
    }

    fn round_with(extra: &str, limits: &Limits) -> (World, Vec<u64>) {
        let scenario = parse("t", &scenario(extra)).expect("valid");
        let world = World::new(&scenario, &mut SplitMix64::new(0)).expect("fits");
        let evictions = scenario.baseline.round(&world, limits);
        (world, evictions)
    }

    fn round(extra: &str) -> (World, Vec<u64>) {
        round_with(extra, &Limits::default())
    }

    #[test]
    fn evicts_by_requests_down_to_the_target_lowest_priority_first() {
        let generous = Limits {
            per_node: 10,
            ..Limits::default()
        };
        let (world, evictions) = round_with("", &generous);
        // a requests 6.5 of 8 cores (81 %): evict until at most 50 % (4 cores) = 3 pods.
        assert_eq!(evictions.len(), 3, "{evictions:?}");
        assert_eq!(
            world.pods[&evictions[0]].workload, 1,
            "lowest priority first"
        );
    }

    #[test]
    fn limits_and_pdbs_cap_the_evictions() {
        let per_node = Limits {
            per_node: 1,
            ..Limits::default()
        };
        assert_eq!(round_with("", &per_node).1.len(), 1);
        let per_round = Limits {
            per_round: 2,
            per_node: 10,
            ..Limits::default()
        };
        assert_eq!(round_with("", &per_round).1.len(), 2);
        let text = scenario("").replace(
            "replicas = 6",
            "replicas = 6\npdb = { max_unavailable = 1 }",
        );
        let scenario = parse("t", &text).expect("valid");
        let world = World::new(&scenario, &mut SplitMix64::new(0)).expect("fits");
        let generous = Limits {
            per_node: 10,
            ..Limits::default()
        };
        let evictions = scenario.baseline.round(&world, &generous);
        assert_eq!(evictions.len(), 2, "batch, then one web");
    }

    #[test]
    fn nothing_moves_without_an_underutilised_node() {
        let (_, evictions) = round(
            "[baseline]\nthresholds = { cpu = 0, memory = 0 }\ntarget_thresholds = { cpu = 50, memory = 50 }",
        );
        assert!(evictions.is_empty());
    }

    #[test]
    fn thresholds_are_checked() {
        let text = scenario("[baseline]\nthresholds = { cpu = 60, memory = 20 }");
        let error = parse("t", &text).expect_err("low above high").to_string();
        assert!(error.contains("`baseline.thresholds.cpu`"), "{error}");
    }
}
