//! The GPU tier (`--gpu-budget`).
//!
//! In a build with a GPU backend (the `cuda`, `metal` or `vulkan` feature, or
//! `dynamic-backends` with a GPU module beside it and the `gpu-tests` feature), hypura's
//! three tiers give the tokens stock llama.cpp gives with the same placement of compute
//! (`-ngl`, `--n-cpu-moe`), and the bytes read per token are the plan's. Vulkan runs on
//! Mesa's software device (`GGML_VK_VISIBLE_DEVICES=0` selects it), so these tests need no
//! GPU; the CUDA build runs them on the lent machine (`scripts/device-gpu.sh`).
//!
//! In a build without one, a GPU budget is refused with one line naming the file, and `plan`
//! still shows the three-way split.

mod common;
use common::*;

use serde_json::Value;

/// `hypura plan --json` with a GPU budget and a weights budget.
fn plan_with_gpu(model: &std::path::Path, gpu: &str, weights: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "plan",
        "--model",
        model.to_str().unwrap(),
        "--gpu-budget",
        gpu,
        "--weights-budget",
        weights,
        "--ctx",
        "256",
        "--disk-gbps",
        "1.6",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = hypura(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn plan_splits_a_model_over_three_tiers() {
    let path = synth_model("gpu-plan", &["--type", "q4_0"]);
    let plan = plan_with_gpu(&path, "30%", "30%", &[]);
    let model = u(&plan, "model_bytes");
    let on_gpu = u(&plan, "gpu_resident_bytes");
    assert!(on_gpu > 0 && on_gpu + u(&plan, "gpu_kv_cache_bytes") <= model * 30 / 100);
    assert!(plan["full_resident"] == false && u(&plan, "streamed_bytes_per_token") > 0);
    // The output layer first, then layers from the last: the GPU's layers end the model, the
    // streamed ones come right before them.
    assert_eq!(plan["gpu_head"], true);
    let gpu_layers = u(&plan, "gpu_layers");
    let tiers: Vec<(Option<u64>, String)> = plan["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["layer"].as_u64(), t["tier"].as_str().unwrap().to_string()))
        .collect();
    for (layer, tier) in &tiers {
        if let Some(l) = layer {
            assert_eq!(tier == "gpu", *l >= 16 - gpu_layers, "layer {l}: {tier}");
        }
    }
    let streamed = plan["groups"].as_array().unwrap();
    assert_eq!(
        streamed.last().unwrap()["layer"].as_u64(),
        Some(15 - gpu_layers)
    );
    let gpu_bytes: u64 = plan["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["tier"] == "gpu")
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(gpu_bytes, on_gpu);
    // The table says so too.
    let out = hypura(&[
        "plan",
        "--model",
        path.to_str().unwrap(),
        "--gpu-budget",
        "30%",
        "--weights-budget",
        "30%",
        "--disk-gbps",
        "1.6",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("resident on the GPU"), "{}", out.stdout);
    let device = out
        .stdout
        .lines()
        .find(|l| l.starts_with("GPU device"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(
        device.contains("none"),
        !cfg!(feature = "gpu-tests"),
        "{device}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("LM head") && l.ends_with("on the GPU")),
        "{}",
        out.stdout
    );
    std::fs::remove_file(path).unwrap();
}

/// With a saved expert profile, the GPU takes the experts of the layers whose routing
/// spreads widest (the RAM cache serves them worst); without one, the last layers'.
#[test]
fn a_profile_sends_the_widest_routed_layers_experts_to_the_gpu() {
    let path = synth_moe_model("gpu-profile", "qwen3moe", &["--routing", "token"]);
    // What the GPU holds besides expert matrices (their KV cache too), and one layer's
    // expert matrices.
    let base = plan_with_gpu(&path, "8%", "40%", &[]);
    assert_eq!(u(&base, "gpu_expert_layers"), 0);
    let layer_experts: u64 = base["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["layer"] == 0 && t["placement"]["kind"] == "expert_slices")
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    let budget = u(&base, "gpu_resident_bytes")
        + u(&base, "gpu_kv_cache_bytes")
        + 2 * layer_experts
        + (1 << 20);
    let budget = budget.to_string();
    let plain = plan_with_gpu(&path, &budget, "40%", &[]);
    assert_eq!(
        plain["gpu_expert_layer_indices"],
        serde_json::json!([14, 15])
    );
    // A profile in which layers 3 and 9 pick evenly among their 32 experts and the others
    // mostly pick 4 of theirs.
    let profile_path = plain["expert_profile_path"].as_str().unwrap().to_string();
    let layers: Vec<Value> = (0..16)
        .map(|l| {
            let chances: Vec<f64> = (0..32)
                .map(|e| match (l, e) {
                    (3 | 9, _) => 0.125,
                    (_, 0..4) => 0.9,
                    _ => 0.01,
                })
                .collect();
            serde_json::json!({ "layer": l, "chances": chances })
        })
        .collect();
    let key = std::path::Path::new(&profile_path)
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let profile =
        serde_json::json!({ "format": 1, "model": key, "requests": 100, "layers": layers });
    std::fs::create_dir_all(std::path::Path::new(&profile_path).parent().unwrap()).unwrap();
    std::fs::write(&profile_path, profile.to_string()).unwrap();
    let guided = plan_with_gpu(&path, &budget, "40%", &[]);
    assert!(guided["expert_profile_ignored"].is_null(), "{guided}");
    assert_eq!(
        guided["gpu_expert_layer_indices"],
        serde_json::json!([3, 9])
    );
    assert_eq!(
        u(&guided, "gpu_resident_bytes"),
        u(&plain, "gpu_resident_bytes")
    );
    // The same split in words, and the tensors placed so.
    let out = hypura(&[
        "plan",
        "--model",
        path.to_str().unwrap(),
        "--gpu-budget",
        &budget,
        "--weights-budget",
        "40%",
        "--ctx",
        "256",
        "--disk-gbps",
        "1.6",
    ]);
    assert!(out.stdout.contains("all but layers 3, 9"), "{}", out.stdout);
    let mut matrices = 0;
    for t in guided["tensors"].as_array().unwrap() {
        if t["role"] == "experts" && t["name"].as_str().unwrap().contains("_exps.weight") {
            let on_gpu = t["layer"] == 3 || t["layer"] == 9;
            assert_eq!(t["tier"] == "gpu", on_gpu, "{t}");
            matrices += 1;
        }
    }
    assert_eq!(matrices, 16 * 3);
    std::fs::remove_file(profile_path).unwrap();
    std::fs::remove_file(path).unwrap();
}

#[cfg(not(feature = "gpu-tests"))]
#[test]
fn without_a_gpu_a_gpu_budget_is_one_line_naming_the_file() {
    let path = model(SMOLLM2);
    let out = hypura(&[
        "run",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "--gpu-budget",
        "50%",
        "--disk-gbps",
        "1.6",
    ]);
    assert_ne!(out.code, 0);
    let error = out
        .stderr
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("no error line in {}", out.stderr));
    assert!(
        error.contains("no GPU device") && error.contains(SMOLLM2),
        "{}",
        out.stderr
    );
    // Stock's GPU layers likewise.
    let out = hypura(&[
        "run",
        "--model",
        path.to_str().unwrap(),
        "--prompt",
        PROMPT,
        "--baseline",
        "--ngl",
        "4",
    ]);
    assert!(
        out.code != 0 && out.stderr.contains("no GPU device"),
        "{}",
        out.stderr
    );
    // And 0 is no GPU at all.
    let stats = run_stats(&path, &["--gpu-budget", "0"], 4);
    assert_eq!(u(&stats, "gpu_resident_bytes"), 0);
}

/// Tokens of `run` at temperature 1 with seed 42, without repacked CPU layouts (stock puts
/// CPU weights in the GPU's pinned host memory instead when a GPU is in use).
#[cfg(feature = "gpu-tests")]
fn sampled(model: &std::path::Path, extra: &[&str]) -> Value {
    run_sampled(model, &[&["--no-repack"], extra].concat(), 12)
}

#[cfg(feature = "gpu-tests")]
#[test]
fn a_dense_model_over_three_tiers_gives_stock_s_tokens_with_the_same_layers_on_the_gpu() {
    let path = synth_model("gpu-dense", &["--type", "q4_0"]);
    let plan = plan_with_gpu(&path, "30%", "30%", &[]);
    let ngl = (u(&plan, "gpu_layers") + 1).to_string();
    assert!(u(&plan, "gpu_layers") > 0 && plan["gpu_head"] == true);
    let three = sampled(&path, &["--gpu-budget", "30%", "--weights-budget", "30%"]);
    assert!(u(&three, "gpu_resident_bytes") > 0);
    // Exactly the plan's bytes per token: the GPU's weights are never read while decoding.
    assert_eq!(
        three["disk_bytes_per_token"].as_f64().unwrap() as u64,
        u(&plan, "streamed_bytes_per_token")
    );
    let two = sampled(&path, &["--gpu-budget", "30%"]);
    let stock = sampled(&path, &["--baseline", "--ngl", &ngl]);
    let cpu = sampled(&path, &["--baseline"]);
    assert_eq!(
        tokens(&three),
        tokens(&stock),
        "three tiers against stock -ngl {ngl}"
    );
    assert_eq!(
        tokens(&two),
        tokens(&stock),
        "GPU and RAM against stock -ngl {ngl}"
    );
    // The GPU computed: its kernels round otherwise than the CPU's.
    assert_ne!(tokens(&cpu), tokens(&stock), "the GPU changed nothing");
    // Wholly on the GPU (the embedding's lookups stay on the CPU, as stock's do), nothing
    // streams and no evaluation callback slows the GPU's graph down: it would count those
    // lookups.
    let all = sampled(&path, &["--gpu-budget", "all"]);
    let uses: Vec<u64> = all["tensor_accesses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["accesses"].as_u64().unwrap())
        .collect();
    assert!(!uses.is_empty() && uses.iter().all(|&n| n == 0), "{uses:?}");
    let stock_all = sampled(&path, &["--baseline", "--ngl", "99"]);
    assert_eq!(tokens(&all), tokens(&stock_all), "against stock -ngl 99");
    std::fs::remove_file(path).unwrap();
}

/// The shared parts of every layer on the GPU, the experts in RAM and on disk, read slice by
/// slice as the copies of the GPU's selections say. (Expert matrices on the GPU are left to
/// the CUDA run: Mesa 22's software Vulkan device crashes now and then on them, stock
/// llama.cpp's `-ngl` runs as much as hypura's.)
#[cfg(feature = "gpu-tests")]
#[test]
fn a_mixture_of_experts_keeps_its_experts_in_the_cache_and_gives_stock_s_tokens() {
    let path = synth_moe_model("gpu-moe", "qwen3moe", &["--routing", "token"]);
    let flags = [
        "--gpu-budget",
        "8%",
        "--weights-budget",
        "40%",
        "--no-expert-profile",
    ];
    let plan = plan_with_gpu(&path, "8%", "40%", &["--no-expert-profile"]);
    assert_eq!(u(&plan, "gpu_layers"), 16);
    assert_eq!(plan["gpu_head"], true);
    assert_eq!(u(&plan, "gpu_expert_layers"), 0);
    assert!(u(&plan, "expert_cache_bytes") > 0, "the experts are cached");
    let three = sampled(&path, &flags);
    check_expert_reads("gpu 8%, weights 40%", &three);
    // The routers run on the GPU, and the next layers' experts are still read ahead: predicted
    // on the CPU from the host copies of their routers (routed by the token, they hit).
    let hits = u(&three, "expert_prefetch_hits");
    assert!(
        hits > 0,
        "nothing read ahead was used: {} bytes read ahead, {} hits, {} misses",
        u(&three, "expert_prefetch_bytes"),
        u(&three, "expert_hits"),
        u(&three, "expert_misses")
    );
    assert!(hits <= u(&three, "expert_hits"));
    // Only the picked experts are read: less than all of one token's layers' experts.
    let experts: u64 = plan["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["placement"]["kind"] == "expert_slices")
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    assert!(
        (u(&three, "disk_bytes_read") as f64) < experts as f64 * 12.0 / 2.0,
        "read {} for 12 tokens, experts {experts}",
        u(&three, "disk_bytes_read")
    );
    let stock = sampled(&path, &["--baseline", "--ngl", "17", "--cpu-moe"]);
    assert_eq!(
        tokens(&three),
        tokens(&stock),
        "against stock -ngl 17 --cpu-moe"
    );
    std::fs::remove_file(path).unwrap();
}

#[cfg(feature = "gpu-tests")]
#[test]
fn a_tied_head_on_the_gpu_gives_stock_s_greedy_text() {
    let path = model(SMOLLM2);
    let all = run_stats(&path, &["--no-repack", "--gpu-budget", "all"], 16);
    assert_eq!(u(&all, "gpu_resident_bytes"), u(&all, "model_bytes"));
    let stock = run_stats(&path, &["--no-repack", "--baseline", "--ngl", "31"], 16);
    assert_eq!(tokens(&all), tokens(&stock));
}
