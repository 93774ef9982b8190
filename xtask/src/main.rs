//! Orchestration for developers and CI: `cargo xtask setup | run | test | bench`.
//! It prepares the machine and drives cargo; the build itself is plain cargo (agent/build.rs
//! builds the eBPF object).

mod bench;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use setup::{run, Need};

#[derive(Parser)]
#[command(about = "Ballast developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent; root for missing Debian packages).
    Setup,
    /// Set up, build, run `ballast agent --standalone` on this host and show `ballast top`.
    Run {
        /// Extra arguments for `ballast agent` (e.g. `-- --no-ebpf`).
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Set up, build, and run the whole test suite (unit, kernel, HTTP).
    Test,
    /// Set up, build, and run the benchmarks; prints the figures for BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::ensure(Need::Test),
        Task::Run { agent_args } => run_agent(&agent_args),
        Task::Test => test(),
        Task::Bench(args) => {
            setup::ensure(Need::Test)?;
            bench::run(&args)
        }
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn test() -> Result<()> {
    setup::ensure(Need::Test)?;
    // The kernel tests start the real agent binary, so build it first.
    run(cargo().args(["build", "--package", "ballast", "--bins"]))?;
    run(cargo().args([
        "test",
        "--package",
        "ballast",
        "--package",
        "ballast-common",
        "--package",
        "xtask",
    ]))?;
    // Kernel tests pin workloads to CPUs and attach programs node-wide: one at a time.
    run(cargo().args([
        "test",
        "--package",
        "ballast-tests",
        "--",
        "--test-threads=1",
    ]))
    .context("integration tests failed")
}

extern "C" fn ignore_signal(_: libc::c_int) {}

fn run_agent(agent_args: &[String]) -> Result<()> {
    setup::ensure(Need::Build)?;
    run(cargo().args(["build", "--release", "--package", "ballast", "--bins"]))?;
    let binary = workspace_root().join("target/release/ballast");
    // Ctrl-C goes to the whole foreground group: let the agent and `top` handle it and stay
    // alive long enough to stop the agent cleanly. A handler (unlike SIG_IGN) is reset on exec.
    // SAFETY: installing a handler that does nothing is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            ignore_signal as *const () as libc::sighandler_t,
        )
    };
    let mut agent = Command::new(&binary)
        .args(["agent", "--standalone"])
        .args(agent_args)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let listen = agent_args
        .windows(2)
        .find(|w| w[0] == "--listen")
        .map_or_else(|| "127.0.0.1:9477".to_string(), |w| w[1].clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && std::net::TcpStream::connect(&listen).is_err() {
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited ({status}); see its messages above");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Give it one interval to build its first window.
    std::thread::sleep(Duration::from_millis(2200));
    let top = Command::new(&binary)
        .args(["top", "--agent", &format!("http://{listen}")])
        .status();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(agent.id())?, libc::SIGTERM) };
    let status = agent.wait()?;
    eprintln!("agent stopped: {status}");
    top.context("running ballast top")?;
    Ok(())
}
