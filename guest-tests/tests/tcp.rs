//! TCP through the gateway with a real guest: busybox's wget and nc against servers the test runs
//! on the host's loopback, reached through the gateway address, and host clients reaching guest
//! servers through forwards.
//!
//! One dual-stack guest per offload setting serves the connection scenarios
//! ([`guest_tests::run_scenarios`]; forwards are opened at run time through the API, and each
//! scenario asserts the deltas of the counters it reads). The 64 MiB transfers and the
//! unreachable network (virtgate in a network namespace of its own) boot guests of their own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use guest_tests::transfer::{serve_on, transfer_both_ways};
use guest_tests::{parse_snmp, Family, Offloads, Virtgate, Vm, VmOptions};
use rstest::rstest;

/// The issue asks for 64 MiB each way, checksummed at both ends.
const BIG: usize = 64 << 20;

/// The booted guest, its virtgate, and the family the scenario runs over.
struct Tcp {
    vg: Virtgate,
    vm: Vm,
    family: Family,
}

impl Tcp {
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

    /// Waits until virtgate's connection table is empty (TIME-WAIT lasts 2 s): the connections
    /// of earlier scenarios are gone.
    fn wait_no_connections(&self) {
        let mut left = i64::MAX;
        for _ in 0..50 {
            left = self.ours("tcp_connections");
            if left == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{left} connections linger");
    }

    /// Opens a forward through the API for the scenario; [`Tcp::unforward`] closes it.
    fn forward(&self, spec: &str) {
        self.vg.ctl(&["forward", "add", spec]);
    }

    fn unforward(&self, spec: &str) {
        self.vg.ctl(&["forward", "remove", spec]);
    }
}

type Scenario = fn(&mut Tcp);

/// The scenarios over IPv4, then over IPv6 where the family matters (the `_v6` twin).
const SCENARIOS: &[(&str, Scenario)] = &[
    ("wget_fetches_a_page_from_the_host_v4", |t| {
        v4(t, wget_fetches_a_page_from_the_host)
    }),
    ("wget_fetches_a_page_from_the_host_v6", |t| {
        v6(t, wget_fetches_a_page_from_the_host)
    }),
    ("connection_to_a_closed_port_is_refused_v4", |t| {
        v4(t, connection_to_a_closed_port_is_refused)
    }),
    ("connection_to_a_closed_port_is_refused_v6", |t| {
        v6(t, connection_to_a_closed_port_is_refused)
    }),
    ("host_reset_resets_the_guest_connection_v4", |t| {
        v4(t, host_reset_resets_the_guest_connection)
    }),
    ("host_reset_resets_the_guest_connection_v6", |t| {
        v6(t, host_reset_resets_the_guest_connection)
    }),
    (
        "host_client_reaches_guest_server_through_a_forward",
        host_client_reaches_guest_server_through_a_forward,
    ),
    (
        "forward_to_a_closed_guest_port_resets_the_host_client",
        forward_to_a_closed_guest_port_resets_the_host_client,
    ),
    ("forward_on_the_ipv6_loopback", forward_on_the_ipv6_loopback),
    ("many_short_connections_in_a_row_and_at_once_v4", |t| {
        v4(t, many_short_connections_in_a_row_and_at_once)
    }),
    ("many_short_connections_in_a_row_and_at_once_v6", |t| {
        v6(t, many_short_connections_in_a_row_and_at_once)
    }),
    ("urgent_data_from_the_guest_arrives_urgent_v4", |t| {
        v4(t, urgent_data_from_the_guest_arrives_urgent)
    }),
    ("urgent_data_from_the_guest_arrives_urgent_v6", |t| {
        v6(t, urgent_data_from_the_guest_arrives_urgent)
    }),
    (
        "urgent_data_from_the_host_arrives_urgent_in_the_guest_v4",
        |t| v4(t, urgent_data_from_the_host_arrives_urgent_in_the_guest),
    ),
    (
        "urgent_data_from_the_host_arrives_urgent_in_the_guest_v6",
        |t| v6(t, urgent_data_from_the_host_arrives_urgent_in_the_guest),
    ),
    (
        "idle_connections_survive_keepalive_probes_both_ways",
        idle_connections_survive_keepalive_probes_both_ways,
    ),
];

fn v4(t: &mut Tcp, scenario: Scenario) {
    t.family = Family::V4;
    scenario(t);
}

fn v6(t: &mut Tcp, scenario: Scenario) {
    t.family = Family::V6;
    scenario(t);
}

/// The connection scenarios on one dual-stack guest per offload setting. virtgate probes idle
/// connections after 2 s (`--tcp-keepalive 2,1,3`, for the keepalive scenario; the guest answers
/// probes, so the other scenarios do not notice).
#[rstest]
fn tcp_scenarios(#[values(Offloads::All, Offloads::None)] offloads: Offloads) {
    let vg = Virtgate::start(&offloads.args(&["--tcp-keepalive", "2,1,3"]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up_dual_stack();
    let mut t = Tcp {
        vg,
        vm,
        family: Family::V4,
    };
    guest_tests::run_scenarios(SCENARIOS, &mut t, |t| t.vm.is_running());
    offloads.check(&mut t.vm);
}

fn wget_fetches_a_page_from_the_host(t: &mut Tcp) {
    let family = t.family;
    let port = serve_on(family, 1, |mut s| {
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let body = "hello from the host\n";
        let _ = write!(
            s,
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
            body.len()
        );
    });
    let (refused, from_host) = (t.ours("tcp_refused"), t.ours("tcp_rx_host_bytes"));
    let out =
        t.vm.run(
            &format!("wget -q -O - http://{}:{port}/", family.url_host()),
            Duration::from_secs(60),
        )
        .ok();
    assert_eq!(out, "hello from the host\n");
    assert_eq!(t.ours("tcp_refused") - refused, 0);
    assert!(t.grown("tcp_rx_host_bytes", from_host, 21) > 20);
}

fn connection_to_a_closed_port_is_refused(t: &mut Tcp) {
    let family = t.family;
    let closed = guest_tests::unused_tcp_port();
    let refused = t.ours("tcp_refused");
    let before = parse_snmp(&t.vm.sh("cat /proc/net/snmp"));
    let out = t.vm.run(
        &format!("nc {} {closed} </dev/null", family.gateway()),
        Duration::from_secs(60),
    );
    assert_ne!(out.status, 0);
    assert!(out.stdout.contains("refused"), "{}", out.stdout);
    assert_eq!(t.grown("tcp_refused", refused, 1), 1);
    let after = parse_snmp(&t.vm.sh("cat /proc/net/snmp"));
    assert_eq!(after["Tcp.AttemptFails"] - before["Tcp.AttemptFails"], 1);
}

#[rstest]
fn bulk_download_and_upload_arrive_intact(
    #[values(Family::V4, Family::V6)] family: Family,
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let vg = Virtgate::start(&offloads.args(&[]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    family.bring_up(&mut vm);
    let guest_drops = |vm: &mut Vm| -> i64 {
        // Everything that makes the guest discard a segment virtgate delivered: its receive
        // memory (prune, queue and out-of-order drops), its backlog, a closed window, and its
        // driver (a frame it could not take whole).
        let n = guest_tests::parse_snmp(&vm.sh("cat /proc/net/netstat"));
        let tcp: i64 = [
            "TcpExt.RcvPruned",
            "TcpExt.TCPRcvQDrop",
            "TcpExt.TCPOFODrop",
            "TcpExt.TCPBacklogDrop",
            "TcpExt.TCPZeroWindowDrop",
        ]
        .iter()
        .map(|k| n.get(*k).copied().unwrap_or(0))
        .sum();
        tcp + vm
            .sh("cat /sys/class/net/eth0/statistics/rx_dropped")
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    let length_errors = |vm: &mut Vm| -> i64 {
        vm.sh("cat /sys/class/net/eth0/statistics/rx_length_errors")
            .trim()
            .parse()
            .unwrap()
    };
    // Segments the guest received twice (it answers each with a D-SACK, RFC 2883): what a
    // retransmission timer resent while the guest's ACKs were late (a TCG guest starved of CPU
    // for longer than the RTO), not something lost on the way.
    let duplicates = |vm: &mut Vm| -> i64 {
        let n = guest_tests::parse_snmp(&vm.sh("cat /proc/net/netstat"));
        ["TcpExt.TCPDSACKOldSent", "TcpExt.TCPDSACKOfoSent"]
            .iter()
            .map(|k| n.get(*k).copied().unwrap_or(0))
            .sum()
    };
    let (drops_before, errors_before) = (guest_drops(&mut vm), length_errors(&mut vm));
    let duplicates_before = duplicates(&mut vm);
    transfer_both_ways(&mut vm, family, BIG, Duration::from_secs(180));
    let s = vg.stats();
    // Issue 11, defect 5: a frame over several mergeable buffers is published whole, so the
    // driver never finds "buffers missing" (rx_length_errors) and drops it.
    assert_eq!(
        length_errors(&mut vm) - errors_before,
        0,
        "the guest's driver cut frames short"
    );
    // Nothing was lost on the way (no injected loss, no queue drop), so virtgate resends only
    // what the guest itself discarded, or what reached it already (a spurious timeout, which the
    // guest reports as a duplicate).
    let dropped = guest_drops(&mut vm) - drops_before;
    let duplicated = duplicates(&mut vm) - duplicates_before;
    let resent = s["stack"]["tcp_retransmitted_segments"].as_u64().unwrap();
    assert!(
        resent == 0 || dropped > 0 || duplicated > 0,
        "{resent} segments resent though the guest discarded nothing and saw no duplicate: {s:#}"
    );
    assert!(s["stack"]["tcp_rx_host_bytes"].as_u64().unwrap() >= BIG as u64);
    let to_host = s["stack"]["tcp_tx_host_bytes"].as_u64().unwrap();
    assert!(to_host >= BIG as u64);
    // The upload reached the host socket from where the device read the guest's frames (a TSO
    // frame's payload written at once, 1448-byte segments gathered per batch): copied a second
    // time only where the socket did not take a batch whole, which a host reader draining
    // loopback leaves to a few batches at most.
    let copied = s["stack"]["tcp_tx_host_buffered_bytes"].as_u64().unwrap();
    assert!(
        copied < to_host / 2,
        "{copied} of {to_host} bytes copied on their way to the host: {s:#}"
    );
    // With offloads the bytes went as large segments both ways, with partial checksums; without,
    // never.
    let used = |section: &str, name: &str| s[section][name].as_u64().unwrap() > 0;
    let expected = offloads == Offloads::All;
    for (section, name) in [
        ("device", "tx_gso_frames"),
        ("device", "tx_csum_partial"),
        ("device", "rx_gso_frames"),
        ("device", "rx_csum_partial"),
        ("stack", "tcp_rx_large_segments"),
        ("stack", "tcp_tx_large_segments"),
    ] {
        assert_eq!(used(section, name), expected, "{section}.{name}: {s}");
    }
    offloads.check(&mut vm);
}

fn host_reset_resets_the_guest_connection(t: &mut Tcp) {
    let family = t.family;
    let port = serve_on(family, 1, |s| {
        // Close with a RST: linger 0.
        let sock = socket2::SockRef::from(&s);
        let _ = sock.set_linger(Some(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
    });
    let resets = t.ours("tcp_host_resets");
    let before = parse_snmp(&t.vm.sh("cat /proc/net/snmp"));
    let _ = t.vm.run(
        &format!("sleep 3 | nc {} {port}", family.gateway()),
        Duration::from_secs(60),
    );
    let after = parse_snmp(&t.vm.sh("cat /proc/net/snmp"));
    // The guest's established connection was reset (RFC 1213 tcpEstabResets).
    assert_eq!(after["Tcp.EstabResets"] - before["Tcp.EstabResets"], 1);
    assert_eq!(t.grown("tcp_host_resets", resets, 1), 1);
    // And virtgate forgot it (a reset connection has no TIME-WAIT).
    t.wait_no_connections();
}

/// Through the forward `spec` (to guest port 7), a host client at `host` (the forward's address)
/// has `msg` echoed by the guest's server (busybox nc running cat) and is seen by the guest from
/// `seen_from` (a gateway address). Returns once the client is gone and the forward closed.
fn echo_through_forward(t: &mut Tcp, spec: &str, host: (&str, u16), msg: &[u8], seen_from: &str) {
    t.forward(spec);
    t.vm.sh("nc -l -p 7 -e cat </dev/null >/dev/null 2>&1 &");
    t.vm.sh(
        "i=0; until netstat -ltn | grep -q ':7 ' || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done",
    );
    let mut c = TcpStream::connect(host).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
    let conns = t.vm.sh("netstat -tn");
    assert!(conns.contains(seen_from), "{conns}");
    drop(c);
    t.unforward(spec);
}

/// A forward `tcp:PORT:7`: a host client reaches a server in the guest and is seen from the
/// gateway's side.
fn host_client_reaches_guest_server_through_a_forward(t: &mut Tcp) {
    let port = guest_tests::unused_tcp_port();
    let forwarded = t.ours("tcp_forwarded");
    let spec = format!("tcp:{port}:7");
    echo_through_forward(
        t,
        &spec,
        ("127.0.0.1", port),
        b"through the forward\n",
        "10.0.2.2:",
    );
    assert_eq!(t.grown("tcp_forwarded", forwarded, 1), 1);
}

fn forward_to_a_closed_guest_port_resets_the_host_client(t: &mut Tcp) {
    let port = guest_tests::unused_tcp_port();
    let spec = format!("tcp:{port}:9");
    t.forward(&spec);
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 8];
    // The guest answers our SYN with RST: the host client's connection is reset, not left hanging.
    let r = c.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || matches!(r, Ok(0)),
        "{r:?}"
    );
    t.unforward(&spec);
}

/// A forward listening on the host's IPv6 loopback: the client on ::1 reaches the guest's
/// server over IPv6 (the guest has an IPv6 address), which sees it as the gateway, fd00::2.
fn forward_on_the_ipv6_loopback(t: &mut Tcp) {
    let port = std::net::TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .expect("IPv6 loopback")
        .port();
    let spec = format!("tcp:[::1]:{port}:7");
    echo_through_forward(t, &spec, ("::1", port), b"over ::1\n", " fd00::2:");
}

/// A small HTTP server for many connections: each gets the same short page.
fn http_server(family: Family, conns: usize) -> u16 {
    serve_on(family, conns, |mut s| {
        let mut req = [0u8; 1024];
        let _ = s.read(&mut req);
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
    })
}

fn many_short_connections_in_a_row_and_at_once(t: &mut Tcp) {
    let family = t.family;
    let port = http_server(family, 220);
    let (refused, opened) = (t.ours("tcp_refused"), t.ours("flows_opened"));
    let url = format!("http://{}:{port}/", family.url_host());
    let serial = t
        .vm
        .run(
            &format!("n=0; for i in $(seq 200); do wget -q -O - {url} | grep -q ok && n=$((n+1)); done; echo $n"),
            Duration::from_secs(300),
        )
        .ok();
    assert_eq!(serial.trim(), "200");
    let parallel = t
        .vm
        .run(
            &format!("rm -f /tmp/p*; for i in $(seq 20); do (wget -q -O /tmp/p$i {url}) & done; wait; cat /tmp/p* | grep -c ok"),
            Duration::from_secs(120),
        )
        .ok();
    assert_eq!(parallel.trim(), "20");
    assert_eq!(t.ours("tcp_refused") - refused, 0);
    assert_eq!(t.grown("flows_opened", opened, 220), 220);
    // Every connection ended: none is left in the table once TIME-WAIT (2 s) has passed.
    t.wait_no_connections();
}

/// Reads one urgent byte (MSG_OOB) from `s`, waiting up to ten seconds for it to arrive.
fn recv_urgent(s: &TcpStream) -> Option<u8> {
    use std::os::fd::AsRawFd;
    for _ in 0..1000 {
        let mut b = 0u8;
        // SAFETY: recv writes at most one byte into `b`, which outlives the call.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                (&mut b as *mut u8).cast(),
                1,
                libc::MSG_OOB | libc::MSG_DONTWAIT,
            )
        };
        if n == 1 {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// The guest's non-blocking client sends ordinary data and urgent data; the host server (without
/// SO_OOBINLINE) reads "helloOO" inline and "B" as urgent: the urgent byte crossed the gateway as
/// urgent and the stream is intact.
fn urgent_data_from_the_guest_arrives_urgent(t: &mut Tcp) {
    let family = t.family;
    let l = TcpListener::bind((family.loopback(), 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut inline = [0u8; 7];
        let ok = s.read_exact(&mut inline).is_ok();
        let urgent = recv_urgent(&s);
        let _ = tx.send((ok, inline, urgent));
    });
    let urgents = t.ours("tcp_urgent_from_guest");
    let out =
        t.vm.run(
            &format!(
                "tcpclient {} {port} send hello oob OOB sleep 1000",
                family.gateway()
            ),
            Duration::from_secs(60),
        )
        .ok();
    assert!(out.contains("connected"), "{out}");
    let (ok, inline, urgent) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(ok);
    assert_eq!(&inline, b"helloOO");
    assert_eq!(urgent, Some(b'B'));
    assert_eq!(t.grown("tcp_urgent_from_guest", urgents, 1), 1);
}

/// A host client reaches the guest's pre-forked dual-stack echo server through a forward, is seen
/// as ::ffff:10.0.2.2, and its urgent byte reaches the server as urgent.
fn urgent_data_from_the_host_arrives_urgent_in_the_guest(t: &mut Tcp) {
    let family = t.family;
    let port = guest_tests::unused_tcp_port();
    let spec = format!("tcp:{}:7", family.forward_host(port));
    t.forward(&spec);
    let urgents = t.ours("tcp_urgent_from_host");
    t.vm.sh("tcpecho 7 3 </dev/null >/tmp/echo.log 2>&1 &");
    t.vm.sh("i=0; until grep -q listening /tmp/echo.log || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done");
    let mut c = TcpStream::connect((family.loopback(), port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(b"hi").unwrap();
    let mut got = [0u8; 2];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
    socket2::SockRef::from(&c).send_out_of_band(b"!").unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = t.vm.sh("cat /tmp/echo.log");
        if seen.contains("oob:") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.contains("oob:!"), "{seen}");
    let client_port = c.local_addr().unwrap().port();
    assert!(
        seen.contains(&format!(
            "client {} port {client_port}",
            family.gateway_as_seen_by_guest_server()
        )),
        "{seen}"
    );
    assert_eq!(t.grown("tcp_urgent_from_host", urgents, 1), 1);
    drop(c);
    // tcpecho serves three clients; the rest of it is killed so that the next scenario's
    // server can listen on port 7.
    t.vm.sh("pkill tcpecho; true");
    t.unforward(&spec);
}

/// Keepalive both ways on idle connections. The guest's own probes (SO_KEEPALIVE, 1 s idle, two
/// unanswered probes end it) are answered by virtgate, so its connection lives through 6 s of
/// silence; and virtgate's probes (`--tcp-keepalive 2,1,3`) to a guest connection without
/// keepalive are answered by the guest, so nothing is reset.
fn idle_connections_survive_keepalive_probes_both_ways(t: &mut Tcp) {
    let port = serve_on(Family::V4, 2, |mut s| {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    // No idle connection of an earlier scenario for virtgate to probe meanwhile.
    t.wait_no_connections();
    let before = parse_snmp(&t.vm.sh("cat /proc/net/netstat"));
    let (probes_before, timeouts) = (
        t.ours("tcp_keepalive_probes"),
        t.ours("tcp_keepalive_timeouts"),
    );
    let out =
        t.vm.run(
            &format!(
                "tcpclient 10.0.2.2 {port} keepalive 1 send ab read 2 sleep 6000 send cd read 2"
            ),
            Duration::from_secs(60),
        )
        .ok();
    assert!(out.contains("got:ab") && out.contains("got:cd"), "{out}");
    let after = parse_snmp(&t.vm.sh("cat /proc/net/netstat"));
    let probes = after["TcpExt.TCPKeepAlive"] - before["TcpExt.TCPKeepAlive"];
    assert!(probes >= 3, "the guest sent {probes} keepalive probes");
    assert_eq!(
        t.ours("tcp_keepalive_probes") - probes_before,
        0,
        "the guest's probes kept it busy"
    );
    let out =
        t.vm.run(
            &format!("tcpclient 10.0.2.2 {port} send ef read 2 sleep 6000 send gh read 2"),
            Duration::from_secs(60),
        )
        .ok();
    assert!(out.contains("got:ef") && out.contains("got:gh"), "{out}");
    assert!(t.grown("tcp_keepalive_probes", probes_before, 2) >= 2);
    assert_eq!(t.ours("tcp_keepalive_timeouts") - timeouts, 0);
}

/// A host that cannot reach the destination (virtgate in a network namespace with no route at
/// all): the guest's connect fails with "Network is unreachable", from the ICMP error the gateway
/// sends as a router would, not with a reset.
#[rstest]
fn unreachable_network_fails_the_guest_connect_with_icmp(
    #[values(Offloads::All, Offloads::None)] offloads: Offloads,
) {
    let vg = Virtgate::start_isolated(&offloads.args(&[]));
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up();
    let before = guest_tests::parse_snmp(&vm.sh("cat /proc/net/snmp"));
    let out = vm.run("tcpclient 192.0.2.1 80 send x", Duration::from_secs(60));
    assert_eq!(out.status, 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("connect: Network is unreachable"),
        "{}",
        out.stdout
    );
    let after = guest_tests::parse_snmp(&vm.sh("cat /proc/net/snmp"));
    assert!(
        after["IcmpMsg.InType3"] > before.get("IcmpMsg.InType3").copied().unwrap_or(0),
        "the guest counted no ICMP unreachable"
    );
    let s = vg.stats();
    assert_eq!(s["stack"]["tcp_resets_sent"], 0, "{s:#}");
    assert!(s["stack"]["icmp_tx_errors"].as_u64().unwrap() >= 1, "{s:#}");
    offloads.check(&mut vm);
}
