//! A loaded model with its llama.cpp context: tokenize, decode batches for one or more
//! sequences, logits, statistics. hypura decides where weights live; llama.cpp computes.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;

use super::options::{LoadMode, LoadOptions};
use crate::chat::{ChatTemplate, ChatTemplateError};
use crate::error::{DecodeError, TokenizeError};
use crate::io::ModelFile;
use crate::llama::{Batch, LlamaContext, LlamaModel, ThreadPool};
use crate::memory::HypuraBufferType;
use crate::plan::Plan;
use crate::profile::{ExpertProfile, ProfileError};
use crate::runtime::load::ProfileSource;
use crate::stream::experts::{ExpertLayerStats, ExpertRequest};
use crate::stream::track::TensorAccess;
use crate::stream::{StreamCounters, StreamFailure, Streamer};

/// A token id.
pub type Token = i32;

/// One token of a batch for [`Model::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchToken {
    /// Token id.
    pub token: Token,
    /// Sequence it is appended to (`0..sequences`), at that sequence's next position.
    pub seq: i32,
    /// Whether to return logits after this token.
    pub logits: bool,
}

/// Figures from loading.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
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
}

/// Where the model stands: decoding totals, bytes read, and the memory llama.cpp uses.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ModelStats {
    /// Tokens decoded so far (prompts included).
    pub tokens_decoded: u64,
    /// Seconds spent decoding them.
    pub decode_s: f64,
    /// Bytes hypura read from the model file since loading ended.
    pub bytes_read: u64,
    /// The KV cache's bytes in host memory (seen in the graph; the plan's prediction until
    /// the first decode or in stock mode). The KV cache of the layers on a GPU is not here.
    pub kv_cache_bytes: u64,
    /// llama.cpp's activation buffers in host memory (seen in the graph; 0 before the first
    /// decode or in stock mode).
    pub compute_buffer_bytes: u64,
    /// llama.cpp's logits buffer.
    pub output_buffer_bytes: u64,
    /// Most weight bytes held for streaming at once since the counters were reset.
    pub peak_window_bytes: u64,
    /// Seconds the graph waited for reads since the counters were reset.
    pub stream_wait_s: f64,
    /// Seconds the reader threads spent inside reads since the counters were reset, summed.
    pub reader_busy_s: f64,
    /// Reader threads.
    pub reader_threads: usize,
    /// Groups that were not read ahead in time since the counters were reset.
    pub late_groups: u64,
    /// Times the graph needed a group out of the planned order since the counters were reset.
    pub out_of_order_groups: u64,
    /// Expert slices a batch needed that were held, since the counters were reset.
    pub expert_hits: u64,
    /// Expert slices a batch needed that were read, since the counters were reset.
    pub expert_misses: u64,
    /// Bytes read for them.
    pub expert_bytes_read: u64,
    /// Expert slices evicted to make room, since the counters were reset.
    pub expert_evictions: u64,
    /// Of the hits, slices the cache's background reader had read, since the counters were
    /// reset.
    pub expert_filled_hits: u64,
    /// Bytes the background reader was asked to read since the counters were reset.
    pub expert_filled_bytes: u64,
    /// Bytes read ahead for experts predicted to be picked (the next layers' routers run on
    /// the current hidden state), since the counters were reset.
    pub expert_prefetch_bytes: u64,
    /// Slices read ahead that their layer's next request picked (counted in the hits too).
    pub expert_prefetch_hits: u64,
    /// Bytes read ahead for slices their layer's next request did not pick.
    pub expert_prefetch_wasted_bytes: u64,
    /// Peak resident set size of the process since the model was loaded (Linux; 0
    /// elsewhere).
    pub peak_rss_bytes: u64,
}

