//! Loads and attaches the kernel programs, and reads their maps.
//!
//! The object is built by `agent/build.rs` and embedded here, so the binary is self-contained.
//! The CPU programs are required (without them the agent falls back to cgroupfs); the memory
//! and network programs are optional, each signal standing on its own. Reading is cheap: one
//! map walk per collection interval, folding the per-CPU copies into one value per cgroup.

mod maps;
mod offsets;
pub mod run_stats;

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray},
    programs::{
        cgroup_skb::CgroupSkbAttachType,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        BtfTracePoint, CgroupAttachMode, CgroupSkb, PerfEvent,
    },
    Btf, Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use ballast_common::{CpuCounters, CpuSlot, MemoryCounters, NetCounters};
use thiserror::Error;
use tracing::{debug, warn};

pub use self::maps::Accumulate;
pub use self::run_stats::{ProgramStats, RunStats, RunStatsReport};
use self::{maps::CgroupMap, offsets::KernelOffsets, run_stats::RunStatsSwitch};
use super::btf::BtfError;

/// The scheduler tracepoint the CPU collector attaches to (BTF-typed, no tracefs needed).
const SWITCH_PROGRAM: &str = "sched_switch";
/// The per-CPU flush tick.
const TICK_PROGRAM: &str = "flush_tick";
/// The reclaim programs and their tracepoints (BTF-typed).
const MEMORY_PROGRAMS: [(&str, &str); 4] = [
    ("direct_reclaim_begin", "mm_vmscan_direct_reclaim_begin"),
    ("direct_reclaim_end", "mm_vmscan_direct_reclaim_end"),
    ("memcg_reclaim_begin", "mm_vmscan_memcg_reclaim_begin"),
    ("memcg_reclaim_end", "mm_vmscan_memcg_reclaim_end"),
];
/// The packet counters, on the cgroup v2 root.
const NET_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("net_ingress", CgroupSkbAttachType::Ingress),
    ("net_egress", CgroupSkbAttachType::Egress),
];
/// The retransmission counter and its tracepoint.
const RETRANSMIT_PROGRAM: (&str, &str) = ("tcp_retransmit", "tcp_retransmit_skb");
/// Names of every program, as exported in `ballast_ebpf_program_*{program}`.
pub const PROGRAM_NAMES: [&str; 9] = [
    SWITCH_PROGRAM,
    TICK_PROGRAM,
    MEMORY_PROGRAMS[0].0,
    MEMORY_PROGRAMS[1].0,
    MEMORY_PROGRAMS[2].0,
    MEMORY_PROGRAMS[3].0,
    NET_PROGRAMS[0].0,
    NET_PROGRAMS[1].0,
    RETRANSMIT_PROGRAM.0,
];

