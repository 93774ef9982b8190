//! CPU pressure per cgroup: on-CPU time, run-queue wait (with a log2 histogram) and context
//! switches, from one program on `sched_switch` plus a low-frequency per-CPU flush tick.
//!
//! Why it is built this way: the kernel already accounts, per task, the CPU time it ran
//! (`se.sum_exec_runtime`) and the time it spent runnable but waiting for a CPU
//! (`sched_info.run_delay`, the second field of /proc/PID/schedstat). Reading those two counters
//! when a task is switched in and again when it leaves gives, without a single clock read or
//! per-task map, exactly what the kernel charged while it was on this CPU: its run time, and the
//! one wait that ended when it was switched in (the kernel adds that wait right after the
//! tracepoint, in `sched_info_arrive`). Both are charged to the leaving task's cgroup, which
//! `bpf_get_current_cgroup_id()` knows cheaply because that task is still current. The flush tick
//! does the same for tasks that keep a CPU for long stretches, so user space never lags by more
//! than one tick period.
//!
//! Throttling is kept out of the wait: when a cgroup exhausts its CFS quota, the kernel (6.18+,
//! task-based throttling) sets `task_struct::throttled` and takes each task off the CPU while
//! still runnable, and its run delay then grows by the throttled time. Such a task is remembered
//! in a small map, and the wait that precedes its next run is not counted (moving a throttled pod
//! does not help it; its throttling is reported from cgroupfs apart). The map is only looked up
//! while some task is marked, so nodes without throttling pay nothing for it.
//!
//! The hot path reads task fields directly: `prev` and `next` are BTF-typed pointers in a
//! `tp_btf` program, and the field offsets are read-only globals that user space fills in from
//! the running kernel's BTF (Rust BPF has no CO-RE yet). The verifier treats frozen read-only
//! globals as constants, checks each access against the kernel's type information and turns it
//! into a fault-tolerant load, so no `bpf_probe_read_kernel` call is needed per field.

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, perf_event},
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, PerfEventContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use ballast_common::{wait_bucket, CpuCounters, CpuSlot, WaitState};

use crate::cgroup_map::counters_or_new;
use crate::task::{
    cgroup_of, field, global, TASK_ARRIVALS_OFFSET, TASK_PID_OFFSET, TASK_POLICY_OFFSET,
    TASK_RUNTIME_OFFSET, TASK_RUN_DELAY_OFFSET, TASK_SLICE_START_OFFSET, TASK_THROTTLED_OFFSET,
};

/// Bound of live cgroups tracked at once. Entries are allocated on first use (no prealloc) and
/// user space deletes those of removed cgroups; past the bound, events are counted as dropped.
const MAX_CGROUPS: u32 = 16_384;
/// Bound of tasks throttled at once (node-wide) whose next wait must not count.
const MAX_THROTTLED_TASKS: u32 = 16_384;

#[map]
static CGROUP_CPU: PerCpuHashMap<u64, CpuCounters> =
    PerCpuHashMap::with_max_entries(MAX_CGROUPS, BPF_F_NO_PREALLOC);

#[map]
static CPU_SLOT: PerCpuArray<CpuSlot> = PerCpuArray::with_max_entries(1, 0);

/// Tasks (by `task_struct` address) switched out because their cgroup was throttled. An entry
/// lives from the throttled switch-out to the task's next switch-in; a task cannot exit without
/// running again, so entries do not leak.
#[map]
static THROTTLED_TASKS: HashMap<u64, u64> =
    HashMap::with_max_entries(MAX_THROTTLED_TASKS, BPF_F_NO_PREALLOC);

/// Number of entries in `THROTTLED_TASKS` (one slot, shared by all CPUs): the hot path skips the
/// map entirely while it is 0.
#[map]
static THROTTLED_COUNT: Array<u64> = Array::with_max_entries(1, 0);

