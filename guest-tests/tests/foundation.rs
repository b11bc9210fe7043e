//! Foundation guest tests: a real Linux guest on virtgate sees its link, gets exactly the configured
//! DHCP lease, applies the MTU, pings the gateway, and virtgate's counters agree with the guest's.
//! Expected values come from the host side (the configuration virtgate was given, its stats file).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use guest_tests::transfer::transfer_both_ways;
use guest_tests::{parse_snmp, Family, Virtgate, Vm, VmOptions, GUEST_MAC};
use rstest::rstest;
use serde_json::Value;

fn counter(stats: &Value, section: &str, name: &str) -> i64 {
    stats[section][name]
        .as_i64()
        .unwrap_or_else(|| panic!("no counter {section}.{name} in {stats:#}"))
}

fn snmp(vm: &mut Vm) -> HashMap<String, i64> {
    parse_snmp(&vm.sh("cat /proc/net/snmp"))
}

fn iface_counter(vm: &mut Vm, name: &str) -> i64 {
    vm.sh(&format!("cat /sys/class/net/eth0/statistics/{name}"))
        .trim()
        .parse()
        .unwrap()
}

/// The MTU matrix: IPv4's minimum (68, RFC 791), the classic 576, IPv6's minimum (1280), Ethernet,
/// a jumbo frame and the largest virtio-net takes. Each gets a lease, pings of exactly the MTU and
/// TCP both ways, checksummed; below 1280 IPv6 is off (RFC 8200 §5 needs 1280).
#[rstest]
#[case::mtu_68(68)]
#[case::mtu_576(576)]
#[case::mtu_1280(1280)]
#[case::mtu_1500(1500)]
#[case::mtu_9000(9000)]
#[case::mtu_65520(65520)]
fn dhcp_lease_mtu_ping_and_counters(#[case] mtu: u32) {
    let mtu_arg = mtu.to_string();
    let mut args = vec![
        "--mtu",
        &mtu_arg,
        "--lease-time",
        "7200",
        "--domain",
        "virtgate.test",
    ];
    if mtu < 1280 {
        args.push("--no-ipv6");
    }
    let vg = Virtgate::start(&args);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    let lease = if mtu >= 1280 {
        vm.bring_up_dual_stack()
    } else {
        vm.bring_up()
    };

    // Exactly what virtgate was configured to hand out.
    let expect = [
        ("ip", "10.0.2.15"),
        ("mask", "24"),
        ("router", "10.0.2.2"),
        ("dns", "10.0.2.3"),
        ("lease", "7200"),
        ("domain", "virtgate.test"),
        ("serverid", "10.0.2.2"),
    ];
    for (k, v) in expect {
        assert_eq!(
            lease.get(k).map(String::as_str),
            Some(v),
            "lease {k}: {lease:?}"
        );
    }
    assert_eq!(lease["mtu"], mtu.to_string());
    // ...and applied by the guest.
    assert!(vm
        .sh("ip -o addr show dev eth0")
        .contains("inet 10.0.2.15/24"));
    assert!(vm.sh("ip route").contains("default via 10.0.2.2 dev eth0"));
    assert_eq!(vm.sh("cat /sys/class/net/eth0/mtu").trim(), mtu.to_string());
    assert_eq!(vm.sh("cat /sys/class/net/eth0/address").trim(), GUEST_MAC);

    let before = snmp(&mut vm);
    let ping = vm
        .run("ping -c 20 -i 0.2 -W 5 10.0.2.2", Duration::from_secs(60))
        .ok();
    assert!(
        ping.contains("20 packets transmitted, 20 packets received, 0% packet loss"),
        "{ping}"
    );
    // Echo requests and replies of exactly the MTU: the largest frames pass both ways.
    let size = mtu - 28;
    let big = vm
        .run(
            &format!("ping -c 3 -W 5 -s {size} 10.0.2.2"),
            Duration::from_secs(60),
        )
        .ok();
    assert!(big.contains("3 packets received, 0% packet loss"), "{big}");
    assert!(
        big.contains(&format!("{} bytes from 10.0.2.2", size + 8)),
        "{big}"
    );
    let after = snmp(&mut vm);
    let delta = |k: &str| after[k] - before[k];
    assert_eq!(delta("Icmp.OutEchos"), 23);
    assert_eq!(delta("Icmp.InEchoReps"), 23);
    assert_eq!(delta("Icmp.InErrors"), 0);

    // virtgate's view agrees with the guest's.
    let rx_before = iface_counter(&mut vm, "rx_packets");
    let tx_before = iface_counter(&mut vm, "tx_packets");
    let stats = vg.stats();
    let rx_after = iface_counter(&mut vm, "rx_packets");
    let tx_after = iface_counter(&mut vm, "tx_packets");
    assert_eq!(stats["guest"]["mac"], GUEST_MAC);
    assert_eq!(stats["guest"]["ipv4"], "10.0.2.15");
    assert_eq!(
        counter(&stats, "stack", "icmp_rx_echo_requests"),
        after["Icmp.OutEchos"]
    );
    assert_eq!(
        counter(&stats, "stack", "icmp_tx_echo_replies"),
        after["Icmp.InEchoReps"]
    );
    assert_eq!(counter(&stats, "stack", "dhcp_tx_offers"), 1);
    assert_eq!(counter(&stats, "stack", "dhcp_tx_acks"), 1);
    let dev_rx = counter(&stats, "device", "rx_frames");
    let dev_tx = counter(&stats, "device", "tx_frames");
    assert!(
        (rx_before..=rx_after).contains(&dev_rx),
        "device rx {dev_rx}, guest {rx_before}..{rx_after}"
    );
    assert!(
        (tx_before..=tx_after).contains(&dev_tx),
        "device tx {dev_tx}, guest {tx_before}..{tx_after}"
    );
    // Every frame the stack emitted reached the guest; every frame the guest sent reached the stack.
    assert_eq!(dev_rx, counter(&stats, "stack", "eth_tx_frames"));
    assert_eq!(dev_tx, counter(&stats, "stack", "eth_rx_frames"));
    for name in [
        "rx_bad_chain",
        "tx_bad_chain",
        "rx_drop_too_big",
        "tx_drop_runt",
        "queue_errors",
    ] {
        assert_eq!(counter(&stats, "device", name), 0, "{name}");
    }
    if mtu > 4096 {
        // Frames larger than a page arrive over several mergeable buffers.
        assert!(counter(&stats, "device", "rx_chains") > dev_rx, "{stats:#}");
    }

    // TCP both ways at this MTU: virtgate's MSS is the MTU less 40 bytes of headers, and every
    // segment it sent fits the link.
    let size = if mtu < 1280 { 64 << 10 } else { 1 << 20 };
    transfer_both_ways(&mut vm, Family::V4, size, Duration::from_secs(120));
    if mtu >= 1280 {
        transfer_both_ways(&mut vm, Family::V6, size, Duration::from_secs(120));
    }
    let stats = vg.stats();
    for name in ["rx_drop_too_big", "tx_drop_oversize"] {
        assert_eq!(counter(&stats, "device", name), 0, "{name}");
    }
    for name in ["drop_ipv4_fragment", "drop_ipv6_too_big", "tcp_resets_sent"] {
        assert_eq!(counter(&stats, "stack", name), 0, "{name}");
    }
}

