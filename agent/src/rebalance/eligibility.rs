//! Whether a pod on a source node may be moved at all, whatever the limits: one rule per skip
//! reason, in a fixed order. The planner takes the first reason found ([`check`]); the
//! migratability report takes every one ([`refusals`]).

use super::{
    limits::{arrived_within_window, cooling_down},
    plan::SkipReason,
    policy::{CooldownPolicy, EligibilityPolicy, EVICT_ANNOTATION},
    snapshot::{Owner, Pod, Timestamp},
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

impl<'a> WorkloadView<'a> {
    /// The view of a workload with these pods (all of them, pending ones too) and this memory.
    pub fn of<'p>(
        members: impl IntoIterator<Item = &'p Pod>,
        memory: Option<&'a WorkloadMemory>,
    ) -> Self {
        let (mut ready, mut pods) = (0u32, 0u32);
        for member in members {
            pods = pods.saturating_add(1);
            ready = ready.saturating_add(u32::from(member.ready));
        }
        Self {
            ready,
            pods,
            memory,
        }
    }
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

/// What one rule looks at.
struct Subject<'a> {
    pod: &'a Pod,
    workload: &'a WorkloadView<'a>,
    policy: &'a EligibilityPolicy,
    /// The backoff window of the came-back rule.
    cooldown: &'a CooldownPolicy,
    now: Timestamp,
    /// The value of `ballast.io/evict`.
    annotation: Option<&'a str>,
    /// `ballast.io/evict: "true"`.
    opted_in: bool,
}

type Rule = fn(&Subject<'_>) -> Result<(), Refusal>;

/// Every rule, in the order the planner reports them. `ballast.io/evict: "false"` refuses;
/// `"true"` lifts the rules a policy sets by default for the general case (namespace lists,
/// StatefulSets disallowed, local storage, extended resources), never the ones that protect the
/// cluster or the workload (mirror, DaemonSet, no controller, critical priority, readiness, age,
/// in flight, replicas, cooldown, came back). The rules about a workload say nothing of a pod
/// without a controller: [`no_controller`] already refuses it.
const RULES: [Rule; 16] = [
    mirror,
    daemon_set,
    no_controller,
    critical_priority,
    opted_out,
    namespace,
    statefulsets_disallowed,
    local_storage,
    extended_resources,
    not_ready,
    too_young,
    in_flight,
    statefulset_unsettled,
    min_replicas,
    cooldown,
    came_back,
];

/// The first rule that refuses the pod, in the order of [`RULES`].
pub fn check(
    pod: &Pod,
    workload: &WorkloadView<'_>,
    policy: &EligibilityPolicy,
    cooldown: &CooldownPolicy,
    now: Timestamp,
) -> Result<(), Refusal> {
    let subject = Subject::new(pod, workload, policy, cooldown, now);
    RULES.iter().try_for_each(|rule| rule(&subject))
}

/// Every rule that refuses the pod, in the order of [`RULES`].
pub fn refusals(
    pod: &Pod,
    workload: &WorkloadView<'_>,
    policy: &EligibilityPolicy,
    cooldown: &CooldownPolicy,
    now: Timestamp,
) -> Vec<Refusal> {
    let subject = Subject::new(pod, workload, policy, cooldown, now);
    RULES
        .iter()
        .filter_map(|rule| rule(&subject).err())
        .collect()
}

impl<'a> Subject<'a> {
    fn new(
        pod: &'a Pod,
        workload: &'a WorkloadView<'a>,
        policy: &'a EligibilityPolicy,
        cooldown: &'a CooldownPolicy,
        now: Timestamp,
    ) -> Self {
        let annotation = pod.annotations.get(EVICT_ANNOTATION).map(String::as_str);
        Self {
            pod,
            workload,
            policy,
            cooldown,
            now,
            annotation,
            opted_in: annotation == Some("true"),
        }
    }

    /// The controller, for the rules about a workload; a pod without one passes them.
    fn owner(&self) -> Option<&'a Owner> {
        self.pod.owner.as_ref()
    }

    fn kind(&self) -> Option<&'a str> {
        self.owner().map(|o| o.kind.as_str())
    }
}

