//! The GPU tier's share of a model: which weights the GPU budget holds.
//!
//! Every byte of a dense layer is read once per token wherever it lives, so a byte in GPU
//! memory saves the same disk read as a byte in RAM; what the GPU adds is compute at its own
//! memory's speed, and what a split costs is a copy of the activations between devices and a
//! synchronisation each time the graph changes device. So the GPU takes what llama.cpp's
//! `n_gpu_layers` gives it, in the same order: the output layer (the LM head and the final
//! norm) first, then whole layers from the last one back, with their KV cache and attention;
//! the layers before them stay on the CPU, resident or streamed, and the graph changes
//! device once per token each way.
//!
//! A head tied to the embedding is one tensor in the file that llama.cpp creates twice (the
//! input's lookup and the output's product): hypura's placement is by name, so on the GPU
//! both copies are there (the lookup runs there too, exactly), and the head costs twice the
//! bytes it saves reading: it comes after every layer.
//!
//! A mixture-of-experts layer is split: its attention, norms, router and shared experts are
//! read every token, its expert matrices only for the experts picked (`n_expert_used` of
//! `n_expert`), so the GPU takes the non-expert part of every layer first (llama.cpp's
//! `--cpu-moe` layout), then the expert matrices of whole layers: the last ones
//! (`--n-cpu-moe` keeps the first layers' experts on the CPU in the same way), or, when a
//! saved expert profile says how each layer routes, the layers whose picks spread widest
//! first. The RAM cache keeps the hottest experts of every layer; a layer whose picks are
//! spread over many experts is the one it serves worst, and all of its experts in GPU memory
//! save the most reads. What is left of the budget after the last whole layer that fits
//! takes single expert matrices (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`) of the next
//! layers in the same order: each is its own expert product, computed where its weights
//! are, so a layer can have one matrix on the GPU and the others on the CPU at the cost of
//! one more copy of a token's activations each way, and every byte of experts the GPU holds
//! is a byte the RAM cache can give to other experts. Experts left on the CPU are cached and
//! streamed slice by slice as before.
//!
//! Each layer on the GPU also holds its share of the KV cache there; the budget covers both.
//! llama.cpp's GPU compute buffer comes on top (not planned).

use super::experts::is_sliced;
use super::search::page_round;
use crate::model::inventory::ModelTensor;
use crate::model::{ModelInventory, Role};

/// What the GPU budget holds. `Default` is nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GpuSplit {
    /// The model's layer count.
    n_layers: u32,
    /// The last `layers` layers have every tensor on the GPU but their sliced expert
    /// matrices.
    pub layers: u32,
    /// The output layer is on the GPU: the LM head and the other tensors outside the layers,
    /// and the embedding too when the head is tied to it.
    pub head: bool,
    /// The layers (of the `layers` on the GPU) whose expert matrices are on the GPU too, in
    /// ascending order.
    pub expert_layers: Vec<u32>,
    /// Single expert matrices on the GPU, by name, of layers not in `expert_layers` (whose
    /// other expert matrices are on the CPU): the budget's rest after whole layers.
    pub expert_tensors: Vec<String>,
    /// Bytes of weights on the GPU.
    pub weight_bytes: u64,
    /// Bytes of the KV cache of the layers on the GPU (predicted).
    pub kv_cache_bytes: u64,
}

impl GpuSplit {
    /// True when the GPU holds `t`.
    pub fn holds(&self, inventory: &ModelInventory, t: &ModelTensor) -> bool {
        if inventory.is_unused(t) {
            return false;
        }
        match t.layer {
            Some(l) if l < self.n_layers => {
                let from_end = self.n_layers - l;
                if is_sliced(inventory, t) {
                    self.expert_layers.binary_search(&l).is_ok()
                        || self.expert_tensors.contains(&t.info.name)
                } else {
                    from_end <= self.layers
                }
            }
            Some(_) => false,
            None => self.head && (t.role != Role::Embedding || inventory.tied_head),
        }
    }
}

