//! The command line, as clap parses it. What the arguments mean is resolved in the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hypura_core::defaults;

#[derive(Parser)]
#[command(
    name = "hypura",
    version,
    about = "Run GGUF models larger than memory: RAM tier + streaming from disk"
)]
pub struct Cli {
    /// More logging on stderr (-v: info, -vv: debug incl. llama.cpp).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Print the placement for a RAM budget, from the GGUF header alone.
    Plan(PlanArgs),
    /// Generate text. stdout carries only the generated text.
    Run(RunArgs),
    /// Chat with the model through its own chat template: one answer with -p or -f, or a
    /// conversation on stdin (one message per line; the context carries over between turns).
    Chat(ChatArgs),
    /// Serve the model over HTTP (OpenAI-compatible: /v1/chat/completions, /v1/completions,
    /// /v1/models, /health), decoding concurrent requests together.
    Serve(ServeArgs),
    /// Write a synthetic GGUF of a real model's shape (random weights, working tokenizer).
    Synth(SynthArgs),
    /// Stock llama.cpp vs hypura, alternately, several rounds, in one table.
    Bench(BenchArgs),
    /// hypura's reader against a sequential read of the same file (bytes/s and ratio).
    ReadRate(ReadRateArgs),
    /// Replay a run's expert requests (its --stats-json) against Belady's optimum, LRU and
    /// hypura's policy at one capacity, with the routing's spread and reuse.
    ExpertSim(ExpertSimArgs),
}

