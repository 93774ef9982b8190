//! An in-process Kubernetes API test double that the real `kube` client talks to over real
//! HTTP/JSON, serving exactly the subset Ballast uses with the apiserver's semantics: list and
//! watch with resourceVersions, pagination, bookmarks and 410 Gone; create/replace/merge-patch
//! with 409 on stale resourceVersions; Leases, ConfigMaps, Events, nodes (taints), pods
//! (deletion, the Eviction subresource enforcing PodDisruptionBudgets) and PDB status kept by a
//! disruption-controller stand-in; a scheduler/kubelet stand-in that re-places deleted pods of
//! ReplicaSets and StatefulSets with the simulator's scheduler model; fault injection; a write
//! log with authors; a log of every request's authorization attributes (what RBAC judges);
//! bearer-token identities.
//!
//! The server runs on a runtime of its own (two worker threads), so it serves whatever the
//! test does on its own threads or runtime, blocking ones included; dropping the
//! [`ApiServer`] stops it and breaks its open connections.

mod connection;
mod disruption;
mod faults;
pub mod fixtures;
mod http;
mod kubeconfig;
mod list;
mod quantity;
mod request_info;
mod resource;
mod scheduler;
mod selector;
mod status;
mod store;
mod watch;
mod writelog;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

pub use faults::{Faults, Scope};
pub use request_info::RequestInfo;
pub use resource::Kind;
pub use writelog::{RequestRecord, WriteRecord};

use store::{Preconditions, Store};
use writelog::WriteLog;

/// How the double behaves.
#[derive(Clone, Debug)]
pub struct ApiServerConfig {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Changes retained for watches and list snapshots (over all resources, like etcd's
    /// compaction window); a watch from an older resourceVersion gets 410 Gone.
    pub history: usize,
    /// From a controller-owned pod's deletion to its replacement's creation.
    pub restart_delay: Duration,
    /// From a replacement's binding to its Running/Ready status.
    pub ready_delay: Duration,
    /// Between BOOKMARK events on watches that allow them.
    pub bookmark_interval: Duration,
    /// Accepted bearer tokens; `None` accepts any non-empty token as the client's identity.
    pub identities: Option<BTreeSet<String>>,
    /// Seeds uids, generated names and the scheduler's tie-breaks.
    pub seed: u64,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            port: 0,
            history: 10_000,
            restart_delay: Duration::from_secs(1),
            ready_delay: Duration::from_secs(1),
            bookmark_interval: Duration::from_secs(60),
            identities: None,
            seed: 0,
        }
    }
}

/// What the server's tasks share.
struct Shared {
    store: Mutex<Store>,
    faults: Faults,
    log: WriteLog,
    config: ApiServerConfig,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running double.
pub struct ApiServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiServer {
    /// Binds 127.0.0.1 and starts serving.
    pub fn start(config: ApiServerConfig) -> Result<Self> {
        if config.history == 0 {
            bail!("ApiServerConfig.history must be at least 1 (changes kept for watches)");
        }
        if config.bookmark_interval.is_zero() {
            bail!("ApiServerConfig.bookmark_interval must be positive");
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("api-double")
            .enable_all()
            .build()
            .context("starting the API double's runtime")?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", config.port))
            .with_context(|| format!("binding 127.0.0.1:{}", config.port))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.history, config.seed)),
            faults: Faults::default(),
            log: WriteLog::new(),
            config,
        });
        {
            let _context = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let router = http::router(Arc::clone(&shared));
            runtime.spawn(connection::serve(listener, Arc::clone(&shared), router));
            // Subscribed here, before anything can be written, so no change escapes them.
            let (pdb_changes, pod_changes) = {
                let mut store = shared.store();
                (
                    store.subscribe(&disruption::WATCHED),
                    store.subscribe(&scheduler::WATCHED),
                )
            };
            runtime.spawn(disruption::run(Arc::clone(&shared), pdb_changes));
            let scheduler = scheduler::Scheduler::new(Arc::clone(&shared));
            runtime.spawn(scheduler.run(pod_changes));
        }
        Ok(Self {
            shared,
            address,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes `DIR/IDENTITY.kubeconfig` pointing at the server with `identity` as bearer token.
    pub fn kubeconfig(&self, dir: &Path, identity: &str) -> Result<PathBuf> {
        kubeconfig::write(dir, &self.url(), identity)
    }

    /// The `kube::Config` of `identity`, from the same kubeconfig a process would read (with
    /// kube's defaults, `default_retry` included: 429, 503 and 504 answers are retried
    /// transparently up to 15 times unless a test turns that off).
    pub async fn config(&self, identity: &str) -> Result<kube::Config> {
        let document = kubeconfig::document(&self.url(), identity)?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&document.to_string())?;
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .context("building a kube config for the API double")
    }

    /// A `kube::Client` for `identity` with kube's default configuration ([`Self::config`]).
    pub async fn client(&self, identity: &str) -> Result<kube::Client> {
        Ok(kube::Client::try_from(self.config(identity).await?)?)
    }

    /// Creates `object` or replaces the stored one of that name whatever its resourceVersion,
    /// status included (seeding and test manipulation; no request, no write-log entry).
    /// Returns the stored object.
    pub fn apply(&self, object: Value) -> Result<Value> {
        self.shared
            .store()
            .put(object)
            .map_err(|e| anyhow!("applying an object to the API double: {}", e.message))
    }

    /// The stored object; `namespace` is "" for cluster-scoped kinds.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().get(kind, namespace, name).cloned()
    }

    /// Every stored object of `kind`, by namespace then name.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        self.shared
            .store()
            .objects(kind)
            .values()
            .cloned()
            .collect()
    }

    /// Deletes an object as a client's DELETE would (a controller-owned pod is replaced).
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Value> {
        self.shared
            .store()
            .delete(kind, namespace, name, &Preconditions::default(), false)
            .map_err(|e| anyhow!("deleting from the API double: {}", e.message))
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().revision()
    }

    /// Every non-GET request so far, in the order they were answered.
    pub fn write_log(&self) -> Vec<WriteRecord> {
        self.shared.log.writes()
    }

    /// Every request so far (reads and watches too, refused, failed and dropped ones
    /// included) with its authorization attributes, in the order they were answered.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.shared.log.requests()
    }

    /// Requests per identity (every verb, watches included, failed ones too).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared.log.request_counts()
    }

    /// The fault plan (clones share it).
    pub fn faults(&self) -> Faults {
        self.shared.faults.clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
