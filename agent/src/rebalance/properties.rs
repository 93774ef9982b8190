//! Properties of `plan` over random clusters (see `fixtures::cluster`): whatever the cluster, a
//! plan never breaks a PDB, a limit or a fit, never raises the hottest node, is deterministic,
//! and does nothing on a balanced or a full cluster.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::{
    classify::Thresholds,
    directives::Directives,
    fixtures::cluster,
    loads::Loads,
    matching::{covers, placeable},
    plan::{plan, plan_directed, Figures, Plan},
    policy::Policy,
    snapshot::{ClusterSnapshot, Timestamp},
    state::RebalanceState,
};
use crate::load::score::Resource;

const NOW: Timestamp = Timestamp(1_000_000);

fn policy() -> impl Strategy<Value = Policy> {
    (1..6u32, 1..4u32, 1..5u32, 1..8u32, 1..3u32).prop_map(
        |(per_round, per_node, per_namespace, burst, min_replicas)| {
            let mut p = Policy::default();
            p.classification.abnormal_rounds = 1;
            p.eligibility.min_replicas = min_replicas;
            p.limits.per_round = per_round;
            p.limits.per_node = per_node;
            p.limits.per_namespace = per_namespace;
            p.limits.token_bucket.burst = burst;
            p
        },
    )
}

fn figures_of(snapshot: &ClusterSnapshot, node: &str) -> Option<Figures> {
    let n = snapshot.nodes.iter().find(|n| n.name == node)?;
    let load = snapshot
        .node_loads
        .get(node)
        .filter(|l| l.fresh && n.ready)?;
    Some(
        Resource::ALL
            .iter()
            .map(|r| (*r, load.resource(*r).clone()))
            .collect(),
    )
}

fn check_invariants(snapshot: &ClusterSnapshot, policy: &Policy, plan: &Plan) {
    check_limits(snapshot, policy, plan);
    check_hottest_not_raised(snapshot, policy, plan);
}

/// PDBs, limits, eligibility and fit.
fn check_limits(snapshot: &ClusterSnapshot, policy: &Policy, plan: &Plan) {
    let pods_by_uid: BTreeMap<&str, _> =
        snapshot.pods.iter().map(|p| (p.uid.as_str(), p)).collect();
    let limits = &policy.limits;
    assert!(plan.evictions.len() <= limits.per_round as usize);
    assert!(plan.evictions.len() <= limits.token_bucket.burst as usize);
    let mut per_node: BTreeMap<&str, u32> = BTreeMap::new();
    let mut per_namespace: BTreeMap<&str, u32> = BTreeMap::new();
    let mut per_workload: BTreeMap<&str, u32> = BTreeMap::new();
    let mut landed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &plan.evictions {
        let pod = pods_by_uid[e.pod.uid.as_str()];
        assert_eq!(pod.node.as_deref(), Some(e.source.as_str()));
        assert!(pod.ready && !pod.mirror);
        assert!(pod.owner.as_ref().is_some_and(|o| o.kind != "DaemonSet"));
        *per_node.entry(e.source.as_str()).or_default() += 1;
        *per_namespace.entry(pod.namespace.as_str()).or_default() += 1;
        *per_workload.entry(e.workload.0.as_str()).or_default() += 1;
        let best = e
            .destinations
            .first()
            .expect("every eviction has a destination");
        assert_ne!(best.node, e.source);
        let node = snapshot
            .nodes
            .iter()
            .find(|n| n.name == best.node)
            .expect("destination exists");
        assert!(node.ready && !node.unschedulable);
        assert!(snapshot.node_loads.get(&node.name).is_some_and(|l| l.fresh));
        assert_eq!(placeable(pod, node), Ok(()));
        landed
            .entry(node.name.as_str())
            .or_default()
            .push(e.pod.uid.as_str());
    }
    assert!(per_node.values().all(|n| *n <= limits.per_node));
    assert!(per_namespace.values().all(|n| *n <= limits.per_namespace));
    assert!(per_workload.values().all(|n| *n == 1));
    // Requests of everything on a destination plus what lands there fit its allocatable.
    for (node, arriving) in landed {
        let n = snapshot
            .nodes
            .iter()
            .find(|n| n.name == node)
            .expect("exists");
        let on_node = snapshot
            .pods
            .iter()
            .filter(|p| p.node.as_deref() == Some(node));
        let arrivals = arriving.iter().map(|uid| pods_by_uid[uid]);
        let (cpu, memory) = on_node.chain(arrivals).fold((0, 0), |(c, m), p| {
            (c + p.requests.cpu_millicores, m + p.requests.memory_bytes)
        });
        assert!(cpu <= n.allocatable.cpu_millicores, "{node}: cpu {cpu}");
        assert!(
            memory <= n.allocatable.memory_bytes,
            "{node}: memory {memory}"
        );
    }
    for pdb in &snapshot.pdbs {
        let disrupted = plan
            .evictions
            .iter()
            .map(|e| pods_by_uid[e.pod.uid.as_str()])
            .filter(|p| covers(pdb, p))
            .count();
        assert!(
            disrupted <= pdb.disruptions_allowed as usize,
            "{}",
            pdb.name
        );
    }
}

