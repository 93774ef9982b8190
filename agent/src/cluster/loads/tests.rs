use std::path::Path;

use super::*;

const POD: &str = "0b6e5d3c-1111-2222-3333-444455556666";

/// The shipped example (`deploy/examples/load-node-a.json`), which `--load-from` can serve.
fn example() -> LoadResponse {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/load-node-a.json");
    LoadResponse::from_file(&path, "node-a").expect("the shipped example reads")
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

fn one(
    doc: LoadResponse,
    max_age: Option<Duration>,
) -> (Loads, BTreeMap<String, (Exclusion, String)>) {
    let node = doc.node.clone();
    all(
        BTreeMap::from([(node, Answer::Load(Box::new(doc)))]),
        max_age,
    )
}

/// [`assemble`] of `answers` as the gatherer reduces them.
fn all(
    answers: BTreeMap<String, Answer>,
    max_age: Option<Duration>,
) -> (Loads, BTreeMap<String, (Exclusion, String)>) {
    let reduced = answers
        .into_iter()
        .map(|(node, answer)| {
            let loads = node_loads(&node, answer, max_age);
            (node, loads)
        })
        .collect();
    assemble(reduced)
}

#[test]
fn a_node_load_is_its_smoothed_figures() {
    let (loads, excluded) = one(example(), None);
    assert!(excluded.is_empty(), "{excluded:?}");
    let node = &loads.nodes["node-a"];
    assert!(node.fresh);
    assert_eq!(
        node.cpu,
        ResourceLoad {
            utilisation: Some(0.9),
            pressure: Some(0.5)
        }
    );
    assert_eq!(node.memory.utilisation, Some(0.5));
    assert_eq!(
        node.network,
        ResourceLoad {
            utilisation: None,
            pressure: Some(0.0)
        },
        "no capacity: no utilisation, never 0"
    );
    assert_eq!(node.network_capacity_bytes_per_second, None);
}

#[test]
fn a_pod_load_sums_its_containers() {
    let (loads, _) = one(example(), None);
    assert_eq!(
        loads.pods.len(),
        1,
        "the pod's own cgroup is not a second pod"
    );
    let pod = &loads.pods[POD];
    // app: 0.9 of its 2-core limit; proxy: 0.1 of the node's 4 CPUs.
    assert!(close(pod.cpu_cores, 1.8 + 0.4), "{pod:?}");
    assert!(
        close(pod.cpu_contention, (0.5 * 1.8 + 0.2 * 0.4) / 2.2),
        "{pod:?}"
    );
    assert_eq!(pod.cpu_throttled_share, Some(0.1));
    // app: half of its 2 GiB limit; proxy: no smoothed figure, its last window.
    assert!(
        close(pod.working_set_bytes, (1u64 << 30) as f64 + 104_857_600.0),
        "{pod:?}"
    );
    assert_eq!(pod.memory_reclaim, Some(0.0));
    assert!(close(pod.network_bytes_per_second, 1_000_000.0), "{pod:?}");
    assert!(close(pod.network_retransmit, 2.0 / 1000.0), "{pod:?}");
}

#[test]
fn unmeasured_figures_stay_unknown() {
    let mut doc = example();
    for c in &mut doc.containers {
        c.score = None;
        c.cpu.runqueue_wait_per_cpu_second = None;
        c.memory.reclaim_stall_per_second = None;
        c.network = Default::default();
    }
    let (loads, _) = one(doc, None);
    let pod = &loads.pods[POD];
    assert!(
        close(pod.cpu_cores, 1.9 + 0.3),
        "raw cores when nothing is smoothed"
    );
    assert_eq!(pod.cpu_contention, None);
    assert_eq!(pod.memory_reclaim, None);
    assert_eq!(pod.network_bytes_per_second, None);
    assert_eq!(pod.network_retransmit, None);
}

#[test]
fn stale_missing_unreachable_and_misdirected_loads_are_left_out() {
    let mut stale = example();
    stale.age_seconds = 3.5;
    let (loads, excluded) = one(stale.clone(), None);
    assert!(loads.nodes.is_empty() && loads.pods.is_empty());
    assert_eq!(excluded["node-a"].0, Exclusion::Stale);
    assert!(
        excluded["node-a"].1.contains("3.5 s old"),
        "{}",
        excluded["node-a"].1
    );
    // Three intervals of the sender by default, or what the leader was told.
    let (loads, _) = one(stale.clone(), Some(Duration::from_secs(5)));
    assert!(loads.nodes.contains_key("node-a"));
    stale.interval_seconds = Some(2.0);
    assert!(one(stale, None).0.nodes.contains_key("node-a"));
    let mut nan = example();
    nan.age_seconds = f64::NAN;
    assert_eq!(one(nan, None).1["node-a"].0, Exclusion::Stale);

    let mut unscored = example();
    unscored.score = None;
    assert_eq!(one(unscored, None).1["node-a"].0, Exclusion::Missing);

    let answers = BTreeMap::from([
        ("node-a".to_string(), Answer::Load(Box::new(example()))),
        ("node-b".to_string(), Answer::Load(Box::new(example()))),
        (
            "node-c".to_string(),
            Answer::Failed("timed out after 2s".into()),
        ),
        ("node-d".to_string(), Answer::NoAgent),
    ]);
    let (loads, excluded) = all(answers, None);
    assert_eq!(loads.nodes.keys().collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(excluded["node-b"].0, Exclusion::Missing);
    assert!(excluded["node-b"]
        .1
        .contains("answered for node \"node-a\""));
    assert_eq!(
        excluded["node-c"],
        (Exclusion::Unreachable, "timed out after 2s".into())
    );
    assert_eq!(excluded["node-d"].0, Exclusion::Missing);
}

#[test]
fn the_example_file_is_marked_as_a_file() {
    let doc = example();
    assert_eq!(doc.source, crate::serve::api::LoadSource::File);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/load-node-a.json");
    let wrong = LoadResponse::from_file(&path, "node-b")
        .err()
        .map(|e| e.to_string());
    assert!(
        wrong
            .as_deref()
            .is_some_and(|m| m.contains("describes node \"node-a\"") && m.contains("\"node-b\"")),
        "{wrong:?}"
    );
}
