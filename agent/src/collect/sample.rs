//! What one collection produces: cumulative per-cgroup CPU figures at one instant, plus how
//! they were measured. Plain data, consumed by the load model and the HTTP layer.

use std::{collections::BTreeMap, sync::Arc};

use ballast_common::{CpuCounters, MemoryCounters, NetCounters};
use serde::{Deserialize, Serialize};

use super::{
    cgroup::identity::Identity,
    cgroupfs::{memory::MemoryStat, Throttling},
};

/// How a signal is measured right now. `Unavailable` signals are absent from the output, never
/// reported as zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Ebpf,
    Cgroupfs,
    Unavailable,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Ebpf, Mode::Cgroupfs, Mode::Unavailable];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Cgroupfs => "cgroupfs",
            Mode::Unavailable => "unavailable",
        }
    }
}

/// Cumulative CPU figures of one cgroup (its own tasks, not its descendants').
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupCpu {
    /// On-CPU time, ns (eBPF: measured at context switches; cgroupfs: `cpu.stat` usage).
    pub on_cpu_ns: u64,
    /// Run-queue counters, only measured by the kernel programs.
    pub runqueue: Option<CpuCounters>,
    /// PSI `cpu.pressure` "some" total, µs (cgroupfs mode; mixes throttling with contention).
    pub psi_some_us: Option<u64>,
    /// CFS bandwidth throttling, only for cgroups with a CPU quota of their own.
    pub throttling: Option<Throttling>,
    /// Its CPU limit (CFS quota / period) in millicores, when it has a quota of its own.
    pub limit_millicores: Option<u64>,
}

/// Memory figures of one cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupMemory {
    /// Reclaim stalls of its tasks, measured by the kernel programs (cumulative).
    pub reclaim: Option<MemoryCounters>,
    /// cgroupfs figures, from the last memory read (they are read less often than CPU).
    pub stat: Option<MemoryStat>,
    /// PSI `memory.pressure` "some" total, µs.
    pub psi_some_us: Option<u64>,
}

/// One cgroup in a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct CgroupEntry {
    /// Shared with the collector's memory of the cgroup: a snapshot is made every interval and
    /// the identity (paths, names) does not change.
    pub identity: Arc<Identity>,
    pub cpu: CgroupCpu,
    pub memory: CgroupMemory,
    /// Traffic of the sockets it owns (eBPF only; `None` when not counted).
    pub network: Option<NetCounters>,
}

/// Node-wide memory figures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeMemory {
    /// `MemTotal` of /proc/meminfo.
    pub total_bytes: Option<u64>,
    /// `MemAvailable` of /proc/meminfo (the kernel's estimate of what can be allocated without
    /// swapping).
    pub available_bytes: Option<u64>,
    /// Reclaim stalls of every cgroup, removed ones included (cumulative; eBPF mode only).
    pub reclaim: Option<MemoryCounters>,
}

/// Node-wide cumulative figures. They include cgroups that no longer exist, so they only grow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeCpu {
    pub on_cpu_ns: u64,
    pub runqueue: Option<CpuCounters>,
}

/// Everything one collection saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC when the maps were read, ns.
    pub at_ns: u64,
    pub mode: Mode,
    /// Online CPUs, for utilisation.
    pub cpus: u32,
    pub cgroups: BTreeMap<u64, CgroupEntry>,
    pub node: NodeCpu,
    /// How memory is measured: `Ebpf` when reclaim stalls are traced, else `Cgroupfs`.
    pub memory_mode: Mode,
    pub node_memory: NodeMemory,
    /// `Ebpf` when packets are counted per cgroup, else `Unavailable` (cgroupfs has no such
    /// counters).
    pub network_mode: Mode,
    /// Whether TCP retransmissions are part of the network counters.
    pub retransmits_counted: bool,
    /// Traffic of every socket on the node, removed cgroups and cgroup-less sockets included.
    pub node_network: Option<NetCounters>,
    /// Kernel events not counted because the cgroup map was full (eBPF mode only).
    pub dropped_events: Option<u64>,
}
