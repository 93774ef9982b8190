//! A model of kube-scheduler's default profile, reduced to what decides placement here.
//!
//! Filter: the node is schedulable, its NoSchedule/NoExecute taints are tolerated, the pod's
//! nodeSelector matches, and the pod's *requests* fit in what the node's pods have not already
//! requested. Score (weights as in the default profile): least allocated requests (1), balanced
//! allocation of requests (1), intolerable PreferNoSchedule taints (3), spreading replicas of one
//! workload (2). Real usage plays no part, which is why real load drifts away from balance.
//! Equal best scores are broken at random, as kube-scheduler does.

use std::collections::BTreeMap;

use super::rng::SplitMix64;
use crate::rebalance::snapshot::{Taint, TaintEffect, Toleration};

/// What the scheduler needs to know about a node.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub cpu: f64,
    pub memory: f64,
    pub requested_cpu: f64,
    pub requested_memory: f64,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    pub unschedulable: bool,
    /// Replicas of the pod's own workload already on the node.
    pub siblings: u32,
}

/// What the scheduler needs to know about the pod.
#[derive(Clone, Copy, Debug)]
pub struct PodNeeds<'a> {
    pub cpu: f64,
    pub memory: f64,
    pub node_selector: &'a BTreeMap<String, String>,
    pub tolerations: &'a [Toleration],
}

const LEAST_ALLOCATED_WEIGHT: f64 = 1.0;
const BALANCED_WEIGHT: f64 = 1.0;
const TAINT_WEIGHT: f64 = 3.0;
const SPREAD_WEIGHT: f64 = 2.0;

/// Allows for floating-point sums of requests that fit exactly.
const FIT_EPSILON: f64 = 1e-9;

fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// Whether the pod may be bound to the node.
pub fn fits(pod: &PodNeeds, node: &Candidate) -> bool {
    !node.unschedulable
        && node
            .taints
            .iter()
            .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
            .all(|t| tolerated(t, pod.tolerations))
        && pod
            .node_selector
            .iter()
            .all(|(key, value)| node.labels.get(key) == Some(value))
        && node.requested_cpu + pod.cpu <= node.cpu + FIT_EPSILON
        && node.requested_memory + pod.memory <= node.memory + FIT_EPSILON
}

