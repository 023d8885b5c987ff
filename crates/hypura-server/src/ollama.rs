//! Ollama-compatible endpoints: `POST /api/chat` and `POST /api/generate` (streamed as
//! JSON lines, `application/x-ndjson`, unless `"stream": false`; the last object has
//! `"done": true`, the `done_reason` and Ollama's counts and durations in nanoseconds),
//! `GET /api/tags` (the one model served), `POST /api/show` and `GET /api/version`. The
//! `options` object takes Ollama's names (`num_predict`, `temperature`, `top_k`, `top_p`,
//! `min_p`, `seed`, `repeat_penalty`, `repeat_last_n`, `presence_penalty`,
//! `frequency_penalty`, `stop`); others it has (`num_ctx`, `num_thread`, …) are ignored, as
//! settings of the server. Errors are Ollama's: a 4xx status and `{"error": "..."}`.
//!
//! `/api/generate` renders the prompt (and `system`) with the model's chat template, as
//! Ollama does, unless `"raw": true`. What hypura cannot do is refused rather than ignored:
//! images, tools, structured output (`format`), thinking, a `template` or `suffix` of the
//! request's own, and a `context` carried over from an earlier answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Local, SecondsFormat};
use hypura_core::{ChatMessage, StopReason};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio_stream::StreamExt;

use crate::generation::{self, defaults, parse, stop_strings, Ending, Settings};
use crate::worker::Update;
use crate::{ApiError, AppState};

/// An error as Ollama answers one: the status and `{"error": "..."}`.
#[derive(Debug)]
pub(crate) struct OllamaError(ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        (self.0.status, Json(json!({"error": self.0.message}))).into_response()
    }
}

/// Ollama's `options`, the ones that change how hypura generates.
#[derive(Deserialize, Default)]
struct Options {
    num_predict: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<i32>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    stop: Option<Value>,
    #[serde(flatten)]
    others: Map<String, Value>,
}

impl Options {
    fn settings(self) -> Result<Settings, ApiError> {
        if !self.others.is_empty() {
            let names: Vec<&str> = self.others.keys().map(String::as_str).collect();
            log::debug!("options ignored: {}", names.join(", "));
        }
        Ok(Settings {
            // -1 (no limit) and -2 (fill the context): the server's limit.
            max_tokens: self
                .num_predict
                .filter(|&n| n > 0)
                .and_then(|n| u64::try_from(n).ok()),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            // A negative seed: a fresh one.
            seed: self.seed.and_then(|s| u64::try_from(s).ok()),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            stop: stop_strings(self.stop.as_ref())?,
        })
    }
}

/// Fields of both generating endpoints that hypura refuses unless empty.
#[derive(Deserialize, Default)]
struct Unsupported {
    format: Option<Value>,
    think: Option<Value>,
    images: Option<Vec<Value>>,
    tools: Option<Vec<Value>>,
    template: Option<String>,
    suffix: Option<String>,
    context: Option<Vec<Value>>,
}

impl Unsupported {
    fn check(&self) -> Result<(), ApiError> {
        let refuse = |what: &str| {
            Err(ApiError::bad_request(format!(
                "{what} not supported by hypura"
            )))
        };
        if self
            .format
            .as_ref()
            .is_some_and(|f| !f.is_null() && f != "")
        {
            return refuse("'format' (structured output) is");
        }
        if self
            .think
            .as_ref()
            .is_some_and(|t| !(t.is_null() || t == false || t == ""))
        {
            return refuse("'think' is");
        }
        if self.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return refuse("images are");
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse("tools are");
        }
        if self.template.as_ref().is_some_and(|t| !t.is_empty()) {
            return refuse("a request's own 'template' is (the model's chat template is used; \"raw\": true sends the prompt as it is)");
        }
        if self.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
            return refuse("'suffix' (fill in the middle) is");
        }
        if self.context.as_ref().is_some_and(|c| !c.is_empty()) {
            return refuse("'context' is (send the conversation to /api/chat)");
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    model: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    stream: Option<bool>,
    options: Option<Options>,
    #[serde(flatten)]
    unsupported: Unsupported,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<String>,
    images: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct GenerateRequest {
    model: Option<String>,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    stream: Option<bool>,
    options: Option<Options>,
    #[serde(flatten)]
    unsupported: Unsupported,
}

#[derive(Deserialize)]
struct ShowRequest {
    model: Option<String>,
    /// The older name of `model`.
    name: Option<String>,
}

/// The time now as Ollama writes it (RFC 3339, local, nanoseconds).
fn timestamp(at: DateTime<Local>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, false)
}

fn now() -> String {
    timestamp(Local::now())
}

/// Ollama's `done_reason`.
fn done_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::EndOfGeneration | StopReason::StopString => "stop",
        _ => "length",
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Checks the model a request names: the server's, with or without Ollama's `:latest`.
fn check_model(state: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    let name = model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("model is required"))?;
    if name == state.model_name || name.strip_suffix(":latest") == Some(&state.model_name) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{name}' not found"),
        ))
    }
}

/// The two generating endpoints differ only in where the text goes.
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Chat,
    Generate,
}

impl Endpoint {
    /// An answer object (a line of a stream, or the whole answer) carrying `text`.
    fn object(self, model: &str, text: &str) -> Value {
        let mut v = json!({"model": model, "created_at": now()});
        match self {
            Endpoint::Chat => v["message"] = json!({"role": "assistant", "content": text}),
            Endpoint::Generate => v["response"] = json!(text),
        }
        v
    }

