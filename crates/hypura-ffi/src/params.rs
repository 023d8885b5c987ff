//! Load parameters as an opaque object with one setter per option: options can be added
//! without changing any struct's size, so the ABI grows without breaking.

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use hypura_core::{limits, Budget, LoadMode, LoadOptions};

use crate::boundary::{ffi_boundary, require};
use crate::error::fail;
use crate::status::hypura_status::{self, *};

/// Parameters of [`crate::hypura_load`]. Opaque: create with [`hypura_params_new`], change
/// with the `hypura_params_set_*` functions, free with [`hypura_params_free`].
pub struct hypura_params {
    pub(crate) model_path: Option<PathBuf>,
    pub(crate) options: LoadOptions,
    pub(crate) seed: u64,
}

impl hypura_params {
    /// The load options, with the model path (`None` until one is set).
    pub(crate) fn load_options(&self) -> Option<LoadOptions> {
        let path = self.model_path.clone()?;
        Some(self.options.clone().with_model_path(path))
    }
}

/// Creates parameters with the defaults (tiered, every weight in RAM, all cores, a
/// 2048-token context, one sequence, seed 0, llama.cpp's repacked layouts on, streamed reads
/// verified) in `*out`. The model path must be set before loading. Free with
/// [`hypura_params_free`].
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_new(out: *mut *mut hypura_params) -> hypura_status {
    ffi_boundary(|| {
        require!(out, "out");
        let params = Box::new(hypura_params {
            model_path: None,
            options: LoadOptions::new(""),
            seed: 0,
        });
        // SAFETY: checked non-NULL; the caller passed a writable pointer.
        unsafe { *out = Box::into_raw(params) };
        HYPURA_STATUS_OK
    })
}

/// Frees parameters. NULL is accepted and ignored.
///
/// # Safety
/// `params` is NULL or a value from [`hypura_params_new`] not freed yet.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_free(params: *mut hypura_params) {
    if params.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: a value from hypura_params_new, freed once by contract.
        drop(unsafe { Box::from_raw(params) });
    });
}

/// Runs `set` on the parameters behind `params`.
fn with_params(
    params: *mut hypura_params,
    set: impl FnOnce(&mut hypura_params) -> hypura_status,
) -> hypura_status {
    ffi_boundary(|| {
        require!(params, "params");
        // SAFETY: checked non-NULL; a live value from hypura_params_new by contract, used by
        // one thread at a time.
        set(unsafe { &mut *params })
    })
}

/// Sets the GGUF file to load: a NUL-terminated UTF-8 path, copied.
///
/// # Safety
/// `params` is NULL or live; `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_model_path(
    params: *mut hypura_params,
    path: *const c_char,
) -> hypura_status {
    with_params(params, |p| {
        require!(path, "path");
        // SAFETY: checked non-NULL; NUL-terminated by contract.
        let Ok(path) = unsafe { CStr::from_ptr(path) }.to_str() else {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                "the model path is not UTF-8",
            );
        };
        if path.is_empty() {
            return fail(HYPURA_STATUS_INVALID_ARGUMENT, "the model path is empty");
        }
        p.model_path = Some(PathBuf::from(path));
        HYPURA_STATUS_OK
    })
}

/// Weights only: bytes of weights hypura may hold in RAM (resident tensors, the streaming
/// window and one micro-batch of embedding rows); the rest streams from the file. The KV
/// cache and buffers come on top: `hypura_params_set_memory_budget_bytes` bounds the whole
/// process instead. Must be more than 0.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_weights_budget_bytes(
    params: *mut hypura_params,
    bytes: u64,
) -> hypura_status {
    with_params(params, |p| {
        if bytes == 0 {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                "the weights budget must be more than 0 bytes",
            );
        }
        p.options = p.options.clone().budget(Budget::WeightBytes(bytes));
        HYPURA_STATUS_OK
    })
}

/// Weights only: the share of the model's weight bytes hypura may hold in RAM, in percent:
/// more than 0, at most 100.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_weights_budget_percent(
    params: *mut hypura_params,
    percent: f32,
) -> hypura_status {
    with_params(params, |p| {
        if !(percent.is_finite() && percent > 0.0 && percent <= 100.0) {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                "the weights budget percentage must be in (0, 100]",
            );
        }
        p.options = p
            .options
            .clone()
            .budget(Budget::WeightPercent(f64::from(percent)));
        HYPURA_STATUS_OK
    })
}

/// The former name of `hypura_params_set_weights_budget_bytes` (weights only), kept working.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_ram_budget_bytes(
    params: *mut hypura_params,
    bytes: u64,
) -> hypura_status {
    // SAFETY: the caller's promise about `params` is the same one.
    unsafe { hypura_params_set_weights_budget_bytes(params, bytes) }
}

/// The former name of `hypura_params_set_weights_budget_percent` (weights only), kept working.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_ram_budget_percent(
    params: *mut hypura_params,
    percent: f32,
) -> hypura_status {
    // SAFETY: the caller's promise about `params` is the same one.
    unsafe { hypura_params_set_weights_budget_percent(params, percent) }
}

/// The whole process may use this many bytes: hypura subtracts the KV cache, llama.cpp's
/// buffers and its own, and plans the weights in the rest.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_memory_budget_bytes(
    params: *mut hypura_params,
    bytes: u64,
) -> hypura_status {
    with_params(params, |p| {
        p.options = p.options.clone().budget(Budget::ProcessBytes(bytes));
        HYPURA_STATUS_OK
    })
}

