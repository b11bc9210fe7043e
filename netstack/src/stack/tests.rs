//! Stack tests: frames in, frames out, grouped by protocol.

use super::*;
use crate::time::Duration;
use crate::wire::dhcpv4::DhcpOp;
use crate::wire::{arp, ipv4, udp};
use crate::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, Icmpv4Packet,
    Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

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
fn drain<H: crate::host::HostIo>(s: &mut Stack<H>) -> Vec<Vec<u8>> {
    drain_meta(s).into_iter().map(|(f, _)| f).collect()
}

/// Drains every queued frame with its offload metadata.
fn drain_meta<H: crate::host::HostIo>(
    s: &mut Stack<H>,
) -> Vec<(Vec<u8>, crate::offload::FrameMeta)> {
    let mut out = Vec::new();
    // Bounded: a full queue, and what TCP held back for it (back-pressure) many times over.
    for _ in 0..8 * TX_QUEUE_CAPACITY {
        let mut got = None;
        match s.dispatch(Instant::ZERO, |f, meta| {
            got = Some((f.to_vec(), meta));
            true
        }) {
            Dispatch::Sent(_) => out.push(got.unwrap()),
            Dispatch::Idle => break,
            Dispatch::Held => unreachable!(),
        }
    }
    out
}

mod ipv6;
mod lossy_link;

/// Frames to the guest spread over the device's RX queues by flow.
mod steering {
    use super::*;
    use crate::stack::{steering_hash, TxQueue, MAX_QUEUES};

    /// A TCP or UDP frame from `src:sport` to `dst:dport` (only the fields the hash reads).
    fn flow_frame(
        proto: IpProtocol,
        src: Ipv4Address,
        sport: u16,
        dst: Ipv4Address,
        dport: u16,
    ) -> Vec<u8> {
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        ipv4_frame(src, dst, proto, &l4)
    }

    #[test]
    fn the_hash_is_the_same_both_ways_and_spreads_flows() {
        let (a, b) = (GUEST_IP, Ipv4Address::new(10, 0, 2, 2));
        let mut per_queue = [0usize; 4];
        for port in 0..200u16 {
            for proto in [IpProtocol::Tcp, IpProtocol::Udp] {
                let there = steering_hash(&flow_frame(proto, a, 40000 + port, b, 80));
                let back = steering_hash(&flow_frame(proto, b, 80, a, 40000 + port));
                assert_eq!(there, back, "port {port}");
                per_queue[there as usize % 4] += 1;
            }
        }
        // 400 flows over four queues: each gets a fair share.
        assert!(
            per_queue.iter().all(|&n| (60..140).contains(&n)),
            "{per_queue:?}"
        );
        // ARP has no flow: queue 0.
        let arp = eth_frame(GUEST_MAC, EtherType::Arp, &[0u8; 28]);
        assert_eq!(steering_hash(&arp), 0);
    }

    #[test]
    fn a_flow_stays_on_one_queue_and_fewer_queues_take_over_the_frames() {
        let mut q = TxQueue::default();
        q.set_active(4);
        let frames: Vec<Vec<u8>> = (0..64u16)
            .map(|p| {
                flow_frame(
                    IpProtocol::Tcp,
                    Ipv4Address::new(10, 0, 2, 2),
                    80,
                    GUEST_IP,
                    40000 + p,
                )
            })
            .collect();
        for f in &frames {
            assert!(q.push(f.clone()));
            // The same flow again: same queue.
            assert!(q.push(f.clone()));
        }
        let used = (0..4).filter(|&i| !q.queues[i].is_empty()).count();
        assert_eq!(used, 4);
        for i in 0..4 {
            let mut it = q.queues[i].iter();
            while let (Some(x), Some(y)) = (it.next(), it.next()) {
                assert_eq!(
                    x.frame(),
                    y.frame(),
                    "a flow's frames stay together, in order"
                );
            }
        }
        // The guest goes down to two pairs: nothing is lost, everything is on queues 0 and 1.
        q.set_active(2);
        assert!((2..MAX_QUEUES).all(|i| q.queues[i].is_empty()));
        assert_eq!(q.queues[0].len() + q.queues[1].len(), 128);
        for f in &frames {
            let at = (steering_hash(f) % 2) as usize;
            assert!(q.queues[at].iter().any(|g| g.frame() == f.as_slice()));
        }
    }

