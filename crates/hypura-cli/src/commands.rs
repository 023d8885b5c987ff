//! What each command does with its arguments.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::Path;

use hypura_core::units::{format_bytes, parse_bytes};
use hypura_core::{
    defaults, limits, Budget, ChatMessage, GenerateOptions, GenerationStats, LoadMode, LoadOptions,
    Model, Plan, StockGpu, StopReason, TensorOverride,
};
use hypura_tools::{bench as bench_tool, disk, read_rate as read_rate_tool, synth as synth_tool};

use crate::args::{
    BenchArgs, ChatArgs, ExpertSimArgs, ModelArgs, PlanArgs, PromptArgs, ReadRateArgs, RoutingArg,
    RunArgs, SamplingArgs, ServeArgs, SynthArgs,
};
use crate::progress;
use crate::table::plan_table;

/// A command's failure: printed as one line.
pub(crate) type Failure = Box<dyn std::error::Error>;

/// An argument the command cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

pub(crate) fn usage(message: impl Into<String>) -> Failure {
    Box::new(Usage(message.into()))
}

/// `--override-tensor PATTERN=TYPE` values, split at the first `=` as llama.cpp does.
fn tensor_overrides(values: &[String]) -> Result<Vec<TensorOverride>, Failure> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((pattern, buffer_type)) if !pattern.is_empty() && !buffer_type.is_empty() => {
                Ok(TensorOverride::new(pattern, buffer_type))
            }
            _ => Err(usage(format!(
                "--override-tensor {v:?}: expected PATTERN=TYPE, e.g. 'blk\\.3\\.ffn_.*_exps=CPU'"
            ))),
        })
        .collect()
}

fn budget_of(args: &ModelArgs) -> Result<Budget, Failure> {
    if args.ram_budget.is_some() {
        log::warn!(
            "--ram-budget is now --weights-budget (weights only); --memory bounds the whole process"
        );
    }
    Ok(
        match (
            args.weights_budget.as_ref().or(args.ram_budget.as_ref()),
            &args.memory,
        ) {
            (Some(text), _) => text.parse::<Budget>()?,
            (None, Some(text)) => Budget::ProcessBytes(parse_bytes(text).ok_or_else(|| {
                usage(format!(
                    "--memory {text}: use bytes with an optional K/M/G/T suffix (e.g. 8G)"
                ))
            })?),
            (None, None) => Budget::AllWeights,
        },
    )
}

/// The load options the model arguments give (the disk bandwidth as given, or the default).
fn options_of(args: &ModelArgs) -> Result<LoadOptions, Failure> {
    let mut options = LoadOptions::new(&args.model)
        .budget(budget_of(args)?)
        .context_length(args.ctx)
        .batch_size(args.batch_size)
        .expert_slices(!args.no_expert_slices)
        .expert_profiles(if args.no_expert_profile {
            None
        } else {
            args.expert_profiles
                .clone()
                .or_else(|| disk::cache_dir().map(|d| d.join("experts")))
        });
    if let Some(n) = args.io_threads {
        options = options.io_threads(n);
    }
    if let Some(text) = args.gpu_budget.as_deref().filter(|t| t.trim() != "0") {
        let budget: Budget = text
            .parse()
            .map_err(|e| usage(format!("--gpu-budget: {e}")))?;
        options = options.gpu_budget(Some(budget));
    }
    if let Some(gbps) = args.disk_gbps {
        if !(gbps.is_finite() && gbps > 0.0 && gbps < 1e6) {
            return Err(usage("--disk-gbps must be a positive number of GB/s"));
        }
        options = options.disk_bandwidth(gbps * 1e9);
    }
    Ok(options)
}

