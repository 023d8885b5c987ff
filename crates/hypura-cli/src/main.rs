//! The `hypura` command-line tool: `plan` a placement, `run` a model (tiered or stock).

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
