//! Synthetic GGUF models of real shapes (7B–70B dense, Mixtral-style MoE), with random but
//! valid quantized weights and a working tokenizer: realistic for speed, meaningless as text.
//! Written at disk speed: a block pattern is generated once and repeated, each tensor starting
//! at its own place in it, so that no two layers (nor two experts' routers) hold the same
//! weights.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{HypuraError, Result};
use crate::gguf::GgufHeader;

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

struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
    nbytes: u64,
    n_in: u64,
}

enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    Raw(Vec<u8>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Raw GGUF key/value records: (key, value type + value bytes).
type Records = Vec<(String, Vec<u8>)>;

/// Copies the raw key/value records named `tokenizer.*` from a GGUF, and its vocabulary size.
fn tokenizer_records(path: &Path) -> Result<(Records, u64)> {
    let header = GgufHeader::open(path)?;
    let mut file = File::open(path)?;
    let mut records = Vec::new();
    // Re-walk the key/values to capture raw bytes of the tokenizer's records.
    file.seek(SeekFrom::Start(24))?;
    let mut buf = vec![0u8; header.data_offset as usize - 24];
    file.read_exact(&mut buf)?;
    let mut pos = 0usize;
    let n_kv = header.meta.len();
    let read_u64 = |b: &[u8], p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap());
    let read_u32 = |b: &[u8], p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    fn skip_value(b: &[u8], p: usize, t: u32) -> usize {
        let read_u64 = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize;
        match t {
            0 | 1 | 7 => p + 1,
            2 | 3 => p + 2,
            4..=6 => p + 4,
            10..=12 => p + 8,
            8 => p + 8 + read_u64(p),
            9 => {
                let item = u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
                let n = read_u64(p + 4);
                let mut q = p + 12;
                for _ in 0..n {
                    q = skip_value(b, q, item);
                }
                q
            }
            _ => b.len(),
        }
    }
    let mut vocab = 0u64;
    for _ in 0..n_kv {
        let key_len = read_u64(&buf, pos) as usize;
        let key = String::from_utf8_lossy(&buf[pos + 8..pos + 8 + key_len]).into_owned();
        let value_start = pos + 8 + key_len;
        let value_type = read_u32(&buf, value_start);
        let end = skip_value(&buf, value_start + 4, value_type);
        if key.starts_with("tokenizer.") {
            if key == "tokenizer.ggml.tokens" {
                vocab = read_u64(&buf, value_start + 8);
            }
            records.push((key, buf[value_start..end].to_vec()));
        }
        pos = end;
    }
    if vocab == 0 {
        return Err(HypuraError::InvalidArgument(format!(
            "{} has no tokenizer",
            path.display()
        )));
    }
    Ok((records, vocab))
}

/// A generated SentencePiece-style vocabulary of `n_vocab` tokens (control, 256 byte tokens,
/// then unique pieces).
fn generated_tokenizer(n_vocab: u64) -> Records {
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
    let mut token_bytes = Vec::new();
    token_bytes.extend_from_slice(&9u32.to_le_bytes());
    token_bytes.extend_from_slice(&8u32.to_le_bytes());
    token_bytes.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for t in &tokens {
        put_str(&mut token_bytes, t);
    }
    let mut score_bytes = Vec::new();
    score_bytes.extend_from_slice(&9u32.to_le_bytes());
    score_bytes.extend_from_slice(&6u32.to_le_bytes());
    score_bytes.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for i in 0..tokens.len() {
        score_bytes.extend_from_slice(&(-(i as f32)).to_le_bytes());
    }
    let mut type_bytes = Vec::new();
    type_bytes.extend_from_slice(&9u32.to_le_bytes());
    type_bytes.extend_from_slice(&5u32.to_le_bytes());
    type_bytes.extend_from_slice(&(types.len() as u64).to_le_bytes());
    for t in &types {
        type_bytes.extend_from_slice(&t.to_le_bytes());
    }
    let scalar = |v: u32| {
        let mut b = 4u32.to_le_bytes().to_vec();
        b.extend_from_slice(&v.to_le_bytes());
        b
    };
    let mut model = 8u32.to_le_bytes().to_vec();
    put_str(&mut model, "llama");
    vec![
        ("tokenizer.ggml.model".into(), model),
        ("tokenizer.ggml.tokens".into(), token_bytes),
        ("tokenizer.ggml.scores".into(), score_bytes),
        ("tokenizer.ggml.token_type".into(), type_bytes),
        ("tokenizer.ggml.bos_token_id".into(), scalar(1)),
        ("tokenizer.ggml.eos_token_id".into(), scalar(2)),
        ("tokenizer.ggml.unknown_token_id".into(), scalar(0)),
    ]
}

