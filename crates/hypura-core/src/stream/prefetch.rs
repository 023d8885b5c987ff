//! Predicting the experts of the layers ahead: when layer L's router has picked, its input
//! (the normalized hidden state) is multiplied by the routers of the next few layers, and
//! their top experts are read while layer L and those before them compute. The hidden
//! state changes little from one layer to the next (each layer adds to it), so the next
//! routers mostly pick what they would pick on it; the expert cache counts how often the
//! guess was right (`prefetch_hits`) and what it read for nothing (`prefetch_wasted_bytes`).
//! Only single-token batches (decoding) are predicted: a prompt's batch picks most experts
//! anyway.

use crate::sys;

/// Layers ahead whose experts are predicted and read.
pub(crate) const LOOKAHEAD_LAYERS: u32 = 1;

/// Most tokens in a batch whose next layers are predicted.
const MAX_TOKENS: i64 = 1;

/// How far back from the selection node the router's product is looked for.
const MAX_DEPTH: usize = 8;

/// The router's input (F32, `n_embd` values per token in host memory) behind the selection
/// node `selection`: the second operand of the matrix product whose first is a router
/// (`is_router` of the weight's address), found walking back through the node's sources.
pub(crate) fn router_input(
    selection: &sys::ggml_tensor,
    is_router: &dyn Fn(usize) -> bool,
) -> Option<*const sys::ggml_tensor> {
    let mut frontier = vec![(selection as *const sys::ggml_tensor, 0usize)];
    // The graph is a DAG whose nodes share sources: each is looked at once.
    let mut seen = std::collections::HashSet::new();
    while let Some((node, depth)) = frontier.pop() {
        if !seen.insert(node) {
            continue;
        }
        // SAFETY: `node` is the selection node or a source of a live node: a live tensor.
        let n = unsafe { &*node };
        if n.op == sys::GGML_OP_MUL_MAT && !n.src[0].is_null() && is_router(n.src[0] as usize) {
            return Some(n.src[1])
                .filter(|s| !s.is_null())
                .map(|s| s.cast_const());
        }
        if depth < MAX_DEPTH {
            frontier.extend(
                n.src
                    .iter()
                    .filter(|s| !s.is_null())
                    .map(|&s| (s.cast_const(), depth + 1)),
            );
        }
    }
    None
}

/// The hidden state of a router input, if it is F32 in host memory, one token, `n_embd`
/// wide.
pub(crate) fn hidden_state(input: &sys::ggml_tensor, n_embd: i64) -> Option<&[f32]> {
    // A layer computed on a GPU leaves its hidden state in GPU memory: no read-ahead then.
    if !super::callback::in_host_memory(input) {
        return None;
    }
    if input.type_ != sys::GGML_TYPE_F32
        || input.data.is_null()
        || input.ne[0] != n_embd
        || input.ne[1] > MAX_TOKENS
        || input.ne[2] * input.ne[3] != 1
        || input.nb[0] != 4
    {
        return None;
    }
    // SAFETY: an F32 tensor in host memory, contiguous along its first dimension, just
    // computed (the selection that follows it was): its first row holds `n_embd` floats.
    Some(unsafe { std::slice::from_raw_parts(input.data.cast::<f32>(), n_embd as usize) })
}

/// The `n_used` experts `router` (`n_embd` × experts, any type ggml converts to F32) scores
/// highest on `hidden`, or `None` when the router cannot be read.
pub(crate) fn predict(
    router: &sys::ggml_tensor,
    hidden: &[f32],
    n_used: usize,
) -> Option<Vec<u32>> {
    let n_embd = router.ne[0];
    let n_expert = router.ne[1];
    if n_embd as usize != hidden.len() || n_expert <= 0 || router.data.is_null() {
        return None;
    }
    // F32 has no conversion in ggml's traits (and needs none).
    let to_float = if router.type_ == sys::GGML_TYPE_F32 {
        None
    } else {
        // SAFETY: plain lookup of a valid type id's traits.
        Some(unsafe { &*sys::ggml_get_type_traits(router.type_) }.to_float?)
    };
    let mut row = vec![0f32; n_embd as usize];
    let mut scores: Vec<(f32, u32)> = Vec::with_capacity(n_expert as usize);
    for e in 0..n_expert {
        // SAFETY: row `e` of the router starts at `e * nb[1]`, inside the tensor.
        let start = unsafe { router.data.cast::<u8>().add(e as usize * router.nb[1]) };
        match to_float {
            // SAFETY: the row holds `n_embd` elements of the router's type in host memory;
            // `row` has room for them as F32.
            Some(convert) => unsafe { convert(start.cast(), row.as_mut_ptr(), n_embd) },
            // SAFETY: the row holds `n_embd` F32 values in host memory; `row` has room for
            // them, and does not overlap the tensor.
            None => unsafe {
                std::ptr::copy_nonoverlapping(
                    start.cast::<f32>(),
                    row.as_mut_ptr(),
                    n_embd as usize,
                )
            },
        }
        let score: f32 = row.iter().zip(hidden).map(|(w, x)| w * x).sum();
        scores.push((score, e as u32));
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Some(scores.iter().take(n_used).map(|&(_, e)| e).collect())
}
