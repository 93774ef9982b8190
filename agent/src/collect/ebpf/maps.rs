//! The per-cgroup maps the kernel programs fill: per-CPU hashes keyed by cgroup v2 id, each
//! optionally with a per-CPU count of events dropped because the hash was full.
//!
//! Reading uses `BPF_MAP_LOOKUP_BATCH`, by hand because aya 0.14 has no batch operations:
//! iterating key by key costs two system calls per cgroup and was the agent's largest cost at
//! 500 cgroups; a batch reads 256 cgroups in one. Kernels without it (before 5.6) fall back to
//! iteration.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::{IterableMap, MapData, PerCpuArray, PerCpuHashMap};
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
        match lookup_batch::<V>(self.map.map()) {
            Ok(entries) => Ok(entries),
            Err(error) if batch_unsupported(&error) => self.read_by_key(),
            Err(error) => Err(self.error(aya::maps::MapError::SyscallError(
                aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: error,
                },
            ))),
        }
    }

    fn read_by_key(&self) -> Result<Vec<(u64, V)>, EbpfError> {
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

    /// Forgets a removed cgroup; a key that is not there (never was, or already gone) is not an
    /// error. aya reports that as a failed `bpf_map_delete_elem` with ENOENT.
    pub fn remove(&mut self, id: &u64) -> Result<(), EbpfError> {
        match self.map.remove(id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(error))
                if error.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
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

/// `BPF_MAP_LOOKUP_BATCH` from `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries per batch call.
const BATCH: usize = 256;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn batch_unsupported(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOTSUP)
    )
}

/// Every entry of a per-CPU hash keyed by u64, values summed over CPUs.
fn lookup_batch<V: Accumulate>(map: &MapData) -> io::Result<Vec<(u64, V)>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, error)| error)?;
    // Per-CPU values come 8-byte aligned, one after the other, for every possible CPU.
    let stride = std::mem::size_of::<V>().div_ceil(8) * 8;
    let mut keys = vec![0u64; BATCH];
    let mut values = vec![0u8; BATCH * cpus * stride];
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut out = Vec::with_capacity(BATCH);
    let fd = u32::try_from(map.fd().as_fd().as_raw_fd())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token_in as u64 },
            out_batch: &raw mut token_out as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr.batch` whose buffers hold `count` keys and
        // `count * cpus * stride` value bytes, all alive for the call; the kernel writes at most
        // that much and updates `count` and `out_batch`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let error = (rc < 0).then(io::Error::last_os_error);
        let got = (attr.count as usize).min(BATCH);
        for (i, key) in keys.iter().take(got).enumerate() {
            let mut total = V::default();
            for cpu in 0..cpus {
                let at = (i * cpus + cpu) * stride;
                let bytes = &values[at..at + std::mem::size_of::<V>()];
                // SAFETY: `bytes` holds size_of::<V>() initialised bytes and V is Pod (any bit
                // pattern is valid); read_unaligned needs no alignment.
                let value = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<V>()) };
                total.add(&value);
            }
            out.push((*key, total));
        }
        match error {
            // ENOENT: this was the last batch.
            Some(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            Some(error) => return Err(error),
            None => {}
        }
        token_in = token_out;
        first = false;
    }
}
