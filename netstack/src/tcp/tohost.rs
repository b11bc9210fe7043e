//! Guest data on its way to a host socket, and the buffer the device reads the guest's frames
//! into so that the data need not be copied before it is written.
//!
//! A guest that sends without segmentation offload sends 1448-byte segments, and writing each to
//! its host socket at once would wake the host reader per segment; so the segments of one queue
//! notification go in one write at the end of the batch ([`crate::stack::Stack::flush`]). Until
//! then their bytes must be kept somewhere. When the device read the frame into the stack's
//! [`IngressBuffer`] ([`crate::stack::Stack::ingress_buffer`]) the payload stays where it lies:
//! the connection keeps only where it is (it is *lent*), the buffer keeps those bytes unchanged
//! until the batch ends, and the batch's write gathers them with one `writev`. Only what the
//! host socket does not take then is copied into the connection's own buffer. Each byte of guest
//! data is so copied once in userspace (guest memory → ingress buffer) on its way to the host
//! kernel, as it is with segmentation offload (where a 64 KiB segment is written straight from
//! the frame, `DIRECT_WRITE_MIN`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::ops::Range;
use std::sync::Arc;

/// The ingress buffer's size: a whole TX budget of 1500-byte frames (256 × 1526 bytes) is lent
/// without a spill. Allocated on first use, per shard, and never grown.
pub const INGRESS_CAPACITY: usize = 512 * 1024;

/// The most ranges one write gathers (far below the kernel's `UIO_MAXIOV`); a longer queue is
/// written in several calls.
const MAX_IOVECS: usize = 64;

/// Where the device reads guest frames, a shard's. Bytes before `kept` hold payload lent to
/// connections and stay unchanged until [`IngressBuffer::reset`]; each new frame is read after
/// them. The bytes are shared (`Arc`) only so that a frame being processed can be borrowed from
/// it while the connections read what they were lent before; nothing writes while a frame is
/// borrowed ([`IngressBuffer::room`] takes the bytes mutably).
#[derive(Debug, Default)]
pub(crate) struct IngressBuffer {
    bytes: Option<Arc<[u8]>>,
    kept: usize,
    /// The frame being processed: its offset in the buffer and its address and length in memory,
    /// to tell whether a payload lies in it.
    current: Option<Current>,
}

#[derive(Debug, Clone, Copy)]
struct Current {
    offset: usize,
    addr: usize,
    len: usize,
}

impl IngressBuffer {
    /// Whether a frame of `len` bytes fits after what is kept (if not, the connections copy
    /// what they were lent and the buffer is reset first).
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.kept == 0
            || self
                .bytes
                .as_ref()
                .is_some_and(|b| self.kept + len <= b.len())
    }

    /// `len` bytes to read a frame into, after what is kept (see [`IngressBuffer::fits`]).
    pub(crate) fn room(&mut self, len: usize) -> &mut [u8] {
        let kept = self.kept;
        let need = kept + len;
        if self.bytes.as_ref().is_none_or(|b| b.len() < need) {
            let mut fresh = vec![0u8; INGRESS_CAPACITY.max(need)];
            // Only when a caller did not ask `fits`: what is lent moves along.
            if let Some(old) = &self.bytes {
                fresh[..kept].copy_from_slice(&old[..kept]);
            }
            self.bytes = Some(Arc::from(fresh));
        }
        let bytes = self.bytes.get_or_insert_with(|| Arc::from(Vec::new()));
        // Never shared here (a frame's borrow ends with its processing); were it, the lent
        // bytes would be cloned rather than written under a reader.
        &mut Arc::make_mut(bytes)[kept..need]
    }

    /// The bytes at `range` of the last [`IngressBuffer::room`].
    pub(crate) fn read(&self, range: Range<usize>) -> &[u8] {
        self.lent(self.kept + range.start, range.len())
    }

    /// The buffer holding a frame read into the last [`IngressBuffer::room`] (`range` within
    /// that room), and where the frame is in it; the frame is the one being processed until
    /// [`IngressBuffer::end_frame`].
    pub(crate) fn begin_frame(&mut self, range: Range<usize>) -> Option<(Arc<[u8]>, Range<usize>)> {
        let bytes = Arc::clone(self.bytes.as_ref()?);
        let at = self.kept + range.start..self.kept + range.end;
        let frame = bytes.get(at.clone())?;
        self.current = Some(Current {
            offset: at.start,
            addr: frame.as_ptr() as usize,
            len: frame.len(),
        });
        Some((bytes, at))
    }

    pub(crate) fn end_frame(&mut self) {
        self.current = None;
    }

    /// Where `data` lies in the buffer, if it is part of the frame being processed (a payload
    /// parsed out of it, rather than out of a reassembled datagram or a test's frame).
    pub(crate) fn offset_of(&self, data: &[u8]) -> Option<usize> {
        let c = self.current?;
        // Addresses compared as integers: whether `data` is a sub-slice of the current frame.
        let addr = data.as_ptr() as usize;
        (addr >= c.addr && addr + data.len() <= c.addr + c.len).then(|| c.offset + (addr - c.addr))
    }

    /// The frame being processed had payload lent out: its bytes stay until the reset.
    pub(crate) fn keep_current(&mut self) {
        if let Some(c) = self.current {
            self.kept = self.kept.max(c.offset + c.len);
        }
    }

    fn lent(&self, offset: usize, len: usize) -> &[u8] {
        self.bytes
            .as_ref()
            .and_then(|b| b.get(offset..offset + len))
            .unwrap_or(&[])
    }

    /// Nothing is lent any more (every connection wrote or copied what it was lent): the next
    /// frame is read at the start.
    pub(crate) fn reset(&mut self) {
        self.kept = 0;
    }
}

