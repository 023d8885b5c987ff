//! Generation on the engine, the one `hypura serve` and `hypura run -P` use: requests
//! (a prompt and its sampling settings) are queued with [`hypura_submit`]; each
//! [`hypura_step`] decodes one batch for every running request (continuous batching over the
//! model's sequences, `hypura_params_set_sequences`) and hands their new text, in whole UTF-8
//! characters, to a callback; a request that ends says why. [`hypura_cancel`] stops one.
//!
//! While requests run, the model's sequences are the engine's: `hypura_decode` and
//! `hypura_reset` return `HYPURA_STATUS_REQUESTS_RUNNING` until every request has ended.

use std::ffi::{c_char, c_void};

use hypura_core::{EngineEvent, GenerateOptions, RequestId, StopReason};

use crate::boundary::{ffi_boundary, require};
use crate::error::fail;
use crate::model::{hypura_model, report, with_model};
use crate::status::hypura_status::{self, *};

/// A request's sampling and stopping settings. Opaque; create with
/// [`hypura_request_params_new`], free with [`hypura_request_params_free`].
pub struct hypura_request_params {
    options: GenerateOptions,
}

/// What an event says.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hypura_event_kind {
    /// More text of the request (`text`, `text_len` bytes of UTF-8, whole characters).
    HYPURA_EVENT_TEXT = 0,
    /// The request ended (`stop_reason`, `prompt_tokens`, `generated_tokens`); no event
    /// for it follows.
    HYPURA_EVENT_FINISHED = 1,
}

/// Why a request ended.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hypura_stop_reason {
    /// Not ended (a text event).
    HYPURA_STOP_NONE = 0,
    /// Its token limit.
    HYPURA_STOP_MAX_TOKENS = 1,
    /// The model produced an end-of-generation token.
    HYPURA_STOP_END_OF_GENERATION = 2,
    /// Cancelled.
    HYPURA_STOP_CANCELLED = 3,
    /// Its sequence's share of the context is full.
    HYPURA_STOP_CONTEXT_FULL = 4,
    /// One of its stop strings occurred (the text before it was given, not the string).
    HYPURA_STOP_STOP_STRING = 5,
}

impl From<StopReason> for hypura_stop_reason {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::MaxTokens => Self::HYPURA_STOP_MAX_TOKENS,
            StopReason::EndOfGeneration => Self::HYPURA_STOP_END_OF_GENERATION,
            StopReason::ContextFull => Self::HYPURA_STOP_CONTEXT_FULL,
            StopReason::StopString => Self::HYPURA_STOP_STOP_STRING,
            _ => Self::HYPURA_STOP_CANCELLED,
        }
    }
}

/// One event of [`hypura_step`], valid only during the callback that receives it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hypura_event {
    /// The request, as [`hypura_submit`] numbered it.
    pub request_id: u64,
    pub kind: hypura_event_kind,
    /// Text events: the new text (not NUL-terminated); NULL otherwise.
    pub text: *const c_char,
    pub text_len: usize,
    /// Finished events: why; `HYPURA_STOP_NONE` otherwise.
    pub stop_reason: hypura_stop_reason,
    /// Finished events: the prompt's tokens and the tokens generated; 0 otherwise.
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

/// Receives the events of a step: `user` is what the caller passed to [`hypura_step`].
/// Calls on the same model from inside it return `HYPURA_STATUS_BUSY`.
pub type hypura_event_callback =
    Option<unsafe extern "C" fn(user: *mut c_void, event: *const hypura_event)>;

/// Runs `set` on the live request parameters behind `params`.
fn with_request_params(
    params: *mut hypura_request_params,
    set: impl FnOnce(&mut GenerateOptions) -> Result<(), String>,
) -> hypura_status {
    ffi_boundary(|| {
        require!(params, "params");
        // SAFETY: checked non-NULL; a live value from hypura_request_params_new by
        // contract, used by one thread at a time.
        let p = unsafe { &mut *params };
        let mut options = p.options.clone();
        if let Err(why) = set(&mut options) {
            return fail(HYPURA_STATUS_INVALID_ARGUMENT, why);
        }
        if let Err(e) = options.check() {
            return fail(HYPURA_STATUS_INVALID_ARGUMENT, e.to_string());
        }
        p.options = options;
        HYPURA_STATUS_OK
    })
}

