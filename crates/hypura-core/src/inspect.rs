//! What each tensor of a GGUF is for: its role (embedding, attention, FFN, norm, …) and the
//! layer it belongs to, read from the GGUF naming convention (`blk.N.<kind>.weight`).

use crate::error::{HypuraError, Result};
use crate::gguf::{GgufHeader, TensorInfo};

/// Architectures whose graphs hypura has verified (head = `mul_mat(output, result_norm)`, with
/// Gemma's optional soft-capping), and that the test suite runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "gemma3"];

/// What a tensor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `token_embd.weight`: looked up by row for each input token.
    Embedding,
    /// `output.weight`: the LM head.
    Output,
    /// A 1-D tensor (norm weights, biases): tiny, always resident.
    Small,
    /// Attention projections of a layer.
    Attention,
    /// Dense FFN matrices of a layer.
    Ffn,
    /// MoE expert tensors (`ffn_*_exps`) of a layer.
    Experts,
    /// Anything else inside a layer.
    OtherLayer,
    /// Anything else outside the layers.
    Other,
}

/// A tensor with its role and layer.
#[derive(Debug, Clone)]
pub struct ModelTensor {
    /// The header's description.
    pub info: TensorInfo,
    /// What it is for.
    pub role: Role,
    /// `Some(i)` for `blk.i.*`.
    pub layer: Option<u32>,
}

/// A model's tensors, classified, with the facts the planner needs.
#[derive(Debug, Clone)]
pub struct ModelInventory {
    /// Architecture name.
    pub arch: String,
    /// Number of repeating layers.
    pub n_layers: u32,
    /// Embedding width.
    pub n_embd: u64,
    /// Vocabulary size (rows of the embedding).
    pub n_vocab: u64,
    /// True when the LM head is the embedding matrix (no `output.weight`).
    pub tied_head: bool,
    /// Gemma-style final logit soft-capping (0 = none).
    pub final_logit_softcap: f32,
    /// All tensors in file order.
    pub tensors: Vec<ModelTensor>,
}

impl ModelInventory {
    /// Classifies the tensors of a parsed header; fails for an unsupported architecture.
    pub fn from_header(header: &GgufHeader) -> Result<Self> {
        let arch = header.architecture().unwrap_or("<none>").to_string();
        if !SUPPORTED_ARCHITECTURES.contains(&arch.as_str()) {
            return Err(HypuraError::UnsupportedArchitecture {
                arch,
                supported: SUPPORTED_ARCHITECTURES.join(", "),
            });
        }
        let tensors: Vec<ModelTensor> = header
            .tensors
            .iter()
            .map(|info| {
                let (role, layer) = classify(info);
                ModelTensor {
                    info: info.clone(),
                    role,
                    layer,
                }
            })
            .collect();
        let bad = |reason: &str| HypuraError::NotGguf {
            path: header.path.clone(),
            reason: reason.to_string(),
        };
        let embd = header
            .tensor("token_embd.weight")
            .ok_or_else(|| bad("no token_embd.weight tensor"))?;
        if embd.dims.len() != 2 {
            return Err(bad("token_embd.weight is not a matrix"));
        }
        let n_layers = header
            .get_u64(&format!("{arch}.block_count"))
            .ok_or_else(|| bad("no block_count in metadata"))? as u32;
        let final_logit_softcap = header
            .get_f64(&format!("{arch}.final_logit_softcapping"))
            .unwrap_or(0.0) as f32;
        Ok(Self {
            n_layers,
            n_embd: embd.dims[0],
            n_vocab: embd.dims[1],
            tied_head: header.tensor("output.weight").is_none(),
            final_logit_softcap,
            arch,
            tensors,
        })
    }

    /// The LM head's tensor info (`output.weight`, or the embedding when tied).
    pub fn head(&self) -> &TensorInfo {
        let name = if self.tied_head {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        &self
            .tensors
            .iter()
            .find(|t| t.info.name == name)
            .expect("checked in from_header")
            .info
    }

    /// The embedding's tensor info.
    pub fn embedding(&self) -> &TensorInfo {
        &self
            .tensors
            .iter()
            .find(|t| t.info.name == "token_embd.weight")
            .expect("checked in from_header")
            .info
    }
}

fn classify(info: &TensorInfo) -> (Role, Option<u32>) {
    let name = info.name.as_str();
    let layer = name
        .strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<u32>().ok());
    let role = if info.dims.len() == 1 || info.dims.iter().skip(1).all(|d| *d == 1) {
        Role::Small
    } else if name == "token_embd.weight" {
        Role::Embedding
    } else if name == "output.weight" {
        Role::Output
    } else if layer.is_some() {
        if name.contains("_exps") {
            Role::Experts
        } else if name.contains(".attn_") {
            Role::Attention
        } else if name.contains(".ffn_") {
            Role::Ffn
        } else {
            Role::OtherLayer
        }
    } else {
        Role::Other
    };
    (role, layer)
}
