//! DHCPv4 messages (RFC 2131 §2) and the options of RFC 2132 that a gateway serves.

use core::fmt;

use super::{read_u16, read_u32, write_u16, write_u32, Error, Field, Result};
use super::{EthernetAddress, Ipv4Address};

mod field {
    use super::Field;
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: Field = 12..16;
    pub const YIADDR: Field = 16..20;
    pub const SIADDR: Field = 20..24;
    pub const GIADDR: Field = 24..28;
    pub const CHADDR: Field = 28..44;
    pub const SNAME_FILE: Field = 44..236;
    pub const MAGIC: Field = 236..240;
    pub const OPTIONS: usize = 240;
}

/// RFC 2131 §3: the magic cookie that starts the options field.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];

/// The fixed part of a message plus the cookie.
pub const FIXED_LEN: usize = field::OPTIONS;

/// RFC 2131 §2: the broadcast bit of the flags field.
const FLAG_BROADCAST: u16 = 0x8000;

pub const SERVER_PORT: u16 = 67;
/// RFC 2131 §2: every client takes DHCP messages (IP header included) of up to this many bytes.
pub const MIN_CLIENT_MESSAGE: usize = 576;
pub const CLIENT_PORT: u16 = 68;

/// Option codes (RFC 2132).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS_SERVER: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const INTERFACE_MTU: u8 = 26;
    pub const BROADCAST_ADDRESS: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_IDENTIFIER: u8 = 54;
    pub const PARAMETER_REQUEST_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_IDENTIFIER: u8 = 61;
    pub const END: u8 = 255;
}

/// Option 53 (RFC 2132 §9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
    Unknown(u8),
}

impl From<u8> for DhcpMessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => Self::Unknown(other),
        }
    }
}

impl From<DhcpMessageType> for u8 {
    fn from(v: DhcpMessageType) -> u8 {
        match v {
            DhcpMessageType::Discover => 1,
            DhcpMessageType::Offer => 2,
            DhcpMessageType::Request => 3,
            DhcpMessageType::Decline => 4,
            DhcpMessageType::Ack => 5,
            DhcpMessageType::Nak => 6,
            DhcpMessageType::Release => 7,
            DhcpMessageType::Inform => 8,
            DhcpMessageType::Unknown(other) => other,
        }
    }
}

impl fmt::Display for DhcpMessageType {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::Unknown(v) => write!(f, "DHCP type {v}"),
            other => write!(f, "DHCP{}", format!("{other:?}").to_uppercase()),
        }
    }
}

/// BOOTP op field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpOp {
    Request,
    Reply,
}

/// A view of a DHCP message.
#[derive(Debug, Clone, Copy)]
pub struct DhcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> DhcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        if b.len() < FIXED_LEN {
            return Err(Error::Truncated);
        }
        if b[field::MAGIC] != MAGIC_COOKIE {
            return Err(Error::Malformed);
        }
        Ok(DhcpPacket { buffer })
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn op(&self) -> u8 {
        self.b()[field::OP]
    }

    pub fn transaction_id(&self) -> u32 {
        read_u32(self.b(), field::XID)
    }

    pub fn flags(&self) -> u16 {
        read_u16(self.b(), field::FLAGS)
    }

    pub fn client_hardware_address(&self) -> EthernetAddress {
        EthernetAddress::from_bytes(&self.b()[field::CHADDR])
    }

    /// Iterates over the options as `(code, value)`; a malformed option ends the iteration with an
    /// error.
    pub fn options(&self) -> OptionIter<'_> {
        OptionIter {
            data: &self.b()[field::OPTIONS..],
        }
    }
}