    #[test]
    fn the_stack_delivers_each_queue_separately() {
        let mut s = Stack::new(Config::default()).unwrap();
        s.set_queues(4);
        // Echo requests from many "flows" (ICMP: hashed by addresses only, so one queue).
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(10, 0, 2, 3), 1, b"x"),
        );
        let pending: Vec<usize> = (0..4).filter(|&q| s.has_pending_on(q)).collect();
        assert_eq!(pending.len(), 1);
        let q = pending[0];
        let other = (q + 1) % 4;
        assert_eq!(
            s.dispatch_on(other, Instant::ZERO, |_, _| true),
            Dispatch::Idle
        );
        assert!(matches!(
            s.dispatch_on(q, Instant::ZERO, |_, _| true),
            Dispatch::Sent(_)
        ));
        assert!(!s.has_pending());
    }
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
        // Without IPv6, its frames are counted as unsupported.
        let mut s = Stack::new(Config {
            ipv6: None,
            ..Config::default()
        })
        .unwrap();
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
        assert_eq!(s.stats().drop_arp_foreign_target, 1);
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
        assert_eq!(s.dispatch(Instant::ZERO, |_, _| false), Dispatch::Held);
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
    fn replies_go_whole_on_links_narrower_than_576_bytes() {
        // A client on a packet socket cannot reassemble; RFC 2131 §2 has it take 576 bytes.
        let mut s = Stack::new(Config {
            mtu: 68,
            ipv6: None,
            ..Config::default()
        })
        .unwrap();
        s.process_frame(
            Instant::ZERO,
            &client_msg(DhcpMessageType::Discover, |_| {}),
        );
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        assert!(out[0].len() > 14 + 68);
        let (_, _, offer) = parse_reply(&out[0]);
        assert_eq!(offer.interface_mtu, Some(68));
        assert_eq!(s.stats().ipv4_tx_fragments, 0);
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
        assert_eq!(s.leases().iter().filter(|l| l.bound).count(), 1);
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

mod host_flows {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Forward, ForwardProtocol};
    use crate::flows::UDP_IDLE_TIMEOUT;
    use crate::host::{ScriptedHost, ScriptedSocket, Sent};

    fn host_stack(cfg: Config) -> Stack<ScriptedHost> {
        let mut s = Stack::with_host(cfg, ScriptedHost::new()).unwrap();
        s.open_forwards().unwrap();
        s
    }

    fn udp_frame(dst: Ipv4Address, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; 8 + payload.len()];
        u[8..].copy_from_slice(payload);
        UdpRepr {
            src_port: sport,
            dst_port: dport,
        }
        .emit_v4(&mut u, GUEST_IP, dst);
        ipv4_frame(GUEST_IP, dst, IpProtocol::Udp, &u)
    }

    /// The UDP datagram in a frame from the stack: (src, sport, dst, dport, payload).
    fn parse_udp(frame: &[u8]) -> (Ipv4Address, u16, Ipv4Address, u16, Vec<u8>) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), GUEST_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let r = Ipv4Repr::parse(&ip).unwrap();
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum_v4(r.src, r.dst));
        (
            r.src,
            u.src_port(),
            r.dst,
            u.dst_port(),
            u.payload().to_vec(),
        )
    }

    /// ICMP type and code in a frame from the stack, and the quoted destination.
    fn parse_icmp_error(frame: &[u8]) -> (u8, u8, Ipv4Address) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        let quoted = Ipv4Packet::new_unchecked(icmp.data());
        (icmp.msg_type(), icmp.msg_code(), quoted.dst_addr())
    }

    #[test]
    fn gateway_maps_to_loopback_and_replies_come_back() {
        let mut s = host_stack(Config::default());
        let gw = Ipv4Address::new(10, 0, 2, 2);
        s.process_frame(Instant::ZERO, &udp_frame(gw, 40000, 7, b"ping"));
        let to: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let sock = s.host().find(&ScriptedSocket::UdpConnected(to)).unwrap();
        assert_eq!(
            s.host().sent,
            vec![Sent::Udp {
                sock,
                to,
                payload: b"ping".to_vec()
            }]
        );
        // Same conversation, same socket.
        s.process_frame(Instant::ZERO, &udp_frame(gw, 40000, 7, b"again"));
        assert_eq!(s.host().sockets.len(), 1);
        s.host_mut().inject_datagram(sock, to, b"pong");
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        assert_eq!(
            parse_udp(&out[0]),
            (gw, 7, GUEST_IP, 40000, b"pong".to_vec())
        );
        let st = s.stats();
        assert_eq!((st.udp_tx_host_datagrams, st.udp_rx_host_datagrams), (2, 1));
        assert_eq!((st.flows_opened, st.flows_active), (1, 1));
    }

    #[test]
    fn a_uso_request_is_split_into_its_datagrams_and_replies_may_leave_checksums_partial() {
        use crate::offload::{FrameMeta, Gso, GsoKind, GuestOffloads, PartialChecksum};
        let mut s = host_stack(Config::default());
        let gw = Ipv4Address::new(10, 0, 2, 2);
        let payload: Vec<u8> = (0..3000).map(|i| (i % 256) as u8).collect();
        let meta = FrameMeta {
            checksum: None,
            gso: Some(Gso {
                kind: GsoKind::Udp,
                segment_size: 1200,
                header_len: 42,
            }),
        };
        s.process_frame_meta(Instant::ZERO, &udp_frame(gw, 40000, 7, &payload), meta);
        let to: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let sock = s.host().find(&ScriptedSocket::UdpConnected(to)).unwrap();
        let sent: Vec<Sent> = [&payload[..1200], &payload[1200..2400], &payload[2400..]]
            .iter()
            .map(|p| Sent::Udp {
                sock,
                to,
                payload: p.to_vec(),
            })
            .collect();
        assert_eq!(s.host().sent, sent);
        assert_eq!(s.stats().udp_rx_segmented, 1);
        assert_eq!(s.stats().udp_tx_host_datagrams, 3);

        // A request for more datagrams than Linux would ever build (3000 of one byte) is dropped
        // and counted, not turned into 3000 sends.
        let tiny = FrameMeta {
            checksum: None,
            gso: Some(Gso {
                kind: GsoKind::Udp,
                segment_size: 1,
                header_len: 42,
            }),
        };
        s.process_frame_meta(Instant::ZERO, &udp_frame(gw, 40000, 7, &payload), tiny);
        assert_eq!(s.stats().drop_udp_gso_invalid, 1);
        assert_eq!(s.host().sent.len(), 3);

        // The reply, to a guest that takes partial checksums.
        s.set_guest_offloads(GuestOffloads {
            partial_checksum: true,
            ..GuestOffloads::default()
        });
        s.host_mut().inject_datagram(sock, to, b"pong");
        s.host_ready(Instant::ZERO, sock);
        let mut out = drain_meta(&mut s);
        assert_eq!(out.len(), 1);
        let (frame, meta) = &mut out[0];
        let c = PartialChecksum {
            start: 34,
            offset: 6,
        };
        assert_eq!(meta.checksum, Some(c));
        assert!(c.complete(frame));
        assert_eq!(parse_udp(frame), (gw, 7, GUEST_IP, 40000, b"pong".to_vec()));
    }

    #[test]
    fn no_map_gw_and_remote_addresses() {
        let mut s = host_stack(Config {
            map_gateway_to_loopback: false,
            ..Config::default()
        });
        s.process_frame(
            Instant::ZERO,
            &udp_frame(Ipv4Address::new(10, 0, 2, 2), 1, 7, b"x"),
        );
        assert_eq!(s.stats().drop_udp_no_service, 1);
        let remote = Ipv4Address::new(192, 0, 2, 10);
        s.process_frame(Instant::ZERO, &udp_frame(remote, 1, 9, b"x"));
        let to: SocketAddr = "192.0.2.10:9".parse().unwrap();
        assert!(s.host().find(&ScriptedSocket::UdpConnected(to)).is_some());
    }

    #[test]
    fn dns_goes_to_the_first_upstream_or_is_counted() {
        let upstream: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut s = host_stack(Config {
            dns_upstreams: vec![upstream],
            ..Config::default()
        });
        let dns = Ipv4Address::new(10, 0, 2, 3);
        s.process_frame(Instant::ZERO, &udp_frame(dns, 5000, 53, b"query"));
        assert!(s
            .host()
            .find(&ScriptedSocket::UdpConnected(upstream))
            .is_some());
        let mut none = host_stack(Config::default());
        none.process_frame(Instant::ZERO, &udp_frame(dns, 5000, 53, b"query"));
        assert_eq!(none.stats().drop_dns_no_upstream, 1);
        assert!(none.host().sockets.is_empty());
    }

    #[test]
    fn refused_and_unreachable_become_icmp_errors() {
        let mut s = host_stack(Config::default());
        let gw = Ipv4Address::new(10, 0, 2, 2);
        s.process_frame(Instant::ZERO, &udp_frame(gw, 40000, 9, b"x"));
        let sock = s.host().sockets.keys().copied().next().unwrap();
        // The remote's port unreachable surfaces on the socket.
        s.host_mut()
            .inject_error(sock, std::io::ErrorKind::ConnectionRefused);
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        assert_eq!(parse_icmp_error(&out[0]), (3, 3, gw));
        // The host refuses to open a socket at all.
        s.host_mut().refuse = Some(std::io::ErrorKind::NetworkUnreachable);
        s.process_frame(
            Instant::ZERO,
            &udp_frame(Ipv4Address::new(192, 0, 2, 1), 1, 2, b"x"),
        );
        let out = drain(&mut s);
        assert_eq!(
            parse_icmp_error(&out[0]),
            (3, 0, Ipv4Address::new(192, 0, 2, 1))
        );
        assert_eq!(s.stats().flows_refused, 1);
        assert_eq!(s.stats().icmp_tx_errors, 2);
    }

    #[test]
    fn ttl_running_out_at_the_gateway_is_time_exceeded() {
        let mut s = host_stack(Config::default());
        let mut f = udp_frame(Ipv4Address::new(192, 0, 2, 1), 1, 33434, b"trace");
        f[14 + 8] = 1; // TTL 1
        f[24] = 0;
        f[25] = 0;
        let sum = wire::checksum::compute(&f[14..34]);
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        s.process_frame(Instant::ZERO, &f);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let (t, c, _) = parse_icmp_error(&out[0]);
        assert_eq!((t, c), (11, 0));
        let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
        assert_eq!(ip.src_addr(), Ipv4Address::new(10, 0, 2, 2));
        assert!(s.host().sockets.is_empty());
    }

    #[test]
    fn inbound_forward_reaches_the_guest_and_replies_go_back() {
        let listen: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        let mut s = host_stack(Config {
            forwards: vec![Forward {
                protocol: ForwardProtocol::Udp,
                host: listen,
                guest_port: 53,
            }],
            ..Config::default()
        });
        let lsock = s.host().find(&ScriptedSocket::UdpBound(listen)).unwrap();
        let peer: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        // No guest address known yet: counted.
        s.host_mut().inject_datagram(lsock, peer, b"early");
        s.host_ready(Instant::ZERO, lsock);
        assert_eq!(s.stats().drop_udp_forward_no_guest, 1);
        // The guest speaks once (any IPv4 packet), then the forward works.
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(10, 0, 2, 3), 1, b""),
        );
        drain(&mut s);
        s.host_mut().inject_datagram(lsock, peer, b"query");
        s.host_ready(Instant::ZERO, lsock);
        let out = drain(&mut s);
        let gw = Ipv4Address::new(10, 0, 2, 2);
        assert_eq!(
            parse_udp(&out[0]),
            (gw, 41000, GUEST_IP, 53, b"query".to_vec())
        );
        // The guest's answer leaves through the bound socket to the peer.
        s.process_frame(Instant::ZERO, &udp_frame(gw, 53, 41000, b"answer"));
        assert_eq!(
            s.host().sent.last(),
            Some(&Sent::Udp {
                sock: lsock,
                to: peer,
                payload: b"answer".to_vec()
            })
        );
    }

    #[test]
    fn datagrams_larger_than_the_mtu_leave_in_fragments() {
        let mut s = host_stack(Config::default());
        let gw = Ipv4Address::new(10, 0, 2, 2);
        s.process_frame(Instant::ZERO, &udp_frame(gw, 40000, 7, b"big?"));
        let sock = s.host().sockets.keys().copied().next().unwrap();
        let big: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        s.host_mut()
            .inject_datagram(sock, "127.0.0.1:7".parse().unwrap(), &big);
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        assert_eq!(out.len(), 3);
        let mut whole = Vec::new();
        let mut ident = None;
        for (i, f) in out.iter().enumerate() {
            let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert!(ip.total_len() <= 1500);
            assert_eq!(usize::from(ip.frag_offset()), whole.len());
            assert_eq!(ip.more_frags(), i < 2);
            assert!(ident.is_none_or(|id| id == ip.ident()));
            ident = Some(ip.ident());
            whole.extend_from_slice(ip.payload());
        }
        // The reassembled datagram is whole and its checksum holds.
        let u = UdpPacket::new_checked(&whole[..]).unwrap();
        assert!(u.verify_checksum_v4(gw, GUEST_IP));
        assert_eq!(u.payload(), &big[..]);
        assert_eq!(s.stats().ipv4_tx_fragments, 3);
    }

    #[test]
    fn idle_flows_expire_and_close_their_sockets() {
        let mut s = host_stack(Config::default());
        s.process_frame(
            Instant::ZERO,
            &udp_frame(Ipv4Address::new(10, 0, 2, 2), 1, 7, b"x"),
        );
        let sock = s.host().sockets.keys().copied().next().unwrap();
        assert!(s.poll_at() <= Some(Instant::ZERO + UDP_IDLE_TIMEOUT));
        s.poll(Instant::from_secs(UDP_IDLE_TIMEOUT.total_secs() - 1));
        assert!(s.host().closed.is_empty(), "not idle long enough");
        s.poll(Instant::ZERO + UDP_IDLE_TIMEOUT);
        assert_eq!(s.host().closed, vec![sock]);
        assert_eq!((s.stats().flows_closed, s.stats().flows_active), (1, 0));
    }

    #[test]
    fn echo_goes_through_the_host_and_back_with_the_guest_ident() {
        let mut s = host_stack(Config::default());
        let remote = Ipv4Address::new(192, 0, 2, 7);
        s.process_frame(Instant::ZERO, &echo_request(remote, 5, b"data"));
        let sock = s
            .host()
            .find(&ScriptedSocket::IcmpEcho("192.0.2.7".parse().unwrap()))
            .unwrap();
        assert_eq!(
            s.host().sent,
            vec![Sent::Echo {
                sock,
                seq: 5,
                data: b"data".to_vec()
            }]
        );
        s.host_mut().inject_echo_reply(sock, 5, b"data");
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), remote);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp).unwrap(),
            Icmpv4Repr::EchoReply {
                ident: 0x77,
                seq_no: 5,
                data: b"data"
            }
        );
        // Echo to the DNS address is the gateway's own answer.
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(10, 0, 2, 3), 6, b""),
        );
        assert_eq!(drain(&mut s).len(), 1);
        assert_eq!(s.stats().icmp_tx_host_echo_requests, 1);
    }

    /// Echo to the gateway: the host's loopback answers before its send returns, so the reply
    /// is taken in the same batch, without waiting for the socket's readiness.
    #[test]
    fn echo_to_the_gateway_is_answered_in_the_same_batch() {
        let mut s = host_stack(Config::default());
        let gw = Ipv4Address::new(10, 0, 2, 2);
        s.process_frame(Instant::ZERO, &echo_request(gw, 1, b"one"));
        let sock = s
            .host()
            .find(&ScriptedSocket::IcmpEcho("127.0.0.1".parse().unwrap()))
            .unwrap();
        s.host_ready(Instant::ZERO, sock);
        drain(&mut s);
        // The reply is there when the next request has gone (as on loopback).
        s.host_mut().inject_echo_reply(sock, 2, b"two");
        s.process_frame(Instant::ZERO, &echo_request(gw, 2, b"two"));
        let out = drain(&mut s);
        assert_eq!(out.len(), 1, "the reply, with no host_ready");
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp).unwrap(),
            Icmpv4Repr::EchoReply {
                ident: 0x77,
                seq_no: 2,
                data: b"two"
            }
        );
        assert_eq!(s.stats().icmp_rx_host_echo_replies, 1);
    }

    #[test]
    fn echo_to_gateway_falls_back_to_a_local_answer() {
        let mut s = host_stack(Config::default());
        s.host_mut().refuse = Some(std::io::ErrorKind::PermissionDenied);
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(10, 0, 2, 2), 1, b"x"),
        );
        assert_eq!(drain(&mut s).len(), 1);
        assert_eq!(s.stats().icmp_host_unavailable, 1);
        // Elsewhere, the guest learns the truth.
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(192, 0, 2, 1), 1, b"x"),
        );
        let out = drain(&mut s);
        assert_eq!(
            parse_icmp_error(&out[0]),
            (3, 13, Ipv4Address::new(192, 0, 2, 1))
        );
    }
}

mod tcp_flows {
    use std::net::SocketAddr;

    use super::*;
    use crate::host::{ScriptedHost, ScriptedSocket};
    use crate::time::Duration;
    use crate::wire::tcp::flags;
    use crate::wire::{SeqNumber, TcpPacket, TcpRepr};

    const GW: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
    const GUEST_ISN: u32 = 1000;

    fn seg(flags: u8, seq: u32, ack: Option<u32>, window: u16, payload: &[u8]) -> Vec<u8> {
        seg_to(80, flags, seq, ack, window, payload)
    }

