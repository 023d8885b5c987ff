//! One spec per architecture family hypura tiers: the facts about its llama.cpp graph that
//! hypura relies on, kept here and nowhere else ([`families`] holds the table). Adding a
//! family is adding a spec (and a test): validation, the planner, the streamer and the
//! synthetic-model generator all read it.

mod families;
mod rules;

use super::gguf::{value_type, GgufHeader, MetaValue};
pub use families::FAMILIES;
pub(crate) use families::UNTIERED;
pub use rules::{Cond, Dim, Hparams, LayerSet, LayerWidths, Need, TensorKind, TensorRule};

/// What hypura knows about one architecture family.
#[derive(Debug)]
#[non_exhaustive]
pub struct ArchSpec {
    /// `general.architecture` value.
    pub name: &'static str,
    /// Tensors outside the layers.
    pub globals: &'static [&'static [TensorRule]],
    /// Tensors of each layer.
    pub layer: &'static [&'static [TensorRule]],
    /// Family-specific keys (after `{arch}.`) and the hyperparameter each sets.
    pub keys: &'static [KeyRule],
    /// Other keys a model of this family has (after `{arch}.`), with the value the
    /// generator writes: sliding windows, soft-capping, gating functions.
    pub example_keys: &'static [(&'static str, Example)],
    /// Whether (and how) the family has experts.
    pub experts: Experts,
    /// True when llama.cpp asserts that the rotary dimensions cover the whole head.
    pub rope_covers_head: bool,
    /// True when the graph sizes the query and the attention output `n_embd` wide, so that
    /// heads × head size must be the embedding width.
    pub query_is_embedding_wide: bool,
    /// The graph node holding the final hidden state, right before the LM head
    /// (`mul_mat(output, result_norm)`): hypura stops the graph there when it computes the
    /// head itself.
    pub head_input_node: &'static str,
    /// The graph node holding the experts the router selected (`{node}-{layer}`, an I32
    /// tensor of the experts used × the batch's tokens), which the expert products read as
    /// their ids: hypura reads the selected experts once it is computed.
    pub selected_experts_node: &'static str,
    /// True when the logits are the head's product alone (optionally soft-capped), so that
    /// hypura may compute the head itself and stream it in chunks.
    pub head_streamable: bool,
    /// Metadata key (after `{arch}.`) of the final logit soft-capping, if the family has it.
    pub final_logit_softcap_key: Option<&'static str>,
    /// The soft-capping llama.cpp applies when the key is absent (0: none).
    pub default_final_logit_softcap: f32,
    /// The family's sliding-window attention, if it has any.
    pub sliding_window: Option<SlidingWindow>,
    /// Names (prefixes) of the KV-cache tensors llama.cpp reads in the graph (and of the
    /// recurrent state's, in a hybrid family).
    pub kv_cache_tensor_prefixes: &'static [&'static str],
    /// True when the key and value head sizes may differ (else llama.cpp asserts they are
    /// equal).
    pub head_sizes_may_differ: bool,
    /// The family's latent attention (keys and values compressed to one cached latent), if
    /// it has it.
    pub latent: Option<Latent>,
    /// The family's recurrent layers, if it is a hybrid of recurrent and attention layers.
    pub hybrid: Option<Hybrid>,
    /// Key (after `{arch}.`) of the multi-section rope's sections, if the family requires
    /// them: four integers, one of the first three positive, at most a head in all.
    pub rope_sections_key: Option<&'static str>,
    /// True when llama.cpp sizes each layer by its own head counts and FFN width (the
    /// per-layer arrays of `attention.head_count`, `attention.head_count_kv` and
    /// `feed_forward_length`); else it sizes every layer by the first layer's.
    pub widths_per_layer: bool,
    /// The family's next-token-prediction layers, if llama.cpp knows them for it.
    pub nextn: Option<Nextn>,
}

/// Next-token-prediction (MTP) layers: `nextn_predict_layers` layers after the trunk, each
/// a trunk layer (attention and experts) plus the tensors here. llama.cpp checks their
/// tensors' shapes and never loads them (they serve speculative decoding, which hypura does
/// not do): hypura never reads them either.
#[derive(Debug, Clone, Copy)]
pub struct Nextn {
    /// The tensors an MTP layer has beyond a trunk layer's (`{}` is the layer).
    pub tensors: &'static [TensorRule],
    /// True when llama.cpp loads a file whose MTP layers were left out (it tells by the
    /// first MTP layer's `nextn.eh_proj`): their tensors are then all optional.
    pub may_be_left_out: bool,
}

