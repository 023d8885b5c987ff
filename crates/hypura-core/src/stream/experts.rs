//! The expert cache: expert tensors ([`crate::plan::Placement::ExpertSlices`]) live in their
//! own reserved pages, of which only some experts' slices are populated. When a layer's
//! router has picked (the callback sees the selection node computed), the picked slices
//! that are not held are read straight into their place, all at once, and waited for before
//! the layer's expert products run. A batch of many tokens reads each slice it needs once.
//!
//! When the cache's bytes would go over its capacity, slices not picked in this batch make
//! room, the one whose next use is expected furthest ahead first: from its chance of being
//! picked by its layer's next request (measured per layer and expert, decayed over the
//! layer's requests) and how soon its layer comes ([`super::heat::ExpertHeat`]). Replayed
//! on traces (`hypura expert-sim`), this beat global LRU
//! (which evicts exactly the layer needed next once a token's experts outgrow the cache), an
//! even per-layer share with LRU inside, and hypura's previous policy (predicting that a
//! layer repeats its last picks), most where routing is near-uniform.
//!
//! While the cache has room, a background reader fills it with slices not held yet, the
//! hottest first when a saved profile gave chances at load (then layer by layer), so that
//! experts no token has picked before are often there when one does; it never evicts to do
//! so. A slice it is still reading counts as held, is not evicted, and is waited for when a
//! batch needs it.
//!
//! A slice's pages are handed back with `MADV_DONTNEED` when it is evicted: the pages wholly
//! inside it, and the pages it shares with a neighbouring slice when that one is not held
//! either (a tensor shares no page with another tensor). hypura's buffer places each expert
//! tensor at the offset within its first page that its bytes have in the file, so a slice's
//! whole pages are read straight into place and only its partial first and last pages are
//! copied.

use std::collections::HashMap;
use std::sync::Arc;

use crate::io::{Completion, ReadPool, ReadRequest};
use crate::memory::{release_pages, PAGE_BYTES};

use super::heat::{ExpertHeat, LayerChances};
use super::StreamFailure;

/// One expert tensor: `n_expert` slices of `slice_bytes`, the file's and memory's alike.
#[derive(Debug, Clone, Copy)]
struct ExpertTensor {
    /// Its memory (page-aligned), where slice `e` starts at `e * slice_bytes`.
    base: usize,
    layer: u32,
    file_offset: u64,
    slice_bytes: usize,
    n_expert: u32,
}

/// What the expert cache counted since the last reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExpertCounters {
    /// Slices a batch needed that were held.
    pub hits: u64,
    /// Slices a batch needed that were read.
    pub misses: u64,
    /// Bytes read for them.
    pub bytes_read: u64,
    /// Slices evicted to make room.
    pub evictions: u64,
    /// Slices a batch needed that the background reader had read (or was reading): counted
    /// in `hits` too.
    pub filled_hits: u64,
    /// Bytes the background reader was asked to read (in flight ones included).
    pub filled_bytes: u64,
    /// Bytes read ahead for experts predicted to be picked (in flight ones included).
    pub prefetch_bytes: u64,
    /// Slices read ahead that the layer's next request picked (counted in `hits` too).
    pub prefetch_hits: u64,
    /// Bytes read ahead for slices the layer's next request did not pick, or evicted first.
    pub prefetch_wasted_bytes: u64,
}

/// One layer's expert-cache counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ExpertLayerStats {
    /// The layer.
    pub layer: u32,
    /// Slices a batch needed that were held.
    pub hits: u64,
    /// Slices a batch needed that were read.
    pub misses: u64,
    /// Bytes read for them.
    pub bytes_read: u64,
    /// Slices read ahead that the layer's next request picked.
    pub prefetch_hits: u64,
    /// Bytes read ahead for slices it did not pick.
    pub prefetch_wasted_bytes: u64,
}

/// Most batches the request trace keeps (beyond, it stops recording).
const MAX_TRACE: usize = 1 << 17;

