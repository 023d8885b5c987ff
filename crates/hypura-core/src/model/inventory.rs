//! The model's tensors, classified: each tensor's role (embedding, attention, FFN, norm, …)
//! and layer, read from the GGUF naming convention (`blk.N.<kind>.weight`), with the facts the
//! planner needs. Built only from a header that passed [`super::validate`].

use serde::Serialize;

use super::arch::{ArchSpec, UNTIERED};
use super::gguf::{GgufHeader, MetaValue, TensorInfo};
use super::validate::Family;

/// What a tensor is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
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
pub(crate) struct ModelTensor {
    /// The header's description.
    pub info: TensorInfo,
    /// What it is for.
    pub role: Role,
    /// `Some(i)` for `blk.i.*`.
    pub layer: Option<u32>,
}

/// A model's tensors, classified, with the facts the planner needs.
#[derive(Debug, Clone)]
pub(crate) struct ModelInventory {
    /// The architecture (`general.architecture`).
    pub arch: String,
    /// The family's spec ([`crate::model::arch::UNTIERED`] for an architecture hypura does
    /// not tier).
    pub spec: &'static ArchSpec,
    /// Why hypura does not tier the model, if it does not.
    pub untiered: Option<String>,
    /// Number of repeating layers (the trunk's: tensors of the next-token-prediction
    /// layers after it are never loaded, see [`ModelInventory::is_unused`]).
    pub n_layers: u32,
    /// Embedding width.
    pub n_embd: u64,
    /// True when the LM head is the embedding matrix (no `output.weight`).
    pub tied_head: bool,
    /// Final logit soft-capping (0 = none).
    pub final_logit_softcap: f32,
    /// True when hypura may compute the LM head itself: the logits are the head's product
    /// alone, soft-capped at most (no head bias or scale).
    pub head_streamable: bool,
    /// Experts each token uses (0: dense), the largest over the layers.
    pub n_expert_used: u64,
    /// All tensors in file order.
    pub tensors: Vec<ModelTensor>,
    embedding: usize,
    head: usize,
}

pub(crate) const EMBEDDING: &str = "token_embd.weight";
pub(crate) const OUTPUT: &str = "output.weight";

impl ModelInventory {
    /// Classifies the tensors of a validated header (which has `token_embd.weight`, a 2-D
    /// matrix, and `{arch}.block_count`) of architecture `arch`, tiered as `family` says.
    pub fn new(header: &GgufHeader, arch: &str, family: Family) -> Self {
        let count = |key: &str| {
            header
                .get_int(&format!("{arch}.{key}"))
                .map_or(0, |n| n.clamp(0, i128::from(u32::MAX)) as u32)
        };
        let (spec, untiered) = match family {
            Family::Tiered(spec) => (spec, None),
            Family::Untiered(reason) => (&UNTIERED, Some(reason)),
        };
        // A tiered model's next-token-prediction layers follow its trunk (validation
        // checked that there is one); stock mode loads what llama.cpp loads.
        let n_layers = match untiered {
            None => count("block_count").saturating_sub(count("nextn_predict_layers")),
            Some(_) => count("block_count"),
        };
        let mut inventory = Self::from_tensors(spec, n_layers, header.tensors.clone());
        inventory.arch = arch.to_string();
        inventory.untiered = untiered;
        inventory.final_logit_softcap = spec.final_logit_softcap(header);
        inventory.n_expert_used = match header.get(&format!("{arch}.expert_used_count")) {
            Some(MetaValue::Array(a)) => header
                .numbers(a)
                .into_iter()
                .fold(0.0f64, f64::max)
                .max(0.0) as u64,
            _ => header
                .get_int(&format!("{arch}.expert_used_count"))
                .map_or(0, |n| n.clamp(0, i128::from(u32::MAX)) as u64),
        };
        inventory
    }

    /// Classifies `tensors` (file order), which hold `token_embd.weight`.
    fn from_tensors(spec: &'static ArchSpec, n_layers: u32, tensors: Vec<TensorInfo>) -> Self {
        let tensors: Vec<ModelTensor> = tensors
            .into_iter()
            .map(|info| {
                let (role, layer) = classify(&info);
                ModelTensor { info, role, layer }
            })
            .collect();
        let find = |name: &str| tensors.iter().position(|t| t.info.name == name);
        let embedding = find(EMBEDDING).unwrap_or(0);
        let output = find(OUTPUT);
        Self {
            arch: spec.name.to_string(),
            spec,
            untiered: None,
            n_layers,
            n_embd: tensors.get(embedding).map_or(0, |t| t.info.dims[0]),
            tied_head: output.is_none(),
            final_logit_softcap: 0.0,
            n_expert_used: 0,
            head_streamable: spec.head_streamable
                && !tensors
                    .iter()
                    .any(|t| t.info.name == "output.bias" || t.info.name == "output.scale"),
            head: output.unwrap_or(embedding),
            embedding,
            tensors,
        }
    }

    /// The architecture's name.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The LM head's tensor (`output.weight`, or the embedding when tied).
    pub fn head(&self) -> &TensorInfo {
        &self.tensors[self.head].info
    }

    /// The embedding's tensor.
    pub fn embedding(&self) -> &TensorInfo {
        &self.tensors[self.embedding].info
    }

    /// True when llama.cpp never loads `tensor`: one of a next-token-prediction layer after
    /// the trunk (llama.cpp checks its shape and skips it, as it serves speculative decoding
    /// alone), which hypura then never reads nor holds.
    pub fn is_unused(&self, tensor: &ModelTensor) -> bool {
        tensor.layer.is_some_and(|l| l >= self.n_layers)
    }

    /// Sum of the weight bytes llama.cpp loads (all but the unused tensors').
    pub fn weight_bytes(&self) -> u64 {
        self.tensors
            .iter()
            .filter(|t| !self.is_unused(t))
            .map(|t| t.info.nbytes)
            .sum()
    }
}

/// The layer of `blk.N.*`.
pub(crate) fn layer_of(name: &str) -> Option<u32> {
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|n| n.parse::<u32>().ok())
}

/// The layer of `blk.N.ffn_gate_inp.weight`, a mixture-of-experts layer's router.
pub(crate) fn router_layer(name: &str) -> Option<u32> {
    name.strip_suffix(".ffn_gate_inp.weight").and_then(layer_of)
}

fn classify(info: &TensorInfo) -> (Role, Option<u32>) {
    let name = info.name.as_str();
    let layer = layer_of(name);
    let role = if info.dims.len() == 1 || info.dims.iter().skip(1).all(|d| *d == 1) {
        Role::Small
    } else if name == EMBEDDING {
        Role::Embedding
    } else if name == OUTPUT {
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

#[cfg(test)]
impl ModelInventory {
    /// An inventory of `tensors` (file order) for the planner's tests: roles and layers come
    /// from the names, as for a real file.
    pub(crate) fn for_tests(
        spec: &'static ArchSpec,
        n_layers: u32,
        tensors: Vec<TensorInfo>,
    ) -> Self {
        assert!(tensors.iter().any(|t| t.name == EMBEDDING), "an embedding");
        Self::from_tensors(spec, n_layers, tensors)
    }
}
