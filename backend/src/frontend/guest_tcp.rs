//! A scripted guest TCP endpoint on one queue pair of a [`super::TestFrontend`]: enough of a guest kernel's TCP to move bulk
//! data through the gateway in either direction, for the no-VM gateway benchmark and the device
//! tests. It connects (MSS, window scaling and timestamps offered, as Linux does), then either
//! sends in-order segments within the gateway's window and a fixed window of its own, or receives
//! and acknowledges cumulatively once per batch of frames (as a guest's NAPI poll with GRO would).
//! No loss recovery: the link between it and virtgate loses nothing, and a gap is an error.
//!
//! With offloads it sends 64 KiB TSO frames with a partial checksum, as Linux's virtio-net driver
//! does, and takes TSO frames; without, one MSS per frame, checksummed.

use std::io;
use std::time::{Duration, Instant};

use netstack::wire::tcp::{flags, HEADER_LEN as TCP_HEADER_LEN};
use netstack::wire::{
    ethernet, ipv4, EtherType, EthernetAddress, EthernetFrame, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, SeqNumber, TcpPacket, TcpRepr,
};

use netstack::offload::{FrameMeta, Gso, GsoKind, PartialChecksum, TCP_CHECKSUM_OFFSET};
use virtio_bindings::virtio_net::VIRTIO_NET_F_HOST_TSO4;

use super::QueuePair;
use crate::virtio_net;

/// The guest's MAC and address (virtgate's defaults: the first DHCP address).
pub const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
pub const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
/// The gateway, which is the host's loopback for TCP.
pub const GATEWAY_IP: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Our window scale and the window we offer (4 MiB, like a guest's autotuned receive buffer).
const WINDOW_SHIFT: u8 = 7;
const WINDOW: usize = 4 << 20;
/// The most bytes we have in flight when sending (the gateway's window bounds it too).
const SEND_WINDOW: usize = 2 << 20;
/// The largest TSO frame's payload: whole segments within 64 KiB of IP packet.
const TSO_MAX: usize = 65535 - ipv4::HEADER_LEN - TCP_HEADER_LEN - 12;
/// Timestamp option bytes on every segment after the handshake (NOP NOP TS).
const TS_LEN: usize = 12;
/// How long any one wait may take before the transfer is declared stuck.
const STALL: Duration = Duration::from_secs(10);

/// One connection from the guest to `GATEWAY_IP:port`.
pub struct GuestTcp {
    port: u16,
    local_port: u16,
    gateway_mac: EthernetAddress,
    /// Offloads negotiated: TSO frames out, partial checksums.
    offloads: bool,
    /// Payload per segment (the MSS less the timestamp option).
    seg: usize,
    snd_nxt: SeqNumber,
    snd_una: SeqNumber,
    /// The gateway's window, scaled.
    peer_wnd: usize,
    peer_shift: u8,
    rcv_nxt: SeqNumber,
    ts_recent: u32,
    epoch: Instant,
    ip_ident: u16,
    /// Scratch buffers, reused for every frame.
    out: Vec<u8>,
    inp: Vec<u8>,
}

fn stalled(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("guest TCP: {what}"))
}

