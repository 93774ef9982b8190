//! `/metrics`: per-container and node families rendered from the current view, followed by the
//! agent's self-metrics recorded through the `metrics` facade.
//!
//! Families of signals a mode cannot measure are left out entirely (absent, not zero), and
//! `ballast_collector_up{signal,mode}` says which mode is active.

use std::sync::atomic::{AtomicUsize, Ordering};

use ballast_common::{CpuCounters, NetCounters};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};

use super::exposition::{Exposition, LabelSet, MetricKind};
use crate::{
    cluster::names::{PodDirectory, PodNames},
    collect::{
        cgroup::identity::{Identity, QosClass, Workload},
        cgroupfs::memory::MemoryStat,
        cgroupfs::Throttling,
        sample::{CgroupEntry, Mode, Snapshot},
    },
    load::{
        histogram::{bucket_upper_bounds_seconds, coarse_upper_bounds_seconds, coarsen},
        score::LoadScore,
    },
    state::{AgentState, View},
};

/// Labels derived from a cgroup's identity, low-cardinality by construction: one series per
/// container, never per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityLabels<'a> {
    pub workload: &'static str,
    pub pod_uid: Option<&'a str>,
    pub container_id: Option<&'a str>,
    pub qos: Option<&'static str>,
}

pub fn identity_labels(identity: &Identity) -> IdentityLabels<'_> {
    let qos_name = |qos: &QosClass| match qos {
        QosClass::Guaranteed => "guaranteed",
        QosClass::Burstable => "burstable",
        QosClass::BestEffort => "besteffort",
    };
    match &identity.workload {
        Workload::KubernetesPod { pod_uid, qos } => IdentityLabels {
            workload: "pod",
            pod_uid: Some(pod_uid),
            container_id: None,
            qos: Some(qos_name(qos)),
        },
        Workload::KubernetesContainer {
            pod_uid,
            qos,
            container_id,
            ..
        } => IdentityLabels {
            workload: "container",
            pod_uid: Some(pod_uid),
            container_id: Some(container_id),
            qos: Some(qos_name(qos)),
        },
        Workload::DockerContainer { container_id } => IdentityLabels {
            workload: "docker",
            pod_uid: None,
            container_id: Some(container_id),
            qos: None,
        },
        Workload::SystemdService { .. } => IdentityLabels {
            workload: "service",
            pod_uid: None,
            container_id: None,
            qos: None,
        },
        _ => IdentityLabels {
            workload: "other",
            pod_uid: None,
            container_id: None,
            qos: None,
        },
    }
}

/// Bucket bounds, seconds, of every histogram the agent records through the `metrics` facade:
/// all of them latencies (a /metrics render, a collection, a Lease call, a leader round).
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The recorder of the self-metrics. Histograms get explicit buckets: without them the exporter
/// renders summaries, whose quantiles cannot be summed across agents and which have no
/// `_bucket` series for the dashboards' `histogram_quantile`.
pub fn recorder_builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new().set_buckets(&LATENCY_BUCKETS_SECONDS)
}

/// Registers descriptions of the self-metrics and the modes gauge (set once: the mode of a
/// running agent does not change).
pub fn describe_self_metrics(state: &AgentState) {
    metrics::describe_gauge!(
        "ballast_collector_up",
        "1 for the mode each signal is measured in (ebpf, cgroupfs, unavailable), 0 for the others."
    );
    metrics::describe_histogram!(
        "ballast_scrape_render_seconds",
        metrics::Unit::Seconds,
        "Time to render /metrics."
    );
    metrics::describe_histogram!(
        "ballast_collection_duration_seconds",
        metrics::Unit::Seconds,
        "Time one collection takes (map reads, cgroupfs reads)."
    );
    for (signal, active) in [
        ("cpu", state.cpu_mode),
        ("memory", state.memory_mode),
        ("network", state.network_mode),
    ] {
        for mode in Mode::ALL {
            let up = if mode == active { 1.0 } else { 0.0 };
            metrics::gauge!("ballast_collector_up", "signal" => signal, "mode" => mode.as_str())
                .set(up);
        }
    }
}

