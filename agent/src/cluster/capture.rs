//! Kubernetes objects (as the watches deliver them) + the agents' loads -> the planner's
//! [`ClusterSnapshot`]. Pure: no I/O, no clock.
//!
//! What is read, and how:
//! - nodes: `status.allocatable` (cpu, memory, extended resources: names with a `/`), labels,
//!   `spec.taints`, `spec.unschedulable`, the `Ready` condition;
//! - pods that are Pending or Running: the controlling owner (a ReplicaSet whose name is its
//!   Deployment's name plus `-<pod-template-hash>` is named as that Deployment, so every
//!   revision of a Deployment is one workload), QoS (`status.qosClass`, else computed as the
//!   kubelet does), effective requests (containers and native sidecars summed, the largest
//!   init container if more, plus overhead), limits, volume kinds, tolerations, nodeSelector,
//!   required node affinity, the `Ready` condition (a terminating pod counts as not Ready),
//!   whether a container has a readiness probe,
//!   `status.startTime`, the mirror annotation;
//! - PDBs: the selector and `status.disruptionsAllowed`. A PDB without a selector matches no
//!   pod (policy/v1) and is left out;
//! - StatefulSets, where the caller reads them ([`stateful_set_policies`]: `ballast check`):
//!   `spec.podManagementPolicy`, onto their pods' owner.
//!
//! An object that cannot be read (a malformed quantity, an unknown selector operator) is left
//! out and named in [`Capture::problems`]; the API server validates these fields, so this only
//! happens with broken data, and then the rest of the cluster can still be planned.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{apps::v1::StatefulSet, core::v1 as core, policy::v1::PodDisruptionBudget},
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1 as meta},
};

use super::quantity::{self, QuantityError};
use crate::rebalance::snapshot::{
    self as snap, ClusterSnapshot, LabelSelector, LabelSelectorOperator, LabelSelectorRequirement,
    NodeLoad, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, Owner, Pdb, PodLoad,
    PodManagementPolicy, Qos, Resources, TaintEffect, Timestamp, Toleration, TolerationOperator,
    VolumeKind,
};

pub mod trim;

/// The kubelet's annotation on the API's copy of a static pod.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The pod annotations a round reads: Ballast's own (`ballast.io/...`) and the mirror one.
/// The others go (they can be large: other tools keep whole documents in them).
fn is_read_annotation(key: &str) -> bool {
    key.starts_with("ballast.io/") || key == MIRROR_ANNOTATION
}
/// The label the Deployment controller puts on its ReplicaSets' pods.
const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The planner's view of the cluster, and what could not be read into it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capture {
    pub snapshot: ClusterSnapshot,
    /// One line per object left out: which object, and why.
    pub problems: Vec<String>,
}

/// The agents' loads, as gathered this round (see `gather`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loads {
    pub nodes: BTreeMap<String, NodeLoad>,
    pub pods: BTreeMap<String, PodLoad>,
}

/// Builds the snapshot; nodes sorted by name, pods by namespace and name, PDBs likewise, so that
/// equal clusters give equal snapshots whatever order the stores hold them in.
pub fn capture<'a>(
    nodes: impl IntoIterator<Item = &'a core::Node>,
    pods: impl IntoIterator<Item = &'a core::Pod>,
    pdbs: impl IntoIterator<Item = &'a PodDisruptionBudget>,
    loads: Loads,
) -> Capture {
    let mut problems = Vec::new();
    let mut snapshot = ClusterSnapshot::default();
    for node in nodes {
        match convert_node(node) {
            Ok(node) => snapshot.nodes.push(node),
            Err(error) => problems.push(format!(
                "node {} left out: {error}",
                node.metadata.name.as_deref().unwrap_or("?")
            )),
        }
    }
    for pod in pods {
        match convert_pod(pod) {
            Ok(Some(pod)) => snapshot.pods.push(pod),
            Ok(None) => {}
            Err(error) => problems.push(format!(
                "pod {} left out: {error}",
                object_name(&pod.metadata)
            )),
        }
    }
    for pdb in pdbs {
        match convert_pdb(pdb) {
            Ok(Some(pdb)) => snapshot.pdbs.push(pdb),
            Ok(None) => {}
            Err(error) => problems.push(format!(
                "PDB {} left out: {error}",
                object_name(&pdb.metadata)
            )),
        }
    }
    snapshot.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    snapshot
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
    snapshot
        .pdbs
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    // A node that is not in the cluster any more has no use for its load.
    let names: std::collections::BTreeSet<&str> =
        snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
    snapshot.node_loads = loads
        .nodes
        .into_iter()
        .filter(|(name, _)| names.contains(name.as_str()))
        .collect();
    snapshot.pod_loads = loads.pods;
    Capture { snapshot, problems }
}

