//! The resources the double serves: where each lives in the URL space and what its objects look
//! like (`apiVersion`, `kind`, scope).

use serde_json::Value;

/// A resource type served by the double.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 `nodes` (cluster-scoped).
    Node,
    /// core/v1 `pods`.
    Pod,
    /// core/v1 `configmaps`.
    ConfigMap,
    /// core/v1 `events`.
    Event,
    /// events.k8s.io/v1 `events` (what kube's `Recorder` writes).
    EventV1,
    /// coordination.k8s.io/v1 `leases`.
    Lease,
    /// policy/v1 `poddisruptionbudgets`.
    PodDisruptionBudget,
    /// apps/v1 `statefulsets` (objects only: no controller creates pods from them).
    StatefulSet,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Node,
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Event,
        Kind::EventV1,
        Kind::Lease,
        Kind::PodDisruptionBudget,
        Kind::StatefulSet,
    ];

    /// API group; empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Node | Kind::Pod | Kind::ConfigMap | Kind::Event => "",
            Kind::EventV1 => "events.k8s.io",
            Kind::Lease => "coordination.k8s.io",
            Kind::PodDisruptionBudget => "policy",
            Kind::StatefulSet => "apps",
        }
    }

    /// `apiVersion` of the objects: `v1` or `group/v1` (every served resource is at v1).
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Node | Kind::Pod | Kind::ConfigMap | Kind::Event => "v1",
            Kind::EventV1 => "events.k8s.io/v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::PodDisruptionBudget => "policy/v1",
            Kind::StatefulSet => "apps/v1",
        }
    }

    /// The `kind` field of the objects.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Event | Kind::EventV1 => "Event",
            Kind::Lease => "Lease",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::StatefulSet => "StatefulSet",
        }
    }

    /// The resource name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::ConfigMap => "configmaps",
            Kind::Event | Kind::EventV1 => "events",
            Kind::Lease => "leases",
            Kind::PodDisruptionBudget => "poddisruptionbudgets",
            Kind::StatefulSet => "statefulsets",
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Node
    }

    /// Whether `status` is a subresource, so that writes to the main resource leave it alone.
    pub fn has_status(self) -> bool {
        matches!(
            self,
            Kind::Node | Kind::Pod | Kind::PodDisruptionBudget | Kind::StatefulSet
        )
    }

    /// `plural.group` as the apiserver names the resource in messages (`leases.coordination.k8s.io`).
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_string(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// The resource at `group`/`version`/`plural` of a URL.
    pub fn from_url(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.plural() == plural && version == "v1")
    }

    /// The resource of an object, from its `apiVersion` and `kind`.
    pub fn of(object: &Value) -> Option<Kind> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        Kind::ALL
            .into_iter()
            .find(|k| k.api_version() == api_version && k.kind() == kind)
    }
}

/// `metadata.name` of an object ("" when absent).
pub fn name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace` of an object ("" when absent).
pub fn namespace(object: &Value) -> &str {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.resourceVersion` of an object, if set and not empty.
pub fn resource_version(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
}

/// The controlling owner (`ownerReferences[].controller: true`) of an object: (kind, name, uid).
pub fn controller_owner(object: &Value) -> Option<(&str, &str, &str)> {
    let owner = object
        .pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))?;
    let field = |name: &str| owner.get(name).and_then(Value::as_str);
    Some((field("kind")?, field("name")?, field("uid").unwrap_or("")))
}

/// Whether a pod is owned by a controller the scheduler stand-in recreates pods of.
pub fn replaced_when_deleted(pod: &Value) -> bool {
    matches!(
        controller_owner(pod),
        Some(("ReplicaSet" | "StatefulSet", _, _))
    )
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Now as a `metav1.Time` (seconds, UTC), as the server stamps `creationTimestamp`.
pub fn now_time() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A timestamp as a `metav1.MicroTime` (microseconds, UTC), the way the server writes back
/// what a client sent; `None` when `text` is not an RFC 3339 timestamp.
pub fn micro_time(text: &str) -> Option<String> {
    let at: jiff::Timestamp = text.parse().ok()?;
    Some(at.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_objects_resolve_to_the_same_kind() {
        for kind in Kind::ALL {
            let (group, version) = match kind.api_version().split_once('/') {
                Some((g, v)) => (g, v),
                None => ("", kind.api_version()),
            };
            assert_eq!(Kind::from_url(group, version, kind.plural()), Some(kind));
            let object = serde_json::json!({"apiVersion": kind.api_version(), "kind": kind.kind()});
            assert_eq!(Kind::of(&object), Some(kind));
        }
        assert_eq!(Kind::from_url("", "v1", "secrets"), None);
        assert_eq!(
            Kind::from_url("policy", "v1beta1", "poddisruptionbudgets"),
            None
        );
        assert_eq!(Kind::Lease.qualified(), "leases.coordination.k8s.io");
        assert_eq!(Kind::Pod.qualified(), "pods");
    }

    #[test]
    fn micro_times_are_normalised_to_utc_microseconds() {
        assert_eq!(
            micro_time("2025-03-01T10:00:00.123456789+01:00").as_deref(),
            Some("2025-03-01T09:00:00.123456Z")
        );
        assert_eq!(
            micro_time("2025-03-01T10:00:00Z").as_deref(),
            Some("2025-03-01T10:00:00.000000Z")
        );
        assert_eq!(micro_time("yesterday"), None);
    }
}
