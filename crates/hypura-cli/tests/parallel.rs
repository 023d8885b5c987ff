//! `hypura run --parallel N`: N continuations of one prompt decoded together (one batch per
//! step) are each the continuation a lone run with that seed gives, and the streamed bytes
//! are read once per step for all of them.

mod common;
use common::*;

use serde_json::Value;

/// A sampled run of 12 tokens with half the weights streamed.
fn run_json(model: &std::path::Path, seed: u64, extra: &[&str]) -> Value {
    run_stats_seeded(
        model,
        &[&["--weights-budget", "50%"], extra].concat(),
        12,
        "0.8",
        seed,
    )
}

#[test]
fn parallel_continuations_are_lone_runs_and_share_their_reads() {
    let path = model(SMOLLM2);
    let path = path.as_path();
    let together = run_json(path, 7, &["--parallel", "3"]);
    assert_eq!(together["sequences"], 3);
    let sequences = together["sequence_tokens"].as_array().unwrap();
    assert_eq!(sequences.len(), 3);
    let mut lone_read_per_token = 0.0;
    for (i, seq) in sequences.iter().enumerate() {
        let lone = run_json(path, 7 + i as u64, &[]);
        assert_eq!(
            seq,
            &lone["tokens"],
            "sequence {i} differs from a lone run with seed {}",
            7 + i
        );
        lone_read_per_token = lone["disk_bytes_per_token"].as_f64().unwrap();
    }
    assert_eq!(together["tokens_generated"], 36);
    // Three sequences per step: about a third of a lone run's reads per token.
    let together_per_token = together["disk_bytes_per_token"].as_f64().unwrap();
    assert!(
        together_per_token < lone_read_per_token * 0.5 && together_per_token > 0.0,
        "{together_per_token} read per token with 3 sequences, {lone_read_per_token} alone"
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
