//! Voluntary disruption: the `pods/eviction` subresource (policy/v1) and a stand-in for the
//! disruption controller that keeps PodDisruptionBudget status current.
//!
//! The eviction follows the real registry: a pod that is Pending or terminal is deleted
//! without looking at budgets; more than one matching budget is a 500; an unready pod is
//! deleted without spending the budget while the budget is met; otherwise a budget with no
//! disruption left is a 429 TooManyRequests, and one with some left is decremented (the pod
//! recorded in `disruptedPods`) before the pod is deleted. The check, the decrement and the
//! deletion happen under one lock, so concurrent evictions cannot overspend a budget.
//!
//! The controller recomputes a budget whenever a pod it may select or its spec changes:
//! `expectedPods` (the matching pods, or for percentages and `maxUnavailable` the workloads'
//! scale: their live pods plus those awaiting replacement), `desiredHealthy`,
//! `currentHealthy` (Ready, not being deleted, not recently evicted) and
//! `disruptionsAllowed`, with the `DisruptionAllowed` condition.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{
    resource::{self, Kind},
    selector::LabelSelector,
    status::{self, ApiError},
    store::{Change, Key, Preconditions, Store},
    Shared,
};

/// Entries of `disruptedPods` the controller forgets after this long (the real timeout).
const DISRUPTION_TIMEOUT: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// How long the controller gathers changes before recomputing the budgets they touch.
const COALESCE: std::time::Duration = std::time::Duration::from_millis(5);

/// More pending evictions than this in one budget are refused (as the real server does).
const MAX_DISRUPTED_PODS: usize = 2000;

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The budget's selector; `None` for a missing or invalid one (it selects nothing).
fn selector(pdb: &Value) -> Option<LabelSelector> {
    let selector = pdb.pointer("/spec/selector").filter(|s| !s.is_null())?;
    LabelSelector::from_object(selector).ok()
}

fn can_ignore_budgets(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed" | "Pending")
    ) || pod.pointer("/metadata/deletionTimestamp").is_some()
}

/// POST `pods/NAME/eviction`: the Status answered on success (201).
pub fn evict(
    store: &mut Store,
    namespace: &str,
    name: &str,
    eviction: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    // The type defaults from the URL when absent: kube's `Api::evict` sends neither field.
    let api_version = eviction.get("apiVersion").and_then(Value::as_str);
    let kind = eviction.get("kind").and_then(Value::as_str);
    if !matches!(kind, None | Some("Eviction"))
        || !matches!(api_version, None | Some("policy/v1" | "policy/v1beta1"))
    {
        return Err(ApiError::bad_request(
            "not a Eviction object: expected apiVersion policy/v1, kind Eviction",
        ));
    }
    if resource::name(eviction) != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let preconditions = Preconditions::of(eviction.get("deleteOptions").unwrap_or(&Value::Null));
    let pod = store
        .get(Kind::Pod, namespace, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
    if !can_ignore_budgets(&pod) {
        let budgets: Vec<Value> = store
            .objects(Kind::PodDisruptionBudget)
            .iter()
            .filter(|((ns, _), pdb)| {
                ns == namespace && selector(pdb).is_some_and(|s| !s.is_empty() && s.matches(&pod))
            })
            .map(|(_, pdb)| pdb.clone())
            .collect();
        if budgets.len() > 1 {
            return Err(ApiError::several_budgets());
        }
        if let Some(pdb) = budgets.into_iter().next() {
            let (current, desired) = (
                int(&pdb, "/status/currentHealthy"),
                int(&pdb, "/status/desiredHealthy"),
            );
            let unready_but_met = !resource::pod_ready(&pod) && current >= desired && desired > 0;
            if !unready_but_met {
                spend_budget(store, pdb, name, dry_run)?;
            }
        }
    }
    store.delete(Kind::Pod, namespace, name, &preconditions, dry_run)?;
    Ok(status::success(201))
}

/// The real `checkAndDecrement`.
fn spend_budget(
    store: &mut Store,
    mut pdb: Value,
    pod: &str,
    dry_run: bool,
) -> Result<(), ApiError> {
    let pdb_name = resource::name(&pdb).to_string();
    let allowed = int(&pdb, "/status/disruptionsAllowed");
    let disrupted = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, Map::len);
    if allowed < 0 {
        return Err(ApiError::forbidden(
            Kind::PodDisruptionBudget,
            &pdb_name,
            "pdb disruptions allowed is negative",
        ));
    }
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            Kind::PodDisruptionBudget,
            &pdb_name,
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(ApiError::disruption_budget(
            &pdb_name,
            int(&pdb, "/status/desiredHealthy"),
            int(&pdb, "/status/currentHealthy"),
        ));
    }
    if dry_run {
        return Ok(());
    }
    let status = &mut pdb["status"];
    status["disruptionsAllowed"] = json!(allowed - 1);
    if !status.get("disruptedPods").is_some_and(Value::is_object) {
        status["disruptedPods"] = json!({});
    }
    status["disruptedPods"][pod] = json!(resource::now_time());
    if allowed == 1 {
        set_condition(status, false);
    }
    store.put(pdb)?;
    Ok(())
}