/// The index of the chosen node, or `None` when no node passes the filter (the pod stays
/// pending).
pub fn place(pod: &PodNeeds, nodes: &[Candidate], rng: &mut SplitMix64) -> Option<usize> {
    let feasible: Vec<usize> = (0..nodes.len()).filter(|i| fits(pod, &nodes[*i])).collect();
    let most_siblings = feasible.iter().map(|i| nodes[*i].siblings).max()?;
    let intolerable = |node: &Candidate| {
        node.taints
            .iter()
            .filter(|t| t.effect == TaintEffect::PreferNoSchedule && !tolerated(t, pod.tolerations))
            .count()
    };
    let most_intolerable = feasible.iter().map(|i| intolerable(&nodes[*i])).max()?;
    let score = |node: &Candidate| {
        let cpu_after = (node.requested_cpu + pod.cpu) / node.cpu;
        let memory_after = (node.requested_memory + pod.memory) / node.memory;
        let least_allocated = 100.0 * (2.0 - cpu_after - memory_after) / 2.0;
        // Two resources: their standard deviation is half their difference.
        let balanced = 100.0 * (1.0 - (cpu_after - memory_after).abs() / 2.0);
        // Both normalised as kube-scheduler does: the worst feasible node scores 0.
        let taints = if most_intolerable == 0 {
            100.0
        } else {
            100.0 * (1.0 - intolerable(node) as f64 / most_intolerable as f64)
        };
        let spread = if most_siblings == 0 {
            100.0
        } else {
            100.0 * (1.0 - f64::from(node.siblings) / f64::from(most_siblings))
        };
        LEAST_ALLOCATED_WEIGHT * least_allocated
            + BALANCED_WEIGHT * balanced
            + TAINT_WEIGHT * taints
            + SPREAD_WEIGHT * spread
    };
    let scores: Vec<(usize, f64)> = feasible.iter().map(|i| (*i, score(&nodes[*i]))).collect();
    let best = scores.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
    let tied: Vec<usize> = scores
        .iter()
        .filter(|(_, s)| best - s < 1e-9)
        .map(|(i, _)| *i)
        .collect();
    tied.get(rng.below(tied.len())).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::snapshot::TolerationOperator;

    fn node<'a>(labels: &'a BTreeMap<String, String>, taints: &'a [Taint]) -> Candidate<'a> {
        Candidate {
            cpu: 4.0,
            memory: 16.0,
            requested_cpu: 0.0,
            requested_memory: 0.0,
            labels,
            taints,
            unschedulable: false,
            siblings: 0,
        }
    }

    fn pod<'a>(
        selector: &'a BTreeMap<String, String>,
        tolerations: &'a [Toleration],
    ) -> PodNeeds<'a> {
        PodNeeds {
            cpu: 1.0,
            memory: 2.0,
            node_selector: selector,
            tolerations,
        }
    }

    #[test]
    fn filter_checks_requests_taints_selectors_and_cordons() {
        let empty = BTreeMap::new();
        let ssd = BTreeMap::from([("disk".to_string(), "ssd".to_string())]);
        let hard = [Taint {
            key: "dedicated".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        }];
        let plain = pod(&empty, &[]);
        assert!(fits(&plain, &node(&empty, &[])));
        let full = Candidate {
            requested_cpu: 3.5,
            ..node(&empty, &[])
        };
        assert!(!fits(&plain, &full));
        let exactly_full = Candidate {
            requested_cpu: 3.0,
            ..node(&empty, &[])
        };
        assert!(fits(&plain, &exactly_full));
        assert!(!fits(&plain, &node(&empty, &hard)));
        let tolerating = [Toleration {
            key: Some("dedicated".into()),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        }];
        assert!(fits(&pod(&empty, &tolerating), &node(&empty, &hard)));
        let other_value = [Toleration {
            key: Some("dedicated".into()),
            operator: TolerationOperator::Equal,
            value: "db".into(),
            effect: Some(TaintEffect::NoSchedule),
        }];
        assert!(!fits(&pod(&empty, &other_value), &node(&empty, &hard)));
        let wrong_effect = [Toleration {
            key: None,
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: Some(TaintEffect::NoExecute),
        }];
        assert!(!fits(&pod(&empty, &wrong_effect), &node(&empty, &hard)));
        assert!(!fits(&pod(&ssd, &[]), &node(&empty, &[])));
        assert!(fits(&pod(&ssd, &[]), &node(&ssd, &[])));
        let cordoned = Candidate {
            unschedulable: true,
            ..node(&empty, &[])
        };
        assert!(!fits(&plain, &cordoned));
    }

    #[test]
    fn least_requested_wins_whatever_the_real_load() {
        let empty = BTreeMap::new();
        let busy = Candidate {
            requested_cpu: 2.0,
            requested_memory: 8.0,
            ..node(&empty, &[])
        };
        let idle = node(&empty, &[]);
        let mut rng = SplitMix64::new(0);
        for _ in 0..20 {
            assert_eq!(
                place(&pod(&empty, &[]), &[busy.clone(), idle.clone()], &mut rng),
                Some(1)
            );
        }
    }

    #[test]
    fn soft_taint_outweighs_a_little_free_room() {
        let empty = BTreeMap::new();
        let soft = [Taint {
            key: "ballast.io/hot".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        }];
        let tainted_but_emptier = node(&empty, &soft);
        let fuller = Candidate {
            requested_cpu: 1.5,
            requested_memory: 6.0,
            ..node(&empty, &[])
        };
        let mut rng = SplitMix64::new(0);
        assert_eq!(
            place(&pod(&empty, &[]), &[tainted_but_emptier, fuller], &mut rng),
            Some(1)
        );
    }

    #[test]
    fn ties_are_broken_at_random_and_nothing_fits_means_pending() {
        let empty = BTreeMap::new();
        let nodes = vec![node(&empty, &[]); 3];
        let mut rng = SplitMix64::new(5);
        let mut chosen = [0; 3];
        for _ in 0..60 {
            chosen[place(&pod(&empty, &[]), &nodes, &mut rng).expect("fits")] += 1;
        }
        assert!(chosen.iter().all(|n| *n > 5), "{chosen:?}");
        let full = vec![
            Candidate {
                requested_memory: 15.0,
                ..node(&empty, &[])
            };
            2
        ];
        assert_eq!(place(&pod(&empty, &[]), &full, &mut rng), None);
    }
}
