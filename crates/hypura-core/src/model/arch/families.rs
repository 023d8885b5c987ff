//! The families hypura tiers, as data: each one's tensors (as the pinned llama.cpp's
//! `load_arch_tensors` creates them), keys, head and attention facts. Shared pieces (the
//! global tensors, attention, a dense FFN, experts) are tables of their own.

use super::rules::{rule, Cond, Dim::*, Hparams, Need::*, TensorKind::*, TensorRule};
use super::{
    ArchSpec, Example, Experts, Field, Hybrid, KeyRule, Latent, Nextn, SlidingWindow, SwaPattern,
};

/// Tensors outside the layers, common to the families here.
const GLOBALS: &[TensorRule] = &[
    rule("token_embd.weight", &[Embd, Vocab], Embedding, Required),
    rule("output_norm.weight", &[Embd], Vector, Required),
    rule("output.weight", &[Embd, Vocab], Matrix, Optional),
];

/// Tensors outside the layers of a family whose head is always the embedding.
const GLOBALS_TIED: &[TensorRule] = &[
    rule("token_embd.weight", &[Embd, Vocab], Embedding, Required),
    rule("output_norm.weight", &[Embd], Vector, Required),
];

/// Tensors outside the layers of a family with its own head always.
const GLOBALS_UNTIED: &[TensorRule] = &[
    rule("token_embd.weight", &[Embd, Vocab], Embedding, Required),
    rule("output_norm.weight", &[Embd], Vector, Required),
    rule("output.weight", &[Embd, Vocab], Matrix, Required),
];

/// Qwen 2's optional head bias (added after the head's product).
const OUTPUT_BIAS: &[TensorRule] = &[rule("output.bias", &[Vocab], Vector, Optional)];

/// Phi 3's rope factors (either, both or none, whatever the rope scaling).
const PHI3_ROPE_FACTORS: &[TensorRule] = &[
    rule("rope_factors_long.weight", &[RotHalf], Vector, Optional),
    rule("rope_factors_short.weight", &[RotHalf], Vector, Optional),
];

/// Rope factor tensors (llama.cpp creates them for every family using `rope_freqs`).
const ROPE_FACTORS: &[TensorRule] = &[
    rule("rope_freqs.weight", &[RotHalf], Vector, NotLongrope),
    rule("rope_factors_long.weight", &[RotHalf], Vector, Longrope),
    rule("rope_factors_short.weight", &[RotHalf], Vector, Longrope),
];

/// Attention projections as llama.cpp's `create_tensor_qkv` reads them.
const QKV: &[TensorRule] = &[
    rule("blk.{}.attn_qkv.weight", &[Embd, Qkv], Matrix, Optional),
    rule("blk.{}.attn_qkv.bias", &[Qkv], Vector, Optional),
    rule("blk.{}.attn_q.weight", &[Embd, Q], Matrix, UnlessFused),
    rule("blk.{}.attn_k.weight", &[Embd, K], Matrix, UnlessFused),
    rule("blk.{}.attn_v.weight", &[Embd, V], Matrix, UnlessFused),
    rule("blk.{}.attn_q.bias", &[Q], Vector, Optional),
    rule("blk.{}.attn_k.bias", &[K], Vector, Optional),
    rule("blk.{}.attn_v.bias", &[V], Vector, Optional),
];

/// Qwen 2's attention: `n_embd`-wide query and output, with the biases real checkpoints have.
const QWEN2_ATTENTION: &[TensorRule] = &[
    rule("blk.{}.attn_qkv.weight", &[Embd, Qkv], Matrix, Optional),
    rule("blk.{}.attn_qkv.bias", &[Qkv], Vector, Optional),
    rule("blk.{}.attn_q.weight", &[Embd, Embd], Matrix, UnlessFused),
    rule("blk.{}.attn_k.weight", &[Embd, K], Matrix, UnlessFused),
    rule("blk.{}.attn_v.weight", &[Embd, V], Matrix, UnlessFused),
    rule("blk.{}.attn_q.bias", &[Embd], Vector, Typical),
    rule("blk.{}.attn_k.bias", &[K], Vector, Typical),
    rule("blk.{}.attn_v.bias", &[V], Vector, Typical),
    rule("blk.{}.attn_output.weight", &[Embd, Embd], Matrix, Required),
];

/// Attention projections whose query and output are `n_embd` wide (Qwen 2, OLMo 2, Phi 3).
const QKV_EMBD: &[TensorRule] = &[
    rule("blk.{}.attn_qkv.weight", &[Embd, Qkv], Matrix, Optional),
    rule("blk.{}.attn_qkv.bias", &[Qkv], Vector, Optional),
    rule("blk.{}.attn_q.weight", &[Embd, Embd], Matrix, UnlessFused),
    rule("blk.{}.attn_k.weight", &[Embd, K], Matrix, UnlessFused),
    rule("blk.{}.attn_v.weight", &[Embd, V], Matrix, UnlessFused),
    rule("blk.{}.attn_q.bias", &[Embd], Vector, Optional),
    rule("blk.{}.attn_k.bias", &[K], Vector, Optional),
    rule("blk.{}.attn_v.bias", &[V], Vector, Optional),
    rule("blk.{}.attn_output.weight", &[Embd, Embd], Matrix, Required),
];

