//! Hand-made headers for crafted frames: every field can be set, wrong values included.
//!
//! The `Repr` types of the other modules only emit what the protocols allow; the exerciser (see
//! [`crate::probe`]) needs bad versions, lengths beyond the frame, broken checksums, option and
//! extension-header chains of its own choosing. These builders write exactly what they are given
//! and compute a field only where it is left as `None`.

use super::checksum;
use super::ipv6::{next_header as ext, pseudo_header_sum};
use super::{read_u16, write_u16, EthernetAddress, Ipv4Address, Ipv6Address};

/// An Ethernet II frame.
pub fn ethernet(
    dst: EthernetAddress,
    src: EthernetAddress,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 flag bits in the flags/fragment-offset word.
pub const IPV4_DF: u16 = 0x4000;
pub const IPV4_MF: u16 = 0x2000;

/// An IPv4 header, field by field (RFC 791 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    pub version: u8,
    /// Header length in 32-bit words; `None`: from the options.
    pub ihl: Option<u8>,
    /// DSCP and ECN.
    pub tos: u8,
    /// `None`: header, options and payload.
    pub total_len: Option<u16>,
    pub ident: u16,
    /// Flags (DF, MF) and the fragment offset in 8-byte units.
    pub flags_frag: u16,
    pub ttl: u8,
    pub protocol: u8,
    /// `None`: the correct header checksum.
    pub checksum: Option<u16>,
    pub src: Ipv4Address,
    pub dst: Ipv4Address,
    /// Options, padded with End-of-Options to a multiple of four bytes.
    pub options: Vec<u8>,
}

impl Ipv4Header {
    /// A plain header: version 4, no options, TTL 64, not fragmented.
    pub fn new(src: Ipv4Address, dst: Ipv4Address, protocol: u8) -> Self {
        Ipv4Header {
            version: 4,
            ihl: None,
            tos: 0,
            total_len: None,
            ident: 0,
            flags_frag: 0,
            ttl: 64,
            protocol,
            checksum: None,
            src,
            dst,
            options: Vec::new(),
        }
    }

    /// The header followed by `payload`.
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        let mut options = self.options.clone();
        options.resize(options.len().div_ceil(4) * 4, 0);
        let header_len = 20 + options.len();
        let mut p = vec![0u8; header_len];
        let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
        p[0] = (self.version << 4) | (ihl & 0x0f);
        p[1] = self.tos;
        let total = self
            .total_len
            .unwrap_or((header_len + payload.len()).min(0xffff) as u16);
        write_u16(&mut p, 2, total);
        write_u16(&mut p, 4, self.ident);
        write_u16(&mut p, 6, self.flags_frag);
        p[8] = self.ttl;
        p[9] = self.protocol;
        p[12..16].copy_from_slice(&self.src.0);
        p[16..20].copy_from_slice(&self.dst.0);
        p[20..].copy_from_slice(&options);
        let sum = self.checksum.unwrap_or_else(|| checksum::compute(&p));
        write_u16(&mut p, 10, sum);
        p.extend_from_slice(payload);
        p
    }
}

/// An IPv6 header (RFC 8200 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Header {
    pub version: u8,
    pub traffic_class: u8,
    /// `None`: the length of what follows the header.
    pub payload_len: Option<u16>,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Ipv6Address,
    pub dst: Ipv6Address,
}

impl Ipv6Header {
    pub fn new(src: Ipv6Address, dst: Ipv6Address, next_header: u8) -> Self {
        Ipv6Header {
            version: 6,
            traffic_class: 0,
            payload_len: None,
            next_header,
            hop_limit: 64,
            src,
            dst,
        }
    }