/// Creates request settings with the defaults (64 tokens, greedy, seed 0, stop at an
/// end-of-generation token; once a temperature is set, llama.cpp's sampler defaults: top-k
/// 40, top-p 0.95, min-p 0.05) in `*out`. Free with [`hypura_request_params_free`].
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_new(
    out: *mut *mut hypura_request_params,
) -> hypura_status {
    ffi_boundary(|| {
        require!(out, "out");
        let params = Box::new(hypura_request_params {
            options: GenerateOptions::new(""),
        });
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *out = Box::into_raw(params) };
        HYPURA_STATUS_OK
    })
}

/// Frees request settings. NULL is accepted and ignored.
///
/// # Safety
/// `params` is NULL or a value from `hypura_request_params_new` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_free(params: *mut hypura_request_params) {
    if params.is_null() {
        return;
    }
    // SAFETY: a value from hypura_request_params_new, freed once by contract.
    let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(params) }));
}

/// The most tokens to generate, at least 1.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_max_tokens(
    params: *mut hypura_request_params,
    max_tokens: u32,
) -> hypura_status {
    with_request_params(params, |o| {
        if max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        *o = o.clone().max_tokens(max_tokens as usize);
        Ok(())
    })
}

/// Sampling temperature: 0 is greedy.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_temperature(
    params: *mut hypura_request_params,
    temperature: f32,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().temperature(temperature);
        Ok(())
    })
}

/// Keeps the `top_k` most likely tokens (0: all).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_top_k(
    params: *mut hypura_request_params,
    top_k: i32,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().top_k(top_k);
        Ok(())
    })
}

/// Keeps the most likely tokens holding `top_p` of the probability, in (0, 1].
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_top_p(
    params: *mut hypura_request_params,
    top_p: f32,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().top_p(top_p);
        Ok(())
    })
}

/// Drops tokens less likely than `min_p` times the most likely one, in [0, 1].
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_min_p(
    params: *mut hypura_request_params,
    min_p: f32,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().min_p(min_p);
        Ok(())
    })
}

/// The sampler's seed: the same seed and settings give the same text.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_seed(
    params: *mut hypura_request_params,
    seed: u64,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().seed(seed);
        Ok(())
    })
}

/// The repetition penalty (more than 0; 1: none) over the last `last_n` tokens (0 or more).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_repeat_penalty(
    params: *mut hypura_request_params,
    penalty: f32,
    last_n: i32,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().repeat_penalty(penalty, last_n);
        Ok(())
    })
}

/// The frequency and presence penalties (0: none).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_penalties(
    params: *mut hypura_request_params,
    frequency: f32,
    presence: f32,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().frequency_presence_penalties(frequency, presence);
        Ok(())
    })
}

/// Adds a stop string (`len` bytes of UTF-8, copied; at most 16 per request, none empty): the text ends
/// just before its first occurrence, and text that could still become one is held back.
///
/// # Safety
/// `params` is NULL or live; `text` is NULL or valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_add_stop(
    params: *mut hypura_request_params,
    text: *const c_char,
    len: usize,
) -> hypura_status {
    if text.is_null() {
        return fail(HYPURA_STATUS_NULL_ARGUMENT, "argument `text` is NULL");
    }
    with_request_params(params, |o| {
        // SAFETY: checked non-NULL; valid for `len` bytes by contract.
        let bytes = unsafe { std::slice::from_raw_parts(text.cast::<u8>(), len) };
        let stop = std::str::from_utf8(bytes).map_err(|_| "the stop string is not UTF-8")?;
        let stops = o
            .stops()
            .iter()
            .cloned()
            .chain([stop.to_string()])
            .collect();
        *o = o.clone().stop(stops);
        Ok(())
    })
}

/// Whether an end-of-generation token ends the request (the default) or is generated on.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_request_params_set_stop_at_end_of_generation(
    params: *mut hypura_request_params,
    on: bool,
) -> hypura_status {
    with_request_params(params, |o| {
        *o = o.clone().stop_at_end_of_generation(on);
        Ok(())
    })
}

