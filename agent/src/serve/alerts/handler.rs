//! The HTTP edge of `/v1/alerts`. Checks run cheapest and least revealing first, and a call
//! refused at any step changes nothing:
//!
//! | step | refusal |
//! |---|---|
//! | webhook configured (`--alerts-token-file`) | 404 |
//! | `Authorization: Bearer <token>` | 401 + `WWW-Authenticate: Bearer` |
//! | `Content-Type: application/json` | 415 |
//! | body at most [`BODY_LIMIT`] | 413 |
//! | version 4 payload, at most [`super::MAX_ALERTS`] alerts | 400 |
//! | this agent leads, else it relays the call to the leader ([`super::forward`]) | 503 + `X-Ballast-Leader`, connection closed |
//! | the actions fit in the leader's queue | 503 |
//!
//! then 202 with what became of each alert (a relayed call: the leader's answer, with
//! `X-Ballast-Leader`). Alertmanager retries 5xx and drops 4xx, so the
//! refusals that a retry can cure (not the leader, queue full) are 503 and the others 4xx.

use std::sync::{Arc, Mutex, PoisonError};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, Request, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Serialize;
use tokio::sync::{mpsc::error::TrySendError, watch};
use tracing::{info, warn};

use super::{
    forward::{Forwarder, FORWARDED_HEADER},
    intake::{self, intake, AlertOutcome, Disposition, Intake},
    ledger::Ledger,
    payload, AlertRouting, AlertSender, AlertsConfig, Leadership,
};
use crate::serve::{api::ErrorBody, auth::BearerToken};

/// Largest body read. Alertmanager's alerts are well under 1 KiB each, so this holds a
/// notification of a few hundred; set `max_alerts` on the receiver to stay below it.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Names the leader on a non-leader's 503 (absent while no leader is known).
pub const LEADER_HEADER: HeaderName = HeaderName::from_static("x-ballast-leader");

const DISABLED: &str = "webhook disabled: start the agent with --alerts-token-file";
const STANDALONE: &str = "standalone agent: no leader, nothing to rebalance";

struct Webhook {
    token: BearerToken,
    routing: AlertRouting,
    leadership: watch::Receiver<Leadership>,
    actions: AlertSender,
    forwarder: Option<Forwarder>,
    ledger: Mutex<Ledger>,
}

/// The `/v1/alerts` route; answers 404 when `config` is `None`.
pub fn routes(config: Option<AlertsConfig>) -> Router {
    let webhook = config.map(|c| {
        let retention = std::time::Duration::from_secs(c.routing.remember_seconds);
        let ledger = Ledger::new(retention, c.routing.remember_max);
        Arc::new(Webhook {
            token: c.token,
            routing: c.routing,
            leadership: c.leadership,
            actions: c.actions,
            forwarder: c.forwarder,
            ledger: Mutex::new(ledger),
        })
    });
    Router::new()
        .route("/v1/alerts", post(post_alerts))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(webhook)
}

async fn post_alerts(State(webhook): State<Option<Arc<Webhook>>>, request: Request) -> Response {
    let Some(webhook) = webhook else {
        return error(StatusCode::NOT_FOUND, DISABLED.into());
    };
    match webhook.receive(request).await {
        Ok(response) => response,
        Err(refusal) => {
            count("rejected", 1);
            refusal
        }
    }
}

