//! CPU load over one collection window: two cumulative snapshots in, rates out.
//!
//! Contention and throttling are kept apart on purpose. Run-queue wait (runnable, waiting for a
//! CPU) is pressure from neighbours, a reason to move a pod. Throttling is the container hitting
//! its own CFS quota; moving it does not help, so it is reported as its own figure. In cgroupfs
//! mode the only contention proxy is PSI "some", which mixes both: it is reported under its own
//! name so nobody mistakes it for the kernel-measured wait.

use std::collections::BTreeMap;

use ballast_common::{CpuCounters, WAIT_HIST_BUCKETS};
use serde::{Deserialize, Serialize};

use super::{
    counter::{counter_delta, rate_per_second},
    histogram::{bucket_deltas, quantile_seconds},
};
use crate::collect::sample::{CgroupCpu, Mode, Snapshot};

/// Rates of one cgroup over the window. `None` means "not measured in this mode", never zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuRates {
    /// CPU time used per second: 1.0 is one full core.
    pub cores_used: f64,
    /// Seconds spent waiting in a run queue per second of wall time, summed over the tasks.
    pub runqueue_wait_per_second: Option<f64>,
    /// Run-queue wait per second of CPU used: how much waiting each unit of work costs.
    pub runqueue_wait_per_cpu_second: Option<f64>,
    /// Median and 99th percentile of the waits that ended in the window.
    pub runqueue_latency_p50_seconds: Option<f64>,
    pub runqueue_latency_p99_seconds: Option<f64>,
    pub voluntary_switches_per_second: Option<f64>,
    pub involuntary_switches_per_second: Option<f64>,
    /// Waits that ended in the window (each switch-in ends one), per second.
    pub runqueue_waits_per_second: Option<f64>,
    /// Share of CFS enforcement periods in which the cgroup was throttled (0..=1).
    pub throttled_share: Option<f64>,
    /// Throttled time per second of wall time.
    pub throttled_per_second: Option<f64>,
    /// PSI cpu "some" share of time (cgroupfs mode): contention and throttling together.
    pub psi_some_share: Option<f64>,
    /// Its CPU limit (CFS quota), cores; `None` without one.
    pub limit_cores: Option<f64>,
}

/// Node-wide CPU load over the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeCpuRates {
    pub cpus: u32,
    pub cores_used: f64,
    /// `cores_used / cpus`.
    pub utilisation: f64,
    pub runqueue_wait_per_second: Option<f64>,
    pub runqueue_latency_p50_seconds: Option<f64>,
    pub runqueue_latency_p99_seconds: Option<f64>,
}

/// The CPU load of a window, keyed by cgroup id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuLoad {
    pub mode: Mode,
    pub window_seconds: f64,
    pub node: NodeCpuRates,
    pub cgroups: BTreeMap<u64, CpuRates>,
}

/// Rates between `previous` and `current`. `None` when the window is empty (same instant, or the
/// clock went backwards): a rate needs time to pass. Cgroups that appear only in `current` have
/// no rate yet and are left out until the next window.
pub fn cpu_load(previous: &Snapshot, current: &Snapshot) -> Option<CpuLoad> {
    let window_ns = current
        .at_ns
        .checked_sub(previous.at_ns)
        .filter(|ns| *ns > 0)?;
    let per_second = |delta: u64| rate_per_second(delta, window_ns);
    let mut cgroups = BTreeMap::new();
    for (id, now) in &current.cgroups {
        let Some(before) = previous.cgroups.get(id) else {
            continue;
        };
        if let Some(rates) = cgroup_rates(&before.cpu, &now.cpu, window_ns) {
            cgroups.insert(*id, rates);
        }
    }
    let cores_used = per_second(counter_delta(
        previous.node.on_cpu_ns,
        current.node.on_cpu_ns,
    ))? / 1e9;
    let node_runqueue = match (&previous.node.runqueue, &current.node.runqueue) {
        (Some(before), Some(now)) => Some(RunqueueWindow::new(before, now)),
        _ => None,
    };
    let node = NodeCpuRates {
        cpus: current.cpus,
        cores_used,
        utilisation: if current.cpus == 0 {
            0.0
        } else {
            cores_used / f64::from(current.cpus)
        },
        runqueue_wait_per_second: node_runqueue
            .as_ref()
            .and_then(|w| per_second(w.wait_ns))
            .map(|r| r / 1e9),
        runqueue_latency_p50_seconds: node_runqueue
            .as_ref()
            .and_then(|w| quantile_seconds(&w.hist, 0.5)),
        runqueue_latency_p99_seconds: node_runqueue
            .as_ref()
            .and_then(|w| quantile_seconds(&w.hist, 0.99)),
    };
    Some(CpuLoad {
        mode: current.mode,
        window_seconds: window_ns as f64 / 1e9,
        node,
        cgroups,
    })
}

