//! Several real `ballast agent` processes in cluster mode against the API test double: leader
//! election and failover, fencing across partitions, convergence of an imbalanced cluster with
//! PDBs and the soft taint, API faults, durable cooldowns, graceful shutdown. The harness
//! (`ballast_tests::cluster`) gives every agent a load file derived from where the double's
//! scheduler stand-in currently places the pods; see its module doc.
//!
//! Timings are the harness's `Timings::FAST` (lease 5 s, renew deadline 3 s, retry 0.5 s,
//! rounds of 1 s) unless a test says otherwise; clusters run one at a time.

use std::{
    collections::BTreeMap,
    thread::sleep,
    time::{Duration, SystemTime},
};

use anyhow::{bail, ensure, Context, Result};
use ballast_tests::{
    apiserver::{fixtures::Workload, Kind, Scope, WriteRecord},
    cluster::{
        self, evictions_outside_terms, is_eviction, is_lease_write, nodes, repeated_evictions,
        request_rates, sustained_hot, with_demand, workload_of, Cluster, ClusterSpec, Timings,
        HOT_TAINT, NAMESPACE, STATE_CONFIGMAP, TEST_POLICY,
    },
    eventually,
};
use serde_json::Value;

/// Answer time of an API call plus scheduling of three processes on a shared 2-core machine:
/// what a write-log timestamp may trail the moment a rule is about.
const SLACK: Duration = Duration::from_millis(250);

/// The first successful Lease write by someone other than `not` answered at or after `after`.
fn takeover(log: &[WriteRecord], not: &str, after: SystemTime) -> Option<WriteRecord> {
    log.iter()
        .find(|r| is_lease_write(r) && r.identity != not && r.wall >= after)
        .cloned()
}

fn evictions_by<'a>(log: &'a [WriteRecord], identity: &str) -> Vec<&'a WriteRecord> {
    log.iter()
        .filter(|r| is_eviction(r) && r.identity == identity)
        .collect()
}

