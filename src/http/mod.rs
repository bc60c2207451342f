//! The HTTP side of a node (`[http]`, on 127.0.0.1:8080 by default, off while the port is 0): the web
//! console (pages), its JSON API under `/api`, `/health` (200 when the index database answers, else 503)
//! and `/metrics` (Prometheus text). Served by axum; every request passes [`guard::guard`] (Host check,
//! admin token on actions, security headers). A `segnode worker` serves only `/health` and `/metrics`.
//!
//! Rooms: `state` (shared state, admin token), `guard` (security), `api` (JSON, PNG planes, actions),
//! `pages` (HTML), `assets` (the embedded stylesheet and script). Nothing is loaded from elsewhere.

pub mod api;
pub mod assets;
pub mod guard;
pub mod pages;
pub mod state;

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use segnode_db::Index;
pub use state::{AdminToken, Console, TokenError};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Bind the endpoint (so a taken port stops the start with a clear error).
pub async fn bind(bind: &str, port: u16) -> Result<TcpListener, HttpError> {
    let addr = if bind.contains(':') {
        format!("[{bind}]:{port}")
    } else {
        format!("{bind}:{port}")
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

async fn health(State(index): State<Index>) -> impl IntoResponse {
    if !index.unavailable() && index.ping(Duration::from_secs(2)).await {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "index database unavailable\n",
        )
    }
}

async fn metrics(State((index, node)): State<(Index, String)>) -> impl IntoResponse {
    let states = if index.unavailable() {
        None
    } else {
        tokio::time::timeout(Duration::from_secs(3), index.state_counts())
            .await
            .ok()
            .and_then(Result::ok)
    };
    let text = crate::metrics::metrics().render(&node, states.as_ref());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// `/health` and `/metrics` only (a worker process).
pub fn monitoring_router(index: Index, node: String) -> Router {
    Router::new()
        .route("/health", get(health).with_state(index.clone()))
        .route("/metrics", get(metrics).with_state((index, node)))
        .fallback(not_found)
}

/// The whole console.
pub fn console_router(c: Console) -> Router {
    let api = Router::new()
        .route("/status", get(api::status))
        .route("/series", get(api::series_list))
        .route("/series/{uid}", get(api::series_show))
        .route("/series/{uid}/view", get(api::view_info))
        .route("/series/{uid}/image", get(api::image))
        .route("/series/{uid}/complete", post(api::force_complete))
        .route("/jobs", get(api::jobs_list))
        .route("/jobs/{id}", get(api::job_show))
        .route("/jobs/{id}/retry", post(api::retry_job))
        .route("/outbox", get(api::outbox_list))
        .route("/outbox/{id}/resend", post(api::resend_delivery))
        .route("/destinations/{name}/echo", post(api::echo))
        .route("/reload", post(api::reload))
        .route("/pause/{what}", post(api::pause))
        .route("/resume/{what}", post(api::resume))
        .route("/rules", get(api::rules))
        .route("/rules/test", post(api::rules_test));
    Router::new()
        .route("/", get(pages::status))
        .route("/series", get(pages::series_list))
        .route("/series/{uid}", get(pages::series_page))
        .route("/jobs", get(pages::jobs))
        .route("/outbox", get(pages::outbox))
        .route("/rules", get(pages::rules))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/assets/{name}", get(assets::asset))
        .nest("/api", api)
        .with_state(c.clone())
        .merge(monitoring_router(c.index.clone(), c.node.clone()))
        .layer(axum::middleware::from_fn_with_state(c, guard::guard))
}

/// Serve `router` on `listener` until shutdown.
pub async fn serve(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "HTTP: console http://{a}/, /api, /health, /metrics");
    }
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::warn!(error = %e, "HTTP server stopped");
    }
}
