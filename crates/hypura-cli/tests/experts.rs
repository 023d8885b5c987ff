//! The expert cache's saved profiles and read-ahead, on synthetic mixture-of-experts models
//! (16 layers, 32 experts, 4 used): the tokens stay stock llama.cpp's, a run saves the
//! profile the next run and `plan` start from, a bad profile is reported and left aside,
//! and the next layer's experts predicted from its router are read ahead and counted.

mod common;
use common::*;

const TOKENS: usize = 12;

/// A Mixtral-style model (`llama` with experts) routed as `routing` says.
fn moe_model(label: &str, routing: &str) -> std::path::PathBuf {
    synth_moe_model(label, "llama", &["--routing", routing])
}

/// The per-layer counts of `key` add up to the total `expert_{key}`.
fn check_layer_sums(at: &str, stats: &serde_json::Value, key: &str) {
    let sum: u64 = stats["expert_layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l[key].as_u64().unwrap())
        .sum();
    assert_eq!(
        sum,
        u(stats, &format!("expert_{key}")),
        "{at}: per-layer {key}"
    );
}

#[test]
fn a_saved_profile_starts_the_next_run_and_plan() {
    let path = moe_model("profile", "context");
    let dir = tempfile("profiles");
    let _ = std::fs::remove_dir_all(&dir);
    let profiles = ["--expert-profiles", dir.to_str().unwrap()];
    let stock = run_sampled(&path, &["--baseline", "--no-repack"], TOKENS);
    let budget = ["--no-repack", "--weights-budget", "25%"];
    let with = |extra: &[&str]| -> Vec<String> {
        budget.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let args = with(&profiles);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // No profile yet: the run starts without one, and saves one.
    let first = run_sampled(&path, &args, TOKENS);
    assert!(first["expert_profile_hit_rate"].is_null());
    assert_eq!(tokens(&first), tokens(&stock), "first run: tokens differ");
    let saved: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(saved.len(), 1, "one profile saved in {}", dir.display());
    let profile: serde_json::Value =
        serde_json::from_slice(&std::fs::read(saved[0].as_ref().unwrap().path()).unwrap()).unwrap();
    let layers = profile["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 16, "every layer profiled");
    // Each layer's chances are those of 4 picks among 32: they sum to at most 4.
    for l in layers {
        let sum: f64 = l["chances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_f64().unwrap())
            .sum();
        assert!(sum > 0.0 && sum <= 4.0 + 1e-3, "layer chances sum to {sum}");
    }

    // `plan` predicts from it.
    let plan = hypura(&[
        "plan",
        "--model",
        path.to_str().unwrap(),
        "--weights-budget",
        "25%",
        "--disk-gbps",
        "1.6",
        "--expert-profiles",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let predicted = plan["expert_profile_hit_rate"].as_f64().unwrap();
    assert!(predicted > 0.0 && predicted <= 1.0, "predicted {predicted}");

    // The next run starts from it: the same tokens, the same prediction.
    let second = run_sampled(&path, &args, TOKENS);
    assert_eq!(second["expert_profile_hit_rate"].as_f64(), Some(predicted));
    assert_eq!(tokens(&second), tokens(&stock), "second run: tokens differ");
    assert_eq!(second["logits_digest"], stock["logits_digest"]);
    check_expert_reads("second run", &second);
    check_peak_rss("second run", &second);

    // A damaged profile is reported in one line and left aside; the run goes on.
    std::fs::write(saved[0].as_ref().unwrap().path(), b"{\"format\": 1").unwrap();
    let mut run = vec![
        "run",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "--max-tokens",
        "4",
        "--threads",
        "2",
        "--ctx",
        "256",
        "--disk-gbps",
        "1.6",
    ];
    run.extend_from_slice(&args);
    let out = hypura(&run);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("not a profile") && out.stderr.contains("starting without it"),
        "{}",
        out.stderr
    );
    // ...and is replaced by a good one at the end.
    assert!(
        out.stderr.contains("expert profile saved"),
        "{}",
        out.stderr
    );

    // --no-expert-profile neither reads nor writes one (not even in the default folder,
    // this test process's cache).
    let name = saved[0].as_ref().unwrap().file_name();
    let default = tempfile("cache").join("hypura").join("experts").join(&name);
    let _ = std::fs::remove_file(&default);
    run.truncate(run.len() - args.len());
    run.extend_from_slice(&budget);
    run.push("--no-expert-profile");
    let out = hypura(&run);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("expert profile"), "{}", out.stderr);
    assert!(!default.exists(), "{} written", default.display());
    // Without the flag, the default folder gets it.
    run.pop();
    let out = hypura(&run);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        default.exists(),
        "{} not written:\n{}",
        default.display(),
        out.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(path).unwrap();
}

#[test]
fn experts_predicted_for_the_next_layer_are_read_ahead() {
    // Routed by the token: the next layer's router, run on this layer's input, picks what
    // that layer will (the routers read channels no layer writes), so read-ahead hits.
    let path = moe_model("read-ahead", "token");
    let stock = run_sampled(&path, &["--baseline", "--no-repack"], TOKENS);
    for budget in ["50%", "25%"] {
        let at = format!("read-ahead {budget}");
        let stats = run_sampled(
            &path,
            &[
                "--no-repack",
                "--no-expert-profile",
                "--weights-budget",
                budget,
            ],
            TOKENS,
        );
        assert_eq!(tokens(&stats), tokens(&stock), "{at}: tokens differ");
        assert_eq!(stats["logits_digest"], stock["logits_digest"], "{at}");
        let hits = u(&stats, "expert_prefetch_hits");
        assert!(hits > 0, "{at}: nothing read ahead was used");
        // Every slice read ahead and used counts as a hit, never as a miss.
        assert!(hits <= u(&stats, "expert_hits"), "{at}");
        assert!(
            u(&stats, "expert_prefetch_wasted_bytes") <= u(&stats, "expert_prefetch_bytes"),
            "{at}"
        );
        check_expert_reads(&at, &stats);
        for key in ["hits", "misses", "bytes_read", "prefetch_hits"] {
            check_layer_sums(&at, &stats, key);
        }
        check_peak_rss(&at, &stats);
    }
    std::fs::remove_file(path).unwrap();
}

#[test]
fn an_moe_built_from_smollm2_writes_its_text_and_matches_stock() {
    let dense = model(SMOLLM2);
    let path = synth_model_with(
        "smollm2-moe",
        &[
            "--moe-from",
            dense.to_str().unwrap(),
            "--n-expert",
            "4",
            "--n-expert-used",
            "2",
        ],
    );
    // Identical experts, renormalized weights: the dense model's text (up to rounding, which
    // may tip a later token), so readable.
    let dense_tokens = tokens(&run_stats(&dense, &["--baseline", "--no-repack"], 16));
    let moe_tokens = tokens(&run_stats(&path, &["--baseline", "--no-repack"], 16));
    assert_eq!(
        moe_tokens[..8],
        dense_tokens[..8],
        "the MoE's text is not the dense model's"
    );
    // hypura gives stock's tokens at every budget...
    check_against_stock("smollm2-moe", &path, 16, run_stats);
    // ...and reads experts slice by slice at 25%, the router's random picks.
    let stats = run_stats(
        &path,
        &[
            "--no-repack",
            "--no-expert-profile",
            "--weights-budget",
            "25%",
        ],
        16,
    );
    assert!(u(&stats, "expert_cache_bytes") > 0, "no expert cache");
    assert!(u(&stats, "expert_misses") > 0, "no expert read");
    assert_eq!(tokens(&stats), moe_tokens);
    check_expert_reads("smollm2-moe 25%", &stats);

    // What cannot become an MoE says so in one line.
    let refused = |source: &std::path::Path, needle: &str| {
        let out = hypura(&[
            "synth",
            "--moe-from",
            source.to_str().unwrap(),
            "--out",
            tempfile("refused.gguf").to_str().unwrap(),
        ]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(
            out.stderr.contains(needle) && out.stderr.trim().lines().count() == 1,
            "{needle}: {}",
            out.stderr
        );
    };
    refused(&path, "already a mixture-of-experts");
    // A copy of the dense model, named as both source and output: never written over.
    let source = tempfile("smollm2-source.gguf");
    std::fs::copy(&dense, &source).unwrap();
    let out = hypura(&[
        "synth",
        "--moe-from",
        source.to_str().unwrap(),
        "--out",
        source.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("is the source itself"),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read(&source).unwrap() == std::fs::read(&dense).unwrap(),
        "the source was written"
    );
    std::fs::remove_file(&source).unwrap();
    refused(&model(GEMMA3), "only dense llama-family");
    let truncated = tempfile("smollm2-truncated.gguf");
    let bytes = std::fs::read(&dense).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(&truncated, "smollm2-truncated.gguf");
    std::fs::remove_file(truncated).unwrap();
    std::fs::remove_file(path).unwrap();
}
