//! End to end with real components: Debian's Prometheus and Alertmanager on loopback, three
//! real agents in cluster mode against the API double, and a workload that contends for this
//! host's CPUs. The agent of node `n0` measures this host with its kernel programs; the
//! workload runs in cgroups the test creates beneath its own: CPU hogs (more busy threads than
//! CPUs, under a CFS quota) in a cgroup laid out as the kubelet lays out the container of pod
//! `apps/hog-00000` on `n0`, a reader forced into memory reclaim by its limit, and TCP/UDP
//! traffic. The agents of `n1` and `n2` serve the harness's load files. Then:
//!
//! 1. a webhook call without the token (or with a wrong one) is refused with 401 by the leader
//!    and by a follower, counted as `rejected`, and nothing happens in the cluster;
//! 2. Prometheus scrapes the agents with the shipped rules, the CPU contention alert of `n0`
//!    fires (the shipped rule, its `for:` shortened), Alertmanager delivers it to every agent's
//!    webhook with the token, and the leader evicts the hog pod off `n0` through the API double
//!    in a round the alert started;
//! 3. every Grafana dashboard query and every recording rule returns data, every dashboard
//!    variable has values, and the workload's own series carry what it did.
//!
//! The policy keeps every node from becoming a source by itself (a thousand abnormal rounds
//! first), so an eviction in this test is one an alert asked for.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use ballast_tests::{
    apiserver::{fixtures::Workload, Kind, WriteRecord},
    cluster::{
        is_eviction, with_demand, Cluster, ClusterAgent, ClusterSpec, NodeSpec, STATE_CONFIGMAP,
        TEST_POLICY,
    },
    deploy::{
        dashboard_queries, dashboard_variables, default_variables, expand, recording_rules,
        rule_groups,
    },
    eventually,
    monitoring::{rules_with_shorter_for, Alertmanager, Programs, Prometheus, ScrapeTarget},
    privileged, uncached_file, wait_line, TestCgroup,
};
use serde_json::{json, Value};

/// The node whose agent measures this host.
const NODE: &str = "n0";
/// The alert the test makes fire (the shipped rule), and how long it waits here.
const ALERT: &str = "BallastNodeCPUContention";
const ALERT_FOR: &str = "2s";
/// The token Alertmanager presents on /v1/alerts.
const ALERTS_TOKEN: &str = "e2e-alerts-token";
/// Scrape and rule evaluation interval.
const INTERVAL: &str = "1s";

/// The pod whose container the CPU hogs run in, and its cgroup's ids.
const HOG_NAMESPACE: &str = "apps";
const HOG_WORKLOAD: &str = "hog";
const HOG_UID: &str = "00000000-e2e0-4000-8000-00000000c0de";
const HOG_CONTAINER_ID: &str = "e2e0c0dee2e0c0dee2e0c0dee2e0c0dee2e0c0dee2e0c0dee2e0c0dee2e0c0de";

const MIB: u64 = 1 << 20;
const HOG_MEMORY_LIMIT: u64 = 256 * MIB;
/// The memory-limited reader: a file four times its limit, read over and over.
const READER_LIMIT: u64 = 16 * MIB;
const READER_FILE_MIB: u64 = 64;

/// The tests' policy, except that no node becomes a source by itself within a test (a thousand
/// consecutive abnormal rounds first): only an alert's targeted round moves anything here.
fn policy() -> String {
    let policy = TEST_POLICY.replace("abnormal_rounds = 2", "abnormal_rounds = 1000");
    assert_ne!(
        policy, TEST_POLICY,
        "TEST_POLICY no longer sets abnormal_rounds = 2"
    );
    policy
}

fn online_cpus() -> Result<u32> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).context("sysconf(_SC_NPROCESSORS_ONLN)")
}

/// `apps/hog-00000` on [`NODE`], with the uid and container id its cgroup path carries.
fn hog_pod() -> Value {
    let workload = Workload::replica_set(HOG_NAMESPACE, HOG_WORKLOAD).requests("100m", "64Mi");
    let mut pod = workload.pod(0, NODE);
    pod["metadata"]["uid"] = json!(HOG_UID);
    pod["status"]["containerStatuses"] = json!([{
        "name": "main", "containerID": format!("containerd://{HOG_CONTAINER_ID}"),
        "image": "registry.invalid/app:1", "imageID": "", "ready": true, "started": true,
        "restartCount": 0,
    }]);
    pod
}

