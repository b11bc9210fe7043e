//! IPv6 on the link: NDP, router advertisements, ICMPv6 echo and errors, MLD, DHCPv6.

use super::*;
use crate::config::{Dhcpv6Mode, Ipv6Config, GATEWAY_LINK_LOCAL};
use crate::wire::dhcpv6::{self, Dhcpv6Repr, IaNa};
use crate::wire::icmpv6::{na_flags, prefix_flags, ra_flags, Icmpv6Repr, NdpOptions};
use crate::wire::ipv6::{pseudo_header_sum, HEADER_LEN};
use crate::wire::{Ipv6Address, Ipv6Packet, Ipv6Repr};

/// The stack after the guest claimed its test addresses with DAD (RFC 4862 §5.4), as a real
/// guest does before it uses them: the source policy (`crate::sources`) allows only those.
fn claimed<H: crate::host::HostIo>(mut s: Stack<H>) -> Stack<H> {
    for target in [
        "fd00::15",
        "fd00::99",
        "fd00::100",
        "fd00::5054:ff:fe12:3456",
    ] {
        let target = a(target);
        let probe = icmpv6_frame(
            Ipv6Address::UNSPECIFIED,
            target.solicited_node(),
            255,
            &Icmpv6Repr::NeighborSolicit {
                target,
                options: NdpOptions::default(),
            },
        );
        s.process_frame(Instant::ZERO, &probe);
    }
    drain(&mut s);
    s
}

fn a(s: &str) -> Ipv6Address {
    s.parse().unwrap()
}

fn guest_ll() -> Ipv6Address {
    Ipv6Address::link_local_from_mac(GUEST_MAC)
}

/// An echo request from the guest's `src` to `dst` with `data`.
fn echo6(src: Ipv6Address, dst: Ipv6Address, data: &[u8]) -> Vec<u8> {
    icmpv6_frame(
        src,
        dst,
        64,
        &Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data,
        },
    )
}

/// An Ethernet frame with an IPv6 packet from the guest.
fn ipv6_frame(
    src: Ipv6Address,
    dst: Ipv6Address,
    next: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut ip = vec![0u8; HEADER_LEN + payload.len()];
    Ipv6Repr {
        src,
        dst,
        next_header: IpProtocol::from(next),
        payload_len: payload.len(),
        hop_limit,
    }
    .emit(&mut ip);
    ip[HEADER_LEN..].copy_from_slice(payload);
    let dst_mac = if dst.is_multicast() {
        dst.multicast_mac()
    } else {
        Config::default().gateway_mac
    };
    eth_frame(dst_mac, EtherType::Ipv6, &ip)
}

fn icmpv6_frame(src: Ipv6Address, dst: Ipv6Address, hop_limit: u8, m: &Icmpv6Repr) -> Vec<u8> {
    let mut b = vec![0u8; m.buffer_len()];
    m.emit(&mut b, src, dst);
    ipv6_frame(src, dst, 58, hop_limit, &b)
}

/// The IPv6 packets among the frames: (header, ICMPv6 message bytes or UDP datagram).
fn v6_packets(frames: &[Vec<u8>]) -> Vec<(EthernetAddress, Ipv6Repr, Vec<u8>)> {
    frames
        .iter()
        .filter(|f| f[12..14] == [0x86, 0xdd])
        .map(|f| {
            let p = Ipv6Packet::new_checked(&f[14..]).unwrap();
            (
                EthernetAddress::from_bytes(&f[..6]),
                Ipv6Repr::parse(&p),
                p.payload().to_vec(),
            )
        })
        .collect()
}

fn icmpv6_of(ip: &Ipv6Repr, body: &[u8]) -> Icmpv6Repr<'static> {
    let leaked: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
    Icmpv6Repr::parse(leaked, ip.src, ip.dst).expect("valid ICMPv6")
}

#[test]
fn neighbor_solicitations_for_our_addresses_are_answered() {
    let mut s = claimed(stack());
    for target in [GATEWAY_LINK_LOCAL, a("fd00::2"), a("fd00::3")] {
        let ns = Icmpv6Repr::NeighborSolicit {
            target,
            options: NdpOptions {
                source_lladdr: Some(GUEST_MAC),
                ..NdpOptions::default()
            },
        };
        s.process_frame(
            Instant::ZERO,
            &icmpv6_frame(guest_ll(), target.solicited_node(), 255, &ns),
        );
        let out = v6_packets(&drain(&mut s));
        assert_eq!(out.len(), 1);
        let (mac, ip, body) = &out[0];
        assert_eq!(*mac, GUEST_MAC);
        assert_eq!((ip.src, ip.dst, ip.hop_limit), (target, guest_ll(), 255));
        let Icmpv6Repr::NeighborAdvert {
            flags,
            target: t,
            options,
        } = icmpv6_of(ip, body)
        else {
            panic!()
        };
        assert_eq!(t, target);
        assert_eq!(
            flags,
            na_flags::ROUTER | na_flags::SOLICITED | na_flags::OVERRIDE
        );
        assert_eq!(options.target_lladdr, Some(Config::default().gateway_mac));
    }
    // Someone else's address, and NDP that crossed a router (hop limit < 255): no answer.
    let ns = Icmpv6Repr::NeighborSolicit {
        target: a("fd00::99"),
        options: NdpOptions::default(),
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(guest_ll(), a("fd00::99").solicited_node(), 255, &ns),
    );
    let ns = Icmpv6Repr::NeighborSolicit {
        target: a("fd00::2"),
        options: NdpOptions::default(),
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(guest_ll(), a("fd00::2").solicited_node(), 64, &ns),
    );
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().drop_ndp_invalid, 1);
    assert_eq!(s.stats().ndp_tx_neighbor_adverts, 3);
}

