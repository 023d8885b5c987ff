//! One test per class of input llama.cpp would abort on, hang over or refuse: each is a small
//! valid model with one thing wrong, written with the project's GGUF writer, and `hypura plan`
//! (the same checks a load runs) must refuse it with one line that names the file and the
//! cause. The valid model itself is accepted by hypura and runs in stock llama.cpp and tiered,
//! so the checks do not refuse what llama.cpp runs.

mod common;
use common::*;

use hypura_tools::gguf::{GgufWriter, TensorEntry, Value};

const E: u64 = 64;
const FF: u64 = 128;
const LAYERS: u32 = 2;

/// What a case changes in the valid model.
#[derive(Default)]
struct Tweak {
    meta: Vec<(&'static str, Option<Value>)>,
    tokens: Option<Vec<String>>,
    token_types: Option<Vec<i32>>,
    tensor_type: Vec<(&'static str, u32)>,
    tensor_dims: Vec<(&'static str, Vec<u64>)>,
    extra_tensor: Option<&'static str>,
    drop_tensor: Option<&'static str>,
    /// Another architecture name (its keys renamed to match).
    arch: Option<&'static str>,
}

fn vocabulary() -> (Vec<String>, Vec<i32>) {
    let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for i in 0..61 {
        tokens.push(format!("\u{2581}w{i}"));
        types.push(1);
    }
    (tokens, types)
}

/// A 2-layer llama of width 64 (4 heads, 2 key/value heads), F32, with a SentencePiece
/// vocabulary of 320 tokens; `tweak` changes it.
fn write_model(name: &str, tweak: Tweak) -> std::path::PathBuf {
    let (mut tokens, mut types) = vocabulary();
    if let Some(t) = tweak.tokens {
        tokens = t;
    }
    if let Some(t) = tweak.token_types {
        types = t;
    }
    let n_vocab = tokens.len() as u64;
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str("llama".into())),
        ("llama.context_length".into(), Value::U32(256)),
        ("llama.embedding_length".into(), Value::U32(E as u32)),
        ("llama.block_count".into(), Value::U32(LAYERS)),
        ("llama.feed_forward_length".into(), Value::U32(FF as u32)),
        ("llama.attention.head_count".into(), Value::U32(4)),
        ("llama.attention.head_count_kv".into(), Value::U32(2)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        ("tokenizer.ggml.model".into(), Value::Str("llama".into())),
        ("tokenizer.ggml.tokens".into(), Value::StrArray(tokens)),
        (
            "tokenizer.ggml.scores".into(),
            Value::F32Array(vec![0.0; n_vocab as usize]),
        ),
        ("tokenizer.ggml.token_type".into(), Value::I32Array(types)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ];
    if let Some(arch) = tweak.arch {
        for (k, v) in meta.iter_mut() {
            if let Some(rest) = k.strip_prefix("llama.") {
                *k = format!("{arch}.{rest}");
            }
            if k == "general.architecture" {
                *v = Value::Str(arch.into());
            }
        }
    }
    for (key, value) in tweak.meta {
        meta.retain(|(k, _)| k != key);
        if let Some(v) = value {
            meta.push((key.to_string(), v));
        }
    }
    let mut tensors: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![E, n_vocab])];
    for l in 0..LAYERS {
        for (kind, dims) in [
            ("attn_norm", vec![E]),
            ("attn_q", vec![E, E]),
            ("attn_k", vec![E, E / 2]),
            ("attn_v", vec![E, E / 2]),
            ("attn_output", vec![E, E]),
            ("ffn_norm", vec![E]),
            ("ffn_gate", vec![E, FF]),
            ("ffn_up", vec![E, FF]),
            ("ffn_down", vec![FF, E]),
        ] {
            tensors.push((format!("blk.{l}.{kind}.weight"), dims));
        }
    }
    tensors.push(("output_norm.weight".into(), vec![E]));
    if let Some(extra) = tweak.extra_tensor {
        tensors.push((extra.to_string(), vec![E]));
    }
    if let Some(gone) = tweak.drop_tensor {
        tensors.retain(|(n, _)| n != gone);
    }
    let mut w = GgufWriter::new();
    for (k, v) in meta {
        w.meta(k, v);
    }
    for (name, mut dims) in tensors {
        if let Some((_, d)) = tweak.tensor_dims.iter().find(|(n, _)| *n == name) {
            dims = d.clone();
        }
        let ggml_type = tweak
            .tensor_type
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, t)| *t);
        let (block, bytes) = match ggml_type {
            1 => (1, 2),   // f16
            9 => (32, 36), // q8_1
            26 => (1, 4),  // i32
            _ => (1, 4),   // f32
        };
        let elements: u64 = dims.iter().product();
        w.tensor(TensorEntry {
            name,
            nbytes: elements / block * bytes,
            dims,
            ggml_type,
        });
    }
    let path = tempfile(&format!("validation-{name}.gguf"));
    // Small values, different per tensor: the model runs (its text is meaningless).
    w.write_file(&path, |i, data| {
        let n = w.tensors()[i].nbytes as usize;
        data.extend(
            (0..n / 4).flat_map(|k| (((k * 7 + i) % 13) as f32 * 0.01 - 0.06).to_le_bytes()),
        );
    })
    .unwrap();
    path
}