/// A connection's guest data not yet written to its host socket: ranges lent from the ingress
/// buffer, then bytes copied into its own buffer. Lent ranges always come first (a range is lent
/// only while nothing is copied), so the bytes leave in the order they came.
#[derive(Debug, Default)]
pub(crate) struct ToHost {
    /// (offset, length) in the [`IngressBuffer`], in sequence order.
    lent: Vec<(usize, usize)>,
    lent_len: usize,
    copied: VecDeque<u8>,
}

impl ToHost {
    pub(crate) fn len(&self) -> usize {
        self.lent_len + self.copied.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn has_lent(&self) -> bool {
        !self.lent.is_empty()
    }

    /// Takes `len` bytes at `offset` in the ingress buffer without copying them, if nothing
    /// copied waits before them; false otherwise (the caller copies).
    pub(crate) fn lend(&mut self, offset: usize, len: usize) -> bool {
        if !self.copied.is_empty() {
            return false;
        }
        match self.lent.last_mut() {
            // Adjacent to the previous range (a payload split by the caller): one range.
            Some((o, l)) if *o + *l == offset => *l += len,
            _ => self.lent.push((offset, len)),
        }
        self.lent_len += len;
        true
    }

    /// Appends a copy of `data`.
    pub(crate) fn copy(&mut self, data: &[u8]) {
        self.copied.extend(data);
    }

    /// The copied bytes, where more may be appended (out-of-order data that became in order).
    pub(crate) fn copied_mut(&mut self) -> &mut VecDeque<u8> {
        &mut self.copied
    }

    /// Copies whatever is lent into the connection's own buffer, before what is copied there
    /// already; returns the bytes copied.
    pub(crate) fn spill(&mut self, ingress: &IngressBuffer) -> usize {
        let n = self.lent_len;
        if n == 0 {
            return 0;
        }
        let behind = self.copied.len();
        for &(offset, len) in &self.lent {
            self.copied.extend(ingress.lent(offset, len));
        }
        self.copied.rotate_right(n);
        debug_assert_eq!(self.copied.len(), behind + n);
        self.lent.clear();
        self.lent_len = 0;
        n
    }

    /// The first byte, and drops it (after [`ToHost::spill`]: only copied bytes).
    pub(crate) fn pop_front(&mut self) -> Option<u8> {
        debug_assert!(self.lent.is_empty());
        self.copied.pop_front()
    }

    pub(crate) fn front(&self) -> Option<u8> {
        debug_assert!(self.lent.is_empty());
        self.copied.front().copied()
    }

    pub(crate) fn clear(&mut self) {
        self.lent.clear();
        self.lent_len = 0;
        self.copied.clear();
    }

    /// Hands up to `limit` bytes from the front, as one gather list, to `send`, and drops what it
    /// took.
    pub(crate) fn write(
        &mut self,
        ingress: &IngressBuffer,
        limit: usize,
        send: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let empty = IoSlice::new(&[]);
        let mut iov = [empty; MAX_IOVECS];
        let mut count = 0;
        let mut left = limit;
        let (a, b) = self.copied.as_slices();
        let pieces = self
            .lent
            .iter()
            .map(|&(offset, len)| ingress.lent(offset, len))
            .chain([a, b]);
        for piece in pieces {
            if count == MAX_IOVECS || left == 0 {
                break;
            }
            let piece = &piece[..piece.len().min(left)];
            if piece.is_empty() {
                continue;
            }
            iov[count] = IoSlice::new(piece);
            count += 1;
            left -= piece.len();
        }
        let n = send(&iov[..count])?;
        self.consume(n);
        Ok(n)
    }

    /// Drops `n` bytes from the front.
    fn consume(&mut self, mut n: usize) {
        let mut whole = 0;
        for (offset, len) in self.lent.iter_mut() {
            if n == 0 {
                break;
            }
            let k = n.min(*len);
            *offset += k;
            *len -= k;
            self.lent_len -= k;
            n -= k;
            if *len == 0 {
                whole += 1;
            }
        }
        self.lent.drain(..whole);
        let k = n.min(self.copied.len());
        self.copied.drain(..k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ingress buffer holding `frame` as the frame being processed.
    fn buffer_with(frame: &[u8]) -> (IngressBuffer, Arc<[u8]>, Range<usize>) {
        let mut b = IngressBuffer::default();
        b.room(frame.len()).copy_from_slice(frame);
        let (bytes, at) = b.begin_frame(0..frame.len()).unwrap();
        (b, bytes, at)
    }

    fn written(t: &mut ToHost, b: &IngressBuffer, limit: usize) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut pieces = 0;
        t.write(b, limit, |bufs| {
            pieces = bufs.len();
            bufs.iter().for_each(|s| out.extend_from_slice(s));
            Ok(out.len())
        })
        .unwrap();
        (out, pieces)
    }

    #[test]
    fn only_a_payload_of_the_current_frame_has_an_offset() {
        let (mut b, bytes, at) = buffer_with(b"headerPAYLOAD");
        let frame = &bytes[at];
        assert_eq!(b.offset_of(&frame[6..]), Some(6));
        assert_eq!(b.offset_of(b"PAYLOAD"), None);
        b.end_frame();
        assert_eq!(b.offset_of(&frame[6..]), None);
    }

    #[test]
    fn kept_bytes_stay_and_the_next_frame_goes_after_them() {
        let (mut b, _bytes, _) = buffer_with(b"first");
        b.keep_current();
        b.end_frame();
        drop(_bytes);
        b.room(6).copy_from_slice(b"second");
        assert_eq!(b.read(0..6), b"second");
        assert_eq!(b.lent(0, 5), b"first");
        assert!(b.fits(INGRESS_CAPACITY - 11));
        assert!(!b.fits(INGRESS_CAPACITY - 4));
        b.reset();
        assert!(b.fits(INGRESS_CAPACITY));
    }

    #[test]
    fn lent_ranges_go_before_copied_bytes_and_leave_in_order() {
        let (b, _bytes, _) = buffer_with(b"..abc..def");
        let mut t = ToHost::default();
        assert!(t.lend(2, 3));
        assert!(t.lend(7, 3));
        t.copy(b"ghi");
        // Nothing is lent behind copied bytes.
        assert!(!t.lend(0, 2));
        assert_eq!(t.len(), 9);
        // A limit cuts across a range: the rest stays lent.
        assert_eq!(written(&mut t, &b, 4), (b"abcd".to_vec(), 2));
        assert_eq!(written(&mut t, &b, usize::MAX), (b"efghi".to_vec(), 2));
        assert!(t.is_empty());
    }

    #[test]
    fn a_spill_copies_the_lent_bytes_before_the_copied_ones() {
        let (b, _bytes, _) = buffer_with(b"abcdef");
        let mut t = ToHost::default();
        assert!(t.lend(0, 2));
        assert!(t.lend(2, 1));
        t.copy(b"xyz");
        assert_eq!(t.spill(&b), 3);
        assert!(!t.has_lent());
        assert_eq!(t.front(), Some(b'a'));
        assert_eq!(written(&mut t, &b, usize::MAX).0, b"abcxyz");
    }
}
