//! Loads and attaches the kernel programs, and reads their maps.
//!
//! The object is built by `agent/build.rs` and embedded here, so the binary is self-contained.
//! Reading is cheap: one map walk per collection interval, folding the per-CPU copies into one
//! value per cgroup.

use std::{os::fd::OwnedFd, path::Path};

use aya::{
    maps::{MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        BtfTracePoint, PerfEvent,
    },
    sys::{enable_stats, Stats},
    Btf, Ebpf, EbpfLoader,
};
use aya_log::EbpfLogger;
use ballast_common::{CpuCounters, CpuSlot, MemoryCounters};
use thiserror::Error;

use super::btf::{kernel_btf, member_offset, BtfError};
use tracing::{debug, info, warn};

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
/// Names of every program, as exported in `ballast_ebpf_program_*{program}`.
pub const PROGRAM_NAMES: [&str; 6] = [
    SWITCH_PROGRAM,
    TICK_PROGRAM,
    MEMORY_PROGRAMS[0].0,
    MEMORY_PROGRAMS[1].0,
    MEMORY_PROGRAMS[2].0,
    MEMORY_PROGRAMS[3].0,
];

/// When the kernel's BPF run-time statistics (`kernel.bpf_stats_enabled`) are on.
///
/// They are one switch for the whole node: while on, *every* BPF program on it (the CNI's
/// datapath included) pays two clock reads per run, about 5 % of a context-switch storm on a
/// 2-vCPU VM (BENCHMARKS.md). Sampling measures the programs' cost for a few seconds a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunStats {
    /// On while the agent runs.
    Always,
    /// On for the last [`SAMPLE_WINDOW_NS`] of every [`SAMPLE_PERIOD_NS`].
    Sampled,
    /// Never turned on by the agent.
    Off,
}

/// Sampling period of [`RunStats::Sampled`].
pub const SAMPLE_PERIOD_NS: u64 = 60_000_000_000;
/// Length of each sampling window.
pub const SAMPLE_WINDOW_NS: u64 = 5_000_000_000;

impl RunStats {
    /// Whether statistics should be on `since_start_ns` after the first collection. Sampling
    /// windows close each period rather than open it, so start-up is not measured.
    pub fn wanted(self, since_start_ns: u64) -> bool {
        match self {
            RunStats::Always => true,
            RunStats::Off => false,
            RunStats::Sampled => {
                since_start_ns % SAMPLE_PERIOD_NS >= SAMPLE_PERIOD_NS - SAMPLE_WINDOW_NS
            }
        }
    }
}

/// Run-time statistics of the kernel programs, as far as they were measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStatsReport {
    /// Whether statistics are being collected right now. Counts only advance while they are, so
    /// the cost per run is `rate(run seconds) / rate(runs)` in every mode.
    pub enabled: bool,
    pub programs: Vec<ProgramStats>,
}

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
}

/// Run-time statistics of one kernel program (kernel.bpf_stats_enabled via BPF_ENABLE_STATS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// The reclaim programs' maps, when they could be attached.
struct MemoryMaps {
    cgroups: PerCpuHashMap<MapData, u64, MemoryCounters>,
    dropped: PerCpuArray<MapData, u64>,
}

/// The attached kernel programs and their maps. Dropping it detaches everything.
pub struct KernelProbe {
    ebpf: Ebpf,
    cgroup_cpu: PerCpuHashMap<MapData, u64, CpuCounters>,
    cpu_slot: PerCpuArray<MapData, CpuSlot>,
    /// `None` when the reclaim tracepoints could not be used (the reason is logged).
    memory: Option<MemoryMaps>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    run_stats: RunStats,
    /// Keeps run-time statistics enabled while it is held.
    stats: Option<OwnedFd>,
    /// Monotonic time of the first scheduling decision (the origin of sampling windows).
    stats_origin_ns: Option<u64>,
    /// Statistics have been on at least once (before that, counts would be a fake zero).
    stats_seen: bool,
    /// The kernel refused to enable statistics (logged once).
    stats_refused: bool,
    /// Whether throttled time is kept out of the run-queue wait (see the kernel program).
    throttle_aware: bool,
}

