use k8s_openapi::api::{core::v1 as core, policy::v1::PodDisruptionBudget};
use serde_json::{json, Value};

use super::*;

fn node(value: Value) -> core::Node {
    serde_json::from_value(value).expect("a valid Node")
}

fn pod(value: Value) -> core::Pod {
    serde_json::from_value(value).expect("a valid Pod")
}

fn pdb(value: Value) -> PodDisruptionBudget {
    serde_json::from_value(value).expect("a valid PDB")
}

/// A worker node as `kubectl get node -o json` shows it (trimmed).
fn worker(name: &str, ready: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": format!("uid-{name}"),
            "resourceVersion": "4711",
            "labels": {
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": "zone-a",
                "node.kubernetes.io/instance-type": "m5.xlarge"
            }
        },
        "spec": {
            "podCIDR": "10.244.1.0/24",
            "taints": [
                {"key": "dedicated", "value": "batch", "effect": "NoSchedule"},
                {"key": "ballast.io/hot", "effect": "PreferNoSchedule"},
                {"key": "future", "effect": "SomethingNew"}
            ]
        },
        "status": {
            "capacity": {"cpu": "4", "memory": "16310508Ki", "pods": "110"},
            "allocatable": {
                "cpu": "3920m",
                "memory": "15159532Ki",
                "pods": "110",
                "ephemeral-storage": "95491281146",
                "hugepages-2Mi": "0",
                "nvidia.com/gpu": "2"
            },
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "Ready", "status": ready, "reason": "KubeletReady"}
            ]
        }
    })
}

/// A Deployment's pod, scheduled and Ready, with two containers and an init container.
fn web_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-7d4b9c8f6d-x2x9k",
            "namespace": "shop",
            "uid": "0b6e5d3c-1111-2222-3333-444455556666",
            "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d"},
            "annotations": {"ballast.io/evict": "true"},
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d4b9c8f6d",
                "uid": "rs-uid",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "nodeName": "node-a",
            "priority": 1000,
            "initContainers": [{
                "name": "migrate",
                "image": "migrate:1",
                "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}
            }],
            "containers": [
                {
                    "name": "app",
                    "image": "web:1",
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "1Gi"},
                        "limits": {"cpu": "1", "memory": "1Gi"}
                    }
                },
                {
                    "name": "proxy",
                    "image": "envoy:1",
                    "resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}
                }
            ],
            "volumes": [
                {"name": "cache", "emptyDir": {}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "config", "configMap": {"name": "web"}},
                {"name": "token", "projected": {"sources": []}},
                {"name": "host", "hostPath": {"path": "/var/log"}},
                {"name": "creds", "secret": {"secretName": "web"}},
                {"name": "info", "downwardAPI": {"items": []}},
                {"name": "nfs", "nfs": {"server": "nfs", "path": "/"}}
            ],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "dedicated", "value": "batch"},
                {"operator": "Exists"}
            ],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [
                                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-a", "zone-b"]},
                                {"key": "spot", "operator": "DoesNotExist"}
                            ]},
                            {"matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["node-z"]}
                            ]}
                        ]
                    },
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]}}
                    ]
                }
            }
        },
        "status": {
            "phase": "Running",
            "qosClass": "Burstable",
            "startTime": "2026-01-01T00:00:05Z",
            "podIP": "10.244.1.7",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "PodScheduled", "status": "True"}
            ]
        }
    })
}

fn captured(nodes: &[Value], pods: &[Value], pdbs: &[Value]) -> Capture {
    let nodes: Vec<core::Node> = nodes.iter().cloned().map(node).collect();
    let pods: Vec<core::Pod> = pods.iter().cloned().map(pod).collect();
    let pdbs: Vec<PodDisruptionBudget> = pdbs.iter().cloned().map(pdb).collect();
    capture(&nodes, &pods, &pdbs, Loads::default())
}

