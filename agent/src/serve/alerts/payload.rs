//! Alertmanager's webhook body, version 4 (`notify/webhook` in Alertmanager: `template.Data`
//! plus `version`, `groupKey` and `truncatedAlerts`).
//!
//! ```json
//! {"version": "4", "groupKey": "{}/{}:{alertname=\"BallastNodeCPUContention\"}", "truncatedAlerts": 0,
//!  "status": "firing", "receiver": "ballast", "groupLabels": {...}, "commonLabels": {...},
//!  "commonAnnotations": {...}, "externalURL": "http://alertmanager:9093",
//!  "alerts": [{"status": "firing", "labels": {"alertname": "...", "node": "node-1"},
//!              "annotations": {...}, "startsAt": "2024-05-01T10:00:00Z",
//!              "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://...",
//!              "fingerprint": "c6eadffa33fcdf37"}]}
//! ```
//!
//! `version`, `status` and `alerts` (each with `status` and `labels`) are required; the rest
//! defaults to empty, and fields this version does not know are ignored (Alertmanager and
//! Grafana add some). Timestamps are kept as text: they identify a firing (see the ledger) and
//! are never computed with. Pure: bytes in, a typed payload or a reason out.

use std::collections::BTreeMap;

use serde::{de::IgnoredAny, Deserialize, Serialize};

/// The only webhook format version this receiver reads.
pub const WEBHOOK_VERSION: &str = "4";