fn hog_pod_name() -> String {
    Workload::replica_set(HOG_NAMESPACE, HOG_WORKLOAD).pod_name(0)
}

/// The workload on this host, each part in a cgroup of its own (removed with its processes on
/// drop).
struct Contention {
    /// `.../kubepods/burstable/pod<HOG_UID>/<HOG_CONTAINER_ID>`: twice as many busy processes
    /// as CPUs under a quota of a quarter of the CPUs, so they wait for CPUs while they may run
    /// and are throttled the rest of the time, even on a host busy with other work (and leave
    /// most of it to the agents and Prometheus); with a memory limit, as a pod's container has.
    hog: TestCgroup,
    quota_cores: f64,
    /// Rereads a file four times its memory limit: steady memcg reclaim.
    reader: TestCgroup,
    /// TCP and UDP over the loopback of a network namespace of its own.
    traffic: TestCgroup,
    _scratch: tempfile::TempDir,
}

impl Contention {
    fn start(cpus: u32) -> Result<Self> {
        let period_us = 100_000;
        let quota_us = u64::from(cpus) * period_us / 4;
        // In the v1 memory hierarchy too (at the same path, as a kubelet's): the planner moves
        // only pods whose working set was measured.
        let mut hog = TestCgroup::mirroring_v1(
            "memory",
            "ballast-e2e",
            &format!("kubepods/burstable/pod{HOG_UID}/{HOG_CONTAINER_ID}"),
        )?
        .with_v1_cpu_quota(quota_us, period_us)?
        .with_v1_memory_limit(HOG_MEMORY_LIMIT)?;
        for _ in 0..2 * cpus {
            hog.spawn_load(&["busy", "600"])?;
        }
        let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let file = uncached_file(scratch.path(), READER_FILE_MIB)?;
        let file = file.to_str().context("non-UTF-8 temp path")?;
        let mut reader = TestCgroup::mirroring_v1("memory", "ballast-e2e-reader", "")?
            .with_v1_memory_limit(READER_LIMIT)?;
        reader.spawn_load(&["reread", "20", file])?;
        let mut traffic = TestCgroup::new("ballast-e2e-traffic")?;
        let (_, mut out) = traffic.spawn_load(&["net", "20000000"])?;
        wait_line(&mut out, "done")?;
        Ok(Self {
            hog,
            quota_cores: quota_us as f64 / period_us as f64,
            reader,
            traffic,
            _scratch: scratch,
        })
    }

    /// What Prometheus must show of the workload: (what, PromQL with a non-empty result).
    fn expectations(&self) -> Vec<(&'static str, String)> {
        let hog = &self.hog.path;
        let reader = &self.reader.path;
        vec![
            (
                // Its pod is gone once evicted (no kubelet stops the container here), and so
                // are the names: Prometheus has them from before.
                "the hog container, named from the API by the measuring agent",
                format!(
                    "last_over_time(ballast_container_cpu_seconds_total{{node=\"{NODE}\", namespace=\"{HOG_NAMESPACE}\", pod=\"{}\", container=\"main\", cgroup=\"{hog}\"}}[5m])",
                    hog_pod_name()
                ),
            ),
            (
                "the hog container's contention above the alert's threshold",
                format!("container:ballast_cpu_contention:ratio_rate5m{{cgroup=\"{hog}\"}} > 0.25"),
            ),
            (
                "the hog container throttled by its quota",
                format!("ballast_container_cpu_throttled_seconds_total{{cgroup=\"{hog}\"}} > 0"),
            ),
            (
                "the hog container's CPU limit",
                format!(
                    "abs(ballast_container_cpu_limit_cores{{cgroup=\"{hog}\"}} - {}) < 0.001",
                    self.quota_cores
                ),
            ),
            (
                "the hog container's memory limit",
                format!("ballast_container_memory_limit_bytes{{cgroup=\"{hog}\"}} == {HOG_MEMORY_LIMIT}"),
            ),
            (
                "reclaim stalls of the memory-limited reader",
                format!(
                    "ballast_container_memory_reclaim_stall_seconds_total{{cgroup=\"{reader}\"}} > 0"
                ),
            ),
            (
                "the reader's memory limit",
                format!(
                    "ballast_container_memory_limit_bytes{{cgroup=\"{reader}\"}} == {READER_LIMIT}"
                ),
            ),
            (
                "the traffic of the network workload",
                format!(
                    "ballast_container_network_transmit_bytes_total{{cgroup=\"{}\"}} > 1e7",
                    self.traffic.path
                ),
            ),
        ]
    }
}