/// Why the kernel programs could not be used. Every message says what to do; the agent then
/// falls back to cgroupfs and reports the mode.
#[derive(Debug, Error)]
pub enum EbpfError {
    #[error(
        "missing privileges for eBPF (need CAP_BPF and CAP_PERFMON, or root); run as root, add \
         those capabilities to the container, or pass --no-ebpf to use cgroupfs"
    )]
    NotPermitted,
    #[error(
        "kernel BTF not found at /sys/kernel/btf/vmlinux (the BTF-typed tracepoints need it); use a \
         kernel built with CONFIG_DEBUG_INFO_BTF=y, mount /sys read-only into the container, or pass \
         --no-ebpf"
    )]
    NoBtf,
    #[error("reading kernel BTF failed: {0}")]
    Btf(#[from] aya::BtfError),
    #[error(transparent)]
    KernelTypes(#[from] BtfError),
    #[error(
        "{field} not found in the kernel's BTF; the kernel programs need it (CONFIG_SCHED_INFO for \
         run_delay); pass --no-ebpf to read cgroupfs instead"
    )]
    MissingField { field: &'static str },
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "{name} is not in the embedded eBPF object; the build is inconsistent, rebuild the agent"
    )]
    NotInObject { name: &'static str },
    #[error("eBPF map {map} has the wrong type: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("reading eBPF map {map}: {source}")]
    MapRead {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("listing online CPUs failed: {0}")]
    Cpus(String),
    #[error("opening the cgroup v2 root {path} failed: {source}; mount the host's /sys/fs/cgroup")]
    CgroupRoot {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The attached kernel programs and their maps. Dropping it detaches everything.
pub struct KernelProbe {
    ebpf: Ebpf,
    cpu: CgroupMap<CpuCounters>,
    cpu_slot: PerCpuArray<MapData, CpuSlot>,
    /// `None` when the reclaim tracepoints could not be used (the reason is logged).
    memory: Option<CgroupMap<MemoryCounters>>,
    /// `None` when the packet counters could not be attached (the reason is logged).
    network: Option<CgroupMap<NetCounters>>,
    /// Whether TCP retransmissions are counted (into `network`).
    retransmits: bool,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    run_stats: RunStatsSwitch,
    /// Whether throttled time is kept out of the run-queue wait (see the kernel program).
    throttle_aware: bool,
}

impl std::fmt::Debug for KernelProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelProbe")
            .field("memory", &self.memory.is_some())
            .field("network", &self.network.is_some())
            .field("run_time_stats", &self.run_stats.enabled())
            .finish()
    }
}

