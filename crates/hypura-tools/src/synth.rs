//! Synthetic GGUF models of real shapes (7B–70B dense, Mixtral-style MoE), with random but
//! valid quantized weights and a working tokenizer: realistic for speed, meaningless as text.
//! Written at disk speed: a block pattern is generated once and repeated, each tensor starting
//! at its own place in it, so that no two layers (nor two experts' routers) hold the same
//! weights.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::gguf::{raw_records, GgufWriter, RecordsError, TensorEntry, Value};

/// Why a synthetic model could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// The shape is not one a model can have.
    #[error("invalid shape: {0}")]
    Shape(String),
    /// The tokenizer could not be copied.
    #[error(transparent)]
    Tokenizer(#[from] RecordsError),
    /// The tokenizer source has no vocabulary.
    #[error("{0} has no tokenizer (no tokenizer.ggml.tokens)")]
    NoTokenizer(String),
    /// Writing the output failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Dimensions of a synthetic model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Embedding width.
    pub n_embd: u64,
    /// FFN width (per expert).
    pub n_ff: u64,
    /// Layers.
    pub n_layer: u32,
    /// Attention heads.
    pub n_head: u64,
    /// Key/value heads (GQA when fewer than `n_head`).
    pub n_head_kv: u64,
    /// Vocabulary (replaced by the tokenizer's when one is copied).
    pub n_vocab: u64,
    /// Experts (0 = dense).
    pub n_expert: u32,
    /// Experts used per token.
    pub n_expert_used: u32,
}

impl Shape {
    /// A named shape: `llama-7b`, `llama-13b`, `llama-70b`, `mixtral-8x7b`.
    pub fn named(name: &str) -> Option<Self> {
        let dense = |n_embd, n_ff, n_layer, n_head, n_head_kv| Shape {
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            n_vocab: 32000,
            n_expert: 0,
            n_expert_used: 0,
        };
        Some(match name {
            "llama-7b" => dense(4096, 11008, 32, 32, 32),
            "llama-13b" => dense(5120, 13824, 40, 40, 40),
            "llama-70b" => dense(8192, 28672, 80, 64, 8),
            "mixtral-8x7b" => Shape {
                n_expert: 8,
                n_expert_used: 2,
                ..dense(4096, 14336, 32, 32, 8)
            },
            _ => return None,
        })
    }

    /// The named shapes.
    pub const NAMES: &'static [&'static str] =
        &["llama-7b", "llama-13b", "llama-70b", "mixtral-8x7b"];
}

/// Quantization of the synthetic weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthType {
    /// ggml Q4_0 (32-element blocks of 18 bytes).
    Q4_0,
    /// ggml Q4_K (256-element blocks of 144 bytes).
    Q4K,
}

