//! `ballast plan`: one planning round on a captured cluster snapshot, printed as a table of
//! decisions and refusals with their reasons, or as the plan's JSON.
//!
//! Without `--state` there is no memory of earlier rounds, so the hysteresis could never be
//! satisfied by a single round: the round is then planned as if every node abnormal now had been
//! abnormal for `classification.abnormal_rounds` rounds (the table says so). With `--state` the
//! memory is used as it is, and `--state-out` writes the next one, to replay rounds.
//!
//! `--from-cluster` captures the snapshot itself, as the leader does (nodes, pods and PDBs from
//! the API, every agent's /v1/load), and plans with the leader's memory from the ConfigMap
//! `ballast-state` when there is one; `--save` writes the captured snapshot for `--snapshot`.

use std::{fmt::Write as _, io::Write as _, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;

use super::{
    agent::parse_duration,
    input,
    text::{snake, table, Format},
};
use crate::{
    cluster::{
        capture::capture,
        client,
        gather::{AgentLoads, AgentSelector, Gatherer, AGENT_SELECTOR},
        memory::StateStore,
        read::Objects,
    },
    rebalance::{
        plan::{NodeReport, Plan},
        plan_directed, ClusterSnapshot, Directives, RebalanceState,
    },
    serve::auth::TokenFile,
};

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["snapshot", "from_cluster"])))]
pub struct PlanArgs {
    /// Captured cluster snapshot, JSON (format: agent/src/rebalance/README.md).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Capture the snapshot from the cluster now: the API (nodes, pods, PDBs) and every agent's
    /// /v1/load (the agents' pod IPs must be reachable: run it in the cluster).
    #[arg(long)]
    pub from_cluster: bool,
    /// Write the captured snapshot here (JSON, for --snapshot); with --from-cluster only.
    #[arg(long)]
    pub save: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: FromCluster,
    /// Policy, TOML; every field has a default (defaults when absent).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Planner memory from an earlier round (JSON, as written by --state-out).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Write the planner memory after this round here (JSON).
    #[arg(long)]
    pub state_out: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Time of the round, seconds since the Unix epoch (default: now). Pod ages, cooldowns and
    /// the token bucket are counted from it.
    #[arg(long)]
    pub now: Option<i64>,
    /// Plan as if an alert asked to relieve NODE now (repeatable): what a targeted round does.
    #[arg(long, value_name = "NODE")]
    pub relieve: Vec<String>,
    /// Plan as if an alert asked to drain NODE (repeatable): the evacuation's next step.
    #[arg(long, value_name = "NODE")]
    pub evacuate: Vec<String>,
}

/// `--relieve` and `--evacuate` as the planner's directives; every node must be in the snapshot.
fn directives(args: &PlanArgs, snapshot: &ClusterSnapshot) -> Result<Directives> {
    let asked = |flag: &str| std::collections::BTreeSet::from([flag.to_owned()]);
    let mut directives = Directives::default();
    for (nodes, flag, into) in [
        (&args.relieve, "--relieve", &mut directives.relieve),
        (&args.evacuate, "--evacuate", &mut directives.evacuate),
    ] {
        for node in nodes {
            if !snapshot.nodes.iter().any(|n| &n.name == node) {
                bail!("node {node} is not in the snapshot; --relieve and --evacuate take node names from it");
            }
            into.insert(node.clone(), asked(flag));
        }
    }
    Ok(directives)
}

/// How `--from-cluster` reaches the API and the agents.
#[derive(Args, Debug)]
pub struct FromCluster {
    /// kubeconfig (else KUBECONFIG, else the pod's service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The agents' namespace (default: the kubeconfig's).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The token the agents share (their Secret), sent to /v1/load.
    #[arg(long, value_name = "PATH", env = "BALLAST_LOAD_TOKEN_FILE")]
    pub load_token_file: Option<PathBuf>,
    /// Label selector of the agents' pods.
    #[arg(long, default_value = AGENT_SELECTOR)]
    pub agent_selector: AgentSelector,
    #[arg(long, default_value_t = 9477)]
    pub agent_port: u16,
    /// How long to wait for one agent.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub gather_timeout: std::time::Duration,
    /// Loads older than this are stale (default: three of the agent's intervals).
    #[arg(long, value_parser = parse_duration)]
    pub load_max_age: Option<std::time::Duration>,
}

