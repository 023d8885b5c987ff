//! The `hypura` command-line tool: `plan` a placement, `run` a model (tiered or stock).

mod bench;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use hypura_core::generate::{generate, GenerateOptions};
use hypura_core::gguf::GgufHeader;
use hypura_core::inspect::ModelInventory;
use hypura_core::size::{format_bytes, parse_size};
use hypura_core::{disk, plan, HypuraError, LoadMode, LoadOptions, PlanParams, Session};

#[derive(Parser)]
#[command(
    name = "hypura",
    version,
    about = "Run GGUF models larger than memory: RAM tier + streaming from disk"
)]
struct Cli {
    /// More logging on stderr (-v: info, -vv: debug incl. llama.cpp).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the placement for a RAM budget, from the GGUF header alone.
    Plan(PlanArgs),
    /// Generate text. stdout carries only the generated text.
    Run(RunArgs),
    /// Write a synthetic GGUF of a real model's shape (random weights, working tokenizer).
    Synth(SynthArgs),
    /// Stock llama.cpp vs hypura, alternately, several rounds, in one table.
    Bench(BenchArgs),
    /// hypura's reader against a sequential read of the same file (bytes/s and ratio).
    ReadRate(ReadRateArgs),
}

#[derive(Args)]
struct ReadRateArgs {
    /// The file to read.
    #[arg(long)]
    file: PathBuf,
    /// Read at most this much (e.g. 2G).
    #[arg(long, default_value = "2G")]
    limit: String,
    /// Reader threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Request size.
    #[arg(long, default_value = "4M")]
    request: String,
    /// Hand the destination pages back to the OS before each reuse, so that every read
    /// faults in fresh pages (as streaming does).
    #[arg(long)]
    fresh_pages: bool,
}

#[derive(Args)]
struct SynthArgs {
    /// A named shape: llama-7b, llama-13b, llama-70b, mixtral-8x7b (the flags below override it).
    #[arg(long)]
    shape: Option<String>,
    /// Weight type: q4_0 or q4_k.
    #[arg(long = "type", default_value = "q4_0")]
    weight_type: String,
    /// Copy the tokenizer of this GGUF (default: a generated 32000-token vocabulary).
    #[arg(long)]
    tokenizer_from: Option<PathBuf>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    n_embd: Option<u64>,
    #[arg(long)]
    n_ff: Option<u64>,
    #[arg(long)]
    n_layer: Option<u32>,
    #[arg(long)]
    n_head: Option<u64>,
    #[arg(long)]
    n_head_kv: Option<u64>,
    #[arg(long)]
    n_vocab: Option<u64>,
    #[arg(long)]
    n_expert: Option<u32>,
    #[arg(long)]
    n_expert_used: Option<u32>,
}