fn object_name(meta: &meta::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("?")
    )
}

/// Why one object could not be converted.
#[derive(Debug, thiserror::Error)]
enum ConvertError {
    #[error("{field}: {source}")]
    Quantity {
        field: String,
        source: QuantityError,
    },
    #[error("{0}")]
    Invalid(String),
}

fn quantity_error(field: impl Into<String>) -> impl FnOnce(QuantityError) -> ConvertError {
    let field = field.into();
    move |source| ConvertError::Quantity { field, source }
}

fn convert_node(node: &core::Node) -> Result<snap::Node, ConvertError> {
    let name = node
        .metadata
        .name
        .clone()
        .ok_or_else(|| ConvertError::Invalid("no metadata.name".into()))?;
    let status = node.status.as_ref();
    let allocatable = match status.and_then(|s| s.allocatable.as_ref()) {
        Some(map) => resources(map, "status.allocatable")?,
        None => Resources::default(),
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    let spec = node.spec.as_ref();
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .map(|taints| taints.iter().filter_map(convert_taint).collect())
        .unwrap_or_default();
    Ok(snap::Node {
        name,
        allocatable,
        labels: node.metadata.labels.clone().unwrap_or_default(),
        taints,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        ready,
    })
}

pub fn taint_effect(effect: &str) -> Option<TaintEffect> {
    match effect {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// Taints with an effect the scheduler does not know are ignored, as the scheduler does.
fn convert_taint(taint: &core::Taint) -> Option<snap::Taint> {
    Some(snap::Taint {
        key: taint.key.clone(),
        value: taint.value.clone().unwrap_or_default(),
        effect: taint_effect(&taint.effect)?,
    })
}

/// CPU in millicores, memory in bytes, and every name with a `/` as an extended resource.
fn resources(map: &BTreeMap<String, Quantity>, field: &str) -> Result<Resources, ConvertError> {
    let mut out = Resources::default();
    for (name, value) in map {
        let field = || format!("{field}.{name} = {:?}", value.0);
        match name.as_str() {
            "cpu" => {
                out.cpu_millicores =
                    quantity::millicores(&value.0).map_err(quantity_error(field()))?
            }
            "memory" => {
                out.memory_bytes = quantity::units(&value.0).map_err(quantity_error(field()))?
            }
            extended if extended.contains('/') => {
                let units = quantity::units(&value.0).map_err(quantity_error(field()))?;
                out.extended.insert(extended.to_owned(), units);
            }
            _ => {}
        }
    }
    Ok(out)
}

fn add(into: &mut Resources, more: &Resources) {
    into.cpu_millicores = into.cpu_millicores.saturating_add(more.cpu_millicores);
    into.memory_bytes = into.memory_bytes.saturating_add(more.memory_bytes);
    for (name, units) in &more.extended {
        let total = into.extended.entry(name.clone()).or_default();
        *total = total.saturating_add(*units);
    }
}

fn max_into(into: &mut Resources, other: &Resources) {
    into.cpu_millicores = into.cpu_millicores.max(other.cpu_millicores);
    into.memory_bytes = into.memory_bytes.max(other.memory_bytes);
    for (name, units) in &other.extended {
        let current = into.extended.entry(name.clone()).or_default();
        *current = (*current).max(*units);
    }
}

/// A container's requests and limits. A limit without a request requests the limit, as the API
/// server defaults it.
fn container_resources(
    container: &core::Container,
    pod: &str,
) -> Result<(Resources, Resources), ConvertError> {
    let empty = BTreeMap::new();
    let resources_of = container.resources.as_ref();
    let limits_map = resources_of
        .and_then(|r| r.limits.as_ref())
        .unwrap_or(&empty);
    let requests_map = resources_of
        .and_then(|r| r.requests.as_ref())
        .unwrap_or(&empty);
    let field = |kind: &str| format!("{pod}: container {} {kind}", container.name);
    let limits = resources(limits_map, &field("limits"))?;
    let mut effective = limits_map.clone();
    effective.extend(requests_map.iter().map(|(k, v)| (k.clone(), v.clone())));
    let requests = resources(&effective, &field("requests"))?;
    Ok((requests, limits))
}

/// What the scheduler counts for the pod: app containers and restartable (sidecar) init
/// containers run together and add up; a regular init container runs alone, so the pod needs
/// at least the largest of them, counting the sidecars started before it; plus the overhead.
fn pod_requests(spec: &core::PodSpec, pod: &str) -> Result<(Resources, Resources), ConvertError> {
    let mut running = Resources::default();
    let mut limits = Resources::default();
    let mut init_peak = Resources::default();
    let mut sidecars = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let (requests, init_limits) = container_resources(init, pod)?;
        if init.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &requests);
            add(&mut limits, &init_limits);
        } else {
            let mut during = sidecars.clone();
            add(&mut during, &requests);
            max_into(&mut init_peak, &during);
        }
    }
    add(&mut running, &sidecars);
    for container in &spec.containers {
        let (requests, container_limits) = container_resources(container, pod)?;
        add(&mut running, &requests);
        add(&mut limits, &container_limits);
    }
    max_into(&mut running, &init_peak);
    if let Some(overhead) = &spec.overhead {
        add(
            &mut running,
            &resources(overhead, &format!("{pod}: spec.overhead"))?,
        );
    }
    Ok((running, limits))
}