/// The attention output.
const ATTN_OUTPUT: &[TensorRule] = &[rule(
    "blk.{}.attn_output.weight",
    &[AttnOut, Embd],
    Matrix,
    Required,
)];

/// Pre-norms of attention and FFN.
const PRE_NORMS: &[TensorRule] = &[
    rule("blk.{}.attn_norm.weight", &[Embd], Vector, Required),
    rule("blk.{}.ffn_norm.weight", &[Embd], Vector, Required),
];

/// OLMo 2's RMS norms over the whole query and key.
const OLMO2_QK_NORM: &[TensorRule] = &[
    rule("blk.{}.attn_q_norm.weight", &[Embd], Vector, Required),
    rule("blk.{}.attn_k_norm.weight", &[K], Vector, Required),
];

/// Phi 3's FFN: gate and up fused.
const PHI3_FFN: &[TensorRule] = &[
    rule("blk.{}.ffn_up.weight", &[Embd, FfFused], Matrix, Required),
    rule("blk.{}.ffn_down.weight", &[Ff, Embd], Matrix, Required),
];

/// Per-head RMS norms of queries and keys.
const QK_NORM: &[TensorRule] = &[
    rule("blk.{}.attn_q_norm.weight", &[HeadK], Vector, Required),
    rule("blk.{}.attn_k_norm.weight", &[HeadK], Vector, Required),
];

/// A gated dense FFN.
const FFN: &[TensorRule] = &[
    rule("blk.{}.ffn_gate.weight", &[Embd, Ff], Matrix, DenseLayer),
    rule("blk.{}.ffn_up.weight", &[Embd, Ff], Matrix, DenseLayer),
    rule("blk.{}.ffn_down.weight", &[Ff, Embd], Matrix, DenseLayer),
];

/// An MoE layer's router.
const ROUTER: &[TensorRule] = &[rule(
    "blk.{}.ffn_gate_inp.weight",
    &[Embd, NExperts],
    Router,
    MoeLayer,
)];

/// An MoE layer's gated experts (all three projections).
const EXPERTS: &[TensorRule] = &[
    rule(
        "blk.{}.ffn_gate_exps.weight",
        &[Embd, FfExp, NExperts],
        Matrix,
        MoeLayer,
    ),
    rule(
        "blk.{}.ffn_up_exps.weight",
        &[Embd, FfExp, NExperts],
        Matrix,
        MoeLayer,
    ),
    rule(
        "blk.{}.ffn_down_exps.weight",
        &[FfExp, Embd, NExperts],
        Matrix,
        MoeLayer,
    ),
];

/// Shared experts, in the MoE layers of a model that has them.
const SHARED_EXPERTS: &[TensorRule] = &[
    rule(
        "blk.{}.ffn_gate_shexp.weight",
        &[Embd, FfShexp],
        Matrix,
        SharedExperts,
    ),
    rule(
        "blk.{}.ffn_up_shexp.weight",
        &[Embd, FfShexp],
        Matrix,
        SharedExperts,
    ),
    rule(
        "blk.{}.ffn_down_shexp.weight",
        &[FfShexp, Embd],
        Matrix,
        SharedExperts,
    ),
];

/// [`QKV`] with the query/key/value biases real checkpoints have (gpt-oss, GLM-4 MoE).
const QKV_TYPICAL_BIASES: &[TensorRule] = &[
    rule("blk.{}.attn_qkv.weight", &[Embd, Qkv], Matrix, Optional),
    rule("blk.{}.attn_qkv.bias", &[Qkv], Vector, Optional),
    rule("blk.{}.attn_q.weight", &[Embd, Q], Matrix, UnlessFused),
    rule("blk.{}.attn_k.weight", &[Embd, K], Matrix, UnlessFused),
    rule("blk.{}.attn_v.weight", &[Embd, V], Matrix, UnlessFused),
    rule("blk.{}.attn_q.bias", &[Q], Vector, Typical),
    rule("blk.{}.attn_k.bias", &[K], Vector, Typical),
    rule("blk.{}.attn_v.bias", &[V], Vector, Typical),
];

/// A pre-attention norm, and a norm after attention that also serves the FFN.
const NORM_AND_POST_ATTENTION_NORM: &[TensorRule] = &[
    rule("blk.{}.attn_norm.weight", &[Embd], Vector, Required),
    rule(
        "blk.{}.post_attention_norm.weight",
        &[Embd],
        Vector,
        Required,
    ),
];

/// Llama's optional biases.
const LLAMA_BIASES: &[TensorRule] = &[
    rule("blk.{}.attn_output.bias", &[Embd], Vector, Optional),
    rule("blk.{}.ffn_gate.bias", &[Ff], Vector, Optional),
    rule("blk.{}.ffn_up.bias", &[Ff], Vector, Optional),
    rule("blk.{}.ffn_down.bias", &[Embd], Vector, Optional),
];

/// Llama's layer.
const LLAMA_LAYER: &[&[TensorRule]] = &[
    QKV,
    ATTN_OUTPUT,
    PRE_NORMS,
    LLAMA_BIASES,
    FFN,
    LLAMA_EXPERTS,
];

