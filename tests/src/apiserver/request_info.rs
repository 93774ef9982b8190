//! What an authorizer sees of a request: the attributes the real apiserver derives from the
//! method, path and query before RBAC judges it (k8s.io/apiserver `RequestInfoFactory`), for any
//! path, served by the double or not. RBAC rules name these verbs and resources, so a test can
//! hold the request log against a Role.
//!
//! The derivation, as the apiserver's:
//! - `/api/v1/...` and `/apis/GROUP/VERSION/...` are resource requests; anything else
//!   (`/version`, `/healthz`) is a non-resource request whose verb is the lowercase method;
//! - the legacy `/api/v1/watch/...` prefix makes the verb `watch`;
//! - `namespaces/NS/REST...` puts the request in namespace NS (`namespaces/NS` alone is the
//!   Namespace object itself, in its own namespace, as the apiserver has it);
//! - REST is `RESOURCE[/NAME[/SUBRESOURCE]]`;
//! - the method gives the verb: POST create, GET and HEAD get, PUT update, PATCH patch, DELETE
//!   delete; without a name, get becomes list (watch with `watch=true`) and delete becomes
//!   deletecollection; a list or watch with the field selector `metadata.name=N` is about N.

use std::collections::BTreeMap;

use serde::Serialize;

/// The authorization attributes of one request.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RequestInfo {
    /// `/api/...` or `/apis/...`; false for `/version`, `/healthz` and the like.
    pub resource_request: bool,
    /// get, list, watch, create, update, patch, delete, deletecollection; for a non-resource
    /// request the lowercase HTTP method.
    pub verb: String,
    /// "" for the core group.
    pub group: String,
    pub version: String,
    /// The resource's plural (`pods`), "" for a non-resource request.
    pub resource: String,
    /// `eviction`, `status`, ... or "".
    pub subresource: String,
    /// `None`: cluster scope (a cluster-scoped resource, or a namespaced one across every
    /// namespace).
    pub namespace: Option<String>,
    /// The object's name, when the request names one.
    pub name: Option<String>,
    /// The URL path.
    pub path: String,
}

