//! The multi-agent harness: the API double seeded with a small cluster, one real `ballast agent`
//! process in cluster mode per node (on its own loopback address), each serving a load document
//! that the harness derives every half second from the pods the double currently places on that
//! node; and the checks the multi-process tests share: leadership terms read from the write log,
//! evictions against those terms, duplicates, request rates, taint and PDB history. For clusters
//! larger than the machine runs processes for (the benchmarks), nodes can instead have a
//! simulated agent: an agent pod answered by an in-process /v1/load server, making no API calls.
//! And one node may have a measuring agent instead: a real agent measuring this host with its
//! kernel programs (the end-to-end test with Prometheus), whose load is whatever the host does.
//!
//! How a node's load is made up: every pod carries its CPU demand in the annotation
//! [`CPU_DEMAND`] (cores; absent = 0). A node's utilisation is its pods' demand over its CPUs
//! (at most 1) and its CPU pressure is the queue model the planner predicts with,
//! `PRESSURE_SLOPE * u / (1 - u)`, so what the planner predicts for a move is what the next
//! document shows. When the scheduler stand-in moves an evicted pod's replacement elsewhere, its
//! demand moves with it (the stand-in copies annotations).
//!
//! Agents find each other as pods labelled `app.kubernetes.io/name=ballast` in [`NAMESPACE`]; the
//! harness creates one per agent, with `status.podIP` the agent's own loopback address. All agents
//! listen on the same port at different addresses of 127.0.0.0/8, as a DaemonSet's do on
//! different hosts, so the agent port the leader uses is right whichever way it is chosen.
//!
//! Multi-agent clusters run one at a time in a test process (a lock), so that timing assertions
//! are not judged on a machine shared with another cluster of the same suite.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read, Seek, SeekFrom},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{
    apiserver::{ApiServer, ApiServerConfig, Kind, WriteRecord},
    ballast_bin, sample_with,
};

/// The agents' namespace (their pods, the Lease, the state ConfigMap).
pub const NAMESPACE: &str = "ballast";
/// The Lease the agents elect a leader with.
pub const LEASE: &str = "ballast-leader";
/// The ConfigMap the leader keeps the planner's memory in.
pub const STATE_CONFIGMAP: &str = "ballast-state";
/// Ballast's soft taint on source nodes.
pub const HOT_TAINT: &str = "ballast.io/hot";
/// Pod annotation: the pod's CPU demand in cores, from which the harness makes node loads.
pub const CPU_DEMAND: &str = "ballast.test/cpu-cores";
/// The shared bearer token of /v1/load (the Secret of a real install).
pub const LOAD_TOKEN: &str = "e2e-load-token";
/// Label the agents find each other by.
pub const AGENT_LABEL: (&str, &str) = ("app.kubernetes.io/name", "ballast");

/// Pressure slope of the harness's load model (see the module doc): 0.04 puts a node at
/// utilisation 0.85 at pressure 0.23 (just under the default trigger of 0.25) and one at 0.66 at
/// 0.08 (under the default release level of 0.10), so utilisation decides.
pub const PRESSURE_SLOPE: f64 = 0.04;

/// How often the harness rewrites the load files.
pub const LOAD_REFRESH: Duration = Duration::from_millis(500);

/// Leader election and round timing given to every agent of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub round_interval: Duration,
}

impl Timings {
    /// Short timings for tests: failover within 5.5 s; the old leader stops 3 s after its last
    /// renewal was sent, 2 s before anyone may take over.
    pub const FAST: Timings = Timings {
        lease_duration: Duration::from_secs(5),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
        round_interval: Duration::from_secs(1),
    };

    /// client-go's (and the agent's default) election timing, with the default 30 s rounds.
    pub const DEFAULT: Timings = Timings {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
        round_interval: Duration::from_secs(30),
    };

    /// The longest a dead leader may stay unreplaced: its Lease must stay unchanged for the
    /// lease duration as a candidate sees it, and a candidate looks once per retry period.
    pub fn failover_bound(&self) -> Duration {
        self.lease_duration + self.retry_period
    }

    fn args(&self) -> Vec<String> {
        let d = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            "--lease-duration".into(),
            format!("{}s", self.lease_duration.as_secs()),
            "--renew-deadline".into(),
            d(self.renew_deadline),
            "--retry-period".into(),
            d(self.retry_period),
            "--round-interval".into(),
            d(self.round_interval),
        ]
    }
}

/// What stands for a node's agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentKind {
    /// A real `ballast agent` process serving the harness's load file (`--load-from`).
    Process,
    /// A real `ballast agent` process measuring this host with its kernel programs (needs
    /// root): the node's load is the host's, and the containers it reports are the cgroups the
    /// host runs, named from the API where their paths carry a pod's uid. One per cluster:
    /// two would measure the same host.
    Measuring,
    /// The harness's in-process server answering /v1/load for it (a registered agent pod that
    /// never talks to the API): for clusters larger than this machine runs processes for.
    Simulated,
}

/// A node of the test cluster.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_gib: u32,
    pub agent: AgentKind,
}

impl NodeSpec {
    pub fn new(name: &str, cpus: u32) -> Self {
        Self {
            name: name.into(),
            cpus,
            memory_gib: 16,
            agent: AgentKind::Process,
        }
    }

    pub fn simulated(mut self) -> Self {
        self.agent = AgentKind::Simulated;
        self
    }

    pub fn measuring(mut self) -> Self {
        self.agent = AgentKind::Measuring;
        self
    }
}

