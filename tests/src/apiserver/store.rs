//! The object store: JSON objects keyed by (resource, namespace, name), one global
//! resourceVersion counter, a bounded history of changes (what watches replay and what old list
//! snapshots are rebuilt from), and the subscribers that hear every change as it is committed.
//!
//! Writes follow the apiserver's rules: the server owns `uid`, `creationTimestamp` and
//! `resourceVersion`; a write carrying a stale `resourceVersion` or `uid` is a 409 Conflict;
//! creating an existing name is a 409 AlreadyExists; a write that changes nothing commits
//! nothing (no new resourceVersion, no watch event); writes through the main resource leave the
//! `status` of resources with a status subresource alone. `metadata.generation` is not kept.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use ballast::sim::rng::SplitMix64;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{
    resource::{self, Kind},
    status::ApiError,
};

/// (namespace, name); the namespace is empty for cluster-scoped objects. Ordered as the real
/// server lists: by namespace, then name.
pub type Key = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn wire(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    pub key: Key,
    pub event: EventType,
    /// The object before the change; `None` for a creation.
    pub previous: Option<Value>,
    /// The object after it; for a deletion, its last state carrying the deletion's
    /// resourceVersion (what a DELETED watch event shows).
    pub object: Value,
}

/// Who writes, which decides what happens to `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// An API client through the main resource: `status` of pods, nodes and PDBs is reset on
    /// create and kept from the stored object on update, as the status subresource makes it.
    Client,
    /// Seeding and the controller stand-ins: the object is stored as given.
    Internal,
}

