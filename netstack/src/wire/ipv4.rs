//! IPv4 (RFC 791): addresses, prefixes, and the packet header without options processing.

use core::fmt;

use super::checksum;
use super::{read_u16, write_u16, Error, Field, Result};

/// An IPv4 address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ipv4Address(pub [u8; 4]);

impl Ipv4Address {
    pub const UNSPECIFIED: Ipv4Address = Ipv4Address([0; 4]);
    pub const BROADCAST: Ipv4Address = Ipv4Address([255; 4]);

    pub const fn new(a: u8, b: u8, c: u8, d: u8) -> Self {
        Ipv4Address([a, b, c, d])
    }

    pub fn from_bytes(b: &[u8]) -> Self {
        Ipv4Address([b[0], b[1], b[2], b[3]])
    }

    pub const fn to_u32(self) -> u32 {
        u32::from_be_bytes(self.0)
    }

    pub const fn from_u32(v: u32) -> Self {
        Ipv4Address(v.to_be_bytes())
    }

    pub fn is_unspecified(&self) -> bool {
        self.0 == [0; 4]
    }

    pub fn is_broadcast(&self) -> bool {
        self.0 == [255; 4]
    }

    /// 224.0.0.0/4.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0xf0 == 0xe0
    }

    /// 127.0.0.0/8.
    pub fn is_loopback(&self) -> bool {
        self.0[0] == 127
    }
}

impl fmt::Display for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let b = self.0;
        write!(f, "{}.{}.{}.{}", b[0], b[1], b[2], b[3])
    }
}

impl fmt::Debug for Ipv4Address {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<std::net::Ipv4Addr> for Ipv4Address {
    fn from(a: std::net::Ipv4Addr) -> Self {
        Ipv4Address(a.octets())
    }
}

impl From<Ipv4Address> for std::net::Ipv4Addr {
    fn from(a: Ipv4Address) -> Self {
        std::net::Ipv4Addr::from(a.0)
    }
}

impl core::str::FromStr for Ipv4Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse::<std::net::Ipv4Addr>()
            .map(Into::into)
            .map_err(|_| Error::Malformed)
    }
}

/// An IPv4 address with a prefix length, such as `10.0.2.15/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    address: Ipv4Address,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// Returns `None` if `prefix_len` exceeds 32.
    pub fn new(address: Ipv4Address, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Ipv4Cidr {
            address,
            prefix_len,
        })
    }

    pub fn address(&self) -> Ipv4Address {
        self.address
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn netmask(&self) -> Ipv4Address {
        if self.prefix_len == 0 {
            return Ipv4Address::UNSPECIFIED;
        }
        Ipv4Address::from_u32(u32::MAX << (32 - u32::from(self.prefix_len)))
    }

    pub fn network(&self) -> Ipv4Address {
        Ipv4Address::from_u32(self.address.to_u32() & self.netmask().to_u32())
    }

    /// The directed broadcast address of the prefix.
    pub fn broadcast(&self) -> Ipv4Address {
        Ipv4Address::from_u32(self.network().to_u32() | !self.netmask().to_u32())
    }

    pub fn contains(&self, addr: Ipv4Address) -> bool {
        addr.to_u32() & self.netmask().to_u32() == self.network().to_u32()
    }

    /// The address at host offset `host` within the prefix (`10.0.2.0/24`, 15 → `10.0.2.15`).
    pub fn host(&self, host: u32) -> Option<Ipv4Address> {
        let span = if self.prefix_len == 0 {
            u32::MAX
        } else {
            !self.netmask().to_u32()
        };
        (host <= span).then(|| Ipv4Address::from_u32(self.network().to_u32() | host))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl core::str::FromStr for Ipv4Cidr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (addr, len) = s.split_once('/').ok_or(Error::Malformed)?;
        let len: u8 = len.parse().map_err(|_| Error::Malformed)?;
        Ipv4Cidr::new(addr.parse()?, len).ok_or(Error::Malformed)
    }
}

