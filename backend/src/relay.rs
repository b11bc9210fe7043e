//! The vhost-user pre-filter: QEMU talks to this relay, the relay talks to the vhost-user daemon.
//!
//! Why it exists (see docs/qemu-interop.md): QEMU's virtio-net sends VHOST_USER_SET_VRING_ENABLE
//! while the guest driver probes, before VHOST_USER_SET_FEATURES. The vhost crate (0.18) rejects
//! that with `InactiveFeature(PROTOCOL_FEATURES)` and drops the connection, and QEMU never repeats
//! the enable. The relay forwards every message unchanged (file descriptors included), except:
//! - an early SET_VRING_ENABLE is acknowledged here (when QEMU asked for a reply) and replayed to the
//!   daemon right after SET_FEATURES, so the ring ends up in the state QEMU asked for;
//! - VHOST_USER_NET_SET_MTU, which the vhost crate does not implement (it would drop the
//!   connection), is acknowledged here and reported to the device;
//! - when QEMU hangs up, the relay stops every ring (GET_VRING_BASE) and releases ownership
//!   (RESET_OWNER) on the daemon side, the way a well-behaved frontend leaves, so that one daemon
//!   serves the next connection cleanly (a new daemon per connection would leak an eventfd each).
//!
//! Writes towards QEMU come from two threads (daemon replies, the relay's own acks) and are
//! serialised a whole message at a time.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use log::{debug, info, warn};
use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::control::Shared;

/// vhost-user request codes (QEMU docs/interop/vhost-user.rst, "Front-end message types").
pub mod request {
    pub const SET_FEATURES: u32 = 2;
    pub const RESET_OWNER: u32 = 4;
    pub const GET_VRING_BASE: u32 = 11;
    pub const NET_SET_MTU: u32 = 20;
    pub const SET_VRING_ENABLE: u32 = 18;
    pub const GET_QUEUE_NUM: u32 = 17;
    pub const RESET_DEVICE: u32 = 34;
}

/// Header flags: protocol version 1 in bits 0-1, REPLY (bit 2), NEED_REPLY (bit 3).
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
const HEADER_LEN: usize = 12;
/// The vhost crate's MAX_MSG_SIZE: larger payloads are a broken peer.
const MAX_PAYLOAD: usize = 0x1000;
/// vhost-user passes at most 8 descriptors per message (memory regions); room for more is harmless.
const MAX_FDS: usize = 16;

/// One vhost-user message with the file descriptors that came with it.
pub struct Message {
    pub request: u32,
    pub flags: u32,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Message {
    pub fn new(request: u32, flags: u32, payload: &[u8]) -> Self {
        Message {
            request,
            flags,
            payload: payload.to_vec(),
            fds: Vec::new(),
        }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&self.request.to_le_bytes());
        h[4..8].copy_from_slice(&self.flags.to_le_bytes());
        h[8..12].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        h
    }

    fn need_reply(&self) -> bool {
        self.flags & FLAG_NEED_REPLY != 0
    }

    fn u64_payload(&self) -> Option<u64> {
        let b: [u8; 8] = self.payload.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// The (index, num) of a VhostUserVringState payload.
    fn vring_state(&self) -> Option<(u32, u32)> {
        let b = self.payload.get(..8)?;
        Some((
            u32::from_le_bytes(b[0..4].try_into().ok()?),
            u32::from_le_bytes(b[4..8].try_into().ok()?),
        ))
    }

    /// A REPLY_ACK answer (u64 0 = success) to this request.
    fn ack(&self) -> Message {
        Message::new(self.request, FLAG_VERSION | FLAG_REPLY, &0u64.to_le_bytes())
    }
}

/// Reads one message; `Ok(None)` on a clean end of stream before a header.
pub fn read_message(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut header = [0u8; HEADER_LEN];
    let mut raw_fds = [-1 as RawFd; MAX_FDS];
    // SAFETY: the iovec points at `header`, which lives across the call and is writable; the fds
    // written into `raw_fds` are owned by us from here on and wrapped in OwnedFd right below.
    let (n, nfds) = unsafe {
        let mut iov = [libc::iovec {
            iov_base: header.as_mut_ptr().cast(),
            iov_len: HEADER_LEN,
        }];
        sock.recv_with_fds(&mut iov, &mut raw_fds)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?
    };
    // SAFETY: recv_with_fds returned `nfds` fresh descriptors that nothing else owns.
    let fds: Vec<OwnedFd> = raw_fds[..nfds]
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    if n < HEADER_LEN {
        (&*sock).read_exact(&mut header[n..])?;
    }
    let request = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let flags = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let size = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes")) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message {request} with a {size}-byte payload"),
        ));
    }
    let mut payload = vec![0u8; size];
    (&*sock).read_exact(&mut payload)?;
    Ok(Some(Message {
        request,
        flags,
        payload,
        fds,
    }))
}

