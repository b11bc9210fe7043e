//! Property tests: every wire value survives emit → parse, and no input, however hostile, makes the
//! stack panic or emit a frame that is not well formed.

use netstack::wire::dhcpv4::DhcpOp;
use netstack::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpPacket, DhcpRepr, EtherType,
    EthernetAddress, EthernetFrame, EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};
use netstack::{Config, Instant, Stack};
use proptest::prelude::*;

fn mac() -> impl Strategy<Value = EthernetAddress> {
    any::<[u8; 6]>().prop_map(EthernetAddress)
}

fn ip() -> impl Strategy<Value = Ipv4Address> {
    any::<[u8; 4]>().prop_map(Ipv4Address)
}

proptest! {
    #[test]
    fn ethernet_roundtrip(src in mac(), dst in mac(), ty in any::<u16>()) {
        let repr = EthernetRepr { src, dst, ethertype: EtherType::from(ty) };
        let mut buf = [0u8; 14];
        repr.emit(&mut buf);
        prop_assert_eq!(EthernetRepr::parse(&EthernetFrame::new_checked(&buf[..]).unwrap()), repr);
    }

    #[test]
    fn arp_roundtrip(op in 1u16..=2, sha in mac(), spa in ip(), tha in mac(), tpa in ip()) {
        let repr = ArpRepr {
            operation: ArpOperation::from(op),
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_hardware_addr: tha,
            target_protocol_addr: tpa,
        };
        let mut buf = [0u8; 28];
        repr.emit(&mut buf);
        prop_assert_eq!(ArpRepr::parse(&ArpPacket::new_checked(&buf[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn ipv4_udp_roundtrip(src in ip(), dst in ip(), ttl in any::<u8>(), sport in any::<u16>(),
                          dport in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
        let udp_len = 8 + payload.len();
        let repr = Ipv4Repr { src, dst, protocol: IpProtocol::Udp, payload_len: udp_len, ttl };
        let mut buf = vec![0u8; 20 + udp_len];
        repr.emit(&mut buf, 99);
        buf[28..].copy_from_slice(&payload);
        let udp = UdpRepr { src_port: sport, dst_port: dport };
        udp.emit_v4(&mut buf[20..], src, dst);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        let u = UdpPacket::new_checked(p.payload()).unwrap();
        prop_assert_eq!(UdpRepr::parse(&u, src, dst).unwrap(), udp);
        prop_assert_eq!(u.payload(), &payload[..]);
    }

    #[test]
    fn icmp_echo_roundtrip(ident in any::<u16>(), seq in any::<u16>(),
                           data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let repr = Icmpv4Repr::EchoRequest { ident, seq_no: seq, data: &data };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        prop_assert_eq!(Icmpv4Repr::parse(&Icmpv4Packet::new_checked(&buf[..]).unwrap()).unwrap(), repr);
    }

    #[test]
    fn dhcp_roundtrip(t in 1u8..=8, xid in any::<u32>(), bcast in any::<bool>(), chaddr in mac(),
                      ciaddr in ip(), requested in proptest::option::of(ip()),
                      server in proptest::option::of(ip()), lease in proptest::option::of(any::<u32>()),
                      mtu in proptest::option::of(any::<u16>()),
                      cid in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..40))) {
        let repr = DhcpRepr {
            op: DhcpOp::Request,
            message_type: DhcpMessageType::from(t),
            transaction_id: xid,
            broadcast: bcast,
            client_hardware_address: chaddr,
            client_ip: ciaddr,
            requested_ip: requested,
            server_identifier: server,
            lease_time: lease,
            interface_mtu: mtu,
            client_identifier: cid.as_deref(),
            ..DhcpRepr::empty()
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf);
        prop_assert_eq!(DhcpRepr::parse(&DhcpPacket::new_checked(&buf[..]).unwrap()).unwrap(), repr);
    }

    /// Arbitrary bytes: the stack never panics, and anything it sends is a well-formed frame from
    /// the gateway.
    #[test]
    fn arbitrary_frames_never_panic(frames in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..400), 1..20)) {
        let mut s = Stack::new(Config::default()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            s.process_frame(Instant::from_millis(i as u64), f);
        }
        check_output(&mut s);
    }

    /// Valid frames with some bytes flipped reach deeper parsers than random bytes do.
    #[test]
    fn mutated_valid_frames_never_panic(kind in 0usize..4, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                        cut in proptest::option::of(any::<usize>())) {
        let mut f = valid_frame(kind);
        for (at, v) in flips {
            let n = f.len();
            f[at % n] ^= v;
        }
        if let Some(c) = cut {
            let n = f.len();
            f.truncate(c % (n + 1));
        }
        let mut s = Stack::new(Config::default()).unwrap();
        s.process_frame(Instant::ZERO, &f);
        s.poll(Instant::from_secs(5));
        check_output(&mut s);
    }
}

const GUEST: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

fn valid_frame(kind: usize) -> Vec<u8> {
    let cfg = Config::default();
    let guest_ip = Ipv4Address::new(10, 0, 2, 15);
    let eth = |dst, ty, payload: &[u8]| {
        let mut f = vec![0u8; 14 + payload.len()];
        EthernetRepr {
            src: GUEST,
            dst,
            ethertype: ty,
        }
        .emit(&mut f);
        f[14..].copy_from_slice(payload);
        f
    };
    let ipv4 = |dst: Ipv4Address, proto, payload: &[u8]| {
        let mut p = vec![0u8; 20 + payload.len()];
        Ipv4Repr {
            src: guest_ip,
            dst,
            protocol: proto,
            payload_len: payload.len(),
            ttl: 64,
        }
        .emit(&mut p, 1);
        p[20..].copy_from_slice(payload);
        p
    };
    match kind {
        0 => {
            let mut a = [0u8; 28];
            ArpRepr {
                operation: ArpOperation::Request,
                source_hardware_addr: GUEST,
                source_protocol_addr: guest_ip,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: cfg.gateway_ipv4,
            }
            .emit(&mut a);
            eth(EthernetAddress::BROADCAST, EtherType::Arp, &a)
        }
        1 => {
            let icmp = Icmpv4Repr::EchoRequest {
                ident: 1,
                seq_no: 2,
                data: b"0123456789",
            };
            let mut b = vec![0u8; icmp.buffer_len()];
            icmp.emit(&mut b);
            eth(
                cfg.gateway_mac,
                EtherType::Ipv4,
                &ipv4(cfg.gateway_ipv4, IpProtocol::Icmp, &b),
            )
        }
        _ => {
            let mt = if kind == 2 {
                DhcpMessageType::Discover
            } else {
                DhcpMessageType::Request
            };
            let r = DhcpRepr {
                op: DhcpOp::Request,
                message_type: mt,
                transaction_id: 7,
                client_hardware_address: GUEST,
                requested_ip: Some(guest_ip),
                server_identifier: (kind == 3).then_some(cfg.gateway_ipv4),
                ..DhcpRepr::empty()
            };
            let mut u = vec![0u8; 8 + r.buffer_len()];
            r.emit(&mut u[8..]);
            UdpRepr {
                src_port: 68,
                dst_port: 67,
            }
            .emit_v4(&mut u, Ipv4Address::UNSPECIFIED, Ipv4Address::BROADCAST);
            let mut p = vec![0u8; 20 + u.len()];
            Ipv4Repr {
                src: Ipv4Address::UNSPECIFIED,
                dst: Ipv4Address::BROADCAST,
                protocol: IpProtocol::Udp,
                payload_len: u.len(),
                ttl: 64,
            }
            .emit(&mut p, 1);
            p[20..].copy_from_slice(&u);
            eth(EthernetAddress::BROADCAST, EtherType::Ipv4, &p)
        }
    }
}

/// Drains the stack; every frame must come from the gateway MAC and carry a valid ARP or IPv4
/// packet (ICMP, UDP, TCP, IGMP) with correct checksums.
fn check_output(s: &mut Stack) {
    let gw = s.config().gateway_mac;
    for _ in 0..1000 {
        let mut frame = None;
        s.dispatch(Instant::ZERO, |f, _| {
            frame = Some(f.to_vec());
            true
        });
        let Some(f) = frame else { return };
        let eth = EthernetFrame::new_checked(&f[..]).expect("a full Ethernet header");
        assert_eq!(eth.src_addr(), gw);
        match eth.ethertype() {
            EtherType::Arp => {
                ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
            }
            EtherType::Ipv4 => {
                let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
                Ipv4Repr::parse(&ip).expect("valid header checksum");
                match ip.protocol() {
                    IpProtocol::Icmp => assert!(Icmpv4Packet::new_checked(ip.payload())
                        .unwrap()
                        .verify_checksum()),
                    IpProtocol::Udp => {
                        let u = UdpPacket::new_checked(ip.payload()).unwrap();
                        assert!(u.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
                    }
                    IpProtocol::Tcp => {
                        let t = netstack::wire::TcpPacket::new_checked(ip.payload()).unwrap();
                        assert!(t.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
                    }
                    // The multicast querier's IGMP queries.
                    IpProtocol::Igmp => {
                        assert_eq!(netstack::wire::checksum::compute(ip.payload()), 0)
                    }
                    other => panic!("unexpected protocol {other}"),
                }
            }
            other => panic!("unexpected EtherType {other}"),
        }
    }
    panic!("the stack kept producing frames");
}
