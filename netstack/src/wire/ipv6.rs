//! IPv6 (RFC 8200): addresses and prefixes, the fixed header, and the walk over extension headers
//! to the upper-layer protocol (§4).

use core::fmt;

use super::ethernet::EthernetAddress;
use super::{read_u16, read_u32, write_u16, write_u32, Error, IpProtocol, Result};

/// An IPv6 address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Ipv6Address(pub [u8; 16]);

impl Ipv6Address {
    pub const UNSPECIFIED: Ipv6Address = Ipv6Address([0; 16]);
    pub const LOOPBACK: Ipv6Address = Ipv6Address::new([0, 0, 0, 0, 0, 0, 0, 1]);
    /// ff02::1, all nodes on the link.
    pub const ALL_NODES: Ipv6Address = Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 0, 1]);
    /// ff02::2, all routers on the link.
    pub const ALL_ROUTERS: Ipv6Address = Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 0, 2]);
    /// ff02::16, where MLDv2 reports go (RFC 3810 §5.2.14).
    pub const ALL_MLDV2_ROUTERS: Ipv6Address = Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 0, 0x16]);

    pub const fn new(s: [u16; 8]) -> Self {
        let mut b = [0u8; 16];
        let mut i = 0;
        while i < 8 {
            b[2 * i] = (s[i] >> 8) as u8;
            b[2 * i + 1] = s[i] as u8;
            i += 1;
        }
        Ipv6Address(b)
    }

    pub fn from_bytes(b: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        Ipv6Address(a)
    }

    pub fn is_unspecified(&self) -> bool {
        self.0 == [0; 16]
    }

    pub fn is_loopback(&self) -> bool {
        *self == Self::LOOPBACK
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] == 0xff
    }

    /// fe80::/10.
    pub fn is_link_local(&self) -> bool {
        self.0[0] == 0xfe && self.0[1] & 0xc0 == 0x80
    }

    /// ::ffff:0:0/96, an IPv4 address in IPv6 clothing (RFC 4291 §2.5.5.2).
    pub fn to_ipv4_mapped(&self) -> Option<super::Ipv4Address> {
        (self.0[..10] == [0; 10] && self.0[10..12] == [0xff, 0xff])
            .then(|| super::Ipv4Address::from_bytes(&self.0[12..]))
    }

    /// The solicited-node multicast address (RFC 4291 §2.7.1): ff02::1:ffXX:XXXX.
    pub fn solicited_node(&self) -> Ipv6Address {
        let mut b = Self::new([0xff02, 0, 0, 0, 0, 1, 0xff00, 0]).0;
        b[13..].copy_from_slice(&self.0[13..]);
        Ipv6Address(b)
    }

    /// The Ethernet group address a multicast address maps to (RFC 2464 §7): 33:33 and its low
    /// 32 bits.
    pub fn multicast_mac(&self) -> EthernetAddress {
        EthernetAddress([0x33, 0x33, self.0[12], self.0[13], self.0[14], self.0[15]])
    }

    /// The modified EUI-64 link-local address of a MAC (RFC 4291 §2.5.1, appendix A).
    pub fn link_local_from_mac(mac: EthernetAddress) -> Ipv6Address {
        let m = mac.0;
        Ipv6Address([
            0xfe,
            0x80,
            0,
            0,
            0,
            0,
            0,
            0,
            m[0] ^ 0x02,
            m[1],
            m[2],
            0xff,
            0xfe,
            m[3],
            m[4],
            m[5],
        ])
    }
}

impl fmt::Display for Ipv6Address {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(&std::net::Ipv6Addr::from(self.0), f)
    }
}

impl fmt::Debug for Ipv6Address {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<std::net::Ipv6Addr> for Ipv6Address {
    fn from(a: std::net::Ipv6Addr) -> Self {
        Ipv6Address(a.octets())
    }
}

impl From<Ipv6Address> for std::net::Ipv6Addr {
    fn from(a: Ipv6Address) -> Self {
        std::net::Ipv6Addr::from(a.0)
    }
}

impl core::str::FromStr for Ipv6Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<std::net::Ipv6Addr>()
            .map(Ipv6Address::from)
            .map_err(|_| Error::Malformed)
    }
}

