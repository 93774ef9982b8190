//! Builders for the objects tests seed the double with (nodes, controller-owned pods, PDBs,
//! StatefulSets), shaped like what a real cluster returns, and an async poll for conditions.

use std::{future::Future, time::Duration};

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

/// A Ready node with `cpu` and `memory` allocatable (quantities: "4", "16Gi") and the usual
/// hostname label.
pub fn node(name: &str, cpu: &str, memory: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    })
}

/// `node` with a taint added (`effect`: NoSchedule, PreferNoSchedule, NoExecute).
pub fn tainted(mut node: Value, key: &str, effect: &str) -> Value {
    let taint = json!({"key": key, "effect": effect});
    match node["spec"]["taints"].as_array_mut() {
        Some(taints) => taints.push(taint),
        None => node["spec"]["taints"] = json!([taint]),
    }
    node
}

/// The controller kinds whose pods the scheduler stand-in recreates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    ReplicaSet,
    StatefulSet,
}

impl Controller {
    fn kind(self) -> &'static str {
        match self {
            Controller::ReplicaSet => "ReplicaSet",
            Controller::StatefulSet => "StatefulSet",
        }
    }
}

/// A workload: pods owned by one ReplicaSet or StatefulSet, labelled `app=NAME`, with
/// per-container requests.
#[derive(Clone, Debug)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub controller: Controller,
    pub labels: Map<String, Value>,
    pub cpu: String,
    pub memory: String,
}

impl Workload {
    pub fn new(controller: Controller, namespace: &str, name: &str) -> Self {
        let mut labels = Map::new();
        labels.insert("app".into(), json!(name));
        Self {
            namespace: namespace.into(),
            name: name.into(),
            controller,
            labels,
            cpu: "100m".into(),
            memory: "128Mi".into(),
        }
    }

    pub fn replica_set(namespace: &str, name: &str) -> Self {
        Self::new(Controller::ReplicaSet, namespace, name)
    }

    pub fn stateful_set(namespace: &str, name: &str) -> Self {
        Self::new(Controller::StatefulSet, namespace, name)
    }

    /// Requests of the pods' single container.
    pub fn requests(mut self, cpu: &str, memory: &str) -> Self {
        self.cpu = cpu.into();
        self.memory = memory.into();
        self
    }

    /// The controller's uid (stable, so pods built separately belong to one workload).
    pub fn uid(&self) -> String {
        format!(
            "00000000-0000-4000-8000-{:012x}",
            ballast::sim::rng::name_hash(&format!("{}/{}", self.namespace, self.name))
                & 0xffff_ffff_ffff
        )
    }

    /// Name of replica `index`: `NAME-INDEX` for a StatefulSet, `NAME-NNNNN` for a ReplicaSet.
    pub fn pod_name(&self, index: usize) -> String {
        match self.controller {
            Controller::StatefulSet => format!("{}-{index}", self.name),
            Controller::ReplicaSet => format!("{}-{index:05}", self.name),
        }
    }

    /// Replica `index`, bound to `node`, Running and Ready.
    pub fn pod(&self, index: usize, node: &str) -> Value {
        let mut metadata = json!({
            "name": self.pod_name(index),
            "namespace": self.namespace,
            "labels": self.labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": self.controller.kind(), "name": self.name,
                "uid": self.uid(), "controller": true, "blockOwnerDeletion": true,
            }],
        });
        if self.controller == Controller::ReplicaSet {
            metadata["generateName"] = json!(format!("{}-", self.name));
        }
        let ready = |kind: &str| json!({"type": kind, "status": "True"});
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "nodeName": node,
                "schedulerName": "default-scheduler",
                "containers": [{"name": "main", "image": "registry.invalid/app:1",
                    "resources": {"requests": {"cpu": self.cpu, "memory": self.memory}}}],
            },
            "status": {
                "phase": "Running",
                "conditions": [ready("PodScheduled"), ready("Initialized"), ready("ContainersReady"), ready("Ready")],
            },
        })
    }

    /// The StatefulSet owning the pods (the pods' owner uid), with `replicas` and a
    /// `podManagementPolicy` (`None`: unset, which the server defaults to OrderedReady); the
    /// double runs no controller for it, so it only describes the pods seeded beside it.
    pub fn stateful_set_object(&self, replicas: u32, policy: Option<&str>) -> Value {
        let mut set = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid()},
            "spec": {
                "replicas": replicas,
                "serviceName": self.name,
                "selector": {"matchLabels": self.labels},
                "template": {
                    "metadata": {"labels": self.labels},
                    "spec": {"containers": [{"name": "main", "image": "registry.invalid/app:1"}]},
                },
            },
        });
        if let Some(policy) = policy {
            set["spec"]["podManagementPolicy"] = json!(policy);
        }
        set
    }

    fn pdb(&self, name: &str, budget: (&str, Value)) -> Value {
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"selector": {"matchLabels": self.labels}, budget.0: budget.1},
        })
    }

    /// A PDB over the workload's pods with `minAvailable` (an int or a "50%" string).
    pub fn pdb_min_available(&self, name: &str, min: Value) -> Value {
        self.pdb(name, ("minAvailable", min))
    }

    /// A PDB over the workload's pods with `maxUnavailable` (an int or a "50%" string).
    pub fn pdb_max_unavailable(&self, name: &str, max: Value) -> Value {
        self.pdb(name, ("maxUnavailable", max))
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `timeout` (the async
/// counterpart of [`crate::eventually`], for tests whose clients run on the test's runtime).
pub async fn eventually_async<T, F, Fut>(timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
