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

/// The MiB llama.cpp reports for the model buffer of type `buft` in a `-vv` run's log.
fn model_buffer_mib(log: &str, buft: &str) -> Option<f64> {
    log.lines()
        .find(|l| l.contains(&format!(" {buft} model buffer size =")))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().trim_end_matches("MiB").trim().parse().ok())
}

/// With llama.cpp's repacked layouts on (the default), the whole-model budget keeps the
/// layouts stock picks (hypura decides which weights llama.cpp would repack, and fills them
/// itself), so the text is the same too.
#[test]
fn repacked_full_budget_matches_stock() {
    for name in [SMOLLM2, GEMMA3] {
        let model = model(name);
        let stock = tokens(&run_stats(&model, &["--baseline"], 16));
        let full = tokens(&run_stats(&model, &["--weights-budget", "100%"], 16));
        assert_eq!(
            full, stock,
            "{name}: full budget differs from stock with repacking on"
        );
    }
    // Gemma 3 has repacked weights on this CPU: the same bytes of them as stock's.
    let path = model(GEMMA3);
    let path = path.to_str().unwrap();
    let args = [
        "run", "-m", path, "-p", "Hello", "-n", "1", "--temp", "0", "-vv",
    ];
    let stock = hypura(&[&args[..], &["--baseline"]].concat());
    let stock_log = &stock.stderr;
    let ours = hypura(&args);
    let our_log = &ours.stderr;
    let stock_mib = model_buffer_mib(stock_log, "CPU_REPACK");
    assert!(
        stock_mib.unwrap_or(0.0) > 0.0,
        "stock repacks gemma: {stock_log}"
    );
    assert_eq!(
        model_buffer_mib(our_log, "HYPURA_REPACK"),
        stock_mib,
        "hypura repacks what stock repacks: {our_log}"
    );
}

/// A tiered model keeps the weights it holds in RAM in the repacked layout (streamed ones stay
/// plain). Half of Gemma 3's weights hold all of those llama.cpp repacks on this CPU, so the
/// repacked bytes are stock's, and so are the logits, bit for bit, with repacking on; with
/// `--no-repack` nothing is repacked.
#[test]
fn a_tiered_model_repacks_what_it_holds() {
    let path = model(GEMMA3);
    let log = |extra: &[&str]| {
        let args = [
            "run",
            "-m",
            path.to_str().unwrap(),
            "-p",
            "Hello",
            "-n",
            "1",
            "--temp",
            "0",
            "-vv",
        ];
        let out = hypura(&[&args[..], extra].concat());
        assert_eq!(out.code, 0, "{extra:?}: {}", out.stderr);
        out.stderr
    };
    let stock_mib = model_buffer_mib(&log(&["--baseline"]), "CPU_REPACK");
    assert!(stock_mib.unwrap_or(0.0) > 0.0, "stock repacks gemma");
    let half = log(&["--weights-budget", "50%"]);
    assert!(half.contains(" HYPURA model buffer size"), "{half}");
    assert_eq!(
        model_buffer_mib(&half, "HYPURA_REPACK"),
        stock_mib,
        "{half}"
    );
    let plain = log(&["--weights-budget", "50%", "--no-repack"]);
    assert_eq!(model_buffer_mib(&plain, "HYPURA_REPACK"), None, "{plain}");

    let stock = run_stats(&path, &["--baseline"], TOKENS);
    let tiered = run_stats(&path, &["--weights-budget", "50%"], TOKENS);
    assert!(u(&tiered, "disk_bytes_read") > 0, "50% streams");
    assert_eq!(tokens(&tiered), tokens(&stock));
    assert_eq!(tiered["logits_digest"], stock["logits_digest"]);
}
