use super::*;
use crate::wire::{Icmpv4Packet, Ipv4Packet, Ipv6Packet};

fn ctx() -> ProbeContext {
    ProbeContext {
        gateway_mac: EthernetAddress([0x52, 0x55, 10, 0, 2, 2]),
        guest_mac: Some(EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56])),
        gateway_ipv4: Ipv4Address::new(10, 0, 2, 2),
        guest_ipv4: Some(Ipv4Address::new(10, 0, 2, 15)),
        gateway_ipv6: Some(Ipv6Address::new([0xfd00, 0, 0, 0, 0, 0, 0, 2])),
        guest_ipv6: Some(Ipv6Address::new([
            0xfd00, 0, 0, 0, 0x5054, 0xff, 0xfe12, 0x3456,
        ])),
        mtu: 1500,
        serial: 0x100,
        flows: vec![TcpFlow {
            guest: (Ipv4Address::new(10, 0, 2, 15).into(), 40123),
            remote: (Ipv4Address::new(10, 0, 2, 2).into(), 8080),
            to_guest_next: 5000,
            from_guest_next: 9000,
            established: true,
        }],
    }
}

fn build(name: &str, params: &[(&str, &str)]) -> Result<Vec<Vec<u8>>> {
    let p: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    find(name).expect(name).build(&ctx(), &p)
}

#[test]
fn every_probe_builds_with_its_defaults() {
    let mut names = std::collections::HashSet::new();
    for p in PROBES {
        assert!(names.insert(p.name), "{} twice", p.name);
        let frames = p
            .build(&ctx(), &BTreeMap::new())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!frames.is_empty(), "{}", p.name);
        for f in &frames {
            assert!(f.len() <= 65535 + 14, "{}: {} bytes", p.name, f.len());
        }
        assert!(!p.drives.is_empty() && !p.proves.is_empty());
    }
}

#[test]
fn ipv4_echo_fixture() {
    let f = build("ipv4-echo", &[("size", "4"), ("ecn", "3")]).unwrap();
    assert_eq!(
        f[0],
        vec![
            // Ethernet: guest <- gateway, IPv4.
            0x52, 0x54, 0, 0x12, 0x34, 0x56, 0x52, 0x55, 10, 0, 2, 2, 0x08, 0x00,
            // IPv4: CE, 32 bytes, ident 0x100 (the serial), TTL 64, ICMP.
            0x45, 0x03, 0, 32, 0x01, 0x00, 0, 0, 64, 1, 0x61, 0xca, 10, 0, 2, 2, 10, 0, 2, 15,
            // Echo request, ident "vg", sequence 0x100, four pattern bytes.
            8, 0, 0xc2, 0x4b, 0x76, 0x67, 0x01, 0x00, 0x5a, 0x45, 0x64, 0x07,
        ]
    );
    let ip = Ipv4Packet::new_checked(&f[0][14..]).unwrap();
    assert!(ip.verify_checksum());
    assert!(Icmpv4Packet::new_checked(ip.payload())
        .unwrap()
        .verify_checksum());
}

#[test]
fn count_repeats_with_fresh_identifications() {
    let f = build("ipv4-echo", &[("count", "3")]).unwrap();
    let idents: Vec<u16> = f
        .iter()
        .map(|f| Ipv4Packet::new_checked(&f[14..]).unwrap().ident())
        .collect();
    assert_eq!(idents, [0x100, 0x101, 0x102]);
    assert!(build("ipv4-echo", &[("count", "0")]).is_err());
    assert!(build("ipv4-echo", &[("count", "65")]).is_err());
}

#[test]
fn bad_parameters_are_refused_with_the_reason() {
    let e = build("ipv4-echo", &[("nonsense", "1")]).unwrap_err();
    assert!(e.0.contains("unknown parameter nonsense"), "{e}");
    assert!(e.0.contains("count, size, ttl"), "{e}");
    let e = build("ipv4-echo", &[("ttl", "300")]).unwrap_err();
    assert!(e.0.contains("ttl"), "{e}");
    assert!(build("mcast-udp", &[("group", "10.0.0.1")]).is_err());
    assert!(build("ipv4-frag", &[("fragment", "100")]).is_err());
    let mut c = ctx();
    c.guest_ipv4 = None;
    let e = find("ipv4-echo")
        .unwrap()
        .build(&c, &BTreeMap::new())
        .unwrap_err();
    assert!(e.0.contains("not known yet"), "{e}");
}

/// Reassembles IPv4 fragments by offset; None if a byte is missing.
fn reassemble4(frames: &[Vec<u8>]) -> Option<Vec<u8>> {
    let mut out = vec![None; 70_000];
    let mut end = 0;
    for f in frames {
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        let off = usize::from(ip.frag_offset());
        for (i, b) in ip.payload().iter().enumerate() {
            out[off + i] = Some(*b);
        }
        if !ip.more_frags() {
            end = off + ip.payload().len();
        }
    }
    out[..end].iter().copied().collect()
}

