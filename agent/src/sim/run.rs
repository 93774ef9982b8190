//! The simulation loop. Each round: `round_seconds / tick_seconds` ticks (pods move along their
//! lifecycle, the scheduler binds pending pods, load is sampled), then the policy decides and its
//! evictions go through a model of the Eviction API (PDBs enforced) and the executor (soft taints
//! on the nodes being relieved, for our planner).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    cluster::World,
    metrics::{Recorder, RunMetrics, Series},
    physics::{self, Loads},
    rng::SplitMix64,
    scenario::Scenario,
    snapshot::{self, parse_uid, timestamp},
    SimError,
};
use crate::rebalance::{
    plan,
    plan::{NodeStatus, Plan},
    policy::Limits,
    Policy, RebalanceState,
};

/// Who decides the evictions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Contender {
    /// Ballast's planner, on the agents' load.
    Ballast,
    /// The descheduler's LowNodeUtilization, on requests.
    Baseline,
}

impl Contender {
    pub fn name(self) -> &'static str {
        match self {
            Contender::Ballast => "ballast",
            Contender::Baseline => "baseline (LowNodeUtilization)",
        }
    }
}

/// How long and with which randomness a run goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunConfig {
    pub rounds: u32,
    pub seed: u64,
    /// Whether the executor keeps the soft taint on the nodes our planner relieves (as the real
    /// one does); off, to see what the taint is worth.
    pub soft_taint: bool,
}

impl RunConfig {
    pub fn new(rounds: u32, seed: u64) -> Self {
        Self {
            rounds,
            seed,
            soft_taint: true,
        }
    }
}

/// A finished run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub contender: Contender,
    pub metrics: RunMetrics,
    /// Per round and node, for plotting elsewhere.
    pub series: Series,
    /// Our planner's last plan (for the curious: `--format json`).
    #[serde(skip)]
    pub last_plan: Option<Plan>,
}

/// The policy's limits as the simulator checks them.
fn check_limits(
    world: &World,
    limits: &Limits,
    evictions: &[u64],
    one_in_flight: bool,
    now: u64,
) -> Vec<bool> {
    let mut per_node: BTreeMap<usize, u32> = BTreeMap::new();
    let mut per_namespace: BTreeMap<&str, u32> = BTreeMap::new();
    let mut workloads = BTreeSet::new();
    evictions
        .iter()
        .enumerate()
        .map(|(index, uid)| {
            let Some(pod) = world.pods.get(uid) else {
                return false;
            };
            let namespace = world.workloads[pod.workload].namespace.as_str();
            let node = per_node.entry(pod.node.unwrap_or(usize::MAX)).or_insert(0);
            *node += 1;
            let in_namespace = per_namespace.entry(namespace).or_insert(0);
            *in_namespace += 1;
            let second_in_flight = one_in_flight
                && (!workloads.insert(pod.workload)
                    || world.in_flight(pod.workload, now, limits.in_flight_timeout_seconds));
            index as u32 >= limits.per_round
                || *node > limits.per_node
                || *in_namespace > limits.per_namespace
                || second_in_flight
        })
        .collect()
}