/// Llama's (Mixtral's) experts.
const LLAMA_EXPERTS: &[TensorRule] = &[
    rule(
        "blk.{}.ffn_gate_inp.weight",
        &[Embd, NExperts],
        Router,
        MoeLayer,
    ),
    // Optional to llama.cpp; Mixtral has it (the generator writes it).
    rule(
        "blk.{}.ffn_gate_exps.weight",
        &[Embd, FfExp, NExperts],
        Matrix,
        When(Cond::MoeLayer, &Typical),
    ),
    rule(
        "blk.{}.ffn_up_exps.weight",
        &[Embd, FfExp, NExperts],
        Matrix,
        MoeLayer,
    ),
    rule(
        "blk.{}.ffn_down_exps.weight",
        &[FfExp, Embd, NExperts],
        Matrix,
        MoeLayer,
    ),
];

/// Gemma's norms after attention and after the FFN.
const GEMMA_POST_NORMS: &[TensorRule] = &[
    rule(
        "blk.{}.post_attention_norm.weight",
        &[Embd],
        Vector,
        Required,
    ),
    rule("blk.{}.post_ffw_norm.weight", &[Embd], Vector, Required),
];

/// gpt-oss's attention output (biased) and sinks.
const GPT_OSS_ATTENTION: &[TensorRule] = &[
    rule(
        "blk.{}.attn_output.weight",
        &[AttnOut, Embd],
        Matrix,
        Required,
    ),
    rule("blk.{}.attn_output.bias", &[Embd], Vector, Required),
    rule("blk.{}.attn_sinks.weight", &[Heads], Vector, Required),
];

/// gpt-oss's router bias.
const GPT_OSS_ROUTER_BIAS: &[TensorRule] = &[rule(
    "blk.{}.ffn_gate_inp.bias",
    &[NExperts],
    Vector,
    MoeLayer,
)];

/// gpt-oss's expert biases.
const GPT_OSS_EXPERT_BIASES: &[TensorRule] = &[
    rule(
        "blk.{}.ffn_gate_exps.bias",
        &[FfExp, NExperts],
        Vector,
        MoeLayer,
    ),
    rule(
        "blk.{}.ffn_up_exps.bias",
        &[FfExp, NExperts],
        Vector,
        MoeLayer,
    ),
    rule(
        "blk.{}.ffn_down_exps.bias",
        &[Embd, NExperts],
        Vector,
        MoeLayer,
    ),
];

/// gpt-oss's layer: biased attention with sinks, biased experts.
const GPT_OSS_LAYER: &[&[TensorRule]] = &[
    NORM_AND_POST_ATTENTION_NORM,
    QKV_TYPICAL_BIASES,
    GPT_OSS_ATTENTION,
    ROUTER,
    GPT_OSS_ROUTER_BIAS,
    EXPERTS,
    GPT_OSS_EXPERT_BIASES,
];

/// GLM-4 MoE's attention output and optional QK-norms.
const GLM4MOE_ATTENTION: &[TensorRule] = &[
    rule(
        "blk.{}.attn_output.weight",
        &[AttnOut, Embd],
        Matrix,
        Required,
    ),
    rule("blk.{}.attn_q_norm.weight", &[HeadK], Vector, Optional),
    rule("blk.{}.attn_k_norm.weight", &[HeadK], Vector, Optional),
];

/// GLM-4 MoE's expert-selection bias.
const GLM4MOE_SELECTION_BIAS: &[TensorRule] = &[rule(
    "blk.{}.exp_probs_b.bias",
    &[NExperts],
    Vector,
    MoeLayer,
)];

/// GLM-4 MoE's layer: biased attention, optional QK-norms, leading dense layers, then
/// sigmoid-gated experts with a selection bias and shared experts.
const GLM4MOE_LAYER: &[&[TensorRule]] = &[
    NORM_AND_POST_ATTENTION_NORM,
    QKV_TYPICAL_BIASES,
    GLM4MOE_ATTENTION,
    FFN,
    ROUTER,
    GLM4MOE_SELECTION_BIAS,
    EXPERTS,
    SHARED_EXPERTS,
];

/// Gemma 4's tensors outside the layers: an optional head, the global layers' rope factors,
/// and the per-layer input embedding with its projection from the embedding.
const GEMMA4_GLOBALS: &[TensorRule] = &[
    rule("token_embd.weight", &[Embd, Vocab], Embedding, Required),
    rule("output_norm.weight", &[Embd], Vector, Required),
    rule("output.weight", &[Embd, Vocab], Matrix, Optional),
    rule(
        "rope_freqs.weight",
        &[HeadKHalf],
        Vector,
        When(Cond::FullAttention, &Required),
    ),
    rule(
        "per_layer_token_embd.weight",
        &[EmbdPerLayerAll, Vocab],
        Embedding,
        When(Cond::PerLayerInput, &Required),
    ),
    rule(
        "per_layer_model_proj.weight",
        &[Embd, EmbdPerLayerAll],
        Matrix,
        When(Cond::PerLayerInput, &Required),
    ),
    rule(
        "per_layer_proj_norm.weight",
        &[EmbdPerLayer],
        Vector,
        When(Cond::PerLayerInput, &Required),
    ),
];