/// POST `payload` to `url` with `authorization` (the whole header value) if any: the status and
/// the body.
fn post_alerts(url: &str, authorization: Option<&str>, payload: &Value) -> Result<(u16, String)> {
    let mut request = ureq::post(url).header("Content-Type", "application/json");
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request
        .config()
        .http_status_as_error(false)
        .build()
        .send(serde_json::to_vec(payload)?)
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

/// A notification as Alertmanager sends it for [`ALERT`] firing on `node` (webhook version 4).
fn notification(node: &str) -> Value {
    let labels =
        json!({"alertname": ALERT, "cluster": "production", "node": node, "severity": "warning"});
    json!({
        "version": "4",
        "groupKey": format!("{{}}/{{alertname=~\"BallastNodeCPUContention|BallastNodeMemoryPressure|BallastNodeTCPRetransmitBurst\"}}:{{alertname=\"{ALERT}\", cluster=\"production\", node=\"{node}\"}}"),
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "ballast",
        "groupLabels": {"alertname": ALERT, "cluster": "production", "node": node},
        "commonLabels": labels,
        "commonAnnotations": {"summary": format!("CPU contention on {node}")},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": {"summary": format!("CPU contention on {node}")},
            "startsAt": jiff::Timestamp::now().to_string(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": "e2e0c0dee2e0c0de",
        }],
    })
}

/// A write that changes the cluster: anything but the leader's routine Lease renewals and its
/// planner memory, which it writes every round.
fn acts_on_the_cluster(record: &WriteRecord) -> bool {
    !(record.kind == "Lease" || (record.kind == "ConfigMap" && record.name == STATE_CONFIGMAP))
}

