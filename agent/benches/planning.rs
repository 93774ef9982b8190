//! One planning round at 500 nodes / 15,000 pods and at 5,000 nodes / 150,000 pods (Kubernetes'
//! documented scale limits), with the heap's peak measured by a counting allocator.
//! Run by `cargo xtask bench`; results in BENCHMARKS.md ("Planner (issue 4)").
//!
//! The cluster: 8-core / 32 GiB nodes, 30 pods each from 3,000-replica-spread Deployments (10
//! replicas each), every 10th node hot on CPU and every 25th on memory, every 20th tainted, one
//! PDB per 5 workloads, loads for every node and pod. Limits are the defaults (10 evictions per
//! round) and, to show the cost when many sources are worked through, 1,000 per round.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::BTreeMap,
    hint::black_box,
    sync::atomic::{AtomicUsize, Ordering},
};

use ballast::{
    load::score::ResourceLoad,
    rebalance::{
        plan,
        snapshot::{
            LabelSelector, Node, NodeLoad, Owner, Pdb, Pod, PodLoad, Qos, Resources, Taint,
            TaintEffect,
        },
        ClusterSnapshot, Policy, RebalanceState, Timestamp,
    },
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GIB: u64 = 1 << 30;
const PODS_PER_NODE: usize = 30;
const NOW: Timestamp = Timestamp(1_800_000_000);

/// A small deterministic generator (xorshift64*): the bench needs no randomness crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..1`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn cluster(nodes: usize) -> ClusterSnapshot {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let workloads = nodes * PODS_PER_NODE / 10;
    let mut snapshot = ClusterSnapshot::default();
    for n in 0..nodes {
        let name = format!("node-{n:05}");
        let mut taints = Vec::new();
        if n % 20 == 7 {
            taints.push(Taint {
                key: "dedicated".to_owned(),
                value: "batch".to_owned(),
                effect: TaintEffect::NoSchedule,
            });
        }
        snapshot.nodes.push(Node {
            name: name.clone(),
            allocatable: Resources {
                cpu_millicores: 8000,
                memory_bytes: 32 * GIB,
                extended: BTreeMap::new(),
            },
            labels: BTreeMap::from([
                ("kubernetes.io/hostname".to_owned(), name.clone()),
                (
                    "topology.kubernetes.io/zone".to_owned(),
                    format!("zone-{}", n % 3),
                ),
            ]),
            taints,
            unschedulable: false,
            ready: true,
        });
        let hot_cpu = n % 10 == 3;
        let hot_memory = n % 25 == 11;
        let (mut cores, mut memory) = (0.0, 0.0);
        for j in 0..PODS_PER_NODE {
            let i = n * PODS_PER_NODE + j;
            let workload = (i * 7919) % workloads;
            let app = format!("app-{workload:05}");
            let namespace = format!("team-{:03}", workload % 200);
            let pod_cores = if hot_cpu {
                0.1 + rng.unit() * 0.4
            } else {
                0.02 + rng.unit() * 0.2
            };
            let pod_memory = if hot_memory {
                0.6 + rng.unit() * 0.4
            } else {
                0.1 + rng.unit() * 0.5
            };
            cores += pod_cores;
            memory += pod_memory;
            let uid = format!("{i:08x}-0000-4000-8000-{workload:012x}");
            snapshot.pod_loads.insert(
                uid.clone(),
                PodLoad {
                    cpu_cores: Some(pod_cores),
                    working_set_bytes: Some(pod_memory * GIB as f64),
                    cpu_contention: Some(if hot_cpu { 0.3 } else { 0.01 }),
                    network_bytes_per_second: Some(rng.unit() * 1e6),
                    ..PodLoad::default()
                },
            );
            snapshot.pods.push(Pod {
                namespace,
                name: format!("{app}-{i:x}"),
                uid,
                node: Some(name.clone()),
                owner: Some(Owner {
                    kind: if workload.is_multiple_of(10) {
                        "StatefulSet"
                    } else {
                        "Deployment"
                    }
                    .to_owned(),
                    name: app.clone(),
                    pod_management_policy: None,
                }),
                labels: BTreeMap::from([("app".to_owned(), app)]),
                annotations: BTreeMap::new(),
                priority: if workload.is_multiple_of(4) { 1000 } else { 0 },
                qos: [Qos::BestEffort, Qos::Burstable, Qos::Guaranteed][workload % 3],
                requests: Resources {
                    cpu_millicores: 100,
                    memory_bytes: GIB / 2,
                    extended: BTreeMap::new(),
                },
                limits: Resources::default(),
                volumes: Vec::new(),
                tolerations: Vec::new(),
                node_selector: BTreeMap::new(),
                required_affinity: Vec::new(),
                ready: true,
                has_readiness_probe: None,
                start_time: Timestamp(NOW.0 - 86_400),
                mirror: false,
            });
        }
        let load = |utilisation: f64, pressure: f64| ResourceLoad {
            utilisation: Some(utilisation),
            pressure: Some(pressure),
        };
        snapshot.node_loads.insert(
            name,
            NodeLoad {
                cpu: load(cores / 8.0 + 0.05, if hot_cpu { 0.35 } else { 0.02 }),
                memory: load(memory / 32.0 + 0.1, if hot_memory { 0.03 } else { 0.0 }),
                network: load(0.1, 0.0),
                cpu_throttled_share: Some(0.0),
                network_capacity_bytes_per_second: Some(1.25e9),
                fresh: true,
            },
        );
    }
    for w in (0..workloads).step_by(5) {
        snapshot.pdbs.push(Pdb {
            namespace: format!("team-{:03}", w % 200),
            name: format!("app-{w:05}"),
            selector: LabelSelector {
                match_labels: BTreeMap::from([("app".to_owned(), format!("app-{w:05}"))]),
                match_expressions: Vec::new(),
            },
            disruptions_allowed: (w % 3) as u32,
        });
    }
    snapshot
}

