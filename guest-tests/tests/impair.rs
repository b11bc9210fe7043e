//! Link impairments against a real guest kernel: each of netem's behaviours drives the guest's
//! TCP and UDP, and what the guest counted (`/proc/net/snmp`, `/proc/net/netstat`) is checked
//! against what virtgate says it did (the impairment rules' counters).
//!
//! One guest per offload setting runs every scenario in turn; the rules change through the API
//! between scenarios (as a test suite would), and each scenario works on its own counter deltas.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::Duration;

use guest_tests::transfer::{download, md5_of, serve_on, transfer_both_ways, upload};
use guest_tests::{Family, Offloads, Virtgate, Vm, VmOptions};
use rstest::rstest;
use serde_json::Value;

const MIB: usize = 1 << 20;
/// The sending guest's counters that move when it sees reordering or undoes a retransmission
/// that reordering made look necessary.
const REORDER_SEEN: &[&str] = &[
    "TcpExt.TCPSACKReorder",
    "TcpExt.TCPTSReorder",
    "TcpExt.TCPRenoReorder",
    "TcpExt.TCPDSACKRecv",
    "TcpExt.TCPDSACKUndo",
    "TcpExt.TCPFullUndo",
    "TcpExt.TCPPartialUndo",
    "TcpExt.TCPLossUndo",
    "TcpExt.TCPSpuriousRTOs",
];
const LONG: Duration = Duration::from_secs(300);

/// Every counter the guest keeps for IP, ICMP, TCP and UDP (both families), by `Proto.Name`.
fn guest_counters(vm: &mut Vm) -> HashMap<String, i64> {
    let mut c = guest_tests::parse_snmp(&vm.sh("cat /proc/net/snmp /proc/net/netstat"));
    for line in vm.sh("cat /proc/net/snmp6").lines() {
        let mut w = line.split_whitespace();
        if let (Some(name), Some(v)) = (w.next(), w.next().and_then(|v| v.parse().ok())) {
            c.insert(format!("Ip6.{name}"), v);
        }
    }
    c
}

/// `after - before` for each counter named.
fn delta(before: &HashMap<String, i64>, after: &HashMap<String, i64>, names: &[&str]) -> i64 {
    names
        .iter()
        .map(|n| after.get(*n).copied().unwrap_or(0) - before.get(*n).copied().unwrap_or(0))
        .sum()
}

/// Installs `rules` (fresh counters); returns the state.
fn impair(vg: &Virtgate, rules: &str) -> Value {
    serde_json::from_str(&vg.ctl(&["impair", rules])).unwrap()
}

fn impair_state(vg: &Virtgate) -> Value {
    serde_json::from_str(&vg.ctl(&["impair"])).unwrap()
}

/// Rule `i`'s counter `name`.
fn rule(state: &Value, i: usize, name: &str) -> i64 {
    state["rules"][i]["counters"][name]
        .as_i64()
        .unwrap_or_else(|| panic!("no rule {i} counter {name}: {state:#}"))
}