/// Runs one contender through the scenario. `progress` is told each finished round.
pub fn run(
    scenario: &Scenario,
    policy: &Policy,
    contender: Contender,
    config: RunConfig,
    progress: &mut dyn FnMut(u32),
) -> Result<Outcome, SimError> {
    let timing = &scenario.timing;
    // One stream for the initial placement, one for the run: both contenders start equal.
    let mut rng = SplitMix64::new(config.seed);
    let mut world = World::new(scenario, &mut rng)?;
    let mut loads = Loads::new(world.nodes.len(), timing.half_life_seconds);
    let workload_names = scenario
        .workloads
        .iter()
        .map(|w| format!("{}/{}", w.namespace, w.name))
        .collect();
    let mut recorder = Recorder::new(
        scenario.target.clone(),
        timing.tick_seconds,
        world.nodes.len(),
        workload_names,
    );
    let mut state = RebalanceState::default();
    let mut last_plan = None;
    let ticks_per_round = u64::from(timing.round_seconds / timing.tick_seconds);
    let tick_seconds = u64::from(timing.tick_seconds);
    let mut tick = 0u64;
    for round in 0..config.rounds {
        for _ in 0..ticks_per_round {
            tick += 1;
            let now = tick * tick_seconds;
            let landings = world.advance(now, &mut rng);
            recorder.landed(&landings, now);
            let truths = physics::tick(&world, &mut loads, now, config.seed, tick);
            recorder.tick(&truths);
        }
        let now = tick * tick_seconds;
        let evictions = match contender {
            Contender::Ballast => {
                let snapshot = snapshot::capture(&world, &loads);
                let (plan, next) = plan(&snapshot, &state, policy, timestamp(now));
                state = next;
                let sources: BTreeSet<usize> = plan
                    .nodes
                    .iter()
                    .filter(|report| report.status == NodeStatus::Source)
                    .filter_map(|report| world.nodes.iter().position(|n| n.name == report.node))
                    .collect();
                if config.soft_taint {
                    world.set_soft_tainted(sources);
                }
                let evictions = if plan.dry_run {
                    Vec::new()
                } else {
                    plan.evictions
                        .iter()
                        .filter_map(|e| parse_uid(&e.pod.uid))
                        .collect()
                };
                last_plan = Some(plan);
                evictions
            }
            Contender::Baseline => scenario.baseline.round(&world, &policy.limits),
        };
        let over_limit = check_limits(
            &world,
            &policy.limits,
            &evictions,
            contender == Contender::Ballast,
            now,
        );
        for (uid, over_limit) in evictions.iter().zip(over_limit) {
            let Some(pod) = world.pods.get(uid) else {
                continue;
            };
            let (workload, slot, node) = (pod.workload, pod.slot, pod.node);
            if world.disruptions_allowed(workload) == 0 {
                recorder.pdb_violation();
                continue;
            }
            if over_limit {
                recorder.limit_violation();
            }
            if let (Some(node), Some(_)) = (node, world.evict(*uid, now)) {
                recorder.evicted(workload, slot, node, now);
            }
        }
        recorder.end_round();
        progress(round + 1);
    }
    let (metrics, series) = recorder.finish();
    Ok(Outcome {
        contender,
        metrics,
        series,
        last_plan,
    })
}

/// Runs ours and, with `with_baseline`, the baseline on the same scenario and seed. `progress`
/// is told each finished round of either run (up to `rounds` or twice that).
pub fn compare(
    scenario: &Scenario,
    policy: &Policy,
    config: RunConfig,
    with_baseline: bool,
    progress: &mut dyn FnMut(u32),
) -> Result<super::report::Comparison, SimError> {
    let ours = run(scenario, policy, Contender::Ballast, config, progress)?;
    let baseline = if with_baseline {
        let mut after_ours = |round: u32| progress(config.rounds + round);
        Some(run(
            scenario,
            policy,
            Contender::Baseline,
            config,
            &mut after_ours,
        )?)
    } else {
        None
    };
    Ok(super::report::Comparison {
        scenario: scenario.name.clone(),
        seed: config.seed,
        rounds: config.rounds,
        node_names: scenario.node_names(),
        ours,
        baseline,
    })
}

#[cfg(test)]
mod tests {
    //! The shipped scenarios' expected outcomes. Each run is a few hundred milliseconds in a
    //! debug build.
    use super::*;
    use crate::sim::{
        metrics::RunMetrics,
        scenario::{parse, shipped},
    };

    fn outcomes(name: &str) -> (RunMetrics, RunMetrics) {
        let scenario = parse(name, shipped(name).expect("shipped")).expect("valid");
        let config = RunConfig::new(scenario.rounds, scenario.seed);
        let comparison =
            compare(&scenario, &Policy::default(), config, true, &mut |_| {}).expect("runs");
        let baseline = comparison.baseline.expect("compared").metrics;
        (comparison.ours.metrics, baseline)
    }

    /// What ours must always do: no PDB or limit broken, nothing lands back where it left.
    fn safe(ours: &RunMetrics) {
        assert_eq!(ours.pdb_violations, 0, "{ours:?}");
        assert_eq!(ours.limit_violations, 0, "{ours:?}");
        assert_eq!(ours.returned_to_source, 0, "{ours:?}");
        assert_eq!(ours.bounced_back, 0, "{ours:?}");
    }

    /// Ours gets there and stays; the baseline, blind to real load, never does.
    fn ours_fixes_what_the_baseline_cannot_see(name: &str) -> RunMetrics {
        let (ours, baseline) = outcomes(name);
        safe(&ours);
        assert!(ours.balanced_from_round.is_some(), "{name}: {ours:?}");
        assert!(ours.evictions > 0, "{name}: {ours:?}");
        assert_eq!(baseline.evictions, 0, "{name}: {baseline:?}");
        assert_eq!(baseline.balanced_from_round, None, "{name}: {baseline:?}");
        assert!(ours.final_max_pressure < baseline.final_max_pressure);
        ours
    }

    #[test]
    fn rollout_hotspot_is_spread_out() {
        let ours = ours_fixes_what_the_baseline_cannot_see("rollout-hotspot");
        assert!(
            ours.evictions_by_workload.contains_key("shop/api"),
            "{ours:?}"
        );
    }

