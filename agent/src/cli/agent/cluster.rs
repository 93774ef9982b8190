//! `ballast agent` in a cluster: flags, the checks made before anything starts, and the tasks
//! (HTTP with the token, pod names, election, leader rounds) with their shutdown order on
//! SIGTERM: stop the round, step down (taints off, Lease released), stop serving.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

use super::{parse_duration, wait_for_signal, AgentArgs};
use crate::{
    cluster::{
        client::{self, ApiClient},
        decisions::DecisionLog,
        election::{decide::ElectionConfig, Elector, Role, LEASE_NAME},
        fence::Fence,
        gather::{AgentLoads, AgentSelector, Gatherer, AGENT_SELECTOR},
        leader::{self, LeaderSettings},
        locate::PodLocator,
        names,
    },
    rebalance::Policy,
    serve::{
        self,
        alerts::{forward::Forwarder, AlertReceiver, AlertsConfig, Leadership},
        auth::TokenFile,
    },
    state::AgentState,
};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// kubeconfig to reach the API server (else KUBECONFIG, else the pod's service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// This agent's pod name (the Downward API sets POD_NAME): its identity in the election.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The agents' namespace (POD_NAMESPACE from the Downward API): where the Lease, the state
    /// ConfigMap and the other agents are. Default: the kubeconfig's or service account's.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// File with the token shared by all agents (a Secret mounted as a file): /v1/load and
    /// /v1/decisions require it as a bearer token, and the leader sends it.
    #[arg(long, value_name = "PATH", env = "BALLAST_LOAD_TOKEN_FILE")]
    pub load_token_file: Option<PathBuf>,
    /// How often the leader plans and acts.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub round_interval: Duration,
    /// Rebalancing policy, TOML (deploy/examples/policy.toml lists every field); defaults
    /// when absent.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Plan every round and record the decisions (/v1/decisions), but evict, taint and persist
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Label selector of the agents' pods (equality only).
    #[arg(long, default_value = AGENT_SELECTOR)]
    pub agent_selector: AgentSelector,
    /// Port of the other agents' HTTP servers (default: the port of --listen).
    #[arg(long)]
    pub agent_port: Option<u16>,
    /// Loads older than this are stale and their node is left out (default: three of the
    /// sending agent's collection intervals).
    #[arg(long, value_parser = parse_duration)]
    pub load_max_age: Option<Duration>,
    /// How long the leader waits for one agent's /v1/load.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub gather_timeout: Duration,
    /// How long followers wait on an unrenewed Lease before taking it (whole seconds).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader acts without a successful renewal (must be below --lease-duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or looked at.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub retry_period: Duration,
    /// Rounds kept for /v1/decisions.
    #[arg(long, default_value_t = 10)]
    pub decisions_kept: usize,
    /// While an alert has a node drained, how often the leader looks whether its next pod may
    /// go (the previous one's replacement is Ready), between scheduled rounds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub evacuation_pace: Duration,
}

/// How long a follower waits for the leader's answer to a relayed webhook call (Alertmanager's
/// own timeout is 10 s by default).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything checked before the agent starts anything.
pub struct Setup {
    pub node_name: String,
    identity: String,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    token: TokenFile,
    policy: Policy,
    election: ElectionConfig,
    agent_port: u16,
    round: RoundFlags,
}

/// The flags of the leader's rounds.
struct RoundFlags {
    round_interval: Duration,
    dry_run: bool,
    agent_selector: AgentSelector,
    load_max_age: Option<Duration>,
    gather_timeout: Duration,
    decisions_kept: usize,
    evacuation_pace: Duration,
}

/// What the common part of `run` hands over.
pub struct Running {
    pub listener: TcpListener,
    pub state: Arc<AgentState>,
    pub metrics: PrometheusHandle,
    pub load: serve::LoadFrom,
    pub alerts: Option<AlertsConfig>,
    /// The webhook's actions, for the leader loop.
    pub alert_actions: Option<AlertReceiver>,
    /// Who leads, for the webhook (which only the leader acts on).
    pub leadership: watch::Sender<Leadership>,
    pub serving_shutdown: watch::Receiver<bool>,
    pub stop_serving: watch::Sender<bool>,
}

