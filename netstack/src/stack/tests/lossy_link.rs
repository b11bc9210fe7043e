//! TCP over a simulated link: the stack on one side, a model guest TCP on the other, and between
//! them a seeded link that loses, reorders, duplicates and delays frames. Time is simulated, so
//! every run with the same seed is the same run.
//!
//! The model guest is small but honest: it keeps data beyond a gap and reports it in SACK blocks,
//! delays its ACKs (every second segment, 40 ms at most, at once when out of order), and as a
//! sender resends SACK holes after three duplicate ACKs and the first unacknowledged segment on a
//! timeout. It also checks what the stack tells it: every SACK block must name bytes it really
//! sent and the stack has not acknowledged.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::host::{ScriptedHost, ScriptedSocket, SocketId};
use crate::wire::tcp::flags;
use crate::wire::{SeqNumber, TcpPacket, TcpRepr};

const GW: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const GUEST_PORT: u16 = 40000;
const MSS: u16 = 1460;
/// The model guest's window: 1 MiB, scale 7.
const GUEST_WINDOW: usize = 1 << 20;
const GUEST_SHIFT: u8 = 7;
/// The model guest's congestion window, in segments (it models a receiver, not a controller).
const GUEST_CWND: usize = 64;

/// xorshift64*: small, seedable, good enough to pick frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 100.0 < percent
    }
}

/// What the link does to frames, per direction.
#[derive(Clone, Copy, Default)]
struct Impairments {
    loss: f64,
    /// A frame is held back and delivered after the next one (a swap, displacement one).
    reorder: f64,
    duplicate: f64,
    /// Each frame is delayed by up to this much more, at random (deeper reordering).
    jitter: Duration,
}

/// One direction of the link.
struct Link {
    rng: Rng,
    imp: Impairments,
    delay: Duration,
    queue: Vec<(Instant, u64, Vec<u8>)>,
    held: Option<Vec<u8>>,
    sent: u64,
    /// Frames the link dropped, by their index among the frames offered.
    drop_at: Vec<u64>,
    dropped: u64,
    dropped_tcp_payload: usize,
}

impl Link {
    fn new(seed: u64, imp: Impairments) -> Self {
        Link {
            rng: Rng(seed.max(1)),
            imp,
            delay: Duration::from_micros(500),
            queue: Vec::new(),
            held: None,
            sent: 0,
            drop_at: Vec::new(),
            dropped: 0,
            dropped_tcp_payload: 0,
        }
    }

    fn send(&mut self, now: Instant, frame: Vec<u8>) {
        let index = self.sent;
        self.sent += 1;
        if self.drop_at.contains(&index) || self.rng.chance(self.imp.loss) {
            self.dropped += 1;
            self.dropped_tcp_payload += tcp_payload_len(&frame);
            return;
        }
        if self.held.is_none() && self.rng.chance(self.imp.reorder) {
            self.held = Some(frame);
            return;
        }
        let jitter = self.imp.jitter.total_micros();
        let extra = if jitter > 0 {
            self.rng.next() % jitter
        } else {
            0
        };
        let at = now + self.delay + Duration::from_micros(extra);
        if self.rng.chance(self.imp.duplicate) {
            self.queue.push((at, index, frame.clone()));
        }
        self.queue.push((at, index, frame));
        if let Some(h) = self.held.take() {
            self.queue.push((at, index, h));
        }
    }

    /// Frames due by `now`, in the order they arrive.
    fn deliver(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let (mut due, rest): (Vec<_>, Vec<_>) = self.queue.drain(..).partition(|f| f.0 <= now);
        self.queue = rest;
        due.sort_by_key(|f| (f.0, f.1));
        due.into_iter().map(|f| f.2).collect()
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.iter().map(|f| f.0).min()
    }

    /// Releases a held frame when nothing follows it for a while.
    fn flush_held(&mut self, now: Instant) {
        if let Some(h) = self.held.take() {
            self.queue.push((now + self.delay, self.sent, h));
        }
    }
}

fn tcp_of(frame: &[u8]) -> Option<TcpRepr<'_>> {
    let ip = Ipv4Packet::new_checked(&frame[14..]).ok()?;
    if ip.protocol() != IpProtocol::Tcp {
        return None;
    }
    let body = &frame[14 + usize::from(ip.header_len())..14 + usize::from(ip.total_len())];
    TcpRepr::parse(
        &TcpPacket::new_checked(body).ok()?,
        ip.src_addr(),
        ip.dst_addr(),
    )
    .ok()
}