#[derive(Args)]
struct BenchArgs {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// The memory cap for both modes (512M, 2G, 40%); hypura plans its weights below it.
    #[arg(long)]
    ram_budget: String,
    /// hypura's weight budget (default: the cap minus the KV cache and 384 MiB).
    #[arg(long)]
    weights_budget: Option<String>,
    /// GPU budget: this build has no GPU tier, so only 0 is accepted.
    #[arg(long)]
    gpu_budget: Option<String>,
    /// Tokens generated per run.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Rounds (each runs stock, then hypura).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// CPU threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Context length.
    #[arg(long, default_value_t = 256)]
    ctx: u32,
    /// Run each process in its own cgroup (v2) with memory.max = the cap, after dropping the page cache (root).
    #[arg(long)]
    cgroup: bool,
    /// Write the summary and every run's statistics as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Disk bandwidth in GB/s for the bound (default: measured once and cached).
    #[arg(long)]
    disk_gbps: Option<f64>,
    /// The prompt.
    #[arg(long, default_value = "The history of the city begins")]
    prompt: String,
    /// Turn off repacked CPU layouts in both modes.
    #[arg(long)]
    no_repack: bool,
    /// hypura's reader threads (read requests in flight).
    #[arg(long, default_value_t = hypura_core::plan::DEFAULT_IO_THREADS)]
    io_threads: u32,
    /// Sampling temperature for both modes (0 = greedy). Greedy decoding of a synthetic
    /// model tends to repeat one token, so an MoE model would route the same experts every
    /// token; a temperature spreads the routing.
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Sampling seed, the same for both modes.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Args)]
struct BudgetArgs {
    /// The GGUF model file.
    #[arg(long)]
    model: PathBuf,
    /// Bytes of weights hypura may hold: 512M, 2G, or 40% (of the weights). Default: all.
    #[arg(long)]
    ram_budget: Option<String>,
    /// Disk read bandwidth in GB/s for the bound (default: measured once and cached).
    #[arg(long)]
    disk_gbps: Option<f64>,
    /// Reader threads (read requests in flight) when streaming.
    #[arg(long, default_value_t = hypura_core::plan::DEFAULT_IO_THREADS)]
    io_threads: u32,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    budget: BudgetArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    budget: BudgetArgs,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    temperature: f32,
    /// Seed for sampling.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Context length in tokens.
    #[arg(long, default_value_t = 2048)]
    ctx: u32,
    /// Write statistics as JSON to this file.
    #[arg(long)]
    stats_json: Option<PathBuf>,
    /// Run stock llama.cpp (default mmap loading, no hypura placement) for comparison.
    #[arg(long)]
    baseline: bool,
    /// Turn off llama.cpp's repacked CPU weight layouts (for stock and hypura alike).
    #[arg(long)]
    no_repack: bool,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    ignore_eos: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module(
            "llama.cpp",
            if cli.verbose >= 2 {
                log::LevelFilter::Debug
            } else {
                log::LevelFilter::Off
            },
        )
        .format_timestamp(None)
        .init();
    let result = match cli.command {
        Command::Plan(args) => cmd_plan(args),
        Command::Run(args) => cmd_run(args),
        Command::Synth(args) => cmd_synth(args),
        Command::Bench(args) => cmd_bench(args),
        Command::ReadRate(args) => cmd_read_rate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hypura: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn disk_bytes_per_s(args: &BudgetArgs) -> Result<f64, HypuraError> {
    match args.disk_gbps {
        Some(gbps) if gbps.is_finite() && gbps > 0.0 => Ok(gbps * 1e9),
        Some(_) => Err(HypuraError::InvalidArgument(
            "--disk-gbps must be a positive number".into(),
        )),
        None => {
            if !args.model.exists() {
                return Err(HypuraError::NotFound(args.model.clone()));
            }
            disk::read_bandwidth(&args.model).map_err(|source| HypuraError::Unreadable {
                path: args.model.clone(),
                source,
            })
        }
    }
}

fn budget_bytes(args: &BudgetArgs, model_bytes: u64) -> Result<u64, HypuraError> {
    match &args.ram_budget {
        Some(text) => parse_size(text, model_bytes),
        None => Ok(model_bytes),
    }
}

fn cmd_plan(args: PlanArgs) -> Result<(), HypuraError> {
    let header = GgufHeader::open(&args.budget.model)?;
    let inventory = ModelInventory::from_header(&header)?;
    let mut params = PlanParams::new(budget_bytes(&args.budget, header.weight_bytes())?);
    params.disk_bytes_per_s = disk_bytes_per_s(&args.budget)?;
    params.io_threads = args.budget.io_threads;
    let plan = plan::plan(&inventory, &params)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    } else {
        print!("{}", plan.to_table());
    }
    Ok(())
}

fn cmd_run(args: RunArgs) -> Result<(), HypuraError> {
    if args.max_tokens == 0 {
        return Err(HypuraError::InvalidArgument(
            "--max-tokens must be at least 1".into(),
        ));
    }
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        return Err(HypuraError::InvalidArgument(
            "--temp must be 0 or more".into(),
        ));
    }
    let header = GgufHeader::open(&args.budget.model)?;
    let model_bytes = header.weight_bytes();
    let mut options = LoadOptions::new(&args.budget.model);
    options.mode = if args.baseline {
        LoadMode::Baseline
    } else {
        LoadMode::Tiered
    };
    options.ram_budget_bytes = Some(budget_bytes(&args.budget, model_bytes)?);
    options.no_repack = args.no_repack;
    options.n_threads = args.threads;
    options.n_ctx = args.ctx;
    options.disk_bytes_per_s = disk_bytes_per_s(&args.budget)?;
    options.io_threads = args.budget.io_threads;
    eprintln!(
        "hypura: loading {} ({}) {}",
        args.budget.model.display(),
        format_bytes(model_bytes),
        if args.baseline {
            "as stock llama.cpp".to_string()
        } else {
            format!(
                "with a RAM budget of {}",
                format_bytes(options.ram_budget_bytes.unwrap_or(model_bytes))
            )
        }
    );
    let mut session = Session::load(options)?;
    let p = session.plan();
    if !args.baseline {
        eprintln!(
            "hypura: {} resident, {} streamed per token, window {}, bound {:.2} tok/s",
            format_bytes(p.ram_resident_bytes),
            format_bytes(p.streamed_bytes_per_token),
            format_bytes(p.window_bytes),
            p.bound_tok_s
        );
    }
    let gen = GenerateOptions {
        prompt: args.prompt.clone(),
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        stop_at_eog: !args.ignore_eos,
    };
    let stdout = std::io::stdout();
    let stats = generate(&mut session, &gen, |bytes| {
        let mut out = stdout.lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    })?;
    println!();
    eprintln!(
        "hypura: {} tokens, {:.2} tok/s decode, {} read per token (planned {}), peak RSS {}, load {:.2} s",
        stats.tokens_generated,
        stats.decode_tok_s,
        format_bytes(stats.disk_bytes_per_token as u64),
        format_bytes(stats.streamed_bytes_per_token),
        format_bytes(stats.peak_rss_bytes),
        stats.load_s
    );
    if let Some(path) = &args.stats_json {
        let json = serde_json::to_string_pretty(&stats).unwrap_or_default();
        std::fs::write(path, json)?;
    }
    Ok(())
}