/// Latent attention (DeepSeek 2's MLA): keys and values compressed to `kv_lora_rank`, with
/// a rotary part of `rope.dimension_count` beside it. Files come in two layouts, told apart
/// by the two keys here: with both set, the cache holds the latent itself (one key/value
/// head of `kv_lora_rank` + rotary dimensions, no values) and the graph absorbs the key and
/// value expansions (`attn_k_b`, `attn_v_b`); else one `attn_kv_b` expands the latent into
/// ordinary heads.
#[derive(Debug, Clone, Copy)]
pub struct Latent {
    /// Key (after `{arch}.`) of the uncompressed query/key head size.
    pub key_length_key: &'static str,
    /// Key (after `{arch}.`) of the uncompressed value head size.
    pub value_length_key: &'static str,
}

/// A hybrid family's recurrent layers (gated delta-net or Mamba-2 style: a causal
/// convolution over the inner width and two groups of state-size heads, then a state of
/// state size × inner width, both F32): which layers they are, as llama.cpp decides.
#[derive(Debug, Clone, Copy)]
pub struct Hybrid {
    /// Key (after `{arch}.`) of one flag per layer (nonzero: recurrent), or one for all.
    pub layers_key: &'static str,
    /// Key (after `{arch}.`) of the period of full-attention layers, read when the flags
    /// are absent: layer `i` attends when `(i + 1) % period == 0`.
    pub interval_key: &'static str,
    /// The period when neither key is present.
    pub default_interval: u32,
}

impl Hybrid {
    /// The recurrent layers of a model with `n_layer` layers (`n_layer_all` with its
    /// next-token-prediction layers, which always attend) whose keys are prefixed by
    /// `arch`, as llama.cpp reads them; why not, where it would throw or crash.
    pub(crate) fn recurrent_layers(
        &self,
        header: &GgufHeader,
        arch: &str,
        n_layer_all: u64,
        n_layer: u64,
    ) -> Result<LayerSet, String> {
        let mut set = self.flagged_layers(header, arch, n_layer_all)?;
        for l in n_layer..n_layer_all {
            set.remove(l);
        }
        Ok(set)
    }

    fn flagged_layers(
        &self,
        header: &GgufHeader,
        arch: &str,
        n_layer: u64,
    ) -> Result<LayerSet, String> {
        let mut set = LayerSet::default();
        let layers_key = format!("{arch}.{}", self.layers_key);
        if let Some(meta) = header.meta.get(&layers_key) {
            match &meta.value {
                MetaValue::Uint(v) if meta.value_type == value_type::U32 => {
                    if *v != 0 {
                        (0..n_layer).for_each(|l| set.insert(l));
                    }
                }
                MetaValue::Array(a)
                    if matches!(
                        a.item_type,
                        value_type::BOOL | value_type::U32 | value_type::I32
                    ) =>
                {
                    if a.count != n_layer {
                        return Err(format!(
                            "{layers_key} has {} values for {n_layer} layers",
                            a.count
                        ));
                    }
                    for (l, v) in header.numbers(a).into_iter().enumerate() {
                        if v != 0.0 {
                            set.insert(l as u64);
                        }
                    }
                }
                _ => {
                    return Err(format!(
                    "{layers_key} must be one flag per layer (bool or integer array) or a uint32"
                ))
                }
            }
            return Ok(set);
        }
        let interval_key = format!("{arch}.{}", self.interval_key);
        let interval = match header.meta.get(&interval_key) {
            None => u64::from(self.default_interval),
            Some(m) => match &m.value {
                MetaValue::Uint(v) if m.value_type == value_type::U32 => *v,
                _ => return Err(format!("{interval_key} must be a uint32")),
            },
        };
        if interval == 0 {
            return Err(format!(
                "{interval_key} = 0 (llama.cpp divides by it and crashes)"
            ));
        }
        for l in 0..n_layer {
            if (l + 1) % interval != 0 {
                set.insert(l);
            }
        }
        Ok(set)
    }
}

/// Experts in a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experts {
    /// Never.
    None,
    /// In some models (Llama: Mixtral).
    Optional,
    /// Always.
    Required,
}

/// Sliding-window layers: the window's key (after `{arch}.`), how the file says which layers
/// slide, and how many layers make one period of the pattern when the file does not say (as
/// llama.cpp's `set_swa_pattern`: the last layer of each period attends globally; 0 means
/// every layer slides).
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindow {
    /// Key of the window size.
    pub window_key: &'static str,
    /// Default period of the pattern (where the file must give flags: the period the
    /// generator writes).
    pub default_period: u32,
    /// True when every model of the family has sliding-window layers (else only those
    /// whose window key is above 0).
    pub always: bool,
    /// True when llama.cpp requires the window key (else it has a default).
    pub window_required: bool,
    /// How `attention.sliding_window_pattern` gives the pattern.
    pub pattern: SwaPattern,
}

