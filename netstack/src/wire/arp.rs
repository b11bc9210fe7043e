//! ARP for IPv4 over Ethernet (RFC 826).

use core::fmt;

use super::{read_u16, write_u16, Error, Field, Result};
use super::{EthernetAddress, Ipv4Address};

mod field {
    use super::Field;
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = 0x0800;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOperation {
    Request,
    Reply,
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(v: ArpOperation) -> u16 {
        match v {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

/// A view of an ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        Ok(ArpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn hardware_type(&self) -> u16 {
        read_u16(self.b(), field::HTYPE)
    }

    pub fn protocol_type(&self) -> u16 {
        read_u16(self.b(), field::PTYPE)
    }

    pub fn hardware_len(&self) -> u8 {
        self.b()[field::HLEN]
    }

    pub fn protocol_len(&self) -> u8 {
        self.b()[field::PLEN]
    }

    pub fn operation(&self) -> ArpOperation {
        read_u16(self.b(), field::OPER).into()
    }

    pub fn source_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.b()[field::SHA])
    }

    pub fn source_protocol_addr(&self) -> Ipv4Address {
        Ipv4Address::from_bytes(&self.b()[field::SPA])
    }

    pub fn target_hardware_addr(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.b()[field::THA])
    }

    pub fn target_protocol_addr(&self) -> Ipv4Address {
        Ipv4Address::from_bytes(&self.b()[field::TPA])
    }
}

impl<T: AsRef<[u8]>> fmt::Display for ArpPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ARP {:?} sha={} spa={} tha={} tpa={}",
            self.operation(),
            self.source_hardware_addr(),
            self.source_protocol_addr(),
            self.target_hardware_addr(),
            self.target_protocol_addr()
        )
    }
}

/// An Ethernet/IPv4 ARP packet as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Address,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Address,
}

impl ArpRepr {
    /// Accepts only Ethernet/IPv4 ARP; other hardware or protocol types are `Malformed` for us.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<Self> {
        if p.hardware_type() != HTYPE_ETHERNET
            || p.protocol_type() != PTYPE_IPV4
            || p.hardware_len() != 6
            || p.protocol_len() != 4
        {
            return Err(Error::Malformed);
        }
        Ok(ArpRepr {
            operation: p.operation(),
            source_hardware_addr: p.source_hardware_addr(),
            source_protocol_addr: p.source_protocol_addr(),
            target_hardware_addr: p.target_hardware_addr(),
            target_protocol_addr: p.target_protocol_addr(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    pub fn emit(&self, buf: &mut [u8]) {
        write_u16(buf, field::HTYPE, HTYPE_ETHERNET);
        write_u16(buf, field::PTYPE, PTYPE_IPV4);
        buf[field::HLEN] = 6;
        buf[field::PLEN] = 4;
        write_u16(buf, field::OPER, self.operation.into());
        buf[field::SHA].copy_from_slice(&self.source_hardware_addr.0);
        buf[field::SPA].copy_from_slice(&self.source_protocol_addr.0);
        buf[field::THA].copy_from_slice(&self.target_hardware_addr.0);
        buf[field::TPA].copy_from_slice(&self.target_protocol_addr.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 10, 0, 2, 15,
        0, 0, 0, 0, 0, 0, 10, 0, 2, 2,
    ];

    #[test]
    fn deconstruct_and_construct() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        let repr = ArpRepr::parse(&p).unwrap();
        assert_eq!(repr.operation, ArpOperation::Request);
        assert_eq!(repr.source_protocol_addr, Ipv4Address::new(10, 0, 2, 15));
        assert_eq!(repr.target_protocol_addr, Ipv4Address::new(10, 0, 2, 2));
        let mut out = [0u8; 28];
        repr.emit(&mut out);
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn truncated_and_foreign_types() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut other = REQUEST;
        other[1] = 6; // IEEE 802 hardware
        let p = ArpPacket::new_checked(&other[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap_err(), Error::Malformed);
    }
}
