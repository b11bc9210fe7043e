//! The exerciser's probes: crafted frames towards the guest, each driving a named path of the
//! guest's kernel (docs/kernel-paths.md lists the path, the probe and the counters that prove it).
//!
//! A probe is a pure function from a [`ProbeContext`] (the addresses known on the link) and its
//! parameters to frames. Building one changes nothing in the stack; the frames are queued for the
//! guest like the stack's own (see [`crate::Stack::inject`]) and are, to the stack, only frames:
//! a probe that looks like a segment of a live connection does not touch that connection.
//!
//! Every probe takes `count` (how many times to send it, each with a fresh IP identification and
//! echo sequence number); the others are listed per probe. Addresses default to the guest's
//! learned ones (`to`) and the gateway's (`from`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::wire::craft::{self, Ipv4Header, Ipv6Header, IPV4_DF, IPV4_MF};
use crate::wire::ipv6::next_header as nh;
use crate::wire::{EthernetAddress, IpAddress, Ipv4Address, Ipv6Address};

/// The most frames one probe request may produce (all of them are queued at once).
pub const MAX_PROBE_FRAMES: usize = 256;
/// The most repetitions (`count`) of a probe.
pub const MAX_COUNT: u32 = 64;

/// What a probe needs to know about the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeContext {
    pub gateway_mac: EthernetAddress,
    /// The guest's MAC, as learned from its traffic.
    pub guest_mac: Option<EthernetAddress>,
    pub gateway_ipv4: Ipv4Address,
    /// The guest's IPv4 address (its DHCP lease, or the source of its traffic).
    pub guest_ipv4: Option<Ipv4Address>,
    /// The gateway's global IPv6 address (`fd00::2`), when IPv6 is served.
    pub gateway_ipv6: Option<Ipv6Address>,
    /// The guest's global IPv6 address as last seen.
    pub guest_ipv6: Option<Ipv6Address>,
    /// The link MTU.
    pub mtu: u16,
    /// A number that differs for every probe instance sent on this link: IP identifications and
    /// echo sequence numbers derive from it, so that probes never merge in the guest's
    /// reassembly queues.
    pub serial: u32,
    /// The guest's TCP connections through the gateway, for `for-flow`.
    pub flows: Vec<TcpFlow>,
}

/// A live TCP connection of the guest, as the gateway's end of it sees it: what a probe with
/// `for-flow` quotes or imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFlow {
    pub guest: (IpAddress, u16),
    pub remote: (IpAddress, u16),
    /// The next sequence number the gateway sends the guest (on an idle connection, what the
    /// guest expects next: RFC 5961's exact match).
    pub to_guest_next: u32,
    /// The next sequence number the gateway expects from the guest (its SND.NXT when idle).
    pub from_guest_next: u32,
    pub established: bool,
}

impl ProbeContext {
    /// The guest's link-local address: EUI-64 from its MAC (Linux's default address generation).
    pub fn guest_link_local(&self) -> Option<Ipv6Address> {
        self.guest_mac.map(Ipv6Address::link_local_from_mac)
    }
}

/// Why a probe could not be built: a bad parameter or an address not known yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(pub String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

type Result<T> = std::result::Result<T, ProbeError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(ProbeError(msg.into()))
}

/// A built-in probe.
pub struct Probe {
    pub name: &'static str,
    /// The guest kernel path it drives.
    pub drives: &'static str,
    /// The guest's counters (or visible state) that prove the path ran.
    pub proves: &'static str,
    /// Its parameters besides `count`, each `name=default: meaning`.
    pub params: &'static [&'static str],
    build: fn(&mut Build) -> Result<()>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("Probe").field("name", &self.name).finish()
    }
}

impl Probe {
    /// Its parameters, `count` first: name, default (empty: none or the learned address) and
    /// meaning.
    pub fn param_docs(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let mut out = vec![("count", "1", "times to send it, 1 to 64")];
        for p in self.params {
            let (head, meaning) = p.split_once(": ").unwrap_or((p, ""));
            let (name, default) = head.split_once('=').unwrap_or((head, ""));
            let meaning = match (name, meaning) {
                ("to", "") => "destination address (default: the guest's)",
                ("from", "") => "source address (default: the gateway's)",
                ("peer", "") => "the remote end of the quoted flow",
                ("ttl", "") => "IPv4 TTL",
                ("hop-limit", "") => "IPv6 hop limit",
                ("size", "") => "echo data bytes",
                ("fragment", "") => "bytes per fragment (a multiple of 8)",
                ("seed", "") => "seed of the order",
                _ => meaning,
            };
            out.push((name, default, meaning));
        }
        out
    }

    /// The names of its parameters, `count` first.
    pub fn param_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once("count").chain(
            self.params
                .iter()
                .map(|p| p.split(['=', ':']).next().unwrap_or(p)),
        )
    }

    /// The frames of this probe for `ctx` with `params` (by name, as text), `count` times.
    pub fn build(
        &self,
        ctx: &ProbeContext,
        params: &BTreeMap<String, String>,
    ) -> Result<Vec<Vec<u8>>> {
        for k in params.keys() {
            if !self.param_names().any(|n| n == k) {
                let known: Vec<_> = self.param_names().collect();
                return err(format!(
                    "{}: unknown parameter {k} (it takes {})",
                    self.name,
                    known.join(", ")
                ));
            }
        }
        let mut b = Build {
            ctx,
            params,
            instance: 0,
            frames: Vec::new(),
        };
        let count: u32 = b.get("count", 1)?;
        if count == 0 || count > MAX_COUNT {
            return err(format!("count must be 1 to {MAX_COUNT}"));
        }
        for i in 0..count {
            b.instance = i;
            (self.build)(&mut b)?;
            if b.frames.len() > MAX_PROBE_FRAMES {
                return err(format!(
                    "{}: more than {MAX_PROBE_FRAMES} frames; ask for fewer",
                    self.name
                ));
            }
        }
        Ok(b.frames)
    }
}

/// The probe called `name`.
pub fn find(name: &str) -> Option<&'static Probe> {
    PROBES.iter().find(|p| p.name == name)
}

/// One probe being built: its parameters, the instance (of `count`) and the frames so far.
struct Build<'a> {
    ctx: &'a ProbeContext,
    params: &'a BTreeMap<String, String>,
    instance: u32,
    frames: Vec<Vec<u8>>,
}

/// The identifier of the echo requests probes send (`vg`); replies carry it back.
pub const ECHO_IDENT: u16 = 0x7667;

