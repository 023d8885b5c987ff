//! The public errors, one enum per operation. Every message is one line that names the model
//! file (where there is one) and the cause; text taken from the file is quoted as a short,
//! escaped excerpt ([`crate::model::excerpt`]).

use std::path::PathBuf;

/// Why a model file was refused while reading or checking its header (before llama.cpp is
/// given it).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// The file does not exist.
    #[error("{}: model file not found", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The path is a directory, FIFO, socket or device.
    #[error("{}: cannot read: not a regular file ({kind})", path.display())]
    NotARegularFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file exists but could not be opened or read.
    #[error("{}: cannot read: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a GGUF file, or its header breaks the format's rules.
    #[error("{}: not a valid GGUF file: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The header is valid but tensor data extends past the end of the file.
    #[error(
        "{}: truncated: tensor {tensor} needs bytes up to {needed}, the file has {actual}",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The first tensor that does not fit (an escaped excerpt).
        tensor: String,
        /// Bytes the file would need.
        needed: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// The header is well formed, but a value in it would make llama.cpp fail or abort.
    #[error("{}: invalid model: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which value, and why.
        reason: String,
    },
}

impl ModelFileError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::NotFound { path }
            | Self::NotARegularFile { path, .. }
            | Self::Unreadable { path, .. }
            | Self::Malformed { path, .. }
            | Self::Truncated { path, .. }
            | Self::Invalid { path, .. } => path,
        }
    }
}

/// Why a placement could not be planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The model file was refused.
    #[error(transparent)]
    ModelFile(#[from] ModelFileError),
    /// The budget cannot hold what one step needs.
    #[error(
        "{}: RAM budget {budget} is too small for this model: at least {minimum} is needed ({why})",
        path.display()
    )]
    BudgetTooSmall {
        /// The model file.
        path: PathBuf,
        /// The budget asked for, formatted.
        budget: String,
        /// The smallest budget that works, formatted.
        minimum: String,
        /// What needs it.
        why: String,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Planning failed (this includes every check of the file).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// llama.cpp refused the model.
    #[error("{}: llama.cpp could not load the model: {reason}", path.display())]
    Llama {
        /// The model file.
        path: PathBuf,
        /// llama.cpp's last error message (escaped).
        reason: String,
    },
    /// llama.cpp could not create a context.
    #[error("{}: llama.cpp could not create a context: {reason}", path.display())]
    Context {
        /// The model file.
        path: PathBuf,
        /// llama.cpp's last error message (escaped).
        reason: String,
    },
    /// Memory for the tiers could not be reserved.
    #[error("{}: cannot reserve memory: {source}", path.display())]
    Memory {
        /// The model file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading the RAM tier failed.
    #[error("{}: I/O error while reading weights: {reason}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The file changed while it was being loaded.
    #[error("{}: model file changed while loading", path.display())]
    FileChanged {
        /// The model file.
        path: PathBuf,
    },
    /// The options put weights on a GPU, and ggml has no GPU device.
    #[error(
        "{}: no GPU device: this build of hypura has no GPU backend, or none found a GPU (build with the `cuda`, `metal` or `vulkan` feature, or add a GPU backend module to a `dynamic-backends` build)",
        path.display()
    )]
    NoGpu {
        /// The model file.
        path: PathBuf,
    },
    /// A stock tensor override names a buffer type this build does not have.
    #[error(
        "{}: no buffer type {name:?} for a tensor override (this build has: {known})",
        path.display()
    )]
    UnknownBufferType {
        /// The model file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// The GPU budget is more than the GPU has free.
    #[error(
        "{}: the plan puts {needed} in GPU memory, but {device} has {free} free: give a smaller GPU budget",
        path.display()
    )]
    GpuMemory {
        /// The model file.
        path: PathBuf,
        /// The device.
        device: String,
        /// Weights and KV cache planned for it, formatted.
        needed: String,
        /// Its free memory, formatted.
        free: String,
    },
}

/// Why a batch could not be decoded. Apart from [`DecodeError::FileChanged`] and
/// [`DecodeError::Io`], the sequences are left as they were.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The batch has no tokens.
    #[error("the batch is empty")]
    EmptyBatch,
    /// A token id is not in the vocabulary.
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfRange {
        /// The token.
        token: i32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// A sequence id is out of range.
    #[error("sequence {seq} is outside 0..{n_seq} (load with more sequences)")]
    SequenceOutOfRange {
        /// The sequence.
        seq: i32,
        /// Sequences the model was loaded with.
        n_seq: usize,
    },
    /// A sequence would grow past its share of the context.
    #[error(
        "context is full: sequence {seq} holds {held} tokens, {new} more would exceed {n_ctx}"
    )]
    ContextFull {
        /// The sequence.
        seq: i32,
        /// Tokens it holds.
        held: usize,
        /// Tokens offered.
        new: usize,
        /// Positions per sequence.
        n_ctx: usize,
    },
    /// llama.cpp found no room in the KV cache for the batch: retry with a smaller batch or
    /// after freeing sequences.
    #[error("the KV cache has no room for this batch")]
    KvCacheFull,
    /// The model file was changed (overwritten or truncated) after it was loaded. The model
    /// must be loaded again.
    #[error("{}: model file changed while running ({what})", path.display())]
    FileChanged {
        /// The model file.
        path: PathBuf,
        /// What was seen.
        what: String,
    },
    /// Reading streamed weights failed.
    #[error("{}: I/O error while streaming weights: {reason}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// llama.cpp failed to compute the batch.
    #[error("decode failed: {0}")]
    Failed(String),
}

/// Why text could not be tokenized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The text is longer than llama.cpp can take in one call.
    #[error("text of {0} bytes is too long to tokenize")]
    TooLong(usize),
    /// llama.cpp's tokenizer failed.
    #[error("tokenization failed: {0}")]
    Failed(String),
}

/// Why a generation stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    /// A generation option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The prompt could not be tokenized.
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// Decoding failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The chat template could not render the conversation.
    #[error(transparent)]
    Template(#[from] crate::chat::ChatTemplateError),
}
