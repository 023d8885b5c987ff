//! `scripts/install-c.sh PREFIX` installs a library that programs can be built against with
//! nothing but PREFIX: a stripped `libhypura.so.X.Y.Z` with SONAME `libhypura.so.X` and the
//! links to it, a static library without debug information, `hypura.h`, `hypura.pc`, and a
//! module map that clang finds for `@import Hypura;` from `-I PREFIX/include` alone.
//!
//! Needs the release build of libhypura (`cargo build --release -p hypura-ffi`; scripts/test.sh
//! builds the workspace first), and readelf (binutils), cc, clang and pkg-config, which
//! scripts/test.sh installs. Linux only: the shared library checks are ELF ones.
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const MAJOR: &str = env!("CARGO_PKG_VERSION_MAJOR");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A directory of this test run's own, under cargo's scratch directory for integration tests
/// (one per target directory; emptied at the start of each run, so runs do not pile up).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hypura-install-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn run(cmd: &mut Command) -> String {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{:?} is not installed ({}): scripts/test.sh installs it (Debian: {})",
            cmd.get_program(),
            e,
            match cmd.get_program().to_str() {
                Some("readelf") => "apt-get install binutils",
                Some("clang") => "apt-get install clang",
                Some("pkg-config") => "apt-get install pkg-config",
                _ => "see scripts/test.sh",
            }
        ),
        Err(e) => panic!("{cmd:?}: {e}"),
    };
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs scripts/install-c.sh once into a fresh prefix; every test reads that install.
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let release = target_dir().join("release");
        for artefact in ["libhypura.so", "libhypura.a"] {
            assert!(
                release.join(artefact).is_file(),
                "{} is missing: build first with `cargo build --release -p hypura-ffi` (scripts/test.sh does)",
                release.join(artefact).display()
            );
        }
        let prefix = scratch().join("prefix");
        let log = run(Command::new("bash")
            .arg(root().join("scripts/install-c.sh"))
            .arg(&prefix)
            .env("CARGO_TARGET_DIR", target_dir()));
        assert!(log.contains(&format!("libhypura.so.{VERSION}")), "{log}");
        prefix
    })
}

fn lib(name: &str) -> PathBuf {
    prefix().join("lib").join(name)
}

fn readelf(args: &[&str], file: &Path) -> String {
    run(Command::new("readelf").args(args).arg(file))
}

/// Section names in `readelf -S -W` output (for an archive: of all its members).
fn sections(file: &Path) -> Vec<String> {
    readelf(&["-S", "-W"], file)
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let rest = line.strip_prefix('[')?;
            let (_, rest) = rest.split_once(']')?;
            Some(rest.split_whitespace().next()?.to_string())
        })
        .filter(|name| name.starts_with('.'))
        .collect()
}

#[test]
fn shared_library_has_the_soname() {
    let dynamic = readelf(&["-d", "-W"], &lib(&format!("libhypura.so.{VERSION}")));
    let soname = dynamic
        .lines()
        .find(|line| line.contains("(SONAME)"))
        .and_then(|line| Some(line.split_once('[')?.1.split_once(']')?.0.to_string()));
    assert_eq!(
        soname.as_deref(),
        Some(format!("libhypura.so.{MAJOR}").as_str()),
        "SONAME of the installed library (crates/hypura-ffi/build.rs sets it; rebuild with \
         `cargo build --release -p hypura-ffi` if the build predates it):\n{dynamic}"
    );
}

#[test]
fn libraries_are_installed_stripped() {
    let shared = lib(&format!("libhypura.so.{VERSION}"));
    let names = sections(&shared);
    assert!(names.iter().any(|s| s == ".dynsym"), "{names:?}");
    for section in &names {
        assert!(
            !section.starts_with(".debug") && section != ".symtab",
            "{} keeps {section}: install-c.sh should strip it",
            shared.display()
        );
    }
    // Stripping keeps the exported API.
    let dynsym = readelf(&["--dyn-syms", "-W"], &shared);
    for symbol in ["hypura_version", "hypura_load", "hypura_decode"] {
        assert!(
            dynsym.lines().any(|l| l.ends_with(&format!(" {symbol}"))),
            "{symbol} is not exported by {}",
            shared.display()
        );
    }

    let archive = lib("libhypura.a");
    let names = sections(&archive);
    assert!(
        names
            .iter()
            .any(|s| s == ".text" || s.starts_with(".text.")),
        "{archive:?} has no code?"
    );
    assert!(
        !names.iter().any(|s| s.starts_with(".debug")),
        "{} keeps debug sections: install-c.sh should strip -g it",
        archive.display()
    );
}

#[test]
fn shared_library_links_chain_to_the_versioned_file() {
    let real = format!("libhypura.so.{VERSION}");
    let soname = format!("libhypura.so.{MAJOR}");
    let meta = std::fs::symlink_metadata(lib(&real)).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{real} should be the file itself"
    );
    assert_eq!(
        std::fs::read_link(lib(&soname)).unwrap(),
        PathBuf::from(&real)
    );
    assert_eq!(
        std::fs::read_link(lib("libhypura.so")).unwrap(),
        PathBuf::from(&soname)
    );
}

