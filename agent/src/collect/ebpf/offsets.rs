//! Where the kernel programs find what they read, in the running kernel's types: the
//! scheduler's per-task counters, the way from a task or a socket to its cgroup v2 id.
//!
//! Rust BPF programs cannot carry CO-RE relocations yet, so user space looks the offsets up in
//! /sys/kernel/btf/vmlinux and passes them in as read-only globals.

use super::EbpfError;
use crate::collect::btf::{kernel_btf, member_offset, BtfError};
use tracing::info;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct::pid`.
    pub pid: u64,
    /// `task_struct::se.sum_exec_runtime`.
    pub runtime: u64,
    /// `task_struct::sched_info.run_delay`.
    pub run_delay: u64,
    /// `task_struct::se.prev_sum_exec_runtime`.
    pub slice_start: u64,
    /// `task_struct::sched_info.pcount`: how many times the task was switched in.
    pub arrivals: u64,
    /// `task_struct::policy`.
    pub policy: u64,
    /// `task_struct::throttled` (task-based CFS throttling, 6.18+).
    pub throttled: Option<u64>,
    /// `task_struct::cgroups`, then `css_set::dfl_cgrp`, `cgroup::kn` and `kernfs_node::id`: the
    /// way to a task's cgroup v2 id.
    pub cgroups: u64,
    pub dfl_cgrp: u64,
    pub kn: u64,
    pub kn_id: u64,
    /// `sock::sk_cgrp_data.cgroup`: a socket's owner cgroup (needs CONFIG_SOCK_CGROUP_DATA).
    pub sock_cgroup: Option<u64>,
    /// `sk_buff::cb` + the offset of `tcp_gso_segs` in `struct tcp_skb_cb`.
    pub skb_tcp_gso_segs: Option<u64>,
}

/// `tcp_gso_segs` follows `seq` and `end_seq` (two u32) in `struct tcp_skb_cb`, inside an
/// anonymous union the offset parser does not descend into; that layout has not changed since
/// the field appeared (3.18), and the retransmission test checks the result against the
/// kernel's RetransSegs.
const TCP_SKB_CB_GSO_SEGS: u64 = 8;

impl KernelOffsets {
    pub fn of_running_kernel() -> Result<Self, EbpfError> {
        Self::from_btf(&kernel_btf()?)
    }

    fn from_btf(data: &[u8]) -> Result<Self, EbpfError> {
        let nested = |outer: &str,
                      outer_member: &str,
                      inner_type: &str,
                      inner: &str|
         -> Result<Option<u64>, BtfError> {
            let Some(base) = member_offset(data, outer, outer_member)? else {
                return Ok(None);
            };
            Ok(member_offset(data, inner_type, inner)?.map(|offset| base + offset))
        };
        let required = |offset: Option<u64>, field| offset.ok_or(EbpfError::MissingField { field });
        let member =
            |name: &str, member: &str, field| required(member_offset(data, name, member)?, field);
        let offsets = Self {
            pid: member("task_struct", "pid", "task_struct::pid")?,
            runtime: required(
                nested("task_struct", "se", "sched_entity", "sum_exec_runtime")?,
                "task_struct::se.sum_exec_runtime",
            )?,
            slice_start: required(
                nested("task_struct", "se", "sched_entity", "prev_sum_exec_runtime")?,
                "task_struct::se.prev_sum_exec_runtime",
            )?,
            run_delay: required(
                nested("task_struct", "sched_info", "sched_info", "run_delay")?,
                "task_struct::sched_info.run_delay",
            )?,
            arrivals: required(
                nested("task_struct", "sched_info", "sched_info", "pcount")?,
                "task_struct::sched_info.pcount",
            )?,
            policy: member("task_struct", "policy", "task_struct::policy")?,
            throttled: member_offset(data, "task_struct", "throttled")?,
            cgroups: member("task_struct", "cgroups", "task_struct::cgroups")?,
            dfl_cgrp: member("css_set", "dfl_cgrp", "css_set::dfl_cgrp")?,
            kn: member("cgroup", "kn", "cgroup::kn")?,
            kn_id: member("kernfs_node", "id", "kernfs_node::id")?,
            sock_cgroup: nested("sock", "sk_cgrp_data", "sock_cgroup_data", "cgroup")?,
            skb_tcp_gso_segs: member_offset(data, "sk_buff", "cb")?
                .map(|cb| cb + TCP_SKB_CB_GSO_SEGS),
        };
        info!(
            pid = offsets.pid,
            runtime = offsets.runtime,
            run_delay = offsets.run_delay,
            throttled = ?offsets.throttled,
            sock_cgroup = ?offsets.sock_cgroup,
            "kernel type offsets from BTF"
        );
        Ok(offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel (6.18 in CI) has every field the programs read, throttled included.
    #[test]
    fn offsets_of_running_kernel() {
        let offsets = KernelOffsets::of_running_kernel().expect("kernel BTF has the fields");
        assert!(offsets.pid > 0 && offsets.runtime > 0 && offsets.run_delay > 0);
        assert!(offsets.throttled.is_some(), "6.18 flags throttled tasks");
        assert!(offsets.sock_cgroup.is_some(), "sockets carry their cgroup");
        let fields = [
            offsets.pid,
            offsets.runtime,
            offsets.run_delay,
            offsets.cgroups,
        ];
        assert!(
            fields.iter().all(|f| *f < 16 * 1024),
            "offsets inside task_struct"
        );
    }
}
