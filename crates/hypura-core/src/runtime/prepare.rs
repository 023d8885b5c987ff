//! Everything a load needs before llama.cpp is involved, done once: open the file, read and
//! check its header, classify its tensors, resolve the budget and plan. `hypura plan` and a
//! load run exactly this, so they agree on what is valid.

use crate::error::PlanError;
use crate::io::ModelFile;
use crate::model::arch::kv_cache_bytes;
use crate::model::inventory::router_layer;
use crate::model::{validate, GgufHeader, ModelInventory};
use crate::plan::budget::{Budget, NonWeightCosts};
use crate::plan::search::{
    self, SearchParams, GPU_BYTES_PER_S, MAX_PREFETCH_DEPTH, RAM_BYTES_PER_S, REQUEST_BYTES,
};
use crate::plan::{experts, gpu, Plan};
use crate::profile::{self, model_key, ExpertProfile};
use crate::runtime::options::{defaults, LoadMode, LoadOptions};

/// What the process needs before any weight is read: a fixed part for the binary, its
/// libraries and llama.cpp's model metadata.
const PROCESS_BASE_BYTES: u64 = 64 << 20;
/// What a GPU backend adds in host memory when a GPU is used: its driver's context, the
/// backend's kernels and its pinned staging buffers (an estimate; the lent machine's CUDA
/// runs measure it).
const GPU_RUNTIME_HOST_BYTES: u64 = 512 << 20;
/// llama.cpp's vocabulary structures take a few times the tokenizer's bytes in the header.
const VOCABULARY_BYTES_PER_HEADER_BYTE: u64 = 4;
/// Each reader's aligned bounce buffer beyond its request size.
pub(crate) const IO_BUFFER_SLACK_BYTES: u64 = 4 * 4096;

/// A model file opened and checked, with its plan.
pub(crate) struct Prepared {
    pub file: ModelFile,
    pub header: GgufHeader,
    pub inventory: ModelInventory,
    pub plan: Plan,
    /// The model's saved expert profile, when one was found and the plan reads experts
    /// slice by slice.
    pub profile: Option<ExpertProfile>,
    /// The model's identity, the profile's name.
    pub model_key: String,
}

