//! One notification in, the leader's actions and a per-alert account out: routing, then the
//! ledger. Pure (time is an argument); the HTTP handler queues the actions and then commits.

use std::time::Instant;

use serde::Serialize;

use super::{
    ledger::{Decision, Ledger, Occurrence, Verdict},
    payload::{Alert, AlertStatus, WebhookPayload},
    routing::{ActionKind, AlertRouting},
    AlertAction,
};

/// Longest fingerprint and `startsAt` kept (Alertmanager's are 16 and about 30 characters);
/// longer ones are not Alertmanager's and would only grow the ledger.
const MAX_KEY_LEN: usize = 64;
/// Longest alertname echoed back in a response.
const MAX_ECHO_LEN: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// An action was queued for the leader.
    Accepted,
    /// Already acted on; nothing queued.
    Duplicate,
    /// No action for this alert (the reason says why).
    Ignored,
}

impl Disposition {
    /// The `result` label of `ballast_alerts_received_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Accepted => "accepted",
            Disposition::Duplicate => "duplicate",
            Disposition::Ignored => "ignored",
        }
    }
}

/// What happened to one alert of the notification, for the 202 response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertOutcome {
    pub fingerprint: String,
    pub alertname: Option<String>,
    pub status: AlertStatus,
    pub result: Disposition,
    /// `targeted_round`, `evacuate` or `end`, for accepted and duplicate alerts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub reason: String,
}

#[derive(Debug)]
pub struct Intake {
    pub outcomes: Vec<AlertOutcome>,
    /// In the order of the alerts.
    pub actions: Vec<AlertAction>,
    /// To commit once the actions are queued.
    pub decision: Decision,
}

/// How many alerts had this disposition.
pub fn count(outcomes: &[AlertOutcome], disposition: Disposition) -> usize {
    outcomes.iter().filter(|o| o.result == disposition).count()
}

/// A routed alert waiting for the ledger's verdict.
struct Routed<'a> {
    index: usize,
    kind: ActionKind,
    node: &'a str,
}

pub fn intake(
    payload: &WebhookPayload,
    routing: &AlertRouting,
    ledger: &Ledger,
    term: u64,
    now: Instant,
) -> Intake {
    let mut outcomes: Vec<AlertOutcome> = payload
        .alerts
        .iter()
        .map(|alert| AlertOutcome {
            fingerprint: echo(&alert.fingerprint),
            alertname: alert.alertname().map(echo),
            status: alert.status,
            result: Disposition::Ignored,
            action: None,
            node: None,
            reason: String::new(),
        })
        .collect();
    let mut routed = Vec::new();
    for (index, alert) in payload.alerts.iter().enumerate() {
        let route = usable(alert).and_then(|()| routing.route(alert).map_err(|e| e.to_string()));
        match route {
            Ok((kind, node)) => routed.push(Routed { index, kind, node }),
            Err(reason) => outcomes[index].reason = reason,
        }
    }
    let occurrences: Vec<Occurrence<'_>> = routed
        .iter()
        .map(|r| {
            let alert = &payload.alerts[r.index];
            Occurrence {
                fingerprint: &alert.fingerprint,
                status: alert.status,
                starts_at: &alert.starts_at,
            }
        })
        .collect();
    let decision = ledger.decide(term, &occurrences, now);
    let mut actions = Vec::new();
    for (r, verdict) in routed.iter().zip(&decision.verdicts) {
        let alert = &payload.alerts[r.index];
        let action = action_for(alert, r.kind, r.node);
        let outcome = &mut outcomes[r.index];
        outcome.action = Some(action.name());
        outcome.node = Some(r.node.to_string());
        match verdict {
            Verdict::Act => {
                outcome.result = Disposition::Accepted;
                outcome.reason = action.to_string();
                actions.push(action);
            }
            Verdict::Duplicate(repeat) => {
                outcome.result = Disposition::Duplicate;
                outcome.reason = repeat.to_string();
            }
        }
    }
    Intake {
        outcomes,
        actions,
        decision,
    }
}

/// Alertmanager always sends a short fingerprint and startsAt; without them the alert cannot
/// be told apart from its re-sends.
fn usable(alert: &Alert) -> Result<(), String> {
    let fingerprint = &alert.fingerprint;
    if fingerprint.is_empty() {
        return Err(
            "no fingerprint (Alertmanager 0.20 and later send one); cannot act once per alert"
                .into(),
        );
    }
    if fingerprint.len() > MAX_KEY_LEN || !fingerprint.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the fingerprint is not Alertmanager's (at most {MAX_KEY_LEN} printable characters)"
        ));
    }
    if alert.starts_at.len() > MAX_KEY_LEN {
        return Err(format!(
            "startsAt is not an RFC 3339 time (longer than {MAX_KEY_LEN} characters)"
        ));
    }
    Ok(())
}

