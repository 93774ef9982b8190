//! Alert-driven rebalancing across real agent processes and the API test double: a webhook call
//! made to a follower reaches the leader (relayed), which acts at once, off its round interval:
//! a targeted round relieves the alerted node although the hysteresis would not have made it a
//! source yet; an evacuation drains a node one pod at a time, tainted while it lasts; a resolved
//! alert ends it; an unauthenticated call changes nothing.
//!
//! The policy makes scheduled rounds inert (a node needs 10,000 abnormal rounds to become a
//! source) and rounds come every 10 minutes after the first: every eviction here is an alert's.

use std::time::{Duration, SystemTime};

use anyhow::{ensure, Context, Result};
use ballast_tests::{
    apiserver::{fixtures::Workload, Kind, WriteRecord},
    cluster::{
        is_eviction, nodes, sustained_hot, with_demand, workload_of, Cluster, ClusterAgent,
        ClusterSpec, HOT_TAINT, TEST_POLICY,
    },
    eventually,
};
use serde_json::{json, Value};

const ALERTS_TOKEN: &str = "e2e-alerts-token-0123456789";

/// Long enough that no scheduled round but the first falls within a test.
const ROUND_INTERVAL: Duration = Duration::from_secs(600);

fn policy() -> String {
    TEST_POLICY.replace("abnormal_rounds = 2", "abnormal_rounds = 10000")
}

/// n0 hot (two movable workloads over an immovable hog), n1 cool with two single-replica
/// workloads, n2 and n3 empty; every agent takes webhook calls.
fn start() -> Result<(Cluster, tempfile::TempDir)> {
    let secrets = tempfile::tempdir()?;
    let token = secrets.path().join("alerts-token");
    std::fs::write(&token, format!("{ALERTS_TOKEN}\n"))?;
    let mut objects = sustained_hot("n0", 3.0, 2, 0.6);
    for name in ["a", "b"] {
        let workload =
            Workload::replica_set("apps", &format!("cool-{name}")).requests("100m", "64Mi");
        objects.push(with_demand(workload.pod(0, "n1"), 0.2));
    }
    let mut spec = ClusterSpec::new(nodes(4, 4), objects);
    spec.policy = policy();
    spec.timings.round_interval = ROUND_INTERVAL;
    spec.extra_args = vec![
        "--alerts-token-file".into(),
        token.display().to_string(),
        "--evacuation-pace".into(),
        "1s".into(),
    ];
    Ok((Cluster::start(spec)?, secrets))
}