/// How a family's `attention.sliding_window_pattern` says which layers slide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwaPattern {
    /// A period (a uint32), or one flag per layer (an array of exactly `block_count`); the
    /// default period when absent.
    PeriodOrFlags,
    /// Flags only, required (llama.cpp's `get_arr`): an array of at most 512; layers past
    /// its end attend globally.
    Flags,
}

/// The pattern key, after `{arch}.`.
const PATTERN_KEY: &str = "attention.sliding_window_pattern";
/// llama.cpp's `LLAMA_MAX_LAYERS`.
const MAX_LAYERS: u64 = 512;

impl SlidingWindow {
    /// The layers of a model of `n_layer` layers (architecture `arch`: the keys' prefix)
    /// that slide, as llama.cpp reads the pattern; an error where it would refuse the
    /// pattern, or assert that no layer slides.
    pub(crate) fn layers(
        &self,
        header: &GgufHeader,
        arch: &str,
        n_layer: u64,
    ) -> Result<LayerSet, String> {
        let mut set = LayerSet::default();
        let window = header.get_int(&format!("{arch}.{}", self.window_key));
        if !self.always && window.unwrap_or(0) <= 0 {
            return Ok(set);
        }
        let key = format!("{arch}.{PATTERN_KEY}");
        let period = |set: &mut LayerSet, p: u64| {
            for l in (0..n_layer).filter(|&l| p == 0 || l % p < p - 1) {
                set.insert(l);
            }
        };
        match (header.meta.get(&key), self.pattern) {
            (None, SwaPattern::PeriodOrFlags) => period(&mut set, u64::from(self.default_period)),
            (None, SwaPattern::Flags) => return Err(format!("{key} is missing")),
            (Some(m), _) => match &m.value {
                MetaValue::Uint(p)
                    if m.value_type == value_type::U32
                        && self.pattern == SwaPattern::PeriodOrFlags =>
                {
                    period(&mut set, *p)
                }
                MetaValue::Array(a)
                    if matches!(
                        a.item_type,
                        value_type::BOOL | value_type::U32 | value_type::I32
                    ) && match self.pattern {
                        SwaPattern::PeriodOrFlags => a.count == n_layer,
                        SwaPattern::Flags => a.count <= MAX_LAYERS,
                    } =>
                {
                    for (l, flag) in header.numbers(a).iter().enumerate() {
                        if *flag != 0.0 && (l as u64) < n_layer {
                            set.insert(l as u64);
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "{key} = {} ({})",
                        match other {
                            MetaValue::Array(a) => format!("an array of {}", a.count),
                            _ => "a scalar".into(),
                        },
                        match self.pattern {
                            SwaPattern::PeriodOrFlags => "a period, or one flag per layer",
                            SwaPattern::Flags => "an array of at most 512 integer or bool flags",
                        }
                    ))
                }
            },
        }
        if set.is_empty() {
            return Err(format!(
                "{key} leaves no sliding-window layer, which llama.cpp asserts against"
            ));
        }
        Ok(set)
    }
}

/// A family-specific key and the hyperparameter it sets.
#[derive(Debug, Clone, Copy)]
pub struct KeyRule {
    /// Key after `{arch}.`.
    pub key: &'static str,
    /// The hyperparameter it sets.
    pub sets: Field,
    /// True when llama.cpp requires it.
    pub required: bool,
    /// Smallest accepted value.
    pub min: u64,
    /// A condition on the shape under which llama.cpp does not read the key at all (its
    /// field stays 0, whatever the file says), as DeepSeek 2 for its "lite" layer counts.
    pub unread_if: Option<fn(&Hparams) -> bool>,
}

/// A hyperparameter a [`KeyRule`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// One expert's FFN width.
    FfExp,
    /// The shared experts' FFN width.
    FfShexp,
    /// Count of shared experts (their FFN width is this times an expert's).
    SharedExperts,
    /// Leading dense layers.
    DenseLead,
    /// Query low-rank compression.
    QLora,
    /// Key/value low-rank compression.
    KvLora,
    /// Key head size of sliding-window layers (else the global layers').
    HeadKSwa,
    /// Value head size of sliding-window layers (else the global layers').
    HeadVSwa,
    /// Rotary dimensions of sliding-window layers (else the global layers').
    NRotSwa,
    /// Last layers reusing an earlier layer's KV cache; a family with this key has
    /// llama.cpp's KV reuse (which asserts on the layers, even when it is 0).
    SharedKvLayers,
    /// Width of each layer's slice of the per-layer input embedding (0: none).
    EmbdPerLayer,
    /// Recurrent layers: the convolution's kernel size.
    SsmConv,
    /// Recurrent layers: the inner width.
    SsmInner,
    /// Recurrent layers: the state size.
    SsmState,
    /// Recurrent layers: value heads (the time-step rank).
    SsmDtRank,
    /// Recurrent layers: key heads (groups).
    SsmGroups,
}

