//! Lists: label/field/namespace filtering, `limit` + `continue` pagination in which every page
//! shows the collection as it was when the first page was served (the snapshot is rebuilt
//! from the change history, as etcd serves an old revision), and 410 Expired once the history
//! no longer reaches that far back.

use std::{collections::BTreeMap, iter::Peekable, ops::Bound};

use serde_json::{json, Value};

use super::{
    resource::Kind,
    selector::{FieldSelector, LabelSelector},
    status::ApiError,
    store::{Key, Store},
};

/// Which objects a list or watch is about.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `None`: every namespace (or a cluster-scoped resource).
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, key: &Key, object: &Value) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == key.0)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    fn has_selectors(&self) -> bool {
        self.labels != LabelSelector::default() || self.fields != FieldSelector::default()
    }
}

/// The list parameters besides the filter.
#[derive(Clone, Debug, Default)]
pub struct Paging {
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub version_match: Option<String>,
}

/// Where a page starts: the snapshot's resourceVersion and the last key already served.
#[derive(Debug, PartialEq)]
struct Cursor {
    rv: u64,
    after: Key,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Cursor {
    /// An opaque token (hex of a small JSON document), as opaque to clients as the real one.
    fn encode(&self) -> String {
        hex(
            json!({"rv": self.rv, "ns": self.after.0, "name": self.after.1})
                .to_string()
                .as_bytes(),
        )
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::bad_request(format!("continue key is not valid: {token}"));
        let document: Value =
            serde_json::from_slice(&unhex(token).ok_or_else(invalid)?).map_err(|_| invalid())?;
        let field = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(Self {
            rv: document
                .get("rv")
                .and_then(Value::as_u64)
                .ok_or_else(invalid)?,
            after: (
                field("ns").ok_or_else(invalid)?,
                field("name").ok_or_else(invalid)?,
            ),
        })
    }
}

fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{text}\"")))
}

/// Which revision a list reads, from `resourceVersion` and `resourceVersionMatch`.
fn snapshot_revision(store: &Store, paging: &Paging) -> Result<u64, ApiError> {
    let current = store.revision();
    let rv = paging
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty());
    match (rv, paging.version_match.as_deref().filter(|m| !m.is_empty())) {
        (None, Some(_)) => Err(ApiError::bad_request(
            "resourceVersionMatch is forbidden unless resourceVersion is provided",
        )),
        (None | Some("0"), _) => Ok(current),
        (Some(rv), Some("Exact")) => {
            let rv = parse_rv(rv)?;
            if rv > current {
                Err(ApiError::too_large_resource_version(rv, current))
            } else {
                Ok(rv)
            }
        }
        (Some(rv), None | Some("NotOlderThan")) => {
            let rv = parse_rv(rv)?;
            if rv > current {
                Err(ApiError::too_large_resource_version(rv, current))
            } else {
                Ok(current)
            }
        }
        (Some(_), Some(other)) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// For each object of `kind` changed after `rv`, its state at `rv` (`None`: it did not exist).
fn rewind(store: &Store, kind: Kind, rv: u64) -> Option<BTreeMap<Key, Option<Value>>> {
    let mut states = BTreeMap::new();
    for change in store.changes_after(rv)?.filter(|c| c.kind == kind) {
        states
            .entry(change.key.clone())
            .or_insert_with(|| change.previous.clone());
    }
    Some(states)
}

/// Merges the current objects with the rewound states (which win) in key order.
struct Snapshot<'a, C, R>
where
    C: Iterator<Item = (&'a Key, &'a Value)>,
    R: Iterator<Item = (&'a Key, &'a Option<Value>)>,
{
    current: Peekable<C>,
    rewound: Peekable<R>,
}

impl<'a, C, R> Iterator for Snapshot<'a, C, R>
where
    C: Iterator<Item = (&'a Key, &'a Value)>,
    R: Iterator<Item = (&'a Key, &'a Option<Value>)>,
{
    type Item = (&'a Key, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let current = self.current.peek().map(|(key, _)| *key);
            let rewound = self.rewound.peek().map(|(key, _)| *key);
            let take_rewound = match (current, rewound) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(c), Some(r)) => {
                    if c == r {
                        // The rewound state replaces the current one.
                        self.current.next();
                    }
                    r <= c
                }
            };
            if take_rewound {
                if let Some((key, Some(object))) = self.rewound.next() {
                    return Some((key, object));
                }
            } else {
                return self.current.next();
            }
        }
    }
}

