//! `ballast-apiserver-double`: the in-repo Kubernetes API test double served standalone, for
//! benchmarks and manual use (the agent, kubectl with a written kubeconfig). Prints its URL as
//! the first line of stdout, then one `kubeconfig PATH` line per `--identity`, and serves until
//! SIGTERM or SIGINT.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use ballast::cli::agent::parse_duration;
use ballast_tests::apiserver::{ApiServer, ApiServerConfig};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Serve the Ballast Kubernetes API test double on 127.0.0.1")]
struct Args {
    /// Objects to start with: a JSON array, or a `List` (`kubectl get -o json` output).
    #[arg(long)]
    seed_file: Option<PathBuf>,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Changes kept for watches and list snapshots.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// From a controller-owned pod's deletion to its replacement.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    restart_delay: Duration,
    /// From a replacement's binding to Running/Ready.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    ready_delay: Duration,
    /// Between watch bookmarks.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    bookmark_interval: Duration,
    /// Accept only these bearer tokens (repeatable); without it any token is an identity.
    #[arg(long)]
    only_identity: Vec<String>,
    /// Write a kubeconfig for this identity into --kubeconfig-dir (repeatable).
    #[arg(long)]
    identity: Vec<String>,
    /// Where --identity kubeconfigs go.
    #[arg(long, default_value = ".")]
    kubeconfig_dir: PathBuf,
    /// On shutdown, write the write log and per-identity request counts here (JSON).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Seed of uids, generated names and scheduling tie-breaks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn seed_objects(path: &PathBuf) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let document: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let objects = match document {
        Value::Array(objects) => Some(objects),
        Value::Object(mut list) => match list.remove("items") {
            Some(Value::Array(objects)) => Some(objects),
            _ => None,
        },
        _ => None,
    };
    match objects {
        Some(objects) => Ok(objects),
        None => bail!(
            "{}: expected a JSON array of objects or a List with `items`",
            path.display()
        ),
    }
}

async fn wait_for_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let objects = match &args.seed_file {
        Some(path) => seed_objects(path)?,
        None => Vec::new(),
    };
    let server = ApiServer::start(ApiServerConfig {
        port: args.port,
        history: args.history,
        restart_delay: args.restart_delay,
        ready_delay: args.ready_delay,
        bookmark_interval: args.bookmark_interval,
        identities: (!args.only_identity.is_empty())
            .then(|| args.only_identity.iter().cloned().collect::<BTreeSet<_>>()),
        seed: args.seed,
    })?;
    for (i, object) in objects.into_iter().enumerate() {
        server
            .apply(object)
            .with_context(|| format!("seed object #{i}"))?;
    }
    println!("{}", server.url());
    for identity in &args.identity {
        let path = server.kubeconfig(&args.kubeconfig_dir, identity)?;
        println!("kubeconfig {}", path.display());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(wait_for_signal())?;
    if let Some(path) = &args.report {
        let report = json!({
            "writes": server.write_log(),
            "requests": server.request_counts(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
