//! What a NIC's offloads mean to the stack: per-frame metadata in both directions (a partial
//! checksum, a segmentation request) and the offloads the guest's driver accepted.
//!
//! The vocabulary is virtio-net's (VIRTIO 1.2 §5.1.6.2), which is Linux's `CHECKSUM_PARTIAL` and
//! GSO. The stack uses them in two ways:
//! - From the guest: a frame whose TCP/UDP checksum holds only the pseudo-header sum is trusted as it
//!   is (the bytes come straight from the guest's memory; nothing on the way could corrupt them), and
//!   a TCP segment larger than the MSS is taken whole — the stack's TCP does not care how the guest
//!   cut its byte stream. A UDP segmentation request (USO) is split into its datagrams on the way to
//!   the host.
//! - To the guest: when its driver accepts them, TCP and UDP leave with partial checksums (the guest
//!   treats them as verified, or completes them if it forwards the packet) and TCP sends up to 64 KiB
//!   per segment, which the guest either splits itself or, far more often, receives whole.

use crate::wire::checksum;

/// A checksum left for the receiver of the frame to complete: the 16-bit field at
/// `start + offset` holds the folded pseudo-header sum, and the checksum covers `start..` to the end
/// of the frame (VIRTIO_NET_HDR_F_NEEDS_CSUM, `csum_start`, `csum_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialChecksum {
    /// Offset in the frame where checksumming starts (the transport header).
    pub start: u16,
    /// Offset of the checksum field from `start` (16 for TCP, 6 for UDP).
    pub offset: u16,
}

/// TCP's checksum field, from the start of its header.
pub const TCP_CHECKSUM_OFFSET: u16 = 16;
/// UDP's checksum field, from the start of its header.
pub const UDP_CHECKSUM_OFFSET: u16 = 6;

impl PartialChecksum {
    /// Whether the checksum field lies inside a frame of `len` bytes.
    pub fn fits(&self, len: usize) -> bool {
        usize::from(self.start) + usize::from(self.offset) + 2 <= len
    }

    /// Completes the checksum in `frame`: the ones' complement sum from `start` to the end, with
    /// the pseudo-header sum already in the field (RFC 1071), stored in the field. False when the
    /// field lies outside the frame (nothing is changed).
    pub fn complete(&self, frame: &mut [u8]) -> bool {
        self.complete_parts(frame, [&[], &[]])
    }

    /// [`PartialChecksum::complete`] for a frame whose payload follows `head` in two more
    /// pieces (see [`crate::stack::FrameParts`]); the field is in `head`.
    pub fn complete_parts(&self, head: &mut [u8], payload: [&[u8]; 2]) -> bool {
        if !self.fits(head.len()) {
            return false;
        }
        let start = usize::from(self.start);
        let at = start + usize::from(self.offset);
        let pieces = [&head[start..], payload[0], payload[1]];
        let sum = checksum::finish(checksum::accumulate_pieces(0, &pieces));
        // RFC 768: a UDP checksum that computes to zero is sent as all ones; for TCP the two are
        // the same value in ones' complement arithmetic.
        let sum = if sum == 0 { 0xffff } else { sum };
        head[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        true
    }
}

/// Which segmentation a large frame asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4 (TSO4).
    Tcpv4,
    /// TCP over IPv6 (TSO6).
    Tcpv6,
    /// UDP datagrams of `segment_size` payload bytes each (USO, either family).
    Udp,
}

/// A frame carrying several segments' worth of payload behind one set of headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    /// Payload bytes per segment (the MSS for TCP).
    pub segment_size: u16,
    /// Bytes of headers (Ethernet, IP, transport) in front of the payload.
    pub header_len: u16,
}

/// The metadata travelling with one frame: the fields of a virtio-net header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameMeta {
    pub checksum: Option<PartialChecksum>,
    pub gso: Option<Gso>,
}

impl FrameMeta {
    pub const NONE: FrameMeta = FrameMeta {
        checksum: None,
        gso: None,
    };
}

/// What the guest's driver accepts in frames to it (the negotiated GUEST_* features).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestOffloads {
    /// TCP and UDP checksums may be left partial (GUEST_CSUM).
    pub partial_checksum: bool,
    /// TCP segments over IPv4 may be larger than the MSS (GUEST_TSO4; needs `partial_checksum`).
    pub tso4: bool,
    /// TCP segments over IPv6 may be larger than the MSS (GUEST_TSO6; needs `partial_checksum`).
    pub tso6: bool,
}

/// What a packet's builder left to the NIC, relative to the IP payload; the dispatch functions turn
/// it into a [`FrameMeta`], or undo it where the frame cannot carry it (fragments, a frame parked
/// for neighbour resolution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PayloadOffload {
    /// The transport checksum is partial; its field lies this many bytes into the payload.
    pub(crate) checksum_offset: Option<u16>,
    /// The payload is several segments: their kind and size, and the transport header's length.
    pub(crate) gso: Option<(GsoKind, u16, u16)>,
    /// The builder writes every byte of the payload (a TCP segment), so its buffer need not be
    /// zeroed first.
    pub(crate) fills_payload: bool,
}

impl PayloadOffload {
    pub(crate) const NONE: PayloadOffload = PayloadOffload {
        checksum_offset: None,
        gso: None,
        fills_payload: false,
    };

    /// The frame's metadata when the IP payload starts `payload_start` bytes into the frame.
    pub(crate) fn frame_meta(&self, payload_start: usize) -> FrameMeta {
        let start = payload_start as u16;
        FrameMeta {
            checksum: self
                .checksum_offset
                .map(|offset| PartialChecksum { start, offset }),
            gso: self.gso.map(|(kind, segment_size, l4_len)| Gso {
                kind,
                segment_size,
                header_len: start + l4_len,
            }),
        }
    }

    /// Completes a partial checksum in the IP payload, for a packet that must leave whole.
    pub(crate) fn complete(&self, payload: &mut [u8]) {
        if let Some(offset) = self.checksum_offset {
            PartialChecksum { start: 0, offset }.complete(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Address, TcpPacket};

    #[test]
    fn completing_a_partial_checksum_gives_the_full_one() {
        // A TCP segment with a correct checksum, then the same with only the pseudo-header sum.
        let (src, dst) = (Ipv4Address([10, 0, 2, 15]), Ipv4Address([10, 0, 2, 2]));
        let mut seg = vec![0u8; 20 + 1001];
        seg[12] = 5 << 4;
        for (i, b) in seg[20..].iter_mut().enumerate() {
            *b = (i * 7) as u8;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, 6, seg.len() as u32);
        let full = checksum::finish(checksum::accumulate(pseudo, &seg));
        seg[16..18].copy_from_slice(&full.to_be_bytes());
        assert!(TcpPacket::new_checked(&seg[..])
            .unwrap()
            .verify_checksum_v4(src, dst));

        let mut frame = vec![0u8; 34];
        frame.extend_from_slice(&seg);
        let folded = !checksum::finish(pseudo);
        frame[34 + 16..34 + 18].copy_from_slice(&folded.to_be_bytes());
        let c = PartialChecksum {
            start: 34,
            offset: TCP_CHECKSUM_OFFSET,
        };
        assert!(c.complete(&mut frame));
        assert_eq!(&frame[34..], &seg[..]);

        // A field outside the frame is refused, and nothing changes.
        let mut short = frame[..40].to_vec();
        let before = short.clone();
        assert!(!c.complete(&mut short));
        assert_eq!(short, before);
    }
}
