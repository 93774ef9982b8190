//! RBAC as the apiserver's authorizer applies it, for holding a rendered install against what
//! its service account really does: the rules bound to a ServiceAccount (ClusterRoles through
//! ClusterRoleBindings, cluster-wide; Roles and ClusterRoles through RoleBindings, in the
//! binding's namespace), each expanded into single grants (one API group, resource, verb), and
//! the question which grants allow a call (a request's authorization attributes, from the API
//! double's request log).
//!
//! A rule with `resourceNames` allows only calls that name one of them: never a create (the
//! name is not an attribute of a create), nor a list or watch unless its field selector asks
//! for exactly that name, as the real authorizer has it. Wildcards are not expanded (Ballast's
//! rules have none, and a test checks that): `*` only matches the literal `*`.

use std::{collections::BTreeSet, fmt};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::apiserver::RequestInfo;

/// One permission: a verb on a resource of an API group, in a scope, perhaps only for some names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// Where it comes from: `ClusterRole ballast`, `Role ballast-system/ballast`.
    pub role: String,
    /// `None`: every namespace and cluster-scoped resources (a ClusterRoleBinding); else only
    /// that namespace.
    pub namespace: Option<String>,
    pub group: String,
    /// `pods` or `pods/eviction`.
    pub resource: String,
    pub verb: String,
    /// Empty: any name.
    pub names: Vec<String>,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} grants {}", self.role, self.verb)?;
        write!(f, " {}", qualified(&self.group, &self.resource))?;
        if !self.names.is_empty() {
            write!(f, " named {}", self.names.join(", "))?;
        }
        match &self.namespace {
            None => write!(f, " cluster-wide"),
            Some(ns) => write!(f, " in namespace {ns}"),
        }
    }
}

/// `pods`, `leases.coordination.k8s.io`, `pods/eviction`: as `kubectl auth can-i` names them.
fn qualified(group: &str, resource: &str) -> String {
    let (plural, sub) = match resource.split_once('/') {
        Some((plural, sub)) => (plural, format!("/{sub}")),
        None => (resource, String::new()),
    };
    if group.is_empty() {
        format!("{plural}{sub}")
    } else {
        format!("{plural}.{group}{sub}")
    }
}

/// A call as the authorizer judges it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Call {
    pub verb: String,
    pub group: String,
    /// `pods` or `pods/eviction`.
    pub resource: String,
    /// `None`: cluster scope.
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Call {
    /// The call of a resource request; `None` for a non-resource one (`/version`).
    pub fn of(info: &RequestInfo) -> Option<Self> {
        info.resource_request.then(|| Self {
            verb: info.verb.clone(),
            group: info.group.clone(),
            resource: info.rbac_resource(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
        })
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.verb,
            qualified(&self.group, &self.resource)
        )?;
        if let Some(name) = &self.name {
            write!(f, " {name}")?;
        }
        match &self.namespace {
            None => write!(f, " (cluster scope)"),
            Some(ns) => write!(f, " in namespace {ns}"),
        }
    }
}

impl Grant {
    pub fn allows(&self, call: &Call) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| call.namespace.as_ref() == Some(ns))
            && self.group == call.group
            && self.resource == call.resource
            && self.verb == call.verb
            && (self.names.is_empty() || call.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether `binding` binds the ServiceAccount `namespace/name`.
fn binds(binding: &Value, namespace: &str, name: &str) -> bool {
    binding["subjects"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            text(s, "/kind") == "ServiceAccount"
                && text(s, "/name") == name
                && text(s, "/namespace") == namespace
        })
}

