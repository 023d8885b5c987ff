//! The disk probe: read bandwidth for the planner's bound, measured once per device with large
//! direct reads of the model file, then cached in `$XDG_CACHE_HOME/hypura/disk-bandwidth.json`
//! (or `~/.cache/...`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

const SAMPLE_BYTES: usize = 256 << 20;
const REQUEST_BYTES: usize = 4 << 20;

/// hypura's cache folder: `$XDG_CACHE_HOME/hypura` (or `~/.cache/hypura`).
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("hypura"))
}

fn cache_path() -> Option<PathBuf> {
    Some(cache_dir()?.join("disk-bandwidth.json"))
}

/// Reads up to 256 MiB of `path` with `O_DIRECT` (falling back to buffered reads after
/// dropping the file's cache) and returns bytes/s.
pub fn measure_read_bandwidth(path: &Path) -> std::io::Result<f64> {
    let mut file = match open_direct(path) {
        Ok(f) => f,
        Err(_) => {
            let f = File::open(path)?;
            drop_cache(&f);
            f
        }
    };
    // O_DIRECT needs an aligned buffer: over-allocate and align by hand.
    let mut storage = vec![0u8; REQUEST_BYTES + 4096];
    let offset = storage.as_ptr().align_offset(4096);
    let buf = &mut storage[offset..offset + REQUEST_BYTES];
    let started = Instant::now();
    let mut total = 0usize;
    while total < SAMPLE_BYTES {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if total > 0 => {
                log::debug!("disk measurement stopped early: {e}");
                break;
            }
            Err(e) => return Err(e),
        };
        total += n;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    Ok(total as f64 / secs)
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// No `O_DIRECT` outside Linux: the buffered fallback drops the file's cache first.
#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> std::io::Result<File> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The cached bandwidth of the device holding `path`, measuring it the first time.
pub fn read_bandwidth(path: &Path) -> std::io::Result<f64> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_file() {
        // Opening a FIFO would block; a directory or device is no model file.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let device = metadata.dev().to_string();
    let cache = cache_path();
    let mut known: HashMap<String, f64> = cache
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    if let Some(bw) = known.get(&device) {
        return Ok(*bw);
    }
    let measured = measure_read_bandwidth(path)?;
    known.insert(device, measured);
    if let Some(p) = cache {
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&p, serde_json::to_string_pretty(&known).unwrap_or_default());
    }
    Ok(measured)
}

#[cfg(target_os = "linux")]
fn drop_cache(file: &File) {
    // SAFETY: a valid fd for the duration of the call; advice only.
    unsafe {
        libc::posix_fadvise(
            std::os::unix::io::AsRawFd::as_raw_fd(file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn drop_cache(_file: &File) {}