fn required(value: &Option<String>, what: &str, env: &str, flag: &str) -> Result<String> {
    value.clone().filter(|v| !v.is_empty()).ok_or_else(|| {
        anyhow!(
            "cluster mode needs {what}: set {env} (a DaemonSet gets it from the Downward API) or pass {flag}; \
             or run with --standalone on a host without Kubernetes"
        )
    })
}

impl Setup {
    pub fn from_args(args: &AgentArgs) -> Result<Self> {
        let c = &args.cluster;
        let node_name = required(
            &args.node_name,
            "this node's name",
            "NODE_NAME",
            "--node-name",
        )?;
        let identity = required(
            &c.pod_name,
            "this agent's pod name",
            "POD_NAME",
            "--pod-name",
        )?;
        let Some(token_path) = &c.load_token_file else {
            bail!(
                "cluster mode needs --load-token-file (or BALLAST_LOAD_TOKEN_FILE): the file with the token \
                 the agents share (a Secret mounted as a file) that /v1/load requires"
            );
        };
        let token = TokenFile::open(token_path).context("--load-token-file")?;
        let policy = match &c.policy {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the policy file {}", path.display()))?;
                Policy::from_toml(&text)
                    .with_context(|| format!("{} is not a usable policy", path.display()))?
            }
            None => Policy::default(),
        };
        let election = ElectionConfig {
            lease_duration: c.lease_duration,
            renew_deadline: c.renew_deadline,
            retry_period: c.retry_period,
        };
        election.validate()?;
        Ok(Self {
            node_name,
            identity,
            namespace: c.namespace.clone().filter(|n| !n.is_empty()),
            kubeconfig: c.kubeconfig.clone(),
            token,
            policy,
            election,
            agent_port: c.agent_port.unwrap_or(args.listen.port()),
            round: RoundFlags {
                round_interval: c.round_interval,
                dry_run: c.dry_run,
                agent_selector: c.agent_selector.clone(),
                load_max_age: c.load_max_age,
                gather_timeout: c.gather_timeout,
                decisions_kept: c.decisions_kept,
                evacuation_pace: c.evacuation_pace,
            },
        })
    }

    pub async fn run(self, running: Running) -> Result<&'static str> {
        let api = client::connect(self.kubeconfig.as_deref()).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| api.default_namespace.clone());
        probe(&api, &namespace).await?;
        info!(
            api = %api.url,
            from = %api.source,
            identity = %self.identity,
            node = %self.node_name,
            namespace = %namespace,
            "in a cluster"
        );
        crate::cluster::metrics::describe();
        let fence = Fence::new(self.election.renew_deadline);
        let decisions = Arc::new(DecisionLog::new(
            self.identity.clone(),
            fence.clone(),
            self.round.decisions_kept,
        ));
        let address = running.listener.local_addr()?;
        let alert_hold = running.alerts.as_ref().map_or(Duration::MAX, |a| {
            Duration::from_secs(a.routing.remember_seconds)
        });
        let alerts = match running.alerts {
            Some(mut alerts) => {
                let locator = PodLocator::new(
                    Api::namespaced(api.client.clone(), &namespace),
                    namespace.clone(),
                    self.agent_port,
                );
                let forwarder = Forwarder::new(&self.identity, Arc::new(locator), FORWARD_TIMEOUT)
                    .with_context(|| {
                        format!(
                            "the pod name {:?} cannot name this agent on relayed webhook calls",
                            self.identity
                        )
                    })?;
                alerts.forwarder = Some(forwarder);
                Some(alerts)
            }
            None => None,
        };
        let options = serve::Options {
            load: running.load,
            alerts,
            token: Some(self.token.clone()),
            decisions: Some(decisions.clone()),
        };
        let serving = tokio::spawn(serve::serve(
            running.listener,
            running.state.clone(),
            running.metrics,
            options,
            running.serving_shutdown,
        ));
        info!(%address, "serving /metrics, /healthz, and with the token /v1/load, /v1/decisions");

        // Also with --load-from (nothing to name then): the API sees the same calls from an agent
        // as in production, which the request-rate figures rely on.
        let (stop_names, names_shutdown) = watch::channel(false);
        let naming = tokio::spawn(names::run(
            api.client.clone(),
            self.node_name.clone(),
            running.state.clone(),
            names_shutdown,
        ));

        let (role_tx, role) = watch::channel(Role::Candidate { holder: None });
        let (stop_electing, electing_shutdown) = watch::channel(false);
        let elector = Elector::new(
            Api::<Lease>::namespaced(api.client.clone(), &namespace),
            self.identity.clone(),
            self.election,
            fence.clone(),
            role_tx,
        );
        let electing = tokio::spawn(elector.run(electing_shutdown));
        tokio::spawn(publish_leadership(role.clone(), running.leadership));

        let settings = LeaderSettings {
            identity: self.identity.clone(),
            namespace: namespace.clone(),
            round_interval: self.round.round_interval,
            policy: self.policy,
            dry_run: self.round.dry_run,
            loads: AgentLoads {
                gatherer: Gatherer::new(self.round.gather_timeout),
                namespace,
                selector: self.round.agent_selector,
                port: self.agent_port,
                token: Some(self.token),
                max_age: self.round.load_max_age,
            },
            call_timeout: Duration::from_secs(5),
            alert_hold,
            evacuation_pace: self.round.evacuation_pace,
        };
        let (stop_leading, leading_shutdown) = watch::channel(false);
        let leading = tokio::spawn(leader::run(
            api.client.clone(),
            settings,
            fence,
            role,
            decisions,
            running.alert_actions,
            leading_shutdown,
        ));

        let signal = wait_for_signal().await?;
        info!(
            signal,
            "shutting down: stopping the round, then releasing the Lease"
        );
        stop_leading.send_replace(true);
        if tokio::time::timeout(Duration::from_secs(10), leading)
            .await
            .is_err()
        {
            warn!("the leader loop did not stop within 10 s");
        }
        stop_electing.send_replace(true);
        electing.await.context("the election task failed")?;
        stop_names.send_replace(true);
        naming.await.context("the pod-name watch failed")?;
        running.stop_serving.send_replace(true);
        serving.await.context("HTTP server task failed")??;
        Ok(signal)
    }
}