/// The disk's bandwidth when not given: measured once per device and cached. The file is
/// checked first (so a hostile file gets its own error, not the probe's).
fn with_measured_disk(args: &ModelArgs, options: LoadOptions) -> Result<LoadOptions, Failure> {
    if args.disk_gbps.is_some() {
        return Ok(options);
    }
    Plan::for_options(&options)?;
    let measured = disk::read_bandwidth(&args.model).map_err(|e| {
        usage(format!(
            "{}: cannot measure the disk's bandwidth: {e} (give --disk-gbps)",
            args.model.display()
        ))
    })?;
    Ok(options.disk_bandwidth(measured))
}

pub fn plan(args: PlanArgs) -> Result<(), Failure> {
    if !(1..=MAX_PARALLEL).contains(&args.parallel) {
        return Err(usage(format!("--parallel: 1 to {MAX_PARALLEL}")));
    }
    let options = options_of(&args.model)?
        .sequences(args.parallel)
        .context_length(context_of(&args.model, args.parallel)?);
    let options = with_measured_disk(&args.model, options)?;
    let plan = Plan::for_options(&options)?;
    notice_untiered(&args.model.model, &plan);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan_table(&plan, args.parallel));
    }
    Ok(())
}

/// The context of `sequences` sequences of -c tokens each.
fn context_of(args: &ModelArgs, sequences: u32) -> Result<u32, Failure> {
    args.ctx
        .checked_mul(sequences)
        .filter(|&c| c <= limits::MAX_CONTEXT_LENGTH)
        .ok_or_else(|| usage("-c times --parallel is too large"))
}

/// Says, in one line, why a model runs as stock llama.cpp runs it.
fn notice_untiered(path: &std::path::Path, plan: &Plan) {
    if let Some(why) = &plan.untiered {
        eprintln!("hypura: note: {}: {why}", path.display());
    }
}

/// Longest prompt read from a file or stdin.
const PROMPT_FILE_LIMIT_BYTES: u64 = 64 << 20;

/// Reads a prompt of at most [`PROMPT_FILE_LIMIT_BYTES`] from `source` (named `what`).
fn read_prompt(source: impl Read, what: &str) -> Result<String, Failure> {
    let mut bytes = Vec::new();
    source
        .take(PROMPT_FILE_LIMIT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| usage(format!("cannot read the prompt from {what}: {e}")))?;
    if bytes.len() as u64 > PROMPT_FILE_LIMIT_BYTES {
        return Err(usage(format!(
            "the prompt in {what} is larger than {}",
            format_bytes(PROMPT_FILE_LIMIT_BYTES)
        )));
    }
    String::from_utf8(bytes).map_err(|_| usage(format!("the prompt in {what} is not UTF-8 text")))
}

/// The prompt of `-p` or `-f` (`-f -`: stdin); `None` when neither was given.
fn prompt_of(args: &PromptArgs) -> Result<Option<String>, Failure> {
    match (&args.prompt, &args.file) {
        (Some(text), _) => Ok(Some(text.clone())),
        (None, Some(path)) if path.as_os_str() == "-" => {
            read_prompt(std::io::stdin().lock(), "stdin").map(Some)
        }
        (None, Some(path)) => {
            let file = std::fs::File::open(path).map_err(|e| {
                usage(format!(
                    "cannot read the prompt from {}: {e}",
                    path.display()
                ))
            })?;
            read_prompt(file, &path.display().to_string()).map(Some)
        }
        (None, None) => Ok(None),
    }
}

/// Checks the sampling flags, naming them (the library checks the same ranges).
fn check_sampling(max_tokens: usize, s: &SamplingArgs) -> Result<(), Failure> {
    let checks = [
        (max_tokens >= 1, "--max-tokens must be at least 1"),
        (
            s.temperature.is_finite() && s.temperature >= 0.0,
            "--temp must be 0 or more",
        ),
        (
            s.top_p.is_finite() && s.top_p > 0.0 && s.top_p <= 1.0,
            "--top-p must be in (0, 1]",
        ),
        (
            s.min_p.is_finite() && (0.0..=1.0).contains(&s.min_p),
            "--min-p must be in [0, 1]",
        ),
        (
            s.repeat_penalty.is_finite() && s.repeat_penalty > 0.0,
            "--repeat-penalty must be more than 0",
        ),
        (s.repeat_last_n >= 0, "--repeat-last-n must be 0 or more"),
        (
            s.presence_penalty.is_finite() && s.frequency_penalty.is_finite(),
            "--presence-penalty and --frequency-penalty must be finite",
        ),
    ];
    match checks.iter().find(|(ok, _)| !ok) {
        Some((_, message)) => Err(usage(*message)),
        None => Ok(()),
    }
}

