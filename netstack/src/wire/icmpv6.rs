//! ICMPv6 (RFC 4443) with the Neighbor Discovery messages and options (RFC 4861, RFC 8106) and
//! MLD reports (RFC 2710, RFC 3810) as far as a gateway needs them.

use super::ethernet::EthernetAddress;
use super::ipv6::{pseudo_header_sum, Ipv6Address};
use super::{checksum, read_u16, read_u32, write_u16, write_u32, Error, Result};

pub const PROTO_ICMPV6: u8 = 58;

/// Message types.
pub mod msg {
    pub const DST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const MLD_QUERY: u8 = 130;
    pub const MLDV1_REPORT: u8 = 131;
    pub const MLDV1_DONE: u8 = 132;
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    pub const REDIRECT: u8 = 137;
    pub const MLDV2_REPORT: u8 = 143;
}

/// Destination Unreachable codes (RFC 4443 §3.1).
pub mod unreachable {
    pub const NO_ROUTE: u8 = 0;
    pub const ADMIN_PROHIBITED: u8 = 1;
    pub const ADDRESS: u8 = 3;
    pub const PORT: u8 = 4;
}

/// Neighbor Advertisement flags (RFC 4861 §4.4).
pub mod na_flags {
    pub const ROUTER: u8 = 0x80;
    pub const SOLICITED: u8 = 0x40;
    pub const OVERRIDE: u8 = 0x20;
}

/// Router Advertisement flags (RFC 4861 §4.2).
pub mod ra_flags {
    pub const MANAGED: u8 = 0x80;
    pub const OTHER: u8 = 0x40;
}

/// Prefix Information flags (RFC 4861 §4.6.2).
pub mod prefix_flags {
    pub const ON_LINK: u8 = 0x80;
    pub const AUTONOMOUS: u8 = 0x40;
}

mod option {
    pub const SOURCE_LLADDR: u8 = 1;
    pub const TARGET_LLADDR: u8 = 2;
    pub const PREFIX_INFO: u8 = 3;
    pub const MTU: u8 = 5;
    pub const RDNSS: u8 = 25;
    pub const DNSSL: u8 = 31;
}

/// A Prefix Information option (RFC 4861 §4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixInfo {
    pub prefix_len: u8,
    pub flags: u8,
    /// Seconds; 0xffffffff is infinity.
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
    pub prefix: Ipv6Address,
}

