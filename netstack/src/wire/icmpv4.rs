//! ICMP for IPv4 (RFC 792): echo and the error messages the gateway sends.

use core::fmt;

use super::checksum;
use super::{read_u16, write_u16, Error, Result};

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQNO: usize = 6;
    pub const UNUSED: core::ops::Range<usize> = 4..8;
    pub const DATA: usize = 8;
}

pub const HEADER_LEN: usize = field::DATA;

pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
pub const TYPE_ECHO_REQUEST: u8 = 8;
pub const TYPE_TIME_EXCEEDED: u8 = 11;

/// Destination unreachable codes (RFC 792, RFC 1812 §5.2.7.1).
pub mod unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PORT: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmpv4Packet { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn msg_type(&self) -> u8 {
        self.b()[field::TYPE]
    }

    pub fn msg_code(&self) -> u8 {
        self.b()[field::CODE]
    }

    pub fn checksum(&self) -> u16 {
        read_u16(self.b(), field::CHECKSUM)
    }

    pub fn echo_ident(&self) -> u16 {
        read_u16(self.b(), field::ECHO_IDENT)
    }

    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.b(), field::ECHO_SEQNO)
    }

    pub fn data(&self) -> &[u8] {
        &self.b()[field::DATA..]
    }

    /// The checksum covers the whole ICMP message (RFC 792).
    pub fn verify_checksum(&self) -> bool {
        checksum::compute(self.b()) == 0
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Icmpv4Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ICMPv4 type={} code={} len={}",
            self.msg_type(),
            self.msg_code(),
            self.b().len()
        )
    }
}

/// The ICMPv4 messages the stack builds and reads, borrowing their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr<'a> {
    EchoRequest {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    EchoReply {
        ident: u16,
        seq_no: u16,
        data: &'a [u8],
    },
    /// Destination unreachable; `data` is the offending packet's header and leading bytes;
    /// `next_hop_mtu` is the MTU of the next hop for code 4, "fragmentation needed and DF set"
    /// (RFC 1191 §4: the low 16 bits of the otherwise unused word), zero otherwise.
    DstUnreachable {
        code: u8,
        next_hop_mtu: u16,
        data: &'a [u8],
    },
    /// Time exceeded (RFC 792): TTL (code 0) or reassembly (code 1); `data` quotes the packet.
    TimeExceeded { code: u8, data: &'a [u8] },
    /// Any other type, kept as data rather than an error.
    Other { msg_type: u8, code: u8 },
}

impl<'a> Icmpv4Repr<'a> {
    pub fn parse(p: &Icmpv4Packet<&'a [u8]>) -> Result<Self> {
        if !p.verify_checksum() {
            return Err(Error::Checksum);
        }
        let data: &'a [u8] = &p.buffer[field::DATA..];
        Ok(match (p.msg_type(), p.msg_code()) {
            (TYPE_ECHO_REQUEST, 0) => Icmpv4Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            (TYPE_ECHO_REPLY, 0) => Icmpv4Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            },
            (TYPE_DEST_UNREACHABLE, code) => Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu: super::read_u16(p.buffer, 6),
                data,
            },
            (TYPE_TIME_EXCEEDED, code) => Icmpv4Repr::TimeExceeded { code, data },
            (msg_type, code) => Icmpv4Repr::Other { msg_type, code },
        })
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Icmpv4Repr::EchoRequest { data, .. }
                | Icmpv4Repr::EchoReply { data, .. }
                | Icmpv4Repr::DstUnreachable { data, .. }
                | Icmpv4Repr::TimeExceeded { data, .. } => data.len(),
                Icmpv4Repr::Other { .. } => 0,
            }
    }

    /// Writes the message with its checksum into `buf[..self.buffer_len()]`.
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len()];
        let (t, c, data) = match *self {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                write_u16(buf, field::ECHO_IDENT, ident);
                write_u16(buf, field::ECHO_SEQNO, seq_no);
                (TYPE_ECHO_REQUEST, 0, data)
            }
            Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                write_u16(buf, field::ECHO_IDENT, ident);
                write_u16(buf, field::ECHO_SEQNO, seq_no);
                (TYPE_ECHO_REPLY, 0, data)
            }
            Icmpv4Repr::DstUnreachable {
                code,
                next_hop_mtu,
                data,
            } => {
                buf[field::UNUSED].fill(0);
                write_u16(buf, 6, next_hop_mtu);
                (TYPE_DEST_UNREACHABLE, code, data)
            }
            Icmpv4Repr::TimeExceeded { code, data } => {
                buf[field::UNUSED].fill(0);
                (TYPE_TIME_EXCEEDED, code, data)
            }
            Icmpv4Repr::Other { msg_type, code } => {
                buf[field::UNUSED].fill(0);
                (msg_type, code, &[][..])
            }
        };
        buf[field::TYPE] = t;
        buf[field::CODE] = c;
        buf[field::DATA..].copy_from_slice(data);
        write_u16(buf, field::CHECKSUM, 0);
        let sum = checksum::compute(buf);
        write_u16(buf, field::CHECKSUM, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_roundtrip() {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 7,
            data: b"abcdefgh",
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        assert_eq!(&buf[..2], &[8, 0]);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
    }

    #[test]
    fn bad_checksum_and_truncation() {
        let repr = Icmpv4Repr::EchoReply {
            ident: 1,
            seq_no: 2,
            data: b"x",
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        buf[8] ^= 0xff;
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p).unwrap_err(), Error::Checksum);
        assert_eq!(
            Icmpv4Packet::new_checked(&buf[..7]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn unknown_type_is_data() {
        let repr = Icmpv4Repr::Other {
            msg_type: 42,
            code: 3,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
    }
}