#[test]
fn dad_probes_for_the_guest_are_left_alone_and_ours_are_defended() {
    let mut s = stack();
    let probe = |target: Ipv6Address| {
        icmpv6_frame(
            Ipv6Address::UNSPECIFIED,
            target.solicited_node(),
            255,
            &Icmpv6Repr::NeighborSolicit {
                target,
                options: NdpOptions::default(),
            },
        )
    };
    // The guest checks its own tentative addresses: silence, or its DAD would fail.
    s.process_frame(Instant::ZERO, &probe(guest_ll()));
    s.process_frame(Instant::ZERO, &probe(a("fd00::5054:ff:fe12:3456")));
    assert!(drain(&mut s).is_empty());
    // A guest that tries to take the gateway's address is told it is taken, to all nodes.
    s.process_frame(Instant::ZERO, &probe(a("fd00::2")));
    let out = v6_packets(&drain(&mut s));
    let (mac, ip, body) = &out[0];
    assert_eq!(ip.dst, Ipv6Address::ALL_NODES);
    assert_eq!(*mac, Ipv6Address::ALL_NODES.multicast_mac());
    assert!(matches!(
        icmpv6_of(ip, body),
        Icmpv6Repr::NeighborAdvert { flags, .. } if flags & na_flags::SOLICITED == 0
    ));
    assert_eq!(s.stats().ndp_rx_dad_probes, 3);
    // The guest's global address is known from its probe, for IPv6 forwards.
    assert_eq!(s.guest_ipv6(), Some(a("fd00::5054:ff:fe12:3456")));
    assert_eq!(s.stats().ndp_rx_neighbor_solicits, 3);
}

#[test]
fn router_solicitations_get_an_advertisement_with_everything_for_slaac() {
    let mut s = claimed(
        Stack::new(Config {
            domain_name: Some("example.internal".into()),
            // The RA timers alone: the querier's queries would be frames and deadlines too.
            mcast_querier: false,
            ..Config::default()
        })
        .unwrap(),
    );
    let rs = Icmpv6Repr::RouterSolicit {
        options: NdpOptions {
            source_lladdr: Some(GUEST_MAC),
            ..NdpOptions::default()
        },
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(guest_ll(), Ipv6Address::ALL_ROUTERS, 255, &rs),
    );
    let out = v6_packets(&drain(&mut s));
    assert_eq!(out.len(), 1);
    let (_, ip, body) = &out[0];
    assert_eq!(
        (ip.src, ip.dst, ip.hop_limit),
        (GATEWAY_LINK_LOCAL, Ipv6Address::ALL_NODES, 255)
    );
    let Icmpv6Repr::RouterAdvert {
        flags,
        router_lifetime,
        options,
        ..
    } = icmpv6_of(ip, body)
    else {
        panic!()
    };
    let v6 = Ipv6Config::default();
    assert_eq!(flags, ra_flags::OTHER, "stateless DHCPv6 by default");
    assert_eq!(router_lifetime, 1800);
    assert_eq!(options.mtu, Some(1500));
    let p = options.prefix.unwrap();
    assert_eq!((p.prefix, p.prefix_len), (a("fd00::"), 64));
    assert_eq!(p.flags, prefix_flags::ON_LINK | prefix_flags::AUTONOMOUS);
    assert_eq!(
        (p.valid_lifetime, p.preferred_lifetime),
        (
            v6.valid_lifetime.total_secs() as u32,
            v6.preferred_lifetime.total_secs() as u32
        )
    );
    assert_eq!(options.rdnss.unwrap().1, &a("fd00::3").0[..]);
    assert!(options
        .dnssl
        .unwrap()
        .1
        .starts_with(b"\x07example\x08internal\x00"));
    assert_eq!(options.source_lladdr, Some(Config::default().gateway_mac));
    // A second solicitation within 3 s waits for MIN_DELAY_BETWEEN_RAS (RFC 4861 §6.2.6).
    s.process_frame(
        Instant::from_secs(1),
        &icmpv6_frame(guest_ll(), Ipv6Address::ALL_ROUTERS, 255, &rs),
    );
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.poll_at(), Some(Instant::from_secs(3)));
    s.poll(Instant::from_secs(3));
    assert_eq!(v6_packets(&drain(&mut s)).len(), 1);
    // Then periodically, between a third of the interval and the interval.
    let ras = |s: &mut Stack| s.stats().ndp_tx_router_adverts;
    s.poll(Instant::from_secs(3 + 199));
    drain(&mut s);
    assert_eq!(ras(&mut s), 2);
    s.poll(Instant::from_secs(3 + 600));
    drain(&mut s);
    assert_eq!(ras(&mut s), 3);
}

#[test]
fn stateful_dhcpv6_sets_the_managed_flag() {
    let mut s = claimed(
        Stack::new(Config {
            ipv6: Some(Ipv6Config {
                dhcpv6: Dhcpv6Mode::Stateful,
                ..Ipv6Config::default()
            }),
            ..Config::default()
        })
        .unwrap(),
    );
    s.link_up();
    let rs = Icmpv6Repr::RouterSolicit {
        options: NdpOptions::default(),
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(guest_ll(), Ipv6Address::ALL_ROUTERS, 255, &rs),
    );
    // The answer to the solicitation now, the announcements half a second later.
    assert_eq!(v6_packets(&drain(&mut s)).len(), 1);
    assert_eq!(s.poll_at(), Some(Instant::from_millis(500)));
    s.poll(Instant::from_millis(500));
    let out = v6_packets(&drain(&mut s));
    assert_eq!(
        out.len(),
        4,
        "three neighbour advertisements and a router advertisement"
    );
    let ra = out
        .iter()
        .map(|(_, ip, b)| icmpv6_of(ip, b))
        .find(|m| matches!(m, Icmpv6Repr::RouterAdvert { .. }))
        .unwrap();
    assert!(matches!(ra, Icmpv6Repr::RouterAdvert { flags, .. }
        if flags == ra_flags::MANAGED | ra_flags::OTHER));
}