fn since(earlier: SystemTime, later: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

/// Waits for a successful eviction by `identity` answered after `after`.
fn wait_eviction_by(
    cluster: &Cluster,
    identity: &str,
    after: SystemTime,
    timeout: Duration,
) -> Result<WriteRecord> {
    eventually(timeout, || {
        Ok(cluster
            .api
            .write_log()
            .into_iter()
            .find(|r| is_eviction(r) && r.identity == identity && r.wall >= after))
    })
    .with_context(|| format!("{identity} evicted nothing\n{}", cluster.logs(30)))
}

#[test]
fn one_leader_and_a_killed_leader_is_replaced_within_lease_duration_plus_retry_period() -> Result<()>
{
    let mut cluster = Cluster::start(ClusterSpec::new(nodes(5, 4), Vec::new()))?;
    let leader = cluster.wait_single_leader(Duration::from_secs(15))?;
    // Still exactly one, the same one, over a dozen retry periods.
    for _ in 0..12 {
        ensure!(
            cluster.single_leader()? == leader,
            "leadership moved without a failure"
        );
        sleep(cluster.timings.retry_period / 2);
    }
    let transitions = cluster
        .agent(&leader)?
        .counter("ballast_leader_transitions_total", &[])?;
    ensure!(
        transitions == 1.0,
        "the leader became leader {transitions} times"
    );

    let killed_at = cluster.agent_mut(&leader)?.kill()?;
    let bound = cluster.timings.failover_bound();
    let acquired = eventually(bound + Duration::from_secs(5), || {
        Ok(takeover(&cluster.api.write_log(), &leader, killed_at))
    })
    .with_context(|| format!("nobody took over from {leader}\n{}", cluster.logs(30)))?;
    let waited = since(killed_at, acquired.wall);
    eprintln!(
        "kill -9 {leader} -> {} acquired the Lease after {waited:?} (bound {bound:?})",
        acquired.identity
    );
    ensure!(
        waited <= bound + SLACK,
        "the Lease was taken over {waited:?} after the kill; leaseDuration + retryPeriod is {bound:?}"
    );
    // ... and acts: it reports itself leader and finishes a round.
    let successor = acquired.identity.clone();
    let first_round = eventually(Duration::from_secs(10), || {
        let agent = cluster.agent(&successor)?;
        let finished = agent.counter("ballast_last_round_timestamp_seconds", &[])?;
        Ok((finished > 0.0).then_some(finished))
    })?;
    let acted = Duration::from_secs_f64(
        (first_round
            - killed_at
                .duration_since(SystemTime::UNIX_EPOCH)?
                .as_secs_f64())
        .max(0.0),
    );
    eprintln!("{successor} finished its first round {acted:?} after the kill");
    ensure!(
        acted <= bound + cluster.timings.round_interval + SLACK,
        "the new leader's first round ended {acted:?} after the kill"
    );
    let now_leader = cluster.wait_single_leader(Duration::from_secs(5))?;
    ensure!(
        now_leader == successor,
        "{now_leader} leads, {successor} took the Lease"
    );
    Ok(())
}

#[test]
fn a_partitioned_leader_stops_at_its_renew_deadline_and_leaderships_never_overlap() -> Result<()> {
    let mut spec = ClusterSpec::new(nodes(3, 4), sustained_hot("n0", 3.0, 40, 0.05));
    spec.policy = TEST_POLICY.replace("per_round = 2", "per_round = 1");
    let mut cluster = Cluster::start(spec)?;
    let timings = cluster.timings;
    let faults = cluster.api.faults();
    let first = cluster.wait_single_leader(Duration::from_secs(15))?;
    wait_eviction_by(
        &cluster,
        &first,
        SystemTime::UNIX_EPOCH,
        Duration::from_secs(20),
    )?;

    // 1. Its Lease calls hang, its evictions still go through: only the fence can stop it.
    let cut = SystemTime::now();
    faults.latency(
        Scope::identity(&first).and_resource("leases"),
        Duration::from_secs(60),
    );
    let second_took = eventually(timings.failover_bound() + Duration::from_secs(5), || {
        Ok(takeover(&cluster.api.write_log(), &first, cut))
    })
    .with_context(|| format!("nobody took over from {first}\n{}", cluster.logs(30)))?;
    let second = second_took.identity.clone();
    wait_eviction_by(&cluster, &second, cut, Duration::from_secs(10))?;
    ensure!(
        cluster.agent(&first)?.leader_gauge()? == Some(0.0),
        "{first} still reports itself leader with its Lease calls hanging"
    );
    let fenced = cluster
        .agent(&first)?
        .counter("ballast_rounds_total", &[("result", "fenced")])?;
    eprintln!("{first}: {} fenced rounds", fenced + 0.0);
    faults.clear();

    // 2. Cut off from the API altogether.
    let partitioned = SystemTime::now();
    faults.partition(&second, true);
    let third_took = eventually(timings.failover_bound() + Duration::from_secs(5), || {
        Ok(takeover(&cluster.api.write_log(), &second, partitioned))
    })
    .with_context(|| format!("nobody took over from {second}\n{}", cluster.logs(30)))?;
    let third = third_took.identity.clone();
    wait_eviction_by(&cluster, &third, partitioned, Duration::from_secs(10))?;
    ensure!(
        cluster.agent(&second)?.leader_gauge()? == Some(0.0),
        "{second} still reports itself leader while partitioned"
    );
    faults.partition(&second, false);
    sleep(timings.retry_period * 4);
    let leader = cluster.wait_single_leader(Duration::from_secs(10))?;
    ensure!(
        leader == third,
        "{leader} leads after the partition healed, not {third}"
    );

    let log = cluster.api.write_log();
    let lease_writes = |identity: &str| -> Vec<SystemTime> {
        log.iter()
            .filter(|r| is_lease_write(r) && r.identity == identity)
            .map(|r| r.wall)
            .collect()
    };
    // Each cut-off leader: from its last renewal before it was replaced until it wrote the Lease
    // again (it may lead again later, legitimately), no eviction past the renew deadline.
    for (identity, replaced) in [(&first, second_took.wall), (&second, third_took.wall)] {
        let writes = lease_writes(identity);
        let renewed = writes
            .iter()
            .copied()
            .filter(|w| *w < replaced)
            .max()
            .with_context(|| format!("{identity} never wrote the Lease"))?;
        let regained = writes.iter().copied().find(|w| *w > replaced);
        let late: Vec<String> = log
            .iter()
            .filter(|r| cluster::is_decided_eviction(r) && r.identity == *identity)
            .filter(|r| r.wall > renewed + timings.renew_deadline + SLACK)
            .filter(|r| regained.is_none_or(|again| r.wall < again))
            .map(|r| {
                format!(
                    "{}/{} {} at +{:?}",
                    r.namespace,
                    r.name,
                    r.status,
                    since(renewed, r.wall)
                )
            })
            .collect();
        ensure!(
            late.is_empty(),
            "{identity} evicted after its renew deadline ({:?} after its last renewal): {late:?}",
            timings.renew_deadline
        );
    }
    let outside = evictions_outside_terms(&log, timings.renew_deadline, SLACK);
    ensure!(
        outside.is_empty(),
        "evictions outside their author's leadership: {outside:#?}"
    );
    let evicted: BTreeMap<&str, usize> = [&first, &second, &third]
        .into_iter()
        .map(|id| (id.as_str(), evictions_by(&log, id).len()))
        .collect();
    eprintln!("evictions per leader: {evicted:?}");
    ensure!(
        evicted.values().all(|n| *n > 0),
        "every leader in turn must have evicted for the check to mean anything: {evicted:?}"
    );
    Ok(())
}

#[test]
fn an_imbalanced_cluster_converges_within_its_pdbs_and_the_hot_taint_comes_and_goes() -> Result<()>
{
    let objects = cluster::relievable_hot_node(&["n1", "n2", "n3", "n1", "n2"]);
    let mut cluster = Cluster::start(ClusterSpec::new(nodes(4, 4), objects))?;
    cluster.wait_taint_comes_and_goes("n0", Duration::from_secs(45))?;
    let leader = cluster.single_leader()?;
    let log = cluster.api.write_log();
    let evicted: Vec<&WriteRecord> = log.iter().filter(|r| is_eviction(r)).collect();
    let names: Vec<&str> = evicted.iter().map(|r| r.name.as_str()).collect();
    eprintln!("evicted {names:?}; leader {leader}");
    ensure!(
        evicted.len() >= 2,
        "n0 needs two pods moved; evicted {names:?}"
    );
    ensure!(
        evicted.iter().all(|r| r.name.ends_with("-00000")),
        "only the replicas seeded on n0 (index 0) should have moved: {names:?}"
    );
    ensure!(
        evicted.iter().all(|r| workload_of(&r.name) != "db"),
        "db's budget allows no disruption, yet {names:?}"
    );
    let deletes: Vec<&WriteRecord> = log
        .iter()
        .filter(|r| r.kind == "Pod" && r.method == "DELETE")
        .collect();
    ensure!(
        deletes.is_empty(),
        "pods deleted around the Eviction API: {deletes:?}"
    );
    // Explained: an Event on each evicted pod and one on its source node, by its evictor.
    let events: Vec<&WriteRecord> = log
        .iter()
        .filter(|r| r.kind == "Event" && r.method == "POST" && (200..300).contains(&r.status))
        .collect();
    for eviction in &evicted {
        for (namespace, object) in [
            (eviction.namespace.as_str(), eviction.name.as_str()),
            ("default", "n0"),
        ] {
            ensure!(
                events.iter().any(|e| e.identity == eviction.identity
                    && e.namespace == namespace
                    && e.name.starts_with(&format!("{object}."))),
                "no Event on {object} for the eviction of {}: {events:?}",
                eviction.name
            );
        }
    }
    let history = cluster.history();
    ensure!(
        history.pdb_violations.is_empty(),
        "PDBs violated: {:?}",
        history.pdb_violations
    );
    ensure!(
        history.samples >= 10,
        "the sampler hardly ran ({} samples)",
        history.samples
    );
    let others_tainted: Vec<&String> = history
        .taints
        .iter()
        .filter(|(node, changes)| *node != "n0" && changes.iter().any(|(_, t)| *t))
        .map(|(node, _)| node)
        .collect();
    ensure!(
        others_tainted.is_empty(),
        "only n0 was hot; also tainted: {others_tainted:?}"
    );
    drop(history);
    // Balanced now, by the same model the load files are made from.
    let pods = cluster.api.list(Kind::Pod);
    for node in ["n0", "n1", "n2", "n3"] {
        let demand: f64 = pods
            .iter()
            .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
            .filter(|p| p.pointer("/metadata/namespace").and_then(Value::as_str) == Some("shop"))
            .map(cluster::demand)
            .sum();
        let (utilisation, _) = cluster::cpu_figures(demand, 4);
        ensure!(
            utilisation <= 0.70,
            "{node} is still at utilisation {utilisation}"
        );
    }
    // The taint stays off: n0 is normal and nothing else became hot.
    sleep(cluster.timings.round_interval * 3);
    for node in cluster.api.list(Kind::Node) {
        let taints = node.pointer("/spec/taints").cloned().unwrap_or(Value::Null);
        ensure!(
            !taints.to_string().contains(HOT_TAINT),
            "a hot taint is left: {taints}"
        );
    }
    Ok(())
}

/// Requests per second one agent may make, averaged over a fault phase, from what it does:
/// - election: a candidate reads the Lease each retry period and writes it when taking over, a
///   leader writes it each period, a 409 adds a read and a write: at most 4 calls per period;
/// - watches: after each failure a relist and a new watch (2 calls), no sooner than kube's
///   watcher backoff allows (0.8 s at first), for the agent's own-node pod watch and the
///   leader's node, pod and PDB watches: at most 4 x 2 per 0.8 s;
/// - each round of the leader: one eviction (per_round 1) and its two Events, a taint patch and
///   its re-read per node (3 nodes: 6), the state ConfigMap written twice with a re-read each
///   (4): 13.
///
/// A client retrying in a loop (kube's own retries start 5 ms apart) makes hundreds a second.
fn request_bound(timings: &Timings) -> f64 {
    let election = 4.0 / timings.retry_period.as_secs_f64();
    let watches = 4.0 * 2.0 / 0.8;
    let rounds = 13.0 / timings.round_interval.as_secs_f64();
    election + watches + rounds
}

#[test]
fn api_faults_cause_no_crash_no_repeated_eviction_and_bounded_request_rates() -> Result<()> {
    let mut spec = ClusterSpec::new(nodes(3, 4), sustained_hot("n0", 3.0, 60, 0.05));
    spec.policy = TEST_POLICY
        .replace("per_round = 2", "per_round = 1")
        .replace("per_node = 2", "per_node = 1");
    let mut cluster = Cluster::start(spec)?;
    let timings = cluster.timings;
    let faults = cluster.api.faults();
    let leader = cluster.wait_single_leader(Duration::from_secs(15))?;
    wait_eviction_by(
        &cluster,
        &leader,
        SystemTime::UNIX_EPOCH,
        Duration::from_secs(20),
    )?;

    let counts_before = cluster.api.request_counts();
    let faults_began = std::time::Instant::now();
    // 5xx bursts (500s and 503s, which kube would retry by itself unless told not to).
    faults.error_rate(Scope::all(), 0.3, 500, 1)?;
    faults.error_rate(Scope::all(), 0.1, 503, 2)?;
    sleep(Duration::from_secs(4));
    faults.clear();
    // A 409 storm on the Lease: every write conflicts, 40 times over.
    faults.fail_next(Scope::all().and_resource("leases").writes(), 40, 409)?;
    sleep(Duration::from_secs(4));
    faults.clear();
    // Budgets refusing evictions (429): three in a row.
    let before_429 = cluster.api.write_log().len();
    faults.fail_next(Scope::all().and_resource("pods/eviction"), 3, 429)?;
    eventually(Duration::from_secs(15), || {
        let refused = cluster.api.write_log()[before_429..]
            .iter()
            .filter(|r| r.kind == "Eviction" && r.status == 429)
            .count();
        Ok((refused >= 3).then_some(()))
    })
    .context("three evictions should have met the injected 429s")?;
    // Latency everywhere and dropped connections.
    faults.latency(Scope::all(), Duration::from_millis(300));
    faults.drop_next(Scope::all(), 10);
    sleep(Duration::from_secs(4));
    faults.clear();
    let fault_window = faults_began.elapsed();
    let counts_after = cluster.api.request_counts();
    let cleared = SystemTime::now();

    for agent in &mut cluster.agents {
        ensure!(
            agent.alive(),
            "{} died under API faults:\n{}",
            agent.identity,
            agent.log_tail(40)
        );
    }
    let leader = cluster.wait_single_leader(timings.failover_bound() + Duration::from_secs(5))?;
    wait_eviction_by(&cluster, &leader, cleared, Duration::from_secs(15))
        .context("evictions did not resume once the faults were gone")?;

    let log = cluster.api.write_log();
    let repeated = repeated_evictions(&log);
    ensure!(
        repeated.is_empty(),
        "pods asked to be evicted again after their eviction: {repeated:?}"
    );
    let mut per_workload: BTreeMap<&str, usize> = BTreeMap::new();
    for record in log.iter().filter(|r| is_eviction(r)) {
        *per_workload.entry(workload_of(&record.name)).or_default() += 1;
    }
    let twice: Vec<_> = per_workload.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        twice.is_empty(),
        "workloads evicted twice within their cooldown: {twice:?}"
    );
    let tight = cluster::eviction_retries_closer_than(&log, timings.round_interval / 2);
    ensure!(
        tight.is_empty(),
        "evictions retried within a round (a retry loop): {tight:?}"
    );
    let blocked: f64 = cluster
        .agents
        .iter()
        .map(|a| a.counter("ballast_evictions_total", &[("result", "pdb_blocked")]))
        .sum::<Result<f64>>()?;
    ensure!(
        blocked >= 1.0,
        "the injected 429s were never counted as pdb_blocked (hidden by client retries?)"
    );
    let outside = evictions_outside_terms(&log, timings.renew_deadline, SLACK);
    ensure!(
        outside.is_empty(),
        "evictions outside their author's leadership: {outside:#?}"
    );

    let rates = request_rates(&counts_before, &counts_after, fault_window);
    let bound = request_bound(&timings);
    eprintln!("requests/s under faults over {fault_window:?}: {rates:.1?} (bound {bound:.1})");
    for agent in &cluster.agents {
        let rate = rates.get(&agent.identity).copied().unwrap_or(0.0);
        ensure!(
            rate <= bound,
            "{} made {rate:.1} requests/s under faults; at most {bound:.1} are justified",
            agent.identity
        );
    }
    Ok(())
}

