//! How long the planner takes for a 70B-shaped model (80 layers, 723 tensors).
//! `cargo bench -p hypura-benches --bench plan`

use std::time::Instant;

use hypura_core::gguf::TensorInfo;
use hypura_core::inspect::{ModelInventory, ModelTensor, Role};
use hypura_core::plan::{plan, PlanParams};

const Q4_0: u32 = 2;

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
                ggml_type: 0,
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

fn main() {
    let inventory = llama_70b();
    let model_bytes: u64 = inventory.tensors.iter().map(|t| t.info.nbytes).sum();
    for fraction in [0.1, 0.3, 0.6, 0.9] {
        let params = PlanParams::new((model_bytes as f64 * fraction) as u64);
        let rounds = 20;
        let started = Instant::now();
        let mut streamed = 0;
        for _ in 0..rounds {
            streamed = plan(&inventory, &params)
                .expect("plan")
                .streamed_bytes_per_token;
        }
        let per_plan = started.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "plan 70B ({} tensors) at {:>3.0}% budget: {:>8.3} ms per plan, {:.1} GB streamed per token",
            inventory.tensors.len(),
            fraction * 100.0,
            per_plan * 1e3,
            streamed as f64 / 1e9
        );
    }
}
