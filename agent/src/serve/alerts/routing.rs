//! Which alerts lead to which action: configuration (TOML, `--alert-routing FILE`) with
//! defaults, unknown fields rejected, validated once at start.
//!
//! Defaults, equivalent to this file:
//!
//! ```toml
//! node_label = "node"          # the label naming the node an alert is about
//! remember_seconds = 86400     # keep above the Alertmanager route's repeat_interval
//! remember_max = 4096
//!
//! [targeted_round]             # an immediate round for the node
//! alertname_prefixes = ["BallastNode"]
//! alertnames = []
//!
//! [evacuate]                   # drain the node, one workload at a time
//! label = "ballast_action"     # an alert with ballast_action="evacuate" ...
//! value = "evacuate"
//! alertnames = []              # ... or with one of these names, e.g. ["NodeDiskFailing"]
//! ```
//!
//! An alert matching both rules evacuates. The default prefix is `BallastNode`, not `Ballast`:
//! `BallastAgentDown`, `BallastEBPFFallback` and `BallastContainerCPUContention` carry a `node`
//! label too, but moving pods off that node is not their remedy. Pure.

use serde::{Deserialize, Serialize};

use super::payload::Alert;

/// Largest `remember_max`: the ledger's memory stays in the tens of megabytes at worst.
pub const REMEMBER_MAX_LIMIT: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertRouting {
    /// The label naming the node an alert is about.
    pub node_label: String,
    pub targeted_round: TargetedRoundRule,
    pub evacuate: EvacuateRule,
    /// How long an alert is remembered after Alertmanager last sent it. A firing alert that
    /// comes back later than this starts its action again, so keep it above the route's
    /// `repeat_interval` (Alertmanager's default is 4 h).
    pub remember_seconds: u64,
    /// Most alerts remembered at once; past it the one unseen longest is forgotten.
    pub remember_max: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetedRoundRule {
    /// Alerts whose `alertname` starts with one of these.
    pub alertname_prefixes: Vec<String>,
    /// Alerts with exactly one of these names.
    pub alertnames: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvacuateRule {
    /// Alerts carrying `label` = `value` (set in the alerting rule's `labels:`).
    pub label: String,
    pub value: String,
    /// Alerts with exactly one of these names (an operator's hardware or disk alerts).
    pub alertnames: Vec<String>,
}

impl Default for AlertRouting {
    fn default() -> Self {
        Self {
            node_label: "node".into(),
            targeted_round: TargetedRoundRule::default(),
            evacuate: EvacuateRule::default(),
            remember_seconds: 86_400,
            remember_max: 4096,
        }
    }
}

impl Default for TargetedRoundRule {
    fn default() -> Self {
        Self {
            alertname_prefixes: vec!["BallastNode".into()],
            alertnames: Vec::new(),
        }
    }
}

impl Default for EvacuateRule {
    fn default() -> Self {
        Self {
            label: "ballast_action".into(),
            value: "evacuate".into(),
            alertnames: Vec::new(),
        }
    }
}

/// What an alert asks of the leader while it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// A round now, and in every round until the alert resolves, the node relieved as a source
    /// of what is above its release thresholds, with every limit of a normal round.
    TargetedRound,
    /// Move the node's eligible pods away, one at a time, with every eviction rule.
    Evacuate,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::TargetedRound => "targeted_round",
            ActionKind::Evacuate => "evacuate",
        }
    }
}

