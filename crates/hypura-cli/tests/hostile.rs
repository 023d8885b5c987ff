//! One test per known class of hostile input. Each asserts, for `plan` and `run` where both
//! apply: a non-zero exit code (not a signal), no Rust panic, no hang, and exactly one
//! `hypura: error:` line of at most 300 bytes, without control characters, naming the file.
//!
//! The mutants are copies of SmolLM2-135M (llama) with one header field overwritten in place
//! (the file keeps its length; every other field keeps its position). The children run with
//! `RUST_BACKTRACE=0` and `GGML_NO_BACKTRACE=1` (short stderr; neither changes how a process
//! ends) and no memory cap.
//!
//! Run: `cargo test --release -p hypura-cli --test hostile`

mod common;
#[path = "fuzz/gguf_walk.rs"]
mod gguf_walk;
#[path = "fuzz/harness.rs"]
mod harness;
#[path = "fuzz/mutate.rs"]
mod mutate;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{model, SMOLLM2};
use gguf_walk::{walk_file, Layout};
use harness::{abort_lines, problems, run_hypura, Outcome, Status};
use mutate::{set_kv, set_u32_at, set_u64_at, KvValue, Mutant};

const PLAN_TIMEOUT: Duration = Duration::from_secs(20);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const ENV: &[(&str, &str)] = &[("RUST_BACKTRACE", "0"), ("GGML_NO_BACKTRACE", "1")];

/// A temporary model file, removed when dropped.
struct TempModel(PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("hhostile-{}-{name}", std::process::id()))
}

/// A full copy of SmolLM2 with the header changed by `edit`; returns the file and what changed.
fn smollm2_mutant(name: &str, edit: impl FnOnce(&Layout, &mut Mutant)) -> (TempModel, String) {
    let source = model(SMOLLM2);
    let (bytes, layout) = walk_file(&source);
    let mut m = Mutant::new(&bytes[..layout.data_start], layout.file_len);
    edit(&layout, &mut m);
    let path = temp_path(&format!("{name}.gguf"));
    m.write_full(&source, &path).expect("write the mutant");
    (TempModel(path), m.describe())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Plan,
    Run,
}

fn args(cmd: Cmd, path: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(OsString::from(s));
    match cmd {
        Cmd::Plan => push("plan"),
        Cmd::Run => push("run"),
    }
    push("--model");
    a.push(path.into());
    let rest: &[&str] = match cmd {
        Cmd::Plan => &["--weights-budget", "50%", "--disk-gbps", "1"],
        Cmd::Run => &[
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
            "--ctx",
            "64",
            "--threads",
            "1",
            "--disk-gbps",
            "1",
            "--weights-budget",
            "50%",
        ],
    };
    a.extend(rest.iter().chain(extra).map(OsString::from));
    a
}

fn describe(out: &Outcome) -> String {
    let mut s = format!(
        "    outcome: {} after {:.2?}\n",
        out.status_text(),
        out.elapsed
    );
    for a in abort_lines(out) {
        s.push_str(&format!("    abort/error: {a}\n"));
    }
    for t in out.stderr_tail(6) {
        s.push_str(&format!("    stderr: {t}\n"));
    }
    if !out.leaked.is_empty() {
        s.push_str(&format!("    left behind: {:?}\n", out.leaked));
    }
    s
}

