//! The API test double against the real `kube` client: every semantic Ballast relies on,
//! observed through `kube::Api`, `kube::runtime::watcher` and the Eviction subresource exactly
//! as the agent will use them.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_tests::apiserver::{
    fixtures::{self, eventually_async, Workload},
    ApiServer, ApiServerConfig, Kind, Scope,
};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{ConfigMap, Event as CoreEvent, Node, ObjectReference, Pod},
        events::v1::Event as EventV1,
        policy::v1::PodDisruptionBudget,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    api::{EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
    runtime::{
        events::{Event as RecordedEvent, EventType, Recorder, Reporter},
        watcher,
    },
    Api, Client,
};
use serde_json::{json, Value};

/// Short controller delays, so replacements come and become Ready within a test.
fn quick() -> ApiServerConfig {
    ApiServerConfig {
        restart_delay: Duration::from_millis(100),
        ready_delay: Duration::from_millis(100),
        ..ApiServerConfig::default()
    }
}

/// A client that shows every answer as it came: kube retries 429, 503 and 504 by default.
async fn strict_client(server: &ApiServer, identity: &str) -> Result<Client> {
    let mut config = server.config(identity).await?;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

fn api_status(result: Result<impl std::fmt::Debug, kube::Error>) -> Result<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => Ok(*status),
        other => bail!("expected an API error Status, got {other:?}"),
    }
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    }
}

fn micro(text: &str) -> Result<MicroTime> {
    Ok(MicroTime(text.parse::<Timestamp>()?))
}

#[tokio::test]
async fn lease_round_trips_and_stale_writes_conflict() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let leases: Api<Lease> = Api::namespaced(server.client("agent-a").await?, "ballast");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("ballast-leader".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("agent-a".into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(micro("2025-05-01T10:00:00.123456Z")?),
            renew_time: Some(micro("2025-05-01T10:00:05.654321Z")?),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&PostParams::default(), &lease).await?;
    assert_eq!(
        created.spec, lease.spec,
        "every Lease spec field round-trips"
    );
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.namespace.as_deref(), Some("ballast"));

    let duplicate = api_status(leases.create(&PostParams::default(), &lease).await)?;
    assert_eq!(
        (duplicate.code, duplicate.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert!(duplicate.is_already_exists());

    let mut renewed = created.clone();
    renewed.spec.as_mut().context("spec")?.renew_time = Some(micro("2025-05-01T10:00:07Z")?);
    let stored = leases
        .replace("ballast-leader", &PostParams::default(), &renewed)
        .await?;
    assert_ne!(
        stored.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(stored.metadata.uid, created.metadata.uid);
    let fetched = leases.get("ballast-leader").await?;
    assert_eq!(fetched.spec, renewed.spec);

    // A second writer holding the first version loses.
    let mut usurper = created;
    usurper.spec.as_mut().context("spec")?.holder_identity = Some("agent-b".into());
    let stale = api_status(
        leases
            .replace("ballast-leader", &PostParams::default(), &usurper)
            .await,
    )?;
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    assert!(
        stale.message.contains("the object has been modified"),
        "{}",
        stale.message
    );
    let holder = leases
        .get("ballast-leader")
        .await?
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("agent-a"));
    Ok(())
}

#[tokio::test]
async fn merge_patches_with_a_stale_resource_version_conflict() -> Result<()> {
    let server = ApiServer::start(quick())?;
    server.apply(fixtures::node("n1", "4", "8Gi"))?;
    let client = server.client("agent-a").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let before = nodes.get("n1").await?;
    let rv = before
        .metadata
        .resource_version
        .clone()
        .context("resourceVersion")?;
    let taint = json!({"metadata": {"resourceVersion": rv},
                       "spec": {"taints": [{"key": "ballast.io/hot", "effect": "PreferNoSchedule"}]}});
    let tainted = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&taint))
        .await?;
    let taints = tainted.spec.and_then(|s| s.taints).context("taints")?;
    assert_eq!(taints[0].key, "ballast.io/hot");
    assert_eq!(
        tainted.status, before.status,
        "a patch of the main resource leaves status alone"
    );

    let stale = api_status(
        nodes
            .patch("n1", &PatchParams::default(), &Patch::Merge(&taint))
            .await,
    )?;
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    let untaint = json!({"spec": {"taints": null}});
    let cleared = nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&untaint))
        .await?;
    assert!(cleared.spec.and_then(|s| s.taints).is_none());
    // A patch that changes nothing commits nothing.
    let version = server.resource_version();
    nodes
        .patch("n1", &PatchParams::default(), &Patch::Merge(&untaint))
        .await?;
    assert_eq!(server.resource_version(), version);

    let maps: Api<ConfigMap> = Api::namespaced(client, "ballast");
    let created = maps
        .create(&PostParams::default(), &config_map("ballast-state"))
        .await?;
    let mut edited = created.clone();
    edited.data = Some([("state".to_string(), "{}".to_string())].into());
    maps.replace("ballast-state", &PostParams::default(), &edited)
        .await?;
    let stale = api_status(
        maps.replace("ballast-state", &PostParams::default(), &created)
            .await,
    )?;
    assert_eq!(stale.code, 409);
    let patched = maps
        .patch(
            "ballast-state",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"more": "1"}})),
        )
        .await?;
    assert_eq!(patched.data.context("data")?.len(), 2);
    // Only merge patches are served.
    let strategic = api_status(
        maps.patch(
            "ballast-state",
            &PatchParams::default(),
            &Patch::Strategic(json!({"data": {}})),
        )
        .await,
    )?;
    assert_eq!(strategic.code, 415);
    Ok(())
}