/// The kubelet's rule when `status.qosClass` is not set yet: Guaranteed when every container has
/// CPU and memory limits equal to its requests, BestEffort when none has any CPU or memory
/// request or limit, Burstable otherwise.
fn computed_qos(spec: &core::PodSpec) -> Qos {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let mut any = false;
    let mut all_guaranteed = true;
    for container in containers {
        let requirements = container.resources.as_ref();
        let limits = requirements.and_then(|r| r.limits.as_ref());
        let requests = requirements.and_then(|r| r.requests.as_ref());
        for resource in ["cpu", "memory"] {
            let limit = limits.and_then(|l| l.get(resource));
            let request = requests.and_then(|r| r.get(resource)).or(limit);
            any |= limit.is_some() || request.is_some();
            let equal = match (limit, request) {
                (Some(limit), Some(request)) => same_quantity(resource, limit, request),
                _ => false,
            };
            all_guaranteed &= equal;
        }
    }
    match (any, all_guaranteed) {
        (false, _) => Qos::BestEffort,
        (true, true) => Qos::Guaranteed,
        (true, false) => Qos::Burstable,
    }
}

fn same_quantity(resource: &str, a: &Quantity, b: &Quantity) -> bool {
    let read = |q: &Quantity| {
        if resource == "cpu" {
            quantity::millicores(&q.0)
        } else {
            quantity::units(&q.0)
        }
    };
    matches!((read(a), read(b)), (Ok(a), Ok(b)) if a == b)
}

fn qos(status: Option<&core::PodStatus>, spec: &core::PodSpec) -> Qos {
    match status.and_then(|s| s.qos_class.as_deref()) {
        Some("Guaranteed") => Qos::Guaranteed,
        Some("Burstable") => Qos::Burstable,
        Some("BestEffort") => Qos::BestEffort,
        _ => computed_qos(spec),
    }
}

