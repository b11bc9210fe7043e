//! Stack tests: frames in, frames out, grouped by protocol.

use super::*;
use crate::time::Duration;
use crate::wire::dhcpv4::DhcpOp;

const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);

fn stack() -> Stack {
    Stack::new(Config::default()).unwrap()
}

fn eth_frame(dst: EthernetAddress, ethertype: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + payload.len()];
    EthernetRepr {
        src: GUEST_MAC,
        dst,
        ethertype,
    }
    .emit(&mut f);
    f[ethernet::HEADER_LEN..].copy_from_slice(payload);
    f
}

fn ipv4_frame(src: Ipv4Address, dst: Ipv4Address, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; ipv4::HEADER_LEN + payload.len()];
    Ipv4Repr {
        src,
        dst,
        protocol: proto,
        payload_len: payload.len(),
        ttl: 64,
    }
    .emit(&mut ip, 1);
    ip[ipv4::HEADER_LEN..].copy_from_slice(payload);
    eth_frame(Config::default().gateway_mac, EtherType::Ipv4, &ip)
}

fn echo_request(dst: Ipv4Address, seq: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x77,
        seq_no: seq,
        data,
    };
    let mut buf = vec![0u8; icmp.buffer_len()];
    icmp.emit(&mut buf);
    ipv4_frame(GUEST_IP, dst, IpProtocol::Icmp, &buf)
}

/// Drains every queued frame.
fn drain(s: &mut Stack) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..TX_QUEUE_CAPACITY + 1 {
        let mut got = None;
        match s.dispatch(Instant::ZERO, |f| {
            got = Some(f.to_vec());
            true
        }) {
            Dispatch::Sent(_) => out.push(got.unwrap()),
            Dispatch::Idle => break,
            Dispatch::Held => unreachable!(),
        }
    }
    out
}

mod ethernet_layer {
    use super::*;

    #[test]
    fn short_frame_is_counted() {
        let mut s = stack();
        s.process_frame(Instant::ZERO, &[0u8; 13]);
        assert_eq!(s.stats().drop_eth_truncated, 1);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn foreign_unicast_and_group_sources_are_dropped() {
        let mut s = stack();
        let mut f = echo_request(Ipv4Address::new(10, 0, 2, 2), 1, b"x");
        f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 0x99]);
        s.process_frame(Instant::ZERO, &f);
        assert_eq!(s.stats().drop_eth_foreign_destination, 1);
        let mut f = echo_request(Ipv4Address::new(10, 0, 2, 2), 1, b"x");
        f[6] = 0x01;
        s.process_frame(Instant::ZERO, &f);
        assert_eq!(s.stats().drop_eth_bad_source, 1);
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.guest_mac(), None);
    }

    #[test]
    fn unknown_ethertypes_and_ipv6_are_counted() {
        let mut s = stack();
        s.process_frame(
            Instant::ZERO,
            &eth_frame(
                EthernetAddress::BROADCAST,
                EtherType::Unknown(0x88cc),
                &[0; 30],
            ),
        );
        s.process_frame(
            Instant::ZERO,
            &eth_frame(EthernetAddress::BROADCAST, EtherType::Ipv6, &[0; 40]),
        );
        assert_eq!(s.stats().drop_eth_unknown_ethertype, 1);
        assert_eq!(s.stats().drop_ipv6_unsupported, 1);
        assert_eq!(s.guest_mac(), Some(GUEST_MAC));
    }
}

mod arp_layer {
    use super::*;