/// Size of the last body rendered: the next one is about as large, so its text is reserved
/// whole instead of grown by doubling (megabytes at hundreds of containers).
static LAST_RENDER_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The whole `/metrics` body; containers of pods in `names` are labelled with their names.
pub fn render(view: &View, names: &PodDirectory, self_metrics: &PrometheusHandle) -> String {
    let last = LAST_RENDER_BYTES.load(Ordering::Relaxed);
    let mut out = Exposition::with_capacity(last + last / 8);
    if let Some(snapshot) = &view.snapshot {
        // Each container's labels are checked and escaped once for all its series.
        let containers: Vec<Container> = snapshot
            .cgroups
            .values()
            .map(|entry| {
                let labels = container_labels(&entry.identity, names.lookup(&entry.identity));
                (LabelSet::new(&labels), entry)
            })
            .collect();
        render_cpu(&mut out, &containers);
        render_memory(&mut out, &containers);
        render_network(&mut out, &containers, snapshot.retransmits_counted);
        render_node(&mut out, snapshot);
        if let Some(scores) = &view.scores {
            render_node_load(&mut out, &scores.node.scored(&scores.config).smoothed);
        }
        if let Some(dropped) = snapshot.dropped_events {
            out.family(
                "ballast_ebpf_dropped_events_total",
                "Kernel events not counted because the cgroup map was full.",
                MetricKind::Counter,
            );
            out.sample(&[], dropped as f64);
        }
    }
    if let Some(report) = &view.program_stats {
        let stats = &report.programs;
        out.family(
            "ballast_ebpf_run_stats_enabled",
            "1 while BPF run-time statistics are being collected (counts below only advance then).",
            MetricKind::Gauge,
        );
        out.sample(&[], if report.enabled { 1.0 } else { 0.0 });
        out.family(
            "ballast_ebpf_program_runs_total",
            "Runs of each kernel program while run-time statistics were on.",
            MetricKind::Counter,
        );
        for s in stats {
            out.sample(&[("program", s.program)], s.run_count as f64);
        }
        out.family(
            "ballast_ebpf_program_run_seconds_total",
            "Time spent in each kernel program (BPF run-time statistics).",
            MetricKind::Counter,
        );
        for s in stats {
            out.sample(&[("program", s.program)], s.run_time_ns as f64 / 1e9);
        }
    }
    out.family(
        "ballast_collection_failures_total",
        "Collections that failed (the previous figures stay published).",
        MetricKind::Counter,
    );
    out.sample(&[], view.failed_collections as f64);
    out.append_raw(&self_metrics.render());
    let body = out.finish();
    LAST_RENDER_BYTES.store(body.len(), Ordering::Relaxed);
    body
}

/// `cgroup`, `workload`, then `namespace`, `pod` and `container` where the API named them, the
/// raw `pod_uid` and `container_id` where it did not, and `qos`.
fn container_labels<'a>(
    identity: &'a Identity,
    names: Option<(&'a PodNames, Option<&'a str>)>,
) -> Vec<(&'static str, &'a str)> {
    let labels = identity_labels(identity);
    let mut out = Vec::with_capacity(6);
    out.push(("cgroup", identity.path.as_str()));
    out.push(("workload", labels.workload));
    match names {
        Some((pod, container)) => {
            out.push(("namespace", pod.namespace.as_str()));
            out.push(("pod", pod.pod.as_str()));
            match (container, labels.container_id) {
                (Some(container), _) => out.push(("container", container)),
                (None, Some(id)) => out.push(("container_id", id)),
                (None, None) => {}
            }
        }
        None => {
            if let Some(uid) = labels.pod_uid {
                out.push(("pod_uid", uid));
            }
            if let Some(id) = labels.container_id {
                out.push(("container_id", id));
            }
        }
    }
    if let Some(qos) = labels.qos {
        out.push(("qos", qos));
    }
    out
}

/// A container's prepared labels and its figures.
type Container<'a> = (LabelSet<'static>, &'a CgroupEntry);

