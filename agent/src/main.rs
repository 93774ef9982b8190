//! `ballast`: the node agent and its command-line tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ballast::cli::{
    agent::AgentArgs, check::CheckArgs, plan::PlanArgs, simulate::SimulateArgs, top::TopArgs,
};

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
    /// Report, per workload of a captured snapshot or of the cluster now, whether Ballast can
    /// move it and why not; exit 1 when some workload is at or above --fail-on, 2 when it could
    /// not check (bad input, cluster not readable).
    Check(CheckArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Agent(args) => ballast::cli::agent::run(args),
        Command::Top(args) => ballast::cli::top::run(args),
        Command::Plan(args) => ballast::cli::plan::run(args),
        Command::Simulate(args) => ballast::cli::simulate::run(args),
        // Its own exit statuses: 0 / 1 by --fail-on, 2 when it could not run.
        Command::Check(args) => return ballast::cli::check::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:?}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// The README is the configuration reference: every flag of every subcommand is in it, so
    /// the docs cannot fall behind the code.
    #[test]
    fn the_readme_documents_every_flag() {
        let readme = include_str!("../../README.md");
        let command = Cli::command();
        let mut missing = Vec::new();
        for sub in command.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else {
                    continue;
                };
                if long != "help" && !readme.contains(&format!("--{long}")) {
                    missing.push(format!("ballast {} --{long}", sub.get_name()));
                }
            }
        }
        assert!(missing.is_empty(), "not in README.md: {missing:?}");
    }
}