    /// [`seg`] to another port of the host (another connection).
    fn seg_to(
        dport: u16,
        flags: u8,
        seq: u32,
        ack: Option<u32>,
        window: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let r = TcpRepr {
            src_port: 40000,
            dst_port: dport,
            seq_number: SeqNumber(seq),
            ack_number: ack.map(SeqNumber),
            flags,
            window_len: window,
            urgent_at: 0,
            max_seg_size: (flags & flags::SYN != 0).then_some(1460),
            window_scale: (flags & flags::SYN != 0).then_some(7),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        };
        let mut t = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut t, GUEST_IP, GW);
        ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t)
    }

    /// The TCP segments among the frames: (flags incl. ACK, seq, ack, window, options, payload).
    fn segments(frames: &[Vec<u8>]) -> Vec<TcpRepr<'_>> {
        frames
            .iter()
            .filter_map(|f| {
                let ip = Ipv4Packet::new_checked(&f[14..]).ok()?;
                if ip.protocol() != IpProtocol::Tcp {
                    return None;
                }
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                let body = &f[14 + usize::from(ip.header_len())..14 + usize::from(ip.total_len())];
                let p = TcpPacket::new_checked(body).ok()?;
                Some(TcpRepr::parse(&p, src, dst).expect("valid segment"))
            })
            .collect()
    }

    fn remote() -> SocketAddr {
        "127.0.0.1:80".parse().unwrap()
    }

    /// A connection through the handshake; returns the stack and our ISN.
    fn established() -> (Stack<ScriptedHost>, u32, crate::host::SocketId) {
        established_with(Config::default())
    }

    /// The guest's SYN, the host's connect completing: the stack, the host socket and the
    /// frames to the guest (the SYN-ACK first).
    fn syn_acked(cfg: Config) -> (Stack<ScriptedHost>, crate::host::SocketId, Vec<Vec<u8>>) {
        let mut s = Stack::with_host(cfg, ScriptedHost::new()).unwrap();
        s.process_frame(Instant::ZERO, &seg(flags::SYN, GUEST_ISN, None, 64240, b""));
        let sock = s
            .host()
            .find(&ScriptedSocket::Tcp(remote()))
            .expect("host connect");
        // Nothing for the guest until the host answers.
        assert!(segments(&drain(&mut s)).is_empty());
        s.host_mut().tcp_connected.insert(sock, Ok(()));
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        (s, sock, out)
    }

    fn established_with(cfg: Config) -> (Stack<ScriptedHost>, u32, crate::host::SocketId) {
        let (mut s, sock, out) = syn_acked(cfg);
        let syn_ack = segments(&out)[0];
        assert_eq!(syn_ack.flags, flags::SYN);
        assert_eq!(syn_ack.ack_number, Some(SeqNumber(GUEST_ISN + 1)));
        assert_eq!(syn_ack.max_seg_size, Some(1460));
        assert_eq!(syn_ack.window_scale, Some(3));
        let iss = syn_ack.seq_number.0;
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b""),
        );
        assert!(drain(&mut s).is_empty(), "a pure ACK is not answered");
        (s, iss, sock)
    }

    #[test]
    fn a_link_mtu_below_104_bytes_still_takes_connections() {
        // Issue 11: the MSS clamp once had a floor above the ceiling here and panicked.
        let cfg = Config {
            mtu: 68,
            ipv6: None,
            ..Config::default()
        };
        let (_, _, out) = syn_acked(cfg);
        let syn_ack = segments(&out)[0];
        assert_eq!(
            syn_ack.max_seg_size,
            Some(28),
            "68 bytes less 40 of headers"
        );
    }

    #[test]
    fn tcp_options_are_negotiated_as_far_as_allowed() {
        use crate::config::TcpOptions;
        let no_ts = TcpOptions {
            timestamps: false,
            ..TcpOptions::ALL
        };
        for allowed in [TcpOptions::ALL, no_ts, TcpOptions::NONE] {
            let mut s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
            // Set at run time: connections opened from now on follow it.
            s.set_tcp_options(allowed);
            let guest = |flags: u8, seq: u32, ack: Option<u32>, ecr: u32, payload: &[u8]| {
                let r = TcpRepr {
                    src_port: 40000,
                    dst_port: 80,
                    seq_number: SeqNumber(seq),
                    ack_number: ack.map(SeqNumber),
                    flags,
                    window_len: 502,
                    urgent_at: 0,
                    max_seg_size: (flags & flags::SYN != 0).then_some(1460),
                    window_scale: (flags & flags::SYN != 0).then_some(7),
                    sack_permitted: flags & flags::SYN != 0,
                    sack_ranges: [None; 3],
                    timestamp: Some((100, ecr)),
                    payload,
                };
                let mut t = vec![0u8; r.buffer_len()];
                r.emit_v4(&mut t, GUEST_IP, GW);
                ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t)
            };
            s.process_frame(Instant::ZERO, &guest(flags::SYN, GUEST_ISN, None, 0, b""));
            let sock = s.host().find(&ScriptedSocket::Tcp(remote())).unwrap();
            s.host_mut().tcp_connected.insert(sock, Ok(()));
            s.host_ready(Instant::ZERO, sock);
            let out = drain(&mut s);
            let syn_ack = segments(&out)[0];
            assert_eq!(syn_ack.max_seg_size, Some(1460), "{allowed}");
            assert_eq!(syn_ack.window_scale.is_some(), allowed.window_scale);
            assert_eq!(syn_ack.sack_permitted, allowed.sack);
            assert_eq!(syn_ack.timestamp.is_some(), allowed.timestamps);
            let iss = syn_ack.seq_number.0;
            let ecr = syn_ack.timestamp.map_or(0, |t| t.0);
            s.process_frame(
                Instant::ZERO,
                &guest(0, GUEST_ISN + 1, Some(iss + 1), ecr, b""),
            );
            s.host_mut()
                .tcp_incoming
                .entry(sock)
                .or_default()
                .push_back(Some(vec![7u8; 3000]));
            s.host_ready(Instant::ZERO, sock);
            let out = drain(&mut s);
            let segs = segments(&out);
            assert!(!segs.is_empty(), "{allowed}");
            for seg in &segs {
                // Timestamps in every segment once negotiated, in none otherwise (RFC 7323 §3.2).
                assert_eq!(seg.timestamp.is_some(), allowed.timestamps, "{allowed}");
                let payload = if allowed.timestamps { 1448 } else { 1460 };
                assert!(
                    seg.payload.len() <= payload,
                    "{allowed}: {}",
                    seg.payload.len()
                );
            }
            // The guest's window field, 502, is 64 256 bytes scaled and 502 bytes unscaled.
            let window = if allowed.window_scale { 3000 } else { 502 };
            let sent: usize = segs.iter().map(|s| s.payload.len()).sum();
            assert_eq!(sent, window, "{allowed}");
        }
    }

    #[test]
    fn data_flows_both_ways_and_closes_cleanly() {
        let (mut s, iss, sock) = established();
        // Guest to host.
        s.process_frame(
            Instant::ZERO,
            &seg(flags::PSH, GUEST_ISN + 1, Some(iss + 1), 502, b"GET /"),
        );
        s.flush(Instant::ZERO);
        assert_eq!(s.host().tcp_written[&sock], b"GET /");
        let out = drain(&mut s);
        let ack = segments(&out)[0];
        assert_eq!(ack.ack_number, Some(SeqNumber(GUEST_ISN + 6)));
        // Host to guest, then the host closes.
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .extend([Some(b"HTTP/1.0 200".to_vec()), None]);
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        let segs = segments(&out);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].payload, b"HTTP/1.0 200");
        assert_eq!(segs[0].seq_number, SeqNumber(iss + 1));
        assert_eq!(segs[1].flags, flags::FIN);
        assert_eq!(segs[1].seq_number, SeqNumber(iss + 13));
        // The guest acknowledges everything and closes too.
        s.process_frame(
            Instant::ZERO,
            &seg(flags::FIN, GUEST_ISN + 6, Some(iss + 14), 502, b""),
        );
        let out = drain(&mut s);
        assert_eq!(segments(&out)[0].ack_number, Some(SeqNumber(GUEST_ISN + 7)));
        assert_eq!(s.host().tcp_shutdowns, vec![sock]);
        // TIME-WAIT ends, the connection is gone and its socket closed.
        s.poll(Instant::from_secs(10));
        assert_eq!(s.stats().tcp_connections, 0);
        assert!(s.host().closed.contains(&sock));
    }

    #[test]
    fn refused_host_connection_is_a_reset() {
        let mut s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
        s.process_frame(Instant::ZERO, &seg(flags::SYN, GUEST_ISN, None, 64240, b""));
        let sock = s.host().find(&ScriptedSocket::Tcp(remote())).unwrap();
        s.host_mut()
            .tcp_connected
            .insert(sock, Err(std::io::ErrorKind::ConnectionRefused));
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        let rst = segments(&out)[0];
        assert_eq!(rst.flags, flags::RST);
        assert_eq!(rst.ack_number, Some(SeqNumber(GUEST_ISN + 1)));
        assert_eq!(s.stats().tcp_refused, 1);
        assert_eq!(s.stats().tcp_connections, 0);
    }

    #[test]
    fn unreachable_host_is_an_icmp_error_quoting_the_syn() {
        let mut s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
        s.process_frame(Instant::ZERO, &seg(flags::SYN, GUEST_ISN, None, 64240, b""));
        let sock = s.host().find(&ScriptedSocket::Tcp(remote())).unwrap();
        s.host_mut()
            .tcp_connected
            .insert(sock, Err(std::io::ErrorKind::HostUnreachable));
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
        assert_eq!(ip.protocol(), IpProtocol::Icmp);
        assert_eq!(ip.src_addr(), GW, "a router's error comes from the gateway");
        let icmp = &out[0][34..];
        assert_eq!((icmp[0], icmp[1]), (3, 1), "host unreachable");
        // The quoted SYN: ports and sequence number, as the guest matches them.
        let quote = &icmp[8..];
        assert_eq!(&quote[20..22], &40000u16.to_be_bytes());
        assert_eq!(&quote[22..24], &80u16.to_be_bytes());
        assert_eq!(&quote[24..28], &GUEST_ISN.to_be_bytes());
        assert_eq!(s.stats().tcp_connections, 0);
        assert!(segments(&out).is_empty(), "no RST");
    }

    #[test]
    fn segments_for_no_connection_are_reset() {
        let mut s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
        s.process_frame(Instant::ZERO, &seg(0, 5, Some(777), 100, b"stray"));
        let out = drain(&mut s);
        let rst = segments(&out)[0];
        // RFC 9293 §3.10.7.1: an ACK-bearing segment gets <SEQ=SEG.ACK><CTL=RST>.
        assert_eq!(
            (rst.flags, rst.seq_number, rst.ack_number),
            (flags::RST, SeqNumber(777), None)
        );
        // A RST is never answered.
        s.process_frame(Instant::ZERO, &seg(flags::RST, 5, None, 0, b""));
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.stats().drop_tcp_no_connection, 1);
    }

    #[test]
    fn a_full_egress_queue_holds_segments_back_instead_of_losing_them() {
        // Issue 11, defect 5: segments the queue refused used to count as sent (snd_nxt moved
        // on), leaving a hole the retransmission timer had to repair.
        let (mut s, iss, sock) = established();
        let filler = eth_frame(GUEST_MAC, EtherType::Arp, &[0; 28]);
        for _ in 0..TX_QUEUE_CAPACITY - 4 {
            assert!(s.inject(&filler));
        }
        let data = vec![7u8; 20 * 1460];
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(data));
        s.host_ready(Instant::ZERO, sock);
        // Four segments fit; the rest of the initial window waits for room, not for a timer.
        assert!(s.stats().tcp_queue_waits >= 1);
        assert_eq!(s.stats().drop_tx_queue_full, 0);
        let out = drain(&mut s);
        let segs = segments(&out);
        let mut next = iss + 1;
        for seg in &segs {
            assert_eq!(seg.seq_number, SeqNumber(next), "a hole in what was sent");
            next += seg.payload.len() as u32;
        }
        // The whole initial window (10 segments) went out, in order, once room was made.
        assert_eq!(next - (iss + 1), 10 * 1460);
        assert_eq!(s.stats().tcp_retransmitted_segments, 0);
        // The guest acknowledges it all: the rest follows and nothing is ever resent.
        s.process_frame(
            Instant::from_millis(10),
            &seg(0, GUEST_ISN + 1, Some(next), 502, b""),
        );
        let segs_out = drain(&mut s);
        let more = segments(&segs_out);
        assert_eq!(more[0].seq_number, SeqNumber(next));
        let end: usize = more.iter().map(|m| m.payload.len()).sum();
        assert_eq!(next - (iss + 1) + end as u32, 20 * 1460);
        s.process_frame(
            Instant::from_millis(20),
            &seg(0, GUEST_ISN + 1, Some(iss + 1 + 20 * 1460), 502, b""),
        );
        s.poll(Instant::from_secs(5));
        assert_eq!(s.stats().tcp_retransmits, 0);
    }

    #[test]
    fn a_syn_flood_evicts_half_open_connections_never_established_ones() {
        // One established connection first.
        let (mut s, iss, sock) = established();
        // A flood of SYNs from other source ports to a host that never answers: the table fills
        // with connections in Connecting.
        let syn = |sport: u16| {
            let r = TcpRepr {
                src_port: sport,
                dst_port: 81,
                seq_number: SeqNumber(7),
                ack_number: None,
                flags: flags::SYN,
                window_len: 64240,
                urgent_at: 0,
                max_seg_size: Some(1460),
                window_scale: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload: b"",
            };
            let mut t = vec![0u8; r.buffer_len()];
            r.emit_v4(&mut t, GUEST_IP, GW);
            ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t)
        };
        let flood = crate::tcp::MAX_CONNECTIONS as u16 + 200;
        for i in 0..flood {
            s.process_frame(Instant::from_millis(u64::from(i)), &syn(10_000 + i));
            drain(&mut s);
        }
        assert_eq!(
            s.stats().tcp_connections as usize,
            crate::tcp::MAX_CONNECTIONS
        );
        assert_eq!(
            s.stats().tcp_embryonic_evicted,
            201,
            "the oldest half-open ones made room"
        );
        assert_eq!(s.stats().flows_refused, 0);
        // The established connection still carries data both ways.
        s.process_frame(
            Instant::from_secs(2),
            &seg(flags::PSH, GUEST_ISN + 1, Some(iss + 1), 502, b"still"),
        );
        s.flush(Instant::from_secs(2));
        assert_eq!(s.host().tcp_written[&sock], b"still");
    }

    /// `--queues 4`: each shard buffers a quarter of `--tcp-memory`, so that the whole stays the
    /// bound over all connections.
    #[test]
    fn a_shard_buffers_its_share_of_the_tcp_memory() {
        let budget = 4 * crate::config::MIN_TCP_MEMORY;
        let cfg = Config {
            tcp_memory: budget,
            ..Config::default()
        };
        let mut shards = Stack::sharded(cfg, (0..4).map(|_| ScriptedHost::new())).unwrap();
        let s = &mut shards[0];
        for dport in 81..83u16 {
            s.process_frame(
                Instant::ZERO,
                &seg_to(dport, flags::SYN, GUEST_ISN, None, 64240, b""),
            );
            let addr: SocketAddr = format!("127.0.0.1:{dport}").parse().unwrap();
            let sock = s.host().find(&ScriptedSocket::Tcp(addr)).unwrap();
            s.host_mut().tcp_connected.insert(sock, Ok(()));
            s.host_ready(Instant::ZERO, sock);
            let iss = segments(&drain(s))[0].seq_number.0;
            s.process_frame(
                Instant::ZERO,
                &seg_to(dport, 0, GUEST_ISN + 1, Some(iss + 1), 502, b""),
            );
            s.host_mut()
                .tcp_incoming
                .entry(sock)
                .or_default()
                .push_back(Some(vec![1u8; 1 << 20]));
            s.host_ready(Instant::ZERO, sock);
            drain(s);
        }
        let buffered = s.stats().tcp_buffered_bytes as usize;
        assert!(buffered <= budget / 4, "{buffered}");
        assert!(buffered > budget / 8, "{buffered}");
        assert!(s.stats().tcp_memory_waits > 0);
    }

    #[test]
    fn the_tcp_memory_budget_bounds_what_is_buffered() {
        let budget = crate::config::MIN_TCP_MEMORY;
        let mut s = Stack::with_host(
            Config {
                tcp_memory: budget,
                ..Config::default()
            },
            ScriptedHost::new(),
        )
        .unwrap();
        // Four connections whose hosts have 1 MiB each for a guest that acknowledges nothing.
        let mut conns = Vec::new();
        for dport in 81..85u16 {
            s.process_frame(
                Instant::ZERO,
                &seg_to(dport, flags::SYN, GUEST_ISN, None, 64240, b""),
            );
            let addr: SocketAddr = format!("127.0.0.1:{dport}").parse().unwrap();
            let sock = s.host().find(&ScriptedSocket::Tcp(addr)).unwrap();
            s.host_mut().tcp_connected.insert(sock, Ok(()));
            s.host_ready(Instant::ZERO, sock);
            let iss = segments(&drain(&mut s))[0].seq_number.0;
            s.process_frame(
                Instant::ZERO,
                &seg_to(dport, 0, GUEST_ISN + 1, Some(iss + 1), 502, b""),
            );
            s.host_mut()
                .tcp_incoming
                .entry(sock)
                .or_default()
                .push_back(Some(vec![1u8; 1 << 20]));
            s.host_ready(Instant::ZERO, sock);
            let out = drain(&mut s);
            let sent: usize = segments(&out).iter().map(|r| r.payload.len()).sum();
            conns.push((dport, sock, iss, sent as u32));
        }
        let unread = |s: &Stack<ScriptedHost>, sock| -> usize {
            s.host().tcp_incoming[&sock]
                .iter()
                .flatten()
                .map(Vec::len)
                .sum()
        };
        assert!(s.stats().tcp_buffered_bytes as usize <= budget);
        assert!(s.stats().tcp_memory_waits > 0);
        // The last connection read nothing and no longer asks to read: its host keeps the data.
        let (dport, sock, _, _) = conns[3];
        assert_eq!(unread(&s, sock), 1 << 20, "port {dport}");
        assert!(!s.host().interest[&sock].0, "it no longer asks to read");
        // The guest acknowledges the first connection's data: memory frees, and the waiting
        // connections read again.
        let (dport, _, iss, mut sent) = conns[0];
        for round in 0..10u64 {
            s.process_frame(
                Instant::from_millis(10 + round),
                &seg_to(dport, 0, GUEST_ISN + 1, Some(iss + 1 + sent), 502, b""),
            );
            let out = drain(&mut s);
            sent += segments(&out)
                .iter()
                .map(|r| r.payload.len() as u32)
                .sum::<u32>();
            if s.host().interest[&sock].0 {
                break;
            }
        }
        assert!(
            s.host().interest[&sock].0,
            "the waiting connection reads again"
        );
        s.host_ready(Instant::from_millis(10), sock);
        drain(&mut s);
        assert!(unread(&s, sock) < 1 << 20);
        assert!(s.stats().tcp_buffered_bytes as usize <= budget);
    }

    #[test]
    fn unacknowledged_data_is_retransmitted_with_backoff() {
        let (mut s, iss, sock) = established();
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(b"data".to_vec()));
        s.host_ready(Instant::ZERO, sock);
        assert_eq!(segments(&drain(&mut s))[0].payload, b"data");
        // One RTO (1 s) later the same bytes go again; the next wait is twice as long.
        s.poll(Instant::from_millis(999));
        assert!(drain(&mut s).is_empty());
        s.poll(Instant::from_secs(1));
        let out = drain(&mut s);
        let again = segments(&out)[0];
        assert_eq!(
            (again.seq_number, again.payload),
            (SeqNumber(iss + 1), &b"data"[..])
        );
        assert_eq!(s.poll_at().map(|t| t.total_micros()), Some(3_000_000));
        assert_eq!(s.stats().tcp_retransmits, 1);
        // Acknowledged: no more retransmissions.
        s.process_frame(
            Instant::from_secs(2),
            &seg(0, GUEST_ISN + 1, Some(iss + 5), 502, b""),
        );
        s.poll(Instant::from_secs(10));
        assert!(segments(&drain(&mut s)).is_empty());
    }

    #[test]
    fn three_duplicate_acks_resend_the_missing_segment() {
        let (mut s, iss, sock) = established();
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(vec![3u8; 4 * 1460]));
        s.host_ready(Instant::ZERO, sock);
        assert_eq!(segments(&drain(&mut s)).len(), 4);
        // The first segment was lost: the guest acknowledges nothing new, three times.
        for i in 0..3 {
            s.process_frame(
                Instant::from_millis(1),
                &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b""),
            );
            let out = drain(&mut s);
            let resent = segments(&out);
            if i < 2 {
                assert!(resent.is_empty());
            } else {
                assert_eq!(resent.len(), 1);
                assert_eq!(resent[0].seq_number, SeqNumber(iss + 1));
                assert_eq!(resent[0].payload.len(), 1460);
            }
        }
        assert_eq!(s.stats().tcp_fast_retransmits, 1);
    }

    #[test]
    fn measured_round_trips_set_the_rto() {
        let (mut s, iss, sock) = established();
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(b"x".to_vec()));
        s.host_ready(Instant::ZERO, sock);
        drain(&mut s);
        // Acknowledged after 10 ms: SRTT 10 ms, RTTVAR 5 ms, RTO = 30 ms, raised to 200 ms.
        s.process_frame(
            Instant::from_millis(10),
            &seg(0, GUEST_ISN + 1, Some(iss + 2), 502, b""),
        );
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(b"y".to_vec()));
        s.host_ready(Instant::from_millis(20), sock);
        drain(&mut s);
        assert_eq!(s.poll_at(), Some(Instant::from_millis(220)));
    }

    #[test]
    fn the_guest_window_limits_what_is_sent() {
        let (mut s, iss, sock) = established();
        // The guest's window, 60 << 7 = 7680 bytes, is below the initial congestion window.
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 60, b""),
        );
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(vec![7u8; 20_000]));
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        let sent: usize = segments(&out).iter().map(|r| r.payload.len()).sum();
        // Whole segments only: the 380 bytes left of the window would be a silly sliver while
        // more waits and data is in flight (RFC 9293 §3.8.6.2.1).
        assert_eq!(sent, (60 << 7) / 1460 * 1460);
        assert!(segments(&out).iter().all(|r| r.payload.len() == 1460));
        // A window update opens room for the rest.
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1 + sent as u32), 502, b""),
        );
        let out = drain(&mut s);
        let more: usize = segments(&out).iter().map(|r| r.payload.len()).sum();
        assert_eq!(more, 20_000 - sent);
    }

    #[test]
    fn a_closed_guest_window_is_probed() {
        let (mut s, iss, sock) = established();
        // The guest closes its window.
        s.process_frame(Instant::ZERO, &seg(0, GUEST_ISN + 1, Some(iss + 1), 0, b""));
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(b"waiting".to_vec()));
        s.host_ready(Instant::ZERO, sock);
        assert!(
            segments(&drain(&mut s))
                .iter()
                .all(|r| r.payload.is_empty()),
            "nothing fits a zero window"
        );
        // Its window update is lost; the persist timer probes with one byte.
        s.poll(Instant::from_secs(1));
        let out = drain(&mut s);
        let probe = segments(&out)[0];
        assert_eq!(
            (probe.seq_number, probe.payload),
            (SeqNumber(iss + 1), &b"w"[..])
        );
        assert_eq!(s.stats().tcp_window_probes, 1);
        // The answer opens the window: the rest follows.
        s.process_frame(
            Instant::from_secs(1),
            &seg(0, GUEST_ISN + 1, Some(iss + 2), 502, b""),
        );
        let out = drain(&mut s);
        assert_eq!(segments(&out)[0].payload, b"aiting");
    }

    #[test]
    fn a_slow_host_reader_shrinks_the_guest_window() {
        let (mut s, iss, sock) = established();
        s.host_mut().tcp_send_limit = Some(0); // the host socket buffer is full
        let chunk = vec![1u8; 1000];
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, &chunk),
        );
        let out = drain(&mut s);
        let ack = segments(&out)[0];
        assert_eq!(ack.ack_number, Some(SeqNumber(GUEST_ISN + 1001)));
        let full = crate::tcp::TO_HOST_CAP >> 3;
        assert_eq!(
            usize::from(ack.window_len),
            (crate::tcp::TO_HOST_CAP - 1000) >> 3
        );
        assert!(usize::from(ack.window_len) < full);
        // The host drains: the data goes out when it is writable again.
        s.host_mut().tcp_send_limit = None;
        s.host_ready(Instant::ZERO, sock);
        assert_eq!(s.host().tcp_written[&sock].len(), 1000);
    }

    #[test]
    fn urgent_bytes_cross_as_urgent_both_ways() {
        let (mut s, iss, sock) = established();
        // Guest: "OOB" with the pointer past "B" (Linux's send("B", MSG_OOB) after "OO").
        let mut f = seg(flags::URG, GUEST_ISN + 1, Some(iss + 1), 502, b"OOB");
        // Set the urgent pointer (3) and refresh the checksum through a re-emit.
        let r = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            seq_number: SeqNumber(GUEST_ISN + 1),
            ack_number: Some(SeqNumber(iss + 1)),
            flags: flags::URG,
            window_len: 502,
            urgent_at: 3,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: b"OOB",
        };
        let mut t = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut t, GUEST_IP, GW);
        f.truncate(34);
        f.extend_from_slice(&t);
        s.process_frame(Instant::ZERO, &f);
        s.flush(Instant::ZERO);
        assert_eq!(s.host().tcp_written[&sock], b"OO");
        assert_eq!(s.host().tcp_urgent_sent, vec![(sock, 2, b'B')]);
        drain(&mut s);
        // Host: the next byte read is at the mark.
        s.host_mut().tcp_mark_next.insert(sock, true);
        s.host_mut()
            .tcp_incoming
            .entry(sock)
            .or_default()
            .push_back(Some(b"!".to_vec()));
        s.host_ready(Instant::ZERO, sock);
        let out = drain(&mut s);
        let seg = segments(&out)[0];
        assert_eq!(seg.payload, b"!");
        assert_ne!(seg.flags & flags::URG, 0);
        assert_eq!(seg.urgent_at, 1);
    }

    #[test]
    fn acks_are_delayed_after_the_first_segments() {
        let (mut s, iss, _) = established();
        // Quick ACKs first: each of the first 16 data segments is acknowledged at once.
        let mut seq = GUEST_ISN + 1;
        for _ in 0..16 {
            s.process_frame(Instant::ZERO, &seg(0, seq, Some(iss + 1), 502, &[1; 100]));
            seq += 100;
            assert_eq!(segments(&drain(&mut s)).len(), 1);
        }
        // Then a small segment waits for the 40 ms timer (or for data to carry the ACK).
        s.process_frame(Instant::ZERO, &seg(0, seq, Some(iss + 1), 502, &[1; 100]));
        seq += 100;
        assert!(drain(&mut s).is_empty());
        assert_eq!(s.poll_at(), Some(Instant::from_millis(40)));
        s.poll(Instant::from_millis(40));
        let out = drain(&mut s);
        assert_eq!(segments(&out)[0].ack_number, Some(SeqNumber(seq)));
        assert_eq!(s.stats().tcp_delayed_acks, 1);
        // Two full-sized segments are acknowledged at once (RFC 5681 §4.2).
        for _ in 0..2 {
            s.process_frame(
                Instant::from_millis(50),
                &seg(0, seq, Some(iss + 1), 502, &[2; 1460]),
            );
            seq += 1460;
        }
        let out = drain(&mut s);
        assert_eq!(segments(&out).len(), 1);
        assert_eq!(segments(&out)[0].ack_number, Some(SeqNumber(seq)));
    }

    #[test]
    fn segments_outside_the_window_are_answered_with_an_ack() {
        let (mut s, iss, sock) = established();
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b"abc"),
        );
        drain(&mut s);
        // The guest's keepalive probe: one byte before the window, no data.
        s.process_frame(
            Instant::from_secs(1),
            &seg(0, GUEST_ISN + 3, Some(iss + 1), 502, b""),
        );
        let out = drain(&mut s);
        let ack = segments(&out)[0];
        assert_eq!(ack.ack_number, Some(SeqNumber(GUEST_ISN + 4)));
        // A full duplicate, too; the host does not see it twice.
        s.process_frame(
            Instant::from_secs(1),
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b"abc"),
        );
        assert_eq!(segments(&drain(&mut s)).len(), 1);
        assert_eq!(s.host().tcp_written[&sock], b"abc");
        assert_eq!(s.stats().tcp_duplicate_segments, 1);
    }

    #[test]
    fn data_beyond_a_gap_is_held_until_the_gap_fills() {
        let (mut s, iss, sock) = established();
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 4, Some(iss + 1), 502, b"def"),
        );
        let out = drain(&mut s);
        // A duplicate ACK at once, still asking for the gap.
        assert_eq!(segments(&out)[0].ack_number, Some(SeqNumber(GUEST_ISN + 1)));
        assert!(!s.host().tcp_written.contains_key(&sock));
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b"abc"),
        );
        s.flush(Instant::ZERO);
        assert_eq!(s.host().tcp_written[&sock], b"abcdef");
        let out = drain(&mut s);
        assert_eq!(segments(&out)[0].ack_number, Some(SeqNumber(GUEST_ISN + 7)));
        assert_eq!(s.stats().tcp_out_of_order_queued, 1);
    }

    #[test]
    fn a_drained_buffer_sends_a_window_update() {
        let (mut s, iss, sock) = established();
        s.host_mut().tcp_send_limit = Some(0);
        // Fill our buffer completely: the window closes.
        let chunk = vec![5u8; 1460];
        let mut seq = GUEST_ISN + 1;
        let mut last = None;
        while seq - (GUEST_ISN + 1) < crate::tcp::TO_HOST_CAP as u32 {
            let n = (crate::tcp::TO_HOST_CAP as u32 - (seq - (GUEST_ISN + 1))).min(1460);
            s.process_frame(
                Instant::ZERO,
                &seg(0, seq, Some(iss + 1), 502, &chunk[..n as usize]),
            );
            seq += n;
            if let Some(a) = segments(&drain(&mut s)).last() {
                last = Some((a.ack_number, a.window_len));
            }
        }
        s.poll(Instant::from_millis(40));
        if let Some(a) = segments(&drain(&mut s)).last() {
            last = Some((a.ack_number, a.window_len));
        }
        assert_eq!(last, Some((Some(SeqNumber(seq)), 0)));
        // The host reads: the guest hears of the open window without probing for it.
        s.host_mut().tcp_send_limit = None;
        s.host_ready(Instant::from_millis(50), sock);
        let out = drain(&mut s);
        let update = segments(&out)[0];
        assert_eq!(update.ack_number, Some(SeqNumber(seq)));
        assert_eq!(usize::from(update.window_len), crate::tcp::TO_HOST_CAP >> 3);
        assert_eq!(s.stats().tcp_window_updates, 1);
    }

    #[test]
    fn an_idle_guest_is_probed_and_reset_when_it_stays_silent() {
        // Short enough that the guest's neighbour entry is still fresh (no ARP in between).
        let k = crate::config::Keepalive {
            idle: Duration::from_secs(20),
            interval: Duration::from_secs(5),
            probes: 3,
        };
        let (mut s, iss, sock) = established_with(Config {
            tcp_keepalive: Some(k),
            // Keepalive alone on the link: no multicast queries among the segments.
            mcast_querier: false,
            ..Config::default()
        });
        let idle = k.idle.total_micros();
        let interval = k.interval.total_micros();
        s.poll(Instant::from_micros(idle - 1));
        assert!(drain(&mut s).is_empty());
        s.poll(Instant::from_micros(idle));
        let out = drain(&mut s);
        let probe = segments(&out)[0];
        // One byte before the window, no data: the guest must answer with an ACK.
        assert_eq!(probe.seq_number, SeqNumber(iss));
        assert!(probe.payload.is_empty());
        // It answers: the connection is idle again, from now.
        let t = Instant::from_micros(idle + 1000);
        s.process_frame(t, &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b""));
        s.poll(Instant::from_micros(t.total_micros() + idle - 1));
        assert!(drain(&mut s).is_empty());
        // Then silence: 3 probes `interval` apart, and a reset of both sides.
        let mut now = t + k.idle;
        for _ in 0..k.probes {
            s.poll(now);
            assert_eq!(segments(&drain(&mut s)).len(), 1);
            now = Instant::from_micros(now.total_micros() + interval);
        }
        s.poll(now);
        let out = drain(&mut s);
        assert_eq!(segments(&out)[0].flags, flags::RST);
        assert_eq!(s.host().tcp_aborted, vec![sock]);
        assert_eq!(s.stats().tcp_keepalive_probes, 1 + u64::from(k.probes));
        assert_eq!(s.stats().tcp_keepalive_timeouts, 1);
        assert_eq!(s.stats().tcp_connections, 0);
    }

    #[test]
    fn an_unacceptable_ack_in_syn_received_is_reset() {
        let mut s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
        s.process_frame(Instant::ZERO, &seg(flags::SYN, GUEST_ISN, None, 64240, b""));
        let sock = s.host().find(&ScriptedSocket::Tcp(remote())).unwrap();
        s.host_mut().tcp_connected.insert(sock, Ok(()));
        s.host_ready(Instant::ZERO, sock);
        let iss = segments(&drain(&mut s))[0].seq_number.0;
        // RFC 9293 §3.10.7.4: <SEQ=SEG.ACK><CTL=RST>, and the connection stays.
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 77), 502, b""),
        );
        let out = drain(&mut s);
        let rst = segments(&out)[0];
        assert_eq!(
            (rst.flags, rst.seq_number, rst.ack_number),
            (flags::RST, SeqNumber(iss + 77), None)
        );
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b""),
        );
        assert_eq!(s.stats().tcp_connections, 1);
        assert!(segments(&drain(&mut s)).is_empty());
    }

    #[test]
    fn a_vanished_host_peer_resets_the_guest_when_it_sends() {
        let (mut s, iss, sock) = established();
        s.host_mut().tcp_send_error = Some(std::io::ErrorKind::BrokenPipe);
        s.process_frame(
            Instant::ZERO,
            &seg(0, GUEST_ISN + 1, Some(iss + 1), 502, b"anyone?"),
        );
        let out = drain(&mut s);
        let segs = segments(&out);
        assert_eq!(segs.last().unwrap().flags, flags::RST);
        assert_eq!(s.host().tcp_aborted, vec![sock]);
        assert_eq!(s.stats().tcp_host_resets, 1);
        assert_eq!(s.stats().tcp_connections, 0);
    }

    #[test]
    fn a_guest_reset_aborts_the_host_side() {
        let (mut s, iss, sock) = established();
        s.process_frame(
            Instant::ZERO,
            &seg(flags::RST, GUEST_ISN + 1, Some(iss + 1), 0, b""),
        );
        assert_eq!(s.host().tcp_aborted, vec![sock]);
        assert_eq!(s.stats().tcp_connections, 0);
        assert!(drain(&mut s).is_empty());
    }

    /// Offloads towards the guest: large segments and partial checksums, only when accepted.
    mod offloads {
        use super::*;
        use crate::offload::{FrameMeta, Gso, GsoKind, GuestOffloads, PartialChecksum};

        const ALL: GuestOffloads = GuestOffloads {
            partial_checksum: true,
            tso4: true,
            tso6: true,
        };

        /// Queues `n` bytes (a counting pattern) on the host side of the connection.
        fn host_sends(s: &mut Stack<ScriptedHost>, sock: crate::host::SocketId, n: usize) {
            let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let q = s.host_mut().tcp_incoming.entry(sock).or_default();
            for chunk in data.chunks(16 * 1024) {
                q.push_back(Some(chunk.to_vec()));
            }
            s.host_ready(Instant::ZERO, sock);
        }

        /// Completes what the metadata left partial, as the guest's NIC driver would accept it.
        fn complete(frames: Vec<(Vec<u8>, FrameMeta)>) -> Vec<(Vec<u8>, FrameMeta)> {
            frames
                .into_iter()
                .map(|(mut f, m)| {
                    if let Some(c) = m.checksum {
                        assert!(c.complete(&mut f));
                    }
                    (f, m)
                })
                .collect()
        }

        #[test]
        fn accepted_tso_sends_large_segments_with_partial_checksums() {
            let (mut s, iss, sock) = established();
            s.set_guest_offloads(ALL);
            host_sends(&mut s, sock, 40_000);
            let out = complete(drain_meta(&mut s));
            let frames: Vec<Vec<u8>> = out.iter().map(|(f, _)| f.clone()).collect();
            let segs = segments(&frames);
            // The initial window (ten segments of 1460) goes as one request of ten segments.
            assert_eq!(segs.len(), 1, "{segs:?}");
            assert_eq!(segs[0].payload.len(), 14_600);
            assert_eq!(segs[0].seq_number, SeqNumber(iss + 1));
            assert!(segs[0]
                .payload
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8));
            assert_eq!(
                out[0].1,
                FrameMeta {
                    checksum: Some(PartialChecksum {
                        start: 34,
                        offset: 16
                    }),
                    gso: Some(Gso {
                        kind: GsoKind::Tcpv4,
                        segment_size: 1460,
                        header_len: 54,
                    }),
                }
            );
            assert_eq!(s.stats().tcp_tx_large_segments, 1);
            // The guest acknowledges it all: the congestion window grows by two segments (RFC
            // 3465 with L=2), and the next request carries all of it.
            s.process_frame(
                Instant::ZERO,
                &seg(0, GUEST_ISN + 1, Some(iss + 1 + 14_600), 502, b""),
            );
            let out = drain_meta(&mut s);
            let sizes: Vec<usize> = out.iter().map(|(f, _)| f.len() - 54).collect();
            assert_eq!(sizes, vec![14_600 + 2 * 1460]);
            assert!(out.iter().all(|(_, m)| m.checksum.is_some()));
        }

        #[test]
        fn segment_data_is_lent_from_the_send_buffer_and_dropped_once_acknowledged() {
            let (mut s, iss, sock) = established();
            host_sends(&mut s, sock, 3000);
            // Three segments queued; their data is read from the send buffer at delivery.
            let mut lent = Vec::new();
            let sent = s.dispatch(Instant::ZERO, |f, _| {
                lent.push((f.head.len(), f.payload[0].len() + f.payload[1].len()));
                true
            });
            assert!(matches!(sent, Dispatch::Sent(_)));
            assert_eq!(lent, vec![(54, 1460)]);
            // The guest acknowledges all of it before the device takes the other two (a
            // retransmission overtaken by an ACK looks the same): they are dropped, never sent
            // with other bytes.
            s.process_frame(
                Instant::ZERO,
                &seg(0, GUEST_ISN + 1, Some(iss + 1 + 3000), 502, b""),
            );
            let rest = drain(&mut s);
            assert!(segments(&rest).iter().all(|r| r.payload.is_empty()));
            assert_eq!(s.stats().drop_tcp_stale_segment, 2);
        }

        #[test]
        fn a_new_driver_without_offloads_gets_queued_frames_it_can_take() {
            let (mut s, _, sock) = established();
            s.set_guest_offloads(ALL);
            host_sends(&mut s, sock, 40_000);
            // The initial window waits as one large segment.
            assert!(s.has_pending());
            // The guest reconnects with a driver that takes partial checksums but no TSO.
            s.set_guest_offloads(GuestOffloads {
                partial_checksum: true,
                ..GuestOffloads::default()
            });
            assert!(drain_meta(&mut s).iter().all(|(_, m)| m.gso.is_none()));
            assert_eq!(s.stats().drop_tx_offload_withdrawn, 1);

            // Partial checksums withdrawn: completed in place.
            let (mut s, _, sock) = established();
            s.set_guest_offloads(GuestOffloads {
                partial_checksum: true,
                ..GuestOffloads::default()
            });
            host_sends(&mut s, sock, 4_000);
            s.set_guest_offloads(GuestOffloads::default());
            let out = drain_meta(&mut s);
            assert!(!out.is_empty() && out.iter().all(|(_, m)| *m == FrameMeta::NONE));
            let frames: Vec<Vec<u8>> = out.into_iter().map(|(f, _)| f).collect();
            assert_eq!(
                segments(&frames).len(),
                frames.len(),
                "every checksum verifies"
            );
        }

        #[test]
        fn without_tso_segments_stay_within_the_mss_and_checksums_complete() {
            let (mut s, _, sock) = established();
            s.set_guest_offloads(GuestOffloads {
                partial_checksum: true,
                ..GuestOffloads::default()
            });
            host_sends(&mut s, sock, 40_000);
            let out = drain_meta(&mut s);
            assert_eq!(out.len(), 10);
            assert!(out
                .iter()
                .all(|(f, m)| f.len() <= 1514 && m.gso.is_none() && m.checksum.is_some()));
            let out = complete(out);
            let frames: Vec<Vec<u8>> = out.into_iter().map(|(f, _)| f).collect();
            assert_eq!(segments(&frames).len(), 10, "every checksum verifies");

            // And with no offloads at all, frames are complete as they are.
            let (mut s, _, sock) = established();
            host_sends(&mut s, sock, 40_000);
            let out = drain_meta(&mut s);
            assert!(out.iter().all(|(_, m)| *m == FrameMeta::NONE));
            let frames: Vec<Vec<u8>> = out.into_iter().map(|(f, _)| f).collect();
            assert_eq!(segments(&frames).len(), 10);
            assert_eq!(s.stats().tcp_tx_large_segments, 0);
        }

        /// A guest segment as a TSO driver hands it over: many MSS behind one header, the
        /// checksum field holding only the pseudo-header sum.
        fn large_partial_segment(seq: u32, ack: u32, payload: &[u8]) -> (Vec<u8>, FrameMeta) {
            let mut f = seg(flags::PSH, seq, Some(ack), 502, payload);
            let pseudo =
                crate::wire::checksum::pseudo_header_v4(GUEST_IP, GW, 6, (f.len() - 34) as u32);
            let folded = !crate::wire::checksum::finish(pseudo);
            f[34 + 16..34 + 18].copy_from_slice(&folded.to_be_bytes());
            let meta = FrameMeta {
                checksum: Some(PartialChecksum {
                    start: 34,
                    offset: 16,
                }),
                gso: Some(Gso {
                    kind: GsoKind::Tcpv4,
                    segment_size: 1460,
                    header_len: 54,
                }),
            };
            (f, meta)
        }

        #[test]
        fn a_large_guest_segment_with_a_partial_checksum_is_taken_whole() {
            let (mut s, iss, sock) = established();
            let data: Vec<u8> = (0..20_000).map(|i| (i % 13) as u8).collect();
            let (frame, meta) = large_partial_segment(GUEST_ISN + 1, iss + 1, &data);
            // Without the metadata the same bytes are a bad checksum.
            s.process_frame(Instant::ZERO, &frame);
            assert_eq!(s.stats().drop_tcp_checksum, 1);
            assert!(!s.host().tcp_written.contains_key(&sock));
            s.process_frame_meta(Instant::ZERO, &frame, meta);
            assert_eq!(s.host().tcp_written[&sock], data);
            assert_eq!(s.stats().tcp_rx_large_segments, 1);
            assert_eq!(s.stats().drop_tcp_checksum, 1);
            // Many segments' worth arrived: acknowledged at once, not after the delayed-ACK timer.
            let out = drain(&mut s);
            let acks = segments(&out);
            assert_eq!(
                acks.last().unwrap().ack_number,
                Some(SeqNumber(GUEST_ISN + 1 + 20_000))
            );
        }
    }

    /// Guest data in frames read into the ingress buffer: lent to the connection until the
    /// batch's write, copied only where the host does not take it (see `tcp/tohost.rs`).
    mod ingress_lending {
        use super::*;
        use crate::offload::FrameMeta;
        use crate::tcp::INGRESS_CAPACITY;

        /// Reads `frame` into the ingress buffer (after a 12-byte virtio-net header, as the
        /// device does) asking `room` bytes, and processes it.
        fn ingress(s: &mut Stack<ScriptedHost>, frame: &[u8], room: usize) {
            let buf = s.ingress_buffer(room);
            buf[12..12 + frame.len()].copy_from_slice(frame);
            assert_eq!(s.ingress_frame(12..12 + frame.len()), frame);
            s.process_ingress(Instant::ZERO, 12..12 + frame.len(), FrameMeta::NONE);
        }

        fn data(seq: u32, iss: u32, payload: &[u8]) -> Vec<u8> {
            seg(flags::PSH, GUEST_ISN + 1 + seq, Some(iss + 1), 502, payload)
        }

        #[test]
        fn a_batch_reaches_the_host_in_one_write_without_a_copy() {
            let (mut s, iss, sock) = established();
            let writes = s.host().tcp_writes;
            for (i, p) in [b"abc", b"def", b"ghi"].iter().enumerate() {
                ingress(&mut s, &data(3 * i as u32, iss, *p), 2048);
            }
            // Nothing before the batch ends.
            assert!(!s.host().tcp_written.contains_key(&sock));
            s.flush(Instant::ZERO);
            assert_eq!(s.host().tcp_written[&sock], b"abcdefghi");
            assert_eq!(s.host().tcp_writes - writes, 1);
            assert_eq!(s.stats().tcp_tx_host_buffered_bytes, 0);
            assert_eq!(s.stats().tcp_tx_host_bytes, 9);
            let acks = segments(&drain(&mut s))
                .iter()
                .filter_map(|r| r.ack_number)
                .collect::<Vec<_>>();
            assert_eq!(acks.last(), Some(&SeqNumber(GUEST_ISN + 10)));
        }

        #[test]
        fn what_the_host_does_not_take_is_copied_before_the_buffer_is_reused() {
            let (mut s, iss, sock) = established();
            s.host_mut().tcp_send_limit = Some(4);
            ingress(&mut s, &data(0, iss, b"abcde"), 2048);
            ingress(&mut s, &data(5, iss, b"fghi"), 2048);
            s.flush(Instant::ZERO);
            assert_eq!(s.host().tcp_written[&sock], b"abcd");
            assert_eq!(s.stats().tcp_tx_host_buffered_bytes, 5);
            // The next batch's frame goes where the first one was; the copied bytes go first,
            // in one write with the new ones once the host takes more.
            ingress(&mut s, &data(9, iss, b"jkl"), 2048);
            s.host_mut().tcp_send_limit = None;
            let writes = s.host().tcp_writes;
            s.flush(Instant::ZERO);
            assert_eq!(s.host().tcp_written[&sock], b"abcdefghijkl");
            assert_eq!(s.host().tcp_writes - writes, 1);
            // Copied ("efghi") then lent: "jkl" is copied as it follows copied bytes.
            assert_eq!(s.stats().tcp_tx_host_buffered_bytes, 8);
        }

        #[test]
        fn a_full_buffer_makes_the_connections_copy_what_they_were_lent() {
            let (mut s, iss, sock) = established();
            ingress(&mut s, &data(0, iss, b"abc"), INGRESS_CAPACITY);
            assert_eq!(s.stats().tcp_tx_host_buffered_bytes, 0);
            // A frame as large as the whole buffer does not fit after the first.
            // "abc" is copied; "def" follows copied bytes, so it is copied too.
            ingress(&mut s, &data(3, iss, b"def"), INGRESS_CAPACITY);
            assert_eq!(s.stats().tcp_tx_host_buffered_bytes, 6);
            s.flush(Instant::ZERO);
            assert_eq!(s.host().tcp_written[&sock], b"abcdef");
        }

        #[test]
        fn frames_from_elsewhere_are_copied_and_follow_in_order() {
            let (mut s, iss, sock) = established();
            ingress(&mut s, &data(0, iss, b"abc"), 2048);
            // A frame handed over as a slice (another shard's, an impaired one).
            s.process_frame(Instant::ZERO, &data(3, iss, b"def"));
            ingress(&mut s, &data(6, iss, b"ghi"), 2048);
            let writes = s.host().tcp_writes;
            s.flush(Instant::ZERO);
            assert_eq!(s.host().tcp_written[&sock], b"abcdefghi");
            assert_eq!(s.host().tcp_writes - writes, 1);
            assert_eq!(s.stats().tcp_tx_host_buffered_bytes, 6);
        }

        #[test]
        fn an_urgent_byte_after_lent_data_keeps_its_place() {
            let (mut s, iss, sock) = established();
            ingress(&mut s, &data(0, iss, b"ab"), 2048);
            let r = TcpRepr {
                src_port: 40000,
                dst_port: 80,
                seq_number: SeqNumber(GUEST_ISN + 3),
                ack_number: Some(SeqNumber(iss + 1)),
                flags: flags::URG,
                window_len: 502,
                urgent_at: 2,
                max_seg_size: None,
                window_scale: None,
                sack_permitted: false,
                sack_ranges: [None; 3],
                timestamp: None,
                payload: b"cU",
            };
            let mut t = vec![0u8; r.buffer_len()];
            r.emit_v4(&mut t, GUEST_IP, GW);
            ingress(&mut s, &ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t), 2048);
            s.flush(Instant::ZERO);
            assert_eq!(s.host().tcp_written[&sock], b"abc");
            assert_eq!(s.host().tcp_urgent_sent, vec![(sock, 3, b'U')]);
        }
    }
}

