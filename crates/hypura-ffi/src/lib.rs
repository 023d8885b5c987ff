//! C ABI for hypura. This crate is still minimal: the version only. The full API
//! (`hypura_load`, `hypura_decode`, …) is tracked as its own issue.

/// Major version of libhypura.
#[no_mangle]
pub extern "C" fn hypura_version_major() -> u32 {
    env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0)
}

/// Minor version of libhypura.
#[no_mangle]
pub extern "C" fn hypura_version_minor() -> u32 {
    env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0)
}

/// Patch version of libhypura.
#[no_mangle]
pub extern "C" fn hypura_version_patch() -> u32 {
    env!("CARGO_PKG_VERSION_PATCH").parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_matches_cargo() {
        let v = format!(
            "{}.{}.{}",
            super::hypura_version_major(),
            super::hypura_version_minor(),
            super::hypura_version_patch()
        );
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
    }
}
