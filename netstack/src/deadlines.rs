//! A min-heap of deadlines for a table whose members each have a next deadline (TCP
//! connections, UDP and ICMP flows): finding what is due, and when the stack must be polled
//! next, costs a look at the top instead of a pass over the table.
//!
//! Entries are never updated in place. The table decides which entry is live (typically the one
//! whose instant its member recorded when it was pushed); the others are stale, skipped when they
//! come due, and dropped by [`Deadlines::compact`] once they outnumber the members, which bounds
//! the heap at twice the table plus [`COMPACT_SLACK`] and one.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::time::Instant;

/// Stale entries tolerated beyond twice the members before the heap is compacted.
pub(crate) const COMPACT_SLACK: usize = 64;

#[derive(Debug)]
pub(crate) struct Deadlines<K> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            heap: BinaryHeap::new(),
        }
    }
}

/// A heap entry, ordered by its instant only.
#[derive(Debug, Clone, Copy)]
struct Entry<K> {
    at: Instant,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl<K: Copy> Deadlines<K> {
    pub(crate) fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse(Entry { at, key }));
    }

    /// The earliest entry's instant (possibly a stale one's).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.0.at)
    }

    /// Takes the earliest entry if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let Reverse(e) = self.heap.peek()?;
        if e.at > now {
            return None;
        }
        let Reverse(e) = self.heap.pop()?;
        Some((e.at, e.key))
    }

    /// Entries, live and stale (the tables' bound tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Once the heap holds more than twice `members` plus [`COMPACT_SLACK`], keeps only the
    /// entries `live` accepts.
    pub(crate) fn compact(&mut self, members: usize, mut live: impl FnMut(&K, Instant) -> bool) {
        if self.heap.len() > 2 * members + COMPACT_SLACK {
            self.heap.retain(|Reverse(e)| live(&e.key, e.at));
        }
    }
}