fn tcp_payload_len(frame: &[u8]) -> usize {
    tcp_of(frame).map_or(0, |r| r.payload.len())
}

/// Merged `[start, end)` ranges of offsets.
fn add_range(ranges: &mut Vec<(usize, usize)>, r: (usize, usize)) {
    ranges.push(r);
    ranges.sort();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (s, e) in ranges.drain(..) {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    *ranges = merged;
}

/// The model guest. Offsets count payload bytes from the first data byte of each direction.
struct Guest {
    isn: u32,
    /// The stack's initial sequence number.
    irs: u32,
    // Receiving.
    received: Vec<u8>,
    ooo: BTreeMap<usize, Vec<u8>>,
    /// The most recently arrived out-of-order range start (reported first).
    latest_ooo: Option<usize>,
    segs_unacked: u32,
    delack_at: Option<Instant>,
    ts_recent: u32,
    // Sending.
    data: Vec<u8>,
    snd_una: usize,
    snd_nxt: usize,
    peer_wnd: usize,
    sacked: Vec<(usize, usize)>,
    dup_acks: u32,
    high_rxt: usize,
    rto: Duration,
    rto_at: Option<Instant>,
    retransmitted: usize,
    out: Vec<Vec<u8>>,
}

impl Guest {
    fn new(data: Vec<u8>) -> Self {
        Guest {
            isn: 0xffff_f000, // wraps during the transfer
            irs: 0,
            received: Vec::new(),
            ooo: BTreeMap::new(),
            latest_ooo: None,
            segs_unacked: 0,
            delack_at: None,
            ts_recent: 0,
            data,
            snd_una: 0,
            snd_nxt: 0,
            peer_wnd: 0,
            sacked: Vec::new(),
            dup_acks: 0,
            high_rxt: 0,
            rto: Duration::from_millis(300),
            rto_at: None,
            retransmitted: 0,
            out: Vec::new(),
        }
    }

    fn seq(&self, offset: usize) -> SeqNumber {
        SeqNumber(self.isn.wrapping_add(1).wrapping_add(offset as u32))
    }

    fn frame(&mut self, now: Instant, seq: SeqNumber, flags: u8, payload: &[u8], syn: bool) {
        let mut sack = [None; 3];
        if !syn {
            // The range holding the latest out-of-order segment first (RFC 2018 §4).
            let mut ranges: Vec<(usize, usize)> = Vec::new();
            for (off, d) in &self.ooo {
                add_range(&mut ranges, (*off, off + d.len()));
            }
            if let Some(l) = self.latest_ooo {
                if let Some(i) = ranges.iter().position(|r| r.0 <= l && l < r.1) {
                    let r = ranges.remove(i);
                    ranges.insert(0, r);
                }
            }
            let base = self.irs.wrapping_add(1);
            for (slot, (s, e)) in sack.iter_mut().zip(ranges) {
                *slot = Some((
                    SeqNumber(base.wrapping_add(s as u32)),
                    SeqNumber(base.wrapping_add(e as u32)),
                ));
            }
        }
        let r = TcpRepr {
            src_port: GUEST_PORT,
            dst_port: 80,
            seq_number: seq,
            ack_number: (!syn).then(|| {
                SeqNumber(
                    self.irs
                        .wrapping_add(1)
                        .wrapping_add(self.received.len() as u32),
                )
            }),
            flags,
            window_len: if syn {
                u16::MAX
            } else {
                (GUEST_WINDOW >> GUEST_SHIFT) as u16
            },
            urgent_at: 0,
            max_seg_size: syn.then_some(MSS),
            window_scale: syn.then_some(GUEST_SHIFT),
            sack_permitted: syn,
            sack_ranges: sack,
            timestamp: Some(((now.total_micros() / 1000) as u32 + 1, self.ts_recent)),
            payload,
        };
        let mut t = vec![0u8; r.buffer_len()];
        r.emit_v4(&mut t, GUEST_IP, GW);
        self.out.push(ipv4_frame(GUEST_IP, GW, IpProtocol::Tcp, &t));
        self.segs_unacked = 0;
        self.delack_at = None;
    }

    fn ack(&mut self, now: Instant) {
        let seq = self.seq(self.snd_nxt);
        self.frame(now, seq, 0, &[], false);
    }

    /// Payload per segment: MSS less the timestamp option.
    fn seg_size() -> usize {
        usize::from(MSS) - 12
    }

    fn send_segment(&mut self, now: Instant, offset: usize) -> usize {
        let len = (self.data.len() - offset).min(Self::seg_size());
        let payload = self.data[offset..offset + len].to_vec();
        let seq = self.seq(offset);
        self.frame(now, seq, flags::PSH, &payload, false);
        self.rto_at.get_or_insert(now + self.rto);
        len
    }

    /// Sends new data as the windows allow.
    fn output(&mut self, now: Instant) {
        let limit = self.peer_wnd.min(GUEST_CWND * Self::seg_size());
        while self.snd_nxt < self.data.len() && self.snd_nxt - self.snd_una < limit {
            let n = self.send_segment(now, self.snd_nxt);
            self.snd_nxt += n;
        }
    }

    /// Resends the first hole above `high_rxt` that the stack has not SACKed.
    fn retransmit_hole(&mut self, now: Instant) {
        let mut at = self.high_rxt.max(self.snd_una);
        for &(s, e) in &self.sacked {
            if s <= at && at < e {
                at = e;
            }
        }
        let top = self.sacked.last().map_or(self.snd_una + 1, |r| r.1);
        if at < self.snd_nxt && at < top {
            let n = self.send_segment(now, at);
            self.retransmitted += n;
            self.high_rxt = at + n;
        }
    }

    fn on_frame(&mut self, now: Instant, frame: &[u8]) {
        let Some(r) = tcp_of(frame) else { return };
        assert_eq!(r.flags & flags::RST, 0, "the stack reset the connection");
        if let Some((val, _)) = r.timestamp {
            self.ts_recent = val;
        }
        // The sender side: what the stack acknowledges and SACKs.
        if let Some(ack) = r.ack_number {
            let ack_off = ack.0.wrapping_sub(self.isn.wrapping_add(1)) as usize;
            assert!(ack_off <= self.snd_nxt, "ACK beyond what was sent");
            for (s, e) in r.sack_ranges.iter().flatten() {
                let s = s.0.wrapping_sub(self.isn.wrapping_add(1)) as usize;
                let e = e.0.wrapping_sub(self.isn.wrapping_add(1)) as usize;
                assert!(
                    ack_off < s && s < e && e <= self.snd_nxt,
                    "SACK block {s}..{e} with ACK {ack_off}, sent {}",
                    self.snd_nxt
                );
                add_range(&mut self.sacked, (s, e));
            }
            self.peer_wnd = usize::from(r.window_len) << 3;
            if ack_off > self.snd_una {
                self.snd_una = ack_off;
                self.sacked.retain(|r| r.1 > ack_off);
                self.dup_acks = 0;
                self.rto = Duration::from_millis(300);
                self.rto_at = (self.snd_una < self.snd_nxt).then(|| now + self.rto);
                if self.high_rxt > self.snd_una {
                    self.retransmit_hole(now);
                }
            } else if r.payload.is_empty() && self.snd_una < self.snd_nxt {
                self.dup_acks += 1;
                if self.dup_acks >= 3 {
                    self.retransmit_hole(now);
                }
            }
        }
        // The receiver side: data from the stack.
        if r.payload.is_empty() {
            return;
        }
        let off = r.seq_number.0.wrapping_sub(self.irs.wrapping_add(1)) as usize;
        let had_gap = !self.ooo.is_empty();
        if off > self.received.len() && off < self.received.len() + GUEST_WINDOW {
            self.ooo.entry(off).or_insert_with(|| r.payload.to_vec());
            self.latest_ooo = Some(off);
            self.ack(now);
            return;
        }
        if off + r.payload.len() > self.received.len() && off <= self.received.len() {
            let skip = self.received.len() - off;
            self.received.extend_from_slice(&r.payload[skip..]);
            while let Some((&o, _)) = self.ooo.first_key_value() {
                if o > self.received.len() {
                    break;
                }
                let d = self.ooo.remove(&o).unwrap();
                if o + d.len() > self.received.len() {
                    let skip = self.received.len() - o;
                    self.received.extend_from_slice(&d[skip..]);
                }
            }
            self.segs_unacked += 1;
            if had_gap || self.segs_unacked >= 2 {
                self.ack(now);
            } else {
                self.delack_at
                    .get_or_insert(now + Duration::from_millis(40));
            }
        } else {
            // A duplicate: acknowledged at once (RFC 5681 §4.2).
            self.ack(now);
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if self.delack_at.is_some_and(|t| t <= now) {
            self.ack(now);
        }
        if self.rto_at.is_some_and(|t| t <= now) {
            // Go back to the first unacknowledged segment, forget the SACKs (RFC 2018 §8).
            self.sacked.clear();
            self.high_rxt = self.snd_una;
            self.rto = self.rto + self.rto;
            self.rto_at = None;
            let n = self.send_segment(now, self.snd_una);
            self.retransmitted += n;
            self.high_rxt = self.snd_una + n;
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        [self.delack_at, self.rto_at].into_iter().flatten().min()
    }
}

/// The stack, the model guest and the two directions of the link.
struct Sim {
    now: Instant,
    stack: Stack<ScriptedHost>,
    sock: SocketId,
    guest: Guest,
    to_guest: Link,
    to_stack: Link,
}

impl Sim {
    /// Connects over a clean link; the impairments start with the data.
    fn connect(seed: u64, imp: Impairments, guest_data: Vec<u8>) -> Sim {
        let stack = Stack::with_host(
            Config {
                tcp_keepalive: None,
                ..Config::default()
            },
            ScriptedHost::new(),
        )
        .unwrap();
        let mut sim = Sim {
            now: Instant::ZERO,
            stack,
            sock: SocketId(0),
            guest: Guest::new(guest_data),
            to_guest: Link::new(seed, Impairments::default()),
            to_stack: Link::new(
                seed.wrapping_mul(31).wrapping_add(7),
                Impairments::default(),
            ),
        };
        let seq = SeqNumber(sim.guest.isn);
        sim.guest.frame(sim.now, seq, flags::SYN, &[], true);
        let syn = sim.guest.out.pop().unwrap();
        sim.stack.process_frame(sim.now, &syn);
        let remote: SocketAddr = "127.0.0.1:80".parse().unwrap();
        sim.sock = sim.stack.host().find(&ScriptedSocket::Tcp(remote)).unwrap();
        sim.stack.host_mut().tcp_connected.insert(sim.sock, Ok(()));
        sim.stack.host_ready(sim.now, sim.sock);
        let syn_ack = drain(&mut sim.stack);
        let r = tcp_of(&syn_ack[0]).unwrap();
        assert!(r.sack_permitted && r.timestamp.is_some());
        sim.guest.irs = r.seq_number.0;
        sim.guest.ts_recent = r.timestamp.unwrap().0;
        sim.guest.peer_wnd = usize::from(r.window_len);
        sim.guest.ack(sim.now);
        let ack = sim.guest.out.pop().unwrap();
        sim.stack.process_frame(sim.now, &ack);
        sim.to_guest.imp = imp;
        sim.to_stack.imp = imp;
        sim
    }

    /// Runs until `done` or the simulated time limit; returns the simulated time taken.
    fn run(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> Duration {
        let start = self.now;
        for _ in 0..2_000_000 {
            if done(self) {
                return self.now - start;
            }
            assert!(self.now - start < limit, "no progress within {limit}");
            for f in self.to_stack.deliver(self.now) {
                self.stack.process_frame(self.now, &f);
            }
            self.stack.poll(self.now);
            self.stack.host_ready(self.now, self.sock);
            for f in drain(&mut self.stack) {
                self.to_guest.send(self.now, f);
            }
            for f in self.to_guest.deliver(self.now) {
                self.guest.on_frame(self.now, &f);
            }
            self.guest.on_timers(self.now);
            self.guest.output(self.now);
            for f in std::mem::take(&mut self.guest.out) {
                self.to_stack.send(self.now, f);
            }
            // Next event, at most 1 ms away (a held frame is let go when the link is quiet).
            let next = [
                self.to_stack.next_at(),
                self.to_guest.next_at(),
                self.stack.poll_at(),
                self.guest.next_timer(),
            ]
            .into_iter()
            .flatten()
            .min();
            let step = Instant::from_micros(self.now.total_micros() + 1000);
            let next = next.map_or(step, |n| n.max(self.now + Duration::from_micros(1)));
            if next >= step {
                self.to_guest.flush_held(self.now);
                self.to_stack.flush_held(self.now);
            }
            self.now = next.min(step);
        }
        panic!("the simulation did not finish");
    }

    /// The host peer writes `data` to its end of the connection.
    fn host_sends(&mut self, data: &[u8]) {
        self.stack
            .host_mut()
            .tcp_incoming
            .entry(self.sock)
            .or_default()
            .push_back(Some(data.to_vec()));
    }

    fn host_written(&self) -> &[u8] {
        self.stack
            .host()
            .tcp_written
            .get(&self.sock)
            .map_or(&[], Vec::as_slice)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed ^ (i >> 11) as u8)
        })
        .collect()
}

const LOSSY: Impairments = Impairments {
    loss: 2.0,
    reorder: 2.0,
    duplicate: 1.0,
    jitter: Duration::ZERO,
};

#[rstest::rstest]
fn host_to_guest_recovers_with_sack(#[values(1, 2, 3, 4)] seed: u64) {
    let mut sim = Sim::connect(seed, LOSSY, Vec::new());
    let data = pattern(2 << 20, seed as u8);
    sim.host_sends(&data);
    let took = sim.run(Duration::from_secs(120), |s| {
        s.guest.received.len() >= data.len()
    });
    assert!(sim.guest.received == data, "the guest's bytes differ");
    let st = sim.stack.stats();
    let lost_segments = sim.to_guest.dropped;
    assert!(lost_segments > 10, "the link lost {lost_segments} frames");
    // SACK recovery resends what was lost, not what arrived: about one segment per loss (some
    // retransmissions are lost too, and reordering makes a few spurious ones).
    assert!(
        st.tcp_retransmitted_segments <= 2 * lost_segments + 8,
        "{} segments resent for {lost_segments} lost",
        st.tcp_retransmitted_segments
    );
    // Most losses are repaired without waiting for the timer.
    assert!(st.tcp_fast_retransmits > 0);
    assert!(
        st.tcp_retransmits * 4 <= st.tcp_fast_retransmits + 4,
        "{} timeouts, {} fast recoveries",
        st.tcp_retransmits,
        st.tcp_fast_retransmits
    );
    assert!(st.tcp_sack_blocks_received > 0);
    eprintln!(
        "seed {seed}: {} in {took}, {lost_segments} lost, {} resent, {} fast recoveries, {} timeouts",
        data.len(),
        st.tcp_retransmitted_segments,
        st.tcp_fast_retransmits,
        st.tcp_retransmits
    );
}

#[rstest::rstest]
fn guest_to_host_holds_out_of_order_data(#[values(1, 2, 3, 4)] seed: u64) {
    let data = pattern(2 << 20, 0x5a ^ seed as u8);
    let mut sim = Sim::connect(seed, LOSSY, data.clone());
    let took = sim.run(Duration::from_secs(120), |s| {
        s.host_written().len() >= data.len()
    });
    assert!(sim.host_written() == data, "the host's bytes differ");
    let st = sim.stack.stats();
    let lost = sim.to_stack.dropped_tcp_payload;
    assert!(st.tcp_out_of_order_queued > 0);
    // The guest resends only what the stack reported missing (SACK), not what it holds.
    assert!(
        sim.guest.retransmitted <= 2 * lost + 16 * 1448,
        "guest resent {} bytes for {lost} lost",
        sim.guest.retransmitted
    );
    eprintln!(
        "seed {seed}: {} in {took}, {lost} bytes lost, guest resent {}, {} held out of order",
        data.len(),
        sim.guest.retransmitted,
        st.tcp_out_of_order_queued
    );
}

#[test]
fn reordering_alone_retransmits_nothing() {
    let imp = Impairments {
        reorder: 5.0,
        ..Impairments::default()
    };
    let data = pattern(1 << 20, 9);
    let mut sim = Sim::connect(11, imp, data.clone());
    sim.host_sends(&data);
    sim.run(Duration::from_secs(60), |s| {
        s.guest.received.len() >= data.len() && s.host_written().len() >= data.len()
    });
    assert!(sim.guest.received == data && sim.host_written() == data);
    let st = sim.stack.stats();
    // A segment one place late is two duplicate ACKs at most: below the threshold.
    assert_eq!(st.tcp_retransmitted_segments, 0);
    assert_eq!(st.tcp_fast_retransmits, 0);
    assert!(
        st.tcp_out_of_order_queued > 0,
        "the guest's swaps were held"
    );
    assert_eq!(sim.guest.retransmitted, 0);
}

#[test]
fn one_loss_halves_the_window_then_it_grows_again() {
    let mut sim = Sim::connect(5, Impairments::default(), Vec::new());
    let data = pattern(4 << 20, 1);
    sim.host_sends(&data);
    // Let slow start run for a while, then lose one segment.
    sim.run(Duration::from_secs(10), |s| {
        s.guest.received.len() > 300_000
    });
    let before = sim.stack.tcp_congestion().unwrap();
    sim.to_guest.drop_at.push(sim.to_guest.sent + 5);
    sim.run(Duration::from_secs(10), |s| {
        s.stack.stats().tcp_fast_retransmits == 1 && s.stack.tcp_congestion().unwrap().2
    });
    let (cwnd, ssthresh) = sim.stack.tcp_recovered_with().expect("recovery ended");
    assert_eq!(before.1, usize::MAX, "slow start until the loss");
    assert!((2 * 1448..usize::MAX).contains(&ssthresh));
    // RFC 6582 §3.2 step 3: leaving recovery, the window is at most ssthresh (taken as the full
    // ACK arrived: the ACKs after it in the same batch grow it again at once).
    assert!(cwnd <= ssthresh + 1448, "cwnd {cwnd}, ssthresh {ssthresh}");
    sim.run(Duration::from_secs(60), |s| {
        s.guest.received.len() >= data.len()
    });
    assert!(sim.guest.received == data);
    let (grown, _, _) = sim.stack.tcp_congestion().unwrap();
    assert!(
        grown > ssthresh,
        "cwnd {grown} did not grow past {ssthresh}"
    );
    assert_eq!(sim.stack.stats().tcp_retransmitted_segments, 1);
    assert_eq!(
        sim.stack.stats().tcp_retransmits,
        0,
        "no timeout was needed"
    );
}

#[test]
fn a_lost_tail_is_repaired_by_the_timer() {
    let mut sim = Sim::connect(6, Impairments::default(), Vec::new());
    let data = pattern(20_000, 2);
    // The last three segments of the burst are lost: too few duplicate ACKs follow them.
    let first = sim.to_guest.sent;
    sim.to_guest
        .drop_at
        .extend([first + 11, first + 12, first + 13]);
    sim.host_sends(&data);
    let took = sim.run(Duration::from_secs(30), |s| {
        s.guest.received.len() >= data.len()
    });
    assert!(sim.guest.received == data);
    let st = sim.stack.stats();
    assert_eq!(st.tcp_retransmits, 1, "one timeout");
    assert!(
        took >= Duration::from_millis(200),
        "not before the minimum RTO"
    );
    let (cwnd, _, _) = sim.stack.tcp_congestion().unwrap();
    assert!(cwnd >= 1448, "cwnd {cwnd}");
}

/// Loss on a link whose delay varies by up to 3 ms per frame (six times its base delay): frames
/// overtake each other several places deep, RTT samples swing, and both directions still arrive
/// intact without the timer taking over.
#[rstest::rstest]
fn jitter_and_loss_both_ways(#[values(21, 22)] seed: u64) {
    let imp = Impairments {
        loss: 1.0,
        jitter: Duration::from_millis(3),
        ..Impairments::default()
    };
    let data = pattern(1 << 20, seed as u8);
    let mut sim = Sim::connect(seed, imp, data.clone());
    sim.host_sends(&data);
    let took = sim.run(Duration::from_secs(120), |s| {
        s.guest.received.len() >= data.len() && s.host_written().len() >= data.len()
    });
    assert!(sim.guest.received == data && sim.host_written() == data);
    let st = sim.stack.stats();
    assert!(st.tcp_out_of_order_queued > 0);
    assert!(
        st.tcp_retransmits <= 3,
        "{} timeouts in {took}",
        st.tcp_retransmits
    );
    eprintln!(
        "seed {seed}: {took}, {} resent, {} recoveries, {} timeouts, {} lost",
        st.tcp_retransmitted_segments,
        st.tcp_fast_retransmits,
        st.tcp_retransmits,
        sim.to_guest.dropped
    );
}