/// An IPv6 prefix: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    address: Ipv6Address,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// `None` when the length exceeds 128.
    pub fn new(address: Ipv6Address, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 128).then_some(Ipv6Cidr {
            address,
            prefix_len,
        })
    }

    pub fn address(&self) -> Ipv6Address {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The prefix itself, host bits cleared.
    pub fn network(&self) -> Ipv6Address {
        let mut b = self.address.0;
        for (i, byte) in b.iter_mut().enumerate() {
            let bits = (usize::from(self.prefix_len)).saturating_sub(8 * i).min(8);
            *byte &= !(0xffu8.checked_shr(bits as u32).unwrap_or(0));
        }
        Ipv6Address(b)
    }

    pub fn contains(&self, addr: Ipv6Address) -> bool {
        Ipv6Cidr {
            address: addr,
            prefix_len: self.prefix_len,
        }
        .network()
            == self.network()
    }

    /// The address with `host` in the low 64 bits of the prefix (for /64 and shorter).
    pub fn host(&self, host: u64) -> Ipv6Address {
        let mut b = self.network().0;
        b[8..].copy_from_slice(&host.to_be_bytes());
        Ipv6Address(b)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl core::str::FromStr for Ipv6Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s.split_once('/').ok_or(Error::Malformed)?;
        let len: u8 = len.parse().map_err(|_| Error::Malformed)?;
        Ipv6Cidr::new(addr.parse()?, len).ok_or(Error::Malformed)
    }
}

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: core::ops::Range<usize> = 8..24;
    pub const DST_ADDR: core::ops::Range<usize> = 24..40;
}

pub const HEADER_LEN: usize = 40;
/// RFC 8200 §5: every link carries 1280-byte packets.
pub const MIN_MTU: usize = 1280;

/// Extension header and upper-layer numbers (IANA).
pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AUTH: u8 = 51;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTIONS: u8 = 60;
}

/// A checked view of an IPv6 packet: the buffer holds at least the header, the version is 6, and
/// the payload length fits the buffer (bytes beyond it are link padding).
#[derive(Debug)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(read_u16(b, field::PAYLOAD_LEN)) > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv6Packet { buffer })
    }

    pub fn traffic_class(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> Ipv6Address {
        Ipv6Address::from_bytes(&self.buffer.as_ref()[field::SRC_ADDR])
    }

    pub fn dst_addr(&self) -> Ipv6Address {
        Ipv6Address::from_bytes(&self.buffer.as_ref()[field::DST_ADDR])
    }

    /// The header and payload, without link padding.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN + usize::from(self.payload_len())]
    }

    pub fn payload(&self) -> &[u8] {
        &self.packet()[HEADER_LEN..]
    }
}

/// The fixed header as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Address,
    pub dst: Ipv6Address,
    /// The first next-header value (an extension header or the upper layer).
    pub next_header: IpProtocol,
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Ipv6Repr {
        Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: IpProtocol::from(p.next_header()),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header into `buf[..40]`.
    pub fn emit(&self, buf: &mut [u8]) {
        write_u32(buf, field::VER_TC_FLOW, 6 << 28);
        write_u16(buf, field::PAYLOAD_LEN, self.payload_len as u16);
        buf[field::NEXT_HEADER] = u8::from(self.next_header);
        buf[field::HOP_LIMIT] = self.hop_limit;
        buf[field::SRC_ADDR].copy_from_slice(&self.src.0);
        buf[field::DST_ADDR].copy_from_slice(&self.dst.0);
    }
}

/// The partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, upper-layer
/// length, next header.
pub fn pseudo_header_sum(src: Ipv6Address, dst: Ipv6Address, protocol: u8, len: u32) -> u32 {
    let mut sum = super::checksum::accumulate(0, &src.0);
    sum = super::checksum::accumulate(sum, &dst.0);
    sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    sum.wrapping_add(u32::from(protocol))
}

/// A Fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentHeader {
    /// Offset of this fragment's data in the original payload, bytes.
    pub offset: usize,
    pub more: bool,
    pub ident: u32,
}

impl FragmentHeader {
    pub const LEN: usize = 8;

    /// Writes the header (next header `next`) into `buf[..8]`.
    pub fn emit(&self, buf: &mut [u8], next: u8) {
        buf[0] = next;
        buf[1] = 0;
        write_u16(buf, 2, (self.offset as u16 & !7) | u16::from(self.more));
        write_u32(buf, 4, self.ident);
    }
}