#[test]
fn ipv4_fragment_orders_reassemble_to_the_echo() {
    let whole = build("ipv4-echo", &[("size", "3000")]).unwrap();
    let echo = Ipv4Packet::new_checked(&whole[0][14..])
        .unwrap()
        .payload()
        .to_vec();
    for name in [
        "ipv4-frag",
        "ipv4-frag-reversed",
        "ipv4-frag-random",
        "ipv4-frag-duplicate",
    ] {
        let f = build(name, &[]).unwrap();
        assert_eq!(reassemble4(&f).as_deref(), Some(&echo[..]), "{name}");
    }
    let reversed = build("ipv4-frag-reversed", &[]).unwrap();
    assert!(!Ipv4Packet::new_checked(&reversed[0][14..])
        .unwrap()
        .more_frags());
    assert_eq!(build("ipv4-frag-duplicate", &[]).unwrap().len(), 6);
    assert_eq!(build("ipv4-frag-missing", &[]).unwrap().len(), 2);
    assert_eq!(reassemble4(&build("ipv4-frag-missing", &[]).unwrap()), None);
    assert_eq!(build("ipv4-frag-first-only", &[]).unwrap().len(), 1);
    assert_eq!(build("ipv4-frag-tiny", &[]).unwrap().len(), 26);
    // The same seed, the same order; another seed, another.
    let a = build("ipv4-frag-random", &[("seed", "5")]).unwrap();
    assert_eq!(a, build("ipv4-frag-random", &[("seed", "5")]).unwrap());
    assert_ne!(a, build("ipv4-frag-random", &[("seed", "6")]).unwrap());
    // The overlap carries other bytes where it overlaps.
    let o = build("ipv4-frag-overlap", &[]).unwrap();
    assert_eq!(o.len(), 4);
    let ip = Ipv4Packet::new_checked(&o[1][14..]).unwrap();
    assert_eq!((ip.frag_offset(), ip.payload()[0]), (512, 0xee));
    // Oversize: every byte present, ending beyond 65535.
    let big = build("ipv4-frag-oversize", &[]).unwrap();
    let data = reassemble4(&big).unwrap();
    assert_eq!(data.len() + 20, 66548);
}

#[test]
fn ipv6_fragments_carry_the_echo_and_the_bad_ones_are_bad() {
    let f = build("ipv6-frag", &[]).unwrap();
    assert_eq!(f.len(), 3);
    let mut echo = Vec::new();
    for fr in &f {
        let ip = Ipv6Packet::new_checked(&fr[14..]).unwrap();
        assert_eq!(ip.next_header(), nh::FRAGMENT);
        echo.extend_from_slice(&ip.payload()[8..]);
    }
    assert_eq!(&echo[..4], &[128, 0, echo[2], echo[3]]);
    assert_eq!(echo.len(), 3008);
    let u = build("ipv6-frag-unaligned", &[]).unwrap();
    let ip = Ipv6Packet::new_checked(&u[0][14..]).unwrap();
    assert_eq!((ip.payload().len() - 8) % 8, 4);
    let o = build("ipv6-frag-oversize", &[]).unwrap();
    let ip = Ipv6Packet::new_checked(&o[0][14..]).unwrap();
    assert_eq!(&ip.payload()[2..4], &[0xff, 0xf8]);
}

#[test]
fn extension_header_chain_walks_to_the_echo() {
    let f = build("ipv6-ext-chain", &[]).unwrap();
    let ip = Ipv6Packet::new_checked(&f[0][14..]).unwrap();
    let mut next = ip.next_header();
    let mut rest = ip.payload();
    let mut seen = Vec::new();
    while next != 58 {
        seen.push(next);
        let len = if next == nh::FRAGMENT {
            8
        } else {
            (usize::from(rest[1]) + 1) * 8
        };
        next = rest[0];
        rest = &rest[len..];
    }
    assert_eq!(
        seen,
        [
            nh::HOP_BY_HOP,
            nh::DEST_OPTIONS,
            nh::ROUTING,
            nh::FRAGMENT,
            nh::DEST_OPTIONS
        ]
    );
    assert_eq!(rest[0], 128);
}

#[test]
fn link_messages_have_their_hop_limits_and_group_addresses() {
    let q = build("mld-query", &[]).unwrap();
    let ip = Ipv6Packet::new_checked(&q[0][14..]).unwrap();
    assert_eq!(ip.hop_limit(), 1);
    assert_eq!(ip.next_header(), nh::HOP_BY_HOP);
    assert_eq!(ip.dst_addr(), Ipv6Address::ALL_NODES);
    assert_eq!(&q[0][..6], &[0x33, 0x33, 0, 0, 0, 1]);
    let ns = build("ndp-ns", &[]).unwrap();
    let ip = Ipv6Packet::new_checked(&ns[0][14..]).unwrap();
    assert_eq!(ip.hop_limit(), 255);
    assert_eq!(ip.dst_addr(), ctx().guest_ipv6.unwrap().solicited_node());
    let ra = build("ndp-ra", &[("hop-limit", "64"), ("prefix", "fd77::/64")]).unwrap();
    let ip = Ipv6Packet::new_checked(&ra[0][14..]).unwrap();
    assert_eq!((ip.hop_limit(), ip.payload()[0]), (64, 134));
    let igmp = build("igmp-query", &[]).unwrap();
    let ip = Ipv4Packet::new_checked(&igmp[0][14..]).unwrap();
    assert_eq!((ip.ttl(), ip.header_len(), ip.payload().len()), (1, 24, 12));
    assert_eq!(&igmp[0][..6], &[1, 0, 0x5e, 0, 0, 1]);
}

