//! The only code that reads the model file after its header: positioned reads straight into
//! hypura's memory ([`mod@file`], with the platform's direct I/O in [`direct`]), a pool of reader
//! threads ([`pool`]), checksums of streamed regions ([`verify`]), the header-only stand-in
//! llama.cpp's loader is given ([`standin`]), and the read-rate probe ([`probe`]).

pub(crate) mod direct;
pub(crate) mod file;
pub(crate) mod pool;
pub(crate) mod probe;
pub(crate) mod standin;
pub(crate) mod verify;

pub(crate) use file::{ModelFile, ReadError};
pub(crate) use pool::{Completion, ReadPool, ReadRequest};
pub use probe::ReadProbe;
pub(crate) use standin::{fd_path, StandIn};

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::memory::ReservedMemory;

    const PAGE: usize = 4096;

    fn byte_at(i: usize) -> u8 {
        (i.wrapping_mul(7) ^ (i / PAGE)) as u8
    }

    /// A file on the build's disk (not tmpfs, so that direct I/O is exercised where the file
    /// system allows it), removed on drop.
    struct TestFile(PathBuf);

    impl TestFile {
        fn new(name: &str, len: usize) -> Self {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
            let path = dir.join(format!("hypura-io-{name}-{}", std::process::id()));
            let bytes: Vec<u8> = (0..len).map(byte_at).collect();
            std::fs::write(&path, bytes).unwrap();
            Self(path)
        }
    }

    impl Drop for TestFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn reads_are_exact_in_place_and_through_the_bounce_buffer() {
        let len = 3 * (1 << 20) + 123;
        let file = TestFile::new("exact", len);
        let mut model = ModelFile::open(&file.0).unwrap();
        model.prepare_streaming(false);
        // Which path ran shows in the output (`cargo test -- --nocapture`); both are exact.
        eprintln!("direct I/O: {}", model.is_direct());
        let memory = ReservedMemory::new(2 << 20).unwrap();
        let cases = [
            (0usize, 10usize),
            (0, PAGE),
            (1, PAGE),
            (4095, 2),
            (100, 3 * PAGE + 17),
            (PAGE, 1 << 20),
            (12_345, (1 << 20) + 999),
            (len - 5000, 5000),
            (len - 1, 1),
        ];
        for (offset, n) in cases {
            // Same position within a page as the file offset (read in place when direct),
            // then one byte off (always through the bounce buffer).
            for shift in [offset % PAGE, (offset + 1) % PAGE] {
                // SAFETY: inside `memory` (2 MiB), which nothing else uses.
                let dst = unsafe { memory.base().add(PAGE + shift) };
                // SAFETY: as above.
                unsafe { model.read_into(dst, n, offset as u64) }.unwrap();
                // SAFETY: just written.
                let got = unsafe { std::slice::from_raw_parts(dst, n) };
                for (k, &b) in got.iter().enumerate() {
                    assert_eq!(
                        b,
                        byte_at(offset + k),
                        "offset {offset} len {n} shift {shift} byte {k}"
                    );
                }
            }
        }
        // Past the end: an error, not a short read.
        let dst = memory.base();
        // SAFETY: inside `memory`.
        assert!(unsafe { model.read_into(dst, 10, len as u64 - 5) }.is_err());
    }

    #[test]
    fn the_pool_splits_requests_on_block_boundaries_and_reads_them_exactly() {
        let len = 2 * (1 << 20) + 4321;
        let file = TestFile::new("pool", len);
        let mut model = ModelFile::open(&file.0).unwrap();
        model.prepare_streaming(true);
        model.start_verifying();
        let model = Arc::new(model);
        let pool = ReadPool::new(Arc::clone(&model), 3, 64 << 10).unwrap();
        let memory = ReservedMemory::new(4 << 20).unwrap();
        let base = memory.base() as usize;
        let offset = 777usize;
        let n = len - offset - 100;
        let requests = [
            ReadRequest {
                dst: base + offset % PAGE,
                len: n,
                offset: offset as u64,
            },
            ReadRequest {
                dst: base + (3 << 20) + 5,
                len: 70_000,
                offset: 3,
            },
        ];
        // SAFETY: the two destinations are distinct ranges of `memory`, waited for below.
        unsafe { pool.submit(&requests) }.wait().unwrap();
        // SAFETY: read above.
        let first = unsafe { std::slice::from_raw_parts(requests[0].dst as *const u8, n) };
        assert!(first
            .iter()
            .enumerate()
            .all(|(k, &b)| b == byte_at(offset + k)));
        // SAFETY: read above.
        let second = unsafe { std::slice::from_raw_parts(requests[1].dst as *const u8, 70_000) };
        assert!(second.iter().enumerate().all(|(k, &b)| b == byte_at(3 + k)));
        assert_eq!(model.bytes_read(), (n + 70_000) as u64);
        // Read again: the same bytes pass verification; changed bytes do not.
        // SAFETY: as above.
        unsafe { pool.submit(&requests[..1]) }.wait().unwrap();
        std::fs::write(&file.0, vec![7u8; len]).unwrap();
        // SAFETY: as above.
        let err = unsafe { pool.submit(&requests[..1]) }.wait().unwrap_err();
        assert!(matches!(err, ReadError::Changed(_)), "{err:?}");
    }

    #[test]
    fn a_file_truncated_or_rewritten_no_longer_matches_its_identity() {
        let file = TestFile::new("identity", 64 << 10);
        let model = ModelFile::open(&file.0).unwrap();
        model.check_unchanged().unwrap();
        // Rewritten with the same length: the modification time moves (set it explicitly,
        // as coarse timestamps could hide the change).
        let f = std::fs::File::options().write(true).open(&file.0).unwrap();
        f.set_modified(
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
        )
        .unwrap();
        assert!(matches!(
            model.check_unchanged(),
            Err(ReadError::Changed(_))
        ));
        let model = ModelFile::open(&file.0).unwrap();
        f.set_len(1000).unwrap();
        let err = model.check_unchanged().unwrap_err();
        assert!(
            err.to_string().contains("size went from 65536 to 1000"),
            "{err}"
        );
    }

    #[test]
    fn non_regular_files_are_refused_without_blocking() {
        let dir = std::env::temp_dir();
        let err = ModelFile::open(&dir).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a directory)"), "{err}");
        let fifo = dir.join(format!("hypura-io-fifo-{}", std::process::id()));
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = ModelFile::open(&fifo).unwrap_err().to_string();
        std::fs::remove_file(&fifo).unwrap();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        let err = ModelFile::open(std::path::Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a character device"), "{err}");
    }
}
