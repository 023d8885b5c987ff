//! Status codes. The numbers are part of the ABI: never renumber, never reuse.

use hypura_core::{
    DecodeError, GenerateError, LoadError, ModelFileError, PlanError, TokenizeError,
};

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
    /// The model file could not be opened or read, or is not a regular file.
    HYPURA_STATUS_UNREADABLE = 4,
    /// The file is not a valid GGUF.
    HYPURA_STATUS_NOT_GGUF = 5,
    /// The file is shorter than its header says.
    HYPURA_STATUS_TRUNCATED = 6,
    /// No longer returned (kept so that the numbers never change): a model of an
    /// architecture hypura does not tier now loads as stock llama.cpp loads it.
    HYPURA_STATUS_UNSUPPORTED_ARCHITECTURE = 7,
    /// The RAM budget cannot hold one layer (the message names the minimum).
    HYPURA_STATUS_BUDGET_TOO_SMALL = 8,
    /// llama.cpp failed to load the model or create its context.
    HYPURA_STATUS_LOAD_FAILED = 9,
    /// Decoding failed.
    HYPURA_STATUS_DECODE_FAILED = 10,
    /// A sequence would grow past its share of the context.
    HYPURA_STATUS_CONTEXT_FULL = 11,
    /// Reading weights from the model file failed.
    HYPURA_STATUS_IO_ERROR = 12,
    /// An output buffer is too small; the length needed was written to the length out-parameter.
    HYPURA_STATUS_BUFFER_TOO_SMALL = 13,
    /// Asked for something this build cannot do (e.g. a GPU budget where ggml has no GPU
    /// device).
    HYPURA_STATUS_UNSUPPORTED = 14,
    /// A bug: hypura panicked. The handle involved should be freed.
    HYPURA_STATUS_PANIC = 15,
    /// Another thread is using this model right now: call again when it is done.
    HYPURA_STATUS_BUSY = 16,
    /// llama.cpp's KV cache has no room for this batch (try a smaller batch, or free
    /// sequences with `hypura_reset`).
    HYPURA_STATUS_KV_CACHE_FULL = 17,
    /// The model file was overwritten or truncated while the model was loaded: nothing
    /// computed from it was returned, and the model must be loaded again.
    HYPURA_STATUS_MODEL_FILE_CHANGED = 18,
    /// The GGUF is well formed but holds values llama.cpp would refuse or crash on.
    HYPURA_STATUS_INVALID_MODEL = 19,
    /// Requests queued with `hypura_submit` are running on the model's sequences:
    /// `hypura_decode` and `hypura_reset` wait until they have ended (step, or cancel them).
    HYPURA_STATUS_REQUESTS_RUNNING = 20,
}

use hypura_status::*;

impl From<&ModelFileError> for hypura_status {
    fn from(e: &ModelFileError) -> Self {
        match e {
            ModelFileError::NotFound { .. } => HYPURA_STATUS_NOT_FOUND,
            ModelFileError::NotARegularFile { .. } | ModelFileError::Unreadable { .. } => {
                HYPURA_STATUS_UNREADABLE
            }
            ModelFileError::Malformed { .. } => HYPURA_STATUS_NOT_GGUF,
            ModelFileError::Truncated { .. } => HYPURA_STATUS_TRUNCATED,
            _ => HYPURA_STATUS_INVALID_MODEL,
        }
    }
}

impl From<&PlanError> for hypura_status {
    fn from(e: &PlanError) -> Self {
        match e {
            PlanError::ModelFile(e) => e.into(),
            PlanError::BudgetTooSmall { .. } => HYPURA_STATUS_BUDGET_TOO_SMALL,
            _ => HYPURA_STATUS_INVALID_ARGUMENT,
        }
    }
}

impl From<&LoadError> for hypura_status {
    fn from(e: &LoadError) -> Self {
        match e {
            LoadError::Plan(e) => e.into(),
            LoadError::Io { .. } => HYPURA_STATUS_IO_ERROR,
            LoadError::FileChanged { .. } => HYPURA_STATUS_MODEL_FILE_CHANGED,
            LoadError::NoGpu { .. } => HYPURA_STATUS_UNSUPPORTED,
            LoadError::GpuMemory { .. } => HYPURA_STATUS_INVALID_ARGUMENT,
            _ => HYPURA_STATUS_LOAD_FAILED,
        }
    }
}

impl From<&DecodeError> for hypura_status {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::EmptyBatch | DecodeError::SequenceOutOfRange { .. } => {
                HYPURA_STATUS_INVALID_ARGUMENT
            }
            DecodeError::ContextFull { .. } => HYPURA_STATUS_CONTEXT_FULL,
            DecodeError::KvCacheFull => HYPURA_STATUS_KV_CACHE_FULL,
            DecodeError::FileChanged { .. } => HYPURA_STATUS_MODEL_FILE_CHANGED,
            DecodeError::Io { .. } => HYPURA_STATUS_IO_ERROR,
            _ => HYPURA_STATUS_DECODE_FAILED,
        }
    }
}

impl From<&TokenizeError> for hypura_status {
    fn from(e: &TokenizeError) -> Self {
        match e {
            TokenizeError::TooLong(_) => HYPURA_STATUS_INVALID_ARGUMENT,
            _ => HYPURA_STATUS_DECODE_FAILED,
        }
    }
}

impl From<&GenerateError> for hypura_status {
    fn from(e: &GenerateError) -> Self {
        match e {
            GenerateError::Tokenize(e) => e.into(),
            GenerateError::Decode(e) => e.into(),
            _ => HYPURA_STATUS_INVALID_ARGUMENT,
        }
    }
}
