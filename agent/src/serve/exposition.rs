//! A writer for the Prometheus text exposition format (0.0.4).
//!
//! Hand-written because the `metrics` facade cannot say what Ballast exports: its counters are
//! integers and its histograms are built from observations, while Ballast has float-second
//! counters and histograms whose bucket counts come ready-made from the kernel. The agent's
//! self-metrics still go through `metrics` and are appended with [`Exposition::append_raw`].

use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Text being built; families are written in the order they are opened.
#[derive(Debug, Default)]
pub struct Exposition {
    buf: String,
    family: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a family: `# HELP` and `# TYPE`, then its samples. Counter names end in `_total`
    /// (Prometheus convention); names are compile-time constants, so that is checked in tests
    /// and debug builds.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricKind) {
        debug_assert!(valid_metric_name(name), "invalid metric name {name}");
        debug_assert!(kind != MetricKind::Counter || name.ends_with("_total"), "counter {name} must end in _total");
        self.family.clear();
        self.family.push_str(name);
        let _ = writeln!(self.buf, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.buf, "# TYPE {name} {}", kind.as_str());
    }

    /// One counter or gauge sample of the open family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = std::mem::take(&mut self.family);
        self.line(&name, "", labels, None, value);
        self.family = name;
    }

    /// One histogram series of the open family from per-bucket (not cumulative) counts; `bounds`
    /// are the finite upper bounds, `counts` has one more entry for the open last bucket.
    pub fn histogram(&mut self, labels: &[(&str, &str)], bounds: &[f64], counts: &[u64], sum: f64) {
        debug_assert_eq!(bounds.len() + 1, counts.len());
        let name = std::mem::take(&mut self.family);
        let mut cumulative = 0u64;
        for (bound, count) in bounds.iter().zip(counts) {
            cumulative = cumulative.saturating_add(*count);
            self.line(&name, "_bucket", labels, Some(&format_value(*bound)), cumulative as f64);
        }
        let total = counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
        self.line(&name, "_bucket", labels, Some("+Inf"), total as f64);
        self.line(&name, "_sum", labels, None, sum);
        self.line(&name, "_count", labels, None, total as f64);
        self.family = name;
    }

    /// Text rendered elsewhere (already in the exposition format).
    pub fn append_raw(&mut self, text: &str) {
        self.buf.push_str(text);
        if !text.is_empty() && !text.ends_with('\n') {
            self.buf.push('\n');
        }
    }

    pub fn finish(self) -> String {
        self.buf
    }

    fn line(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], le: Option<&str>, value: f64) {
        self.buf.push_str(name);
        self.buf.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.buf.push('{');
            let mut first = true;
            for (key, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
                debug_assert!(valid_label_name(key), "invalid label name {key}");
                if !first {
                    self.buf.push(',');
                }
                first = false;
                self.buf.push_str(key);
                self.buf.push_str("=\"");
                escape_label_value_into(&mut self.buf, value);
                self.buf.push('"');
            }
            self.buf.push('}');
        }
        self.buf.push(' ');
        self.buf.push_str(&format_value(value));
        self.buf.push('\n');
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label_value_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes backslash and newline only.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Go-style float spelling: `+Inf`, `-Inf`, `NaN`; Rust's shortest round-trip form otherwise.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_gauge_text() {
        let mut e = Exposition::new();
        e.family("x_seconds_total", "Time.", MetricKind::Counter);
        e.sample(&[("cgroup", "/a"), ("kind", "v")], 1.5);
        e.sample(&[("cgroup", "/b"), ("kind", "v")], 0.0);
        e.family("y", "Count of y.", MetricKind::Gauge);
        e.sample(&[], 3.0);
        assert_eq!(
            e.finish(),
            "# HELP x_seconds_total Time.\n# TYPE x_seconds_total counter\n\
             x_seconds_total{cgroup=\"/a\",kind=\"v\"} 1.5\nx_seconds_total{cgroup=\"/b\",kind=\"v\"} 0\n\
             # HELP y Count of y.\n# TYPE y gauge\ny 3\n"
        );
    }

    #[test]
    fn histogram_is_cumulative_with_inf_sum_and_count() {
        let mut e = Exposition::new();
        e.family("h_seconds", "H.", MetricKind::Histogram);
        e.histogram(&[("a", "1")], &[0.5, 1.0], &[2, 0, 3], 4.25);
        assert_eq!(
            e.finish(),
            "# HELP h_seconds H.\n# TYPE h_seconds histogram\n\
             h_seconds_bucket{a=\"1\",le=\"0.5\"} 2\nh_seconds_bucket{a=\"1\",le=\"1\"} 2\n\
             h_seconds_bucket{a=\"1\",le=\"+Inf\"} 5\nh_seconds_sum{a=\"1\"} 4.25\nh_seconds_count{a=\"1\"} 5\n"
        );
    }

    #[test]
    fn escaping() {
        let mut e = Exposition::new();
        e.family("z", "line\\one\nline two", MetricKind::Gauge);
        e.sample(&[("p", "a\"b\\c\nd")], f64::NAN);
        e.sample(&[], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP z line\\\\one\\nline two\n# TYPE z gauge\nz{p=\"a\\\"b\\\\c\\nd\"} NaN\nz +Inf\n"
        );
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("ballast_node_cpu_seconds_total"));
        assert!(!valid_metric_name("9lives"));
        assert!(!valid_metric_name("a-b"));
        assert!(valid_label_name("le"));
        assert!(!valid_label_name("a:b"));
    }

    #[test]
    fn round_trip_through_a_real_parser() {
        let mut e = Exposition::new();
        e.family("rt_total", "Round trip.", MetricKind::Counter);
        // prometheus-parse does not unescape quotes in label values (escaping is checked
        // byte for byte in `escaping` above), so the round trip uses a plain value.
        e.sample(&[("cgroup", "/kubepods/x y")], 2.5);
        e.family("rt_hist", "Hist.", MetricKind::Histogram);
        e.histogram(&[], &[1.0, 2.0], &[1, 1, 1], 5.0);
        e.append_raw("# TYPE other gauge\nother 1");
        let text = e.finish();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
        let counter = scrape.samples.iter().find(|s| s.metric == "rt_total").expect("counter");
        assert_eq!(counter.labels.get("cgroup"), Some("/kubepods/x y"));
        assert!(matches!(counter.value, prometheus_parse::Value::Counter(v) if v == 2.5));
        let hist = scrape.samples.iter().find(|s| s.metric == "rt_hist").expect("histogram");
        match &hist.value {
            prometheus_parse::Value::Histogram(buckets) => {
                let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
                assert_eq!(counts, vec![1.0, 2.0, 3.0]);
            }
            other => panic!("not a histogram: {other:?}"),
        }
        assert!(scrape.samples.iter().any(|s| s.metric == "other"));
    }
}