#[tokio::test]
async fn watches_stream_added_modified_deleted_and_bookmarks() -> Result<()> {
    let server = ApiServer::start(ApiServerConfig {
        bookmark_interval: Duration::from_millis(200),
        ..quick()
    })?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client("watcher").await?, "ns");
    let start = maps
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .context("rv")?;
    let mut events = maps
        .watch(&WatchParams::default().labels("app=web"), &start)
        .await?
        .boxed();
    let mut labelled = config_map("web");
    labelled.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
    let merge = |patch: Value| Patch::Merge(patch);
    maps.create(&PostParams::default(), &config_map("other"))
        .await?;
    maps.create(&PostParams::default(), &labelled).await?;
    let edit = merge(json!({"data": {"k": "w"}}));
    maps.patch("web", &PatchParams::default(), &edit).await?;
    // Leaving and entering the selection read as DELETED and ADDED.
    let unlabel = merge(json!({"metadata": {"labels": null}}));
    maps.patch("web", &PatchParams::default(), &unlabel).await?;
    let label = merge(json!({"metadata": {"labels": {"app": "web"}}}));
    maps.patch("other", &PatchParams::default(), &label).await?;
    maps.delete("other", &Default::default()).await?;
    maps.delete("web", &Default::default()).await?;
    let mut seen = Vec::new();
    let mut bookmark = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while bookmark.is_none() && Instant::now() < deadline {
        let event = tokio::time::timeout(Duration::from_secs(2), events.try_next())
            .await?
            .context("watch ended")?
            .context("watch stream")?;
        match event {
            WatchEvent::Added(m) => seen.push(("ADDED", m.metadata.name)),
            WatchEvent::Modified(m) => seen.push(("MODIFIED", m.metadata.name)),
            WatchEvent::Deleted(m) => seen.push(("DELETED", m.metadata.name)),
            WatchEvent::Bookmark(b) => bookmark = Some(b.metadata.resource_version),
            WatchEvent::Error(e) => bail!("watch error {e:?}"),
        }
    }
    let (web, other) = (Some("web".to_string()), Some("other".to_string()));
    assert_eq!(
        seen,
        [
            ("ADDED", web.clone()),
            ("MODIFIED", web.clone()),
            ("DELETED", web),
            ("ADDED", other.clone()),
            ("DELETED", other),
        ],
        "only what is in the selection, when it is"
    );
    let bookmark: u64 = bookmark.context("no bookmark within 5 s")?.parse()?;
    assert_eq!(bookmark, server.resource_version());
    Ok(())
}

type WatcherStream<K> =
    futures_util::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

async fn next_event<K>(
    stream: &mut WatcherStream<K>,
) -> Result<Result<watcher::Event<K>, watcher::Error>> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .map_err(|_| anyhow!("no watcher event within 5 s"))?
        .ok_or_else(|| anyhow!("watcher ended"))
}

#[tokio::test]
async fn watcher_relists_after_410_gone() -> Result<()> {
    let server = ApiServer::start(ApiServerConfig {
        history: 10,
        ..quick()
    })?;
    let client = server.client("watcher").await?;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ns");
    maps.create(&PostParams::default(), &config_map("first"))
        .await?;
    // Watches end after a second, so the watcher resumes from its last resourceVersion.
    let config = watcher::Config::default().timeout(1).disable_bookmarks();
    let mut stream = watcher(maps.clone(), config).boxed();
    loop {
        if let Ok(watcher::Event::InitDone) = next_event(&mut stream).await? {
            break;
        }
    }
    // Other resources' changes push the watched resourceVersion out of the history.
    let leases: Api<Lease> = Api::namespaced(client, "ns");
    for i in 0..12 {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(format!("l{i}")),
                ..ObjectMeta::default()
            },
            spec: None,
        };
        leases.create(&PostParams::default(), &lease).await?;
    }
    let gone = loop {
        match next_event(&mut stream).await? {
            Err(watcher::Error::WatchError(status)) => break status,
            Err(other) => bail!("unexpected watcher error {other}"),
            Ok(_) => {}
        }
    };
    assert_eq!((gone.code, gone.reason.as_str()), (410, "Expired"));
    let mut relisted = Vec::new();
    loop {
        match next_event(&mut stream).await? {
            Ok(watcher::Event::InitApply(m)) => relisted.push(m.metadata.name),
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
            Err(e) => bail!("relist failed: {e}"),
        }
    }
    assert_eq!(relisted, [Some("first".to_string())]);
    // And it watches again.
    maps.create(&PostParams::default(), &config_map("second"))
        .await?;
    loop {
        if let Ok(watcher::Event::Apply(m)) = next_event(&mut stream).await? {
            assert_eq!(m.metadata.name.as_deref(), Some("second"));
            break;
        }
    }
    Ok(())
}

