//! Model handles: load, tokenize, decode, sample, statistics, free.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use hypura_core::gguf::GgufHeader;
use hypura_core::session::BatchToken;
use hypura_core::{proc_stats, HypuraError, LoadMode, LoadOptions, Sampler, Session};

use crate::boundary::{ffi_boundary, require};
use crate::error::fail;
use crate::status::hypura_status;

/// Parameters of [`hypura_load`]. Fill with [`hypura_params_default`], then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hypura_params {
    /// Path of the GGUF file, NUL-terminated UTF-8. Borrowed only during `hypura_load`.
    pub model_path: *const c_char,
    /// Bytes of weights hypura may hold in RAM. 0: use `ram_budget_percent`.
    pub ram_budget_bytes: u64,
    /// RAM budget as a percentage of the model's weight bytes, used when `ram_budget_bytes`
    /// is 0. 0 (or 100 and more): the whole model in RAM.
    pub ram_budget_percent: f32,
    /// Bytes of weights to place in GPU memory. Must be 0: this build has no GPU tier
    /// (anything else gives `HYPURA_STATUS_UNSUPPORTED`).
    pub gpu_budget_bytes: u64,
    /// CPU threads; 0 = all cores.
    pub n_threads: i32,
    /// Context length in tokens (shared by the sequences).
    pub n_ctx: u32,
    /// Sequences that can be decoded side by side (ids `0..n_seq_max`).
    pub n_seq_max: u32,
    /// Seed of the model's sampler ([`hypura_sample`]).
    pub seed: u64,
    /// Load as stock llama.cpp would (no hypura placement), for comparisons.
    pub baseline: bool,
    /// Turn off llama.cpp's repacked CPU weight layouts.
    pub no_repack: bool,
}

/// One token of a batch for [`hypura_decode`].
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct hypura_batch_token {
    /// Token id.
    pub token: i32,
    /// Sequence it is appended to, in `0..n_seq_max`; it goes at that sequence's next position.
    pub seq_id: i32,
    /// Whether to return logits after this token.
    pub logits: bool,
}

/// Statistics of a model, per tier. See [`hypura_get_stats`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hypura_stats {
    /// Sum of the model's weight bytes.
    pub model_bytes: u64,
    /// The RAM budget in force.
    pub ram_budget_bytes: u64,
    /// Weight bytes resident in RAM.
    pub ram_resident_bytes: u64,
    /// Weight bytes resident in GPU memory (0: no GPU tier in this build).
    pub gpu_resident_bytes: u64,
    /// Weight bytes streamed from the file per token (planned).
    pub nvme_streamed_bytes_per_token: u64,
    /// Bytes hypura read from the model file since the model was loaded (load excluded).
    pub bytes_read: u64,
    /// Tokens decoded so far (prompts included).
    pub tokens_decoded: u64,
    /// Tokens decoded per second of decoding, so far.
    pub tokens_per_second: f64,
    /// The planner's bound on tokens per second.
    pub bound_tokens_per_second: f64,
    /// Peak resident set size of the process since the model was loaded.
    pub peak_rss_bytes: u64,
}

/// A loaded model with its context. Opaque; free with [`hypura_model_free`].
pub struct hypura_model {
    session: Session,
    sampler: Sampler,
    load_bytes_read: u64,
}

fn error_status(e: &HypuraError) -> hypura_status {
    fail(hypura_status::from(e), e.to_string())
}

/// Fills `*params` with defaults: whole model in RAM, all cores, 2048-token context, one
/// sequence, seed 0. `model_path` is NULL and must be set.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_default(params: *mut hypura_params) -> hypura_status {
    ffi_boundary(|| {
        require!(params, "params");
        // SAFETY: checked non-NULL; the caller passed a writable struct.
        unsafe {
            params.write(hypura_params {
                model_path: std::ptr::null(),
                ram_budget_bytes: 0,
                ram_budget_percent: 0.0,
                gpu_budget_bytes: 0,
                n_threads: 0,
                n_ctx: 2048,
                n_seq_max: 1,
                seed: 0,
                baseline: false,
                no_repack: false,
            })
        };
        hypura_status::HYPURA_STATUS_OK
    })
}

