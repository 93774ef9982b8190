//! `ballast check --from-cluster` end to end: the real binary reads a cluster from the API test
//! double (nodes, pods, PDBs, StatefulSets) with an operator's kubeconfig and reports every
//! workload: one for each reason the issue names (no PDB, single replica, local storage, no
//! readiness probe, node affinity pinning it, GPU, StatefulSet with ordered readiness) beside
//! movable ones, in JSON and as a table, with the exit status CI pipelines read. It only lists,
//! exactly what its --help says it needs; a kubeconfig that cannot be read, credentials the
//! server refuses and a server that is gone each give a clear error, nothing on stdout and exit 2.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use ballast_tests::{
    apiserver::{fixtures, fixtures::Workload, ApiServer, ApiServerConfig, Kind},
    ballast_bin, eventually,
};
use serde_json::{json, Value};

/// The check's `--now`: the pods started long before (2026-01-01), so none is too young.
const NOW: &str = "1795400000";
const STARTED: &str = "2026-01-01T00:00:00Z";
const OPERATOR: &str = "operator";

/// A double that knows one identity, the operator's.
fn operators_api() -> Result<ApiServer> {
    ApiServer::start(ApiServerConfig {
        identities: Some(BTreeSet::from([OPERATOR.to_string()])),
        ..ApiServerConfig::default()
    })
}

fn check(kubeconfig: &Path, args: &[&str]) -> Result<Output> {
    Command::new(ballast_bin()?)
        .args(["check", "--from-cluster", "--kubeconfig"])
        .arg(kubeconfig)
        .args(["--now", NOW])
        .args(args)
        .env_remove("KUBECONFIG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .context("running ballast check")
}

/// Replica `index` of `workload` on `node`, started at [`STARTED`], with a readiness probe.
fn pod(workload: &Workload, index: usize, node: &str) -> Value {
    let mut pod = workload.pod(index, node);
    pod["spec"]["containers"][0]["readinessProbe"] =
        json!({"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5});
    pod["status"]["startTime"] = json!(STARTED);
    pod
}

/// Each workload's pods (and StatefulSets), and a PDB for all but `catalog`.
fn cluster() -> Vec<Value> {
    let mut objects = Vec::new();
    let mut add = |workload: &Workload, pods: Vec<Value>, pdb: bool| {
        if pdb {
            objects.push(workload.pdb_max_unavailable(&workload.name, json!(1)));
        }
        objects.extend(pods);
    };
    let two = |w: &Workload| vec![pod(w, 0, "n0"), pod(w, 1, "n1")];

    let web = Workload::replica_set("shop", "web");
    add(&web, two(&web), true);
    let catalog = Workload::replica_set("shop", "catalog");
    add(&catalog, two(&catalog), false);
    let singleton = Workload::replica_set("shop", "singleton");
    add(&singleton, vec![pod(&singleton, 0, "n2")], true);

    let search = Workload::replica_set("shop", "search");
    let mut pods = two(&search);
    for pod in &mut pods {
        pod["spec"]["volumes"] = json!([{"name": "index", "emptyDir": {}}]);
    }
    add(&search, pods, true);

    let frontend = Workload::replica_set("shop", "frontend");
    let mut pods = two(&frontend);
    for pod in &mut pods {
        pod["spec"]["containers"][0]
            .as_object_mut()
            .map(|c| c.remove("readinessProbe"));
    }
    add(&frontend, pods, true);

    let ingest = Workload::replica_set("shop", "ingest");
    let mut pods = vec![pod(&ingest, 0, "n0"), pod(&ingest, 1, "n0")];
    for pod in &mut pods {
        pod["spec"]["affinity"] = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n0"]}]}
            ]}
        }});
    }
    add(&ingest, pods, true);

    let inference = Workload::replica_set("shop", "inference");
    let mut pods = vec![pod(&inference, 0, "n1"), pod(&inference, 1, "n2")];
    for pod in &mut pods {
        let resources = &mut pod["spec"]["containers"][0]["resources"];
        resources["requests"]["nvidia.com/gpu"] = json!("1");
        resources["limits"] = json!({"nvidia.com/gpu": "1"});
    }
    add(&inference, pods, true);

    // The policy of one is left to the API server's default (OrderedReady).
    for (name, policy) in [("db", None), ("cache", Some("Parallel"))] {
        let set = Workload::stateful_set("shop", name);
        let mut owned = two(&set);
        owned.push(set.stateful_set_object(2, policy));
        add(&set, owned, true);
    }
    objects
}

