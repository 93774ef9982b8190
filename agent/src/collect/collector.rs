//! The CPU collector: kernel programs when they can run, cgroupfs otherwise, and the same
//! snapshot shape either way.
//!
//! Cgroup ids are mapped to paths by walking the cgroup v2 hierarchy (a directory's inode number
//! is the id the kernel programs see). The walk runs when the kernel reports an id we do not know
//! yet and every `rescan_interval`; an id that is in the maps but not in a fresh walk belongs to a
//! removed cgroup: its map entry is deleted and its counts move to the node's retired totals.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use ballast_common::{CpuCounters, MemoryCounters, NetCounters};
use thiserror::Error;
use tracing::{info, warn};

use super::{
    cgroup::{
        hierarchy::{self, CgroupTree, HierarchyError, Mounts},
        identity::{identify, Identity},
    },
    cgroupfs::{
        self,
        memory::{self, MemorySource},
        Throttling,
    },
    ebpf::{Accumulate, EbpfError, KernelProbe, RunStats, RunStatsReport},
    sample::{CgroupCpu, CgroupEntry, CgroupMemory, Mode, NodeCpu, NodeMemory, Snapshot},
};

/// How the collector should run.
#[derive(Clone, Debug)]
pub struct CollectOptions {
    /// Skip the kernel programs and read cgroupfs only.
    pub no_ebpf: bool,
    /// Frequency of the per-CPU flush tick, Hz.
    pub tick_hz: u64,
    /// When the kernel's BPF run-time statistics are on.
    pub run_stats: RunStats,
    /// How often the hierarchy is walked even when no unknown id shows up, ns.
    pub rescan_interval_ns: u64,
    /// How often memory figures are read from cgroupfs, ns (they change slowly and cost a few
    /// file reads per cgroup).
    pub memory_interval_ns: u64,
}

impl Default for CollectOptions {
    fn default() -> Self {
        Self {
            no_ebpf: false,
            tick_hz: 10,
            run_stats: RunStats::Sampled,
            rescan_interval_ns: 10_000_000_000,
            memory_interval_ns: 10_000_000_000,
        }
    }
}

#[derive(Debug, Error)]
pub enum CollectError {
    #[error(transparent)]
    Hierarchy(#[from] HierarchyError),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    #[error("counting online CPUs failed: {0}; is /sys/devices/system/cpu/online readable?")]
    Cpus(String),
}

enum Source {
    Ebpf(Box<KernelProbe>),
    Cgroupfs,
}

/// Where a cgroup's throttling counters are, if it has a CPU quota of its own.
#[derive(Clone, Debug)]
enum ThrottleSource {
    V2(PathBuf),
    V1(PathBuf),
}

/// What is known about one cgroup between walks.
#[derive(Clone, Debug)]
struct Known {
    identity: Arc<Identity>,
    throttle: Option<ThrottleSource>,
    /// Its CPU quota as a limit, millicores (read when the cgroup is first seen).
    cpu_limit_millicores: Option<u64>,
    memory: Option<MemorySource>,
    /// Its cgroup v2 directory (PSI files live there in every layout).
    v2_dir: PathBuf,
    /// Its on-CPU counter at the last removal check (eBPF mode).
    checked_on_cpu_ns: u64,
}

/// The memory figures of the last cgroupfs read, by cgroup id.
#[derive(Debug, Default)]
struct MemoryReads {
    at_ns: Option<u64>,
    figures: HashMap<u64, CgroupMemory>,
}

pub struct Collector {
    source: Source,
    /// Why the kernel programs are not used, when they are not.
    fallback_reason: Option<String>,
    mounts: Mounts,
    v2_root: PathBuf,
    tree: CgroupTree,
    known: HashMap<u64, Known>,
    last_scan_ns: Option<u64>,
    /// eBPF mode: when quiet cgroups were last checked for removal.
    last_removal_check_ns: Option<u64>,
    rescan_interval_ns: u64,
    /// Counts of removed cgroups, so node totals never go backwards.
    retired: NodeCpu,
    retired_memory: MemoryCounters,
    retired_network: NetCounters,
    memory_reads: MemoryReads,
    memory_interval_ns: u64,
    /// /proc/meminfo could not be read (logged once).
    meminfo_failed: bool,
    cpus: u32,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("mode", &self.mode())
            .field("cgroups", &self.known.len())
            .finish()
    }
}