impl Build<'_> {
    fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.params.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ProbeError(format!("{name}: cannot read {v:?}"))),
        }
    }

    fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>> {
        self.params
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ProbeError(format!("{name}: cannot read {v:?}")))
            })
            .transpose()
    }

    /// The flow `for-flow` names: the guest's connection with that port at either end.
    fn flow(&self) -> Result<Option<TcpFlow>> {
        let Some(port) = self.opt::<u16>("for-flow")? else {
            return Ok(None);
        };
        self.ctx
            .flows
            .iter()
            .find(|f| f.guest.1 == port || f.remote.1 == port)
            .copied()
            .map(Some)
            .ok_or_else(|| {
                ProbeError(format!(
                    "for-flow {port}: the guest has no TCP connection with that port"
                ))
            })
    }

    /// This instance's serial number (IP identification, echo sequence).
    fn serial(&self) -> u32 {
        self.ctx.serial.wrapping_add(self.instance)
    }

    fn guest_mac(&self) -> EthernetAddress {
        // Before the guest spoke: broadcast still reaches it.
        self.ctx.guest_mac.unwrap_or(EthernetAddress::BROADCAST)
    }

    fn v4_to(&self) -> Result<Ipv4Address> {
        match self.opt::<std::net::Ipv4Addr>("to")? {
            Some(a) => Ok(a.into()),
            None => self.ctx.guest_ipv4.ok_or_else(|| {
                ProbeError("the guest's IPv4 address is not known yet: give to=ADDR".into())
            }),
        }
    }

    fn v4_from(&self) -> Result<Ipv4Address> {
        Ok(self
            .opt::<std::net::Ipv4Addr>("from")?
            .map_or(self.ctx.gateway_ipv4, Into::into))
    }

    fn v6_to(&self) -> Result<Ipv6Address> {
        match self.opt::<std::net::Ipv6Addr>("to")? {
            Some(a) => Ok(a.into()),
            None => self.ctx.guest_ipv6.ok_or_else(|| {
                ProbeError("the guest's IPv6 address is not known yet: give to=ADDR".into())
            }),
        }
    }

    fn v6_from(&self) -> Result<Ipv6Address> {
        match self.opt::<std::net::Ipv6Addr>("from")? {
            Some(a) => Ok(a.into()),
            None => self
                .ctx
                .gateway_ipv6
                .ok_or_else(|| ProbeError("IPv6 is off (--no-ipv6)".into())),
        }
    }

    /// The gateway's link-local address, the source of NDP and MLD (or `from`).
    fn v6_from_link_local(&self) -> Result<Ipv6Address> {
        Ok(self
            .opt::<std::net::Ipv6Addr>("from")?
            .map_or(crate::config::GATEWAY_LINK_LOCAL, Into::into))
    }

    /// An IPv4 header from `from` to `to` with this instance's identification.
    fn ipv4(&self, protocol: u8) -> Result<Ipv4Header> {
        let mut h = Ipv4Header::new(self.v4_from()?, self.v4_to()?, protocol);
        h.ident = self.serial() as u16;
        h.ttl = self.get("ttl", 64)?;
        Ok(h)
    }

    fn ipv6(&self, next: u8) -> Result<Ipv6Header> {
        let mut h = Ipv6Header::new(self.v6_from()?, self.v6_to()?, next);
        h.hop_limit = self.get("hop-limit", 64)?;
        Ok(h)
    }

    /// An echo request of `size` data bytes, this instance's sequence number.
    fn echo4(&self, size: usize) -> Vec<u8> {
        craft::icmpv4(8, 0, self.echo_rest(), &pattern(size))
    }

    fn echo6(&self, size: usize, src: Ipv6Address, dst: Ipv6Address) -> Vec<u8> {
        craft::icmpv6(128, 0, self.echo_rest(), &pattern(size), src, dst)
    }

    fn echo_rest(&self) -> [u8; 4] {
        let [a, b] = ECHO_IDENT.to_be_bytes();
        let [c, d] = (self.serial() as u16).to_be_bytes();
        [a, b, c, d]
    }

    fn push_eth(&mut self, dst: EthernetAddress, ethertype: u16, payload: &[u8]) {
        let f = craft::ethernet(dst, self.ctx.gateway_mac, ethertype, payload);
        self.frames.push(f);
    }

    fn push4(&mut self, ip: &[u8]) {
        let dst = self.guest_mac();
        self.push_eth(dst, 0x0800, ip);
    }

    fn push6(&mut self, ip: &[u8]) {
        let dst = match ip.get(24..40) {
            Some(d) if d[0] == 0xff => Ipv6Address::from_bytes(d).multicast_mac(),
            _ => self.guest_mac(),
        };
        self.push_eth(dst, 0x86dd, ip);
    }

    /// The TCP header of the guest's next segment on `flow` (ports and sequence number: what an
    /// ICMP error must quote for the guest to deliver it to the socket).
    fn quoted_tcp(flow: &TcpFlow) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&flow.guest.1.to_be_bytes());
        t[2..4].copy_from_slice(&flow.remote.1.to_be_bytes());
        t[4..8].copy_from_slice(&flow.from_guest_next.to_be_bytes());
        t[8..12].copy_from_slice(&flow.to_guest_next.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18;
        t
    }

    /// A packet the guest sent earlier, as an ICMP error quotes it: its echo reply to `peer`, or
    /// with `for-flow` its next segment on that TCP connection.
    fn quoted_v4(&self) -> Result<Vec<u8>> {
        if let Some(f) = self.flow()? {
            let (IpAddress::V4(g), IpAddress::V4(r)) = (f.guest.0, f.remote.0) else {
                return err("for-flow names an IPv6 connection: use the icmpv6 probes");
            };
            let mut h = Ipv4Header::new(g, r, 6);
            h.flags_frag = IPV4_DF;
            return Ok(h.emit(&Self::quoted_tcp(&f)));
        }
        let peer: std::net::Ipv4Addr =
            self.get("peer", std::net::Ipv4Addr::new(198, 51, 100, 1))?;
        let mut h = Ipv4Header::new(self.v4_to()?, peer.into(), 1);
        h.flags_frag = IPV4_DF;
        h.ident = self.serial() as u16;
        Ok(h.emit(&craft::icmpv4(0, 0, self.echo_rest(), &pattern(56))))
    }

    fn quoted_v6(&self) -> Result<Vec<u8>> {
        if let Some(f) = self.flow()? {
            let (IpAddress::V6(g), IpAddress::V6(r)) = (f.guest.0, f.remote.0) else {
                return err("for-flow names an IPv4 connection: use the icmpv4 probes");
            };
            return Ok(Ipv6Header::new(g, r, 6).emit(&Self::quoted_tcp(&f)));
        }
        let peer: std::net::Ipv6Addr = self.get("peer", "2001:db8::1".parse().unwrap())?;
        let (src, dst) = (self.v6_to()?, peer.into());
        let reply = craft::icmpv6(129, 0, self.echo_rest(), &pattern(56), src, dst);
        Ok(Ipv6Header::new(src, dst, 58).emit(&reply))
    }

    /// An ICMPv4 error from `from` (the gateway) to the guest quoting [`Build::quoted_v4`].
    fn icmpv4_error(&mut self, msg_type: u8, code: u8, rest: [u8; 4]) -> Result<()> {
        let quoted = self.quoted_v4()?;
        // RFC 792: the IP header and the first 64 bits of the datagram's data; Linux sends more.
        let icmp = craft::icmpv4(msg_type, code, rest, &quoted[..quoted.len().min(576 - 28)]);
        let ip = self.ipv4(1)?.emit(&icmp);
        self.push4(&ip);
        Ok(())
    }

    fn icmpv6_error(&mut self, msg_type: u8, code: u8, rest: [u8; 4]) -> Result<()> {
        let quoted = self.quoted_v6()?;
        let h = self.ipv6(58)?;
        let icmp = craft::icmpv6(msg_type, code, rest, &quoted, h.src, h.dst);
        self.push6(&h.emit(&icmp));
        Ok(())
    }
}

/// Recognisable payload bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect()
}

/// How a fragmented datagram is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FragMode {
    InOrder,
    Reversed,
    /// A seeded shuffle.
    Random,
    /// Every fragment twice (identical overlaps).
    Duplicate,
    /// In order, plus a fragment that overlaps two others with different bytes.
    Overlap,
    /// Without the middle fragment: never completes.
    Missing,
    /// The first fragment alone: never completes.
    FirstOnly,
    /// Eight-byte fragments.
    Tiny,
    /// Fragments of a datagram longer than 65535 bytes.
    Oversize,
    /// IPv6: a non-last fragment whose length is not a multiple of eight.
    Unaligned,
}

/// The pieces (offset, bytes, more-fragments) of `data` in `mode`, `size` bytes each (a multiple
/// of eight).
fn fragments(
    data: &[u8],
    size: usize,
    mode: FragMode,
    seed: u64,
) -> Result<Vec<(usize, Vec<u8>, bool)>> {
    let size = if mode == FragMode::Tiny { 8 } else { size };
    if size == 0 || size % 8 != 0 {
        return err("fragment must be a positive multiple of 8");
    }
    let mut pieces: Vec<(usize, Vec<u8>, bool)> = data
        .chunks(size)
        .enumerate()
        .map(|(i, c)| (i * size, c.to_vec(), (i + 1) * size < data.len()))
        .collect();
    if pieces.len() > MAX_PROBE_FRAMES {
        return err(format!(
            "{} fragments: more than {MAX_PROBE_FRAMES}",
            pieces.len()
        ));
    }
    match mode {
        FragMode::InOrder | FragMode::Tiny | FragMode::Oversize | FragMode::Unaligned => {}
        FragMode::Reversed => pieces.reverse(),
        FragMode::Random => {
            // Fisher-Yates with xorshift64*: the same seed gives the same order.
            let mut x = seed | 1;
            for i in (1..pieces.len()).rev() {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
                pieces.swap(i, (r % (i as u64 + 1)) as usize);
            }
        }
        FragMode::Duplicate => {
            pieces = pieces.into_iter().flat_map(|p| [p.clone(), p]).collect();
        }
        FragMode::Overlap => {
            if pieces.len() < 2 {
                return err("an overlap needs at least two fragments: a larger size");
            }
            // Straddles the first two fragments with other bytes (RFC 5722's attack shape).
            let at = (size / 2) & !7;
            pieces.insert(1, (at, vec![0xee; size], true));
        }
        FragMode::Missing => {
            if pieces.len() < 3 {
                return err("a missing middle needs at least three fragments: a larger size");
            }
            pieces.remove(pieces.len() / 2);
        }
        FragMode::FirstOnly => pieces.truncate(1),
    }
    Ok(pieces)
}

