//! With the `dynamic-backends` feature the `hypura` binary needs llama.cpp's shared libraries
//! (libllama, libggml, libggml-base): it looks for them in its own folder first (rpath
//! `$ORIGIN`, or `@executable_path` on macOS, untested there), where `scripts/bundle.sh` puts
//! them beside ggml's backend modules. The default build links llama.cpp statically and gets
//! no rpath.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_DYNAMIC_BACKENDS").is_none() {
        return;
    }
    // The target, not the host this script runs on (they differ when cross-compiling).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    match os.as_str() {
        "macos" | "ios" => println!("cargo:rustc-link-arg-bins=-Wl,-rpath,@executable_path"),
        "windows" => {}
        _ if family == "unix" => println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN"),
        _ => {}
    }
}
