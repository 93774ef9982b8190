//! `cargo xtask bench`: criterion micro-benchmarks of the user-space hot paths and of one
//! planning round at 500 and 5,000 nodes (agent/benches/planning.rs), the simulation quality of
//! the planner against the descheduler baseline on every shipped scenario (the table for
//! BENCHMARKS.md), then the end-to-end benchmarks (`ballast-bench`: kernel cost per event, agent
//! CPU and memory) on the real kernel, with release builds.

use anyhow::Result;
use clap::Args;

use crate::{cargo, setup, workspace_root};

#[derive(Args)]
pub struct BenchArgs {
    /// Short runs (smaller sizes) to check the benchmarks themselves work.
    #[arg(long)]
    quick: bool,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let mut criterion = cargo();
    criterion.args([
        "bench",
        "--package",
        "ballast",
        "--bench",
        "hot_paths",
        "--bench",
        "planning",
    ]);
    if args.quick {
        criterion.args(["--", "--quick"]);
    }
    setup::run(&mut criterion)?;
    setup::run(cargo().args([
        "build",
        "--release",
        "--package",
        "ballast",
        "--package",
        "ballast-tests",
        "--bins",
    ]))?;
    let ballast = workspace_root().join("target/release/ballast");
    println!("\nSimulation quality (ballast simulate --scenario all --compare-baseline --format markdown):\n");
    setup::run(std::process::Command::new(&ballast).args([
        "simulate",
        "--scenario",
        "all",
        "--compare-baseline",
        "--format",
        "markdown",
    ]))?;
    let mut end_to_end =
        std::process::Command::new(workspace_root().join("target/release/ballast-bench"));
    if args.quick {
        end_to_end.arg("--quick");
    }
    setup::run(&mut end_to_end)
}