fn frag4(b: &mut Build, mode: FragMode) -> Result<()> {
    let (data, size) = if mode == FragMode::Oversize {
        // Whole fragments up to the largest offset the field can carry, then one that ends
        // beyond 65535 bytes.
        (pattern(65528 + 1000), 1480)
    } else {
        let default_size = if mode == FragMode::Tiny { 200 } else { 3000 };
        (
            b.echo4(b.get("size", default_size)?),
            b.get("fragment", 1024)?,
        )
    };
    let seed = b.get("seed", 1)?;
    let base = b.ipv4(1)?;
    for (offset, bytes, more) in fragments(&data, size, mode, seed)? {
        let mut h = base.clone();
        h.flags_frag = (offset / 8) as u16 | if more { IPV4_MF } else { 0 };
        let ip = h.emit(&bytes);
        b.push4(&ip);
    }
    Ok(())
}

fn frag6(b: &mut Build, mode: FragMode) -> Result<()> {
    let h = b.ipv6(nh::FRAGMENT)?;
    let ident = 0x7667_0000 | (b.serial() & 0xffff);
    let frames: Vec<(usize, Vec<u8>, bool)> = match mode {
        // One fragment that ends beyond 65535 bytes (RFC 8200 §4.5: Parameter Problem).
        FragMode::Oversize => vec![(65528, pattern(16), false)],
        FragMode::Unaligned => {
            let size: usize = b.get("fragment", 1232)?;
            let len = (size & !7) + 4;
            vec![(0, b.echo6(3000, h.src, h.dst)[..len].to_vec(), true)]
        }
        _ => {
            let echo = b.echo6(b.get("size", 3000)?, h.src, h.dst);
            fragments(&echo, b.get("fragment", 1232)?, mode, b.get("seed", 1)?)?
        }
    };
    for (offset, bytes, more) in frames {
        let mut payload = craft::fragment_header(58, offset, more, ident).to_vec();
        payload.extend_from_slice(&bytes);
        let ip = h.emit(&payload);
        b.push6(&ip);
    }
    Ok(())
}

/// An echo request to the guest wrapped in IPv6 `chain` (extension headers ending in next
/// header 58) after a first header of type `first`.
fn echo6_with_chain(b: &mut Build, first: u8, chain: &[u8]) -> Result<()> {
    let h = b.ipv6(first)?;
    let mut payload = chain.to_vec();
    payload.extend_from_slice(&b.echo6(b.get("size", 56)?, h.src, h.dst));
    b.push6(&h.emit(&payload));
    Ok(())
}

fn echo4_with(b: &mut Build, edit: impl FnOnce(&mut Ipv4Header)) -> Result<()> {
    let mut h = b.ipv4(1)?;
    edit(&mut h);
    let ip = h.emit(&b.echo4(b.get("size", 56)?));
    b.push4(&ip);
    Ok(())
}

/// A multicast group parameter with its family's default.
fn group(b: &Build, default: &str) -> Result<IpAddress> {
    let g: std::net::IpAddr = b.get("group", default.parse().unwrap())?;
    let g = match g {
        std::net::IpAddr::V4(a) => IpAddress::V4(a.into()),
        std::net::IpAddr::V6(a) => IpAddress::V6(a.into()),
    };
    let multicast = match g {
        IpAddress::V4(a) => a.is_multicast(),
        IpAddress::V6(a) => a.is_multicast(),
    };
    if !multicast {
        return err(format!("group {g} is not a multicast address"));
    }
    Ok(g)
}

/// The Ethernet address of an IPv4 group (RFC 1112 §6.4).
fn ipv4_multicast_mac(g: Ipv4Address) -> EthernetAddress {
    EthernetAddress([0x01, 0x00, 0x5e, g.0[1] & 0x7f, g.0[2], g.0[3]])
}

/// The Router Alert option: IPv4 (RFC 2113) and IPv6 (RFC 2711, value 0: MLD).
const IPV4_ROUTER_ALERT: [u8; 4] = [0x94, 4, 0, 0];
const IPV6_ROUTER_ALERT: [u8; 4] = [5, 2, 0, 0];

fn ndp_source_lladdr(mac: EthernetAddress) -> Vec<u8> {
    let mut o = vec![1, 1];
    o.extend_from_slice(&mac.0);
    o
}

/// An NDP or MLD message from `src` with hop limit `hop` (255 for NDP, 1 for MLD) and an optional
/// Hop-by-Hop Router Alert.
fn push_icmpv6_link(
    b: &mut Build,
    src: Ipv6Address,
    dst: Ipv6Address,
    hop: u8,
    router_alert: bool,
    msg: (u8, u8, [u8; 4], Vec<u8>),
) {
    let icmp = craft::icmpv6(msg.0, msg.1, msg.2, &msg.3, src, dst);
    let (first, mut payload) = if router_alert {
        (
            nh::HOP_BY_HOP,
            craft::options_header(58, &IPV6_ROUTER_ALERT),
        )
    } else {
        (58, Vec::new())
    };
    payload.extend_from_slice(&icmp);
    let mut h = Ipv6Header::new(src, dst, first);
    h.hop_limit = hop;
    b.push6(&h.emit(&payload));
}

fn parse_tcp_flags(s: &str) -> Result<u8> {
    s.chars().try_fold(0u8, |f, c| {
        Ok(f | match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            _ => return err(format!("flags: {c:?} is none of FSRPAUEC")),
        })
    })
}

/// A TCP segment to the guest (20-byte header, no options) from `from:sport` to `to:dport`.
fn tcp_segment(b: &mut Build, bad_checksum: bool) -> Result<()> {
    let flow = b.flow()?;
    let sport: u16 = b.get("sport", flow.map_or(40000, |f| f.remote.1))?;
    let dport: u16 = b.get("dport", flow.map_or(7, |f| f.guest.1))?;
    // With a flow: the sequence the guest expects next, moved by `seq-offset` (RFC 5961: an RST
    // exactly there resets, elsewhere in the window draws a challenge ACK, outside is dropped).
    let offset: i64 = b.get("seq-offset", 0)?;
    let base = flow.map_or(1000, |f| f.to_guest_next);
    let seq: u32 = b.get("seq", (i64::from(base) + offset) as u32)?;
    let ack: u32 = b.get("ack", flow.map_or(0, |f| f.from_guest_next))?;
    let flags = parse_tcp_flags(&b.get("flags", String::from("S"))?)?;
    let window: u16 = b.get("window", 64240)?;
    let data = pattern(b.get("size", 0)?);
    let mut seg = vec![0u8; 20];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&ack.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = flags;
    seg[14..16].copy_from_slice(&window.to_be_bytes());
    seg.extend_from_slice(&data);
    let v6 = matches!(b.params.get("to"), Some(t) if t.contains(':')) || b.get("family", 4u8)? == 6;
    let (src, dst): (IpAddress, IpAddress) = match flow {
        Some(f) => (f.remote.0, f.guest.0),
        None if v6 => (b.v6_from()?.into(), b.v6_to()?.into()),
        None => (b.v4_from()?.into(), b.v4_to()?.into()),
    };
    let pseudo = IpAddress::pseudo_header_sum(src, dst, 6, seg.len() as u32);
    let sum = crate::wire::checksum::finish(crate::wire::checksum::accumulate(pseudo, &seg));
    let sum = if bad_checksum { !sum } else { sum };
    seg[16..18].copy_from_slice(&sum.to_be_bytes());
    match (src, dst) {
        (IpAddress::V6(s), IpAddress::V6(d)) => {
            let mut h = Ipv6Header::new(s, d, 6);
            h.hop_limit = b.get("hop-limit", 64)?;
            b.push6(&h.emit(&seg));
        }
        (IpAddress::V4(s), IpAddress::V4(d)) => {
            let mut h = Ipv4Header::new(s, d, 6);
            h.ident = b.serial() as u16;
            h.ttl = b.get("ttl", 64)?;
            b.push4(&h.emit(&seg));
        }
        _ => return err("from and to are of different families"),
    }
    Ok(())
}

