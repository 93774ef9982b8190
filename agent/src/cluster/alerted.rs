//! What the alerts currently firing ask of the leader: the [`AlertAction`]s from the webhook,
//! kept by fingerprint until their alert resolves (`End`), leadership changes, or `hold` passes
//! without an end (an Alertmanager with `send_resolved: false`, or a lost notification: the
//! webhook's ledger forgets the alert after the same time, so a re-sent one starts over).
//! Turned into the planner's [`Directives`] for every round. Pure: time is an argument.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{rebalance::Directives, serve::alerts::AlertAction};

#[derive(Clone, Debug, PartialEq, Eq)]
struct Active {
    node: String,
    alertname: String,
    evacuate: bool,
    since: Instant,
}

/// What arriving actions call for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// A node to relieve or drain, or one no longer (its taint comes off): run a round now.
    pub round_now: bool,
}

#[derive(Debug)]
pub struct ActiveAlerts {
    hold: Duration,
    by_fingerprint: BTreeMap<String, Active>,
}

impl ActiveAlerts {
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            by_fingerprint: BTreeMap::new(),
        }
    }

    /// Takes in one action. An `End` of an alert this leader never saw start (a previous leader
    /// did) changes nothing.
    pub fn apply(&mut self, action: AlertAction, now: Instant) -> Applied {
        let (fingerprint, active) = match action {
            AlertAction::End { fingerprint, .. } => {
                let ended = self.by_fingerprint.remove(&fingerprint).is_some();
                return Applied { round_now: ended };
            }
            AlertAction::TargetedRound {
                node,
                fingerprint,
                alertname,
            } => (fingerprint, (node, alertname, false)),
            AlertAction::Evacuate {
                node,
                fingerprint,
                alertname,
            } => (fingerprint, (node, alertname, true)),
        };
        let (node, alertname, evacuate) = active;
        self.by_fingerprint.insert(
            fingerprint,
            Active {
                node,
                alertname,
                evacuate,
                since: now,
            },
        );
        Applied { round_now: true }
    }

    /// Forgets the actions older than the hold; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.by_fingerprint.len();
        let hold = self.hold;
        self.by_fingerprint
            .retain(|_, a| now.saturating_duration_since(a.since) < hold);
        before - self.by_fingerprint.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }

    /// Some node is being drained (its next pod may go once the last one's replacement is Ready).
    pub fn evacuating(&self) -> bool {
        self.by_fingerprint.values().any(|a| a.evacuate)
    }

    /// The planner's view of the active actions.
    pub fn directives(&self, off_schedule: bool) -> Directives {
        let mut directives = Directives {
            off_schedule,
            ..Directives::default()
        };
        for active in self.by_fingerprint.values() {
            let nodes = match active.evacuate {
                true => &mut directives.evacuate,
                false => &mut directives.relieve,
            };
            nodes
                .entry(active.node.clone())
                .or_default()
                .insert(active.alertname.clone());
        }
        directives
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::alerts::ActionKind;

    fn targeted(node: &str, fingerprint: &str) -> AlertAction {
        AlertAction::TargetedRound {
            node: node.into(),
            fingerprint: fingerprint.into(),
            alertname: "BallastNodeCPUContention".into(),
        }
    }

    fn end(node: &str, fingerprint: &str, ended: ActionKind) -> AlertAction {
        AlertAction::End {
            node: node.into(),
            fingerprint: fingerprint.into(),
            alertname: "BallastNodeCPUContention".into(),
            ended,
        }
    }

    #[test]
    fn actions_last_until_their_alert_resolves() {
        let start = Instant::now();
        let mut active = ActiveAlerts::new(Duration::from_secs(3600));
        assert!(active.apply(targeted("a", "f1"), start).round_now);
        assert!(active.apply(targeted("a", "f2"), start).round_now);
        let evacuate = AlertAction::Evacuate {
            node: "b".into(),
            fingerprint: "f3".into(),
            alertname: "NodeDiskFailing".into(),
        };
        assert!(active.apply(evacuate, start).round_now);
        let d = active.directives(true);
        assert!(d.off_schedule && d.relieves("a") && d.evacuates("b") && !d.relieves("b"));
        assert!(active.evacuating());

        // One of node a's two alerts resolves: a stays relieved by the other.
        let applied = active.apply(end("a", "f1", ActionKind::TargetedRound), start);
        assert!(applied.round_now, "a round at once reconciles the taints");
        assert!(active.directives(false).relieves("a"));
        active.apply(end("a", "f2", ActionKind::TargetedRound), start);
        active.apply(end("b", "f3", ActionKind::Evacuate), start);
        assert!(active.is_empty() && !active.evacuating());

        // The end of an alert another leader saw start changes nothing.
        let applied = active.apply(end("c", "unknown", ActionKind::Evacuate), start);
        assert!(active.is_empty() && !applied.round_now);
    }

    #[test]
    fn an_action_never_ended_expires_after_the_hold() {
        let start = Instant::now();
        let mut active = ActiveAlerts::new(Duration::from_secs(60));
        active.apply(targeted("a", "f1"), start);
        assert_eq!(active.expire(start + Duration::from_secs(59)), 0);
        active.apply(targeted("b", "f2"), start + Duration::from_secs(30));
        assert_eq!(active.expire(start + Duration::from_secs(60)), 1);
        assert!(active.directives(false).relieves("b"));
        assert!(!active.directives(false).relieves("a"));
    }
}