    /// The header followed by `payload` (extension headers and upper layer).
    pub fn emit(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = (self.version << 4) | (self.traffic_class >> 4);
        p[1] = self.traffic_class << 4;
        let len = self.payload_len.unwrap_or(payload.len().min(0xffff) as u16);
        write_u16(&mut p, 4, len);
        p[6] = self.next_header;
        p[7] = self.hop_limit;
        p[8..24].copy_from_slice(&self.src.0);
        p[24..40].copy_from_slice(&self.dst.0);
        p.extend_from_slice(payload);
        p
    }
}

/// An options extension header (Hop-by-Hop or Destination Options, RFC 8200 §4.3, §4.6) holding
/// `options` (type-length-value, as given) padded with Pad1/PadN to a multiple of eight bytes.
pub fn options_header(next: u8, options: &[u8]) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(options);
    match (8 - h.len() % 8) % 8 {
        0 => {}
        1 => h.push(0), // Pad1
        n => {
            h.push(1); // PadN
            h.push((n - 2) as u8);
            h.resize(h.len() + n - 2, 0);
        }
    }
    h[1] = (h.len() / 8 - 1) as u8;
    h
}

/// A Routing header (RFC 8200 §4.4) of `routing_type` with `segments_left` and `addresses`
/// (type 0's and type 2's layout: four reserved bytes, then the addresses).
pub fn routing_header(
    next: u8,
    routing_type: u8,
    segments_left: u8,
    addresses: &[Ipv6Address],
) -> Vec<u8> {
    let mut h = vec![
        next,
        (addresses.len() * 2) as u8,
        routing_type,
        segments_left,
    ];
    h.extend_from_slice(&[0; 4]);
    for a in addresses {
        h.extend_from_slice(&a.0);
    }
    h
}

/// A Fragment header (RFC 8200 §4.5): `offset` in bytes (written in 8-byte units; an offset that
/// is not a multiple of eight is rounded down, as the field cannot say more).
pub fn fragment_header(next: u8, offset: usize, more: bool, ident: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = next;
    let word = (((offset / 8) as u16) << 3) | u16::from(more);
    write_u16(&mut h, 2, word);
    h[4..8].copy_from_slice(&ident.to_be_bytes());
    h
}

/// An ICMPv4 message with a correct checksum: type, code, the four bytes after the checksum
/// (identifier and sequence, next-hop MTU, pointer, gateway...) and the data.
pub fn icmpv4(msg_type: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let sum = checksum::compute(&m);
    write_u16(&mut m, 2, sum);
    m
}

/// An ICMPv6 message with a correct checksum over the pseudo-header of `src` and `dst`.
pub fn icmpv6(
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
    data: &[u8],
    src: Ipv6Address,
    dst: Ipv6Address,
) -> Vec<u8> {
    let mut m = vec![msg_type, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let sum = checksum::accumulate(pseudo_header_sum(src, dst, 58, m.len() as u32), &m);
    write_u16(&mut m, 2, checksum::finish(sum));
    m
}

/// A UDP datagram whose checksum covers `pseudo` (the pseudo-header's partial sum for the
/// datagram's length: see [`super::IpAddress::pseudo_header_sum`]).
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8], pseudo: u32) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut d = vec![0u8; 8];
    write_u16(&mut d, 0, src_port);
    write_u16(&mut d, 2, dst_port);
    write_u16(&mut d, 4, len.min(0xffff) as u16);
    d.extend_from_slice(payload);
    let sum = checksum::finish(checksum::accumulate(pseudo, &d));
    // RFC 768: a computed zero is sent as all ones.
    write_u16(&mut d, 6, if sum == 0 { 0xffff } else { sum });
    d
}

