//! Gateway benchmark (`cargo bench -p virtgate --bench gateway`): bulk TCP through the real
//! virtgate binary, no VM. The in-process vhost-user frontend plays the guest with a scripted TCP
//! endpoint (`frontend::guest_tcp`: in-order segments, cumulative ACKs, a fixed window) and a
//! thread on the host's loopback is the far end. Each direction runs with offloads (64 KiB TSO
//! frames from the guest, TSO frames to it) and without (one 1448-byte segment per frame).
//!
//! Reported per row: Gbit/s, and virtgate's CPU (user + system of its process) per byte and per
//! frame. Baselines measured in the same run: one `memcpy` per byte of the same volume, and a
//! plain loopback TCP transfer between two host threads (its sender's and receiver's CPU per byte
//! come from their threads' clocks). Numbers, never assertions.
//!
//! Also: two flows at once through `--queues 2`, each on its own pair driven by a thread of its
//! own (the queue pairs in parallel: each worker's CPU and the time workers waited for a stack
//! shard's lock), and echo to the gateway one at a time (the round trip's p50 and p99 and
//! virtgate's CPU per echo).
//!
//! `VIRTGATE_BENCH_MB` sets the volume per row (default 512 MiB); `VIRTGATE_BENCH_STATS` prints
//! virtgate's stats document after each row; `VIRTGATE_BENCH_BIN` measures another build of
//! virtgate (A/B).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

mod common;

use common::{cpu_seconds, thread_cpu};
use virtgate::frontend::frames::echo_request;
use virtgate::frontend::guest_tcp::{GuestTcp, GATEWAY_IP};
use virtgate::frontend::{TestFrontend, QUEUE_SIZE};

struct Row {
    name: String,
    bytes: u64,
    elapsed: Duration,
    /// CPU seconds of the measured party (virtgate, or the baseline's threads).
    cpu: Option<f64>,
    frames: Option<u64>,
}

impl Row {
    fn print(&self) {
        let gbps = self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9;
        let per_byte = self
            .cpu
            .map(|c| format!("{:.3}", c * 1e9 / self.bytes as f64))
            .unwrap_or_else(|| "-".into());
        let per_frame = match (self.cpu, self.frames) {
            (Some(c), Some(f)) if f > 0 => format!("{:.2}", c * 1e6 / f as f64),
            _ => "-".into(),
        };
        println!(
            "{:<48} {:>8.2} {:>12} {:>12}",
            self.name, gbps, per_byte, per_frame
        );
    }
}

/// One copy per byte, from and to buffers far larger than the caches (as a guest's memory and
/// a socket buffer are), 64 KiB at a time.
fn memcpy_baseline(total: usize) -> Row {
    const SPAN: usize = 256 << 20;
    const CHUNK: usize = 64 << 10;
    let src = vec![0x5au8; SPAN];
    // Written once first: the page faults of fresh memory are not what is measured.
    let mut dst = vec![0x11u8; SPAN];
    let t0 = thread_cpu();
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let at = done % SPAN;
        dst[at..at + CHUNK].copy_from_slice(std::hint::black_box(&src[at..at + CHUNK]));
        std::hint::black_box(&mut dst);
        done += CHUNK;
    }
    Row {
        name: "memcpy, 64 KiB at a time over 256 MiB".into(),
        bytes: done as u64,
        elapsed: start.elapsed(),
        cpu: Some(thread_cpu() - t0),
        frames: None,
    }
}

/// A loopback TCP transfer between two threads: the sender's and the receiver's CPU.
fn loopback_baseline(total: usize) -> (Row, Row) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let t0 = thread_cpu();
        let mut buf = vec![0u8; 256 << 10];
        let mut got = 0;
        while got < total {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        thread_cpu() - t0
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let buf = vec![0x5au8; 256 << 10];
    let t0 = thread_cpu();
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = buf.len().min(total - sent);
        s.write_all(&buf[..n]).unwrap();
        sent += n;
    }
    let send_cpu = thread_cpu() - t0;
    let recv_cpu = reader.join().unwrap();
    let elapsed = start.elapsed();
    (
        Row {
            name: "loopback TCP, sender".into(),
            bytes: total as u64,
            elapsed,
            cpu: Some(send_cpu),
            frames: None,
        },
        Row {
            name: "loopback TCP, receiver".into(),
            bytes: total as u64,
            elapsed,
            cpu: Some(recv_cpu),
            frames: None,
        },
    )
}

