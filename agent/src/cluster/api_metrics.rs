//! `ballast_api_requests_total{verb,resource,code}`: a tower layer on the kube client that counts
//! every request the agent makes to the API server, by Kubernetes verb (get, list, watch, create,
//! update, patch, delete), resource (with its subresource: `pods/eviction`) and HTTP status
//! (`error` when no response came back: connection refused, reset, timed out).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use tower::{Layer, Service};

/// `(verb, resource)` of a request to the Kubernetes API, from its method, path and query.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    // namespaces/<ns>/<resource>/... ; `namespaces/<ns>` alone is the Namespace itself.
    let rest = match rest {
        ["namespaces", _namespace, resource, tail @ ..] => {
            let mut r = vec![*resource];
            r.extend_from_slice(tail);
            r
        }
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => ("unknown".to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, subresource, ..] => (format!("{resource}/{subresource}"), true),
    };
    let watching = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// Adds the counting to a service stack (`ClientBuilder::with_layer`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CountRequests;

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner }
    }
}

#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics::counter!(
                "ballast_api_requests_total",
                "verb" => verb,
                "resource" => resource,
                "code" => code
            )
            .increment(1);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        let (path, query) = uri
            .split_once('?')
            .map_or((uri, None), |(p, q)| (p, Some(q)));
        classify(&method, path, query)
    }

    #[test]
    fn verbs_and_resources() {
        let cases = [
            (Method::GET, "/api/v1/nodes?limit=500", ("list", "nodes")),
            (
                Method::GET,
                "/api/v1/nodes?watch=true&resourceVersion=12&allowWatchBookmarks=true&timeoutSeconds=290",
                ("watch", "nodes"),
            ),
            (Method::GET, "/api/v1/nodes/node-a", ("get", "nodes")),
            (Method::PATCH, "/api/v1/nodes/node-a", ("patch", "nodes")),
            (
                Method::GET,
                "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&watch=1",
                ("watch", "pods"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/shop/pods/web-1/eviction?",
                ("create", "pods/eviction"),
            ),
            (
                Method::GET,
                "/apis/coordination.k8s.io/v1/namespaces/ballast/leases/ballast-leader",
                ("get", "leases"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/ballast/leases/ballast-leader",
                ("update", "leases"),
            ),
            (
                Method::POST,
                "/apis/coordination.k8s.io/v1/namespaces/ballast/leases?",
                ("create", "leases"),
            ),
            (
                Method::GET,
                "/apis/policy/v1/poddisruptionbudgets?limit=500",
                ("list", "poddisruptionbudgets"),
            ),
            (Method::POST, "/api/v1/namespaces/shop/events", ("create", "events")),
            (
                Method::DELETE,
                "/api/v1/namespaces/shop/pods/web-1",
                ("delete", "pods"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/shop/pods",
                ("deletecollection", "pods"),
            ),
            (Method::GET, "/api/v1/namespaces/shop", ("get", "namespaces")),
            (Method::GET, "/api/v1/namespaces", ("list", "namespaces")),
            (Method::GET, "/version", ("list", "unknown")),
            (Method::PATCH, "/api/v1/nodes/node-a/status", ("patch", "nodes/status")),
        ];
        for (method, uri, (verb, resource)) in cases {
            let want = (verb, resource.to_owned());
            assert_eq!(c(method.clone(), uri), want, "{method} {uri}");
        }
        assert_eq!(c(Method::GET, "/api/v1/pods?watch=false").0, "list");
    }
}
