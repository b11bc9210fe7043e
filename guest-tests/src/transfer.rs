//! Checked TCP transfers between the guest and servers the test runs on the host's loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::{Family, Vm};

/// Serves `conns` connections on the family's loopback with `handle`, each in its own thread;
/// returns the port.
pub fn serve_on(
    family: Family,
    conns: usize,
    handle: impl Fn(TcpStream) + Copy + Send + 'static,
) -> u16 {
    let l = TcpListener::bind((family.loopback(), 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..conns {
            let Ok((s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            std::thread::spawn(move || handle(s));
        }
    });
    port
}

/// The MD5 of `data` as `md5sum` prints it (the guest has busybox's md5sum, nothing else).
pub fn md5_of(data: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!(
        "virtgate-md5-{}-{:?}-{}",
        std::process::id(),
        std::thread::current().id(),
        data.len()
    ));
    std::fs::write(&path, data).unwrap();
    let out = std::process::Command::new("md5sum")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so both ends can know them.
pub fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Moves `size` bytes (a multiple of 1 KiB) host → guest (a host server writes a known pattern,
/// the guest checksums what it reads) and guest → host (the guest sends random bytes, the host
/// server returns the checksum of what it read), and asserts both checksums match.
pub fn transfer_both_ways(vm: &mut Vm, family: Family, size: usize, timeout: Duration) {
    download(vm, family, size, timeout);
    upload(vm, family, size, timeout);
}

/// Host → guest: a host server writes `size` bytes of a known pattern, the guest checksums what
/// it reads; asserts they match and returns how long the guest's command took (from the test's
/// side: never shorter than the transfer).
pub fn download(vm: &mut Vm, family: Family, size: usize, timeout: Duration) -> Duration {
    let down = serve_on(family, 1, move |mut s| {
        let _ = s.write_all(&pattern(size));
    });
    let start = Instant::now();
    let got = vm
        .run(
            &format!("nc {} {down} </dev/null | md5sum", family.gateway()),
            timeout,
        )
        .ok();
    let took = start.elapsed();
    assert_eq!(
        got.split_whitespace().next(),
        Some(md5_of(&pattern(size)).as_str()),
        "the guest received other bytes than the host sent"
    );
    took
}

/// Guest → host: the guest sends `size` random bytes (a multiple of 1 KiB), the host server
/// returns the checksum of what it read; asserts it matches the guest's and returns how long the
/// sending command took.
pub fn upload(vm: &mut Vm, family: Family, size: usize, timeout: Duration) -> Duration {
    assert_eq!(size % 1024, 0, "whole KiB");
    let up = serve_on(family, 1, move |mut s| {
        let mut got = vec![0u8; size];
        if s.read_exact(&mut got).is_ok() {
            let _ = writeln!(s, "{}", md5_of(&got));
        }
    });
    vm.sh(&format!(
        "dd if=/dev/urandom of=/tmp/up bs=1024 count={} 2>/dev/null",
        size / 1024
    ));
    let local = vm.sh("md5sum /tmp/up");
    let start = Instant::now();
    let remote = vm
        .run(&format!("nc {} {up} </tmp/up", family.gateway()), timeout)
        .ok();
    let took = start.elapsed();
    assert_eq!(
        remote.split_whitespace().next(),
        local.split_whitespace().next(),
        "the host received other bytes than the guest sent"
    );
    took
}