impl Webhook {
    /// `Err` for a refused call (counted as `rejected`).
    async fn receive(&self, request: Request) -> Result<Response, Response> {
        if let Err(problem) = self.token.check(request.headers()) {
            warn!(
                reason = problem.reason(),
                "alerts webhook call refused: not authenticated"
            );
            let mut response = error(StatusCode::UNAUTHORIZED, problem.reason().into());
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, problem.challenge());
            return Err(response);
        }
        let authorization = request.headers().get(header::AUTHORIZATION).cloned();
        let forwarded_by = request.headers().get(FORWARDED_HEADER).cloned();
        if !is_json(request.headers()) {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the payload as Content-Type: application/json (Alertmanager does)".into(),
            ));
        }
        let body = Bytes::from_request(request, &())
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the body is over {} KiB; lower max_alerts in the webhook_config",
                            BODY_LIMIT / 1024
                        ),
                    )
                } else {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the body: {}", rejection.body_text()),
                    )
                }
            })?;
        let payload = payload::parse(&body).map_err(|problem| {
            warn!(error = %problem, "alerts webhook call refused: bad payload");
            error(StatusCode::BAD_REQUEST, problem.to_string())
        })?;
        let leadership = self.leadership.borrow().clone();
        let term = match leadership {
            Leadership::Leader { term } => term,
            Leadership::Standalone => {
                count("not_leader", payload.alerts.len());
                return Ok(not_leader(STANDALONE.into(), None));
            }
            Leadership::Follower { leader } => {
                let alerts = payload.alerts.len();
                let relay = match (&leader, &self.forwarder, &authorization, &forwarded_by) {
                    (Some(leader), Some(forwarder), Some(authorization), None) => {
                        Some((leader, forwarder, authorization))
                    }
                    _ => None,
                };
                if let Some((leader, forwarder, authorization)) = relay {
                    return Ok(self
                        .relay(forwarder, leader, authorization, body, alerts)
                        .await);
                }
                count("not_leader", alerts);
                if let Some(by) = forwarded_by.as_ref().and_then(|v| v.to_str().ok()) {
                    let reason =
                        format!("relayed by {by}, but this agent does not lead (any more); retry");
                    return Ok(not_leader(reason, leader));
                }
                let reason = match &leader {
                    Some(leader) => format!("this agent does not lead; {leader} does (retry: the Service picks another agent)"),
                    None => "this agent does not lead and no leader is known yet (election under way); retry".into(),
                };
                return Ok(not_leader(reason, leader));
            }
        };
        let now = tokio::time::Instant::now().into_std();
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let Intake {
            outcomes,
            actions,
            decision,
        } = intake(&payload, &self.routing, &ledger, term, now);
        if !actions.is_empty() {
            let permits =
                self.actions
                    .try_reserve_many(actions.len())
                    .map_err(|full_or_closed| {
                        let reason = match full_or_closed {
                        TrySendError::Full(()) => {
                            "the leader's action queue is full (a round is running); retry"
                        }
                        TrySendError::Closed(()) => {
                            "the leader loop is not running; retry (another agent may lead soon)"
                        }
                    };
                        warn!(
                            actions = actions.len(),
                            reason, "alerts webhook call refused"
                        );
                        error(StatusCode::SERVICE_UNAVAILABLE, reason.into())
                    })?;
            for (permit, action) in permits.zip(&actions) {
                info!(
                    action = action.name(),
                    node = action.node(),
                    fingerprint = action.fingerprint(),
                    "alert action queued"
                );
                permit.send(action.clone());
            }
        }
        ledger.commit(decision, now);
        drop(ledger);
        if let Some(by) = forwarded_by.as_ref().and_then(|v| v.to_str().ok()) {
            info!(
                relayed_by = by,
                alerts = payload.alerts.len(),
                "alerts relayed by a follower"
            );
        }
        Ok(accepted(&payload, &outcomes))
    }

    /// Passes the call to the leader and its answer back; 503 when it cannot.
    async fn relay(
        &self,
        forwarder: &Forwarder,
        leader: &str,
        authorization: &HeaderValue,
        body: Bytes,
        alerts: usize,
    ) -> Response {
        match forwarder.relay(leader, authorization, body).await {
            Ok(mut response) => {
                count("forwarded", alerts);
                info!(
                    leader,
                    alerts,
                    status = response.status().as_u16(),
                    "alerts relayed to the leader"
                );
                if let Ok(value) = HeaderValue::from_str(leader) {
                    response.headers_mut().insert(LEADER_HEADER, value);
                }
                response
            }
            Err(why) => {
                count("not_leader", alerts);
                warn!(%why, "alerts not relayed to the leader");
                not_leader(
                    format!("this agent does not lead and {why}; retry"),
                    Some(leader.to_owned()),
                )
            }
        }
    }
}

fn accepted(payload: &payload::WebhookPayload, outcomes: &[AlertOutcome]) -> Response {
    #[derive(Serialize)]
    struct Summary<'a> {
        accepted: usize,
        duplicate: usize,
        ignored: usize,
        /// Alerts Alertmanager left out (`max_alerts`): never seen here.
        truncated_alerts: u64,
        alerts: &'a [AlertOutcome],
    }
    let of = |d: Disposition| intake::count(outcomes, d);
    let summary = Summary {
        accepted: of(Disposition::Accepted),
        duplicate: of(Disposition::Duplicate),
        ignored: of(Disposition::Ignored),
        truncated_alerts: payload.truncated_alerts,
        alerts: outcomes,
    };
    for disposition in [
        Disposition::Accepted,
        Disposition::Duplicate,
        Disposition::Ignored,
    ] {
        count(disposition.as_str(), of(disposition));
    }
    if payload.truncated_alerts > 0 {
        warn!(truncated = payload.truncated_alerts, group_key = %payload.group_key, "Alertmanager truncated the notification (max_alerts): those alerts are not acted on");
    }
    info!(
        accepted = summary.accepted,
        duplicate = summary.duplicate,
        ignored = summary.ignored,
        group_key = %payload.group_key,
        "alerts received"
    );
    (StatusCode::ACCEPTED, Json(summary)).into_response()
}

/// 503 naming the leader. The connection is closed so that Alertmanager's retry opens a new
/// one, which the Service may send to another agent (it balances connections, not requests).
fn not_leader(reason: String, leader: Option<String>) -> Response {
    #[derive(Serialize)]
    struct NotLeader {
        error: String,
        leader: Option<String>,
    }
    let header = leader
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok());
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(NotLeader {
            error: reason,
            leader,
        }),
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(value) = header {
        headers.insert(LEADER_HEADER, value);
    }
    response
}

fn error(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorBody { error })).into_response()
}

/// `application/json`, parameters (charset) allowed, case-insensitive.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn count(result: &'static str, alerts: usize) {
    if alerts > 0 {
        metrics::counter!("ballast_alerts_received_total", "result" => result)
            .increment(alerts as u64);
    }
}