fn mirror(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.pod.mirror || s.kind() == Some("Node") {
        return refuse(
            SkipReason::Mirror,
            "static pod mirrored by the kubelet: only its manifest on the node can move it",
        );
    }
    Ok(())
}

fn daemon_set(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.kind() == Some("DaemonSet") {
        return refuse(
            SkipReason::DaemonSet,
            "DaemonSet pod: it belongs on this node",
        );
    }
    Ok(())
}

fn no_controller(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.pod.owner.is_none() {
        return refuse(
            SkipReason::NoController,
            "no controller: nothing would recreate it after eviction",
        );
    }
    Ok(())
}

fn critical_priority(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.pod.priority >= s.policy.critical_priority {
        return refuse(
            SkipReason::SystemCritical,
            format!(
                "priority {} is at or above the critical priority {}",
                s.pod.priority, s.policy.critical_priority
            ),
        );
    }
    Ok(())
}

fn opted_out(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.annotation == Some("false") {
        return refuse(
            SkipReason::OptedOut,
            format!("annotation {EVICT_ANNOTATION}: \"false\""),
        );
    }
    Ok(())
}

fn namespace(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.opted_in {
        return Ok(());
    }
    let (namespace, policy) = (&s.pod.namespace, s.policy);
    if !policy.namespaces_include.is_empty() && !policy.namespaces_include.contains(namespace) {
        return refuse(
            SkipReason::Namespace,
            format!("namespace {namespace} is not in eligibility.namespaces_include"),
        );
    }
    if policy.namespaces_exclude.contains(namespace) {
        return refuse(
            SkipReason::Namespace,
            format!("namespace {namespace} is in eligibility.namespaces_exclude"),
        );
    }
    Ok(())
}

fn statefulsets_disallowed(s: &Subject<'_>) -> Result<(), Refusal> {
    if !s.opted_in && s.kind() == Some("StatefulSet") && !s.policy.allow_statefulsets {
        return refuse(
            SkipReason::StatefulSetsDisallowed,
            "StatefulSet pod and eligibility.allow_statefulsets is false",
        );
    }
    Ok(())
}

fn local_storage(s: &Subject<'_>) -> Result<(), Refusal> {
    if !s.opted_in
        && !s.policy.allow_local_storage
        && s.pod.volumes.iter().any(|v| v.is_local_storage())
    {
        return refuse(
            SkipReason::LocalStorage,
            "has emptyDir or hostPath volumes (data stays behind); eligibility.allow_local_storage is false",
        );
    }
    Ok(())
}

fn extended_resources(s: &Subject<'_>) -> Result<(), Refusal> {
    if !s.opted_in && !s.policy.allow_extended_resources && s.pod.extended_requests() {
        return refuse(
            SkipReason::ExtendedResources,
            "requests GPUs or other extended resources; eligibility.allow_extended_resources is false",
        );
    }
    Ok(())
}

fn not_ready(s: &Subject<'_>) -> Result<(), Refusal> {
    if !s.pod.ready {
        return refuse(SkipReason::NotReady, "not Ready");
    }
    Ok(())
}

fn too_young(s: &Subject<'_>) -> Result<(), Refusal> {
    let age = s.now.seconds_since(s.pod.start_time);
    let min_age = s.policy.min_pod_age_seconds;
    if age < i64::try_from(min_age).unwrap_or(i64::MAX) {
        return refuse(
            SkipReason::TooYoung,
            format!("started {age} s ago, eligibility.min_pod_age_seconds is {min_age}"),
        );
    }
    Ok(())
}

fn in_flight(s: &Subject<'_>) -> Result<(), Refusal> {
    if s.owner().is_none() {
        return Ok(());
    }
    if let Some(in_flight) = s.workload.memory.and_then(|m| m.in_flight.as_ref()) {
        return refuse(
            SkipReason::InFlight,
            format!(
                "{} was evicted from {} at {} and its replacement is not Ready yet",
                in_flight.pod_name, in_flight.source, in_flight.evicted_at
            ),
        );
    }
    Ok(())
}

