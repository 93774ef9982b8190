//! `ballast-bench --figures [failover|rates|rounds]`: the cluster figures of issue 5, measured
//! with real `ballast agent` processes in cluster mode against the API test double (no root, no
//! kernel programs: the agents serve load from files). Not part of `cargo xtask bench`.
//!
//! 1. failover: 3 agents, default election timing (15 s / 10 s / 2 s); the leader is killed
//!    with SIGKILL 20 times (restarted after each, so 3 are always up); the time from the kill to
//!    the successor's first successful Lease write, and from the killed leader's last renewal.
//! 2. rates: 100 nodes: 5 real agents and 95 simulated ones (the harness's in-process server
//!    answers /v1/load for them from registered agent pods; they make no API calls), default
//!    timing and 30 s rounds, 1,000 pods; API requests per second per identity over 90 s, and the
//!    leader's by verb and resource from its own `ballast_api_requests_total`.
//! 3. rounds: 1,000 nodes and 30,000 pods (1,000 PDBs), 1 real agent (the leader) and 999
//!    simulated, rounds every 10 s; each round's duration from `/v1/decisions`, and the leader's
//!    peak RSS.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context, Result};
use ballast_tests::{
    apiserver::fixtures::Workload,
    cluster::{is_lease_write, with_demand, Cluster, ClusterSpec, NodeSpec, Timings, TEST_POLICY},
    eventually,
};
use serde_json::{json, Value};

pub(crate) fn figures(which: Option<&str>) -> Result<String> {
    type Part = fn() -> Result<String>;
    let parts: [(&str, Part); 3] = [("failover", failover), ("rates", rates), ("rounds", rounds)];
    if which.is_some_and(|w| parts.iter().all(|(name, _)| *name != w)) {
        bail!("--figures takes one of failover, rates, rounds (or nothing for all three)");
    }
    let mut report = String::from("## Cluster figures (issue 5)\n\n");
    for (name, part) in parts {
        if which.is_none_or(|w| w == name) {
            eprintln!("figures: {name}...");
            report.push_str(&part()?);
        }
    }
    Ok(report)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn distribution(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.2} / {:.2} / {:.2} / {:.2}",
        values.first().copied().unwrap_or(f64::NAN),
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        values.last().copied().unwrap_or(f64::NAN)
    )
}

fn failover() -> Result<String> {
    const KILLS: usize = 20;
    let nodes = (0..3).map(|i| NodeSpec::new(&format!("n{i}"), 4)).collect();
    let mut spec = ClusterSpec::new(nodes, Vec::new());
    spec.timings = Timings::DEFAULT;
    let timings = spec.timings;
    let mut cluster = Cluster::start(spec)?;
    let mut from_kill = Vec::new();
    let mut from_renewal = Vec::new();
    for kill in 0..KILLS {
        let leader = cluster.wait_single_leader(Duration::from_secs(60))?;
        // Kill at a random point of the renewal cycle, not right after a takeover.
        std::thread::sleep(Duration::from_millis(1_000 + (kill as u64 * 397) % 2_000));
        let killed_at = cluster.agent_mut(&leader)?.kill()?;
        let acquired = eventually(Duration::from_secs(60), || {
            Ok(cluster
                .api
                .write_log()
                .into_iter()
                .find(|r| is_lease_write(r) && r.identity != leader && r.wall >= killed_at))
        })?;
        let log = cluster.api.write_log();
        let renewed = log
            .iter()
            .filter(|r| is_lease_write(r) && r.identity == leader && r.wall <= killed_at)
            .map(|r| r.wall)
            .max()
            .context("the killed leader never wrote the Lease")?;
        let seconds =
            |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default().as_secs_f64();
        from_kill.push(seconds(killed_at, acquired.wall));
        from_renewal.push(seconds(renewed, acquired.wall));
        eprintln!(
            "  kill {}: {leader} -> {} after {:.2} s ({:.2} s after its last renewal)",
            kill + 1,
            acquired.identity,
            from_kill[kill],
            from_renewal[kill]
        );
        cluster.agent_mut(&leader)?.restart()?;
    }
    let mut out = String::new();
    writeln!(
        out,
        "### Failover ({KILLS} kills, 3 agents, lease {:?} / renew deadline {:?} / retry {:?})\n",
        timings.lease_duration, timings.renew_deadline, timings.retry_period
    )?;
    writeln!(
        out,
        "| measured | min / median / p90 / max (s) |\n|---|---|"
    )?;
    writeln!(
        out,
        "| SIGKILL of the leader -> successor's first Lease write | {} |",
        distribution(from_kill)
    )?;
    writeln!(
        out,
        "| killed leader's last renewal -> successor's first Lease write | {} |",
        distribution(from_renewal)
    )?;
    writeln!(
        out,
        "\nBound: leaseDuration + retryPeriod = {:?} after the last renewal a candidate saw.\n",
        timings.failover_bound()
    )?;
    Ok(out)
}

