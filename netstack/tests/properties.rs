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

    /// Structurally valid frames of every protocol the stack parses (netstack::testing), after
    /// the handshake a guest does first (DAD), with bytes flipped, inserted or cut: they reach
    /// the deep parsers that random bytes almost never do.
    #[test]
    fn mutated_valid_frames_never_panic(
        picks in proptest::collection::vec(any::<usize>(), 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        insert in proptest::option::of((any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let samples = netstack::testing::guest_frames();
        let mut s = Stack::new(Config::default()).unwrap();
        let dad = &samples.iter().find(|(n, _)| *n == "ndp-dad").unwrap().1;
        s.process_frame(Instant::ZERO, dad);
        for (i, pick) in picks.iter().enumerate() {
            let mut f = samples[pick % samples.len()].1.clone();
            // The last frame is the mutated one; the others set state up for it.
            if i + 1 == picks.len() {
                for &(at, v) in &flips {
                    let n = f.len();
                    f[at % n] ^= v;
                }
                if let Some((at, bytes)) = &insert {
                    let at = at % (f.len() + 1);
                    f.splice(at..at, bytes.iter().copied());
                }
                if let Some(c) = cut {
                    let n = f.len();
                    f.truncate(c % (n + 1));
                }
            }
            s.process_frame(Instant::from_millis(i as u64 + 1), &f);
        }
        s.poll(Instant::from_secs(5));
        check_output(&mut s);
    }
}

/// Drains the stack; every frame must be well formed (netstack::testing::check_emitted).
fn check_output(s: &mut Stack) {
    let gw = s.config().gateway_mac;
    for _ in 0..1000 {
        let mut frame = None;
        s.dispatch(Instant::ZERO, |f, _| {
            frame = Some(f.to_vec());
            true
        });
        let Some(f) = frame else { return };
        netstack::testing::check_emitted(&f, gw);
    }
    panic!("the stack kept producing frames");
}