#[derive(Args)]
pub struct ModelArgs {
    /// The GGUF model file.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// The memory the whole process may use (e.g. 8G): hypura subtracts the KV cache,
    /// llama.cpp's buffers and its own, and plans the weights in the rest. Default: every
    /// weight in RAM.
    #[arg(long, conflicts_with_all = ["weights_budget", "ram_budget"])]
    pub memory: Option<String>,
    /// Weights only: bytes of weights hypura may hold in RAM (512M, 2G) or a share of them
    /// (40%); the KV cache and buffers come on top. --memory bounds the whole process.
    #[arg(long, conflicts_with = "ram_budget")]
    pub weights_budget: Option<String>,
    /// The former name of --weights-budget (weights only), kept working with a warning.
    #[arg(long, hide = true)]
    pub ram_budget: Option<String>,
    /// Disk read bandwidth in GB/s for the bound (default: measured once and cached).
    #[arg(long)]
    pub disk_gbps: Option<f64>,
    /// Reader threads (read requests in flight) when streaming, 1 to 64 (default: 8 for a
    /// mixture-of-experts model streamed expert by expert, 4 otherwise).
    #[arg(long)]
    pub io_threads: Option<u32>,
    /// Context length in tokens.
    #[arg(short = 'c', long, default_value_t = defaults::CONTEXT_LENGTH)]
    pub ctx: u32,
    /// Tokens computed in one pass (llama.cpp's -b and -ub together). A prompt longer than
    /// this takes several passes, and with streamed weights each pass reads them again:
    /// larger batches mean fewer reads for long prompts, at the cost of a larger compute
    /// buffer (planned into --memory).
    #[arg(short = 'b', long, visible_alias = "ubatch-size", default_value_t = defaults::BATCH_SIZE)]
    pub batch_size: u32,
    /// Mixture-of-experts models: stream each layer's experts whole, as dense layers stream,
    /// instead of reading only the experts the router picks (the default when the budget
    /// holds everything but the experts, and one layer's experts besides).
    #[arg(long)]
    pub no_expert_slices: bool,
    /// Mixture-of-experts models: the folder of saved expert profiles (which experts each
    /// layer picks, measured): a run starts its expert cache from the model's profile and
    /// saves it after; `plan` predicts from it. Default: $XDG_CACHE_HOME/hypura/experts.
    #[arg(long, conflicts_with = "no_expert_profile")]
    pub expert_profiles: Option<PathBuf>,
    /// Neither read nor save an expert profile.
    #[arg(long)]
    pub no_expert_profile: bool,
    /// GPU memory hypura may use: the weights it puts there and the KV cache of the layers
    /// they belong to (8G, 25% of the weights, or all). Needs a build with a GPU backend.
    /// Default: none, nothing on the GPU.
    #[arg(long)]
    pub gpu_budget: Option<String>,
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Plan for this many sequences decoded together, each with a context of -c tokens (as
    /// `run -P` and `serve -P` load the model).
    #[arg(short = 'P', long, default_value_t = 1)]
    pub parallel: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where a prompt comes from: `-p TEXT`, `-f FILE` (`-f -` reads stdin).
#[derive(Args)]
pub struct PromptArgs {
    /// The prompt.
    #[arg(short = 'p', long, conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the prompt from this file (`-` for stdin).
    #[arg(short = 'f', long)]
    pub file: Option<PathBuf>,
}

/// How tokens are sampled and how many.
#[derive(Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    /// Seed for sampling.
    #[arg(short = 's', long, default_value_t = 42)]
    pub seed: u64,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 40)]
    pub top_k: i32,
    /// Keep the most likely tokens whose probabilities add up to p (1: all).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Keep only tokens at least p times as likely as the most likely one (0: all).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalize tokens repeated within the last --repeat-last-n (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many of the last tokens the penalties look at (0: none).
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: i32,
    /// Lower a repeated token's logit once (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Lower a repeated token's logit by this much per repetition (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: u32,
    /// Run stock llama.cpp (default mmap loading, no hypura placement) for comparison.
    #[arg(long, alias = "stock")]
    pub baseline: bool,
    /// With --baseline: llama.cpp's layers on the GPU (its -ngl).
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", requires = "baseline")]
    pub n_gpu_layers: Option<u32>,
    /// With --baseline: every expert matrix on the CPU (llama.cpp's --cpu-moe).
    #[arg(long, requires = "baseline", conflicts_with = "n_cpu_moe")]
    pub cpu_moe: bool,
    /// With --baseline: the expert matrices of the first N layers on the CPU (llama.cpp's
    /// --n-cpu-moe).
    #[arg(long, requires = "baseline")]
    pub n_cpu_moe: Option<u32>,
    /// With --baseline: weights whose names match the regular expression PATTERN go to the
    /// buffer type TYPE (`CPU`, or the GPU's, e.g. `CUDA0`), before --n-cpu-moe's; the first
    /// that matches wins (llama.cpp's -ot). Repeatable, or comma-separated.
    #[arg(
        long = "override-tensor",
        visible_alias = "ot",
        value_name = "PATTERN=TYPE",
        value_delimiter = ',',
        requires = "baseline"
    )]
    pub override_tensor: Vec<String>,
    /// Turn off llama.cpp's repacked CPU weight layouts (for stock and hypura alike).
    #[arg(long)]
    pub no_repack: bool,
    /// Do not checksum streamed regions (they are checked by default, so that a model file
    /// changed while running is detected; this measures what that costs).
    #[arg(long)]
    pub no_verify_reads: bool,
    /// Write statistics as JSON to this file (in a chat: of the last answer).
    #[arg(long)]
    pub stats_json: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 64)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep generating past end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Generate this many continuations of the prompt at once (seeds --seed, --seed + 1, ...),
    /// decoded together, one batch per step: the streamed weights are read once per step for
    /// all of them. Prints each, and the aggregate rate.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub parallel: u32,
}

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one, printed when listening).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests decoded together; each gets its own context of -c tokens.
    #[arg(long = "parallel", short = 'P', default_value_t = 4)]
    pub parallel: u32,
    /// Require `Authorization: Bearer KEY` (default: none, or $HYPURA_API_KEY).
    #[arg(long, env = "HYPURA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model's name in the API (default: the file's name without .gguf).
    #[arg(long)]
    pub alias: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: u32,
    /// Turn off llama.cpp's repacked CPU weight layouts.
    #[arg(long)]
    pub no_repack: bool,
}

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Ask this one question, print the answer and exit (otherwise: a conversation on stdin).
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    /// Tokens per answer, at most.
    #[arg(short = 'n', long, default_value_t = 512)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args)]
