//! What to load and how: the [`LoadOptions`] builder, its defaults (one place, for the CLI,
//! the C API and the library alike) and its bounds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::PlanError;
use crate::plan::budget::Budget;

/// How to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoadMode {
    /// hypura's tiered placement under the budget.
    #[default]
    Tiered,
    /// Stock llama.cpp: its default mmap loading, no hypura placement (for comparisons).
    Stock,
}

/// Defaults of every option.
pub mod defaults {
    /// Context length in tokens.
    pub const CONTEXT_LENGTH: u32 = 2048;
    /// Tokens per `llama_decode` call and micro-batch.
    pub const BATCH_SIZE: u32 = 128;
    /// Sequences decoded side by side.
    pub const SEQUENCES: u32 = 1;
    /// Disk bandwidth assumed for the bound when none is given, bytes/s.
    pub const DISK_BYTES_PER_S: f64 = 1.6e9;
    /// Reader threads (read requests in flight) for a dense model's layers.
    pub const IO_THREADS: u32 = 4;
    /// Reader threads for a mixture-of-experts model whose experts stream slice by slice:
    /// its reads are one expert's slice each, smaller, and more in flight kept the disk
    /// busier (near-uniform Mixtral shape under 16 GiB on the lent machine, 2026-11-30: 8
    /// readers decoded 6.5-8.7% faster than 4; a dense 7B under 2 GiB gained nothing).
    pub const IO_THREADS_EXPERTS: u32 = 8;
}

/// Bounds of the options.
pub mod limits {
    /// Most CPU threads (ggml's `GGML_MAX_N_THREADS`).
    pub const MAX_THREADS: u32 = 512;
    /// Most reader threads.
    pub const MAX_IO_THREADS: u32 = 64;
    /// Longest context.
    pub const MAX_CONTEXT_LENGTH: u32 = 1 << 24;
    /// Largest batch.
    pub const MAX_BATCH_SIZE: u32 = 1 << 16;
    /// Longest pattern of a stock tensor override, bytes.
    pub const MAX_OVERRIDE_PATTERN: usize = 4096;
    /// Most stop strings of one request ([`crate::GenerateOptions::stop`]).
    pub const MAX_STOP_STRINGS: usize = 16;
    /// Longest stop string, in bytes.
    pub const MAX_STOP_STRING_BYTES: usize = 256;
}

/// Options for [`crate::Model::load`] and [`crate::Plan::for_options`], built from a model
/// path with chained setters:
///
/// ```
/// use hypura_core::{Budget, LoadOptions};
/// let options = LoadOptions::new("model.gguf")
///     .budget(Budget::WeightPercent(25.0))
///     .context_length(512)
///     .threads(4);
/// assert_eq!(options.model_path().to_str(), Some("model.gguf"));
/// ```
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub(crate) model_path: PathBuf,
    pub(crate) mode: LoadMode,
    pub(crate) budget: Budget,
    pub(crate) gpu_budget: Option<Budget>,
    pub(crate) stock_gpu: StockGpu,
    pub(crate) stock_overrides: Vec<TensorOverride>,
    pub(crate) repack: bool,
    pub(crate) threads: u32,
    pub(crate) context_length: u32,
    pub(crate) batch_size: u32,
    pub(crate) sequences: u32,
    pub(crate) disk_bytes_per_s: f64,
    /// None: [`defaults::IO_THREADS`], or [`defaults::IO_THREADS_EXPERTS`] for a model whose
    /// experts stream slice by slice.
    pub(crate) io_threads: Option<u32>,
    pub(crate) verify_reads: bool,
    pub(crate) expert_slices: bool,
    pub(crate) expert_profiles: Option<PathBuf>,
    pub(crate) progress: Option<LoadProgressCallback>,
}

/// Where stock llama.cpp computes, when a GPU backend is present (stock mode only: the
/// baselines hypura is compared with). `Default`: the CPU alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StockGpu {
    /// llama.cpp's `n_gpu_layers` (`-ngl`): the last layers, and the output layer after
    /// them, whose weights, KV cache and compute are on the GPU.
    pub layers: u32,
    /// llama.cpp's `--n-cpu-moe`: the first layers whose expert matrices stay on the CPU
    /// (`u32::MAX`: every layer's, `--cpu-moe`).
    pub cpu_expert_layers: u32,
}

