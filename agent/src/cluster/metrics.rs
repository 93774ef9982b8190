//! The cluster mode's metric families (names fixed: dashboards and alerts depend on them) and
//! the per-round figures.

use std::collections::BTreeMap;

use super::{
    decisions::{EvictionResult, RoundResult},
    loads::Exclusion,
};
use crate::{
    load::score::Resource,
    rebalance::{
        plan::{NodeStatus, SkipReason},
        Directives, Plan, RebalanceState, Timestamp,
    },
};

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "ballast_leader",
        "1 on the agent that holds the Lease ballast-leader, 0 on the others."
    );
    describe_counter!(
        "ballast_leader_transitions_total",
        "Times this agent became the leader."
    );
    describe_histogram!(
        "ballast_lease_renew_seconds",
        Unit::Seconds,
        "Latency of the Lease create/replace calls of the election."
    );
    describe_counter!("ballast_rounds_total", "Leader rounds by result: planned, failed (see the log and /v1/decisions), fenced (leadership ended during the round).");
    describe_histogram!(
        "ballast_round_duration_seconds",
        Unit::Seconds,
        "Duration of one leader round, gathering to persisting."
    );
    describe_gauge!(
        "ballast_last_round_timestamp_seconds",
        "Unix time the last round finished."
    );
    describe_counter!("ballast_evictions_total", "Evictions asked of the API by result (evicted, pdb_blocked, conflict, not_found, failed, dry_run) and the hot resource of their source (evacuation: drained by an alert).");
    describe_gauge!(
        "ballast_alert_actions_active",
        "Nodes the alerts firing ask to relieve now (targeted_round) or to drain (evacuate), at the last round."
    );
    describe_counter!(
        "ballast_eviction_skips_total",
        "Candidate pods on source nodes the planner did not evict, by reason."
    );
    describe_gauge!(
        "ballast_source_nodes",
        "Nodes in the source state, by resource (last round)."
    );
    describe_gauge!(
        "ballast_node_state",
        "1 for the state each node was in at the last round (normal, abnormal: not yet for enough rounds, source, excluded: no fresh load, evacuating, alerted: an alert asks to relieve it but it is under its release thresholds), 0 for the others."
    );
    describe_gauge!(
        "ballast_hot_taints",
        "Nodes carrying the ballast.io/hot taint (last round)."
    );
    describe_gauge!(
        "ballast_cooldowns_active",
        "Workloads in their eviction cooldown (last round)."
    );
    describe_gauge!("ballast_nodes_excluded", "Nodes left out of the last round for want of load, by reason (stale, missing, unreachable).");
    describe_counter!(
        "ballast_api_requests_total",
        "Requests to the Kubernetes API by verb, resource and HTTP status (error: no answer)."
    );
}

/// What the alerts firing ask, by action.
pub fn alert_actions(directives: &Directives) {
    for (action, nodes) in [
        ("targeted_round", directives.relieve.len()),
        ("evacuate", directives.evacuate.len()),
    ] {
        metrics::gauge!("ballast_alert_actions_active", "action" => action).set(nodes as f64);
    }
}

pub fn eviction(result: EvictionResult, resource: &str) {
    if result == EvictionResult::Fenced {
        return;
    }
    metrics::counter!(
        "ballast_evictions_total",
        "result" => result.as_str(),
        "resource" => resource.to_owned()
    )
    .increment(1);
}

fn snake<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The gauges and counters of a finished round.
pub struct RoundFigures<'a> {
    pub result: RoundResult,
    pub duration_seconds: f64,
    pub finished_at_unix: f64,
    pub plan: Option<&'a Plan>,
    pub state: &'a RebalanceState,
    pub now: Timestamp,
    pub excluded: &'a BTreeMap<String, Exclusion>,
    pub hot_taints: usize,
}

const NODE_STATES: [&str; 6] = [
    "normal",
    "abnormal",
    "source",
    "excluded",
    "evacuating",
    "alerted",
];

