//! The vocabulary: what llama.cpp's tokenizer loading asserts on (duplicate token texts),
//! throws without catching at tokenize time (a missing byte token, an unresolvable BOS), or
//! blows up on (a byte-level token whose characters are not byte-level).

use std::collections::HashSet;

use super::super::excerpt;
use super::super::gguf::{value_type, ArrayRef, GgufHeader, MetaValue};

/// Largest vocabulary.
const MAX_TOKENS: u64 = 1 << 21;
/// Smallest vocabulary (every default special id and the 256 byte tokens fit).
const MIN_TOKENS: u64 = 256;
/// Longest token text.
const MAX_TOKEN_BYTES: usize = 16 << 10;
/// The pre-tokenizers llama.cpp knows for a byte-level (gpt2) vocabulary
/// (`tokenizer.ggml.pre`; it refuses any other, and uses its default when the key is absent).
const KNOWN_BPE_PRE_TOKENIZERS: &[&str] = &[
    "a.x-4.0",
    "afmoe",
    "bailingmoe",
    "bailingmoe2",
    "bloom",
    "chameleon",
    "chatglm-bpe",
    "codeshell",
    "cohere2moe",
    "command-r",
    "dbrx",
    "deepseek-coder",
    "deepseek-llm",
    "deepseek-r1-qwen",
    "deepseek-v3",
    "default",
    "exaone",
    "exaone-moe",
    "exaone4",
    "f2llmv2",
    "falcon",
    "falcon-h1",
    "falcon3",
    "gemma4",
    "gigachat",
    "glm4",
    "glm5",
    "gpt-2",
    "gpt-4o",
    "gpt3-finnish",
    "granite-docling",
    "granite-embed-multi-311m",
    "granite-embed-multi-97m",
    "grok-2",
    "hunyuan",
    "hunyuan-dense",
    "hy_v4",
    "jais",
    "jais-2",
    "jina-de",
    "jina-es",
    "jina-v1-en",
    "jina-v2-code",
    "jina-v2-de",
    "jina-v2-es",
    "jina-v5-nano",
    "joyai-llm",
    "kanana2",
    "kimi-k2",
    "kormo",
    "laguna",
    "lfm2",
    "llada-moe",
    "llama-bpe",
    "llama-v3",
    "llama3",
    "llama4",
    "megrez",
    "mellum",
    "mellum2",
    "midm-2.0",
    "minerva-7b",
    "minicpm5",
    "minimax-m2",
    "mmbert",
    "modern-bert",
    "mpt",
    "olmo",
    "phi-2",
    "pixtral",
    "poro-chat",
    "qwen2",
    "qwen35",
    "refact",
    "roberta-bpe",
    "sarvam-moe",
    "seed-coder",
    "smaug-bpe",
    "smollm",
    "solar-open",
    "spark2_5",
    "stablelm2",
    "starcoder",
    "superbpe",
    "talkie",
    "tekken",
    "tiny_aya",
    "trillion",
    "ufakzeka",
    "viking",
    "whitespace",
    "youtu",
];
/// llama.cpp's token types (`LLAMA_TOKEN_TYPE_*`).
const TYPE_NORMAL: f64 = 1.0;
const TYPE_BYTE: f64 = 6.0;
const MAX_TYPE: f64 = 6.0;

fn array<'a>(header: &'a GgufHeader, key: &str) -> Result<Option<&'a ArrayRef>, String> {
    match header.get(key) {
        None => Ok(None),
        Some(MetaValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(format!("{key} is not an array")),
    }
}

/// True for the characters of GPT-2's byte-to-unicode alphabet (each decodes to one byte).
fn is_byte_level(c: char) -> bool {
    matches!(c as u32, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff | 0x100..=0x143)
}

