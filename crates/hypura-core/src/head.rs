//! hypura's own LM head: `logits = output · h` for a run of rows of the output matrix, with
//! the same ggml CPU kernel llama.cpp's graph would use (and Gemma's soft-capping), so that a
//! head too large for the budget can be streamed in chunks.

use crate::sys;

/// Computes logits for row chunks of a quantized head matrix.
#[derive(Debug, Clone)]
pub struct HeadCompute {
    /// ggml type of the head.
    pub ggml_type: u32,
    /// Embedding width (columns of the head).
    pub n_embd: i64,
    /// Rows of the head (vocabulary size).
    pub n_vocab: i64,
    /// Final logit soft-capping (0 = none).
    pub softcap: f32,
    /// CPU threads.
    pub n_threads: i32,
}

impl HeadCompute {
    /// Computes rows `rows` of the logits of `n_out` hidden
    /// states `hidden` (`n_embd` floats each) and stores them into `logits`
    /// (`n_out * n_vocab` floats, one vocabulary-long row per output).
    ///
    /// # Safety
    /// `weights` must point to the rows `rows` of the head in ggml layout.
    pub unsafe fn compute(
        &self,
        weights: *const u8,
        rows: std::ops::Range<i64>,
        hidden: &[f32],
        n_out: i64,
        logits: &mut [f32],
        pool: Option<&crate::threads::ThreadPool>,
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
            let pool = pool.map_or(std::ptr::null_mut(), |p| p.as_ptr());
            let mut plan = sys::ggml_graph_plan(graph, self.n_threads, pool);
            let mut work = vec![0u8; plan.work_size];
            plan.work_data = work.as_mut_ptr();
            let status = sys::ggml_graph_compute(graph, &mut plan);
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
