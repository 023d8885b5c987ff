//! Every family hypura tiers, and every weight type the CPU computes, proven identical to
//! stock llama.cpp: `hypura synth` writes a small random model from the family's spec
//! (family-specific features included: GQA, QK-norms, sliding-window layers, attention
//! sinks, biases, shared experts, gating variants, tied and untied heads), and sampled
//! generation (temperature 1, fixed seed) at 100%, 50% and 10% of the weights must give the
//! same tokens as stock from bit-identical logits (their digest), reading what the plan says
//! and holding no more than the budget.
//! The family matrix runs on one type (Q8_0, plus the mixed Q4_K_M on one family); the type
//! matrix on one family (llama).

mod common;
use common::*;

use hypura_core::families::FAMILIES;
use hypura_tools::synth::known_types;

const TOKENS: usize = 8;

fn check(label: &str, extra: &[&str]) {
    let path = synth_model(label, extra);
    check_against_stock(label, &path, TOKENS, run_sampled);
    std::fs::remove_file(path).unwrap();
}

/// [`check`], and with llama.cpp's repacked CPU layouts (the default) the whole-model
/// budget keeps the buffer types stock picks, so the tokens are stock's too.
fn check_with_repacking(label: &str, extra: &[&str]) {
    let path = synth_model(label, extra);
    check_against_stock(label, &path, TOKENS, run_sampled);
    let stock = tokens(&run_sampled(&path, &["--baseline"], TOKENS));
    let full = tokens(&run_sampled(&path, &["--weights-budget", "100%"], TOKENS));
    assert_eq!(
        full, stock,
        "{label}: full budget differs from stock with repacking on"
    );
    std::fs::remove_file(path).unwrap();
}

/// Which families to run: all, or those named in `HYPURA_FAMILIES` (comma-separated).
fn selected(name: &str, variable: &str) -> bool {
    std::env::var(variable).map_or(true, |v| v.split(',').any(|f| f == name))
}

#[test]
fn every_family_matches_stock_at_every_budget() {
    let mut ran = 0;
    for family in FAMILIES {
        if !selected(family.name, "HYPURA_FAMILIES") {
            continue;
        }
        // One leading dense layer where the family has them, a tied head where it may have
        // one (Qwen 3, SmolLM 3), an untied one elsewhere.
        let mut extra = vec![
            "--arch",
            family.name,
            "--type",
            "q8_0",
            "--n-dense-lead",
            "1",
        ];
        if ["qwen3", "smollm3"].contains(&family.name) {
            extra.push("--tied");
        }
        check_with_repacking(&format!("family-{}", family.name), &extra);
        ran += 1;
    }
    assert!(ran > 0, "no family selected");
}

/// Layouts a family's default model does not have: DeepSeek's older expanded latent
/// attention with uncompressed queries (V2-Lite), and a tied head; Gemma 4 with experts
/// (26B A4B: a routed expert FFN beside the dense one in every layer).
#[test]
fn family_variants_match_stock() {
    check(
        "variant-gemma4-moe",
        &[
            "--arch",
            "gemma4",
            "--type",
            "q8_0",
            "--n-expert",
            "8",
            "--n-expert-used",
            "2",
        ],
    );
    check(
        "variant-deepseek2-lite-expanded",
        &[
            "--arch",
            "deepseek2",
            "--type",
            "q8_0",
            "--q-lora-rank",
            "0",
            "--latent-expanded",
            "--tied",
        ],
    );
}

/// Gemma 4 sized layer by layer, as real Gemma 4 files are: key/value heads and FFN widths
/// per layer: here 1, 2, 2 and 4 key/value heads cycling with the sliding pattern (every
/// fourth layer attends globally, with 4), so that one of the last layers reuses the KV
/// cache of a layer wider than itself, and two FFN widths.
#[test]
fn per_layer_widths_match_stock() {
    check(
        "variant-gemma4-per-layer",
        &[
            "--arch",
            "gemma4",
            "--type",
            "q8_0",
            "--n-head-kv-layers",
            "1,2,2,4",
            "--n-ff-layers",
            "2048,1792",
            "--n-shared-kv",
            "4",
        ],
    );
}

