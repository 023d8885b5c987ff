//! Gives the shared library the name its users' programs record at link time, so that a
//! program built against `libhypura.so` keeps loading `libhypura.so.<major>` (what
//! scripts/install-c.sh installs) and a later incompatible major version can sit beside it.
//!
//! - Linux and other ELF systems: ELF SONAME `libhypura.so.<major>`.
//! - macOS: install name `@rpath/libhypura.<major>.dylib` (as cargo-c does; untested: nobody
//!   here builds on macOS). Programs find it through their rpath.
//!
//! `<major>` is CARGO_PKG_VERSION_MAJOR: `0` while the version is 0.x, so 0.x releases share
//! one SONAME (bump the major to break the ABI).
//! Only the cdylib gets these flags: the rlib and staticlib (and this crate's tests) do not.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    // The target, not the host this script runs on (they differ when cross-compiling).
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    match os.as_str() {
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libhypura.{major}.dylib")
        }
        "windows" => {}
        _ if family == "unix" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhypura.so.{major}")
        }
        _ => {}
    }
}