/// One family of `kind` with a series per container in `series`, skipped entirely when no
/// container has the figure.
fn container_family<'a>(
    out: &mut Exposition,
    name: &str,
    help: &str,
    kind: MetricKind,
    series: impl Iterator<Item = (&'a LabelSet<'a>, f64)>,
) {
    let mut series = series.peekable();
    if series.peek().is_none() {
        return;
    }
    out.family(name, help, kind);
    for (labels, value) in series {
        out.sample_prepared(labels, None, value);
    }
}

/// Network families (eBPF only): traffic of the sockets each container owns.
fn render_network(out: &mut Exposition, containers: &[Container], retransmits: bool) {
    type Counter = (&'static str, &'static str, fn(&NetCounters) -> u64);
    let mut families: Vec<Counter> = vec![
        (
            "ballast_container_network_receive_bytes_total",
            "IP bytes (headers included) received by the container's sockets.",
            |n| n.rx_bytes,
        ),
        (
            "ballast_container_network_receive_packets_total",
            "Packets received by the container's sockets.",
            |n| n.rx_packets,
        ),
        (
            "ballast_container_network_transmit_bytes_total",
            "IP bytes (headers included) sent by the container's sockets.",
            |n| n.tx_bytes,
        ),
        (
            "ballast_container_network_transmit_packets_total",
            "Packets sent by the container's sockets.",
            |n| n.tx_packets,
        ),
    ];
    if retransmits {
        families.push((
            "ballast_container_tcp_retransmits_total",
            "TCP segments the container's sockets retransmitted (attributed to the socket's owner, also from timers).",
            |n| n.tcp_retransmits,
        ));
    }
    for (name, help, value) in families {
        let series = containers
            .iter()
            .filter_map(|(labels, e)| e.network.map(|n| (labels, value(&n) as f64)));
        container_family(out, name, help, MetricKind::Counter, series);
    }
}

/// Memory families; each only for containers where that figure is measured.
fn render_memory(out: &mut Exposition, containers: &[Container]) {
    let memory = || containers.iter().map(|(labels, e)| (labels, &e.memory));
    let stalls =
        memory().filter_map(|(labels, m)| Some((labels, m.reclaim?.reclaim_stall_ns as f64 / 1e9)));
    container_family(
        out,
        "ballast_container_memory_reclaim_stall_seconds_total",
        "Time the container's tasks spent stalled in direct or memcg (limit) reclaim, measured in the kernel.",
        MetricKind::Counter,
        stalls,
    );
    type Stat = (
        &'static str,
        &'static str,
        MetricKind,
        fn(&MemoryStat) -> Option<u64>,
    );
    let stats: [Stat; 6] = [
        (
            "ballast_container_memory_working_set_bytes",
            "Memory usage minus inactive page cache (cAdvisor's working set).",
            MetricKind::Gauge,
            |s| Some(s.working_set_bytes),
        ),
        (
            "ballast_container_memory_rss_bytes",
            "Anonymous memory of the container.",
            MetricKind::Gauge,
            |s| Some(s.rss_bytes),
        ),
        (
            "ballast_container_memory_cache_bytes",
            "Page cache charged to the container.",
            MetricKind::Gauge,
            |s| Some(s.cache_bytes),
        ),
        (
            "ballast_container_memory_major_faults_total",
            "Major page faults of the container.",
            MetricKind::Counter,
            |s| Some(s.major_faults),
        ),
        (
            "ballast_container_memory_limit_bytes",
            "Memory limit of the container's cgroup (memory.max / memory.limit_in_bytes). Only containers with a limit.",
            MetricKind::Gauge,
            |s| s.limit_bytes,
        ),
        (
            "ballast_container_memory_oom_kills_total",
            "Processes of the container killed by the OOM killer.",
            MetricKind::Counter,
            |s| s.oom_kills,
        ),
    ];
    for (name, help, kind, value) in stats {
        let series = memory().filter_map(|(labels, m)| {
            let value = value(m.stat.as_ref()?)?;
            Some((labels, value as f64))
        });
        container_family(out, name, help, kind, series);
    }
    container_family(
        out,
        "ballast_container_pressure_memory_waiting_seconds_total",
        "PSI memory 'some' total of the container's cgroup.",
        MetricKind::Counter,
        memory().filter_map(|(labels, m)| m.psi_some_us.map(|us| (labels, us as f64 / 1e6))),
    );
}

