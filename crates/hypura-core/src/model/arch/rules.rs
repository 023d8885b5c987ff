//! The vocabulary a family's tensor table is written in: the hyperparameters shapes follow
//! from ([`Hparams`]), a tensor's dimensions in their terms ([`Dim`]), what the graph does
//! with it ([`TensorKind`]) and when it is present ([`Need`]). Validation checks a file
//! against a table; the synthetic-model generator writes one from it.

/// A set of layers (llama.cpp has at most 512).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerSet([u64; 8]);

impl LayerSet {
    /// Adds `layer` (ignored past the 512th).
    pub fn insert(&mut self, layer: u64) {
        if let Some(word) = self.0.get_mut((layer / 64) as usize) {
            *word |= 1 << (layer % 64);
        }
    }

    /// True when `layer` is in the set.
    pub fn contains(&self, layer: u64) -> bool {
        self.0
            .get((layer / 64) as usize)
            .is_some_and(|word| word & (1 << (layer % 64)) != 0)
    }

    /// How many of the first `n` layers are in the set.
    pub fn count_below(&self, n: u64) -> u64 {
        (0..n).filter(|&l| self.contains(l)).count() as u64
    }
}

/// The hyperparameters tensor shapes follow from: uniform over the layers, except that
/// sliding-window layers may have their own head size ([`Hparams::at_layer`] gives one
/// layer's view), and that the last layers may reuse earlier layers' KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hparams {
    /// Repeating layers.
    pub n_layer: u64,
    /// Embedding width.
    pub n_embd: u64,
    /// Vocabulary size.
    pub n_vocab: u64,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads.
    pub n_head_kv: u64,
    /// Dense FFN width.
    pub n_ff: u64,
    /// Key head size.
    pub head_k: u64,
    /// Value head size.
    pub head_v: u64,
    /// Rotary dimensions.
    pub n_rot: u64,
    /// Experts (0: dense).
    pub n_expert: u64,
    /// Experts used per token.
    pub n_expert_used: u64,
    /// One expert's FFN width.
    pub n_ff_exp: u64,
    /// The shared experts' FFN width (0: none).
    pub n_ff_shexp: u64,
    /// Leading layers with a dense FFN in an MoE model.
    pub n_dense_lead: u64,
    /// Query low-rank compression (MLA; 0: none).
    pub q_lora_rank: u64,
    /// Key/value low-rank compression (MLA).
    pub kv_lora_rank: u64,
    /// True for `longrope` rope scaling (its own factor tensors).
    pub longrope: bool,
    /// The sliding-window layers.
    pub swa_layers: LayerSet,
    /// Key head size of sliding-window layers.
    pub head_k_swa: u64,
    /// Value head size of sliding-window layers.
    pub head_v_swa: u64,
    /// Rotary dimensions of sliding-window layers.
    pub n_rot_swa: u64,
    /// Last layers that have no KV cache of their own (they read an earlier layer's).
    pub n_kv_shared: u64,
    /// Width of each layer's slice of the per-layer input embedding (0: none).
    pub n_embd_per_layer: u64,
}

impl Hparams {
    /// True when layer `layer` attends through a sliding window.
    pub fn is_swa(&self, layer: u64) -> bool {
        self.swa_layers.contains(layer)
    }

    /// True when some layer attends globally.
    pub fn has_full_attention(&self) -> bool {
        self.swa_layers.count_below(self.n_layer) < self.n_layer
    }

    /// True when layer `layer` has a KV cache of its own.
    pub fn has_kv(&self, layer: u64) -> bool {
        layer + self.n_kv_shared < self.n_layer
    }

    /// The hyperparameters as layer `layer` sees them: a sliding-window layer's head sizes
    /// and rotary dimensions are its own.
    pub fn at_layer(&self, layer: u64) -> Hparams {
        let mut hp = *self;
        if self.is_swa(layer) {
            hp.head_k = self.head_k_swa;
            hp.head_v = self.head_v_swa;
            hp.n_rot = self.n_rot_swa;
        }
        hp
    }

