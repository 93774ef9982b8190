//! `ballast top`: this node's containers, most CPU-pressured first, refreshed every interval.
//!
//! It reads a running agent's `/v1/load` rather than attaching programs itself, so it needs no
//! privileges and shows exactly what the leader will see. Output is plain text redrawn with two
//! ANSI sequences, which works in any terminal and in tmux; `--once --json` is for scripts.

use std::{io::Write, time::Duration};

use anyhow::{Context, Result};
use clap::Args;

use super::agent::parse_duration;
use crate::serve::api::{ContainerLoad, LoadResponse};

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Base URL of the agent.
    #[arg(long, env = "BALLAST_AGENT", default_value = "http://127.0.0.1:9477")]
    pub agent: String,
    /// Print one screen and exit.
    #[arg(long)]
    pub once: bool,
    /// With --once: print the agent's JSON document instead of the table.
    #[arg(long, requires = "once")]
    pub json: bool,
    /// Refresh interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Rows to show (default: as many as fit the terminal).
    #[arg(long)]
    pub limit: Option<usize>,
    /// An agent in a cluster wants the shared token (its Secret's file) as a bearer token.
    #[arg(long, value_name = "PATH", env = "BALLAST_LOAD_TOKEN_FILE")]
    pub load_token_file: Option<std::path::PathBuf>,
}

pub fn run(args: TopArgs) -> Result<()> {
    let url = format!("{}/v1/load", args.agent.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(3)))
            .build(),
    );
    let token = match &args.load_token_file {
        Some(path) => Some(crate::serve::auth::TokenFile::open(path)?),
        None => None,
    };
    loop {
        let authorization = token
            .as_ref()
            .map(|t| t.read().map(|t| t.authorization()))
            .transpose()?;
        let fetched = fetch(&agent, &url, authorization);
        let mut out = std::io::stdout().lock();
        if args.once {
            let load = fetched?;
            if args.json {
                serde_json::to_writer_pretty(&mut out, &load)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", render(&load, terminal_size(), args.limit))?;
            }
            return Ok(());
        }
        // Home + clear: redraw in place without a full-screen library.
        write!(out, "\x1b[H\x1b[2J")?;
        match fetched {
            Ok(load) => write!(out, "{}", render(&load, terminal_size(), args.limit))?,
            Err(err) => writeln!(
                out,
                "ballast top: {err:#}\n(retrying every {:?}; Ctrl-C quits)",
                args.interval
            )?,
        }
        out.flush()?;
        drop(out);
        std::thread::sleep(args.interval);
    }
}

fn fetch(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<http::HeaderValue>,
) -> Result<LoadResponse> {
    let mut request = agent.get(url);
    if let Some(authorization) = authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    let mut response = request.call().with_context(|| {
        format!(
            "cannot read {url}; is `ballast agent` running? (--agent sets the address; an agent \
             in a cluster needs --load-token-file)"
        )
    })?;
    response
        .body_mut()
        .read_json::<LoadResponse>()
        .with_context(|| format!("{url} did not return a load document"))
}

/// (columns, rows) of the terminal, 100x30 when not a terminal.
fn terminal_size() -> (usize, usize) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the valid pointer we pass; failure leaves zeros.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 && size.ws_row > 0 {
        (usize::from(size.ws_col), usize::from(size.ws_row))
    } else {
        (100, 30)
    }
}