/// The `for-flow` parameter of the ICMP error probes.
const FOR_FLOW: &str = "for-flow: quote the guest's TCP connection with this port";

/// Every built-in probe, in the order of docs/kernel-paths.md.
pub static PROBES: &[Probe] = &[
    // The NIC.
    Probe {
        name: "eth-runt",
        drives: "virtnet receive_buf: a frame shorter than an Ethernet header",
        proves: "rx_length_errors",
        params: &["len=10: frame length (below 14)"],
        build: |b| {
            let len: usize = b.get("len", 10)?;
            let f = craft::ethernet(b.guest_mac(), b.ctx.gateway_mac, 0x0800, &[0x45; 64]);
            b.frames.push(f[..len.min(f.len())].to_vec());
            Ok(())
        },
    },
    Probe {
        name: "eth-oversize",
        drives: "a frame above the MTU: virtio-net takes it, ip_rcv delivers, the reply is fragmented",
        proves: "IcmpInEchos, IpFragCreates",
        params: &["size=MTU+100: echo data bytes", "to", "from", "ttl"],
        build: |b| {
            let size = b.get("size", usize::from(b.ctx.mtu) + 100)?;
            let ip = b.ipv4(1)?.emit(&b.echo4(size));
            b.push4(&ip);
            Ok(())
        },
    },
    Probe {
        name: "eth-bad-ethertype",
        drives: "__netif_receive_skb_core with no protocol handler",
        proves: "rx_dropped",
        params: &["ethertype=0x88b5: the EtherType (decimal or 0x hex)"],
        build: |b| {
            let text = b.get("ethertype", String::from("0x88b5"))?;
            let t = parse_u16(&text)
                .ok_or_else(|| ProbeError(format!("ethertype: cannot read {text:?}")))?;
            let dst = b.guest_mac();
            b.push_eth(dst, t, &pattern(46));
            Ok(())
        },
    },
    Probe {
        name: "eth-vlan",
        drives: "802.1Q receive (vlan_do_receive) without a VLAN device: other host",
        proves: "rx_otherhost_dropped; with a VLAN device on VID, IcmpInEchos",
        params: &["vid=100: VLAN ID", "to", "from"],
        build: |b| {
            let vid: u16 = b.get("vid", 100)?;
            let mut tagged = (vid & 0x0fff).to_be_bytes().to_vec();
            tagged.extend_from_slice(&0x0800u16.to_be_bytes());
            tagged.extend_from_slice(&b.ipv4(1)?.emit(&b.echo4(56)));
            let dst = b.guest_mac();
            b.push_eth(dst, 0x8100, &tagged);
            Ok(())
        },
    },
    Probe {
        name: "eth-foreign-mac",
        drives: "ip_rcv_core: PACKET_OTHERHOST (a frame for another station)",
        proves: "rx_otherhost_dropped; IpInReceives unchanged",
        params: &["mac=02:00:00:00:00:01: the destination MAC", "to", "from"],
        build: |b| {
            let mac: String = b.get("mac", String::from("02:00:00:00:00:01"))?;
            let mac = parse_mac(&mac).ok_or_else(|| ProbeError(format!("mac: {mac:?}")))?;
            let ip = b.ipv4(1)?.emit(&b.echo4(56));
            b.push_eth(mac, 0x0800, &ip);
            Ok(())
        },
    },
    // IPv4 header.
    Probe {
        name: "ipv4-echo",
        drives: "ip_rcv_core -> ip_local_deliver -> icmp_echo",
        proves: "IpInReceives, IpInDelivers, IcmpInEchos, IcmpOutEchoReps; ECN: IpExtInECT0Pkts/InECT1Pkts/InCEPkts",
        params: &[
            "size=56: data bytes",
            "ttl=64",
            "ecn=0: ECN field (1 ECT(1), 2 ECT(0), 3 CE)",
            "dscp=0",
            "df=0: 1 sets Don't Fragment",
            "to",
            "from",
        ],
        build: |b| {
            let ecn: u8 = b.get("ecn", 0)?;
            let dscp: u8 = b.get("dscp", 0)?;
            let df: u8 = b.get("df", 0)?;
            echo4_with(b, |h| {
                h.tos = (dscp << 2) | (ecn & 3);
                if df != 0 {
                    h.flags_frag = IPV4_DF;
                }
            })
        },
    },
    Probe {
        name: "ipv4-bad-version",
        drives: "ip_rcv_core header check: version",
        proves: "IpInHdrErrors",
        params: &["version=6", "to", "from"],
        build: |b| {
            let v = b.get("version", 6)?;
            echo4_with(b, |h| h.version = v)
        },
    },
    Probe {
        name: "ipv4-bad-ihl",
        drives: "ip_rcv_core header check: IHL below 5",
        proves: "IpInHdrErrors",
        params: &["ihl=4", "to", "from"],
        build: |b| {
            let ihl = b.get("ihl", 4)?;
            echo4_with(b, |h| h.ihl = Some(ihl))
        },
    },
    Probe {
        name: "ipv4-bad-checksum",
        drives: "ip_rcv_core: ip_fast_csum fails",
        proves: "IpInHdrErrors, IpExtInCsumErrors",
        params: &["to", "from"],
        build: |b| {
            let mut h = b.ipv4(1)?;
            let good = h.emit(&[]);
            h.checksum = Some(u16::from_be_bytes([good[10], good[11]]) ^ 0x0101);
            let ip = h.emit(&b.echo4(56));
            b.push4(&ip);
            Ok(())
        },
    },
    Probe {
        name: "ipv4-truncated",
        drives: "ip_rcv_core: total length beyond the frame",
        proves: "IpExtInTruncatedPkts",
        params: &["excess=100: bytes the total length claims beyond the packet", "to", "from"],
        build: |b| {
            let excess: u16 = b.get("excess", 100)?;
            let size = 56;
            echo4_with(b, |h| h.total_len = Some(20 + 8 + size + excess))
        },
    },
    Probe {
        name: "ipv4-padded",
        drives: "ip_rcv_core: pskb_trim_rcsum of a short packet in a padded 60-byte frame",
        proves: "IcmpInEchos, IcmpOutEchoReps (the padding is trimmed: no checksum error)",
        params: &["to", "from"],
        build: |b| {
            let ip = b.ipv4(1)?.emit(&b.echo4(4));
            let mut f = craft::ethernet(b.guest_mac(), b.ctx.gateway_mac, 0x0800, &ip);
            // Padding that would break the ICMP checksum if it were not trimmed.
            f.resize(60, 0xa5);
            b.frames.push(f);
            Ok(())
        },
    },
    Probe {
        name: "ipv4-option-rr",
        drives: "ip_options_compile: Record Route (the reply records the guest)",
        proves: "IcmpInEchos, IcmpOutEchoReps",
        params: &["to", "from"],
        build: |b| {
            // RFC 791: type 7, length 39 (nine slots), pointer 4; then End of Options.
            let mut rr = vec![7, 39, 4];
            rr.resize(39, 0);
            echo4_with(b, |h| h.options = rr)
        },
    },
    Probe {
        name: "ipv4-option-ts",
        drives: "ip_options_compile: Timestamp (timestamps only)",
        proves: "IcmpInEchos, IcmpOutEchoReps",
        params: &["to", "from"],
        build: |b| {
            // RFC 791: type 68, length 36, pointer 5, overflow 0 / flag 0 (timestamps only).
            let mut ts = vec![68, 36, 5, 0];
            ts.resize(36, 0);
            echo4_with(b, |h| h.options = ts)
        },
    },
    Probe {
        name: "ipv4-option-bad",
        drives: "ip_options_compile: an option length beyond the header",
        proves: "IpInHdrErrors, IcmpOutParmProbs",
        params: &["to", "from"],
        build: |b| echo4_with(b, |h| h.options = vec![7, 40, 4, 0]),
    },
    Probe {
        name: "ipv4-foreign-dst",
        drives: "ip_route_input: not ours, forwarding off -> ip_error",
        proves: "IpInAddrErrors",
        params: &["to=192.0.2.99", "from"],
        build: |b| {
            let to: std::net::Ipv4Addr = b.get("to", std::net::Ipv4Addr::new(192, 0, 2, 99))?;
            let mut h = Ipv4Header::new(b.v4_from()?, to.into(), 1);
            h.ident = b.serial() as u16;
            let ip = h.emit(&b.echo4(56));
            b.push4(&ip);
            Ok(())
        },
    },
    // IPv4 fragments.
    Probe {
        name: "ipv4-frag",
        drives: "ip_defrag -> ip_frag_reasm, fragments in order",
        proves: "IpReasmReqds, IpReasmOKs, IcmpInEchos",
        params: &["size=3000: echo data bytes", "fragment=1024: bytes per fragment", "to", "from"],
        build: |b| frag4(b, FragMode::InOrder),
    },
    Probe {
        name: "ipv4-frag-reversed",
        drives: "ip_defrag, last fragment first",
        proves: "IpReasmReqds, IpReasmOKs, IcmpInEchos",
        params: &["size=3000", "fragment=1024", "to", "from"],
        build: |b| frag4(b, FragMode::Reversed),
    },
    Probe {
        name: "ipv4-frag-random",
        drives: "ip_defrag, fragments in a seeded random order",
        proves: "IpReasmReqds, IpReasmOKs, IcmpInEchos",
        params: &["size=3000", "fragment=512", "seed=1", "to", "from"],
        build: |b| frag4(b, FragMode::Random),
    },
    Probe {
        name: "ipv4-frag-duplicate",
        drives: "inet_frag_queue_insert: identical overlaps (each fragment twice) are ignored",
        proves: "IpReasmOKs, IcmpInEchos",
        params: &["size=3000", "fragment=1024", "to", "from"],
        build: |b| frag4(b, FragMode::Duplicate),
    },
    Probe {
        name: "ipv4-frag-overlap",
        drives: "inet_frag_queue_insert: a fragment overlapping two others with other bytes",
        proves: "IpExtReasmOverlaps, IpReasmFails",
        params: &["size=3000", "fragment=1024", "to", "from"],
        build: |b| frag4(b, FragMode::Overlap),
    },
    Probe {
        name: "ipv4-frag-missing",
        drives: "ip_expire: the middle fragment never comes",
        proves: "IpReasmTimeout, IcmpOutTimeExcds (the gateway counts the Time Exceeded)",
        params: &["size=3000", "fragment=1024", "to", "from"],
        build: |b| frag4(b, FragMode::Missing),
    },
    Probe {
        name: "ipv4-frag-first-only",
        drives: "ip_expire: only the first fragment comes",
        proves: "IpReasmTimeout, IcmpOutTimeExcds (ICMP 11/1 to the gateway)",
        params: &["size=3000", "fragment=1024", "to", "from"],
        build: |b| frag4(b, FragMode::FirstOnly),
    },
    Probe {
        name: "ipv4-frag-tiny",
        drives: "ip_defrag with eight-byte fragments",
        proves: "IpReasmOKs, IcmpInEchos",
        params: &["size=200", "to", "from"],
        build: |b| frag4(b, FragMode::Tiny),
    },
    Probe {
        name: "ipv4-frag-oversize",
        drives: "ip_frag_reasm: a datagram reassembling beyond 65535 bytes",
        proves: "IpReasmFails",
        params: &["to", "from"],
        build: |b| frag4(b, FragMode::Oversize),
    },
    // ICMPv4 towards the guest.
    Probe {
        name: "icmpv4-unreachable",
        drives: "icmp_unreach -> icmp_socket_deliver (quoting the guest's echo reply to peer)",
        proves: "IcmpInDestUnreachs",
        params: &["code=1", "mtu=1400: next-hop MTU for code 4", "peer=198.51.100.1", FOR_FLOW, "to", "from"],
        build: |b| {
            let code: u8 = b.get("code", 1)?;
            let mtu: u16 = if code == 4 { b.get("mtu", 1400)? } else { 0 };
            let [m0, m1] = mtu.to_be_bytes();
            b.icmpv4_error(3, code, [0, 0, m0, m1])
        },
    },
    Probe {
        name: "icmpv4-frag-needed",
        drives: "icmp_unreach code 4 -> ipv4_update_pmtu (path MTU towards peer)",
        proves: "IcmpInDestUnreachs; ip route get PEER shows the mtu",
        params: &["mtu=1400", "peer=198.51.100.1", FOR_FLOW, "to", "from"],
        build: |b| {
            let [m0, m1] = b.get::<u16>("mtu", 1400)?.to_be_bytes();
            b.icmpv4_error(3, 4, [0, 0, m0, m1])
        },
    },
    Probe {
        name: "icmpv4-time-exceeded",
        drives: "icmp_unreach for ICMP 11",
        proves: "IcmpInTimeExcds",
        params: &["code=0", "peer=198.51.100.1", FOR_FLOW, "to", "from"],
        build: |b| {
            let code = b.get("code", 0)?;
            b.icmpv4_error(11, code, [0; 4])
        },
    },
    Probe {
        name: "icmpv4-redirect",
        drives: "icmp_redirect -> ipv4_redirect (a next hop towards peer)",
        proves: "IcmpInRedirects; ip route get PEER shows via GATEWAY",
        params: &["gateway=host 5 of the network: the new next hop", "code=1", "peer=198.51.100.1", FOR_FLOW, "to", "from"],
        build: |b| {
            let to = b.v4_to()?;
            let default_gw = Ipv4Address([to.0[0], to.0[1], to.0[2], 5]);
            let gw: std::net::Ipv4Addr = b.get("gateway", default_gw.into())?;
            let code = b.get("code", 1)?;
            b.icmpv4_error(5, code, gw.octets())
        },
    },
    Probe {
        name: "icmpv4-param-problem",
        drives: "icmp_unreach for ICMP 12",
        proves: "IcmpInParmProbs",
        params: &["pointer=0", "peer=198.51.100.1", FOR_FLOW, "to", "from"],
        build: |b| {
            let ptr = b.get("pointer", 0)?;
            b.icmpv4_error(12, 0, [ptr, 0, 0, 0])
        },
    },
    // IPv6 header.
    Probe {
        name: "ipv6-echo",
        drives: "ipv6_rcv -> ip6_rcv_core -> ip6_input_finish -> icmpv6_echo_reply",
        proves: "Ip6InReceives, Ip6InDelivers, Icmp6InEchos, Icmp6OutEchoReplies",
        params: &["size=56", "hop-limit=64", "tclass=0", "to", "from"],
        build: |b| {
            let mut h = b.ipv6(58)?;
            h.traffic_class = b.get("tclass", 0)?;
            let ip = h.emit(&b.echo6(b.get("size", 56)?, h.src, h.dst));
            b.push6(&ip);
            Ok(())
        },
    },
    Probe {
        name: "ipv6-bad-version",
        drives: "ip6_rcv_core: version is not 6",
        proves: "Ip6InHdrErrors",
        params: &["version=4", "to", "from"],
        build: |b| {
            let mut h = b.ipv6(58)?;
            h.version = b.get("version", 4)?;
            let ip = h.emit(&b.echo6(56, h.src, h.dst));
            b.push6(&ip);
            Ok(())
        },
    },
    Probe {
        name: "ipv6-multicast-src",
        drives: "ip6_rcv_core: a multicast source address (RFC 4291 §2.7)",
        proves: "Ip6InHdrErrors",
        params: &["from=ff02::1", "to"],
        build: |b| {
            let src: std::net::Ipv6Addr = b.get("from", "ff02::1".parse().unwrap())?;
            let mut h = Ipv6Header::new(src.into(), b.v6_to()?, 58);
            h.hop_limit = 64;
            let ip = h.emit(&b.echo6(56, h.src, h.dst));
            b.push6(&ip);
            Ok(())
        },
    },
    Probe {
        name: "ipv6-dst-loopback",
        drives: "ip6_rcv_core: destination ::1 on a non-loopback device",
        proves: "Ip6InHdrErrors",
        params: &["from"],
        build: |b| {
            let h = Ipv6Header::new(b.v6_from()?, Ipv6Address::LOOPBACK, 58);
            let ip = h.emit(&b.echo6(56, h.src, h.dst));
            // To the guest's MAC: the address alone must make it drop the packet.
            let dst = b.guest_mac();
            b.push_eth(dst, 0x86dd, &ip);
            Ok(())
        },
    },
    Probe {
        name: "ipv6-truncated",
        drives: "ip6_rcv_core: payload length beyond the frame",
        proves: "Ip6InTruncatedPkts",
        params: &["excess=100", "to", "from"],
        build: |b| {
            let excess: u16 = b.get("excess", 100)?;
            let mut h = b.ipv6(58)?;
            let echo = b.echo6(56, h.src, h.dst);
            h.payload_len = Some(echo.len() as u16 + excess);
            b.push6(&h.emit(&echo));
            Ok(())
        },
    },
    // IPv6 extension headers.
    Probe {
        name: "ipv6-ext-chain",
        drives: "the extension-header walk: HbH -> Dst -> Routing (SL 0) -> Fragment (atomic, RFC 6946) -> Dst -> ICMPv6",
        proves: "Icmp6InEchos, Icmp6OutEchoReplies, Ip6ReasmReqds, Ip6ReasmOKs",
        params: &["size=56", "to", "from"],
        build: |b| {
            let mut chain = craft::options_header(nh::DEST_OPTIONS, &[1, 2, 0, 0]);
            chain.extend(craft::options_header(nh::ROUTING, &[]));
            chain.extend(craft::routing_header(nh::FRAGMENT, 0, 0, &[]));
            chain.extend(craft::fragment_header(
                nh::DEST_OPTIONS,
                0,
                false,
                0x7667_0000 | (b.serial() & 0xffff),
            ));
            chain.extend(craft::options_header(58, &[]));
            echo6_with_chain(b, nh::HOP_BY_HOP, &chain)
        },
    },
    Probe {
        name: "ipv6-hbh-unknown-option",
        drives: "ip6_parse_tlv -> ip6_tlvopt_unknown: the option type's two action bits (RFC 8200 §4.2)",
        proves: "0: delivered (Icmp6InEchos); 1: Ip6InHdrErrors; 2, 3: Ip6InHdrErrors, Icmp6OutParmProblems (code 2)",
        params: &["action=2: the action bits, 0 to 3", "to", "from"],
        build: |b| {
            let action: u8 = b.get("action", 2)?;
            if action > 3 {
                return err("action is 0 to 3");
            }
            // Option type 0x1e with the action bits on top (RFC 4727's experimental value).
            let chain = craft::options_header(58, &[(action << 6) | 0x1e, 2, 0, 0]);
            echo6_with_chain(b, nh::HOP_BY_HOP, &chain)
        },
    },
    Probe {
        name: "ipv6-hbh-router-alert",
        drives: "ip6_parse_tlv: Router Alert in Hop-by-Hop on a unicast echo",
        proves: "Icmp6InEchos, Icmp6OutEchoReplies",
        params: &["to", "from"],
        build: |b| {
            let chain = craft::options_header(58, &IPV6_ROUTER_ALERT);
            echo6_with_chain(b, nh::HOP_BY_HOP, &chain)
        },
    },
    Probe {
        name: "ipv6-hbh-not-first",
        drives: "ip6_protocol_deliver_rcu: Hop-by-Hop after another header (RFC 8200 §4.3)",
        proves: "Ip6InUnknownProtos, Icmp6OutParmProblems (code 1, pointer 40)",
        params: &["to", "from"],
        build: |b| {
            let mut chain = craft::options_header(nh::HOP_BY_HOP, &[]);
            chain.extend(craft::options_header(58, &[]));
            echo6_with_chain(b, nh::DEST_OPTIONS, &chain)
        },
    },
    Probe {
        name: "ipv6-routing",
        drives: "ipv6_rthdr_rcv: a Routing header of a type, with segments left",
        proves: "type 0 SL>0: Ip6InHdrErrors, Icmp6OutParmProblems (code 0); SL 0: delivered",
        params: &["type=0: 0, 2 or 4", "segments-left=1", "to", "from"],
        build: |b| {
            let rtype: u8 = b.get("type", 0)?;
            let sl: u8 = b.get("segments-left", 1)?;
            let hop: std::net::Ipv6Addr = "2001:db8::99".parse().unwrap();
            let chain = craft::routing_header(58, rtype, sl, &[hop.into()]);
            echo6_with_chain(b, nh::ROUTING, &chain)
        },
    },
    Probe {
        name: "ipv6-unknown-next-header",
        drives: "ip6_protocol_deliver_rcu: no handler for the next header",
        proves: "Ip6InUnknownProtos, Icmp6OutParmProblems (code 1)",
        params: &["next-header=253", "to", "from"],
        build: |b| {
            let next: u8 = b.get("next-header", 253)?;
            let ip = b.ipv6(next)?.emit(&pattern(32));
            b.push6(&ip);
            Ok(())
        },
    },
    Probe {
        name: "ipv6-ext-too-many-options",
        drives: "ip6_parse_tlv: more options than net.ipv6.max_dst_opts_number (8)",
        proves: "Ip6InHdrErrors",
        params: &["options=9", "to", "from"],
        build: |b| {
            let n: usize = b.get("options", 9)?;
            if n > 100 {
                return err("options: at most 100");
            }
            // Unknown options with action 00 (skip), two bytes each.
            let opts: Vec<u8> = (0..n).flat_map(|_| [0x1e, 0]).collect();
            let chain = craft::options_header(58, &opts);
            echo6_with_chain(b, nh::DEST_OPTIONS, &chain)
        },
    },
    Probe {
        name: "ipv6-ext-long-padding",
        drives: "ip6_parse_tlv: padding longer than seven bytes (RFC 4942 §2.1.9.5)",
        proves: "Ip6InHdrErrors",
        params: &["to", "from"],
        build: |b| {
            let mut opts = vec![1, 12];
            opts.resize(14, 0);
            let chain = craft::options_header(58, &opts);
            echo6_with_chain(b, nh::DEST_OPTIONS, &chain)
        },
    },
    // IPv6 fragments.
    Probe {
        name: "ipv6-frag",
        drives: "ipv6_frag_rcv -> ip6_frag_reasm, in order",
        proves: "Ip6ReasmReqds, Ip6ReasmOKs, Icmp6InEchos",
        params: &["size=3000", "fragment=1232", "to", "from"],
        build: |b| frag6(b, FragMode::InOrder),
    },
    Probe {
        name: "ipv6-frag-reversed",
        drives: "ipv6_frag_rcv, last fragment first",
        proves: "Ip6ReasmOKs, Icmp6InEchos",
        params: &["size=3000", "fragment=1232", "to", "from"],
        build: |b| frag6(b, FragMode::Reversed),
    },
    Probe {
        name: "ipv6-frag-random",
        drives: "ipv6_frag_rcv, a seeded random order",
        proves: "Ip6ReasmOKs, Icmp6InEchos",
        params: &["size=3000", "fragment=512", "seed=1", "to", "from"],
        build: |b| frag6(b, FragMode::Random),
    },
    Probe {
        name: "ipv6-frag-duplicate",
        drives: "inet_frag_queue_insert: each fragment twice",
        proves: "Ip6ReasmOKs, Icmp6InEchos",
        params: &["size=3000", "fragment=1232", "to", "from"],
        build: |b| frag6(b, FragMode::Duplicate),
    },
    Probe {
        name: "ipv6-frag-overlap",
        drives: "ip6_frag_queue: overlapping fragments discard the datagram (RFC 5722)",
        proves: "Ip6ReasmFails",
        params: &["size=3000", "fragment=1232", "to", "from"],
        build: |b| frag6(b, FragMode::Overlap),
    },
    Probe {
        name: "ipv6-frag-missing",
        drives: "ip6_frag_expire: the middle fragment never comes",
        proves: "Ip6ReasmTimeout, Icmp6OutTimeExcds",
        params: &["size=3000", "fragment=1024", "to", "from"],
        build: |b| frag6(b, FragMode::Missing),
    },
    Probe {
        name: "ipv6-frag-first-only",
        drives: "ip6_frag_expire: only the first fragment comes",
        proves: "Ip6ReasmTimeout, Icmp6OutTimeExcds",
        params: &["size=3000", "fragment=1232", "to", "from"],
        build: |b| frag6(b, FragMode::FirstOnly),
    },
    Probe {
        name: "ipv6-frag-tiny",
        drives: "ipv6_frag_rcv with eight-byte fragments",
        proves: "Ip6ReasmOKs, Icmp6InEchos",
        params: &["size=56", "to", "from"],
        build: |b| {
            let h = b.ipv6(nh::FRAGMENT)?;
            let echo = b.echo6(b.get("size", 56)?, h.src, h.dst);
            let ident = 0x7667_0000 | (b.serial() & 0xffff);
            for (offset, bytes, more) in fragments(&echo, 8, FragMode::Tiny, 0)? {
                let mut payload = craft::fragment_header(58, offset, more, ident).to_vec();
                payload.extend_from_slice(&bytes);
                b.push6(&h.emit(&payload));
            }
            Ok(())
        },
    },
    Probe {
        name: "ipv6-frag-oversize",
        drives: "ip6_frag_queue: a fragment ending beyond 65535 bytes",
        proves: "Ip6InHdrErrors, Icmp6OutParmProblems (code 0, pointing at the offset)",
        params: &["to", "from"],
        build: |b| frag6(b, FragMode::Oversize),
    },
    Probe {
        name: "ipv6-frag-unaligned",
        drives: "ip6_frag_queue: a non-last fragment whose length is not a multiple of 8",
        proves: "Ip6InHdrErrors, Icmp6OutParmProblems (code 0, pointer 4)",
        params: &["fragment=1232", "to", "from"],
        build: |b| frag6(b, FragMode::Unaligned),
    },
    // ICMPv6 towards the guest.
    Probe {
        name: "icmpv6-packet-too-big",
        drives: "icmpv6_rcv -> icmpv6_notify -> ip6_update_pmtu (towards peer; below 1280 discarded, RFC 8201 §4)",
        proves: "Icmp6InPktTooBigs; ip -6 route get PEER shows the mtu",
        params: &["mtu=1400", "peer=2001:db8::1", FOR_FLOW, "to", "from"],
        build: |b| {
            let mtu: u32 = b.get("mtu", 1400)?;
            b.icmpv6_error(2, 0, mtu.to_be_bytes())
        },
    },
    Probe {
        name: "icmpv6-time-exceeded",
        drives: "icmpv6_rcv -> icmpv6_notify for type 3",
        proves: "Icmp6InTimeExcds",
        params: &["code=0", "peer=2001:db8::1", FOR_FLOW, "to", "from"],
        build: |b| {
            let code = b.get("code", 0)?;
            b.icmpv6_error(3, code, [0; 4])
        },
    },
    Probe {
        name: "icmpv6-unreachable",
        drives: "icmpv6_rcv -> icmpv6_notify for type 1",
        proves: "Icmp6InDestUnreachs",
        params: &["code=0", "peer=2001:db8::1", FOR_FLOW, "to", "from"],
        build: |b| {
            let code = b.get("code", 0)?;
            b.icmpv6_error(1, code, [0; 4])
        },
    },
    Probe {
        name: "icmpv6-param-problem",
        drives: "icmpv6_rcv -> icmpv6_notify for type 4",
        proves: "Icmp6InParmProblems",
        params: &["code=0", "pointer=6", "peer=2001:db8::1", FOR_FLOW, "to", "from"],
        build: |b| {
            let code = b.get("code", 0)?;
            let ptr: u32 = b.get("pointer", 6)?;
            b.icmpv6_error(4, code, ptr.to_be_bytes())
        },
    },
    // NDP.
    Probe {
        name: "ndp-ns",
        drives: "ndisc_recv_ns for the target's solicited-node group",
        proves: "Icmp6InNeighborSolicits, Icmp6OutNeighborAdvertisements",
        params: &["target=the guest's address", "from"],
        build: |b| {
            let target: Ipv6Address = match b.opt::<std::net::Ipv6Addr>("target")? {
                Some(t) => t.into(),
                None => b.v6_to()?,
            };
            let src = b.v6_from()?;
            let mut body = target.0.to_vec();
            body.extend(ndp_source_lladdr(b.ctx.gateway_mac));
            let dst = target.solicited_node();
            push_icmpv6_link(b, src, dst, 255, false, (135, 0, [0; 4], body));
            Ok(())
        },
    },
    Probe {
        name: "ndp-na",
        drives: "ndisc_recv_na: an unsolicited advertisement (one for a tentative address fails its DAD)",
        proves: "Icmp6InNeighborAdvertisements; ip -6 addr shows dadfailed for a tentative target",
        params: &["target=the guest's address", "from", "override=1"],
        build: |b| {
            let target: Ipv6Address = match b.opt::<std::net::Ipv6Addr>("target")? {
                Some(t) => t.into(),
                None => b.v6_to()?,
            };
            let over: u8 = b.get("override", 1)?;
            let src = b.v6_from()?;
            let mut body = target.0.to_vec();
            // Target link-layer address option: ours.
            body.extend_from_slice(&[2, 1]);
            body.extend_from_slice(&b.ctx.gateway_mac.0);
            let flags = if over != 0 { 0x20 } else { 0 };
            push_icmpv6_link(
                b,
                src,
                Ipv6Address::ALL_NODES,
                255,
                false,
                (136, 0, [flags, 0, 0, 0], body),
            );
            Ok(())
        },
    },
    Probe {
        name: "ndp-ra",
        drives: "ndisc_router_discovery: a Router Advertisement (hop limit other than 255 is ignored, RFC 4861 §6.1.2)",
        proves: "Icmp6InRouterAdvertisements; the prefix's address appears, is deprecated, then removed",
        params: &[
            "hop-limit=255: the IPv6 hop limit",
            "cur-hop-limit=0: the RA's Cur Hop Limit",
            "router-lifetime=1800",
            "prefix: a /64 to announce (none)",
            "valid=86400",
            "preferred=14400",
            "mtu: an MTU option (none)",
            "flags=0: M (0x80), O (0x40)",
            "rdnss: DNS servers, comma-separated (RFC 8106)",
            "dnssl: search domains, comma-separated",
            "dns-lifetime=1800: of rdnss and dnssl (0 withdraws them)",
            "from=fe80::2",
        ],
        build: |b| {
            let src = b.v6_from_link_local()?;
            let hop: u8 = b.get("hop-limit", 255)?;
            let cur: u8 = b.get("cur-hop-limit", 0)?;
            let lifetime: u16 = b.get("router-lifetime", 1800)?;
            let flags: u8 = b.get("flags", 0)?;
            // Reachable time and retransmission timer: unspecified.
            let mut body = vec![0u8; 8];
            body.extend(ndp_source_lladdr(b.ctx.gateway_mac));
            if let Some(mtu) = b.opt::<u32>("mtu")? {
                body.extend_from_slice(&[5, 1, 0, 0]);
                body.extend_from_slice(&mtu.to_be_bytes());
            }
            if let Some(prefix) = b.params.get("prefix") {
                let (addr, len) = prefix.split_once('/').unwrap_or((prefix, "64"));
                let addr: std::net::Ipv6Addr = addr
                    .parse()
                    .map_err(|_| ProbeError(format!("prefix: {prefix:?}")))?;
                let len: u8 = len
                    .parse()
                    .map_err(|_| ProbeError(format!("prefix: {prefix:?}")))?;
                let valid: u32 = b.get("valid", 86400)?;
                let preferred: u32 = b.get("preferred", 14400)?;
                // RFC 4861 §4.6.2: on-link and autonomous.
                body.extend_from_slice(&[3, 4, len, 0xc0]);
                body.extend_from_slice(&valid.to_be_bytes());
                body.extend_from_slice(&preferred.to_be_bytes());
                body.extend_from_slice(&[0; 4]);
                body.extend_from_slice(&addr.octets());
            }
            let dns_lifetime: u32 = b.get("dns-lifetime", 1800)?;
            if let Some(list) = b.params.get("rdnss") {
                let addrs = list
                    .split(',')
                    .map(|a| a.trim().parse::<std::net::Ipv6Addr>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|_| ProbeError(format!("rdnss: {list:?}")))?;
                // RFC 8106 §5.1: length in 8-byte units, 1 + 2 per address.
                body.extend_from_slice(&[25, (1 + 2 * addrs.len()) as u8, 0, 0]);
                body.extend_from_slice(&dns_lifetime.to_be_bytes());
                addrs.iter().for_each(|a| body.extend_from_slice(&a.octets()));
            }
            if let Some(list) = b.params.get("dnssl") {
                let names: Vec<&str> = list.split(',').map(str::trim).collect();
                let mut encoded = crate::wire::icmpv6::encode_domains(&names);
                if encoded.is_empty() {
                    return err(format!("dnssl: {list:?} holds no domain name"));
                }
                // RFC 8106 §5.2: padded with zeros to a multiple of 8 bytes.
                encoded.resize((8 + encoded.len()).div_ceil(8) * 8 - 8, 0);
                body.extend_from_slice(&[31, (1 + encoded.len() / 8) as u8, 0, 0]);
                body.extend_from_slice(&dns_lifetime.to_be_bytes());
                body.extend_from_slice(&encoded);
            }
            let [l0, l1] = lifetime.to_be_bytes();
            let msg = (134, 0, [cur, flags, l0, l1], body);
            push_icmpv6_link(b, src, Ipv6Address::ALL_NODES, hop, false, msg);
            Ok(())
        },
    },
    Probe {
        name: "ndp-redirect",
        drives: "ndisc_redirect_rcv -> rt6_redirect: a better first hop towards peer",
        proves: "Icmp6InRedirects; ip -6 route get PEER shows via GATEWAY",
        params: &["gateway=fe80::5", "peer=2001:db8::1", "to", "from=fe80::2"],
        build: |b| {
            let src = b.v6_from_link_local()?;
            let to = b.v6_to()?;
            let gw: std::net::Ipv6Addr = b.get("gateway", "fe80::5".parse().unwrap())?;
            let peer: std::net::Ipv6Addr = b.get("peer", "2001:db8::1".parse().unwrap())?;
            let mut body = gw.octets().to_vec();
            body.extend_from_slice(&peer.octets());
            // Target link-layer address (RFC 4861 §4.5): the gateway's MAC, so the guest can use
            // the new first hop at once.
            body.extend_from_slice(&[2, 1]);
            body.extend_from_slice(&b.ctx.gateway_mac.0);
            push_icmpv6_link(b, src, to, 255, false, (137, 0, [0; 4], body));
            Ok(())
        },
    },
    // Multicast.
    Probe {
        name: "mcast-udp",
        drives: "ip_route_input_mc / ip6_mc_input: UDP to a group, joined or not",
        proves: "joined: IpExtInMcastPkts or Ip6InMcastPkts, UdpInDatagrams; not joined: dropped",
        params: &["group=239.1.2.3 (or an IPv6 group)", "port=5000", "sport=5001", "size=32", "from"],
        build: |b| {
            let g = group(b, "239.1.2.3")?;
            let port: u16 = b.get("port", 5000)?;
            let sport: u16 = b.get("sport", 5001)?;
            let data = pattern(b.get("size", 32)?);
            match g {
                IpAddress::V4(g) => {
                    let src = b.v4_from()?;
                    let pseudo = IpAddress::pseudo_header_sum(
                        src.into(),
                        g.into(),
                        17,
                        8 + data.len() as u32,
                    );
                    let mut h = Ipv4Header::new(src, g, 17);
                    h.ttl = b.get("ttl", 1)?;
                    h.ident = b.serial() as u16;
                    let ip = h.emit(&craft::udp(sport, port, &data, pseudo));
                    b.push_eth(ipv4_multicast_mac(g), 0x0800, &ip);
                }
                IpAddress::V6(g) => {
                    let src = b.v6_from()?;
                    let pseudo = IpAddress::pseudo_header_sum(
                        src.into(),
                        g.into(),
                        17,
                        8 + data.len() as u32,
                    );
                    let mut h = Ipv6Header::new(src, g, 17);
                    h.hop_limit = b.get("hop-limit", 1)?;
                    b.push6(&h.emit(&craft::udp(sport, port, &data, pseudo)));
                }
            }
            Ok(())
        },
    },
    Probe {
        name: "igmp-query",
        drives: "igmp_heard_query: a general (or group-specific) membership query with Router Alert",
        proves: "reports to 224.0.0.22 (IGMPv3) or the group (IGMPv2), counted by the gateway",
        params: &["version=3: 2 or 3", "group=0.0.0.0: 0 for a general query", "max-resp=10: tenths of a second", "from"],
        build: |b| {
            let version: u8 = b.get("version", 3)?;
            let grp: std::net::Ipv4Addr = b.get("group", std::net::Ipv4Addr::UNSPECIFIED)?;
            let max_resp: u8 = b.get("max-resp", 10)?;
            let grp: Ipv4Address = grp.into();
            // RFC 3376 §4.1: type 0x11, max resp code, checksum, group; v3 adds flags/QRV, QQIC
            // and the number of sources.
            let mut msg = vec![0x11, max_resp, 0, 0];
            msg.extend_from_slice(&grp.0);
            if version == 3 {
                msg.extend_from_slice(&[2, 125, 0, 0]);
            } else if version != 2 {
                return err("version is 2 or 3");
            }
            let sum = crate::wire::checksum::compute(&msg);
            msg[2..4].copy_from_slice(&sum.to_be_bytes());
            let dst = if grp.is_unspecified() {
                Ipv4Address::new(224, 0, 0, 1)
            } else {
                grp
            };
            let mut h = Ipv4Header::new(b.v4_from()?, dst, 2);
            h.ttl = 1;
            h.tos = 0xc0;
            h.ident = b.serial() as u16;
            h.options = IPV4_ROUTER_ALERT.to_vec();
            let ip = h.emit(&msg);
            b.push_eth(ipv4_multicast_mac(dst), 0x0800, &ip);
            Ok(())
        },
    },
    Probe {
        name: "mld-query",
        drives: "igmp6_event_query: an MLD general (or address-specific) query, link-local source, hop limit 1, Router Alert",
        proves: "Icmp6InGroupMembQueries, Icmp6OutMLDv2Reports (reports to ff02::16)",
        params: &["version=2: 1 or 2", "group=:: for a general query", "max-resp=1000: milliseconds", "from=fe80::2"],
        build: |b| {
            let version: u8 = b.get("version", 2)?;
            let grp: std::net::Ipv6Addr = b.get("group", std::net::Ipv6Addr::UNSPECIFIED)?;
            let max_resp: u16 = b.get("max-resp", 1000)?;
            let src = b.v6_from_link_local()?;
            let grp: Ipv6Address = grp.into();
            let dst = if grp.is_unspecified() {
                Ipv6Address::ALL_NODES
            } else {
                grp
            };
            // RFC 3810 §5.1: max response code, reserved, then the address; v2 adds
            // S/QRV, QQIC and the number of sources.
            let [r0, r1] = max_resp.to_be_bytes();
            let mut body = grp.0.to_vec();
            if version == 2 {
                body.extend_from_slice(&[2, 125, 0, 0]);
            } else if version != 1 {
                return err("version is 1 or 2");
            }
            push_icmpv6_link(b, src, dst, 1, true, (130, 0, [r0, r1, 0, 0], body));
            Ok(())
        },
    },
    // TCP.
    Probe {
        name: "tcp-bad-checksum",
        drives: "tcp_v4_rcv / tcp_v6_rcv: the checksum check before any socket lookup",
        proves: "TcpInCsumErrors, TcpInErrs",
        params: &["dport=7", "sport=40000", "family=4: 4 or 6", "to", "from"],
        build: |b| tcp_segment(b, true),
    },
    Probe {
        name: "tcp-segment",
        drives: "tcp_v4_rcv / tcp_v6_rcv: any segment (an RST in or out of a live connection's window, a stray SYN)",
        proves: "a SYN to a closed port: TcpOutRsts; an in-window RST: TcpEstabResets; out of window: TcpExtTCPChallengeACK or dropped",
        params: &[
            "for-flow: a port of a live guest connection (sets addresses, ports, seq and ack)",
            "seq-offset=0: added to the flow's sequence",
            "sport=40000",
            "dport=7",
            "seq=1000",
            "ack=0",
            "flags=S: of FSRPAUEC",
            "window=64240",
            "size=0",
            "family=4: 4 or 6",
            "to",
            "from",
        ],
        build: |b| tcp_segment(b, false),
    },
];

fn parse_u16(s: &str) -> Option<u16> {
    match s.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_mac(s: &str) -> Option<EthernetAddress> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(EthernetAddress(mac))
}

#[cfg(test)]
mod tests;
