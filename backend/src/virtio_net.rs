//! virtio-net definitions the device needs: offered features, the negotiated configuration, and the
//! per-packet header (VIRTIO 1.2 §5.1.6).

use netstack::offload::{FrameMeta, Gso, GsoKind, GuestOffloads, PartialChecksum};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_HOST_USO, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_ECN, VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// The offloads a user allows (`--offloads`). Each names features in both directions:
/// - `csum`: CSUM (the guest may leave TCP/UDP checksums to us) and GUEST_CSUM (we may leave them
///   to the guest);
/// - `tso`: HOST_TSO4/6 (the guest may send TCP segments up to 64 KiB) and GUEST_TSO4/6 (we may);
///   needs `csum`, as in the VIRTIO spec (§5.1.3.1);
/// - `ecn`: HOST_ECN and GUEST_ECN (such segments may carry CWR); needs `tso`;
/// - `uso`: HOST_USO (the guest may send UDP segmentation requests); needs `csum`. GUEST_USO4/6
///   are not offered: datagrams from host sockets come one at a time, there is nothing to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offloads {
    pub csum: bool,
    pub tso: bool,
    pub ecn: bool,
    pub uso: bool,
}

impl Offloads {
    pub const ALL: Offloads = Offloads {
        csum: true,
        tso: true,
        ecn: true,
        uso: true,
    };
    pub const NONE: Offloads = Offloads {
        csum: false,
        tso: false,
        ecn: false,
        uso: false,
    };

    /// Parses `--offloads`: `all`, `none`, or a comma-separated list of `csum`, `tso`, `ecn`, `uso`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => return Ok(Offloads::ALL),
            "none" | "" => return Ok(Offloads::NONE),
            _ => {}
        }
        let mut o = Offloads::NONE;
        for name in s.split(',').map(str::trim) {
            match name {
                "csum" => o.csum = true,
                "tso" => o.tso = true,
                "ecn" => o.ecn = true,
                "uso" => o.uso = true,
                other => {
                    return Err(format!(
                        "unknown offload {other:?} (expected csum, tso, ecn, uso, all or none)"
                    ))
                }
            }
        }
        if (o.tso || o.uso) && !o.csum {
            return Err(
                "tso and uso need csum (segments are checksummed by whoever splits them)".into(),
            );
        }
        if o.ecn && !o.tso {
            return Err("ecn needs tso (it marks segmentation requests)".into());
        }
        Ok(o)
    }

    /// The virtio feature bits these offloads stand for.
    pub fn feature_bits(&self) -> u64 {
        let bits = |on: bool, list: &[u32]| {
            if on {
                list.iter().fold(0u64, |acc, b| acc | (1u64 << b))
            } else {
                0
            }
        };
        bits(self.csum, &[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM])
            | bits(
                self.tso,
                &[
                    VIRTIO_NET_F_HOST_TSO4,
                    VIRTIO_NET_F_HOST_TSO6,
                    VIRTIO_NET_F_GUEST_TSO4,
                    VIRTIO_NET_F_GUEST_TSO6,
                ],
            )
            | bits(self.ecn, &[VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_GUEST_ECN])
            | bits(self.uso, &[VIRTIO_NET_F_HOST_USO])
    }
}

