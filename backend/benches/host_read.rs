//! How to take a host TCP stream towards the guest (`cargo bench -p virtgate --bench host_read`):
//! the two designs of issue 13, on the host side alone, against one model of the guest.
//!
//! A sender thread writes into a loopback connection as fast as it can; the receiver plays
//! virtgate towards a guest that acknowledges each segment `VIRTGATE_BENCH_ACK_US` microseconds
//! (default 500) after it was sent, with at most `VIRTGATE_BENCH_WINDOW_KB` KiB (default 4096)
//! unacknowledged. Segments are 64 KiB (TSO), written into a 64 MiB "guest memory" (larger than the
//! caches, as the guest's buffers are). The receiver:
//!
//! - **copy** (virtgate today): reads the socket eagerly into a 4 MiB send ring, copies each
//!   segment from the ring into guest memory, drops acknowledged bytes from the ring;
//! - **peek**: leaves the bytes in the socket, peeks each segment at `SO_PEEK_OFF` straight into
//!   guest memory, and discards acknowledged bytes with `MSG_TRUNC` (passt's way), with the
//!   kernel's receive buffer autotuned, or fixed at its largest (`SO_RCVBUF` as high as
//!   `net.core.rmem_max` allows, which is what passt sets).
//!
//! Reported per row: Gbit/s, the receiver's CPU per byte (its thread's clock: the kernel's copy
//! out of the socket and, for copy, the userspace copy), the sender's CPU per byte, and the
//! receive buffer the socket ended with. Numbers, never assertions.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod common;

use common::thread_cpu;

const SEGMENT: usize = 64 * 1024;
const GUEST_MEMORY: usize = 64 << 20;
const RING: usize = 4 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Strategy {
    Copy,
    Peek { max_rcvbuf: bool },
}

impl Strategy {
    fn label(self) -> &'static str {
        match self {
            Strategy::Copy => "copy: read into a send ring, copy into guest memory",
            Strategy::Peek { max_rcvbuf: false } => {
                "peek into guest memory, discard on ACK (autotuned buffer)"
            }
            Strategy::Peek { max_rcvbuf: true } => {
                "peek into guest memory, discard on ACK (SO_RCVBUF at rmem_max)"
            }
        }
    }
}

fn setsockopt_int(fd: i32, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: the option value is a valid int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: i32, level: i32, name: i32) -> i32 {
    let mut value = 0i32;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for the kernel to fill.
    unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    value
}

/// `recv` into `buf` with `flags` (MSG_DONTWAIT added): bytes, or None when nothing is there.
fn recv(fd: i32, buf: &mut [u8], flags: i32) -> Option<usize> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    match n {
        n if n > 0 => Some(n as usize),
        0 => panic!("the sender closed early"),
        _ => {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "recv: {e}");
            None
        }
    }
}

/// Drops `n` bytes at the head of the socket's receive queue without copying them.
fn discard(fd: i32, n: usize) {
    // SAFETY: with MSG_TRUNC a TCP socket copies nothing; the null buffer is never written.
    let r = unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            n,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    };
    assert_eq!(
        r,
        n as isize,
        "discard: {}",
        std::io::Error::last_os_error()
    );
}

/// Waits (epoll, edge-triggered: a peeking receiver leaves data queued) until the socket gets
/// new data or `until`.
struct Waiter {
    epfd: i32,
}

impl Waiter {
    fn new(fd: i32) -> Self {
        // SAFETY: no pointers involved.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epfd >= 0);
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open and the event is a valid struct.
        let added = unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert_eq!(added, 0);
        Waiter { epfd }
    }

    fn wait(&self, until: Option<Instant>) {
        let ms = until.map_or(100, |t| {
            let left = t.saturating_duration_since(Instant::now());
            left.as_micros().div_ceil(1000) as i32
        });
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: one valid event to fill.
        unsafe { libc::epoll_wait(self.epfd, &mut ev, 1, ms) };
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours.
        unsafe { libc::close(self.epfd) };
    }
}

struct Row {
    gbit: f64,
    receiver_ns: f64,
    sender_ns: f64,
    rcvbuf: i32,
}

