//! The gateway without QEMU: UDP, DNS, inbound forwards and ICMP echo between the in-process
//! frontend and real sockets on the host's loopback.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use virtgate::frontend::TestFrontend;

const T: Duration = Duration::from_secs(10);

fn connect(vg: &Virtgate) -> TestFrontend {
    connect_with_buffers(vg, 64)
}

/// Receives frames until a UDP datagram arrives (ARP requests for the guest may come first).
fn recv_udp(
    fe: &mut TestFrontend,
) -> (
    (netstack::wire::Ipv4Address, u16),
    (netstack::wire::Ipv4Address, u16),
    Vec<u8>,
) {
    for _ in 0..8 {
        let frame = fe.recv(T).expect("a frame");
        if let Some(d) = parse_udp(&frame) {
            return d;
        }
    }
    panic!("no UDP datagram");
}

#[test]
fn udp_to_the_gateway_reaches_host_loopback_and_back() {
    let server = udp_echo_server(3);
    let vg = Virtgate::start(&[]);
    let mut fe = connect(&vg);
    for i in 0..3u8 {
        fe.send(&udp_frame(GATEWAY_IP, 40000, server.port(), &[i; 100]));
        let (src, dst, payload) = recv_udp(&mut fe);
        assert_eq!(src, (GATEWAY_IP, server.port()));
        assert_eq!(dst, (GUEST_IP, 40000));
        assert_eq!(payload, vec![i; 100]);
    }
    let s = vg.stats_when(|s| s["stack"]["udp_rx_host_datagrams"] == 3);
    assert_eq!(s["stack"]["udp_tx_host_datagrams"], 3);
    assert_eq!(s["stack"]["flows_opened"], 1);
    assert_eq!(s["stack"]["flows_active"], 1);
}

#[test]
fn dns_queries_go_to_the_upstream() {
    let upstream = udp_echo_server(1);
    let vg = Virtgate::start(&["--dns-upstream", &upstream.to_string()]);
    let mut fe = connect(&vg);
    fe.send(&udp_frame(DNS_IP, 5353, 53, b"\x12\x34query"));
    let (src, dst, payload) = recv_udp(&mut fe);
    assert_eq!(src, (DNS_IP, 53));
    assert_eq!(dst, (GUEST_IP, 5353));
    assert_eq!(payload, b"\x12\x34query");
}

#[test]
fn closed_host_port_is_port_unreachable_for_the_guest() {
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let vg = Virtgate::start(&[]);
    let mut fe = connect(&vg);
    fe.send(&udp_frame(GATEWAY_IP, 40001, closed.port(), b"anyone?"));
    let frame = (0..8)
        .map(|_| fe.recv(T).expect("a frame"))
        .find(|f| f.len() > 34 && f[23] == 1)
        .expect("an ICMP message");
    // ICMP type 3 code 3, quoting our datagram's destination port.
    assert_eq!((frame[34], frame[35]), (3, 3));
    let quoted_dport = u16::from_be_bytes([frame[34 + 8 + 22], frame[34 + 8 + 23]]);
    assert_eq!(quoted_dport, closed.port());
}

