//! The shape of a synthetic model (named presets, custom dimensions) and how it becomes a
//! family's hyperparameters: defaults for what the shape leaves open, and the checks that
//! keep the generator from writing a model llama.cpp would refuse or abort on.

use hypura_core::families::{ArchSpec, Field, Hparams, LayerSet, LayerWidths};

use super::SynthError;

/// Dimensions of a synthetic model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// Embedding width.
    pub n_embd: u64,
    /// Dense FFN width (and each expert's, unless `n_ff_exp` is set).
    pub n_ff: u64,
    /// Layers.
    pub n_layer: u32,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads (GQA when fewer than `n_head`).
    pub n_head_kv: u64,
    /// Head size (0: `n_embd / n_head`).
    pub head_dim: u64,
    /// Vocabulary (replaced by the tokenizer's when one is copied).
    pub n_vocab: u64,
    /// Experts (0 = dense).
    pub n_expert: u32,
    /// Experts used per token.
    pub n_expert_used: u32,
    /// One expert's FFN width (0: `n_ff`).
    pub n_ff_exp: u64,
    /// Shared experts, in families that have them.
    pub n_shared_experts: u32,
    /// Leading dense layers, in families that have them.
    pub n_dense_lead: u32,
    /// True to leave the LM head out where the family may tie it to the embedding.
    pub tied: bool,
    /// Query compression in latent-attention families (0: none; default `n_embd / 2`).
    pub q_lora_rank: Option<u64>,
    /// Key/value compression in latent-attention families (default `n_embd / 4`).
    pub kv_lora_rank: Option<u64>,
    /// True to write latent attention in the older layout (one `attn_kv_b` expanding the
    /// latent into ordinary heads) rather than the absorbed one (`attn_k_b`, `attn_v_b`).
    pub latent_expanded: bool,
    /// Head size of sliding-window layers, in families where it is their own (0: half the
    /// head size).
    pub head_dim_swa: u64,
    /// Last layers reusing an earlier layer's KV cache, in families that have the key
    /// (`None`: the most, up to a quarter of the layers, that llama.cpp accepts).
    pub n_shared_kv: Option<u32>,
    /// Width of each layer's per-layer input embedding, in families that have it (`None`:
    /// a sixteenth of `n_embd`, in whole blocks of its type; 0: none).
    pub n_embd_per_layer: Option<u64>,
    /// Next-token-prediction layers after the trunk, in families that have them.
    pub n_nextn: u32,
    /// True to leave the next-token-prediction layers' tensors out (their count stays in
    /// the header), as some converters do, in families where llama.cpp accepts that.
    pub nextn_left_out: bool,
    /// Key/value heads layer by layer, repeated over the layers (empty: `n_head_kv` in
    /// every layer), in families that size each layer by its own.
    pub n_head_kv_layers: Vec<u64>,
    /// Dense FFN widths layer by layer, repeated over the layers (empty: `n_ff` in every
    /// layer), in families that size each layer by its own.
    pub n_ff_layers: Vec<u64>,
    /// What an MoE router's picks follow.
    pub routing: Routing,
}

/// What the routers of a synthetic MoE model follow (the weights are random either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Routing {
    /// The whole hidden state, as any random model's router does. Attention averages over
    /// the context, so consecutive tokens share most of it: picks are skewed towards some
    /// experts and mostly repeat the previous token's (measured on `mixtral-8x7b`: 84% of a
    /// layer's picks repeated, popularity entropy 0.83 of the most).
    #[default]
    Context,
    /// Only the current token: the routers read a few channels of the hidden state that
    /// hold the token's embedding and that no layer writes (their rows of every output
    /// projection are zero). Picks change with the token and are spread near-evenly over
    /// the experts: the case where a page cache cannot hold the working set.
    Token,
}

impl Routing {
    /// The channels (the first ones) the routers read and no layer writes, of a model
    /// `n_embd` wide; `None` for context routing.
    pub fn token_channels(self, n_embd: u64) -> Option<u64> {
        match self {
            Routing::Context => None,
            Routing::Token => Some((n_embd / 4).clamp(1, 64)),
        }
    }
}