/// The checks a delete may carry (`DeleteOptions.preconditions`).
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Preconditions {
    /// From a `DeleteOptions` object (`Null` when the request had none).
    pub fn of(options: &Value) -> Self {
        let field = |name: &str| {
            options
                .pointer(&format!("/preconditions/{name}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Self {
            uid: field("uid"),
            resource_version: field("resourceVersion"),
        }
    }
}

struct Subscriber {
    kinds: Vec<Kind>,
    tx: mpsc::UnboundedSender<Arc<Change>>,
}

/// The store; the server keeps it behind one mutex so that every write, its history entry and
/// its delivery to subscribers happen as one step.
pub struct Store {
    objects: BTreeMap<Kind, BTreeMap<Key, Value>>,
    revision: u64,
    history: VecDeque<Arc<Change>>,
    capacity: usize,
    /// Highest resourceVersion whose change is no longer in the history (0: none forgotten).
    compacted: u64,
    subscribers: Vec<Subscriber>,
    rng: SplitMix64,
    /// Controller-owned pods deleted whose replacement the scheduler stand-in has not created
    /// yet; the disruption controller counts them as expected pods (the workload's scale).
    pub awaiting_replacement: Vec<Value>,
}

/// Characters the apiserver uses for `generateName` suffixes (no vowels, no look-alikes).
const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The size limit of a ConfigMap's data, as the real server enforces it.
const CONFIGMAP_LIMIT: usize = 1024 * 1024;

fn valid_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The apiserver's defaults for a StatefulSet's spec (`SetDefaults_StatefulSet`), and the one
/// value it validates that Ballast reads: `podManagementPolicy`.
fn default_stateful_set(object: &mut Value, name: &str) -> Result<(), ApiError> {
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    let spec = &mut object["spec"];
    let unset = |v: &Value, field: &str| v.get(field).is_none_or(Value::is_null);
    let policy = spec
        .get("podManagementPolicy")
        .cloned()
        .unwrap_or(Value::Null);
    match policy.as_str() {
        _ if policy.is_null() => spec["podManagementPolicy"] = json!("OrderedReady"),
        Some("") => spec["podManagementPolicy"] = json!("OrderedReady"),
        Some("OrderedReady" | "Parallel") => {}
        _ => {
            return Err(ApiError::invalid(
                Kind::StatefulSet,
                name,
                "spec.podManagementPolicy",
                &format!(
                    "Unsupported value: {policy}: supported values: \"OrderedReady\", \"Parallel\""
                ),
            ))
        }
    }
    if unset(spec, "replicas") {
        spec["replicas"] = json!(1);
    }
    if unset(spec, "revisionHistoryLimit") {
        spec["revisionHistoryLimit"] = json!(10);
    }
    if spec
        .pointer("/updateStrategy/type")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        spec["updateStrategy"]["type"] = json!("RollingUpdate");
        if unset(&spec["updateStrategy"], "rollingUpdate") {
            spec["updateStrategy"]["rollingUpdate"] = json!({});
        }
    }
    if spec["updateStrategy"]["type"] == "RollingUpdate"
        && spec["updateStrategy"]["rollingUpdate"].is_object()
        && unset(&spec["updateStrategy"]["rollingUpdate"], "partition")
    {
        spec["updateStrategy"]["rollingUpdate"]["partition"] = json!(0);
    }
    if unset(spec, "persistentVolumeClaimRetentionPolicy") {
        spec["persistentVolumeClaimRetentionPolicy"] =
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
    }
    Ok(())
}

impl Store {
    pub fn new(history: usize, seed: u64) -> Self {
        Self {
            objects: Kind::ALL
                .into_iter()
                .map(|k| (k, BTreeMap::new()))
                .collect(),
            revision: 0,
            history: VecDeque::new(),
            capacity: history.max(1),
            compacted: 0,
            subscribers: Vec::new(),
            rng: SplitMix64::new(seed),
            awaiting_replacement: Vec::new(),
        }
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The highest resourceVersion that can no longer be watched from or listed at.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn objects(&self, kind: Kind) -> &BTreeMap<Key, Value> {
        &self.objects[&kind]
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects[&kind].get(&(namespace.to_string(), name.to_string()))
    }

    /// Every change after `rv`, oldest first; `None` when some of them have been forgotten.
    pub fn changes_after(&self, rv: u64) -> Option<impl Iterator<Item = &Arc<Change>>> {
        if rv < self.compacted {
            return None;
        }
        let skip = usize::try_from(rv - self.compacted).unwrap_or(usize::MAX);
        Some(self.history.iter().skip(skip))
    }

    /// A receiver of every change to `kinds` committed from now on.
    pub fn subscribe(&mut self, kinds: &[Kind]) -> mpsc::UnboundedReceiver<Arc<Change>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(Subscriber {
            kinds: kinds.to_vec(),
            tx,
        });
        rx
    }

    /// A fresh `metadata.uid` (UUID v4 layout, from the seeded generator).
    pub fn new_uid(&mut self) -> String {
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    /// A name from `generateName`: the prefix and five random characters, as the server does.
    pub fn generate_name(&mut self, prefix: &str) -> String {
        let suffix: String = (0..5)
            .map(|_| char::from(NAME_ALPHABET[self.rng.below(NAME_ALPHABET.len())]))
            .collect();
        format!("{prefix}{suffix}")
    }

    fn commit(
        &mut self,
        kind: Kind,
        key: Key,
        event: EventType,
        previous: Option<Value>,
        mut object: Value,
    ) -> Value {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = json!(self.revision.to_string());
        let objects = self.objects.get_mut(&kind).expect("every kind has a map");
        if event == EventType::Deleted {
            objects.remove(&key);
            if kind == Kind::Pod && resource::replaced_when_deleted(&object) {
                // Recorded with the deletion itself, so the disruption controller never sees
                // the workload's scale drop between the deletion and the replacement.
                self.awaiting_replacement.push(object.clone());
            }
        } else {
            objects.insert(key.clone(), object.clone());
        }
        let change = Arc::new(Change {
            rv: self.revision,
            kind,
            key,
            event,
            previous,
            object: object.clone(),
        });
        self.subscribers
            .retain(|s| !s.kinds.contains(&kind) || s.tx.send(Arc::clone(&change)).is_ok());
        self.history.push_back(change);
        while self.history.len() > self.capacity {
            if let Some(forgotten) = self.history.pop_front() {
                self.compacted = forgotten.rv;
            }
        }
        object
    }

    /// Sets `apiVersion`, `kind` and the namespace of a new or replacing object, refusing one
    /// that names another type or namespace than the request.
    fn typed(kind: Kind, namespace: &str, mut object: Value) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request(format!(
                "the body of the request is not a {} object",
                kind.kind()
            )));
        }
        for (field, expected) in [("apiVersion", kind.api_version()), ("kind", kind.kind())] {
            match object.get(field).and_then(Value::as_str) {
                None | Some("") => object[field] = json!(expected),
                Some(given) if given == expected => {}
                Some(given) => {
                    return Err(ApiError::bad_request(format!(
                        "the {field} in the data ({given}) does not match the expected {field} ({expected})"
                    )))
                }
            }
        }
        if !object.get("metadata").is_some_and(Value::is_object) {
            object["metadata"] = json!({});
        }
        let metadata = &mut object["metadata"];
        if kind.namespaced() {
            match metadata.get("namespace").and_then(Value::as_str) {
                None | Some("") => metadata["namespace"] = json!(namespace),
                Some(given) if given == namespace => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
            }
        } else if let Some(metadata) = metadata.as_object_mut() {
            metadata.remove("namespace");
        }
        Ok(object)
    }

    /// Resource-specific rules a stored object must satisfy, applied to every write.
    fn validate(kind: Kind, object: &mut Value) -> Result<(), ApiError> {
        let name = resource::name(object).to_string();
        match kind {
            Kind::Lease => {
                for field in ["acquireTime", "renewTime"] {
                    let Some(value) = object.get("spec").and_then(|s| s.get(field)).cloned() else {
                        continue;
                    };
                    if value.is_null() {
                        continue;
                    }
                    let normalised = value.as_str().and_then(resource::micro_time).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Lease in version \"v1\" cannot be handled as a Lease: spec.{field}: parsing time {value} as \"2006-01-02T15:04:05.000000Z07:00\": cannot parse"
                        ))
                    })?;
                    object["spec"][field] = json!(normalised);
                }
                let spec = object.get("spec").cloned().unwrap_or(Value::Null);
                for (field, minimum) in [("leaseDurationSeconds", 1), ("leaseTransitions", 0)] {
                    match spec.get(field) {
                        None | Some(Value::Null) => {}
                        Some(value) => match value.as_i64() {
                            Some(n) if n >= minimum => {}
                            Some(n) => {
                                let rule = if minimum == 0 { "greater than or equal to 0" } else { "greater than 0" };
                                return Err(ApiError::invalid(kind, &name, &format!("spec.{field}"), &format!("Invalid value: {n}: must be {rule}")));
                            }
                            None => {
                                return Err(ApiError::bad_request(format!(
                                    "Lease in version \"v1\" cannot be handled as a Lease: spec.{field}: expected an integer, got {value}"
                                )))
                            }
                        },
                    }
                }
                if spec
                    .get("holderIdentity")
                    .is_some_and(|h| !h.is_null() && !h.is_string())
                {
                    return Err(ApiError::bad_request(
                        "Lease in version \"v1\" cannot be handled as a Lease: spec.holderIdentity: expected a string",
                    ));
                }
            }
            Kind::StatefulSet => default_stateful_set(object, &name)?,
            Kind::ConfigMap => {
                let mut size = 0;
                for field in ["data", "binaryData"] {
                    for (key, value) in object
                        .get(field)
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let text = value.as_str().ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: {field}.{key}: expected a string"
                            ))
                        })?;
                        size += key.len() + text.len();
                    }
                }
                if size > CONFIGMAP_LIMIT {
                    return Err(ApiError::invalid(
                        kind,
                        &name,
                        "[]",
                        &format!("Too long: must have at most {CONFIGMAP_LIMIT} bytes"),
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The status a client-created object starts with.
    fn initial_status(kind: Kind) -> Option<Value> {
        match kind {
            Kind::Pod => Some(json!({"phase": "Pending"})),
            Kind::PodDisruptionBudget => Some(json!({
                "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0
            })),
            Kind::Node => Some(json!({})),
            Kind::StatefulSet => Some(json!({"replicas": 0, "availableReplicas": 0})),
            _ => None,
        }
    }

    /// POST: creates `object` in `namespace`.
    pub fn create(
        &mut self,
        kind: Kind,
        namespace: &str,
        object: Value,
        writer: Writer,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut object = Self::typed(kind, namespace, object)?;
        if writer == Writer::Client && resource::resource_version(&object).is_some() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if resource::name(&object).is_empty() {
            let prefix = object
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            object["metadata"]["name"] = json!(self.generate_name(&prefix));
        }
        let name = resource::name(&object).to_string();
        if !valid_subdomain(&name) {
            return Err(ApiError::invalid(
                kind,
                &name,
                "metadata.name",
                &format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
            ));
        }
        let key = (resource::namespace(&object).to_string(), name.clone());
        if self.objects[&kind].contains_key(&key) {
            return Err(ApiError::already_exists(kind, &name));
        }
        Self::validate(kind, &mut object)?;
        if writer == Writer::Client && kind.has_status() {
            object["status"] = Self::initial_status(kind).unwrap_or(Value::Null);
        }
        let keep_uid = writer == Writer::Internal
            && object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .is_some_and(|u| !u.is_empty());
        if !keep_uid {
            object["metadata"]["uid"] = json!(self.new_uid());
        }
        if writer == Writer::Client || object.pointer("/metadata/creationTimestamp").is_none() {
            object["metadata"]["creationTimestamp"] = json!(resource::now_time());
        }
        if dry_run {
            return Ok(object);
        }
        Ok(self.commit(kind, key, EventType::Added, None, object))
    }

    /// PUT: replaces the object at `namespace`/`name` with `object`.
    pub fn update(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        object: Value,
        writer: Writer,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut object = Self::typed(kind, namespace, object)?;
        match resource::name(&object) {
            "" => object["metadata"]["name"] = json!(name),
            given if given == name => {}
            given => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )))
            }
        }
        let key = (namespace.to_string(), name.to_string());
        let old = self.objects[&kind]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        if let Some(rv) = resource::resource_version(&object) {
            if Some(rv) != resource::resource_version(&old) {
                return Err(ApiError::stale(kind, name));
            }
        }
        let old_uid = old.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
        match object.pointer("/metadata/uid").and_then(Value::as_str) {
            None | Some("") => {}
            Some(uid) if Some(uid) == old_uid.as_str() => {}
            Some(uid) => {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old_uid.as_str().unwrap_or("")
                    ),
                ))
            }
        }
        let metadata = &mut object["metadata"];
        metadata["uid"] = old_uid;
        metadata["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
        metadata["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if writer == Writer::Client && kind.has_status() {
            match old.get("status") {
                Some(status) => object["status"] = status.clone(),
                None => {
                    if let Some(fields) = object.as_object_mut() {
                        fields.remove("status");
                    }
                }
            }
        }
        Self::validate(kind, &mut object)?;
        if object == old || dry_run {
            return Ok(object);
        }
        Ok(self.commit(kind, key, EventType::Modified, Some(old), object))
    }

    /// PATCH with `application/merge-patch+json`: a `metadata.resourceVersion` in the patch is
    /// a precondition.
    pub fn merge_patch(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        let old = self
            .get(kind, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        if let Some(rv) = patch
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            if Some(rv) != resource::resource_version(&old) {
                return Err(ApiError::stale(kind, name));
            }
        }
        let mut merged = old;
        json_patch::merge(&mut merged, patch);
        self.update(kind, namespace, name, merged, Writer::Client, dry_run)
    }

    /// DELETE: removes the object at once (no graceful termination, no finalizers).
    pub fn delete(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        preconditions: &Preconditions,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = (namespace.to_string(), name.to_string());
        let old = self.objects[&kind]
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        let checks = [
            (
                "UID",
                preconditions.uid.as_deref(),
                old.pointer("/metadata/uid"),
            ),
            (
                "ResourceVersion",
                preconditions.resource_version.as_deref(),
                old.pointer("/metadata/resourceVersion"),
            ),
        ];
        for (what, wanted, actual) in checks {
            let actual = actual.and_then(Value::as_str).unwrap_or("");
            if let Some(wanted) = wanted.filter(|w| *w != actual) {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!("Precondition failed: {what} in precondition: {wanted}, {what} in object meta: {actual}"),
                ));
            }
        }
        if dry_run {
            return Ok(old);
        }
        Ok(self.commit(kind, key, EventType::Deleted, Some(old.clone()), old))
    }

    /// Seeding and controller writes: creates the object or replaces it whatever its
    /// resourceVersion, keeping the stored uid and creationTimestamp, storing `status` as given.
    pub fn put(&mut self, object: Value) -> Result<Value, ApiError> {
        let kind = Kind::of(&object).ok_or_else(|| {
            ApiError::bad_request(format!(
                "apiVersion {} kind {} is not served by the API test double",
                object.get("apiVersion").unwrap_or(&Value::Null),
                object.get("kind").unwrap_or(&Value::Null)
            ))
        })?;
        let namespace = if kind.namespaced() {
            match resource::namespace(&object) {
                "" => "default".to_string(),
                ns => ns.to_string(),
            }
        } else {
            String::new()
        };
        let name = resource::name(&object).to_string();
        let mut object = object;
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        if !name.is_empty() && self.get(kind, &namespace, &name).is_some() {
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("uid");
                metadata.remove("creationTimestamp");
            }
            self.update(kind, &namespace, &name, object, Writer::Internal, false)
        } else {
            self.create(kind, &namespace, object, Writer::Internal, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str) -> Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
               "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
    }

    #[test]
    fn server_owns_identity_fields_and_one_counter_orders_everything() {
        let mut store = Store::new(100, 1);
        let a = store
            .create(Kind::Lease, "ns", lease("a"), Writer::Client, false)
            .expect("created");
        let b = store
            .create(Kind::Lease, "ns", lease("b"), Writer::Client, false)
            .expect("created");
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        assert_eq!(b["metadata"]["resourceVersion"], "2");
        assert_ne!(a["metadata"]["uid"], b["metadata"]["uid"]);
        assert_eq!(a["metadata"]["namespace"], "ns");
        let err = store
            .create(Kind::Lease, "ns", lease("a"), Writer::Client, false)
            .expect_err("refused");
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    }

    #[test]
    fn stale_writes_conflict_and_no_op_writes_commit_nothing() {
        let mut store = Store::new(100, 1);
        let v1 = store
            .create(Kind::Lease, "ns", lease("l"), Writer::Client, false)
            .expect("created");
        let mut renewed = v1.clone();
        renewed["spec"]["holderIdentity"] = json!("b");
        let v2 = store
            .update(
                Kind::Lease,
                "ns",
                "l",
                renewed.clone(),
                Writer::Client,
                false,
            )
            .expect("updated");
        assert_eq!(v2["metadata"]["resourceVersion"], "2");
        let err = store
            .update(Kind::Lease, "ns", "l", renewed, Writer::Client, false)
            .expect_err("refused");
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        let same = store
            .update(Kind::Lease, "ns", "l", v2.clone(), Writer::Client, false)
            .expect("updated");
        assert_eq!(same, v2);
        assert_eq!(store.revision(), 2);
        let stale_patch =
            json!({"metadata": {"resourceVersion": "1"}, "spec": {"holderIdentity": "c"}});
        assert_eq!(
            store
                .merge_patch(Kind::Lease, "ns", "l", &stale_patch, false)
                .expect_err("refused")
                .code,
            409
        );
        let patch = json!({"metadata": {"resourceVersion": "2"}, "spec": {"holderIdentity": null}});
        let v3 = store
            .merge_patch(Kind::Lease, "ns", "l", &patch, false)
            .expect("patched");
        assert!(v3["spec"].get("holderIdentity").is_none());
        assert_eq!(v3["spec"]["leaseDurationSeconds"], 15);
    }

    #[test]
    fn history_is_bounded_and_remembers_what_it_forgot() {
        let mut store = Store::new(3, 1);
        for i in 0..5 {
            store
                .create(
                    Kind::Lease,
                    "ns",
                    lease(&format!("l{i}")),
                    Writer::Client,
                    false,
                )
                .expect("created");
        }
        assert_eq!(store.compacted(), 2);
        assert!(store.changes_after(1).is_none());
        let replay: Vec<u64> = store
            .changes_after(2)
            .expect("in history")
            .map(|c| c.rv)
            .collect();
        assert_eq!(replay, vec![3, 4, 5]);
        assert_eq!(store.changes_after(5).expect("in history").count(), 0);
    }

    #[test]
    fn status_belongs_to_its_subresource_for_clients() {
        let mut store = Store::new(100, 1);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        store.put(pod.clone()).expect("valid object");
        let mut edited = pod;
        edited["status"]["phase"] = json!("Failed");
        edited["metadata"]["labels"] = json!({"x": "y"});
        let stored = store
            .update(Kind::Pod, "ns", "p", edited, Writer::Client, false)
            .expect("updated");
        assert_eq!(stored["status"]["phase"], "Running");
        assert_eq!(stored["metadata"]["labels"]["x"], "y");
    }

    #[test]
    fn config_maps_hold_strings_up_to_a_mebibyte() {
        let mut store = Store::new(100, 1);
        let config_map = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state"}, "data": data});
        let big = "x".repeat(CONFIGMAP_LIMIT);
        let err = store
            .create(
                Kind::ConfigMap,
                "ns",
                config_map(json!({"state": big})),
                Writer::Client,
                false,
            )
            .expect_err("refused");
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        let err = store
            .create(
                Kind::ConfigMap,
                "ns",
                config_map(json!({"n": 1})),
                Writer::Client,
                false,
            )
            .expect_err("refused");
        assert_eq!(err.code, 400);
        assert!(store
            .create(
                Kind::ConfigMap,
                "ns",
                config_map(json!({"state": "{}"})),
                Writer::Client,
                false
            )
            .is_ok());
    }

    #[test]
    fn lease_times_are_micro_times_and_durations_positive() {
        let mut store = Store::new(100, 1);
        let mut l = lease("l");
        l["spec"]["renewTime"] = json!("2025-01-01T00:00:00.5Z");
        let stored = store
            .create(Kind::Lease, "ns", l.clone(), Writer::Client, false)
            .expect("created");
        assert_eq!(stored["spec"]["renewTime"], "2025-01-01T00:00:00.500000Z");
        l["metadata"]["name"] = json!("m");
        l["spec"]["renewTime"] = json!("soon");
        assert_eq!(
            store
                .create(Kind::Lease, "ns", l.clone(), Writer::Client, false)
                .expect_err("refused")
                .code,
            400
        );
        l["spec"]["renewTime"] = Value::Null;
        l["spec"]["leaseDurationSeconds"] = json!(0);
        assert_eq!(
            store
                .create(Kind::Lease, "ns", l, Writer::Client, false)
                .expect_err("refused")
                .code,
            422
        );
    }
}
