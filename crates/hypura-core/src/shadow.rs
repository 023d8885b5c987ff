//! The header-only stand-in file given to llama.cpp's loader.
//!
//! llama.cpp's loader reads every tensor it loads (with mmap it even maps the whole file with
//! `MAP_POPULATE`). hypura reads weights itself, so it gives the loader a copy of the model's
//! header followed by a hole as large as the tensor data: a sparse file whose data reads as
//! zeros without touching the disk. Its buffers skip those zeros; the real bytes come from
//! the real file, through [`crate::io`]. The stand-in lives in `/dev/shm` when available (holes
//! there read without allocating memory), else in the temporary directory, and is removed as
//! soon as the model is loaded.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::gguf::GgufHeader;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A stand-in file, deleted on drop.
#[derive(Debug)]
pub struct ShadowFile {
    path: PathBuf,
}

impl ShadowFile {
    /// Writes the stand-in for `header`'s model.
    pub fn create(header: &GgufHeader) -> std::io::Result<Self> {
        let dir = shadow_dir();
        let path = dir.join(format!(
            "hypura-{}-{}.gguf",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let shadow = Self { path };
        let mut source = File::open(&header.path)?;
        let mut bytes = vec![0u8; header.data_offset as usize];
        source.read_exact(&mut bytes)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&shadow.path)?;
        out.write_all(&bytes)?;
        out.set_len(header.file_size)?;
        Ok(shadow)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShadowFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn shadow_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        let probe = shm.join(format!("hypura-probe-{}", std::process::id()));
        if File::create(&probe).is_ok() {
            let _ = std::fs::remove_file(&probe);
            return shm.to_path_buf();
        }
    }
    std::env::temp_dir()
}
