//! Hyperparameters: every key llama.cpp reads for the family, with the exact GGUF type it
//! demands, and the values it asserts on (layer and expert counts, head dimensions that must
//! match, a positive finite norm epsilon, known rope scaling, …).

use super::super::arch::{ArchSpec, Experts, Field, Hparams, Hybrid, Latent, LayerWidths};
use super::super::excerpt;
use super::super::gguf::{value_type, GgufHeader, MetaValue};
use super::keys::{finite, in_range, shown, Keys};

/// llama.cpp's `LLAMA_MAX_LAYERS`.
const MAX_LAYERS: u64 = 512;
/// llama.cpp's `LLAMA_MAX_EXPERTS`.
const MAX_EXPERTS: u64 = 1024;
const MAX_EMBEDDING: u64 = 1 << 16;
const MAX_CONTEXT: u64 = 1 << 24;
const MAX_HEADS: u64 = 1024;
const MAX_HEAD_DIM: u64 = 1024;
const MAX_FEED_FORWARD: u64 = 1 << 20;
/// llama.cpp's gating functions: none (the family's default), softmax, sigmoid,
/// softmax-weight, sqrt-softplus.
const MAX_GATING_FUNC: u64 = 4;

/// The checks llama.cpp makes of every architecture (`llama_model_base::load_hparams`),
/// for one without a spec, that runs as stock llama.cpp runs it; `arch` is its name.
pub(crate) fn read_base(header: &GgufHeader, arch: &str) -> Result<(), String> {
    let k = Keys { header, arch };
    let (n_layer, _) = base(&k)?;
    let n_expert = k.u32("expert_count")?.unwrap_or(0);
    in_range(&k.full("expert_count"), n_expert, 0..=MAX_EXPERTS)?;
    // Used counts that differ between layers: llama.cpp checks the largest.
    let used = k.per_layer("expert_used_count", n_layer)?.unwrap_or(0);
    if n_expert > 0 {
        in_range(&k.full("expert_used_count"), used, 1..=n_expert)?;
    } else {
        k.absent_or_zero("expert_used_count")?;
    }
    expert_groups(&k, n_expert, used)?;
    Ok(())
}

/// Keys that llama.cpp lets differ between layers, and hypura's tiering does not yet
/// (its tensor shapes follow one value for every layer), except the widths of a family that
/// sizes each layer by its own ([`ArchSpec::widths_per_layer`]).
const PER_LAYER_KEYS: &[&str] = &[
    "attention.head_count",
    "attention.head_count_kv",
    "feed_forward_length",
    "expert_used_count",
    "expert_feed_forward_length",
];

/// The keys of the widths a family may size each layer by.
const WIDTH_KEYS: &[&str] = &[
    "attention.head_count",
    "attention.head_count_kv",
    "feed_forward_length",
];

/// Why a valid model of a spec'd family is not tiered, if it is not: one of
/// [`PER_LAYER_KEYS`] differs between layers where the family does not size layers by their
/// own, it has experts where the spec has none (an MoE variant hypura has not described
/// yet), or next-token-prediction layers hypura's spec does not describe.
pub(crate) fn not_tiered(header: &GgufHeader, spec: &ArchSpec) -> Option<String> {
    let k = Keys {
        header,
        arch: spec.name,
    };
    if spec.experts == Experts::None {
        if let Some(MetaValue::Uint(n @ 1..)) = header.get(&k.full("expert_count")) {
            return Some(format!(
                "{} = {n}: hypura's {} spec has no experts yet",
                k.full("expert_count"),
                spec.name
            ));
        }
    }
    let nextn_key = k.full("nextn_predict_layers");
    if let Some(MetaValue::Uint(n @ 1..)) = header.get(&nextn_key) {
        if spec.nextn.is_none() {
            return Some(format!(
                "{nextn_key} = {n}: hypura's {} spec has no next-token-prediction layers",
                spec.name
            ));
        }
    }
    PER_LAYER_KEYS
        .iter()
        .filter(|key| !(spec.widths_per_layer && WIDTH_KEYS.contains(key)))
        .find_map(|key| match k.header.get(&k.full(key)) {
            Some(MetaValue::Array(a)) => {
                let values = k.header.numbers(a);
                values.iter().any(|v| *v != values[0]).then(|| {
                    format!(
                        "{} differs between layers, which hypura does not tier yet",
                        k.full(key)
                    )
                })
            }
            _ => None,
        })
}