/// Bytes of GPU memory hypura may use: the weights it puts there and the KV cache of their
/// layers (0, the default: nothing on the GPU). Loading then needs a GPU device (a build
/// with a GPU backend): without one, `hypura_load` gives `HYPURA_STATUS_UNSUPPORTED`.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_gpu_budget_bytes(
    params: *mut hypura_params,
    bytes: u64,
) -> hypura_status {
    with_params(params, |p| {
        p.options = p
            .options
            .clone()
            .gpu_budget((bytes > 0).then_some(Budget::WeightBytes(bytes)));
        HYPURA_STATUS_OK
    })
}

/// CPU threads; 0 = all cores (at most 512).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_threads(
    params: *mut hypura_params,
    threads: u32,
) -> hypura_status {
    with_params(params, |p| {
        if threads > limits::MAX_THREADS {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                format!("threads = {threads} (at most {})", limits::MAX_THREADS),
            );
        }
        p.options = p.options.clone().threads(threads);
        HYPURA_STATUS_OK
    })
}

/// Context length in tokens, shared by the sequences (at least 1).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_context_length(
    params: *mut hypura_params,
    tokens: u32,
) -> hypura_status {
    with_params(params, |p| {
        if !(1..=limits::MAX_CONTEXT_LENGTH).contains(&tokens) {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                format!(
                    "context length {tokens} (1 to {})",
                    limits::MAX_CONTEXT_LENGTH
                ),
            );
        }
        p.options = p.options.clone().context_length(tokens);
        HYPURA_STATUS_OK
    })
}

/// Tokens computed in one pass (llama.cpp's `n_batch` and `n_ubatch` in one; default 128, no
/// more than the context length takes effect). With streamed weights each pass reads them
/// again: a larger batch reads them fewer times for long prompts, and its compute buffer
/// comes out of a memory budget.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_batch_size(
    params: *mut hypura_params,
    tokens: u32,
) -> hypura_status {
    with_params(params, |p| {
        if !(1..=limits::MAX_BATCH_SIZE).contains(&tokens) {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                format!("batch size {tokens} (1 to {})", limits::MAX_BATCH_SIZE),
            );
        }
        p.options = p.options.clone().batch_size(tokens);
        HYPURA_STATUS_OK
    })
}

/// Sequences that can be decoded side by side (ids `0..n`; at least 1).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_sequences(
    params: *mut hypura_params,
    n: u32,
) -> hypura_status {
    with_params(params, |p| {
        if n == 0 {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                "at least one sequence is needed",
            );
        }
        p.options = p.options.clone().sequences(n);
        HYPURA_STATUS_OK
    })
}

/// Seed of the model's sampler ([`crate::hypura_sample`]).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_seed(
    params: *mut hypura_params,
    seed: u64,
) -> hypura_status {
    with_params(params, |p| {
        p.seed = seed;
        HYPURA_STATUS_OK
    })
}

/// Load as stock llama.cpp would (no hypura placement), for comparisons.
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_stock(
    params: *mut hypura_params,
    stock: bool,
) -> hypura_status {
    with_params(params, |p| {
        let mode = if stock {
            LoadMode::Stock
        } else {
            LoadMode::Tiered
        };
        p.options = p.options.clone().mode(mode);
        HYPURA_STATUS_OK
    })
}

/// llama.cpp's repacked CPU weight layouts (on by default).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_repack(
    params: *mut hypura_params,
    repack: bool,
) -> hypura_status {
    with_params(params, |p| {
        p.options = p.options.clone().repack(repack);
        HYPURA_STATUS_OK
    })
}

/// Reader threads (read requests in flight) when streaming, 1 to 64 (default: 8 for a
/// mixture-of-experts model streamed expert by expert, 4 otherwise).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_io_threads(
    params: *mut hypura_params,
    threads: u32,
) -> hypura_status {
    with_params(params, |p| {
        if !(1..=limits::MAX_IO_THREADS).contains(&threads) {
            return fail(
                HYPURA_STATUS_INVALID_ARGUMENT,
                format!("io threads = {threads} (1 to {})", limits::MAX_IO_THREADS),
            );
        }
        p.options = p.options.clone().io_threads(threads);
        HYPURA_STATUS_OK
    })
}

/// Checksum streamed regions so that a model file changed while loaded is detected (on by
/// default).
///
/// # Safety
/// `params` is NULL or live.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_verify_reads(
    params: *mut hypura_params,
    verify: bool,
) -> hypura_status {
    with_params(params, |p| {
        p.options = p.options.clone().verify_reads(verify);
        HYPURA_STATUS_OK
    })
}

/// Mixture-of-experts models read slice by slice: the folder of saved expert profiles (a
/// NUL-terminated UTF-8 path, copied), or NULL for none (the default). A load starts its
/// expert cache from the model's profile there, if there is one; [`hypura_save_expert_profile`]
/// writes it there.
///
/// # Safety
/// `params` is NULL or live; `dir` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn hypura_params_set_expert_profiles(
    params: *mut hypura_params,
    dir: *const c_char,
) -> hypura_status {
    with_params(params, |p| {
        let dir = if dir.is_null() {
            None
        } else {
            // SAFETY: checked non-NULL; NUL-terminated by contract.
            match unsafe { CStr::from_ptr(dir) }.to_str() {
                Ok("") => {
                    return fail(
                        HYPURA_STATUS_INVALID_ARGUMENT,
                        "the expert profiles folder is empty (NULL sets none)",
                    )
                }
                Ok(d) => Some(PathBuf::from(d)),
                Err(_) => {
                    return fail(
                        HYPURA_STATUS_INVALID_ARGUMENT,
                        "the expert profiles folder is not UTF-8",
                    )
                }
            }
        };
        p.options = p.options.clone().expert_profiles(dir);
        HYPURA_STATUS_OK
    })
}
