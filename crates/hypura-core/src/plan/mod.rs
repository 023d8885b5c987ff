//! Placement: for every tensor, where its bytes live while decoding and how they get there —
//! complete enough that the runtime follows it without deciding again — plus the streaming
//! window, read-ahead depth, request size and the predicted bound
//! (`1 / max(streamed_bytes / disk_bandwidth, resident_compute_time)`).
//!
//! Deterministic and cheap: it reads only the header. [`budget`] turns what the user asked
//! for into bytes of weights; [`search`] picks the placement.

pub(crate) mod budget;
pub(crate) mod experts;
pub(crate) mod gpu;
mod layers;
pub(crate) mod search;

use serde::Serialize;

use crate::model::Role;

/// Which memory a tensor's bytes are in while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Tier {
    /// GPU memory (read once at load, computed on by the GPU backend).
    Gpu,
    /// RAM hypura holds (read once at load).
    Ram,
    /// The model file itself: read into a bounded window just before use.
    File,
}

/// Where one tensor lives and how its bytes reach memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Placement {
    /// Read once at load into GPU memory (the GPU backend's own buffer type), where the ops
    /// that read it run.
    GpuResident,
    /// Read once at load and held in RAM.
    Resident,
    /// Read whole every token as part of stream group `group` (its layer's streamed
    /// tensors, or a [`LayerPart`] of them), into the window, and released after use.
    Streamed {
        /// Index into [`Plan::groups`].
        group: usize,
    },
    /// Only the rows a batch looks up are read (the input embedding).
    RowsOnDemand,
    /// Read in row chunks (the [`GroupKind::HeadChunk`] groups) by hypura's own LM-head
    /// computation; the graph never reads it.
    HeadChunks,
    /// An expert tensor read slice by slice: only the experts the router picks are read,
    /// when it picks them, into the tensor's own place, and the most recently used stay in
    /// the expert cache ([`Plan::expert_cache_bytes`]).
    ExpertSlices,
    /// Never read: llama.cpp does not load it (a next-token-prediction layer's tensor,
    /// which serves speculative decoding alone). Its bytes stay in the file.
    Unused,
}

impl Placement {
    /// The tier the bytes live on.
    pub fn tier(self) -> Tier {
        match self {
            Placement::GpuResident => Tier::Gpu,
            Placement::Resident => Tier::Ram,
            _ => Tier::File,
        }
    }
}

/// One tensor's placement.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TensorPlacement {
    /// Tensor name (as in the file).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its layer, if any.
    pub layer: Option<u32>,
    /// Bytes.
    pub bytes: u64,
    /// The tier its bytes live on.
    pub tier: Tier,
    /// Where it lives and how it is read.
    pub placement: Placement,
}

/// What a stream group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum GroupKind {
    /// Streamed tensors of one layer.
    Layer {
        /// Layer index.
        layer: u32,
        /// Which of them.
        part: LayerPart,
    },
    /// A run of rows of the LM head.
    HeadChunk {
        /// First row.
        first_row: u64,
        /// Row count.
        n_rows: u64,
    },
}

/// Which streamed tensors of a layer a [`GroupKind::Layer`] group holds. A dense layer
/// streams as three groups, in the order its graph uses them, so that the window holds a
/// third of a layer at a time instead of a whole one; any other layer (a mixture-of-experts
/// layer streamed whole, or one with tensors of other roles) streams as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LayerPart {
    /// Every streamed tensor of the layer.
    Whole,
    /// The attention's projections.
    Attention,
    /// The FFN's matrices but its down projection (the gate and up projections, which the
    /// graph uses side by side).
    FfnInput,
    /// The FFN's down projection, which the graph uses last.
    FfnDown,
}

/// A unit of streaming: read together, released together, in this cyclic order per token.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct StreamGroup {
    /// What it holds.
    #[serde(flatten)]
    pub kind: GroupKind,
    /// Bytes read for it.
    pub bytes: u64,
}