/// One batch's request to the expert cache: the experts a layer's router picked (all of
/// the layer's when the graph read its experts otherwise).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ExpertRequest {
    /// The layer.
    pub layer: u32,
    /// The distinct experts picked, in the order first picked.
    pub experts: Vec<u32>,
}

/// Most bytes the background reader has in flight at once.
const FILL_BATCH_BYTES: u64 = 64 << 20;

/// The held slices and where every expert tensor is.
#[derive(Debug, Default)]
pub(crate) struct ExpertCache {
    capacity: u64,
    held: u64,
    tensors: Vec<ExpertTensor>,
    by_layer: HashMap<u32, Vec<usize>>,
    by_address: HashMap<usize, usize>,
    /// Held slices (tensor index, expert) with the clock of their last use.
    last_use: HashMap<(usize, u32), u64>,
    clock: u64,
    /// Layers whose selection this graph has served, with the selection node's address.
    ready: HashMap<u32, usize>,
    counters: ExpertCounters,
    /// Slices the background reader is reading (held, not evictable), with its completion.
    pending: HashMap<(usize, u32), Arc<Completion>>,
    /// Slices the background reader read that no batch has needed yet.
    filled: std::collections::HashSet<(usize, u32)>,
    /// Where the background reader goes on: (tensor index, expert).
    fill_cursor: (usize, u32),
    /// The requests since the counters were reset.
    trace: Vec<ExpertRequest>,
    /// Per-layer counts since the counters were reset.
    per_layer: HashMap<u32, ExpertLayerStats>,
    /// Measured use: what stays.
    heat: ExpertHeat,
    /// Slices the background reader reads first (hottest first, from a saved profile).
    fill_first: std::collections::VecDeque<(usize, u32)>,
    /// Slices read ahead, predicted for their layer's next request, not requested since.
    prefetched: std::collections::HashSet<(usize, u32)>,
    /// Each layer's predicted experts not requested since (read ahead or not).
    predicted: HashMap<u32, Vec<u32>>,
    /// The share of predicted experts that their layer's next request picked, among those
    /// not held when predicted, as a moving average from 0: reading ahead starts only once
    /// predictions have proven right.
    prefetch_precision: f64,
}

/// Below this measured precision, reading ahead costs more than it saves: predictions are
/// still made and checked (reading nothing), and reading ahead resumes once they improve.
const PREFETCH_MIN_PRECISION: f64 = 0.4;
/// The weight of each checked prediction in the precision's moving average.
const PRECISION_STEP: f64 = 0.05;

/// A slice read ahead may take the place of one whose chance of being picked by its
/// layer's next request is below this (never of one more likely).
const PREFETCH_EVICTS_BELOW: f64 = 0.5;

/// `[start, end)` widened to whole pages.
fn page_span(start: usize, end: usize) -> (usize, usize) {
    (
        start / PAGE_BYTES * PAGE_BYTES,
        end.div_ceil(PAGE_BYTES) * PAGE_BYTES,
    )
}

