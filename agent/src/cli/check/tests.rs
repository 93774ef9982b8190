//! `ballast check` on the shipped examples: what each format prints, the exit status of each
//! `--fail-on`, and bad input (a clear error naming the file, nothing on stdout, status 2).

use std::path::{Path, PathBuf};

use super::*;
use crate::rebalance::{
    fixtures::ELIGIBILITY_REASONS,
    migratability::{CheckReason, Reason, Severity},
    plan::SkipReason,
    ClusterSnapshot, Policy, Timestamp,
};

/// The `--now` the examples are captured for.
const NOW: i64 = 1_795_400_000;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

fn args(snapshot: PathBuf, format: Format, fail_on: FailOn) -> CheckArgs {
    CheckArgs {
        snapshot: Some(snapshot),
        from_cluster: false,
        kubeconfig: None,
        policy: None,
        format,
        now: Some(NOW),
        fail_on,
    }
}

/// What the check printed and its exit status.
fn run_check(args: &CheckArgs) -> (String, u8) {
    let mut out = Vec::new();
    let result = execute(args, &mut out);
    (
        String::from_utf8(out).expect("utf-8 output"),
        status(&result),
    )
}

fn json_report(args: &CheckArgs) -> Report {
    let (out, _) = run_check(args);
    serde_json::from_str(&out).expect("the JSON output is a report")
}

#[test]
fn the_migratability_example_gives_every_reason_and_every_answer() {
    let path = example("migratability.json");
    let r = json_report(&args(path.clone(), Format::Json, FailOn::Blocked));
    let answers: Vec<(String, Movable, Vec<String>)> = r
        .workloads
        .iter()
        .map(|w| {
            (
                format!("{}/{}/{}", w.namespace, w.kind, w.name),
                w.movable,
                w.reasons.iter().map(|f| snake(&f.reason)).collect(),
            )
        })
        .collect();
    use Movable::{Excluded, No, WithWarnings, Yes};
    let expected: [(&str, Movable, &[&str]); 21] = [
        (
            "batch/Job/nightly-report",
            WithWarnings,
            &["no_pdb", "job_restarts"],
        ),
        ("data/Deployment/indexer", No, &["pdb"]),
        ("data/Deployment/ingest", No, &["pinned"]),
        ("data/Deployment/report-api", No, &["min_replicas", "pdb"]),
        (
            "kube-system/DaemonSet/kube-proxy",
            Excluded,
            &["daemon_set", "system_critical", "namespace"],
        ),
        ("kube-system/Deployment/coredns", Excluded, &["namespace"]),
        (
            "kube-system/Pod/kube-apiserver-node-a",
            Excluded,
            &["mirror", "system_critical", "namespace"],
        ),
        (
            "ml/Deployment/inference",
            No,
            &["extended_resources", "pinned"],
        ),
        (
            "monitoring/DaemonSet/node-exporter",
            Excluded,
            &["daemon_set"],
        ),
        (
            "platform/Deployment/cluster-agent",
            Excluded,
            &["system_critical"],
        ),
        ("shop/Deployment/catalog", WithWarnings, &["no_pdb"]),
        ("shop/Deployment/checkout", Yes, &[]),
        ("shop/Deployment/edge-cache", WithWarnings, &["few_nodes"]),
        (
            "shop/Deployment/frontend",
            WithWarnings,
            &["no_readiness_probe"],
        ),
        (
            "shop/Deployment/legacy-web",
            WithWarnings,
            &["readiness_probe_unknown"],
        ),
        ("shop/Deployment/payments", Excluded, &["opted_out"]),
        ("shop/Deployment/recommendations", No, &["too_young"]),
        ("shop/Deployment/search", No, &["local_storage"]),
        ("shop/Pod/debug-shell", No, &["no_controller", "no_pdb"]),
        (
            "shop/StatefulSet/cart",
            WithWarnings,
            &["ordered_readiness"],
        ),
        (
            "shop/StatefulSet/sessions",
            No,
            &["not_ready", "stateful_set_unsettled"],
        ),
    ];
    let expected: Vec<(String, Movable, Vec<String>)> = expected
        .iter()
        .map(|(name, movable, reasons)| {
            (
                (*name).to_owned(),
                *movable,
                reasons.iter().map(|r| (*r).to_owned()).collect(),
            )
        })
        .collect();
    assert_eq!(answers, expected);

    // Every reason a report without planner memory can give is in the example; the one a
    // policy has to ask for shows with it.
    let mut policy = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut policy, b"[eligibility]\nallow_statefulsets = false\n")
        .expect("written");
    let mut strict = args(path, Format::Json, FailOn::Blocked);
    strict.policy = Some(policy.path().to_owned());
    let strict = json_report(&strict);
    let given: Vec<Reason> = r
        .summary
        .reasons
        .iter()
        .chain(&strict.summary.reasons)
        .map(|c| c.reason)
        .collect();
    let every = ELIGIBILITY_REASONS
        .iter()
        .filter(|r| !is_memory(r))
        .map(|r| Reason::Planner(*r))
        .chain([Reason::Planner(SkipReason::Pdb)])
        .chain(CHECK_REASONS.iter().map(|r| Reason::Check(*r)));
    for reason in every {
        assert!(given.contains(&reason), "{reason:?} not in the example");
    }
}

