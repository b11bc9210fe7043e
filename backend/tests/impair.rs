//! Link impairments on the device, without QEMU: the real binary driven by the in-process
//! frontend, the rules set on the command line and through the API.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use virtgate::frontend::TestFrontend;

const T: Duration = Duration::from_secs(10);

fn connect(vg: &Virtgate) -> TestFrontend {
    connect_with_buffers(vg, 256)
}

/// A virtgate with an API socket in its own directory.
fn with_api(extra: &[&str]) -> (Virtgate, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "virtgate-impair-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let mut args = vec!["--api-socket", api.to_str().unwrap()];
    args.extend_from_slice(extra);
    let vg = Virtgate::start(&args);
    (vg, api)
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn api(
    sock: &std::path::Path,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    virtgate::api::request(sock, method, path, body.as_ref())
        .map(|b| serde_json::from_str(&b).expect("JSON"))
}

fn rule_counter(state: &Value, rule: usize, name: &str) -> u64 {
    state["rules"][rule]["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {state:#}"))
}

/// Echo replies to the DNS address (answered by the gateway itself); returns their sequence
/// numbers in arrival order, collected until `quiet` passes without a frame.
fn replies(fe: &mut TestFrontend, quiet: Duration) -> Vec<u16> {
    std::iter::from_fn(|| fe.recv(quiet))
        .filter_map(|f| parse_echo_reply(&f).map(|(seq, _)| seq))
        .collect()
}

/// A delay holds replies at least that long, while the guest's TX chains come back at once (as
/// a NIC returns descriptors when the frame is in its FIFO).
#[test]
fn delayed_frames_wait_on_virtgates_side_and_descriptors_return_at_once() {
    let vg = Virtgate::start(&["--impair", "from-guest: icmp: delay 300ms"]);
    let mut fe = connect(&vg);
    let sent = Instant::now();
    fe.send(&echo_request(1, b"late"));
    let used = fe.wait_tx_used(1, T);
    let returned = sent.elapsed();
    assert_eq!(used.len(), 1);
    let reply = fe.recv(T).expect("the reply comes after the delay");
    let rtt = sent.elapsed();
    assert_eq!(parse_echo_reply(&reply).map(|r| r.0), Some(1));
    assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
    assert!(returned < rtt, "{returned:?} {rtt:?}");
    let s = vg.stats();
    assert_eq!(s["device"]["tx_impair_delayed"], 1);
    assert_eq!(rule_counter(&s["impair"], 0, "delayed"), 1);
    assert_eq!(s["impair"]["held"]["from_guest"], 0);
}

/// A frame-count window drops exactly the frames named; a duplicate sends two copies.
#[test]
fn windows_drop_exactly_and_duplicates_double() {
    let vg = Virtgate::start(&[
        "--impair",
        "from-guest: icmp frames 2-3: loss 100%; to-guest: icmp: duplicate 100%",
    ]);
    let mut fe = connect(&vg);
    for seq in 1..=5 {
        fe.send(&echo_request(seq, b"window"));
    }
    let got = replies(&mut fe, Duration::from_millis(500));
    assert_eq!(got, vec![1, 1, 4, 4, 5, 5]);
    let s = vg.stats();
    assert_eq!(s["device"]["tx_loss_injected"], 2);
    assert_eq!(s["device"]["rx_impair_duplicated"], 3);
    assert_eq!(rule_counter(&s["impair"], 0, "matched"), 2);
    assert_eq!(rule_counter(&s["impair"], 1, "duplicated"), 3);
}

