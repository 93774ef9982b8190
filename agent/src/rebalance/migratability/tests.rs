//! The report on small clusters, one test per reason (given and not given), then properties over
//! random clusters: deterministic whatever the order of the snapshot's lists, and never movable
//! where the planner refuses a pod for an eligibility reason.

use proptest::prelude::*;

use super::*;
use crate::rebalance::{
    fixtures::{cluster as random_cluster, node, pdb, pod, ELIGIBILITY_REASONS, GIB},
    plan::plan,
    policy::EVICT_ANNOTATION,
    snapshot::{
        NodeSelectorOperator, NodeSelectorRequirement, Owner, Taint, TaintEffect, VolumeKind,
    },
    state::RebalanceState,
};

const NOW: Timestamp = Timestamp(10_000);

/// Four Ready nodes (`zone` a, a, b, b); Deployment `web` with web-1 on n1 and web-2 on n2,
/// covered by a PDB allowing one disruption, probes declared: movable, nothing to say.
fn cluster() -> ClusterSnapshot {
    let mut s = ClusterSnapshot::default();
    for (name, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b"), ("n4", "b")] {
        let mut n = node(name, 4000, 16 * GIB);
        n.labels.insert("zone".to_owned(), zone.to_owned());
        s.nodes.push(n);
    }
    s.pods.push(pod("web-1", "n1"));
    s.pods.push(pod("web-2", "n2"));
    s.pdbs.push(pdb("web", 1));
    s
}

fn check(s: &ClusterSnapshot, policy: &Policy) -> Report {
    report(s, policy, NOW)
}

/// The report on `kind`/`name`, which must be there.
fn workload<'r>(report: &'r Report, kind: &str, name: &str) -> &'r WorkloadReport {
    report
        .workloads
        .iter()
        .find(|w| w.kind == kind && w.name == name)
        .unwrap_or_else(|| panic!("{kind}/{name} missing in {report:#?}"))
}

fn web(s: &ClusterSnapshot) -> WorkloadReport {
    workload(&check(s, &Policy::default()), "Deployment", "web").clone()
}

/// `web` under a policy that lets a single replica go (`min_replicas = 1`).
fn web_alone(s: &ClusterSnapshot) -> WorkloadReport {
    let mut policy = Policy::default();
    policy.eligibility.min_replicas = 1;
    workload(&check(s, &policy), "Deployment", "web").clone()
}

fn reasons(w: &WorkloadReport) -> Vec<Reason> {
    w.reasons.iter().map(|f| f.reason).collect()
}

/// Asserts that `w` has exactly `reason` and that its detail contains `text`.
fn only_reason_with(w: &WorkloadReport, reason: Reason, text: &str) {
    assert_eq!(reasons(w), [reason], "{w:#?}");
    assert!(finding(w, reason).detail.contains(text), "{w:#?}");
}

fn finding(w: &WorkloadReport, reason: Reason) -> &Finding {
    w.reasons
        .iter()
        .find(|f| f.reason == reason)
        .unwrap_or_else(|| panic!("{reason:?} missing in {w:#?}"))
}

const fn planner(reason: SkipReason) -> Reason {
    Reason::Planner(reason)
}

const fn only(reason: CheckReason) -> Reason {
    Reason::Check(reason)
}

fn each_pod(s: &mut ClusterSnapshot, change: impl Fn(&mut Pod)) {
    s.pods.iter_mut().for_each(change);
}

#[test]
fn a_healthy_workload_is_movable_without_reasons() {
    let w = web(&cluster());
    assert_eq!((w.movable, w.pods, w.ready), (Movable::Yes, 2, 2));
    assert!(w.reasons.is_empty(), "{w:#?}");
}

#[test]
fn no_pdb_covering_it_is_a_warning() {
    let mut s = cluster();
    s.pdbs.clear();
    let w = web(&s);
    assert_eq!(w.movable, Movable::WithWarnings);
    assert_eq!(reasons(&w), [only(CheckReason::NoPdb)]);
    assert_eq!(finding(&w, only(CheckReason::NoPdb)).pods, 2);
    // A PDB selecting other labels, or in another namespace, does not cover it either.
    s.pdbs.push(pdb("api", 1));
    let mut elsewhere = pdb("web", 1);
    elsewhere.namespace = "other".to_owned();
    s.pdbs.push(elsewhere);
    assert_eq!(reasons(&web(&s)), [only(CheckReason::NoPdb)]);
    // One pod covered, one not.
    s.pods[0]
        .labels
        .insert("covered".to_owned(), "yes".to_owned());
    let mut partial = pdb("web", 1);
    partial.selector.match_labels = BTreeMap::from([("covered".to_owned(), "yes".to_owned())]);
    s.pdbs.push(partial);
    assert_eq!(finding(&web(&s), only(CheckReason::NoPdb)).pods, 1);
}

