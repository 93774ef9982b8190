//! `ballast check`: the migratability report on a captured cluster snapshot or on the cluster
//! itself (`--from-cluster`: nodes, pods, PDBs and StatefulSets read from the API now, captured
//! as the leader captures them), as a table or as JSON, with an exit status for CI pipelines: 0
//! when no workload is at or above `--fail-on`, 1 when some is, 2 when the check could not run
//! (bad input, or the cluster could not be read: nothing is printed on stdout).

use std::{
    fmt::Write as _,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Result;
use clap::{Args, ValueEnum};
use k8s_openapi::api::apps::v1::StatefulSet;

use super::{
    input,
    text::{snake, table, Format},
};
use crate::{
    cluster::{
        capture::{capture, stateful_set_policies, Loads},
        client,
        read::{list_all, Objects},
    },
    rebalance::{
        migratability::{report, Finding, Movable, Report, WorkloadReport},
        ClusterSnapshot,
    },
};

/// What `--from-cluster` needs, for `--help`.
const PERMISSIONS: &str = "\
Permissions with --from-cluster: it only reads, with the credentials of the kubeconfig it is given
(an operator's or a CI job's), never with the agents' service account, whose RBAC it neither needs
nor widens: list on nodes, pods, poddisruptionbudgets.policy and statefulsets.apps in every
namespace. `kubectl auth can-i list statefulsets.apps --all-namespaces` (and so on) tells whether
a kubeconfig has them; a refusal ends the check with exit 2, naming the call.";

#[derive(Args, Debug)]
#[command(
    group(clap::ArgGroup::new("input").required(true).args(["snapshot", "from_cluster"])),
    after_help = PERMISSIONS
)]
pub struct CheckArgs {
    /// Captured cluster snapshot, JSON (format: agent/src/rebalance/README.md).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Check the cluster as it is now: nodes, pods, PodDisruptionBudgets and StatefulSets (their
    /// podManagementPolicy) from the API, read only (permissions below).
    #[arg(long)]
    pub from_cluster: bool,
    /// kubeconfig for --from-cluster (else KUBECONFIG, else the pod's service account).
    #[arg(long, value_name = "PATH", conflicts_with = "snapshot")]
    pub kubeconfig: Option<PathBuf>,
    /// Policy, TOML, as for `ballast plan` (defaults when absent): its eligibility rules decide.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Time of the check, seconds since the Unix epoch (default: now); pod ages count from it.
    #[arg(long)]
    pub now: Option<i64>,
    /// Exit 1 when a workload is at this level or worse: `blocked` (not movable now),
    /// `warning` (blocked, or movable with warnings), `never`. Excluded workloads (DaemonSets,
    /// static pods, opted out, excluded namespaces, critical priority) never count.
    #[arg(long, value_enum, default_value_t = FailOn::Blocked)]
    pub fail_on: FailOn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Blocked,
    Warning,
    Never,
}

impl FailOn {
    fn counts(self, movable: Movable) -> bool {
        match self {
            FailOn::Blocked => movable == Movable::No,
            FailOn::Warning => matches!(movable, Movable::No | Movable::WithWarnings),
            FailOn::Never => false,
        }
    }
}

/// The exit status when the check could not run.
pub const BAD_INPUT: u8 = 2;

/// How a check that ran ends: how many workloads are at or above `--fail-on`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub failing: usize,
}

impl Verdict {
    pub fn status(self) -> u8 {
        u8::from(self.failing > 0)
    }
}

pub fn run(args: CheckArgs) -> ExitCode {
    let result = execute(&args, &mut std::io::stdout().lock());
    if let Err(error) = &result {
        eprintln!("Error: {error:?}");
    }
    ExitCode::from(status(&result))
}

/// The exit status of a check: the verdict's, or [`BAD_INPUT`].
pub fn status(result: &Result<Verdict>) -> u8 {
    match result {
        Ok(verdict) => verdict.status(),
        Err(_) => BAD_INPUT,
    }
}