/// The planner policy of the tests (TOML), before a test's own changes: no pod is too young or
/// too lonely to move, hysteresis of two rounds, a token bucket that never runs dry, and
/// a 600 s cooldown, set here rather than taken from the default (longer than any test, so a
/// second eviction of a workload is a bug).
pub const TEST_POLICY: &str = r#"
[classification]
abnormal_rounds = 2
normal_rounds = 2

[eligibility]
min_pod_age_seconds = 0
min_replicas = 1

[limits]
per_round = 2
per_node = 2

[limits.token_bucket]
burst = 1000
refill_per_minute = 60000.0

[limits.cooldown]
base_seconds = 600
"#;

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: Vec<NodeSpec>,
    /// Pods (see [`with_demand`]) and PDBs seeded before the agents start.
    pub objects: Vec<Value>,
    pub timings: Timings,
    /// TOML for `--policy`.
    pub policy: String,
    pub api: ApiServerConfig,
    /// More arguments for every agent.
    pub extra_args: Vec<String>,
    /// How often load documents are made anew from the pods' placement ([`LOAD_REFRESH`]; a
    /// benchmark at 30,000 pods makes them less often, not to compete with the leader for CPU).
    pub load_refresh: Duration,
}

impl ClusterSpec {
    pub fn new(nodes: Vec<NodeSpec>, objects: Vec<Value>) -> Self {
        Self {
            nodes,
            objects,
            timings: Timings::FAST,
            policy: TEST_POLICY.into(),
            api: ApiServerConfig {
                restart_delay: Duration::from_millis(300),
                ready_delay: Duration::from_millis(300),
                // The change history is global and the cluster churns: bookmarks keep idle
                // watches (PDBs, nodes) from falling behind it.
                bookmark_interval: Duration::from_secs(2),
                ..ApiServerConfig::default()
            },
            extra_args: Vec::new(),
            load_refresh: LOAD_REFRESH,
        }
    }
}

/// `count` nodes `n0`.. of `cpus` CPUs, each with an agent.
pub fn nodes(count: usize, cpus: u32) -> Vec<NodeSpec> {
    (0..count)
        .map(|i| NodeSpec::new(&format!("n{i}"), cpus))
        .collect()
}

/// A node kept hot for as long as a test needs: an unowned pod of `hog_cores` that no eviction
/// can relieve, and `workloads` single-replica ReplicaSets `w0`.. (namespace `apps`) of `cores`
/// each, all on `node`. The leader finds something to evict on it every round until the
/// workloads have all moved (each once: the cooldown outlasts any test).
pub fn sustained_hot(node: &str, hog_cores: f64, workloads: usize, cores: f64) -> Vec<Value> {
    let mut objects = vec![unowned_pod("batch", "hog", node, hog_cores)];
    for i in 0..workloads {
        let workload = crate::apiserver::fixtures::Workload::replica_set("apps", &format!("w{i}"))
            .requests("100m", "64Mi");
        objects.push(with_demand(workload.pod(0, node), cores));
    }
    objects
}

/// A node `n0` that two moves relieve: it carries 3.5 of its 4 cores (utilisation 0.875, above
/// the 0.85 trigger) in 0.5-core pods: the first replicas of `web0`.. (one per entry of `homes`,
/// whose second replica runs there, each with a budget allowing one disruption) and both of
/// `db`'s, whose budget allows none. Relieving it to 0.70 takes two web pods. Namespace `shop`.
pub fn relievable_hot_node(homes: &[&str]) -> Vec<Value> {
    use crate::apiserver::fixtures::Workload;
    let mut objects = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        let web = Workload::replica_set("shop", &format!("web{i}")).requests("500m", "256Mi");
        objects.push(with_demand(web.pod(0, "n0"), 0.5));
        objects.push(with_demand(web.pod(1, home), 0.5));
        objects.push(web.pdb_max_unavailable(&format!("web{i}"), json!(1)));
    }
    let db = Workload::replica_set("shop", "db").requests("500m", "256Mi");
    objects.push(with_demand(db.pod(0, "n0"), 0.5));
    objects.push(with_demand(db.pod(1, "n0"), 0.5));
    objects.push(db.pdb_min_available("db", json!(2)));
    objects
}

/// The workload of a ReplicaSet pod named `NAME-SUFFIX` (fixtures and generated names alike).
pub fn workload_of(pod: &str) -> &str {
    pod.rsplit_once('-').map_or(pod, |(workload, _)| workload)
}

/// `pod` with its CPU demand (cores) in the [`CPU_DEMAND`] annotation.
pub fn with_demand(mut pod: Value, cores: f64) -> Value {
    pod["metadata"]["annotations"][CPU_DEMAND] = json!(cores.to_string());
    pod
}

/// A pod no controller owns (so Ballast never moves it) with a CPU demand: a node's own load
/// that evictions cannot relieve, to keep a node hot for as long as a test needs.
pub fn unowned_pod(namespace: &str, name: &str, node: &str, cores: f64) -> Value {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "main", "image": "registry.invalid/hog:1",
                "resources": {"requests": {"cpu": format!("{}m", (cores * 1000.0) as u64), "memory": "64Mi"}}}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    with_demand(pod, cores)
}

/// The CPU demand of a pod (0 without the annotation).
pub fn demand(pod: &Value) -> f64 {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(CPU_DEMAND))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn running_on<'a>(pod: &'a Value, node: &str) -> Option<&'a Value> {
    let placed = pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
    let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
    (placed && running && !deleting).then_some(pod)
}

