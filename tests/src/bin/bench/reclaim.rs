//! Cost per event of the reclaim programs under steady memcg reclaim (a reader of a file four
//! times its cgroup's memory limit).

use std::time::Duration;

use anyhow::{anyhow, Result};
use ballast_tests::{uncached_file, wait_line, Agent, TestCgroup};

use crate::{median, program_counters, Options};

const PROGRAMS: [&str; 2] = ["memcg_reclaim_begin", "memcg_reclaim_end"];
const MIB: u64 = 1 << 20;

pub fn cost(options: &Options) -> Result<String> {
    // Next to the binary, on disk: page cache of tmpfs could not be reclaimed.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("bench binary has no directory"))?;
    let scratch = tempfile::tempdir_in(dir)?;
    let path = uncached_file(scratch.path(), 128)?;
    let path = path
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 temp path"))?;
    let agent = Agent::start(&["--interval", "1s", "--bpf-stats", "always"])?;
    std::thread::sleep(Duration::from_millis(1500));
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); PROGRAMS.len()];
    let mut events = Vec::new();
    for _ in 0..options.storm_rounds.min(5) {
        let start: Vec<(f64, f64)> = PROGRAMS
            .iter()
            .map(|p| program_counters(&agent, p))
            .collect::<Result<_>>()?;
        let mut cgroup =
            TestCgroup::new("ballast-bench-reclaim")?.with_v1_memory_limit(32 * MIB)?;
        let (_, mut out) =
            cgroup.spawn_load(&["reread", &options.storm_seconds.to_string(), path])?;
        wait_line(&mut out, "done")?;
        drop(cgroup);
        std::thread::sleep(Duration::from_millis(1200));
        let end: Vec<(f64, f64)> = PROGRAMS
            .iter()
            .map(|p| program_counters(&agent, p))
            .collect::<Result<_>>()?;
        for (i, ((r0, s0), (r1, s1))) in start.iter().zip(&end).enumerate() {
            if r1 > r0 {
                costs[i].push((s1 - s0) * 1e9 / (r1 - r0));
                if i == 0 {
                    events.push((r1 - r0) / options.storm_seconds as f64);
                }
            }
        }
    }
    agent.stop()?;
    let mut out = format!(
        "### Reclaim programs\n\n\
         a 128 MiB file re-read for {} s under a 32 MiB v1 memory limit, agent with --bpf-stats \
         always.\n\n| figure | median |\n|---|---|\n| memcg reclaim events/s | {:.0} |\n",
        options.storm_seconds,
        median(&mut events),
    );
    for (name, per_event) in PROGRAMS.iter().zip(costs.iter_mut()) {
        out.push_str(&format!(
            "| {name} ns/event (run_time_ns/run_cnt) | {:.1} |\n",
            median(per_event)
        ));
    }
    out.push('\n');
    Ok(out)
}