#[test]
fn a_node_carries_allocatable_labels_taints_and_readiness() {
    let c = captured(
        &[worker("node-b", "True"), worker("node-a", "False")],
        &[],
        &[],
    );
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let names: Vec<&str> = c.snapshot.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"], "sorted by name");
    let a = &c.snapshot.nodes[0];
    assert!(!a.ready);
    assert!(c.snapshot.nodes[1].ready);
    assert_eq!(a.allocatable.cpu_millicores, 3920);
    assert_eq!(a.allocatable.memory_bytes, 15_159_532 * 1024);
    assert_eq!(
        a.allocatable.extended,
        BTreeMap::from([("nvidia.com/gpu".to_string(), 2)]),
        "pods, ephemeral-storage and hugepages are not extended resources"
    );
    assert_eq!(a.labels["topology.kubernetes.io/zone"], "zone-a");
    assert_eq!(
        a.taints,
        vec![
            snap::Taint {
                key: "dedicated".into(),
                value: "batch".into(),
                effect: TaintEffect::NoSchedule
            },
            snap::Taint {
                key: "ballast.io/hot".into(),
                value: String::new(),
                effect: TaintEffect::PreferNoSchedule
            },
        ],
        "an unknown effect is ignored, as the scheduler does"
    );
    assert!(!a.unschedulable);
}

#[test]
fn a_cordoned_node_without_status_is_unschedulable_and_not_ready() {
    let c = captured(
        &[json!({"metadata": {"name": "bare"}, "spec": {"unschedulable": true}})],
        &[],
        &[],
    );
    let n = &c.snapshot.nodes[0];
    assert!(n.unschedulable);
    assert!(!n.ready);
    assert_eq!(n.allocatable, Resources::default());
}

#[test]
fn a_deployment_pod_is_read_whole() {
    let c = captured(&[], &[web_pod()], &[]);
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let p = &c.snapshot.pods[0];
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.name, "web-7d4b9c8f6d-x2x9k");
    assert_eq!(p.uid, "0b6e5d3c-1111-2222-3333-444455556666");
    assert_eq!(p.node.as_deref(), Some("node-a"));
    assert_eq!(
        p.owner,
        Some(Owner {
            kind: "Deployment".into(),
            name: "web".into(),
            pod_management_policy: None,
        }),
        "the ReplicaSet is named as its Deployment"
    );
    assert_eq!(p.priority, 1000);
    assert_eq!(p.qos, Qos::Burstable);
    // app 500m + proxy 250m (limit as request) = 750m, but the init container needs 2 cores.
    assert_eq!(p.requests.cpu_millicores, 2000);
    assert_eq!(p.requests.memory_bytes, (1 << 30) + (128 << 20));
    assert_eq!(p.limits.cpu_millicores, 1250);
    assert_eq!(p.limits.memory_bytes, (1 << 30) + (128 << 20));
    assert_eq!(
        p.volumes,
        [
            VolumeKind::EmptyDir,
            VolumeKind::PersistentVolumeClaim,
            VolumeKind::ConfigMap,
            VolumeKind::Projected,
            VolumeKind::HostPath,
            VolumeKind::Secret,
            VolumeKind::DownwardApi,
            VolumeKind::Other
        ]
    );
    assert_eq!(
        p.tolerations,
        [
            Toleration {
                key: Some("node.kubernetes.io/not-ready".into()),
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: Some(TaintEffect::NoExecute)
            },
            Toleration {
                key: Some("dedicated".into()),
                operator: TolerationOperator::Equal,
                value: "batch".into(),
                effect: None
            },
            Toleration {
                key: None,
                operator: TolerationOperator::Exists,
                value: String::new(),
                effect: None
            },
        ]
    );
    assert_eq!(p.node_selector["kubernetes.io/os"], "linux");
    assert_eq!(p.required_affinity.len(), 2);
    assert_eq!(
        p.required_affinity[0].match_expressions,
        [
            NodeSelectorRequirement {
                key: "topology.kubernetes.io/zone".into(),
                operator: NodeSelectorOperator::In,
                values: vec!["zone-a".into(), "zone-b".into()]
            },
            NodeSelectorRequirement {
                key: "spot".into(),
                operator: NodeSelectorOperator::DoesNotExist,
                values: vec![]
            },
        ]
    );
    assert_eq!(
        p.required_affinity[1].match_expressions[0].key, "metadata.name",
        "matchFields kept, on a key no node label has"
    );
    assert!(p.ready);
    assert_eq!(p.has_readiness_probe, Some(false));
    assert_eq!(p.start_time, Timestamp(1_767_225_605));
    assert!(!p.mirror);
    assert_eq!(p.annotations["ballast.io/evict"], "true");
}