impl Shape {
    /// A named shape: `llama-7b`, `llama-13b`, `llama-70b`, `mixtral-8x7b`,
    /// `qwen3-30b-a3b`.
    pub fn named(name: &str) -> Option<Self> {
        let dense = |n_embd, n_ff, n_layer, n_head, n_head_kv| Shape {
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            head_dim: 0,
            n_vocab: 32000,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            n_shared_experts: 0,
            n_dense_lead: 0,
            tied: false,
            q_lora_rank: None,
            kv_lora_rank: None,
            latent_expanded: false,
            head_dim_swa: 0,
            n_shared_kv: None,
            n_embd_per_layer: None,
            n_nextn: 0,
            nextn_left_out: false,
            n_head_kv_layers: Vec::new(),
            n_ff_layers: Vec::new(),
            routing: Routing::Context,
        };
        Some(match name {
            "llama-7b" => dense(4096, 11008, 32, 32, 32),
            "llama-13b" => dense(5120, 13824, 40, 40, 40),
            "llama-70b" => dense(8192, 28672, 80, 64, 8),
            "mixtral-8x7b" => Shape {
                n_expert: 8,
                n_expert_used: 2,
                ..dense(4096, 14336, 32, 32, 8)
            },
            // Qwen3-30B-A3B: 128 experts of width 768, 8 used (use with --arch qwen3moe).
            "qwen3-30b-a3b" => Shape {
                head_dim: 128,
                n_expert: 128,
                n_expert_used: 8,
                n_ff_exp: 768,
                ..dense(2048, 6144, 48, 32, 4)
            },
            _ => return None,
        })
    }

    /// The named shapes.
    pub const NAMES: &'static [&'static str] = &[
        "llama-7b",
        "llama-13b",
        "llama-70b",
        "mixtral-8x7b",
        "qwen3-30b-a3b",
    ];
}

