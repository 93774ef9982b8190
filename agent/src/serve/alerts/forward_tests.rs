//! A follower relaying `/v1/alerts` to the leader over real HTTP: the leader acts, the
//! follower passes its answer back; one hop only; an unreachable leader is a 503 that changes
//! nothing.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{header, StatusCode};
use futures::future::BoxFuture;
use tokio::net::TcpListener;

use super::{
    forward::{Forwarder, LeaderLocator, FORWARDED_HEADER},
    handler::LEADER_HEADER,
    http_tests::{call, drain, firing, harness, harness_relaying, leader, post, round, BEARER},
    payload::samples,
    Leadership,
};

/// Answers with a fixed address for `leader-0`, counting what it was asked.
struct Fixed {
    url: String,
    forgotten: Mutex<Vec<String>>,
}

impl LeaderLocator for Fixed {
    fn locate<'a>(&'a self, leader: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            match leader {
                "leader-0" => Ok(self.url.clone()),
                other => Err(format!("no pod {other}")),
            }
        })
    }

    fn forget(&self, leader: &str) {
        self.forgotten
            .lock()
            .expect("not poisoned")
            .push(leader.to_owned());
    }
}

/// Serves `router` on a loopback port until the test ends.
async fn serve(router: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

fn follower_of(url: String) -> (super::http_tests::Harness, Arc<Fixed>) {
    let locator = Arc::new(Fixed {
        url,
        forgotten: Mutex::new(Vec::new()),
    });
    let forwarder = Forwarder::new("follower-1", locator.clone(), Duration::from_secs(2))
        .expect("a valid identity");
    let follower = harness_relaying(
        Leadership::Follower {
            leader: Some("leader-0".into()),
        },
        Some(forwarder),
    );
    (follower, locator)
}

#[tokio::test]
async fn a_follower_relays_to_the_leader_and_passes_its_answer_back() {
    let mut leading = harness(leader());
    let address = serve(leading.router.clone()).await;
    let (mut follower, _) = follower_of(format!("http://{address}/v1/alerts"));

    let answer = post(&follower.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 1);
    assert_eq!(
        answer
            .headers
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("leader-0")
    );
    assert_eq!(
        drain(&mut leading.actions),
        [round("node-1", "c6eadffa33fcdf37")]
    );
    assert!(
        drain(&mut follower.actions).is_empty(),
        "the follower queues nothing"
    );

    // Alertmanager sending the same notification to every agent: the leader acts once.
    let again = post(&follower.router, &firing()).await;
    assert_eq!(again.body["duplicate"], 1, "{}", again.body);
    assert!(drain(&mut leading.actions).is_empty());

    // The follower authenticates and validates before relaying: nothing reaches the leader.
    let refused = call(
        &follower.router,
        None,
        Some("application/json"),
        samples::bytes(&firing()),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let malformed = call(
        &follower.router,
        Some(BEARER),
        Some("application/json"),
        b"{".to_vec(),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert!(drain(&mut leading.actions).is_empty());
}

#[tokio::test]
async fn a_relayed_call_is_never_relayed_again() {
    // An agent that stopped leading between the relay and the call: 503, not a second hop.
    let stale = harness(Leadership::Follower {
        leader: Some("leader-0".into()),
    });
    let address = serve(stale.router.clone()).await;
    let (follower, _) = follower_of(format!("http://{address}/v1/alerts"));
    let answer = post(&follower.router, &firing()).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    let error = answer.body["error"].as_str().unwrap_or_default();
    assert!(error.contains("relayed by follower-1"), "{error}");

    // The header alone (a client pretending to relay) gets the same: no hop from it either.
    let direct = axum::http::Request::post("/v1/alerts")
        .header(header::AUTHORIZATION, BEARER)
        .header(header::CONTENT_TYPE, "application/json")
        .header(FORWARDED_HEADER, "someone");
    let request = direct
        .body(axum::body::Body::from(samples::bytes(&firing())))
        .expect("a request");
    let response = tower::ServiceExt::oneshot(follower.router.clone(), request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn an_unreachable_leader_is_a_503_that_changes_nothing() {
    // A port nothing listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = closed.local_addr().expect("an address");
    drop(closed);
    let (mut follower, locator) = follower_of(format!("http://{address}/v1/alerts"));
    let answer = post(&follower.router, &firing()).await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(
        answer
            .headers
            .get(LEADER_HEADER)
            .and_then(|v| v.to_str().ok()),
        Some("leader-0")
    );
    assert_eq!(
        *locator.forgotten.lock().expect("not poisoned"),
        ["leader-0"]
    );
    assert!(drain(&mut follower.actions).is_empty());

    // A leader the locator cannot place: 503 with why.
    follower.leadership.send_replace(Leadership::Follower {
        leader: Some("leader-9".into()),
    });
    let answer = post(&follower.router, &firing()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let error = answer.body["error"].as_str().unwrap_or_default();
    assert!(error.contains("no pod leader-9"), "{error}");
}
