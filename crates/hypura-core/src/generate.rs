//! The generation loop shared by the CLI, the C ABI and the tests: prompt, then sample and
//! decode token by token, with the figures the statistics report.

use std::time::Instant;

use serde::Serialize;

use crate::error::Result;
use crate::proc_stats;
use crate::sample::Sampler;
use crate::session::{LoadMode, Session};
use crate::track::TensorAccess;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The prompt text.
    pub prompt: String,
    /// Tokens to generate at most.
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Seed for temperature sampling.
    pub seed: u64,
    /// Stop at an end-of-generation token.
    pub stop_at_eog: bool,
}

/// The result of one generation, with its statistics.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    /// `baseline` or `tiered`.
    pub mode: LoadMode,
    /// Model file.
    pub model: String,
    /// Sum of weight bytes.
    pub model_bytes: u64,
    /// The RAM budget planned for.
    pub ram_budget_bytes: u64,
    /// Bytes read once at load and held.
    pub ram_resident_bytes: u64,
    /// Planned bytes streamed per token.
    pub streamed_bytes_per_token: u64,
    /// Bytes read from the model file while generating (after the prompt): hypura's reads in
    /// tiered mode; in baseline mode the process's storage reads (`/proc/self/io`).
    pub disk_bytes_read: u64,
    /// `disk_bytes_read / tokens decoded`.
    pub disk_bytes_per_token: f64,
    /// Storage reads of the process while generating (`/proc/self/io` read_bytes).
    pub storage_bytes_read: u64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Seconds for the prompt.
    pub prompt_s: f64,
    /// Tokens generated.
    pub tokens_generated: usize,
    /// Decode steps after the prompt.
    pub tokens_decoded: usize,
    /// Decode steps per second.
    pub decode_tok_s: f64,
    /// Load seconds.
    pub load_s: f64,
    /// Peak resident set size of the process (VmHWM) after the model was loaded: context
    /// creation, prompt and generation.
    pub peak_rss_bytes: u64,
    /// Peak RSS while loading (the loader passes over each tensor once; see README).
    pub peak_rss_load_bytes: u64,
    /// RSS before the model was loaded.
    pub rss_before_load_bytes: u64,
    /// RSS after llama.cpp loaded the model, before any weight was read.
    pub rss_after_llama_load_bytes: u64,
    /// Largest tensor of the model.
    pub largest_tensor_bytes: u64,
    /// KV cache bytes (llama.cpp's report).
    pub kv_cache_bytes: u64,
    /// Activation buffers (llama.cpp's report).
    pub compute_buffer_bytes: u64,
    /// Logits buffers (llama.cpp's report).
    pub output_buffer_bytes: u64,
    /// hypura's reader buffers (one aligned bounce buffer per reader thread for direct I/O).
    pub io_buffer_bytes: u64,
    /// True when weights are read with `O_DIRECT` (bypassing the page cache).
    pub direct_io: bool,
    /// Most bytes of streamed weights held at once (window + embedding rows).
    pub peak_window_bytes: u64,
    /// Resident + the largest window held: never above the budget.
    pub peak_held_weight_bytes: u64,
    /// The planner's bound.
    pub bound_tok_s: f64,
    /// Groups read ahead of the current one.
    pub prefetch_depth: u32,
    /// Seconds the graph waited for reads.
    pub stream_wait_s: f64,
    /// Share of the decode time the reader threads spent inside reads (1.0: every thread
    /// always had a read in flight; lower: read-ahead left the disk idle part of the time).
    pub reader_utilization: f64,
    /// Per-tensor use and disk-read counts while generating.
    pub tensor_accesses: Vec<TensorAccess>,
    /// The generated token ids.
    pub tokens: Vec<i32>,
}

/// Generates text; `on_text` receives the bytes of each token as it is produced.
pub fn generate(
    session: &mut Session,
    options: &GenerateOptions,
    mut on_text: impl FnMut(&[u8]),
) -> Result<RunStats> {
    session.reset();
    let prompt = session.tokenize(&options.prompt, true)?;
    let prompt_started = Instant::now();
    session.decode(&prompt)?;
    let prompt_s = prompt_started.elapsed().as_secs_f64();
    log::info!(
        "after the prompt: RSS {} MiB, peak {} MiB",
        proc_stats::rss_bytes() >> 20,
        proc_stats::peak_rss_bytes() >> 20
    );

    session.reset_counters();
    let file_before = session.file_bytes_read();
    let storage_before = proc_stats::storage_read_bytes();
    let mut sampler = Sampler::new(options.temperature, options.seed);
    let mut tokens = Vec::new();
    let mut decoded = 0usize;
    let started = Instant::now();
    for i in 0..options.max_tokens {
        let token = sampler.sample(session.logits());
        tokens.push(token);
        on_text(&session.token_bytes(token));
        if options.stop_at_eog && session.is_end_of_generation(token) {
            break;
        }
        if i + 1 < options.max_tokens {
            session.decode(&[token])?;
            decoded += 1;
        }
    }
    let decode_s = started.elapsed().as_secs_f64();
    let storage_bytes_read = proc_stats::storage_read_bytes().saturating_sub(storage_before);
    let disk_bytes_read = if session.is_streaming() || session.options().mode == LoadMode::Tiered {
        session.file_bytes_read() - file_before
    } else {
        storage_bytes_read
    };
    let plan = session.plan();
    let counters = session.stream_counters();
    let load = session.load_stats();
    Ok(RunStats {
        mode: session.options().mode,
        model: session.options().model_path.display().to_string(),
        model_bytes: plan.model_bytes,
        ram_budget_bytes: plan.ram_budget_bytes,
        ram_resident_bytes: plan.ram_resident_bytes,
        streamed_bytes_per_token: plan.streamed_bytes_per_token,
        disk_bytes_read,
        disk_bytes_per_token: disk_bytes_read as f64 / decoded.max(1) as f64,
        storage_bytes_read,
        prompt_tokens: prompt.len(),
        prompt_s,
        tokens_generated: tokens.len(),
        tokens_decoded: decoded,
        decode_tok_s: decoded as f64 / decode_s.max(1e-9),
        load_s: load.load_s,
        peak_rss_bytes: proc_stats::peak_rss_bytes(),
        peak_rss_load_bytes: load.peak_rss_load_bytes,
        rss_before_load_bytes: load.rss_before_load_bytes,
        rss_after_llama_load_bytes: load.rss_after_llama_load_bytes,
        largest_tensor_bytes: load.largest_tensor_bytes,
        kv_cache_bytes: load.context_buffers.kv_bytes,
        compute_buffer_bytes: load.context_buffers.compute_bytes,
        output_buffer_bytes: load.context_buffers.output_bytes,
        io_buffer_bytes: if session.is_streaming() && session.direct_io() {
            plan.io_threads as u64 * (plan.request_bytes + 4 * 4096)
        } else {
            0
        },
        direct_io: session.direct_io(),
        peak_window_bytes: counters.peak_window_bytes,
        peak_held_weight_bytes: plan.ram_resident_bytes + counters.peak_window_bytes,
        bound_tok_s: plan.bound_tok_s,
        prefetch_depth: plan.prefetch_depth,
        stream_wait_s: counters.wait_s,
        reader_utilization: counters.reader_busy_s
            / (counters.reader_threads.max(1) as f64 * decode_s.max(1e-9)),
        tensor_accesses: session.tensor_accesses(),
        tokens,
    })
}