/// The hottest node, before and after the predicted moves, relative to the high thresholds.
fn check_hottest_not_raised(snapshot: &ClusterSnapshot, policy: &Policy, plan: &Plan) {
    let thresholds = Thresholds::for_round(&policy.classification, Vec::<Loads>::new().iter());
    let mut after: BTreeMap<&str, Figures> = snapshot
        .nodes
        .iter()
        .filter_map(|n| Some((n.name.as_str(), figures_of(snapshot, &n.name)?)))
        .collect();
    let max = |m: &BTreeMap<&str, Figures>| {
        m.values()
            .map(|f| thresholds.node_level(&Loads::from_figures(f)))
            .fold(0.0, f64::max)
    };
    let before = max(&after);
    for e in &plan.evictions {
        after.insert(e.source.as_str(), e.source_after.clone());
        after.insert(
            e.destinations[0].node.as_str(),
            e.destinations[0].after.clone(),
        );
    }
    assert!(max(&after) <= before + 1e-9, "{} > {before}", max(&after));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn plans_respect_pdbs_limits_and_fit_and_never_raise_the_hottest_node(
        snapshot in cluster(),
        policy in policy(),
    ) {
        let (plan, state) = plan(&snapshot, &RebalanceState::default(), &policy, NOW);
        check_invariants(&snapshot, &policy, &plan);
        // The next round, with the memory of this one, still holds them.
        let (next, _) = plan_again(&snapshot, &state, &policy);
        check_invariants(&snapshot, &policy, &next);
        prop_assert!(next.evictions.iter().all(|e| {
            plan.evictions.iter().all(|first| first.workload != e.workload)
        }), "a workload in flight was evicted again");
    }

    #[test]
    fn alert_directives_keep_every_limit_and_never_fill_a_drained_node(
        snapshot in cluster(),
        policy in policy(),
        relieve in prop::collection::btree_set(0..12usize, 0..3),
        evacuate in prop::collection::btree_set(0..12usize, 0..3),
        off_schedule in any::<bool>(),
    ) {
        let name = |i: &usize| snapshot.nodes[i % snapshot.nodes.len()].name.clone();
        let alert = || std::collections::BTreeSet::from(["A".to_owned()]);
        let directives = Directives {
            off_schedule,
            relieve: relieve.iter().map(|i| (name(i), alert())).collect(),
            evacuate: evacuate.iter().map(|i| (name(i), alert())).collect(),
        };
        let (plan, _) = plan_directed(&snapshot, &RebalanceState::default(), &policy, NOW, &directives);
        check_limits(&snapshot, &policy, &plan);
        for e in &plan.evictions {
            prop_assert!(!directives.evacuates(&e.destinations[0].node), "{} placed on a drained node", e.pod);
            prop_assert!(directives.acts_on(&e.source), "{} moved off an undirected node off schedule", e.pod);
        }
        for node in directives.evacuate.keys() {
            let moved = plan.evictions.iter().filter(|e| &e.source == node).count();
            prop_assert!(moved <= 1, "{moved} pods moved off {node} at once");
        }
    }

    #[test]
    fn planning_is_deterministic(snapshot in cluster(), policy in policy()) {
        // Equal inputs, not the same ones: nothing may depend on addresses or on hashing.
        let copy = snapshot.clone();
        let state = RebalanceState::default();
        let first = plan(&snapshot, &state, &policy, NOW);
        prop_assert_eq!(&first, &plan(&copy, &state.clone(), &policy.clone(), NOW));
        let second = plan(&snapshot, &first.1, &policy, NOW);
        prop_assert_eq!(second, plan(&copy, &first.1.clone(), &policy, NOW));
    }

    #[test]
    fn a_balanced_cluster_yields_an_empty_plan(
        mut snapshot in cluster(),
        policy in policy(),
        cpu in 0.0..1.2f64,
        memory in 0.0..1.2f64,
        pressure in 0.0..0.6f64,
    ) {
        for load in snapshot.node_loads.values_mut() {
            *load = super::fixtures::node_load(cpu, memory);
            load.cpu.pressure = Some(pressure);
        }
        let (plan, _) = plan(&snapshot, &RebalanceState::default(), &policy, NOW);
        prop_assert!(plan.evictions.is_empty());
    }

    #[test]
    fn a_cluster_without_free_capacity_yields_an_empty_plan(
        mut snapshot in cluster(),
        policy in policy(),
    ) {
        let pods = snapshot.pods.clone();
        for node in &mut snapshot.nodes {
            let on_node = pods.iter().filter(|p| p.node.as_deref() == Some(node.name.as_str()));
            let (cpu, memory) = on_node.fold((0, 0), |(c, m), p| {
                (c + p.requests.cpu_millicores, m + p.requests.memory_bytes)
            });
            node.allocatable.cpu_millicores = cpu;
            node.allocatable.memory_bytes = memory;
        }
        let (plan, _) = plan(&snapshot, &RebalanceState::default(), &policy, NOW);
        prop_assert!(plan.evictions.is_empty());
    }
}

/// A second round a minute later on the same snapshot (nothing was executed).
fn plan_again(
    snapshot: &ClusterSnapshot,
    state: &RebalanceState,
    policy: &Policy,
) -> (Plan, RebalanceState) {
    plan(snapshot, state, policy, Timestamp(NOW.0 + 60))
}

/// The properties above mean something only if random clusters do produce evictions (and
/// refusals): check that the generator is not all quiet clusters.
#[test]
fn random_clusters_exercise_the_planner() {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    let strategy = (cluster(), policy());
    let (mut with_evictions, mut with_no_destination) = (0, 0);
    for _ in 0..200 {
        let (snapshot, policy) = strategy.new_tree(&mut runner).expect("generates").current();
        let (plan, _) = plan(&snapshot, &RebalanceState::default(), &policy, NOW);
        with_evictions += usize::from(!plan.evictions.is_empty());
        with_no_destination += usize::from(
            plan.skipped_pods
                .iter()
                .any(|s| s.reason == super::plan::SkipReason::NoDestination),
        );
    }
    assert!(with_evictions >= 30, "{with_evictions} of 200 plans evict");
    assert!(
        with_no_destination >= 10,
        "{with_no_destination} of 200 plans lack a destination"
    );
}
