//! The vhost-user relay's message reading and filtering: the bytes are what QEMU sends on the
//! socket; the daemon side and QEMU's side are drained so nothing blocks.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Socket buffers hold this much without a reader.
    if data.len() > 16 << 10 {
        return;
    }
    let (Ok((mut qemu_end, relay_qemu)), Ok((relay_daemon, mut daemon_end))) =
        (UnixStream::pair(), UnixStream::pair())
    else {
        return;
    };
    if qemu_end.write_all(data).is_err() {
        return;
    }
    let _ = qemu_end.shutdown(std::net::Shutdown::Write);
    let Ok(writer) = relay_qemu.try_clone() else {
        return;
    };
    let _ = virtgate::relay::fuzz_filter(&relay_qemu, &relay_daemon, &Mutex::new(writer));
    drop(relay_daemon);
    let mut forwarded = Vec::new();
    let _ = daemon_end.read_to_end(&mut forwarded);
    // The relay forwards at most what it read, plus the enables it replays (8-byte payloads).
    assert!(forwarded.len() <= data.len() + 512 * 20);
});
