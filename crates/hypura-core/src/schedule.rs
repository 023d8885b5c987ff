//! The streaming scheduler, driven by llama.cpp's evaluation callback.
//!
//! Stream groups (a layer's streamed tensors, or a run of LM-head rows) form a cycle that
//! repeats every token. Every node that reads a streamed tensor is claimed, so it computes as
//! the last node of its batch: when the first node of a new group is asked about, every node
//! that read an earlier group has computed. The earlier groups are released at once, the
//! reads for the next groups are queued (up to `prefetch_depth` groups ahead, never past the
//! window), and only then does the node wait for its own group: the readers never sit idle
//! while the graph waits. (Releasing only after the new group's first node computed, as
//! before, left them idle for that node's wait and compute: BENCHMARKS.md notes.)
//!
//! Groups are read into the *window*: one region of memory, the size of the plan's window,
//! used as a ring in queue order. Its pages are faulted in once and reused for every group,
//! and a group's tensors are pointed (`tensor->data`) at their place in the window when its
//! reads are queued. Reading into fresh pages instead (faulting and zeroing every 4 KiB, then
//! `MADV_DONTNEED`) cost about as much CPU as the reads themselves (BENCHMARKS.md notes). A
//! group that does not fit the window (read out of the planned order) is read into its
//! tensors' own reserved pages and released with `MADV_DONTNEED`. The input embedding
//! streams only the rows the batch looks up. When the head is streamed, the graph is stopped
//! after `result_norm` and hypura computes the logits chunk by chunk ([`crate::head`]).

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex};

use crate::head::HeadCompute;
use crate::io::{Completion, ModelFile, ReadPool, ReadRequest};
use crate::sys;
use crate::tier::{pages_bytes, release_pages, ReservedMemory, PAGE_BYTES};
use crate::track::{AccessTracker, TensorAccess};

#[derive(Debug, Clone, Copy)]
struct TrackedTensor {
    usage: TensorRegistration,
    slot: usize,
}

/// A stream group at run time.
#[derive(Debug, Clone)]
pub struct RuntimeGroup {
    /// Reads that fill it, into the tensors' own (home) pages.
    pub reads: Vec<ReadRequest>,
    /// The tensor each read fills (`ggml_tensor *` as an address; 0 for head rows, which
    /// hypura reads itself).
    pub tensors: Vec<usize>,
    /// Name (for the tracker) of the tensor each read belongs to.
    pub read_names: Vec<String>,
    /// True for LM-head chunks (first row, row count).
    pub head_rows: Option<(u64, u64)>,
}

impl RuntimeGroup {
    fn held_bytes(&self) -> u64 {
        self.reads
            .iter()
            .map(|r| pages_bytes(r.dst as *const u8, r.len))
            .sum()
    }

    /// Where each read goes inside a window region, and the region's size (whole pages).
    /// Each read starts in a page of its own, at its file offset's position within a page,
    /// so that direct I/O reads it in place ([`crate::io::ModelFile::read_exact_at`]); it
    /// costs at most one page per read more than page-aligned starts
    /// ([`crate::plan::WINDOW_SLACK_PER_TENSOR`]).
    fn window_layout(&self) -> (Vec<usize>, usize) {
        let mut offsets = Vec::with_capacity(self.reads.len());
        let mut end = 0usize;
        for r in &self.reads {
            let start =
                end.div_ceil(PAGE_BYTES) * PAGE_BYTES + (r.offset % PAGE_BYTES as u64) as usize;
            offsets.push(start);
            end = start + r.len;
        }
        (offsets, end.div_ceil(PAGE_BYTES) * PAGE_BYTES)
    }
}

/// Where a group in flight is being read to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// `[start, start + len)` of the window.
    Window { start: usize, len: usize },
    /// The tensors' own reserved pages (released with `MADV_DONTNEED` afterwards).
    Home,
}

/// A group whose reads are queued or done, and not yet released.
struct InFlight {
    group: usize,
    completion: Arc<Completion>,
    placement: Placement,
}

