//! `hypura synth` writes models that stock llama.cpp and hypura both load and run, with the
//! same greedy tokens (small custom shapes, so the test is quick).

mod common;
use common::*;

fn synth(out: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "synth",
        "--out",
        out.to_str().unwrap(),
        "--n-layer",
        "3",
        "--n-embd",
        "256",
        "--n-ff",
        "512",
    ];
    args.extend_from_slice(extra);
    let o = hypura(&args);
    assert_eq!(o.code, 0, "{}", o.stderr);
}

#[test]
fn synthetic_dense_and_moe_models_run_the_same_in_both_modes() {
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "dense-q4_0-gqa",
            vec!["--n-head", "4", "--n-head-kv", "2", "--n-vocab", "2000"],
        ),
        (
            "dense-q4_k",
            vec![
                "--type",
                "q4_k",
                "--n-head",
                "4",
                "--n-head-kv",
                "4",
                "--n-vocab",
                "2000",
            ],
        ),
        (
            "moe",
            vec![
                "--shape",
                "mixtral-8x7b",
                "--n-head",
                "4",
                "--n-head-kv",
                "2",
                "--n-vocab",
                "2000",
                "--n-expert",
                "4",
            ],
        ),
    ];
    for (name, extra) in cases {
        let path = tempfile(&format!("synth-{name}.gguf"));
        synth(&path, &extra);
        let stock = tokens(&run_stats(&path, &["--baseline", "--no-repack"], 12));
        let tiered = run_stats(&path, &["--no-repack", "--weights-budget", "60%"], 12);
        assert_eq!(tokens(&tiered), stock, "{name}: hypura differs from stock");
        assert!(
            u(&tiered, "disk_bytes_read") > 0,
            "{name}: nothing streamed at 60%"
        );
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn synth_copies_a_real_tokenizer_and_rejects_bad_shapes() {
    let path = tempfile("synth-tok.gguf");
    synth(
        &path,
        &[
            "--n-head",
            "4",
            "--n-head-kv",
            "4",
            "--tokenizer-from",
            model(SMOLLM2).to_str().unwrap(),
        ],
    );
    let plan = hypura(&[
        "plan",
        "--model",
        path.to_str().unwrap(),
        "--json",
        "--disk-gbps",
        "1",
    ]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let embd = p["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap()
        .clone();
    // SmolLM2's vocabulary: 49152 rows of 256 Q4_0 values (8 blocks of 18 bytes)
    assert_eq!(embd["bytes"].as_u64().unwrap(), 49152 * 8 * 18);
    assert!(!run_stats(&path, &["--baseline"], 4)["tokens"]
        .as_array()
        .unwrap()
        .is_empty());
    std::fs::remove_file(&path).unwrap();
    // The tokenizer's source is never written over.
    let source = tempfile("synth-tok-source.gguf");
    std::fs::copy(model(SMOLLM2), &source).unwrap();
    let out = hypura(&[
        "synth",
        "--tokenizer-from",
        source.to_str().unwrap(),
        "--out",
        source.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("is that file itself"), "{}", out.stderr);
    assert!(std::fs::read(&source).unwrap() == std::fs::read(model(SMOLLM2)).unwrap());
    std::fs::remove_file(&source).unwrap();
    let bad = hypura(&[
        "synth",
        "--out",
        path.to_str().unwrap(),
        "--n-embd",
        "112",
        "--n-head",
        "4",
        "--n-head-kv",
        "4",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("multiple of"), "{}", bad.stderr);
    let unknown = hypura(&["synth", "--out", path.to_str().unwrap(), "--shape", "gpt-5"]);
    assert!(
        unknown.stderr.contains("unknown shape"),
        "{}",
        unknown.stderr
    );
}
