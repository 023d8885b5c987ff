//! The planner on a 70B-shaped tensor table (80 layers, 723 tensors) at several budgets.
//! `cargo bench -p hypura-benches --bench plan`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hypura_core::gguf::TensorInfo;
use hypura_core::inspect::{ModelInventory, ModelTensor, Role};
use hypura_core::plan::{plan, PlanParams};

const Q4_0: u32 = 2;
const F32: u32 = 0;

/// A Q4_0 matrix of `cols` x `rows` at `offset` (advanced past it, 32-byte aligned).
fn q4_0(name: String, cols: u64, rows: u64, offset: &mut u64) -> TensorInfo {
    let nbytes = cols / 32 * 18 * rows;
    let info = TensorInfo {
        name,
        ggml_type: Q4_0,
        dims: vec![cols, rows],
        file_offset: *offset,
        nbytes,
    };
    *offset += nbytes.div_ceil(32) * 32;
    info
}

/// Llama-3-70B's tensor table (GQA with 8 KV heads, 128256-token vocabulary), Q4_0.
fn llama_70b() -> ModelInventory {
    let (n_embd, n_ff, n_kv, n_vocab, n_layers) = (8192u64, 28672u64, 1024u64, 128256u64, 80u32);
    let mut offset = 0;
    let mut tensors = Vec::new();
    let mut push = |info: TensorInfo, role, layer| tensors.push(ModelTensor { info, role, layer });
    push(
        q4_0("token_embd.weight".into(), n_embd, n_vocab, &mut offset),
        Role::Embedding,
        None,
    );
    for l in 0..n_layers {
        for (kind, cols, rows, role) in [
            ("attn_q", n_embd, n_embd, Role::Attention),
            ("attn_k", n_embd, n_kv, Role::Attention),
            ("attn_v", n_embd, n_kv, Role::Attention),
            ("attn_output", n_embd, n_embd, Role::Attention),
            ("ffn_gate", n_embd, n_ff, Role::Ffn),
            ("ffn_up", n_embd, n_ff, Role::Ffn),
            ("ffn_down", n_ff, n_embd, Role::Ffn),
        ] {
            push(
                q4_0(format!("blk.{l}.{kind}.weight"), cols, rows, &mut offset),
                role,
                Some(l),
            );
        }
        for norm in ["attn_norm", "ffn_norm"] {
            let info = TensorInfo {
                name: format!("blk.{l}.{norm}.weight"),
                ggml_type: F32,
                dims: vec![n_embd],
                file_offset: offset,
                nbytes: n_embd * 4,
            };
            offset += n_embd * 4;
            push(info, Role::Small, Some(l));
        }
    }
    push(
        q4_0("output.weight".into(), n_embd, n_vocab, &mut offset),
        Role::Output,
        None,
    );
    ModelInventory {
        arch: "llama".into(),
        n_layers,
        n_embd,
        n_vocab,
        tied_head: false,
        final_logit_softcap: 0.0,
        tensors,
    }
}

fn plan_70b(c: &mut Criterion) {
    let inventory = llama_70b();
    let model_bytes: u64 = inventory.tensors.iter().map(|t| t.info.nbytes).sum();
    let mut group = c.benchmark_group(format!("plan_llama70b_{}_tensors", inventory.tensors.len()));
    for percent in [10u64, 30, 60, 90] {
        let params = PlanParams::new(model_bytes * percent / 100);
        // Fail loudly (not in the timed loop) if the planner rejects this budget.
        plan(&inventory, &params).expect("plan");
        group.bench_with_input(
            BenchmarkId::new("budget_percent", percent),
            &params,
            |b, params| b.iter(|| plan(&inventory, params).expect("plan")),
        );
    }
    group.finish();
}

criterion_group!(benches, plan_70b);
criterion_main!(benches);