/// A bug in the data path (a deliberate panic on the guest's 40th frame, through the test-only
/// `VIRTGATE_TEST_FAULT`) ends the process at once with a clear log line, instead of leaving a dead
/// NIC behind with QEMU blocked on it: the guest sees its link go, QEMU (reconnect=) attaches to a
/// restarted virtgate, and the guest's network works again.
#[test]
fn a_failure_in_the_data_path_ends_the_process_and_qemu_reconnects() {
    let mut vg = Virtgate::start_with_env(&[("VIRTGATE_TEST_FAULT", "tx-panic-after=40")], &[]);
    let opts = VmOptions {
        reconnect_secs: Some(1),
        ..VmOptions::default()
    };
    let mut vm = Vm::boot(&vg.socket, &opts);
    // DHCP, ARP and pings: more than 40 frames, so the fault fires during these.
    let _ = vm.run(
        "udhcpc -i eth0 -n -q -t 3 -T 2; ping -c 60 -i 0.2 -W 1 10.0.2.2",
        Duration::from_secs(90),
    );
    let status = vg
        .wait_exit(Duration::from_secs(30))
        .expect("virtgate still runs");
    assert!(!status.success(), "{status:?}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGABRT),
        "{status:?}"
    );
    let log = vg.log();
    assert!(log.contains("virtgate: internal error in thread"), "{log}");
    assert!(log.contains("aborting"), "{log}");
    // QEMU is not stuck: the guest answers and sees the link down.
    let socket_dir = vg.socket.parent().unwrap().to_path_buf();
    let _vg2 = restart_after_carrier_drop(&mut vm, &socket_dir);
    vm.bring_up();
    let out = vm
        .run("ping -c 3 -W 5 10.0.2.2", Duration::from_secs(30))
        .ok();
    assert!(out.contains("0% packet loss"), "{out}");
}

