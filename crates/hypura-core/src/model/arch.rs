//! One spec per architecture family hypura tiers: the facts about its llama.cpp graph that
//! hypura relies on, kept here and nowhere else. Adding a family is adding a spec (and a test).

use super::gguf::GgufHeader;

/// What hypura knows about one architecture family.
#[derive(Debug)]
pub(crate) struct ArchSpec {
    /// `general.architecture` value.
    pub name: &'static str,
    /// The graph node holding the final hidden state, right before the LM head
    /// (`mul_mat(output, result_norm)`): hypura stops the graph there when it computes the
    /// head itself.
    pub head_input_node: &'static str,
    /// Metadata key (after `{arch}.`) of the final logit soft-capping, if the family has it.
    pub final_logit_softcap_key: Option<&'static str>,
    /// Key (after `{arch}.`) of the sliding-window size for families with sliding-window
    /// layers, and how many layers make one period of the pattern (the last layer of each
    /// period attends globally), unless the file says otherwise.
    pub sliding_window: Option<(&'static str, u32)>,
    /// Names (prefixes) of the KV-cache tensors llama.cpp reads in the graph.
    pub kv_cache_tensor_prefixes: &'static [&'static str],
}

/// The families hypura has verified, and that the test suite runs.
pub(crate) const FAMILIES: &[ArchSpec] = &[
    ArchSpec {
        name: "llama",
        head_input_node: "result_norm",
        final_logit_softcap_key: None,
        sliding_window: None,
        kv_cache_tensor_prefixes: &["cache_k_l", "cache_v_l"],
    },
    ArchSpec {
        name: "gemma3",
        head_input_node: "result_norm",
        final_logit_softcap_key: Some("final_logit_softcapping"),
        sliding_window: Some(("attention.sliding_window", 6)),
        kv_cache_tensor_prefixes: &["cache_k_l", "cache_v_l"],
    },
];

/// Bytes of one KV-cache element (llama.cpp's default cache type is F16).
const KV_ELEMENT_BYTES: u64 = 2;
/// llama.cpp pads cache sizes (cells) to this.
const KV_CELL_PADDING: u64 = 256;

impl ArchSpec {
    /// The spec of `arch`, if hypura supports it.
    pub fn find(arch: &str) -> Option<&'static ArchSpec> {
        FAMILIES.iter().find(|f| f.name == arch)
    }

    /// The supported families, comma-separated.
    pub fn supported() -> String {
        FAMILIES
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `{arch}.{key}`.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.name)
    }

    /// Final logit soft-capping (0 = none).
    pub fn final_logit_softcap(&self, header: &GgufHeader) -> f32 {
        self.final_logit_softcap_key
            .and_then(|k| header.get_float(&self.key(k)))
            .unwrap_or(0.0) as f32
    }

    /// Bytes of the KV cache llama.cpp allocates for `n_ctx` positions over `n_seq`
    /// sequences with micro-batches of `n_ubatch` (F16 keys and values; sliding-window layers
    /// hold only their window). The header must have passed validation.
    pub fn kv_cache_bytes(
        &self,
        header: &GgufHeader,
        n_ctx: u32,
        n_seq: u32,
        n_ubatch: u32,
    ) -> u64 {
        let get = |k: &str| header.get_int(&self.key(k)).unwrap_or(0).max(0) as u64;
        let n_layer = get("block_count");
        let n_embd = get("embedding_length");
        let n_head = get("attention.head_count").max(1);
        let n_head_kv = header
            .get_int(&self.key("attention.head_count_kv"))
            .map_or(n_head, |v| v.max(0) as u64);
        let head_k = header
            .get_int(&self.key("attention.key_length"))
            .map_or(n_embd / n_head, |v| v.max(0) as u64);
        let head_v = header
            .get_int(&self.key("attention.value_length"))
            .map_or(n_embd / n_head, |v| v.max(0) as u64);
        let n_seq = u64::from(n_seq.max(1));
        // As llama_context pads the context: to 256 cells, then per sequence.
        let n_ctx = u64::from(n_ctx.max(1)).next_multiple_of(KV_CELL_PADDING);
        let full_cells = if n_seq == 1 {
            n_ctx
        } else {
            (n_ctx / n_seq).next_multiple_of(KV_CELL_PADDING) * n_seq
        };
        let window = self
            .sliding_window
            .and_then(|(key, period)| Some((header.get_int(&self.key(key))?, period)))
            .filter(|(w, _)| *w > 0);
        let per_cell_per_layer = (head_k + head_v) * n_head_kv * KV_ELEMENT_BYTES;
        let (swa_layers, swa_cells) = match window {
            Some((w, period)) => {
                let period = u64::from(period.max(1));
                let swa = n_layer - n_layer / period;
                // One window per sequence's stream, plus a micro-batch.
                let per_stream = (w as u64 + u64::from(n_ubatch))
                    .min(full_cells / n_seq)
                    .next_multiple_of(KV_CELL_PADDING);
                let cells = per_stream * n_seq;
                (swa, cells)
            }
            None => (0, 0),
        };
        ((n_layer - swa_layers) * full_cells + swa_layers * swa_cells) * per_cell_per_layer
    }
}

/// A dimension of a tensor, in terms of the hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dim {
    /// Embedding length.
    Embd,
    /// Vocabulary size.
    Vocab,
    /// Feed-forward length.
    Ff,
    /// Query projection: head size × heads.
    Q,
    /// Key or value projection: head size × key/value heads.
    Kv,
    /// Fused query, key and value projections.
    Qkv,
    /// One head's size.
    HeadSize,
    /// Half the rotary dimensions.
    RotHalf,
    /// Experts.
    NExperts,
}

