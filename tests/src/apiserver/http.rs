//! The REST surface: URL paths to resources, verbs to store operations, query parameters and
//! media types checked as the apiserver checks them (JSON only: a client that asks for
//! protobuf or table/metadata conversions gets 406; patches must be merge patches, else 415).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{header, HeaderMap, Method, Uri},
    response::{IntoResponse, Response},
    Extension, Router,
};
use serde_json::{json, Value};

use super::{
    disruption,
    list::{self, Filter, Paging},
    resource::{self, Kind},
    selector::{FieldSelector, LabelSelector},
    status::{self, json_response, ApiError},
    store::{Preconditions, Writer},
    watch::{self, WatchParams},
    Shared,
};

/// The largest request body accepted (the real server's limit).
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;

/// The watch duration when the client names none (the real server picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What a request path names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Target {
    pub kind: Option<Kind>,
    /// The namespace segment of the path, if any.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    /// `/api/v1/...` and `/apis/GROUP/v1/...` paths; `kind` stays `None` for anything else.
    pub fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return Self::default(),
        };
        let (namespace, rest) = match rest {
            ["namespaces", namespace, rest @ ..] if !rest.is_empty() => {
                (Some(namespace.to_string()), rest)
            }
            _ => (None, rest),
        };
        let (plural, name, subresource) = match rest {
            [plural] => (*plural, None, None),
            [plural, name] => (*plural, Some(name.to_string()), None),
            [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
            _ => return Self::default(),
        };
        let Some(kind) = Kind::from_url(group, version, plural) else {
            return Self::default();
        };
        if kind.namespaced() != namespace.is_some() && name.is_some() {
            // `/api/v1/pods/NAME` or `/api/v1/namespaces/NS/nodes/NAME`: no such path.
            return Self::default();
        }
        Self {
            kind: Some(kind),
            namespace,
            name,
            subresource,
        }
    }

    /// The resource as fault scopes name it: `pods`, `pods/eviction`, "" for no resource.
    pub fn resource(&self) -> String {
        match (self.kind, &self.subresource) {
            (None, _) => String::new(),
            (Some(kind), None) => kind.plural().to_string(),
            (Some(kind), Some(sub)) => format!("{}/{sub}", kind.plural()),
        }
    }

    /// The kind the write log shows: the object's, or `Eviction` for an eviction.
    pub fn logged_kind(&self) -> String {
        match (self.kind, self.subresource.as_deref()) {
            (Some(_), Some("eviction")) => "Eviction".to_string(),
            (Some(kind), _) => kind.kind().to_string(),
            (None, _) => String::new(),
        }
    }
}

/// The client identity the connection layer authenticated.
#[derive(Clone, Debug)]
pub struct Identity(pub String);

/// The name a write acted on, for the write log (creates learn it only from the body).
#[derive(Clone, Debug)]
pub struct WrittenName(pub String);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// Whether the `Accept` header allows a JSON answer.
fn accepts_json(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        // `as=Table`, `as=PartialObjectMetadata`...: conversions the double does not do.
        let converted = parts.any(|p| p.starts_with("as="));
        !converted && matches!(media, "application/json" | "application/*" | "*/*" | "")
    })
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn flag(query: &BTreeMap<String, String>, name: &str) -> bool {
    query
        .get(name)
        .is_some_and(|v| matches!(v.as_str(), "true" | "1"))
}