impl SynthType {
    fn ggml(self) -> u32 {
        match self {
            SynthType::Q4_0 => 2,
            SynthType::Q4K => 12,
        }
    }
    fn block(self) -> (u64, u64) {
        match self {
            SynthType::Q4_0 => (32, 18),
            SynthType::Q4K => (256, 144),
        }
    }
    fn file_type(self) -> u32 {
        match self {
            SynthType::Q4_0 => 2,
            SynthType::Q4K => 15,
        }
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn f16_bits(value: f32) -> u16 {
    // Normal positive values only (what the scales here are).
    let bits = value.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = (bits >> 13) & 0x3ff;
    ((exp.clamp(1, 30) as u32) << 10 | mant) as u16
}

/// Random bytes of 4-bit quants (two per byte) in 1..=15, with 0 turned into 8: weights
/// `q - 8` then have mean 0. (Uniform 0..=15 would give every weight a mean of -0.5 step, and
/// every matrix-vector product a common component that makes all hidden states alike, so an
/// MoE router would pick the same experts for every token.)
fn centred_nibbles(rng: &mut Rng) -> [u8; 8] {
    let mut b = rng.next().to_le_bytes();
    for byte in b.iter_mut() {
        let (mut lo, mut hi) = (*byte & 0x0f, *byte >> 4);
        if lo == 0 {
            lo = 8;
        }
        if hi == 0 {
            hi = 8;
        }
        *byte = lo | hi << 4;
    }
    b
}

/// `bytes` of valid blocks whose weights have mean 0 and a standard deviation near
/// `0.5 / sqrt(n_in)`.
fn pattern(kind: SynthType, n_in: u64, bytes: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let (_, block_bytes) = kind.block();
    let target_std = 0.5 / (n_in as f32).sqrt();
    let mut out = Vec::with_capacity(bytes);
    while out.len() + block_bytes as usize <= bytes {
        match kind {
            SynthType::Q4_0 => {
                // w = d * (q - 8), q - 8 uniform in -7..=7 (0 twice as likely): std = d * 4.18
                out.extend_from_slice(&f16_bits(target_std / 4.18).to_le_bytes());
                for _ in 0..2 {
                    out.extend_from_slice(&centred_nibbles(&mut rng));
                }
            }
            SynthType::Q4K => {
                // w = d * sc * q - dmin * m per 32-weight sub-block, with sc = 2 and m = 15 in
                // every sub-block and dmin = d: w = d * (2q - 15), q uniform in 0..=15, so
                // mean 0 and std = d * 9.2. The 12 scale bytes pack (sc, m) for 8 sub-blocks:
                // bytes 0-3 hold sc of 0-3, 4-7 m of 0-3, 8-11 sc | m << 4 of 4-7 (6-bit
                // values, whose top bits are 0 here).
                let d = target_std / 9.2;
                out.extend_from_slice(&f16_bits(d).to_le_bytes());
                out.extend_from_slice(&f16_bits(d).to_le_bytes());
                out.extend_from_slice(&[2, 2, 2, 2, 15, 15, 15, 15, 0xf2, 0xf2, 0xf2, 0xf2]);
                for _ in 0..16 {
                    out.extend_from_slice(&rng.next().to_le_bytes());
                }
            }
        }
    }
    out
}

/// The vocabulary size of a `tokenizer.ggml.tokens` record (type id, item type, count, ...).
fn vocab_of(records: &[(String, Vec<u8>)]) -> Option<u64> {
    let (_, raw) = records.iter().find(|(k, _)| k == "tokenizer.ggml.tokens")?;
    let count = raw.get(8..16)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(count);
    Some(u64::from_le_bytes(a)).filter(|n| *n > 0)
}

/// A generated SentencePiece-style vocabulary of `n_vocab` tokens (control, 256 byte tokens,
/// then unique pieces).
fn generated_tokenizer(n_vocab: u64) -> Vec<(String, Value)> {
    let mut tokens = Vec::new();
    let mut types = Vec::new();
    for (t, ty) in [("<unk>", 2i32), ("<s>", 3), ("</s>", 3)] {
        tokens.push(t.to_string());
        types.push(ty);
    }
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let letters = b"etaoinshrdlucmfwypvbgkjqxz";
    let mut i = 0u64;
    while (tokens.len() as u64) < n_vocab {
        let mut piece = String::from("\u{2581}");
        let mut k = i;
        loop {
            piece.push(letters[(k % 26) as usize] as char);
            k /= 26;
            if k == 0 {
                break;
            }
        }
        tokens.push(piece);
        types.push(1);
        i += 1;
    }
    let scores = (0..tokens.len()).map(|i| -(i as f32)).collect();
    vec![
        ("tokenizer.ggml.model".into(), Value::Str("llama".into())),
        ("tokenizer.ggml.tokens".into(), Value::StrArray(tokens)),
        ("tokenizer.ggml.scores".into(), Value::F32Array(scores)),
        ("tokenizer.ggml.token_type".into(), Value::I32Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ]
}

/// The header of a synthetic model of `shape`, and each tensor's `n_in` (row length, which
/// sets its weights' scale).
fn describe(
    shape: Shape,
    kind: SynthType,
    tokenizer: Vec<(String, Value)>,
    n_vocab: u64,
) -> Result<GgufWriter, SynthError> {
    let (block, block_bytes) = kind.block();
    for (what, n) in [("n_embd", shape.n_embd), ("n_ff", shape.n_ff)] {
        if n == 0 || n % block != 0 || n % shape.n_head.max(1) != 0 && what == "n_embd" {
            return Err(SynthError::Shape(format!(
                "{what} = {n} must be a positive multiple of {block} (and of the head count)"
            )));
        }
    }
    if shape.n_head == 0
        || shape.n_head_kv == 0
        || shape.n_head % shape.n_head_kv != 0
        || shape.n_layer == 0
        || shape.n_layer > 512
        || n_vocab == 0
    {
        return Err(SynthError::Shape(
            "head counts, layers (at most 512) and the vocabulary must be positive, n_head a multiple of n_head_kv".into(),
        ));
    }
    if shape.n_expert > 0 && !(1..=shape.n_expert).contains(&shape.n_expert_used) {
        return Err(SynthError::Shape(format!(
            "n_expert_used = {} must be between 1 and n_expert = {}",
            shape.n_expert_used, shape.n_expert
        )));
    }
    let quant = |name: String, dims: Vec<u64>| {
        let elements: u64 = dims.iter().product();
        TensorEntry {
            nbytes: elements / block * block_bytes,
            name,
            dims,
            ggml_type: kind.ggml(),
        }
    };
    let f32t = |name: String, dims: Vec<u64>| TensorEntry {
        nbytes: dims.iter().product::<u64>() * 4,
        name,
        dims,
        ggml_type: 0,
    };
    let (e, f, kv) = (
        shape.n_embd,
        shape.n_ff,
        shape.n_embd / shape.n_head * shape.n_head_kv,
    );
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("llama".into()))
        .meta("general.name", Value::Str("hypura synthetic".into()))
        .meta("general.file_type", Value::U32(kind.file_type()))
        .meta("general.alignment", Value::U32(32))
        .meta("llama.context_length", Value::U32(4096))
        .meta("llama.embedding_length", Value::U32(e as u32))
        .meta("llama.block_count", Value::U32(shape.n_layer))
        .meta("llama.feed_forward_length", Value::U32(f as u32))
        .meta(
            "llama.rope.dimension_count",
            Value::U32((e / shape.n_head) as u32),
        )
        .meta(
            "llama.attention.head_count",
            Value::U32(shape.n_head as u32),
        )
        .meta(
            "llama.attention.head_count_kv",
            Value::U32(shape.n_head_kv as u32),
        )
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("llama.rope.freq_base", Value::F32(10000.0))
        .meta("llama.vocab_size", Value::U32(n_vocab as u32));
    if shape.n_expert > 0 {
        w.meta("llama.expert_count", Value::U32(shape.n_expert))
            .meta("llama.expert_used_count", Value::U32(shape.n_expert_used));
    }
    for (key, value) in tokenizer {
        w.meta(key, value);
    }
    w.tensor(quant("token_embd.weight".into(), vec![e, n_vocab]));
    for l in 0..shape.n_layer {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        w.tensor(f32t(b("attn_norm"), vec![e]))
            .tensor(quant(b("attn_q"), vec![e, e]))
            .tensor(quant(b("attn_k"), vec![e, kv]))
            .tensor(quant(b("attn_v"), vec![e, kv]))
            .tensor(quant(b("attn_output"), vec![e, e]))
            .tensor(f32t(b("ffn_norm"), vec![e]));
        if shape.n_expert > 0 {
            let x = u64::from(shape.n_expert);
            w.tensor(f32t(b("ffn_gate_inp"), vec![e, x]))
                .tensor(quant(b("ffn_gate_exps"), vec![e, f, x]))
                .tensor(quant(b("ffn_up_exps"), vec![e, f, x]))
                .tensor(quant(b("ffn_down_exps"), vec![f, e, x]));
        } else {
            w.tensor(quant(b("ffn_gate"), vec![e, f]))
                .tensor(quant(b("ffn_up"), vec![e, f]))
                .tensor(quant(b("ffn_down"), vec![f, e]));
        }
    }
    w.tensor(f32t("output_norm.weight".into(), vec![e]))
        .tensor(quant("output.weight".into(), vec![e, n_vocab]));
    Ok(w)
}

/// Writes a synthetic model to `out`; `tokenizer_from` copies a real GGUF's tokenizer.
/// `progress` receives (bytes written, total bytes) now and then. Returns the file's size.
pub fn write_model(
    out: &Path,
    shape: Shape,
    kind: SynthType,
    tokenizer_from: Option<&Path>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, SynthError> {
    let (tokenizer, n_vocab) = match tokenizer_from {
        Some(path) => {
            let records = raw_records(path, "tokenizer.")?;
            let n_vocab = vocab_of(&records)
                .ok_or_else(|| SynthError::NoTokenizer(path.display().to_string()))?;
            let values = records
                .into_iter()
                .map(|(k, raw)| (k, Value::Raw(raw)))
                .collect();
            (values, n_vocab)
        }
        None => (generated_tokenizer(shape.n_vocab), shape.n_vocab),
    };
    let w = describe(shape, kind, tokenizer, n_vocab)?;
    let (_, block_bytes) = kind.block();
    let header = w.header_bytes();
    let total = header.len() as u64 + w.data_bytes();
    let failed = |source| SynthError::Write {
        path: out.display().to_string(),
        source,
    };
    let mut writer = BufWriter::with_capacity(8 << 20, File::create(out).map_err(failed)?);
    writer.write_all(&header).map_err(failed)?;
    const PATTERN_BYTES: usize = 16 << 20;
    let mut patterns: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut written = header.len() as u64;
    let ones: Vec<u8> = std::iter::repeat_n(1.0f32.to_le_bytes(), 1 << 16)
        .flatten()
        .collect();
    // Router weights must differ between experts, or every token picks the same ones.
    let mut rng = Rng(99);
    let router: Vec<u8> = (0..1 << 16)
        .flat_map(|_| ((rng.next() % 2001) as f32 / 1000.0 - 1.0).to_le_bytes())
        .collect();
    let alignment = w.alignment();
    for (i, t) in w.tensors().iter().enumerate() {
        let n_in = t.dims[0];
        // The unit a tensor's start may move by without breaking blocks (0: do not move).
        let (source, unit): (&[u8], usize) = if t.name.ends_with("ffn_gate_inp.weight") {
            (&router, 4)
        } else if t.ggml_type == 0 {
            (&ones, 0)
        } else {
            let source = patterns.entry(n_in).or_insert_with(|| {
                pattern(
                    kind,
                    n_in,
                    PATTERN_BYTES / block_bytes as usize * block_bytes as usize,
                    7 + i as u64,
                )
            });
            (&source[..], block_bytes as usize)
        };
        let mut at = source
            .len()
            .checked_div(unit)
            .filter(|&units| units > 0)
            .map_or(0, |units| {
                (Rng(1000 + i as u64).next() as usize % units) * unit
            });
        let mut left = t.nbytes as usize;
        while left > 0 {
            let n = left.min(source.len() - at);
            writer.write_all(&source[at..at + n]).map_err(failed)?;
            left -= n;
            at = (at + n) % source.len();
        }
        let pad = (t.nbytes.div_ceil(alignment) * alignment - t.nbytes) as usize;
        writer.write_all(&vec![0u8; pad]).map_err(failed)?;
        written += t.nbytes + pad as u64;
        progress(written, total);
    }
    writer.flush().map_err(failed)?;
    Ok(total)
}