/// Mirrors the election's role on the webhook's leadership channel until the election ends.
async fn publish_leadership(
    mut role: watch::Receiver<Role>,
    leadership: watch::Sender<Leadership>,
) {
    loop {
        let published = match &*role.borrow_and_update() {
            Role::Leader { term } => Leadership::Leader { term: *term },
            Role::Candidate { holder } => Leadership::Follower {
                leader: holder.clone(),
            },
        };
        leadership.send_replace(published);
        if role.changed().await.is_err() {
            return;
        }
    }
}

/// One call before anything else, so that a wrong address, credentials or RBAC is said at once
/// and clearly: read the Lease (absent is fine). Retried for about 10 s for an API server that
/// is still coming up.
async fn probe(api: &ApiClient, namespace: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(api.client.clone(), namespace);
    let mut last = None;
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        match leases.get_opt(LEASE_NAME).await {
            Ok(_) => return Ok(()),
            Err(error) => {
                let message = client::explain(
                    &error,
                    &format!("reading Lease {namespace}/{LEASE_NAME}"),
                    api,
                );
                warn!(attempt = attempt + 1, %message, "the API server is not usable yet");
                // Credentials and permissions do not fix themselves.
                if matches!(&error, kube::Error::Api(s) if s.code == 401 || s.code == 403) {
                    bail!(message);
                }
                last = Some(message);
            }
        }
    }
    bail!(
        "{}; giving up after 5 attempts (or run with --standalone to measure this node alone)",
        last.unwrap_or_default()
    )
}