/// Loads a model. `*out` is set to NULL first and to the new handle on success; the caller
/// owns it and frees it with [`hypura_model_free`]. Loading reads the RAM tier of the file
/// and can take a while for large models.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
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
        // SAFETY: checked non-NULL; the caller passed an initialised struct.
        let p = unsafe { *params };
        require!(p.model_path, "params->model_path");
        // SAFETY: checked non-NULL; NUL-terminated by contract.
        let Ok(path) = unsafe { CStr::from_ptr(p.model_path) }.to_str() else {
            return fail(
                hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                "model_path is not UTF-8",
            );
        };
        if p.gpu_budget_bytes != 0 {
            return fail(
                hypura_status::HYPURA_STATUS_UNSUPPORTED,
                "gpu_budget_bytes must be 0: this build of hypura has no GPU tier",
            );
        }
        if !(p.ram_budget_percent.is_finite() && p.ram_budget_percent >= 0.0) {
            return fail(
                hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                "ram_budget_percent must be >= 0",
            );
        }
        if p.n_ctx == 0 || p.n_seq_max == 0 || p.n_threads < 0 {
            return fail(
                hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                "n_ctx and n_seq_max must be at least 1, n_threads at least 0",
            );
        }
        let path = PathBuf::from(path);
        let header = match GgufHeader::open(&path) {
            Ok(h) => h,
            Err(e) => return error_status(&e),
        };
        let model_bytes = header.weight_bytes();
        let budget = if p.ram_budget_bytes > 0 {
            p.ram_budget_bytes
        } else if p.ram_budget_percent > 0.0 && p.ram_budget_percent < 100.0 {
            (model_bytes as f64 * p.ram_budget_percent as f64 / 100.0).round() as u64
        } else {
            model_bytes
        };
        let mut options = LoadOptions::new(path);
        options.mode = if p.baseline {
            LoadMode::Baseline
        } else {
            LoadMode::Tiered
        };
        options.ram_budget_bytes = Some(budget);
        options.no_repack = p.no_repack;
        options.n_threads = p.n_threads;
        options.n_ctx = p.n_ctx;
        options.n_seq_max = p.n_seq_max;
        match Session::load(options) {
            Ok(session) => {
                let load_bytes_read = session.file_bytes_read();
                let model = Box::new(hypura_model {
                    session,
                    sampler: Sampler::new(0.0, p.seed),
                    load_bytes_read,
                });
                // SAFETY: checked non-NULL above.
                unsafe { *out = Box::into_raw(model) };
                hypura_status::HYPURA_STATUS_OK
            }
            Err(e) => error_status(&e),
        }
    })
}

/// Frees a model. NULL is accepted and ignored. Do not use the handle afterwards.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_model_free(model: *mut hypura_model) {
    if model.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: a handle from hypura_load, freed once by contract.
        drop(unsafe { Box::from_raw(model) });
    });
}

/// Vocabulary size, into `*n_vocab`.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_n_vocab(
    model: *const hypura_model,
    n_vocab: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(n_vocab, "n_vocab");
        // SAFETY: checked non-NULL; a live handle by contract.
        unsafe { *n_vocab = (*model).session.n_vocab() };
        hypura_status::HYPURA_STATUS_OK
    })
}

/// Positions each sequence can hold, into `*positions` (llama.cpp may round `n_ctx` up).
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_context_length(
    model: *const hypura_model,
    positions: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(positions, "positions");
        // SAFETY: checked non-NULL; a live handle by contract.
        unsafe { *positions = (*model).session.context_per_sequence() };
        hypura_status::HYPURA_STATUS_OK
    })
}