/// The eligibility reasons that need the planner's memory of earlier rounds: a report has none.
fn is_memory(reason: &SkipReason) -> bool {
    matches!(
        reason,
        SkipReason::InFlight | SkipReason::Cooldown | SkipReason::CameBack
    )
}

/// The reasons only the report gives.
const CHECK_REASONS: [CheckReason; 7] = [
    CheckReason::Pinned,
    CheckReason::FewNodes,
    CheckReason::NoPdb,
    CheckReason::NoReadinessProbe,
    CheckReason::ReadinessProbeUnknown,
    CheckReason::OrderedReadiness,
    CheckReason::JobRestarts,
];

#[test]
fn the_table_shows_workloads_reasons_and_the_summary() {
    let (text, status) = run_check(&args(
        example("migratability.json"),
        Format::Table,
        FailOn::Blocked,
    ));
    assert_eq!(status, 1);
    assert!(
        text.starts_with(
            "check at 1795400000: 21 workload(s): 1 movable, 6 movable with warnings, 8 not movable now, 6 excluded\n"
        ),
        "{text}"
    );
    for needle in [
        "\nWORKLOADS\nWORKLOAD ",
        "REPLICAS   MOVABLE        REASONS\n",
        "\nshop/Deployment/checkout               3/3 ready  yes\n",
        "\nshop/StatefulSet/sessions              2/3 ready  no             not_ready,stateful_set_unsettled\n",
        "\n    not_ready (blocking, 1 of 3 pods): not Ready\n",
        "\n    pdb (blocking): PodDisruptionBudget data/indexer allows 0 disruptions now\n",
        "\nREASONS\nREASON                   SEVERITY  WORKLOADS\n",
        "\nno_pdb                   warning   3\n",
        "\n--fail-on blocked: 8 workload(s) at or above it, exit 1\n",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }
}

#[test]
fn the_json_output_is_the_report() {
    let path = example("snapshot.json");
    let (text, status) = run_check(&args(path.clone(), Format::Json, FailOn::Never));
    assert_eq!(status, 0);
    let snapshot = input::snapshot(&path).expect("usable");
    let expected = report(&snapshot, &Policy::default(), Timestamp(NOW));
    let printed: Report = serde_json::from_str(&text).expect("a report");
    assert_eq!(printed, expected);
    assert!(text.ends_with("}\n"));
    // The plan example: every pod captured without its probe, so each such workload says so.
    assert!(printed.workloads.iter().all(|w| {
        w.movable == Movable::Excluded
            || w.reasons
                .iter()
                .any(|f| f.reason == Reason::Check(CheckReason::ReadinessProbeUnknown))
    }));
}

/// The example reduced to the workloads named `app`.
fn only(dir: &Path, apps: &[&str]) -> PathBuf {
    let mut snapshot = input::snapshot(&example("migratability.json")).expect("usable");
    let keep = |labels: &std::collections::BTreeMap<String, String>| {
        labels
            .get("app")
            .is_some_and(|a| apps.contains(&a.as_str()))
    };
    snapshot.pods.retain(|p| keep(&p.labels));
    snapshot.pdbs.retain(|p| keep(&p.selector.match_labels));
    let path = dir.join(format!("{}.json", apps.join("-")));
    let text = serde_json::to_string(&snapshot).expect("serialises");
    std::fs::write(&path, text).expect("written");
    path
}

#[test]
fn the_exit_status_follows_fail_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: [(&[&str], [u8; 3]); 5] = [
        // blocked, warning, never
        (&["checkout"], [0, 0, 0]),
        (&["checkout", "catalog"], [0, 1, 0]),
        (&["checkout", "search"], [1, 1, 0]),
        // Excluded workloads never fail a check.
        (&["checkout", "kube-proxy", "payments"], [0, 0, 0]),
        (&[], [0, 0, 0]),
    ];
    for (apps, expected) in cases {
        let path = only(dir.path(), apps);
        let statuses = [FailOn::Blocked, FailOn::Warning, FailOn::Never]
            .map(|fail_on| run_check(&args(path.clone(), Format::Table, fail_on)).1);
        assert_eq!(statuses, expected, "{apps:?}");
    }
    let (text, _) = run_check(&args(only(dir.path(), &[]), Format::Table, FailOn::Blocked));
    assert!(text.contains("\nno pods in the snapshot\n"), "{text}");
    // The whole example, each level.
    let whole = example("migratability.json");
    let statuses = [FailOn::Blocked, FailOn::Warning, FailOn::Never]
        .map(|fail_on| run_check(&args(whole.clone(), Format::Json, fail_on)).1);
    assert_eq!(statuses, [1, 1, 0]);
}

