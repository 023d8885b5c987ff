//! The expert-slice placement of a mixture-of-experts model: everything but the experts
//! resident, and each expert tensor (`ffn_{gate,up,down}_exps`, one slice per expert) read
//! slice by slice as the router picks experts, into an expert cache of the budget's rest.
//! Chosen when the budget holds everything else plus one layer's experts in full (a batch of
//! many tokens may pick every expert of a layer); else the model streams whole layers.

use super::gpu::GpuSplit;
use super::search::{finish, page_round, placement, Chosen, SearchParams};
use super::{Placement, Plan};
use crate::memory::PAGE_BYTES;
use crate::model::inventory::ModelTensor;
use crate::model::{ModelInventory, Role};
use crate::profile::ExpertProfile;

/// True for an expert tensor read slice by slice: one of the layers' 3-D expert matrices
/// (their biases, one row per expert, are small and stay resident).
pub(crate) fn is_sliced(inventory: &ModelInventory, t: &ModelTensor) -> bool {
    t.role == Role::Experts
        && t.info.dims.len() == 3
        && t.info.dims[2] > 1
        && t.layer.is_some_and(|l| l < inventory.n_layers)
}

/// The expert-slice plan of `inventory` under `params`, if it has experts and the budget
/// holds everything else and one layer's experts. What `gpu` holds is in GPU memory.
pub(crate) fn plan(
    inventory: &ModelInventory,
    params: &SearchParams,
    model_bytes: u64,
    gpu: &GpuSplit,
) -> Option<Plan> {
    let mut resident = 0u64;
    let mut expert_bytes = 0u64;
    let mut layer_expert_bytes = vec![0u64; inventory.n_layers as usize];
    let mut n_expert = 0u64;
    for t in inventory
        .tensors
        .iter()
        .filter(|t| !inventory.is_unused(t) && !gpu.holds(inventory, t))
    {
        if is_sliced(inventory, t) {
            expert_bytes += t.info.nbytes;
            n_expert = n_expert.max(t.info.dims[2]);
            if let Some(l) = t.layer {
                // Each held slice counts the pages it touches: at most two more than its
                // bytes.
                layer_expert_bytes[l as usize] +=
                    page_round(t.info.nbytes) + t.info.dims[2] * 2 * PAGE_BYTES as u64;
            }
        } else {
            resident += page_round(t.info.nbytes);
        }
    }
    let largest_layer = layer_expert_bytes.iter().copied().max().unwrap_or(0);
    let cache = params.ram_budget_bytes.checked_sub(resident)?;
    if expert_bytes == 0 || inventory.n_expert_used == 0 || cache < largest_layer {
        return None;
    }
    let tensors = inventory
        .tensors
        .iter()
        .map(|t| {
            let where_ = if inventory.is_unused(t) {
                Placement::Unused
            } else if gpu.holds(inventory, t) {
                Placement::GpuResident
            } else if is_sliced(inventory, t) {
                Placement::ExpertSlices
            } else {
                Placement::Resident
            };
            placement(t.info.name.clone(), t.role, t.layer, t.info.nbytes, where_)
        })
        .collect();
    // Each token reads its experts' slices unless cached: with routing spread evenly, the
    // cache holds each slice with the chance capacity / all slices.
    let used_share = inventory.n_expert_used as f64 / n_expert.max(1) as f64;
    let miss = 1.0 - (cache as f64 / expert_bytes as f64).min(1.0);
    let streamed = (expert_bytes as f64 * used_share.min(1.0) * miss) as u64;
    let chosen = Chosen {
        resident,
        window: 0,
        rows_bytes: 0,
        depth: 0,
        head_streamed: false,
        head_chunk_rows: 0,
        streamed,
        expert_cache: cache,
    };
    let mut plan = finish(
        inventory,
        params,
        model_bytes,
        gpu,
        Some(chosen),
        tensors,
        Vec::new(),
    );
    plan.expert_unit_bytes = unit_bytes(inventory, &[]).into_iter().max().unwrap_or(0);
    Some(plan)
}

/// Bytes of one expert of each layer (its slice of every sliced tensor but those named in
/// `on_gpu`), by layer.
fn unit_bytes(inventory: &ModelInventory, on_gpu: &[String]) -> Vec<u64> {
    let mut per_layer = vec![0u64; inventory.n_layers as usize];
    for t in inventory
        .tensors
        .iter()
        .filter(|t| is_sliced(inventory, t) && !on_gpu.contains(&t.info.name))
    {
        if let Some(l) = t.layer {
            per_layer[l as usize] += t.info.nbytes / t.info.dims[2];
        }
    }
    per_layer
}

/// Predicts the expert cache of `plan` from a saved `profile`: the hit rate of keeping the
/// hottest experts its capacity holds, and the bytes read per token and the bound that
/// follow (in place of the even-routing estimate).
pub(crate) fn apply_profile(
    plan: &mut Plan,
    inventory: &ModelInventory,
    profile: &ExpertProfile,
    disk_bytes_per_s: f64,
) {
    if plan.expert_cache_bytes == 0 || plan.expert_unit_bytes == 0 {
        return;
    }
    let capacity = (plan.expert_cache_bytes / plan.expert_unit_bytes) as usize;
    let hit = profile.predicted_hit_rate_without(capacity, &plan.gpu_expert_layer_indices);
    // The layers whose experts are in GPU memory read nothing, nor do single matrices there.
    let picked_bytes: u64 = unit_bytes(inventory, &plan.gpu_expert_tensors)
        .iter()
        .zip(0u32..)
        .filter(|(_, l)| plan.gpu_expert_layer_indices.binary_search(l).is_err())
        .map(|(b, _)| b * inventory.n_expert_used)
        .sum();
    plan.streamed_bytes_per_token = ((1.0 - hit) * picked_bytes as f64) as u64;
    plan.disk_time_s = plan.streamed_bytes_per_token as f64 / disk_bytes_per_s.max(1.0);
    plan.bound_tok_s = 1.0 / plan.disk_time_s.max(plan.compute_time_s).max(1e-12);
    plan.expert_profile_hit_rate = Some(hit);
}
