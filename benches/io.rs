//! The I/O path's sustained read rate: hypura's reader pool (direct I/O where the file system
//! allows it, the planner's 4 threads and 4 MiB requests, destination pages freshly faulted as
//! when streaming) against one thread reading the same file sequentially in 4 MiB pieces (what
//! `dd bs=4M` does). Each pass starts with the file's page cache dropped. After criterion's
//! report it prints the ratio of the two median rates; the target is at least 0.9.
//!
//! `HYPURA_BENCH_FILE=/path/model.gguf HYPURA_BENCH_LIMIT_MB=2048 cargo bench -p hypura-benches --bench io`
//! (default: the Gemma test model under `models/`, 1 GiB at most).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use hypura_core::ReadProbe;

const THREADS: usize = 4;
const REQUEST_BYTES: usize = 4 << 20;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let path = std::env::var("HYPURA_BENCH_FILE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/gemma-3-270m-q4_k_m.gguf"
        )
        .to_string()
    });
    let limit_mb: u64 = std::env::var("HYPURA_BENCH_LIMIT_MB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let probe = match ReadProbe::new(path.as_ref(), REQUEST_BYTES, limit_mb << 20, true) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("io bench: cannot open {path}: {e} (set HYPURA_BENCH_FILE)");
            std::process::exit(1);
        }
    };
    let bytes = probe.bytes();
    let mut criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .configure_from_args();
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    {
        let mut group = criterion.benchmark_group("read");
        group.throughput(Throughput::Bytes(bytes));
        for (which, name) in ["sequential_4MiB", "hypura_pool_4x4MiB"]
            .into_iter()
            .enumerate()
        {
            group.bench_function(BenchmarkId::new(name, bytes >> 20), |b| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let pass = if which == 0 {
                            probe.sequential()
                        } else {
                            probe.pooled(THREADS)
                        }
                        .expect("read");
                        rates[which].push(bytes as f64 / pass.as_secs_f64().max(1e-9));
                        total += pass;
                    }
                    total
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();
    let (sequential, pooled) = (median(rates[0].clone()), median(rates[1].clone()));
    if sequential.is_finite() && pooled.is_finite() {
        println!(
            "read {} MiB of {path} ({}): hypura pool {:.2} GB/s, sequential {:.2} GB/s, ratio {:.2} (target >= 0.9)",
            bytes >> 20,
            if probe.is_direct() { "direct I/O" } else { "buffered: page cache dropped before each pass" },
            pooled / 1e9,
            sequential / 1e9,
            pooled / sequential
        );
    }
}
