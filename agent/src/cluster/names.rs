//! Names for the cgroups the collectors measure: pod uid (from the cgroup path) -> namespace, pod,
//! owner, and container id -> container name, from a watch of the pods on this node
//! (`fieldSelector=spec.nodeName=NODE`). /metrics and /v1/load then carry `namespace`, `pod` and
//! `container` instead of the raw ids.

use std::{collections::HashMap, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    runtime::{reflector, watcher, WatchStreamExt},
    Api, Client, ResourceExt,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::capture::owner;
use crate::{
    collect::cgroup::identity::{Identity, KubeNames},
    rebalance::snapshot::Owner,
    state::AgentState,
};

/// One pod's names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNames {
    pub namespace: String,
    pub pod: String,
    pub owner: Option<Owner>,
    /// Container id (without the `containerd://` scheme) -> container name, for every container
    /// the API reports a status for (init and ephemeral ones included).
    pub containers: HashMap<String, String>,
}

/// The pods of this node by uid. Empty in standalone mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodDirectory {
    pods: HashMap<String, PodNames>,
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` -> `<id>`.
fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

impl PodDirectory {
    pub fn from_pods<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let pods = pods
            .into_iter()
            .filter_map(|pod| {
                let uid = pod.metadata.uid.clone()?;
                let status = pod.status.as_ref();
                let statuses = status
                    .into_iter()
                    .flat_map(|s| {
                        s.container_statuses
                            .iter()
                            .chain(s.init_container_statuses.iter())
                            .chain(s.ephemeral_container_statuses.iter())
                    })
                    .flatten();
                let containers = statuses
                    .filter_map(|c| {
                        let id = bare_container_id(c.container_id.as_deref()?);
                        (!id.is_empty()).then(|| (id.to_owned(), c.name.clone()))
                    })
                    .collect();
                Some((
                    uid,
                    PodNames {
                        namespace: pod.namespace().unwrap_or_default(),
                        pod: pod.name_any(),
                        owner: owner(&pod.metadata),
                        containers,
                    },
                ))
            })
            .collect();
        Self { pods }
    }

    pub fn pod(&self, uid: &str) -> Option<&PodNames> {
        self.pods.get(uid)
    }

    /// The names of a cgroup of a known pod; the container only when its id is known (the
    /// sandbox and the pod's own cgroup have none).
    pub fn names(&self, identity: &Identity) -> Option<KubeNames> {
        let (pod, container) = self.lookup(identity)?;
        Some(KubeNames {
            namespace: pod.namespace.clone(),
            pod: pod.pod.clone(),
            container: container.map(str::to_owned),
        })
    }

    /// [`PodDirectory::names`] without copies: the pod's names and the container's name.
    pub fn lookup(&self, identity: &Identity) -> Option<(&PodNames, Option<&str>)> {
        let pod = self.pods.get(identity.pod_uid()?)?;
        let container = identity
            .container_id()
            .and_then(|id| pod.containers.get(id))
            .map(String::as_str);
        Some((pod, container))
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

/// Keeps `state`'s directory in step with the pods of `node` until `shutdown`. Watch errors are
/// retried with the watcher's backoff; names are kept meanwhile.
pub async fn run(
    client: Client,
    node: String,
    state: Arc<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (store, writer) = reflector::store::<Pod>();
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let events = watcher(Api::<Pod>::all(client), config)
        .modify(|pod| pod.managed_fields_mut().clear())
        .default_backoff()
        .reflect(writer);
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        match event {
            Some(Ok(watcher::Event::InitApply(_) | watcher::Event::Init)) => {}
            Some(Ok(_)) => {
                let pods = store.state();
                let directory = PodDirectory::from_pods(pods.iter().map(|p| p.as_ref()));
                debug!(pods = directory.len(), "pod names updated");
                state.set_names(directory);
            }
            Some(Err(error)) => warn!(
                %error,
                node = %node,
                "watching this node's pods failed; names stay as they were, retrying"
            ),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::collect::cgroup::identity::identify as parse;

    const UID: &str = "0b6e5d3c-1111-2222-3333-444455556666";
    const APP: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SANDBOX: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn directory() -> PodDirectory {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "web-7d4b9c8f6d-x2x9k",
                "namespace": "shop",
                "uid": UID,
                "labels": {"pod-template-hash": "7d4b9c8f6d"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-7d4b9c8f6d", "uid": "rs", "controller": true}]
            },
            "spec": {"containers": [{"name": "app"}]},
            "status": {
                "containerStatuses": [{"name": "app", "containerID": format!("containerd://{APP}"),
                    "image": "web", "imageID": "", "ready": true, "restartCount": 0}],
                "initContainerStatuses": [{"name": "migrate", "image": "m", "imageID": "",
                    "ready": false, "restartCount": 0}]
            }
        }))
        .expect("a valid Pod");
        PodDirectory::from_pods([&pod])
    }

    #[test]
    fn containers_of_known_pods_get_their_names() {
        let d = directory();
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{APP}.scope",
            UID.replace('-', "_")
        );
        let names = d.names(&parse(&path)).expect("known");
        assert_eq!(
            names,
            KubeNames {
                namespace: "shop".into(),
                pod: "web-7d4b9c8f6d-x2x9k".into(),
                container: Some("app".into())
            }
        );
        let owner = d.pod(UID).and_then(|p| p.owner.clone()).expect("owned");
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("Deployment", "web")
        );
    }

    #[test]
    fn the_sandbox_and_the_pod_cgroup_get_the_pod_only() {
        let d = directory();
        let slice = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        let sandbox = format!("{slice}/cri-containerd-{SANDBOX}.scope");
        for path in [slice, sandbox] {
            let names = d.names(&parse(&path)).expect("known pod");
            assert_eq!(names.pod, "web-7d4b9c8f6d-x2x9k");
            assert_eq!(names.container, None, "{path}");
        }
    }

    #[test]
    fn unknown_pods_and_other_cgroups_have_no_names() {
        let d = directory();
        let other_pod = "/kubepods/burstable/pod11111111-2222-3333-4444-555555555555";
        assert_eq!(d.names(&parse(other_pod)), None);
        assert_eq!(d.names(&parse("/system.slice/kubelet.service")), None);
        assert_eq!(PodDirectory::default().names(&parse(other_pod)), None);
        assert_eq!(bare_container_id("cri-o://abc"), "abc");
        assert_eq!(bare_container_id("abc"), "abc");
    }
}
