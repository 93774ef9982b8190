//! The agent's HTTP surface against a real agent process: /metrics parses as Prometheus text
//! and carries the promised families, /v1/load follows its schema, /healthz answers.

use std::time::Duration;

use anyhow::Result;
use ballast::load::score::Resource;
use ballast_tests::{eventually, privileged, sample_with, wait_line, Agent, TestCgroup};
use prometheus_parse::Value;

#[test]
fn metrics_and_load_document_carry_the_cpu_families() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let agent = Agent::start(&[
        "--interval",
        "500ms",
        "--rescan-interval",
        "1s",
        "--bpf-stats",
        "always",
    ])?;
    // A cgroup with a CFS quota on the v1 cpu controller (hybrid host): throttling shows up as its
    // own family and not as run-queue wait.
    let mut limited = TestCgroup::new("ballast-http-quota")?.with_v1_cpu_quota(10_000, 100_000)?;
    let (_, mut stdout) = limited.spawn_load(&["busy", "2", "1"])?;
    wait_line(&mut stdout, "done")?;

    let scrape = eventually(Duration::from_secs(10), || {
        let scrape = agent.scrape()?;
        let throttled = sample_with(
            &scrape,
            "ballast_container_cpu_throttled_periods_total",
            &[("cgroup", limited.path.as_str())],
        );
        Ok(throttled.filter(|v| *v > 0.0).map(|_| scrape))
    })?;
    let types: std::collections::HashMap<&str, &str> = scrape
        .docs
        .keys()
        .map(|name| (name.as_str(), "documented"))
        .collect();
    for family in [
        "ballast_container_cpu_seconds_total",
        "ballast_container_cpu_runqueue_wait_seconds_total",
        "ballast_container_cpu_runqueue_latency_seconds",
        "ballast_container_context_switches_total",
        "ballast_container_cpu_throttled_seconds_total",
        "ballast_container_cpu_throttled_periods_total",
        "ballast_node_cpu_seconds_total",
        "ballast_node_cpu_runqueue_wait_seconds_total",
        "ballast_ebpf_program_runs_total",
        "ballast_ebpf_program_run_seconds_total",
        "ballast_ebpf_run_stats_enabled",
        "ballast_container_memory_reclaim_stall_seconds_total",
        "ballast_collector_up",
        "ballast_node_load_score",
    ] {
        assert!(
            types.contains_key(family),
            "/metrics lacks the HELP of {family}"
        );
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == family || s.metric.starts_with(&format!("{family}_"))),
            "/metrics has no samples of {family}"
        );
    }
    // The histogram parses as a histogram with cumulative buckets up to +Inf.
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "ballast_container_cpu_runqueue_latency_seconds")
        .map(|s| &s.value);
    match histogram {
        Some(Value::Histogram(buckets)) => {
            assert_eq!(
                buckets.len(),
                12,
                "1 µs .. 4 s in x4 steps: 11 finite bounds and +Inf"
            );
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "buckets are cumulative"
            );
        }
        other => panic!("runqueue latency is not a histogram: {other:?}"),
    }
    for kind in ["voluntary", "involuntary", "throttled"] {
        assert!(
            sample_with(
                &scrape,
                "ballast_container_context_switches_total",
                &[("kind", kind)]
            )
            .is_some(),
            "no context switches of kind {kind}"
        );
    }
    // The root cgroup's memory controller files (v1 here, v2 elsewhere) are read at once, not
    // only after the first --memory-interval.
    assert!(
        sample_with(
            &scrape,
            "ballast_container_memory_working_set_bytes",
            &[("cgroup", "/")]
        )
        .is_some_and(|bytes| bytes > 0.0),
        "working set of the root cgroup"
    );
    for signal in ["cpu", "memory", "network"] {
        assert_eq!(
            sample_with(
                &scrape,
                "ballast_collector_up",
                &[("signal", signal), ("mode", "ebpf")]
            ),
            Some(1.0),
            "{signal} measured by the kernel programs"
        );
    }
    let runs = sample_with(
        &scrape,
        "ballast_ebpf_program_runs_total",
        &[("program", "sched_switch")],
    );
    assert!(
        runs.is_some_and(|r| r > 0.0),
        "sched_switch run count from BPF statistics"
    );

    // Throttled, not contended: a 10 % quota on an otherwise idle CPU.
    let path = limited.path.as_str();
    let cpu = sample_with(
        &scrape,
        "ballast_container_cpu_seconds_total",
        &[("cgroup", path)],
    )
    .unwrap_or(0.0);
    let throttled = sample_with(
        &scrape,
        "ballast_container_cpu_throttled_seconds_total",
        &[("cgroup", path)],
    )
    .unwrap_or(0.0);
    let wait = sample_with(
        &scrape,
        "ballast_container_cpu_runqueue_wait_seconds_total",
        &[("cgroup", path)],
    )
    .unwrap_or(f64::NAN);
    eprintln!(
        "quota cgroup: cpu {cpu:.3} s, throttled {throttled:.3} s, run-queue wait {wait:.4} s"
    );
    assert!(
        throttled > 1.0,
        "a busy task under a 10 % quota is throttled most of 2 s"
    );
    assert!(
        wait < 0.1 * throttled,
        "throttled time must not count as run-queue wait"
    );

    let load = agent.load()?;
    assert_eq!(load.schema, "ballast.io/load/v1");
    assert_eq!(load.runqueue_wait_excludes_throttling, Some(true));
    assert!(load.cpu.cpus >= 1);
    assert!(
        load.memory.total_bytes.is_some_and(|b| b > 0),
        "node memory"
    );
    let row = load.containers.iter().find(|c| c.cgroup == limited.path);
    let row = row.ok_or_else(|| anyhow::anyhow!("/v1/load lists the test cgroup"))?;
    assert_eq!(
        sample_with(
            &scrape,
            "ballast_container_cpu_limit_cores",
            &[("cgroup", path)]
        ),
        Some(0.1),
        "a 10 ms per 100 ms quota is a 0.1-core limit"
    );
    assert_eq!(row.cpu.limit_cores, Some(0.1));
    let utilisation = row
        .score
        .as_ref()
        .and_then(|s| s.raw.per_resource.get(&Resource::Cpu))
        .and_then(|r| r.utilisation);
    assert!(
        utilisation.is_some_and(|u| u > 0.5),
        "utilisation is against the container's own limit: {utilisation:?}"
    );
    assert_eq!(
        row.memory.reclaim_stall_per_second,
        Some(0.0),
        "reclaim is traced, and a CPU-bound task never stalls in it"
    );
    // The node's score in /metrics is the smoothed score of /v1/load, resource by resource
    // (both from the same window only if no collection landed in between: compare loosely).
    let node_cpu = load
        .score
        .as_ref()
        .and_then(|s| s.smoothed.per_resource.get(&Resource::Cpu))
        .and_then(|r| r.score);
    let metric_cpu = sample_with(&scrape, "ballast_node_load_score", &[("resource", "cpu")]);
    assert!(
        node_cpu.is_some() && metric_cpu.is_some_and(|m| (0.0..=2.0).contains(&m)),
        "node cpu score in /v1/load {node_cpu:?} and /metrics {metric_cpu:?}"
    );
    assert_eq!(agent.get_text("/healthz")?.trim(), "ok");
    let status = agent.stop()?;
    assert!(status.success(), "SIGTERM ends the agent cleanly: {status}");
    Ok(())
}

/// By default run-time statistics are sampled: before the first window nothing pretends to be a
/// measured zero, and the gauge says they are off.
#[test]
fn program_statistics_are_absent_until_sampled() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let agent = Agent::start(&["--interval", "500ms"])?;
    let scrape = eventually(Duration::from_secs(10), || {
        let scrape = agent.scrape()?;
        let up = sample_with(&scrape, "ballast_collector_up", &[("mode", "ebpf")]);
        Ok(up.filter(|v| *v == 1.0).map(|_| scrape))
    })?;
    assert!(
        !scrape
            .samples
            .iter()
            .any(|s| s.metric.starts_with("ballast_ebpf_program_")),
        "no program statistics before the first sampling window"
    );
    agent.stop()?;
    Ok(())
}
