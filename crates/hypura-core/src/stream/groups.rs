//! A stream group's reads: where each goes in the tensors' own pages, and where it goes in a
//! window region (laid out so that direct I/O reads each in place).

use crate::io::ReadRequest;
use crate::memory::{pages_bytes, PAGE_BYTES};

/// A stream group's reads, as the runtime performs them.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupReads {
    /// Reads that fill it, into the tensors' own (home) pages.
    pub reads: Vec<ReadRequest>,
    /// The tensor each read fills (`ggml_tensor *` as an address; 0 for head rows, which
    /// hypura reads into its own memory).
    pub tensors: Vec<usize>,
    /// Name (for the tracker) of the tensor each read belongs to.
    pub names: Vec<String>,
    /// For LM-head chunks: (first row, row count).
    pub head_rows: Option<(u64, u64)>,
}

impl GroupReads {
    pub(super) fn home_bytes(&self) -> u64 {
        self.reads
            .iter()
            .map(|r| pages_bytes(r.dst as *const u8, r.len))
            .sum()
    }

    /// Where each read goes inside a window region, and the region's size (whole pages).
    /// Each read starts in a page of its own, at its file offset's position within a page,
    /// so that direct I/O reads it in place; it costs at most one page per read more than
    /// page-aligned starts (the plan's window slack per tensor).
    pub(super) fn window_layout(&self) -> (Vec<usize>, usize) {
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
