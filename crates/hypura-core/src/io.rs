//! The only code that reads the model file after load: positioned reads straight into
//! hypura's memory, the file's page cache dropped behind them, a pool of reader threads so
//! several large requests are in flight at once, and a byte counter for the statistics.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// The model file, opened read-only: once buffered, and once with `O_DIRECT` where the
/// file system allows it (reads then bypass the page cache entirely: nothing is charged to a
/// memory cgroup and nothing needs dropping).
#[derive(Debug)]
pub struct ModelFile {
    file: File,
    direct: Option<File>,
    path: PathBuf,
    bytes_read: AtomicU64,
}

/// Alignment `O_DIRECT` needs for offsets, lengths and memory (covers 512 B and 4 KiB sectors).
const DIRECT_ALIGN: usize = 4096;
/// Largest direct read; longer requests are read in pieces.
const DIRECT_CHUNK: usize = 4 << 20;

thread_local! {
    /// Per-thread aligned bounce buffer for direct reads.
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ModelFile {
    /// Opens `path` read-only. hypura never writes to model files.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // Random access: no kernel read-ahead beyond what each request asks for.
        // SAFETY: a valid fd; advice only.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
        let direct = match std::env::var("HYPURA_DIRECT_IO").as_deref() {
            Ok("0") => None,
            _ => open_direct(path),
        };
        Ok(Self {
            file,
            direct,
            path: path.to_path_buf(),
            bytes_read: AtomicU64::new(0),
        })
    }

    /// True when reads bypass the page cache (`O_DIRECT`).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Reads through the direct descriptor into an aligned bounce buffer, then copies.
    fn read_direct(&self, direct: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        BOUNCE.with(|bounce| {
            let mut bounce = bounce.borrow_mut();
            // Sized to the largest read seen on this thread (a request, or one embedding row).
            // Room for the read rounded up to whole blocks, a block of lead-in, and the
            // alignment shift.
            let needed = buf.len().min(DIRECT_CHUNK).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
                + 3 * DIRECT_ALIGN;
            if bounce.len() < needed {
                *bounce = vec![0u8; needed];
            }
            let shift = bounce.as_ptr().align_offset(DIRECT_ALIGN);
            let usable = (bounce.len() - shift) / DIRECT_ALIGN * DIRECT_ALIGN;
            let aligned = &mut bounce[shift..shift + usable];
            let mut done = 0usize;
            while done < buf.len() {
                // `usable` is at least the rounded read + 2 blocks, so `want` is never 0.
                let want = (buf.len() - done).min(usable - DIRECT_ALIGN);
                let start = offset + done as u64;
                let aligned_start = start / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64;
                let lead = (start - aligned_start) as usize;
                let span = (lead + want).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
                let mut got = 0usize;
                while got < lead + want {
                    match direct.read_at(&mut aligned[got..span], aligned_start + got as u64) {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "failed to fill whole buffer",
                            ))
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf[done..done + want].copy_from_slice(&aligned[lead..lead + want]);
                done += want;
            }
            Ok(())
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Direct read of `buf` when it sits at the same offset within a 4 KiB page as `offset`
    /// does within the file: the whole blocks in the middle go straight into `buf` (no
    /// copy), the partial first and last blocks through the bounce buffer. Returns false
    /// (nothing read) when `buf` is not placed that way or too short to gain anything.
    fn read_direct_in_place(
        &self,
        direct: &File,
        buf: &mut [u8],
        offset: u64,
    ) -> std::io::Result<bool> {
        let align = DIRECT_ALIGN as u64;
        if buf.as_ptr() as u64 % align != offset % align {
            return Ok(false);
        }
        let end = offset + buf.len() as u64;
        let middle_start = offset.div_ceil(align) * align;
        let middle_end = end / align * align;
        if middle_end <= middle_start {
            return Ok(false);
        }
        let lead = (middle_start - offset) as usize;
        let middle_len = (middle_end - middle_start) as usize;
        let (head, rest) = buf.split_at_mut(lead);
        let (middle, tail) = rest.split_at_mut(middle_len);
        if !head.is_empty() {
            self.read_direct(direct, head, offset)?;
        }
        // Offsets, lengths and memory are whole blocks, and the middle ends before the
        // file does: no short read but at an error.
        direct.read_exact_at(middle, middle_start)?;
        if !tail.is_empty() {
            self.read_direct(direct, tail, middle_end)?;
        }
        Ok(true)
    }

    /// Reads exactly `buf.len()` bytes at `offset`: directly when possible (into `buf` itself
    /// when it is placed at the file offset's position within a page, else through a bounce
    /// buffer), else buffered and then dropping those pages from the page cache so that
    /// streaming never grows it.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if let Some(direct) = &self.direct {
            if !self.read_direct_in_place(direct, buf, offset)? {
                self.read_direct(direct, buf, offset)?;
            }
            self.bytes_read
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            return Ok(());
        }
        self.file.read_exact_at(buf, offset)?;
        self.bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        // SAFETY: a valid fd; advice only.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as libc::off_t,
                buf.len() as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        Ok(())
    }

    /// Reads `len` bytes at `offset` into raw memory.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes and not accessed by anyone else until
    /// this returns.
    pub unsafe fn read_into(&self, dst: *mut u8, len: usize, offset: u64) -> std::io::Result<()> {
        // SAFETY: guaranteed by the caller.
        let buf = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        self.read_exact_at(buf, offset)
    }

    /// Total bytes read through this handle.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

/// Completion state of a set of reads (one stream group).
#[derive(Debug, Default)]
pub struct Completion {
    state: Mutex<(usize, Option<String>)>,
    done: Condvar,
}

impl Completion {
    fn new(pending: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((pending, None)),
            done: Condvar::new(),
        })
    }

    fn finish_one(&self, error: Option<String>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(1);
        if state.1.is_none() {
            state.1 = error;
        }
        if state.0 == 0 {
            self.done.notify_all();
        }
    }

    /// Blocks until every read finished; returns the first error.
    pub fn wait(&self) -> Result<(), String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while state.0 > 0 {
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        match &state.1 {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// True when every read finished.
    pub fn is_done(&self) -> bool {
        self.state.lock().map(|s| s.0 == 0).unwrap_or(true)
    }
}

/// One read: `len` bytes at `offset` into `dst`.
#[derive(Debug, Clone, Copy)]
pub struct ReadRequest {
    /// Destination address (inside a hypura buffer).
    pub dst: usize,
    /// Byte count.
    pub len: usize,
    /// File offset.
    pub offset: u64,
}

struct Job {
    request: ReadRequest,
    completion: Arc<Completion>,
}

/// A pool of reader threads working through requests in submission order.
pub struct ReadPool {
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    request_bytes: usize,
    /// Nanoseconds the threads spent reading, summed over threads.
    busy_ns: Arc<AtomicU64>,
}

impl ReadPool {
    /// Starts `threads` readers of `file`; requests are split into pieces of at most
    /// `request_bytes`.
    pub fn new(file: Arc<ModelFile>, threads: usize, request_bytes: usize) -> Self {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let workers = (0..threads.max(1))
            .map(|i| {
                let receiver = Arc::clone(&receiver);
                let file = Arc::clone(&file);
                let busy_ns = Arc::clone(&busy_ns);
                std::thread::Builder::new()
                    .name(format!("hypura-io-{i}"))
                    .spawn(move || loop {
                        let job = match receiver.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let r = job.request;
                        let started = std::time::Instant::now();
                        // SAFETY: the scheduler hands out each destination range to exactly
                        // one request and does not touch it until the completion is done.
                        let result = unsafe { file.read_into(r.dst as *mut u8, r.len, r.offset) };
                        busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        job.completion.finish_one(
                            result
                                .err()
                                .map(|e| format!("{} bytes at offset {}: {e}", r.len, r.offset)),
                        );
                    })
                    .expect("spawn reader thread")
            })
            .collect();
        Self {
            sender: Some(sender),
            workers,
            request_bytes: request_bytes.max(4096),
            busy_ns,
        }
    }

    /// Reader threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Seconds the threads have spent inside reads so far, summed over threads (a pool kept
    /// fed has `threads` seconds of it per second).
    pub fn busy_seconds(&self) -> f64 {
        self.busy_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Queues `requests` (split into pieces of at most the request size) and returns their
    /// completion.
    pub fn submit(&self, requests: &[ReadRequest]) -> Arc<Completion> {
        let mut pieces = Vec::new();
        for r in requests {
            let mut done = 0usize;
            while done < r.len {
                let mut len = (r.len - done).min(self.request_bytes);
                // End pieces on block boundaries of the file, so that a read placed for
                // direct I/O in place splits into pieces that are each placed that way too.
                let end = r.offset + (done + len) as u64;
                let aligned_end = end / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64;
                if done + len < r.len && aligned_end > r.offset + done as u64 {
                    len = (aligned_end - r.offset) as usize - done;
                }
                pieces.push(ReadRequest {
                    dst: r.dst + done,
                    len,
                    offset: r.offset + done as u64,
                });
                done += len;
            }
        }
        let completion = Completion::new(pieces.len());
        if pieces.is_empty() {
            return completion;
        }
        for request in pieces {
            let job = Job {
                request,
                completion: Arc::clone(&completion),
            };
            let sent = self.sender.as_ref().map(|s| s.send(job));
            if !matches!(sent, Some(Ok(()))) {
                completion.finish_one(Some("reader threads are gone".to_string()));
            }
        }
        completion
    }
}

impl Drop for ReadPool {
    fn drop(&mut self) {
        self.sender.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Opens `path` with `O_DIRECT`, if the file system supports it (tmpfs does not).
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    // Probe one aligned read: some file systems accept the flag and fail the reads.
    let mut probe = vec![0u8; 2 * DIRECT_ALIGN];
    let shift = probe.as_ptr().align_offset(DIRECT_ALIGN);
    file.read_at(&mut probe[shift..shift + DIRECT_ALIGN], 0)
        .ok()?;
    Some(file)
}

/// No direct reads outside Linux yet (macOS would use `F_NOCACHE`; untested here).
#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

/// Read-rate comparison of hypura's reader against a plain sequential read of the same file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadRate {
    /// Bytes read by each method.
    pub bytes: u64,
    /// hypura's pool (the threads and request size given), bytes/s.
    pub pool_bytes_per_s: f64,
    /// One thread reading sequentially in `request_bytes` pieces (like `dd`), bytes/s, with
    /// the same direct or buffered mode as the pool.
    pub sequential_bytes_per_s: f64,
}

/// How many request-sized slots the probe's scratch memory has (reused round-robin).
const PROBE_SLOTS: usize = 64;

/// Reads the first `limit` bytes of a file in request-sized pieces into a small scratch
/// window, either on one thread (what `dd` does) or through a [`ReadPool`]; each pass starts
/// with the file's page cache dropped. The building block of `hypura read-rate` and of the
/// `io` benchmark.
pub struct ReadProbe {
    file: Arc<ModelFile>,
    path: PathBuf,
    scratch: crate::tier::ReservedMemory,
    requests: Vec<ReadRequest>,
    request_bytes: usize,
    bytes: u64,
    fresh_pages: bool,
}

impl ReadProbe {
    /// A probe of the first `limit` bytes of `path` (the whole file when smaller), read in
    /// pieces of `request_bytes`. With `fresh_pages`, the scratch pages are handed back to the
    /// OS before each reuse, so every read lands in newly faulted pages as it does when
    /// hypura streams weights.
    pub fn new(
        path: &Path,
        request_bytes: usize,
        limit: u64,
        fresh_pages: bool,
    ) -> std::io::Result<Self> {
        let request_bytes = request_bytes.max(DIRECT_ALIGN);
        let file = Arc::new(ModelFile::open(path)?);
        let bytes = std::fs::metadata(path)?.len().min(limit);
        let scratch = crate::tier::ReservedMemory::new(PROBE_SLOTS * request_bytes)?;
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

    /// Bytes one pass reads.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True when the reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.file.is_direct()
    }

    fn drop_cache(&self) {
        if let Ok(f) = File::open(&self.path) {
            // SAFETY: a valid fd; advice only.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }

    fn start_batch(&self) {
        if self.fresh_pages {
            crate::tier::release_pages(self.scratch.base(), PROBE_SLOTS * self.request_bytes);
        }
    }

    /// One pass on the calling thread; returns its duration.
    pub fn sequential(&self) -> std::io::Result<std::time::Duration> {
        self.drop_cache();
        let started = std::time::Instant::now();
        for batch in self.requests.chunks(PROBE_SLOTS) {
            self.start_batch();
            for r in batch {
                // SAFETY: each request targets its own slot of the scratch memory; one
                // thread, one request at a time.
                unsafe { self.file.read_into(r.dst as *mut u8, r.len, r.offset)? };
            }
        }
        Ok(started.elapsed())
    }

    /// One pass through a pool of `threads` readers (started before the clock starts);
    /// returns its duration.
    pub fn pooled(&self, threads: usize) -> std::io::Result<std::time::Duration> {
        let pool = ReadPool::new(Arc::clone(&self.file), threads, self.request_bytes);
        self.drop_cache();
        let started = std::time::Instant::now();
        // Batches of `PROBE_SLOTS` requests: no two requests in flight share a slot.
        for batch in self.requests.chunks(PROBE_SLOTS) {
            self.start_batch();
            pool.submit(batch).wait().map_err(std::io::Error::other)?;
        }
        Ok(started.elapsed())
    }
}

/// Reads up to `limit` bytes of `path` twice — once sequentially, once through a [`ReadPool`]
/// of `threads` — dropping the file's cache before each (see [`ReadProbe`]).
pub fn compare_read_rate(
    path: &Path,
    threads: usize,
    request_bytes: usize,
    limit: u64,
    fresh_pages: bool,
) -> std::io::Result<ReadRate> {
    let probe = ReadProbe::new(path, request_bytes, limit, fresh_pages)?;
    let rate = |d: std::time::Duration| probe.bytes() as f64 / d.as_secs_f64().max(1e-9);
    let sequential = rate(probe.sequential()?);
    let pooled = rate(probe.pooled(threads)?);
    Ok(ReadRate {
        bytes: probe.bytes(),
        pool_bytes_per_s: pooled,
        sequential_bytes_per_s: sequential,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::ReservedMemory;

    const PAGE: usize = 4096;

    fn byte_at(i: usize) -> u8 {
        (i.wrapping_mul(7) ^ (i / PAGE)) as u8
    }

    /// A file on the build's disk (not tmpfs, so that direct I/O is exercised where the file
    /// system allows it), removed on drop.
    struct TestFile(PathBuf);

    impl TestFile {
        fn new(name: &str, len: usize) -> Self {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
            let path = dir.join(format!("hypura-io-{name}-{}", std::process::id()));
            let bytes: Vec<u8> = (0..len).map(byte_at).collect();
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }
    }

    impl Drop for TestFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn reads_are_exact_in_place_and_through_the_bounce_buffer() {
        let len = 3 * (1 << 20) + 123;
        let file = TestFile::new("exact", len);
        let model = ModelFile::open(&file.0).unwrap();
        // Which path ran shows in the output (`cargo test -- --nocapture`); both are exact.
        eprintln!("direct I/O: {}", model.is_direct());
        let memory = ReservedMemory::new(2 << 20).unwrap();
        let cases = [
            (0usize, 10usize),
            (0, PAGE),
            (1, PAGE),
            (4095, 2),
            (100, 3 * PAGE + 17),
            (PAGE, 1 << 20),
            (12_345, (1 << 20) + 999),
            (len - 5000, 5000),
            (len - 1, 1),
        ];
        for (offset, n) in cases {
            // Same position within a page as the file offset (read in place when direct),
            // then one byte off (always through the bounce buffer).
            for shift in [offset % PAGE, (offset + 1) % PAGE] {
                let dst = unsafe { memory.base().add(PAGE + shift) };
                unsafe { model.read_into(dst, n, offset as u64) }.unwrap();
                let got = unsafe { std::slice::from_raw_parts(dst, n) };
                for (k, &b) in got.iter().enumerate() {
                    assert_eq!(
                        b,
                        byte_at(offset + k),
                        "offset {offset} len {n} shift {shift} byte {k}"
                    );
                }
            }
        }
        // Past the end: an error, not a short read.
        let dst = memory.base();
        assert!(unsafe { model.read_into(dst, 10, len as u64 - 5) }.is_err());
    }

    #[test]
    fn the_pool_splits_requests_on_block_boundaries_and_reads_them_exactly() {
        let len = 2 * (1 << 20) + 4321;
        let file = TestFile::new("pool", len);
        let model = Arc::new(ModelFile::open(&file.0).unwrap());
        let pool = ReadPool::new(Arc::clone(&model), 3, 64 << 10);
        let memory = ReservedMemory::new(4 << 20).unwrap();
        let base = memory.base() as usize;
        let offset = 777usize;
        let n = len - offset - 100;
        let requests = [
            ReadRequest {
                dst: base + offset % PAGE,
                len: n,
                offset: offset as u64,
            },
            ReadRequest {
                dst: base + (3 << 20) + 5,
                len: 70_000,
                offset: 3,
            },
        ];
        pool.submit(&requests).wait().unwrap();
        let first = unsafe { std::slice::from_raw_parts(requests[0].dst as *const u8, n) };
        assert!(first
            .iter()
            .enumerate()
            .all(|(k, &b)| b == byte_at(offset + k)));
        let second = unsafe { std::slice::from_raw_parts(requests[1].dst as *const u8, 70_000) };
        assert!(second.iter().enumerate().all(|(k, &b)| b == byte_at(3 + k)));
        assert_eq!(model.bytes_read(), (n + 70_000) as u64);
    }
}