/// The controlling owner; a Deployment's ReplicaSet is named as its Deployment.
pub fn owner(meta: &meta::ObjectMeta) -> Option<Owner> {
    let reference = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))?;
    let hash = meta
        .labels
        .as_ref()
        .and_then(|labels| labels.get(TEMPLATE_HASH_LABEL));
    if reference.kind == "ReplicaSet" {
        if let Some(deployment) = hash.and_then(|hash| {
            reference
                .name
                .strip_suffix(hash.as_str())
                .and_then(|rest| rest.strip_suffix('-'))
                .filter(|name| !name.is_empty())
        }) {
            return Some(Owner {
                kind: "Deployment".into(),
                name: deployment.to_owned(),
                pod_management_policy: None,
            });
        }
    }
    // A StatefulSet's podManagementPolicy is on the StatefulSet, which the leader does not
    // watch: unknown here, filled in by `stateful_set_policies` where the StatefulSets are read.
    Some(Owner {
        kind: reference.kind.clone(),
        name: reference.name.clone(),
        pod_management_policy: None,
    })
}

/// Fills in the `podManagementPolicy` of every pod owned by one of `sets` (same namespace and
/// name). A pod whose StatefulSet is not among them, or says something unknown, stays unknown.
pub fn stateful_set_policies<'a>(
    snapshot: &mut ClusterSnapshot,
    sets: impl IntoIterator<Item = &'a StatefulSet>,
) {
    let policies: BTreeMap<(&str, &str), PodManagementPolicy> = sets
        .into_iter()
        .filter_map(|set| {
            let policy = match set.spec.pod_management_policy.as_deref() {
                // What the API server defaults an unset policy to.
                Some("OrderedReady") | Some("") | None => PodManagementPolicy::OrderedReady,
                Some("Parallel") => PodManagementPolicy::Parallel,
                Some(_) => return None,
            };
            let meta = &set.metadata;
            Some(((meta.namespace.as_deref()?, meta.name.as_deref()?), policy))
        })
        .collect();
    for pod in &mut snapshot.pods {
        if let Some(owner) = pod.owner.as_mut().filter(|o| o.kind == "StatefulSet") {
            if let Some(policy) = policies.get(&(pod.namespace.as_str(), owner.name.as_str())) {
                owner.pod_management_policy = Some(*policy);
            }
        }
    }
}

fn volume_kind(volume: &core::Volume) -> VolumeKind {
    if volume.empty_dir.is_some() {
        VolumeKind::EmptyDir
    } else if volume.host_path.is_some() {
        VolumeKind::HostPath
    } else if volume.persistent_volume_claim.is_some() {
        VolumeKind::PersistentVolumeClaim
    } else if volume.config_map.is_some() {
        VolumeKind::ConfigMap
    } else if volume.secret.is_some() {
        VolumeKind::Secret
    } else if volume.projected.is_some() {
        VolumeKind::Projected
    } else if volume.downward_api.is_some() {
        VolumeKind::DownwardApi
    } else {
        VolumeKind::Other
    }
}

fn convert_toleration(toleration: &core::Toleration) -> Result<Toleration, ConvertError> {
    let operator = match toleration.operator.as_deref() {
        None | Some("") | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => {
            return Err(ConvertError::Invalid(format!(
                "toleration operator {other:?} is neither Equal nor Exists"
            )))
        }
    };
    let effect = match toleration.effect.as_deref() {
        None | Some("") => None,
        Some(effect) => Some(taint_effect(effect).ok_or_else(|| {
            ConvertError::Invalid(format!("toleration effect {effect:?} is unknown"))
        })?),
    };
    Ok(Toleration {
        key: toleration.key.clone().filter(|key| !key.is_empty()),
        operator,
        value: toleration.value.clone().unwrap_or_default(),
        effect,
    })
}

fn node_operator(operator: &str) -> Result<NodeSelectorOperator, ConvertError> {
    Ok(match operator {
        "In" => NodeSelectorOperator::In,
        "NotIn" => NodeSelectorOperator::NotIn,
        "Exists" => NodeSelectorOperator::Exists,
        "DoesNotExist" => NodeSelectorOperator::DoesNotExist,
        "Gt" => NodeSelectorOperator::Gt,
        "Lt" => NodeSelectorOperator::Lt,
        other => {
            return Err(ConvertError::Invalid(format!(
                "node selector operator {other:?} is unknown"
            )))
        }
    })
}