impl ExpertCache {
    /// A cache of at most `capacity` bytes of slices (counted in whole pages).
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            ..Self::default()
        }
    }

    /// True when the model has expert tensors read slice by slice.
    pub fn is_active(&self) -> bool {
        !self.tensors.is_empty()
    }

    /// Adds an expert tensor of layer `layer` at `base` (on pages of its own),
    /// `n_expert` slices of `slice_bytes` starting at `file_offset` in the file.
    pub fn register(
        &mut self,
        base: usize,
        layer: u32,
        file_offset: u64,
        slice_bytes: usize,
        n_expert: u32,
    ) {
        let index = self.tensors.len();
        self.tensors.push(ExpertTensor {
            base,
            layer,
            file_offset,
            slice_bytes,
            n_expert,
        });
        self.by_layer.entry(layer).or_default().push(index);
        self.by_address.insert(base, index);
        self.heat.add_layer(layer);
    }

    /// Starts measured use from a saved profile's `chances`: the background reader reads
    /// the hottest slices first.
    pub fn start_from(&mut self, chances: &[LayerChances]) {
        self.heat.load(chances);
        let mut order: Vec<((usize, u32), f64)> = (0..self.tensors.len())
            .flat_map(|t| (0..self.tensors[t].n_expert).map(move |e| (t, e)))
            .map(|(t, e)| ((t, e), self.heat.chance(self.tensors[t].layer, e)))
            .filter(|(_, c)| *c > 0.0)
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        self.fill_first = order.into_iter().map(|(k, _)| k).collect();
    }

    /// Measured use now, per layer, for a profile, and the requests it was measured over.
    pub fn chances(&self) -> (Vec<LayerChances>, u64) {
        (self.heat.chances(), self.heat.requests())
    }

    /// True when layer `layer` has expert tensors registered.
    pub fn has_layer(&self, layer: u32) -> bool {
        self.by_layer.contains_key(&layer)
    }

    /// The layer of the expert tensor whose memory starts at `base`, if it is one.
    pub fn layer_of(&self, base: usize) -> Option<u32> {
        self.by_address.get(&base).map(|&i| self.tensors[i].layer)
    }

    /// The experts of the layer with the most.
    fn n_expert(&self, layer: u32) -> u32 {
        self.by_layer
            .get(&layer)
            .into_iter()
            .flatten()
            .map(|&i| self.tensors[i].n_expert)
            .max()
            .unwrap_or(0)
    }

    /// Bytes of held memory slice `e` of tensor `t` counts for.
    fn slice_pages(&self, t: usize, e: u32) -> u64 {
        let r = self.read_of(t, e);
        let (lo, hi) = page_span(r.dst, r.dst + r.len);
        (hi - lo) as u64
    }

    /// The read that brings slice `e` of tensor `t` into its place.
    fn read_of(&self, t: usize, e: u32) -> ReadRequest {
        let x = &self.tensors[t];
        ReadRequest {
            dst: x.base + e as usize * x.slice_bytes,
            len: x.slice_bytes,
            offset: x.file_offset + e as u64 * x.slice_bytes as u64,
        }
    }

    /// Stops counting slice `k` as held (its pages are the caller's business).
    fn forget(&mut self, k: (usize, u32)) {
        if self.last_use.remove(&k).is_some() {
            self.held = self.held.saturating_sub(self.slice_pages(k.0, k.1));
        }
        self.filled.remove(&k);
        if self.prefetched.remove(&k) {
            self.counters.prefetch_wasted_bytes += self.tensors[k.0].slice_bytes as u64;
        }
    }

    /// Forgets which layers this graph served (a new graph starts).
    pub fn begin_graph(&mut self) {
        self.ready.clear();
    }

    /// The selection node that served `layer` in this graph, if one did.
    pub fn served(&self, layer: u32) -> Option<usize> {
        self.ready.get(&layer).copied()
    }

    /// Bytes of slices held now.
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// The counters since the last reset.
    pub fn counters(&self) -> ExpertCounters {
        self.counters
    }

    /// Zeroes the counters, once the background reader's reads in flight are done (so that
    /// every byte read from now on is counted from now on).
    pub fn reset_counts(&mut self) {
        self.wait_background();
        self.settle_pending();
        self.counters = ExpertCounters::default();
        self.trace.clear();
        self.per_layer.clear();
    }

    /// Per-layer counts since the counters were reset, by layer.
    pub fn layer_stats(&self) -> Vec<ExpertLayerStats> {
        let mut stats: Vec<ExpertLayerStats> = self.per_layer.values().copied().collect();
        stats.sort_by_key(|s| s.layer);
        stats
    }

    /// The requests since the counters were reset (at most [`MAX_TRACE`]).
    pub fn trace(&self) -> &[ExpertRequest] {
        &self.trace
    }

    /// Bytes of one expert of one layer: its slice of every expert tensor of the layer (the
    /// largest over the layers).
    pub fn unit_bytes(&self) -> u64 {
        self.by_layer
            .values()
            .map(|ts| {
                ts.iter()
                    .map(|&t| self.tensors[t].slice_bytes as u64)
                    .sum::<u64>()
            })
            .max()
            .unwrap_or(0)
    }

    /// Makes the slices of `experts` (every expert of the layer when `None`) of every expert
    /// tensor of `layer` held, reading the missing ones through `pool` and waiting for them;
    /// `selection` is the selection node's address. Returns the seconds spent waiting.
    pub fn serve(
        &mut self,
        layer: u32,
        experts: Option<&[u32]>,
        selection: usize,
        pool: &ReadPool,
    ) -> Result<f64, StreamFailure> {
        let n_expert = self.n_expert(layer);
        let all: Vec<u32>;
        let experts = match experts {
            Some(e) => e,
            None => {
                all = (0..n_expert).collect();
                &all
            }
        };
        if let Some(bad) = experts.iter().find(|&&e| e >= n_expert) {
            return Err(StreamFailure::Graph(format!(
                "layer {layer} selected expert {bad} of {n_expert}"
            )));
        }
        if self.trace.len() < MAX_TRACE {
            self.trace.push(ExpertRequest {
                layer,
                experts: experts.to_vec(),
            });
        }
        self.heat.record(layer, experts);
        let (prefetch_hits, prefetch_wasted) = self.settle_prefetched(layer, experts);
        self.clock += 1;
        let clock = self.clock;
        let tensors = self.by_layer.get(&layer).cloned().unwrap_or_default();
        let mut missing = Vec::new();
        let mut filling: Vec<Arc<Completion>> = Vec::new();
        for &t in &tensors {
            for &e in experts {
                match self.last_use.get_mut(&(t, e)) {
                    Some(used) => {
                        *used = clock;
                        self.counters.hits += 1;
                        if self.filled.remove(&(t, e)) {
                            self.counters.filled_hits += 1;
                        }
                        if let Some(c) = self.pending.get(&(t, e)) {
                            if !filling.iter().any(|f| Arc::ptr_eq(f, c)) {
                                filling.push(Arc::clone(c));
                            }
                        }
                    }
                    None => missing.push((t, e)),
                }
            }
        }
        let started = std::time::Instant::now();
        for c in &filling {
            c.wait().map_err(StreamFailure::from)?;
        }
        let mut waited = if filling.is_empty() {
            0.0
        } else {
            started.elapsed().as_secs_f64()
        };
        self.settle_pending();
        for &(t, e) in &missing {
            let bytes = self.slice_pages(t, e);
            while self.held + bytes > self.capacity {
                if let Err(e) = self.evict_one(clock, &missing) {
                    // The background reader's slices in flight cannot go: let it finish.
                    if self.pending.is_empty() {
                        return Err(e);
                    }
                    self.wait_background();
                    self.settle_pending();
                }
            }
            self.held += bytes;
            self.last_use.insert((t, e), clock);
        }
        let reads: Vec<ReadRequest> = missing.iter().map(|&(t, e)| self.read_of(t, e)).collect();
        let bytes_read = reads.iter().map(|r| r.len as u64).sum::<u64>();
        let hits = (tensors.len() * experts.len() - missing.len()) as u64;
        self.counters.misses += missing.len() as u64;
        self.counters.bytes_read += bytes_read;
        let of_layer = self.per_layer.entry(layer).or_insert(ExpertLayerStats {
            layer,
            ..ExpertLayerStats::default()
        });
        of_layer.hits += hits;
        of_layer.misses += missing.len() as u64;
        of_layer.bytes_read += bytes_read;
        of_layer.prefetch_hits += prefetch_hits;
        of_layer.prefetch_wasted_bytes += prefetch_wasted;
        self.ready.insert(layer, selection);
        if !reads.is_empty() {
            // SAFETY: each destination is a slice of an expert tensor's own pages that no
            // other read targets (each missing slice once; the background reader's slices
            // are held, so never missing) and that no graph node reads before this returns:
            // the callback runs between node batches and waits right here.
            let completion = unsafe { pool.submit(&reads) };
            let started = std::time::Instant::now();
            if let Err(failure) = completion.wait() {
                // Not held after all: a later batch reads them again (and reports again).
                for &k in &missing {
                    self.forget(k);
                }
                return Err(failure.into());
            }
            waited += started.elapsed().as_secs_f64();
        }
        Ok(waited)
    }

    /// Counts the slices read ahead for `layer` now that its request picked `experts`:
    /// (picked, bytes of those not picked; they stay held either way), and checks the
    /// layer's last prediction against the picks (the precision that gates reading ahead).
    fn settle_prefetched(&mut self, layer: u32, experts: &[u32]) -> (u64, u64) {
        let tensors = self.by_layer.get(&layer).cloned().unwrap_or_default();
        let (mut hits, mut wasted) = (0u64, 0u64);
        for t in tensors {
            for e in 0..self.tensors[t].n_expert {
                if self.prefetched.remove(&(t, e)) {
                    if experts.contains(&e) {
                        hits += 1;
                    } else {
                        wasted += self.tensors[t].slice_bytes as u64;
                    }
                }
            }
        }
        self.counters.prefetch_hits += hits;
        self.counters.prefetch_wasted_bytes += wasted;
        if let Some(predicted) = self.predicted.remove(&layer) {
            for e in predicted {
                let hit = if experts.contains(&e) { 1.0 } else { 0.0 };
                self.prefetch_precision += PRECISION_STEP * (hit - self.prefetch_precision);
            }
        }
        (hits, wasted)
    }

    /// Reads ahead the slices of `experts` of `layer` (predicted for its next request) that
    /// are not held, through `pool`, without waiting: into free room, or in place of slices
    /// less likely to be picked (below [`PREFETCH_EVICTS_BELOW`]) and not in use by the
    /// request being served. Stops where no such room is left.
    pub fn prefetch(&mut self, layer: u32, experts: &[u32], pool: &ReadPool) {
        // The prediction is checked against the layer's next request whether or not it is
        // read: only experts not held count (those held cost nothing either way).
        let tensors = self.by_layer.get(&layer).cloned().unwrap_or_default();
        let unheld: Vec<u32> = experts
            .iter()
            .copied()
            .filter(|&e| {
                tensors
                    .iter()
                    .any(|&t| !self.last_use.contains_key(&(t, e)))
            })
            .collect();
        self.predicted.insert(layer, unheld);
        if self.prefetch_precision < PREFETCH_MIN_PRECISION {
            return;
        }
        self.settle_pending();
        let clock = self.clock;
        let mut batch = Vec::new();
        'slices: for &e in experts {
            for &t in &tensors {
                if e >= self.tensors[t].n_expert || self.last_use.contains_key(&(t, e)) {
                    continue;
                }
                let bytes = self.slice_pages(t, e);
                while self.held + bytes > self.capacity {
                    if !self.evict_unlikely(clock, &batch) {
                        break 'slices;
                    }
                }
                self.held += bytes;
                // Not used yet: as old as anything else in its layer once this request ends.
                self.last_use.insert((t, e), clock.saturating_sub(1));
                self.prefetched.insert((t, e));
                batch.push((t, e));
            }
        }
        if batch.is_empty() {
            return;
        }
        self.counters.prefetch_bytes += self.read_pending(batch, pool);
    }

    /// Evicts the held slice least worth keeping, if its chance is below
    /// [`PREFETCH_EVICTS_BELOW`] and it is neither in use at `clock`, nor being read, nor in
    /// `incoming`; false when there is none.
    fn evict_unlikely(&mut self, clock: u64, incoming: &[(usize, u32)]) -> bool {
        match self.least_worth_keeping(clock, incoming) {
            Some(k) if self.heat.chance(self.tensors[k.0].layer, k.1) < PREFETCH_EVICTS_BELOW => {
                self.release(k);
                true
            }
            _ => false,
        }
    }

    /// The held slice least worth keeping by measured use (see the module's notes) among
    /// those neither used at `clock`, nor being read, nor in `incoming`.
    fn least_worth_keeping(&self, clock: u64, incoming: &[(usize, u32)]) -> Option<(usize, u32)> {
        self.last_use
            .iter()
            .filter(|(k, used)| {
                **used < clock && !incoming.contains(k) && !self.pending.contains_key(k)
            })
            .map(|(k, _)| (*k, self.heat.keep_score(self.tensors[k.0].layer, k.1)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
            .map(|(k, _)| k)
    }

    /// Forgets the background reader's finished slices (they are held like any other); a
    /// slice it failed to read is dropped, so that a batch needing it reads it again and
    /// reports the failure.
    fn settle_pending(&mut self) {
        let done: Vec<((usize, u32), bool)> = self
            .pending
            .iter()
            .filter(|(_, c)| c.is_done())
            .map(|(k, c)| (*k, c.wait().is_ok()))
            .collect();
        for (k, ok) in done {
            self.pending.remove(&k);
            if !ok {
                self.forget(k);
            }
        }
    }

    /// While the cache has room and the background reader is idle, starts it on the next
    /// slices not held (up to [`FILL_BATCH_BYTES`], layer by layer), through `pool`.
    pub fn fill(&mut self, pool: &ReadPool) {
        self.settle_pending();
        if !self.pending.is_empty() || self.tensors.is_empty() {
            return;
        }
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let total: usize = self.tensors.iter().map(|t| t.n_expert as usize).sum();
        let mut visited = 0usize;
        while visited < total && batch_bytes < FILL_BATCH_BYTES {
            let (t, e) = match self.fill_first.pop_front() {
                Some(hot) => hot,
                None => {
                    let next = self.fill_cursor;
                    self.fill_cursor = if next.1 + 1 < self.tensors[next.0].n_expert {
                        (next.0, next.1 + 1)
                    } else {
                        ((next.0 + 1) % self.tensors.len(), 0)
                    };
                    visited += 1;
                    next
                }
            };
            if self.last_use.contains_key(&(t, e)) {
                continue;
            }
            let bytes = self.slice_pages(t, e);
            if self.held + bytes > self.capacity {
                self.fill_first.clear();
                break; // no room: the reader never evicts
            }
            self.held += bytes;
            // Older than any use: the first to go within its layer.
            self.last_use.insert((t, e), 0);
            self.filled.insert((t, e));
            batch_bytes += bytes;
            batch.push((t, e));
        }
        if batch.is_empty() {
            return;
        }
        self.counters.filled_bytes += self.read_pending(batch, pool);
    }

    /// Starts reading `batch` (slices just counted as held, not held before) through `pool`
    /// without waiting: they are pending until read. Returns the bytes asked for.
    fn read_pending(&mut self, batch: Vec<(usize, u32)>, pool: &ReadPool) -> u64 {
        let reads: Vec<ReadRequest> = batch.iter().map(|&(t, e)| self.read_of(t, e)).collect();
        // SAFETY: each destination is a slice of an expert tensor's own pages, not held
        // before (so no node reads it and no other read targets it); it is held and pending
        // from now on, so it is neither evicted nor read again, and every batch that needs
        // it waits for this completion first.
        let completion = unsafe { pool.submit(&reads) };
        for k in batch {
            self.pending.insert(k, Arc::clone(&completion));
        }
        reads.iter().map(|r| r.len as u64).sum()
    }

    /// Waits for the background reader (its reads write into the model's memory).
    pub fn wait_background(&self) {
        for c in self.pending.values() {
            let _ = c.wait();
        }
    }

    /// Evicts a slice not used at `clock` nor about to be read (`incoming`), the one least
    /// worth keeping by measured use (see the module's notes); hands back its pages.
    fn evict_one(&mut self, clock: u64, incoming: &[(usize, u32)]) -> Result<(), StreamFailure> {
        let Some(k) = self.least_worth_keeping(clock, incoming) else {
            return Err(StreamFailure::Graph(format!(
                "the expert cache ({} bytes) cannot hold one batch's experts",
                self.capacity
            )));
        };
        self.release(k);
        Ok(())
    }

    /// Evicts slice `k`: forgets it and hands back its pages.
    fn release(&mut self, (t, e): (usize, u32)) {
        self.forget((t, e));
        self.counters.evictions += 1;
        let n_expert = self.tensors[t].n_expert;
        let slice = self.read_of(t, e);
        let (start, end) = (slice.dst, slice.dst + slice.len);
        let held = |n: u32| self.last_use.contains_key(&(t, n));
        // Pages shared with a held neighbour stay; the tensor's first and last pages are its
        // own.
        let lo = if e == 0 || !held(e - 1) {
            start / PAGE_BYTES * PAGE_BYTES
        } else {
            start.div_ceil(PAGE_BYTES) * PAGE_BYTES
        };
        let hi = if e + 1 >= n_expert || !held(e + 1) {
            end.div_ceil(PAGE_BYTES) * PAGE_BYTES
        } else {
            end / PAGE_BYTES * PAGE_BYTES
        };
        if lo < hi {
            // SAFETY: the pages lie inside the expert tensor's own pages and hold no byte of
            // a held slice (shared pages with held neighbours are excluded); no read targets
            // them (the evicted slice is not being read) and no node reads it before it is
            // read again.
            unsafe { release_pages(lo as *mut u8, hi - lo) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::ModelFile;
    use crate::memory::ReservedMemory;

    /// Slices of 10 000 bytes (not a page multiple: neighbours share pages).
    const SLICE: usize = 10_000;

    /// Two layers of one expert tensor each (4 experts), in a file whose byte `i` is `i % 251`:
    /// the cache, its memory, the file's pool and the file.
    /// `name` keeps each test's file its own (tests run in parallel).
    fn setup(
        name: &str,
        capacity: u64,
    ) -> (ExpertCache, ReservedMemory, ReadPool, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("hypura-experts-test-{}-{name}", std::process::id()));
        let bytes: Vec<u8> = (0..2 * 4 * SLICE).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = Arc::new(ModelFile::open(&path).unwrap());
        let pool = ReadPool::new(file, 2, 4096).unwrap();
        // Each tensor on its own pages, as in hypura's buffer.
        let tensor_bytes = (4 * SLICE).div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let memory = ReservedMemory::new(2 * tensor_bytes).unwrap();
        let mut cache = ExpertCache::new(capacity);
        for layer in 0..2u32 {
            let base = memory.base() as usize + layer as usize * tensor_bytes;
            cache.register(base, layer, (layer as usize * 4 * SLICE) as u64, SLICE, 4);
        }
        (cache, memory, pool, path)
    }

    /// The bytes of expert `e` of `layer` in memory equal the file's.
    fn holds(memory: &ReservedMemory, layer: usize, e: usize) -> bool {
        let tensor_bytes = (4 * SLICE).div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let start = layer * tensor_bytes + e * SLICE;
        let file_start = (layer * 4 + e) * SLICE;
        // SAFETY: inside the reservation; nothing writes it meanwhile (no reads in flight).
        let got = unsafe { std::slice::from_raw_parts(memory.base().add(start), SLICE) };
        got.iter()
            .enumerate()
            .all(|(i, b)| *b == ((file_start + i) % 251) as u8)
    }

    #[test]
    fn picked_slices_land_in_place_and_the_stale_go_first() {
        // Room for 4 slices (each counts the 3 or 4 pages it touches).
        let (mut cache, memory, pool, path) = setup("in-place", 4 * 4 * PAGE_BYTES as u64);
        cache.serve(0, Some(&[1, 2]), 1, &pool).unwrap();
        cache.serve(1, Some(&[0, 3]), 2, &pool).unwrap();
        assert!(holds(&memory, 0, 1) && holds(&memory, 0, 2));
        assert!(holds(&memory, 1, 0) && holds(&memory, 1, 3));
        assert_eq!(cache.counters().misses, 4);
        // The next token repeats layer 0's picks: hits, nothing read.
        cache.serve(0, Some(&[1, 2]), 1, &pool).unwrap();
        assert_eq!((cache.counters().hits, cache.counters().misses), (2, 4));
        // Layer 1 keeps expert 0 and picks 2 instead of 3: something must go. Its expert 3
        // was predicted for this very request and not picked (stale): it goes before layer
        // 0's, which are predicted again at the next request.
        cache.serve(1, Some(&[0, 2]), 2, &pool).unwrap();
        assert_eq!(cache.counters().evictions, 1);
        assert!(holds(&memory, 1, 0) && holds(&memory, 1, 2));
        assert!(holds(&memory, 0, 1) && holds(&memory, 0, 2));
        assert!(!cache.last_use.contains_key(&(1, 3)));
        assert!(cache.held_bytes() <= 4 * 4 * PAGE_BYTES as u64);
        // An expert out of range is refused, not read.
        assert!(cache.serve(0, Some(&[4]), 1, &pool).is_err());
        // The trace has every request served (not the refused one).
        assert_eq!(cache.trace().len(), 4);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn slices_that_fail_to_read_are_not_held() {
        let (mut cache, _memory, pool, path) = setup("failing", 1 << 20);
        cache.serve(0, Some(&[0]), 1, &pool).unwrap();
        let held = cache.held_bytes();
        // Layer 1's slices now lie past the end of the file.
        std::fs::write(&path, vec![0u8; 4 * SLICE]).unwrap();
        assert!(cache.serve(1, Some(&[1, 2]), 2, &pool).is_err());
        assert_eq!(cache.held_bytes(), held);
        assert!(!cache.last_use.contains_key(&(1, 1)) && !cache.last_use.contains_key(&(1, 2)));
        // Asked again, they are read again (and fail again), never taken as held.
        assert!(cache.serve(1, Some(&[1]), 2, &pool).is_err());
        assert_eq!(cache.counters().hits, 0);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn the_background_reader_fills_free_room_and_waits_when_needed() {
        let (mut cache, memory, pool, path) = setup("filling", 1 << 20);
        cache.fill(&pool);
        cache.wait_background();
        // Everything fits: every slice read once, in place, none by a batch.
        for layer in 0..2 {
            for e in 0..4 {
                assert!(holds(&memory, layer, e), "layer {layer} expert {e}");
            }
        }
        cache.serve(1, Some(&[3]), 1, &pool).unwrap();
        let c = cache.counters();
        assert_eq!((c.hits, c.misses, c.filled_hits), (1, 0, 1));
        assert_eq!(c.filled_bytes, 8 * SLICE as u64);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn predictions_are_read_ahead_once_they_prove_right() {
        let (mut cache, memory, pool, path) = setup("ahead", 1 << 20);
        // No prediction checked yet: it is recorded, nothing is read.
        cache.prefetch(1, &[2], &pool);
        assert_eq!(cache.counters().prefetch_bytes, 0);
        cache.serve(1, Some(&[2]), 1, &pool).unwrap();
        // One right prediction: the precision moved up one step from 0 (reading ahead starts
        // at 0.4, about ten right predictions in a row).
        assert!((cache.prefetch_precision - PRECISION_STEP).abs() < 1e-12);
        // Proven right: experts 0 and 3 of layer 0 are read ahead, in place.
        cache.prefetch_precision = 1.0;
        cache.prefetch(0, &[0, 3], &pool);
        cache.wait_background();
        assert!(holds(&memory, 0, 0) && holds(&memory, 0, 3));
        assert_eq!(cache.counters().prefetch_bytes, 2 * SLICE as u64);
        // The layer picks 0 (a hit, read ahead) and 1 (a miss); 3 was read for nothing.
        cache.serve(0, Some(&[0, 1]), 2, &pool).unwrap();
        let c = cache.counters();
        assert_eq!(
            (c.prefetch_hits, c.prefetch_wasted_bytes),
            (1, SLICE as u64)
        );
        assert_eq!((c.hits, c.misses), (1, 2));
        assert!((cache.prefetch_precision - (1.0 - PRECISION_STEP)).abs() < 1e-12);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn page_spans_cover_whole_pages() {
        assert_eq!(page_span(0, 1), (0, PAGE_BYTES));
        assert_eq!(
            page_span(PAGE_BYTES, 2 * PAGE_BYTES),
            (PAGE_BYTES, 2 * PAGE_BYTES)
        );
        assert_eq!(page_span(10, PAGE_BYTES + 1), (0, 2 * PAGE_BYTES));
    }
}
