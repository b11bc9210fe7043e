//! virtio-net definitions the device needs: offered features, the negotiated configuration, and the
//! per-packet header (VIRTIO 1.2 §5.1.6).

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU, VIRTIO_NET_HDR_GSO_NONE,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// The virtio features virtgate offers. No offloads yet: the guest sends and expects complete frames
/// with valid checksums. QEMU keeps MAC, STATUS and the control queue to itself.
pub fn offered_features() -> u64 {
    (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_NET_F_MRG_RXBUF)
        | (1 << VIRTIO_NET_F_MTU)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// The vhost-user protocol features virtgate offers (REPLY_ACK is added by the vhost crate).
pub fn offered_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::MTU
}

/// What the acked features mean for the datapath.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Bytes of `virtio_net_hdr` before every frame.
    pub header_len: usize,
    /// RX frames may span several descriptor chains (`num_buffers`).
    pub mergeable_rx: bool,
    pub event_idx: bool,
}

impl Negotiated {
    /// One pure function from the acked feature bits to the datapath configuration.
    pub fn from_features(acked: u64) -> Self {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        let mergeable_rx = has(VIRTIO_NET_F_MRG_RXBUF);
        Negotiated {
            // VIRTIO 1.2 §5.1.6: the header is `virtio_net_hdr_v1` (12 bytes, with num_buffers)
            // with VERSION_1 or MRG_RXBUF, the legacy 10-byte header otherwise.
            header_len: if has(VIRTIO_F_VERSION_1) || mergeable_rx {
                HEADER_LEN_V1
            } else {
                HEADER_LEN_LEGACY
            },
            mergeable_rx,
            event_idx: has(VIRTIO_RING_F_EVENT_IDX),
        }
    }
}

impl Default for Negotiated {
    fn default() -> Self {
        Negotiated::from_features(0)
    }
}

pub const HEADER_LEN_V1: usize = 12;
pub const HEADER_LEN_LEGACY: usize = 10;

mod field {
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const NUM_BUFFERS: core::ops::Range<usize> = 10..12;
}

/// The fields of a guest's TX header that the device checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxHeader {
    pub flags: u8,
    pub gso_type: u8,
}

impl TxHeader {
    pub fn parse(hdr: &[u8]) -> Self {
        TxHeader {
            flags: hdr[field::FLAGS],
            gso_type: hdr[field::GSO_TYPE],
        }
    }

    /// Whether the frame needs segmentation (GSO), which virtgate has not offered.
    pub fn is_gso(&self) -> bool {
        u32::from(self.gso_type) != VIRTIO_NET_HDR_GSO_NONE
    }
}

/// Writes an RX header for a complete frame: no checksum or GSO metadata, `num_buffers` as given
/// (only present in the 12-byte header).
pub fn write_rx_header(hdr: &mut [u8], num_buffers: u16) {
    hdr.fill(0);
    if hdr.len() >= HEADER_LEN_V1 {
        hdr[field::NUM_BUFFERS].copy_from_slice(&num_buffers.to_le_bytes());
    }
}

/// The offset of `num_buffers` in the header.
pub const NUM_BUFFERS_OFFSET: usize = field::NUM_BUFFERS.start;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_is_a_pure_function_of_the_bits() {
        let qemu_acked = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_NET_F_MRG_RXBUF)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        let n = Negotiated::from_features(qemu_acked);
        assert_eq!(n.header_len, 12);
        assert!(n.mergeable_rx && n.event_idx);

        let legacy = Negotiated::from_features(0);
        assert_eq!(legacy.header_len, 10);
        assert!(!legacy.mergeable_rx && !legacy.event_idx);

        // VERSION_1 alone still uses the 12-byte header.
        let v1 = Negotiated::from_features(1 << VIRTIO_F_VERSION_1);
        assert_eq!(v1.header_len, 12);
        assert!(!v1.mergeable_rx);
    }

    #[test]
    fn offered_features_have_no_offloads() {
        let f = offered_features();
        assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
        // CSUM (0), GUEST_CSUM (1), HOST_TSO4 (11), GUEST_TSO4 (7) are not offered.
        for bit in [0, 1, 7, 11] {
            assert_eq!(f & (1 << bit), 0, "bit {bit}");
        }
    }

    #[test]
    fn rx_header_layout() {
        let mut h = [0xffu8; 12];
        write_rx_header(&mut h, 3);
        assert_eq!(h, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0]);
        let mut legacy = [0xffu8; 10];
        write_rx_header(&mut legacy, 3);
        assert_eq!(legacy, [0; 10]);
        assert!(!TxHeader::parse(&h).is_gso());
        assert!(TxHeader::parse(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_gso());
    }
}