/// Node utilisation and pressure for a CPU demand, by the harness's model.
pub fn cpu_figures(demand_cores: f64, cpus: u32) -> (f64, f64) {
    let utilisation = (demand_cores / f64::from(cpus.max(1))).clamp(0.0, 1.0);
    let u = utilisation.min(0.99);
    (utilisation, PRESSURE_SLOPE * u / (1.0 - u))
}

fn resource_score(utilisation: f64, pressure: f64) -> Value {
    json!({"score": utilisation, "utilisation": utilisation, "pressure": pressure,
           "pressure_normalised": pressure / 0.5})
}

fn scored(cpu: Value, memory: Value, reason: &str) -> Value {
    let score = json!({
        "score": cpu["score"],
        "per_resource": {"cpu": cpu, "memory": memory},
        "throttled_share": null,
        "reason": reason,
    });
    json!({"smoothed": score, "raw": score})
}

/// The `/v1/load` document of `node` (CPUs `cpus`, memory `memory_bytes`) carrying `pods` (the
/// Running pods the API places on it), by the harness's load model. `age_seconds` is what the
/// leader judges staleness by.
pub fn load_document(
    node: &str,
    cpus: u32,
    memory_bytes: u64,
    pods: &[&Value],
    age_seconds: f64,
) -> Value {
    let total: f64 = pods.iter().map(|p| demand(p)).sum();
    let (utilisation, pressure) = cpu_figures(total, cpus);
    // Over capacity, every pod gets its share of the CPUs.
    let squeeze = if total > f64::from(cpus) {
        f64::from(cpus) / total
    } else {
        1.0
    };
    let working_set: u64 = 128 << 20;
    let memory_used = working_set.saturating_mul(pods.len() as u64);
    let memory_utilisation = memory_used as f64 / memory_bytes.max(1) as f64;
    let containers: Vec<Value> = pods
        .iter()
        .filter_map(|pod| {
            let uid = pod.pointer("/metadata/uid")?.as_str()?;
            let namespace = pod.pointer("/metadata/namespace")?.as_str()?;
            let name = pod.pointer("/metadata/name")?.as_str()?;
            let cores = demand(pod) * squeeze;
            let container_id = format!("{:064x}", ballast::sim::rng::name_hash(uid));
            Some(json!({
                "cgroup_id": ballast::sim::rng::name_hash(uid) & 0xffff_ffff,
                "cgroup": format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{container_id}.scope", uid.replace('-', "_")),
                "name": format!("{namespace}/{name}/main"),
                "workload": "container",
                "pod_uid": uid,
                "container_id": container_id,
                "namespace": namespace, "pod": name, "container": "main",
                "qos": "burstable",
                "cpu": {"cores_used": cores, "runqueue_wait_per_cpu_second": pressure},
                "memory": {"working_set_bytes": working_set, "reclaim_stall_per_second": 0.0},
                "network": {},
                "score": scored(
                    resource_score(cores / f64::from(cpus.max(1)), pressure),
                    resource_score(working_set as f64 / memory_bytes.max(1) as f64, 0.0),
                    "e2e harness load model",
                ),
            }))
        })
        .collect();
    json!({
        "schema": "ballast.io/load/v1",
        "node": node,
        "age_seconds": age_seconds,
        "interval_seconds": 1.0,
        "modes": {"cpu": "cgroupfs", "memory": "cgroupfs", "network": "unavailable"},
        "fallback_reason": "load from the e2e harness (--load-from)",
        "runqueue_wait_excludes_throttling": null,
        "window_seconds": 1.0,
        "cpu": {"cpus": cpus, "cores_used": total.min(f64::from(cpus)), "utilisation": utilisation,
                "runqueue_wait_per_second": pressure * f64::from(cpus)},
        "memory": {"total_bytes": memory_bytes, "used_bytes": memory_used, "reclaim_stall_per_second": 0.0},
        "network": {},
        "score": scored(
            resource_score(utilisation, pressure),
            resource_score(memory_utilisation, 0.0),
            "e2e harness load model",
        ),
        "containers": containers,
    })
}

/// Writes `value` to `path` through a rename, so a reader never sees half a document.
pub fn write_atomically(path: &Path, value: &Value) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))
}

/// The pod the agents discover an agent by.
pub fn agent_pod(identity: &str, node: &str, ip: Ipv4Addr, port: u16) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": identity, "namespace": NAMESPACE,
            "labels": {AGENT_LABEL.0: AGENT_LABEL.1},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ballast",
                "uid": "00000000-0000-4000-8000-00000000ba11", "controller": true}],
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": "agent", "image": "registry.invalid/ballast:e2e",
                "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}]}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "hostIP": ip.to_string(),
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// Clusters started so far by this process: each takes its own loopback addresses.
static CLUSTERS: AtomicU32 = AtomicU32::new(0);
/// One multi-agent cluster at a time per test process.
static SERIAL: Mutex<()> = Mutex::new(());

/// Loopback addresses for `count` agents and one port free on all of them.
pub fn agent_addresses(count: usize) -> Result<(Vec<Ipv4Addr>, u16)> {
    let cluster = CLUSTERS.fetch_add(1, Ordering::Relaxed);
    // 127.<pid-derived>.<cluster>.<10+i>: apart from other test processes and from 127.0.0.1;
    // a cluster of more than 240 agents runs on into the next third octets.
    let second = 100 + (std::process::id() % 100) as u8;
    let ips: Vec<Ipv4Addr> = (0..count)
        .map(|i| {
            let block = cluster as usize * 5 + i / 240;
            Ipv4Addr::new(127, second, (block % 250) as u8 + 1, 10 + (i % 240) as u8)
        })
        .collect();
    if count > 1_200 {
        bail!("at most 1,200 agents per cluster (5 blocks of 240 loopback addresses), not {count}");
    }
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if ips
            .iter()
            .all(|ip| TcpListener::bind(SocketAddr::from((*ip, port))).is_ok())
        {
            return Ok((ips, port));
        }
    }
    bail!("no port free on all of {ips:?} after 20 tries")
}

