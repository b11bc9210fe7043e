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

fn ctl(api: &Path, args: &[&str]) -> (bool, String, String) {
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
    let (ok, out, err) = ctl(&api, &["stats"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["device"]["rx_frames"], 1);
    let (ok, metrics, _) = ctl(&api, &["metrics"]);
    assert!(ok);
    assert!(
        metrics.contains("# TYPE virtgate_device_rx_frames counter\nvirtgate_device_rx_frames 1\n")
    );
    assert!(metrics.contains("# TYPE virtgate_stack_tcp_connections gauge\n"));
    // Per queue pair, labelled; and how many pairs are in use.
    assert!(
        metrics.contains(
            "# TYPE virtgate_queue_rx_frames counter\nvirtgate_queue_rx_frames{pair=\"0\"} 1\n"
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