/// Context switches by `kind` label value.
fn switch_kinds(rq: &CpuCounters) -> [(&'static str, u64); 3] {
    [
        ("voluntary", rq.voluntary_switches),
        ("involuntary", rq.involuntary_switches),
        ("throttled", rq.throttled_switches),
    ]
}

fn render_cpu(out: &mut Exposition, containers: &[Container]) {
    let cpu = || containers.iter().map(|(labels, e)| (labels, &e.cpu));
    container_family(
        out,
        "ballast_container_cpu_seconds_total",
        "CPU time used by the container's own tasks.",
        MetricKind::Counter,
        cpu().map(|(labels, cpu)| (labels, cpu.on_cpu_ns as f64 / 1e9)),
    );
    let runqueue = || cpu().filter_map(|(labels, cpu)| Some((labels, cpu.runqueue.as_ref()?)));
    container_family(
        out,
        "ballast_container_cpu_runqueue_wait_seconds_total",
        "Time the container's tasks were runnable but waiting for a CPU (contention; throttled time excluded where the kernel allows).",
        MetricKind::Counter,
        runqueue().map(|(labels, rq)| (labels, rq.runqueue_wait_ns as f64 / 1e9)),
    );
    if runqueue().next().is_some() {
        out.family(
            "ballast_container_cpu_runqueue_latency_seconds",
            "Run-queue waits of the container's tasks, from wakeup or preemption to running (x4 buckets).",
            MetricKind::Histogram,
        );
        let coarse_bounds = coarse_upper_bounds_seconds();
        for (labels, rq) in runqueue() {
            out.histogram_prepared(
                labels,
                &coarse_bounds,
                &coarsen(&rq.wait_hist),
                rq.runqueue_wait_ns as f64 / 1e9,
            );
        }
        out.family(
            "ballast_container_context_switches_total",
            "Context switches of the container's tasks by kind: voluntary (blocked), involuntary (preempted), throttled (CFS quota exhausted).",
            MetricKind::Counter,
        );
        for (labels, rq) in runqueue() {
            for (kind, value) in switch_kinds(rq) {
                out.sample_prepared(labels, Some(("kind", kind)), value as f64);
            }
        }
    }
    type Throttled = (&'static str, &'static str, fn(&Throttling) -> f64);
    let throttled: [Throttled; 3] = [
        (
            "ballast_container_cpu_throttled_seconds_total",
            "Time the container was throttled by its own CFS quota (self-inflicted, not contention). Only containers with a quota.",
            |t| t.throttled_ns as f64 / 1e9,
        ),
        (
            "ballast_container_cpu_throttled_periods_total",
            "CFS enforcement periods in which the container was throttled.",
            |t| t.throttled_periods as f64,
        ),
        (
            "ballast_container_cpu_periods_total",
            "CFS enforcement periods elapsed for the container.",
            |t| t.periods as f64,
        ),
    ];
    for (name, help, value) in throttled {
        let series =
            cpu().filter_map(|(labels, cpu)| Some((labels, value(cpu.throttling.as_ref()?))));
        container_family(out, name, help, MetricKind::Counter, series);
    }
    container_family(
        out,
        "ballast_container_cpu_limit_cores",
        "CPU limit of the container's cgroup (CFS quota / period). Only containers with a quota.",
        MetricKind::Gauge,
        cpu().filter_map(|(labels, cpu)| cpu.limit_millicores.map(|m| (labels, m as f64 / 1000.0))),
    );
    container_family(
        out,
        "ballast_container_pressure_cpu_waiting_seconds_total",
        "PSI cpu 'some' total of the container's cgroup (mixes contention and throttling).",
        MetricKind::Counter,
        cpu().filter_map(|(labels, cpu)| cpu.psi_some_us.map(|us| (labels, us as f64 / 1e6))),
    );
}

/// The node's smoothed load score (what the leader compares across nodes), overall and per
/// resource; a resource that was not measured has no sample.
fn render_node_load(out: &mut Exposition, node: &LoadScore) {
    out.family(
        "ballast_node_load_score",
        "Smoothed load score of the node (0..2, above 1 only over capacity), `resource=\"all\"` the weighted mean; see the README's load model.",
        MetricKind::Gauge,
    );
    if let Some(score) = node.score {
        out.sample(&[("resource", "all")], score);
    }
    for (resource, per) in &node.per_resource {
        if let Some(score) = per.score {
            out.sample(&[("resource", resource.as_str())], score);
        }
    }
}

fn render_node(out: &mut Exposition, snapshot: &Snapshot) {
    out.family(
        "ballast_node_cpus",
        "Online CPUs of the node.",
        MetricKind::Gauge,
    );
    out.sample(&[], f64::from(snapshot.cpus));
    out.family(
        "ballast_node_cpu_seconds_total",
        "CPU time used on the node, all cgroups (including removed ones).",
        MetricKind::Counter,
    );
    out.sample(&[], snapshot.node.on_cpu_ns as f64 / 1e9);
    if let Some(rq) = &snapshot.node.runqueue {
        out.family(
            "ballast_node_cpu_runqueue_wait_seconds_total",
            "Run-queue wait of all tasks on the node.",
            MetricKind::Counter,
        );
        out.sample(&[], rq.runqueue_wait_ns as f64 / 1e9);
        out.family(
            "ballast_node_cpu_runqueue_latency_seconds",
            "Run-queue waits on the node.",
            MetricKind::Histogram,
        );
        out.histogram(
            &[],
            &bucket_upper_bounds_seconds(),
            &rq.wait_hist,
            rq.runqueue_wait_ns as f64 / 1e9,
        );
        out.family(
            "ballast_node_context_switches_total",
            "Context switches on the node by kind.",
            MetricKind::Counter,
        );
        for (kind, value) in switch_kinds(rq) {
            out.sample(&[("kind", kind)], value as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prometheus_parse::{Scrape, Value};

    use super::*;
    use crate::{collect::cgroup::identity::identify, serve::fixtures};

    /// Containers in the reference rendering: three rounds of every kind of cgroup the fixture
    /// has, each round with other optional figures present.
    const REFERENCE_CONTAINERS: u64 = 3 * fixtures::KINDS;
    const REFERENCE_PATH: &str = "src/serve/testdata/metrics-reference.prom";

    /// The rendering of the fixture view must stay byte for byte what it was when the reference
    /// was recorded (before render was optimised): label order, escaping, number formatting.
    #[test]
    fn render_is_byte_identical_to_the_reference() {
        let (view, names) = fixtures::view(REFERENCE_CONTAINERS);
        let text = render(&view, &names, &fixtures::self_metrics());
        let reference = include_str!("testdata/metrics-reference.prom");
        if text != reference {
            let actual = std::env::temp_dir().join("ballast-metrics-render.prom");
            std::fs::write(&actual, &text).expect("the rendering written for inspection");
            let (mut want, mut got) = (reference.split_inclusive('\n'), text.split_inclusive('\n'));
            let (line, want, got) = (1..)
                .map(|n| (n, want.next(), got.next()))
                .find(|(_, want, got)| want != got)
                .expect("the texts differ in some line");
            panic!(
                "render differs from {REFERENCE_PATH} at line {line}:\n want {want:?}\n  got {got:?}\n\
                 the whole rendering is in {}; if the change is intended, copy it over the reference",
                actual.display()
            );
        }
    }

    /// 500 containers' worth of series read back by a real parser: every family has one series
    /// per container that has the figure, under the same label set.
    #[test]
    fn a_large_rendering_parses_back_whole() {
        let containers = 500;
        let (view, names) = fixtures::view(containers);
        let text = render(&view, &names, &fixtures::self_metrics());
        let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parses");
        let mut per_family: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for sample in &scrape.samples {
            if let Some(cgroup) = sample.labels.get("cgroup") {
                per_family
                    .entry(&sample.metric)
                    .or_default()
                    .push((cgroup, &sample.value));
            }
        }
        let snapshot = view.snapshot.as_ref().expect("a snapshot");
        let count = |has: fn(&crate::collect::sample::CgroupEntry) -> bool| {
            snapshot.cgroups.values().filter(|e| has(e)).count()
        };
        let with_runqueue = count(|e| e.cpu.runqueue.is_some());
        let expected = [
            ("ballast_container_cpu_seconds_total", containers as usize),
            (
                "ballast_container_cpu_runqueue_latency_seconds",
                with_runqueue,
            ),
            (
                "ballast_container_cpu_runqueue_latency_seconds_sum",
                with_runqueue,
            ),
            (
                "ballast_container_context_switches_total",
                3 * with_runqueue,
            ),
            (
                "ballast_container_cpu_limit_cores",
                count(|e| e.cpu.limit_millicores.is_some()),
            ),
            (
                "ballast_container_cpu_periods_total",
                count(|e| e.cpu.throttling.is_some()),
            ),
            (
                "ballast_container_memory_working_set_bytes",
                count(|e| e.memory.stat.is_some()),
            ),
            (
                "ballast_container_memory_reclaim_stall_seconds_total",
                count(|e| e.memory.reclaim.is_some()),
            ),
            (
                "ballast_container_network_transmit_bytes_total",
                count(|e| e.network.is_some()),
            ),
            (
                "ballast_container_tcp_retransmits_total",
                count(|e| e.network.is_some()),
            ),
        ];
        for (family, want) in expected {
            let got = per_family.get(family).map_or(0, Vec::len);
            assert_eq!(got, want, "series of {family}");
        }
        let histograms = &per_family["ballast_container_cpu_runqueue_latency_seconds"];
        for (cgroup, value) in histograms {
            let Value::Histogram(buckets) = value else {
                panic!("{cgroup}: not a histogram: {value:?}");
            };
            assert_eq!(
                buckets.len(),
                crate::load::histogram::COARSE_BUCKETS,
                "{cgroup}"
            );
            assert_eq!(buckets.last().map(|b| b.less_than), Some(f64::INFINITY));
        }
        let cgroups = |family: &str| -> Vec<&str> {
            let mut c: Vec<&str> = per_family[family].iter().map(|(c, _)| *c).collect();
            c.sort_unstable();
            c
        };
        let all = cgroups("ballast_container_cpu_seconds_total");
        assert_eq!(all.len(), containers as usize, "distinct label sets");
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "one series per container"
        );
        assert!(cgroups("ballast_container_memory_major_faults_total")
            .iter()
            .all(|c| all.binary_search(c).is_ok()));
        assert!(scrape
            .docs
            .contains_key("ballast_container_context_switches_total"));
    }

    #[test]
    fn self_metric_histograms_are_rendered_with_buckets() {
        let recorder = recorder_builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("ballast_round_duration_seconds").record(0.2);
        });
        let text = handle.render();
        assert!(
            text.contains("# TYPE ballast_round_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("ballast_round_duration_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ballast_round_duration_seconds_bucket{le=\"0.1\"} 0"),
            "{text}"
        );
    }

    const POD: &str = "0b6e5d3c-1111-2222-3333-444455556666";
    const CONTAINER: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn keys<'a>(labels: &[(&'a str, &str)]) -> Vec<&'a str> {
        labels.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn names_replace_the_raw_ids_where_known() {
        let path = format!("/kubepods/burstable/pod{POD}/{CONTAINER}");
        let identity = identify(&path);
        let raw = container_labels(&identity, None);
        assert_eq!(
            keys(&raw),
            ["cgroup", "workload", "pod_uid", "container_id", "qos"]
        );
        let pod = PodNames {
            namespace: "shop".into(),
            pod: "web-1".into(),
            owner: None,
            containers: Default::default(),
        };
        let named = container_labels(&identity, Some((&pod, Some("app"))));
        assert_eq!(
            keys(&named),
            ["cgroup", "workload", "namespace", "pod", "container", "qos"]
        );
        assert_eq!(named[2].1, "shop");
        assert_eq!(named[4].1, "app");
        // The sandbox: the pod is known, the container is not listed by the API.
        let sandbox = container_labels(&identity, Some((&pod, None)));
        assert_eq!(
            keys(&sandbox),
            [
                "cgroup",
                "workload",
                "namespace",
                "pod",
                "container_id",
                "qos"
            ]
        );
    }
}