/// A model loaded with hypura (or as stock llama.cpp), ready to decode. It can be moved to
/// another thread; calls that compute take `&mut self`.
pub struct Model {
    // Field order is drop order. The context goes first (it calls into the streamer and the
    // thread pool); then the streamer, whose drop waits for reads still in flight into the
    // model's buffers and its own memory; only then the model's buffers and the buffer type
    // they were allocated from.
    context: LlamaContext,
    _threads: Option<ThreadPool>,
    streamer: Option<Box<Mutex<Streamer>>>,
    llama: LlamaModel,
    _buffer_types: Vec<HypuraBufferType>,
    /// True when some weights stream from the file.
    streaming: bool,
    file: Arc<ModelFile>,
    n_vocab: usize,
    n_past: Vec<i32>,
    /// The tokens sequence 0 holds, in order (a chat's conversation so far).
    held_tokens: Vec<Token>,
    last_logits: Vec<f32>,
    tokens_decoded: u64,
    decode_seconds: f64,
    bytes_read_at_load: u64,
    max_outputs: usize,
    /// Set once the file was seen changed: every later decode fails.
    file_changed: Option<String>,
    options: LoadOptions,
    plan: Plan,
    load_stats: LoadStats,
    profile_source: ProfileSource,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.options.model_path)
            .field("mode", &self.options.mode)
            .field("streaming", &self.is_streaming())
            .finish_non_exhaustive()
    }
}

