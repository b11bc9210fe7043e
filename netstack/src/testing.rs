//! Test support shared by the property tests and the fuzz targets (`fuzz/`): structurally valid
//! frames a guest sends, one or more per protocol the stack parses, and the check every frame the
//! stack emits must pass. Not part of the API.
//!
//! The samples are the seeds mutation starts from: a random byte string reaches a parser behind
//! an EtherType about 3 times in 65 536, a mutated valid frame nearly always.

use crate::config::Config;
use crate::wire::craft::{self, Ipv4Header, Ipv6Header};
use crate::wire::{
    checksum, ipv6, DhcpMessageType, DhcpRepr, EtherType, EthernetAddress, EthernetFrame,
    Icmpv4Packet, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, Ipv6Address, Ipv6Packet,
    TcpPacket, UdpPacket,
};

/// The guest of the samples: the MAC and addresses a default [`Config`] hands out.
pub const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
pub const GUEST_IPV4: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);

fn guest_ipv6() -> Ipv6Address {
    "fd00::15".parse().expect("address")
}

fn guest_link_local() -> Ipv6Address {
    Ipv6Address::link_local_from_mac(GUEST_MAC)
}

/// A TCP header with options (MSS, SACK permitted, timestamps, window scale) and `payload`;
/// checksums are fixed by the caller's [`craft::fix_checksums`].
fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(40 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(10 << 4); // 40 bytes of header
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t.extend_from_slice(&[2, 4, 0x05, 0xb4, 4, 2, 8, 10]);
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]);
    t.extend_from_slice(payload);
    t
}

fn v4(dst_mac: EthernetAddress, h: &Ipv4Header, payload: &[u8]) -> Vec<u8> {
    let mut f = craft::ethernet(dst_mac, GUEST_MAC, 0x0800, &h.emit(payload));
    craft::fix_checksums(&mut f);
    f
}

fn v6(dst_mac: EthernetAddress, h: &Ipv6Header, payload: &[u8]) -> Vec<u8> {
    let mut f = craft::ethernet(dst_mac, GUEST_MAC, 0x86dd, &h.emit(payload));
    craft::fix_checksums(&mut f);
    f
}