/// The LM head when hypura computes it.
#[derive(Debug, Clone)]
pub struct StreamedHead {
    /// Kernel parameters.
    pub compute: HeadCompute,
    /// Groups holding its chunks, in order.
    pub groups: Vec<usize>,
}

/// Numbers the scheduler keeps for the statistics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StreamCounters {
    /// Most weight bytes held for streaming at once: the part of the window used so far (its
    /// pages stay mapped), groups read into their own pages, and embedding rows.
    pub peak_window_bytes: u64,
    /// Groups whose reads had to be issued when already needed (not prefetched).
    pub late_groups: u64,
    /// Times a group was needed out of the planned order.
    pub out_of_order: u64,
    /// Seconds spent waiting for reads inside the graph.
    pub wait_s: f64,
    /// Seconds the reader threads spent inside reads, summed over threads.
    pub reader_busy_s: f64,
    /// Reader threads.
    pub reader_threads: usize,
}

/// The scheduler's state; the evaluation callback's user data.
pub struct Streamer {
    file: Arc<ModelFile>,
    pool: ReadPool,
    tensors: HashMap<usize, TrackedTensor>,
    groups: Vec<RuntimeGroup>,
    group_slots: Vec<Vec<usize>>,
    group_bytes: Vec<u64>,
    /// Per group: each read's offset in a window region, and the region's size.
    group_layouts: Vec<(Vec<usize>, usize)>,
    /// The window's memory (absent when the plan streams nothing).
    window: Option<ReservedMemory>,
    queue: VecDeque<InFlight>,
    /// True once the group in front of the queue was acquired by a node.
    front_in_use: bool,
    next_submit: usize,
    depth: usize,
    /// End of the furthest window region used so far: the window's pages below it are mapped.
    window_touched: u64,
    /// Bytes of groups in flight in their own (home) pages.
    home_held: u64,
    /// The plan's window budget (the window's size).
    window_limit: u64,
    rows_held: Vec<(usize, usize)>,
    rows_held_bytes: u64,
    head: Option<StreamedHead>,
    head_pool: Option<crate::threads::ThreadPool>,
    logits: Vec<f32>,
    logits_ready: bool,
    error: Option<String>,
    tracker: AccessTracker,
    counters: StreamCounters,
    /// The pool's busy seconds when the counters were last reset.
    reader_busy_at_reset: f64,
}

// SAFETY: raw tensor addresses are stored as usize and only dereferenced on the thread that
// runs the graph, while the model is alive.
unsafe impl Send for Streamer {}

/// What the session tells the scheduler about each tensor: how it is used at run time.
#[derive(Debug, Clone, Copy)]
pub enum TensorRegistration {
    /// Resident.
    Resident,
    /// Streamed whole as part of a group.
    Group(usize),
    /// Rows on demand.
    Rows {
        /// File offset of row 0.
        file_offset: u64,
        /// Bytes per row.
        row_bytes: u64,
        /// Row count.
        n_rows: u64,
    },
    /// The streamed LM head (not read by the graph).
    Head,
}

impl Streamer {
    /// A scheduler over `groups`, holding at most `window_limit` bytes of them at once.
    pub fn new(
        file: Arc<ModelFile>,
        io_threads: usize,
        request_bytes: usize,
        groups: Vec<RuntimeGroup>,
        depth: usize,
        window_limit: u64,
        head: Option<StreamedHead>,
    ) -> Self {
        let group_bytes = groups.iter().map(RuntimeGroup::held_bytes).collect();
        let group_layouts = groups.iter().map(RuntimeGroup::window_layout).collect();
        let window = if groups.is_empty() || window_limit == 0 {
            None
        } else {
            match ReservedMemory::new(window_limit as usize) {
                Ok(w) => Some(w),
                Err(e) => {
                    log::warn!("hypura: no window memory ({e}); reading into fresh pages");
                    None
                }
            }
        };
        let mut tracker = AccessTracker::default();
        let group_slots = groups
            .iter()
            .map(|g| g.read_names.iter().map(|n| tracker.slot(n)).collect())
            .collect();
        Self {
            pool: ReadPool::new(Arc::clone(&file), io_threads, request_bytes),
            file,
            tensors: HashMap::new(),
            groups,
            group_slots,
            group_bytes,
            group_layouts,
            window,
            queue: VecDeque::new(),
            front_in_use: false,
            next_submit: 0,
            depth,
            window_touched: 0,
            home_held: 0,
            window_limit,
            rows_held: Vec::new(),
            rows_held_bytes: 0,
            head_pool: head
                .as_ref()
                .and_then(|h| crate::threads::ThreadPool::sleeping(h.compute.n_threads)),
            head,
            logits: Vec::new(),
            logits_ready: false,
            error: None,
            tracker,
            counters: StreamCounters::default(),
            reader_busy_at_reset: 0.0,
        }
    }

