//! Serving HTTP: /metrics (Prometheus text), /v1/load (JSON), /healthz, and Alertmanager's
//! webhook on /v1/alerts.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod exposition;
pub mod metrics;

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, sync::watch};

use crate::{collect::worker::monotonic_ns, state::AgentState};

#[derive(Clone)]
struct Ctx {
    state: Arc<AgentState>,
    self_metrics: PrometheusHandle,
}

/// `alerts` is `None` without `--alerts-token-file`: `/v1/alerts` then answers 404.
pub fn router(
    state: Arc<AgentState>,
    self_metrics: PrometheusHandle,
    alerts: Option<alerts::AlertsConfig>,
) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/v1/load", get(get_load))
        .route("/healthz", get(get_healthz))
        .with_state(Ctx {
            state,
            self_metrics,
        })
        .merge(alerts::routes(alerts))
}

/// Serves until `shutdown` turns true, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AgentState>,
    self_metrics: PrometheusHandle,
    alerts: Option<alerts::AlertsConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(listener, router(state, self_metrics, alerts))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

async fn get_metrics(State(ctx): State<Ctx>) -> Response {
    let started = std::time::Instant::now();
    let body = metrics::render(&ctx.state.view(), &ctx.self_metrics);
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

async fn get_load(State(ctx): State<Ctx>) -> Response {
    match api::LoadResponse::from_view(&ctx.state, &ctx.state.view()) {
        Some(load) => Json(load).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(api::ErrorBody {
                error: "no complete collection window yet; retry after one interval".into(),
            }),
        )
            .into_response(),
    }
}

/// Healthy while collections keep landing: the last one is younger than three intervals.
async fn get_healthz(State(ctx): State<Ctx>) -> Response {
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
