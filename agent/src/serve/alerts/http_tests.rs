//! `/v1/alerts` through the router, as Alertmanager calls it: every status code of the
//! contract, and that a refused call changes nothing (the same payload is accepted afterwards).

use axum::{
    body::Body,
    http::{header, HeaderMap, Request, StatusCode},
    Router,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc::error::TryRecvError, watch};
use tower::ServiceExt;

use super::{
    channel, forward::Forwarder, handler::BODY_LIMIT, payload::samples, routes, ActionKind,
    AlertAction, AlertReceiver, AlertRouting, AlertSender, AlertsConfig, Leadership,
    QUEUE_CAPACITY,
};
use crate::serve::auth::BearerToken;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
pub(super) const BEARER: &str = "Bearer 0123456789abcdef0123456789abcdef";

pub(super) struct Harness {
    pub router: Router,
    pub leadership: watch::Sender<Leadership>,
    pub actions: AlertReceiver,
    /// Another handle on the queue, to fill it.
    sender: AlertSender,
}

pub(super) fn harness(leadership: Leadership) -> Harness {
    harness_relaying(leadership, None)
}

/// A webhook whose follower relays through `forwarder`.
pub(super) fn harness_relaying(leadership: Leadership, forwarder: Option<Forwarder>) -> Harness {
    let (sender, actions) = channel();
    let (lead, view) = watch::channel(leadership);
    let config = AlertsConfig {
        token: BearerToken::from_text(TOKEN, "test".into()).expect("a valid token"),
        routing: AlertRouting::default(),
        leadership: view,
        actions: sender.clone(),
        forwarder,
    };
    Harness {
        router: routes(Some(config)),
        leadership: lead,
        actions,
        sender,
    }
}

pub(super) fn leader() -> Leadership {
    Leadership::Leader { term: 1 }
}

