//! Guest segments that arrive ahead of the next expected byte: held until the gap before them
//! fills (RFC 9293 §3.10.7.4 lets a receiver queue them), and reported to the guest in SACK blocks
//! (RFC 2018 §4) so that it resends only what is missing.
//!
//! The bytes live in a ring indexed by sequence number modulo its size. Everything held lies in the
//! window we advertised, `[rcv_nxt, rcv_nxt + TO_HOST_CAP)`, whose right edge never moves left, so
//! with a ring of `TO_HOST_CAP` bytes (a power of two, which divides 2^32) no two held bytes share
//! a slot. The ring is allocated when a connection sees reordering and freed once the gap closes.

use std::collections::VecDeque;

use crate::wire::SeqNumber;

/// Held ranges per connection; a segment that would need more is dropped (the guest resends it).
pub(crate) const MAX_RANGES: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Range {
    start: SeqNumber,
    end: SeqNumber,
    /// When a segment last landed in this range (for the order of SACK blocks).
    touched: u64,
}

#[derive(Debug, Default)]
pub(crate) struct OutOfOrder {
    ring: Vec<u8>,
    /// Disjoint, non-adjacent, sorted by `start`.
    ranges: Vec<Range>,
    clock: u64,
}

/// What became of an out-of-order segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// Its bytes are held (some may have been held already).
    Stored,
    /// Every byte was held already.
    Duplicate,
    /// Too many gaps: not held.
    Full,
}