fn dhcp(message_type: DhcpMessageType, server: Option<Ipv4Address>) -> Vec<u8> {
    let r = DhcpRepr {
        op: crate::wire::dhcpv4::DhcpOp::Request,
        message_type,
        transaction_id: 0x1234_5678,
        client_hardware_address: GUEST_MAC,
        requested_ip: Some(GUEST_IPV4),
        server_identifier: server,
        client_identifier: Some(&[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        ..DhcpRepr::empty()
    };
    let mut b = vec![0u8; r.buffer_len()];
    r.emit(&mut b);
    b
}

/// Structurally valid frames a guest sends to the default gateway, named: every protocol the
/// stack takes apart (ARP; IPv4 with ICMP, UDP, DHCP, DNS, TCP, IGMP, fragments; IPv6 with NDP,
/// MLD, ICMPv6, DHCPv6, UDP, TCP, extension headers and fragments).
pub fn guest_frames() -> Vec<(&'static str, Vec<u8>)> {
    let cfg = Config::default();
    let gw_mac = cfg.gateway_mac;
    let gw = cfg.gateway_ipv4;
    let v6cfg = cfg.ipv6.clone().unwrap_or_default();
    let gw6 = v6cfg.gateway;
    let me6 = guest_ipv6();
    let ll = guest_link_local();
    let bcast = EthernetAddress::BROADCAST;
    let routed = Ipv4Address::new(198, 51, 100, 7);
    let routed6: Ipv6Address = "2001:db8::7".parse().expect("address");
    let mut out = Vec::new();

    // ARP.
    let arp = |op: u16, tha: EthernetAddress, tpa: Ipv4Address| {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&GUEST_MAC.0);
        a.extend_from_slice(&GUEST_IPV4.0);
        a.extend_from_slice(&tha.0);
        a.extend_from_slice(&tpa.0);
        a
    };
    out.push((
        "arp-request",
        craft::ethernet(
            bcast,
            GUEST_MAC,
            0x0806,
            &arp(1, EthernetAddress([0; 6]), gw),
        ),
    ));
    out.push((
        "arp-reply",
        craft::ethernet(gw_mac, GUEST_MAC, 0x0806, &arp(2, gw_mac, gw)),
    ));

    // IPv4.
    let echo = craft::icmpv4(8, 0, [0, 7, 0, 1], b"abcdefghijklmnop");
    out.push((
        "icmp-echo",
        v4(gw_mac, &Ipv4Header::new(GUEST_IPV4, gw, 1), &echo),
    ));
    out.push((
        "icmp-echo-routed",
        v4(gw_mac, &Ipv4Header::new(GUEST_IPV4, routed, 1), &echo),
    ));
    let mut ttl1 = Ipv4Header::new(GUEST_IPV4, routed, 17);
    ttl1.ttl = 1;
    out.push((
        "udp-ttl-1",
        v4(gw_mac, &ttl1, &craft::udp(33434, 33435, &[0; 12], 0)),
    ));
    let mut opts = Ipv4Header::new(GUEST_IPV4, gw, 1);
    opts.options = vec![7, 7, 4, 0, 0, 0, 0, 1]; // record route, then end of options
    out.push(("icmp-echo-options", v4(gw_mac, &opts, &echo)));
    for (name, t, server) in [
        ("dhcp-discover", DhcpMessageType::Discover, None),
        ("dhcp-request", DhcpMessageType::Request, Some(gw)),
        ("dhcp-release", DhcpMessageType::Release, Some(gw)),
    ] {
        let body = craft::udp(68, 67, &dhcp(t, server), 0);
        out.push((
            name,
            v4(
                bcast,
                &Ipv4Header::new(Ipv4Address::UNSPECIFIED, Ipv4Address::BROADCAST, 17),
                &body,
            ),
        ));
    }
    let dns_query = [
        0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3,
        b'c', b'o', b'm', 0, 0, 1, 0, 1,
    ];
    out.push((
        "udp-dns",
        v4(
            gw_mac,
            &Ipv4Header::new(GUEST_IPV4, cfg.dns_ipv4, 17),
            &craft::udp(5353, 53, &dns_query, 0),
        ),
    ));
    out.push((
        "udp-to-host",
        v4(
            gw_mac,
            &Ipv4Header::new(GUEST_IPV4, gw, 17),
            &craft::udp(40000, 9999, b"hello", 0),
        ),
    ));
    out.push((
        "tcp-syn",
        v4(
            gw_mac,
            &Ipv4Header::new(GUEST_IPV4, gw, 6),
            &tcp(40000, 80, 1000, 0, 0x02, b""),
        ),
    ));
    out.push((
        "tcp-data",
        v4(
            gw_mac,
            &Ipv4Header::new(GUEST_IPV4, gw, 6),
            &tcp(40000, 80, 1001, 1, 0x18, b"GET /"),
        ),
    ));
    out.push((
        "tcp-rst",
        v4(
            gw_mac,
            &Ipv4Header::new(GUEST_IPV4, gw, 6),
            &tcp(40001, 80, 5, 0, 0x04, b""),
        ),
    ));
    // Fragments carry the whole datagram's checksum, computed before it was cut.
    let pseudo = crate::wire::IpAddress::pseudo_header_sum(GUEST_IPV4.into(), gw.into(), 17, 1208);
    let big = craft::udp(40000, 9999, &[0x42; 1200], pseudo);
    for (i, name) in ["ipv4-fragment-first", "ipv4-fragment-last"]
        .into_iter()
        .enumerate()
    {
        let mut h = Ipv4Header::new(GUEST_IPV4, gw, 17);
        h.ident = 77;
        let piece = if i == 0 { &big[..600] } else { &big[600..] };
        h.flags_frag = if i == 0 { craft::IPV4_MF } else { 600 / 8 };
        out.push((name, v4(gw_mac, &h, piece)));
    }
    // IGMPv3 report (join 239.1.2.3) and an IGMPv2 leave, with Router Alert.
    let mut igmp3 = vec![0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 2, 3];
    let sum = checksum::compute(&igmp3);
    igmp3[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ra = Ipv4Header::new(GUEST_IPV4, Ipv4Address::new(224, 0, 0, 22), 2);
    ra.ttl = 1;
    ra.options = vec![148, 4, 0, 0];
    out.push((
        "igmpv3-report",
        v4(EthernetAddress([1, 0, 0x5e, 0, 0, 22]), &ra, &igmp3),
    ));
    let mut leave = vec![0x17, 0, 0, 0, 239, 1, 2, 3];
    let sum = checksum::compute(&leave);
    leave[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ra2 = Ipv4Header::new(GUEST_IPV4, Ipv4Address::new(224, 0, 0, 2), 2);
    ra2.ttl = 1;
    out.push((
        "igmpv2-leave",
        v4(EthernetAddress([1, 0, 0x5e, 0, 0, 2]), &ra2, &leave),
    ));

    // IPv6: neighbour discovery, echo, MLD, DHCPv6, UDP, TCP, extension headers, fragments.
    let icmp6 = |t: u8, rest: [u8; 4], data: &[u8], src: Ipv6Address, dst: Ipv6Address| {
        craft::icmpv6(t, 0, rest, data, src, dst)
    };
    let hop = |src, dst| {
        let mut h = Ipv6Header::new(src, dst, 58);
        h.hop_limit = 255;
        h
    };
    let dad_target = me6;
    let sn = dad_target.solicited_node();
    out.push((
        "ndp-dad",
        v6(
            sn.multicast_mac(),
            &hop(Ipv6Address::UNSPECIFIED, sn),
            &icmp6(135, [0; 4], &dad_target.0, Ipv6Address::UNSPECIFIED, sn),
        ),
    ));
    let mut ns = gw6.0.to_vec();
    ns.extend_from_slice(&[1, 1]);
    ns.extend_from_slice(&GUEST_MAC.0);
    let gw_sn = gw6.solicited_node();
    out.push((
        "ndp-solicit-gateway",
        v6(
            gw_sn.multicast_mac(),
            &hop(ll, gw_sn),
            &icmp6(135, [0; 4], &ns, ll, gw_sn),
        ),
    ));
    let all_routers: Ipv6Address = "ff02::2".parse().expect("address");
    let mut rs_opts = vec![1, 1];
    rs_opts.extend_from_slice(&GUEST_MAC.0);
    out.push((
        "ndp-router-solicit",
        v6(
            all_routers.multicast_mac(),
            &hop(ll, all_routers),
            &icmp6(133, [0; 4], &rs_opts, ll, all_routers),
        ),
    ));
    let mut na_body = me6.0.to_vec();
    na_body.extend_from_slice(&[2, 1]);
    na_body.extend_from_slice(&GUEST_MAC.0);
    out.push((
        "ndp-advert",
        v6(
            gw_mac,
            &hop(me6, gw6),
            &icmp6(136, [0x60, 0, 0, 0], &na_body, me6, gw6),
        ),
    ));
    let mut ping6 = Ipv6Header::new(me6, gw6, 58);
    ping6.hop_limit = 64;
    out.push((
        "icmpv6-echo",
        v6(
            gw_mac,
            &ping6,
            &icmp6(128, [0, 9, 0, 1], b"ping6 data", me6, gw6),
        ),
    ));
    out.push((
        "icmpv6-echo-routed",
        v6(
            gw_mac,
            &Ipv6Header::new(me6, routed6, 58),
            &icmp6(128, [0, 9, 0, 2], b"ping6 data", me6, routed6),
        ),
    ));
    // MLDv2 report: join ff05::1:3, behind a Hop-by-Hop Router Alert.
    let mldv2_routers: Ipv6Address = "ff02::16".parse().expect("address");
    let mut record = vec![4, 0, 0, 0];
    record.extend_from_slice(&"ff05::1:3".parse::<Ipv6Address>().expect("address").0);
    let report = icmp6(143, [0, 0, 0, 1], &record, ll, mldv2_routers);
    let mut hbh = craft::options_header(58, &[5, 2, 0, 0]);
    hbh.extend_from_slice(&report);
    let mut mh = Ipv6Header::new(ll, mldv2_routers, 0);
    mh.hop_limit = 1;
    out.push(("mldv2-report", v6(mldv2_routers.multicast_mac(), &mh, &hbh)));
    // DHCPv6 Solicit: client id (DUID-LL), IA_NA, option request.
    let mut solicit = vec![1, 0xab, 0xcd, 0xef];
    solicit.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1]);
    solicit.extend_from_slice(&GUEST_MAC.0);
    solicit.extend_from_slice(&[0, 6, 0, 4, 0, 23, 0, 24, 0, 8, 0, 2, 0, 0]);
    solicit.extend_from_slice(&[0, 3, 0, 12, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let dhcp_servers: Ipv6Address = "ff02::1:2".parse().expect("address");
    out.push((
        "dhcpv6-solicit",
        v6(
            dhcp_servers.multicast_mac(),
            &Ipv6Header::new(ll, dhcp_servers, 17),
            &craft::udp(546, 547, &solicit, 0),
        ),
    ));
    out.push((
        "udp6-to-host",
        v6(
            gw_mac,
            &Ipv6Header::new(me6, gw6, 17),
            &craft::udp(40000, 9999, b"hello6", 0),
        ),
    ));
    out.push((
        "tcp6-syn",
        v6(
            gw_mac,
            &Ipv6Header::new(me6, gw6, 6),
            &tcp(40000, 80, 1000, 0, 0x02, b""),
        ),
    ));
    // Hop-by-Hop, Destination Options and a Routing header with no segments left before ICMPv6.
    let echo6 = icmp6(128, [0, 9, 0, 3], b"ext", me6, gw6);
    let mut chain = craft::options_header(60, &[]);
    let mut dst_opts = craft::options_header(43, &[0x1e, 2, 0, 0]);
    let mut routing = craft::routing_header(58, 0, 0, &[]);
    routing.extend_from_slice(&echo6);
    dst_opts.extend_from_slice(&routing);
    chain.extend_from_slice(&dst_opts);
    out.push((
        "ipv6-extension-headers",
        v6(gw_mac, &Ipv6Header::new(me6, gw6, 0), &chain),
    ));
    let mut atomic = craft::fragment_header(58, 0, false, 9).to_vec();
    atomic.extend_from_slice(&echo6);
    out.push((
        "ipv6-atomic-fragment",
        v6(gw_mac, &Ipv6Header::new(me6, gw6, 44), &atomic),
    ));
    let big6 = icmp6(128, [0, 9, 0, 4], &[0x6a; 1400], me6, gw6);
    for (i, name) in ["ipv6-fragment-first", "ipv6-fragment-last"]
        .into_iter()
        .enumerate()
    {
        let (offset, piece) = if i == 0 {
            (0, &big6[..800])
        } else {
            (800, &big6[800..])
        };
        let mut p = craft::fragment_header(58, offset, i == 0, 0x77).to_vec();
        p.extend_from_slice(piece);
        out.push((name, v6(gw_mac, &Ipv6Header::new(me6, gw6, 44), &p)));
    }
    out
}

/// Checks a frame the stack emitted: from the gateway's MAC, a whole Ethernet header, and for
/// ARP, IPv4 and IPv6 a packet that parses with correct checksums (IP header; ICMP, ICMPv6, UDP,
/// TCP, IGMP; IPv6 fragments are checked for structure only). Panics with the reason otherwise.
pub fn check_emitted(frame: &[u8], gateway_mac: EthernetAddress) {
    let eth = EthernetFrame::new_checked(frame).expect("a whole Ethernet header");
    assert_eq!(eth.src_addr(), gateway_mac, "from the gateway's MAC");
    match eth.ethertype() {
        EtherType::Arp => {
            let p = crate::wire::ArpPacket::new_checked(eth.payload()).expect("ARP");
            crate::wire::ArpRepr::parse(&p).expect("an ARP message");
        }
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).expect("an IPv4 packet");
            Ipv4Repr::parse(&ip).expect("a valid header checksum");
            if ip.is_fragment() {
                return;
            }
            let (src, dst) = (ip.src_addr(), ip.dst_addr());
            match ip.protocol() {
                IpProtocol::Icmp => assert!(
                    Icmpv4Packet::new_checked(ip.payload())
                        .expect("ICMP")
                        .verify_checksum(),
                    "ICMP checksum"
                ),
                IpProtocol::Udp => assert!(
                    UdpPacket::new_checked(ip.payload())
                        .expect("UDP")
                        .verify_checksum_v4(src, dst),
                    "UDP checksum"
                ),
                IpProtocol::Tcp => assert!(
                    TcpPacket::new_checked(ip.payload())
                        .expect("TCP")
                        .verify_checksum_v4(src, dst),
                    "TCP checksum"
                ),
                IpProtocol::Igmp => assert_eq!(checksum::compute(ip.payload()), 0, "IGMP"),
                other => panic!("IPv4 protocol {other} from the gateway"),
            }
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).expect("an IPv6 packet");
            let repr = crate::wire::Ipv6Repr::parse(&ip);
            let upper = ipv6::walk_extension_headers(
                u8::from(repr.next_header),
                ip.payload(),
                repr.dst.is_multicast(),
            )
            .expect("an extension-header chain that ends");
            if upper.fragment.is_some() {
                return;
            }
            let body = &ip.payload()[upper.offset..];
            let (src, dst) = (repr.src.into(), repr.dst.into());
            match upper.protocol {
                IpProtocol::Icmpv6 => {
                    crate::wire::Icmpv6Repr::parse(body, repr.src, repr.dst)
                        .expect("an ICMPv6 message with a valid checksum");
                }
                IpProtocol::Udp => assert!(
                    UdpPacket::new_checked(body)
                        .expect("UDP")
                        .verify_checksum(src, dst),
                    "UDP checksum"
                ),
                IpProtocol::Tcp => assert!(
                    TcpPacket::new_checked(body)
                        .expect("TCP")
                        .verify_checksum(src, dst),
                    "TCP checksum"
                ),
                other => panic!("IPv6 next header {other} from the gateway"),
            }
        }
        other => panic!("EtherType {other} from the gateway"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::ScriptedHost;
    use crate::{Instant, Stack};

    #[test]
    fn the_samples_are_well_formed_and_taken_whole() {
        let mut s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
        let frames = guest_frames();
        assert!(frames.len() >= 30);
        // DAD first, as a guest does, so that its global address is its own.
        let (dad, rest): (Vec<_>, Vec<_>) = frames.iter().partition(|(n, _)| *n == "ndp-dad");
        for (i, (_, f)) in dad.iter().chain(rest.iter()).enumerate() {
            s.process_frame(Instant::from_millis(i as u64), f);
        }
        let mut bad = Vec::new();
        s.stats().for_each(|name, v| {
            let suspect = [
                "malformed",
                "checksum",
                "truncated",
                "spoofed",
                "bad_source",
            ]
            .iter()
            .any(|k| name.contains(k));
            if v > 0 && (suspect || name == "drop_ipv6_ext_header") {
                bad.push((name, v));
            }
        });
        assert!(bad.is_empty(), "{bad:?}");
        let gw = Config::default().gateway_mac;
        for _ in 0..1000 {
            let mut frame = None;
            s.dispatch(Instant::from_secs(1), |f, _| {
                frame = Some(f.to_vec());
                true
            });
            let Some(f) = frame else { break };
            check_emitted(&f, gw);
        }
    }
}
