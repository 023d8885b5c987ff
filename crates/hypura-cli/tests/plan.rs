//! `hypura plan` reads only the header and its numbers add up.

mod common;
use common::*;

#[test]
fn plan_fits_the_budget_and_predicts_the_bound() {
    for name in [SMOLLM2, GEMMA3] {
        let m = model(name);
        for budget in ["10%", "50%", "90%"] {
            let p = plan_json(&m, budget);
            let held =
                u(&p, "ram_resident_bytes") + u(&p, "window_bytes") + u(&p, "embedding_rows_bytes");
            assert!(
                held <= u(&p, "ram_budget_bytes"),
                "{name} {budget}: {held} held > budget"
            );
            let streamed = u(&p, "streamed_bytes_per_token");
            let model_bytes = u(&p, "model_bytes");
            assert!(streamed > 0 && streamed <= model_bytes);
            // bound = 1 / max(streamed / bandwidth, compute)
            let bound = p["bound_tok_s"].as_f64().unwrap();
            let disk_s = streamed as f64 / 2e9;
            assert!(
                bound <= 1.0 / disk_s * 1.0001,
                "{name} {budget}: bound {bound} above the disk limit"
            );
            let nvme: u64 = p["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["tier"] == "file")
                .map(|t| t["bytes"].as_u64().unwrap())
                .sum();
            assert!(nvme > 0);
        }
        let full = plan_json(&m, "100%");
        assert_eq!(full["full_resident"], true);
        assert_eq!(u(&full, "streamed_bytes_per_token"), 0);
    }
}

#[test]
fn plan_accepts_absolute_sizes_and_prints_a_table() {
    let m = model(SMOLLM2);
    let p = plan_json(&m, "40M");
    assert_eq!(u(&p, "ram_budget_bytes"), 40 << 20);
    let out = hypura(&[
        "plan",
        "--model",
        m.to_str().unwrap(),
        "--weights-budget",
        "20%",
        "--disk-gbps",
        "2",
    ]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("read per token") && out.stdout.contains("bound"));
}

/// `plan -P N` plans what `run -P N` loads: N contexts of -c tokens in the KV cache, and, for
/// a dense model, an aggregate bound of N tokens a pass over the streamed weights.
#[test]
fn plan_for_several_sequences() {
    let m = model(SMOLLM2);
    let path = m.to_str().unwrap();
    let plan_out = |parallel: &str, extra: &[&str]| {
        let mut args = vec![
            "plan",
            "--model",
            path,
            "--weights-budget",
            "40%",
            "-c",
            "256",
            "-P",
            parallel,
            "--disk-gbps",
            "2",
        ];
        args.extend_from_slice(extra);
        let out = hypura(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out
    };
    let plan = |parallel: &str| -> serde_json::Value {
        serde_json::from_str(&plan_out(parallel, &["--json"]).stdout).unwrap()
    };
    let (one, four) = (plan("1"), plan("4"));
    assert_eq!(u(&four, "kv_cache_bytes"), 4 * u(&one, "kv_cache_bytes"));
    assert_eq!(
        u(&four, "streamed_bytes_per_token"),
        u(&one, "streamed_bytes_per_token")
    );
    let out = plan_out("4", &[]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("bound, 4 sequences"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    let aggregate: f64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    let bound = four["bound_tok_s"].as_f64().unwrap();
    assert!(
        (aggregate - 4.0 * bound).abs() <= 0.002 * 4.0 * bound + 0.001,
        "{line}"
    );
    let out = hypura(&["plan", "--model", path, "-P", "0"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("--parallel"), "{}", out.stderr);
}

#[test]
fn plan_needs_only_the_header() {
    // Zero every byte of tensor data: the plan must not change, since it never reads them.
    let source = model(SMOLLM2);
    let bytes = std::fs::read(&source).unwrap();
    let header_end = 1_785_664; // data offset of this file (checked below)
    let mut zeroed = bytes[..header_end].to_vec();
    zeroed.resize(bytes.len(), 0);
    let path = tempfile("zeroed.gguf");
    std::fs::write(&path, zeroed).unwrap();
    let a = plan_json(&source, "30%");
    let b = plan_json(&path, "30%");
    assert_eq!(a["tensors"], b["tensors"]);
    assert_eq!(a["streamed_bytes_per_token"], b["streamed_bytes_per_token"]);
    std::fs::remove_file(path).unwrap();
}
