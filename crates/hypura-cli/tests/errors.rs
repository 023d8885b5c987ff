//! Bad input gets a one-line error and a non-zero exit, never a panic or a hang.

mod common;
use common::*;

fn expect_error(args: &[&str], needle: &str) {
    let out = hypura(args);
    assert_ne!(out.code, 0, "{args:?} succeeded");
    assert!(
        !out.stderr.contains("panicked"),
        "{args:?} panicked:\n{}",
        out.stderr
    );
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("hypura: error:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "{args:?}: expected one error line, got:\n{}",
        out.stderr
    );
    assert!(
        errors[0].contains(needle),
        "{args:?}: '{}' does not mention '{needle}'",
        errors[0]
    );
}

fn run_args(path: &str) -> Vec<String> {
    [
        "run",
        "--model",
        path,
        "--prompt",
        "hi",
        "--max-tokens",
        "2",
        "--disk-gbps",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn both(path: &str, needle: &str) {
    let run = run_args(path);
    expect_error(&run.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    expect_error(&["plan", "--model", path, "--disk-gbps", "1"], needle);
}

#[test]
fn missing_file() {
    both("/nonexistent/model.gguf", "not found");
}

#[test]
fn not_a_gguf() {
    let path = tempfile("not-a-gguf.bin");
    std::fs::write(&path, vec![0x42u8; 4096]).unwrap();
    both(path.to_str().unwrap(), "not a valid GGUF");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn truncated_file() {
    let source = std::fs::read(model(SMOLLM2)).unwrap();
    let path = tempfile("truncated.gguf");
    std::fs::write(&path, &source[..source.len() / 2]).unwrap();
    both(path.to_str().unwrap(), "truncated");
    // cut inside the header too
    std::fs::write(&path, &source[..100_000]).unwrap();
    both(path.to_str().unwrap(), "not a valid GGUF");
    std::fs::remove_file(path).unwrap();
}

/// A minimal valid GGUF of an architecture hypura does not support.
fn write_gguf(path: &std::path::Path, arch: &str) {
    let mut b = Vec::new();
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u64).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // keys
    string(&mut b, "general.architecture");
    b.extend_from_slice(&8u32.to_le_bytes());
    string(&mut b, arch);
    string(&mut b, "token_embd.weight");
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&8u64.to_le_bytes());
    b.extend_from_slice(&4u64.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // f32
    b.extend_from_slice(&0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend_from_slice(&[0u8; 8 * 4 * 4]);
    std::fs::write(path, b).unwrap();
}

/// An architecture without a spec is checked as llama.cpp checks every architecture (it
/// would run as stock llama.cpp runs it): this one lacks the keys every model has.
#[test]
fn architecture_without_a_spec_is_checked_as_llama_cpp_checks_it() {
    let path = tempfile("mamba.gguf");
    write_gguf(&path, "mamba");
    both(path.to_str().unwrap(), "mamba.block_count is missing");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn budget_below_one_layer_names_the_minimum() {
    let m = model(GEMMA3);
    let path = m.to_str().unwrap();
    let mut run = run_args(path);
    run.extend(["--weights-budget".to_string(), "1M".to_string()]);
    expect_error(
        &run.iter().map(String::as_str).collect::<Vec<_>>(),
        "at least",
    );
    expect_error(
        &[
            "plan",
            "--model",
            path,
            "--weights-budget",
            "1M",
            "--disk-gbps",
            "1",
        ],
        "at least",
    );
}

#[test]
fn unreadable_file() {
    // A directory stands in for an unreadable file (tests may run as root, which reads anything).
    let dir = tempfile("a-directory.gguf");
    std::fs::create_dir_all(&dir).unwrap();
    both(dir.to_str().unwrap(), "cannot read");
    std::fs::remove_dir(dir).unwrap();
}

#[test]
fn invalid_arguments() {
    let m = model(SMOLLM2);
    let path = m.to_str().unwrap();
    expect_error(
        &[
            "plan",
            "--model",
            path,
            "--weights-budget",
            "lots",
            "--disk-gbps",
            "1",
        ],
        "invalid size",
    );
    let mut run = run_args(path);
    run.push("--temp=-1".to_string());
    expect_error(
        &run.iter().map(String::as_str).collect::<Vec<_>>(),
        "--temp",
    );
    // Stock's tensor overrides: PATTERN=TYPE, a buffer type the build has, stock only.
    for (flags, needle) in [
        (
            &["--baseline", "--override-tensor", "blk"][..],
            "PATTERN=TYPE",
        ),
        (&["--baseline", "--ot", "=CPU"][..], "PATTERN=TYPE"),
        (
            &["--baseline", "--ot", "blk\\.0\\.=NOSUCH"][..],
            "no buffer type \"NOSUCH\"",
        ),
        (
            &["--baseline", "--ot", "blk(=CPU"][..],
            "could not load the model",
        ),
        (&["--ot", "blk=CPU"][..], "--baseline"),
    ] {
        let mut run = run_args(path);
        run.extend(flags.iter().map(|f| f.to_string()));
        expect_error(&run.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    }
}

#[test]
fn read_rate_needs_a_readable_non_empty_file() {
    expect_error(
        &["read-rate", "--file", "/nonexistent/model.gguf"],
        "not found",
    );
    let empty = tempfile("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    expect_error(
        &["read-rate", "--file", empty.to_str().unwrap()],
        "is empty",
    );
    std::fs::remove_file(&empty).unwrap();
    // A real file: one line comparing the two readers over the bytes asked for.
    let m = model(SMOLLM2);
    let out = hypura(&[
        "read-rate",
        "--file",
        m.to_str().unwrap(),
        "--limit",
        "16M",
        "--threads",
        "2",
        "--fresh-pages",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("read 16.00 MiB of ") && out.stdout.contains(" ratio "),
        "{}",
        out.stdout
    );
}