/// Most alerts one payload may carry (Alertmanager's `max_alerts` bounds it on the sending
/// side; the action queue is sized for two full payloads).
pub const MAX_ALERTS: usize = 1000;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    /// Alerts Alertmanager left out because of `max_alerts`; Ballast never sees them.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `firing` when at least one alert of the group fires.
    pub status: AlertStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: Labels,
    #[serde(default)]
    pub common_labels: Labels,
    #[serde(default)]
    pub common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<Alert>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    /// RFC 3339; the same for every notification of one firing, new when it fires again.
    #[serde(default)]
    pub starts_at: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` while firing.
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Alertmanager's hash of the label set (16 hex digits): one alert across notifications.
    #[serde(default)]
    pub fingerprint: String,
}

impl Alert {
    pub fn alertname(&self) -> Option<&str> {
        self.labels.get("alertname").map(String::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not an Alertmanager webhook payload: {0}; send the JSON of Alertmanager's webhook_config (version 4)")]
    Malformed(serde_json::Error),
    #[error(
        "the body is not a JSON object; send the JSON of Alertmanager's webhook_config (version 4)"
    )]
    NotAnObject,
    #[error("the payload has no \"version\"; this receiver reads Alertmanager's webhook format version \"4\"")]
    MissingVersion,
    #[error("webhook payload version {found} is not supported; this receiver reads version \"4\" (Alertmanager's webhook_config)")]
    UnsupportedVersion { found: String },
    #[error("the payload carries {count} alerts, more than the {MAX_ALERTS} one call may carry; set max_alerts in the webhook_config")]
    TooManyAlerts { count: usize },
}

/// Just the version, read before the rest so that another version's layout is reported as a
/// version problem rather than as whichever field changed. The other fields, and a version
/// that is not a string, are skipped without being built.
#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default)]
    version: Option<Version>,
}

/// The `version` field: its text if it is a string (cut for echoing), else what it is.
enum Version {
    Text(String),
    Other(String),
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Version;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a version")
            }
            fn visit_str<E>(self, v: &str) -> Result<Version, E> {
                Ok(Version::Text(truncated(v, 40)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Version, E> {
                Ok(Version::Other(format!("{v} (a boolean)")))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Version, E> {
                Ok(Version::Other(format!("{v} (a number)")))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Version, E> {
                Ok(Version::Other(format!("{v} (a number)")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Version, E> {
                Ok(Version::Other(format!("{v} (a number)")))
            }
            fn visit_unit<E>(self) -> Result<Version, E> {
                Ok(Version::Other("null".into()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Version, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Version::Other("an array".into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Version, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Version::Other("an object".into()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses and checks a webhook body.
pub fn parse(body: &[u8]) -> Result<WebhookPayload, PayloadError> {
    // serde would read a struct from an array too.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(PayloadError::NotAnObject);
    }
    let probe: VersionProbe = serde_json::from_slice(body).map_err(PayloadError::Malformed)?;
    match probe.version {
        None => return Err(PayloadError::MissingVersion),
        Some(Version::Text(v)) if v == WEBHOOK_VERSION => {}
        Some(Version::Text(v)) => {
            return Err(PayloadError::UnsupportedVersion {
                found: format!("{v:?}"),
            })
        }
        Some(Version::Other(found)) => return Err(PayloadError::UnsupportedVersion { found }),
    }
    let payload: WebhookPayload = serde_json::from_slice(body).map_err(PayloadError::Malformed)?;
    if payload.alerts.len() > MAX_ALERTS {
        return Err(PayloadError::TooManyAlerts {
            count: payload.alerts.len(),
        });
    }
    Ok(payload)
}

/// At most `max` characters of `text`, for echoing caller input in an error.
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod samples {
    //! Payloads as Alertmanager sends them, for the tests of this module and its neighbours.

    use serde_json::{json, Value};

    /// One alert as Alertmanager renders it.
    pub fn alert(status: &str, alertname: &str, node: Option<&str>, fingerprint: &str) -> Value {
        let mut labels = json!({"alertname": alertname, "cluster": "prod", "severity": "warning"});
        if let (Some(node), Some(map)) = (node, labels.as_object_mut()) {
            map.insert("node".into(), json!(node));
        }
        json!({
            "status": status,
            "labels": labels,
            "annotations": {"summary": format!("{alertname} on {}", node.unwrap_or("?"))},
            "startsAt": "2024-05-01T10:00:00.123456789Z",
            "endsAt": if status == "resolved" { "2024-05-01T10:20:00Z" } else { "0001-01-01T00:00:00Z" },
            "generatorURL": "http://prometheus:9090/graph?g0.expr=node%3Aballast_cpu_contention%3Aratio_rate5m+%3E+0.25\u{0026}g0.tab=1",
            "fingerprint": fingerprint,
        })
    }

    /// A whole notification around `alerts`.
    pub fn payload(alerts: Vec<Value>) -> Value {
        let status = if alerts.iter().any(|a| a["status"] == "firing") {
            "firing"
        } else {
            "resolved"
        };
        json!({
            "receiver": "ballast",
            "status": status,
            "alerts": alerts,
            "groupLabels": {"alertname": "BallastNodeCPUContention", "cluster": "prod"},
            "commonLabels": {"alertname": "BallastNodeCPUContention", "cluster": "prod", "severity": "warning"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "version": "4",
            "groupKey": "{}/{alertname=~\"BallastNodeCPUContention|BallastNodeMemoryPressure\"}:{alertname=\"BallastNodeCPUContention\", cluster=\"prod\"}",
            "truncatedAlerts": 0,
        })
    }

    pub fn bytes(value: &Value) -> Vec<u8> {
        serde_json::to_vec(value).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{samples::*, *};

    #[test]
    fn reads_what_alertmanager_sends() {
        let body = bytes(&payload(vec![
            alert(
                "firing",
                "BallastNodeCPUContention",
                Some("node-1"),
                "c6eadffa33fcdf37",
            ),
            alert(
                "resolved",
                "BallastNodeMemoryPressure",
                Some("node-2"),
                "0b1c2d3e4f5a6b7c",
            ),
        ]));
        let parsed = parse(&body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.version, "4");
        assert_eq!(parsed.status, AlertStatus::Firing);
        assert_eq!(parsed.receiver, "ballast");
        assert_eq!(parsed.external_url, "http://alertmanager:9093");
        assert_eq!(parsed.truncated_alerts, 0);
        assert_eq!(parsed.alerts.len(), 2);
        let first = &parsed.alerts[0];
        assert_eq!(first.status, AlertStatus::Firing);
        assert_eq!(first.alertname(), Some("BallastNodeCPUContention"));
        assert_eq!(first.labels.get("node").map(String::as_str), Some("node-1"));
        assert_eq!(first.fingerprint, "c6eadffa33fcdf37");
        assert_eq!(first.starts_at, "2024-05-01T10:00:00.123456789Z");
        assert!(first.generator_url.contains("g0.tab=1"));
        assert_eq!(parsed.alerts[1].status, AlertStatus::Resolved);
    }

    #[test]
    fn only_the_core_fields_are_required_and_unknown_ones_are_ignored() {
        let body = br#"{"version":"4","status":"resolved","alerts":[{"status":"resolved","labels":{},"silenceURL":"x","values":{"B":1.5}}],"orgId":1}"#;
        let parsed = parse(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.alerts[0].fingerprint, "");
        assert!(parsed.group_labels.is_empty());
    }

    #[test]
    fn another_version_is_reported_as_a_version_problem() {
        for (body, wanted) in [
            (r#"{"version":"5","whatever":true}"#, "version \"5\""),
            (
                r#"{"version":4,"status":"firing","alerts":[]}"#,
                "version 4 (a number)",
            ),
            (r#"{"version":["4"]}"#, "version an array"),
        ] {
            let err = parse(body.as_bytes()).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(wanted)),
                "{body}: {err:?}"
            );
        }
        let err = parse(br#"{"status":"firing","alerts":[]}"#).err();
        assert!(matches!(err, Some(PayloadError::MissingVersion)), "{err:?}");
    }

    #[test]
    fn malformed_bodies_are_rejected_with_serdes_reason() {
        for body in [&b""[..], b"not json", b"[]", b" [\"4\"]", b"\"4\""] {
            let err = parse(body).err();
            assert!(matches!(err, Some(PayloadError::NotAnObject)), "{err:?}");
        }
        for body in [
            &b"{"[..],
            b"{\"version\":\"4\"",
            b"{\"version\":\"4\"} trailing",
            br#"{"version":"4","status":"firing"}"#,
            br#"{"version":"4","status":"pending","alerts":[]}"#,
            br#"{"version":"4","status":"firing","alerts":[{"status":"firing"}]}"#,
            br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":1}}]}"#,
            br#"{"version":"4","status":"firing","alerts":[],"truncatedAlerts":-1}"#,
        ] {
            let err = parse(body).err();
            assert!(
                matches!(err, Some(PayloadError::Malformed(_))),
                "{:?}: {err:?}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse(br#"{"version":"4","status":"firing"}"#)
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("missing field `alerts`")),
            "{err:?}"
        );
    }

    #[test]
    fn too_many_alerts_are_refused() {
        let one = json!({"status": "firing", "labels": {}});
        let body = bytes(
            &json!({"version": "4", "status": "firing", "alerts": vec![one; MAX_ALERTS + 1]}),
        );
        let err = parse(&body).err();
        assert!(
            matches!(err, Some(PayloadError::TooManyAlerts { count }) if count == MAX_ALERTS + 1),
            "{err:?}"
        );
    }

    #[test]
    fn echoed_input_is_truncated() {
        assert_eq!(truncated("abcdef", 3), "abc...");
        assert_eq!(truncated("abc", 3), "abc");
        assert_eq!(truncated("ééé", 2), "éé...");
    }
}