/// Writes a synthetic model to `out`; `tokenizer_from` copies a real GGUF's tokenizer.
/// `progress` receives (bytes written, total bytes) now and then.
pub fn write_model(
    out: &Path,
    shape: Shape,
    kind: SynthType,
    tokenizer_from: Option<&Path>,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64> {
    let (tokenizer, n_vocab) = match tokenizer_from {
        Some(path) => tokenizer_records(path)?,
        None => (generated_tokenizer(shape.n_vocab), shape.n_vocab),
    };
    let (block, block_bytes) = kind.block();
    for (what, n) in [("n_embd", shape.n_embd), ("n_ff", shape.n_ff)] {
        if n == 0 || n % block != 0 || n % shape.n_head.max(1) != 0 && what == "n_embd" {
            return Err(HypuraError::InvalidArgument(format!(
                "{what} = {n} must be a positive multiple of {block} (and of the head count)"
            )));
        }
    }
    if shape.n_head == 0
        || shape.n_head_kv == 0
        || shape.n_head % shape.n_head_kv != 0
        || shape.n_layer == 0
    {
        return Err(HypuraError::InvalidArgument(
            "head counts and layers must be positive, n_head a multiple of n_head_kv".into(),
        ));
    }
    let quant = |name: String, dims: Vec<u64>| {
        let elements: u64 = dims.iter().product();
        TensorSpec {
            n_in: dims[0],
            nbytes: elements / block * block_bytes,
            name,
            dims,
            ggml_type: kind.ggml(),
        }
    };
    let f32t = |name: String, dims: Vec<u64>| TensorSpec {
        n_in: dims[0],
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
    let mut tensors = vec![quant("token_embd.weight".into(), vec![e, n_vocab])];
    for l in 0..shape.n_layer {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        tensors.push(f32t(b("attn_norm"), vec![e]));
        tensors.push(quant(b("attn_q"), vec![e, e]));
        tensors.push(quant(b("attn_k"), vec![e, kv]));
        tensors.push(quant(b("attn_v"), vec![e, kv]));
        tensors.push(quant(b("attn_output"), vec![e, e]));
        tensors.push(f32t(b("ffn_norm"), vec![e]));
        if shape.n_expert > 0 {
            let x = shape.n_expert as u64;
            tensors.push(f32t(b("ffn_gate_inp"), vec![e, x]));
            tensors.push(quant(b("ffn_gate_exps"), vec![e, f, x]));
            tensors.push(quant(b("ffn_up_exps"), vec![e, f, x]));
            tensors.push(quant(b("ffn_down_exps"), vec![f, e, x]));
        } else {
            tensors.push(quant(b("ffn_gate"), vec![e, f]));
            tensors.push(quant(b("ffn_up"), vec![e, f]));
            tensors.push(quant(b("ffn_down"), vec![f, e]));
        }
    }
    tensors.push(f32t("output_norm.weight".into(), vec![e]));
    tensors.push(quant("output.weight".into(), vec![e, n_vocab]));

    let mut meta: Vec<(String, Meta)> = vec![
        ("general.architecture".into(), Meta::Str("llama".into())),
        ("general.name".into(), Meta::Str("hypura synthetic".into())),
        ("general.file_type".into(), Meta::U32(kind.file_type())),
        ("general.alignment".into(), Meta::U32(32)),
        ("llama.context_length".into(), Meta::U32(4096)),
        ("llama.embedding_length".into(), Meta::U32(e as u32)),
        ("llama.block_count".into(), Meta::U32(shape.n_layer)),
        ("llama.feed_forward_length".into(), Meta::U32(f as u32)),
        (
            "llama.rope.dimension_count".into(),
            Meta::U32((e / shape.n_head) as u32),
        ),
        (
            "llama.attention.head_count".into(),
            Meta::U32(shape.n_head as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Meta::U32(shape.n_head_kv as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Meta::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Meta::F32(10000.0)),
        ("llama.vocab_size".into(), Meta::U32(n_vocab as u32)),
    ];
    if shape.n_expert > 0 {
        meta.push(("llama.expert_count".into(), Meta::U32(shape.n_expert)));
        meta.push((
            "llama.expert_used_count".into(),
            Meta::U32(shape.n_expert_used),
        ));
    }
    for (key, raw) in tokenizer {
        meta.push((key, Meta::Raw(raw)));
    }

    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (key, value) in &meta {
        put_str(&mut header, key);
        match value {
            Meta::U32(v) => {
                header.extend_from_slice(&4u32.to_le_bytes());
                header.extend_from_slice(&v.to_le_bytes());
            }
            Meta::F32(v) => {
                header.extend_from_slice(&6u32.to_le_bytes());
                header.extend_from_slice(&v.to_le_bytes());
            }
            Meta::Str(s) => {
                header.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut header, s);
            }
            Meta::Raw(raw) => header.extend_from_slice(raw),
        }
    }
    let mut offset = 0u64;
    for t in &tensors {
        put_str(&mut header, &t.name);
        header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            header.extend_from_slice(&d.to_le_bytes());
        }
        header.extend_from_slice(&t.ggml_type.to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        offset += t.nbytes.div_ceil(32) * 32;
    }
    while header.len() % 32 != 0 {
        header.push(0);
    }
    let total = header.len() as u64 + offset;

    let mut writer = BufWriter::with_capacity(8 << 20, File::create(out)?);
    writer.write_all(&header)?;
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
    for (i, t) in tensors.iter().enumerate() {
        // The unit a tensor's start may move by without breaking blocks (0: do not move).
        let (source, unit): (&[u8], usize) = if t.name.ends_with("ffn_gate_inp.weight") {
            (&router, 4)
        } else if t.ggml_type == 0 {
            (&ones, 0)
        } else {
            let source = patterns.entry(t.n_in).or_insert_with(|| {
                pattern(
                    kind,
                    t.n_in,
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
            writer.write_all(&source[at..at + n])?;
            left -= n;
            at = (at + n) % source.len();
        }
        let pad = (t.nbytes.div_ceil(32) * 32 - t.nbytes) as usize;
        writer.write_all(&vec![0u8; pad])?;
        written += t.nbytes + pad as u64;
        progress(written, total);
    }
    writer.flush()?;
    Ok(total)
}
