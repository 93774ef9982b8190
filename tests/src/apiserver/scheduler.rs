//! Stand-ins for the ReplicaSet/StatefulSet controllers, kube-scheduler and the kubelet, reduced
//! to what passive migration needs: a deleted controller-owned pod comes back `restart_delay`
//! later (a ReplicaSet's under a new name, a StatefulSet's under the same one, both with a new
//! uid), every unbound pod is placed by the simulator's model of the default scheduler
//! (`ballast::sim::scheduler`: requests against allocatable, NoSchedule/NoExecute taints,
//! nodeSelector and cordons filter; least-allocated requests, balance, PreferNoSchedule taints
//! and spreading score), and a pod the stand-in bound turns Running and Ready `ready_delay`
//! later. A pod that fits nowhere stays Pending (`PodScheduled=False`, `Unschedulable`) and is
//! tried again whenever a node or a pod changes.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ballast::{
    rebalance::snapshot::{Taint, Toleration},
    sim::{
        rng::SplitMix64,
        scheduler::{place, Candidate, PodNeeds},
    },
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    quantity,
    resource::{self, Kind},
    store::{Change, EventType, Key, Store},
    Shared,
};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Requests of one pod: (cpu cores, memory GiB). The effective request is the larger of the
/// containers' sum and the largest init container, plus the pod overhead.
fn requests(pod: &Value) -> (f64, f64) {
    let of = |containers: Option<&Value>| -> Vec<(f64, f64)> {
        containers
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let request = |name: &str| {
                    c.pointer(&format!("/resources/requests/{name}"))
                        .and_then(Value::as_str)
                        .and_then(quantity::parse)
                        .unwrap_or(0.0)
                };
                (request("cpu"), request("memory") / GIB)
            })
            .collect()
    };
    let spec = pod.get("spec");
    let (mut cpu, mut memory) = of(spec.and_then(|s| s.get("containers")))
        .into_iter()
        .fold((0.0, 0.0), |(a, b), (c, m)| (a + c, b + m));
    for (c, m) in of(spec.and_then(|s| s.get("initContainers"))) {
        cpu = f64::max(cpu, c);
        memory = f64::max(memory, m);
    }
    let overhead = |name: &str| {
        pod.pointer(&format!("/spec/overhead/{name}"))
            .and_then(Value::as_str)
            .and_then(quantity::parse)
            .unwrap_or(0.0)
    };
    (cpu + overhead("cpu"), memory + overhead("memory") / GIB)
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

fn owner_uid(pod: &Value) -> Option<&str> {
    resource::controller_owner(pod).map(|(_, _, uid)| uid)
}

/// A node as the scheduler model sees it, owning what `Candidate` borrows.
struct NodeView {
    name: String,
    cpu: f64,
    memory: f64,
    labels: BTreeMap<String, String>,
    taints: Vec<Taint>,
    unschedulable: bool,
    requested_cpu: f64,
    requested_memory: f64,
    /// Pods per controller uid on the node.
    workloads: BTreeMap<String, u32>,
}

fn nodes(store: &Store) -> Vec<NodeView> {
    let mut views: Vec<NodeView> = store
        .objects(Kind::Node)
        .values()
        .filter_map(|node| {
            let allocatable = |name: &str| {
                ["allocatable", "capacity"].iter().find_map(|field| {
                    node.pointer(&format!("/status/{field}/{name}"))
                        .and_then(Value::as_str)
                        .and_then(quantity::parse)
                })
            };
            let (cpu, memory) = (allocatable("cpu")?, allocatable("memory")? / GIB);
            // A node without room of either kind can take no pod with requests; the model
            // divides by both.
            if cpu <= 0.0 || memory <= 0.0 {
                return None;
            }
            let labels = node
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
            let taints = node
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                // Effects the model does not know are not taints it can honour.
                .filter_map(|t| serde_json::from_value(t.clone()).ok())
                .collect();
            Some(NodeView {
                name: resource::name(node).to_string(),
                cpu,
                memory,
                labels,
                taints,
                unschedulable: node.pointer("/spec/unschedulable") == Some(&json!(true)),
                requested_cpu: 0.0,
                requested_memory: 0.0,
                workloads: BTreeMap::new(),
            })
        })
        .collect();
    let index: BTreeMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), i))
        .collect();
    for pod in store.objects(Kind::Pod).values().filter(|p| !terminal(p)) {
        if let Some(&i) = node_name(pod).and_then(|n| index.get(n)) {
            bind_requests(&mut views[i], pod);
        }
    }
    views
}

