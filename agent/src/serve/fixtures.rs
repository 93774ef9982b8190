//! Test fixtures of /metrics: a node's view with every kind of cgroup Ballast names and every
//! optional figure present for some containers and absent for others, plus the pod names of a
//! cluster agent.

use std::collections::BTreeMap;

use ballast_common::{CpuCounters, MemoryCounters, NetCounters};
use k8s_openapi::api::core::v1::Pod;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{
    cluster::names::PodDirectory,
    collect::{
        cgroup::identity::identify,
        cgroupfs::{memory::MemoryStat, Throttling},
        ebpf::{ProgramStats, RunStatsReport},
        sample::{CgroupCpu, CgroupEntry, CgroupMemory, Mode, NodeCpu, NodeMemory, Snapshot},
    },
    state::{AgentState, View},
};

/// Kinds of cgroup the fixture cycles through; container `i` is of kind `i % KINDS`.
pub const KINDS: u64 = 10;

fn pod_uid(i: u64) -> String {
    format!("1b2c3d4e-5f60-4718-8293-{i:012x}")
}

/// 64 hex digits that look random, as runtimes' ids do.
fn container_id(i: u64) -> String {
    (0..4)
        .map(|k| {
            format!(
                "{:016x}",
                (4 * i + k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect()
}

/// The cgroup path of container `i`, and whether the API knows its pod (and then whether it
/// lists the container).
fn path(i: u64) -> (String, Option<bool>) {
    let uid = pod_uid(i);
    let uid_ = uid.replace('-', "_");
    let id = container_id(i);
    let systemd = |qos: &str| {
        format!(
            "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{uid_}.slice/cri-containerd-{id}.scope"
        )
    };
    match i % KINDS {
        0 => (systemd("burstable"), Some(true)),
        1 => (systemd("besteffort"), Some(true)),
        // The sandbox: the pod is known, its container is not listed.
        2 => (systemd("burstable"), Some(false)),
        // A pod the watch has not seen yet.
        3 => (systemd("burstable"), None),
        4 => (format!("/kubepods/besteffort/pod{uid}/{id}"), Some(true)),
        5 => (format!("/kubepods/pod{uid}/crio-{id}"), None),
        6 => (
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"),
            Some(false),
        ),
        7 => (format!("/docker/{id}"), None),
        8 => (
            format!(
                "/system.slice/system-systemd\\x2dfsck.slice/systemd-fsck@dev-disk-{i}.service"
            ),
            None,
        ),
        // Directory names may hold anything: quotes, newlines, backslashes, non-ASCII.
        _ => (
            format!("/user.slice/user-1000.slice/wëird \"scope\"\n\\{i}.scope"),
            None,
        ),
    }
}

fn pod(i: u64, listed: bool) -> Pod {
    let statuses = if listed {
        serde_json::json!([{"name": format!("app-{i}"), "containerID": format!("containerd://{}", container_id(i)),
            "image": "app", "imageID": "", "ready": true, "restartCount": 0}])
    } else {
        serde_json::json!([])
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("web-{i}"), "namespace": format!("shop-{}", i % 3), "uid": pod_uid(i)},
        "status": {"containerStatuses": statuses}
    }))
    .expect("a valid Pod")
}

/// Figures that are not round in seconds, tiny (exponent notation), zero, or large.
fn entry(i: u64, scale: u64) -> CgroupEntry {
    let mut counters = CpuCounters {
        on_cpu_ns: i * 1_234_567_891 * scale + 7,
        runqueue_wait_ns: i * 10_001 * scale,
        runqueue_waits: i * scale,
        voluntary_switches: i * 3 * scale,
        involuntary_switches: i,
        throttled_switches: i % 4,
        ..Default::default()
    };
    for (k, bucket) in counters.wait_hist.iter_mut().enumerate() {
        *bucket = (i + k as u64) % 7 * scale * (k as u64 % 3);
    }
    let cpu = CgroupCpu {
        on_cpu_ns: counters.on_cpu_ns,
        runqueue: (i % 3 != 2).then_some(counters),
        psi_some_us: (i % 3 == 2).then_some(i * 1_001 * scale),
        throttling: (i % 4 == 1).then_some(Throttling {
            periods: 100 * i * scale,
            throttled_periods: i * scale,
            throttled_ns: i * 333_333 * scale,
        }),
        limit_millicores: i.is_multiple_of(2).then_some(250 * (i % 5 + 1)),
    };
    let memory = CgroupMemory {
        reclaim: (!i.is_multiple_of(5)).then_some(MemoryCounters {
            reclaim_stall_ns: i % 3 * scale,
            reclaim_stalls: i,
            reclaimed_pages: 32 * i,
        }),
        stat: (i % 6 != 5).then_some(MemoryStat {
            usage_bytes: (i + 1) << 24,
            working_set_bytes: ((i + 1) << 23) + i * scale,
            rss_bytes: (i + 1) << 22,
            cache_bytes: (i + 1) << 21,
            major_faults: i * scale,
            oom_kills: (!i.is_multiple_of(3)).then_some(i % 2),
            limit_hits: Some(0),
            high_events: None,
            limit_bytes: (i % 2 == 1).then_some((i + 1) << 25),
        }),
        psi_some_us: (i % 4 != 3).then_some(i * 7 * scale),
    };
    let network = (i % 7 != 3).then_some(NetCounters {
        rx_bytes: i * scale * 1_500_000_000_007,
        rx_packets: i * scale,
        tx_bytes: if i == 1 {
            u64::MAX / 3
        } else {
            i * scale * 1000
        },
        tx_packets: i * scale,
        tcp_retransmits: i % 5,
    });
    CgroupEntry {
        identity: identify(&path(i).0).into(),
        cpu,
        memory,
        network,
    }
}

fn snapshot(containers: u64, at_ns: u64, scale: u64) -> Snapshot {
    let cgroups: BTreeMap<u64, CgroupEntry> = (0..containers)
        .map(|i| (10_000 + i, entry(i, scale)))
        .collect();
    let mut node_rq = CpuCounters {
        runqueue_wait_ns: 987_654_321 * scale,
        voluntary_switches: 1_000 * scale,
        involuntary_switches: 10 * scale,
        ..Default::default()
    };
    node_rq.wait_hist[3] = 5 * scale;
    node_rq.wait_hist[17] = scale;
    Snapshot {
        at_ns,
        mode: Mode::Ebpf,
        cpus: 16,
        cgroups,
        node: NodeCpu {
            on_cpu_ns: 1_000_000_000_123 * scale,
            runqueue: Some(node_rq),
        },
        memory_mode: Mode::Ebpf,
        node_memory: NodeMemory {
            total_bytes: Some(64 << 30),
            available_bytes: Some(40 << 30),
            reclaim: Some(MemoryCounters::default()),
        },
        network_mode: Mode::Ebpf,
        retransmits_counted: true,
        node_network: Some(NetCounters::default()),
        dropped_events: Some(3),
    }
}

/// The view of an eBPF agent with `containers` cgroups after two collections (so with load
/// scores), run statistics and a failed collection; the pod names of the Kubernetes ones.
pub fn view(containers: u64) -> (View, PodDirectory) {
    let state = AgentState::new("fixture".into(), Mode::Ebpf, None, 1.0);
    let stats = RunStatsReport {
        enabled: true,
        programs: vec![
            ProgramStats {
                program: "sched_switch",
                run_count: 123_456_789,
                run_time_ns: 9_876_543_210,
            },
            ProgramStats {
                program: "sched_wakeup",
                run_count: 0,
                run_time_ns: 0,
            },
        ],
    };
    state.publish(snapshot(containers, 1_000_000_000, 1), None);
    state.publish(snapshot(containers, 2_000_000_000, 2), Some(stats));
    state.record_failure();
    let pods: Vec<Pod> = (0..containers)
        .filter_map(|i| path(i).1.map(|listed| pod(i, listed)))
        .collect();
    (state.view(), PodDirectory::from_pods(&pods))
}

/// A self-metrics handle with one gauge recorded.
pub fn self_metrics() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        metrics::gauge!("ballast_fixture_up", "mode" => "ebpf").set(1.0);
    });
    recorder.handle()
}
