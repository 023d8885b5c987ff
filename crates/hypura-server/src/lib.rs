//! hypura's HTTP server: one model, many clients. Requests go to hypura's batching
//! [`hypura_core::Engine`] on its own thread, so concurrent requests are decoded together
//! and the streamed weights are read once per step for all of them.
//!
//! Endpoints, OpenAI-compatible (`openai.rs`): `POST /v1/chat/completions` (the model's own
//! chat template), `POST /v1/completions`, `GET /v1/models`; answers come whole or, with
//! `"stream": true`, as server-sent events. Ollama-compatible (`ollama.rs`): `POST
//! /api/chat`, `POST /api/generate` (streamed as JSON lines unless `"stream": false`),
//! `GET /api/tags`, `POST /api/show`, `GET /api/version`. Both take stop strings. Then
//! `GET /health` (the requests running, waiting, finished and cancelled) and `GET /metrics`
//! (Prometheus text: requests, tokens, and the model's tiers and reads, `metrics.rs`).
//!
//! It binds 127.0.0.1 unless told otherwise; with an API key, every request but `/health`
//! needs `Authorization: Bearer KEY`. Malformed, oversized or unknown-model requests get a
//! 4xx JSON error (`{"error": {"message", "type"}}`, or Ollama's `{"error": "..."}` on its
//! endpoints); a client that goes away frees its sequence; SIGINT and SIGTERM stop it
//! gracefully.

mod facts;
mod generation;
mod metrics;
mod ollama;
mod openai;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hypura_core::{ChatTemplate, Model};
use serde_json::json;

/// Largest request body accepted.
const BODY_LIMIT_BYTES: usize = 1 << 20;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on (default 127.0.0.1:8080).
    pub address: SocketAddr,
    /// The model's name in the API (default: the file's stem).
    pub model_name: String,
    /// Required as `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// Most tokens one answer may have.
    pub max_tokens: usize,
}

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or the server failed.
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// What the handlers share.
pub(crate) struct AppState {
    pub(crate) model_name: String,
    pub(crate) model: facts::ModelFacts,
    pub(crate) template: Option<ChatTemplate>,
    pub(crate) jobs: Mutex<mpsc::Sender<worker::Job>>,
    pub(crate) max_tokens: usize,
    pub(crate) started: u64,
    pub(crate) counts: Arc<worker::Counts>,
    api_key: Option<String>,
    ids: AtomicU64,
}

impl AppState {
    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// An error answer: a status and `{"error": {"message", "type"}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        };
        (
            self.status,
            Json(json!({"error": {"message": self.message, "type": kind}})),
        )
            .into_response()
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let c = &state.counts;
    Json(json!({
        "status": "ok",
        "requests_running": c.running.load(Ordering::Relaxed),
        "requests_waiting": c.waiting.load(Ordering::Relaxed),
        "requests_finished": c.finished.load(Ordering::Relaxed),
        "requests_cancelled": c.cancelled.load(Ordering::Relaxed),
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn authorize(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(key) = &state.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) && request.uri().path() != "/health" {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "a valid API key is needed: Authorization: Bearer KEY",
            ));
        }
    }
    Ok(next.run(request).await)
}

/// Serves `model` until SIGINT or SIGTERM; `on_ready` is called with the bound address once
/// the server listens.
pub fn serve(
    model: Model,
    config: ServeConfig,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let template = match model.chat_template() {
        Ok(t) => Some(t),
        Err(e) => {
            log::warn!("{e}: chat requests (/v1/chat/completions, /api/chat) will be refused");
            None
        }
    };
    let facts = facts::ModelFacts::of(&model);
    let (jobs, queue) = mpsc::channel();
    let counts = Arc::new(worker::Counts::default());
    let engine_counts = Arc::clone(&counts);
    let engine = std::thread::Builder::new()
        .name("hypura-engine".into())
        .spawn(move || worker::run(model, queue, &engine_counts))?;
    let state = Arc::new(AppState {
        model_name: config.model_name.clone(),
        model: facts,
        template,
        jobs: Mutex::new(jobs),
        max_tokens: config.max_tokens,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        counts,
        api_key: config.api_key.clone(),
        ids: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/version", get(ollama::version))
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .with_state(Arc::clone(&state));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.address)
            .await
            .map_err(|source| ServeError::Bind {
                address: config.address,
                source,
            })?;
        on_ready(listener.local_addr()?);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok::<(), ServeError>(())
    });
    // Every handler is done: closing the queue lets the engine's thread end.
    drop(state);
    let _ = engine.join();
    result
}

/// Resolves at the first SIGINT or SIGTERM; a second SIGINT ends the process at once.
async fn shutdown_signal() {
    first_signal().await;
    log::warn!("stopping: finishing the requests running (Ctrl-C again stops at once)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}

async fn first_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