/// Where every tensor lives, what streams, and the predicted speed bound.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// Architecture.
    pub arch: String,
    /// Sum of the weight bytes llama.cpp loads (the [`Placement::Unused`] tensors'
    /// are not counted).
    pub model_bytes: u64,
    /// Bytes of weights hypura may hold (the budget, resolved to bytes).
    pub ram_budget_bytes: u64,
    /// True when nothing streams (every weight the GPU does not hold fits in RAM): hypura
    /// then loads like stock llama.cpp without mmap.
    pub full_resident: bool,
    /// Bytes the GPU tier may hold (weights and the KV cache of its layers; 0: no GPU tier).
    pub gpu_budget_bytes: u64,
    /// Bytes of weights read once at load into GPU memory.
    pub gpu_resident_bytes: u64,
    /// Bytes of the KV cache in GPU memory (predicted: the share of the layers there).
    pub gpu_kv_cache_bytes: u64,
    /// The last layers whose weights are in GPU memory (for a mixture-of-experts model: all
    /// but the expert matrices); llama.cpp computes them, and keeps their KV cache, there.
    pub gpu_layers: u32,
    /// True when the output layer is in GPU memory: the LM head and everything else outside
    /// the layers, and the embedding too when the head is tied to it.
    pub gpu_head: bool,
    /// How many layers have their expert matrices in GPU memory too.
    pub gpu_expert_layers: u32,
    /// Those layers, ascending: the last ones, or those a saved expert profile shows routing
    /// the most widely.
    pub gpu_expert_layer_indices: Vec<u32>,
    /// Single expert matrices in GPU memory, by name, of layers whose other expert matrices
    /// are on the CPU (what the budget held after whole layers).
    pub gpu_expert_tensors: Vec<String>,
    /// GPU memory bandwidth assumed for the compute part of the bound, bytes/s.
    pub gpu_bytes_per_s: f64,
    /// Bytes read once at load and held.
    pub ram_resident_bytes: u64,
    /// Bytes reserved for streamed groups in flight (`prefetch_depth + 1` groups).
    pub window_bytes: u64,
    /// Bytes reserved for the embedding rows of one micro-batch.
    pub embedding_rows_bytes: u64,
    /// Bytes read from the file per generated token.
    pub streamed_bytes_per_token: u64,
    /// Groups read ahead of the one being computed.
    pub prefetch_depth: u32,
    /// Largest single read request.
    pub request_bytes: u64,
    /// Reader threads (requests in flight).
    pub io_threads: u32,
    /// True when hypura computes the LM head itself, streaming it in chunks.
    pub head_streamed: bool,
    /// Rows per head chunk (when streamed).
    pub head_chunk_rows: u64,
    /// Stream groups in per-token order.
    pub groups: Vec<StreamGroup>,
    /// Every tensor's placement, in file order.
    pub tensors: Vec<TensorPlacement>,
    /// Disk bandwidth used for the bound, bytes/s.
    pub disk_bytes_per_s: f64,
    /// Predicted seconds per token spent reading.
    pub disk_time_s: f64,
    /// Predicted seconds per token spent computing on resident data.
    pub compute_time_s: f64,
    /// `1 / max(disk_time_s, compute_time_s)`.
    pub bound_tok_s: f64,
    /// Tokens per micro-batch the plan assumes.
    pub n_ubatch: u32,
    /// The KV cache llama.cpp will allocate for the context asked for (predicted).
    pub kv_cache_bytes: u64,
    /// Why hypura does not tier this model, if it does not: it then runs as stock
    /// llama.cpp runs it.
    pub untiered: Option<String>,
    /// Bytes of expert slices held at once ([`Placement::ExpertSlices`]; 0: none).
    pub expert_cache_bytes: u64,
    /// Bytes of one expert of one layer (its slice of every expert tensor of the layer, the
    /// largest over the layers; 0: no expert slices).
    pub expert_unit_bytes: u64,
    /// The model's saved expert profile, where one is looked for (see
    /// [`crate::LoadOptions::expert_profiles`]).
    pub expert_profile_path: Option<std::path::PathBuf>,
    /// What the profile gave: the expert cache's hit rate predicted from it (the bound and
    /// `streamed_bytes_per_token` then assume it; without one, routing spread evenly).
    pub expert_profile_hit_rate: Option<f64>,
    /// Why the profile at `expert_profile_path` was not used, when it exists but could not be.
    pub expert_profile_ignored: Option<String>,
}

impl Plan {
    /// Bytes of weights hypura may hold at once in RAM: resident + window + embedding rows +
    /// expert cache.
    pub fn held_limit_bytes(&self) -> u64 {
        self.ram_resident_bytes
            + self.window_bytes
            + self.embedding_rows_bytes
            + self.expert_cache_bytes
    }

    /// llama.cpp's `n_gpu_layers` for this plan, which counts the output layer first: the
    /// layers on the GPU and one (0 when the GPU holds nothing). Where the output layer's
    /// weights go is hypura's placement's to say, not this count's.
    pub fn llama_gpu_layers(&self) -> u32 {
        if self.gpu_layers > 0 || self.gpu_head {
            self.gpu_layers + 1
        } else {
            0
        }
    }

    /// The layers whose tensors stream, in order.
    pub fn streamed_layers(&self) -> Vec<u32> {
        let mut layers: Vec<u32> = self
            .groups
            .iter()
            .filter_map(|g| match g.kind {
                GroupKind::Layer { layer, .. } => Some(layer),
                GroupKind::HeadChunk { .. } => None,
            })
            .collect();
        layers.dedup();
        layers
    }
}