/// Where the walk over extension headers ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header in the IPv6 payload.
    pub offset: usize,
    /// The Fragment header on the way, if any.
    pub fragment: Option<FragmentHeader>,
    /// Where the Fragment header is, in the payload.
    pub fragment_at: Option<usize>,
    /// Offset from the IPv6 header of the next-header field that named the Fragment header, so
    /// that a reassembler can rewrite it.
    pub fragment_next_at: Option<usize>,
    /// The Fragment header's own next header (the first header of the fragmentable part).
    pub fragment_next_header: u8,
    /// Offset from the IPv6 header of the next-header field naming `protocol` (the Parameter
    /// Problem pointer when the caller does not know it, RFC 8200 §4).
    pub next_header_at: u32,
    /// Fragment headers with offset 0 and M 0 passed on the way: atomic fragments, processed in
    /// place (RFC 6946 §4), never as part of a reassembly.
    pub atomic_fragments: usize,
}

/// Why a packet cannot be delivered, as the ICMPv6 Parameter Problem (RFC 4443 §3.4) to send:
/// `code` and `pointer` (offset from the start of the IPv6 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtError {
    /// Drop silently (truncated headers, No Next Header, options that say "discard").
    Drop,
    /// A second Fragment header that is not atomic: a fragment inside a fragment. Sources
    /// fragment once (RFC 8200 §4.5) and the first fragment carries the whole header chain
    /// (RFC 7112), so this is only ever crafted; dropped silently, as reassembling it would
    /// multiply the work a single frame can cause.
    NestedFragment,
    ParameterProblem {
        code: u8,
        pointer: u32,
    },
}

/// Parameter Problem codes (RFC 4443 §3.4).
pub mod param_problem {
    pub const ERRONEOUS_FIELD: u8 = 0;
    pub const UNKNOWN_NEXT_HEADER: u8 = 1;
    pub const UNKNOWN_OPTION: u8 = 2;
}

