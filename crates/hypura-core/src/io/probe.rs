//! The read probe: hypura's own reader (the pool, direct I/O, the request size streaming
//! uses) against one thread reading sequentially, over the same bytes of a file. The
//! building block of `hypura read-rate` and of the `io` benchmark.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::direct::{drop_file_cache, DIRECT_ALIGN};
use super::file::ModelFile;
use super::pool::{ReadPool, ReadRequest};
use crate::memory::ReservedMemory;

/// How many request-sized slots the probe's scratch memory has (reused round-robin).
const PROBE_SLOTS: usize = 64;

/// Reads the first bytes of a file in request-sized pieces into a small scratch window that
/// it owns, either on one thread (what `dd` does) or through hypura's reader pool; each pass
/// starts with the file's page cache dropped.
pub struct ReadProbe {
    file: Arc<ModelFile>,
    path: PathBuf,
    scratch: ReservedMemory,
    requests: Vec<ReadRequest>,
    request_bytes: usize,
    bytes: u64,
    fresh_pages: bool,
}

impl std::fmt::Debug for ReadProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadProbe")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .field("request_bytes", &self.request_bytes)
            .finish_non_exhaustive()
    }
}

impl ReadProbe {
    /// A probe of the first `limit` bytes of `path` (the whole file when smaller), read in
    /// pieces of `request_bytes` (at least 4 KiB, at most 1 GiB). With `fresh_pages`, the
    /// scratch pages are handed back to the OS before each reuse, so every read lands in
    /// newly faulted pages as it does when streaming into fresh memory.
    pub fn new(
        path: &Path,
        request_bytes: usize,
        limit: u64,
        fresh_pages: bool,
    ) -> std::io::Result<Self> {
        let request_bytes = request_bytes.clamp(DIRECT_ALIGN, 1 << 30);
        let mut file = ModelFile::open(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        file.prepare_streaming(false);
        let file = Arc::new(file);
        let bytes = file.size().min(limit);
        let scratch = ReservedMemory::new(PROBE_SLOTS * request_bytes)?;
        let base = scratch.base() as usize;
        let requests = (0..bytes.div_ceil(request_bytes as u64))
            .map(|i| {
                let offset = i * request_bytes as u64;
                ReadRequest {
                    dst: base + (i as usize % PROBE_SLOTS) * request_bytes,
                    len: (bytes - offset).min(request_bytes as u64) as usize,
                    offset,
                }
            })
            .collect();
        Ok(Self {
            file,
            path: path.to_path_buf(),
            scratch,
            requests,
            request_bytes,
            bytes,
            fresh_pages,
        })
    }

    /// The same probe reading from `shift` bytes further into the file (the same amount,
    /// less what the file's end takes away): with a shift that is not a multiple of 4 KiB,
    /// the file's positions no longer match the memory's within a page, and every read goes
    /// through the bounce buffer, as reads of expert slices do.
    pub fn shifted(mut self, shift: u64) -> Self {
        let bytes = self.file.size().saturating_sub(shift).min(self.bytes);
        let base = self.scratch.base() as usize;
        let request = self.request_bytes as u64;
        self.requests = (0..bytes.div_ceil(request))
            .map(|i| ReadRequest {
                dst: base + (i as usize % PROBE_SLOTS) * self.request_bytes,
                len: (bytes - i * request).min(request) as usize,
                offset: shift + i * request,
            })
            .collect();
        self.bytes = bytes;
        self
    }

    /// Bytes one pass reads.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when the reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.file.is_direct()
    }

    fn start_batch(&self) {
        if self.fresh_pages {
            self.scratch.release(0, PROBE_SLOTS * self.request_bytes);
        }
    }

    /// One pass on the calling thread; returns its duration.
    pub fn sequential(&self) -> std::io::Result<Duration> {
        drop_file_cache(&self.path);
        let started = Instant::now();
        for batch in self.requests.chunks(PROBE_SLOTS) {
            self.start_batch();
            for r in batch {
                // SAFETY: each request targets its own slot of the scratch memory this probe
                // owns; one thread, one request at a time.
                unsafe { self.file.read_into(r.dst as *mut u8, r.len, r.offset) }
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
            }
        }
        Ok(started.elapsed())
    }

    /// One pass through a pool of `threads` readers (started before the clock starts);
    /// returns its duration.
    pub fn pooled(&self, threads: usize) -> std::io::Result<Duration> {
        let pool = ReadPool::new(Arc::clone(&self.file), threads, self.request_bytes)?;
        drop_file_cache(&self.path);
        let started = Instant::now();
        // Batches of `PROBE_SLOTS` requests: no two requests in flight share a slot.
        for batch in self.requests.chunks(PROBE_SLOTS) {
            self.start_batch();
            // SAFETY: the requests of a batch target distinct slots of the scratch memory
            // this probe owns, and the batch is waited for before the slots are reused.
            let completion = unsafe { pool.submit(batch) };
            completion
                .wait()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(started.elapsed())
    }
}
