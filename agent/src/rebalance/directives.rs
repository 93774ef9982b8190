//! What alerts ask of a round (the Alertmanager webhook, README "Alert-driven rebalancing"):
//! nodes to relieve now and nodes to drain. Plain data the leader keeps while the alerts fire
//! and hands to [`super::plan::plan_directed`]; empty for a round with no alert active.
//!
//! - **Relieve** `node`: the node is a source this round for every resource above its release
//!   (`low`) threshold, without waiting out `abnormal_rounds`: the alert already says the pressure
//!   is sustained. Under its release thresholds it is left alone (the hysteresis floor), and
//!   every limit, cooldown and PDB applies as in any round.
//! - **Evacuate** `node`: its eligible pods are moved off whatever its load, one at a time: the
//!   next only once the previous one's replacement is Ready (or given up on), so the scheduler
//!   and the PDBs see one disruption at a time. It is neither a destination nor held to a target.
//!
//! A round run because an alert arrived (`off_schedule`) acts on the directed nodes only and
//! advances no hysteresis counter, so `abnormal_rounds` keeps counting scheduled rounds.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directives {
    /// Run because an alert arrived, not on the round interval.
    #[serde(default)]
    pub off_schedule: bool,
    /// Nodes to relieve now, with the alerts that ask for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub relieve: BTreeMap<String, BTreeSet<String>>,
    /// Nodes to drain, with the alerts that ask for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub evacuate: BTreeMap<String, BTreeSet<String>>,
}

impl Directives {
    /// No alert asks for anything.
    pub fn is_empty(&self) -> bool {
        self.relieve.is_empty() && self.evacuate.is_empty()
    }

    pub fn relieves(&self, node: &str) -> bool {
        self.relieve.contains_key(node)
    }

    pub fn evacuates(&self, node: &str) -> bool {
        self.evacuate.contains_key(node)
    }

    /// Whether an off-schedule round acts on `node` (a scheduled one acts on every source).
    pub fn acts_on(&self, node: &str) -> bool {
        !self.off_schedule || self.relieves(node) || self.evacuates(node)
    }
}

/// `alert BallastNodeCPUContention` or `alerts A, B`, for the plan's text.
pub fn alerts_text(alerts: &BTreeSet<String>) -> String {
    let names: Vec<&str> = alerts.iter().map(String::as_str).collect();
    match names.as_slice() {
        [one] => format!("alert {one}"),
        _ => format!("alerts {}", names.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_off_schedule_round_acts_on_the_directed_nodes_only() {
        let mut directives = Directives::default();
        assert!(directives.is_empty() && directives.acts_on("a"));
        directives.relieve.insert("a".into(), names(&["X"]));
        directives.evacuate.insert("b".into(), names(&["Y"]));
        assert!(
            directives.acts_on("c"),
            "a scheduled round acts on every source"
        );
        directives.off_schedule = true;
        assert!(directives.acts_on("a") && directives.acts_on("b"));
        assert!(!directives.acts_on("c"));
    }

    #[test]
    fn alert_names_read_as_text() {
        assert_eq!(alerts_text(&names(&["X"])), "alert X");
        assert_eq!(alerts_text(&names(&["B", "A"])), "alerts A, B");
    }
}
