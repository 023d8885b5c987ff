//! OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions` (whole answers,
//! or streamed as server-sent events ending with `data: [DONE]`) and `/v1/models`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hypura_core::{ChatMessage, GenerateOptions, StopReason};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::Stream;

use crate::worker::{Submit, Update};
use crate::{ApiError, AppState};

/// Sampling fields both endpoints take.
#[derive(Deserialize)]
struct Sampling {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    min_p: Option<f32>,
    seed: Option<u64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repeat_penalty: Option<f32>,
    stop: Option<Value>,
    n: Option<u64>,
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Option<Content>,
}

/// A message's content: a string, or parts of which the text ones are used.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: Option<String>,
    prompt: Value,
    #[serde(default)]
    stream: bool,
    #[serde(flatten)]
    sampling: Sampling,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A seed for a request that gives none: the clock's nanoseconds.
fn fresh_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndOfGeneration => "stop",
        _ => "length",
    }
}

/// Parses a JSON body, with every failure a 4xx JSON error.
fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

impl AppState {
    fn check_model(&self, model: &Option<String>) -> Result<(), ApiError> {
        match model {
            Some(name) if name != &self.model_name => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "the model '{name}' does not exist; this server serves '{}'",
                    self.model_name
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The generation settings of a request, over the server's defaults.
    fn options(&self, prompt: String, s: &Sampling) -> Result<GenerateOptions, ApiError> {
        if s.stop.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request("'stop' is not supported yet"));
        }
        if s.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported"));
        }
        let max_tokens = s
            .max_completion_tokens
            .or(s.max_tokens)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            .unwrap_or(self.max_tokens);
        let mut options = GenerateOptions::new(prompt)
            .max_tokens(max_tokens.min(self.max_tokens))
            .temperature(s.temperature.unwrap_or(0.8))
            .seed(s.seed.unwrap_or_else(fresh_seed))
            .top_p(s.top_p.unwrap_or(0.95))
            .top_k(s.top_k.unwrap_or(40))
            .min_p(s.min_p.unwrap_or(0.05))
            .frequency_presence_penalties(
                s.frequency_penalty.unwrap_or(0.0),
                s.presence_penalty.unwrap_or(0.0),
            );
        if let Some(p) = s.repeat_penalty {
            options = options.repeat_penalty(p, 64);
        }
        options
            .check()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(options)
    }

    /// Queues `options` on the engine; its updates come on the receiver.
    fn submit(&self, options: GenerateOptions) -> Result<UnboundedReceiver<Update>, ApiError> {
        let (tx, rx) = unbounded_channel();
        self.requests
            .lock()
            .map_err(|_| ApiError::internal("the engine's queue is poisoned"))?
            .send(Submit {
                options,
                updates: tx,
            })
            .map_err(|_| {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped")
            })?;
        Ok(rx)
    }
}

/// Collects a whole answer.
async fn whole(
    mut rx: UnboundedReceiver<Update>,
) -> Result<(String, StopReason, usize, usize), ApiError> {
    let mut text = String::new();
    while let Some(update) = rx.recv().await {
        match update {
            Update::Text(piece) => text.push_str(&piece),
            Update::Done {
                reason,
                prompt_tokens,
                completion_tokens,
            } => return Ok((text, reason, prompt_tokens, completion_tokens)),
            Update::Failed(reason) => return Err(ApiError::bad_request(reason)),
        }
    }
    Err(ApiError::internal("the engine dropped the request"))
}

/// Waits for the first update, so that a request the engine refuses gets an HTTP error
/// rather than an event stream that fails.
async fn first(
    mut rx: UnboundedReceiver<Update>,
) -> Result<(Option<Update>, UnboundedReceiver<Update>), ApiError> {
    match rx.recv().await {
        Some(Update::Failed(reason)) => Err(ApiError::bad_request(reason)),
        update => Ok((update, rx)),
    }
}

/// Server-sent events: `chunk(text, finish)` for every piece and the end, then `[DONE]`.
fn events(
    first: Option<Update>,
    mut rx: UnboundedReceiver<Update>,
    head: Option<Value>,
    chunk: impl Fn(&str, Option<&str>) -> Value + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(64);
    tokio::spawn(async move {
        if let Some(head) = head {
            if tx
                .send(Ok(Event::default().data(head.to_string())))
                .await
                .is_err()
            {
                return;
            }
        }
        let mut next = first;
        loop {
            let update = match next.take() {
                Some(u) => u,
                None => match rx.recv().await {
                    Some(u) => u,
                    None => break,
                },
            };
            let data = match update {
                Update::Text(piece) => chunk(&piece, None),
                Update::Done { reason, .. } => chunk("", Some(finish_reason(reason))),
                Update::Failed(reason) => {
                    json!({"error": {"message": reason, "type": "server_error"}})
                }
            };
            let last =
                data.get("error").is_some() || data["choices"][0]["finish_reason"].is_string();
            // A send error means the client went away: dropping `rx` cancels the request.
            if tx
                .send(Ok(Event::default().data(data.to_string())))
                .await
                .is_err()
            {
                return;
            }
            if last {
                break;
            }
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    tokio_stream::wrappers::ReceiverStream::new(out)
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse(body)?;
    state.check_model(&request.model)?;
    let template = state.template.as_ref().ok_or_else(|| {
        ApiError::bad_request(format!(
            "the model {} has no chat template; use /v1/completions",
            state.model_name
        ))
    })?;
    let messages: Vec<ChatMessage> = request
        .messages
        .iter()
        .map(|m| {
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => parts
                    .iter()
                    .filter(|p| p.kind == "text")
                    .filter_map(|p| p.text.clone())
                    .collect::<Vec<_>>()
                    .join(""),
            };
            ChatMessage::new(m.role.clone(), content)
        })
        .collect();
    if messages.is_empty() {
        return Err(ApiError::bad_request("'messages' is empty"));
    }
    let prompt = template
        .render(&messages, true)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let options = state.options(prompt, &request.sampling)?;
    let rx = state.submit(options)?;
    let id = format!("chatcmpl-{}", state.next_id());
    let created = now();
    let model = state.model_name.clone();
    if request.stream {
        let (first, rx) = first(rx).await?;
        let base = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model});
        let head = {
            let mut v = base.clone();
            v["choices"] = json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]);
            v
        };
        let stream = events(first, rx, Some(head), move |text, finish| {
            let mut v = base.clone();
            v["choices"] = match finish {
                None => json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]),
                Some(f) => json!([{"index": 0, "delta": {}, "finish_reason": f}]),
            };
            v
        });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let (text, reason, prompt_tokens, completion_tokens) = whole(rx).await?;
    Ok(Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "finish_reason": finish_reason(reason),
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response())
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse(body)?;
    state.check_model(&request.model)?;
    let prompt = match &request.prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        _ => return Err(ApiError::bad_request("'prompt' must be one string")),
    };
    let options = state.options(prompt, &request.sampling)?;
    let rx = state.submit(options)?;
    let id = format!("cmpl-{}", state.next_id());
    let created = now();
    let model = state.model_name.clone();
    if request.stream {
        let (first, rx) = first(rx).await?;
        let base =
            json!({"id": id, "object": "text_completion", "created": created, "model": model});
        let stream = events(first, rx, None, move |text, finish| {
            let mut v = base.clone();
            v["choices"] = json!([{"index": 0, "text": text, "finish_reason": finish}]);
            v
        });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let (text, reason, prompt_tokens, completion_tokens) = whole(rx).await?;
    Ok(Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish_reason(reason)}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response())
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": state.started, "owned_by": "hypura"}],
    }))
}
