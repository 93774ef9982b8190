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
}

/// A finished run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub contender: Contender,
    pub metrics: RunMetrics,
    #[serde(skip)]
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
            let second_in_flight =
                one_in_flight && (!workloads.insert(pod.workload) || world.in_flight(pod.workload));
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
    let mut recorder = Recorder::new(
        scenario.target.clone(),
        timing.tick_seconds,
        world.nodes.len(),
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
            recorder.landed(&landings);
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
                world.set_soft_tainted(sources);
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
        );
        for (uid, over_limit) in evictions.iter().zip(over_limit) {
            let Some(pod) = world.pods.get(uid) else {
                continue;
            };
            let (workload, slot) = (pod.workload, pod.slot);
            if world.disruptions_allowed(workload) == 0 {
                recorder.pdb_violation();
                continue;
            }
            if over_limit {
                recorder.limit_violation();
            }
            if world.evict(*uid, now).is_some() {
                recorder.evicted(workload, slot, now);
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