impl std::fmt::Display for Offloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [
            (self.csum, "csum"),
            (self.tso, "tso"),
            (self.ecn, "ecn"),
            (self.uso, "uso"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// The virtio features virtgate offers: the rings' features, MTU, mergeable RX buffers, the
/// offloads allowed, and MQ with more than one queue pair (QEMU passes MQ to the guest only when
/// the backend offers it; the control queue that carries the guest's choice stays QEMU's). QEMU
/// keeps MAC, STATUS and the control queue to itself.
pub fn offered_features(offloads: Offloads, queue_pairs: usize) -> u64 {
    let mq = if queue_pairs > 1 {
        1 << VIRTIO_NET_F_MQ
    } else {
        0
    };
    mq | (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_NET_F_MRG_RXBUF)
        | (1 << VIRTIO_NET_F_MTU)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | offloads.feature_bits()
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
    /// The guest may send partial checksums (CSUM).
    pub csum: bool,
    /// The guest may send TCP segmentation requests over IPv4/IPv6 (HOST_TSO4/6), with CWR
    /// (HOST_ECN), and UDP ones (HOST_USO).
    pub host_tso4: bool,
    pub host_tso6: bool,
    pub host_ecn: bool,
    pub host_uso: bool,
    /// What the guest accepts from us (GUEST_CSUM, GUEST_TSO4/6).
    pub guest: GuestOffloads,
}

impl Negotiated {
    /// One pure function from the acked feature bits to the datapath configuration.
    pub fn from_features(acked: u64) -> Self {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        let mergeable_rx = has(VIRTIO_NET_F_MRG_RXBUF);
        let guest_csum = has(VIRTIO_NET_F_GUEST_CSUM);
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
            csum: has(VIRTIO_NET_F_CSUM),
            host_tso4: has(VIRTIO_NET_F_HOST_TSO4),
            host_tso6: has(VIRTIO_NET_F_HOST_TSO6),
            host_ecn: has(VIRTIO_NET_F_HOST_ECN),
            host_uso: has(VIRTIO_NET_F_HOST_USO),
            // GUEST_TSO4/6 require GUEST_CSUM (VIRTIO 1.2 §5.1.3.1): segmentation requests always
            // carry a partial checksum.
            guest: GuestOffloads {
                partial_checksum: guest_csum,
                tso4: guest_csum && has(VIRTIO_NET_F_GUEST_TSO4),
                tso6: guest_csum && has(VIRTIO_NET_F_GUEST_TSO6),
            },
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
    pub const HDR_LEN: core::ops::Range<usize> = 2..4;
    pub const GSO_SIZE: core::ops::Range<usize> = 4..6;
    pub const CSUM_START: core::ops::Range<usize> = 6..8;
    pub const CSUM_OFFSET: core::ops::Range<usize> = 8..10;
    pub const NUM_BUFFERS: core::ops::Range<usize> = 10..12;
}

fn le16(hdr: &[u8], r: core::ops::Range<usize>) -> u16 {
    u16::from_le_bytes([hdr[r.start], hdr[r.start + 1]])
}

/// The fields of a guest's TX header (VIRTIO 1.2 §5.1.6.2; little-endian with VERSION_1, and
/// legacy guests on x86 are little-endian too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxHeader {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a TX header cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// An offload the device did not negotiate (or UFO, which it never offers).
    NotNegotiated,
    /// The checksum field lies outside the frame, or a segmentation request has no segment size.
    Inconsistent,
}

impl TxHeader {
    pub fn parse(hdr: &[u8]) -> Self {
        TxHeader {
            flags: hdr[field::FLAGS],
            gso_type: hdr[field::GSO_TYPE],
            hdr_len: le16(hdr, field::HDR_LEN),
            gso_size: le16(hdr, field::GSO_SIZE),
            csum_start: le16(hdr, field::CSUM_START),
            csum_offset: le16(hdr, field::CSUM_OFFSET),
        }
    }

    /// What the header asks of the device, checked against the negotiated features and the
    /// frame's length.
    pub fn meta(&self, n: &Negotiated, frame_len: usize) -> Result<FrameMeta, OffloadError> {
        let checksum = if u32::from(self.flags) & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            if !n.csum {
                return Err(OffloadError::NotNegotiated);
            }
            let c = PartialChecksum {
                start: self.csum_start,
                offset: self.csum_offset,
            };
            if !c.fits(frame_len) {
                return Err(OffloadError::Inconsistent);
            }
            Some(c)
        } else {
            None
        };
        let ecn = u32::from(self.gso_type) & VIRTIO_NET_HDR_GSO_ECN != 0;
        let kind = match u32::from(self.gso_type) & !VIRTIO_NET_HDR_GSO_ECN {
            VIRTIO_NET_HDR_GSO_NONE if !ecn => None,
            VIRTIO_NET_HDR_GSO_TCPV4 if n.host_tso4 => Some(GsoKind::Tcpv4),
            VIRTIO_NET_HDR_GSO_TCPV6 if n.host_tso6 => Some(GsoKind::Tcpv6),
            VIRTIO_NET_HDR_GSO_UDP_L4 if n.host_uso && !ecn => Some(GsoKind::Udp),
            _ => return Err(OffloadError::NotNegotiated),
        };
        if ecn && !n.host_ecn {
            return Err(OffloadError::NotNegotiated);
        }
        let gso = match kind {
            None => None,
            Some(_) if self.gso_size == 0 => return Err(OffloadError::Inconsistent),
            Some(kind) => Some(Gso {
                kind,
                segment_size: self.gso_size,
                header_len: self.hdr_len,
            }),
        };
        Ok(FrameMeta { checksum, gso })
    }
}

/// Writes an RX header: the frame's offload metadata (a partial checksum, a segmentation request)
/// and `num_buffers` (only present in the 12-byte header). DATA_VALID is never set: every frame
/// virtgate sends it built itself, so there is no checksum it verified on the guest's behalf.
pub fn write_rx_header(hdr: &mut [u8], num_buffers: u16, meta: FrameMeta) {
    hdr.fill(0);
    if let Some(c) = meta.checksum {
        hdr[field::FLAGS] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
        hdr[field::CSUM_START].copy_from_slice(&c.start.to_le_bytes());
        hdr[field::CSUM_OFFSET].copy_from_slice(&c.offset.to_le_bytes());
    }
    if let Some(g) = meta.gso {
        hdr[field::GSO_TYPE] = match g.kind {
            GsoKind::Tcpv4 => VIRTIO_NET_HDR_GSO_TCPV4,
            GsoKind::Tcpv6 => VIRTIO_NET_HDR_GSO_TCPV6,
            GsoKind::Udp => VIRTIO_NET_HDR_GSO_UDP_L4,
        } as u8;
        hdr[field::HDR_LEN].copy_from_slice(&g.header_len.to_le_bytes());
        hdr[field::GSO_SIZE].copy_from_slice(&g.segment_size.to_le_bytes());
    }
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
        assert!(!n.csum && n.guest == GuestOffloads::default());

        let legacy = Negotiated::from_features(0);
        assert_eq!(legacy.header_len, 10);
        assert!(!legacy.mergeable_rx && !legacy.event_idx);

        // VERSION_1 alone still uses the 12-byte header.
        let v1 = Negotiated::from_features(1 << VIRTIO_F_VERSION_1);
        assert_eq!(v1.header_len, 12);
        assert!(!v1.mergeable_rx);

        // Everything offered, everything acked.
        let all = Negotiated::from_features(offered_features(Offloads::ALL, 1));
        assert!(all.csum && all.host_tso4 && all.host_tso6 && all.host_ecn && all.host_uso);
        assert_eq!(
            all.guest,
            GuestOffloads {
                partial_checksum: true,
                tso4: true,
                tso6: true
            }
        );
        // GUEST_TSO without GUEST_CSUM is not honoured.
        let odd = Negotiated::from_features(1 << VIRTIO_NET_F_GUEST_TSO4);
        assert!(!odd.guest.tso4);
    }

    #[test]
    fn offloads_parse_with_their_dependencies() {
        assert_eq!(Offloads::parse("all"), Ok(Offloads::ALL));
        assert_eq!(Offloads::parse("none"), Ok(Offloads::NONE));
        assert_eq!(
            Offloads::parse("csum,tso"),
            Ok(Offloads {
                csum: true,
                tso: true,
                ecn: false,
                uso: false
            })
        );
        assert!(Offloads::parse("tso").unwrap_err().contains("csum"));
        assert!(Offloads::parse("csum,ecn").unwrap_err().contains("tso"));
        assert!(Offloads::parse("csum,gro").unwrap_err().contains("gro"));
        assert_eq!(Offloads::ALL.to_string(), "csum,tso,ecn,uso");
        assert_eq!(Offloads::NONE.to_string(), "none");
        assert_eq!(
            Offloads::parse(&Offloads::ALL.to_string()),
            Ok(Offloads::ALL)
        );
    }

    #[test]
    fn offered_features_follow_the_offloads() {
        let none = offered_features(Offloads::NONE, 1);
        assert_ne!(none & (1 << VIRTIO_F_VERSION_1), 0);
        // CSUM (0), GUEST_CSUM (1), GUEST_TSO4 (7), HOST_TSO4 (11), HOST_USO (56): not offered.
        for bit in [0, 1, 7, 11, 56] {
            assert_eq!(none & (1 << bit), 0, "bit {bit}");
        }
        let all = offered_features(Offloads::ALL, 1);
        for bit in [0, 1, 7, 8, 9, 11, 12, 13, 56] {
            assert_ne!(all & (1 << bit), 0, "bit {bit}");
        }
        // UFO (10, 14) and GUEST_USO (54, 55) are never offered.
        for bit in [10, 14, 54, 55] {
            assert_eq!(all & (1 << bit), 0, "bit {bit}");
        }
    }

    #[test]
    fn rx_header_layout() {
        let mut h = [0xffu8; 12];
        write_rx_header(&mut h, 3, FrameMeta::NONE);
        assert_eq!(h, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0]);
        let mut legacy = [0xffu8; 10];
        write_rx_header(&mut legacy, 3, FrameMeta::NONE);
        assert_eq!(legacy, [0; 10]);
        let meta = FrameMeta {
            checksum: Some(PartialChecksum {
                start: 34,
                offset: 16,
            }),
            gso: Some(Gso {
                kind: GsoKind::Tcpv6,
                segment_size: 1440,
                header_len: 86,
            }),
        };
        write_rx_header(&mut h, 2, meta);
        assert_eq!(h, [1, 4, 86, 0, 0xa0, 0x05, 34, 0, 16, 0, 2, 0]);
        // What we write is what a guest's header would say.
        let all = Negotiated::from_features(offered_features(Offloads::ALL, 1));
        assert_eq!(TxHeader::parse(&h).meta(&all, 2000), Ok(meta));
    }

    #[test]
    fn tx_headers_are_checked_against_the_negotiated_features() {
        let none = Negotiated::from_features(offered_features(Offloads::NONE, 1));
        let all = Negotiated::from_features(offered_features(Offloads::ALL, 1));
        let hdr = |flags: u8, gso: u8, gso_size: u16, start: u16, offset: u16| TxHeader {
            flags,
            gso_type: gso,
            hdr_len: 54,
            gso_size,
            csum_start: start,
            csum_offset: offset,
        };
        assert_eq!(hdr(0, 0, 0, 0, 0).meta(&none, 60), Ok(FrameMeta::NONE));
        // A partial checksum: only with CSUM, and inside the frame.
        let partial = hdr(1, 0, 0, 34, 16);
        assert_eq!(partial.meta(&none, 60), Err(OffloadError::NotNegotiated));
        assert_eq!(
            partial.meta(&all, 60).unwrap().checksum,
            Some(PartialChecksum {
                start: 34,
                offset: 16
            })
        );
        assert_eq!(partial.meta(&all, 51), Err(OffloadError::Inconsistent));
        // TSO: negotiated, with a segment size; ECN only with HOST_ECN; UFO never.
        assert_eq!(
            hdr(1, 1, 1448, 34, 16).meta(&none, 9000),
            Err(OffloadError::NotNegotiated)
        );
        let tso = hdr(1, 1 | 0x80, 1448, 34, 16).meta(&all, 9000).unwrap();
        assert_eq!(tso.gso.unwrap().kind, GsoKind::Tcpv4);
        assert_eq!(tso.gso.unwrap().segment_size, 1448);
        assert_eq!(
            hdr(1, 1, 0, 34, 16).meta(&all, 9000),
            Err(OffloadError::Inconsistent)
        );
        assert_eq!(
            hdr(1, 3, 1400, 34, 6).meta(&all, 9000),
            Err(OffloadError::NotNegotiated)
        );
        assert_eq!(
            hdr(0, 0x80, 0, 0, 0).meta(&all, 60),
            Err(OffloadError::NotNegotiated)
        );
        let no_ecn = Negotiated::from_features(offered_features(
            Offloads {
                ecn: false,
                ..Offloads::ALL
            },
            1,
        ));
        assert_eq!(
            hdr(1, 1 | 0x80, 1448, 34, 16).meta(&no_ecn, 9000),
            Err(OffloadError::NotNegotiated)
        );
        assert_eq!(
            hdr(1, 5, 1200, 34, 6)
                .meta(&all, 9000)
                .unwrap()
                .gso
                .unwrap()
                .kind,
            GsoKind::Udp
        );
    }
}