/// Iterator over TLV options; yields `Err` once on a truncated option and then stops.
pub struct OptionIter<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<(u8, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, rest) = self.data.split_first()?;
            match code {
                opt::PAD => self.data = rest,
                opt::END => {
                    self.data = &[];
                    return None;
                }
                _ => {
                    let Some((&len, rest)) = rest.split_first() else {
                        self.data = &[];
                        return Some(Err(Error::Truncated));
                    };
                    let len = len as usize;
                    if rest.len() < len {
                        self.data = &[];
                        return Some(Err(Error::Truncated));
                    }
                    self.data = &rest[len..];
                    return Some(Ok((code, &rest[..len])));
                }
            }
        }
    }
}

/// Up to three addresses of an address-list option (DNS servers); more are ignored.
pub type AddressList = [Option<Ipv4Address>; 3];

/// A DHCP message as a value, with the options this stack reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRepr<'a> {
    pub op: DhcpOp,
    pub message_type: DhcpMessageType,
    pub transaction_id: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub client_hardware_address: EthernetAddress,
    pub client_ip: Ipv4Address,
    pub your_ip: Ipv4Address,
    pub server_ip: Ipv4Address,
    pub relay_agent_ip: Ipv4Address,
    pub client_identifier: Option<&'a [u8]>,
    pub requested_ip: Option<Ipv4Address>,
    pub server_identifier: Option<Ipv4Address>,
    pub parameter_request_list: Option<&'a [u8]>,
    pub max_message_size: Option<u16>,
    pub host_name: Option<&'a [u8]>,
    pub subnet_mask: Option<Ipv4Address>,
    pub router: Option<Ipv4Address>,
    pub dns_servers: AddressList,
    pub domain_name: Option<&'a [u8]>,
    pub interface_mtu: Option<u16>,
    pub broadcast_address: Option<Ipv4Address>,
    pub lease_time: Option<u32>,
    pub renewal_time: Option<u32>,
    pub rebinding_time: Option<u32>,
    pub message: Option<&'a [u8]>,
}

impl<'a> DhcpRepr<'a> {
    /// A reply skeleton for `request`: same transaction, flags, hardware address and relay address.
    pub fn reply_to(request: &DhcpRepr<'_>, message_type: DhcpMessageType) -> DhcpRepr<'a> {
        DhcpRepr {
            op: DhcpOp::Reply,
            message_type,
            transaction_id: request.transaction_id,
            secs: 0,
            broadcast: request.broadcast,
            client_hardware_address: request.client_hardware_address,
            client_ip: Ipv4Address::UNSPECIFIED,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            relay_agent_ip: request.relay_agent_ip,
            ..DhcpRepr::empty()
        }
    }

    /// A message with every field zero or absent.
    pub const fn empty() -> DhcpRepr<'a> {
        DhcpRepr {
            op: DhcpOp::Request,
            message_type: DhcpMessageType::Unknown(0),
            transaction_id: 0,
            secs: 0,
            broadcast: false,
            client_hardware_address: EthernetAddress([0; 6]),
            client_ip: Ipv4Address::UNSPECIFIED,
            your_ip: Ipv4Address::UNSPECIFIED,
            server_ip: Ipv4Address::UNSPECIFIED,
            relay_agent_ip: Ipv4Address::UNSPECIFIED,
            client_identifier: None,
            requested_ip: None,
            server_identifier: None,
            parameter_request_list: None,
            max_message_size: None,
            host_name: None,
            subnet_mask: None,
            router: None,
            dns_servers: [None; 3],
            domain_name: None,
            interface_mtu: None,
            broadcast_address: None,
            lease_time: None,
            renewal_time: None,
            rebinding_time: None,
            message: None,
        }
    }

