//! Orchestration for developers and CI: `cargo xtask setup | run | test | bench`.
//! It prepares the machine and drives cargo; the build itself is plain cargo (agent/build.rs
//! builds the eBPF object).

mod setup;

use anyhow::Result;
use clap::{Parser, Subcommand};

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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::ensure(setup::Need::Test),
    }
}