fn run(strategy: Strategy, total: usize, window: usize, ack_delay: Duration) -> Row {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let chunk = vec![0x5au8; 256 * 1024];
        let cpu = thread_cpu();
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        // Held open until the receiver has taken everything.
        (s, thread_cpu() - cpu)
    });
    let (sock, _) = listener.accept().unwrap();
    let fd = sock.as_raw_fd();
    if let Strategy::Peek { max_rcvbuf } = strategy {
        if max_rcvbuf {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, i32::MAX / 2).unwrap();
        }
        setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)
            .expect("SO_PEEK_OFF on TCP needs Linux 6.9");
    }
    let waiter = Waiter::new(fd);
    let mut guest = vec![0u8; GUEST_MEMORY];
    let mut ring = vec![0u8; RING];
    let (mut ring_start, mut ring_len) = (0usize, 0usize);
    // Segments sent and not yet acknowledged: when each was sent, and its length.
    let mut in_flight: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut flight_bytes = 0usize;
    let (mut sent, mut acked, mut guest_at) = (0usize, 0usize, 0usize);
    let cpu = thread_cpu();
    let start = Instant::now();
    while acked < total {
        // The guest's ACKs that are due.
        let now = Instant::now();
        let mut ack = 0;
        while let Some(&(at, len)) = in_flight.front() {
            if now < at + ack_delay {
                break;
            }
            in_flight.pop_front();
            ack += len;
        }
        if ack > 0 {
            flight_bytes -= ack;
            acked += ack;
            match strategy {
                Strategy::Copy => {
                    ring_start = (ring_start + ack) % RING;
                    ring_len -= ack;
                }
                Strategy::Peek { .. } => discard(fd, ack),
            }
        }
        let mut progress = ack > 0;
        // Copy: read whatever the ring has room for.
        if strategy == Strategy::Copy {
            while ring_len < RING {
                let tail = (ring_start + ring_len) % RING;
                let room = if tail >= ring_start && ring_len < RING {
                    RING - tail
                } else {
                    ring_start - tail
                };
                match recv(fd, &mut ring[tail..tail + room], 0) {
                    Some(n) => {
                        ring_len += n;
                        progress = true;
                    }
                    None => break,
                }
            }
        }
        // Segments while the window allows.
        while flight_bytes < window && sent < total {
            let len = SEGMENT.min(window - flight_bytes).min(total - sent);
            if guest_at + len > GUEST_MEMORY {
                guest_at = 0;
            }
            let dst = &mut guest[guest_at..guest_at + len];
            let got = match strategy {
                Strategy::Copy => {
                    let offset = sent - acked;
                    let len = len.min(ring_len - offset);
                    if len == 0 {
                        break;
                    }
                    let from = (ring_start + offset) % RING;
                    let first = len.min(RING - from);
                    dst[..first].copy_from_slice(&ring[from..from + first]);
                    dst[first..len].copy_from_slice(&ring[..len - first]);
                    len
                }
                Strategy::Peek { .. } => match recv(fd, dst, libc::MSG_PEEK) {
                    Some(n) => n,
                    None => break,
                },
            };
            guest_at += got;
            sent += got;
            flight_bytes += got;
            in_flight.push_back((Instant::now(), got));
            progress = true;
        }
        if !progress {
            waiter.wait(in_flight.front().map(|&(at, _)| at + ack_delay));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let receiver_cpu = thread_cpu() - cpu;
    let rcvbuf = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF);
    let (_s, sender_cpu) = sender.join().unwrap();
    std::hint::black_box(&guest);
    Row {
        gbit: total as f64 * 8.0 / elapsed / 1e9,
        receiver_ns: receiver_cpu * 1e9 / total as f64,
        sender_ns: sender_cpu * 1e9 / total as f64,
        rcvbuf,
    }
}

fn main() {
    let total = env_usize("VIRTGATE_BENCH_MB", 2048) << 20;
    let window = env_usize("VIRTGATE_BENCH_WINDOW_KB", 4096) << 10;
    let ack_delay = Duration::from_micros(env_usize("VIRTGATE_BENCH_ACK_US", 500) as u64);
    let rounds = env_usize("VIRTGATE_BENCH_ROUNDS", 3);
    println!(
        "host → guest, host side alone: {} MiB per row, window {} KiB, ACK after {} µs, {} rounds \
         interleaved; net.core.rmem_max {}",
        total >> 20,
        window >> 10,
        ack_delay.as_micros(),
        rounds,
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap_or_default()
            .trim()
    );
    println!();
    println!("| row | Gbit/s | receiver CPU ns/byte | sender CPU ns/byte | SO_RCVBUF at the end |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let strategies = [
        Strategy::Copy,
        Strategy::Peek { max_rcvbuf: false },
        Strategy::Peek { max_rcvbuf: true },
    ];
    for round in 0..rounds {
        for s in strategies {
            let r = run(s, total, window, ack_delay);
            println!(
                "| {} (round {}) | {:.2} | {:.3} | {:.3} | {} |",
                s.label(),
                round + 1,
                r.gbit,
                r.receiver_ns,
                r.sender_ns,
                r.rcvbuf
            );
            let _ = std::io::stdout().flush();
        }
    }
}