    /// Parses an Ethernet DHCP message. A message without option 53 is plain BOOTP, which this
    /// stack does not serve: `Malformed`.
    pub fn parse(p: &DhcpPacket<&'a [u8]>) -> Result<Self> {
        let b: &'a [u8] = p.buffer;
        let op = match b[field::OP] {
            1 => DhcpOp::Request,
            2 => DhcpOp::Reply,
            _ => return Err(Error::Malformed),
        };
        if b[field::HTYPE] != 1 || b[field::HLEN] != 6 {
            return Err(Error::Malformed);
        }
        let mut r = DhcpRepr {
            op,
            transaction_id: p.transaction_id(),
            secs: read_u16(b, field::SECS),
            broadcast: p.flags() & FLAG_BROADCAST != 0,
            client_hardware_address: p.client_hardware_address(),
            client_ip: Ipv4Address::from_bytes(&b[field::CIADDR]),
            your_ip: Ipv4Address::from_bytes(&b[field::YIADDR]),
            server_ip: Ipv4Address::from_bytes(&b[field::SIADDR]),
            relay_agent_ip: Ipv4Address::from_bytes(&b[field::GIADDR]),
            ..DhcpRepr::empty()
        };
        let mut message_type = None;
        let options = OptionIter {
            data: &b[field::OPTIONS..],
        };
        for item in options {
            let (code, v) = item?;
            let addr = || (v.len() == 4).then(|| Ipv4Address::from_bytes(v));
            let u32v = || (v.len() == 4).then(|| read_u32(v, 0));
            match code {
                opt::MESSAGE_TYPE if v.len() == 1 => message_type = Some(v[0].into()),
                opt::CLIENT_IDENTIFIER if !v.is_empty() => r.client_identifier = Some(v),
                opt::REQUESTED_IP => r.requested_ip = addr(),
                opt::SERVER_IDENTIFIER => r.server_identifier = addr(),
                opt::PARAMETER_REQUEST_LIST => r.parameter_request_list = Some(v),
                opt::MAX_MESSAGE_SIZE if v.len() == 2 => r.max_message_size = Some(read_u16(v, 0)),
                opt::HOST_NAME => r.host_name = Some(v),
                opt::SUBNET_MASK => r.subnet_mask = addr(),
                opt::ROUTER if v.len() >= 4 => r.router = Some(Ipv4Address::from_bytes(v)),
                opt::DNS_SERVER => {
                    for (slot, chunk) in r.dns_servers.iter_mut().zip(v.chunks_exact(4)) {
                        *slot = Some(Ipv4Address::from_bytes(chunk));
                    }
                }
                opt::DOMAIN_NAME => r.domain_name = Some(v),
                opt::INTERFACE_MTU if v.len() == 2 => r.interface_mtu = Some(read_u16(v, 0)),
                opt::BROADCAST_ADDRESS => r.broadcast_address = addr(),
                opt::LEASE_TIME => r.lease_time = u32v(),
                opt::RENEWAL_TIME => r.renewal_time = u32v(),
                opt::REBINDING_TIME => r.rebinding_time = u32v(),
                opt::MESSAGE => r.message = Some(v),
                _ => {}
            }
        }
        r.message_type = message_type.ok_or(Error::Malformed)?;
        Ok(r)
    }

    fn options_len(&self) -> usize {
        let addr = |a: Option<Ipv4Address>| a.map_or(0, |_| 6);
        let u32o = |a: Option<u32>| a.map_or(0, |_| 6);
        let bytes = |a: Option<&[u8]>| a.map_or(0, |v| 2 + v.len().min(255));
        let dns = self.dns_servers.iter().flatten().count();
        3 + addr(self.server_identifier)
            + addr(self.requested_ip)
            + bytes(self.client_identifier)
            + bytes(self.parameter_request_list)
            + self.max_message_size.map_or(0, |_| 4)
            + bytes(self.host_name)
            + addr(self.subnet_mask)
            + addr(self.router)
            + if dns > 0 { 2 + 4 * dns } else { 0 }
            + bytes(self.domain_name)
            + self.interface_mtu.map_or(0, |_| 4)
            + addr(self.broadcast_address)
            + u32o(self.lease_time)
            + u32o(self.renewal_time)
            + u32o(self.rebinding_time)
            + bytes(self.message)
            + 1
    }

