//! DHCPv6 messages (RFC 8415 §8, §21) with the options a server for one link needs: client and
//! server identifiers, one IA_NA with its address, the option request, rapid commit, status,
//! and DNS configuration (RFC 3646).

use super::ipv6::Ipv6Address;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Result};

pub const CLIENT_PORT: u16 = 546;
pub const SERVER_PORT: u16 = 547;

/// Message types (RFC 8415 §7.3).
pub mod msg {
    pub const SOLICIT: u8 = 1;
    pub const ADVERTISE: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const CONFIRM: u8 = 4;
    pub const RENEW: u8 = 5;
    pub const REBIND: u8 = 6;
    pub const REPLY: u8 = 7;
    pub const RELEASE: u8 = 8;
    pub const DECLINE: u8 = 9;
    pub const INFORMATION_REQUEST: u8 = 11;
}

/// Option codes (RFC 8415 §21, RFC 3646).
pub mod opt {
    pub const CLIENTID: u16 = 1;
    pub const SERVERID: u16 = 2;
    pub const IA_NA: u16 = 3;
    pub const IAADDR: u16 = 5;
    pub const ORO: u16 = 6;
    pub const PREFERENCE: u16 = 7;
    pub const ELAPSED_TIME: u16 = 8;
    pub const STATUS_CODE: u16 = 13;
    pub const RAPID_COMMIT: u16 = 14;
    pub const DNS_SERVERS: u16 = 23;
    pub const DOMAIN_LIST: u16 = 24;
}

/// Status codes (RFC 8415 §21.13).
pub mod status {
    pub const SUCCESS: u16 = 0;
    pub const NO_ADDRS_AVAIL: u16 = 2;
    pub const NO_BINDING: u16 = 3;
    pub const NOT_ON_LINK: u16 = 4;
}

/// An address in an IA (RFC 8415 §21.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaAddress {
    pub addr: Ipv6Address,
    pub preferred: u32,
    pub valid: u32,
}

/// An Identity Association for Non-temporary Addresses (RFC 8415 §21.4), with at most one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IaNa<'a> {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    pub addr: Option<IaAddress>,
    pub status: Option<(u16, &'a str)>,
}

/// A DHCPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dhcpv6Repr<'a> {
    pub msg_type: u8,
    pub transaction_id: u32,
    pub client_id: Option<&'a [u8]>,
    pub server_id: Option<&'a [u8]>,
    pub ia_na: Option<IaNa<'a>>,
    /// Requested options, as raw big-endian u16s.
    pub oro: Option<&'a [u8]>,
    pub rapid_commit: bool,
    pub preference: Option<u8>,
    pub status: Option<(u16, &'a str)>,
    /// DNS server addresses back to back.
    pub dns_servers: Option<&'a [u8]>,
    /// Domain names in DNS label form.
    pub domain_list: Option<&'a [u8]>,
}

fn options(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8])>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        if b.len() < 4 {
            b = &[];
            return Some(Err(Error::Truncated));
        }
        let (code, len) = (read_u16(b, 0), usize::from(read_u16(b, 2)));
        let Some(data) = b.get(4..4 + len) else {
            b = &[];
            return Some(Err(Error::Truncated));
        };
        b = &b[4 + len..];
        Some(Ok((code, data)))
    })
}

fn parse_status(d: &[u8]) -> Result<(u16, &str)> {
    if d.len() < 2 {
        return Err(Error::Truncated);
    }
    Ok((
        read_u16(d, 0),
        core::str::from_utf8(&d[2..]).map_err(|_| Error::Malformed)?,
    ))
}

/// RFC 8415 §11.1: a DUID is a 2-byte type and at most 128 bytes of identifier.
pub const MAX_DUID_LEN: usize = 130;

/// A DUID option's data: a type and something after it, at most [`MAX_DUID_LEN`] bytes.
fn duid(d: &[u8]) -> Result<&[u8]> {
    if (3..=MAX_DUID_LEN).contains(&d.len()) {
        Ok(d)
    } else {
        Err(Error::Malformed)
    }
}

