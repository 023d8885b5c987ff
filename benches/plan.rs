//! Planning a 70B-shaped model (Llama-3-70B's 723 tensors, 80 layers) at several budgets:
//! the whole of `hypura plan` — open the file, read and check its header, place every tensor.
//! The file is a header with a hole for the data (sparse: a few MiB on disk).
//! `cargo bench -p hypura-benches --bench plan`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hypura_core::{Budget, LoadOptions, Plan};
use hypura_tools::gguf::{GgufWriter, TensorEntry, Value};

const Q4_0: u32 = 2;
const F32: u32 = 0;

/// Llama-3-70B's tensor table (GQA with 8 KV heads, a 128256-token vocabulary), Q4_0, with
/// a generated vocabulary; written sparse to a temporary file.
fn llama_70b() -> std::path::PathBuf {
    let (n_embd, n_ff, n_kv, n_vocab, n_layers) = (8192u64, 28672u64, 1024u64, 128256u64, 80u32);
    let q4 = |name: String, cols: u64, rows: u64| TensorEntry {
        name,
        dims: vec![cols, rows],
        ggml_type: Q4_0,
        nbytes: cols / 32 * 18 * rows,
    };
    let norm = |name: String| TensorEntry {
        name,
        dims: vec![n_embd],
        ggml_type: F32,
        nbytes: n_embd * 4,
    };
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("llama".into()))
        .meta("llama.context_length", Value::U32(8192))
        .meta("llama.embedding_length", Value::U32(n_embd as u32))
        .meta("llama.block_count", Value::U32(n_layers))
        .meta("llama.feed_forward_length", Value::U32(n_ff as u32))
        .meta("llama.attention.head_count", Value::U32(64))
        .meta("llama.attention.head_count_kv", Value::U32(8))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("tokenizer.ggml.model", Value::Str("llama".into()));
    let mut tokens: Vec<String> = (0..256).map(|b| format!("<0x{b:02X}>")).collect();
    tokens.extend((256..n_vocab).map(|i| format!("t{i}")));
    w.meta("tokenizer.ggml.tokens", Value::StrArray(tokens));
    w.tensor(q4("token_embd.weight".into(), n_embd, n_vocab));
    for l in 0..n_layers {
        let b = |k: &str| format!("blk.{l}.{k}.weight");
        w.tensor(norm(b("attn_norm")))
            .tensor(q4(b("attn_q"), n_embd, n_embd))
            .tensor(q4(b("attn_k"), n_embd, n_kv))
            .tensor(q4(b("attn_v"), n_embd, n_kv))
            .tensor(q4(b("attn_output"), n_embd, n_embd))
            .tensor(norm(b("ffn_norm")))
            .tensor(q4(b("ffn_gate"), n_embd, n_ff))
            .tensor(q4(b("ffn_up"), n_embd, n_ff))
            .tensor(q4(b("ffn_down"), n_ff, n_embd));
    }
    w.tensor(norm("output_norm.weight".into()))
        .tensor(q4("output.weight".into(), n_embd, n_vocab));
    let path = std::env::temp_dir().join(format!("hypura-bench-70b-{}.gguf", std::process::id()));
    let header = w.header_bytes();
    std::fs::write(&path, &header).expect("write the header");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(header.len() as u64 + w.data_bytes()))
        .expect("extend the file");
    path
}

fn plan_70b(c: &mut Criterion) {
    let path = llama_70b();
    let whole = Plan::for_options(&LoadOptions::new(&path)).expect("plan the 70B table");
    let mut group = c.benchmark_group(format!("plan_llama70b_{}_tensors", whole.tensors.len()));
    for percent in [10.0, 30.0, 60.0, 90.0] {
        let options = LoadOptions::new(&path)
            .budget(Budget::WeightPercent(percent))
            .disk_bandwidth(2e9);
        // Fail loudly (not in the timed loop) if the planner rejects this budget.
        Plan::for_options(&options).expect("plan");
        group.bench_with_input(
            BenchmarkId::new("budget_percent", percent as u32),
            &options,
            |b, options| b.iter(|| Plan::for_options(options).expect("plan")),
        );
    }
    group.finish();
    let _ = std::fs::remove_file(path);
}

criterion_group!(benches, plan_70b);
criterion_main!(benches);
