//! Synthetic GGUF models of any family hypura tiers (its tensors and keys come from the
//! family's spec, `hypura_core::families`) and real shapes (7B–70B dense, Mixtral-style MoE),
//! with random weights quantized by ggml's own functions to any type the CPU computes, and a
//! working tokenizer: realistic for speed and for correctness checks, meaningless as text.
//! Written at disk speed: for each row length and type, a block of random rows is quantized
//! once and repeated, each tensor starting at its own row in it, so that no two layers (nor
//! two experts) hold the same weights.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use hypura_core::families::{ArchSpec, Example, Hparams, Need, SwaPattern, TensorKind, FAMILIES};

use crate::gguf::{raw_records, GgufWriter, RecordsError, TensorEntry, Value};
use crate::quant::{block_of, quantized_rows, type_name, Rng};
pub use crate::quant::{known_types, WeightTypes};
use shape::{field_value, hparams_of};
pub use shape::{Routing, Shape};

mod moe_from;
mod shape;
use llama_cpp_sys_2 as sys;
pub use moe_from::moe_from;

/// Why a synthetic model could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// The shape is not one a model can have.
    #[error("invalid shape: {0}")]
    Shape(String),
    /// The family or type is not one the generator knows.
    #[error("{0}")]
    Unknown(String),
    /// The tokenizer could not be copied.
    #[error(transparent)]
    Tokenizer(#[from] RecordsError),
    /// The tokenizer source has no vocabulary.
    #[error("{0} has no tokenizer (no tokenizer.ggml.tokens)")]
    NoTokenizer(String),
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The names of the families the generator writes.
pub fn known_families() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.name).collect()
}

/// The vocabulary size of a `tokenizer.ggml.tokens` record (type id, item type, count, ...).
fn vocab_of(records: &[(String, Vec<u8>)]) -> Option<u64> {
    let (_, raw) = records.iter().find(|(k, _)| k == "tokenizer.ggml.tokens")?;
    let count = raw.get(8..16)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(count);
    Some(u64::from_le_bytes(a)).filter(|n| *n > 0)
}

/// A generated SentencePiece-style vocabulary of `n_vocab` tokens (control, 256 byte tokens,
/// then unique pieces).
fn generated_tokenizer(n_vocab: u64) -> Vec<(String, Value)> {
    let mut tokens = Vec::new();
    let mut types = Vec::new();
    for (t, ty) in [("<unk>", 2i32), ("<s>", 3), ("</s>", 3)] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let letters = b"etaoinshrdlucmfwypvbgkjqxz";
    let mut i = 0u64;
    while (tokens.len() as u64) < n_vocab {
        let mut piece = String::from("\u{2581}");
        let mut k = i;
        loop {
            piece.push(letters[(k % 26) as usize] as char);
            k /= 26;
            if k == 0 {
                break;
            }
        }
        tokens.push(piece);
        types.push(1);
        i += 1;
    }
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    vec![
        ("tokenizer.ggml.model".into(), Value::Str("llama".into())),
        ("tokenizer.ggml.tokens".into(), Value::StrArray(tokens)),
        ("tokenizer.ggml.scores".into(), Value::F32Array(scores)),
        ("tokenizer.ggml.token_type".into(), Value::I32Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ]
}

/// What the generator writes into a tensor of kind `kind` named `name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Quantized random weights of a type.
    Weights(u32),
    /// F32 ones (norm weights, scales, rope factors).
    Ones,
    /// Small F32 random values (biases, sinks, a router's selection bias).
    Small,
    /// F32 random values in [-1, 1] (an MoE router).
    Router,
    /// F32 random values in [-1.5, -0.5] (a decay's scale).
    Decay,
}

fn fill_of(kind: TensorKind, name: &str, types: WeightTypes) -> Fill {
    match kind {
        TensorKind::Embedding | TensorKind::Matrix => Fill::Weights(types.of(name)),
        TensorKind::Router => Fill::Router,
        TensorKind::Vector
            if name.contains("norm") || name.contains("_scale") || name.starts_with("rope_") =>
        {
            Fill::Ones
        }
        TensorKind::Vector => Fill::Small,
        TensorKind::Decay => Fill::Decay,
    }
}

