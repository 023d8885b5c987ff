//! A loaded model with one llama.cpp context: load (stock, or tiered through hypura's
//! buffer type), tokenize, decode, logits. hypura decides where weights live; llama.cpp
//! computes.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend;
use crate::error::{HypuraError, Result};
use crate::gguf::GgufHeader;
use crate::head::HeadCompute;
use crate::inspect::{ModelInventory, Role};
use crate::io::{ModelFile, ReadPool, ReadRequest};
use crate::plan::{self, GroupKind, Plan, PlanParams, StreamMode, Tier};
use crate::proc_stats;
use crate::schedule::{eval_callback, RuntimeGroup, StreamedHead, Streamer, TensorRegistration};
use crate::shadow::ShadowFile;
use crate::sys;
use crate::tier::{HypuraBufferType, ReservedMemory};
use crate::track::TensorAccess;

/// One token of a batch for [`Session::decode_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchToken {
    /// Token id.
    pub token: i32,
    /// Sequence it is appended to (`0..n_seq_max`).
    pub seq: i32,
    /// Whether to return logits after this token.
    pub logits: bool,
}

/// How to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Stock llama.cpp: default mmap loading, no hypura placement.
    Baseline,
    /// hypura's tiered placement under a RAM budget.
    Tiered,
}

/// Options for [`Session::load`].
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// Stock llama.cpp or hypura.
    pub mode: LoadMode,
    /// Bytes of weights hypura may hold; `None` = the whole model.
    pub ram_budget_bytes: Option<u64>,
    /// Disable llama.cpp's repacked CPU buffer types (for stock and hypura alike).
    pub no_repack: bool,
    /// CPU threads (0 = all cores).
    pub n_threads: i32,
    /// Context length in tokens.
    pub n_ctx: u32,
    /// Tokens per batch and micro-batch.
    pub n_batch: u32,
    /// Sequences decoded side by side (each gets `n_ctx / n_seq_max` positions).
    pub n_seq_max: u32,
    /// Disk bandwidth for the planner's bound, bytes/s.
    pub disk_bytes_per_s: f64,
    /// Reader threads (read requests in flight) when streaming.
    pub io_threads: u32,
}

impl LoadOptions {
    /// Defaults: hypura mode, whole model resident, repacking on, all cores, 2048-token
    /// context, 128-token batches, one sequence, 1.6 GB/s disk, 4 reader threads.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            mode: LoadMode::Tiered,
            ram_budget_bytes: None,
            no_repack: false,
            n_threads: 0,
            n_ctx: 2048,
            n_batch: 128,
            n_seq_max: 1,
            disk_bytes_per_s: 1.6e9,
            io_threads: crate::plan::DEFAULT_IO_THREADS,
        }
    }
}

/// Figures from loading.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadStats {
    /// Seconds spent in load.
    pub load_s: f64,
    /// Bytes hypura read from the model file at load.
    pub load_bytes_read: u64,
    /// RSS before anything was loaded.
    pub rss_before_load_bytes: u64,
    /// RSS right after llama.cpp loaded the model, before hypura read any weight: the
    /// process, its libraries, the vocabulary and llama.cpp's model metadata.
    pub rss_after_llama_load_bytes: u64,
    /// Peak RSS during loading (includes the loader's pass over the largest tensor).
    pub peak_rss_load_bytes: u64,
    /// The largest tensor: the loader's transient during load.
    pub largest_tensor_bytes: u64,
    /// Buffers llama.cpp allocated for the context (KV cache, activations, logits).
    pub context_buffers: backend::BufferSizes,
}

struct RawModel(NonNull<sys::llama_model>);
impl Drop for RawModel {
    fn drop(&mut self) {
        // SAFETY: created by llama_model_load_from_file and freed once, here.
        unsafe { sys::llama_model_free(self.0.as_ptr()) }
    }
}

