//! ggml CPU thread pools that sleep instead of spinning between graph pieces.
//!
//! While weights stream, the graph runs in pieces separated by waits for reads; ggml's default
//! pools poll (spin) in between, taking cores from the reader threads. hypura gives llama.cpp
//! (and its own LM-head computation) pools created with `poll = 0`.

use std::ptr::NonNull;

use crate::sys;

/// An owned ggml thread pool, freed on drop.
#[derive(Debug)]
pub(crate) struct ThreadPool(NonNull<sys::ggml_threadpool>);

// SAFETY: a ggml thread pool may be used from any thread, one computation at a time; hypura
// only uses it from the thread that runs the graph.
unsafe impl Send for ThreadPool {}

impl ThreadPool {
    /// A pool of `n_threads` that sleeps when idle.
    pub(crate) fn sleeping(n_threads: i32) -> Option<Self> {
        // SAFETY: plain constructor calls with a params struct we own.
        unsafe {
            let mut params = sys::ggml_threadpool_params_default(n_threads.max(1));
            params.poll = 0;
            NonNull::new(sys::ggml_threadpool_new(&mut params)).map(Self)
        }
    }

    /// The raw pointer, for llama.cpp and ggml.
    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_threadpool {
        self.0.as_ptr()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // SAFETY: created by ggml_threadpool_new, freed once, after every user is gone.
        unsafe { sys::ggml_threadpool_free(self.0.as_ptr()) }
    }
}

/// `requested` when positive, else every core the process may use.
pub(crate) fn thread_count(requested: i32) -> i32 {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get() as i32)
            .unwrap_or(4)
    }
}