/// The hyperparameters of `shape` in `spec`'s terms, checked.
/// `ple_block` is the block of the type the per-layer input projection is stored as.
pub(super) fn hparams_of(
    spec: &ArchSpec,
    shape: &Shape,
    n_vocab: u64,
    ple_block: u64,
) -> Result<Hparams, SynthError> {
    let bad = |m: String| Err(SynthError::Shape(m));
    if shape.n_head == 0
        || shape.n_head_kv == 0
        || shape.n_head % shape.n_head_kv != 0
        || shape.n_layer == 0
        || shape.n_layer > 512
        || n_vocab == 0
        || shape.n_embd == 0
        || shape.n_ff == 0
    {
        return bad("widths, head counts, layers (at most 512) and the vocabulary must be positive, n_head a multiple of n_head_kv".into());
    }
    let head_dim = if shape.head_dim > 0 {
        shape.head_dim
    } else {
        shape.n_embd / shape.n_head
    };
    if head_dim == 0 || head_dim % 2 != 0 {
        return bad(format!(
            "the head size {head_dim} must be even and positive"
        ));
    }
    if spec.query_is_embedding_wide && head_dim * shape.n_head != shape.n_embd {
        return bad(format!(
            "{} needs n_head × head size = n_embd ({} × {head_dim} ≠ {})",
            spec.name, shape.n_head, shape.n_embd
        ));
    }
    use hypura_core::families::Experts;
    let (n_expert, n_used) = match spec.experts {
        Experts::None if shape.n_expert > 0 => {
            return bad(format!("{} has no experts", spec.name));
        }
        Experts::Required if shape.n_expert == 0 => (8, 2),
        _ => (u64::from(shape.n_expert), u64::from(shape.n_expert_used)),
    };
    if n_expert > 0 && !(1..=n_expert).contains(&n_used) {
        return bad(format!(
            "n_expert_used = {n_used} must be between 1 and n_expert = {n_expert}"
        ));
    }
    let has = |f: Field| spec.keys.iter().any(|k| k.sets == f);
    let n_ff_exp = if shape.n_ff_exp > 0 && has(Field::FfExp) {
        shape.n_ff_exp
    } else {
        shape.n_ff
    };
    let shared = if has(Field::SharedExperts) {
        u64::from(shape.n_shared_experts.max(1))
    } else {
        u64::from(has(Field::FfShexp))
    };
    let n_dense_lead = if has(Field::DenseLead) {
        u64::from(shape.n_dense_lead)
    } else {
        0
    };
    if n_dense_lead > u64::from(shape.n_layer) {
        return bad("more leading dense layers than layers".into());
    }
    let n_layer = u64::from(shape.n_layer);
    // The layers sliding in the family's default pattern.
    let mut swa_layers = LayerSet::default();
    if let Some(window) = spec.sliding_window {
        let p = u64::from(window.default_period);
        for l in (0..n_layer).filter(|&l| p == 0 || l % p < p - 1) {
            swa_layers.insert(l);
        }
    }
    let head_dim_swa = match shape.head_dim_swa {
        0 if head_dim % 4 == 0 => head_dim / 2,
        0 => head_dim,
        d => d,
    };
    if has(Field::HeadKSwa) && head_dim_swa % 2 != 0 {
        return bad(format!(
            "the sliding-window head size {head_dim_swa} must be even"
        ));
    }
    let n_embd_per_layer = match shape.n_embd_per_layer {
        _ if !has(Field::EmbdPerLayer) => 0,
        Some(n) => n,
        // Whole blocks of the type the per-layer projection is stored as.
        None => (shape.n_embd / 16)
            .max(ple_block)
            .next_multiple_of(ple_block),
    };
    let n_nextn = u64::from(shape.n_nextn);
    if n_nextn > 0 && spec.nextn.is_none() {
        return bad(format!("{} has no next-token-prediction layers", spec.name));
    }
    if shape.nextn_left_out && !spec.nextn.is_some_and(|n| n.may_be_left_out) {
        return bad(format!(
            "{} needs its next-token-prediction layers' tensors",
            spec.name
        ));
    }
    if n_layer + n_nextn > 512 {
        return bad("at most 512 layers, next-token-prediction layers included".into());
    }
    let widths = layer_widths(spec, shape, n_layer + n_nextn)?;
    let mut hp = Hparams {
        n_layer: u64::from(shape.n_layer),
        n_nextn,
        widths,
        n_embd: shape.n_embd,
        n_vocab,
        n_head: shape.n_head,
        n_head_kv: shape.n_head_kv,
        n_ff: shape.n_ff,
        head_k: head_dim,
        head_v: head_dim,
        n_rot: head_dim,
        n_expert,
        n_expert_used: n_used,
        n_ff_exp,
        n_ff_shexp: shared * n_ff_exp,
        n_dense_lead,
        swa_layers,
        head_k_swa: if has(Field::HeadKSwa) {
            head_dim_swa
        } else {
            head_dim
        },
        head_v_swa: if has(Field::HeadVSwa) {
            head_dim_swa
        } else {
            head_dim
        },
        n_rot_swa: if has(Field::NRotSwa) {
            head_dim_swa
        } else {
            head_dim
        },
        n_embd_per_layer,
        ..Hparams::default()
    };
    if let Some(widths) = &hp.widths {
        // The keys' largest values, as validation reads them.
        let all = 0..hp.n_layer + hp.n_nextn;
        hp.n_head_kv = all.clone().map(|l| widths.get(l).1).max().unwrap_or(0);
        hp.n_ff = all.map(|l| widths.get(l).2).max().unwrap_or(0);
    }
    if has(Field::SharedKvLayers) {
        match shape.n_shared_kv {
            Some(n) => {
                hp.n_kv_shared = u64::from(n);
                if let Some(e) = hp.kv_sharing_error() {
                    return bad(e);
                }
            }
            None => {
                hp.n_kv_shared = n_layer / 4;
                while hp.n_kv_shared > 0 && hp.kv_sharing_error().is_some() {
                    hp.n_kv_shared -= 1;
                }
                if let Some(e) = hp.kv_sharing_error() {
                    return bad(e);
                }
            }
        }
    }
    if spec.latent.is_some() {
        // Heads of `head_dim` non-rotary dimensions and half as many rotary ones.
        hp.n_rot = head_dim / 2;
        hp.head_k_mla = head_dim + hp.n_rot;
        hp.head_v_mla = head_dim;
        hp.q_lora_rank = shape.q_lora_rank.unwrap_or(shape.n_embd / 2);
        hp.kv_lora_rank = shape.kv_lora_rank.unwrap_or(shape.n_embd / 4);
        if hp.kv_lora_rank == 0 || hp.n_rot % 2 != 0 {
            return bad(format!(
                "latent attention needs a positive kv_lora_rank and a head size {head_dim} that is a multiple of 4"
            ));
        }
        hp.mla_absorbed = !shape.latent_expanded;
        if hp.mla_absorbed {
            // The cache holds the latent and the rotary key: one head, no values.
            (hp.head_k, hp.head_v, hp.n_head_kv) = (hp.kv_lora_rank + hp.n_rot, hp.kv_lora_rank, 1);
        } else {
            (hp.head_k, hp.head_v, hp.n_head_kv) = (hp.head_k_mla, hp.head_v_mla, hp.n_head);
        }
    }
    if let Some(hybrid) = spec.hybrid {
        // Delta-net heads as the attention's: key heads as its key/value heads, value heads
        // as its heads.
        hp.ssm_conv = 4;
        hp.ssm_state = head_dim;
        hp.ssm_groups = shape.n_head_kv;
        hp.ssm_dt_rank = shape.n_head;
        hp.ssm_inner = hp.ssm_state * hp.ssm_dt_rank;
        let period = u64::from(hybrid.default_interval.max(1));
        for layer in 0..hp.n_layer {
            if (layer + 1) % period != 0 {
                hp.recurrent.insert(layer);
            }
        }
    }
    // Keys llama.cpp does not read for this shape leave their fields at 0.
    for rule in spec.keys {
        if rule.unread_if.is_some_and(|unread| unread(&hp)) {
            set_field(&mut hp, rule.sets, 0);
        }
    }
    Ok(hp)
}