/// The counters the scheduler keeps for a task.
#[derive(Clone, Copy)]
struct TaskClock {
    /// `se.sum_exec_runtime`, ns.
    runtime_ns: u64,
    /// `sched_info.run_delay`, ns.
    run_delay_ns: u64,
    /// `sched_info.pcount`: how many times the task was switched in (raised just after the
    /// switch-in tracepoint; same cache line as `run_delay`).
    arrivals: u64,
    /// `se.prev_sum_exec_runtime` when the task is a fair-class one (CFS sets it when it picks
    /// the task: its slice start), else `None` (other classes leave it stale).
    slice_start_ns: Option<u64>,
}

/// Scheduling policies served by the fair class: SCHED_NORMAL, SCHED_BATCH, SCHED_IDLE.
#[inline(always)]
fn is_fair_policy(policy: u32) -> bool {
    matches!(policy, 0 | 3 | 5)
}

impl TaskClock {
    #[inline(always)]
    fn of_arg(task: u64) -> Self {
        Self {
            runtime_ns: field(task, global(&TASK_RUNTIME_OFFSET)),
            run_delay_ns: field(task, global(&TASK_RUN_DELAY_OFFSET)),
            arrivals: field(task, global(&TASK_ARRIVALS_OFFSET)),
            slice_start_ns: None,
        }
    }

    /// The slice start of the BTF-typed `task`, read only when needed (see [`rebase`]).
    #[inline(always)]
    fn with_slice_start_of_arg(mut self, task: u64) -> Self {
        let policy: u32 = field(task, global(&TASK_POLICY_OFFSET));
        self.slice_start_ns =
            is_fair_policy(policy).then(|| field(task, global(&TASK_SLICE_START_OFFSET)));
        self
    }

    /// The same for an untyped task address (outside `tp_btf`), through checked reads.
    #[inline(always)]
    fn of_address(task: u64) -> Option<Self> {
        let read = |offset: u64| {
            // SAFETY: bpf_probe_read_kernel validates the address and fails cleanly.
            unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u64) }.ok()
        };
        // SAFETY: as above.
        let policy = unsafe {
            bpf_probe_read_kernel(task.wrapping_add(global(&TASK_POLICY_OFFSET)) as *const u32)
        }
        .ok()?;
        Some(Self {
            runtime_ns: read(global(&TASK_RUNTIME_OFFSET))?,
            run_delay_ns: read(global(&TASK_RUN_DELAY_OFFSET))?,
            arrivals: read(global(&TASK_ARRIVALS_OFFSET))?,
            slice_start_ns: if is_fair_policy(policy) {
                Some(read(global(&TASK_SLICE_START_OFFSET))?)
            } else {
                None
            },
        })
    }
}

