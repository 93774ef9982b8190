//! Memory load over one collection window. Sizes are the last cgroupfs read (they are levels,
//! not counters); reclaim stall is a rate between the window's two snapshots, from the kernel
//! programs. Nothing measured is reported as `None`, never 0.

use serde::{Deserialize, Serialize};

use super::counter::{counter_delta, rate_per_second};
use crate::collect::sample::{CgroupMemory, NodeMemory};

/// Memory figures of one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Usage minus inactive page cache (cAdvisor's working set), bytes.
    pub working_set_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub cache_bytes: Option<u64>,
    /// Seconds its tasks spent stalled in reclaim per second of wall time (summed over tasks).
    pub reclaim_stall_per_second: Option<f64>,
    /// OOM kills in the cgroup since it was created.
    pub oom_kills_total: Option<u64>,
    /// Its memory limit; `None` when unlimited or not read.
    pub limit_bytes: Option<u64>,
}

/// Node-wide memory figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMemoryFigures {
    pub total_bytes: Option<u64>,
    /// Total minus available: memory that cannot be handed out without reclaim or swap.
    pub used_bytes: Option<u64>,
    pub reclaim_stall_per_second: Option<f64>,
}

fn stall_rate(before: Option<u64>, now: Option<u64>, window_ns: u64) -> Option<f64> {
    let delta = counter_delta(before?, now?);
    rate_per_second(delta, window_ns).map(|ns_per_second| ns_per_second / 1e9)
}

/// Figures of one cgroup between two snapshots `window_ns` apart.
pub fn cgroup_memory(before: &CgroupMemory, now: &CgroupMemory, window_ns: u64) -> MemoryFigures {
    let stall = |m: &CgroupMemory| m.reclaim.map(|r| r.reclaim_stall_ns);
    MemoryFigures {
        working_set_bytes: now.stat.map(|s| s.working_set_bytes),
        rss_bytes: now.stat.map(|s| s.rss_bytes),
        cache_bytes: now.stat.map(|s| s.cache_bytes),
        reclaim_stall_per_second: stall_rate(stall(before), stall(now), window_ns),
        oom_kills_total: now.stat.and_then(|s| s.oom_kills),
        limit_bytes: now.stat.and_then(|s| s.limit_bytes),
    }
}

/// Node figures between two snapshots `window_ns` apart.
pub fn node_memory(before: &NodeMemory, now: &NodeMemory, window_ns: u64) -> NodeMemoryFigures {
    let stall = |m: &NodeMemory| m.reclaim.map(|r| r.reclaim_stall_ns);
    NodeMemoryFigures {
        total_bytes: now.total_bytes,
        used_bytes: now
            .total_bytes
            .zip(now.available_bytes)
            .map(|(total, available)| total.saturating_sub(available)),
        reclaim_stall_per_second: stall_rate(stall(before), stall(now), window_ns),
    }
}

#[cfg(test)]
mod tests {
    use ballast_common::MemoryCounters;

    use super::*;
    use crate::collect::cgroupfs::memory::MemoryStat;

    fn traced(stall_ns: u64) -> CgroupMemory {
        CgroupMemory {
            reclaim: Some(MemoryCounters {
                reclaim_stall_ns: stall_ns,
                reclaim_stalls: 1,
                reclaimed_pages: 1,
            }),
            stat: Some(MemoryStat {
                working_set_bytes: 5 << 20,
                oom_kills: Some(1),
                ..MemoryStat::default()
            }),
            psi_some_us: None,
        }
    }

    #[test]
    fn stall_is_a_rate_and_sizes_are_levels() {
        let figures = cgroup_memory(&traced(0), &traced(250_000_000), 500_000_000);
        assert_eq!(figures.reclaim_stall_per_second, Some(0.5));
        assert_eq!(figures.working_set_bytes, Some(5 << 20));
        assert_eq!(figures.oom_kills_total, Some(1));
    }

    #[test]
    fn unmeasured_stays_none_and_a_reset_is_a_new_series() {
        let none = cgroup_memory(&CgroupMemory::default(), &CgroupMemory::default(), 1_000);
        assert_eq!(none, MemoryFigures::default());
        // Counters that went backwards (map entry recreated) start over: the new value is the delta.
        let reset = cgroup_memory(&traced(900), &traced(100), 1_000_000_000);
        assert_eq!(reset.reclaim_stall_per_second, Some(100e-9));
        let node = node_memory(&NodeMemory::default(), &NodeMemory::default(), 1_000);
        assert_eq!(node, NodeMemoryFigures::default());
    }
}