#[test]
fn a_new_leader_keeps_the_cooldowns_of_the_old_one() -> Result<()> {
    // A node is saturated by eight `web` pods and nothing else. After one eviction it is still
    // above the trigger (7 of 8 cores, 0.875 > 0.85), so even a leader starting from no memory
    // would make it a source again: only web's cooldown (600 s) keeps it from being evicted
    // again. The pods go on a node whose agent does not lead, since the leader is killed and its
    // node loses its load with it.
    let mut spec = ClusterSpec::new(nodes(4, 8), Vec::new());
    spec.policy = TEST_POLICY
        .replace("per_round = 2", "per_round = 1")
        .replace("per_node = 2", "per_node = 1")
        .replace("min_replicas = 1", "min_replicas = 2");
    let mut cluster = Cluster::start(spec)?;
    let first = cluster.wait_single_leader(Duration::from_secs(15))?;
    let hot = cluster
        .agents
        .iter()
        .find(|a| a.identity != first)
        .map(|a| a.node.clone())
        .context("no follower")?;
    let web = Workload::replica_set("shop", "web").requests("1", "256Mi");
    for i in 0..8 {
        cluster.api.apply(with_demand(web.pod(i, &hot), 1.0))?;
    }
    let evicted = wait_eviction_by(
        &cluster,
        &first,
        SystemTime::UNIX_EPOCH,
        Duration::from_secs(20),
    )?;
    ensure!(
        workload_of(&evicted.name) == "web",
        "evicted {}",
        evicted.name
    );
    let state = cluster
        .api
        .get(Kind::ConfigMap, NAMESPACE, STATE_CONFIGMAP)
        .context("the leader evicted before writing its memory")?;
    ensure!(
        state["data"].to_string().contains("web"),
        "the state ConfigMap does not mention web: {state}"
    );
    let killed_at = cluster.agent_mut(&first)?.kill()?;
    let second = eventually(
        cluster.timings.failover_bound() + Duration::from_secs(5),
        || Ok(takeover(&cluster.api.write_log(), &first, killed_at)),
    )?
    .identity;
    // Enough planned rounds for the hysteresis to have made n0 a source again from scratch.
    let rounds = eventually(Duration::from_secs(20), || {
        let done = cluster
            .agent(&second)?
            .counter("ballast_rounds_total", &[("result", "planned")])?;
        Ok((done >= 6.0).then_some(done))
    })?;
    let log = cluster.api.write_log();
    let again: Vec<&WriteRecord> = log
        .iter()
        .filter(|r| r.kind == "Eviction" && r.identity == second)
        .collect();
    ensure!(
        again.is_empty(),
        "{second} evicted within web's cooldown after {rounds} rounds: {again:?}"
    );
    let agent = cluster.agent(&second)?;
    let active = agent.counter("ballast_cooldowns_active", &[])?;
    ensure!(active >= 1.0, "{second} reports {active} active cooldowns");
    let decisions = agent.decisions()?;
    let last = &decisions["rounds"][0];
    ensure!(
        last["plan"].to_string().contains("cooldown"),
        "{second}'s last plan does not name the cooldown: {last}"
    );
    let sources = agent.counter("ballast_source_nodes", &[("resource", "cpu")])?;
    ensure!(
        sources >= 1.0,
        "{hot} should still be a CPU source (it is saturated), {sources}"
    );
    Ok(())
}