/// Walks the extension headers of `payload` (the IPv6 payload, `first` naming its first header)
/// to the upper layer, as RFC 8200 §4 asks of a destination: Hop-by-Hop only first (§4.3);
/// options processed by their action bits (§4.2); a Routing header with segments left is not ours
/// to follow (code 0 at its type, §4.4); anything unknown gets code 1 pointing at the next-header
/// field that named it (§4). Upper layers the caller does not know are reported as such by the
/// caller. `dst_multicast` selects the "not if multicast" option action (§4.2, `11`).
pub fn walk_extension_headers(
    first: u8,
    payload: &[u8],
    dst_multicast: bool,
) -> core::result::Result<UpperLayer, ExtError> {
    let mut next = first;
    let mut at = 0usize;
    // Where the current `next` value lives, relative to the IPv6 header.
    let mut next_field: u32 = 6;
    let mut fragment = None;
    let mut fragment_at = None;
    let mut fragment_next_at = None;
    let mut fragment_next_header = 0;
    let mut atomic_fragments = 0;
    let mut first_header = true;
    loop {
        match next {
            next_header::HOP_BY_HOP | next_header::DEST_OPTIONS => {
                if next == next_header::HOP_BY_HOP && !first_header {
                    return Err(ExtError::ParameterProblem {
                        code: param_problem::UNKNOWN_NEXT_HEADER,
                        pointer: next_field,
                    });
                }
                let h = payload.get(at..at + 2).ok_or(ExtError::Drop)?;
                let len = (usize::from(h[1]) + 1) * 8;
                let body = payload.get(at..at + len).ok_or(ExtError::Drop)?;
                check_options(
                    &body[2..],
                    (super::ipv6::HEADER_LEN + at + 2) as u32,
                    dst_multicast,
                )?;
                next_field = (HEADER_LEN + at) as u32;
                next = h[0];
                at += len;
            }
            next_header::ROUTING => {
                let h = payload.get(at..at + 4).ok_or(ExtError::Drop)?;
                let len = (usize::from(h[1]) + 1) * 8;
                if payload.len() < at + len {
                    return Err(ExtError::Drop);
                }
                // We know no routing type that a host may follow (type 0 is deprecated, RFC 5095);
                // with segments left, RFC 8200 §4.4 asks code 0 pointing at the type.
                if h[3] != 0 {
                    return Err(ExtError::ParameterProblem {
                        code: param_problem::ERRONEOUS_FIELD,
                        pointer: (HEADER_LEN + at + 2) as u32,
                    });
                }
                next_field = (HEADER_LEN + at) as u32;
                next = h[0];
                at += len;
            }
            next_header::FRAGMENT => {
                let h = payload
                    .get(at..at + FragmentHeader::LEN)
                    .ok_or(ExtError::Drop)?;
                let off_m = read_u16(h, 2);
                let this = FragmentHeader {
                    offset: usize::from(off_m & !7),
                    more: off_m & 1 != 0,
                    ident: read_u32(h, 4),
                };
                if this.offset == 0 && !this.more {
                    // An atomic fragment: the whole packet is here; the header is skipped and
                    // the walk goes on (RFC 6946 §4), however many there are: linear work.
                    atomic_fragments += 1;
                    next_field = (HEADER_LEN + at) as u32;
                    next = h[0];
                    at += FragmentHeader::LEN;
                    first_header = false;
                    continue;
                }
                if fragment.is_some() {
                    return Err(ExtError::NestedFragment);
                }
                fragment = Some(this);
                fragment_at = Some(at);
                fragment_next_at = Some(next_field as usize);
                fragment_next_header = h[0];
                next_field = (HEADER_LEN + at) as u32;
                next = h[0];
                at += FragmentHeader::LEN;
                if fragment.is_some_and(|f| f.offset != 0) {
                    // Only the first fragment carries the headers that follow (§4.5).
                    return Ok(UpperLayer {
                        protocol: IpProtocol::from(next),
                        offset: at,
                        fragment,
                        fragment_at,
                        fragment_next_at,
                        fragment_next_header,
                        next_header_at: next_field,
                        atomic_fragments,
                    });
                }
            }
            next_header::NO_NEXT => return Err(ExtError::Drop),
            next_header::AUTH | next_header::ESP => {
                // IPsec is not terminated here: the upper layer is unknown to us.
                return Err(ExtError::ParameterProblem {
                    code: param_problem::UNKNOWN_NEXT_HEADER,
                    pointer: next_field,
                });
            }
            upper => {
                return Ok(UpperLayer {
                    protocol: IpProtocol::from(upper),
                    offset: at,
                    fragment,
                    fragment_at,
                    fragment_next_at,
                    fragment_next_header,
                    next_header_at: next_field,
                    atomic_fragments,
                });
            }
        }
        first_header = false;
    }
}