/// The generation settings of the sampling flags.
fn request_of(prompt: String, max_tokens: usize, sampling: &SamplingArgs) -> GenerateOptions {
    GenerateOptions::new(prompt)
        .max_tokens(max_tokens)
        .temperature(sampling.temperature)
        .seed(sampling.seed)
        .top_k(sampling.top_k)
        .top_p(sampling.top_p)
        .min_p(sampling.min_p)
        .repeat_penalty(sampling.repeat_penalty, sampling.repeat_last_n)
        .frequency_presence_penalties(sampling.frequency_penalty, sampling.presence_penalty)
}

/// Loads the model as `run` and `chat` do, saying on stderr where its weights went.
fn load_for_generation(
    model_args: &ModelArgs,
    sampling: &SamplingArgs,
    sequences: u32,
) -> Result<Model, Failure> {
    let mode = if sampling.baseline {
        LoadMode::Stock
    } else {
        LoadMode::Tiered
    };
    let context = context_of(model_args, sequences)?;
    let options = options_of(model_args)?
        .sequences(sequences)
        .context_length(context)
        .mode(mode)
        .repack(!sampling.no_repack)
        .threads(sampling.threads)
        .verify_reads(!sampling.no_verify_reads)
        .stock_gpu(StockGpu::new(
            sampling.n_gpu_layers.unwrap_or(0),
            if sampling.cpu_moe {
                u32::MAX
            } else {
                sampling.n_cpu_moe.unwrap_or(0)
            },
        ))
        .stock_tensor_overrides(tensor_overrides(&sampling.override_tensor)?);
    let mut options = with_measured_disk(model_args, options)?;
    eprintln!("hypura: loading {}", model_args.model.display());
    let bar = progress::bytes_bar("reading the resident weights");
    if let Some(bar) = bar.clone() {
        options = options.on_progress(move |p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        });
    }
    let model = Model::load(&options);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let model = model?;
    let plan = model.plan();
    notice_untiered(&model_args.model, plan);
    let stock = sampling.baseline || plan.untiered.is_some();
    eprintln!(
        "hypura: {} of weights {}",
        format_bytes(plan.model_bytes),
        if stock {
            "loaded as stock llama.cpp".to_string()
        } else {
            format!(
                "{}with a RAM budget of {}: {} resident, {} streamed per token, {}, bound {:.2} tok/s",
                if plan.gpu_resident_bytes > 0 {
                    format!(
                        "with {} on the GPU ({} layers{}), ",
                        format_bytes(plan.gpu_resident_bytes),
                        plan.gpu_layers,
                        if plan.gpu_head { " and the head" } else { "" }
                    )
                } else {
                    String::new()
                },
                format_bytes(plan.ram_budget_bytes),
                format_bytes(plan.ram_resident_bytes),
                format_bytes(plan.streamed_bytes_per_token),
                if plan.expert_cache_bytes > 0 {
                    format!("expert cache {}", format_bytes(plan.expert_cache_bytes))
                } else {
                    format!("window {}", format_bytes(plan.window_bytes))
                },
                plan.bound_tok_s
            )
        }
    );
    if let Some(why) = &plan.expert_profile_ignored {
        eprintln!("hypura: note: {why} (starting without it)");
    } else if let (Some(path), Some(hit)) =
        (&plan.expert_profile_path, plan.expert_profile_hit_rate)
    {
        eprintln!(
            "hypura: expert cache starts from {} (predicted hit rate {:.1}%)",
            path.display(),
            hit * 100.0
        );
    }
    Ok(model)
}

