//! A run's results for people: the side-by-side table, the quality ratio of the benchmark, and an
//! SVG plot of node load over time. Plain strings; the CLI decides where they go.

use std::fmt::Write as _;

use serde::Serialize;

use super::{metrics::RunMetrics, run::Outcome};

/// Ours and, when compared, the baseline's outcome on one scenario and seed.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub scenario: String,
    pub seed: u64,
    pub rounds: u32,
    pub node_names: Vec<String>,
    pub ours: Outcome,
    pub baseline: Option<Outcome>,
}

/// Evictions ours needed to reach the target over the baseline's, when that ratio means
/// something: `Some(0.0)` when the baseline never got there (any finite number of evictions beats
/// never), `None` when ours never got there or neither needed any eviction.
pub fn eviction_ratio(ours: &RunMetrics, baseline: &RunMetrics) -> Option<f64> {
    match (ours.evictions_to_balance, baseline.evictions_to_balance) {
        (Some(_), None) => Some(0.0),
        (Some(o), Some(b)) if b > 0 => Some(f64::from(o) / f64::from(b)),
        _ => None,
    }
}

fn optional(value: Option<u32>) -> String {
    value.map_or_else(|| "never".to_string(), |v| v.to_string())
}

type Row = (&'static str, fn(&RunMetrics) -> String);

const ROWS: [Row; 15] = [
    ("evictions", |m| m.evictions.to_string()),
    ("evictions to reach target", |m| {
        optional(m.evictions_to_balance)
    }),
    ("on target from round", |m| optional(m.balanced_from_round)),
    ("rounds on target", |m| {
        format!("{} of {}", m.balanced_rounds, m.rounds)
    }),
    ("max node pressure", |m| format!("{:.2}", m.max_pressure)),
    ("mean node pressure", |m| format!("{:.3}", m.mean_pressure)),
    ("final max node pressure", |m| {
        format!("{:.2}", m.final_max_pressure)
    }),
    ("utilisation CV (mean)", |m| {
        format!("{:.3}", m.mean_utilisation_cv)
    }),
    ("utilisation CV (final)", |m| {
        format!("{:.3}", m.final_utilisation_cv)
    }),
    ("node-minutes above target", |m| {
        format!("{:.1}", m.node_seconds_above_target as f64 / 60.0)
    }),
    ("replicas evicted again in window", |m| {
        m.repeated_replicas.to_string()
    }),
    ("returned to source node", |m| {
        m.returned_to_source.to_string()
    }),
    ("bounced back (A -> B -> A)", |m| m.bounced_back.to_string()),
    ("PDB violations", |m| m.pdb_violations.to_string()),
    ("limit violations", |m| m.limit_violations.to_string()),
];

/// The summary table.
pub fn table(comparison: &Comparison) -> String {
    let mut columns = vec![("ballast", &comparison.ours.metrics)];
    if let Some(baseline) = &comparison.baseline {
        columns.push(("baseline", &baseline.metrics));
    }
    let label_width = ROWS.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {} (seed {}, {} rounds, {} nodes); pressure 1.0 = fully pressured",
        comparison.scenario,
        comparison.seed,
        comparison.rounds,
        comparison.node_names.len()
    );
    let _ = write!(out, "{:label_width$}", "");
    for (name, _) in &columns {
        let _ = write!(out, "  {name:>10}");
    }
    out.push('\n');
    for (label, value) in ROWS {
        let _ = write!(out, "{label:label_width$}");
        for (_, metrics) in &columns {
            let _ = write!(out, "  {:>10}", value(metrics));
        }
        out.push('\n');
    }
    if let Some(baseline) = &comparison.baseline {
        let ratio = eviction_ratio(&comparison.ours.metrics, &baseline.metrics);
        let _ = writeln!(
            out,
            "evictions to reach target, ballast / baseline: {}",
            match ratio {
                Some(r) if baseline.metrics.evictions_to_balance.is_none() => {
                    format!("{r:.2} (the baseline never reached it)")
                }
                Some(r) => format!("{r:.2}"),
                None => "n/a".to_string(),
            }
        );
    }
    out
}

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 220.0;
const MARGIN: f64 = 50.0;
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One panel: a line per node of `values[round][node]`, y from 0 to `y_max`.
fn panel(
    out: &mut String,
    top: f64,
    title: &str,
    values: &[Vec<f64>],
    y_max: f64,
    target: Option<f64>,
) {
    let plot_width = WIDTH - 2.0 * MARGIN;
    let plot_height = PANEL_HEIGHT - 60.0;
    let bottom = top + 30.0 + plot_height;
    let rounds = values.len().max(2) - 1;
    let x = |round: usize| MARGIN + plot_width * round as f64 / rounds as f64;
    let y = |value: f64| bottom - plot_height * (value.min(y_max) / y_max);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN}" y="{}" font-size="14" font-family="sans-serif">{}</text>"#,
        top + 18.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{MARGIN}" y="{}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#999"/>"##,
        top + 30.0
    );
    for tick in 0..=4 {
        let value = y_max * f64::from(tick) / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" font-size="10" font-family="sans-serif" text-anchor="end">{value:.2}</text>"#,
            MARGIN - 4.0,
            y(value) + 3.0
        );
    }
    if let Some(target) = target {
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
            MARGIN + plot_width,
            y(target),
            y(target)
        );
    }
    let nodes = values.first().map_or(0, Vec::len);
    for node in 0..nodes {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(round, row)| format!("{:.1},{:.1}", x(round), y(row[node])))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            COLOURS[node % COLOURS.len()],
            points.join(" ")
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="10" font-family="sans-serif" text-anchor="end">round {rounds}</text>"#,
        MARGIN + plot_width,
        bottom + 14.0
    );
}