#[test]
fn echo_to_every_gateway_address() {
    let mut s = claimed(stack());
    for (src, dst) in [
        (guest_ll(), GATEWAY_LINK_LOCAL),
        (a("fd00::15"), a("fd00::2")),
        (a("fd00::15"), a("fd00::3")),
        (guest_ll(), Ipv6Address::ALL_NODES),
    ] {
        let req = Icmpv6Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data: b"ping6",
        };
        s.process_frame(Instant::ZERO, &icmpv6_frame(src, dst, 64, &req));
        let out = v6_packets(&drain(&mut s));
        assert_eq!(out.len(), 1, "{dst}");
        let (_, ip, body) = &out[0];
        let from = if dst.is_multicast() {
            GATEWAY_LINK_LOCAL
        } else {
            dst
        };
        assert_eq!((ip.src, ip.dst), (from, src));
        assert_eq!(
            icmpv6_of(ip, body),
            Icmpv6Repr::EchoReply {
                ident: 7,
                seq_no: 1,
                data: b"ping6"
            }
        );
    }
    assert_eq!(s.stats().icmpv6_tx_echo_replies, 4);
}

#[test]
fn unknown_next_header_gets_parameter_problem_code_1() {
    let mut s = claimed(stack());
    let f = ipv6_frame(a("fd00::15"), a("fd00::2"), 253, 64, b"whatever");
    s.process_frame(Instant::ZERO, &f);
    let out = v6_packets(&drain(&mut s));
    let (_, ip, body) = &out[0];
    let Icmpv6Repr::ParamProblem {
        code,
        pointer,
        data,
    } = icmpv6_of(ip, body)
    else {
        panic!()
    };
    assert_eq!(
        (code, pointer),
        (1, 6),
        "the next-header field of the fixed header"
    );
    assert_eq!(data, &f[14..], "the whole offending packet is quoted");
    assert_eq!(s.stats().drop_ipv6_unknown_next_header, 1);
}

#[test]
fn routed_packets_whose_hop_limit_runs_out_get_time_exceeded() {
    let mut s = claimed(stack());
    let req = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: b"",
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(a("fd00::15"), a("2001:db8::1"), 1, &req),
    );
    let out = v6_packets(&drain(&mut s));
    let (_, ip, body) = &out[0];
    assert_eq!(ip.src, a("fd00::2"));
    assert!(matches!(
        icmpv6_of(ip, body),
        Icmpv6Repr::TimeExceeded { code: 0, .. }
    ));
    assert_eq!(s.stats().drop_ipv6_hop_limit, 1);
}

#[test]
fn errors_are_rate_limited() {
    let mut s = claimed(stack());
    for i in 0..30u8 {
        let f = ipv6_frame(a("fd00::15"), a("fd00::2"), 253, 64, &[i]);
        s.process_frame(Instant::ZERO, &f);
    }
    assert_eq!(s.stats().icmpv6_tx_errors, 10);
    assert_eq!(s.stats().drop_icmpv6_rate_limited, 20);
    // Tokens come back at ten a second.
    s.process_frame(
        Instant::from_millis(250),
        &ipv6_frame(a("fd00::15"), a("fd00::2"), 253, 64, b"x"),
    );
    assert_eq!(s.stats().icmpv6_tx_errors, 11);
}

#[test]
fn mld_reports_are_counted() {
    let mut s = claimed(stack());
    // An MLDv2 report with two records, with a Hop-by-Hop Router Alert (RFC 3810 §5).
    let mut report = vec![143u8, 0, 0, 0, 0, 0, 0, 2];
    report.extend([0u8; 40]);
    let src = guest_ll();
    let dst = Ipv6Address::ALL_MLDV2_ROUTERS;
    let sum = pseudo_header_sum(src, dst, 58, report.len() as u32);
    let c = crate::wire::checksum::finish(crate::wire::checksum::accumulate(sum, &report));
    report[2..4].copy_from_slice(&c.to_be_bytes());
    let mut payload = vec![58u8, 0, 5, 2, 0, 0, 1, 0];
    payload.extend(&report);
    s.process_frame(Instant::ZERO, &ipv6_frame(src, dst, 0, 1, &payload));
    assert_eq!(s.stats().mld_rx_reports, 1);
    assert_eq!(s.stats().mld_rx_group_records, 2);
    assert!(drain(&mut s).is_empty());
}

fn dhcpv6_frame(m: &Dhcpv6Repr) -> Vec<u8> {
    let mut b = vec![0u8; 8 + m.buffer_len()];
    m.emit(&mut b[8..]);
    crate::ipv6::emit_udp6(
        &mut b,
        546,
        547,
        guest_ll(),
        Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 1, 2]),
    );
    ipv6_frame(
        guest_ll(),
        Ipv6Address::new([0xff02, 0, 0, 0, 0, 0, 1, 2]),
        17,
        1,
        &b,
    )
}

fn dhcpv6_reply(frames: &[Vec<u8>]) -> Dhcpv6Repr<'static> {
    let out = v6_packets(frames);
    let (_, ip, body) = &out[0];
    assert_eq!((ip.src, ip.dst), (GATEWAY_LINK_LOCAL, guest_ll()));
    assert_eq!(&body[..4], &[2, 35, 2, 34], "547 -> 546");
    let leaked: &'static [u8] = Box::leak(body[8..].to_vec().into_boxed_slice());
    Dhcpv6Repr::parse(leaked).unwrap()
}

