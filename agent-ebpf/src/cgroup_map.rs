//! The one way the programs reach a cgroup's counters in a per-CPU hash keyed by cgroup id.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::PerCpuHashMap};

/// This CPU's copy of `cgroup`'s counters, created zeroed on first use; `None` when the map is
/// full (callers count that as dropped).
#[inline(always)]
pub fn counters_or_new<V: Default>(map: &PerCpuHashMap<u64, V>, cgroup: u64) -> Option<*mut V> {
    if let Some(counters) = map.get_ptr_mut(&cgroup) {
        return Some(counters);
    }
    // NOEXIST: another CPU may have created it meanwhile; then the lookup below finds it.
    let _ = map.insert(&cgroup, &V::default(), u64::from(BPF_NOEXIST));
    map.get_ptr_mut(&cgroup)
}
