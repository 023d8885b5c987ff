//! llama.cpp's evaluation callback: the only code that sees graph nodes. It turns them into
//! the streamer's events: "group `g` is needed" for a node that reads a streamed tensor
//! (claimed, so it computes as the last node of its batch), "these rows are looked up" for
//! the embedding, and "the hidden state is ready" at the head's input node, after which the
//! graph stops and hypura computes the logits.

use std::ffi::{c_void, CStr};
use std::sync::Mutex;

use super::{StreamFailure, Streamer};
use crate::plan::Placement;
use crate::sys;

/// The `cb_eval` function to give llama.cpp, with a `*const Mutex<Streamer>` as user data.
///
/// # Safety
/// `user_data` must point to a live `Mutex<Streamer>` for as long as the context exists.
pub(crate) unsafe extern "C" fn eval_callback(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: ggml passes a live graph node, which nothing else touches during the call.
        let node = unsafe { &*t };
        // The scheduler asks about every node of a graph piece before it starts computing
        // it, so this call is on the GPU's critical path: a node computed in GPU memory reads
        // no streamed weight (hypura's host weights are computed on the CPU) and is left
        // alone, uncounted.
        if ask && in_device_memory(node) {
            return false;
        }
        // SAFETY: guaranteed by the caller of llama_init_from_model.
        let streamer = unsafe { &*(user_data as *const Mutex<Streamer>) };
        let mut streamer = streamer.lock().unwrap_or_else(|e| e.into_inner());
        if ask {
            on_ask(&mut streamer, node)
        } else {
            on_computed(&mut streamer, node)
        }
    }));
    // A panic stops the graph; the decode reports it.
    result.unwrap_or(false)
}

fn node_name(t: &sys::ggml_tensor) -> &str {
    // SAFETY: ggml tensor names are NUL-terminated within their fixed array.
    unsafe { CStr::from_ptr(t.name.as_ptr()) }
        .to_str()
        .unwrap_or("")
}

/// True for a tensor in a buffer llama.cpp marked as holding weights.
fn is_weight(t: &sys::ggml_tensor) -> bool {
    // SAFETY: a live tensor's buffer, if any, is live.
    !t.buffer.is_null()
        && unsafe { sys::ggml_backend_buffer_get_usage(t.buffer) }
            == sys::GGML_BACKEND_BUFFER_USAGE_WEIGHTS
}

/// Notes the buffers llama.cpp computes in (for the statistics): the node's own, and the KV
/// cache's behind the node's sources.
fn observe_buffers(streamer: &mut Streamer, node: &sys::ggml_tensor) {
    if !node.buffer.is_null() && !is_weight(node) {
        streamer.observe_buffer(node.buffer, false);
    }
    for &src in node.src.iter() {
        if src.is_null() {
            continue;
        }
        // SAFETY: sources of a live node are live tensors.
        let src = unsafe { &*src };
        let base = if src.view_src.is_null() {
            src
        } else {
            // SAFETY: a view's source is a live tensor.
            unsafe { &*src.view_src }
        };
        let name = node_name(base);
        if streamer
            .kv_cache_prefixes()
            .iter()
            .any(|p| name.starts_with(p))
        {
            streamer.observe_buffer(base.buffer, true);
        }
    }
}

