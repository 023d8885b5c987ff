//! Placement: which tensor lives in RAM and which streams from the file, the streaming
//! window, prefetch depth and request size, and the predicted tokens/s bound
//! (`1 / max(streamed_bytes / disk_bandwidth, resident_compute_time)`, see DESIGN.md §2).
//!
//! Deterministic and cheap: it reads only the header inventory.

use serde::Serialize;

use crate::error::{HypuraError, Result};
use crate::inspect::{ModelInventory, Role};
use crate::size::format_bytes;
use crate::tier::PAGE_BYTES;

/// Where a tensor's bytes live during decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Read once at load into memory hypura holds.
    Ram,
    /// Streamed from the model file into the window just before use.
    Nvme,
}

/// How an NVMe-tier tensor is streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Whole tensor, as part of its layer's group.
    Group(usize),
    /// Only the rows the batch looks up (the input embedding).
    Rows,
    /// In row chunks, by hypura's own LM-head computation.
    HeadChunks,
}

/// One tensor's placement.
#[derive(Debug, Clone, Serialize)]
pub struct TensorPlacement {
    /// Tensor name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its layer, if any.
    pub layer: Option<u32>,
    /// Bytes.
    pub bytes: u64,
    /// Tier.
    pub tier: Tier,
    /// For NVMe-tier tensors, how they stream.
    pub stream: Option<StreamMode>,
}

/// What a stream group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum GroupKind {
    /// The streamed tensors of one layer.
    Layer {
        /// Layer index.
        layer: u32,
    },
    /// A run of rows of the LM head.
    HeadChunk {
        /// First row.
        first_row: u64,
        /// Row count.
        n_rows: u64,
    },
}

/// A unit of streaming: read together, released together, in this cyclic order per token.
#[derive(Debug, Clone, Serialize)]
pub struct StreamGroup {
    /// What it holds.
    #[serde(flatten)]
    pub kind: GroupKind,
    /// Bytes read for it.
    pub bytes: u64,
}

/// Inputs of the planner.
#[derive(Debug, Clone)]
pub struct PlanParams {
    /// Bytes of weights hypura may hold (resident + window).
    pub ram_budget_bytes: u64,
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
}

impl PlanParams {
    /// Defaults for a budget: 1.6 GB/s disk, 20 GB/s memory, prefetch depth 2, 128-token
    /// micro-batches, 4 reader threads.
    pub fn new(ram_budget_bytes: u64) -> Self {
        Self {
            ram_budget_bytes,
            disk_bytes_per_s: 1.6e9,
            ram_bytes_per_s: 20e9,
            max_prefetch_depth: 2,
            n_ubatch: 128,
            io_threads: DEFAULT_IO_THREADS,
        }
    }
}

/// The planner's output.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Architecture.
    pub arch: String,
    /// Sum of all weight bytes.
    pub model_bytes: u64,
    /// The budget planned for.
    pub ram_budget_bytes: u64,
    /// True when everything fits: hypura then loads like stock llama.cpp without mmap.
    pub full_resident: bool,
    /// Bytes read once at load and held.
    pub ram_resident_bytes: u64,
    /// Bytes reserved for streamed groups in flight (`(prefetch_depth + 1)` groups).
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
}

const REQUEST_BYTES: u64 = 4 << 20;
/// Window bytes each streamed tensor may take beyond its whole pages: it is placed at its
/// file offset's position within a page, so that direct I/O reads it without a copy.
pub const WINDOW_SLACK_PER_TENSOR: u64 = PAGE_BYTES as u64;
/// Reader threads unless told otherwise.
pub const DEFAULT_IO_THREADS: u32 = 4;

fn page_round(bytes: u64) -> u64 {
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
    streamed_layers: u32,
    head_streamed: bool,
    depth: u32,
    window: u64,
    head_chunk_rows: u64,
    resident: u64,
    streamed: u64,
}