impl Model {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        context: LlamaContext,
        threads: Option<ThreadPool>,
        streamer: Option<Box<Mutex<Streamer>>>,
        llama: LlamaModel,
        buffer_types: Vec<HypuraBufferType>,
        file: Arc<ModelFile>,
        options: LoadOptions,
        plan: Plan,
        load_stats: LoadStats,
        profile_source: ProfileSource,
    ) -> Self {
        let n_vocab = llama.n_vocab();
        Self {
            n_past: vec![0; options.sequences.max(1) as usize],
            bytes_read_at_load: file.bytes_read(),
            context,
            _threads: threads,
            streamer,
            llama,
            streaming: !buffer_types.is_empty() && !plan.full_resident,
            _buffer_types: buffer_types,
            file,
            n_vocab,
            held_tokens: Vec::new(),
            last_logits: Vec::new(),
            tokens_decoded: 0,
            decode_seconds: 0.0,
            max_outputs: 0,
            file_changed: None,
            options,
            plan,
            load_stats,
            profile_source,
        }
    }

    fn streamer(&self) -> Option<MutexGuard<'_, Streamer>> {
        self.streamer
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The placement in force (everything resident in stock mode).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The options it was loaded with.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Figures from loading.
    pub fn load_stats(&self) -> &LoadStats {
        &self.load_stats
    }

    /// The number of weights (parameters), as llama.cpp counts them.
    pub fn parameter_count(&self) -> u64 {
        self.llama.n_params()
    }

    /// The model file's GGUF metadata value of `key` (e.g. `general.name`,
    /// `general.file_type`) as text, numbers written out; `None` when absent or an array.
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.llama.meta_str(key)
    }

    /// A short identity of the model file (a hash of its header and its size; 16 hex
    /// digits), the key its saved expert profile goes under.
    pub fn file_key(&self) -> &str {
        &self.profile_source.model_key
    }

    /// True when weights stream (tiered, with a budget below the model's size).
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }

    /// True when hypura reads the model file with direct I/O (bypassing the page cache).
    pub fn direct_io(&self) -> bool {
        self.file.is_direct()
    }

    /// Positions each sequence can hold (llama.cpp may round the context length up): its
    /// share of the KV cache, also where the sequences share one cache (see `kv_unified`
    /// where the context is made), so that together they always fit.
    pub fn context_per_sequence(&self) -> usize {
        (self.context.n_ctx() / self.n_past.len().max(1)).min(self.context.n_ctx_seq())
    }

    /// Sequences that can be decoded side by side.
    pub fn sequences(&self) -> usize {
        self.n_past.len()
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Tokenizes `text`, adding the model's BOS token when `add_special` and the model
    /// wants it; special tokens written in the text are parsed.
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<Token>, TokenizeError> {
        if i32::try_from(text.len()).is_err() {
            return Err(TokenizeError::TooLong(text.len()));
        }
        self.llama
            .tokenize(text.as_bytes(), add_special)
            .ok_or_else(|| {
                TokenizeError::Failed("the tokenizer reported an inconsistent length".into())
            })
    }

    /// The bytes of one token's text (a token may end inside a UTF-8 character; empty for
    /// an id outside the vocabulary).
    pub fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.llama.token_bytes(token)
    }

    /// True for end-of-generation tokens.
    pub fn is_end_of_generation(&self, token: Token) -> bool {
        self.llama.is_eog(token)
    }

    /// Tokens held by sequence `seq`.
    pub fn sequence_length(&self, seq: i32) -> Option<usize> {
        usize::try_from(seq)
            .ok()
            .and_then(|s| self.n_past.get(s))
            .map(|&p| p as usize)
    }

    /// Forgets every sequence (the KV cache), so new ones can start.
    pub fn clear(&mut self) {
        self.context.clear();
        self.n_past.iter_mut().for_each(|p| *p = 0);
        self.held_tokens.clear();
        self.last_logits.clear();
    }

    /// Forgets one sequence.
    pub fn clear_sequence(&mut self, seq: i32) -> Result<(), DecodeError> {
        let slot = self.seq_slot(seq)?;
        self.context.remove_from(seq, 0);
        self.n_past[slot] = 0;
        if slot == 0 {
            self.held_tokens.clear();
        }
        Ok(())
    }

    /// Keeps the longest start of `prompt` that sequence 0 already holds (less one token,
    /// so that the prompt's last token is decoded and gives logits) and forgets the rest of
    /// the sequence. Returns how many tokens were kept.
    pub(crate) fn keep_common_prefix(&mut self, prompt: &[Token]) -> usize {
        let consistent = self.held_tokens.len() == self.n_past[0] as usize;
        let common = if consistent {
            self.held_tokens
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
                .min(prompt.len().saturating_sub(1))
        } else {
            0
        };
        self.context.remove_from(0, common as i32);
        self.n_past[0] = common as i32;
        self.held_tokens.truncate(common);
        self.last_logits.clear();
        common
    }

    /// The model's chat template (`tokenizer.chat_template` in the GGUF), with its BOS and
    /// EOS texts, ready for [`Model::chat`].
    pub fn chat_template(&self) -> Result<ChatTemplate, ChatTemplateError> {
        let source = self
            .llama
            .chat_template()
            .ok_or(ChatTemplateError::Missing)?;
        let (bos, eos) = self.llama.bos_eos();
        ChatTemplate::new(
            &source,
            &self.llama.special_text(bos),
            &self.llama.special_text(eos),
            self.llama.adds_bos(),
        )
    }

    fn seq_slot(&self, seq: i32) -> Result<usize, DecodeError> {
        usize::try_from(seq)
            .ok()
            .filter(|s| *s < self.n_past.len())
            .ok_or(DecodeError::SequenceOutOfRange {
                seq,
                n_seq: self.n_past.len(),
            })
    }

    /// Appends `tokens` to sequence 0 and computes; returns the logits after the last of
    /// them (`n_vocab` floats).
    pub fn decode_tokens(&mut self, tokens: &[Token]) -> Result<&[f32], DecodeError> {
        let batch: Vec<BatchToken> = tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| BatchToken {
                token,
                seq: 0,
                logits: i + 1 == tokens.len(),
            })
            .collect();
        self.last_logits = self.decode(&batch)?;
        Ok(&self.last_logits)
    }

    /// The logits [`Self::decode_tokens`] returned last.
    pub fn last_logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// Decodes a batch of tokens, each appended to its own sequence at that sequence's next
    /// position. Returns the logits of the tokens that asked for them, in batch order
    /// (`n_vocab` floats each). On an error the sequences are left as they were.
    pub fn decode(&mut self, batch: &[BatchToken]) -> Result<Vec<f32>, DecodeError> {
        if let Some(what) = &self.file_changed {
            return Err(DecodeError::FileChanged {
                path: self.file.path().to_path_buf(),
                what: what.clone(),
            });
        }
        if batch.is_empty() {
            return Err(DecodeError::EmptyBatch);
        }
        let n_ctx_seq = self.context_per_sequence();
        let mut adding = vec![0usize; self.n_past.len()];
        for t in batch {
            if t.token < 0 || t.token as usize >= self.n_vocab {
                return Err(DecodeError::TokenOutOfRange {
                    token: t.token,
                    n_vocab: self.n_vocab,
                });
            }
            adding[self.seq_slot(t.seq)?] += 1;
        }
        for (slot, &new) in adding.iter().enumerate() {
            let held = self.n_past[slot] as usize;
            if new > 0 && held + new > n_ctx_seq {
                return Err(DecodeError::ContextFull {
                    seq: slot as i32,
                    held,
                    new,
                    n_ctx: n_ctx_seq,
                });
            }
        }
        let started = Instant::now();
        let mut logits = Vec::new();
        let before = self.n_past.clone();
        let n_batch = self.context.n_batch();
        for chunk in batch.chunks(n_batch) {
            if let Err(e) = self.decode_chunk(chunk, &mut logits) {
                // Drop what the failed batch may have added to the KV cache.
                for (slot, &pos) in before.iter().enumerate() {
                    if self.n_past[slot] != pos {
                        self.context.remove_from(slot as i32, pos);
                    }
                }
                self.n_past = before;
                return Err(e);
            }
        }
        self.tokens_decoded += batch.len() as u64;
        self.decode_seconds += started.elapsed().as_secs_f64();
        self.held_tokens
            .extend(batch.iter().filter(|t| t.seq == 0).map(|t| t.token));
        Ok(logits)
    }

    fn failure(&mut self, failure: StreamFailure) -> DecodeError {
        let path = self.file.path().to_path_buf();
        match failure {
            StreamFailure::Io(reason) => DecodeError::Io { path, reason },
            StreamFailure::Changed(what) => {
                self.file_changed = Some(what.clone());
                DecodeError::FileChanged { path, what }
            }
            StreamFailure::Graph(reason) => DecodeError::Failed(reason),
        }
    }

    fn decode_chunk(
        &mut self,
        chunk: &[BatchToken],
        logits: &mut Vec<f32>,
    ) -> Result<(), DecodeError> {
        let mut batch = Batch::new(chunk.len());
        for t in chunk {
            let slot = t.seq as usize;
            batch.push(t.token, self.n_past[slot], t.seq, t.logits);
            self.n_past[slot] += 1;
        }
        let n_out = chunk.iter().filter(|t| t.logits).count();
        self.max_outputs = self.max_outputs.max(n_out);
        if let Some(mut s) = self.streamer() {
            s.begin_decode();
        }
        let status = self.context.decode(&batch);
        let failure = self.streamer().and_then(|mut s| s.take_failure());
        if self.is_streaming() {
            // The bytes this batch used came from the file: it must still be the file that
            // was loaded (one fstat of the open handle). A change explains a failed read too.
            if let Err(e) = self.file.check_unchanged() {
                return Err(self.failure(e.into()));
            }
        }
        if let Some(f) = failure {
            return Err(self.failure(f));
        }
        match status {
            0 => {}
            1 => return Err(DecodeError::KvCacheFull),
            2 => return Err(DecodeError::Failed("the computation was aborted".into())),
            other => {
                return Err(DecodeError::Failed(format!(
                    "llama_decode returned {other}"
                )))
            }
        }
        if n_out == 0 {
            return Ok(());
        }
        if let Some(s) = self.streamer() {
            if let Some(streamed) = s.logits() {
                if streamed.len() != n_out * self.n_vocab {
                    return Err(DecodeError::Failed(
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
            let row = self
                .context
                .logits(i, self.n_vocab)
                .ok_or_else(|| DecodeError::Failed("llama.cpp returned no logits".into()))?;
            logits.extend_from_slice(row);
        }
        Ok(())
    }

    /// Decoding totals, bytes read and memory figures.
    pub fn stats(&self) -> ModelStats {
        let counters = self
            .streamer()
            .map(|s| (s.counters(), s.observed_buffers()));
        let (c, observed) = counters.unwrap_or_default();
        let StreamCounters {
            peak_window_bytes,
            wait_s,
            reader_busy_s,
            reader_threads,
            late_groups,
            out_of_order,
            experts,
            ..
        } = c;
        ModelStats {
            tokens_decoded: self.tokens_decoded,
            decode_s: self.decode_seconds,
            bytes_read: self.file.bytes_read() - self.bytes_read_at_load,
            kv_cache_bytes: if observed.kv_cache_bytes > 0 {
                observed.kv_cache_bytes
            } else {
                self.plan.kv_cache_bytes
                    - self.plan.gpu_kv_cache_bytes.min(self.plan.kv_cache_bytes)
            },
            compute_buffer_bytes: observed.compute_bytes,
            output_buffer_bytes: (self.n_vocab * 4 * self.max_outputs.max(self.n_past.len()))
                as u64,
            peak_window_bytes,
            stream_wait_s: wait_s,
            reader_busy_s,
            reader_threads,
            late_groups,
            out_of_order_groups: out_of_order,
            expert_hits: experts.hits,
            expert_misses: experts.misses,
            expert_bytes_read: experts.bytes_read,
            expert_evictions: experts.evictions,
            expert_filled_hits: experts.filled_hits,
            expert_filled_bytes: experts.filled_bytes,
            expert_prefetch_bytes: experts.prefetch_bytes,
            expert_prefetch_hits: experts.prefetch_hits,
            expert_prefetch_wasted_bytes: experts.prefetch_wasted_bytes,
            peak_rss_bytes: super::proc_stats::peak_rss_bytes(),
        }
    }

    /// Bytes hypura has read from the model file so far, load included.
    pub(crate) fn file_bytes_read(&self) -> u64 {
        self.file.bytes_read()
    }

    /// Per-tensor access counts since the last [`Self::reset_counters`].
    pub fn tensor_accesses(&self) -> Vec<TensorAccess> {
        self.streamer().map(|s| s.accesses()).unwrap_or_default()
    }

    /// The expert cache's requests since the counters were reset (which experts each
    /// batch's router picked, layer by layer), with the bytes of one expert of one layer;
    /// empty and 0 when experts are not read slice by slice.
    pub fn expert_trace(&self) -> (Vec<ExpertRequest>, u64) {
        self.streamer()
            .map(|s| (s.expert_trace().to_vec(), s.expert_unit_bytes()))
            .unwrap_or_default()
    }

    /// The expert cache's hits, misses and bytes read per layer since the counters were
    /// reset (empty when experts are not read slice by slice).
    pub fn expert_layer_stats(&self) -> Vec<ExpertLayerStats> {
        self.streamer()
            .map(|s| s.expert_layer_stats())
            .unwrap_or_default()
    }

    /// Saves the expert cache's measured use as the model's profile, in the folder
    /// [`LoadOptions::expert_profiles`] names, for the next load to start from (and `plan`
    /// to predict from). Returns the file written; `None` when there is nothing to save (no
    /// folder set, or experts not read slice by slice).
    pub fn save_expert_profile(&self) -> Result<Option<std::path::PathBuf>, ProfileError> {
        let Some(dir) = self.options.expert_profiles_dir() else {
            return Ok(None);
        };
        let Some(streamer) = self.streamer().filter(|s| s.experts_active()) else {
            return Ok(None);
        };
        let (chances, requests) = streamer.expert_chances();
        drop(streamer);
        let key = &self.profile_source.model_key;
        let path = crate::profile::path_in(dir, key);
        ExpertProfile::new(key, self.profile_source.requests + requests, chances).write(&path)?;
        Ok(Some(path))
    }

    /// Zeroes the access counts and streaming counters (e.g. after a prompt).
    pub fn reset_counters(&self) {
        if let Some(mut s) = self.streamer() {
            s.reset_counts();
        }
    }

    /// Tiered or stock.
    pub fn load_mode(&self) -> LoadMode {
        self.options.mode
    }
}