#[test]
fn sigterm_releases_the_lease_and_the_next_leader_takes_over_within_3_s() -> Result<()> {
    // A long lease, so that without the release the takeover would take 15 s.
    let mut spec = ClusterSpec::new(nodes(3, 4), Vec::new());
    spec.timings = Timings {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(1),
        round_interval: Duration::from_secs(1),
    };
    let mut cluster = Cluster::start(spec)?;
    let leader = cluster.wait_single_leader(Duration::from_secs(15))?;
    let (terminated_at, status) = cluster.agent_mut(&leader)?.terminate()?;
    ensure!(status.success(), "{leader} exited with {status} on SIGTERM");
    let holder = cluster.lease_holder();
    let log = cluster.api.write_log();
    let acquired = match takeover(&log, &leader, terminated_at) {
        Some(record) => record,
        None => {
            ensure!(
                holder.as_deref() == Some(""),
                "after {leader} exited the Lease is held by {holder:?}, not released"
            );
            eventually(Duration::from_secs(20), || {
                Ok(takeover(&cluster.api.write_log(), &leader, terminated_at))
            })?
        }
    };
    let waited = since(terminated_at, acquired.wall);
    eprintln!(
        "SIGTERM {leader} -> {} leads after {waited:?}",
        acquired.identity
    );
    ensure!(
        waited < Duration::from_secs(3),
        "takeover took {waited:?} after SIGTERM"
    );
    let now = cluster.wait_single_leader(Duration::from_secs(5))?;
    if now != acquired.identity {
        bail!("{now} leads, but {} took the Lease", acquired.identity);
    }
    Ok(())
}