impl GuestTcp {
    /// Connects to the gateway's `port` (the host's 127.0.0.1:`port`) from `local_port`. The
    /// frontend must have RX buffers posted; `mtu` is the link's (the MSS follows from it).
    pub fn connect(
        fe: &mut QueuePair,
        port: u16,
        local_port: u16,
        mtu: u16,
    ) -> io::Result<GuestTcp> {
        let offloads = fe.acked_features & (1 << VIRTIO_NET_F_HOST_TSO4) != 0;
        let mss = usize::from(mtu) - ipv4::HEADER_LEN - TCP_HEADER_LEN;
        let mut c = GuestTcp {
            port,
            local_port,
            gateway_mac: netstack::Config::default().gateway_mac,
            offloads,
            seg: mss - TS_LEN,
            snd_nxt: SeqNumber(1_000_000),
            snd_una: SeqNumber(1_000_000),
            peer_wnd: 0,
            peer_shift: 0,
            rcv_nxt: SeqNumber(0),
            ts_recent: 0,
            epoch: Instant::now(),
            ip_ident: 0,
            out: Vec::with_capacity(70_000),
            inp: Vec::with_capacity(70_000),
        };
        let syn = TcpRepr {
            src_port: local_port,
            dst_port: port,
            seq_number: c.snd_nxt,
            ack_number: None,
            flags: flags::SYN,
            window_len: u16::MAX,
            urgent_at: 0,
            max_seg_size: Some(mss as u16),
            window_scale: Some(WINDOW_SHIFT),
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: Some((c.ts_val(), 0)),
            payload: &[],
        };
        c.send_segment(fe, &syn, 0);
        fe.flush_tx();
        c.snd_nxt = c.snd_nxt + 1;
        let deadline = Instant::now() + STALL;
        loop {
            if Instant::now() >= deadline {
                return Err(stalled("no SYN-ACK"));
            }
            let Some(seg) = c.recv_segment(fe, Duration::from_millis(100))? else {
                continue;
            };
            if seg.flags & flags::RST != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "guest TCP: reset",
                ));
            }
            if seg.flags & flags::SYN != 0 && seg.ack == Some(c.snd_nxt) {
                c.rcv_nxt = seg.seq + 1;
                c.peer_shift = seg.wscale.unwrap_or(0);
                c.peer_wnd = usize::from(seg.window);
                c.snd_una = c.snd_nxt;
                if let Some(ts) = seg.tsval {
                    c.ts_recent = ts;
                }
                break;
            }
        }
        c.send_ack(fe);
        fe.flush_tx();
        fe.post_rx_buffers(super::QUEUE_SIZE);
        Ok(c)
    }

    fn ts_val(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Sends `total` bytes (less than 2 GiB: sequence space) to the host and waits until the
    /// gateway acknowledged them all.
    pub fn send_bulk(&mut self, fe: &mut QueuePair, total: usize) -> io::Result<()> {
        let end = self.snd_nxt + total;
        let payload = vec![0x5au8; TSO_MAX];
        let per_frame = if self.offloads {
            TSO_MAX / self.seg * self.seg
        } else {
            self.seg
        };
        let mut last_progress = Instant::now();
        while self.snd_una != end {
            // Fill the window, then publish the batch with one kick.
            loop {
                let in_flight = self.snd_nxt - self.snd_una;
                let left = end - self.snd_nxt;
                let room = SEND_WINDOW.min(self.peer_wnd).saturating_sub(in_flight);
                let n = per_frame.min(left).min(room);
                // Like Linux's TSO deferral: wait for room for a whole frame unless it is the last.
                if n == 0 || (n < per_frame && n < left) {
                    break;
                }
                if !self.send_data(fe, &payload[..n]) {
                    break;
                }
            }
            fe.flush_tx();
            let mut progressed = false;
            while let Some(seg) = self.recv_segment(fe, Duration::ZERO)? {
                progressed |= self.take_ack(&seg);
            }
            fe.post_rx_buffers(super::QUEUE_SIZE);
            if progressed {
                last_progress = Instant::now();
            } else if last_progress.elapsed() > STALL {
                return Err(stalled("sending: no ACK"));
            } else {
                // Nothing came: wait for the next frame (an ACK or a window update).
                if let Some(seg) = self.recv_segment(fe, Duration::from_millis(50))? {
                    if self.take_ack(&seg) {
                        last_progress = Instant::now();
                    }
                }
            }
        }
        Ok(())
    }

    /// Receives `total` bytes the host sends, acknowledging once per batch of frames.
    pub fn receive_bulk(&mut self, fe: &mut QueuePair, total: usize) -> io::Result<()> {
        let mut left = total;
        let mut last_progress = Instant::now();
        while left > 0 {
            let mut got = false;
            let mut wait = Duration::from_millis(50);
            while let Some(seg) = self.recv_segment(fe, wait)? {
                wait = Duration::ZERO;
                if seg.len == 0 {
                    continue;
                }
                if seg.seq != self.rcv_nxt {
                    return Err(io::Error::other(format!(
                        "guest TCP: segment at {} while expecting {}",
                        seg.seq, self.rcv_nxt
                    )));
                }
                self.rcv_nxt = self.rcv_nxt + seg.len;
                left = left.saturating_sub(seg.len);
                if let Some(ts) = seg.tsval {
                    self.ts_recent = ts;
                }
                got = true;
                if left == 0 {
                    break;
                }
            }
            fe.post_rx_buffers(super::QUEUE_SIZE);
            if got {
                self.send_ack(fe);
                fe.flush_tx();
                last_progress = Instant::now();
            } else if last_progress.elapsed() > STALL {
                return Err(stalled("receiving: no data"));
            }
        }
        Ok(())
    }

    /// A segment after the handshake: at `snd_nxt`, acknowledging `rcv_nxt`, our fixed window,
    /// timestamps.
    fn segment<'p>(&self, flags: u8, payload: &'p [u8]) -> TcpRepr<'p> {
        TcpRepr {
            src_port: self.local_port,
            dst_port: self.port,
            seq_number: self.snd_nxt,
            ack_number: Some(self.rcv_nxt),
            flags,
            window_len: (WINDOW >> WINDOW_SHIFT) as u16,
            urgent_at: 0,
            max_seg_size: None,
            window_scale: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: Some((self.ts_val(), self.ts_recent)),
            payload,
        }
    }

    /// Sends one data frame (TSO when offloads are on); false when the TX ring is full.
    fn send_data(&mut self, fe: &mut QueuePair, payload: &[u8]) -> bool {
        let repr = self.segment(flags::PSH, payload);
        if !self.send_segment(fe, &repr, payload.len()) {
            return false;
        }
        self.snd_nxt = self.snd_nxt + payload.len();
        true
    }

    fn send_ack(&mut self, fe: &mut QueuePair) {
        let repr = self.segment(0, &[]);
        // An ACK that finds the ring full waits for room: the data it acknowledges is in.
        if !self.send_segment(fe, &repr, 0) {
            fe.flush_tx();
            if fe.wait_tx_room(STALL) {
                self.send_segment(fe, &repr, 0);
            }
        }
    }

    /// Builds a frame for `repr` in the scratch buffer and queues it; with offloads, a
    /// partial checksum and (for more than one segment of payload) a TSO request.
    fn send_segment(&mut self, fe: &mut QueuePair, repr: &TcpRepr, payload_len: usize) -> bool {
        let tcp_len = repr.buffer_len();
        let len = ethernet::HEADER_LEN + ipv4::HEADER_LEN + tcp_len;
        self.out.clear();
        self.out.resize(len, 0);
        EthernetRepr {
            src: GUEST_MAC,
            dst: self.gateway_mac,
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut self.out);
        self.ip_ident = self.ip_ident.wrapping_add(1);
        Ipv4Repr {
            src: GUEST_IP,
            dst: GATEWAY_IP,
            protocol: IpProtocol::Tcp,
            payload_len: tcp_len,
            ttl: 64,
        }
        .emit(&mut self.out[ethernet::HEADER_LEN..], self.ip_ident);
        let tcp = &mut self.out[ethernet::HEADER_LEN + ipv4::HEADER_LEN..];
        let hlen = repr.header_len();
        tcp[hlen..].copy_from_slice(repr.payload);
        let (src, dst) = (IpAddress::V4(GUEST_IP), IpAddress::V4(GATEWAY_IP));
        repr.emit_around_payload(tcp, src, dst, self.offloads);
        let meta = if self.offloads {
            FrameMeta {
                checksum: Some(PartialChecksum {
                    start: (ethernet::HEADER_LEN + ipv4::HEADER_LEN) as u16,
                    offset: TCP_CHECKSUM_OFFSET,
                }),
                gso: (payload_len > self.seg).then_some(Gso {
                    kind: GsoKind::Tcpv4,
                    segment_size: self.seg as u16,
                    header_len: (len - payload_len) as u16,
                }),
            }
        } else {
            FrameMeta::NONE
        };
        // A TX header has the RX header's layout (VIRTIO 1.2 §5.1.6); num_buffers stays 0.
        let mut header = [0u8; virtio_net::HEADER_LEN_V1];
        virtio_net::write_rx_header(&mut header, 0, meta);
        fe.queue_tx(&header, &self.out)
    }

    /// The next TCP segment of this connection from the RX ring, if one comes within `wait`.
    fn recv_segment(&mut self, fe: &mut QueuePair, wait: Duration) -> io::Result<Option<Seen>> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if fe.recv_into(&mut self.inp, left).is_none() {
                return Ok(None);
            }
            if let Some(seg) = self.parse(&self.inp) {
                return Ok(Some(seg));
            }
            // Something else (ARP, the gateway's announcements): not ours.
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn parse(&self, frame: &[u8]) -> Option<Seen> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if EthernetRepr::parse(&eth).ethertype != EtherType::Ipv4 {
            return None;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
        let ip_repr = Ipv4Repr::parse(&ip).ok()?;
        if ip_repr.protocol != IpProtocol::Tcp || ip_repr.dst != GUEST_IP {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        // With offloads the checksum may be partial: the gateway's own frames are trusted here.
        let repr = TcpRepr::parse_unverified(&tcp).ok()?;
        if repr.dst_port != self.local_port || repr.src_port != self.port {
            return None;
        }
        Some(Seen {
            seq: repr.seq_number,
            ack: repr.ack_number,
            flags: repr.flags,
            window: repr.window_len,
            wscale: repr.window_scale,
            tsval: repr.timestamp.map(|t| t.0),
            len: repr.payload.len(),
        })
    }

    /// Takes an ACK's news; true if it acknowledged new data.
    fn take_ack(&mut self, seg: &Seen) -> bool {
        if seg.flags & flags::RST != 0 {
            return false;
        }
        self.peer_wnd = usize::from(seg.window) << self.peer_shift;
        if let Some(ts) = seg.tsval {
            self.ts_recent = ts;
        }
        match seg.ack {
            Some(a) if a.is_after(self.snd_una) && !a.is_after(self.snd_nxt) => {
                self.snd_una = a;
                true
            }
            _ => false,
        }
    }
}

/// What the endpoint reads of a segment from the gateway.
struct Seen {
    seq: SeqNumber,
    ack: Option<SeqNumber>,
    flags: u8,
    window: u16,
    wscale: Option<u8>,
    tsval: Option<u32>,
    len: usize,
}
