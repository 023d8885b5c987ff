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
    let full = tokens(&run_sampled(&path, &["--ram-budget", "100%"], TOKENS));
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
/// attention with uncompressed queries (V2-Lite), and a tied head.
#[test]
fn family_variants_match_stock() {
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
