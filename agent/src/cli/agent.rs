//! `ballast agent`: collectors + HTTP server until SIGTERM or SIGINT; in a cluster (without
//! `--standalone`) also the pod-name watch, the Lease election and, on the leader, the rounds
//! (see [`cluster`]).

mod cluster;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tokio::sync::watch;
use tracing::info;

use crate::{
    collect::{
        collector::{CollectOptions, Collector},
        ebpf::RunStats,
        worker::{self, monotonic_ns},
    },
    load::score::ScoreConfig,
    serve::{
        self,
        alerts::{AlertReceiver, AlertRouting, AlertsConfig, Leadership},
        auth::BearerToken,
    },
    state::AgentState,
};

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Run on this host alone, without a Kubernetes API server. Without it the agent runs in a
    /// cluster: it names containers from the API, serves /v1/load to the leader with a token,
    /// takes part in the Lease election and, as the leader, rebalances.
    #[arg(long)]
    pub standalone: bool,
    /// Serve /v1/load from this JSON file (the /v1/load schema, read again on every request)
    /// instead of measuring: no collectors and no kernel programs run, and the document says
    /// `"source": "file"`. For tests and demos.
    #[arg(long, value_name = "FILE")]
    pub load_from: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: cluster::ClusterArgs,
    /// Address of the HTTP server (/metrics, /v1/load, /healthz).
    #[arg(long, env = "BALLAST_LISTEN", default_value = "127.0.0.1:9477")]
    pub listen: SocketAddr,
    /// Collection interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Read CPU figures from cgroupfs instead of the kernel programs.
    #[arg(long)]
    pub no_ebpf: bool,
    /// Frequency of the per-CPU flush tick of the kernel programs, Hz.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub tick_hz: u64,
    /// When the kernel's BPF run-time statistics are on: they cost every BPF program on the node
    /// two clock reads per run, so by default they are sampled 5 s per minute.
    #[arg(long, value_enum, default_value_t = RunStats::Sampled)]
    pub bpf_stats: RunStats,
    /// How often the cgroup hierarchy is walked to notice removed cgroups.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub rescan_interval: Duration,
    /// How often memory figures (working set, RSS, page cache, faults, OOM kills, PSI) are read
    /// from cgroupfs; reclaim stalls are measured in the kernel continuously.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub memory_interval: Duration,
    /// Half-life of the load model's moving averages (the smoothed load score).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub load_half_life: Duration,
    /// Name of this node (the Downward API sets NODE_NAME in a DaemonSet).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// File with the bearer token Alertmanager presents on POST /v1/alerts (a mounted Secret;
    /// surrounding whitespace is trimmed). Without it the webhook answers 404.
    #[arg(long, value_name = "PATH")]
    pub alerts_token_file: Option<PathBuf>,
    /// Which alerts start which action (TOML; README, "Alert-driven rebalancing"). Without it
    /// the defaults: `BallastNode*` alerts start a targeted round for their `node`, alerts
    /// labelled `ballast_action="evacuate"` an evacuation.
    #[arg(long, value_name = "FILE", requires = "alerts_token_file")]
    pub alert_routing: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Serves allocations of 128 KiB and more from their own mappings, always.
///
/// glibc raises that threshold on the fly once a large block is freed (up to 32 MiB); loading
/// the kernel programs frees a 5.5 MB BTF buffer and then parses the kernel's BTF into growing
/// vectors, which would then be copied on every growth inside the heap and leave it fragmented.
/// With the threshold pinned they grow by `mremap` and go back to the system when freed: the
/// agent's peak and resident memory drop (BENCHMARKS.md).
fn pin_mmap_threshold() {
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes allocator tuning; it is called before any thread starts.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } == 0 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) refused; memory figures may be higher");
    }
}

/// Durations like `500ms`, `1s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 1s or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" | "" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        _ => return Err(format!("`{text}`: unknown unit `{unit}`; use ms, s or m")),
    };
    if duration.is_zero() {
        return Err(format!("`{text}`: must be longer than zero"));
    }
    Ok(duration)
}

