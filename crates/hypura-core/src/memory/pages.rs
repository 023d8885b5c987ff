//! Page operations on memory hypura owns: address space reserved with `MAP_NORESERVE` (it
//! costs nothing until a page is written), pages handed back to the OS, and the shared
//! scratch window llama.cpp's loader writes the stand-in's zeros into. Every raw page
//! operation is here, behind `unsafe` where the caller must own the pages.

use std::ffi::c_void;
use std::ptr::{self, NonNull};

/// Pages are the unit of residency: every tensor starts on a page boundary.
pub(crate) const PAGE_BYTES: usize = 4096;

/// Reserves `size` bytes of fresh private anonymous pages (not committed until written).
pub(crate) fn reserve(size: usize) -> std::io::Result<NonNull<c_void>> {
    // SAFETY: a fresh anonymous private mapping at an address the kernel chooses.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(base).ok_or_else(|| std::io::Error::other("mmap returned NULL"))
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

/// Backs `[base, base+size)` with one scratch region mapped repeatedly: whatever is written
/// there costs at most `SCRATCH_BYTES` of memory.
///
/// # Safety
/// The range must be one hypura mapped and owns, page-aligned, with no reference into it.
unsafe fn map_scratch(base: *mut c_void, size: usize) -> std::io::Result<()> {
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

/// Address space where writes are thrown away: one small shared scratch region mapped over
/// and over, so whatever is written costs at most `SCRATCH_BYTES` of memory, and each page of
/// the window is faulted in once however often it is written. llama.cpp's loader copies the
/// stand-in file's zeros here. Unmapped on drop.
pub(crate) struct ScratchWindow {
    base: NonNull<c_void>,
    size: usize,
}

// SAFETY: the window is plain memory owned by this value; nothing in it is meaningful.
unsafe impl Send for ScratchWindow {}

impl ScratchWindow {
    /// A window of at least `size` bytes (whole pages).
    pub(crate) fn new(size: usize) -> std::io::Result<Self> {
        let size = size.max(1).div_ceil(PAGE_BYTES) * PAGE_BYTES;
        let base = reserve(size)?;
        // SAFETY: the reservation was just made and nobody else knows it.
        if let Err(e) = unsafe { map_scratch(base.as_ptr(), size) } {
            // SAFETY: we own the reservation.
            unsafe { libc::munmap(base.as_ptr(), size) };
            return Err(e);
        }
        Ok(Self { base, size })
    }

    pub(crate) fn base(&self) -> *mut c_void {
        self.base.as_ptr()
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

impl Drop for ScratchWindow {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `new` and is owned by this value.
        unsafe { libc::munmap(self.base.as_ptr(), self.size) };
    }
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