#[test]
fn dhcpv6_information_request_gets_dns() {
    let mut s = claimed(stack());
    let oro = [0u8, 23, 0, 24];
    let req = Dhcpv6Repr {
        msg_type: dhcpv6::msg::INFORMATION_REQUEST,
        transaction_id: 0x4242,
        client_id: Some(&[0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56]),
        oro: Some(&oro),
        ..Dhcpv6Repr::default()
    };
    s.process_frame(Instant::ZERO, &dhcpv6_frame(&req));
    let r = dhcpv6_reply(&drain(&mut s));
    assert_eq!((r.msg_type, r.transaction_id), (dhcpv6::msg::REPLY, 0x4242));
    assert_eq!(r.dns_servers, Some(&a("fd00::3").0[..]));
    assert_eq!(r.client_id, req.client_id);
    assert!(r.server_id.is_some());
    assert_eq!(s.stats().dhcpv6_tx_replies, 1);
}

#[test]
fn dhcpv6_stateful_assigns_from_the_pool() {
    let mut s = claimed(
        Stack::new(Config {
            ipv6: Some(Ipv6Config {
                dhcpv6: Dhcpv6Mode::Stateful,
                ..Ipv6Config::default()
            }),
            ..Config::default()
        })
        .unwrap(),
    );
    let duid = [0u8, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let ia = IaNa {
        iaid: 9,
        t1: 0,
        t2: 0,
        addr: None,
        status: None,
    };
    let solicit = Dhcpv6Repr {
        msg_type: dhcpv6::msg::SOLICIT,
        transaction_id: 1,
        client_id: Some(&duid),
        ia_na: Some(ia),
        ..Dhcpv6Repr::default()
    };
    s.process_frame(Instant::ZERO, &dhcpv6_frame(&solicit));
    let adv = dhcpv6_reply(&drain(&mut s));
    assert_eq!(adv.msg_type, dhcpv6::msg::ADVERTISE);
    let offered = adv.ia_na.unwrap().addr.unwrap().addr;
    assert_eq!(offered, a("fd00::100"));
    let server: &'static [u8] = Box::leak(adv.server_id.unwrap().to_vec().into_boxed_slice());
    let request = Dhcpv6Repr {
        msg_type: dhcpv6::msg::REQUEST,
        transaction_id: 2,
        server_id: Some(server),
        ..solicit
    };
    s.process_frame(Instant::ZERO, &dhcpv6_frame(&request));
    let reply = dhcpv6_reply(&drain(&mut s));
    assert_eq!(reply.msg_type, dhcpv6::msg::REPLY);
    let got = reply.ia_na.unwrap().addr.unwrap();
    assert_eq!(got.addr, offered);
    assert!(got.preferred <= got.valid && got.valid > 0);
    assert_eq!(s.dhcpv6_leases().len(), 1);
    assert_eq!(s.stats().dhcpv6_addresses_bound, 1);
}

#[test]
fn packets_for_an_unresolved_guest_wait_for_neighbor_discovery() {
    let mut s = claimed(stack());
    // The gateway learns of fd00::15 only by its packets; here it must solicit. An echo request
    // from the guest's link-local address teaches the link-local mapping, not the global one.
    let req = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: b"",
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(guest_ll(), GATEWAY_LINK_LOCAL, 64, &req),
    );
    drain(&mut s);
    let repr = Ipv6Repr {
        src: a("fd00::2"),
        dst: a("fd00::15"),
        next_header: IpProtocol::Icmpv6,
        payload_len: 8,
        hop_limit: 64,
    };
    let echo = Icmpv6Repr::EchoRequest {
        ident: 2,
        seq_no: 2,
        data: b"",
    };
    assert!(s.dispatch_ipv6(Instant::ZERO, None, &repr, |b| echo
        .emit(b, repr.src, repr.dst)));
    let out = v6_packets(&drain(&mut s));
    assert_eq!(out.len(), 1);
    let (mac, ip, body) = &out[0];
    assert_eq!(ip.dst, a("fd00::15").solicited_node());
    assert_eq!(*mac, a("fd00::15").solicited_node().multicast_mac());
    assert!(matches!(
        icmpv6_of(ip, body),
        Icmpv6Repr::NeighborSolicit { target, .. } if target == a("fd00::15")
    ));
    // The answer releases the parked packet.
    let na = Icmpv6Repr::NeighborAdvert {
        flags: na_flags::SOLICITED,
        target: a("fd00::15"),
        options: NdpOptions {
            target_lladdr: Some(GUEST_MAC),
            ..NdpOptions::default()
        },
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(a("fd00::15"), a("fd00::2"), 255, &na),
    );
    let out = v6_packets(&drain(&mut s));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, GUEST_MAC);
    assert_eq!(out[0].1.dst, a("fd00::15"));
}

#[test]
fn bad_sources_and_truncated_packets_are_counted() {
    let mut s = claimed(stack());
    let req = Icmpv6Repr::EchoRequest {
        ident: 1,
        seq_no: 1,
        data: b"",
    };
    // From the gateway's own address, from off-link, truncated.
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(a("fd00::2"), a("fd00::3"), 64, &req),
    );
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(a("2001:db8::9"), a("fd00::2"), 64, &req),
    );
    let mut f = icmpv6_frame(a("fd00::15"), a("fd00::2"), 64, &req);
    f.truncate(60);
    s.process_frame(Instant::ZERO, &f);
    assert!(drain(&mut s).is_empty());
    assert_eq!(s.stats().drop_ipv6_bad_source, 2);
    assert_eq!(s.stats().drop_ipv6_truncated, 1);
}

