//! Memory figures of a cgroup from cgroupfs, in the v2 layout (`memory.current`, `memory.stat`,
//! `memory.events`) or the v1 one (`memory.usage_in_bytes`, `memory.stat`, `memory.oom_control`),
//! because hybrid hosts keep the memory controller in v1.
//!
//! Working set is cAdvisor's definition, usage minus inactive file pages: what the kubelet
//! evicts on and what the cgroup could not give back without refaulting.

use std::path::{Path, PathBuf};

use super::{keyed, parsed, read, CgroupfsError, ParseError};

/// Where a cgroup's memory controller files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemorySource {
    V2(PathBuf),
    V1(PathBuf),
}

/// Memory figures of one cgroup at one instant (bytes; counters cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub usage_bytes: u64,
    /// `usage - inactive_file`, floored at 0.
    pub working_set_bytes: u64,
    /// Anonymous memory (v2 `anon`, v1 `total_rss`).
    pub rss_bytes: u64,
    /// Page cache (v2 `file`, v1 `total_cache`).
    pub cache_bytes: u64,
    /// Major page faults, cumulative.
    pub major_faults: u64,
    /// OOM kills inside the cgroup, cumulative (`None` where the kernel does not say).
    pub oom_kills: Option<u64>,
    /// Times the cgroup hit `memory.max` / the v1 limit (v2 `max` event, v1 `failcnt`).
    pub limit_hits: Option<u64>,
    /// Times it went over `memory.high` (v2 only).
    pub high_events: Option<u64>,
    /// Its memory limit (v2 `memory.max`, v1 `memory.limit_in_bytes`); `None` when unlimited.
    pub limit_bytes: Option<u64>,
}

fn required(text: &str, key: &'static str) -> Result<u64, ParseError> {
    keyed(text, key)?.ok_or(ParseError::Missing { key })
}

fn single_number(text: &str) -> Result<u64, ParseError> {
    text.trim().parse().map_err(|_| ParseError::Malformed {
        line: text.trim().to_string(),
    })
}

/// v2: `memory.current`, `memory.stat` and `memory.events` (optional: absent on the root).
pub fn parse_v2(current: &str, stat: &str, events: Option<&str>) -> Result<MemoryStat, ParseError> {
    let usage_bytes = single_number(current)?;
    let events = match events {
        Some(text) => (
            keyed(text, "oom_kill")?,
            keyed(text, "max")?,
            keyed(text, "high")?,
        ),
        None => (None, None, None),
    };
    Ok(MemoryStat {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(required(stat, "inactive_file")?),
        rss_bytes: required(stat, "anon")?,
        cache_bytes: required(stat, "file")?,
        major_faults: required(stat, "pgmajfault")?,
        oom_kills: events.0,
        limit_hits: events.1,
        high_events: events.2,
        limit_bytes: None,
    })
}

/// v1: `memory.usage_in_bytes`, `memory.stat` (the hierarchical `total_*` keys, as cAdvisor),
/// `memory.oom_control` (`oom_kill` since Linux 4.13) and `memory.failcnt`.
pub fn parse_v1(
    usage: &str,
    stat: &str,
    oom_control: Option<&str>,
    failcnt: Option<&str>,
) -> Result<MemoryStat, ParseError> {
    let usage_bytes = single_number(usage)?;
    let oom_kills = match oom_control {
        Some(text) => keyed(text, "oom_kill")?,
        None => None,
    };
    Ok(MemoryStat {
        usage_bytes,
        working_set_bytes: usage_bytes.saturating_sub(required(stat, "total_inactive_file")?),
        rss_bytes: required(stat, "total_rss")?,
        cache_bytes: required(stat, "total_cache")?,
        major_faults: required(stat, "total_pgmajfault")?,
        oom_kills,
        limit_hits: failcnt.map(single_number).transpose()?,
        high_events: None,
        limit_bytes: None,
    })
}

