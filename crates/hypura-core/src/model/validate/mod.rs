//! The checks that keep a file llama.cpp would abort on (or hang over, or refuse) from ever
//! reaching it, all in one place, so that `plan` and a load agree on what is valid. Each
//! rule follows an `GGML_ASSERT`, abort, uncaught exception or refusal in the pinned
//! llama.cpp (crate llama-cpp-sys-2 0.1.161); the rules are grouped by what they look at:
//! the header's structure (here), hyperparameters ([`hparams`], reading keys through
//! [`keys`]), the vocabulary ([`vocab`]) and the tensors' names, shapes and types
//! ([`tensors`]).

mod hparams;
mod keys;
mod tensors;

pub use tensors::MATRIX_TYPES;
mod vocab;

use std::path::Path;

use super::arch::ArchSpec;
use super::excerpt;
use super::gguf::{GgufHeader, MetaValue};
use crate::error::ModelFileError;

/// Most metadata keys (llama.cpp looks keys up by a linear scan, over a hundred times).
const MAX_KEYS: usize = 1 << 16;
/// Longest array outside the tokenizer (llama.cpp prints every array in full at load).
const MAX_OTHER_ARRAY_ITEMS: u64 = 4096;
/// Longest architecture name taken for one llama.cpp might know (its longest is about 20).
const MAX_ARCH_NAME_BYTES: usize = 40;
/// Smallest alignment llama.cpp's mmap loader accepts (`TENSOR_ALIGNMENT`).
const MIN_ALIGNMENT: u64 = 32;

/// What validation found the model to be.
#[derive(Debug, Clone)]
pub(crate) enum Family {
    /// A family hypura tiers, checked against its spec.
    Tiered(&'static ArchSpec),
    /// A model hypura does not tier (an architecture without a spec, or a feature its spec
    /// does not cover yet), checked as far as llama.cpp checks every architecture, to run
    /// as stock llama.cpp runs it; with the reason.
    Untiered(String),
}

/// Checks `header` (of the file at `path`) against everything llama.cpp asserts on; returns
/// the family's spec, if hypura has one.
pub(crate) fn validate(header: &GgufHeader, path: &Path) -> Result<Family, ModelFileError> {
    let invalid = |reason: String| ModelFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    structure(header).map_err(invalid)?;
    key_types(header).map_err(invalid)?;
    let arch = match header.get("general.architecture") {
        Some(MetaValue::Str(arch)) => arch,
        Some(_) => return Err(invalid("general.architecture is not a string".into())),
        None => {
            return Err(ModelFileError::Malformed {
                path: path.to_path_buf(),
                reason: "no general.architecture".into(),
            })
        }
    };
    let untiered = |reason: String| {
        hparams::read_base(header, arch).map_err(invalid)?;
        vocab::check(header).map_err(invalid)?;
        tensors::check_types(header).map_err(invalid)?;
        Ok(Family::Untiered(reason))
    };
    let Some(spec) = ArchSpec::find(arch) else {
        // llama.cpp knows its architectures by short lowercase names; any other refuses to
        // load (and would make the key names in messages unprintable).
        if arch.is_empty()
            || arch.len() > MAX_ARCH_NAME_BYTES
            || !arch
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(invalid(format!(
                "general.architecture {} is not an architecture llama.cpp knows",
                excerpt(arch)
            )));
        }
        return untiered(format!(
            "hypura has no spec for architecture {} (it tiers {})",
            excerpt(arch),
            ArchSpec::supported()
        ));
    };
    if let Some(reason) = hparams::not_tiered(header, spec) {
        return untiered(reason);
    }
    let hp = hparams::read(header, spec).map_err(invalid)?;
    vocab::check(header).map_err(invalid)?;
    tensors::check(header, spec, &hp).map_err(invalid)?;
    Ok(Family::Tiered(spec))
}