fn alert(
    status: &str,
    alertname: &str,
    node: &str,
    fingerprint: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut labels = json!({"alertname": alertname, "node": node, "severity": "warning"});
    for (key, value) in extra {
        labels[*key] = json!(value);
    }
    json!({
        "status": status,
        "labels": labels,
        "annotations": {},
        "startsAt": "2026-12-01T19:00:00Z",
        "endsAt": if status == "resolved" { "2026-12-01T19:30:00Z" } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}

fn notification(alerts: Vec<Value>) -> Value {
    let firing = alerts.iter().any(|a| a["status"] == "firing");
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"test\"}",
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": "ballast",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

/// POSTs as Alertmanager does; the status, the `X-Ballast-Leader` header and the body.
fn post(
    agent: &ClusterAgent,
    token: Option<&str>,
    payload: &Value,
) -> Result<(u16, Option<String>, Value)> {
    let mut request =
        ureq::post(&agent.url("/v1/alerts")).header("Content-Type", "application/json");
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request
        .config()
        .http_status_as_error(false)
        .build()
        .send(payload.to_string().as_bytes())
        .with_context(|| format!("POST /v1/alerts to {}", agent.identity))?;
    let status = response.status().as_u16();
    let leader = response
        .headers()
        .get("x-ballast-leader")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Ok((
        status,
        leader,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    ))
}

/// Successful evictions of pods of the workloads named `workloads` (pod names `WORKLOAD-...`).
fn evictions_from<'a>(log: &'a [WriteRecord], workloads: &[&str]) -> Vec<&'a WriteRecord> {
    log.iter()
        .filter(|r| is_eviction(r) && r.status == 201)
        .filter(|r| workloads.iter().any(|w| workload_of(&r.name) == *w))
        .collect()
}

fn tainted(cluster: &Cluster, node: &str) -> bool {
    cluster
        .api
        .get(Kind::Node, "", node)
        .and_then(|n| n["spec"]["taints"].as_array().cloned())
        .is_some_and(|t| t.iter().any(|t| t["key"] == HOT_TAINT))
}

/// The leader's rounds (newest first) triggered by `trigger`.
fn rounds(leader: &ClusterAgent, trigger: &str) -> Result<Vec<Value>> {
    let decisions = leader.decisions()?;
    Ok(decisions["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["trigger"] == trigger)
        .cloned()
        .collect())
}

#[test]
fn alerts_reach_the_leader_through_any_agent_and_act_off_the_round_interval() -> Result<()> {
    let (mut cluster, _secrets) = start()?;
    let leader = cluster.wait_single_leader(Duration::from_secs(20))?;
    let follower = cluster
        .agents
        .iter()
        .find(|a| a.identity != leader)
        .context("a follower")?
        .identity
        .clone();
    // The first scheduled round has run and moved nothing (hysteresis far away).
    eventually(Duration::from_secs(10), || {
        Ok(rounds(cluster.agent(&leader)?, "schedule")?
            .first()
            .cloned())
    })?;
    ensure!(
        !cluster.api.write_log().iter().any(is_eviction),
        "a scheduled round evicted: the test's premise fails"
    );

    // No token, or a wrong one: 401, nothing queued, nothing written.
    let writes_before = cluster.api.write_log().len();
    let firing = notification(vec![alert(
        "firing",
        "BallastNodeCPUContention",
        "n0",
        "aa01",
        &[],
    )]);
    for token in [None, Some("wrong-token")] {
        let (status, _, body) = post(cluster.agent(&follower)?, token, &firing)?;
        ensure!(status == 401, "token {token:?}: {status} {body}");
    }
    let (status, _, _) = post(cluster.agent(&leader)?, None, &firing)?;
    ensure!(status == 401);
    let rejected = cluster
        .agent(&leader)?
        .counter("ballast_alerts_received_total", &[("result", "rejected")])?;
    ensure!(rejected == 1.0, "leader counted {rejected} rejected calls");
    std::thread::sleep(Duration::from_secs(2));
    let since: Vec<WriteRecord> = cluster.api.write_log()[writes_before..]
        .iter()
        .filter(|r| r.kind != "Lease")
        .cloned()
        .collect();
    ensure!(
        since.is_empty(),
        "an unauthenticated call led to writes: {since:?}"
    );

    // Through a follower: relayed, accepted by the leader, acted on within seconds.
    let sent = SystemTime::now();
    let (status, named, body) = post(cluster.agent(&follower)?, Some(ALERTS_TOKEN), &firing)?;
    ensure!(status == 202, "{status} {body}");
    ensure!(
        named.as_deref() == Some(leader.as_str()),
        "X-Ballast-Leader {named:?}"
    );
    ensure!(body["accepted"] == 1, "{body}");
    let hot_pods = ["w0", "w1"];
    let first = eventually(Duration::from_secs(10), || {
        Ok(evictions_from(&cluster.api.write_log(), &hot_pods)
            .first()
            .map(|r| (*r).clone()))
    })
    .with_context(|| format!("no eviction from n0 after the alert\n{}", cluster.logs(30)))?;
    ensure!(first.identity == leader, "evicted by {}", first.identity);
    ensure!(first.wall >= sent, "an eviction before the alert");
    let targeted = rounds(cluster.agent(&leader)?, "alert")?;
    let round = targeted
        .last()
        .context("no alert-triggered round recorded")?;
    ensure!(
        round["alerts"]["relieve"]["n0"][0] == "BallastNodeCPUContention",
        "{round}"
    );
    ensure!(round["alerts"]["off_schedule"] == true, "{round}");
    let evicted = cluster
        .agent(&leader)?
        .counter("ballast_evictions_total", &[("result", "evicted")])?;
    ensure!(
        evicted >= 1.0,
        "ballast_evictions_total{{result=\"evicted\"}} = {evicted}"
    );
    ensure!(
        cluster
            .agent(&follower)?
            .counter("ballast_alerts_received_total", &[("result", "forwarded")])?
            == 1.0
    );
    ensure!(
        cluster
            .agent(&leader)?
            .counter("ballast_alerts_received_total", &[("result", "accepted")])?
            == 1.0
    );

    // Alertmanager re-sending it (to every agent): nothing more is done for it.
    for agent in &cluster.agents {
        let (status, _, body) = post(agent, Some(ALERTS_TOKEN), &firing)?;
        ensure!(
            status == 202 && body["duplicate"] == 1,
            "{}: {status} {body}",
            agent.identity
        );
    }

    // Evacuating n1: one pod at a time, n1 tainted meanwhile; resolving ends it.
    let disk = alert(
        "firing",
        "NodeDiskFailing",
        "n1",
        "bb02",
        &[("ballast_action", "evacuate")],
    );
    let (status, _, body) = post(
        cluster.agent(&follower)?,
        Some(ALERTS_TOKEN),
        &notification(vec![disk]),
    )?;
    ensure!(status == 202 && body["accepted"] == 1, "{status} {body}");
    let cool_pods = ["cool-a", "cool-b"];
    eventually(Duration::from_secs(20), || {
        Ok((evictions_from(&cluster.api.write_log(), &cool_pods).len() == 2).then_some(()))
    })
    .with_context(|| format!("n1 not drained\n{}", cluster.logs(30)))?;
    ensure!(tainted(&cluster, "n1"), "n1 not tainted while drained");
    let log = cluster.api.write_log();
    let drained = evictions_from(&log, &cool_pods);
    let gap = drained[1].at.saturating_sub(drained[0].at);
    ensure!(
        gap >= Duration::from_millis(300),
        "two pods left n1 {gap:?} apart: not one at a time"
    );
    let paced = rounds(cluster.agent(&leader)?, "evacuation")?;
    for round in rounds(cluster.agent(&leader)?, "alert")?
        .iter()
        .chain(&paced)
    {
        let from_n1 = round["evictions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["source"] == "n1")
            .count();
        ensure!(
            from_n1 <= 1,
            "one round moved {from_n1} pods off n1: {round}"
        );
    }
    ensure!(
        cluster.agent(&leader)?.counter(
            "ballast_evictions_total",
            &[("result", "evicted"), ("resource", "evacuation")]
        )? == 2.0
    );

    let resolved = alert(
        "resolved",
        "NodeDiskFailing",
        "n1",
        "bb02",
        &[("ballast_action", "evacuate")],
    );
    let (status, _, body) = post(
        cluster.agent(&leader)?,
        Some(ALERTS_TOKEN),
        &notification(vec![resolved]),
    )?;
    ensure!(status == 202, "{status} {body}");
    eventually(Duration::from_secs(10), || {
        Ok((!tainted(&cluster, "n1")).then_some(()))
    })
    .context("the taint stayed on n1 after its alert resolved")?;
    ensure!(
        cluster.single_leader()? == leader,
        "leadership moved during the test"
    );
    Ok(())
}