#[test]
fn owners_other_than_deployments_keep_their_kind() {
    let with_owner = |kind: &str, name: &str, hash: Option<&str>, controller: bool| {
        let mut p = web_pod();
        p["metadata"]["ownerReferences"][0]["kind"] = json!(kind);
        p["metadata"]["ownerReferences"][0]["name"] = json!(name);
        p["metadata"]["ownerReferences"][0]["controller"] = json!(controller);
        match hash {
            Some(hash) => p["metadata"]["labels"]["pod-template-hash"] = json!(hash),
            None => {
                p["metadata"]["labels"]
                    .as_object_mut()
                    .map(|l| l.remove("pod-template-hash"));
            }
        }
        captured(&[], &[p], &[]).snapshot.pods[0].owner.clone()
    };
    let owner = |kind: &str, name: &str| {
        Some(Owner {
            kind: kind.into(),
            name: name.into(),
            pod_management_policy: None,
        })
    };
    assert_eq!(
        with_owner("StatefulSet", "db", None, true),
        owner("StatefulSet", "db")
    );
    assert_eq!(
        with_owner("DaemonSet", "agent", None, true),
        owner("DaemonSet", "agent")
    );
    assert_eq!(
        with_owner("Job", "backup-29", None, true),
        owner("Job", "backup-29")
    );
    assert_eq!(
        with_owner("Node", "node-a", None, true),
        owner("Node", "node-a")
    );
    // A ReplicaSet of its own (no template hash, or one that is not its suffix).
    assert_eq!(
        with_owner("ReplicaSet", "legacy", None, true),
        owner("ReplicaSet", "legacy")
    );
    assert_eq!(
        with_owner("ReplicaSet", "legacy-abc", Some("def"), true),
        owner("ReplicaSet", "legacy-abc")
    );
    assert_eq!(
        with_owner("ReplicaSet", "-h1", Some("h1"), true),
        owner("ReplicaSet", "-h1")
    );
    // An owner that is not the controller does not count.
    assert_eq!(
        with_owner("ReplicaSet", "web-7d4b9c8f6d", None, false),
        None
    );
}

