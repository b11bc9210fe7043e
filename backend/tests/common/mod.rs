//! Shared helpers for the device tests: a virtgate process and frame builders.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netstack::wire::{
    arp, ethernet, ipv4, ArpOperation, ArpRepr, EtherType, EthernetAddress, EthernetRepr,
    Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Repr,
};

pub const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
pub const GATEWAY_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// The DNS address: the gateway answers echo to it itself, so device tests do not depend on the
/// host's ICMP sockets (echo to the gateway address goes to the host's loopback).
pub const DNS_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 3);

/// A virtgate process on a private socket.
pub struct Virtgate {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub stats_file: PathBuf,
}

impl Virtgate {
    pub fn start(extra: &[&str]) -> Virtgate {
        Virtgate::start_with(extra, false)
    }

    /// Starts virtgate with its link-up announcements and multicast querier on (the defaults
    /// for users).
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_announcing(extra: &[&str]) -> Virtgate {
        Virtgate::start_with(extra, true)
    }

    /// Starts virtgate with extra environment variables and its log in a file of its own (see
    /// [`Virtgate::log`]).
    #[allow(dead_code)] // not every test binary uses it
    pub fn start_logged(env: &[(&str, &str)], extra: &[&str]) -> Virtgate {
        Virtgate::spawn(extra, false, env, true)
    }

