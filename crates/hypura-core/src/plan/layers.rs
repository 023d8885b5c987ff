//! The layers' side of a placement: which of a layer's streamed tensors are read together
//! (its stream groups, in the order the graph uses them) and which layers stream when some
//! of them must (spread evenly among the resident ones).

use super::search::{page_round, WINDOW_SLACK_PER_TENSOR};
use super::LayerPart;
use crate::model::inventory::ModelTensor;
use crate::model::{ModelInventory, Role};

/// A dense layer splits into its three groups only when each is at least this large: a
/// group's reads should give every reader thread a full request at least, and each group
/// costs a pause of the graph (on the development machine's 2 cores, SmolLM2's layers of
/// about 3 MiB split in three decoded at half the speed).
const MIN_SPLIT_GROUP_BYTES: u64 = 16 << 20;

/// One layer's streamed tensors as stream groups, in the order its graph uses them.
pub(super) struct LayerGroups {
    /// The layer.
    pub layer: u32,
    /// Its bytes (whole pages).
    pub bytes: u64,
    /// Each group: which part, and what it takes in the window (its bytes plus the slack of
    /// placing each tensor for direct reads in place).
    pub parts: Vec<(LayerPart, u64)>,
    /// Bytes of its largest group.
    pub largest_group_bytes: u64,
}

impl LayerGroups {
    /// What its largest group takes in the window.
    pub fn largest_window(&self) -> u64 {
        self.parts.iter().map(|p| p.1).max().unwrap_or(0)
    }
}

/// The layers whose weights are on the CPU side, grouped.
pub(super) struct CpuLayers {
    /// Those layers, in order (the GPU's layers, the last ones of the model, have none,
    /// unless their experts stay here).
    pub layers: Vec<LayerGroups>,
    /// Bytes always resident on the CPU side but the embedding and the head: norms, biases
    /// and tensors outside the trunk's layers (whole pages).
    pub always_bytes: u64,
    /// By layer: true when its streamed tensors form three groups.
    split: Vec<bool>,
}

impl CpuLayers {
    /// The layers of `inventory` whose tensors `on_gpu` does not claim.
    pub fn new(inventory: &ModelInventory, on_gpu: impl Fn(&ModelTensor) -> bool) -> Self {
        let n_layers = inventory.n_layers as usize;
        // A layer splits into its attention and FFN groups when it has nothing else: no
        // experts (wherever they are) and no tensor of another role.
        let mut split = vec![true; n_layers];
        for t in &inventory.tensors {
            if let Some(l) = t.layer.filter(|&l| (l as usize) < n_layers) {
                if !matches!(t.role, Role::Attention | Role::Ffn | Role::Small) {
                    split[l as usize] = false;
                }
            }
        }
        // By layer: (part, bytes, window bytes).
        let mut by_layer: Vec<Vec<(LayerPart, u64, u64)>> = vec![Vec::new(); n_layers];
        let mut always_bytes = 0u64;
        for t in inventory
            .tensors
            .iter()
            .filter(|t| !inventory.is_unused(t) && !on_gpu(t))
        {
            match (t.role, t.layer) {
                (Role::Embedding | Role::Output, _) => {}
                (Role::Small, _) | (_, None) => always_bytes += page_round(t.info.nbytes),
                (_, Some(layer)) if (layer as usize) < n_layers => {
                    let part = part_of(t, split[layer as usize]);
                    let bytes = page_round(t.info.nbytes);
                    let parts = &mut by_layer[layer as usize];
                    match parts.iter_mut().find(|p| p.0 == part) {
                        Some(p) => {
                            p.1 += bytes;
                            p.2 += bytes + WINDOW_SLACK_PER_TENSOR;
                        }
                        None => parts.push((part, bytes, bytes + WINDOW_SLACK_PER_TENSOR)),
                    }
                }
                (_, Some(_)) => always_bytes += page_round(t.info.nbytes),
            }
        }
        // Layers whose parts would be too small stream whole after all.
        for (layer, parts) in by_layer.iter_mut().enumerate() {
            if parts.len() > 1 && parts.iter().any(|p| p.1 < MIN_SPLIT_GROUP_BYTES) {
                split[layer] = false;
                let (bytes, window) = parts.iter().fold((0, 0), |a, p| (a.0 + p.1, a.1 + p.2));
                *parts = vec![(LayerPart::Whole, bytes, window)];
            }
        }
        let layers = by_layer
            .into_iter()
            .zip(0u32..)
            .filter(|(parts, _)| !parts.is_empty())
            .map(|(mut parts, layer)| {
                // `LayerPart` is declared in the order the graph uses the parts.
                parts.sort_by_key(|p| p.0 as u8);
                LayerGroups {
                    layer,
                    bytes: parts.iter().map(|p| p.1).sum(),
                    largest_group_bytes: parts.iter().map(|p| p.1).max().unwrap_or(0),
                    parts: parts.into_iter().map(|p| (p.0, p.2)).collect(),
                }
            })
            .collect();
        Self {
            layers,
            always_bytes,
            split,
        }
    }

    /// Which group of its layer `t` streams in, if its layer streams.
    pub fn part_of(&self, t: &ModelTensor) -> LayerPart {
        let split = t
            .layer
            .and_then(|l| self.split.get(l as usize))
            .copied()
            .unwrap_or(false);
        part_of(t, split)
    }
}

/// Which group of its layer `t` streams in: see [`LayerPart`].
fn part_of(t: &ModelTensor, split: bool) -> LayerPart {
    match t.role {
        _ if !split => LayerPart::Whole,
        Role::Attention => LayerPart::Attention,
        Role::Ffn if t.info.name.contains(".ffn_down") => LayerPart::FfnDown,
        _ => LayerPart::FfnInput,
    }
}

/// Positions of `k` layers spread evenly over `n` (the last always among them when `k > 0`):
/// streamed layers interleaved with resident ones keep the readers busy while the resident
/// ones compute, so read-ahead needs no window to cover a long resident stretch.
pub(super) fn spread(n: usize, k: usize) -> impl Iterator<Item = usize> {
    (0..n).filter(move |&i| (i + 1) * k / n > i * k / n)
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_takes_k_evenly_with_the_last() {
        for n in 1..40 {
            for k in 0..=n {
                let picked: Vec<usize> = spread(n, k).collect();
                assert_eq!(picked.len(), k, "{k} of {n}");
                if k > 0 {
                    assert_eq!(picked.last(), Some(&(n - 1)), "{k} of {n}");
                    let gap = picked.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(1);
                    assert!(gap <= n.div_ceil(k), "{k} of {n}: {picked:?}");
                }
            }
        }
    }
}
