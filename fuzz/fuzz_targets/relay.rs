//! The vhost-user relay's message reading and filtering: the bytes are what QEMU sends on the
//! socket. Threads drain the daemon's side and QEMU's side (the relay's acknowledgements) as the
//! real peers do, so that nothing blocks on a full socket buffer.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

fn drain(mut s: UnixStream) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got.len()
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() > 64 << 10 {
        return;
    }
    let (Ok((mut qemu_end, relay_qemu)), Ok((relay_daemon, daemon_end))) =
        (UnixStream::pair(), UnixStream::pair())
    else {
        return;
    };
    let (Ok(writer), Ok(qemu_reader)) = (relay_qemu.try_clone(), qemu_end.try_clone()) else {
        return;
    };
    let to_daemon = drain(daemon_end);
    let to_qemu = drain(qemu_reader);
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = qemu_end.write_all(&input);
        let _ = qemu_end.shutdown(std::net::Shutdown::Write);
    });
    let _ = virtgate::relay::fuzz_filter(&relay_qemu, &relay_daemon, &Mutex::new(writer));
    drop(relay_daemon);
    drop(relay_qemu);
    let _ = feeder.join();
    let forwarded = to_daemon.join().unwrap_or(0);
    let _ = to_qemu.join();
    // The relay forwards what it read, plus at most one replayed enable (20 bytes) per early
    // enable it held (each 20 bytes of input too): never more than twice the input.
    assert!(
        forwarded <= 2 * data.len(),
        "{forwarded} from {}",
        data.len()
    );
});
