//! `/metrics` as Prometheus reads it, checked by Prometheus's own linter (`promtool check
//! metrics`), and the Grafana dashboard in docs/grafana/ checked against it: every query parses
//! (`promtool check rules`) and names only metrics virtgate exports.
//!
//! promtool comes from Debian's prometheus package, unpacked by scripts/setup.sh into
//! `target/tools/` (`VIRTGATE_PROMTOOL` names another); without it these tests fail.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use virtgate::frontend::{EnableOrder, TestFrontend};

const T: Duration = Duration::from_secs(10);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn promtool() -> PathBuf {
    let path = std::env::var_os("VIRTGATE_PROMTOOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/tools/promtool"));
    assert!(
        path.is_file(),
        "{} missing: scripts/setup.sh unpacks promtool from Debian's prometheus package",
        path.display()
    );
    path
}

/// Runs promtool with `input` on its standard input: (success, stdout and stderr).
fn run_promtool(args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A frontend on `vg` whose one ping virtgate answered (one frame in each direction, counted).
fn answered_ping(vg: &Virtgate) -> TestFrontend {
    let mut fe = TestFrontend::connect(
        &vg.socket,
        TestFrontend::qemu_features(),
        EnableOrder::AfterSetup,
    )
    .unwrap();
    fe.post_rx_buffers(16);
    fe.send(&echo_request(1, b"metrics"));
    let reply = fe.recv(T).expect("echo reply");
    assert_eq!(parse_echo_reply(&reply).map(|r| r.0), Some(1));
    vg.stats_when(|s| s["device"]["rx_frames"] == 1);
    fe
}

/// `/metrics` of a virtgate that has answered a ping and holds two impairment rules.
fn metrics_with_traffic(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let api = dir.join("api.sock");
    let vg = Virtgate::start(&[
        "--api-socket",
        api.to_str().unwrap(),
        "--impair",
        "to-guest: delay 1ms; from-guest: icmp: delay 2ms",
    ]);
    let _fe = answered_ping(&vg);
    let (ok, metrics, err) = ctl(&api, &["metrics"]);
    assert!(ok, "{err}");
    metrics
}

/// The metric names a `/metrics` text holds (its TYPE lines).
fn exported_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

#[test]
fn metrics_pass_promtool_and_follow_its_conventions() {
    let dir = std::env::temp_dir().join(format!("virtgate-metrics-{}", std::process::id()));
    let metrics = metrics_with_traffic(&dir);

    let (ok, out) = run_promtool(&["check", "metrics"], &metrics);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );

    // What promtool's lint stands for, asserted here too: every family has its help text and a
    // type, running totals end in _total, and a time is in seconds.
    let mut families = 0;
    let mut lines = metrics.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(help) = line.strip_prefix("# HELP ") else {
            continue;
        };
        families += 1;
        let (name, text) = help.split_once(' ').unwrap();
        assert!(!text.trim().is_empty(), "{name} has no help text");
        let kind = lines.next().unwrap();
        assert!(
            kind == format!("# TYPE {name} counter") && name.ends_with("_total")
                || kind == format!("# TYPE {name} gauge") && !name.ends_with("_total"),
            "{name}: {kind}"
        );
    }
    assert!(families > 200, "{families} families");
    assert!(
        metrics.contains("\nvirtgate_device_rx_frames_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nvirtgate_queue_rx_frames_total{pair=\"0\"} 1\n"));
    assert!(metrics.contains("# TYPE virtgate_stack_tcp_connections gauge\n"));
    assert!(
        metrics.contains("\nvirtgate_impair_matched_total{rule=\"0\",direction=\"to-guest\"} 1\n")
    );
    assert!(metrics
        .contains("\nvirtgate_impair_matched_total{rule=\"1\",direction=\"from-guest\"} 1\n"));
    // shard_lock_wait_ns in the stats document; seconds with nine decimals here.
    let wait = metrics
        .lines()
        .find(|l| l.starts_with("virtgate_device_shard_lock_wait_seconds_total "))
        .unwrap();
    let value = wait.split(' ').nth(1).unwrap();
    assert_eq!(
        value.split_once('.').map(|(_, ns)| ns.len()),
        Some(9),
        "{wait}"
    );
    assert!(
        !metrics.contains("_ns"),
        "a nanosecond count left in /metrics"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `expr` of the dashboard, with Grafana's variables replaced by what Prometheus parses.
fn dashboard_queries() -> Vec<String> {
    let path = workspace_root().join("docs/grafana/virtgate.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            queries.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    queries
}

#[test]
fn the_grafana_dashboard_queries_parse_and_name_exported_metrics() {
    let dir = std::env::temp_dir().join(format!("virtgate-dashboard-{}", std::process::id()));
    let exported = exported_names(&metrics_with_traffic(&dir));
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");

    // Every metric a query names is exported; a name regex (`__name__=~"virtgate_stack_drop_.+"`)
    // matches at least one exported name by its literal prefix.
    for q in &queries {
        let mut rest = q.as_str();
        while let Some(i) = rest.find("virtgate_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            if tail[end..].starts_with('.') {
                assert!(
                    exported.iter().any(|e| e.starts_with(name)),
                    "no exported metric starts with {name} ({q})"
                );
            } else {
                assert!(exported.contains(name), "{name} is not exported ({q})");
            }
            rest = &tail[end..];
        }
    }

    // Prometheus parses each query: as the expression of a recording rule checked by promtool.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(q).unwrap();
        rules.push_str(&format!(
            "      - record: virtgate:dashboard_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let file = dir.join("rules.yml");
    std::fs::write(&file, rules).unwrap();
    let (ok, out) = run_promtool(&["check", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("{} rules found", queries.len())),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One HTTP/1.1 request over TCP: (status, body).
fn http(address: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: virtgate\r\n\r\n").unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    let status = reply.split(' ').nth(1).unwrap().parse().unwrap();
    let body = reply.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn the_metrics_address_serves_metrics_and_nothing_else() {
    let vg = Virtgate::start_logged(&[], &["--metrics-address", "127.0.0.1:0"]);
    let mut address = None;
    wait_until(T, || {
        address = vg.log().lines().find_map(|l| {
            Some(
                l.split_once("metrics on http://")?
                    .1
                    .strip_suffix("/metrics")?
                    .to_string(),
            )
        });
        address.is_some()
    });
    let address = address.unwrap();
    let mut fe = answered_ping(&vg);

    let (status, body) = http(&address, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\nvirtgate_device_rx_frames_total 1\n"),
        "{body}"
    );
    let (ok, out) = run_promtool(&["check", "metrics"], &body);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}"
    );
    // Read-only: the rest of the API is not reachable over TCP.
    assert_eq!(http(&address, "GET", "/stats").0, 404);
    assert_eq!(http(&address, "POST", "/link/down").0, 404);
    assert_eq!(http(&address, "POST", "/metrics").0, 405);
    assert_eq!(http(&address, "GET", "/metrics").0, 200);
    fe.send(&echo_request(8, b"still up"));
    assert!(fe.recv(T).is_some(), "the link stayed up");
}

#[test]
fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("virtgate-metrics-busy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_virtgate"))
        .args(["--socket", dir.join("vm.sock").to_str().unwrap()])
        .args(["--api-socket", api.to_str().unwrap()])
        .args(["--metrics-address", &address])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot serve metrics on {address}")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
    assert!(
        !api.exists() && !dir.join("vm.sock").exists(),
        "no socket left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