/// An IP protocol number (IANA "Assigned Internet Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    Icmp,
    Igmp,
    Tcp,
    Udp,
    Icmpv6,
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => IpProtocol::Icmp,
            2 => IpProtocol::Igmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            58 => IpProtocol::Icmpv6,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> u8 {
        match v {
            IpProtocol::Icmp => 1,
            IpProtocol::Igmp => 2,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Unknown(other) => other,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            IpProtocol::Icmp => write!(f, "ICMP"),
            IpProtocol::Igmp => write!(f, "IGMP"),
            IpProtocol::Tcp => write!(f, "TCP"),
            IpProtocol::Udp => write!(f, "UDP"),
            IpProtocol::Icmpv6 => write!(f, "ICMPv6"),
            IpProtocol::Unknown(v) => write!(f, "proto {v}"),
        }
    }
}

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Validates what RFC 1122 §3.2.1.1-3.2.1.2 asks of a receiver, short of the checksum: the
    /// version is 4, the header length is at least 20 bytes and fits, and the total length covers the
    /// header and fits in the buffer (bytes past it, such as Ethernet padding, are ignored).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Ipv4Packet { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 {
            return Err(Error::Malformed);
        }
        let hlen = p.header_len() as usize;
        if hlen < HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total = p.total_len() as usize;
        if total < hlen {
            return Err(Error::Malformed);
        }
        if len < hlen || len < total {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> u8 {
        (self.b()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp(&self) -> u8 {
        self.b()[field::DSCP_ECN] >> 2
    }

    pub fn ecn(&self) -> u8 {
        self.b()[field::DSCP_ECN] & 0x03
    }

    pub fn total_len(&self) -> u16 {
        read_u16(self.b(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        read_u16(self.b(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        read_u16(self.b(), field::FLG_OFF) & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        read_u16(self.b(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.b(), field::FLG_OFF) & OFFSET_MASK) * 8
    }

    /// True for any piece of a fragmented datagram (RFC 791: MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }

    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.b()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    pub fn src_addr(&self) -> Ipv4Address {
        Ipv4Address::from_bytes(&self.b()[field::SRC_ADDR])
    }

    pub fn dst_addr(&self) -> Ipv4Address {
        Ipv4Address::from_bytes(&self.b()[field::DST_ADDR])
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::compute(&self.b()[..self.header_len() as usize]) == 0
    }

    /// The payload up to the total length (link-layer padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len() as usize..self.total_len() as usize]
    }

    /// The header and payload, without link-layer padding.
    pub fn packet(&self) -> &[u8] {
        &self.b()[..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Ipv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "IPv4 src={} dst={} proto={} len={} ttl={}",
            self.src_addr(),
            self.dst_addr(),
            self.protocol(),
            self.total_len(),
            self.ttl()
        )
    }
}

/// The fragmentation fields of an emitted header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole packet with DF set (path MTU discovery, RFC 1191).
    DontFragment,
    /// A piece of a datagram at byte `offset` (a multiple of 8); `more` sets MF.
    Piece { offset: u16, more: bool },
}

/// An IPv4 header (without options) as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Address,
    pub dst: Ipv4Address,
    pub protocol: IpProtocol,
    pub payload_len: usize,
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Reads a checked packet's header; verifies the header checksum. Options are skipped.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self> {
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        Ok(Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.payload().len(),
            ttl: p.ttl(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with DF set, identification `ident`, and a valid checksum.
    pub fn emit(&self, buf: &mut [u8], ident: u16) {
        self.emit_with_fragment(buf, ident, Fragment::DontFragment);
    }

    /// Writes the header of a whole packet or of one fragment (`payload_len` is then the
    /// fragment's payload), with a valid checksum.
    pub fn emit_with_fragment(&self, buf: &mut [u8], ident: u16, fragment: Fragment) {
        let buf = &mut buf[..HEADER_LEN];
        buf[field::VER_IHL] = 0x45;
        buf[field::DSCP_ECN] = 0;
        write_u16(buf, field::LENGTH, (HEADER_LEN + self.payload_len) as u16);
        write_u16(buf, field::IDENT, ident);
        let flg_off = match fragment {
            Fragment::DontFragment => FLAG_DF,
            Fragment::Piece { offset, more } => {
                debug_assert_eq!(offset % 8, 0, "fragment offsets are in 8-byte units");
                (offset / 8) & OFFSET_MASK | if more { FLAG_MF } else { 0 }
            }
        };
        write_u16(buf, field::FLG_OFF, flg_off);
        buf[field::TTL] = self.ttl;
        buf[field::PROTOCOL] = self.protocol.into();
        write_u16(buf, field::CHECKSUM, 0);
        buf[field::SRC_ADDR].copy_from_slice(&self.src.0);
        buf[field::DST_ADDR].copy_from_slice(&self.dst.0);
        let sum = checksum::compute(buf);
        write_u16(buf, field::CHECKSUM, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ICMP echo request header from 10.0.2.15 to 10.0.2.2, total length 28.
    const PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, 10, 0, 2, 15, 10,
        0, 2, 2, 0x08, 0x00, 0xf7, 0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    fn fixture() -> Vec<u8> {
        let mut p = PACKET.to_vec();
        let sum = checksum::compute(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn deconstruct() {
        let bytes = fixture();
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        assert_eq!(p.src_addr(), Ipv4Address::new(10, 0, 2, 15));
        assert_eq!(p.dst_addr(), Ipv4Address::new(10, 0, 2, 2));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn construct_matches_fixture() {
        let bytes = fixture();
        let repr = Ipv4Repr::parse(&Ipv4Packet::new_checked(&bytes[..]).unwrap()).unwrap();
        let mut out = vec![0u8; 28];
        repr.emit(&mut out, 0x1234);
        out[20..].copy_from_slice(&bytes[20..]);
        assert_eq!(out, bytes);
    }

    #[test]
    fn padding_is_ignored() {
        let mut bytes = fixture();
        bytes.extend_from_slice(&[0u8; 18]); // a 60-byte minimum Ethernet frame's padding
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
        assert_eq!(p.packet().len(), 28);
    }

    #[test]
    fn rejects_bad_headers() {
        let bytes = fixture();
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut v6 = bytes.clone();
        v6[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&v6[..]).unwrap_err(),
            Error::Malformed
        );
        let mut short_ihl = bytes.clone();
        short_ihl[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&short_ihl[..]).unwrap_err(),
            Error::Malformed
        );
        let mut long_ihl = bytes.clone();
        long_ihl[0] = 0x4f; // 60-byte header in a 28-byte packet
        assert!(Ipv4Packet::new_checked(&long_ihl[..]).is_err());
        let mut small_total = bytes.clone();
        small_total[3] = 10;
        assert_eq!(
            Ipv4Packet::new_checked(&small_total[..]).unwrap_err(),
            Error::Malformed
        );
        let mut bad_sum = bytes.clone();
        bad_sum[8] = 1;
        let p = Ipv4Packet::new_checked(&bad_sum[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), Error::Checksum);
    }

    #[test]
    fn fragments() {
        let mut bytes = fixture();
        bytes[6] = 0x20; // MF
        assert!(Ipv4Packet::new_checked(&bytes[..]).unwrap().is_fragment());
        bytes[6] = 0x00;
        bytes[7] = 0x01; // offset 8
        let p = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 8);
    }

    #[test]
    fn fragment_headers() {
        let repr = Ipv4Repr {
            src: Ipv4Address::new(10, 0, 2, 2),
            dst: Ipv4Address::new(10, 0, 2, 15),
            protocol: IpProtocol::Udp,
            payload_len: 1480,
            ttl: 64,
        };
        let mut buf = vec![0u8; 1500];
        repr.emit_with_fragment(
            &mut buf,
            9,
            Fragment::Piece {
                offset: 1480,
                more: true,
            },
        );
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.verify_checksum());
        repr.emit_with_fragment(
            &mut buf,
            9,
            Fragment::Piece {
                offset: 2960,
                more: false,
            },
        );
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.more_frags() && p.frag_offset() == 2960);
    }

    #[test]
    fn cidr() {
        let c: Ipv4Cidr = "10.0.2.15/24".parse().unwrap();
        assert_eq!(c.netmask(), Ipv4Address::new(255, 255, 255, 0));
        assert_eq!(c.network(), Ipv4Address::new(10, 0, 2, 0));
        assert_eq!(c.broadcast(), Ipv4Address::new(10, 0, 2, 255));
        assert!(c.contains(Ipv4Address::new(10, 0, 2, 200)));
        assert!(!c.contains(Ipv4Address::new(10, 0, 3, 1)));
        assert_eq!(c.host(2), Some(Ipv4Address::new(10, 0, 2, 2)));
        assert_eq!(c.host(256), None);
        assert!("10.0.2.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.2.0".parse::<Ipv4Cidr>().is_err());
    }
}
