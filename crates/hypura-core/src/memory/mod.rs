//! Memory hypura owns: its ggml buffer type (both weight tiers live in buffers of it), the
//! streaming window's ring, and page operations (reserve, release, the load scratch).

pub(crate) mod buffer_type;
pub(crate) mod pages;
pub(crate) mod window;

pub(crate) use buffer_type::HypuraBufferType;
pub(crate) use pages::{pages_bytes, release_pages, ReservedMemory, PAGE_BYTES};
