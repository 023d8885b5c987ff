//! `hypura bench`: stock llama.cpp and hypura, alternately, several rounds, each run a child
//! process (optionally in its own memory-capped cgroup after dropping the page cache), then one
//! table: decode tok/s (median and spread), disk bytes per token, peak RSS, load time, the
//! planner's bound and each mode's ratio to it, and hypura / stock.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hypura_core::units::format_bytes;
use serde_json::{json, Value};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The memory-capped cgroup could not be set up.
    #[error("{0}")]
    Cgroup(String),
    /// A run failed.
    #[error("{mode} run failed ({status}): {last_line}")]
    Run {
        /// `stock` or `hypura`.
        mode: &'static str,
        /// Its exit status.
        status: String,
        /// The last line it printed on stderr.
        last_line: String,
    },
    /// A run's statistics could not be read.
    #[error("bad statistics from a run: {0}")]
    Statistics(String),
    /// Starting a run or writing a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `hypura` binary whose `run` command is benchmarked.
    pub exe: PathBuf,
    /// The model file.
    pub model: PathBuf,
    /// The memory cap (and hypura's budget source).
    pub cap_bytes: u64,
    /// Weight budget hypura plans for (the cap minus KV, activations and the process).
    pub weights_budget_bytes: u64,
    /// Tokens generated per run.
    pub tokens: usize,
    /// Rounds (each runs stock, then hypura).
    pub rounds: usize,
    /// CPU threads.
    pub threads: i32,
    /// Context length.
    pub ctx: u32,
    /// Run each process in its own memory-capped cgroup after dropping the page cache.
    pub cgroup: bool,
    /// Disk bandwidth for the bound, bytes/s.
    pub disk_bytes_per_s: f64,
    /// The prompt.
    pub prompt: String,
    /// Turn off repacked CPU layouts in both modes.
    pub no_repack: bool,
    /// Sequences decoded together (`run --parallel`); above 1 the rates are aggregate and
    /// the first-token column is the time until every sequence has its first token.
    pub parallel: u32,
    /// hypura's reader threads (None: hypura's default for the model).
    pub io_threads: Option<u32>,
    /// Sampling temperature (0 = greedy) and seed, the same for both modes.
    pub temperature: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Extra flags for hypura's runs.
    pub hypura_flags: Vec<String>,
}

struct Cgroup {
    path: PathBuf,
}