#[tokio::test]
async fn lists_page_consistently_past_500_objects() -> Result<()> {
    let server = ApiServer::start(quick())?;
    for i in 0..1203 {
        let mut object = serde_json::to_value(config_map(&format!("cm-{i:04}")))?;
        object["metadata"]["namespace"] = json!("shop");
        server.apply(object)?;
    }
    let maps: Api<ConfigMap> = Api::namespaced(server.client("pager").await?, "shop");
    let first = maps.list(&ListParams::default().limit(500)).await?;
    assert_eq!(first.items.len(), 500);
    assert_eq!(first.metadata.remaining_item_count, Some(703));
    let token = first.metadata.continue_.clone().context("continue token")?;
    // Deleted after the first page: still in the list the pages make up.
    server.delete(Kind::ConfigMap, "shop", "cm-1100")?;
    let mut names: Vec<String> = first
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token {
        let page = maps
            .list(&ListParams::default().limit(500).continue_token(&t))
            .await?;
        assert_eq!(
            page.metadata.resource_version,
            first.metadata.resource_version
        );
        names.extend(page.items.iter().filter_map(|p| p.metadata.name.clone()));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
    }
    assert_eq!(names.len(), 1203);
    names.dedup();
    assert_eq!(names.len(), 1203, "no object twice");
    assert!(names.contains(&"cm-1100".to_string()));

    let before = server.request_counts().get("pager").copied().unwrap_or(0);
    let mut stream = watcher(maps, watcher::Config::default()).boxed();
    let mut listed = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await?? {
            Some(watcher::Event::InitApply(_)) => listed += 1,
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => bail!("watcher ended"),
        }
    }
    assert_eq!(listed, 1202);
    let pages = server.request_counts()["pager"] - before;
    assert!(
        pages >= 3,
        "the watcher's initial list took {pages} requests; 500 per page means 3"
    );
    Ok(())
}

/// Nodes n1, n2, n3 and three Ready replicas of `web` behind a PDB of `minAvailable: 2`.
fn seed_shop(server: &ApiServer) -> Result<Workload> {
    let web = Workload::replica_set("shop", "web").requests("500m", "512Mi");
    for node in ["n1", "n2", "n3"] {
        server.apply(fixtures::node(node, "4", "8Gi"))?;
    }
    for (i, node) in ["n1", "n2", "n3"].into_iter().enumerate() {
        server.apply(web.pod(i, node))?;
    }
    server.apply(web.pdb_min_available("web", json!(2)))?;
    Ok(web)
}

async fn disruptions_allowed(
    pdbs: &Api<PodDisruptionBudget>,
    expected: i32,
) -> Result<PodDisruptionBudget> {
    eventually_async(Duration::from_secs(5), || async {
        let pdb = pdbs.get("web").await?;
        let allowed = pdb.status.as_ref().and_then(|s| s.disruptions_allowed);
        Ok((allowed == Some(expected)).then_some(pdb))
    })
    .await
    .with_context(|| format!("PDB web never allowed {expected} disruption(s)"))
}

#[tokio::test]
async fn evictions_respect_budgets_and_replacements_restore_them() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let web = seed_shop(&server)?;
    let client = strict_client(&server, "leader").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, "shop");
    let pdb = disruptions_allowed(&pdbs, 1).await?;
    let status = pdb.status.context("status")?;
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.expected_pods
        ),
        (Some(3), Some(2), Some(3))
    );

    let evicted = web.pod_name(0);
    let answer = pods.evict(&evicted, &EvictParams::default()).await?;
    assert_eq!(answer.code, 201);
    let refused = api_status(pods.evict(&web.pod_name(1), &EvictParams::default()).await)?;
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert_eq!(
        refused.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(
        pods.get_opt(&web.pod_name(1)).await?.is_some(),
        "a refused eviction deletes nothing"
    );
    let gone = api_status(pods.evict(&evicted, &EvictParams::default()).await)?;
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));

    // The replacement (new name, new uid, same labels) becomes Ready, and the budget with it.
    let pdb = disruptions_allowed(&pdbs, 1).await?;
    assert_eq!(pdb.status.context("status")?.current_healthy, Some(3));
    let all = pods.list(&ListParams::default().labels("app=web")).await?;
    let names: Vec<&str> = all
        .items
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(!names.contains(&evicted.as_str()));
    let replacement = all
        .items
        .iter()
        .find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("web-") && n.len() == 9)
        })
        .context("replacement named from generateName")?;
    let bound = replacement.spec.as_ref().and_then(|s| s.node_name.clone());
    assert!(bound.is_some(), "the replacement is scheduled");
    assert_eq!(
        replacement.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    Ok(())
}