    /// Tells the scheduler how `tensor` (named `name` in the statistics) is used.
    pub fn register(&mut self, tensor: *mut sys::ggml_tensor, name: &str, how: TensorRegistration) {
        let slot = self.tracker.slot(name);
        self.tensors
            .insert(tensor as usize, TrackedTensor { usage: how, slot });
    }

    /// Called before every `llama_decode`: drops the previous batch's embedding rows and
    /// logits, and makes sure the first groups are on their way.
    pub fn begin_decode(&mut self) {
        for (addr, len) in self.rows_held.drain(..) {
            release_pages(addr as *mut u8, len);
        }
        self.rows_held_bytes = 0;
        self.logits_ready = false;
        self.top_up();
    }

    fn reset_pipeline(&mut self) {
        self.release_queued_before(None);
        self.front_in_use = false;
        self.next_submit = 0;
    }

    /// The first error seen since `begin_decode`, if any. After an error every group in
    /// flight is dropped, so the next decode reads afresh.
    pub fn take_error(&mut self) -> Option<String> {
        let error = self.error.take();
        if error.is_some() {
            self.reset_pipeline();
        }
        error
    }

    /// Logits hypura computed for the last batch (`n_out * n_vocab`), if the head streams.
    pub fn logits(&self) -> Option<&[f32]> {
        if self.logits_ready {
            Some(&self.logits)
        } else {
            None
        }
    }

    /// The per-tensor access counts.
    pub fn accesses(&self) -> Vec<TensorAccess> {
        self.tracker.snapshot()
    }

    /// Resets access counts and counters (e.g. after the prompt).
    pub fn reset_counts(&mut self) {
        self.tracker.reset();
        // Groups already read ahead for the next tokens count in the new period (the group
        // in front, if it was used already, does not).
        let ahead: Vec<usize> = self
            .queue
            .iter()
            .skip(usize::from(self.front_in_use))
            .map(|e| e.group)
            .collect();
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
        StreamCounters {
            reader_busy_s: self.pool.busy_seconds() - self.reader_busy_at_reset,
            reader_threads: self.pool.threads(),
            ..self.counters.clone()
        }
    }

    fn held_bytes(&self) -> u64 {
        self.window_touched + self.home_held + self.rows_held_bytes
    }

    fn note_held(&mut self) {
        let held = self.held_bytes();
        self.counters.peak_window_bytes = self.counters.peak_window_bytes.max(held);
    }

