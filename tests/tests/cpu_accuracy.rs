//! CPU figures measured by the kernel programs against the kernel's own accounting, on real
//! workloads in cgroups the tests create. Runs as root (CI=true makes a missing privilege fail).

use std::time::Duration;

use anyhow::Result;
use ballast_tests::{
    cgroup_ids_in_kernel_maps, eventually, privileged, run_delay_ns, sample_for, sample_with,
    settled_value, wait_line, Agent, TestCgroup,
};

const CPU_SECONDS: &str = "ballast_container_cpu_seconds_total";
const WAIT_SECONDS: &str = "ballast_container_cpu_runqueue_wait_seconds_total";

fn relative_error(measured: f64, truth: f64) -> f64 {
    (measured - truth).abs() / truth
}

/// Three busy tasks pinned to one CPU for 3 s: each waits about two thirds of the time. The
/// cgroup's CPU time must match `cpu.stat` within 2 % and its run-queue wait the sum of
/// /proc/PID/schedstat run delays within 5 %.
#[test]
fn contention_on_one_cpu_matches_kernel_accounting() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let agent = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;
    let mut cgroup = TestCgroup::new("ballast-contention")?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(cgroup.spawn_load(&["busy", "3", "0"])?);
    }
    for (_, stdout) in &mut workers {
        wait_line(stdout, "done")?;
    }
    // The tasks now sleep on stdin: everything they did is charged (they switched out).
    let truth_wait: u64 = workers
        .iter()
        .map(|(pid, _)| run_delay_ns(*pid))
        .sum::<Result<u64>>()?;
    let truth_cpu = cgroup.cpu_usage_ns()?;
    let cpu = settled_value(&agent, CPU_SECONDS, &cgroup.path)?;
    let wait = settled_value(&agent, WAIT_SECONDS, &cgroup.path)?;
    let cpu_error = relative_error(cpu * 1e9, truth_cpu as f64);
    let wait_error = relative_error(wait * 1e9, truth_wait as f64);
    eprintln!(
        "cpu: ebpf {cpu:.4} s vs cpu.stat {:.4} s ({:.3} %); wait: ebpf {wait:.4} s vs schedstat {:.4} s ({:.3} %)",
        truth_cpu as f64 / 1e9,
        cpu_error * 100.0,
        truth_wait as f64 / 1e9,
        wait_error * 100.0
    );
    assert!(
        truth_wait > 3_000_000_000,
        "the workload must really contend (schedstat wait {truth_wait} ns)"
    );
    assert!(
        cpu_error < 0.02,
        "CPU time off by {:.2} %",
        cpu_error * 100.0
    );
    assert!(
        wait_error < 0.05,
        "run-queue wait off by {:.2} %",
        wait_error * 100.0
    );
    Ok(())
}

/// A task that wakes up every 10 ms on a CPU nobody else uses waits next to nothing, and the
/// agent says so (present, ~0), rather than omitting or inventing it.
#[test]
fn idle_cgroup_shows_about_zero_wait() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let agent = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;
    let mut cgroup = TestCgroup::new("ballast-idle")?;
    let last_cpu = u64::from(num_cpus().saturating_sub(1));
    let (_, mut stdout) = cgroup.spawn_load(&["tick", "10", &last_cpu.to_string()])?;
    wait_line(&mut stdout, "ready")?;
    std::thread::sleep(Duration::from_secs(2));
    let wait = eventually(Duration::from_secs(10), || {
        Ok(sample_for(
            &agent.scrape()?,
            WAIT_SECONDS,
            &cgroup.path,
            &[],
        ))
    })?;
    eprintln!("idle cgroup waited {:.6} s in 2 s", wait);
    assert!(wait < 0.02, "an idle task on a free CPU waited {wait} s");
    Ok(())
}

/// Once a cgroup is removed, its entry leaves the kernel map and its series leave /metrics.
#[test]
fn removed_cgroup_disappears_from_maps_and_metrics() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let agent = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;
    let mut cgroup = TestCgroup::new("ballast-removed")?;
    let id = cgroup.id()?;
    let path = cgroup.path.clone();
    let (_, mut stdout) = cgroup.spawn_load(&["busy", "1"])?;
    wait_line(&mut stdout, "done")?;
    eventually(Duration::from_secs(10), || {
        Ok(sample_for(&agent.scrape()?, CPU_SECONDS, &path, &[]))
    })?;
    assert!(
        cgroup_ids_in_kernel_maps()?.contains(&id),
        "a busy cgroup has a map entry"
    );
    drop(cgroup);
    eventually(Duration::from_secs(10), || {
        let gone_from_metrics = sample_for(&agent.scrape()?, CPU_SECONDS, &path, &[]).is_none();
        let gone_from_maps = !cgroup_ids_in_kernel_maps()?.contains(&id);
        Ok((gone_from_metrics && gone_from_maps).then_some(()))
    })?;
    Ok(())
}

/// The cgroupfs fallback and the kernel programs agree on CPU seconds within 2 %, measured by
/// two agents side by side on the same workload.
#[test]
fn fallback_mode_agrees_with_ebpf_on_cpu_seconds() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let ebpf = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;
    let fallback = Agent::start(&[
        "--interval",
        "500ms",
        "--rescan-interval",
        "1s",
        "--no-ebpf",
    ])?;
    let mut cgroup = TestCgroup::new("ballast-fallback")?;
    let mut workers = vec![
        cgroup.spawn_load(&["busy", "3"])?,
        cgroup.spawn_load(&["busy", "3"])?,
    ];
    for (_, stdout) in &mut workers {
        wait_line(stdout, "done")?;
    }
    let truth = cgroup.cpu_usage_ns()? as f64 / 1e9;
    let from_ebpf = settled_value(&ebpf, CPU_SECONDS, &cgroup.path)?;
    let from_cgroupfs = settled_value(&fallback, CPU_SECONDS, &cgroup.path)?;
    eprintln!("cpu seconds: ebpf {from_ebpf:.4}, cgroupfs {from_cgroupfs:.4}, cpu.stat {truth:.4}");
    let scrape = fallback.scrape()?;
    assert_eq!(
        sample_with(
            &scrape,
            "ballast_collector_up",
            &[("signal", "cpu"), ("mode", "cgroupfs")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_with(
            &scrape,
            "ballast_collector_up",
            &[("signal", "cpu"), ("mode", "ebpf")]
        ),
        Some(0.0)
    );
    assert!(
        relative_error(from_cgroupfs, from_ebpf) < 0.02,
        "fallback {from_cgroupfs} vs eBPF {from_ebpf}"
    );
    assert!(
        sample_for(&scrape, WAIT_SECONDS, &cgroup.path, &[]).is_none(),
        "the fallback cannot measure run-queue wait: the series must be absent, not zero"
    );
    Ok(())
}

fn num_cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
}
