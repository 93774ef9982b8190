//! Serving HTTP: /metrics (Prometheus text), /v1/load (JSON), /healthz, Alertmanager's webhook on
//! /v1/alerts, and in cluster mode /v1/decisions. In cluster mode /v1/load and /v1/decisions need
//! the agents' shared bearer token ([`auth`]); /metrics and /healthz stay open for Prometheus and
//! the kubelet. Every request has a deadline, and a body limit.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod exposition;
#[cfg(test)]
pub mod fixtures;
pub mod metrics;

use std::{path::PathBuf, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, sync::watch};
use tower_http::{limit::RequestBodyLimitLayer, timeout::TimeoutLayer};

use crate::{cluster::decisions::DecisionLog, collect::worker::monotonic_ns, state::AgentState};

/// How long a request may take, reading its body included, before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's head (line and headers), on a new connection and
/// between requests on a kept-alive one.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long requests in flight may finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body accepted (413 above) except on /v1/alerts (its own limit): nothing
/// else served here reads a body at all.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Where /v1/load comes from.
#[derive(Clone, Debug, Default)]
pub enum LoadFrom {
    /// This agent's collectors and load model.
    #[default]
    Collectors,
    /// A JSON file in the /v1/load schema, read again on every request (`--load-from`, for tests
    /// and demos); served with `source: "file"`.
    File(PathBuf),
}

/// What the server serves besides the state.
#[derive(Debug, Default)]
pub struct Options {
    pub load: LoadFrom,
    /// `--alerts-token-file`: the Alertmanager webhook (404 without).
    pub alerts: Option<alerts::AlertsConfig>,
    /// Cluster mode: the token /v1/load and /v1/decisions require.
    pub token: Option<auth::TokenFile>,
    /// Cluster mode: the leader's recent rounds.
    pub decisions: Option<Arc<DecisionLog>>,
}

#[derive(Clone)]
struct Ctx {
    state: Arc<AgentState>,
    self_metrics: PrometheusHandle,
    load: LoadFrom,
    decisions: Option<Arc<DecisionLog>>,
}

/// `options.alerts` is `None` without `--alerts-token-file`: `/v1/alerts` then answers 404.
pub fn router(state: Arc<AgentState>, self_metrics: PrometheusHandle, options: Options) -> Router {
    let ctx = Ctx {
        state,
        self_metrics,
        load: options.load,
        decisions: options.decisions.clone(),
    };
    let mut protected = Router::new().route("/v1/load", get(get_load));
    if options.decisions.is_some() {
        protected = protected.route("/v1/decisions", get(get_decisions));
    }
    if let Some(token) = options.token {
        protected = protected.layer(middleware::from_fn_with_state(token, auth::require_token));
    }
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .merge(protected)
        .with_state(ctx)
        // The webhook has its own, larger limit and says how to stay under it.
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT_BYTES))
        .merge(alerts::routes(options.alerts))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
}

/// Serves until `shutdown` turns true, then finishes the requests in flight (at most
/// [`DRAIN_TIMEOUT`]).
///
/// The connections are served here rather than by `axum::serve`, which sets no header-read
/// deadline: a client that opens connections and sends nothing (or a header a byte at a time)
/// would hold them forever. Here a request head must arrive within [`HEADER_READ_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    state: Arc<AgentState>,
    self_metrics: PrometheusHandle,
    options: Options,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = router(state, self_metrics, options);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let connection =
            graceful.watch(http.serve_connection(hyper_util::rt::TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
    Ok(())
}

/// Resolves once `shutdown` turns true (the guard `wait_for` returns must not be held across
/// the accept loop's awaits).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn get_metrics(State(ctx): State<Ctx>) -> Response {
    let started = std::time::Instant::now();
    let body = metrics::render(&ctx.state.view(), &ctx.state.names(), &ctx.self_metrics);
    ::metrics::histogram!("ballast_scrape_render_seconds").record(started.elapsed().as_secs_f64());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn unavailable(error: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(api::ErrorBody { error }),
    )
        .into_response()
}

async fn get_load(State(ctx): State<Ctx>) -> Response {
    match &ctx.load {
        LoadFrom::Collectors => {
            match api::LoadResponse::from_view(&ctx.state, &ctx.state.view(), monotonic_ns()) {
                Some(load) => Json(load).into_response(),
                None => unavailable(
                    "no complete collection window yet; retry after one interval".into(),
                ),
            }
        }
        LoadFrom::File(path) => match api::LoadResponse::from_file(path, &ctx.state.node_name) {
            Ok(load) => Json(load).into_response(),
            Err(error) => {
                tracing::warn!(%error, "cannot serve /v1/load from the file");
                unavailable(error.to_string())
            }
        },
    }
}

async fn get_decisions(State(ctx): State<Ctx>) -> Response {
    match &ctx.decisions {
        Some(log) => Json(log.document()).into_response(),
        None => (StatusCode::NOT_FOUND, "not in cluster mode\n").into_response(),
    }
}