#[test]
fn a_pdb_allowing_no_disruption_now_blocks() {
    let mut s = cluster();
    s.pdbs = vec![pdb("web", 0)];
    let w = web(&s);
    assert_eq!(w.movable, Movable::No);
    assert_eq!(reasons(&w), [planner(SkipReason::Pdb)]);
    let f = finding(&w, planner(SkipReason::Pdb));
    assert_eq!((f.severity, f.pods), (Severity::Blocking, 2));
    assert!(f.detail.contains("default/web allows 0"), "{}", f.detail);
    // Two PDBs, one of them exhausted: still blocked.
    s.pdbs.push(pdb("web", 3));
    assert_eq!(reasons(&web(&s)), [planner(SkipReason::Pdb)]);
}

#[test]
fn fewer_ready_replicas_than_min_replicas_blocks() {
    let mut s = cluster();
    s.pods.truncate(1);
    let w = web(&s);
    assert_eq!(w.movable, Movable::No);
    assert_eq!(reasons(&w), [planner(SkipReason::MinReplicas)]);
    let mut policy = Policy::default();
    policy.eligibility.min_replicas = 1;
    assert_eq!(check(&s, &policy).workloads[0].movable, Movable::Yes);
    // Two pods, one not Ready: both reasons, each with its pod count.
    let mut s = cluster();
    s.pods[1].ready = false;
    let w = web(&s);
    assert_eq!(
        reasons(&w),
        [
            planner(SkipReason::NotReady),
            planner(SkipReason::MinReplicas)
        ]
    );
    assert_eq!(finding(&w, planner(SkipReason::NotReady)).pods, 1);
    assert_eq!(finding(&w, planner(SkipReason::MinReplicas)).pods, 2);
    assert_eq!((w.pods, w.ready), (2, 1));
}

#[test]
fn local_storage_blocks_unless_allowed_or_opted_in() {
    for kind in [VolumeKind::EmptyDir, VolumeKind::HostPath] {
        let mut s = cluster();
        each_pod(&mut s, |p| p.volumes = vec![VolumeKind::ConfigMap, kind]);
        assert_eq!(reasons(&web(&s)), [planner(SkipReason::LocalStorage)]);
        let mut policy = Policy::default();
        policy.eligibility.allow_local_storage = true;
        assert_eq!(check(&s, &policy).workloads[0].movable, Movable::Yes);
        each_pod(&mut s, |p| {
            p.annotations
                .insert(EVICT_ANNOTATION.to_owned(), "true".to_owned());
        });
        assert_eq!(web(&s).movable, Movable::Yes);
    }
    let mut s = cluster();
    each_pod(&mut s, |p| {
        p.volumes = vec![VolumeKind::PersistentVolumeClaim]
    });
    assert_eq!(web(&s).movable, Movable::Yes, "a claim moves with the pod");
}

#[test]
fn a_missing_readiness_probe_is_a_warning_and_an_unknown_one_is_said() {
    let mut s = cluster();
    s.pods[0].has_readiness_probe = Some(false);
    let w = web(&s);
    assert_eq!(w.movable, Movable::WithWarnings);
    assert_eq!(reasons(&w), [only(CheckReason::NoReadinessProbe)]);
    assert_eq!(finding(&w, only(CheckReason::NoReadinessProbe)).pods, 1);
    s.pods[1].has_readiness_probe = None;
    let w = web(&s);
    assert_eq!(
        reasons(&w),
        [
            only(CheckReason::NoReadinessProbe),
            only(CheckReason::ReadinessProbeUnknown)
        ]
    );
    // Unknown is never read as "has one".
    let mut s = cluster();
    each_pod(&mut s, |p| p.has_readiness_probe = None);
    assert_eq!(web(&s).movable, Movable::WithWarnings);
}

