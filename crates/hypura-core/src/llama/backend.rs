//! Process-wide llama.cpp set-up: backend initialisation (once) and llama.cpp's log routed
//! into the `log` facade. The last error line llama.cpp logs is kept per thread, so that a
//! load that fails can say why, even when two models load at once on different threads.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Once;

use crate::sys;

static INIT: Once = Once::new();
const MAX_ERRORS_KEPT: usize = 16;

thread_local! {
    /// The error lines llama.cpp logged on this thread since they were last cleared (the
    /// first few: the first explains, the later ones say what gave up).
    static ERRORS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// A line llama.cpp is logging in several calls, and its level.
    static PARTIAL_LINE: RefCell<(String, sys::ggml_log_level)> = const { RefCell::new((String::new(), 0)) };
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
    let _ = std::panic::catch_unwind(|| {
        let Some((line, level)) = PARTIAL_LINE.with(|partial| {
            let mut partial = partial.borrow_mut();
            if partial.0.is_empty() {
                partial.1 = level;
            }
            partial.0.push_str(&text);
            // llama.cpp sometimes logs one line in several calls (GGML_LOG_LEVEL_CONT).
            partial
                .0
                .ends_with('\n')
                .then(|| (std::mem::take(&mut partial.0), partial.1))
        }) else {
            return;
        };
        let line = line.trim_end();
        match level {
            sys::GGML_LOG_LEVEL_ERROR => {
                log::debug!(target: "llama.cpp", "error: {line}");
                ERRORS.with(|e| {
                    let mut e = e.borrow_mut();
                    if e.len() < MAX_ERRORS_KEPT {
                        e.push(line.to_string());
                    }
                });
            }
            sys::GGML_LOG_LEVEL_WARN => log::debug!(target: "llama.cpp", "warning: {line}"),
            sys::GGML_LOG_LEVEL_INFO => log::debug!(target: "llama.cpp", "{line}"),
            _ => log::trace!(target: "llama.cpp", "{line}"),
        }
    });
}

/// Initialises llama.cpp's backends (loading them, when built as modules) and log routing;
/// cheap after the first call.
pub(crate) fn init() {
    INIT.call_once(|| {
        // SAFETY: one-time global initialisation, as llama.cpp requires.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            // Backends built as modules register when loaded: from the build's backend
            // folder, the executable's folder and the current one (ggml's search).
            #[cfg(feature = "dynamic-backends")]
            sys::ggml_backend_load_all();
            sys::llama_backend_init();
        }
    });
}

/// Forgets this thread's llama.cpp errors (before a call whose failure is to be explained).
pub(crate) fn clear_last_error() {
    ERRORS.with(|e| e.borrow_mut().clear());
}

/// The error that explains why llama.cpp failed on this thread since the last clear: the
/// line with the cause ("error loading model: …") when there is one, else the first line.
pub(crate) fn take_last_error() -> Option<String> {
    let errors = ERRORS.with(|e| std::mem::take(&mut *e.borrow_mut()));
    errors
        .iter()
        .find_map(|l| {
            l.split_once("error loading model: ")
                .map(|(_, cause)| cause.to_string())
        })
        .or_else(|| errors.first().cloned())
}