    /// A free region of `len` bytes in the window, after the last group placed there (the
    /// window is used as a ring: groups leave it in the order they entered).
    fn window_room(&self, len: usize) -> Option<usize> {
        let capacity = self.window.as_ref()?.size();
        ring_room(
            self.queue.iter().filter_map(|e| match e.placement {
                Placement::Window { start, len } => Some((start, len)),
                Placement::Home => None,
            }),
            capacity,
            len,
        )
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

    /// Group `g`'s reads with their destinations where `placement` puts them.
    fn placed_reads(&self, g: usize, placement: Placement) -> Vec<ReadRequest> {
        let group = &self.groups[g];
        match (placement, &self.window) {
            (Placement::Window { start, .. }, Some(window)) => {
                let base = window.base() as usize + start;
                group
                    .reads
                    .iter()
                    .zip(&self.group_layouts[g].0)
                    .map(|(r, offset)| ReadRequest {
                        dst: base + offset,
                        ..*r
                    })
                    .collect()
            }
            _ => group.reads.clone(),
        }
    }

    fn submit(&mut self, g: usize, placement: Placement) {
        self.count_reads(g);
        let reads = self.placed_reads(g, placement);
        for (read, &tensor) in reads.iter().zip(&self.groups[g].tensors) {
            if tensor != 0 {
                // SAFETY: a live weight tensor of the model. No graph node that reads it is
                // computing now (the callback runs between node batches), and every node that
                // reads it asks for its group first, which waits for these reads.
                unsafe { (*(tensor as *mut sys::ggml_tensor)).data = read.dst as *mut c_void };
            }
        }
        let completion = self.pool.submit(&reads);
        match placement {
            Placement::Window { start, len } => {
                self.window_touched = self.window_touched.max((start + len) as u64)
            }
            Placement::Home => self.home_held += self.group_bytes[g],
        }
        self.note_held();
        self.queue.push_back(InFlight {
            group: g,
            completion,
            placement,
        });
    }

    fn release_group(&mut self, entry: &InFlight) {
        // A window region keeps its pages for the next group.
        if entry.placement == Placement::Home {
            for r in &self.groups[entry.group].reads {
                release_pages(r.dst as *mut u8, r.len);
            }
            self.home_held = self.home_held.saturating_sub(self.group_bytes[entry.group]);
        }
    }

    /// The address group `g`'s first read went to, while `g` is in flight.
    fn first_read_address(&self, g: usize) -> Option<usize> {
        let entry = self.queue.iter().find(|e| e.group == g)?;
        self.placed_reads(g, entry.placement).first().map(|r| r.dst)
    }

    /// Releases the queued groups in front of group `keep` (all of them when `None`), waiting
    /// for any of their reads still in flight first: the memory is about to be reused.
    fn release_queued_before(&mut self, keep: Option<usize>) {
        while self.queue.front().is_some_and(|f| Some(f.group) != keep) {
            let entry = self.queue.pop_front().expect("non-empty");
            let _ = entry.completion.wait();
            self.release_group(&entry);
        }
    }

    /// Queues reads ahead, up to the prefetch depth and the window budget.
    fn top_up(&mut self) {
        let n = self.groups.len();
        if n == 0 {
            return;
        }
        let target = (self.depth + 1).min(n);
        while self.queue.len() < target {
            let g = self.next_submit;
            if self.queue.iter().any(|e| e.group == g) {
                break;
            }
            let len = self.group_layouts[g].1;
            let placement = match self.window_room(len) {
                Some(start) => Placement::Window { start, len },
                // No window memory at all: read ahead into the groups' own pages, within the
                // same budget.
                None if self.window.is_none()
                    && self.home_held + self.group_bytes[g] <= self.window_limit =>
                {
                    Placement::Home
                }
                // The window is full of groups still needed: wait for the next release.
                None if !self.queue.is_empty() => break,
                // Nothing in flight and the group does not fit the window at all.
                None => Placement::Home,
            };
            self.submit(g, placement);
            self.next_submit = (g + 1) % n;
        }
    }

    fn record_error(&mut self, e: String) {
        if self.error.is_none() {
            log::error!("hypura: {e}");
            self.error = Some(e);
        }
    }

    /// Makes group `g` the current group. Every group queued in front of it is released
    /// first: each node that reads a streamed tensor is claimed (computed as the last node of
    /// its batch), so by the time a node of `g` is asked about, every node that read an
    /// earlier group has computed. Reads are then queued ahead into the room this frees, and
    /// only then are `g`'s own reads waited for, so the readers stay busy meanwhile.
    fn acquire_group(&mut self, g: usize) {
        if self.front_in_use && self.queue.front().is_some_and(|f| f.group == g) {
            return;
        }
        if self.queue.iter().any(|e| e.group == g) {
            self.release_queued_before(Some(g));
        } else {
            // Not prefetched: nothing was in flight yet, or the graph left the planned order
            // (then what was read ahead is for other groups: drop it).
            if !self.queue.is_empty() {
                self.counters.out_of_order += 1;
            }
            self.counters.late_groups += 1;
            self.release_queued_before(None);
            let len = self.group_layouts[g].1;
            let placement = match self.window_room(len) {
                Some(start) => Placement::Window { start, len },
                None => Placement::Home,
            };
            self.submit(g, placement);
            self.next_submit = (g + 1) % self.groups.len();
        }
        self.front_in_use = true;
        self.top_up();
        let completion = Arc::clone(&self.queue.front().expect("g is queued").completion);
        let started = std::time::Instant::now();
        let waited = !completion.is_done();
        if let Err(e) = completion.wait() {
            self.record_error(format!("reading {}: {e}", self.file.path().display()));
        }
        if waited {
            self.counters.wait_s += started.elapsed().as_secs_f64();
        }
    }

    fn load_rows(
        &mut self,
        weight: *mut sys::ggml_tensor,
        ids: *const sys::ggml_tensor,
        usage: TensorRegistration,
        slot: usize,
    ) {
        let TensorRegistration::Rows {
            file_offset,
            row_bytes,
            n_rows,
        } = usage
        else {
            return;
        };
        // SAFETY: `ids` is the I32 index input of a GET_ROWS node, already set by llama.cpp
        // in host memory; `weight` is our tensor with `n_rows` rows of `row_bytes`.
        unsafe {
            if (*ids).type_ != sys::GGML_TYPE_I32 || (*ids).data.is_null() {
                self.record_error("embedding lookup without host I32 ids".into());
                return;
            }
            let count = sys::ggml_nelements(ids) as usize;
            let ids = std::slice::from_raw_parts((*ids).data as *const i32, count);
            let mut unique: Vec<i32> = ids.to_vec();
            unique.sort_unstable();
            unique.dedup();
            let base = (*weight).data as *mut u8;
            let row_stride = (*weight).nb[1];
            for id in unique {
                if id < 0 || id as u64 >= n_rows {
                    self.record_error(format!("token id {id} out of range"));
                    return;
                }
                let dst = base.add(id as usize * row_stride);
                if let Err(e) = self.file.read_into(
                    dst,
                    row_bytes as usize,
                    file_offset + id as u64 * row_bytes,
                ) {
                    self.record_error(format!("reading {}: {e}", self.file.path().display()));
                    return;
                }
                self.tracker.read_from_disk(slot, row_bytes);
                self.rows_held_bytes += pages_bytes(dst, row_bytes as usize);
                self.rows_held.push((dst as usize, row_bytes as usize));
            }
        }
        self.note_held();
    }

    fn compute_head(&mut self, hidden_node: *mut sys::ggml_tensor) {
        let Some(head) = self.head.clone() else {
            return;
        };
        // SAFETY: `result_norm` is an F32 tensor in host memory that has just been computed.
        let hidden: Vec<f32> = unsafe {
            let t = &*hidden_node;
            let n_embd = t.ne[0] as usize;
            let n_out = t.ne[1] as usize;
            let mut v = Vec::with_capacity(n_embd * n_out);
            for j in 0..n_out {
                let row = (t.data as *const u8).add(j * t.nb[1]) as *const f32;
                v.extend_from_slice(std::slice::from_raw_parts(row, n_embd));
            }
            v
        };
        let n_out = hidden.len() as i64 / head.compute.n_embd.max(1);
        self.logits.clear();
        self.logits
            .resize((n_out * head.compute.n_vocab) as usize, 0.0);
        if n_out == 0 {
            self.logits_ready = true;
            return;
        }
        for &g in &head.groups {
            self.acquire_group(g);
            if self.error.is_some() {
                return;
            }
            let Some((first_row, n_rows)) = self.groups[g].head_rows else {
                continue;
            };
            let Some(dst) = self.first_read_address(g) else {
                self.record_error(format!("head chunk {g} is not in memory"));
                return;
            };
            let dst = dst as *const u8;
            let mut logits = std::mem::take(&mut self.logits);
            // SAFETY: the group's read completed into `dst`, which holds `n_rows` rows.
            let result = unsafe {
                head.compute.compute(
                    dst,
                    first_row as i64..(first_row + n_rows) as i64,
                    &hidden,
                    n_out,
                    &mut logits,
                    self.head_pool.as_ref(),
                )
            };
            self.logits = logits;
            if let Err(e) = result {
                self.record_error(e);
                return;
            }
        }
        self.logits_ready = true;
    }

    fn on_ask(&mut self, t: *mut sys::ggml_tensor) -> bool {
        // SAFETY: ggml passes a live graph node.
        let node = unsafe { &*t };
        if node.flags & sys::GGML_TENSOR_FLAG_COMPUTE as i32 == 0 {
            return false; // a branch of the graph that is not selected for this batch
        }
        if self.head.is_some() && node_name(node) == "result_norm" {
            return true;
        }
        let mut claim = false;
        let mut acquired: Option<usize> = None;
        for &src in node.src.iter() {
            if src.is_null() {
                continue;
            }
            // SAFETY: sources of a live node are live tensors.
            let weight = unsafe {
                if (*src).view_src.is_null() {
                    src
                } else {
                    (*src).view_src
                }
            };
            let tracked = match self.tensors.get(&(weight as usize)).copied() {
                Some(t) => t,
                // A weight in one of llama.cpp's own buffers (the whole-model plan): count it.
                None if is_weight(weight) => {
                    let slot = self.tracker.slot(node_name(unsafe { &*weight }));
                    let t = TrackedTensor {
                        usage: TensorRegistration::Resident,
                        slot,
                    };
                    self.tensors.insert(weight as usize, t);
                    t
                }
                None => continue,
            };
            self.tracker.accessed(tracked.slot);
            match tracked.usage {
                // The streamed head is never read by the graph (it stops at result_norm).
                TensorRegistration::Resident | TensorRegistration::Head => {}
                TensorRegistration::Group(g) => {
                    if let Some(other) = acquired.filter(|&a| a != g) {
                        self.record_error(format!(
                            "node '{}' reads two streamed groups ({other} and {g})",
                            node_name(node)
                        ));
                        return true;
                    }
                    acquired = Some(g);
                    self.acquire_group(g);
                    claim = true;
                    if src != weight {
                        // A view of a streamed tensor: follow the tensor to where it was read.
                        // SAFETY: both are live tensors; the view lies inside its source.
                        unsafe {
                            (*src).data = (*weight).data.cast::<u8>().add((*src).view_offs).cast()
                        };
                    }
                }
                TensorRegistration::Rows { .. } => {
                    if node.op == sys::GGML_OP_GET_ROWS {
                        self.load_rows(weight, node.src[1], tracked.usage, tracked.slot);
                    } else {
                        self.record_error(
                            "the embedding is used by something other than a row lookup".into(),
                        );
                    }
                }
            }
        }
        claim
    }

    fn on_computed(&mut self, t: *mut sys::ggml_tensor) -> bool {
        // SAFETY: ggml passes a live graph node.
        let node = unsafe { &*t };
        if self.head.is_some() && node_name(node) == "result_norm" {
            self.compute_head(t);
            return false; // stop the graph: the logits are ours
        }
        self.error.is_none()
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        // Wait for reads in flight: they write into memory that is about to be freed.
        for entry in &self.queue {
            let _ = entry.completion.wait();
        }
    }
}

/// Where a region of `len` bytes fits in a ring of `capacity` bytes whose occupied regions
/// are `regions` (start, len), oldest first, each placed right after the one before it or
/// wrapped to 0: after the newest region if there is room before the end (or before the
/// oldest, when wrapped), else at 0 if that lies before the oldest; `None` when it does not fit.
fn ring_room(
    mut regions: impl DoubleEndedIterator<Item = (usize, usize)>,
    capacity: usize,
    len: usize,
) -> Option<usize> {
    if len == 0 || len > capacity {
        return None;
    }
    let Some((tail, first_len)) = regions.next() else {
        return Some(0);
    };
    let (last_start, last_len) = regions.next_back().unwrap_or((tail, first_len));
    let head = last_start + last_len;
    if head > tail {
        // Not wrapped: free are [head, capacity) and [0, tail).
        if head + len <= capacity {
            Some(head)
        } else if len <= tail {
            Some(0)
        } else {
            None
        }
    } else if head + len <= tail {
        // Wrapped: free is [head, tail).
        Some(head)
    } else {
        None
    }
}

/// True for a tensor in a buffer llama.cpp marked as holding weights.
fn is_weight(t: *mut sys::ggml_tensor) -> bool {
    // SAFETY: a live tensor; its buffer, if any, is live.
    unsafe {
        !(*t).buffer.is_null()
            && sys::ggml_backend_buffer_get_usage((*t).buffer)
                == sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS
    }
}

fn node_name(t: &sys::ggml_tensor) -> &str {
    // SAFETY: ggml tensor names are NUL-terminated within the fixed array.
    unsafe { CStr::from_ptr(t.name.as_ptr()) }
        .to_str()
        .unwrap_or("")
}

/// The `cb_eval` function to give llama.cpp, with a `*const Mutex<Streamer>` as user data.
///
/// # Safety
/// `user_data` must point to a live `Mutex<Streamer>` for as long as the context exists.
pub unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: guaranteed by the caller of llama_init_from_model.
        let streamer = unsafe { &*(user_data as *const Mutex<Streamer>) };
        let mut streamer = streamer.lock().unwrap_or_else(|e| e.into_inner());
        if ask {
            streamer.on_ask(t)
        } else {
            streamer.on_computed(t)
        }
    }));
    match result {
        Ok(v) => v,
        Err(_) => {
            log::error!("hypura: panic in the evaluation callback; stopping the graph");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ring_room;
    use std::collections::VecDeque;

    fn room(regions: &VecDeque<(usize, usize)>, capacity: usize, len: usize) -> Option<usize> {
        ring_room(regions.iter().copied(), capacity, len)
    }

    #[test]
    fn equal_groups_fill_the_ring_exactly_and_cycle() {
        let (size, slots) = (4096 * 3, 3);
        let mut regions = VecDeque::new();
        for step in 0..20 {
            while regions.len() < slots {
                let start = room(&regions, size * slots, size).expect("room for a group");
                assert_eq!(start % size, 0, "step {step}");
                regions.push_back((start, size));
            }
            assert_eq!(
                room(&regions, size * slots, size),
                None,
                "full at step {step}"
            );
            regions.pop_front();
        }
    }

    #[test]
    fn mixed_sizes_never_overlap_or_overflow() {
        let capacity = 100;
        let mut regions: VecDeque<(usize, usize)> = VecDeque::new();
        let mut seed = 7u32;
        let mut placed = 0;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = 1 + (seed >> 16) as usize % 45;
            match room(&regions, capacity, len) {
                Some(start) => {
                    assert!(start + len <= capacity);
                    for &(s, l) in &regions {
                        assert!(start + len <= s || s + l <= start, "overlap");
                    }
                    regions.push_back((start, len));
                    placed += 1;
                }
                None => {
                    // Only refused when something is in the way.
                    assert!(!regions.is_empty());
                    regions.pop_front();
                }
            }
        }
        assert!(placed > 1000);
    }

    #[test]
    fn refuses_what_can_never_fit() {
        let regions = VecDeque::new();
        assert_eq!(room(&regions, 100, 101), None);
        assert_eq!(room(&regions, 100, 0), None);
        assert_eq!(room(&regions, 100, 100), Some(0));
    }
}
