//! Frames waiting on virtgate's side of the link: delayed, jittered, rate-limited. A guest's TX
//! chain is returned as soon as it is read (as a NIC returns its descriptors once the frame is in
//! its FIFO), and a frame to the guest leaves the stack's queue; either way its bytes wait here in
//! a recycled buffer until their release time, ordered by it (netem's time-ordered queue), ties in
//! arrival order.
//!
//! Bounds: at most [`MAX_HELD_FRAMES`] frames and [`MAX_HELD_BYTES`] bytes of buffers over all
//! lines of the device; a copy beyond them is dropped and counted (`line_drops` of its rule).
//! Buffers come in two sizes (a 1500-byte frame's and the largest frame's), are taken from a pool
//! and returned to it, so a steady impaired flow allocates nothing; the pool is freed when the
//! lines are empty and no rule is installed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use netstack::offload::FrameMeta;
use netstack::Instant;

use super::spec::LinkDirection;

/// The most frames waiting in all lines of a device.
pub const MAX_HELD_FRAMES: usize = 16_384;
/// The most bytes of buffers the lines of a device may hold.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// The size of a small buffer: any frame of a 1500-byte MTU, with a VLAN tag.
const SMALL: usize = 2048;

/// A frame waiting for its release time.
#[derive(Debug)]
pub struct Held {
    pub release: Instant,
    seq: u64,
    pub frame: Vec<u8>,
    pub meta: FrameMeta,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.release, self.seq) == (other.release, other.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.release, self.seq).cmp(&(other.release, other.seq))
    }
}

/// The lines of every queue pair and direction, sharing one pool of buffers and one bound.
#[derive(Debug)]
pub struct DelayLines {
    /// Per queue pair: [to the guest, from the guest].
    lines: Vec<[BinaryHeap<Reverse<Held>>; 2]>,
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    large_size: usize,
    /// Bytes of buffers allocated (in lines and in the pool).
    allocated: usize,
    held: usize,
    seq: u64,
}

fn side(dir: LinkDirection) -> usize {
    match dir {
        LinkDirection::ToGuest => 0,
        LinkDirection::FromGuest => 1,
    }
}

impl DelayLines {
    /// Lines for `pairs` queue pairs whose frames are at most `max_frame` bytes.
    pub fn new(pairs: usize, max_frame: usize) -> DelayLines {
        DelayLines {
            lines: (0..pairs)
                .map(|_| [BinaryHeap::new(), BinaryHeap::new()])
                .collect(),
            small: Vec::new(),
            large: Vec::new(),
            large_size: max_frame.max(SMALL),
            allocated: 0,
            held: 0,
            seq: 0,
        }
    }

    /// Frames waiting in all lines.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Frames waiting in one direction, all pairs.
    pub fn held_in(&self, dir: LinkDirection) -> usize {
        self.lines.iter().map(|l| l[side(dir)].len()).sum()
    }

    /// Bytes of buffers allocated.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// A buffer holding `frame`, from the pool or newly allocated within the bound.
    fn buffer(&mut self, len: usize) -> Option<Vec<u8>> {
        let (pool, size) = if len <= SMALL {
            (&mut self.small, SMALL)
        } else if len <= self.large_size {
            (&mut self.large, self.large_size)
        } else {
            return None;
        };
        if let Some(b) = pool.pop() {
            return Some(b);
        }
        if self.allocated + size > MAX_HELD_BYTES {
            return None;
        }
        self.allocated += size;
        Some(Vec::with_capacity(size))
    }

    /// Gives a buffer back to the pool.
    pub fn recycle(&mut self, mut b: Vec<u8>) {
        b.clear();
        if b.capacity() <= SMALL {
            self.small.push(b);
        } else {
            self.large.push(b);
        }
    }

