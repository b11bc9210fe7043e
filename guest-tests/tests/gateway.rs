//! The IPv4 gateway seen from a real guest: UDP to the host through the gateway address, inbound UDP
//! forwards, DNS through the DNS address, and refusals mapped to what a network would show.
//! Every host endpoint is on the loopback and created by the test.

use std::net::UdpSocket;
use std::time::Duration;

use guest_tests::{Family, Offloads, Virtgate, Vm, VmOptions};
use rstest::rstest;

/// A UDP echo server on the family's host loopback for `count` datagrams; returns its port.
fn host_udp_echo(family: Family, count: usize) -> u16 {
    let s = UdpSocket::bind((family.loopback(), 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        for _ in 0..count {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    port
}

#[rstest]
fn guest_udp_reaches_host_loopback_through_the_gateway(
    #[values(Family::V4, Family::V6)] family: Family,
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let port = host_udp_echo(family, 3);
    let vg = Virtgate::start(&offloads.args(&[]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    family.bring_up(&mut vm);
    for i in 0..3 {
        let out = vm
            .run(
                &format!("udptool send {} {port} hello{i}", family.gateway()),
                Duration::from_secs(30),
            )
            .ok();
        assert_eq!(out.trim(), format!("reply: echo:hello{i}"));
    }
    let s = vg.stats();
    assert_eq!(s["stack"]["udp_tx_host_datagrams"], 3);
    assert_eq!(s["stack"]["udp_rx_host_datagrams"], 3);
    // Three sends from three sockets: three flows.
    assert_eq!(s["stack"]["flows_opened"], 3);
    offloads.check(&mut vm);
}

#[rstest]
fn closed_host_port_is_refused_in_the_guest(
    #[values(Family::V4, Family::V6)] family: Family,
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let closed = guest_tests::unused_udp_port();
    let vg = Virtgate::start(&offloads.args(&[]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    family.bring_up(&mut vm);
    let out = vm.run(
        &format!("udptool send {} {closed} anyone 10", family.gateway()),
        Duration::from_secs(30),
    );
    assert_eq!(out.status, 3, "expected ECONNREFUSED: {}", out.stdout);
    assert!(out.stdout.contains("refused"));
    let s = vg.stats();
    match family {
        Family::V4 => {
            let snmp = guest_tests::parse_snmp(&vm.sh("cat /proc/net/snmp"));
            assert!(snmp["Icmp.InDestUnreachs"] >= 1);
            assert!(s["stack"]["icmp_tx_errors"].as_u64().unwrap() >= 1);
        }
        Family::V6 => {
            let snmp6 = vm.sh("cat /proc/net/snmp6");
            let unreach = snmp6
                .lines()
                .find_map(|l| l.strip_prefix("Icmp6InDestUnreachs"))
                .and_then(|v| v.trim().parse::<u64>().ok());
            assert!(unreach >= Some(1), "{snmp6}");
            assert!(s["stack"]["icmpv6_tx_errors"].as_u64().unwrap() >= 1);
        }
    }
    offloads.check(&mut vm);
}

#[rstest]
fn inbound_udp_forward_reaches_the_guest_server(
    #[values(Family::V4, Family::V6)] family: Family,
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let port = guest_tests::unused_udp_port();
    let spec = format!("udp:{}:5000", family.forward_host(port));
    let vg = Virtgate::start(&offloads.args(&["--forward", &spec]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    family.bring_up(&mut vm);
    vm.sh("udptool echo 5000 2 </dev/null >/tmp/echo.log 2>&1 &");
    vm.sh("i=0; until grep -q listening /tmp/echo.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
    let client = UdpSocket::bind((family.loopback(), 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 128];
    for msg in [&b"first"[..], b"second"] {
        client.send_to(msg, (family.loopback(), port)).unwrap();
        let (n, from) = client.recv_from(&mut buf).expect("the guest answers");
        assert_eq!(&buf[..n], msg);
        assert_eq!(from.port(), port);
    }
    // The guest saw the host client as the gateway, with the client's port.
    let log = vm.sh("cat /tmp/echo.log");
    let client_port = client.local_addr().unwrap().port();
    assert!(
        log.contains(&format!("from {}:{client_port}", family.gateway())),
        "{log}"
    );
    offloads.check(&mut vm);
}

/// A DNS server on the host loopback that knows one name; returns its port.
fn host_dns(name: &'static str, addr: [u8; 4], queries: usize) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        for _ in 0..queries {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            if let Some(reply) = dns_answer(&buf[..n], name, addr) {
                let _ = s.send_to(&reply, from);
            }
        }
    });
    port
}

/// RFC 1035 §4.1: answers an A query for `name` with `addr`; other names get NXDOMAIN, other types
/// an empty answer.
fn dns_answer(q: &[u8], name: &str, addr: [u8; 4]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    while at < q.len() && q[at] != 0 {
        let len = q[at] as usize;
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + len)?).to_string());
        at += 1 + len;
    }
    let qend = at + 5; // zero label, type, class
    let qtype = u16::from_be_bytes([*q.get(at + 1)?, *q.get(at + 2)?]);
    let known = labels.join(".").eq_ignore_ascii_case(name);
    let answer = known && qtype == 1;
    let mut r = q[..2].to_vec(); // id
    r.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]); // QR RD RA, NOERROR/NXDOMAIN
    r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..qend)?);
    if answer {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&addr);
    }
    Some(r)
}

