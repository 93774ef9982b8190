//! Ballast's kernel programs. They only count: a few map operations per event, keyed by the
//! cgroup v2 id of the task concerned. User space owns all arithmetic beyond additions.
#![no_std]
#![no_main]
// The BPF target has no compare-and-swap, so core's atomic types offer no `fetch_add`; the
// intrinsic lowers to BPF's own atomic add instruction, which is all the programs need.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod cgroup_map;
mod cpu;
mod memory;
mod network;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never entered at run time.
    loop {}
}

/// The scheduler tracepoints and `bpf_probe_read_kernel` are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