/// Rounds of `agent`'s /v1/decisions that an alert started.
fn alert_rounds(agent: &ClusterAgent) -> Result<Vec<Value>> {
    let decisions = agent.decisions()?;
    Ok(decisions["rounds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|round| round["trigger"] == json!("alert"))
        .cloned()
        .collect())
}

/// Part 1: calls without the right token are refused by the leader and by a follower (which
/// relays nothing), counted, and change nothing over the leader's next two rounds: no write
/// but its Lease renewals and its planner memory, no round started by an alert.
fn refused_without_the_token(cluster: &Cluster, leader: &str) -> Result<()> {
    let leading = cluster.agent(leader)?;
    let follower = cluster
        .agents
        .iter()
        .find(|a| a.identity != leader)
        .context("no follower")?;
    let payload = notification(NODE);
    let rejected = |agent: &ClusterAgent| {
        agent.counter("ballast_alerts_received_total", &[("result", "rejected")])
    };
    let received = |agent: &ClusterAgent| agent.counter("ballast_alerts_received_total", &[]);
    let log_before = cluster.api.write_log().len();
    let rounds_before = leading.counter("ballast_rounds_total", &[])?;
    let leader_received = received(leading)?;
    let wrong = [
        None,
        Some("Bearer not-the-alerts-token".to_string()),
        // The right token, but not as a bearer token.
        Some(format!("Basic {ALERTS_TOKEN}")),
    ];
    for agent in [leading, follower] {
        let before = rejected(agent)?;
        for authorization in &wrong {
            let (status, body) =
                post_alerts(&agent.url("/v1/alerts"), authorization.as_deref(), &payload)?;
            ensure!(
                status == 401,
                "{} answered {status} to an alert with Authorization {authorization:?}: {body}",
                agent.identity
            );
        }
        let counted = rejected(agent)? - before;
        ensure!(
            counted == wrong.len() as f64,
            "{} counted {counted} rejected calls, not {}",
            agent.identity,
            wrong.len()
        );
    }
    // The follower relayed nothing: the leader saw its own calls only.
    let seen = received(leading)? - leader_received;
    ensure!(
        seen == wrong.len() as f64,
        "the leader counted {seen} webhook calls, not its own {}",
        wrong.len()
    );
    eventually(Duration::from_secs(15), || {
        Ok((leading.counter("ballast_rounds_total", &[])? >= rounds_before + 2.0).then_some(()))
    })
    .with_context(|| format!("the leader finished no two rounds\n{}", cluster.logs(30)))?;
    let changes: Vec<String> = cluster.api.write_log()[log_before..]
        .iter()
        .filter(|r| acts_on_the_cluster(r))
        .map(|r| {
            format!(
                "{} {} {} {}/{}",
                r.identity, r.method, r.kind, r.namespace, r.name
            )
        })
        .collect();
    ensure!(
        changes.is_empty(),
        "refused alerts must change nothing, yet the cluster saw: {changes:#?}"
    );
    let started = alert_rounds(leading)?;
    ensure!(
        started.is_empty(),
        "refused alerts started rounds: {started:#?}"
    );
    Ok(())
}

/// What the alert pipeline shows now, for a failure message.
fn pipeline_state(
    prometheus: &Prometheus,
    alertmanager: &Alertmanager,
    cluster: &Cluster,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Prometheus alerts: {:#?}",
        prometheus.alerts().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "node contention: {:?}",
        prometheus.query(&format!(
            "node:ballast_cpu_contention:ratio_rate5m{{node=\"{NODE}\"}}"
        ))
    );
    let _ = writeln!(
        out,
        "Alertmanager alerts: {:#?}",
        alertmanager.alerts().unwrap_or_default()
    );
    let _ = writeln!(out, "Alertmanager log:\n{}", alertmanager.log_tail(20));
    let _ = writeln!(out, "Prometheus log:\n{}", prometheus.log_tail(20));
    if let Some(leader) = cluster.lease_holder().and_then(|l| cluster.agent(&l).ok()) {
        let first = alert_rounds(leader).ok().and_then(|r| r.last().cloned());
        let _ = writeln!(
            out,
            "{}'s first round started by an alert: {first:#?}",
            leader.identity
        );
    }
    let _ = writeln!(out, "{}", cluster.logs(30));
    out
}

/// Part 2: the alert fires, Alertmanager delivers it with the token, and the leader evicts the
/// hog pod off [`NODE`] through the API in a round the alert started.
fn the_alert_moves_the_hog_off_its_node(
    cluster: &Cluster,
    prometheus: &Prometheus,
    alertmanager: &Alertmanager,
) -> Result<()> {
    let hog = hog_pod_name();
    let eviction = eventually(Duration::from_secs(60), || {
        Ok(cluster
            .api
            .write_log()
            .into_iter()
            .find(|r| is_eviction(r) && r.namespace == HOG_NAMESPACE && r.name == hog))
    })
    .with_context(|| {
        format!(
            "{hog} was not evicted\n{}",
            pipeline_state(prometheus, alertmanager, cluster)
        )
    })?;
    let leader = cluster.lease_holder().unwrap_or_default();
    ensure!(
        eviction.identity == leader && eviction.method == "POST",
        "the eviction was {} by {}, not a POST by the Lease holder {leader:?}",
        eviction.method,
        eviction.identity
    );
    let agent = cluster.agent(&leader)?;
    ensure!(
        agent.leader_gauge()? == Some(1.0),
        "{leader} holds the Lease but does not report itself leader"
    );
    let firing = prometheus.query(&format!(
        "ALERTS{{alertname=\"{ALERT}\", alertstate=\"firing\", node=\"{NODE}\"}}"
    ))?;
    ensure!(
        !firing.is_empty(),
        "{ALERT} is not firing for {NODE} in Prometheus"
    );
    let delivered = alertmanager.alerts()?;
    ensure!(
        delivered
            .iter()
            .any(|a| a["labels"]["alertname"] == json!(ALERT) && a["labels"]["node"] == json!(NODE)),
        "Alertmanager does not hold {ALERT} for {NODE}: {delivered:#?}"
    );
    // Alertmanager posts to every agent and the followers relay to the leader, which acts on
    // the alert once and takes the other copies as duplicates.
    let copies = cluster.agents.len() as f64;
    let by_result =
        |result: &str| agent.counter("ballast_alerts_received_total", &[("result", result)]);
    eventually(Duration::from_secs(10), || {
        Ok((by_result("accepted")? == 1.0 && by_result("duplicate")? >= copies - 1.0).then_some(()))
    })
    .with_context(|| {
        format!(
            "the leader took {ALERT} {:?} times as new and {:?} times as a duplicate, not once and {} times",
            by_result("accepted"),
            by_result("duplicate"),
            copies - 1.0
        )
    })?;
    let evicted = agent.counter("ballast_evictions_total", &[("result", "evicted")])?;
    ensure!(evicted >= 1.0, "the leader counts {evicted} evictions");
    let rounds = alert_rounds(agent)?;
    let round = rounds
        .iter()
        .find(|round| {
            round["evictions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["pod"]["name"] == json!(hog) && e["result"] == json!("evicted"))
        })
        .with_context(|| {
            format!(
                "no round started by an alert evicted {hog}; the leader's decisions: {:#}",
                agent.decisions().unwrap_or_default()
            )
        })?;
    let asked = &round["alerts"]["relieve"][NODE];
    ensure!(
        asked
            .as_array()
            .is_some_and(|alerts| alerts.contains(&json!(ALERT))),
        "the round that evicted {hog} was not asked by {ALERT} to relieve {NODE}: {:#}",
        round["alerts"]
    );
    let source = round["evictions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["pod"]["name"] == json!(hog))
        .map(|e| e["source"].clone());
    ensure!(
        source == Some(json!(NODE)),
        "{hog} was evicted from {source:?}, not {NODE}"
    );
    eprintln!(
        "{ALERT} for {NODE} -> {leader} evicted {}/{hog} at {:?} in a round triggered by {}",
        HOG_NAMESPACE, eviction.at, round["trigger"]
    );
    Ok(())
}

/// Part 3: every dashboard query and recording rule has data, every dashboard variable has
/// values, and every expectation of the workload holds; waits for all of them together, then
/// names each one without data.
fn every_query_has_data(prometheus: &Prometheus, contention: &Contention) -> Result<()> {
    let variables = default_variables();
    let mut checks: Vec<(String, String)> = Vec::new();
    for query in dashboard_queries()? {
        checks.push((
            format!(
                "dashboard {:?}, panel {:?} (refId {})",
                query.dashboard, query.panel, query.ref_id
            ),
            expand(&query.expr, &variables)?,
        ));
    }
    for (record, expr) in recording_rules()? {
        checks.push((format!("recording rule {record} ({})", expr.trim()), record));
    }
    for (what, expr) in contention.expectations() {
        checks.push((format!("workload: {what}"), expr));
    }
    let label_variables = dashboard_variables()?;
    let mut missing: BTreeMap<String, String> = BTreeMap::new();
    let done = eventually(Duration::from_secs(60), || {
        missing.clear();
        for variable in &label_variables {
            let selector = expand(&variable.selector, &variables)?;
            let what = format!(
                "dashboard {:?}, variable ${}",
                variable.dashboard, variable.name
            );
            match prometheus.label_values(&variable.label, &selector, Duration::from_secs(3600)) {
                // A single Prometheus has no `cluster` label (a central store adds it): the
                // variable is then empty and "All" applies, which every query above uses.
                Ok(values) if !values.is_empty() || variable.label == "cluster" => {}
                Ok(_) => {
                    missing.insert(what, format!("no {} values for {selector}", variable.label));
                }
                Err(error) => {
                    missing.insert(what, format!("{error:#} for {selector}"));
                }
            }
        }
        for (what, expr) in &checks {
            match prometheus.query(expr) {
                Ok(result) if !result.is_empty() => {}
                Ok(_) => {
                    missing.insert(what.clone(), format!("no data for {expr}"));
                }
                Err(error) => {
                    missing.insert(what.clone(), format!("{error:#} for {expr}"));
                }
            }
        }
        if missing.is_empty() {
            return Ok(Some(()));
        }
        std::thread::sleep(Duration::from_millis(900));
        Ok(None)
    });
    if done.is_err() {
        let list: Vec<String> = missing
            .iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect();
        bail!(
            "{} of {} queries and variables returned nothing:\n{}",
            list.len(),
            checks.len() + label_variables.len(),
            list.join("\n")
        );
    }
    eprintln!(
        "{} queries and {} variables returned data",
        checks.len(),
        label_variables.len()
    );
    Ok(())
}

#[test]
fn alerts_from_real_prometheus_and_alertmanager_drive_the_leader_and_every_dashboard_has_data(
) -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let Some(programs) = Programs::find() else {
        return Ok(());
    };
    let started = Instant::now();
    let cpus = online_cpus()?;
    let scratch = tempfile::tempdir()?;
    let token_file = scratch.path().join("alerts-token");
    std::fs::write(&token_file, format!("{ALERTS_TOKEN}\n"))?;
    let objects = vec![
        hog_pod(),
        with_demand(Workload::replica_set("apps", "web").pod(0, "n1"), 0.8),
        with_demand(Workload::replica_set("apps", "api").pod(0, "n2"), 0.6),
    ];
    let mut spec = ClusterSpec::new(
        vec![
            NodeSpec::new(NODE, cpus).measuring(),
            NodeSpec::new("n1", 4),
            NodeSpec::new("n2", 4),
        ],
        objects,
    );
    spec.policy = policy();
    spec.extra_args = [
        "--alerts-token-file",
        &token_file.display().to_string(),
        // Every round of the test stays on /v1/decisions.
        "--decisions-kept",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    let mut cluster = Cluster::start(spec)?;
    let stored_uid = cluster
        .api
        .get(Kind::Pod, HOG_NAMESPACE, &hog_pod_name())
        .and_then(|pod| pod["metadata"]["uid"].as_str().map(str::to_string));
    ensure!(
        stored_uid.as_deref() == Some(HOG_UID),
        "the double stored the hog pod with uid {stored_uid:?}, not the one its cgroup carries"
    );
    let leader = cluster.wait_single_leader(Duration::from_secs(20))?;
    let contention = Contention::start(cpus)?;
    eprintln!(
        "cluster, leader {leader} and workload after {:?}",
        started.elapsed()
    );

    refused_without_the_token(&cluster, &leader)?;
    eprintln!("refused calls checked after {:?}", started.elapsed());

    let webhooks: Vec<String> = cluster.agents.iter().map(|a| a.url("/v1/alerts")).collect();
    let alertmanager = Alertmanager::start(&programs.alertmanager, &webhooks, ALERTS_TOKEN, "1s")?;
    let targets: Vec<ScrapeTarget> = cluster
        .agents
        .iter()
        .map(|a| ScrapeTarget {
            node: a.node.clone(),
            address: a.address.to_string(),
        })
        .collect();
    let rules = rules_with_shorter_for(&rule_groups()?, ALERT, ALERT_FOR)?;
    let prometheus = Prometheus::start(
        &programs.prometheus,
        &targets,
        alertmanager.address(),
        &rules,
        INTERVAL,
    )?;
    eventually(Duration::from_secs(30), || {
        let up = prometheus.query("up{job=\"ballast\"} == 1")?;
        Ok((up.len() == targets.len()).then_some(()))
    })
    .with_context(|| {
        format!(
            "Prometheus does not scrape every agent: {:?}",
            prometheus.query("up")
        )
    })?;
    eprintln!(
        "Prometheus scrapes every agent after {:?}",
        started.elapsed()
    );

    the_alert_moves_the_hog_off_its_node(&cluster, &prometheus, &alertmanager)?;
    eprintln!("alert acted on after {:?}", started.elapsed());

    every_query_has_data(&prometheus, &contention)?;
    eprintln!("end to end in {:?}", started.elapsed());
    Ok(())
}
