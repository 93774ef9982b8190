//! Carrying out a plan's evictions: one `pods/eviction` (policy/v1) per chosen pod, fence-checked
//! immediately before, with the pod's uid as a precondition (a StatefulSet replacement that took
//! the same name is never evicted by mistake), and an Event on the pod and on its source node.
//!
//! The API's refusals are "not now": 429 (a PodDisruptionBudget allows no disruption), 409 (the
//! pod changed), 404 (it is gone). They are logged and counted and the round moves on; the
//! planner's cooldown for the workload keeps it from being asked again before its time, so
//! nothing is ever retried in a tight loop.

use std::time::Duration;

use k8s_openapi::{
    api::{
        core::v1::{Event, EventSource, ObjectReference, Pod},
        policy::v1::Eviction as EvictionBody,
    },
    apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions, Time},
    jiff::Timestamp,
};
use kube::{api::PostParams, Api, Client};

use super::{
    decisions::{EvictionResult, ExecutedEviction},
    fence::{Fence, Fenced},
};
use crate::rebalance::{
    plan::{Eviction, NodeStatus},
    Plan,
};

/// The Events' reason.
pub const EVICTED_REASON: &str = "BallastEvicted";
/// Where Events about nodes go (nodes have no namespace; kubectl looks there).
const NODE_EVENTS_NAMESPACE: &str = "default";
/// The longest Event message the API server keeps.
const MESSAGE_LIMIT: usize = 1024;

/// `evacuation` for a pod drained off its node by an alert; else the hot resource of the
/// eviction's source it was chosen for: the first resource the plan
/// reports in the source state on that node.
pub fn resource_of(plan: &Plan, eviction: &Eviction) -> String {
    let report = plan.nodes.iter().find(|n| n.node == eviction.source);
    if report.is_some_and(|r| r.status == NodeStatus::Evacuating) {
        return "evacuation".to_owned();
    }
    report
        .and_then(|n| n.resources.first())
        .map_or_else(|| "unknown".to_owned(), |r| r.to_string())
}

/// The API's answer to an eviction, as a result and a line of detail.
pub fn classify(answer: &Result<serde_json::Value, kube::Error>) -> (EvictionResult, String) {
    match answer {
        Ok(_) => (EvictionResult::Evicted, "evicted".into()),
        Err(kube::Error::Api(status)) => {
            let result = match status.code {
                429 => EvictionResult::PdbBlocked,
                409 => EvictionResult::Conflict,
                404 => EvictionResult::NotFound,
                _ => EvictionResult::Failed,
            };
            (
                result,
                format!("{} {}: {}", status.code, status.reason, status.message),
            )
        }
        Err(other) => (EvictionResult::Failed, other.to_string()),
    }
}

/// The policy/v1 Eviction for `eviction`'s pod, with its uid as a precondition.
pub fn eviction_body(eviction: &Eviction) -> EvictionBody {
    EvictionBody {
        metadata: ObjectMeta {
            name: Some(eviction.pod.name.clone()),
            namespace: Some(eviction.pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            preconditions: Some(Preconditions {
                uid: Some(eviction.pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        }),
    }
}

fn truncated(text: &str) -> String {
    if text.len() <= MESSAGE_LIMIT {
        return text.to_owned();
    }
    let mut end = MESSAGE_LIMIT - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// What an Event is about.
pub struct Subject<'a> {
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub uid: Option<&'a str>,
}

/// A core/v1 Event, named as client-go names them (`<object>.<unix nanos in hex>`).
pub fn event(subject: &Subject<'_>, message: &str, identity: &str, now: Timestamp) -> Event {
    let time = Time(now);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", subject.name, now.as_nanosecond())),
            namespace: Some(
                subject
                    .namespace
                    .unwrap_or(NODE_EVENTS_NAMESPACE)
                    .to_owned(),
            ),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some(subject.kind.into()),
            name: Some(subject.name.into()),
            namespace: subject.namespace.map(str::to_owned),
            uid: subject.uid.map(str::to_owned),
            ..ObjectReference::default()
        },
        reason: Some(EVICTED_REASON.into()),
        message: Some(truncated(message)),
        type_: Some("Normal".into()),
        action: Some("Evict".into()),
        source: Some(EventSource {
            component: Some("ballast".into()),
            host: None,
        }),
        reporting_component: Some("ballast.io/rebalancer".into()),
        reporting_instance: Some(identity.into()),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        count: Some(1),
        ..Event::default()
    }
}

/// Sends one round's writes for the leader, under its fence.
pub struct Executor<'a> {
    pub client: &'a Client,
    pub identity: &'a str,
    pub fence: &'a Fence,
    pub term: u64,
    /// Bound on one call, within what the fence leaves.
    pub call_timeout: Duration,
}