/// Gemma 4's layer, with its dense FFN (shapes per layer: sliding-window layers have their
/// own head size, and a file may give each layer its own key/value heads and FFN width).
/// Layers reusing an earlier layer's KV cache may leave out their key projection; the value
/// projection is optional everywhere (absent: the keys serve as values).
const GEMMA4_LAYER: &[TensorRule] = &[
    rule("blk.{}.attn_norm.weight", &[Embd], Vector, Required),
    rule("blk.{}.attn_q.weight", &[Embd, Q], Matrix, Required),
    rule(
        "blk.{}.attn_k.weight",
        &[Embd, K],
        Matrix,
        Either(Cond::OwnKv, &Required, &Optional),
    ),
    rule(
        "blk.{}.attn_v.weight",
        &[Embd, V],
        Matrix,
        Either(Cond::OwnKv, &Typical, &Optional),
    ),
    rule(
        "blk.{}.attn_output.weight",
        &[AttnOut, Embd],
        Matrix,
        Required,
    ),
    rule("blk.{}.attn_q_norm.weight", &[HeadK], Vector, Required),
    rule(
        "blk.{}.attn_k_norm.weight",
        &[HeadK],
        Vector,
        Either(Cond::OwnKv, &Required, &Optional),
    ),
    rule(
        "blk.{}.post_attention_norm.weight",
        &[Embd],
        Vector,
        Required,
    ),
    rule("blk.{}.layer_output_scale.weight", &[One], Vector, Typical),
    rule("blk.{}.ffn_norm.weight", &[Embd], Vector, Required),
    rule("blk.{}.ffn_gate.weight", &[Embd, Ff], Matrix, Required),
    rule("blk.{}.ffn_up.weight", &[Embd, Ff], Matrix, Required),
    rule("blk.{}.ffn_down.weight", &[Ff, Embd], Matrix, Required),
    rule("blk.{}.post_ffw_norm.weight", &[Embd], Vector, Required),
    rule(
        "blk.{}.inp_gate.weight",
        &[Embd, EmbdPerLayer],
        Matrix,
        When(Cond::PerLayerInput, &Required),
    ),
    rule(
        "blk.{}.proj.weight",
        &[EmbdPerLayer, Embd],
        Matrix,
        When(Cond::PerLayerInput, &Required),
    ),
    rule(
        "blk.{}.post_norm.weight",
        &[Embd],
        Vector,
        When(Cond::PerLayerInput, &Required),
    ),
];

const fn twice_ff_exp(hp: &Hparams) -> u64 {
    2 * hp.n_ff_exp
}

/// Gemma 4's experts (26B A4B): in each layer beside the dense FFN, which then serves as
/// the shared expert, a router scaled by its own vector, their own pre- and post-norms,
/// and gate and up projections fused or apart.
const GEMMA4_EXPERTS: &[TensorRule] = &[
    rule(
        "blk.{}.ffn_gate_inp.weight",
        &[Embd, NExperts],
        Router,
        MoeLayer,
    ),
    rule("blk.{}.ffn_gate_inp.scale", &[Embd], Vector, MoeLayer),
    rule("blk.{}.pre_ffw_norm_2.weight", &[Embd], Vector, MoeLayer),
    rule("blk.{}.post_ffw_norm_1.weight", &[Embd], Vector, MoeLayer),
    rule("blk.{}.post_ffw_norm_2.weight", &[Embd], Vector, MoeLayer),
    rule(
        "blk.{}.ffn_gate_up_exps.weight",
        &[Embd, Of(twice_ff_exp), NExperts],
        Matrix,
        MoeLayerOptional,
    ),
    rule(
        "blk.{}.ffn_gate_exps.weight",
        &[Embd, FfExp, NExperts],
        Matrix,
        When(
            Cond::MoeLayer,
            &UnlessPresent("blk.{}.ffn_gate_up_exps.weight"),
        ),
    ),
    rule(
        "blk.{}.ffn_up_exps.weight",
        &[Embd, FfExp, NExperts],
        Matrix,
        When(
            Cond::MoeLayer,
            &UnlessPresent("blk.{}.ffn_gate_up_exps.weight"),
        ),
    ),
    rule(
        "blk.{}.ffn_down_exps.weight",
        &[FfExp, Embd, NExperts],
        Matrix,
        MoeLayer,
    ),
];

/// Gemma 4's keys: sliding-window layers' own head size and rotary dimensions, the layers
/// reusing earlier layers' KV cache, the per-layer input embedding's width.
const GEMMA4_KEYS: &[KeyRule] = &[
    KeyRule {
        key: "attention.key_length_swa",
        sets: Field::HeadKSwa,
        required: true,
        min: 1,
        unread_if: None,
    },
    KeyRule {
        key: "attention.value_length_swa",
        sets: Field::HeadVSwa,
        required: true,
        min: 1,
        unread_if: None,
    },
    KeyRule {
        key: "rope.dimension_count_swa",
        sets: Field::NRotSwa,
        required: false,
        min: 1,
        unread_if: None,
    },
    KeyRule {
        key: "attention.shared_kv_layers",
        sets: Field::SharedKvLayers,
        required: false,
        min: 0,
        unread_if: None,
    },
    KeyRule {
        key: "embedding_length_per_layer_input",
        sets: Field::EmbdPerLayer,
        required: true,
        min: 0,
        unread_if: None,
    },
    KeyRule {
        key: "expert_feed_forward_length",
        sets: Field::FfExp,
        required: false,
        min: 0,
        unread_if: None,
    },
];

