//! llama.cpp's sampler chain, in the order and with the defaults llama.cpp's own tools use
//! (`common/sampling.cpp`): repetition penalties, top-k, top-p, min-p, temperature, then a
//! seeded draw (a temperature of 0 keeps only the most likely token). It samples from the
//! logits hypura hands it, which may come from hypura's own head.

use std::ptr::NonNull;

use crate::sys;

/// The settings of the chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ChainSettings {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_last_n: i32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: u64,
}

/// A sampler chain, freed on drop.
pub(crate) struct SamplerChain {
    chain: NonNull<sys::llama_sampler>,
    candidates: Vec<sys::llama_token_data>,
}

// SAFETY: llama.cpp's samplers hold plain state (no thread-local or thread-bound resources);
// the chain is used by one thread at a time (it is not Sync).
unsafe impl Send for SamplerChain {}

impl SamplerChain {
    /// A chain for a vocabulary of `n_vocab` tokens; `None` if llama.cpp could not make it.
    pub fn new(settings: &ChainSettings, n_vocab: usize) -> Option<Self> {
        // SAFETY: plain constructors; the chain takes ownership of every sampler added.
        unsafe {
            let chain = NonNull::new(sys::llama_sampler_chain_init(
                sys::llama_sampler_chain_default_params(),
            ))?;
            let n_vocab_i32 = i32::try_from(n_vocab).ok()?;
            let seed = (settings.seed ^ (settings.seed >> 32)) as u32;
            let parts = [
                sys::llama_sampler_init_penalties(
                    n_vocab_i32,
                    settings.repeat_last_n,
                    settings.repeat_penalty,
                    settings.frequency_penalty,
                    settings.presence_penalty,
                ),
                sys::llama_sampler_init_top_k(settings.top_k),
                sys::llama_sampler_init_top_p(settings.top_p, 1),
                sys::llama_sampler_init_min_p(settings.min_p, 1),
                sys::llama_sampler_init_temp(settings.temperature),
                sys::llama_sampler_init_dist(seed),
            ];
            let complete = parts.iter().all(|p| !p.is_null());
            for part in parts.into_iter().filter(|p| !p.is_null()) {
                sys::llama_sampler_chain_add(chain.as_ptr(), part);
            }
            let sampler = Self {
                chain,
                candidates: Vec::with_capacity(n_vocab),
            };
            complete.then_some(sampler)
        }
    }

    /// Notes a token of the text (prompt or generated) for the repetition penalties.
    pub fn accept(&mut self, token: i32) {
        // SAFETY: a live chain.
        unsafe { sys::llama_sampler_accept(self.chain.as_ptr(), token) }
    }

    /// Picks a token from `logits` (one per vocabulary entry). Does not accept it.
    pub fn sample(&mut self, logits: &[f32]) -> i32 {
        self.candidates.clear();
        self.candidates
            .extend(
                logits
                    .iter()
                    .enumerate()
                    .map(|(id, &logit)| sys::llama_token_data {
                        id: id as i32,
                        logit,
                        p: 0.0,
                    }),
            );
        let mut array = sys::llama_token_data_array {
            data: self.candidates.as_mut_ptr(),
            size: self.candidates.len(),
            selected: -1,
            sorted: false,
        };
        // SAFETY: the array points at `candidates`, alive and not otherwise borrowed during
        // the call; samplers may reorder or shrink it within its size.
        unsafe { sys::llama_sampler_apply(self.chain.as_ptr(), &mut array) };
        let selected = usize::try_from(array.selected)
            .ok()
            .filter(|&i| i < array.size);
        match selected {
            // SAFETY: `selected` indexes the (possibly moved) array llama.cpp left.
            Some(i) => unsafe { (*array.data.add(i)).id },
            // An empty vocabulary: nothing to pick.
            None => 0,
        }
    }
}

impl Drop for SamplerChain {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_chain_init and freed once, here (with its parts).
        unsafe { sys::llama_sampler_free(self.chain.as_ptr()) }
    }
}