/// QEMU is killed and a new one attaches to the same virtgate: the device serves it, and the stack's
/// state (the lease of this MAC, the counters) carries over.
#[test]
fn new_qemu_on_the_same_virtgate_keeps_stack_state() {
    let vg = Virtgate::start(&[]);
    {
        let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
        vm.bring_up();
        vm.sh("ping -c 3 -W 5 10.0.2.2");
        vm.kill();
    }
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    let lease = vm.bring_up();
    assert_eq!(lease["ip"], "10.0.2.15");
    let out = vm
        .run("ping -c 3 -W 5 10.0.2.2", Duration::from_secs(30))
        .ok();
    assert!(out.contains("0% packet loss"), "{out}");
    let stats = vg.stats();
    // Both guests' pings were answered by the same stack; one lease, renewed by the second boot.
    assert_eq!(counter(&stats, "stack", "icmp_tx_echo_replies"), 6);
    assert_eq!(counter(&stats, "stack", "dhcp_tx_acks"), 2);
}

/// virtgate is killed and restarted on the same socket; QEMU (reconnect=1) comes back to it, the guest
/// sees the carrier drop and return, and traffic flows again.
#[test]
fn qemu_reconnects_to_a_restarted_virtgate() {
    let mut vg = Virtgate::start(&[]);
    let opts = VmOptions {
        reconnect_secs: Some(1),
        ..VmOptions::default()
    };
    let mut vm = Vm::boot(&vg.socket, &opts);
    vm.bring_up();
    vm.sh("ping -c 2 -W 5 10.0.2.2");
    let socket_dir = vg.socket.parent().unwrap().to_path_buf();
    vg.kill();
    // The guest sees the link go.
    let _vg2 = restart_after_carrier_drop(&mut vm, &socket_dir);
    // The new virtgate has no lease for the guest: it keeps its address (INIT-REBOOT is honoured).
    let out = vm
        .run("ping -c 3 -W 5 10.0.2.2", Duration::from_secs(30))
        .ok();
    assert!(out.contains("0% packet loss"), "{out}");
    assert!(vm.is_running());
}

