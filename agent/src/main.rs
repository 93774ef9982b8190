//! `ballast`: the node agent and its command-line tools.

use clap::{Parser, Subcommand};

use ballast::cli::{agent::AgentArgs, plan::PlanArgs, simulate::SimulateArgs, top::TopArgs};

#[derive(Parser)]
#[command(
    name = "ballast",
    version,
    about = "eBPF-assisted, load-aware rebalancer for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: measure per-container pressure and serve it over HTTP.
    Agent(AgentArgs),
    /// Live view of this node's containers, most pressured first (reads a running agent).
    Top(TopArgs),
    /// Plan one rebalancing round on a captured cluster snapshot and explain every decision.
    Plan(PlanArgs),
    /// Try the planner on a simulated cluster, side by side with the descheduler's baseline.
    Simulate(SimulateArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Agent(args) => ballast::cli::agent::run(args),
        Command::Top(args) => ballast::cli::top::run(args),
        Command::Plan(args) => ballast::cli::plan::run(args),
        Command::Simulate(args) => ballast::cli::simulate::run(args),
    }
}