    /// The message length; RFC 2131 §2 lets clients expect at least the 300-byte BOOTP minimum, so
    /// shorter messages are padded.
    pub fn buffer_len(&self) -> usize {
        (FIXED_LEN + self.options_len()).max(300)
    }

    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len()];
        buf.fill(0);
        buf[field::OP] = match self.op {
            DhcpOp::Request => 1,
            DhcpOp::Reply => 2,
        };
        buf[field::HTYPE] = 1;
        buf[field::HLEN] = 6;
        buf[field::HOPS] = 0;
        write_u32(buf, field::XID, self.transaction_id);
        write_u16(buf, field::SECS, self.secs);
        write_u16(
            buf,
            field::FLAGS,
            if self.broadcast { FLAG_BROADCAST } else { 0 },
        );
        buf[field::CIADDR].copy_from_slice(&self.client_ip.0);
        buf[field::YIADDR].copy_from_slice(&self.your_ip.0);
        buf[field::SIADDR].copy_from_slice(&self.server_ip.0);
        buf[field::GIADDR].copy_from_slice(&self.relay_agent_ip.0);
        buf[field::CHADDR][..6].copy_from_slice(&self.client_hardware_address.0);
        buf[field::SNAME_FILE].fill(0);
        buf[field::MAGIC].copy_from_slice(&MAGIC_COOKIE);

        let mut w = OptionWriter {
            buf: &mut buf[field::OPTIONS..],
            at: 0,
        };
        w.put(opt::MESSAGE_TYPE, &[self.message_type.into()]);
        let addr = |w: &mut OptionWriter, code, a: Option<Ipv4Address>| {
            if let Some(a) = a {
                w.put(code, &a.0)
            }
        };
        let u32o = |w: &mut OptionWriter, code, v: Option<u32>| {
            if let Some(v) = v {
                w.put(code, &v.to_be_bytes())
            }
        };
        addr(&mut w, opt::SERVER_IDENTIFIER, self.server_identifier);
        addr(&mut w, opt::REQUESTED_IP, self.requested_ip);
        for (code, v) in [
            (opt::CLIENT_IDENTIFIER, self.client_identifier),
            (opt::PARAMETER_REQUEST_LIST, self.parameter_request_list),
            (opt::HOST_NAME, self.host_name),
        ] {
            if let Some(v) = v {
                w.put(code, v);
            }
        }
        if let Some(v) = self.max_message_size {
            w.put(opt::MAX_MESSAGE_SIZE, &v.to_be_bytes());
        }
        u32o(&mut w, opt::LEASE_TIME, self.lease_time);
        u32o(&mut w, opt::RENEWAL_TIME, self.renewal_time);
        u32o(&mut w, opt::REBINDING_TIME, self.rebinding_time);
        addr(&mut w, opt::SUBNET_MASK, self.subnet_mask);
        addr(&mut w, opt::ROUTER, self.router);
        let dns = self.dns_servers.iter().flatten().count();
        if dns > 0 {
            let mut list = [0u8; 12];
            for (chunk, a) in list
                .chunks_exact_mut(4)
                .zip(self.dns_servers.iter().flatten())
            {
                chunk.copy_from_slice(&a.0);
            }
            w.put(opt::DNS_SERVER, &list[..4 * dns]);
        }
        if let Some(v) = self.domain_name {
            w.put(opt::DOMAIN_NAME, v);
        }
        if let Some(v) = self.interface_mtu {
            w.put(opt::INTERFACE_MTU, &v.to_be_bytes());
        }
        addr(&mut w, opt::BROADCAST_ADDRESS, self.broadcast_address);
        if let Some(v) = self.message {
            w.put(opt::MESSAGE, v);
        }
        w.buf[w.at] = opt::END;
    }
}

struct OptionWriter<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl OptionWriter<'_> {
    /// Writes one option; values longer than 255 bytes are cut to 255 (option length is one byte).
    fn put(&mut self, code: u8, value: &[u8]) {
        let value = &value[..value.len().min(255)];
        self.buf[self.at] = code;
        self.buf[self.at + 1] = value.len() as u8;
        self.buf[self.at + 2..self.at + 2 + value.len()].copy_from_slice(value);
        self.at += 2 + value.len();
    }
}

