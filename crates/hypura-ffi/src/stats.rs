//! Per-tier statistics of a model, in a struct that only ever grows at the end.

use crate::boundary::require;
use crate::model::{hypura_model, with_model};
use crate::status::hypura_status::{self, *};

/// Statistics of a model, per tier. See [`hypura_get_stats`]. New fields are only ever added
/// at the end, and `hypura_get_stats` writes no more than the size the caller passes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct hypura_stats {
    /// Sum of the weight bytes llama.cpp loads (not those of next-token-prediction layers,
    /// which it never loads).
    pub model_bytes: u64,
    /// The RAM budget in force, in bytes of weights.
    pub ram_budget_bytes: u64,
    /// Weight bytes resident in RAM.
    pub ram_resident_bytes: u64,
    /// Weight bytes resident in GPU memory (0: none).
    pub gpu_resident_bytes: u64,
    /// Weight bytes streamed from the file per token (planned).
    pub nvme_streamed_bytes_per_token: u64,
    /// Bytes hypura read from the model file since the model was loaded (load excluded).
    pub bytes_read: u64,
    /// Tokens decoded so far (prompts included).
    pub tokens_decoded: u64,
    /// Tokens decoded per second of decoding, so far.
    pub tokens_per_second: f64,
    /// The planner's bound on tokens per second.
    pub bound_tokens_per_second: f64,
    /// Peak resident set size of the process since the model was loaded.
    pub peak_rss_bytes: u64,
    /// Mixture-of-experts models read slice by slice: bytes of the expert cache (0: none).
    pub expert_cache_bytes: u64,
    /// Expert slices a batch needed that were held.
    pub expert_hits: u64,
    /// Expert slices a batch needed that were read.
    pub expert_misses: u64,
    /// Bytes read for them.
    pub expert_bytes_read: u64,
    /// Bytes read ahead for experts predicted to be picked.
    pub expert_prefetch_bytes: u64,
    /// Slices read ahead that their layer's next request picked (counted in the hits too).
    pub expert_prefetch_hits: u64,
    /// Bytes read ahead for slices their layer's next request did not pick.
    pub expert_prefetch_wasted_bytes: u64,
}

/// Writes the model's per-tier statistics into `*stats`, at most `size` bytes of it (pass
/// `sizeof(hypura_stats)`: a caller compiled against an older, shorter struct gets the
/// fields it knows).
///
/// # Safety
/// `model` is NULL or a live handle; `stats` is NULL or valid for `size` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn hypura_get_stats(
    model: *const hypura_model,
    stats: *mut hypura_stats,
    size: usize,
) -> hypura_status {
    with_model(model, |_, state| {
        require!(stats, "stats");
        let model = state.model();
        let plan = model.plan();
        let s = model.stats();
        let value = hypura_stats {
            model_bytes: plan.model_bytes,
            ram_budget_bytes: plan.ram_budget_bytes,
            ram_resident_bytes: plan.ram_resident_bytes,
            gpu_resident_bytes: plan.gpu_resident_bytes,
            nvme_streamed_bytes_per_token: plan.streamed_bytes_per_token,
            bytes_read: s.bytes_read,
            tokens_decoded: s.tokens_decoded,
            tokens_per_second: if s.decode_s > 0.0 {
                s.tokens_decoded as f64 / s.decode_s
            } else {
                0.0
            },
            bound_tokens_per_second: plan.bound_tok_s,
            peak_rss_bytes: s.peak_rss_bytes,
            expert_cache_bytes: plan.expert_cache_bytes,
            expert_hits: s.expert_hits,
            expert_misses: s.expert_misses,
            expert_bytes_read: s.expert_bytes_read,
            expert_prefetch_bytes: s.expert_prefetch_bytes,
            expert_prefetch_hits: s.expert_prefetch_hits,
            expert_prefetch_wasted_bytes: s.expert_prefetch_wasted_bytes,
        };
        let n = size.min(std::mem::size_of::<hypura_stats>());
        // SAFETY: `stats` is valid for `size` >= n bytes by contract; the source is a local.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&value as *const hypura_stats).cast::<u8>(),
                stats.cast::<u8>(),
                n,
            )
        };
        HYPURA_STATUS_OK
    })
}
