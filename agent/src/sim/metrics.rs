//! What a run is judged by, from the ground truth (real demand and pressure), never from what a
//! policy believed.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{cluster::Landing, physics::NodeTruth, scenario::Target};

/// The figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunMetrics {
    pub rounds: u32,
    pub evictions: u32,
    /// Highest normalised pressure of any node at any tick (1.0 = fully pressured).
    pub max_pressure: f64,
    /// Mean over nodes and ticks.
    pub mean_pressure: f64,
    /// Highest node pressure averaged over the last round.
    pub final_max_pressure: f64,
    /// Coefficient of variation of node utilisation (the higher of CPU and memory demand over
    /// capacity), averaged over the run, and over the last round.
    pub mean_utilisation_cv: f64,
    pub final_utilisation_cv: f64,
    /// Node-seconds spent above the target pressure.
    pub node_seconds_above_target: u64,
    /// Replicas evicted again within the repeat window of their previous eviction.
    pub repeated_replicas: u32,
    /// Replacements bound to the node their predecessor was evicted from.
    pub returned_to_source: u32,
    /// Replacements bound to a node the replica had been evicted from before that, within the
    /// repeat window (A -> B -> A): ping-pong.
    pub bounced_back: u32,
    /// Evictions the PDB did not allow (refused, as the Eviction API would).
    pub pdb_violations: u32,
    /// Evictions beyond the policy's per-round, per-node, per-namespace or in-flight limits.
    pub limit_violations: u32,
    /// Rounds whose mean state met the target.
    pub balanced_rounds: u32,
    /// The first round from which every later round met the target, at least the target's
    /// `settled_rounds` of them (or the whole run, if shorter; 0: balanced throughout).
    pub balanced_from_round: Option<u32>,
    /// Evictions made before [`RunMetrics::balanced_from_round`].
    pub evictions_to_balance: Option<u32>,
    /// Evictions per workload (`namespace/name`).
    pub evictions_by_workload: BTreeMap<String, u32>,
}

/// Per round and node, for plots: round-mean utilisation and normalised pressure.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    pub utilisation: Vec<Vec<f64>>,
    pub pressure: Vec<Vec<f64>>,
}

/// Collects a run's figures tick by tick and round by round.
#[derive(Debug)]
pub struct Recorder {
    target: Target,
    workloads: Vec<String>,
    tick_seconds: u64,
    metrics: RunMetrics,
    series: Series,
    pressure_sum: f64,
    pressure_samples: u64,
    cv_sum: f64,
    ticks: u64,
    /// This round's per-node sums and tick count.
    round: Vec<(f64, f64, f64, f64)>,
    round_ticks: u32,
    round_cv: f64,
    /// Per replica (workload, slot): when it was last evicted, and whether it already counted.
    last_eviction: BTreeMap<(usize, u32), (u64, bool)>,
    /// Per replica: the nodes it was evicted from, and when.
    left: BTreeMap<(usize, u32), Vec<(usize, u64)>>,
    /// Evictions counted at the end of each round, to find the evictions before balance.
    evictions_by_round: Vec<u32>,
    balanced: Vec<bool>,
}