struct Gateway {
    vg: common::Virtgate,
    fe: TestFrontend,
}

impl Gateway {
    fn start(offloads: bool, n: u32) -> Gateway {
        let features = if offloads {
            TestFrontend::qemu_features_with_offloads()
        } else {
            TestFrontend::qemu_features()
        };
        let (vg, mut fe) = common::Virtgate::start(
            &format!("gwbench-{n}"),
            features,
            &["--resolv-conf", "/dev/null"],
        );
        fe.post_rx_buffers(QUEUE_SIZE);
        Gateway { vg, fe }
    }

    fn stats(&self) -> String {
        self.vg.stats().unwrap_or_else(|e| e)
    }

    /// The device's frame counters: (taken from the guest's TX ring, written to its RX ring).
    fn frames(&self) -> (u64, u64) {
        let v: serde_json::Value =
            serde_json::from_str(&self.vg.stats().expect("stats")).expect("stats JSON");
        let n = |k: &str| v["device"][k].as_u64().unwrap_or(0);
        (n("tx_frames"), n("rx_frames"))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// The guest sends, a host thread reads.
    Upload,
    /// A host thread writes, the guest receives.
    Download,
}

/// The host's end of a transfer: reads everything (an upload) or writes `total` bytes (a
/// download), then waits on `done` before closing, so that no FIN enters the measurement.
fn host_end(
    listener: TcpListener,
    direction: Direction,
    total: usize,
    done: std::sync::mpsc::Receiver<()>,
) -> usize {
    let (mut s, _) = listener.accept().unwrap();
    let mut buf = vec![0x5au8; 256 << 10];
    let mut moved = 0;
    while moved < total {
        let r = match direction {
            Direction::Upload => s.read(&mut buf),
            Direction::Download => {
                let n = buf.len().min(total - moved);
                s.write_all(&buf[..n]).map(|()| n)
            }
        };
        match r {
            Ok(0) | Err(_) => break,
            Ok(n) => moved += n,
        }
    }
    let _ = done.recv_timeout(Duration::from_secs(60));
    moved
}

/// Bulk TCP one way through the gateway, with or without offloads.
fn transfer(direction: Direction, offloads: bool, total: usize) -> Row {
    let mut gw = Gateway::start(offloads, direction as u32);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let host = std::thread::spawn(move || host_end(listener, direction, total, done_rx));
    let mut conn =
        GuestTcp::connect(&mut gw.fe, port, 40000 + direction as u16, 1500).expect("connect");
    let pid = gw.vg.pid();
    let frames = |gw: &Gateway| match direction {
        Direction::Upload => gw.frames().0,
        Direction::Download => gw.frames().1,
    };
    let frames0 = frames(&gw);
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    // The scripted sender moves less than 2 GiB (sequence space) per call.
    let result = match direction {
        Direction::Upload => {
            let mut result = Ok(());
            let mut left = total;
            while left > 0 && result.is_ok() {
                let chunk = left.min(1 << 30);
                result = conn.send_bulk(&mut gw.fe, chunk);
                left -= chunk;
            }
            result
        }
        Direction::Download => conn.receive_bulk(&mut gw.fe, total),
    };
    if let Err(e) = result {
        panic!("transfer: {e}; virtgate's stats: {}", gw.stats());
    }
    let _ = done_tx.send(());
    let moved = host.join().unwrap();
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(pid) - cpu0;
    if std::env::var_os("VIRTGATE_BENCH_STATS").is_some() {
        eprintln!("virtgate's stats after the row: {}", gw.stats());
    }
    assert_eq!(moved, total, "the host's end moved everything");
    let name = match (direction, offloads) {
        (Direction::Upload, true) => "guest → host, TSO 64 KiB",
        (Direction::Download, true) => "host → guest, TSO (to the guest)",
        (Direction::Upload, false) => "guest → host, 1448 B frames",
        (Direction::Download, false) => "host → guest, 1448 B frames",
    };
    Row {
        name: name.into(),
        bytes: total as u64,
        elapsed,
        cpu: Some(cpu),
        frames: Some(frames(&gw) - frames0),
    }
}

/// CPU seconds (user + system) of each of virtgate's vring workers, one per queue pair, in the
/// order the threads were made.
fn worker_cpu(pid: u32) -> Vec<f64> {
    let mut tasks: Vec<(u32, f64)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| {
                    let tid: u32 = t.file_name().to_str()?.parse().ok()?;
                    let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                    (comm.trim() == "vring_worker")
                        .then(|| (tid, common::task_cpu_seconds(pid, tid)))
                })
                .collect()
        })
        .unwrap_or_default();
    tasks.sort_by_key(|t| t.0);
    tasks.into_iter().map(|t| t.1).collect()
}

