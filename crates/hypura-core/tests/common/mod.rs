//! What the library's end-to-end tests share: the test models.
// Each test binary uses part of this.
#![allow(dead_code)]

use std::path::PathBuf;

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// A test model (from `HYPURA_MODELS_DIR`, or `models/`); the suite fails, never skips, when
/// it is missing.
pub fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("HYPURA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/test.sh (it fetches the models) or set HYPURA_MODELS_DIR",
        path.display()
    );
    path
}
