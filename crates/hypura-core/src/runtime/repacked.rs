//! Filling the weights hypura hands to ggml's own `set_tensor`: those llama.cpp keeps in a
//! repacked layout (`CPU_REPACK`, or `AMX` in a build for a CPU with Intel's matrix
//! extensions), which ggml converts into place, and those of the GPU tier, which the GPU's
//! backend copies into its memory. Each tensor is read in chunks of whole row groups into a
//! staging buffer and handed over chunk by chunk, on several threads at once. llama.cpp's
//! loader does the same on one thread, a whole tensor at a time, and the conversion alone ran
//! at 0.6 GB/s per core here: slower than the disk.
//!
//! A chunk is converted through a view of the tensor that covers just its rows: both layouts
//! interleave groups of at most 16 consecutive rows (AMX: tiles of 16 rows) and store the
//! groups in row order, at the file's size per row (hypura repacks only weights whose
//! repacked size is their size in the file), so a chunk of whole groups converts to the same
//! bytes at the same place as the whole tensor would.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::io::{ModelFile, ReadError};
use crate::sys;

/// Rows per chunk are a multiple of this (every interleaved group size divides it).
const ROW_QUANTUM: u64 = 256;
/// Aim for chunks of about this many bytes.
const CHUNK_BYTES: u64 = 8 << 20;
/// Staging slack: room to place a chunk at its file offset's position within a page, so
/// that direct reads land in place.
const PAGE: usize = 4096;

/// One tensor to fill.
pub(crate) struct FillTarget {
    /// The tensor (in a repacking buffer, its `extra` set by ggml, or in a GPU's).
    pub tensor: NonNull<sys::ggml_tensor>,
    /// True for a repacked tensor: ggml must have made its layout (`extra`).
    pub repacked: bool,
    /// Where its bytes start in the model file.
    pub file_offset: u64,
    /// Bytes of one row in the file's layout.
    pub row_bytes: u64,
    /// Rows (all dimensions but the first).
    pub n_rows: u64,
}

// SAFETY: the tensor pointer is only used while its model is alive and unused (during load).
unsafe impl Send for FillTarget {}
// SAFETY: as above; each worker converts disjoint rows.
unsafe impl Sync for FillTarget {}

#[derive(Debug, Clone, Copy)]
struct Chunk {
    target: usize,
    first_row: u64,
    n_rows: u64,
}

fn chunks_of(targets: &[FillTarget]) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let rows_per_chunk = (CHUNK_BYTES / t.row_bytes.max(1) / ROW_QUANTUM).max(1) * ROW_QUANTUM;
        let mut first_row = 0;
        while first_row < t.n_rows {
            let n_rows = rows_per_chunk.min(t.n_rows - first_row);
            chunks.push(Chunk {
                target: i,
                first_row,
                n_rows,
            });
            first_row += n_rows;
        }
    }
    chunks
}

/// Why a tensor could not be filled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FillError {
    #[error("{0}")]
    Read(ReadError),
    #[error("ggml has no repacked layout for tensor {0}")]
    NoLayout(String),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("a thread filling the weights panicked")]
    Panicked,
}