    /// What a [`Virtgate::start_logged`] virtgate wrote to stderr so far.
    #[allow(dead_code)]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn start_with(extra: &[&str], announce: bool) -> Virtgate {
        Virtgate::spawn(extra, announce, &[], false)
    }

    fn spawn(extra: &[&str], announce: bool, env: &[(&str, &str)], logged: bool) -> Virtgate {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "virtgate-dev-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("vm.sock");
        let stats_file = dir.join("stats.json");
        let child = Command::new(env!("CARGO_BIN_EXE_virtgate"))
            .arg("--socket")
            .arg(&socket)
            .arg("--stats-file")
            .arg(&stats_file)
            // Never the host's resolvers: tests reach only what they create on the loopback.
            .args(["--resolv-conf", "/dev/null"])
            // A quiet link by default: the rings carry only what each test provokes.
            .args(if announce {
                &[][..]
            } else {
                &["--no-link-announce", "--no-mcast-querier"][..]
            })
            .args(extra)
            .env("RUST_LOG", if logged { "info" } else { "warn" })
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(if logged {
                Stdio::from(std::fs::File::create(dir.join("stderr.log")).unwrap())
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn virtgate");
        let vg = Virtgate {
            child,
            dir,
            socket,
            stats_file,
        };
        wait_until(Duration::from_secs(20), || vg.socket.exists());
        vg
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child with a valid signal number.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Fresh counters via SIGUSR1.
    pub fn stats(&self) -> serde_json::Value {
        let _ = std::fs::remove_file(&self.stats_file);
        self.signal(libc::SIGUSR1);
        wait_until(Duration::from_secs(10), || self.stats_file.exists());
        serde_json::from_str(&std::fs::read_to_string(&self.stats_file).unwrap()).unwrap()
    }

    /// Fresh counters once `ready` holds for them. The frontend sees used buffers as soon as the
    /// device writes them, and the device publishes its counters at the end of that batch, so a test
    /// waits for the counter that marks the end of what it did before reading the others.
    pub fn stats_when(&self, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.stats();
            if ready(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "counters never reached the expected state: {s:#}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn counter(&self, section: &str, name: &str) -> u64 {
        let s = self.stats();
        s[section][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no {section}.{name}"))
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "virtgate ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }
}

impl Drop for Virtgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `cond` until it holds; panics after `timeout`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn arp_request(target: Ipv4Address) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
    EthernetRepr {
        src: GUEST_MAC,
        dst: EthernetAddress::BROADCAST,
        ethertype: EtherType::Arp,
    }
    .emit(&mut f);
    ArpRepr {
        operation: ArpOperation::Request,
        source_hardware_addr: GUEST_MAC,
        source_protocol_addr: GUEST_IP,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut f[ethernet::HEADER_LEN..]);
    f
}

/// An echo request from the guest to the DNS address (answered by the stack itself).
pub fn echo_request(seq: u16, data: &[u8]) -> Vec<u8> {
    virtgate::frontend::frames::echo_request(DNS_IP, seq, data)
}

/// The ICMP echo reply carried by `frame`, if it is one: (seq, data).
pub fn parse_echo_reply(frame: &[u8]) -> Option<(u16, Vec<u8>)> {
    use netstack::wire::{EthernetFrame, Icmpv4Packet, Ipv4Packet};
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.dst_addr() != GUEST_MAC || eth.ethertype() != EtherType::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    Ipv4Repr::parse(&ip).ok()?;
    let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    match Icmpv4Repr::parse(&icmp).ok()? {
        Icmpv4Repr::EchoReply { seq_no, data, .. } => Some((seq_no, data.to_vec())),
        _ => None,
    }
}

/// A UDP datagram from the guest (GUEST_IP:sport) to dst:dport, in an Ethernet frame to the gateway.
pub fn udp_frame(dst: Ipv4Address, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    use netstack::wire::UdpRepr;
    let ip = Ipv4Repr {
        src: GUEST_IP,
        dst,
        protocol: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        ttl: 64,
    };
    let mut f = vec![0u8; ethernet::HEADER_LEN + ipv4::HEADER_LEN + 8 + payload.len()];
    EthernetRepr {
        src: GUEST_MAC,
        dst: GATEWAY_MAC,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut f);
    ip.emit(&mut f[ethernet::HEADER_LEN..], 9);
    let udp = &mut f[ethernet::HEADER_LEN + ipv4::HEADER_LEN..];
    udp[8..].copy_from_slice(payload);
    UdpRepr {
        src_port: sport,
        dst_port: dport,
    }
    .emit_v4(udp, GUEST_IP, dst);
    f
}

/// An IPv4 address and port.
pub type Endpoint = (Ipv4Address, u16);

/// A UDP datagram: source, destination, payload.
pub type Datagram = (Endpoint, Endpoint, Vec<u8>);

/// The UDP datagram in a frame to the guest.
pub fn parse_udp(frame: &[u8]) -> Option<Datagram> {
    use netstack::wire::{EthernetFrame, Ipv4Packet, UdpPacket};
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let r = Ipv4Repr::parse(&ip).ok()?;
    if r.protocol != IpProtocol::Udp {
        return None;
    }
    let u = UdpPacket::new_checked(ip.payload()).ok()?;
    assert!(
        u.verify_checksum_v4(r.src, r.dst),
        "UDP checksum from virtgate"
    );
    Some((
        (r.src, u.src_port()),
        (r.dst, u.dst_port()),
        u.payload().to_vec(),
    ))
}

/// A UDP echo server on loopback, answering `limit` datagrams; returns its address.
pub fn udp_echo_server(limit: usize) -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let addr = s.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        for _ in 0..limit {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// A frontend with the features QEMU acks, set up in the spec's order, with `rx_buffers` RX
/// buffers posted.
pub fn connect_with_buffers(vg: &Virtgate, rx_buffers: u16) -> virtgate::frontend::TestFrontend {
    use virtgate::frontend::{EnableOrder, TestFrontend};
    let mut fe = TestFrontend::connect(
        &vg.socket,
        TestFrontend::qemu_features(),
        EnableOrder::AfterSetup,
    )
    .expect("frontend connects");
    fe.post_rx_buffers(rx_buffers);
    fe
}

/// `virtgate ctl --api-socket API ARGS...`: (success, stdout, stderr).
pub fn ctl(api: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_virtgate"))
        .arg("ctl")
        .arg("--api-socket")
        .arg(api)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
