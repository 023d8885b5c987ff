//! Checksums of streamed regions: the first read of a region records a fast hash of its
//! bytes (xxh3), every later read of the same region must hash the same. A model file
//! overwritten in place while hypura streams from it is caught on the next read of each
//! changed region, before the graph uses the bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64;

/// What a read's bytes say about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// First read of the region, or the same bytes as before.
    Same,
    /// Different bytes than an earlier read of the region.
    Differs,
}

/// Region (file offset, length) to checksum; shared by the reader threads.
#[derive(Debug, Default)]
pub(crate) struct Checksums {
    regions: Mutex<HashMap<(u64, usize), u64>>,
}

impl Checksums {
    /// Records or compares the checksum of the `bytes` read at `offset`.
    pub fn check(&self, offset: u64, bytes: &[u8]) -> Verdict {
        let hash = xxh3_64(bytes);
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        // The first read's checksum stays: a changed region keeps failing.
        match *regions.entry((offset, bytes.len())).or_insert(hash) {
            recorded if recorded != hash => Verdict::Differs,
            _ => Verdict::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_region_is_caught_on_its_next_read() {
        let c = Checksums::default();
        assert_eq!(c.check(0, b"abcd"), Verdict::Same);
        assert_eq!(c.check(0, b"abcd"), Verdict::Same);
        assert_eq!(c.check(4, b"abcd"), Verdict::Same, "another region");
        assert_eq!(c.check(0, b"abcX"), Verdict::Differs);
        assert_eq!(
            c.check(0, b"abcX"),
            Verdict::Differs,
            "still differs from the first"
        );
        assert_eq!(c.check(0, b"abc"), Verdict::Same, "another length");
    }
}