/// Layer count and embedding length, and the keys every family has.
fn base(k: &Keys) -> Result<(u64, u64), String> {
    let n_layer = k.required_u32("block_count", 1..=MAX_LAYERS)?;
    let n_embd = k.required_u32("embedding_length", 1..=MAX_EMBEDDING)?;
    k.required_u32("context_length", 1..=MAX_CONTEXT)?;
    let nextn = k.u32("nextn_predict_layers")?.unwrap_or(0);
    in_range(&k.full("nextn_predict_layers"), nextn, 0..=n_layer)?;
    if let Some(causal) = k.header.get(&k.full("attention.causal")) {
        if causal != &MetaValue::Bool(true) {
            return Err(format!(
                "{} = {} (only causal models generate text)",
                k.full("attention.causal"),
                shown(causal)
            ));
        }
    }
    if k.header.get(&k.full("pooling_type")).is_some() {
        return Err(format!(
            "{} is set: embedding models are not supported",
            k.full("pooling_type")
        ));
    }
    Ok((n_layer, n_embd))
}

/// Reads and checks the family's hyperparameters.
pub(crate) fn read(header: &GgufHeader, spec: &'static ArchSpec) -> Result<Hparams, String> {
    let k = Keys {
        header,
        arch: spec.name,
    };
    let (n_layer_all, n_embd) = base(&k)?;
    // Next-token-prediction layers follow the trunk (`not_tiered` keeps a family without
    // them from here). Without a trunk they are a draft model for speculative decoding,
    // which generates nothing by itself (llama.cpp loads its trunk tensors as optional and
    // would build a graph of missing weights).
    let n_nextn = k.u32("nextn_predict_layers")?.unwrap_or(0);
    if n_nextn > 0 && (spec.nextn.is_none() || n_nextn >= n_layer_all) {
        return Err(format!(
            "{} = {n_nextn} of {n_layer_all} layers leaves no layer to generate with (a next-token-prediction draft alone)",
            k.full("nextn_predict_layers")
        ));
    }
    let n_layer = n_layer_all - n_nextn;
    let widths = layer_widths(&k, spec, n_layer_all)?;
    let largest = |of: fn(&(u64, u64, u64)) -> u64| widths.iter().map(of).max().unwrap_or(0);
    let (n_head, n_head_kv, n_ff) = (largest(|w| w.0), largest(|w| w.1), largest(|w| w.2));
    // llama.cpp's default head size divides by the first layer's heads.
    let n_head_first = widths.first().map_or(1, |w| w.0);
    let head_k = k
        .u32("attention.key_length")?
        .unwrap_or(n_embd / n_head_first);
    let head_v = k
        .u32("attention.value_length")?
        .unwrap_or(n_embd / n_head_first);
    if head_k != head_v && !spec.head_sizes_may_differ {
        return Err(format!(
            "key head size {head_k} differs from value head size {head_v}"
        ));
    }
    let head_dim = in_range("the attention head size", head_k, 2..=MAX_HEAD_DIM)?;
    if head_dim % 2 != 0 {
        return Err(format!("the attention head size {head_dim} is odd"));
    }
    let head_v = in_range("the value head size", head_v, 1..=MAX_HEAD_DIM)?;
    // Sliding-window layers have the global layers' head size unless the family reads
    // their own.
    for (key, field) in [
        ("attention.key_length_swa", Field::HeadKSwa),
        ("attention.value_length_swa", Field::HeadVSwa),
        ("rope.dimension_count_swa", Field::NRotSwa),
    ] {
        if spec.key_of(field).is_some() {
            continue;
        }
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
        || (spec.rope_covers_head && n_rot != head_dim)
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
    if let Some(out) = k.u32("embedding_length_out")? {
        if out != n_embd {
            return Err(format!(
                "{} = {out} differs from the embedding length {n_embd}",
                k.full("embedding_length_out")
            ));
        }
    }
    let n_expert = k.u32("expert_count")?.unwrap_or(0);
    let mut n_expert_used = 0;
    if n_expert == 0 || spec.experts == Experts::None {
        if n_expert != 0 {
            return Err(format!(
                "{} = {n_expert}: this family has no experts",
                k.full("expert_count")
            ));
        }
        if spec.experts == Experts::Required {
            return Err(format!("{} is missing", k.full("expert_count")));
        }
        k.absent_or_zero("expert_used_count")?;
    } else {
        in_range(&k.full("expert_count"), n_expert, 1..=MAX_EXPERTS)?;
        let used = k
            .per_layer("expert_used_count", n_layer_all)?
            .ok_or_else(|| format!("{} is missing", k.full("expert_used_count")))?;
        n_expert_used = in_range(&k.full("expert_used_count"), used, 1..=n_expert)?;
    }
    let mut hp = Hparams {
        n_layer,
        n_nextn,
        widths: spec.widths_per_layer.then(|| {
            let mut per_layer = LayerWidths::default();
            for (l, (h, kv, ff)) in widths.iter().enumerate() {
                per_layer.set(l as u64, *h, *kv, *ff);
            }
            per_layer
        }),
        n_embd,
        n_vocab: n_vocab(header),
        n_head,
        n_head_kv,
        n_ff,
        head_k: head_dim,
        head_v,
        n_rot,
        n_expert,
        n_expert_used,
        n_ff_exp: n_ff,
        longrope: scaling == Some("longrope"),
        head_k_swa: head_dim,
        head_v_swa: head_v,
        n_rot_swa: n_rot,
        ..Hparams::default()
    };
    let mut shared_experts = 0;
    for rule in spec.keys {
        if rule.unread_if.is_some_and(|unread| unread(&hp)) {
            continue;
        }
        let value = match k.per_layer(rule.key, n_layer_all)? {
            Some(v) => in_range(&k.full(rule.key), v, rule.min..=MAX_FEED_FORWARD)?,
            None if rule.required => return Err(format!("{} is missing", k.full(rule.key))),
            None => continue,
        };
        match rule.sets {
            Field::FfExp => hp.n_ff_exp = value,
            Field::FfShexp => hp.n_ff_shexp = value,
            Field::SharedExperts => shared_experts = value,
            Field::DenseLead => hp.n_dense_lead = value,
            Field::QLora => hp.q_lora_rank = value,
            Field::KvLora => hp.kv_lora_rank = value,
            Field::HeadKSwa => hp.head_k_swa = value,
            Field::HeadVSwa => hp.head_v_swa = value,
            Field::NRotSwa => hp.n_rot_swa = value,
            Field::SharedKvLayers => hp.n_kv_shared = value,
            Field::EmbdPerLayer => hp.n_embd_per_layer = value,
            Field::SsmConv => hp.ssm_conv = value,
            Field::SsmInner => hp.ssm_inner = value,
            Field::SsmState => hp.ssm_state = value,
            Field::SsmDtRank => hp.ssm_dt_rank = value,
            Field::SsmGroups => hp.ssm_groups = value,
        }
    }
    swa_head(&k, spec, &hp)?;
    // llama.cpp's fallback for an expert width of 0 or absent, in families that have a
    // key for it.
    if spec.keys.iter().any(|r| r.sets == Field::FfExp)
        && k.per_layer("expert_feed_forward_length", n_layer_all)?
            .unwrap_or(0)
            == 0
        && n_expert_used > 0
    {
        hp.n_ff_exp = n_ff / n_expert_used;
    }
    if n_expert > 0 && hp.n_ff_exp == 0 {
        return Err(format!(
            "the experts' FFN width is 0 ({} and {} are missing)",
            k.full("expert_feed_forward_length"),
            k.full("feed_forward_length")
        ));
    }
    if let Some(f) = k.u32("expert_gating_func")? {
        if f > MAX_GATING_FUNC {
            return Err(format!(
                "{} = {f} is not a gating function llama.cpp knows",
                k.full("expert_gating_func")
            ));
        }
    }
    if shared_experts > 0 && hp.n_ff_shexp == 0 {
        hp.n_ff_shexp = shared_experts * hp.n_ff_exp;
    }
    // llama.cpp's fallback for a shared width of 0 or absent, in families that have a key
    // for it: the dense width.
    if spec.keys.iter().any(|r| r.sets == Field::FfShexp) && hp.n_ff_shexp == 0 {
        hp.n_ff_shexp = n_ff;
        if n_expert > 0 && n_ff == 0 {
            return Err(format!(
                "the shared expert's FFN width is 0 ({} and {} are missing)",
                k.full("expert_shared_feed_forward_length"),
                k.full("feed_forward_length")
            ));
        }
    }
    if let Some(latent) = spec.latent {
        self::latent(&k, latent, &mut hp)?;
    }
    if let Some(hybrid) = spec.hybrid {
        recurrent(&k, hybrid, &mut hp)?;
    }
    if let Some(key) = spec.rope_sections_key {
        rope_sections(&k, key, head_dim)?;
    }
    if hp.n_dense_lead > n_layer {
        return Err(format!(
            "{} leading dense layers in a model of {n_layer} layers",
            hp.n_dense_lead
        ));
    }
    expert_groups(&k, n_expert, n_expert_used)?;
    if let Some(window) = spec.sliding_window {
        if k.u32(window.window_key)?.is_none() && window.window_required {
            return Err(format!("{} is missing", k.full(window.window_key)));
        }
        hp.swa_layers = window.layers(header, spec.name, n_layer_all)?;
    }
    if spec.key_of(Field::SharedKvLayers).is_some() {
        if let Some(e) = hp.kv_sharing_error() {
            return Err(e);
        }
    }
    if spec.query_is_embedding_wide && head_dim * n_head != n_embd {
        return Err(format!(
                "{n_head} heads of size {head_dim} do not make the embedding width {n_embd}, which {} requires",
                spec.name
            ));
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
    Ok(hp)
}

/// Each layer's heads, key/value heads and FFN width (`n_layer_all` of them, next-token
/// prediction layers included), checked as llama.cpp asserts on them in each layer: heads
/// present, a positive number of key/value heads that divides them.
fn layer_widths(
    k: &Keys,
    spec: &ArchSpec,
    n_layer_all: u64,
) -> Result<Vec<(u64, u64, u64)>, String> {
    let missing = |key: &str| format!("{} is missing", k.full(key));
    let heads = k
        .layer_values("attention.head_count", n_layer_all)?
        .ok_or_else(|| missing("attention.head_count"))?;
    let heads_kv = k
        .layer_values("attention.head_count_kv", n_layer_all)?
        .unwrap_or_else(|| heads.clone());
    // A family whose every layer has experts may leave the dense width out.
    let ffs = match k.layer_values("feed_forward_length", n_layer_all)? {
        Some(ffs) => Some(ffs),
        None if spec.experts == Experts::Required => None,
        None => return Err(missing("feed_forward_length")),
    };
    // A key's name in messages: with the layer where the values differ between layers.
    let name = |key: &str, values: &[u64], layer: usize| {
        if values.iter().all(|v| *v == values[0]) {
            k.full(key)
        } else {
            format!("{}[{layer}]", k.full(key))
        }
    };
    let differ = [&heads, &heads_kv]
        .iter()
        .any(|v| v.iter().any(|x| *x != v[0]));
    let mut widths = Vec::with_capacity(heads.len());
    for l in 0..heads.len() {
        let n_head = in_range(
            &name("attention.head_count", &heads, l),
            heads[l],
            1..=MAX_HEADS,
        )?;
        let n_head_kv = in_range(
            &name("attention.head_count_kv", &heads_kv, l),
            heads_kv[l],
            1..=n_head,
        )?;
        if n_head % n_head_kv != 0 {
            return Err(format!(
                "{n_head} attention heads are not a multiple of {n_head_kv} key/value heads{}",
                if differ {
                    format!(" (layer {l})")
                } else {
                    String::new()
                }
            ));
        }
        let n_ff = match &ffs {
            Some(ffs) => in_range(
                &name("feed_forward_length", ffs, l),
                ffs[l],
                1..=MAX_FEED_FORWARD,
            )?,
            None => 0,
        };
        widths.push((n_head, n_head_kv, n_ff));
    }
    Ok(widths)
}

/// Expert groups (routing picks the best groups first, then experts in them): llama.cpp
/// asserts that they divide the experts and that fewer are used than there are; each
/// group's score is its best two experts', so a group needs two, and the groups used must
/// hold the experts used.
fn expert_groups(k: &Keys, n_expert: u64, n_expert_used: u64) -> Result<(), String> {
    let groups = k.u32("expert_group_count")?.unwrap_or(0);
    let used = k.u32("expert_group_used_count")?.unwrap_or(0);
    if groups <= 1 {
        return Ok(()); // no group routing
    }
    if groups >= n_expert
        || n_expert % groups != 0
        || n_expert / groups < 2
        || used == 0
        || used >= groups
        || n_expert_used > used * (n_expert / groups)
    {
        return Err(format!(
            "{} = {groups} and {} = {used} do not fit {n_expert} experts with {n_expert_used} used",
            k.full("expert_group_count"),
            k.full("expert_group_used_count")
        ));
    }
    Ok(())
}

/// Latent attention's sizes: the uncompressed heads (both keys set selects the absorbed
/// layout), and what each layout's cache asserts on in the first decode.
fn latent(k: &Keys, latent: Latent, hp: &mut Hparams) -> Result<(), String> {
    let key_mla = k.u32(latent.key_length_key)?.unwrap_or(0);
    let value_mla = k.u32(latent.value_length_key)?.unwrap_or(0);
    if (key_mla == 0) != (value_mla == 0) {
        // llama.cpp's check is an assert release builds drop; the model then loads as the
        // expanded layout.
        return Err(format!(
            "{} and {} must be both set or both absent",
            k.full(latent.key_length_key),
            k.full(latent.value_length_key)
        ));
    }
    hp.mla_absorbed = key_mla > 0;
    (hp.head_k_mla, hp.head_v_mla) = if hp.mla_absorbed {
        (key_mla, value_mla)
    } else {
        (hp.head_k, hp.head_v)
    };
    in_range(
        "the latent query head size",
        hp.head_k_mla,
        1..=MAX_HEAD_DIM,
    )?;
    in_range(
        "the latent value head size",
        hp.head_v_mla,
        1..=MAX_HEAD_DIM,
    )?;
    if hp.head_k_mla <= hp.n_rot {
        return Err(format!(
            "the query head size {} leaves no room beside {} rotary dimensions ({})",
            hp.head_k_mla,
            hp.n_rot,
            k.full("rope.dimension_count")
        ));
    }
    if hp.mla_absorbed {
        if hp.head_k != hp.kv_lora_rank + hp.n_rot || hp.n_head_kv != 1 {
            return Err(format!(
                "a latent cache needs {} = kv_lora_rank + rotary dimensions = {} and {} = 1 (got {} and {})",
                k.full("attention.key_length"),
                hp.kv_lora_rank + hp.n_rot,
                k.full("attention.head_count_kv"),
                hp.head_k,
                hp.n_head_kv
            ));
        }
    } else if hp.n_head_kv != hp.n_head {
        return Err(format!(
            "expanded latent attention needs {} = {} = the head count (got {})",
            k.full("attention.head_count_kv"),
            hp.n_head,
            hp.n_head_kv
        ));
    }
    Ok(())
}

/// A hybrid's recurrent layers: which they are, and the shapes the graph asserts on.
fn recurrent(k: &Keys, hybrid: Hybrid, hp: &mut Hparams) -> Result<(), String> {
    hp.recurrent =
        hybrid.recurrent_layers(k.header, k.arch, hp.n_layer + hp.n_nextn, hp.n_layer)?;
    if hp.ssm_inner != hp.ssm_state * hp.ssm_dt_rank {
        return Err(format!(
            "{} = {} must be {} × {} = {}",
            k.full("ssm.inner_size"),
            hp.ssm_inner,
            k.full("ssm.state_size"),
            k.full("ssm.time_step_rank"),
            hp.ssm_state * hp.ssm_dt_rank
        ));
    }
    if hp.ssm_dt_rank % hp.ssm_groups != 0 {
        return Err(format!(
            "{} = {} is not a multiple of {} = {}",
            k.full("ssm.time_step_rank"),
            hp.ssm_dt_rank,
            k.full("ssm.group_count"),
            hp.ssm_groups
        ));
    }
    Ok(())
}

/// The multi-section rope's four sections: integers (one for all four, or four), one of the
/// first three positive, at most a head in all (ggml asserts both).
fn rope_sections(k: &Keys, key: &str, head_dim: u64) -> Result<(), String> {
    let full = k.full(key);
    let sections: Vec<f64> = match k.header.meta.get(&full) {
        None => return Err(format!("{full} is missing")),
        Some(m) => match &m.value {
            MetaValue::Int(v) if m.value_type == value_type::I32 => vec![*v as f64; 4],
            MetaValue::Array(a)
                if matches!(a.item_type, value_type::I32 | value_type::U32) && a.count == 4 =>
            {
                k.header.numbers(a)
            }
            other => {
                return Err(format!(
                    "{full} = {} (four integers, or one int32)",
                    shown(other)
                ))
            }
        },
    };
    let sum: f64 = sections.iter().sum();
    if sections.iter().any(|s| *s < 0.0)
        || sections[..3].iter().all(|s| *s == 0.0)
        || sum > head_dim as f64
    {
        return Err(format!(
            "{full} = {sections:?}: one of the first three must be positive, the sum at most the head size {head_dim}"
        ));
    }
    Ok(())
}

/// The head size and rotary dimensions of sliding-window layers, in a family that reads
/// their own: llama.cpp refuses differing key and value sizes, and its rope asserts that the
/// rotary dimensions (which default to the global layers') fit the head.
fn swa_head(k: &Keys, spec: &ArchSpec, hp: &Hparams) -> Result<(), String> {
    if spec.key_of(Field::HeadKSwa).is_none() && spec.key_of(Field::NRotSwa).is_none() {
        return Ok(());
    }
    let (head, head_v, n_rot) = (hp.head_k_swa, hp.head_v_swa, hp.n_rot_swa);
    if head != head_v {
        return Err(format!(
            "sliding-window key head size {head} differs from value head size {head_v}"
        ));
    }
    let head = in_range("the sliding-window head size", head, 2..=MAX_HEAD_DIM)?;
    if head % 2 != 0 {
        return Err(format!("the sliding-window head size {head} is odd"));
    }
    if n_rot == 0 || n_rot > head || n_rot % 2 != 0 || (spec.rope_covers_head && n_rot != head) {
        let key = spec
            .key_of(Field::NRotSwa)
            .unwrap_or("rope.dimension_count");
        return Err(format!(
            "{} = {n_rot} does not fit the sliding-window head size {head}",
            k.full(key)
        ));
    }
    for (what, value) in [("heads", hp.n_head), ("key/value heads", hp.n_head_kv)] {
        if value * head >= 1 << 31 {
            return Err(format!("{value} {what} of size {head} are too many"));
        }
    }
    Ok(())
}

/// The vocabulary size: the tokenizer's token count.
fn n_vocab(header: &GgufHeader) -> u64 {
    match header.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(a)) => a.count,
        _ => 0,
    }
}