#[test]
fn qos_is_computed_when_the_status_does_not_say() {
    let qos_of = |containers: Value| {
        let mut p = web_pod();
        p["status"].as_object_mut().map(|s| s.remove("qosClass"));
        p["spec"]
            .as_object_mut()
            .map(|s| s.remove("initContainers"));
        p["spec"]["containers"] = containers;
        captured(&[], &[p], &[]).snapshot.pods[0].qos
    };
    assert_eq!(
        qos_of(json!([{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}])),
        Qos::Guaranteed,
        "limits alone request the same"
    );
    assert_eq!(
        qos_of(
            json!([{"name": "a", "resources": {"requests": {"cpu": "1000m", "memory": "1024Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}}])
        ),
        Qos::Guaranteed,
        "equal quantities written differently"
    );
    assert_eq!(
        qos_of(json!([
            {"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "100m"}}}
        ])),
        Qos::Burstable
    );
    assert_eq!(
        qos_of(json!([{"name": "a"}, {"name": "b", "resources": {}}])),
        Qos::BestEffort
    );
    assert_eq!(
        qos_of(json!([{"name": "a", "resources": {"limits": {"nvidia.com/gpu": "1"}}}])),
        Qos::BestEffort,
        "only CPU and memory decide"
    );
}

#[test]
fn sidecars_and_overhead_add_up_and_extended_requests_are_counted() {
    let mut p = web_pod();
    p["spec"]["initContainers"] = json!([
        {"name": "mesh", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}}},
        {"name": "setup", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}
    ]);
    p["spec"]["containers"] = json!([
        {"name": "train", "resources": {"limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}}}
    ]);
    p["spec"]["overhead"] = json!({"cpu": "250m", "memory": "120Mi"});
    let c = captured(&[], &[p], &[]);
    let pod = &c.snapshot.pods[0];
    // Running: train 2000m + sidecar 100m = 2100m (setup with the sidecar: 1100m); + 250m.
    assert_eq!(pod.requests.cpu_millicores, 2350);
    assert_eq!(
        pod.requests.memory_bytes,
        (4 << 30) + (50 << 20) + (120 << 20)
    );
    assert_eq!(pod.requests.extended["nvidia.com/gpu"], 1);
    assert!(pod.extended_requests());
}

#[test]
fn finished_terminating_pending_and_mirror_pods() {
    let mut done = web_pod();
    done["status"]["phase"] = json!("Succeeded");
    let mut failed = web_pod();
    failed["status"]["phase"] = json!("Failed");
    let mut terminating = web_pod();
    terminating["metadata"]["name"] = json!("terminating");
    terminating["metadata"]["uid"] = json!("uid-terminating");
    terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
    let mut pending = web_pod();
    pending["metadata"]["name"] = json!("pending");
    pending["metadata"]["uid"] = json!("uid-pending");
    pending["spec"]
        .as_object_mut()
        .map(|s| s.remove("nodeName"));
    pending["status"] =
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]});
    let mut mirror = web_pod();
    mirror["metadata"]["name"] = json!("kube-apiserver-node-a");
    mirror["metadata"]["uid"] = json!("uid-mirror");
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    mirror["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "n", "controller": true}]);
    let c = captured(&[], &[done, failed, terminating, pending, mirror], &[]);
    let by_name = |name: &str| {
        c.snapshot
            .pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} captured"))
    };
    assert_eq!(
        c.snapshot.pods.len(),
        3,
        "Succeeded and Failed pods are left out"
    );
    assert!(
        !by_name("terminating").ready,
        "a terminating pod is not Ready"
    );
    let pending = by_name("pending");
    assert_eq!(pending.node, None);
    assert!(!pending.ready);
    assert_eq!(
        pending.start_time,
        Timestamp(1_767_225_600),
        "no start time yet: the creation time"
    );
    assert_eq!(pending.qos, Qos::Burstable, "computed from the spec");
    assert!(by_name("kube-apiserver-node-a").mirror);
}

#[test]
fn pdbs_with_selectors_and_disruptions() {
    let c = captured(
        &[],
        &[],
        &[
            json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"minAvailable": 2, "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["canary"]}]
                }},
                "status": {"currentHealthy": 3, "desiredHealthy": 2, "disruptionsAllowed": 1, "expectedPods": 3}
            }),
            json!({
                "metadata": {"name": "all", "namespace": "shop"},
                "spec": {"maxUnavailable": "10%", "selector": {}},
            }),
            json!({
                "metadata": {"name": "none", "namespace": "shop"},
                "spec": {"maxUnavailable": 1},
                "status": {"disruptionsAllowed": 1}
            }),
            json!({
                "metadata": {"name": "broken", "namespace": "shop"},
                "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
            }),
        ],
    );
    assert_eq!(c.snapshot.pdbs.len(), 2, "{:?}", c.snapshot.pdbs);
    let all = &c.snapshot.pdbs[0];
    assert_eq!(all.name, "all");
    assert_eq!(
        all.selector,
        LabelSelector::default(),
        "an empty selector matches every pod"
    );
    assert_eq!(
        all.disruptions_allowed, 0,
        "no status yet: no disruption allowed"
    );
    let web = &c.snapshot.pdbs[1];
    assert_eq!(web.disruptions_allowed, 1);
    assert_eq!(web.selector.match_labels["app"], "web");
    assert_eq!(
        web.selector.match_expressions[0].operator,
        LabelSelectorOperator::NotIn
    );
    assert_eq!(c.problems.len(), 1);
    assert!(
        c.problems[0].contains("PDB shop/broken left out"),
        "{:?}",
        c.problems
    );
    assert!(c.problems[0].contains("\"Near\""), "{:?}", c.problems);
}

