//! The leader's view of the cluster, from watches, so that a round reads memory instead of
//! listing everything again: reflectors (watch + in-memory store) of nodes and
//! PodDisruptionBudgets, and an index of pods that keeps each pod only as the planner and the
//! agent discovery read it, converted once when the watch delivers it. The pods are the bulk of
//! a cluster (30,000 of them at 1,000 nodes) and a `Pod` object is kilobytes: keeping the
//! converted form is what keeps the leader within its memory limit. Only the leader runs the
//! view; the watches stop when it is dropped (leadership ends).

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1 as core, policy::v1::PodDisruptionBudget};
use kube::{
    runtime::{
        reflector::{self, Store},
        watcher::{self, watcher, Event},
        WatchStreamExt,
    },
    Api, Client, Resource, ResourceExt,
};
use serde::de::DeserializeOwned;
use tokio::{sync::watch, task::JoinSet};
use tracing::warn;

use super::{
    capture::{capture_pod, trim, CapturedPod},
    gather::{AgentPod, AgentSelector},
};

/// The annotation `kubectl apply` leaves on objects: a full copy of the object, useless here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub struct ClusterView {
    pub nodes: Store<core::Node>,
    pub pods: PodIndex,
    pub pdbs: Store<PodDisruptionBudget>,
    /// The watches' tasks; dropping the view aborts them.
    _tasks: JoinSet<()>,
}

/// Watches `api` into a store, each object passed through `trim` first.
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

/// A pod as a round reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedPod {
    pub captured: CapturedPod,
    /// Set for the pods of the agents the leader gathers from.
    pub agent: Option<AgentPod>,
}

/// Pods by namespace and name.
type Entries = HashMap<(String, String), Arc<IndexedPod>>;

/// Every pod of the cluster by namespace and name, converted. Readers get a consistent copy of
/// the entries (shared, cheap); the watch replaces the whole set atomically after each (re)list,
/// as kube's reflector does.
#[derive(Clone)]
pub struct PodIndex {
    entries: Arc<RwLock<Entries>>,
    listed: watch::Receiver<bool>,
}

impl PodIndex {
    /// The pods now, in no particular order (capture sorts).
    pub fn state(&self) -> Vec<Arc<IndexedPod>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries.values().cloned().collect()
    }

    /// Waits for the first complete list.
    pub async fn wait_until_ready(&self) {
        let mut listed = self.listed.clone();
        let _ = listed.wait_for(|done| *done).await;
    }

    fn start(api: Api<core::Pod>, agents: Agents, tasks: &mut JoinSet<()>) -> Self {
        let entries = Arc::new(RwLock::new(HashMap::new()));
        let (listed_tx, listed) = watch::channel(false);
        let index = Self { entries, listed };
        let writer = Arc::clone(&index.entries);
        let events = watcher(api, watcher::Config::default()).default_backoff();
        tasks.spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut relisting: Option<Entries> = None;
            let index_of = |pod: &core::Pod| {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                let entry = IndexedPod {
                    captured: capture_pod(pod),
                    agent: AgentPod::of(pod, &agents.namespace, &agents.selector),
                };
                (key, Arc::new(entry))
            };
            while let Some(event) = events.next().await {
                let entries = || writer.write().unwrap_or_else(PoisonError::into_inner);
                match event {
                    Ok(Event::Init) => relisting = Some(HashMap::new()),
                    Ok(Event::InitApply(pod)) => {
                        let (key, entry) = index_of(&pod);
                        relisting.get_or_insert_with(HashMap::new).insert(key, entry);
                    }
                    Ok(Event::InitDone) => {
                        *entries() = relisting.take().unwrap_or_default();
                        listed_tx.send_replace(true);
                    }
                    Ok(Event::Apply(pod)) => {
                        let (key, entry) = index_of(&pod);
                        entries().insert(key, entry);
                    }
                    Ok(Event::Delete(pod)) => {
                        entries().remove(&(pod.namespace().unwrap_or_default(), pod.name_any()));
                    }
                    Err(error) => {
                        warn!(%error, kind = "Pod", "watch failed; the view keeps its last state and retries");
                    }
                }
            }
        });
        index
    }
}

/// Which pods are the agents the leader gathers from.
#[derive(Clone, Debug)]
pub struct Agents {
    pub namespace: String,
    pub selector: AgentSelector,
}

impl ClusterView {
    /// Starts the watches (they list first, then watch from the list's resourceVersion).
    pub fn start(client: &Client, agents: Agents) -> Self {
        let mut tasks = JoinSet::new();
        Self {
            nodes: reflect(Api::all(client.clone()), trim::node, &mut tasks),
            pods: PodIndex::start(Api::all(client.clone()), agents, &mut tasks),
            pdbs: reflect(Api::all(client.clone()), |_| {}, &mut tasks),
            _tasks: tasks,
        }
    }

    /// Waits until every store holds a complete first list, at most `limit`.
    pub async fn ready(&self, limit: Duration) -> bool {
        let all = async {
            let _ = self.nodes.wait_until_ready().await;
            self.pods.wait_until_ready().await;
            let _ = self.pdbs.wait_until_ready().await;
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    pub fn nodes(&self) -> Vec<Arc<core::Node>> {
        self.nodes.state()
    }

    pub fn pods(&self) -> Vec<Arc<IndexedPod>> {
        self.pods.state()
    }

    pub fn pdbs(&self) -> Vec<Arc<PodDisruptionBudget>> {
        self.pdbs.state()
    }
}