/// Opens, checks and plans the model `options` name.
pub(crate) fn prepare(options: &LoadOptions) -> Result<Prepared, PlanError> {
    options.check()?;
    let file = ModelFile::open(&options.model_path)?;
    let header = GgufHeader::read(file.file(), file.path(), file.size())?;
    let family = validate::validate(&header, file.path())?;
    let arch = header.architecture();
    let inventory = ModelInventory::new(&header, arch, family);
    let kv_cache_bytes = kv_cache_bytes(
        &header,
        arch,
        inventory.spec,
        options.context_length,
        options.sequences,
        options.effective_batch_size(),
    );
    let io_threads =
        options
            .io_threads
            .unwrap_or(if inventory.n_expert_used > 0 && options.expert_slices {
                defaults::IO_THREADS_EXPERTS
            } else {
                defaults::IO_THREADS
            });
    // Stock llama.cpp places nothing: report its plan as everything resident.
    let tiered = options.mode == LoadMode::Tiered && inventory.untiered.is_none();
    let gpu_budget_bytes = if tiered {
        options.gpu_budget_bytes(inventory.weight_bytes())?
    } else {
        0
    };
    let mut costs = non_weight_costs(&header, &inventory, options, kv_cache_bytes, io_threads);
    // The KV cache of the layers on the GPU is not in RAM.
    costs.kv_cache_bytes -=
        gpu::split(&inventory, gpu_budget_bytes, kv_cache_bytes, &[]).kv_cache_bytes;
    if gpu_budget_bytes > 0 {
        costs.process_bytes += GPU_RUNTIME_HOST_BYTES;
        // Host copies of the routers the GPU holds, for reading experts ahead: every layer's
        // at most, less than one layer's experts in the families hypura knows.
        if options.expert_slices {
            costs.process_bytes += inventory
                .tensors
                .iter()
                .filter(|t| router_layer(&t.info.name).is_some())
                .map(|t| t.info.nbytes)
                .sum::<u64>();
        }
    }
    let budget = if tiered {
        options.budget
    } else {
        Budget::AllWeights
    };
    let ram_budget_bytes = budget.weight_bytes(inventory.weight_bytes(), &costs, file.path())?;
    // The model's saved expert profile, if it has experts, is tiered and the options name a
    // place.
    let model_key = model_key(&header.raw, file.size());
    let mut profile = None;
    let mut profile_error = None;
    let profile_path = options
        .expert_profiles
        .as_ref()
        .filter(|_| tiered && inventory.n_expert_used > 0)
        .map(|dir| profile::path_in(dir, &model_key));
    if let Some(path) = &profile_path {
        match ExpertProfile::read(path, &model_key) {
            Ok(p) => profile = p,
            Err(e) => profile_error = Some(e.to_string()),
        }
    }
    // With a profile, the GPU takes whole layers' experts where routing spreads widest.
    let gpu_expert_order = match &profile {
        Some(p) if gpu_budget_bytes > 0 => {
            let ram_share = ram_budget_bytes as f64 / inventory.weight_bytes().max(1) as f64;
            p.layers_widest_first(inventory.n_layers, ram_share)
        }
        _ => Vec::new(),
    };
    let params = SearchParams {
        ram_budget_bytes,
        gpu_budget_bytes,
        gpu_bytes_per_s: GPU_BYTES_PER_S,
        disk_bytes_per_s: options.disk_bytes_per_s,
        ram_bytes_per_s: RAM_BYTES_PER_S,
        max_prefetch_depth: MAX_PREFETCH_DEPTH,
        n_ubatch: options.effective_batch_size(),
        io_threads,
        kv_cache_bytes,
        expert_slices: options.expert_slices,
        gpu_expert_order,
    };
    let mut plan = search::plan(&inventory, &params, file.path())?;
    plan.untiered = inventory.untiered.as_ref().map(|why| {
        format!(
            "{why}: it runs as stock llama.cpp runs it (memory-mapped; the budget is not enforced)"
        )
    });
    // The profile guides the expert cache, when the plan has one.
    if plan.expert_cache_bytes > 0 {
        if let Some(p) = &profile {
            experts::apply_profile(&mut plan, &inventory, p, options.disk_bytes_per_s);
        }
        plan.expert_profile_ignored = profile_error;
        plan.expert_profile_path = profile_path;
    } else {
        profile = None;
    }
    Ok(Prepared {
        file,
        header,
        inventory,
        plan,
        profile,
        model_key,
    })
}

/// Estimates what the process holds besides weights (for [`Budget::ProcessBytes`]):
/// the KV cache from the family's formula, llama.cpp's compute buffer (dominated by one
/// micro-batch of logits), its logits buffer, hypura's reader buffers, and the process.
fn non_weight_costs(
    header: &GgufHeader,
    inventory: &ModelInventory,
    options: &LoadOptions,
    kv_cache_bytes: u64,
    io_threads: u32,
) -> NonWeightCosts {
    let n_vocab = inventory.head().n_rows();
    let n_embd = inventory.n_embd;
    let n_ff = header
        .get_int(&format!("{}.feed_forward_length", inventory.arch))
        .map_or(4 * n_embd, |v| v.max(0) as u64);
    let n_ubatch = u64::from(options.effective_batch_size());
    NonWeightCosts {
        kv_cache_bytes,
        compute_bytes: n_ubatch * 4 * (n_vocab + 8 * n_embd + 4 * n_ff)
            + u64::from(options.context_length) * 1024,
        output_bytes: n_vocab * 4 * u64::from(options.sequences),
        io_buffer_bytes: u64::from(io_threads) * (REQUEST_BYTES + IO_BUFFER_SLACK_BYTES),
        process_bytes: PROCESS_BASE_BYTES + header.data_offset * VOCABULARY_BYTES_PER_HEADER_BYTE,
    }
}

impl Plan {
    /// Plans the model `options` name, reading only its header: the same checks and the
    /// same placement as [`crate::Model::load`] with these options.
    pub fn for_options(options: &LoadOptions) -> Result<Plan, PlanError> {
        prepare(options).map(|p| p.plan)
    }
}
