//! `ballast simulate`: runs the planner on a simulated cluster, optionally side by side with the
//! descheduler's LowNodeUtilization baseline, and prints the comparison (table or JSON), with an
//! optional SVG plot of node load over time.

use std::{io::Write as _, path::PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{
    rebalance::Policy,
    sim::{
        report,
        run::{compare, RunConfig},
        scenario::{self, Scenario, SHIPPED},
    },
};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// A shipped scenario's name (see --list), `all` for every shipped one, or a scenario file
    /// (TOML).
    #[arg(long, required_unless_present = "list")]
    pub scenario: Option<String>,
    /// List the shipped scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Planner policy, TOML (defaults when absent).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Also run the descheduler's LowNodeUtilization (by requests) on the same scenario and seed.
    #[arg(long)]
    pub compare_baseline: bool,
    /// Planning rounds (default: the scenario's).
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seed of the load noise and the scheduler's tie-breaks (default: the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Leave out the soft taint the executor keeps on the nodes Ballast relieves, to see what it
    /// is worth (replacements then often land back where they were evicted from).
    #[arg(long)]
    pub no_soft_taint: bool,
    /// Write an SVG plot of node utilisation and pressure per round here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    /// The simulation-quality rows of BENCHMARKS.md (needs --compare-baseline).
    Markdown,
}

/// A shipped scenario by name, else a file.
pub fn load_scenario(name_or_path: &str) -> Result<Scenario> {
    if let Some(text) = scenario::shipped(name_or_path) {
        return Ok(scenario::parse(name_or_path, text)?);
    }
    let text = std::fs::read_to_string(name_or_path).with_context(|| {
        let names: Vec<&str> = SHIPPED.iter().map(|(name, _)| *name).collect();
        format!(
            "`{name_or_path}` is neither a shipped scenario ({}) nor a readable file",
            names.join(", ")
        )
    })?;
    Ok(scenario::parse(name_or_path, &text)?)
}

pub fn run(args: SimulateArgs) -> Result<()> {
    if args.list {
        let mut out = std::io::stdout().lock();
        for (name, text) in SHIPPED {
            let scenario = scenario::parse(name, text)?;
            let summary = scenario
                .description
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            writeln!(out, "{name}\n    {summary}\n")?;
        }
        return Ok(());
    }
    let name = args.scenario.as_deref().context("--scenario is required")?;
    anyhow::ensure!(
        args.format != Format::Markdown || args.compare_baseline,
        "--format markdown compares with the baseline: add --compare-baseline"
    );
    let scenarios = if name == "all" {
        SHIPPED
            .iter()
            .map(|(name, text)| scenario::parse(name, text))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        vec![load_scenario(name)?]
    };
    anyhow::ensure!(
        args.plot.is_none() || scenarios.len() == 1,
        "--plot draws one scenario: name one instead of `all`"
    );
    let policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the policy {}", path.display()))?;
            Policy::from_toml(&text)
                .with_context(|| format!("{} is not a usable policy", path.display()))?
        }
        None => Policy::default(),
    };
    let mut comparisons = Vec::with_capacity(scenarios.len());
    for scenario in &scenarios {
        comparisons.push(simulate(scenario, &policy, &args)?);
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Table => {
            for comparison in &comparisons {
                writeln!(out, "{}", report::table(comparison))?;
            }
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut out, &comparisons)?;
            writeln!(out)?;
        }
        Format::Markdown => write!(out, "{}", report::quality_markdown(&comparisons))?,
    }
    if let (Some(path), [scenario]) = (&args.plot, scenarios.as_slice()) {
        std::fs::write(
            path,
            report::svg(&comparisons[0], scenario.target.max_pressure),
        )
        .with_context(|| format!("writing the plot to {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

/// One scenario, ours and (when asked) the baseline, behind a progress bar.
fn simulate(
    scenario: &Scenario,
    policy: &Policy,
    args: &SimulateArgs,
) -> Result<report::Comparison> {
    let config = RunConfig {
        soft_taint: !args.no_soft_taint,
        ..RunConfig::new(
            args.rounds.unwrap_or(scenario.rounds),
            args.seed.unwrap_or(scenario.seed),
        )
    };
    anyhow::ensure!(config.rounds > 0, "--rounds must be at least 1");
    let runs = if args.compare_baseline { 2 } else { 1 };
    // Drawn on stderr and hidden when stderr is not a terminal, so pipes get clean output.
    let bar = ProgressBar::with_draw_target(
        Some(u64::from(config.rounds) * runs),
        ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rounds ({eta})")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    bar.set_message(format!("simulating {}", scenario.name));
    let comparison = compare(
        scenario,
        policy,
        config,
        args.compare_baseline,
        &mut |done| bar.set_position(u64::from(done)),
    )?;
    bar.finish_and_clear();
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_load_by_name_or_file_and_errors_say_which_exist() {
        assert_eq!(
            load_scenario("near-full").expect("shipped").name,
            "near-full"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mine.toml");
        let text = scenario::shipped("near-full")
            .expect("shipped")
            .replace("name = \"near-full\"", "name = \"mine\"");
        std::fs::write(&path, text).expect("written");
        let from_file = load_scenario(path.to_str().expect("utf-8 path")).expect("valid file");
        assert_eq!(from_file.name, "mine");
        let missing = format!(
            "{:#}",
            load_scenario("no-such-scenario").expect_err("missing")
        );
        assert!(
            missing.contains("rollout-hotspot") && missing.contains("over-requested"),
            "{missing}"
        );
        std::fs::write(&path, "name = \"x\"\ndescription = \"y\"\nround = 3\n").expect("written");
        let typo = format!(
            "{:#}",
            load_scenario(path.to_str().expect("utf-8 path")).expect_err("typo")
        );
        assert!(typo.contains("unknown field `round`"), "{typo}");
        assert_eq!(
            typo.matches("unknown field `round`").count(),
            1,
            "printed once: {typo}"
        );
    }
}
