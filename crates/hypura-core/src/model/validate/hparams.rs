//! Hyperparameters: every key llama.cpp reads for the family, with the exact GGUF type it
//! demands, and the values it asserts on (layer and expert counts, head dimensions that must
//! match, a positive finite norm epsilon, known rope scaling, …).

use super::super::arch::ArchSpec;
use super::super::excerpt;
use super::super::gguf::{value_type, GgufHeader, MetaValue};

/// llama.cpp's `LLAMA_MAX_LAYERS`.
const MAX_LAYERS: u64 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS`.
const MAX_EXPERTS: u64 = 1024;
const MAX_EMBEDDING: u64 = 1 << 16;
const MAX_CONTEXT: u64 = 1 << 24;
const MAX_HEADS: u64 = 1024;
const MAX_HEAD_DIM: u64 = 1024;
const MAX_FEED_FORWARD: u64 = 1 << 20;

/// The hyperparameters the tensor shapes follow from (uniform over the layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hparams {
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    /// Key and value head dimensions (equal).
    pub head_dim: u64,
    /// Rotary dimensions.
    pub n_rot: u64,
    /// Experts (0: dense).
    pub n_expert: u64,
    /// True for `longrope` rope scaling (its own factor tensors).
    pub longrope: bool,
}

fn type_name(t: u32) -> &'static str {
    match t {
        value_type::U8 => "uint8",
        value_type::I8 => "int8",
        value_type::U16 => "uint16",
        value_type::I16 => "int16",
        value_type::U32 => "uint32",
        value_type::I32 => "int32",
        value_type::F32 => "float32",
        value_type::BOOL => "bool",
        value_type::STRING => "string",
        value_type::ARRAY => "array",
        value_type::U64 => "uint64",
        value_type::I64 => "int64",
        value_type::F64 => "float64",
        _ => "unknown",
    }
}

struct Keys<'a> {
    header: &'a GgufHeader,
    spec: &'a ArchSpec,
}

impl Keys<'_> {
    fn full(&self, key: &str) -> String {
        self.spec.key(key)
    }

    /// The value of `{arch}.{key}` if present, checked to be of type `want`.
    fn typed(&self, key: &str, want: u32) -> Result<Option<&MetaValue>, String> {
        let full = self.full(key);
        match self.header.meta.get(&full) {
            None => Ok(None),
            Some(m) if m.value_type == want => Ok(Some(&m.value)),
            Some(m) => Err(format!(
                "{full} must be a {}, not a {}",
                type_name(want),
                type_name(m.value_type)
            )),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u64>, String> {
        Ok(match self.typed(key, value_type::U32)? {
            Some(MetaValue::Uint(v)) => Some(*v),
            _ => None,
        })
    }

    fn required_u32(&self, key: &str, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
        let v = self
            .u32(key)?
            .ok_or_else(|| format!("{} is missing", self.full(key)))?;
        in_range(&self.full(key), v, range)
    }

    fn f32(&self, key: &str) -> Result<Option<f64>, String> {
        Ok(match self.typed(key, value_type::F32)? {
            Some(MetaValue::Float(v)) => Some(*v),
            _ => None,
        })
    }

    fn string(&self, key: &str) -> Result<Option<&str>, String> {
        Ok(match self.typed(key, value_type::STRING)? {
            Some(MetaValue::Str(s)) => Some(s.as_str()),
            _ => None,
        })
    }

    /// A per-layer value given as one uint32 or an array of `n_layer` equal integers.
    fn per_layer(&self, key: &str, n_layer: u64) -> Result<Option<u64>, String> {
        let full = self.full(key);
        let Some(meta) = self.header.meta.get(&full) else {
            return Ok(None);
        };
        match &meta.value {
            MetaValue::Uint(v) if meta.value_type == value_type::U32 => Ok(Some(*v)),
            MetaValue::Array(a) if matches!(a.item_type, value_type::U32 | value_type::I32) => {
                if a.count != n_layer {
                    return Err(format!(
                        "{full} has {} values for {n_layer} layers",
                        a.count
                    ));
                }
                let values = self.header.numbers(a);
                let first = values.first().copied().unwrap_or(0.0);
                if values.iter().any(|v| *v != first) || first < 0.0 {
                    return Err(format!(
                        "{full} differs between layers, which hypura does not support"
                    ));
                }
                Ok(Some(first as u64))
            }
            _ => Err(format!(
                "{full} must be a uint32 or an array of integers, not a {}",
                type_name(meta.value_type)
            )),
        }
    }

    fn absent_or_zero(&self, key: &str) -> Result<(), String> {
        match self.header.get(&self.full(key)) {
            None | Some(MetaValue::Uint(0)) | Some(MetaValue::Int(0)) => Ok(()),
            Some(v) => Err(format!(
                "{} = {} is not supported",
                self.full(key),
                shown(v)
            )),
        }
    }
}

fn shown(v: &MetaValue) -> String {
    match v {
        MetaValue::Uint(v) => v.to_string(),
        MetaValue::Int(v) => v.to_string(),
        MetaValue::Float(v) => v.to_string(),
        MetaValue::Bool(v) => v.to_string(),
        MetaValue::Str(s) => excerpt(s),
        MetaValue::Array(a) => format!("an array of {}", a.count),
    }
}

fn in_range(key: &str, v: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(format!(
            "{key} = {v} (must be {} to {})",
            range.start(),
            range.end()
        ))
    }
}

fn finite(key: &str, v: Option<f64>, positive: bool) -> Result<(), String> {
    match v {
        Some(v) if !v.is_finite() || (positive && v <= 0.0) || v < 0.0 => Err(format!(
            "{key} = {v} (must be a finite{} number)",
            if positive {
                " positive"
            } else {
                ", non-negative"
            }
        )),
        _ => Ok(()),
    }
}

impl Hparams {
    /// Reads and checks the family's hyperparameters.
    pub fn read(header: &GgufHeader, spec: &'static ArchSpec) -> Result<Self, String> {
        let k = Keys { header, spec };
        let n_layer = k.required_u32("block_count", 1..=MAX_LAYERS)?;
        let n_embd = k.required_u32("embedding_length", 1..=MAX_EMBEDDING)?;
        k.required_u32("context_length", 1..=MAX_CONTEXT)?;
        let n_head = k
            .per_layer("attention.head_count", n_layer)?
            .ok_or_else(|| format!("{} is missing", k.full("attention.head_count")))?;
        let n_head = in_range(&k.full("attention.head_count"), n_head, 1..=MAX_HEADS)?;
        let n_head_kv = k
            .per_layer("attention.head_count_kv", n_layer)?
            .unwrap_or(n_head);
        let n_head_kv = in_range(&k.full("attention.head_count_kv"), n_head_kv, 1..=n_head)?;
        if n_head % n_head_kv != 0 {
            return Err(format!(
                "{n_head} attention heads are not a multiple of {n_head_kv} key/value heads"
            ));
        }
        let n_ff = k
            .per_layer("feed_forward_length", n_layer)?
            .ok_or_else(|| format!("{} is missing", k.full("feed_forward_length")))?;
        let n_ff = in_range(&k.full("feed_forward_length"), n_ff, 1..=MAX_FEED_FORWARD)?;
        let head_k = k.u32("attention.key_length")?.unwrap_or(n_embd / n_head);
        let head_v = k.u32("attention.value_length")?.unwrap_or(n_embd / n_head);
        if head_k != head_v {
            return Err(format!(
                "key head size {head_k} differs from value head size {head_v}"
            ));
        }
        let head_dim = in_range("the attention head size", head_k, 2..=MAX_HEAD_DIM)?;
        if head_dim % 2 != 0 {
            return Err(format!("the attention head size {head_dim} is odd"));
        }
        for key in [
            "attention.key_length_swa",
            "attention.value_length_swa",
            "rope.dimension_count_swa",
        ] {
            if let Some(v) = k.u32(key)? {
                if v != head_dim {
                    return Err(format!(
                        "{} = {v} differs from the head size {head_dim}",
                        k.full(key)
                    ));
                }
            }
        }
        let n_rot = k.u32("rope.dimension_count")?.unwrap_or(head_dim);
        if n_rot == 0
            || n_rot > head_dim
            || n_rot % 2 != 0
            || (spec.name == "llama" && n_rot != head_dim)
        {
            return Err(format!(
                "{} = {n_rot} does not fit the head size {head_dim}",
                k.full("rope.dimension_count")
            ));
        }
        let eps_key = k.full("attention.layer_norm_rms_epsilon");
        match k.f32("attention.layer_norm_rms_epsilon")? {
            Some(eps) if eps.is_finite() && eps > 0.0 && eps <= 1.0 => {}
            Some(eps) => return Err(format!("{eps_key} = {eps} (must be in (0, 1])")),
            None => return Err(format!("{eps_key} is missing")),
        }
        let scaling = k.string("rope.scaling.type")?;
        if let Some(s) = scaling {
            if !["none", "linear", "yarn", "longrope"].contains(&s) {
                return Err(format!(
                    "{} = {} is not a rope scaling llama.cpp knows",
                    k.full("rope.scaling.type"),
                    excerpt(s)
                ));
            }
        }
        finite(&k.full("rope.freq_base"), k.f32("rope.freq_base")?, true)?;
        finite(
            &k.full("rope.freq_base_swa"),
            k.f32("rope.freq_base_swa")?,
            true,
        )?;
        finite(
            &k.full("rope.scaling.factor"),
            k.f32("rope.scaling.factor")?,
            false,
        )?;
        finite(
            &k.full("rope.scaling.attn_factor"),
            k.f32("rope.scaling.attn_factor")?,
            false,
        )?;
        k.u32("rope.scaling.original_context_length")?;
        k.absent_or_zero("nextn_predict_layers")?;
        k.absent_or_zero("expert_shared_feed_forward_length")?;
        if let Some(causal) = header.get(&k.full("attention.causal")) {
            if causal != &MetaValue::Bool(true) {
                return Err(format!(
                    "{} = {} (only causal models generate text)",
                    k.full("attention.causal"),
                    shown(causal)
                ));
            }
        }
        if header.get(&k.full("pooling_type")).is_some() {
            return Err(format!(
                "{} is set: embedding models are not supported",
                k.full("pooling_type")
            ));
        }
        if let Some(out) = k.u32("embedding_length_out")? {
            if out != n_embd {
                return Err(format!(
                    "{} = {out} differs from the embedding length {n_embd}",
                    k.full("embedding_length_out")
                ));
            }
        }
        let n_expert = k.u32("expert_count")?.unwrap_or(0);
        if n_expert == 0 || spec.name != "llama" {
            if n_expert != 0 {
                return Err(format!(
                    "{} = {n_expert}: this family has no experts",
                    k.full("expert_count")
                ));
            }
            k.absent_or_zero("expert_used_count")?;
        } else {
            in_range(&k.full("expert_count"), n_expert, 1..=MAX_EXPERTS)?;
            let used = k
                .per_layer("expert_used_count", n_layer)?
                .ok_or_else(|| format!("{} is missing", k.full("expert_used_count")))?;
            in_range(&k.full("expert_used_count"), used, 1..=n_expert)?;
        }
        k.absent_or_zero("expert_group_count")?;
        k.absent_or_zero("expert_group_used_count")?;
        if let Some((window_key, _)) = spec.sliding_window {
            k.u32(window_key)?;
            let pattern_key = k.full("attention.sliding_window_pattern");
            match header.meta.get(&pattern_key) {
                None => {}
                Some(m) => match &m.value {
                    MetaValue::Uint(p) if m.value_type == value_type::U32 && *p >= 1 => {}
                    MetaValue::Array(a)
                        if matches!(
                            a.item_type,
                            value_type::BOOL | value_type::U32 | value_type::I32
                        ) && a.count == n_layer => {}
                    other => {
                        return Err(format!(
                            "{pattern_key} = {} (a period of 1 or more, or one flag per layer)",
                            shown(other)
                        ))
                    }
                },
            }
        }
        if let Some(key) = spec.final_logit_softcap_key {
            finite(&k.full(key), k.f32(key)?, false)?;
        }
        finite(
            &k.full("attn_logit_softcapping"),
            k.f32("attn_logit_softcapping")?,
            false,
        )?;
        for (what, value) in [("heads", n_head), ("key/value heads", n_head_kv)] {
            if value * head_dim >= 1 << 31 {
                return Err(format!("{value} {what} of size {head_dim} are too many"));
            }
        }
        Ok(Self {
            n_layer,
            n_embd,
            n_head,
            n_head_kv,
            n_ff,
            head_dim,
            n_rot,
            n_expert,
            longrope: scaling == Some("longrope"),
        })
    }
}