/// True for `<0xXX>`.
fn is_byte_token(text: &[u8]) -> bool {
    text.len() == 6
        && text.starts_with(b"<0x")
        && text[5] == b'>'
        && text[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// Checks the vocabulary (its size against the embedding is a tensor-shape check).
pub(super) fn check(header: &GgufHeader) -> Result<(), String> {
    let model = match header.get("tokenizer.ggml.model") {
        Some(MetaValue::Str(m)) => m.as_str(),
        Some(_) => return Err("tokenizer.ggml.model is not a string".into()),
        None => return Err("tokenizer.ggml.model is missing".into()),
    };
    let byte_level = match model {
        "gpt2" => true,
        "llama" => false,
        other => {
            return Err(format!(
                "tokenizer {} is not supported (gpt2 and llama are)",
                excerpt(other)
            ))
        }
    };
    let tokens =
        array(header, "tokenizer.ggml.tokens")?.ok_or("tokenizer.ggml.tokens is missing")?;
    if tokens.item_type != value_type::STRING {
        return Err("tokenizer.ggml.tokens is not an array of strings".into());
    }
    let n = tokens.count;
    if !(MIN_TOKENS..=MAX_TOKENS).contains(&n) {
        return Err(format!(
            "the vocabulary has {n} tokens (must be {MIN_TOKENS} to {MAX_TOKENS})"
        ));
    }
    let types = match array(header, "tokenizer.ggml.token_type")? {
        None => None,
        Some(a) if a.item_type == value_type::I32 && a.count == n => Some(header.numbers(a)),
        Some(_) => {
            return Err(format!(
                "tokenizer.ggml.token_type must hold {n} int32 values, one per token"
            ))
        }
    };
    if let Some(t) = types
        .as_ref()
        .and_then(|t| t.iter().find(|&&t| !(0.0..=MAX_TYPE).contains(&t)))
    {
        return Err(format!(
            "tokenizer.ggml.token_type holds an unknown type {t}"
        ));
    }
    if let Some(scores) = array(header, "tokenizer.ggml.scores")? {
        if !matches!(scores.item_type, value_type::F32 | value_type::I32) || scores.count != n {
            return Err(format!(
                "tokenizer.ggml.scores must hold {n} float32 values, one per token"
            ));
        }
        if header.numbers(scores).iter().any(|s| !s.is_finite()) {
            return Err("tokenizer.ggml.scores holds a value that is not finite".into());
        }
    }
    if byte_level {
        if let Some(MetaValue::Str(pre)) = header.get("tokenizer.ggml.pre") {
            if !KNOWN_BPE_PRE_TOKENIZERS.contains(&pre.as_str()) {
                return Err(format!(
                    "tokenizer.ggml.pre {} is not a pre-tokenizer llama.cpp knows",
                    excerpt(pre)
                ));
            }
        }
        match array(header, "tokenizer.ggml.merges")? {
            Some(m) if m.item_type == value_type::STRING => {}
            _ => return Err("a gpt2 tokenizer needs tokenizer.ggml.merges (strings)".into()),
        }
    }
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(n as usize);
    let mut byte_tokens = 0usize;
    let mut count = 0u64;
    for (i, text) in header.strings(tokens).enumerate() {
        count += 1;
        // llama.cpp reads each token as a C string: it ends at the first NUL byte.
        let text = text.split(|&b| b == 0).next().unwrap_or_default();
        let shown = || excerpt(&String::from_utf8_lossy(text));
        if text.is_empty() || text.len() > MAX_TOKEN_BYTES {
            return Err(format!(
                "token {i} is {} bytes long (must be 1 to {MAX_TOKEN_BYTES})",
                text.len()
            ));
        }
        if !seen.insert(text) {
            return Err(format!(
                "token {i} {} appears twice in the vocabulary",
                shown()
            ));
        }
        let ty = types.as_ref().map_or(TYPE_NORMAL, |t| t[i]);
        if ty == TYPE_BYTE && !is_byte_token(text) {
            return Err(format!(
                "byte token {i} {} is not of the form <0xXX>",
                shown()
            ));
        }
        if is_byte_token(text) {
            byte_tokens += 1;
        }
        if byte_level && ty == TYPE_NORMAL {
            let ok = std::str::from_utf8(text).is_ok_and(|s| s.chars().all(is_byte_level));
            if !ok {
                return Err(format!(
                    "token {i} {} is not byte-level text, as a gpt2 vocabulary must be",
                    shown()
                ));
            }
        }
    }
    if count != n {
        return Err("tokenizer.ggml.tokens is cut short".into());
    }
    // A SentencePiece vocabulary falls back to <0xXX> tokens for text it cannot spell, and
    // llama.cpp fails without catching when one is missing.
    if !byte_level && byte_tokens < 256 {
        let missing = (0..=255u8)
            .find(|b| !seen.contains(format!("<0x{b:02X}>").as_bytes()))
            .unwrap_or(0);
        return Err(format!(
            "the vocabulary lacks the byte token <0x{missing:02X}>"
        ));
    }
    for (key, meta) in header
        .meta
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.ggml.") && k.ends_with("_token_id"))
    {
        match meta.value {
            MetaValue::Uint(id) if meta.value_type == value_type::U32 && id < n => {}
            ref v => {
                return Err(format!(
                    "{key} = {v:?} is not a token id of the {n}-token vocabulary"
                ))
            }
        }
    }
    for key in [
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.add_space_prefix",
    ] {
        if let Some(m) = header.meta.get(key) {
            if m.value_type != value_type::BOOL {
                return Err(format!("{key} must be a bool"));
            }
        }
    }
    Ok(())
}
