//! A follower relays an authenticated, well-formed `/v1/alerts` call to the leader and passes
//! its answer back, so the receiver in Alertmanager can be a Service over all agents: whichever
//! agent a notification reaches, the leader gets it at once (a 503 "not the leader" would leave
//! Alertmanager retrying until the Service happens to pick the leader: 1 in N per attempt).
//!
//! One hop only: the relayed call carries [`FORWARDED_HEADER`], and an agent that receives such
//! a call while not leading answers 503 instead of relaying again (leadership moved in between;
//! Alertmanager retries). Where the leader is comes from a [`LeaderLocator`] (cluster mode: its
//! pod's IP from the API).

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{header, HeaderName, HeaderValue, Request, Response},
};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// Set on a relayed call: the identity of the agent that relayed it.
pub const FORWARDED_HEADER: HeaderName = HeaderName::from_static("x-ballast-forwarded-by");

/// Largest leader answer passed back (its 202 summary lists each alert).
const ANSWER_LIMIT: usize = 1024 * 1024;

/// Where the leader's webhook is.
pub trait LeaderLocator: Send + Sync + 'static {
    /// `http://ADDRESS:PORT/v1/alerts` of the agent `leader` (an identity: its pod name), or why
    /// it cannot be said.
    fn locate<'a>(&'a self, leader: &'a str) -> BoxFuture<'a, Result<String, String>>;

    /// The address given for `leader` did not answer: look it up afresh next time.
    fn forget(&self, leader: &str);
}

/// Relays calls to the leader.
#[derive(Clone)]
pub struct Forwarder {
    identity: HeaderValue,
    locator: Arc<dyn LeaderLocator>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("identity", &self.identity)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a call could not be relayed (answered as 503: a retry may reach a leader).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot find the leader {leader}: {why}")]
    Locate { leader: String, why: String },
    #[error("the leader {leader} at {url} did not answer: {why}")]
    Unreachable {
        leader: String,
        url: String,
        why: String,
    },
}

impl Forwarder {
    /// `identity` names this agent on relayed calls; it must be a valid header value (a pod
    /// name is).
    pub fn new(
        identity: &str,
        locator: Arc<dyn LeaderLocator>,
        timeout: Duration,
    ) -> Result<Self, header::InvalidHeaderValue> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Ok(Self {
            identity: HeaderValue::from_str(identity)?,
            locator,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// POSTs `body` with `authorization` to `leader`'s webhook; its answer, status and body.
    pub async fn relay(
        &self,
        leader: &str,
        authorization: &HeaderValue,
        body: Bytes,
    ) -> Result<Response<Body>, ForwardError> {
        let url = self
            .locator
            .locate(leader)
            .await
            .map_err(|why| ForwardError::Locate {
                leader: leader.to_owned(),
                why,
            })?;
        let unreachable = |why: String| ForwardError::Unreachable {
            leader: leader.to_owned(),
            url: url.clone(),
            why,
        };
        let request = Request::post(&url)
            .header(header::AUTHORIZATION, authorization)
            .header(header::CONTENT_TYPE, "application/json")
            .header(FORWARDED_HEADER, &self.identity)
            .body(Full::new(body))
            .map_err(|e| unreachable(format!("bad request: {e}")))?;
        let answer = tokio::time::timeout(self.timeout, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let (parts, body) = response.into_parts();
            let bytes = Limited::new(body, ANSWER_LIMIT)
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((parts.status, parts.headers, bytes))
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        let (status, headers, bytes) = answer
            .inspect_err(|_| self.locator.forget(leader))
            .map_err(unreachable)?;
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        for name in [header::CONTENT_TYPE, header::WWW_AUTHENTICATE] {
            if let Some(value) = headers.get(&name) {
                response.headers_mut().insert(name, value.clone());
            }
        }
        Ok(response)
    }
}