/// The NDP options a gateway sends or reads. RDNSS addresses and the DNSSL list are kept in their
/// wire form (addresses back to back; labels, zero-padded to 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NdpOptions<'a> {
    pub source_lladdr: Option<EthernetAddress>,
    pub target_lladdr: Option<EthernetAddress>,
    pub prefix: Option<PrefixInfo>,
    pub mtu: Option<u32>,
    /// RFC 8106 §5.1: lifetime (s) and the addresses.
    pub rdnss: Option<(u32, &'a [u8])>,
    /// RFC 8106 §5.2: lifetime (s) and the encoded domain names.
    pub dnssl: Option<(u32, &'a [u8])>,
}

impl<'a> NdpOptions<'a> {
    /// RFC 4861 §4.6: a zero-length option makes the message invalid.
    fn parse(mut b: &'a [u8]) -> Result<Self> {
        let mut o = NdpOptions::default();
        while !b.is_empty() {
            if b.len() < 2 {
                return Err(Error::Truncated);
            }
            let len = usize::from(b[1]) * 8;
            if len == 0 {
                return Err(Error::Malformed);
            }
            let body = b.get(..len).ok_or(Error::Truncated)?;
            match body[0] {
                option::SOURCE_LLADDR | option::TARGET_LLADDR if len >= 8 => {
                    let mac = EthernetAddress::from_bytes(&body[2..8]);
                    if body[0] == option::SOURCE_LLADDR {
                        o.source_lladdr = Some(mac);
                    } else {
                        o.target_lladdr = Some(mac);
                    }
                }
                option::PREFIX_INFO if len == 32 => {
                    o.prefix = Some(PrefixInfo {
                        prefix_len: body[2],
                        flags: body[3],
                        valid_lifetime: read_u32(body, 4),
                        preferred_lifetime: read_u32(body, 8),
                        prefix: Ipv6Address::from_bytes(&body[16..32]),
                    });
                }
                option::MTU if len == 8 => o.mtu = Some(read_u32(body, 4)),
                option::RDNSS if len >= 24 => o.rdnss = Some((read_u32(body, 4), &body[8..])),
                option::DNSSL if len >= 16 => o.dnssl = Some((read_u32(body, 4), &body[8..])),
                _ => {}
            }
            b = &b[len..];
        }
        Ok(o)
    }

    fn buffer_len(&self) -> usize {
        let mut n = 0;
        n += 8 * usize::from(self.source_lladdr.is_some());
        n += 8 * usize::from(self.target_lladdr.is_some());
        n += 32 * usize::from(self.prefix.is_some());
        n += 8 * usize::from(self.mtu.is_some());
        n += self.rdnss.map_or(0, |(_, a)| 8 + a.len());
        n += self
            .dnssl
            .map_or(0, |(_, d)| 8 + d.len().next_multiple_of(8));
        n
    }

    fn emit(&self, b: &mut [u8]) {
        let mut at = 0;
        let mut put = |kind: u8, len: usize, fill: &mut dyn FnMut(&mut [u8])| {
            let o = &mut b[at..at + len];
            o.fill(0);
            o[0] = kind;
            o[1] = (len / 8) as u8;
            fill(o);
            at += len;
        };
        if let Some(mac) = self.source_lladdr {
            put(option::SOURCE_LLADDR, 8, &mut |o| {
                o[2..8].copy_from_slice(&mac.0)
            });
        }
        if let Some(mac) = self.target_lladdr {
            put(option::TARGET_LLADDR, 8, &mut |o| {
                o[2..8].copy_from_slice(&mac.0)
            });
        }
        if let Some(mtu) = self.mtu {
            put(option::MTU, 8, &mut |o| write_u32(o, 4, mtu));
        }
        if let Some(p) = self.prefix {
            put(option::PREFIX_INFO, 32, &mut |o| {
                o[2] = p.prefix_len;
                o[3] = p.flags;
                write_u32(o, 4, p.valid_lifetime);
                write_u32(o, 8, p.preferred_lifetime);
                o[16..32].copy_from_slice(&p.prefix.0);
            });
        }
        if let Some((lifetime, addrs)) = self.rdnss {
            put(option::RDNSS, 8 + addrs.len(), &mut |o| {
                write_u32(o, 4, lifetime);
                o[8..].copy_from_slice(addrs);
            });
        }
        if let Some((lifetime, names)) = self.dnssl {
            put(
                option::DNSSL,
                8 + names.len().next_multiple_of(8),
                &mut |o| {
                    write_u32(o, 4, lifetime);
                    o[8..8 + names.len()].copy_from_slice(names);
                },
            );
        }
    }
}

/// Domain names in DNS label form (RFC 1035 §3.1), as RFC 8106 §5.2 carries them; names that are
/// not valid labels are skipped.
pub fn encode_domains(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names {
        let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
        if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
            continue;
        }
        for l in labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l.as_bytes());
        }
        out.push(0);
    }
    out
}

/// An ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    DstUnreachable {
        code: u8,
        data: &'a [u8],
    },
    PacketTooBig {
        mtu: u32,
        data: &'a [u8],
    },
    TimeExceeded {
        code: u8,
        data: &'a [u8],
    },
    ParamProblem {
        code: u8,
        pointer: u32,
        data: &'a [u8],
    },
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
    RouterSolicit {
        options: NdpOptions<'a>,
    },
    RouterAdvert {
        hop_limit: u8,
        flags: u8,
        /// Seconds.
        router_lifetime: u16,
        /// Milliseconds.
        reachable_time: u32,
        retrans_time: u32,
        options: NdpOptions<'a>,
    },
    NeighborSolicit {
        target: Ipv6Address,
        options: NdpOptions<'a>,
    },
    NeighborAdvert {
        flags: u8,
        target: Ipv6Address,
        options: NdpOptions<'a>,
    },
    /// An MLD report (v1 or v2) with the number of groups (records) it names.
    MldReport {
        version: u8,
        groups: u16,
    },
    /// Anything else (queries, redirects, unknown informational types).
    Other {
        msg_type: u8,
        code: u8,
    },
}

/// The largest message an error may quote (RFC 4443 §2.4(c): the whole error within the minimum
/// MTU, 1280 - 40 - 8).
pub const MAX_ERROR_QUOTE: usize = 1232;

