//! The library's documented example (`crates/hypura-core/examples/generate.rs`, which the
//! crate docs include as their opening example) runs, and generates what `hypura run` does
//! with the same settings.

mod common;
use common::*;

#[test]
fn the_crate_docs_example_runs_and_matches_the_cli() {
    // `cargo test` builds the examples of every package next to the test binaries.
    let deps = std::env::current_exe().unwrap();
    let example = deps
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/generate");
    assert!(
        example.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds examples)",
        example.display()
    );
    let model = model(GEMMA3);
    let out = std::process::Command::new(&example)
        .arg(&model)
        .arg("25%")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the example failed:\n{stderr}");
    assert!(stderr.contains("bytes read per token"), "{stderr}");
    let text = String::from_utf8(out.stdout).expect("whole UTF-8 text pieces");
    let cli = hypura(&[
        "run",
        "--model",
        model.to_str().unwrap(),
        "--weights-budget",
        "25%",
        "--ctx",
        "512",
        "--prompt",
        "The three primary colours are",
        "--max-tokens",
        "24",
        "--temp",
        "0",
        "--disk-gbps",
        "1.6",
    ]);
    assert_eq!(cli.code, 0, "{}", cli.stderr);
    assert!(text.trim().len() > 10, "{text:?}");
    assert_eq!(text, cli.stdout);
}
