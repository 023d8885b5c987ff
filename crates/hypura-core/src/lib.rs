//! # hypura-core
//!
//! Runs GGUF language models whose weights do not fit in the memory they may use. Every
//! weight tensor is placed on a tier — RAM (read once at load) or the model file itself
//! (streamed into a bounded window just before use) — and llama.cpp computes.
//!
//! Data flows one way: [`gguf`]/[`inspect`] read the header → [`plan`] places tensors →
//! [`tier`] owns the memory (a ggml buffer type) → [`session`] loads through llama.cpp and
//! decodes, with [`schedule`] (the evaluation hook) streaming through [`io`] and counting in
//! [`track`].
#![warn(missing_docs)]

pub mod backend;
pub mod disk;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod head;
pub mod inspect;
pub mod io;
pub mod plan;
pub mod proc_stats;
pub mod sample;
pub mod schedule;
pub mod session;
pub mod shadow;
pub mod size;
pub mod synth;
pub mod threads;
pub mod tier;
pub mod track;

pub use error::{HypuraError, Result};
pub use llama_cpp_sys_2 as sys;
pub use plan::{Plan, PlanParams};
pub use sample::Sampler;
pub use session::{LoadMode, LoadOptions, Session};