fn coefficient_of_variation(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.is_empty() || mean <= 0.0 {
        return 0.0;
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    variance.sqrt() / mean
}

impl Recorder {
    /// `workloads` names the workload indices `evicted` is given.
    pub fn new(target: Target, tick_seconds: u32, nodes: usize, workloads: Vec<String>) -> Self {
        Self {
            target,
            workloads,
            tick_seconds: u64::from(tick_seconds),
            metrics: RunMetrics::default(),
            series: Series::default(),
            pressure_sum: 0.0,
            pressure_samples: 0,
            cv_sum: 0.0,
            ticks: 0,
            round: vec![(0.0, 0.0, 0.0, 0.0); nodes],
            round_ticks: 0,
            round_cv: 0.0,
            last_eviction: BTreeMap::new(),
            left: BTreeMap::new(),
            evictions_by_round: Vec::new(),
            balanced: Vec::new(),
        }
    }

    pub fn tick(&mut self, truths: &[NodeTruth]) {
        let utilisations: Vec<f64> = truths.iter().map(NodeTruth::utilisation).collect();
        let cv = coefficient_of_variation(&utilisations);
        self.cv_sum += cv;
        self.round_cv += cv;
        self.ticks += 1;
        self.round_ticks += 1;
        for (i, truth) in truths.iter().enumerate() {
            let pressure = truth.max_pressure();
            self.metrics.max_pressure = self.metrics.max_pressure.max(pressure);
            self.pressure_sum += pressure;
            self.pressure_samples += 1;
            if pressure > self.target.max_pressure {
                self.metrics.node_seconds_above_target += self.tick_seconds;
            }
            let sums = &mut self.round[i];
            sums.0 += truth.cpu_share;
            sums.1 += truth.memory_share;
            sums.2 += pressure;
            sums.3 += truth.utilisation();
        }
    }

    /// Replacements bound at `now`.
    pub fn landed(&mut self, landings: &[Landing], now: u64) {
        let window = u64::from(self.target.repeat_window_seconds);
        for landing in landings {
            if landing.evicted_from == Some(landing.node) {
                self.metrics.returned_to_source += 1;
            } else if self
                .left
                .get(&(landing.workload, landing.slot))
                .is_some_and(|left| {
                    left.iter()
                        .any(|(node, at)| *node == landing.node && now - at <= window)
                })
            {
                self.metrics.bounced_back += 1;
            }
        }
    }

    /// Replica `slot` of `workload` evicted from `node` at `at`.
    pub fn evicted(&mut self, workload: usize, slot: u32, node: usize, at: u64) {
        self.metrics.evictions += 1;
        self.left
            .entry((workload, slot))
            .or_default()
            .push((node, at));
        if let Some(name) = self.workloads.get(workload) {
            *self
                .metrics
                .evictions_by_workload
                .entry(name.clone())
                .or_insert(0) += 1;
        }
        let window = u64::from(self.target.repeat_window_seconds);
        let entry = self
            .last_eviction
            .entry((workload, slot))
            .or_insert((at, false));
        if entry.0 != at && at - entry.0 <= window && !entry.1 {
            self.metrics.repeated_replicas += 1;
            entry.1 = true;
        }
        entry.0 = at;
    }

    pub fn pdb_violation(&mut self) {
        self.metrics.pdb_violations += 1;
    }

    pub fn limit_violation(&mut self) {
        self.metrics.limit_violations += 1;
    }

    /// Closes a round: judges its mean state against the target.
    pub fn end_round(&mut self) {
        let ticks = f64::from(self.round_ticks.max(1));
        let means: Vec<(f64, f64, f64, f64)> = self
            .round
            .iter()
            .map(|s| (s.0 / ticks, s.1 / ticks, s.2 / ticks, s.3 / ticks))
            .collect();
        let n = means.len().max(1) as f64;
        let mean_cpu = means.iter().map(|m| m.0).sum::<f64>() / n;
        let mean_memory = means.iter().map(|m| m.1).sum::<f64>() / n;
        let worst_pressure = means.iter().map(|m| m.2).fold(0.0, f64::max);
        let worst_deviation = means
            .iter()
            .map(|m| (m.0 - mean_cpu).max(m.1 - mean_memory))
            .fold(f64::MIN, f64::max);
        let balanced = worst_pressure <= self.target.max_pressure
            && self
                .target
                .max_deviation
                .is_none_or(|max| worst_deviation <= max);
        self.balanced.push(balanced);
        self.evictions_by_round.push(self.metrics.evictions);
        self.metrics.balanced_rounds += u32::from(balanced);
        self.metrics.final_max_pressure = worst_pressure;
        self.metrics.final_utilisation_cv = self.round_cv / ticks;
        self.series
            .pressure
            .push(means.iter().map(|m| m.2).collect());
        self.series
            .utilisation
            .push(means.iter().map(|m| m.3).collect());
        self.round
            .iter_mut()
            .for_each(|s| *s = (0.0, 0.0, 0.0, 0.0));
        self.round_ticks = 0;
        self.round_cv = 0.0;
    }

    pub fn finish(mut self) -> (RunMetrics, Series) {
        let m = &mut self.metrics;
        m.rounds = self.balanced.len() as u32;
        m.mean_pressure = self.pressure_sum / self.pressure_samples.max(1) as f64;
        m.mean_utilisation_cv = self.cv_sum / self.ticks.max(1) as f64;
        let rounds = self.balanced.len();
        let last_unbalanced = self.balanced.iter().rposition(|b| !b);
        m.balanced_from_round = match last_unbalanced {
            None => Some(0),
            Some(last)
                if rounds - (last + 1) >= (self.target.settled_rounds as usize).min(rounds) =>
            {
                Some(last as u32 + 1)
            }
            Some(_) => None,
        };
        // Evictions made up to the end of the last unbalanced round brought the balance.
        m.evictions_to_balance = m.balanced_from_round.map(|round| match round {
            0 => 0,
            r => self.evictions_by_round[r as usize - 1],
        });
        (self.metrics, self.series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(cpu: f64, pressure: f64) -> NodeTruth {
        NodeTruth {
            cpu_share: cpu,
            memory_share: 0.0,
            pressure: BTreeMap::from([(crate::load::score::Resource::Cpu, pressure)]),
        }
    }

    #[test]
    fn cv_of_equal_values_is_zero() {
        assert_eq!(coefficient_of_variation(&[0.5, 0.5]), 0.0);
        assert!((coefficient_of_variation(&[0.0, 1.0]) - 1.0).abs() < 1e-12);
        assert_eq!(coefficient_of_variation(&[]), 0.0);
    }

    #[test]
    fn balance_is_found_from_the_last_unbalanced_round() {
        let target = Target {
            max_deviation: Some(0.25),
            ..Target::default()
        };
        let mut recorder = Recorder::new(target, 15, 2, vec!["web".into()]);
        // Round 0: hot and skewed. Round 1: still hot, one eviction. Rounds 2-3: balanced.
        recorder.tick(&[truth(1.2, 0.8), truth(0.2, 0.0)]);
        recorder.end_round();
        recorder.evicted(0, 0, 0, 60);
        recorder.tick(&[truth(1.0, 0.5), truth(0.4, 0.0)]);
        recorder.end_round();
        for _ in 0..Target::default().settled_rounds {
            recorder.tick(&[truth(0.6, 0.1), truth(0.6, 0.1)]);
            recorder.end_round();
        }
        let (metrics, series) = recorder.finish();
        assert_eq!(metrics.balanced_from_round, Some(2));
        assert_eq!(metrics.evictions_to_balance, Some(1));
        assert_eq!(metrics.balanced_rounds, Target::default().settled_rounds);
        assert_eq!(metrics.node_seconds_above_target, 30);
        assert!((metrics.max_pressure - 0.8).abs() < 1e-12);
        assert!((metrics.final_max_pressure - 0.1).abs() < 1e-12);
        assert_eq!(metrics.final_utilisation_cv, 0.0);
        assert_eq!(
            series.pressure.len(),
            2 + Target::default().settled_rounds as usize
        );
    }

    #[test]
    fn a_scenario_can_ask_for_a_longer_settle() {
        let run = |settled_rounds| {
            let target = Target {
                settled_rounds,
                ..Target::default()
            };
            let mut recorder = Recorder::new(target, 15, 1, vec!["web".into()]);
            recorder.tick(&[truth(1.2, 0.8)]);
            recorder.end_round();
            for _ in 0..8 {
                recorder.tick(&[truth(0.5, 0.1)]);
                recorder.end_round();
            }
            recorder.finish().0.balanced_from_round
        };
        assert_eq!(run(8), Some(1));
        assert_eq!(run(9), None, "8 balanced rounds are not 9");
    }

    #[test]
    fn never_balanced_is_none_and_repeats_count_once_per_replica() {
        let mut recorder = Recorder::new(Target::default(), 15, 1, vec!["web".into()]);
        recorder.tick(&[truth(0.5, 0.9)]);
        recorder.end_round();
        // Balanced again, but not for long enough.
        recorder.tick(&[truth(0.5, 0.1)]);
        recorder.end_round();
        recorder.evicted(0, 1, 0, 100);
        recorder.evicted(0, 1, 0, 200);
        recorder.evicted(0, 1, 0, 300);
        recorder.evicted(0, 2, 0, 100);
        recorder.evicted(0, 2, 0, 100 + 1800 + 1);
        recorder.landed(
            &[
                Landing {
                    workload: 0,
                    slot: 1,
                    node: 0,
                    evicted_from: Some(0),
                },
                Landing {
                    workload: 0,
                    slot: 2,
                    node: 1,
                    evicted_from: Some(0),
                },
            ],
            400,
        );
        // Replica 1 left node 0, then node 2 (still in the window), and lands on 0 again.
        recorder.evicted(0, 1, 2, 500);
        recorder.landed(
            &[Landing {
                workload: 0,
                slot: 1,
                node: 0,
                evicted_from: Some(2),
            }],
            600,
        );
        let (metrics, _) = recorder.finish();
        assert_eq!(metrics.balanced_from_round, None);
        assert_eq!(metrics.evictions_to_balance, None);
        assert_eq!(metrics.repeated_replicas, 1);
        assert_eq!(metrics.returned_to_source, 1);
        assert_eq!(metrics.bounced_back, 1);
        assert_eq!(metrics.evictions, 6);
        assert_eq!(metrics.evictions_by_workload["web"], 6);
    }
}
