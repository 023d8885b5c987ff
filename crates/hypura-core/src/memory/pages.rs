//! Page operations on memory hypura owns: address space reserved with `MAP_NORESERVE` (it
//! costs nothing until a page is written), pages handed back to the OS, and the shared
//! scratch that backs a buffer while llama.cpp's loader writes zeros into it. Every raw page
//! operation is here, behind `unsafe` where the caller must own the pages.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

/// Pages are the unit of residency: every tensor starts on a page boundary.
pub(crate) const PAGE_BYTES: usize = 4096;

fn mmap_anonymous(
    addr: *mut c_void,
    size: usize,
    flags: libc::c_int,
) -> std::io::Result<*mut c_void> {
    // SAFETY: an anonymous private mapping; with MAP_FIXED (in `flags`) only over a range the
    // caller owns, by the contract of `remap_reserved`.
    let base = unsafe {
        libc::mmap(
            addr,
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | flags,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(base)
}

/// Reserves `size` bytes of fresh private anonymous pages (not committed until written).
pub(crate) fn reserve(size: usize) -> std::io::Result<NonNull<c_void>> {
    let base = mmap_anonymous(ptr::null_mut(), size, 0)?;
    NonNull::new(base).ok_or_else(|| std::io::Error::other("mmap returned NULL"))
}

/// Replaces `[addr, addr + size)` with fresh reserved pages (they read as zeros).
///
/// # Safety
/// The range must be one hypura mapped and owns, page-aligned, with no reference into it.
pub(crate) unsafe fn remap_reserved(addr: NonNull<c_void>, size: usize) -> std::io::Result<()> {
    mmap_anonymous(addr.as_ptr(), size, libc::MAP_FIXED).map(|_| ())
}

const SCRATCH_BYTES: usize = 16 << 20;

/// A file descriptor of `SCRATCH_BYTES` of shared memory.
fn scratch_fd() -> std::io::Result<libc::c_int> {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscall with a static name.
    let fd = unsafe { libc::memfd_create(c"hypura-load-scratch".as_ptr(), libc::MFD_CLOEXEC) };
    #[cfg(not(target_os = "linux"))]
    let fd = {
        let mut template = std::env::temp_dir()
            .join("hypura-scratch-XXXXXX")
            .into_os_string()
            .into_encoded_bytes();
        template.push(0);
        // SAFETY: a NUL-terminated mutable template; the file is unlinked at once.
        unsafe {
            let fd = libc::mkstemp(template.as_mut_ptr().cast());
            if fd >= 0 {
                libc::unlink(template.as_ptr().cast());
            }
            fd
        }
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a valid fd we own.
    if unsafe { libc::ftruncate(fd, SCRATCH_BYTES as libc::off_t) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing our own fd.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    Ok(fd)
}

/// Backs `[base, base+size)` with one scratch region mapped repeatedly: whatever the loader
/// writes there costs at most `SCRATCH_BYTES` of memory.
///
/// # Safety
/// The range must be one hypura mapped and owns, page-aligned, with no reference into it.
pub(crate) unsafe fn map_scratch(base: *mut c_void, size: usize) -> std::io::Result<()> {
    let fd = scratch_fd()?;
    let mut result = Ok(());
    let mut offset = 0;
    while offset < size {
        let len = SCRATCH_BYTES.min(size - offset);
        // SAFETY: MAP_FIXED over part of a reservation we own, from a valid fd.
        let p = unsafe {
            libc::mmap(
                base.cast::<u8>().add(offset).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            result = Err(std::io::Error::last_os_error());
            break;
        }
        offset += len;
    }
    // SAFETY: the mappings keep the memory alive; the fd is ours.
    unsafe { libc::close(fd) };
    result
}

/// Hands the pages covering `[addr, addr+len)` back to the OS (they read as zeros after).
///
/// # Safety
/// The range, widened to whole pages, must lie inside a private anonymous mapping of hypura's
/// (a [`ReservedMemory`] or a buffer of [`crate::memory::HypuraBufferType`]) whose pages the
/// caller owns entirely, with no reference into them alive: true for a whole tensor (tensors
/// start on page boundaries and never share a page) and for head chunks (planned to start on
/// page boundaries).
pub(crate) unsafe fn release_pages(addr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    let start = addr as usize / PAGE_BYTES * PAGE_BYTES;
    let end = (addr as usize + len).div_ceil(PAGE_BYTES) * PAGE_BYTES;
    // SAFETY: by the caller's contract the pages are ours and unreferenced; MADV_DONTNEED on
    // private anonymous memory only drops their contents.
    unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
}

/// Bytes of whole pages covering `[addr, addr+len)`.
pub(crate) fn pages_bytes(addr: *const u8, len: usize) -> u64 {
    if len == 0 {
        return 0;
    }
    let start = addr as usize / PAGE_BYTES * PAGE_BYTES;
    let end = (addr as usize + len).div_ceil(PAGE_BYTES) * PAGE_BYTES;
    (end - start) as u64
}

/// Address space reserved with `MAP_NORESERVE` that hypura fills and releases itself (the
/// streamed LM head's chunks). Unmapped on drop.
#[derive(Debug)]
pub(crate) struct ReservedMemory {
    base: NonNull<u8>,
    size: usize,
}

// SAFETY: plain memory; access is coordinated by the scheduler.
unsafe impl Send for ReservedMemory {}

impl ReservedMemory {
    /// Reserves `size` bytes (rounded up to whole pages).
    pub(crate) fn new(size: usize) -> std::io::Result<Self> {
        let size = size.max(1).div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let base = reserve(size)?;
        Ok(Self {
            base: base.cast(),
            size,
        })
    }

    /// The first byte (page-aligned).
    pub(crate) fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Bytes reserved (a whole number of pages).
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Hands the pages of `[offset, offset + len)` of this memory back to the OS (they read as
    /// zeros after). Safe: nothing hands out references into this memory, only addresses.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return;
        }
        // SAFETY: the range lies inside this mapping, which this value owns, and no Rust
        // reference into it exists (only raw addresses are handed out).
        unsafe { release_pages(self.base.as_ptr().add(offset), end - offset) };
    }
}

impl Drop for ReservedMemory {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range in `new`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size) };
    }
}
