//! Process-wide llama.cpp set-up: backend initialisation (once) and llama.cpp's log routed
//! into the `log` facade, keeping the last error line so that load failures can say why.

use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, Once};

use crate::sys;

static INIT: Once = Once::new();
static LAST_ERROR: Mutex<Option<String>> = Mutex::new(None);
static PARTIAL_LINE: Mutex<String> = Mutex::new(String::new());

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
    partial.push_str(&text);
    if !partial.ends_with('\n') {
        return; // llama.cpp sometimes logs one line in several calls
    }
    let line = std::mem::take(&mut *partial);
    let line = line.trim_end();
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