/// The whole screen as text.
pub fn render(
    load: &LoadResponse,
    (columns, rows): (usize, usize),
    limit: Option<usize>,
) -> String {
    let cpu = &load.cpu;
    let mut out = format!(
        "ballast top  node {}  cpu mode {}  memory mode {}  network mode {}  window {:.1}s\n\
         node: {} CPUs, {:.2} cores used ({:.0}%), run-queue wait {} s/s, p50 {}, p99 {}; \
         memory {}, reclaim stall {} s/s\n",
        load.node,
        load.modes.cpu.as_str(),
        load.modes.memory.as_str(),
        load.modes.network.as_str(),
        load.window_seconds,
        cpu.cpus,
        cpu.cores_used,
        cpu.utilisation * 100.0,
        opt(cpu.runqueue_wait_per_second, |v| format!("{v:.3}")),
        opt(cpu.runqueue_latency_p50_seconds, duration),
        opt(cpu.runqueue_latency_p99_seconds, duration),
        opt(load.memory.total_bytes.map(|b| b as f64), bytes),
        opt(load.memory.reclaim_stall_per_second, |v| format!("{v:.3}")),
    );
    if let Some(score) = &load.score {
        out.push_str(&format!("node load {}\n", score.smoothed.reason));
    }
    if let Some(reason) = &load.fallback_reason {
        out.push_str(&format!(
            "eBPF unavailable ({reason}): waits from PSI, no latency percentiles\n"
        ));
    }
    out.push('\n');
    let fixed = 7 + 9 + 9 + 9 + 9 + 10 + 9 + 9 + 9 + 9 + 6;
    let name_width = columns.saturating_sub(fixed + 1).clamp(12, 60);
    out.push_str(&format!(
        "{:<name_width$} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}\n",
        "CONTAINER",
        "SCORE",
        "CORES",
        "WAIT/s",
        "WAIT/CPU",
        "P50",
        "P99",
        "THROTTLED",
        "WSET",
        "RECLM/s",
        "NET B/s",
        "RETX/s"
    ));
    let room = limit.unwrap_or_else(|| rows.saturating_sub(6).max(5));
    for c in load.containers.iter().take(room) {
        out.push_str(&row(c, name_width));
    }
    if load.containers.len() > room {
        out.push_str(&format!("... {} more\n", load.containers.len() - room));
    }
    out
}

fn row(c: &ContainerLoad, name_width: usize) -> String {
    let cpu = &c.cpu;
    let wait = cpu.runqueue_wait_per_second.or(cpu.psi_some_share);
    format!(
        "{:<name_width$} {:>5} {:>6.2} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8}\n",
        truncate(&c.name, name_width),
        opt(
            c.score.as_ref().and_then(|s| s.smoothed.score),
            |v| format!("{v:.2}")
        ),
        cpu.cores_used,
        opt(wait, |v| format!("{v:.3}")),
        opt(cpu.runqueue_wait_per_cpu_second, |v| format!("{v:.2}")),
        opt(cpu.runqueue_latency_p50_seconds, duration),
        opt(cpu.runqueue_latency_p99_seconds, duration),
        opt(cpu.throttled_share, |v| format!("{:.0}%", v * 100.0)),
        opt(c.memory.working_set_bytes.map(|b| b as f64), bytes),
        opt(c.memory.reclaim_stall_per_second, |v| format!("{v:.3}")),
        opt(
            c.network
                .receive_bytes_per_second
                .zip(c.network.transmit_bytes_per_second)
                .map(|(rx, tx)| rx + tx),
            bytes
        ),
        opt(c.network.tcp_retransmits_per_second, |v| format!("{v:.1}")),
    )
}

/// Sizes in binary units, 4 significant characters or so.
fn bytes(value: f64) -> String {
    const UNITS: [&str; 5] = ["B", "Ki", "Mi", "Gi", "Ti"];
    let mut value = value;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

fn opt(value: Option<f64>, show: impl Fn(f64) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

fn duration(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2}s")
    } else if seconds >= 1e-3 {
        format!("{:.1}ms", seconds * 1e3)
    } else {
        format!("{:.0}us", seconds * 1e6)
    }
}

/// Keeps the end of long names (the distinctive part of a cgroup path).
fn truncate(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_readable_units() {
        assert_eq!(duration(2.5), "2.50s");
        assert_eq!(duration(0.0123), "12.3ms");
        assert_eq!(duration(0.000_045), "45us");
    }

    #[test]
    fn truncation_keeps_the_tail() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("/kubepods.slice/abcdef", 8), "…/abcdef");
    }
}
