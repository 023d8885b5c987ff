//! Loading: stock llama.cpp, or tiered through hypura's buffer type (llama.cpp is handed the
//! header-only stand-in, hypura reads the RAM tier itself and sets up streaming as the plan
//! says, deciding nothing again).

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::model::{LoadStats, Model};
use super::options::{LoadMode, LoadOptions, LoadProgress, LoadProgressCallback};
use super::prepare::{prepare, Prepared};
use super::proc_stats;
use super::repacked::{fill_through_ggml, FillError, FillTarget};
use crate::error::LoadError;
use crate::io::{fd_path, ModelFile, ReadError, ReadPool, ReadRequest, StandIn};
use crate::llama::repack::{self, RepackScope, Repacking};
use crate::llama::{backend, CpuBackend, GpuDevice, LlamaContext, LlamaModel, ThreadPool};
use crate::memory::{HypuraBufferType, ReservedMemory};
use crate::model::{excerpt, excerpt_within, ModelInventory};
use crate::units::format_bytes;

/// Longest part of a llama.cpp error message quoted in hypura's (escaped).
const LLAMA_MESSAGE_BYTES: usize = 160;
use crate::plan::{GroupKind, Placement, Plan};
use crate::stream::callback::eval_callback;
use crate::stream::head::{HeadCompute, StreamedHead};
use crate::stream::{GroupReads, RouterRows, RowSource, Streamer, StreamerSetup};
use crate::sys;

/// Called by llama.cpp's loader before each tensor: turns the tensors' reads to the load
/// window of each of hypura's buffer types. Returning false stops the load (the reason is
/// kept for the load error).
unsafe extern "C" fn load_progress(_progress: f32, user_data: *mut std::ffi::c_void) -> bool {
    std::panic::catch_unwind(|| {
        // SAFETY: the user data is the list of hypura's buffer types, alive for the whole
        // load.
        let types = unsafe { &*(user_data as *const Vec<&HypuraBufferType>) };
        for buffer_type in types {
            if let Err(reason) = buffer_type.redirect_loader_reads() {
                buffer_type.note_error(reason);
                return false;
            }
        }
        true
    })
    .unwrap_or(false)
}

/// The path under which llama.cpp opens the very file hypura checked (so a file replaced
/// meanwhile is not what it loads), or the user's path where the platform has no such
/// path.
fn same_file_path(file: &ModelFile) -> PathBuf {
    let path = fd_path(file.file());
    if path.exists() {
        path
    } else {
        file.path().to_path_buf()
    }
}

fn llama_error(path: &Path, load_path: &Path, reason: &str) -> String {
    let renamed = reason.replace(
        load_path.to_string_lossy().as_ref(),
        path.to_string_lossy().as_ref(),
    );
    let shown = excerpt_within(&renamed, LLAMA_MESSAGE_BYTES);
    shown[1..shown.len() - 1].to_string()
}

/// Where a model's expert profile comes from: its identity and the requests a loaded
/// profile was measured over.
pub(crate) struct ProfileSource {
    pub model_key: String,
    pub requests: u64,
}

