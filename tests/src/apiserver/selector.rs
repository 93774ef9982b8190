//! Label selectors (the `labelSelector` query syntax and `metav1.LabelSelector` objects) and
//! field selectors, with the apiserver's matching rules: `!=` and `notin` also match objects
//! without the label, a field selector names only the fields the resource supports.

use serde_json::{Map, Value};

use super::resource::Kind;

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        let among = |key: &str, values: &[String]| {
            label(key).is_some_and(|l| values.iter().any(|v| v == l))
        };
        match self {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => among(k, vs),
            Requirement::NotIn(k, vs) => !among(k, vs),
            Requirement::Exists(k) => labels.contains_key(k.as_str()),
            Requirement::DoesNotExist(k) => !labels.contains_key(k.as_str()),
        }
    }
}

/// A label selector: every requirement must hold. No requirement selects everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 317
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Splits at commas outside parentheses (`a in (x,y),b` is two requirements).
fn split_requirements(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_set(key: &str, rest: &str, text: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!("unable to parse requirement: found '{text}', expected: '(' ... ')'")
        })?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() || !valid_key(key) || !values.iter().all(|v| valid_value(v)) {
        return Err(format!(
            "unable to parse requirement: invalid set in '{text}'"
        ));
    }
    Ok(values)
}

fn parse_requirement(text: &str) -> Result<Requirement, String> {
    let text = text.trim();
    let invalid = || format!("unable to parse requirement: '{text}'");
    if let Some(key) = text.strip_prefix('!') {
        let key = key.trim();
        return valid_key(key)
            .then(|| Requirement::DoesNotExist(key.to_string()))
            .ok_or_else(invalid);
    }
    let words: Vec<&str> = text.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words[..] {
        let rest = rest.trim_start();
        for (op, notin) in [("notin", true), ("in", false)] {
            if let Some(set) = rest.strip_prefix(op) {
                let values = parse_set(key, set, text)?;
                return Ok(if notin {
                    Requirement::NotIn(key.to_string(), values)
                } else {
                    Requirement::In(key.to_string(), values)
                });
            }
        }
    }
    let (key, value, negated) = if let Some((k, v)) = text.split_once("!=") {
        (k, v, true)
    } else if let Some((k, v)) = text.split_once("==") {
        (k, v, false)
    } else if let Some((k, v)) = text.split_once('=') {
        (k, v, false)
    } else {
        return valid_key(text)
            .then(|| Requirement::Exists(text.to_string()))
            .ok_or_else(invalid);
    };
    let (key, value) = (key.trim(), value.trim());
    if !valid_key(key) || !valid_value(value) {
        return Err(invalid());
    }
    Ok(if negated {
        Requirement::NotEquals(key.to_string(), value.to_string())
    } else {
        Requirement::Equals(key.to_string(), value.to_string())
    })
}