/// One agent process and what it stands for.
pub struct ClusterAgent {
    /// Pod name = election identity = bearer token towards the API (the write log's author).
    pub identity: String,
    pub node: String,
    pub address: SocketAddr,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

/// The Downward API's variables of an agent pod (NODE_NAME, POD_NAME, POD_NAMESPACE), passed as
/// a DaemonSet passes them.
fn downward_env(agent: &ClusterAgent) -> [(&'static str, String); 3] {
    [
        ("NODE_NAME", agent.node.clone()),
        ("POD_NAME", agent.identity.clone()),
        ("POD_NAMESPACE", NAMESPACE.to_string()),
    ]
}

impl ClusterAgent {
    fn spawn(&mut self) -> Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(ballast_bin()?)
            .args(&self.args)
            .envs(downward_env(self))
            .env("RUST_LOG", "info")
            // Plain text in the log files.
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `ballast agent` in cluster mode")?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until /healthz answers 200 (or the process exits).
    fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.alive() {
                bail!(
                    "agent {} exited while starting; its log ends:\n{}",
                    self.identity,
                    self.log_tail(40)
                );
            }
            if let Ok(response) = ureq::get(&self.url("/healthz")).call() {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "agent {} not healthy within {timeout:?}; its log ends:\n{}",
            self.identity,
            self.log_tail(40)
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, and reaps it. Returns when it was sent.
    pub fn kill(&mut self) -> Result<SystemTime> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("agent {} is not running", self.identity))?;
        let at = SystemTime::now();
        child.kill()?;
        child.wait()?;
        Ok(at)
    }

    /// SIGTERM; returns when it was sent and the exit status (SIGKILL after 10 s).
    pub fn terminate(&mut self) -> Result<(SystemTime, std::process::ExitStatus)> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("agent {} is not running", self.identity))?;
        let pid = i32::try_from(child.id())?;
        let at = SystemTime::now();
        // SAFETY: signalling our own child process, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok((at, status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill()?;
        child.wait()?;
        bail!(
            "agent {} did not exit within 10 s of SIGTERM",
            self.identity
        )
    }

    /// Starts it again (same identity, node, address and files) after a kill or terminate.
    pub fn restart(&mut self) -> Result<()> {
        if self.alive() {
            bail!("agent {} is still running", self.identity);
        }
        self.spawn()?;
        self.wait_healthy(Duration::from_secs(30))
    }

    /// GET `path` with the shared token; the body.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut response = ureq::get(&self.url(path))
            .header("Authorization", &format!("Bearer {LOAD_TOKEN}"))
            .call()
            .with_context(|| format!("GET {} of agent {}", path, self.identity))?;
        Ok(response.body_mut().read_to_string()?)
    }

    /// `/metrics`, parsed.
    pub fn scrape(&self) -> Result<prometheus_parse::Scrape> {
        let text = self.get("/metrics")?;
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .context("parsing /metrics")
    }

    /// `ballast_leader{identity}` as this agent reports it.
    pub fn leader_gauge(&self) -> Result<Option<f64>> {
        Ok(sample_with(
            &self.scrape()?,
            "ballast_leader",
            &[("identity", &self.identity)],
        ))
    }

    /// The sum of every sample of counter `family` carrying `labels`.
    pub fn counter(&self, family: &str, labels: &[(&str, &str)]) -> Result<f64> {
        use prometheus_parse::Value as V;
        Ok(self
            .scrape()?
            .samples
            .iter()
            .filter(|s| {
                s.metric == family && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                V::Counter(v) | V::Gauge(v) | V::Untyped(v) => v,
                _ => 0.0,
            })
            .sum())
    }

    /// `/v1/decisions`, parsed.
    pub fn decisions(&self) -> Result<Value> {
        Ok(serde_json::from_str(&self.get("/v1/decisions")?)?)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let _ = file.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn stop(&mut self) {
        if self.alive() {
            let _ = self.terminate();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the harness's background thread saw, besides writing load files.
#[derive(Debug, Default)]
pub struct History {
    /// Per node: (since the cluster started, carries [`HOT_TAINT`]) at each change.
    pub taints: BTreeMap<String, Vec<(Duration, bool)>>,
    /// PDB samples whose status said fewer healthy pods than desired, with when.
    pub pdb_violations: Vec<String>,
    /// Samples taken.
    pub samples: u64,
}

/// A running test cluster; everything is stopped on drop (agents by SIGTERM, then the double).
pub struct Cluster {
    pub agents: Vec<ClusterAgent>,
    pub api: Arc<ApiServer>,
    pub timings: Timings,
    pub dir: tempfile::TempDir,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
    /// Serves the simulated agents, if any.
    simulated: Option<tokio::runtime::Runtime>,
    _serial: MutexGuard<'static, ()>,
}

/// A node the harness makes load documents for.
struct LoadTarget {
    node: String,
    cpus: u32,
    memory_bytes: u64,
    /// Where it goes: the agent's `--load-from` file, or the simulated agents' table.
    file: Option<PathBuf>,
}

/// The documents simulated agents serve, by node.
type Served = Arc<Mutex<BTreeMap<String, Arc<Vec<u8>>>>>;

fn write_loads(api: &ApiServer, targets: &[LoadTarget], served: &Served) -> Result<()> {
    let pods = api.list(Kind::Pod);
    let mut by_node: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for pod in &pods {
        if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            if running_on(pod, node).is_some() {
                by_node.entry(node).or_default().push(pod);
            }
        }
    }
    let mut documents = BTreeMap::new();
    for target in targets {
        let here = by_node
            .get(target.node.as_str())
            .map_or(&[][..], Vec::as_slice);
        let document = load_document(&target.node, target.cpus, target.memory_bytes, here, 0.2);
        match &target.file {
            Some(file) => write_atomically(file, &document)?,
            None => {
                documents.insert(
                    target.node.clone(),
                    Arc::new(serde_json::to_vec(&document)?),
                );
            }
        }
    }
    if !documents.is_empty() {
        served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(documents);
    }
    Ok(())
}

/// Serves /v1/load for every simulated node on its own address (the same port as the real
/// agents), with the shared token required as the agents require it.
fn serve_simulated(
    runtime: &tokio::runtime::Runtime,
    nodes: Vec<(String, SocketAddr)>,
    served: Served,
) -> Result<()> {
    use axum::{
        extract::State,
        http::{header, HeaderMap, StatusCode},
        response::IntoResponse,
        routing::get,
        Router,
    };
    type Ctx = (String, Served);
    async fn load(State((node, served)): State<Ctx>, headers: HeaderMap) -> impl IntoResponse {
        let expected = format!("Bearer {LOAD_TOKEN}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return (StatusCode::UNAUTHORIZED, Vec::new()).into_response();
        }
        let document = served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned();
        match document {
            Some(body) => (
                [(header::CONTENT_TYPE, "application/json")],
                body.as_ref().clone(),
            )
                .into_response(),
            None => (StatusCode::SERVICE_UNAVAILABLE, Vec::new()).into_response(),
        }
    }
    let _context = runtime.enter();
    for (node, address) in nodes {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("binding the simulated agent of {node} on {address}"))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let router = Router::new()
            .route("/v1/load", get(load))
            .route("/healthz", get(|| async { "ok (simulated agent)\n" }))
            .with_state((node, Arc::clone(&served)));
        runtime.spawn(async move { axum::serve(listener, router).await });
    }
    Ok(())
}

fn has_hot_taint(node: &Value) -> bool {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.get("key").and_then(Value::as_str) == Some(HOT_TAINT))
        })
}

