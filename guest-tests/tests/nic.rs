//! The NIC model seen from a real guest: interrupt moderation.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use guest_tests::{Virtgate, Vm, VmOptions};

/// The guest's interrupt count on the virtio RX queue (`virtio0-input.0` in /proc/interrupts).
fn rx_interrupts(vm: &mut Vm) -> u64 {
    let line = vm.sh("grep virtio0-input.0 /proc/interrupts");
    line.split_whitespace()
        .skip(1)
        .map_while(|f| f.parse::<u64>().ok())
        .sum()
}

/// A host download of `size` bytes into the guest; returns (guest RX interrupts, frames
/// virtgate delivered) for it.
fn download(vg: &Virtgate, vm: &mut Vm, size: usize) -> (u64, u64) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(&vec![0x33; size]);
        }
    });
    let frames = |vg: &Virtgate| vg.stats()["device"]["rx_frames"].as_u64().unwrap();
    let (irq0, f0) = (rx_interrupts(vm), frames(vg));
    let out = vm
        .run(
            &format!("nc 10.0.2.2 {port} </dev/null | wc -c"),
            Duration::from_secs(120),
        )
        .ok();
    assert_eq!(out.trim(), size.to_string());
    (rx_interrupts(vm) - irq0, frames(vg) - f0)
}

/// The same download costs the guest fewer RX interrupts with moderation on (a 500 µs packet
/// timer, 32 frames, at most 2 ms) than without; virtgate's own counters agree with the guest's.
#[test]
fn moderation_cuts_rx_interrupts_at_a_fixed_load() {
    let size = 16 << 20;
    let mut results = Vec::new();
    for args in [
        &[][..],
        &[
            "--rx-usecs",
            "500",
            "--rx-frames",
            "32",
            "--rx-usecs-abs",
            "2000",
        ][..],
    ] {
        let vg = Virtgate::start(args);
        let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
        vm.bring_up();
        let (irqs, frames) = download(&vg, &mut vm, size);
        let s = vg.stats();
        eprintln!(
            "{args:?}: {irqs} guest RX interrupts for {frames} frames ({} raised by virtgate, {} moderated batches)",
            s["device"]["rx_interrupts"], s["device"]["rx_interrupts_moderated"]
        );
        results.push((irqs, frames, s));
    }
    let (plain, moderated) = (&results[0], &results[1]);
    assert!(
        moderated.0 * 2 < plain.0,
        "moderation should at least halve the interrupts: {} vs {}",
        moderated.0,
        plain.0
    );
    assert!(
        moderated.2["device"]["rx_interrupts_moderated"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(plain.2["device"]["rx_interrupts_moderated"], 0);
}

/// Counts the packets of `file` matching the display filter (with IP, UDP and TCP checksum
/// validation on).
fn tshark_count(file: &std::path::Path, filter: &str) -> usize {
    let out = std::process::Command::new("tshark")
        .args(["-r", file.to_str().unwrap()])
        .args(["-o", "ip.check_checksum:TRUE"])
        .args(["-o", "udp.check_checksum:TRUE"])
        .args(["-o", "tcp.check_checksum:TRUE"])
        .args(["-Y", filter])
        .output()
        .expect("tshark (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `--pcap`: a real guest's session (DHCP, ping, a TCP download) captured at the guest boundary
/// reads back in tshark: every frame virtgate counted is in the file, directions are right, and
/// every checksum verifies (the ones virtgate computed and the guest's).
#[test]
fn a_guest_session_captured_reads_back_in_tshark() {
    let dir = std::env::temp_dir().join(format!("virtgate-nic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("session.pcapng");
    let vg = Virtgate::start(&["--pcap", file.to_str().unwrap()]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up();
    vm.run("ping -c 2 10.0.2.2", Duration::from_secs(30)).ok();
    download(&vg, &mut vm, 256 << 10);
    drop(vm);
    let s = vg.stats();
    let frames = s["device"]["capture_frames"].as_u64().unwrap() as usize;
    assert_eq!(s["device"]["capture_drops"], 0);
    assert_eq!(
        frames as u64,
        s["device"]["rx_frames"].as_u64().unwrap() + s["device"]["tx_frames"].as_u64().unwrap()
    );
    let mut all = 0;
    for _ in 0..50 {
        all = tshark_count(&file, "frame");
        if all == frames {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(all, frames, "every frame virtgate counted is in the file");
    let outbound = "frame.packet_flags_direction == 2";
    let inbound = "frame.packet_flags_direction == 1";
    assert_eq!(
        tshark_count(&file, &format!("dhcp.option.dhcp == 1 && {outbound}")),
        1
    );
    assert_eq!(
        tshark_count(&file, &format!("dhcp.option.dhcp == 2 && {inbound}")),
        1
    );
    assert_eq!(
        tshark_count(&file, &format!("icmp.type == 8 && {outbound}")),
        2
    );
    assert_eq!(
        tshark_count(&file, &format!("icmp.type == 0 && {inbound}")),
        2
    );
    assert!(tshark_count(&file, &format!("tcp.len > 1000 && {inbound}")) > 100);
    assert_eq!(
        tshark_count(&file, "_ws.malformed || _ws.expert.severity >= error"),
        0
    );
    assert_eq!(
        tshark_count(
            &file,
            "ip.checksum.status == 0 || udp.checksum.status == 0 || tcp.checksum.status == 0"
        ),
        0,
        "a bad checksum"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The control API's counters (`virtgate ctl stats`) agree with the guest's own interface
/// counters, and moderation changed at run time through it takes effect.
#[test]
fn the_control_api_agrees_with_the_guest() {
    let dir = std::env::temp_dir().join(format!("virtgate-nic-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.sock");
    let vg = Virtgate::start(&["--api-socket", api.to_str().unwrap()]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.bring_up();
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(guest_tests::virtgate_bin())
            .arg("ctl")
            .arg("--api-socket")
            .arg(&api)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let counter = |vm: &mut Vm, name: &str| -> u64 {
        vm.sh(&format!("cat /sys/class/net/eth0/statistics/{name}"))
            .trim()
            .parse()
            .unwrap()
    };
    vm.run("ping -c 3 10.0.2.2", Duration::from_secs(30)).ok();
    // The guest's counters first, then virtgate's: the link is quiet meanwhile (no timers fire
    // within the few hundred milliseconds between).
    let mut agreed = false;
    for _ in 0..20 {
        let (rx, tx) = (
            counter(&mut vm, "rx_packets"),
            counter(&mut vm, "tx_packets"),
        );
        let stats: serde_json::Value = serde_json::from_str(&ctl(&["stats"])).unwrap();
        if stats["device"]["rx_frames"] == rx && stats["device"]["tx_frames"] == tx {
            agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(agreed, "the API's frame counts never matched the guest's");
    let set = ctl(&["coalesce", "--rx-usecs", "200", "--rx-usecs-abs", "1000"]);
    assert!(set.contains("\"rx_usecs\": 200"), "{set}");
    vm.run("ping -c 3 10.0.2.2", Duration::from_secs(30)).ok();
    let stats: serde_json::Value = serde_json::from_str(&ctl(&["stats"])).unwrap();
    assert!(
        stats["device"]["rx_interrupts_moderated"].as_u64().unwrap() >= 1,
        "{stats:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
