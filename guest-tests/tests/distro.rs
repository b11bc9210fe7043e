//! Distribution guests with their own network stacks: a Debian 12 guest with systemd as init
//! (scripts/distro-image.sh, from Debian's archive) configured by systemd-networkd with
//! systemd-resolved, by ifupdown with isc-dhcp-client (dhclient and dhclient -6), or by dhcpcd,
//! each told nothing but "DHCP on eth0". One boot per stack: the guest must come up with the
//! addresses, routes, DNS servers and search domain virtgate hands out, resolve a name through
//! virtgate's DNS (answered by a resolver this test runs on the host loopback), fetch a page from
//! the host over both families, and renew its short lease without losing connectivity.
//!
//! Expected values come from virtgate's side: its documented addresses (docs/gateway.md), the
//! options it was started with and the leases it reports.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use guest_tests::transfer::serve_on;
use guest_tests::{Family, GuestImage, Virtgate, Vm, VmOptions};
use rstest::rstest;

/// What the host's resolver knows, and the search domain virtgate announces (DHCP option 15,
/// DNSSL).
const NAME: &str = "www.virtgate.test";
const NAME_ADDR: [u8; 4] = [192, 0, 2, 80];
const DOMAIN: &str = "virtgate.test";
/// virtgate's shortest lease: every stack renews it within the test (at half of it).
const LEASE_S: u64 = 60;
/// The first address of virtgate's stateful DHCPv6 pool (host 0x100 of fd00::/64).
const DHCPV6_ADDRESS: &str = "fd00::100";

/// Polls `cmd` in the guest until `done` holds for its output, for at most `timeout`.
fn wait_guest(vm: &mut Vm, cmd: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = vm.sh(cmd);
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?}, `{cmd}` still says:\n{out}\n{}",
            vm.sh("journalctl -b --no-pager | tail -40")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A page the host serves on the family's loopback for `conns` connections; returns its port.
fn host_page(family: Family, conns: usize) -> u16 {
    serve_on(family, conns, |mut s| {
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom host");
    })
}

/// Fetches the host's page through the gateway address of the family.
fn fetch(vm: &mut Vm, family: Family, port: u16) {
    let out = vm.run(
        &format!("wget -q -T 10 -O - http://{}:{port}/", family.url_host()),
        Duration::from_secs(60),
    );
    assert_eq!(
        (out.status, out.stdout.as_str()),
        (0, "from host"),
        "{family:?}"
    );
}

/// Where each stack keeps the DNS configuration virtgate handed out, and what it must say there:
/// (command, texts it must all contain). Each as the stack does it by default:
/// - networkd gives resolved both DNS servers per link; the DHCP domain stays in its lease
///   (networkd's `UseDomains=` is off by default);
/// - dhclient writes /etc/resolv.conf from whichever lease came last (its script replaces the
///   file for each family), so both leases are checked in its lease files;
/// - dhcpcd merges both families and the RA's RDNSS into /etc/resolv.conf.
fn resolver_expectations(stack: &str) -> (&'static str, Vec<String>) {
    match stack {
        "networkd" => (
            "resolvectl dns eth0; cat /run/systemd/netif/leases/*",
            vec![
                "10.0.2.3".into(),
                "fd00::3".into(),
                format!("DOMAINNAME={DOMAIN}"),
            ],
        ),
        "ifupdown" => (
            "cat /etc/resolv.conf /var/lib/dhcp/dhclient.eth0.leases /var/lib/dhcp/dhclient6.eth0.leases",
            vec![
                format!("search {DOMAIN}"),
                "option domain-name-servers 10.0.2.3;".into(),
                format!("option domain-name \"{DOMAIN}\";"),
                "option dhcp6.name-servers fd00::3;".into(),
            ],
        ),
        // dhcpcd writes the DHCP domain as `domain`, which glibc searches as well.
        _ => (
            "cat /etc/resolv.conf",
            vec![
                format!("domain {DOMAIN}"),
                "nameserver 10.0.2.3".into(),
                "nameserver fd00::3".into(),
            ],
        ),
    }
}

/// What the stack logged and keeps, for a failure's message.
fn diagnostics(vm: &mut Vm) -> String {
    vm.sh(
        "ls -lR /run/dhcpcd /var/lib/dhcp /var/lib/dhcpcd 2>&1; ls -l /etc/resolv.conf; \
         cat /var/lib/dhcp/*.leases 2>&1 | tail -40; \
         journalctl -b --no-pager -u dhcpcd -u networking -u systemd-networkd | tail -40; \
         journalctl -b --no-pager | grep -i -e hook -e resolv -e denied | tail",
    )
}