#[tokio::test]
async fn dry_runs_change_nothing() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let web = seed_shop(&server)?;
    let client = strict_client(&server, "leader").await?;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ballast");
    let shown = maps.create(&dry, &config_map("ballast-state")).await?;
    assert_eq!(shown.metadata.name.as_deref(), Some("ballast-state"));
    assert!(maps.get_opt("ballast-state").await?.is_none());

    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "shop");
    disruptions_allowed(&pdbs, 1).await?;
    let version = server.resource_version();
    let pods: Api<Pod> = Api::namespaced(client, "shop");
    let evict = EvictParams {
        post_options: dry,
        ..EvictParams::default()
    };
    assert_eq!(pods.evict(&web.pod_name(0), &evict).await?.code, 201);
    assert!(pods.get_opt(&web.pod_name(0)).await?.is_some());
    assert_eq!(
        server.resource_version(),
        version,
        "neither the pod nor the budget changed"
    );
    Ok(())
}

#[tokio::test]
async fn two_budgets_on_one_pod_are_a_server_error() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let web = seed_shop(&server)?;
    server.apply(web.pdb_max_unavailable("web-too", json!("50%")))?;
    let pods: Api<Pod> = Api::namespaced(server.client("leader").await?, "shop");
    let error = api_status(pods.evict(&web.pod_name(0), &EvictParams::default()).await)?;
    assert_eq!(error.code, 500);
    assert!(
        error.message.contains("more than one PodDisruptionBudget"),
        "{}",
        error.message
    );
    Ok(())
}

#[tokio::test]
async fn replacements_avoid_a_soft_tainted_node_when_another_fits() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let web = Workload::stateful_set("shop", "db").requests("1", "1Gi");
    let busy = Workload::replica_set("shop", "busy").requests("1", "1Gi");
    // `hot` is the emptier node, but carries Ballast's soft taint.
    server.apply(fixtures::tainted(
        fixtures::node("hot", "4", "8Gi"),
        "ballast.io/hot",
        "PreferNoSchedule",
    ))?;
    server.apply(fixtures::node("cool", "4", "8Gi"))?;
    server.apply(web.pod(0, "hot"))?;
    server.apply(busy.pod(0, "cool"))?;
    let client = server.client("leader").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let old_uid = pods.get("db-0").await?.metadata.uid;
    pods.evict("db-0", &EvictParams::default()).await?;
    let placed_on = |node: &'static str| {
        let pods = pods.clone();
        let old_uid = old_uid.clone();
        async move {
            eventually_async(Duration::from_secs(5), || async {
                let pod = pods.get_opt("db-0").await?;
                Ok(pod.filter(|p| {
                    p.metadata.uid != old_uid
                        && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                }))
            })
            .await
            .with_context(|| format!("db-0 was not re-placed on {node}"))
        }
    };
    let moved = placed_on("cool").await?;
    assert_ne!(
        moved.metadata.uid, old_uid,
        "a StatefulSet replacement keeps its name, not its uid"
    );

    // Without the taint the emptier node wins again: the taint is what kept it away.
    let nodes: Api<Node> = Api::all(client);
    nodes
        .patch(
            "hot",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"taints": null}})),
        )
        .await?;
    let old_uid = moved.metadata.uid;
    pods.delete("db-0", &Default::default()).await?;
    let back = eventually_async(Duration::from_secs(5), || async {
        let pod = pods.get_opt("db-0").await?;
        Ok(pod.filter(|p| {
            p.metadata.uid != old_uid
                && p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some()
        }))
    })
    .await?;
    assert_eq!(back.spec.and_then(|s| s.node_name).as_deref(), Some("hot"));
    Ok(())
}