pub struct SynthArgs {
    /// The architecture family: llama, mistral3, qwen2, qwen3, smollm3, olmo2, phi3, gemma2,
    /// gemma3, qwen3moe, gpt-oss, glm4moe, deepseek2, qwen35moe, gemma4 (its tensors and keys
    /// come from hypura's spec).
    #[arg(long, default_value = "llama")]
    pub arch: String,
    /// A named shape: llama-7b, llama-13b, llama-70b, mixtral-8x7b (the flags below override it).
    #[arg(long)]
    pub shape: Option<String>,
    /// Weight type, as ggml names it (q4_0, q8_0, q4_k, iq2_xxs, mxfp4, bf16, …), or the mix
    /// q4_k_m (Q4_K with Q6_K for the head, attn_v and ffn_down); quantized by ggml.
    #[arg(long = "type", default_value = "q4_0")]
    pub weight_type: String,
    /// Leave the LM head out, so that the embedding serves as the head (where the family
    /// allows it).
    #[arg(long)]
    pub tied: bool,
    /// Copy the tokenizer of this GGUF (default: a generated 32000-token vocabulary).
    #[arg(long)]
    pub tokenizer_from: Option<PathBuf>,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub n_embd: Option<u64>,
    #[arg(long)]
    pub n_ff: Option<u64>,
    #[arg(long)]
    pub n_layer: Option<u32>,
    #[arg(long)]
    pub n_head: Option<u64>,
    #[arg(long)]
    pub n_head_kv: Option<u64>,
    #[arg(long)]
    pub n_vocab: Option<u64>,
    #[arg(long)]
    pub n_expert: Option<u32>,
    #[arg(long)]
    pub n_expert_used: Option<u32>,
    /// Head size (default: n_embd / n_head).
    #[arg(long)]
    pub head_dim: Option<u64>,
    /// One expert's FFN width, in families that have the key (default: n_ff).
    #[arg(long)]
    pub n_ff_exp: Option<u64>,
    /// Shared experts, in families that have them (default 1).
    #[arg(long)]
    pub n_shared_experts: Option<u32>,
    /// Leading dense layers, in families that have them (default 0).
    #[arg(long)]
    pub n_dense_lead: Option<u32>,
    /// Query compression rank, in latent-attention families (0: none, the "lite" layout;
    /// default n_embd / 2).
    #[arg(long)]
    pub q_lora_rank: Option<u64>,
    /// Key/value compression rank, in latent-attention families (default n_embd / 4).
    #[arg(long)]
    pub kv_lora_rank: Option<u64>,
    /// Write latent attention in the older layout (one attn_kv_b expanding the latent into
    /// ordinary heads) instead of the absorbed one (attn_k_b, attn_v_b).
    #[arg(long)]
    pub latent_expanded: bool,
    /// Head size of sliding-window layers, in families where it is their own (gemma4;
    /// default: half the head size).
    #[arg(long)]
    pub head_dim_swa: Option<u64>,
    /// Last layers reusing an earlier layer's KV cache, in families that have them (gemma4;
    /// default: the most, up to a quarter of the layers, that llama.cpp accepts).
    #[arg(long)]
    pub n_shared_kv: Option<u32>,
    /// Width of each layer's per-layer input embedding, in families that have them (gemma4;
    /// default: n_embd / 16, in whole blocks of the weight type; 0: none).
    #[arg(long)]
    pub n_embd_per_layer: Option<u64>,
    /// Next-token-prediction layers after the trunk, in families that have them (glm4moe,
    /// deepseek2, qwen35moe): llama.cpp checks and skips them, hypura never reads them.
    #[arg(long, default_value_t = 0)]
    pub n_nextn: u32,
    /// Leave the next-token-prediction layers' tensors out (their count stays in the
    /// header), as some converters do (glm4moe, deepseek2).
    #[arg(long, requires = "n_nextn")]
    pub nextn_left_out: bool,
    /// Key/value heads layer by layer, comma-separated, repeated over the layers (e.g. 2,4:
    /// 2 in even layers, 4 in odd ones), in families that size each layer by its own (gemma4).
    #[arg(long, value_delimiter = ',')]
    pub n_head_kv_layers: Vec<u64>,
    /// Dense FFN widths layer by layer, comma-separated, repeated over the layers, in
    /// families that size each layer by its own (gemma4).
    #[arg(long, value_delimiter = ',')]
    pub n_ff_layers: Vec<u64>,
    /// What MoE routers follow: `context` (the whole hidden state: skewed picks that mostly
    /// repeat the previous token's) or `token` (the current token only: picks spread
    /// near-evenly over the experts, changing with every token).
    #[arg(long, value_enum, default_value_t = RoutingArg::Context)]
    pub routing: RoutingArg,
    /// Build a mixture-of-experts model from this dense llama-family GGUF instead: each
    /// layer's FFN becomes --n-expert copies of itself (default 4), --n-expert-used of them
    /// picked per token (default 2) by a random router. Its text is the dense model's.
    #[arg(long, conflicts_with = "shape")]
    pub moe_from: Option<PathBuf>,
}

