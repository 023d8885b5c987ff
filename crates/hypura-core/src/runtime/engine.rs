//! The engine: one loaded model serving many requests at once (continuous batching).
//! Requests join and leave between steps; each [`Engine::step`] decodes, in one batch, the
//! next token of every request that is generating, and a chunk of the prompts of requests
//! that are starting. The streamed weights are read once per step for all of them, which is
//! where batching pays beyond memory. Each request has its own sequence in the context, its
//! own sampler (llama.cpp's chain, seeded), its own limits and stop strings; a request
//! beyond the free sequences waits in the queue. [`Model::generate`] and [`Model::chat`] run
//! their one request on it too, so a request gets the same text alone or among others.
//!
//! ```no_run
//! use hypura_core::{Engine, EngineEvent, GenerateOptions, LoadOptions, Model};
//!
//! let model = Model::load(&LoadOptions::new("model.gguf").sequences(4).context_length(4096))?;
//! let mut engine = Engine::new(model);
//! let a = engine.submit(GenerateOptions::new("Once upon a time").max_tokens(32))?;
//! let b = engine.submit(GenerateOptions::new("The capital of France is").max_tokens(8))?;
//! while !engine.is_idle() {
//!     for event in engine.step()? {
//!         match event {
//!             EngineEvent::Text { id, text } => print!("[{}] {text}", id.0),
//!             EngineEvent::Finished { id, .. } => println!("[{}] done", id.0),
//!             _ => {}
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::BorrowMut;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::generate::{GenerateOptions, StopReason};
use super::model::{BatchToken, Model, Token};
use super::text::{StopStrings, Utf8Pieces};
use crate::error::{DecodeError, GenerateError};
use crate::llama::SamplerChain;

/// Tokens of a step, the generating requests' one each and the prompt tokens of those
/// starting, unless the model's batch size is larger: then a step is one batch. Each
/// micro-batch is a pass over the streamed weights, so a step fills its micro-batches.
const TOKENS_PER_STEP: usize = 256;

/// Prompt tokens a step feeds however many requests generate (so that a request starting
/// beside many others still moves).
const MIN_PREFILL_TOKENS_PER_STEP: usize = 32;

/// A request's handle, unique within an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// New text of a request (whole UTF-8 characters).
    Text {
        /// The request.
        id: RequestId,
        /// Its new text.
        text: String,
    },
    /// A request ended; its sequence is free for the next.
    Finished {
        /// The request.
        id: RequestId,
        /// Why it ended.
        reason: StopReason,
        /// The tokens it generated.
        tokens: Vec<Token>,
        /// Its prompt's tokens.
        prompt_tokens: usize,
        /// Where its time went.
        timings: RequestTimings,
    },
}

/// Where a request's time went, from [`Engine::submit`] to its end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct RequestTimings {
    /// Waiting for a free sequence.
    pub waiting: Duration,
    /// From starting on a sequence to its first token sampled: the prompt.
    pub prompt: Duration,
    /// From the first token sampled to the end.
    pub generating: Duration,
}

struct Waiting {
    id: RequestId,
    prompt: Vec<Token>,
    options: GenerateOptions,
    submitted: Instant,
}

struct Active {
    id: RequestId,
    seq: i32,
    prompt: Vec<Token>,
    /// Prompt tokens decoded so far.
    fed: usize,
    /// The last token sampled, to decode next.
    next: Option<Token>,
    generated: Vec<Token>,
    text: Utf8Pieces,
    stops: StopStrings,
    sampler: SamplerChain,
    options: GenerateOptions,
    /// How long it waited for its sequence.
    waited: Duration,
    started: Instant,
    first_token: Option<Instant>,
}

impl Active {
    fn timings(&self) -> RequestTimings {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        RequestTimings {
            waiting: self.waited,
            prompt: first.duration_since(self.started),
            generating: now.duration_since(first),
        }
    }
}

/// Many requests on one model, decoded together: see the module's notes. It owns the model
/// (`Engine<Model>`, the default), or borrows it (`Engine<&mut Model>`: what
/// [`Model::generate`] runs on).
pub struct Engine<M = Model> {
    model: M,
    slots: Vec<Option<Active>>,
    waiting: VecDeque<Waiting>,
    next_id: u64,
    tokens_generated: u64,
}

impl<M: BorrowMut<Model>> std::fmt::Debug for Engine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", self.model.borrow())
            .field("active", &self.slots.iter().flatten().count())
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

impl<M: BorrowMut<Model>> Engine<M> {
    /// An engine on `model`, serving up to [`Model::sequences`] requests at once.
    pub fn new(mut model: M) -> Self {
        model.borrow_mut().clear();
        Self::keeping_context(model)
    }

    /// An engine on `model` as it is: its sequences are cleared as requests take them.
    fn keeping_context(model: M) -> Self {
        let slots = (0..model.borrow().sequences()).map(|_| None).collect();
        Self {
            model,
            slots,
            waiting: VecDeque::new(),
            next_id: 0,
            tokens_generated: 0,
        }
    }

    /// The model (for its statistics, tokenizer and plan).
    pub fn model(&self) -> &Model {
        self.model.borrow()
    }