/// One page of a list, as the `XList` object the server answers.
pub fn list(
    store: &Store,
    kind: Kind,
    filter: &Filter,
    paging: &Paging,
) -> Result<Value, ApiError> {
    let cursor = match paging.continue_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => {
            if paging
                .resource_version
                .as_deref()
                .is_some_and(|rv| !rv.is_empty())
            {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            Some(Cursor::decode(token)?)
        }
        None => None,
    };
    let rv = match &cursor {
        Some(cursor) => cursor.rv,
        None => snapshot_revision(store, paging)?,
    };
    let rewound = if rv == store.revision() {
        BTreeMap::new()
    } else {
        rewind(store, kind, rv).ok_or_else(|| match cursor {
            Some(_) => ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ),
            None => ApiError::expired(format!("too old resource version: {rv} ({})", store.compacted())),
        })?
    };
    let lower = match (&cursor, &filter.namespace) {
        (Some(cursor), _) => Bound::Excluded(cursor.after.clone()),
        (None, Some(ns)) => Bound::Included((ns.clone(), String::new())),
        (None, None) => Bound::Unbounded,
    };
    let in_namespace = |key: &&Key| filter.namespace.as_ref().is_none_or(|ns| key.0 >= *ns);
    let mut matching = Snapshot {
        current: store
            .objects(kind)
            .range((lower.clone(), Bound::Unbounded))
            .peekable(),
        rewound: rewound.range((lower, Bound::Unbounded)).peekable(),
    }
    .skip_while(|(key, _)| !in_namespace(key))
    .take_while(|(key, _)| filter.namespace.as_ref().is_none_or(|ns| key.0 == *ns))
    .filter(|(key, object)| filter.matches(key, object));

    let limit = paging.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut last = None;
    for (key, object) in matching.by_ref() {
        let mut item = object.clone();
        if let Some(fields) = item.as_object_mut() {
            // Items of a typed list carry no apiVersion/kind on the wire.
            fields.remove("apiVersion");
            fields.remove("kind");
        }
        items.push(item);
        last = Some(key.clone());
        if items.len() == limit {
            break;
        }
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if items.len() == limit {
        let remaining = matching.count();
        if remaining > 0 {
            let after = last.expect("a full page has a last key");
            metadata["continue"] = json!(Cursor { rv, after }.encode());
            if !filter.has_selectors() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
    }
    Ok(json!({
        "kind": format!("{}List", kind.kind()),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::store::Writer;

    fn config_map(name: &str, ns: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}})
    }

    fn names(list: &Value) -> Vec<String> {
        list["items"]
            .as_array()
            .expect("an array")
            .iter()
            .map(|i| {
                i["metadata"]["name"]
                    .as_str()
                    .expect("a string")
                    .to_string()
            })
            .collect()
    }

    fn page(store: &Store, limit: usize, token: Option<&str>) -> Result<Value, ApiError> {
        let paging = Paging {
            limit: Some(limit),
            continue_token: token.map(str::to_string),
            ..Paging::default()
        };
        list(store, Kind::ConfigMap, &Filter::default(), &paging)
    }

    /// ConfigMaps `names` in namespace `ns`, created by a client.
    fn create_all(store: &mut Store, names: &[&str]) {
        for name in names {
            store
                .create(
                    Kind::ConfigMap,
                    "ns",
                    config_map(name, "ns"),
                    Writer::Client,
                    false,
                )
                .expect("created");
        }
    }

    #[test]
    fn pages_show_the_collection_as_of_the_first_page() {
        let mut store = Store::new(100, 1);
        create_all(&mut store, &["a", "b", "c", "d"]);
        let first = page(&store, 2, None).expect("page served");
        assert_eq!(names(&first), ["a", "b"]);
        assert_eq!(first["metadata"]["remainingItemCount"], 2);
        assert_eq!(first["metadata"]["resourceVersion"], "4");
        assert!(first["items"][0].get("kind").is_none());
        // Changes after the first page stay out of the later ones.
        store
            .delete(Kind::ConfigMap, "ns", "c", &Default::default(), false)
            .expect("deleted");
        create_all(&mut store, &["bb"]);
        let token = first["metadata"]["continue"].as_str().expect("a string");
        let second = page(&store, 2, Some(token)).expect("page served");
        assert_eq!(names(&second), ["c", "d"]);
        assert!(second["metadata"].get("continue").is_none());
        assert_eq!(second["metadata"]["resourceVersion"], "4");
        let fresh = page(&store, 10, None).expect("page served");
        assert_eq!(names(&fresh), ["a", "b", "bb", "d"]);
    }

    #[test]
    fn an_old_token_expires_and_a_bad_one_is_refused() {
        let mut store = Store::new(2, 1);
        create_all(&mut store, &["a", "b", "c"]);
        let first = page(&store, 1, None).expect("page served");
        let token = first["metadata"]["continue"]
            .as_str()
            .expect("a string")
            .to_string();
        for name in ["x", "y", "z"] {
            store
                .create(
                    Kind::ConfigMap,
                    "ns",
                    config_map(name, "ns"),
                    Writer::Client,
                    false,
                )
                .expect("created");
        }
        assert_eq!(
            page(&store, 1, Some(&token)).expect_err("refused").code,
            410
        );
        assert_eq!(page(&store, 1, Some("zz")).expect_err("refused").code, 400);
    }

    #[test]
    fn namespaces_and_selectors_filter() {
        let mut store = Store::new(100, 1);
        for (name, ns) in [("a", "one"), ("b", "two"), ("c", "two"), ("d", "three")] {
            let mut object = config_map(name, ns);
            object["metadata"]["labels"] = json!({"pick": if name == "c" { "yes" } else { "no" }});
            store
                .create(Kind::ConfigMap, ns, object, Writer::Client, false)
                .expect("created");
        }
        let two = Filter {
            namespace: Some("two".into()),
            ..Filter::default()
        };
        assert_eq!(
            names(&list(&store, Kind::ConfigMap, &two, &Paging::default()).expect("listed")),
            ["b", "c"]
        );
        let picked = Filter {
            labels: LabelSelector::parse("pick=yes").expect("parses"),
            ..Filter::default()
        };
        let paging = Paging {
            limit: Some(1),
            ..Paging::default()
        };
        let result = list(&store, Kind::ConfigMap, &picked, &paging).expect("listed");
        assert_eq!(names(&result), ["c"]);
        assert!(result["metadata"].get("continue").is_none());
    }
}