fn dry_run(query: &BTreeMap<String, String>) -> Result<bool, ApiError> {
    match query.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

fn filter(
    kind: Kind,
    namespace: Option<String>,
    query: &BTreeMap<String, String>,
) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(kind, query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(Filter {
        namespace,
        labels,
        fields,
    })
}

fn with_name(mut response: Response, name: &str) -> Response {
    response
        .extensions_mut()
        .insert(WrittenName(name.to_string()));
    response
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    identity: Option<Extension<Identity>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let identity = identity.map(|Extension(Identity(i))| i);
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::too_large(BODY_LIMIT).into_response();
    };
    match serve(&shared, identity, &method, &uri, &headers, &body) {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn serve(
    shared: &Arc<Shared>,
    identity: Option<String>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if uri.path() == "/version" && method == Method::GET {
        return Ok(json_response(
            200,
            &json!({
                "major": "1", "minor": "34", "gitVersion": "v1.34.0-ballast-api-test-double",
                "platform": "linux/amd64"
            }),
        ));
    }
    if !accepts_json(headers) {
        return Err(ApiError::not_acceptable());
    }
    let target = Target::parse(uri.path());
    let Some(kind) = target.kind else {
        return Err(ApiError::no_route(uri.path()));
    };
    let query: BTreeMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
    let namespace = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone();
    match (
        method.clone(),
        name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (Method::GET, None, None) => {
            let filter = filter(kind, target.namespace.clone(), &query)?;
            if flag(&query, "watch") {
                let timeout = match query.get("timeoutSeconds") {
                    None => DEFAULT_WATCH_TIMEOUT,
                    Some(s) => Duration::from_secs(s.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds \"{s}\""))
                    })?),
                };
                let params = WatchParams {
                    resource_version: query.get("resourceVersion").cloned(),
                    timeout,
                    bookmarks: flag(&query, "allowWatchBookmarks"),
                    send_initial_events: flag(&query, "sendInitialEvents"),
                };
                return watch::watch(shared, kind, filter, &params, identity);
            }
            let limit = match query.get("limit") {
                None => None,
                Some(l) => Some(
                    l.parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit \"{l}\"")))?,
                ),
            };
            let paging = Paging {
                limit,
                continue_token: query.get("continue").cloned(),
                resource_version: query.get("resourceVersion").cloned(),
                version_match: query.get("resourceVersionMatch").cloned(),
            };
            let list = list::list(&shared.store(), kind, &filter, &paging)?;
            Ok(json_response(200, &list))
        }
        (Method::GET, Some(name), None) => {
            let store = shared.store();
            let object = store
                .get(kind, &namespace, name)
                .ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(json_response(200, object))
        }
        (Method::POST, None, None) => {
            require_media(headers, "application/json")?;
            let created = shared.store().create(
                kind,
                &namespace,
                json_body(body)?,
                Writer::Client,
                dry_run(&query)?,
            )?;
            Ok(with_name(
                json_response(201, &created),
                resource::name(&created),
            ))
        }
        (Method::PUT, Some(name), None) => {
            require_media(headers, "application/json")?;
            let updated = shared.store().update(
                kind,
                &namespace,
                name,
                json_body(body)?,
                Writer::Client,
                dry_run(&query)?,
            )?;
            Ok(json_response(200, &updated))
        }
        (Method::PATCH, Some(name), None) => {
            require_media(headers, "application/merge-patch+json")?;
            let patched = shared.store().merge_patch(
                kind,
                &namespace,
                name,
                &json_body(body)?,
                dry_run(&query)?,
            )?;
            Ok(json_response(200, &patched))
        }
        (Method::DELETE, Some(name), None) => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                json_body(body)?
            };
            let preconditions = Preconditions::of(&options);
            let dry_run = dry_run(&query)? || options_dry_run(&options)?;
            let deleted = shared
                .store()
                .delete(kind, &namespace, name, &preconditions, dry_run)?;
            Ok(json_response(200, &deleted_answer(kind, deleted)))
        }
        (Method::POST, Some(name), Some("eviction")) if kind == Kind::Pod => {
            require_media(headers, "application/json")?;
            let eviction = json_body(body)?;
            let dry_run = dry_run(&query)?
                || options_dry_run(eviction.get("deleteOptions").unwrap_or(&Value::Null))?;
            let answer =
                disruption::evict(&mut shared.store(), &namespace, name, &eviction, dry_run)?;
            Ok(json_response(201, &answer))
        }
        (_, Some(_), Some(sub)) => Err(ApiError::no_route(&format!("{}/{sub}", kind.plural()))),
        (method, _, _) => Err(ApiError::method_not_allowed(&format!(
            "{method} on {}",
            uri.path()
        ))),
    }
}

fn require_media(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    if media_type(headers) == expected {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(expected))
    }
}

/// `DeleteOptions.dryRun` (`["All"]` or absent).
pub fn options_dry_run(options: &Value) -> Result<bool, ApiError> {
    match options.get("dryRun").and_then(Value::as_array) {
        None => Ok(false),
        Some(values) if values.is_empty() => Ok(false),
        Some(values) if values.iter().all(|v| v == "All") => Ok(true),
        Some(values) => Err(ApiError::bad_request(format!(
            "deleteOptions.dryRun: Unsupported value: {values:?}: supported values: \"All\""
        ))),
    }
}

/// A delete answers the deleted object for pods, and a Success Status naming it for the other
/// resources (as their real registries do).
fn deleted_answer(kind: Kind, deleted: Value) -> Value {
    if kind == Kind::Pod {
        return deleted;
    }
    let mut answer = status::success(200);
    let mut details = json!({
        "name": resource::name(&deleted),
        "kind": kind.plural(),
        "uid": deleted.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    });
    if !kind.group().is_empty() {
        details["group"] = json!(kind.group());
    }
    answer["details"] = details;
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources_as_the_apiserver_lays_them_out() {
        let eviction = Target::parse("/api/v1/namespaces/shop/pods/web-1/eviction");
        assert_eq!(eviction.kind, Some(Kind::Pod));
        assert_eq!(eviction.namespace.as_deref(), Some("shop"));
        assert_eq!(eviction.name.as_deref(), Some("web-1"));
        assert_eq!(eviction.resource(), "pods/eviction");
        assert_eq!(eviction.logged_kind(), "Eviction");
        let lease =
            Target::parse("/apis/coordination.k8s.io/v1/namespaces/ballast/leases/ballast-leader");
        assert_eq!(lease.kind, Some(Kind::Lease));
        let all_pods = Target::parse("/api/v1/pods");
        assert_eq!((all_pods.kind, all_pods.namespace), (Some(Kind::Pod), None));
        assert_eq!(Target::parse("/api/v1/nodes/n1").kind, Some(Kind::Node));
        assert_eq!(Target::parse("/api/v1/pods/web-1").kind, None);
        assert_eq!(Target::parse("/api/v1/namespaces/x/nodes/n1").kind, None);
        assert_eq!(Target::parse("/api/v1/namespaces/x/secrets").kind, None);
        assert_eq!(Target::parse("/healthz").kind, None);
    }

    #[test]
    fn json_is_the_only_media_type_served() {
        let mut headers = HeaderMap::new();
        assert!(accepts_json(&headers));
        headers.insert(
            header::ACCEPT,
            "application/vnd.kubernetes.protobuf, application/json"
                .parse()
                .expect("parses"),
        );
        assert!(accepts_json(&headers));
        headers.insert(
            header::ACCEPT,
            "application/vnd.kubernetes.protobuf"
                .parse()
                .expect("parses"),
        );
        assert!(!accepts_json(&headers));
        headers.insert(
            header::ACCEPT,
            "application/json;as=Table;v=v1;g=meta.k8s.io"
                .parse()
                .expect("parses"),
        );
        assert!(!accepts_json(&headers));
    }
}
