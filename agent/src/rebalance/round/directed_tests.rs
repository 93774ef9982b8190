//! Rounds with alert directives (README "Alert-driven rebalancing"): relieving a node now,
//! draining one, and what an off-schedule round leaves alone.

use std::collections::BTreeSet;

use super::{
    tests::{cluster, evicted, skip_of},
    *,
};
use crate::rebalance::{
    fixtures::{node, node_load, pod, pod_load, GIB},
    plan::{plan, plan_directed},
    policy::Policy,
};

const NOW: Timestamp = Timestamp(100_000);

fn alerts(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn relieve(node: &str) -> Directives {
    let mut d = Directives::default();
    d.relieve
        .insert(node.to_owned(), alerts(&["BallastNodeCPUContention"]));
    d
}

fn evacuate(node: &str) -> Directives {
    let mut d = Directives::default();
    d.evacuate
        .insert(node.to_owned(), alerts(&["NodeDiskFailing"]));
    d
}

/// A round with no memory of earlier ones.
fn first_round(
    s: &ClusterSnapshot,
    policy: &Policy,
    directives: &Directives,
) -> (Plan, RebalanceState) {
    plan_directed(s, &RebalanceState::default(), policy, NOW, directives)
}

/// The pods the plan moves off `node`.
fn evicted_off<'p>(plan: &'p Plan, node: &str) -> Vec<&'p str> {
    plan.evictions
        .iter()
        .filter(|e| e.source == node)
        .map(|e| e.pod.name.as_str())
        .collect()
}

fn report<'p>(plan: &'p Plan, node: &str) -> Option<&'p NodeReport> {
    plan.nodes.iter().find(|n| n.node == node)
}

#[test]
fn an_alert_relieves_a_node_without_waiting_out_the_abnormal_rounds() {
    let policy = Policy::default(); // 3 abnormal rounds make a source
    let s = cluster();
    let fresh = RebalanceState::default();
    let (scheduled, scheduled_next) = plan(&s, &fresh, &policy, NOW);
    assert!(scheduled.evictions.is_empty());

    let (alerted, alerted_next) = plan_directed(&s, &fresh, &policy, NOW, &relieve("hot"));
    assert_eq!(evicted(&alerted), ["web-0"]);
    assert_eq!(
        report(&alerted, "hot").map(|r| (r.status, r.skip)),
        Some((NodeStatus::Source, None))
    );
    // The alert changes what is done now, not the hysteresis a scheduled round counts.
    assert_eq!(alerted_next.nodes, scheduled_next.nodes);
    assert!(alerted_next
        .workloads
        .values()
        .any(|w| w.in_flight.is_some()));
}

#[test]
fn the_hysteresis_floor_holds_an_alert_off_a_node_under_its_release_thresholds() {
    let policy = Policy::default();
    let mut s = cluster();
    // Default CPU band: utilisation 0.70..0.85.
    s.node_loads.insert("hot".to_owned(), node_load(0.6, 0.3));
    let (p, _) = first_round(&s, &policy, &relieve("hot"));
    assert!(p.evictions.is_empty(), "{:?}", p.evictions);
    let r = report(&p, "hot");
    assert_eq!(
        r.map(|r| (r.status, r.skip)),
        Some((NodeStatus::Alerted, Some(NodeSkip::UnderTarget)))
    );
    assert!(r.is_some_and(|r| r.detail.contains("BallastNodeCPUContention")));

    // Between low and high: relieved down to the release threshold, no further.
    s.node_loads.insert("hot".to_owned(), node_load(0.8, 0.3));
    let (p, _) = first_round(&s, &policy, &relieve("hot"));
    assert_eq!(evicted(&p), ["web-0"], "0.80 - 0.30 = 0.50 <= 0.70");
}

#[test]
fn an_alert_round_keeps_every_limit() {
    let mut policy = Policy::default();
    policy.limits.per_round = 0;
    let (p, _) = first_round(&cluster(), &policy, &relieve("hot"));
    assert!(p.evictions.is_empty());
    assert_eq!(
        report(&p, "hot").and_then(|r| r.skip),
        Some(NodeSkip::LimitReached)
    );
}