/// Every node the round knows (the planner's memory holds all nodes with load, the plan's report
/// the sources, the abnormal and the excluded ones) with its state name.
fn node_states<'a>(plan: &'a Plan, state: &'a RebalanceState) -> BTreeMap<&'a str, &'static str> {
    let mut states: BTreeMap<&str, &'static str> = state
        .nodes
        .keys()
        .map(|node| (node.as_str(), "normal"))
        .collect();
    for report in &plan.nodes {
        let name = match report.status {
            NodeStatus::Source => "source",
            NodeStatus::Abnormal => "abnormal",
            NodeStatus::Excluded => "excluded",
            NodeStatus::Evacuating => "evacuating",
            NodeStatus::Alerted => "alerted",
        };
        states.insert(report.node.as_str(), name);
    }
    states
}

pub fn round(figures: &RoundFigures<'_>) {
    metrics::counter!("ballast_rounds_total", "result" => figures.result.as_str()).increment(1);
    metrics::histogram!("ballast_round_duration_seconds").record(figures.duration_seconds);
    metrics::gauge!("ballast_last_round_timestamp_seconds").set(figures.finished_at_unix);
    if let Some(plan) = figures.plan {
        let mut skips: BTreeMap<SkipReason, u64> = BTreeMap::new();
        for skip in &plan.skipped_pods {
            *skips.entry(skip.reason).or_default() += 1;
        }
        for (reason, count) in skips {
            metrics::counter!("ballast_eviction_skips_total", "reason" => snake(&reason))
                .increment(count);
        }
    }
    for resource in Resource::ALL {
        let sources = figures
            .state
            .nodes
            .values()
            .filter(|r| r.get(&resource).is_some_and(|h| h.source))
            .count();
        metrics::gauge!("ballast_source_nodes", "resource" => resource.to_string())
            .set(sources as f64);
    }
    if let Some(plan) = figures.plan {
        for (node, current) in node_states(plan, figures.state) {
            for state in NODE_STATES {
                let value = if state == current { 1.0 } else { 0.0 };
                metrics::gauge!("ballast_node_state", "node" => node.to_owned(), "state" => state)
                    .set(value);
            }
        }
    }
    metrics::gauge!("ballast_hot_taints").set(figures.hot_taints as f64);
    let cooling = figures
        .state
        .workloads
        .values()
        .filter(|w| w.cooldown_until.is_some_and(|until| until > figures.now))
        .count();
    metrics::gauge!("ballast_cooldowns_active").set(cooling as f64);
    for reason in Exclusion::ALL {
        let count = figures.excluded.values().filter(|r| **r == reason).count();
        metrics::gauge!("ballast_nodes_excluded", "reason" => reason.as_str()).set(count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::{plan::NodeReport, state::Hysteresis};

    #[test]
    fn every_known_node_has_one_state_and_the_plan_names_the_unusual_ones() {
        let mut state = RebalanceState::default();
        for node in ["a", "b", "c"] {
            state.nodes.insert(
                node.to_owned(),
                BTreeMap::from([(Resource::Cpu, Hysteresis::default())]),
            );
        }
        let report = |node: &str, status| NodeReport {
            node: node.to_owned(),
            status,
            resources: vec![Resource::Cpu],
            skip: None,
            detail: String::new(),
        };
        let (mut plan, _) = crate::rebalance::plan(
            &crate::rebalance::ClusterSnapshot::default(),
            &RebalanceState::default(),
            &crate::rebalance::Policy::default(),
            Timestamp(0),
        );
        plan.nodes = vec![
            report("a", NodeStatus::Source),
            report("d", NodeStatus::Excluded),
        ];
        let states = node_states(&plan, &state);
        assert_eq!(
            states.into_iter().collect::<Vec<_>>(),
            vec![
                ("a", "source"),
                ("b", "normal"),
                ("c", "normal"),
                ("d", "excluded")
            ]
        );
    }
}
