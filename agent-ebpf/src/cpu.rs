//! CPU pressure per cgroup: on-CPU time, run-queue wait (with a log2 histogram), context
//! switches and wakeups.
//!
//! Why the bookkeeping looks the way it does: in `sched_switch` only the *leaving* task is the
//! current task, and `bpf_get_current_cgroup_id()` is the one cheap, kernel-version independent way
//! to learn a cgroup. So the arriving task's wait is measured when it is switched in, parked in a
//! per-CPU slot, and charged to its cgroup when that task is current again: when it leaves the CPU,
//! or at the next flush tick (a per-CPU perf event at a low frequency) if it keeps running. The
//! tick also charges the on-CPU time of tasks that run for long stretches without switching, so
//! user space never lags by more than one tick.
//!
//! On-CPU time is the kernel's own `sum_exec_runtime` of the task (read at switch-out and at the
//! tick), so it matches `cpu.stat` exactly, steal and IRQ time excluded as the kernel excludes
//! them. Where that field cannot be located it falls back to timestamps (then steal time counts).
//!
//! Throttling is kept out of the wait: when a cgroup exhausts its CFS quota, the kernel (6.18+,
//! task-based throttling) sets `task_struct::throttled` and takes each task off the CPU while
//! still runnable. Such a switch-out starts no wait (the kernel's own schedstat run delay does
//! count throttled time; Ballast's contention figure must not, because moving a throttled pod
//! does not help it). The field's offset comes from user space, which reads it from the running
//! kernel's BTF; on kernels without the field it stays 0 and user space reports the wait as
//! throttle-inclusive.
//!
//! A wait starts at a wakeup (`sched_wakeup`, `sched_wakeup_new`) or when a task is preempted
//! while still runnable (`sched_switch` with `preempt` set or `prev_state == TASK_RUNNING`), and
//! ends when the task is switched in. Waiting tasks are keyed by their `task_struct` address,
//! which is unique while the task lives; an LRU map bounds what exited tasks leave behind.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{btf_tracepoint, map, perf_event},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, PerfEventContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use ballast_common::{wait_bucket, CpuCounters, CpuSlot, WaitStart};

/// Bound of live cgroups tracked at once. Entries are allocated on first use (no prealloc) and
/// user space deletes those of removed cgroups; past the bound, events are counted as dropped.
const MAX_CGROUPS: u32 = 16_384;
/// Bound of tasks waiting for a CPU at once (node-wide). LRU, so exited tasks cannot fill it.
const MAX_WAITING_TASKS: u32 = 32_768;

#[map]
static CGROUP_CPU: PerCpuHashMap<u64, CpuCounters> =
    PerCpuHashMap::with_max_entries(MAX_CGROUPS, BPF_F_NO_PREALLOC);

#[map]
static WAIT_START: LruHashMap<u64, WaitStart> = LruHashMap::with_max_entries(MAX_WAITING_TASKS, 0);

#[map]
static CPU_SLOT: PerCpuArray<CpuSlot> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: the helper takes no arguments and cannot fail.
    unsafe { bpf_ktime_get_ns() }
}

/// Byte offset of `task_struct::throttled`, set by user space at load time from the kernel's BTF
/// (a read-only global); 0 when the kernel has no such field.
#[unsafe(no_mangle)]
static TASK_THROTTLED_OFFSET: u64 = 0;

/// Byte offset of `task_struct::se.sum_exec_runtime`, set by user space from the kernel's BTF;
/// 0 when unknown.
#[unsafe(no_mangle)]
static TASK_RUNTIME_OFFSET: u64 = 0;

/// The kernel's CPU-time accounting of `task`, ns; `None` when its offset is unknown.
#[inline(always)]
fn task_runtime(task: u64) -> Option<u64> {
    // SAFETY: volatile read of a loader-patched global; see is_throttled.
    let offset = unsafe { core::ptr::read_volatile(&TASK_RUNTIME_OFFSET) };
    if offset == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel checks the address; `task` is a task_struct pointer.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u64) }.ok()
}

/// CPU time of the current task `task` since its last charge on this CPU.
#[inline(always)]
fn on_cpu_delta(slot: &mut CpuSlot, now: u64, task: u64, current_runtime: Option<u64>) -> u64 {
    if slot.charged_until_ns == 0 {
        return 0;
    }
    match current_runtime {
        Some(runtime) if slot.runtime_base_task == task => {
            runtime.saturating_sub(slot.runtime_base_ns)
        }
        _ => now.saturating_sub(slot.charged_until_ns),
    }
}

