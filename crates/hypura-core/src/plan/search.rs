//! The placement search: how many layers stream (spread evenly among the resident ones),
//! whether the LM head streams, and how deep to read ahead, for the fewest bytes read per
//! token within the budget. A dense layer streams as three groups (attention, FFN input, FFN
//! down projection), so the window holds a third of a layer per slot. One pass to size the
//! layers, then one pass over the layers per candidate count (quadratic in the layers: about
//! 10^5 steps for llama.cpp's 512 at most).

use std::collections::HashMap;
use std::path::Path;

use super::gpu::{self, GpuSplit};
use super::layers::{spread, CpuLayers, LayerGroups};
use super::{GroupKind, LayerPart, Placement, Plan, StreamGroup, TensorPlacement};
use crate::error::PlanError;
use crate::memory::PAGE_BYTES;
use crate::model::inventory::ModelTensor;
use crate::model::{ModelInventory, Role};
use crate::units::format_bytes;

/// Inputs of the search (the budget already resolved to bytes of weights).
#[derive(Debug, Clone)]
pub(crate) struct SearchParams {
    /// Bytes of weights hypura may hold in RAM (resident + window + embedding rows).
    pub ram_budget_bytes: u64,
    /// Bytes the GPU tier may hold: weights and the KV cache of its layers (0: none).
    pub gpu_budget_bytes: u64,
    /// GPU memory bandwidth for the compute estimate, bytes/s.
    pub gpu_bytes_per_s: f64,
    /// Sequential read bandwidth of the disk, bytes/s.
    pub disk_bytes_per_s: f64,
    /// Memory read bandwidth for the compute estimate, bytes/s.
    pub ram_bytes_per_s: f64,
    /// Most groups read ahead of the one being computed.
    pub max_prefetch_depth: u32,
    /// Tokens per micro-batch (bounds the embedding rows held at once).
    pub n_ubatch: u32,
    /// Reader threads, i.e. read requests in flight.
    pub io_threads: u32,
    /// The KV cache predicted for the context (reported, not planned).
    pub kv_cache_bytes: u64,
    /// Read experts slice by slice when the budget allows it (see [`super::experts`]).
    pub expert_slices: bool,
    /// The order in which layers' expert matrices earn GPU memory (empty: the last layers
    /// first; see [`super::gpu`]).
    pub gpu_expert_order: Vec<u32>,
}

/// Largest single read request.
pub(crate) const REQUEST_BYTES: u64 = 4 << 20;
/// Window bytes each streamed tensor may take beyond its whole pages: it is placed at its
/// file offset's position within a page, so that direct I/O reads it without a copy.
pub(crate) const WINDOW_SLACK_PER_TENSOR: u64 = PAGE_BYTES as u64;
/// Groups read ahead at most.
pub(crate) const MAX_PREFETCH_DEPTH: u32 = 2;
/// Memory bandwidth assumed for the compute part of the bound.
pub(crate) const RAM_BYTES_PER_S: f64 = 20e9;
/// GPU memory bandwidth assumed for the compute part of the bound (a mid-range discrete GPU
/// or a Max-class Apple chip; an H100 has 3.35 TB/s).
pub(crate) const GPU_BYTES_PER_S: f64 = 400e9;