    /// The last object: `done`, why, and the counts and durations.
    fn last(self, model: &str, text: &str, ending: &Ending, started: Instant) -> Value {
        let mut v = self.object(model, text);
        v["done"] = json!(true);
        v["done_reason"] = json!(done_reason(ending.reason));
        v["total_duration"] = json!(nanos(started.elapsed()));
        v["load_duration"] = json!(0);
        v["prompt_eval_count"] = json!(ending.prompt_tokens);
        v["prompt_eval_duration"] = json!(nanos(ending.timings.prompt));
        v["eval_count"] = json!(ending.completion_tokens);
        v["eval_duration"] = json!(nanos(ending.timings.generating));
        v
    }

    /// The answer to a request with nothing to generate: Ollama's "the model is loaded".
    fn loaded(self, model: &str) -> Response {
        let mut v = self.object(model, "");
        v["done"] = json!(true);
        v["done_reason"] = json!("load");
        Json(v).into_response()
    }
}

/// Runs `prompt` and answers as `endpoint` does: JSON lines, or one object.
async fn respond(
    state: &AppState,
    endpoint: Endpoint,
    prompt: String,
    options: Option<Options>,
    stream: bool,
    started: Instant,
) -> Result<Response, ApiError> {
    let settings = options.unwrap_or_default().settings()?;
    let options = state.options(prompt, settings)?;
    let rx = state.submit(options)?;
    let model = state.model_name.clone();
    if !stream {
        let (text, ending) = generation::whole(rx).await?;
        return Ok(Json(endpoint.last(&model, &text, &ending, started)).into_response());
    }
    let lines = generation::updates(rx).await?.map(move |update| {
        let v = match update {
            Update::Text(piece) => {
                let mut v = endpoint.object(&model, &piece);
                v["done"] = json!(false);
                v
            }
            Update::Done(ending) => endpoint.last(&model, "", &ending, started),
            Update::Failed(reason) => json!({"error": reason}),
        };
        let mut line = v.to_string();
        line.push('\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

pub async fn chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let request: ChatRequest = parse(body)?;
    check_model(&state, request.model.as_deref())?;
    request.unsupported.check()?;
    if request
        .messages
        .iter()
        .any(|m| m.images.as_ref().is_some_and(|i| !i.is_empty()))
    {
        return Err(ApiError::bad_request("images are not supported by hypura").into());
    }
    if request.messages.is_empty() {
        return Ok(Endpoint::Chat.loaded(&state.model_name));
    }
    let messages: Vec<ChatMessage> = request
        .messages
        .into_iter()
        .map(|m| ChatMessage::new(m.role, m.content.unwrap_or_default()))
        .collect();
    let prompt = state.chat_prompt(&messages)?;
    let stream = request.stream.unwrap_or(true);
    Ok(respond(
        &state,
        Endpoint::Chat,
        prompt,
        request.options,
        stream,
        started,
    )
    .await?)
}

pub async fn generate(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let request: GenerateRequest = parse(body)?;
    check_model(&state, request.model.as_deref())?;
    request.unsupported.check()?;
    let system = request.system.filter(|s| !s.is_empty());
    if request.prompt.is_empty() && system.is_none() {
        return Ok(Endpoint::Generate.loaded(&state.model_name));
    }
    let prompt = if request.raw {
        request.prompt
    } else if state.template.is_some() {
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(ChatMessage::new("system", system));
        }
        messages.push(ChatMessage::new("user", request.prompt));
        state.chat_prompt(&messages)?
    } else {
        match system {
            Some(system) => format!("{system}\n\n{}", request.prompt),
            None => request.prompt,
        }
    };
    let stream = request.stream.unwrap_or(true);
    Ok(respond(
        &state,
        Endpoint::Generate,
        prompt,
        request.options,
        stream,
        started,
    )
    .await?)
}

/// Ollama's `details` of the model.
fn details(state: &AppState) -> Value {
    let m = &state.model;
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": m.arch,
        "families": [m.arch],
        "parameter_size": m.parameter_size(),
        "quantization_level": m.quantization(),
    })
}

fn modified_at(state: &AppState) -> String {
    timestamp(
        state
            .model
            .modified
            .map_or_else(Local::now, DateTime::<Local>::from),
    )
}

pub async fn tags(State(state): State<Arc<AppState>>) -> Json<Value> {
    let m = &state.model;
    Json(json!({
        "models": [{
            "name": state.model_name,
            "model": state.model_name,
            "modified_at": modified_at(&state),
            "size": m.file_bytes,
            "digest": m.key,
            "details": details(&state),
        }],
    }))
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, OllamaError> {
    let request: ShowRequest = parse(body)?;
    check_model(&state, request.model.as_deref().or(request.name.as_deref()))?;
    let m = &state.model;
    let parameters = format!(
        "temperature {}\ntop_k {}\ntop_p {}\nmin_p {}\nnum_predict {}\nnum_ctx {}",
        defaults::TEMPERATURE,
        defaults::TOP_K,
        defaults::TOP_P,
        defaults::MIN_P,
        state.max_tokens,
        m.context_per_sequence,
    );
    let template = m.template_source.clone().unwrap_or_default();
    let mut modelfile = format!(
        "# Served by hypura {}\nFROM {}\n",
        env!("CARGO_PKG_VERSION"),
        m.file_name
    );
    if !template.is_empty() {
        modelfile.push_str(&format!("TEMPLATE \"\"\"{template}\"\"\"\n"));
    }
    for line in parameters.lines() {
        modelfile.push_str(&format!("PARAMETER {line}\n"));
    }
    Ok(Json(json!({
        "modelfile": modelfile,
        "parameters": parameters,
        "template": template,
        "details": details(&state),
        "model_info": m.info,
        "capabilities": ["completion"],
        "modified_at": modified_at(&state),
    })))
}

pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}