/// The GPU's share of `inventory` within `budget_bytes` (weights and the KV cache of the
/// layers it holds, of `kv_cache_bytes` for the whole model). `expert_order` is the order in
/// which layers' expert matrices earn GPU memory; empty: the last layers first.
pub(crate) fn split(
    inventory: &ModelInventory,
    budget_bytes: u64,
    kv_cache_bytes: u64,
    expert_order: &[u32],
) -> GpuSplit {
    let n = inventory.n_layers as usize;
    let mut split = GpuSplit {
        n_layers: inventory.n_layers,
        ..GpuSplit::default()
    };
    if budget_bytes == 0 || n == 0 {
        return split;
    }
    // Bytes each candidate takes, rounded as hypura's placement rounds them.
    let mut layer_bytes = vec![0u64; n];
    let mut expert_bytes = vec![0u64; n];
    // Each layer's expert matrices, in the file's order.
    let mut expert_matrices: Vec<Vec<&ModelTensor>> = vec![Vec::new(); n];
    let mut outside_bytes = 0u64;
    for t in inventory.tensors.iter().filter(|t| !inventory.is_unused(t)) {
        let bytes = page_round(t.info.nbytes);
        match t.layer {
            Some(l) if (l as usize) < n && is_sliced(inventory, t) => {
                expert_bytes[l as usize] += bytes;
                expert_matrices[l as usize].push(t);
            }
            Some(l) if (l as usize) < n => layer_bytes[l as usize] += bytes,
            Some(_) => {}
            // A tied head: llama.cpp's two copies of the embedding.
            None if t.role == Role::Embedding && inventory.tied_head => outside_bytes += 2 * bytes,
            None if t.role == Role::Embedding => {}
            None => outside_bytes += bytes,
        }
    }
    let mut used = 0u64;
    // The output layer first, as llama.cpp offloads it first; a tied one, which takes twice
    // the bytes it saves reading, after the layers.
    if !inventory.tied_head && outside_bytes <= budget_bytes {
        used = outside_bytes;
        split.head = true;
        split.weight_bytes = outside_bytes;
    }
    let kv_per_layer = kv_cache_bytes / n as u64;
    for l in (0..n).rev() {
        let cost = layer_bytes[l] + kv_per_layer;
        if used + cost > budget_bytes {
            break;
        }
        used += cost;
        split.layers += 1;
        split.weight_bytes += layer_bytes[l];
        split.kv_cache_bytes += kv_per_layer;
    }
    if inventory.tied_head && split.layers as usize == n && used + outside_bytes <= budget_bytes {
        used += outside_bytes;
        split.head = true;
        split.weight_bytes += outside_bytes;
    }
    if split.layers as usize == n {
        let last_first: Vec<u32> = (0..inventory.n_layers).rev().collect();
        let order = if expert_order.is_empty() {
            &last_first
        } else {
            expert_order
        };
        let mut order = order.iter().copied().filter(|&l| (l as usize) < n);
        for l in order.by_ref() {
            if split.expert_layers.contains(&l) {
                continue;
            }
            if used + expert_bytes[l as usize] > budget_bytes {
                // The rest of the budget: single matrices of this layer and the next ones.
                let whole = split.expert_layers.clone();
                for t in std::iter::once(l)
                    .chain(order.by_ref())
                    .filter(|l| !whole.contains(l))
                    .flat_map(|l| &expert_matrices[l as usize])
                {
                    let bytes = page_round(t.info.nbytes);
                    // (An order may name a layer twice.)
                    if used + bytes <= budget_bytes && !split.expert_tensors.contains(&t.info.name)
                    {
                        used += bytes;
                        split.weight_bytes += bytes;
                        split.expert_tensors.push(t.info.name.clone());
                    }
                }
                break;
            }
            used += expert_bytes[l as usize];
            split.weight_bytes += expert_bytes[l as usize];
            split.expert_layers.push(l);
        }
        split.expert_layers.sort_unstable();
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::ArchSpec;
    use crate::model::TensorInfo;

    fn q4(name: String, dims: Vec<u64>) -> TensorInfo {
        let elements: u64 = dims.iter().product();
        TensorInfo {
            name,
            ggml_type: 2,
            nbytes: elements / 32 * 18,
            dims,
            file_offset: 0,
        }
    }

    /// 8 layers of 4 MiB-ish matrices, with experts (8 of them) when `moe`.
    fn inventory(moe: bool, tied: bool) -> ModelInventory {
        let (e, f, v, n) = (1024u64, 4096u64, 8192u64, 8u32);
        let mut tensors = vec![q4("token_embd.weight".into(), vec![e, v])];
        for l in 0..n {
            tensors.push(q4(format!("blk.{l}.attn_q.weight"), vec![e, e]));
            tensors.push(TensorInfo {
                name: format!("blk.{l}.attn_norm.weight"),
                ggml_type: 0,
                dims: vec![e],
                file_offset: 0,
                nbytes: e * 4,
            });
            if moe {
                tensors.push(q4(format!("blk.{l}.ffn_gate_inp.weight"), vec![e, 8]));
                tensors.push(q4(format!("blk.{l}.ffn_up_exps.weight"), vec![e, f, 8]));
                tensors.push(q4(format!("blk.{l}.ffn_down_exps.weight"), vec![f, e, 8]));
            } else {
                tensors.push(q4(format!("blk.{l}.ffn_up.weight"), vec![e, f]));
            }
        }
        tensors.push(TensorInfo {
            name: "output_norm.weight".into(),
            ggml_type: 0,
            dims: vec![e],
            file_offset: 0,
            nbytes: e * 4,
        });
        if !tied {
            tensors.push(q4("output.weight".into(), vec![e, v]));
        }
        let arch = if moe { "qwen3moe" } else { "llama" };
        let mut inv = ModelInventory::for_tests(ArchSpec::find(arch).unwrap(), n, tensors);
        if moe {
            inv.n_expert_used = 2;
        }
        inv
    }

    fn gpu_bytes(inv: &ModelInventory, s: &GpuSplit) -> u64 {
        inv.tensors
            .iter()
            .filter(|t| s.holds(inv, t))
            .map(|t| page_round(t.info.nbytes))
            .sum()
    }

    fn bytes_of(inv: &ModelInventory, keep: impl Fn(&ModelTensor) -> bool) -> u64 {
        inv.tensors
            .iter()
            .filter(|t| keep(t))
            .map(|t| page_round(t.info.nbytes))
            .sum()
    }

    #[test]
    fn the_output_layer_first_then_whole_layers_from_the_last() {
        let inv = inventory(false, false);
        let layer = bytes_of(&inv, |t| t.layer == Some(7));
        let outside = bytes_of(&inv, |t| t.layer.is_none() && t.role != Role::Embedding);
        assert_eq!(
            split(&inv, 0, 0, &[]),
            GpuSplit {
                n_layers: 8,
                ..Default::default()
            }
        );
        let s = split(&inv, outside + layer * 3 + layer / 2, 0, &[]);
        assert_eq!((s.layers, s.head, s.expert_layers.len()), (3, true, 0));
        assert_eq!(s.weight_bytes, gpu_bytes(&inv, &s));
        for t in &inv.tensors {
            let on_gpu = match t.layer {
                Some(l) => l >= 5,
                None => t.role != Role::Embedding,
            };
            assert_eq!(s.holds(&inv, t), on_gpu, "{}", t.info.name);
        }
        // A budget the head does not fit in still takes layers.
        assert!(layer < outside);
        let s = split(&inv, layer + layer / 2, 0, &[]);
        assert_eq!((s.layers, s.head), (1, false));
        let all = split(&inv, u64::MAX / 4, 0, &[]);
        assert!(all.head && all.layers == 8);
        // Everything but the embedding, the input layer, which llama.cpp keeps on the CPU.
        for t in &inv.tensors {
            assert_eq!(
                all.holds(&inv, t),
                t.role != Role::Embedding,
                "{}",
                t.info.name
            );
        }
    }

    #[test]
    fn the_kv_cache_of_each_layer_counts_against_the_budget() {
        let inv = inventory(false, false);
        let without = split(&inv, 40 << 20, 0, &[]);
        let with = split(&inv, 40 << 20, 64 << 20, &[]);
        assert!(with.layers < without.layers);
        assert_eq!(with.kv_cache_bytes, (64 << 20) / 8 * u64::from(with.layers));
        assert!(with.weight_bytes + with.kv_cache_bytes <= 40 << 20);
    }

    #[test]
    fn a_tied_head_takes_the_embedding_with_it_at_twice_its_bytes() {
        let inv = inventory(false, true);
        let embedding = bytes_of(&inv, |t| t.role == Role::Embedding);
        let norm = bytes_of(&inv, |t| t.layer.is_none() && t.role != Role::Embedding);
        let layers = bytes_of(&inv, |t| t.layer.is_some());
        // Not before every layer is there.
        let s = split(&inv, 2 * embedding + norm, 0, &[]);
        assert!(!s.head && s.layers > 0);
        let s = split(&inv, layers + 2 * embedding + norm, 0, &[]);
        assert_eq!((s.layers, s.head), (8, true));
        assert_eq!(s.weight_bytes, layers + 2 * embedding + norm);
        assert!(inv.tensors.iter().all(|t| s.holds(&inv, t)));
        assert!(!split(&inv, layers + 2 * embedding + norm - 1, 0, &[]).head);
    }

    #[test]
    fn experts_come_after_every_layer_s_shared_part() {
        let inv = inventory(true, false);
        let shared = bytes_of(&inv, |t| t.role != Role::Embedding && !is_sliced(&inv, t));
        let experts_of_a_layer = bytes_of(&inv, |t| t.layer == Some(0) && is_sliced(&inv, t));
        let outside = bytes_of(&inv, |t| t.layer.is_none() && t.role != Role::Embedding);
        // Less than the shared parts: some layers, no experts.
        let s = split(&inv, outside + (shared - outside) / 2, 0, &[]);
        assert!(s.layers > 0 && s.layers < 8 && s.expert_layers.is_empty());
        assert!(inv
            .tensors
            .iter()
            .filter(|t| is_sliced(&inv, t))
            .all(|t| !s.holds(&inv, t)));
        // The shared parts, the head and two layers' experts: the last two.
        let s = split(&inv, shared + 2 * experts_of_a_layer + 1, 0, &[]);
        assert_eq!(
            (s.layers, s.head, s.expert_layers.clone()),
            (8, true, vec![6, 7])
        );
        assert_eq!(s.weight_bytes, gpu_bytes(&inv, &s));
        for t in inv.tensors.iter().filter(|t| is_sliced(&inv, t)) {
            assert_eq!(s.holds(&inv, t), t.layer >= Some(6), "{}", t.info.name);
        }
        // In a profile's order: the first two layers it names.
        let s = split(&inv, shared + 2 * experts_of_a_layer + 1, 0, &[3, 0, 5]);
        assert_eq!(s.expert_layers, vec![0, 3]);
        assert_eq!(s.weight_bytes, gpu_bytes(&inv, &s));
        for t in inv.tensors.iter().filter(|t| is_sliced(&inv, t)) {
            let held = matches!(t.layer, Some(0) | Some(3));
            assert_eq!(s.holds(&inv, t), held, "{}", t.info.name);
        }
    }

    #[test]
    fn the_budget_s_rest_takes_single_expert_matrices_of_the_next_layers() {
        let inv = inventory(true, false);
        let shared = bytes_of(&inv, |t| t.role != Role::Embedding && !is_sliced(&inv, t));
        let matrix = bytes_of(&inv, |t| t.info.name == "blk.0.ffn_up_exps.weight");
        let experts_of_a_layer = bytes_of(&inv, |t| t.layer == Some(0) && is_sliced(&inv, t));
        assert_eq!(experts_of_a_layer, 2 * matrix);
        // One layer's experts and one more matrix: the next layer's first.
        let s = split(&inv, shared + experts_of_a_layer + matrix + 1, 0, &[]);
        assert_eq!(s.expert_layers, vec![7]);
        assert_eq!(
            s.expert_tensors,
            vec!["blk.6.ffn_up_exps.weight".to_string()]
        );
        assert_eq!(s.weight_bytes, gpu_bytes(&inv, &s));
        for t in inv.tensors.iter().filter(|t| is_sliced(&inv, t)) {
            let held = t.layer == Some(7) || t.info.name == "blk.6.ffn_up_exps.weight";
            assert_eq!(s.holds(&inv, t), held, "{}", t.info.name);
        }
        // Room for three matrices past a whole layer: another whole layer, then one matrix.
        let s = split(&inv, shared + experts_of_a_layer + 3 * matrix, 0, &[]);
        assert_eq!(s.expert_layers, vec![6, 7]);
        assert_eq!(
            s.expert_tensors,
            vec!["blk.5.ffn_up_exps.weight".to_string()]
        );
        // A profile's order that names a layer twice counts its matrices once.
        let s = split(&inv, shared + experts_of_a_layer + matrix, 0, &[3, 3, 0, 0]);
        assert_eq!(s.expert_layers, vec![3]);
        assert_eq!(
            s.expert_tensors,
            vec!["blk.0.ffn_up_exps.weight".to_string()]
        );
        assert_eq!(s.weight_bytes, gpu_bytes(&inv, &s));
        // Less than a matrix left: none.
        let s = split(&inv, shared + experts_of_a_layer + matrix - 1, 0, &[]);
        assert!(s.expert_tensors.is_empty());
    }

    #[test]
    fn experts_the_gpu_does_not_hold_are_read_slice_by_slice() {
        use crate::plan::search::{plan, SearchParams, GPU_BYTES_PER_S, RAM_BYTES_PER_S};
        use crate::plan::{Placement, Tier};
        let inv = inventory(true, false);
        let shared = bytes_of(&inv, |t| t.role != Role::Embedding && !is_sliced(&inv, t));
        let experts_of_a_layer = bytes_of(&inv, |t| t.layer == Some(0) && is_sliced(&inv, t));
        let embedding = bytes_of(&inv, |t| t.role == Role::Embedding);
        let params = SearchParams {
            // The embedding and two layers' experts in RAM.
            ram_budget_bytes: embedding + 2 * experts_of_a_layer + (1 << 20),
            gpu_budget_bytes: shared + 3 * experts_of_a_layer,
            gpu_bytes_per_s: GPU_BYTES_PER_S,
            disk_bytes_per_s: 1.6e9,
            ram_bytes_per_s: RAM_BYTES_PER_S,
            max_prefetch_depth: 2,
            n_ubatch: 128,
            io_threads: 4,
            kv_cache_bytes: 0,
            expert_slices: true,
            gpu_expert_order: Vec::new(),
        };
        let p = plan(&inv, &params, std::path::Path::new("moe.gguf")).unwrap();
        assert_eq!(
            (p.gpu_layers, p.gpu_head, p.gpu_expert_layers),
            (8, true, 3)
        );
        assert!(p.expert_cache_bytes > 0);
        assert!(p.held_limit_bytes() <= params.ram_budget_bytes);
        for (t, placed) in inv.tensors.iter().zip(&p.tensors) {
            let want = if t.role == Role::Embedding {
                Tier::Ram
            } else if is_sliced(&inv, t) && t.layer < Some(5) {
                assert_eq!(placed.placement, Placement::ExpertSlices, "{}", t.info.name);
                Tier::File
            } else {
                Tier::Gpu
            };
            assert_eq!(placed.tier, want, "{}", t.info.name);
        }
    }
}
