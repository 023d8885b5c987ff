//! The prefetch/release policy, as a state machine that knows only group sizes: which
//! groups to read ahead and where (the window ring, or the groups' own pages), which to
//! release, and what to wait for. It performs nothing itself; it returns [`Action`]s that
//! the executor ([`super::Streamer`]) carries out in order, so it can be tested without
//! llama.cpp, memory or files.
//!
//! Stream groups form a cycle that repeats every token. When a node of group `g` needs its
//! weights ([`Policy::acquire`]), every group queued in front of `g` is released (every
//! node that read them has computed), reads are queued ahead into the room this frees (up
//! to the read-ahead depth, never past the window), and only then does the executor wait for
//! `g`: the readers stay busy while the graph waits.
//!
//! The window is a ring of equal slots, each the size of the largest group: groups of
//! unequal sizes placed end to end can leave the free space in two pieces neither of which
//! holds the next group, and read-ahead would stall short of its depth; with equal slots a
//! window of `depth + 1` slots always holds the group in use and `depth` more.

use std::collections::VecDeque;

use crate::memory::window::ring_room;

/// Where a group in flight is read to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// `[start, start + len)` of the window.
    Window { start: usize, len: usize },
    /// The group's tensors' own pages (released with `MADV_DONTNEED` afterwards).
    Home,
}

/// What the executor must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Wait for the group's reads still in flight, then free its slot (home pages are
    /// handed back; a window region is simply reused).
    Release { group: usize, slot: Slot },
    /// Point the group's tensors at the slot and queue its reads.
    Submit { group: usize, slot: Slot },
    /// Wait until the group's reads are done: a node is about to use it.
    Wait { group: usize },
}

/// Sizes of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupSize {
    /// Bytes the group takes in the window (its reads laid out for direct I/O in place).
    pub window_bytes: usize,
    /// Bytes of whole pages its reads take in the tensors' own pages.
    pub home_bytes: u64,
}

/// Counts of how the graph's requests met the read-ahead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PolicyCounts {
    /// Groups whose reads had to be issued when already needed (not read ahead).
    pub late_groups: u64,
    /// Times a group was needed out of the planned order.
    pub out_of_order: u64,
}

/// The policy's state.
#[derive(Debug)]
pub(crate) struct Policy {
    groups: Vec<GroupSize>,
    /// Bytes of the window, `None` when there is no window memory.
    window_capacity: Option<usize>,
    /// Bytes the window budget allows (home pages are held to it when there is no window).
    window_limit: u64,
    /// Bytes of one window slot: the largest group that fits the window.
    slot_bytes: usize,
    depth: usize,
    queue: VecDeque<(usize, Slot)>,
    /// True once the group in front of the queue was acquired by a node.
    front_in_use: bool,
    next_submit: usize,
    /// End of the furthest window region used so far: the window's pages below it are mapped.
    window_touched: u64,
    /// Bytes of groups in flight in their own (home) pages.
    home_held: u64,
    counts: PolicyCounts,
}

impl Policy {
    /// A policy over `groups` (in cycle order) reading up to `depth` groups ahead, with a
    /// window of `window_capacity` bytes (or none) and a window budget of `window_limit`.
    pub fn new(
        groups: Vec<GroupSize>,
        window_capacity: Option<usize>,
        window_limit: u64,
        depth: usize,
    ) -> Self {
        let slot_bytes = groups
            .iter()
            .map(|g| g.window_bytes)
            .filter(|&w| window_capacity.is_some_and(|c| w <= c))
            .max()
            .unwrap_or(0);
        Self {
            groups,
            window_capacity,
            window_limit,
            slot_bytes,
            depth,
            queue: VecDeque::new(),
            front_in_use: false,
            next_submit: 0,
            window_touched: 0,
            home_held: 0,
            counts: PolicyCounts::default(),
        }
    }

    /// Bytes of streamed weights held: the window's used part (its pages stay mapped) and
    /// groups in their own pages.
    pub fn held_bytes(&self) -> u64 {
        self.window_touched + self.home_held
    }

    /// The counts so far.
    pub fn counts(&self) -> PolicyCounts {
        self.counts
    }

    /// Zeroes the counts.
    pub fn reset_counts(&mut self) {
        self.counts = PolicyCounts::default();
    }

    /// The slot of group `g`, while it is queued.
    pub fn slot_of(&self, g: usize) -> Option<Slot> {
        self.queue.iter().find(|(q, _)| *q == g).map(|(_, s)| *s)
    }

