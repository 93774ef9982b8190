//! iperf3 over loopback with and without the agent, and the packet counters' cost per packet.

use std::{process::Command, time::Duration};

use anyhow::{anyhow, bail, Context, Result};
use ballast_tests::Agent;

use crate::{median, program_counters, Options};

const PORT: &str = "5299";

/// One iperf3 TCP run over loopback: bits per second received.
fn iperf3(seconds: u64) -> Result<f64> {
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", PORT])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting iperf3 (installed by `cargo xtask setup`)")?;
    std::thread::sleep(Duration::from_millis(300));
    let output = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            PORT,
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .output()?;
    let _ = server.wait();
    if !output.status.success() {
        bail!("iperf3 client: {}", String::from_utf8_lossy(&output.stderr));
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("no end.sum_received.bits_per_second in iperf3 output"))
}

const PROGRAMS: [&str; 2] = ["net_egress", "net_ingress"];

pub fn throughput(options: &Options) -> Result<String> {
    let seconds = options.storm_seconds;
    let mut ratios = Vec::new();
    let mut baseline = Vec::new();
    let mut per_packet: Vec<Vec<f64>> = vec![Vec::new(); PROGRAMS.len()];
    for _ in 0..options.storm_rounds {
        let before = iperf3(seconds)?;
        let agent = Agent::start(&["--interval", "1s", "--bpf-stats", "always"])?;
        std::thread::sleep(Duration::from_millis(1500));
        let counters = |agent: &Agent| -> Result<Vec<(f64, f64)>> {
            PROGRAMS
                .iter()
                .map(|p| program_counters(agent, p))
                .collect()
        };
        let start = counters(&agent)?;
        let with = iperf3(seconds)?;
        std::thread::sleep(Duration::from_millis(1500));
        let end = counters(&agent)?;
        agent.stop()?;
        let after = iperf3(seconds)?;
        let mean = (before + after) / 2.0;
        baseline.push(mean);
        ratios.push(with / mean);
        for (i, ((r0, s0), (r1, s1))) in start.iter().zip(&end).enumerate() {
            if r1 > r0 {
                per_packet[i].push((s1 - s0) * 1e9 / (r1 - r0));
            }
        }
    }
    let mut out = format!(
        "### Network throughput (iperf3 TCP over loopback)\n\n\
         {} rounds of {seconds} s: without agent, with agent (--bpf-stats always, so the cost per \
         packet is measured in the same runs), without again; ratio against the round's mean \
         without, median over rounds.\n\n\
         | figure | median |\n|---|---|\n\
         | throughput without agent | {:.2} Gbit/s |\n\
         | ratio with / without | {:.3} |\n",
        options.storm_rounds,
        median(&mut baseline) / 1e9,
        median(&mut ratios),
    );
    for (name, costs) in PROGRAMS.iter().zip(per_packet.iter_mut()) {
        out.push_str(&format!(
            "| {name} ns/packet (run_time_ns/run_cnt) | {:.1} |\n",
            median(costs)
        ));
    }
    out.push('\n');
    Ok(out)
}
