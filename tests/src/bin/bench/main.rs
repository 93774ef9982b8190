//! `ballast-bench`: the end-to-end benchmarks behind `cargo xtask bench`, run as root on the
//! real kernel. Prints a Markdown report for BENCHMARKS.md.
//!
//! 1. Kernel cost per event under a context-switch storm (pipe ping-pong pinned to one CPU),
//!    from BPF run-time statistics, and the storm's throughput with the agent attached divided
//!    by without, measured alternately in one run.
//! 2. Agent CPU and peak RSS with N live cgroups (each with a task waking every 100 ms), 1 s
//!    interval, /metrics scraped every 15 s, for the eBPF path and the cgroupfs fallback
//!    alternately in one run; plus /metrics scrape latency at that size.
//! 3. Network: iperf3 over loopback with the agent attached divided by without, alternately,
//!    and the packet counters' cost per packet.
//! 4. Reclaim: the reclaim programs' cost per event under steady memcg reclaim.
//!
//! `--figures [failover|rates|rounds]` instead measures the cluster figures (see `cluster.rs`):
//! no root, no kernel programs, not run by `cargo xtask bench`.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use ballast_tests::{load_bin, privileged, sample_with, wait_line, Agent, TestCgroup};

mod cluster;
mod network;
mod reclaim;