#[test]
fn bad_input_names_the_file_prints_nothing_and_exits_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, r#"{"nodes": [], "pods": [{"name": "p"}]}"#).expect("written");
    let duplicate = dir.path().join("duplicate.json");
    let mut snapshot: ClusterSnapshot =
        input::read_json(&example("migratability.json"), "cluster snapshot").expect("parses");
    snapshot.nodes.push(snapshot.nodes[0].clone());
    std::fs::write(
        &duplicate,
        serde_json::to_string(&snapshot).expect("serialises"),
    )
    .expect("written");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[eligibility]\nmin_replicas = \"two\"\n").expect("written");
    let with_policy = |path: PathBuf| CheckArgs {
        policy: Some(path),
        ..args(example("migratability.json"), Format::Table, FailOn::Never)
    };
    let cases = [
        (
            args(broken, Format::Table, FailOn::Never),
            vec![
                "broken.json is not a valid cluster snapshot",
                "missing field",
            ],
        ),
        (
            args(dir.path().join("absent.json"), Format::Json, FailOn::Never),
            vec!["cannot read the cluster snapshot file", "absent.json"],
        ),
        (
            args(duplicate, Format::Json, FailOn::Never),
            vec![
                "duplicate.json is not a usable cluster snapshot",
                "node \"node-a\" appears twice",
            ],
        ),
        (
            with_policy(policy),
            vec!["policy.toml is not a usable policy", "min_replicas"],
        ),
    ];
    for (args, needles) in cases {
        let mut out = Vec::new();
        let result = execute(&args, &mut out);
        assert_eq!(status(&result), BAD_INPUT);
        assert!(
            out.is_empty(),
            "printed {:?}",
            String::from_utf8_lossy(&out)
        );
        let text = format!("{:#}", result.expect_err("bad input"));
        for needle in needles {
            assert!(text.contains(needle), "{needle:?} missing in {text}");
        }
    }
}

#[test]
fn reasons_print_under_their_workload_with_the_pods_they_concern() {
    let mut r = json_report(&args(
        example("migratability.json"),
        Format::Json,
        FailOn::Blocked,
    ));
    r.workloads.retain(|w| w.name == "sessions");
    let w = &r.workloads[0];
    assert_eq!(
        reason_lines(w),
        "not_ready (blocking, 1 of 3 pods): not Ready\nstateful_set_unsettled (blocking): StatefulSet sessions has 2 of 3 pods Ready: one at a time"
    );
    assert_eq!(w.reasons[0].severity, Severity::Blocking);
    assert_eq!(snake_value(FailOn::Warning), "warning");
}

#[test]
fn the_readme_lists_every_reason_with_its_severity_in_report_order() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let section = readme
        .split("## Migratability report (`ballast check`)")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has the section");
    let listed: Vec<(String, String)> = section
        .lines()
        .filter_map(|line| {
            let mut cells = line.strip_prefix("| `")?.split(" | ");
            let reason = cells.next()?.strip_suffix('`')?;
            Some((reason.to_owned(), cells.next()?.to_owned()))
        })
        .collect();
    let mut reasons: Vec<Reason> = ELIGIBILITY_REASONS
        .iter()
        .filter(|r| !is_memory(r))
        .map(|r| Reason::Planner(*r))
        .chain([Reason::Planner(SkipReason::Pdb)])
        .chain(CHECK_REASONS.iter().map(|r| Reason::Check(*r)))
        .collect();
    reasons.sort_by_key(|r| (r.severity(), *r));
    let expected: Vec<(String, String)> = reasons
        .iter()
        .map(|r| (snake(r), snake(&r.severity())))
        .collect();
    assert_eq!(listed, expected);
}

#[test]
fn the_input_is_a_snapshot_or_the_cluster_never_both() {
    use clap::{Args, FromArgMatches};
    let parse = |argv: &[&str]| {
        let command = CheckArgs::augment_args(clap::Command::new("check"));
        command
            .try_get_matches_from(std::iter::once("check").chain(argv.iter().copied()))
            .map_err(|e| e.kind())
            .and_then(|m| CheckArgs::from_arg_matches(&m).map_err(|e| e.kind()))
    };
    use clap::error::ErrorKind::{ArgumentConflict, MissingRequiredArgument};
    let cluster = parse(&["--from-cluster", "--kubeconfig", "k"]).expect("parses");
    assert!(cluster.from_cluster && cluster.snapshot.is_none());
    assert_eq!(cluster.kubeconfig, Some(PathBuf::from("k")));
    let file = parse(&["--snapshot", "s.json"]).expect("parses");
    assert_eq!((file.from_cluster, file.kubeconfig), (false, None));
    assert_eq!(parse(&[]).err(), Some(MissingRequiredArgument));
    assert_eq!(
        parse(&["--snapshot", "s.json", "--from-cluster"]).err(),
        Some(ArgumentConflict)
    );
    assert_eq!(
        parse(&["--snapshot", "s.json", "--kubeconfig", "k"]).err(),
        Some(ArgumentConflict)
    );
}
