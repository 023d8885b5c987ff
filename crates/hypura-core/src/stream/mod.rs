//! Streaming: the executor of the read-ahead policy ([`policy`]) over the reader pool, the
//! window memory and the model's tensors, driven by llama.cpp's evaluation callback
//! ([`callback`], the only code that sees graph nodes). The input embedding streams only
//! the rows a batch looks up ([`rows`]); a head too large for the budget is computed by
//! hypura chunk by chunk ([`head`]). Uses and reads are counted per tensor ([`track`]).
//!
//! Groups are read into the *window*: one region of memory, the size of the plan's window,
//! used as a ring in queue order. Its pages are faulted in once and reused for every group,
//! and a group's tensors are pointed (`tensor->data`) at their place in it when its reads are
//! queued. Reading into fresh pages instead (faulting and zeroing every 4 KiB, then
//! `MADV_DONTNEED`) cost about as much CPU as the reads themselves (BENCHMARKS.md notes). A
//! group that does not fit the window (read out of the planned order) is read into its
//! tensors' own reserved pages and released with `MADV_DONTNEED`.

pub(crate) mod callback;
pub(crate) mod experts;
mod groups;
pub(crate) mod head;
pub(crate) mod heat;
pub(crate) mod policy;
mod prefetch;
pub(crate) use prefetch::RouterRows;
pub(crate) mod rows;
pub(crate) mod track;

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) use groups::GroupReads;

use crate::io::{Completion, ModelFile, ReadError, ReadPool, ReadRequest};
use crate::memory::{release_pages, ReservedMemory};
use crate::plan::Placement;
use crate::sys;
use policy::{Action, GroupSize, Policy, Slot};
use track::{AccessTracker, TensorAccess};

/// Rows of a tensor read on demand: row `i` is `row_bytes` at `file_offset + i * row_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RowSource {
    pub file_offset: u64,
    pub row_bytes: u64,
    pub n_rows: u64,
}

/// What the runtime knows of one of the model's tensors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackedTensor {
    /// The plan's placement.
    pub placement: Placement,
    /// For rows on demand: where they are.
    pub rows: Option<RowSource>,
    /// Its slot in the access tracker.
    pub slot: usize,
}

/// Why streaming failed during a decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamFailure {
    /// A read failed.
    Io(String),
    /// The model file changed under the running model.
    Changed(String),
    /// The graph did something hypura cannot serve.
    Graph(String),
}

impl From<ReadError> for StreamFailure {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(m) => StreamFailure::Io(m),
            ReadError::Changed(m) => StreamFailure::Changed(m),
        }
    }
}

/// Numbers the streamer keeps for the statistics.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamCounters {
    /// Most weight bytes held for streaming at once: the part of the window used so far (its
    /// pages stay mapped), groups read into their own pages, and embedding rows.
    pub peak_window_bytes: u64,
    /// Groups whose reads had to be issued when already needed (not prefetched).
    pub late_groups: u64,
    /// Times a group was needed out of the planned order.
    pub out_of_order: u64,
    /// Seconds spent waiting for reads inside the graph.
    pub wait_s: f64,
    /// The expert cache's hits, misses and bytes read.
    pub experts: experts::ExpertCounters,
    /// Seconds the reader threads spent inside reads, summed over threads.
    pub reader_busy_s: f64,
    /// Reader threads.
    pub reader_threads: usize,
}

/// The buffers llama.cpp computes in, as seen in the graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ObservedBuffers {
    /// The KV cache's buffers.
    pub kv_cache_bytes: u64,
    /// The compute (activation) buffers.
    pub compute_bytes: u64,
}

/// The streamer's state; the evaluation callback's user data.
pub(crate) struct Streamer {
    file: Arc<ModelFile>,
    pool: ReadPool,
    policy: Policy,
    groups: Vec<GroupReads>,
    group_slots: Vec<Vec<usize>>,
    group_layouts: Vec<Vec<usize>>,
    completions: Vec<Option<Arc<Completion>>>,
    window: Option<ReservedMemory>,
    tensors: HashMap<usize, TrackedTensor>,
    rows: rows::RowsHeld,
    head: Option<head::StreamedHead>,
    /// Node names hooked (from the architecture spec).
    head_input_node: &'static str,
    kv_cache_prefixes: &'static [&'static str],
    error: Option<StreamFailure>,
    tracker: AccessTracker,
    counters: StreamCounters,
    /// The pool's busy seconds when the counters were last reset.
    reader_busy_at_reset: f64,
    /// Buffers seen in the graph: (address, bytes), KV cache and compute separately.
    kv_buffers: Vec<(usize, u64)>,
    compute_buffers: Vec<(usize, u64)>,
    experts: experts::ExpertCache,
    /// The expert cache's background reader (one thread, so that a batch's own reads are
    /// never queued behind it).
    fill_pool: Option<ReadPool>,
    selected_experts_node: &'static str,
    /// Each layer's router in host memory, for predicting experts ahead.
    routers: HashMap<u32, HostRouter>,
    /// The addresses of the routers that are the model's own host tensors, to tell a router
    /// among a node's sources.
    router_addresses: std::collections::HashSet<usize>,
}

