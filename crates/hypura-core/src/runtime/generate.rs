//! The generation loop shared by the CLI, the C ABI's example and the tests: the prompt,
//! then sampling and decoding token by token, handing the caller whole UTF-8 text pieces as
//! they come, until the caller stops it, an end-of-generation token, a stop string, or the
//! token limit; with the figures the statistics report.

use std::ops::ControlFlow;
use std::time::Instant;

use serde::Serialize;

use super::engine::{Engine, EngineEvent};
use super::model::{Model, Token};
use super::options::{limits, LoadMode};
use super::prepare::IO_BUFFER_SLACK_BYTES;
use super::proc_stats;
use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{DecodeError, GenerateError};
use crate::llama::{ChainSettings, SamplerChain};
use crate::stream::experts::{ExpertLayerStats, ExpertRequest};
use crate::stream::track::TensorAccess;

/// What to generate.
///
/// ```
/// let request = hypura_core::GenerateOptions::new("Once upon a time")
///     .max_tokens(32)
///     .temperature(0.8)
///     .seed(7)
///     .stop(vec!["\n\n".into()]);
/// assert!(request.check().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub(crate) prompt: String,
    pub(crate) max_tokens: usize,
    pub(crate) temperature: f32,
    pub(crate) top_p: f32,
    pub(crate) top_k: i32,
    pub(crate) min_p: f32,
    pub(crate) repeat_last_n: i32,
    pub(crate) repeat_penalty: f32,
    pub(crate) frequency_penalty: f32,
    pub(crate) presence_penalty: f32,
    pub(crate) seed: u64,
    pub(crate) stop_at_end_of_generation: bool,
    pub(crate) stop: Vec<String>,
}

