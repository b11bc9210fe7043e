//! The control API through `virtgate ctl`, against a running virtgate driven by the in-process
//! frontend.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use virtgate::frontend::{EnableOrder, TestFrontend};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

const T: Duration = Duration::from_secs(10);

fn ping(fe: &mut TestFrontend, seq: u16) {
    fe.send(&echo_request(seq, b"api"));
    let frame = fe.recv(T).expect("echo reply");
    assert_eq!(parse_echo_reply(&frame).map(|r| r.0), Some(seq));
}

#[test]
fn stats_metrics_coalescing_and_capture_through_ctl() {
    let dir = std::env::temp_dir().join(format!("virtgate-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let mut vg = Virtgate::start(&["--api-socket", api.to_str().unwrap()]);
    // Without EVENT_IDX every signal is wanted: the interrupt count is moderation's alone.
    let features = TestFrontend::qemu_features() & !(1 << VIRTIO_RING_F_EVENT_IDX);
    let mut fe = TestFrontend::connect(&vg.socket, features, EnableOrder::AfterSetup).unwrap();
    fe.post_rx_buffers(64);
    ping(&mut fe, 0);

    // Stats as JSON, and the same counters for Prometheus.
    let (ok, out, err) = ctl(&api, &["stats", "--json"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["device"]["rx_frames"], 1);
    // The same at a glance: pair 0 wrote the one echo reply into the guest's buffers.
    let (ok, text, err) = ctl(&api, &["stats"]);
    assert!(ok, "{err}");
    let pair0 = text
        .lines()
        .find(|l| l.starts_with("0 "))
        .unwrap_or_else(|| panic!("no row for pair 0: {text}"));
    assert_eq!(pair0.split_whitespace().nth(1), Some("1"), "{text}");
    assert!(text.starts_with("guest        mac "), "{text}");
    let (ok, metrics, _) = ctl(&api, &["metrics"]);
    assert!(ok);
    assert!(metrics.contains(
        "# TYPE virtgate_device_rx_frames_total counter\nvirtgate_device_rx_frames_total 1\n"
    ));
    assert!(metrics.contains("# TYPE virtgate_stack_tcp_connections gauge\n"));
    // Per queue pair, labelled; and how many pairs are in use.
    assert!(
        metrics.contains(
            "# TYPE virtgate_queue_rx_frames_total counter\nvirtgate_queue_rx_frames_total{pair=\"0\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("virtgate_queue_pairs_active 1\n"));
    assert_eq!(stats["queues"]["pairs"][0]["rx_frames"], 1);

    // Moderation at run time: from one interrupt per reply to one per eight.
    let (ok, out, _) = ctl(&api, &["coalesce"]);
    assert!(ok);
    assert!(out.contains("\"rx_frames\": 0"), "{out}");
    let (ok, _, err) = ctl(&api, &["coalesce", "--rx-frames", "8"]);
    assert!(!ok, "a frame threshold without a timer is refused");
    assert!(err.contains("rx_frames needs a timer"), "{err}");
    let (ok, out, err) = ctl(
        &api,
        &["coalesce", "--rx-frames", "8", "--rx-usecs-abs", "1000000"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"rx_frames\": 8"), "{out}");
    let before = vg.counter("device", "rx_interrupts");
    for seq in 1..=16 {
        ping(&mut fe, seq);
    }
    let after = vg.stats_when(|s| s["device"]["rx_interrupts"].as_u64() == Some(before + 2));
    assert_eq!(after["device"]["rx_frames"], 17);

    // A capture started and stopped at run time holds what crossed in between.
    let file = dir.join("run.pcapng");
    let (ok, _, err) = ctl(&api, &["capture", "start", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    ping(&mut fe, 100);
    let (ok, out, _) = ctl(&api, &["capture", "stop"]);
    assert!(ok);
    assert!(out.contains("\"stopped\": true"), "{out}");
    let tshark = Command::new("tshark")
        .args([
            "-r",
            file.to_str().unwrap(),
            "-T",
            "fields",
            "-e",
            "icmp.type",
        ])
        .output()
        .expect("tshark (scripts/setup.sh installs it)");
    assert_eq!(String::from_utf8_lossy(&tshark.stdout), "8\n0\n");
    let (ok, _, err) = ctl(&api, &["capture", "start", "/nonexistent/dir/x.pcapng"]);
    assert!(!ok && err.contains("/nonexistent/dir"), "{err}");

    // The link: down closes the connection and refuses the next; up serves again, with the
    // stack's state kept.
    let (ok, out, _) = ctl(&api, &["link", "down"]);
    assert!(ok && out.contains("\"up\": false"), "{out}");
    wait_until(T, || {
        TestFrontend::connect(&vg.socket, features, EnableOrder::AfterSetup).is_err()
    });
    let (ok, out, _) = ctl(&api, &["link", "up"]);
    assert!(ok && out.contains("\"up\": true"), "{out}");
    drop(fe);
    let mut fe = TestFrontend::connect(&vg.socket, features, EnableOrder::AfterSetup).unwrap();
    fe.post_rx_buffers(16);
    ping(&mut fe, 200);
    let (_, out, _) = ctl(&api, &["link"]);
    assert!(out.contains("\"up\": true"), "{out}");
    assert_eq!(vg.counter("stack", "icmp_tx_echo_replies"), 19);

    // Forwards at run time: opened, listed, used (the stack opens the guest side: a SYN to the
    // frontend's address), closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("tcp:127.0.0.1:{port}:7");
    let (ok, _, err) = ctl(&api, &["forward", "add", &spec]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&api, &["forward", "add", &spec]);
    assert!(!ok && err.contains("already listens"), "{err}");
    let (_, list, _) = ctl(&api, &["forward", "list"]);
    assert!(
        list.contains(&format!("\"host\": \"127.0.0.1:{port}\"")),
        "{list}"
    );
    let _client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the forward listens");
    wait_until(T, || vg.counter("stack", "tcp_forwarded") == 1);
    let (ok, _, err) = ctl(&api, &["forward", "remove", &spec]);
    assert!(ok, "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "closed"
    );
    let (ok, _, err) = ctl(&api, &["forward", "remove", &spec]);
    assert!(!ok && err.contains("no such forward"), "{err}");
    let (ok, _, err) = ctl(&api, &["forward", "add", "sctp:1:2"]);
    assert!(!ok && err.contains("tcp or udp"), "{err}");

    // Unknown endpoints and methods are clear errors.
    let e = virtgate::api::request(&api, "GET", "/nothing", None).unwrap_err();
    assert!(e.starts_with("404"), "{e}");
    let e = virtgate::api::request(&api, "DELETE", "/stats", None).unwrap_err();
    assert!(e.starts_with("405"), "{e}");
    assert!(vg.terminate().success());
    assert!(!api.exists(), "the API socket is removed at exit");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The exerciser through `virtgate ctl`: frames injected as hex and from a capture file reach the
/// guest's RX queue byte for byte, in order, and are counted; probes use the learned guest;
/// bad requests are refused with the reason and send nothing.
#[test]
fn inject_and_probe_through_ctl() {
    let dir = std::env::temp_dir().join(format!("virtgate-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let mut vg = Virtgate::start(&["--api-socket", api.to_str().unwrap()]);
    let mut fe = TestFrontend::connect(
        &vg.socket,
        TestFrontend::qemu_features(),
        EnableOrder::AfterSetup,
    )
    .unwrap();
    fe.post_rx_buffers(64);
    ping(&mut fe, 0); // the guest's MAC and address are learned from this

    // Hex, exactly as given: a runt, a frame with a wrong checksum, a frame of another EtherType.
    let runt = "5254001234560102";
    let odd = "52:54:00:12:34:56 52:55:0a:00:02:02 88 b5 de ad be ef";
    let (ok, out, err) = ctl(&api, &["inject", "--hex", runt, "--hex", odd]);
    assert!(ok, "{err}");
    assert!(out.contains("\"injected\": 2"), "{out}");
    assert_eq!(
        fe.recv(T).unwrap(),
        virtgate::pcapfile::parse_hex(runt, 100).unwrap()
    );
    assert_eq!(
        fe.recv(T).unwrap(),
        virtgate::pcapfile::parse_hex(odd, 100).unwrap()
    );

    // A capture file replays in order; --fix-checksums repairs what it can; spaced frames
    // arrive no sooner than asked.
    let mut bad = echo_request(9, b"replayed");
    bad[14 + 10] ^= 0xff; // the IPv4 header checksum
    let file = dir.join("in.pcapng");
    let mut cap = virtgate::capture::Capture::start(&file).unwrap();
    assert!(cap.record(virtgate::capture::Direction::Inbound, &bad, None));
    assert!(cap.record(virtgate::capture::Direction::Inbound, &[1u8; 60], None));
    drop(cap);
    let start = std::time::Instant::now();
    let (ok, _, err) = ctl(
        &api,
        &["inject", file.to_str().unwrap(), "--interval-us", "200000"],
    );
    assert!(ok, "{err}");
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(fe.recv(T).unwrap(), bad);
    assert_eq!(fe.recv(T).unwrap(), vec![1u8; 60]);
    let (ok, _, err) = ctl(&api, &["inject", file.to_str().unwrap(), "--fix-checksums"]);
    assert!(ok, "{err}");
    assert_eq!(fe.recv(T).unwrap(), echo_request(9, b"replayed"));
    assert_eq!(fe.recv(T).unwrap(), vec![1u8; 60]);
    let s = vg.stats_when(|s| s["stack"]["rx_injected_frames"] == 6);
    assert_eq!(s["stack"]["drop_inject_queue_full"], 0);

    // Probes: the list, one probe's help, and a probe to the learned guest.
    let (ok, list, _) = ctl(&api, &["probe", "list"]);
    assert!(ok);
    assert_eq!(list.lines().count(), netstack::probe::PROBES.len());
    assert!(list.contains("ipv4-frag-reversed"), "{list}");
    let (ok, help, _) = ctl(&api, &["probe", "ipv4-frag", "--help"]);
    assert!(
        ok && help.contains("--fragment") && help.contains("default 1024"),
        "{help}"
    );
    let (ok, out, err) = ctl(&api, &["probe", "ipv4-frag-reversed", "--count", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"frames\": 6"), "{out}");
    let mut offsets = Vec::new();
    for _ in 0..6 {
        let f = fe.recv(T).unwrap();
        assert_eq!(&f[..6], &[0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let ip = netstack::wire::Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(
            ip.dst_addr(),
            netstack::wire::Ipv4Address::new(10, 0, 2, 15)
        );
        offsets.push(ip.frag_offset());
    }
    assert_eq!(offsets, [2048, 1024, 0, 2048, 1024, 0]);
    let s = vg.stats_when(|s| s["stack"]["probes_sent"] == 1);
    assert_eq!(s["stack"]["rx_injected_frames"], 12);

    // Emulated path MTUs: set, shown, refused when wrong, cleared.
    let (ok, out, err) = ctl(&api, &["path-mtu", "10.0.2.2=576", "2001:db8::/32=1280"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("10.0.2.2/32=576") && out.contains("2001:db8::/32=1280"),
        "{out}"
    );
    let (ok, out, _) = ctl(&api, &["path-mtu"]);
    assert!(ok && out.contains("10.0.2.2/32=576"), "{out}");
    let (ok, _, err) = ctl(&api, &["path-mtu", "10.0.2.2=10"]);
    assert!(!ok && err.contains("at least 68"), "{err}");
    let (ok, out, _) = ctl(&api, &["path-mtu", "--clear"]);
    assert!(ok && out.contains("\"paths\": []"), "{out}");

    // TCP options of new connections: shown, set from a list, refused when unknown.
    let (ok, out, _) = ctl(&api, &["tcp-options"]);
    assert!(
        ok && out.contains("\"timestamps\": true") && out.contains("\"window_scale\": true"),
        "{out}"
    );
    let (ok, out, err) = ctl(&api, &["tcp-options", "sack,wscale"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("\"timestamps\": false") && out.contains("\"sack\": true"),
        "{out}"
    );
    let (ok, out, _) = ctl(&api, &["tcp-options"]);
    assert!(ok && out.contains("\"timestamps\": false"), "{out}");
    let (ok, _, err) = ctl(&api, &["tcp-options", "mss"]);
    assert!(!ok && err.contains("unknown TCP option"), "{err}");
    let (ok, out, _) = ctl(&api, &["tcp-options", "all"]);
    assert!(ok && out.contains("\"timestamps\": true"), "{out}");
    // Bodies the API refuses rather than half-applies: an unknown field, a number for a boolean;
    // and a method it does not serve.
    for body in [r#"{"ts": false}"#, r#"{"sack": 0}"#, "[]"] {
        let req = format!(
            "PUT /tcp-options HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert!(status_of(&api, req.as_bytes()).contains("400"), "{body}");
    }
    assert!(status_of(&api, b"POST /tcp-options HTTP/1.1\r\n\r\n").contains("405"));
    let (_, out, _) = ctl(&api, &["tcp-options"]);
    assert!(out.contains("\"sack\": true"), "unchanged: {out}");

    // The multicast querier's view (off in these quiet device tests).
    let (ok, out, _) = ctl(&api, &["multicast"]);
    assert!(
        ok && out.contains("\"querier\": false") && out.contains("\"ipv4\": []"),
        "{out}"
    );

    // Refusals say why; nothing is sent.
    let (ok, _, err) = ctl(&api, &["probe", "no-such"]);
    assert!(!ok && err.contains("no probe called no-such"), "{err}");
    let (ok, _, err) = ctl(&api, &["probe", "ipv4-echo", "--bogus", "1"]);
    assert!(!ok && err.contains("unknown parameter bogus"), "{err}");
    let (ok, _, err) = ctl(&api, &["probe", "ipv4-echo", "--count"]);
    assert!(!ok && err.contains("needs a value"), "{err}");
    let (ok, _, err) = ctl(&api, &["inject", "--hex", "abc"]);
    assert!(!ok && err.contains("odd number"), "{err}");
    let (ok, _, err) = ctl(&api, &["inject", "/nonexistent.pcap"]);
    assert!(!ok && err.contains("/nonexistent.pcap"), "{err}");
    for body in [
        serde_json::json!({}),
        serde_json::json!({"frames": "ab"}),
        serde_json::json!({"frames": [1]}),
        serde_json::json!({"frames": ["abcd"], "file": "/x"}),
        serde_json::json!({"frames": ["abcd"], "interval_us": -1}),
        serde_json::json!({"frames": ["abcd"], "interval_us": 100000000}),
        serde_json::json!({"frames": ["abcd"], "fix_checksums": "yes"}),
        serde_json::json!({"frames": ["abcd"], "extra": 1}),
    ] {
        let e = virtgate::api::request(&api, "POST", "/inject", Some(&body)).unwrap_err();
        assert!(e.starts_with("400"), "{body}: {e}");
    }
    let e = virtgate::api::request(
        &api,
        "POST",
        "/probe",
        Some(&serde_json::json!({"params": {}})),
    )
    .unwrap_err();
    assert!(e.starts_with("400"), "{e}");
    assert_eq!(vg.counter("stack", "rx_injected_frames"), 12);
    assert!(
        fe.recv(Duration::from_millis(300)).is_none(),
        "nothing more was sent"
    );
    assert!(vg.terminate().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A raw request on the API socket; the reply's status line.
fn status_of(api: &Path, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(api).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let _ = s.write_all(request);
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.lines().next().unwrap_or_default().to_string()
}

/// Clients that hold a connection without finishing a request hold only their own thread: others
/// are served meanwhile; past the bound a client is told 503 at once; and oversized or malformed
/// requests are refused with 400, never served partly.
#[test]
fn slow_and_hostile_api_clients_cannot_hold_the_api() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let dir = std::env::temp_dir().join(format!("virtgate-api-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let mut vg = Virtgate::start(&["--api-socket", api.to_str().unwrap()]);
    let t0 = std::time::Instant::now();
    while !api.exists() && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Three clients that sent half a request line and stopped.
    let mut idle: Vec<UnixStream> = (0..3)
        .map(|_| {
            let mut s = UnixStream::connect(&api).unwrap();
            s.write_all(b"GET /st").unwrap();
            s
        })
        .collect();
    let (ok, out, err) = ctl(&api, &["stats", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"device\""));
    // ...while the idle clients are still waiting for their answers: nothing was served in turn.
    for s in &idle {
        use std::io::Read;
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let e = (&mut &*s)
            .read(&mut b)
            .expect_err("an idle client was answered");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    }
    // Filled up: one more is refused at once.
    for _ in 3..8 {
        let mut s = UnixStream::connect(&api).unwrap();
        s.write_all(b"GET").unwrap();
        idle.push(s);
    }
    let deadline = std::time::Instant::now() + T;
    let mut refused = String::new();
    while std::time::Instant::now() < deadline {
        refused = status_of(&api, b"GET /stats HTTP/1.1\r\n\r\n");
        if refused.contains("503") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused.contains("503 Service Unavailable"), "{refused}");
    // They go away: their threads end and the API serves again.
    drop(idle);
    let deadline = std::time::Instant::now() + T;
    let mut status = String::new();
    while std::time::Instant::now() < deadline {
        status = status_of(&api, b"GET /stats HTTP/1.1\r\n\r\n");
        if status.contains("200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(status.contains("200 OK"), "{status}");
    // A header line of 9 KiB, a hundred headers, a body said to be larger than 16 MiB, a
    // Content-Length that is no number: all 400.
    let long = format!("GET /stats HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
    assert!(status_of(&api, long.as_bytes()).contains("400"));
    let many = format!("GET /stats HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(100));
    assert!(status_of(&api, many.as_bytes()).contains("400"));
    let huge = b"POST /inject HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
    assert!(status_of(&api, huge).contains("400"));
    let nan = b"POST /inject HTTP/1.1\r\nContent-Length: lots\r\n\r\n";
    assert!(status_of(&api, nan).contains("400"));
    assert!(vg.child.try_wait().unwrap().is_none(), "virtgate exited");
}

/// Landlock: captures go only where virtgate may write (the directories of its sockets and stats
/// file, and each `--capture-dir`); elsewhere the API says why. `--sandbox off` lifts it.
#[test]
fn captures_are_written_only_where_the_sandbox_allows() {
    let dir = std::env::temp_dir().join(format!("virtgate-api-ll-{}", std::process::id()));
    let elsewhere =
        std::env::temp_dir().join(format!("virtgate-api-ll-other-{}", std::process::id()));
    let extra = std::env::temp_dir().join(format!("virtgate-api-ll-extra-{}", std::process::id()));
    for d in [&dir, &elsewhere, &extra] {
        std::fs::create_dir_all(d).unwrap();
    }
    let api = dir.join("api.sock");
    let vg = Virtgate::start(&[
        "--api-socket",
        api.to_str().unwrap(),
        "--capture-dir",
        extra.to_str().unwrap(),
    ]);
    let t0 = std::time::Instant::now();
    while !api.exists() && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    let denied = elsewhere.join("no.pcapng");
    let (ok, _, err) = ctl(&api, &["capture", "start", denied.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("ermission denied"), "{err}");
    assert!(!denied.exists());
    for allowed in [dir.join("yes.pcapng"), extra.join("yes.pcapng")] {
        let (ok, _, err) = ctl(&api, &["capture", "start", allowed.to_str().unwrap()]);
        assert!(ok, "{err}");
        let (ok, _, _) = ctl(&api, &["capture", "stop"]);
        assert!(ok);
        assert!(allowed.exists());
    }
    drop(vg);
    let api_off = elsewhere.join("api.sock");
    let _off = Virtgate::start(&[
        "--api-socket",
        api_off.to_str().unwrap(),
        "--sandbox",
        "off",
    ]);
    let t0 = std::time::Instant::now();
    while !api_off.exists() && t0.elapsed() < T {
        std::thread::sleep(Duration::from_millis(20));
    }
    let anywhere = extra.join("off.pcapng");
    let (ok, _, err) = ctl(&api_off, &["capture", "start", anywhere.to_str().unwrap()]);
    assert!(ok, "{err}");
    for d in [&dir, &elsewhere, &extra] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `ctl watch` in a real terminal (tmux: the test types nothing, it reads the screen with
/// capture-pane): the table appears, is redrawn in place, and shows the echo replies of a ping
/// loop as a rate on pair 0.
#[test]
fn watch_redraws_live_rates_in_a_terminal() {
    let dir = std::env::temp_dir().join(format!("virtgate-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let vg = Virtgate::start(&["--api-socket", api.to_str().unwrap()]);
    let features = TestFrontend::qemu_features() & !(1 << VIRTIO_RING_F_EVENT_IDX);
    let mut fe = TestFrontend::connect(&vg.socket, features, EnableOrder::AfterSetup).unwrap();
    fe.post_rx_buffers(256);
    let session = format!("virtgate-watch-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .output()
            .expect("tmux (Debian's tmux package; scripts/setup.sh installs it)")
    };
    let watch = format!(
        "{} ctl --api-socket {} watch --interval 0.2 --count 150",
        env!("CARGO_BIN_EXE_virtgate"),
        api.display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "20",
        "-s",
        &session,
        &watch,
    ]);
    assert!(started.status.success(), "{started:?}");
    let screen = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    // Pings until the screen shows pair 0 receiving (bounded: 200 pings, within the 256 RX
    // buffers posted, and 30 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    for seq in 0..200u16 {
        ping(&mut fe, seq);
        std::thread::sleep(Duration::from_millis(20));
        seen = screen();
        let rx_rate = seen
            .lines()
            .find(|l| l.starts_with("0 "))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            .and_then(|v| v.parse::<f64>().ok());
        if rx_rate.is_some_and(|r| r > 0.0) || std::time::Instant::now() > deadline {
            break;
        }
    }
    let _ = tmux(&["kill-server"]);
    // Redrawn in place: one header, not a scroll of them.
    assert_eq!(seen.matches("virtgate ctl watch:").count(), 1, "{seen}");
    assert!(seen.contains("rx frames/s"), "{seen}");
    let row = seen
        .lines()
        .find(|l| l.starts_with("0 "))
        .unwrap_or_else(|| panic!("{seen}"));
    let rx: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rx > 0.0, "no rate for the echo replies: {seen}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn watch_refuses_a_bad_interval() {
    let (ok, _, err) = ctl(
        Path::new("/nonexistent/api.sock"),
        &["watch", "--interval", "0"],
    );
    assert!(!ok);
    assert!(err.contains("--interval"), "{err}");
}