pub fn run(args: PlanArgs) -> Result<()> {
    if args.save.is_some() && !args.from_cluster {
        anyhow::bail!(
            "--save writes a snapshot captured with --from-cluster; --snapshot already is one"
        );
    }
    let (snapshot, cluster_state) = match &args.snapshot {
        Some(path) => (input::snapshot(path)?, None),
        None => {
            let (snapshot, state) = input::block_on(capture_from_cluster(&args.cluster))?;
            if let Some(path) = &args.save {
                let text = serde_json::to_string_pretty(&snapshot)?;
                std::fs::write(path, text + "\n")
                    .with_context(|| format!("cannot write the snapshot to {}", path.display()))?;
                eprintln!("snapshot saved to {}", path.display());
            }
            (snapshot, state)
        }
    };
    let mut policy = input::policy(args.policy.as_deref())?;
    let remembered = args.state.is_some() || cluster_state.is_some();
    let state = match (&args.state, cluster_state) {
        (Some(path), _) => input::read_json(path, "planner state")?,
        (None, Some(state)) => state,
        (None, None) => {
            policy.classification.abnormal_rounds = 1;
            RebalanceState::default()
        }
    };
    let now = input::now(args.now)?;
    let directives = directives(&args, &snapshot)?;
    let (plan, next) = plan_directed(&snapshot, &state, &policy, now, &directives);
    if let Some(path) = &args.state_out {
        let text = serde_json::to_string_pretty(&next)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the planner state to {}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &plan)?;
            writeln!(out)?;
        }
        Format::Table => {
            if !remembered {
                writeln!(
                    out,
                    "(no --state: nodes abnormal now are treated as abnormal for long enough)"
                )?;
            }
            write!(out, "{}", render(&plan))?;
        }
    }
    Ok(())
}

/// The snapshot as the leader would capture it now, and the leader's memory if it has one.
async fn capture_from_cluster(
    args: &FromCluster,
) -> Result<(ClusterSnapshot, Option<RebalanceState>)> {
    let api = client::connect(args.kubeconfig.as_deref()).await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| api.default_namespace.clone());
    let Objects { nodes, pods, pdbs } = Objects::read(&api).await?;
    let token = match &args.load_token_file {
        Some(path) => Some(TokenFile::open(path).context("--load-token-file")?),
        None => None,
    };
    let loads = AgentLoads {
        gatherer: Gatherer::new(args.gather_timeout),
        namespace: namespace.clone(),
        selector: args.agent_selector.clone(),
        port: args.agent_port,
        token,
        max_age: args.load_max_age,
    };
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
    let pods: Vec<Arc<Pod>> = pods.into_iter().map(Arc::new).collect();
    let (gathered, excluded) = loads.collect(&nodes, &pods).await;
    for (node, (reason, detail)) in &excluded {
        eprintln!("node {node} left out ({reason}): {detail}");
    }
    let captured = capture(
        nodes.iter().map(|n| n.as_ref()),
        pods.iter().map(|p| p.as_ref()),
        &pdbs,
        gathered,
    );
    for problem in &captured.problems {
        eprintln!("{problem}");
    }
    let mut store = StateStore::new(
        Api::namespaced(api.client.clone(), &namespace),
        String::new(),
    );
    let state = match store.load().await {
        Ok(state) => state,
        Err(why) => {
            eprintln!("{why}; planning without the leader's memory");
            None
        }
    };
    Ok((captured.snapshot, state))
}

