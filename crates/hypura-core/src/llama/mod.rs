//! Owning wrappers around llama.cpp: the model, its context and batches, the sampler chain
//! (freed on drop),
//! the CPU backend's thread pools and graph compute, the GPU device, and process-wide set-up with llama.cpp's log routed into `log`.

pub(crate) mod backend;
pub(crate) mod context;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod model;
pub(crate) mod repack;
pub(crate) mod sampler;

pub(crate) use context::{Batch, LlamaContext};
pub(crate) use cpu::{CpuBackend, ThreadPool};
pub(crate) use gpu::GpuDevice;
pub(crate) use model::LlamaModel;
pub(crate) use sampler::{ChainSettings, SamplerChain};
