//! The bytes of one connection on their way to the guest, from the first unacknowledged one on: a
//! ring the host socket reads straight into, and that segments are copied out of (one or two
//! slices where the data wraps). No byte is moved inside the buffer: an acknowledgement only
//! advances the start.
//!
//! The ring starts small and doubles up to its capacity as the connection needs it (most
//! connections carry little), re-laying the data out in order when it grows.

/// A byte ring with a capacity limit.
#[derive(Debug)]
pub(crate) struct SendBuffer {
    storage: Vec<u8>,
    /// Index of the first byte.
    start: usize,
    len: usize,
    limit: usize,
}

/// The size a ring starts at, once it holds anything.
const INITIAL: usize = 16 * 1024;

impl SendBuffer {
    /// An empty buffer that will hold at most `limit` bytes (allocated as needed).
    pub(crate) fn new(limit: usize) -> Self {
        SendBuffer {
            storage: Vec::new(),
            start: 0,
            len: 0,
            limit,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room left under the limit.
    pub(crate) fn room(&self) -> usize {
        self.limit - self.len
    }

    /// Room already allocated: what a read can fill without growing the ring.
    pub(crate) fn allocated_room(&self) -> usize {
        self.storage.len() - self.len
    }

    /// Drops the first `n` bytes (acknowledged by the guest).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.start = if self.len == 0 {
            0
        } else {
            (self.start + n) % self.storage.len()
        };
        if self.len == 0 && self.storage.len() > INITIAL {
            // All acknowledged: an idle connection keeps no more than a small ring.
            self.storage = Vec::new();
        }
    }

    /// Bytes of memory the ring holds.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.storage.len()
    }

    /// Free space right after the data, contiguous, at most `want` bytes (fewer where the ring
    /// wraps; empty when the limit is reached): fill it, then [`SendBuffer::commit`] what was
    /// written.
    pub(crate) fn free_mut(&mut self, want: usize) -> &mut [u8] {
        let want = want.min(self.room());
        if self.storage.len() - self.len < want {
            self.grow(self.len + want);
        }
        let cap = self.storage.len();
        if cap == 0 {
            return &mut [];
        }
        let tail = (self.start + self.len) % cap;
        // Up to the physical end, or up to the start when the free space is in the middle.
        let end = if tail >= self.start && self.len < cap {
            cap
        } else {
            self.start
        };
        let n = want.min(end - tail);
        &mut self.storage[tail..tail + n]
    }

    /// Makes `n` bytes written into [`SendBuffer::free_mut`]'s slice part of the data.
    pub(crate) fn commit(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.storage.len());
        self.len += n;
    }

    /// Appends `data` (as much as fits); returns how much was taken.
    #[cfg(test)]
    pub(crate) fn extend(&mut self, mut data: &[u8]) -> usize {
        let mut taken = 0;
        while !data.is_empty() {
            let free = self.free_mut(data.len());
            let n = free.len();
            if n == 0 {
                break;
            }
            free.copy_from_slice(&data[..n]);
            self.commit(n);
            data = &data[n..];
            taken += n;
        }
        taken
    }

    /// The bytes `offset..offset + len` of the data, as one slice or two (where the ring wraps).
    pub(crate) fn slices(&self, offset: usize, len: usize) -> (&[u8], &[u8]) {
        debug_assert!(offset + len <= self.len);
        if len == 0 {
            return (&[], &[]);
        }
        let cap = self.storage.len();
        let from = (self.start + offset) % cap;
        let first = len.min(cap - from);
        (
            &self.storage[from..from + first],
            &self.storage[..len - first],
        )
    }

    /// Grows the storage to hold at least `need` bytes (doubling, up to the limit), with the data
    /// laid out from index 0.
    fn grow(&mut self, need: usize) {
        let mut cap = self.storage.len().max(INITIAL);
        while cap < need {
            cap *= 2;
        }
        let cap = cap.min(self.limit.max(need));
        let mut storage = vec![0u8; cap];
        let (a, b) = self.slices(0, self.len);
        storage[..a.len()].copy_from_slice(a);
        storage[a.len()..a.len() + b.len()].copy_from_slice(b);
        self.storage = storage;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(b: &SendBuffer, offset: usize, len: usize) -> Vec<u8> {
        let (x, y) = b.slices(offset, len);
        [x, y].concat()
    }

    #[test]
    fn bytes_come_out_in_order_across_wraps_and_growth() {
        let mut b = SendBuffer::new(64 * 1024);
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        // Append and consume in uneven steps, far more than the capacity in total.
        for round in 0..2000u32 {
            let add = (round * 7919 % 9000) as usize;
            let chunk: Vec<u8> = (0..add).map(|i| (next_in as usize + i) as u8).collect();
            let taken = b.extend(&chunk);
            next_in += taken as u32;
            assert!(b.len() <= 64 * 1024);
            let peek = b.len().min(3000);
            let expected: Vec<u8> = (0..peek).map(|i| (next_out as usize + i) as u8).collect();
            assert_eq!(collect(&b, 0, peek), expected, "round {round}");
            let drop = (round * 104_729 % 7000) as usize;
            let drop = drop.min(b.len());
            b.consume(drop);
            next_out += drop as u32;
        }
        assert_eq!(next_in - next_out, b.len() as u32);
    }

    #[test]
    fn free_space_stops_at_the_wrap_and_at_the_limit() {
        let mut b = SendBuffer::new(INITIAL);
        assert_eq!(b.extend(&vec![1u8; INITIAL]), INITIAL);
        assert!(b.free_mut(10).is_empty(), "full");
        b.consume(100);
        // The only free space is the 100 bytes at the physical start.
        let free = b.free_mut(1000);
        assert_eq!(free.len(), 100);
        free.fill(2);
        b.commit(100);
        let (x, y) = b.slices(INITIAL - 150, 150);
        assert_eq!((x.len(), y.len()), (50, 100));
        assert!(y.iter().all(|&v| v == 2));
        // Nothing is allocated until something is written.
        assert!(SendBuffer::new(1 << 20).storage.is_empty());
    }

    #[test]
    fn allocated_room_is_what_a_read_fills_without_growing() {
        let mut b = SendBuffer::new(1 << 20);
        assert_eq!(b.allocated_room(), 0, "nothing allocated yet");
        b.extend(&[1u8; 100]);
        assert_eq!(b.allocated_room(), INITIAL - 100);
        // Asking for the allocated room does not grow the ring; asking for more does (doubling).
        let n = b.free_mut(b.allocated_room()).len();
        b.commit(n);
        assert_eq!((b.allocated(), b.allocated_room()), (INITIAL, 0));
        b.free_mut(1);
        assert_eq!(b.allocated(), 2 * INITIAL);
        assert_eq!(b.allocated_room(), INITIAL);
        b.consume(INITIAL - 1);
        assert_eq!(b.allocated_room(), 2 * INITIAL - 1);
    }

    #[test]
    fn a_grown_ring_is_released_once_everything_is_acknowledged() {
        let mut b = SendBuffer::new(256 * 1024);
        assert_eq!(b.extend(&vec![1u8; 100_000]), 100_000);
        assert!(b.allocated() >= 100_000);
        b.consume(99_999);
        assert!(b.allocated() >= 100_000, "one byte still held");
        b.consume(1);
        assert_eq!(b.allocated(), 0);
        // And it serves again from nothing.
        assert_eq!(b.extend(b"again"), 5);
        assert_eq!(collect(&b, 0, 5), b"again");
    }
}
