//! What the programs know about `struct task_struct` and how to read it.
//!
//! Field offsets are read-only globals that user space fills in from the running kernel's BTF
//! (Rust BPF has no CO-RE yet). The verifier treats frozen read-only globals as constants,
//! checks each access against the kernel's type information and turns it into a fault-tolerant
//! load, so BTF-typed pointers are read directly, without a helper call per field.

/// Byte offsets in `struct task_struct`, set by user space at load time from the kernel's BTF
/// (read-only globals, constants to the verifier). A task field that is missing makes user space
/// refuse to load; `TASK_THROTTLED_OFFSET` alone may be 0 (kernels before 6.18).
#[unsafe(no_mangle)]
pub static TASK_PID_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static TASK_RUNTIME_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static TASK_RUN_DELAY_OFFSET: u64 = 0;
/// `se.prev_sum_exec_runtime`: the runtime when CFS last picked the task (its slice start).
#[unsafe(no_mangle)]
pub static TASK_SLICE_START_OFFSET: u64 = 0;
/// `sched_info.pcount`: the task's switch-in count, raised just after each switch-in tracepoint.
#[unsafe(no_mangle)]
pub static TASK_ARRIVALS_OFFSET: u64 = 0;
/// `policy`: which scheduling class serves the task (`prev_sum_exec_runtime` is only kept by the
/// fair class).
#[unsafe(no_mangle)]
pub static TASK_POLICY_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static TASK_THROTTLED_OFFSET: u64 = 0;
/// The path from a task to its cgroup v2 id: `task_struct::cgroups` -> `css_set::dfl_cgrp` ->
/// `cgroup::kn` -> `kernfs_node::id` (what `bpf_get_current_cgroup_id()` follows, as loads).
#[unsafe(no_mangle)]
pub static TASK_CGROUPS_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static CSS_SET_DFL_CGRP_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static CGROUP_KN_OFFSET: u64 = 0;
#[unsafe(no_mangle)]
pub static KERNFS_NODE_ID_OFFSET: u64 = 0;

/// Offset of the owner cgroup pointer in `struct sock` (`sk_cgrp_data.cgroup`), set at socket
/// creation by the kernel: the owner stays known when a retransmit fires from a timer.
#[unsafe(no_mangle)]
pub static SOCK_CGROUP_OFFSET: u64 = 0;

/// Offset of `tcp_gso_segs` in an `sk_buff` (`cb` holds a `struct tcp_skb_cb`): how many TCP
/// segments a retransmitted skb carries; 0 when unknown.
#[unsafe(no_mangle)]
pub static SKB_TCP_GSO_SEGS_OFFSET: u64 = 0;

/// Value of a loader-patched global.
#[inline(always)]
pub fn global(value: &u64) -> u64 {
    // SAFETY: a volatile read keeps the compiler from folding the placeholder 0 into the code;
    // the loader writes the real value before the program is verified.
    unsafe { core::ptr::read_volatile(value) }
}

/// A field of the BTF-typed pointer `task` (a `tp_btf` argument, `bpf_get_current_task_btf()`, or
/// a pointer loaded from such a pointer's field).
#[inline(always)]
pub fn field<T: Copy>(task: u64, offset: u64) -> T {
    // SAFETY: `task` is a BTF-typed kernel pointer and `offset` a verifier-known constant taken
    // from the kernel's BTF for a field of type T; the verifier checks the access against that
    // type and emits a fault-tolerant load.
    unsafe { core::ptr::read_volatile(task.wrapping_add(offset) as *const T) }
}

/// The cgroup v2 id of the BTF-typed task pointer `task` (the task in a scheduler tracepoint, or
/// the current task). Each step is a BTF-typed pointer load the verifier checks; programs run in
/// an RCU read-side section, which is what keeps a css_set alive.
#[inline(always)]
pub fn cgroup_of(task: u64) -> u64 {
    let css_set: u64 = field(task, global(&TASK_CGROUPS_OFFSET));
    cgroup_id(field(css_set, global(&CSS_SET_DFL_CGRP_OFFSET)))
}

/// The v2 id of the cgroup owning the BTF-typed socket pointer `sock`.
#[inline(always)]
pub fn cgroup_of_sock(sock: u64) -> u64 {
    cgroup_id(field(sock, global(&SOCK_CGROUP_OFFSET)))
}

/// The id of the BTF-typed `struct cgroup *` `cgroup` (its kernfs node's id).
#[inline(always)]
fn cgroup_id(cgroup: u64) -> u64 {
    let node: u64 = field(cgroup, global(&CGROUP_KN_OFFSET));
    field(node, global(&KERNFS_NODE_ID_OFFSET))
}