impl GenerateOptions {
    /// Defaults: 64 tokens, greedy, seed 0, stop at an end-of-generation token; when a
    /// temperature is set, llama.cpp's defaults for the rest (top-k 40, top-p 0.95, min-p
    /// 0.05, no repetition penalties over the last 64 tokens).
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            max_tokens: 64,
            temperature: 0.0,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_last_n: 64,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0,
            stop_at_end_of_generation: true,
            stop: Vec::new(),
        }
    }

    /// The same settings for another prompt.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = prompt.into();
        self
    }

    /// The stop strings set so far.
    pub fn stops(&self) -> &[String] {
        &self.stop
    }

    /// Keep only the `k` most likely tokens (0 keeps all).
    pub fn top_k(mut self, k: i32) -> Self {
        self.top_k = k;
        self
    }

    /// Keep only tokens at least `p` times as likely as the most likely one (0 keeps all).
    pub fn min_p(mut self, p: f32) -> Self {
        self.min_p = p;
        self
    }

    /// Divide the logits of tokens among the last `last_n` (0: none) by `penalty` (1: off).
    pub fn repeat_penalty(mut self, penalty: f32, last_n: i32) -> Self {
        self.repeat_penalty = penalty;
        self.repeat_last_n = last_n;
        self
    }

    /// Lower the logits of tokens among the last `repeat_last_n` by `frequency` times their
    /// count and by `presence` once (0: off), as OpenAI's penalties do.
    pub fn frequency_presence_penalties(mut self, frequency: f32, presence: f32) -> Self {
        self.frequency_penalty = frequency;
        self.presence_penalty = presence;
        self
    }

    /// Tokens to generate at most (at least 1).
    pub fn max_tokens(mut self, n: usize) -> Self {
        self.max_tokens = n;
        self
    }

    /// Sampling temperature; 0 is greedy.
    pub fn temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }

    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to `p`
    /// (1 keeps all; default 0.95).
    pub fn top_p(mut self, p: f32) -> Self {
        self.top_p = p;
        self
    }

    /// Seed of the sampler.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// llama.cpp's sampler chain with these settings, having seen `prompt`.
    pub(crate) fn sampler(
        &self,
        n_vocab: usize,
        prompt: &[Token],
    ) -> Result<SamplerChain, GenerateError> {
        let settings = ChainSettings {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_last_n: self.repeat_last_n,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
        };
        let mut sampler = SamplerChain::new(&settings, n_vocab).ok_or_else(|| {
            GenerateError::InvalidOption("llama.cpp could not build the sampler chain".into())
        })?;
        for &token in prompt {
            sampler.accept(token);
        }
        Ok(sampler)
    }

    /// Checks every setting's range (generating checks them too).
    pub fn check(&self) -> Result<(), GenerateError> {
        check_request(self)
    }

    /// Stop at the model's end-of-generation tokens (on by default).
    pub fn stop_at_end_of_generation(mut self, on: bool) -> Self {
        self.stop_at_end_of_generation = on;
        self
    }

    /// Stop strings (none by default; at most [`limits::MAX_STOP_STRINGS`], none empty,
    /// each at most [`limits::MAX_STOP_STRING_BYTES`] bytes): the generation ends where the
    /// first of them occurs in its text ([`StopReason::StopString`]). The text handed on is
    /// what comes before it: text that could still become a stop string is held back until
    /// it is clear that it does not.
    pub fn stop(mut self, stops: Vec<String>) -> Self {
        self.stop = stops;
        self
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StopReason {
    /// The token limit was reached.
    MaxTokens,
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// The caller's callback asked to stop (or the request was cancelled).
    Caller,
    /// The request's sequence has no room for another token (the context is full).
    ContextFull,
    /// One of the request's stop strings occurred in the text.
    StopString,
}

/// The result of one generation, with its statistics.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct GenerationStats {
    /// `stock` or `tiered`.
    pub mode: LoadMode,
    /// Model file.
    pub model: String,
    /// Why it ended.
    pub stop_reason: StopReason,
    /// Sum of weight bytes.
    pub model_bytes: u64,
    /// The RAM budget planned for, in bytes of weights.
    pub ram_budget_bytes: u64,
    /// Bytes read once at load and held.
    pub ram_resident_bytes: u64,
    /// Bytes of weights in GPU memory.
    pub gpu_resident_bytes: u64,
    /// Planned bytes streamed per token.
    pub streamed_bytes_per_token: u64,
    /// Bytes read from the model file while generating (after the prompt): hypura's reads in
    /// tiered mode; in stock mode the process's storage reads (`/proc/self/io`).
    pub disk_bytes_read: u64,
    /// `disk_bytes_read / tokens decoded`.
    pub disk_bytes_per_token: f64,
    /// Storage reads of the process while generating (`/proc/self/io` read_bytes).
    pub storage_bytes_read: u64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Of them, tokens already in the context from the previous turn of a chat
    /// ([`Model::chat`]), not decoded again.
    pub prompt_tokens_cached: usize,
    /// Seconds for the prompt.
    pub prompt_s: f64,
    /// Bytes read from the model file while the prompt was decoded (as `disk_bytes_read`
    /// counts them): with load, what a cold start must read before the first token.
    pub prompt_bytes_read: u64,
    /// Tokens generated.
    pub tokens_generated: usize,
    /// Decode steps after the prompt.
    pub tokens_decoded: usize,
    /// Decode steps per second.
    pub decode_tok_s: f64,
    /// Decode steps per second over the second half of them (caches warmed up: the steady
    /// state); 0 with fewer than 2 steps.
    pub steady_tok_s: f64,
    /// Seconds from the start of the load to the 16th generated token (load, prompt, 15
    /// decode steps): the cold start; 0 with fewer than 16 tokens.
    pub time_to_16th_token_s: f64,
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
    /// KV cache bytes in host memory (seen in llama.cpp's graph; predicted in stock mode).
    pub kv_cache_bytes: u64,
    /// Activation buffers in host memory (seen in llama.cpp's graph; 0 in stock mode).
    pub compute_buffer_bytes: u64,
    /// Logits buffer.
    pub output_buffer_bytes: u64,
    /// hypura's reader buffers (one aligned bounce buffer per reader thread for direct I/O).
    pub io_buffer_bytes: u64,
    /// True when weights are read with direct I/O (bypassing the page cache).
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
    /// Bytes of expert slices the plan lets hypura hold (0: experts are not read slice by
    /// slice).
    pub expert_cache_bytes: u64,
    /// Expert slices a batch needed that were held, while generating.
    pub expert_hits: u64,
    /// Expert slices a batch needed that were read, while generating.
    pub expert_misses: u64,
    /// Bytes read for them.
    pub expert_bytes_read: u64,
    /// Expert slices evicted to make room, while generating.
    pub expert_evictions: u64,
    /// Of the hits, slices the expert cache's background reader had read (it fills the
    /// cache's free room), while generating.
    pub expert_filled_hits: u64,
    /// Bytes the background reader was asked to read while generating.
    pub expert_filled_bytes: u64,
    /// Bytes read ahead for experts predicted to be picked (the next layers' routers run on
    /// the current hidden state), while generating.
    pub expert_prefetch_bytes: u64,
    /// Slices read ahead that their layer's next request picked (counted in the hits too).
    pub expert_prefetch_hits: u64,
    /// Bytes read ahead for slices their layer's next request did not pick.
    pub expert_prefetch_wasted_bytes: u64,
    /// Bytes of one expert of one layer (its slices of the layer's expert tensors).
    pub expert_unit_bytes: u64,
    /// The expert cache's hit rate predicted from the saved profile the run started from
    /// (`None`: it started without one).
    pub expert_profile_hit_rate: Option<f64>,
    /// The expert cache's hits, misses and bytes read per layer, while generating.
    pub expert_layers: Vec<ExpertLayerStats>,
    /// Which experts each batch's router picked, layer by layer, while generating: the
    /// request trace `hypura expert-sim` replays.
    pub expert_trace: Vec<ExpertRequest>,
    /// Per-tensor use and disk-read counts while generating (uses by nodes computed on a GPU
    /// are not counted, nor any use when a GPU is used and nothing streams).
    pub tensor_accesses: Vec<TensorAccess>,
    /// The generated token ids.
    pub tokens: Vec<Token>,
    /// A digest (xxh3) of every logit vector a token was sampled from, in order: two runs
    /// with the same digest computed bit-identical logits (sampled tokens alone can agree
    /// while logits differ slightly).
    pub logits_digest: u64,
}

