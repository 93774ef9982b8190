//! The connection layer in front of the REST surface: HTTP/1.1 connections served by hyper
//! (run by hand rather than through `axum::serve` so that a fault can close a connection
//! without any response), the bearer-token identity of every request, request counts, faults,
//! authentication, the write log and the request log.

use std::{convert::Infallible, fmt, sync::Arc};

use axum::{
    body::Body,
    http::{header, Method, Request, Response},
    response::IntoResponse,
    Router,
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower_service::Service;

use super::{
    faults::{RequestSummary, Verdict},
    http::{Identity, Target, WrittenName},
    request_info::RequestInfo,
    status::ApiError,
    writelog::{RequestRecord, WriteLog, WriteRecord},
    Shared,
};

/// Returned instead of a response to make hyper close the connection unanswered.
#[derive(Debug)]
struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

fn bearer(request: &Request<Incoming>) -> Option<String> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value.strip_prefix("Bearer ")?.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Accepts connections until the runtime shuts down.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, router: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let (shared, router) = (Arc::clone(&shared), router.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let (shared, router) = (Arc::clone(&shared), router.clone());
                async move { answer(&shared, router, request).await }
            });
            // A connection that ends in an error (a dropped one, a client gone) needs no report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The log entries of a request (the write log's only for a write), recorded however it ends:
/// answered, dropped by a fault, or abandoned because the client closed the connection first
/// (status 0 unless answered).
struct PendingRecord<'a> {
    log: &'a WriteLog,
    write: Option<WriteRecord>,
    request: Option<RequestRecord>,
}

impl PendingRecord<'_> {
    fn answered(&mut self, status: u16) {
        if let Some(write) = &mut self.write {
            write.status = status;
        }
        if let Some(request) = &mut self.request {
            request.status = status;
        }
    }
}

impl Drop for PendingRecord<'_> {
    fn drop(&mut self) {
        if let Some(record) = self.write.take() {
            self.log.record(record);
        }
        if let Some(record) = self.request.take() {
            self.log.record_request(record);
        }
    }
}

async fn answer(
    shared: &Shared,
    router: Router,
    request: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let identity = bearer(&request);
    let target = Target::parse(request.uri().path());
    let write = request.method() != Method::GET;
    shared.log.count(identity.as_deref());
    let info = RequestInfo::of(
        request.method().as_str(),
        request.uri().path(),
        request.uri().query(),
    );
    let mut pending = PendingRecord {
        log: &shared.log,
        request: Some(RequestRecord {
            at: Default::default(),
            identity: identity.clone().unwrap_or_default(),
            info,
            status: 0,
        }),
        write: write.then(|| WriteRecord {
            at: Default::default(),
            wall: std::time::SystemTime::UNIX_EPOCH,
            identity: identity.clone().unwrap_or_default(),
            method: request.method().to_string(),
            path: request.uri().path().to_string(),
            kind: target.logged_kind(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: target.name.clone().unwrap_or_default(),
            status: 0,
        }),
    };
    let outcome = decide(shared, router, request, identity, &target).await;
    if let Ok(response) = &outcome {
        pending.answered(response.status().as_u16());
        if let (Some(record), Some(WrittenName(name))) = (
            pending.write.as_mut(),
            response.extensions().get::<WrittenName>(),
        ) {
            record.name.clone_from(name);
        }
    }
    outcome
}

async fn decide(
    shared: &Shared,
    mut router: Router,
    mut request: Request<Incoming>,
    identity: Option<String>,
    target: &Target,
) -> Result<Response<Body>, Dropped> {
    let faults = &shared.faults;
    if faults.is_partitioned(identity.as_deref()) {
        faults.wait_while_partitioned(identity.as_deref()).await;
        return Err(Dropped);
    }
    let info = RequestSummary {
        identity: identity.clone(),
        resource: target.resource(),
        write: request.method() != Method::GET,
    };
    let (delay, verdict) = faults.decide(&info);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match verdict {
        Verdict::Drop => return Err(Dropped),
        Verdict::Fail(code) => return Ok(ApiError::injected(code).into_response()),
        Verdict::Serve => {}
    }
    let known = identity.as_ref().is_some_and(|i| {
        shared
            .config
            .identities
            .as_ref()
            .is_none_or(|allowed| allowed.contains(i))
    });
    let Some(identity) = identity.filter(|_| known) else {
        return Ok(ApiError::unauthorized().into_response());
    };
    request.extensions_mut().insert(Identity(identity));
    let response: Result<_, Infallible> = router.call(request.map(Body::new)).await;
    Ok(response.unwrap_or_else(|never| match never {}))
}