    fn arp_request(target: Ipv4Address) -> Vec<u8> {
        let repr = ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: GUEST_MAC,
            source_protocol_addr: GUEST_IP,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        };
        let mut p = [0u8; arp::PACKET_LEN];
        repr.emit(&mut p);
        eth_frame(EthernetAddress::BROADCAST, EtherType::Arp, &p)
    }

    #[test]
    fn answers_for_gateway_and_dns_only() {
        let mut s = stack();
        for target in [Ipv4Address::new(10, 0, 2, 2), Ipv4Address::new(10, 0, 2, 3)] {
            s.process_frame(Instant::ZERO, &arp_request(target));
            let out = drain(&mut s);
            assert_eq!(out.len(), 1);
            let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
            assert_eq!(eth.dst_addr(), GUEST_MAC);
            assert_eq!(eth.ethertype(), EtherType::Arp);
            let r = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
            assert_eq!(r.operation, ArpOperation::Reply);
            assert_eq!(r.source_hardware_addr, s.config().gateway_mac);
            assert_eq!(r.source_protocol_addr, target);
            assert_eq!(r.target_protocol_addr, GUEST_IP);
        }
        s.process_frame(Instant::ZERO, &arp_request(Ipv4Address::new(10, 0, 2, 77)));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.stats().arp_rx_requests, 3);
        assert_eq!(s.stats().arp_tx_replies, 2);
        assert_eq!(s.stats().drop_arp_not_for_us, 1);
    }

    #[test]
    fn truncated_arp_is_counted() {
        let mut s = stack();
        let f = arp_request(Ipv4Address::new(10, 0, 2, 2));
        s.process_frame(Instant::ZERO, &f[..f.len() - 1]);
        assert_eq!(s.stats().drop_arp_malformed, 1);
    }

    #[test]
    fn unresolved_destination_is_resolved_by_arp() {
        let mut s = stack();
        let now = Instant::from_secs(5);
        let repr = Ipv4Repr {
            src: s.config().gateway_ipv4,
            dst: GUEST_IP,
            protocol: IpProtocol::Udp,
            payload_len: 4,
            ttl: 64,
        };
        assert!(s.dispatch_ipv4(now, None, &repr, |b| b.copy_from_slice(b"data")));
        // The packet waits; an ARP request goes out.
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert!(eth.dst_addr().is_broadcast());
        let req = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        assert_eq!(req.target_protocol_addr, GUEST_IP);
        // A retry a second later.
        s.poll(now + Duration::from_secs(1));
        assert_eq!(drain(&mut s).len(), 1);
        assert_eq!(s.stats().arp_tx_requests, 2);
        // The guest answers; the parked packet leaves with the right MAC.
        let reply = ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: GUEST_MAC,
            source_protocol_addr: GUEST_IP,
            target_hardware_addr: s.config().gateway_mac,
            target_protocol_addr: s.config().gateway_ipv4,
        };
        let mut p = [0u8; arp::PACKET_LEN];
        reply.emit(&mut p);
        let gw = s.config().gateway_mac;
        s.process_frame(now, &eth_frame(gw, EtherType::Arp, &p));
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(eth.dst_addr(), GUEST_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.payload(), b"data");
        assert!(ip.verify_checksum());
    }

    #[test]
    fn unanswered_resolution_drops_the_packet() {
        let mut s = stack();
        let repr = Ipv4Repr {
            src: s.config().gateway_ipv4,
            dst: GUEST_IP,
            protocol: IpProtocol::Udp,
            payload_len: 0,
            ttl: 64,
        };
        s.dispatch_ipv4(Instant::ZERO, None, &repr, |_| {});
        let mut t = Instant::ZERO;
        for _ in 0..5 {
            t = t + Duration::from_secs(1);
            s.poll(t);
        }
        assert_eq!(s.stats().drop_arp_unresolved, 1);
        assert_eq!(s.poll_at(), None);
    }
}

mod ipv4_layer {
    use super::*;

    #[test]
    fn echo_to_gateway_and_dns_is_answered() {
        let mut s = stack();
        for dst in [Ipv4Address::new(10, 0, 2, 2), Ipv4Address::new(10, 0, 2, 3)] {
            s.process_frame(Instant::ZERO, &echo_request(dst, 9, b"payload!"));
            let out = drain(&mut s);
            assert_eq!(out.len(), 1);
            let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
            assert_eq!(eth.dst_addr(), GUEST_MAC);
            assert_eq!(eth.src_addr(), s.config().gateway_mac);
            let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
            let ip_repr = Ipv4Repr::parse(&ip).unwrap();
            assert_eq!((ip_repr.src, ip_repr.dst), (dst, GUEST_IP));
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            assert_eq!(
                Icmpv4Repr::parse(&icmp).unwrap(),
                Icmpv4Repr::EchoReply {
                    ident: 0x77,
                    seq_no: 9,
                    data: b"payload!"
                }
            );
        }
        assert_eq!(s.stats().icmp_rx_echo_requests, 2);
        assert_eq!(s.stats().icmp_tx_echo_replies, 2);
        assert_eq!(s.stats().eth_tx_frames, 2);
    }