/// Node utilisation and pressure per round, for each policy run, as one SVG document.
pub fn svg(comparison: &Comparison, target_pressure: f64) -> String {
    let runs: Vec<&Outcome> = std::iter::once(&comparison.ours)
        .chain(comparison.baseline.as_ref())
        .collect();
    let height = PANEL_HEIGHT * 2.0 * runs.len() as f64 + 40.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}">"#
    );
    out.push('\n');
    out.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
    out.push('\n');
    let mut top = 0.0;
    for run in &runs {
        let name = run.contender.name();
        let utilisation_max = run
            .series
            .utilisation
            .iter()
            .flatten()
            .copied()
            .fold(1.0, f64::max);
        panel(
            &mut out,
            top,
            &format!(
                "{}: {name}: node utilisation (CPU or memory demand / capacity)",
                comparison.scenario
            ),
            &run.series.utilisation,
            utilisation_max,
            None,
        );
        top += PANEL_HEIGHT;
        let pressure_max = run
            .series
            .pressure
            .iter()
            .flatten()
            .copied()
            .fold(target_pressure * 2.0, f64::max);
        panel(
            &mut out,
            top,
            &format!("{name}: node pressure (dashed: target)"),
            &run.series.pressure,
            pressure_max,
            Some(target_pressure),
        );
        top += PANEL_HEIGHT;
    }
    let mut x = MARGIN;
    for (i, node) in comparison.node_names.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" font-size="11" font-family="sans-serif" fill="{}">{}</text>"#,
            top + 20.0,
            COLOURS[i % COLOURS.len()],
            escape(node)
        );
        x += 8.0 * node.len() as f64 + 16.0;
    }
    out.push_str("</svg>\n");
    out
}

/// One Markdown row per scenario for BENCHMARKS.md: the simulation-quality figures, ours /
/// baseline.
pub fn quality_markdown(comparisons: &[Comparison]) -> String {
    let mut out = String::from(
        "| scenario | rounds | evictions to target (ballast / baseline) | ratio | evictions in all | final max node pressure | node-minutes above target | returned to source | bounced back | PDB / limit violations (ballast) |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in comparisons {
        let ours = &c.ours.metrics;
        let Some(baseline) = c.baseline.as_ref().map(|b| &b.metrics) else {
            continue;
        };
        let ratio = eviction_ratio(ours, baseline).map_or("n/a".to_string(), |r| format!("{r:.2}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} | {} / {} | {:.2} / {:.2} | {:.1} / {:.1} | {} / {} | {} / {} | {} / {} |",
            c.scenario,
            c.rounds,
            optional(ours.evictions_to_balance),
            optional(baseline.evictions_to_balance),
            ratio,
            ours.evictions,
            baseline.evictions,
            ours.final_max_pressure,
            baseline.final_max_pressure,
            ours.node_seconds_above_target as f64 / 60.0,
            baseline.node_seconds_above_target as f64 / 60.0,
            ours.returned_to_source,
            baseline.returned_to_source,
            ours.bounced_back,
            baseline.bounced_back,
            ours.pdb_violations,
            ours.limit_violations,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        rebalance::Policy,
        sim::{
            run::{compare, RunConfig},
            scenario::{parse, shipped},
        },
    };

    fn comparison() -> Comparison {
        let scenario = parse("n", shipped("noisy-neighbour").expect("shipped")).expect("valid");
        let config = RunConfig::new(8, 3);
        compare(&scenario, &Policy::default(), config, true, &mut |_| {}).expect("runs")
    }

    #[test]
    fn ratio_counts_never_as_worse_than_anything() {
        let reached = |evictions| RunMetrics {
            evictions_to_balance: evictions,
            ..RunMetrics::default()
        };
        assert_eq!(eviction_ratio(&reached(Some(3)), &reached(None)), Some(0.0));
        assert_eq!(
            eviction_ratio(&reached(Some(2)), &reached(Some(4))),
            Some(0.5)
        );
        assert_eq!(eviction_ratio(&reached(Some(0)), &reached(Some(0))), None);
        assert_eq!(eviction_ratio(&reached(None), &reached(Some(4))), None);
    }

    #[test]
    fn table_markdown_and_svg_show_both_runs() {
        let comparison = comparison();
        let table = table(&comparison);
        assert!(
            table.contains("ballast") && table.contains("baseline"),
            "{table}"
        );
        assert_eq!(table.lines().count(), 2 + ROWS.len() + 1, "{table}");
        let markdown = quality_markdown(std::slice::from_ref(&comparison));
        assert_eq!(markdown.lines().count(), 3, "{markdown}");
        assert!(markdown.contains("| noisy-neighbour | 8 |"), "{markdown}");
        let svg = svg(&comparison, 0.3);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Two panels per run, one line per node in each.
        assert_eq!(svg.matches("<polyline").count(), 2 * 2 * 6);
        assert!(svg.contains("worker-5"));
    }
}
