//! `hypura read-rate`: hypura's reader (its pool of threads, direct I/O, the request size
//! streaming uses) against one thread reading the same bytes sequentially, as `dd` does.

use std::path::Path;

use hypura_core::ReadProbe;

/// Both rates over the same bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadRate {
    /// Bytes read by each method.
    pub bytes: u64,
    /// hypura's reader pool, bytes/s.
    pub pool_bytes_per_s: f64,
    /// One sequential reader, bytes/s.
    pub sequential_bytes_per_s: f64,
    /// True when both read with direct I/O.
    pub direct: bool,
}

/// Reads up to `limit` bytes of `path` (from `shift` bytes in: see
/// [`ReadProbe::shifted`]) twice, sequentially then through a pool of `threads`, each pass
/// from a cold page cache.
pub fn compare(
    path: &Path,
    threads: usize,
    request_bytes: usize,
    limit: u64,
    fresh_pages: bool,
    shift: u64,
) -> std::io::Result<ReadRate> {
    let probe = ReadProbe::new(path, request_bytes, limit, fresh_pages)?.shifted(shift);
    let rate = |d: std::time::Duration| probe.bytes() as f64 / d.as_secs_f64().max(1e-9);
    let sequential = rate(probe.sequential()?);
    let pooled = rate(probe.pooled(threads)?);
    Ok(ReadRate {
        bytes: probe.bytes(),
        pool_bytes_per_s: pooled,
        sequential_bytes_per_s: sequential,
        direct: probe.is_direct(),
    })
}