struct RawContext(NonNull<sys::llama_context>);
impl Drop for RawContext {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model and freed once, here.
        unsafe { sys::llama_free(self.0.as_ptr()) }
    }
}

/// A model and a context, ready to decode.
pub struct Session {
    // Field order is drop order. The context goes first (it calls into the scheduler and the
    // thread pool); then the scheduler, whose drop waits for reads still in flight into the
    // model's buffers and the head window; only then those buffers (model, head window) and
    // the buffer type they were allocated from.
    context: RawContext,
    _threads: Option<crate::threads::ThreadPool>,
    streamer: Option<Box<Mutex<Streamer>>>,
    _head_window: Option<ReservedMemory>,
    #[allow(dead_code)] // held so that the model outlives the context and the scheduler
    model: RawModel,
    _buffer_type: Option<HypuraBufferType>,
    file: Arc<ModelFile>,
    vocab: *const sys::llama_vocab,
    n_vocab: usize,
    n_past: Vec<i32>,
    last_logits: Vec<f32>,
    tokens_decoded: u64,
    decode_seconds: f64,
    options: LoadOptions,
    plan: Plan,
    inventory: ModelInventory,
    load_stats: LoadStats,
}

impl Session {
    /// Loads the model as `options` say.
    pub fn load(options: LoadOptions) -> Result<Self> {
        let rss_before_load_bytes = proc_stats::rss_bytes();
        let started = Instant::now();
        let header = GgufHeader::open(&options.model_path)?;
        let inventory = ModelInventory::from_header(&header)?;
        let model_bytes = header.weight_bytes();
        let mut params = PlanParams::new(options.ram_budget_bytes.unwrap_or(model_bytes));
        params.disk_bytes_per_s = options.disk_bytes_per_s;
        params.n_ubatch = options.n_batch;
        params.io_threads = options.io_threads;
        let plan = plan::plan(&inventory, &params)?;
        let file = Arc::new(ModelFile::open(&options.model_path).map_err(|source| {
            HypuraError::Unreadable {
                path: options.model_path.clone(),
                source,
            }
        })?);
        backend::init();

        let tiered = options.mode == LoadMode::Tiered && !plan.full_resident;
        // SAFETY: returns a plain struct of defaults.
        let mut model_params = unsafe { sys::llama_model_default_params() };
        model_params.n_gpu_layers = 0;
        model_params.use_extra_bufts = !options.no_repack;
        model_params.load_mode = match options.mode {
            LoadMode::Baseline => sys::LLAMA_LOAD_MODE_MMAP,
            LoadMode::Tiered => sys::LLAMA_LOAD_MODE_NONE,
        };
        let buffer_type = tiered.then(|| HypuraBufferType::new("HYPURA"));
        let pattern = CString::new(".").expect("no NUL");
        let overrides = buffer_type.as_ref().map(|b| {
            [
                sys::llama_model_tensor_buft_override {
                    pattern: pattern.as_ptr(),
                    buft: b.as_raw(),
                },
                sys::llama_model_tensor_buft_override {
                    pattern: std::ptr::null(),
                    buft: std::ptr::null_mut(),
                },
            ]
        });
        if let Some(o) = &overrides {
            model_params.tensor_buft_overrides = o.as_ptr();
        }
        if let Some(b) = &buffer_type {
            model_params.progress_callback = Some(load_progress);
            model_params.progress_callback_user_data =
                (b as *const HypuraBufferType).cast_mut().cast();
        }
        let shadow = if tiered {
            Some(ShadowFile::create(&header)?)
        } else {
            None
        };
        let load_path: &Path = shadow
            .as_ref()
            .map(|s| s.path())
            .unwrap_or(&options.model_path);
        let c_path = CString::new(load_path.to_string_lossy().as_bytes())
            .map_err(|_| HypuraError::InvalidArgument("model path contains a NUL byte".into()))?;
        backend::take_last_error();
        // SAFETY: valid C string and params; overrides and the buffer type outlive the call.
        let raw_model = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), model_params) };
        drop(shadow);
        let model = RawModel(NonNull::new(raw_model).ok_or_else(|| {
            let why = backend::take_last_error().unwrap_or_default();
            log::error!("llama.cpp: {why}");
            HypuraError::LoadFailed(options.model_path.clone())
        })?);
        let bytes_before = file.bytes_read();
        let rss_after_llama_load_bytes = proc_stats::rss_bytes();
        let peak_rss_load_bytes = proc_stats::peak_rss_bytes();
        log::info!(
            "after llama.cpp load: RSS {} MiB, peak {} MiB",
            rss_after_llama_load_bytes >> 20,
            peak_rss_load_bytes >> 20
        );
        // From here on the peak covers what hypura holds while decoding.
        proc_stats::reset_peak_rss();

        let n_threads = crate::threads::thread_count(options.n_threads);
        let mut head_window = None;
        let streamer = match &buffer_type {
            Some(b) => {
                b.finish_loading()?;
                let (streamer, window) = build_streamer(&file, b, &plan, &inventory, n_threads)?;
                head_window = window;
                Some(Box::new(Mutex::new(streamer)))
            }
            // Everything resident in llama.cpp's own buffers: the scheduler only counts uses.
            None if options.mode == LoadMode::Tiered => Some(Box::new(Mutex::new(Streamer::new(
                Arc::clone(&file),
                1,
                plan.request_bytes as usize,
                Vec::new(),
                0,
                0,
                None,
            )))),
            None => None,
        };

        log::info!(
            "after the RAM tier was read: RSS {} MiB",
            proc_stats::rss_bytes() >> 20
        );
        // SAFETY: returns a plain struct of defaults.
        let mut ctx_params = unsafe { sys::llama_context_default_params() };
        ctx_params.n_ctx = options.n_ctx;
        ctx_params.n_batch = options.n_batch;
        ctx_params.n_ubatch = options.n_batch;
        ctx_params.n_seq_max = options.n_seq_max.max(1);
        ctx_params.n_threads = n_threads;
        ctx_params.n_threads_batch = n_threads;
        ctx_params.no_perf = true;
        if let Some(s) = &streamer {
            ctx_params.cb_eval = Some(eval_callback);
            ctx_params.cb_eval_user_data = (&**s as *const Mutex<Streamer>).cast_mut().cast();
        }
        backend::reset_buffer_sizes();
        // SAFETY: the model is live; the callback's user data outlives the context (field order).
        let raw_ctx = unsafe { sys::llama_init_from_model(model.0.as_ptr(), ctx_params) };
        let context = RawContext(NonNull::new(raw_ctx).ok_or_else(|| {
            HypuraError::ContextFailed(
                backend::take_last_error().unwrap_or_else(|| "unknown error".into()),
            )
        })?);
        log::info!(
            "after context creation: RSS {} MiB, peak {} MiB",
            proc_stats::rss_bytes() >> 20,
            proc_stats::peak_rss_bytes() >> 20
        );
        // While streaming, the graph runs in pieces: give it a pool that sleeps between them.
        let threads = buffer_type
            .as_ref()
            .and_then(|_| crate::threads::ThreadPool::sleeping(n_threads));
        if let Some(pool) = &threads {
            // SAFETY: the pool outlives the context (dropped after it, by field order).
            unsafe {
                sys::llama_attach_threadpool(context.0.as_ptr(), pool.as_ptr(), pool.as_ptr())
            };
        }
        // SAFETY: the model is live.
        let vocab = unsafe { sys::llama_model_get_vocab(model.0.as_ptr()) };
        // SAFETY: the vocab belongs to the live model.
        let n_vocab = unsafe { sys::llama_vocab_n_tokens(vocab) }.max(0) as usize;
        let load_stats = LoadStats {
            load_s: started.elapsed().as_secs_f64(),
            load_bytes_read: file.bytes_read() - bytes_before,
            rss_before_load_bytes,
            rss_after_llama_load_bytes,
            peak_rss_load_bytes,
            largest_tensor_bytes: header.tensors.iter().map(|t| t.nbytes).max().unwrap_or(0),
            context_buffers: backend::buffer_sizes(),
        };
        let _ = overrides; // kept alive until here
        Ok(Self {
            context,
            _threads: threads,
            model,
            streamer,
            _head_window: head_window,
            _buffer_type: buffer_type,
            file,
            vocab,
            n_vocab,
            n_past: vec![0; options.n_seq_max.max(1) as usize],
            last_logits: Vec::new(),
            tokens_decoded: 0,
            decode_seconds: 0.0,
            options,
            plan,
            inventory,
            load_stats,
        })
    }

    /// The placement plan in force (full residency in baseline mode).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The model's tensor inventory.
    pub fn inventory(&self) -> &ModelInventory {
        &self.inventory
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// True when weights stream (hypura mode with a budget below the model size).
    pub fn is_streaming(&self) -> bool {
        self._buffer_type.is_some()
    }

    /// Figures from loading.
    pub fn load_stats(&self) -> &LoadStats {
        &self.load_stats
    }

    /// True when hypura reads the model file with `O_DIRECT`.
    pub fn direct_io(&self) -> bool {
        self.file.is_direct()
    }

    /// Bytes hypura has read from the model file so far (load included).
    pub fn file_bytes_read(&self) -> u64 {
        self.file.bytes_read()
    }

    /// Positions each sequence can hold (llama.cpp may round the context length up).
    pub fn context_per_sequence(&self) -> usize {
        // SAFETY: the context is live.
        unsafe { sys::llama_n_ctx_seq(self.context.0.as_ptr()) as usize }
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Tokenizes `text`, adding BOS when the model wants it.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<i32>> {
        let bytes = text.as_bytes();
        let len = i32::try_from(bytes.len())
            .map_err(|_| HypuraError::Tokenize("text too long".into()))?;
        let mut tokens = vec![0i32; bytes.len() + 8];
        for _ in 0..2 {
            // SAFETY: the buffers are valid for the lengths passed.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab,
                    bytes.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    tokens.len() as i32,
                    add_special,
                    true,
                )
            };
            if n >= 0 {
                tokens.truncate(n as usize);
                return Ok(tokens);
            }
            tokens.resize((-n) as usize, 0);
        }
        Err(HypuraError::Tokenize(
            "tokenizer reported an inconsistent length".into(),
        ))
    }

    /// The bytes of one token's text.
    pub fn token_bytes(&self, token: i32) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab,
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    false,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
        Vec::new()
    }

    /// True for end-of-generation tokens.
    pub fn is_end_of_generation(&self, token: i32) -> bool {
        // SAFETY: the vocab belongs to the live model.
        unsafe { sys::llama_vocab_is_eog(self.vocab, token) }
    }

    /// Forgets every sequence (the KV cache) so new ones can start.
    pub fn reset(&mut self) {
        // SAFETY: the context is live.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.context.0.as_ptr()), true) };
        self.n_past.iter_mut().for_each(|p| *p = 0);
        self.last_logits.clear();
    }

    /// Forgets one sequence.
    pub fn reset_sequence(&mut self, seq: i32) -> Result<()> {
        let slot = self.seq_slot(seq)?;
        // SAFETY: the context is live; removing a whole sequence always succeeds.
        unsafe {
            sys::llama_memory_seq_rm(sys::llama_get_memory(self.context.0.as_ptr()), seq, -1, -1)
        };
        self.n_past[slot] = 0;
        Ok(())
    }

    fn seq_slot(&self, seq: i32) -> Result<usize> {
        usize::try_from(seq)
            .ok()
            .filter(|s| *s < self.n_past.len())
            .ok_or_else(|| {
                HypuraError::InvalidArgument(format!(
                    "sequence {seq} is outside 0..{} (raise n_seq_max)",
                    self.n_past.len()
                ))
            })
    }

    /// Appends `tokens` to sequence 0 and computes; afterwards [`Self::logits`] holds the
    /// logits after the last of them.
    pub fn decode(&mut self, tokens: &[i32]) -> Result<()> {
        let batch: Vec<BatchToken> = tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| BatchToken {
                token,
                seq: 0,
                logits: i + 1 == tokens.len(),
            })
            .collect();
        self.last_logits = self.decode_batch(&batch)?;
        Ok(())
    }

    /// Decodes a batch of tokens, each appended to its own sequence at that sequence's next
    /// position. Returns the logits of the tokens that asked for them, in batch order
    /// (`n_vocab` floats each).
    pub fn decode_batch(&mut self, batch: &[BatchToken]) -> Result<Vec<f32>> {
        if batch.is_empty() {
            return Err(HypuraError::Decode("no tokens to decode".into()));
        }
        let n_ctx_seq = self.context_per_sequence();
        let mut adding = vec![0usize; self.n_past.len()];
        for t in batch {
            if t.token < 0 || t.token as usize >= self.n_vocab {
                return Err(HypuraError::Decode(format!(
                    "token id {} is outside the vocabulary",
                    t.token
                )));
            }
            adding[self.seq_slot(t.seq)?] += 1;
        }
        for (slot, &new) in adding.iter().enumerate() {
            let held = self.n_past[slot] as usize;
            if new > 0 && held + new > n_ctx_seq {
                return Err(HypuraError::ContextFull {
                    seq: slot as i32,
                    held,
                    new,
                    n_ctx: n_ctx_seq,
                });
            }
        }
        let started = Instant::now();
        let mut logits = Vec::new();
        // llama.cpp may have lowered the batch size (to the context length): ask it.
        // SAFETY: the context is live.
        let n_batch = unsafe { sys::llama_n_batch(self.context.0.as_ptr()) }.max(1) as usize;
        for chunk in batch.chunks(n_batch) {
            let before = self.n_past.clone();
            if let Err(e) = self.decode_chunk(chunk, &mut logits) {
                // Drop what the failed chunk may have added to the KV cache.
                for (slot, &pos) in before.iter().enumerate() {
                    if self.n_past[slot] != pos {
                        // SAFETY: the context is live.
                        unsafe {
                            sys::llama_memory_seq_rm(
                                sys::llama_get_memory(self.context.0.as_ptr()),
                                slot as i32,
                                pos,
                                -1,
                            )
                        };
                    }
                }
                self.n_past = before;
                return Err(e);
            }
        }
        self.tokens_decoded += batch.len() as u64;
        self.decode_seconds += started.elapsed().as_secs_f64();
        Ok(logits)
    }

    fn decode_chunk(&mut self, chunk: &[BatchToken], logits: &mut Vec<f32>) -> Result<()> {
        // SAFETY: llama_batch_init allocates room for `chunk.len()` tokens with one sequence
        // id each; every field written below stays in bounds; freed before returning.
        let status = unsafe {
            let batch = sys::llama_batch_init(chunk.len() as i32, 0, 1);
            for (i, t) in chunk.iter().enumerate() {
                let slot = t.seq as usize;
                *batch.token.add(i) = t.token;
                *batch.pos.add(i) = self.n_past[slot];
                *batch.n_seq_id.add(i) = 1;
                **batch.seq_id.add(i) = t.seq;
                *batch.logits.add(i) = i8::from(t.logits);
                self.n_past[slot] += 1;
            }
            let mut batch = batch;
            batch.n_tokens = chunk.len() as i32;
            if let Some(s) = &self.streamer {
                s.lock().unwrap_or_else(|e| e.into_inner()).begin_decode();
            }
            let status = sys::llama_decode(self.context.0.as_ptr(), batch);
            sys::llama_batch_free(batch);
            status
        };
        if let Some(s) = &self.streamer {
            if let Some(e) = s.lock().unwrap_or_else(|e| e.into_inner()).take_error() {
                return Err(HypuraError::StreamIo {
                    path: self.options.model_path.clone(),
                    source: std::io::Error::other(e),
                });
            }
        }
        if status != 0 {
            return Err(HypuraError::Decode(format!(
                "llama_decode returned {status}"
            )));
        }
        let n_out = chunk.iter().filter(|t| t.logits).count();
        if n_out == 0 {
            return Ok(());
        }
        if let Some(s) = &self.streamer {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(streamed) = s.logits() {
                if streamed.len() != n_out * self.n_vocab {
                    return Err(HypuraError::Decode(
                        "hypura's head computed the wrong number of logits".into(),
                    ));
                }
                logits.extend_from_slice(streamed);
                return Ok(());
            }
        }
        for (i, t) in chunk.iter().enumerate() {
            if !t.logits {
                continue;
            }
            // SAFETY: the context is live; `i` is a batch index that requested logits.
            let ptr = unsafe { sys::llama_get_logits_ith(self.context.0.as_ptr(), i as i32) };
            if ptr.is_null() {
                return Err(HypuraError::Decode("llama.cpp returned no logits".into()));
            }
            // SAFETY: llama.cpp returns n_vocab floats.
            logits.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, self.n_vocab) });
        }
        Ok(())
    }

    /// Tokens decoded so far (prompts included) and the seconds spent decoding them.
    pub fn decode_totals(&self) -> (u64, f64) {
        (self.tokens_decoded, self.decode_seconds)
    }

    /// Logits after the last decoded token.
    pub fn logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// Tokens held by sequence 0.
    pub fn n_past(&self) -> i32 {
        self.n_past[0]
    }

    /// Per-tensor access counts since the last [`Self::reset_counters`].
    pub fn tensor_accesses(&self) -> Vec<TensorAccess> {
        self.streamer
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).accesses())
            .unwrap_or_default()
    }

    /// Scheduler counters (window high-water mark, waits).
    pub fn stream_counters(&self) -> crate::schedule::StreamCounters {
        self.streamer
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).counters())
            .unwrap_or_default()
    }

    /// Zeroes the access counts and scheduler counters.
    pub fn reset_counters(&self) {
        if let Some(s) = &self.streamer {
            s.lock().unwrap_or_else(|e| e.into_inner()).reset_counts();
        }
    }
}

