//! Greedy generation is token-for-token the same with and without tiering, on both real
//! models, at every budget; with 10% of the weights, bytes read and memory stay within plan.

mod common;
use common::*;

const TOKENS: usize = 32;

fn check_model(name: &str) {
    check_against_stock(name, &model(name), TOKENS, run_stats);
}

#[test]
fn smollm2_same_tokens_at_every_budget() {
    check_model(SMOLLM2);
}

#[test]
fn gemma3_same_tokens_at_every_budget() {
    check_model(GEMMA3);
}

/// With llama.cpp's repacked layouts on (the default), the whole-model budget keeps the
/// buffer types stock picks, so the text is the same too.
#[test]
fn repacked_full_budget_matches_stock() {
    for name in [SMOLLM2, GEMMA3] {
        let model = model(name);
        let stock = tokens(&run_stats(&model, &["--baseline"], 16));
        let full = tokens(&run_stats(&model, &["--ram-budget", "100%"], 16));
        assert_eq!(
            full, stock,
            "{name}: full budget differs from stock with repacking on"
        );
    }
}