/// Tokenizes `text_len` bytes of UTF-8 `text` into `tokens` (capacity `capacity`). `*n_tokens`
/// receives the count; when it exceeds `capacity`, nothing is written and
/// `HYPURA_STATUS_BUFFER_TOO_SMALL` is returned. `add_special` adds BOS where the model wants it.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
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
    ffi_boundary(|| {
        require!(model, "model");
        require!(n_tokens, "n_tokens");
        if text.is_null() && text_len > 0 {
            return fail(
                hypura_status::HYPURA_STATUS_NULL_ARGUMENT,
                "argument `text` is NULL",
            );
        }
        let bytes = if text_len == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL with `text_len` readable bytes by contract.
            unsafe { std::slice::from_raw_parts(text.cast::<u8>(), text_len) }
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return fail(
                hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                "text is not UTF-8",
            );
        };
        // SAFETY: a live handle by contract.
        let ids = match unsafe { &(*model).session }.tokenize(text, add_special) {
            Ok(ids) => ids,
            Err(e) => return error_status(&e),
        };
        // SAFETY: checked non-NULL.
        unsafe { *n_tokens = ids.len() };
        if ids.len() > capacity {
            return fail(
                hypura_status::HYPURA_STATUS_BUFFER_TOO_SMALL,
                format!("{} tokens do not fit in {capacity}", ids.len()),
            );
        }
        if !ids.is_empty() {
            require!(tokens, "tokens");
            // SAFETY: `capacity` >= ids.len() writable slots by contract.
            unsafe { std::ptr::copy_nonoverlapping(ids.as_ptr(), tokens, ids.len()) };
        }
        hypura_status::HYPURA_STATUS_OK
    })
}

/// Writes the text of `n_tokens` tokens, concatenated and NUL-terminated, into `buf`.
/// `*len` receives the text's length without the NUL; if `capacity` is not more than that,
/// nothing is written and `HYPURA_STATUS_BUFFER_TOO_SMALL` is returned. The text can end in
/// the middle of a UTF-8 character when a token does.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_detokenize(
    model: *const hypura_model,
    tokens: *const i32,
    n_tokens: usize,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(len, "len");
        if tokens.is_null() && n_tokens > 0 {
            return fail(
                hypura_status::HYPURA_STATUS_NULL_ARGUMENT,
                "argument `tokens` is NULL",
            );
        }
        // SAFETY: a live handle by contract.
        let session = unsafe { &(*model).session };
        let ids = if n_tokens == 0 {
            &[][..]
        } else {
            // SAFETY: non-NULL with `n_tokens` readable ids by contract.
            unsafe { std::slice::from_raw_parts(tokens, n_tokens) }
        };
        let mut text = Vec::new();
        for &id in ids {
            if id < 0 || id as usize >= session.n_vocab() {
                return fail(
                    hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                    format!("token id {id} is outside the vocabulary"),
                );
            }
            text.extend_from_slice(&session.token_bytes(id));
        }
        // SAFETY: checked non-NULL.
        unsafe { *len = text.len() };
        if capacity <= text.len() {
            return fail(
                hypura_status::HYPURA_STATUS_BUFFER_TOO_SMALL,
                format!("{} bytes and a NUL do not fit in {capacity}", text.len()),
            );
        }
        require!(buf, "buf");
        // SAFETY: `capacity` > text.len() writable bytes by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            *buf.add(text.len()) = 0;
        }
        hypura_status::HYPURA_STATUS_OK
    })
}