fn statefulset_unsettled(s: &Subject<'_>) -> Result<(), Refusal> {
    let Some(owner) = s.owner().filter(|o| o.kind == "StatefulSet") else {
        return Ok(());
    };
    let w = s.workload;
    if w.ready < w.pods {
        return refuse(
            SkipReason::StatefulSetUnsettled,
            format!(
                "StatefulSet {} has {} of {} pods Ready: one at a time",
                owner.name, w.ready, w.pods
            ),
        );
    }
    Ok(())
}

fn min_replicas(s: &Subject<'_>) -> Result<(), Refusal> {
    let Some(owner) = s.owner() else {
        return Ok(());
    };
    if s.workload.ready < s.policy.min_replicas {
        return refuse(
            SkipReason::MinReplicas,
            format!(
                "{} {} has {} Ready replicas, eligibility.min_replicas is {}",
                owner.kind, owner.name, s.workload.ready, s.policy.min_replicas
            ),
        );
    }
    Ok(())
}

fn cooldown(s: &Subject<'_>) -> Result<(), Refusal> {
    let (Some(owner), Some(memory)) = (s.owner(), s.workload.memory) else {
        return Ok(());
    };
    if let Some(until) = cooling_down(memory, s.now) {
        return refuse(
            SkipReason::Cooldown,
            format!(
                "{} {} rests until {until} ({} s more; {} recent repeat evictions)",
                owner.kind,
                owner.name,
                until.seconds_since(s.now),
                memory.strikes
            ),
        );
    }
    Ok(())
}

fn came_back(s: &Subject<'_>) -> Result<(), Refusal> {
    let (Some(owner), Some(memory)) = (s.owner(), s.workload.memory) else {
        return Ok(());
    };
    let arrival = s
        .pod
        .node
        .as_deref()
        .and_then(|node| arrived_within_window(memory, s.cooldown, node, s.now));
    if let Some(arrival) = arrival {
        return refuse(
            SkipReason::CameBack,
            format!(
                "{} {} was moved onto {} at {}: moving it off again within limits.cooldown.window_seconds ({} s) would be ping-pong",
                owner.kind, owner.name, arrival.node, arrival.at, s.cooldown.window_seconds
            ),
        );
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
            pod_management_policy: None,
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
    fn refusals_lists_every_rule_that_says_no_and_check_the_first() {
        let policy = EligibilityPolicy::default();
        let mut p = pod("web-1", "n");
        assert!(refusals(&p, &healthy(), &policy, &CooldownPolicy::default(), NOW).is_empty());
        p.volumes = vec![VolumeKind::EmptyDir];
        p.requests.extended.insert("nvidia.com/gpu".to_owned(), 1);
        p.ready = false;
        let members = [p.clone(), pod("web-2", "n")];
        let w = WorkloadView::of(&members, None);
        assert_eq!((w.ready, w.pods), (1, 2));
        let all: Vec<SkipReason> = refusals(&p, &w, &policy, &CooldownPolicy::default(), NOW)
            .into_iter()
            .map(|r| r.reason)
            .collect();
        assert_eq!(
            all,
            [
                SkipReason::LocalStorage,
                SkipReason::ExtendedResources,
                SkipReason::NotReady,
                SkipReason::MinReplicas
            ]
        );
        assert_eq!(reason(&p, &w, &policy), Some(SkipReason::LocalStorage));
        // Nothing about a workload for a pod without one.
        p.owner = None;
        let all: Vec<SkipReason> = refusals(
            &p,
            &WorkloadView::default(),
            &policy,
            &CooldownPolicy::default(),
            NOW,
        )
        .into_iter()
        .map(|r| r.reason)
        .collect();
        assert_eq!(
            all,
            [
                SkipReason::NoController,
                SkipReason::LocalStorage,
                SkipReason::ExtendedResources,
                SkipReason::NotReady
            ]
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
