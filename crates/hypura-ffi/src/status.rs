//! Status codes. The numbers are part of the ABI: never renumber, never reuse.

use hypura_core::HypuraError;

/// The result of a call. `HYPURA_STATUS_OK` (0) is success; on anything else
/// `hypura_last_error` explains.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum hypura_status {
    /// Success.
    HYPURA_STATUS_OK = 0,
    /// A required pointer was NULL.
    HYPURA_STATUS_NULL_ARGUMENT = 1,
    /// An argument was out of range or malformed (e.g. non-UTF-8 path, bad sequence id).
    HYPURA_STATUS_INVALID_ARGUMENT = 2,
    /// The model file does not exist.
    HYPURA_STATUS_NOT_FOUND = 3,
    /// The model file could not be opened or read.
    HYPURA_STATUS_UNREADABLE = 4,
    /// The file is not a valid GGUF.
    HYPURA_STATUS_NOT_GGUF = 5,
    /// The file is shorter than its header says.
    HYPURA_STATUS_TRUNCATED = 6,
    /// The model's architecture is not supported.
    HYPURA_STATUS_UNSUPPORTED_ARCHITECTURE = 7,
    /// The RAM budget cannot hold one layer (the message names the minimum).
    HYPURA_STATUS_BUDGET_TOO_SMALL = 8,
    /// llama.cpp failed to load the model or create its context.
    HYPURA_STATUS_LOAD_FAILED = 9,
    /// Decoding failed.
    HYPURA_STATUS_DECODE_FAILED = 10,
    /// A sequence would grow past the context length.
    HYPURA_STATUS_CONTEXT_FULL = 11,
    /// Reading weights from the model file failed.
    HYPURA_STATUS_IO_ERROR = 12,
    /// An output buffer is too small; the length needed was written to the length out-parameter.
    HYPURA_STATUS_BUFFER_TOO_SMALL = 13,
    /// Asked for something this build cannot do (e.g. a GPU budget: no GPU tier yet).
    HYPURA_STATUS_UNSUPPORTED = 14,
    /// A bug: hypura panicked. The handle involved should be freed.
    HYPURA_STATUS_PANIC = 15,
}

impl From<&HypuraError> for hypura_status {
    fn from(e: &HypuraError) -> Self {
        use hypura_status::*;
        match e {
            HypuraError::NotFound(_) => HYPURA_STATUS_NOT_FOUND,
            HypuraError::Unreadable { .. } => HYPURA_STATUS_UNREADABLE,
            HypuraError::NotGguf { .. } => HYPURA_STATUS_NOT_GGUF,
            HypuraError::Truncated { .. } => HYPURA_STATUS_TRUNCATED,
            HypuraError::UnsupportedArchitecture { .. } => HYPURA_STATUS_UNSUPPORTED_ARCHITECTURE,
            HypuraError::BudgetTooSmall { .. } => HYPURA_STATUS_BUDGET_TOO_SMALL,
            HypuraError::InvalidSize(_) | HypuraError::InvalidArgument(_) => {
                HYPURA_STATUS_INVALID_ARGUMENT
            }
            HypuraError::LoadFailed(_) | HypuraError::ContextFailed(_) => HYPURA_STATUS_LOAD_FAILED,
            HypuraError::Tokenize(_) | HypuraError::Decode(_) => HYPURA_STATUS_DECODE_FAILED,
            HypuraError::ContextFull { .. } => HYPURA_STATUS_CONTEXT_FULL,
            HypuraError::StreamIo { .. } | HypuraError::Io(_) => HYPURA_STATUS_IO_ERROR,
        }
    }
}
