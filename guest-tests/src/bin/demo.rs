//! The demo behind `scripts/demo.sh`: virtgate, a booted guest, DHCP, ping, and the counters.

use std::time::Duration;

use guest_tests::{Virtgate, Vm, VmOptions};

fn show(vm: &mut Vm, cmd: &str) {
    println!("guest# {cmd}");
    let out = vm.run(cmd, Duration::from_secs(120));
    print!("{}", out.stdout);
    if out.status != 0 {
        println!("(exit status {})", out.status);
    }
}

fn main() {
    let extra: Vec<String> = std::env::args().skip(1).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    println!("== starting virtgate {}", extra.join(" "));
    let mut vg = Virtgate::start(&extra);
    println!("   socket {}", vg.socket.display());
    println!("== booting a Linux guest under QEMU (TCG; VIRTGATE_ACCEL=kvm to use KVM)");
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    println!("   guest is up\n");
    show(
        &mut vm,
        "ip link set eth0 up; i=0; while [ \"$(cat /sys/class/net/eth0/operstate)\" != up ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; ip link show eth0",
    );
    show(&mut vm, "udhcpc -i eth0 -n -q -t 10 -T 2");
    show(&mut vm, "ip addr show eth0; ip route; cat /etc/resolv.conf");
    show(&mut vm, "ping -c 5 10.0.2.2");
    vm.kill();
    let status = vg.terminate();
    println!("\n== virtgate exited ({status}); its counters:");
    let stats = vg.read_stats();
    println!(
        "{}",
        serde_json::to_string_pretty(&stats).unwrap_or_default()
    );
}