fn bind_requests(node: &mut NodeView, pod: &Value) {
    let (cpu, memory) = requests(pod);
    node.requested_cpu += cpu;
    node.requested_memory += memory;
    if let Some(uid) = owner_uid(pod) {
        *node.workloads.entry(uid.to_string()).or_default() += 1;
    }
}

/// A toleration in the model's terms (an empty key or effect means "any").
fn toleration(value: &Value) -> Option<Toleration> {
    let mut value = value.clone();
    let fields = value.as_object_mut()?;
    for field in ["key", "effect"] {
        if fields.get(field).is_some_and(|v| v == "") {
            fields.remove(field);
        }
    }
    serde_json::from_value(value).ok()
}

/// The node the default scheduler would pick for `pod`, if any fits.
fn choose(pod: &Value, views: &[NodeView], rng: &mut SplitMix64) -> Option<usize> {
    let (cpu, memory) = requests(pod);
    let node_selector: BTreeMap<String, String> = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let tolerations: Vec<Toleration> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toleration)
        .collect();
    let needs = PodNeeds {
        cpu,
        memory,
        node_selector: &node_selector,
        tolerations: &tolerations,
    };
    let workload = owner_uid(pod);
    let candidates: Vec<Candidate> = views
        .iter()
        .map(|v| Candidate {
            cpu: v.cpu,
            memory: v.memory,
            requested_cpu: v.requested_cpu,
            requested_memory: v.requested_memory,
            labels: &v.labels,
            taints: &v.taints,
            unschedulable: v.unschedulable,
            siblings: workload
                .and_then(|w| v.workloads.get(w).copied())
                .unwrap_or(0),
        })
        .collect();
    place(&needs, &candidates, rng)
}

fn condition(kind: &str, status: bool, reason: Option<&str>, message: Option<&str>) -> Value {
    let mut condition = json!({
        "type": kind, "status": if status { "True" } else { "False" },
        "lastTransitionTime": resource::now_time(),
    });
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    if let Some(message) = message {
        condition["message"] = json!(message);
    }
    condition
}

fn waits_for_scheduler(pod: &Value) -> bool {
    node_name(pod).is_none()
        && !terminal(pod)
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && matches!(
            pod.pointer("/spec/schedulerName").and_then(Value::as_str),
            None | Some("default-scheduler")
        )
}

/// What the stand-ins listen to.
pub const WATCHED: [Kind; 2] = [Kind::Pod, Kind::Node];

/// The stand-ins' state that is not in the store.
pub struct Scheduler {
    shared: Arc<Shared>,
    rng: SplitMix64,
    /// Pods waiting for a node (kept from the changes, so no pass scans every pod).
    pending: BTreeSet<Key>,
}

impl Scheduler {
    pub fn new(shared: Arc<Shared>) -> Self {
        let rng = SplitMix64::new(shared.config.seed ^ 0x5c4e_d01e);
        Self {
            shared,
            rng,
            pending: BTreeSet::new(),
        }
    }