#[test]
fn too_big_to_route_gets_packet_too_big_with_our_mtu() {
    // A guest whose MTU is larger than the gateway's link (misconfigured): RFC 4443 §3.2.
    let mut s = claimed(stack());
    let f = ipv6_frame(a("fd00::15"), a("2001:db8::1"), 17, 64, &[0u8; 1600]);
    s.process_frame(Instant::ZERO, &f);
    let out = v6_packets(&drain(&mut s));
    let (_, ip, body) = &out[0];
    let Icmpv6Repr::PacketTooBig { mtu, data } = icmpv6_of(ip, body) else {
        panic!()
    };
    assert_eq!(mtu, 1500);
    assert_eq!(data.len(), crate::wire::icmpv6::MAX_ERROR_QUOTE);
    assert_eq!(s.stats().drop_ipv6_too_big, 1);
}

mod gateway {
    use std::net::SocketAddr;

    use super::*;
    use crate::host::{ScriptedHost, ScriptedSocket, Sent};
    use crate::wire::tcp::flags;
    use crate::wire::{SeqNumber, TcpPacket, TcpRepr};

    fn host_stack() -> Stack<ScriptedHost> {
        Stack::with_host(
            Config {
                dns_upstreams: vec!["[::1]:5353".parse().unwrap()],
                ..Config::default()
            },
            ScriptedHost::new(),
        )
        .unwrap()
    }

    fn syn(dst: Ipv6Address, port: u16) -> Vec<u8> {
        let r = TcpRepr {
            src_port: 40000,
            dst_port: port,
            seq_number: SeqNumber(100),
            ack_number: None,
            flags: flags::SYN,
            window_len: 64800,
            urgent_at: 0,
            max_seg_size: Some(1440),
            window_scale: Some(7),
            sack_permitted: true,
            sack_ranges: [None; 3],
            timestamp: Some((1, 0)),
            payload: &[],
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut b, a("fd00::15").into(), dst.into());
        ipv6_frame(a("fd00::15"), dst, 6, 64, &b)
    }