impl RequestInfo {
    /// The attributes of `method path?query` (the query undecoded, as in the URI).
    pub fn of(method: &str, path: &str, query: Option<&str>) -> Self {
        let mut info = RequestInfo {
            verb: method.to_ascii_lowercase(),
            path: path.to_string(),
            ..Self::default()
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, mut rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return info,
        };
        info.resource_request = true;
        info.group = group.to_string();
        info.version = version.to_string();
        info.verb = match method.to_ascii_uppercase().as_str() {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
        let legacy_watch = rest.first() == Some(&"watch");
        if legacy_watch {
            rest = &rest[1..];
            info.verb = "watch".to_string();
        }
        if let ["namespaces", namespace, more @ ..] = rest {
            info.namespace = Some(namespace.to_string());
            if !more.is_empty() {
                rest = more;
            }
        }
        if let [resource, more @ ..] = rest {
            info.resource = resource.to_string();
            if let [name, more @ ..] = more {
                info.name = Some(name.to_string());
                if let [subresource, ..] = more {
                    info.subresource = subresource.to_string();
                }
            }
        }
        if info.name.is_none() {
            let query = parse_query(query.unwrap_or(""));
            match info.verb.as_str() {
                "get" => {
                    let watch = query
                        .get("watch")
                        .is_some_and(|v| matches!(v.as_str(), "true" | "1"));
                    info.verb = if watch { "watch" } else { "list" }.to_string();
                }
                "delete" => info.verb = "deletecollection".to_string(),
                _ => {}
            }
            if matches!(info.verb.as_str(), "list" | "watch") {
                info.name = query
                    .get("fieldSelector")
                    .and_then(|selector| exact_name(selector));
            }
        }
        info
    }

    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn rbac_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// `key=value&...`, percent-decoded (`+` is a space, as in forms).
fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The name a field selector requires exactly (`metadata.name=N` or `==N`), if it does.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (field, value) = term.split_once("==").or_else(|| term.split_once('='))?;
        (field.trim() == "metadata.name" && !value.is_empty()).then(|| value.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request (method, URI) and its attributes: verb, group, `resource[/subresource]`,
    /// namespace, name; `-` for no namespace (cluster scope) or no name.
    type Case = (&'static str, &'static str, [&'static str; 5]);

    fn check(cases: &[Case]) {
        for (method, uri, expected) in cases {
            let (path, query) = match uri.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (*uri, None),
            };
            let i = RequestInfo::of(method, path, query);
            assert!(i.resource_request, "{uri}");
            let resource = i.rbac_resource();
            let seen = [
                i.verb.as_str(),
                i.group.as_str(),
                resource.as_str(),
                i.namespace.as_deref().unwrap_or("-"),
                i.name.as_deref().unwrap_or("-"),
            ];
            assert_eq!(&seen, expected, "{method} {uri}");
        }
    }

    #[test]
    fn reads_of_collections_are_lists_or_watches_and_of_objects_gets() {
        check(&[
            (
                "GET",
                "/api/v1/pods?limit=500",
                ["list", "", "pods", "-", "-"],
            ),
            (
                "GET",
                "/api/v1/pods?fieldSelector=spec.nodeName%3Dn0&watch=true&resourceVersion=7",
                ["watch", "", "pods", "-", "-"],
            ),
            (
                "GET",
                "/api/v1/nodes?watch=false",
                ["list", "", "nodes", "-", "-"],
            ),
            ("GET", "/api/v1/nodes/n0", ["get", "", "nodes", "-", "n0"]),
            (
                "HEAD",
                "/api/v1/namespaces/shop/pods/web-1",
                ["get", "", "pods", "shop", "web-1"],
            ),
            (
                "GET",
                "/apis/policy/v1/namespaces/shop/poddisruptionbudgets?watch=1",
                ["watch", "policy", "poddisruptionbudgets", "shop", "-"],
            ),
            // The legacy watch prefix.
            (
                "GET",
                "/api/v1/watch/namespaces/shop/pods",
                ["watch", "", "pods", "shop", "-"],
            ),
        ]);
    }

    #[test]
    fn a_field_selector_on_the_name_makes_a_list_about_that_object() {
        check(&[
            (
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/ballast/leases?fieldSelector=metadata.name%3Dballast-leader&watch=true",
                ["watch", "coordination.k8s.io", "leases", "ballast", "ballast-leader"],
            ),
            (
                "GET",
                "/api/v1/pods?fieldSelector=metadata.name!%3Dx",
                ["list", "", "pods", "-", "-"],
            ),
            (
                "GET",
                "/api/v1/pods?fieldSelector=spec.nodeName%3Dn0,metadata.name%3D%3Dweb-1",
                ["list", "", "pods", "-", "web-1"],
            ),
        ]);
    }

    #[test]
    fn writes_take_their_verb_from_the_method() {
        check(&[
            (
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/ballast/leases",
                ["create", "coordination.k8s.io", "leases", "ballast", "-"],
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ballast/leases/ballast-leader",
                [
                    "update",
                    "coordination.k8s.io",
                    "leases",
                    "ballast",
                    "ballast-leader",
                ],
            ),
            (
                "PATCH",
                "/api/v1/nodes/n0",
                ["patch", "", "nodes", "-", "n0"],
            ),
            (
                "POST",
                "/api/v1/namespaces/shop/pods/web-1/eviction",
                ["create", "", "pods/eviction", "shop", "web-1"],
            ),
            (
                "PUT",
                "/api/v1/nodes/n0/status",
                ["update", "", "nodes/status", "-", "n0"],
            ),
            (
                "DELETE",
                "/api/v1/namespaces/shop/pods/web-1",
                ["delete", "", "pods", "shop", "web-1"],
            ),
            (
                "DELETE",
                "/api/v1/namespaces/shop/pods",
                ["deletecollection", "", "pods", "shop", "-"],
            ),
            (
                "POST",
                "/apis/events.k8s.io/v1/namespaces/default/events",
                ["create", "events.k8s.io", "events", "default", "-"],
            ),
        ]);
    }

    #[test]
    fn namespaces_and_other_paths_are_read_as_the_apiserver_reads_them() {
        check(&[
            // The Namespace object is in its own namespace.
            (
                "GET",
                "/api/v1/namespaces/shop",
                ["get", "", "namespaces", "shop", "shop"],
            ),
            (
                "GET",
                "/api/v1/namespaces",
                ["list", "", "namespaces", "-", "-"],
            ),
            // Resources the double does not serve are classified all the same.
            (
                "GET",
                "/apis/apps/v1/namespaces/shop/statefulsets/db",
                ["get", "apps", "statefulsets", "shop", "db"],
            ),
        ]);
        let version = RequestInfo::of("GET", "/version", None);
        assert!(!version.resource_request);
        assert_eq!(
            (version.verb.as_str(), version.resource.as_str()),
            ("get", "")
        );
        let eviction = RequestInfo::of("POST", "/api/v1/namespaces/shop/pods/web-1/eviction", None);
        assert_eq!(
            (
                eviction.resource.as_str(),
                eviction.subresource.as_str(),
                eviction.version.as_str()
            ),
            ("pods", "eviction", "v1")
        );
    }
}