fn zone_selector(p: &mut Pod, zone: &str) {
    p.node_selector = BTreeMap::from([("zone".to_owned(), zone.to_owned())]);
}

#[test]
fn a_pod_that_fits_only_on_its_own_node_is_pinned() {
    let mut s = cluster();
    s.nodes[1].labels.insert("zone".to_owned(), "c".to_owned()); // n2 leaves zone a
    s.pods.truncate(1);
    s.pods.push(pod("web-2", "n3"));
    // web-1 on n1 may run only on n1 (zone a); web-2 on n3 too, but n1 is another node.
    each_pod(&mut s, |p| zone_selector(p, "a"));
    let w = web_alone(&s);
    assert_eq!(w.movable, Movable::No);
    let pinned = finding(&w, only(CheckReason::Pinned));
    assert_eq!((pinned.severity, pinned.pods), (Severity::Blocking, 1));
    assert!(
        pinned.detail.contains("of 4, ruled out: nodeSelector 3"),
        "{}",
        pinned.detail
    );
    assert_eq!(finding(&w, only(CheckReason::FewNodes)).pods, 1);
    // Untolerated taints on every other node pin it as well; the affinity form too.
    let mut s = cluster();
    for n in &mut s.nodes[1..] {
        n.taints.push(Taint {
            key: "dedicated".to_owned(),
            value: "batch".to_owned(),
            effect: TaintEffect::NoSchedule,
        });
    }
    assert!(reasons(&web(&s)).contains(&only(CheckReason::Pinned)));
    let mut s = cluster();
    s.pods.truncate(1);
    s.pods[0].required_affinity = vec![NodeSelectorTerm {
        match_expressions: vec![NodeSelectorRequirement {
            key: "kubernetes.io/hostname".to_owned(),
            operator: NodeSelectorOperator::Exists,
            values: Vec::new(),
        }],
    }];
    s.nodes[0]
        .labels
        .insert("kubernetes.io/hostname".to_owned(), "n1".to_owned());
    only_reason_with(
        &web_alone(&s),
        only(CheckReason::Pinned),
        "required node affinity 3",
    );
}

#[test]
fn cordoned_and_unready_nodes_are_no_place_to_go() {
    let mut s = cluster();
    s.nodes[1].unschedulable = true;
    s.nodes[2].ready = false;
    s.nodes[3].unschedulable = true;
    s.pods.truncate(1);
    only_reason_with(
        &web_alone(&s),
        only(CheckReason::Pinned),
        "of 1, ruled out: none",
    );
}

#[test]
fn constraints_leaving_fewer_nodes_than_replicas_plus_one_warn() {
    let mut s = cluster();
    each_pod(&mut s, |p| zone_selector(p, "a"));
    let w = web(&s);
    assert_eq!(w.movable, Movable::WithWarnings);
    assert_eq!(reasons(&w), [only(CheckReason::FewNodes)]);
    assert!(
        finding(&w, only(CheckReason::FewNodes))
            .detail
            .starts_with("2 of 4 Ready, schedulable nodes may take it (ruled out: nodeSelector 2) for 2 replicas"),
        "{w:#?}"
    );
    // Three nodes for two replicas: enough.
    s.nodes[2].labels.insert("zone".to_owned(), "a".to_owned());
    assert_eq!(web(&s).movable, Movable::Yes);
    // Without constraints a small cluster is no reason: nothing pins the pods, and taints are
    // the cluster's layout.
    let mut s = cluster();
    s.nodes.truncate(3);
    s.nodes[2].taints.push(Taint {
        key: "dedicated".to_owned(),
        value: "batch".to_owned(),
        effect: TaintEffect::NoSchedule,
    });
    assert_eq!(web(&s).movable, Movable::Yes);
}

#[test]
fn gpus_and_other_extended_resources_block_unless_allowed() {
    let mut s = cluster();
    each_pod(&mut s, |p| {
        p.requests.extended.insert("nvidia.com/gpu".to_owned(), 1);
    });
    let w = web(&s);
    assert_eq!(reasons(&w), [planner(SkipReason::ExtendedResources)]);
    assert_eq!(w.movable, Movable::No);
    let mut policy = Policy::default();
    policy.eligibility.allow_extended_resources = true;
    assert_eq!(check(&s, &policy).workloads[0].movable, Movable::Yes);
}