impl OutOfOrder {
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Holds `data`, which starts at `seq`, after `rcv_nxt` and within the window (the caller
    /// trims it to `[rcv_nxt, window edge)`).
    pub(crate) fn insert(&mut self, seq: SeqNumber, data: &[u8]) -> Held {
        if data.is_empty() {
            return Held::Duplicate;
        }
        let (start, end) = (seq, seq + data.len());
        let covered = self
            .ranges
            .iter()
            .any(|r| !start.is_before(r.start) && !end.is_after(r.end));
        self.clock += 1;
        if covered {
            return Held::Duplicate;
        }
        // The ranges this one touches or overlaps merge into one.
        let first = self.ranges.iter().position(|r| !r.end.is_before(start));
        let first = first.unwrap_or(self.ranges.len());
        let last = self.ranges[first..]
            .iter()
            .take_while(|r| !r.start.is_after(end))
            .count();
        if last == 0 && self.ranges.len() >= MAX_RANGES {
            return Held::Full;
        }
        let cap = super::TO_HOST_CAP;
        if self.ring.is_empty() {
            self.ring = vec![0; cap];
        }
        let at = seq.0 as usize & (cap - 1);
        let head = data.len().min(cap - at);
        self.ring[at..at + head].copy_from_slice(&data[..head]);
        self.ring[..data.len() - head].copy_from_slice(&data[head..]);
        let merged = self.ranges[first..first + last]
            .iter()
            .fold((start, end), |(s, e), r| {
                (if r.start.is_before(s) { r.start } else { s }, e.max(r.end))
            });
        self.ranges.splice(
            first..first + last,
            [Range {
                start: merged.0,
                end: merged.1,
                touched: self.clock,
            }],
        );
        Held::Stored
    }

    /// Moves the bytes that now continue `rcv_nxt` into `out`; returns how many (0 when the gap
    /// is still open). Ranges that fell behind `rcv_nxt` are forgotten.
    pub(crate) fn drain_contiguous(&mut self, rcv_nxt: SeqNumber, out: &mut VecDeque<u8>) -> usize {
        let behind = self
            .ranges
            .iter()
            .take_while(|r| !r.start.is_after(rcv_nxt))
            .count();
        let mut moved = 0;
        for r in self.ranges.drain(..behind) {
            if !r.end.is_after(rcv_nxt) {
                continue;
            }
            let cap = self.ring.len();
            let mut seq = rcv_nxt + moved;
            while seq.is_before(r.end) {
                let at = seq.0 as usize & (cap - 1);
                let n = (r.end - seq).min(cap - at);
                out.extend(&self.ring[at..at + n]);
                seq = seq + n;
                moved += n;
            }
        }
        if self.ranges.is_empty() {
            self.ring = Vec::new();
        }
        moved
    }

    /// Bytes held, and bytes of memory the ring takes.
    pub(crate) fn held(&self) -> usize {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.ring.len()
    }

    /// Up to three SACK blocks, the most recently changed first (RFC 2018 §4), then the others
    /// from the highest.
    pub(crate) fn sack_blocks(&self) -> [Option<(SeqNumber, SeqNumber)>; 3] {
        let mut out = [None; 3];
        let mut order: [Option<&Range>; MAX_RANGES] = [None; MAX_RANGES];
        for (slot, r) in order.iter_mut().zip(self.ranges.iter().rev()) {
            *slot = Some(r);
        }
        if let Some(newest) = (0..self.ranges.len()).max_by_key(|&i| order[i].map(|r| r.touched)) {
            order[..=newest].rotate_right(1);
        }
        for (slot, r) in out.iter_mut().zip(order.iter().flatten()) {
            *slot = Some((r.start, r.end));
        }
        out
    }

    /// Forgets everything (the connection is done with it).
    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.ring = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(o: &OutOfOrder) -> Vec<(u32, u32)> {
        o.ranges.iter().map(|r| (r.start.0, r.end.0)).collect()
    }

    #[test]
    fn the_ring_is_freed_once_the_gap_closes() {
        let mut o = OutOfOrder::default();
        assert_eq!(o.allocated(), 0);
        assert_eq!(o.insert(SeqNumber(120), b"cd"), Held::Stored);
        assert_eq!(o.allocated(), super::super::TO_HOST_CAP);
        assert_eq!(o.held(), 2);
        let mut out = VecDeque::new();
        assert_eq!(o.drain_contiguous(SeqNumber(120), &mut out), 2);
        assert_eq!(o.allocated(), 0);
        assert_eq!(o.held(), 0);
    }

    #[test]
    fn segments_merge_and_drain_in_order() {
        let mut o = OutOfOrder::default();
        assert_eq!(o.insert(SeqNumber(120), b"cd"), Held::Stored);
        assert_eq!(o.insert(SeqNumber(130), b"gh"), Held::Stored);
        assert_eq!(o.insert(SeqNumber(122), b"ef"), Held::Stored);
        assert_eq!(held(&o), vec![(120, 124), (130, 132)]);
        assert_eq!(o.insert(SeqNumber(121), b"d"), Held::Duplicate);
        let mut out = VecDeque::new();
        assert_eq!(o.drain_contiguous(SeqNumber(119), &mut out), 0);
        assert_eq!(o.drain_contiguous(SeqNumber(120), &mut out), 4);
        assert_eq!(out, b"cdef");
        assert_eq!(held(&o), vec![(130, 132)]);
        // In-order data overlapping a held range: only the rest moves.
        out.clear();
        assert_eq!(o.drain_contiguous(SeqNumber(131), &mut out), 1);
        assert_eq!(out, b"h");
        assert!(o.is_empty());
    }

    #[test]
    fn bytes_wrap_around_the_ring_and_the_sequence_space() {
        let mut o = OutOfOrder::default();
        let start = SeqNumber(u32::MAX - 2);
        assert_eq!(o.insert(start, b"wrapped"), Held::Stored);
        let mut out = VecDeque::new();
        assert_eq!(o.drain_contiguous(start, &mut out), 7);
        assert_eq!(out, b"wrapped");
    }

    #[test]
    fn sack_blocks_put_the_latest_first() {
        let mut o = OutOfOrder::default();
        o.insert(SeqNumber(100), b"a");
        o.insert(SeqNumber(200), b"b");
        o.insert(SeqNumber(300), b"c");
        o.insert(SeqNumber(400), b"d");
        o.insert(SeqNumber(201), b"b");
        let b = o.sack_blocks();
        assert_eq!(b[0], Some((SeqNumber(200), SeqNumber(202))));
        assert_eq!(b[1], Some((SeqNumber(400), SeqNumber(401))));
        assert_eq!(b[2], Some((SeqNumber(300), SeqNumber(301))));
    }

    #[test]
    fn too_many_gaps_are_refused() {
        let mut o = OutOfOrder::default();
        for i in 0..MAX_RANGES as u32 {
            assert_eq!(o.insert(SeqNumber(i * 10), b"x"), Held::Stored);
        }
        assert_eq!(o.insert(SeqNumber(1000), b"x"), Held::Full);
        // Growing an existing range still works.
        assert_eq!(o.insert(SeqNumber(1), b"y"), Held::Stored);
    }
}