/// Recomputes the checksums of an Ethernet frame in place: the IPv4 header checksum, and the
/// TCP, UDP, ICMPv4 or ICMPv6 checksum of an unfragmented packet (or an IPv6 atomic fragment),
/// after VLAN tags and IPv6 Hop-by-Hop, Routing and Destination Options headers. What cannot be
/// parsed that far is left as it is. Returns whether an upper-layer checksum was written.
pub fn fix_checksums(frame: &mut [u8]) -> bool {
    let mut at = 12;
    let mut ethertype = match frame.get(at..at + 2) {
        Some(_) => read_u16(frame, at),
        None => return false,
    };
    // 802.1Q and 802.1ad tags.
    while matches!(ethertype, 0x8100 | 0x88a8) && frame.len() >= at + 6 {
        at += 4;
        ethertype = read_u16(frame, at);
    }
    let ip_at = at + 2;
    match ethertype {
        0x0800 => fix_ipv4(&mut frame[ip_at..]),
        0x86dd => fix_ipv6(&mut frame[ip_at..]),
        _ => false,
    }
}

fn fix_ipv4(p: &mut [u8]) -> bool {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if ihl < 20 || p.len() < ihl {
        return false;
    }
    write_u16(p, 10, 0);
    let sum = checksum::compute(&p[..ihl]);
    write_u16(p, 10, sum);
    if read_u16(p, 6) & 0x3fff != 0 {
        return false; // a fragment: its upper-layer checksum covers the whole datagram
    }
    let end = usize::from(read_u16(p, 2)).clamp(ihl, p.len());
    let (src, dst, protocol) = (
        Ipv4Address::from_bytes(&p[12..16]),
        Ipv4Address::from_bytes(&p[16..20]),
        p[9],
    );
    let upper = &mut p[ihl..end];
    let pseudo = checksum::pseudo_header_v4(src, dst, protocol, upper.len() as u32);
    match protocol {
        1 => fix_upper(upper, 2, None),
        6 => fix_upper(upper, 16, Some(pseudo)),
        17 => fix_upper(upper, 6, Some(pseudo)),
        _ => false,
    }
}

fn fix_ipv6(p: &mut [u8]) -> bool {
    if p.len() < 40 || p[0] >> 4 != 6 {
        return false;
    }
    let end = (40 + usize::from(read_u16(p, 4))).min(p.len());
    let (src, dst) = (
        Ipv6Address::from_bytes(&p[8..24]),
        Ipv6Address::from_bytes(&p[24..40]),
    );
    let mut next = p[6];
    let mut at = 40;
    // A bounded walk: each header is at least eight bytes.
    while at + 8 <= end {
        match next {
            ext::HOP_BY_HOP | ext::ROUTING | ext::DEST_OPTIONS => {
                next = p[at];
                at += (usize::from(p[at + 1]) + 1) * 8;
            }
            ext::FRAGMENT => {
                if read_u16(p, at + 2) & 0xfff9 != 0 {
                    return false; // a real fragment
                }
                next = p[at];
                at += 8;
            }
            _ => break,
        }
    }
    if at > end {
        return false;
    }
    let upper = &mut p[at..end];
    let pseudo = pseudo_header_sum(src, dst, next, upper.len() as u32);
    match next {
        6 => fix_upper(upper, 16, Some(pseudo)),
        17 => fix_upper(upper, 6, Some(pseudo)),
        58 => fix_upper(upper, 2, Some(pseudo)),
        _ => false,
    }
}

