//! The C and Python examples build against libhypura, generate the same greedy text as
//! `hypura run --temp 0` (the engine example: the same sampled continuations as
//! `hypura run -P N`), and the first C one runs clean under valgrind (each run under valgrind
//! takes a minute and a half on two cores: one is enough for the suite).
//!
//! They need the release build of the whole workspace (`scripts/test.sh` does it first):
//! `target/release/libhypura.{so,a}` and `target/release/hypura`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PROMPT: &str = "The capital of France is";
const BUDGET_PERCENT: &str = "25";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("release");
    for artefact in ["libhypura.so", "libhypura.a", "hypura"] {
        assert!(
            dir.join(artefact).is_file(),
            "{} is missing: build first with `cargo build --release --workspace` (scripts/test.sh does)",
            dir.join(artefact).display()
        );
    }
    dir
}

fn model() -> PathBuf {
    let dir = std::env::var_os("HYPURA_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("models"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/test.sh",
        path.display()
    );
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hypura-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `hypura run` with the settings the examples use.
fn cli_text(tokens: &str) -> String {
    run(Command::new(release_dir().join("hypura")).args([
        "run",
        "--model",
        model().to_str().unwrap(),
        "--weights-budget",
        &format!("{BUDGET_PERCENT}%"),
        "--prompt",
        PROMPT,
        "--max-tokens",
        tokens,
        "--temp",
        "0",
        "--threads",
        "2",
        "--disk-gbps",
        "1",
    ]))
}

/// A library directory standing in for an install (scripts/install-c.sh): the release build
/// has only `libhypura.so`, but a program linked against it asks for the library's SONAME,
/// `libhypura.so.<major>` (crates/hypura-ffi/build.rs). Both names here link to the build
/// (unstripped, so valgrind reports have symbols).
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("lib");
        std::fs::create_dir_all(&dir).unwrap();
        let shared = release_dir().join("libhypura.so");
        let soname = format!("libhypura.so.{}", env!("CARGO_PKG_VERSION_MAJOR"));
        for name in ["libhypura.so", soname.as_str()] {
            let _ = std::fs::remove_file(dir.join(name));
            std::os::unix::fs::symlink(&shared, dir.join(name)).unwrap();
        }
        dir
    })
}

/// Compiles examples/c/generate.c with the flags pkg-config gives for libhypura.
fn build_c_example(static_link: bool) -> PathBuf {
    build_c("generate", static_link)
}

/// Compiles examples/c/`name`.c with the flags pkg-config gives for libhypura.
fn build_c(name: &str, static_link: bool) -> PathBuf {
    let release = release_dir();
    let pc_dir = scratch("pkgconfig");
    std::fs::create_dir_all(&pc_dir).unwrap();
    let template = std::fs::read_to_string(root().join("packaging/hypura.pc.in")).unwrap();
    let pc = template
        .replace("@PREFIX@", root().to_str().unwrap())
        .replace("@LIBDIR@", lib_dir().to_str().unwrap())
        .replace("@INCLUDEDIR@", root().join("include").to_str().unwrap())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(pc_dir.join("hypura.pc"), pc).unwrap();
    let mut pkg = Command::new("pkg-config");
    pkg.env("PKG_CONFIG_PATH", &pc_dir)
        .args(["--cflags", "--libs"]);
    if static_link {
        pkg.arg("--static");
    }
    let flags = run(pkg.arg("hypura"));
    let exe = scratch(&if static_link {
        format!("{name}-static")
    } else {
        name.to_string()
    });
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1"])
        .arg(root().join(format!("examples/c/{name}.c")))
        .arg("-o")
        .arg(&exe);
    for flag in flags.split_whitespace() {
        if static_link && flag == "-lhypura" {
            cc.arg(release.join("libhypura.a")); // prefer the archive over the shared library
        } else {
            cc.arg(flag);
        }
    }
    if !static_link {
        cc.arg(format!("-Wl,-rpath,{}", lib_dir().display()));
    }
    run(&mut cc);
    exe
}

fn example_args(tokens: &str) -> Vec<String> {
    vec![
        model().to_string_lossy().into_owned(),
        BUDGET_PERCENT.into(),
        PROMPT.into(),
        tokens.into(),
        "2".into(),
    ]
}

#[test]
fn c_example_matches_the_cli() {
    let exe = build_c_example(false);
    let text = run(Command::new(&exe).args(example_args("24")));
    assert!(text.trim().len() > 10, "{text:?}");
    assert_eq!(text, cli_text("24"));
}

#[test]
fn c_example_links_statically() {
    let exe = build_c_example(true);
    assert_eq!(
        run(Command::new(&exe).args(example_args("4"))),
        cli_text("4")
    );
}

#[test]
fn python_example_matches_the_cli() {
    let text = run(Command::new("python3")
        .arg(root().join("examples/python/generate.py"))
        .args(example_args("24"))
        .env("HYPURA_LIB", release_dir().join("libhypura.so")));
    assert_eq!(text, cli_text("24"));
}

#[test]
fn c_example_is_clean_under_valgrind() {
    let exe = build_c_example(false);
    assert_eq!(valgrind(&exe, &example_args("3")), cli_text("3"));
}

/// Runs `exe` with `args` under valgrind; fails on any error or definite or indirect leak;
/// returns its stdout.
fn valgrind(exe: &Path, args: &[String]) -> String {
    let log = scratch("valgrind.log");
    let out = Command::new("valgrind")
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            &format!("--log-file={}", log.display()),
        ])
        .arg(exe)
        .args(args)
        .output()
        .expect("valgrind is needed (scripts/test.sh installs it)");
    let report = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "valgrind found errors in {} ({}):\n{report}",
        exe.display(),
        out.status
    );
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "{report}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const MANY_PROMPT: &str = "Once upon a time";

/// The engine example's arguments: `n` requests of `tokens` tokens, seeds 42.., temperature
/// 0.9, `percent` of the weights in RAM.
fn many_args(tokens: &str, n: &str, percent: &str) -> Vec<String> {
    [
        model().to_str().unwrap(),
        percent,
        MANY_PROMPT,
        tokens,
        n,
        "42",
        "0.9",
        "2",
    ]
    .map(String::from)
    .to_vec()
}

/// `hypura run -P n` with the engine example's settings.
fn cli_continuations(tokens: &str, n: &str, percent: &str) -> String {
    run(Command::new(release_dir().join("hypura")).args([
        "run",
        "--model",
        model().to_str().unwrap(),
        "--weights-budget",
        &format!("{percent}%"),
        "--prompt",
        MANY_PROMPT,
        "--max-tokens",
        tokens,
        "-P",
        n,
        "--seed",
        "42",
        "--temp",
        "0.9",
        "-c",
        "256",
        "--threads",
        "2",
        "--disk-gbps",
        "1",
    ]))
}

#[test]
fn c_engine_example_matches_run_parallel() {
    let exe = build_c("many", false);
    let text = run(Command::new(&exe).args(many_args("16", "3", "50")));
    assert_eq!(text.lines().count(), 3, "{text}");
    assert_eq!(text, cli_continuations("16", "3", "50"));
}