/// What a tensor is used for by the compute graph, which decides the types it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TensorKind {
    /// Looked up by row (`get_rows`).
    Embedding,
    /// Multiplied with activations (`mul_mat`, `mul_mat_id`).
    Matrix,
    /// Added or multiplied element-wise (norm weights, biases, rope factors): F32 only.
    Vector,
}

/// When a tensor must, may or must not be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Always present.
    Required,
    /// May be present.
    Optional,
    /// Present unless the fused `attn_qkv` is.
    UnlessFused,
    /// Present in dense models.
    Dense,
    /// Present in mixture-of-experts models.
    Experts,
    /// May be present in mixture-of-experts models.
    ExpertsOptional,
    /// May be present when rope scaling is `longrope` (else must not).
    Longrope,
    /// May be present when rope scaling is not `longrope`.
    NotLongrope,
}

/// One tensor the family's graph reads: its name (`{}` is the layer), shape, kind and need.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TensorRule {
    pub name: &'static str,
    pub dims: &'static [Dim],
    pub kind: TensorKind,
    pub need: Need,
}

const fn rule(
    name: &'static str,
    dims: &'static [Dim],
    kind: TensorKind,
    need: Need,
) -> TensorRule {
    TensorRule {
        name,
        dims,
        kind,
        need,
    }
}

use Dim::*;
use Need::*;
use TensorKind::*;

/// Tensors outside the layers, common to the families here.
pub(crate) const GLOBAL_TENSORS: &[TensorRule] = &[
    rule("token_embd.weight", &[Embd, Vocab], Embedding, Required),
    rule("output_norm.weight", &[Embd], Vector, Required),
    rule("output.weight", &[Embd, Vocab], Matrix, Optional),
    rule("rope_freqs.weight", &[RotHalf], Vector, NotLongrope),
    rule("rope_factors_long.weight", &[RotHalf], Vector, Longrope),
    rule("rope_factors_short.weight", &[RotHalf], Vector, Longrope),
];

/// Attention of a layer, as llama.cpp's `create_tensor_qkv` reads it.
const ATTENTION: &[TensorRule] = &[
    rule("blk.{}.attn_norm.weight", &[Embd], Vector, Required),
    rule("blk.{}.attn_qkv.weight", &[Embd, Qkv], Matrix, Optional),
    rule("blk.{}.attn_qkv.bias", &[Qkv], Vector, Optional),
    rule("blk.{}.attn_q.weight", &[Embd, Q], Matrix, UnlessFused),
    rule("blk.{}.attn_k.weight", &[Embd, Kv], Matrix, UnlessFused),
    rule("blk.{}.attn_v.weight", &[Embd, Kv], Matrix, UnlessFused),
    rule("blk.{}.attn_q.bias", &[Q], Vector, Optional),
    rule("blk.{}.attn_k.bias", &[Kv], Vector, Optional),
    rule("blk.{}.attn_v.bias", &[Kv], Vector, Optional),
    rule("blk.{}.attn_output.weight", &[Q, Embd], Matrix, Required),
    rule("blk.{}.ffn_norm.weight", &[Embd], Vector, Required),
];

/// llama's layer beyond attention: a dense FFN or experts.
const LLAMA_LAYER: &[TensorRule] = &[
    rule("blk.{}.attn_output.bias", &[Embd], Vector, Optional),
    rule("blk.{}.ffn_gate.weight", &[Embd, Ff], Matrix, Dense),
    rule("blk.{}.ffn_up.weight", &[Embd, Ff], Matrix, Dense),
    rule("blk.{}.ffn_down.weight", &[Ff, Embd], Matrix, Dense),
    rule("blk.{}.ffn_gate.bias", &[Ff], Vector, Optional),
    rule("blk.{}.ffn_up.bias", &[Ff], Vector, Optional),
    rule("blk.{}.ffn_down.bias", &[Embd], Vector, Optional),
    rule(
        "blk.{}.ffn_gate_inp.weight",
        &[Embd, NExperts],
        Matrix,
        Experts,
    ),
    rule(
        "blk.{}.ffn_gate_exps.weight",
        &[Embd, Ff, NExperts],
        Matrix,
        ExpertsOptional,
    ),
    rule(
        "blk.{}.ffn_up_exps.weight",
        &[Embd, Ff, NExperts],
        Matrix,
        Experts,
    ),
    rule(
        "blk.{}.ffn_down_exps.weight",
        &[Ff, Embd, NExperts],
        Matrix,
        Experts,
    ),
];

/// Gemma 3's layer beyond attention: QK-norms, post-norms, a dense FFN.
const GEMMA3_LAYER: &[TensorRule] = &[
    rule("blk.{}.attn_q_norm.weight", &[HeadSize], Vector, Required),
    rule("blk.{}.attn_k_norm.weight", &[HeadSize], Vector, Required),
    rule(
        "blk.{}.post_attention_norm.weight",
        &[Embd],
        Vector,
        Required,
    ),
    rule("blk.{}.ffn_gate.weight", &[Embd, Ff], Matrix, Required),
    rule("blk.{}.ffn_up.weight", &[Embd, Ff], Matrix, Required),
    rule("blk.{}.ffn_down.weight", &[Ff, Embd], Matrix, Required),
    rule("blk.{}.post_ffw_norm.weight", &[Embd], Vector, Required),
];

impl ArchSpec {
    /// The tensors of one layer.
    pub fn layer_tensors(&self) -> impl Iterator<Item = &'static TensorRule> {
        let rest: &'static [TensorRule] = match self.name {
            "gemma3" => GEMMA3_LAYER,
            _ => LLAMA_LAYER,
        };
        ATTENTION.iter().chain(rest)
    }
}