fn action_for(alert: &Alert, kind: ActionKind, node: &str) -> AlertAction {
    let node = node.to_string();
    let fingerprint = alert.fingerprint.clone();
    let alertname = alert.alertname().unwrap_or_default().to_string();
    match (alert.status, kind) {
        (AlertStatus::Firing, ActionKind::TargetedRound) => AlertAction::TargetedRound {
            node,
            fingerprint,
            alertname,
        },
        (AlertStatus::Firing, ActionKind::Evacuate) => AlertAction::Evacuate {
            node,
            fingerprint,
            alertname,
        },
        (AlertStatus::Resolved, ended) => AlertAction::End {
            node,
            fingerprint,
            alertname,
            ended,
        },
    }
}

fn echo(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_LEN) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::serve::alerts::payload::{parse, samples};

    fn payload(alerts: Vec<serde_json::Value>) -> WebhookPayload {
        parse(&samples::bytes(&samples::payload(alerts))).unwrap_or_else(|e| panic!("{e}"))
    }

    fn ledger() -> Ledger {
        Ledger::new(Duration::from_secs(3600), 100)
    }

    #[test]
    fn firing_alerts_become_actions_and_the_rest_is_accounted_for() {
        let routing = AlertRouting::from_toml("[evacuate]\nalertnames = [\"NodeDiskFailing\"]\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let p = payload(vec![
            samples::alert("firing", "BallastNodeCPUContention", Some("node-1"), "f1"),
            samples::alert("firing", "NodeDiskFailing", Some("node-2"), "f2"),
            samples::alert("firing", "BallastNodeCPUContention", None, "f3"),
            samples::alert("firing", "Watchdog", Some("node-1"), "f4"),
            samples::alert(
                "resolved",
                "BallastNodeMemoryPressure",
                Some("node-3"),
                "f5",
            ),
            samples::alert("firing", "BallastNodeCPUContention", Some("node-4"), ""),
        ]);
        let got = intake(&p, &routing, &ledger(), 1, Instant::now());
        assert_eq!(
            got.actions,
            [
                AlertAction::TargetedRound {
                    node: "node-1".into(),
                    fingerprint: "f1".into(),
                    alertname: "BallastNodeCPUContention".into()
                },
                AlertAction::Evacuate {
                    node: "node-2".into(),
                    fingerprint: "f2".into(),
                    alertname: "NodeDiskFailing".into()
                },
                AlertAction::End {
                    node: "node-3".into(),
                    fingerprint: "f5".into(),
                    alertname: "BallastNodeMemoryPressure".into(),
                    ended: ActionKind::TargetedRound
                },
            ]
        );
        let results: Vec<Disposition> = got.outcomes.iter().map(|o| o.result).collect();
        use Disposition::*;
        assert_eq!(
            results,
            [Accepted, Accepted, Ignored, Ignored, Accepted, Ignored]
        );
        assert!(
            got.outcomes[2].reason.contains("no \"node\" label"),
            "{:?}",
            got.outcomes[2]
        );
        assert!(got.outcomes[3]
            .reason
            .contains("no rule maps alertname \"Watchdog\""));
        assert!(got.outcomes[5].reason.contains("no fingerprint"));
        assert_eq!(got.outcomes[4].action, Some("end"));
        assert_eq!(got.outcomes[0].reason, "targeted round for node node-1");
        let n = |d| count(&got.outcomes, d);
        assert_eq!((n(Accepted), n(Ignored), n(Duplicate)), (3, 3, 0));
    }

    #[test]
    fn a_resent_notification_is_all_duplicates() {
        let routing = AlertRouting::default();
        let mut ledger = ledger();
        let p = payload(vec![
            samples::alert("firing", "BallastNodeCPUContention", Some("node-1"), "f1"),
            samples::alert("firing", "BallastNodeMemoryPressure", Some("node-1"), "f2"),
        ]);
        let now = Instant::now();
        let first = intake(&p, &routing, &ledger, 7, now);
        assert_eq!(first.actions.len(), 2);
        ledger.commit(first.decision, now);
        let again = intake(&p, &routing, &ledger, 7, now + Duration::from_secs(60));
        assert!(again.actions.is_empty());
        assert_eq!(count(&again.outcomes, Disposition::Duplicate), 2);
        assert_eq!(again.outcomes[0].action, Some("targeted_round"));
        assert!(
            again.outcomes[0].reason.contains("already acted"),
            "{:?}",
            again.outcomes[0]
        );
    }

    #[test]
    fn oversized_keys_are_ignored_and_long_names_are_cut_in_the_answer() {
        let long = "x".repeat(500);
        let p = payload(vec![
            samples::alert("firing", "BallastNodeCPUContention", Some("node-1"), &long),
            samples::alert(
                "firing",
                &format!("BallastNode{long}"),
                Some("node-1"),
                "ok",
            ),
        ]);
        let got = intake(&p, &AlertRouting::default(), &ledger(), 1, Instant::now());
        assert_eq!(got.outcomes[0].result, Disposition::Ignored);
        assert!(got.outcomes[0].fingerprint.len() < 140);
        assert!(got.outcomes[1]
            .alertname
            .as_ref()
            .is_some_and(|n| n.len() < 140));
        assert_eq!(got.outcomes[1].result, Disposition::Accepted);
    }
}