#[tokio::test]
async fn unplaceable_replacements_stay_pending() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let big = Workload::replica_set("shop", "big").requests("3", "1Gi");
    server.apply(fixtures::node("n1", "4", "8Gi"))?;
    server.apply(fixtures::tainted(
        fixtures::node("n2", "4", "8Gi"),
        "dedicated",
        "NoSchedule",
    ))?;
    server.apply(big.pod(0, "n1"))?;
    server.apply(
        Workload::replica_set("shop", "filler")
            .requests("2", "1Gi")
            .pod(0, "n1"),
    )?;
    server.delete(Kind::Pod, "shop", &big.pod_name(0))?;
    let pods: Api<Pod> = Api::namespaced(server.client("t").await?, "shop");
    let pending = eventually_async(Duration::from_secs(5), || async {
        let list = pods.list(&ListParams::default().labels("app=big")).await?;
        Ok(list.items.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| {
                    c.iter().any(|c| {
                        c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable")
                    })
                })
        }))
    })
    .await?;
    assert!(pending.spec.and_then(|s| s.node_name).is_none());
    // Room appears: it is placed.
    server.delete(Kind::Pod, "shop", "filler-00000")?;
    eventually_async(Duration::from_secs(5), || async {
        let list = pods
            .list(
                &ListParams::default()
                    .labels("app=big")
                    .fields("spec.nodeName=n1"),
            )
            .await?;
        Ok((!list.items.is_empty()).then_some(()))
    })
    .await
    .context("the pending replacement was not placed once room appeared")
}

#[tokio::test]
async fn field_and_label_selectors_filter_lists() -> Result<()> {
    let server = ApiServer::start(quick())?;
    seed_shop(&server)?;
    server.apply(Workload::replica_set("other", "api").pod(0, "n1"))?;
    let pods: Api<Pod> = Api::all(server.client("t").await?);
    let on_n1 = pods
        .list(&ListParams::default().fields("spec.nodeName=n1"))
        .await?;
    assert_eq!(on_n1.items.len(), 2);
    let shop_on_n1 = pods
        .list(&ListParams::default().fields("spec.nodeName=n1,metadata.namespace=shop"))
        .await?;
    assert_eq!(shop_on_n1.items.len(), 1);
    let web = pods
        .list(&ListParams::default().labels("app in (web),app!=api"))
        .await?;
    assert_eq!(web.items.len(), 3);
    let unknown = api_status(
        pods.list(&ListParams::default().fields("spec.color=blue"))
            .await,
    )?;
    assert_eq!(unknown.code, 400);
    Ok(())
}

#[tokio::test]
async fn a_partitioned_client_is_cut_off_while_others_are_served() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let cut = server.client("agent-a").await?;
    let fine = server.client("agent-b").await?;
    let cut_maps: Api<ConfigMap> = Api::namespaced(cut, "ns");
    let fine_maps: Api<ConfigMap> = Api::namespaced(fine, "ns");
    cut_maps
        .create(&PostParams::default(), &config_map("before"))
        .await?;
    let mut watch = cut_maps.watch(&WatchParams::default(), "0").await?.boxed();
    assert!(matches!(
        watch.try_next().await?,
        Some(WatchEvent::Added(_))
    ));

    server.faults().partition("agent-a", true);
    // The open watch is broken, not left hanging.
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match watch.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the partitioned client's watch stayed open");
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        cut_maps.create(&PostParams::default(), &config_map("during")),
    )
    .await;
    assert!(hung.is_err(), "a partitioned request must not be answered");
    fine_maps
        .create(&PostParams::default(), &config_map("other"))
        .await?;

    server.faults().partition("agent-a", false);
    eventually_async(Duration::from_secs(5), || async {
        Ok(cut_maps.get_opt("before").await.ok().flatten().map(|_| ()))
    })
    .await
    .context("the healed client was not served again")?;
    assert!(
        server.get(Kind::ConfigMap, "ns", "during").is_none(),
        "nothing sent during the cut arrived"
    );
    let log = server.write_log();
    let during = log
        .iter()
        .find(|r| r.identity == "agent-a" && r.method == "POST" && r.status == 0);
    assert!(
        during.is_some(),
        "the cut-off write is logged as unanswered: {log:?}"
    );
    Ok(())
}

#[tokio::test]
async fn latency_applies_to_its_scope() -> Result<()> {
    let server = ApiServer::start(quick())?;
    server.apply(fixtures::node("n1", "4", "8Gi"))?;
    let slow: Api<Node> = Api::all(server.client("slow").await?);
    let fast: Api<Node> = Api::all(server.client("fast").await?);
    // Connections are set up before the clock starts.
    slow.get("n1").await?;
    fast.get("n1").await?;
    server
        .faults()
        .latency(Scope::identity("slow"), Duration::from_millis(300));
    let started = Instant::now();
    slow.get("n1").await?;
    let slow_time = started.elapsed();
    let started = Instant::now();
    fast.get("n1").await?;
    let fast_time = started.elapsed();
    assert!(slow_time >= Duration::from_millis(300), "{slow_time:?}");
    assert!(fast_time < Duration::from_millis(300), "{fast_time:?}");
    Ok(())
}

