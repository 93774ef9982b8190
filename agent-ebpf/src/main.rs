//! Ballast's kernel programs. They only count: a few map operations per event, keyed by the
//! cgroup v2 id of the task concerned. User space owns all arithmetic beyond additions.
#![no_std]
#![no_main]

mod cpu;

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