/// A value the generator writes for a key.
#[derive(Debug, Clone, Copy)]
pub enum Example {
    /// An unsigned integer.
    U32(u32),
    /// A float.
    F32(f32),
    /// A boolean.
    Bool(bool),
}

/// Bytes of one KV-cache element (llama.cpp's default cache type is F16).
const KV_ELEMENT_BYTES: u64 = 2;
/// Bytes of one recurrent-state element (llama.cpp keeps them in F32).
const RECURRENT_ELEMENT_BYTES: u64 = 4;
/// llama.cpp pads cache sizes (cells) to this.
const KV_CELL_PADDING: u64 = 256;

impl ArchSpec {
    /// The spec of `arch`, if hypura tiers it.
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
    pub(crate) fn final_logit_softcap(&self, header: &GgufHeader) -> f32 {
        self.final_logit_softcap_key
            .and_then(|k| header.get_float(&self.key(k)))
            .map_or(self.default_final_logit_softcap, |v| v as f32)
    }

    /// The tensors of one layer.
    pub fn layer_tensors(&self) -> impl Iterator<Item = &'static TensorRule> {
        self.layer.iter().flat_map(|rules| rules.iter())
    }

    /// The tensors of layer `layer` of a model with `hp`: a trunk layer's, and for a
    /// next-token-prediction layer its own beyond them.
    pub fn tensors_of_layer(
        &self,
        hp: &Hparams,
        layer: u64,
    ) -> impl Iterator<Item = &'static TensorRule> {
        let nextn: &'static [TensorRule] = match self.nextn {
            Some(nextn) if hp.is_nextn_layer(layer) => nextn.tensors,
            _ => &[],
        };
        self.layer_tensors().chain(nextn.iter())
    }

    /// The family's key (after `{arch}.`) setting `field`, if it has one.
    pub fn key_of(&self, field: Field) -> Option<&'static str> {
        self.keys.iter().find(|k| k.sets == field).map(|k| k.key)
    }

    /// The tensors outside the layers.
    pub fn global_tensors(&self) -> impl Iterator<Item = &'static TensorRule> {
        self.globals.iter().flat_map(|rules| rules.iter())
    }
}

