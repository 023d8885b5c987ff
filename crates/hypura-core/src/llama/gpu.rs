//! The GPU device hypura's GPU tier uses: the first GPU (or integrated GPU) in ggml's backend
//! registry, whichever backend registered it (CUDA, Metal, Vulkan: compiled in through the
//! `cuda`, `metal` or `vulkan` feature, or loaded as a module with `dynamic-backends`).

use std::ffi::CStr;

use crate::sys;

/// The GPU hypura's GPU tier would use, described (`CUDA0 (NVIDIA H100 …)`), or `None` when
/// this build (with its backend modules) has none.
pub fn gpu_device_description() -> Option<String> {
    super::backend::init();
    GpuDevice::first().map(GpuDevice::describe)
}

/// A GPU device of ggml's registry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GpuDevice {
    dev: sys::ggml_backend_dev_t,
}

// SAFETY: a registered device is a static object of ggml's registry, usable from any thread.
unsafe impl Send for GpuDevice {}
// SAFETY: as above.
unsafe impl Sync for GpuDevice {}

impl GpuDevice {
    /// The first GPU device registered, if any (call after [`super::backend::init`]).
    pub(crate) fn first() -> Option<Self> {
        // SAFETY: registry lookups.
        unsafe {
            (0..sys::ggml_backend_dev_count())
                .map(|i| sys::ggml_backend_dev_get(i))
                .find(|&dev| {
                    matches!(
                        sys::ggml_backend_dev_type(dev),
                        sys::GGML_BACKEND_DEVICE_TYPE_GPU | sys::GGML_BACKEND_DEVICE_TYPE_IGPU
                    )
                })
                .map(|dev| GpuDevice { dev })
        }
    }

    /// The raw device, for llama.cpp's `devices` list.
    pub(crate) fn as_raw(self) -> sys::ggml_backend_dev_t {
        self.dev
    }

    /// The device's own buffer type (memory its backend computes on).
    pub(crate) fn buffer_type(self) -> sys::ggml_backend_buffer_type_t {
        // SAFETY: a registered device.
        unsafe { sys::ggml_backend_dev_buffer_type(self.dev) }
    }

    /// ggml's name of the device's own buffer type (e.g. `CUDA0`).
    pub(crate) fn buffer_type_name(self) -> String {
        // SAFETY: a registered device's buffer type has a static NUL-terminated name.
        unsafe { CStr::from_ptr(sys::ggml_backend_buft_name(self.buffer_type())) }
            .to_string_lossy()
            .into_owned()
    }

    /// ggml's name of the device and its description (e.g. `CUDA0`, `NVIDIA H100`).
    pub(crate) fn describe(self) -> String {
        // SAFETY: a registered device; both strings are static NUL-terminated ones.
        let (name, description) = unsafe {
            (
                CStr::from_ptr(sys::ggml_backend_dev_name(self.dev)),
                CStr::from_ptr(sys::ggml_backend_dev_description(self.dev)),
            )
        };
        format!(
            "{} ({})",
            name.to_string_lossy(),
            description.to_string_lossy()
        )
    }

    /// Free and total memory, bytes (0 and 0 where the backend does not say).
    pub(crate) fn memory(self) -> (u64, u64) {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: a registered device; both out-pointers are valid.
        unsafe { sys::ggml_backend_dev_memory(self.dev, &mut free, &mut total) };
        (free as u64, total as u64)
    }
}