fn expect_refused(name: &str, tweak: Tweak, needle: &str) {
    let path = write_model(name, tweak);
    let out = hypura(&[
        "plan",
        "--model",
        path.to_str().unwrap(),
        "--disk-gbps",
        "1",
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        out.code, 1,
        "{name}: accepted:\n{}{}",
        out.stdout, out.stderr
    );
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("hypura: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{name}: {}", out.stderr);
    let line = errors[0];
    assert!(
        line.contains(path.file_name().unwrap().to_str().unwrap()),
        "{name}: {line}"
    );
    assert!(
        line.contains(needle),
        "{name}: '{line}' does not say '{needle}'"
    );
    assert!(
        line.len() < 300 && !line.chars().any(char::is_control),
        "{name}: {line:?}"
    );
}

fn meta(key: &'static str, value: Option<Value>) -> Tweak {
    Tweak {
        meta: vec![(key, value)],
        ..Tweak::default()
    }
}

#[test]
fn the_valid_model_plans_and_runs_in_stock_llama_cpp_and_tiered() {
    let path = write_model("valid", Tweak::default());
    let p = path.to_str().unwrap();
    let plan = hypura(&["plan", "--model", p, "--disk-gbps", "1"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    for mode in [&["--baseline"][..], &["--weights-budget", "80%"]] {
        let mut args = vec![
            "run",
            "--model",
            p,
            "--prompt",
            "hi",
            "--max-tokens",
            "3",
            "--ctx",
            "64",
        ];
        args.extend(["--disk-gbps", "1", "--threads", "2"]);
        args.extend_from_slice(mode);
        let out = hypura(&args);
        assert_eq!(out.code, 0, "{mode:?}: {}", out.stderr);
    }
    let _ = std::fs::remove_file(path);
}

/// A model of an architecture hypura has no spec for (EXAONE's tensors are Llama's), that
/// stock llama.cpp loads, runs as stock llama.cpp runs it, with a one-line notice saying so.
#[test]
fn an_architecture_without_a_spec_runs_as_stock_with_a_notice() {
    let path = write_model(
        "exaone",
        Tweak {
            arch: Some("exaone"),
            ..Tweak::default()
        },
    );
    let p = path.to_str().unwrap();
    let plan = hypura(&[
        "plan",
        "--model",
        p,
        "--disk-gbps",
        "1",
        "--weights-budget",
        "50%",
    ]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains("stock llama.cpp"),
        "the plan says how it runs:\n{}",
        plan.stdout
    );
    let mut texts = Vec::new();
    for mode in [&["--baseline"][..], &["--weights-budget", "50%"]] {
        let mut args = vec!["run", "--model", p, "--prompt", "hi", "--max-tokens", "4"];
        args.extend([
            "--temp",
            "0",
            "--ctx",
            "64",
            "--disk-gbps",
            "1",
            "--threads",
            "2",
        ]);
        args.extend_from_slice(mode);
        let out = hypura(&args);
        assert_eq!(out.code, 0, "{mode:?}: {}", out.stderr);
        let notes: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("hypura: note:"))
            .collect();
        assert_eq!(notes.len(), 1, "one notice: {}", out.stderr);
        assert!(
            notes[0].contains("no spec for architecture 'exaone'")
                && notes[0].contains("stock llama.cpp"),
            "{}",
            notes[0]
        );
        texts.push(out.stdout);
    }
    assert_eq!(texts[0], texts[1], "the same text in both modes");
    let _ = std::fs::remove_file(path);
}

#[test]
fn layer_and_head_counts() {
    expect_refused(
        "layers-0",
        meta("llama.block_count", Some(Value::U32(0))),
        "block_count = 0",
    );
    expect_refused(
        "layers-513",
        meta("llama.block_count", Some(Value::U32(513))),
        "1 to 512",
    );
    expect_refused(
        "heads-0",
        meta("llama.attention.head_count", Some(Value::U32(0))),
        "head_count = 0",
    );
    expect_refused(
        "heads-missing",
        meta("llama.attention.head_count", None),
        "head_count is missing",
    );
    expect_refused(
        "kv-heads",
        meta("llama.attention.head_count_kv", Some(Value::U32(3))),
        "not a multiple of 3 key/value heads",
    );
    expect_refused(
        "head-sizes",
        Tweak {
            meta: vec![
                ("llama.attention.key_length", Some(Value::U32(16))),
                ("llama.attention.value_length", Some(Value::U32(8))),
            ],
            ..Tweak::default()
        },
        "differs from value head size",
    );
    expect_refused(
        "experts",
        meta("llama.expert_count", Some(Value::U32(2000))),
        "expert_count",
    );
    // Valid for llama.cpp, beyond what hypura tiers: stock mode, with a notice.
    let path = write_model(
        "per-layer-heads",
        meta(
            "llama.attention.head_count_kv",
            Some(Value::I32Array(vec![2, 4])),
        ),
    );
    let out = hypura(&[
        "plan",
        "--model",
        path.to_str().unwrap(),
        "--disk-gbps",
        "1",
    ]);
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .lines()
            .any(|l| l.starts_with("hypura: note:") && l.contains("differs between layers")),
        "{}",
        out.stderr
    );
}

#[test]
fn numbers_llama_cpp_asserts_on() {
    for (name, eps) in [
        ("eps-nan", f32::NAN),
        ("eps-negative", -1e-5),
        ("eps-inf", f32::INFINITY),
    ] {
        expect_refused(
            name,
            meta(
                "llama.attention.layer_norm_rms_epsilon",
                Some(Value::F32(eps)),
            ),
            "layer_norm_rms_epsilon",
        );
    }
    expect_refused(
        "rope-scaling",
        meta("llama.rope.scaling.type", Some(Value::Str("cubic".into()))),
        "rope scaling",
    );
    expect_refused(
        "rope-base",
        meta("llama.rope.freq_base", Some(Value::F32(f32::NAN))),
        "freq_base",
    );
    expect_refused(
        "non-causal",
        meta("llama.attention.causal", Some(Value::Bool(false))),
        "causal",
    );
    expect_refused(
        "wrong-key-type",
        meta("llama.context_length", Some(Value::I32(256))),
        "llama.context_length",
    );
}

#[test]
fn vocabularies() {
    let (mut tokens, types) = vocabulary();
    tokens[300] = tokens[301].clone();
    expect_refused(
        "duplicate-token",
        Tweak {
            tokens: Some(tokens),
            ..Tweak::default()
        },
        "appears twice",
    );
    // llama.cpp reads tokens as C strings: one that differs only after a NUL is a duplicate.
    let (mut tokens, _) = vocabulary();
    tokens[300] = format!("{}\0x", tokens[301]);
    expect_refused(
        "duplicate-token-after-nul",
        Tweak {
            tokens: Some(tokens),
            ..Tweak::default()
        },
        "appears twice",
    );
    let (mut tokens, _) = vocabulary();
    tokens[300] = String::new();
    expect_refused(
        "empty-token",
        Tweak {
            tokens: Some(tokens),
            ..Tweak::default()
        },
        "bytes long",
    );
    let (mut tokens, _) = vocabulary();
    tokens[10] = "<0x1>".into();
    expect_refused(
        "bad-byte-token",
        Tweak {
            tokens: Some(tokens),
            ..Tweak::default()
        },
        "not of the form <0xXX>",
    );
    let (mut tokens, mut types2) = vocabulary();
    tokens[13] = "\u{2581}byte".into();
    types2[13] = 1;
    expect_refused(
        "missing-byte-token",
        Tweak {
            tokens: Some(tokens),
            token_types: Some(types2),
            ..Tweak::default()
        },
        "lacks the byte token <0x0A>",
    );
    let _ = types;
    expect_refused(
        "bos-out-of-range",
        meta("tokenizer.ggml.bos_token_id", Some(Value::U32(100_000))),
        "is not a token id",
    );
    // A byte-level (gpt2) vocabulary whose token holds a character outside the byte alphabet.
    let (mut tokens, _) = vocabulary();
    tokens[300] = "a b".into();
    expect_refused(
        "gpt2-not-byte-level",
        Tweak {
            meta: vec![
                ("tokenizer.ggml.model", Some(Value::Str("gpt2".into()))),
                (
                    "tokenizer.ggml.merges",
                    Some(Value::StrArray(vec!["a b".into()])),
                ),
            ],
            tokens: Some(tokens),
            ..Tweak::default()
        },
        "not byte-level",
    );
    expect_refused(
        "gpt2-unknown-pre-tokenizer",
        Tweak {
            meta: vec![
                ("tokenizer.ggml.model", Some(Value::Str("gpt2".into()))),
                (
                    "tokenizer.ggml.merges",
                    Some(Value::StrArray(vec!["a b".into()])),
                ),
                ("tokenizer.ggml.pre", Some(Value::Str("smolxm".into()))),
            ],
            ..Tweak::default()
        },
        "is not a pre-tokenizer llama.cpp knows",
    );
    expect_refused(
        "tokenizer",
        meta("tokenizer.ggml.model", Some(Value::Str("rwkv".into()))),
        "tokenizer 'rwkv' is not supported",
    );
}

#[test]
fn tensor_types_shapes_and_names() {
    let typed = |name: &'static str, t: u32| Tweak {
        tensor_type: vec![(name, t)],
        ..Tweak::default()
    };
    expect_refused("norm-f16", typed("output_norm.weight", 1), "must be f32");
    expect_refused(
        "embedding-i32",
        typed("token_embd.weight", 26),
        "the embedding",
    );
    expect_refused("matrix-q8_1", typed("blk.0.ffn_up.weight", 9), "a matrix");
    expect_refused(
        "shape",
        Tweak {
            tensor_dims: vec![("blk.0.attn_q.weight", vec![E, E / 2])],
            ..Tweak::default()
        },
        "has shape [64, 32], the hyperparameters give [64, 64]",
    );
    expect_refused(
        "vocab-rows",
        Tweak {
            tensor_dims: vec![("token_embd.weight", vec![E, 100])],
            ..Tweak::default()
        },
        "token_embd.weight",
    );
    expect_refused(
        "unexpected",
        Tweak {
            extra_tensor: Some("blk.0.attn_q.scale"),
            ..Tweak::default()
        },
        "is not one a llama model has",
    );
    expect_refused(
        "beyond-the-layers",
        Tweak {
            extra_tensor: Some("blk.5.attn_norm.weight"),
            ..Tweak::default()
        },
        "blk.5.attn_norm.weight",
    );
    expect_refused(
        "missing",
        Tweak {
            drop_tensor: Some("blk.1.ffn_down.weight"),
            ..Tweak::default()
        },
        "'blk.1.ffn_down.weight' is missing",
    );
    expect_refused(
        "control-characters",
        Tweak {
            extra_tensor: Some("blk.0.\u{1b}[31mred\u{7}"),
            ..Tweak::default()
        },
        "\\u{1b}[31mred\\u{7}",
    );
}

#[test]
fn file_level_rules() {
    expect_refused(
        "split",
        meta("split.count", Some(Value::U32(2))),
        "split GGUF files",
    );
    expect_refused(
        "alignment",
        meta("general.alignment", Some(Value::U32(8))),
        "alignment 8",
    );
    expect_refused(
        "architecture",
        meta("general.architecture", Some(Value::Str("mamba".into()))),
        "mamba.block_count is missing",
    );
}