/// Remembers `task`'s runtime as the base of its next charge.
#[inline(always)]
fn set_runtime_base(slot: &mut CpuSlot, task: u64, runtime: Option<u64>) {
    slot.runtime_base_task = task;
    slot.runtime_base_ns = runtime.unwrap_or(u64::MAX);
}

/// Whether `task` has just been throttled by CFS bandwidth control.
#[inline(always)]
fn is_throttled(task: u64) -> bool {
    // SAFETY: reading a global through a volatile load keeps the compiler from folding the
    // placeholder 0 into the code; the loader patches the real value.
    let offset = unsafe { core::ptr::read_volatile(&TASK_THROTTLED_OFFSET) };
    if offset == 0 {
        return false;
    }
    // SAFETY: bpf_probe_read_kernel validates the address itself and fails cleanly on a bad one;
    // `task` is the `prev` task_struct pointer handed to the tracepoint.
    let flag = unsafe { bpf_probe_read_kernel(task.wrapping_add(offset) as *const u8) };
    matches!(flag, Ok(v) if v != 0)
}

/// `TASK_RUNNING` in `task_struct::__state`.
const TASK_RUNNING: u64 = 0;

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    match try_sched_switch(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

/// `sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
/// unsigned int prev_state)`; `current` is still `prev`.
fn try_sched_switch(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let now = now_ns();
    let preempt: u64 = ctx.arg(0);
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    let prev_state: u64 = ctx.arg(3);
    let slot = CPU_SLOT.get_ptr_mut(0).ok_or(1i64)?;
    // SAFETY: the pointer comes from a per-CPU array lookup, stays valid for the whole program
    // run, and no other program touches this CPU's slot meanwhile (sched_switch runs with
    // interrupts off; the flush tick runs on this CPU only, never nested inside it).
    let slot = unsafe { &mut *slot };

    let still_runnable = (preempt & 1) != 0 || (prev_state & 0xffff_ffff) == TASK_RUNNING;
    let throttled = still_runnable && is_throttled(prev);
    let leaving_is_idle = (bpf_get_current_pid_tgid() as u32) == 0;
    if leaving_is_idle {
        // The idle task neither waits nor counts as load.
        slot.pending_wait = 0;
    } else {
        let switch = match (still_runnable, throttled) {
            (true, true) => Switch::Throttled,
            (true, false) => Switch::Involuntary,
            (false, _) => Switch::Voluntary,
        };
        let on_cpu = on_cpu_delta(slot, now, prev, task_runtime(prev));
        charge_current(ctx, slot, now, on_cpu, switch);
        if switch == Switch::Throttled {
            // Whatever stale wait the task had must not span its throttled time either.
            let _ = WAIT_START.remove(&prev);
        } else if still_runnable {
            let start = WaitStart {
                since_ns: now,
                from_wakeup: 0,
            };
            // A full LRU evicts the oldest entry; nothing to handle.
            let _ = WAIT_START.insert(&prev, &start, 0);
        }
    }

    // The arriving task's wait ends now; it is charged once the task is current.
    slot.charged_until_ns = now;
    set_runtime_base(slot, next, task_runtime(next));
    if let Some(start) = WAIT_START.get_ptr_mut(&next) {
        // SAFETY: a pointer from a map lookup is valid for this run; the entry of a task that is
        // being switched in is written by nobody else meanwhile (its wakeups are done).
        let start = unsafe { &mut *start };
        if start.since_ns != 0 {
            slot.pending_wait_ns = now.saturating_sub(start.since_ns);
            slot.pending_from_wakeup = start.from_wakeup;
            slot.pending_wait = 1;
            start.since_ns = 0;
        }
    }
    Ok(())
}

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    match try_wakeup(&ctx, false) {
        Ok(()) | Err(_) => 0,
    }
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    match try_wakeup(&ctx, true) {
        Ok(()) | Err(_) => 0,
    }
}