impl<'a> Dhcpv6Repr<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self> {
        if b.len() < 4 {
            return Err(Error::Truncated);
        }
        let mut r = Dhcpv6Repr {
            msg_type: b[0],
            transaction_id: read_u32(b, 0) & 0x00ff_ffff,
            ..Dhcpv6Repr::default()
        };
        for o in options(&b[4..]) {
            let (code, d) = o?;
            match code {
                opt::CLIENTID => r.client_id = Some(duid(d)?),
                opt::SERVERID => r.server_id = Some(duid(d)?),
                opt::ORO => r.oro = Some(d),
                opt::RAPID_COMMIT => r.rapid_commit = true,
                opt::PREFERENCE if d.len() == 1 => r.preference = Some(d[0]),
                opt::STATUS_CODE => r.status = Some(parse_status(d)?),
                opt::DNS_SERVERS if d.len() % 16 == 0 => r.dns_servers = Some(d),
                opt::DOMAIN_LIST => r.domain_list = Some(d),
                // Clients send one IA_NA; a second one is not ours to serve (we answer the first).
                opt::IA_NA if r.ia_na.is_none() => {
                    if d.len() < 12 {
                        return Err(Error::Truncated);
                    }
                    let mut ia = IaNa {
                        iaid: read_u32(d, 0),
                        t1: read_u32(d, 4),
                        t2: read_u32(d, 8),
                        addr: None,
                        status: None,
                    };
                    for o in options(&d[12..]) {
                        let (code, d) = o?;
                        match code {
                            opt::IAADDR if d.len() >= 24 => {
                                ia.addr = Some(IaAddress {
                                    addr: Ipv6Address::from_bytes(&d[..16]),
                                    preferred: read_u32(d, 16),
                                    valid: read_u32(d, 20),
                                });
                            }
                            opt::STATUS_CODE => ia.status = Some(parse_status(d)?),
                            _ => {}
                        }
                    }
                    r.ia_na = Some(ia);
                }
                _ => {}
            }
        }
        Ok(r)
    }

    /// Whether the client asked for option `code` in its Option Request.
    pub fn requests(&self, code: u16) -> bool {
        self.oro.is_some_and(|o| {
            o.chunks_exact(2)
                .any(|c| u16::from_be_bytes([c[0], c[1]]) == code)
        })
    }

    pub fn buffer_len(&self) -> usize {
        let opt = |d: Option<usize>| d.map_or(0, |n| 4 + n);
        let status_len = |s: Option<(u16, &str)>| s.map(|(_, m)| 2 + m.len());
        4 + opt(self.client_id.map(<[u8]>::len))
            + opt(self.server_id.map(<[u8]>::len))
            + opt(self
                .ia_na
                .map(|ia| 12 + opt(ia.addr.map(|_| 24)) + opt(status_len(ia.status))))
            + opt(self.oro.map(<[u8]>::len))
            + opt(self.rapid_commit.then_some(0))
            + opt(self.preference.map(|_| 1))
            + opt(status_len(self.status))
            + opt(self.dns_servers.map(<[u8]>::len))
            + opt(self.domain_list.map(<[u8]>::len))
    }

    pub fn emit(&self, b: &mut [u8]) {
        write_u32(b, 0, self.transaction_id & 0x00ff_ffff);
        b[0] = self.msg_type;
        let mut at = 4;
        fn put(b: &mut [u8], at: &mut usize, code: u16, data: &[&[u8]]) {
            let len: usize = data.iter().map(|d| d.len()).sum();
            write_u16(b, *at, code);
            write_u16(b, *at + 2, len as u16);
            *at += 4;
            for d in data {
                b[*at..*at + d.len()].copy_from_slice(d);
                *at += d.len();
            }
        }
        if let Some(d) = self.client_id {
            put(b, &mut at, opt::CLIENTID, &[d]);
        }
        if let Some(d) = self.server_id {
            put(b, &mut at, opt::SERVERID, &[d]);
        }
        if let Some(ia) = self.ia_na {
            // The IA_NA's own options go straight after its 12 fixed bytes; its length is
            // written once they are in.
            let start = at;
            write_u16(b, start, opt::IA_NA);
            write_u32(b, start + 4, ia.iaid);
            write_u32(b, start + 8, ia.t1);
            write_u32(b, start + 12, ia.t2);
            at = start + 16;
            if let Some(a) = ia.addr {
                let mut addr = [0u8; 24];
                addr[..16].copy_from_slice(&a.addr.0);
                write_u32(&mut addr, 16, a.preferred);
                write_u32(&mut addr, 20, a.valid);
                put(b, &mut at, opt::IAADDR, &[&addr]);
            }
            if let Some((code, m)) = ia.status {
                put(
                    b,
                    &mut at,
                    opt::STATUS_CODE,
                    &[&code.to_be_bytes(), m.as_bytes()],
                );
            }
            write_u16(b, start + 2, (at - start - 4) as u16);
        }
        if let Some(d) = self.oro {
            put(b, &mut at, opt::ORO, &[d]);
        }
        if self.rapid_commit {
            put(b, &mut at, opt::RAPID_COMMIT, &[]);
        }
        if let Some(p) = self.preference {
            put(b, &mut at, opt::PREFERENCE, &[&[p]]);
        }
        if let Some((code, m)) = self.status {
            put(
                b,
                &mut at,
                opt::STATUS_CODE,
                &[&code.to_be_bytes(), m.as_bytes()],
            );
        }
        if let Some(d) = self.dns_servers {
            put(b, &mut at, opt::DNS_SERVERS, &[d]);
        }
        if let Some(d) = self.domain_list {
            put(b, &mut at, opt::DOMAIN_LIST, &[d]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `wire` fuzz target: a status message in the IA_NA longer than 64 bytes was
    /// cut short when emitted while `buffer_len` counted all of it.
    #[test]
    fn long_status_in_the_ia_roundtrips() {
        let message = "x".repeat(300);
        let r = Dhcpv6Repr {
            msg_type: msg::REPLY,
            transaction_id: 1,
            ia_na: Some(IaNa {
                iaid: 7,
                t1: 1,
                t2: 2,
                addr: None,
                status: Some((status::NO_ADDRS_AVAIL, &message)),
            }),
            ..Dhcpv6Repr::default()
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        assert_eq!(Dhcpv6Repr::parse(&b), Ok(r));
    }

    #[test]
    fn reply_roundtrip() {
        let dns = "fd00::3".parse::<Ipv6Address>().unwrap().0;
        let r = Dhcpv6Repr {
            msg_type: msg::REPLY,
            transaction_id: 0x123456,
            client_id: Some(&[0, 3, 0, 1, 1, 2, 3, 4, 5, 6]),
            server_id: Some(&[0, 3, 0, 1, 9, 9, 9, 9, 9, 9]),
            ia_na: Some(IaNa {
                iaid: 7,
                t1: 1800,
                t2: 2880,
                addr: Some(IaAddress {
                    addr: "fd00::100".parse().unwrap(),
                    preferred: 3600,
                    valid: 7200,
                }),
                status: Some((status::SUCCESS, "ok")),
            }),
            rapid_commit: true,
            dns_servers: Some(&dns),
            ..Dhcpv6Repr::default()
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b);
        assert_eq!(&b[..4], &[7, 0x12, 0x34, 0x56]);
        assert_eq!(Dhcpv6Repr::parse(&b).unwrap(), r);
    }

    #[test]
    fn solicit_from_a_client() {
        // SOLICIT, xid 0xabcdef, CLIENTID (DUID-LL), ORO (DNS, domain list), ELAPSED_TIME, IA_NA.
        let b = [
            1, 0xab, 0xcd, 0xef, //
            0, 1, 0, 10, 0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, //
            0, 6, 0, 4, 0, 23, 0, 24, //
            0, 8, 0, 2, 0, 0, //
            0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let r = Dhcpv6Repr::parse(&b).unwrap();
        assert_eq!((r.msg_type, r.transaction_id), (msg::SOLICIT, 0xabcdef));
        assert_eq!(r.client_id.unwrap().len(), 10);
        assert!(r.requests(opt::DNS_SERVERS) && r.requests(opt::DOMAIN_LIST));
        assert!(!r.requests(opt::PREFERENCE));
        assert_eq!(r.ia_na.unwrap().iaid, 1);
        assert_eq!(r.ia_na.unwrap().addr, None);
        // Truncated options are errors, not panics.
        assert_eq!(Dhcpv6Repr::parse(&b[..b.len() - 3]), Err(Error::Truncated));
    }

    #[test]
    fn duids_longer_than_rfc_8415_allows_are_malformed() {
        let with_duid = |len: usize| {
            let mut b = vec![1, 0, 0, 1, 0, 1];
            b.extend_from_slice(&(len as u16).to_be_bytes());
            b.extend(core::iter::repeat_n(7u8, len));
            b
        };
        assert_eq!(
            Dhcpv6Repr::parse(&with_duid(MAX_DUID_LEN)).map(|r| r.client_id.map(<[u8]>::len)),
            Ok(Some(MAX_DUID_LEN))
        );
        assert_eq!(
            Dhcpv6Repr::parse(&with_duid(MAX_DUID_LEN + 1)),
            Err(Error::Malformed)
        );
        assert_eq!(Dhcpv6Repr::parse(&with_duid(2)), Err(Error::Malformed));
    }
}
