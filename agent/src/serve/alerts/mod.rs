//! `POST /v1/alerts`: Alertmanager's webhook receiver, turning alerts into [`AlertAction`]s
//! for the leader loop (targeted rounds, evacuations, their ends).
//!
//! Every agent serves it; only the leader acts. The pieces, each in its own file:
//! [`payload`] (the version 4 JSON), [`routing`] (which alert asks for which action:
//! configuration), [`ledger`] (acting once per firing), [`intake`] (the three together, pure)
//! [`handler`] (HTTP: authentication, limits, leadership, queueing, metrics) and [`forward`] (a
//! follower relaying a call to the leader). The contract
//! is in the README, "Alert-driven rebalancing".
//!
//! Wiring: [`channel`] gives the action queue; the leader loop owns the [`AlertReceiver`] and
//! publishes its [`Leadership`] on a `tokio::sync::watch` channel whose receiver goes into
//! [`AlertsConfig`].

pub mod forward;
pub mod handler;
pub mod intake;
pub mod ledger;
pub mod payload;
pub mod routing;

#[cfg(test)]
mod forward_tests;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod http_tests;

use std::fmt;

use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use handler::routes;
pub use payload::MAX_ALERTS;
pub use routing::{ActionKind, AlertRouting, RoutingError};

use super::auth::BearerToken;

/// What an alert asks the leader to do. `fingerprint` ties an [`AlertAction::End`] to the
/// action it ends (one node may have several alerts at once); `alertname` is for the leader's
/// Events and logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AlertAction {
    /// Run a round now, focused on `node`: the round interval is skipped, never the safety
    /// limits, cooldowns or the hysteresis floor.
    TargetedRound {
        node: String,
        fingerprint: String,
        alertname: String,
    },
    /// Drain `node`'s eligible pods, one workload at a time, with every eviction rule, until
    /// the matching [`AlertAction::End`] (or leadership changes).
    Evacuate {
        node: String,
        fingerprint: String,
        alertname: String,
    },
    /// The alert `fingerprint` resolved: stop what it started (`ended` says what that was).
    /// Also sent for alerts this agent did not see fire (a previous leader did): ignore an
    /// End for an unknown fingerprint.
    End {
        node: String,
        fingerprint: String,
        alertname: String,
        ended: ActionKind,
    },
}

impl AlertAction {
    /// `targeted_round`, `evacuate` or `end`.
    pub fn name(&self) -> &'static str {
        match self {
            AlertAction::TargetedRound { .. } => "targeted_round",
            AlertAction::Evacuate { .. } => "evacuate",
            AlertAction::End { .. } => "end",
        }
    }

    pub fn node(&self) -> &str {
        match self {
            AlertAction::TargetedRound { node, .. }
            | AlertAction::Evacuate { node, .. }
            | AlertAction::End { node, .. } => node,
        }
    }

    pub fn fingerprint(&self) -> &str {
        match self {
            AlertAction::TargetedRound { fingerprint, .. }
            | AlertAction::Evacuate { fingerprint, .. }
            | AlertAction::End { fingerprint, .. } => fingerprint,
        }
    }
}

impl fmt::Display for AlertAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlertAction::TargetedRound { node, .. } => write!(f, "targeted round for node {node}"),
            AlertAction::Evacuate { node, .. } => write!(f, "evacuate node {node}"),
            AlertAction::End {
                node,
                ended: ActionKind::TargetedRound,
                ..
            } => write!(f, "end the targeted round for node {node}"),
            AlertAction::End {
                node,
                ended: ActionKind::Evacuate,
                ..
            } => write!(f, "end the evacuation of node {node}"),
        }
    }
}

pub type AlertSender = mpsc::Sender<AlertAction>;
pub type AlertReceiver = mpsc::Receiver<AlertAction>;

/// Actions the queue holds: two payloads of [`MAX_ALERTS`]. A call whose actions do not fit
/// is refused with 503 (Alertmanager retries) and changes nothing.
pub const QUEUE_CAPACITY: usize = 2 * MAX_ALERTS;

/// The queue from the webhook to the leader loop.
pub fn channel() -> (AlertSender, AlertReceiver) {
    mpsc::channel(QUEUE_CAPACITY)
}

/// Whether this agent acts on alerts, published by the leader election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// `ballast agent --standalone`: there is no leader, nothing to rebalance.
    Standalone,
    /// Another agent leads (its identity, the Lease's holder, when known).
    Follower { leader: Option<String> },
    /// This agent leads. `term` changes every time it becomes leader (e.g. its count of
    /// acquisitions): alerts remembered in an earlier term are acted on again.
    Leader { term: u64 },
}

/// Everything `/v1/alerts` needs; without it (`None`) the route answers 404.
#[derive(Debug)]
pub struct AlertsConfig {
    pub token: BearerToken,
    pub routing: AlertRouting,
    pub leadership: watch::Receiver<Leadership>,
    pub actions: AlertSender,
    /// Relays calls to the leader while this agent follows (cluster mode); without it a
    /// follower answers 503.
    pub forwarder: Option<forward::Forwarder>,
}

/// Registers the description of `ballast_alerts_received_total`.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "ballast_alerts_received_total",
        "Alerts received on /v1/alerts by result (accepted, duplicate, ignored, forwarded: relayed to the leader, not_leader: per alert; rejected: per refused call)."
    );
}
