//! The connection's state machine without a `Stack`: a recording environment ([`Env`]) stands in
//! for the rest of the stack, so a test feeds segments and time to one connection and reads the
//! segments it sent back.

use super::*;
use crate::host::ScriptedHost;
use crate::wire::{Ipv4Address, TcpPacket};

const GUEST: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const REMOTE: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
const GUEST_ISN: u32 = 5000;

/// Records what the connection sends; everything else as a quiet stack would answer.
struct Recorder {
    host: ScriptedHost,
    stats: Stats,
    cfg: Config,
    /// Segments sent to the guest, as bytes (checksums computed).
    sent: Vec<Vec<u8>>,
}

impl Env for Recorder {
    type Host = ScriptedHost;

    fn host(&mut self) -> &mut ScriptedHost {
        &mut self.host
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.stats
    }

    fn config(&self) -> &Config {
        &self.cfg
    }

    fn inbound(&self) -> FrameMeta {
        FrameMeta::NONE
    }

    fn offloads(&self) -> GuestOffloads {
        GuestOffloads::default()
    }

    fn tx_room_for_flow(&self, _: u32) -> (usize, usize) {
        (0, 256)
    }

    fn send_ip(
        &mut self,
        _: Instant,
        _: (IpAddress, IpAddress),
        protocol: IpProtocol,
        payload_len: usize,
        _: PayloadOffload,
        payload: impl IpPayload,
    ) -> bool {
        assert_eq!(protocol, IpProtocol::Tcp);
        let mut segment = vec![0u8; payload_len];
        payload.write(&mut segment);
        self.sent.push(segment);
        true
    }

    fn unreachable_to_guest(
        &mut self,
        _: Instant,
        _: Unreachable,
        _: IpAddress,
        _: IpAddress,
        _: IpProtocol,
        _: &[u8],
    ) {
    }

    fn ipv6_host_destination(&self, _: Ipv6Address, _: u16) -> Option<SocketAddr> {
        None
    }
}

impl Recorder {
    /// The segments sent since the last call, parsed with their checksums verified:
    /// (sequence number, payload length, flags other than ACK).
    fn take(&mut self) -> Vec<(u32, usize, u8)> {
        self.sent
            .drain(..)
            .map(|b| {
                let packet = TcpPacket::new_checked(&b[..]).expect("a TCP segment");
                let r = TcpRepr::parse(&packet, IpAddress::V4(REMOTE), IpAddress::V4(GUEST))
                    .expect("valid");
                (r.seq_number.0, r.payload.len(), r.flags)
            })
            .collect()
    }
}

fn key() -> ConnKey {
    ConnKey {
        guest: (GUEST.into(), 40000),
        remote: (REMOTE.into(), 80),
    }
}

/// A segment from the guest acknowledging `ack`, with its window of 64 KiB.
fn ack(ack: u32) -> TcpRepr<'static> {
    TcpRepr {
        src_port: 40000,
        dst_port: 80,
        seq_number: SeqNumber(GUEST_ISN + 1),
        ack_number: Some(SeqNumber(ack)),
        flags: 0,
        window_len: u16::MAX,
        urgent_at: 0,
        max_seg_size: None,
        window_scale: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    }
}

/// An established connection (the guest offered MSS 1000, no options) with `n` bytes from the
/// host waiting to go to the guest.
fn established(n: usize) -> (TcpConn, u32) {
    let now = Instant::ZERO;
    let iss = 1_000_000;
    let mut conn = TcpConn::new(
        key(),
        1,
        SocketId(1),
        TcpState::Established,
        SeqNumber(iss),
        now,
    );
    let syn = TcpRepr {
        flags: crate::wire::tcp::flags::SYN,
        seq_number: SeqNumber(GUEST_ISN),
        ack_number: None,
        max_seg_size: Some(1000),
        ..ack(0)
    };
    conn.negotiate(&syn, 1460);
    conn.snd_una = SeqNumber(iss + 1);
    conn.snd_nxt = SeqNumber(iss + 1);
    let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
    let mut at = 0;
    while at < n {
        let room = conn.to_guest.free_mut(n - at);
        let k = room.len();
        room.copy_from_slice(&data[at..at + k]);
        conn.to_guest.commit(k);
        at += k;
    }
    (conn, iss + 1)
}

fn recorder() -> Recorder {
    Recorder {
        host: ScriptedHost::new(),
        stats: Stats::default(),
        cfg: Config::default(),
        sent: Vec::new(),
    }
}

#[test]
fn three_duplicate_acks_resend_the_first_segment_at_once() {
    let (mut conn, first) = established(20_000);
    let mut env = recorder();
    let mut book = Book::default();
    let mut cx = Cx {
        core: &mut env,
        book: &mut book,
    };
    let now = Instant::ZERO;
    cx.output(now, &mut conn);
    // The initial window: ten segments of 1000 bytes (RFC 6928).
    let sent = env_take(&mut cx);
    assert_eq!(sent.len(), 10);
    assert!(sent
        .iter()
        .enumerate()
        .all(|(i, s)| s.0 == first + 1000 * i as u32 && s.1 == 1000));
    // The first segment is lost: the guest acknowledges nothing new, three times.
    for _ in 0..3 {
        cx.segment(now, &mut conn, &ack(first));
        cx.after_input(now, &mut conn);
    }
    let resent = env_take(&mut cx);
    assert_eq!(resent.first().map(|s| (s.0, s.1)), Some((first, 1000)));
    assert_eq!(cx.core.stats.tcp_fast_retransmits, 1);
    assert!(conn.recovery.is_some());
    // The guest then acknowledges all ten: recovery ends, the window has halved (RFC 5681 §3.2).
    cx.segment(now, &mut conn, &ack(first + 10_000));
    assert!(conn.recovery.is_none());
    assert_eq!(conn.cc.ssthresh, 5000);
}

#[test]
fn a_zero_window_is_probed_on_the_timer() {
    let (mut conn, first) = established(3000);
    let mut env = recorder();
    let mut book = Book::default();
    let mut cx = Cx {
        core: &mut env,
        book: &mut book,
    };
    let now = Instant::ZERO;
    // The guest's window is shut: nothing goes, and the persist timer is armed.
    let shut = TcpRepr {
        window_len: 0,
        ..ack(first)
    };
    cx.segment(now, &mut conn, &shut);
    cx.output(now, &mut conn);
    assert!(env_take(&mut cx).is_empty());
    let deadline = conn.deadline.expect("persist timer");
    cx.on_timers(deadline, &mut conn, None);
    // One byte past the window.
    assert_eq!(env_take(&mut cx), vec![(first, 1, 0)]);
    assert_eq!(cx.core.stats.tcp_window_probes, 1);
}

/// The recorder's segments, through the context that borrows it.
fn env_take(cx: &mut Cx<'_, Recorder>) -> Vec<(u32, usize, u8)> {
    cx.core.take()
}