/// Reads the inputs, makes the report and writes it to `out` in one piece, only once everything
/// was read: a bad input writes nothing. The policy is read before the cluster is.
pub fn execute(args: &CheckArgs, out: &mut impl Write) -> Result<Verdict> {
    let policy = input::policy(args.policy.as_deref())?;
    let now = input::now(args.now)?;
    let snapshot = match &args.snapshot {
        Some(path) => input::snapshot(path)?,
        None => input::block_on(from_cluster(args.kubeconfig.as_deref()))?,
    };
    let report = report(&snapshot, &policy, now);
    let verdict = Verdict {
        failing: report
            .workloads
            .iter()
            .filter(|w| args.fail_on.counts(w.movable))
            .count(),
    };
    let text = match args.format {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Table => render(&report, args.fail_on, verdict),
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(verdict)
}

/// The cluster as the leader captures it, without loads (the report does not weigh them), and
/// with the podManagementPolicy of the StatefulSets, which the leader does not read. Objects
/// that cannot be read are left out and named on stderr, as `ballast plan` does.
async fn from_cluster(kubeconfig: Option<&Path>) -> Result<ClusterSnapshot> {
    let api = client::connect(kubeconfig).await?;
    let objects = Objects::read(&api).await?;
    let sets: Vec<StatefulSet> = list_all(&api, "statefulsets.apps").await?;
    let mut captured = capture(
        &objects.nodes,
        &objects.pods,
        &objects.pdbs,
        Loads::default(),
    );
    for problem in &captured.problems {
        eprintln!("{problem}");
    }
    stateful_set_policies(&mut captured.snapshot, &sets);
    Ok(captured.snapshot)
}

/// The report as text: a summary line, a row per workload with a line per reason, the count of
/// workloads per reason, and what `--fail-on` made of it.
pub fn render(report: &Report, fail_on: FailOn, verdict: Verdict) -> String {
    let s = &report.summary;
    let m = &s.movable;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "check at {}: {} workload(s): {} movable, {} movable with warnings, {} not movable now, {} excluded",
        report.at, s.workloads, m.yes, m.with_warnings, m.no, m.excluded
    );
    if report.workloads.is_empty() {
        let _ = writeln!(out, "\nno pods in the snapshot");
    } else {
        let _ = writeln!(out, "\nWORKLOADS");
        let rows: Vec<[String; 4]> = report.workloads.iter().map(workload_row).collect();
        let details: Vec<String> = report.workloads.iter().map(reason_lines).collect();
        let details: Vec<&str> = details.iter().map(String::as_str).collect();
        table(
            &mut out,
            ["WORKLOAD", "REPLICAS", "MOVABLE", "REASONS"],
            &rows,
            &details,
        );
    }
    if !s.reasons.is_empty() {
        let _ = writeln!(out, "\nREASONS");
        let rows: Vec<[String; 3]> = s
            .reasons
            .iter()
            .map(|c| {
                [
                    snake(&c.reason),
                    snake(&c.severity),
                    c.workloads.to_string(),
                ]
            })
            .collect();
        table(&mut out, ["REASON", "SEVERITY", "WORKLOADS"], &rows, &[]);
    }
    let _ = writeln!(
        out,
        "\n--fail-on {}: {} workload(s) at or above it, exit {}",
        snake_value(fail_on),
        verdict.failing,
        verdict.status()
    );
    out
}

fn workload_row(w: &WorkloadReport) -> [String; 4] {
    let reasons: Vec<String> = w.reasons.iter().map(|f| snake(&f.reason)).collect();
    [
        format!("{}/{}/{}", w.namespace, w.kind, w.name),
        format!("{}/{} ready", w.ready, w.pods),
        snake(&w.movable),
        reasons.join(","),
    ]
}

/// `reason (severity, n of m pods): detail`, a line each.
fn reason_lines(w: &WorkloadReport) -> String {
    let line = |f: &Finding| {
        let pods = if f.pods == w.pods {
            String::new()
        } else {
            format!(", {} of {} pods", f.pods, w.pods)
        };
        format!(
            "{} ({}{pods}): {}",
            snake(&f.reason),
            snake(&f.severity),
            f.detail
        )
    };
    let lines: Vec<String> = w.reasons.iter().map(line).collect();
    lines.join("\n")
}

/// The name clap gives a value (`blocked`).
fn snake_value(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