pub(super) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub(super) async fn call(
    router: &Router,
    authorization: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut request = Request::post("/v1/alerts");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    if let Some(value) = content_type {
        request = request.header(header::CONTENT_TYPE, value);
    }
    let request = request.body(Body::from(body)).expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a readable body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// As Alertmanager sends it.
pub(super) async fn post(router: &Router, payload: &Value) -> Answer {
    call(
        router,
        Some(BEARER),
        Some("application/json"),
        samples::bytes(payload),
    )
    .await
}

fn cpu_alert(status: &str, node: &str, fingerprint: &str) -> Value {
    samples::alert(status, "BallastNodeCPUContention", Some(node), fingerprint)
}

pub(super) fn firing() -> Value {
    samples::payload(vec![cpu_alert("firing", "node-1", "c6eadffa33fcdf37")])
}

pub(super) fn drain(actions: &mut AlertReceiver) -> Vec<AlertAction> {
    let mut out = Vec::new();
    while let Ok(action) = actions.try_recv() {
        out.push(action);
    }
    out
}

pub(super) fn round(node: &str, fingerprint: &str) -> AlertAction {
    AlertAction::TargetedRound {
        node: node.into(),
        fingerprint: fingerprint.into(),
        alertname: "BallastNodeCPUContention".into(),
    }
}

/// The refused call changed nothing: the same payload now acts, once.
async fn assert_first_acceptance(h: &mut Harness) {
    let answer = post(&h.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 1, "{}", answer.body);
    assert_eq!(drain(&mut h.actions), [round("node-1", "c6eadffa33fcdf37")]);
}

#[tokio::test]
async fn without_a_token_or_with_a_wrong_one_401_and_nothing_happens() {
    let mut h = harness(leader());
    let body = samples::bytes(&firing());
    let answer = call(&h.router, None, Some("application/json"), body.clone()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        answer.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"ballast\""
    );
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer")),
        "{}",
        answer.body
    );
    for wrong in [
        "Bearer 0123456789abcdef0123456789abcdeF",
        "Bearer nope",
        "Basic dXNlcjpwYXNz",
    ] {
        let answer = call(
            &h.router,
            Some(wrong),
            Some("application/json"),
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(answer.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .is_ok_and(|c| c.starts_with("Bearer")));
    }
    let answer = call(
        &h.router,
        Some("Bearer wrong"),
        Some("application/json"),
        body,
    )
    .await;
    assert_eq!(
        answer.headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"ballast\", error=\"invalid_token\""
    );
    assert_eq!(h.actions.try_recv(), Err(TryRecvError::Empty));
    assert_first_acceptance(&mut h).await;
}

#[tokio::test]
async fn another_content_type_is_415() {
    let mut h = harness(leader());
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = call(
            &h.router,
            Some(BEARER),
            content_type,
            samples::bytes(&firing()),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert!(answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("application/json")));
    }
    // Parameters and case do not matter.
    let answer = call(
        &h.router,
        Some(BEARER),
        Some("Application/JSON; charset=utf-8"),
        samples::bytes(&firing()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(drain(&mut h.actions).len(), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let mut h = harness(leader());
    // A valid payload padded past the limit with an annotation.
    let mut big = firing();
    big["commonAnnotations"]["padding"] = json!("x".repeat(BODY_LIMIT));
    let answer = call(
        &h.router,
        Some(BEARER),
        Some("application/json"),
        samples::bytes(&big),
    )
    .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("256 KiB")),
        "{}",
        answer.body
    );
    assert_first_acceptance(&mut h).await;
}

#[tokio::test]
async fn malformed_or_unknown_payloads_are_400_with_the_reason() {
    let mut h = harness(leader());
    let mut v5 = firing();
    v5["version"] = json!("5");
    let mut bad_status = firing();
    bad_status["alerts"][0]["status"] = json!("pending");
    for (body, wanted) in [
        (b"{\"version\": \"4\", ".to_vec(), "EOF"),
        (b"<html>".to_vec(), "not a JSON object"),
        (
            b"{\"version\": \"4\", nope}".to_vec(),
            "key must be a string",
        ),
        (samples::bytes(&v5), "version \"5\" is not supported"),
        (samples::bytes(&bad_status), "unknown variant `pending`"),
        (
            samples::bytes(&json!({"version": "4", "status": "firing"})),
            "missing field `alerts`",
        ),
    ] {
        let answer = call(&h.router, Some(BEARER), Some("application/json"), body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{wanted}");
        assert!(
            answer.body["error"]
                .as_str()
                .is_some_and(|e| e.contains(wanted)),
            "{wanted}: {}",
            answer.body
        );
    }
    assert_eq!(h.actions.try_recv(), Err(TryRecvError::Empty));
    assert_first_acceptance(&mut h).await;
}

#[tokio::test]
async fn firing_is_acted_on_once_resolving_ends_it_and_the_answer_says_why() {
    let mut h = harness(leader());
    let notification = samples::payload(vec![
        cpu_alert("firing", "node-1", "f1"),
        samples::alert("firing", "BallastNodeCPUContention", None, "f2"),
        samples::alert("firing", "Watchdog", Some("node-1"), "f3"),
    ]);
    let answer = post(&h.router, &notification).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    let body = &answer.body;
    assert_eq!(
        (&body["accepted"], &body["duplicate"], &body["ignored"]),
        (&json!(1), &json!(0), &json!(2)),
        "{body}"
    );
    assert_eq!(body["alerts"][0]["result"], "accepted");
    assert_eq!(body["alerts"][0]["action"], "targeted_round");
    assert_eq!(body["alerts"][0]["node"], "node-1");
    assert_eq!(body["alerts"][1]["result"], "ignored");
    assert!(
        body["alerts"][1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no \"node\" label")),
        "{body}"
    );
    assert!(
        body["alerts"][2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Watchdog")),
        "{body}"
    );
    assert_eq!(drain(&mut h.actions), [round("node-1", "f1")]);

    // Alertmanager re-sends the group (group_interval, repeat_interval): no second round.
    let answer = post(&h.router, &notification).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED);
    assert_eq!(answer.body["duplicate"], 1, "{}", answer.body);
    assert_eq!(answer.body["alerts"][0]["result"], "duplicate");
    assert_eq!(h.actions.try_recv(), Err(TryRecvError::Empty));

    let resolved = samples::payload(vec![cpu_alert("resolved", "node-1", "f1")]);
    let answer = post(&h.router, &resolved).await;
    assert_eq!(answer.body["accepted"], 1, "{}", answer.body);
    assert_eq!(answer.body["alerts"][0]["action"], "end");
    assert_eq!(
        drain(&mut h.actions),
        [AlertAction::End {
            node: "node-1".into(),
            fingerprint: "f1".into(),
            alertname: "BallastNodeCPUContention".into(),
            ended: ActionKind::TargetedRound,
        }]
    );
    let answer = post(&h.router, &resolved).await;
    assert_eq!(answer.body["duplicate"], 1, "{}", answer.body);
    assert_eq!(h.actions.try_recv(), Err(TryRecvError::Empty));

    // It fires again (a new startsAt): a new round.
    let mut again = cpu_alert("firing", "node-1", "f1");
    again["startsAt"] = json!("2024-05-01T12:00:00Z");
    let answer = post(&h.router, &samples::payload(vec![again])).await;
    assert_eq!(answer.body["accepted"], 1, "{}", answer.body);
    assert_eq!(drain(&mut h.actions), [round("node-1", "f1")]);
}

#[tokio::test]
async fn a_follower_answers_503_naming_the_leader_and_remembers_nothing() {
    let mut h = harness(Leadership::Follower {
        leader: Some("ballast-7xk2p".into()),
    });
    let answer = post(&h.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers["x-ballast-leader"], "ballast-7xk2p");
    assert_eq!(answer.headers[header::CONNECTION], "close");
    assert_eq!(answer.body["leader"], "ballast-7xk2p");
    assert!(answer.body["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not lead")));
    assert_eq!(h.actions.try_recv(), Err(TryRecvError::Empty));

    h.leadership
        .send_replace(Leadership::Follower { leader: None });
    let answer = post(&h.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!answer.headers.contains_key("x-ballast-leader"));
    assert_eq!(answer.body["leader"], Value::Null);

    // Now it leads: the alert it saw as a follower is new to it.
    h.leadership.send_replace(leader());
    assert_first_acceptance(&mut h).await;
}

