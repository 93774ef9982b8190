//! The agents' RBAC is exactly what they do. A multi-agent cluster against the API test double
//! goes down every API path the agent has, and the calls its identities made (the double's
//! request log: verb, group, resource, namespace, name of every request, refused ones too) are
//! held against the RBAC the production overlay renders, the ClusterRole and Role bound to the
//! DaemonSet's ServiceAccount: every call must be allowed by a rule, and every verb on every
//! resource a rule grants must have been used.
//!
//! The paths, by where the code makes them:
//! - `cli/agent/cluster.rs`, start-up probe: get the Lease;
//! - `cluster/names.rs`, every agent: list and watch pods (field selector `spec.nodeName`);
//! - `cluster/election`: get the Lease, create it (the first agent), update it (renewals, the
//!   takeover after the leader is killed);
//! - `cluster/view.rs`, the leader: list and watch nodes, pods, PDBs;
//! - `cluster/memory.rs`: get the state ConfigMap (each new term), create it, update it;
//! - `cluster/execute.rs`: create pods/eviction (one of them refused with a 429), create Events
//!   (core/v1) on the evicted pod and on its node;
//! - `cluster/taints.rs`: patch nodes (the taint added, then removed), get a node after a 409;
//! - `cluster/locate.rs`: a follower relaying a webhook call gets the leader's pod (its IP).

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use ballast_tests::{
    apiserver::{RequestRecord, Scope},
    cluster::{is_lease_write, nodes, relievable_hot_node, Cluster, ClusterSpec, NAMESPACE},
    deploy::{DeployCopy, Tools},
    eventually,
    rbac::{grants_of_service_account, Call, Mismatch},
};
use serde_json::Value;

const ALERTS_TOKEN: &str = "rbac-test-alerts-token-0123456789";

/// The ServiceAccount the DaemonSet runs as: (namespace, name).
fn agent_service_account(objects: &[Value]) -> Result<(String, String)> {
    let daemonset = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .context("no DaemonSet in the rendered objects")?;
    let namespace = daemonset["metadata"]["namespace"]
        .as_str()
        .context("the DaemonSet has no namespace")?;
    let account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .context("the DaemonSet names no serviceAccountName")?;
    Ok((namespace.to_string(), account.to_string()))
}

/// The calls of `identities`, with the test cluster's agent namespace read as the install's.
fn calls_of(log: &[RequestRecord], identities: &[String], install_namespace: &str) -> Vec<Call> {
    log.iter()
        .filter(|r| identities.contains(&r.identity))
        .filter_map(|r| Call::of(&r.info))
        .map(|mut call| {
            if call.namespace.as_deref() == Some(NAMESPACE) {
                call.namespace = Some(install_namespace.to_string());
            }
            call
        })
        .collect()
}

#[test]
fn the_agents_rbac_allows_every_call_they_make_and_grants_nothing_more() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let copy = DeployCopy::new(true)?;
    let objects = tools.kustomize_build(&copy.path("overlays/production"))?;
    let (install_namespace, account) = agent_service_account(&objects)?;
    let grants = grants_of_service_account(&objects, &install_namespace, &account)?;
    ensure!(
        !grants.is_empty(),
        "nothing is bound to ServiceAccount {install_namespace}/{account}"
    );

    let secrets = tempfile::tempdir()?;
    let alerts_token = secrets.path().join("alerts-token");
    std::fs::write(&alerts_token, format!("{ALERTS_TOKEN}\n"))?;
    let mut spec = ClusterSpec::new(
        nodes(3, 4),
        relievable_hot_node(&["n1", "n2", "n1", "n2", "n1"]),
    );
    spec.extra_args = vec![
        "--alerts-token-file".into(),
        alerts_token.display().to_string(),
    ];
    let mut cluster = Cluster::start(spec)?;
    let faults = cluster.api.faults();
    // The first eviction is refused as a budget refuses it, and the first taint patch meets a
    // newer resourceVersion (the leader then reads the node again).
    faults.fail_next(Scope::all().and_resource("pods/eviction"), 1, 429)?;
    faults.fail_next(Scope::all().and_resource("nodes").writes(), 1, 409)?;

    cluster.wait_taint_comes_and_goes("n0", Duration::from_secs(45))?;
    let log = cluster.api.write_log();
    ensure!(
        log.iter().any(|r| r.kind == "Eviction" && r.status == 429),
        "no eviction met the injected 429"
    );
    ensure!(
        log.iter().any(|r| r.kind == "Eviction" && r.status == 201),
        "nothing was evicted"
    );

    // A webhook call to a follower is relayed to the leader (an empty notification: nothing
    // to act on, but the follower has to find the leader's pod all the same).
    let leader = cluster.single_leader()?;
    let follower = cluster
        .agents
        .iter()
        .find(|a| a.identity != leader)
        .context("a follower")?;
    let relayed = ureq::post(&follower.url("/v1/alerts"))
        .header("Content-Type", "application/json")
        .header("Authorization", &format!("Bearer {ALERTS_TOKEN}"))
        .config()
        .http_status_as_error(false)
        .build()
        .send(r#"{"version": "4", "status": "resolved", "alerts": []}"#)
        .with_context(|| format!("POST /v1/alerts to {}", follower.identity))?;
    ensure!(
        relayed.status().is_success(),
        "{} answered {} to a webhook call it should relay to {leader}",
        follower.identity,
        relayed.status()
    );

    // Failover: the successor reads the Lease, takes it over and finishes a round.
    let killed_at = cluster.agent_mut(&leader)?.kill()?;
    let successor = eventually(
        cluster.timings.failover_bound() + Duration::from_secs(5),
        || {
            Ok(cluster
                .api
                .write_log()
                .into_iter()
                .find(|r| is_lease_write(r) && r.identity != leader && r.wall >= killed_at))
        },
    )
    .with_context(|| format!("nobody took over from {leader}\n{}", cluster.logs(30)))?
    .identity;
    let took_over = SystemTime::now();
    eventually(Duration::from_secs(10), || {
        let finished = cluster
            .agent(&successor)?
            .counter("ballast_last_round_timestamp_seconds", &[])?;
        let since_epoch = took_over.duration_since(SystemTime::UNIX_EPOCH)?;
        Ok((finished >= since_epoch.as_secs_f64()).then_some(()))
    })
    .with_context(|| format!("{successor} finished no round\n{}", cluster.logs(30)))?;

    let identities: Vec<String> = cluster.agents.iter().map(|a| a.identity.clone()).collect();
    let calls = calls_of(&cluster.api.request_log(), &identities, &install_namespace);
    let mismatch = Mismatch::of(&grants, &calls);
    ensure!(
        mismatch.is_empty(),
        "deploy/base/rbac.yaml (ServiceAccount {install_namespace}/{account}) does not match what the agents did:\n{mismatch}"
    );
    Ok(())
}