mod tcp_forwards {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Forward, ForwardProtocol};
    use crate::host::{ScriptedHost, ScriptedSocket};
    use crate::wire::tcp::flags;
    use crate::wire::{SeqNumber, TcpPacket, TcpRepr};

    const GW: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    fn only_segment(frames: &[Vec<u8>]) -> (Ipv4Address, Ipv4Address, TcpRepr<'_>) {
        let tcp: Vec<_> = frames
            .iter()
            .filter(|f| f[23] == 6)
            .map(|f| {
                let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
                let hl = usize::from(ip.header_len());
                let (src, dst) = (ip.src_addr(), ip.dst_addr());
                let body = &f[14 + hl..14 + usize::from(ip.total_len())];
                (
                    src,
                    dst,
                    TcpRepr::parse(&TcpPacket::new_checked(body).unwrap(), src, dst).unwrap(),
                )
            })
            .collect();
        assert_eq!(tcp.len(), 1, "{tcp:?}");
        tcp[0]
    }

    /// A stack forwarding the host's 127.0.0.1:2222 to the guest's port 22, and the listener.
    fn forward_stack() -> (Stack<ScriptedHost>, crate::host::SocketId) {
        let listen: SocketAddr = "127.0.0.1:2222".parse().unwrap();
        let mut s = Stack::with_host(
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
        .unwrap();
        s.open_forwards().unwrap();
        let lsock = s.host().find(&ScriptedSocket::TcpListener(listen)).unwrap();
        (s, lsock)
    }

    /// The guest known (it pinged the DNS address) and `peer` accepted on the forward's listener:
    /// the frames to the guest (our SYN).
    fn accept_with_guest_known(
        s: &mut Stack<ScriptedHost>,
        lsock: crate::host::SocketId,
        peer: &str,
    ) -> Vec<Vec<u8>> {
        s.process_frame(
            Instant::ZERO,
            &echo_request(Ipv4Address::new(10, 0, 2, 3), 1, b""),
        );
        drain(s);
        s.host_mut()
            .tcp_pending_accepts
            .entry(lsock)
            .or_default()
            .push_back(peer.parse().unwrap());
        s.host_ready(Instant::ZERO, lsock);
        drain(s)
    }

    #[test]
    fn a_forward_syn_offers_only_the_allowed_options() {
        let no_ts = crate::config::TcpOptions {
            timestamps: false,
            ..crate::config::TcpOptions::ALL
        };
        let (mut s, lsock) = forward_stack();
        s.set_tcp_options(no_ts);
        assert_eq!(s.tcp_options(), no_ts);
        let out = accept_with_guest_known(&mut s, lsock, "127.0.0.1:50000");
        let (_, _, syn) = only_segment(&out);
        assert_eq!(syn.flags, flags::SYN);
        assert!(syn.sack_permitted && syn.window_scale.is_some() && syn.timestamp.is_none());
    }

    #[test]
    fn forwarded_connection_opens_the_guest_side() {
        let (mut s, lsock) = forward_stack();
        let out = accept_with_guest_known(&mut s, lsock, "127.0.0.1:50000");
        let (src, dst, syn) = only_segment(&out);
        assert_eq!((src, dst), (GW, GUEST_IP));
        assert_eq!(
            (syn.src_port, syn.dst_port, syn.flags),
            (50000, 22, flags::SYN)
        );
        assert_eq!(syn.window_scale, Some(3));
        // The guest accepts.
        let iss = syn.seq_number.0;
        let syn_ack = TcpRepr {
            src_port: 22,
            dst_port: 50000,
            seq_number: SeqNumber(7000),
            ack_number: Some(SeqNumber(iss + 1)),
            flags: flags::SYN,
            window_len: 64240,
            urgent_at: 0,
            max_seg_size: Some(1460),
            window_scale: Some(7),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let mut t = vec![0u8; syn_ack.buffer_len()];
        syn_ack.emit_v4(&mut t, GUEST_IP, GW);
        s.process_frame(
            Instant::ZERO,
            &ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t),
        );
        let out = drain(&mut s);
        let (_, _, ack) = only_segment(&out);
        assert_eq!(ack.ack_number, Some(SeqNumber(7001)));
        assert_eq!(ack.flags, 0);
        assert_eq!(s.stats().tcp_forwarded, 1);
        assert_eq!(s.stats().tcp_connections, 1);
    }

    #[test]
    fn forward_peers_as_the_guest_sees_them() {
        let s = Stack::with_host(Config::default(), ScriptedHost::new()).unwrap();
        let seen = |a: &str| s.peer_as_seen_by_guest(a.parse().unwrap());
        assert_eq!(seen("127.0.0.1:1"), Some(GW));
        assert_eq!(seen("[::1]:1"), Some(GW));
        assert_eq!(
            seen("[::ffff:192.0.2.9]:1"),
            Some(Ipv4Address::new(192, 0, 2, 9))
        );
        assert_eq!(seen("192.0.2.9:1"), Some(Ipv4Address::new(192, 0, 2, 9)));
        assert_eq!(seen("[2001:db8::1]:1"), None);
    }

    #[test]
    fn a_stray_ack_for_our_syn_is_reset() {
        let (mut s, lsock) = forward_stack();
        let out = accept_with_guest_known(&mut s, lsock, "127.0.0.1:50002");
        let (_, _, syn) = only_segment(&out);
        // An old connection's ACK (not acknowledging our SYN): RFC 9293 §3.10.7.3 asks
        // <SEQ=SEG.ACK><CTL=RST>; our SYN stays outstanding.
        let stray = TcpRepr {
            src_port: 22,
            dst_port: 50002,
            seq_number: SeqNumber(9000),
            ack_number: Some(SeqNumber(syn.seq_number.0.wrapping_add(5000))),
            flags: 0,
            window_len: 1000,
            urgent_at: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let mut t = vec![0u8; stray.buffer_len()];
        stray.emit_v4(&mut t, GUEST_IP, GW);
        s.process_frame(
            Instant::ZERO,
            &ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t),
        );
        let out = drain(&mut s);
        let (_, _, rst) = only_segment(&out);
        assert_eq!(rst.flags, flags::RST);
        assert_eq!(
            rst.seq_number,
            SeqNumber(syn.seq_number.0.wrapping_add(5000))
        );
        assert_eq!(s.stats().tcp_connections, 1);
    }

    #[test]
    fn forwarded_connection_without_a_guest_is_reset() {
        let (mut s, lsock) = forward_stack();
        s.host_mut()
            .tcp_pending_accepts
            .entry(lsock)
            .or_default()
            .push_back("127.0.0.1:50001".parse().unwrap());
        s.host_ready(Instant::ZERO, lsock);
        assert_eq!(s.stats().tcp_forward_no_guest, 1);
        assert_eq!(s.host().tcp_aborted.len(), 1);
        assert!(drain(&mut s).is_empty());
    }
}