impl Cgroup {
    fn create(name: &str, cap: u64) -> Result<Self, BenchError> {
        let root = Path::new("/sys/fs/cgroup");
        if !root.join("cgroup.controllers").exists() {
            return Err(BenchError::Cgroup(
                "--cgroup needs cgroup v2 mounted at /sys/fs/cgroup".into(),
            ));
        }
        // Make sure the memory controller is enabled for children of the root.
        let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
        let path = root.join(name);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).map_err(|e| {
            BenchError::Cgroup(format!(
                "cannot create cgroup {} (root needed): {e}",
                path.display()
            ))
        })?;
        std::fs::write(path.join("memory.max"), cap.to_string())?;
        let _ = std::fs::write(path.join("memory.swap.max"), "0");
        Ok(Self { path })
    }

    fn peak(&self) -> Option<u64> {
        std::fs::read_to_string(self.path.join("memory.peak"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn drop_page_cache() {
    // SAFETY: a plain syscall without arguments.
    unsafe { libc::sync() };
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn run_once(cfg: &BenchConfig, baseline: bool, round: usize) -> Result<Value, BenchError> {
    let stats = std::env::temp_dir().join(format!(
        "hypura-bench-{}-{round}-{baseline}.json",
        std::process::id()
    ));
    let mut cmd = Command::new(&cfg.exe);
    cmd.args(["run", "--model"])
        .arg(&cfg.model)
        .args([
            "--prompt",
            &cfg.prompt,
            "--max-tokens",
            &cfg.tokens.to_string(),
            "--temp",
            &cfg.temperature.to_string(),
            "--seed",
            &cfg.seed.to_string(),
            "--ignore-eos",
        ])
        .args([
            "--threads",
            &cfg.threads.to_string(),
            "--ctx",
            &cfg.ctx.to_string(),
        ])
        .args(["--disk-gbps", &format!("{}", cfg.disk_bytes_per_s / 1e9)])
        .args(["--parallel", &cfg.parallel.max(1).to_string()])
        .arg("--stats-json")
        .arg(&stats);
    if cfg.no_repack {
        cmd.arg("--no-repack");
    }
    if baseline {
        cmd.arg("--baseline");
    } else {
        cmd.args(["--weights-budget", &cfg.weights_budget_bytes.to_string()])
            .args(&cfg.hypura_flags);
        if let Some(n) = cfg.io_threads {
            cmd.args(["--io-threads", &n.to_string()]);
        }
    }
    cmd.stdout(std::process::Stdio::null());
    let cgroup = if cfg.cgroup {
        drop_page_cache();
        let group = Cgroup::create(
            &format!("hypura-bench-{}", std::process::id()),
            cfg.cap_bytes,
        )?;
        let procs =
            std::ffi::CString::new(group.path.join("cgroup.procs").to_string_lossy().as_bytes())
                .unwrap();
        // SAFETY: between fork and exec only async-signal-safe calls: open/write/close.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Some(group)
    } else {
        None
    };
    let output = cmd.output()?;
    let cgroup_peak = cgroup.as_ref().and_then(Cgroup::peak);
    drop(cgroup);
    if !output.status.success() {
        return Err(BenchError::Run {
            mode: if baseline { "stock" } else { "hypura" },
            status: output.status.to_string(),
            last_line: String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .to_string(),
        });
    }
    let mut value: Value = serde_json::from_str(&std::fs::read_to_string(&stats)?)
        .map_err(|e| BenchError::Statistics(e.to_string()))?;
    let _ = std::fs::remove_file(&stats);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("tensor_accesses");
        obj.remove("tokens");
        obj.insert("cgroup_peak_bytes".into(), json!(cgroup_peak));
    }
    Ok(value)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs the benchmark; prints the table to stdout and returns the JSON summary.
pub fn bench(cfg: &BenchConfig) -> Result<Value, BenchError> {
    let mut runs: Vec<(bool, Value)> = Vec::new();
    for round in 0..cfg.rounds {
        for baseline in [true, false] {
            eprintln!(
                "hypura bench: round {}/{}: {}",
                round + 1,
                cfg.rounds,
                if baseline {
                    "stock llama.cpp"
                } else {
                    "hypura"
                }
            );
            runs.push((baseline, run_once(cfg, baseline, round)?));
        }
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let parallel = cfg.parallel > 1;
    let first_key = if parallel {
        "time_to_first_token_s"
    } else {
        "time_to_16th_token_s"
    };
    let mut rows = Vec::new();
    let mut medians = [0.0f64; 2];
    let mut steady = [0.0f64; 2];
    let mut first16 = [0.0f64; 2];
    let bound = runs
        .iter()
        .find(|(b, _)| !b)
        .map(|(_, v)| f(v, "bound_tok_s"))
        .unwrap_or(0.0);
    for (i, baseline) in [true, false].into_iter().enumerate() {
        let mine: Vec<&Value> = runs
            .iter()
            .filter(|(b, _)| *b == baseline)
            .map(|(_, v)| v)
            .collect();
        let tps: Vec<f64> = mine.iter().map(|v| f(v, "decode_tok_s")).collect();
        let med = median(tps.clone());
        medians[i] = med;
        let min = tps.iter().copied().fold(f64::MAX, f64::min);
        let max = tps.iter().copied().fold(0.0, f64::max);
        let read = median(
            mine.iter()
                .map(|v| {
                    f(
                        v,
                        if baseline {
                            "storage_bytes_read"
                        } else {
                            "disk_bytes_read"
                        },
                    ) / f(v, "tokens_decoded").max(1.0)
                })
                .collect(),
        );
        let rss = median(mine.iter().map(|v| f(v, "peak_rss_bytes")).collect());
        let cg = median(mine.iter().map(|v| f(v, "cgroup_peak_bytes")).collect());
        let load = median(mine.iter().map(|v| f(v, "load_s")).collect());
        steady[i] = median(mine.iter().map(|v| f(v, "steady_tok_s")).collect());
        first16[i] = median(mine.iter().map(|v| f(v, first_key)).collect());
        rows.push(json!({
            "mode": if baseline { "stock (mmap)" } else { "hypura" },
            "decode_tok_s_median": med, "decode_tok_s_min": min, "decode_tok_s_max": max,
            "disk_bytes_per_token": read, "peak_rss_bytes": rss, "cgroup_peak_bytes": cg,
            "load_s": load, "steady_tok_s_median": steady[i], "time_to_16th_token_s_median": first16[i],
            "bound_tok_s": bound, "ratio_to_bound": if bound > 0.0 { med / bound } else { 0.0 },
        }));
    }
    let speedup = if medians[0] > 0.0 {
        medians[1] / medians[0]
    } else {
        0.0
    };
    println!(
        "model {}  cap {}  hypura weights budget {}  {}{} tokens x {} rounds  {} threads  {}  repacking {}  {}",
        cfg.model.display(),
        format_bytes(cfg.cap_bytes),
        format_bytes(cfg.weights_budget_bytes),
        if parallel {
            format!("{} sequences decoded together (aggregate rates), ", cfg.parallel)
        } else {
            String::new()
        },
        cfg.tokens,
        cfg.rounds,
        cfg.threads,
        if cfg.temperature > 0.0 {
            format!("temperature {} seed {}", cfg.temperature, cfg.seed)
        } else {
            "greedy".to_string()
        },
        if cfg.no_repack { "off (both)" } else { "on (both)" },
        if cfg.cgroup {
            "each run in a cgroup with memory.max = cap, page cache dropped before"
        } else {
            "NOT memory-capped: the stock baseline may use all RAM as page cache"
        }
    );
    println!(
        "| mode | decode tok/s (median [min-max]) | steady tok/s (2nd half) | {} | disk read/token | peak RSS | cgroup peak | load s | bound tok/s | ratio to bound |",
        if parallel {
            "all first tokens s (after load)"
        } else {
            "to 16th token s"
        }
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} [{:.3}-{:.3}] | {:.3} | {:.1} | {} | {} | {} | {:.1} | {:.3} | {:.2} |",
            r["mode"].as_str().unwrap_or(""),
            r["decode_tok_s_median"].as_f64().unwrap_or(0.0),
            r["decode_tok_s_min"].as_f64().unwrap_or(0.0),
            r["decode_tok_s_max"].as_f64().unwrap_or(0.0),
            r["steady_tok_s_median"].as_f64().unwrap_or(0.0),
            r["time_to_16th_token_s_median"].as_f64().unwrap_or(0.0),
            format_bytes(r["disk_bytes_per_token"].as_f64().unwrap_or(0.0) as u64),
            format_bytes(r["peak_rss_bytes"].as_f64().unwrap_or(0.0) as u64),
            if cfg.cgroup {
                format_bytes(r["cgroup_peak_bytes"].as_f64().unwrap_or(0.0) as u64)
            } else {
                "-".into()
            },
            r["load_s"].as_f64().unwrap_or(0.0),
            r["bound_tok_s"].as_f64().unwrap_or(0.0),
            r["ratio_to_bound"].as_f64().unwrap_or(0.0),
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let sooner = if parallel {
        format!("first tokens {:.2}x sooner", ratio(first16[0], first16[1]))
    } else if first16[0] > 0.0 && first16[1] > 0.0 {
        format!("16th token {:.2}x sooner", first16[0] / first16[1])
    } else {
        "no 16th token (fewer than 16 tokens)".to_string()
    };
    println!(
        "hypura / stock: {speedup:.2}x (whole run), {:.2}x steady (2nd half); {sooner}",
        ratio(steady[1], steady[0]),
    );
    Ok(json!({
        "model": cfg.model.display().to_string(),
        "cap_bytes": cfg.cap_bytes,
        "weights_budget_bytes": cfg.weights_budget_bytes,
        "cgroup": cfg.cgroup,
        "tokens": cfg.tokens,
        "rounds": cfg.rounds,
        "threads": cfg.threads,
        "no_repack": cfg.no_repack,
        "temperature": cfg.temperature,
        "seed": cfg.seed,
        "parallel": cfg.parallel,
        "rows": rows,
        "hypura_over_stock": speedup,
        "hypura_over_stock_steady": ratio(steady[1], steady[0]),
        "stock_over_hypura_time_to_16th_token": ratio(first16[0], first16[1]),
        "runs": runs.iter().map(|(b, v)| json!({"baseline": b, "stats": v})).collect::<Vec<_>>(),
    }))
}