fn statefulset(s: &mut ClusterSnapshot, policy: Option<PodManagementPolicy>) {
    each_pod(s, |p| {
        p.owner = Some(Owner {
            kind: "StatefulSet".to_owned(),
            name: "web".to_owned(),
            pod_management_policy: policy,
        });
    });
}

#[test]
fn ordered_statefulsets_warn_parallel_ones_do_not() {
    let mut s = cluster();
    statefulset(&mut s, Some(PodManagementPolicy::OrderedReady));
    let r = check(&s, &Policy::default());
    let w = workload(&r, "StatefulSet", "web");
    assert_eq!(w.movable, Movable::WithWarnings);
    assert_eq!(reasons(w), [only(CheckReason::OrderedReadiness)]);
    assert!(finding(w, only(CheckReason::OrderedReadiness))
        .detail
        .starts_with("podManagementPolicy OrderedReady:"));
    // Not said: Kubernetes' default, and the detail says it was not in the snapshot.
    statefulset(&mut s, None);
    let r = check(&s, &Policy::default());
    let w = workload(&r, "StatefulSet", "web");
    assert!(finding(w, only(CheckReason::OrderedReadiness))
        .detail
        .contains("not in the snapshot"));
    statefulset(&mut s, Some(PodManagementPolicy::Parallel));
    assert_eq!(
        check(&s, &Policy::default()).workloads[0].movable,
        Movable::Yes
    );
}

#[test]
fn statefulsets_disallowed_by_policy_are_excluded_and_unsettled_ones_blocked() {
    let mut s = cluster();
    statefulset(&mut s, Some(PodManagementPolicy::Parallel));
    let mut policy = Policy::default();
    policy.eligibility.allow_statefulsets = false;
    let r = check(&s, &policy);
    assert_eq!(r.workloads[0].movable, Movable::Excluded);
    assert_eq!(
        reasons(&r.workloads[0]),
        [planner(SkipReason::StatefulSetsDisallowed)]
    );
    // One pod not Ready: the StatefulSet waits, every pod of it.
    s.pods[0].ready = false;
    let mut policy = Policy::default();
    policy.eligibility.min_replicas = 1;
    let r = check(&s, &policy);
    let w = &r.workloads[0];
    assert_eq!(w.movable, Movable::No);
    assert_eq!(
        reasons(w),
        [
            planner(SkipReason::NotReady),
            planner(SkipReason::StatefulSetUnsettled)
        ]
    );
    assert_eq!(finding(w, planner(SkipReason::NotReady)).pods, 1);
    assert_eq!(
        finding(w, planner(SkipReason::StatefulSetUnsettled)).pods,
        2
    );
}

#[test]
fn daemonsets_and_static_pods_are_excluded_with_only_that_reason() {
    let mut s = cluster();
    s.pdbs.clear();
    each_pod(&mut s, |p| {
        p.owner = Some(Owner {
            kind: "DaemonSet".to_owned(),
            name: "web".to_owned(),
            pod_management_policy: None,
        });
        p.has_readiness_probe = None;
        p.volumes = vec![VolumeKind::HostPath];
    });
    let r = check(&s, &Policy::default());
    let w = workload(&r, "DaemonSet", "web");
    assert_eq!(w.movable, Movable::Excluded);
    assert_eq!(reasons(w), [planner(SkipReason::DaemonSet)]);
    assert_eq!(w.reasons[0].severity, Severity::Excluded);
    // Static pods: owned by their Node (or flagged mirror), each a workload of its own.
    let mut s = cluster();
    for (i, p) in s.pods.iter_mut().enumerate() {
        p.node = Some("n1".to_owned());
        p.owner = Some(Owner {
            kind: "Node".to_owned(),
            name: "n1".to_owned(),
            pod_management_policy: None,
        });
        p.mirror = i == 1;
    }
    let r = check(&s, &Policy::default());
    assert_eq!(r.workloads.len(), 2);
    for name in ["web-1", "web-2"] {
        let w = workload(&r, "Pod", name);
        assert_eq!((w.movable, w.pods), (Movable::Excluded, 1));
        assert_eq!(reasons(w), [planner(SkipReason::Mirror)]);
    }
}

