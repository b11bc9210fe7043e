//! The kernel-path table (docs/kernel-paths.md), row by row: virtgate sends crafted frames with
//! `virtgate ctl probe` and the guest's own counters prove which path of its kernel ran.
//!
//! One booted dual-stack guest serves every scenario (a guest boot under TCG costs more than all
//! the scenarios together): probes change nothing in virtgate's configuration, and each scenario
//! reads the counters it asserts before and after, so scenarios do not depend on each other.
//! Every scenario runs even when an earlier one fails; the test fails at the end naming each
//! failed scenario. `VIRTGATE_SCENARIOS=name,name` runs only those.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use guest_tests::{Counters, Virtgate, Vm, VmOptions};

/// Waits for counters this long: a probe's effects show within milliseconds, a reassembly
/// timeout within the guest's `ipfrag_time`.
const SETTLE: Duration = Duration::from_secs(15);
/// The guest's fragment reassembly timeout (both families), lowered for the expiry scenarios.
const FRAG_TIMEOUT_S: u32 = 2;

/// The booted guest and its virtgate.
struct Ex {
    vg: Virtgate,
    vm: Vm,
}

impl Ex {
    /// Sends a probe and waits until each of `want` has grown by at least its amount; returns the
    /// counters before and after.
    fn expect(
        &mut self,
        probe: &str,
        params: &[(&str, &str)],
        want: &[(&str, i64)],
    ) -> (Counters, Counters) {
        let before = self.vm.counters();
        self.vg.probe(probe, params);
        let after = self.vm.wait_counters(&before, want, SETTLE);
        (before, after)
    }

    /// A counter of virtgate's stack.
    fn ours(&self, name: &str) -> i64 {
        self.vg.counter("stack", name)
    }

    /// Polls virtgate's stack counter `name` until it reaches `at_least`.
    fn wait_ours(&self, name: &str, at_least: i64) {
        let v = self.vg.counter_at_least("stack", name, at_least, SETTLE);
        assert!(v >= at_least, "virtgate's {name} is {v}, wanted {at_least}");
    }