/// Called by llama.cpp's loader before each tensor.
unsafe extern "C" fn load_progress(_progress: f32, user_data: *mut std::ffi::c_void) -> bool {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the user data is the HypuraBufferType, alive for the whole load.
        let buffer_type = unsafe { &*(user_data as *const HypuraBufferType) };
        buffer_type.release_scratch_mappings();
    });
    true
}

/// Wires the registered tensors to the plan: fills the RAM tier and builds the scheduler.
/// Returns the reserved memory the streamed head's chunks are read into, if it streams.
fn build_streamer(
    file: &Arc<ModelFile>,
    buffer_type: &HypuraBufferType,
    plan: &Plan,
    inventory: &ModelInventory,
    n_threads: i32,
) -> Result<(Streamer, Option<ReservedMemory>)> {
    let placements: HashMap<&str, &plan::TensorPlacement> =
        plan.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let infos: HashMap<&str, &crate::gguf::TensorInfo> = inventory
        .tensors
        .iter()
        .map(|t| (t.info.name.as_str(), &t.info))
        .collect();
    let head_info = inventory.head();

    let mut groups: Vec<RuntimeGroup> = plan
        .groups
        .iter()
        .map(|g| RuntimeGroup {
            reads: Vec::new(),
            tensors: Vec::new(),
            read_names: Vec::new(),
            head_rows: match g.kind {
                GroupKind::HeadChunk { first_row, n_rows } => Some((first_row, n_rows)),
                GroupKind::Layer { .. } => None,
            },
        })
        .collect();
    let mut registrations = Vec::new();
    let mut resident_reads = Vec::new();
    let registered = buffer_type.tensors();
    for t in &inventory.tensors {
        if !registered.iter().any(|r| r.name == t.info.name) {
            return Err(HypuraError::InvalidArgument(format!(
                "llama.cpp did not create tensor '{}' in hypura's buffer",
                t.info.name
            )));
        }
    }
    for reg in &registered {
        let tensor = reg.tensor.as_ptr();
        let info = infos.get(reg.name.as_str()).ok_or_else(|| {
            HypuraError::InvalidArgument(format!(
                "llama.cpp created tensor '{}' that is not in the file",
                reg.name
            ))
        })?;
        let placement = placements[reg.name.as_str()];
        // SAFETY: registered tensors are live tensors of the loaded model.
        let data = unsafe { (*tensor).data } as usize;
        let whole = ReadRequest {
            dst: data,
            len: info.nbytes as usize,
            offset: info.file_offset,
        };
        let is_head = reg.name == head_info.name;
        let how = if is_head && !plan.head_streamed {
            // A resident head (tied or not) is read whole; the graph computes it.
            resident_reads.push(whole);
            TensorRegistration::Resident
        } else if placement.role == Role::Embedding {
            TensorRegistration::Rows {
                file_offset: info.file_offset,
                row_bytes: info.row_bytes(),
                n_rows: info.n_rows(),
            }
        } else if is_head {
            TensorRegistration::Head // never read by the graph: hypura computes the head
        } else if let (Tier::Nvme, Some(StreamMode::Group(g))) = (placement.tier, placement.stream)
        {
            groups[g].reads.push(whole);
            groups[g].tensors.push(tensor as usize);
            groups[g].read_names.push(reg.name.clone());
            TensorRegistration::Group(g)
        } else {
            resident_reads.push(whole);
            TensorRegistration::Resident
        };
        registrations.push((tensor, reg.name.clone(), how));
    }

    // Read the RAM tier once, with reader threads like streaming uses.
    let pool = ReadPool::new(
        Arc::clone(file),
        plan.io_threads as usize,
        plan.request_bytes as usize,
    );
    pool.submit(&resident_reads)
        .wait()
        .map_err(|e| HypuraError::StreamIo {
            path: file.path().to_path_buf(),
            source: std::io::Error::other(e),
        })?;
    drop(pool);

    let (head, head_window) = if plan.head_streamed {
        let window = ReservedMemory::new(head_info.nbytes as usize)?;
        let base = window.base() as usize;
        let row_bytes = head_info.row_bytes();
        let head_stat = format!("{} (head)", head_info.name);
        let mut head_groups = Vec::new();
        for (g, group) in groups.iter_mut().enumerate() {
            if let Some((first_row, n_rows)) = group.head_rows {
                group.reads.push(ReadRequest {
                    dst: base + (first_row * row_bytes) as usize,
                    len: (n_rows * row_bytes) as usize,
                    offset: head_info.file_offset + first_row * row_bytes,
                });
                group.tensors.push(0);
                group.read_names.push(head_stat.clone());
                head_groups.push(g);
            }
        }
        let head = StreamedHead {
            compute: HeadCompute {
                ggml_type: head_info.ggml_type,
                n_embd: inventory.n_embd as i64,
                n_vocab: head_info.n_rows() as i64,
                softcap: inventory.final_logit_softcap,
                n_threads,
            },
            groups: head_groups,
        };
        (Some(head), Some(window))
    } else {
        (None, None)
    };
    let mut streamer = Streamer::new(
        Arc::clone(file),
        plan.io_threads as usize,
        plan.request_bytes as usize,
        groups,
        plan.prefetch_depth as usize,
        plan.window_bytes,
        head,
    );
    for (tensor, name, how) in registrations {
        streamer.register(tensor, &name, how);
    }
    Ok((streamer, head_window))
}
