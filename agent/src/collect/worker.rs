//! The collection loop: one collection per interval, off the async threads, published to the
//! shared state. Missed ticks are skipped, not bunched up: a late collection just makes a longer
//! window, which the rates account for.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::MissedTickBehavior};
use tracing::warn;

use super::{collector::CollectError, ebpf::RunStatsReport, sample::Snapshot};
use crate::state::AgentState;

/// Something that produces snapshots (the real collector, or a scripted one in tests).
pub trait Collect: Send + 'static {
    fn collect(&mut self, now_ns: u64) -> Result<Snapshot, CollectError>;
    fn program_stats(&self) -> Option<RunStatsReport>;
}

impl Collect for super::collector::Collector {
    fn collect(&mut self, now_ns: u64) -> Result<Snapshot, CollectError> {
        super::collector::Collector::collect(self, now_ns)
    }
    fn program_stats(&self) -> Option<RunStatsReport> {
        super::collector::Collector::program_stats(self)
    }
}

/// Runs until `shutdown` turns true; returns the collector so the caller decides when the kernel
/// programs are detached (on drop).
pub async fn run<C: Collect>(
    mut collector: C,
    interval: Duration,
    clock: fn() -> u64,
    state: Arc<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) -> C {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return collector,
        }
        let now_ns = clock();
        let joined = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = collector.collect(now_ns);
            metrics::histogram!("ballast_collection_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            let stats = collector.program_stats();
            (collector, result, stats)
        })
        .await;
        let (returned, result, stats) = match joined {
            Ok(parts) => parts,
            // A panic in a collection is a bug; the collector is lost with it, so stop.
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        };
        collector = returned;
        match result {
            Ok(snapshot) => state.publish(snapshot, stats),
            Err(err) => {
                warn!(error = %err, "collection failed; keeping the previous figures");
                state.record_failure();
            }
        }
    }
}

/// CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_ns()` uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::OnceLock};

    use super::*;
    use crate::collect::sample::{Mode, NodeCpu, NodeMemory};

    static START: OnceLock<tokio::time::Instant> = OnceLock::new();

    /// Tokio's (paused, auto-advancing) clock in ns since the test began.
    fn paused_clock() -> u64 {
        let start = *START.get_or_init(tokio::time::Instant::now);
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Burns exactly one core: every collection reports 1 s of CPU per second of clock.
    struct OneCore {
        collections: u32,
    }

    impl Collect for OneCore {
        fn collect(&mut self, now_ns: u64) -> Result<Snapshot, CollectError> {
            self.collections += 1;
            Ok(Snapshot {
                at_ns: now_ns,
                mode: Mode::Cgroupfs,
                cpus: 2,
                cgroups: BTreeMap::new(),
                node: NodeCpu {
                    on_cpu_ns: now_ns,
                    runqueue: None,
                },
                memory_mode: Mode::Cgroupfs,
                node_memory: NodeMemory::default(),
                network_mode: Mode::Unavailable,
                retransmits_counted: false,
                node_network: None,
                dropped_events: None,
            })
        }
        fn program_stats(&self) -> Option<RunStatsReport> {
            None
        }
    }

    #[tokio::test(start_paused = true)]
    async fn collects_once_per_interval_and_stops_on_shutdown() {
        let state = Arc::new(AgentState::new("n".into(), Mode::Cgroupfs, None, 1.0));
        let (stop, shutdown) = watch::channel(false);
        paused_clock();
        let task = tokio::spawn(run(
            OneCore { collections: 0 },
            Duration::from_secs(1),
            paused_clock,
            state.clone(),
            shutdown,
        ));
        tokio::time::sleep(Duration::from_millis(4500)).await;
        let load = state.view().load.expect("load after two collections");
        assert!((load.cpu.node.cores_used - 1.0).abs() < 1e-9);
        assert!((load.cpu.node.utilisation - 0.5).abs() < 1e-9);
        stop.send_replace(true);
        let collector = task.await.expect("loop ends cleanly");
        assert_eq!(
            collector.collections, 5,
            "one collection per interval over 4.5 s"
        );
    }
}