/// The TLV options of a Hop-by-Hop or Destination Options header (RFC 8200 §4.2). `base` is the
/// offset of `opts` from the start of the IPv6 header (for the Parameter Problem pointer).
fn check_options(
    opts: &[u8],
    base: u32,
    dst_multicast: bool,
) -> core::result::Result<(), ExtError> {
    let mut i = 0;
    while i < opts.len() {
        let kind = opts[i];
        if kind == 0 {
            // Pad1.
            i += 1;
            continue;
        }
        let len = usize::from(*opts.get(i + 1).ok_or(ExtError::Drop)?);
        if i + 2 + len > opts.len() {
            return Err(ExtError::Drop);
        }
        match kind {
            // PadN, Router Alert (RFC 2711, MLD carries it), Jumbo is not for a 64 KiB link.
            1 | 5 => {}
            _ => match kind >> 6 {
                0 => {}
                1 => return Err(ExtError::Drop),
                3 if dst_multicast => return Err(ExtError::Drop),
                _ => {
                    return Err(ExtError::ParameterProblem {
                        code: param_problem::UNKNOWN_OPTION,
                        pointer: base + i as u32,
                    })
                }
            },
        }
        i += 2 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a: Ipv6Address = "fd00::2".parse().unwrap();
        assert_eq!(a.to_string(), "fd00::2");
        assert_eq!(
            a.solicited_node().to_string(),
            "ff02::1:ff00:2",
            "RFC 4291 §2.7.1"
        );
        assert_eq!(
            a.solicited_node().multicast_mac(),
            EthernetAddress([0x33, 0x33, 0xff, 0, 0, 2])
        );
        let ll =
            Ipv6Address::link_local_from_mac(EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(ll.to_string(), "fe80::5054:ff:fe12:3456");
        assert!(ll.is_link_local() && !ll.is_multicast());
        let mapped: Ipv6Address = "::ffff:10.0.2.2".parse().unwrap();
        assert_eq!(
            mapped.to_ipv4_mapped(),
            Some(super::super::Ipv4Address::new(10, 0, 2, 2))
        );
    }

    #[test]
    fn prefixes() {
        let p: Ipv6Cidr = "fd00::/64".parse().unwrap();
        assert!(p.contains("fd00::1234".parse().unwrap()));
        assert!(!p.contains("fd00:0:0:1::1".parse().unwrap()));
        assert_eq!(p.host(2).to_string(), "fd00::2");
        let odd: Ipv6Cidr = "2001:db8:ffff::/33".parse().unwrap();
        assert_eq!(odd.network().to_string(), "2001:db8:8000::");
    }

    #[test]
    fn header_roundtrip() {
        let r = Ipv6Repr {
            src: "fe80::1".parse().unwrap(),
            dst: Ipv6Address::ALL_NODES,
            next_header: IpProtocol::Icmpv6,
            payload_len: 8,
            hop_limit: 255,
        };
        let mut b = vec![0u8; r.buffer_len() + 6];
        r.emit(&mut b);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p), r);
        assert_eq!(p.payload().len(), 8, "link padding is not payload");
        b[4] = 0x10;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        b[0] = 0x45;
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn extension_headers_walk_to_the_upper_layer() {
        // Hop-by-Hop (Router Alert + PadN), Destination Options (PadN), Fragment, then UDP.
        let mut p = vec![60, 0, 5, 2, 0, 0, 1, 0];
        p.extend([44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend([17, 0, 0x00, 0x01, 0, 0, 0, 9]);
        p.extend([0u8; 8]);
        let u = walk_extension_headers(next_header::HOP_BY_HOP, &p, false).unwrap();
        assert_eq!(u.protocol, IpProtocol::Udp);
        assert_eq!(u.offset, 24);
        assert_eq!(
            u.fragment,
            Some(FragmentHeader {
                offset: 0,
                more: true,
                ident: 9
            })
        );
        assert_eq!(u.fragment_at, Some(16));
        assert_eq!(
            u.fragment_next_at,
            Some(40 + 8),
            "the Destination Options' next header"
        );
        assert_eq!(u.fragment_next_header, 17);
        assert_eq!(u.next_header_at, 40 + 16);
    }

    #[test]
    fn extension_header_errors_point_at_the_culprit() {
        // Hop-by-Hop after a Destination Options header: code 1 at the field that named it.
        let p = [0u8, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
        assert_eq!(
            walk_extension_headers(next_header::DEST_OPTIONS, &p, false),
            Err(ExtError::ParameterProblem {
                code: 1,
                pointer: 40
            })
        );
        // An unknown option whose action is "discard and report": code 2 at the option.
        let p = [17u8, 0, 1, 0, 0x80, 2, 0, 0];
        assert_eq!(
            walk_extension_headers(next_header::DEST_OPTIONS, &p, false),
            Err(ExtError::ParameterProblem {
                code: 2,
                pointer: 40 + 4
            })
        );
        // The same option type with "11" to a multicast destination: dropped without a word.
        let p = [17u8, 0, 1, 0, 0xc0, 2, 0, 0];
        assert_eq!(
            walk_extension_headers(next_header::DEST_OPTIONS, &p, true),
            Err(ExtError::Drop)
        );
        // A routing header with segments left: code 0 at its routing type.
        let p = [17u8, 0, 4, 1, 0, 0, 0, 0];
        assert_eq!(
            walk_extension_headers(next_header::ROUTING, &p, false),
            Err(ExtError::ParameterProblem {
                code: 0,
                pointer: 42
            })
        );
        // Truncated headers and No Next Header are dropped.
        assert_eq!(
            walk_extension_headers(next_header::HOP_BY_HOP, &[17, 1, 0, 0], false),
            Err(ExtError::Drop)
        );
        assert_eq!(
            walk_extension_headers(next_header::NO_NEXT, &[], false),
            Err(ExtError::Drop)
        );
    }
}
