//! The crate's error type: one enum, one variant per way an operation can fail, each with a
//! message a user can act on.

use std::path::PathBuf;

/// Every failure `hypura-core` reports.
#[derive(Debug, thiserror::Error)]
pub enum HypuraError {
    /// The model file does not exist.
    #[error("model file not found: {0}")]
    NotFound(PathBuf),
    /// The model file exists but could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a GGUF file, or its header is malformed.
    #[error("{path} is not a valid GGUF file: {reason}")]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The header is valid but tensor data extends past the end of the file.
    #[error(
        "{path} is truncated: tensor '{tensor}' needs bytes up to {needed}, file has {actual}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The first tensor that does not fit.
        tensor: String,
        /// Bytes the file would need.
        needed: u64,
        /// Bytes the file has.
        actual: u64,
    },
    /// hypura does not know how to tier this architecture.
    #[error("unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArchitecture {
        /// The architecture named in the GGUF.
        arch: String,
        /// The architectures hypura supports.
        supported: String,
    },
    /// The RAM budget cannot hold what one step needs.
    #[error(
        "RAM budget {budget} is too small for this model: at least {minimum} is needed ({why})"
    )]
    BudgetTooSmall {
        /// The budget asked for, formatted.
        budget: String,
        /// The smallest budget that works, formatted.
        minimum: String,
        /// What needs it.
        why: String,
    },
    /// A size argument such as `2G` or `40%` could not be parsed.
    #[error("invalid size '{0}': use bytes with an optional K/M/G/T suffix (e.g. 512M, 2G) or a percentage (e.g. 40%)")]
    InvalidSize(String),
    /// llama.cpp refused to load the model.
    #[error("llama.cpp could not load {0}")]
    LoadFailed(PathBuf),
    /// llama.cpp could not create a context.
    #[error("llama.cpp could not create a context: {0}")]
    ContextFailed(String),
    /// Tokenization failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// A sequence would grow past the context length.
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
        /// Tokens per sequence.
        n_ctx: usize,
    },
    /// Decoding a batch failed.
    #[error("decode failed: {0}")]
    Decode(String),
    /// A read from the model file failed while streaming.
    #[error("I/O error while streaming weights from {path}: {source}")]
    StreamIo {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O error (temporary files, statistics output).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An argument was invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Result alias for `hypura-core`.
pub type Result<T> = std::result::Result<T, HypuraError>;
