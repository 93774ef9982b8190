//! `#[repr(C)]` types shared by the kernel programs (`agent-ebpf`) and the agent.
//!
//! Everything here is plain old data: the kernel side writes it into maps, user space reads it
//! back byte for byte. Changing a layout changes both sides at once, which is why it lives in one
//! place.
#![no_std]

/// Number of buckets of the run-queue wait histogram.
///
/// Bucket 0 holds waits below 1024 ns (about 1 µs); bucket `k` (1..=22) holds waits in
/// `[2^(k+9), 2^(k+10))` ns; the last bucket holds everything from 2^32 ns (about 4.3 s) up.
pub const WAIT_HIST_BUCKETS: usize = 24;

/// Upper bound (exclusive) of histogram bucket `k` in nanoseconds, `None` for the open last one.
pub const fn wait_bucket_upper_ns(k: usize) -> Option<u64> {
    if k + 1 >= WAIT_HIST_BUCKETS {
        None
    } else {
        Some(1u64 << (k + 10))
    }
}

/// Histogram bucket of a wait of `ns` nanoseconds; branch-light so the verifier and the hot path
/// both stay happy.
#[inline(always)]
pub const fn wait_bucket(ns: u64) -> usize {
    let units = ns >> 10;
    if units == 0 {
        return 0;
    }
    // floor(log2(units)) + 1, capped at the last bucket.
    let bucket = (64 - units.leading_zeros()) as usize;
    if bucket >= WAIT_HIST_BUCKETS {
        WAIT_HIST_BUCKETS - 1
    } else {
        bucket
    }
}

/// Per-cgroup CPU counters, one copy per CPU (a per-CPU hash map keyed by cgroup v2 id).
/// All fields only ever grow; user space sums the CPUs and takes differences.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Time tasks of the cgroup spent on a CPU, ns.
    pub on_cpu_ns: u64,
    /// Time tasks of the cgroup spent runnable but waiting for a CPU, ns.
    pub runqueue_wait_ns: u64,
    /// Number of completed waits (each ends when the task is switched in).
    pub runqueue_waits: u64,
    /// Switches where the task gave up the CPU itself (blocked/slept).
    pub voluntary_switches: u64,
    /// Switches where the task was preempted while still runnable.
    pub involuntary_switches: u64,
    /// Switches where the task left the CPU because its cgroup ran out of CFS quota. The time
    /// until it runs again is throttling, not run-queue wait, and is not counted as wait.
    pub throttled_switches: u64,
    /// Run-queue wait histogram; see [`WAIT_HIST_BUCKETS`].
    pub wait_hist: [u64; WAIT_HIST_BUCKETS],
}

impl CpuCounters {
    /// Adds another CPU's copy into this one (user space folds per-CPU values with it).
    pub fn accumulate(&mut self, other: &CpuCounters) {
        self.on_cpu_ns = self.on_cpu_ns.wrapping_add(other.on_cpu_ns);
        self.runqueue_wait_ns = self.runqueue_wait_ns.wrapping_add(other.runqueue_wait_ns);
        self.runqueue_waits = self.runqueue_waits.wrapping_add(other.runqueue_waits);
        self.voluntary_switches = self
            .voluntary_switches
            .wrapping_add(other.voluntary_switches);
        self.involuntary_switches = self
            .involuntary_switches
            .wrapping_add(other.involuntary_switches);
        self.throttled_switches = self
            .throttled_switches
            .wrapping_add(other.throttled_switches);
        let mut k = 0;
        while k < WAIT_HIST_BUCKETS {
            self.wait_hist[k] = self.wait_hist[k].wrapping_add(other.wait_hist[k]);
            k += 1;
        }
    }
}

/// Per-cgroup memory-reclaim counters, one copy per CPU (a per-CPU hash keyed by cgroup v2 id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryCounters {
    /// Time the cgroup's tasks spent stalled in direct or memcg (limit) reclaim, ns.
    pub reclaim_stall_ns: u64,
    /// Completed reclaim stalls.
    pub reclaim_stalls: u64,
    /// Pages those stalls reclaimed.
    pub reclaimed_pages: u64,
}

