//! Test fixtures shared by the load model's unit tests: snapshots built from plain figures.

use std::collections::BTreeMap;

use ballast_common::CpuCounters;

use crate::collect::{
    cgroup::identity::identify,
    sample::{CgroupCpu, CgroupEntry, CgroupMemory, Mode, NodeCpu, NodeMemory, Snapshot},
};

pub fn snapshot(at_ns: u64, cgroups: Vec<(u64, CgroupCpu)>) -> Snapshot {
    let mut node = NodeCpu {
        on_cpu_ns: 0,
        runqueue: Some(CpuCounters::default()),
    };
    let mut map = BTreeMap::new();
    for (id, cpu) in cgroups {
        node.on_cpu_ns += cpu.on_cpu_ns;
        if let (Some(total), Some(c)) = (node.runqueue.as_mut(), cpu.runqueue.as_ref()) {
            total.accumulate(c);
        }
        map.insert(
            id,
            CgroupEntry {
                identity: identify("/test.slice/x.service").into(),
                cpu,
                memory: CgroupMemory::default(),
                network: None,
            },
        );
    }
    Snapshot {
        at_ns,
        mode: Mode::Ebpf,
        cpus: 2,
        cgroups: map,
        node,
        memory_mode: Mode::Cgroupfs,
        node_memory: NodeMemory::default(),
        network_mode: Mode::Unavailable,
        retransmits_counted: false,
        node_network: None,
        dropped_events: Some(0),
    }
}

pub fn ebpf_cpu(on_cpu_ns: u64, wait_ns: u64, waits_in_bucket_5: u64) -> CgroupCpu {
    let mut c = CpuCounters {
        on_cpu_ns,
        runqueue_wait_ns: wait_ns,
        runqueue_waits: waits_in_bucket_5,
        ..Default::default()
    };
    c.wait_hist[5] = waits_in_bucket_5;
    CgroupCpu {
        on_cpu_ns,
        runqueue: Some(c),
        psi_some_us: None,
        throttling: None,
        limit_millicores: None,
    }
}