/// `sched_wakeup(struct task_struct *p)`: `p` is runnable from now on. A wakeup of a task that
/// was preempted and is still queued (it had begun to go to sleep) does not restart its wait:
/// the kernel's own run-delay accounting keeps the original enqueue time too. Any other existing
/// entry is stale (a wakeup that raced with the task still running) and is overwritten.
fn try_wakeup(ctx: &BtfTracePointContext, new_task: bool) -> Result<(), i64> {
    let task: u64 = ctx.arg(0);
    let now = now_ns();
    if !new_task {
        if let Some(start) = WAIT_START.get_ptr_mut(&task) {
            // SAFETY: valid map value pointer for this run; see try_sched_switch.
            let start = unsafe { &mut *start };
            if start.since_ns != 0 && start.from_wakeup == 0 {
                return Ok(());
            }
            start.since_ns = now;
            start.from_wakeup = 1;
            return Ok(());
        }
    }
    let start = WaitStart {
        since_ns: now,
        from_wakeup: 1,
    };
    WAIT_START.insert(&task, &start, 0).map_err(i64::from)
}

/// Flush tick: charges the current task's on-CPU time and parked wait, so long-running tasks
/// show up within one tick period instead of when they finally switch.
#[perf_event]
pub fn flush_tick(ctx: PerfEventContext) -> u32 {
    match try_flush_tick(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_flush_tick(ctx: &PerfEventContext) -> Result<(), i64> {
    let now = now_ns();
    let slot = CPU_SLOT.get_ptr_mut(0).ok_or(1i64)?;
    // SAFETY: as in try_sched_switch; the tick and sched_switch never nest on one CPU.
    let slot = unsafe { &mut *slot };
    if (bpf_get_current_pid_tgid() as u32) == 0 {
        slot.charged_until_ns = now;
        return Ok(());
    }
    // SAFETY: the helper takes no arguments and returns the current task's address.
    let current = unsafe { bpf_get_current_task() };
    let runtime = task_runtime(current);
    let on_cpu = on_cpu_delta(slot, now, current, runtime);
    charge_current(ctx, slot, now, on_cpu, Switch::None);
    set_runtime_base(slot, current, runtime);
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Switch {
    Voluntary,
    Involuntary,
    Throttled,
    None,
}

/// Charges the current task's cgroup with its on-CPU time since the last charge on this CPU,
/// its parked wait (if any) and the kind of switch.
#[inline(always)]
fn charge_current<C: EbpfContext>(
    ctx: &C,
    slot: &mut CpuSlot,
    now: u64,
    on_cpu: u64,
    switch: Switch,
) {
    // SAFETY: the helper takes no arguments and is allowed in every program type used here.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let Some(counters) = cgroup_counters(ctx, cgroup, slot) else {
        slot.pending_wait = 0;
        slot.charged_until_ns = now;
        return;
    };
    // SAFETY: valid per-CPU map value pointer for this run; only this CPU writes its copy.
    let counters = unsafe { &mut *counters };
    counters.on_cpu_ns += on_cpu;
    slot.charged_until_ns = now;
    if slot.pending_wait != 0 {
        let wait = slot.pending_wait_ns;
        counters.runqueue_wait_ns += wait;
        counters.runqueue_waits += 1;
        counters.wakeups += slot.pending_from_wakeup;
        if let Some(bucket) = counters.wait_hist.get_mut(wait_bucket(wait)) {
            *bucket += 1;
        }
        slot.pending_wait = 0;
    }
    match switch {
        Switch::Voluntary => counters.voluntary_switches += 1,
        Switch::Involuntary => counters.involuntary_switches += 1,
        Switch::Throttled => counters.throttled_switches += 1,
        Switch::None => {}
    }
}

/// This CPU's counters of `cgroup`, creating the entry on first use.
#[inline(always)]
fn cgroup_counters<C: EbpfContext>(
    ctx: &C,
    cgroup: u64,
    slot: &mut CpuSlot,
) -> Option<*mut CpuCounters> {
    if let Some(counters) = CGROUP_CPU.get_ptr_mut(&cgroup) {
        return Some(counters);
    }
    let zero = CpuCounters::default();
    // NOEXIST: another CPU may have created it meanwhile; then the lookup below finds it.
    let _ = CGROUP_CPU.insert(&cgroup, &zero, u64::from(aya_ebpf::bindings::BPF_NOEXIST));
    let counters = CGROUP_CPU.get_ptr_mut(&cgroup);
    if counters.is_none() {
        slot.dropped_events += 1;
        if slot.dropped_events == 1 {
            warn!(ctx, "cgroup CPU map full: events are being dropped");
        }
    }
    counters
}