/// Sources on the first round (the hysteresis is a test subject, not a cost).
fn policy(per_round: u32) -> Policy {
    let mut policy = Policy::default();
    policy.classification.abnormal_rounds = 1;
    policy.limits.per_round = per_round;
    policy.limits.token_bucket.burst = per_round.max(policy.limits.token_bucket.burst);
    policy
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn max_rss_mib() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    usage.ru_maxrss as f64 / 1024.0
}

/// This thread's CPU time, ms: unlike criterion's wall clock, not inflated when other work
/// shares the machine's two cores.
fn thread_cpu_ms() -> f64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("planning_round");
    group.sample_size(10);
    for nodes in [500, 5_000] {
        let before = LIVE.load(Ordering::Relaxed);
        let snapshot = cluster(nodes);
        let snapshot_bytes = LIVE.load(Ordering::Relaxed) - before;
        for per_round in [10, 1_000] {
            let policy = policy(per_round);
            let state = RebalanceState::default();
            // One round outside the timing, for the memory figures and a sanity check.
            let base = LIVE.load(Ordering::Relaxed);
            PEAK.store(base, Ordering::Relaxed);
            let (plan_out, _) = plan(&snapshot, &state, &policy, NOW);
            let round_peak = PEAK.load(Ordering::Relaxed) - base;
            eprintln!(
                "planning {nodes} nodes / {} pods, per_round {per_round}: {} evictions, {} skipped pods, {} sources; snapshot heap {:.1} MiB, round peak heap {:.1} MiB above it, process max RSS so far {:.1} MiB",
                snapshot.pods.len(),
                plan_out.evictions.len(),
                plan_out.skipped_pods.len(),
                plan_out.summary.sources,
                mib(snapshot_bytes),
                mib(round_peak),
                max_rss_mib(),
            );
            let mut cpu: Vec<f64> = (0..9)
                .map(|_| {
                    let start = thread_cpu_ms();
                    black_box(plan(&snapshot, &state, &policy, NOW));
                    thread_cpu_ms() - start
                })
                .collect();
            cpu.sort_by(f64::total_cmp);
            eprintln!("  CPU time per round, median of 9: {:.1} ms", cpu[4]);
            assert!(
                !plan_out.evictions.is_empty(),
                "the bench cluster must have work to do"
            );
            drop(plan_out);
            let id = BenchmarkId::new(
                format!("{nodes}_nodes_{}_pods", snapshot.pods.len()),
                format!("per_round_{per_round}"),
            );
            group.bench_with_input(id, &snapshot, |b, snapshot| {
                b.iter(|| black_box(plan(snapshot, &state, &policy, NOW)))
            });
        }
    }
    group.finish();
}

criterion_group!(planning, benches);
criterion_main!(planning);