/// Reads and hands over every target with `threads` threads; `done_bytes` counts the bytes
/// filled so far (for progress).
///
/// # Safety
/// The targets must be live tensors of a model that nothing else uses until this returns,
/// each `n_rows * row_bytes` bytes in the file layout, in buffers whose `set_tensor` takes
/// those bytes (ggml's repacking types convert them; a GPU's copies them) from several
/// threads at once.
pub(crate) unsafe fn fill_through_ggml(
    file: &ModelFile,
    targets: &[FillTarget],
    threads: usize,
    done_bytes: &AtomicU64,
) -> Result<(), FillError> {
    for t in targets {
        // SAFETY: a live tensor (the caller's contract).
        let tensor = unsafe { t.tensor.as_ref() };
        if (t.repacked && tensor.extra.is_null()) || tensor.buffer.is_null() {
            // SAFETY: ggml names are NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr(tensor.name.as_ptr()) };
            return Err(FillError::NoLayout(name.to_string_lossy().into_owned()));
        }
    }
    let chunks = chunks_of(targets);
    let largest = chunks
        .iter()
        .map(|c| c.n_rows * targets[c.target].row_bytes)
        .max()
        .unwrap_or(0) as usize;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: std::sync::Mutex<Option<FillError>> = std::sync::Mutex::new(None);
    std::thread::scope(|scope| {
        let work = || {
            let mut staging = vec![0u8; largest + 2 * PAGE];
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&c) = chunks.get(i) else { break };
                let t = &targets[c.target];
                let len = (c.n_rows * t.row_bytes) as usize;
                let offset = t.file_offset + c.first_row * t.row_bytes;
                // Start the staging copy at the offset's position within a page.
                let base = staging.as_mut_ptr() as usize;
                let shift = (offset as usize % PAGE + PAGE - base % PAGE) % PAGE;
                let dst = &mut staging[shift..shift + len];
                // SAFETY: `dst` is this thread's own staging memory, `len` bytes long.
                let read = unsafe { file.read_unchecked_into(dst.as_mut_ptr(), len, offset) };
                if let Err(e) = read {
                    failed.store(true, Ordering::Relaxed);
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert(FillError::Read(e));
                    }
                    break;
                }
                // SAFETY: a view of rows [first_row, first_row + n_rows) of a live tensor that
                // only this thread fills; whole row groups (see the module doc), so ggml's
                // conversion or copy of the view writes exactly those rows' bytes.
                unsafe {
                    let mut view = *t.tensor.as_ptr();
                    view.ne = [view.ne[0], c.n_rows as i64, 1, 1];
                    view.nb[1] = t.row_bytes as usize;
                    view.nb[2] = len;
                    view.nb[3] = len;
                    view.data = view
                        .data
                        .cast::<u8>()
                        .add((c.first_row * t.row_bytes) as usize)
                        .cast();
                    view.view_src = std::ptr::null_mut();
                    sys::ggml_backend_tensor_set(&mut view, dst.as_ptr().cast(), 0, len);
                }
                done_bytes.fetch_add(len as u64, Ordering::Relaxed);
            }
        };
        let mut started = 0;
        for i in 0..threads.max(1) {
            match std::thread::Builder::new()
                .name(format!("hypura-repack-{i}"))
                .spawn_scoped(scope, work)
            {
                Ok(_) => started += 1,
                Err(e) => {
                    if started == 0 {
                        failed.store(true, Ordering::Relaxed);
                        if let Ok(mut f) = first_error.lock() {
                            f.get_or_insert(FillError::Thread(e));
                        }
                    }
                    break;
                }
            }
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_row_groups_covering_every_row() {
        let t = |n_rows, row_bytes| FillTarget {
            tensor: NonNull::dangling(),
            repacked: true,
            file_offset: 0,
            row_bytes,
            n_rows,
        };
        // 14336 rows of 2304 bytes (a Mixtral expert matrix's rows x 8 experts), and a small
        // tensor of 40 rows.
        let targets = [t(14336 * 8, 2304), t(40, 1152)];
        let chunks = chunks_of(&targets);
        for (i, target) in targets.iter().enumerate() {
            let mine: Vec<_> = chunks.iter().filter(|c| c.target == i).collect();
            let mut next_row = 0;
            for c in &mine {
                assert_eq!(c.first_row, next_row);
                assert!(c.first_row % ROW_QUANTUM == 0);
                assert!(
                    c.n_rows * target.row_bytes <= CHUNK_BYTES.max(ROW_QUANTUM * target.row_bytes)
                );
                next_row += c.n_rows;
            }
            assert_eq!(next_row, target.n_rows);
        }
        assert_eq!(chunks.iter().filter(|c| c.target == 1).count(), 1);
    }
}
