//! What the OpenAI and Ollama endpoints share: a request's settings ([`Settings`], each API
//! parsing its own names into it) turned into [`GenerateOptions`] over the server's
//! defaults, the chat prompt rendered by the model's template, the request queued on the
//! engine, and its answer collected whole or as a stream of updates.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use hypura_core::{ChatMessage, GenerateOptions};
use serde_json::Value;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::{Stream, StreamExt};

pub(crate) use crate::worker::Ending;
use crate::worker::{Job, Submit, Update};
use crate::{ApiError, AppState};

/// Sampling defaults of the server (llama.cpp's), where a request names none.
pub(crate) mod defaults {
    pub const TEMPERATURE: f32 = 0.8;
    pub const TOP_P: f32 = 0.95;
    pub const TOP_K: i32 = 40;
    pub const MIN_P: f32 = 0.05;
    pub const REPEAT_LAST_N: i32 = 64;
}

/// A request's generation settings, whatever API it came through; `None`: the default.
#[derive(Debug, Default, Clone)]
pub(crate) struct Settings {
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    /// `None`: a fresh seed.
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repeat_penalty: Option<f32>,
    /// Tokens the penalties look back over; -1: the whole context.
    pub repeat_last_n: Option<i32>,
    pub stop: Vec<String>,
}

/// Stop strings as both APIs write them: `null`, one string, or an array of strings.
pub(crate) fn stop_strings(value: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::bad_request("'stop' must be a string or an array of strings")),
        Some(_) => Err(ApiError::bad_request(
            "'stop' must be a string or an array of strings",
        )),
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A seed for a request that gives none: the clock's nanoseconds.
pub(crate) fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Parses a JSON body, with every failure a 4xx error.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

impl AppState {
    /// The generation settings of a request, over the server's defaults.
    pub(crate) fn options(&self, prompt: String, s: Settings) -> Result<GenerateOptions, ApiError> {
        let max_tokens = s
            .max_tokens
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(self.max_tokens);
        let mut options = GenerateOptions::new(prompt)
            .max_tokens(max_tokens.min(self.max_tokens))
            .temperature(s.temperature.unwrap_or(defaults::TEMPERATURE))
            .seed(s.seed.unwrap_or_else(fresh_seed))
            .top_p(s.top_p.unwrap_or(defaults::TOP_P))
            .top_k(s.top_k.unwrap_or(defaults::TOP_K))
            .min_p(s.min_p.unwrap_or(defaults::MIN_P))
            .frequency_presence_penalties(
                s.frequency_penalty.unwrap_or(0.0),
                s.presence_penalty.unwrap_or(0.0),
            )
            .stop(s.stop);
        if s.repeat_penalty.is_some() || s.repeat_last_n.is_some() {
            let last_n = match s.repeat_last_n {
                Some(-1) => i32::try_from(self.model.context_per_sequence).unwrap_or(i32::MAX),
                n => n.unwrap_or(defaults::REPEAT_LAST_N),
            };
            options = options.repeat_penalty(s.repeat_penalty.unwrap_or(1.0), last_n);
        }
        options
            .check()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(options)
    }

    /// The prompt of a chat: `messages` rendered by the model's template, ready for the
    /// assistant's answer.
    pub(crate) fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, ApiError> {
        let template = self.template.as_ref().ok_or_else(|| {
            ApiError::bad_request(format!(
                "the model {} has no chat template: send a plain prompt (/v1/completions, or \
                 /api/generate with \"raw\": true)",
                self.model_name
            ))
        })?;
        if messages.is_empty() {
            return Err(ApiError::bad_request("'messages' is empty"));
        }
        template
            .render(messages, true)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }

    /// Queues `options` on the engine; its updates come on the receiver, which closes after
    /// the last (`Done` or `Failed`).
    pub(crate) fn submit(
        &self,
        options: GenerateOptions,
    ) -> Result<UnboundedReceiver<Update>, ApiError> {
        let (tx, rx) = unbounded_channel();
        self.send(Job::Generate(Submit {
            options,
            updates: tx,
        }))?;
        Ok(rx)
    }

    /// Sends `job` to the engine's thread.
    pub(crate) fn send(&self, job: Job) -> Result<(), ApiError> {
        self.jobs
            .lock()
            .map_err(|_| ApiError::internal("the engine's queue is poisoned"))?
            .send(job)
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped"))
    }
}

/// Collects a whole answer.
pub(crate) async fn whole(mut rx: UnboundedReceiver<Update>) -> Result<(String, Ending), ApiError> {
    let mut text = String::new();
    while let Some(update) = rx.recv().await {
        match update {
            Update::Text(piece) => text.push_str(&piece),
            Update::Done(ending) => return Ok((text, ending)),
            Update::Failed(reason) => return Err(ApiError::bad_request(reason)),
        }
    }
    Err(ApiError::internal("the engine dropped the request"))
}

/// A request's updates as a stream. It waits for the first, so that a request the engine
/// refuses gets an HTTP error rather than a stream that fails. The stream ends after the
/// last update; dropping it (the client went away) cancels the request.
pub(crate) async fn updates(
    mut rx: UnboundedReceiver<Update>,
) -> Result<impl Stream<Item = Update> + Send + 'static, ApiError> {
    let first = match rx.recv().await {
        Some(Update::Failed(reason)) => return Err(ApiError::bad_request(reason)),
        Some(update) => Some(update),
        None => return Err(ApiError::internal("the engine dropped the request")),
    };
    Ok(tokio_stream::iter(first).chain(UnboundedReceiverStream::new(rx)))
}