/// Every grant the objects give the ServiceAccount `namespace/name`. A binding whose role is
/// not among the objects is an error: the install would not work as rendered.
pub fn grants_of_service_account(
    objects: &[Value],
    namespace: &str,
    name: &str,
) -> Result<Vec<Grant>> {
    let mut grants = BTreeSet::new();
    for binding in objects {
        let scope = match text(binding, "/kind") {
            "ClusterRoleBinding" => None,
            "RoleBinding" => Some(text(binding, "/metadata/namespace").to_string()),
            _ => continue,
        };
        if !binds(binding, namespace, name) {
            continue;
        }
        let (role_kind, role_name) = (
            text(binding, "/roleRef/kind"),
            text(binding, "/roleRef/name"),
        );
        let role_namespace = match role_kind {
            "ClusterRole" => "",
            "Role" => scope.as_deref().unwrap_or(""),
            other => bail!(
                "{} {}: roleRef kind {other:?}",
                text(binding, "/kind"),
                text(binding, "/metadata/name")
            ),
        };
        let role = objects
            .iter()
            .find(|o| {
                text(o, "/kind") == role_kind
                    && text(o, "/metadata/name") == role_name
                    && text(o, "/metadata/namespace") == role_namespace
            })
            .with_context(|| {
                format!(
                    "{} {} binds {role_kind} {role_name}, which is not among the objects",
                    text(binding, "/kind"),
                    text(binding, "/metadata/name")
                )
            })?;
        let label = if role_namespace.is_empty() {
            format!("{role_kind} {role_name}")
        } else {
            format!("{role_kind} {role_namespace}/{role_name}")
        };
        for rule in role["rules"].as_array().into_iter().flatten() {
            let names = strings(&rule["resourceNames"]);
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        grants.insert(Grant {
                            role: label.clone(),
                            namespace: scope.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            names: names.clone(),
                        });
                    }
                }
            }
        }
    }
    Ok(grants.into_iter().collect())
}

/// Calls no grant allows, and grants no call used: both empty when the rules are exactly what
/// the calls need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    pub not_allowed: Vec<Call>,
    pub unused: Vec<Grant>,
}