/// Differences of the run-queue counters over a window.
struct RunqueueWindow {
    wait_ns: u64,
    voluntary: u64,
    involuntary: u64,
    waits: u64,
    hist: [u64; WAIT_HIST_BUCKETS],
}

impl RunqueueWindow {
    fn new(before: &CpuCounters, now: &CpuCounters) -> Self {
        Self {
            wait_ns: counter_delta(before.runqueue_wait_ns, now.runqueue_wait_ns),
            voluntary: counter_delta(before.voluntary_switches, now.voluntary_switches),
            involuntary: counter_delta(before.involuntary_switches, now.involuntary_switches),
            waits: counter_delta(before.runqueue_waits, now.runqueue_waits),
            hist: bucket_deltas(&before.wait_hist, &now.wait_hist),
        }
    }
}

fn cgroup_rates(before: &CgroupCpu, now: &CgroupCpu, window_ns: u64) -> Option<CpuRates> {
    let per_second = |delta: u64| rate_per_second(delta, window_ns);
    let cpu_ns = counter_delta(before.on_cpu_ns, now.on_cpu_ns);
    let runqueue = match (&before.runqueue, &now.runqueue) {
        (Some(b), Some(n)) => Some(RunqueueWindow::new(b, n)),
        _ => None,
    };
    let throttle = match (&before.throttling, &now.throttling) {
        (Some(b), Some(n)) => Some((
            counter_delta(b.periods, n.periods),
            counter_delta(b.throttled_periods, n.throttled_periods),
            counter_delta(b.throttled_ns, n.throttled_ns),
        )),
        _ => None,
    };
    let psi = match (before.psi_some_us, now.psi_some_us) {
        (Some(b), Some(n)) => per_second(counter_delta(b, n).saturating_mul(1000)).map(|r| r / 1e9),
        _ => None,
    };
    let seconds = |ns_rate: Option<f64>| ns_rate.map(|r| r / 1e9);
    Some(CpuRates {
        cores_used: per_second(cpu_ns)? / 1e9,
        runqueue_wait_per_second: seconds(runqueue.as_ref().and_then(|w| per_second(w.wait_ns))),
        runqueue_wait_per_cpu_second: runqueue
            .as_ref()
            .and_then(|w| (cpu_ns > 0).then(|| w.wait_ns as f64 / cpu_ns as f64)),
        runqueue_latency_p50_seconds: runqueue
            .as_ref()
            .and_then(|w| quantile_seconds(&w.hist, 0.5)),
        runqueue_latency_p99_seconds: runqueue
            .as_ref()
            .and_then(|w| quantile_seconds(&w.hist, 0.99)),
        voluntary_switches_per_second: runqueue.as_ref().and_then(|w| per_second(w.voluntary)),
        involuntary_switches_per_second: runqueue.as_ref().and_then(|w| per_second(w.involuntary)),
        runqueue_waits_per_second: runqueue.as_ref().and_then(|w| per_second(w.waits)),
        throttled_share: throttle.and_then(|(periods, throttled, _)| {
            (periods > 0).then(|| throttled as f64 / periods as f64)
        }),
        throttled_per_second: seconds(throttle.and_then(|(_, _, ns)| per_second(ns))),
        psi_some_share: psi,
        limit_cores: now.limit_millicores.map(|m| m as f64 / 1000.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        collect::cgroupfs::Throttling,
        load::fixtures::{ebpf_cpu, snapshot},
    };

    #[test]
    fn rates_over_one_second() {
        let before = snapshot(1_000_000_000, vec![(7, ebpf_cpu(1_000_000_000, 0, 0))]);
        let after = snapshot(
            2_000_000_000,
            vec![(7, ebpf_cpu(2_500_000_000, 500_000_000, 100))],
        );
        let load = cpu_load(&before, &after).expect("a window");
        let c = &load.cgroups[&7];
        assert!((c.cores_used - 1.5).abs() < 1e-9);
        assert_eq!(c.runqueue_wait_per_second, Some(0.5));
        assert!((c.runqueue_wait_per_cpu_second.unwrap_or(0.0) - 1.0 / 3.0).abs() < 1e-9);
        // All waits in bucket 5 = [2^14, 2^15) ns.
        let p50 = c.runqueue_latency_p50_seconds.unwrap_or(0.0);
        assert!(p50 > 16_384e-9 && p50 < 32_768e-9);
        assert!((load.node.utilisation - 0.75).abs() < 1e-9);
        assert_eq!(
            c.throttled_share, None,
            "no quota: throttling is not measured, not zero"
        );
    }

    #[test]
    fn empty_window_has_no_rates() {
        let s = snapshot(5, vec![(7, ebpf_cpu(1, 0, 0))]);
        assert_eq!(cpu_load(&s, &s), None);
        let earlier = snapshot(4, vec![]);
        assert_eq!(cpu_load(&s, &earlier), None);
    }

    #[test]
    fn new_cgroups_wait_for_a_second_sample() {
        let before = snapshot(0, vec![]);
        let after = snapshot(1_000_000_000, vec![(9, ebpf_cpu(5, 0, 0))]);
        let load = cpu_load(&before, &after).expect("a window");
        assert!(load.cgroups.is_empty());
    }

    #[test]
    fn throttling_is_reported_apart_from_contention() {
        let mut before = ebpf_cpu(0, 0, 0);
        before.throttling = Some(Throttling {
            periods: 10,
            throttled_periods: 0,
            throttled_ns: 0,
        });
        let mut after = ebpf_cpu(200_000_000, 0, 0);
        after.throttling = Some(Throttling {
            periods: 20,
            throttled_periods: 8,
            throttled_ns: 400_000_000,
        });
        let load = cpu_load(
            &snapshot(0, vec![(1, before)]),
            &snapshot(1_000_000_000, vec![(1, after)]),
        )
        .expect("a window");
        let c = &load.cgroups[&1];
        assert_eq!(c.throttled_share, Some(0.8));
        assert_eq!(c.throttled_per_second, Some(0.4));
        assert_eq!(c.runqueue_wait_per_second, Some(0.0));
    }

    #[test]
    fn counter_reset_is_a_new_series_not_a_negative_rate() {
        let before = snapshot(0, vec![(3, ebpf_cpu(9_000_000_000, 0, 0))]);
        let after = snapshot(1_000_000_000, vec![(3, ebpf_cpu(100_000_000, 0, 0))]);
        let load = cpu_load(&before, &after).expect("a window");
        assert!((load.cgroups[&3].cores_used - 0.1).abs() < 1e-9);
    }

    #[test]
    fn cgroupfs_mode_has_psi_but_no_runqueue_figures() {
        let cpu = |ns, psi| CgroupCpu {
            on_cpu_ns: ns,
            runqueue: None,
            psi_some_us: Some(psi),
            throttling: None,
            limit_millicores: None,
        };
        let mut before = snapshot(0, vec![(2, cpu(0, 0))]);
        let mut after = snapshot(1_000_000_000, vec![(2, cpu(1_000_000_000, 250_000))]);
        before.mode = Mode::Cgroupfs;
        after.mode = Mode::Cgroupfs;
        before.node.runqueue = None;
        after.node.runqueue = None;
        let load = cpu_load(&before, &after).expect("a window");
        let c = &load.cgroups[&2];
        assert_eq!(c.psi_some_share, Some(0.25));
        assert_eq!(c.runqueue_wait_per_second, None);
        assert_eq!(c.runqueue_latency_p99_seconds, None);
        assert_eq!(load.node.runqueue_wait_per_second, None);
    }
}
