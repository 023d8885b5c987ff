//! hypura's reader (4 threads, 4 MiB requests, direct I/O where possible) against one thread
//! reading the same file sequentially in 4 MiB pieces (what `dd bs=4M` does). The target is a
//! ratio of at least 0.9. `cargo bench -p hypura-benches --bench io -- FILE [LIMIT_MB]`
//! (default: the Gemma test model).

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let path = args.first().cloned().unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/gemma-3-270m-q4_k_m.gguf"
        )
        .to_string()
    });
    let limit_mb: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let rate = hypura_core::io::compare_read_rate(path.as_ref(), 4, 4 << 20, limit_mb << 20)
        .expect("read");
    println!(
        "read {} MiB of {path}: hypura pool {:.2} GB/s, sequential {:.2} GB/s, ratio {:.2}",
        rate.bytes >> 20,
        rate.pool_bytes_per_s / 1e9,
        rate.sequential_bytes_per_s / 1e9,
        rate.pool_bytes_per_s / rate.sequential_bytes_per_s
    );
}