impl Collector {
    /// Finds the cgroup v2 hierarchy and attaches the kernel programs, falling back to cgroupfs
    /// (and saying why) when they cannot run.
    pub fn new(options: &CollectOptions) -> Result<Self, CollectError> {
        let mounts = hierarchy::read_mounts()?;
        let v2_root = mounts.v2_root()?.to_path_buf();
        let (source, fallback_reason) = if options.no_ebpf {
            (Source::Cgroupfs, Some("disabled by --no-ebpf".to_string()))
        } else {
            match KernelProbe::attach(options.tick_hz, options.run_stats, &v2_root) {
                Ok(probe) => (Source::Ebpf(Box::new(probe)), None),
                Err(err) => (Source::Cgroupfs, Some(err.to_string())),
            }
        };
        let cpus = online_cpus()?;
        let mode = match source {
            Source::Ebpf(_) => Mode::Ebpf,
            Source::Cgroupfs => Mode::Cgroupfs,
        };
        match &fallback_reason {
            None => {
                info!(signal = "cpu", mode = mode.as_str(), cgroup2 = %v2_root.display(), "collector ready")
            }
            Some(reason) => warn!(
                signal = "cpu",
                mode = mode.as_str(),
                reason = %reason,
                "eBPF unavailable, reading CPU from cgroupfs (no run-queue latency; PSI mixes throttling \
                 with contention)"
            ),
        }
        Ok(Self {
            source,
            fallback_reason,
            mounts,
            v2_root: v2_root.clone(),
            tree: CgroupTree::scan(&v2_root)?,
            known: HashMap::new(),
            last_scan_ns: None,
            last_removal_check_ns: None,
            rescan_interval_ns: options.rescan_interval_ns,
            retired: NodeCpu::default(),
            retired_memory: MemoryCounters::default(),
            retired_network: NetCounters::default(),
            memory_reads: MemoryReads::default(),
            memory_interval_ns: options.memory_interval_ns,
            meminfo_failed: false,
            cpus,
        })
    }

    /// How memory pressure is measured: `Ebpf` when reclaim stalls are traced.
    pub fn memory_mode(&self) -> Mode {
        match &self.source {
            Source::Ebpf(probe) if probe.traces_memory() => Mode::Ebpf,
            _ => Mode::Cgroupfs,
        }
    }

    /// How network pressure is measured: only the kernel programs can count it per cgroup.
    pub fn network_mode(&self) -> Mode {
        match &self.source {
            Source::Ebpf(probe) if probe.counts_network() => Mode::Ebpf,
            _ => Mode::Unavailable,
        }
    }

    pub fn mode(&self) -> Mode {
        match self.source {
            Source::Ebpf(_) => Mode::Ebpf,
            Source::Cgroupfs => Mode::Cgroupfs,
        }
    }

    /// Whether the run-queue wait excludes throttled time; `None` when it is not measured.
    pub fn wait_excludes_throttling(&self) -> Option<bool> {
        match &self.source {
            Source::Ebpf(probe) => Some(probe.throttle_aware()),
            Source::Cgroupfs => None,
        }
    }

    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    pub fn v2_root(&self) -> &Path {
        &self.v2_root
    }

    /// Run-time statistics of the kernel programs (eBPF mode with statistics enabled only).
    pub fn program_stats(&self) -> Option<RunStatsReport> {
        match &self.source {
            Source::Ebpf(probe) => probe.program_stats(),
            Source::Cgroupfs => None,
        }
    }