/// Writes the checksum at `field` of an upper-layer message, over `pseudo` and the message.
fn fix_upper(m: &mut [u8], field: usize, pseudo: Option<u32>) -> bool {
    if m.len() < field + 2 {
        return false;
    }
    write_u16(m, field, 0);
    let sum = checksum::finish(checksum::accumulate(pseudo.unwrap_or(0), m));
    // UDP (RFC 768): zero means "no checksum", so a computed zero is sent as all ones.
    let sum = if field == 6 && sum == 0 { 0xffff } else { sum };
    write_u16(m, field, sum);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Icmpv4Packet, Ipv4Packet, Ipv6Packet, UdpPacket};

    const A: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
    const B: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);

    #[test]
    fn ipv4_header_fixture() {
        let mut h = Ipv4Header::new(A, B, 1);
        h.ident = 0x1234;
        let p = h.emit(&[0xaa; 4]);
        assert_eq!(
            &p[..20],
            &[0x45, 0, 0, 24, 0x12, 0x34, 0, 0, 64, 1, 0x50, 0xa1, 10, 0, 2, 2, 10, 0, 2, 15]
        );
        assert!(Ipv4Packet::new_checked(&p[..]).unwrap().verify_checksum());
        // Wrong values are written as given.
        h.version = 6;
        h.checksum = Some(0xdead);
        h.total_len = Some(999);
        let p = h.emit(&[]);
        assert_eq!(
            (p[0], read_u16(&p, 10), read_u16(&p, 2)),
            (0x65, 0xdead, 999)
        );
        // Options are padded to whole words and counted in the IHL.
        h.options = vec![7, 3, 4];
        assert_eq!(h.emit(&[])[0] & 0x0f, 6);
    }

    #[test]
    fn options_headers_are_padded_to_eight_bytes() {
        assert_eq!(options_header(58, &[]), vec![58, 0, 1, 4, 0, 0, 0, 0]);
        // Router Alert (type 5, two bytes) leaves two bytes: PadN with no data.
        assert_eq!(
            options_header(58, &[5, 2, 0, 0]),
            vec![58, 0, 5, 2, 0, 0, 1, 0]
        );
        // Five bytes of options leave one: Pad1.
        assert_eq!(options_header(17, &[0x1e, 3, 1, 2, 3]).len(), 8);
        assert_eq!(options_header(17, &[0x1e, 3, 1, 2, 3])[7], 0);
        assert_eq!(options_header(17, &[0x1e, 8, 0, 0, 0, 0, 0, 0, 0, 0])[1], 1);
    }

    #[test]
    fn fragment_header_fixture() {
        assert_eq!(
            fragment_header(58, 1232, true, 7),
            [58, 0, 0x04, 0xd1, 0, 0, 0, 7]
        );
    }

    #[test]
    fn fix_checksums_repairs_every_layer() {
        let echo = icmpv4(8, 0, [0, 1, 0, 1], b"hello");
        let mut f = ethernet(
            EthernetAddress::BROADCAST,
            EthernetAddress::BROADCAST,
            0x0800,
            &Ipv4Header::new(A, B, 1).emit(&echo),
        );
        let good = f.clone();
        f[14 + 10] ^= 0xff;
        f[14 + 20 + 2] ^= 0xff;
        assert!(fix_checksums(&mut f));
        assert_eq!(f, good);
        assert!(Icmpv4Packet::new_checked(&f[34..])
            .unwrap()
            .verify_checksum());

        let (s6, d6) = (
            Ipv6Address::new([0xfd00, 0, 0, 0, 0, 0, 0, 2]),
            Ipv6Address::new([0xfd00, 0, 0, 0, 0, 0, 0, 0x15]),
        );
        let dgram = udp(1, 2, b"abc", pseudo_header_sum(s6, d6, 17, 11));
        let mut chain = options_header(ext::FRAGMENT, &[]);
        chain.extend_from_slice(&fragment_header(17, 0, false, 1));
        chain.extend_from_slice(&dgram);
        let ip = Ipv6Header::new(s6, d6, ext::DEST_OPTIONS).emit(&chain);
        let mut f = ethernet(
            EthernetAddress::BROADCAST,
            EthernetAddress::BROADCAST,
            0x86dd,
            &ip,
        );
        let good = f.clone();
        let at = f.len() - 5;
        f[at] ^= 0x55;
        assert!(fix_checksums(&mut f));
        assert_eq!(f, good);
        let p = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let u = UdpPacket::new_checked(&p.payload()[16..]).unwrap();
        assert!(u.verify_checksum(s6.into(), d6.into()));
        // Nothing to fix in a frame that is not IP.
        assert!(!fix_checksums(&mut [0u8; 20]));
        assert!(!fix_checksums(&mut [0u8; 3]));
    }
}