#[test]
fn a_pod_without_controller_is_blocked_as_a_workload_of_its_own() {
    let mut s = cluster();
    s.pods.truncate(1);
    s.pods[0].owner = None;
    s.pods[0].volumes = vec![VolumeKind::EmptyDir];
    let r = check(&s, &Policy::default());
    let w = workload(&r, "Pod", "web-1");
    assert_eq!(w.movable, Movable::No);
    // Every reason, but nothing about replicas of a workload it does not have.
    assert_eq!(
        reasons(w),
        [
            planner(SkipReason::NoController),
            planner(SkipReason::LocalStorage)
        ]
    );
}

#[test]
fn opted_out_excluded_namespaces_and_critical_priority_are_excluded() {
    type Change = fn(&mut Pod);
    let cases: [(Change, SkipReason); 3] = [
        (
            |p| {
                p.annotations
                    .insert(EVICT_ANNOTATION.to_owned(), "false".to_owned());
            },
            SkipReason::OptedOut,
        ),
        (
            |p| p.namespace = "kube-system".to_owned(),
            SkipReason::Namespace,
        ),
        (|p| p.priority = 2_000_000_000, SkipReason::SystemCritical),
    ];
    for (change, reason) in cases {
        let mut s = cluster();
        each_pod(&mut s, change);
        s.pods[0].volumes = vec![VolumeKind::EmptyDir];
        let r = check(&s, &Policy::default());
        let w = &r.workloads[0];
        assert_eq!(w.movable, Movable::Excluded, "{reason:?}");
        assert_eq!(
            reasons(w),
            [planner(reason)],
            "only the exclusion is listed"
        );
    }
    // The opt-in annotation lifts the namespace lists, never the critical priority.
    let mut s = cluster();
    each_pod(&mut s, |p| {
        p.namespace = "kube-system".to_owned();
        p.annotations
            .insert(EVICT_ANNOTATION.to_owned(), "true".to_owned());
    });
    s.pdbs[0].namespace = "kube-system".to_owned();
    assert_eq!(
        check(&s, &Policy::default()).workloads[0].movable,
        Movable::Yes
    );
    each_pod(&mut s, |p| p.priority = 2_000_000_000);
    assert_eq!(
        check(&s, &Policy::default()).workloads[0].movable,
        Movable::Excluded
    );
}

#[test]
fn young_pods_block_until_they_are_old_enough() {
    let mut s = cluster();
    s.pods[0].start_time = Timestamp(NOW.0 - 299);
    let w = web(&s);
    assert_eq!(reasons(&w), [planner(SkipReason::TooYoung)]);
    assert!(w.reasons[0].detail.contains("started 299 s ago"));
    s.pods[0].start_time = Timestamp(NOW.0 - 300);
    assert_eq!(web(&s).movable, Movable::Yes);
}

#[test]
fn job_pods_warn_that_their_work_starts_over() {
    let mut s = cluster();
    each_pod(&mut s, |p| {
        p.owner = Some(Owner {
            kind: "Job".to_owned(),
            name: "web".to_owned(),
            pod_management_policy: None,
        });
    });
    let r = check(&s, &Policy::default());
    let w = workload(&r, "Job", "web");
    assert_eq!(w.movable, Movable::WithWarnings);
    assert_eq!(reasons(w), [only(CheckReason::JobRestarts)]);
    // A ReplicaSet of its own is an ordinary workload.
    each_pod(&mut s, |p| {
        if let Some(o) = &mut p.owner {
            o.kind = "ReplicaSet".to_owned();
        }
    });
    let r = check(&s, &Policy::default());
    assert_eq!(workload(&r, "ReplicaSet", "web").movable, Movable::Yes);
}

