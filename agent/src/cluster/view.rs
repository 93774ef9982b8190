//! The leader's view of the cluster: reflectors (watch + in-memory store) of nodes, pods and
//! PodDisruptionBudgets, so that a round reads memory instead of listing everything again. Only
//! the leader runs them; they stop when the view is dropped (leadership ends).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::{core::v1 as core, policy::v1::PodDisruptionBudget};
use kube::{
    runtime::{
        reflector::{self, Store},
        watcher, WatchStreamExt,
    },
    Api, Client, Resource, ResourceExt,
};
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;
use tracing::warn;

use super::capture::trim;

/// The annotation `kubectl apply` leaves on objects: a full copy of the object, useless here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub struct ClusterView {
    pub nodes: Store<core::Node>,
    pub pods: Store<core::Pod>,
    pub pdbs: Store<PodDisruptionBudget>,
    /// The reflectors' tasks; dropping the view aborts them.
    _tasks: JoinSet<()>,
}

/// Watches `api` into a store, each object passed through `trim` first (see
/// [`crate::cluster::capture::trim`]: what is kept decides the leader's memory).
fn reflect<K>(api: Api<K>, trim: fn(&mut K), tasks: &mut JoinSet<()>) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store::<K>();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let events = watcher(api, watcher::Config::default())
        .modify(move |object| {
            object.managed_fields_mut().clear();
            object.annotations_mut().remove(LAST_APPLIED);
            trim(object);
        })
        .default_backoff()
        .reflect(writer);
    tasks.spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if let Err(error) = event {
                warn!(%error, kind = %kind, "watch failed; the view keeps its last state and retries");
            }
        }
    });
    store
}

impl ClusterView {
    /// Starts the watches (they list first, then watch from the list's resourceVersion).
    pub fn start(client: &Client) -> Self {
        let mut tasks = JoinSet::new();
        Self {
            nodes: reflect(Api::all(client.clone()), trim::node, &mut tasks),
            pods: reflect(Api::all(client.clone()), trim::pod, &mut tasks),
            pdbs: reflect(Api::all(client.clone()), |_| {}, &mut tasks),
            _tasks: tasks,
        }
    }

    /// Waits until every store holds a complete first list, at most `limit`.
    pub async fn ready(&self, limit: Duration) -> bool {
        let all = async {
            let _ = self.nodes.wait_until_ready().await;
            let _ = self.pods.wait_until_ready().await;
            let _ = self.pdbs.wait_until_ready().await;
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    pub fn nodes(&self) -> Vec<Arc<core::Node>> {
        self.nodes.state()
    }

    pub fn pods(&self) -> Vec<Arc<core::Pod>> {
        self.pods.state()
    }

    pub fn pdbs(&self) -> Vec<Arc<PodDisruptionBudget>> {
        self.pdbs.state()
    }
}