/// True in `*is_eog` for end-of-generation tokens.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
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
        unsafe { *is_eog = (*model).session.is_end_of_generation(token) };
        hypura_status::HYPURA_STATUS_OK
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
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_decode(
    model: *mut hypura_model,
    batch: *const hypura_batch_token,
    n_tokens: usize,
    logits: *mut f32,
    logits_capacity: usize,
    n_outputs: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(batch, "batch");
        if n_tokens == 0 {
            return fail(
                hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                "the batch is empty",
            );
        }
        // SAFETY: a live handle used by one thread at a time, by contract.
        let model = unsafe { &mut *model };
        // SAFETY: `n_tokens` readable entries by contract.
        let batch = unsafe { std::slice::from_raw_parts(batch, n_tokens) };
        let wanted = batch.iter().filter(|t| t.logits).count();
        if !n_outputs.is_null() {
            // SAFETY: checked non-NULL.
            unsafe { *n_outputs = wanted };
        }
        let needed = wanted * model.session.n_vocab();
        if logits_capacity < needed {
            return fail(
                hypura_status::HYPURA_STATUS_BUFFER_TOO_SMALL,
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
        match model.session.decode_batch(&tokens) {
            Ok(values) => {
                if !values.is_empty() {
                    // SAFETY: `logits_capacity` >= values.len() writable floats, checked above.
                    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), logits, values.len()) };
                }
                hypura_status::HYPURA_STATUS_OK
            }
            Err(e) => error_status(&e),
        }
    })
}

/// Forgets sequence `seq_id`, or every sequence when `seq_id` is -1.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_reset(model: *mut hypura_model, seq_id: i32) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        // SAFETY: a live handle used by one thread at a time, by contract.
        let session = unsafe { &mut (*model).session };
        if seq_id == -1 {
            session.reset();
            return hypura_status::HYPURA_STATUS_OK;
        }
        match session.reset_sequence(seq_id) {
            Ok(()) => hypura_status::HYPURA_STATUS_OK,
            Err(e) => error_status(&e),
        }
    })
}

/// Picks a token from `n_logits` logits: greedy when `temperature` <= 0, else softmax
/// sampling at `temperature` restricted to the top-`top_p` mass (1 = no restriction), from
/// the model's generator (seeded by `params.seed`).
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_sample(
    model: *mut hypura_model,
    logits: *const f32,
    n_logits: usize,
    temperature: f32,
    top_p: f32,
    token: *mut i32,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(logits, "logits");
        require!(token, "token");
        if n_logits == 0 || !temperature.is_finite() || !top_p.is_finite() {
            return fail(
                hypura_status::HYPURA_STATUS_INVALID_ARGUMENT,
                "need at least one logit and finite temperature and top_p",
            );
        }
        // SAFETY: a live handle used by one thread at a time; `n_logits` readable floats.
        let (model, logits) =
            unsafe { (&mut *model, std::slice::from_raw_parts(logits, n_logits)) };
        let picked = model.sampler.sample_with(logits, temperature, top_p);
        // SAFETY: checked non-NULL.
        unsafe { *token = picked };
        hypura_status::HYPURA_STATUS_OK
    })
}

/// Fills `*stats` with the model's per-tier statistics.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_get_stats(
    model: *const hypura_model,
    stats: *mut hypura_stats,
) -> hypura_status {
    ffi_boundary(|| {
        require!(model, "model");
        require!(stats, "stats");
        // SAFETY: a live handle by contract.
        let model = unsafe { &*model };
        let plan = model.session.plan();
        let (tokens, seconds) = model.session.decode_totals();
        let value = hypura_stats {
            model_bytes: plan.model_bytes,
            ram_budget_bytes: plan.ram_budget_bytes,
            ram_resident_bytes: plan.ram_resident_bytes,
            gpu_resident_bytes: 0,
            nvme_streamed_bytes_per_token: plan.streamed_bytes_per_token,
            bytes_read: model.session.file_bytes_read() - model.load_bytes_read,
            tokens_decoded: tokens,
            tokens_per_second: if seconds > 0.0 {
                tokens as f64 / seconds
            } else {
                0.0
            },
            bound_tokens_per_second: plan.bound_tok_s,
            peak_rss_bytes: proc_stats::peak_rss_bytes(),
        };
        // SAFETY: checked non-NULL; a writable struct by contract.
        unsafe { stats.write(value) };
        hypura_status::HYPURA_STATUS_OK
    })
}