#[rstest]
#[case::systemd_networkd("networkd")]
#[case::ifupdown_dhclient("ifupdown")]
#[case::dhcpcd("dhcpcd")]
fn a_debian_guest_configures_itself_with_its_own_network_stack(#[case] stack: &str) {
    let dns = guest_tests::dns::serve(NAME, NAME_ADDR);
    let (web4, web6) = (host_page(Family::V4, 2), host_page(Family::V6, 2));
    let upstream = format!("127.0.0.1:{dns}");
    let lease = LEASE_S.to_string();
    let vg = Virtgate::start(&[
        "--dns-upstream",
        &upstream,
        "--lease-time",
        &lease,
        "--domain",
        DOMAIN,
        "--dhcpv6",
        "stateful",
    ]);
    let opts = VmOptions {
        image: Some(GuestImage::distro(stack)),
        memory_mib: 1024,
        boot_timeout: Duration::from_secs(240),
        ..VmOptions::default()
    };
    let mut vm = Vm::boot(&vg.socket, &opts);
    // The stack named on the command line was started (and nothing failed starting it).
    wait_guest(
        &mut vm,
        "systemctl is-active virtgate-net.service || true",
        Duration::from_secs(90),
        |o| o.trim() == "active",
    );
    let failed = vm.sh("systemctl --failed --no-legend --plain");
    assert!(failed.trim().is_empty(), "{stack}: failed units:\n{failed}");

    // Addresses: the DHCPv4 lease virtgate reports, an address of the RA's prefix, and the first
    // of the stateful DHCPv6 pool.
    let v4 = wait_guest(
        &mut vm,
        "ip -4 -o addr show dev eth0",
        Duration::from_secs(90),
        |o| o.contains("inet 10.0.2."),
    );
    // The guest's address as virtgate saw it bind its lease.
    let lease4 = vg.stats()["guest"]["ipv4"]
        .as_str()
        .unwrap_or_else(|| panic!("virtgate reports no lease: {:#}", vg.stats()))
        .to_string();
    assert!(v4.contains(&format!("inet {lease4}/24")), "{v4}");
    let v6 = wait_guest(
        &mut vm,
        "ip -6 -o addr show dev eth0 scope global",
        Duration::from_secs(90),
        |o| {
            o.contains(&format!("inet6 {DHCPV6_ADDRESS}/"))
                && o.lines().filter(|l| l.contains("inet6 fd00::")).count() >= 2
                && !o.contains("tentative")
        },
    );
    assert!(!v6.contains("dadfailed"), "{v6}");
    let s = vg.stats();
    assert_eq!(s["guest"]["dhcpv6_leases"][0], DHCPV6_ADDRESS, "{s:#}");

    // Routes: the default routes through the gateway, by DHCP and by RA.
    let routes4 = wait_guest(
        &mut vm,
        "ip -4 route show default",
        Duration::from_secs(30),
        |o| o.contains("via 10.0.2.2"),
    );
    assert!(routes4.contains("dev eth0"), "{routes4}");
    wait_guest(
        &mut vm,
        "ip -6 route show default",
        Duration::from_secs(30),
        |o| o.contains("via fe80::2"),
    );

    // DNS: both DNS addresses and the search domain, where the stack keeps them.
    let (cmd, wanted) = resolver_expectations(stack);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let config = vm.sh(&format!("{cmd} 2>&1"));
        let missing: Vec<_> = wanted
            .iter()
            .filter(|w| !config.contains(w.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{stack}: {missing:?} not in\n{config}\n{}",
            diagnostics(&mut vm)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A name through the stack's resolver, virtgate's DNS address and the host's resolver; the
    // short name through the search domain.
    let queries = vg.counter("stack", "udp_tx_host_datagrams");
    // The short name needs the search domain in resolv.conf (not networkd's, see above).
    let names: &[&str] = if stack == "networkd" {
        &[NAME]
    } else {
        &[NAME, "www"]
    };
    for name in names {
        let out = vm.run(&format!("getent hosts {name}"), Duration::from_secs(30));
        assert!(
            out.stdout.starts_with("192.0.2.80 "),
            "{stack} {name}: {}",
            out.stdout
        );
    }
    assert!(
        vg.counter("stack", "udp_tx_host_datagrams") > queries,
        "no query went upstream"
    );

    // HTTP from the host over both families.
    fetch(&mut vm, Family::V4, web4);
    fetch(&mut vm, Family::V6, web6);

    // The lease is renewed (a DHCPREQUEST at half its time) and the address stays.
    let requests = vg.counter("stack", "dhcp_rx_requests");
    let deadline = Instant::now() + Duration::from_secs(3 * LEASE_S);
    while vg.counter("stack", "dhcp_rx_requests") == requests {
        assert!(
            Instant::now() < deadline,
            "{stack} did not renew its {LEASE_S} s lease: {}",
            vm.sh("journalctl -b --no-pager | tail -30")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = vm.sh("ip -4 -o addr show dev eth0");
    assert!(after.contains(&format!("inet {lease4}/24")), "{after}");
    assert_eq!(vg.stats()["guest"]["ipv4"], lease4.as_str());
    fetch(&mut vm, Family::V4, web4);
    fetch(&mut vm, Family::V6, web6);
}