fn on_ask(streamer: &mut Streamer, node: &sys::ggml_tensor) -> bool {
    if node.flags & sys::GGML_TENSOR_FLAG_COMPUTE as i32 == 0 {
        return false; // a branch of the graph that is not selected for this batch
    }
    observe_buffers(streamer, node);
    if streamer.head_streamed() && node_name(node) == streamer.head_input_node() {
        return true;
    }
    // The router's selection: computed last in its batch, so that its experts are read
    // before the expert products run.
    // A selection computed on a GPU is not claimed (that would split the GPU's graph, and
    // change how it fuses and rounds): its experts are read when the CPU's expert product
    // asks, from the copy of it the CPU's graph piece starts with.
    if streamer.experts_active()
        && selection_layer(streamer, node).is_some_and(|l| streamer.experts_sliced_in(l))
        && in_host_memory(node)
    {
        return true;
    }
    let mut claim = false;
    let mut acquired: Option<usize> = None;
    for i in 0..node.src.len() {
        let src = node.src[i];
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
        let tracked = match streamer.tracked(weight as usize) {
            Some(t) => t,
            // A weight in one of llama.cpp's own buffers (the whole-model plan): count it.
            // SAFETY: a live tensor.
            None if is_weight(unsafe { &*weight }) => {
                // SAFETY: a live tensor.
                let name = node_name(unsafe { &*weight }).to_string();
                streamer.track_resident(weight as usize, &name)
            }
            None => continue,
        };
        streamer.accessed(tracked.slot);
        match tracked.placement {
            Placement::Resident | Placement::GpuResident => {}
            Placement::ExpertSlices => {
                // SAFETY: a live tensor; its data stays at its own pages (never moved).
                let base = unsafe { (*weight).data } as usize;
                let Some(layer) = streamer.expert_layer(base) else {
                    streamer.fail(StreamFailure::Graph(format!(
                        "node '{}' reads an expert tensor hypura does not know",
                        node_name(node)
                    )));
                    return true;
                };
                // An expert product reads the selection as its ids: served when that
                // selection was, or now from the copy of a selection a GPU computed. Anything
                // else gets every expert of the layer.
                let product = node.op == sys::GGML_OP_MUL_MAT_ID && i == 0;
                let served = streamer.experts_served(layer);
                let by_selection = product && served.is_some_and(|s| s == node.src[2] as usize);
                let copied = (product && !by_selection)
                    .then(|| copied_selection(streamer, node.src[2], layer))
                    .flatten();
                if let Some(experts) = copied {
                    streamer.serve_experts(layer, Some(&experts), node.src[2] as usize);
                    // The router ran on a GPU: the next layers' experts are predicted from
                    // the host copy of its input, which the product reads too.
                    if !node.src[1].is_null() {
                        // SAFETY: sources of a live node are live tensors; `src[2]` is the
                        // copied selection just read.
                        let (input, ids) = unsafe { (&*node.src[1], &*node.src[2]) };
                        streamer.prefetch_from_input(layer, input, ids.ne[0].max(1) as usize);
                    }
                } else if !by_selection {
                    streamer.serve_experts(layer, None, 0);
                }
            }
            // llama.cpp never creates an unused tensor, so no node reads one: fail rather than
            // compute with bytes that were never read.
            Placement::Unused => {
                streamer.fail(StreamFailure::Graph(format!(
                    "node '{}' reads a tensor llama.cpp does not load",
                    node_name(node)
                )));
                return true;
            }
            // The graph stops at the head's input node before anything reads the head hypura
            // computes; a node reading it means that node was never seen: fail, rather than
            // compute with bytes that were never read.
            Placement::HeadChunks => {
                streamer.fail(StreamFailure::Graph(format!(
                    "node '{}' reads the LM head hypura computes itself (its input node '{}' was not seen)",
                    node_name(node),
                    streamer.head_input_node()
                )));
                return true;
            }
            Placement::Streamed { group } => {
                if let Some(other) = acquired.filter(|&a| a != group) {
                    streamer.fail(StreamFailure::Graph(format!(
                        "node '{}' reads two streamed groups ({other} and {group})",
                        node_name(node)
                    )));
                    return true;
                }
                acquired = Some(group);
                streamer.acquire(group);
                claim = true;
                if src != weight {
                    // A view of a streamed tensor: follow the tensor to where it was read.
                    // SAFETY: both are live tensors; the view lies inside its source.
                    unsafe {
                        (*src).data = (*weight).data.cast::<u8>().add((*src).view_offs).cast()
                    };
                }
            }
            Placement::RowsOnDemand => {
                let rows = tracked.rows.filter(|_| node.op == sys::GGML_OP_GET_ROWS);
                let ids = node.src[1];
                let Some(rows) = rows.filter(|_| !ids.is_null()) else {
                    streamer.fail(StreamFailure::Graph(
                        "the embedding is used by something other than a row lookup".into(),
                    ));
                    return true;
                };
                // SAFETY: `ids` is the index input of a GET_ROWS node, set by llama.cpp in
                // host memory before the graph runs.
                let ids = unsafe { &*ids };
                if ids.type_ != sys::GGML_TYPE_I32 || ids.data.is_null() {
                    streamer.fail(StreamFailure::Graph(
                        "embedding lookup without host I32 ids".into(),
                    ));
                    return true;
                }
                // SAFETY: a live I32 tensor in host memory holds `nelements` ids.
                let ids = unsafe {
                    std::slice::from_raw_parts(
                        ids.data as *const i32,
                        sys::ggml_nelements(ids) as usize,
                    )
                };
                // SAFETY: `weight` is the embedding in hypura's buffer, with `rows.n_rows`
                // rows of `nb[1]` bytes; nothing reads it before this lookup node computes.
                unsafe {
                    let stride = (*weight).nb[1];
                    streamer.load_rows((*weight).data.cast(), stride, ids, rows, tracked.slot)
                };
            }
        }
    }
    claim
}

/// The buffer holding `t`'s bytes: its own, or its view source's.
fn storage_buffer(t: &sys::ggml_tensor) -> sys::ggml_backend_buffer_t {
    if t.view_src.is_null() {
        t.buffer
    } else {
        // SAFETY: a view's source is a live tensor.
        unsafe { (*t.view_src).buffer }
    }
}

/// Whether `t`'s bytes are in host memory (`Some(true)`: computed by the CPU, or a copy made
/// for it) or in a device's own memory (`Some(false)`: a GPU's); `None` without a buffer.
fn stored_in_host(t: &sys::ggml_tensor) -> Option<bool> {
    let buffer = storage_buffer(t);
    // SAFETY: a live tensor's buffer is live.
    (!buffer.is_null()).then(|| unsafe { sys::ggml_backend_buffer_is_host(buffer) })
}

