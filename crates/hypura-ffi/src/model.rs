//! Model handles: load, tokenize, decode, sample, statistics, free. A handle may be used from
//! any thread; a call made while another thread's call on the same handle is running returns
//! `HYPURA_STATUS_BUSY` instead of touching it.

use std::ffi::c_char;
use std::sync::{Mutex, MutexGuard, TryLockError};

use hypura_core::{BatchToken, Engine, Model, Sampler};

use crate::boundary::{ffi_boundary, require};
use crate::error::fail;
use crate::params::hypura_params;
use crate::status::hypura_status::{self, *};

/// One token of a batch for [`hypura_decode`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hypura_batch_token {
    /// Token id.
    pub token: i32,
    /// Sequence it is appended to, in `0..sequences`; it goes at that sequence's next position.
    pub seq_id: i32,
    /// Whether to return logits after this token.
    pub logits: bool,
}

pub(crate) struct ModelState {
    /// The model, inside the engine that runs `hypura_submit`'s requests on it.
    pub(crate) engine: Engine,
    sampler: Sampler,
}

impl ModelState {
    pub(crate) fn model(&self) -> &Model {
        self.engine.model()
    }

    /// The model for a low-level call that changes its sequences: refused while the
    /// engine's requests run on them.
    fn sequences_free(&mut self) -> Result<&mut Model, hypura_status> {
        if self.engine.is_idle() {
            Ok(self.engine.model_mut())
        } else {
            Err(fail(
                HYPURA_STATUS_REQUESTS_RUNNING,
                "requests from hypura_submit are running on the model's sequences: step until \
                 they end, or cancel them",
            ))
        }
    }
}

/// A loaded model with its context. Opaque; free with [`hypura_model_free`].
pub struct hypura_model {
    state: Mutex<ModelState>,
    /// Facts fixed at load, readable while another thread decodes.
    n_vocab: usize,
    positions: usize,
    end_of_generation: Vec<bool>,
}

pub(crate) fn report<E: std::fmt::Display>(e: &E) -> hypura_status
where
    for<'a> &'a E: Into<hypura_status>,
{
    fail(e.into(), e.to_string())
}

/// Runs `body` with the model behind `model`, or returns `HYPURA_STATUS_BUSY` when another
/// thread is using it.
pub(crate) fn with_model(
    model: *const hypura_model,
    body: impl FnOnce(&hypura_model, &mut ModelState) -> hypura_status,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        // SAFETY: checked non-NULL; a live handle from hypura_load by contract.
        let handle = unsafe { &*model };
        let mut state: MutexGuard<'_, ModelState> = match handle.state.try_lock() {
            Ok(state) => state,
            // A panic inside an earlier call was caught; the model itself is intact.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return fail(
                    HYPURA_STATUS_BUSY,
                    "the model is in use by another thread: call again when that call returns",
                )
            }
        };
        body(handle, &mut state)
    })
}

/// Loads a model. `*out` is set to NULL first and to the new handle on success; the caller
/// owns it and frees it with [`hypura_model_free`]. Loading reads the RAM tier of the file
/// and can take a while for large models. `params` is only read.
///
/// # Safety
/// `params` is NULL or a live value from `hypura_params_new`; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_load(
    params: *const hypura_params,
    out: *mut *mut hypura_model,
) -> hypura_status {
    ffi_boundary(|| {
        require!(out, "out");
        // SAFETY: checked non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        require!(params, "params");
        // SAFETY: checked non-NULL; a live value by contract.
        let p = unsafe { &*params };
        let Some(options) = p.load_options() else {
            return fail(
                HYPURA_STATUS_NULL_ARGUMENT,
                "no model path: call hypura_params_set_model_path first",
            );
        };
        let model = match Model::load(&options) {
            Ok(model) => model,
            Err(e) => return report(&e),
        };
        let n_vocab = model.n_vocab();
        let handle = Box::new(hypura_model {
            n_vocab,
            positions: model.context_per_sequence(),
            end_of_generation: (0..n_vocab)
                .map(|t| model.is_end_of_generation(t as i32))
                .collect(),
            state: Mutex::new(ModelState {
                engine: Engine::new(model),
                sampler: Sampler::new(0.0, p.seed),
            }),
        });
        // SAFETY: checked non-NULL above.
        unsafe { *out = Box::into_raw(handle) };
        HYPURA_STATUS_OK
    })
}

/// Frees a model. NULL is accepted and ignored. A call on the model still running on
/// another thread is waited for first; using the handle after this returns is undefined.
///
/// # Safety
/// `model` is NULL or a handle from `hypura_load` not freed yet.
#[no_mangle]
pub unsafe extern "C" fn hypura_model_free(model: *mut hypura_model) {
    if model.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: a handle from hypura_load, freed once by contract.
        let handle = unsafe { Box::from_raw(model) };
        // Wait for a call in flight on another thread before the memory goes.
        drop(handle.state.lock());
        drop(handle);
    });
}