    /// Groups read ahead for what comes next (queued, not yet acquired).
    pub fn read_ahead(&self) -> impl Iterator<Item = usize> + '_ {
        self.queue
            .iter()
            .skip(usize::from(self.front_in_use))
            .map(|(g, _)| *g)
    }

    /// Makes sure the first groups are on their way (before a decode).
    pub fn start(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.top_up(&mut actions);
        actions
    }

    /// Releases every queued group (after an error: the next decode reads afresh).
    pub fn release_all(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.release_before(None, &mut actions);
        self.front_in_use = false;
        self.next_submit = 0;
        actions
    }

    /// Group `g` is needed now: see the module documentation.
    pub fn acquire(&mut self, g: usize) -> Vec<Action> {
        let mut actions = Vec::new();
        if g >= self.groups.len() {
            return actions;
        }
        if self.front_in_use && self.queue.front().is_some_and(|(f, _)| *f == g) {
            return actions; // already current and waited for
        }
        if self.queue.iter().any(|(q, _)| *q == g) {
            self.release_before(Some(g), &mut actions);
        } else {
            // Not read ahead: nothing was in flight yet, or the graph left the planned order
            // (then what was read ahead is for other groups: drop it).
            if !self.queue.is_empty() {
                self.counts.out_of_order += 1;
            }
            self.counts.late_groups += 1;
            self.release_before(None, &mut actions);
            let slot = self
                .window_room(self.groups[g].window_bytes)
                .unwrap_or(Slot::Home);
            self.submit(g, slot, &mut actions);
        }
        self.front_in_use = true;
        self.top_up(&mut actions);
        actions.push(Action::Wait { group: g });
        actions
    }

    /// A free window slot for a group of `len` bytes, if any.
    fn window_room(&self, len: usize) -> Option<Slot> {
        let capacity = self.window_capacity?;
        if len > self.slot_bytes {
            return None;
        }
        let len = self.slot_bytes;
        let regions = self.queue.iter().filter_map(|(_, s)| match s {
            Slot::Window { start, len } => Some((*start, *len)),
            Slot::Home => None,
        });
        ring_room(regions, capacity, len).map(|start| Slot::Window { start, len })
    }

    fn submit(&mut self, g: usize, slot: Slot, actions: &mut Vec<Action>) {
        match slot {
            Slot::Window { start, len } => {
                self.window_touched = self.window_touched.max((start + len) as u64)
            }
            Slot::Home => self.home_held += self.groups[g].home_bytes,
        }
        self.queue.push_back((g, slot));
        self.next_submit = (g + 1) % self.groups.len();
        actions.push(Action::Submit { group: g, slot });
    }

    /// Releases the queued groups in front of group `keep` (all of them when `None`).
    fn release_before(&mut self, keep: Option<usize>, actions: &mut Vec<Action>) {
        while let Some(&(group, slot)) = self.queue.front() {
            if Some(group) == keep {
                break;
            }
            self.queue.pop_front();
            if slot == Slot::Home {
                self.home_held = self.home_held.saturating_sub(self.groups[group].home_bytes);
            }
            actions.push(Action::Release { group, slot });
        }
        if keep.is_none() {
            self.front_in_use = false;
        }
    }

    /// Queues reads ahead, up to the read-ahead depth and the window budget.
    fn top_up(&mut self, actions: &mut Vec<Action>) {
        let n = self.groups.len();
        if n == 0 {
            return;
        }
        let target = (self.depth + 1).min(n);
        while self.queue.len() < target {
            let g = self.next_submit;
            if self.queue.iter().any(|(q, _)| *q == g) {
                break;
            }
            let slot = match self.window_room(self.groups[g].window_bytes) {
                Some(slot) => slot,
                // No window memory at all: read ahead into the groups' own pages, within the
                // same budget.
                None if self.window_capacity.is_none()
                    && self.home_held + self.groups[g].home_bytes <= self.window_limit =>
                {
                    Slot::Home
                }
                // The window is full of groups still needed: wait for the next release.
                None if !self.queue.is_empty() => break,
                // Nothing in flight and the group does not fit the window at all.
                None => Slot::Home,
            };
            self.submit(g, slot, actions);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(window: &[usize]) -> Vec<GroupSize> {
        window
            .iter()
            .map(|&w| GroupSize {
                window_bytes: w,
                home_bytes: w as u64,
            })
            .collect()
    }

    /// Runs `tokens` passes over every group in order, checking the invariants after each
    /// step; returns every action.
    fn simulate(policy: &mut Policy, n_groups: usize, tokens: usize) -> Vec<Action> {
        let mut all = policy.start();
        let mut in_flight: Vec<(usize, Slot)> = Vec::new();
        let apply = |actions: &[Action], in_flight: &mut Vec<(usize, Slot)>| {
            for a in actions {
                match *a {
                    Action::Submit { group, slot } => {
                        assert!(!in_flight.iter().any(|(g, _)| *g == group), "{group} twice");
                        if let Slot::Window { start, len } = slot {
                            for &(_, other) in in_flight.iter() {
                                if let Slot::Window { start: s, len: l } = other {
                                    assert!(start + len <= s || s + l <= start, "overlap");
                                }
                            }
                        }
                        in_flight.push((group, slot));
                    }
                    Action::Release { group, .. } => {
                        let at = in_flight.iter().position(|(g, _)| *g == group).unwrap();
                        assert_eq!(at, 0, "released out of queue order");
                        in_flight.remove(at);
                    }
                    Action::Wait { group } => {
                        assert_eq!(in_flight.first().map(|(g, _)| *g), Some(group));
                    }
                }
            }
        };
        apply(&all, &mut in_flight);
        for _ in 0..tokens {
            for g in 0..n_groups {
                let actions = policy.acquire(g);
                apply(&actions, &mut in_flight);
                assert_eq!(actions.last(), Some(&Action::Wait { group: g }));
                all.extend(actions);
            }
        }
        all
    }

    #[test]
    fn equal_groups_cycle_through_the_window_with_full_read_ahead() {
        let n = 6;
        let group = 3 * 4096;
        let mut p = Policy::new(sizes(&vec![group; n]), Some(3 * group), 3 * group as u64, 2);
        let actions = simulate(&mut p, n, 4);
        // Read ahead from the start: never late after the first token's first group.
        assert_eq!(p.counts().late_groups, 0);
        assert_eq!(p.counts().out_of_order, 0);
        // Every group was read once per token, always into the window.
        let submits: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Submit { group, slot } => Some((*group, *slot)),
                _ => None,
            })
            .collect();
        assert!(submits.len() >= 4 * n && submits.len() <= 4 * n + 3);
        assert!(submits
            .iter()
            .all(|(_, s)| matches!(s, Slot::Window { .. })));
        for (i, (g, _)) in submits.iter().enumerate() {
            assert_eq!(*g, i % n, "cyclic order");
        }
        assert!(p.held_bytes() <= 3 * group as u64);
    }

    #[test]
    fn read_ahead_never_passes_the_depth_or_the_window() {
        // Uneven groups: the window (two of the largest) holds fewer of them at times.
        let window = [8192, 20480, 4096, 16384, 12288];
        let capacity = 2 * 20480;
        for depth in 0..=3 {
            let mut p = Policy::new(sizes(&window), Some(capacity), capacity as u64, depth);
            simulate(&mut p, window.len(), 5);
            assert!(p.held_bytes() <= capacity as u64);
            assert!(p.read_ahead().count() <= depth);
        }
    }

    #[test]
    fn uneven_groups_are_read_ahead_to_full_depth() {
        // A layer's attention, FFN input and down projection, then a layer with one group:
        // end to end in a ring of two of the largest, the third could wait for a release.
        let window = [6 * 4096, 5 * 4096, 10 * 4096, 3 * 4096];
        for depth in 1..=2 {
            let capacity = (depth + 1) * 10 * 4096;
            let mut p = Policy::new(sizes(&window), Some(capacity), capacity as u64, depth);
            p.start();
            for _ in 0..5 {
                for g in 0..window.len() {
                    p.acquire(g);
                    assert_eq!(p.read_ahead().count(), depth, "depth {depth}, group {g}");
                }
            }
            assert_eq!(p.counts().late_groups, 0);
        }
    }

    #[test]
    fn out_of_order_requests_drop_what_was_read_ahead() {
        let mut p = Policy::new(sizes(&[4096; 4]), Some(3 * 4096), 3 * 4096, 2);
        p.start();
        p.acquire(0);
        let actions = p.acquire(3); // skips 1 and 2
        assert_eq!(p.counts().out_of_order, 1);
        assert_eq!(p.counts().late_groups, 1, "group 3 had not been read ahead");
        let released: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Release { group, .. } => Some(*group),
                _ => None,
            })
            .collect();
        assert_eq!(released, vec![0, 1, 2]);
        assert!(actions.contains(&Action::Wait { group: 3 }));
        // And the cycle goes on from there.
        assert_eq!(p.acquire(0).last(), Some(&Action::Wait { group: 0 }));
        assert_eq!(p.counts().late_groups, 1, "read ahead again after the jump");
    }

    #[test]
    fn without_window_memory_read_ahead_uses_home_pages_within_the_budget() {
        let mut p = Policy::new(sizes(&[4096; 5]), None, 2 * 4096, 3);
        let actions = simulate(&mut p, 5, 3);
        assert!(actions.iter().all(|a| !matches!(
            a,
            Action::Submit {
                slot: Slot::Window { .. },
                ..
            }
        )));
        assert!(p.held_bytes() <= 2 * 4096);
        assert!(p.counts().late_groups <= 1);
    }

    #[test]
    fn a_group_larger_than_the_window_goes_home_and_release_all_empties_the_queue() {
        let mut p = Policy::new(sizes(&[4096, 65536]), Some(8192), 8192, 1);
        p.start();
        p.acquire(0);
        let actions = p.acquire(1);
        assert!(
            actions.contains(&Action::Submit {
                group: 1,
                slot: Slot::Home
            }) || p.slot_of(1) == Some(Slot::Home)
        );
        let released = p.release_all();
        assert!(!released.is_empty());
        assert_eq!(p.held_bytes(), p.held_bytes().min(8192));
        assert_eq!(p.slot_of(0), None);
        assert_eq!(p.slot_of(1), None);
    }
}