/// The number in `text` after `key`, up to `end` (or white space).
fn number_after<T: std::str::FromStr>(text: &str, key: &str, end: char) -> T {
    text.split(key)
        .nth(1)
        .and_then(|v| v.split(|c: char| c == end || c.is_whitespace()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number after {key:?} in {text}"))
}

fn stack(vg: &Virtgate, name: &str) -> i64 {
    vg.counter("stack", name)
}

#[rstest]
fn impairments_drive_the_guest_kernel(#[values(Offloads::All, Offloads::None)] offloads: Offloads) {
    let vg = Virtgate::start(&offloads.args(&["--impair-seed", "7"]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();

    loss_is_repaired_by_both_senders(&vg, &mut vm);
    corruption_is_caught_by_the_guests_checksums(&vg, &mut vm);
    reordering_is_seen_and_repaired(&vg, &mut vm);
    delay_shows_in_ping_and_tcps_rtt(&vg, &mut vm);
    a_rate_limits_throughput_both_ways(&vg, &mut vm);
    a_scheduled_outage_costs_an_rto_not_the_connection(&vg, &mut vm);
    a_mix_of_everything_still_moves_bytes_intact(&vg, &mut vm);

    vg.ctl(&["impair", "--clear"]);
    // The driver negotiated the offloads asked for (the checksum errors were the scenarios').
    let features = vm.virtio_features();
    let tso = (1 << 7) | (1 << 11);
    assert_eq!(
        features & tso != 0,
        offloads == Offloads::All,
        "{features:#x}"
    );
}

/// Loss of 2% each way: 16 MiB each way over IPv4 and 4 MiB over IPv6 arrive intact; every data
/// segment the link dropped was resent by its sender (the guest's counters for its own, virtgate's
/// for its own).
fn loss_is_repaired_by_both_senders(vg: &Virtgate, vm: &mut Vm) {
    let before = guest_counters(vm);
    let ours_before = stack(vg, "tcp_retransmits") + stack(vg, "tcp_fast_retransmits");
    impair(vg, "both: loss 2%");
    transfer_both_ways(vm, Family::V4, 16 * MIB, LONG);
    transfer_both_ways(vm, Family::V6, 4 * MIB, LONG);
    let state = impair_state(vg);
    let after = guest_counters(vm);
    // Rule 0 is the to-guest half of "both", rule 1 the from-guest half.
    let to_guest_data = rule(&state, 0, "dropped_tcp_data");
    let from_guest_data = rule(&state, 1, "dropped_tcp_data");
    assert!(
        rule(&state, 0, "dropped") > 0 && rule(&state, 1, "dropped") > 0,
        "{state:#}"
    );
    let resent = delta(&before, &after, &["Tcp.RetransSegs"]);
    let repaired = delta(
        &before,
        &after,
        &[
            "TcpExt.TCPFastRetrans",
            "TcpExt.TCPTimeouts",
            "TcpExt.TCPLossProbes",
        ],
    );
    if from_guest_data > 0 {
        assert!(
            resent > 0 && repaired > 0,
            "{from_guest_data} lost, {resent} resent"
        );
    }
    let ours = stack(vg, "tcp_retransmits") + stack(vg, "tcp_fast_retransmits") - ours_before;
    eprintln!(
        "loss: data segments lost to the guest {to_guest_data}, from it {from_guest_data}; guest resent {resent} ({repaired} repairs), virtgate {ours}"
    );
    if to_guest_data > 0 {
        assert!(
            ours > 0,
            "{to_guest_data} of virtgate's data segments lost, none resent"
        );
    }
    vg.ctl(&["impair", "--clear"]);
}

/// One bit flipped in ten TCP data segments (the 20th to the 29th, so that some always are) and in
/// 5% of UDP datagrams to the guest (IPv4): the guest's checksum errors equal virtgate's count of
/// flips that only a checksum can catch. A flip in the IPv4 header is caught by its own checksum
/// (InHdrErrors); the transfer still arrives intact.
fn corruption_is_caught_by_the_guests_checksums(vg: &Virtgate, vm: &mut Vm) {
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = echo.local_addr().unwrap().port();
    echo.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let before = guest_counters(vm);
    impair(
        vg,
        "to-guest: ipv4 tcp data frames 20-29: corrupt 100%; to-guest: ipv4 udp: corrupt 5%",
    );
    download(vm, Family::V4, 8 * MIB, LONG);
    // The echo starts with the burst: its idle timeout must not run during the download (which
    // takes longer than it on a loaded machine).
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf) {
            let _ = echo.send_to(&buf[..n], from);
        }
    });
    let out = vm
        .run(&format!("udptool burst 10.0.2.2 {port} 400 300"), LONG)
        .ok();
    let state = impair_state(vg);
    let after = guest_counters(vm);
    let tcp = rule(&state, 0, "corrupted_tcp");
    let udp = rule(&state, 1, "corrupted_udp");
    eprintln!(
        "corruption: flips caught by TCP {tcp}, UDP {udp}, network header {}+{}, other {}+{}; {out}",
        rule(&state, 0, "corrupted_network"),
        rule(&state, 1, "corrupted_network"),
        rule(&state, 0, "corrupted_other"),
        rule(&state, 1, "corrupted_other"),
    );
    assert!(tcp > 0 && udp > 0, "{state:#}\n{out}");
    assert_eq!(
        delta(&before, &after, &["Tcp.InCsumErrors"]),
        tcp,
        "{state:#}"
    );
    assert_eq!(
        delta(&before, &after, &["Udp.InCsumErrors"]),
        udp,
        "{state:#}"
    );
    let ip_header = rule(&state, 0, "corrupted_network") + rule(&state, 1, "corrupted_network");
    assert!(
        delta(&before, &after, &["Ip.InHdrErrors"]) >= ip_header,
        "{state:#}"
    );
    vg.ctl(&["impair", "--clear"]);
}

/// A quarter of the data segments each way overtake the rest (which wait 10 ms): the receiving
/// guest queues out-of-order segments, the sending guest detects the reordering from virtgate's
/// SACKs; both transfers arrive intact.
fn reordering_is_seen_and_repaired(vg: &Virtgate, vm: &mut Vm) {
    let before = guest_counters(vm);
    impair(vg, "both: tcp data: delay 10ms reorder 25%");
    transfer_both_ways(vm, Family::V4, 8 * MIB, LONG);
    let state = impair_state(vg);
    let after = guest_counters(vm);
    assert!(
        rule(&state, 0, "reordered") > 0 && rule(&state, 1, "reordered") > 0,
        "{state:#}"
    );
    let ofo = delta(&before, &after, &["TcpExt.TCPOFOQueue"]);
    eprintln!(
        "reorder: reordered {} to the guest, {} from it; guest OFO queued {ofo}, reorder seen {}",
        rule(&state, 0, "reordered"),
        rule(&state, 1, "reordered"),
        delta(&before, &after, REORDER_SEEN)
    );
    assert!(
        ofo > 0,
        "the guest queued no out-of-order segment: {state:#}"
    );
    // Reordering seen through SACK or timestamps, or a retransmission found spurious and undone
    // (virtgate sends no D-SACK, so TCPDSACKRecv alone could not show it).
    let detected = delta(&before, &after, REORDER_SEEN);
    assert!(
        detected > 0,
        "the sending guest never saw reordering: {state:#}"
    );
    vg.ctl(&["impair", "--clear"]);
}

/// 50 ms each way: ping's round trip and TCP's smoothed RTT are at least 100 ms.
fn delay_shows_in_ping_and_tcps_rtt(vg: &Virtgate, vm: &mut Vm) {
    let port = serve_on(Family::V4, 1, |mut s| {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    impair(vg, "both: delay 50ms");
    let ping = vm.run("ping -c 3 -i 0.3 10.0.2.3", LONG).ok();
    let min_ms: f64 = number_after(&ping, "min/avg/max = ", '/');
    assert!(min_ms >= 100.0, "{ping}");
    let info = vm
        .run(
            &format!("tcpclient 10.0.2.2 {port} send a read 1 send b read 1 send c read 1 info -"),
            LONG,
        )
        .ok();
    let rtt_us: u64 = number_after(&info, "rtt_us=", '\n');
    assert!(rtt_us >= 100_000, "{info}");
    let state = impair_state(vg);
    assert!(
        rule(&state, 0, "delayed") >= 6 && rule(&state, 1, "delayed") >= 6,
        "{state:#}"
    );
    vg.ctl(&["impair", "--clear"]);
}

/// 20 Mbit/s each way: neither direction beats it (headers count on the link, so the payload
/// rate is a little lower), and where the unlimited link is far faster (measured now, in this
/// run), the limited one reaches at least half of it.
fn a_rate_limits_throughput_both_ways(vg: &Virtgate, vm: &mut Vm) {
    const RATE: f64 = 20e6;
    let size = 4 * MIB;
    let mbit = |d: Duration| (size * 8) as f64 / d.as_secs_f64();
    let free_down = mbit(download(vm, Family::V4, size, LONG));
    let free_up = mbit(upload(vm, Family::V4, size, LONG));
    impair(vg, "both: rate 20mbit");
    let down = mbit(download(vm, Family::V4, size, LONG));
    let up = mbit(upload(vm, Family::V4, size, LONG));
    let state = impair_state(vg);
    eprintln!(
        "rate: unlimited {:.0}/{:.0} Mbit/s, limited {:.1}/{:.1} Mbit/s (down/up)",
        free_down / 1e6,
        free_up / 1e6,
        down / 1e6,
        up / 1e6
    );
    for (limited, free) in [(down, free_down), (up, free_up)] {
        assert!(
            limited <= RATE * 1.05,
            "{limited} bit/s through a {RATE} bit/s link: {state:#}"
        );
        if free >= 2.0 * RATE {
            assert!(
                limited >= RATE * 0.5,
                "{limited} bit/s of {RATE} (unlimited: {free}): {state:#}"
            );
        }
    }
    assert!(rule(&state, 0, "rate_queued") > 0 && rule(&state, 1, "rate_queued") > 0);
    vg.ctl(&["impair", "--clear"]);
}

/// A 1 s outage scheduled in the middle of an upload: the guest's connection lives through it
/// with a retransmission timeout, and the bytes arrive intact.
fn a_scheduled_outage_costs_an_rto_not_the_connection(vg: &Virtgate, vm: &mut Vm) {
    const SIZE: usize = 8 * MIB;
    let port = serve_on(Family::V4, 1, |mut s| {
        let mut got = vec![0u8; SIZE];
        if s.read_exact(&mut got).is_ok() {
            let _ = writeln!(s, "{}", md5_of(&got));
        }
    });
    // The file is made first, so that the transfer starts right after the schedule is set.
    vm.sh(&format!(
        "dd if=/dev/urandom of=/tmp/up bs=1024 count={} 2>/dev/null",
        SIZE / 1024
    ));
    let local = vm.sh("md5sum /tmp/up");
    let before = guest_counters(vm);
    let lost_before = vg.counter("device", "tx_loss_injected");
    // 8 MiB at 16 Mbit/s takes about 4 s; the outage runs from 0.8 s to 1.8 s after this.
    impair(vg, "both: rate 16mbit");
    vg.ctl(&[
        "impair",
        "--schedule",
        "800ms=both: loss 100%",
        "--schedule",
        "1800ms=restore",
    ]);
    let remote = vm.run(&format!("nc 10.0.2.2 {port} </tmp/up"), LONG).ok();
    assert_eq!(
        remote.split_whitespace().next(),
        local.split_whitespace().next(),
        "the host received other bytes than the guest sent"
    );
    let after = guest_counters(vm);
    let lost = vg.counter("device", "tx_loss_injected") - lost_before;
    assert!(lost > 0, "the outage dropped none of the guest's frames");
    let timeouts = delta(&before, &after, &["TcpExt.TCPTimeouts"]);
    eprintln!("outage: {lost} guest frames lost, {timeouts} RTOs");
    assert!(timeouts > 0, "{lost} frames lost without a timeout");
    let state = impair_state(vg);
    assert_eq!(
        state["schedule"].as_array().map(Vec::len),
        Some(0),
        "{state:#}"
    );
    assert_eq!(state["rules"][0]["rule"], "to-guest: rate 16mbit");
    vg.ctl(&["impair", "--clear"]);
}

/// Loss, duplication, reordering and jittered delay at once, both families: intact both ways.
/// Each action happened (counted over both directions: hundreds of frames each way make a miss
/// vanishingly unlikely at these rates).
fn a_mix_of_everything_still_moves_bytes_intact(vg: &Virtgate, vm: &mut Vm) {
    impair(
        vg,
        "both: loss 2% duplicate 2% delay 5ms jitter 2ms reorder 10%",
    );
    for family in [Family::V4, Family::V6] {
        transfer_both_ways(vm, family, 4 * MIB, LONG);
    }
    let state = impair_state(vg);
    for c in ["dropped", "duplicated", "reordered", "delayed"] {
        assert!(
            rule(&state, 0, c) + rule(&state, 1, c) > 0,
            "{c}: {state:#}"
        );
    }
    for i in 0..2 {
        assert!(rule(&state, i, "delayed") > 0, "rule {i}: {state:#}");
    }
    vg.ctl(&["impair", "--clear"]);
}