#[test]
fn reasons_are_ordered_by_severity_and_the_summary_counts_workloads() {
    let mut s = cluster();
    s.pdbs.clear();
    each_pod(&mut s, |p| {
        p.has_readiness_probe = Some(false);
        p.volumes = vec![VolumeKind::EmptyDir];
        p.requests.extended.insert("example.com/fpga".to_owned(), 1);
    });
    s.pods.push(pod("api-1", "n3"));
    s.pods.push(pod("api-2", "n4"));
    s.pdbs.push(pdb("api", 1));
    let mut lone = pod("solo-1", "n3");
    lone.has_readiness_probe = Some(false);
    s.pods.push(lone);
    let r = check(&s, &Policy::default());
    let names: Vec<&str> = r.workloads.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["api", "solo", "web"]);
    let w = workload(&r, "Deployment", "web");
    assert_eq!(
        reasons(w),
        [
            planner(SkipReason::LocalStorage),
            planner(SkipReason::ExtendedResources),
            only(CheckReason::NoPdb),
            only(CheckReason::NoReadinessProbe),
        ]
    );
    assert_eq!(
        r.summary.movable,
        MovableCounts {
            yes: 1,
            with_warnings: 0,
            no: 2,
            excluded: 0
        }
    );
    let counts: Vec<(Reason, Severity, usize)> = r
        .summary
        .reasons
        .iter()
        .map(|c| (c.reason, c.severity, c.workloads))
        .collect();
    assert_eq!(
        counts,
        [
            (planner(SkipReason::LocalStorage), Severity::Blocking, 1),
            (
                planner(SkipReason::ExtendedResources),
                Severity::Blocking,
                1
            ),
            (planner(SkipReason::MinReplicas), Severity::Blocking, 1),
            (only(CheckReason::NoPdb), Severity::Warning, 2),
            (only(CheckReason::NoReadinessProbe), Severity::Warning, 2),
        ]
    );
    assert_eq!(r.summary.workloads, 3);
    assert_eq!(r.at, NOW);
}

#[test]
fn json_names_are_flat_snake_case_strings_and_read_back() {
    let mut s = cluster();
    s.pdbs = vec![pdb("web", 0)];
    s.pods[0].has_readiness_probe = Some(false);
    let r = check(&s, &Policy::default());
    let json = serde_json::to_value(&r).expect("serialises");
    let w = &json["workloads"][0];
    assert_eq!(w["namespace"], "default");
    assert_eq!(w["kind"], "Deployment");
    assert_eq!(w["name"], "web");
    assert_eq!(w["pods"], 2);
    assert_eq!(w["ready"], 2);
    assert_eq!(w["movable"], "no");
    assert_eq!(w["reasons"][0]["reason"], "pdb");
    assert_eq!(w["reasons"][0]["severity"], "blocking");
    assert_eq!(w["reasons"][0]["pods"], 2);
    assert_eq!(w["reasons"][1]["reason"], "no_readiness_probe");
    assert_eq!(w["reasons"][1]["severity"], "warning");
    assert_eq!(json["at"], NOW.0);
    assert_eq!(json["summary"]["workloads"], 1);
    assert_eq!(json["summary"]["movable"]["no"], 1);
    assert_eq!(json["summary"]["reasons"][0]["reason"], "pdb");
    assert_eq!(json["summary"]["reasons"][0]["workloads"], 1);
    let back: Report = serde_json::from_value(json).expect("reads back");
    assert_eq!(back, r);
}

/// A random cluster with random trouble on its pods: local volumes, GPUs, opt-in and opt-out
/// annotations, probes declared or not or unknown, young pods, pinned pods, ordered or
/// parallel StatefulSets, and every node with fresh load hot on CPU (every pod on a node with
/// load is then considered by the planner).
fn troubled_cluster() -> impl Strategy<Value = ClusterSnapshot> {
    let trouble = (
        prop::bool::weighted(0.15),      // local storage
        prop::bool::weighted(0.1),       // a GPU
        0..6u8,                          // annotation: 0 opt out, 1 opt in, else none
        prop::option::of(any::<bool>()), // readiness probe
        prop::bool::weighted(0.1),       // young
        prop::bool::weighted(0.1),       // pinned to node-00
        prop::option::of(any::<bool>()), // ordered (StatefulSets)
    );
    random_cluster()
        .prop_flat_map(move |s| {
            let pods = s.pods.len();
            (Just(s), prop::collection::vec(trouble.clone(), pods))
        })
        .prop_map(|(mut s, troubles)| {
            for (p, (local, gpu, annotation, probe, young, pinned, ordered)) in
                s.pods.iter_mut().zip(troubles)
            {
                if local {
                    p.volumes.push(VolumeKind::EmptyDir);
                }
                if gpu {
                    p.requests.extended.insert("nvidia.com/gpu".to_owned(), 1);
                }
                match annotation {
                    0 => p
                        .annotations
                        .insert(EVICT_ANNOTATION.to_owned(), "false".to_owned()),
                    1 => p
                        .annotations
                        .insert(EVICT_ANNOTATION.to_owned(), "true".to_owned()),
                    _ => None,
                };
                p.has_readiness_probe = probe;
                if young {
                    p.start_time = Timestamp(PROPERTY_NOW.0 - 60);
                }
                if pinned {
                    p.node_selector
                        .insert("kubernetes.io/hostname".to_owned(), "node-00".to_owned());
                }
                if let Some(owner) = &mut p.owner {
                    owner.pod_management_policy = ordered.map(|ordered| {
                        if ordered {
                            PodManagementPolicy::OrderedReady
                        } else {
                            PodManagementPolicy::Parallel
                        }
                    });
                }
            }
            if let Some(n) = s.nodes.first_mut() {
                n.labels
                    .insert("kubernetes.io/hostname".to_owned(), n.name.clone());
            }
            for load in s.node_loads.values_mut() {
                load.cpu.pressure = Some(1.0);
            }
            s
        })
}