pub fn run(args: AgentArgs) -> Result<()> {
    pin_mmap_threshold();
    init_logging(args.log_format);
    // Everything the cluster mode needs from flags and files is checked before anything starts.
    let cluster = match args.standalone {
        true => None,
        false => Some(cluster::Setup::from_args(&args)?),
    };
    let node_name = match (&cluster, args.node_name.clone()) {
        (Some(setup), _) => setup.node_name.clone(),
        (None, Some(name)) => name,
        (None, None) => hostname()?,
    };
    let metrics = serve::metrics::recorder_builder()
        .context("configuring the metrics recorder failed")?
        .install_recorder()
        .context("installing the metrics recorder failed")?;
    serve::alerts::describe_metrics();
    // Standalone there is no leader; in a cluster the election publishes who leads.
    let (leadership_tx, leadership) = watch::channel(Leadership::Standalone);
    let (alerts, alert_actions) = alerts_webhook(&args, leadership)?;
    let (collector, state) = match &args.load_from {
        Some(path) => {
            crate::serve::api::LoadResponse::from_file(path, &node_name)
                .with_context(|| format!("--load-from {} cannot be served", path.display()))?;
            info!(file = %path.display(), "serving /v1/load from a file: nothing is measured");
            let state = AgentState::new(
                node_name,
                crate::collect::sample::Mode::Unavailable,
                Some("--load-from: load read from a file, not measured".into()),
                args.interval.as_secs_f64(),
            );
            (None, state)
        }
        None => {
            let (collector, state) = start_collector(&args, node_name)?;
            (Some(collector), state)
        }
    };
    let state = Arc::new(state);
    serve::metrics::describe_self_metrics(&state);
    let load = match &args.load_from {
        Some(path) => serve::LoadFrom::File(path.clone()),
        None => serve::LoadFrom::Collectors,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime failed")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
            format!("cannot listen on {}: is another agent running? choose another with --listen", args.listen)
        })?;
        let address = listener.local_addr()?;
        let (stop_collecting, collecting_shutdown) = watch::channel(false);
        let collecting = collector.map(|collector| {
            tokio::spawn(worker::run(collector, args.interval, monotonic_ns, state.clone(), collecting_shutdown))
        });
        let (stop_serving, serving_shutdown) = watch::channel(false);
        let signal = match cluster {
            None => {
                info!(%address, mode = state.cpu_mode.as_str(), "serving /metrics, /v1/load, /healthz");
                let options = serve::Options { load, alerts, ..serve::Options::default() };
                let serving = tokio::spawn(serve::serve(listener, state, metrics, options, serving_shutdown));
                let signal = wait_for_signal().await?;
                info!(signal, "shutting down");
                stop_serving.send_replace(true);
                serving.await.context("HTTP server task failed")??;
                signal
            }
            Some(setup) => {
                setup
                    .run(cluster::Running {
                        listener,
                        state,
                        metrics,
                        load,
                        alerts,
                        alert_actions,
                        leadership: leadership_tx,
                        serving_shutdown,
                        stop_serving,
                    })
                    .await?
            }
        };
        stop_collecting.send_replace(true);
        if let Some(collecting) = collecting {
            // Dropping the collector detaches the kernel programs and frees their maps.
            drop(collecting.await.context("collection task failed")?);
        }
        info!(signal, "stopped");
        Ok(())
    })
}

/// The collector and the state it publishes to.
fn start_collector(args: &AgentArgs, node_name: String) -> Result<(Collector, AgentState)> {
    let options = CollectOptions {
        no_ebpf: args.no_ebpf,
        tick_hz: args.tick_hz,
        run_stats: args.bpf_stats,
        rescan_interval_ns: u64::try_from(args.rescan_interval.as_nanos()).unwrap_or(u64::MAX),
        memory_interval_ns: u64::try_from(args.memory_interval.as_nanos()).unwrap_or(u64::MAX),
    };
    let collector = Collector::new(&options).context("starting the CPU collector failed")?;
    let mut state = AgentState::new(
        node_name,
        collector.mode(),
        collector.fallback_reason().map(str::to_string),
        args.interval.as_secs_f64(),
    );
    state.wait_excludes_throttling = collector.wait_excludes_throttling();
    state.memory_mode = collector.memory_mode();
    state.network_mode = collector.network_mode();
    info!(
        cpu = state.cpu_mode.as_str(),
        memory = state.memory_mode.as_str(),
        network = state.network_mode.as_str(),
        "signal modes"
    );
    let score_config = ScoreConfig {
        half_life_ns: u64::try_from(args.load_half_life.as_nanos()).unwrap_or(u64::MAX),
        ..ScoreConfig::default()
    };
    score_config
        .validate()
        .context("invalid load-model settings (--load-half-life must be above 0)")?;
    state.set_score_config(score_config);
    Ok((collector, state))
}

