//! `hypura run --parallel N`: N continuations of one prompt decoded together (one batch per
//! step) are each the continuation a lone run with that seed gives, and the streamed bytes
//! are read once per step for all of them.

mod common;
use common::*;

use serde_json::Value;

/// A run of 12 tokens at temperature `temp` within `budget` of the weights.
fn run_json(model: &std::path::Path, budget: &str, temp: &str, seed: u64, extra: &[&str]) -> Value {
    run_stats_seeded(
        model,
        &[&["--weights-budget", budget], extra].concat(),
        12,
        temp,
        seed,
    )
}

/// The sequences of `run --parallel 3` against lone runs with seeds `seed..seed + 3`; returns
/// (bytes read per token together, alone).
fn parallel_against_lone(budget: &str, temp: &str, seed: u64) -> (f64, f64) {
    let path = model(SMOLLM2);
    let path = path.as_path();
    let together = run_json(path, budget, temp, seed, &["--parallel", "3"]);
    assert_eq!(together["sequences"], 3);
    let sequences = together["sequence_tokens"].as_array().unwrap();
    assert_eq!(sequences.len(), 3);
    let mut lone_read_per_token = 0.0;
    for (i, seq) in sequences.iter().enumerate() {
        let lone = run_json(path, budget, temp, seed + i as u64, &[]);
        assert_eq!(
            seq,
            &lone["tokens"],
            "{budget}, temperature {temp}: sequence {i} differs from a lone run with seed {}",
            seed + i as u64
        );
        lone_read_per_token = lone["disk_bytes_per_token"].as_f64().unwrap();
    }
    assert_eq!(together["tokens_generated"], 36);
    (
        together["disk_bytes_per_token"].as_f64().unwrap(),
        lone_read_per_token,
    )
}

#[test]
fn sampled_parallel_continuations_are_lone_runs() {
    // Every weight resident: a KV cache per sequence, so each sequence's arithmetic is a lone
    // run's, to the bit.
    parallel_against_lone("100%", "0.8", 7);
}

#[test]
fn streamed_parallel_sequences_share_their_reads() {
    // Half the weights streamed: the sequences share one KV cache (one pass over the streamed
    // weights per step), where attention groups its sums differently from a lone run's, so
    // greedy: the same tokens, and about a third of a lone run's reads per token.
    let (together, lone) = parallel_against_lone("50%", "0", 7);
    assert!(
        together < lone * 0.5 && together > 0.0,
        "{together} read per token with 3 sequences, {lone} alone"
    );
}

#[test]
fn parallel_takes_a_sane_count() {
    let path = model(SMOLLM2);
    for bad in ["0", "100000"] {
        let out = hypura(&["run", "-m", path.to_str().unwrap(), "-p", "Hi", "-P", bad]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains("--parallel: 1 to 256"),
            "{}",
            out.stderr
        );
    }
}

/// A step's micro-batches are passes over the streamed weights: a prompt of 280 tokens
/// reads them three times in batches of 128 tokens (`-b`, the default), once in a batch of
/// 512, and gives the same tokens.
#[test]
fn a_long_prompt_reads_the_streamed_weights_once_a_batch() {
    let path = model(SMOLLM2);
    let streamed = plan_json(&path, "40%")["streamed_bytes_per_token"]
        .as_f64()
        .unwrap();
    assert!(streamed > 0.0);
    let prompt =
        ["The history of the city begins with a small village by the river."; 20].join(" ");
    let run = |batch: &str| -> Value {
        let stats = tempfile(&format!("prompt-batch-{batch}.json"));
        let args = [
            "run",
            "--model",
            path.to_str().unwrap(),
            "--prompt",
            &prompt,
            "--max-tokens",
            "6",
            "--temp",
            "0",
            "--threads",
            "2",
            "--ctx",
            "512",
            "--weights-budget",
            "40%",
            "--disk-gbps",
            "2",
            "--ignore-eos",
            "-b",
            batch,
            "--stats-json",
            stats.to_str().unwrap(),
        ];
        let out = hypura(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
        let _ = std::fs::remove_file(&stats);
        value
    };
    let small = run("128");
    let large = run("512");
    assert!(u(&small, "prompt_tokens") > 256, "{small}");
    let passes = |s: &Value| u(s, "prompt_bytes_read") as f64 / streamed;
    assert_eq!(passes(&small).round(), 3.0, "{}", passes(&small));
    assert_eq!(passes(&large).round(), 1.0, "{}", passes(&large));
    assert_eq!(tokens(&small), tokens(&large));
}