/// Writes one message, its descriptors riding on the first bytes as vhost expects.
pub fn write_message(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    let header = msg.header();
    let raw: Vec<RawFd> = msg
        .fds
        .iter()
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .collect();
    let total = HEADER_LEN + msg.payload.len();
    let sent = sock
        .send_with_fds(&[&header[..], &msg.payload[..]], &raw)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    if sent < total {
        let mut all = Vec::with_capacity(total);
        all.extend_from_slice(&header);
        all.extend_from_slice(&msg.payload);
        (&*sock).write_all(&all[sent..])?;
    }
    Ok(())
}

/// Shuts a running relay down from another thread (signal handling).
#[derive(Debug)]
pub struct RelayShutdown {
    qemu: UnixStream,
    daemon: UnixStream,
}

impl RelayShutdown {
    pub fn shutdown(&self) {
        let _ = self.qemu.shutdown(Shutdown::Both);
        let _ = self.daemon.shutdown(Shutdown::Both);
    }

    /// Hangs up on QEMU only, as if QEMU had gone: the relay then stops the rings and releases
    /// the device on the daemon side as after any hang-up, so the next QEMU is served cleanly.
    pub fn disconnect_qemu(&self) {
        let _ = self.qemu.shutdown(Shutdown::Both);
    }
}

/// A running relay between one QEMU connection and the daemon.
pub struct Relay {
    to_daemon: JoinHandle<io::Result<()>>,
    to_qemu: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying. `num_rings` is the number of virtqueues the daemon serves.
    pub fn spawn(
        qemu: UnixStream,
        daemon: UnixStream,
        shared: Arc<Shared>,
        num_rings: usize,
    ) -> io::Result<(Relay, RelayShutdown)> {
        let handle = RelayShutdown {
            qemu: qemu.try_clone()?,
            daemon: daemon.try_clone()?,
        };
        let qemu_writer = Arc::new(Mutex::new(qemu.try_clone()?));
        let daemon_reader = daemon.try_clone()?;
        let writer = Arc::clone(&qemu_writer);
        let to_qemu = thread::Builder::new()
            .name("vu-relay-out".into())
            .spawn(move || pump_to_qemu(&daemon_reader, &writer, num_rings / 2))?;
        let to_daemon = thread::Builder::new()
            .name("vu-relay-in".into())
            .spawn(move || {
                let mut filter = Filter::new(shared);
                let result = filter.run(&qemu, &daemon, &qemu_writer);
                release_device(&daemon, num_rings);
                let _ = daemon.shutdown(Shutdown::Write);
                result
            })?;
        Ok((Relay { to_daemon, to_qemu }, handle))
    }

    /// Waits for QEMU to hang up and the daemon side to drain.
    pub fn join(self) -> io::Result<()> {
        let result = self
            .to_daemon
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("relay thread panicked")));
        let _ = self.to_qemu.join();
        result
    }
}

