//! Cheap cgroupfs readers: CPU usage and CFS throttling from `cpu.stat` (v1 and v2 layouts),
//! `cpuacct.usage`, CPU quotas, and PSI pressure files; memory figures in [`memory`].
//!
//! Throttling is read here in every mode (the kernel programs see contention, not quota
//! enforcement), and everything CPU is read here when the kernel programs cannot run. The
//! parsers take text and are pure; the readers are thin wrappers that add the file's path to
//! errors. Missing keys mean "not measured" and stay `None`, never zero.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

pub mod memory;

/// What is wrong with the text of a cgroupfs file.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unexpected line {line:?}")]
    Malformed { line: String },
    #[error("no `{key}` entry")]
    Missing { key: &'static str },
}

/// Why a cgroupfs file could not be read.
#[derive(Debug, Error)]
pub enum CgroupfsError {
    #[error(
        "reading {path} failed: {source}; the cgroup may have been removed meanwhile, otherwise let the \
         agent read cgroupfs (run it as root and mount the host's /sys/fs/cgroup)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} has unexpected content: {source}; this kernel's format is not understood, please report \
         it with the file's contents and `uname -r`"
    )]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// CFS bandwidth throttling counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttling {
    /// Enforcement periods that elapsed while the cgroup had runnable tasks.
    pub periods: u64,
    /// Periods in which the cgroup ran out of quota.
    pub throttled_periods: u64,
    /// Total time the cgroup's tasks spent throttled, ns.
    pub throttled_ns: u64,
}

/// A cgroup v2 `cpu.stat`, in ns. Usage includes descendants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Total CPU time.
    pub usage_ns: Option<u64>,
    /// CPU time in user mode.
    pub user_ns: Option<u64>,
    /// CPU time in kernel mode.
    pub system_ns: Option<u64>,
    /// Present only when the cpu controller is enabled for the cgroup.
    pub throttling: Option<Throttling>,
}

/// One line of a PSI file: share of time stalled (percent, over 10 s, 60 s, 300 s) and the
/// cumulative stall time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Cumulative stall time, µs.
    pub total_us: u64,
}

/// A PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`): "some" tasks stalled, and
/// "full" (all non-idle tasks stalled) where the kernel reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Psi {
    pub some: PsiLine,
    /// Absent from `cpu.pressure` before Linux 5.13; all zeros for CPU at the system level.
    pub full: Option<PsiLine>,
}

/// The value of `key` in a flat keyed file (`key value` lines), if present. Only the wanted
/// key's line must be well-formed: unknown keys (`nr_bursts`, `burst_usec`, ...) are ignored.
pub(super) fn keyed(text: &str, key: &str) -> Result<Option<u64>, ParseError> {
    let Some(line) = text
        .lines()
        .find(|line| line.split_ascii_whitespace().next() == Some(key))
    else {
        return Ok(None);
    };
    let mut words = line.split_ascii_whitespace().skip(1);
    match (words.next().map(str::parse::<u64>), words.next()) {
        (Some(Ok(value)), None) => Ok(Some(value)),
        _ => Err(ParseError::Malformed {
            line: line.to_string(),
        }),
    }
}

fn us_to_ns(us: u64) -> u64 {
    us.saturating_mul(1000)
}

/// Parses a cgroup v2 `cpu.stat` (µs values, converted to ns).
pub fn parse_cpu_stat_v2(text: &str) -> Result<CpuStat, ParseError> {
    let ns = |key| Ok::<_, ParseError>(keyed(text, key)?.map(us_to_ns));
    let throttling = match (
        keyed(text, "nr_periods")?,
        keyed(text, "nr_throttled")?,
        keyed(text, "throttled_usec")?,
    ) {
        (Some(periods), Some(throttled_periods), Some(throttled_us)) => Some(Throttling {
            periods,
            throttled_periods,
            throttled_ns: us_to_ns(throttled_us),
        }),
        _ => None,
    };
    Ok(CpuStat {
        usage_ns: ns("usage_usec")?,
        user_ns: ns("user_usec")?,
        system_ns: ns("system_usec")?,
        throttling,
    })
}

/// Parses a cgroup v1 `cpu.stat` (`throttled_time` is already in ns).
pub fn parse_cpu_stat_v1(text: &str) -> Result<Throttling, ParseError> {
    let required = |key| keyed(text, key)?.ok_or(ParseError::Missing { key });
    Ok(Throttling {
        periods: required("nr_periods")?,
        throttled_periods: required("nr_throttled")?,
        throttled_ns: required("throttled_time")?,
    })
}

/// Parses a cgroup v1 `cpuacct.usage`: total CPU time, ns.
pub fn parse_cpuacct_usage(text: &str) -> Result<u64, ParseError> {
    text.trim().parse().map_err(|_| ParseError::Malformed {
        line: text.trim().to_string(),
    })
}