    /// The model, to use directly (tokenize, decode, statistics). Decoding on a sequence a
    /// running request holds would corrupt that request's context: do it only while the
    /// engine is idle ([`Engine::is_idle`]); a request started later clears its sequence first.
    pub fn model_mut(&mut self) -> &mut Model {
        self.model.borrow_mut()
    }

    /// Gives the model back.
    pub fn into_model(self) -> M {
        self.model
    }

    /// Queues a request (its prompt is `request`'s); it starts at a step when a sequence is
    /// free. Fails at once on settings out of range or a prompt that cannot fit.
    pub fn submit(&mut self, request: GenerateOptions) -> Result<RequestId, GenerateError> {
        request.check()?;
        let prompt = self.model.borrow().tokenize(&request.prompt, true)?;
        self.check_prompt(&prompt)?;
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.waiting.push_back(Waiting {
            id,
            prompt,
            options: request,
            submitted: Instant::now(),
        });
        Ok(id)
    }

    fn check_prompt(&self, prompt: &[Token]) -> Result<(), GenerateError> {
        if prompt.is_empty() {
            return Err(GenerateError::InvalidOption(
                "the prompt has no tokens".into(),
            ));
        }
        let n_ctx = self.model.borrow().context_per_sequence();
        if prompt.len() >= n_ctx {
            return Err(GenerateError::InvalidOption(format!(
                "the prompt has {} tokens; a request's context holds {n_ctx}",
                prompt.len()
            )));
        }
        Ok(())
    }

    /// An engine on `model` running `request` for `prompt` on sequence 0, whose first
    /// `cached` tokens the sequence already holds (a conversation going on): only the rest
    /// is decoded. The other sequences are left as they are until a request takes them.
    /// `request`'s settings are checked by the caller (before it touches the context); the
    /// prompt is checked here, as [`Engine::submit`] checks it.
    pub(crate) fn resuming(
        model: M,
        request: GenerateOptions,
        prompt: Vec<Token>,
        cached: usize,
    ) -> Result<(Self, RequestId), GenerateError> {
        let mut engine = Self::keeping_context(model);
        engine.check_prompt(&prompt)?;
        let held = engine.model.borrow().sequence_length(0);
        let cached = if cached < prompt.len() && held == Some(cached) {
            cached
        } else {
            // What sequence 0 holds is not the prompt's beginning: start it afresh.
            engine.model.borrow_mut().clear_sequence(0)?;
            0
        };
        let sampler = request.sampler(engine.model.borrow().n_vocab(), &prompt)?;
        let id = RequestId(engine.next_id);
        engine.next_id += 1;
        engine.slots[0] = Some(Active {
            id,
            seq: 0,
            prompt,
            fed: cached,
            next: None,
            generated: Vec::new(),
            text: Utf8Pieces::default(),
            stops: StopStrings::new(&request.stop),
            sampler,
            options: request,
            waited: Duration::ZERO,
            started: Instant::now(),
            first_token: None,
        });
        Ok((engine, id))
    }