#[test]
fn header_probes_break_exactly_what_they_say() {
    let ip = |name: &str| build(name, &[]).unwrap()[0][14..].to_vec();
    assert_eq!(ip("ipv4-bad-version")[0] >> 4, 6);
    assert_eq!(ip("ipv4-bad-ihl")[0] & 0x0f, 4);
    assert!(!Ipv4Packet::new_unchecked(&ip("ipv4-bad-checksum")[..]).verify_checksum());
    let t = ip("ipv4-truncated");
    assert_eq!(usize::from(u16::from_be_bytes([t[2], t[3]])), t.len() + 100);
    assert_eq!(build("ipv4-padded", &[]).unwrap()[0].len(), 60);
    assert_eq!(ip("ipv6-bad-version")[0] >> 4, 4);
    assert_eq!(build("eth-runt", &[]).unwrap()[0].len(), 10);
    let tcp = ip("tcp-bad-checksum");
    let pseudo = IpAddress::pseudo_header_sum(
        Ipv4Address::new(10, 0, 2, 2).into(),
        Ipv4Address::new(10, 0, 2, 15).into(),
        6,
        20,
    );
    assert_ne!(
        crate::wire::checksum::finish(crate::wire::checksum::accumulate(pseudo, &tcp[20..])),
        0
    );
    let mut fixed = build("tcp-bad-checksum", &[]).unwrap()[0].clone();
    assert!(crate::wire::craft::fix_checksums(&mut fixed));
    assert_eq!(
        crate::wire::checksum::finish(crate::wire::checksum::accumulate(pseudo, &fixed[34..])),
        0
    );
}

#[test]
fn for_flow_imitates_and_quotes_the_guests_connection() {
    let rst = build(
        "tcp-segment",
        &[("for-flow", "8080"), ("flags", "R"), ("seq-offset", "10")],
    )
    .unwrap();
    let ip = Ipv4Packet::new_checked(&rst[0][14..]).unwrap();
    assert_eq!(ip.src_addr(), Ipv4Address::new(10, 0, 2, 2));
    let t = ip.payload();
    assert_eq!(u16::from_be_bytes([t[0], t[1]]), 8080);
    assert_eq!(u16::from_be_bytes([t[2], t[3]]), 40123);
    assert_eq!(u32::from_be_bytes([t[4], t[5], t[6], t[7]]), 5010);
    assert_eq!(u32::from_be_bytes([t[8], t[9], t[10], t[11]]), 9000);
    assert_eq!(t[13], 0x04);
    let pseudo = IpAddress::pseudo_header_sum(ip.src_addr().into(), ip.dst_addr().into(), 6, 20);
    assert_eq!(
        crate::wire::checksum::finish(crate::wire::checksum::accumulate(pseudo, t)),
        0
    );
    // An ICMP error quoting the flow: the guest's next segment.
    let e = build("icmpv4-frag-needed", &[("for-flow", "40123")]).unwrap();
    let ip = Ipv4Packet::new_checked(&e[0][14..]).unwrap();
    let quoted = &ip.payload()[8..];
    assert_eq!(
        (quoted[9], &quoted[12..20]),
        (6, &[10, 0, 2, 15, 10, 0, 2, 2][..])
    );
    assert_eq!(&quoted[24..28], &9000u32.to_be_bytes());
    assert!(build("tcp-segment", &[("for-flow", "1")])
        .unwrap_err()
        .0
        .contains("no TCP connection"));
    assert!(build("icmpv6-unreachable", &[("for-flow", "8080")]).is_err());
}

#[test]
fn router_advertisements_carry_dns_options() {
    let ra = build(
        "ndp-ra",
        &[
            ("rdnss", "fd00::53,fd00::54"),
            ("dnssl", "probe.example"),
            ("dns-lifetime", "60"),
        ],
    )
    .unwrap();
    let ip = Ipv6Packet::new_checked(&ra[0][14..]).unwrap();
    let msg = crate::wire::Icmpv6Repr::parse(ip.payload(), ip.src_addr(), ip.dst_addr()).unwrap();
    let crate::wire::Icmpv6Repr::RouterAdvert { options, .. } = msg else {
        panic!("{msg:?}");
    };
    let (lifetime, addrs) = options.rdnss.unwrap();
    assert_eq!((lifetime, addrs.len()), (60, 32));
    let (lifetime, names) = options.dnssl.unwrap();
    assert_eq!(lifetime, 60);
    assert!(names.starts_with(b"\x05probe\x07example\x00"));
    assert!(build("ndp-ra", &[("rdnss", "nonsense")]).is_err());
}