#[test]
fn unreadable_objects_are_left_out_with_a_reason() {
    let mut bad_node = worker("node-x", "True");
    bad_node["status"]["allocatable"]["cpu"] = json!("four");
    let mut bad_pod = web_pod();
    bad_pod["spec"]["containers"][0]["resources"]["requests"]["memory"] = json!("1GB");
    let c = captured(&[bad_node, worker("node-a", "True")], &[bad_pod], &[]);
    assert_eq!(c.snapshot.nodes.len(), 1);
    assert!(c.snapshot.pods.is_empty());
    assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
    assert!(
        c.problems[0].contains("node node-x left out: status.allocatable.cpu"),
        "{}",
        c.problems[0]
    );
    assert!(
        c.problems[1].contains("pod shop/web-7d4b9c8f6d-x2x9k left out")
            && c.problems[1].contains("container app requests.memory"),
        "{}",
        c.problems[1]
    );
}

#[test]
fn loads_of_nodes_that_are_gone_are_dropped() {
    let nodes = [node(worker("node-a", "True"))];
    let fresh = NodeLoad {
        fresh: true,
        ..NodeLoad::default()
    };
    let loads = Loads {
        nodes: BTreeMap::from([("node-a".into(), fresh.clone()), ("gone".into(), fresh)]),
        pods: BTreeMap::from([("uid".into(), PodLoad::default())]),
    };
    let c = capture(&nodes, &[], &[], loads);
    assert_eq!(c.snapshot.node_loads.keys().collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(c.snapshot.pod_loads.len(), 1);
    assert_eq!(c.snapshot.validate(), Ok(()));
}

#[test]
fn stateful_sets_give_their_pods_their_pod_management_policy() {
    let member = |name: &str, set: &str| {
        let mut p = web_pod();
        p["metadata"]["name"] = json!(name);
        p["metadata"]["uid"] = json!(format!("uid-{name}"));
        p["metadata"]["ownerReferences"][0]["kind"] = json!("StatefulSet");
        p["metadata"]["ownerReferences"][0]["name"] = json!(set);
        p
    };
    let set = |namespace: &str, name: &str, policy: Option<&str>| -> StatefulSet {
        let mut spec = json!({"selector": {}, "template": {}, "serviceName": name});
        if let Some(policy) = policy {
            spec["podManagementPolicy"] = json!(policy);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .expect("a valid StatefulSet")
    };
    let pods = [
        member("db-0", "db"),
        member("cache-0", "cache"),
        member("queue-0", "queue"),
        member("odd-0", "odd"),
        member("gone-0", "gone"),
        web_pod(),
    ];
    let mut snapshot = captured(&[], &pods, &[]).snapshot;
    let namespace = snapshot.pods[0].namespace.clone();
    let sets = [
        set(&namespace, "db", Some("OrderedReady")),
        set(&namespace, "cache", Some("Parallel")),
        set(&namespace, "queue", None),
        set(&namespace, "odd", Some("Sequential")),
        // Same name, other namespace: not theirs.
        set("elsewhere", "gone", Some("Parallel")),
        // A ReplicaSet's pods are not a StatefulSet's, whatever the names.
        set(&namespace, "web-7d4b9c8f6d", Some("Parallel")),
    ];
    stateful_set_policies(&mut snapshot, &sets);
    let policies: Vec<(&str, Option<PodManagementPolicy>)> = snapshot
        .pods
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.owner.as_ref().and_then(|o| o.pod_management_policy),
            )
        })
        .collect();
    use PodManagementPolicy::{OrderedReady, Parallel};
    assert_eq!(
        policies,
        [
            ("cache-0", Some(Parallel)),
            ("db-0", Some(OrderedReady)),
            ("gone-0", None),
            ("odd-0", None),
            ("queue-0", Some(OrderedReady)),
            ("web-7d4b9c8f6d-x2x9k", None),
        ]
    );
}