pub(super) fn page_round(bytes: u64) -> u64 {
    bytes.div_ceil(PAGE_BYTES as u64) * PAGE_BYTES as u64
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

struct Candidate {
    /// Reads enough ahead (see the search).
    enough: bool,
    streamed_layers: u32,
    head_streamed: bool,
    depth: u32,
    window: u64,
    head_chunk_rows: u64,
    resident: u64,
    rows_bytes: u64,
    streamed: u64,
}

/// Plans `inventory` under `params`; `path` names the file in errors.
pub(crate) fn plan(
    inventory: &ModelInventory,
    params: &SearchParams,
    path: &Path,
) -> Result<Plan, PlanError> {
    let model_bytes = inventory.weight_bytes();
    let budget = params.ram_budget_bytes;
    let gpu = gpu::split(
        inventory,
        params.gpu_budget_bytes,
        params.kv_cache_bytes,
        &params.gpu_expert_order,
    );
    let on_gpu = |t: &crate::model::inventory::ModelTensor| gpu.holds(inventory, t);
    let gpu_bytes: u64 = inventory
        .tensors
        .iter()
        .filter(|t| on_gpu(t))
        .map(|t| t.info.nbytes)
        .sum();
    if budget >= model_bytes - gpu_bytes {
        let tensors = inventory
            .tensors
            .iter()
            .map(|t| {
                placement(
                    t.info.name.clone(),
                    t.role,
                    t.layer,
                    t.info.nbytes,
                    if inventory.is_unused(t) {
                        Placement::Unused
                    } else if on_gpu(t) {
                        Placement::GpuResident
                    } else {
                        Placement::Resident
                    },
                )
            })
            .collect();
        return Ok(finish(
            inventory,
            params,
            model_bytes,
            &gpu,
            None,
            tensors,
            Vec::new(),
        ));
    }

    if params.expert_slices {
        if let Some(plan) = super::experts::plan(inventory, params, model_bytes, &gpu) {
            return Ok(plan);
        }
    }
    let layers = CpuLayers::new(inventory, on_gpu);
    let (cpu_layers, always) = (&layers.layers, layers.always_bytes);
    let n_cpu_layers = cpu_layers.len();
    let all_layer_bytes: u64 = cpu_layers.iter().map(|l| l.bytes).sum();
    let embd = inventory.embedding();
    let rows_window =
        (u64::from(params.n_ubatch) * 2 * PAGE_BYTES as u64).min(page_round(embd.nbytes));
    let head = inventory.head();
    // A head on the GPU takes nothing here.
    let head_bytes = if gpu.head { 0 } else { head.nbytes };
    let row_bytes = head.row_bytes();
    let unit_rows = PAGE_BYTES as u64 / gcd(row_bytes, PAGE_BYTES as u64);
    let unit_bytes = unit_rows * row_bytes;
    // A tied head that stays resident is the embedding, resident: no rows to stream then.
    let rows_bytes_for = |head_streamed: bool| {
        if inventory.tied_head && !head_streamed {
            0
        } else {
            rows_window
        }
    };

    let mut best: Option<Candidate> = None;
    for streamed_layers in 0..=n_cpu_layers {
        let (mut streamed_layer_bytes, mut max_group, mut max_group_window) = (0u64, 0u64, 0u64);
        for i in spread(n_cpu_layers, streamed_layers) {
            let l = &cpu_layers[i];
            streamed_layer_bytes += l.bytes;
            max_group = max_group.max(l.largest_group_bytes);
            max_group_window = max_group_window.max(l.largest_window());
        }
        let resident_layers = all_layer_bytes - streamed_layer_bytes;
        for head_streamed in [false, true] {
            if head_streamed && (!inventory.head_streamable || gpu.head) {
                continue; // the family computes more than the head's product, or the GPU has it
            }
            if streamed_layers == 0 && !head_streamed {
                continue; // would be full residency, which does not fit
            }
            let head_resident = if head_streamed {
                0
            } else {
                page_round(head_bytes)
            };
            let rows_bytes = rows_bytes_for(head_streamed);
            let held = always + rows_bytes + resident_layers + head_resident;
            for depth in (0..=params.max_prefetch_depth).rev() {
                let slots = u64::from(depth) + 1;
                let (unit, head_chunk_rows) = if max_group > 0 {
                    let rows = (max_group / unit_bytes).max(1) * unit_rows;
                    (
                        max_group_window.max(rows * row_bytes + WINDOW_SLACK_PER_TENSOR),
                        rows,
                    )
                } else {
                    // only the head streams: as large a chunk as the budget allows
                    let room = (budget.saturating_sub(held) / slots)
                        .saturating_sub(WINDOW_SLACK_PER_TENSOR);
                    let rows = (room / unit_bytes) * unit_rows;
                    (rows * row_bytes + WINDOW_SLACK_PER_TENSOR, rows)
                };
                if unit == 0 || (head_streamed && head_chunk_rows == 0) {
                    continue;
                }
                let window = slots * page_round(unit);
                if held + window > budget {
                    continue;
                }
                let streamed = streamed_layer_bytes + if head_streamed { head_bytes } else { 0 };
                // The fewest bytes read, with enough read ahead: with the streamed layers
                // spread among resident ones, one group read ahead keeps the readers busy
                // whenever the disk is the bound (a group computes faster than it reads), if
                // it gives each reader a request; small groups want two. A deeper read-ahead
                // costs resident bytes, so it is taken only where it costs none.
                let enough = depth >= 1
                    && u64::from(depth) * page_round(unit)
                        >= (u64::from(params.io_threads.max(1)) * REQUEST_BYTES)
                            .min(page_round(unit) * u64::from(params.max_prefetch_depth));
                let key = |enough: bool, depth: u32, streamed: u64| {
                    (!enough, depth == 0, streamed, u32::MAX - depth)
                };
                let better = best.as_ref().is_none_or(|b| {
                    key(enough, depth, streamed) < key(b.enough, b.depth, b.streamed)
                });
                if better {
                    best = Some(Candidate {
                        enough,
                        streamed_layers: streamed_layers as u32,
                        head_streamed,
                        depth,
                        window,
                        head_chunk_rows: head_chunk_rows.min(head.n_rows()),
                        resident: held - rows_bytes,
                        rows_bytes,
                        streamed,
                    });
                }
            }
        }
    }
    let Some(choice) = best else {
        let largest_group = cpu_layers
            .iter()
            .map(|l| l.largest_group_bytes)
            .max()
            .unwrap_or(0);
        let max_window = cpu_layers
            .iter()
            .map(LayerGroups::largest_window)
            .max()
            .unwrap_or(0);
        let unit = max_window.max(unit_bytes + WINDOW_SLACK_PER_TENSOR);
        let minimum = always + rows_window + page_round(unit);
        return Err(PlanError::BudgetTooSmall {
            path: path.to_path_buf(),
            budget: format_bytes(budget),
            minimum: format_bytes(minimum),
            why: format!(
                "one stream group ({}) must fit beside the norms ({}) and one micro-batch of embedding rows ({})",
                format_bytes(largest_group),
                format_bytes(always),
                format_bytes(rows_window)
            ),
        });
    };

    // The stream groups, in the order a token uses them.
    let mut groups: Vec<StreamGroup> = Vec::new();
    let mut group_of: HashMap<(u32, LayerPart), usize> = HashMap::new();
    for i in spread(n_cpu_layers, choice.streamed_layers as usize) {
        let l = &cpu_layers[i];
        for &(part, _) in &l.parts {
            group_of.insert((l.layer, part), groups.len());
            groups.push(StreamGroup {
                kind: GroupKind::Layer {
                    layer: l.layer,
                    part,
                },
                bytes: 0,
            });
        }
    }
    let tensors = inventory
        .tensors
        .iter()
        .map(|t| {
            let group = t
                .layer
                .and_then(|l| group_of.get(&(l, layers.part_of(t))).copied());
            let where_ = match (t.role, t.layer) {
                _ if inventory.is_unused(t) => Placement::Unused,
                _ if on_gpu(t) => Placement::GpuResident,
                (Role::Embedding, _) if inventory.tied_head && !choice.head_streamed => {
                    Placement::Resident
                }
                (Role::Embedding, _) => Placement::RowsOnDemand,
                (Role::Output, _) if choice.head_streamed => Placement::HeadChunks,
                (Role::Small, _) | (_, None) => Placement::Resident,
                (_, Some(_)) => match group {
                    Some(group) => {
                        groups[group].bytes += t.info.nbytes;
                        Placement::Streamed { group }
                    }
                    None => Placement::Resident,
                },
            };
            placement(t.info.name.clone(), t.role, t.layer, t.info.nbytes, where_)
        })
        .collect();
    if choice.head_streamed {
        let n_rows = head.n_rows();
        let mut first_row = 0;
        while first_row < n_rows {
            let rows = choice.head_chunk_rows.min(n_rows - first_row);
            groups.push(StreamGroup {
                kind: GroupKind::HeadChunk {
                    first_row,
                    n_rows: rows,
                },
                bytes: rows * row_bytes,
            });
            first_row += rows;
        }
    }
    let embedding_rows_per_token = if choice.rows_bytes > 0 {
        embd.row_bytes()
    } else {
        0
    };
    let chosen = Chosen {
        resident: choice.resident,
        window: choice.window,
        rows_bytes: choice.rows_bytes,
        depth: choice.depth,
        head_streamed: choice.head_streamed,
        head_chunk_rows: if choice.head_streamed {
            choice.head_chunk_rows
        } else {
            0
        },
        streamed: choice.streamed + embedding_rows_per_token,
        expert_cache: 0,
    };
    Ok(finish(
        inventory,
        params,
        model_bytes,
        &gpu,
        Some(chosen),
        tensors,
        groups,
    ))
}

pub(super) fn placement(
    name: String,
    role: Role,
    layer: Option<u32>,
    bytes: u64,
    placement: Placement,
) -> TensorPlacement {
    TensorPlacement {
        name,
        role,
        layer,
        bytes,
        tier: placement.tier(),
        placement,
    }
}

/// Bytes of `t` one token's compute reads: of an expert matrix, the share of the experts a
/// token picks; of an embedding that is not also the head, one row; anything else whole.
fn touched_bytes(inventory: &ModelInventory, t: &ModelTensor) -> u64 {
    match t.role {
        Role::Experts => {
            let n_expert = t.info.dims.get(2).copied().unwrap_or(1).max(1);
            let used = inventory.n_expert_used.clamp(1, n_expert);
            t.info.nbytes / n_expert * used
        }
        Role::Embedding if !inventory.tied_head => t.info.row_bytes(),
        _ => t.info.nbytes,
    }
}

pub(super) struct Chosen {
    pub resident: u64,
    pub window: u64,
    pub rows_bytes: u64,
    pub depth: u32,
    pub head_streamed: bool,
    pub head_chunk_rows: u64,
    pub streamed: u64,
    pub expert_cache: u64,
}

pub(super) fn finish(
    inventory: &ModelInventory,
    params: &SearchParams,
    model_bytes: u64,
    gpu: &GpuSplit,
    chosen: Option<Chosen>,
    tensors: Vec<TensorPlacement>,
    groups: Vec<StreamGroup>,
) -> Plan {
    let full = chosen.is_none();
    // The GPU's bytes, and what a token's compute reads where it computes: the picked
    // experts' share of expert matrices, one row of an embedding looked up by row, everything
    // else whole.
    let (mut gpu_bytes, mut cpu_touched, mut gpu_touched) = (0u64, 0u64, 0u64);
    for t in inventory.tensors.iter().filter(|t| !inventory.is_unused(t)) {
        let touched = touched_bytes(inventory, t);
        if gpu.holds(inventory, t) {
            gpu_bytes += t.info.nbytes;
            gpu_touched += touched;
        } else {
            cpu_touched += touched;
        }
    }
    let cpu_bytes = model_bytes - gpu_bytes;
    let c = chosen.unwrap_or(Chosen {
        resident: cpu_bytes,
        window: 0,
        rows_bytes: 0,
        depth: 0,
        head_streamed: false,
        head_chunk_rows: 0,
        streamed: 0,
        expert_cache: 0,
    });
    let disk_time_s = c.streamed as f64 / params.disk_bytes_per_s.max(1.0);
    let compute_time_s = cpu_touched as f64 / params.ram_bytes_per_s.max(1.0)
        + gpu_touched as f64 / params.gpu_bytes_per_s.max(1.0);
    Plan {
        arch: inventory.arch().to_string(),
        model_bytes,
        ram_budget_bytes: params.ram_budget_bytes,
        full_resident: full,
        gpu_budget_bytes: params.gpu_budget_bytes,
        gpu_resident_bytes: gpu_bytes,
        gpu_kv_cache_bytes: gpu.kv_cache_bytes,
        gpu_layers: gpu.layers,
        gpu_head: gpu.head,
        gpu_expert_layers: gpu.expert_layers.len() as u32,
        gpu_expert_layer_indices: gpu.expert_layers.clone(),
        gpu_expert_tensors: gpu.expert_tensors.clone(),
        gpu_bytes_per_s: params.gpu_bytes_per_s,
        ram_resident_bytes: c.resident,
        window_bytes: c.window,
        embedding_rows_bytes: c.rows_bytes,
        streamed_bytes_per_token: c.streamed,
        prefetch_depth: c.depth,
        request_bytes: REQUEST_BYTES,
        io_threads: params.io_threads.max(1),
        head_streamed: c.head_streamed,
        head_chunk_rows: c.head_chunk_rows,
        groups,
        tensors,
        disk_bytes_per_s: params.disk_bytes_per_s,
        disk_time_s,
        compute_time_s,
        bound_tok_s: 1.0 / disk_time_s.max(compute_time_s).max(1e-12),
        n_ubatch: params.n_ubatch,
        kv_cache_bytes: params.kv_cache_bytes,
        untiered: None,
        expert_cache_bytes: c.expert_cache,
        expert_unit_bytes: 0,
        expert_profile_path: None,
        expert_profile_hit_rate: None,
        expert_profile_ignored: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::ArchSpec;
    use crate::model::TensorInfo;
    use crate::plan::{GroupKind, LayerPart, Placement, Tier};

    /// A small llama-shaped Q4_0 model (about 100 MB): 16 layers.
    fn inventory(tied: bool) -> ModelInventory {
        inventory_of(1024, 4096, tied)
    }

    /// A llama-shaped Q4_0 model of 16 layers of this width.
    fn inventory_of(n_embd: u64, n_ff: u64, tied: bool) -> ModelInventory {
        let (n_vocab, n_layers) = (32000u64, 16u32);
        let q4 = |name: String, cols: u64, rows: u64| TensorInfo {
            name,
            ggml_type: 2,
            dims: vec![cols, rows],
            file_offset: 0,
            nbytes: cols / 32 * 18 * rows,
        };
        let mut tensors = vec![q4("token_embd.weight".into(), n_embd, n_vocab)];
        for l in 0..n_layers {
            for (kind, cols, rows) in [
                ("attn_q", n_embd, n_embd),
                ("ffn_up", n_embd, n_ff),
                ("ffn_down", n_ff, n_embd),
            ] {
                tensors.push(q4(format!("blk.{l}.{kind}.weight"), cols, rows));
            }
            tensors.push(TensorInfo {
                name: format!("blk.{l}.attn_norm.weight"),
                ggml_type: 0,
                dims: vec![n_embd],
                file_offset: 0,
                nbytes: n_embd * 4,
            });
        }
        if !tied {
            tensors.push(q4("output.weight".into(), n_embd, n_vocab));
        }
        ModelInventory::for_tests(ArchSpec::find("llama").unwrap(), n_layers, tensors)
    }

    /// A Q4_0 tensor of these dimensions.
    fn q4(name: String, dims: Vec<u64>) -> TensorInfo {
        TensorInfo {
            name,
            ggml_type: 2,
            nbytes: dims.iter().product::<u64>() / 32 * 18,
            dims,
            file_offset: 0,
        }
    }

    fn params(budget: u64) -> SearchParams {
        SearchParams {
            ram_budget_bytes: budget,
            gpu_budget_bytes: 0,
            gpu_bytes_per_s: GPU_BYTES_PER_S,
            disk_bytes_per_s: 1.6e9,
            ram_bytes_per_s: RAM_BYTES_PER_S,
            max_prefetch_depth: MAX_PREFETCH_DEPTH,
            n_ubatch: 128,
            io_threads: 4,
            kv_cache_bytes: 0,
            expert_slices: false,
            gpu_expert_order: Vec::new(),
        }
    }

    fn plan_at(inv: &ModelInventory, budget: u64) -> Result<Plan, PlanError> {
        plan(inv, &params(budget), Path::new("test.gguf"))
    }

    #[test]
    fn a_token_s_compute_reads_only_its_picked_experts_and_one_embedding_row() {
        let (n_embd, n_ff, n_vocab) = (1024u64, 2048u64, 8192u64);
        let mut tensors = vec![q4("token_embd.weight".into(), vec![n_embd, n_vocab])];
        for l in 0..4 {
            tensors.push(q4(format!("blk.{l}.attn_q.weight"), vec![n_embd, n_embd]));
            tensors.push(q4(
                format!("blk.{l}.ffn_up_exps.weight"),
                vec![n_embd, n_ff, 8],
            ));
        }
        tensors.push(q4("output.weight".into(), vec![n_embd, n_vocab]));
        let mut inv = ModelInventory::for_tests(ArchSpec::find("qwen3moe").unwrap(), 4, tensors);
        inv.n_expert_used = 2;
        let p = plan_at(&inv, inv.weight_bytes()).unwrap();
        let attention = 4 * n_embd * n_embd / 32 * 18;
        let experts = 4 * n_embd * n_ff * 8 / 32 * 18;
        let head = n_vocab * n_embd / 32 * 18;
        let row = n_embd / 32 * 18;
        let touched = attention + experts * 2 / 8 + head + row;
        assert!(
            (p.compute_time_s - touched as f64 / RAM_BYTES_PER_S).abs() < 1e-12,
            "{} s",
            p.compute_time_s
        );
    }

    #[test]
    fn whole_model_budget_is_full_residency() {
        let inv = inventory(true);
        let p = plan_at(&inv, inv.weight_bytes()).unwrap();
        assert!(p.full_resident);
        assert_eq!(p.streamed_bytes_per_token, 0);
        assert!(p.tensors.iter().all(|t| t.tier == Tier::Ram));
    }

    #[test]
    fn held_bytes_stay_within_budget_and_reads_shrink_as_it_grows() {
        for tied in [true, false] {
            let inv = inventory(tied);
            let model = inv.weight_bytes();
            let mut last_streamed = u64::MAX;
            for pct in [10u64, 20, 35, 50, 70, 90] {
                let budget = model * pct / 100;
                let p = plan_at(&inv, budget).unwrap();
                assert!(
                    p.held_limit_bytes() <= budget,
                    "tied={tied} {pct}%: {} > {budget}",
                    p.held_limit_bytes()
                );
                assert!(
                    p.streamed_bytes_per_token <= last_streamed,
                    "tied={tied} {pct}%"
                );
                last_streamed = p.streamed_bytes_per_token;
                // Every byte that is not resident streams: whole groups, the head's chunks,
                // and one embedding row per token when the embedding is read by rows.
                let streamed: u64 = p
                    .tensors
                    .iter()
                    .filter(|t| matches!(t.placement, Placement::Streamed { .. }))
                    .map(|t| t.bytes)
                    .sum();
                let head = if p.head_streamed {
                    inv.head().nbytes
                } else {
                    0
                };
                let rows = p
                    .tensors
                    .iter()
                    .any(|t| t.placement == Placement::RowsOnDemand);
                let row = if rows { inv.embedding().row_bytes() } else { 0 };
                assert_eq!(
                    p.streamed_bytes_per_token,
                    streamed + head + row,
                    "tied={tied} {pct}%"
                );
                let group_bytes: u64 = p.groups.iter().map(|g| g.bytes).sum();
                assert_eq!(group_bytes + row, p.streamed_bytes_per_token);
                // A tied head kept resident keeps the embedding resident with it.
                if tied && !p.head_streamed {
                    assert!(!rows && p.embedding_rows_bytes == 0);
                }
            }
        }
    }

    #[test]
    fn with_a_gpu_the_rest_is_planned_in_ram_as_before() {
        let inv = inventory(false);
        let model = inv.weight_bytes();
        for (gpu_pct, ram_pct) in [(10u64, 20u64), (30, 20), (30, 80), (60, 10)] {
            let mut p = params(model * ram_pct / 100);
            p.gpu_budget_bytes = model * gpu_pct / 100;
            let plan = plan(&inv, &p, Path::new("test.gguf")).unwrap();
            let at = format!("GPU {gpu_pct}%, RAM {ram_pct}%");
            assert!(plan.gpu_resident_bytes > 0, "{at}");
            assert!(plan.gpu_resident_bytes <= p.gpu_budget_bytes, "{at}");
            assert!(plan.held_limit_bytes() <= p.ram_budget_bytes, "{at}");
            // Every tensor is on one tier, and the GPU's are never read while decoding.
            let on_gpu: u64 = plan
                .tensors
                .iter()
                .filter(|t| t.placement == Placement::GpuResident)
                .map(|t| t.bytes)
                .sum();
            assert_eq!(on_gpu, plan.gpu_resident_bytes, "{at}");
            assert!(plan
                .tensors
                .iter()
                .all(|t| (t.tier == Tier::Gpu) == (t.placement == Placement::GpuResident)));
            let group_bytes: u64 = plan.groups.iter().map(|g| g.bytes).sum();
            let rows = if plan
                .tensors
                .iter()
                .any(|t| t.placement == Placement::RowsOnDemand)
            {
                inv.embedding().row_bytes()
            } else {
                0
            };
            assert_eq!(group_bytes + rows, plan.streamed_bytes_per_token, "{at}");
            // The GPU's layers are the last ones; the streamed ones come before them.
            let first_gpu_layer = 16 - plan.gpu_layers;
            for t in &plan.tensors {
                if let Some(l) = t.layer {
                    assert_eq!(
                        t.tier == Tier::Gpu,
                        l >= first_gpu_layer,
                        "{at}: {}",
                        t.name
                    );
                }
            }
            assert!(
                plan.streamed_layers().iter().all(|&l| l < first_gpu_layer),
                "{at}"
            );
            // llama.cpp's count includes the output layer.
            assert_eq!(plan.llama_gpu_layers(), plan.gpu_layers + 1, "{at}");
        }
        // A GPU that holds part of the model leaves less to stream than none.
        let without = plan_at(&inv, model / 5).unwrap();
        let mut p = params(model / 5);
        p.gpu_budget_bytes = model / 4;
        let with = plan(&inv, &p, Path::new("test.gguf")).unwrap();
        assert!(with.streamed_bytes_per_token < without.streamed_bytes_per_token);
    }

    #[test]
    fn small_layers_stream_whole_with_two_groups_read_ahead() {
        // Parts of under 16 MiB: one group a layer, and two of them read ahead.
        let inv = inventory(false);
        let p = plan_at(&inv, inv.weight_bytes() / 2).unwrap();
        assert_eq!(p.prefetch_depth, 2);
        assert!(p.groups.iter().all(|g| matches!(
            g.kind,
            GroupKind::Layer {
                part: LayerPart::Whole,
                ..
            } | GroupKind::HeadChunk { .. }
        )));
    }

    #[test]
    fn streamed_layers_are_spread_and_dense_layers_stream_in_three_groups() {
        // 70B-wide layers: each part holds a request for every reader.
        let inv = inventory_of(8192, 28672, false);
        let model = inv.weight_bytes();
        for pct in [30u64, 50, 70, 90] {
            let p = plan_at(&inv, model * pct / 100).unwrap();
            let layers = p.streamed_layers();
            let k = layers.len();
            assert!(k > 0 && k < 16, "{pct}%: {layers:?}");
            // Evenly spread, the last layer among them: no run of resident layers is longer
            // than 16 / k rounded up.
            assert_eq!(layers.last(), Some(&15), "{pct}%");
            let mut previous = -1i64;
            for &l in &layers {
                assert!(
                    l as i64 - previous <= (16 + k as i64 - 1) / k as i64,
                    "{pct}%: {layers:?}"
                );
                previous = l as i64;
            }
            // Each streamed layer: attention, then the FFN's input, then its down projection.
            let parts: Vec<(u32, LayerPart)> = p
                .groups
                .iter()
                .filter_map(|g| match g.kind {
                    GroupKind::Layer { layer, part } => Some((layer, part)),
                    GroupKind::HeadChunk { .. } => None,
                })
                .collect();
            let expected: Vec<(u32, LayerPart)> = layers
                .iter()
                .flat_map(|&l| {
                    [
                        LayerPart::Attention,
                        LayerPart::FfnInput,
                        LayerPart::FfnDown,
                    ]
                    .map(|p| (l, p))
                })
                .collect();
            assert_eq!(parts, expected, "{pct}%");
            for t in &p.tensors {
                if let Placement::Streamed { group } = t.placement {
                    let GroupKind::Layer { layer, part } = p.groups[group].kind else {
                        panic!("{} in a head chunk", t.name);
                    };
                    assert_eq!(t.layer, Some(layer));
                    let want = if t.name.contains("attn_") {
                        LayerPart::Attention
                    } else if t.name.contains("ffn_down") {
                        LayerPart::FfnDown
                    } else {
                        LayerPart::FfnInput
                    };
                    assert_eq!(part, want, "{}", t.name);
                }
            }
            // The window holds the read-ahead's groups plus the one in use, each a slot the
            // size of the largest group: a third of a layer here, not a whole one.
            let largest = p.groups.iter().map(|g| g.bytes).max().unwrap();
            let slots = u64::from(p.prefetch_depth) + 1;
            assert_eq!(p.prefetch_depth, 1, "{pct}%");
            assert!(p.window_bytes >= slots * largest, "{pct}%");
            assert!(
                p.window_bytes <= slots * (largest + 4 * PAGE_BYTES as u64),
                "{pct}%: window {} for groups of {largest}",
                p.window_bytes
            );
        }
    }

    #[test]
    fn a_layer_with_experts_streams_whole() {
        let (n_embd, n_ff) = (1024u64, 2048u64);
        let mut tensors = vec![q4("token_embd.weight".into(), vec![n_embd, 8192])];
        for l in 0..4 {
            tensors.push(q4(format!("blk.{l}.attn_q.weight"), vec![n_embd, n_embd]));
            tensors.push(q4(format!("blk.{l}.ffn_gate_inp.weight"), vec![n_embd, 8]));
            tensors.push(q4(
                format!("blk.{l}.ffn_up_exps.weight"),
                vec![n_embd, n_ff, 8],
            ));
        }
        tensors.push(q4("output.weight".into(), vec![n_embd, 8192]));
        let mut inv = ModelInventory::for_tests(ArchSpec::find("qwen3moe").unwrap(), 4, tensors);
        inv.n_expert_used = 2;
        let p = plan_at(&inv, inv.weight_bytes() / 2).unwrap();
        assert!(!p.groups.is_empty());
        for g in &p.groups {
            if let GroupKind::Layer { part, .. } = g.kind {
                assert_eq!(part, LayerPart::Whole);
            }
        }
    }

    #[test]
    fn head_chunks_start_on_page_boundaries() {
        let inv = inventory(true);
        let p = plan_at(&inv, inv.weight_bytes() / 10).unwrap();
        assert!(p.head_streamed);
        let row = inv.head().row_bytes();
        let chunks = p
            .groups
            .iter()
            .filter_map(|g| match g.kind {
                GroupKind::HeadChunk { first_row, n_rows } => Some((first_row, n_rows)),
                GroupKind::Layer { .. } => None,
            })
            .collect::<Vec<_>>();
        assert!(!chunks.is_empty());
        for (first_row, _) in &chunks {
            assert_eq!(first_row * row % PAGE_BYTES as u64, 0);
        }
        assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), inv.head().n_rows());
    }

    #[test]
    fn too_small_a_budget_names_a_minimum_that_works() {
        let inv = inventory(true);
        let err = plan_at(&inv, 100_000).unwrap_err().to_string();
        assert!(
            err.contains("at least") && err.contains("test.gguf"),
            "{err}"
        );
        let minimum = (1..200u64)
            .map(|k| k * 64 * 1024)
            .find(|b| plan_at(&inv, *b).is_ok())
            .unwrap();
        assert!(minimum <= inv.weight_bytes() / 2);
    }

    #[test]
    fn plans_the_most_layers_llama_cpp_allows() {
        // 512 layers, llama.cpp's maximum (one pass over the layers per candidate count).
        let (n_embd, n_layers) = (64u64, 512u32);
        let mut tensors = vec![TensorInfo {
            name: "token_embd.weight".into(),
            ggml_type: 0,
            dims: vec![n_embd, 256],
            file_offset: 0,
            nbytes: n_embd * 256 * 4,
        }];
        for l in 0..n_layers {
            tensors.push(TensorInfo {
                name: format!("blk.{l}.ffn_up.weight"),
                ggml_type: 0,
                dims: vec![n_embd, n_embd],
                file_offset: 0,
                nbytes: n_embd * n_embd * 4,
            });
        }
        let inv = ModelInventory::for_tests(ArchSpec::find("llama").unwrap(), n_layers, tensors);
        let p = plan_at(&inv, inv.weight_bytes() / 3).unwrap();
        assert_eq!(p.groups.len() as u32, p.streamed_layers().len() as u32);
    }
}