    fn tcp_of(ip: &Ipv6Repr, body: &[u8]) -> TcpRepr<'static> {
        let leaked: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
        TcpRepr::parse(&TcpPacket::new_checked(leaked).unwrap(), ip.src, ip.dst).unwrap()
    }

    #[test]
    fn tcp_to_the_gateway_reaches_the_host_loopback_over_ipv6() {
        let mut s = claimed(host_stack());
        s.process_frame(Instant::ZERO, &syn(a("fd00::2"), 8080));
        let remote: SocketAddr = "[::1]:8080".parse().unwrap();
        let sock = s
            .host()
            .find(&ScriptedSocket::Tcp(remote))
            .expect("a host connect to [::1]:8080");
        s.host_mut().tcp_connected.insert(sock, Ok(()));
        s.host_ready(Instant::ZERO, sock);
        let out = v6_packets(&drain(&mut s));
        let (_, ip, body) = &out[0];
        assert_eq!((ip.src, ip.dst), (a("fd00::2"), a("fd00::15")));
        let syn_ack = tcp_of(ip, body);
        assert_eq!(syn_ack.flags, flags::SYN);
        assert_eq!(syn_ack.ack_number, Some(SeqNumber(101)));
        // MTU 1500 less 40 (IPv6) and 20 (TCP).
        assert_eq!(syn_ack.max_seg_size, Some(1440));
        assert!(syn_ack.sack_permitted && syn_ack.timestamp.is_some());
    }

    #[test]
    fn tcp_beyond_the_gateway_connects_to_the_address_itself() {
        let mut s = claimed(host_stack());
        s.process_frame(Instant::ZERO, &syn(a("2001:db8::7"), 443));
        assert!(s
            .host()
            .find(&ScriptedSocket::Tcp("[2001:db8::7]:443".parse().unwrap()))
            .is_some());
        // An unreachable network is an ICMPv6 unreachable (no route), not a reset.
        let mut s = claimed(host_stack());
        s.host_mut().refuse = Some(std::io::ErrorKind::NetworkUnreachable);
        s.process_frame(Instant::ZERO, &syn(a("2001:db8::7"), 443));
        let out = v6_packets(&drain(&mut s));
        let (_, ip, body) = &out[0];
        let Icmpv6Repr::DstUnreachable { code, data } = icmpv6_of(ip, body) else {
            panic!()
        };
        assert_eq!(code, 0);
        assert_eq!(&data[40..42], &40000u16.to_be_bytes(), "the quoted SYN");
        assert_eq!(&data[44..48], &100u32.to_be_bytes());
    }

    #[test]
    fn udp_and_dns_over_ipv6() {
        let mut s = claimed(host_stack());
        let dgram = |dst: Ipv6Address, port: u16, payload: &[u8]| {
            let mut b = vec![0u8; 8 + payload.len()];
            b[8..].copy_from_slice(payload);
            crate::ipv6::emit_udp6(&mut b, 5000, port, a("fd00::15"), dst);
            ipv6_frame(a("fd00::15"), dst, 17, 64, &b)
        };
        s.process_frame(Instant::ZERO, &dgram(a("fd00::3"), 53, b"query"));
        s.process_frame(Instant::ZERO, &dgram(a("fd00::2"), 7, b"echo"));
        let sent: Vec<(SocketAddr, Vec<u8>)> = s
            .host()
            .sent
            .iter()
            .filter_map(|x| match x {
                Sent::Udp { to, payload, .. } => Some((*to, payload.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            sent,
            vec![
                ("[::1]:5353".parse().unwrap(), b"query".to_vec()),
                ("[::1]:7".parse().unwrap(), b"echo".to_vec()),
            ]
        );
        // The answer comes back from the DNS address, over IPv6.
        let sock = s
            .host()
            .find(&ScriptedSocket::UdpConnected("[::1]:5353".parse().unwrap()))
            .unwrap();
        s.host_mut()
            .inject_datagram(sock, "[::1]:5353".parse().unwrap(), b"answer");
        s.host_ready(Instant::ZERO, sock);
        let out = v6_packets(&drain(&mut s));
        let (_, ip, body) = &out[0];
        assert_eq!((ip.src, ip.dst), (a("fd00::3"), a("fd00::15")));
        assert_eq!(&body[0..4], &[0, 53, 0x13, 0x88]);
        assert_eq!(&body[8..], b"answer");
        // A closed host port comes back as ICMPv6 port unreachable from the address asked.
        let echo = s
            .host()
            .find(&ScriptedSocket::UdpConnected("[::1]:7".parse().unwrap()))
            .unwrap();
        s.host_mut()
            .inject_error(echo, std::io::ErrorKind::ConnectionRefused);
        s.host_ready(Instant::ZERO, echo);
        let out = v6_packets(&drain(&mut s));
        let (_, ip, body) = &out[0];
        assert_eq!(ip.src, a("fd00::2"));
        assert!(matches!(
            icmpv6_of(ip, body),
            Icmpv6Repr::DstUnreachable { code: 4, .. }
        ));
    }
}

#[test]
fn echo_beyond_the_gateway_goes_through_a_host_icmpv6_socket() {
    use crate::host::{ScriptedHost, ScriptedSocket, Sent};
    let mut s = claimed(Stack::with_host(Config::default(), ScriptedHost::new()).unwrap());
    let req = Icmpv6Repr::EchoRequest {
        ident: 0x77,
        seq_no: 5,
        data: b"far",
    };
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(a("fd00::15"), a("2001:db8::1"), 64, &req),
    );
    let remote: std::net::IpAddr = "2001:db8::1".parse().unwrap();
    let sock = s
        .host()
        .find(&ScriptedSocket::IcmpEcho(remote))
        .expect("a host ICMPv6 socket");
    assert!(matches!(
        &s.host().sent[..],
        [Sent::Echo { seq: 5, data, .. }] if data == b"far"
    ));
    s.host_mut().inject_echo_reply(sock, 5, b"far");
    s.host_ready(Instant::ZERO, sock);
    let out = v6_packets(&drain(&mut s));
    let (_, ip, body) = &out[0];
    assert_eq!((ip.src, ip.dst), (a("2001:db8::1"), a("fd00::15")));
    assert_eq!(
        icmpv6_of(ip, body),
        Icmpv6Repr::EchoReply {
            ident: 0x77,
            seq_no: 5,
            data: b"far"
        }
    );
    // The gateway's own address goes to the host's ::1.
    s.process_frame(
        Instant::ZERO,
        &icmpv6_frame(a("fd00::15"), a("fd00::2"), 64, &req),
    );
    assert!(s
        .host()
        .find(&ScriptedSocket::IcmpEcho("::1".parse().unwrap()))
        .is_some());
}

mod forwards {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Forward, ForwardProtocol};
    use crate::host::{ScriptedHost, ScriptedSocket};
    use crate::wire::tcp::flags;
    use crate::wire::{TcpPacket, TcpRepr};

    #[test]
    fn ipv6_peers_reach_the_guest_over_ipv6_and_ipv4_peers_over_ipv4() {
        let listen: SocketAddr = "[::1]:2222".parse().unwrap();
        let mut s = claimed(
            Stack::with_host(
                Config {
                    forwards: vec![Forward {
                        protocol: ForwardProtocol::Tcp,
                        host: listen,
                        guest_port: 22,
                    }],
                    ..Config::default()
                },
                ScriptedHost::new(),
            )
            .unwrap(),
        );
        s.open_forwards().unwrap();
        let lsock = s.host().find(&ScriptedSocket::TcpListener(listen)).unwrap();
        // The guest is known on both families.
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(10, 0, 2, 2), 1, b""),
        );
        let req = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: b"",
        };
        s.process_frame(
            Instant::ZERO,
            &icmpv6_frame(a("fd00::15"), a("fd00::2"), 64, &req),
        );
        drain(&mut s);
        for peer in ["[::1]:50000", "[::ffff:127.0.0.1]:50001"] {
            s.host_mut()
                .tcp_pending_accepts
                .entry(lsock)
                .or_default()
                .push_back(peer.parse().unwrap());
        }
        s.host_ready(Instant::ZERO, lsock);
        let out = drain(&mut s);
        let v6 = v6_packets(&out);
        assert_eq!(v6.len(), 1);
        let (_, ip, body) = &v6[0];
        assert_eq!((ip.src, ip.dst), (a("fd00::2"), a("fd00::15")));
        let leaked: &'static [u8] = Box::leak(body.to_vec().into_boxed_slice());
        let syn = TcpRepr::parse(&TcpPacket::new_checked(leaked).unwrap(), ip.src, ip.dst).unwrap();
        assert_eq!(
            (syn.src_port, syn.dst_port, syn.flags),
            (50000, 22, flags::SYN)
        );
        // The IPv4-mapped peer goes over IPv4, from the gateway.
        let v4: Vec<_> = out.iter().filter(|f| f[12..14] == [8, 0]).collect();
        assert_eq!(v4.len(), 1);
        assert_eq!(&v4[0][26..30], &[10, 0, 2, 2]);
        assert_eq!(s.stats().tcp_forwarded, 2);
    }
}

mod fragments {
    use super::*;
    use crate::reassembly::{Outcome, Reassembler};
    use crate::wire::ipv6::{walk_extension_headers, FragmentHeader};

    /// The guest's packet `payload` (ICMPv6) cut into fragments of at most `piece` bytes.
    fn fragment(src: Ipv6Address, dst: Ipv6Address, payload: &[u8], piece: usize) -> Vec<Vec<u8>> {
        payload
            .chunks(piece)
            .enumerate()
            .map(|(i, chunk)| {
                let mut b = vec![0u8; 8 + chunk.len()];
                FragmentHeader {
                    offset: i * piece,
                    more: (i + 1) * piece < payload.len(),
                    ident: 0x1234,
                }
                .emit(&mut b, 58);
                b[8..].copy_from_slice(chunk);
                ipv6_frame(src, dst, 44, 64, &b)
            })
            .collect()
    }

