//! Decisions of whole rounds on a small cluster: one test per rule or limit as it shows in a plan.

use super::*;
use crate::rebalance::{
    fixtures::{node, node_load, pdb, pod, pod_load, GIB},
    plan::plan,
    policy::Policy,
    snapshot::{Qos, Taint, TaintEffect},
};

const NOW: Timestamp = Timestamp(100_000);

/// `hot` (4 cores at 95% CPU) holds web-0 (1.2 cores), api-0 (0.6) and db-0 (0.5); `cold-a`
/// and `cold-b` (4 cores at 30%) hold a second replica of each, so every workload has two
/// Ready replicas.
pub(super) fn cluster() -> ClusterSnapshot {
    let mut s = ClusterSnapshot::default();
    for name in ["hot", "cold-a", "cold-b"] {
        s.nodes.push(node(name, 4000, 16 * GIB));
    }
    s.node_loads.insert("hot".to_owned(), node_load(0.95, 0.5));
    s.node_loads
        .insert("cold-a".to_owned(), node_load(0.3, 0.3));
    s.node_loads
        .insert("cold-b".to_owned(), node_load(0.3, 0.3));
    for (name, cores, node) in [
        ("web-0", 1.2, "hot"),
        ("api-0", 0.6, "hot"),
        ("db-0", 0.5, "hot"),
        ("web-1", 0.1, "cold-a"),
        ("api-1", 0.1, "cold-a"),
        ("db-1", 0.1, "cold-b"),
    ] {
        let p = pod(name, node);
        s.pod_loads
            .insert(p.uid.clone(), pod_load(cores, GIB as f64));
        s.pods.push(p);
    }
    s
}

/// Sources after one abnormal round, so that a single call shows the decisions.
fn policy() -> Policy {
    let mut p = Policy::default();
    p.classification.abnormal_rounds = 1;
    p
}

fn run(s: &ClusterSnapshot, policy: &Policy) -> Plan {
    plan(s, &RebalanceState::default(), policy, NOW).0
}

pub(super) fn evicted(plan: &Plan) -> Vec<&str> {
    plan.evictions.iter().map(|e| e.pod.name.as_str()).collect()
}

pub(super) fn skip_of(plan: &Plan, pod: &str) -> Option<SkipReason> {
    plan.skipped_pods
        .iter()
        .find(|s| s.pod.name == pod)
        .map(|s| s.reason)
}

fn set_pod(s: &mut ClusterSnapshot, name: &str, change: impl FnOnce(&mut Pod)) {
    if let Some(p) = s.pods.iter_mut().find(|p| p.name == name) {
        change(p);
    }
}

#[test]
fn evicts_just_enough_with_the_most_relief_first() {
    let plan = run(&cluster(), &policy());
    // 0.95 - 1.2/4 = 0.65 <= 0.70: one eviction suffices.
    assert_eq!(evicted(&plan), ["web-0"]);
    let e = &plan.evictions[0];
    assert_eq!(e.source, "hot");
    let after = e.source_after[&Resource::Cpu].utilisation.unwrap_or(1.0);
    assert!((after - 0.65).abs() < 1e-9);
    assert!(!e.destinations.is_empty());
    assert!(
        e.reason.contains("utilisation 0.95 -> 0.65"),
        "{}",
        e.reason
    );
    assert_eq!(skip_of(&plan, "api-0"), Some(SkipReason::TargetReached));
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::TargetReached));
    assert_eq!(plan.summary.pods_considered, 3);
    let report = plan.nodes.iter().find(|n| n.node == "hot");
    assert_eq!(
        report.map(|r| (r.status, r.skip)),
        Some((NodeStatus::Source, None))
    );
}

#[test]
fn lower_priority_and_qos_go_first() {
    let mut s = cluster();
    set_pod(&mut s, "web-0", |p| p.priority = 100);
    let plan = run(&s, &policy());
    // api-0 and db-0 (priority 0) first: 0.95 - 0.15 - 0.125 = 0.675.
    assert_eq!(evicted(&plan), ["api-0", "db-0"]);
    let mut s = cluster();
    set_pod(&mut s, "web-0", |p| p.qos = Qos::Guaranteed);
    set_pod(&mut s, "db-0", |p| p.qos = Qos::BestEffort);
    assert_eq!(evicted(&run(&s, &policy()))[0], "db-0");
}