#[tokio::test]
async fn injected_errors_and_dropped_connections() -> Result<()> {
    let server = ApiServer::start(quick())?;
    server.apply(fixtures::node("n1", "4", "8Gi"))?;
    let nodes: Api<Node> = Api::all(strict_client(&server, "agent").await?);
    server
        .faults()
        .fail_next(Scope::all().and_resource("nodes"), 2, 503)?;
    for _ in 0..2 {
        let failed = api_status(nodes.get("n1").await)?;
        assert_eq!(
            (failed.code, failed.reason.as_str()),
            (503, "ServiceUnavailable")
        );
    }
    nodes.get("n1").await?;

    server.faults().drop_next(Scope::identity("agent"), 1);
    match nodes.get("n1").await {
        Err(kube::Error::Api(status)) => bail!("a dropped connection answered {status:?}"),
        Err(_) => {}
        Ok(_) => bail!("a dropped connection answered"),
    }
    nodes.get("n1").await?;

    server.faults().error_rate(Scope::all(), 0.5, 500, 42)?;
    let mut failures = 0;
    for _ in 0..40 {
        if let Err(kube::Error::Api(status)) = nodes.get("n1").await {
            assert_eq!(status.code, 500);
            failures += 1;
        }
    }
    assert!(
        (8..=32).contains(&failures),
        "{failures} of 40 failed at a 50% rate"
    );
    server.faults().clear();
    nodes.get("n1").await?;
    Ok(())
}

#[tokio::test]
async fn kube_retries_hide_transient_failures_by_default() -> Result<()> {
    let server = ApiServer::start(quick())?;
    server.apply(fixtures::node("n1", "4", "8Gi"))?;
    let nodes: Api<Node> = Api::all(server.client("agent").await?);
    server.faults().fail_next(Scope::all(), 2, 503)?;
    nodes.get("n1").await?;
    assert_eq!(
        server.request_counts()["agent"],
        3,
        "one get, two transparent retries"
    );
    Ok(())
}

#[tokio::test]
async fn the_write_log_names_every_writer() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let web = seed_shop(&server)?;
    let a = server.client("agent-a").await?;
    let b = server.client("agent-b").await?;
    let leases_a: Api<Lease> = Api::namespaced(a.clone(), "ballast");
    let leases_b: Api<Lease> = Api::namespaced(b, "ballast");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("ballast-leader".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec::default()),
    };
    let created = leases_a.create(&PostParams::default(), &lease).await?;
    let mut taken = created.clone();
    taken.spec = Some(LeaseSpec {
        holder_identity: Some("agent-b".into()),
        ..LeaseSpec::default()
    });
    leases_b
        .replace("ballast-leader", &PostParams::default(), &taken)
        .await?;
    let _ = leases_a
        .replace("ballast-leader", &PostParams::default(), &created)
        .await;
    leases_a.get("ballast-leader").await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(a.clone(), "shop");
    disruptions_allowed(&pdbs, 1).await?;
    Api::<Pod>::namespaced(a, "shop")
        .evict(&web.pod_name(2), &EvictParams::default())
        .await?;

    let log = server.write_log();
    let summary: Vec<(&str, &str, &str, &str, u16)> = log
        .iter()
        .map(|r| {
            (
                r.identity.as_str(),
                r.method.as_str(),
                r.kind.as_str(),
                r.name.as_str(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("agent-a", "POST", "Lease", "ballast-leader", 201),
            ("agent-b", "PUT", "Lease", "ballast-leader", 200),
            ("agent-a", "PUT", "Lease", "ballast-leader", 409),
            ("agent-a", "POST", "Eviction", web.pod_name(2).as_str(), 201),
        ]
    );
    assert!(log
        .iter()
        .all(|r| r.namespace == "ballast" || r.namespace == "shop"));
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(
        log[3].path,
        format!("/api/v1/namespaces/shop/pods/{}/eviction", web.pod_name(2))
    );
    let counts = server.request_counts();
    assert_eq!(counts["agent-b"], 1);
    assert!(counts["agent-a"] >= 5);
    Ok(())
}

#[tokio::test]
async fn requests_without_a_known_token_are_unauthorized() -> Result<()> {
    let server = ApiServer::start(ApiServerConfig {
        identities: Some(["agent-a".to_string()].into()),
        ..quick()
    })?;
    let anonymous = Client::try_from(kube::Config::new(server.url().parse()?))?;
    let status = api_status(
        Api::<Node>::all(anonymous)
            .list(&ListParams::default())
            .await,
    )?;
    assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
    let stranger = server.client("mallory").await?;
    let status = api_status(
        Api::<Lease>::namespaced(stranger, "ns")
            .create(&PostParams::default(), &Lease::default())
            .await,
    )?;
    assert_eq!(status.code, 401);
    Api::<Node>::all(server.client("agent-a").await?)
        .list(&ListParams::default())
        .await?;
    let refused = server.write_log();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].identity.as_str(), refused[0].status),
        ("mallory", 401)
    );
    Ok(())
}

