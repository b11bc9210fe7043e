//! Queue pairs in parallel with a real guest: virtgate `--queues 2`, a 2-vCPU guest using both
//! pairs, 8 parallel 32 MiB downloads from the host; prints each pair's frames, the guest's frames
//! that arrived on the other pair's queue (`tx_cross_shard`), those left in the busy shard's inbox
//! (`tx_cross_shard_queued`) and the time its worker waited for a stack shard's lock. A measurement (docs/performance.md), not a test:
//! `VIRTGATE_BIN=target/release/virtgate cargo run --release -p guest-tests --example pairs`.
use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use guest_tests::{Virtgate, Vm, VmOptions};

const DOWNLOADS: usize = 8;
const SIZE: usize = 32 << 20;

fn main() {
    let vg = Virtgate::start(&["--queues", "2"]);
    let opts = VmOptions {
        queue_pairs: 2,
        cpus: 2,
        ..VmOptions::default()
    };
    let mut vm = Vm::boot(&vg.socket, &opts);
    vm.bring_up();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten().take(DOWNLOADS) {
            std::thread::spawn(move || {
                let mut req = [0u8; 1024];
                let _ = std::io::Read::read(&mut s, &mut req);
                let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {SIZE}\r\n\r\n");
                let _ = s.write_all(&vec![b'q'; SIZE]);
            });
        }
    });
    let before = vg.stats();
    let start = Instant::now();
    let out = vm
        .run(
            &format!(
                "for i in $(seq {DOWNLOADS}); do (wget -q -O /dev/null http://10.0.2.2:{port}/ && echo done) & done; wait"
            ),
            Duration::from_secs(300),
        )
        .stdout;
    let secs = start.elapsed().as_secs_f64();
    let after = vg.stats();
    println!(
        "{} of {DOWNLOADS} downloads of {} MiB in {secs:.1} s",
        out.matches("done").count(),
        SIZE >> 20
    );
    for p in 0..2 {
        let moved = |k: &str| {
            let at = |s: &serde_json::Value| s["queues"]["pairs"][p][k].as_u64().unwrap_or(0);
            at(&after) - at(&before)
        };
        let wait_ms = moved("shard_lock_wait_ns") as f64 / 1e6;
        println!(
            "pair {p}: frames to the guest {}, from it {} ({} on the other pair's shard, {} of them left in its inbox), {} worker events; waited for a shard's lock {} times, {wait_ms:.1} ms ({:.1} ms per s)",
            moved("rx_frames"),
            moved("tx_frames"),
            moved("tx_cross_shard"),
            moved("tx_cross_shard_queued"),
            moved("worker_events"),
            moved("shard_lock_waits"),
            wait_ms / secs,
        );
    }
}
