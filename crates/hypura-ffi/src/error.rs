//! The last error message, per thread.

use std::cell::RefCell;
use std::ffi::c_char;

use crate::boundary::ffi_boundary;
use crate::status::hypura_status;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as this thread's last error and returns `status`.
pub(crate) fn fail(status: hypura_status, message: impl Into<String>) -> hypura_status {
    LAST_ERROR.with(|e| *e.borrow_mut() = message.into());
    status
}

/// Copies this thread's last error message, NUL-terminated, into `buf`.
///
/// `*len` (if `len` is not NULL) receives the message's length without the NUL. If
/// `capacity` is not more than that length, nothing is copied and
/// `HYPURA_STATUS_BUFFER_TOO_SMALL` is returned: call again with `*len + 1` bytes. An empty
/// message means no call on this thread has failed yet. `buf` may be NULL when `capacity` is 0.
///
/// # Safety
/// Every pointer is NULL or valid for the reads and writes described above; a
/// model handle comes from `hypura_load` and has not been freed.
#[no_mangle]
pub unsafe extern "C" fn hypura_last_error(
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> hypura_status {
    ffi_boundary(|| {
        let message = LAST_ERROR.with(|e| e.borrow().clone());
        if !len.is_null() {
            // SAFETY: the caller passed a writable usize.
            unsafe { *len = message.len() };
        }
        if capacity <= message.len() {
            // Not recorded as the last error: the message asked for must survive.
            return hypura_status::HYPURA_STATUS_BUFFER_TOO_SMALL;
        }
        if buf.is_null() {
            return hypura_status::HYPURA_STATUS_NULL_ARGUMENT;
        }
        // SAFETY: the caller guarantees `capacity` writable bytes at `buf`.
        unsafe {
            std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), message.len());
            *buf.add(message.len()) = 0;
        }
        hypura_status::HYPURA_STATUS_OK
    })
}