/// Each layer's widths, where the shape gives them per layer (for `n_layer_all` layers,
/// next-token-prediction layers included): the family must size each layer by its own, and
/// each layer's key/value heads divide its heads.
fn layer_widths(
    spec: &ArchSpec,
    shape: &Shape,
    n_layer_all: u64,
) -> Result<Option<LayerWidths>, SynthError> {
    if shape.n_head_kv_layers.is_empty() && shape.n_ff_layers.is_empty() {
        return Ok(None);
    }
    if !spec.widths_per_layer {
        return Err(SynthError::Shape(format!(
            "{} sizes every layer alike (per-layer key/value heads and FFN widths need a family that sizes each layer by its own, as gemma4)",
            spec.name
        )));
    }
    let cycle = |values: &[u64], default: u64, layer: u64| {
        values
            .get((layer as usize) % values.len().max(1))
            .copied()
            .unwrap_or(default)
    };
    let mut widths = LayerWidths::default();
    for layer in 0..n_layer_all {
        let n_head_kv = cycle(&shape.n_head_kv_layers, shape.n_head_kv, layer);
        let n_ff = cycle(&shape.n_ff_layers, shape.n_ff, layer);
        if n_head_kv == 0 || shape.n_head % n_head_kv != 0 || n_ff == 0 {
            return Err(SynthError::Shape(format!(
                "layer {layer}: {n_head_kv} key/value heads must divide {} heads, and its FFN width {n_ff} be positive",
                shape.n_head
            )));
        }
        widths.set(layer, shape.n_head, n_head_kv, n_ff);
    }
    Ok(Some(widths))
}

/// The value of the hyperparameter `field` sets.
pub(super) fn field_value(hp: &Hparams, field: Field) -> u64 {
    match field {
        Field::FfExp => hp.n_ff_exp,
        Field::FfShexp => hp.n_ff_shexp,
        Field::SharedExperts => hp.n_ff_shexp / hp.n_ff_exp.max(1),
        Field::DenseLead => hp.n_dense_lead,
        Field::QLora => hp.q_lora_rank,
        Field::KvLora => hp.kv_lora_rank,
        Field::SsmConv => hp.ssm_conv,
        Field::SsmInner => hp.ssm_inner,
        Field::SsmState => hp.ssm_state,
        Field::SsmDtRank => hp.ssm_dt_rank,
        Field::SsmGroups => hp.ssm_groups,
        Field::HeadKSwa => hp.head_k_swa,
        Field::HeadVSwa => hp.head_v_swa,
        Field::NRotSwa => hp.n_rot_swa,
        Field::SharedKvLayers => hp.n_kv_shared,
        Field::EmbdPerLayer => hp.n_embd_per_layer,
    }
}

/// Sets the hyperparameter `field` sets.
fn set_field(hp: &mut Hparams, field: Field, value: u64) {
    match field {
        Field::FfExp => hp.n_ff_exp = value,
        Field::FfShexp => hp.n_ff_shexp = value,
        Field::SharedExperts => hp.n_ff_shexp = value * hp.n_ff_exp,
        Field::DenseLead => hp.n_dense_lead = value,
        Field::QLora => hp.q_lora_rank = value,
        Field::KvLora => hp.kv_lora_rank = value,
        Field::SsmConv => hp.ssm_conv = value,
        Field::SsmInner => hp.ssm_inner = value,
        Field::SsmState => hp.ssm_state = value,
        Field::SsmDtRank => hp.ssm_dt_rank = value,
        Field::SsmGroups => hp.ssm_groups = value,
        Field::HeadKSwa => hp.head_k_swa = value,
        Field::HeadVSwa => hp.head_v_swa = value,
        Field::NRotSwa => hp.n_rot_swa = value,
        Field::SharedKvLayers => hp.n_kv_shared = value,
        Field::EmbdPerLayer => hp.n_embd_per_layer = value,
    }
}
