//! The gateway seen from a real guest: UDP to the host through the gateway address, inbound UDP
//! forwards, DNS through the DNS address, and refusals mapped to what a network would show, over
//! both families. Every host endpoint is on the loopback and created by the test.
//!
//! One dual-stack guest per offload setting serves every scenario ([`guest_tests::run_scenarios`]):
//! the virtgate options are the same for all of them (forwards are opened at run time through
//! the API), and each scenario asserts the deltas of the counters it reads.

use std::net::UdpSocket;
use std::time::Duration;

use guest_tests::{parse_snmp, Family, GuestKernel, Offloads, Virtgate, Vm, VmOptions};
use rstest::rstest;

/// The name the test's upstream resolver knows, and its address.
const KNOWN_NAME: &str = "example.internal";
const KNOWN_ADDR: [u8; 4] = [192, 0, 2, 1];

/// The booted guest, its virtgate, and the family the scenario runs over.
struct Gw {
    vg: Virtgate,
    vm: Vm,
    family: Family,
    offloads: Offloads,
}

impl Gw {
    /// A counter of virtgate's stack.
    fn ours(&self, name: &str) -> i64 {
        self.vg.counter("stack", name)
    }

    /// How much a counter of virtgate's stack grew from `before`, once it has grown by at least
    /// `wanted` (the counters are published after the batch that answered the guest).
    fn grown(&self, name: &str, before: i64, wanted: i64) -> i64 {
        self.vg
            .counter_at_least("stack", name, before + wanted, Duration::from_secs(10))
            - before
    }
}

type Scenario = fn(&mut Gw);

/// Each scenario over IPv4, then over IPv6 (the `_v6` twin sets the family).
const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "guest_udp_reaches_host_loopback_through_the_gateway_v4",
        |g| v4(g, guest_udp_reaches_host_loopback_through_the_gateway),
    ),
    (
        "guest_udp_reaches_host_loopback_through_the_gateway_v6",
        |g| v6(g, guest_udp_reaches_host_loopback_through_the_gateway),
    ),
    ("closed_host_port_is_refused_in_the_guest_v4", |g| {
        v4(g, closed_host_port_is_refused_in_the_guest)
    }),
    ("closed_host_port_is_refused_in_the_guest_v6", |g| {
        v6(g, closed_host_port_is_refused_in_the_guest)
    }),
    ("inbound_udp_forward_reaches_the_guest_server_v4", |g| {
        v4(g, inbound_udp_forward_reaches_the_guest_server)
    }),
    ("inbound_udp_forward_reaches_the_guest_server_v6", |g| {
        v6(g, inbound_udp_forward_reaches_the_guest_server)
    }),
    (
        "dns_through_the_gateway_uses_the_configured_upstream_v4",
        |g| v4(g, dns_through_the_gateway_uses_the_configured_upstream),
    ),
    (
        "dns_through_the_gateway_uses_the_configured_upstream_v6",
        |g| v6(g, dns_through_the_gateway_uses_the_configured_upstream),
    ),
    (
        "large_host_datagrams_arrive_in_fragments",
        large_host_datagrams_arrive_in_fragments,
    ),
    ("guest_udp_segmentation_reaches_the_host_v4", |g| {
        v4(g, guest_udp_segmentation_reaches_the_host)
    }),
    ("guest_udp_segmentation_reaches_the_host_v6", |g| {
        v6(g, guest_udp_segmentation_reaches_the_host)
    }),
];

fn v4(g: &mut Gw, scenario: Scenario) {
    g.family = Family::V4;
    scenario(g);
}

fn v6(g: &mut Gw, scenario: Scenario) {
    g.family = Family::V6;
    scenario(g);
}

