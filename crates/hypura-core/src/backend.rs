//! Process-wide llama.cpp set-up: backend initialisation (once) and llama.cpp's log routed
//! into the `log` facade, keeping the last error line so that load failures can say why.

use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, Once};

use crate::sys;

static INIT: Once = Once::new();
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);
static PARTIAL_LINE: Mutex<(String, sys::ggml_log_level)> = Mutex::new((String::new(), 0));
static BUFFER_SIZES: Mutex<BufferSizes> = Mutex::new(BufferSizes {
    kv_bytes: 0,
    compute_bytes: 0,
    output_bytes: 0,
});

/// Buffer sizes llama.cpp reported (in its log) while creating a context.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BufferSizes {
    /// KV cache buffers.
    pub kv_bytes: u64,
    /// Compute (activation) buffers.
    pub compute_bytes: u64,
    /// Output (logits) buffers.
    pub output_bytes: u64,
}

fn note_buffer_size(line: &str) {
    let Some((left, right)) = line.split_once("buffer size =") else {
        return;
    };
    let Some(mib) = right
        .trim()
        .strip_suffix("MiB")
        .and_then(|v| v.trim().parse::<f64>().ok())
    else {
        return;
    };
    let bytes = (mib * 1024.0 * 1024.0) as u64;
    let mut sizes = BUFFER_SIZES.lock().unwrap_or_else(|e| e.into_inner());
    if left.trim_end().ends_with("compute") {
        sizes.compute_bytes += bytes;
    } else if left.trim_end().ends_with("output") {
        sizes.output_bytes += bytes;
    } else if left.trim_end().ends_with("KV") {
        sizes.kv_bytes += bytes;
    }
}

/// Starts recording buffer sizes (before creating a context).
pub fn reset_buffer_sizes() {
    *BUFFER_SIZES.lock().unwrap_or_else(|e| e.into_inner()) = BufferSizes::default();
}

/// The buffer sizes recorded since [`reset_buffer_sizes`].
pub fn buffer_sizes() -> BufferSizes {
    *BUFFER_SIZES.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" fn log_callback(
    level: sys::ggml_log_level,
    text: *const c_char,
    _user: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let mut partial = PARTIAL_LINE.lock().unwrap_or_else(|e| e.into_inner());
    if partial.0.is_empty() {
        partial.1 = level;
    }
    partial.0.push_str(&text);
    if !partial.0.ends_with('\n') {
        return; // llama.cpp sometimes logs one line in several calls (GGML_LOG_LEVEL_CONT)
    }
    let line = std::mem::take(&mut partial.0);
    let level = partial.1;
    drop(partial);
    let line = line.trim_end();
    note_buffer_size(line);
    match level {
        sys::GGML_LOG_LEVEL_ERROR => {
            log::error!(target: "llama.cpp", "{line}");
            *LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.to_string());
        }
        sys::GGML_LOG_LEVEL_WARN => log::warn!(target: "llama.cpp", "{line}"),
        sys::GGML_LOG_LEVEL_INFO => log::debug!(target: "llama.cpp", "{line}"),
        _ => log::trace!(target: "llama.cpp", "{line}"),
    }
}

/// Initialises llama.cpp's backends and log routing; safe to call many times.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: one-time global initialisation, as llama.cpp requires.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

/// Takes the last error llama.cpp logged.
pub fn take_last_error() -> Option<String> {
    LAST_ERROR.lock().unwrap_or_else(|e| e.into_inner()).take()
}