/// Steps per second over the second half of steps that ended at `done_s` (seconds from
/// one start, in order); 0 with fewer than 2 steps.
fn steady_rate(done_s: &[f64]) -> f64 {
    let n = done_s.len();
    if n < 2 {
        return 0.0;
    }
    let half = n / 2;
    let span = done_s[n - 1] - done_s[half - 1];
    (n - half) as f64 / span.max(1e-9)
}

fn check_request(request: &GenerateOptions) -> Result<(), GenerateError> {
    if request.max_tokens == 0 {
        return Err(GenerateError::InvalidOption(
            "max_tokens must be at least 1".into(),
        ));
    }
    if !(request.temperature.is_finite() && request.temperature >= 0.0) {
        return Err(GenerateError::InvalidOption(
            "temperature must be 0 or more".into(),
        ));
    }
    if !(request.top_p.is_finite() && request.top_p > 0.0 && request.top_p <= 1.0) {
        return Err(GenerateError::InvalidOption(
            "top_p must be in (0, 1]".into(),
        ));
    }
    if !(request.min_p.is_finite() && (0.0..=1.0).contains(&request.min_p)) {
        return Err(GenerateError::InvalidOption(
            "min_p must be in [0, 1]".into(),
        ));
    }
    if !(request.repeat_penalty.is_finite() && request.repeat_penalty > 0.0) {
        return Err(GenerateError::InvalidOption(
            "repeat_penalty must be more than 0".into(),
        ));
    }
    if request.repeat_last_n < 0 {
        return Err(GenerateError::InvalidOption(
            "repeat_last_n must be 0 or more".into(),
        ));
    }
    if !(request.frequency_penalty.is_finite() && request.presence_penalty.is_finite()) {
        return Err(GenerateError::InvalidOption(
            "the frequency and presence penalties must be finite".into(),
        ));
    }
    if request.stop.len() > limits::MAX_STOP_STRINGS {
        return Err(GenerateError::InvalidOption(format!(
            "{} stop strings (at most {})",
            request.stop.len(),
            limits::MAX_STOP_STRINGS
        )));
    }
    if request.stop.iter().any(String::is_empty) {
        return Err(GenerateError::InvalidOption(
            "a stop string is empty".into(),
        ));
    }
    if let Some(long) = request
        .stop
        .iter()
        .find(|s| s.len() > limits::MAX_STOP_STRING_BYTES)
    {
        return Err(GenerateError::InvalidOption(format!(
            "a stop string has {} bytes (at most {})",
            long.len(),
            limits::MAX_STOP_STRING_BYTES
        )));
    }
    Ok(())
}