/// Healthy while collections keep landing: the last one is younger than three intervals. With
/// `--load-from` nothing is collected; healthy while the file can be served.
async fn get_healthz(State(ctx): State<Ctx>) -> Response {
    if let LoadFrom::File(path) = &ctx.load {
        return match api::LoadResponse::from_file(path, &ctx.state.node_name) {
            Ok(_) => (StatusCode::OK, "ok (load from a file, not measured)\n").into_response(),
            Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
        };
    }
    let view = ctx.state.view();
    let max_age_ns = (ctx.state.interval_seconds * 3.0 * 1e9) as u64;
    match view.snapshot {
        Some(s) if monotonic_ns().saturating_sub(s.at_ns) <= max_age_ns => {
            (StatusCode::OK, "ok\n").into_response()
        }
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "collections are stalled\n").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no collection yet\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use http::{header, Method, Request};
    use http_body_util::{BodyExt, Full};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    use super::*;
    use crate::{cluster::fence::Fence, collect::sample::Mode};

    struct Served {
        base: String,
        token_path: PathBuf,
        _dir: tempfile::TempDir,
    }

    /// A cluster-mode server on loopback: token file, load from the shipped example file,
    /// decisions.
    async fn cluster_server() -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let token_path = dir.path().join("token");
        std::fs::write(&token_path, "t0k3n\n").expect("written");
        let state = Arc::new(AgentState::new(
            "node-a".into(),
            Mode::Unavailable,
            None,
            1.0,
        ));
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/load-node-a.json");
        let options = Options {
            alerts: None,
            load: LoadFrom::File(example),
            token: Some(auth::TokenFile::open(&token_path).expect("a token")),
            decisions: Some(Arc::new(DecisionLog::new(
                "agent-a".into(),
                Fence::new(Duration::from_secs(10)),
                5,
            ))),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let base = format!("http://{}", listener.local_addr().expect("bound"));
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            let _keep = _stop;
            serve(listener, state, recorder.handle(), options, shutdown).await
        });
        Served {
            base,
            token_path,
            _dir: dir,
        }
    }

    async fn call(
        method: Method,
        url: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut request = Request::builder().method(method).uri(url);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let response = client.request(request).await.expect("an answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn load_and_decisions_need_the_token_metrics_and_health_do_not() {
        let s = cluster_server().await;
        for path in ["/v1/load", "/v1/decisions"] {
            let url = format!("{}{path}", s.base);
            let (status, body) = call(Method::GET, &url, None, vec![]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
            assert!(body.contains("shared token"), "{body}");
            let (status, _) = call(Method::GET, &url, Some("wrong"), vec![]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            let (status, body) = call(Method::GET, &url, Some("t0k3n"), vec![]).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        let (_, load) = call(
            Method::GET,
            &format!("{}/v1/load", s.base),
            Some("t0k3n"),
            vec![],
        )
        .await;
        assert!(load.contains("\"source\":\"file\""), "{load}");
        let (_, decisions) = call(
            Method::GET,
            &format!("{}/v1/decisions", s.base),
            Some("t0k3n"),
            vec![],
        )
        .await;
        assert!(
            decisions.contains("\"identity\":\"agent-a\""),
            "{decisions}"
        );
        assert!(decisions.contains("\"leading\":false"), "{decisions}");
        let (status, _) = call(Method::GET, &format!("{}/metrics", s.base), None, vec![]).await;
        assert_eq!(status, StatusCode::OK);
        let (status, body) = call(Method::GET, &format!("{}/healthz", s.base), None, vec![]).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "ok (load from a file, not measured)\n")
        );
    }

    #[tokio::test]
    async fn a_rotated_token_takes_effect_and_a_lost_one_fails_closed() {
        let s = cluster_server().await;
        let url = format!("{}/v1/load", s.base);
        std::fs::write(&s.token_path, "rotated").expect("rotated");
        assert_eq!(
            call(Method::GET, &url, Some("t0k3n"), vec![]).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(Method::GET, &url, Some("rotated"), vec![]).await.0,
            StatusCode::OK
        );
        std::fs::remove_file(&s.token_path).expect("removed");
        assert_eq!(
            call(Method::GET, &url, Some("rotated"), vec![]).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_sends_nothing_is_cut_off() {
        use tokio::io::AsyncReadExt;

        let s = cluster_server().await;
        let address = s.base.trim_start_matches("http://");
        let mut idle = tokio::net::TcpStream::connect(address)
            .await
            .expect("connected");
        let mut buffer = Vec::new();
        let started = tokio::time::Instant::now();
        // The server closes the connection once the header deadline passes (read returns 0,
        // after a 408 where hyper sends one).
        let read =
            tokio::time::timeout(HEADER_READ_TIMEOUT * 3, idle.read_to_end(&mut buffer)).await;
        assert!(read.is_ok(), "still open after {:?}", started.elapsed());
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT);
    }

    #[tokio::test]
    async fn large_bodies_are_refused() {
        let s = cluster_server().await;
        let url = format!("{}/v1/load", s.base);
        let (status, _) = call(
            Method::GET,
            &url,
            Some("t0k3n"),
            vec![b'x'; BODY_LIMIT_BYTES + 1],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