pub(crate) struct Options {
    pub(crate) storm_seconds: u64,
    pub(crate) storm_rounds: usize,
    cgroups: usize,
    soak_seconds: u64,
    soak_rounds: usize,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--figures") {
        println!("{}", cluster::figures(args.get(i + 1).map(String::as_str))?);
        return Ok(());
    }
    if !privileged() {
        bail!("benchmarks attach kernel programs: run as root");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let options = if quick {
        Options {
            storm_seconds: 2,
            storm_rounds: 2,
            cgroups: 50,
            soak_seconds: 16,
            soak_rounds: 1,
        }
    } else {
        Options {
            storm_seconds: 3,
            storm_rounds: 9,
            cgroups: 500,
            soak_seconds: 60,
            soak_rounds: 2,
        }
    };
    // `--only storm` / `--only soak` runs one part (for iterating on one figure).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    type Part = fn(&Options) -> Result<String>;
    let parts: [(&str, Part); 4] = [
        ("storm", storm),
        ("network", network::throughput),
        ("reclaim", reclaim::cost),
        ("soak", soak),
    ];
    if only.is_some_and(|o| parts.iter().all(|(name, _)| *name != o)) {
        bail!("--only takes one of storm, network, reclaim, soak");
    }
    let mut report = String::new();
    for (name, part) in parts {
        if only.is_none_or(|o| o == name) {
            report.push_str(&part(&options)?);
        }
    }
    println!("{report}");
    Ok(())
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Round trips per second of a ping-pong pinned to CPU 0.
fn pingpong(seconds: u64) -> Result<f64> {
    let output = Command::new(load_bin()?)
        .args(["pingpong", &seconds.to_string(), "0"])
        .output()?;
    if !output.status.success() {
        bail!(
            "ping-pong failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout)?
        .trim()
        .parse::<f64>()
        .context("ping-pong output")
}

/// (runs, seconds) of a program from the agent's /metrics.
pub(crate) fn program_counters(agent: &Agent, program: &str) -> Result<(f64, f64)> {
    let scrape = agent.scrape()?;
    let runs = sample_with(
        &scrape,
        "ballast_ebpf_program_runs_total",
        &[("program", program)],
    )
    .ok_or_else(|| anyhow!("no run count for {program}: are BPF statistics enabled?"))?;
    let seconds = sample_with(
        &scrape,
        "ballast_ebpf_program_run_seconds_total",
        &[("program", program)],
    )
    .ok_or_else(|| anyhow!("no run time for {program}"))?;
    Ok((runs, seconds))
}

/// Kernel programs whose cost is reported.
const PROGRAMS: [&str; 2] = ["sched_switch", "flush_tick"];

/// One storm with an agent attached: round trips/s, and per program (runs, seconds) deltas.
fn storm_with_agent(options: &Options, args: &[&str]) -> Result<(f64, Vec<(f64, f64)>)> {
    let mut all = vec!["--interval", "1s"];
    all.extend_from_slice(args);
    let agent = Agent::start(&all)?;
    std::thread::sleep(Duration::from_millis(1500));
    let counters = |agent: &Agent| -> Result<Vec<(f64, f64)>> {
        PROGRAMS
            .iter()
            .map(|p| program_counters(agent, p))
            .collect()
    };
    let measure_costs = args.contains(&"always");
    let before = if measure_costs {
        counters(&agent)?
    } else {
        Vec::new()
    };
    let rate = pingpong(options.storm_seconds)?;
    let deltas = if measure_costs {
        std::thread::sleep(Duration::from_millis(1500));
        let after = counters(&agent)?;
        before
            .iter()
            .zip(&after)
            .map(|((r0, s0), (r1, s1))| (r1 - r0, s1 - s0))
            .collect()
    } else {
        Vec::new()
    };
    agent.stop()?;
    Ok((rate, deltas))
}

fn storm(options: &Options) -> Result<String> {
    let mut without = Vec::new();
    let mut ratio_default = Vec::new();
    let mut ratio_always = Vec::new();
    let mut per_event: Vec<Vec<f64>> = vec![Vec::new(); PROGRAMS.len()];
    let mut switches_per_second = Vec::new();
    for _ in 0..options.storm_rounds {
        // Each round is bracketed by two runs without the agent, and each ratio is taken within
        // its round: the VM's throughput drifts by more than the effect being measured.
        let before = pingpong(options.storm_seconds)?;
        // Default agent: statistics sampled, and off during this storm (the first window
        // opens 55 s after start).
        let default = storm_with_agent(options, &[])?.0;
        let (always, deltas) = storm_with_agent(options, &["--bpf-stats", "always"])?;
        let after = pingpong(options.storm_seconds)?;
        let baseline = (before + after) / 2.0;
        without.push(baseline);
        ratio_default.push(default / baseline);
        ratio_always.push(always / baseline);
        for (i, (runs, seconds)) in deltas.iter().enumerate() {
            if *runs > 0.0 {
                per_event[i].push(seconds * 1e9 / runs);
            }
        }
        if let Some((runs, _)) = deltas.first() {
            switches_per_second.push(runs / options.storm_seconds as f64);
        }
    }
    let mut out = format!(
        "### Kernel cost under a context-switch storm\n\n\
         pipe ping-pong between two processes pinned to CPU 0, {} rounds of {} s runs: no agent, \
         default agent (run-time statistics sampled, off during the storm), agent with \
         --bpf-stats always, no agent again; ratios against the mean of the round's two runs \
         without agent, median over rounds.\n\n\
         | figure | median |\n|---|---|\n\
         | round trips/s without agent | {:.0} |\n\
         | ratio default agent / without | {:.3} |\n\
         | ratio --bpf-stats always / without | {:.3} |\n\
         | sched_switch events/s during storm | {:.0} |\n",
        options.storm_rounds,
        options.storm_seconds,
        median(&mut without),
        median(&mut ratio_default),
        median(&mut ratio_always),
        median(&mut switches_per_second),
    );
    for (name, costs) in PROGRAMS.iter().zip(per_event.iter_mut()) {
        out.push_str(&format!(
            "| {name} ns/event (run_time_ns/run_cnt) | {:.1} |\n",
            median(costs)
        ));
    }
    out.push('\n');
    Ok(out)
}

/// CPU seconds (utime+stime, all threads) and peak RSS (VmHWM, KiB) of a process.
fn process_usage(pid: u32) -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("bad stat"))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat are the 12th and 13th after the command name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no VmHWM"))?;
    Ok((ticks / hz, hwm))
}

struct SoakResult {
    cpu_share: f64,
    peak_rss_kib: u64,
    scrape_ms: Vec<f64>,
    containers: usize,
}

fn soak_once(options: &Options, extra: &[&str]) -> Result<SoakResult> {
    let mut args = vec!["--interval", "1s"];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args)?;
    // Warm up: the first walks and map entries.
    std::thread::sleep(Duration::from_secs(3));
    let pid = agent.pid();
    let (cpu0, _) = process_usage(pid)?;
    let started = Instant::now();
    let mut scrape_ms = Vec::new();
    let mut containers = 0;
    while started.elapsed() < Duration::from_secs(options.soak_seconds) {
        let t = Instant::now();
        let text = agent.get_text("/metrics")?;
        scrape_ms.push(t.elapsed().as_secs_f64() * 1e3);
        containers = text
            .lines()
            .filter(|l| l.starts_with("ballast_container_cpu_seconds_total{"))
            .count();
        std::thread::sleep(Duration::from_secs(15).min(Duration::from_secs(options.soak_seconds)));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, peak_rss_kib) = process_usage(pid)?;
    // Scrape latency at this size, back to back (not counted in the CPU window above).
    for _ in 0..20 {
        let t = Instant::now();
        agent.get_text("/metrics")?;
        scrape_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    agent.stop()?;
    Ok(SoakResult {
        cpu_share: (cpu1 - cpu0) / elapsed,
        peak_rss_kib,
        scrape_ms,
        containers,
    })
}

fn soak(options: &Options) -> Result<String> {
    let mut cgroups = Vec::with_capacity(options.cgroups);
    for i in 0..options.cgroups {
        let mut cgroup = TestCgroup::new(&format!("ballast-bench-{i}"))?;
        let (_, mut stdout) = cgroup.spawn_load(&["tick", "100"])?;
        wait_line(&mut stdout, "ready")?;
        cgroups.push(cgroup);
    }
    let mut ebpf = Vec::new();
    let mut fallback = Vec::new();
    for _ in 0..options.soak_rounds {
        ebpf.push(soak_once(options, &[])?);
        fallback.push(soak_once(options, &["--no-ebpf"])?);
    }
    drop(cgroups);
    let summarize = |runs: &[SoakResult]| {
        let mut cpu: Vec<f64> = runs.iter().map(|r| r.cpu_share).collect();
        let mut scrape: Vec<f64> = runs.iter().flat_map(|r| r.scrape_ms.clone()).collect();
        let rss = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
        let containers = runs.iter().map(|r| r.containers).min().unwrap_or(0);
        (median(&mut cpu), rss, median(&mut scrape), containers)
    };
    let (e_cpu, e_rss, e_scrape, e_n) = summarize(&ebpf);
    let (f_cpu, f_rss, f_scrape, f_n) = summarize(&fallback);
    Ok(format!(
        "### Agent cost with {} live cgroups\n\n\
         each cgroup holds a task waking every 100 ms; 1 s interval; /metrics scraped every 15 s; \
         {} x {} s per mode, alternating.\n\n\
         | mode | CPU (share of one core) | peak RSS | /metrics median latency | container series |\n|---|---|---|---|---|\n\
         | eBPF | {:.3} % | {:.1} MiB | {:.2} ms | {} |\n| cgroupfs fallback | {:.3} % | {:.1} MiB | {:.2} ms | {} |\n\n\
         eBPF CPU / fallback CPU: {:.3}\n\n",
        options.cgroups,
        options.soak_rounds,
        options.soak_seconds,
        e_cpu * 100.0,
        e_rss as f64 / 1024.0,
        e_scrape,
        e_n,
        f_cpu * 100.0,
        f_rss as f64 / 1024.0,
        f_scrape,
        f_n,
        e_cpu / f_cpu,
    ))
}