/// Where the prompt ended, for the measures of what follows.
struct AfterPrompt {
    prompt_s: f64,
    prompt_bytes_read: u64,
    file_before: u64,
    storage_before: u64,
    started: Instant,
}

impl Model {
    /// Generates text for `request`, from a cleared context, as one request on the
    /// [`Engine`] (the one that serves many at once; a request gets the same text either
    /// way): `on_text` receives each new piece of text (always whole UTF-8 characters) and
    /// returns [`ControlFlow::Break`] to stop. A context that fills up ends the text with
    /// [`StopReason::ContextFull`]; a prompt that cannot fit it is an error.
    pub fn generate(
        &mut self,
        request: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, GenerateError> {
        check_request(request)?;
        self.clear();
        let prompt = self.tokenize(&request.prompt, true)?;
        self.generate_after(&prompt, 0, request, on_text)
    }

    /// Generates the assistant's reply to `messages`, rendered by `template` (see
    /// [`Model::chat_template`]), as [`Model::generate`] does. The conversation stays in the
    /// context: a later call whose rendered messages begin with the same tokens (the same
    /// messages, the reply, and a new message) decodes only what follows them.
    /// `request`'s prompt is not used.
    pub fn chat(
        &mut self,
        template: &ChatTemplate,
        messages: &[ChatMessage],
        request: &GenerateOptions,
        on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, GenerateError> {
        check_request(request)?;
        let text = template.render(messages, true)?;
        log::debug!("chat prompt: {text:?}");
        let prompt = self.tokenize(&text, true)?;
        let cached = self.keep_common_prefix(&prompt);
        self.generate_after(&prompt, cached, request, on_text)
    }

    /// Runs `prompt` on the engine, on sequence 0 (its first `cached` tokens are already
    /// there), and measures it: the engine decodes the prompt, then one token per step.
    fn generate_after(
        &mut self,
        prompt: &[Token],
        cached: usize,
        request: &GenerateOptions,
        mut on_text: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<GenerationStats, GenerateError> {
        let tiered = self.load_mode() == LoadMode::Tiered;
        let prompt_started = Instant::now();
        let prompt_file_before = self.file_bytes_read();
        let prompt_storage_before = proc_stats::storage_read_bytes();
        let (mut engine, id) =
            Engine::resuming(&mut *self, request.clone(), prompt.to_vec(), cached)?;
        let mut digest = xxhash_rust::xxh3::Xxh3::new();
        let mut tokens = Vec::new();
        let mut stop_reason = StopReason::MaxTokens;
        let mut stopped_by_caller = false;
        // Set once the prompt is done (its step sampled the first token).
        let mut after_prompt: Option<AfterPrompt> = None;
        // When each decode step after the prompt ended, from the prompt's end.
        let mut step_done_s: Vec<f64> = Vec::new();
        while !engine.is_idle() {
            let events = engine.step_observing(&mut |_, logits| {
                let bytes: Vec<u8> = logits.iter().flat_map(|l| l.to_le_bytes()).collect();
                digest.update(&bytes);
            })?;
            match &after_prompt {
                None if engine.tokens_generated() > 0 => {
                    let model = engine.model();
                    let prompt_bytes_read = if tiered {
                        model.file_bytes_read() - prompt_file_before
                    } else {
                        proc_stats::storage_read_bytes().saturating_sub(prompt_storage_before)
                    };
                    log::info!(
                        "after the prompt: RSS {} MiB, peak {} MiB",
                        proc_stats::rss_bytes() >> 20,
                        proc_stats::peak_rss_bytes() >> 20
                    );
                    model.reset_counters();
                    after_prompt = Some(AfterPrompt {
                        prompt_s: prompt_started.elapsed().as_secs_f64(),
                        prompt_bytes_read,
                        file_before: model.file_bytes_read(),
                        storage_before: proc_stats::storage_read_bytes(),
                        started: Instant::now(),
                    });
                }
                None => {}
                Some(a) => step_done_s.push(a.started.elapsed().as_secs_f64()),
            }
            for event in events {
                match event {
                    EngineEvent::Text { text, .. } => {
                        if !stopped_by_caller && on_text(&text).is_break() {
                            stopped_by_caller = true;
                        }
                    }
                    EngineEvent::Finished {
                        reason, tokens: t, ..
                    } => {
                        stop_reason = reason;
                        tokens = t;
                    }
                }
            }
            if stopped_by_caller {
                if let Some(EngineEvent::Finished { tokens: t, .. }) = engine.cancel(id) {
                    tokens = t;
                }
                stop_reason = StopReason::Caller;
                break;
            }
        }
        drop(engine);
        let Some(AfterPrompt {
            prompt_s,
            prompt_bytes_read,
            file_before,
            storage_before,
            started,
        }) = after_prompt
        else {
            return Err(GenerateError::Decode(DecodeError::Failed(
                "the request ended before its first token".into(),
            )));
        };
        let decoded = step_done_s.len();
        let (expert_trace, expert_unit_bytes) = self.expert_trace();
        let decode_s = started.elapsed().as_secs_f64();
        let storage_bytes_read = proc_stats::storage_read_bytes().saturating_sub(storage_before);
        let disk_bytes_read = if self.load_mode() == LoadMode::Tiered {
            self.file_bytes_read() - file_before
        } else {
            storage_bytes_read
        };
        let stats = self.stats();
        let plan = self.plan();
        let load = self.load_stats();
        Ok(GenerationStats {
            mode: self.load_mode(),
            model: self.options().model_path().display().to_string(),
            stop_reason,
            model_bytes: plan.model_bytes,
            ram_budget_bytes: plan.ram_budget_bytes,
            ram_resident_bytes: plan.ram_resident_bytes,
            gpu_resident_bytes: plan.gpu_resident_bytes,
            streamed_bytes_per_token: plan.streamed_bytes_per_token,
            disk_bytes_read,
            disk_bytes_per_token: disk_bytes_read as f64 / decoded.max(1) as f64,
            storage_bytes_read,
            prompt_tokens: prompt.len(),
            prompt_tokens_cached: cached,
            prompt_s,
            prompt_bytes_read,
            tokens_generated: tokens.len(),
            tokens_decoded: decoded,
            decode_tok_s: decoded as f64 / decode_s.max(1e-9),
            steady_tok_s: steady_rate(&step_done_s),
            // The 16th token is sampled from the 15th step's logits.
            time_to_16th_token_s: step_done_s
                .get(14)
                .map_or(0.0, |s| load.load_s + prompt_s + s),
            load_s: load.load_s,
            peak_rss_bytes: proc_stats::peak_rss_bytes(),
            peak_rss_load_bytes: load.peak_rss_load_bytes,
            rss_before_load_bytes: load.rss_before_load_bytes,
            rss_after_llama_load_bytes: load.rss_after_llama_load_bytes,
            largest_tensor_bytes: load.largest_tensor_bytes,
            kv_cache_bytes: stats.kv_cache_bytes,
            compute_buffer_bytes: stats.compute_buffer_bytes,
            output_buffer_bytes: stats.output_buffer_bytes,
            io_buffer_bytes: if self.is_streaming() && self.direct_io() {
                u64::from(plan.io_threads) * (plan.request_bytes + IO_BUFFER_SLACK_BYTES)
            } else {
                0
            },
            direct_io: self.direct_io(),
            peak_window_bytes: stats.peak_window_bytes,
            peak_held_weight_bytes: plan.ram_resident_bytes + stats.peak_window_bytes,
            bound_tok_s: plan.bound_tok_s,
            prefetch_depth: plan.prefetch_depth,
            stream_wait_s: stats.stream_wait_s,
            reader_utilization: stats.reader_busy_s
                / (stats.reader_threads.max(1) as f64 * decode_s.max(1e-9)),
            expert_cache_bytes: plan.expert_cache_bytes,
            expert_hits: stats.expert_hits,
            expert_misses: stats.expert_misses,
            expert_bytes_read: stats.expert_bytes_read,
            expert_evictions: stats.expert_evictions,
            expert_filled_hits: stats.expert_filled_hits,
            expert_filled_bytes: stats.expert_filled_bytes,
            expert_prefetch_bytes: stats.expert_prefetch_bytes,
            expert_prefetch_hits: stats.expert_prefetch_hits,
            expert_prefetch_wasted_bytes: stats.expert_prefetch_wasted_bytes,
            expert_unit_bytes,
            expert_profile_hit_rate: plan.expert_profile_hit_rate,
            expert_layers: self.expert_layer_stats(),
            expert_trace,
            tensor_accesses: self.tensor_accesses(),
            tokens,
            logits_digest: digest.digest(),
        })
    }
}