/// Daemon → QEMU: replies, forwarded whole; GET_QUEUE_NUM is answered in queue pairs.
///
/// vhost-user-backend answers GET_QUEUE_NUM with its ring count, but QEMU's net client reads the
/// answer as queue pairs: it would accept `queues=` up to twice what virtgate serves and only fail
/// later, when a ring beyond them is set up (then falling back to a dead userspace NIC). With the
/// answer in pairs QEMU refuses the mismatch at start-up, with its own clear message.
fn pump_to_qemu(daemon: &UnixStream, qemu: &Mutex<UnixStream>, queue_pairs: usize) {
    let mut qemu_gone = false;
    loop {
        match read_message(daemon) {
            Ok(Some(mut msg)) => {
                if qemu_gone {
                    continue; // replies to the relay's own clean-up requests
                }
                if msg.request == request::GET_QUEUE_NUM && msg.u64_payload().is_some() {
                    msg.payload[..8].copy_from_slice(&(queue_pairs as u64).to_le_bytes());
                }
                let w = qemu.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = write_message(&w, &msg) {
                    debug!("relay: QEMU gone while replying: {e}");
                    qemu_gone = true;
                }
            }
            Ok(None) => break,
            Err(e) => {
                debug!("relay: daemon side closed: {e}");
                break;
            }
        }
    }
}

/// Stops every ring and gives up ownership on the daemon side, so the next connection starts from a
/// clean device (the daemon is kept for the life of the process).
fn release_device(daemon: &UnixStream, num_rings: usize) {
    for index in 0..num_rings as u32 {
        let mut state = [0u8; 8];
        state[0..4].copy_from_slice(&index.to_le_bytes());
        let msg = Message::new(request::GET_VRING_BASE, FLAG_VERSION, &state);
        if write_message(daemon, &msg).is_err() {
            return;
        }
    }
    let _ = write_message(
        daemon,
        &Message::new(request::RESET_OWNER, FLAG_VERSION, &[]),
    );
}

/// The QEMU → daemon direction with its small state machine.
struct Filter {
    shared: Arc<Shared>,
    features_set: bool,
    /// Early enables as (ring, enable), last one per ring kept, in arrival order.
    pending_enables: Vec<(u32, u32)>,
}

impl Filter {
    fn new(shared: Arc<Shared>) -> Self {
        // A new frontend: no ring is enabled until it says so.
        shared.rings_enabled.store(0, Ordering::Release);
        Filter {
            shared,
            features_set: false,
            pending_enables: Vec::new(),
        }
    }

