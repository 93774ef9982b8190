//! Scenario files: the cluster, its workloads and their load over time, the run's timing, the
//! target a good policy must reach, and the baseline's thresholds. TOML; unknown fields are
//! rejected so that a typo never silently falls back to a default.
//!
//! The shipped scenarios live beside this file (`scenarios/*.toml`) and are compiled in, so
//! `ballast simulate --scenario NAME` works from any directory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{baseline::LowNodeUtilization, trace::Trace};
use crate::rebalance::snapshot::{Qos, Taint, Toleration, VolumeKind};

/// Bytes in a GiB, and per second in a Mbit/s.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
pub const MBIT: f64 = 125_000.0;

/// The scenarios shipped in the repository, by name.
pub const SHIPPED: [(&str, &str); 8] = [
    (
        "rollout-hotspot",
        include_str!("scenarios/rollout-hotspot.toml"),
    ),
    (
        "diurnal-imbalance",
        include_str!("scenarios/diurnal-imbalance.toml"),
    ),
    (
        "noisy-neighbour",
        include_str!("scenarios/noisy-neighbour.toml"),
    ),
    (
        "memory-pressure",
        include_str!("scenarios/memory-pressure.toml"),
    ),
    ("near-full", include_str!("scenarios/near-full.toml")),
    (
        "statefulset-heavy",
        include_str!("scenarios/statefulset-heavy.toml"),
    ),
    (
        "over-requested",
        include_str!("scenarios/over-requested.toml"),
    ),
    (
        "rollout-at-scale",
        include_str!("scenarios/rollout-at-scale.toml"),
    ),
];

/// The text of a shipped scenario.
pub fn shipped(name: &str) -> Option<&'static str> {
    SHIPPED
        .iter()
        .find(|(shipped, _)| *shipped == name)
        .map(|(_, text)| *text)
}

/// Why a scenario cannot be used. Each message names the field and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    // The TOML error is part of the message (it shows the line and the field), not a source,
    // so that it is printed once.
    #[error("scenario {origin} is not valid TOML for a scenario: {error}(unknown fields are rejected; see the shipped scenarios in agent/src/sim/scenarios for every field)")]
    Parse {
        origin: String,
        error: Box<toml::de::Error>,
    },
    #[error("scenario {origin}: field `{field}` {problem}")]
    Invalid {
        origin: String,
        field: String,
        problem: String,
    },
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Planning rounds run unless `--rounds` says otherwise.
    #[serde(default = "default_rounds")]
    pub rounds: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub timing: Timing,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub baseline: LowNodeUtilization,
    pub nodes: Vec<NodeGroup>,
    pub workloads: Vec<Workload>,
}

fn default_rounds() -> u32 {
    60
}

/// Time in the simulation. Load is sampled every tick; the policy runs once per round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    pub tick_seconds: u32,
    /// A multiple of `tick_seconds`.
    pub round_seconds: u32,
    /// From eviction until the replacement is bound to a node (controller + scheduler).
    pub reschedule_seconds: u32,
    /// From binding until the replacement is Ready (image pull, start, readiness probe).
    pub startup_seconds: u32,
    /// Half-life of the load averages, as in the agents' load model.
    pub half_life_seconds: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            tick_seconds: 15,
            round_seconds: 60,
            reschedule_seconds: 15,
            startup_seconds: 45,
            half_life_seconds: 30,
        }
    }
}

/// What "balanced" means when judging a run (not an input of either policy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    /// Highest normalised node pressure (1.0 = fully pressured in the load model's terms).
    pub max_pressure: f64,
    /// Highest CPU or memory utilisation of a node above the cluster mean, when even spread is
    /// part of the goal; by default only pressure counts (a busy node nobody waits on is fine).
    pub max_deviation: Option<f64>,
    /// A replica evicted twice within this window counts as a repeat.
    pub repeat_window_seconds: u32,
    /// Rounds a run must stay on target, to its end, to count as settled (default 5: one lucky
    /// last round is not a result). A scenario whose load keeps moving sets one whole period of
    /// it, so that a policy that does nothing cannot look settled in a trough.
    pub settled_rounds: u32,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            max_pressure: 0.3,
            max_deviation: None,
            repeat_window_seconds: 1800,
            settled_rounds: 5,
        }
    }
}

/// `count` identical nodes named `name-0`, `name-1`, ... (just `name` when count is 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroup {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
    /// Allocatable cores.
    pub cpu: f64,
    pub memory_gib: f64,
    #[serde(default = "default_link")]
    pub network_mbit: f64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub unschedulable: bool,
}

fn one() -> u32 {
    1
}

fn default_link() -> f64 {
    10_000.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

/// Cores and GiB.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub cpu: f64,
    #[serde(default)]
    pub memory_gib: f64,
}