/// Runs each command on `path`; every one must fail cleanly (non-zero exit, one short clean
/// error line naming the file). Reports every command's problems together.
fn expect_clean_rejection(
    what: &str,
    path: &Path,
    cmds: &[Cmd],
    timeout_override: Option<Duration>,
) {
    let mut report = String::new();
    for &cmd in cmds {
        let timeout = timeout_override.unwrap_or(if cmd == Cmd::Run {
            RUN_TIMEOUT
        } else {
            PLAN_TIMEOUT
        });
        let a = args(cmd, path, &[]);
        let out = run_hypura(&a, timeout, ENV, 0);
        for p in &out.leaked {
            let _ = std::fs::remove_file(p);
        }
        let mut probs = problems(&out, path);
        if out.status == Status::Code(0) {
            probs.push("exit code 0: the hostile input was accepted".to_string());
        }
        if !probs.is_empty() {
            report.push_str(&format!(
                "  {cmd:?}: hypura {}\n",
                a.iter()
                    .map(|s| s.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            for p in &probs {
                report.push_str(&format!("    PROBLEM: {p}\n"));
            }
            report.push_str(&describe(&out));
        }
    }
    assert!(report.is_empty(), "{what}:\n{report}");
}

fn both() -> &'static [Cmd] {
    &[Cmd::Plan, Cmd::Run]
}

fn block_count(value: u64) {
    let (f, desc) = smollm2_mutant(&format!("block-count-{value}"), |l, m| {
        set_kv(l, m, "llama.block_count", KvValue::Int(value))
    });
    expect_clean_rejection(&desc, &f.0, both(), None);
}

#[test]
fn block_count_2_pow_31() {
    block_count(1 << 31);
}

#[test]
fn block_count_u32_max() {
    block_count(u32::MAX as u64);
}

#[test]
fn block_count_1000() {
    block_count(1000);
}

/// Token 1000's text replaced by the next token of the same length (the vocabulary then has
/// one text twice; llama.cpp's vocabulary maps text -> id and asserts both sizes match).
#[test]
fn duplicated_token_text() {
    let (f, desc) = smollm2_mutant("dup-token", |l, m| {
        let tokens = l.kv("tokenizer.ggml.tokens").unwrap().arr.as_ref().unwrap();
        let s = &tokens.strings;
        let i = 1000;
        let len = s[i].1 as usize;
        let text = |k: usize| m.header[s[k].0 + 8..s[k].0 + 8 + len].to_vec();
        let j = (i + 1..s.len())
            .find(|&k| s[k].1 as usize == len && text(k) != text(i))
            .expect("another token of the same length");
        let copy = text(j);
        let pos = s[i].0 + 8;
        let old = String::from_utf8_lossy(&text(i)).into_owned();
        m.header[pos..pos + len].copy_from_slice(&copy);
        m.desc.push(format!(
            "tokenizer.ggml.tokens[{i}] '{old}' -> '{}' (a copy of token {j})",
            String::from_utf8_lossy(&copy)
        ));
    });
    expect_clean_rejection(&desc, &f.0, both(), None);
}

fn rms_epsilon(value: f64) {
    let (f, desc) = smollm2_mutant(&format!("rms-eps-{value}"), |l, m| {
        set_kv(
            l,
            m,
            "llama.attention.layer_norm_rms_epsilon",
            KvValue::Float(value),
        )
    });
    expect_clean_rejection(&desc, &f.0, both(), None);
}

#[test]
fn rms_epsilon_nan() {
    rms_epsilon(f64::NAN);
}

#[test]
fn rms_epsilon_negative() {
    rms_epsilon(-1.0);
}

/// `output_norm.weight` (576 x F32 = 2304 bytes, the last tensor) declared F16 (type 1): only
/// the type field changes, so its offset stays where llama.cpp expects it and its new size
/// (576 x 2 = 1152 bytes) still fits inside the old one. The bytes are F32 data read as F16;
/// an architecture's norm weights are F32, so this header is inconsistent.
#[test]
fn output_norm_stored_as_f16() {
    let (f, desc) = smollm2_mutant("output-norm-f16", |l, m| {
        let t = l.tensor("output_norm.weight").expect("output_norm.weight");
        assert_eq!(t.ggml_type, 0, "output_norm.weight is F32 in SmolLM2");
        set_u32_at(
            m,
            t.type_pos,
            1,
            "output_norm.weight ggml type (F32 -> F16)",
        );
    });
    expect_clean_rejection(&desc, &f.0, both(), None);
}

/// The first tensor's name length set to 2^24 - 1 (just under the reader's 2^24 string limit):
/// the reader takes 16 MiB of the file as the name. The error must stay one short line.
#[test]
fn tensor_name_length_2_pow_24_minus_1() {
    let (f, desc) = smollm2_mutant("name-len-2-24", |l, m| {
        let t = &l.tensors[0];
        set_u64_at(
            m,
            t.name_len_pos,
            (1 << 24) - 1,
            &format!("tensor {} name length", t.name),
        );
    });
    expect_clean_rejection(&desc, &f.0, both(), None);
}

/// A FIFO with no writer as the model: opening it for reading blocks forever unless the
/// file's type is checked first. Must fail quickly with one line.
#[test]
fn fifo_as_model() {
    let path = temp_path("fifo.gguf");
    let _ = std::fs::remove_file(&path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let made = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}", path.display());
    let f = TempModel(path);
    expect_clean_rejection(
        "a FIFO (no writer) as --model",
        &f.0,
        both(),
        Some(Duration::from_secs(10)),
    );
}

#[test]
fn directory_as_model() {
    let path = temp_path("a-directory.gguf");
    std::fs::create_dir_all(&path).unwrap();
    let f = TempModel(path);
    expect_clean_rejection("a directory as --model", &f.0, both(), None);
}

#[test]
fn dev_null_as_model() {
    expect_clean_rejection("/dev/null as --model", Path::new("/dev/null"), both(), None);
}

/// `run` with an absurd thread count: an error (one clean line) or a warning, never a
/// crash, panic or hang.
fn absurd_threads(flag: &str) {
    let m = model(SMOLLM2);
    let mut a = args(Cmd::Run, &m, &[]);
    // The last occurrence of a flag wins in clap only for some settings: replace --threads.
    if let Some(i) = a.iter().position(|s| s == "--threads") {
        a.drain(i..i + 2);
    }
    a.extend([flag, "100000"].iter().map(OsString::from));
    let out = run_hypura(&a, RUN_TIMEOUT, ENV, 0);
    for p in &out.leaked {
        let _ = std::fs::remove_file(p);
    }
    let mut probs: Vec<String> = problems(&out, &m)
        .into_iter()
        .filter(|p| p != "error line does not name the model file")
        .collect();
    let stderr = out.stderr_text();
    match out.status {
        Status::Code(0)
            if !stderr
                .lines()
                .any(|l| l.to_lowercase().contains("warn") && l.contains("threads")) =>
        {
            probs.push(format!("exit 0 without a warning about {flag} 100000"));
        }
        Status::Code(_) => {
            let errors = out.error_lines();
            if !errors
                .iter()
                .any(|e| String::from_utf8_lossy(e).contains("threads"))
            {
                probs.push(format!("the error line does not name {flag}"));
            }
        }
        _ => {}
    }
    assert!(
        probs.is_empty(),
        "run {flag} 100000:\n{}\n{}",
        probs
            .iter()
            .map(|p| format!("    PROBLEM: {p}"))
            .collect::<Vec<_>>()
            .join("\n"),
        describe(&out)
    );
}

#[test]
fn io_threads_100000() {
    absurd_threads("--io-threads");
}

#[test]
fn threads_100000() {
    absurd_threads("--threads");
}

/// The stand-in file (`hypura-<pid>-N.gguf` in /dev/shm or the temp dir) must be gone after a
/// failed tiered `run`, however llama.cpp failed: here it fails inside its loader (block_count
/// 1000 > LLAMA_MAX_LAYERS and a duplicated token text both stop llama.cpp during load).
#[test]
fn failed_run_leaves_no_standin() {
    let (bc, bc_desc) = smollm2_mutant("leak-block-count", |l, m| {
        set_kv(l, m, "llama.block_count", KvValue::Int(1000))
    });
    let (dup, dup_desc) = smollm2_mutant("leak-dup-token", |l, m| {
        let s = &l
            .kv("tokenizer.ggml.tokens")
            .unwrap()
            .arr
            .as_ref()
            .unwrap()
            .strings;
        // Token 3000's text over token 3001's when they are the same length, else the next such.
        let (i, j) = (3000..s.len() - 1)
            .find_map(|i| {
                let a = &m.header[s[i].0 + 8..s[i].0 + 8 + s[i].1 as usize];
                let b = &m.header[s[i + 1].0 + 8..s[i + 1].0 + 8 + s[i + 1].1 as usize];
                (a.len() == b.len() && a != b).then_some((i, i + 1))
            })
            .unwrap();
        let text = m.header[s[i].0 + 8..s[i].0 + 8 + s[i].1 as usize].to_vec();
        let pos = s[j].0 + 8;
        m.header[pos..pos + text.len()].copy_from_slice(&text);
        m.desc
            .push(format!("tokenizer.ggml.tokens[{j}] = text of token {i}"));
    });
    let mut report = String::new();
    for (f, desc) in [(&bc, bc_desc), (&dup, dup_desc)] {
        let out = run_hypura(&args(Cmd::Run, &f.0, &[]), RUN_TIMEOUT, ENV, 0);
        if out.status == Status::Code(0) {
            report.push_str(&format!(
                "  {desc}: run succeeded; it was expected to fail\n"
            ));
        }
        // Anything of this process's: hypura-<pid>-* and hypura-probe-<pid>.
        let mut left = out.leaked.clone();
        for dir in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
            let probe = dir.join(format!("hypura-probe-{}", out.pid));
            if probe.exists() {
                left.push(probe);
            }
        }
        if !left.is_empty() {
            report.push_str(&format!(
                "  {desc}: left behind {left:?}\n{}",
                describe(&out)
            ));
        }
        for p in &left {
            let _ = std::fs::remove_file(p);
        }
    }
    assert!(
        report.is_empty(),
        "a failed run left files behind:\n{report}"
    );
}
