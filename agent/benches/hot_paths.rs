//! User-space hot paths at 500 containers: rendering /metrics and computing a window's load.
//! Run by `cargo xtask bench`; results in BENCHMARKS.md.

use std::collections::BTreeMap;

use ballast::{
    collect::{
        cgroup::identity::identify,
        cgroupfs::memory::MemoryStat,
        sample::{CgroupCpu, CgroupEntry, CgroupMemory, Mode, NodeCpu, NodeMemory, Snapshot},
    },
    load::{model::LoadModel, score::ScoreConfig, window_load},
    serve::metrics::render,
    state::{AgentState, View},
};
use ballast_common::{CpuCounters, MemoryCounters, NetCounters};
use criterion::{criterion_group, criterion_main, Criterion};
use metrics_exporter_prometheus::PrometheusBuilder;

const CONTAINERS: u64 = 500;

fn snapshot(at_ns: u64, scale: u64) -> Snapshot {
    let mut cgroups = BTreeMap::new();
    for i in 0..CONTAINERS {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_4718_8293_{i:012x}.slice/cri-containerd-{:064x}.scope",
            i
        );
        let mut counters = CpuCounters {
            on_cpu_ns: i * 1_000_000 * scale,
            runqueue_wait_ns: i * 10_000 * scale,
            runqueue_waits: i * scale,
            voluntary_switches: i * scale,
            involuntary_switches: i,
            throttled_switches: 0,
            ..Default::default()
        };
        counters.wait_hist[5] = i * scale;
        counters.wait_hist[9] = i;
        let cpu = CgroupCpu {
            on_cpu_ns: counters.on_cpu_ns,
            runqueue: Some(counters),
            psi_some_us: None,
            throttling: None,
            // Every other container has a CPU limit, as on a typical node.
            limit_millicores: (i % 2 == 0).then_some(500),
        };
        cgroups.insert(
            10_000 + i,
            CgroupEntry {
                identity: identify(&path).into(),
                cpu,
                memory: CgroupMemory {
                    reclaim: Some(MemoryCounters {
                        reclaim_stall_ns: i * scale,
                        reclaim_stalls: i,
                        reclaimed_pages: 32 * i,
                    }),
                    stat: Some(MemoryStat {
                        usage_bytes: (i + 1) << 24,
                        working_set_bytes: (i + 1) << 23,
                        rss_bytes: (i + 1) << 22,
                        cache_bytes: (i + 1) << 22,
                        major_faults: i * scale,
                        oom_kills: Some(0),
                        limit_hits: Some(0),
                        high_events: None,
                        limit_bytes: Some((i + 1) << 25),
                    }),
                    psi_some_us: Some(i * scale),
                },
                network: Some(NetCounters {
                    rx_bytes: i * scale * 1500,
                    rx_packets: i * scale,
                    tx_bytes: i * scale * 1000,
                    tx_packets: i * scale,
                    tcp_retransmits: i,
                }),
            },
        );
    }
    let node = NodeCpu {
        on_cpu_ns: 1_000_000_000 * scale,
        runqueue: Some(CpuCounters::default()),
    };
    Snapshot {
        at_ns,
        mode: Mode::Ebpf,
        cpus: 16,
        cgroups,
        node,
        memory_mode: Mode::Ebpf,
        node_memory: NodeMemory {
            total_bytes: Some(64 << 30),
            available_bytes: Some(40 << 30),
            reclaim: Some(MemoryCounters::default()),
        },
        network_mode: Mode::Ebpf,
        retransmits_counted: true,
        node_network: Some(NetCounters::default()),
        dropped_events: Some(0),
    }
}

fn benches(c: &mut Criterion) {
    let before = snapshot(1_000_000_000, 1);
    let after = snapshot(2_000_000_000, 2);
    c.bench_function("window_load_500_containers", |b| {
        b.iter(|| window_load(&before, &after))
    });
    let load = window_load(&before, &after).expect("a window");
    let mut model = LoadModel::new(ScoreConfig::default());
    let mut now = 2_000_000_000u64;
    c.bench_function("load_model_update_500_containers", |b| {
        b.iter(|| {
            now += 1_000_000_000;
            model.update(&load, now)
        })
    });
    let scores = model.update(&load, now + 1_000_000_000);
    c.bench_function("load_scores_with_reasons_500_containers", |b| {
        b.iter(|| {
            scores
                .containers
                .values()
                .map(|c| c.scored(&scores.config))
                .collect::<Vec<_>>()
        })
    });

    let state = AgentState::new("bench".into(), Mode::Ebpf, None, 1.0);
    state.publish(before.clone(), None);
    state.publish(after.clone(), None);
    let view: View = state.view();
    // Standalone: no pod names (a cluster agent's are looked up per container, not rendered).
    let names = state.names();
    let handle = PrometheusBuilder::new().build_recorder().handle();
    c.bench_function("render_metrics_500_containers", |b| {
        b.iter(|| render(&view, &names, &handle))
    });
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