/// A corrupted frame from the guest reaches the stack with its flipped bit, and the stack drops
/// it by its checksums: none is answered, each is counted as a bad checksum where the flip
/// landed.
#[test]
fn corrupted_guest_frames_fail_the_stacks_checksums() {
    let vg = Virtgate::start(&["--impair", "from-guest: icmp: corrupt 100%"]);
    let mut fe = connect(&vg);
    for seq in 0..40 {
        fe.send(&echo_request(seq, &[0x5a; 200]));
    }
    fe.wait_tx_used(40, T);
    assert_eq!(
        replies(&mut fe, Duration::from_millis(300)),
        Vec::<u16>::new()
    );
    let s = vg.stats_when(|s| s["stack"]["eth_rx_frames"] == 40);
    let rule = &s["impair"]["rules"][0]["counters"];
    assert_eq!(rule["corrupted"], 40);
    let network = rule["corrupted_network"].as_u64().unwrap();
    let other = rule["corrupted_other"].as_u64().unwrap();
    assert_eq!(network + other, 40);
    // Each frame is dropped by the stack for one reason: mostly the IPv4 header's checksum or
    // ICMP's; a flip in the version or a length field is caught before the checksum.
    let drops: u64 = s["stack"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("drop_"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(drops, 40, "{s:#}");
    assert!(
        s["stack"]["drop_icmp_checksum"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert!(
        s["stack"]["drop_ipv4_checksum"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert_eq!(s["stack"]["icmp_tx_echo_replies"], 0);
}

/// A rate spaces frames by their serialisation time: 20 injected 1000-byte frames at 800 kbit/s
/// (10 ms each) take at least 190 ms from the first to the last.
#[test]
fn a_rate_spaces_frames_and_its_queue_is_bounded() {
    let (vg, sock) = with_api(&["--impair", "to-guest: udp: rate 800kbit limit 15"]);
    let mut fe = connect(&vg);
    let frame = udp_frame(GUEST_IP, 7, 9, &[0u8; 958]);
    let mut to_guest = frame.clone();
    // Addressed to the guest: swap the MACs and the addresses.
    to_guest[0..6].copy_from_slice(&frame[6..12]);
    to_guest[6..12].copy_from_slice(&frame[0..6]);
    let hex: Vec<String> = (0..20).map(|_| hex(&to_guest)).collect();
    let start = Instant::now();
    let r = api(&sock, "POST", "/inject", Some(json!({ "frames": hex }))).unwrap();
    assert_eq!(r["injected"], 20);
    let mut last = start;
    let mut n = 0u64;
    while let Some(f) = fe.recv(Duration::from_millis(500)) {
        assert_eq!(f.len(), to_guest.len());
        last = Instant::now();
        n += 1;
    }
    // All 20 arrive in one batch: each takes 10 ms on the link, the queue holds 15 at most and
    // the other 5 are tail-dropped. The last of the 15 leaves 150 ms after the first arrived.
    let state = api(&sock, "GET", "/impair", None).unwrap();
    assert_eq!(
        (n, rule_counter(&state, 0, "limit_drops")),
        (15, 5),
        "{state:#}"
    );
    assert_eq!(rule_counter(&state, 0, "rate_queued"), 15);
    assert_eq!(vg.counter("device", "rx_impair_queue_drops"), 5);
    let spread = last - start;
    assert!(
        spread >= Duration::from_millis(150),
        "{n} frames in {spread:?}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The API lists, replaces, clears and schedules rules; a schedule changes them on time, and a
/// restore step brings back the rules of before.
#[test]
fn rules_change_at_run_time_and_on_schedule() {
    let (vg, sock) = with_api(&["--impair", "to-guest: arp: pass"]);
    let mut fe = connect(&vg);
    let state = api(&sock, "GET", "/impair", None).unwrap();
    assert_eq!(state["rules"][0]["rule"], "to-guest: arp: pass");
    assert_eq!(state["seed"], 1);

    let state = api(
        &sock,
        "PUT",
        "/impair",
        Some(json!({ "rules": "from-guest: icmp: loss 100%", "seed": 9 })),
    )
    .unwrap();
    assert_eq!(state["rules"].as_array().unwrap().len(), 1);
    assert_eq!(state["seed"], 9);
    fe.send(&echo_request(1, b"lost"));
    assert!(replies(&mut fe, Duration::from_millis(300)).is_empty());
    let state = api(&sock, "GET", "/impair", None).unwrap();
    assert_eq!(rule_counter(&state, 0, "dropped"), 1);

    api(&sock, "DELETE", "/impair", None).unwrap();
    fe.send(&echo_request(2, b"back"));
    assert_eq!(replies(&mut fe, Duration::from_millis(300)), vec![2]);

    // An outage 400 ms from now for 400 ms, then the rules in force now (none) again.
    let set = Instant::now();
    let state = api(
        &sock,
        "POST",
        "/impair/schedule",
        Some(json!({ "steps": [
            { "after_ms": 400, "rules": "both: loss 100%" },
            { "after_ms": 800, "restore": true },
        ] })),
    )
    .unwrap();
    assert_eq!(state["schedule"].as_array().unwrap().len(), 2);
    assert_eq!(state["schedule"][1]["restore"], true);
    wait_until(T, || {
        api(&sock, "GET", "/impair", None).unwrap()["rules"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let outage_seen = set.elapsed();
    assert!(outage_seen >= Duration::from_millis(400), "{outage_seen:?}");
    let sent_at = set.elapsed();
    fe.send(&echo_request(3, b"outage"));
    let answered = replies(&mut fe, Duration::from_millis(100));
    wait_until(T, || {
        api(&sock, "GET", "/impair", None).unwrap()["rules"]
            .as_array()
            .unwrap()
            .is_empty()
    });
    let restored_seen = set.elapsed();
    assert!(
        restored_seen >= Duration::from_millis(800),
        "{restored_seen:?}"
    );
    fe.send(&echo_request(4, b"restored"));
    assert_eq!(replies(&mut fe, Duration::from_millis(300)), vec![4]);
    // Sent well inside the outage, the request was dropped (and counted: the earlier drop and
    // this one); only a test thread stalled past the restore could see it answered.
    if sent_at < Duration::from_millis(700) {
        assert!(answered.is_empty(), "{answered:?}");
    }
    let dropped = vg.counter("device", "tx_loss_injected");
    assert_eq!(dropped, 1 + u64::from(answered.is_empty()));
}

/// Bad bodies and rules are refused with the reason, and change nothing.
#[test]
fn bad_rules_and_bodies_are_explained() {
    let (_vg, sock) = with_api(&["--impair", "to-guest: delay 1ms"]);
    for (method, path, body, says) in [
        (
            "PUT",
            "/impair",
            json!({ "rules": "to-guest: los 5%" }),
            "not an action",
        ),
        (
            "PUT",
            "/impair",
            json!({ "rule": "to-guest: loss 5%" }),
            "unknown field",
        ),
        (
            "PUT",
            "/impair",
            json!({ "rules": 5 }),
            "a string or a list",
        ),
        ("PUT", "/impair", json!({ "rules": "", "seed": -1 }), "seed"),
        (
            "POST",
            "/impair/schedule",
            json!({ "steps": [{ "after_ms": 5 }] }),
            "either rules or",
        ),
        (
            "POST",
            "/impair/schedule",
            json!({ "steps": [{ "after_ms": -5, "rules": "" }] }),
            "after_ms",
        ),
        ("POST", "/impair/schedule", json!({ "steps": 3 }), "steps"),
    ] {
        let e = api(&sock, method, path, Some(body.clone())).unwrap_err();
        assert!(e.starts_with("400") && e.contains(says), "{body}: {e}");
    }
    let state = api(&sock, "GET", "/impair", None).unwrap();
    assert_eq!(state["rules"][0]["rule"], "to-guest: delay 1ms");
    // A list of texts is one rule set.
    let state = api(
        &sock,
        "PUT",
        "/impair",
        Some(json!({ "rules": ["to-guest: loss 1%", "from-guest: tcp syn: loss 5%"] })),
    )
    .unwrap();
    assert_eq!(
        state["rules"][1]["rule"],
        "from-guest: tcp flags syn: loss 5%"
    );
}

/// The command line refuses bad rules before starting.
#[test]
fn bad_impair_flags_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virtgate"))
        .args([
            "--socket",
            "/nonexistent/x.sock",
            "--impair",
            "to-guest: delay 5",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--impair") && err.contains("unit"), "{err}");
}
