//! What the leader's view keeps of each object: exactly what [`super::capture`] and the agent
//! discovery read. The view holds every pod of the cluster, and a pod as the API serves it is
//! mostly what no round looks at (images, environment, commands, ports, mounts, probe bodies,
//! container statuses, other tools' annotations): trimmed before it is stored, a pod costs the
//! leader a fraction of its size. Capturing a trimmed object gives the same snapshot as the
//! whole one (tests).

use k8s_openapi::api::core::v1 as core;

use super::is_read_annotation;

/// Keeps of a pod: metadata (without other tools' annotations), the scheduling-relevant spec
/// (node, priority, volumes' kinds, tolerations, nodeSelector, affinity, overhead) with each
/// container's name, resources, restart policy and whether it has a readiness probe; and the
/// status' phase, QoS, start time, pod IP and conditions.
pub fn pod(pod: &mut core::Pod) {
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|key, _| is_read_annotation(key));
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers = spec.containers.iter().map(container).collect();
        spec.init_containers = spec
            .init_containers
            .as_ref()
            .map(|all| all.iter().map(container).collect());
        spec.ephemeral_containers = None;
    }
    if let Some(status) = pod.status.take() {
        pod.status = Some(core::PodStatus {
            phase: status.phase,
            qos_class: status.qos_class,
            start_time: status.start_time,
            pod_ip: status.pod_ip,
            conditions: status.conditions.map(|all| {
                all.into_iter()
                    .map(|c| core::PodCondition {
                        type_: c.type_,
                        status: c.status,
                        ..core::PodCondition::default()
                    })
                    .collect()
            }),
            ..core::PodStatus::default()
        });
    }
}

fn container(c: &core::Container) -> core::Container {
    core::Container {
        name: c.name.clone(),
        resources: c.resources.clone(),
        restart_policy: c.restart_policy.clone(),
        // Only whether there is one is read.
        readiness_probe: c.readiness_probe.as_ref().map(|_| core::Probe::default()),
        ..core::Container::default()
    }
}

/// Drops a node's image list and volume bookkeeping (its biggest parts, read by no round).
pub fn node(node: &mut core::Node) {
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cluster::{
        capture::{capture, Loads},
        gather::{discover, AgentSelector},
    };

    /// A pod as a real API server returns it: the capture's fixture fields plus the bulk.
    fn full_pod() -> core::Pod {
        let container = |name: &str| {
            json!({
                "name": name,
                "image": "registry.example.com/team/app@sha256:0123456789abcdef",
                "command": ["/bin/app"], "args": ["--port=8080", "--verbose"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5},
                "livenessProbe": {"httpGet": {"path": "/live", "port": 8080}},
                "securityContext": {"runAsNonRoot": true}
            })
        };
        let mut sidecar = container("mesh");
        sidecar["restartPolicy"] = json!("Always");
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-7d4b9c8f6d-x2x9k", "namespace": "shop", "uid": "u-1",
                "labels": {"app": "web", "pod-template-hash": "7d4b9c8f6d", "app.kubernetes.io/name": "ballast"},
                "annotations": {
                    "ballast.io/evict": "true",
                    "kubernetes.io/config.mirror": "abc",
                    "sidecar.istio.io/status": "{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"]}",
                    "prometheus.io/scrape": "true"
                },
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6d", "uid": "rs", "controller": true}]
            },
            "spec": {
                "nodeName": "node-a", "priority": 100,
                "initContainers": [sidecar, container("migrate")],
                "containers": [container("app"), {"name": "plain", "image": "x"}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}, {"name": "tmp", "emptyDir": {}}],
                "tolerations": [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}],
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "overhead": {"cpu": "10m"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}
            },
            "status": {
                "phase": "Running", "qosClass": "Burstable", "startTime": "2026-01-01T00:00:05Z",
                "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}], "hostIP": "10.0.0.1",
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:09Z"},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:01Z"}
                ],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "x", "imageID": "y",
                    "containerID": "containerd://abc", "state": {"running": {"startedAt": "2026-01-01T00:00:06Z"}}}]
            }
        }))
        .expect("a valid Pod")
    }

    fn full_node() -> core::Node {
        serde_json::from_value(json!({
            "metadata": {"name": "node-a", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry.example.com/a@sha256:1", "registry.example.com/a:1"], "sizeBytes": 1}],
                "volumesInUse": ["kubernetes.io/csi/x"],
                "volumesAttached": [{"name": "kubernetes.io/csi/x", "devicePath": ""}]
            }
        }))
        .expect("a valid Node")
    }

    #[test]
    fn a_trimmed_pod_captures_as_the_whole_one_and_is_much_smaller() {
        let (whole_pod, whole_node) = (full_pod(), full_node());
        let (mut pod, mut node) = (whole_pod.clone(), whole_node.clone());
        super::pod(&mut pod);
        super::node(&mut node);
        let before = capture([&whole_node], [&whole_pod], [], Loads::default());
        let after = capture([&node], [&pod], [], Loads::default());
        assert!(before.problems.is_empty(), "{:?}", before.problems);
        assert_eq!(after, before);
        assert_eq!(before.snapshot.pods[0].has_readiness_probe, Some(true));
        assert!(before.snapshot.pods[0].mirror);

        assert!(
            json_len(&pod) * 2 < json_len(&whole_pod),
            "{} of {} bytes kept",
            json_len(&pod),
            json_len(&whole_pod)
        );
        assert!(json_len(&node) < json_len(&whole_node));
    }

    #[test]
    fn a_trimmed_agent_pod_is_still_discovered() {
        let mut pod = full_pod();
        super::pod(&mut pod);
        pod.metadata.namespace = Some("ballast".into());
        let selector: AgentSelector = "app.kubernetes.io/name=ballast"
            .parse()
            .expect("a selector");
        let agents = discover([&pod], "ballast", &selector, 9477);
        assert_eq!(
            agents.get("node-a").map(String::as_str),
            Some("http://10.244.1.7:9477/v1/load")
        );
    }

    /// Size as JSON, for the comparison above.
    fn json_len(value: &impl serde::Serialize) -> usize {
        serde_json::to_vec(value).map_or(0, |bytes| bytes.len())
    }
}