const PROPERTY_NOW: Timestamp = Timestamp(1_000_000);

fn random_policy() -> impl Strategy<Value = Policy> {
    (
        1..4u32,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0..600u64,
    )
        .prop_map(|(min_replicas, local, extended, statefulsets, min_age)| {
            let mut p = Policy::default();
            p.classification.abnormal_rounds = 1;
            p.eligibility.min_replicas = min_replicas;
            p.eligibility.allow_local_storage = local;
            p.eligibility.allow_extended_resources = extended;
            p.eligibility.allow_statefulsets = statefulsets;
            p.eligibility.min_pod_age_seconds = min_age;
            p
        })
}

/// The snapshot with its nodes, pods and PDBs in another order (a rotation and a reversal).
fn reordered(s: &ClusterSnapshot, by: usize) -> ClusterSnapshot {
    let mut s = s.clone();
    if !s.pods.is_empty() {
        let by = by % s.pods.len();
        s.pods.rotate_left(by);
    }
    s.nodes.reverse();
    s.pdbs.reverse();
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_report_is_deterministic_whatever_the_order_of_the_snapshot(
        snapshot in troubled_cluster(),
        policy in random_policy(),
        by in 0..64usize,
    ) {
        let first = report(&snapshot, &policy, PROPERTY_NOW);
        prop_assert_eq!(&first, &report(&snapshot.clone(), &policy.clone(), PROPERTY_NOW));
        prop_assert_eq!(&first, &report(&reordered(&snapshot, by), &policy, PROPERTY_NOW));
        // Every pod is in exactly one workload, and the summary adds up.
        let pods: u32 = first.workloads.iter().map(|w| w.pods).sum();
        prop_assert_eq!(pods as usize, snapshot.pods.len());
        let m = &first.summary.movable;
        prop_assert_eq!(m.yes + m.with_warnings + m.no + m.excluded, first.workloads.len());
    }

    #[test]
    fn a_workload_reported_movable_is_never_refused_by_the_planner_for_eligibility(
        snapshot in troubled_cluster(),
        policy in random_policy(),
    ) {
        let checked = report(&snapshot, &policy, PROPERTY_NOW);
        let movable: BTreeMap<(&str, &str, &str), Movable> = checked
            .workloads
            .iter()
            .map(|w| ((w.namespace.as_str(), w.kind.as_str(), w.name.as_str()), w.movable))
            .collect();
        let (planned, _) = plan(&snapshot, &RebalanceState::default(), &policy, PROPERTY_NOW);
        let refused = planned
            .skipped_pods
            .iter()
            .filter(|s| ELIGIBILITY_REASONS.contains(&s.reason));
        for skip in refused {
            let pod = snapshot
                .pods
                .iter()
                .find(|p| p.uid == skip.pod.uid)
                .expect("skipped pods exist");
            let answer = movable[&identity(pod)];
            prop_assert!(
                matches!(answer, Movable::No | Movable::Excluded),
                "{} refused by the planner ({:?}: {}) but reported {:?}",
                skip.pod, skip.reason, skip.detail, answer
            );
        }
    }
}