/// Two bulk TCP flows one way at once through `--queues 2`, each on its own queue pair (its
/// shard's), each pair driven by a thread of its own; `total` bytes in all. Prints the row, the
/// workers' CPU and the time they waited for shard locks.
fn two_pairs(direction: Direction, total: usize) {
    use virtgate::virtio_net::{offered_features, Offloads};
    let (vg, mut fe) = common::Virtgate::start_pairs(
        &format!("gwbench-2p-{}", direction as u32),
        offered_features(Offloads::ALL, 2),
        &["--resolv-conf", "/dev/null", "--queues", "2"],
        2,
    );
    let per_flow = total / 2;
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let done_rx = std::sync::Arc::new(std::sync::Mutex::new(done_rx));
    for _ in 0..2 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let done = std::sync::Arc::clone(&done_rx);
        hosts.push(std::thread::spawn(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = done
                    .lock()
                    .map(|d| d.recv_timeout(Duration::from_secs(120)));
                let _ = tx.send(());
            });
            host_end(listener, direction, per_flow, rx)
        }));
    }
    // The guest port of each flow: one whose steering hash names pair k, so that its frames
    // come back on the pair that drives it.
    use virtgate::frontend::guest_tcp::{GATEWAY_IP as gateway_ip, GUEST_IP as guest_ip};
    let local_port = |k: usize, port: u16| {
        (40000u16..41000)
            .find(|&p| {
                netstack::stack::flow_hash(
                    (&guest_ip.0[..], Some(&p.to_be_bytes()[..])),
                    (&gateway_ip.0[..], Some(&port.to_be_bytes()[..])),
                ) as usize
                    % 2
                    == k
            })
            .expect("a port for the pair")
    };
    let pid = vg.pid();
    let cpu0 = cpu_seconds(pid);
    let workers0 = worker_cpu(pid);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for (k, pair) in fe.pairs_mut().iter_mut().enumerate() {
            let port = ports[k];
            let local = local_port(k, port);
            scope.spawn(move || {
                pair.post_rx_buffers(QUEUE_SIZE);
                let mut conn = GuestTcp::connect(pair, port, local, 1500).expect("connect");
                let result = match direction {
                    Direction::Upload => conn.send_bulk(pair, per_flow),
                    Direction::Download => conn.receive_bulk(pair, per_flow),
                };
                result.expect("transfer");
            });
        }
    });
    let elapsed = start.elapsed();
    drop(done_tx);
    let moved: usize = hosts.into_iter().map(|h| h.join().unwrap()).sum();
    let cpu = cpu_seconds(pid) - cpu0;
    let workers: Vec<f64> = worker_cpu(pid)
        .iter()
        .zip(workers0.iter().chain(std::iter::repeat(&0.0)))
        .map(|(a, b)| a - b)
        .collect();
    assert_eq!(moved, 2 * per_flow, "the host's ends moved everything");
    let stats: serde_json::Value =
        serde_json::from_str(&vg.stats().expect("stats")).expect("stats JSON");
    if std::env::var_os("VIRTGATE_BENCH_STATS").is_some() {
        eprintln!("virtgate's stats after the row: {stats}");
    }
    let sum = |k: &str| {
        stats["queues"]["pairs"].as_array().map_or(0, |p| {
            p.iter().map(|q| q[k].as_u64().unwrap_or(0)).sum::<u64>()
        })
    };
    let name = match direction {
        Direction::Upload => "two pairs, one flow each: guest → host, TSO",
        Direction::Download => "two pairs, one flow each: host → guest, TSO",
    };
    Row {
        name: name.into(),
        bytes: moved as u64,
        elapsed,
        cpu: Some(cpu),
        frames: None,
    }
    .print();
    let wait_ms = sum("shard_lock_wait_ns") as f64 / 1e6;
    println!(
        "    workers' CPU {}; waited for a shard's lock {} times, {:.2} ms in all ({:.3} ms per second); frames on another pair's queue {}",
        workers
            .iter()
            .map(|c| format!("{c:.2} s"))
            .collect::<Vec<_>>()
            .join(", "),
        sum("shard_lock_waits"),
        wait_ms,
        wait_ms / elapsed.as_secs_f64(),
        sum("tx_cross_shard"),
    );
}