mod exerciser {
    use super::*;
    use std::collections::BTreeMap;

    fn now() -> Instant {
        Instant::from_millis(0)
    }

    #[test]
    fn injected_frames_leave_as_given_and_change_nothing_else() {
        let mut s = stack();
        let frame = vec![0xabu8; 10];
        assert!(s.inject(&frame));
        assert!(s.inject(&[1, 2, 3]));
        assert_eq!(drain(&mut s), vec![frame, vec![1, 2, 3]]);
        assert_eq!(s.stats().rx_injected_frames, 2);
        assert_eq!(s.stats().eth_tx_frames, 2);
        assert_eq!(s.flow_count(), 0);
        assert!(s.guest_mac().is_none());
    }

    #[test]
    fn a_full_queue_counts_injected_drops() {
        let mut s = stack();
        for _ in 0..TX_QUEUE_CAPACITY {
            assert!(s.inject(&[0; 60]));
        }
        assert!(!s.inject(&[0; 60]));
        assert_eq!(s.stats().drop_inject_queue_full, 1);
    }

    #[test]
    fn probes_use_the_learned_guest_and_fresh_serials() {
        let mut s = stack();
        let none = BTreeMap::new();
        let e = s.send_probe("ipv4-echo", &none).unwrap_err();
        assert!(e.0.contains("not known yet"), "{e}");
        assert!(s.send_probe("no-such-probe", &none).is_err());
        // The guest speaks: its MAC and address are learned.
        s.process_frame(
            now(),
            &echo_request(Config::default().gateway_ipv4, 1, b"x"),
        );
        drain(&mut s);
        let params: BTreeMap<String, String> = [("count".to_string(), "2".to_string())].into();
        assert_eq!(s.send_probe("ipv4-echo", &params), Ok((2, 2)));
        assert_eq!(s.send_probe("ipv4-echo", &none), Ok((1, 1)));
        let frames = drain(&mut s);
        assert_eq!(&frames[0][..6], &GUEST_MAC.0);
        let idents: Vec<u16> = frames
            .iter()
            .map(|f| Ipv4Packet::new_checked(&f[14..]).unwrap().ident())
            .collect();
        assert_eq!(idents.len(), 3);
        assert!(idents[0] != idents[1] && idents[1] != idents[2] && idents[0] != idents[2]);
        let ip = Ipv4Packet::new_checked(&frames[0][14..]).unwrap();
        assert_eq!(ip.dst_addr(), GUEST_IP);
        assert_eq!(s.stats().probes_sent, 2);
        assert_eq!(s.stats().rx_injected_frames, 3);
    }

