//! UDP (RFC 768).

use core::fmt;

use super::checksum;
use super::{read_u16, write_u16, Error, IpAddress, Ipv4Address, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
    pub const PAYLOAD: usize = 8;
}

pub const HEADER_LEN: usize = field::PAYLOAD;

const PROTO_UDP: u8 = 17;

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Checks that the header fits and that the length field covers the header and fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = UdpPacket { buffer };
        let len = p.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = p.len() as usize;
        if field_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn src_port(&self) -> u16 {
        read_u16(self.b(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        read_u16(self.b(), field::DST_PORT)
    }

    pub fn len(&self) -> u16 {
        read_u16(self.b(), field::LENGTH)
    }

    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..self.len() as usize]
    }

    /// RFC 768: a zero checksum means the sender computed none.
    pub fn verify_checksum_v4(&self, src: Ipv4Address, dst: Ipv4Address) -> bool {
        self.verify_checksum(src.into(), dst.into())
    }

    /// The checksum for either family: over IPv6 a zero checksum is invalid (RFC 8200 §8.1).
    pub fn verify_checksum(&self, src: IpAddress, dst: IpAddress) -> bool {
        if self.checksum() == 0 {
            return matches!(src, IpAddress::V4(_));
        }
        let datagram = &self.b()[..self.len() as usize];
        let sum = IpAddress::pseudo_header_sum(src, dst, PROTO_UDP, datagram.len() as u32);
        checksum::finish(checksum::accumulate(sum, datagram)) == 0
    }
}

impl<T: AsRef<[u8]>> fmt::Display for UdpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "UDP src={} dst={} len={}",
            self.src_port(),
            self.dst_port(),
            self.len()
        )
    }
}

/// A UDP header as a value; the payload is written by the caller after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]>>(
        p: &UdpPacket<T>,
        src: impl Into<IpAddress>,
        dst: impl Into<IpAddress>,
    ) -> Result<Self> {
        if !p.verify_checksum(src.into(), dst.into()) {
            return Err(Error::Checksum);
        }
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header over `buf`, whose length is the whole datagram (header and payload, the
    /// payload already in place), and fills in the checksum.
    pub fn emit_v4(&self, buf: &mut [u8], src: Ipv4Address, dst: Ipv4Address) {
        self.emit(buf, src.into(), dst.into())
    }

    /// [`UdpRepr::emit_v4`] for either family.
    pub fn emit(&self, buf: &mut [u8], src: IpAddress, dst: IpAddress) {
        self.emit_header(buf);
        let sum = IpAddress::pseudo_header_sum(src, dst, PROTO_UDP, buf.len() as u32);
        let mut sum = checksum::finish(checksum::accumulate(sum, buf));
        // RFC 768: a computed zero is sent as all ones.
        if sum == 0 {
            sum = 0xffff;
        }
        write_u16(buf, field::CHECKSUM, sum);
    }

    /// [`UdpRepr::emit`] with the checksum left partial: the field holds the folded pseudo-header
    /// sum, for the receiver (or a NIC) to complete (see [`crate::offload`]).
    pub fn emit_partial(&self, buf: &mut [u8], src: IpAddress, dst: IpAddress) {
        self.emit_header(buf);
        let sum = IpAddress::pseudo_header_sum(src, dst, PROTO_UDP, buf.len() as u32);
        write_u16(buf, field::CHECKSUM, !checksum::finish(sum));
    }

    fn emit_header(&self, buf: &mut [u8]) {
        write_u16(buf, field::SRC_PORT, self.src_port);
        write_u16(buf, field::DST_PORT, self.dst_port);
        write_u16(buf, field::LENGTH, buf.len() as u16);
        write_u16(buf, field::CHECKSUM, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
    const DST: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    #[test]
    fn roundtrip() {
        let mut buf = vec![0u8; 8 + 5];
        buf[8..].copy_from_slice(b"hello");
        let repr = UdpRepr {
            src_port: 68,
            dst_port: 67,
        };
        repr.emit_v4(&mut buf, SRC, DST);
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload(), b"hello");
        assert_eq!(UdpRepr::parse(&p, SRC, DST).unwrap(), repr);
        // The pseudo-header is covered: other addresses fail.
        assert_eq!(
            UdpRepr::parse(&p, SRC, Ipv4Address::new(10, 0, 2, 3)).unwrap_err(),
            Error::Checksum
        );
    }

    #[test]
    fn zero_checksum_is_accepted_and_lengths_checked() {
        let mut buf = vec![0u8; 8 + 2];
        UdpRepr {
            src_port: 1,
            dst_port: 2,
        }
        .emit_v4(&mut buf, SRC, DST);
        buf[6] = 0;
        buf[7] = 0;
        let p = UdpPacket::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum_v4(SRC, DST));
        buf[5] = 7; // length below the header
        assert_eq!(
            UdpPacket::new_checked(&buf[..]).unwrap_err(),
            Error::Malformed
        );
        buf[5] = 11; // longer than the buffer
        assert_eq!(
            UdpPacket::new_checked(&buf[..]).unwrap_err(),
            Error::Truncated
        );
    }
}