impl<'a> Icmpv6Repr<'a> {
    /// Parses `b` (the ICMPv6 message), verifying its checksum against the addresses.
    pub fn parse(b: &'a [u8], src: Ipv6Address, dst: Ipv6Address) -> Result<Self> {
        if b.len() < 4 {
            return Err(Error::Truncated);
        }
        let sum = pseudo_header_sum(src, dst, PROTO_ICMPV6, b.len() as u32);
        if checksum::finish(checksum::accumulate(sum, b)) != 0 {
            return Err(Error::Checksum);
        }
        let (msg_type, code) = (b[0], b[1]);
        let need = |n: usize| {
            if b.len() < n {
                Err(Error::Truncated)
            } else {
                Ok(())
            }
        };
        Ok(match msg_type {
            msg::DST_UNREACHABLE | msg::TIME_EXCEEDED => {
                need(8)?;
                let data = &b[8..];
                if msg_type == msg::DST_UNREACHABLE {
                    Icmpv6Repr::DstUnreachable { code, data }
                } else {
                    Icmpv6Repr::TimeExceeded { code, data }
                }
            }
            msg::PACKET_TOO_BIG => {
                need(8)?;
                Icmpv6Repr::PacketTooBig {
                    mtu: read_u32(b, 4),
                    data: &b[8..],
                }
            }
            msg::PARAM_PROBLEM => {
                need(8)?;
                Icmpv6Repr::ParamProblem {
                    code,
                    pointer: read_u32(b, 4),
                    data: &b[8..],
                }
            }
            msg::ECHO_REQUEST | msg::ECHO_REPLY => {
                need(8)?;
                let (ident, seq_no, data) = (read_u16(b, 4), read_u16(b, 6), &b[8..]);
                if msg_type == msg::ECHO_REQUEST {
                    Icmpv6Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    }
                } else {
                    Icmpv6Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    }
                }
            }
            // RFC 4861 §6.1, §7.1.1: NDP messages with code 0 only (hop limit checked by the
            // caller, which has the IPv6 header).
            msg::ROUTER_SOLICIT if code == 0 => {
                need(8)?;
                Icmpv6Repr::RouterSolicit {
                    options: NdpOptions::parse(&b[8..])?,
                }
            }
            msg::ROUTER_ADVERT if code == 0 => {
                need(16)?;
                Icmpv6Repr::RouterAdvert {
                    hop_limit: b[4],
                    flags: b[5],
                    router_lifetime: read_u16(b, 6),
                    reachable_time: read_u32(b, 8),
                    retrans_time: read_u32(b, 12),
                    options: NdpOptions::parse(&b[16..])?,
                }
            }
            msg::NEIGHBOR_SOLICIT | msg::NEIGHBOR_ADVERT if code == 0 => {
                need(24)?;
                let target = Ipv6Address::from_bytes(&b[8..24]);
                if target.is_multicast() {
                    return Err(Error::Malformed);
                }
                let options = NdpOptions::parse(&b[24..])?;
                if msg_type == msg::NEIGHBOR_SOLICIT {
                    Icmpv6Repr::NeighborSolicit { target, options }
                } else {
                    Icmpv6Repr::NeighborAdvert {
                        flags: b[4],
                        target,
                        options,
                    }
                }
            }
            msg::MLDV1_REPORT => {
                need(24)?;
                Icmpv6Repr::MldReport {
                    version: 1,
                    groups: 1,
                }
            }
            msg::MLDV2_REPORT => {
                need(8)?;
                Icmpv6Repr::MldReport {
                    version: 2,
                    groups: read_u16(b, 6),
                }
            }
            msg::ROUTER_SOLICIT
            | msg::ROUTER_ADVERT
            | msg::NEIGHBOR_SOLICIT
            | msg::NEIGHBOR_ADVERT => return Err(Error::Malformed),
            _ => Icmpv6Repr::Other { msg_type, code },
        })
    }

    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::DstUnreachable { data, .. }
            | Icmpv6Repr::PacketTooBig { data, .. }
            | Icmpv6Repr::TimeExceeded { data, .. }
            | Icmpv6Repr::ParamProblem { data, .. } => 8 + data.len().min(MAX_ERROR_QUOTE),
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                8 + data.len()
            }
            Icmpv6Repr::RouterSolicit { options } => 8 + options.buffer_len(),
            Icmpv6Repr::RouterAdvert { options, .. } => 16 + options.buffer_len(),
            Icmpv6Repr::NeighborSolicit { options, .. }
            | Icmpv6Repr::NeighborAdvert { options, .. } => 24 + options.buffer_len(),
            // An MLDv1 report carries its group address (RFC 2710 §3.6); the repr does not keep
            // it, so it is emitted as the unspecified address.
            Icmpv6Repr::MldReport { version: 1, .. } => 24,
            Icmpv6Repr::MldReport { .. } | Icmpv6Repr::Other { .. } => 8,
        }
    }

    /// Whether this is an error message (types below 128, RFC 4443 §2.1).
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Icmpv6Repr::DstUnreachable { .. }
                | Icmpv6Repr::PacketTooBig { .. }
                | Icmpv6Repr::TimeExceeded { .. }
                | Icmpv6Repr::ParamProblem { .. }
        ) || matches!(self, Icmpv6Repr::Other { msg_type, .. } if *msg_type < 128)
    }

    /// Writes the message into `buf[..buffer_len]` with its checksum.
    pub fn emit(&self, buf: &mut [u8], src: Ipv6Address, dst: Ipv6Address) {
        let len = self.buffer_len();
        let b = &mut buf[..len];
        b[..8].fill(0);
        let (t, code) = match *self {
            Icmpv6Repr::DstUnreachable { code, data } => {
                b[8..].copy_from_slice(&data[..len - 8]);
                (msg::DST_UNREACHABLE, code)
            }
            Icmpv6Repr::PacketTooBig { mtu, data } => {
                write_u32(b, 4, mtu);
                b[8..].copy_from_slice(&data[..len - 8]);
                (msg::PACKET_TOO_BIG, 0)
            }
            Icmpv6Repr::TimeExceeded { code, data } => {
                b[8..].copy_from_slice(&data[..len - 8]);
                (msg::TIME_EXCEEDED, code)
            }
            Icmpv6Repr::ParamProblem {
                code,
                pointer,
                data,
            } => {
                write_u32(b, 4, pointer);
                b[8..].copy_from_slice(&data[..len - 8]);
                (msg::PARAM_PROBLEM, code)
            }
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                write_u16(b, 4, ident);
                write_u16(b, 6, seq_no);
                b[8..].copy_from_slice(data);
                let t = if matches!(self, Icmpv6Repr::EchoRequest { .. }) {
                    msg::ECHO_REQUEST
                } else {
                    msg::ECHO_REPLY
                };
                (t, 0)
            }
            Icmpv6Repr::RouterSolicit { options } => {
                options.emit(&mut b[8..]);
                (msg::ROUTER_SOLICIT, 0)
            }
            Icmpv6Repr::RouterAdvert {
                hop_limit,
                flags,
                router_lifetime,
                reachable_time,
                retrans_time,
                options,
            } => {
                b[4] = hop_limit;
                b[5] = flags;
                write_u16(b, 6, router_lifetime);
                write_u32(b, 8, reachable_time);
                write_u32(b, 12, retrans_time);
                options.emit(&mut b[16..]);
                (msg::ROUTER_ADVERT, 0)
            }
            Icmpv6Repr::NeighborSolicit { target, options } => {
                b[8..24].copy_from_slice(&target.0);
                options.emit(&mut b[24..]);
                (msg::NEIGHBOR_SOLICIT, 0)
            }
            Icmpv6Repr::NeighborAdvert {
                flags,
                target,
                options,
            } => {
                b[4] = flags;
                b[8..24].copy_from_slice(&target.0);
                options.emit(&mut b[24..]);
                (msg::NEIGHBOR_ADVERT, 0)
            }
            Icmpv6Repr::MldReport { version, groups } => {
                if version == 2 {
                    write_u16(b, 6, groups);
                } else {
                    b[8..24].fill(0);
                }
                (
                    if version == 2 {
                        msg::MLDV2_REPORT
                    } else {
                        msg::MLDV1_REPORT
                    },
                    0,
                )
            }
            Icmpv6Repr::Other { msg_type, code } => (msg_type, code),
        };
        b[0] = t;
        b[1] = code;
        let sum = pseudo_header_sum(src, dst, PROTO_ICMPV6, len as u32);
        let sum = checksum::finish(checksum::accumulate(sum, b));
        write_u16(b, 2, sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Address {
        s.parse().unwrap()
    }

    /// Found by the `wire` fuzz target: an MLDv1 report was emitted in 8 bytes, which its own
    /// parser (rightly) calls truncated.
    #[test]
    fn mld_reports_roundtrip() {
        for r in [
            Icmpv6Repr::MldReport {
                version: 1,
                groups: 1,
            },
            Icmpv6Repr::MldReport {
                version: 2,
                groups: 3,
            },
        ] {
            let (src, dst) = (
                Ipv6Address::new([0xfe80, 0, 0, 0, 0, 0, 0, 0x15]),
                Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 0, 0x16]),
            );
            let mut out = vec![0xffu8; r.buffer_len()];
            r.emit(&mut out, src, dst);
            assert_eq!(Icmpv6Repr::parse(&out, src, dst), Ok(r));
        }
    }

    #[test]
    fn router_advert_roundtrip() {
        let dns = a("fd00::3").0;
        let domains = encode_domains(&["example.internal"]);
        let ra = Icmpv6Repr::RouterAdvert {
            hop_limit: 64,
            flags: ra_flags::OTHER,
            router_lifetime: 1800,
            reachable_time: 0,
            retrans_time: 0,
            options: NdpOptions {
                source_lladdr: Some(EthernetAddress([0x52, 0x55, 10, 0, 2, 2])),
                prefix: Some(PrefixInfo {
                    prefix_len: 64,
                    flags: prefix_flags::ON_LINK | prefix_flags::AUTONOMOUS,
                    valid_lifetime: 86400,
                    preferred_lifetime: 14400,
                    prefix: a("fd00::"),
                }),
                mtu: Some(1500),
                rdnss: Some((600, &dns)),
                dnssl: Some((600, &domains)),
                ..NdpOptions::default()
            },
        };
        let (src, dst) = (a("fe80::2"), Ipv6Address::ALL_NODES);
        let mut b = vec![0u8; ra.buffer_len()];
        ra.emit(&mut b, src, dst);
        assert_eq!(b.len() % 8, 0);
        let back = Icmpv6Repr::parse(&b, src, dst).unwrap();
        let Icmpv6Repr::RouterAdvert { options, .. } = back else {
            panic!("{back:?}");
        };
        assert_eq!(options.prefix, ra_options(&ra).prefix);
        assert_eq!(options.rdnss, Some((600, &dns[..])));
        // DNSSL comes back padded to 8 bytes with zeros.
        let (_, names) = options.dnssl.unwrap();
        assert_eq!(&names[..domains.len()], &domains[..]);
        assert!(names[domains.len()..].iter().all(|&z| z == 0));
        assert_eq!(domains, b"\x07example\x08internal\x00");
        // A flipped bit fails the checksum.
        b[5] ^= 1;
        assert_eq!(Icmpv6Repr::parse(&b, src, dst), Err(Error::Checksum));
    }

    fn ra_options<'a>(r: &Icmpv6Repr<'a>) -> NdpOptions<'a> {
        match r {
            Icmpv6Repr::RouterAdvert { options, .. } => *options,
            _ => unreachable!(),
        }
    }

    #[test]
    fn neighbor_messages() {
        let ns = Icmpv6Repr::NeighborSolicit {
            target: a("fd00::2"),
            options: NdpOptions {
                source_lladdr: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
                ..NdpOptions::default()
            },
        };
        let (src, dst) = (a("fe80::1"), a("fd00::2").solicited_node());
        let mut b = vec![0u8; ns.buffer_len()];
        ns.emit(&mut b, src, dst);
        assert_eq!(Icmpv6Repr::parse(&b, src, dst).unwrap(), ns);
        // A zero-length option invalidates the message (RFC 4861 §4.6).
        let mut bad = b.clone();
        bad[25] = 0;
        let sum = pseudo_header_sum(src, dst, PROTO_ICMPV6, bad.len() as u32);
        bad[2..4].fill(0);
        let c = checksum::finish(checksum::accumulate(sum, &bad));
        bad[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(Icmpv6Repr::parse(&bad, src, dst), Err(Error::Malformed));
    }

    #[test]
    fn errors_quote_at_most_the_minimum_mtu() {
        let big = [7u8; 2000];
        let e = Icmpv6Repr::ParamProblem {
            code: 1,
            pointer: 40,
            data: &big,
        };
        assert_eq!(e.buffer_len(), 1240);
        assert!(e.is_error());
        let (src, dst) = (a("fd00::2"), a("fd00::15"));
        let mut b = vec![0u8; e.buffer_len()];
        e.emit(&mut b, src, dst);
        let Icmpv6Repr::ParamProblem { pointer, data, .. } =
            Icmpv6Repr::parse(&b, src, dst).unwrap()
        else {
            panic!()
        };
        assert_eq!((pointer, data.len()), (40, MAX_ERROR_QUOTE));
    }
}