/// Writes each piece of text to stdout as it comes.
fn print_piece(piece: &str) -> ControlFlow<()> {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(piece.as_bytes());
    let _ = out.flush();
    ControlFlow::Continue(())
}

/// After generating: the summary line, the expert profile, the statistics file.
fn finish_generation(
    model: &Model,
    stats: &GenerationStats,
    sampling: &SamplingArgs,
) -> Result<(), Failure> {
    eprintln!(
        "hypura: {} tokens, {:.2} tok/s decode, {} read per token (planned {}), peak RSS {}, load {:.2} s",
        stats.tokens_generated,
        stats.decode_tok_s,
        format_bytes(stats.disk_bytes_per_token as u64),
        format_bytes(stats.streamed_bytes_per_token),
        format_bytes(stats.peak_rss_bytes),
        stats.load_s
    );
    if stats.stop_reason == StopReason::ContextFull {
        eprintln!(
            "hypura: stopped early: the context ({} tokens, -c) is full",
            model.context_per_sequence()
        );
    }
    match model.save_expert_profile() {
        Ok(Some(path)) => eprintln!("hypura: expert profile saved to {}", path.display()),
        Ok(None) => {}
        // The run itself went well: say so, and why the profile could not be kept.
        Err(e) => eprintln!("hypura: note: {e} (not saved)"),
    }
    if let Some(path) = &sampling.stats_json {
        std::fs::write(path, serde_json::to_string_pretty(stats)?)
            .map_err(|e| usage(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Most sequences `run --parallel` decodes together.
const MAX_PARALLEL: u32 = 256;

pub fn run(args: RunArgs) -> Result<(), Failure> {
    check_sampling(args.max_tokens, &args.sampling)?;
    let prompt = match prompt_of(&args.prompt)? {
        Some(prompt) => prompt,
        // A prompt piped in, as in `echo text | hypura run -m M`.
        None if !std::io::stdin().is_terminal() => prompt_of(&PromptArgs {
            prompt: None,
            file: Some("-".into()),
        })?
        .filter(|p| !p.is_empty())
        .ok_or_else(|| usage("no prompt: give -p TEXT or -f FILE, or pipe one in"))?,
        None => return Err(usage("no prompt: give -p TEXT or -f FILE, or pipe one in")),
    };
    if !(1..=MAX_PARALLEL).contains(&args.parallel) {
        return Err(usage(format!("--parallel: 1 to {MAX_PARALLEL}")));
    }
    let request = request_of(prompt, args.max_tokens, &args.sampling)
        .stop_at_end_of_generation(!args.ignore_eos);
    let mut model = load_for_generation(&args.model, &args.sampling, args.parallel)?;
    if args.parallel > 1 {
        return crate::parallel::run(
            model,
            &request,
            args.sampling.seed,
            args.parallel,
            args.sampling.stats_json.as_ref(),
        );
    }
    let stats = model.generate(&request, print_piece)?;
    println!();
    finish_generation(&model, &stats, &args.sampling)
}

pub fn chat(args: ChatArgs) -> Result<(), Failure> {
    check_sampling(args.max_tokens, &args.sampling)?;
    let request = request_of(String::new(), args.max_tokens, &args.sampling);
    let question = prompt_of(&args.prompt)?;
    let mut model = load_for_generation(&args.model, &args.sampling, 1)?;
    let template = model.chat_template().map_err(|e| {
        usage(format!(
            "{}: {e}; `hypura run` takes a raw prompt",
            args.model.model.display()
        ))
    })?;
    let mut messages: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.as_str()))
        .collect();
    if let Some(question) = question {
        messages.push(ChatMessage::new("user", question));
        let stats = model.chat(&template, &messages, &request, print_piece)?;
        println!();
        return finish_generation(&model, &stats, &args.sampling);
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!("hypura: chat: one message per line; an empty line or Ctrl-D ends it");
    }
    let mut last = None;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| usage(format!("cannot read stdin: {e}")))?;
        if line.trim().is_empty() {
            if interactive {
                break;
            }
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let mut answer = String::new();
        let stats = model.chat(&template, &messages, &request, |piece| {
            answer.push_str(piece);
            print_piece(piece)
        })?;
        println!();
        messages.push(ChatMessage::new("assistant", answer.trim()));
        last = Some(stats);
    }
    match last {
        Some(stats) => finish_generation(&model, &stats, &args.sampling),
        None => Ok(()),
    }
}

pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    if args.parallel == 0 {
        return Err(usage("--parallel must be at least 1"));
    }
    let host: std::net::IpAddr = args
        .host
        .parse()
        .map_err(|_| usage(format!("--host {}: not an IP address", args.host)))?;
    let context = args
        .model
        .ctx
        .checked_mul(args.parallel)
        .filter(|&c| c <= limits::MAX_CONTEXT_LENGTH)
        .ok_or_else(|| usage("-c times --parallel is too large"))?;
    let mut options = options_of(&args.model)?
        .repack(!args.no_repack)
        .threads(args.threads)
        .sequences(args.parallel)
        .context_length(context);
    options = with_measured_disk(&args.model, options)?;
    eprintln!("hypura: loading {}", args.model.model.display());
    let model = Model::load(&options)?;
    notice_untiered(&args.model.model, model.plan());
    let model_name = args.alias.clone().unwrap_or_else(|| {
        args.model
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let config = hypura_server::ServeConfig {
        address: std::net::SocketAddr::new(host, args.port),
        model_name: model_name.clone(),
        api_key: args.api_key.clone(),
        max_tokens: model.context_per_sequence(),
    };
    hypura_server::serve(model, config, |address| {
        eprintln!(
            "hypura: serving {model_name} on http://{address} ({} requests at once; Ctrl-C stops)",
            args.parallel
        );
    })?;
    eprintln!("hypura: stopped");
    Ok(())
}

pub fn synth(args: SynthArgs) -> Result<(), Failure> {
    use synth_tool::{write_model, Shape, WeightTypes};
    if let Some(dense) = &args.moe_from {
        let started = std::time::Instant::now();
        let (n_expert, n_used) = (args.n_expert.unwrap_or(4), args.n_expert_used.unwrap_or(2));
        let total = synth_tool::moe_from(dense, &args.out, n_expert, n_used)?;
        eprintln!(
            "hypura synth: wrote {} ({}, {n_expert} experts of which {n_used} used, from {}) in {:.1} s",
            args.out.display(),
            format_bytes(total),
            dense.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let base = match &args.shape {
        Some(name) => Shape::named(name).ok_or_else(|| {
            usage(format!(
                "unknown shape '{name}' (known: {})",
                Shape::NAMES.join(", ")
            ))
        })?,
        None => Shape::named("llama-7b").ok_or_else(|| usage("no llama-7b shape"))?,
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
        head_dim: args.head_dim.unwrap_or(base.head_dim),
        n_ff_exp: args.n_ff_exp.unwrap_or(base.n_ff_exp),
        n_shared_experts: args.n_shared_experts.unwrap_or(1),
        n_dense_lead: args.n_dense_lead.unwrap_or(0),
        tied: args.tied,
        q_lora_rank: args.q_lora_rank,
        kv_lora_rank: args.kv_lora_rank,
        latent_expanded: args.latent_expanded,
        head_dim_swa: args.head_dim_swa.unwrap_or(0),
        n_shared_kv: args.n_shared_kv,
        n_embd_per_layer: args.n_embd_per_layer,
        n_nextn: args.n_nextn,
        nextn_left_out: args.nextn_left_out,
        n_head_kv_layers: args.n_head_kv_layers,
        n_ff_layers: args.n_ff_layers,
        routing: match args.routing {
            RoutingArg::Context => synth_tool::Routing::Context,
            RoutingArg::Token => synth_tool::Routing::Token,
        },
    };
    let types = WeightTypes::parse(&args.weight_type)?;
    let started = std::time::Instant::now();
    let mut last_report = std::time::Instant::now();
    let bar = progress::bytes_bar("writing");
    let written = write_model(
        &args.out,
        &args.arch,
        shape,
        types,
        args.tokenizer_from.as_deref(),
        |done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(done);
            } else if last_report.elapsed().as_secs_f64() > 2.0 {
                eprintln!(
                    "hypura synth: {} of {}",
                    format_bytes(done),
                    format_bytes(total)
                );
                last_report = std::time::Instant::now();
            }
        },
    );
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let total = written?;
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

/// Bytes of `text` (a size, or a percentage of `reference`).
fn size_of(text: &str, reference: u64) -> Result<u64, Failure> {
    let budget: Budget = text.parse()?;
    Ok(budget.weights_of(reference).unwrap_or(reference))
}

pub fn bench(args: BenchArgs) -> Result<(), Failure> {
    let model_args = ModelArgs {
        model: args.model.clone(),
        memory: None,
        weights_budget: None,
        ram_budget: None,
        disk_gbps: args.disk_gbps,
        io_threads: args.io_threads,
        ctx: args.ctx,
        batch_size: defaults::BATCH_SIZE,
        no_expert_slices: args.hypura_flags.iter().any(|f| f == "--no-expert-slices"),
        // The plan here only sizes the cap; each run reads (or not) its own profile.
        expert_profiles: None,
        no_expert_profile: true,
        gpu_budget: None,
    };
    if !(1..=MAX_PARALLEL).contains(&args.parallel) {
        return Err(usage(format!("--parallel: 1 to {MAX_PARALLEL}")));
    }
    // The runs hold a context of --ctx tokens per sequence.
    let context = args
        .ctx
        .checked_mul(args.parallel)
        .filter(|&c| c <= limits::MAX_CONTEXT_LENGTH)
        .ok_or_else(|| usage("--ctx times --parallel is too large"))?;
    let options = options_of(&model_args)?
        .sequences(args.parallel)
        .context_length(context);
    let options = with_measured_disk(&model_args, options)?;
    let whole = Plan::for_options(&options)?;
    let cap = size_of(&args.memory, whole.model_bytes)?;
    let weights_budget = match &args.weights_budget {
        Some(text) => size_of(text, whole.model_bytes)?,
        // The process within the cap, as `--memory` would plan it.
        None => {
            Plan::for_options(&options.clone().budget(Budget::ProcessBytes(cap)))?.ram_budget_bytes
        }
    };
    let cfg = bench_tool::BenchConfig {
        exe: std::env::current_exe()?,
        model: args.model.clone(),
        cap_bytes: cap,
        weights_budget_bytes: weights_budget.min(whole.model_bytes),
        tokens: args.tokens.max(1),
        rounds: args.rounds.max(1),
        threads: if args.threads == 0 {
            std::thread::available_parallelism().map_or(4, |n| n.get() as i32)
        } else {
            args.threads.min(limits::MAX_THREADS) as i32
        },
        ctx: args.ctx,
        cgroup: args.cgroup,
        disk_bytes_per_s: whole.disk_bytes_per_s,
        prompt: args.prompt.clone(),
        parallel: args.parallel,
        io_threads: args.io_threads,
        temperature: args.temp.max(0.0),
        seed: args.seed,
        // Repacking copies the weights into anonymous memory: under a cap smaller than the
        // model, stock llama.cpp is then killed for memory. Its best setting is without it.
        no_repack: args.no_repack || whole.model_bytes > cap,
        hypura_flags: args.hypura_flags.clone(),
    };
    let summary = bench_tool::bench(&cfg)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    Ok(())
}

pub fn read_rate(args: ReadRateArgs) -> Result<(), Failure> {
    let limit = parse_bytes(&args.limit)
        .ok_or_else(|| usage(format!("--limit {}: not a size", args.limit)))?;
    let request = parse_bytes(&args.request)
        .filter(|r| (4096..=1 << 30).contains(r))
        .ok_or_else(|| usage(format!("--request {}: a size from 4K to 1G", args.request)))?;
    if !(1..=limits::MAX_IO_THREADS as usize).contains(&args.threads) {
        return Err(usage(format!(
            "--threads {}: use 1 to {}",
            args.threads,
            limits::MAX_IO_THREADS
        )));
    }
    let path: &Path = &args.file;
    let rate = read_rate_tool::compare(
        path,
        args.threads,
        request as usize,
        limit,
        args.fresh_pages,
        args.shift,
    )
    .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    if rate.bytes == 0 {
        return Err(usage(format!(
            "{}: the file is empty: nothing to read",
            path.display()
        )));
    }
    println!(
        "read {} of {}{}: hypura reader ({} threads, {} requests) {:.2} GB/s, one sequential reader {:.2} GB/s, ratio {:.2}",
        format_bytes(rate.bytes),
        path.display(),
        if args.fresh_pages { " into fresh pages" } else { "" },
        args.threads,
        format_bytes(request),
        rate.pool_bytes_per_s / 1e9,
        rate.sequential_bytes_per_s / 1e9,
        rate.pool_bytes_per_s / rate.sequential_bytes_per_s
    );
    Ok(())
}

pub fn expert_sim(args: ExpertSimArgs) -> Result<(), Failure> {
    use hypura_tools::expert_sim::{holdout, routing, simulate};
    let path = &args.stats;
    let bad = |why: String| usage(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let stats: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let trace: Vec<hypura_core::ExpertRequest> =
        serde_json::from_value(stats["expert_trace"].clone())
            .map_err(|e| bad(format!("no expert trace ({e})")))?;
    if trace.is_empty() {
        return Err(bad(
            "the trace is empty (experts were not read slice by slice in that run)".into(),
        ));
    }
    let number = |key: &str| stats[key].as_u64().unwrap_or(0);
    let unit = number("expert_unit_bytes");
    let capacity = match args.capacity_experts {
        Some(n) => n,
        None if unit > 0 => (number("expert_cache_bytes") / unit) as usize,
        None => return Err(bad("no expert_unit_bytes: give --capacity-experts".into())),
    };
    let results = simulate(&trace, capacity).map_err(|e| bad(e.to_string()))?;
    let r = routing(&trace);
    println!(
        "{} requests; routing: popularity entropy {:.3} of the most, {:.1}% of picks repeat the layer's previous batch",
        r.requests,
        r.normalized_entropy,
        100.0 * r.reused_share
    );
    println!("capacity {capacity} experts ({} each)", format_bytes(unit));
    println!("| policy | hit rate | hits | misses |");
    println!("|---|---|---|---|");
    for p in &results {
        println!(
            "| {} | {:.1}% | {} | {} |",
            p.policy,
            100.0 * p.hit_rate(),
            p.hits,
            p.misses
        );
    }
    let (hits, misses) = (number("expert_hits"), number("expert_misses"));
    println!(
        "| the run itself (slices, background reader included) | {:.1}% | {hits} | {misses} |",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
    if let Some(h) = holdout(&trace, capacity) {
        println!(
            "second half of the trace ({} picks), a set held all along: chosen on the first half \
             {:.1}%, chosen on the second half itself (hindsight) {:.1}%",
            h.picks,
            100.0 * h.learnt,
            100.0 * h.hindsight
        );
    }
    Ok(())
}