/// The plan as text: a summary line, then evictions, nodes and skipped pods, each with reasons.
pub fn render(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "round at {}{}: {} nodes ({} with fresh load), {} source(s), {} pod(s) considered, {} eviction(s), {:.1} tokens left",
        plan.at,
        if plan.dry_run { " (dry run: not to be executed)" } else { "" },
        s.nodes,
        s.nodes_with_fresh_load,
        s.sources,
        s.pods_considered,
        s.evictions,
        s.tokens_left
    );
    if !plan.evictions.is_empty() {
        let _ = writeln!(out, "\nEVICTIONS");
        let rows: Vec<[String; 4]> = plan
            .evictions
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let destinations: Vec<String> = e
                    .destinations
                    .iter()
                    .map(|d| format!("{} ({:.2})", d.node, d.score))
                    .collect();
                [
                    (i + 1).to_string(),
                    e.pod.to_string(),
                    e.source.clone(),
                    destinations.join(", "),
                ]
            })
            .collect();
        let details: Vec<&str> = plan.evictions.iter().map(|e| e.reason.as_str()).collect();
        table(
            &mut out,
            ["#", "POD", "FROM", "TO (score, best first)"],
            &rows,
            &details,
        );
    }
    if !plan.nodes.is_empty() {
        let _ = writeln!(out, "\nNODES");
        let rows: Vec<[String; 4]> = plan.nodes.iter().map(node_row).collect();
        let details: Vec<&str> = plan.nodes.iter().map(|n| n.detail.as_str()).collect();
        table(
            &mut out,
            ["NODE", "STATUS", "RESOURCES", "SKIP"],
            &rows,
            &details,
        );
    }
    if !plan.skipped_pods.is_empty() {
        let _ = writeln!(out, "\nSKIPPED PODS");
        let rows: Vec<[String; 4]> = plan
            .skipped_pods
            .iter()
            .map(|p| {
                [
                    p.pod.to_string(),
                    p.node.clone(),
                    snake(&p.reason),
                    String::new(),
                ]
            })
            .collect();
        let details: Vec<&str> = plan
            .skipped_pods
            .iter()
            .map(|p| p.detail.as_str())
            .collect();
        table(&mut out, ["POD", "NODE", "REASON", ""], &rows, &details);
    }
    if !plan.expired_in_flight.is_empty() {
        let _ = writeln!(out, "\nGAVE UP WAITING (limits.in_flight_timeout_seconds)");
        for e in &plan.expired_in_flight {
            let _ = writeln!(
                out,
                "{}: {} evicted from {} at {} has no Ready replacement; the workload may be moved again",
                e.workload.0, e.pod, e.source, e.evicted_at
            );
        }
    }
    if plan.evictions.is_empty() && plan.nodes.is_empty() {
        let _ = writeln!(out, "\nnothing to do: no node is abnormal");
    }
    out
}

fn node_row(n: &NodeReport) -> [String; 4] {
    let resources: Vec<String> = n.resources.iter().map(|r| r.to_string()).collect();
    [
        n.node.clone(),
        snake(&n.status),
        resources.join(","),
        n.skip.as_ref().map(snake).unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rebalance::{plan, ClusterSnapshot, Policy, Timestamp};

    fn example() -> ClusterSnapshot {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/snapshot.json");
        input::snapshot(&path).expect("the shipped example is usable")
    }

    #[test]
    fn the_shipped_example_plans_and_renders_every_section() {
        let mut policy = Policy::default();
        policy.classification.abnormal_rounds = 1;
        let (plan, _) = plan(
            &example(),
            &RebalanceState::default(),
            &policy,
            Timestamp(1_795_400_000),
        );
        assert!(!plan.evictions.is_empty());
        let text = render(&plan);
        for needle in [
            "EVICTIONS",
            "NODES",
            "SKIPPED PODS",
            "daemon_set",
            "no_destination",
            "pdb",
            "load_unknown",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }

    #[test]
    fn evictions_given_up_on_are_shown() {
        let (mut plan, _) = plan(
            &example(),
            &RebalanceState::default(),
            &Policy::default(),
            Timestamp(1_795_400_000),
        );
        assert!(!render(&plan).contains("GAVE UP WAITING"));
        plan.expired_in_flight
            .push(crate::rebalance::plan::ExpiredInFlight {
                workload: crate::rebalance::snapshot::WorkloadKey::new("shop", "Deployment", "api"),
                pod: "api-7f9c".to_owned(),
                source: "worker-1".to_owned(),
                evicted_at: Timestamp(1_795_399_000),
            });
        let text = render(&plan);
        assert!(text.contains("GAVE UP WAITING"), "{text}");
        assert!(
            text.contains("shop/Deployment/api: api-7f9c evicted from worker-1"),
            "{text}"
        );
    }
}