/// (workload, movable, reasons) of a JSON report.
fn answers(report: &Value) -> Vec<(String, String, Vec<String>)> {
    report["workloads"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                format!(
                    "{}/{}/{}",
                    text(&w["namespace"]),
                    text(&w["kind"]),
                    text(&w["name"])
                ),
                text(&w["movable"]),
                w["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| text(&f["reason"]))
                    .collect(),
            )
        })
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_cluster_is_checked_from_the_api_with_one_workload_per_reason() -> Result<()> {
    let api = operators_api()?;
    for name in ["n0", "n1", "n2"] {
        let mut node = fixtures::node(name, "4", "16Gi");
        if name != "n0" {
            node["status"]["allocatable"]["nvidia.com/gpu"] = json!("1");
        }
        api.apply(node)?;
    }
    for object in cluster() {
        api.apply(object)?;
    }
    // The disruption controller stand-in has counted every budget's pods.
    eventually(Duration::from_secs(10), || {
        let pdbs = api.list(Kind::PodDisruptionBudget);
        Ok(pdbs
            .iter()
            .all(|p| p.pointer("/status/disruptionsAllowed") == Some(&json!(1)))
            .then_some(()))
    })
    .context("the PDBs never allowed a disruption")?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = api.kubeconfig(dir.path(), OPERATOR)?;

    let output = check(&kubeconfig, &["--format", "json"])?;
    ensure!(
        output.status.code() == Some(1),
        "exit {:?} (blocked workloads: 1 expected)\n{}",
        output.status.code(),
        stderr(&output)
    );
    let report: Value = serde_json::from_str(&stdout(&output))
        .with_context(|| format!("not a JSON report:\n{}", stdout(&output)))?;
    let expected: [(&str, &str, &[&str]); 9] = [
        ("shop/ReplicaSet/catalog", "with_warnings", &["no_pdb"]),
        (
            "shop/ReplicaSet/frontend",
            "with_warnings",
            &["no_readiness_probe"],
        ),
        ("shop/ReplicaSet/inference", "no", &["extended_resources"]),
        ("shop/ReplicaSet/ingest", "no", &["pinned"]),
        ("shop/ReplicaSet/search", "no", &["local_storage"]),
        ("shop/ReplicaSet/singleton", "no", &["min_replicas"]),
        ("shop/ReplicaSet/web", "yes", &[]),
        ("shop/StatefulSet/cache", "yes", &[]),
        (
            "shop/StatefulSet/db",
            "with_warnings",
            &["ordered_readiness"],
        ),
    ];
    let expected: Vec<(String, String, Vec<String>)> = expected
        .iter()
        .map(|(w, m, r)| {
            (
                w.to_string(),
                m.to_string(),
                r.iter().map(|r| r.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(answers(&report), expected);
    // db's policy came from its StatefulSet (defaulted by the server), not from not knowing.
    let db = &report["workloads"][8]["reasons"][0]["detail"];
    assert!(
        db.as_str()
            .is_some_and(|d| d.starts_with("podManagementPolicy OrderedReady:")),
        "{db}"
    );
    assert_eq!(
        report["summary"]["movable"],
        json!({"yes": 2, "with_warnings": 3, "no": 4, "excluded": 0})
    );
    assert_eq!(report["at"], json!(1_795_400_000));

    let table = check(&kubeconfig, &[])?;
    assert_eq!(table.status.code(), Some(1), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(
        text.starts_with("check at 1795400000: 9 workload(s): 2 movable, 3 movable with warnings, 4 not movable now, 0 excluded\n"),
        "{text}"
    );
    assert!(
        text.contains("\n--fail-on blocked: 4 workload(s) at or above it, exit 1\n"),
        "{text}"
    );
    let never = check(&kubeconfig, &["--fail-on", "never"])?;
    assert_eq!(never.status.code(), Some(0), "{}", stderr(&never));

    // It only read, and only what --help says it needs.
    let calls: BTreeSet<(String, String, String, Option<String>, u16)> = api
        .request_log()
        .into_iter()
        .filter(|r| r.info.resource_request)
        .map(|r| {
            let i = r.info;
            (i.verb, i.group, i.resource, i.namespace, r.status)
        })
        .collect();
    let list = |group: &str, resource: &str| {
        (
            "list".to_string(),
            group.to_string(),
            resource.to_string(),
            None,
            200,
        )
    };
    assert_eq!(
        calls,
        BTreeSet::from([
            list("", "nodes"),
            list("", "pods"),
            list("policy", "poddisruptionbudgets"),
            list("apps", "statefulsets"),
        ])
    );
    let help = Command::new(ballast_bin()?)
        .args(["check", "--help"])
        .output()?;
    let help = stdout(&help).replace('\n', " ");
    assert!(
        help.contains(
            "list on nodes, pods, poddisruptionbudgets.policy and statefulsets.apps in every namespace"
        ),
        "{help}"
    );
    Ok(())
}

#[test]
fn a_cluster_that_cannot_be_read_is_a_clear_error_and_exit_2() -> Result<()> {
    let api = operators_api()?;
    let dir = tempfile::tempdir()?;
    let garbage = dir.path().join("garbage.kubeconfig");
    std::fs::write(&garbage, "clusters: [this is not\n")?;
    let refused = api.kubeconfig(dir.path(), "intruder")?;
    let gone = {
        let other = ApiServer::start(ApiServerConfig::default())?;
        let gone_dir = dir.path().join("gone");
        std::fs::create_dir(&gone_dir)?;
        other.kubeconfig(&gone_dir, OPERATOR)?
    };
    let missing = dir.path().join("absent.kubeconfig");
    let cases = [
        (
            &missing,
            vec![
                "cannot read the kubeconfig".to_string(),
                missing.display().to_string(),
            ],
        ),
        (
            &garbage,
            vec![
                "cannot read the kubeconfig".to_string(),
                garbage.display().to_string(),
            ],
        ),
        (
            &refused,
            vec![
                "listing nodes".to_string(),
                "refused our credentials (401)".to_string(),
                refused.display().to_string(),
            ],
        ),
        (
            &gone,
            vec![
                "listing nodes".to_string(),
                "cannot reach the API server".to_string(),
            ],
        ),
    ];
    for (kubeconfig, needles) in cases {
        let output = check(kubeconfig, &["--format", "json"])?;
        let text = stderr(&output);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{}: {text}",
            kubeconfig.display()
        );
        assert!(output.stdout.is_empty(), "printed {}", stdout(&output));
        for needle in needles {
            assert!(text.contains(&needle), "{needle:?} missing in {text}");
        }
    }
    Ok(())
}