    /// Why llama.cpp would abort on the layers sharing their KV cache (each reads the cache
    /// of the last layer with one of its kind, sliding or global, that has its own): at
    /// least two layers must keep their cache, the last of them global when a global layer
    /// shares, the one before sliding when a sliding layer shares.
    pub fn kv_sharing_error(&self) -> Option<String> {
        let n_kv = self
            .n_layer
            .checked_sub(self.n_kv_shared)
            .filter(|&n| n >= 2);
        let Some(n_kv) = n_kv else {
            return Some(format!(
                "{} layers sharing the KV cache of {} leave fewer than 2 with their own, which llama.cpp asserts against",
                self.n_kv_shared, self.n_layer
            ));
        };
        let shared = n_kv..self.n_layer;
        if shared.clone().any(|l| self.is_swa(l)) && !self.is_swa(n_kv - 2) {
            return Some(format!(
                "a sliding-window layer reuses the KV cache of layer {}, which is global (llama.cpp asserts)",
                n_kv - 2
            ));
        }
        if shared.clone().any(|l| !self.is_swa(l)) && self.is_swa(n_kv - 1) {
            return Some(format!(
                "a global layer reuses the KV cache of layer {}, which slides (llama.cpp asserts)",
                n_kv - 1
            ));
        }
        None
    }

    /// True when layer `layer` has experts (not one of the leading dense layers).
    pub fn is_moe_layer(&self, layer: u64) -> bool {
        self.n_expert > 0 && layer >= self.n_dense_lead
    }
}

/// A dimension of a tensor, in terms of the hyperparameters.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    /// Embedding length.
    Embd,
    /// Vocabulary size.
    Vocab,
    /// Dense feed-forward length.
    Ff,
    /// Gate and up projections fused: twice the feed-forward length.
    FfFused,
    /// One expert's feed-forward length.
    FfExp,
    /// The shared experts' feed-forward length.
    FfShexp,
    /// Query projection: key head size × heads.
    Q,
    /// Key projection: key head size × key/value heads.
    K,
    /// Value projection: value head size × key/value heads.
    V,
    /// Attention output input: value head size × heads.
    AttnOut,
    /// Fused query, key and value projections.
    Qkv,
    /// One key head's size.
    HeadK,
    /// Half a key head's size.
    HeadKHalf,
    /// One layer's slice of the per-layer input embedding.
    EmbdPerLayer,
    /// The per-layer input embedding of all the layers.
    EmbdPerLayerAll,
    /// Heads.
    Heads,
    /// Half the rotary dimensions.
    RotHalf,
    /// Experts.
    NExperts,
    /// One element (a scalar weight).
    One,
    /// Any other dimension, computed by the family.
    Of(fn(&Hparams) -> u64),
}

impl Dim {
    /// The dimension's value for `hp`.
    pub fn value(self, hp: &Hparams) -> u64 {
        match self {
            Dim::Embd => hp.n_embd,
            Dim::Vocab => hp.n_vocab,
            Dim::Ff => hp.n_ff,
            Dim::FfFused => 2 * hp.n_ff,
            Dim::FfExp => hp.n_ff_exp,
            Dim::FfShexp => hp.n_ff_shexp,
            Dim::Q => hp.head_k * hp.n_head,
            Dim::K => hp.head_k * hp.n_head_kv,
            Dim::V => hp.head_v * hp.n_head_kv,
            Dim::AttnOut => hp.head_v * hp.n_head,
            Dim::Qkv => hp.head_k * (hp.n_head + hp.n_head_kv) + hp.head_v * hp.n_head_kv,
            Dim::HeadK => hp.head_k,
            Dim::HeadKHalf => hp.head_k / 2,
            Dim::EmbdPerLayer => hp.n_embd_per_layer,
            Dim::EmbdPerLayerAll => hp.n_embd_per_layer * hp.n_layer,
            Dim::Heads => hp.n_head,
            Dim::RotHalf => hp.n_rot / 2,
            Dim::NExperts => hp.n_expert,
            Dim::One => 1,
            Dim::Of(f) => f(hp),
        }
    }
}