    /// Stops a request, waiting or running: it ends with [`StopReason::Caller`] at once (the
    /// event is returned). `None` if the engine does not have it (it ended already).
    pub fn cancel(&mut self, id: RequestId) -> Option<EngineEvent> {
        if let Some(i) = self.waiting.iter().position(|w| w.id == id) {
            let w = self.waiting.remove(i)?;
            return Some(EngineEvent::Finished {
                id,
                reason: StopReason::Caller,
                tokens: Vec::new(),
                prompt_tokens: w.prompt.len(),
                timings: RequestTimings {
                    waiting: w.submitted.elapsed(),
                    ..RequestTimings::default()
                },
            });
        }
        let slot = self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|a| a.id == id))?;
        let active = self.slots[slot].take()?;
        let timings = active.timings();
        Some(EngineEvent::Finished {
            id,
            reason: StopReason::Caller,
            tokens: active.generated,
            prompt_tokens: active.prompt.len(),
            timings,
        })
    }

    /// True when no request is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.slots.iter().all(Option::is_none)
    }

    /// Tokens sampled so far, over all requests (for aggregate rates).
    pub fn tokens_generated(&self) -> u64 {
        self.tokens_generated
    }

    /// Requests running and waiting.
    pub fn load(&self) -> (usize, usize) {
        (self.slots.iter().flatten().count(), self.waiting.len())
    }

    /// Starts waiting requests on free sequences, decodes one batch, samples, and returns
    /// what happened. A decode error fails the step (every running request is left as it
    /// was; the caller may cancel them).
    pub fn step(&mut self) -> Result<Vec<EngineEvent>, GenerateError> {
        self.step_observing(&mut |_, _| {})
    }

    /// [`Engine::step`], showing `observe` each request's logits before it samples from them.
    pub(crate) fn step_observing(
        &mut self,
        observe: &mut dyn FnMut(RequestId, &[f32]),
    ) -> Result<Vec<EngineEvent>, GenerateError> {
        self.admit()?;
        let mut events = Vec::new();
        let n_ctx = self.model.borrow().context_per_sequence();
        // Requests that cannot take another token end here ("length").
        for slot in self.slots.iter_mut() {
            let full = slot.as_ref().is_some_and(|a| {
                a.next.is_some()
                    && self
                        .model
                        .borrow()
                        .sequence_length(a.seq)
                        .is_some_and(|held| held + 1 > n_ctx)
            });
            if full {
                if let Some(active) = slot.take() {
                    finish(active, StopReason::ContextFull, &mut events);
                }
            }
        }
        // The batch: each generating request's next token, then prompt chunks.
        let mut batch = Vec::new();
        let mut owners = Vec::new(); // (slot, prompt tokens fed by this batch)
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(a) = slot {
                if let Some(token) = a.next {
                    batch.push(BatchToken {
                        token,
                        seq: a.seq,
                        logits: true,
                    });
                    owners.push((i, 0));
                }
            }
        }
        let step_tokens =
            TOKENS_PER_STEP.max(self.model.borrow().options().effective_batch_size() as usize);
        let mut prefill_left = step_tokens
            .saturating_sub(batch.len())
            .max(MIN_PREFILL_TOKENS_PER_STEP);
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(a) = slot else { continue };
            if a.next.is_some() || prefill_left == 0 {
                continue;
            }
            let take = (a.prompt.len() - a.fed).min(prefill_left);
            prefill_left -= take;
            let last = a.fed + take == a.prompt.len();
            for (k, &token) in a.prompt[a.fed..a.fed + take].iter().enumerate() {
                batch.push(BatchToken {
                    token,
                    seq: a.seq,
                    logits: last && k + 1 == take,
                });
            }
            owners.push((i, take));
        }
        if batch.is_empty() {
            return Ok(events);
        }
        let logits = self.model.borrow_mut().decode(&batch)?;
        let n_vocab = self.model.borrow().n_vocab();
        let mut rows = logits.chunks_exact(n_vocab);
        for (i, fed) in owners {
            let Some(a) = self.slots[i].as_mut() else {
                continue;
            };
            a.fed += fed;
            let wants_logits = a.next.is_some() || a.fed == a.prompt.len();
            if !wants_logits {
                continue;
            }
            let Some(row) = rows.next() else {
                return Err(GenerateError::Decode(DecodeError::Failed(
                    "fewer logits than asked for".into(),
                )));
            };
            observe(a.id, row);
            let token = a.sampler.sample(row);
            a.sampler.accept(token);
            a.generated.push(token);
            self.tokens_generated += 1;
            a.first_token.get_or_insert_with(Instant::now);
            let model = self.model.borrow();
            let end = a.options.stop_at_end_of_generation && model.is_end_of_generation(token);
            let checked = a.stops.push(&a.text.push(&model.token_bytes(token)));
            if !checked.text.is_empty() {
                events.push(EngineEvent::Text {
                    id: a.id,
                    text: checked.text,
                });
            }
            let reason = if checked.stopped {
                Some(StopReason::StopString)
            } else if end {
                Some(StopReason::EndOfGeneration)
            } else if a.generated.len() >= a.options.max_tokens {
                Some(StopReason::MaxTokens)
            } else {
                a.next = Some(token);
                None
            };
            if let Some(reason) = reason {
                if let Some(active) = self.slots[i].take() {
                    finish(active, reason, &mut events);
                }
            }
        }
        Ok(events)
    }

    /// Moves waiting requests onto free sequences (forgetting what those held).
    fn admit(&mut self) -> Result<(), GenerateError> {
        for seq in 0..self.slots.len() {
            if self.slots[seq].is_some() {
                continue;
            }
            let Some(w) = self.waiting.pop_front() else {
                break;
            };
            self.model.borrow_mut().clear_sequence(seq as i32)?;
            let sampler = w
                .options
                .sampler(self.model.borrow().n_vocab(), &w.prompt)?;
            self.slots[seq] = Some(Active {
                id: w.id,
                seq: seq as i32,
                prompt: w.prompt,
                fed: 0,
                next: None,
                generated: Vec::new(),
                text: Utf8Pieces::default(),
                stops: StopStrings::new(&w.options.stop),
                sampler,
                options: w.options,
                waited: w.submitted.elapsed(),
                started: Instant::now(),
                first_token: None,
            });
        }
        Ok(())
    }
}

/// Ends `active`: the text still held back (an incomplete character, or what could have
/// begun a stop string; nothing after a stop string), then `Finished`.
fn finish(mut active: Active, mut reason: StopReason, events: &mut Vec<EngineEvent>) {
    let mut rest = String::new();
    if reason != StopReason::StopString {
        let checked = active.stops.push(&active.text.finish());
        if checked.stopped {
            reason = StopReason::StopString;
        }
        rest = checked.text;
    }
    rest.push_str(&active.stops.finish());
    if !rest.is_empty() {
        events.push(EngineEvent::Text {
            id: active.id,
            text: rest,
        });
    }
    let timings = active.timings();
    events.push(EngineEvent::Finished {
        id: active.id,
        reason,
        tokens: active.generated,
        prompt_tokens: active.prompt.len(),
        timings,
    });
}
