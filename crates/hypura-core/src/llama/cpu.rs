//! The CPU backend's own entry points: thread pools that sleep instead of spinning between
//! graph pieces, and a CPU backend to compute hypura's own graphs on. Both are reached
//! through ggml's backend registry (the CPU device and its registry's procedure addresses),
//! so they work the same whether the CPU backend is linked into the binary or loaded as a
//! module at run time (the `dynamic-backends` feature, where ggml picks the best of its CPU
//! variants for the machine).
//!
//! While weights stream, the graph runs in pieces separated by waits for reads; ggml's default
//! pools poll (spin) in between, taking cores from the reader threads. hypura gives llama.cpp
//! (and its own LM-head computation) pools created with `poll = 0`.

use std::ffi::CStr;
use std::ptr::NonNull;

use crate::sys;

type ThreadPoolNew =
    unsafe extern "C" fn(*mut sys::ggml_threadpool_params) -> *mut sys::ggml_threadpool;
type ThreadPoolFree = unsafe extern "C" fn(*mut sys::ggml_threadpool);
type SetThreadPool = unsafe extern "C" fn(sys::ggml_backend_t, *mut sys::ggml_threadpool);
type SetThreadCount = unsafe extern "C" fn(sys::ggml_backend_t, i32);

/// The CPU device, if a CPU backend is registered.
pub(crate) fn cpu_device() -> Option<sys::ggml_backend_dev_t> {
    // SAFETY: a registry lookup.
    let dev = unsafe { sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU) };
    (!dev.is_null()).then_some(dev)
}

/// The CPU backend's procedure `name`, as a function pointer of type `F`.
///
/// # Safety
/// `F` must be an `unsafe extern "C" fn` type with the signature ggml gives `name`.
pub(crate) unsafe fn cpu_procedure<F: Copy>(name: &CStr) -> Option<F> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut std::ffi::c_void>()) };
    let dev = cpu_device()?;
    // SAFETY: registry lookups on a registered device.
    let address = unsafe {
        let reg = sys::ggml_backend_dev_backend_reg(dev);
        sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr())
    };
    // SAFETY: a non-null procedure address of the signature the caller names (its contract);
    // `F` is pointer-sized (checked above).
    (!address.is_null()).then(|| unsafe { std::mem::transmute_copy::<_, F>(&address) })
}

/// An owned ggml thread pool, freed on drop.
#[derive(Debug)]
pub(crate) struct ThreadPool {
    pool: NonNull<sys::ggml_threadpool>,
    free: ThreadPoolFree,
}

// SAFETY: a ggml thread pool may be used from any thread, one computation at a time; hypura
// only uses it from the thread that runs the graph.
unsafe impl Send for ThreadPool {}

impl ThreadPool {
    /// A pool of `n_threads` that sleeps when idle (`None` without a CPU backend).
    pub(crate) fn sleeping(n_threads: i32) -> Option<Self> {
        // SAFETY: the CPU backend's documented procedures, with their signatures.
        let (new, free) = unsafe {
            (
                cpu_procedure::<ThreadPoolNew>(c"ggml_threadpool_new")?,
                cpu_procedure::<ThreadPoolFree>(c"ggml_threadpool_free")?,
            )
        };
        // SAFETY: plain constructor calls with a params struct we own.
        unsafe {
            let mut params = sys::ggml_threadpool_params_default(n_threads.max(1));
            params.poll = 0;
            NonNull::new(new(&mut params)).map(|pool| Self { pool, free })
        }
    }

    /// The raw pointer, for llama.cpp and ggml.
    pub(crate) fn as_ptr(&self) -> *mut sys::ggml_threadpool {
        self.pool.as_ptr()
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // SAFETY: created by ggml_threadpool_new, freed once, after every user is gone.
        unsafe { (self.free)(self.pool.as_ptr()) }
    }
}

/// A CPU backend instance computing with `n_threads` (in a sleeping pool where one can be
/// made), freed on drop.
#[derive(Debug)]
pub(crate) struct CpuBackend {
    backend: NonNull<sys::ggml_backend>,
    // Dropped after the backend (fields drop in order), which no longer uses it then.
    _pool: Option<ThreadPool>,
}

// SAFETY: a ggml backend may be used from any thread, one computation at a time; its owner
// takes `&mut self` to compute.
unsafe impl Send for CpuBackend {}

impl CpuBackend {
    /// `None` without a CPU backend.
    pub(crate) fn new(n_threads: i32) -> Option<Self> {
        let dev = cpu_device()?;
        // SAFETY: initialises a backend of a registered device (no parameters).
        let backend = NonNull::new(unsafe { sys::ggml_backend_dev_init(dev, std::ptr::null()) })?;
        let pool = ThreadPool::sleeping(n_threads);
        // SAFETY: the CPU backend's documented procedures, with their signatures, on a CPU
        // backend; the pool outlives the backend (field order).
        unsafe {
            if let Some(set) = cpu_procedure::<SetThreadCount>(c"ggml_backend_set_n_threads") {
                set(backend.as_ptr(), n_threads.max(1));
            }
            if let (Some(set), Some(p)) = (
                cpu_procedure::<SetThreadPool>(c"ggml_backend_cpu_set_threadpool"),
                &pool,
            ) {
                set(backend.as_ptr(), p.as_ptr());
            }
        }
        Some(Self {
            backend,
            _pool: pool,
        })
    }

    /// Computes `graph`.
    ///
    /// # Safety
    /// Every tensor of `graph` must have its data in host memory valid for the computation.
    pub(crate) unsafe fn compute(&mut self, graph: *mut sys::ggml_cgraph) -> sys::ggml_status {
        // SAFETY: a live CPU backend; the caller vouches for the graph.
        unsafe { sys::ggml_backend_graph_compute(self.backend.as_ptr(), graph) }
    }
}

impl Drop for CpuBackend {
    fn drop(&mut self) {
        // SAFETY: created by ggml_backend_dev_init, freed once.
        unsafe { sys::ggml_backend_free(self.backend.as_ptr()) }
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
