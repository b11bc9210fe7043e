//! A stack shard's inbox: guest frames of the shard's flows that arrived on another pair's TX
//! queue while another worker held the shard (docs/architecture.md, "Queue pairs in parallel").
//!
//! Waiting for the shard's lock would cost the arriving worker the rest of the holder's batch
//! (on a 2-core machine often a descheduled holder: ~0.3 ms a wait). Instead the frame is copied
//! here (the only extra copy, and only for crossed frames that find their shard busy) and the
//! next holder of the shard processes it before any frame it brings itself, so a TX queue's
//! frames reach their shard in the order the guest queued them. Bounded in frames and bytes;
//! when full, the worker waits for the lock as before. Buffers are recycled: in a steady state
//! nothing is allocated per frame.

use std::collections::VecDeque;

use netstack::offload::FrameMeta;

/// At most this many frames wait in one shard's inbox.
pub const INBOX_FRAMES: usize = 64;
/// At most this many bytes wait in one shard's inbox (sixteen 64 KiB TSO frames).
pub const INBOX_BYTES: usize = 1 << 20;

/// One waiting frame: its bytes (Ethernet onwards) and offload metadata.
pub struct Mailed {
    pub frame: Vec<u8>,
    pub meta: FrameMeta,
}

#[derive(Default)]
pub struct Inbox {
    frames: VecDeque<Mailed>,
    bytes: usize,
    /// Buffers of frames processed, kept for the next ones.
    spare: Vec<Vec<u8>>,
}

impl Inbox {
    /// Queues a copy of `frame`; false when the inbox is full (the caller waits for the lock).
    pub fn push(&mut self, frame: &[u8], meta: FrameMeta) -> bool {
        if self.frames.len() >= INBOX_FRAMES || self.bytes + frame.len() > INBOX_BYTES {
            return false;
        }
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.bytes += frame.len();
        self.frames.push_back(Mailed { frame: buf, meta });
        true
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Moves every waiting frame to the back of `out`, in order (so that they are processed
    /// without this inbox's lock held).
    pub fn take_all(&mut self, out: &mut VecDeque<Mailed>) {
        self.bytes = 0;
        out.extend(self.frames.drain(..));
    }

    /// Gives back the buffers of processed frames.
    pub fn recycle(&mut self, done: &mut VecDeque<Mailed>) {
        for m in done.drain(..) {
            if self.spare.len() < INBOX_FRAMES {
                self.spare.push(m.frame);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_in_order_within_bounds_and_buffers_are_reused() {
        let mut inbox = Inbox::default();
        for i in 0..INBOX_FRAMES {
            assert!(inbox.push(&[i as u8; 100], FrameMeta::NONE));
        }
        assert!(!inbox.push(&[0; 100], FrameMeta::NONE), "full by frames");
        let mut out = VecDeque::new();
        inbox.take_all(&mut out);
        assert!(inbox.is_empty());
        let firsts: Vec<u8> = out.iter().map(|m| m.frame[0]).collect();
        assert_eq!(firsts, (0..INBOX_FRAMES as u8).collect::<Vec<_>>());
        let addresses: Vec<*const u8> = out.iter().map(|m| m.frame.as_ptr()).collect();
        inbox.recycle(&mut out);
        assert!(out.is_empty());
        // The next frame goes into one of those buffers.
        assert!(inbox.push(&[9; 100], FrameMeta::NONE));
        inbox.take_all(&mut out);
        assert!(addresses.contains(&out[0].frame.as_ptr()));
        inbox.recycle(&mut out);
        // Bytes bound: sixteen 64 KiB frames, not a seventeenth.
        for _ in 0..16 {
            assert!(inbox.push(&[7; 65536], FrameMeta::NONE));
        }
        assert!(!inbox.push(&[7; 1], FrameMeta::NONE), "full by bytes");
        inbox.take_all(&mut out);
        inbox.recycle(&mut out);
        assert!(
            inbox.push(&[7; 65536], FrameMeta::NONE),
            "room again once taken"
        );
    }
}