impl StockGpu {
    /// `layers` on the GPU (`-ngl`), the expert matrices of the first `cpu_expert_layers`
    /// layers on the CPU (`--n-cpu-moe`; `u32::MAX`: `--cpu-moe`).
    pub fn new(layers: u32, cpu_expert_layers: u32) -> Self {
        Self {
            layers,
            cpu_expert_layers,
        }
    }
}

/// Stock mode only: the weights whose names match `pattern` (a regular expression, searched
/// in each tensor's name as llama.cpp's `--override-tensor PATTERN=TYPE` does) go to the
/// buffer type named `buffer_type`: `CPU`, or the GPU device's (e.g. `CUDA0`). Overrides come
/// before [`StockGpu::cpu_expert_layers`]' patterns, and the first that matches a tensor
/// wins, as in llama.cpp.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorOverride {
    /// The regular expression.
    pub pattern: String,
    /// The buffer type's name.
    pub buffer_type: String,
}

impl TensorOverride {
    /// Weights matching `pattern` to the buffer type `buffer_type`.
    pub fn new(pattern: impl Into<String>, buffer_type: impl Into<String>) -> Self {
        Self {
            pattern: pattern.into(),
            buffer_type: buffer_type.into(),
        }
    }

    /// True when the buffer type is the CPU's (named in any case, as llama.cpp matches it).
    pub(crate) fn is_cpu(&self) -> bool {
        self.buffer_type.eq_ignore_ascii_case("CPU")
    }
}

/// How far a load has come: bytes of the model's resident part read from the file so far,
/// of `total`. Reported a few times a second while they are read (llama.cpp's own pass over
/// the model comes before, and reads none of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadProgress {
    /// Bytes read.
    pub done: u64,
    /// Bytes to read.
    pub total: u64,
}

/// A callback receiving [`LoadProgress`] (see [`LoadOptions::on_progress`]).
#[derive(Clone)]
pub struct LoadProgressCallback(pub(crate) Arc<dyn Fn(LoadProgress) + Send + Sync>);

// The callback only receives figures; a panic in it leaves nothing of hypura's half-changed
// that a caller catching the unwind could observe (the load it was reporting on fails).
impl std::panic::UnwindSafe for LoadProgressCallback {}
impl std::panic::RefUnwindSafe for LoadProgressCallback {}

impl std::fmt::Debug for LoadProgressCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadProgressCallback")
    }
}