/// Echoes to the gateway one at a time: the round trip the frontend sees (p50, p99) and
/// virtgate's CPU per echo. What a guest's `ping` to its gateway measures, less the guest.
fn ping_gateway(count: u16) {
    let (vg, mut fe) = common::Virtgate::start(
        "gwbench-ping",
        TestFrontend::qemu_features(),
        &["--resolv-conf", "/dev/null"],
    );
    fe.post_rx_buffers(QUEUE_SIZE);
    let pid = vg.pid();
    let mut rtts = Vec::with_capacity(usize::from(count));
    let mut cpu0 = 0.0;
    // The first echoes open the host socket and warm up; the first 10 are not counted.
    for seq in 0..count + 10 {
        if seq == 10 {
            cpu0 = cpu_seconds(pid);
        }
        let start = Instant::now();
        fe.send(&echo_request(GATEWAY_IP, seq, &[0x5a; 56]));
        loop {
            let frame = fe.recv(Duration::from_secs(5)).expect("an echo reply");
            fe.post_rx_buffers(1);
            // An echo reply carries type 0 right after a 20-byte IPv4 header.
            if frame.get(23) == Some(&1) && frame.get(34) == Some(&0) {
                break;
            }
        }
        if seq >= 10 {
            rtts.push(start.elapsed());
        }
    }
    let cpu = cpu_seconds(pid) - cpu0;
    rtts.sort();
    let at = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{:<48} p50 {:.1} µs, p99 {:.1} µs, virtgate CPU {:.1} µs per echo",
        "echo to the gateway, round trip",
        at(0.5),
        at(0.99),
        cpu * 1e6 / f64::from(count)
    );
}

/// `cargo bench -p virtgate --bench gateway [WORDS]`: rows whose name contains one of the words
/// (e.g. `"host → guest"`, `TSO`, `1448`); every row without.
fn main() {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| words.is_empty() || words.iter().any(|w| name.contains(w.as_str()));
    let mb: usize = std::env::var("VIRTGATE_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let total = mb << 20;
    println!("bulk TCP through the gateway, {mb} MiB per row, MTU 1500");
    println!(
        "{:<48} {:>8} {:>12} {:>12}",
        "path", "Gbit/s", "CPU ns/byte", "CPU µs/frame"
    );
    if wanted("memcpy") {
        memcpy_baseline(total).print();
    }
    if wanted("loopback") {
        let (s, r) = loopback_baseline(total);
        s.print();
        r.print();
    }
    for offloads in [true, false] {
        let kind = if offloads { "TSO" } else { "1448 B frames" };
        if wanted(&format!("guest → host, {kind}")) {
            transfer(Direction::Upload, offloads, total).print();
        }
        if wanted(&format!("host → guest, {kind}")) {
            transfer(Direction::Download, offloads, total).print();
        }
    }
    if wanted("echo to the gateway") {
        ping_gateway(2000);
    }
    if wanted("two pairs, one flow each: guest → host, TSO") {
        two_pairs(Direction::Upload, total);
    }
    if wanted("two pairs, one flow each: host → guest, TSO") {
        two_pairs(Direction::Download, total);
    }
}
