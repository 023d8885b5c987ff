//! The vocabulary a family's tensor table is written in: the hyperparameters shapes follow
//! from ([`Hparams`]), a tensor's dimensions in their terms ([`Dim`]), what the graph does
//! with it ([`TensorKind`]) and when it is present ([`Need`]). Validation checks a file
//! against a table; the synthetic-model generator writes one from it.

/// The hyperparameters tensor shapes follow from: uniform over the layers, except that
/// sliding-window layers may have their own head size, that some families size each layer
/// by its own head counts and FFN width ([`Hparams::at_layer`] gives one layer's view), and
/// that the last layers may reuse earlier layers' KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hparams {
    /// Repeating layers (the trunk: next-token-prediction layers are not counted).
    pub n_layer: u64,
    /// Next-token-prediction (MTP) layers after the trunk, `n_layer..n_layer + n_nextn`:
    /// llama.cpp checks their tensors and never loads them.
    pub n_nextn: u64,
    /// Each layer's head counts and FFN width, where the family sizes layers by their own
    /// and the file gives values per layer (else every layer has `n_head`, `n_head_kv` and
    /// `n_ff`, which then hold the largest).
    pub widths: Option<LayerWidths>,
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
    /// Latent attention: one query (and key) head's size before compression, rotary part
    /// included (`key_length_mla`, else the key length).
    pub head_k_mla: u64,
    /// Latent attention: one value head's size (`value_length_mla`, else the value length).
    pub head_v_mla: u64,
    /// Latent attention cached as the latent itself, with the key and value expansions
    /// (`attn_k_b`, `attn_v_b`) absorbed into the graph; else one `attn_kv_b` expands it.
    pub mla_absorbed: bool,
    /// Recurrent layers: the convolution's kernel size.
    pub ssm_conv: u64,
    /// Recurrent layers: the inner (value) width.
    pub ssm_inner: u64,
    /// Recurrent layers: the state size (one key or value head's size).
    pub ssm_state: u64,
    /// Recurrent layers: value heads (the time-step rank).
    pub ssm_dt_rank: u64,
    /// Recurrent layers: key heads (groups).
    pub ssm_groups: u64,
    /// Which layers are recurrent, in a hybrid family (the others attend).
    pub recurrent: LayerSet,
}

/// Each layer's attention heads, key/value heads and FFN width (llama.cpp's per-layer
/// arrays, `attention.head_count`, `attention.head_count_kv`, `feed_forward_length`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LayerWidths {
    n_head: [u32; LayerSet::CAPACITY as usize],
    n_head_kv: [u32; LayerSet::CAPACITY as usize],
    n_ff: [u32; LayerSet::CAPACITY as usize],
}

impl Default for LayerWidths {
    fn default() -> Self {
        Self {
            n_head: [0; LayerSet::CAPACITY as usize],
            n_head_kv: [0; LayerSet::CAPACITY as usize],
            n_ff: [0; LayerSet::CAPACITY as usize],
        }
    }
}

impl std::fmt::Debug for LayerWidths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used = self
            .n_head
            .iter()
            .rposition(|h| *h != 0)
            .map_or(0, |i| i + 1);
        f.debug_struct("LayerWidths")
            .field("n_head", &&self.n_head[..used])
            .field("n_head_kv", &&self.n_head_kv[..used])
            .field("n_ff", &&self.n_ff[..used])
            .finish()
    }
}

impl LayerWidths {
    /// Sets layer `layer`'s heads, key/value heads and FFN width (ignored beyond
    /// [`LayerSet::CAPACITY`] layers; values saturate at `u32::MAX`).
    pub fn set(&mut self, layer: u64, n_head: u64, n_head_kv: u64, n_ff: u64) {
        if layer < LayerSet::CAPACITY {
            let l = layer as usize;
            let narrow = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
            (self.n_head[l], self.n_head_kv[l], self.n_ff[l]) =
                (narrow(n_head), narrow(n_head_kv), narrow(n_ff));
        }
    }