    #[test]
    fn the_guests_answers_to_probes_are_counted_by_kind() {
        let mut s = stack();
        let gw = Config::default().gateway_ipv4;
        let icmp = |t: u8, code: u8| crate::wire::craft::icmpv4(t, code, [0; 4], &[0x45; 28]);
        for (t, code) in [(0, 0), (11, 1), (3, 3), (12, 0)] {
            s.process_frame(
                now(),
                &ipv4_frame(GUEST_IP, gw, IpProtocol::Icmp, &icmp(t, code)),
            );
        }
        let st = s.stats();
        assert_eq!(
            (
                st.icmp_rx_echo_replies,
                st.icmp_rx_time_exceeded,
                st.icmp_rx_dest_unreachable,
                st.icmp_rx_param_problems
            ),
            (1, 1, 1, 1)
        );
        // IGMPv3 report with two records, an IGMPv2 leave, and a corrupt one.
        let mut v3 = vec![0x22, 0, 0, 0, 0, 0, 0, 2];
        let sum = crate::wire::checksum::compute(&v3);
        v3[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut leave = vec![0x17, 0, 0, 0, 239, 1, 2, 3];
        let sum = crate::wire::checksum::compute(&leave);
        leave[2..4].copy_from_slice(&sum.to_be_bytes());
        let all = Ipv4Address::new(224, 0, 0, 22);
        s.process_frame(now(), &ipv4_frame(GUEST_IP, all, IpProtocol::Igmp, &v3));
        s.process_frame(now(), &ipv4_frame(GUEST_IP, all, IpProtocol::Igmp, &leave));
        s.process_frame(
            now(),
            &ipv4_frame(GUEST_IP, all, IpProtocol::Igmp, &[0x22, 0, 0]),
        );
        let st = s.stats();
        assert_eq!(
            (
                st.igmp_rx_reports,
                st.igmp_rx_group_records,
                st.igmp_rx_leaves,
                st.drop_igmp_invalid
            ),
            (1, 2, 1, 1)
        );
        assert!(drain(&mut s).is_empty(), "nothing is answered");
    }

    #[test]
    fn sources_the_guest_was_not_given_are_dropped_unless_the_check_is_off() {
        let gw = Config::default().gateway_ipv4;
        let other = Ipv4Address::new(10, 0, 2, 16);
        let echo_from = |src: Ipv4Address| {
            let icmp = crate::wire::craft::icmpv4(8, 0, [0, 1, 0, 1], b"x");
            ipv4_frame(src, gw, IpProtocol::Icmp, &icmp)
        };
        let mut s = stack();
        s.process_frame(now(), &echo_from(GUEST_IP));
        s.process_frame(now(), &echo_from(other));
        assert_eq!(drain(&mut s).len(), 1, "only the first source is answered");
        assert_eq!(s.stats().drop_ipv4_spoofed, 1);
        let mut open = Stack::new(Config {
            source_check: false,
            ..Config::default()
        })
        .unwrap();
        open.process_frame(now(), &echo_from(GUEST_IP));
        open.process_frame(now(), &echo_from(other));
        assert_eq!(drain(&mut open).len(), 2);
        assert_eq!(open.stats().drop_ipv4_spoofed, 0);
    }

    #[test]
    fn icmp_errors_are_rate_limited_but_fragmentation_needed_is_not() {
        let gw = Config::default().gateway_ipv4;
        let mut s = Stack::new(Config {
            path_mtus: vec!["10.0.2.2=576".parse().unwrap()],
            ..Config::default()
        })
        .unwrap();
        let packet = |ttl: u8, df: bool, len: usize| {
            let icmp = crate::wire::craft::icmpv4(8, 0, [0, 1, 0, 1], &vec![7; len]);
            let dst = if ttl == 1 {
                Ipv4Address::new(192, 0, 2, 9)
            } else {
                gw
            };
            let mut h = crate::wire::craft::Ipv4Header::new(GUEST_IP, dst, 1);
            h.ttl = ttl;
            if df {
                h.flags_frag = crate::wire::craft::IPV4_DF;
            }
            eth_frame(
                Config::default().gateway_mac,
                EtherType::Ipv4,
                &h.emit(&icmp),
            )
        };
        // A flood of packets whose TTL runs out: a burst of 10 Time Exceeded, then 10 a second.
        let t0 = Instant::from_secs(10);
        for _ in 0..30 {
            s.process_frame(t0, &packet(1, false, 8));
        }
        assert_eq!(drain(&mut s).len(), 10);
        assert_eq!(s.stats().drop_ipv4_ttl_exceeded, 30);
        assert_eq!(s.stats().drop_icmp_rate_limited, 20);
        for _ in 0..30 {
            s.process_frame(t0 + Duration::from_millis(500), &packet(1, false, 8));
        }
        assert_eq!(drain(&mut s).len(), 5);
        // Path MTU discovery is never starved.
        for _ in 0..30 {
            s.process_frame(t0 + Duration::from_millis(500), &packet(64, true, 1000));
        }
        assert_eq!(drain(&mut s).len(), 30);
        assert_eq!(s.stats().drop_ipv4_path_mtu, 30);
    }

    #[test]
    fn an_emulated_narrow_path_answers_df_packets_with_fragmentation_needed() {
        let gw = Config::default().gateway_ipv4;
        let mut s = Stack::new(Config {
            path_mtus: vec!["10.0.2.2=576".parse().unwrap()],
            ..Config::default()
        })
        .unwrap();
        let echo = |df: bool, len: usize| {
            let icmp = crate::wire::craft::icmpv4(8, 0, [0, 1, 0, 1], &vec![7; len]);
            let mut h = crate::wire::craft::Ipv4Header::new(GUEST_IP, gw, 1);
            if df {
                h.flags_frag = crate::wire::craft::IPV4_DF;
            }
            eth_frame(
                Config::default().gateway_mac,
                EtherType::Ipv4,
                &h.emit(&icmp),
            )
        };
        s.process_frame(now(), &echo(true, 1000));
        let out = drain(&mut s);
        assert_eq!(out.len(), 1);
        let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (gw, GUEST_IP));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(matches!(
            Icmpv4Repr::parse(&icmp),
            Ok(Icmpv4Repr::DstUnreachable {
                code: 4,
                next_hop_mtu: 576,
                ..
            })
        ));
        assert_eq!(s.stats().drop_ipv4_path_mtu, 1);
        // Small enough, or without DF: through.
        s.process_frame(now(), &echo(true, 500));
        s.process_frame(now(), &echo(false, 1000));
        assert_eq!(s.stats().icmp_rx_echo_requests, 2);
        assert_eq!(s.stats().ipv4_path_mtu_fragmented, 1);
        // At run time: cleared, then refused when too many.
        s.set_path_mtus(Vec::new()).unwrap();
        drain(&mut s);
        s.process_frame(now(), &echo(true, 1000));
        assert_eq!(s.stats().drop_ipv4_path_mtu, 1);
        let many = vec!["10.0.2.2=576".parse().unwrap(); crate::pmtu::MAX_PATH_MTUS + 1];
        assert!(s.set_path_mtus(many).is_err());
    }

