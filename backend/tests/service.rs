//! virtgate as a service: its version line, readiness reported to a service manager
//! (`NOTIFY_SOCKET`), and the systemd unit shipped in `dist/systemd/`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Virtgate;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("virtgate-service-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_version_line_names_the_git_revision() {
    let out = Command::new(env!("CARGO_BIN_EXE_virtgate"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    // The revision the build saw: git's, when the source is a checkout (as in CI).
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    assert_eq!(
        line.trim(),
        format!("virtgate {} (git {rev})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn readiness_is_reported_once_the_socket_listens_and_stopping_at_the_end() {
    let dir = scratch("notify");
    let path = dir.join("notify.sock");
    let manager = UnixDatagram::bind(&path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut vg = Virtgate::start_logged(&[("NOTIFY_SOCKET", path.to_str().unwrap())], &[]);
    let mut buf = [0u8; 1024];
    let n = manager.recv(&mut buf).expect("READY=1 within 20 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    let lines: Vec<&str> = ready.lines().collect();
    assert_eq!(lines[0], "READY=1", "{ready}");
    assert_eq!(lines[1], format!("MAINPID={}", vg.pid()), "{ready}");
    assert!(
        lines[2].starts_with("STATUS=serving a virtio-net NIC on "),
        "{ready}"
    );
    // Ready means QEMU can connect now.
    assert!(vg.socket.exists());
    assert!(vg.terminate().success());
    let n = manager.recv(&mut buf).expect("STOPPING=1 at exit");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unreachable_notify_socket_is_a_warning_and_virtgate_serves() {
    let mut vg = Virtgate::start_logged(
        &[("NOTIFY_SOCKET", "/nonexistent/virtgate/notify.sock")],
        &[],
    );
    assert!(vg.socket.exists());
    assert!(vg.log().contains("NOTIFY_SOCKET"), "{}", vg.log());
    assert!(vg.terminate().success());
}

/// The unit as shipped, with the binary under test in place of `/usr/bin/virtgate` (the verifier
/// checks that the command exists).
fn unit_under_test(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/virtgate@.service");
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/virtgate "));
    let unit = dir.join("virtgate@.service");
    std::fs::write(
        &unit,
        text.replace("/usr/bin/virtgate", env!("CARGO_BIN_EXE_virtgate")),
    )
    .unwrap();
    unit
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let dir = scratch("unit");
    let unit = unit_under_test(&dir);
    // The man pages its Documentation= names are the package's; a checkout has none installed.
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/test.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A directive systemd does not know, or cannot parse, is only a warning: none is allowed.
    assert!(stderr.trim().is_empty(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_systemd_unit_runs_virtgate_the_way_its_command_line_reads() {
    // The unit's ExecStart, with systemd's specifiers and variables filled in as it would,
    // starts virtgate (the options exist and fit together).
    let dir = scratch("execstart");
    let text = std::fs::read_to_string(unit_under_test(&dir)).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .replace("${RUNTIME_DIRECTORY}", dir.to_str().unwrap())
        .replace("$VIRTGATE_ARGS", "--once --resolv-conf /dev/null");
    let mut words = exec.split_whitespace();
    let mut child = Command::new(words.next().unwrap())
        .args(words)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    common::wait_until(Duration::from_secs(20), || {
        dir.join("vm.sock").exists() && dir.join("api.sock").exists()
    });
    // SAFETY: kill(2) on our own child with a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert!(dir.join("stats.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
