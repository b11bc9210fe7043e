//! What an impairment rule looks at in a frame: addresses, protocol, ports, TCP flags and where
//! each header starts, read in place (nothing is copied or allocated).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use netstack::wire::tcp::flags as tcp_flags;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_VLAN: u16 = 0x8100;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers walked before giving up on finding the transport header.
const MAX_EXTENSION_HEADERS: usize = 16;

/// The TCP flags a rule can test, by the names the grammar uses (the low byte of the flags
/// field).
pub const TCP_FLAG_NAMES: [(&str, u8); 8] = [
    ("fin", tcp_flags::FIN),
    ("syn", tcp_flags::SYN),
    ("rst", tcp_flags::RST),
    ("psh", tcp_flags::PSH),
    ("ack", tcp_flags::ACK),
    ("urg", tcp_flags::URG),
    ("ece", tcp_flags::ECE),
    ("cwr", tcp_flags::CWR),
];

/// The parts of a frame rules match on.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameView {
    pub ethertype: u16,
    /// Where the network header starts.
    pub l3: usize,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// The transport protocol (IPv6: after the extension headers).
    pub protocol: Option<u8>,
    /// Where the transport header starts, when this frame holds it (not a later fragment).
    pub l4: Option<usize>,
    /// The end of the IP packet (its length field, bounded by the frame).
    pub ip_end: usize,
    /// The packet is a fragment (first or later).
    pub fragment: bool,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: Option<u8>,
    /// TCP payload bytes (0 for other protocols).
    pub tcp_payload: usize,
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(f.get(at..at + 2)?.try_into().ok()?))
}

impl FrameView {
    /// Reads what it can: fields it cannot find stay `None` (a rule testing them does not match).
    pub fn parse(frame: &[u8]) -> FrameView {
        let mut v = FrameView::default();
        let Some(mut ethertype) = be16(frame, 12) else {
            return v;
        };
        let mut l3 = 14;
        if ethertype == ETHERTYPE_VLAN {
            let Some(inner) = be16(frame, 16) else {
                return v;
            };
            ethertype = inner;
            l3 = 18;
        }
        v.ethertype = ethertype;
        v.l3 = l3;
        v.ip_end = frame.len();
        match ethertype {
            ETHERTYPE_IPV4 => v.parse_ipv4(frame),
            ETHERTYPE_IPV6 => v.parse_ipv6(frame),
            _ => {}
        }
        if let Some(l4) = v.l4 {
            v.parse_transport(frame, l4);
        }
        v
    }

    fn parse_ipv4(&mut self, frame: &[u8]) {
        let l3 = self.l3;
        let Some(h) = frame.get(l3..l3 + 20) else {
            return;
        };
        if h[0] >> 4 != 4 {
            return;
        }
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        self.ip_end = (l3 + total).min(frame.len());
        self.src = Some(IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])));
        self.dst = Some(IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])));
        self.protocol = Some(h[9]);
        let frag = u16::from_be_bytes([h[6], h[7]]);
        let (more, offset) = (frag & 0x2000 != 0, frag & 0x1fff);
        self.fragment = more || offset != 0;
        if offset == 0 && ihl >= 20 {
            self.l4 = Some(l3 + ihl);
        }
    }

    fn parse_ipv6(&mut self, frame: &[u8]) {
        let l3 = self.l3;
        let Some(h) = frame.get(l3..l3 + 40) else {
            return;
        };
        if h[0] >> 4 != 6 {
            return;
        }
        let payload = usize::from(u16::from_be_bytes([h[4], h[5]]));
        self.ip_end = (l3 + 40 + payload).min(frame.len());
        let addr =
            |b: &[u8]| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or([0; 16])));
        self.src = Some(addr(&h[8..24]));
        self.dst = Some(addr(&h[24..40]));
        let mut next = h[6];
        let mut at = l3 + 40;
        for _ in 0..MAX_EXTENSION_HEADERS {
            match next {
                // Hop-by-Hop, Routing, Destination Options: (length + 1) * 8 bytes.
                0 | 43 | 60 => {
                    let (Some(&n), Some(&len)) = (frame.get(at), frame.get(at + 1)) else {
                        return;
                    };
                    next = n;
                    at += (usize::from(len) + 1) * 8;
                }
                // Authentication Header: (length + 2) * 4 bytes.
                51 => {
                    let (Some(&n), Some(&len)) = (frame.get(at), frame.get(at + 1)) else {
                        return;
                    };
                    next = n;
                    at += (usize::from(len) + 2) * 4;
                }
                // Fragment: only the first fragment holds the transport header.
                44 => {
                    let (Some(&n), Some(off)) = (frame.get(at), be16(frame, at + 2)) else {
                        return;
                    };
                    let (offset, more) = (off >> 3, off & 1 != 0);
                    self.fragment = more || offset != 0;
                    next = n;
                    at += 8;
                    if offset != 0 {
                        self.protocol = Some(next);
                        return;
                    }
                }
                _ => {
                    self.protocol = Some(next);
                    self.l4 = (at <= self.ip_end).then_some(at);
                    return;
                }
            }
        }
    }

    fn parse_transport(&mut self, frame: &[u8], l4: usize) {
        match self.protocol {
            Some(PROTO_TCP) => {
                self.sport = be16(frame, l4);
                self.dport = be16(frame, l4 + 2);
                if let (Some(&off), Some(&flags)) = (frame.get(l4 + 12), frame.get(l4 + 13)) {
                    self.tcp_flags = Some(flags);
                    let header = usize::from(off >> 4) * 4;
                    self.tcp_payload = self.ip_end.saturating_sub(l4 + header);
                }
            }
            Some(PROTO_UDP) => {
                self.sport = be16(frame, l4);
                self.dport = be16(frame, l4 + 2);
            }
            _ => {}
        }
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.src, Some(IpAddr::V4(_)))
    }

    pub fn is_ipv6(&self) -> bool {
        matches!(self.src, Some(IpAddr::V6(_)))
    }

    /// The protocol counting ICMP and ICMPv6 as one.
    pub fn is_icmp(&self) -> bool {
        matches!(
            (self.protocol, self.src),
            (Some(PROTO_ICMP), Some(IpAddr::V4(_))) | (Some(PROTO_ICMPV6), Some(IpAddr::V6(_)))
        )
    }

    /// Where a bit flipped at byte `at` of the frame lands, as the receiver will see it (see
    /// [`Corruption`]). `frame` is the frame before the flip; `mask` the bit.
    pub fn classify_flip(&self, frame: &[u8], at: usize, mask: u8) -> Corruption {
        let ip = matches!(self.ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6) && self.src.is_some();
        if !ip || at < self.l3 || at >= self.ip_end {
            return Corruption::Other;
        }
        let Some(l4) = self.l4.filter(|&l4| at >= l4) else {
            return Corruption::NetworkHeader;
        };
        if self.fragment {
            return Corruption::Other;
        }
        match self.protocol {
            // The data offset: a receiver rejects or mis-sizes the header before any checksum.
            Some(PROTO_TCP) if at == l4 + 12 && mask & 0xf0 != 0 => Corruption::Other,
            Some(PROTO_TCP) => Corruption::Tcp,
            // The length field is checked against the packet before the checksum.
            Some(PROTO_UDP) if (l4 + 4..l4 + 6).contains(&at) => Corruption::Other,
            Some(PROTO_UDP) => {
                let Some(sum) = be16(frame, l4 + 6) else {
                    return Corruption::Other;
                };
                // Over IPv4 a zero checksum means "none" (RFC 768): a datagram sent without one,
                // or whose flipped checksum field becomes zero, is not checked.
                let flipped = if (l4 + 6..l4 + 8).contains(&at) {
                    let bit = if at == l4 + 6 {
                        u16::from(mask) << 8
                    } else {
                        u16::from(mask)
                    };
                    sum ^ bit
                } else {
                    sum
                };
                if self.is_ipv4() && (sum == 0 || flipped == 0) {
                    Corruption::Other
                } else {
                    Corruption::Udp
                }
            }
            _ => Corruption::Other,
        }
    }
}

