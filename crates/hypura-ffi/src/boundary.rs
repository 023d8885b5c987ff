//! The panic boundary: every exported function's body runs inside [`ffi_boundary`].

use crate::error::fail;
use crate::status::hypura_status;

/// Runs `body`, turning a panic into `HYPURA_STATUS_PANIC`.
pub(crate) fn ffi_boundary(body: impl FnOnce() -> hypura_status) -> hypura_status {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            fail(
                hypura_status::HYPURA_STATUS_PANIC,
                format!("internal error (panic): {what}"),
            )
        }
    }
}

/// Returns `HYPURA_STATUS_NULL_ARGUMENT` from the enclosing closure when `$ptr` is NULL.
macro_rules! require {
    ($ptr:expr, $name:literal) => {
        if $ptr.is_null() {
            return crate::error::fail(
                crate::status::hypura_status::HYPURA_STATUS_NULL_ARGUMENT,
                concat!("argument `", $name, "` is NULL"),
            );
        }
    };
}
pub(crate) use require;
