//! `ballast plan`: one planning round on a captured cluster snapshot, printed as a table of
//! decisions and refusals with their reasons, or as the plan's JSON.
//!
//! Without `--state` there is no memory of earlier rounds, so the hysteresis could never be
//! satisfied by a single round: the round is then planned as if every node abnormal now had been
//! abnormal for `classification.abnormal_rounds` rounds (the table says so). With `--state` the
//! memory is used as it is, and `--state-out` writes the next one, to replay rounds.

use std::{fmt::Write as _, io::Write as _, path::PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use super::{
    input,
    text::{snake, table, Format},
};
use crate::rebalance::{
    plan,
    plan::{NodeReport, Plan},
    RebalanceState,
};

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Captured cluster snapshot, JSON (format: agent/src/rebalance/README.md).
    #[arg(long)]
    pub snapshot: PathBuf,
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
}

pub fn run(args: PlanArgs) -> Result<()> {
    let snapshot = input::snapshot(&args.snapshot)?;
    let mut policy = input::policy(args.policy.as_deref())?;
    let state = match &args.state {
        Some(path) => input::read_json(path, "planner state")?,
        None => {
            policy.classification.abnormal_rounds = 1;
            RebalanceState::default()
        }
    };
    let now = input::now(args.now)?;
    let (plan, next) = plan(&snapshot, &state, &policy, now);
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
            if args.state.is_none() {
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
    use crate::rebalance::{ClusterSnapshot, Policy, Timestamp};

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
