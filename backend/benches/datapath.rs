//! Datapath benchmark (`cargo bench -p virtgate`): frames through the real virtgate binary, driven
//! by the in-process vhost-user frontend, against a baseline measured in the same run: the same
//! frames through `netstack` alone, in process. The ratio is the cost of the device (virtqueues,
//! copies, eventfds, the worker thread) over the protocol work. Numbers, not assertions: these
//! machines are shared.

use std::time::{Duration, Instant};

use netstack::wire::Ipv4Address;
use virtgate::frontend::frames::echo_request;
use virtgate::frontend::TestFrontend;

mod common;

use common::cpu_seconds;

/// The DNS address: an echo to it is answered by the stack itself, not through host ICMP sockets.
const DNS_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 3);

struct Row {
    name: String,
    frames: u64,
    elapsed: Duration,
    cpu: Option<f64>,
}

impl Row {
    fn per_sec(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }
}

fn baseline(size: usize, n: u64) -> Row {
    let mut stack = netstack::Stack::new(netstack::Config {
        mtu: 65520,
        ..Default::default()
    })
    .unwrap();
    let frame = echo_request(DNS_IP, 0, &vec![0xab; size]);
    let mut sink = vec![0u8; 70_000];
    let start = Instant::now();
    for i in 0..n {
        stack.process_frame(netstack::Instant::from_micros(i), &frame);
        stack.dispatch(netstack::Instant::from_micros(i), |f, _| {
            let mut at = 0;
            for piece in f.pieces() {
                sink[at..at + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
            true
        });
    }
    Row {
        name: format!("netstack alone, {size} B"),
        frames: n,
        elapsed: start.elapsed(),
        cpu: None,
    }
}

fn device(size: usize, n: u64, batch: u16) -> Row {
    let (vg, mut fe) =
        common::Virtgate::start("bench", TestFrontend::qemu_features(), &["--mtu", "65520"]);
    let frame = echo_request(DNS_IP, 0, &vec![0xab; size]);
    fe.post_rx_buffers(256);
    let cpu0 = cpu_seconds(vg.pid());
    let start = Instant::now();
    let mut done = 0u64;
    while done < n {
        for _ in 0..batch {
            fe.send(&frame);
        }
        fe.wait_tx_used(usize::from(batch), Duration::from_secs(10));
        for _ in 0..batch {
            fe.recv(Duration::from_secs(10)).expect("reply");
        }
        fe.post_rx_buffers(256);
        done += u64::from(batch);
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(vg.pid()) - cpu0;
    Row {
        name: format!("virtgate device, {size} B, batch {batch}"),
        frames: done,
        elapsed,
        cpu: Some(cpu),
    }
}

fn main() {
    // `cargo bench` passes --bench; a name filter is not supported (the run is short).
    let n: u64 = std::env::var("VIRTGATE_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    println!("echo request -> reply, {n} frames per row");
    println!(
        "{:<40} {:>12} {:>10} {:>10} {:>14}",
        "path", "frames/s", "us/frame", "x baseline", "virtgate cpu us/frame"
    );
    for size in [56usize, 1472, 8192] {
        let base = baseline(size, n);
        let rows = [base, device(size, n, 1), device(size, n, 64)];
        let base_rate = rows[0].per_sec();
        for r in &rows {
            println!(
                "{:<40} {:>12.0} {:>10.2} {:>10.2} {:>14}",
                r.name,
                r.per_sec(),
                1e6 / r.per_sec(),
                base_rate / r.per_sec(),
                r.cpu
                    .map(|c| format!("{:.2}", c * 1e6 / r.frames as f64))
                    .unwrap_or_else(|| "-".into())
            );
        }
    }
}