/// The header of a synthetic model of family `spec` and `shape`, and what fills each tensor.
fn describe(
    spec: &ArchSpec,
    shape: Shape,
    types: WeightTypes,
    tokenizer: Vec<(String, Value)>,
    n_vocab: u64,
) -> Result<(GgufWriter, Vec<Fill>), SynthError> {
    let ple_block = block_of(types.of("blk.0.proj.weight")).0;
    let hp = hparams_of(spec, &shape, n_vocab, ple_block)?;
    let n_layer_all = hp.n_layer + hp.n_nextn;
    let arch = spec.name;
    let key = |k: &str| format!("{arch}.{k}");
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str(arch.into()))
        .meta("general.name", Value::Str("hypura synthetic".into()))
        .meta("general.alignment", Value::U32(32))
        .meta(key("context_length"), Value::U32(4096))
        .meta(key("embedding_length"), Value::U32(hp.n_embd as u32))
        .meta(key("block_count"), Value::U32(n_layer_all as u32))
        .meta(key("attention.head_count"), Value::U32(hp.n_head as u32))
        .meta(key("attention.key_length"), Value::U32(hp.head_k as u32))
        .meta(key("attention.value_length"), Value::U32(hp.head_v as u32))
        .meta(key("rope.dimension_count"), Value::U32(hp.n_rot as u32))
        .meta(key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .meta(key("rope.freq_base"), Value::F32(10000.0));
    match &hp.widths {
        // Per layer, as an array of every layer's value.
        Some(widths) => {
            let each = |of: fn((u64, u64, u64)) -> u64| {
                Value::I32Array((0..n_layer_all).map(|l| of(widths.get(l)) as i32).collect())
            };
            w.meta(key("feed_forward_length"), each(|w| w.2))
                .meta(key("attention.head_count_kv"), each(|w| w.1));
        }
        None => {
            w.meta(key("feed_forward_length"), Value::U32(hp.n_ff as u32))
                .meta(
                    key("attention.head_count_kv"),
                    Value::U32(hp.n_head_kv as u32),
                );
        }
    }
    if hp.n_nextn > 0 {
        w.meta(key("nextn_predict_layers"), Value::U32(hp.n_nextn as u32));
    }
    if let Some(file_type) = types.file_type() {
        w.meta("general.file_type", Value::U32(file_type));
    }
    if hp.n_expert > 0 {
        w.meta(key("expert_count"), Value::U32(hp.n_expert as u32))
            .meta(
                key("expert_used_count"),
                Value::U32(hp.n_expert_used as u32),
            );
    }
    for rule in spec.keys {
        w.meta(
            key(rule.key),
            Value::U32(field_value(&hp, rule.sets) as u32),
        );
    }
    if let Some(latent) = spec.latent.filter(|_| hp.mla_absorbed) {
        w.meta(key(latent.key_length_key), Value::U32(hp.head_k_mla as u32))
            .meta(
                key(latent.value_length_key),
                Value::U32(hp.head_v_mla as u32),
            );
    }
    if let Some(hybrid) = spec.hybrid {
        w.meta(
            key(hybrid.interval_key),
            Value::U32(hybrid.default_interval),
        );
    }
    if let Some(sections_key) = spec.rope_sections_key {
        // Qwen's interleaved sections: half the rotary dimensions, in three parts.
        let half = (hp.n_rot / 2) as i32;
        let third = half / 3;
        w.meta(
            key(sections_key),
            Value::I32Array(vec![half - 2 * third, third, third, 0]),
        );
    }
    if spec
        .sliding_window
        .is_some_and(|w| w.pattern == SwaPattern::Flags)
    {
        let flags = (0..n_layer_all).map(|l| hp.is_swa(l)).collect();
        w.meta(
            key("attention.sliding_window_pattern"),
            Value::BoolArray(flags),
        );
    }
    for (k, example) in spec.example_keys {
        let value = match *example {
            Example::U32(v) => Value::U32(v),
            Example::F32(v) => Value::F32(v),
            Example::Bool(v) => Value::Bool(v),
        };
        w.meta(key(k), value);
    }
    for (k, value) in tokenizer {
        w.meta(k, value);
    }
    let mut fills = Vec::new();
    let mut add = |w: &mut GgufWriter, name: String, dims: Vec<u64>, kind| {
        let fill = fill_of(kind, &name, types);
        let (ggml_type, nbytes) = match fill {
            Fill::Weights(t) => {
                let (block, block_bytes) = block_of(t);
                if dims[0] % block != 0 {
                    return Err(SynthError::Shape(format!(
                        "{name}: rows of {} are not a multiple of {}'s block of {block}",
                        dims[0],
                        type_name(t).unwrap_or_default()
                    )));
                }
                let elements: u64 = dims.iter().product();
                (t, elements / block * block_bytes)
            }
            Fill::Ones | Fill::Small | Fill::Router | Fill::Decay => {
                (sys::GGML_TYPE_F32, dims.iter().product::<u64>() * 4)
            }
        };
        w.tensor(TensorEntry {
            name,
            dims,
            ggml_type,
            nbytes,
        });
        fills.push(fill);
        Ok(())
    };
    let wanted = |hp: &Hparams, need: Need, layer: Option<u64>, name: &str| match need.expected(
        hp,
        layer,
        &|_| false,
    ) {
        Some(true) => true,
        Some(false) => need.typical(hp, layer) || (name == "output.weight" && !shape.tied),
        None => false,
    };
    for rule in spec.global_tensors() {
        if wanted(&hp, rule.need, None, rule.name) {
            let dims = rule.dims.iter().map(|d| d.value(&hp)).collect();
            add(&mut w, rule.name.to_string(), dims, rule.kind)?;
        }
    }
    let written_layers = if shape.nextn_left_out {
        hp.n_layer
    } else {
        n_layer_all
    };
    for layer in 0..written_layers {
        let at_layer = hp.at_layer(layer);
        for rule in spec.tensors_of_layer(&hp, layer) {
            if wanted(&at_layer, rule.need, Some(layer), rule.name) {
                let dims = rule.dims.iter().map(|d| d.value(&at_layer)).collect();
                let name = rule.name.replace("{}", &layer.to_string());
                add(&mut w, name, dims, rule.kind)?;
            }
        }
    }
    Ok((w, fills))
}