    /// Sends probes and returns the drop reasons the guest's kernel recorded meanwhile, once
    /// `until` (a drop reason) was seen.
    fn drops(&mut self, probes: &[(&str, &[(&str, &str)])], until: &str) -> Vec<String> {
        self.vm.trace_drops_start();
        for (p, params) in probes {
            self.vg.probe(p, params);
        }
        let deadline = std::time::Instant::now() + SETTLE;
        let mut seen = Vec::new();
        loop {
            // The tracer is restarted for each look; reasons seen so far are kept.
            let reasons = self.vm.trace_drops_stop();
            seen.extend(reasons.into_keys());
            if seen.iter().any(|r| r == until) || std::time::Instant::now() >= deadline {
                return seen;
            }
            self.vm.trace_drops_start();
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn guest_ipv6(&mut self) -> String {
        let out = self.vm.sh("ip -6 addr show dev eth0 scope global");
        out.split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next())
            .unwrap_or_else(|| panic!("no global IPv6 address: {out}"))
            .to_string()
    }
}

type Scenario = fn(&mut Ex);

/// Every scenario, by the name docs/kernel-paths.md uses.
const SCENARIOS: &[(&str, Scenario)] = &[
    ("ipv4_local_delivery", ipv4_local_delivery),
    ("ipv4_bad_version_and_ihl", ipv4_bad_version_and_ihl),
    ("ipv4_bad_header_checksum", ipv4_bad_header_checksum),
    ("ipv4_truncated_packet", ipv4_truncated_packet),
    ("ipv4_padded_frame_trimmed", ipv4_padded_frame_trimmed),
    ("ipv4_ecn_marks", ipv4_ecn_marks),
    ("ipv4_options", ipv4_options),
    ("ipv4_foreign_destination", ipv4_foreign_destination),
    ("ipv4_foreign_mac", ipv4_foreign_mac),
    (
        "ipv4_ttl_one_and_zero_delivered",
        ipv4_ttl_one_and_zero_delivered,
    ),
    ("ipv4_multicast_receive", ipv4_multicast_receive),
    ("ipv4_igmp_queries", ipv4_igmp_queries),
    ("ipv4_guest_transmit", ipv4_guest_transmit),
    ("ipv4_guest_fragments", ipv4_guest_fragments),
    ("ipv4_defrag_orders", ipv4_defrag_orders),
    ("ipv4_defrag_overlap", ipv4_defrag_overlap),
    ("ipv4_defrag_expire", ipv4_defrag_expire),
    ("ipv4_defrag_oversize", ipv4_defrag_oversize),
    ("ipv4_icmp_errors_received", ipv4_icmp_errors_received),
    ("ipv4_pmtu_frag_needed", ipv4_pmtu_frag_needed),
    ("ipv4_redirect", ipv4_redirect),
    ("ipv4_ttl_expires_at_gateway", ipv4_ttl_expires_at_gateway),
    ("ipv4_source_policy", ipv4_source_policy),
    ("ipv6_local_delivery", ipv6_local_delivery),
    ("ipv6_header_checks", ipv6_header_checks),
    ("ipv6_truncated_packet", ipv6_truncated_packet),
    ("ipv6_extension_chain", ipv6_extension_chain),
    ("ipv6_hbh_option_actions", ipv6_hbh_option_actions),
    ("ipv6_hbh_not_first", ipv6_hbh_not_first),
    ("ipv6_routing_header", ipv6_routing_header),
    ("ipv6_unknown_next_header", ipv6_unknown_next_header),
    ("ipv6_option_limits", ipv6_option_limits),
    ("ipv6_defrag_orders", ipv6_defrag_orders),
    ("ipv6_defrag_overlap", ipv6_defrag_overlap),
    ("ipv6_defrag_expire", ipv6_defrag_expire),
    ("ipv6_fragment_unaligned", ipv6_fragment_unaligned),
    ("ipv6_fragment_oversize", ipv6_fragment_oversize),
    ("ipv6_icmp_errors_received", ipv6_icmp_errors_received),
    ("ipv6_packet_too_big", ipv6_packet_too_big),
    ("ipv6_hop_limit_at_gateway", ipv6_hop_limit_at_gateway),
    ("ipv6_guest_fragments", ipv6_guest_fragments),
    ("ipv6_neighbor_solicitation", ipv6_neighbor_solicitation),
    ("ipv6_slaac", ipv6_slaac),
    ("ipv6_ra_hop_limit_ignored", ipv6_ra_hop_limit_ignored),
    ("ipv6_ra_dns_options", ipv6_ra_dns_options),
    ("ipv6_ra_router_lifetime", ipv6_ra_router_lifetime),
    ("ipv6_ra_prefix_lifetimes", ipv6_ra_prefix_lifetimes),
    ("ipv6_dad_failure", ipv6_dad_failure),
    ("ipv6_redirect", ipv6_redirect),
    // After the redirect: once an RA's MTU option has set the default route's MTU metric, Linux
    // (6.1) refuses redirect exceptions on that route (rt6_insert_exception wants a smaller MTU).
    ("ipv6_ra_mtu_option", ipv6_ra_mtu_option),
    ("ipv6_multicast_receive", ipv6_multicast_receive),
    ("ipv6_ssm_source_filter", ipv6_ssm_source_filter),
    ("ipv6_mld_queries", ipv6_mld_queries),
    ("multicast_querier", multicast_querier),
    ("ipv6_source_policy", ipv6_source_policy),
    ("path_mtu_emulation", path_mtu_emulation),
    ("tcp_bad_checksum", tcp_bad_checksum),
    ("tcp_reset_to_a_closed_port", tcp_reset_to_a_closed_port),
    ("tcp_flow_probes", tcp_flow_probes),
    ("tcp_options_at_run_time", tcp_options_at_run_time),
    ("nic_runt_frame", nic_runt_frame),
    ("nic_oversize_frame", nic_oversize_frame),
    ("nic_unknown_ethertype", nic_unknown_ethertype),
    ("nic_vlan_tagged", nic_vlan_tagged),
    ("nic_promiscuous_capture", nic_promiscuous_capture),
    ("ipv4_forwarding", ipv4_forwarding),
    ("ipv6_forwarding", ipv6_forwarding),
    ("routes_via_the_guest", routes_via_the_guest),
    ("trace_ipv4_receive", trace_ipv4_receive),
    ("trace_ipv4_defrag", trace_ipv4_defrag),
    ("trace_ipv6_receive", trace_ipv6_receive),
    ("trace_ipv6_output", trace_ipv6_output),
];

#[test]
fn kernel_paths() {
    // The inner networks of the forwarding scenarios are routed via the guest.
    let vg = Virtgate::start(&[
        "--route-via-guest",
        "192.168.77.0/24",
        "--route-via-guest",
        "fd77:1::/64",
    ]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    vm.prepare_for_probes(FRAG_TIMEOUT_S);
    let mut ex = Ex { vg, vm };
    guest_tests::run_scenarios(SCENARIOS, &mut ex, |ex| ex.vm.is_running());
}

/// Every row of docs/kernel-paths.md names scenarios of this file or tests of the other guest
/// test files that exist, or says plainly that it is not done yet.
#[test]
fn the_kernel_path_table_names_existing_tests() {
    let root = guest_tests::workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/kernel-paths.md")).unwrap();
    let mut rows = 0;
    let table_rows = doc
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| path ") && !l.starts_with("| ---"));
    for line in table_rows {
        rows += 1;
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | path | virtgate sends | guest test | counters |
        let tests = cells.get(3).copied().unwrap_or("");
        let named: Vec<&str> = tests
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.contains("::"))
            .collect();
        assert!(
            !named.is_empty() || tests.starts_with("not yet"),
            "a row names no test: {line}"
        );
        for t in named {
            let (file, name) = t.split_once("::").unwrap();
            if file == "kernel_paths" {
                assert!(
                    SCENARIOS.iter().any(|(s, _)| *s == name),
                    "{t}: no such scenario"
                );
            } else {
                let src =
                    std::fs::read_to_string(root.join(format!("guest-tests/tests/{file}.rs")))
                        .unwrap_or_else(|e| panic!("{t}: {e}"));
                assert!(src.contains(&format!("fn {name}(")), "{t}: no such test");
            }
        }
    }
    assert!(rows >= 58, "the table has {rows} rows");
    // And every built-in probe is sent by some scenario here.
    let probes = std::fs::read_to_string(root.join("netstack/src/probe.rs")).unwrap();
    let this = std::fs::read_to_string(root.join("guest-tests/tests/kernel_paths.rs")).unwrap();
    let names: Vec<&str> = probes
        .split("name: \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(names.len() >= 50, "{names:?}");
    for n in names {
        assert!(
            this.contains(&format!("\"{n}\"")),
            "probe {n} is sent by no scenario"
        );
    }
}

// ---- IPv4 ----

fn ipv4_local_delivery(ex: &mut Ex) {
    let replies = ex.ours("icmp_rx_echo_replies");
    let (b, a) = ex.expect(
        "ipv4-echo",
        &[("count", "3")],
        &[("IcmpInEchos", 3), ("IcmpOutEchoReps", 3)],
    );
    assert!(a.delta(&b, "IpInReceives") >= 3 && a.delta(&b, "IpInDelivers") >= 3);
    ex.wait_ours("icmp_rx_echo_replies", replies + 3);
}

fn ipv4_bad_version_and_ihl(ex: &mut Ex) {
    let before = ex.vm.counters();
    ex.vg.probe("ipv4-bad-version", &[]);
    ex.vg.probe("ipv4-bad-ihl", &[]);
    let after = ex
        .vm
        .wait_counters(&before, &[("IpInHdrErrors", 2)], SETTLE);
    assert_eq!(after.delta(&before, "IpInHdrErrors"), 2);
    assert_eq!(after.delta(&before, "IcmpInEchos"), 0);
}

fn ipv4_bad_header_checksum(ex: &mut Ex) {
    let (b, a) = ex.expect(
        "ipv4-bad-checksum",
        &[],
        &[("IpExtInCsumErrors", 1), ("IpInHdrErrors", 1)],
    );
    assert_eq!(a.delta(&b, "IcmpInEchos"), 0);
}

fn ipv4_truncated_packet(ex: &mut Ex) {
    let (b, a) = ex.expect("ipv4-truncated", &[], &[("IpExtInTruncatedPkts", 1)]);
    assert_eq!(a.delta(&b, "IcmpInEchos"), 0);
}

fn ipv4_padded_frame_trimmed(ex: &mut Ex) {
    let replies = ex.ours("icmp_rx_echo_replies");
    let (b, a) = ex.expect("ipv4-padded", &[], &[("IcmpInEchos", 1)]);
    // Trimmed: had the padding been taken as ICMP data, its checksum would have failed.
    assert_eq!(a.delta(&b, "IcmpInCsumErrors"), 0);
    assert_eq!(a.delta(&b, "IcmpInErrors"), 0);
    ex.wait_ours("icmp_rx_echo_replies", replies + 1);
}

fn ipv4_ecn_marks(ex: &mut Ex) {
    for (ecn, counter) in [
        ("2", "IpExtInECT0Pkts"),
        ("1", "IpExtInECT1Pkts"),
        ("3", "IpExtInCEPkts"),
    ] {
        let (b, a) = ex.expect("ipv4-echo", &[("ecn", ecn)], &[(counter, 1)]);
        assert_eq!(a.delta(&b, counter), 1, "{counter}");
    }
}

fn ipv4_options(ex: &mut Ex) {
    let replies = ex.ours("icmp_rx_echo_replies");
    ex.expect("ipv4-option-rr", &[], &[("IcmpOutEchoReps", 1)]);
    ex.expect("ipv4-option-ts", &[], &[("IcmpOutEchoReps", 1)]);
    ex.wait_ours("icmp_rx_echo_replies", replies + 2);
    let problems = ex.ours("icmp_rx_param_problems");
    let (b, a) = ex.expect(
        "ipv4-option-bad",
        &[],
        &[("IpInHdrErrors", 1), ("IcmpOutParmProbs", 1)],
    );
    assert_eq!(a.delta(&b, "IcmpInEchos"), 0);
    ex.wait_ours("icmp_rx_param_problems", problems + 1);
}

fn ipv4_foreign_destination(ex: &mut Ex) {
    let (b, a) = ex.expect("ipv4-foreign-dst", &[], &[("IpInAddrErrors", 1)]);
    assert_eq!(a.delta(&b, "IcmpInEchos"), 0);
}

fn ipv4_foreign_mac(ex: &mut Ex) {
    let before = ex.vm.counters();
    let reasons = ex.drops(&[("eth-foreign-mac", &[])], "OTHERHOST");
    assert!(reasons.iter().any(|r| r == "OTHERHOST"), "{reasons:?}");
    let after = ex.vm.counters();
    assert_eq!(after.delta(&before, "IcmpInEchos"), 0);
}

fn ipv4_ttl_one_and_zero_delivered(ex: &mut Ex) {
    // TTL matters to forwarding only: a packet for the host is delivered whatever its TTL.
    ex.expect("ipv4-echo", &[("ttl", "1")], &[("IcmpInEchos", 1)]);
    ex.expect("ipv4-echo", &[("ttl", "0")], &[("IcmpInEchos", 1)]);
}

/// Starts `mcast listen` in the guest's background and waits until it has joined.
fn listen(ex: &mut Ex, args: &str, log: &str) {
    ex.vm.sh(&format!("mcast listen {args} > {log} 2>&1 &"));
    ex.vm.sh(&format!(
        "i=0; until grep -q ready {log} || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; grep ready {log}"
    ));
}

/// Waits for `mcast listen` to finish and returns how many datagrams it received.
fn listened(ex: &mut Ex, log: &str) -> usize {
    let out = ex.vm.run(
        &format!("i=0; until grep -q received {log} || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done; cat {log}"),
        Duration::from_secs(60),
    );
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("received "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("mcast did not finish: {}", out.stdout))
}

fn ipv4_multicast_receive(ex: &mut Ex) {
    listen(ex, "239.1.2.3 5000 4", "/tmp/m4.log");
    let (b, a) = ex.expect(
        "mcast-udp",
        &[("group", "239.1.2.3"), ("count", "2")],
        &[("IpExtInMcastPkts", 2), ("UdpInDatagrams", 2)],
    );
    assert_eq!(a.delta(&b, "UdpInDatagrams"), 2);
    // A group nobody joined: received by the NIC, not delivered.
    let before = ex.vm.counters();
    ex.vg.probe("mcast-udp", &[("group", "239.9.9.9")]);
    assert_eq!(listened(ex, "/tmp/m4.log"), 2);
    let after = ex.vm.counters();
    // (IpExtInMcastPkts may still move: the querier's IGMP queries are multicast too.)
    assert_eq!(after.delta(&before, "UdpInDatagrams"), 0);
    assert!(after.delta(&before, "IpInReceives") >= 1);
}

fn ipv4_igmp_queries(ex: &mut Ex) {
    listen(ex, "239.4.4.4 5000 8", "/tmp/igmp.log");
    // General queries of both versions, then a group-specific one for the joined group.
    for params in [
        &[("version", "3"), ("max-resp", "5")][..],
        &[("version", "3"), ("max-resp", "5"), ("group", "239.4.4.4")][..],
        &[("version", "2"), ("max-resp", "5")][..],
    ] {
        let reports = ex.ours("igmp_rx_reports");
        ex.vg.probe("igmp-query", params);
        ex.wait_ours("igmp_rx_reports", reports + 1);
    }
    listened(ex, "/tmp/igmp.log");
}

fn ipv4_guest_transmit(ex: &mut Ex) {
    let requests = ex.ours("icmp_rx_echo_requests");
    let before = ex.vm.counters();
    ex.vm
        .run("ping -c 2 -W 5 10.0.2.3", Duration::from_secs(30))
        .ok();
    let after = ex.vm.counters();
    assert!(after.delta(&before, "IpOutRequests") >= 2);
    assert_eq!(after.delta(&before, "IcmpOutEchos"), 2);
    assert_eq!(ex.ours("icmp_rx_echo_requests") - requests, 2);
}

fn ipv4_guest_fragments(ex: &mut Ex) {
    let before = ex.vm.counters();
    ex.vm
        .run("ping -c 1 -W 5 -s 4000 10.0.2.3", Duration::from_secs(30))
        .ok();
    let after = ex.vm.counters();
    assert_eq!(after.delta(&before, "IpFragOKs"), 1);
    assert_eq!(after.delta(&before, "IpFragCreates"), 3);
    // virtgate's reply came back in fragments, which the guest reassembled.
    assert_eq!(after.delta(&before, "IpReasmOKs"), 1);
}

fn ipv4_defrag_orders(ex: &mut Ex) {
    for probe in [
        "ipv4-frag",
        "ipv4-frag-reversed",
        "ipv4-frag-random",
        "ipv4-frag-duplicate",
        "ipv4-frag-tiny",
    ] {
        let replies = ex.ours("icmp_rx_echo_replies");
        let (b, a) = ex.expect(
            probe,
            &[],
            &[
                ("IpReasmOKs", 1),
                ("IcmpInEchos", 1),
                ("IcmpOutEchoReps", 1),
            ],
        );
        assert_eq!(a.delta(&b, "IpReasmFails"), 0, "{probe}");
        assert!(a.delta(&b, "IpReasmReqds") >= 2, "{probe}");
        // The 3000-byte reply leaves in fragments; virtgate reassembles and counts it.
        ex.wait_ours("icmp_rx_echo_replies", replies + 1);
    }
}

fn ipv4_defrag_overlap(ex: &mut Ex) {
    let (b, a) = ex.expect(
        "ipv4-frag-overlap",
        &[],
        &[("IpExtReasmOverlaps", 1), ("IpReasmFails", 1)],
    );
    assert_eq!(a.delta(&b, "IcmpInEchos"), 0);
}

fn ipv4_defrag_expire(ex: &mut Ex) {
    for probe in ["ipv4-frag-first-only", "ipv4-frag-missing"] {
        let exceeded = ex.ours("icmp_rx_time_exceeded");
        let (b, a) = ex.expect(
            probe,
            &[],
            &[("IpReasmTimeout", 1), ("IcmpOutTimeExcds", 1)],
        );
        assert_eq!(a.delta(&b, "IcmpInEchos"), 0, "{probe}");
        // ICMP 11/1 quoting the first fragment reaches the gateway.
        ex.wait_ours("icmp_rx_time_exceeded", exceeded + 1);
    }
}

fn ipv4_defrag_oversize(ex: &mut Ex) {
    let (b, a) = ex.expect("ipv4-frag-oversize", &[], &[("IpReasmFails", 1)]);
    assert_eq!(a.delta(&b, "IpReasmOKs"), 0);
}

fn ipv4_icmp_errors_received(ex: &mut Ex) {
    // Every code of RFC 792 and RFC 1812 §5.2.7.1 (4 with a next-hop MTU).
    for code in 0..=15 {
        let code = code.to_string();
        ex.expect(
            "icmpv4-unreachable",
            &[("code", &code)],
            &[("IcmpInDestUnreachs", 1)],
        );
    }
    ex.expect("icmpv4-time-exceeded", &[], &[("IcmpInTimeExcds", 1)]);
    ex.expect("icmpv4-param-problem", &[], &[("IcmpInParmProbs", 1)]);
}

fn ipv4_pmtu_frag_needed(ex: &mut Ex) {
    ex.expect(
        "icmpv4-frag-needed",
        &[("mtu", "1400"), ("peer", "198.51.100.7")],
        &[("IcmpInDestUnreachs", 1)],
    );
    // The route's MTU as a socket towards the peer sees it (busybox's `ip route get` does not
    // print the cached exception).
    assert_eq!(ex.vm.sh("udptool mtu 198.51.100.7").trim(), "mtu 1400");
    assert_eq!(ex.vm.sh("udptool mtu 198.51.100.77").trim(), "mtu 1500");
}

fn ipv4_redirect(ex: &mut Ex) {
    // The new first hop must be a neighbour the guest has resolved (Linux only follows a
    // redirect to a valid neighbour): 10.0.2.3, virtgate's DNS address, after a ping.
    ex.vm
        .run("ping -c 1 -W 5 10.0.2.3", Duration::from_secs(30))
        .ok();
    ex.expect(
        "icmpv4-redirect",
        &[("gateway", "10.0.2.3"), ("peer", "198.51.100.8")],
        &[("IcmpInRedirects", 1)],
    );
    let route = ex.vm.sh("ip route get 198.51.100.8");
    assert!(route.contains("via 10.0.2.3"), "{route}");
}

fn ipv4_ttl_expires_at_gateway(ex: &mut Ex) {
    let before = ex.vm.counters();
    let out = ex
        .vm
        .run(
            "traceroute -n -m 1 -w 3 -q 1 198.51.100.9",
            Duration::from_secs(30),
        )
        .stdout;
    assert!(out.contains("10.0.2.2"), "{out}");
    let after = ex.vm.counters();
    assert!(after.delta(&before, "IcmpInTimeExcds") >= 1);
}

/// Captures what the guest sends while `cmd` runs and counts the captured frames that match
/// the tshark display filter `filter`.
fn captured(ex: &mut Ex, cmd: &str, filter: &str) -> usize {
    let file = ex.vg.dir().join("kernel-paths.pcapng");
    ex.vg.ctl(&["capture", "start", file.to_str().unwrap()]);
    ex.vm.run(cmd, Duration::from_secs(30));
    ex.vg.ctl(&["capture", "stop"]);
    let out = std::process::Command::new("tshark")
        .args(["-r", file.to_str().unwrap(), "-Y", filter])
        .output()
        .expect("tshark (scripts/setup.sh installs it)");
    let _ = std::fs::remove_file(&file);
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn ipv4_source_policy(ex: &mut Ex) {
    // A second address added by hand: the guest was given 10.0.2.15 only.
    let spoofed = ex.ours("drop_ipv4_spoofed");
    ex.vm.sh("ip addr add 10.0.2.77/24 dev eth0");
    let seen = captured(
        ex,
        "ping -c 1 -W 2 -I 10.0.2.77 10.0.2.3",
        "ip.src == 10.0.2.77 && icmp.type == 8",
    );
    ex.vm.sh("ip addr del 10.0.2.77/24 dev eth0");
    assert_eq!(seen, 1, "the refused packet is in the capture");
    assert_eq!(ex.ours("drop_ipv4_spoofed") - spoofed, 1);
    // The leased address still works.
    ex.vm
        .run("ping -c 1 -W 5 10.0.2.3", Duration::from_secs(30))
        .ok();
}

// ---- IPv6 ----

fn ipv6_local_delivery(ex: &mut Ex) {
    let replies = ex.ours("icmpv6_rx_echo_replies");
    let (b, a) = ex.expect(
        "ipv6-echo",
        &[("count", "3")],
        &[("Icmp6InEchos", 3), ("Icmp6OutEchoReplies", 3)],
    );
    assert!(a.delta(&b, "Ip6InReceives") >= 3 && a.delta(&b, "Ip6InDelivers") >= 3);
    ex.wait_ours("icmpv6_rx_echo_replies", replies + 3);
    // Hop limit 0 is for forwarding to check; delivered here.
    ex.expect("ipv6-echo", &[("hop-limit", "0")], &[("Icmp6InEchos", 1)]);
}

fn ipv6_header_checks(ex: &mut Ex) {
    let before = ex.vm.counters();
    for p in [
        "ipv6-bad-version",
        "ipv6-multicast-src",
        "ipv6-dst-loopback",
    ] {
        ex.vg.probe(p, &[]);
    }
    let after = ex
        .vm
        .wait_counters(&before, &[("Ip6InHdrErrors", 2)], SETTLE);
    assert_eq!(after.delta(&before, "Icmp6InEchos"), 0);
    // A version-4 packet in an IPv6 frame is counted at the interface's IPv6 statistics.
    let drops = after.delta(&before, "Ip6InHdrErrors") + after.delta(&before, "Ip6InDiscards");
    assert!(drops >= 3, "{drops}");
}

fn ipv6_truncated_packet(ex: &mut Ex) {
    let (b, a) = ex.expect("ipv6-truncated", &[], &[("Ip6InTruncatedPkts", 1)]);
    assert_eq!(a.delta(&b, "Icmp6InEchos"), 0);
}

fn ipv6_extension_chain(ex: &mut Ex) {
    let replies = ex.ours("icmpv6_rx_echo_replies");
    ex.expect(
        "ipv6-ext-chain",
        &[],
        &[
            ("Icmp6InEchos", 1),
            ("Ip6ReasmReqds", 1),
            ("Ip6ReasmOKs", 1),
        ],
    );
    ex.wait_ours("icmpv6_rx_echo_replies", replies + 1);
    ex.expect("ipv6-hbh-router-alert", &[], &[("Icmp6InEchos", 1)]);
}

fn ipv6_hbh_option_actions(ex: &mut Ex) {
    // RFC 8200 §4.2: 00 skip, 01 discard, 10 discard and Parameter Problem, 11 the same unless
    // the destination is multicast.
    ex.expect(
        "ipv6-hbh-unknown-option",
        &[("action", "0")],
        &[("Icmp6InEchos", 1)],
    );
    let (b, a) = ex.expect(
        "ipv6-hbh-unknown-option",
        &[("action", "1")],
        &[("Ip6InHdrErrors", 1)],
    );
    assert_eq!(a.delta(&b, "Icmp6OutParmProblems"), 0);
    for action in ["2", "3"] {
        let problems = ex.ours("icmpv6_rx_param_problems");
        ex.expect(
            "ipv6-hbh-unknown-option",
            &[("action", action)],
            &[("Ip6InHdrErrors", 1), ("Icmp6OutParmProblems", 1)],
        );
        ex.wait_ours("icmpv6_rx_param_problems", problems + 1);
    }
}

fn ipv6_hbh_not_first(ex: &mut Ex) {
    let (b, a) = ex.expect(
        "ipv6-hbh-not-first",
        &[],
        &[("Ip6InUnknownProtos", 1), ("Icmp6OutParmProblems", 1)],
    );
    assert_eq!(a.delta(&b, "Icmp6InEchos"), 0);
}

fn ipv6_routing_header(ex: &mut Ex) {
    ex.expect(
        "ipv6-routing",
        &[("type", "0"), ("segments-left", "1")],
        &[("Ip6InHdrErrors", 1), ("Icmp6OutParmProblems", 1)],
    );
    ex.expect(
        "ipv6-routing",
        &[("type", "0"), ("segments-left", "0")],
        &[("Icmp6InEchos", 1)],
    );
}

fn ipv6_unknown_next_header(ex: &mut Ex) {
    ex.expect(
        "ipv6-unknown-next-header",
        &[],
        &[("Ip6InUnknownProtos", 1), ("Icmp6OutParmProblems", 1)],
    );
}

fn ipv6_option_limits(ex: &mut Ex) {
    let before = ex.vm.counters();
    ex.vg.probe("ipv6-ext-too-many-options", &[]);
    ex.vg.probe("ipv6-ext-long-padding", &[]);
    let after = ex
        .vm
        .wait_counters(&before, &[("Ip6InHdrErrors", 2)], SETTLE);
    assert_eq!(after.delta(&before, "Icmp6InEchos"), 0);
}

fn ipv6_defrag_orders(ex: &mut Ex) {
    for probe in [
        "ipv6-frag",
        "ipv6-frag-reversed",
        "ipv6-frag-random",
        "ipv6-frag-duplicate",
        "ipv6-frag-tiny",
    ] {
        let (b, a) = ex.expect(probe, &[], &[("Ip6ReasmOKs", 1), ("Icmp6InEchos", 1)]);
        assert_eq!(a.delta(&b, "Ip6ReasmFails"), 0, "{probe}");
    }
}

fn ipv6_defrag_overlap(ex: &mut Ex) {
    let (b, a) = ex.expect("ipv6-frag-overlap", &[], &[("Ip6ReasmFails", 1)]);
    assert_eq!(a.delta(&b, "Icmp6InEchos"), 0);
}

fn ipv6_defrag_expire(ex: &mut Ex) {
    for probe in ["ipv6-frag-first-only", "ipv6-frag-missing"] {
        let exceeded = ex.ours("icmpv6_rx_time_exceeded");
        ex.expect(
            probe,
            &[],
            &[("Ip6ReasmTimeout", 1), ("Icmp6OutTimeExcds", 1)],
        );
        ex.wait_ours("icmpv6_rx_time_exceeded", exceeded + 1);
    }
}

fn ipv6_fragment_unaligned(ex: &mut Ex) {
    let problems = ex.ours("icmpv6_rx_param_problems");
    ex.expect(
        "ipv6-frag-unaligned",
        &[],
        &[("Ip6InHdrErrors", 1), ("Icmp6OutParmProblems", 1)],
    );
    ex.wait_ours("icmpv6_rx_param_problems", problems + 1);
}

fn ipv6_fragment_oversize(ex: &mut Ex) {
    ex.expect(
        "ipv6-frag-oversize",
        &[],
        &[("Ip6InHdrErrors", 1), ("Icmp6OutParmProblems", 1)],
    );
}

fn ipv6_icmp_errors_received(ex: &mut Ex) {
    // Every code of RFC 4443 §3.1 and RFC 7112 (0 to 7).
    for code in 0..=7 {
        let code = code.to_string();
        ex.expect(
            "icmpv6-unreachable",
            &[("code", &code)],
            &[("Icmp6InDestUnreachs", 1)],
        );
    }
    ex.expect("icmpv6-time-exceeded", &[], &[("Icmp6InTimeExcds", 1)]);
    ex.expect("icmpv6-param-problem", &[], &[("Icmp6InParmProblems", 1)]);
}

fn ipv6_packet_too_big(ex: &mut Ex) {
    ex.expect(
        "icmpv6-packet-too-big",
        &[("mtu", "1400"), ("peer", "2001:db8::7")],
        &[("Icmp6InPktTooBigs", 1)],
    );
    assert_eq!(ex.vm.sh("udptool mtu 2001:db8::7").trim(), "mtu 1400");
    assert_eq!(ex.vm.sh("udptool mtu 2001:db8::77").trim(), "mtu 1500");
    // Below the IPv6 minimum: RFC 8201 §4 forbids a path MTU under 1280, and Linux (since 5.11)
    // discards such a message, so the path keeps its MTU.
    ex.expect(
        "icmpv6-packet-too-big",
        &[("mtu", "1000"), ("peer", "2001:db8::8")],
        &[("Icmp6InPktTooBigs", 1)],
    );
    assert_eq!(ex.vm.sh("udptool mtu 2001:db8::8").trim(), "mtu 1500");
}

fn ipv6_hop_limit_at_gateway(ex: &mut Ex) {
    let before = ex.vm.counters();
    let out = ex
        .vm
        .run(
            "traceroute6 -n -m 1 -w 3 -q 1 2001:db8::9",
            Duration::from_secs(30),
        )
        .stdout;
    assert!(out.contains("fd00::2") || out.contains("fe80::2"), "{out}");
    let after = ex.vm.counters();
    assert!(after.delta(&before, "Icmp6InTimeExcds") >= 1);
}

fn ipv6_guest_fragments(ex: &mut Ex) {
    let before = ex.vm.counters();
    ex.vm
        .run("ping -6 -c 1 -W 5 -s 3000 fd00::3", Duration::from_secs(30))
        .ok();
    let after = ex.vm.counters();
    assert_eq!(after.delta(&before, "Ip6FragOKs"), 1);
    assert_eq!(after.delta(&before, "Ip6FragCreates"), 3);
    assert_eq!(after.delta(&before, "Ip6ReasmOKs"), 1);
}

fn ipv6_neighbor_solicitation(ex: &mut Ex) {
    let addr = ex.guest_ipv6();
    let advertised = ex.ours("ndp_rx_neighbor_adverts");
    ex.expect(
        "ndp-ns",
        &[],
        &[
            ("Icmp6InNeighborSolicits", 1),
            ("Icmp6OutNeighborAdvertisements", 1),
        ],
    );
    ex.wait_ours("ndp_rx_neighbor_adverts", advertised + 1);
    // The guest listens on its address's solicited-node group (ff02::1:ff + the last 24 bits).
    let groups = ex.vm.sh("cat /proc/net/igmp6");
    let a: std::net::Ipv6Addr = addr.parse().unwrap();
    let o = a.octets();
    let group = format!(
        "ff0200000000000000000001ff{:02x}{:02x}{:02x}",
        o[13], o[14], o[15]
    );
    assert!(groups.contains(&group), "{group} not in {groups}");
}

fn ipv6_slaac(ex: &mut Ex) {
    // The guest configured itself from virtgate's RA at boot: the address, the default route
    // by RA and the link MTU.
    let addrs = ex.vm.sh("ip -6 addr show dev eth0");
    assert!(
        addrs.contains("fd00::") && addrs.contains("dynamic"),
        "{addrs}"
    );
    let routes = ex.vm.sh("ip -6 route show default");
    assert!(routes.contains("via fe80::2"), "{routes}");
    let c = ex.vm.counters();
    assert!(c.get("Icmp6InRouterAdvertisements") >= 1);
    assert!(c.get("Icmp6OutRouterSolicits") >= 1);
}

fn ipv6_ra_hop_limit_ignored(ex: &mut Ex) {
    ex.expect(
        "ndp-ra",
        &[("hop-limit", "64"), ("prefix", "fd66::/64")],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    // A valid one with the same prefix is taken: proof that the first was seen and refused.
    ex.expect(
        "ndp-ra",
        &[
            ("prefix", "fd67::/64"),
            ("valid", "60"),
            ("preferred", "30"),
        ],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    ex.vm.sh("i=0; until ip -6 addr show dev eth0 | grep -q fd67:: || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
    let addrs = ex.vm.sh("ip -6 addr show dev eth0");
    assert!(addrs.contains("fd67::"), "{addrs}");
    assert!(
        !addrs.contains("fd66::"),
        "an RA with hop limit 64 was obeyed: {addrs}"
    );
}

fn ipv6_ra_mtu_option(ex: &mut Ex) {
    let mtu = |ex: &mut Ex| {
        ex.vm
            .sh("cat /proc/sys/net/ipv6/conf/eth0/mtu")
            .trim()
            .to_string()
    };
    assert_eq!(mtu(ex), "1500");
    ex.expect(
        "ndp-ra",
        &[("mtu", "1400")],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    assert_eq!(mtu(ex), "1400");
    // Below the IPv6 minimum it is ignored (RFC 4861 §6.3.4, RFC 8200 §5).
    ex.expect(
        "ndp-ra",
        &[("mtu", "1000")],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    assert_eq!(mtu(ex), "1400");
    ex.expect(
        "ndp-ra",
        &[("mtu", "1500")],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    assert_eq!(mtu(ex), "1500");
}

fn ipv6_ra_dns_options(ex: &mut Ex) {
    // DNS servers and search domains changed at run time, as an RA listener in the guest sees
    // them (a periodic RA of virtgate's own may come first: then listen again).
    for _ in 0..3 {
        ex.vm.sh("ndtool ra-listen eth0 10 > /tmp/ra.log 2>&1 &");
        ex.vm.sh("i=0; until grep -q listening /tmp/ra.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
        ex.vg.probe(
            "ndp-ra",
            &[
                ("rdnss", "fd00::53,fd00::54"),
                ("dnssl", "probe.example"),
                ("dns-lifetime", "600"),
            ],
        );
        let log = ex.vm.sh("i=0; until grep -q '^ra ' /tmp/ra.log || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/ra.log");
        if !log.contains("fd00::53") {
            continue;
        }
        for line in [
            "rdnss fd00::53 lifetime=600",
            "rdnss fd00::54 lifetime=600",
            "dnssl probe.example lifetime=600",
        ] {
            assert!(log.contains(line), "{line} not in {log}");
        }
        return;
    }
    panic!("the guest never saw the advertisement with the new DNS options");
}

fn ipv6_ra_router_lifetime(ex: &mut Ex) {
    // Whether the guest routes a global destination through the gateway: a route lookup, which
    // skips a default route that has timed out though it is still listed (with "expires 0sec")
    // until the kernel's garbage collection removes it.
    let via_gateway = |ex: &mut Ex, want: bool| {
        let cond = if want { "" } else { "!" };
        let out = ex.vm.run(
            &format!("i=0; until {cond} ip -6 route get 2001:db8::1 2>/dev/null | grep -q 'via fe80::2' || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done; ip -6 route get 2001:db8::1 2>&1"),
            Duration::from_secs(30),
        ).stdout;
        let seen = out.contains("via fe80::2");
        let context = ex
            .vm
            .sh("ip -6 route show table all; ip -6 neigh show dev eth0; dmesg | tail -n 5");
        (seen, format!("{out}\n{context}"))
    };
    // Router lifetime 0: the guest stops using the gateway as its default router (RFC 4861 §6.3.4).
    ex.expect(
        "ndp-ra",
        &[("router-lifetime", "0")],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    let (seen, out) = via_gateway(ex, false);
    assert!(!seen, "{out}");
    // And takes it back with a lifetime again.
    ex.expect("ndp-ra", &[], &[("Icmp6InRouterAdvertisements", 1)]);
    let (seen, out) = via_gateway(ex, true);
    assert!(seen, "{out}");
}

fn ipv6_ra_prefix_lifetimes(ex: &mut Ex) {
    ex.expect(
        "ndp-ra",
        &[("prefix", "fd77::/64"), ("valid", "6"), ("preferred", "3")],
        &[("Icmp6InRouterAdvertisements", 1)],
    );
    let wait = |ex: &mut Ex, cond: &str| {
        ex.vm.run(
            &format!("i=0; until {cond} || [ $i -ge 150 ]; do sleep 0.1; i=$((i+1)); done; {cond}"),
            Duration::from_secs(30),
        )
    };
    assert_eq!(
        wait(ex, "ip -6 addr show dev eth0 | grep -q fd77::").status,
        0
    );
    let deprecated = wait(
        ex,
        "ip -6 addr show dev eth0 | grep fd77:: | grep -q deprecated",
    );
    assert_eq!(deprecated.status, 0, "{}", ex.vm.sh("ip -6 addr"));
    let gone = wait(ex, "! ip -6 addr show dev eth0 | grep -q fd77::");
    assert_eq!(gone.status, 0, "{}", ex.vm.sh("ip -6 addr"));
}

fn ipv6_dad_failure(ex: &mut Ex) {
    // A slow DAD (five probes a second apart) leaves time to answer it.
    ex.vm
        .sh("sysctl -qw net.ipv6.conf.eth0.dad_transmits=5 && ip -6 addr add fd00::99/64 dev eth0");
    let addrs = ex.vm.sh("ip -6 addr show dev eth0");
    assert!(addrs.contains("tentative"), "{addrs}");
    ex.vg.probe("ndp-na", &[("target", "fd00::99")]);
    let out = ex.vm.run(
        "i=0; until ip -6 addr show dev eth0 | grep fd00::99 | grep -q dadfailed || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done; ip -6 addr show dev eth0",
        Duration::from_secs(30),
    );
    ex.vm
        .sh("ip -6 addr del fd00::99/64 dev eth0; sysctl -qw net.ipv6.conf.eth0.dad_transmits=1");
    assert!(out.stdout.contains("dadfailed"), "{}", out.stdout);
}

fn ipv6_redirect(ex: &mut Ex) {
    ex.expect(
        "ndp-redirect",
        &[("gateway", "fe80::5"), ("peer", "2001:db8::10")],
        &[("Icmp6InRedirects", 1)],
    );
    let route = ex.vm.sh("ip -6 route get 2001:db8::10");
    assert!(route.contains("via fe80::5"), "{route}");
}

fn ipv6_multicast_receive(ex: &mut Ex) {
    listen(ex, "ff15::1234 5000 4", "/tmp/m6.log");
    let (b, a) = ex.expect(
        "mcast-udp",
        &[("group", "ff15::1234"), ("count", "2")],
        &[("Ip6InMcastPkts", 2), ("Udp6InDatagrams", 2)],
    );
    assert_eq!(a.delta(&b, "Udp6InDatagrams"), 2);
    let before = ex.vm.counters();
    ex.vg.probe("mcast-udp", &[("group", "ff15::9999")]);
    assert_eq!(listened(ex, "/tmp/m6.log"), 2);
    let after = ex.vm.counters();
    assert_eq!(after.delta(&before, "Udp6InDatagrams"), 0);
}

fn ipv6_ssm_source_filter(ex: &mut Ex) {
    listen(ex, "ff35::1234 5000 4 fd00::2", "/tmp/ssm.log");
    ex.expect(
        "mcast-udp",
        &[("group", "ff35::1234")],
        &[("Udp6InDatagrams", 1)],
    );
    // Another source: filtered out by the membership.
    let before = ex.vm.counters();
    ex.vg
        .probe("mcast-udp", &[("group", "ff35::1234"), ("from", "fd00::5")]);
    assert_eq!(listened(ex, "/tmp/ssm.log"), 1);
    let after = ex.vm.counters();
    assert_eq!(after.delta(&before, "Udp6InDatagrams"), 0);
}

fn ipv6_mld_queries(ex: &mut Ex) {
    let reports = ex.ours("mld_rx_reports");
    ex.expect(
        "mld-query",
        &[("max-resp", "1000")],
        &[("Icmp6InGroupMembQueries", 1), ("Icmp6OutMLDv2Reports", 1)],
    );
    ex.wait_ours("mld_rx_reports", reports + 1);
    // Address-specific: the solicited-node group of the guest's address, always joined.
    let a: std::net::Ipv6Addr = ex.guest_ipv6().parse().unwrap();
    let o = a.octets();
    let group = format!("ff02::1:ff{:02x}:{:02x}{:02x}", o[13], o[14], o[15]);
    ex.expect(
        "mld-query",
        &[("group", &group), ("max-resp", "1000")],
        &[("Icmp6InGroupMembQueries", 1), ("Icmp6OutMLDv2Reports", 1)],
    );
    // MLDv1 (RFC 2710): the guest falls back to version 1 reports.
    ex.expect(
        "mld-query",
        &[("version", "1"), ("max-resp", "1000")],
        &[
            ("Icmp6InGroupMembQueries", 1),
            ("Icmp6OutGroupMembResponses", 1),
        ],
    );
}

/// Polls `virtgate ctl multicast` until `cond` holds of its output.
fn wait_multicast(ex: &Ex, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let out = ex.vg.ctl(&["multicast"]);
        if cond(&out) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn multicast_querier(ex: &mut Ex) {
    // The start-up general queries went out when the guest first spoke each family.
    assert!(ex.ours("igmp_tx_queries") >= 1 && ex.ours("mld_tx_queries") >= 1);
    assert!(ex.vm.counters().get("Icmp6InGroupMembQueries") >= 1);
    let igmp = ex.vm.sh("cat /proc/net/igmp");
    assert!(igmp.contains("eth0"), "{igmp}");
    for (group, counter) in [
        ("239.7.7.7", "igmp_tx_queries"),
        ("ff15::7777", "mld_tx_queries"),
    ] {
        // A join is reported and tracked; the leave brings group-specific queries, and with
        // nobody answering them the membership goes.
        let queries = ex.ours(counter);
        listen(ex, &format!("{group} 5000 2"), "/tmp/q.log");
        wait_multicast(ex, "joined", |o| o.contains(group));
        listened(ex, "/tmp/q.log");
        ex.wait_ours(counter, queries + 2);
        wait_multicast(ex, "left", |o| !o.contains(group));
    }
}

fn ipv6_source_policy(ex: &mut Ex) {
    // Without duplicate address detection the address was never claimed: refused.
    let spoofed = ex.ours("drop_ipv6_spoofed");
    ex.vm
        .sh("sysctl -qw net.ipv6.conf.eth0.accept_dad=0 && ip -6 addr add fd00::77/64 dev eth0");
    let out = ex.vm.run(
        "ping -6 -c 1 -W 2 -I fd00::77 fd00::3",
        Duration::from_secs(30),
    );
    ex.vm
        .sh("ip -6 addr del fd00::77/64 dev eth0; sysctl -qw net.ipv6.conf.eth0.accept_dad=1");
    assert_ne!(out.status, 0, "{}", out.stdout);
    assert!(ex.ours("drop_ipv6_spoofed") - spoofed >= 1);
    // With DAD the guest claims it, and it works.
    ex.vm.sh("ip -6 addr add fd00::78/64 dev eth0");
    ex.vm.sh("i=0; while ip -6 addr show dev eth0 | grep fd00::78 | grep -q tentative && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done");
    let out = ex.vm.run(
        "ping -6 -c 1 -W 5 -I fd00::78 fd00::3",
        Duration::from_secs(30),
    );
    ex.vm.sh("ip -6 addr del fd00::78/64 dev eth0");
    assert_eq!(out.status, 0, "{}", out.stdout);
}

/// A host listener on `addr` that reads one connection to its end; returns the port and a
/// handle to the byte count.
fn sink(addr: &str) -> (u16, std::thread::JoinHandle<usize>) {
    let l = std::net::TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = vec![0u8; 65536];
        let mut n = 0;
        while let Ok(k) = std::io::Read::read(&mut c, &mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    });
    (port, t)
}

fn path_mtu_emulation(ex: &mut Ex) {
    ex.vg.ctl(&["path-mtu", "10.0.2.2=1400", "fd00::2=1300"]);
    for (gw, loopback, mtu, counter, guest_counter) in [
        (
            "10.0.2.2",
            "127.0.0.1",
            "1400",
            "drop_ipv4_path_mtu",
            "IcmpInDestUnreachs",
        ),
        (
            "fd00::2",
            "::1",
            "1300",
            "drop_ipv6_path_mtu",
            "Icmp6InPktTooBigs",
        ),
    ] {
        let refused = ex.ours(counter);
        let before = ex.vm.counters();
        let (port, got) = sink(loopback);
        // A bulk upload: its first full-sized segments meet the narrow path, the guest learns
        // the path MTU and the rest goes in smaller segments.
        ex.vm
            .run(
                &format!("dd if=/dev/zero bs=1024 count=2048 2>/dev/null | nc {gw} {port}"),
                Duration::from_secs(120),
            )
            .ok();
        assert_eq!(
            got.join().unwrap(),
            2 << 20,
            "{gw}: the upload arrived whole"
        );
        assert!(ex.ours(counter) > refused, "{gw}: {counter}");
        assert!(
            ex.vm.counters().delta(&before, guest_counter) >= 1,
            "{guest_counter}"
        );
        assert_eq!(
            ex.vm.sh(&format!("udptool mtu {gw}")).trim(),
            format!("mtu {mtu}")
        );
    }
    let out = ex.vg.ctl(&["path-mtu", "--clear"]);
    assert!(out.contains("[]"), "{out}");
}

// ---- TCP ----

fn tcp_bad_checksum(ex: &mut Ex) {
    ex.expect("tcp-bad-checksum", &[], &[("TcpInCsumErrors", 1)]);
    ex.expect(
        "tcp-bad-checksum",
        &[("family", "6")],
        &[("TcpInCsumErrors", 1)],
    );
}

fn tcp_reset_to_a_closed_port(ex: &mut Ex) {
    let (b, a) = ex.expect(
        "tcp-segment",
        &[("dport", "9"), ("flags", "S")],
        &[("TcpOutRsts", 1)],
    );
    assert_eq!(a.delta(&b, "TcpInCsumErrors"), 0);
}

/// A live guest connection through the gateway: the SYN-ACK's options as TCP_INFO shows them
/// (against what virtgate sent, read from a capture), then an ICMP error and RSTs quoting the
/// flow's real ports and sequence numbers (`for-flow`).
fn tcp_flow_probes(ex: &mut Ex) {
    let (port, _sink) = sink("127.0.0.1");
    let file = ex.vg.dir().join("kernel-paths-flow.pcapng");
    ex.vg.ctl(&["capture", "start", file.to_str().unwrap()]);
    ex.vm.sh(&format!(
        "tcpclient 10.0.2.2 {port} info - send ab wait 60000 > /tmp/flow.log 2>&1 &"
    ));
    let info = ex.vm.sh("i=0; until grep -q '^info' /tmp/flow.log || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/flow.log");
    ex.vg.ctl(&["capture", "stop"]);
    let (synack, fields) = captured_synack(&file);
    assert_eq!(fields.len(), 4, "the SYN-ACK as captured: {synack:?}");
    let (mss, shift): (u32, u32) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    assert!(
        !fields[2].is_empty() && !fields[3].is_empty(),
        "SACK and timestamps: {synack}"
    );
    assert!(info.contains("options=ts,sack,wscale"), "{info}");
    assert!(
        info.contains(&format!("snd_wscale={shift} ")),
        "{info} vs {synack}"
    );
    // The segment size: the MSS virtgate offered or the path MTU the guest knows (an earlier
    // scenario may have lowered it), less 12 bytes of timestamps.
    let pmtu = info_value(&info, "pmtu");
    let expected = mss.min(pmtu - 40) - 12;
    assert!(
        info.contains(&format!("snd_mss={expected} ")),
        "{info} vs {synack}"
    );

    // An ICMP error quoting the connection reaches its socket: the path MTU drops.
    let p = port.to_string();
    ex.expect(
        "icmpv4-frag-needed",
        &[("for-flow", &p), ("mtu", "1200")],
        &[("IcmpInDestUnreachs", 1)],
    );
    assert_eq!(ex.vm.sh("udptool mtu 10.0.2.2").trim(), "mtu 1200");
    // RFC 5961: an RST outside the window is dropped; inside but not exact draws a challenge
    // ACK; exactly at the next sequence number it resets the connection.
    let before = ex.vm.counters();
    ex.vg.probe(
        "tcp-segment",
        &[
            ("for-flow", &p),
            ("flags", "R"),
            ("seq-offset", "100000000"),
        ],
    );
    let (_, after) = ex.expect(
        "tcp-segment",
        &[("for-flow", &p), ("flags", "R"), ("seq-offset", "10")],
        &[("TcpExtTCPChallengeACK", 1)],
    );
    assert_eq!(after.delta(&before, "TcpEstabResets"), 0);
    assert_eq!(after.delta(&before, "TcpExtTCPChallengeACK"), 1);
    ex.expect(
        "tcp-segment",
        &[("for-flow", &p), ("flags", "R")],
        &[("TcpEstabResets", 1)],
    );
    let log = ex.vm.sh("i=0; until grep -q 'wait:' /tmp/flow.log || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/flow.log");
    assert!(log.contains("wait: Connection reset by peer"), "{log}");
}

/// TCP options changed at run time: a connection opened after `tcp-options sack` negotiates
/// SACK alone. The captured SYN-ACK carries neither window scale nor timestamps, the guest's
/// TCP_INFO agrees (no scaling either way, segments of the whole MSS), and data flows.
fn tcp_options_at_run_time(ex: &mut Ex) {
    let set = ex.vg.ctl(&["tcp-options", "sack"]);
    assert!(
        set.contains("\"timestamps\": false")
            && set.contains("\"sack\": true")
            && set.contains("\"window_scale\": false"),
        "{set}"
    );
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let (port, sink) = sink("127.0.0.1");
        let file = ex.vg.dir().join("kernel-paths-options.pcapng");
        ex.vg.ctl(&["capture", "start", file.to_str().unwrap()]);
        let info = ex.vm.sh(&format!(
            "timeout 20 tcpclient 10.0.2.2 {port} info - send abcdef 2>&1"
        ));
        ex.vg.ctl(&["capture", "stop"]);
        let (synack, fields) = captured_synack(&file);
        assert_eq!(fields.len(), 4, "the SYN-ACK as captured: {synack:?}");
        let mss: u32 = fields[0].parse().unwrap();
        assert!(
            fields[1].is_empty() && !fields[2].is_empty() && fields[3].is_empty(),
            "SACK alone: {synack}"
        );
        assert!(info.contains("options=sack, "), "{info}");
        assert!(
            info.contains("snd_wscale=0 rcv_wscale=0 "),
            "{info} vs {synack}"
        );
        let pmtu = info_value(&info, "pmtu");
        // No 12 bytes of timestamps in each segment.
        let expected = mss.min(pmtu - 40);
        assert!(
            info.contains(&format!("snd_mss={expected} ")),
            "{info} vs {synack}"
        );
        assert_eq!(sink.join().unwrap(), 6, "{info}");
    }));
    let reset = ex.vg.ctl(&["tcp-options", "all"]);
    assert!(reset.contains("\"timestamps\": true"), "{reset}");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A number `tcpclient info` printed as `KEY=N`.
fn info_value(info: &str, key: &str) -> u32 {
    info.split(&format!(" {key}="))
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} in {info}"))
}

/// The first SYN-ACK of a capture file (which is removed): the line tshark printed and its fields
/// MSS, window shift, SACK-permitted and TSval (empty when the option is absent).
fn captured_synack(file: &std::path::Path) -> (String, Vec<String>) {
    let synack = std::process::Command::new("tshark")
        .args([
            "-r",
            file.to_str().unwrap(),
            "-Y",
            "tcp.flags.syn == 1 && tcp.flags.ack == 1",
        ])
        .args([
            "-T",
            "fields",
            "-e",
            "tcp.options.mss_val",
            "-e",
            "tcp.options.wscale.shift",
        ])
        .args([
            "-e",
            "tcp.options.sack_perm",
            "-e",
            "tcp.options.timestamp.tsval",
        ])
        .output()
        .expect("tshark");
    let _ = std::fs::remove_file(file);
    let synack = String::from_utf8_lossy(&synack.stdout).to_string();
    let fields = synack
        .lines()
        .next()
        .unwrap_or("")
        .split('\t')
        .map(str::to_string)
        .collect();
    (synack, fields)
}

// ---- The NIC ----

fn nic_runt_frame(ex: &mut Ex) {
    ex.expect("eth-runt", &[], &[("eth0.rx_length_errors", 1)]);
}

fn nic_oversize_frame(ex: &mut Ex) {
    let (b, a) = ex.expect("eth-oversize", &[], &[("IcmpInEchos", 1), ("IpFragOKs", 1)]);
    assert!(a.delta(&b, "IpFragCreates") >= 2);
}

fn nic_unknown_ethertype(ex: &mut Ex) {
    let reasons = ex.drops(&[("eth-bad-ethertype", &[])], "UNHANDLED_PROTO");
    assert!(
        reasons.iter().any(|r| r == "UNHANDLED_PROTO"),
        "{reasons:?}"
    );
}

fn nic_vlan_tagged(ex: &mut Ex) {
    let before = ex.vm.counters();
    let reasons = ex.drops(&[("eth-vlan", &[])], "OTHERHOST");
    assert!(reasons.iter().any(|r| r == "OTHERHOST"), "{reasons:?}");
    assert_eq!(ex.vm.counters().delta(&before, "IcmpInEchos"), 0);
}

// ---- Forwarding through the guest (an inner 1280-byte TUN link) ----

/// Turns the guest into a router with an inner link `tun0` (MTU 1280, 192.168.77.1/24 and
/// fd77:1::1/64) for `body`, and back into a host afterwards. IPv6 forwarding makes Linux drop
/// the default route it learned from router advertisements; a fresh RA from virtgate restores it.
fn as_router(ex: &mut Ex, body: impl FnOnce(&mut Ex)) {
    ex.vm.sh(
        "[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200; }; \
         tunif tun0 && ip link set tun0 mtu 1280 up && ip addr add 192.168.77.1/24 dev tun0 && \
         ip -6 addr add fd77:1::1/64 dev tun0 && \
         sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1",
    );
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(ex)));
    ex.vm.sh(
        "sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0; tunif tun0 del; \
         ip route del 192.168.88.0/24 2>/dev/null; true",
    );
    ex.expect("ndp-ra", &[], &[("Icmp6InRouterAdvertisements", 1)]);
    ex.vm.sh("i=0; until ip -6 route show default | grep -q fe80::2 || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
    assert!(ex.vm.sh("ip -6 route show default").contains("fe80::2"));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn ipv4_forwarding(ex: &mut Ex) {
    as_router(ex, |ex| {
        // TTL 1 runs out in the guest's ip_forward: Time Exceeded back to the sender.
        let exceeded = ex.ours("icmp_rx_time_exceeded");
        ex.expect(
            "ipv4-echo",
            &[("to", "192.168.77.5"), ("ttl", "1")],
            &[("IcmpOutTimeExcds", 1)],
        );
        ex.wait_ours("icmp_rx_time_exceeded", exceeded + 1);
        // DF and too big for the inner link: fragmentation needed (ip_forward's MTU check).
        let unreachable = ex.ours("icmp_rx_dest_unreachable");
        ex.expect(
            "ipv4-echo",
            &[("to", "192.168.77.5"), ("df", "1"), ("size", "1400")],
            &[("IpFragFails", 1), ("IcmpOutDestUnreachs", 1)],
        );
        ex.wait_ours("icmp_rx_dest_unreachable", unreachable + 1);
        // A packet that fits is forwarded onto the inner link.
        ex.expect(
            "ipv4-echo",
            &[("to", "192.168.77.5"), ("size", "100")],
            &[("IpForwDatagrams", 1)],
        );
        // Out by the interface it came in on: a redirect to the sender. TTL 2, so that what the
        // guest forwards back ends at virtgate (Time Exceeded) and never leaves the host.
        ex.vm.sh("ip route add 192.168.88.0/24 via 10.0.2.3");
        ex.expect(
            "ipv4-echo",
            &[("to", "192.168.88.5"), ("ttl", "2")],
            &[("IcmpOutRedirects", 1)],
        );
    });
}

fn ipv6_forwarding(ex: &mut Ex) {
    as_router(ex, |ex| {
        let exceeded = ex.ours("icmpv6_rx_time_exceeded");
        ex.expect(
            "ipv6-echo",
            &[("to", "fd77:1::5"), ("hop-limit", "1")],
            &[("Icmp6OutTimeExcds", 1)],
        );
        ex.wait_ours("icmpv6_rx_time_exceeded", exceeded + 1);
        let too_big = ex.ours("icmpv6_rx_packet_too_big");
        ex.expect(
            "ipv6-echo",
            &[("to", "fd77:1::5"), ("size", "1300")],
            &[("Icmp6OutPktTooBigs", 1), ("Ip6InTooBigErrors", 1)],
        );
        ex.wait_ours("icmpv6_rx_packet_too_big", too_big + 1);
        ex.expect(
            "ipv6-echo",
            &[("to", "fd77:1::5"), ("size", "100")],
            &[("Ip6OutForwDatagrams", 1)],
        );
    });
}

/// A host behind the guest's inner link (`tunif tun0 ping`) reaches the gateway over both
/// families: out through the guest's forwarding, and back because virtgate routes the inner
/// prefixes via the guest (`--route-via-guest`).
fn routes_via_the_guest(ex: &mut Ex) {
    as_router(ex, |ex| {
        let bad = |ex: &Ex| ex.ours("drop_ipv4_bad_source") + ex.ours("drop_ipv6_bad_source");
        let bad_before = bad(ex);
        for (src, dst, forwarded) in [
            ("192.168.77.5", "10.0.2.3", "IpForwDatagrams"),
            ("fd77:1::5", "fd00::3", "Ip6OutForwDatagrams"),
        ] {
            let before = ex.vm.counters();
            let out = ex.vm.run(
                &format!("tunif tun0 ping {src} {dst}"),
                Duration::from_secs(30),
            );
            assert_eq!(out.status, 0, "{src} -> {dst}: {}", out.stdout);
            assert!(
                out.stdout.contains(&format!("reply from {dst}")),
                "{}",
                out.stdout
            );
            // Forwarded twice by the guest: the request out, the reply in.
            let after = ex.vm.counters();
            assert!(after.delta(&before, forwarded) >= 2, "{forwarded}");
        }
        assert_eq!(bad(ex), bad_before, "inner sources are the guest's to use");
    });
}

/// A packet socket in promiscuous mode, as tcpdump opens one: the interface's promiscuity goes up
/// while it lives, and it sees the frames for other stations that IP then drops.
fn nic_promiscuous_capture(ex: &mut Ex) {
    let promisc = |ex: &mut Ex| {
        let flags = ex.vm.sh("cat /sys/class/net/eth0/flags");
        i64::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap() & 0x100 != 0
    };
    assert!(!promisc(ex));
    ex.vm.sh("pcount eth0 3 > /tmp/pcount.log 2>&1 &");
    ex.vm.sh(
        "i=0; until grep -q ready /tmp/pcount.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done",
    );
    assert!(promisc(ex), "IFF_PROMISC while the packet socket lives");
    ex.vg.probe("eth-foreign-mac", &[("count", "3")]);
    let log = ex.vm.sh("i=0; until grep -q otherhost /tmp/pcount.log || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; cat /tmp/pcount.log");
    assert!(log.contains("otherhost 3"), "{log}");
    assert!(!promisc(ex), "promiscuity drops with the socket");
}

// ---- Call chains (ftrace instead of dump_stack() patches) ----

/// Traces `function` while `probe` runs and asserts that a chain holds, in order from the
/// traced function outwards, one function of each group of `callers` (a name ending in `*` is a
/// prefix). Returns the chain.
fn chain_of(ex: &mut Ex, function: &str, probe: &str, callers: &[&[&str]]) -> Vec<String> {
    let matches = |f: &str, want: &str| match want.strip_suffix('*') {
        Some(prefix) => f.starts_with(prefix),
        None => f == want,
    };
    ex.vm.trace_calls_start(function);
    ex.vg.probe(probe, &[]);
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let chains = ex.vm.trace_calls_stop(20);
        let found = chains.iter().find(|c| {
            let mut it = c.iter();
            callers
                .iter()
                .all(|group| it.any(|f| group.iter().any(|w| matches(f, w))))
        });
        if let Some(c) = found {
            eprintln!("{function}: {}", c.join(" <- "));
            return c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no chain of {function} with {callers:?}: {chains:?}"
        );
        ex.vm.trace_calls_start(function);
        ex.vg.probe(probe, &[]);
    }
}

/// The receive path from the NIC's NAPI poll up: one packet (`ip_rcv`, `ipv6_rcv`) or a list
/// (`ip_list_rcv`, `ipv6_list_rcv`, after GRO hands a batch to `netif_receive_skb_list`).
const FROM_NAPI: &[&str] = &["__netif_receive_skb*"];
const VIRTNET_POLL: &[&str] = &["virtnet_poll"];

fn trace_ipv4_receive(ex: &mut Ex) {
    chain_of(
        ex,
        "ip_rcv_core",
        "ipv4-echo",
        &[
            &["ip_rcv_core"],
            &["ip_rcv", "ip_list_rcv"],
            FROM_NAPI,
            VIRTNET_POLL,
        ],
    );
}

fn trace_ipv4_defrag(ex: &mut Ex) {
    chain_of(
        ex,
        "ip_defrag",
        "ipv4-frag",
        &[
            &["ip_defrag"],
            &["ip_local_deliver"],
            FROM_NAPI,
            VIRTNET_POLL,
        ],
    );
}

fn trace_ipv6_receive(ex: &mut Ex) {
    for function in ["ip6_rcv_core", "ip6_input_finish"] {
        chain_of(
            ex,
            function,
            "ipv6-echo",
            &[
                &[function],
                &["ipv6_rcv", "ipv6_list_rcv"],
                FROM_NAPI,
                VIRTNET_POLL,
            ],
        );
    }
}

fn trace_ipv6_output(ex: &mut Ex) {
    // The echo reply leaves from the receive softirq: output runs inside the NIC's poll.
    chain_of(
        ex,
        "ip6_finish_output2",
        "ipv6-echo",
        &[
            &["ip6_finish_output2"],
            &["icmpv6_echo_reply"],
            &["ip6_input_finish"],
            VIRTNET_POLL,
        ],
    );
}