/// Next-token-prediction layers (GLM-4.5, DeepSeek 3 and Qwen 3.5 files have one): the
/// trunk matches stock at every budget, and the plan leaves the layer unused, never read
/// nor held.
#[test]
fn next_token_prediction_layers_are_never_read() {
    for arch in ["glm4moe", "qwen35moe", "deepseek2"] {
        if !selected(arch, "HYPURA_FAMILIES") {
            continue;
        }
        let label = format!("variant-{arch}-nextn");
        let path = synth_model(
            &label,
            &[
                "--arch",
                arch,
                "--type",
                "q8_0",
                "--n-dense-lead",
                "1",
                "--n-nextn",
                "1",
            ],
        );
        check_against_stock(&label, &path, TOKENS, run_sampled);
        let plan = plan_json(&path, "50%");
        let tensors = plan["tensors"].as_array().unwrap();
        let (unused, used): (Vec<_>, Vec<_>) = tensors
            .iter()
            .partition(|t| t["placement"]["kind"] == "unused");
        assert!(
            unused
                .iter()
                .any(|t| t["name"] == "blk.16.nextn.eh_proj.weight")
                && unused.iter().all(|t| t["layer"] == 16),
            "{label}: the prediction layer (16) is not what the plan leaves unused"
        );
        assert!(
            used.iter().all(|t| t["layer"] != 16),
            "{label}: the plan reads part of the prediction layer"
        );
        assert_eq!(
            u(&plan, "model_bytes"),
            used.iter()
                .map(|t| t["bytes"].as_u64().unwrap())
                .sum::<u64>(),
            "{label}: the model's bytes count the unused layer"
        );
        let stats = run_sampled(&path, &["--no-repack", "--weights-budget", "50%"], TOKENS);
        let accessed = stats["tensor_accesses"].as_array().unwrap();
        assert!(
            accessed
                .iter()
                .all(|a| !a["name"].as_str().unwrap().starts_with("blk.16.")),
            "{label}: a tensor of the prediction layer was loaded"
        );
        std::fs::remove_file(path).unwrap();
    }
    // Converted without the layer (its count kept), as llama.cpp accepts for GLM-4.5.
    if selected("glm4moe", "HYPURA_FAMILIES") {
        check(
            "variant-glm4moe-nextn-left-out",
            &[
                "--arch",
                "glm4moe",
                "--type",
                "q8_0",
                "--n-nextn",
                "1",
                "--nextn-left-out",
            ],
        );
    }
}

#[test]
fn a_mixed_quantization_matches_stock() {
    check("mix-q4_k_m", &["--arch", "qwen3", "--type", "q4_k_m"]);
}

#[test]
fn every_weight_type_matches_stock_at_every_budget() {
    let mut ran = 0;
    for name in known_types() {
        if !selected(&name, "HYPURA_TYPES") {
            continue;
        }
        check(
            &format!("type-{name}"),
            &["--arch", "llama", "--type", &name],
        );
        ran += 1;
    }
    assert!(ran > 0, "no type selected");
}

