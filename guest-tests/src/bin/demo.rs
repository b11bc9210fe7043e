//! The demo behind `scripts/demo.sh`: virtgate, a booted guest, DHCP and SLAAC, ping over both
//! families, the guest fetching a page from a web server on the host's loopback (IPv4 and IPv6),
//! and the counters.

use std::io::{Read, Write};
use std::net::TcpListener;
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

/// A web server on the host's loopback address `addr` answering every request with one line;
/// returns its port.
fn web_server(addr: &str, family: &'static str) -> u16 {
    let l = TcpListener::bind((addr, 0)).expect("bind the demo web server");
    let port = l.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let body = format!("hello from the host, over {family}\n");
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
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
    // SLAAC from the gateway's router advertisement, nothing configured by hand.
    show(
        &mut vm,
        "i=0; until ip -6 addr show dev eth0 scope global | grep inet6 | grep -qv tentative || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done",
    );
    show(
        &mut vm,
        "ip addr show eth0; ip route; ip -6 route; cat /etc/resolv.conf",
    );
    show(&mut vm, "ping -c 3 10.0.2.2");
    show(&mut vm, "ping -6 -c 3 fd00::2");
    let v4 = web_server("127.0.0.1", "IPv4");
    let v6 = web_server("::1", "IPv6");
    show(&mut vm, &format!("wget -q -O - http://10.0.2.2:{v4}/"));
    show(&mut vm, &format!("wget -q -O - http://[fd00::2]:{v6}/"));
    println!("\n== virtgate ctl --api-socket {} stats", vg.api.display());
    print!("{}", vg.ctl(&["stats"]));
    vm.kill();
    let status = vg.terminate();
    // Every counter: `virtgate ctl stats --json`, or the --stats-file virtgate wrote at exit.
    println!("\n== virtgate exited ({status})");
}