    #[test]
    fn big_pings_are_reassembled_and_answered_in_fragments() {
        let mut s = claimed(stack());
        let data = vec![0x5a; 3000];
        let req = Icmpv6Repr::EchoRequest {
            ident: 9,
            seq_no: 1,
            data: &data,
        };
        let (src, dst) = (a("fd00::15"), a("fd00::3"));
        let mut msg = vec![0u8; req.buffer_len()];
        req.emit(&mut msg, src, dst);
        let frames = fragment(src, dst, &msg, 1400);
        // Out of order: the last first.
        for f in frames.iter().rev() {
            s.process_frame(Instant::ZERO, f);
        }
        assert_eq!(s.stats().ipv6_rx_fragments, 3);
        assert_eq!(s.stats().ipv6_reassembled, 1);
        // The reply does not fit 1500 bytes: it comes in fragments, which reassemble to it.
        let out = drain(&mut s);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|f| f.len() <= 14 + 1500));
        let mut r = Reassembler::new();
        let mut whole = Vec::new();
        let mut last = Outcome::Pending;
        for f in &out {
            let p = Ipv6Packet::new_checked(&f[14..]).unwrap();
            let upper = walk_extension_headers(p.next_header(), p.payload(), false).unwrap();
            last = r.add_v6(Instant::ZERO, p.packet(), &upper, &mut whole);
        }
        assert_eq!(last, Outcome::Complete);
        let p = Ipv6Packet::new_checked(&whole[..]).unwrap();
        let ip = Ipv6Repr::parse(&p);
        assert_eq!(ip.next_header, IpProtocol::Icmpv6);
        assert_eq!(
            icmpv6_of(&ip, p.payload()),
            Icmpv6Repr::EchoReply {
                ident: 9,
                seq_no: 1,
                data: Box::leak(data.into_boxed_slice())
            }
        );
        assert_eq!(s.stats().ipv6_tx_fragments, 3);
    }

    /// An echo request to the gateway behind `headers` (already chained, ending in next header
    /// 58), in one frame.
    fn behind(headers: &[u8], data: &[u8]) -> Vec<u8> {
        let (src, dst) = (a("fd00::15"), a("fd00::3"));
        let req = Icmpv6Repr::EchoRequest {
            ident: 5,
            seq_no: 2,
            data,
        };
        let mut b = headers.to_vec();
        let at = b.len();
        b.resize(at + req.buffer_len(), 0);
        req.emit(&mut b[at..], src, dst);
        ipv6_frame(src, dst, 44, 64, &b)
    }

    /// `n` Fragment headers with offset 0 and M 0 (atomic fragments, RFC 6946), the last naming
    /// ICMPv6.
    fn atomic_fragments(n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n * 8];
        for (i, h) in b.chunks_mut(8).enumerate() {
            let next = if i + 1 == n { 58 } else { 44 };
            FragmentHeader {
                offset: 0,
                more: false,
                ident: i as u32,
            }
            .emit(h, next);
        }
        b
    }

    #[test]
    fn atomic_fragments_are_processed_in_place_however_many() {
        // Issue 11, defect 1: each atomic fragment used to "complete" a reassembly and re-enter
        // process_ipv6 one header shorter: 8 000 of them in a 64 KiB frame overflowed the stack.
        let mut s = claimed(
            Stack::new(Config {
                mtu: 65520,
                ..Config::default()
            })
            .unwrap(),
        );
        let n = 8000;
        s.process_frame(Instant::ZERO, &behind(&atomic_fragments(n), b"ping"));
        let out = v6_packets(&drain(&mut s));
        assert_eq!(out.len(), 1);
        assert!(matches!(
            icmpv6_of(&out[0].1, &out[0].2),
            Icmpv6Repr::EchoReply {
                ident: 5,
                seq_no: 2,
                ..
            }
        ));
        // RFC 6946 §4: in isolation, no reassembly.
        assert_eq!(s.stats().ipv6_rx_atomic_fragments, n as u64);
        assert_eq!(s.stats().ipv6_rx_fragments, 0);
        assert_eq!(s.stats().ipv6_reassembled, 0);
        assert_eq!(s.reassembly.poll_at(), None);
    }

    #[test]
    fn fragments_inside_fragments_are_dropped() {
        let mut s = claimed(stack());
        let (src, dst) = (a("fd00::15"), a("fd00::3"));
        // A fragmented datagram whose payload is itself the first fragment of another: no source
        // sends that (RFC 8200 §4.5 fragments once, at the source), and the first fragment
        // carries the whole header chain (RFC 7112), so the nested header shows at once.
        let mut inner = vec![0u8; 8];
        FragmentHeader {
            offset: 0,
            more: true,
            ident: 99,
        }
        .emit(&mut inner, 58);
        inner.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
        inner.resize(8 + 1600, 7);
        let mut frames = fragment(src, dst, &inner, 1000);
        // The outer Fragment header names another Fragment header, not ICMPv6.
        for f in &mut frames {
            f[14 + 40] = 44;
        }
        for f in &frames {
            s.process_frame(Instant::ZERO, f);
        }
        assert_eq!(s.stats().drop_ipv6_nested_fragment, 1);
        assert_eq!(s.stats().ipv6_reassembled, 0);
        assert!(drain(&mut s).is_empty());
        // An atomic fragment before or after a real one is processed in place: the datagram is
        // reassembled and answered.
        let mut s = claimed(stack());
        let req = Icmpv6Repr::EchoRequest {
            ident: 3,
            seq_no: 4,
            data: &[1; 1500],
        };
        let mut msg = vec![0u8; req.buffer_len()];
        req.emit(&mut msg, src, dst);
        let mut atomic_then_msg = atomic_fragments(1);
        atomic_then_msg.extend_from_slice(&msg);
        let mut frames = fragment(src, dst, &atomic_then_msg, 1000);
        for f in &mut frames {
            f[14 + 40] = 44;
        }
        for f in &frames {
            s.process_frame(Instant::ZERO, f);
        }
        assert_eq!(s.stats().ipv6_reassembled, 1);
        assert_eq!(s.stats().ipv6_rx_atomic_fragments, 1);
        assert_eq!(s.stats().icmpv6_rx_echo_requests, 1);
        assert_eq!(s.stats().drop_ipv6_nested_fragment, 0);
    }

    #[test]
    fn routed_datagrams_are_measured_by_their_fragments_not_reassembled() {
        // Each fragment fits the link; only the reassembled whole would not. A router on the
        // path sees the fragments, so no Packet Too Big (the guest could not send smaller).
        let mut s = claimed(stack());
        let (src, dst) = (a("fd00::15"), a("2001:db8::1"));
        let req = Icmpv6Repr::EchoRequest {
            ident: 1,
            seq_no: 1,
            data: &[4; 3000],
        };
        let mut msg = vec![0u8; req.buffer_len()];
        req.emit(&mut msg, src, dst);
        for f in fragment(src, dst, &msg, 1400) {
            s.process_frame(Instant::ZERO, &f);
        }
        assert_eq!(s.stats().ipv6_reassembled, 1);
        assert_eq!(s.stats().drop_ipv6_too_big, 0);
        assert_eq!(s.stats().icmpv6_rx_echo_requests, 1);
        // A fragment larger than the link on its own still gets Packet Too Big.
        let f = fragment(src, dst, &msg, 1496).remove(0);
        s.process_frame(Instant::ZERO, &f);
        assert_eq!(s.stats().drop_ipv6_too_big, 1);
    }

    #[test]
    fn overlaps_discard_and_lone_first_fragments_time_out() {
        let mut s = claimed(stack());
        let (src, dst) = (a("fd00::15"), a("fd00::3"));
        // The start of an echo request (an error about an ICMPv6 error is never sent).
        let mut msg = vec![7u8; 2000];
        msg[0] = 128;
        let frames = fragment(src, dst, &msg, 1000);
        s.process_frame(Instant::ZERO, &frames[0]);
        // A second first fragment with other bytes overlaps it (RFC 5722).
        let mut again = frames[0].clone();
        let n = again.len();
        again[n - 1] ^= 1;
        s.process_frame(Instant::ZERO, &again);
        assert_eq!(s.stats().drop_ipv6_reasm_overlap, 1);
        // A first fragment alone for 60 s: Time Exceeded code 1, quoting it.
        s.process_frame(Instant::from_secs(1), &frames[0]);
        s.poll(Instant::from_secs(61));
        let out = v6_packets(&drain(&mut s));
        let (_, ip, body) = out
            .iter()
            .find(|(_, ip, _)| ip.next_header == IpProtocol::Icmpv6)
            .unwrap();
        assert_eq!(ip.dst, src);
        assert!(matches!(
            icmpv6_of(ip, body),
            Icmpv6Repr::TimeExceeded { code: 1, .. }
        ));
        assert_eq!(s.stats().ipv6_reasm_timeouts, 1);
        assert_eq!(s.stats().ipv4_reasm_timeouts, 0);
    }
}

