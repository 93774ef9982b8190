//! Failures as the apiserver reports them: an HTTP status code with a `metav1.Status` body
//! (`reason`, `message`, `details`), worded like the real server so clients that match on them
//! behave as they would in a cluster.

use axum::{
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};

use super::resource::Kind;

/// A request the double refuses, with the Status it answers.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    /// `metav1.StatusReason`; empty where the real server leaves it empty.
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn object_details(kind: Kind, name: &str) -> Value {
        let mut details = json!({"name": name, "kind": kind.plural()});
        if !kind.group().is_empty() {
            details["group"] = json!(kind.group());
        }
        details
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified()),
        )
        .with_details(Self::object_details(kind, name))
    }

    /// A URL the double does not serve.
    pub fn no_route(what: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({what} is not served by the API test double)"),
        )
    }

    pub fn already_exists(kind: Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified()),
        )
        .with_details(Self::object_details(kind, name))
    }

    /// A stale `metadata.resourceVersion` (or another failed precondition) on a write.
    pub fn conflict(kind: Kind, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                kind.qualified()
            ),
        )
        .with_details(Self::object_details(kind, name))
    }

    pub fn stale(kind: Kind, name: &str) -> Self {
        Self::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// A field that fails validation (422).
    pub fn invalid(kind: Kind, name: &str, field: &str, detail: &str) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {field}: {detail}", kind.kind()),
        )
        .with_details(Self::object_details(kind, name))
    }

    /// A resourceVersion (watch) or continue token (list) older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn forbidden(kind: Kind, name: &str, why: &str) -> Self {
        Self::new(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", kind.qualified()),
        )
        .with_details(Self::object_details(kind, name))
    }

    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{what} is not supported by the API test double"),
        )
    }

    pub fn not_acceptable() -> Self {
        Self::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json (the API test double serves JSON only)",
        )
    }

    pub fn unsupported_media_type(accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    pub fn too_large_resource_version(asked: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {asked}, current: {current}"),
        )
    }

    /// The eviction refused because a PDB allows no disruption (the real server's wording).
    pub fn disruption_budget(pdb: &str, desired: i64, current: i64) -> Self {
        Self::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        )
        .with_details(json!({"causes": [{
            "reason": "DisruptionBudget",
            "message": format!("The disruption budget {pdb} needs {desired} healthy pods and has {current} currently"),
        }]}))
    }

    /// What the eviction subresource answers for a pod covered by more than one PDB: a 500
    /// Status without a reason, as the real server does.
    pub fn several_budgets() -> Self {
        Self::new(
            500,
            "",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        )
    }

    /// A failure injected by the fault plan, worded like the failure it imitates.
    pub fn injected(code: u16) -> Self {
        let (reason, message) = match code {
            409 => ("Conflict", "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected fault)"),
            429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later (injected fault)"),
            500 => ("InternalError", "Internal error occurred: injected fault"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request (injected fault)"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted (injected fault)"),
            _ => ("", "injected fault"),
        };
        Self::new(code, reason, message)
    }

    /// The `metav1.Status` object.
    pub fn status(&self) -> Value {
        failure_status(self.code, self.reason, &self.message, self.details.clone())
    }
}

fn failure_status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
    });
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

/// The Status a successful action without an object of its own answers (an eviction).
pub fn success(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// A JSON response with the given status code.
pub fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_as_the_real_server_words_them() {
        let conflict = ApiError::stale(Kind::Lease, "ballast-leader").status();
        assert_eq!(conflict["reason"], "Conflict");
        assert_eq!(conflict["code"], 409);
        assert_eq!(
            conflict["message"],
            "Operation cannot be fulfilled on leases.coordination.k8s.io \"ballast-leader\": the object has been modified; please apply your changes to the latest version and try again"
        );
        assert_eq!(conflict["details"]["group"], "coordination.k8s.io");
        let missing = ApiError::not_found(Kind::Pod, "web-1").status();
        assert_eq!(missing["message"], "pods \"web-1\" not found");
        assert!(missing["details"].get("group").is_none());
        let several = ApiError::several_budgets().status();
        assert!(several.get("reason").is_none());
        assert_eq!(several["code"], 500);
    }
}