/// True when `t`'s bytes are in host memory.
pub(super) fn in_host_memory(t: &sys::ggml_tensor) -> bool {
    stored_in_host(t) == Some(true)
}

/// True when `t` is stored in a device's own memory (a GPU's), not in host memory.
fn in_device_memory(t: &sys::ggml_tensor) -> bool {
    stored_in_host(t) == Some(false)
}

/// The experts in `ids`, when it is the scheduler's copy (named
/// `{backend}#{selection}-{layer}#{n}`) of layer `layer`'s selection, made in host memory
/// before the CPU's graph piece that reads it starts.
fn copied_selection(
    streamer: &Streamer,
    ids: *mut sys::ggml_tensor,
    layer: u32,
) -> Option<Vec<u32>> {
    if ids.is_null() {
        return None;
    }
    // SAFETY: a source of a live node is a live tensor.
    let ids = unsafe { &*ids };
    let selection = format!("#{}-{layer}#", streamer.selected_experts_node());
    (node_name(ids).contains(&selection) && in_host_memory(ids))
        .then(|| selected_experts(ids))
        .flatten()
}

/// The layer of the router selection `node` (`{selected_experts_node}-{layer}`), if it is one.
fn selection_layer(streamer: &Streamer, node: &sys::ggml_tensor) -> Option<u32> {
    node_name(node)
        .strip_prefix(streamer.selected_experts_node())?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// The bytes a just-computed node spans (`ggml_nbytes`, its strides included), copied out of
/// whichever memory it was computed in: host memory, or a GPU's when its layer runs there.
fn computed_bytes(node: &sys::ggml_tensor) -> Option<Vec<u8>> {
    if node.data.is_null() || storage_buffer(node).is_null() {
        return None;
    }
    // SAFETY: a live tensor with data in a live buffer.
    let n = unsafe { sys::ggml_nbytes(node) };
    let mut bytes = vec![0u8; n];
    // SAFETY: as above; the scheduler synchronised the backend that computed the node before
    // calling back, and the copy is the node's own size.
    unsafe { sys::ggml_backend_tensor_get(node, bytes.as_mut_ptr().cast(), 0, n) };
    Some(bytes)
}

/// The distinct experts a computed selection node (I32, experts used × tokens) holds.
fn selected_experts(node: &sys::ggml_tensor) -> Option<Vec<u32>> {
    if node.type_ != sys::GGML_TYPE_I32 {
        return None;
    }
    let bytes = computed_bytes(node)?;
    let mut experts = Vec::new();
    for j in 0..node.ne[1].max(0) as usize {
        for i in 0..node.ne[0].max(0) as usize {
            // Element (i, j) is at `i * nb[0] + j * nb[1]`, inside the span.
            let at = i * node.nb[0] + j * node.nb[1];
            let id = i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
            let id = u32::try_from(id).ok()?;
            if !experts.contains(&id) {
                experts.push(id);
            }
        }
    }
    Some(experts)
}

fn on_computed(streamer: &mut Streamer, node: &sys::ggml_tensor) -> bool {
    if streamer.experts_active() {
        if let Some(layer) = selection_layer(streamer, node)
            .filter(|&l| streamer.experts_sliced_in(l) && in_host_memory(node))
        {
            match selected_experts(node) {
                Some(experts) => {
                    streamer.serve_experts(layer, Some(&experts), node as *const _ as usize);
                    streamer.prefetch_after(layer, node);
                }
                None => streamer.fail(StreamFailure::Graph(format!(
                    "the router selection '{}' is not I32 ids",
                    node_name(node)
                ))),
            }
            return streamer.ok();
        }
    }
    if streamer.head_streamed() && node_name(node) == streamer.head_input_node() {
        let bytes = computed_bytes(node).filter(|_| node.type_ == sys::GGML_TYPE_F32);
        let Some(bytes) = bytes else {
            streamer.fail(StreamFailure::Graph(
                "the head's input is not a computed F32 tensor".into(),
            ));
            return false;
        };
        let n_embd = node.ne[0] as usize;
        let n_out = node.ne[1] as usize;
        let mut hidden = Vec::with_capacity(n_embd * n_out);
        for j in 0..n_out {
            // Row `j` starts at `nb[1] * j` and holds `n_embd` floats.
            let row = bytes.get(j * node.nb[1]..j * node.nb[1] + n_embd * 4);
            let Some(row) = row else {
                streamer.fail(StreamFailure::Graph(
                    "the head's input is shorter than its shape".into(),
                ));
                return false;
            };
            hidden.extend(
                row.chunks_exact(4)
                    .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
        streamer.compute_head(&hidden, n_out);
        return false; // stop the graph: the logits are ours
    }
    streamer.ok()
}