/// Plans `inventory` under `params`.
pub fn plan(inventory: &ModelInventory, params: &PlanParams) -> Result<Plan> {
    let model_bytes: u64 = inventory.tensors.iter().map(|t| t.info.nbytes).sum();
    let budget = params.ram_budget_bytes;
    if budget >= model_bytes {
        let tensors = inventory
            .tensors
            .iter()
            .map(|t| TensorPlacement {
                name: t.info.name.clone(),
                role: t.role,
                layer: t.layer,
                bytes: t.info.nbytes,
                tier: Tier::Ram,
                stream: None,
            })
            .collect();
        return Ok(finish(
            inventory,
            params,
            model_bytes,
            None,
            tensors,
            Vec::new(),
        ));
    }

    let n_layers = inventory.n_layers;
    let mut layer_bytes = vec![0u64; n_layers as usize];
    // What a layer takes in the streaming window: its bytes plus the slack of placing each
    // tensor for direct reads in place.
    let mut layer_window_bytes = vec![0u64; n_layers as usize];
    let mut always = 0u64;
    for t in &inventory.tensors {
        match (t.role, t.layer) {
            (Role::Embedding | Role::Output, _) => {}
            (Role::Small, _) | (_, None) => always += page_round(t.info.nbytes),
            (_, Some(layer)) if layer < n_layers => {
                layer_bytes[layer as usize] += page_round(t.info.nbytes);
                layer_window_bytes[layer as usize] +=
                    page_round(t.info.nbytes) + WINDOW_SLACK_PER_TENSOR;
            }
            (_, Some(_)) => always += page_round(t.info.nbytes),
        }
    }
    let embd = inventory.embedding();
    let rows_bytes = (params.n_ubatch as u64 * 2 * PAGE_BYTES as u64).min(page_round(embd.nbytes));
    let head = inventory.head();
    let head_bytes = head.nbytes;
    let row_bytes = head.row_bytes();
    let unit_rows = PAGE_BYTES as u64 / gcd(row_bytes, PAGE_BYTES as u64);
    let unit_bytes = unit_rows * row_bytes;
    let fixed = always + rows_bytes;

    let mut best: Option<Candidate> = None;
    for streamed_layers in 0..=n_layers {
        let first_streamed = (n_layers - streamed_layers) as usize;
        let resident_layers: u64 = layer_bytes[..first_streamed].iter().sum();
        let streamed_layer_bytes: u64 = layer_bytes[first_streamed..].iter().sum();
        let max_layer = layer_bytes[first_streamed..]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let max_layer_window = layer_window_bytes[first_streamed..]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        for head_streamed in [false, true] {
            if streamed_layers == 0 && !head_streamed {
                continue; // would be full residency, which does not fit
            }
            let head_resident = if head_streamed {
                0
            } else {
                page_round(head_bytes)
            };
            let held = fixed + resident_layers + head_resident;
            for depth in (0..=params.max_prefetch_depth).rev() {
                let slots = depth as u64 + 1;
                let (unit, head_chunk_rows) = if max_layer > 0 {
                    let rows = (max_layer / unit_bytes).max(1) * unit_rows;
                    (
                        max_layer_window.max(rows * row_bytes + WINDOW_SLACK_PER_TENSOR),
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
                let better = match &best {
                    None => true,
                    // Read-ahead first: measured on the GPU machine, depth 2 reached the bound
                    // where depth 1 with a few more resident layers did not (BENCHMARKS.md).
                    // Then the fewest bytes read.
                    Some(b) => depth > b.depth || (depth == b.depth && streamed < b.streamed),
                };
                if better {
                    best = Some(Candidate {
                        streamed_layers,
                        head_streamed,
                        depth,
                        window,
                        head_chunk_rows: head_chunk_rows.min(head.n_rows()),
                        resident: held - rows_bytes,
                        streamed,
                    });
                }
            }
        }
    }
    let Some(choice) = best else {
        let max_layer = layer_bytes.iter().copied().max().unwrap_or(0);
        let max_layer_window = layer_window_bytes.iter().copied().max().unwrap_or(0);
        let unit = max_layer_window.max(unit_bytes + WINDOW_SLACK_PER_TENSOR);
        let minimum = fixed + page_round(unit);
        return Err(HypuraError::BudgetTooSmall {
            budget: format_bytes(budget),
            minimum: format_bytes(minimum),
            why: format!(
                "one layer ({}) must fit beside the norms ({}) and one micro-batch of embedding rows ({})",
                format_bytes(max_layer),
                format_bytes(always),
                format_bytes(rows_bytes)
            ),
        });
    };

    let first_streamed = n_layers - choice.streamed_layers;
    let mut groups: Vec<StreamGroup> = (first_streamed..n_layers)
        .map(|layer| StreamGroup {
            kind: GroupKind::Layer { layer },
            bytes: 0,
        })
        .collect();
    let tensors = inventory
        .tensors
        .iter()
        .map(|t| {
            let (tier, stream) = match (t.role, t.layer) {
                (Role::Embedding, _) => (Tier::Nvme, Some(StreamMode::Rows)),
                (Role::Output, _) if choice.head_streamed => {
                    (Tier::Nvme, Some(StreamMode::HeadChunks))
                }
                (Role::Small, _) | (_, None) => (Tier::Ram, None),
                (_, Some(layer)) if layer >= first_streamed && layer < n_layers => {
                    let group = (layer - first_streamed) as usize;
                    groups[group].bytes += t.info.nbytes;
                    (Tier::Nvme, Some(StreamMode::Group(group)))
                }
                _ => (Tier::Ram, None),
            };
            TensorPlacement {
                name: t.info.name.clone(),
                role: t.role,
                layer: t.layer,
                bytes: t.info.nbytes,
                tier,
                stream,
            }
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
    let chosen = Chosen {
        resident: choice.resident,
        window: choice.window,
        rows_bytes,
        depth: choice.depth,
        head_streamed: choice.head_streamed,
        head_chunk_rows: if choice.head_streamed {
            choice.head_chunk_rows
        } else {
            0
        },
        streamed: choice.streamed + embd.row_bytes(),
    };
    Ok(finish(
        inventory,
        params,
        model_bytes,
        Some(chosen),
        tensors,
        groups,
    ))
}

struct Chosen {
    resident: u64,
    window: u64,
    rows_bytes: u64,
    depth: u32,
    head_streamed: bool,
    head_chunk_rows: u64,
    streamed: u64,
}

fn finish(
    inventory: &ModelInventory,
    params: &PlanParams,
    model_bytes: u64,
    chosen: Option<Chosen>,
    tensors: Vec<TensorPlacement>,
    groups: Vec<StreamGroup>,
) -> Plan {
    let full = chosen.is_none();
    let c = chosen.unwrap_or(Chosen {
        resident: model_bytes,
        window: 0,
        rows_bytes: 0,
        depth: 0,
        head_streamed: false,
        head_chunk_rows: 0,
        streamed: 0,
    });
    let disk_time_s = c.streamed as f64 / params.disk_bytes_per_s.max(1.0);
    let compute_time_s = model_bytes as f64 / params.ram_bytes_per_s.max(1.0);
    Plan {
        arch: inventory.arch.clone(),
        model_bytes,
        ram_budget_bytes: params.ram_budget_bytes,
        full_resident: full,
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
    }
}

impl Plan {
    /// Bytes of weights hypura may hold at once: resident + window + embedding rows.
    pub fn held_limit_bytes(&self) -> u64 {
        self.ram_resident_bytes + self.window_bytes + self.embedding_rows_bytes
    }

    /// A human-readable summary table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "architecture           {}", self.arch);
        let _ = writeln!(
            out,
            "model weights          {}",
            format_bytes(self.model_bytes)
        );
        let _ = writeln!(
            out,
            "RAM budget             {}",
            format_bytes(self.ram_budget_bytes)
        );
        if self.full_resident {
            let _ = writeln!(
                out,
                "placement              everything resident in RAM (nothing streams)"
            );
        }
        let _ = writeln!(
            out,
            "resident in RAM        {}",
            format_bytes(self.ram_resident_bytes)
        );
        let _ = writeln!(
            out,
            "streaming window       {} ({} groups in flight + current, {} per request, {} reader threads)",
            format_bytes(self.window_bytes),
            self.prefetch_depth,
            format_bytes(self.request_bytes),
            self.io_threads
        );
        let _ = writeln!(
            out,
            "embedding rows window  {}",
            format_bytes(self.embedding_rows_bytes)
        );
        let streamed_layers: Vec<u32> = self
            .groups
            .iter()
            .filter_map(|g| match g.kind {
                GroupKind::Layer { layer } => Some(layer),
                _ => None,
            })
            .collect();
        let _ = writeln!(
            out,
            "streamed layers        {}",
            match (streamed_layers.first(), streamed_layers.last()) {
                (Some(a), Some(b)) => format!(
                    "{a}..={b} ({} of {})",
                    streamed_layers.len(),
                    self.layer_count()
                ),
                _ => "none".to_string(),
            }
        );
        let _ = writeln!(
            out,
            "LM head                {}",
            if self.head_streamed {
                format!("streamed in chunks of {} rows", self.head_chunk_rows)
            } else {
                "resident".to_string()
            }
        );
        let _ = writeln!(
            out,
            "read per token         {}",
            format_bytes(self.streamed_bytes_per_token)
        );
        let _ = writeln!(
            out,
            "disk bandwidth         {:.2} GB/s",
            self.disk_bytes_per_s / 1e9
        );
        let _ = writeln!(
            out,
            "bound                  {:.3} tok/s (disk {:.4} s/token, compute {:.4} s/token)",
            self.bound_tok_s, self.disk_time_s, self.compute_time_s
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<8} {:<12} {:>12}  tensors", "tier", "role", "bytes");
        let mut rows: Vec<((Tier, Role), (u64, u32))> = Vec::new();
        for t in &self.tensors {
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
                format!("{tier:?}").to_lowercase(),
                format!("{role:?}").to_lowercase(),
                format_bytes(bytes),
                count
            );
        }
        out
    }

    fn layer_count(&self) -> usize {
        let mut layers: Vec<u32> = self.tensors.iter().filter_map(|t| t.layer).collect();
        layers.sort_unstable();
        layers.dedup();
        layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::TensorInfo;
    use crate::inspect::ModelTensor;

    /// A small llama-shaped Q4_0 model (about 100 MB): 16 layers.
    fn inventory(tied: bool) -> ModelInventory {
        let (n_embd, n_ff, n_vocab, n_layers) = (1024u64, 4096u64, 32000u64, 16u32);
        let q4 = |name: String, cols: u64, rows: u64| TensorInfo {
            name,
            ggml_type: 2,
            dims: vec![cols, rows],
            file_offset: 0,
            nbytes: cols / 32 * 18 * rows,
        };
        let mut tensors = vec![ModelTensor {
            info: q4("token_embd.weight".into(), n_embd, n_vocab),
            role: Role::Embedding,
            layer: None,
        }];
        for l in 0..n_layers {
            for (kind, cols, rows, role) in [
                ("attn_q", n_embd, n_embd, Role::Attention),
                ("ffn_up", n_embd, n_ff, Role::Ffn),
                ("ffn_down", n_ff, n_embd, Role::Ffn),
            ] {
                tensors.push(ModelTensor {
                    info: q4(format!("blk.{l}.{kind}.weight"), cols, rows),
                    role,
                    layer: Some(l),
                });
            }
            tensors.push(ModelTensor {
                info: TensorInfo {
                    name: format!("blk.{l}.attn_norm.weight"),
                    ggml_type: 0,
                    dims: vec![n_embd],
                    file_offset: 0,
                    nbytes: n_embd * 4,
                },
                role: Role::Small,
                layer: Some(l),
            });
        }
        if !tied {
            tensors.push(ModelTensor {
                info: q4("output.weight".into(), n_embd, n_vocab),
                role: Role::Output,
                layer: None,
            });
        }
        ModelInventory {
            arch: "llama".into(),
            n_layers,
            n_embd,
            n_vocab,
            tied_head: tied,
            final_logit_softcap: 0.0,
            tensors,
        }
    }

    fn total(inv: &ModelInventory) -> u64 {
        inv.tensors.iter().map(|t| t.info.nbytes).sum()
    }

    #[test]
    fn whole_model_budget_is_full_residency() {
        let inv = inventory(true);
        let p = plan(&inv, &PlanParams::new(total(&inv))).unwrap();
        assert!(p.full_resident);
        assert_eq!(p.streamed_bytes_per_token, 0);
        assert!(p.tensors.iter().all(|t| t.tier == Tier::Ram));
    }

    #[test]
    fn held_bytes_stay_within_budget_and_reads_shrink_as_it_grows() {
        for tied in [true, false] {
            let inv = inventory(tied);
            let model = total(&inv);
            let mut last_streamed = u64::MAX;
            for pct in [10u64, 20, 35, 50, 70, 90] {
                let budget = model * pct / 100;
                let p = plan(&inv, &PlanParams::new(budget)).unwrap();
                assert!(
                    p.held_limit_bytes() <= budget,
                    "tied={tied} {pct}%: {} > {budget}",
                    p.held_limit_bytes()
                );
                assert!(
                    p.streamed_bytes_per_token <= last_streamed,
                    "tied={tied} {pct}%: reads grew"
                );
                last_streamed = p.streamed_bytes_per_token;
                // Every byte that is not resident streams.
                let nvme: u64 = p
                    .tensors
                    .iter()
                    .filter(|t| t.tier == Tier::Nvme && t.stream != Some(StreamMode::Rows))
                    .map(|t| t.bytes)
                    .sum();
                let head = if p.head_streamed && tied {
                    inv.head().nbytes
                } else {
                    0
                };
                let embd_row = inv.embedding().row_bytes();
                assert_eq!(
                    p.streamed_bytes_per_token,
                    nvme + head + embd_row,
                    "tied={tied} {pct}%"
                );
                // Groups cover exactly the streamed layers and the head.
                let group_bytes: u64 = p.groups.iter().map(|g| g.bytes).sum();
                assert_eq!(group_bytes + embd_row, p.streamed_bytes_per_token);
            }
        }
    }

    #[test]
    fn head_chunks_start_on_page_boundaries() {
        let inv = inventory(true);
        let p = plan(&inv, &PlanParams::new(total(&inv) / 10)).unwrap();
        assert!(p.head_streamed);
        let row = inv.head().row_bytes();
        for g in &p.groups {
            if let GroupKind::HeadChunk { first_row, .. } = g.kind {
                assert_eq!(first_row * row % PAGE_BYTES as u64, 0);
            }
        }
    }

    #[test]
    fn too_small_a_budget_names_the_minimum() {
        let inv = inventory(true);
        let err = plan(&inv, &PlanParams::new(100_000))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least"), "{err}");
        // and the minimum it names is enough
        let minimum = (1..200u64)
            .map(|k| k * 64 * 1024)
            .find(|b| plan(&inv, &PlanParams::new(*b)).is_ok())
            .unwrap();
        assert!(minimum <= total(&inv) / 2);
    }
}