/// DNS through the DNS address of either family (10.0.2.3 or fd00::3) reaches the upstream
/// resolver the test runs on the host's loopback.
#[rstest]
fn dns_through_the_gateway_uses_the_configured_upstream(
    #[values(Family::V4, Family::V6)] family: Family,
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let port = host_dns("example.internal", [192, 0, 2, 1], 8);
    let vg = Virtgate::start(&offloads.args(&["--dns-upstream", &format!("127.0.0.1:{port}")]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    family.bring_up(&mut vm);
    assert!(vm
        .sh("cat /etc/resolv.conf")
        .contains("nameserver 10.0.2.3"));
    let dns = family.dns();
    let out = vm
        .run(
            &format!("nslookup example.internal {dns}"),
            Duration::from_secs(30),
        )
        .ok();
    assert!(out.contains("192.0.2.1"), "{out}");
    let missing = vm.run(
        &format!("nslookup nowhere.internal {dns}"),
        Duration::from_secs(30),
    );
    assert!(!missing.stdout.contains("192.0.2.1"), "{}", missing.stdout);
    assert!(
        vg.stats()["stack"]["udp_rx_host_datagrams"]
            .as_u64()
            .unwrap()
            >= 2
    );
    offloads.check(&mut vm);
}

#[rstest]
fn without_an_upstream_dns_queries_are_counted(
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    // The harness starts virtgate with an empty resolv.conf: no resolver, and it still serves.
    let vg = Virtgate::start(&offloads.args(&[]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    assert!(vg.log().contains("no DNS resolver found"), "{}", vg.log());
    vm.bring_up();
    let out = vm.run(
        "nslookup -timeout=1 example.internal 10.0.2.3",
        Duration::from_secs(60),
    );
    assert_ne!(out.status, 0, "{}", out.stdout);
    let s = vg.stats();
    assert!(
        s["stack"]["drop_dns_no_upstream"].as_u64().unwrap() >= 1,
        "{s:#}"
    );
    assert_eq!(s["stack"]["udp_tx_host_datagrams"], 0);
    offloads.check(&mut vm);
}

/// A host datagram larger than the guest's MTU reaches the guest in fragments, which the guest
/// reassembles (ip_defrag): the guest server sees all 4000 bytes.
#[rstest]
fn large_host_datagrams_arrive_in_fragments(
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let port = guest_tests::unused_udp_port();
    let vg = Virtgate::start(&offloads.args(&["--forward", &format!("udp:{port}:5000")]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up();
    vm.sh("udptool echo 5000 1 </dev/null >/tmp/echo.log 2>&1 &");
    vm.sh("i=0; until grep -q listening /tmp/echo.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
    let before = guest_tests::parse_snmp(&vm.sh("cat /proc/net/snmp"));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(&[0x42; 4000], ("127.0.0.1", port)).unwrap();
    let mut log = String::new();
    for _ in 0..100 {
        log = vm.sh("cat /tmp/echo.log");
        if log.contains("bytes") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log.contains("4000 bytes"), "{log}");
    let after = guest_tests::parse_snmp(&vm.sh("cat /proc/net/snmp"));
    assert_eq!(after["Ip.ReasmOKs"] - before["Ip.ReasmOKs"], 1);
    assert_eq!(vg.stats()["stack"]["ipv4_tx_fragments"], 3);
    offloads.check(&mut vm);
}
