//! Cheap cgroupfs readers: CPU usage and CFS throttling from `cpu.stat` (v1 and v2 layouts),
//! quotas, and PSI pressure files. Used for throttling in every mode and for everything CPU when
//! the kernel programs are unavailable. Parsers take text and are pure; readers are thin.

use std::{io, path::Path};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CgroupfsError {
    #[error("reading {path}: {source}; is the cgroup still there and the file readable?")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: unexpected content {line:?}; is this a cgroup file of a supported kernel?")]
    Parse { what: &'static str, line: String },
}

/// CFS bandwidth throttling counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

/// cgroup v2 `cpu.stat`. Throttling is present only when the cpu controller is enabled for the
/// cgroup (the keys are absent otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStat {
    pub usage_ns: Option<u64>,
    pub throttling: Option<Throttling>,
}

/// One line of a PSI file.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

/// A PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

fn keyed<'a>(text: &'a str, what: &'static str) -> Result<Vec<(&'a str, u64)>, CgroupfsError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next().and_then(|v| v.parse::<u64>().ok())) {
                (Some(key), Some(value)) => Ok((key, value)),
                _ => Err(CgroupfsError::Parse { what, line: line.to_string() }),
            }
        })
        .collect()
}

pub fn parse_cpu_stat_v2(text: &str) -> Result<CpuStat, CgroupfsError> {
    let mut usage_us = None;
    let (mut periods, mut throttled, mut throttled_us) = (None, None, None);
    for (key, value) in keyed(text, "cpu.stat")? {
        match key {
            "usage_usec" => usage_us = Some(value),
            "nr_periods" => periods = Some(value),
            "nr_throttled" => throttled = Some(value),
            "throttled_usec" => throttled_us = Some(value),
            _ => {}
        }
    }
    let throttling = match (periods, throttled, throttled_us) {
        (Some(periods), Some(throttled_periods), Some(us)) => {
            Some(Throttling { periods, throttled_periods, throttled_ns: us.saturating_mul(1000) })
        }
        _ => None,
    };
    Ok(CpuStat { usage_ns: usage_us.map(|us| us.saturating_mul(1000)), throttling })
}

/// cgroup v1 `cpu.stat` of the cpu controller (`throttled_time` is in ns there).
pub fn parse_cpu_stat_v1(text: &str) -> Result<Throttling, CgroupfsError> {
    let (mut periods, mut throttled, mut throttled_ns) = (None, None, None);
    for (key, value) in keyed(text, "cpu.stat (v1)")? {
        match key {
            "nr_periods" => periods = Some(value),
            "nr_throttled" => throttled = Some(value),
            "throttled_time" => throttled_ns = Some(value),
            _ => {}
        }
    }
    match (periods, throttled, throttled_ns) {
        (Some(periods), Some(throttled_periods), Some(throttled_ns)) => {
            Ok(Throttling { periods, throttled_periods, throttled_ns })
        }
        _ => Err(CgroupfsError::Parse { what: "cpu.stat (v1)", line: text.lines().next().unwrap_or("").to_string() }),
    }
}

pub fn parse_psi(text: &str) -> Result<Psi, CgroupfsError> {
    let mut some = None;
    let mut full = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut parsed = PsiLine::default();
        for field in fields {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| CgroupfsError::Parse { what: "pressure", line: line.to_string() })?;
            let bad = || CgroupfsError::Parse { what: "pressure", line: line.to_string() };
            match key {
                "avg10" => parsed.avg10 = value.parse().map_err(|_| bad())?,
                "avg60" => parsed.avg60 = value.parse().map_err(|_| bad())?,
                "avg300" => parsed.avg300 = value.parse().map_err(|_| bad())?,
                "total" => parsed.total_us = value.parse().map_err(|_| bad())?,
                _ => {}
            }
        }
        match kind {
            Some("some") => some = Some(parsed),
            Some("full") => full = Some(parsed),
            _ => return Err(CgroupfsError::Parse { what: "pressure", line: line.to_string() }),
        }
    }
    let some = some.ok_or_else(|| CgroupfsError::Parse { what: "pressure", line: "no `some` line".into() })?;
    Ok(Psi { some, full })
}