    /// One collection at `now_ns` (CLOCK_MONOTONIC).
    pub fn collect(&mut self, now_ns: u64) -> Result<Snapshot, CollectError> {
        // cgroupfs mode reads every cgroup anyway and walks periodically; eBPF mode walks when an
        // unknown id shows up and otherwise checks only quiet cgroups (see `drop_removed`).
        let periodic = matches!(self.source, Source::Cgroupfs) || self.last_scan_ns.is_none();
        if periodic
            && self
                .last_scan_ns
                .is_none_or(|last| now_ns.saturating_sub(last) >= self.rescan_interval_ns)
        {
            self.rescan(now_ns)?;
        }
        match &mut self.source {
            Source::Ebpf(probe) => {
                probe.schedule_run_stats(now_ns);
                self.collect_ebpf(now_ns)
            }
            Source::Cgroupfs => Ok(self.collect_cgroupfs(now_ns)),
        }
    }

    fn rescan(&mut self, now_ns: u64) -> Result<(), CollectError> {
        self.tree = CgroupTree::scan(&self.v2_root)?;
        self.last_scan_ns = Some(now_ns);
        self.last_removal_check_ns = Some(now_ns);
        let tree = &self.tree;
        self.known.retain(|id, _| tree.path_of(*id).is_some());
        Ok(())
    }

    /// eBPF mode, every rescan interval: finds removed cgroups without walking the hierarchy.
    /// A cgroup whose tasks ran since the last check is alive; only quiet ones (and ids seen in
    /// the memory or network maps alone) are looked up, one `stat` each: gone, or a directory
    /// with another inode, means removed. A full walk of 500 cgroups costs more than the rest of
    /// a collection.
    fn drop_removed(&mut self, cpu: &[(u64, CpuCounters)], others: &[u64], now_ns: u64) {
        if self
            .last_removal_check_ns
            .is_some_and(|last| now_ns.saturating_sub(last) < self.rescan_interval_ns)
        {
            return;
        }
        self.last_removal_check_ns = Some(now_ns);
        let mut quiet: Vec<u64> = Vec::new();
        for (id, counters) in cpu {
            match self.known.get_mut(id) {
                Some(known) if known.checked_on_cpu_ns != counters.on_cpu_ns => {
                    known.checked_on_cpu_ns = counters.on_cpu_ns;
                }
                _ => quiet.push(*id),
            }
        }
        quiet.extend_from_slice(others);
        for id in quiet {
            let Some(path) = self.tree.path_of(id) else {
                continue;
            };
            let dir = join_cgroup(&self.v2_root, path);
            if std::fs::metadata(&dir).map(|meta| meta.ino()).ok() != Some(id) {
                self.tree.remove(id);
                self.known.remove(&id);
            }
        }
    }

    /// Identity and throttling source of `id`, learning them from the last walk.
    fn learn(&mut self, id: u64) -> Option<&Known> {
        if !self.known.contains_key(&id) {
            let path = self.tree.path_of(id)?.to_string();
            let (throttle, cpu_limit_millicores) =
                throttle_source(&self.mounts, &self.v2_root, &path).unzip();
            let v2_dir = join_cgroup(&self.v2_root, &path);
            let memory = memory::source(&v2_dir, hierarchy::v1_dir(&self.mounts, "memory", &path));
            self.known.insert(
                id,
                Known {
                    identity: Arc::new(identify(&path)),
                    throttle,
                    cpu_limit_millicores,
                    memory,
                    v2_dir,
                    checked_on_cpu_ns: 0,
                },
            );
        }
        self.known.get(&id)
    }