/// Every scenario on one dual-stack guest per offload setting; virtgate's upstream resolver is
/// the test's own on the loopback.
#[rstest]
fn gateway_scenarios(#[values(Offloads::All, Offloads::None)] offloads: Offloads) {
    let dns_port = guest_tests::dns::serve(KNOWN_NAME, KNOWN_ADDR);
    let upstream = format!("127.0.0.1:{dns_port}");
    let vg = Virtgate::start(&offloads.args(&["--dns-upstream", &upstream]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let mut g = Gw {
        vg,
        vm,
        family: Family::V4,
        offloads,
    };
    guest_tests::run_scenarios(SCENARIOS, &mut g, |g| g.vm.is_running());
    offloads.check(&mut g.vm);
}

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

fn guest_udp_reaches_host_loopback_through_the_gateway(g: &mut Gw) {
    let family = g.family;
    let port = host_udp_echo(family, 3);
    let (tx, rx, opened) = (
        g.ours("udp_tx_host_datagrams"),
        g.ours("udp_rx_host_datagrams"),
        g.ours("flows_opened"),
    );
    for i in 0..3 {
        let out =
            g.vm.run(
                &format!("udptool send {} {port} hello{i}", family.gateway()),
                Duration::from_secs(30),
            )
            .ok();
        assert_eq!(out.trim(), format!("reply: echo:hello{i}"));
    }
    assert_eq!(g.grown("udp_tx_host_datagrams", tx, 3), 3);
    assert_eq!(g.grown("udp_rx_host_datagrams", rx, 3), 3);
    // Three sends from three sockets: three flows.
    assert_eq!(g.grown("flows_opened", opened, 3), 3);
}

/// The guest's count of ICMP destination unreachables of the family.
fn guest_unreachables(g: &mut Gw) -> i64 {
    match g.family {
        Family::V4 => parse_snmp(&g.vm.sh("cat /proc/net/snmp"))["Icmp.InDestUnreachs"],
        Family::V6 => {
            let snmp6 = g.vm.sh("cat /proc/net/snmp6");
            snmp6
                .lines()
                .find_map(|l| l.strip_prefix("Icmp6InDestUnreachs"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no Icmp6InDestUnreachs: {snmp6}"))
        }
    }
}

fn closed_host_port_is_refused_in_the_guest(g: &mut Gw) {
    let family = g.family;
    let closed = guest_tests::unused_udp_port();
    let errors = match family {
        Family::V4 => "icmp_tx_errors",
        Family::V6 => "icmpv6_tx_errors",
    };
    let (ours, theirs) = (g.ours(errors), guest_unreachables(g));
    let out = g.vm.run(
        &format!("udptool send {} {closed} anyone 10", family.gateway()),
        Duration::from_secs(30),
    );
    assert_eq!(out.status, 3, "expected ECONNREFUSED: {}", out.stdout);
    assert!(out.stdout.contains("refused"));
    assert!(guest_unreachables(g) - theirs >= 1);
    assert!(g.grown(errors, ours, 1) >= 1);
}

fn inbound_udp_forward_reaches_the_guest_server(g: &mut Gw) {
    let family = g.family;
    let port = guest_tests::unused_udp_port();
    let spec = format!("udp:{}:5000", family.forward_host(port));
    g.vg.ctl(&["forward", "add", &spec]);
    g.vm.sh("udptool echo 5000 2 </dev/null >/tmp/echo.log 2>&1 &");
    g.vm.sh("i=0; until grep -q listening /tmp/echo.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
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
    let log = g.vm.sh("cat /tmp/echo.log");
    let client_port = client.local_addr().unwrap().port();
    assert!(
        log.contains(&format!("from {}:{client_port}", family.gateway())),
        "{log}"
    );
    g.vg.ctl(&["forward", "remove", &spec]);
}

/// DNS through the DNS address of either family (10.0.2.3 or fd00::3) reaches the upstream
/// resolver the test runs on the host's loopback.
fn dns_through_the_gateway_uses_the_configured_upstream(g: &mut Gw) {
    assert!(g
        .vm
        .sh("cat /etc/resolv.conf")
        .contains("nameserver 10.0.2.3"));
    let dns = g.family.dns();
    let upstream = g.ours("udp_rx_host_datagrams");
    let out =
        g.vm.run(
            &format!("nslookup {KNOWN_NAME} {dns}"),
            Duration::from_secs(30),
        )
        .ok();
    assert!(out.contains("192.0.2.1"), "{out}");
    let missing = g.vm.run(
        &format!("nslookup nowhere.internal {dns}"),
        Duration::from_secs(30),
    );
    assert!(!missing.stdout.contains("192.0.2.1"), "{}", missing.stdout);
    assert!(g.grown("udp_rx_host_datagrams", upstream, 2) >= 2);
}

/// A host datagram larger than the guest's MTU reaches the guest in fragments, which the guest
/// reassembles (ip_defrag): the guest server sees all 4000 bytes.
fn large_host_datagrams_arrive_in_fragments(g: &mut Gw) {
    let port = guest_tests::unused_udp_port();
    let spec = format!("udp:{port}:5001");
    g.vg.ctl(&["forward", "add", &spec]);
    g.vm.sh("udptool echo 5001 1 </dev/null >/tmp/frag.log 2>&1 &");
    g.vm.sh("i=0; until grep -q listening /tmp/frag.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
    let before = parse_snmp(&g.vm.sh("cat /proc/net/snmp"));
    let fragments = g.ours("ipv4_tx_fragments");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(&[0x42; 4000], ("127.0.0.1", port)).unwrap();
    let mut log = String::new();
    for _ in 0..100 {
        log = g.vm.sh("cat /tmp/frag.log");
        if log.contains("bytes") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(log.contains("4000 bytes"), "{log}");
    let after = parse_snmp(&g.vm.sh("cat /proc/net/snmp"));
    assert_eq!(after["Ip.ReasmOKs"] - before["Ip.ReasmOKs"], 1);
    assert_eq!(g.grown("ipv4_tx_fragments", fragments, 3), 3);
    g.vg.ctl(&["forward", "remove", &spec]);
}

/// The guest sends 14 000 bytes in one send with UDP_SEGMENT=1400: the host gets ten 1400-byte
/// datagrams, intact. Where the segmentation happens depends on the guest kernel and on QEMU, and
/// the scenario says which:
/// - Linux's virtio-net drives USO (VIRTIO_NET_F_HOST_USO, `tx-udp-segmentation`) from 6.2, off
///   until asked for (it is in the driver's hw_features only); 6.1 segments in software.
/// - QEMU (up to 10.0 at least) withdraws HOST_USO from a vhost-user netdev whatever the backend
///   offers: virtio-net keeps it only for a peer that reports USO support, and the vhost-user
///   netdev reports none. So no guest under QEMU hands virtgate a segmentation request today;
///   virtgate's USO path is proven by the device tests' own frontend (backend/tests/device.rs).
///   Should QEMU pass it, the first assertion below fails and says so.
/// - Without checksum offload (`--offloads none`), Linux before 6.11 refuses such a send with EIO
///   (udp_send_skb wants CHECKSUM_PARTIAL; "udp: Allow GSO transmit from devices with no checksum
///   offload" lifted it), 6.11+ segments and checksums in software.
fn guest_udp_segmentation_reaches_the_host(g: &mut Gw) {
    const SIZE: usize = 14_000;
    const SEGMENT: usize = 1400;
    const HOST_USO: u64 = 1 << 56;
    let family = g.family;
    let kernel = GuestKernel::current();
    let offloads = g.offloads == Offloads::All;
    let host_uso = g.vm.virtio_features() & HOST_USO != 0;
    let qemu = guest_tests::qemu_major();
    if qemu <= 10 {
        assert!(
            !host_uso,
            "QEMU {qemu} negotiated HOST_USO over vhost-user: USO from guests works now; update \
             docs/nic.md and this scenario"
        );
    }
    let uso = host_uso && offloads && kernel.at_least(6, 2);
    let feature = g.vm.run(
        "features eth0 tx-udp-segmentation on",
        Duration::from_secs(10),
    );
    let state = if uso { "on" } else { "off fixed" };
    assert_eq!(
        feature.ok().trim(),
        format!("tx-udp-segmentation {state}"),
        "Linux {}",
        kernel.name
    );
    let host = UdpSocket::bind((family.loopback(), 0)).unwrap();
    host.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let port = host.local_addr().unwrap().port();
    let (segmented, datagrams) = (g.ours("udp_rx_segmented"), g.ours("udp_tx_host_datagrams"));
    let out = g.vm.run(
        &format!("udptool gso {} {port} {SIZE} {SEGMENT}", family.gateway()),
        Duration::from_secs(30),
    );
    if !offloads && !kernel.at_least(6, 11) {
        assert_eq!(out.status, 1, "Linux {}: {}", kernel.name, out.stdout);
        assert!(out.stdout.contains("Input/output error"), "{}", out.stdout);
        assert_eq!(g.ours("udp_tx_host_datagrams") - datagrams, 0);
        return;
    }
    assert_eq!(out.ok().trim(), format!("sent {SIZE}"));
    let mut buf = [0u8; 2048];
    let mut offset = 0;
    while offset < SIZE {
        let n = host.recv(&mut buf).expect("the next segment");
        assert_eq!(n, SEGMENT, "a datagram of {n} bytes at {offset}");
        for (i, b) in buf[..n].iter().enumerate() {
            assert_eq!(usize::from(*b), (offset + i) % 251, "byte {}", offset + i);
        }
        offset += n;
    }
    let sent = (SIZE / SEGMENT) as i64;
    assert_eq!(g.grown("udp_tx_host_datagrams", datagrams, sent), sent);
    assert_eq!(
        g.grown("udp_rx_segmented", segmented, i64::from(uso)),
        i64::from(uso),
        "Linux {} ({}) with {:?} offloads: USO {}",
        kernel.name,
        kernel.release(),
        g.offloads,
        if uso { "expected" } else { "not expected" }
    );
    // Back to the driver's default for the scenarios after this one.
    if uso {
        g.vm.sh("features eth0 tx-udp-segmentation off");
    }
}

/// Without an upstream resolver (the harness gives virtgate an empty resolv.conf) virtgate still
/// serves, and counts the queries it cannot forward: a virtgate of its own.
#[rstest]
fn without_an_upstream_dns_queries_are_counted(
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
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
