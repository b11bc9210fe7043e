//! IPv6 on the link with a real Linux guest: SLAAC from the gateway's router advertisements,
//! DNS configuration (RDNSS, DHCPv6), ping to the gateway's addresses, ICMPv6 errors, and the
//! guest's own ICMPv6 counters against virtgate's.

use std::collections::HashMap;
use std::time::Duration;

use guest_tests::{Offloads, Virtgate, Vm, VmOptions};

/// `/proc/net/snmp6` as name → value (one "Name value" pair per line).
fn snmp6(vm: &mut Vm) -> HashMap<String, i64> {
    vm.sh("cat /proc/net/snmp6")
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// `valid_lft` and `preferred_lft` of the guest's global address, in seconds.
fn lifetimes(vm: &mut Vm) -> (u64, u64) {
    let out = vm.sh("ip -6 addr show dev eth0 scope global");
    let num = |key: &str| -> u64 {
        let rest = out
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("{key} in {out}"));
        rest.trim_start()
            .trim_end_matches(|c: char| !c.is_ascii_digit())
            .split("sec")
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{key} in {out}: {e}"))
    };
    (num("valid_lft"), num("preferred_lft"))
}

/// A guest with no IPv6 configuration at all: SLAAC gives it `fd00::` plus its EUI-64 with the
/// advertised lifetimes (counting down), a default route via `fe80::2`, and the router
/// advertisement carries the MTU and the DNS server (RDNSS) and search domain (DNSSL).
#[test]
fn slaac_address_route_lifetimes_and_dns() {
    let vg = Virtgate::start(&[
        "--domain",
        "example.internal",
        "--ipv6-valid-lifetime",
        "7200",
        "--ipv6-preferred-lifetime",
        "3600",
    ]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let addrs = vm.sh("ip -6 addr show dev eth0");
    // 52:54:00:12:34:56 → modified EUI-64 5054:ff:fe12:3456 (RFC 4291 appendix A).
    assert!(
        addrs.contains("inet6 fd00::5054:ff:fe12:3456/64"),
        "{addrs}"
    );
    assert!(addrs.contains("fe80::5054:ff:fe12:3456/64"), "{addrs}");
    let (valid, preferred) = lifetimes(&mut vm);
    assert!((7000..=7200).contains(&valid), "valid_lft {valid}");
    assert!(
        (3400..=3600).contains(&preferred),
        "preferred_lft {preferred}"
    );
    // Between two advertisements the lifetimes count down (each one refreshes them; the first
    // few come at most 16 s apart, so look for a quiet 3 s window).
    let ras = |vg: &Virtgate| {
        vg.stats()["stack"]["ndp_tx_router_adverts"]
            .as_u64()
            .unwrap()
    };
    let mut counted_down = false;
    for _ in 0..10 {
        let before = ras(&vg);
        let (v1, p1) = lifetimes(&mut vm);
        std::thread::sleep(Duration::from_secs(3));
        let (v2, p2) = lifetimes(&mut vm);
        if ras(&vg) == before {
            assert!(
                v2 < v1 && p2 < p1,
                "no advertisement, yet {v1}/{p1} became {v2}/{p2}"
            );
            counted_down = true;
            break;
        }
    }
    assert!(counted_down, "never 3 s without a router advertisement");
    let routes = vm.sh("ip -6 route show default");
    assert!(routes.contains("default via fe80::2 dev eth0"), "{routes}");
    let ra = vm.run("ndtool ra eth0", Duration::from_secs(30)).ok();
    assert!(ra.contains("ra flags=O router_lifetime=1800"), "{ra}");
    assert!(
        ra.contains("prefix fd00::/64 flags=L,A valid=7200 preferred=3600"),
        "{ra}"
    );
    assert!(ra.contains("mtu 1500"), "{ra}");
    assert!(ra.contains("rdnss fd00::3 lifetime=1800"), "{ra}");
    assert!(ra.contains("dnssl example.internal lifetime=1800"), "{ra}");
    // Traffic from the SLAAC address shows it in virtgate's stats.
    vm.run("ping -6 -c 1 fd00::2", Duration::from_secs(20)).ok();
    let s = vg.stats();
    assert_eq!(s["guest"]["ipv6"], "fd00::5054:ff:fe12:3456", "{s:#}");
}

/// Ping to each gateway address; then the guest's ICMPv6 counters and virtgate's agree: what
/// virtgate sent is what the guest received (echo replies, router and neighbour
/// advertisements), and what the guest sent is what virtgate counted (router and neighbour
/// solicitations, MLDv2 reports, echo requests).
#[test]
fn ping6_and_the_counters_agree() {
    let vg = Virtgate::start(&[]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    for target in ["fd00::2", "fd00::3", "-I eth0 fe80::2"] {
        let out = vm
            .run(
                &format!("ping -6 -c 3 -i 0.2 {target}"),
                Duration::from_secs(30),
            )
            .ok();
        assert!(out.contains("3 packets received"), "{target}: {out}");
    }
    // The initial router advertisements keep coming for a few seconds after link up; compare
    // once both sides have settled (bounded).
    let pairs = [
        ("Icmp6InEchoReplies", "icmpv6_tx_echo_replies"),
        ("Icmp6OutEchos", "icmpv6_rx_echo_requests"),
        ("Icmp6InRouterAdvertisements", "ndp_tx_router_adverts"),
        ("Icmp6InNeighborAdvertisements", "ndp_tx_neighbor_adverts"),
        ("Icmp6OutRouterSolicits", "ndp_rx_router_solicits"),
        ("Icmp6OutNeighborSolicits", "ndp_rx_neighbor_solicits"),
        ("Icmp6OutMLDv2Reports", "mld_rx_reports"),
    ];
    let mut last = String::new();
    let mut guest_last = HashMap::new();
    for _ in 0..40 {
        let guest = snmp6(&mut vm);
        let s = vg.stats();
        let mismatches: Vec<String> = pairs
            .iter()
            .filter(|(g, v)| guest[*g] != s["stack"][*v].as_i64().unwrap())
            .map(|(g, v)| format!("{g}={} {v}={}", guest[*g], s["stack"][*v]))
            .collect();
        if mismatches.is_empty() {
            assert_eq!(guest["Icmp6InEchoReplies"], 9);
            // fd00::2 is the host's ::1, reached through a host ICMPv6 socket; fd00::3 and
            // fe80::2 are answered by the gateway itself.
            assert_eq!(s["stack"]["icmp_tx_host_echo_requests"], 3, "{s:#}");
            assert_eq!(s["stack"]["icmp_rx_host_echo_replies"], 3, "{s:#}");
            assert!(guest["Icmp6InRouterAdvertisements"] >= 1);
            assert!(guest["Icmp6OutMLDv2Reports"] >= 1);
            assert_eq!(guest["Icmp6InErrors"], 0);
            return;
        }
        last = mismatches.join(", ");
        guest_last = guest;
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut nonzero: Vec<_> = guest_last.iter().filter(|(_, v)| **v != 0).collect();
    nonzero.sort();
    panic!(
        "counters never agreed: {last}\nguest: {nonzero:?}\nvirtgate: {:#}",
        vg.stats()["stack"]
    );
}

/// ICMPv6 errors the gateway generates, as the guest's kernel counts them: Parameter Problem
/// for an unknown next header (pointer at the header's next-header field), Time Exceeded for a
/// packet whose hop limit runs out at the gateway, Destination Unreachable for a destination the
/// gateway has no route to.
#[test]
fn icmpv6_errors_reach_the_guest() {
    let vg = Virtgate::start(&[]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let before = snmp6(&mut vm);
    vm.run("ndtool proto 253 fd00::2", Duration::from_secs(10))
        .ok();
    vm.run("ndtool proto 253 2001:db8::1 1", Duration::from_secs(10))
        .ok();
    vm.run("ndtool proto 253 2001:db8::1", Duration::from_secs(10))
        .ok();
    let mut after = snmp6(&mut vm);
    for _ in 0..20 {
        if after["Icmp6InDestUnreachs"] > before["Icmp6InDestUnreachs"] {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        after = snmp6(&mut vm);
    }
    let delta = |k: &str| after[k] - before[k];
    assert_eq!(delta("Icmp6InParmProblems"), 1);
    assert_eq!(delta("Icmp6InTimeExcds"), 1);
    assert_eq!(delta("Icmp6InDestUnreachs"), 1);
    let s = vg.stats();
    assert_eq!(s["stack"]["drop_ipv6_unknown_next_header"], 1, "{s:#}");
    assert_eq!(s["stack"]["drop_ipv6_hop_limit"], 1, "{s:#}");
    assert_eq!(s["stack"]["icmpv6_tx_errors"], 3, "{s:#}");
}

/// Stateless DHCPv6 (the default): an Information-Request is answered with the DNS server and
/// the search domain.
#[test]
fn stateless_dhcpv6_gives_dns() {
    let vg = Virtgate::start(&["--domain", "example.internal"]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let out = vm
        .run("ndtool dhcp6 eth0 info", Duration::from_secs(30))
        .ok();
    assert!(out.contains("dns fd00::3"), "{out}");
    assert!(out.contains("domain example.internal"), "{out}");
    // A stateful request gets no address in stateless mode.
    let out = vm.run("ndtool dhcp6 eth0 stateful", Duration::from_secs(30));
    assert_eq!(out.status, 2, "{}", out.stdout);
}

/// Stateful DHCPv6 (`--dhcpv6 stateful`): the router advertisement says "managed", and a
/// Solicit/Request exchange gets an address from the pool, which the guest can use: it is
/// added, and the gateway answers pings from it.
#[test]
fn stateful_dhcpv6_assigns_an_address_from_the_pool() {
    let vg = Virtgate::start(&["--dhcpv6", "stateful", "--dhcpv6-start", "fd00::1:0"]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let ra = vm.run("ndtool ra eth0", Duration::from_secs(30)).ok();
    assert!(ra.contains("ra flags=M,O"), "{ra}");
    let out = vm
        .run("ndtool dhcp6 eth0 stateful", Duration::from_secs(30))
        .ok();
    assert!(
        out.contains("address fd00::1:0 preferred=3600 valid=7200"),
        "{out}"
    );
    assert!(out.contains("dns fd00::3"), "{out}");
    vm.sh("ip -6 addr add fd00::1:0/128 dev eth0");
    vm.sh("i=0; while ip -6 addr show dev eth0 | grep -q tentative && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done");
    let ping = vm
        .run("ping -6 -c 2 -I fd00::1:0 fd00::2", Duration::from_secs(30))
        .ok();
    assert!(ping.contains("2 packets received"), "{ping}");
    let s = vg.stats();
    assert_eq!(s["guest"]["dhcpv6_leases"][0], "fd00::1:0", "{s:#}");
    assert_eq!(s["stack"]["dhcpv6_addresses_bound"], 1, "{s:#}");
}

/// Packets larger than the link cross in fragments both ways: the guest's 3000-byte pings are
/// fragmented by its kernel and reassembled by virtgate, the replies fragmented by virtgate and
/// reassembled by the guest (its `Ip6ReasmOKs`) — to the gateway itself and through the host.
#[test]
fn big_pings_cross_in_fragments_both_ways() {
    let vg = Virtgate::start(&[]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let before = snmp6(&mut vm);
    for target in ["fd00::3", "fd00::2"] {
        let out = vm
            .run(
                &format!("ping -6 -c 2 -s 3000 {target}"),
                Duration::from_secs(30),
            )
            .ok();
        assert!(out.contains("2 packets received"), "{target}: {out}");
    }
    let after = snmp6(&mut vm);
    let delta = |k: &str| after[k] - before[k];
    assert_eq!(delta("Ip6ReasmOKs"), 4, "the guest reassembled our replies");
    assert_eq!(delta("Ip6FragOKs"), 4, "the guest fragmented its requests");
    let s = vg.stats();
    assert_eq!(s["stack"]["ipv6_reassembled"], 4, "{s:#}");
    assert_eq!(s["stack"]["ipv6_tx_fragments"], 12, "{s:#}");
    assert_eq!(s["stack"]["drop_ipv6_fragment"], 0, "{s:#}");
}

/// Issue 11, defect 4: bulk TCP from the guest to a routed IPv6 destination (anything but the
/// gateway's own addresses), with the guest's TSO6 super-frames, gets no Packet Too Big: each
/// super-frame is measured by the segments it stands for. virtgate runs in a network namespace of
/// the test's own, where `fd99::1/128` sits on the loopback, so nothing leaves it.
#[rstest::rstest]
fn bulk_upload_to_a_routed_ipv6_destination_is_never_too_big(
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    use std::io::{Read, Write};
    let vg = Virtgate::start_isolated(&offloads.args(&[]));
    vg.netns_run(&["ip", "link", "set", "lo", "up"]);
    vg.netns_run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "fd99::1/128",
        "dev",
        "lo",
        "nodad",
    ]);
    let (tx, rx) = std::sync::mpsc::channel();
    let size = 8usize << 20;
    let server = vg.in_netns(move || {
        let l = std::net::TcpListener::bind("[fd99::1]:0").unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut got = vec![0u8; size];
        s.read_exact(&mut got).unwrap();
        let _ = writeln!(s, "{}", guest_tests::transfer::md5_of(&got));
    });
    let port = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    vm.sh(&format!(
        "dd if=/dev/urandom of=/tmp/up bs=1M count={} 2>/dev/null",
        size >> 20
    ));
    let local = vm.sh("md5sum /tmp/up");
    let before = snmp6(&mut vm);
    let remote = vm
        .run(
            &format!("nc fd99::1 {port} </tmp/up"),
            Duration::from_secs(180),
        )
        .ok();
    server.join().unwrap();
    assert_eq!(
        remote.split_whitespace().next(),
        local.split_whitespace().next(),
        "the routed destination received other bytes than the guest sent"
    );
    let after = snmp6(&mut vm);
    let too_big = |m: &HashMap<String, i64>| m.get("Icmp6InPktTooBigs").copied().unwrap_or(0);
    assert_eq!(
        too_big(&after) - too_big(&before),
        0,
        "the guest got Packet Too Big"
    );
    let s = vg.stats();
    assert_eq!(s["stack"]["drop_ipv6_too_big"], 0, "{s:#}");
    if offloads == Offloads::All {
        // The guest did send super-frames: the case the defect was about.
        assert!(s["device"]["tx_gso_frames"].as_u64().unwrap() > 0, "{s:#}");
    }
    offloads.check(&mut vm);
}
