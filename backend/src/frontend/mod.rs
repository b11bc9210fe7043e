//! An in-process vhost-user frontend: what QEMU does, small enough to script. It owns memfd-backed
//! "guest" memory, drives split virtqueues as a guest driver would, and talks to a virtgate socket
//! through the vhost crate's frontend. Tests and benchmarks use it to exercise the device without
//! QEMU: normal traffic, hostile descriptor chains, QEMU's message order, and reconnects.
//!
//! Memory layout (guest-physical): the RX rings at 0, the TX rings at 64 KiB, RX buffers from 1 MiB,
//! TX buffers from 4 MiB; one buffer per descriptor slot.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub mod frames;
pub mod guest_tcp;

use crate::relay::{self, Message};
use crate::virtio_net;

/// Descriptor flags (VIRTIO 1.2 §2.7.5).
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;

/// Ring size used by the frontend.
pub const QUEUE_SIZE: u16 = 256;
/// Size of each RX buffer (a page, as Linux posts with mergeable buffers).
pub const RX_BUF_LEN: u32 = 4096;
/// Size of each TX buffer: a 64 KiB frame plus its header.
pub const TX_BUF_LEN: u32 = 65536 + 64;
const MEM_SIZE: usize = 4 << 20 | (QUEUE_SIZE as usize * TX_BUF_LEN as usize);
const RX_RING_BASE: u64 = 0;
const TX_RING_BASE: u64 = 64 << 10;
const RX_BUF_BASE: u64 = 1 << 20;
const TX_BUF_BASE: u64 = 4 << 20;

/// A raw descriptor as the driver writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// One used-ring entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub id: u16,
    pub len: u32,
}

/// How the frontend opens the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableOrder {
    /// The spec's order: SET_VRING_ENABLE after the rings are set up.
    AfterSetup,
    /// QEMU's order: SET_VRING_ENABLE before SET_FEATURES, never repeated. `need_reply` as QEMU 10.
    BeforeFeatures { need_reply: bool },
}

/// The driver side of one split virtqueue.
struct DriverQueue {
    index: usize,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    kick: EventFd,
    call: EventFd,
}

impl DriverQueue {
    fn new(index: usize, base: u64) -> io::Result<Self> {
        let size = u64::from(QUEUE_SIZE);
        let desc = base;
        let avail = desc + 16 * size;
        // The used ring is 4-byte aligned.
        let used = (avail + 6 + 2 * size + 3) & !3;
        Ok(DriverQueue {
            index,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
        })
    }
}

/// The frontend and its "guest": the session, and the driver side of each queue pair. It
/// dereferences to the first pair, which is all most tests use.
pub struct TestFrontend {
    fe: Frontend,
    _memfd: File,
    pairs: Vec<QueuePair>,
    pub acked_features: u64,
}

impl std::ops::Deref for TestFrontend {
    type Target = QueuePair;

    fn deref(&self) -> &QueuePair {
        &self.pairs[0]
    }
}

impl std::ops::DerefMut for TestFrontend {
    fn deref_mut(&mut self) -> &mut QueuePair {
        &mut self.pairs[0]
    }
}

/// The driver side of one RX/TX queue pair: its rings and buffers live in a region of guest
/// memory of its own (`MEM_SIZE` bytes from `base`), so that pairs can be driven from threads of
/// their own ([`TestFrontend::pairs_mut`]).
pub struct QueuePair {
    mem: GuestMemoryMmap<()>,
    /// Where this pair's region starts in guest memory.
    base: u64,
    rx: DriverQueue,
    tx: DriverQueue,
    /// Header length the acked features imply.
    pub header_len: usize,
    pub acked_features: u64,
    /// RX descriptor slots currently posted.
    rx_posted: u16,
    next_tx_slot: u16,
    /// TX chains published and not yet returned on the used ring.
    tx_outstanding: u16,
    /// TX heads written by [`QueuePair::queue_tx`], published by [`QueuePair::flush_tx`].
    tx_queued: Vec<u16>,
    /// RX used entries read but not yet consumed as frames.
    rx_pending: Vec<Used>,
    /// Times a frame's first buffer was seen on the used ring before all of its `num_buffers`
    /// were: what makes Linux's virtio-net count rx_length_errors and drop the frame.
    pub rx_partial_frames_seen: u64,
    /// Kick only when the device's avail event asks for it (EVENT_IDX, as Linux's driver does),
    /// instead of on every publish.
    pub kick_as_needed: bool,
}