    #[test]
    fn a_network_routed_via_the_guest_is_reached_through_it() {
        let dns = Config::default().dns_ipv4;
        let inner = Ipv4Address::new(192, 168, 77, 5);
        let icmp = crate::wire::craft::icmpv4(8, 0, [0, 1, 0, 2], b"inner");
        let mut s = Stack::new(Config {
            routes_via_guest: vec!["192.168.77.0/24".parse().unwrap()],
            ..Config::default()
        })
        .unwrap();
        // The guest speaks from its own address first (its MAC and address are learned).
        s.process_frame(now(), &echo_request(dns, 1, b"x"));
        drain(&mut s);
        s.process_frame(now(), &ipv4_frame(inner, dns, IpProtocol::Icmp, &icmp));
        let out = drain(&mut s);
        assert_eq!(out.len(), 1, "{:?}", s.stats());
        assert_eq!(&out[0][..6], &GUEST_MAC.0, "the guest is the next hop");
        let ip = Ipv4Packet::new_checked(&out[0][14..]).unwrap();
        assert_eq!(ip.dst_addr(), inner);
        assert_eq!(
            s.guest_ipv4(),
            Some(GUEST_IP),
            "the inner source is not the guest's"
        );
        // Without the route, such a source is no guest's.
        let mut plain = stack();
        plain.process_frame(now(), &echo_request(dns, 1, b"x"));
        plain.process_frame(now(), &ipv4_frame(inner, dns, IpProtocol::Icmp, &icmp));
        assert_eq!(plain.stats().drop_ipv4_bad_source, 1);
        // The link's own addresses cannot be routed away.
        assert!(Stack::new(Config {
            routes_via_guest: vec!["10.0.2.0/24".parse().unwrap()],
            ..Config::default()
        })
        .is_err());
    }