    /// Layer `layer`'s heads, key/value heads and FFN width (0s beyond the capacity).
    pub fn get(&self, layer: u64) -> (u64, u64, u64) {
        if layer >= LayerSet::CAPACITY {
            return (0, 0, 0);
        }
        let l = layer as usize;
        (
            u64::from(self.n_head[l]),
            u64::from(self.n_head_kv[l]),
            u64::from(self.n_ff[l]),
        )
    }
}

/// A set of layer indices (llama.cpp's `LLAMA_MAX_LAYERS` is 512).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerSet([u64; 8]);

impl LayerSet {
    /// Most layers a set holds.
    pub const CAPACITY: u64 = 512;

    /// Adds `layer` (ignored beyond [`Self::CAPACITY`]).
    pub fn insert(&mut self, layer: u64) {
        if layer < Self::CAPACITY {
            self.0[(layer / 64) as usize] |= 1 << (layer % 64);
        }
    }

    /// Removes `layer`.
    pub fn remove(&mut self, layer: u64) {
        if layer < Self::CAPACITY {
            self.0[(layer / 64) as usize] &= !(1 << (layer % 64));
        }
    }

    /// True when `layer` is in the set.
    pub fn contains(&self, layer: u64) -> bool {
        layer < Self::CAPACITY && self.0[(layer / 64) as usize] & (1 << (layer % 64)) != 0
    }

    /// How many layers are in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Hparams {
    /// True when layer `layer` attends through a sliding window.
    pub fn is_swa(&self, layer: u64) -> bool {
        self.swa_layers.contains(layer)
    }

    /// True when some layer attends globally.
    pub fn has_full_attention(&self) -> bool {
        (0..self.n_layer).any(|l| !self.is_swa(l))
    }

    /// True when layer `layer` has a KV cache of its own.
    pub fn has_kv(&self, layer: u64) -> bool {
        layer + self.n_kv_shared < self.n_layer
    }

    /// The hyperparameters as layer `layer` sees them: a sliding-window layer's head sizes
    /// and rotary dimensions are its own, and so are its head counts and FFN width where
    /// the file gives them per layer.
    pub fn at_layer(&self, layer: u64) -> Hparams {
        let mut hp = *self;
        if let Some(widths) = &self.widths {
            (hp.n_head, hp.n_head_kv, hp.n_ff) = widths.get(layer);
        }
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
        // A layer reads its source's cache as if it were its own: it must not be wider.
        for layer in shared {
            let source = n_kv - if self.is_swa(layer) { 2 } else { 1 };
            let (reader, cache) = (self.at_layer(layer), self.at_layer(source));
            if reader.n_head_kv * reader.head_k > cache.n_head_kv * cache.head_k
                || reader.n_head_kv * reader.head_v > cache.n_head_kv * cache.head_v
            {
                return Some(format!(
                    "layer {layer} reuses the KV cache of layer {source} with {} key/value heads where it has {} (llama.cpp asserts)",
                    reader.n_head_kv, cache.n_head_kv
                ));
            }
        }
        None
    }

    /// True when layer `layer` is a next-token-prediction layer (after the trunk).
    pub fn is_nextn_layer(&self, layer: u64) -> bool {
        layer >= self.n_layer && layer < self.n_layer + self.n_nextn
    }

    /// True when layer `layer` has experts (not one of the leading dense layers).
    pub fn is_moe_layer(&self, layer: u64) -> bool {
        self.n_expert > 0 && layer >= self.n_dense_lead
    }