impl std::fmt::Debug for KernelProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelProbe")
            .field("run_time_stats", &self.stats.is_some())
            .finish()
    }
}

impl KernelProbe {
    /// Loads the object, attaches the scheduler program and a flush tick of `tick_hz` per CPU.
    pub fn attach(tick_hz: u64, run_stats: RunStats) -> Result<Self, EbpfError> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(EbpfError::NoBtf);
        }
        // The agent's own look-ups first, so their buffer is gone before aya parses the BTF.
        let offsets = TaskOffsets::of_running_kernel()?;
        if offsets.throttled.is_none() {
            warn!(
                "this kernel does not flag throttled tasks (task_struct::throttled, 6.18+): run-queue \
                 wait of cgroups with a CPU quota includes their throttled time"
            );
        }
        let btf = Btf::from_sys_fs()?;
        let throttled = offsets.throttled.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("TASK_PID_OFFSET", &offsets.pid, true)
            .override_global("TASK_RUNTIME_OFFSET", &offsets.runtime, true)
            .override_global("TASK_RUN_DELAY_OFFSET", &offsets.run_delay, true)
            .override_global("TASK_THROTTLED_OFFSET", &throttled, true)
            .override_global("TASK_CGROUPS_OFFSET", &offsets.cgroups, true)
            .override_global("CSS_SET_DFL_CGRP_OFFSET", &offsets.dfl_cgrp, true)
            .override_global("CGROUP_KN_OFFSET", &offsets.kn, true)
            .override_global("KERNFS_NODE_ID_OFFSET", &offsets.kn_id, true)
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
        let switch: &mut BtfTracePoint = program_mut(&mut ebpf, SWITCH_PROGRAM)?;
        let wrap = |source| EbpfError::Program {
            program: SWITCH_PROGRAM,
            source,
        };
        switch.load(SWITCH_PROGRAM, &btf).map_err(wrap)?;
        switch.attach().map_err(wrap)?;
        // Memory is optional: the CPU signal stands on its own if reclaim cannot be traced.
        let memory = match attach_memory(&mut ebpf, &btf) {
            Ok(()) => Some(MemoryMaps {
                cgroups: take_map(&mut ebpf, "CGROUP_MEMORY")?,
                dropped: take_map(&mut ebpf, "MEMORY_DROPPED")?,
            }),
            Err(err) => {
                warn!(signal = "memory", error = %err, "reclaim stalls cannot be traced");
                None
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
        let cgroup_cpu = take_map(&mut ebpf, "CGROUP_CPU")?;
        let cpu_slot = take_map(&mut ebpf, "CPU_SLOT")?;
        debug!(tick_hz, ?run_stats, "eBPF CPU programs attached");
        Ok(Self {
            ebpf,
            cgroup_cpu,
            cpu_slot,
            memory,
            logger,
            run_stats,
            stats: None,
            stats_origin_ns: None,
            stats_seen: false,
            stats_refused: false,
            throttle_aware: offsets.throttled.is_some(),
        })
    }

    /// Turns run-time statistics on or off as the mode wants at `now_ns` (CLOCK_MONOTONIC).
    pub fn schedule_run_stats(&mut self, now_ns: u64) {
        let origin = *self.stats_origin_ns.get_or_insert(now_ns);
        let wanted = self.run_stats.wanted(now_ns.saturating_sub(origin));
        match (wanted, self.stats.is_some()) {
            (true, false) if !self.stats_refused => match enable_stats(Stats::RunTime) {
                Ok(fd) => {
                    self.stats = Some(fd);
                    self.stats_seen = true;
                    debug!("BPF run-time statistics on");
                }
                Err(err) => {
                    self.stats_refused = true;
                    warn!(error = %err, "BPF run-time statistics unavailable");
                }
            },
            (false, true) => {
                self.stats = None;
                debug!("BPF run-time statistics off");
            }
            _ => {}
        }
    }

    /// True when throttled time is excluded from the run-queue wait.
    pub fn throttle_aware(&self) -> bool {
        self.throttle_aware
    }

    /// Every cgroup's counters, summed over CPUs.
    pub fn read_cgroups(&self) -> Result<Vec<(u64, CpuCounters)>, EbpfError> {
        let mut out = Vec::with_capacity(256);
        for entry in self.cgroup_cpu.iter() {
            let (cgroup, per_cpu) = entry.map_err(|source| EbpfError::MapRead {
                map: "CGROUP_CPU",
                source,
            })?;
            let mut total = CpuCounters::default();
            for value in per_cpu.iter() {
                total.accumulate(value);
            }
            out.push((cgroup, total));
        }
        Ok(out)
    }

    /// True when reclaim stalls are traced.
    pub fn traces_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// Every cgroup's reclaim counters, summed over CPUs; `None` when reclaim is not traced.
    pub fn read_memory(&self) -> Result<Option<Vec<(u64, MemoryCounters)>>, EbpfError> {
        let Some(memory) = &self.memory else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(64);
        for entry in memory.cgroups.iter() {
            let (cgroup, per_cpu) = entry.map_err(|source| EbpfError::MapRead {
                map: "CGROUP_MEMORY",
                source,
            })?;
            let mut total = MemoryCounters::default();
            for value in per_cpu.iter() {
                total.accumulate(value);
            }
            out.push((cgroup, total));
        }
        Ok(Some(out))
    }

    /// Forgets removed cgroups. A key that is already gone is not an error.
    pub fn remove_cgroups(&mut self, ids: &[u64]) -> Result<(), EbpfError> {
        for id in ids {
            remove_key(&mut self.cgroup_cpu, id, "CGROUP_CPU")?;
            if let Some(memory) = self.memory.as_mut() {
                remove_key(&mut memory.cgroups, id, "CGROUP_MEMORY")?;
            }
        }
        Ok(())
    }

    /// Events that could not be counted because the cgroup map was full (all CPUs).
    pub fn dropped_events(&self) -> Result<u64, EbpfError> {
        let per_cpu = self
            .cpu_slot
            .get(&0, 0)
            .map_err(|source| EbpfError::MapRead {
                map: "CPU_SLOT",
                source,
            })?;
        let cpu: u64 = per_cpu.iter().map(|slot| slot.dropped_events).sum();
        let memory: u64 = match &self.memory {
            Some(memory) => memory
                .dropped
                .get(&0, 0)
                .map_err(|source| EbpfError::MapRead {
                    map: "MEMORY_DROPPED",
                    source,
                })?
                .iter()
                .sum(),
            None => 0,
        };
        Ok(cpu.wrapping_add(memory))
    }

    /// Run counts and run time of each program; `None` until statistics have been on once, or
    /// when the kernel refused them (a zero would be a lie).
    pub fn program_stats(&self) -> Option<RunStatsReport> {
        if !self.stats_seen {
            return None;
        }
        let mut out = Vec::with_capacity(PROGRAM_NAMES.len());
        for (name, program) in self.ebpf.programs() {
            let Some(known) = PROGRAM_NAMES.iter().find(|known| **known == name) else {
                continue;
            };
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
            enabled: self.stats.is_some(),
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

/// Where the kernel programs find the scheduler's per-task counters in `struct task_struct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TaskOffsets {
    pid: u64,
    /// `se.sum_exec_runtime`.
    runtime: u64,
    /// `sched_info.run_delay`.
    run_delay: u64,
    /// `throttled` (task-based CFS throttling, 6.18+).
    throttled: Option<u64>,
    /// `cgroups`, then `css_set::dfl_cgrp`, `cgroup::kn` and `kernfs_node::id`: the way to a
    /// task's cgroup v2 id.
    cgroups: u64,
    dfl_cgrp: u64,
    kn: u64,
    kn_id: u64,
}

impl TaskOffsets {
    fn of_running_kernel() -> Result<Self, EbpfError> {
        Self::from_btf(&kernel_btf()?)
    }

    fn from_btf(data: &[u8]) -> Result<Self, EbpfError> {
        let nested = |outer: &str, inner_type: &str, inner: &str| -> Result<Option<u64>, BtfError> {
            let Some(base) = member_offset(data, "task_struct", outer)? else {
                return Ok(None);
            };
            Ok(member_offset(data, inner_type, inner)?.map(|offset| base + offset))
        };
        let required = |offset: Option<u64>, field| offset.ok_or(EbpfError::MissingField { field });
        let member = |name: &str, member: &str, field| required(member_offset(data, name, member)?, field);
        let offsets = Self {
            pid: required(member_offset(data, "task_struct", "pid")?, "task_struct::pid")?,
            runtime: required(
                nested("se", "sched_entity", "sum_exec_runtime")?,
                "task_struct::se.sum_exec_runtime",
            )?,
            run_delay: required(
                nested("sched_info", "sched_info", "run_delay")?,
                "task_struct::sched_info.run_delay",
            )?,
            throttled: member_offset(data, "task_struct", "throttled")?,
            cgroups: member("task_struct", "cgroups", "task_struct::cgroups")?,
            dfl_cgrp: member("css_set", "dfl_cgrp", "css_set::dfl_cgrp")?,
            kn: member("cgroup", "kn", "cgroup::kn")?,
            kn_id: member("kernfs_node", "id", "kernfs_node::id")?,
        };
        info!(
            pid = offsets.pid,
            runtime = offsets.runtime,
            run_delay = offsets.run_delay,
            throttled = ?offsets.throttled,
            "task_struct offsets from kernel BTF"
        );
        Ok(offsets)
    }
}

/// Loads and attaches the reclaim programs.
fn attach_memory(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), EbpfError> {
    for (name, tracepoint) in MEMORY_PROGRAMS {
        let program: &mut BtfTracePoint = program_mut(ebpf, name)?;
        let wrap = |source| EbpfError::Program {
            program: name,
            source,
        };
        program.load(tracepoint, btf).map_err(wrap)?;
        program.attach().map_err(wrap)?;
    }
    Ok(())
}

/// Removes `key` from a per-CPU hash; a key that is already gone is not an error.
fn remove_key<V: aya::Pod>(
    map: &mut PerCpuHashMap<MapData, u64, V>,
    key: &u64,
    name: &'static str,
) -> Result<(), EbpfError> {
    match map.remove(key) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(source) => Err(EbpfError::MapRead { map: name, source }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel (6.18 in CI) has every field the programs read, throttled included.
    #[test]
    fn task_offsets_of_running_kernel() {
        let offsets = TaskOffsets::of_running_kernel().expect("kernel BTF has the task fields");
        assert!(offsets.pid > 0 && offsets.runtime > 0 && offsets.run_delay > 0);
        assert!(offsets.throttled.is_some(), "6.18 flags throttled tasks");
        let fields = [offsets.pid, offsets.runtime, offsets.run_delay];
        assert!(fields.iter().all(|f| *f < 16 * 1024), "offsets inside task_struct");
    }

    #[test]
    fn sampling_windows_close_each_period() {
        let s = 1_000_000_000;
        assert!(!RunStats::Sampled.wanted(0));
        assert!(!RunStats::Sampled.wanted(54 * s));
        assert!(RunStats::Sampled.wanted(55 * s));
        assert!(RunStats::Sampled.wanted(59 * s + s / 2));
        assert!(!RunStats::Sampled.wanted(60 * s));
        assert!(RunStats::Sampled.wanted(119 * s));
        assert!(RunStats::Always.wanted(0) && !RunStats::Off.wanted(55 * s));
    }
}