#[test]
fn a_node_needs_consecutive_abnormal_rounds_and_is_released_after_normal_ones() {
    let policy = Policy::default(); // 3 abnormal, 3 normal rounds
    let s = cluster();
    let mut state = RebalanceState::default();
    for round in 1..=2 {
        let (p, next) = plan(&s, &state, &policy, NOW);
        assert!(p.evictions.is_empty(), "round {round}");
        let report = p.nodes.iter().find(|n| n.node == "hot");
        assert_eq!(report.map(|r| r.status), Some(NodeStatus::Abnormal));
        state = next;
    }
    let (p, next) = plan(&s, &state, &policy, NOW);
    assert_eq!(evicted(&p), ["web-0"]);
    assert!(next.nodes["hot"][&Resource::Cpu].source);
    // Normal load for three rounds releases it.
    let mut calm = s.clone();
    calm.node_loads
        .insert("hot".to_owned(), node_load(0.5, 0.5));
    let mut state = next;
    for _ in 0..3 {
        state = plan(&calm, &state, &policy, NOW).1;
    }
    assert!(!state.nodes.contains_key("hot"), "{:?}", state.nodes);
}

#[test]
fn throttling_is_never_a_reason() {
    let mut s = cluster();
    let mut load = node_load(0.5, 0.5);
    load.cpu_throttled_share = Some(0.9);
    s.node_loads.insert("hot".to_owned(), load);
    let plan = run(&s, &policy());
    assert!(plan.evictions.is_empty());
    assert!(plan.nodes.is_empty(), "{:?}", plan.nodes);
}

#[test]
fn contention_makes_a_source_and_its_relief_is_predicted() {
    let mut s = cluster();
    let mut load = node_load(0.8, 0.5);
    load.cpu.pressure = Some(0.4);
    s.node_loads.insert("hot".to_owned(), load);
    let plan = run(&s, &policy());
    assert_eq!(evicted(&plan), ["web-0"]);
    let after = &plan.evictions[0].source_after[&Resource::Cpu];
    assert!(after.pressure.unwrap_or(1.0) <= 0.10, "{after:?}");
}

#[test]
fn nodes_without_fresh_load_are_on_neither_side() {
    let mut s = cluster();
    if let Some(l) = s.node_loads.get_mut("hot") {
        l.fresh = false;
    }
    let plan = run(&s, &policy());
    assert!(plan.evictions.is_empty());
    let report = plan.nodes.iter().find(|n| n.node == "hot");
    assert_eq!(report.and_then(|r| r.skip), Some(NodeSkip::LoadUnknown));
    // Cold nodes without load are no destinations.
    let mut s = cluster();
    s.node_loads.remove("cold-a");
    s.node_loads.remove("cold-b");
    let plan = run(&s, &policy());
    assert!(plan.evictions.is_empty());
    assert_eq!(skip_of(&plan, "web-0"), Some(SkipReason::NoDestination));
}

#[test]
fn pods_without_load_are_not_moved() {
    let mut s = cluster();
    s.pod_loads.remove("uid-web-0");
    let plan = run(&s, &policy());
    assert_eq!(skip_of(&plan, "web-0"), Some(SkipReason::LoadUnknown));
    assert!(!evicted(&plan).contains(&"web-0"));
}

#[test]
fn pdb_with_no_disruptions_left_protects_and_counts_down() {
    let mut s = cluster();
    s.pdbs.push(pdb("web", 0));
    let plan = run(&s, &policy());
    assert_eq!(skip_of(&plan, "web-0"), Some(SkipReason::Pdb));
    assert_eq!(evicted(&plan), ["api-0", "db-0"]);
    // One PDB over api and db with one disruption: the second is refused.
    let mut s = cluster();
    set_pod(&mut s, "web-0", |p| p.priority = 100);
    let mut shared = pdb("x", 1);
    shared.selector.match_labels.clear();
    s.pdbs.push(shared);
    let plan = run(&s, &policy());
    assert_eq!(evicted(&plan), ["api-0"]);
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::Pdb));
}

