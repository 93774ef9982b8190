//! Memory pressure per cgroup: time tasks spend stalled in reclaim.
//!
//! Direct reclaim (the allocating task frees memory itself because the node is short) and memcg
//! reclaim (the task's cgroup is at its limit or above `memory.high`) both run in the stalled
//! task's own context, between a `*_reclaim_begin` and a `*_reclaim_end` tracepoint. Reclaim can
//! sleep and move to another CPU, so the start time is kept per task (by `task_struct` address)
//! rather than per CPU, and the stall is charged at the end to the task's cgroup.
//!
//! Reclaim events are rare (hundreds per second) and so run cache-cold: what costs is every
//! lock, allocation and cache line touched. A task's entry therefore stays after its reclaim
//! ends and is reused in place by its next one (a lookup and a store, no bucket lock, no element
//! allocation), instead of an insert at every begin and a delete at every end.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_task_btf, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePointContext,
};
use ballast_common::MemoryCounters;

use crate::{cgroup_map::counters_or_new, task::cgroup_of};

/// Bound of cgroups tracked at once (user space deletes removed ones).
const MAX_CGROUPS: u32 = 16_384;
/// Bound of tasks remembered as having reclaimed (node-wide); the least recently used are
/// forgotten first, which is how the entries of exited tasks go.
const MAX_RECLAIMING_TASKS: u32 = 16_384;

#[map]
static CGROUP_MEMORY: PerCpuHashMap<u64, MemoryCounters> =
    PerCpuHashMap::with_max_entries(MAX_CGROUPS, BPF_F_NO_PREALLOC);

/// Stalls not counted because `CGROUP_MEMORY` was full (one slot per CPU).
#[map]
static MEMORY_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Tasks that have entered reclaim -> when they entered the current one (ktime, ns), or
/// [`OUTSIDE_RECLAIM`] between two. Only the task itself touches its entry (begin and end run in
/// its context), so plain stores suffice. LRU (preallocated): a first insertion does not
/// allocate on the reclaim path, and entries of exited tasks are recycled when the map is full.
/// Recycling could in principle take the entry of a task that is inside reclaim; with this
/// bound that needs 16,384 more recent reclaiming tasks, and would lose one stall, not corrupt
/// a count.
#[map]
static RECLAIM_START: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_RECLAIMING_TASKS, 0);

/// Start value of a task that is not inside reclaim (ktime is never 0 once the system is up).
const OUTSIDE_RECLAIM: u64 = 0;

#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: the helper takes no arguments; it returns the current task as a BTF-typed pointer.
    unsafe { bpf_get_current_task_btf() as u64 }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and cannot fail.
    unsafe { bpf_ktime_get_ns() }
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim_begin()
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(_ctx: BtfTracePointContext) -> i32 {
    reclaim_begin()
}

/// `(unsigned long nr_reclaimed)`.
#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end(ctx: BtfTracePointContext) -> i32 {
    reclaim_end(ctx.arg(0))
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(ctx: BtfTracePointContext) -> i32 {
    reclaim_end(ctx.arg(0))
}

/// If reclaim nests (it should not), the outer start stands and the stall is counted once,
/// from the outermost begin.
#[inline(always)]
fn reclaim_begin() -> i32 {
    let task = current_task();
    match RECLAIM_START.get_ptr_mut(&task) {
        Some(start) => {
            // SAFETY: a map value pointer valid for this run; the entry is this task's own and
            // only this task, which is running here, writes it.
            let start = unsafe { &mut *start };
            if *start == OUTSIDE_RECLAIM {
                *start = now_ns();
            }
        }
        None => {
            let _ = RECLAIM_START.insert(&task, &now_ns(), u64::from(BPF_NOEXIST));
        }
    }
    0
}

#[inline(always)]
fn reclaim_end(reclaimed_pages: u64) -> i32 {
    match try_reclaim_end(reclaimed_pages) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_reclaim_end(reclaimed_pages: u64) -> Result<(), i64> {
    let task = current_task();
    let start = RECLAIM_START.get_ptr_mut(&task).ok_or(1i64)?;
    // SAFETY: a map value pointer valid for this run; the entry is this task's own and only
    // this task, which is running here, writes it.
    let start = unsafe { &mut *start };
    if *start == OUTSIDE_RECLAIM {
        return Ok(());
    }
    let stall = now_ns().saturating_sub(*start);
    *start = OUTSIDE_RECLAIM;
    let cgroup = cgroup_of(task);
    let Some(counters) = counters_or_new(&CGROUP_MEMORY, cgroup) else {
        if let Some(dropped) = MEMORY_DROPPED.get_ptr_mut(0) {
            // SAFETY: valid per-CPU map value pointer for this run; only this CPU writes it.
            unsafe { *dropped += 1 };
        }
        return Ok(());
    };
    // SAFETY: valid per-CPU map value pointer for this run; only this CPU writes its copy.
    let counters = unsafe { &mut *counters };
    counters.reclaim_stall_ns += stall;
    counters.reclaim_stalls += 1;
    counters.reclaimed_pages += reclaimed_pages;
    Ok(())
}