/// Vocabulary size, into `*n_vocab`. Never busy.
///
/// # Safety
/// `model` is NULL or a live handle; `n_vocab` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_n_vocab(
    model: *const hypura_model,
    n_vocab: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(n_vocab, "n_vocab");
        // SAFETY: checked non-NULL; a live handle and a writable usize by contract.
        unsafe { *n_vocab = (*model).n_vocab };
        HYPURA_STATUS_OK
    })
}

/// Positions each sequence can hold, into `*positions` (llama.cpp may round the context
/// length up). Never busy.
///
/// # Safety
/// `model` is NULL or a live handle; `positions` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_context_length(
    model: *const hypura_model,
    positions: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(positions, "positions");
        // SAFETY: checked non-NULL; a live handle and a writable usize by contract.
        unsafe { *positions = (*model).positions };
        HYPURA_STATUS_OK
    })
}

/// True in `*is_eog` for end-of-generation tokens (false for ids outside the vocabulary).
/// Never busy.
///
/// # Safety
/// `model` is NULL or a live handle; `is_eog` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn hypura_is_eog(
    model: *const hypura_model,
    token: i32,
    is_eog: *mut bool,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(is_eog, "is_eog");
        // SAFETY: checked non-NULL; a live handle by contract.
        let handle = unsafe { &*model };
        let eog = usize::try_from(token)
            .ok()
            .and_then(|t| handle.end_of_generation.get(t).copied())
            .unwrap_or(false);
        // SAFETY: checked non-NULL; writable by contract.
        unsafe { *is_eog = eog };
        HYPURA_STATUS_OK
    })
}

/// Tokenizes `text_len` bytes of UTF-8 `text` into `tokens` (room for `capacity`), adding
/// BOS when `add_special` and the model wants it. `*n_tokens` receives the count; when it
/// exceeds `capacity`, nothing is written and `HYPURA_STATUS_BUFFER_TOO_SMALL` is returned.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described; `model` is live.
#[no_mangle]
pub unsafe extern "C" fn hypura_tokenize(
    model: *const hypura_model,
    text: *const c_char,
    text_len: usize,
    add_special: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> hypura_status {
    with_model(model, |_, state| {
        require!(n_tokens, "n_tokens");
        if text.is_null() && text_len > 0 {
            return fail(HYPURA_STATUS_NULL_ARGUMENT, "argument `text` is NULL");
        }
        let bytes = if text_len == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL with `text_len` readable bytes by contract.
            unsafe { std::slice::from_raw_parts(text.cast::<u8>(), text_len) }
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return fail(HYPURA_STATUS_INVALID_ARGUMENT, "text is not UTF-8");
        };
        let ids = match state.model().tokenize(text, add_special) {
            Ok(ids) => ids,
            Err(e) => return report(&e),
        };
        // SAFETY: checked non-NULL.
        unsafe { *n_tokens = ids.len() };
        if ids.len() > capacity {
            return fail(
                HYPURA_STATUS_BUFFER_TOO_SMALL,
                format!("{} tokens do not fit in {capacity}", ids.len()),
            );
        }
        if !ids.is_empty() {
            require!(tokens, "tokens");
            // SAFETY: `capacity` >= ids.len() writable slots by contract.
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), tokens, ids.len()) };
        }
        HYPURA_STATUS_OK
    })
}

/// Writes the text of `n_tokens` tokens, concatenated and NUL-terminated, into `buf`.
/// `*len` receives the text's length without the NUL; if `capacity` is not more than that,
/// nothing is written and `HYPURA_STATUS_BUFFER_TOO_SMALL` is returned. The text can end in
/// the middle of a UTF-8 character when a token does.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described; `model` is live.
#[no_mangle]
pub unsafe extern "C" fn hypura_detokenize(
    model: *const hypura_model,
    tokens: *const i32,
    n_tokens: usize,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> hypura_status {
    with_model(model, |handle, state| {
        require!(len, "len");
        if tokens.is_null() && n_tokens > 0 {
            return fail(HYPURA_STATUS_NULL_ARGUMENT, "argument `tokens` is NULL");
        }
        let ids = if n_tokens == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL with `n_tokens` readable ids by contract.
            unsafe { std::slice::from_raw_parts(tokens, n_tokens) }
        };
        let mut text = Vec::new();
        for &id in ids {
            if id < 0 || id as usize >= handle.n_vocab {
                return fail(
                    HYPURA_STATUS_INVALID_ARGUMENT,
                    format!("token id {id} is outside the vocabulary"),
                );
            }
            text.extend_from_slice(&state.model().token_bytes(id));
        }
        // SAFETY: checked non-NULL.
        unsafe { *len = text.len() };
        if capacity <= text.len() {
            return fail(
                HYPURA_STATUS_BUFFER_TOO_SMALL,
                format!("{} bytes and a NUL do not fit in {capacity}", text.len()),
            );
        }
        require!(buf, "buf");
        // SAFETY: `capacity` > text.len() writable bytes by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            *buf.add(text.len()) = 0;
        }
        HYPURA_STATUS_OK
    })
}