impl fmt::Display for DhcpRepr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{} xid={:08x} chaddr={} ciaddr={} yiaddr={}",
            self.message_type,
            self.transaction_id,
            self.client_hardware_address,
            self.client_ip,
            self.your_ip
        )?;
        if let Some(r) = self.requested_ip {
            write!(f, " requested={r}")?;
        }
        if let Some(s) = self.server_identifier {
            write!(f, " server={s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discover() -> DhcpRepr<'static> {
        DhcpRepr {
            op: DhcpOp::Request,
            message_type: DhcpMessageType::Discover,
            transaction_id: 0xdead_beef,
            broadcast: true,
            client_hardware_address: EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            client_identifier: Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            parameter_request_list: Some(&[1, 3, 6, 15, 26, 51]),
            requested_ip: Some(Ipv4Address::new(10, 0, 2, 15)),
            ..DhcpRepr::empty()
        }
    }

    #[test]
    fn roundtrip_request() {
        let r = discover();
        let mut buf = vec![0u8; r.buffer_len()];
        assert_eq!(buf.len(), 300);
        r.emit(&mut buf);
        let p = DhcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(DhcpRepr::parse(&p).unwrap(), r);
    }

    #[test]
    fn roundtrip_reply_with_all_options() {
        let mut r = DhcpRepr::reply_to(&discover(), DhcpMessageType::Offer);
        r.your_ip = Ipv4Address::new(10, 0, 2, 15);
        r.server_identifier = Some(Ipv4Address::new(10, 0, 2, 2));
        r.subnet_mask = Some(Ipv4Address::new(255, 255, 255, 0));
        r.router = Some(Ipv4Address::new(10, 0, 2, 2));
        r.dns_servers = [Some(Ipv4Address::new(10, 0, 2, 3)), None, None];
        r.domain_name = Some(b"virtgate.internal");
        r.interface_mtu = Some(65520);
        r.lease_time = Some(86400);
        r.renewal_time = Some(43200);
        r.rebinding_time = Some(75600);
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf);
        let p = DhcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.op(), 2);
        assert_eq!(DhcpRepr::parse(&p).unwrap(), r);
    }

    #[test]
    fn malformed_inputs() {
        let r = discover();
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut buf);
        assert_eq!(
            DhcpPacket::new_checked(&buf[..239]).unwrap_err(),
            Error::Truncated
        );
        let mut bad_cookie = buf.clone();
        bad_cookie[236] = 0;
        assert_eq!(
            DhcpPacket::new_checked(&bad_cookie[..]).unwrap_err(),
            Error::Malformed
        );
        // An option whose length runs past the end of the message.
        let mut truncated = buf[..243].to_vec();
        truncated[240] = opt::HOST_NAME;
        truncated[241] = 200;
        let p = DhcpPacket::new_checked(&truncated[..]).unwrap();
        assert_eq!(DhcpRepr::parse(&p).unwrap_err(), Error::Truncated);
        // No message type: BOOTP.
        let mut bootp = buf[..241].to_vec();
        bootp[240] = opt::END;
        let p = DhcpPacket::new_checked(&bootp[..]).unwrap();
        assert_eq!(DhcpRepr::parse(&p).unwrap_err(), Error::Malformed);
    }

    #[test]
    fn pad_options_are_skipped() {
        let r = discover();
        let mut buf = vec![0u8; r.buffer_len() + 3];
        r.emit(&mut buf[..]);
        // Shift the options right by three pads.
        let opts = buf[240..buf.len() - 3].to_vec();
        buf[240..243].fill(opt::PAD);
        buf[243..].copy_from_slice(&opts);
        let p = DhcpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(DhcpRepr::parse(&p).unwrap(), r);
    }
}