impl Executor<'_> {
    /// Evicts the pod. `Err` only when the fence refuses: the round must stop.
    pub async fn evict(
        &self,
        plan: &Plan,
        eviction: &Eviction,
    ) -> Result<ExecutedEviction, Fenced> {
        let resource = resource_of(plan, eviction);
        let done = |result, detail| ExecutedEviction {
            pod: eviction.pod.clone(),
            source: eviction.source.clone(),
            resource: resource.clone(),
            result,
            detail,
        };
        if plan.dry_run {
            return Ok(done(EvictionResult::DryRun, "dry-run: not sent".into()));
        }
        let permit = self.fence.check_now(self.term)?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &eviction.pod.namespace);
        let body = eviction_body(eviction);
        let bound = permit.remaining.min(self.call_timeout);
        let answer = tokio::time::timeout(
            bound,
            pods.create_subresource::<_, serde_json::Value>(
                "eviction",
                &eviction.pod.name,
                &PostParams::default(),
                &body,
            ),
        )
        .await;
        let (result, detail) = match answer {
            Ok(answer) => classify(&answer),
            Err(_) => (
                EvictionResult::Failed,
                format!("no answer within {bound:?}"),
            ),
        };
        Ok(done(result, detail))
    }

    /// Creates an Event. `Err` when the fence refuses (the round must stop); `Ok(Err(why))` when
    /// the API did not take it (logged; the round goes on).
    pub async fn record_event(
        &self,
        subject: &Subject<'_>,
        message: &str,
    ) -> Result<Result<(), String>, Fenced> {
        let permit = self.fence.check_now(self.term)?;
        let event = event(subject, message, self.identity, Timestamp::now());
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        let bound = permit.remaining.min(self.call_timeout);
        let created =
            tokio::time::timeout(bound, events.create(&PostParams::default(), &event)).await;
        Ok(match created {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {bound:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;
    use crate::rebalance::{
        plan::{NodeReport, NodeStatus, PodRef, Summary},
        snapshot::WorkloadKey,
        Timestamp as PlanTime,
    };

    fn planned() -> (Plan, Eviction) {
        let eviction = Eviction {
            pod: PodRef {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: "uid-1".into(),
            },
            workload: WorkloadKey::new("shop", "Deployment", "web"),
            source: "node-a".into(),
            destinations: Vec::new(),
            source_before: Default::default(),
            source_after: Default::default(),
            reason: "node-a cpu contention 0.62 above 0.30".into(),
        };
        let plan = Plan {
            at: PlanTime(0),
            dry_run: false,
            evictions: vec![eviction.clone()],
            skipped_pods: Vec::new(),
            nodes: vec![NodeReport {
                node: "node-a".into(),
                status: NodeStatus::Source,
                resources: vec![crate::load::score::Resource::Memory],
                skip: None,
                detail: String::new(),
            }],
            expired_in_flight: Vec::new(),
            summary: Summary::default(),
        };
        (plan, eviction)
    }

    fn api_error(code: u16, reason: &str) -> Result<serde_json::Value, kube::Error> {
        Err(kube::Error::Api(
            Status::failure("refused", reason).with_code(code).boxed(),
        ))
    }

    #[test]
    fn refusals_are_told_apart() {
        assert_eq!(
            classify(&Ok(serde_json::json!({}))).0,
            EvictionResult::Evicted
        );
        let cases = [
            (429, "TooManyRequests", EvictionResult::PdbBlocked),
            (409, "Conflict", EvictionResult::Conflict),
            (404, "NotFound", EvictionResult::NotFound),
            (500, "InternalError", EvictionResult::Failed),
            (503, "ServiceUnavailable", EvictionResult::Failed),
        ];
        for (code, reason, want) in cases {
            let (result, detail) = classify(&api_error(code, reason));
            assert_eq!(result, want, "{code}");
            assert!(detail.starts_with(&format!("{code} {reason}")), "{detail}");
        }
    }

    #[test]
    fn the_eviction_carries_the_uid_precondition() {
        let (_, eviction) = planned();
        let json = serde_json::to_value(eviction_body(&eviction)).expect("serialises");
        assert_eq!(json["apiVersion"], "policy/v1");
        assert_eq!(json["kind"], "Eviction");
        assert_eq!(json["metadata"]["name"], "web-1");
        assert_eq!(json["metadata"]["namespace"], "shop");
        assert_eq!(json["deleteOptions"]["preconditions"]["uid"], "uid-1");
    }

    #[test]
    fn the_resource_is_the_sources_first_hot_one() {
        let (mut plan, eviction) = planned();
        assert_eq!(resource_of(&plan, &eviction), "memory");
        plan.nodes.clear();
        assert_eq!(resource_of(&plan, &eviction), "unknown");
    }

    #[test]
    fn events_name_their_object_and_say_why() {
        let now = Timestamp::from_second(1_767_225_600).expect("valid");
        let pod = event(
            &Subject {
                kind: "Pod",
                namespace: Some("shop"),
                name: "web-1",
                uid: Some("uid-1"),
            },
            &"x".repeat(5000),
            "ballast-abc",
            now,
        );
        assert_eq!(pod.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(
            pod.metadata.name,
            Some(format!("web-1.{:x}", now.as_nanosecond()))
        );
        assert_eq!(pod.involved_object.uid.as_deref(), Some("uid-1"));
        assert_eq!(pod.reason.as_deref(), Some(EVICTED_REASON));
        assert!(pod
            .message
            .as_ref()
            .is_some_and(|m| m.len() == MESSAGE_LIMIT && m.ends_with("...")));
        let node = event(
            &Subject {
                kind: "Node",
                namespace: None,
                name: "node-a",
                uid: None,
            },
            "evicted shop/web-1",
            "ballast-abc",
            now,
        );
        assert_eq!(node.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(node.involved_object.namespace, None);
        let json = serde_json::to_value(&node).expect("serialises");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Event");
        assert_eq!(json["type"], "Normal");
        assert_eq!(json["reportingInstance"], "ballast-abc");
    }
}