/// After virtgate went away: the guest sees its carrier drop (QEMU is not stuck), a new virtgate
/// starts on the same socket, QEMU (reconnect=) attaches and the carrier returns.
fn restart_after_carrier_drop(vm: &mut Vm, socket_dir: &std::path::Path) -> Virtgate {
    let down = wait_guest(
        vm,
        "cat /sys/class/net/eth0/carrier",
        "0",
        Duration::from_secs(20),
    );
    assert!(down, "carrier did not drop:\n{}", vm.console());
    let vg = Virtgate::start_in(socket_dir, &[]);
    let up = wait_guest(
        vm,
        "cat /sys/class/net/eth0/carrier",
        "1",
        Duration::from_secs(30),
    );
    assert!(
        up,
        "carrier did not return:\n{}\n{}",
        vm.console(),
        vg.log()
    );
    vg
}

fn wait_guest(vm: &mut Vm, cmd: &str, want: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if vm.run(cmd, Duration::from_secs(10)).stdout.trim() == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The DHCP client's life cycle against the server: renew (a unicast REQUEST from the bound address)
/// and release, seen from both sides.
#[test]
fn dhcp_renew_and_release() {
    let vg = Virtgate::start(&["--lease-time", "3600"]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
    vm.sh("ip link set eth0 up");
    // A resident client that releases its lease when told to (-R) and renews on SIGUSR1.
    vm.sh("udhcpc -f -i eth0 -R -t 10 -T 2 -p /run/udhcpc.pid </dev/null >/tmp/udhcpc.log 2>&1 &");
    let bound = wait_guest(
        &mut vm,
        "grep -c '^ip=10.0.2.15$' /run/lease 2>/dev/null",
        "1",
        Duration::from_secs(60),
    );
    assert!(bound, "no lease: {}", vm.sh("cat /tmp/udhcpc.log"));
    let acks = counter(&vg.stats(), "stack", "dhcp_tx_acks");
    vm.sh("kill -USR1 $(cat /run/udhcpc.pid)");
    let renewed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        counter(&vg.stats(), "stack", "dhcp_tx_acks") == acks + 1
    });
    assert!(
        renewed,
        "no ACK for the renewal: {}",
        vm.sh("cat /tmp/udhcpc.log")
    );
    // The renewal is unicast from the bound address (RFC 2131 §4.4.5): no extra DISCOVER.
    let stats = vg.stats();
    assert_eq!(counter(&stats, "stack", "dhcp_rx_discovers"), 1);
    assert_eq!(stats["guest"]["ipv4"], "10.0.2.15");
    // Release: the server forgets the lease.
    vm.sh("kill -USR2 $(cat /run/udhcpc.pid)");
    let released = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        counter(&vg.stats(), "stack", "dhcp_rx_releases") == 1
    });
    assert!(
        released,
        "no RELEASE seen: {}",
        vm.sh("cat /tmp/udhcpc.log")
    );
    assert_eq!(vg.stats()["guest"]["ipv4"], Value::Null);
}

/// The guest fragments an echo larger than the MTU (`ip_do_fragment`); virtgate reassembles it,
/// the host answers, and the reply comes back in fragments the guest reassembles (`ip_defrag`).
#[test]
fn guest_fragments_are_reassembled_both_ways() {
    let vg = Virtgate::start(&[]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up();
    let before = snmp(&mut vm);
    // 3000 bytes of data: an ICMP message of 3008 bytes in fragments of 1480, 1480 and 48.
    let out = vm
        .run("ping -c 2 -W 5 -s 3000 10.0.2.2", Duration::from_secs(30))
        .ok();
    assert!(out.contains("2 packets received, 0% packet loss"), "{out}");
    let after = snmp(&mut vm);
    let delta = |k: &str| after[k] - before[k];
    assert_eq!(delta("Ip.FragCreates"), 6);
    assert_eq!(delta("Ip.ReasmOKs"), 2);
    let stats = vg.stats();
    assert_eq!(counter(&stats, "stack", "ipv4_rx_fragments"), 6);
    assert_eq!(counter(&stats, "stack", "ipv4_reassembled"), 2);
    assert_eq!(counter(&stats, "stack", "ipv4_tx_fragments"), 6);
    assert_eq!(counter(&stats, "stack", "drop_ipv4_fragment"), 0);
}