impl LoadOptions {
    /// Defaults: tiered, every weight in RAM ([`Budget::AllWeights`]), llama.cpp's repacked
    /// CPU layouts on, all cores, a 2048-token context, 128-token batches, one sequence,
    /// a 1.6 GB/s disk for the bound, 4 reader threads, streamed reads verified.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            mode: LoadMode::Tiered,
            budget: Budget::AllWeights,
            gpu_budget: None,
            stock_gpu: StockGpu::default(),
            stock_overrides: Vec::new(),
            repack: true,
            threads: 0,
            context_length: defaults::CONTEXT_LENGTH,
            batch_size: defaults::BATCH_SIZE,
            sequences: defaults::SEQUENCES,
            disk_bytes_per_s: defaults::DISK_BYTES_PER_S,
            io_threads: None,
            verify_reads: true,
            expert_slices: true,
            expert_profiles: None,
            progress: None,
        }
    }

    /// The same options for another model file.
    pub fn with_model_path(mut self, model_path: impl Into<PathBuf>) -> Self {
        self.model_path = model_path.into();
        self
    }

    /// How much memory the model may use.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// How much GPU memory the model may use (tiered mode): its weights and the KV cache of
    /// the layers it holds, in bytes ([`Budget::WeightBytes`]), as a share of the weights
    /// ([`Budget::WeightPercent`]) or all of it ([`Budget::AllWeights`]). `None`, the
    /// default: nothing on the GPU, and no GPU backend is used. Loading fails when the
    /// budget is not 0 and ggml has no GPU device (a build without a GPU backend).
    ///
    /// ```
    /// use hypura_core::{Budget, LoadOptions, Plan};
    /// // 8 GiB of GPU memory, and the whole process within 16 GiB of RAM.
    /// let options = LoadOptions::new("model.gguf")
    ///     .gpu_budget(Some(Budget::WeightBytes(8 << 30)))
    ///     .budget(Budget::ProcessBytes(16 << 30));
    /// // `Plan::for_options(&options)` then says what goes where (`gpu_resident_bytes`,
    /// // `gpu_layers`, each tensor's `tier`), without a GPU.
    /// # let _ = Plan::for_options(&options);
    /// ```
    pub fn gpu_budget(mut self, budget: Option<Budget>) -> Self {
        self.gpu_budget = budget;
        self
    }

    /// Stock mode: where llama.cpp computes (see [`StockGpu`]).
    pub fn stock_gpu(mut self, gpu: StockGpu) -> Self {
        self.stock_gpu = gpu;
        self
    }

    /// Stock mode: weights placed by name (see [`TensorOverride`]).
    pub fn stock_tensor_overrides(mut self, overrides: Vec<TensorOverride>) -> Self {
        self.stock_overrides = overrides;
        self
    }

    /// The GPU budget in bytes for a model of `model_bytes` weights (0: none).
    pub(crate) fn gpu_budget_bytes(&self, model_bytes: u64) -> Result<u64, PlanError> {
        match self.gpu_budget {
            None => Ok(0),
            Some(Budget::ProcessBytes(_)) => Err(PlanError::InvalidOption(
                "the GPU budget is a size or a share of the weights, not a process size".into(),
            )),
            Some(Budget::WeightBytes(0)) => Ok(0),
            // A share of the weights, or all of them, leaves room for the KV cache of the
            // layers it holds: it asks for everything it names.
            Some(Budget::AllWeights) => Ok(u64::MAX / 4),
            Some(b) => b.weights_of(model_bytes).ok_or_else(|| {
                PlanError::InvalidOption(format!("GPU budget {b:?} is out of range"))
            }),
        }
    }

    /// Tiered (hypura) or stock llama.cpp.
    pub fn mode(mut self, mode: LoadMode) -> Self {
        self.mode = mode;
        self
    }

    /// llama.cpp's repacked CPU weight layouts, for stock and hypura alike (on by default;
    /// their kernels round differently, so outputs compare exactly only with the same
    /// setting on both sides).
    pub fn repack(mut self, on: bool) -> Self {
        self.repack = on;
        self
    }

    /// CPU threads for computing (0 = every core the process may use; at most 512).
    pub fn threads(mut self, n: u32) -> Self {
        self.threads = n;
        self
    }

    /// Context length in tokens, shared by the sequences.
    pub fn context_length(mut self, n: u32) -> Self {
        self.context_length = n;
        self
    }

    /// Tokens per `llama_decode` call and micro-batch.
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = n;
        self
    }

    /// Tokens per `llama_decode` call and micro-batch as llama.cpp takes them: no more than
    /// the context holds.
    pub(crate) fn effective_batch_size(&self) -> u32 {
        self.batch_size.min(self.context_length).max(1)
    }

    /// Sequences decoded side by side (ids `0..n`; each gets `context_length / n`
    /// positions).
    pub fn sequences(mut self, n: u32) -> Self {
        self.sequences = n;
        self
    }

    /// Calls `report` as the load reads the model's resident part (for a progress bar).
    pub fn on_progress(mut self, report: impl Fn(LoadProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(LoadProgressCallback(Arc::new(report)));
        self
    }

    /// The disk's sequential read bandwidth, bytes/s, for the plan's bound.
    pub fn disk_bandwidth(mut self, bytes_per_s: f64) -> Self {
        self.disk_bytes_per_s = bytes_per_s;
        self
    }

    /// Reader threads (read requests in flight) when streaming (1 to 64). Default: 4, or 8
    /// for a mixture-of-experts model whose experts stream slice by slice.
    pub fn io_threads(mut self, n: u32) -> Self {
        self.io_threads = Some(n);
        self
    }

    /// Checksum every streamed region at its first read and compare on each later read, so a
    /// model file overwritten while running is detected (on by default).
    pub fn verify_reads(mut self, on: bool) -> Self {
        self.verify_reads = on;
        self
    }

    /// For a mixture-of-experts model whose budget holds everything but the experts (and
    /// one layer's experts besides): read only the experts the router picks, when it picks
    /// them, and keep the most recently used ones in the rest of the budget (on by default);
    /// off, each streamed layer's experts are read whole, as dense layers are.
    pub fn expert_slices(mut self, on: bool) -> Self {
        self.expert_slices = on;
        self
    }

    /// Mixture-of-experts models read slice by slice: the folder of saved expert profiles
    /// (`None`, the default: none). A load reads the model's profile there, if there is
    /// one, and starts its expert cache from it; [`crate::Model::save_expert_profile`]
    /// writes it there; `plan` predicts the cache's hit rate from it. The CLI uses
    /// `$XDG_CACHE_HOME/hypura/experts`.
    pub fn expert_profiles(mut self, dir: Option<PathBuf>) -> Self {
        self.expert_profiles = dir;
        self
    }

    /// The folder of saved expert profiles, if one is set.
    pub fn expert_profiles_dir(&self) -> Option<&Path> {
        self.expert_profiles.as_deref()
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    /// Tiered or stock.
    pub fn load_mode(&self) -> LoadMode {
        self.mode
    }

    /// The CPU threads to use: the number asked for, or every core. More than the cores
    /// gets a warning (it works, slower).
    pub(crate) fn thread_count(&self) -> i32 {
        let cores = crate::llama::cpu::thread_count(0) as u32;
        if self.threads > cores {
            log::warn!(
                "{} threads asked for, but only {cores} cores are available: expect it to be slower",
                self.threads
            );
        }
        crate::llama::cpu::thread_count(self.threads as i32)
    }

    /// Checks every option against its bounds.
    pub(crate) fn check(&self) -> Result<(), PlanError> {
        let bad = |what: String| Err(PlanError::InvalidOption(what));
        if self.threads > limits::MAX_THREADS {
            return bad(format!(
                "threads = {} (at most {})",
                self.threads,
                limits::MAX_THREADS
            ));
        }
        if let Some(n) = self
            .io_threads
            .filter(|n| !(1..=limits::MAX_IO_THREADS).contains(n))
        {
            return bad(format!(
                "io_threads = {} (1 to {})",
                n,
                limits::MAX_IO_THREADS
            ));
        }
        if !(1..=limits::MAX_CONTEXT_LENGTH).contains(&self.context_length) {
            return bad(format!(
                "context_length = {} (1 to {})",
                self.context_length,
                limits::MAX_CONTEXT_LENGTH
            ));
        }
        if !(1..=limits::MAX_BATCH_SIZE).contains(&self.batch_size) {
            return bad(format!(
                "batch_size = {} (1 to {})",
                self.batch_size,
                limits::MAX_BATCH_SIZE
            ));
        }
        // SAFETY: a plain query of a compile-time limit.
        let max_sequences = unsafe { crate::sys::llama_max_parallel_sequences() } as u32;
        if !(1..=max_sequences).contains(&self.sequences) {
            return bad(format!(
                "sequences = {} (1 to {max_sequences})",
                self.sequences
            ));
        }
        if self.sequences > self.context_length {
            return bad(format!(
                "{} sequences cannot share a context of {} tokens",
                self.sequences, self.context_length
            ));
        }
        if self.mode == LoadMode::Stock && self.gpu_budget.is_some() {
            return bad("a GPU budget is hypura's: stock llama.cpp takes GPU layers".into());
        }
        if self.mode == LoadMode::Tiered && self.stock_gpu != StockGpu::default() {
            return bad("GPU layers are stock llama.cpp's: hypura takes a GPU budget".into());
        }
        if self.mode == LoadMode::Tiered && !self.stock_overrides.is_empty() {
            return bad(
                "tensor overrides are stock llama.cpp's: hypura places weights itself".into(),
            );
        }
        if let Some(o) = self.stock_overrides.iter().find(|o| {
            o.pattern.is_empty()
                || o.pattern.len() > limits::MAX_OVERRIDE_PATTERN
                || o.pattern.contains('\0')
                || o.buffer_type.is_empty()
        }) {
            return bad(format!(
                "tensor override {:?}={:?} (a pattern of 1 to {} bytes without NUL, and a buffer type)",
                o.pattern,
                o.buffer_type,
                limits::MAX_OVERRIDE_PATTERN
            ));
        }
        if !(self.disk_bytes_per_s.is_finite() && self.disk_bytes_per_s > 0.0) {
            return bad(format!(
                "disk bandwidth = {} bytes/s (must be positive)",
                self.disk_bytes_per_s
            ));
        }
        Ok(())
    }
}
