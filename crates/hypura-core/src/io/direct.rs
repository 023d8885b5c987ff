//! Platform code of the reader. On Linux: `O_DIRECT` reads (large aligned reads land in
//! place when the destination sits at the file offset's position within a page, the partial
//! first and last blocks go through a per-thread aligned bounce buffer), and page-cache
//! advice for buffered reads. Elsewhere (macOS): plain buffered reads, no advice.

use std::fs::File;
use std::path::Path;

/// Alignment `O_DIRECT` needs for offsets, lengths and memory (covers 512 B and 4 KiB sectors).
pub(crate) const DIRECT_ALIGN: usize = 4096;

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    use super::DIRECT_ALIGN;

    /// Largest direct read through the bounce buffer; longer requests are read in pieces.
    const DIRECT_CHUNK: usize = 4 << 20;

    thread_local! {
        /// Per-thread aligned bounce buffer for direct reads.
        static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A second handle on the same open file with `O_DIRECT`, if the file system supports
    /// it (tmpfs does not). Opened through `/proc/self/fd`, so it is the very inode already
    /// open even if the path was renamed or replaced meanwhile.
    pub(crate) fn open_direct(file: &File, path: &Path) -> Option<File> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let same = crate::io::fd_path(file);
        let open = |p: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(p)
                .ok()
        };
        let direct = open(&same).or_else(|| open(path))?;
        let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return None;
        }
        // Probe one aligned read: some file systems accept the flag and fail the reads.
        let mut probe = vec![0u8; 2 * DIRECT_ALIGN];
        let shift = probe.as_ptr().align_offset(DIRECT_ALIGN);
        direct
            .read_at(&mut probe[shift..shift + DIRECT_ALIGN], 0)
            .ok()?;
        Some(direct)
    }

    /// No kernel read-ahead beyond what each request asks for.
    pub(crate) fn advise_random(file: &File) {
        // SAFETY: a valid fd for the duration of the call; advice only.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    }

    /// Drops `[offset, offset + len)` of the file from the page cache.
    pub(crate) fn drop_cached(file: &File, offset: u64, len: usize) {
        // SAFETY: a valid fd for the duration of the call; advice only.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            )
        };
    }

    /// Faults in, in one call, the pages the copy into `buf` is about to write (one page
    /// fault per 4 KiB otherwise, when they were handed back or never written: expert slices,
    /// embedding rows). Advice only: without `MADV_POPULATE_WRITE` (Linux < 5.14) the copy
    /// faults them as before.
    fn populate(buf: &mut [u8]) {
        let start = buf.as_ptr() as usize / DIRECT_ALIGN * DIRECT_ALIGN;
        let end = (buf.as_ptr() as usize + buf.len()).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
        // SAFETY: the range covers exactly the pages holding `buf`, writable memory of ours
        // that the caller is about to write whole; populating writes no byte of it.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_POPULATE_WRITE,
            )
        };
    }

    /// Reads through the direct handle into an aligned bounce buffer, then copies.
    fn read_bounced(direct: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        populate(buf);
        BOUNCE.with(|bounce| {
            let mut bounce = bounce.borrow_mut();
            // Sized to the largest read seen on this thread (a request, or one embedding row).
            // Room for the read rounded up to whole blocks, a block of lead-in, and the
            // alignment shift.
            let needed = buf.len().min(DIRECT_CHUNK).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN
                + 3 * DIRECT_ALIGN;
            if bounce.len() < needed {
                *bounce = vec![0u8; needed];
            }
            let shift = bounce.as_ptr().align_offset(DIRECT_ALIGN);
            let usable = (bounce.len() - shift) / DIRECT_ALIGN * DIRECT_ALIGN;
            let aligned = &mut bounce[shift..shift + usable];
            let mut done = 0usize;
            while done < buf.len() {
                // `usable` is at least the rounded read + 2 blocks, so `want` is never 0.
                let want = (buf.len() - done).min(usable - DIRECT_ALIGN);
                let start = offset + done as u64;
                let aligned_start = start / DIRECT_ALIGN as u64 * DIRECT_ALIGN as u64;
                let lead = (start - aligned_start) as usize;
                let span = (lead + want).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
                let mut got = 0usize;
                while got < lead + want {
                    match direct.read_at(&mut aligned[got..span], aligned_start + got as u64) {
                        Ok(0) => {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "failed to fill whole buffer",
                            ))
                        }
                        Ok(n) => got += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf[done..done + want].copy_from_slice(&aligned[lead..lead + want]);
                done += want;
            }
            Ok(())
        })
    }

    /// Direct read of `buf` when it sits at the same offset within a 4 KiB page as `offset`
    /// does within the file: the whole blocks in the middle go straight into `buf` (no
    /// copy), the partial first and last blocks through the bounce buffer. Returns false
    /// (nothing read) when `buf` is not placed that way or too short to gain anything.
    fn read_in_place(direct: &File, buf: &mut [u8], offset: u64) -> std::io::Result<bool> {
        let align = DIRECT_ALIGN as u64;
        if buf.as_ptr() as u64 % align != offset % align {
            return Ok(false);
        }
        let end = offset + buf.len() as u64;
        let middle_start = offset.div_ceil(align) * align;
        let middle_end = end / align * align;
        if middle_end <= middle_start {
            return Ok(false);
        }
        let lead = (middle_start - offset) as usize;
        let middle_len = (middle_end - middle_start) as usize;
        let (head, rest) = buf.split_at_mut(lead);
        let (middle, tail) = rest.split_at_mut(middle_len);
        if !head.is_empty() {
            read_bounced(direct, head, offset)?;
        }
        // Offsets, lengths and memory are whole blocks, and the middle ends before the
        // file does: no short read but at an error.
        direct.read_exact_at(middle, middle_start)?;
        if !tail.is_empty() {
            read_bounced(direct, tail, middle_end)?;
        }
        Ok(true)
    }

    /// Reads exactly `buf.len()` bytes at `offset` through the direct handle.
    pub(crate) fn read_exact_at(direct: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        if !read_in_place(direct, buf, offset)? {
            read_bounced(direct, buf, offset)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::{advise_random, drop_cached, open_direct, read_exact_at};

/// No direct reads outside Linux yet (macOS would use `F_NOCACHE`; untested here).
#[cfg(not(target_os = "linux"))]
pub(crate) fn open_direct(_file: &File, _path: &Path) -> Option<File> {
    None
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_random(_file: &File) {}

#[cfg(not(target_os = "linux"))]
pub(crate) fn drop_cached(_file: &File, _offset: u64, _len: usize) {}

#[cfg(not(target_os = "linux"))]
pub(crate) fn read_exact_at(direct: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(direct, buf, offset)
}

/// Drops the whole file from the page cache (the probe's passes start cold).
pub(crate) fn drop_file_cache(path: &Path) {
    if let Ok(f) = File::open(path) {
        drop_cached(&f, 0, 0);
    }
}
