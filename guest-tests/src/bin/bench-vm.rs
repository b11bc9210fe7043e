//! `scripts/bench-vm.sh`: the same guest against virtgate (with its default offloads and with
//! `--offloads none`) and against QEMU's `-netdev user`
//! (libslirp), in one run: iperf3 guest→host and host→guest to an iperf3 server on the host's
//! loopback (reached as 10.0.2.2 in both), a ping RTT series to the gateway, and virtgate's CPU
//! seconds per GB moved. A benchmark, not a test: it prints numbers and asserts nothing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use guest_tests::{Virtgate, Vm, VmOptions};

const SECONDS: u32 = 8;

struct Result {
    up_mbps: f64,
    down_mbps: f64,
    rtt_ms: f64,
    bytes: f64,
}

fn iperf_mbps(vm: &mut Vm, port: u16, reverse: bool) -> (f64, f64) {
    let cmd = format!(
        "iperf3 -c 10.0.2.2 -p {port} -t {SECONDS} -J {}",
        if reverse { "-R" } else { "" }
    );
    let out = vm.run(&cmd, Duration::from_secs(u64::from(SECONDS) + 60));
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output ({e}): {}", out.stdout));
    let end = &json["end"]["sum_received"];
    let bps = end["bits_per_second"].as_f64().unwrap_or(0.0);
    let bytes = end["bytes"].as_f64().unwrap_or(0.0);
    (bps / 1e6, bytes)
}

fn rtt_ms(vm: &mut Vm) -> f64 {
    let out = vm
        .run("ping -c 20 -i 0.2 10.0.2.2", Duration::from_secs(60))
        .stdout;
    // "round-trip min/avg/max = 1.141/4.212/15.064 ms"
    out.lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn run(vm: &mut Vm, port: u16) -> Result {
    vm.bring_up();
    let rtt_ms = rtt_ms(vm);
    let (up_mbps, up_bytes) = iperf_mbps(vm, port, false);
    let (down_mbps, down_bytes) = iperf_mbps(vm, port, true);
    Result {
        up_mbps,
        down_mbps,
        rtt_ms,
        bytes: up_bytes + down_bytes,
    }
}

fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn iperf_server(port: u16) -> Child {
    Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 on the host: apt-get install iperf3")
}

fn main() {
    let iperf = PathBuf::from("/usr/bin/iperf3");
    assert!(
        iperf.is_file(),
        "iperf3 is not installed (scripts/bench-vm.sh installs it)"
    );
    let port = guest_tests::unused_tcp_port();
    let mut server = iperf_server(port);
    std::thread::sleep(Duration::from_millis(300));
    let opts = VmOptions {
        host_programs: vec![iperf],
        ..VmOptions::default()
    };

    // virtgate twice: with its default offloads, and with none (the guest checksums and
    // segments everything, virtgate handles one MSS per frame).
    let mut virtgate = Vec::new();
    for (label, args) in [
        ("virtgate", &[][..]),
        ("virtgate --offloads none", &["--offloads", "none"][..]),
    ] {
        println!("== {label}");
        let vg = Virtgate::start(args);
        let mut vm = Vm::boot(&vg.socket, &opts);
        let cpu0 = cpu_seconds(vg.pid());
        let result = run(&mut vm, port);
        let cpu = cpu_seconds(vg.pid()) - cpu0;
        vm.kill();
        drop(vg);
        virtgate.push((label, result, cpu));
    }

    println!("== QEMU -netdev user (libslirp)");
    let slirp_opts = VmOptions {
        user_net: true,
        ..opts
    };
    let mut vm = Vm::boot(std::path::Path::new("/nonexistent"), &slirp_opts);
    let slirp = run(&mut vm, port);
    vm.kill();
    let _ = server.kill();
    let _ = server.wait();

    let accel = std::env::var("VIRTGATE_ACCEL").unwrap_or_else(|_| "tcg".into());
    println!("\nguest under {accel}, {SECONDS} s per iperf3 direction, iperf3 server on the host's 127.0.0.1");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "", "virtgate", "no offloads", "slirp", "ratio", "ratio"
    );
    let (ours, bare) = (&virtgate[0].1, &virtgate[1].1);
    for (name, a, n, b) in [
        (
            "guest -> host (Mbit/s)",
            ours.up_mbps,
            bare.up_mbps,
            slirp.up_mbps,
        ),
        (
            "host -> guest (Mbit/s)",
            ours.down_mbps,
            bare.down_mbps,
            slirp.down_mbps,
        ),
        ("ping RTT avg (ms)", ours.rtt_ms, bare.rtt_ms, slirp.rtt_ms),
    ] {
        println!(
            "{name:<28} {a:>12.2} {n:>12.2} {b:>12.2} {:>10.2} {:>10.2}",
            a / b,
            n / b
        );
    }
    println!("(ratios: virtgate / slirp, then virtgate without offloads / slirp)");
    for (label, result, cpu) in &virtgate {
        let gb = result.bytes / 1e9;
        println!(
            "{label} CPU: {cpu:.2} s for {gb:.3} GB = {:.2} s/GB",
            if gb > 0.0 { cpu / gb } else { f64::NAN }
        );
    }
}