    /// Binds every unbound pod that fits somewhere; marks the others unschedulable. Returns
    /// the pods bound, for the kubelet stand-in.
    fn schedule_pending(&mut self, store: &mut Store) -> Vec<Key> {
        let pending: Vec<(Key, Value)> = self
            .pending
            .iter()
            .filter_map(|key| Some((key.clone(), store.get(Kind::Pod, &key.0, &key.1)?.clone())))
            .filter(|(_, pod)| waits_for_scheduler(pod))
            .collect();
        if pending.is_empty() {
            return Vec::new();
        }
        let mut views = nodes(store);
        let mut bound = Vec::new();
        for (key, mut pod) in pending {
            match choose(&pod, &views, &mut self.rng) {
                Some(i) => {
                    bind_requests(&mut views[i], &pod);
                    pod["spec"]["nodeName"] = json!(views[i].name);
                    pod["status"]["conditions"] =
                        json!([condition("PodScheduled", true, None, None)]);
                    if store.put(pod).is_ok() {
                        bound.push(key);
                    }
                }
                None => {
                    let already = pod
                        .pointer("/status/conditions")
                        .and_then(Value::as_array)
                        .is_some_and(|c| {
                            c.iter().any(|c| {
                                c["type"] == "PodScheduled" && c["reason"] == "Unschedulable"
                            })
                        });
                    if already {
                        continue;
                    }
                    let message = format!(
                        "0/{} nodes are available: none fits the pod's requests, taints, node selector or cordon.",
                        store.objects(Kind::Node).len()
                    );
                    pod["status"]["phase"] = json!("Pending");
                    pod["status"]["conditions"] = json!([condition(
                        "PodScheduled",
                        false,
                        Some("Unschedulable"),
                        Some(&message)
                    )]);
                    tracing::debug!(pod = %key.1, namespace = %key.0, "pod fits no node; left Pending");
                    let _ = store.put(pod);
                }
            }
        }
        bound
    }