/// Queues a request: `prompt` (`prompt_len` bytes of UTF-8, copied, tokenized with the
/// model's special tokens) with `params` (NULL: the defaults of
/// [`hypura_request_params_new`]); `*request_id` receives its number. It starts at a step
/// when a sequence is free. A prompt that cannot fit a sequence's share of the context, or
/// that has no tokens, gives `HYPURA_STATUS_INVALID_ARGUMENT` at once.
///
/// # Safety
/// `model` is NULL or live; `prompt` is NULL or valid for `prompt_len` bytes; `params` is
/// NULL or live; `request_id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_submit(
    model: *mut hypura_model,
    prompt: *const c_char,
    prompt_len: usize,
    params: *const hypura_request_params,
    request_id: *mut u64,
) -> hypura_status {
    with_model(model, |_, state| {
        require!(prompt, "prompt");
        require!(request_id, "request_id");
        // SAFETY: checked non-NULL; valid for `prompt_len` bytes by contract.
        let bytes = unsafe { std::slice::from_raw_parts(prompt.cast::<u8>(), prompt_len) };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return fail(HYPURA_STATUS_INVALID_ARGUMENT, "the prompt is not UTF-8");
        };
        let options = if params.is_null() {
            GenerateOptions::new(text)
        } else {
            // SAFETY: checked non-NULL; live by contract.
            unsafe { &*params }.options.clone().with_prompt(text)
        };
        match state.engine.submit(options) {
            Ok(RequestId(id)) => {
                // SAFETY: checked non-NULL; writable by contract.
                unsafe { *request_id = id };
                HYPURA_STATUS_OK
            }
            Err(e) => report(&e),
        }
    })
}

/// Decodes one batch for the running requests (starting waiting ones on free sequences
/// first), and calls `callback` with each event, in order: new text, and requests that
/// ended. `*running` and `*waiting` (either may be NULL) receive the requests running and
/// waiting afterwards; when both are 0 the engine is idle. A decode error fails the step
/// (`HYPURA_STATUS_DECODE_FAILED`, `HYPURA_STATUS_MODEL_FILE_CHANGED`, …) and leaves the
/// requests as they were: cancel them, or step again.
///
/// # Safety
/// `model` is NULL or live; `callback` is NULL or a function that may be called with
/// `user` and a pointer valid during the call; `running` and `waiting` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_step(
    model: *mut hypura_model,
    callback: hypura_event_callback,
    user: *mut c_void,
    running: *mut usize,
    waiting: *mut usize,
) -> hypura_status {
    with_model(model, |_, state| {
        let Some(callback) = callback else {
            return fail(HYPURA_STATUS_NULL_ARGUMENT, "argument `callback` is NULL");
        };
        let events = match state.engine.step() {
            Ok(events) => events,
            Err(e) => return report(&e),
        };
        for event in &events {
            deliver(callback, user, event);
        }
        let (now_running, now_waiting) = state.engine.load();
        // SAFETY: each is NULL or writable by contract.
        unsafe {
            if !running.is_null() {
                *running = now_running;
            }
            if !waiting.is_null() {
                *waiting = now_waiting;
            }
        }
        HYPURA_STATUS_OK
    })
}

/// Stops request `request_id`, waiting or running: no event for it follows. `*found`
/// (may be NULL) says whether the engine still had it.
///
/// # Safety
/// `model` is NULL or live; `found` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_cancel(
    model: *mut hypura_model,
    request_id: u64,
    found: *mut bool,
) -> hypura_status {
    with_model(model, |_, state| {
        let had = state.engine.cancel(RequestId(request_id)).is_some();
        if !found.is_null() {
            // SAFETY: checked non-NULL; writable by contract.
            unsafe { *found = had };
        }
        HYPURA_STATUS_OK
    })
}

/// Hands `event` to the caller's callback.
fn deliver(
    callback: unsafe extern "C" fn(*mut c_void, *const hypura_event),
    user: *mut c_void,
    event: &EngineEvent,
) {
    let out = match event {
        EngineEvent::Text { id, text } => hypura_event {
            request_id: id.0,
            kind: hypura_event_kind::HYPURA_EVENT_TEXT,
            text: text.as_ptr().cast(),
            text_len: text.len(),
            stop_reason: hypura_stop_reason::HYPURA_STOP_NONE,
            prompt_tokens: 0,
            generated_tokens: 0,
        },
        EngineEvent::Finished {
            id,
            reason,
            tokens,
            prompt_tokens,
            ..
        } => hypura_event {
            request_id: id.0,
            kind: hypura_event_kind::HYPURA_EVENT_FINISHED,
            text: std::ptr::null(),
            text_len: 0,
            stop_reason: (*reason).into(),
            prompt_tokens: *prompt_tokens,
            generated_tokens: tokens.len(),
        },
        _ => return,
    };
    // SAFETY: the caller's function, called as its contract says, with a pointer to an
    // event (and text) that outlives the call.
    unsafe { callback(user, &out) };
}
