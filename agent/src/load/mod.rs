//! Modelling load: cumulative counters in, rates and pressure figures out. Pure: no I/O, no clock.

pub mod counter;
pub mod cpu;
#[cfg(test)]
pub mod fixtures;
pub mod histogram;
pub mod memory;
pub mod model;
pub mod network;
pub mod score;

use std::collections::BTreeMap;

use crate::collect::sample::{Mode, Snapshot};

/// Everything the load model derives from one window (two consecutive snapshots).
#[derive(Clone, Debug, PartialEq)]
pub struct WindowLoad {
    pub cpu: cpu::CpuLoad,
    pub memory_mode: Mode,
    /// Per cgroup, for the cgroups that have CPU rates.
    pub memory: BTreeMap<u64, memory::MemoryFigures>,
    pub node_memory: memory::NodeMemoryFigures,
    pub network_mode: Mode,
    pub network: BTreeMap<u64, network::NetworkFigures>,
    pub node_network: network::NetworkFigures,
}

/// The load of the window between `previous` and `current`; `None` when no time passed.
pub fn window_load(previous: &Snapshot, current: &Snapshot) -> Option<WindowLoad> {
    let cpu = cpu::cpu_load(previous, current)?;
    let window_ns = current.at_ns.saturating_sub(previous.at_ns);
    let memory = cpu
        .cgroups
        .keys()
        .filter_map(|id| {
            let before = &previous.cgroups.get(id)?.memory;
            let now = &current.cgroups.get(id)?.memory;
            Some((*id, memory::cgroup_memory(before, now, window_ns)))
        })
        .collect();
    let retransmits = current.retransmits_counted;
    let network = cpu
        .cgroups
        .keys()
        .filter_map(|id| {
            let before = previous.cgroups.get(id)?.network.as_ref();
            let now = current.cgroups.get(id)?.network.as_ref();
            Some((
                *id,
                network::network_figures(before, now, window_ns, retransmits),
            ))
        })
        .collect();
    Some(WindowLoad {
        cpu,
        memory_mode: current.memory_mode,
        memory,
        node_memory: memory::node_memory(&previous.node_memory, &current.node_memory, window_ns),
        network_mode: current.network_mode,
        network,
        node_network: network::network_figures(
            previous.node_network.as_ref(),
            current.node_network.as_ref(),
            window_ns,
            retransmits,
        ),
    })
}