#[test]
fn global_sources_need_a_dad_claim() {
    let echo = |src: Ipv6Address| echo6(src, a("fd00::2"), b"x");
    let mut s = stack();
    // Never claimed: dropped. Link-local: always allowed.
    s.process_frame(Instant::ZERO, &echo(a("fd00::15")));
    assert_eq!(s.stats().drop_ipv6_spoofed, 1);
    let mut s = claimed(s);
    s.process_frame(Instant::ZERO, &echo(a("fd00::15")));
    s.process_frame(Instant::ZERO, &echo(a("fd00::77")));
    assert_eq!(s.stats().drop_ipv6_spoofed, 2);
    assert_eq!(s.stats().icmpv6_rx_echo_requests, 1);
}

#[test]
fn an_emulated_narrow_path_answers_with_packet_too_big() {
    let mut s = claimed(
        Stack::new(Config {
            path_mtus: vec!["fd00::2=1280".parse().unwrap()],
            ..Config::default()
        })
        .unwrap(),
    );
    s.process_frame(
        Instant::ZERO,
        &echo6(a("fd00::15"), a("fd00::2"), &[9; 1300]),
    );
    let out = v6_packets(&drain(&mut s));
    assert_eq!(out.len(), 1);
    assert!(matches!(
        icmpv6_of(&out[0].1, &out[0].2),
        Icmpv6Repr::PacketTooBig { mtu: 1280, .. }
    ));
    assert_eq!(s.stats().drop_ipv6_path_mtu, 1);
}

#[test]
fn an_ipv6_network_routed_via_the_guest_is_reached_through_it() {
    let mut s = claimed(
        Stack::new(Config {
            routes_via_guest: vec!["fd77:1::/64".parse().unwrap()],
            ..Config::default()
        })
        .unwrap(),
    );
    let echo = |src: Ipv6Address| echo6(src, a("fd00::3"), b"x");
    s.process_frame(Instant::ZERO, &echo(a("fd00::15")));
    drain(&mut s);
    s.process_frame(Instant::ZERO, &echo(a("fd77:1::5")));
    let out = v6_packets(&drain(&mut s));
    assert_eq!(out.len(), 1, "{:?}", s.stats());
    assert_eq!(out[0].0, GUEST_MAC);
    assert_eq!(out[0].1.dst, a("fd77:1::5"));
    assert_eq!(s.stats().drop_ipv6_spoofed, 0);
}
