//! Every wire parser on arbitrary bytes (the first byte picks one): `new_checked` and
//! `Repr::parse` never panic, and whatever parses is emitted again and parses to the same value.
#![no_main]

use netstack::wire::{
    dhcpv6::Dhcpv6Repr, ipv6, ArpPacket, ArpRepr, DhcpPacket, DhcpRepr, EthernetFrame,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, Icmpv6Repr, IpAddress, Ipv4Address, Ipv4Packet,
    Ipv4Repr, Ipv6Address, Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr, UdpPacket, UdpRepr,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, b)) = data.split_first() else {
        return;
    };
    let v4 = (
        Ipv4Address::new(10, 0, 2, 15),
        Ipv4Address::new(10, 0, 2, 2),
    );
    let v6: (Ipv6Address, Ipv6Address) = ("fd00::15".parse().unwrap(), "fd00::2".parse().unwrap());
    match pick % 11 {
        0 => {
            if let Ok(f) = EthernetFrame::new_checked(b) {
                let r = EthernetRepr::parse(&f);
                let mut out = [0u8; 14];
                r.emit(&mut out);
                assert_eq!(
                    EthernetRepr::parse(&EthernetFrame::new_checked(&out[..]).unwrap()),
                    r
                );
            }
        }
        1 => {
            if let Ok(r) = ArpPacket::new_checked(b).and_then(|p| ArpRepr::parse(&p)) {
                let mut out = [0u8; 28];
                r.emit(&mut out);
                assert_eq!(
                    ArpRepr::parse(&ArpPacket::new_checked(&out[..]).unwrap()),
                    Ok(r)
                );
            }
        }
        2 => {
            if let Ok(p) = Ipv4Packet::new_checked(b) {
                let _ = Ipv4Repr::parse(&p);
                let _ = (p.is_fragment(), p.frag_offset(), p.payload());
            }
        }
        3 => {
            if let Ok(p) = Ipv6Packet::new_checked(b) {
                let r = Ipv6Repr::parse(&p);
                if let Ok(u) = ipv6::walk_extension_headers(
                    u8::from(r.next_header),
                    p.payload(),
                    r.dst.is_multicast(),
                ) {
                    assert!(u.offset <= p.payload().len());
                }
            }
        }
        4 | 5 => {
            let (src, dst): (IpAddress, IpAddress) = if pick % 11 == 4 {
                (v4.0.into(), v4.1.into())
            } else {
                (v6.0.into(), v6.1.into())
            };
            if let Ok(p) = TcpPacket::new_checked(b) {
                if let Ok(r) = TcpRepr::parse_unverified(&p) {
                    let mut out = vec![0u8; r.buffer_len()];
                    r.emit(&mut out, src, dst);
                    let again = TcpPacket::new_checked(&out[..]).unwrap();
                    assert!(again.verify_checksum(src, dst));
                    assert_eq!(TcpRepr::parse(&again, src, dst).unwrap().payload, r.payload);
                }
            }
        }
        6 => {
            if let Ok(p) = UdpPacket::new_checked(b) {
                let _ = UdpRepr::parse(&p, IpAddress::from(v4.0), IpAddress::from(v4.1));
                let _ = p.payload();
            }
        }
        7 => {
            if let Ok(r) = Icmpv4Packet::new_checked(b).and_then(|p| Icmpv4Repr::parse(&p)) {
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut out);
                let p = Icmpv4Packet::new_checked(&out[..]).unwrap();
                assert_eq!(Icmpv4Repr::parse(&p), Ok(r));
            }
        }
        8 => {
            if let Ok(r) = Icmpv6Repr::parse(b, v6.0, v6.1) {
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut out, v6.0, v6.1);
                assert_eq!(Icmpv6Repr::parse(&out, v6.0, v6.1), Ok(r));
            }
        }
        9 => {
            if let Ok(r) = DhcpPacket::new_checked(b).and_then(|p| DhcpRepr::parse(&p)) {
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut out);
                let p = DhcpPacket::new_checked(&out[..]).unwrap();
                assert_eq!(DhcpRepr::parse(&p), Ok(r));
            }
        }
        _ => {
            if let Ok(r) = Dhcpv6Repr::parse(b) {
                let mut out = vec![0u8; r.buffer_len()];
                r.emit(&mut out);
                assert_eq!(Dhcpv6Repr::parse(&out), Ok(r));
            }
        }
    }
});