#[tokio::test]
async fn events_are_created_through_both_apis() -> Result<()> {
    let server = ApiServer::start(quick())?;
    let web = seed_shop(&server)?;
    let client = server.client("leader").await?;
    let pod_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some("shop".into()),
        name: Some(web.pod_name(0)),
        ..ObjectReference::default()
    };
    let core = CoreEvent {
        metadata: ObjectMeta {
            generate_name: Some("ballast-".into()),
            ..ObjectMeta::default()
        },
        involved_object: pod_ref.clone(),
        reason: Some("Rebalanced".into()),
        message: Some("evicted from hot node n1".into()),
        type_: Some("Normal".into()),
        ..CoreEvent::default()
    };
    let created = Api::<CoreEvent>::namespaced(client.clone(), "shop")
        .create(&PostParams::default(), &core)
        .await?;
    assert!(created
        .metadata
        .name
        .is_some_and(|n| n.starts_with("ballast-") && n.len() == 13));
    let by_reason = Api::<CoreEvent>::namespaced(client.clone(), "shop")
        .list(&ListParams::default().fields("reason=Rebalanced"))
        .await?;
    assert_eq!(by_reason.items.len(), 1);

    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "ballast".into(),
            instance: Some("agent-a".into()),
        },
    );
    let event = RecordedEvent {
        type_: EventType::Normal,
        reason: "Evicted".into(),
        note: Some("load".into()),
        action: "Evict".into(),
        secondary: None,
    };
    recorder.publish(&event, &pod_ref).await?;
    recorder.publish(&event, &pod_ref).await?;
    let recorded = server.list(Kind::EventV1);
    assert_eq!(
        recorded.len(),
        1,
        "the recorder patched its series: {recorded:?}"
    );
    assert_eq!(recorded[0]["reason"], "Evicted");
    assert_eq!(recorded[0]["series"]["count"], 2);
    let typed: Vec<EventV1> = serde_json::from_value(Value::Array(recorded))?;
    assert_eq!(
        typed[0].regarding.as_ref().and_then(|r| r.name.clone()),
        Some(web.pod_name(0))
    );
    Ok(())
}

#[tokio::test]
async fn streaming_lists_end_with_the_initial_events_bookmark() -> Result<()> {
    let server = ApiServer::start(quick())?;
    seed_shop(&server)?;
    let pods: Api<Pod> = Api::all(server.client("t").await?);
    let mut stream = watcher(pods, watcher::Config::default().streaming_lists()).boxed();
    let mut initial = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await?? {
            Some(watcher::Event::InitApply(_)) => initial += 1,
            Some(watcher::Event::InitDone) => break,
            Some(_) => {}
            None => bail!("watcher ended"),
        }
    }
    assert_eq!(initial, 3);
    Ok(())
}

#[test]
fn the_standalone_binary_serves_a_seeded_cluster() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir()?;
    let seed = dir.path().join("seed.json");
    let web = Workload::replica_set("shop", "web");
    let list =
        json!({"kind": "List", "items": [fixtures::node("n1", "4", "8Gi"), web.pod(0, "n1")]});
    std::fs::write(&seed, list.to_string())?;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ballast-apiserver-double"))
        .arg("--seed-file")
        .arg(&seed)
        .args(["--identity", "bench"])
        .arg("--kubeconfig-dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let (mut url, mut kubeconfig) = (String::new(), String::new());
    stdout.read_line(&mut url)?;
    stdout.read_line(&mut kubeconfig)?;
    let kubeconfig = kubeconfig
        .trim()
        .strip_prefix("kubeconfig ")
        .context("kubeconfig line")?
        .to_string();
    let result = (|| -> Result<()> {
        assert!(url.trim().starts_with("http://127.0.0.1:"), "{url}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let text = std::fs::read_to_string(&kubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(
                kube::config::Kubeconfig::from_yaml(&text)?,
                &Default::default(),
            )
            .await?;
            let pods: Api<Pod> = Api::namespaced(Client::try_from(config)?, "shop");
            let listed = pods.list(&ListParams::default()).await?;
            assert_eq!(listed.items.len(), 1);
            Ok(())
        })
    })();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(i32::try_from(child.id())?, libc::SIGTERM) };
    let status = child.wait()?;
    result?;
    assert!(status.success(), "{status}");
    Ok(())
}

