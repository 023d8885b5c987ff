//! # hypura-core
//!
//! Runs GGUF language models whose weights do not fit in the memory they may use. Every
//! weight tensor is placed on a tier — RAM (read once at load) or the model file itself
//! (streamed into a bounded window just before use) — and llama.cpp computes. Only the
//! header is needed to see the placement ([`Plan::for_options`]); [`Model::load`] loads and
//! [`Model::generate`] generates, handing over whole UTF-8 text pieces as they come.
//!
//! ```no_run
#![doc = include_str!("../examples/generate.rs")]
//! ```
//!
//! Budgets ([`Budget`]) are bytes of weights, a share of the weights, or the whole process's
//! memory. Errors are one enum per operation ([`PlanError`], [`LoadError`],
//! [`DecodeError`], …); a file llama.cpp would abort on is refused before llama.cpp sees it.
//! For batches over several sequences, see [`Model::decode`].
//!
//! Inside, data flows one way: `model` (the GGUF header, one spec per architecture family,
//! validation) → `plan` (budgets, placement) → `memory` (hypura's ggml buffer type, the
//! window, pages) and `io` (the only reader of the file) → `stream` (read-ahead and release
//! driven by llama.cpp's evaluation callback) → `llama` (owning wrappers) → `runtime` (load,
//! decode, generate).
#![warn(missing_docs)]

pub(crate) use llama_cpp_sys_2 as sys;

mod chat;
mod error;
mod io;
mod llama;
mod memory;
mod model;
mod plan;
mod profile;
mod runtime;
mod stream;
pub mod units;

/// The architecture families hypura tiers, as data: each one's tensors (names, shapes in
/// terms of the hyperparameters, when present), keys, head and attention facts. Validation
/// checks a file against its family; the synthetic-model generator (`hypura synth
/// --arch`) writes one from it. Read-only; its shape may change between 0.x releases.
pub mod families {
    pub use crate::model::arch::{
        ArchSpec, Cond, Dim, Example, Experts, Field, Hparams, Hybrid, KeyRule, Latent, LayerSet,
        LayerWidths, Need, Nextn, SlidingWindow, SwaPattern, TensorKind, TensorRule, FAMILIES,
    };
    /// The ggml types a weight matrix may be stored as: llama.cpp's CPU kernels multiply
    /// with each (validation accepts these; the generator writes them).
    pub use crate::model::validate::MATRIX_TYPES as WEIGHT_TYPES;

    /// The spec of the family `arch` (`general.architecture`), if hypura tiers it.
    pub fn find(arch: &str) -> Option<&'static ArchSpec> {
        ArchSpec::find(arch)
    }
}

pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use error::{DecodeError, GenerateError, LoadError, ModelFileError, PlanError, TokenizeError};
pub use io::ReadProbe;
pub use llama::gpu::gpu_device_description;
pub use model::Role;
pub use plan::budget::{Budget, InvalidBudget};
pub use plan::{GroupKind, LayerPart, Placement, Plan, StreamGroup, TensorPlacement, Tier};
pub use profile::{ExpertProfile, ProfileError};
/// Figures of this process that the statistics report, from `/proc/self` (Linux; 0
/// elsewhere).
pub mod process {
    pub use crate::runtime::proc_stats::{peak_rss_bytes, rss_bytes, storage_read_bytes};
}

pub use runtime::engine::{Engine, EngineEvent, RequestId, RequestTimings};
pub use runtime::generate::{GenerateOptions, GenerationStats, StopReason};
pub use runtime::model::{BatchToken, LoadStats, Model, ModelStats, Token};
pub use runtime::options::{
    defaults, limits, LoadMode, LoadOptions, LoadProgress, LoadProgressCallback, StockGpu,
    TensorOverride,
};
pub use runtime::sample::Sampler;
pub use stream::experts::{ExpertLayerStats, ExpertRequest};
pub use stream::heat::{ExpertHeat, LayerChances};
pub use stream::track::TensorAccess;

#[cfg(test)]
mod tests {
    #[test]
    fn a_model_can_move_to_another_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<crate::Model>();
        assert_send::<crate::LoadOptions>();
        assert_send::<crate::Plan>();
    }
}