/// What a tensor is used for by the compute graph, which decides the types it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Looked up by row (`get_rows`).
    Embedding,
    /// Multiplied with activations (`mul_mat`, `mul_mat_id`).
    Matrix,
    /// A matrix llama.cpp's converters keep in F32 (an MoE router); any matrix type works.
    Router,
    /// Added or multiplied element-wise (norm weights, biases, rope factors, sinks): F32.
    Vector,
}

/// When a tensor must, may or must not be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Always present.
    Required,
    /// May be present.
    Optional,
    /// May be present, and real checkpoints have it (the generator writes it).
    Typical,
    /// Present unless the fused `attn_qkv` is.
    UnlessFused,
    /// Present in layers with a dense FFN (every layer of a dense model).
    DenseLayer,
    /// Present in layers with experts.
    MoeLayer,
    /// May be present in layers with experts.
    MoeLayerOptional,
    /// Present in layers with experts when the model has shared experts.
    SharedExperts,
    /// May be present when rope scaling is `longrope` (else must not).
    Longrope,
    /// May be present when rope scaling is not `longrope`.
    NotLongrope,
    /// Present when some layer attends globally (else must not be).
    FullAttention,
    /// Present in layers with a KV cache of their own; may be in the others.
    OwnKv,
    /// May be present; real checkpoints have it in layers with a KV cache of their own.
    OwnKvTypical,
    /// Present when the model has per-layer input embeddings (else must not be).
    PerLayerInput,
}

impl Need {
    /// Whether a tensor with this need belongs in layer `layer` (`None` outside the layers)
    /// of a model with `hp`, and if so whether it must be present. `fused` says whether the
    /// layer has a fused `attn_qkv`.
    pub fn expected(self, hp: &Hparams, layer: Option<u64>, fused: bool) -> Option<bool> {
        let layer = layer.unwrap_or(0);
        match self {
            Need::Required => Some(true),
            Need::Optional | Need::Typical => Some(false),
            Need::UnlessFused => (!fused).then_some(true),
            Need::DenseLayer => (!hp.is_moe_layer(layer)).then_some(true),
            Need::MoeLayer => hp.is_moe_layer(layer).then_some(true),
            Need::MoeLayerOptional => hp.is_moe_layer(layer).then_some(false),
            Need::SharedExperts => (hp.is_moe_layer(layer) && hp.n_ff_shexp > 0).then_some(true),
            Need::Longrope => hp.longrope.then_some(false),
            Need::NotLongrope => (!hp.longrope).then_some(false),
            Need::FullAttention => hp.has_full_attention().then_some(true),
            Need::OwnKv => Some(hp.has_kv(layer)),
            Need::OwnKvTypical => Some(false),
            Need::PerLayerInput => (hp.n_embd_per_layer > 0).then_some(true),
        }
    }

    /// Whether real checkpoints have an optional tensor with this need in layer `layer`
    /// (`None` outside the layers): what the generator writes beyond the required ones.
    pub fn typical(self, hp: &Hparams, layer: Option<u64>) -> bool {
        match self {
            Need::Typical => true,
            Need::OwnKvTypical => hp.has_kv(layer.unwrap_or(0)),
            _ => false,
        }
    }
}

/// One tensor the family's graph reads: its name (`{}` is the layer), shape, kind and need.
#[derive(Debug, Clone, Copy)]
pub struct TensorRule {
    /// GGUF name; `{}` stands for the layer.
    pub name: &'static str,
    /// Shape, ggml order (`ne0` first).
    pub dims: &'static [Dim],
    /// What the graph does with it.
    pub kind: TensorKind,
    /// When it is present.
    pub need: Need,
}

/// A [`TensorRule`], briefly.
pub(crate) const fn rule(
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