/// `TASK_RUNNING` in `task_struct::__state`.
const TASK_RUNNING: u64 = 0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Switch {
    Voluntary,
    Involuntary,
    Throttled,
    /// Not a switch: the flush tick.
    None,
}

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)`; `current` is still `prev`.
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let slot = CPU_SLOT.get_ptr_mut(0).ok_or(1i64)?;
    // SAFETY: the pointer comes from a per-CPU array lookup, stays valid for the whole program
    // run, and no other program touches this CPU's slot meanwhile (sched_switch runs with
    // interrupts off; the flush tick runs on this CPU only, never nested inside it).
    let slot = unsafe { &mut *slot };

    // The idle task (pid 0) neither waits nor counts as load.
    if field::<i32>(prev, global(&TASK_PID_OFFSET)) != 0 {
        let still_runnable = (preempt & 1) != 0 || (prev_state & 0xffff_ffff) == TASK_RUNNING;
        let throttled_offset = global(&TASK_THROTTLED_OFFSET);
        let throttled =
            still_runnable && throttled_offset != 0 && field::<u8>(prev, throttled_offset) != 0;
        let switch = match (still_runnable, throttled) {
            (true, true) => Switch::Throttled,
            (true, false) => Switch::Involuntary,
            (false, _) => Switch::Voluntary,
        };
        let cgroup = cgroup_of(prev);
        let clock = TaskClock::of_arg(prev);
        if !base_is_current(slot, prev, &clock) {
            rebase(slot, prev, &clock.with_slice_start_of_arg(prev));
        }
        charge_current(ctx, slot, prev, cgroup, clock, switch);
        if throttled {
            mark_throttled(prev);
        }
    }

    // A CPU going idle may see no flush tick for a long time (the tick does not fire in idle),
    // so it hands its pending counts over now.
    if field::<i32>(next, global(&TASK_PID_OFFSET)) == 0 {
        flush_pending(ctx, slot);
    }

    // The arriving task: its counters now are the base of its next charge, and the wait that
    // ends now is counted at that charge unless it was throttled time.
    slot.base_task = next;
    let clock = TaskClock::of_arg(next);
    slot.base_runtime_ns = clock.runtime_ns;
    slot.base_run_delay_ns = clock.run_delay_ns;
    slot.base_arrivals = clock.arrivals;
    slot.wait_state = if unmark_throttled(next) {
        WaitState::AfterThrottle as u64
    } else {
        WaitState::Uncharged as u64
    };
    Ok(())
}

/// Remembers that `task` left the CPU throttled.
#[inline(always)]
fn mark_throttled(task: u64) {
    if THROTTLED_TASKS
        .insert(&task, &1, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        if let Some(count) = THROTTLED_COUNT.get_ptr_mut(0) {
            // SAFETY: a map value pointer, valid for this run; every access to it is atomic.
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, 1) };
        }
    }
}

/// Forgets `task`'s throttle mark; true when it had one.
#[inline(always)]
fn unmark_throttled(task: u64) -> bool {
    let Some(count) = THROTTLED_COUNT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a map value pointer, valid for this run. An aligned 8-byte load cannot tear (BPF
    // v1 has no atomic-load instruction to ask for it); a stale value only costs one lookup.
    let marked = unsafe { core::ptr::read_volatile(count) };
    if marked == 0 || THROTTLED_TASKS.remove(&task).is_err() {
        return false;
    }
    // Adding u64::MAX subtracts one (BPF has an atomic add, not a subtract).
    // SAFETY: as above.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(count, u64::MAX) };
    true
}

/// Flush tick: charges the current task's on-CPU time and wait so far, so long-running tasks
/// show up within one tick period instead of when they finally switch.
#[perf_event]
pub fn flush_tick(ctx: PerfEventContext) -> u32 {
    match try_flush_tick(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_flush_tick(ctx: &PerfEventContext) -> Result<(), i64> {
    let slot = CPU_SLOT.get_ptr_mut(0).ok_or(1i64)?;
    // SAFETY: as in try_sched_switch; the tick and sched_switch never nest on one CPU.
    let slot = unsafe { &mut *slot };
    if ctx.pid() != 0 {
        // SAFETY: the helper takes no arguments and returns the current task's address.
        let current = unsafe { bpf_get_current_task() };
        // SAFETY: the helper takes no arguments.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        if let Some(clock) = TaskClock::of_address(current) {
            if !base_is_current(slot, current, &clock) {
                rebase(slot, current, &clock);
            }
            charge_current(ctx, slot, current, cgroup, clock, Switch::None);
        }
    }
    flush_pending(ctx, slot);
    Ok(())
}

/// Whether the slot's base was taken from `task` during its current stretch on this CPU: the
/// same task, switched in exactly once since: its arrival count is one above the one read at its
/// switch-in (the kernel counts the arrival right after that tracepoint).
///
/// Not always so: this kernel does not run the tracepoint for every switch (measured on the CI
/// kernel with ftrace alone: about 1 switch in 30 under load is never reported, for example
/// when a task of the VM's init process leaves the CPU), so a task can arrive, or leave and come
/// back, unseen. Its bases are then those of another stretch and must not be used.
#[inline(always)]
fn base_is_current(slot: &CpuSlot, task: u64, clock: &TaskClock) -> bool {
    slot.base_task == task && clock.arrivals == slot.base_arrivals.wrapping_add(1)
}

/// Starts the bases of a task whose switch-in was not seen: its run time from the slice start
/// CFS recorded when it picked the task (so the slice is charged in full), or from now for
/// other classes. The wait that preceded it is unknown and not counted.
///
/// The slot may still hold this task's own base: either it left and came back unseen (then CFS
/// picked it again later, at a higher runtime), or its arrival was not counted (the kernel skips
/// the count when no queued wait ends at the arrival: `sched_info.last_queued` was 0). The later of
/// the two starts is right in both cases and never counts anything twice; without a slice start
/// the old base is kept.
#[inline(always)]
fn rebase(slot: &mut CpuSlot, task: u64, clock: &TaskClock) {
    let same_task = slot.base_task == task;
    slot.base_runtime_ns = match clock.slice_start_ns {
        Some(start) if same_task => start.max(slot.base_runtime_ns),
        Some(start) => start,
        None if same_task => slot.base_runtime_ns,
        None => clock.runtime_ns,
    };
    slot.base_task = task;
    slot.base_run_delay_ns = clock.run_delay_ns;
    slot.wait_state = WaitState::Charged as u64;
}

/// Charges the current task `task`'s cgroup with what the scheduler accounted since the base in
/// this CPU's slot (which must belong to `task`: see [`base_is_current`]), and with the kind of
/// switch; the slot's base moves to `clock`. The charge goes to the slot's pending counts; those
/// of another cgroup are moved to the map first.
#[inline(always)]
fn charge_current<C: EbpfContext>(
    ctx: &C,
    slot: &mut CpuSlot,
    task: u64,
    cgroup: u64,
    clock: TaskClock,
    switch: Switch,
) {
    let on_cpu = clock.runtime_ns.saturating_sub(slot.base_runtime_ns);
    let wait = clock.run_delay_ns.saturating_sub(slot.base_run_delay_ns);
    let wait_state = slot.wait_state;
    slot.base_task = task;
    slot.base_runtime_ns = clock.runtime_ns;
    slot.base_run_delay_ns = clock.run_delay_ns;
    slot.base_arrivals = clock.arrivals;
    slot.wait_state = WaitState::Charged as u64;

    if slot.pending_cgroup != cgroup {
        flush_pending(ctx, slot);
        slot.pending_cgroup = cgroup;
    }
    let counters = &mut slot.pending;
    counters.on_cpu_ns += on_cpu;
    if wait_state == WaitState::Uncharged as u64 {
        counters.runqueue_wait_ns += wait;
        counters.runqueue_waits += 1;
        if let Some(bucket) = counters.wait_hist.get_mut(wait_bucket(wait)) {
            *bucket += 1;
        }
    } else if wait_state == WaitState::Charged as u64 {
        // Normally 0: the run delay only grows when a task is switched in.
        counters.runqueue_wait_ns += wait;
    }
    match switch {
        Switch::Voluntary => counters.voluntary_switches += 1,
        Switch::Involuntary => counters.involuntary_switches += 1,
        Switch::Throttled => counters.throttled_switches += 1,
        Switch::None => {}
    }
}

/// Moves the slot's pending counts into this CPU's copy of their cgroup's map entry (created on
/// first use). Past the map's bound the counts are dropped and counted as such.
#[inline(always)]
fn flush_pending<C: EbpfContext>(ctx: &C, slot: &mut CpuSlot) {
    let cgroup = slot.pending_cgroup;
    if cgroup == 0 {
        return;
    }
    match counters_or_new(&CGROUP_CPU, cgroup) {
        // SAFETY: valid per-CPU map value pointer for this run; only this CPU writes its copy.
        Some(target) => unsafe { &mut *target }.accumulate(&slot.pending),
        None => {
            slot.dropped_events += 1;
            if slot.dropped_events == 1 {
                warn!(ctx, "cgroup CPU map full: events are being dropped");
            }
        }
    }
    slot.pending = CpuCounters::default();
    slot.pending_cgroup = 0;
}