fn sample(api: &ApiServer, started: Instant, history: &Mutex<History>) {
    let nodes = api.list(Kind::Node);
    let pdbs = api.list(Kind::PodDisruptionBudget);
    let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
    history.samples += 1;
    let now = started.elapsed();
    for node in &nodes {
        let name = node
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let tainted = has_hot_taint(node);
        let changes = history.taints.entry(name).or_default();
        if changes.last().map(|(_, t)| *t) != Some(tainted) {
            changes.push((now, tainted));
        }
    }
    for pdb in &pdbs {
        let status = |field: &str| {
            pdb.pointer(&format!("/status/{field}"))
                .and_then(Value::as_i64)
        };
        if let (Some(healthy), Some(desired)) = (status("currentHealthy"), status("desiredHealthy"))
        {
            if healthy < desired {
                let name = pdb.pointer("/metadata/name").and_then(Value::as_str);
                history.pdb_violations.push(format!(
                    "{now:?}: PDB {name:?} has {healthy} healthy pods, {desired} desired"
                ));
            }
        }
    }
}

impl Cluster {
    /// Seeds the double, writes the first load files and starts one agent per node that has
    /// one; returns once every agent answers /healthz.
    pub fn start(spec: ClusterSpec) -> Result<Self> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let api = Arc::new(ApiServer::start(spec.api.clone())?);
        let dir = tempfile::tempdir()?;
        let token = dir.path().join("load-token");
        std::fs::write(&token, format!("{LOAD_TOKEN}\n"))?;
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, &spec.policy)?;
        for node in &spec.nodes {
            api.apply(crate::apiserver::fixtures::node(
                &node.name,
                &node.cpus.to_string(),
                &format!("{}Gi", node.memory_gib),
            ))?;
        }
        for object in &spec.objects {
            api.apply(object.clone())?;
        }
        let (ips, port) = agent_addresses(spec.nodes.len())?;
        let mut targets = Vec::new();
        let mut agents = Vec::new();
        let mut simulated = Vec::new();
        for (node, ip) in spec.nodes.iter().zip(&ips) {
            let identity = format!("ballast-{}", node.name);
            let address = SocketAddr::from((*ip, port));
            api.apply(agent_pod(&identity, &node.name, *ip, port))?;
            let mut target = LoadTarget {
                node: node.name.clone(),
                cpus: node.cpus,
                memory_bytes: u64::from(node.memory_gib) << 30,
                file: None,
            };
            if node.agent == AgentKind::Simulated {
                simulated.push((node.name.clone(), address));
                targets.push(target);
                continue;
            }
            let kubeconfig = api.kubeconfig(dir.path(), &identity)?;
            let path = |p: &Path| p.display().to_string();
            let mut args: Vec<String> = vec![
                "agent".into(),
                "--kubeconfig".into(),
                path(&kubeconfig),
                "--listen".into(),
                address.to_string(),
                "--load-token-file".into(),
                path(&token),
                "--policy".into(),
                path(&policy),
            ];
            if node.agent == AgentKind::Measuring {
                // New cgroups seen within a second, memory figures every second, and a
                // smoothed load that follows a workload within seconds, not minutes.
                args.extend(
                    [
                        "--rescan-interval",
                        "1s",
                        "--memory-interval",
                        "1s",
                        "--load-half-life",
                        "5s",
                    ]
                    .map(String::from),
                );
            } else {
                let load = dir.path().join(format!("load-{}.json", node.name));
                target.file = Some(load.clone());
                targets.push(target);
                args.extend(["--load-from".into(), path(&load), "--no-ebpf".into()]);
            }
            args.extend(spec.timings.args());
            args.extend(spec.extra_args.iter().cloned());
            agents.push(ClusterAgent {
                log: dir.path().join(format!("{identity}.log")),
                identity,
                node: node.name.clone(),
                address,
                args,
                child: None,
            });
        }
        let served = Served::default();
        write_loads(&api, &targets, &served)?;
        let simulated = if simulated.is_empty() {
            None
        } else {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("simulated-agents")
                .enable_all()
                .build()?;
            serve_simulated(&runtime, simulated, Arc::clone(&served))?;
            Some(runtime)
        };
        let started = Instant::now();
        let history = Arc::new(Mutex::new(History::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let refresh = spec.load_refresh;
        let sampler = {
            let (api, history, stop) = (Arc::clone(&api), Arc::clone(&history), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("cluster-loads".into())
                .spawn(move || {
                    let mut last_write = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        sample(&api, started, &history);
                        if last_write.elapsed() >= refresh {
                            if let Err(error) = write_loads(&api, &targets, &served) {
                                eprintln!("harness: writing load documents failed: {error:#}");
                            }
                            last_write = Instant::now();
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })?
        };
        let mut cluster = Self {
            agents,
            api,
            timings: spec.timings,
            dir,
            history,
            stop,
            sampler: Some(sampler),
            simulated,
            _serial: serial,
        };
        for agent in &mut cluster.agents {
            agent.spawn()?;
        }
        for agent in &mut cluster.agents {
            agent.wait_healthy(Duration::from_secs(30))?;
        }
        Ok(cluster)
    }

    pub fn agent(&self, identity: &str) -> Result<&ClusterAgent> {
        self.agents
            .iter()
            .find(|a| a.identity == identity)
            .ok_or_else(|| anyhow!("no agent {identity}"))
    }

    pub fn agent_mut(&mut self, identity: &str) -> Result<&mut ClusterAgent> {
        self.agents
            .iter_mut()
            .find(|a| a.identity == identity)
            .ok_or_else(|| anyhow!("no agent {identity}"))
    }

    /// The Lease's holderIdentity now ("" when released, `None` without a Lease).
    pub fn lease_holder(&self) -> Option<String> {
        self.api
            .get(Kind::Lease, NAMESPACE, LEASE)?
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(Some(String::new()))
    }

    /// Waits until `node` has carried [`HOT_TAINT`] and no longer does.
    pub fn wait_taint_comes_and_goes(&self, node: &str, timeout: Duration) -> Result<()> {
        crate::eventually(timeout, || {
            let history = self.history();
            let changes = history.taints.get(node).map_or(&[][..], Vec::as_slice);
            let came = changes.iter().any(|(_, tainted)| *tainted);
            let went = changes.last().is_some_and(|(_, tainted)| !*tainted);
            Ok((came && went).then_some(()))
        })
        .with_context(|| {
            format!(
                "{node} was not tainted and then released: {:?}\n{}",
                self.history().taints,
                self.logs(40)
            )
        })
    }

    /// Waits until exactly one running agent reports `ballast_leader` 1, every other running
    /// agent 0, and that one holds the Lease; returns its identity.
    pub fn wait_single_leader(&mut self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let why = match self.single_leader() {
                Ok(identity) => return Ok(identity),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                bail!("no single leader within {timeout:?}: {why:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The single leader now, or why there is none.
    pub fn single_leader(&mut self) -> Result<String> {
        let mut leaders = Vec::new();
        for agent in self.agents.iter_mut().filter(|a| a.child.is_some()) {
            match agent.leader_gauge()? {
                Some(1.0) => leaders.push(agent.identity.clone()),
                Some(0.0) => {}
                other => bail!("agent {} reports ballast_leader {other:?}", agent.identity),
            }
        }
        let holder = self.lease_holder();
        match leaders.as_slice() {
            [one] if holder.as_deref() == Some(one.as_str()) => Ok(one.clone()),
            _ => bail!("agents reporting leader: {leaders:?}; Lease holder {holder:?}"),
        }
    }

    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every agent's log tail, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        self.agents
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.identity, a.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            agent.stop();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        if let Some(runtime) = self.simulated.take() {
            runtime.shutdown_background();
        }
        if std::thread::panicking() || std::env::var_os("BALLAST_E2E_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "cluster files (agent logs, load documents) kept in {}",
                self.dir.path().display()
            );
        }
    }
}

// ---- What the write log says -------------------------------------------------------------

/// A successful write of the Lease (create or replace), i.e. its author held it afterwards (or
/// released it, on a graceful shutdown).
pub fn is_lease_write(record: &WriteRecord) -> bool {
    record.kind == "Lease"
        && record.name == LEASE
        && matches!(record.method.as_str(), "POST" | "PUT" | "PATCH")
        && (200..300).contains(&record.status)
}

/// An eviction the API decided: 201 (done) or 429 (refused by a budget). A request failed by a
/// fault, dropped or held by a partition never reached the registry.
pub fn is_decided_eviction(record: &WriteRecord) -> bool {
    record.kind == "Eviction" && matches!(record.status, 200 | 201 | 429)
}

pub fn is_eviction(record: &WriteRecord) -> bool {
    record.kind == "Eviction" && matches!(record.status, 200 | 201)
}

/// One agent's uninterrupted leadership as the write log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    pub identity: String,
    /// Its Lease writes in this term (the first one acquired it), by answer time.
    pub writes: Vec<Duration>,
    /// When it may no longer act: its last write plus the renew deadline, or the next Lease
    /// write by someone else if that comes first.
    pub end: Duration,
}

impl Term {
    pub fn start(&self) -> Duration {
        self.writes[0]
    }
}

/// Leadership terms from the successful Lease writes: a term begins with an agent's write after
/// someone else's (or the first ever) and lasts while the same agent keeps writing; it ends at
/// its last write plus `renew_deadline`, or at the next write by another agent if that is
/// earlier. So terms never overlap by construction, and an eviction that falls outside its
/// author's term was made while the author could not know it still led, or while another led.
pub fn leadership_terms(log: &[WriteRecord], renew_deadline: Duration) -> Vec<Term> {
    let mut writes: Vec<&WriteRecord> = log.iter().filter(|r| is_lease_write(r)).collect();
    writes.sort_by_key(|r| r.at);
    let mut terms: Vec<Term> = Vec::new();
    for write in writes {
        match terms.last_mut() {
            Some(term) if term.identity == write.identity => term.writes.push(write.at),
            _ => terms.push(Term {
                identity: write.identity.clone(),
                writes: vec![write.at],
                end: Duration::ZERO,
            }),
        }
    }
    let starts: Vec<Duration> = terms.iter().map(Term::start).collect();
    for (i, term) in terms.iter_mut().enumerate() {
        let last = *term.writes.last().unwrap_or(&Duration::ZERO);
        let own_end = last + renew_deadline;
        term.end = starts.get(i + 1).map_or(own_end, |next| own_end.min(*next));
    }
    terms
}

/// Every decided eviction that its author made outside its own leadership term, or later than
/// `renew_deadline + slack` after its last Lease write before the eviction (`slack` covers the
/// eviction's own time in flight: the write log stamps answers, the fence judges sends).
pub fn evictions_outside_terms(
    log: &[WriteRecord],
    renew_deadline: Duration,
    slack: Duration,
) -> Vec<String> {
    let terms = leadership_terms(log, renew_deadline);
    log.iter()
        .filter(|r| is_decided_eviction(r))
        .filter_map(|e| {
            let term = terms
                .iter()
                .find(|t| t.identity == e.identity && t.start() <= e.at && e.at <= t.end + slack);
            let Some(term) = term else {
                let holder = terms
                    .iter()
                    .find(|t| t.start() <= e.at && e.at <= t.end)
                    .map(|t| t.identity.as_str());
                return Some(format!(
                    "{} evicted {}/{} (status {}) at {:?} outside its leadership (term holder then: {holder:?})",
                    e.identity, e.namespace, e.name, e.status, e.at
                ));
            };
            let renewed = term.writes.iter().rev().find(|w| **w <= e.at)?;
            (e.at > *renewed + renew_deadline + slack).then(|| {
                format!(
                    "{} evicted {}/{} at {:?}, {:?} after its last Lease write (renew deadline {renew_deadline:?})",
                    e.identity,
                    e.namespace,
                    e.name,
                    e.at,
                    e.at - *renewed
                )
            })
        })
        .collect()
}

/// Pods that were evicted (201) more than once, or asked to be evicted again after one
/// eviction succeeded, with the statuses in order.
pub fn repeated_evictions(log: &[WriteRecord]) -> Vec<String> {
    let mut by_pod: BTreeMap<(String, String), Vec<u16>> = BTreeMap::new();
    for record in log.iter().filter(|r| r.kind == "Eviction") {
        by_pod
            .entry((record.namespace.clone(), record.name.clone()))
            .or_default()
            .push(record.status);
    }
    by_pod
        .into_iter()
        .filter(|(_, statuses)| {
            statuses
                .iter()
                .position(|s| matches!(s, 200 | 201))
                .is_some_and(|first| statuses.len() > first + 1)
        })
        .map(|((ns, name), statuses)| format!("{ns}/{name}: {statuses:?}"))
        .collect()
}

/// Eviction requests for the same pod closer together than `min_gap` (a retry loop, not the
/// next round), as `pod: gap`.
pub fn eviction_retries_closer_than(log: &[WriteRecord], min_gap: Duration) -> Vec<String> {
    let mut last: BTreeMap<(&str, &str), Duration> = BTreeMap::new();
    let mut found = Vec::new();
    for record in log.iter().filter(|r| r.kind == "Eviction") {
        let key = (record.namespace.as_str(), record.name.as_str());
        if let Some(previous) = last.insert(key, record.at) {
            let gap = record.at.saturating_sub(previous);
            if gap < min_gap {
                found.push(format!(
                    "{}/{}: {gap:?} (status {})",
                    key.0, key.1, record.status
                ));
            }
        }
    }
    found
}

/// Requests per second of each identity between two `request_counts()` readings `elapsed` apart.
pub fn request_rates(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    elapsed: Duration,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(identity, n)| {
            let base = before.get(identity).copied().unwrap_or(0);
            (
                identity.clone(),
                n.saturating_sub(base) as f64 / elapsed.as_secs_f64().max(1e-9),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: u64, identity: &str, kind: &str, name: &str, status: u16) -> WriteRecord {
        WriteRecord {
            at: Duration::from_millis(at_ms),
            wall: SystemTime::UNIX_EPOCH,
            identity: identity.into(),
            method: if kind == "Lease" { "PUT" } else { "POST" }.into(),
            path: String::new(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
            status,
        }
    }

    const DEADLINE: Duration = Duration::from_secs(3);
    const SLACK: Duration = Duration::from_millis(200);

    #[test]
    fn terms_follow_lease_writes_and_end_at_the_deadline_or_the_next_holder() {
        let log = vec![
            record(0, "a", "Lease", LEASE, 201),
            record(500, "a", "Lease", LEASE, 200),
            record(900, "b", "Lease", LEASE, 409),
            record(1_000, "a", "Lease", LEASE, 200),
            record(7_000, "b", "Lease", LEASE, 200),
            record(7_500, "b", "Lease", LEASE, 200),
            record(8_000, "a", "Lease", "other-lease", 200),
        ];
        let terms = leadership_terms(&log, DEADLINE);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].identity, "a");
        assert_eq!(terms[0].end, Duration::from_millis(4_000));
        assert_eq!(terms[1].start(), Duration::from_millis(7_000));
        assert_eq!(terms[1].end, Duration::from_millis(10_500));
        // A takeover before the deadline (e.g. after a release) cuts the term short.
        let released = vec![
            record(0, "a", "Lease", LEASE, 201),
            record(1_000, "b", "Lease", LEASE, 200),
        ];
        assert_eq!(
            leadership_terms(&released, DEADLINE)[0].end,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn evictions_are_judged_against_their_authors_term() {
        let mut log = vec![
            record(0, "a", "Lease", LEASE, 201),
            record(1_000, "a", "Eviction", "p1", 201),
            record(2_000, "a", "Eviction", "p2", 429),
            // a's last renewal was at 0: 3.1 s is within the slack, 3.5 s is not.
            record(3_100, "a", "Eviction", "p3", 201),
            record(6_000, "b", "Lease", LEASE, 200),
            record(6_500, "b", "Eviction", "p4", 201),
            // Dropped or failed by a fault: never reached the registry.
            record(8_000, "a", "Eviction", "p5", 0),
            record(8_000, "a", "Eviction", "p6", 503),
        ];
        assert_eq!(
            evictions_outside_terms(&log, DEADLINE, SLACK),
            Vec::<String>::new()
        );
        log.push(record(3_500, "a", "Eviction", "p7", 201));
        log.push(record(6_600, "a", "Eviction", "p8", 201));
        let found = evictions_outside_terms(&log, DEADLINE, SLACK);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("p7") && found[1].contains("p8"),
            "{found:?}"
        );
        assert!(
            found[1].contains("Some(\"b\")"),
            "names the holder: {found:?}"
        );
    }

    #[test]
    fn repeats_and_tight_retries_are_found() {
        let log = vec![
            record(0, "a", "Eviction", "p1", 429),
            record(1_000, "a", "Eviction", "p1", 201),
            record(1_000, "a", "Eviction", "p2", 201),
            record(3_000, "b", "Eviction", "p2", 404),
            record(4_000, "a", "Eviction", "p3", 429),
            record(4_010, "a", "Eviction", "p3", 429),
        ];
        assert_eq!(repeated_evictions(&log), vec!["ns/p2: [201, 404]"]);
        let tight = eviction_retries_closer_than(&log, Duration::from_millis(500));
        assert_eq!(tight.len(), 1, "{tight:?}");
        assert!(tight[0].starts_with("ns/p3"));
    }

    #[test]
    fn rates_are_per_identity_over_the_interval() {
        let before = BTreeMap::from([("a".to_string(), 10)]);
        let after = BTreeMap::from([("a".to_string(), 30), ("b".to_string(), 5)]);
        let rates = request_rates(&before, &after, Duration::from_secs(10));
        assert_eq!(rates["a"], 2.0);
        assert_eq!(rates["b"], 0.5);
    }

    #[test]
    fn load_documents_read_as_the_agents_schema_and_follow_the_model() {
        let pod = |name: &str, uid: &str, cores: f64| {
            let mut pod = with_demand(
                crate::apiserver::fixtures::Workload::replica_set("shop", name).pod(0, "n0"),
                cores,
            );
            pod["metadata"]["uid"] = json!(uid);
            pod
        };
        let a = pod("a", "11111111-0000-4000-8000-000000000001", 2.0);
        let b = pod("b", "11111111-0000-4000-8000-000000000002", 1.4);
        let doc = load_document("n0", 4, 16 << 30, &[&a, &b], 0.2);
        let parsed: ballast::serve::api::LoadResponse =
            serde_json::from_value(doc.clone()).expect("a /v1/load document");
        assert_eq!(parsed.node, "n0");
        assert_eq!(parsed.containers.len(), 2);
        let (u, p) = cpu_figures(3.4, 4);
        assert!((u - 0.85).abs() < 1e-9 && p > 0.2 && p < 0.25, "{u} {p}");
        assert_eq!(
            doc["score"]["smoothed"]["per_resource"]["cpu"]["utilisation"],
            json!(u)
        );
        assert_eq!(doc["containers"][0]["cpu"]["cores_used"], json!(2.0));
        // Over capacity, pods share the CPUs.
        let c = pod("c", "11111111-0000-4000-8000-000000000003", 4.0);
        let over = load_document("n0", 4, 16 << 30, &[&a, &c], 0.2);
        assert_eq!(over["cpu"]["utilisation"], json!(1.0));
        let shared: f64 = over["containers"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["cpu"]["cores_used"].as_f64())
                    .sum()
            })
            .unwrap_or_default();
        assert!((shared - 4.0).abs() < 1e-9, "{shared}");
    }
}