impl Mismatch {
    pub fn of<'a>(grants: &[Grant], calls: impl IntoIterator<Item = &'a Call>) -> Self {
        let calls: BTreeSet<&Call> = calls.into_iter().collect();
        let mut used = vec![false; grants.len()];
        let mut not_allowed = Vec::new();
        for call in calls {
            let mut allowed = false;
            for (grant, used) in grants.iter().zip(used.iter_mut()) {
                if grant.allows(call) {
                    *used = true;
                    allowed = true;
                }
            }
            if !allowed {
                not_allowed.push(call.clone());
            }
        }
        let unused = grants
            .iter()
            .zip(used)
            .filter(|(_, used)| !used)
            .map(|(grant, _)| grant.clone())
            .collect();
        Self {
            not_allowed,
            unused,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.not_allowed.is_empty() && self.unused.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.not_allowed.is_empty() {
            writeln!(f, "calls no rule allows:")?;
            for call in &self.not_allowed {
                writeln!(f, "  {call}")?;
            }
        }
        if !self.unused.is_empty() {
            writeln!(f, "grants no call used:")?;
            for grant in &self.unused {
                writeln!(f, "  {grant}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn objects() -> Vec<Value> {
        let subject = json!([{"kind": "ServiceAccount", "name": "agent", "namespace": "sys"}]);
        vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "reader"}, "rules": [
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
            ]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "reader"},
                "roleRef": {"kind": "ClusterRole", "name": "reader"}, "subjects": subject}),
            json!({"kind": "Role", "metadata": {"name": "own", "namespace": "sys"}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                 "resourceNames": ["leader"], "verbs": ["get", "update"]},
            ]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "own", "namespace": "sys"},
                "roleRef": {"kind": "Role", "name": "own"}, "subjects": subject}),
            // A ClusterRole bound in one namespace only.
            json!({"kind": "ClusterRole", "metadata": {"name": "cm"}, "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            ]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "cm", "namespace": "sys"},
                "roleRef": {"kind": "ClusterRole", "name": "cm"}, "subjects": subject}),
            // Someone else's binding.
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "other"},
                "roleRef": {"kind": "ClusterRole", "name": "cm"},
                "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "elsewhere"}]}),
        ]
    }

    fn call(verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> Call {
        Call {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn bindings_give_their_roles_rules_in_their_scope() {
        let grants = grants_of_service_account(&objects(), "sys", "agent").expect("grants");
        assert_eq!(grants.len(), 9, "{grants:#?}");
        let allowed = |c: &Call| grants.iter().any(|g| g.allows(c));
        assert!(allowed(&call("list", "", "pods", None, None)));
        assert!(allowed(&call("watch", "", "nodes", None, None)));
        assert!(allowed(&call("list", "", "pods", Some("shop"), None)));
        assert!(allowed(&call(
            "create",
            "",
            "pods/eviction",
            Some("shop"),
            Some("web-1")
        )));
        assert!(!allowed(&call("create", "", "pods", Some("shop"), None)));
        assert!(!allowed(&call(
            "get",
            "",
            "pods",
            Some("shop"),
            Some("web-1")
        )));
        // The Role and the namespaced ClusterRole only in their namespace.
        assert!(allowed(&call(
            "create",
            "coordination.k8s.io",
            "leases",
            Some("sys"),
            None
        )));
        assert!(!allowed(&call(
            "create",
            "coordination.k8s.io",
            "leases",
            Some("x"),
            None
        )));
        assert!(allowed(&call(
            "get",
            "",
            "configmaps",
            Some("sys"),
            Some("any")
        )));
        assert!(!allowed(&call("get", "", "configmaps", None, Some("any"))));
        // Groups must match.
        assert!(!allowed(&call("create", "", "leases", Some("sys"), None)));
    }

    #[test]
    fn resource_names_allow_only_calls_naming_them() {
        let grants = grants_of_service_account(&objects(), "sys", "agent").expect("grants");
        let allowed = |c: &Call| grants.iter().any(|g| g.allows(c));
        let lease = |verb: &str, name: Option<&str>| {
            call(verb, "coordination.k8s.io", "leases", Some("sys"), name)
        };
        assert!(allowed(&lease("get", Some("leader"))));
        assert!(allowed(&lease("update", Some("leader"))));
        assert!(!allowed(&lease("update", Some("other"))));
        assert!(!allowed(&lease("get", None)));
        // The create rule has no names; a named create is allowed by it, not by the named rule.
        assert!(allowed(&lease("create", None)));
    }

    #[test]
    fn mismatches_name_the_call_and_the_grant() {
        let grants = grants_of_service_account(&objects(), "sys", "agent").expect("grants");
        let calls = [
            call("list", "", "pods", None, None),
            call("watch", "", "pods", None, None),
            call("list", "", "nodes", None, None),
            call("watch", "", "nodes", None, None),
            call("create", "", "pods/eviction", Some("shop"), Some("web-1")),
            call("create", "", "pods/eviction", Some("shop"), Some("web-2")),
            call("create", "coordination.k8s.io", "leases", Some("sys"), None),
            call(
                "get",
                "coordination.k8s.io",
                "leases",
                Some("sys"),
                Some("leader"),
            ),
            call("get", "", "configmaps", Some("sys"), Some("state")),
            call("patch", "", "nodes", None, Some("n0")),
        ];
        let found = Mismatch::of(&grants, &calls);
        assert_eq!(
            found.not_allowed,
            [call("patch", "", "nodes", None, Some("n0"))]
        );
        assert_eq!(found.unused.len(), 1, "{found}");
        assert_eq!(found.unused[0].verb, "update");
        let text = found.to_string();
        assert!(
            text.contains("calls no rule allows:\n  patch nodes n0 (cluster scope)\n"),
            "{text}"
        );
        assert!(
            text.contains("grants no call used:\n  Role sys/own grants update leases.coordination.k8s.io named leader in namespace sys\n"),
            "{text}"
        );
        let everything = [
            &calls[..9],
            &[call(
                "update",
                "coordination.k8s.io",
                "leases",
                Some("sys"),
                Some("leader"),
            )],
        ]
        .concat();
        assert!(Mismatch::of(&grants, &everything).is_empty());
    }

    #[test]
    fn a_binding_to_a_missing_role_is_an_error() {
        let mut objects = objects();
        objects.retain(|o| text(o, "/kind") != "Role");
        let error = grants_of_service_account(&objects, "sys", "agent").expect_err("missing");
        assert!(error.to_string().contains("binds Role own"), "{error}");
    }

    #[test]
    fn calls_come_from_the_request_log_attributes() {
        let info = RequestInfo::of("POST", "/api/v1/namespaces/shop/pods/web-1/eviction", None);
        assert_eq!(
            Call::of(&info),
            Some(call(
                "create",
                "",
                "pods/eviction",
                Some("shop"),
                Some("web-1")
            ))
        );
        assert_eq!(Call::of(&RequestInfo::of("GET", "/version", None)), None);
    }
}