/// v1 reports "no limit" as the largest page-aligned counter (2^63 - 4096 on x86-64); any value
/// this large is no limit on a real machine.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// A memory limit file: v2 `memory.max` ("max" is no limit) or v1 `memory.limit_in_bytes`.
/// `None` for no limit or unreadable text (a limit is only used when it is certain).
pub fn parse_limit(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?;
    (limit < V1_UNLIMITED_FROM).then_some(limit)
}

/// The source for a cgroup whose v2 directory is `v2_dir`: the v2 files when the memory
/// controller is enabled there, else `v1_dir` (the v1 memory cgroup of the same path) if any.
pub fn source(v2_dir: &Path, v1_dir: Option<PathBuf>) -> Option<MemorySource> {
    if v2_dir.join("memory.current").exists() {
        return Some(MemorySource::V2(v2_dir.to_path_buf()));
    }
    let v1 = v1_dir?;
    v1.join("memory.usage_in_bytes")
        .exists()
        .then_some(MemorySource::V1(v1))
}

/// Reads a cgroup's memory figures.
pub fn read_stat(source: &MemorySource) -> Result<MemoryStat, CgroupfsError> {
    let optional = |path: PathBuf| read(&path).ok();
    match source {
        MemorySource::V2(dir) => {
            let current = read(&dir.join("memory.current"))?;
            let stat_path = dir.join("memory.stat");
            let stat = read(&stat_path)?;
            let events = optional(dir.join("memory.events"));
            let limit = optional(dir.join("memory.max"));
            let stat = parsed(stat_path, parse_v2(&current, &stat, events.as_deref()))?;
            Ok(MemoryStat {
                limit_bytes: limit.as_deref().and_then(parse_limit),
                ..stat
            })
        }
        MemorySource::V1(dir) => {
            let usage = read(&dir.join("memory.usage_in_bytes"))?;
            let stat_path = dir.join("memory.stat");
            let stat = read(&stat_path)?;
            let oom = optional(dir.join("memory.oom_control"));
            let failcnt = optional(dir.join("memory.failcnt"));
            let limit = optional(dir.join("memory.limit_in_bytes"));
            let stat = parsed(
                stat_path,
                parse_v1(&usage, &stat, oom.as_deref(), failcnt.as_deref()),
            )?;
            Ok(MemoryStat {
                limit_bytes: limit.as_deref().and_then(parse_limit),
                ..stat
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a 6.18 v2 cgroup.
    const STAT_V2: &str = "anon 1048576\nfile 8388608\nkernel 204800\nshmem 0\n\
        active_anon 1040384\ninactive_anon 8192\nactive_file 2097152\ninactive_file 6291456\n\
        pgfault 4242\npgmajfault 17\nworkingset_refault_file 3\n";
    /// Trimmed from a 6.18 v1 memory cgroup (own keys first, `total_*` hierarchical).
    const STAT_V1: &str = "cache 4096\nrss 8192\npgmajfault 1\ninactive_file 4096\n\
        total_cache 4194304\ntotal_rss 2097152\ntotal_pgmajfault 9\ntotal_inactive_file 1048576\n\
        total_active_file 3145728\n";

    #[test]
    fn v2_working_set_is_usage_minus_inactive_file() -> Result<(), ParseError> {
        let events = "low 0\nhigh 2\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n";
        let stat = parse_v2("10485760\n", STAT_V2, Some(events))?;
        assert_eq!(stat.usage_bytes, 10_485_760);
        assert_eq!(stat.working_set_bytes, 10_485_760 - 6_291_456);
        assert_eq!((stat.rss_bytes, stat.cache_bytes), (1_048_576, 8_388_608));
        assert_eq!(stat.major_faults, 17);
        assert_eq!(stat.oom_kills, Some(1));
        assert_eq!(stat.limit_hits, Some(5));
        assert_eq!(stat.high_events, Some(2));
        Ok(())
    }

    #[test]
    fn v1_uses_the_hierarchical_totals() -> Result<(), ParseError> {
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let stat = parse_v1("6291456\n", STAT_V1, Some(oom), Some("12\n"))?;
        assert_eq!(stat.working_set_bytes, 6_291_456 - 1_048_576);
        assert_eq!((stat.rss_bytes, stat.cache_bytes), (2_097_152, 4_194_304));
        assert_eq!(stat.major_faults, 9);
        assert_eq!(stat.oom_kills, Some(3));
        assert_eq!(stat.limit_hits, Some(12));
        assert_eq!(stat.high_events, None);
        Ok(())
    }

    #[test]
    fn what_the_kernel_does_not_say_stays_unknown() -> Result<(), ParseError> {
        // Before 4.13 v1 oom_control had no oom_kill line; the root has no memory.events.
        let stat = parse_v1(
            "100\n",
            STAT_V1,
            Some("oom_kill_disable 0\nunder_oom 0\n"),
            None,
        )?;
        assert_eq!((stat.oom_kills, stat.limit_hits), (None, None));
        assert_eq!(parse_v2("100\n", STAT_V2, None)?.oom_kills, None);
        Ok(())
    }

    #[test]
    fn limits_of_both_layouts() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("268435456\n"), Some(268_435_456));
        assert_eq!(parse_limit("9223372036854771712\n"), None, "v1 unlimited");
        assert_eq!(parse_limit("lots"), None);
    }

    /// The limit is read beside the figures, in each layout (integration tests cannot check this
    /// on the CI host: its v1 memory hierarchy does not mirror the v2 paths).
    #[test]
    fn read_stat_reads_the_limit_of_each_layout() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let write = |name: &str, text: &str| std::fs::write(tmp.path().join(name), text);
        write("memory.current", "10485760\n")?;
        write("memory.stat", STAT_V2)?;
        write("memory.max", "33554432\n")?;
        let v2 = MemorySource::V2(tmp.path().to_path_buf());
        assert_eq!(read_stat(&v2)?.limit_bytes, Some(33_554_432));
        write("memory.max", "max\n")?;
        assert_eq!(read_stat(&v2)?.limit_bytes, None, "unlimited");
        write("memory.usage_in_bytes", "6291456\n")?;
        write("memory.stat", STAT_V1)?;
        write("memory.limit_in_bytes", "9223372036854771712\n")?;
        let v1 = MemorySource::V1(tmp.path().to_path_buf());
        assert_eq!(read_stat(&v1)?.limit_bytes, None, "v1 unlimited");
        write("memory.limit_in_bytes", "268435456\n")?;
        assert_eq!(read_stat(&v1)?.limit_bytes, Some(268_435_456));
        Ok(())
    }

    #[test]
    fn working_set_never_underflows() -> Result<(), ParseError> {
        // inactive_file can exceed a racy usage read.
        assert_eq!(parse_v2("4096\n", STAT_V2, None)?.working_set_bytes, 0);
        Ok(())
    }

    #[test]
    fn malformed_files_are_errors_not_zeros() {
        assert!(parse_v2("lots\n", STAT_V2, None).is_err());
        assert_eq!(
            parse_v2("100\n", "anon 1\n", None),
            Err(ParseError::Missing {
                key: "inactive_file"
            })
        );
        assert!(parse_v1("100\n", STAT_V1, None, Some("x\n")).is_err());
    }

    #[test]
    fn source_prefers_v2_and_falls_back_to_v1() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let (v2, v1) = (tmp.path().join("v2"), tmp.path().join("v1"));
        std::fs::create_dir_all(&v2)?;
        std::fs::create_dir_all(&v1)?;
        assert_eq!(source(&v2, Some(v1.clone())), None);
        std::fs::write(v1.join("memory.usage_in_bytes"), "1\n")?;
        assert_eq!(
            source(&v2, Some(v1.clone())),
            Some(MemorySource::V1(v1.clone()))
        );
        std::fs::write(v2.join("memory.current"), "1\n")?;
        assert_eq!(source(&v2, Some(v1)), Some(MemorySource::V2(v2.clone())));
        Ok(())
    }
}
