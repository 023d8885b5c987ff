//! The model file, opened once per load: refused without blocking when it is not a regular
//! file, its identity recorded, and read with positioned reads (directly where the platform
//! and file system allow it, see [`super::direct`]). Every read of a streamed region is
//! checksummed ([`super::verify`]), so that a file changed under a running model is detected
//! before its bytes are used.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::direct;
use super::verify::{Checksums, Verdict};
use crate::error::ModelFileError;

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The OS reported an error (or the file ended early).
    Io(String),
    /// The bytes differ from what was read there before, or the file's size or modification
    /// time changed: the file was changed under the running model.
    Changed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(m) | ReadError::Changed(m) => f.write_str(m),
        }
    }
}

/// What identifies the file's contents cheaply: the inode and its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Identity {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.len(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

/// The model file, opened read-only (hypura never writes to model files).
#[derive(Debug)]
pub(crate) struct ModelFile {
    file: File,
    direct: Option<File>,
    path: PathBuf,
    identity: Identity,
    bytes_read: AtomicU64,
    checksums: Option<Checksums>,
    /// True once reads are checked against the checksums (not for the RAM tier, read once).
    verifying: AtomicBool,
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else {
        "not a file"
    }
}

impl ModelFile {
    /// Opens `path` read-only. A FIFO, socket, device or directory is refused without
    /// blocking (the open does not wait for a writer).
    pub fn open(path: &Path) -> Result<Self, ModelFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let unreadable = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelFileError::NotFound {
                    path: path.to_path_buf(),
                }
            } else {
                ModelFileError::Unreadable {
                    path: path.to_path_buf(),
                    source,
                }
            }
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(unreadable)?;
        let metadata = file.metadata().map_err(unreadable)?;
        if !metadata.file_type().is_file() {
            return Err(ModelFileError::NotARegularFile {
                path: path.to_path_buf(),
                kind: kind_of(metadata.file_type()),
            });
        }
        Ok(Self {
            file,
            direct: None,
            path: path.to_path_buf(),
            identity: Identity::of(&metadata),
            bytes_read: AtomicU64::new(0),
            checksums: None,
            verifying: AtomicBool::new(false),
        })
    }

    /// The open file (to read the header from).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's path, as the user gave it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size when it was opened.
    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// Prepares for streaming: direct reads where possible (unless `HYPURA_DIRECT_IO=0`),
    /// and, with `verify`, a checksum of every region streamed (recorded at its first read,
    /// compared on each later read) once [`Self::start_verifying`] is called.
    pub fn prepare_streaming(&mut self, verify: bool) {
        // Random access: no kernel read-ahead beyond what each request asks for.
        direct::advise_random(&self.file);
        self.direct = match std::env::var("HYPURA_DIRECT_IO").as_deref() {
            Ok("0") => None,
            _ => direct::open_direct(&self.file, &self.path),
        };
        self.checksums = verify.then(Checksums::default);
    }

    /// True when reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// From now on, reads are checksummed (if streaming was prepared with verification).
    pub fn start_verifying(&self) {
        self.verifying
            .store(self.checksums.is_some(), Ordering::Relaxed);
    }

    /// True when streamed regions are checksummed.
    pub fn verifies(&self) -> bool {
        self.verifying.load(Ordering::Relaxed)
    }

    /// Total bytes read through this handle.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Checks that the file still has the size and modification time it had when opened
    /// (one `fstat` of the open handle: a file deleted or replaced by a rename keeps working
    /// from the handle, an overwrite or truncation does not).
    pub fn check_unchanged(&self) -> Result<(), ReadError> {
        let now = self
            .file
            .metadata()
            .map_err(|e| ReadError::Io(format!("cannot stat the model file: {e}")))?;
        let now = Identity::of(&now);
        if now == self.identity {
            return Ok(());
        }
        Err(ReadError::Changed(if now.size != self.identity.size {
            format!(
                "its size went from {} to {} bytes",
                self.identity.size, now.size
            )
        } else {
            "its modification time changed".to_string()
        }))
    }

    /// Reads exactly `buf.len()` bytes at `offset`: directly when possible (into `buf` itself
    /// when it is placed at the file offset's position within a page, else through a bounce
    /// buffer), else buffered, dropping those pages from the page cache after so that
    /// streaming never grows it.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match &self.direct {
            Some(d) => direct::read_exact_at(d, buf, offset)?,
            None => {
                self.file.read_exact_at(buf, offset)?;
                direct::drop_cached(&self.file, offset, buf.len());
            }
        }
        self.bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Reads `len` bytes at `offset` into raw memory, and, when streaming with verification,
    /// checks them against the checksum recorded at the region's first read.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes and not accessed by anyone else until
    /// this returns.
    pub unsafe fn read_into(&self, dst: *mut u8, len: usize, offset: u64) -> Result<(), ReadError> {
        // SAFETY: guaranteed by the caller.
        unsafe {
            self.read_unchecked_into(dst, len, offset)?;
            self.check_region(dst, len, offset)
        }
    }

    /// Reads `len` bytes at `offset` into raw memory, without checking them (see
    /// [`Self::check_region`]).
    ///
    /// # Safety
    /// As [`Self::read_into`].
    pub unsafe fn read_unchecked_into(
        &self,
        dst: *mut u8,
        len: usize,
        offset: u64,
    ) -> Result<(), ReadError> {
        // SAFETY: guaranteed by the caller.
        let buf = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        self.read_exact_at(buf, offset)
            .map_err(|e| ReadError::Io(format!("{len} bytes at offset {offset}: {e}")))
    }

    /// When streaming with verification, checks the `len` bytes read from `offset` into
    /// `src` against the checksum recorded at the region's first read (recording it then).
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes that nobody writes until this returns.
    pub unsafe fn check_region(
        &self,
        src: *const u8,
        len: usize,
        offset: u64,
    ) -> Result<(), ReadError> {
        let Some(checksums) = self.checksums.as_ref().filter(|_| self.verifies()) else {
            return Ok(());
        };
        // SAFETY: guaranteed by the caller.
        let bytes = unsafe { std::slice::from_raw_parts(src, len) };
        if checksums.check(offset, bytes) == Verdict::Differs {
            return Err(ReadError::Changed(format!(
                "the {len} bytes at offset {offset} differ from an earlier read"
            )));
        }
        Ok(())
    }
}