impl KernelProbe {
    /// Loads the object and attaches the scheduler program, a flush tick of `tick_hz` per CPU,
    /// and where possible the reclaim programs and the packet counters on `cgroup2_root`.
    pub fn attach(
        tick_hz: u64,
        run_stats: RunStats,
        cgroup2_root: &Path,
    ) -> Result<Self, EbpfError> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(EbpfError::NoBtf);
        }
        // The agent's own look-ups first, so their buffer is gone before aya parses the BTF.
        let offsets = KernelOffsets::of_running_kernel()?;
        if offsets.throttled.is_none() {
            warn!(
                "this kernel does not flag throttled tasks (task_struct::throttled, 6.18+): run-queue \
                 wait of cgroups with a CPU quota includes their throttled time"
            );
        }
        let btf = Btf::from_sys_fs()?;
        let throttled = offsets.throttled.unwrap_or(0);
        let sock_cgroup = offsets.sock_cgroup.unwrap_or(0);
        let gso_segs = offsets.skb_tcp_gso_segs.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("TASK_PID_OFFSET", &offsets.pid, true)
            .override_global("TASK_RUNTIME_OFFSET", &offsets.runtime, true)
            .override_global("TASK_RUN_DELAY_OFFSET", &offsets.run_delay, true)
            .override_global("TASK_SLICE_START_OFFSET", &offsets.slice_start, true)
            .override_global("TASK_ARRIVALS_OFFSET", &offsets.arrivals, true)
            .override_global("TASK_POLICY_OFFSET", &offsets.policy, true)
            .override_global("TASK_THROTTLED_OFFSET", &throttled, true)
            .override_global("TASK_CGROUPS_OFFSET", &offsets.cgroups, true)
            .override_global("CSS_SET_DFL_CGRP_OFFSET", &offsets.dfl_cgrp, true)
            .override_global("CGROUP_KN_OFFSET", &offsets.kn, true)
            .override_global("KERNFS_NODE_ID_OFFSET", &offsets.kn_id, true)
            .override_global("SOCK_CGROUP_OFFSET", &sock_cgroup, true)
            .override_global("SKB_TCP_GSO_SEGS_OFFSET", &gso_segs, true)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/ballast"
            )))
            .map_err(|err| match &err {
                aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                    if io_error.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    EbpfError::NotPermitted
                }
                _ => EbpfError::Load(err),
            })?;
        let logger = match EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                warn!(error = %err, "kernel-side log messages unavailable");
                None
            }
        };
        attach_tracepoint(&mut ebpf, &btf, SWITCH_PROGRAM, SWITCH_PROGRAM)?;
        // Memory and network are optional: the CPU signal stands on its own.
        let memory = match attach_memory(&mut ebpf, &btf) {
            Ok(()) => Some(CgroupMap::new(
                "CGROUP_MEMORY",
                take_map(&mut ebpf, "CGROUP_MEMORY")?,
                Some(take_map(&mut ebpf, "MEMORY_DROPPED")?),
            )),
            Err(err) => {
                warn!(signal = "memory", error = %err, "reclaim stalls cannot be traced");
                None
            }
        };
        let network = match attach_network(&mut ebpf, cgroup2_root) {
            Ok(()) => Some(CgroupMap::new(
                "CGROUP_NET",
                take_map(&mut ebpf, "CGROUP_NET")?,
                Some(take_map(&mut ebpf, "NET_DROPPED")?),
            )),
            Err(err) => {
                warn!(signal = "network", error = %err, "packets cannot be counted per cgroup");
                None
            }
        };
        let retransmits = network.is_some()
            && offsets.sock_cgroup.is_some()
            && match attach_tracepoint(&mut ebpf, &btf, RETRANSMIT_PROGRAM.0, RETRANSMIT_PROGRAM.1)
            {
                Ok(()) => true,
                Err(err) => {
                    warn!(signal = "network", error = %err, "TCP retransmissions cannot be counted");
                    false
                }
            };
        drop(btf);
        let tick: &mut PerfEvent = program_mut(&mut ebpf, TICK_PROGRAM)?;
        let wrap = |source| EbpfError::Program {
            program: TICK_PROGRAM,
            source,
        };
        tick.load().map_err(wrap)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, err)| EbpfError::Cpus(format!("{what}: {err}")))?;
        for cpu in cpus {
            tick.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(tick_hz),
                false,
            )
            .map_err(wrap)?;
        }
        let cpu = CgroupMap::new("CGROUP_CPU", take_map(&mut ebpf, "CGROUP_CPU")?, None);
        let cpu_slot = take_map(&mut ebpf, "CPU_SLOT")?;
        debug!(tick_hz, ?run_stats, "eBPF programs attached");
        Ok(Self {
            ebpf,
            cpu,
            cpu_slot,
            memory,
            network,
            retransmits,
            logger,
            run_stats: RunStatsSwitch::new(run_stats),
            throttle_aware: offsets.throttled.is_some(),
        })
    }

    /// Turns run-time statistics on or off as the mode wants at `now_ns` (CLOCK_MONOTONIC).
    pub fn schedule_run_stats(&mut self, now_ns: u64) {
        self.run_stats.schedule(now_ns);
    }

    /// True when throttled time is excluded from the run-queue wait.
    pub fn throttle_aware(&self) -> bool {
        self.throttle_aware
    }

    /// True when reclaim stalls are traced.
    pub fn traces_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// True when packets are counted per cgroup.
    pub fn counts_network(&self) -> bool {
        self.network.is_some()
    }

    /// True when TCP retransmissions are counted.
    pub fn counts_retransmits(&self) -> bool {
        self.retransmits
    }

    /// Every cgroup's CPU counters, summed over CPUs.
    pub fn read_cgroups(&self) -> Result<Vec<(u64, CpuCounters)>, EbpfError> {
        self.cpu.read()
    }

    /// Every cgroup's reclaim counters; `None` when reclaim is not traced.
    pub fn read_memory(&self) -> Result<Option<Vec<(u64, MemoryCounters)>>, EbpfError> {
        self.memory.as_ref().map(CgroupMap::read).transpose()
    }

    /// Every cgroup's network counters; `None` when packets are not counted.
    pub fn read_network(&self) -> Result<Option<Vec<(u64, NetCounters)>>, EbpfError> {
        self.network.as_ref().map(CgroupMap::read).transpose()
    }

    /// Forgets removed cgroups in every map.
    pub fn remove_cgroups(&mut self, ids: &[u64]) -> Result<(), EbpfError> {
        for id in ids {
            self.cpu.remove(id)?;
            if let Some(memory) = self.memory.as_mut() {
                memory.remove(id)?;
            }
            if let Some(network) = self.network.as_mut() {
                network.remove(id)?;
            }
        }
        Ok(())
    }

    /// Events that could not be counted because a cgroup map was full (all CPUs, all maps).
    pub fn dropped_events(&self) -> Result<u64, EbpfError> {
        let per_cpu = self
            .cpu_slot
            .get(&0, 0)
            .map_err(|source| EbpfError::MapRead {
                map: "CPU_SLOT",
                source,
            })?;
        let cpu = per_cpu
            .iter()
            .fold(0u64, |sum, slot| sum.wrapping_add(slot.dropped_events));
        let memory = self.memory.as_ref().map(CgroupMap::dropped).transpose()?;
        let network = self.network.as_ref().map(CgroupMap::dropped).transpose()?;
        Ok(cpu
            .wrapping_add(memory.unwrap_or(0))
            .wrapping_add(network.unwrap_or(0)))
    }

    /// Run counts and run time of each program; `None` until statistics have been on once, or
    /// when the kernel refused them (a zero would be a lie).
    pub fn program_stats(&self) -> Option<RunStatsReport> {
        if !self.run_stats.seen() {
            return None;
        }
        let mut out = Vec::with_capacity(PROGRAM_NAMES.len());
        for (name, program) in self.ebpf.programs() {
            let Some(known) = PROGRAM_NAMES.iter().find(|known| **known == name) else {
                continue;
            };
            // Programs of a signal that could not be loaded are left out.
            if program.fd().is_err() {
                continue;
            }
            match program.info() {
                Ok(info) => out.push(ProgramStats {
                    program: known,
                    run_count: info.run_count(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                }),
                Err(err) => warn!(program = name, error = %err, "reading program info failed"),
            }
        }
        Some(RunStatsReport {
            enabled: self.run_stats.enabled(),
            programs: out,
        })
    }

    /// Forwards kernel-side log records (rare events only) to the agent's log.
    pub fn flush_kernel_log(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }
}