fn cmd_synth(args: SynthArgs) -> Result<(), HypuraError> {
    use hypura_core::synth::{write_model, Shape, SynthType};
    let base = match &args.shape {
        Some(name) => Shape::named(name).ok_or_else(|| {
            HypuraError::InvalidArgument(format!(
                "unknown shape '{name}' (known: {})",
                Shape::NAMES.join(", ")
            ))
        })?,
        None => Shape::named("llama-7b").expect("known"),
    };
    let shape = Shape {
        n_embd: args.n_embd.unwrap_or(base.n_embd),
        n_ff: args.n_ff.unwrap_or(base.n_ff),
        n_layer: args.n_layer.unwrap_or(base.n_layer),
        n_head: args.n_head.unwrap_or(base.n_head),
        n_head_kv: args.n_head_kv.unwrap_or(base.n_head_kv),
        n_vocab: args.n_vocab.unwrap_or(base.n_vocab),
        n_expert: args.n_expert.unwrap_or(base.n_expert),
        n_expert_used: args.n_expert_used.unwrap_or(base.n_expert_used),
    };
    let kind = match args.weight_type.to_ascii_lowercase().as_str() {
        "q4_0" => SynthType::Q4_0,
        "q4_k" => SynthType::Q4K,
        other => {
            return Err(HypuraError::InvalidArgument(format!(
                "--type {other}: use q4_0 or q4_k"
            )))
        }
    };
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    let total = write_model(
        &args.out,
        shape,
        kind,
        args.tokenizer_from.as_deref(),
        |done, total| {
            if last_report.elapsed().as_secs_f64() > 2.0 {
                eprintln!(
                    "hypura synth: {} of {}",
                    format_bytes(done),
                    format_bytes(total)
                );
                last_report = std::time::Instant::now();
            }
        },
    )?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "hypura synth: wrote {} ({}) in {:.1} s ({:.2} GB/s)",
        args.out.display(),
        format_bytes(total),
        secs,
        total as f64 / secs.max(1e-9) / 1e9
    );
    Ok(())
}