    #[test]
    fn noisy_neighbour_moves_and_throttling_does_not_count() {
        let ours = ours_fixes_what_the_baseline_cannot_see("noisy-neighbour");
        assert!(
            ours.evictions_by_workload.contains_key("batch/crunch"),
            "{ours:?}"
        );
        assert!(
            !ours.evictions_by_workload.contains_key("batch/reporter"),
            "{ours:?}"
        );
    }

    #[test]
    fn memory_pressure_is_relieved() {
        let ours = ours_fixes_what_the_baseline_cannot_see("memory-pressure");
        assert!(
            ours.evictions_by_workload.contains_key("search/indexer"),
            "{ours:?}"
        );
    }

    #[test]
    fn statefulsets_move_one_at_a_time() {
        // The in-flight rule is among the limits checked: a second eviction of one StatefulSet
        // before its replacement is Ready would be a limit violation.
        let ours = ours_fixes_what_the_baseline_cannot_see("statefulset-heavy");
        assert!(
            ours.evictions_by_workload.contains_key("data/kafka"),
            "{ours:?}"
        );
    }

    #[test]
    fn near_full_moves_nothing() {
        let (ours, baseline) = outcomes("near-full");
        assert_eq!(ours.evictions, 0, "{ours:?}");
        assert_eq!(baseline.evictions, 0, "{baseline:?}");
        assert_eq!(ours.balanced_from_round, Some(0));
    }

    #[test]
    fn over_requested_is_left_alone_by_ours_only() {
        let (ours, baseline) = outcomes("over-requested");
        safe(&ours);
        assert_eq!(ours.evictions, 0, "{ours:?}");
        assert!(baseline.evictions > 0, "{baseline:?}");
        assert_eq!(ours.balanced_from_round, Some(0));
    }

    #[test]
    fn diurnal_imbalance_is_mixed_and_stays_on_target_through_a_day() {
        // Settled means on target for a whole period (the scenario's `settled_rounds`), peaks
        // of both services included. The filler `web` is never moved back off a node it was
        // just moved onto, which it would be at each peak otherwise.
        let ours = ours_fixes_what_the_baseline_cannot_see("diurnal-imbalance");
        assert!(
            ours.evictions_by_workload.contains_key("default/checkout")
                && ours.evictions_by_workload.contains_key("default/reports"),
            "{ours:?}"
        );
    }

    #[test]
    fn a_big_workload_piled_onto_a_few_nodes_is_spread_at_the_in_flight_pace() {
        // 60 api replicas on 6 of 60 nodes: many moves of one workload, none of them a repeat.
        let ours = ours_fixes_what_the_baseline_cannot_see("rollout-at-scale");
        assert!(
            ours.evictions_by_workload
                .get("default/api")
                .is_some_and(|n| *n >= 10),
            "{ours:?}"
        );
        assert!(
            ours.balanced_from_round.is_some_and(|r| r <= 20),
            "{ours:?}"
        );
        assert_eq!(ours.repeated_replicas, 0, "{ours:?}");
    }

    #[test]
    fn without_the_soft_taint_the_scheduler_sends_pods_back() {
        // Requests-based scoring prefers the node just relieved: the taint is what keeps the
        // planner's predicted destinations true.
        let scenario = parse("r", shipped("rollout-hotspot").expect("shipped")).expect("valid");
        let config = RunConfig {
            soft_taint: false,
            ..RunConfig::new(scenario.rounds, scenario.seed)
        };
        let outcome = run(
            &scenario,
            &Policy::default(),
            Contender::Ballast,
            config,
            &mut |_| {},
        )
        .expect("runs");
        assert!(
            outcome.metrics.returned_to_source > 0,
            "{:?}",
            outcome.metrics
        );
    }

    #[test]
    fn a_run_is_determined_by_its_seed() {
        let scenario = parse("n", shipped("noisy-neighbour").expect("shipped")).expect("valid");
        let run_with = |seed| {
            let config = RunConfig::new(12, seed);
            run(
                &scenario,
                &Policy::default(),
                Contender::Ballast,
                config,
                &mut |_| {},
            )
            .expect("runs")
            .metrics
        };
        assert_eq!(run_with(1), run_with(1));
        assert_ne!(run_with(1).mean_pressure, run_with(2).mean_pressure);
    }

