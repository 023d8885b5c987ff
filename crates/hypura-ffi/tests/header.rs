//! `include/hypura.h` is what cbindgen generates from this crate, with version macros that
//! match Cargo.toml. `HYPURA_BLESS=1` rewrites it.

use std::path::PathBuf;

fn generate() -> String {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define HYPURA_VERSION_MAJOR {}\n#define HYPURA_VERSION_MINOR {}\n#define HYPURA_VERSION_PATCH {}\n#define HYPURA_VERSION \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    ));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_crate(&crate_dir)
        .generate()
        .expect("cbindgen")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/hypura.h");
    let generated = generate();
    if std::env::var_os("HYPURA_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/hypura.h is stale: regenerate with HYPURA_BLESS=1 cargo test -p hypura-ffi --test header"
    );
}

#[test]
fn header_version_matches_cargo() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include/hypura.h");
    let header = std::fs::read_to_string(path).unwrap();
    for (name, value) in [
        ("HYPURA_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("HYPURA_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("HYPURA_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        assert!(
            header.contains(&format!("#define {name} {value}\n")),
            "{name} is not {value} in include/hypura.h"
        );
    }
}