    /// Lets a copy of `frame` (written by `fill`, which may change it) wait on `pair`'s line until
    /// `release`. False when the lines are full: the copy is dropped.
    pub fn hold(
        &mut self,
        pair: usize,
        dir: LinkDirection,
        release: Instant,
        len: usize,
        meta: FrameMeta,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        if self.held >= MAX_HELD_FRAMES || pair >= self.lines.len() {
            return false;
        }
        let Some(mut frame) = self.buffer(len) else {
            return false;
        };
        fill(&mut frame);
        self.seq += 1;
        self.held += 1;
        self.lines[pair][side(dir)].push(Reverse(Held {
            release,
            seq: self.seq,
            frame,
            meta,
        }));
        true
    }

    /// When the next frame on `pair`'s line in `dir` is due.
    pub fn next_release(&self, pair: usize, dir: LinkDirection) -> Option<Instant> {
        self.lines
            .get(pair)?
            .get(side(dir))?
            .peek()
            .map(|Reverse(h)| h.release)
    }

    /// The next frame due at `now` on `pair`'s line in `dir`, taken off the line. Give its
    /// buffer back with [`DelayLines::recycle`], or the frame back with [`DelayLines::put_back`].
    pub fn take_due(&mut self, pair: usize, dir: LinkDirection, now: Instant) -> Option<Held> {
        let line = self.lines.get_mut(pair)?.get_mut(side(dir))?;
        if line.peek().is_none_or(|Reverse(h)| h.release > now) {
            return None;
        }
        let Reverse(h) = line.pop()?;
        self.held -= 1;
        Some(h)
    }

    /// Returns a frame taken by [`DelayLines::take_due`] that could not go (the guest had no
    /// buffers): it keeps its place at the head of the line.
    pub fn put_back(&mut self, pair: usize, dir: LinkDirection, h: Held) {
        self.held += 1;
        self.lines[pair][side(dir)].push(Reverse(h));
    }

    /// Frees the pool when nothing waits (after the rules were cleared).
    pub fn release_memory(&mut self) {
        if self.held == 0 {
            self.small = Vec::new();
            self.large = Vec::new();
            self.allocated = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_leave_in_release_order_and_buffers_are_reused() {
        let mut l = DelayLines::new(2, 9000);
        let t = Instant::from_millis;
        for (i, at) in [30u64, 10, 20, 10].into_iter().enumerate() {
            assert!(l.hold(
                1,
                LinkDirection::ToGuest,
                t(at),
                100,
                FrameMeta::NONE,
                |b| { b.extend_from_slice(&[i as u8; 100]) }
            ));
        }
        assert_eq!(l.next_release(1, LinkDirection::ToGuest), Some(t(10)));
        assert_eq!(l.next_release(0, LinkDirection::ToGuest), None);
        assert!(l.take_due(1, LinkDirection::ToGuest, t(5)).is_none());
        let order: Vec<u8> = std::iter::from_fn(|| {
            let h = l.take_due(1, LinkDirection::ToGuest, t(100))?;
            let first = h.frame[0];
            l.recycle(h.frame);
            Some(first)
        })
        .collect();
        // Ties keep their arrival order.
        assert_eq!(order, vec![1, 3, 2, 0]);
        let allocated = l.allocated();
        assert!(l.hold(
            0,
            LinkDirection::FromGuest,
            t(1),
            1500,
            FrameMeta::NONE,
            |b| { b.resize(1500, 0) }
        ));
        assert_eq!(l.allocated(), allocated, "a pooled buffer was reused");
    }

    #[test]
    fn the_bound_drops_rather_than_grows() {
        let mut l = DelayLines::new(1, 65549);
        let mut n = 0;
        while l.hold(
            0,
            LinkDirection::ToGuest,
            Instant::ZERO,
            65549,
            FrameMeta::NONE,
            |b| b.resize(65549, 0),
        ) {
            n += 1;
            assert!(n <= MAX_HELD_FRAMES);
        }
        assert_eq!(n, MAX_HELD_BYTES / 65549);
        assert!(l.allocated() <= MAX_HELD_BYTES);
        assert!(!l.hold(
            0,
            LinkDirection::ToGuest,
            Instant::ZERO,
            70000,
            FrameMeta::NONE,
            |_| {}
        ));
    }
}