    #[test]
    fn progress_is_reported_for_both_runs() {
        let scenario = parse("n", shipped("near-full").expect("shipped")).expect("valid");
        let config = RunConfig::new(3, 0);
        let mut seen = Vec::new();
        compare(&scenario, &Policy::default(), config, true, &mut |r| {
            seen.push(r)
        })
        .expect("runs");
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_dry_run_policy_evicts_nothing() {
        let scenario = parse("r", shipped("rollout-hotspot").expect("shipped")).expect("valid");
        let policy = Policy {
            dry_run: true,
            ..Policy::default()
        };
        let config = RunConfig::new(10, 1);
        let outcome =
            run(&scenario, &policy, Contender::Ballast, config, &mut |_| {}).expect("runs");
        assert_eq!(outcome.metrics.evictions, 0);
        assert!(outcome.last_plan.is_some_and(|p| p.dry_run));
    }
}

#[cfg(test)]
mod properties {
    //! Over random small clusters: ours never breaks a PDB or a limit, requests never exceed a
    //! node, and a run is a function of its seed.
    use proptest::prelude::*;

    use super::*;
    use crate::sim::{
        scenario::{Load, Resources, Workload, WorkloadKind},
        trace::{Component, Trace},
    };

    fn workload(index: usize, replicas: u32, cpu: f64, use_cpu: f64, memory: f64) -> Workload {
        let text = format!(
            "name = \"w{index}\"\nkind = \"Deployment\"\nreplicas = {replicas}\nrequests = {{}}\nload = {{}}\npdb = {{ max_unavailable = 1 }}"
        );
        let mut workload: Workload = toml::from_str(&text).expect("valid workload");
        workload.kind = if index % 3 == 2 {
            WorkloadKind::StatefulSet
        } else {
            WorkloadKind::Deployment
        };
        workload.requests = Resources {
            cpu,
            memory_gib: memory,
        };
        workload.load = Load {
            cpu: Trace(vec![Component::Constant(use_cpu), Component::Noise(0.1)]),
            memory_gib: Trace::constant(memory * 1.5),
            network_mbit: Trace::default(),
        };
        workload
    }

    fn cluster() -> impl Strategy<Value = Scenario> {
        (
            2usize..6,
            prop::collection::vec((1u32..6, 0.1f64..1.0, 0.0f64..2.5, 0.5f64..3.0, 0usize..8), 1..5),
        )
            .prop_map(|(nodes, workloads)| {
                let text = format!(
                    "name = \"random\"\ndescription = \"random\"\n[[nodes]]\nname = \"n\"\ncount = {nodes}\ncpu = 8\nmemory_gib = 32\n[[workloads]]\nname = \"x\"\nkind = \"Deployment\"\nreplicas = 1\nrequests = {{}}\nload = {{}}"
                );
                let mut scenario: Scenario = toml::from_str(&text).expect("valid scenario");
                scenario.workloads = workloads
                    .iter()
                    .enumerate()
                    .map(|(i, (replicas, cpu, use_cpu, memory, pin))| {
                        let mut w = workload(i, *replicas, *cpu, *use_cpu, *memory);
                        // Some workloads start piled on one node, as after a rollout.
                        if *pin < nodes {
                            w.place_on = vec![format!("n-{pin}")];
                        }
                        w
                    })
                    .collect();
                scenario
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn ours_is_safe_and_reproducible(scenario in cluster(), seed in 0u64..1000) {
            let config = RunConfig::new(15, seed);
            let mut rng = SplitMix64::new(seed);
            prop_assume!(World::new(&scenario, &mut rng).is_ok());
            let policy = Policy::default();
            let ours = run(&scenario, &policy, Contender::Ballast, config, &mut |_| {})
                .expect("runs");
            prop_assert_eq!(ours.metrics.pdb_violations, 0);
            prop_assert_eq!(ours.metrics.limit_violations, 0);
            let again = run(&scenario, &policy, Contender::Ballast, config, &mut |_| {})
                .expect("runs");
            prop_assert_eq!(&ours.metrics, &again.metrics);
            let baseline = run(&scenario, &policy, Contender::Baseline, config, &mut |_| {})
                .expect("runs");
            prop_assert_eq!(baseline.metrics.pdb_violations, 0);
        }

        #[test]
        fn the_scheduler_never_overcommits_requests(scenario in cluster(), seed in 0u64..1000) {
            let mut rng = SplitMix64::new(seed);
            let Ok(mut world) = World::new(&scenario, &mut rng) else {
                return Ok(());
            };
            // Evict everything, then let the scheduler place it all again.
            let uids: Vec<u64> = world.pods.keys().copied().collect();
            for uid in uids {
                world.evict(uid, 0);
            }
            world.advance(3600, &mut rng);
            for ((cpu, memory), node) in world.requested().iter().zip(&world.nodes) {
                prop_assert!(*cpu <= node.cpu + 1e-9);
                prop_assert!(*memory <= node.memory_bytes + 1.0);
            }
        }
    }
}