#[test]
fn inbound_udp_forward_reaches_the_guest() {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let vg = Virtgate::start(&["--forward", &format!("udp:{port}:5000")]);
    let mut fe = connect(&vg);
    // The guest makes itself known (any IPv4 packet; DHCP would do it in a real guest).
    fe.send(&echo_request(1, b"hello"));
    fe.recv(T).expect("echo reply");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    client
        .send_to(b"to the guest", ("127.0.0.1", port))
        .unwrap();
    let (src, dst, payload) = recv_udp(&mut fe);
    assert_eq!(src, (GATEWAY_IP, client.local_addr().unwrap().port()));
    assert_eq!(dst, (GUEST_IP, 5000));
    assert_eq!(payload, b"to the guest");
    fe.send(&udp_frame(src.0, 5000, src.1, b"from the guest"));
    let mut buf = [0u8; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from the guest");
    assert_eq!(from.port(), port);
}

#[test]
fn forward_on_a_busy_port_is_a_startup_error() {
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtgate"))
        .args(["--socket", "/tmp/virtgate-never.sock"])
        .args(["--forward", &format!("udp:{port}:53")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("forward udp 127.0.0.1:{port}")),
        "{err}"
    );
}

/// Echo to the gateway goes to the host's loopback through an ICMP socket (ping or raw), and
/// comes back with the guest's identifier.
#[test]
fn echo_to_the_gateway_goes_through_the_host() {
    let vg = Virtgate::start(&[]);
    let mut fe = connect(&vg);
    let mut req = echo_request(7, b"via the host");
    // Re-address the request to the gateway (10.0.2.2) and fix the IPv4 checksum.
    req[33] = 2;
    req[24] = 0;
    req[25] = 0;
    let sum = netstack::wire::checksum::compute(&req[14..34]);
    req[24..26].copy_from_slice(&sum.to_be_bytes());
    fe.send(&req);
    let frame = fe.recv(T).expect("echo reply");
    assert_eq!(
        parse_echo_reply(&frame),
        Some((7, b"via the host".to_vec()))
    );
    let s = vg.stats_when(|s| s["stack"]["icmp_tx_echo_replies"] == 1);
    // As root the host allows raw ICMP sockets; elsewhere virtgate answers itself (and says so).
    let via_host = s["stack"]["icmp_tx_host_echo_requests"] == 1;
    let local = s["stack"]["icmp_host_unavailable"] == 1;
    assert!(via_host || local, "{s:#}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(via_host, "root may open raw ICMP sockets: {s:#}");
    }
}

/// `--queues 2` with both pairs in use: each UDP flow belongs to one stack shard, whichever TX
/// queue its datagrams arrive on (the guest picks the queue by CPU), so each flow has one host
/// socket; its replies leave on its shard's pair. Frames that arrived on the other pair's queue
/// are counted per pair.
#[test]
fn two_pairs_keep_each_flow_on_its_shard_whichever_queue_carries_it() {
    use virtgate::frontend::EnableOrder;
    use virtgate::virtio_net::{offered_features, Offloads};
    let server = udp_echo_server(4);
    let vg = Virtgate::start(&["--queues", "2"]);
    let mut fe = TestFrontend::connect_pairs(
        &vg.socket,
        offered_features(Offloads::NONE, 2),
        EnableOrder::AfterSetup,
        2,
    )
    .expect("frontend connects");
    for pair in fe.pairs_mut() {
        pair.post_rx_buffers(64);
    }
    vg.stats_when(|s| s["queues"]["active_pairs"] == 2);
    // A guest port whose flow to the server belongs to shard `q`.
    let port_on = |q: u32| {
        (40000..41000)
            .find(|&p| {
                netstack::stack::steering_hash(&udp_frame(GATEWAY_IP, p, server.port(), b"")) % 2
                    == q
            })
            .expect("a port")
    };
    let ports = [port_on(0), port_on(1)];
    // Each flow once on the other pair's queue, then once on its own.
    for (round, crossed) in [true, false].into_iter().enumerate() {
        for (q, &port) in ports.iter().enumerate() {
            let via = if crossed { 1 - q } else { q };
            let payload = [round as u8 * 2 + q as u8; 64];
            fe.pairs_mut()[via].send(&udp_frame(GATEWAY_IP, port, server.port(), &payload));
            let reply = fe.pairs_mut()[q]
                .recv(T)
                .expect("the reply on the flow's pair");
            let (src, dst, got) = parse_udp(&reply).expect("a UDP reply");
            assert_eq!(src, (GATEWAY_IP, server.port()));
            assert_eq!(dst, (GUEST_IP, port));
            assert_eq!(got, payload);
        }
    }
    let s = vg.stats_when(|s| s["stack"]["udp_rx_host_datagrams"] == 4);
    assert_eq!(s["stack"]["flows_opened"], 2, "one host socket per flow");
    assert_eq!(s["stack"]["flows_active"], 2);
    let pairs = s["queues"]["pairs"].as_array().unwrap();
    for pair in &pairs[..2] {
        assert_eq!(pair["tx_frames"], 2, "{}", s["queues"]);
        assert_eq!(pair["tx_cross_shard"], 1, "{}", s["queues"]);
        assert_eq!(pair["rx_frames"], 2, "{}", s["queues"]);
    }
}