/// Why an alert leads to nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unrouted {
    #[error("no alertname label")]
    NoAlertname,
    #[error("no rule maps alertname {0:?} to an action (see the alert routing: targeted_round, evacuate)")]
    NoRule(String),
    #[error("no {0:?} label: Ballast acts on one node per alert")]
    NoNode(String),
    #[error("label {label:?} = {value:?} is not a Kubernetes node name")]
    InvalidNode { label: String, value: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("alert routing: {0}")]
    Parse(toml::de::Error),
    #[error("alert routing: {field} is empty; give it a value or leave it out for the default")]
    Empty { field: &'static str },
    #[error(
        "alert routing: {field} = {name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    )]
    LabelName { field: &'static str, name: String },
    #[error("alert routing: {field} contains an empty name; remove it")]
    EmptyName { field: &'static str },
    #[error("alert routing: remember_seconds must be above 0 (seconds an alert is remembered)")]
    NoMemory,
    #[error("alert routing: remember_max = {0} must be between 1 and {REMEMBER_MAX_LIMIT}")]
    RememberMax(usize),
    #[error("alert routing: alertname {0:?} is in both targeted_round.alertnames and evacuate.alertnames; keep it in one")]
    Ambiguous(String),
}

impl AlertRouting {
    /// Parses a TOML routing file and validates it.
    pub fn from_toml(text: &str) -> Result<Self, RoutingError> {
        let routing: AlertRouting = toml::from_str(text).map_err(RoutingError::Parse)?;
        routing.validate()?;
        Ok(routing)
    }

    /// Reports the first problem, naming the field.
    pub fn validate(&self) -> Result<(), RoutingError> {
        for (field, name) in [
            ("node_label", &self.node_label),
            ("evacuate.label", &self.evacuate.label),
        ] {
            if name.is_empty() {
                return Err(RoutingError::Empty { field });
            }
            if !is_label_name(name) {
                return Err(RoutingError::LabelName {
                    field,
                    name: name.clone(),
                });
            }
        }
        if self.evacuate.value.is_empty() {
            return Err(RoutingError::Empty {
                field: "evacuate.value",
            });
        }
        for (field, names) in [
            (
                "targeted_round.alertname_prefixes",
                &self.targeted_round.alertname_prefixes,
            ),
            ("targeted_round.alertnames", &self.targeted_round.alertnames),
            ("evacuate.alertnames", &self.evacuate.alertnames),
        ] {
            if names.iter().any(String::is_empty) {
                return Err(RoutingError::EmptyName { field });
            }
        }
        if let Some(name) = self
            .targeted_round
            .alertnames
            .iter()
            .find(|name| self.evacuate.alertnames.contains(name))
        {
            return Err(RoutingError::Ambiguous(name.clone()));
        }
        if self.remember_seconds == 0 {
            return Err(RoutingError::NoMemory);
        }
        if !(1..=REMEMBER_MAX_LIMIT).contains(&self.remember_max) {
            return Err(RoutingError::RememberMax(self.remember_max));
        }
        Ok(())
    }

    /// The action an alert asks for and the node it names.
    pub fn route<'a>(&self, alert: &'a Alert) -> Result<(ActionKind, &'a str), Unrouted> {
        let alertname = alert.alertname().ok_or(Unrouted::NoAlertname)?;
        let kind = self
            .kind_of(alertname, alert)
            .ok_or_else(|| Unrouted::NoRule(alertname.to_string()))?;
        let node = alert
            .labels
            .get(&self.node_label)
            .ok_or_else(|| Unrouted::NoNode(self.node_label.clone()))?;
        if !is_node_name(node) {
            return Err(Unrouted::InvalidNode {
                label: self.node_label.clone(),
                value: node.chars().take(64).collect(),
            });
        }
        Ok((kind, node))
    }

    fn kind_of(&self, alertname: &str, alert: &Alert) -> Option<ActionKind> {
        let evacuate = &self.evacuate;
        if alert.labels.get(&evacuate.label) == Some(&evacuate.value)
            || evacuate.alertnames.iter().any(|n| n == alertname)
        {
            return Some(ActionKind::Evacuate);
        }
        let round = &self.targeted_round;
        (round.alertnames.iter().any(|n| n == alertname)
            || round
                .alertname_prefixes
                .iter()
                .any(|p| alertname.starts_with(p.as_str())))
        .then_some(ActionKind::TargetedRound)
    }
}

/// Prometheus label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Kubernetes node names are DNS-1123 subdomains: at most 253 characters, lowercase
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric. The name goes into API
/// paths and events, so nothing else gets through.
pub fn is_node_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    (1..=253).contains(&bytes.len())
        && bytes.first().is_some_and(|b| alnum(*b))
        && bytes.last().is_some_and(|b| alnum(*b))
        && bytes.iter().all(|b| alnum(*b) || *b == b'-' || *b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::alerts::payload::AlertStatus;

    fn alert(labels: &[(&str, &str)]) -> Alert {
        Alert {
            status: AlertStatus::Firing,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            starts_at: String::new(),
            ends_at: String::new(),
            generator_url: String::new(),
            fingerprint: "f".into(),
        }
    }

    #[test]
    fn defaults_target_the_node_pressure_alerts() {
        let routing = AlertRouting::default();
        assert!(routing.validate().is_ok());
        for name in [
            "BallastNodeCPUContention",
            "BallastNodeMemoryPressure",
            "BallastNodeTCPRetransmitBurst",
        ] {
            let a = alert(&[("alertname", name), ("node", "node-1")]);
            assert_eq!(
                routing.route(&a),
                Ok((ActionKind::TargetedRound, "node-1")),
                "{name}"
            );
        }
        for name in [
            "BallastAgentDown",
            "BallastEBPFFallback",
            "BallastContainerCPUContention",
            "NodeDiskFailing",
        ] {
            let a = alert(&[("alertname", name), ("node", "node-1")]);
            assert_eq!(
                routing.route(&a),
                Err(Unrouted::NoRule(name.into())),
                "{name}"
            );
        }
    }

    #[test]
    fn the_evacuate_label_or_name_evacuates_and_wins_over_a_round() {
        let routing = AlertRouting::from_toml("[evacuate]\nalertnames = [\"NodeDiskFailing\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let labelled = alert(&[
            ("alertname", "BallastNodeCPUContention"),
            ("node", "n1"),
            ("ballast_action", "evacuate"),
        ]);
        assert_eq!(routing.route(&labelled), Ok((ActionKind::Evacuate, "n1")));
        let named = alert(&[("alertname", "NodeDiskFailing"), ("node", "n2")]);
        assert_eq!(routing.route(&named), Ok((ActionKind::Evacuate, "n2")));
        let other_value = alert(&[
            ("alertname", "SomethingElse"),
            ("node", "n1"),
            ("ballast_action", "ignore"),
        ]);
        assert_eq!(
            routing.route(&other_value),
            Err(Unrouted::NoRule("SomethingElse".into()))
        );
    }

    #[test]
    fn an_alert_without_a_usable_node_is_not_routed() {
        let routing = AlertRouting::default();
        let a = alert(&[("alertname", "BallastNodeCPUContention")]);
        assert_eq!(routing.route(&a), Err(Unrouted::NoNode("node".into())));
        let a = alert(&[
            ("alertname", "BallastNodeCPUContention"),
            ("node", "../nodes/x"),
        ]);
        assert!(matches!(
            routing.route(&a),
            Err(Unrouted::InvalidNode { .. })
        ));
        assert_eq!(
            routing.route(&alert(&[("node", "n1")])),
            Err(Unrouted::NoAlertname)
        );
        let custom = AlertRouting::from_toml("node_label = \"kubernetes_node\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let a = alert(&[("alertname", "BallastNodeX"), ("kubernetes_node", "n3")]);
        assert_eq!(custom.route(&a), Ok((ActionKind::TargetedRound, "n3")));
    }

    #[test]
    fn node_names_are_dns_subdomains() {
        for good in [
            "n",
            "node-1",
            "ip-10-0-0-1.eu-west-1.compute.internal",
            &"a".repeat(253),
        ] {
            assert!(is_node_name(good), "{good}");
        }
        for bad in [
            "",
            "-n",
            "n-",
            "Node1",
            "n/1",
            "n 1",
            "n_1",
            &"a".repeat(254),
        ] {
            assert!(!is_node_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_file_is_validated_and_unknown_fields_are_named() {
        let err = |text: &str| AlertRouting::from_toml(text).err().map(|e| e.to_string());
        assert_eq!(
            AlertRouting::from_toml("").ok(),
            Some(AlertRouting::default())
        );
        let text = toml::to_string(&AlertRouting::default()).unwrap_or_default();
        assert_eq!(
            AlertRouting::from_toml(&text).ok(),
            Some(AlertRouting::default())
        );
        for (text, wanted) in [
            ("node_lable = \"node\"\n", "node_lable"),
            ("[evacuate]\nlabels = \"x\"\n", "labels"),
            ("node_label = \"\"\n", "node_label is empty"),
            (
                "node_label = \"kubernetes.io/hostname\"\n",
                "not a Prometheus label name",
            ),
            ("[evacuate]\nvalue = \"\"\n", "evacuate.value is empty"),
            (
                "[targeted_round]\nalertname_prefixes = [\"\"]\n",
                "alertname_prefixes contains an empty name",
            ),
            ("remember_seconds = 0\n", "remember_seconds"),
            ("remember_max = 0\n", "remember_max = 0"),
            ("remember_max = 1000000\n", "remember_max = 1000000"),
            (
                "[targeted_round]\nalertnames = [\"X\"]\n[evacuate]\nalertnames = [\"X\"]\n",
                "in both",
            ),
        ] {
            let e = err(text);
            assert!(
                e.as_deref().is_some_and(|e| e.contains(wanted)),
                "{text}: {e:?}"
            );
        }
    }
}