/// Sets the `DisruptionAllowed` condition, moving its transition time only when it flips.
fn set_condition(status: &mut Value, allowed: bool) {
    let (state, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let transition = conditions
        .iter()
        .find(|c| c["type"] == "DisruptionAllowed" && c["status"] == state)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(resource::now_time()));
    conditions.retain(|c| c["type"] != "DisruptionAllowed");
    conditions.push(json!({
        "type": "DisruptionAllowed", "status": state, "reason": reason,
        "message": "", "lastTransitionTime": transition,
    }));
    status["conditions"] = json!(conditions);
}

/// `minAvailable`/`maxUnavailable` against `total`: an int, or a percentage rounded up.
fn scaled(value: &Value, total: i64) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let percent: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((percent * total + 99) / 100)
        }
        _ => None,
    }
}

/// The status the controller computes for `pdb` from the pods it selects.
fn computed_status(store: &Store, pdb: &Value) -> Option<Value> {
    let namespace = resource::namespace(pdb);
    let spec = pdb.get("spec")?;
    // policy/v1: an empty selector selects every pod of the namespace, a missing one none.
    let selector = selector(pdb);
    let selects = |pod: &Value| selector.as_ref().is_some_and(|s| s.matches(pod));
    let pods: Vec<&Value> = store
        .objects(Kind::Pod)
        .range((namespace.to_string(), String::new())..)
        .take_while(|((ns, _), _)| ns == namespace)
        .map(|(_, pod)| pod)
        .filter(|pod| selects(pod))
        .collect();
    let scale = || {
        let live = pods
            .iter()
            .filter(|p| resource::controller_owner(p).is_some())
            .count();
        let awaiting = store
            .awaiting_replacement
            .iter()
            .filter(|p| resource::namespace(p) == namespace && selects(p))
            .count();
        (live + awaiting) as i64
    };
    let present = |field: &str| spec.get(field).filter(|v| !v.is_null());
    let (expected, desired) = match (present("maxUnavailable"), present("minAvailable")) {
        (Some(max), _) => {
            let expected = scale();
            (expected, (expected - scaled(max, expected)?).max(0))
        }
        (None, Some(min @ Value::String(_))) => {
            let expected = scale();
            (expected, scaled(min, expected)?)
        }
        (None, Some(min)) => (pods.len() as i64, min.as_i64()?),
        (None, None) => (pods.len() as i64, 1),
    };
    let now = jiff::Timestamp::now();
    let previous = pdb
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object);
    let mut disrupted = Map::new();
    for pod in &pods {
        let name = resource::name(pod);
        let since = previous.and_then(|d| d.get(name));
        let fresh = since
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t + DISRUPTION_TIMEOUT > now);
        if fresh && pod.pointer("/metadata/deletionTimestamp").is_none() {
            disrupted.insert(name.to_string(), since.cloned().unwrap_or(Value::Null));
        }
    }
    let healthy = pods
        .iter()
        .filter(|pod| {
            resource::pod_ready(pod)
                && pod.pointer("/metadata/deletionTimestamp").is_none()
                && !disrupted.contains_key(resource::name(pod))
        })
        .count() as i64;
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let mut status = pdb
        .get("status")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    status["expectedPods"] = json!(expected);
    status["desiredHealthy"] = json!(desired);
    status["currentHealthy"] = json!(healthy);
    status["disruptionsAllowed"] = json!(allowed);
    if disrupted.is_empty() {
        if let Some(fields) = status.as_object_mut() {
            fields.remove("disruptedPods");
        }
    } else {
        status["disruptedPods"] = Value::Object(disrupted);
    }
    set_condition(&mut status, allowed > 0);
    Some(status)
}

