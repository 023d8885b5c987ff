//! OpenAI-compatible endpoints: `/v1/chat/completions`, `/v1/completions` (whole answers,
//! or streamed as server-sent events ending with `data: [DONE]`) and `/v1/models`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hypura_core::{ChatMessage, StopReason};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use crate::generation::{self, parse, stop_strings, unix_now, Ending, Settings};
use crate::worker::Update;
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

impl Sampling {
    fn settings(self) -> Result<Settings, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("only n = 1 is supported"));
        }
        Ok(Settings {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            seed: self.seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: None,
            stop: stop_strings(self.stop.as_ref())?,
        })
    }
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

/// OpenAI's `finish_reason`.
fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndOfGeneration | StopReason::StopString => "stop",
        _ => "length",
    }
}

/// The two endpoints' answers differ only in their names and in the shape of a choice.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        }
    }

    fn object(self, streamed: bool) -> &'static str {
        match (self, streamed) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// The choice of a whole answer.
    fn choice(self, text: String, finish: &str) -> Value {
        match self {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }),
            Endpoint::Completion => json!({"index": 0, "text": text, "finish_reason": finish}),
        }
    }

    /// The choice of a streamed chunk: a piece of text, or the end.
    fn delta(self, text: &str, finish: Option<&str>) -> Value {
        match (self, finish) {
            (Endpoint::Chat, None) => {
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null})
            }
            (Endpoint::Chat, Some(f)) => json!({"index": 0, "delta": {}, "finish_reason": f}),
            (Endpoint::Completion, f) => json!({"index": 0, "text": text, "finish_reason": f}),
        }
    }

    /// The chunk before any text (chat names the assistant's role first).
    fn head(self) -> Option<Value> {
        match self {
            Endpoint::Chat => Some(json!({
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": null,
            })),
            Endpoint::Completion => None,
        }
    }
}

/// Runs `prompt` and answers as `endpoint` does, whole or streamed.
async fn respond(
    state: &AppState,
    endpoint: Endpoint,
    prompt: String,
    settings: Settings,
    stream: bool,
) -> Result<Response, ApiError> {
    let options = state.options(prompt, settings)?;
    let rx = state.submit(options)?;
    let shell = json!({
        "id": format!("{}-{}", endpoint.id_prefix(), state.next_id()),
        "object": endpoint.object(stream),
        "created": unix_now(),
        "model": state.model_name,
    });
    let with = move |key: &str, value: Value| {
        let mut v = shell.clone();
        v[key] = value;
        v
    };
    if !stream {
        let (text, ending) = generation::whole(rx).await?;
        let Ending {
            reason,
            prompt_tokens,
            completion_tokens,
            ..
        } = ending;
        let mut answer = with(
            "choices",
            json!([endpoint.choice(text, finish_reason(reason))]),
        );
        answer["usage"] = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        });
        return Ok(Json(answer).into_response());
    }
    let updates = generation::updates(rx).await?;
    let chunk = with.clone();
    let head = endpoint.head().map(|c| with("choices", json!([c])));
    let events = tokio_stream::iter(head)
        .chain(updates.map(move |update| match update {
            Update::Text(piece) => chunk("choices", json!([endpoint.delta(&piece, None)])),
            Update::Done(Ending { reason, .. }) => chunk(
                "choices",
                json!([endpoint.delta("", Some(finish_reason(reason)))]),
            ),
            Update::Failed(reason) => json!({"error": {"message": reason, "type": "server_error"}}),
        }))
        .map(|data| Event::default().data(data.to_string()))
        .chain(tokio_stream::once(Event::default().data("[DONE]")))
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn check_model(state: &AppState, model: &Option<String>) -> Result<(), ApiError> {
    match model {
        Some(name) if name != &state.model_name => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "the model '{name}' does not exist; this server serves '{}'",
                state.model_name
            ),
        )),
        _ => Ok(()),
    }
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: ChatRequest = parse(body)?;
    check_model(&state, &request.model)?;
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
    let prompt = state.chat_prompt(&messages)?;
    let settings = request.sampling.settings()?;
    respond(&state, Endpoint::Chat, prompt, settings, request.stream).await
}

pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: CompletionRequest = parse(body)?;
    check_model(&state, &request.model)?;
    let prompt = match &request.prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.len() == 1 && items[0].is_string() => {
            items[0].as_str().unwrap_or_default().to_string()
        }
        _ => return Err(ApiError::bad_request("'prompt' must be one string")),
    };
    let settings = request.sampling.settings()?;
    respond(
        &state,
        Endpoint::Completion,
        prompt,
        settings,
        request.stream,
    )
    .await
}

pub async fn models(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": state.model_name, "object": "model", "created": state.started, "owned_by": "hypura"}],
    }))
}