    /// Records a ring's enable state for the device (the guest's choice of queue pairs).
    fn note_enable(&self, index: u32, num: u32) {
        if index >= 64 {
            return;
        }
        let bit = 1u64 << index;
        if num != 0 {
            self.shared.rings_enabled.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.shared.rings_enabled.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    fn reply(&self, qemu: &Mutex<UnixStream>, msg: &Message) -> io::Result<()> {
        if msg.need_reply() {
            let w = qemu.lock().unwrap_or_else(|e| e.into_inner());
            write_message(&w, &msg.ack())?;
        }
        Ok(())
    }

    fn run(
        &mut self,
        qemu: &UnixStream,
        daemon: &UnixStream,
        qemu_writer: &Mutex<UnixStream>,
    ) -> io::Result<()> {
        while let Some(msg) = read_message(qemu)? {
            match msg.request {
                request::SET_VRING_ENABLE if !self.features_set => {
                    let Some((index, num)) = msg.vring_state() else {
                        // Malformed: let the daemon reject it with its own error.
                        write_message(daemon, &msg)?;
                        continue;
                    };
                    debug!("relay: early SET_VRING_ENABLE ring {index} = {num}, held");
                    self.pending_enables.retain(|(i, _)| *i != index);
                    // Bound the list: vhost-user has at most 2^16 rings; a flood keeps the newest.
                    if self.pending_enables.len() >= 512 {
                        self.pending_enables.remove(0);
                    }
                    self.pending_enables.push((index, num));
                    self.reply(qemu_writer, &msg)?;
                }
                request::NET_SET_MTU => {
                    if let Some(mtu) = msg.u64_payload() {
                        info!("QEMU announced host_mtu {mtu}");
                        *self
                            .shared
                            .host_mtu
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = u16::try_from(mtu).ok();
                    }
                    self.reply(qemu_writer, &msg)?;
                }
                request::SET_FEATURES => {
                    let features = msg.u64_payload().unwrap_or(0);
                    write_message(daemon, &msg)?;
                    self.features_set = true;
                    let pending = std::mem::take(&mut self.pending_enables);
                    if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
                        // Without PROTOCOL_FEATURES the rings start enabled (vhost-user "Ring
                        // states") and SET_VRING_ENABLE is not allowed: drop the held ones.
                        if !pending.is_empty() {
                            warn!(
                                "relay: dropping {} early enables (no PROTOCOL_FEATURES)",
                                pending.len()
                            );
                        }
                        self.shared.rings_enabled.store(u64::MAX, Ordering::Release);
                        continue;
                    }
                    for (index, num) in pending {
                        self.note_enable(index, num);
                        let mut state = [0u8; 8];
                        state[0..4].copy_from_slice(&index.to_le_bytes());
                        state[4..8].copy_from_slice(&num.to_le_bytes());
                        // No NEED_REPLY: QEMU already has its answer.
                        write_message(
                            daemon,
                            &Message::new(request::SET_VRING_ENABLE, FLAG_VERSION, &state),
                        )?;
                        debug!("relay: replayed SET_VRING_ENABLE ring {index} = {num}");
                    }
                }
                request::SET_VRING_ENABLE => {
                    if let Some((index, num)) = msg.vring_state() {
                        self.note_enable(index, num);
                    }
                    write_message(daemon, &msg)?;
                }
                request::RESET_OWNER | request::RESET_DEVICE => {
                    write_message(daemon, &msg)?;
                    self.features_set = false;
                    self.pending_enables.clear();
                    self.shared.rings_enabled.store(0, Ordering::Release);
                }
                _ => write_message(daemon, &msg)?,
            }
        }
        Ok(())
    }
}

/// Fuzzing entry: runs the QEMU-side filter over the messages QEMU would send on `qemu`,
/// forwarding to `daemon`, until the stream ends or a message is refused.
#[doc(hidden)]
pub fn fuzz_filter(
    qemu: &UnixStream,
    daemon: &UnixStream,
    qemu_writer: &Mutex<UnixStream>,
) -> io::Result<()> {
    let mut f = Filter::new(Arc::new(Shared::default()));
    let result = f.run(qemu, daemon, qemu_writer);
    assert!(f.pending_enables.len() <= 512);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_roundtrip_with_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let (extra, _keep) = UnixStream::pair().unwrap();
        let mut msg = Message::new(
            request::SET_FEATURES,
            FLAG_VERSION | FLAG_NEED_REPLY,
            &[1, 2, 3, 4, 5, 6, 7, 8],
        );
        msg.fds.push(OwnedFd::from(extra));
        write_message(&a, &msg).unwrap();
        let got = read_message(&b).unwrap().unwrap();
        assert_eq!(got.request, request::SET_FEATURES);
        assert!(got.need_reply());
        assert_eq!(got.u64_payload(), Some(0x0807060504030201));
        assert_eq!(got.fds.len(), 1);
        drop(a);
        assert!(read_message(&b).unwrap().is_none());
    }