const fn twice_embd(hp: &Hparams) -> u64 {
    2 * hp.n_embd
}

/// What a next-token-prediction layer has beyond a trunk layer (GLM-4.5, DeepSeek 3,
/// Qwen 3.5): the projection of the embedding and hidden state, their norms, and optionally
/// its own embedding and head.
const NEXTN_TENSORS: &[TensorRule] = &[
    rule(
        "blk.{}.nextn.eh_proj.weight",
        &[Of(twice_embd), Embd],
        Matrix,
        Required,
    ),
    rule("blk.{}.nextn.enorm.weight", &[Embd], Vector, Required),
    rule("blk.{}.nextn.hnorm.weight", &[Embd], Vector, Required),
    rule(
        "blk.{}.nextn.embed_tokens.weight",
        &[Embd, Vocab],
        Embedding,
        Optional,
    ),
    rule(
        "blk.{}.nextn.shared_head_head.weight",
        &[Embd, Vocab],
        Matrix,
        Optional,
    ),
    rule(
        "blk.{}.nextn.shared_head_norm.weight",
        &[Embd],
        Vector,
        Typical,
    ),
];

/// Next-token-prediction layers a converter may leave out (GLM-4.5, DeepSeek 3).
const NEXTN: Nextn = Nextn {
    tensors: NEXTN_TENSORS,
    may_be_left_out: true,
};

/// `expert_feed_forward_length`, required.
const FF_EXP_REQUIRED: KeyRule = KeyRule {
    key: "expert_feed_forward_length",
    sets: Field::FfExp,
    required: true,
    min: 1,
    unread_if: None,
};

const KV_CACHE: &[&str] = &["cache_k_l", "cache_v_l"];
/// A hybrid's attention cache and recurrent states (convolution, then delta rule).
const KV_CACHE_HYBRID: &[&str] = &["cache_k_l", "cache_v_l", "cache_r_l", "cache_s_l"];

/// Latent attention: the uncompressed query heads (`q_lora_rank` → heads × query head).
const fn mla_q(hp: &Hparams) -> u64 {
    hp.n_head * hp.head_k_mla
}
/// Latent attention: the non-rotary part of a query head.
const fn mla_nope(hp: &Hparams) -> u64 {
    hp.head_k_mla.saturating_sub(hp.n_rot)
}
/// Latent attention: the compressed key/value and the shared rotary key.
const fn mla_kv_a(hp: &Hparams) -> u64 {
    hp.kv_lora_rank + hp.n_rot
}
/// Latent attention: one value head.
const fn mla_v_head(hp: &Hparams) -> u64 {
    hp.head_v_mla
}
/// Latent attention: the expansion of the latent into every head's key and value.
const fn mla_kv_b(hp: &Hparams) -> u64 {
    hp.n_head * (mla_nope(hp) + hp.head_v_mla)
}
/// Latent attention: the heads' values, into the output.
const fn mla_out(hp: &Hparams) -> u64 {
    hp.n_head * hp.head_v_mla
}
/// DeepSeek 2's "lite" layer counts, for which llama.cpp never reads `q_lora_rank`.
const fn deepseek2_lite(hp: &Hparams) -> bool {
    matches!(hp.n_layer, 26 | 27) || (hp.n_layer == 48 && hp.n_vocab == 128256)
}

/// DeepSeek 2's latent attention, with an optionally compressed query, in either cache
/// layout, and its norms.
const DEEPSEEK2_ATTENTION: &[TensorRule] = &[
    rule("blk.{}.attn_norm.weight", &[Embd], Vector, Required),
    rule(
        "blk.{}.attn_q_a_norm.weight",
        &[QLora],
        Vector,
        When(Cond::QLora, &Required),
    ),
    rule("blk.{}.attn_kv_a_norm.weight", &[KvLora], Vector, Required),
    rule(
        "blk.{}.attn_q_a.weight",
        &[Embd, QLora],
        Matrix,
        When(Cond::QLora, &Required),
    ),
    rule(
        "blk.{}.attn_q_b.weight",
        &[QLora, Of(mla_q)],
        Matrix,
        When(Cond::QLora, &Required),
    ),
    rule(
        "blk.{}.attn_q.weight",
        &[Embd, Of(mla_q)],
        Matrix,
        When(Cond::NoQLora, &Required),
    ),
    rule(
        "blk.{}.attn_kv_a_mqa.weight",
        &[Embd, Of(mla_kv_a)],
        Matrix,
        Required,
    ),
    rule(
        "blk.{}.attn_k_b.weight",
        &[Of(mla_nope), KvLora, Heads],
        Matrix,
        When(Cond::MlaAbsorbed, &Required),
    ),
    rule(
        "blk.{}.attn_v_b.weight",
        &[KvLora, Of(mla_v_head), Heads],
        Matrix,
        When(Cond::MlaAbsorbed, &Required),
    ),
    rule(
        "blk.{}.attn_kv_b.weight",
        &[KvLora, Of(mla_kv_b)],
        Matrix,
        When(Cond::MlaExpanded, &Required),
    ),
    rule(
        "blk.{}.attn_output.weight",
        &[Of(mla_out), Embd],
        Matrix,
        Required,
    ),
    rule("blk.{}.ffn_norm.weight", &[Embd], Vector, Required),
];

