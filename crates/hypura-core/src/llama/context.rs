//! A llama.cpp context (KV cache, compute buffers, logits) over a model, freed on drop; and
//! the token batch it decodes, freed on drop.

use std::ptr::NonNull;

use super::cpu::ThreadPool;
use super::model::LlamaModel;
use crate::sys;

/// A context created from a model. The model must outlive it (the owner drops the context
/// first).
#[derive(Debug)]
pub(crate) struct LlamaContext(NonNull<sys::llama_context>);

// SAFETY: a llama.cpp context may be used from any thread, by one thread at a time; its owner
// takes `&mut self` for every use that computes.
unsafe impl Send for LlamaContext {}

impl LlamaContext {
    /// Creates a context; the error is llama.cpp's last logged error (if any).
    ///
    /// # Safety
    /// The evaluation callback's user data in `params` must stay valid for as long as the
    /// context lives, and `model` must outlive it.
    pub unsafe fn new(
        model: &LlamaModel,
        params: sys::llama_context_params,
    ) -> Result<Self, String> {
        super::backend::clear_last_error();
        // SAFETY: the model is live; the caller keeps the callback's data valid.
        let raw = unsafe { sys::llama_init_from_model(model.as_ptr(), params) };
        NonNull::new(raw).map(Self).ok_or_else(|| {
            super::backend::take_last_error().unwrap_or_else(|| "unknown error".to_string())
        })
    }

    /// Makes llama.cpp compute with `pool`.
    ///
    /// # Safety
    /// The pool must outlive the context.
    pub unsafe fn attach_threadpool(&mut self, pool: &ThreadPool) {
        // SAFETY: the context is live; the caller keeps the pool alive.
        unsafe { sys::llama_attach_threadpool(self.0.as_ptr(), pool.as_ptr(), pool.as_ptr()) };
    }

    /// Positions one sequence can hold in llama.cpp's view (llama.cpp may round the context
    /// length up; with a unified KV cache, this is the whole cache).
    pub fn n_ctx_seq(&self) -> usize {
        // SAFETY: the context is live.
        unsafe { sys::llama_n_ctx_seq(self.0.as_ptr()) as usize }
    }

    /// Positions of the whole KV cache (llama.cpp may round the context length up).
    pub fn n_ctx(&self) -> usize {
        // SAFETY: the context is live.
        unsafe { sys::llama_n_ctx(self.0.as_ptr()) as usize }
    }

    /// Tokens per `llama_decode` call (llama.cpp may have lowered it to the context length).
    pub fn n_batch(&self) -> usize {
        // SAFETY: the context is live.
        unsafe { sys::llama_n_batch(self.0.as_ptr()) }.max(1) as usize
    }

    /// Decodes `batch`; returns llama.cpp's status (0: success, 1: no KV-cache slot,
    /// 2: aborted, other: error).
    pub fn decode(&mut self, batch: &Batch) -> i32 {
        // SAFETY: the context is live; the batch's arrays hold `n_tokens` valid entries.
        unsafe { sys::llama_decode(self.0.as_ptr(), batch.raw) }
    }

    /// The logits of the `i`-th token of the last batch (`n_vocab` floats), if it asked.
    pub fn logits(&self, i: usize, n_vocab: usize) -> Option<&[f32]> {
        let i = i32::try_from(i).ok()?;
        // SAFETY: the context is live.
        let ptr = unsafe { sys::llama_get_logits_ith(self.0.as_ptr(), i) };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: llama.cpp returns `n_vocab` floats that live until the next decode (which
        // needs `&mut self`).
        Some(unsafe { std::slice::from_raw_parts(ptr, n_vocab) })
    }

    /// Forgets every sequence.
    pub fn clear(&mut self) {
        // SAFETY: the context is live.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.0.as_ptr()), true) };
    }

    /// Removes positions `from..` of sequence `seq` (`from` = 0: the whole sequence).
    pub fn remove_from(&mut self, seq: i32, from: i32) {
        // SAFETY: the context is live; removing a sequence's tail always succeeds.
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.0.as_ptr()), seq, from, -1) };
    }
}

impl Drop for LlamaContext {
    fn drop(&mut self) {
        // SAFETY: created by llama_init_from_model and freed once, here.
        unsafe { sys::llama_free(self.0.as_ptr()) }
    }
}

/// A batch of tokens for [`LlamaContext::decode`], each in one sequence.
pub(crate) struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

impl Batch {
    /// An empty batch with room for `capacity` tokens.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // SAFETY: allocates arrays for `capacity` tokens with one sequence id each.
        let mut raw = unsafe { sys::llama_batch_init(capacity as i32, 0, 1) };
        raw.n_tokens = 0;
        Self { raw, capacity }
    }

    /// Appends a token at position `pos` of sequence `seq`. Returns false when full.
    pub fn push(&mut self, token: i32, pos: i32, seq: i32, logits: bool) -> bool {
        let i = self.raw.n_tokens as usize;
        if i >= self.capacity {
            return false;
        }
        // SAFETY: `i` is below the capacity the arrays were allocated for, and each token
        // has room for one sequence id.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            **self.raw.seq_id.add(i) = seq;
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
        true
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init and freed once, here.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}
