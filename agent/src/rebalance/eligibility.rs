//! Whether a pod on a source node may be moved at all, whatever the limits: one rule per skip
//! reason, checked in a fixed order so that the first reason found is the one reported.

use super::{
    limits::{arrived_within_window, cooling_down},
    plan::SkipReason,
    policy::{CooldownPolicy, EligibilityPolicy, EVICT_ANNOTATION},
    snapshot::{Pod, Timestamp},
    state::WorkloadMemory,
};

/// What the rules need to know about the pod's workload this round.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkloadView<'a> {
    /// Ready pods of the workload in the snapshot.
    pub ready: u32,
    /// Pods of the workload in the snapshot.
    pub pods: u32,
    pub memory: Option<&'a WorkloadMemory>,
}

/// A rule that said no.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub reason: SkipReason,
    pub detail: String,
}

fn refuse(reason: SkipReason, detail: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        reason,
        detail: detail.into(),
    })
}

/// Checks every eligibility rule in order. `ballast.io/evict: "false"` refuses; `"true"` lifts
/// the rules a policy sets by default for the general case (namespace lists, StatefulSets
/// disallowed, local storage, extended resources), never the ones that protect the cluster or the
/// workload (mirror, DaemonSet, no controller, critical priority, readiness, age, in flight,
/// replicas, cooldown).
pub fn check(
    pod: &Pod,
    workload: &WorkloadView<'_>,
    policy: &EligibilityPolicy,
    cooldown: &CooldownPolicy,
    now: Timestamp,
) -> Result<(), Refusal> {
    let kind = pod.owner.as_ref().map(|o| o.kind.as_str());
    if pod.mirror || kind == Some("Node") {
        return refuse(
            SkipReason::Mirror,
            "static pod mirrored by the kubelet: only its manifest on the node can move it",
        );
    }
    if kind == Some("DaemonSet") {
        return refuse(
            SkipReason::DaemonSet,
            "DaemonSet pod: it belongs on this node",
        );
    }
    let Some(owner) = &pod.owner else {
        return refuse(
            SkipReason::NoController,
            "no controller: nothing would recreate it after eviction",
        );
    };
    if pod.priority >= policy.critical_priority {
        return refuse(
            SkipReason::SystemCritical,
            format!(
                "priority {} is at or above the critical priority {}",
                pod.priority, policy.critical_priority
            ),
        );
    }
    let annotation = pod.annotations.get(EVICT_ANNOTATION).map(String::as_str);
    if annotation == Some("false") {
        return refuse(
            SkipReason::OptedOut,
            format!("annotation {EVICT_ANNOTATION}: \"false\""),
        );
    }
    let opted_in = annotation == Some("true");
    if !opted_in {
        if !policy.namespaces_include.is_empty()
            && !policy.namespaces_include.contains(&pod.namespace)
        {
            return refuse(
                SkipReason::Namespace,
                format!(
                    "namespace {} is not in eligibility.namespaces_include",
                    pod.namespace
                ),
            );
        }
        if policy.namespaces_exclude.contains(&pod.namespace) {
            return refuse(
                SkipReason::Namespace,
                format!(
                    "namespace {} is in eligibility.namespaces_exclude",
                    pod.namespace
                ),
            );
        }
        if owner.kind == "StatefulSet" && !policy.allow_statefulsets {
            return refuse(
                SkipReason::StatefulSetsDisallowed,
                "StatefulSet pod and eligibility.allow_statefulsets is false",
            );
        }
        if !policy.allow_local_storage && pod.volumes.iter().any(|v| v.is_local_storage()) {
            return refuse(
                SkipReason::LocalStorage,
                "has emptyDir or hostPath volumes (data stays behind); eligibility.allow_local_storage is false",
            );
        }
        if !policy.allow_extended_resources && pod.extended_requests() {
            return refuse(
                SkipReason::ExtendedResources,
                "requests GPUs or other extended resources; eligibility.allow_extended_resources is false",
            );
        }
    }
    if !pod.ready {
        return refuse(SkipReason::NotReady, "not Ready");
    }
    let age = now.seconds_since(pod.start_time);
    if age < i64::try_from(policy.min_pod_age_seconds).unwrap_or(i64::MAX) {
        return refuse(
            SkipReason::TooYoung,
            format!(
                "started {age} s ago, eligibility.min_pod_age_seconds is {}",
                policy.min_pod_age_seconds
            ),
        );
    }
    if let Some(in_flight) = workload.memory.and_then(|m| m.in_flight.as_ref()) {
        return refuse(
            SkipReason::InFlight,
            format!(
                "{} was evicted from {} at {} and its replacement is not Ready yet",
                in_flight.pod_name, in_flight.source, in_flight.evicted_at
            ),
        );
    }
    if owner.kind == "StatefulSet" && workload.ready < workload.pods {
        return refuse(
            SkipReason::StatefulSetUnsettled,
            format!(
                "StatefulSet {} has {} of {} pods Ready: one at a time",
                owner.name, workload.ready, workload.pods
            ),
        );
    }
    if workload.ready < policy.min_replicas {
        return refuse(
            SkipReason::MinReplicas,
            format!(
                "{} {} has {} Ready replicas, eligibility.min_replicas is {}",
                owner.kind, owner.name, workload.ready, policy.min_replicas
            ),
        );
    }
    if let Some(memory) = workload.memory {
        if let Some(until) = cooling_down(memory, now) {
            return refuse(
                SkipReason::Cooldown,
                format!(
                    "{} {} rests until {until} ({} s more; {} recent repeat evictions)",
                    owner.kind,
                    owner.name,
                    until.seconds_since(now),
                    memory.strikes
                ),
            );
        }
        let arrival = pod
            .node
            .as_deref()
            .and_then(|node| arrived_within_window(memory, cooldown, node, now));
        if let Some(arrival) = arrival {
            return refuse(
                SkipReason::CameBack,
                format!(
                    "{} {} was moved onto {} at {}: moving it off again within limits.cooldown.window_seconds ({} s) would be ping-pong",
                    owner.kind, owner.name, arrival.node, arrival.at, cooldown.window_seconds
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::{
        fixtures::pod,
        snapshot::{Owner, VolumeKind},
        state::{Arrival, InFlight},
    };

    const NOW: Timestamp = Timestamp(10_000);

    fn healthy() -> WorkloadView<'static> {
        WorkloadView {
            ready: 3,
            pods: 3,
            memory: None,
        }
    }

    fn reason(p: &Pod, w: &WorkloadView<'_>, policy: &EligibilityPolicy) -> Option<SkipReason> {
        check(p, w, policy, &CooldownPolicy::default(), NOW)
            .err()
            .map(|r| r.reason)
    }

    fn with_owner(kind: &str) -> Pod {
        let mut p = pod("web-1", "n");
        p.owner = Some(Owner {
            kind: kind.to_owned(),
            name: "web".to_owned(),
        });
        p
    }

    #[test]
    fn an_ordinary_pod_is_eligible() {
        assert_eq!(
            reason(
                &pod("web-1", "n"),
                &healthy(),
                &EligibilityPolicy::default()
            ),
            None
        );
    }

    #[test]
    fn mirror_and_node_owned_pods() {
        let policy = EligibilityPolicy::default();
        let mut p = pod("web-1", "n");
        p.mirror = true;
        assert_eq!(reason(&p, &healthy(), &policy), Some(SkipReason::Mirror));
        assert_eq!(
            reason(&with_owner("Node"), &healthy(), &policy),
            Some(SkipReason::Mirror)
        );
    }

    #[test]
    fn daemonset_pods_even_when_opted_in() {
        let mut p = with_owner("DaemonSet");
        p.annotations
            .insert(EVICT_ANNOTATION.to_owned(), "true".to_owned());
        assert_eq!(
            reason(&p, &healthy(), &EligibilityPolicy::default()),
            Some(SkipReason::DaemonSet)
        );
    }

    #[test]
    fn pods_without_controller() {
        let mut p = pod("web-1", "n");
        p.owner = None;
        assert_eq!(
            reason(&p, &healthy(), &EligibilityPolicy::default()),
            Some(SkipReason::NoController)
        );
    }

    #[test]
    fn critical_priority_at_and_above_the_threshold() {
        let policy = EligibilityPolicy::default();
        let mut p = pod("web-1", "n");
        p.priority = 2_000_000_000;
        assert_eq!(
            reason(&p, &healthy(), &policy),
            Some(SkipReason::SystemCritical)
        );
        p.priority = 1_999_999_999;
        assert_eq!(reason(&p, &healthy(), &policy), None);
    }

    #[test]
    fn opt_out_annotation() {
        let mut p = pod("web-1", "n");
        p.annotations
            .insert(EVICT_ANNOTATION.to_owned(), "false".to_owned());
        assert_eq!(
            reason(&p, &healthy(), &EligibilityPolicy::default()),
            Some(SkipReason::OptedOut)
        );
    }

    #[test]
    fn namespace_lists_and_the_opt_in_override() {
        let mut policy = EligibilityPolicy::default();
        let mut p = pod("web-1", "n");
        p.namespace = "kube-system".to_owned();
        assert_eq!(reason(&p, &healthy(), &policy), Some(SkipReason::Namespace));
        p.namespace = "shop".to_owned();
        policy.namespaces_include.insert("payments".to_owned());
        assert_eq!(reason(&p, &healthy(), &policy), Some(SkipReason::Namespace));
        p.annotations
            .insert(EVICT_ANNOTATION.to_owned(), "true".to_owned());
        assert_eq!(reason(&p, &healthy(), &policy), None);
    }

    #[test]
    fn local_storage_unless_allowed_or_opted_in() {
        let mut policy = EligibilityPolicy::default();
        for kind in [VolumeKind::EmptyDir, VolumeKind::HostPath] {
            let mut p = pod("web-1", "n");
            p.volumes = vec![VolumeKind::ConfigMap, kind];
            assert_eq!(
                reason(&p, &healthy(), &policy),
                Some(SkipReason::LocalStorage)
            );
        }
        let mut p = pod("web-1", "n");
        p.volumes = vec![VolumeKind::PersistentVolumeClaim, VolumeKind::Secret];
        assert_eq!(reason(&p, &healthy(), &policy), None, "remote volumes move");
        p.volumes.push(VolumeKind::EmptyDir);
        policy.allow_local_storage = true;
        assert_eq!(reason(&p, &healthy(), &policy), None);
        policy.allow_local_storage = false;
        p.annotations
            .insert(EVICT_ANNOTATION.to_owned(), "true".to_owned());
        assert_eq!(reason(&p, &healthy(), &policy), None);
    }

    #[test]
    fn extended_resources_unless_allowed() {
        let mut policy = EligibilityPolicy::default();
        let mut p = pod("web-1", "n");
        p.requests.extended.insert("nvidia.com/gpu".to_owned(), 1);
        assert_eq!(
            reason(&p, &healthy(), &policy),
            Some(SkipReason::ExtendedResources)
        );
        policy.allow_extended_resources = true;
        assert_eq!(reason(&p, &healthy(), &policy), None);
    }

    #[test]
    fn not_ready_pods() {
        let mut p = pod("web-1", "n");
        p.ready = false;
        assert_eq!(
            reason(&p, &healthy(), &EligibilityPolicy::default()),
            Some(SkipReason::NotReady)
        );
    }

    #[test]
    fn young_pods() {
        let policy = EligibilityPolicy::default(); // 300 s
        let mut p = pod("web-1", "n");
        p.start_time = Timestamp(NOW.0 - 299);
        assert_eq!(reason(&p, &healthy(), &policy), Some(SkipReason::TooYoung));
        p.start_time = Timestamp(NOW.0 - 300);
        assert_eq!(reason(&p, &healthy(), &policy), None);
    }

    #[test]
    fn statefulsets_disallowed_then_one_at_a_time() {
        let mut policy = EligibilityPolicy::default();
        let p = with_owner("StatefulSet");
        assert_eq!(reason(&p, &healthy(), &policy), None);
        let unsettled = WorkloadView {
            ready: 2,
            pods: 3,
            memory: None,
        };
        assert_eq!(
            reason(&p, &unsettled, &policy),
            Some(SkipReason::StatefulSetUnsettled)
        );
        policy.allow_statefulsets = false;
        assert_eq!(
            reason(&p, &healthy(), &policy),
            Some(SkipReason::StatefulSetsDisallowed)
        );
    }

    #[test]
    fn workload_with_an_eviction_in_flight() {
        let memory = WorkloadMemory {
            in_flight: Some(InFlight {
                pod_uid: "u".to_owned(),
                pod_name: "web-0".to_owned(),
                source: "n".to_owned(),
                evicted_at: Timestamp(9_000),
            }),
            ..WorkloadMemory::default()
        };
        let w = WorkloadView {
            memory: Some(&memory),
            ..healthy()
        };
        assert_eq!(
            reason(&pod("web-1", "n"), &w, &EligibilityPolicy::default()),
            Some(SkipReason::InFlight)
        );
    }

    #[test]
    fn too_few_ready_replicas() {
        let w = WorkloadView {
            ready: 1,
            pods: 2,
            memory: None,
        };
        assert_eq!(
            reason(&pod("web-1", "n"), &w, &EligibilityPolicy::default()),
            Some(SkipReason::MinReplicas)
        );
    }

    #[test]
    fn workload_cooling_down() {
        let memory = WorkloadMemory {
            cooldown_until: Some(Timestamp(NOW.0 + 1)),
            ..WorkloadMemory::default()
        };
        let w = WorkloadView {
            memory: Some(&memory),
            ..healthy()
        };
        let policy = EligibilityPolicy::default();
        assert_eq!(
            reason(&pod("web-1", "n"), &w, &policy),
            Some(SkipReason::Cooldown)
        );
        let expired = WorkloadMemory {
            cooldown_until: Some(NOW),
            ..WorkloadMemory::default()
        };
        let w = WorkloadView {
            memory: Some(&expired),
            ..healthy()
        };
        assert_eq!(reason(&pod("web-1", "n"), &w, &policy), None);
    }

    #[test]
    fn workload_moved_onto_this_node_within_the_window() {
        let window = CooldownPolicy::default().window_seconds as i64;
        let memory = WorkloadMemory {
            arrivals: vec![Arrival {
                node: "n".to_owned(),
                at: Timestamp(NOW.0 - window + 1),
            }],
            ..WorkloadMemory::default()
        };
        let w = WorkloadView {
            memory: Some(&memory),
            ..healthy()
        };
        let policy = EligibilityPolicy::default();
        let refusal = check(
            &pod("web-1", "n"),
            &w,
            &policy,
            &CooldownPolicy::default(),
            NOW,
        )
        .err();
        assert_eq!(
            refusal.as_ref().map(|r| r.reason),
            Some(SkipReason::CameBack)
        );
        let detail = refusal.map(|r| r.detail).unwrap_or_default();
        assert!(detail.contains("moved onto n"), "{detail}");
        // Elsewhere, or once the window has passed, it may move.
        assert_eq!(reason(&pod("web-2", "m"), &w, &policy), None);
        let later = Timestamp(NOW.0 + 1);
        let refusal = check(
            &pod("web-1", "n"),
            &w,
            &policy,
            &CooldownPolicy::default(),
            later,
        );
        assert!(refusal.is_ok(), "{refusal:?}");
    }
}
