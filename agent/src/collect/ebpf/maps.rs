//! The per-cgroup maps the kernel programs fill: per-CPU hashes keyed by cgroup v2 id, each
//! optionally with a per-CPU count of events dropped because the hash was full.

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use ballast_common::{CpuCounters, MemoryCounters, NetCounters};

use super::EbpfError;

/// Counters that fold per-CPU copies into one value.
pub trait Accumulate: aya::Pod + Default {
    fn add(&mut self, other: &Self);
}

impl Accumulate for CpuCounters {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }
}

impl Accumulate for MemoryCounters {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }
}

impl Accumulate for NetCounters {
    fn add(&mut self, other: &Self) {
        self.accumulate(other);
    }
}

/// One per-cgroup map.
pub struct CgroupMap<V: Accumulate> {
    name: &'static str,
    map: PerCpuHashMap<MapData, u64, V>,
    dropped: Option<PerCpuArray<MapData, u64>>,
}

impl<V: Accumulate> CgroupMap<V> {
    pub fn new(
        name: &'static str,
        map: PerCpuHashMap<MapData, u64, V>,
        dropped: Option<PerCpuArray<MapData, u64>>,
    ) -> Self {
        Self { name, map, dropped }
    }

    fn error(&self, source: aya::maps::MapError) -> EbpfError {
        EbpfError::MapRead {
            map: self.name,
            source,
        }
    }

    /// Every cgroup's counters, summed over CPUs.
    pub fn read(&self) -> Result<Vec<(u64, V)>, EbpfError> {
        let mut out = Vec::with_capacity(256);
        for entry in self.map.iter() {
            let (cgroup, per_cpu) = entry.map_err(|source| self.error(source))?;
            let mut total = V::default();
            for value in per_cpu.iter() {
                total.add(value);
            }
            out.push((cgroup, total));
        }
        Ok(out)
    }

    /// Forgets a removed cgroup; a key that is already gone is not an error.
    pub fn remove(&mut self, id: &u64) -> Result<(), EbpfError> {
        match self.map.remove(id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(self.error(source)),
        }
    }

    /// Events dropped because the map was full, all CPUs.
    pub fn dropped(&self) -> Result<u64, EbpfError> {
        let Some(dropped) = &self.dropped else {
            return Ok(0);
        };
        let per_cpu = dropped.get(&0, 0).map_err(|source| self.error(source))?;
        Ok(per_cpu.iter().fold(0u64, |sum, v| sum.wrapping_add(*v)))
    }
}