    /// True when layer `layer` is recurrent (in a hybrid family).
    pub fn is_recurrent_layer(&self, layer: u64) -> bool {
        self.recurrent.contains(layer)
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
    /// Query low-rank compression.
    QLora,
    /// Key/value low-rank compression.
    KvLora,
    /// Recurrent layers: the state size.
    SsmState,
    /// Recurrent layers: value heads (the time-step rank).
    SsmDtRank,
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
            Dim::QLora => hp.q_lora_rank,
            Dim::KvLora => hp.kv_lora_rank,
            Dim::SsmState => hp.ssm_state,
            Dim::SsmDtRank => hp.ssm_dt_rank,
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
    /// Added or multiplied element-wise (norm weights, biases, rope factors, sinks), or
    /// read by a kernel that computes only in F32 (a convolution's kernel): F32.
    Vector,
    /// A [`TensorKind::Vector`] that scales a decay's exponent, negative in real models
    /// (a recurrent layer's `-exp(A_log)`): F32.
    Decay,
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
    /// Present unless the layer has the tensor named (`{}` is the layer): the fused form
    /// of this one and others.
    UnlessPresent(&'static str),
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
    /// As the inner need where the condition holds; absent elsewhere.
    When(Cond, &'static Need),
    /// As the first need where the condition holds, as the second elsewhere.
    Either(Cond, &'static Need, &'static Need),
}

/// A condition on the model (and the layer) that decides whether a tensor belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    /// The query is compressed (`q_lora_rank` > 0).
    QLora,
    /// The query is not compressed (`q_lora_rank` = 0).
    NoQLora,
    /// Latent attention with absorbed key/value expansions (`key_length_mla` and
    /// `value_length_mla` set).
    MlaAbsorbed,
    /// Latent attention with one key/value expansion.
    MlaExpanded,
    /// A layer with experts.
    MoeLayer,
    /// A recurrent layer of a hybrid family.
    RecurrentLayer,
    /// An attention layer (every layer of a family without recurrent layers).
    AttentionLayer,
    /// Some layer attends globally (not every one through a sliding window).
    FullAttention,
    /// A layer with a KV cache of its own (not one reading an earlier layer's).
    OwnKv,
    /// The model has per-layer input embeddings.
    PerLayerInput,
}

impl Cond {
    /// Whether the condition holds in layer `layer` of a model with `hp`.
    pub fn holds(self, hp: &Hparams, layer: u64) -> bool {
        match self {
            Cond::QLora => hp.q_lora_rank > 0,
            Cond::NoQLora => hp.q_lora_rank == 0,
            Cond::MlaAbsorbed => hp.mla_absorbed,
            Cond::MlaExpanded => !hp.mla_absorbed,
            Cond::MoeLayer => hp.is_moe_layer(layer),
            Cond::RecurrentLayer => hp.is_recurrent_layer(layer),
            Cond::AttentionLayer => !hp.is_recurrent_layer(layer),
            Cond::FullAttention => hp.has_full_attention(),
            Cond::OwnKv => hp.has_kv(layer),
            Cond::PerLayerInput => hp.n_embd_per_layer > 0,
        }
    }
}

impl Need {
    /// Whether a tensor with this need belongs in layer `layer` (`None` outside the layers)
    /// of a model with `hp`, and if so whether it must be present. `present` says whether
    /// the file has a tensor (by full name), for the needs that depend on a fused form.
    pub fn expected(
        self,
        hp: &Hparams,
        layer: Option<u64>,
        present: &dyn Fn(&str) -> bool,
    ) -> Option<bool> {
        let at = layer.unwrap_or(0);
        let has = |pattern: &str| present(&pattern.replace("{}", &at.to_string()));
        match self {
            Need::Required => Some(true),
            Need::Optional | Need::Typical => Some(false),
            Need::UnlessFused => (!has("blk.{}.attn_qkv.weight")).then_some(true),
            Need::UnlessPresent(fused) => (!has(fused)).then_some(true),
            Need::DenseLayer => (!hp.is_moe_layer(at)).then_some(true),
            Need::MoeLayer => hp.is_moe_layer(at).then_some(true),
            Need::MoeLayerOptional => hp.is_moe_layer(at).then_some(false),
            Need::SharedExperts => (hp.is_moe_layer(at) && hp.n_ff_shexp > 0).then_some(true),
            Need::Longrope => hp.longrope.then_some(false),
            Need::NotLongrope => (!hp.longrope).then_some(false),
            Need::When(cond, inner) => {
                if cond.holds(hp, at) {
                    inner.expected(hp, layer, present)
                } else {
                    None
                }
            }
            Need::Either(cond, then, otherwise) => {
                if cond.holds(hp, at) {
                    then.expected(hp, layer, present)
                } else {
                    otherwise.expected(hp, layer, present)
                }
            }
        }
    }

    /// Whether real checkpoints have the (optional) tensor in layer `layer` (`None` outside
    /// the layers) of a model with `hp`: what the generator writes beyond the required ones.
    pub fn typical(self, hp: &Hparams, layer: Option<u64>) -> bool {
        let at = layer.unwrap_or(0);
        match self {
            Need::Typical => true,
            Need::When(cond, inner) => cond.holds(hp, at) && inner.typical(hp, layer),
            Need::Either(cond, then, otherwise) => {
                if cond.holds(hp, at) {
                    then.typical(hp, layer)
                } else {
                    otherwise.typical(hp, layer)
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_sets_hold_their_layers() {
        let mut set = LayerSet::default();
        for layer in [0, 63, 64, 511, 512] {
            set.insert(layer);
        }
        assert!(set.contains(0) && set.contains(63) && set.contains(64) && set.contains(511));
        assert!(!set.contains(1) && !set.contains(512));
        assert_eq!(set.len(), 4);
    }

    #[test]
    fn layers_see_their_own_widths_and_may_not_read_a_narrower_cache() {
        let mut widths = LayerWidths::default();
        for (layer, kv) in [(0, 1), (1, 2), (2, 2), (3, 4)] {
            widths.set(layer, 4, kv, 100 * (layer + 1));
        }
        let mut hp = Hparams {
            n_layer: 4,
            n_head: 4,
            n_head_kv: 4,
            n_ff: 400,
            head_k: 8,
            head_v: 8,
            widths: Some(widths),
            ..Hparams::default()
        };
        assert_eq!((hp.at_layer(1).n_head_kv, hp.at_layer(1).n_ff), (2, 200));
        assert_eq!(Dim::K.value(&hp.at_layer(0)), 8);
        // Layer 3 (global) reads layer 2's cache: 4 heads over 2.
        hp.n_kv_shared = 1;
        assert!(hp
            .kv_sharing_error()
            .is_some_and(|e| e.contains("layer 3 reuses the KV cache of layer 2")));
        widths.set(3, 4, 1, 400);
        hp.widths = Some(widths);
        assert_eq!(hp.kv_sharing_error(), None);
    }

    #[test]
    fn conditional_needs_follow_the_layer_and_the_shape() {
        let mut hp = Hparams {
            n_layer: 4,
            n_expert: 8,
            n_dense_lead: 1,
            ..Hparams::default()
        };
        hp.recurrent.insert(0);
        let (unfused, fused) = (&|_: &str| false, &|n: &str| n == "blk.1.attn_qkv.weight");
        let attention = Need::When(Cond::AttentionLayer, &Need::UnlessFused);
        assert_eq!(attention.expected(&hp, Some(0), unfused), None);
        assert_eq!(attention.expected(&hp, Some(1), unfused), Some(true));
        assert_eq!(attention.expected(&hp, Some(1), fused), None);
        let experts = Need::UnlessPresent("blk.{}.ffn_gate_up_exps.weight");
        assert_eq!(experts.expected(&hp, Some(1), fused), Some(true));
        assert_eq!(
            experts.expected(&hp, Some(1), &|n: &str| n
                == "blk.1.ffn_gate_up_exps.weight"),
            None
        );
        let recurrent = Need::When(Cond::RecurrentLayer, &Need::Required);
        assert_eq!(recurrent.expected(&hp, Some(0), fused), Some(true));
        assert_eq!(recurrent.expected(&hp, Some(3), unfused), None);
        let bias = Need::When(Cond::MoeLayer, &Need::Typical);
        assert!(bias.typical(&hp, Some(1)) && !bias.typical(&hp, Some(0)));
        assert_eq!(bias.expected(&hp, Some(0), unfused), None);
        assert_eq!(bias.expected(&hp, Some(1), unfused), Some(false));
        let q = Need::When(Cond::QLora, &Need::Required);
        assert_eq!(q.expected(&hp, Some(1), unfused), None);
        hp.q_lora_rank = 64;
        assert_eq!(q.expected(&hp, Some(1), unfused), Some(true));
        assert_eq!(
            Need::When(Cond::MlaAbsorbed, &Need::Required).expected(&hp, Some(1), unfused),
            None
        );
    }
}