    fn collect_ebpf(&mut self, now_ns: u64) -> Result<Snapshot, CollectError> {
        let (mut counters, reclaim, network, retransmits_counted, dropped_events) =
            match &mut self.source {
                Source::Ebpf(probe) => {
                    probe.flush_kernel_log();
                    (
                        probe.read_cgroups()?,
                        probe.read_memory()?,
                        probe.read_network()?,
                        probe.counts_retransmits(),
                        probe.dropped_events()?,
                    )
                }
                Source::Cgroupfs => return Ok(self.collect_cgroupfs(now_ns)),
            };
        let others: Vec<u64> = reclaim
            .iter()
            .flatten()
            .map(|(id, _)| *id)
            .chain(network.iter().flatten().map(|(id, _)| *id))
            .filter(|id| *id != 0)
            .collect();
        self.drop_removed(&counters, &others, now_ns);
        // Id 0 is "no cgroup" (a packet without a full socket): never in the tree.
        let unknown = |id: &u64| *id != 0 && self.tree.path_of(*id).is_none();
        if counters.iter().any(|(id, _)| unknown(id))
            || reclaim.iter().flatten().any(|(id, _)| unknown(id))
            || network.iter().flatten().any(|(id, _)| unknown(id))
        {
            self.rescan(now_ns)?;
        }
        // Still unknown after a fresh walk: the cgroup is gone.
        let (gone, live): (Vec<_>, Vec<_>) = counters
            .drain(..)
            .partition(|(id, _)| self.tree.path_of(*id).is_none());
        let mut gone_ids: Vec<u64> = gone.iter().map(|(id, _)| *id).collect();
        for (_, c) in &gone {
            retire(&mut self.retired, c);
        }
        let reclaim = reclaim.map(|entries| {
            split_live(entries, &self.tree, &mut self.retired_memory, &mut gone_ids)
        });
        let network = network.map(|entries| {
            split_live(
                entries,
                &self.tree,
                &mut self.retired_network,
                &mut gone_ids,
            )
        });
        if !gone_ids.is_empty() {
            if let Source::Ebpf(probe) = &mut self.source {
                probe.remove_cgroups(&gone_ids)?;
            }
        }
        let mut node = NodeCpu {
            on_cpu_ns: self.retired.on_cpu_ns,
            runqueue: Some(self.retired.runqueue.unwrap_or_default()),
        };
        let mut cgroups = BTreeMap::new();
        for (id, c) in live {
            node.on_cpu_ns = node.on_cpu_ns.wrapping_add(c.on_cpu_ns);
            if let Some(total) = node.runqueue.as_mut() {
                total.accumulate(&c);
            }
            let Some(known) = self.learn(id) else {
                continue;
            };
            let mut entry = entry(known, c.on_cpu_ns, Some(c), None);
            entry.network = network
                .as_ref()
                .map(|live| live.get(&id).copied().unwrap_or_default());
            cgroups.insert(id, entry);
        }
        let node_reclaim = reclaim
            .as_ref()
            .map(|live| node_total(&self.retired_memory, live));
        let node_network = network
            .as_ref()
            .map(|live| node_total(&self.retired_network, live));
        self.add_memory(&mut cgroups, reclaim.as_ref(), now_ns);
        Ok(Snapshot {
            at_ns: now_ns,
            mode: Mode::Ebpf,
            cpus: self.cpus,
            cgroups,
            node,
            memory_mode: if reclaim.is_some() {
                Mode::Ebpf
            } else {
                Mode::Cgroupfs
            },
            node_memory: self.node_memory(node_reclaim),
            network_mode: if node_network.is_some() {
                Mode::Ebpf
            } else {
                Mode::Unavailable
            },
            retransmits_counted: node_network.is_some() && retransmits_counted,
            node_network,
            dropped_events: Some(dropped_events),
        })
    }