#[tokio::test]
async fn a_new_term_acts_again_on_an_alert_seen_in_an_earlier_one() {
    let mut h = harness(leader());
    assert_first_acceptance(&mut h).await;
    h.leadership.send_replace(Leadership::Follower {
        leader: Some("other".into()),
    });
    h.leadership.send_replace(Leadership::Leader { term: 2 });
    assert_first_acceptance(&mut h).await;
}

#[tokio::test]
async fn a_standalone_agent_answers_503_without_a_leader() {
    let h = harness(Leadership::Standalone);
    let answer = post(&h.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.body["error"],
        "standalone agent: no leader, nothing to rebalance"
    );
    assert_eq!(answer.body["leader"], Value::Null);
}

#[tokio::test]
async fn without_a_token_file_the_webhook_is_404() {
    let answer = call(
        &routes(None),
        Some(BEARER),
        Some("application/json"),
        samples::bytes(&firing()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(
        answer.body["error"],
        "webhook disabled: start the agent with --alerts-token-file"
    );
}

#[tokio::test]
async fn a_full_queue_is_503_and_the_retry_acts() {
    let mut h = harness(leader());
    for i in 0..QUEUE_CAPACITY {
        h.sender
            .try_send(round("filler", &i.to_string()))
            .expect("room in the queue");
    }
    let answer = post(&h.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("queue is full")),
        "{}",
        answer.body
    );
    assert_eq!(drain(&mut h.actions).len(), QUEUE_CAPACITY);
    assert_first_acceptance(&mut h).await;
}

#[tokio::test]
async fn a_stopped_leader_loop_is_503() {
    let h = harness(leader());
    drop(h.actions);
    let answer = post(&h.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not running")),
        "{}",
        answer.body
    );
}

#[test]
fn every_call_is_counted_by_result() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // A current-thread runtime keeps the handler on this thread, where the recorder is set.
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let h = harness(leader());
            let two = samples::payload(vec![
                cpu_alert("firing", "node-1", "f1"),
                samples::alert("firing", "Watchdog", Some("node-1"), "f2"),
            ]);
            post(&h.router, &two).await;
            post(&h.router, &two).await;
            call(
                &h.router,
                None,
                Some("application/json"),
                samples::bytes(&two),
            )
            .await;
            h.leadership
                .send_replace(Leadership::Follower { leader: None });
            post(&h.router, &two).await;
        })
    });
    let text = handle.render();
    for (result, value) in [
        ("accepted", 1),
        ("duplicate", 1),
        ("ignored", 2),
        ("rejected", 1),
        ("not_leader", 2),
    ] {
        let line = format!("ballast_alerts_received_total{{result=\"{result}\"}} {value}");
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn over_a_socket_a_follower_closes_the_connection_so_a_retry_can_reach_another_agent() {
    use std::io::{Read, Write};
    let h = harness(Leadership::Follower {
        leader: Some("ballast-leader-pod".into()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    let router = h.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let body = samples::bytes(&firing());
    let client = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        let head = format!(
            "POST /v1/alerts HTTP/1.1\r\nHost: ballast\r\nConnection: keep-alive\r\nAuthorization: {BEARER}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes())?;
        stream.write_all(&body)?;
        // Ends only if the server closes the connection despite the client's keep-alive (a
        // connection left open fails with a timeout instead).
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(String::from_utf8_lossy(&response).to_lowercase())
    });
    let text = client
        .await
        .expect("the client ran")
        .expect("the server closed the connection");
    assert!(text.starts_with("http/1.1 503"), "{text}");
    assert!(
        text.contains("x-ballast-leader: ballast-leader-pod"),
        "{text}"
    );
    assert!(text.contains("connection: close"), "{text}");
    server.abort();
}

#[tokio::test]
async fn the_agents_router_serves_the_webhook_beside_the_other_routes() {
    use crate::{collect::sample::Mode, state::AgentState};
    let state = std::sync::Arc::new(AgentState::new(
        "node-1".into(),
        Mode::Unavailable,
        None,
        1.0,
    ));
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let disabled = crate::serve::router(
        state.clone(),
        handle.clone(),
        crate::serve::Options::default(),
    );
    let answer = post(&disabled, &firing()).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let mut h = harness(leader());
    let (sender, actions) = channel();
    h.actions = actions;
    let config = AlertsConfig {
        token: BearerToken::from_text(TOKEN, "test".into()).expect("a valid token"),
        routing: AlertRouting::default(),
        leadership: h.leadership.subscribe(),
        actions: sender,
        forwarder: None,
    };
    let options = crate::serve::Options {
        alerts: Some(config),
        ..crate::serve::Options::default()
    };
    h.router = crate::serve::router(state, handle, options);
    assert_first_acceptance(&mut h).await;
    let healthz = h
        .router
        .clone()
        .oneshot(
            Request::get("/healthz")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("infallible");
    assert_eq!(
        healthz.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "no collection yet, still routed"
    );
}
