//! The reader threads: requests split into pieces of at most the request size, worked
//! through in submission order by a pool, so several large reads are in flight at once; each
//! set of requests (a stream group) has one completion to wait on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::direct::DIRECT_ALIGN;
use super::file::{ModelFile, ReadError};

/// Completion state of a set of reads (one stream group).
#[derive(Debug, Default)]
pub(crate) struct Completion {
    state: Mutex<(usize, Option<ReadError>)>,
    done: Condvar,
}

impl Completion {
    fn new(pending: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((pending, None)),
            done: Condvar::new(),
        })
    }

    fn finish_one(&self, error: Option<ReadError>) {
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
    pub(crate) fn wait(&self) -> Result<(), ReadError> {
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
    pub(crate) fn is_done(&self) -> bool {
        self.state.lock().map(|s| s.0 == 0).unwrap_or(true)
    }
}

/// One read: `len` bytes at `offset` into `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadRequest {
    /// Destination address (inside memory hypura owns).
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
pub(crate) struct ReadPool {
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    request_bytes: usize,
    /// Nanoseconds the threads spent reading, summed over threads.
    busy_ns: Arc<AtomicU64>,
}

impl ReadPool {
    /// Starts `threads` readers of `file`; requests are split into pieces of at most
    /// `request_bytes`. Fails when the OS refuses a thread.
    pub(crate) fn new(
        file: Arc<ModelFile>,
        threads: usize,
        request_bytes: usize,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let mut pool = Self {
            sender: Some(sender),
            workers: Vec::new(),
            request_bytes: request_bytes.max(4096),
            busy_ns: Arc::clone(&busy_ns),
        };
        for i in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let file = Arc::clone(&file);
            let busy_ns = Arc::clone(&busy_ns);
            let worker = std::thread::Builder::new()
                .name(format!("hypura-io-{i}"))
                .spawn(move || loop {
                    let job = match receiver.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let r = job.request;
                    let started = std::time::Instant::now();
                    // SAFETY: by the contract of `submit`, each destination range belongs to
                    // exactly one request and nobody touches it until the completion is done.
                    let result = unsafe { file.read_into(r.dst as *mut u8, r.len, r.offset) };
                    busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    job.completion.finish_one(result.err());
                })?;
            // (On an error above, dropping `pool` stops and joins the threads started.)
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    /// Reader threads.
    pub(crate) fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Seconds the threads have spent inside reads so far, summed over threads (a pool kept
    /// fed has `threads` seconds of it per second).
    pub(crate) fn busy_seconds(&self) -> f64 {
        self.busy_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Queues `requests` (split into pieces of at most the request size) and returns their
    /// completion.
    ///
    /// # Safety
    /// Each request's destination must be valid for writes of its length until the
    /// completion is done, and nothing else may read or write it meanwhile (nor may two
    /// requests overlap).
    pub(crate) unsafe fn submit(&self, requests: &[ReadRequest]) -> Arc<Completion> {
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
                completion.finish_one(Some(ReadError::Io("reader threads are gone".to_string())));
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