/// `count` workloads of `replicas` pods spread round-robin over `nodes`, each pod `cores` of
/// demand (per node: `hot` nodes get `hot_cores` instead), and a PDB for every `pdb_every`-th.
fn spread_workloads(
    nodes: &[NodeSpec],
    count: usize,
    replicas: usize,
    demand: impl Fn(&str) -> f64,
    pdb_every: usize,
) -> Vec<Value> {
    let mut objects = Vec::new();
    let mut slot = 0;
    for w in 0..count {
        let workload = Workload::replica_set("apps", &format!("app{w}")).requests("100m", "128Mi");
        for r in 0..replicas {
            let node = &nodes[slot % nodes.len()].name;
            slot += 1;
            objects.push(with_demand(workload.pod(r, node), demand(node)));
        }
        if pdb_every > 0 && w % pdb_every == 0 {
            objects.push(workload.pdb_max_unavailable(&format!("app{w}"), json!(1)));
        }
    }
    objects
}

fn api_requests_by_call(scrape: &prometheus_parse::Scrape) -> BTreeMap<String, f64> {
    let mut calls = BTreeMap::new();
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric == "ballast_api_requests_total")
    {
        if let prometheus_parse::Value::Counter(v) = sample.value {
            let key = format!(
                "{} {}",
                sample.labels.get("verb").unwrap_or("?"),
                sample.labels.get("resource").unwrap_or("?")
            );
            *calls.entry(key).or_default() += v;
        }
    }
    calls
}

fn rates() -> Result<String> {
    const WINDOW: Duration = Duration::from_secs(90);
    let nodes: Vec<NodeSpec> = (0..100)
        .map(|i| {
            let node = NodeSpec::new(&format!("n{i:03}"), 8);
            if i < 5 {
                node
            } else {
                node.simulated()
            }
        })
        .collect();
    let objects = spread_workloads(&nodes, 500, 2, |_| 0.3, 5);
    let mut spec = ClusterSpec::new(nodes, objects);
    spec.timings = Timings::DEFAULT;
    spec.policy = TEST_POLICY.into();
    let mut cluster = Cluster::start(spec)?;
    let leader = cluster.wait_single_leader(Duration::from_secs(60))?;
    // Past the leader's first round (its watches listed everything once).
    eventually(Duration::from_secs(60), || {
        let rounds = cluster
            .agent(&leader)?
            .counter("ballast_rounds_total", &[])?;
        Ok((rounds >= 1.0).then_some(()))
    })?;
    let before = cluster.api.request_counts();
    let calls_before = api_requests_by_call(&cluster.agent(&leader)?.scrape()?);
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let elapsed = started.elapsed();
    let after = cluster.api.request_counts();
    let calls_after = api_requests_by_call(&cluster.agent(&leader)?.scrape()?);
    let rates = ballast_tests::cluster::request_rates(&before, &after, elapsed);
    let mut out = String::new();
    writeln!(
        out,
        "### API request rate at 100 nodes ({:.0} s window, default timing, 30 s rounds)\n",
        elapsed.as_secs_f64()
    )?;
    writeln!(out, "5 real agents; 95 nodes' /v1/load answered by the harness's in-process server from agent pods registered in the double (they make no API calls, so follower load is measured on the 4 real followers). 1,000 pods, 100 PDBs, no imbalance.\n")?;
    writeln!(out, "| identity | role | requests/s |\n|---|---|---|")?;
    let mut followers = Vec::new();
    for (identity, rate) in &rates {
        let role = if *identity == leader {
            "leader"
        } else {
            "follower"
        };
        if *identity != leader {
            followers.push(*rate);
        }
        writeln!(out, "| {identity} | {role} | {rate:.2} |")?;
    }
    let follower_mean = followers.iter().sum::<f64>() / followers.len().max(1) as f64;
    let leader_rate = rates.get(&leader).copied().unwrap_or_default();
    writeln!(out, "\nExtrapolated to 100 real agents: leader {leader_rate:.2} + 99 x {follower_mean:.2} = {:.1} requests/s.\n", leader_rate + 99.0 * follower_mean)?;
    writeln!(out, "Leader's calls in the window (its `ballast_api_requests_total`):\n\n| call | per second |\n|---|---|")?;
    for (call, n) in &calls_after {
        let delta = n - calls_before.get(call).copied().unwrap_or(0.0);
        if delta > 0.0 {
            writeln!(out, "| {call} | {:.3} |", delta / elapsed.as_secs_f64())?;
        }
    }
    out.push('\n');
    Ok(out)
}

fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

fn rounds() -> Result<String> {
    const ROUNDS: usize = 6;
    // Every 20th node (n0007, n0027, ...) is hot: 50 of them.
    let hot = |node: &str| node[1..].parse::<u32>().is_ok_and(|n| n % 20 == 7);
    let nodes: Vec<NodeSpec> = (0..1_000)
        .map(|i| {
            let node = NodeSpec::new(&format!("n{i:04}"), 8);
            if i == 0 {
                node
            } else {
                node.simulated()
            }
        })
        .collect();
    let seeding = Instant::now();
    // 3,000 workloads of 10 replicas: 30 pods per node; 50 nodes at 30 x 0.25 = 7.5 of 8 cores.
    let objects = spread_workloads(&nodes, 3_000, 10, |n| if hot(n) { 0.25 } else { 0.12 }, 3);
    let mut spec = ClusterSpec::new(nodes, objects);
    spec.timings = Timings {
        round_interval: Duration::from_secs(10),
        ..Timings::DEFAULT
    };
    // Made once at the start: remaking 1,000 documents from 30,000 pods every half second would
    // compete with the leader for the two CPUs.
    spec.load_refresh = Duration::from_secs(3_600);
    // The default round limit (10 evictions), the tests' eligibility (every pod here is young).
    spec.policy = TEST_POLICY.replace("per_round = 2", "per_round = 10");
    spec.api.history = 100_000;
    let mut cluster = Cluster::start(spec)?;
    let seeded = seeding.elapsed();
    let leader = cluster.wait_single_leader(Duration::from_secs(120))?;
    let agent = cluster.agent(&leader)?;
    let decisions = eventually(Duration::from_secs(ROUNDS as u64 * 10 + 120), || {
        let doc = agent.decisions()?;
        let done = doc["rounds"].as_array().map_or(0, Vec::len);
        Ok((done >= ROUNDS).then_some(doc))
    })?;
    let rss = agent.pid().map(peak_rss_kib).transpose()?;
    let rounds = decisions["rounds"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    writeln!(out, "### Leader round at 1,000 nodes / 30,000 pods\n")?;
    writeln!(out, "1 real agent (the leader) and 999 simulated ones (the harness's in-process server answers their /v1/load: 30 containers per document, made once); 3,000 ReplicaSets of 10, 1,000 PDBs, 50 nodes at 94 % CPU, at most 10 evictions a round, 2 per node and 5 per namespace (all pods are in one namespace, so 5 bind). Seeding and starting took {:.1} s. Rounds newest first:\n", seeded.as_secs_f64())?;
    writeln!(
        out,
        "| round | result | duration (s) | evictions | excluded nodes |\n|---|---|---|---|---|"
    )?;
    for (i, round) in rounds.iter().enumerate() {
        writeln!(
            out,
            "| {} | {} | {:.3} | {} | {} |",
            rounds.len() - i,
            round["result"].as_str().unwrap_or("?"),
            round["duration_seconds"].as_f64().unwrap_or(f64::NAN),
            round["evictions"].as_array().map_or(0, Vec::len),
            round["excluded_nodes"].as_object().map_or(0, |o| o.len()),
        )?;
    }
    if let Some(kib) = rss {
        writeln!(
            out,
            "\nLeader peak RSS (VmHWM): {:.0} MiB.",
            kib as f64 / 1024.0
        )?;
    }
    out.push('\n');
    Ok(out)
}