fn memfd(size: usize) -> io::Result<File> {
    let name = c"virtgate-frontend";
    // SAFETY: `name` is a valid NUL-terminated string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size as u64)?;
    Ok(file)
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl TestFrontend {
    /// Connects and sets the device up with `features` (masked by what the device offers).
    pub fn connect(path: &Path, features: u64, order: EnableOrder) -> io::Result<Self> {
        Self::connect_pairs(path, features, order, 1)
    }

    /// [`TestFrontend::connect`] with `pairs` queue pairs set up and enabled (a multiqueue
    /// guest using them all; `features` should then include VIRTIO_NET_F_MQ).
    pub fn connect_pairs(
        path: &Path,
        features: u64,
        order: EnableOrder,
        pairs: usize,
    ) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        if let EnableOrder::BeforeFeatures { need_reply } = order {
            for ring in 0..2 * pairs as u32 {
                let mut state = [0u8; 8];
                state[0..4].copy_from_slice(&ring.to_le_bytes());
                state[4..8].copy_from_slice(&1u32.to_le_bytes());
                let flags = 0x1 | if need_reply { 0x8 } else { 0 };
                relay::write_message(
                    &stream,
                    &Message::new(relay::request::SET_VRING_ENABLE, flags, &state),
                )?;
                if need_reply {
                    let ack = relay::read_message(&stream)?
                        .ok_or_else(|| err("no reply to SET_VRING_ENABLE"))?;
                    if ack.request != relay::request::SET_VRING_ENABLE {
                        return Err(err("wrong reply to SET_VRING_ENABLE"));
                    }
                }
            }
        }
        let mut fe = Frontend::from_stream(stream, 2 * pairs as u64);
        let mem_size = MEM_SIZE * pairs;
        let memfd = memfd(mem_size)?;
        let mem = GuestMemoryMmap::<()>::from_ranges_with_files([(
            GuestAddress(0),
            mem_size,
            Some(FileOffset::new(memfd.try_clone()?, 0)),
        )])
        .map_err(err)?;

        fe.set_owner().map_err(err)?;
        let offered = fe.get_features().map_err(err)?;
        let acked = offered & features;
        fe.set_features(acked).map_err(err)?;
        if acked & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let pf = fe.get_protocol_features().map_err(err)?;
            fe.set_protocol_features(
                pf & (VhostUserProtocolFeatures::MQ
                    | VhostUserProtocolFeatures::REPLY_ACK
                    | VhostUserProtocolFeatures::MTU),
            )
            .map_err(err)?;
        }
        let host_base = mem.get_host_address(GuestAddress(0)).map_err(err)? as u64;
        fe.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: mem_size as u64,
            userspace_addr: host_base,
            mmap_offset: 0,
            mmap_handle: memfd.as_raw_fd(),
        }])
        .map_err(err)?;

        let header_len = virtio_net::Negotiated::from_features(acked).header_len;
        let mut queue_pairs = Vec::with_capacity(pairs);
        for k in 0..pairs {
            let base = (k * MEM_SIZE) as u64;
            queue_pairs.push(QueuePair {
                mem: mem.clone(),
                base,
                rx: DriverQueue::new(2 * k, base + RX_RING_BASE)?,
                tx: DriverQueue::new(2 * k + 1, base + TX_RING_BASE)?,
                header_len,
                acked_features: acked,
                rx_posted: 0,
                next_tx_slot: 0,
                tx_outstanding: 0,
                tx_queued: Vec::new(),
                rx_pending: Vec::new(),
                rx_partial_frames_seen: 0,
                kick_as_needed: false,
            });
        }
        for q in queue_pairs.iter().flat_map(|p| [&p.rx, &p.tx]) {
            fe.set_vring_num(q.index, QUEUE_SIZE).map_err(err)?;
            fe.set_vring_addr(
                q.index,
                &VringConfigData {
                    queue_max_size: QUEUE_SIZE,
                    queue_size: QUEUE_SIZE,
                    flags: 0,
                    desc_table_addr: host_base + q.desc,
                    used_ring_addr: host_base + q.used,
                    avail_ring_addr: host_base + q.avail,
                    log_addr: None,
                },
            )
            .map_err(err)?;
            fe.set_vring_base(q.index, 0).map_err(err)?;
            fe.set_vring_call(q.index, &q.call).map_err(err)?;
            fe.set_vring_kick(q.index, &q.kick).map_err(err)?;
        }
        if order == EnableOrder::AfterSetup
            && acked & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
        {
            for ring in 0..2 * pairs {
                fe.set_vring_enable(ring, true).map_err(err)?;
            }
        }
        Ok(TestFrontend {
            fe,
            _memfd: memfd,
            pairs: queue_pairs,
            acked_features: acked,
        })
    }

    /// Features QEMU acks for virtgate's offer with `--offloads none` (measured, see
    /// docs/qemu-interop.md): frames both ways are complete, which most device tests want.
    pub fn qemu_features() -> u64 {
        virtio_net::offered_features(virtio_net::Offloads::NONE, 1)
    }

    /// Features QEMU acks for virtgate's default offer: every offload.
    pub fn qemu_features_with_offloads() -> u64 {
        virtio_net::offered_features(virtio_net::Offloads::ALL, 1)
    }

    /// VHOST_USER_GET_QUEUE_NUM: how many queues the device says it serves.
    pub fn queue_num(&mut self) -> io::Result<u64> {
        use vhost::vhost_user::VhostUserFrontend;
        self.fe.get_queue_num().map_err(err)
    }

    /// Stops the rings (as QEMU does at shutdown) and hangs up.
    pub fn shutdown(self) -> io::Result<()> {
        for ring in 0..2 * self.pairs.len() {
            self.fe.get_vring_base(ring).map_err(err)?;
        }
        Ok(())
    }

    /// Every queue pair set up ([`TestFrontend::connect_pairs`]), to drive from threads.
    pub fn pairs_mut(&mut self) -> &mut [QueuePair] {
        &mut self.pairs
    }
}