#[test]
fn an_off_schedule_round_acts_on_the_alerted_node_only_and_counts_no_round() {
    let mut policy = Policy::default();
    policy.classification.abnormal_rounds = 1;
    let mut s = cluster();
    s.nodes.push(node("hot-2", 4000, 16 * GIB));
    s.node_loads
        .insert("hot-2".to_owned(), node_load(0.95, 0.3));
    for (name, cores) in [("cache-0", 1.2), ("cache-1", 0.1)] {
        let p = pod(name, if name == "cache-0" { "hot-2" } else { "cold-b" });
        s.pod_loads
            .insert(p.uid.clone(), pod_load(cores, GIB as f64));
        s.pods.push(p);
    }
    // A scheduled round made both sources (and planned what it planned).
    let (_, state) = plan(&s, &RebalanceState::default(), &policy, NOW);
    let mut directives = relieve("hot");
    directives.off_schedule = true;
    let (p, next) = plan_directed(&s, &state, &policy, Timestamp(NOW.0 + 5), &directives);
    assert!(evicted(&p)
        .iter()
        .all(|pod| pod.ends_with("-0") && !pod.starts_with("cache")));
    assert_eq!(
        report(&p, "hot-2").map(|r| (r.status, r.skip)),
        Some((NodeStatus::Source, Some(NodeSkip::OffSchedule)))
    );
    assert_eq!(next.nodes, state.nodes, "no hysteresis counter moves");
}

#[test]
fn an_evacuation_moves_one_pod_at_a_time_whatever_the_load() {
    let policy = Policy::default();
    let s = cluster();
    let (p, state) = first_round(&s, &policy, &evacuate("cold-a"));
    assert_eq!(p.evictions.len(), 1, "{:?}", p.evictions);
    let first = &p.evictions[0];
    assert_eq!(first.source, "cold-a");
    assert!(first.reason.contains("NodeDiskFailing"), "{}", first.reason);
    assert!(first
        .destinations
        .iter()
        .all(|d| d.node != "cold-a" && d.node != "hot"));
    let other = if first.pod.name == "web-1" {
        "api-1"
    } else {
        "web-1"
    };
    assert_eq!(skip_of(&p, other), Some(SkipReason::EvacuationQueued));
    assert_eq!(
        report(&p, "cold-a").map(|r| r.status),
        Some(NodeStatus::Evacuating)
    );

    // Next round: the first one's replacement is not Ready, so nothing moves.
    let later = Timestamp(NOW.0 + 30);
    let (p, state) = plan_directed(&s, &state, &policy, later, &evacuate("cold-a"));
    assert!(p.evictions.is_empty());
    assert_eq!(skip_of(&p, other), Some(SkipReason::EvacuationQueued));

    // Its replacement Ready on cold-b: the next pod goes.
    let mut s = s;
    s.pods.retain(|pod| pod.name != first.pod.name);
    let workload = first.pod.name.trim_end_matches("-1");
    let mut replacement = pod(&format!("{workload}-2"), "cold-b");
    replacement.start_time = Timestamp(NOW.0 + 10);
    s.pod_loads
        .insert(replacement.uid.clone(), pod_load(0.1, GIB as f64));
    s.pods.push(replacement);
    let (p, _) = plan_directed(
        &s,
        &state,
        &policy,
        Timestamp(NOW.0 + 60),
        &evacuate("cold-a"),
    );
    // (hot became a source on the way: three scheduled rounds.)
    let drained: Vec<&str> = evicted_off(&p, "cold-a");
    assert_eq!(drained, [other]);
}

#[test]
fn an_evacuation_needs_no_load_and_the_node_takes_no_pods() {
    let mut policy = Policy::default();
    policy.classification.abnormal_rounds = 1;
    let mut s = cluster();
    s.node_loads.remove("cold-a");
    s.pod_loads.remove("uid-web-1");
    s.pod_loads.remove("uid-api-1");
    let (p, _) = first_round(&s, &policy, &evacuate("cold-a"));
    let from_cold_a: Vec<&Eviction> = p
        .evictions
        .iter()
        .filter(|e| e.source == "cold-a")
        .collect();
    assert_eq!(from_cold_a.len(), 1, "placed by its requests: {p:?}");
    assert!(from_cold_a[0].source_before.is_empty());
    // hot is relieved in the same round, never onto the node being drained.
    assert!(p.evictions.iter().any(|e| e.source == "hot"));
    assert!(p
        .evictions
        .iter()
        .flat_map(|e| &e.destinations)
        .all(|d| d.node != "cold-a"));
}
