//! Floods from a hostile guest (issue 11): raw frames from a packet socket in a real guest
//! (`guest-tests/guest/flood.c`) against every table virtgate keeps. Through each flood and after
//! it, virtgate keeps answering (ping, a checksummed TCP transfer), its resident memory stays
//! under the budget documented in docs/security.md, the drops are counted by reason, and a TCP
//! connection the guest opened before the floods survives them all. One boot for all floods;
//! each flood asserts its own counter deltas.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use guest_tests::transfer::transfer_both_ways;
use guest_tests::{Family, Virtgate, Vm, VmOptions};
use serde_json::Value;

/// virtgate's resident memory must stay under this through every flood (docs/security.md).
const RSS_BUDGET_KIB: u64 = 64 * 1024;

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn delta(before: &Value, after: &Value, section: &str, name: &str) -> i64 {
    let get = |v: &Value| {
        v[section][name]
            .as_i64()
            .unwrap_or_else(|| panic!("no counter {section}.{name}"))
    };
    get(after) - get(before)
}

/// The sum of every `drop_*` counter of the stack.
fn drops(v: &Value) -> i64 {
    v["stack"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("drop_"))
        .map(|(_, v)| v.as_i64().unwrap_or(0))
        .sum()
}

#[test]
fn floods_from_a_hostile_guest_are_bounded_and_the_gateway_keeps_serving() {
    let vg = Virtgate::start(&["--dhcpv6", "stateful"]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let gwmac = "52:55:0a:00:02:02";

    // A connection that must outlive every flood: the host echoes "ab", waits for the go, sends
    // "x", then echoes what follows.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let (go, wait_go) = mpsc::channel::<()>();
    let (greeted, wait_greeted) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || -> Result<(), String> {
        let (mut s, _) = held.accept().map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        s.write_all(&b).map_err(|e| e.to_string())?;
        greeted.send(()).unwrap();
        wait_go.recv().map_err(|e| e.to_string())?;
        s.write_all(b"x").map_err(|e| e.to_string())?;
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        s.write_all(&b).map_err(|e| e.to_string())?;
        Ok(())
    });
    vm.sh(&format!(
        "tcpclient 10.0.2.2 {held_port} send ab read 2 wait 900000 send cd read 2 >/tmp/held 2>&1 &"
    ));
    wait_greeted
        .recv_timeout(Duration::from_secs(60))
        .expect("the held connection");

    // A host port that accepts connections into its backlog and never takes them.
    let syn_sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let syn_port = syn_sink.local_addr().unwrap().port().to_string();

    let floods: [(&str, u32, &str); 7] = [
        ("syn", 3000, syn_port.as_str()),
        ("udp", 5000, ""),
        ("frag", 3000, ""),
        ("nd", 3000, ""),
        ("dhcp", 3000, ""),
        ("dhcp6", 3000, ""),
        ("junk", 20000, ""),
    ];
    let mut peak_rss = 0;
    for (kind, count, port) in floods {
        let before = vg.stats();
        // During: the flood in the background while the guest pings the gateway.
        let during = vm
            .run(
                &format!(
                    "flood eth0 {gwmac} {kind} {count} {port} >/tmp/flood.out 2>&1 & f=$!; \
                     ping -c 5 -i 0.2 -W 5 10.0.2.2; wait $f; cat /tmp/flood.out"
                ),
                Duration::from_secs(300),
            )
            .stdout;
        assert!(
            during.contains(&format!("sent {count}")),
            "{kind}: the flood did not go out: {during}"
        );
        let answered = during
            .lines()
            .find_map(|l| {
                l.split(" packets received")
                    .next()?
                    .rsplit(' ')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or(0);
        assert!(
            answered >= 1,
            "{kind}: no ping answered during the flood: {during}"
        );
        // After: every ping answered, TCP both ways.
        let after_ping = vm
            .run("ping -c 3 -W 5 10.0.2.2", Duration::from_secs(30))
            .ok();
        assert!(
            after_ping.contains(" 0% packet loss"),
            "{kind}: {after_ping}"
        );
        transfer_both_ways(&mut vm, Family::V4, 256 << 10, Duration::from_secs(120));
        let after = vg.stats();
        let rss = rss_kib(vg.pid());
        peak_rss = peak_rss.max(rss);
        assert!(
            rss <= RSS_BUDGET_KIB,
            "{kind}: virtgate's VmRSS {rss} KiB is over the budget of {RSS_BUDGET_KIB} KiB"
        );
        let d = |section: &str, name: &str| delta(&before, &after, section, name);
        eprintln!(
            "{kind}: VmRSS {rss} KiB, drops +{}, flows_opened +{}, flows_refused +{}, \
             flows_evicted +{}, tcp_connections {}, flows_active {}, reasm_evicted +{}",
            drops(&after) - drops(&before),
            d("stack", "flows_opened"),
            d("stack", "flows_refused"),
            d("stack", "flows_evicted"),
            after["stack"]["tcp_connections"],
            after["stack"]["flows_active"],
            d("stack", "reasm_evicted"),
        );
        // The tables within their bounds.
        assert!(after["stack"]["tcp_connections"].as_u64().unwrap() <= 1024);
        assert!(after["stack"]["flows_active"].as_u64().unwrap() <= 4096 + 1024);
        // Each flood's drops, counted by reason.
        match kind {
            "syn" => assert!(
                d("stack", "flows_opened") + d("stack", "flows_refused") >= i64::from(count) / 2,
                "{after:#}"
            ),
            "udp" => assert!(d("stack", "flows_evicted") > 0, "{after:#}"),
            "frag" => {
                assert!(d("stack", "ipv4_rx_fragments") >= i64::from(count) / 2);
                assert!(d("stack", "reasm_evicted") > 0, "{after:#}");
            }
            "nd" => assert!(
                d("stack", "ndp_rx_neighbor_solicits") >= i64::from(count) / 2,
                "{after:#}"
            ),
            "dhcp" => assert!(d("stack", "drop_dhcp_pool_exhausted") > 0, "{after:#}"),
            "dhcp6" => assert!(d("stack", "dhcpv6_rx_messages") >= i64::from(count) / 2),
            _ => assert!(drops(&after) - drops(&before) >= i64::from(count) / 2),
        }
    }
    eprintln!("peak VmRSS {peak_rss} KiB");

    // The connection made before the floods is still there, both ways.
    go.send(()).unwrap();
    server
        .join()
        .unwrap()
        .expect("the held connection, host side");
    let held_out = vm
        .run("wait; cat /tmp/held", Duration::from_secs(60))
        .stdout;
    for want in ["got:ab", "wait: data", "got:xc"] {
        assert!(held_out.contains(want), "held connection: {held_out}");
    }
    drop(syn_sink);
}
