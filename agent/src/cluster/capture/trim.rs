//! What the leader's view keeps of each node: what [`super::capture`] reads. A node as the API
//! serves it carries the list of every image it holds and its volume bookkeeping, read by no
//! round; they go before the node is stored. (Pods are not stored at all: the view converts
//! each one as it arrives, see [`crate::cluster::view`].) Capturing a trimmed node gives the
//! same snapshot as the whole one (test).

use k8s_openapi::api::core::v1 as core;

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
    use crate::cluster::capture::{capture, Loads};

    #[test]
    fn a_trimmed_node_captures_as_the_whole_one_and_is_smaller() {
        let whole: core::Node = serde_json::from_value(json!({
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
        .expect("a valid Node");
        let mut trimmed = whole.clone();
        node(&mut trimmed);
        let before = capture([&whole], [], [], Loads::default());
        assert!(before.problems.is_empty() && before.snapshot.nodes.len() == 1);
        assert_eq!(capture([&trimmed], [], [], Loads::default()), before);
        let size = |n: &core::Node| serde_json::to_vec(n).map_or(0, |b| b.len());
        assert!(size(&trimmed) < size(&whole));
    }
}