#[test]
fn per_node_namespace_round_and_rate_limits() {
    let mut s = cluster();
    set_pod(&mut s, "web-0", |p| p.priority = 100); // two evictions needed
    let limited = |change: fn(&mut Policy)| {
        let mut p = policy();
        change(&mut p);
        run(&s, &p)
    };
    let plan = limited(|p| p.limits.per_node = 1);
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::NodeLimit));
    let plan = limited(|p| p.limits.per_namespace = 1);
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::NamespaceLimit));
    let plan = limited(|p| p.limits.per_round = 1);
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::RoundLimit));
    let plan = limited(|p| p.limits.token_bucket.burst = 1);
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::RateLimit));
    assert_eq!(plan.summary.tokens_left, 0.0);
}

#[test]
fn an_empty_bucket_refills_over_time() {
    let s = cluster();
    let state = RebalanceState {
        tokens: crate::rebalance::state::TokenBucket {
            tokens: 0.0,
            updated: Some(NOW),
        },
        ..RebalanceState::default()
    };
    let (p, _) = plan(&s, &state, &policy(), NOW);
    assert!(p.evictions.is_empty());
    let report = p.nodes.iter().find(|n| n.node == "hot");
    assert_eq!(report.and_then(|r| r.skip), Some(NodeSkip::LimitReached));
    // 10 per minute: one token after 6 s.
    let (p, _) = plan(&s, &state, &policy(), Timestamp(NOW.0 + 6));
    assert_eq!(evicted(&p), ["web-0"]);
}

#[test]
fn destinations_must_fit_requests_taints_and_schedulability() {
    let mut s = cluster();
    set_pod(&mut s, "web-0", |p| p.requests.cpu_millicores = 3950);
    s.pods.retain(|p| p.name != "api-0" && p.name != "db-0");
    let plan = run(&s, &policy());
    let skip = plan.skipped_pods.iter().find(|p| p.pod.name == "web-0");
    assert_eq!(skip.map(|s| s.reason), Some(SkipReason::NoDestination));
    assert!(
        skip.is_some_and(|s| s.detail.contains("2 lack free cpu for its requests")),
        "{skip:?}"
    );
    let mut s = cluster();
    for n in s.nodes.iter_mut().filter(|n| n.name == "cold-a") {
        n.unschedulable = true;
    }
    for n in s.nodes.iter_mut().filter(|n| n.name == "cold-b") {
        n.taints.push(Taint {
            key: "k".to_owned(),
            value: String::new(),
            effect: TaintEffect::NoExecute,
        });
    }
    let plan = run(&s, &policy());
    assert!(plan.evictions.is_empty());
    let skip = plan.skipped_pods.iter().find(|p| p.pod.name == "web-0");
    assert!(
        skip.is_some_and(|s| s.detail.contains("1 have taints")),
        "{skip:?}"
    );
}

#[test]
fn destinations_stay_under_their_high_threshold() {
    let mut s = cluster();
    s.node_loads
        .insert("cold-a".to_owned(), node_load(0.6, 0.3));
    s.node_loads
        .insert("cold-b".to_owned(), node_load(0.6, 0.3));
    // web-0 (0.3 of a node) would push either to 0.9 > 0.85; api-0 (0.15) fits.
    let plan = run(&s, &policy());
    assert!(!evicted(&plan).contains(&"web-0"));
    let skip = plan.skipped_pods.iter().find(|p| p.pod.name == "web-0");
    assert!(
        skip.is_some_and(|s| s.detail.contains("would go above their high thresholds")),
        "{skip:?}"
    );
    for e in &plan.evictions {
        let u = e.destinations[0].after[&Resource::Cpu].utilisation;
        assert!(u.unwrap_or(1.0) <= 0.85);
    }
}

#[test]
fn ranked_destinations_least_loaded_after_placement_first() {
    let mut s = cluster();
    s.node_loads
        .insert("cold-b".to_owned(), node_load(0.2, 0.2));
    let plan = run(&s, &policy());
    let names: Vec<&str> = plan.evictions[0]
        .destinations
        .iter()
        .map(|d| d.node.as_str())
        .collect();
    assert_eq!(names, ["cold-b", "cold-a"]);
}

