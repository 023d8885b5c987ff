//! Owning wrappers around llama.cpp: the model, its context and batches, the sampler chain
//! (freed on drop),
//! ggml thread pools, and process-wide set-up with llama.cpp's log routed into `log`.

pub(crate) mod backend;
pub(crate) mod context;
pub(crate) mod model;
pub(crate) mod repack;
pub(crate) mod sampler;
pub(crate) mod threads;

pub(crate) use context::{Batch, LlamaContext};
pub(crate) use model::LlamaModel;
pub(crate) use sampler::{ChainSettings, SamplerChain};
pub(crate) use threads::ThreadPool;