/// GGUF types llama.cpp demands of the keys it reads (it refuses any other, by key name;
/// `{}` stands for the architecture). Keys it does not read are not checked.
const KEY_TYPES: &[(&str, &[u32])] = {
    use super::gguf::value_type::{ARRAY, BOOL, F32, I32, STRING, U32};
    &[
        ("general.name", &[STRING]),
        ("general.file_type", &[U32]),
        ("{}.vocab_size", &[U32]),
        ("{}.context_length", &[U32]),
        ("{}.embedding_length", &[U32]),
        ("{}.block_count", &[U32]),
        ("{}.pooling_type", &[U32]),
        ("{}.attention.causal", &[BOOL]),
        ("{}.rope.scaling.finetuned", &[BOOL]),
        ("{}.rope.scale_linear", &[F32]),
        ("{}.rope.scaling.alpha", &[F32]),
        ("{}.rope.scaling.attn_factor", &[F32]),
        ("{}.rope.scaling.factor", &[F32]),
        ("{}.rope.freq_base", &[F32]),
        ("{}.rope.freq_base_swa", &[F32]),
        ("{}.rope.scaling.type", &[STRING]),
        ("{}.rope.scaling.original_context_length", &[U32]),
        ("{}.attention.layer_norm_rms_epsilon", &[F32]),
        ("{}.attention.key_length", &[U32]),
        ("{}.attention.value_length", &[U32]),
        ("{}.rope.dimension_count", &[U32]),
        ("{}.attention.key_length_swa", &[U32]),
        ("{}.attention.value_length_swa", &[U32]),
        ("{}.rope.dimension_count_swa", &[U32]),
        ("{}.attention.shared_kv_layers", &[U32]),
        ("{}.embedding_length_per_layer_input", &[U32]),
        ("{}.attention.sliding_window", &[U32]),
        ("{}.attention.sliding_window_pattern", &[U32, ARRAY]),
        ("{}.final_logit_softcapping", &[F32]),
        ("{}.attn_logit_softcapping", &[F32]),
        ("{}.expert_count", &[U32]),
        ("{}.expert_shared_count", &[U32]),
        ("{}.expert_gating_func", &[U32]),
        ("{}.expert_weights_norm", &[BOOL]),
        ("{}.expert_weights_scale", &[F32]),
        ("{}.expert_feed_forward_length", &[U32, ARRAY]),
        ("{}.leading_dense_block_count", &[U32]),
        ("{}.nextn_predict_layers", &[U32]),
        ("{}.attention.temperature_scale", &[F32]),
        ("{}.expert_used_count", &[U32, ARRAY]),
        ("{}.expert_group_count", &[U32]),
        ("{}.expert_group_used_count", &[U32]),
        ("{}.expert_shared_feed_forward_length", &[U32]),
        ("{}.attention.q_lora_rank", &[U32]),
        ("{}.attention.kv_lora_rank", &[U32]),
        ("{}.attention.key_length_mla", &[U32]),
        ("{}.attention.value_length_mla", &[U32]),
        ("{}.rope.dimension_sections", &[I32, ARRAY]),
        ("{}.rope.scaling.yarn_log_multiplier", &[F32]),
        ("{}.attention.temperature_length", &[U32]),
        ("{}.ssm.conv_kernel", &[U32]),
        ("{}.ssm.inner_size", &[U32]),
        ("{}.ssm.state_size", &[U32]),
        ("{}.ssm.time_step_rank", &[U32]),
        ("{}.ssm.group_count", &[U32]),
        ("{}.full_attention_interval", &[U32]),
        ("{}.attention.recurrent_layers", &[U32, ARRAY]),
        ("{}.feed_forward_length", &[U32, ARRAY]),
        ("{}.attention.head_count", &[U32, ARRAY]),
        ("{}.attention.head_count_kv", &[U32, ARRAY]),
        ("tokenizer.ggml.model", &[STRING]),
        ("tokenizer.ggml.pre", &[STRING]),
        ("tokenizer.ggml.tokens", &[ARRAY]),
        ("tokenizer.ggml.scores", &[ARRAY]),
        ("tokenizer.ggml.token_type", &[ARRAY]),
        ("tokenizer.ggml.merges", &[ARRAY]),
        ("tokenizer.ggml.add_bos_token", &[BOOL]),
        ("tokenizer.ggml.add_eos_token", &[BOOL]),
        ("tokenizer.ggml.add_sep_token", &[BOOL]),
        ("tokenizer.ggml.add_space_prefix", &[BOOL]),
        ("tokenizer.ggml.remove_extra_whitespaces", &[BOOL]),
        ("tokenizer.chat_template", &[STRING]),
    ]
};

fn key_types(header: &GgufHeader) -> Result<(), String> {
    let arch = match header.get("general.architecture") {
        Some(MetaValue::Str(a)) => a.as_str(),
        _ => "",
    };
    for (pattern, allowed) in KEY_TYPES {
        let key = pattern.replace("{}", arch);
        if let Some(meta) = header.meta.get(&key) {
            if !allowed.contains(&meta.value_type) {
                return Err(format!(
                    "{} has GGUF value type {}, which llama.cpp does not accept for it",
                    excerpt(&key),
                    meta.value_type
                ));
            }
        }
    }
    Ok(())
}

/// Rules on the header as a whole.
fn structure(header: &GgufHeader) -> Result<(), String> {
    if header.meta.len() > MAX_KEYS {
        return Err(format!(
            "{} metadata keys (at most {MAX_KEYS})",
            header.meta.len()
        ));
    }
    if let Some(MetaValue::Uint(a)) = header.get("general.alignment") {
        if *a < MIN_ALIGNMENT {
            return Err(format!(
                "general.alignment {a} is below {MIN_ALIGNMENT}, which llama.cpp's loader needs"
            ));
        }
    }
    // A file split in parts makes llama.cpp open sibling files by name.
    for key in ["split.count", "split.no", "split.tensors.count"] {
        if let Some(value) = header.get(key) {
            let single = match key {
                "split.count" => matches!(value, MetaValue::Uint(1)),
                "split.no" => matches!(value, MetaValue::Uint(0)),
                _ => true,
            };
            if !single || header.meta[key].value_type != super::gguf::value_type::U16 {
                return Err(format!(
                    "{key} is {value:?}: split GGUF files are not supported (merge the parts with llama-gguf-split --merge)"
                ));
            }
        }
    }
    for (key, meta) in &header.meta {
        if let MetaValue::Array(array) = &meta.value {
            if !key.starts_with("tokenizer.") && array.count > MAX_OTHER_ARRAY_ITEMS {
                return Err(format!(
                    "array {} has {} items (at most {MAX_OTHER_ARRAY_ITEMS})",
                    excerpt(key),
                    array.count
                ));
            }
        }
    }
    Ok(())
}