/// The webhook's configuration and the receiving end of its action queue (both `None` without
/// `--alerts-token-file`). The leader loop (cluster mode) consumes the receiver and publishes
/// its leadership on the watch channel; a standalone agent keeps the receiver unused, and its
/// webhook answers 503 before anything is queued.
fn alerts_webhook(
    args: &AgentArgs,
    leadership: watch::Receiver<Leadership>,
) -> Result<(Option<AlertsConfig>, Option<AlertReceiver>)> {
    let Some(token_file) = &args.alerts_token_file else {
        return Ok((None, None));
    };
    let (actions, receiver) = serve::alerts::channel();
    let token = BearerToken::from_file(token_file).context("--alerts-token-file")?;
    let routing = match &args.alert_routing {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "cannot read the alert routing {}; fix --alert-routing",
                    path.display()
                )
            })?;
            AlertRouting::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => AlertRouting::default(),
    };
    info!(routing = ?args.alert_routing, "alerts webhook enabled on POST /v1/alerts");
    let config = AlertsConfig {
        token,
        routing,
        leadership,
        actions,
        // Cluster mode adds it once it knows the API and the agents' port.
        forwarder: None,
    };
    Ok((Some(config), Some(receiver)))
}

async fn wait_for_signal() -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler failed")?;
    let mut int =
        signal(SignalKind::interrupt()).context("installing the SIGINT handler failed")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // kube's own HTTP layer logs every failed call at ERROR without saying what it was for;
        // the agent logs each failure itself, with what failed and what to do.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,kube_client::client::builder=off")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn hostname() -> Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading /proc/sys/kernel/hostname failed; pass --node-name")?;
    Ok(name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    fn agent_args(flags: &[&str]) -> Result<AgentArgs, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let argv = std::iter::once("ballast-agent").chain(flags.iter().copied());
        Cli::try_parse_from(argv).map(|cli| cli.agent)
    }

    #[test]
    fn the_webhook_is_configured_from_its_flags() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let token = dir.path().join("alerts-token");
        std::fs::write(&token, "abc\n")?;
        let routing = dir.path().join("routing.toml");
        std::fs::write(&routing, "[evacuate]\nalertnames = [\"NodeDiskFailing\"]\n")?;
        let (_lead, leadership) = watch::channel(Leadership::Standalone);

        let none = agent_args(&["--standalone"])?;
        assert!(alerts_webhook(&none, leadership.clone())?.0.is_none());

        let token_flag = format!("--alerts-token-file={}", token.display());
        let routing_flag = format!("--alert-routing={}", routing.display());
        let both = agent_args(&["--standalone", &token_flag, &routing_flag])?;
        let config = alerts_webhook(&both, leadership.clone())?.0;
        assert_eq!(
            config.map(|c| c.routing.evacuate.alertnames),
            Some(vec!["NodeDiskFailing".to_string()])
        );

        // Routing without a token would do nothing: refused.
        assert!(agent_args(&["--standalone", &routing_flag]).is_err());

        std::fs::write(&routing, "[evacuate]\nalertname = []\n")?;
        let err = alerts_webhook(&both, leadership.clone()).err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            text.contains("routing.toml") && text.contains("alertname"),
            "{text}"
        );

        std::fs::write(&token, "  \n")?;
        let err = alerts_webhook(&both, leadership).err();
        let text = err.map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(
            text.contains("--alerts-token-file") && text.contains("empty"),
            "{text}"
        );
        Ok(())
    }
}