/// Loads and attaches the BTF tracepoint program `name` to `tracepoint`.
fn attach_tracepoint(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    tracepoint: &str,
) -> Result<(), EbpfError> {
    let program: &mut BtfTracePoint = program_mut(ebpf, name)?;
    let wrap = |source| EbpfError::Program {
        program: name,
        source,
    };
    program.load(tracepoint, btf).map_err(wrap)?;
    program.attach().map_err(wrap)?;
    Ok(())
}

/// Loads and attaches the reclaim programs.
fn attach_memory(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), EbpfError> {
    for (name, tracepoint) in MEMORY_PROGRAMS {
        attach_tracepoint(ebpf, btf, name, tracepoint)?;
    }
    Ok(())
}

/// Attaches the packet counters to the cgroup v2 root, next to whatever else is attached there:
/// a CNI's programs keep running, and ours only count. On kernels with BPF links (5.7+, which
/// aya uses) a link attachment always coexists with others, and the kernel rejects any flag,
/// including "allow multi", so the mode passed is the flag-less one.
fn attach_network(ebpf: &mut Ebpf, cgroup2_root: &Path) -> Result<(), EbpfError> {
    let root = std::fs::File::open(cgroup2_root).map_err(|source| EbpfError::CgroupRoot {
        path: cgroup2_root.to_path_buf(),
        source,
    })?;
    for (name, attach_type) in NET_PROGRAMS {
        let program: &mut CgroupSkb = program_mut(ebpf, name)?;
        let wrap = |source| EbpfError::Program {
            program: name,
            source,
        };
        program.load().map_err(wrap)?;
        program
            .attach(&root, attach_type, CgroupAttachMode::Single)
            .map_err(wrap)?;
    }
    Ok(())
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or(EbpfError::NotInObject { name })?;
    program.try_into().map_err(|source| EbpfError::Program {
        program: name,
        source,
    })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(EbpfError::NotInObject { name })?;
    T::try_from(map).map_err(|err| EbpfError::Map {
        map: name,
        detail: err.to_string(),
    })
}
