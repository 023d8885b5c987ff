//! Tensors: exactly the family's set (llama.cpp refuses missing and unexpected ones, and
//! looks each up by a linear scan), each with the shape the hyperparameters give, and a type
//! the CPU kernels compute: element-wise weights must be F32 (others abort in the first
//! decode), matrices need a CPU dot product (others crash), and the embedding a row lookup.

use std::collections::HashMap;

use super::super::arch::{ArchSpec, Hparams, TensorKind, TensorRule};
use super::super::excerpt;
use super::super::gguf::{type_name, GgufHeader, TensorInfo};
use crate::sys;

/// Types whose CPU kernels llama.cpp's graphs can multiply with (each also has a CPU dot
/// product, checked at run time): what a weight matrix may be stored as.
pub const MATRIX_TYPES: &[u32] = &[
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
    sys::GGML_TYPE_NVFP4,
    sys::GGML_TYPE_Q1_0,
    sys::GGML_TYPE_Q2_0,
];

/// Whether ggml's CPU backend has a dot product for `ggml_type`, asked of its type table.
#[cfg(not(feature = "dynamic-backends"))]
fn has_cpu_dot_product(ggml_type: u32) -> bool {
    // SAFETY: the id is one of ggml's types (checked by the caller); the function returns a
    // pointer to a static table entry.
    let traits = unsafe { sys::ggml_get_type_traits_cpu(ggml_type) };
    // SAFETY: a non-null pointer into ggml's static table.
    !traits.is_null() && unsafe { (*traits).vec_dot.is_some() }
}

/// With the CPU backend loaded as a module its type table cannot be linked to: every type of
/// [`MATRIX_TYPES`] has a CPU dot product in the pinned ggml, which the default build's test
/// `every_matrix_type_has_a_cpu_dot_product` checks against that table.
#[cfg(feature = "dynamic-backends")]
fn has_cpu_dot_product(ggml_type: u32) -> bool {
    MATRIX_TYPES.contains(&ggml_type)
}

fn type_allowed(kind: TensorKind, ggml_type: u32) -> bool {
    match kind {
        TensorKind::Vector | TensorKind::Decay => ggml_type == sys::GGML_TYPE_F32,
        TensorKind::Matrix | TensorKind::Router | TensorKind::Embedding => {
            MATRIX_TYPES.contains(&ggml_type) && has_cpu_dot_product(ggml_type)
        }
    }
}

/// Checks that llama.cpp's CPU kernels compute with every tensor's type (for an
/// architecture without a spec, whose tensors' uses hypura does not know).
pub(super) fn check_types(header: &GgufHeader) -> Result<(), String> {
    for t in &header.tensors {
        if !type_allowed(TensorKind::Matrix, t.ggml_type) {
            return Err(format!(
                "tensor {} is stored as {}, which llama.cpp's CPU backend cannot compute with",
                excerpt(&t.name),
                type_name(t.ggml_type)
            ));
        }
    }
    Ok(())
}

/// Checks the tensor set, shapes and types.
pub(super) fn check(header: &GgufHeader, spec: &ArchSpec, hp: &Hparams) -> Result<(), String> {
    let by_name: HashMap<&str, &TensorInfo> = header
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let present = |name: &str| by_name.contains_key(name);
    // Each expected name with its rule, whether it is required, and its shape.
    let mut expected_names: HashMap<String, (&TensorRule, bool, Vec<u64>)> = HashMap::new();
    let shape = |rule: &TensorRule, hp: &Hparams| rule.dims.iter().map(|d| d.value(hp)).collect();
    for rule in spec.global_tensors() {
        if let Some(required) = rule.need.expected(hp, None, &present) {
            expected_names.insert(rule.name.to_string(), (rule, required, shape(rule, hp)));
        }
    }
    // Next-token-prediction layers a converter left out (llama.cpp tells by the first's
    // projection) leave every tensor of theirs optional.
    let nextn_left_out = spec.nextn.is_some_and(|n| n.may_be_left_out)
        && !by_name.contains_key(format!("blk.{}.nextn.eh_proj.weight", hp.n_layer).as_str());
    for layer in 0..hp.n_layer + hp.n_nextn {
        let at_layer = hp.at_layer(layer);
        let optional = hp.is_nextn_layer(layer) && nextn_left_out;
        for rule in spec.tensors_of_layer(hp, layer) {
            if let Some(required) = rule.need.expected(&at_layer, Some(layer), &present) {
                expected_names.insert(
                    rule.name.replace("{}", &layer.to_string()),
                    (rule, required && !optional, shape(rule, &at_layer)),
                );
            }
        }
    }
    for t in &header.tensors {
        let Some((rule, _, want)) = expected_names.get(t.name.as_str()) else {
            return Err(format!(
                "tensor {} is not one a {} model has",
                excerpt(&t.name),
                spec.name
            ));
        };
        let mut got = t.dims.clone();
        while got.len() > want.len() && got.last() == Some(&1) {
            got.pop();
        }
        if &got != want {
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
                    TensorKind::Vector | TensorKind::Decay =>
                        "an element-wise weight (it must be f32)",
                    TensorKind::Matrix | TensorKind::Router => "a matrix",
                    TensorKind::Embedding => "the embedding",
                }
            ));
        }
    }
    let mut missing: Vec<&String> = expected_names
        .iter()
        .filter(|(name, (_, required, _))| *required && !by_name.contains_key(name.as_str()))
        .map(|(name, _)| name)
        .collect();
    missing.sort();
    if let Some(name) = missing.first() {
        return Err(format!("tensor {} is missing", excerpt(name)));
    }
    Ok(())
}

#[cfg(all(test, not(feature = "dynamic-backends")))]
mod cpu_table_tests {
    use super::*;

    #[test]
    fn every_matrix_type_has_a_cpu_dot_product() {
        for &t in MATRIX_TYPES {
            assert!(
                has_cpu_dot_product(t),
                "{} has no CPU dot product",
                type_name(t)
            );
        }
    }
}