#[test]
fn install_fails_clearly_without_a_build() {
    let empty = scratch().join("empty-target");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new("bash")
        .arg(root().join("scripts/install-c.sh"))
        .arg(scratch().join("never"))
        .env("CARGO_TARGET_DIR", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is missing") && stderr.contains("cargo build --release -p hypura-ffi"),
        "{stderr}"
    );
    assert!(!scratch().join("never").exists());
}

/// A C program that checks the header's version macros against the library it runs with.
const C_PROGRAM: &str = r#"#include <hypura.h>
#include <stdio.h>
#include <string.h>

int main(void) {
    if (strcmp(hypura_version(), HYPURA_VERSION) != 0 || hypura_version_major() != HYPURA_VERSION_MAJOR) {
        fprintf(stderr, "header %s, library %s\n", HYPURA_VERSION, hypura_version());
        return 1;
    }
    printf("%s\n", hypura_version());
    return 0;
}
"#;

/// `pkg-config --cflags --libs hypura` (plus `--static`) seeing only PREFIX/lib/pkgconfig.
fn pkg_config(extra: &[&str]) -> Vec<String> {
    run(Command::new("pkg-config")
        .env("PKG_CONFIG_LIBDIR", prefix().join("lib/pkgconfig"))
        .env_remove("PKG_CONFIG_PATH")
        .args(extra)
        .args(["--cflags", "--libs", "hypura"]))
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

fn needed(exe: &Path) -> Vec<String> {
    readelf(&["-d", "-W"], exe)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| Some(line.split_once('[')?.1.split_once(']')?.0.to_string()))
        .collect()
}

/// Runs a program with nothing but its rpath to find libhypura.
fn run_program(exe: &Path) -> String {
    run(Command::new(exe).env_remove("LD_LIBRARY_PATH"))
}

#[test]
fn c_program_builds_with_pkg_config_from_the_prefix() {
    let source = scratch().join("version.c");
    std::fs::write(&source, C_PROGRAM).unwrap();
    let flags = pkg_config(&[]);
    assert!(
        flags.contains(&format!("-I{}", prefix().join("include").display())),
        "{flags:?}"
    );
    let exe = scratch().join("version-c");
    run(Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(&source)
        .args(&flags)
        .arg(format!("-Wl,-rpath,{}", prefix().join("lib").display()))
        .arg("-o")
        .arg(&exe));
    // The program records the SONAME, not the unversioned development link.
    assert!(
        needed(&exe).contains(&format!("libhypura.so.{MAJOR}")),
        "{:?}",
        needed(&exe)
    );
    assert_eq!(run_program(&exe).trim(), VERSION);
}

#[test]
fn c_program_links_the_installed_static_library() {
    let source = scratch().join("version-static.c");
    std::fs::write(&source, C_PROGRAM).unwrap();
    let exe = scratch().join("version-static");
    let mut cc = Command::new("cc");
    cc.args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
        .arg(&source);
    for flag in pkg_config(&["--static"]) {
        if flag == "-lhypura" {
            cc.arg(lib("libhypura.a")); // the archive, not the shared library beside it
        } else {
            cc.arg(flag);
        }
    }
    run(cc.arg("-o").arg(&exe));
    assert!(
        !needed(&exe).iter().any(|n| n.starts_with("libhypura")),
        "{:?}",
        needed(&exe)
    );
    assert_eq!(run_program(&exe).trim(), VERSION);
}

/// Compiles SOURCE with clang modules and nothing from hypura but `-I PREFIX/include`, links it
/// with `-L PREFIX/lib -lhypura`, runs it, and checks that clang built the Hypura module.
fn build_with_module(name: &str, source_text: &str, language: &str) -> String {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("main.src");
    std::fs::write(&source, source_text).unwrap();
    let cache = dir.join("module-cache");
    let exe = dir.join("main");
    run(Command::new("clang")
        .args(["-fmodules", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-fmodules-cache-path={}", cache.display()))
        .arg(format!("-I{}", prefix().join("include").display()))
        .args(["-x", language])
        .arg(&source)
        .args(["-x", "none"])
        .arg(format!("-L{}", prefix().join("lib").display()))
        .arg("-lhypura")
        .arg(format!("-Wl,-rpath,{}", prefix().join("lib").display()))
        .arg("-o")
        .arg(&exe));
    // The declarations came from the module (the source includes no hypura header).
    let built = walk(&cache);
    assert!(
        built.iter().any(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("Hypura-") && name.ends_with(".pcm")
        }),
        "clang built no Hypura module: {built:?}"
    );
    run_program(&exe)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `@import Hypura;` in Objective-C. Nothing here uses Objective-C classes or messages, so it
/// links without an Objective-C runtime (no libobjc, no Foundation).
#[test]
fn objective_c_imports_the_module() {
    let source = "@import Hypura;\n#include <stdio.h>\n\n\
                  int main(void) {\n    printf(\"%s\\n\", hypura_version());\n    return 0;\n}\n";
    assert_eq!(
        build_with_module("objc", source, "objective-c").trim(),
        VERSION
    );
}

/// Plain C reaches the same module with `#pragma clang module import` (C has no `@import`).
#[test]
fn c_imports_the_module_with_the_pragma() {
    let source = "#pragma clang module import Hypura\n#include <stdio.h>\n\n\
                  int main(void) {\n    printf(\"%s\\n\", hypura_version());\n    return 0;\n}\n";
    assert_eq!(build_with_module("c-pragma", source, "c").trim(), VERSION);
}