/// Parses a PSI file: a `some` line and an optional `full` line, each
/// `avg10=… avg60=… avg300=… total=…`.
pub fn parse_psi(text: &str) -> Result<Psi, ParseError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let malformed = || ParseError::Malformed {
            line: line.to_string(),
        };
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => return Err(malformed()),
        };
        *slot = Some(psi_line(words).ok_or_else(malformed)?);
    }
    Ok(Psi {
        some: some.ok_or(ParseError::Missing { key: "some" })?,
        full,
    })
}

/// The four `key=value` fields of a PSI line; unknown fields are ignored.
fn psi_line<'a>(words: impl Iterator<Item = &'a str>) -> Option<PsiLine> {
    let share = |value: &str| {
        value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let (mut avg10, mut avg60, mut avg300, mut total_us) = (None, None, None, None);
    for word in words {
        let (key, value) = word.split_once('=')?;
        match key {
            "avg10" => avg10 = Some(share(value)?),
            "avg60" => avg60 = Some(share(value)?),
            "avg300" => avg300 = Some(share(value)?),
            "total" => total_us = Some(value.parse().ok()?),
            _ => {}
        }
    }
    Some(PsiLine {
        avg10: avg10?,
        avg60: avg60?,
        avg300: avg300?,
        total_us: total_us?,
    })
}

/// The quota and period (µs) of a cgroup v2 `cpu.max`; `None` without a quota ("max 100000")
/// or if the text is not `quota period`.
pub fn cpu_quota_v2(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split_ascii_whitespace();
    let (quota, period) = (words.next()?, words.next()?.parse().ok()?);
    if words.next().is_some() || quota == "max" {
        return None;
    }
    Some((quota.parse().ok()?, period))
}

/// The quota (µs per period) of a cgroup v1 `cpu.cfs_quota_us`; `None` without a quota (-1).
pub fn cpu_quota_v1(text: &str) -> Option<u64> {
    u64::try_from(text.trim().parse::<i64>().ok()?).ok()
}

/// The CPU limit a CFS quota of `quota_us` per `period_us` amounts to, in millicores (what
/// Kubernetes writes for a container with `limits.cpu`); `None` for a zero period.
pub fn quota_millicores(quota_us: u64, period_us: u64) -> Option<u64> {
    (period_us > 0).then(|| quota_us.saturating_mul(1000) / period_us)
}

pub(super) fn read(path: &Path) -> Result<String, CgroupfsError> {
    fs::read_to_string(path).map_err(|source| CgroupfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn parsed<T>(path: PathBuf, result: Result<T, ParseError>) -> Result<T, CgroupfsError> {
    result.map_err(|source| CgroupfsError::Parse { path, source })
}

/// Reads `cpu.stat` of the cgroup v2 directory `dir`.
pub fn read_cpu_stat_v2(dir: &Path) -> Result<CpuStat, CgroupfsError> {
    let path = dir.join("cpu.stat");
    let text = read(&path)?;
    parsed(path, parse_cpu_stat_v2(&text))
}

/// Reads the throttling counters from `cpu.stat` of the v1 cpu cgroup directory `cpu_dir`.
pub fn read_throttling_v1(cpu_dir: &Path) -> Result<Throttling, CgroupfsError> {
    let path = cpu_dir.join("cpu.stat");
    let text = read(&path)?;
    parsed(path, parse_cpu_stat_v1(&text))
}

/// Reads `cpuacct.usage` (ns) of the v1 cpuacct cgroup directory `cpuacct_dir`.
pub fn read_cpuacct_usage(cpuacct_dir: &Path) -> Result<u64, CgroupfsError> {
    let path = cpuacct_dir.join("cpuacct.usage");
    let text = read(&path)?;
    parsed(path, parse_cpuacct_usage(&text))
}

/// Reads a PSI file; `Ok(None)` when PSI is not available there (no such file, as without
/// CONFIG_PSI, with PSI disabled per cgroup or on newer kernels booted with psi=0; or
/// EOPNOTSUPP, as older kernels booted with psi=0 answer). Absence is information, not an error.
pub fn read_psi(file: &Path) -> Result<Option<Psi>, CgroupfsError> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(error)
            if error.kind() == io::ErrorKind::NotFound
                || error.raw_os_error() == Some(libc::EOPNOTSUPP) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(CgroupfsError::Read {
                path: file.to_path_buf(),
                source,
            })
        }
    };
    parsed(file.to_path_buf(), parse_psi(&text)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's v2 root: no cpu controller, so no throttling keys.
    const V2_ROOT: &str =
        "usage_usec 755263641\nuser_usec 631261534\nsystem_usec 124002107\nnice_usec 0\n";
    /// A v2 container with a quota (Linux 6.x).
    const V2_THROTTLED: &str = "\
usage_usec 8339411
user_usec 5519372
system_usec 2820039
nice_usec 0
core_sched.force_idle_usec 0
nr_periods 2161
nr_throttled 401
throttled_usec 27049152
nr_bursts 0
burst_usec 0
";
    /// This machine's v1 cpu.stat (Linux 5.14+ adds the burst keys).
    const V1_IDLE: &str =
        "nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n";
    const V1_THROTTLED: &str = "nr_periods 13557\nnr_throttled 2402\nthrottled_time 290366405817\n";
    /// This machine's v2 root cpu.pressure.
    const CPU_PRESSURE: &str = "\
some avg10=0.05 avg60=0.02 avg300=0.00 total=33901130
full avg10=0.00 avg60=0.00 avg300=0.00 total=0
";
    const MEMORY_PRESSURE: &str = "\
some avg10=1.52 avg60=0.87 avg300=0.31 total=4871324
full avg10=0.74 avg60=0.40 avg300=0.13 total=2210942
";

    #[test]
    fn v2_cpu_stat_without_the_cpu_controller() -> Result<(), ParseError> {
        let stat = parse_cpu_stat_v2(V2_ROOT)?;
        assert_eq!(stat.usage_ns, Some(755_263_641_000));
        assert_eq!(stat.user_ns, Some(631_261_534_000));
        assert_eq!(stat.system_ns, Some(124_002_107_000));
        assert_eq!(stat.throttling, None, "not measured, not zero");
        Ok(())
    }

    #[test]
    fn v2_cpu_stat_with_throttling() -> Result<(), ParseError> {
        let stat = parse_cpu_stat_v2(V2_THROTTLED)?;
        assert_eq!(stat.usage_ns, Some(8_339_411_000));
        assert_eq!(
            stat.throttling,
            Some(Throttling {
                periods: 2161,
                throttled_periods: 401,
                throttled_ns: 27_049_152_000
            })
        );
        Ok(())
    }

    #[test]
    fn v2_cpu_stat_edge_cases() {
        assert_eq!(parse_cpu_stat_v2(""), Ok(CpuStat::default()));
        let partial = parse_cpu_stat_v2("usage_usec 5\nnr_periods 3\nnr_throttled 1\n");
        assert_eq!(
            partial.map(|s| s.throttling),
            Ok(None),
            "throttling needs all three keys"
        );
        let odd_unknown = parse_cpu_stat_v2("usage_usec 1\nsome_future_key a b c\n\n");
        assert_eq!(odd_unknown.map(|s| s.usage_ns), Ok(Some(1000)));
        assert_eq!(
            parse_cpu_stat_v2("usage_usec -1\n"),
            Err(ParseError::Malformed {
                line: "usage_usec -1".into()
            })
        );
        assert!(parse_cpu_stat_v2("usage_usec\n").is_err());
        assert!(parse_cpu_stat_v2("usage_usec 1 2\n").is_err());
        assert_eq!(
            parse_cpu_stat_v2(&format!("usage_usec {}\n", u64::MAX)).map(|s| s.usage_ns),
            Ok(Some(u64::MAX))
        );
    }

    #[test]
    fn v1_cpu_stat() {
        assert_eq!(parse_cpu_stat_v1(V1_IDLE), Ok(Throttling::default()));
        assert_eq!(
            parse_cpu_stat_v1(V1_THROTTLED),
            Ok(Throttling {
                periods: 13557,
                throttled_periods: 2402,
                throttled_ns: 290_366_405_817
            })
        );
        assert_eq!(
            parse_cpu_stat_v1("nr_periods 1\nnr_throttled 0\n"),
            Err(ParseError::Missing {
                key: "throttled_time"
            })
        );
    }

    #[test]
    fn cpuacct_usage() {
        assert_eq!(parse_cpuacct_usage("768286385376\n"), Ok(768_286_385_376));
        assert!(parse_cpuacct_usage("").is_err());
        assert!(parse_cpuacct_usage("12 34").is_err());
    }

    #[test]
    fn psi_files() -> Result<(), ParseError> {
        let cpu = parse_psi(CPU_PRESSURE)?;
        assert_eq!(
            cpu.some,
            PsiLine {
                avg10: 0.05,
                avg60: 0.02,
                avg300: 0.0,
                total_us: 33_901_130
            }
        );
        assert_eq!(
            cpu.full,
            Some(PsiLine::default()),
            "cgroup-level cpu full line, all zeros"
        );
        let memory = parse_psi(MEMORY_PRESSURE)?;
        assert_eq!(memory.full.map(|f| f.total_us), Some(2_210_942));
        assert!((memory.some.avg60 - 0.87).abs() < 1e-12);
        // Before Linux 5.13 cpu.pressure has no full line.
        let old = parse_psi("some avg10=12.50 avg60=3.10 avg300=0.80 total=1234567\n")?;
        assert_eq!(old.full, None);
        assert_eq!(old.some.total_us, 1_234_567);
        Ok(())
    }

    #[test]
    fn malformed_psi() {
        assert_eq!(parse_psi(""), Err(ParseError::Missing { key: "some" }));
        assert_eq!(
            parse_psi("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
            Err(ParseError::Missing { key: "some" })
        );
        for bad in [
            "some avg10=0.05 avg60=0.02 total=3\n",
            "some avg10=x avg60=0.02 avg300=0.00 total=3\n",
            "some avg10=NaN avg60=0.02 avg300=0.00 total=3\n",
            "some avg10=0.05 avg60=0.02 avg300=0.00 total=-3\n",
            "some avg10 avg60=0.02 avg300=0.00 total=3\n",
            "partial avg10=0.05 avg60=0.02 avg300=0.00 total=3\n",
        ] {
            assert!(parse_psi(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quotas() {
        assert_eq!(cpu_quota_v2("max 100000\n"), None);
        assert_eq!(cpu_quota_v2("50000 100000\n"), Some((50_000, 100_000)));
        assert_eq!(cpu_quota_v2("200000 100000"), Some((200_000, 100_000)));
        assert_eq!(cpu_quota_v2(""), None);
        assert_eq!(cpu_quota_v2("50000"), None);
        assert_eq!(cpu_quota_v2("abc 100000"), None);
        assert_eq!(cpu_quota_v2("50000 100000 1"), None);
        assert_eq!(cpu_quota_v1("-1\n"), None);
        assert_eq!(cpu_quota_v1("10000\n"), Some(10_000));
        assert_eq!(cpu_quota_v1("soon"), None);
        assert_eq!(quota_millicores(50_000, 100_000), Some(500));
        assert_eq!(quota_millicores(250_000, 100_000), Some(2500));
        assert_eq!(quota_millicores(1_000, 0), None);
    }

    #[test]
    fn readers_name_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        fs::write(dir.join("cpu.stat"), V2_THROTTLED)?;
        fs::write(dir.join("cpu.pressure"), CPU_PRESSURE)?;
        fs::write(dir.join("cpuacct.usage"), "42\n")?;
        assert_eq!(read_cpu_stat_v2(dir)?.usage_ns, Some(8_339_411_000));
        assert_eq!(read_cpuacct_usage(dir)?, 42);
        assert_eq!(
            read_psi(&dir.join("cpu.pressure"))?.map(|p| p.some.total_us),
            Some(33_901_130)
        );
        assert_eq!(
            read_psi(&dir.join("io.pressure"))?,
            None,
            "no file: PSI not available"
        );

        let parse_error = read_throttling_v1(dir)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let message = parse_error
            .err()
            .ok_or("v2 cpu.stat read as v1 must fail")?;
        assert!(
            message.contains(&dir.join("cpu.stat").display().to_string()),
            "{message}"
        );
        assert!(message.contains("throttled_time"), "{message}");

        let gone = dir.join("removed-cgroup");
        let message = read_cpu_stat_v2(&gone)
            .map(|_| ())
            .map_err(|e| e.to_string())
            .err()
            .ok_or("must fail")?;
        assert!(
            message.contains(&gone.join("cpu.stat").display().to_string()),
            "{message}"
        );
        // Other IO errors are errors, not absence.
        assert!(matches!(read_psi(dir), Err(CgroupfsError::Read { .. })));
        Ok(())
    }

    /// Read-only: the real files of this machine's v2 root (and v1 cpu root when mounted).
    #[test]
    fn reads_the_real_files() -> Result<(), Box<dyn std::error::Error>> {
        use crate::collect::cgroup::hierarchy;

        let mounts = hierarchy::read_mounts()?;
        let root = mounts.v2_root()?.to_path_buf();
        let stat = read_cpu_stat_v2(&root)?;
        assert!(stat.usage_ns.is_some_and(|ns| ns > 0), "{stat:?}");
        if let Some(psi) = read_psi(&root.join("cpu.pressure"))? {
            assert!(psi.some.avg10 <= 100.0, "{psi:?}");
        }
        if let Some(cpu) = mounts.v1_mount("cpu") {
            read_throttling_v1(cpu)?;
        }
        if let Some(cpuacct) = mounts.v1_mount("cpuacct") {
            assert!(read_cpuacct_usage(cpuacct)? > 0);
        }
        Ok(())
    }
}