impl QueuePair {
    pub fn memory(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    fn write_desc(&self, q: &DriverQueue, slot: u16, d: RawDesc) {
        self.write_indirect(q.desc, slot, d);
    }

    /// Writes a descriptor at `table` + 16 * `i` (a ring's table or an indirect table).
    pub fn write_indirect(&self, table: u64, i: u16, d: RawDesc) {
        let at = table + 16 * u64::from(i);
        self.mem
            .write_obj(d.addr.to_le(), GuestAddress(at))
            .unwrap();
        self.mem
            .write_obj(d.len.to_le(), GuestAddress(at + 8))
            .unwrap();
        self.mem
            .write_obj(d.flags.to_le(), GuestAddress(at + 12))
            .unwrap();
        self.mem
            .write_obj(d.next.to_le(), GuestAddress(at + 14))
            .unwrap();
    }

    /// Publishes `head` in the avail ring; also asks for an interrupt on the next used entry
    /// (`used_event`, EVENT_IDX) and kicks.
    fn publish(&mut self, tx: bool, heads: &[u16]) {
        let q = if tx { &mut self.tx } else { &mut self.rx };
        let old = q.avail_idx;
        for &head in heads {
            let slot = u64::from(q.avail_idx % QUEUE_SIZE);
            self.mem
                .write_obj(head.to_le(), GuestAddress(q.avail + 4 + 2 * slot))
                .unwrap();
            q.avail_idx = q.avail_idx.wrapping_add(1);
        }
        let used_event = GuestAddress(q.avail + 4 + 2 * u64::from(QUEUE_SIZE));
        self.mem.write_obj(q.last_used.to_le(), used_event).unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem
            .write_obj(q.avail_idx.to_le(), GuestAddress(q.avail + 2))
            .unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if self.kick_as_needed {
            // The avail event follows the used ring; vring_need_event (virtio 1.2 §2.7.10).
            let at = GuestAddress(q.used + 4 + 8 * u64::from(QUEUE_SIZE));
            let event: u16 = u16::from_le(self.mem.read_obj(at).unwrap());
            let new = q.avail_idx;
            if new.wrapping_sub(event).wrapping_sub(1) >= new.wrapping_sub(old) {
                return;
            }
        }
        q.kick.write(1).unwrap();
    }

    /// Posts `n` fresh RX buffers (one descriptor each) without exceeding the ring.
    pub fn post_rx_buffers(&mut self, n: u16) {
        let mut heads = Vec::new();
        for _ in 0..n {
            if self.rx_posted >= QUEUE_SIZE {
                break;
            }
            let slot = self.rx.avail_idx.wrapping_add(heads.len() as u16) % QUEUE_SIZE;
            self.write_desc(
                &self.rx,
                slot,
                RawDesc {
                    addr: self.base + RX_BUF_BASE + u64::from(slot) * u64::from(RX_BUF_LEN),
                    len: RX_BUF_LEN,
                    flags: VIRTQ_DESC_F_WRITE,
                    next: 0,
                },
            );
            heads.push(slot);
            self.rx_posted += 1;
        }
        self.publish(false, &heads);
    }

    /// Posts a hand-made RX chain at descriptor `slot` (for hostile-descriptor tests).
    pub fn post_raw_rx_chain(&mut self, slot: u16, descs: &[(u16, RawDesc)]) {
        for &(i, d) in descs {
            self.write_desc(&self.rx, i, d);
        }
        self.rx_posted += 1;
        self.publish(false, &[slot]);
    }

    /// Sends one frame (a zero virtio-net header is prepended).
    pub fn send(&mut self, frame: &[u8]) {
        self.send_with_header(&[], frame);
    }

    /// Sends one frame behind a virtio-net header that starts with `header` (zero-filled to the
    /// negotiated length).
    pub fn send_with_header(&mut self, header: &[u8], frame: &[u8]) {
        let slot = self.write_tx(header, frame);
        self.tx_outstanding = self.tx_outstanding.wrapping_add(1);
        self.publish(true, &[slot]);
    }

    /// Writes a frame and its header into the next TX slot's buffer and descriptor.
    fn write_tx(&mut self, header: &[u8], frame: &[u8]) -> u16 {
        let slot = self.next_tx_slot % QUEUE_SIZE;
        self.next_tx_slot = self.next_tx_slot.wrapping_add(1);
        let addr = self.base + TX_BUF_BASE + u64::from(slot) * u64::from(TX_BUF_LEN);
        let mut hdr = [0u8; virtio_net::HEADER_LEN_V1];
        hdr[..header.len()].copy_from_slice(header);
        self.mem
            .write_slice(&hdr[..self.header_len], GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(frame, GuestAddress(addr + self.header_len as u64))
            .unwrap();
        self.write_desc(
            &self.tx,
            slot,
            RawDesc {
                addr,
                len: (self.header_len + frame.len()) as u32,
                flags: 0,
                next: 0,
            },
        );
        slot
    }

    /// Writes a frame into a free TX slot without publishing it (a guest driver filling its ring
    /// before one kick); false when every slot is in flight. [`QueuePair::flush_tx`] publishes.
    /// Returned chains are reclaimed on the way.
    pub fn queue_tx(&mut self, header: &[u8], frame: &[u8]) -> bool {
        if self.tx_full() {
            self.used_entries(true);
            if self.tx_full() {
                return false;
            }
        }
        let slot = self.write_tx(header, frame);
        self.tx_queued.push(slot);
        true
    }

    /// Whether every TX slot holds a frame in flight or queued.
    fn tx_full(&self) -> bool {
        usize::from(self.tx_outstanding) + self.tx_queued.len() >= usize::from(QUEUE_SIZE)
    }

    /// Publishes the frames [`QueuePair::queue_tx`] wrote, with one kick.
    pub fn flush_tx(&mut self) {
        if self.tx_queued.is_empty() {
            return;
        }
        let heads = std::mem::take(&mut self.tx_queued);
        self.tx_outstanding = self.tx_outstanding.wrapping_add(heads.len() as u16);
        self.publish(true, &heads);
        self.tx_queued = heads;
        self.tx_queued.clear();
    }

    /// Waits up to `timeout` for the TX ring to have a free slot.
    pub fn wait_tx_room(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.used_entries(true);
            if !self.tx_full() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            wait_eventfd(
                &self.tx.call,
                (deadline - now).min(Duration::from_millis(10)),
            );
        }
    }

    /// Posts a hand-made TX chain whose head is `slot`.
    pub fn send_raw_chain(&mut self, slot: u16, descs: &[(u16, RawDesc)]) {
        for &(i, d) in descs {
            self.write_desc(&self.tx, i, d);
        }
        self.publish(true, &[slot]);
    }

    /// The guest-physical address of TX buffer `slot`, and writes `bytes` there.
    pub fn tx_buffer(&self, slot: u16, bytes: &[u8]) -> u64 {
        let addr = self.base + TX_BUF_BASE + u64::from(slot) * u64::from(TX_BUF_LEN);
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        addr
    }

    fn used_entries(&mut self, tx: bool) -> Vec<Used> {
        let q = if tx { &mut self.tx } else { &mut self.rx };
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let idx: u16 = self.mem.read_obj(GuestAddress(q.used + 2)).unwrap();
        let mut out = Vec::new();
        while q.last_used != u16::from_le(idx) {
            let slot = u64::from(q.last_used % QUEUE_SIZE);
            let at = q.used + 4 + 8 * slot;
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            out.push(Used {
                id: u32::from_le(id) as u16,
                len: u32::from_le(len),
            });
            q.last_used = q.last_used.wrapping_add(1);
        }
        if tx {
            self.tx_outstanding = self.tx_outstanding.saturating_sub(out.len() as u16);
        }
        // Ask to be interrupted for the next entry.
        let used_event = GuestAddress(q.avail + 4 + 2 * u64::from(QUEUE_SIZE));
        self.mem.write_obj(q.last_used.to_le(), used_event).unwrap();
        out
    }

    /// Waits until the TX ring returns at least `n` chains; returns them.
    pub fn wait_tx_used(&mut self, n: usize, timeout: Duration) -> Vec<Used> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(self.used_entries(true));
            if got.len() < n {
                wait_eventfd(&self.tx.call, Duration::from_millis(10));
            }
        }
        got
    }

    /// Waits until the RX ring returns at least `n` chains; returns them (for hostile tests, which
    /// read the buffers themselves with [`QueuePair::rx_buffer`]).
    pub fn wait_rx_used(&mut self, n: usize, timeout: Duration) -> Vec<Used> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(self.used_entries(false));
            if got.len() < n {
                wait_eventfd(&self.rx.call, Duration::from_millis(10));
            }
        }
        got
    }

    /// The first `len` bytes of the RX buffer of descriptor slot `id` (as posted by
    /// [`QueuePair::post_rx_buffers`]).
    pub fn rx_buffer(&self, id: u16, len: u32) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        let addr = self.base + RX_BUF_BASE + u64::from(id) * u64::from(RX_BUF_LEN);
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    /// Whether the device raised the RX interrupt since the last call.
    pub fn rx_interrupted(&self) -> bool {
        self.rx.call.read().is_ok()
    }

    /// Receives one frame (header stripped), reassembling mergeable buffers; `None` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        self.recv_with_header(timeout).map(|(_, frame)| frame)
    }

    /// [`QueuePair::recv`] with the frame's virtio-net header.
    pub fn recv_with_header(&mut self, timeout: Duration) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut frame = Vec::new();
        let hdr = self.recv_into(&mut frame, timeout)?;
        Some((hdr[..self.header_len].to_vec(), frame))
    }

    /// Receives one frame into `frame` (cleared first), reassembling mergeable buffers; returns
    /// its virtio-net header (the negotiated length of it is meaningful), `None` on timeout. The
    /// buffers it used are not posted again: [`QueuePair::post_rx_buffers`] does.
    pub fn recv_into(
        &mut self,
        frame: &mut Vec<u8>,
        timeout: Duration,
    ) -> Option<[u8; virtio_net::HEADER_LEN_V1]> {
        let deadline = Instant::now() + timeout;
        frame.clear();
        loop {
            let more = self.used_entries(false);
            self.rx_pending.extend(more);
            if let Some(first) = self.rx_pending.first().copied() {
                let base = self.base + RX_BUF_BASE + u64::from(first.id) * u64::from(RX_BUF_LEN);
                let mut hdr = [0u8; virtio_net::HEADER_LEN_V1];
                self.mem
                    .read_slice(&mut hdr[..self.header_len], GuestAddress(base))
                    .unwrap();
                let num_buffers = if self.header_len == virtio_net::HEADER_LEN_V1
                    && self.acked_features & (1 << 15) != 0
                {
                    usize::from(u16::from_le_bytes([hdr[10], hdr[11]]).max(1))
                } else {
                    1
                };
                if self.rx_pending.len() < num_buffers {
                    self.rx_partial_frames_seen += 1;
                } else {
                    for (i, u) in self.rx_pending.drain(..num_buffers).enumerate() {
                        let addr =
                            self.base + RX_BUF_BASE + u64::from(u.id) * u64::from(RX_BUF_LEN);
                        let skip = if i == 0 { self.header_len as u32 } else { 0 }.min(u.len);
                        let at = frame.len();
                        frame.resize(at + (u.len - skip) as usize, 0);
                        self.mem
                            .read_slice(&mut frame[at..], GuestAddress(addr + u64::from(skip)))
                            .unwrap();
                        self.rx_posted -= 1;
                    }
                    return Some(hdr);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            wait_eventfd(
                &self.rx.call,
                (deadline - now).min(Duration::from_millis(10)),
            );
        }
    }
}

fn wait_eventfd(fd: &EventFd, timeout: Duration) {
    let _ = crate::sys::poll_readable(&[fd.as_raw_fd()], Some(timeout));
    let _ = fd.read();
}
