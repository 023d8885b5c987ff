//! The streaming scheduler, driven by llama.cpp's evaluation callback.
//!
//! Stream groups (a layer's streamed tensors, or a run of LM-head rows) form a cycle that
//! repeats every token. Before a node that reads a streamed tensor computes, its group must
//! have arrived; the first node of a new group is claimed, so that once it has computed every
//! earlier group is released (`MADV_DONTNEED`) and the reads for the next groups are queued,
//! up to `prefetch_depth` groups ahead and never past the window budget. The input embedding
//! streams only the rows the batch looks up. When the head is streamed, the graph is stopped
//! after `result_norm` and hypura computes the logits chunk by chunk ([`crate::head`]).

use std::collections::{HashMap, VecDeque};
use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex};

use crate::head::HeadCompute;
use crate::io::{Completion, ModelFile, ReadPool, ReadRequest};
use crate::sys;
use crate::tier::{pages_bytes, release_pages};
use crate::track::{AccessTracker, TensorAccess};

#[derive(Debug, Clone, Copy)]
struct TrackedTensor {
    usage: TensorRegistration,
    slot: usize,
}

/// A stream group at run time.
#[derive(Debug, Clone)]
pub struct RuntimeGroup {
    /// Reads that fill it.
    pub reads: Vec<ReadRequest>,
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
    /// Most weight bytes held in the window plus embedding rows at once.
    pub peak_window_bytes: u64,
    /// Groups whose reads had to be issued when already needed (not prefetched).
    pub late_groups: u64,
    /// Times a group was needed out of the planned order.
    pub out_of_order: u64,
    /// Seconds spent waiting for reads inside the graph.
    pub wait_s: f64,
}

/// The scheduler's state; the evaluation callback's user data.
pub struct Streamer {
    file: Arc<ModelFile>,
    pool: ReadPool,
    tensors: HashMap<usize, TrackedTensor>,
    groups: Vec<RuntimeGroup>,
    group_slots: Vec<Vec<usize>>,
    group_bytes: Vec<u64>,
    queue: VecDeque<(usize, Arc<Completion>)>,
    current_ready: bool,
    next_submit: usize,
    depth: usize,
    window_limit: u64,
    window_held: u64,
    rows_held: Vec<(usize, usize)>,
    rows_held_bytes: u64,
    release_before: Option<usize>,
    head: Option<StreamedHead>,
    head_pool: Option<crate::threads::ThreadPool>,
    logits: Vec<f32>,
    logits_ready: bool,
    error: Option<String>,
    tracker: AccessTracker,
    counters: StreamCounters,
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
            queue: VecDeque::new(),
            current_ready: false,
            next_submit: 0,
            depth,
            window_limit,
            window_held: 0,
            rows_held: Vec::new(),
            rows_held_bytes: 0,
            release_before: None,
            head_pool: head
                .as_ref()
                .and_then(|h| crate::threads::ThreadPool::sleeping(h.compute.n_threads)),
            head,
            logits: Vec::new(),
            logits_ready: false,
            error: None,
            tracker,
            counters: StreamCounters::default(),
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
        while let Some((g, completion)) = self.queue.pop_front() {
            let _ = completion.wait();
            self.release_group(g);
        }
        self.current_ready = false;
        self.next_submit = 0;
        self.release_before = None;
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
        self.counters = StreamCounters {
            peak_window_bytes: self.window_held + self.rows_held_bytes,
            ..Default::default()
        };
    }

    /// Counters for the statistics.
    pub fn counters(&self) -> StreamCounters {
        self.counters.clone()
    }

    fn note_held(&mut self) {
        let held = self.window_held + self.rows_held_bytes;
        self.counters.peak_window_bytes = self.counters.peak_window_bytes.max(held);
    }

    fn submit(&mut self, g: usize) {
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
        let completion = self.pool.submit(&group.reads);
        self.window_held += self.group_bytes[g];
        self.note_held();
        self.queue.push_back((g, completion));
    }

    fn release_group(&mut self, g: usize) {
        for r in &self.groups[g].reads {
            release_pages(r.dst as *mut u8, r.len);
        }
        self.window_held = self.window_held.saturating_sub(self.group_bytes[g]);
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
            if self.queue.iter().any(|(q, _)| *q == g) {
                break;
            }
            if !self.queue.is_empty() && self.window_held + self.group_bytes[g] > self.window_limit
            {
                break;
            }
            self.submit(g);
            self.next_submit = (g + 1) % n;
        }
    }

    fn record_error(&mut self, e: String) {
        if self.error.is_none() {
            log::error!("hypura: {e}");
            self.error = Some(e);
        }
    }

    /// Makes group `g` present. Returns true when `g` became the current group (the node that
    /// needs it should be claimed, so the groups before it are released once it computed).
    fn ensure_group(&mut self, g: usize) -> bool {
        if let Some((front, _)) = self.queue.front() {
            if *front == g && self.current_ready {
                return false;
            }
        }
        let position = match self.queue.iter().position(|(q, _)| *q == g) {
            Some(p) => p,
            None => {
                // Not prefetched: either nothing is in flight yet, or the graph left the
                // planned order. Queue it now (may briefly exceed the window if others held).
                if !self.queue.is_empty() {
                    self.counters.out_of_order += 1;
                }
                self.counters.late_groups += 1;
                self.submit(g);
                self.next_submit = (g + 1) % self.groups.len();
                self.queue.len() - 1
            }
        };
        let completion = Arc::clone(&self.queue[position].1);
        if !completion.is_done() {
            let started = std::time::Instant::now();
            if let Err(e) = completion.wait() {
                self.record_error(format!("reading {}: {e}", self.file.path().display()));
            }
            self.counters.wait_s += started.elapsed().as_secs_f64();
        } else if let Err(e) = completion.wait() {
            self.record_error(format!("reading {}: {e}", self.file.path().display()));
        }
        self.release_before = Some(g);
        self.current_ready = position == 0;
        true
    }

    /// Releases every group in front of `g` (all of their nodes have computed).
    fn release_up_to(&mut self, g: usize) {
        while let Some((front, _)) = self.queue.front() {
            if *front == g {
                break;
            }
            let (front, completion) = self.queue.pop_front().expect("non-empty");
            let _ = completion.wait();
            self.release_group(front);
        }
        self.current_ready = self.queue.front().map(|(q, _)| *q == g).unwrap_or(false);
        self.top_up();
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
            self.ensure_group(g);
            self.release_up_to(g);
            if self.error.is_some() {
                return;
            }
            let Some((first_row, n_rows)) = self.groups[g].head_rows else {
                continue;
            };
            let dst = self.groups[g].reads[0].dst as *const u8;
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
                TensorRegistration::Group(g) => claim |= self.ensure_group(g),
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
            if let Some(g) = self.release_before.take() {
                self.release_up_to(g);
            }
            self.compute_head(t);
            return false; // stop the graph: the logits are ours
        }
        if let Some(g) = self.release_before.take() {
            self.release_up_to(g);
        }
        self.error.is_none()
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        // Wait for reads in flight: they write into memory that is about to be freed.
        for (_, completion) in &self.queue {
            let _ = completion.wait();
        }
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