/// v2 `cpu.max` ("QUOTA PERIOD" or "max PERIOD"): `Some((quota_us, period_us))` when limited.
pub fn cpu_quota_v2(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?.parse().ok()?;
    let period = parts.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
    Some((quota, period))
}

/// v1 `cpu.cfs_quota_us`: `Some(quota_us)` when limited (-1 means unlimited).
pub fn cpu_quota_v1(text: &str) -> Option<u64> {
    text.trim().parse::<i64>().ok().and_then(|q| u64::try_from(q).ok())
}

fn read(path: &Path) -> Result<String, CgroupfsError> {
    std::fs::read_to_string(path).map_err(|source| CgroupfsError::Read { path: path.display().to_string(), source })
}

pub fn read_cpu_stat_v2(dir: &Path) -> Result<CpuStat, CgroupfsError> {
    parse_cpu_stat_v2(&read(&dir.join("cpu.stat"))?)
}

pub fn read_throttling_v1(cpu_dir: &Path) -> Result<Throttling, CgroupfsError> {
    parse_cpu_stat_v1(&read(&cpu_dir.join("cpu.stat"))?)
}

/// `Ok(None)` when the file does not exist (PSI disabled): absence is information, not an error.
pub fn read_psi(file: &Path) -> Result<Option<Psi>, CgroupfsError> {
    match std::fs::read_to_string(file) {
        Ok(text) => parse_psi(&text).map(Some),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupfsError::Read { path: file.display().to_string(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_cpu_stat_without_cpu_controller() {
        let text = "usage_usec 24159627\nuser_usec 10283132\nsystem_usec 13876495\nnice_usec 0\n";
        let stat = parse_cpu_stat_v2(text).expect("parses");
        assert_eq!(stat.usage_ns, Some(24_159_627_000));
        assert_eq!(stat.throttling, None, "no cpu controller: throttling unknown, not zero");
    }

    #[test]
    fn v2_cpu_stat_with_throttling() {
        let text = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 50\nnr_throttled 7\n\
                    throttled_usec 3500\nnr_bursts 0\nburst_usec 0\n";
        let stat = parse_cpu_stat_v2(text).expect("parses");
        assert_eq!(stat.throttling, Some(Throttling { periods: 50, throttled_periods: 7, throttled_ns: 3_500_000 }));
    }

    #[test]
    fn v1_cpu_stat() {
        let text = "nr_periods 12\nnr_throttled 3\nthrottled_time 123456789\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            parse_cpu_stat_v1(text).expect("parses"),
            Throttling { periods: 12, throttled_periods: 3, throttled_ns: 123_456_789 }
        );
        assert!(parse_cpu_stat_v1("nr_periods 1\n").is_err());
    }

    #[test]
    fn psi_files() {
        let cpu = "some avg10=1.50 avg60=0.20 avg300=0.00 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        let psi = parse_psi(cpu).expect("parses");
        assert_eq!(psi.some.total_us, 123_456);
        assert!((psi.some.avg10 - 1.5).abs() < 1e-9);
        assert_eq!(psi.full.map(|f| f.total_us), Some(0));
        let only_some = parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n").expect("parses");
        assert_eq!(only_some.full, None);
        assert!(parse_psi("bogus\n").is_err());
        assert!(parse_psi("some avg10=x total=1\n").is_err());
    }

    #[test]
    fn quotas() {
        assert_eq!(cpu_quota_v2("max 100000\n"), None);
        assert_eq!(cpu_quota_v2("50000 100000\n"), Some((50_000, 100_000)));
        assert_eq!(cpu_quota_v1("-1\n"), None);
        assert_eq!(cpu_quota_v1("20000\n"), Some(20_000));
    }

    #[test]
    fn malformed_cpu_stat_is_an_error() {
        assert!(parse_cpu_stat_v2("usage_usec lots\n").is_err());
    }

    #[test]
    fn missing_psi_file_is_none() {
        assert!(matches!(read_psi(Path::new("/nonexistent/cpu.pressure")), Ok(None)));
    }
}