impl LabelSelector {
    /// The `labelSelector` query parameter syntax.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = split_requirements(text)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// A `metav1.LabelSelector` object (`matchLabels` and `matchExpressions`).
    pub fn from_object(selector: &Value) -> Result<Self, String> {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in labels {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("matchLabels.{key} is not a string"))?;
                requirements.push(Requirement::Equals(key.clone(), value.to_string()));
            }
        }
        for expression in selector
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = expression
                .get("key")
                .and_then(Value::as_str)
                .ok_or("matchExpressions entry without a key")?
                .to_string();
            let values: Vec<String> = expression
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let operator = expression.get("operator").and_then(Value::as_str);
            requirements.push(match operator {
                Some("In") if !values.is_empty() => Requirement::In(key, values),
                Some("NotIn") if !values.is_empty() => Requirement::NotIn(key, values),
                Some("Exists") if values.is_empty() => Requirement::Exists(key),
                Some("DoesNotExist") if values.is_empty() => Requirement::DoesNotExist(key),
                other => {
                    return Err(format!(
                        "invalid matchExpressions operator {other:?} for key {key} with {} values",
                        values.len()
                    ))
                }
            });
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, object: &Value) -> bool {
        let none = Map::new();
        // Read in place (no pointer parsing, no copy): budgets match every pod of their
        // namespace against this on each recomputation.
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or(&none);
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// A field selector: `field=value`, `field==value`, `field!=value`, comma-separated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

#[derive(Clone, Debug, PartialEq)]
struct FieldTerm {
    pointer: &'static str,
    /// What an absent field compares as (`false` for booleans, else empty).
    absent: &'static str,
    value: String,
    negated: bool,
}

/// The fields a resource can be selected by, with the JSON pointer each reads and the value an
/// absent field compares as.
fn selectable_field(kind: Kind, field: &str) -> Option<(&'static str, &'static str, &'static str)> {
    const COMMON: [(&str, &str, &str); 2] = [
        ("metadata.name", "/metadata/name", ""),
        ("metadata.namespace", "/metadata/namespace", ""),
    ];
    const POD: [(&str, &str, &str); 7] = [
        ("spec.nodeName", "/spec/nodeName", ""),
        ("spec.schedulerName", "/spec/schedulerName", ""),
        ("spec.serviceAccountName", "/spec/serviceAccountName", ""),
        ("spec.restartPolicy", "/spec/restartPolicy", ""),
        ("spec.hostNetwork", "/spec/hostNetwork", "false"),
        ("status.phase", "/status/phase", ""),
        ("status.podIP", "/status/podIP", ""),
    ];
    const NODE: [(&str, &str, &str); 1] = [("spec.unschedulable", "/spec/unschedulable", "false")];
    const EVENT: [(&str, &str, &str); 6] = [
        ("involvedObject.kind", "/involvedObject/kind", ""),
        ("involvedObject.namespace", "/involvedObject/namespace", ""),
        ("involvedObject.name", "/involvedObject/name", ""),
        ("involvedObject.uid", "/involvedObject/uid", ""),
        ("reason", "/reason", ""),
        ("type", "/type", ""),
    ];
    let specific: &[(&str, &str, &str)] = match kind {
        Kind::Pod => &POD,
        Kind::Node => &NODE,
        Kind::Event => &EVENT,
        _ => &[],
    };
    COMMON
        .iter()
        .chain(specific)
        .find(|(name, _, _)| *name == field)
        .copied()
}

impl FieldSelector {
    pub fn parse(kind: Kind, text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            let (_, pointer, absent) = selectable_field(kind, field)
                .ok_or_else(|| format!("field label not supported: {field}"))?;
            terms.push(FieldTerm {
                pointer,
                absent,
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.terms.iter().all(|term| {
            let actual = match object.pointer(term.pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => term.absent.to_string(),
                Some(other) => other.to_string(),
            };
            (actual == term.value) != term.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    #[test]
    fn label_syntax_follows_the_apiserver() {
        let p = pod(json!({"app": "web", "tier": "front"}));
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web, api)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("tier,!missing", true),
            ("!app", false),
            ("app in (api),tier", false),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).expect(text);
            assert_eq!(selector.matches(&p), expected, "{text}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn selector_objects_match_like_query_selectors() {
        let p = pod(json!({"app": "web"}));
        let object = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]});
        assert!(LabelSelector::from_object(&object)
            .expect("valid selector")
            .matches(&p));
        let other =
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]});
        assert!(!LabelSelector::from_object(&other)
            .expect("valid selector")
            .matches(&p));
        let empty = LabelSelector::from_object(&json!({})).expect("valid selector");
        assert!(empty.is_empty() && empty.matches(&p));
        assert!(LabelSelector::from_object(
            &json!({"matchExpressions": [{"key": "a", "operator": "In"}]})
        )
        .is_err());
    }

    #[test]
    fn field_selectors_know_their_fields() {
        let p = pod(json!({}));
        let on_n1 = FieldSelector::parse(Kind::Pod, "spec.nodeName=n1,metadata.namespace==ns")
            .expect("parses");
        assert!(on_n1.matches(&p));
        let not_running = FieldSelector::parse(Kind::Pod, "status.phase!=Running").expect("parses");
        assert!(not_running.matches(&p));
        let unbound = FieldSelector::parse(Kind::Pod, "spec.nodeName=").expect("parses");
        assert!(!unbound.matches(&p));
        assert_eq!(
            FieldSelector::parse(Kind::Lease, "spec.nodeName=n1").expect_err("refused"),
            "field label not supported: spec.nodeName"
        );
    }
}