/// A layer's router where the CPU can multiply with it.
enum HostRouter {
    /// The model's tensor (its address), resident in host memory.
    Tensor(usize),
    /// A copy of a router a GPU holds (the layer's attention and router run there, its
    /// experts on the CPU), taken once after loading.
    Copy(RouterRows<Vec<u8>>),
}

// SAFETY: the raw addresses inside (tensors, buffers, window memory) are only dereferenced
// by the thread that runs the graph or decodes, one at a time (the streamer sits behind a
// Mutex), while the model they belong to is alive; reader threads own their requests'
// destinations until the completion is done.
unsafe impl Send for Streamer {}

/// How the streamer is set up (from the plan and the loaded model).
pub(crate) struct StreamerSetup {
    pub file: Arc<ModelFile>,
    pub io_threads: usize,
    pub request_bytes: usize,
    pub groups: Vec<GroupReads>,
    pub depth: usize,
    pub window_limit: u64,
    pub head: Option<head::StreamedHead>,
    pub head_input_node: &'static str,
    pub kv_cache_prefixes: &'static [&'static str],
    pub expert_cache_bytes: u64,
    pub selected_experts_node: &'static str,
}

impl Streamer {
    /// A streamer over `setup.groups`, holding at most `setup.window_limit` bytes of them at
    /// once.
    pub fn new(setup: StreamerSetup) -> std::io::Result<Self> {
        let StreamerSetup {
            file,
            io_threads,
            request_bytes,
            groups,
            depth,
            window_limit,
            head,
            head_input_node,
            kv_cache_prefixes,
            expert_cache_bytes,
            selected_experts_node,
        } = setup;
        let window = if groups.is_empty() || window_limit == 0 {
            None
        } else {
            match ReservedMemory::new(window_limit as usize) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::info!("hypura: no window memory ({e}); reading into fresh pages");
                    None
                }
            }
        };
        let fill_pool = if expert_cache_bytes > 0 {
            Some(ReadPool::new(Arc::clone(&file), 1, request_bytes)?)
        } else {
            None
        };
        let layouts: Vec<(Vec<usize>, usize)> =
            groups.iter().map(GroupReads::window_layout).collect();
        let sizes = groups
            .iter()
            .zip(&layouts)
            .map(|(g, (_, window_bytes))| GroupSize {
                window_bytes: *window_bytes,
                home_bytes: g.home_bytes(),
            })
            .collect();
        let mut tracker = AccessTracker::default();
        let group_slots = groups
            .iter()
            .map(|g| g.names.iter().map(|n| tracker.slot(n)).collect())
            .collect();
        Ok(Self {
            pool: ReadPool::new(Arc::clone(&file), io_threads, request_bytes)?,
            file,
            policy: Policy::new(
                sizes,
                window.as_ref().map(ReservedMemory::size),
                window_limit,
                depth,
            ),
            completions: vec![None; groups.len()],
            group_layouts: layouts.into_iter().map(|(offsets, _)| offsets).collect(),
            groups,
            group_slots,
            window,
            tensors: HashMap::new(),
            rows: rows::RowsHeld::default(),
            head,
            head_input_node,
            kv_cache_prefixes,
            error: None,
            tracker,
            counters: StreamCounters::default(),
            reader_busy_at_reset: 0.0,
            kv_buffers: Vec::new(),
            compute_buffers: Vec::new(),
            experts: experts::ExpertCache::new(expert_cache_bytes),
            fill_pool,
            selected_experts_node,
            routers: HashMap::new(),
            router_addresses: std::collections::HashSet::new(),
        })
    }

    /// Tells the streamer of an expert tensor read slice by slice: see
    /// [`experts::ExpertCache::register`].
    pub fn register_expert_tensor(
        &mut self,
        base: usize,
        layer: u32,
        file_offset: u64,
        slice_bytes: usize,
        n_expert: u32,
    ) {
        self.experts
            .register(base, layer, file_offset, slice_bytes, n_expert);
    }

    /// The expert cache's requests since the counters were reset.
    pub(crate) fn expert_trace(&self) -> &[experts::ExpertRequest] {
        self.experts.trace()
    }

    /// The expert cache's per-layer counts.
    pub(crate) fn expert_layer_stats(&self) -> Vec<experts::ExpertLayerStats> {
        self.experts.layer_stats()
    }

    /// Bytes of one expert of one layer.
    pub(crate) fn expert_unit_bytes(&self) -> u64 {
        self.experts.unit_bytes()
    }

    /// True when the model has expert tensors read slice by slice.
    pub(crate) fn experts_active(&self) -> bool {
        self.experts.is_active()
    }

    /// True when layer `layer` has expert tensors read slice by slice (the layers whose
    /// experts are in GPU memory have none).
    pub(crate) fn experts_sliced_in(&self, layer: u32) -> bool {
        self.experts.has_layer(layer)
    }

    /// The name (before `-{layer}`) of the node holding the selected experts.
    pub(crate) fn selected_experts_node(&self) -> &'static str {
        self.selected_experts_node
    }

    /// The layer of the expert tensor at `base`, if it is one read slice by slice.
    pub(crate) fn expert_layer(&self, base: usize) -> Option<u32> {
        self.experts.layer_of(base)
    }

    /// The selection node that served `layer`'s experts in this graph, if one did.
    pub(crate) fn experts_served(&self, layer: u32) -> Option<usize> {
        self.experts.served(layer)
    }

    /// Makes `experts` (all of the layer's when `None`) of `layer` held: see
    /// [`experts::ExpertCache::serve`].
    pub(crate) fn serve_experts(&mut self, layer: u32, experts: Option<&[u32]>, selection: usize) {
        match self.experts.serve(layer, experts, selection, &self.pool) {
            Ok(waited) => self.counters.wait_s += waited,
            Err(e) => self.fail(e),
        }
        if let Some(pool) = &self.fill_pool {
            self.experts.fill(pool);
        }
        self.note_held();
    }

    /// Starts the expert cache from a saved profile's chances and sets the background
    /// reader on the hottest experts.
    pub(crate) fn start_experts_from(&mut self, chances: &[heat::LayerChances]) {
        self.experts.start_from(chances);
        if let Some(pool) = &self.fill_pool {
            self.experts.fill(pool);
        }
    }

    /// Reads ahead the experts the next layers' routers would pick on the hidden state that
    /// `selection` (layer `layer`'s, just computed on the CPU) was picked from: see
    /// [`prefetch`].
    pub(crate) fn prefetch_after(&mut self, layer: u32, selection: &sys::ggml_tensor) {
        let routers = &self.router_addresses;
        let is_router = |a: usize| routers.contains(&a);
        let Some(input) = prefetch::router_input(selection, &is_router) else {
            return;
        };
        // SAFETY: a source of the live selection node: a live tensor.
        let input = unsafe { &*input };
        self.prefetch_from_input(layer, input, selection.ne[0].max(1) as usize);
    }

    /// Reads ahead the experts the next layers' routers would pick on `input`, layer
    /// `layer`'s router input (the hidden state, in host memory: as computed on the CPU, or
    /// the copy of it the CPU's expert product reads when the router ran on a GPU), with
    /// `n_used` experts a token.
    pub(crate) fn prefetch_from_input(
        &mut self,
        layer: u32,
        input: &sys::ggml_tensor,
        n_used: usize,
    ) {
        if self.routers.is_empty() || self.error.is_some() {
            return;
        }
        let Some(hidden) = prefetch::hidden_state(input, input.ne[0]) else {
            return;
        };
        for next in layer + 1..=layer + prefetch::LOOKAHEAD_LAYERS {
            if !self.experts.has_layer(next) {
                continue;
            }
            let experts = match self.routers.get(&next) {
                // SAFETY: a router tensor of the model, alive as long as the model (and so
                // the streamer), resident in host memory (registered only so) and never
                // written after loading.
                Some(HostRouter::Tensor(router)) => unsafe {
                    prefetch::RouterRows::of_tensor(&*(*router as *const sys::ggml_tensor))
                }
                .and_then(|rows| prefetch::predict(&rows, hidden, n_used)),
                Some(HostRouter::Copy(rows)) => prefetch::predict(rows, hidden, n_used),
                None => None,
            };
            if let Some(experts) = experts {
                self.experts.prefetch(next, &experts, &self.pool);
            }
        }
    }

    /// Keeps `copy`, the router of layer `layer` that a GPU holds, for reading ahead.
    pub(crate) fn register_router_copy(&mut self, layer: u32, copy: RouterRows<Vec<u8>>) {
        self.routers.insert(layer, HostRouter::Copy(copy));
    }

    /// The expert cache's measured use, per layer, and the requests it was measured over.
    pub(crate) fn expert_chances(&self) -> (Vec<heat::LayerChances>, u64) {
        self.experts.chances()
    }

    /// Tells the streamer how `tensor` (named `name` in the statistics) is placed.
    pub fn register(
        &mut self,
        tensor: *mut sys::ggml_tensor,
        name: &str,
        placement: Placement,
        rows: Option<RowSource>,
    ) {
        let slot = self.tracker.slot(name);
        // The read-ahead multiplies a router with the hidden state on the CPU: only a router
        // in host memory serves.
        if let Some(layer) = crate::model::inventory::router_layer(name)
            .filter(|_| placement != Placement::GpuResident)
        {
            self.routers
                .insert(layer, HostRouter::Tensor(tensor as usize));
            self.router_addresses.insert(tensor as usize);
        }
        self.tensors.insert(
            tensor as usize,
            TrackedTensor {
                placement,
                rows,
                slot,
            },
        );
    }

    /// Called before every `llama_decode`: drops the previous batch's embedding rows and
    /// logits, and makes sure the first groups are on their way.
    pub fn begin_decode(&mut self) {
        self.release_rows();
        self.experts.begin_graph();
        if let Some(h) = &mut self.head {
            h.logits_ready = false;
            h.logits.clear();
        }
        let actions = self.policy.start();
        self.run(actions);
    }

    /// The first failure since `begin_decode`, if any. After a failure every group in
    /// flight is dropped, so the next decode reads afresh.
    pub fn take_failure(&mut self) -> Option<StreamFailure> {
        let failure = self.error.take();
        if failure.is_some() {
            let actions = self.policy.release_all();
            self.run(actions);
        }
        failure
    }

    /// Records a failure (the first one wins); the graph stops at the next node.
    pub(crate) fn fail(&mut self, failure: StreamFailure) {
        if self.error.is_none() {
            log::debug!("hypura: streaming failed: {failure:?}");
            self.error = Some(failure);
        }
    }

    /// True while no failure was recorded.
    pub(crate) fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// The file streamed from.
    pub(crate) fn file(&self) -> &ModelFile {
        &self.file
    }

    /// What the runtime knows of the tensor at `address`.
    pub(crate) fn tracked(&self, address: usize) -> Option<TrackedTensor> {
        self.tensors.get(&address).copied()
    }

    /// Starts tracking a weight in one of llama.cpp's own buffers (full residency).
    pub(crate) fn track_resident(&mut self, address: usize, name: &str) -> TrackedTensor {
        let t = TrackedTensor {
            placement: Placement::Resident,
            rows: None,
            slot: self.tracker.slot(name),
        };
        self.tensors.insert(address, t);
        t
    }

    /// Counts one use of a tensor by a graph node.
    pub(crate) fn accessed(&mut self, slot: usize) {
        self.tracker.accessed(slot);
    }

    /// The per-tensor access counts.
    pub fn accesses(&self) -> Vec<TensorAccess> {
        self.tracker.snapshot()
    }

    /// Notes a buffer llama.cpp computes in: the KV cache when `kv`, else activations.
    pub(crate) fn observe_buffer(&mut self, buffer: sys::ggml_backend_buffer_t, kv: bool) {
        if buffer.is_null() {
            return;
        }
        let list = if kv {
            &mut self.kv_buffers
        } else {
            &mut self.compute_buffers
        };
        if list.iter().any(|(b, _)| *b == buffer as usize) {
            return;
        }
        // SAFETY: a live buffer of the graph being computed.
        let size = unsafe { sys::ggml_backend_buffer_get_size(buffer) } as u64;
        list.push((buffer as usize, size));
    }

    /// The KV-cache and compute buffers seen in the graph so far.
    pub fn observed_buffers(&self) -> ObservedBuffers {
        ObservedBuffers {
            kv_cache_bytes: self.kv_buffers.iter().map(|(_, s)| s).sum(),
            compute_bytes: self.compute_buffers.iter().map(|(_, s)| s).sum(),
        }
    }

    /// Names the KV cache's tensors start with.
    pub(crate) fn kv_cache_prefixes(&self) -> &'static [&'static str] {
        self.kv_cache_prefixes
    }

    /// Resets access counts and counters (e.g. after the prompt).
    pub fn reset_counts(&mut self) {
        self.tracker.reset();
        self.experts.reset_counts();
        self.policy.reset_counts();
        // Groups already read ahead for the next tokens count in the new period.
        let ahead: Vec<usize> = self.policy.read_ahead().collect();
        for g in ahead {
            self.count_reads(g);
        }
        self.counters = StreamCounters {
            peak_window_bytes: self.held_bytes(),
            ..Default::default()
        };
        self.reader_busy_at_reset = self.pool.busy_seconds();
    }

    /// Counters for the statistics.
    pub fn counters(&self) -> StreamCounters {
        let counts = self.policy.counts();
        StreamCounters {
            reader_busy_s: self.pool.busy_seconds() - self.reader_busy_at_reset,
            reader_threads: self.pool.threads(),
            late_groups: counts.late_groups,
            out_of_order: counts.out_of_order,
            experts: self.experts.counters(),
            ..self.counters.clone()
        }
    }

    fn held_bytes(&self) -> u64 {
        self.policy.held_bytes() + self.rows.held_bytes() + self.experts.held_bytes()
    }

    fn note_held(&mut self) {
        let held = self.held_bytes();
        self.counters.peak_window_bytes = self.counters.peak_window_bytes.max(held);
    }

    /// Counts group `g`'s reads in the access statistics.
    fn count_reads(&mut self, g: usize) {
        let group = &self.groups[g];
        // A head pass is one read of the head, however many chunks it takes.
        let continues_a_pass = matches!(group.head_rows, Some((first_row, _)) if first_row > 0);
        for (read, slot) in group.reads.iter().zip(&self.group_slots[g]) {
            if continues_a_pass {
                self.tracker.read_more_bytes(*slot, read.len as u64);
            } else {
                self.tracker.read_from_disk(*slot, read.len as u64);
            }
        }
    }

    /// Group `g`'s reads with their destinations where `slot` puts them.
    fn placed_reads(&self, g: usize, slot: Slot) -> Vec<ReadRequest> {
        let group = &self.groups[g];
        match (slot, &self.window) {
            (Slot::Window { start, .. }, Some(window)) => {
                let base = window.base() as usize + start;
                group
                    .reads
                    .iter()
                    .zip(&self.group_layouts[g])
                    .map(|(r, offset)| ReadRequest {
                        dst: base + offset,
                        ..*r
                    })
                    .collect()
            }
            _ => group.reads.clone(),
        }
    }

    /// Where group `g`'s first read goes, while `g` is queued.
    fn first_read_address(&self, g: usize) -> Option<usize> {
        let slot = self.policy.slot_of(g)?;
        self.placed_reads(g, slot).first().map(|r| r.dst)
    }

    /// Makes group `g` current: see [`policy`].
    pub(crate) fn acquire(&mut self, g: usize) {
        let actions = self.policy.acquire(g);
        self.run(actions);
    }

    /// Carries out the policy's actions, in order.
    fn run(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Release { group, slot } => {
                    // Reads still in flight write into memory about to be reused.
                    if let Some(c) = self.completions[group].take() {
                        let _ = c.wait();
                    }
                    if slot == Slot::Home {
                        for r in &self.groups[group].reads {
                            // SAFETY: the group's home pages belong to its tensors alone (each
                            // tensor starts on a page boundary), its reads are done, and no
                            // graph node reads them before the group is acquired again.
                            unsafe { release_pages(r.dst as *mut u8, r.len) };
                        }
                    }
                }
                Action::Submit { group, slot } => {
                    self.count_reads(group);
                    let reads = self.placed_reads(group, slot);
                    for (read, &tensor) in reads.iter().zip(&self.groups[group].tensors) {
                        if tensor != 0 {
                            // SAFETY: a live weight tensor of the model. No graph node that
                            // reads it is computing now (the callback runs between node
                            // batches), and every node that reads it acquires its group
                            // first, which waits for these reads.
                            unsafe {
                                (*(tensor as *mut sys::ggml_tensor)).data = read.dst as *mut _
                            };
                        }
                    }
                    // SAFETY: the policy gives each group in flight its own slot (window
                    // regions never overlap; home pages belong to the group's tensors), and
                    // nothing reads the slot before the group is waited for.
                    let completion = unsafe { self.pool.submit(&reads) };
                    self.completions[group] = Some(completion);
                    self.note_held();
                }
                Action::Wait { group } => {
                    let Some(completion) = self.completions[group].clone() else {
                        continue;
                    };
                    let started = std::time::Instant::now();
                    let waited = !completion.is_done();
                    if let Err(e) = completion.wait() {
                        self.fail(e.into());
                    }
                    if waited {
                        self.counters.wait_s += started.elapsed().as_secs_f64();
                    }
                }
            }
        }
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.experts.wait_background();
        // Wait for reads in flight: they write into memory that is about to be freed.
        for completion in self.completions.iter().flatten() {
            let _ = completion.wait();
        }
    }
}