    #[test]
    fn memberships_are_tracked_and_counted() {
        let mut s = stack();
        let mut report = vec![0x16, 0, 0, 0, 239, 1, 1, 1];
        let sum = crate::wire::checksum::compute(&report);
        report[2..4].copy_from_slice(&sum.to_be_bytes());
        let group = Ipv4Address::new(239, 1, 1, 1);
        s.process_frame(
            now(),
            &ipv4_frame(GUEST_IP, group, IpProtocol::Igmp, &report),
        );
        assert_eq!(s.stats().multicast_groups, 1);
        assert_eq!(s.multicast_groups(false)[0].group, group.into());
        // Unrefreshed, it lapses after the Group Membership Interval (2 x 125 s + 10 s).
        s.poll(Instant::from_secs(261));
        assert_eq!(s.stats().multicast_groups, 0);
    }
}

/// A stack in shards (queue pairs in parallel): which shard a frame belongs to, the link shared,
/// connections and flows kept apart, reassembled datagrams handed to their flow's shard.
mod shards {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::{Forward, ForwardProtocol};
    use crate::host::{ScriptedHost, ScriptedSocket, Sent};
    use crate::wire::ipv4::Fragment;
    use crate::wire::tcp::flags;
    use crate::wire::{SeqNumber, TcpRepr};

    const GW: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);

    fn sharded(cfg: Config, n: usize) -> Vec<Stack<ScriptedHost>> {
        Stack::sharded(cfg, (0..n).map(|_| ScriptedHost::new())).unwrap()
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = vec![0u8; 8 + payload.len()];
        u[8..].copy_from_slice(payload);
        UdpRepr {
            src_port: sport,
            dst_port: dport,
        }
        .emit_v4(&mut u, GUEST_IP, GW);
        u
    }

    fn syn(sport: u16) -> Vec<u8> {
        let r = TcpRepr {
            src_port: sport,
            dst_port: 80,
            seq_number: SeqNumber(1000),
            ack_number: None,
            flags: flags::SYN,
            window_len: 64240,
            urgent_at: 0,
            max_seg_size: Some(1460),
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let mut t = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut t, GUEST_IP, GW);
        ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t)
    }

    /// A guest port whose flows to `GW:dport` (TCP or UDP) belong to shard `want` of `s`.
    fn port_on(s: &Stack<ScriptedHost>, want: usize, tcp: bool, dport: u16) -> u16 {
        (40000..41000)
            .find(|&p| {
                let f = if tcp {
                    syn(p)
                } else {
                    ipv4_frame(GUEST_IP, GW, IpProtocol::Udp, &udp(p, dport, b"x"))
                };
                s.shard_of(&f) == want
            })
            .expect("a port for the shard")
    }

    #[test]
    fn flows_spread_over_the_shards_and_the_link_stays_home() {
        let mut cfg = Config::default();
        cfg.forwards.push(Forward {
            protocol: ForwardProtocol::Udp,
            host: "127.0.0.1:5353".parse().unwrap(),
            guest_port: 53,
        });
        let mut shards = sharded(cfg, 4);
        shards[0].open_forwards().unwrap();
        let mut per_shard = [0usize; 4];
        for port in 0..400u16 {
            let tcp = syn(40000 + port);
            let q = shards[0].shard_of(&tcp);
            per_shard[q] += 1;
            // Every shard answers alike.
            assert!(shards.iter().all(|s| s.shard_of(&tcp) == q));
        }
        assert!(per_shard.iter().all(|&n| n > 40), "{per_shard:?}");
        let s = &shards[1];
        let arp = eth_frame(EthernetAddress::BROADCAST, EtherType::Arp, &[0; 28]);
        assert_eq!(s.shard_of(&arp), 0);
        assert_eq!(s.shard_of(&echo_request(GW, 1, b"ping")), 0);
        let dhcp = ipv4_frame(
            GUEST_IP,
            Ipv4Address::BROADCAST,
            IpProtocol::Udp,
            &udp(68, 67, b""),
        );
        assert_eq!(s.shard_of(&dhcp), 0);
        // The forward's guest port: its conversations are the home shard's, whatever the hash.
        for peer in 0..50u16 {
            let reply = ipv4_frame(GUEST_IP, GW, IpProtocol::Udp, &udp(53, 30000 + peer, b"x"));
            assert_eq!(s.shard_of(&reply), 0);
        }
        // A fragment carries no ports: home.
        let mut frag = ipv4_frame(GUEST_IP, GW, IpProtocol::Udp, &udp(40001, 7, &[0; 16]));
        frag[14 + 6] |= 0x20;
        assert_eq!(s.shard_of(&frag), 0);
    }

    #[test]
    fn shards_share_what_the_link_learned_and_keep_their_connections_apart() {
        let mut shards = sharded(Config::default(), 2);
        let port = port_on(&shards[0], 1, true, 80);
        let now = Instant::ZERO;
        shards[1].process_frame(now, &syn(port));
        let sock = shards[1]
            .host()
            .find(&ScriptedSocket::Tcp("127.0.0.1:80".parse().unwrap()))
            .expect("shard 1 connects");
        shards[1].host_mut().tcp_connected.insert(sock, Ok(()));
        shards[1].host_ready(now, sock);
        let out = drain(&mut shards[1]);
        assert_eq!(out.len(), 1, "the SYN-ACK, and no ARP request first");
        let eth = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(eth.dst_addr(), GUEST_MAC);
        // What shard 1 learned of the guest is the link's: the home shard knows it too.
        assert_eq!(shards[0].guest_mac(), Some(GUEST_MAC));
        assert_eq!(shards[0].guest_ipv4(), Some(GUEST_IP));
        assert_eq!(shards[1].stats().tcp_connections, 1);
        assert_eq!(shards[0].stats().tcp_connections, 0);
        assert!(shards[0].tcp_flows().is_empty());
        assert_eq!(shards[1].tcp_flows().len(), 1);
        assert!(shards[0].host().sent.is_empty());
    }

    #[test]
    fn a_datagram_reassembled_at_home_is_handed_to_the_shard_of_its_flow() {
        let mut shards = sharded(Config::default(), 2);
        let port = port_on(&shards[0], 1, false, 7);
        let payload: Vec<u8> = (0..64u8).collect();
        let whole = udp(port, 7, &payload);
        // Two fragments: 40 bytes, then the rest.
        let piece = |offset: usize, data: &[u8], more: bool| {
            let mut ip = vec![0u8; ipv4::HEADER_LEN + data.len()];
            Ipv4Repr {
                src: GUEST_IP,
                dst: GW,
                protocol: IpProtocol::Udp,
                payload_len: data.len(),
                ttl: 64,
            }
            .emit_with_fragment(
                &mut ip,
                0x4242,
                Fragment::Piece {
                    offset: offset as u16,
                    more,
                },
            );
            ip[ipv4::HEADER_LEN..].copy_from_slice(data);
            eth_frame(Config::default().gateway_mac, EtherType::Ipv4, &ip)
        };
        let first = piece(0, &whole[..40], true);
        let last = piece(40, &whole[40..], false);
        let now = Instant::ZERO;
        for f in [&first, &last] {
            assert_eq!(shards[1].shard_of(f), 0, "fragments go home");
            shards[0].process_frame(now, f);
        }
        assert_eq!(shards[0].stats().ipv4_reassembled, 1);
        assert_eq!(shards[0].stats().shard_mail_sent, 1);
        assert!(shards[0].host().sent.is_empty(), "home opened no flow");
        assert!(shards[1].has_mail());
        shards[1].take_mail(now);
        assert!(!shards[1].has_mail());
        let to: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let sock = shards[1]
            .host()
            .find(&ScriptedSocket::UdpConnected(to))
            .expect("the flow is shard 1's");
        assert_eq!(shards[1].host().sent, vec![Sent::Udp { sock, to, payload }]);
        // The same flow unfragmented reaches the same shard and the same socket.
        let again = ipv4_frame(GUEST_IP, GW, IpProtocol::Udp, &udp(port, 7, b"again"));
        assert_eq!(shards[0].shard_of(&again), 1);
        shards[1].process_frame(now, &again);
        assert_eq!(shards[1].stats().flows_active, 1);
    }

    #[test]
    fn forwards_open_on_the_home_shard_only() {
        let mut shards = sharded(Config::default(), 2);
        let f = Forward {
            protocol: ForwardProtocol::Tcp,
            host: "127.0.0.1:2222".parse().unwrap(),
            guest_port: 22,
        };
        assert!(shards[1].add_forward(f).is_err());
        shards[0].add_forward(f).unwrap();
        assert_eq!(shards[0].forwards(), vec![f]);
    }

    #[test]
    fn more_shards_than_queues_are_refused() {
        let hosts = (0..MAX_QUEUES + 1).map(|_| ScriptedHost::new());
        assert!(Stack::sharded(Config::default(), hosts).is_err());
        assert!(Stack::sharded(Config::default(), Vec::<ScriptedHost>::new()).is_err());
    }
}