/// `--routing` of `hypura synth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RoutingArg {
    Context,
    Token,
}

#[derive(Args)]
pub struct BenchArgs {
    /// The GGUF model file.
    #[arg(long)]
    pub model: PathBuf,
    /// The memory cap for both modes (512M, 2G, 40% of the weights); hypura plans its whole
    /// process within it, as `run --memory` does.
    #[arg(long, alias = "ram-budget")]
    pub memory: String,
    /// hypura's weight budget (default: what the cap leaves after the KV cache, llama.cpp's
    /// buffers and the process).
    #[arg(long)]
    pub weights_budget: Option<String>,
    /// Tokens generated per run.
    #[arg(long, default_value_t = 8)]
    pub tokens: usize,
    /// Rounds (each runs stock, then hypura).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// CPU threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Context length.
    #[arg(long, default_value_t = 256)]
    pub ctx: u32,
    /// Run each process in its own cgroup (v2) with memory.max = the cap, after dropping the page cache (root).
    #[arg(long)]
    pub cgroup: bool,
    /// Write the summary and every run's statistics as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Disk bandwidth in GB/s for the bound (default: measured once and cached).
    #[arg(long)]
    pub disk_gbps: Option<f64>,
    /// The prompt.
    #[arg(long, default_value = "The history of the city begins")]
    pub prompt: String,
    /// Turn off repacked CPU layouts in both modes.
    #[arg(long)]
    pub no_repack: bool,
    /// Sequences decoded together in each run (`run --parallel`): aggregate rates, and the
    /// time until every sequence has its first token.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub parallel: u32,
    /// hypura's reader threads (read requests in flight; default: 8 for a mixture-of-experts
    /// model streamed expert by expert, 4 otherwise).
    #[arg(long)]
    pub io_threads: Option<u32>,
    /// Sampling temperature for both modes (0 = greedy). Greedy decoding of a synthetic
    /// model tends to repeat one token, so an MoE model would route the same experts every
    /// token; a temperature spreads the routing.
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Sampling seed, the same for both modes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Extra flags for hypura's runs (e.g. --no-verify-reads), one per occurrence.
    #[arg(long = "hypura-flag", allow_hyphen_values = true)]
    pub hypura_flags: Vec<String>,
}

#[derive(Args)]
pub struct ExpertSimArgs {
    /// The statistics of a `hypura run --stats-json` on a mixture-of-experts model.
    #[arg(long)]
    pub stats: PathBuf,
    /// The capacity in experts (one expert of one layer); default: the run's expert cache.
    #[arg(long)]
    pub capacity_experts: Option<usize>,
}

#[derive(Args)]
pub struct ReadRateArgs {
    /// The file to read.
    #[arg(long)]
    pub file: PathBuf,
    /// Read at most this much (e.g. 2G).
    #[arg(long, default_value = "2G")]
    pub limit: String,
    /// Reader threads (1 to 64).
    #[arg(long, default_value_t = 4)]
    pub threads: usize,
    /// Request size (4K to 1G).
    #[arg(long, default_value = "4M")]
    pub request: String,
    /// Hand the destination pages back to the OS before each reuse, so that every read
    /// faults in fresh pages (as streaming into fresh memory does).
    #[arg(long)]
    pub fresh_pages: bool,
    /// Start this many bytes into the file; a shift that is not a multiple of 4 KiB (e.g.
    /// 32) sends every read through the bounce buffer, as reads of expert slices go.
    #[arg(long, default_value_t = 0)]
    pub shift: u64,
}