    /// `ready_delay` after binding: Running with every readiness condition True, unless the
    /// pod was deleted or replaced meanwhile.
    fn start_kubelet(&self, key: Key, uid: String) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep(shared.config.ready_delay).await;
            let mut store = shared.store();
            let Some(mut pod) = store.get(Kind::Pod, &key.0, &key.1).cloned() else {
                return;
            };
            if pod.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
                || terminal(&pod)
            {
                return;
            }
            let mut conditions = vec![condition("PodScheduled", true, None, None)];
            for kind in ["Initialized", "ContainersReady", "Ready"] {
                conditions.push(condition(kind, true, None, None));
            }
            pod["status"]["phase"] = json!("Running");
            pod["status"]["conditions"] = json!(conditions);
            pod["status"]["startTime"] = json!(resource::now_time());
            let _ = store.put(pod);
        });
    }

    /// `restart_delay` after a controller-owned pod was deleted: its replacement, unbound.
    fn start_replacement(&self, deleted: Value) {
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            tokio::time::sleep(shared.config.restart_delay).await;
            let mut store = shared.store();
            let uid = deleted.pointer("/metadata/uid").cloned();
            store
                .awaiting_replacement
                .retain(|p| p.pointer("/metadata/uid").cloned() != uid);
            let namespace = resource::namespace(&deleted).to_string();
            let name = match resource::controller_owner(&deleted) {
                Some(("StatefulSet", _, _)) => resource::name(&deleted).to_string(),
                Some((_, owner, _)) => {
                    let prefix = deleted
                        .pointer("/metadata/generateName")
                        .and_then(Value::as_str)
                        .map_or_else(|| format!("{owner}-"), str::to_string);
                    loop {
                        let name = store.generate_name(&prefix);
                        if store.get(Kind::Pod, &namespace, &name).is_none() {
                            break name;
                        }
                    }
                }
                None => return,
            };
            if store.get(Kind::Pod, &namespace, &name).is_some() {
                return;
            }
            let mut metadata = json!({"name": name, "namespace": namespace});
            for field in ["generateName", "labels", "annotations", "ownerReferences"] {
                if let Some(value) = deleted["metadata"].get(field) {
                    metadata[field] = value.clone();
                }
            }
            let mut spec = deleted.get("spec").cloned().unwrap_or_else(|| json!({}));
            if let Some(fields) = spec.as_object_mut() {
                fields.remove("nodeName");
            }
            let replacement = json!({
                "apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
                "status": {"phase": "Pending"},
            });
            if let Err(error) = store.put(replacement) {
                tracing::warn!(pod = %name, error = %error.message, "could not create the replacement pod");
            }
        });
    }

    fn handle(&mut self, batch: &[Arc<Change>]) {
        let shared = Arc::clone(&self.shared);
        let mut store = shared.store();
        // Placing is tried again when a pod starts waiting, or, while some wait, when room or
        // nodes may have changed.
        let mut retry = false;
        for change in batch {
            let waiting = change.kind == Kind::Pod
                && change.event != EventType::Deleted
                && waits_for_scheduler(&change.object);
            let deleted = change.kind == Kind::Pod && change.event == EventType::Deleted;
            if deleted && resource::replaced_when_deleted(&change.object) {
                self.start_replacement(change.object.clone());
            }
            retry |= if waiting {
                self.pending.insert(change.key.clone())
            } else {
                if change.kind == Kind::Pod {
                    self.pending.remove(&change.key);
                }
                !self.pending.is_empty()
            };
        }
        if retry {
            for key in self.schedule_pending(&mut store) {
                let uid = store
                    .get(Kind::Pod, &key.0, &key.1)
                    .and_then(|p| p.pointer("/metadata/uid"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.start_kubelet(key, uid);
            }
        }
    }

    /// The stand-ins' loop over `changes` (a subscription to [`WATCHED`], made before the
    /// server accepts its first write).
    pub async fn run(mut self, mut changes: mpsc::UnboundedReceiver<Arc<Change>>) {
        while let Some(first) = changes.recv().await {
            let mut batch = vec![first];
            while let Ok(change) = changes.try_recv() {
                batch.push(change);
            }
            self.handle(&batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, taints: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
               "spec": {"taints": taints}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}})
    }

    fn pod(name: &str, node: Option<&str>, cpu: &str) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"},
               "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]},
               "status": {"phase": "Running"}});
        if let Some(node) = node {
            pod["spec"]["nodeName"] = json!(node);
        }
        pod
    }

    #[test]
    fn requests_sum_containers_and_respect_init_containers() {
        let mut p = pod("p", None, "500m");
        p["spec"]["containers"]
            .as_array_mut()
            .expect("an array")
            .push(json!({"name": "d", "resources": {"requests": {"cpu": "250m"}}}));
        p["spec"]["initContainers"] =
            json!([{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "512Mi"}}}]);
        assert_eq!(requests(&p), (2.0, 1.0));
    }

    #[test]
    fn soft_taints_and_full_nodes_are_avoided() {
        let mut store = Store::new(100, 1);
        store
            .put(node(
                "hot",
                json!([{"key": "ballast.io/hot", "effect": "PreferNoSchedule"}]),
            ))
            .expect("valid object");
        store.put(node("cool", json!([]))).expect("valid object");
        store.put(node("full", json!([]))).expect("valid object");
        store
            .put(node(
                "dedicated",
                json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
            ))
            .expect("valid object");
        store
            .put(pod("big", Some("full"), "3900m"))
            .expect("valid object");
        store
            .put(pod("some", Some("cool"), "1"))
            .expect("valid object");
        let views = nodes(&store);
        let mut rng = SplitMix64::new(3);
        for _ in 0..10 {
            let chosen =
                choose(&pod("new", None, "500m"), &views, &mut rng).map(|i| views[i].name.as_str());
            assert_eq!(chosen, Some("cool"));
        }
        let mut tolerant = pod("new", None, "3");
        tolerant["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]);
        tolerant["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "dedicated"});
        assert_eq!(
            choose(&tolerant, &views, &mut rng).map(|i| views[i].name.as_str()),
            Some("dedicated")
        );
        assert_eq!(choose(&pod("huge", None, "5"), &views, &mut rng), None);
    }
}
