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

/// A router's rows in host memory, checked to fit their bytes: borrowed from the model's own
/// tensor, or owned, copied from one a GPU holds.
pub(crate) struct RouterRows<B> {
    /// `n_expert` rows of `row_stride` bytes, each `n_embd` elements of `ggml_type`.
    bytes: B,
    ggml_type: sys::ggml_type,
    n_embd: i64,
    n_expert: i64,
    row_stride: usize,
}

impl<'a> RouterRows<&'a [u8]> {
    /// The rows of a router tensor in host memory.
    ///
    /// # Safety
    /// `router`'s data must be in host memory (not a GPU's) and stay alive, unchanged, for
    /// `'a`.
    pub unsafe fn of_tensor(router: &'a sys::ggml_tensor) -> Option<Self> {
        if router.data.is_null() {
            return None;
        }
        // SAFETY: a tensor's data spans `ggml_nbytes` bytes, in host memory (the caller).
        let bytes = unsafe {
            std::slice::from_raw_parts(router.data.cast::<u8>(), sys::ggml_nbytes(router))
        };
        Self::new(
            bytes,
            router.type_,
            router.ne[0],
            router.ne[1],
            router.nb[1],
        )
    }
}

impl<B: AsRef<[u8]>> RouterRows<B> {
    /// Rows held in `bytes`, checked to fit.
    pub fn new(
        bytes: B,
        ggml_type: sys::ggml_type,
        n_embd: i64,
        n_expert: i64,
        row_stride: usize,
    ) -> Option<Self> {
        if n_embd <= 0 || n_expert <= 0 {
            return None;
        }
        // A type id ggml knows (checked before its tables are read).
        let (block, block_bytes) = crate::model::gguf::ggml_type_bytes(ggml_type)?;
        if n_embd as u64 % block != 0 {
            return None;
        }
        let row_bytes = usize::try_from(n_embd as u64 / block * block_bytes).ok()?;
        let span = (n_expert as usize - 1)
            .checked_mul(row_stride)?
            .checked_add(row_bytes)?;
        (row_stride >= row_bytes && span <= bytes.as_ref().len()).then_some(Self {
            bytes,
            ggml_type,
            n_embd,
            n_expert,
            row_stride,
        })
    }
}

/// The `n_used` experts `router` scores highest on `hidden` (any type ggml converts to F32),
/// or `None` when the router cannot be read.
pub(crate) fn predict<B: AsRef<[u8]>>(
    router: &RouterRows<B>,
    hidden: &[f32],
    n_used: usize,
) -> Option<Vec<u32>> {
    let n_embd = router.n_embd;
    if n_embd as usize != hidden.len() {
        return None;
    }
    // F32 has no conversion in ggml's traits (and needs none).
    let to_float = if router.ggml_type == sys::GGML_TYPE_F32 {
        None
    } else {
        // SAFETY: a lookup of the traits of a type id ggml knows (checked by
        // `RouterRows::new`).
        Some(unsafe { &*sys::ggml_get_type_traits(router.ggml_type) }.to_float?)
    };
    let mut row = vec![0f32; n_embd as usize];
    let mut scores: Vec<(f32, u32)> = Vec::with_capacity(router.n_expert as usize);
    for e in 0..router.n_expert as usize {
        // Row `e` lies inside the bytes (checked by `RouterRows::new`).
        let start = &router.bytes.as_ref()[e * router.row_stride..];
        match to_float {
            // SAFETY: `start` holds the row's `n_embd` elements of the router's type (checked
            // by `RouterRows::new`); `row` has room for them as F32.
            Some(convert) => unsafe { convert(start.as_ptr().cast(), row.as_mut_ptr(), n_embd) },
            None => {
                for (x, b) in row.iter_mut().zip(start.chunks_exact(4)) {
                    *x = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        let score: f32 = row.iter().zip(hidden).map(|(w, x)| w * x).sum();
        scores.push((score, e as u32));
    }
    scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Some(scores.iter().take(n_used).map(|&(_, e)| e).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four experts' F32 rows of 8: expert `e` weighs channel `e` by `e + 1`.
    fn router_bytes() -> Vec<u8> {
        let mut bytes = Vec::new();
        for e in 0..4 {
            for c in 0..8 {
                let w = if c == e { (e + 1) as f32 } else { 0.0 };
                bytes.extend_from_slice(&w.to_ne_bytes());
            }
        }
        bytes
    }

    #[test]
    fn a_copied_router_picks_the_experts_that_score_highest() {
        let bytes = router_bytes();
        let rows = RouterRows::new(&bytes, sys::GGML_TYPE_F32, 8, 4, 32).unwrap();
        // Channel 0 strong, 3 weaker, 1 weakest: scores 1.0, 0.5, 0, 2.0 (x by e + 1).
        let hidden = [1.0, 0.25, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(predict(&rows, &hidden, 2), Some(vec![3, 0]));
        // A hidden state of another width is not predicted from.
        assert_eq!(predict(&rows, &hidden[..4], 2), None);
    }

    #[test]
    fn rows_that_do_not_fit_their_bytes_are_refused() {
        let bytes = router_bytes();
        assert!(RouterRows::new(&bytes[..127], sys::GGML_TYPE_F32, 8, 4, 32).is_none());
        assert!(RouterRows::new(&bytes, sys::GGML_TYPE_F32, 8, 5, 32).is_none());
        assert!(RouterRows::new(&bytes, sys::GGML_TYPE_F32, 8, 4, 16).is_none());
        assert!(RouterRows::new(&bytes, sys::GGML_TYPE_F32, 0, 4, 32).is_none());
        // Q4_0 rows come in blocks of 32: 8 elements are not a row of it.
        assert!(RouterRows::new(&bytes, sys::GGML_TYPE_Q4_0, 8, 4, 32).is_none());
        // A type id ggml does not know is refused before its tables are read.
        assert!(RouterRows::new(&bytes, sys::GGML_TYPE_COUNT, 8, 4, 32).is_none());
        assert!(RouterRows::new(&bytes, u32::MAX, 8, 4, 32).is_none());
    }
}