impl Model {
    /// Loads the model `options` name: checks and plans it (reading only its header), then
    /// has llama.cpp build it, reads the RAM tier, and sets up streaming for the rest.
    pub fn load(options: &LoadOptions) -> Result<Model, LoadError> {
        let rss_before_load_bytes = proc_stats::rss_bytes();
        let started = Instant::now();
        let Prepared {
            mut file,
            header,
            inventory,
            plan,
            profile,
            model_key,
        } = prepare(options)?;
        // An architecture hypura does not tier runs as stock llama.cpp runs it.
        let mut options = options.clone();
        if let Some(why) = &plan.untiered {
            log::warn!("{why}");
            if options.gpu_budget.is_some() {
                log::warn!("the GPU budget is not used: stock llama.cpp runs it on the CPU");
            }
            options.mode = LoadMode::Stock;
            options.gpu_budget = None;
        }
        let options = &options;
        let path = file.path().to_path_buf();
        backend::init();
        let gpu = gpu_for(options, &plan, &path)?;

        // A model that fits is loaded into llama.cpp's own buffer types (the repacked layout
        // included), but hypura fills them, in parallel, unless it cannot tell what llama.cpp
        // would repack. A tiered model keeps its resident weights in the repacked layout where
        // the CPU's faster kernels take them (batches and prompts gain most), the streamed
        // ones plain.
        let repacking = match options.mode {
            LoadMode::Tiered if plan.full_resident => repack::plan_repacking(
                &inventory,
                options.repack,
                RepackScope::AsLlamaCpp,
                gpu.is_some(),
            ),
            LoadMode::Tiered => {
                let resident: std::collections::HashSet<&str> = plan
                    .tensors
                    .iter()
                    .filter(|t| t.placement == Placement::Resident)
                    .map(|t| t.name.as_str())
                    .collect();
                repack::plan_repacking(
                    &inventory,
                    options.repack,
                    RepackScope::Resident(&resident),
                    gpu.is_some(),
                )
            }
            LoadMode::Stock => Repacking::Nothing,
        };
        if let Repacking::Unsure(why) = &repacking {
            log::info!("llama.cpp reads the model itself: {why}");
        }
        let tiered = options.mode == LoadMode::Tiered && !matches!(repacking, Repacking::Unsure(_));
        if tiered {
            file.prepare_streaming(options.verify_reads);
        }
        let file = Arc::new(file);
        // SAFETY: returns a plain struct of defaults.
        let mut model_params = unsafe { sys::llama_model_default_params() };
        // The GPU, if one is used, and no other device: a GPU llama.cpp is not told of gets no
        // weight, no KV cache and no computation.
        let devices: Vec<sys::ggml_backend_dev_t> = gpu
            .iter()
            .map(|g| g.as_raw())
            .chain([std::ptr::null_mut()])
            .collect();
        model_params.devices = devices.as_ptr().cast_mut();
        model_params.n_gpu_layers = match options.mode {
            LoadMode::Tiered => plan.llama_gpu_layers(),
            LoadMode::Stock => options.stock_gpu.layers,
        }
        .min(i32::MAX as u32) as i32;
        model_params.use_extra_bufts = options.repack;
        // Tiered: llama.cpp reads only the stand-in's zeros (or, when hypura cannot tell
        // which weights llama.cpp would repack, the model itself, without mmap).
        model_params.load_mode = match options.mode {
            LoadMode::Stock => sys::LLAMA_LOAD_MODE_MMAP,
            LoadMode::Tiered => sys::LLAMA_LOAD_MODE_NONE,
        };
        // Rows read on demand would come from the stand-in file, which holds no weights:
        // hypura places every tensor itself.
        if tiered {
            model_params.lazy_mode = sys::LLAMA_LAZY_MODE_OFF;
        }
        let buffer_type = tiered.then(|| HypuraBufferType::new("HYPURA"));
        if let Some(b) = &buffer_type {
            // Expert slices are read one by one into fresh pages: placed like the file, they
            // are read straight into place.
            let offsets: HashMap<&str, u64> = inventory
                .tensors
                .iter()
                .map(|t| (t.info.name.as_str(), t.info.file_offset))
                .collect();
            b.place_like_file(
                plan.tensors
                    .iter()
                    .filter(|t| t.placement == Placement::ExpertSlices)
                    .filter_map(|t| Some((t.name.clone(), *offsets.get(t.name.as_str())?))),
            );
        }
        // The GPU tier: the GPU's own buffer type, presented as hypura's while loading (the
        // loader uploads nothing), with the patterns of the weights the plan puts there.
        let gpu_type: Option<(HypuraBufferType, Vec<CString>)> = gpu
            .filter(|_| tiered && plan.gpu_resident_bytes > 0)
            .map(|g| {
                let names: std::collections::BTreeSet<String> = plan
                    .tensors
                    .iter()
                    .filter(|t| t.placement == Placement::GpuResident)
                    .map(|t| t.name.clone())
                    .collect();
                (
                    // SAFETY: a registered device's buffer type is static; hypura writes its
                    // tensors only through ggml once loading has ended.
                    unsafe { HypuraBufferType::wrapping("HYPURA_GPU", g.buffer_type()) },
                    repack::exact_name_patterns(&names)
                        .into_iter()
                        .filter_map(|p| CString::new(p).ok())
                        .collect(),
                )
            });
        // One wrapping type per repacking type (CPU_REPACK, AMX), with the patterns of its
        // weights.
        let repack_types: Vec<(HypuraBufferType, Vec<CString>)> = match &repacking {
            Repacking::Some(groups) if tiered => groups
                .iter()
                .map(|g| {
                    (
                        // SAFETY: ggml's extra CPU types are static; their buffers hold host
                        // memory.
                        unsafe { HypuraBufferType::wrapping("HYPURA_REPACK", g.buft) },
                        repack::exact_name_patterns(&g.names)
                            .into_iter()
                            .filter_map(|p| CString::new(p).ok())
                            .collect(),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        // The GPU's weights go to the GPU, those llama.cpp would repack to the repacking
        // types, all others to hypura's.
        let pattern = CString::from(c".");
        let stock_patterns = stock_overrides(options, gpu, &path)?;
        let overrides: Option<Vec<sys::llama_model_tensor_buft_override>> = match &buffer_type {
            Some(b) => Some({
                let mut o: Vec<_> = gpu_type
                    .iter()
                    .chain(repack_types.iter())
                    .flat_map(|(r, patterns)| {
                        patterns
                            .iter()
                            .map(|p| sys::llama_model_tensor_buft_override {
                                pattern: p.as_ptr(),
                                buft: r.as_raw(),
                            })
                    })
                    .collect();
                o.push(sys::llama_model_tensor_buft_override {
                    pattern: pattern.as_ptr(),
                    buft: b.as_raw(),
                });
                o.push(sys::llama_model_tensor_buft_override {
                    pattern: std::ptr::null(),
                    buft: std::ptr::null_mut(),
                });
                o
            }),
            // Stock with weights placed by name, then experts kept on the CPU (`--cpu-moe`,
            // `--n-cpu-moe`).
            None if !stock_patterns.is_empty() => Some(
                stock_patterns
                    .iter()
                    .map(|(p, buft)| sys::llama_model_tensor_buft_override {
                        pattern: p.as_ptr(),
                        buft: *buft,
                    })
                    .chain([sys::llama_model_tensor_buft_override {
                        pattern: std::ptr::null(),
                        buft: std::ptr::null_mut(),
                    }])
                    .collect(),
            ),
            None => None,
        };
        if let Some(o) = &overrides {
            model_params.tensor_buft_overrides = o.as_ptr();
        }
        let hooked: Vec<&HypuraBufferType> = buffer_type
            .iter()
            .chain(gpu_type.iter().map(|(g, _)| g))
            .chain(repack_types.iter().map(|(r, _)| r))
            .collect();
        if !hooked.is_empty() {
            model_params.progress_callback = Some(load_progress);
            model_params.progress_callback_user_data =
                (&hooked as *const Vec<&HypuraBufferType>).cast_mut().cast();
        }
        let stand_in = if tiered {
            Some(
                StandIn::create(&header.raw, header.file_size).map_err(|source| {
                    LoadError::Memory {
                        path: path.clone(),
                        source,
                    }
                })?,
            )
        } else {
            None
        };
        let load_path = stand_in
            .as_ref()
            .map_or_else(|| same_file_path(&file), |s| s.path().to_path_buf());
        // SAFETY: the overrides, the pattern and the buffer type outlive the call.
        let llama = unsafe { LlamaModel::load(&load_path, model_params) }.map_err(|reason| {
            let mut reason = llama_error(&path, &load_path, &reason);
            if let Some(e) = hooked.iter().find_map(|b| b.take_alloc_error()) {
                reason = format!("{reason} ({e})");
            }
            LoadError::Llama {
                path: path.clone(),
                reason,
            }
        })?;
        drop(stand_in);
        for b in &hooked {
            b.finish_loading();
        }
        drop(hooked);
        let bytes_before = file.bytes_read();
        let rss_after_llama_load_bytes = proc_stats::rss_bytes();
        let peak_rss_load_bytes = proc_stats::peak_rss_bytes();
        log::info!(
            "after llama.cpp load ({:.2} s in): RSS {} MiB, peak {} MiB",
            started.elapsed().as_secs_f64(),
            rss_after_llama_load_bytes >> 20,
            peak_rss_load_bytes >> 20
        );
        // From here on the peak covers what hypura holds while decoding.
        proc_stats::reset_peak_rss();

        let n_threads = options.thread_count();
        let streamer = match &buffer_type {
            Some(b) => Some(build_streamer(
                &file,
                b,
                gpu_type.as_ref().map(|(g, _)| g),
                repack_types.iter().map(|(r, _)| r),
                &plan,
                &inventory,
                n_threads,
                options.progress.as_ref(),
            )?),
            // Everything resident in llama.cpp's own buffers: the streamer only counts uses.
            None if options.mode == LoadMode::Tiered => Some(
                Streamer::new(streamer_setup(&file, &plan, &inventory, Vec::new(), None)).map_err(
                    |source| LoadError::Memory {
                        path: path.clone(),
                        source,
                    },
                )?,
            ),
            None => None,
        };
        let mut streamer = streamer;
        if let (Some(s), Some(p)) = (&mut streamer, &profile) {
            s.start_experts_from(&p.layers);
        }
        let streamer = streamer.map(|s| Box::new(Mutex::new(s)));
        log::info!(
            "after the RAM tier was read ({:.2} s in): RSS {} MiB",
            started.elapsed().as_secs_f64(),
            proc_stats::rss_bytes() >> 20
        );

        // SAFETY: returns a plain struct of defaults.
        let mut ctx_params = unsafe { sys::llama_context_default_params() };
        ctx_params.n_ctx = options.context_length;
        ctx_params.n_batch = options.effective_batch_size();
        ctx_params.n_ubatch = options.effective_batch_size();
        ctx_params.n_seq_max = options.sequences;
        // Several sequences of a tiered model share one KV cache (llama-server's default too),
        // each held to its share by hypura (`Model::context_per_sequence`). With a cache per
        // sequence, llama.cpp splits a batch into micro-batches of equally many tokens from
        // runs of consecutive sequence ids: a step mixing prompt chunks with one-token
        // decodes, or decoding sequences 0, 3 and 7, becomes several micro-batches, each
        // another pass over the streamed weights. A shared cache's split takes the batch in
        // order, up to the micro-batch size: one pass per step (hypura's LM head, which
        // appends each micro-batch's logits, needs that order too). The price: a sequence's
        // cells lie among the others', so attention sums the same terms in another grouping,
        // and a sampled token can differ in the last bits from a lone run's. With every
        // weight resident an extra pass costs little, and a cache per sequence keeps every
        // sequence exactly what a lone run gives. Stock llama.cpp shares one cache as
        // llama-server does by default.
        ctx_params.kv_unified =
            options.sequences > 1 && (options.mode == LoadMode::Stock || !plan.full_resident);
        ctx_params.n_threads = n_threads;
        ctx_params.n_threads_batch = n_threads;
        ctx_params.no_perf = true;
        // llama.cpp would copy CPU weights to the GPU for large batches, at the start of the
        // graph piece, before hypura has read a streamed one: hypura's CPU weights are
        // computed on where they are.
        if gpu.is_some() && options.mode == LoadMode::Tiered {
            ctx_params.op_offload = false;
        }
        // With a GPU and nothing streamed the callback would only count uses, and it costs
        // the GPU its fast path: ggml's scheduler then computes each graph piece as a view
        // without an id, which the CUDA backend compares node by node with the CUDA graph it
        // captured before replaying it, after asking the callback about every node. Measured
        // on an H100 with a 7B wholly on the GPU: 0.955x stock's speed with it.
        let needs_callback = !(gpu_type.is_some() && plan.full_resident);
        if let Some(s) = streamer.as_ref().filter(|_| needs_callback) {
            ctx_params.cb_eval = Some(eval_callback);
            ctx_params.cb_eval_user_data = (&**s as *const Mutex<Streamer>).cast_mut().cast();
        }
        // SAFETY: the callback's user data (the boxed streamer) and the model outlive the
        // context: `Model` drops the context first.
        let mut context = unsafe { LlamaContext::new(&llama, ctx_params) }.map_err(|reason| {
            LoadError::Context {
                reason: llama_error(&path, &load_path, &reason),
                path: path.clone(),
            }
        })?;
        log::info!(
            "after context creation: RSS {} MiB, peak {} MiB",
            proc_stats::rss_bytes() >> 20,
            proc_stats::peak_rss_bytes() >> 20
        );
        // While streaming, the graph runs in pieces: give it a pool that sleeps between them.
        let threads = buffer_type
            .as_ref()
            .filter(|_| !plan.full_resident)
            .and_then(|_| ThreadPool::sleeping(n_threads));
        if let Some(pool) = &threads {
            // SAFETY: the pool outlives the context (`Model` drops the context first).
            unsafe { context.attach_threadpool(pool) };
        }
        let load_stats = LoadStats {
            load_s: started.elapsed().as_secs_f64(),
            load_bytes_read: file.bytes_read() - bytes_before,
            rss_before_load_bytes,
            rss_after_llama_load_bytes,
            peak_rss_load_bytes,
            largest_tensor_bytes: header.tensors.iter().map(|t| t.nbytes).max().unwrap_or(0),
        };
        Ok(Model::assemble(
            context,
            threads,
            streamer,
            llama,
            buffer_type
                .into_iter()
                .chain(gpu_type.into_iter().map(|(g, _)| g))
                .chain(repack_types.into_iter().map(|(r, _)| r))
                .collect(),
            file,
            options.clone(),
            plan,
            load_stats,
            ProfileSource {
                model_key,
                requests: profile.map_or(0, |p| p.requests),
            },
        ))
    }
}

/// The GPU device the load uses: the one the plan puts weights on (tiered), or stock's GPU
/// layers go to; `None` when neither asks for one.
fn gpu_for(
    options: &LoadOptions,
    plan: &Plan,
    path: &Path,
) -> Result<Option<GpuDevice>, LoadError> {
    // A stock override naming another buffer type than the CPU's.
    let gpu_override = options.stock_overrides.iter().find(|o| !o.is_cpu());
    let wanted = match options.mode {
        LoadMode::Tiered => plan.gpu_resident_bytes > 0,
        LoadMode::Stock => options.stock_gpu.layers > 0 || gpu_override.is_some(),
    };
    if !wanted {
        return Ok(None);
    }
    let device = GpuDevice::first().ok_or_else(|| {
        match gpu_override {
            // A buffer type named for stock's weights, and no GPU: name what there is.
            Some(o) if options.stock_gpu.layers == 0 => LoadError::UnknownBufferType {
                path: path.to_path_buf(),
                name: o.buffer_type.clone(),
                known: "CPU".into(),
            },
            _ => LoadError::NoGpu {
                path: path.to_path_buf(),
            },
        }
    })?;
    let needed = plan.gpu_resident_bytes + plan.gpu_kv_cache_bytes;
    let (free, _) = device.memory();
    // A backend that reports no memory is taken at its word.
    if options.mode == LoadMode::Tiered && free > 0 && needed > free {
        return Err(LoadError::GpuMemory {
            path: path.to_path_buf(),
            device: device.describe(),
            needed: format_bytes(needed),
            free: format_bytes(free),
        });
    }
    log::info!(
        "GPU: {}, {} of weights and {} of KV cache planned, {} free",
        device.describe(),
        format_bytes(plan.gpu_resident_bytes),
        format_bytes(plan.gpu_kv_cache_bytes),
        format_bytes(free)
    );
    Ok(Some(device))
}

/// Stock mode's tensor overrides, in order: the options' own (their buffer types looked up
/// by name: `CPU` or `gpu`'s), then the expert matrices kept on the CPU.
fn stock_overrides(
    options: &LoadOptions,
    gpu: Option<GpuDevice>,
    path: &Path,
) -> Result<Vec<(CString, sys::ggml_backend_buffer_type_t)>, LoadError> {
    // SAFETY: returns ggml's static CPU buffer type.
    let cpu = unsafe { sys::ggml_backend_cpu_buffer_type() };
    let gpu_type = gpu.map(|g| (g.buffer_type_name(), g.buffer_type()));
    let mut overrides = Vec::new();
    for o in options
        .stock_overrides
        .iter()
        .filter(|_| options.mode == LoadMode::Stock)
    {
        let buft = if o.is_cpu() {
            cpu
        } else {
            match &gpu_type {
                Some((name, buft)) if name.eq_ignore_ascii_case(&o.buffer_type) => *buft,
                _ => {
                    return Err(LoadError::UnknownBufferType {
                        path: path.to_path_buf(),
                        name: o.buffer_type.clone(),
                        known: std::iter::once("CPU")
                            .chain(gpu_type.as_ref().map(|(n, _)| n.as_str()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        };
        // `check` refused a pattern with a NUL.
        if let Ok(p) = CString::new(o.pattern.as_str()) {
            overrides.push((p, buft));
        }
    }
    overrides.extend(stock_expert_patterns(options).into_iter().map(|p| (p, cpu)));
    Ok(overrides)
}

/// Stock mode's patterns for the expert matrices kept on the CPU (llama.cpp's own, of
/// `--cpu-moe` and `--n-cpu-moe N`).
fn stock_expert_patterns(options: &LoadOptions) -> Vec<CString> {
    const EXPERTS: &str = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps";
    let layers = options.stock_gpu.cpu_expert_layers;
    if options.mode != LoadMode::Stock || layers == 0 {
        return Vec::new();
    }
    if layers == u32::MAX {
        return CString::new(EXPERTS).into_iter().collect();
    }
    // llama.cpp's `LLAMA_MAX_LAYERS`.
    const MAX_LAYERS: u32 = 512;
    (0..layers.min(MAX_LAYERS))
        .filter_map(|l| CString::new(format!(r"blk\.{l}{EXPERTS}")).ok())
        .collect()
}

fn streamer_setup(
    file: &Arc<ModelFile>,
    plan: &Plan,
    inventory: &ModelInventory,
    groups: Vec<GroupReads>,
    head: Option<StreamedHead>,
) -> StreamerSetup {
    StreamerSetup {
        file: Arc::clone(file),
        io_threads: plan.io_threads as usize,
        request_bytes: plan.request_bytes as usize,
        groups,
        depth: plan.prefetch_depth as usize,
        window_limit: plan.window_bytes,
        head,
        head_input_node: inventory.spec.head_input_node,
        kv_cache_prefixes: inventory.spec.kv_cache_tensor_prefixes,
        expert_cache_bytes: plan.expert_cache_bytes,
        selected_experts_node: inventory.spec.selected_experts_node,
    }
}

fn read_error(path: &Path, e: ReadError) -> LoadError {
    match e {
        ReadError::Io(reason) => LoadError::Io {
            path: path.to_path_buf(),
            reason,
        },
        ReadError::Changed(_) => LoadError::FileChanged {
            path: path.to_path_buf(),
        },
    }
}

/// Follows the plan: reads the RAM tier once, groups the streamed tensors' reads, and builds
/// the streamer.
#[allow(clippy::too_many_arguments)]
fn build_streamer<'a>(
    file: &Arc<ModelFile>,
    buffer_type: &HypuraBufferType,
    gpu_type: Option<&HypuraBufferType>,
    repack_types: impl Iterator<Item = &'a HypuraBufferType>,
    plan: &Plan,
    inventory: &ModelInventory,
    n_threads: i32,
    progress: Option<&LoadProgressCallback>,
) -> Result<Streamer, LoadError> {
    let path = file.path();
    let internal = |reason: String| LoadError::Llama {
        path: path.to_path_buf(),
        reason,
    };
    let placements: HashMap<&str, Placement> = plan
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.placement))
        .collect();
    let infos: HashMap<&str, &crate::model::TensorInfo> = inventory
        .tensors
        .iter()
        .map(|t| (t.info.name.as_str(), &t.info))
        .collect();
    let repacked: Vec<_> = repack_types.flat_map(HypuraBufferType::tensors).collect();
    let repacked_names: std::collections::HashSet<&str> =
        repacked.iter().map(|r| r.name.as_str()).collect();
    let registered: Vec<_> = buffer_type
        .tensors()
        .into_iter()
        .chain(gpu_type.map(HypuraBufferType::tensors).unwrap_or_default())
        .chain(repacked.clone())
        .collect();
    for t in inventory.tensors.iter().filter(|t| !inventory.is_unused(t)) {
        if !registered.iter().any(|r| r.name == t.info.name) {
            return Err(internal(format!(
                "llama.cpp did not create tensor {} in hypura's buffer",
                excerpt(&t.info.name)
            )));
        }
    }
    let mut groups: Vec<GroupReads> = plan
        .groups
        .iter()
        .map(|g| GroupReads {
            head_rows: match g.kind {
                GroupKind::HeadChunk { first_row, n_rows } => Some((first_row, n_rows)),
                GroupKind::Layer { .. } => None,
            },
            ..GroupReads::default()
        })
        .collect();
    let mut resident_reads = Vec::new();
    // Tensors filled through ggml: the repacked ones and the GPU tier's.
    let mut fill_targets = Vec::new();
    // A duplicated tensor (a tied head's second copy) shares the first copy's bytes.
    let mut first_copy: HashMap<&str, *mut sys::ggml_tensor> = HashMap::new();
    let mut shares = Vec::new();
    let mut registrations = Vec::new();
    for reg in &registered {
        let tensor = reg.tensor.as_ptr();
        let name = reg.name.as_str();
        let (Some(info), Some(&placement)) = (infos.get(name), placements.get(name)) else {
            return Err(internal(format!(
                "llama.cpp created tensor {} that is not in the file",
                excerpt(name)
            )));
        };
        let whole = ReadRequest {
            // SAFETY: a registered tensor is a live tensor of the loaded model.
            dst: unsafe { (*tensor).data } as usize,
            len: info.nbytes as usize,
            offset: info.file_offset,
        };
        let mut rows = None;
        let placement = match (placement, first_copy.get(name)) {
            (Placement::Resident, Some(&first)) => {
                shares.push((tensor, first));
                placement
            }
            (Placement::Resident, None) if repacked_names.contains(name) => {
                fill_targets.push(FillTarget {
                    tensor: reg.tensor,
                    repacked: true,
                    file_offset: info.file_offset,
                    row_bytes: info.row_bytes(),
                    n_rows: info.n_rows(),
                });
                placement
            }
            (Placement::Resident, None) => {
                resident_reads.push(whole);
                placement
            }
            (Placement::GpuResident, _) => {
                fill_targets.push(FillTarget {
                    tensor: reg.tensor,
                    repacked: false,
                    file_offset: info.file_offset,
                    row_bytes: info.row_bytes(),
                    n_rows: info.n_rows(),
                });
                placement
            }
            // The second copy of a tied head that streams is the head, which hypura computes.
            (Placement::RowsOnDemand, Some(_)) => Placement::HeadChunks,
            (Placement::RowsOnDemand, None) => {
                rows = Some(RowSource {
                    file_offset: info.file_offset,
                    row_bytes: info.row_bytes(),
                    n_rows: info.n_rows(),
                });
                placement
            }
            (Placement::Streamed { group }, _) => {
                let g = groups
                    .get_mut(group)
                    .ok_or_else(|| internal(format!("the plan has no group {group}")))?;
                g.reads.push(whole);
                g.tensors.push(tensor as usize);
                g.names.push(reg.name.clone());
                placement
            }
            (Placement::Unused, _) => {
                return Err(internal(format!(
                    "llama.cpp loaded tensor {}, which the plan leaves unused",
                    excerpt(name)
                )))
            }
            (other, _) => other,
        };
        first_copy.entry(name).or_insert(tensor);
        registrations.push((tensor, reg.name.clone(), placement, rows));
    }

    // Read the RAM tier once, with reader threads like streaming uses.
    let pool = ReadPool::new(
        Arc::clone(file),
        plan.io_threads as usize,
        plan.request_bytes as usize,
    )
    .map_err(|source| LoadError::Memory {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: each read fills one resident tensor's own memory in hypura's buffer, which
    // nothing reads before the context exists; the completion is waited for right here.
    let completion = unsafe { pool.submit(&resident_reads) };
    // The repacked weights and the GPU tier are read and handed to ggml meanwhile, on threads
    // of their own.
    let filled_bytes = AtomicU64::new(0);
    let fill_total: u64 = fill_targets.iter().map(|t| t.n_rows * t.row_bytes).sum();
    let fill_result = std::thread::scope(|scope| {
        let filler = scope.spawn(|| {
            // SAFETY: the targets are live tensors of the model just loaded, in repacking or
            // GPU buffers, which nothing uses before the context exists; each is its file
            // layout's size.
            unsafe {
                fill_through_ggml(
                    file,
                    &fill_targets,
                    n_threads.max(1) as usize + plan.io_threads as usize,
                    &filled_bytes,
                )
            }
        });
        if let Some(report) = progress {
            let plain_total: u64 = resident_reads.iter().map(|r| r.len as u64).sum();
            let total = plain_total + fill_total;
            let pieces = completion.pieces().max(1);
            loop {
                let pending = completion.wait_for(std::time::Duration::from_millis(200));
                let read = plain_total * (pieces - pending) as u64 / pieces as u64;
                let done = read + filled_bytes.load(Ordering::Relaxed);
                (report.0)(LoadProgress { done, total });
                if pending == 0 {
                    if filler.is_finished() {
                        break;
                    }
                    // The reads are done; the fills go on.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
        filler.join().unwrap_or(Err(FillError::Panicked))
    });
    completion.wait().map_err(|e| read_error(path, e))?;
    fill_result.map_err(|e| match e {
        FillError::Read(e) => read_error(path, e),
        other => internal(other.to_string()),
    })?;
    drop(pool);
    for (copy, first) in shares {
        // SAFETY: both are live tensors of the model with the same shape and type (the
        // duplicate llama.cpp makes for a tied head); the copy now reads the first's bytes.
        unsafe { (*copy).data = (*first).data };
    }
    // The file must not have changed while the tiers were being read.
    file.check_unchanged().map_err(|e| read_error(path, e))?;
    file.start_verifying();

    let head = if plan.head_streamed {
        let info = inventory.head();
        let memory =
            ReservedMemory::new(info.nbytes as usize).map_err(|source| LoadError::Memory {
                path: path.to_path_buf(),
                source,
            })?;
        let base = memory.base() as usize;
        let row_bytes = info.row_bytes();
        let head_stat = format!("{} (head)", info.name);
        let mut head_groups = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            if let Some((first_row, n_rows)) = group.head_rows {
                group.reads.push(ReadRequest {
                    dst: base + (first_row * row_bytes) as usize,
                    len: (n_rows * row_bytes) as usize,
                    offset: info.file_offset + first_row * row_bytes,
                });
                group.tensors.push(0);
                group.names.push(head_stat.clone());
                head_groups.push(g);
            }
        }
        Some(StreamedHead {
            compute: HeadCompute {
                ggml_type: info.ggml_type,
                n_embd: inventory.n_embd as i64,
                n_vocab: info.n_rows() as i64,
                softcap: inventory.final_logit_softcap,
            },
            groups: head_groups,
            _memory: memory,
            cpu: CpuBackend::new(n_threads)
                .ok_or_else(|| internal("no CPU backend to compute the LM head on".into()))?,
            logits: Vec::new(),
            logits_ready: false,
        })
    } else {
        None
    };
    let mut streamer =
        Streamer::new(streamer_setup(file, plan, inventory, groups, head)).map_err(|source| {
            LoadError::Memory {
                path: path.to_path_buf(),
                source,
            }
        })?;
    // The routers a GPU holds, of layers whose experts are read slice by slice, are copied to
    // host memory for reading ahead: their input reaches the CPU with the expert products.
    let sliced_layers: std::collections::HashSet<u32> = registrations
        .iter()
        .filter(|(_, _, placement, _)| *placement == Placement::ExpertSlices)
        .filter_map(|(_, name, _, _)| crate::model::inventory::layer_of(name))
        .collect();
    for (tensor, name, placement, _) in &registrations {
        let layer = crate::model::inventory::router_layer(name)
            .filter(|l| *placement == Placement::GpuResident && sliced_layers.contains(l));
        if let Some(layer) = layer {
            // SAFETY: a live tensor of the model in a GPU buffer, filled above; nothing
            // writes it any more.
            let router = unsafe { &**tensor };
            // SAFETY: as above.
            let n = unsafe { sys::ggml_nbytes(router) };
            let mut bytes = vec![0u8; n];
            // SAFETY: as above; `bytes` has room for the tensor's `n` bytes.
            unsafe { sys::ggml_backend_tensor_get(router, bytes.as_mut_ptr().cast(), 0, n) };
            let rows = RouterRows::new(
                bytes,
                router.type_,
                router.ne[0],
                router.ne[1],
                router.nb[1],
            );
            if let Some(rows) = rows {
                streamer.register_router_copy(layer, rows);
            }
        }
    }
    for (tensor, name, placement, rows) in registrations {
        if placement == Placement::ExpertSlices {
            let (Some(info), Some(layer)) = (
                infos.get(name.as_str()),
                crate::model::inventory::layer_of(&name),
            ) else {
                return Err(internal(format!(
                    "expert tensor {} has no layer",
                    excerpt(&name)
                )));
            };
            let n_expert = info.dims[2];
            // SAFETY: a live tensor of the model, in hypura's buffer on its own pages.
            let base = unsafe { (*tensor).data } as usize;
            streamer.register_expert_tensor(
                base,
                layer,
                info.file_offset,
                (info.nbytes / n_expert) as usize,
                n_expert as u32,
            );
        }
        streamer.register(tensor, &name, placement, rows);
    }
    Ok(streamer)
}