/// Decodes `n_tokens` tokens (each appended to its sequence) and writes the logits of the
/// tokens that asked for them into `logits`, in batch order, `n_vocab` floats each.
/// `*n_outputs` receives how many tokens asked. `logits_capacity` counts floats; when it is
/// less than `n_outputs * n_vocab`, nothing is decoded and `HYPURA_STATUS_BUFFER_TOO_SMALL`
/// is returned. A sequence that would grow past its share of the context gives
/// `HYPURA_STATUS_CONTEXT_FULL` and is left as it was.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described; `model` is live.
#[no_mangle]
pub unsafe extern "C" fn hypura_decode(
    model: *mut hypura_model,
    batch: *const hypura_batch_token,
    n_tokens: usize,
    logits: *mut f32,
    logits_capacity: usize,
    n_outputs: *mut usize,
) -> hypura_status {
    with_model(model, |handle, state| {
        require!(batch, "batch");
        if n_tokens == 0 {
            return fail(HYPURA_STATUS_INVALID_ARGUMENT, "the batch is empty");
        }
        // SAFETY: `n_tokens` readable entries by contract.
        let batch = unsafe { std::slice::from_raw_parts(batch, n_tokens) };
        let wanted = batch.iter().filter(|t| t.logits).count();
        if !n_outputs.is_null() {
            // SAFETY: checked non-NULL.
            unsafe { *n_outputs = wanted };
        }
        let needed = wanted * handle.n_vocab;
        if logits_capacity < needed {
            return fail(
                HYPURA_STATUS_BUFFER_TOO_SMALL,
                format!("logits need {needed} floats, capacity is {logits_capacity}"),
            );
        }
        if needed > 0 {
            require!(logits, "logits");
        }
        let tokens: Vec<BatchToken> = batch
            .iter()
            .map(|t| BatchToken {
                token: t.token,
                seq: t.seq_id,
                logits: t.logits,
            })
            .collect();
        let model = match state.sequences_free() {
            Ok(model) => model,
            Err(status) => return status,
        };
        match model.decode(&tokens) {
            Ok(values) => {
                if !values.is_empty() {
                    // SAFETY: `logits_capacity` >= values.len() writable floats, checked above.
                    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), logits, values.len()) };
                }
                HYPURA_STATUS_OK
            }
            Err(e) => report(&e),
        }
    })
}

/// Saves the expert cache's measured use as the model's profile in the folder set with
/// `hypura_params_set_expert_profiles`, for the next load to start from. Nothing is written
/// (and OK returned) when no folder was set or the model's experts are not read slice by
/// slice; HYPURA_STATUS_IO_ERROR when the file cannot be written.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hypura_save_expert_profile(model: *const hypura_model) -> hypura_status {
    with_model(model, |_, state| {
        match state.model().save_expert_profile() {
            Ok(_) => HYPURA_STATUS_OK,
            Err(e) => fail(HYPURA_STATUS_IO_ERROR, e.to_string()),
        }
    })
}

/// Forgets sequence `seq_id`, or every sequence when `seq_id` is -1.
///
/// # Safety
/// `model` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn hypura_reset(model: *mut hypura_model, seq_id: i32) -> hypura_status {
    with_model(model, |_, state| {
        let model = match state.sequences_free() {
            Ok(model) => model,
            Err(status) => return status,
        };
        if seq_id == -1 {
            model.clear();
            return HYPURA_STATUS_OK;
        }
        match model.clear_sequence(seq_id) {
            Ok(()) => HYPURA_STATUS_OK,
            Err(e) => report(&e),
        }
    })
}

/// Picks a token from `n_logits` logits: greedy when `temperature` <= 0, else softmax
/// sampling at `temperature` restricted to the top-`top_p` mass (1 = no restriction), from
/// the model's generator (seeded by `hypura_params_set_seed`).
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described; `model` is live.
#[no_mangle]
pub unsafe extern "C" fn hypura_sample(
    model: *mut hypura_model,
    logits: *const f32,
    n_logits: usize,
    temperature: f32,
    top_p: f32,
    token: *mut i32,
) -> hypura_status {
    with_model(model, |_, state| {
        require!(logits, "logits");
        require!(token, "token");
        if n_logits == 0 || !temperature.is_finite() || !top_p.is_finite() {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                "need at least one logit and finite temperature and top_p",
            );
        }
        // SAFETY: `n_logits` readable floats by contract.
        let logits = unsafe { std::slice::from_raw_parts(logits, n_logits) };
        let picked = state.sampler.sample_with(logits, temperature, top_p);
        // SAFETY: checked non-NULL.
        unsafe { *token = picked };
        HYPURA_STATUS_OK
    })
}
