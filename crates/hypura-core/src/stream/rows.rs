//! The input embedding streams only the rows a batch looks up: before the lookup node
//! computes, each distinct id's row is read into the embedding's own pages; after the batch,
//! those pages are handed back.

use super::{RowSource, StreamFailure, Streamer};
use crate::memory::{pages_bytes, release_pages};

/// Rows read for the current batch.
#[derive(Debug, Default)]
pub(crate) struct RowsHeld {
    /// (address, length) of each row read.
    rows: Vec<(usize, usize)>,
    /// Whole pages they cover.
    bytes: u64,
}

impl RowsHeld {
    pub fn held_bytes(&self) -> u64 {
        self.bytes
    }
}

impl Streamer {
    /// Reads the rows `ids` of a tensor whose rows lie in the file as `source` says and in
    /// memory at `base + id * stride`.
    ///
    /// # Safety
    /// `base` must be the data of the tensor `source` describes, with `source.n_rows` rows
    /// of `stride` bytes in hypura's buffer, not read by anyone until the lookup node
    /// computes.
    pub(crate) unsafe fn load_rows(
        &mut self,
        base: *mut u8,
        stride: usize,
        ids: &[i32],
        source: RowSource,
        slot: usize,
    ) {
        let mut unique: Vec<i32> = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        for id in unique {
            if id < 0 || id as u64 >= source.n_rows {
                self.fail(StreamFailure::Graph(format!("token id {id} out of range")));
                return;
            }
            // SAFETY: `id` is a row of the tensor, by the check above and the caller's
            // contract.
            let dst = unsafe { base.add(id as usize * stride) };
            let len = source.row_bytes as usize;
            // SAFETY: the row lies inside the tensor's memory, which nobody reads until the
            // lookup node computes (the caller's contract).
            let read = unsafe {
                self.file()
                    .read_into(dst, len, source.file_offset + id as u64 * source.row_bytes)
            };
            if let Err(e) = read {
                self.fail(e.into());
                return;
            }
            self.tracker.read_from_disk(slot, source.row_bytes);
            self.rows.bytes += pages_bytes(dst, len);
            self.rows.rows.push((dst as usize, len));
        }
        self.note_held();
    }

    /// Hands the previous batch's rows back to the OS.
    pub(crate) fn release_rows(&mut self) {
        for (address, len) in self.rows.rows.drain(..) {
            // SAFETY: a row of the embedding in hypura's buffer; the batch that read it has
            // finished, and the embedding's pages hold nothing else (the tensor starts on a
            // page boundary and its rows are only ever read on demand).
            unsafe { release_pages(address as *mut u8, len) };
        }
        self.rows.bytes = 0;
    }
}
