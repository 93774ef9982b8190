//! Memory pressure against the kernel's own accounting: reclaim stalls measured by the kernel
//! programs versus the cgroup's PSI `memory.pressure`, on a workload that a memory limit forces
//! into reclaim, and an idle cgroup that must show none.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ballast_tests::{privileged, settled_value, uncached_file, wait_line, Agent, TestCgroup};

const MIB: u64 = 1 << 20;

/// PSI "some" total of a cgroup's memory.pressure, seconds.
fn psi_memory_some_seconds(v2_dir: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(v2_dir.join("memory.pressure"))
        .context("memory.pressure (this test needs PSI)")?;
    let total_us: f64 = text
        .lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("total=")))
        .ok_or_else(|| anyhow!("no some total in memory.pressure: {text}"))?
        .parse()?;
    Ok(total_us / 1e6)
}

#[test]
fn reclaim_stall_matches_psi_and_stays_with_its_cgroup() -> Result<()> {
    if !privileged() {
        return Ok(());
    }
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let file = uncached_file(scratch.path(), 192)?;
    let file = file
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 temp path"))?;
    let agent = Agent::start(&["--interval", "500ms", "--rescan-interval", "1s"])?;

    // 192 MiB read over and over under a 32 MiB limit: every pass reclaims the previous one.
    let mut limited = TestCgroup::new("ballast-mem-limited")?.with_v1_memory_limit(32 * MIB)?;
    let mut idle = TestCgroup::new("ballast-mem-idle")?;
    let (_, mut idle_out) = idle.spawn_load(&["tick", "20"])?;
    wait_line(&mut idle_out, "ready")?;
    // Pinned: PSI aggregates a group's stall time over CPUs weighted by their busy time, which is
    // exact for one CPU but not for a task that migrates.
    let (_, mut out) = limited.spawn_load(&["reread", "4", file, "1"])?;
    wait_line(&mut out, "done")?;
    let psi = psi_memory_some_seconds(&limited.v2_dir)?;
    let family = "ballast_container_memory_reclaim_stall_seconds_total";
    let stall = settled_value(&agent, family, &limited.path)?;
    let idle_stall = settled_value(&agent, family, &idle.path)?;
    eprintln!(
        "reclaim stall: ebpf {stall:.4} s vs PSI memory some {psi:.4} s; idle {idle_stall:.6} s"
    );
    assert!(
        stall > 0.0,
        "a cgroup reading past its memory limit stalls in reclaim"
    );
    assert!(
        (stall - psi).abs() <= 0.25 * psi,
        "reclaim stall {stall} s within 25 % of PSI memory some {psi} s"
    );
    assert_eq!(
        idle_stall, 0.0,
        "an idle cgroup without a limit never reclaims"
    );
    agent.stop()?;
    Ok(())
}