    /// cgroupfs mode: `cpu.stat` usage is hierarchical, so a cgroup's own time is its usage minus
    /// its children's; that keeps the figures comparable with the kernel programs', which charge
    /// the cgroup a task runs in.
    fn collect_cgroupfs(&mut self, now_ns: u64) -> Snapshot {
        let mut usage: HashMap<u64, (u64, Option<u64>)> = HashMap::with_capacity(self.tree.len());
        for id in self.tree.ids().collect::<Vec<_>>() {
            let Some(path) = self.tree.path_of(id) else {
                continue;
            };
            let dir = join_cgroup(&self.v2_root, path);
            let Ok(stat) = cgroupfs::read_cpu_stat_v2(&dir) else {
                continue;
            };
            let Some(total_ns) = stat.usage_ns else {
                continue;
            };
            let psi = cgroupfs::read_psi(&dir.join("cpu.pressure"))
                .ok()
                .flatten()
                .map(|p| p.some.total_us);
            usage.insert(id, (total_ns, psi));
        }
        let mut children_ns: HashMap<u64, u64> = HashMap::new();
        for id in usage.keys() {
            let Some(parent) = self
                .tree
                .path_of(*id)
                .and_then(parent_path)
                .and_then(|p| self.tree.id_of(p))
            else {
                continue;
            };
            let child_total = usage.get(id).map_or(0, |(t, _)| *t);
            *children_ns.entry(parent).or_default() += child_total;
        }
        let mut node = NodeCpu::default();
        let mut cgroups = BTreeMap::new();
        let ids: Vec<u64> = usage.keys().copied().collect();
        for id in ids {
            let Some((total_ns, psi)) = usage.get(&id).copied() else {
                continue;
            };
            let own_ns = total_ns.saturating_sub(children_ns.get(&id).copied().unwrap_or(0));
            node.on_cpu_ns = node.on_cpu_ns.wrapping_add(own_ns);
            if own_ns == 0 {
                continue;
            }
            let Some(known) = self.learn(id) else {
                continue;
            };
            cgroups.insert(id, entry(known, own_ns, None, psi));
        }
        self.add_memory(&mut cgroups, None, now_ns);
        Snapshot {
            at_ns: now_ns,
            mode: Mode::Cgroupfs,
            cpus: self.cpus,
            cgroups,
            node,
            memory_mode: Mode::Cgroupfs,
            node_memory: self.node_memory(None),
            network_mode: Mode::Unavailable,
            retransmits_counted: false,
            node_network: None,
            dropped_events: None,
        }
    }
}

impl Collector {
    /// Node memory: /proc/meminfo now, plus the reclaim totals.
    fn node_memory(&mut self, reclaim: Option<MemoryCounters>) -> NodeMemory {
        use procfs::Current;
        let (total_bytes, available_bytes) = match procfs::Meminfo::current() {
            Ok(meminfo) => (Some(meminfo.mem_total), meminfo.mem_available),
            Err(error) => {
                if !self.meminfo_failed {
                    warn!(error = %error, "reading /proc/meminfo failed: node memory figures unavailable");
                    self.meminfo_failed = true;
                }
                (None, None)
            }
        };
        NodeMemory {
            total_bytes,
            available_bytes,
            reclaim,
        }
    }

    /// Fills in the entries' memory figures: reclaim stalls from the kernel programs (`Some`
    /// when traced: a cgroup without an entry stalled 0 ns), the rest from the last cgroupfs
    /// read, which is renewed every `memory_interval_ns` (and made at once for a new cgroup).
    fn add_memory(
        &mut self,
        cgroups: &mut BTreeMap<u64, CgroupEntry>,
        reclaim: Option<&HashMap<u64, MemoryCounters>>,
        now_ns: u64,
    ) {
        let due = self
            .memory_reads
            .at_ns
            .is_none_or(|at| now_ns.saturating_sub(at) >= self.memory_interval_ns);
        if due {
            self.memory_reads = MemoryReads {
                at_ns: Some(now_ns),
                figures: HashMap::with_capacity(cgroups.len()),
            };
        }
        // Every cgroup when due; in between, only those seen for the first time.
        for id in cgroups.keys() {
            if !self.memory_reads.figures.contains_key(id) {
                if let Some(known) = self.known.get(id) {
                    self.memory_reads.figures.insert(*id, read_memory(known));
                }
            }
        }
        for (id, entry) in cgroups.iter_mut() {
            let mut memory = self
                .memory_reads
                .figures
                .get(id)
                .cloned()
                .unwrap_or_default();
            memory.reclaim = reclaim.map(|live| live.get(id).copied().unwrap_or_default());
            entry.memory = memory;
        }
    }
}

/// Splits a map's entries into live cgroups and removed ones; the removed ones' counts go to
/// `retired` (so node totals never go backwards) and their ids to `gone` (to delete them).
fn split_live<V: Accumulate>(
    entries: Vec<(u64, V)>,
    tree: &CgroupTree,
    retired: &mut V,
    gone: &mut Vec<u64>,
) -> HashMap<u64, V> {
    let mut live = HashMap::with_capacity(entries.len());
    for (id, counters) in entries {
        if tree.path_of(id).is_some() {
            live.insert(id, counters);
        } else {
            retired.add(&counters);
            gone.push(id);
        }
    }
    live
}