/// Where a corrupted frame's flipped bit landed, which says what can notice it. The device
/// completes a partial checksum before flipping (as netem does), so the receiver verifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// In the IPv4 header (its checksum catches any single flipped bit) or the IPv6 header and
    /// extension headers (no checksum: what happens depends on the field).
    NetworkHeader,
    /// In a TCP segment, outside its data offset field: only the TCP checksum can catch it, and it
    /// does (Linux counts `TcpInCsumErrors`).
    Tcp,
    /// In a checksummed UDP datagram, outside its length field (`UdpInCsumErrors`).
    Udp,
    /// Elsewhere: ARP, ICMP, a fragment, a length field, padding, a frame whose checksum the
    /// receiver does not verify.
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(payload: usize, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        f[23] = PROTO_TCP;
        f[26..30].copy_from_slice(&[10, 0, 2, 15]);
        f[30..34].copy_from_slice(&[10, 0, 2, 2]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = flags;
        f
    }

    #[test]
    fn tcp_over_ipv4_is_read_in_place() {
        let f = tcp4(100, tcp_flags::SYN | tcp_flags::ACK);
        let v = FrameView::parse(&f);
        assert!(v.is_ipv4());
        assert_eq!(v.dst, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(
            (v.protocol, v.l4, v.sport, v.dport),
            (Some(6), Some(34), Some(40000), Some(80))
        );
        assert_eq!(v.tcp_flags, Some(0x12));
        assert_eq!(v.tcp_payload, 100);
        assert_eq!(v.classify_flip(&f, 20, 1), Corruption::NetworkHeader);
        assert_eq!(v.classify_flip(&f, 46, 0x10), Corruption::Other);
        assert_eq!(v.classify_flip(&f, 46, 0x01), Corruption::Tcp);
        assert_eq!(v.classify_flip(&f, 100, 0x80), Corruption::Tcp);
    }

    #[test]
    fn ipv6_extension_headers_are_walked_and_later_fragments_have_no_ports() {
        let mut f = vec![0u8; 14 + 40 + 8 + 8 + 8];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[14] = 0x60;
        f[18..20].copy_from_slice(&24u16.to_be_bytes());
        f[20] = 0; // Hop-by-Hop
        f[54] = 44; // then Fragment
        f[62] = PROTO_UDP;
        let v = FrameView::parse(&f);
        assert!(v.is_ipv6());
        assert_eq!((v.protocol, v.l4), (Some(PROTO_UDP), Some(70)));
        f[64..66].copy_from_slice(&(1u16 << 3).to_be_bytes());
        let v = FrameView::parse(&f);
        assert_eq!(
            (v.protocol, v.l4, v.sport, v.fragment),
            (Some(PROTO_UDP), None, None, true)
        );
        // Truncated or foreign frames give what they can, never a panic.
        for n in 0..f.len() {
            let _ = FrameView::parse(&f[..n]);
        }
    }
}