/// DeepSeek's expert-selection bias (V3 and later).
const DEEPSEEK2_SELECTION_BIAS: &[TensorRule] = &[rule(
    "blk.{}.exp_probs_b.bias",
    &[NExperts],
    Vector,
    When(Cond::MoeLayer, &Typical),
)];

/// DeepSeek 2's layer: latent attention with an optionally compressed query (in either
/// cache layout), leading dense layers, then routed experts with an optional selection bias
/// and shared experts.
const DEEPSEEK2_LAYER: &[&[TensorRule]] = &[
    DEEPSEEK2_ATTENTION,
    FFN,
    ROUTER,
    DEEPSEEK2_SELECTION_BIAS,
    EXPERTS,
    SHARED_EXPERTS,
];

/// Gated attention: each query head is followed by its gate.
const fn gated_q(hp: &Hparams) -> u64 {
    2 * hp.head_k * hp.n_head
}
/// Gated attention's fused projections: queries with their gates, keys, values.
const fn gated_qkv(hp: &Hparams) -> u64 {
    2 * hp.head_k * hp.n_head + (hp.head_k + hp.head_v) * hp.n_head_kv
}
/// A recurrent layer's value width: value heads × state size.
const fn ssm_v(hp: &Hparams) -> u64 {
    hp.ssm_state * hp.ssm_dt_rank
}
/// A recurrent layer's convolved channels: queries and keys (groups × state size each)
/// and values.
const fn ssm_conv_channels(hp: &Hparams) -> u64 {
    2 * hp.ssm_state * hp.ssm_groups + ssm_v(hp)
}
/// A recurrent layer's convolution kernel size.
const fn ssm_conv(hp: &Hparams) -> u64 {
    hp.ssm_conv
}

/// Qwen 3.5 MoE's mixing part: gated full attention in some layers, a gated delta-net in
/// the others, and the norms.
const QWEN35MOE_ATTENTION: &[TensorRule] = &[
    rule("blk.{}.attn_norm.weight", &[Embd], Vector, Required),
    rule(
        "blk.{}.post_attention_norm.weight",
        &[Embd],
        Vector,
        Required,
    ),
    rule(
        "blk.{}.attn_qkv.weight",
        &[Embd, Of(gated_qkv)],
        Matrix,
        When(Cond::AttentionLayer, &Optional),
    ),
    rule(
        "blk.{}.attn_q.weight",
        &[Embd, Of(gated_q)],
        Matrix,
        When(Cond::AttentionLayer, &UnlessFused),
    ),
    rule(
        "blk.{}.attn_k.weight",
        &[Embd, K],
        Matrix,
        When(Cond::AttentionLayer, &UnlessFused),
    ),
    rule(
        "blk.{}.attn_v.weight",
        &[Embd, V],
        Matrix,
        When(Cond::AttentionLayer, &UnlessFused),
    ),
    rule(
        "blk.{}.attn_output.weight",
        &[AttnOut, Embd],
        Matrix,
        When(Cond::AttentionLayer, &Required),
    ),
    rule(
        "blk.{}.attn_q_norm.weight",
        &[HeadK],
        Vector,
        When(Cond::AttentionLayer, &Required),
    ),
    rule(
        "blk.{}.attn_k_norm.weight",
        &[HeadK],
        Vector,
        When(Cond::AttentionLayer, &Required),
    ),
    rule(
        "blk.{}.attn_qkv.weight",
        &[Embd, Of(ssm_conv_channels)],
        Matrix,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.attn_gate.weight",
        &[Embd, Of(ssm_v)],
        Matrix,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_conv1d.weight",
        &[Of(ssm_conv), Of(ssm_conv_channels)],
        Vector,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_dt.bias",
        &[SsmDtRank],
        Vector,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_a",
        &[SsmDtRank],
        Decay,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_beta.weight",
        &[Embd, SsmDtRank],
        Router,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_alpha.weight",
        &[Embd, SsmDtRank],
        Router,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_norm.weight",
        &[SsmState],
        Vector,
        When(Cond::RecurrentLayer, &Required),
    ),
    rule(
        "blk.{}.ssm_out.weight",
        &[Of(ssm_v), Embd],
        Matrix,
        When(Cond::RecurrentLayer, &Required),
    ),
];

/// Qwen 3.5 MoE's gate of the shared expert.
const QWEN35MOE_SHARED_GATE: &[TensorRule] = &[rule(
    "blk.{}.ffn_gate_inp_shexp.weight",
    &[Embd],
    Router,
    SharedExperts,
)];