fn cmd_bench(args: BenchArgs) -> Result<(), HypuraError> {
    if let Some(gpu) = &args.gpu_budget {
        if parse_size(gpu, 1).map(|b| b > 0).unwrap_or(true) && gpu.trim() != "0" {
            return Err(HypuraError::InvalidArgument(
                "--gpu-budget: this build has no GPU tier yet".into(),
            ));
        }
    }
    let header = GgufHeader::open(&args.model)?;
    let inventory = ModelInventory::from_header(&header)?;
    let model_bytes = header.weight_bytes();
    let cap = parse_size(&args.ram_budget, model_bytes)?;
    let arch = &inventory.arch;
    let n_head = header
        .get_u64(&format!("{arch}.attention.head_count"))
        .unwrap_or(1)
        .max(1);
    let n_head_kv = header
        .get_u64(&format!("{arch}.attention.head_count_kv"))
        .unwrap_or(n_head);
    let kv_bytes = args.ctx as u64
        * inventory.n_layers as u64
        * 2
        * (inventory.n_embd / n_head * n_head_kv)
        * 2;
    let weights_budget = match &args.weights_budget {
        Some(text) => parse_size(text, model_bytes)?,
        None => cap
            .checked_sub(kv_bytes + (384 << 20))
            .filter(|b| *b > 0)
            .ok_or_else(|| {
                HypuraError::InvalidArgument(format!(
                    "cap {} leaves no room for weights",
                    format_bytes(cap)
                ))
            })?,
    };
    let budget_args = BudgetArgs {
        model: args.model.clone(),
        ram_budget: None,
        disk_gbps: args.disk_gbps,
        io_threads: args.io_threads,
    };
    let threads = hypura_core::threads::thread_count(args.threads);
    let cfg = bench::BenchConfig {
        model: args.model.clone(),
        cap_bytes: cap,
        weights_budget_bytes: weights_budget.min(model_bytes),
        tokens: args.tokens.max(1),
        rounds: args.rounds.max(1),
        threads,
        ctx: args.ctx,
        cgroup: args.cgroup,
        disk_bytes_per_s: disk_bytes_per_s(&budget_args)?,
        prompt: args.prompt.clone(),
        io_threads: args.io_threads,
        temperature: args.temp.max(0.0),
        seed: args.seed,
        // Repacking copies the weights into anonymous memory: under a cap smaller than the
        // model, stock llama.cpp is then killed for memory. Its best setting is without it.
        no_repack: args.no_repack || model_bytes > cap,
    };
    let summary = bench::bench(&cfg)?;
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&summary).unwrap_or_default(),
        )?;
    }
    Ok(())
}

fn cmd_read_rate(args: ReadRateArgs) -> Result<(), HypuraError> {
    let limit = parse_size(&args.limit, 0)?;
    let request = parse_size(&args.request, 0)? as usize;
    if !args.file.exists() {
        return Err(HypuraError::NotFound(args.file.clone()));
    }
    let rate = hypura_core::io::compare_read_rate(
        &args.file,
        args.threads.max(1),
        request.max(4096),
        limit,
        args.fresh_pages,
    )
    .map_err(|source| HypuraError::Unreadable {
        path: args.file.clone(),
        source,
    })?;
    if rate.bytes == 0 {
        return Err(HypuraError::InvalidArgument(format!(
            "{} is empty: nothing to read",
            args.file.display()
        )));
    }
    println!(
        "read {} of {}{}: hypura reader ({} threads, {} requests) {:.2} GB/s, one sequential reader {:.2} GB/s, ratio {:.2}",
        format_bytes(rate.bytes),
        args.file.display(),
        if args.fresh_pages { " into fresh pages" } else { "" },
        args.threads,
        format_bytes(request as u64),
        rate.pool_bytes_per_s / 1e9,
        rate.sequential_bytes_per_s / 1e9,
        rate.pool_bytes_per_s / rate.sequential_bytes_per_s
    );
    Ok(())
}
