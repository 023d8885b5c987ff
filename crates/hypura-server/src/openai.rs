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
use tokio_stream::{StreamExt, StreamMap};

/// The most choices (`n`) one request may ask for.
const MAX_CHOICES: u64 = 16;

use crate::generation::{self, fresh_seed, parse, stop_strings, unix_now, Ending, Settings};
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
    /// The settings, and how many choices to generate.
    fn settings(self) -> Result<(Settings, usize), ApiError> {
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_CHOICES).contains(&n) {
            return Err(ApiError::bad_request(format!(
                "'n' must be 1 to {MAX_CHOICES}"
            )));
        }
        let settings = Settings {
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
        };
        Ok((settings, n as usize))
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

    /// Choice `index` of a whole answer.
    fn choice(self, index: usize, text: String, finish: &str) -> Value {
        match self {
            Endpoint::Chat => json!({
                "index": index,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
            }),
            Endpoint::Completion => {
                json!({"index": index, "text": text, "finish_reason": finish})
            }
        }
    }

    /// Choice `index` of a streamed chunk: a piece of text, or the end.
    fn delta(self, index: usize, text: &str, finish: Option<&str>) -> Value {
        match (self, finish) {
            (Endpoint::Chat, None) => {
                json!({"index": index, "delta": {"content": text}, "finish_reason": null})
            }
            (Endpoint::Chat, Some(f)) => {
                json!({"index": index, "delta": {}, "finish_reason": f})
            }
            (Endpoint::Completion, f) => {
                json!({"index": index, "text": text, "finish_reason": f})
            }
        }
    }

    /// Choice `index`'s chunk before any text (chat names the assistant's role first).
    fn head(self, index: usize) -> Option<Value> {
        match self {
            Endpoint::Chat => Some(json!({
                "index": index,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": null,
            })),
            Endpoint::Completion => None,
        }
    }
}

/// Runs `prompt` `n` times (choice `i` with the seed plus `i`, all decoded together) and
/// answers as `endpoint` does, whole or streamed.
async fn respond(
    state: &AppState,
    endpoint: Endpoint,
    prompt: String,
    (settings, n): (Settings, usize),
    stream: bool,
) -> Result<Response, ApiError> {
    let seed = settings.seed.unwrap_or_else(fresh_seed);
    // All queued before any is awaited, so that the engine decodes them together; an error
    // drops the receivers of those already queued, which cancels them.
    let receivers = (0..n)
        .map(|i| {
            let settings = Settings {
                seed: Some(seed.wrapping_add(i as u64)),
                ..settings.clone()
            };
            state.submit(state.options(prompt.clone(), settings)?)
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
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
        let mut choices = Vec::with_capacity(n);
        let (mut prompt_tokens, mut completion_tokens) = (0, 0);
        for (index, rx) in receivers.into_iter().enumerate() {
            let (text, ending) = generation::whole(rx).await?;
            choices.push(endpoint.choice(index, text, finish_reason(ending.reason)));
            // The prompt counts once, as OpenAI counts it.
            prompt_tokens = ending.prompt_tokens;
            completion_tokens += ending.completion_tokens;
        }
        let mut answer = with("choices", Value::Array(choices));
        answer["usage"] = json!({
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        });
        return Ok(Json(answer).into_response());
    }
    let mut choices = StreamMap::with_capacity(n);
    for (index, rx) in receivers.into_iter().enumerate() {
        choices.insert(index, Box::pin(generation::updates(rx).await?));
    }
    let chunk = with.clone();
    let heads: Vec<Value> = (0..n)
        .filter_map(|index| endpoint.head(index))
        .map(|c| with("choices", json!([c])))
        .collect();
    let events = tokio_stream::iter(heads)
        .chain(choices.map(move |(index, update)| match update {
            Update::Text(piece) => chunk("choices", json!([endpoint.delta(index, &piece, None)])),
            Update::Done(Ending { reason, .. }) => chunk(
                "choices",
                json!([endpoint.delta(index, "", Some(finish_reason(reason)))]),
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