/// Limits are optional per resource, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default)]
    pub cpu: Option<f64>,
    #[serde(default)]
    pub memory_gib: Option<f64>,
}

/// Exactly one of the two, as in a PodDisruptionBudget.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pdb {
    #[serde(default)]
    pub min_available: Option<u32>,
    #[serde(default)]
    pub max_unavailable: Option<u32>,
}

/// What one replica demands over time. Missing resources demand nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// Cores.
    #[serde(default)]
    pub cpu: Trace,
    /// Working set.
    #[serde(default)]
    pub memory_gib: Trace,
    /// Bytes sent plus received, in Mbit/s.
    #[serde(default)]
    pub network_mbit: Trace,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub kind: WorkloadKind,
    pub replicas: u32,
    #[serde(default)]
    pub priority: i32,
    pub requests: Resources,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub pdb: Option<Pdb>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    #[serde(default)]
    pub volumes: Vec<VolumeKind>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Nodes the replicas were placed on before the run, round-robin, as if every other node had
    /// been cordoned during the rollout. Empty: the scheduler model places them.
    #[serde(default)]
    pub place_on: Vec<String>,
    pub load: Load,
}

impl Workload {
    /// Kubernetes' QoS class (every container of a replica alike).
    pub fn qos(&self) -> Qos {
        let (requests, limits) = (&self.requests, &self.limits);
        if requests.cpu == 0.0
            && requests.memory_gib == 0.0
            && limits.cpu.is_none()
            && limits.memory_gib.is_none()
        {
            Qos::BestEffort
        } else if limits.cpu == Some(requests.cpu) && limits.memory_gib == Some(requests.memory_gib)
        {
            Qos::Guaranteed
        } else {
            Qos::Burstable
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}

/// Parses and validates a scenario; `origin` (a file name or a shipped name) goes into errors.
pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
    let scenario: Scenario = toml::from_str(text).map_err(|error| ScenarioError::Parse {
        origin: origin.to_string(),
        error: Box::new(error),
    })?;
    scenario
        .validate()
        .map_err(|(field, problem)| ScenarioError::Invalid {
            origin: origin.to_string(),
            field,
            problem,
        })?;
    Ok(scenario)
}

type Problem = (String, String);

fn check(ok: bool, field: impl Into<String>, problem: &str) -> Result<(), Problem> {
    if ok {
        Ok(())
    } else {
        Err((field.into(), problem.to_string()))
    }
}

fn positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

fn non_negative(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

impl Scenario {
    /// Every node's name, in order.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flat_map(|group| {
                (0..group.count).map(move |i| {
                    if group.count == 1 {
                        group.name.clone()
                    } else {
                        format!("{}-{i}", group.name)
                    }
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), Problem> {
        check(!self.name.trim().is_empty(), "name", "must not be empty")?;
        check(self.rounds > 0, "rounds", "must be at least 1")?;
        let t = &self.timing;
        check(
            t.tick_seconds > 0,
            "timing.tick_seconds",
            "must be at least 1",
        )?;
        check(
            t.round_seconds >= t.tick_seconds && t.round_seconds.is_multiple_of(t.tick_seconds),
            "timing.round_seconds",
            "must be a positive multiple of timing.tick_seconds",
        )?;
        check(
            self.target.max_pressure.is_finite() && self.target.max_pressure > 0.0,
            "target.max_pressure",
            "must be a number > 0 (1.0 = fully pressured)",
        )?;
        check(
            self.target.max_deviation.is_none_or(positive),
            "target.max_deviation",
            "must be a number > 0 (a share of capacity, e.g. 0.25)",
        )?;
        check(
            self.target.settled_rounds > 0,
            "target.settled_rounds",
            "must be at least 1",
        )?;
        self.baseline
            .validate()
            .map_err(|(field, problem)| (format!("baseline.{field}"), problem))?;
        check(
            !self.nodes.is_empty(),
            "nodes",
            "needs at least one [[nodes]] group",
        )?;
        for (i, group) in self.nodes.iter().enumerate() {
            let field = |name: &str| format!("nodes[{i}].{name}");
            check(!group.name.is_empty(), field("name"), "must not be empty")?;
            check(group.count > 0, field("count"), "must be at least 1")?;
            check(
                positive(group.cpu),
                field("cpu"),
                "must be a number of cores > 0",
            )?;
            check(
                positive(group.memory_gib),
                field("memory_gib"),
                "must be > 0",
            )?;
            check(
                positive(group.network_mbit),
                field("network_mbit"),
                "must be > 0",
            )?;
        }
        let names = self.node_names();
        let unique: BTreeSet<&String> = names.iter().collect();
        check(
            unique.len() == names.len(),
            "nodes",
            "name two nodes alike: give each group its own name",
        )?;
        check(
            !self.workloads.is_empty(),
            "workloads",
            "needs at least one [[workloads]] entry",
        )?;
        let mut seen = BTreeSet::new();
        for (i, workload) in self.workloads.iter().enumerate() {
            let field = |name: &str| format!("workloads[{i}].{name}");
            check(
                !workload.name.is_empty(),
                field("name"),
                "must not be empty",
            )?;
            check(
                seen.insert((&workload.namespace, &workload.name)),
                field("name"),
                "is used twice in one namespace: workload names must be unique",
            )?;
            check(
                workload.replicas > 0,
                field("replicas"),
                "must be at least 1",
            )?;
            let r = &workload.requests;
            check(
                non_negative(r.cpu),
                field("requests.cpu"),
                "must be >= 0 cores",
            )?;
            check(
                non_negative(r.memory_gib),
                field("requests.memory_gib"),
                "must be >= 0",
            )?;
            if let Some(cpu) = workload.limits.cpu {
                check(
                    cpu >= r.cpu && positive(cpu),
                    field("limits.cpu"),
                    "must be >= requests.cpu and > 0",
                )?;
            }
            if let Some(memory) = workload.limits.memory_gib {
                check(
                    memory >= r.memory_gib && positive(memory),
                    field("limits.memory_gib"),
                    "must be >= requests.memory_gib and > 0",
                )?;
            }
            if let Some(pdb) = &workload.pdb {
                check(
                    pdb.min_available.is_some() != pdb.max_unavailable.is_some(),
                    field("pdb"),
                    "needs exactly one of min_available and max_unavailable",
                )?;
            }
            for node in &workload.place_on {
                check(
                    names.contains(node),
                    field("place_on"),
                    &format!("names node `{node}`, which is not in [[nodes]] (names are NAME-INDEX for groups with count > 1)"),
                )?;
            }
            for (resource, trace) in [
                ("cpu", &workload.load.cpu),
                ("memory_gib", &workload.load.memory_gib),
                ("network_mbit", &workload.load.network_mbit),
            ] {
                trace
                    .validate()
                    .map_err(|e| (field(&format!("load.{resource}")), e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "tiny"
description = "two nodes"
[[nodes]]
name = "n"
count = 2
cpu = 4
memory_gib = 16
[[workloads]]
name = "web"
kind = "Deployment"
replicas = 2
requests = { cpu = 0.5, memory_gib = 1 }
load = { cpu = [{ constant = 0.4 }, { noise = 0.1 }] }
"#;

    #[test]
    fn a_minimal_scenario_gets_defaults() {
        let scenario = parse("tiny", MINIMAL).expect("valid");
        assert_eq!(scenario.node_names(), ["n-0", "n-1"]);
        assert_eq!(scenario.rounds, 60);
        assert_eq!(scenario.timing, Timing::default());
        assert_eq!(scenario.workloads[0].namespace, "default");
        assert_eq!(scenario.workloads[0].load.cpu.0.len(), 2);
    }

    #[test]
    fn every_shipped_scenario_parses() {
        for (name, text) in SHIPPED {
            let scenario = parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(scenario.name, name);
        }
        assert!(shipped("near-full").is_some());
        assert!(shipped("no-such").is_none());
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let text = MINIMAL.replace("replicas = 2", "replicas = 2\nreplica = 3");
        let error = parse("typo.toml", &text)
            .expect_err("unknown field")
            .to_string();
        assert!(error.contains("typo.toml"), "{error}");
        assert!(error.contains("unknown field `replica`"), "{error}");
    }

    #[test]
    fn invalid_values_name_the_field_and_the_fix() {
        let cases = [
            ("cpu = 4", "cpu = 0", "nodes[0].cpu", "cores > 0"),
            (
                "replicas = 2",
                "replicas = 0",
                "workloads[0].replicas",
                "at least 1",
            ),
            (
                "replicas = 2",
                "replicas = 2\nplace_on = [\"n-7\"]",
                "workloads[0].place_on",
                "`n-7`",
            ),
            (
                "replicas = 2",
                "replicas = 2\npdb = { min_available = 1, max_unavailable = 1 }",
                "workloads[0].pdb",
                "exactly one",
            ),
            (
                "{ noise = 0.1 }",
                "{ noise = -0.1 }",
                "workloads[0].load.cpu",
                "noise amplitude",
            ),
            (
                "description = \"two nodes\"",
                "description = \"x\"\n[timing]\ntick_seconds = 20\nround_seconds = 30",
                "timing.round_seconds",
                "multiple",
            ),
        ];
        for (from, to, field, hint) in cases {
            let text = MINIMAL.replace(from, to);
            let error = parse("s", &text).expect_err(field).to_string();
            assert!(error.contains(&format!("`{field}`")), "{error}");
            assert!(error.contains(hint), "{error}");
        }
    }
}
