//! The plan as a table for people.

use std::fmt::Write;

use hypura_core::units::format_bytes;
use hypura_core::{Placement, Plan, Role, Tier};

fn name_of<T: std::fmt::Debug>(value: T) -> String {
    format!("{value:?}").to_lowercase()
}

/// What the GPU holds, in words.
fn gpu_share(plan: &Plan) -> String {
    let n_layers = plan
        .tensors
        .iter()
        .filter_map(|t| t.layer)
        .max()
        .map_or(0, |l| l + 1);
    if plan.gpu_layers == 0 {
        return "nothing (not one layer fits)".into();
    }
    let experts = plan
        .tensors
        .iter()
        .any(|t| t.role == Role::Experts && t.tier != Tier::Gpu);
    let mut what = if plan.gpu_layers >= n_layers {
        "every layer".to_string()
    } else {
        format!("the last {} layers", plan.gpu_layers)
    };
    if experts {
        let n = plan.gpu_expert_layers;
        let last: Vec<u32> = (n_layers.saturating_sub(n)..n_layers).collect();
        what += &match n {
            0 => " but their experts".to_string(),
            _ if plan.gpu_expert_layer_indices == last => {
                format!(" but the experts of all but the last {n}")
            }
            _ => format!(
                " but the experts of all but layers {} (their routing spreads widest)",
                plan.gpu_expert_layer_indices
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    if !plan.gpu_expert_tensors.is_empty() {
        let n = plan.gpu_expert_tensors.len();
        what += &format!(
            ", {} ({})",
            if n == 1 {
                "one more expert matrix".to_string()
            } else {
                format!("{n} more expert matrices")
            },
            plan.gpu_expert_tensors
                .iter()
                .map(|name| name.trim_end_matches(".weight"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if plan.gpu_head {
        what += " and the head";
    }
    what
}

/// A human-readable summary of `plan`.
pub fn plan_table(plan: &Plan, sequences: u32) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<22} {value}");
    };
    line("architecture", plan.arch.clone());
    line("model weights", format_bytes(plan.model_bytes));
    line("RAM budget", format_bytes(plan.ram_budget_bytes));
    if plan.gpu_budget_bytes > 0 {
        line(
            "GPU device",
            hypura_core::gpu_device_description().unwrap_or_else(|| {
                "none: loading needs a build with a GPU backend (see README)".into()
            }),
        );
        line(
            "GPU budget",
            if plan.gpu_budget_bytes >= u64::MAX / 4 {
                "all".to_string()
            } else {
                format_bytes(plan.gpu_budget_bytes)
            },
        );
        line(
            "resident on the GPU",
            format!(
                "{} of weights and {} of KV cache: {}",
                format_bytes(plan.gpu_resident_bytes),
                format_bytes(plan.gpu_kv_cache_bytes),
                gpu_share(plan)
            ),
        );
    }
    if let Some(why) = &plan.untiered {
        line("placement", format!("stock llama.cpp: {why}"));
    } else if plan.full_resident {
        line(
            "placement",
            "everything resident in RAM (nothing streams)".into(),
        );
    }
    line("resident in RAM", format_bytes(plan.ram_resident_bytes));
    if plan.expert_cache_bytes > 0 {
        let experts: u64 = plan
            .tensors
            .iter()
            .filter(|t| t.placement == Placement::ExpertSlices)
            .map(|t| t.bytes)
            .sum();
        let unit = plan.expert_unit_bytes.max(1);
        line(
            "expert cache",
            format!(
                "{} of {} of experts: {} of {} experts (one expert of one layer: {}), read as the router picks them, the most used kept",
                format_bytes(plan.expert_cache_bytes),
                format_bytes(experts),
                plan.expert_cache_bytes / unit,
                experts / unit,
                format_bytes(plan.expert_unit_bytes),
            ),
        );
        let profile = match (&plan.expert_profile_path, plan.expert_profile_hit_rate) {
            (None, _) => "none (not looked for)".to_string(),
            (Some(p), Some(hit)) => format!(
                "{}: predicted hit rate {:.1}%, {} read per token",
                p.display(),
                hit * 100.0,
                format_bytes(plan.streamed_bytes_per_token)
            ),
            (Some(p), None) => match &plan.expert_profile_ignored {
                Some(why) => format!("ignored: {why}"),
                None => format!(
                    "none yet at {} (estimate assumes routing spread evenly)",
                    p.display()
                ),
            },
        };
        line("expert profile", profile);
    } else {
        line(
            "streaming window",
            format!(
                "{} ({} read ahead + the one in use, {} stream groups, {} per request, {} reader threads)",
                format_bytes(plan.window_bytes),
                match plan.prefetch_depth {
                    1 => "1 group".to_string(),
                    n => format!("{n} groups"),
                },
                plan.groups.len(),
                format_bytes(plan.request_bytes),
                plan.io_threads
            ),
        );
    }
    line(
        "embedding rows window",
        format_bytes(plan.embedding_rows_bytes),
    );
    let unused: Vec<_> = plan
        .tensors
        .iter()
        .filter(|t| t.placement == Placement::Unused)
        .collect();
    if !unused.is_empty() {
        line(
            "never read",
            format!(
                "{} in {} tensors of next-token-prediction layers (llama.cpp does not load them)",
                format_bytes(unused.iter().map(|t| t.bytes).sum()),
                unused.len()
            ),
        );
    }
    let streamed = plan.streamed_layers();
    let layers = plan
        .tensors
        .iter()
        .filter(|t| t.placement != Placement::Unused)
        .filter_map(|t| t.layer)
        .max()
        .map_or(0, |l| l + 1);
    line(
        "streamed layers",
        if streamed.is_empty() {
            "none".to_string()
        } else {
            format!("{} ({} of {layers})", layer_runs(&streamed), streamed.len())
        },
    );
    line(
        "LM head",
        if plan.head_streamed {
            format!("streamed in chunks of {} rows", plan.head_chunk_rows)
        } else if plan.gpu_head {
            "on the GPU".to_string()
        } else {
            "resident".to_string()
        },
    );
    line("KV cache", format_bytes(plan.kv_cache_bytes));
    line(
        "read per token",
        format_bytes(plan.streamed_bytes_per_token),
    );
    line(
        "disk bandwidth",
        format!("{:.2} GB/s", plan.disk_bytes_per_s / 1e9),
    );
    line(
        "bound",
        format!(
            "{:.3} tok/s (disk {:.4} s/token, compute {:.4} s/token)",
            plan.bound_tok_s, plan.disk_time_s, plan.compute_time_s
        ),
    );
    // A step of several sequences reads a dense model's streamed weights once for all, and
    // its compute reads the same weights (an MoE's step picks more experts: no such line).
    if sequences > 1 && plan.expert_cache_bytes == 0 && plan.streamed_bytes_per_token > 0 {
        line(
            &format!("bound, {sequences} sequences"),
            format!(
                "{:.3} tok/s aggregate (one pass over the streamed weights a step)",
                f64::from(sequences) / plan.disk_time_s.max(plan.compute_time_s).max(1e-12)
            ),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<8} {:<12} {:>12}  tensors", "tier", "role", "bytes");
    let mut rows: Vec<((Tier, Role), (u64, u32))> = Vec::new();
    for t in plan
        .tensors
        .iter()
        .filter(|t| t.placement != Placement::Unused)
    {
        match rows.iter_mut().find(|(k, _)| *k == (t.tier, t.role)) {
            Some((_, (bytes, count))) => {
                *bytes += t.bytes;
                *count += 1;
            }
            None => rows.push(((t.tier, t.role), (t.bytes, 1))),
        }
    }
    for ((tier, role), (bytes, count)) in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<12} {:>12}  {}",
            name_of(tier),
            name_of(role),
            format_bytes(bytes),
            count
        );
    }
    out
}

/// Ascending layer numbers as runs: `3, 7..=9, 12`.
fn layer_runs(layers: &[u32]) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &l in layers {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == l => *end = l,
            _ => runs.push((l, l)),
        }
    }
    runs.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}..={b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn layer_runs_join_neighbours() {
        assert_eq!(super::layer_runs(&[3, 7, 8, 9, 12]), "3, 7..=9, 12");
        assert_eq!(super::layer_runs(&[0]), "0");
    }
}