impl MemoryCounters {
    /// Adds another CPU's copy into this one.
    pub fn accumulate(&mut self, other: &MemoryCounters) {
        self.reclaim_stall_ns = self.reclaim_stall_ns.wrapping_add(other.reclaim_stall_ns);
        self.reclaim_stalls = self.reclaim_stalls.wrapping_add(other.reclaim_stalls);
        self.reclaimed_pages = self.reclaimed_pages.wrapping_add(other.reclaimed_pages);
    }
}

/// Per-cgroup network counters, one copy per CPU (a per-CPU hash keyed by the cgroup v2 id of
/// the socket's owner).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// IP bytes (headers included) received by the cgroup's sockets.
    pub rx_bytes: u64,
    /// Packets received (GSO/GRO aggregates count as their segments).
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// TCP segments the cgroup's sockets retransmitted (successful retransmissions, counted in
    /// segments as the kernel's RetransSegs).
    pub tcp_retransmits: u64,
}

impl NetCounters {
    /// Adds another CPU's copy into this one.
    pub fn accumulate(&mut self, other: &NetCounters) {
        self.rx_bytes = self.rx_bytes.wrapping_add(other.rx_bytes);
        self.rx_packets = self.rx_packets.wrapping_add(other.rx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(other.tx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(other.tx_packets);
        self.tcp_retransmits = self.tcp_retransmits.wrapping_add(other.tcp_retransmits);
    }
}

/// Whether the wait that preceded the current task's run on a CPU is still to be counted.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitState {
    /// Not counted yet: the next charge counts it as one wait.
    Uncharged = 0,
    /// Counted (by a flush tick or because the task was first seen mid-run).
    Charged = 1,
    /// The wait was the cgroup's throttled time: it is not run-queue wait and is dropped.
    AfterThrottle = 2,
}

/// Per-CPU bookkeeping of the scheduler programs (a one-slot per-CPU array): the scheduler's
/// counters of the task that is on this CPU, as they were when it was switched in or last
/// charged. Its next charge is the difference, so nothing is ever counted twice.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlot {
    /// The task (`task_struct` address) the bases belong to: a base is only ever subtracted
    /// from the same task's counters.
    pub base_task: u64,
    /// Its `se.sum_exec_runtime` at the base, ns.
    pub base_runtime_ns: u64,
    /// Its `sched_info.run_delay` at the base, ns.
    pub base_run_delay_ns: u64,
    /// Its switch-in count (`sched_info.pcount`) when it was switched in: if the task left and
    /// came back without this CPU seeing it, the count has moved on and the base is stale.
    pub base_arrivals: u64,
    /// A [`WaitState`] as u64.
    pub wait_state: u64,
    /// Events whose cgroup could not get a map entry (map full): counted, never silent.
    pub dropped_events: u64,
    /// The cgroup `pending` belongs to (0: nothing pending).
    pub pending_cgroup: u64,
    /// Counts of `pending_cgroup` not yet added to the cgroup map. Consecutive charges on a CPU
    /// very often go to the same cgroup (a task and the idle task alternating, or the tasks of
    /// one service handing work to each other), so they are summed here and moved to the map
    /// only when the cgroup changes, the CPU goes idle or the flush tick fires: one hash operation instead of one
    /// per switch.
    pub pending: CpuCounters,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: these types are #[repr(C)], contain only u64s (no padding, every bit pattern is
    // valid), which is what aya::Pod requires.
    unsafe impl aya::Pod for super::CpuCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MemoryCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NetCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_one_microsecond_to_four_seconds() {
        assert_eq!(wait_bucket(0), 0);
        assert_eq!(wait_bucket(1023), 0);
        assert_eq!(wait_bucket(1024), 1);
        assert_eq!(wait_bucket(2047), 1);
        assert_eq!(wait_bucket(2048), 2);
        assert_eq!(wait_bucket((1 << 32) - 1), 22);
        assert_eq!(wait_bucket(1 << 32), 23);
        assert_eq!(wait_bucket(u64::MAX), 23);
        for k in 0..WAIT_HIST_BUCKETS - 1 {
            let upper = wait_bucket_upper_ns(k).unwrap_or(u64::MAX);
            assert_eq!(
                wait_bucket(upper - 1),
                k,
                "last value below bucket {k}'s bound"
            );
            assert_eq!(
                wait_bucket(upper),
                k + 1,
                "bound of bucket {k} opens the next"
            );
        }
        assert_eq!(wait_bucket_upper_ns(WAIT_HIST_BUCKETS - 1), None);
    }
}