/// True when `a` and `b` name the same existing file.
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Writes a synthetic model of family `arch` to `out`; `tokenizer_from` copies a real
/// GGUF's tokenizer. `progress` receives (bytes written, total bytes) now and then. Returns
/// the file's size.
pub fn write_model(
    out: &Path,
    arch: &str,
    shape: Shape,
    types: WeightTypes,
    tokenizer_from: Option<&Path>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, SynthError> {
    let spec = hypura_core::families::find(arch).ok_or_else(|| {
        SynthError::Unknown(format!(
            "--arch {arch}: not a family hypura tiers (known: {})",
            known_families().join(", ")
        ))
    })?;
    let (tokenizer, n_vocab) = match tokenizer_from {
        Some(path) if same_file(path, out) => {
            return Err(SynthError::Unknown(format!(
                "--tokenizer-from {}: --out is that file itself",
                path.display()
            )))
        }
        Some(path) => {
            let records = raw_records(path, "tokenizer.")?;
            let n_vocab = vocab_of(&records)
                .ok_or_else(|| SynthError::NoTokenizer(path.display().to_string()))?;
            let values = records
                .into_iter()
                .map(|(k, raw)| (k, Value::Raw(raw)))
                .collect();
            (values, n_vocab)
        }
        None => (generated_tokenizer(shape.n_vocab), shape.n_vocab),
    };
    let n_embd = shape.n_embd;
    let token_channels = shape.routing.token_channels(n_embd);
    let (w, fills) = describe(spec, shape, types, tokenizer, n_vocab)?;
    let header = w.header_bytes();
    let total = header.len() as u64 + w.data_bytes();
    let failed = |source| SynthError::Write {
        path: out.display().to_string(),
        source,
    };
    let mut writer = BufWriter::with_capacity(8 << 20, File::create(out).map_err(failed)?);
    writer.write_all(&header).map_err(failed)?;
    // Most rows quantized per (type, row length); tensors with more rows repeat them.
    const PATTERN_BYTES: u64 = 16 << 20;
    let mut rows_needed: HashMap<(u32, u64), u64> = HashMap::new();
    for (t, fill) in w.tensors().iter().zip(&fills) {
        if let Fill::Weights(ty) = fill {
            let rows = t.dims.iter().skip(1).product::<u64>();
            let e = rows_needed.entry((*ty, t.dims[0])).or_default();
            *e = (*e).max(rows);
        }
    }
    let mut patterns: HashMap<(u32, u64), Vec<u8>> = HashMap::new();
    let mut written = header.len() as u64;
    let mut rng = Rng(99);
    let alignment = w.alignment();
    for (i, (t, fill)) in w.tensors().iter().zip(&fills).enumerate() {
        let n_elements = t.dims.iter().product::<u64>() as usize;
        let f32_data = |f: &mut dyn FnMut() -> f32| -> Vec<u8> {
            (0..n_elements).flat_map(|_| f().to_le_bytes()).collect()
        };
        // Token routing: the channels routers read hold the token's embedding, unchanged.
        let channel = |i: usize| i as u64 % n_embd;
        let writes_residual = t.name.starts_with("blk.")
            && (t.name.contains(".attn_output.") || t.name.contains(".ffn_down"));
        let untouched = token_channels.filter(|_| writes_residual && t.dims.len() > 1);
        let owned;
        let (source, unit): (&[u8], usize) = match *fill {
            Fill::Ones => {
                owned = f32_data(&mut || 1.0);
                (&owned, 0)
            }
            Fill::Small => {
                let zeroed = token_channels.filter(|_| writes_residual && t.dims[0] == n_embd);
                let mut i = 0;
                owned = f32_data(&mut || {
                    let v = rng.uniform() * 0.1;
                    i += 1;
                    match zeroed {
                        Some(c) if channel(i - 1) < c => 0.0,
                        _ => v,
                    }
                });
                (&owned, 0)
            }
            // Router weights must differ between experts, or every token picks the same.
            Fill::Router => {
                let read = token_channels.filter(|_| t.dims[0] == n_embd);
                let mut i = 0;
                owned = f32_data(&mut || {
                    let v = rng.uniform();
                    i += 1;
                    match read {
                        Some(c) if channel(i - 1) >= c => 0.0,
                        _ => v,
                    }
                });
                (&owned, 0)
            }
            Fill::Decay => {
                owned = f32_data(&mut || -1.0 - 0.5 * rng.uniform());
                (&owned, 0)
            }
            Fill::Weights(ty) => {
                let n_in = t.dims[0];
                // SAFETY: plain function of a valid type id.
                let row_bytes = unsafe { sys::ggml_row_size(ty, n_in as i64) } as u64;
                let source = patterns.entry((ty, n_in)).or_insert_with(|| {
                    let rows = rows_needed[&(ty, n_in)]
                        .min((PATTERN_BYTES / row_bytes).max(1))
                        .max(1);
                    quantized_rows(ty, n_in, rows, 7 + i as u64)
                });
                (&source[..], row_bytes as usize)
            }
        };
        let mut at = source
            .len()
            .checked_div(unit)
            .filter(|&units| units > 0)
            .map_or(0, |units| {
                (Rng(1000 + i as u64).next() as usize % units) * unit
            });
        let mut left = t.nbytes as usize;
        if let (Some(c), true) = (untouched, unit > 0 && t.dims[1] == n_embd) {
            // Row r writes channel r % n_embd: the routers' channels get zero rows.
            let zero_row = vec![0u8; unit];
            for row in 0..left / unit {
                let bytes = if channel(row) < c {
                    &zero_row[..]
                } else {
                    &source[at..at + unit]
                };
                writer.write_all(bytes).map_err(failed)?;
                at = (at + unit) % source.len();
            }
            left = 0;
        }
        while left > 0 {
            let n = left.min(source.len() - at);
            writer.write_all(&source[at..at + n]).map_err(failed)?;
            left -= n;
            at = (at + n) % source.len();
        }
        let pad = (t.nbytes.div_ceil(alignment) * alignment - t.nbytes) as usize;
        writer.write_all(&vec![0u8; pad]).map_err(failed)?;
        written += t.nbytes + pad as u64;
        progress(written, total);
    }
    writer.flush().map_err(failed)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shape` made small: 4 layers of width 256, 4 heads over 2 key/value heads, a
    /// vocabulary of 300.
    fn small(shape: Shape) -> Shape {
        Shape {
            n_embd: 256,
            n_ff: 512,
            n_layer: 4,
            n_head: 4,
            n_head_kv: 2,
            n_vocab: 300,
            ..shape
        }
    }

    #[test]
    fn every_family_describes_a_model() {
        let shape = small(Shape {
            n_shared_experts: 1,
            n_dense_lead: 1,
            ..Shape::named("llama-7b").unwrap()
        });
        for family in FAMILIES {
            let (w, fills) = describe(
                family,
                shape.clone(),
                WeightTypes::Uniform(sys::GGML_TYPE_Q8_0),
                generated_tokenizer(300),
                300,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", family.name));
            assert_eq!(w.tensors().len(), fills.len());
            assert!(
                w.tensors()
                    .iter()
                    .any(|t| t.name == "blk.3.attn_output.weight"),
                "{}",
                family.name
            );
        }
    }

    /// Plans a gemma4 model of 16 layers (sliding but layers 3, 7, 11 and 15; the last 4
    /// reusing earlier layers' KV cache) with `tweak` applied to its header: what hypura's
    /// validation (the same a load runs) says of it.
    fn plan_gemma4(name: &str, tweak: impl FnOnce(&mut GgufWriter)) -> Result<Plan, String> {
        let shape = Shape {
            n_layer: 16,
            ..small(Shape::named("llama-7b").unwrap())
        };
        let spec = hypura_core::families::find("gemma4").unwrap();
        let (mut w, _) = describe(
            spec,
            shape,
            WeightTypes::Uniform(sys::GGML_TYPE_Q8_0),
            generated_tokenizer(300),
            300,
        )
        .unwrap();
        tweak(&mut w);
        let path = std::env::temp_dir().join(format!(
            "hypura-synth-test-{}-{name}.gguf",
            std::process::id()
        ));
        w.write_file(&path, |_, _| {}).unwrap();
        let plan = Plan::for_options(&LoadOptions::new(&path).context_length(256))
            .map_err(|e| e.to_string());
        std::fs::remove_file(&path).unwrap();
        plan
    }

    use crate::gguf::GgufWriter;
    use hypura_core::{LoadOptions, Plan, Tier};

    #[test]
    fn gemma4_is_refused_where_llama_cpp_aborts() {
        let plan = plan_gemma4("valid", |_| {}).unwrap();
        // The per-layer input embedding and its projection feed every layer: resident.
        for name in ["per_layer_token_embd.weight", "per_layer_model_proj.weight"] {
            let t = plan.tensors.iter().find(|t| t.name == name).unwrap();
            assert_eq!(t.tier, Tier::Ram, "{name}");
        }
        // Layers 0-11 keep their cache: 9 sliding (head 32, window 16 + a batch => 256
        // cells), 3 global (head 64, 256 cells); values padded to the widest head.
        let cells = |head: u64| 256 * (head + 64) * 2 * 2;
        assert_eq!(plan.kv_cache_bytes, 9 * cells(32) + 3 * cells(64));
        // (case, key after `gemma4.`, its new value or none, what the refusal says)
        let cases = [
            (
                "no-sliding",
                "attention.sliding_window_pattern",
                Some(Value::BoolArray(vec![false; 16])),
                "no sliding-window layer",
            ),
            (
                "pattern-scalar",
                "attention.sliding_window_pattern",
                Some(Value::U32(4)),
                "sliding_window_pattern = a scalar",
            ),
            (
                "shared-sliding-reuses-global",
                "attention.shared_kv_layers",
                Some(Value::U32(3)),
                "sliding-window layer reuses the KV cache of layer 11",
            ),
            (
                "shared-global-reuses-sliding",
                "attention.shared_kv_layers",
                Some(Value::U32(5)),
                "global layer reuses the KV cache of layer 10",
            ),
            (
                "too-many-shared",
                "attention.shared_kv_layers",
                Some(Value::U32(15)),
                "fewer than 2",
            ),
            (
                "rope-swa-default-too-wide",
                "rope.dimension_count_swa",
                None,
                "rope.dimension_count_swa = 64 does not fit the sliding-window head size 32",
            ),
            (
                "swa-k-ne-v",
                "attention.value_length_swa",
                Some(Value::U32(64)),
                "differs from value head size",
            ),
            (
                "no-key-length-swa",
                "attention.key_length_swa",
                None,
                "key_length_swa is missing",
            ),
            (
                "kv-heads-not-dividing-in-a-layer",
                "attention.head_count_kv",
                Some(Value::I32Array(
                    (0..16).map(|l| if l == 3 { 3 } else { 2 }).collect(),
                )),
                "4 attention heads are not a multiple of 3 key/value heads (layer 3)",
            ),
            (
                "kv-reuse-wider-than-its-cache",
                "attention.head_count_kv",
                Some(Value::I32Array(
                    (0..16).map(|l| if l == 12 { 4 } else { 2 }).collect(),
                )),
                "layer 12 reuses the KV cache of layer 10 with 4 key/value heads where it has 2",
            ),
            (
                "ffn-width-0-in-a-layer",
                "feed_forward_length",
                Some(Value::I32Array(
                    (0..16).map(|l| if l == 5 { 0 } else { 512 }).collect(),
                )),
                "feed_forward_length[5] = 0",
            ),
            (
                "per-layer-array-too-short",
                "feed_forward_length",
                Some(Value::I32Array(vec![512; 15])),
                "has 15 values for 16 layers",
            ),
        ];
        for (name, key, value, needle) in cases {
            match plan_gemma4(name, |w| {
                w.set_meta(&format!("gemma4.{key}"), value);
            }) {
                Ok(_) => panic!("{name}: accepted"),
                Err(e) => assert!(e.contains(needle), "{name}: {e}"),
            }
        }
    }

    fn names(arch: &str, shape: Shape) -> Vec<String> {
        let (w, _) = describe(
            hypura_core::families::find(arch).unwrap(),
            shape,
            WeightTypes::Uniform(sys::GGML_TYPE_Q8_0),
            generated_tokenizer(300),
            300,
        )
        .unwrap();
        w.tensors().iter().map(|t| t.name.clone()).collect()
    }

    #[test]
    fn latent_and_hybrid_layouts() {
        let shape = small(Shape {
            n_dense_lead: 1,
            ..Shape::named("llama-7b").unwrap()
        });
        let absorbed = names("deepseek2", shape.clone());
        for name in [
            "blk.1.attn_k_b.weight",
            "blk.1.attn_q_b.weight",
            "blk.1.exp_probs_b.bias",
        ] {
            assert!(absorbed.iter().any(|n| n == name), "{name}");
        }
        assert!(!absorbed
            .iter()
            .any(|n| n.contains("attn_kv_b") || n == "blk.0.ffn_gate_inp.weight"));
        let expanded = names(
            "deepseek2",
            Shape {
                latent_expanded: true,
                q_lora_rank: Some(0),
                ..shape.clone()
            },
        );
        assert!(expanded.iter().any(|n| n == "blk.0.attn_kv_b.weight"));
        assert!(expanded.iter().any(|n| n == "blk.0.attn_q.weight"));
        assert!(!expanded
            .iter()
            .any(|n| n.contains("attn_k_b") || n.contains("attn_q_a")));
        // Layers 0-2 recurrent, layer 3 attends.
        let hybrid = names("qwen35moe", shape);
        assert!(hybrid.iter().any(|n| n == "blk.2.ssm_a"));
        assert!(hybrid.iter().any(|n| n == "blk.3.attn_q_norm.weight"));
        assert!(!hybrid
            .iter()
            .any(|n| n == "blk.3.ssm_a" || n == "blk.2.attn_q.weight"));
    }

    #[test]
    fn next_token_prediction_layers_follow_the_trunk() {
        let base = small(Shape::named("llama-7b").unwrap());
        let with = names(
            "glm4moe",
            Shape {
                n_nextn: 1,
                ..base.clone()
            },
        );
        // Layer 4 is a trunk layer with experts, plus its own projection and norms.
        for name in [
            "blk.4.nextn.eh_proj.weight",
            "blk.4.nextn.enorm.weight",
            "blk.4.ffn_gate_exps.weight",
            "blk.4.attn_q.weight",
        ] {
            assert!(with.iter().any(|n| n == name), "{name}");
        }
        assert!(!with.iter().any(|n| n.starts_with("blk.3.nextn")));
        let left_out = names(
            "glm4moe",
            Shape {
                n_nextn: 1,
                nextn_left_out: true,
                ..base.clone()
            },
        );
        assert!(!left_out.iter().any(|n| n.starts_with("blk.4.")));
        // Qwen 3.5's prediction layer attends (never recurrent), and cannot be left out.
        let hybrid = names(
            "qwen35moe",
            Shape {
                n_nextn: 1,
                ..base.clone()
            },
        );
        assert!(hybrid.iter().any(|n| n == "blk.4.attn_q_norm.weight"));
        assert!(!hybrid.iter().any(|n| n == "blk.4.ssm_a"));
        let refused = |arch: &str, shape: Shape| {
            describe(
                hypura_core::families::find(arch).unwrap(),
                shape,
                WeightTypes::Uniform(sys::GGML_TYPE_Q8_0),
                generated_tokenizer(300),
                300,
            )
            .is_err()
        };
        assert!(refused(
            "qwen35moe",
            Shape {
                n_nextn: 1,
                nextn_left_out: true,
                ..base.clone()
            }
        ));
        assert!(refused(
            "llama",
            Shape {
                n_nextn: 1,
                ..base.clone()
            }
        ));
    }

    #[test]
    fn per_layer_widths_shape_each_layer() {
        let shape = Shape {
            n_head_kv_layers: vec![1, 2],
            n_ff_layers: vec![512, 256],
            n_shared_kv: Some(0),
            ..small(Shape::named("llama-7b").unwrap())
        };
        let (w, _) = describe(
            hypura_core::families::find("gemma4").unwrap(),
            shape.clone(),
            WeightTypes::Uniform(sys::GGML_TYPE_Q8_0),
            generated_tokenizer(300),
            300,
        )
        .unwrap();
        let dims = |name: &str| {
            w.tensors()
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name}"))
                .dims
                .clone()
        };
        // Layer 0 slides (head 32 here) with 1 key/value head, layer 1 with 2.
        assert_eq!(dims("blk.0.attn_k.weight"), vec![256, 32]);
        assert_eq!(dims("blk.1.attn_k.weight"), vec![256, 64]);
        assert_eq!(dims("blk.0.ffn_up.weight"), vec![256, 512]);
        assert_eq!(dims("blk.1.ffn_up.weight"), vec![256, 256]);
        // Only a family that sizes each layer by its own takes them.
        assert!(describe(
            hypura_core::families::find("llama").unwrap(),
            shape,
            WeightTypes::Uniform(sys::GGML_TYPE_Q8_0),
            generated_tokenizer(300),
            300,
        )
        .is_err());
    }
}
