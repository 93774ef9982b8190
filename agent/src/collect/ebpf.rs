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
use ballast_common::{CpuCounters, CpuSlot};
use thiserror::Error;

use super::btf::kernel_member_offset;
use tracing::{debug, warn};

/// The scheduler tracepoints the CPU collector attaches to (BTF-typed, no tracefs needed).
const SCHED_PROGRAMS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];
/// The per-CPU flush tick.
const TICK_PROGRAM: &str = "flush_tick";
/// Names of every program, as exported in `ballast_ebpf_program_*{program}`.
pub const PROGRAM_NAMES: [&str; 4] = [
    "sched_switch",
    "sched_wakeup",
    "sched_wakeup_new",
    TICK_PROGRAM,
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

/// The attached CPU programs and their maps. Dropping it detaches everything.
pub struct CpuProbe {
    ebpf: Ebpf,
    cgroup_cpu: PerCpuHashMap<MapData, u64, CpuCounters>,
    cpu_slot: PerCpuArray<MapData, CpuSlot>,
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Keeps run-time statistics enabled while the probe lives; `None` if the kernel refused.
    stats: Option<OwnedFd>,
    /// Whether throttled time is kept out of the run-queue wait (see the kernel program).
    throttle_aware: bool,
}

impl std::fmt::Debug for CpuProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProbe")
            .field("run_time_stats", &self.stats.is_some())
            .finish()
    }
}

impl CpuProbe {
    /// Loads the object, attaches the scheduler programs and a flush tick of `tick_hz` per CPU.
    pub fn attach(tick_hz: u64) -> Result<Self, EbpfError> {
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(EbpfError::NoBtf);
        }
        let btf = Btf::from_sys_fs()?;
        // Kernels with task-based CFS throttling (6.18+) flag throttled tasks; the programs read
        // the flag to keep throttled time out of the run-queue wait.
        let throttled_offset = match kernel_member_offset("task_struct", "throttled") {
            Ok(offset) => offset,
            Err(err) => {
                warn!(error = %err, "looking up task_struct::throttled in kernel BTF failed");
                None
            }
        };
        if throttled_offset.is_none() {
            warn!(
                "this kernel does not flag throttled tasks (task_struct::throttled, 6.18+): run-queue \
                 wait of cgroups with a CPU quota includes their throttled time"
            );
        }
        let runtime_offset = runtime_offset();
        if runtime_offset.is_none() {
            warn!(
                "task_struct::se.sum_exec_runtime not found in kernel BTF: on-CPU time is measured \
                 with timestamps and includes steal time"
            );
        }
        let offset_global = throttled_offset.unwrap_or(0);
        let runtime_global = runtime_offset.unwrap_or(0);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("TASK_THROTTLED_OFFSET", &offset_global, true)
            .override_global("TASK_RUNTIME_OFFSET", &runtime_global, true)
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
        let stats = match enable_stats(Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(err) => {
                warn!(error = %err, "BPF run-time statistics unavailable");
                None
            }
        };
        for name in SCHED_PROGRAMS {
            let program: &mut BtfTracePoint = program_mut(&mut ebpf, name)?;
            let wrap = |source| EbpfError::Program {
                program: name,
                source,
            };
            program.load(name, &btf).map_err(wrap)?;
            program.attach().map_err(wrap)?;
        }
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
        let throttle_aware = throttled_offset.is_some();
        let cgroup_cpu = take_map(&mut ebpf, "CGROUP_CPU")?;
        let cpu_slot = take_map(&mut ebpf, "CPU_SLOT")?;
        debug!(tick_hz, "eBPF CPU programs attached");
        Ok(Self {
            ebpf,
            cgroup_cpu,
            cpu_slot,
            logger,
            stats,
            throttle_aware,
        })
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

    /// Forgets removed cgroups. A key that is already gone is not an error.
    pub fn remove_cgroups(&mut self, ids: &[u64]) -> Result<(), EbpfError> {
        for id in ids {
            match self.cgroup_cpu.remove(id) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(EbpfError::MapRead {
                        map: "CGROUP_CPU",
                        source,
                    })
                }
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
        Ok(per_cpu.iter().map(|slot| slot.dropped_events).sum())
    }

    /// Run counts and run time of each program; `None` when statistics are not enabled (a zero
    /// would be a lie).
    pub fn program_stats(&self) -> Option<Vec<ProgramStats>> {
        self.stats.as_ref()?;
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
        Some(out)
    }

    /// Forwards kernel-side log records (rare events only) to the agent's log.
    pub fn flush_kernel_log(&mut self) {
        if let Some(logger) = self.logger.as_mut() {
            logger.flush();
        }
    }
}

/// Offset of `task_struct::se.sum_exec_runtime`, the kernel's CPU-time accounting of a task.
fn runtime_offset() -> Option<u64> {
    let se = kernel_member_offset("task_struct", "se").ok().flatten()?;
    let runtime = kernel_member_offset("sched_entity", "sum_exec_runtime")
        .ok()
        .flatten()?;
    Some(se + runtime)
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