/// Node total of a map: the retired counts plus every live cgroup's.
fn node_total<V: Accumulate + Copy>(retired: &V, live: &HashMap<u64, V>) -> V {
    let mut total = *retired;
    for counters in live.values() {
        total.add(counters);
    }
    total
}

/// A cgroup's memory figures from cgroupfs (absent where unreadable: never zeros).
fn read_memory(known: &Known) -> CgroupMemory {
    CgroupMemory {
        reclaim: None,
        stat: known
            .memory
            .as_ref()
            .and_then(|source| memory::read_stat(source).ok()),
        psi_some_us: cgroupfs::read_psi(&known.v2_dir.join("memory.pressure"))
            .ok()
            .flatten()
            .map(|p| p.some.total_us),
    }
}

/// A snapshot entry; throttling is read here because only cgroups with a quota have a source.
fn entry(
    known: &Known,
    on_cpu_ns: u64,
    runqueue: Option<CpuCounters>,
    psi_some_us: Option<u64>,
) -> CgroupEntry {
    let throttling = known.throttle.as_ref().and_then(read_throttling);
    CgroupEntry {
        identity: Arc::clone(&known.identity),
        cpu: CgroupCpu {
            on_cpu_ns,
            runqueue,
            psi_some_us,
            throttling,
            limit_millicores: known.cpu_limit_millicores,
        },
        memory: CgroupMemory::default(),
        network: None,
    }
}

fn retire(retired: &mut NodeCpu, counters: &CpuCounters) {
    retired.on_cpu_ns = retired.on_cpu_ns.wrapping_add(counters.on_cpu_ns);
    retired
        .runqueue
        .get_or_insert_with(CpuCounters::default)
        .accumulate(counters);
}

/// Where the throttling counters of a cgroup with a CPU quota of its own are, and the quota as a
/// limit in millicores; `None` without a quota.
fn throttle_source(mounts: &Mounts, v2_root: &Path, path: &str) -> Option<(ThrottleSource, u64)> {
    let v2 = join_cgroup(v2_root, path);
    if let Ok(max) = std::fs::read_to_string(v2.join("cpu.max")) {
        let (quota, period) = cgroupfs::cpu_quota_v2(&max)?;
        return Some((
            ThrottleSource::V2(v2),
            cgroupfs::quota_millicores(quota, period)?,
        ));
    }
    let v1 = hierarchy::v1_dir(mounts, "cpu", path)?;
    let read = |file: &str| std::fs::read_to_string(v1.join(file)).ok();
    let quota = cgroupfs::cpu_quota_v1(&read("cpu.cfs_quota_us")?)?;
    let period = read("cpu.cfs_period_us")?.trim().parse().ok()?;
    Some((
        ThrottleSource::V1(v1),
        cgroupfs::quota_millicores(quota, period)?,
    ))
}

fn read_throttling(source: &ThrottleSource) -> Option<Throttling> {
    match source {
        ThrottleSource::V2(dir) => cgroupfs::read_cpu_stat_v2(dir).ok()?.throttling,
        ThrottleSource::V1(dir) => cgroupfs::read_throttling_v1(dir).ok(),
    }
}

/// `root` + a cgroup path relative to it ("/" is the root itself).
pub fn join_cgroup(root: &Path, path: &str) -> PathBuf {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        root.to_path_buf()
    } else {
        root.join(relative)
    }
}

fn parent_path(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

fn online_cpus() -> Result<u32, CollectError> {
    let cpus = aya::util::online_cpus()
        .map_err(|(what, err)| CollectError::Cpus(format!("{what}: {err}")))?;
    u32::try_from(cpus.len()).map_err(|err| CollectError::Cpus(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_paths() {
        assert_eq!(parent_path("/"), None);
        assert_eq!(parent_path("/a"), Some("/"));
        assert_eq!(parent_path("/a/b.slice"), Some("/a"));
    }

    #[test]
    fn join_keeps_root_for_slash() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(join_cgroup(root, "/"), root);
        assert_eq!(join_cgroup(root, "/a/b"), Path::new("/sys/fs/cgroup/a/b"));
    }
}