/// Experts read slice by slice (the default where the budget allows), for a Mixtral-style
/// `llama`, `qwen3moe` and `gpt-oss` (32 experts, 4 used): at 100%, 50%, 25% and 15% of
/// the weights the tokens and logits are stock's, the weights held stay within the budget,
/// and every byte read is a selected expert's slice (nothing else streams).
#[test]
fn expert_slices_match_stock() {
    for arch in ["llama", "qwen3moe", "gpt-oss"] {
        if !selected(arch, "HYPURA_FAMILIES") {
            continue;
        }
        let label = format!("experts-{arch}");
        let path = synth_moe_model(&label, arch, &[]);
        let baseline = run_sampled(&path, &["--baseline", "--no-repack"], TOKENS);
        for budget in ["100%", "50%", "25%", "15%"] {
            let plan = plan_json(&path, budget);
            let stats = run_sampled(&path, &["--no-repack", "--weights-budget", budget], TOKENS);
            let at = format!("{label} {budget}");
            assert_eq!(tokens(&stats), tokens(&baseline), "{at}: tokens differ");
            assert_eq!(
                stats["logits_digest"], baseline["logits_digest"],
                "{at}: logits differ"
            );
            let budget_bytes = u(&stats, "ram_budget_bytes");
            assert!(
                u(&stats, "peak_held_weight_bytes") <= budget_bytes,
                "{at}: held {} weight bytes, budget {budget_bytes}",
                u(&stats, "peak_held_weight_bytes")
            );
            check_expert_reads(&at, &stats);
            if budget == "100%" {
                assert_eq!(u(&stats, "disk_bytes_read"), 0, "{at}: read at full budget");
                continue;
            }
            // The plan reads experts slice by slice, and the run did read some.
            assert!(
                u(&plan, "expert_cache_bytes") > 0,
                "{at}: no expert cache planned"
            );
            assert!(
                plan["tensors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["placement"]["kind"] == "expert_slices"),
                "{at}: no expert tensor read slice by slice"
            );
            assert!(
                u(&stats, "expert_misses") + u(&stats, "expert_filled_hits") > 0,
                "{at}: no expert read"
            );
            check_expert_sim(&at, &stats);
            // Per layer, the counts add up to the totals.
            let layers = stats["expert_layers"].as_array().unwrap();
            assert_eq!(layers.len(), 16, "{at}: not every layer counted");
            for key in ["hits", "misses", "bytes_read"] {
                let sum: u64 = layers.iter().map(|l| l[key].as_u64().unwrap()).sum();
                assert_eq!(
                    sum,
                    u(&stats, &format!("expert_{key}")),
                    "{at}: per-layer {key}"
                );
            }
            check_peak_rss(&at, &stats);
        }
        std::fs::remove_file(path).unwrap();
    }
}

/// `hypura expert-sim` replays the run's requests: one per layer and decoded token, and the
/// optimum hits at least as often as LRU and hypura's policy.
fn check_expert_sim(at: &str, stats: &serde_json::Value) {
    let trace = stats["expert_trace"].as_array().unwrap();
    assert_eq!(
        trace.len() as u64,
        16 * u(stats, "tokens_decoded"),
        "{at}: not one request per layer and token"
    );
    let path = tempfile(&format!("{}-stats.json", at.replace(['%', ' '], "-")));
    std::fs::write(&path, stats.to_string()).unwrap();
    let out = hypura(&["expert-sim", "--stats", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.code, 0, "{at}: expert-sim failed:\n{}", out.stderr);
    let hits = |policy: &str| -> u64 {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {policy}")))
            .unwrap_or_else(|| panic!("{at}: no {policy} row in\n{}", out.stdout));
        line.split('|').nth(3).unwrap().trim().parse().unwrap()
    };
    let optimum = hits("belady");
    assert!(
        optimum >= hits("lru") && optimum >= hits("hypura"),
        "{at}: the optimum hits less than another policy:\n{}",
        out.stdout
    );
}

/// Layers wide enough to stream in three groups (attention, the FFN's gate and up, its down
/// projection, each at least 16 MiB), in families whose FFNs llama.cpp builds differently
/// (SwiGLU, GELU-gated with post-norms, a fused gate and up, biases): the same tokens and
/// logits as stock, and each streamed tensor read once a token, which a group the graph used
/// out of the planned order would break (it is read again).
#[test]
fn layers_streamed_in_three_groups_match_stock() {
    for arch in ["llama", "gemma3", "phi3", "qwen2"] {
        if !selected(arch, "HYPURA_FAMILIES") {
            continue;
        }
        let label = format!("wide-{arch}");
        let path = synth_model_with(
            &label,
            &[
                "--arch",
                arch,
                "--type",
                "q4_0",
                "--n-layer",
                "2",
                "--n-embd",
                "4096",
                "--n-ff",
                "8192",
                "--n-head",
                "32",
                "--n-head-kv",
                "8",
                "--n-vocab",
                "1000",
            ],
        );
        let plan = plan_json(&path, "60%");
        let parts: Vec<&str> = plan["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["part"].as_str())
            .collect();
        assert!(
            parts.contains(&"attention") && parts.contains(&"ffn_down"),
            "{label}: the plan does not split its layers: {parts:?}"
        );
        let stock = run_sampled(&path, &["--baseline", "--no-repack"], TOKENS);
        let stats = run_sampled(&path, &["--no-repack", "--weights-budget", "60%"], TOKENS);
        assert_eq!(
            tokens(&stats),
            tokens(&stock),
            "{label}: tokens differ from stock"
        );
        assert_eq!(
            stats["logits_digest"], stock["logits_digest"],
            "{label}: logits differ from stock"
        );
        let full_peak = u(
            &run_sampled(&path, &["--no-repack", "--weights-budget", "100%"], 1),
            "peak_rss_bytes",
        );
        check_streaming(&label, "60%", &stats, full_peak);
        std::fs::remove_file(path).unwrap();
    }
}