/// Required node affinity terms. `matchFields` (only `metadata.name` exists) become expressions
/// on the key `metadata.name`, which no node label carries: `In` then fits nowhere, so such a
/// pinned pod is never predicted to fit elsewhere (conservative).
fn required_affinity(spec: &core::PodSpec) -> Result<Vec<NodeSelectorTerm>, ConvertError> {
    let Some(selector) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return Ok(Vec::new());
    };
    selector
        .node_selector_terms
        .iter()
        .map(|term| {
            let expressions = term.match_expressions.iter().flatten();
            let fields = term.match_fields.iter().flatten();
            let match_expressions = expressions
                .chain(fields)
                .map(|r| {
                    Ok(NodeSelectorRequirement {
                        key: r.key.clone(),
                        operator: node_operator(&r.operator)?,
                        values: r.values.clone().unwrap_or_default(),
                    })
                })
                .collect::<Result<_, ConvertError>>()?;
            Ok(NodeSelectorTerm { match_expressions })
        })
        .collect()
}

fn seconds(time: &meta::Time) -> Timestamp {
    Timestamp(time.0.as_second())
}

/// `None` for pods that are done (Succeeded, Failed): they hold no resources.
fn convert_pod(pod: &core::Pod) -> Result<Option<snap::Pod>, ConvertError> {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    ) {
        return Ok(None);
    }
    let meta = &pod.metadata;
    let (Some(name), Some(uid)) = (meta.name.clone(), meta.uid.clone()) else {
        return Err(ConvertError::Invalid(
            "no metadata.name or metadata.uid".into(),
        ));
    };
    let Some(spec) = pod.spec.as_ref() else {
        return Err(ConvertError::Invalid("no spec".into()));
    };
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let label = format!("{namespace}/{name}");
    let (requests, limits) = pod_requests(spec, &label)?;
    let ready = meta.deletion_timestamp.is_none()
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
    let start_time = status
        .and_then(|s| s.start_time.as_ref())
        .or(meta.creation_timestamp.as_ref())
        .map(seconds)
        .unwrap_or_default();
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| is_read_annotation(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    Ok(Some(snap::Pod {
        node: spec.node_name.clone().filter(|n| !n.is_empty()),
        owner: owner(meta),
        labels: meta.labels.clone().unwrap_or_default(),
        mirror: annotations.contains_key(MIRROR_ANNOTATION),
        annotations,
        priority: spec.priority.unwrap_or(0),
        qos: qos(status, spec),
        requests,
        limits,
        volumes: spec.volumes.iter().flatten().map(volume_kind).collect(),
        tolerations: spec
            .tolerations
            .iter()
            .flatten()
            .map(convert_toleration)
            .collect::<Result<_, _>>()?,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        required_affinity: required_affinity(spec)?,
        ready,
        has_readiness_probe: Some(spec.containers.iter().any(|c| c.readiness_probe.is_some())),
        start_time,
        namespace,
        name,
        uid,
    }))
}

pub fn label_selector(selector: &meta::LabelSelector) -> Result<LabelSelector, String> {
    let match_expressions = selector
        .match_expressions
        .iter()
        .flatten()
        .map(|r| {
            let operator = match r.operator.as_str() {
                "In" => LabelSelectorOperator::In,
                "NotIn" => LabelSelectorOperator::NotIn,
                "Exists" => LabelSelectorOperator::Exists,
                "DoesNotExist" => LabelSelectorOperator::DoesNotExist,
                other => return Err(format!("label selector operator {other:?} is unknown")),
            };
            Ok(LabelSelectorRequirement {
                key: r.key.clone(),
                operator,
                values: r.values.clone().unwrap_or_default(),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone().unwrap_or_default(),
        match_expressions,
    })
}

fn convert_pdb(pdb: &PodDisruptionBudget) -> Result<Option<Pdb>, ConvertError> {
    let Some(selector) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return Ok(None);
    };
    let selector = label_selector(selector).map_err(ConvertError::Invalid)?;
    let allowed = pdb
        .status
        .as_ref()
        .and_then(|s| s.disruptions_allowed)
        .unwrap_or(0);
    Ok(Some(Pdb {
        namespace: pdb
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pdb.metadata.name.clone().unwrap_or_default(),
        selector,
        disruptions_allowed: u32::try_from(allowed).unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests;