    #[test]
    fn bad_headers_are_counted_by_reason() {
        let mut s = stack();
        let gw = Ipv4Address::new(10, 0, 2, 2);
        let good = echo_request(gw, 1, b"abc");
        let mut bad_sum = good.clone();
        bad_sum[14 + 8] = 3; // TTL changed, checksum not
        s.process_frame(Instant::ZERO, &bad_sum);
        let mut bad_version = good.clone();
        bad_version[14] = 0x65;
        s.process_frame(Instant::ZERO, &bad_version);
        s.process_frame(Instant::ZERO, &good[..good.len() - 2]);
        let mut frag = good.clone();
        frag[14 + 6] = 0x20; // MF
        let sum = wire::checksum::compute(&{
            let mut h = frag[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        frag[24..26].copy_from_slice(&sum.to_be_bytes());
        s.process_frame(Instant::ZERO, &frag);
        let st = s.stats();
        assert_eq!(st.drop_ipv4_checksum, 1);
        assert_eq!(st.drop_ipv4_malformed, 1);
        assert_eq!(st.drop_ipv4_truncated, 1);
        assert_eq!(st.drop_ipv4_fragment, 1);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn padded_frame_is_trimmed_and_answered() {
        let mut s = stack();
        let mut f = echo_request(Ipv4Address::new(10, 0, 2, 2), 1, b"");
        f.resize(60, 0);
        s.process_frame(Instant::ZERO, &f);
        assert_eq!(s.stats().icmp_tx_echo_replies, 1);
    }

    #[test]
    fn spoofed_and_unrouted_packets_are_dropped() {
        let mut s = stack();
        let icmp = [8u8, 0, 0xf7, 0xff, 0, 0, 0, 0];
        let gw = Ipv4Address::new(10, 0, 2, 2);
        for (src, dst, proto, payload) in [
            // Source outside the guest network.
            (
                Ipv4Address::new(192, 168, 9, 9),
                gw,
                IpProtocol::Icmp,
                &icmp[..],
            ),
            // Source is the gateway's own address.
            (gw, gw, IpProtocol::Icmp, &icmp[..]),
            // Beyond the gateway (not forwarded yet).
            (
                GUEST_IP,
                Ipv4Address::new(127, 0, 0, 1),
                IpProtocol::Icmp,
                &icmp[..],
            ),
            // A protocol the gateway does not speak.
            (GUEST_IP, gw, IpProtocol::Unknown(253), &[][..]),
        ] {
            s.process_frame(Instant::ZERO, &ipv4_frame(src, dst, proto, payload));
        }
        let st = s.stats();
        assert_eq!(st.drop_ipv4_bad_source, 2);
        assert_eq!(st.drop_ipv4_not_routed, 1);
        assert_eq!(st.drop_ipv4_unknown_protocol, 1);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn bad_icmp_checksum_is_counted() {
        let mut s = stack();
        let mut f = echo_request(Ipv4Address::new(10, 0, 2, 2), 1, b"abcd");
        let last = f.len() - 1;
        f[last] ^= 0xff;
        s.process_frame(Instant::ZERO, &f);
        assert_eq!(s.stats().drop_icmp_checksum, 1);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn egress_queue_is_bounded_and_held_frames_stay() {
        let mut s = stack();
        for i in 0..(TX_QUEUE_CAPACITY + 5) {
            s.process_frame(
                Instant::ZERO,
                &echo_request(Ipv4Address::new(10, 0, 2, 2), i as u16, b"x"),
            );
        }
        assert_eq!(s.stats().drop_tx_queue_full, 5);
        assert_eq!(s.dispatch(Instant::ZERO, |_| false), Dispatch::Held);
        let out = drain(&mut s);
        assert_eq!(out.len(), TX_QUEUE_CAPACITY);
        // The oldest frames were kept, in order.
        let first = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv4Packet::new_checked(first.payload()).unwrap();
        assert_eq!(
            Icmpv4Packet::new_checked(ip.payload())
                .unwrap()
                .echo_seq_no(),
            0
        );
    }
}

mod dhcp_layer {
    use super::*;

    fn client_msg(t: DhcpMessageType, f: impl FnOnce(&mut DhcpRepr<'static>)) -> Vec<u8> {
        let mut r = DhcpRepr {
            op: DhcpOp::Request,
            message_type: t,
            transaction_id: 0x1234_5678,
            broadcast: false,
            client_hardware_address: GUEST_MAC,
            ..DhcpRepr::empty()
        };
        f(&mut r);
        let mut udp_buf = vec![0u8; udp::HEADER_LEN + r.buffer_len()];
        r.emit(&mut udp_buf[udp::HEADER_LEN..]);
        let src = r.client_ip;
        UdpRepr {
            src_port: 68,
            dst_port: 67,
        }
        .emit_v4(&mut udp_buf, src, Ipv4Address::BROADCAST);
        let mut ip = vec![0u8; ipv4::HEADER_LEN + udp_buf.len()];
        Ipv4Repr {
            src,
            dst: Ipv4Address::BROADCAST,
            protocol: IpProtocol::Udp,
            payload_len: udp_buf.len(),
            ttl: 64,
        }
        .emit(&mut ip, 0);
        ip[ipv4::HEADER_LEN..].copy_from_slice(&udp_buf);
        eth_frame(EthernetAddress::BROADCAST, EtherType::Ipv4, &ip)
    }

    /// Parses a DHCP reply frame, returning the Ethernet and IP destinations and the message.
    fn parse_reply(frame: &[u8]) -> (EthernetAddress, Ipv4Address, DhcpRepr<'_>) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let ip_repr = Ipv4Repr::parse(&ip).unwrap();
        let udp_p = UdpPacket::new_checked(&frame[34..]).unwrap();
        assert!(udp_p.verify_checksum_v4(ip_repr.src, ip_repr.dst));
        assert_eq!((udp_p.src_port(), udp_p.dst_port()), (67, 68));
        let dhcp = DhcpPacket::new_checked(&frame[42..]).unwrap();
        (eth.dst_addr(), ip_repr.dst, DhcpRepr::parse(&dhcp).unwrap())
    }

    #[test]
    fn discover_request_ack_over_the_wire() {
        let mut s = Stack::new(Config {
            mtu: 65520,
            domain_name: Some("virtgate.internal".into()),
            ..Config::default()
        })
        .unwrap();
        s.process_frame(
            Instant::ZERO,
            &client_msg(DhcpMessageType::Discover, |_| {}),
        );
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let (mac, ip, offer) = parse_reply(&out[0]);
        // No broadcast flag and no ciaddr: unicast to yiaddr at chaddr (RFC 2131 §4.1).
        assert_eq!((mac, ip), (GUEST_MAC, GUEST_IP));
        assert_eq!(offer.message_type, DhcpMessageType::Offer);
        assert_eq!(offer.your_ip, GUEST_IP);
        assert_eq!(offer.interface_mtu, Some(65520));
        assert_eq!(offer.domain_name, Some(&b"virtgate.internal"[..]));

        s.process_frame(
            Instant::ZERO,
            &client_msg(DhcpMessageType::Request, |r| {
                r.server_identifier = Some(Ipv4Address::new(10, 0, 2, 2));
                r.requested_ip = Some(GUEST_IP);
                r.broadcast = true;
            }),
        );
        let out = drain(&mut s);
        let (mac, ip, ack) = parse_reply(&out[0]);
        assert_eq!(
            (mac, ip),
            (EthernetAddress::BROADCAST, Ipv4Address::BROADCAST)
        );
        assert_eq!(ack.message_type, DhcpMessageType::Ack);
        assert_eq!(ack.lease_time, Some(86400));
        let st = s.stats();
        assert_eq!((st.dhcp_rx_discovers, st.dhcp_tx_offers), (1, 1));
        assert_eq!((st.dhcp_rx_requests, st.dhcp_tx_acks), (1, 1));
        assert_eq!(s.leases().filter(|l| l.bound).count(), 1);
    }

    #[test]
    fn malformed_dhcp_and_disabled_server() {
        let mut s = stack();
        let mut f = client_msg(DhcpMessageType::Discover, |_| {});
        // Break the magic cookie and fix up the UDP checksum by zeroing it.
        f[42 + 236] = 0;
        f[40] = 0;
        f[41] = 0;
        s.process_frame(Instant::ZERO, &f);
        assert_eq!(s.stats().drop_dhcp_malformed, 1);

        let mut off = Stack::new(Config {
            dhcp_enabled: false,
            ..Config::default()
        })
        .unwrap();
        off.process_frame(
            Instant::ZERO,
            &client_msg(DhcpMessageType::Discover, |_| {}),
        );
        assert_eq!(off.stats().drop_udp_no_service, 1);
        assert!(drain(&mut off).is_empty());
    }
}
