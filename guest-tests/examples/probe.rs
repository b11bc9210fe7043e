//! Runs shell commands in a fresh guest on a fresh virtgate and prints their output: a debugging aid.
use guest_tests::{Virtgate, Vm, VmOptions};
use std::time::Duration;
fn main() {
    let vg = Virtgate::start(&[]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    for cmd in std::env::args().skip(1) {
        if let Some(ms) = cmd.strip_prefix("PAUSE") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
            continue;
        }
        let out = vm.run(&cmd, Duration::from_secs(60));
        println!("# {cmd}\n{}[{}]", out.stdout, out.status);
    }
}