/// Qwen 3.5 MoE's layer: gated full attention in some layers, a gated delta-net in the
/// others, experts with a gated shared expert in all.
const QWEN35MOE_LAYER: &[&[TensorRule]] = &[
    QWEN35MOE_ATTENTION,
    ROUTER,
    EXPERTS,
    QWEN35MOE_SHARED_GATE,
    SHARED_EXPERTS,
];

/// A required key of a recurrent layer's shape.
const fn ssm_key(key: &'static str, sets: Field, min: u64) -> KeyRule {
    KeyRule {
        key,
        sets,
        required: true,
        min,
        unread_if: None,
    }
}

/// A spec with the common defaults: dense, llama-like graph, head computed by hypura.
const fn spec(name: &'static str, layer: &'static [&'static [TensorRule]]) -> ArchSpec {
    ArchSpec {
        name,
        globals: &[GLOBALS, ROPE_FACTORS],
        layer,
        keys: &[],
        example_keys: &[],
        experts: Experts::None,
        rope_covers_head: false,
        query_is_embedding_wide: false,
        head_input_node: "result_norm",
        // llama.cpp's `build_moe_ffn`, which every MoE family here routes through.
        selected_experts_node: "ffn_moe_topk",
        head_streamable: true,
        final_logit_softcap_key: None,
        default_final_logit_softcap: 0.0,
        sliding_window: None,
        kv_cache_tensor_prefixes: KV_CACHE,
        head_sizes_may_differ: false,
        latent: None,
        hybrid: None,
        rope_sections_key: None,
        widths_per_layer: false,
        nextn: None,
    }
}

/// What hypura assumes of an architecture without a spec, which runs as stock llama.cpp
/// runs it (so nothing here is used to stream).
pub const UNTIERED: ArchSpec = ArchSpec {
    globals: &[],
    head_streamable: false,
    ..spec("", &[])
};

/// The families hypura has verified, and that the test suite runs.
pub const FAMILIES: &[ArchSpec] = &[
    ArchSpec {
        experts: Experts::Optional,
        rope_covers_head: true,
        ..spec("llama", LLAMA_LAYER)
    },
    ArchSpec {
        experts: Experts::Optional,
        rope_covers_head: true,
        example_keys: &[("attention.temperature_scale", Example::F32(0.1))],
        ..spec("mistral3", LLAMA_LAYER)
    },
    ArchSpec {
        rope_covers_head: true,
        query_is_embedding_wide: true,
        globals: &[GLOBALS, OUTPUT_BIAS],
        ..spec("qwen2", &[QWEN2_ATTENTION, PRE_NORMS, FFN])
    },
    ArchSpec {
        rope_covers_head: true,
        ..spec("qwen3", &[QKV, ATTN_OUTPUT, PRE_NORMS, QK_NORM, FFN])
    },
    ArchSpec {
        rope_covers_head: true,
        ..spec("smollm3", &[QKV, ATTN_OUTPUT, PRE_NORMS, FFN])
    },
    ArchSpec {
        rope_covers_head: true,
        query_is_embedding_wide: true,
        globals: &[GLOBALS_UNTIED],
        sliding_window: Some(SlidingWindow {
            window_key: "attention.sliding_window",
            default_period: 4,
            always: false,
            window_required: false,
            pattern: SwaPattern::PeriodOrFlags,
        }),
        example_keys: &[("attention.sliding_window", Example::U32(64))],
        ..spec("olmo2", &[QKV_EMBD, OLMO2_QK_NORM, GEMMA_POST_NORMS, FFN])
    },
    ArchSpec {
        rope_covers_head: false,
        query_is_embedding_wide: true,
        globals: &[GLOBALS, PHI3_ROPE_FACTORS],
        ..spec("phi3", &[QKV_EMBD, PRE_NORMS, PHI3_FFN])
    },
    ArchSpec {
        globals: &[GLOBALS_TIED],
        final_logit_softcap_key: Some("final_logit_softcapping"),
        default_final_logit_softcap: 30.0,
        sliding_window: Some(SlidingWindow {
            window_key: "attention.sliding_window",
            default_period: 2,
            always: true,
            window_required: false,
            pattern: SwaPattern::PeriodOrFlags,
        }),
        example_keys: &[
            ("attention.sliding_window", Example::U32(64)),
            ("attn_logit_softcapping", Example::F32(50.0)),
            ("final_logit_softcapping", Example::F32(30.0)),
        ],
        ..spec(
            "gemma2",
            &[QKV, ATTN_OUTPUT, PRE_NORMS, GEMMA_POST_NORMS, FFN],
        )
    },
    ArchSpec {
        experts: Experts::Required,
        rope_covers_head: true,
        keys: &[KeyRule {
            required: false,
            ..FF_EXP_REQUIRED
        }],
        ..spec(
            "qwen3moe",
            &[QKV, ATTN_OUTPUT, PRE_NORMS, QK_NORM, ROUTER, EXPERTS],
        )
    },
    ArchSpec {
        experts: Experts::Required,
        rope_covers_head: true,
        globals: &[GLOBALS_UNTIED],
        keys: &[FF_EXP_REQUIRED],
        sliding_window: Some(SlidingWindow {
            window_key: "attention.sliding_window",
            default_period: 2,
            always: true,
            window_required: true,
            pattern: SwaPattern::PeriodOrFlags,
        }),
        example_keys: &[("attention.sliding_window", Example::U32(64))],
        ..spec("gpt-oss", GPT_OSS_LAYER)
    },
    ArchSpec {
        experts: Experts::Required,
        keys: &[
            FF_EXP_REQUIRED,
            KeyRule {
                key: "expert_shared_count",
                sets: Field::SharedExperts,
                required: true,
                min: 0,
                unread_if: None,
            },
            KeyRule {
                key: "leading_dense_block_count",
                sets: Field::DenseLead,
                required: false,
                min: 0,
                unread_if: None,
            },
        ],
        example_keys: &[
            ("expert_gating_func", Example::U32(2)),
            ("expert_weights_norm", Example::Bool(true)),
            ("expert_weights_scale", Example::F32(2.5)),
        ],
        nextn: Some(NEXTN),
        ..spec("glm4moe", GLM4MOE_LAYER)
    },
    ArchSpec {
        experts: Experts::Required,
        head_sizes_may_differ: true,
        latent: Some(Latent {
            key_length_key: "attention.key_length_mla",
            value_length_key: "attention.value_length_mla",
        }),
        keys: &[
            FF_EXP_REQUIRED,
            KeyRule {
                key: "expert_shared_count",
                sets: Field::SharedExperts,
                required: true,
                min: 1,
                unread_if: None,
            },
            KeyRule {
                key: "leading_dense_block_count",
                sets: Field::DenseLead,
                required: false,
                min: 0,
                unread_if: None,
            },
            KeyRule {
                key: "attention.q_lora_rank",
                sets: Field::QLora,
                required: true,
                min: 0,
                unread_if: Some(deepseek2_lite),
            },
            KeyRule {
                key: "attention.kv_lora_rank",
                sets: Field::KvLora,
                required: true,
                min: 1,
                unread_if: None,
            },
        ],
        example_keys: &[
            ("expert_gating_func", Example::U32(2)),
            ("expert_weights_norm", Example::Bool(true)),
            ("expert_weights_scale", Example::F32(2.5)),
        ],
        nextn: Some(NEXTN),
        ..spec("deepseek2", DEEPSEEK2_LAYER)
    },
    ArchSpec {
        experts: Experts::Required,
        hybrid: Some(Hybrid {
            layers_key: "attention.recurrent_layers",
            interval_key: "full_attention_interval",
            default_interval: 4,
        }),
        rope_sections_key: Some("rope.dimension_sections"),
        kv_cache_tensor_prefixes: KV_CACHE_HYBRID,
        keys: &[
            KeyRule {
                required: false,
                min: 0,
                unread_if: None,
                ..FF_EXP_REQUIRED
            },
            KeyRule {
                key: "expert_shared_feed_forward_length",
                sets: Field::FfShexp,
                required: false,
                min: 0,
                unread_if: None,
            },
            // A kernel of 1 would leave no convolution state.
            ssm_key("ssm.conv_kernel", Field::SsmConv, 2),
            ssm_key("ssm.inner_size", Field::SsmInner, 1),
            ssm_key("ssm.state_size", Field::SsmState, 1),
            ssm_key("ssm.time_step_rank", Field::SsmDtRank, 1),
            ssm_key("ssm.group_count", Field::SsmGroups, 1),
        ],
        nextn: Some(Nextn {
            may_be_left_out: false,
            ..NEXTN
        }),
        ..spec("qwen35moe", QWEN35MOE_LAYER)
    },
    ArchSpec {
        final_logit_softcap_key: Some("final_logit_softcapping"),
        sliding_window: Some(SlidingWindow {
            window_key: "attention.sliding_window",
            default_period: 6,
            always: true,
            window_required: false,
            pattern: SwaPattern::PeriodOrFlags,
        }),
        example_keys: &[("attention.sliding_window", Example::U32(64))],
        ..spec(
            "gemma3",
            &[QKV, ATTN_OUTPUT, PRE_NORMS, QK_NORM, GEMMA_POST_NORMS, FFN],
        )
    },
    ArchSpec {
        globals: &[GEMMA4_GLOBALS],
        keys: GEMMA4_KEYS,
        final_logit_softcap_key: Some("final_logit_softcapping"),
        default_final_logit_softcap: 30.0,
        sliding_window: Some(SlidingWindow {
            window_key: "attention.sliding_window",
            default_period: 4,
            always: true,
            window_required: true,
            pattern: SwaPattern::Flags,
        }),
        example_keys: &[
            ("attention.sliding_window", Example::U32(16)),
            ("rope.freq_base_swa", Example::F32(10000.0)),
            ("final_logit_softcapping", Example::F32(30.0)),
        ],
        widths_per_layer: true,
        experts: Experts::Optional,
        ..spec("gemma4", &[GEMMA4_LAYER, GEMMA4_EXPERTS])
    },
];
