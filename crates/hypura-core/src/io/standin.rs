//! The header-only stand-in for the model file that llama.cpp's loader is given.
//!
//! llama.cpp's loader reads every tensor it loads (with mmap it even maps the whole file with
//! `MAP_POPULATE`). hypura reads weights itself, so it gives the loader a copy of the model's
//! header followed by a hole as large as the tensor data: a sparse file whose data reads as
//! zeros without touching the disk or allocating memory. The copy is an anonymous in-memory
//! file (`memfd` on Linux; an unlinked temporary file elsewhere) that llama.cpp opens through
//! `/proc/self/fd/N` (`/dev/fd/N`): it has no name in any directory, so it vanishes with its
//! last descriptor, even if the process is killed during the load.

use std::fs::File;
use std::io::Write;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

/// A stand-in file; closed (and gone) on drop.
#[derive(Debug)]
pub(crate) struct StandIn {
    /// Held open: the stand-in exists as long as this descriptor does.
    _file: File,
    path: PathBuf,
}

impl StandIn {
    /// A stand-in of `file_size` bytes whose first bytes are `header`.
    pub fn create(header: &[u8], file_size: u64) -> std::io::Result<Self> {
        let mut file = anonymous_file()?;
        file.write_all(header)?;
        file.set_len(file_size)?;
        let path = fd_path(&file);
        Ok(Self { _file: file, path })
    }

    /// The path llama.cpp opens.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(target_os = "linux")]
const FD_DIR: &str = "/proc/self/fd";
#[cfg(not(target_os = "linux"))]
const FD_DIR: &str = "/dev/fd";

/// A path that opens the very file `file` has open (`/proc/self/fd/N`; `/dev/fd/N` outside
/// Linux), whatever happened to its name since.
pub(crate) fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("{FD_DIR}/{}", file.as_raw_fd()))
}

/// A new read-write file with no name.
#[cfg(target_os = "linux")]
fn anonymous_file() -> std::io::Result<File> {
    // SAFETY: a plain syscall with a static NUL-terminated name.
    let fd = unsafe { libc::memfd_create(c"hypura-stand-in".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A new read-write file with no name: created in the temporary directory, unlinked at once.
#[cfg(not(target_os = "linux"))]
fn anonymous_file() -> std::io::Result<File> {
    let mut template = std::env::temp_dir()
        .join("hypura-stand-in-XXXXXX")
        .into_os_string()
        .into_encoded_bytes();
    template.push(0);
    // SAFETY: a NUL-terminated, writable template.
    let fd = unsafe { libc::mkstemp(template.as_mut_ptr().cast()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the template now holds the file's NUL-terminated name.
    unsafe { libc::unlink(template.as_ptr().cast()) };
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn reads_as_the_header_then_zeros() {
        let s = StandIn::create(b"GGUFheader", 1 << 20).unwrap();
        let mut bytes = Vec::new();
        File::open(s.path())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(&bytes[..10], b"GGUFheader");
        assert!(bytes[10..].iter().all(|&b| b == 0));
    }
}
