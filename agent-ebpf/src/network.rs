//! Network pressure per cgroup: bytes and packets in both directions, and TCP retransmissions.
//!
//! Bytes and packets come from `cgroup_skb` programs attached (alongside anything else, in
//! multi mode) to the cgroup v2 root, which sees every socket's traffic; the kernel hands them
//! the socket's owner cgroup. Retransmissions come from `tcp_retransmit_skb`, which often fires
//! from a timer or softirq where the current task is unrelated: the owner is read from the
//! socket itself (`sk_cgrp_data`, set by the kernel when the socket was created).

use core::intrinsics::{atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_skb_cgroup_id,
    macros::{btf_tracepoint, cgroup_skb, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, SkBuffContext},
};
use ballast_common::NetCounters;

use crate::{
    cgroup_map::counters_or_new,
    task::{cgroup_of_sock, field, global, SKB_TCP_GSO_SEGS_OFFSET},
};

/// Bound of cgroups tracked at once (user space deletes removed ones).
const MAX_CGROUPS: u32 = 16_384;

#[map]
static CGROUP_NET: PerCpuHashMap<u64, NetCounters> =
    PerCpuHashMap::with_max_entries(MAX_CGROUPS, BPF_F_NO_PREALLOC);

/// Events not counted because `CGROUP_NET` was full (one slot per CPU).
#[map]
static NET_DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `cgroup_skb` verdict that lets the packet through: these programs only count.
const PASS: i32 = 1;

#[cgroup_skb]
pub fn net_ingress(ctx: SkBuffContext) -> i32 {
    count_packet(&ctx, Direction::Ingress);
    PASS
}

#[cgroup_skb]
pub fn net_egress(ctx: SkBuffContext) -> i32 {
    count_packet(&ctx, Direction::Egress);
    PASS
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

#[inline(always)]
fn count_packet(ctx: &SkBuffContext, direction: Direction) {
    // SAFETY: the context pointer is the program's own `__sk_buff`; the helper reads the owning
    // socket's cgroup (0 when there is no full socket, e.g. a time-wait reply).
    let cgroup = unsafe { bpf_skb_cgroup_id(ctx.skb.skb) };
    let bytes = u64::from(ctx.len());
    // SAFETY: `gso_segs` is a readable field of the program's own `__sk_buff`.
    let segments = u64::from(unsafe { (*ctx.skb.skb).gso_segs }).max(1);
    let Some(counters) = counters_of(cgroup) else {
        return;
    };
    // SAFETY: the fields of a map value pointer valid for this run.
    let (bytes_field, packets_field) = unsafe {
        match direction {
            Direction::Ingress => (
                &raw mut (*counters).rx_bytes,
                &raw mut (*counters).rx_packets,
            ),
            Direction::Egress => (
                &raw mut (*counters).tx_bytes,
                &raw mut (*counters).tx_packets,
            ),
        }
    };
    add(bytes_field, bytes);
    add(packets_field, segments);
}

/// Atomic add: an ingress run in softirq can interrupt an egress run in process context on the
/// same CPU, so even per-CPU values are updated atomically.
#[inline(always)]
fn add(field: *mut u64, value: u64) {
    // SAFETY: `field` points into a map value that is valid for this program run.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, value) };
}

/// `tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, int err)`.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit(ctx: BtfTracePointContext) -> i32 {
    let sock: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    let err: i64 = ctx.arg(2);
    // Failed attempts are not retransmissions (the kernel does not count them either).
    if err != 0 {
        return 0;
    }
    // One retransmitted skb can carry several segments; count segments, as the kernel does.
    let segments_offset = global(&SKB_TCP_GSO_SEGS_OFFSET);
    let segments = if segments_offset == 0 {
        1
    } else {
        u64::from(field::<u16>(skb, segments_offset)).max(1)
    };
    if let Some(counters) = counters_of(cgroup_of_sock(sock)) {
        // SAFETY: a field of a map value pointer valid for this run.
        add(unsafe { &raw mut (*counters).tcp_retransmits }, segments);
    }
    0
}

/// This CPU's counters of `cgroup`, created on first use; `None` when the map is full (counted
/// in `NET_DROPPED`, so user space can say figures are incomplete).
#[inline(always)]
fn counters_of(cgroup: u64) -> Option<*mut NetCounters> {
    let counters = counters_or_new(&CGROUP_NET, cgroup);
    if counters.is_none() {
        if let Some(dropped) = NET_DROPPED.get_ptr_mut(0) {
            add(dropped, 1);
        }
    }
    counters
}
