//! # libhypura: the C ABI of hypura
//!
//! A small C API over `hypura-core`: load a GGUF model with a RAM budget (the rest of the
//! weights stream from the file), generate text for many requests at once on hypura's engine
//! (submit, step, cancel: continuous batching, the engine `hypura serve` uses), or go low
//! level (tokenize, decode batches for one or more sequences, sample), and read per-tier
//! statistics. The header `include/hypura.h` is generated from this crate
//! by cbindgen (`HYPURA_BLESS=1 cargo test -p hypura-ffi --test header` rewrites it).
//!
//! Rules that hold for every function:
//! - Every function that can fail returns a [`hypura_status`]; `HYPURA_STATUS_OK` is 0. The
//!   numbers never change.
//! - On failure, [`hypura_last_error`] gives a message (per thread).
//! - No panic crosses the boundary: it becomes `HYPURA_STATUS_PANIC`.
//! - A NULL pointer where a value is required gives `HYPURA_STATUS_NULL_ARGUMENT`. A buffer
//!   pointer may be NULL only when its capacity is 0.
//! - A `hypura_model` may be used from any thread. A call made while another thread's call
//!   on the same model runs returns `HYPURA_STATUS_BUSY` (it never waits, never crashes).
//! - Options live in an opaque `hypura_params` with one setter each, and `hypura_get_stats`
//!   takes the caller's struct size: both can grow without breaking the ABI.
//! - Still undefined (C cannot check them): using a handle after freeing it, freeing it
//!   twice or while another thread may still call it, and pointers that are not valid for
//!   the lengths passed.
#![allow(non_camel_case_types)]

mod boundary;
mod engine;
mod error;
mod model;
mod params;
mod stats;
mod status;

pub use engine::*;
pub use error::hypura_last_error;
pub use model::*;
pub use params::*;
pub use stats::*;
pub use status::hypura_status;

/// Major version of libhypura.
#[no_mangle]
pub extern "C" fn hypura_version_major() -> u32 {
    env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0)
}

/// Minor version of libhypura.
#[no_mangle]
pub extern "C" fn hypura_version_minor() -> u32 {
    env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0)
}

/// Patch version of libhypura.
#[no_mangle]
pub extern "C" fn hypura_version_patch() -> u32 {
    env!("CARGO_PKG_VERSION_PATCH").parse().unwrap_or(0)
}

/// The version as a static NUL-terminated string, e.g. "0.1.0". Never NULL; do not free.
#[no_mangle]
pub extern "C" fn hypura_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_matches_cargo() {
        let v = format!(
            "{}.{}.{}",
            super::hypura_version_major(),
            super::hypura_version_minor(),
            super::hypura_version_patch()
        );
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        // SAFETY: a static NUL-terminated string.
        let s = unsafe { std::ffi::CStr::from_ptr(super::hypura_version()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
