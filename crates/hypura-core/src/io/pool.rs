//! The reader threads: requests split into pieces of at most the request size, worked
//! through in submission order by a pool, so several large reads are in flight at once; each
//! set of requests (a stream group) has one completion to wait on. When the file's streamed
//! regions are checksummed, a reader hands each piece it read to a checker thread and goes
//! back to reading: hashing on the readers kept fewer reads in flight (it cost about 8% of
//! the decode speed at 7B/2 GiB on the GPU machine); the completion is done once every
//! piece is read and checked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::direct::DIRECT_ALIGN;
use super::file::{ModelFile, ReadError};

/// Completion state of a set of reads (one stream group).
#[derive(Debug, Default)]
pub(crate) struct Completion {
    state: Mutex<(usize, Option<ReadError>)>,
    done: Condvar,
    /// Reads in the set.
    pieces: usize,
}

impl Completion {
    fn new(pending: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((pending, None)),
            done: Condvar::new(),
            pieces: pending,
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

    /// Reads in the set (requests are split into pieces of at most the pool's request size).
    pub(crate) fn pieces(&self) -> usize {
        self.pieces
    }

    /// Waits up to `timeout` for every read to finish; returns how many are still pending.
    pub(crate) fn wait_for(&self, timeout: std::time::Duration) -> usize {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (state, _) = self
            .done
            .wait_timeout_while(state, timeout, |s| s.0 > 0)
            .unwrap_or_else(|e| e.into_inner());
        state.0
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

/// Threads that check pieces against their checksums, when the file is checked.
const CHECKER_THREADS: usize = 2;

/// A pool of reader threads working through requests in submission order.
pub(crate) struct ReadPool {
    sender: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    check_sender: Option<Sender<Job>>,
    checkers: Vec<JoinHandle<()>>,
    request_bytes: usize,
    /// Nanoseconds the threads spent reading, summed over threads.
    busy_ns: Arc<AtomicU64>,
}

/// Runs `work` on each job from `receiver` until the channel closes.
fn serve(receiver: Arc<Mutex<Receiver<Job>>>, mut work: impl FnMut(Job)) {
    loop {
        let job = match receiver.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        work(job);
    }
}

/// Makes the calling thread run only on otherwise idle cores (Linux `SCHED_IDLE`): the
/// checkers must never take a core from the threads computing the graph, whose barriers would
/// make all of them wait for the one preempted. While a decode waits for its reads, the cores
/// are idle and the checks run.
fn run_when_idle() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: changes the policy of the calling thread (pid 0) only; `param` is valid.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            log::debug!(
                "hypura: checker threads keep the normal priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl ReadPool {
    /// Starts `threads` readers of `file` (and the checker threads); requests are split into
    /// pieces of at most `request_bytes`. Fails when the OS refuses a thread.
    pub(crate) fn new(
        file: Arc<ModelFile>,
        threads: usize,
        request_bytes: usize,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let (check_sender, check_receiver) = channel::<Job>();
        let check_receiver = Arc::new(Mutex::new(check_receiver));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let mut pool = Self {
            sender: Some(sender),
            workers: Vec::new(),
            check_sender: Some(check_sender.clone()),
            checkers: Vec::new(),
            request_bytes: request_bytes.max(4096),
            busy_ns: Arc::clone(&busy_ns),
        };
        // Whether pieces are checked is decided once, for the pool's life: checker threads
        // exist only then (the RAM tier's pool and the read probe have none).
        let checking = file.verifies();
        // (On an error below, dropping `pool` stops and joins the threads started.)
        for i in 0..if checking { CHECKER_THREADS } else { 0 } {
            let receiver = Arc::clone(&check_receiver);
            let file = Arc::clone(&file);
            let checker = std::thread::Builder::new()
                .name(format!("hypura-check-{i}"))
                .spawn(move || {
                    run_when_idle();
                    serve(receiver, |job| {
                        let r = job.request;
                        // SAFETY: the piece was just read into `dst`, which belongs to this
                        // request alone until its completion is done (the contract of
                        // `submit`), and nobody writes it meanwhile.
                        let result =
                            unsafe { file.check_region(r.dst as *const u8, r.len, r.offset) };
                        job.completion.finish_one(result.err());
                    })
                })?;
            pool.checkers.push(checker);
        }
        for i in 0..threads.max(1) {
            let receiver = Arc::clone(&receiver);
            let file = Arc::clone(&file);
            let busy_ns = Arc::clone(&busy_ns);
            let checks = check_sender.clone();
            let worker = std::thread::Builder::new()
                .name(format!("hypura-io-{i}"))
                .spawn(move || {
                    serve(receiver, |job| {
                        let r = job.request;
                        let started = std::time::Instant::now();
                        // SAFETY: by the contract of `submit`, each destination range belongs
                        // to exactly one request and nobody touches it until the completion
                        // is done.
                        let result =
                            unsafe { file.read_unchecked_into(r.dst as *mut u8, r.len, r.offset) };
                        busy_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                        match result {
                            // Hashing here would leave the disk with one read fewer in flight.
                            Ok(()) if checking => {
                                if let Err(unsent) = checks.send(job) {
                                    unsent.0.completion.finish_one(Some(ReadError::Io(
                                        "checker threads are gone".to_string(),
                                    )));
                                }
                            }
                            Ok(()) => job.completion.finish_one(None),
                            Err(e) => job.completion.finish_one(Some(e)),
                        }
                    })
                })?;
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
        // Readers first (they hand pieces to the checkers), then the checkers.
        self.sender.take();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        self.check_sender.take();
        for checker in self.checkers.drain(..) {
            let _ = checker.join();
        }
    }
}