    #[test]
    fn oversized_payload_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header[8..12].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        (&a).write_all(&header).unwrap();
        assert_eq!(
            read_message(&b).err().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidData)
        );
    }

    /// QEMU's order: enables before SET_FEATURES. The relay acks them (when asked) and replays them
    /// after SET_FEATURES; everything else passes unchanged.
    #[test]
    fn early_enable_is_acked_and_replayed_after_features() {
        let (qemu, relay_qemu_side) = UnixStream::pair().unwrap();
        let (relay_daemon_side, daemon) = UnixStream::pair().unwrap();
        let shared = Arc::new(Shared::default());
        let (relay, _h) =
            Relay::spawn(relay_qemu_side, relay_daemon_side, shared.clone(), 2).unwrap();

        let enable = |ring: u32, need_reply: bool| {
            let mut state = [0u8; 8];
            state[0..4].copy_from_slice(&ring.to_le_bytes());
            state[4..8].copy_from_slice(&1u32.to_le_bytes());
            let flags = FLAG_VERSION | if need_reply { FLAG_NEED_REPLY } else { 0 };
            Message::new(request::SET_VRING_ENABLE, flags, &state)
        };
        // QEMU 10 style (NEED_REPLY) and QEMU 7.2 style (no reply).
        write_message(&qemu, &enable(0, true)).unwrap();
        let ack = read_message(&qemu).unwrap().unwrap();
        assert_eq!(ack.request, request::SET_VRING_ENABLE);
        assert_eq!(ack.flags & FLAG_REPLY, FLAG_REPLY);
        assert_eq!(ack.u64_payload(), Some(0));
        write_message(&qemu, &enable(1, false)).unwrap();
        // NET_SET_MTU is answered here too.
        let mtu = Message::new(
            request::NET_SET_MTU,
            FLAG_VERSION | FLAG_NEED_REPLY,
            &9000u64.to_le_bytes(),
        );
        write_message(&qemu, &mtu).unwrap();
        assert_eq!(
            read_message(&qemu).unwrap().unwrap().request,
            request::NET_SET_MTU
        );
        assert_eq!(*shared.host_mtu.lock().unwrap(), Some(9000));

        let features = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() | (1 << 32);
        write_message(
            &qemu,
            &Message::new(request::SET_FEATURES, FLAG_VERSION, &features.to_le_bytes()),
        )
        .unwrap();
        let got = read_message(&daemon).unwrap().unwrap();
        assert_eq!(got.request, request::SET_FEATURES);
        for ring in [0u32, 1] {
            let replay = read_message(&daemon).unwrap().unwrap();
            assert_eq!(replay.request, request::SET_VRING_ENABLE);
            assert_eq!(replay.flags & FLAG_NEED_REPLY, 0);
            assert_eq!(replay.vring_state(), Some((ring, 1)));
        }
        // Later enables pass straight through.
        write_message(&qemu, &enable(0, true)).unwrap();
        assert_eq!(
            read_message(&daemon).unwrap().unwrap().request,
            request::SET_VRING_ENABLE
        );
        // A daemon reply reaches QEMU.
        write_message(&daemon, &enable(0, false).ack()).unwrap();
        assert_eq!(
            read_message(&qemu).unwrap().unwrap().flags & FLAG_REPLY,
            FLAG_REPLY
        );

        // QEMU hangs up: the relay stops both rings and releases ownership.
        drop(qemu);
        for ring in [0u32, 1] {
            let m = read_message(&daemon).unwrap().unwrap();
            assert_eq!(m.request, request::GET_VRING_BASE);
            assert_eq!(m.vring_state().map(|s| s.0), Some(ring));
        }
        assert_eq!(
            read_message(&daemon).unwrap().unwrap().request,
            request::RESET_OWNER
        );
        assert!(read_message(&daemon).unwrap().is_none());
        drop(daemon);
        relay.join().unwrap();
    }

    #[test]
    fn features_without_protocol_features_drop_held_enables() {
        let (qemu, a) = UnixStream::pair().unwrap();
        let (b, daemon) = UnixStream::pair().unwrap();
        let (relay, _h) = Relay::spawn(a, b, Arc::new(Shared::default()), 2).unwrap();
        let mut state = [0u8; 8];
        state[4] = 1;
        write_message(
            &qemu,
            &Message::new(request::SET_VRING_ENABLE, FLAG_VERSION, &state),
        )
        .unwrap();
        write_message(
            &qemu,
            &Message::new(
                request::SET_FEATURES,
                FLAG_VERSION,
                &(1u64 << 32).to_le_bytes(),
            ),
        )
        .unwrap();
        assert_eq!(
            read_message(&daemon).unwrap().unwrap().request,
            request::SET_FEATURES
        );
        drop(qemu);
        // Next come the clean-up messages, not a replayed enable.
        assert_eq!(
            read_message(&daemon).unwrap().unwrap().request,
            request::GET_VRING_BASE
        );
        drop(daemon);
        relay.join().unwrap();
    }
}
