//! The streaming window's ring: where the next group's region goes in a fixed region of
//! memory whose groups leave in the order they entered.

/// Where a region of `len` bytes fits in a ring of `capacity` bytes whose occupied regions
/// are `regions` (start, len), oldest first, each placed right after the one before it or
/// wrapped to 0: after the newest region if there is room before the end (or before the
/// oldest, when wrapped), else at 0 if that lies before the oldest; `None` when it does not fit.
pub(crate) fn ring_room(
    mut regions: impl DoubleEndedIterator<Item = (usize, usize)>,
    capacity: usize,
    len: usize,
) -> Option<usize> {
    if len == 0 || len > capacity {
        return None;
    }
    let Some((tail, first_len)) = regions.next() else {
        return Some(0);
    };
    let (last_start, last_len) = regions.next_back().unwrap_or((tail, first_len));
    let head = last_start + last_len;
    if head > tail {
        // Not wrapped: free are [head, capacity) and [0, tail).
        if head + len <= capacity {
            Some(head)
        } else if len <= tail {
            Some(0)
        } else {
            None
        }
    } else if head + len <= tail {
        // Wrapped: free is [head, tail).
        Some(head)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ring_room;
    use std::collections::VecDeque;

    fn room(regions: &VecDeque<(usize, usize)>, capacity: usize, len: usize) -> Option<usize> {
        ring_room(regions.iter().copied(), capacity, len)
    }

    #[test]
    fn equal_groups_fill_the_ring_exactly_and_cycle() {
        let (size, slots) = (4096 * 3, 3);
        let mut regions = VecDeque::new();
        for step in 0..20 {
            while regions.len() < slots {
                let start = room(&regions, size * slots, size).expect("room for a group");
                assert_eq!(start % size, 0, "step {step}");
                regions.push_back((start, size));
            }
            assert_eq!(
                room(&regions, size * slots, size),
                None,
                "full at step {step}"
            );
            regions.pop_front();
        }
    }

    #[test]
    fn mixed_sizes_never_overlap_or_overflow() {
        let capacity = 100;
        let mut regions: VecDeque<(usize, usize)> = VecDeque::new();
        let mut seed = 7u32;
        let mut placed = 0;
        for _ in 0..10_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let len = 1 + (seed >> 16) as usize % 45;
            match room(&regions, capacity, len) {
                Some(start) => {
                    assert!(start + len <= capacity);
                    for &(s, l) in &regions {
                        assert!(start + len <= s || s + l <= start, "overlap");
                    }
                    regions.push_back((start, len));
                    placed += 1;
                }
                None => {
                    // Only refused when something is in the way.
                    assert!(!regions.is_empty());
                    regions.pop_front();
                }
            }
        }
        assert!(placed > 1000);
    }

    #[test]
    fn refuses_what_can_never_fit() {
        let regions = VecDeque::new();
        assert_eq!(room(&regions, 100, 101), None);
        assert_eq!(room(&regions, 100, 0), None);
        assert_eq!(room(&regions, 100, 100), Some(0));
    }
}