/// Recomputes one budget, writing its status only when it changed.
fn reconcile(store: &mut Store, key: &Key) {
    let Some(pdb) = store
        .get(Kind::PodDisruptionBudget, &key.0, &key.1)
        .cloned()
    else {
        return;
    };
    let Some(status) = computed_status(store, &pdb) else {
        tracing::warn!(pdb = %key.1, namespace = %key.0, "PDB spec not understood; status left as is");
        return;
    };
    if pdb.get("status") != Some(&status) {
        let mut updated = pdb;
        updated["status"] = status;
        if let Err(error) = store.put(updated) {
            tracing::warn!(pdb = %key.1, error = %error.message, "could not write PDB status");
        }
    }
}

/// The budgets a change may affect; `selectors` holds every budget's parsed selector.
fn affected(
    selectors: &BTreeMap<Key, Option<LabelSelector>>,
    change: &Change,
    dirty: &mut BTreeSet<Key>,
) {
    match change.kind {
        Kind::PodDisruptionBudget => {
            // Status-only changes (this controller's own writes, evictions) change nothing the
            // status is computed from.
            let spec_changed =
                change.previous.as_ref().map(|p| p.get("spec")) != Some(change.object.get("spec"));
            if spec_changed {
                dirty.insert(change.key.clone());
            }
        }
        Kind::Pod => {
            let namespace = &change.key.0;
            let budgets = selectors
                .range((namespace.clone(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace);
            for (key, selector) in budgets {
                let Some(selector) = selector else {
                    continue;
                };
                let selects = |pod: &Value| selector.matches(pod);
                if selects(&change.object) || change.previous.as_ref().is_some_and(selects) {
                    dirty.insert(key.clone());
                }
            }
        }
        _ => {}
    }
}

/// What the controller listens to.
pub const WATCHED: [Kind; 2] = [Kind::Pod, Kind::PodDisruptionBudget];

/// The controller loop: recomputes the budgets each batch of `changes` (a subscription to
/// [`WATCHED`], made before the server accepts its first write) affects.
pub async fn run(shared: Arc<Shared>, mut changes: mpsc::UnboundedReceiver<Arc<Change>>) {
    while let Some(first) = changes.recv().await {
        // Like the real controller's work queue, a burst of changes (seeding thousands of
        // pods) is folded into one recomputation per budget.
        tokio::time::sleep(COALESCE).await;
        let mut batch = vec![first];
        while let Ok(change) = changes.try_recv() {
            batch.push(change);
        }
        let mut store = shared.store();
        let selectors: BTreeMap<Key, Option<LabelSelector>> = store
            .objects(Kind::PodDisruptionBudget)
            .iter()
            .map(|(key, pdb)| (key.clone(), selector(pdb)))
            .collect();
        let mut dirty = BTreeSet::new();
        for change in &batch {
            affected(&selectors, change, &mut dirty);
        }
        for key in &dirty {
            reconcile(&mut store, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::store::Writer;

    fn pod(name: &str, ready: bool) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}]},
               "spec": {"nodeName": "n1"},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn pdb(name: &str, budget: Value) -> Value {
        let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}});
        spec.as_object_mut()
            .expect("an object")
            .extend(budget.as_object().expect("an object").clone());
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": name, "namespace": "ns"}, "spec": spec})
    }

    fn eviction(name: &str) -> Value {
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "ns"}})
    }

    fn settle(store: &mut Store) {
        let keys: Vec<Key> = store
            .objects(Kind::PodDisruptionBudget)
            .keys()
            .cloned()
            .collect();
        for key in &keys {
            reconcile(store, key);
        }
    }

    #[test]
    fn budgets_count_ready_pods_against_their_minimum() {
        let mut store = Store::new(100, 1);
        for (name, ready) in [("a", true), ("b", true), ("c", false)] {
            store.put(pod(name, ready)).expect("valid object");
        }
        store
            .put(pdb("min2", json!({"minAvailable": 1})))
            .expect("valid object");
        settle(&mut store);
        let status = &store
            .get(Kind::PodDisruptionBudget, "ns", "min2")
            .expect("stored")["status"];
        assert_eq!(status["expectedPods"], 3);
        assert_eq!(status["currentHealthy"], 2);
        assert_eq!(status["desiredHealthy"], 1);
        assert_eq!(status["disruptionsAllowed"], 1);
        assert_eq!(status["conditions"][0]["reason"], "SufficientPods");
        let rv = store.revision();
        settle(&mut store);
        assert_eq!(store.revision(), rv, "an unchanged status is not rewritten");
    }

    #[test]
    fn percentages_and_max_unavailable_use_the_workload_scale() {
        let mut store = Store::new(100, 1);
        for name in ["a", "b", "c", "d"] {
            store.put(pod(name, true)).expect("valid object");
        }
        store
            .delete(Kind::Pod, "ns", "d", &Preconditions::default(), false)
            .expect("deleted");
        store
            .put(pdb("pct", json!({"minAvailable": "50%"})))
            .expect("valid object");
        settle(&mut store);
        let status = &store
            .get(Kind::PodDisruptionBudget, "ns", "pct")
            .expect("stored")["status"];
        // Four replicas (one awaiting its replacement): half of them must stay healthy.
        assert_eq!(
            (
                status["expectedPods"].as_i64(),
                status["desiredHealthy"].as_i64()
            ),
            (Some(4), Some(2))
        );
        assert_eq!(status["disruptionsAllowed"], 1);
        store
            .delete(
                Kind::PodDisruptionBudget,
                "ns",
                "pct",
                &Preconditions::default(),
                false,
            )
            .expect("deleted");
        store
            .put(pdb("max", json!({"maxUnavailable": 1})))
            .expect("valid object");
        settle(&mut store);
        let status = &store
            .get(Kind::PodDisruptionBudget, "ns", "max")
            .expect("stored")["status"];
        assert_eq!(
            (
                status["desiredHealthy"].as_i64(),
                status["disruptionsAllowed"].as_i64()
            ),
            (Some(3), Some(0))
        );
    }

    #[test]
    fn evictions_spend_the_budget_then_are_refused() {
        let mut store = Store::new(100, 1);
        for name in ["a", "b", "c"] {
            store.put(pod(name, true)).expect("valid object");
        }
        store
            .put(pdb("web", json!({"minAvailable": 2})))
            .expect("valid object");
        settle(&mut store);
        assert_eq!(
            evict(&mut store, "ns", "a", &eviction("a"), false).expect("evicted")["code"],
            201
        );
        assert!(store.get(Kind::Pod, "ns", "a").is_none());
        let status = &store
            .get(Kind::PodDisruptionBudget, "ns", "web")
            .expect("stored")["status"];
        assert_eq!(status["disruptionsAllowed"], 0);
        assert!(status["disruptedPods"].get("a").is_some());
        settle(&mut store);
        let refused = evict(&mut store, "ns", "b", &eviction("b"), false).expect_err("refused");
        assert_eq!((refused.code, refused.reason), (429, "TooManyRequests"));
        assert_eq!(
            refused.status()["details"]["causes"][0]["message"],
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        assert!(store.get(Kind::Pod, "ns", "b").is_some());
        assert_eq!(
            evict(&mut store, "ns", "a", &eviction("a"), false)
                .expect_err("refused")
                .code,
            404
        );
        assert_eq!(
            evict(&mut store, "ns", "b", &eviction("c"), false)
                .expect_err("refused")
                .code,
            400
        );
    }

    #[test]
    fn two_budgets_are_a_server_error_and_pending_pods_ignore_budgets() {
        let mut store = Store::new(100, 1);
        store.put(pod("a", true)).expect("valid object");
        let mut pending = pod("p", false);
        pending["status"]["phase"] = json!("Pending");
        store.put(pending).expect("valid object");
        store
            .put(pdb("one", json!({"minAvailable": 5})))
            .expect("valid object");
        store
            .put(pdb("two", json!({"maxUnavailable": 0})))
            .expect("valid object");
        settle(&mut store);
        let refused = evict(&mut store, "ns", "a", &eviction("a"), false).expect_err("refused");
        assert_eq!(refused.code, 500);
        assert!(evict(&mut store, "ns", "p", &eviction("p"), false).is_ok());
        let dry = evict(&mut store, "ns", "a", &eviction("a"), true);
        assert_eq!(dry.expect_err("refused").code, 500);
    }

    #[test]
    fn a_client_created_budget_starts_empty() {
        let mut store = Store::new(100, 1);
        let created = store
            .create(
                Kind::PodDisruptionBudget,
                "ns",
                pdb("x", json!({"minAvailable": 1})),
                Writer::Client,
                false,
            )
            .expect("created");
        assert_eq!(created["status"]["disruptionsAllowed"], 0);
    }
}
