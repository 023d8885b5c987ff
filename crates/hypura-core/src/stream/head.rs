//! hypura's own LM head: `logits = output · h` for a run of rows of the output matrix, with
//! the same ggml CPU kernel llama.cpp's graph would use (and Gemma's soft-capping), so that a
//! head too large for the budget can be streamed in chunks.

use crate::sys;

/// Computes logits for row chunks of a quantized head matrix.
#[derive(Debug, Clone)]
pub(crate) struct HeadCompute {
    /// ggml type of the head.
    pub ggml_type: u32,
    /// Embedding width (columns of the head).
    pub n_embd: i64,
    /// Rows of the head (vocabulary size).
    pub n_vocab: i64,
    /// Final logit soft-capping (0 = none).
    pub softcap: f32,
}

impl HeadCompute {
    /// Computes rows `rows` of the logits of `n_out` hidden
    /// states `hidden` (`n_embd` floats each) and stores them into `logits`
    /// (`n_out * n_vocab` floats, one vocabulary-long row per output).
    ///
    /// # Safety
    /// `weights` must point to the rows `rows` of the head in ggml layout.
    pub(crate) unsafe fn compute(
        &self,
        weights: *const u8,
        rows: std::ops::Range<i64>,
        hidden: &[f32],
        n_out: i64,
        logits: &mut [f32],
        cpu: &mut crate::llama::CpuBackend,
    ) -> Result<(), String> {
        if hidden.len() as i64 != self.n_embd * n_out || logits.len() as i64 != self.n_vocab * n_out
        {
            return Err("head: buffer sizes do not match".into());
        }
        let (first_row, n_rows) = (rows.start, rows.end - rows.start);
        let result_bytes = (n_rows * n_out * 4) as usize;
        // SAFETY: plain ggml context/graph construction on memory this function owns; the
        // weight and hidden tensors point at caller memory that outlives the computation.
        unsafe {
            let meta = sys::ggml_init(sys::ggml_init_params {
                mem_size: sys::ggml_tensor_overhead() * 4,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: true,
            });
            let ctx = sys::ggml_init(sys::ggml_init_params {
                mem_size: sys::ggml_tensor_overhead() * 8
                    + sys::ggml_graph_overhead()
                    + 4 * result_bytes
                    + 4096,
                mem_buffer: std::ptr::null_mut(),
                no_alloc: false,
            });
            if meta.is_null() || ctx.is_null() {
                if !meta.is_null() {
                    sys::ggml_free(meta);
                }
                if !ctx.is_null() {
                    sys::ggml_free(ctx);
                }
                return Err("head: cannot create a ggml context".into());
            }
            let w = sys::ggml_new_tensor_2d(meta, self.ggml_type, self.n_embd, n_rows);
            (*w).data = weights as *mut _;
            let h = sys::ggml_new_tensor_2d(meta, sys::GGML_TYPE_F32, self.n_embd, n_out);
            (*h).data = hidden.as_ptr() as *mut _;
            let mut out = sys::ggml_mul_mat(ctx, w, h);
            if self.softcap != 0.0 {
                out = sys::ggml_scale(ctx, out, 1.0 / self.softcap);
                out = sys::ggml_tanh(ctx, out);
                out = sys::ggml_scale(ctx, out, self.softcap);
            }
            let graph = sys::ggml_new_graph(ctx);
            sys::ggml_build_forward_expand(graph, out);
            let status = cpu.compute(graph);
            if status == sys::GGML_STATUS_SUCCESS {
                let values = std::slice::from_raw_parts(
                    (*out).data as *const f32,
                    (n_rows * n_out) as usize,
                );
                for j in 0..n_out {
                    let src = &values[(j * n_rows) as usize..((j + 1) * n_rows) as usize];
                    let start = (j * self.n_vocab + first_row) as usize;
                    logits[start..start + n_rows as usize].copy_from_slice(src);
                }
            }
            sys::ggml_free(ctx);
            sys::ggml_free(meta);
            if status != sys::GGML_STATUS_SUCCESS {
                return Err(format!("head: ggml compute failed with status {status}"));
            }
        }
        Ok(())
    }
}

/// The LM head when hypura computes it.
#[derive(Debug)]
pub(crate) struct StreamedHead {
    /// Kernel parameters.
    pub compute: HeadCompute,
    /// Groups holding its chunks, in order.
    pub groups: Vec<usize>,
    /// Where the chunks are read to (the head's own reserved memory), held for as long as
    /// the chunks' reads point into it.
    pub _memory: crate::memory::ReservedMemory,
    /// The CPU backend the chunks are computed on (its thread pool sleeps between chunks).
    pub cpu: crate::llama::CpuBackend,
    /// Logits of the last batch (`n_out * n_vocab`).
    pub logits: Vec<f32>,
    /// True once `logits` holds the last batch's.
    pub logits_ready: bool,
}

impl super::Streamer {
    /// True when hypura computes the head (the graph stops at its input node).
    pub(crate) fn head_streamed(&self) -> bool {
        self.head.is_some()
    }

    /// The graph node that holds the head's input.
    pub(crate) fn head_input_node(&self) -> &'static str {
        self.head_input_node
    }

    /// Logits hypura computed for the last batch (`n_out * n_vocab`), if the head streams.
    pub fn logits(&self) -> Option<&[f32]> {
        self.head
            .as_ref()
            .filter(|h| h.logits_ready)
            .map(|h| h.logits.as_slice())
    }

    /// Computes the logits of `n_out` hidden states (`hidden`, `n_embd` floats each), chunk
    /// by chunk as the head's groups arrive, after those of the batch's earlier micro-batches
    /// (llama.cpp splits a batch in order: see `kv_unified` where the context is made).
    pub(crate) fn compute_head(&mut self, hidden: &[f32], n_out: usize) {
        // Out of `self` while the chunks stream (acquiring them needs `self`).
        let Some(mut head) = self.head.take() else {
            return;
        };
        let result = self.compute_head_chunks(&mut head, hidden, n_out);
        head.logits_ready = result.is_ok();
        if let Err(e) = result {
            self.fail(e);
        }
        self.head = Some(head);
    }

    fn compute_head_chunks(
        &mut self,
        head: &mut StreamedHead,
        hidden: &[f32],
        n_out: usize,
    ) -> Result<(), super::StreamFailure> {
        let StreamedHead {
            compute,
            groups,
            cpu,
            logits,
            ..
        } = head;
        let start = logits.len();
        logits.resize(start + n_out * compute.n_vocab as usize, 0.0);
        if n_out == 0 {
            return Ok(());
        }
        for &g in groups.iter() {
            self.acquire(g);
            if let Some(e) = &self.error {
                return Err(e.clone());
            }
            let Some((first_row, n_rows)) = self.groups[g].head_rows else {
                continue;
            };
            let Some(dst) = self.first_read_address(g) else {
                return Err(super::StreamFailure::Graph(format!(
                    "head chunk {g} is not in memory"
                )));
            };
            // SAFETY: the group's reads completed (acquire waited) into `dst`, which holds
            // rows `first_row..first_row + n_rows` of the head in ggml layout.
            unsafe {
                compute.compute(
                    dst as *const u8,
                    first_row as i64..(first_row + n_rows) as i64,
                    hidden,
                    n_out as i64,
                    &mut logits[start..],
                    cpu,
                )
            }
            .map_err(super::StreamFailure::Graph)?;
        }
        Ok(())
    }
}
