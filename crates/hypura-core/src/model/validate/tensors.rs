//! Tensors: exactly the family's set (llama.cpp refuses missing and unexpected ones, and
//! looks each up by a linear scan), each with the shape the hyperparameters give, and a type
//! the CPU kernels compute: element-wise weights must be F32 (others abort in the first
//! decode), matrices need a CPU dot product (others crash), and the embedding a row lookup.

use std::collections::HashMap;

use super::super::arch::{ArchSpec, Dim, Need, TensorKind, TensorRule, GLOBAL_TENSORS};
use super::super::excerpt;
use super::super::gguf::{type_name, GgufHeader, MetaValue, TensorInfo};
use super::hparams::Hparams;
use crate::sys;

/// Types whose CPU kernels llama.cpp's graphs can multiply with (each also has a CPU dot
/// product, checked at run time).
const MATRIX_TYPES: &[u32] = &[
    sys::GGML_TYPE_F32,
    sys::GGML_TYPE_F16,
    sys::GGML_TYPE_BF16,
    sys::GGML_TYPE_Q4_0,
    sys::GGML_TYPE_Q4_1,
    sys::GGML_TYPE_Q5_0,
    sys::GGML_TYPE_Q5_1,
    sys::GGML_TYPE_Q8_0,
    sys::GGML_TYPE_Q2_K,
    sys::GGML_TYPE_Q3_K,
    sys::GGML_TYPE_Q4_K,
    sys::GGML_TYPE_Q5_K,
    sys::GGML_TYPE_Q6_K,
    sys::GGML_TYPE_IQ2_XXS,
    sys::GGML_TYPE_IQ2_XS,
    sys::GGML_TYPE_IQ2_S,
    sys::GGML_TYPE_IQ3_XXS,
    sys::GGML_TYPE_IQ3_S,
    sys::GGML_TYPE_IQ1_S,
    sys::GGML_TYPE_IQ1_M,
    sys::GGML_TYPE_IQ4_NL,
    sys::GGML_TYPE_IQ4_XS,
    sys::GGML_TYPE_TQ1_0,
    sys::GGML_TYPE_TQ2_0,
    sys::GGML_TYPE_MXFP4,
];

fn has_cpu_dot_product(ggml_type: u32) -> bool {
    // SAFETY: the id is one of ggml's types (checked by the caller); the function returns a
    // pointer to a static table entry.
    let traits = unsafe { sys::ggml_get_type_traits_cpu(ggml_type) };
    // SAFETY: a non-null pointer into ggml's static table.
    !traits.is_null() && unsafe { (*traits).vec_dot.is_some() }
}

fn type_allowed(kind: TensorKind, ggml_type: u32) -> bool {
    match kind {
        TensorKind::Vector => ggml_type == sys::GGML_TYPE_F32,
        TensorKind::Matrix | TensorKind::Embedding => {
            MATRIX_TYPES.contains(&ggml_type) && has_cpu_dot_product(ggml_type)
        }
    }
}

fn dim(d: Dim, hp: &Hparams, n_vocab: u64) -> u64 {
    match d {
        Dim::Embd => hp.n_embd,
        Dim::Vocab => n_vocab,
        Dim::Ff => hp.n_ff,
        Dim::Q => hp.head_dim * hp.n_head,
        Dim::Kv => hp.head_dim * hp.n_head_kv,
        Dim::Qkv => hp.head_dim * (hp.n_head + 2 * hp.n_head_kv),
        Dim::HeadSize => hp.head_dim,
        Dim::RotHalf => hp.n_rot / 2,
        Dim::NExperts => hp.n_expert,
    }
}

/// Whether `rule` applies to this model at all, and whether it must be present.
fn expected(rule: &TensorRule, hp: &Hparams, fused: bool) -> Option<bool> {
    match rule.need {
        Need::Required => Some(true),
        Need::Optional => Some(false),
        Need::UnlessFused => (!fused).then_some(true),
        Need::Dense => (hp.n_expert == 0).then_some(true),
        Need::Experts => (hp.n_expert > 0).then_some(true),
        Need::ExpertsOptional => (hp.n_expert > 0).then_some(false),
        Need::Longrope => hp.longrope.then_some(false),
        Need::NotLongrope => (!hp.longrope).then_some(false),
    }
}

/// Checks the tensor set, shapes and types.
pub(super) fn check(header: &GgufHeader, spec: &ArchSpec, hp: &Hparams) -> Result<(), String> {
    let n_vocab = match header.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(a)) => a.count,
        _ => 0,
    };
    let by_name: HashMap<&str, &TensorInfo> = header
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut expected_names: HashMap<String, (&TensorRule, bool)> = HashMap::new();
    for rule in GLOBAL_TENSORS {
        if let Some(required) = expected(rule, hp, false) {
            expected_names.insert(rule.name.to_string(), (rule, required));
        }
    }
    for layer in 0..hp.n_layer {
        let fused = by_name.contains_key(format!("blk.{layer}.attn_qkv.weight").as_str());
        for rule in spec.layer_tensors() {
            if let Some(required) = expected(rule, hp, fused) {
                expected_names.insert(
                    rule.name.replace("{}", &layer.to_string()),
                    (rule, required),
                );
            }
        }
    }
    for t in &header.tensors {
        let Some((rule, _)) = expected_names.get(t.name.as_str()) else {
            return Err(format!(
                "tensor {} is not one a {} model has",
                excerpt(&t.name),
                spec.name
            ));
        };
        let want: Vec<u64> = rule.dims.iter().map(|d| dim(*d, hp, n_vocab)).collect();
        let mut got = t.dims.clone();
        while got.len() > want.len() && got.last() == Some(&1) {
            got.pop();
        }
        if got != want {
            return Err(format!(
                "tensor {} has shape {:?}, the hyperparameters give {want:?}",
                excerpt(&t.name),
                t.dims
            ));
        }
        if !type_allowed(rule.kind, t.ggml_type) {
            return Err(format!(
                "tensor {} is stored as {}, which llama.cpp cannot compute with for {}",
                excerpt(&t.name),
                type_name(t.ggml_type),
                match rule.kind {
                    TensorKind::Vector => "an element-wise weight (it must be f32)",
                    TensorKind::Matrix => "a matrix",
                    TensorKind::Embedding => "the embedding",
                }
            ));
        }
    }
    let mut missing: Vec<&String> = expected_names
        .iter()
        .filter(|(name, (_, required))| *required && !by_name.contains_key(name.as_str()))
        .map(|(name, _)| name)
        .collect();
    missing.sort();
    if let Some(name) = missing.first() {
        return Err(format!("tensor {} is missing", excerpt(name)));
    }
    Ok(())
}
