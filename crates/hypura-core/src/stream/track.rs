//! The access tracker: per tensor, how often a graph node used it and how often (and how many
//! bytes of it) had to be read from disk. Later work feeds these counts to the planner.

use std::collections::HashMap;

use serde::Serialize;

/// Counts for one tensor.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TensorAccess {
    /// Tensor name (a tied head's second copy is named `token_embd.weight#head`).
    pub name: String,
    /// Graph nodes that read it.
    pub accesses: u64,
    /// Times bytes of it were read from the file during decoding.
    pub disk_reads: u64,
    /// Bytes of it read from the file during decoding.
    pub disk_bytes: u64,
}

/// Per-tensor counters, keyed by name.
#[derive(Debug, Default)]
pub(crate) struct AccessTracker {
    index: HashMap<String, usize>,
    entries: Vec<TensorAccess>,
}

impl AccessTracker {
    /// The slot of `name`, created on first use.
    pub(crate) fn slot(&mut self, name: &str) -> usize {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        self.entries.push(TensorAccess {
            name: name.to_string(),
            ..Default::default()
        });
        self.index.insert(name.to_string(), self.entries.len() - 1);
        self.entries.len() - 1
    }

    /// Counts one use by a graph node.
    pub(crate) fn accessed(&mut self, slot: usize) {
        if let Some(e) = self.entries.get_mut(slot) {
            e.accesses += 1;
        }
    }

    /// Counts one read of `bytes` from disk.
    pub(crate) fn read_from_disk(&mut self, slot: usize, bytes: u64) {
        if let Some(e) = self.entries.get_mut(slot) {
            e.disk_reads += 1;
            e.disk_bytes += bytes;
        }
    }

    /// Adds `bytes` read from disk as part of a read already counted (a later chunk).
    pub(crate) fn read_more_bytes(&mut self, slot: usize, bytes: u64) {
        if let Some(e) = self.entries.get_mut(slot) {
            e.disk_bytes += bytes;
        }
    }

    /// Clears all counts, keeping the slots.
    pub(crate) fn reset(&mut self) {
        for e in &mut self.entries {
            e.accesses = 0;
            e.disk_reads = 0;
            e.disk_bytes = 0;
        }
    }

    /// A snapshot, in first-seen order.
    pub(crate) fn snapshot(&self) -> Vec<TensorAccess> {
        self.entries.clone()
    }
}