#[tokio::test]
async fn the_request_log_gives_every_request_the_attributes_rbac_judges() -> Result<()> {
    let server = ApiServer::start(quick())?;
    server.apply(fixtures::node("n1", "4", "8Gi"))?;
    let client = strict_client(&server, "agent").await?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.list(&ListParams::default().limit(500)).await?;
    let all_pods: Api<Pod> = Api::all(client.clone());
    let _watch = all_pods
        .watch(&WatchParams::default().fields("spec.nodeName=n1"), "0")
        .await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "ballast");
    assert!(leases.get_opt("ballast-leader").await?.is_none());
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "ballast");
    let created = maps
        .create(&PostParams::default(), &config_map("ballast-state"))
        .await?;
    maps.replace("ballast-state", &PostParams::default(), &created)
        .await?;
    nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await?;
    // Refused by a fault, dropped, and from someone without a token: logged all the same.
    server
        .faults()
        .fail_next(Scope::all().and_resource("pods/eviction"), 1, 429)?;
    let _ = Api::<Pod>::namespaced(client.clone(), "shop")
        .evict("web-1", &EvictParams::default())
        .await;
    server.faults().drop_next(Scope::identity("agent"), 1);
    let _ = maps.delete("ballast-state", &Default::default()).await;
    let anonymous = format!("{}/api/v1/namespaces/shop/pods", server.url());
    let status = tokio::task::spawn_blocking(move || match ureq::get(&anonymous).call() {
        Ok(answer) => Ok(answer.status().as_u16()),
        Err(ureq::Error::StatusCode(code)) => Ok(code),
        Err(error) => Err(error),
    })
    .await??;
    assert_eq!(status, 401);

    // identity verb group resource namespace name status ("-": none).
    let log = server.request_log();
    let seen: Vec<String> = log
        .iter()
        .map(|r| {
            let i = &r.info;
            format!(
                "{} {} {:?} {} {} {} {}",
                r.identity,
                i.verb,
                i.group,
                i.rbac_resource(),
                i.namespace.as_deref().unwrap_or("-"),
                i.name.as_deref().unwrap_or("-"),
                r.status
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            r#"agent list "" nodes - - 200"#,
            r#"agent watch "" pods - - 200"#,
            r#"agent get "coordination.k8s.io" leases ballast ballast-leader 404"#,
            r#"agent create "" configmaps ballast - 201"#,
            r#"agent update "" configmaps ballast ballast-state 200"#,
            r#"agent patch "" nodes - n1 200"#,
            r#"agent create "" pods/eviction shop web-1 429"#,
            r#"agent delete "" configmaps ballast ballast-state 0"#,
            r#" list "" pods shop - 401"#,
        ]
    );
    assert!(log.windows(2).all(|w| w[0].at <= w[1].at));
    // The write log is the non-GET part of it.
    let writes: Vec<u16> = server.write_log().iter().map(|w| w.status).collect();
    assert_eq!(writes, [201, 200, 200, 429, 0]);
    Ok(())
}

#[tokio::test]
async fn stateful_sets_are_defaulted_validated_and_listed_as_the_apiserver_does() -> Result<()> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let server = ApiServer::start(quick())?;
    let db = Workload::stateful_set("shop", "db");
    let cache = Workload::stateful_set("edge", "cache");
    // Seeded without a policy, created by a client with one.
    server.apply(db.stateful_set_object(3, None))?;
    let client = strict_client(&server, "operator").await?;
    let edge: Api<StatefulSet> = Api::namespaced(client.clone(), "edge");
    let created: StatefulSet =
        serde_json::from_value(cache.stateful_set_object(2, Some("Parallel")))?;
    let created = edge.create(&PostParams::default(), &created).await?;
    let spec = created.spec;
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    assert_eq!(spec.revision_history_limit, Some(10));
    let strategy = spec.update_strategy.context("updateStrategy")?;
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(strategy.rolling_update.and_then(|r| r.partition), Some(0));
    let status = created.status.context("status")?;
    assert_eq!((status.replicas, status.available_replicas), (0, Some(0)));

    let all: Api<StatefulSet> = Api::all(client.clone());
    let first = all.list(&ListParams::default().limit(1)).await?;
    assert_eq!(first.items.len(), 1);
    let token = first.metadata.continue_.clone().context("a second page")?;
    let second = all
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await?;
    let listed: Vec<(String, Option<String>)> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.spec.pod_management_policy.clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("cache".to_string(), Some("Parallel".to_string())),
            ("db".to_string(), Some("OrderedReady".to_string())),
        ]
    );

    let mut wrong: StatefulSet = serde_json::from_value(
        Workload::stateful_set("edge", "odd").stateful_set_object(1, Some("Sequential")),
    )?;
    wrong.metadata.uid = None;
    let refused = api_status(edge.create(&PostParams::default(), &wrong).await)?;
    assert_eq!(refused.code, 422);
    assert!(
        refused
            .message
            .contains("spec.podManagementPolicy: Unsupported value: \"Sequential\""),
        "{}",
        refused.message
    );
    Ok(())
}
