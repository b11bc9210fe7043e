//! Wire formats: a checked view over a byte buffer plus a parsed value (`Repr`) per protocol.
//!
//! Views (`EthernetFrame`, `Ipv4Packet`...) are validated once by `new_checked`; after that their
//! accessors cannot panic. `Repr`s are plain values with `parse`, `buffer_len` and `emit`.

pub mod arp;
pub mod checksum;
pub mod craft;
pub mod dhcpv4;
pub mod dhcpv6;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

use core::fmt;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use dhcpv4::{DhcpMessageType, DhcpPacket, DhcpRepr};
pub use ethernet::{EtherType, EthernetAddress, EthernetFrame, EthernetRepr};
pub use icmpv4::{Icmpv4Packet, Icmpv4Repr};
pub use icmpv6::{Icmpv6Repr, NdpOptions};
pub use ipv4::{Fragment, IpProtocol, Ipv4Address, Ipv4Cidr, Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Address, Ipv6Cidr, Ipv6Packet, Ipv6Repr};
pub use tcp::{SeqNumber, TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// An IPv4 or IPv6 address: what flows and connections are keyed by, whichever the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpAddress {
    V4(Ipv4Address),
    V6(Ipv6Address),
}

impl From<Ipv4Address> for IpAddress {
    fn from(a: Ipv4Address) -> Self {
        IpAddress::V4(a)
    }
}

impl From<Ipv6Address> for IpAddress {
    fn from(a: Ipv6Address) -> Self {
        IpAddress::V6(a)
    }
}

impl From<IpAddress> for std::net::IpAddr {
    fn from(a: IpAddress) -> Self {
        match a {
            IpAddress::V4(a) => std::net::IpAddr::V4(a.into()),
            IpAddress::V6(a) => std::net::IpAddr::V6(a.into()),
        }
    }
}

impl fmt::Display for IpAddress {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            IpAddress::V4(a) => fmt::Display::fmt(a, f),
            IpAddress::V6(a) => fmt::Display::fmt(a, f),
        }
    }
}

impl IpAddress {
    /// The length of a packet header of this address's family without options or extension
    /// headers.
    pub fn header_len(&self) -> usize {
        match self {
            IpAddress::V4(_) => ipv4::HEADER_LEN,
            IpAddress::V6(_) => ipv6::HEADER_LEN,
        }
    }

    /// The partial checksum of the pseudo-header for an upper-layer message of `len` bytes
    /// (RFC 768 / RFC 9293 for IPv4, RFC 8200 §8.1 for IPv6). The two addresses are of one family.
    pub fn pseudo_header_sum(src: IpAddress, dst: IpAddress, protocol: u8, len: u32) -> u32 {
        match (src, dst) {
            (IpAddress::V4(s), IpAddress::V4(d)) => checksum::pseudo_header_v4(s, d, protocol, len),
            (IpAddress::V6(s), IpAddress::V6(d)) => ipv6::pseudo_header_sum(s, d, protocol, len),
            _ => {
                debug_assert!(false, "pseudo-header of mixed families {src} {dst}");
                0
            }
        }
    }
}

/// A prefix of either family: a destination range (`198.51.100.0/24`, `2001:db8::/32`; an address
/// alone is a host prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpPrefix {
    V4(Ipv4Cidr),
    V6(Ipv6Cidr),
}

impl IpPrefix {
    pub fn contains(&self, addr: IpAddress) -> bool {
        match (self, addr) {
            (IpPrefix::V4(p), IpAddress::V4(a)) => p.contains(a),
            (IpPrefix::V6(p), IpAddress::V6(a)) => p.contains(a),
            _ => false,
        }
    }

    pub fn prefix_len(&self) -> u8 {
        match self {
            IpPrefix::V4(p) => p.prefix_len(),
            IpPrefix::V6(p) => p.prefix_len(),
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            IpPrefix::V4(p) => write!(f, "{}/{}", p.network(), p.prefix_len()),
            IpPrefix::V6(p) => write!(f, "{}/{}", p.network(), p.prefix_len()),
        }
    }
}

impl core::str::FromStr for IpPrefix {
    type Err = String;

    fn from_str(s: &str) -> core::result::Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| "bad prefix length")?)),
            None => (s, None),
        };
        match addr.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Ipv4Cidr::new(a.into(), len.unwrap_or(32))
                .map(IpPrefix::V4)
                .ok_or_else(|| "bad prefix length".to_string()),
            Ok(std::net::IpAddr::V6(a)) => Ipv6Cidr::new(a.into(), len.unwrap_or(128))
                .map(IpPrefix::V6)
                .ok_or_else(|| "bad prefix length".to_string()),
            Err(_) => Err(format!("{addr:?} is not an IP address")),
        }
    }
}

/// Why a buffer could not be read as a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The buffer is shorter than the header or a length field says.
    Truncated,
    /// A field holds a value the protocol forbids.
    Malformed,
    /// The checksum does not verify.
    Checksum,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated"),
            Error::Malformed => write!(f, "malformed"),
            Error::Checksum => write!(f, "bad checksum"),
        }
    }
}

pub type Result<T> = core::result::Result<T, Error>;

/// A byte range of a header.
pub(crate) type Field = core::ops::Range<usize>;

pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