/// Bytes of the KV cache llama.cpp allocates for a model of architecture `arch` (its keys'
/// prefix; `spec` is its family's, [`UNTIERED`] without one) for `n_ctx` positions over
/// `n_seq` sequences (in one shared cache or a cache each: the larger) with micro-batches of
/// `n_ubatch`: F16 keys and values in every
/// attention layer of the trunk with a cache of its own (not those reusing an earlier
/// layer's, nor next-token-prediction layers), each with its own key/value heads where the
/// file gives them per layer; sliding-window layers hold only their window, absorbed latent
/// attention caches one key head, the latent, and no values. Values are counted at the
/// widest layer's size (llama.cpp pads them so when it stores them transposed). A hybrid's
/// recurrent layers hold their F32 states, one per sequence. An estimate for families
/// without a spec.
pub(crate) fn kv_cache_bytes(
    header: &GgufHeader,
    arch: &str,
    spec: &ArchSpec,
    n_ctx: u32,
    n_seq: u32,
    n_ubatch: u32,
) -> u64 {
    let get = |k: &str| header.get_int(&format!("{arch}.{k}"));
    let n_layer_all = get("block_count").unwrap_or(0).clamp(0, MAX_LAYERS as i128) as u64;
    let n_nextn = get("nextn_predict_layers")
        .unwrap_or(0)
        .clamp(0, n_layer_all as i128) as u64;
    let n_layer = n_layer_all - n_nextn;
    let n_embd = get("embedding_length").unwrap_or(0).max(0) as u64;
    // One value per layer (an array's, or the one value repeated).
    let per_layer = |k: &str| -> Option<Vec<u64>> {
        match header.get(&format!("{arch}.{k}")) {
            Some(MetaValue::Array(a)) => Some(
                header
                    .numbers(a)
                    .into_iter()
                    .map(|v| v.max(0.0) as u64)
                    .chain(std::iter::repeat(0))
                    .take(n_layer_all as usize)
                    .collect(),
            ),
            _ => get(k).map(|v| vec![v.max(0) as u64; n_layer_all as usize]),
        }
    };
    let field = |f: Field| spec.key_of(f).and_then(get).map(|v| v.max(0) as u64);
    let heads = per_layer("attention.head_count");
    let n_head = heads
        .as_ref()
        .and_then(|h| h.iter().copied().max())
        .unwrap_or(1)
        .max(1);
    let heads_kv = per_layer("attention.head_count_kv")
        .or(heads)
        .unwrap_or_else(|| vec![1; n_layer_all as usize]);
    let head_k = get("attention.key_length").map_or(n_embd / n_head, |v| v.max(0) as u64);
    let head_v = get("attention.value_length").map_or(n_embd / n_head, |v| v.max(0) as u64);
    let head_k_swa = field(Field::HeadKSwa).unwrap_or(head_k);
    let head_v_swa = field(Field::HeadVSwa).unwrap_or(head_v);
    let n_kv_shared = field(Field::SharedKvLayers).unwrap_or(0).min(n_layer);
    let n_seq = u64::from(n_seq.max(1));
    // As llama_context pads the context: to 256 cells, then, with a cache per sequence, per
    // sequence. hypura shares one cache among the sequences of a tiered model (`kv_unified`)
    // and not otherwise, which the plan decides after this estimate: the larger of the two.
    let n_ctx = u64::from(n_ctx.max(1)).next_multiple_of(KV_CELL_PADDING);
    let per_sequence_cells = (n_ctx / n_seq).max(1).next_multiple_of(KV_CELL_PADDING);
    let full_cells = n_ctx.max(per_sequence_cells * n_seq);
    let latent_absorbed = spec.latent.is_some_and(|l| {
        get(l.key_length_key).unwrap_or(0) > 0 && get(l.value_length_key).unwrap_or(0) > 0
    });
    let recurrent = spec
        .hybrid
        .and_then(|h| h.recurrent_layers(header, arch, n_layer_all, n_layer).ok())
        .unwrap_or_default();
    let recurrent_bytes = {
        let ssm = |k: &str| get(&format!("ssm.{k}")).unwrap_or(0).max(0) as u64;
        let (d_conv, d_inner, d_state, groups) = (
            ssm("conv_kernel"),
            ssm("inner_size"),
            ssm("state_size"),
            ssm("group_count"),
        );
        let conv = d_conv.saturating_sub(1) * (d_inner + 2 * groups * d_state);
        let state = d_state * d_inner;
        recurrent.len().min(n_layer) * (conv + state) * RECURRENT_ELEMENT_BYTES * n_seq
    };
    // Sliding-window layers, where the window is known (else counted as global).
    let sliding = spec.sliding_window.and_then(|s| {
        let w = get(s.window_key).filter(|w| *w > 0)?;
        let layers = s.layers(header, arch, n_layer_all).ok()?;
        // Shared: a window per sequence plus a micro-batch; one cache per sequence: a window
        // plus a micro-batch in each.
        let w = w as u64;
        let ub = u64::from(n_ubatch);
        let shared = (w * n_seq + ub)
            .min(n_ctx)
            .next_multiple_of(KV_CELL_PADDING);
        let per_sequence = (w + ub)
            .min(per_sequence_cells)
            .next_multiple_of(KV_CELL_PADDING)
            * n_seq;
        Some((layers, shared.max(per_sequence)))
    });
    let is_swa = |l: u64| sliding.is_some_and(|(layers, _)| layers.contains(l));
    let attention_layers = || (0..n_layer - n_kv_shared).filter(|&l| !recurrent.contains(l));
    let n_head_kv = |l: u64| heads_kv.get(l as usize).copied().unwrap_or(0);
    let v_max = if latent_absorbed {
        0
    } else {
        attention_layers()
            .map(|l| if is_swa(l) { head_v_swa } else { head_v }.saturating_mul(n_head_kv(l)))
            .max()
            .unwrap_or(0)
    };
    let attention_bytes: u64 = attention_layers()
        .map(|l| {
            let (cells, k) = match sliding {
                Some((_, cells)) if is_swa(l) => (cells, head_k_swa),
                _ => (full_cells, head_k),
            };
            k.saturating_mul(n_head_kv(l))
                .saturating_add(v_max)
                .saturating_mul(cells * KV_ELEMENT_BYTES)
        })
        .fold(0u64, u64::saturating_add);
    attention_bytes.saturating_add(recurrent_bytes)
}
