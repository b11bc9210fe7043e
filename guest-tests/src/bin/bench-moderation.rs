//! `scripts/bench-moderation.sh`: interrupt moderation against the same guest at several
//! settings, in one run: RX interrupts per frame during a 16 MiB download (the guest's
//! `/proc/interrupts`), the TX interrupts of the same download (the guest's ACKs going out), and
//! ping round trips to the gateway. A benchmark, not a test: it prints
//! numbers and asserts nothing.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use guest_tests::{Virtgate, Vm, VmOptions};

const DOWNLOAD: usize = 16 << 20;

/// The guest's interrupt count on one virtio vector (`virtio0-input.0`, `virtio0-output.0`).
fn interrupts(vm: &mut Vm, vector: &str) -> u64 {
    vm.sh(&format!("grep {vector} /proc/interrupts"))
        .split_whitespace()
        .skip(1)
        .map_while(|f| f.parse::<u64>().ok())
        .sum()
}

/// (guest RX interrupts, frames delivered, guest TX interrupts, frames sent) for one download.
fn download(vg: &Virtgate, vm: &mut Vm) -> (u64, u64, u64, u64) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("address").port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let _ = s.write_all(&vec![0x55; DOWNLOAD]);
        }
    });
    let frames = |vg: &Virtgate, name: &str| vg.stats()["device"][name].as_u64().unwrap_or(0);
    let rx0 = (interrupts(vm, "virtio0-input.0"), frames(vg, "rx_frames"));
    let tx0 = (interrupts(vm, "virtio0-output.0"), frames(vg, "tx_frames"));
    vm.run(
        &format!("nc 10.0.2.2 {port} </dev/null >/dev/null"),
        Duration::from_secs(120),
    );
    (
        interrupts(vm, "virtio0-input.0") - rx0.0,
        frames(vg, "rx_frames") - rx0.1,
        interrupts(vm, "virtio0-output.0") - tx0.0,
        frames(vg, "tx_frames") - tx0.1,
    )
}

/// Average and maximum ping round trip to the gateway's DNS address (answered by virtgate itself,
/// so the host's ICMP path is not in the number), milliseconds.
fn rtt(vm: &mut Vm) -> (f64, f64) {
    let out = vm
        .run("ping -c 20 -i 0.2 10.0.2.3", Duration::from_secs(60))
        .stdout;
    // "round-trip min/avg/max = 1.141/4.212/15.064 ms"
    out.lines()
        .find_map(|l| l.split_once("= ").map(|(_, v)| v.to_string()))
        .and_then(|v| {
            let mut it = v.trim_end_matches(" ms").split('/');
            let _min = it.next()?;
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .unwrap_or((f64::NAN, f64::NAN))
}

fn main() {
    let settings: [&[&str]; 7] = [
        &[],
        &["--rx-usecs", "100", "--rx-usecs-abs", "400"],
        &[
            "--rx-usecs",
            "500",
            "--rx-frames",
            "32",
            "--rx-usecs-abs",
            "2000",
        ],
        &[
            "--rx-usecs",
            "2000",
            "--rx-frames",
            "64",
            "--rx-usecs-abs",
            "8000",
        ],
        &["--itr", "2000"],
        &["--adaptive-rx"],
        &[
            "--tx-usecs",
            "1000",
            "--tx-frames",
            "64",
            "--tx-usecs-abs",
            "4000",
        ],
    ];
    println!(
        "guest under tcg, a {} MiB download (--offloads none), then 20 pings to 10.0.2.3",
        DOWNLOAD >> 20
    );
    println!(
        "{:<58} {:>10} {:>8} {:>10} {:>7} {:>8} {:>9} {:>9}",
        "setting", "rx irqs", "frames", "frames/irq", "tx irqs", "tx frames", "rtt avg", "rtt max"
    );
    for args in settings {
        // Frames of one MSS (no TSO), so that the load in frames is the same at every setting and
        // comparable with the e1000's counts.
        let mut full = vec!["--offloads", "none"];
        full.extend_from_slice(args);
        // Each setting alone: the default adaptive throttle only where it is the setting.
        if !args.contains(&"--adaptive-rx") {
            full.push("--adaptive-rx=false");
        }
        let vg = Virtgate::start(&full);
        let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
        vm.bring_up();
        let (irqs, frames, tx_irqs, tx_frames) = download(&vg, &mut vm);
        let (avg, max) = rtt(&mut vm);
        let name = if args.is_empty() {
            "(none)".to_string()
        } else {
            args.join(" ")
        };
        println!(
            "{name:<58} {irqs:>10} {frames:>8} {:>10.1} {tx_irqs:>7} {tx_frames:>8} {avg:>7.2}ms {max:>7.2}ms",
            frames as f64 / irqs.max(1) as f64
        );
    }
}