#[test]
fn in_flight_blocks_until_the_replacement_is_ready_then_cooldown_rules() {
    let s = cluster();
    let (_, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    assert!(state.workloads.values().any(|w| w.in_flight.is_some()));
    // Next round, web-0 still there: the workload is in flight.
    let later = Timestamp(NOW.0 + 60);
    let (p, state2) = plan(&s, &state, &policy(), later);
    assert_eq!(skip_of(&p, "web-0"), Some(SkipReason::InFlight));
    // web-0 gone, replacement web-2 Ready since the eviction: released, cooldown remains.
    let mut replaced = s.clone();
    replaced.pods.retain(|p| p.name != "web-0");
    let mut web2 = pod("web-2", "cold-b");
    web2.start_time = Timestamp(NOW.0 + 30);
    replaced.pods.push(web2);
    let mut again = pod("web-3", "hot");
    again.start_time = Timestamp(0);
    replaced
        .pod_loads
        .insert(again.uid.clone(), pod_load(1.2, GIB as f64));
    replaced.pods.push(again);
    let (p, state3) = plan(&replaced, &state2, &policy(), later);
    let web = state3
        .workloads
        .get(&crate::rebalance::snapshot::WorkloadKey::new(
            "default",
            "Deployment",
            "web",
        ));
    assert!(web.is_some_and(|w| w.in_flight.is_none()), "{web:?}");
    assert_eq!(skip_of(&p, "web-3"), Some(SkipReason::Cooldown));
}

#[test]
fn dry_run_only_marks_the_plan() {
    let s = cluster();
    let (wet, wet_state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    let mut dry_policy = policy();
    dry_policy.dry_run = true;
    let (dry, dry_state) = plan(&s, &RebalanceState::default(), &dry_policy, NOW);
    assert!(dry.dry_run && !wet.dry_run);
    assert_eq!(
        Plan {
            dry_run: false,
            ..dry
        },
        wet
    );
    assert_eq!(dry_state, wet_state);
}

#[test]
fn ineligible_pods_are_reported_with_their_reason() {
    let mut s = cluster();
    set_pod(&mut s, "web-0", |p| {
        p.owner = Some(crate::rebalance::snapshot::Owner {
            kind: "DaemonSet".to_owned(),
            name: "agent".to_owned(),
            pod_management_policy: None,
        })
    });
    let plan = run(&s, &policy());
    assert_eq!(skip_of(&plan, "web-0"), Some(SkipReason::DaemonSet));
    assert_eq!(evicted(&plan), ["api-0", "db-0"]);
}

#[test]
fn state_survives_json_for_a_new_leader() {
    let s = cluster();
    let (_, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    let text = serde_json::to_string(&state).unwrap_or_default();
    let restored: Option<RebalanceState> = serde_json::from_str(&text).ok();
    assert_eq!(restored.as_ref(), Some(&state));
    let later = Timestamp(NOW.0 + 60);
    assert_eq!(
        restored.map(|r| plan(&s, &r, &policy(), later)),
        Some(plan(&s, &state, &policy(), later))
    );
}

#[test]
fn pods_that_use_nothing_hot_bring_no_relief() {
    let mut s = cluster();
    s.pod_loads
        .insert("uid-db-0".to_owned(), pod_load(0.0, GIB as f64));
    set_pod(&mut s, "web-0", |p| p.priority = 100);
    set_pod(&mut s, "api-0", |p| p.priority = 100);
    let plan = run(&s, &policy());
    assert_eq!(skip_of(&plan, "db-0"), Some(SkipReason::NoRelief));
}

#[test]
fn network_sources_need_the_pods_network_usage() {
    let mut s = cluster();
    let mut load = node_load(0.5, 0.5);
    load.network.utilisation = Some(0.95);
    load.network_capacity_bytes_per_second = Some(1e8);
    s.node_loads.insert("hot".to_owned(), load);
    for cold in ["cold-a", "cold-b"] {
        if let Some(l) = s.node_loads.get_mut(cold) {
            l.network.utilisation = Some(0.1);
            l.network_capacity_bytes_per_second = Some(1e8);
        }
    }
    if let Some(l) = s.pod_loads.get_mut("uid-api-0") {
        l.network_bytes_per_second = Some(4e7);
    }
    let plan = run(&s, &policy());
    assert_eq!(evicted(&plan), ["api-0"]);
    let after = &plan.evictions[0].source_after[&Resource::Network];
    assert!((after.utilisation.unwrap_or(1.0) - 0.55).abs() < 1e-9);
    assert_eq!(skip_of(&plan, "web-0"), Some(SkipReason::LoadUnknown));
}

#[test]
fn a_source_without_utilisation_cannot_be_relieved() {
    let mut s = cluster();
    let mut load = node_load(0.5, 0.5);
    load.cpu.utilisation = None;
    load.cpu.pressure = Some(0.5);
    s.node_loads.insert("hot".to_owned(), load);
    let plan = run(&s, &policy());
    assert!(plan.evictions.is_empty());
    let report = plan.nodes.iter().find(|n| n.node == "hot");
    assert_eq!(report.and_then(|r| r.skip), Some(NodeSkip::LoadIncomplete));
}

#[test]
fn a_source_under_its_release_threshold_waits_without_evicting() {
    let s = cluster();
    let (_, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    let mut calm = s.clone();
    calm.node_loads
        .insert("hot".to_owned(), node_load(0.6, 0.5));
    let (p, next) = plan(&calm, &state, &policy(), NOW);
    assert!(p.evictions.is_empty());
    let report = p.nodes.iter().find(|n| n.node == "hot");
    assert_eq!(
        report.map(|r| (r.status, r.skip)),
        Some((NodeStatus::Source, Some(NodeSkip::UnderTarget)))
    );
    assert_eq!(next.nodes["hot"][&Resource::Cpu].normal_rounds, 1);
}

#[test]
fn deviation_mode_finds_the_outlier_of_a_busy_cluster() {
    let mut s = cluster();
    // Everyone busy, hot only a little above the others: no absolute source...
    s.node_loads.insert("hot".to_owned(), node_load(0.8, 0.5));
    s.node_loads
        .insert("cold-a".to_owned(), node_load(0.4, 0.5));
    s.node_loads
        .insert("cold-b".to_owned(), node_load(0.4, 0.5));
    assert!(run(&s, &policy()).evictions.is_empty());
    // ...but 0.27 above the mean (0.53) with a 0.2 trigger and 0.1 release band.
    let mut p = policy();
    p.classification.mode = crate::rebalance::policy::ThresholdMode::Deviation;
    p.classification.cpu.utilisation = crate::rebalance::policy::Band {
        high: 0.2,
        low: 0.1,
    };
    let plan = run(&s, &p);
    assert_eq!(evicted(&plan), ["web-0"]);
}

#[test]
fn one_eviction_per_workload_per_round() {
    let mut s = cluster();
    // A second web replica on the hot node that cannot reach the target alone (0.95 - 0.9/4 =
    // 0.725); web-0 comes next, then api-0 and db-0 (higher priority).
    let web9 = pod("web-9", "hot");
    s.pod_loads
        .insert(web9.uid.clone(), pod_load(0.9, GIB as f64));
    set_pod(&mut s, "api-0", |p| p.priority = 100);
    set_pod(&mut s, "db-0", |p| p.priority = 100);
    s.pods.push(web9);
    s.pod_loads
        .insert("uid-web-0".to_owned(), pod_load(0.5, GIB as f64));
    let plan = run(&s, &policy());
    let web: Vec<&str> = evicted(&plan)
        .into_iter()
        .filter(|p| p.starts_with("web"))
        .collect();
    assert_eq!(web, ["web-9"]);
    assert_eq!(skip_of(&plan, "web-0"), Some(SkipReason::WorkloadLimit));
}

#[test]
fn removed_nodes_are_forgotten() {
    let s = cluster();
    let (_, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    assert!(state.nodes.contains_key("hot"));
    let mut without = s.clone();
    without.nodes.retain(|n| n.name != "hot");
    let (_, state) = plan(&without, &state, &policy(), NOW);
    assert!(!state.nodes.contains_key("hot"));
}

fn web_memory(state: &RebalanceState) -> Option<&crate::rebalance::state::WorkloadMemory> {
    state
        .workloads
        .get(&crate::rebalance::snapshot::WorkloadKey::new(
            "default",
            "Deployment",
            "web",
        ))
}

/// `s` after web-0's eviction: its replacement web-2 Ready on `node` since 30 s after `NOW`.
fn replaced_on(s: &ClusterSnapshot, node: &str) -> ClusterSnapshot {
    let mut replaced = s.clone();
    replaced.pods.retain(|p| p.name != "web-0");
    let mut web2 = pod("web-2", node);
    web2.start_time = Timestamp(NOW.0 + 30);
    replaced
        .pod_loads
        .insert(web2.uid.clone(), pod_load(1.2, GIB as f64));
    replaced.pods.push(web2);
    replaced
}

#[test]
fn a_workload_is_not_moved_off_a_node_it_was_just_moved_onto() {
    let s = cluster();
    let (p, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    assert_eq!(evicted(&p), ["web-0"]);
    let mut replaced = replaced_on(&s, "cold-b");
    let (_, state) = plan(&replaced, &state, &policy(), Timestamp(NOW.0 + 60));
    let memory = web_memory(&state);
    assert!(
        memory.is_some_and(|m| m.in_flight.is_none()
            && m.strikes == 0
            && m.arrivals.iter().any(|a| a.node == "cold-b")),
        "{memory:?}"
    );
    // Ten minutes on, the load has shifted: cold-b is hot, `hot` is not.
    replaced
        .node_loads
        .insert("cold-b".to_owned(), node_load(0.95, 0.5));
    replaced
        .node_loads
        .insert("hot".to_owned(), node_load(0.3, 0.3));
    let (p, _) = plan(&replaced, &state, &policy(), Timestamp(NOW.0 + 600));
    assert_eq!(skip_of(&p, "web-2"), Some(SkipReason::CameBack), "{p:?}");
    assert!(!evicted(&p).contains(&"web-2"));
}

#[test]
fn a_replacement_arriving_back_on_its_source_is_a_strike() {
    let s = cluster();
    let (_, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    let later = Timestamp(NOW.0 + 60);
    let (_, state) = plan(&replaced_on(&s, "hot"), &state, &policy(), later);
    let memory = web_memory(&state);
    let base = policy().limits.cooldown.base_seconds as i64;
    assert!(
        memory.is_some_and(|m| m.strikes == 1
            && m.last_strike == Some(later)
            && m.cooldown_until == Some(later.plus_seconds(2 * base))
            && m.arrivals.is_empty()),
        "{memory:?}"
    );
}

#[test]
fn an_eviction_in_flight_is_given_up_after_the_timeout() {
    let mut s = cluster();
    let web3 = pod("web-3", "hot");
    s.pod_loads
        .insert(web3.uid.clone(), pod_load(1.2, GIB as f64));
    s.pods.push(web3);
    let (p, state) = plan(&s, &RebalanceState::default(), &policy(), NOW);
    let first = p.evictions[0].pod.name.clone();
    let other = if first == "web-0" { "web-3" } else { "web-0" };
    // The replacement is stuck Pending.
    let mut stuck = s.clone();
    stuck.pods.retain(|p| p.name != first);
    let mut pending = pod("web-2", "cold-a");
    pending.node = None;
    pending.ready = false;
    pending.start_time = NOW;
    stuck.pods.push(pending);
    let timeout = policy().limits.in_flight_timeout_seconds as i64;
    let (p, waiting) = plan(&stuck, &state, &policy(), NOW.plus_seconds(timeout - 1));
    assert_eq!(skip_of(&p, other), Some(SkipReason::InFlight));
    assert!(p.expired_in_flight.is_empty());
    let (p, after) = plan(&stuck, &waiting, &policy(), NOW.plus_seconds(timeout));
    assert_eq!(p.expired_in_flight.len(), 1, "{p:?}");
    assert_eq!(p.expired_in_flight[0].pod, first);
    assert_eq!(p.expired_in_flight[0].source, "hot");
    assert!(evicted(&p).contains(&other), "{p:?}");
    assert!(web_memory(&after)
        .is_some_and(|m| m.in_flight.as_ref().is_some_and(|f| f.pod_name == other)));
}
