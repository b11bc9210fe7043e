//! The virtio-net device: drives the RX/TX queue pairs and the gateway stack behind them.
//!
//! Theory of operation. Each pair's vring worker thread (vhost-user-backend's epoll loop) calls
//! [`NetDevice::handle_event`] for guest kicks and for the device's own timer. Every event runs one
//! batch:
//! - TX: the disable-notification / drain / enable-notification loop of the EVENT_IDX protocol; each
//!   chain is copied once into a scratch buffer, returned to the guest (used length 0) and handed to
//!   the stack. A bad chain is returned and counted by reason, never followed.
//! - RX: the stack's queued frames are written straight into the guest's buffers (one copy), spread
//!   over several chains with MRG_RXBUF. When the guest has no buffers left, frames stay queued in the
//!   stack (bounded there) and RX notifications are re-enabled so that the guest's refill kicks us.
//! - The guest is signalled once per batch per queue, and only when EVENT_IDX says it wants it.
//! - Counters are plain fields during the batch and published once at its end, each pair in a
//!   slot of its own ([`crate::control::Shared::pairs`]).
//!
//! Queue pairs in parallel. The device is shared by the pairs' workers (`VhostUserBackend`, not
//! the `Mut` variant whose one lock serialised them). Each pair's state is behind its own mutex,
//! taken by its worker for an event. The stack is in shards, one per pair
//! ([`netstack::Stack::sharded`]): shard `q` owns the flows [`ShardMap::shard_of`] assigns it,
//! its host sockets are on worker `q`'s epoll and its timers on pair `q`'s timer, and its frames
//! leave on pair `q` (or the pair in use it folds onto when the guest uses fewer). A guest frame
//! is handed to its shard whichever TX queue carried it (the guest picks the queue by CPU), under
//! that shard's lock; waits are counted (`shard_lock_waits`, `shard_lock_wait_ns`). A worker that
//! left work for another (frames to deliver, timers moved, mail) writes its wake-up eventfd.
//! Locks are taken in one order: a pair, then impairments and capture (only while they are on),
//! then one shard at a time; the link's state inside the stack, the log limiter and the published
//! counters are leaves.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Instant as StdInstant;

use log::{debug, warn};
use netstack::offload::FrameMeta;
use netstack::stack::{FrameParts, ShardMap};
use netstack::{Instant, Stack};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap,
};
use vmm_sys_util::epoll::{EpollEvent, EventSet};
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::capture::{Capture, Direction as CaptureDirection};
use crate::control::{
    Command, DeviceStats, ImpairChange, ImpairRuleState, ImpairState, MulticastState, PairCounters,
    Shared, MAX_FRAME_LEN,
};
use crate::host::HostSockets;
use crate::impair::frame::{Corruption, FrameView};
use crate::impair::line::{DelayLines, MAX_HELD_FRAMES};
use crate::impair::{segment, Impairment, LinkDirection, RuleSpec};
use crate::inbox::{Inbox, Mailed};
use crate::moderation::{Coalesce, Decision, Moderator};
use crate::sys::Timer;
use crate::virtio_net::{self, Negotiated, Offloads, TxHeader};

pub type GuestMemory = GuestMemoryMmap<()>;
pub type GuestMem = GuestMemoryAtomic<GuestMemory>;
pub type Vring = VringRwLock<GuestMem>;

/// The most queue pairs (`--queues`): one RX and one TX ring each, one worker thread each.
pub const MAX_QUEUE_PAIRS: usize = netstack::stack::MAX_QUEUES;
/// Guest kicks on a pair's RX queue (the first ring of the worker's pair): it posted buffers.
pub const RX_QUEUE_EVENT: u16 = 0;
/// Guest kicks on a pair's TX queue: it posted frames.
pub const TX_QUEUE_EVENT: u16 = 1;
/// Ids of the device's own events. vhost-user-backend reserves 0..=num_queues (the rings and the
/// worker's exit event), so these sit above the largest ring count.
const FIRST_DEVICE_EVENT: u16 = 2 * MAX_QUEUE_PAIRS as u16 + 1;
/// A pair's timerfd: interrupt moderation, TX budget continuation, and on pair 0 the stack's
/// timers (ARP retries, lease expiry, TCP).
pub const TIMER_EVENT: u16 = FIRST_DEVICE_EVENT;
/// The host sockets' epoll descriptor (on pair 0's worker): some host socket is readable.
pub const HOST_EVENT: u16 = FIRST_DEVICE_EVENT + 1;
/// The control API's eventfd (on pair 0's worker): commands wait in [`Shared::commands`].
pub const CONTROL_EVENT: u16 = FIRST_DEVICE_EVENT + 2;
/// A pair's wake-up eventfd: another worker queued frames for this pair's RX queue.
pub const WAKE_EVENT: u16 = FIRST_DEVICE_EVENT + 3;
/// Host socket events handled per wake-up (each with its own read budget in the stack).
const HOST_EVENTS: usize = 64;
/// The largest ring QEMU may set up.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// TX chains processed per event before yielding to RX and timers; the rest continue on the timer.
pub const TX_BUDGET: usize = 256;

/// Why a descriptor chain was returned unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChainFault {
    Direction,
    Memory,
    Structure,
    TooSmall,
    Oversize,
    Runt,
    Offload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Rx,
    Tx,
}

impl DeviceStats {
    fn count_fault(&mut self, queue: Queue, fault: ChainFault) {
        match (queue, fault) {
            (Queue::Rx, ChainFault::Direction) => self.rx_bad_desc_direction += 1,
            (Queue::Rx, ChainFault::Memory) => self.rx_bad_desc_memory += 1,
            (Queue::Rx, ChainFault::TooSmall) => self.rx_bad_chain_too_small += 1,
            (Queue::Rx, _) => self.rx_bad_chain += 1,
            (Queue::Tx, ChainFault::Direction) => self.tx_bad_desc_direction += 1,
            (Queue::Tx, ChainFault::Memory) => self.tx_bad_desc_memory += 1,
            (Queue::Tx, ChainFault::Runt | ChainFault::TooSmall) => self.tx_drop_runt += 1,
            (Queue::Tx, ChainFault::Oversize) => self.tx_drop_oversize += 1,
            (Queue::Tx, ChainFault::Offload) => self.tx_drop_offload += 1,
            (Queue::Tx, ChainFault::Structure) => self.tx_bad_chain += 1,
        }
    }

    /// A frame of `len` bytes taken from the guest.
    fn count_tx(&mut self, len: usize, meta: FrameMeta) {
        self.tx_frames += 1;
        self.tx_bytes += len as u64;
        self.tx_csum_partial += u64::from(meta.checksum.is_some());
        self.tx_gso_frames += u64::from(meta.gso.is_some());
    }
}

/// Whether a frame is a TCP segment with payload (what a lossy link's counters single out).
fn carries_tcp_data(frame: &[u8]) -> bool {
    netstack::wire::tcp::frame_payload_len(frame).is_some_and(|n| n > 0)
}

/// At most this many warnings per second per device reach the log; the rest are counted only.
const LOG_BURST: u32 = 10;

#[derive(Debug, Default)]
struct LogLimiter {
    window_start_secs: u64,
    in_window: u32,
    suppressed: u64,
}

impl LogLimiter {
    fn allow(&mut self, now: Instant) -> bool {
        let secs = now.total_micros() / 1_000_000;
        if secs != self.window_start_secs {
            if self.suppressed > 0 {
                warn!("{} similar warnings suppressed", self.suppressed);
            }
            self.window_start_secs = secs;
            self.in_window = 0;
            self.suppressed = 0;
        }
        self.in_window += 1;
        if self.in_window > LOG_BURST {
            self.suppressed += 1;
            return false;
        }
        true
    }
}

/// The device model and its stack, shared by the queue pairs' worker threads (see the module
/// documentation, "Queue pairs in parallel").
pub struct NetDevice {
    /// Each pair's state, taken by its worker for an event (and briefly by the vhost-user thread
    /// when the frontend changes features or memory).
    pairs: Vec<Mutex<Pair>>,
    /// Each pair's wake-up and timer descriptors, reached without the pair's lock.
    fds: Vec<PairFds>,
    /// The stack's shards, one per pair: shard `q`'s host sockets and timers are served by
    /// worker `q`; its frames to the guest leave on pair `q mod` the pairs in use.
    shards: Vec<Mutex<Stack<HostSockets>>>,
    /// Which shard a guest frame belongs to, without any shard's lock.
    shard_map: ShardMap,
    /// Impairments and capture: taken for a whole event, and only while they are on.
    common: Mutex<Common>,
    /// Whether anything in `common` is on (rules, held frames, a schedule, a capture).
    engaged: AtomicBool,
    /// Interrupt moderation as set (`--rx-usecs`.., the API), with a generation each pair
    /// compares with the one it applied.
    coalesce: Mutex<Coalesce>,
    coalesce_generation: AtomicU64,
    /// Pairs the guest uses; frames to it are spread over these.
    active_pairs: AtomicUsize,
    epoch: StdInstant,
    shared: Arc<Shared>,
    log: Mutex<LogLimiter>,
    /// Written by the control API when it queued commands.
    control: EventFd,
    /// The offloads offered to the guest (`--offloads`).
    offloads: Offloads,
    /// Test-only: the fault to cause after this many more guest frames (see [`TEST_FAULT_ENV`]).
    fault_after: Option<(TestFault, AtomicU64)>,
    /// Per shard: guest frames that crossed from another pair's queue while the shard was busy
    /// (a leaf lock), and whether any wait (read without the lock).
    inboxes: Vec<Mutex<Inbox>>,
    inbox_waiting: Vec<AtomicBool>,
}

/// What other workers and the server reach of a pair without its lock.
struct PairFds {
    /// Written by other workers when this pair has work: frames to deliver, timers to re-arm,
    /// mail to take.
    wake: EventFd,
    /// A wake-up is already on its way.
    woken: AtomicBool,
    /// The guest had no RX buffers: wait for its kick rather than being woken for frames.
    rx_blocked: AtomicBool,
    timer_fd: RawFd,
}

/// Impairments and capture, shared by the pairs (see [`NetDevice::engaged`]).
struct Common {
    /// Link impairments (`--impair`, the API's `/impair`).
    impair: Impairment,
    /// Frames the impairments hold back, per pair and direction.
    lines: DelayLines,
    /// A corrupted copy that goes at once is built here (allocated with the first rule).
    impair_scratch: Vec<u8>,
    /// A frame the stack lends in pieces, gathered whole for the impairments (which read frames
    /// whole); allocated with the first rule.
    impair_gather: Vec<u8>,
    /// Bumped whenever the rules change, so that publishing rebuilds their texts only then.
    impair_generation: u64,
    capture: Option<Capture>,
}

impl Common {
    fn engaged(&self) -> bool {
        !self.impair.is_empty()
            || self.lines.held() > 0
            || self.impair.poll_at().is_some()
            || self.capture.is_some()
    }
}

/// Test-only fault injection, read once at start: `tx-panic-after=N` makes the vring worker panic
/// on the guest's frame number N + 1, so that tests can show what a bug in the data path does to
/// the process, QEMU and the guest (docs/qemu-interop.md, "When virtgate fails");
/// `tx-forbidden-syscall-after=N` makes it call getppid(2), which the sandbox does not allow
/// (docs/security.md). Not an option: nothing but a test sets it.
pub const TEST_FAULT_ENV: &str = "VIRTGATE_TEST_FAULT";

#[derive(Debug, Clone, Copy)]
enum TestFault {
    Panic,
    ForbiddenSyscall,
}

fn test_fault_from_env() -> Option<(TestFault, u64)> {
    let spec = std::env::var(TEST_FAULT_ENV).ok()?;
    let (name, n) = spec.split_once('=')?;
    let fault = match name {
        "tx-panic-after" => TestFault::Panic,
        "tx-forbidden-syscall-after" => TestFault::ForbiddenSyscall,
        _ => return None,
    };
    let n = n.parse().ok()?;
    log::warn!("{TEST_FAULT_ENV}={spec}: the data path will fail on purpose");
    Some((fault, n))
}

/// One RX/TX queue pair: its rings' view of guest memory and features, counters, interrupt
/// moderation, timer and scratch buffers. Each pair is served by its own worker thread.
struct Pair {
    mem: GuestMem,
    negotiated: Negotiated,
    stats: DeviceStats,
    rx_mod: Moderator,
    tx_mod: Moderator,
    /// The moderation generation applied (see [`NetDevice::coalesce_generation`]).
    coalesce_generation: u64,
    timer: Timer,
    timer_deadline: Option<Instant>,
    /// TX work left over when the budget ran out.
    tx_pending: bool,
    /// The guest wants an interrupt that moderation still holds back.
    rx_owed: bool,
    tx_owed: bool,
    /// Used RX buffers published since the guest's wish for an interrupt was last asked (RX
    /// publishes its used ring itself, see [`RxWriter::publish`]).
    rx_used_added: u16,
    /// Scratch for one TX frame with its header.
    tx_buf: Vec<u8>,
    /// Writable segments of the RX chains gathered for one frame.
    rx_segments: Vec<(GuestAddress, u32)>,
    /// RX chains gathered for one frame: head, first segment, capacity; or a bad chain.
    rx_chains: Vec<RxChain>,
    /// Used elements of one frame, published together.
    rx_used: Vec<(u16, u32)>,
    host_events: Vec<EpollEvent>,
    /// A shard's inbox is emptied into this.
    inbox_scratch: VecDeque<Mailed>,
    /// The link's generation whose addresses pair 0 last published.
    published_link: u64,
}

impl Pair {
    fn new(coalesce: Coalesce) -> io::Result<Self> {
        Ok(Pair {
            mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            negotiated: Negotiated::default(),
            stats: DeviceStats::default(),
            rx_mod: Moderator::new(coalesce.rx, coalesce.itr, coalesce.adaptive_rx),
            tx_mod: Moderator::new(coalesce.tx, coalesce.itr, false),
            coalesce_generation: 0,
            timer: Timer::new()?,
            timer_deadline: None,
            tx_pending: false,
            rx_owed: false,
            tx_owed: false,
            rx_used_added: 0,
            tx_buf: vec![0; MAX_FRAME_LEN + virtio_net::HEADER_LEN_V1],
            rx_segments: Vec::with_capacity(MAX_QUEUE_SIZE),
            rx_chains: Vec::with_capacity(MAX_QUEUE_SIZE),
            rx_used: Vec::with_capacity(MAX_QUEUE_SIZE),
            host_events: vec![EpollEvent::default(); HOST_EVENTS],
            inbox_scratch: VecDeque::with_capacity(crate::inbox::INBOX_FRAMES),
            published_link: 0,
        })
    }

    fn moderate_as(&mut self, c: Coalesce) {
        self.rx_mod = Moderator::new(c.rx, c.itr, c.adaptive_rx);
        self.tx_mod = Moderator::new(c.tx, c.itr, false);
        self.rx_owed = false;
        self.tx_owed = false;
    }
}

#[derive(Debug, Clone, Copy)]
enum RxChain {
    Good { head: u16, segments: (usize, usize) },
    Bad { head: u16, fault: ChainFault },
}

/// Locks `m`, taking over a lock a panicking thread left (the process ends on a panic anyway;
/// the state is kept consistent by the code that changes it).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks stack shard `q`, counting in `stats` the time spent waiting when another worker has
/// it (the lock-contention figure of docs/performance.md).
fn lock_shard<'d>(
    dev: &'d NetDevice,
    q: usize,
    stats: &mut DeviceStats,
) -> MutexGuard<'d, Stack<HostSockets>> {
    if let Some(g) = try_lock_shard(dev, q) {
        return g;
    }
    let started = StdInstant::now();
    let g = lock(&dev.shards[q]);
    stats.shard_lock_waits += 1;
    stats.shard_lock_wait_ns += started.elapsed().as_nanos() as u64;
    g
}

/// Locks stack shard `q` unless another worker has it.
fn try_lock_shard(dev: &NetDevice, q: usize) -> Option<MutexGuard<'_, Stack<HostSockets>>> {
    match dev.shards[q].try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// The shard a batch of guest frames goes into, kept locked across consecutive frames of it.
/// Never two shards at once: a worker that needs another releases this one first, so workers
/// waiting for each other's shards cannot deadlock. Whenever it takes a shard's lock it first
/// processes the frames waiting in that shard's inbox ([`crate::inbox`]), so that they go before
/// any the worker brings.
#[derive(Default)]
struct ShardSlot<'d> {
    held: Option<(usize, MutexGuard<'d, Stack<HostSockets>>)>,
}

impl<'d> ShardSlot<'d> {
    /// Shard `q`, waiting for its lock if another worker has it.
    fn get(
        &mut self,
        dev: &'d NetDevice,
        q: usize,
        now: Instant,
        stats: &mut DeviceStats,
        scratch: &mut VecDeque<Mailed>,
    ) -> &mut Stack<HostSockets> {
        if self.held.as_ref().is_some_and(|(h, _)| *h == q) {
            return &mut self.held.as_mut().expect("held").1;
        }
        // The shard held before is released before waiting for another.
        self.held = None;
        let guard = lock_shard(dev, q, stats);
        self.hold(dev, q, guard, now, scratch)
    }

    /// Shard `q` if this slot holds it or its lock is free; `None` while another worker has it.
    fn try_get(
        &mut self,
        dev: &'d NetDevice,
        q: usize,
        now: Instant,
        scratch: &mut VecDeque<Mailed>,
    ) -> Option<&mut Stack<HostSockets>> {
        if self.held.as_ref().is_some_and(|(h, _)| *h == q) {
            return Some(&mut self.held.as_mut().expect("held").1);
        }
        let guard = try_lock_shard(dev, q)?;
        Some(self.hold(dev, q, guard, now, scratch))
    }

    /// Keeps shard `q`'s lock (releasing any shard held before) once its inbox is processed.
    fn hold(
        &mut self,
        dev: &'d NetDevice,
        q: usize,
        mut guard: MutexGuard<'d, Stack<HostSockets>>,
        now: Instant,
        scratch: &mut VecDeque<Mailed>,
    ) -> &mut Stack<HostSockets> {
        dev.drain_inbox(q, &mut guard, now, scratch);
        &mut self.held.insert((q, guard)).1
    }
}

impl NetDevice {
    /// A device with one RX/TX pair per shard of `shards` (1 to [`MAX_QUEUE_PAIRS`]; see
    /// [`Stack::sharded`]).
    pub fn new(mut shards: Vec<Stack<HostSockets>>, shared: Arc<Shared>) -> io::Result<Self> {
        if shards.is_empty() || shards.len() > MAX_QUEUE_PAIRS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} queue pairs: 1 to {MAX_QUEUE_PAIRS}", shards.len()),
            ));
        }
        let queue_pairs = shards.len();
        for s in &mut shards {
            // Each shard's frames leave on one pair: its egress queue is one queue.
            s.set_queues(1);
        }
        let shard_map = shards[0].shard_map();
        let pairs: Vec<Pair> = (0..queue_pairs)
            .map(|_| Pair::new(Coalesce::default()))
            .collect::<io::Result<_>>()?;
        let fds = pairs
            .iter()
            .map(|p| {
                Ok(PairFds {
                    wake: EventFd::new(EFD_NONBLOCK)?,
                    woken: AtomicBool::new(false),
                    rx_blocked: AtomicBool::new(false),
                    timer_fd: p.timer.as_raw_fd(),
                })
            })
            .collect::<io::Result<_>>()?;
        lock(&shared.snapshot).active_queue_pairs = 1;
        let _ = shared.pairs.set(
            (0..queue_pairs)
                .map(|_| Mutex::new(PairCounters::default()))
                .collect(),
        );
        Ok(NetDevice {
            pairs: pairs.into_iter().map(Mutex::new).collect(),
            fds,
            shards: shards.into_iter().map(Mutex::new).collect(),
            shard_map,
            common: Mutex::new(Common {
                impair: Impairment::default(),
                lines: DelayLines::new(queue_pairs, MAX_FRAME_LEN),
                impair_scratch: Vec::new(),
                impair_gather: Vec::new(),
                impair_generation: 0,
                capture: None,
            }),
            engaged: AtomicBool::new(false),
            coalesce: Mutex::new(Coalesce::default()),
            coalesce_generation: AtomicU64::new(0),
            active_pairs: AtomicUsize::new(1),
            epoch: StdInstant::now(),
            shared,
            log: Mutex::new(LogLimiter::default()),
            control: EventFd::new(EFD_NONBLOCK)?,
            offloads: Offloads::ALL,
            fault_after: test_fault_from_env().map(|(f, n)| (f, AtomicU64::new(n))),
            inboxes: (0..queue_pairs).map(|_| Mutex::default()).collect(),
            inbox_waiting: (0..queue_pairs).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// The eventfd to register with worker 0's epoll as [`CONTROL_EVENT`].
    pub fn control_fd(&self) -> RawFd {
        self.control.as_raw_fd()
    }

    /// A handle on the control eventfd for the API thread.
    pub fn control_notifier(&self) -> io::Result<EventFd> {
        self.control.try_clone()
    }

    /// The offloads offered to the guest (see [`crate::virtio_net::Offloads`]).
    pub fn with_offloads(mut self, offloads: Offloads) -> Self {
        self.offloads = offloads;
        self
    }

    /// Captures every frame at the guest boundary (see [`crate::capture`]).
    pub fn with_capture(mut self, capture: Option<Capture>) -> Self {
        let common = self
            .common
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        common.capture = capture;
        self.engaged = AtomicBool::new(common.engaged());
        self
    }

    /// Interrupt moderation (see [`crate::moderation`]).
    pub fn with_coalesce(mut self, coalesce: Coalesce) -> Self {
        *self
            .coalesce
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner) = coalesce;
        for pair in &mut self.pairs {
            pair.get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .moderate_as(coalesce);
        }
        self
    }

    /// Link impairments from the start (see [`crate::impair`]).
    pub fn with_impairment(mut self, impair: Impairment) -> Self {
        let common = self
            .common
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if !impair.is_empty() || impair.seed() != common.impair.seed() {
            set_impairment(common, impair.specs(), Some(impair.seed()));
        }
        self.engaged = AtomicBool::new(common.engaged());
        self
    }

    /// The number of queue pairs.
    pub fn queue_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// Pair `p`'s timerfd, to register with that pair's worker as [`TIMER_EVENT`].
    pub fn timer_fd(&self, p: usize) -> RawFd {
        self.fds[p].timer_fd
    }

    /// Pair `p`'s wake-up eventfd, to register with that pair's worker as [`WAKE_EVENT`].
    pub fn wake_fd(&self, p: usize) -> RawFd {
        self.fds[p].wake.as_raw_fd()
    }

    /// Shard `q`'s host sockets' epoll descriptor, to register with worker `q`'s epoll as
    /// [`HOST_EVENT`].
    pub fn host_fd(&self, q: usize) -> i32 {
        lock(&self.shards[q]).host().epoll_fd()
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Counts a chain returned to the guest unused, with a rate-limited warning.
    fn count_fault(
        &self,
        stats: &mut DeviceStats,
        now: Instant,
        queue: Queue,
        head: u16,
        fault: ChainFault,
    ) {
        stats.count_fault(queue, fault);
        self.warn_limited(
            now,
            format_args!("{queue:?} chain at descriptor {head} returned unused: {fault:?}"),
        );
    }

    /// Counts an error reading a ring, with a rate-limited warning.
    fn queue_error(
        &self,
        stats: &mut DeviceStats,
        now: Instant,
        queue: Queue,
        e: virtio_queue::Error,
    ) {
        stats.queue_errors += 1;
        self.warn_limited(now, format_args!("{queue:?} queue error: {e}"));
    }

    fn warn_limited(&self, now: Instant, msg: std::fmt::Arguments) {
        if lock(&self.log).allow(now) {
            warn!("{msg}");
        }
    }

    /// The pair that writes shard `q`'s frames to the guest: `q` itself while the guest uses
    /// it, else the pair in use it folds onto.
    fn delivering_pair(&self, q: usize) -> usize {
        q % self.active_pairs.load(Ordering::Acquire).max(1)
    }

    /// Processes the frames waiting in shard `q`'s inbox on the shard (whose lock the caller
    /// holds), in the order they came, without the inbox's lock held meanwhile.
    fn drain_inbox(
        &self,
        q: usize,
        stack: &mut Stack<HostSockets>,
        now: Instant,
        scratch: &mut VecDeque<Mailed>,
    ) {
        if !self.inbox_waiting[q].load(Ordering::Acquire) {
            return;
        }
        {
            let mut inbox = lock(&self.inboxes[q]);
            inbox.take_all(scratch);
            self.inbox_waiting[q].store(false, Ordering::Release);
        }
        for m in scratch.iter() {
            stack.process_frame_meta(now, &m.frame, m.meta);
        }
        lock(&self.inboxes[q]).recycle(scratch);
    }

    /// Leaves a copy of a guest frame in busy shard `q`'s inbox; false when it is full.
    fn post_to_inbox(&self, q: usize, frame: &[u8], meta: FrameMeta) -> bool {
        let mut inbox = lock(&self.inboxes[q]);
        if !inbox.push(frame, meta) {
            return false;
        }
        self.inbox_waiting[q].store(true, Ordering::Release);
        true
    }

    /// Wakes worker `q` (unless a wake-up is already on its way).
    fn wake(&self, q: usize) {
        let fds = &self.fds[q];
        if !fds.woken.swap(true, Ordering::AcqRel) && fds.wake.write(1).is_err() {
            fds.woken.store(false, Ordering::Release);
        }
    }

    /// Test-only: counts a guest frame towards the fault a test asked for.
    fn count_towards_fault(&self) {
        let Some((fault, left)) = &self.fault_after else {
            return;
        };
        let due = left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_err();
        if due {
            match fault {
                TestFault::Panic => panic!("{TEST_FAULT_ENV}: the fault a test asked for"),
                // SAFETY: getppid takes no arguments and cannot fail.
                TestFault::ForbiddenSyscall => unsafe {
                    libc::syscall(libc::SYS_getppid);
                },
            }
        }
    }
}

/// Installs impairment rules (fresh counters and random state), and a new seed if given.
fn set_impairment(common: &mut Common, rules: Vec<RuleSpec>, seed: Option<u64>) {
    if let Some(seed) = seed {
        common.impair.set_seed(seed);
    }
    common.impair.replace(rules);
    impair_rules_changed(common);
}

fn impair_rules_changed(common: &mut Common) {
    common.impair_generation += 1;
    if !common.impair.is_empty() && common.impair_scratch.capacity() < MAX_FRAME_LEN {
        common.impair_scratch = Vec::with_capacity(MAX_FRAME_LEN);
        common.impair_gather = Vec::with_capacity(MAX_FRAME_LEN);
    }
    if common.impair.is_empty() {
        common.lines.release_memory();
    }
    let rules: Vec<String> = common
        .impair
        .rules()
        .iter()
        .map(|r| r.spec.to_string())
        .collect();
    if rules.is_empty() {
        log::info!("no link impairment");
    } else {
        log::info!("link impairments now: {}", rules.join("; "));
    }
}

/// Brings `state` up to date; texts are rebuilt only when the rules changed (so publishing
/// allocates nothing per batch), and the schedule only when asked for.
fn impair_state_into(common: &Common, now: Instant, state: &mut ImpairState, with_schedule: bool) {
    let impair = &common.impair;
    if state.generation != common.impair_generation || state.rules.len() != impair.rules().len() {
        state.generation = common.impair_generation;
        state.rules = impair
            .rules()
            .iter()
            .map(|r| ImpairRuleState {
                direction: r.spec.direction,
                rule: r.spec.to_string(),
                counters: r.counters.clone(),
            })
            .collect();
    } else {
        for (s, r) in state.rules.iter_mut().zip(impair.rules()) {
            s.counters.clone_from(&r.counters);
        }
    }
    state.seed = impair.seed();
    state.held = [
        common.lines.held_in(LinkDirection::ToGuest),
        common.lines.held_in(LinkDirection::FromGuest),
    ];
    state.held_bytes = common.lines.allocated();
    if with_schedule {
        state.schedule = impair
            .schedule()
            .map(|step| {
                let ms = (step.at.saturating_since(now).total_micros()).div_ceil(1000);
                let rules = step.rules.as_ref().map(|r| {
                    r.iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                });
                (ms, rules)
            })
            .collect();
    }
}

/// One event of one pair's worker: the pair (locked), and impairments and capture when they
/// are on.
struct Worker<'d> {
    dev: &'d NetDevice,
    p: usize,
    now: Instant,
    pair: MutexGuard<'d, Pair>,
    common: Option<MutexGuard<'d, Common>>,
    /// Shards that took guest frames in this event, one bit each (flushed at its end, their
    /// workers woken).
    touched: u32,
}

impl<'d> Worker<'d> {
    fn queue_error(&mut self, queue: Queue, e: virtio_queue::Error) {
        self.dev
            .queue_error(&mut self.pair.stats, self.now, queue, e);
    }

    /// Applies moderation settings changed since this pair last looked.
    fn sync_coalesce(&mut self) {
        let generation = self.dev.coalesce_generation.load(Ordering::Acquire);
        if self.pair.coalesce_generation == generation {
            return;
        }
        let c = *lock(&self.dev.coalesce);
        let pair = &mut *self.pair;
        pair.rx_mod.reconfigure(c.rx, c.itr, c.adaptive_rx);
        pair.tx_mod.reconfigure(c.tx, c.itr, false);
        pair.coalesce_generation = generation;
    }

    /// Runs the control API's queued commands (on worker 0).
    fn run_commands(&mut self) {
        let dev = self.dev;
        let _ = dev.control.read();
        let commands = std::mem::take(&mut *lock(&dev.shared.commands));
        for c in commands {
            match c {
                Command::GetCoalesce(reply) => {
                    let _ = reply.send(*lock(&dev.coalesce));
                }
                Command::SetCoalesce(c, reply) => {
                    *lock(&dev.coalesce) = c;
                    // Each pair applies it at its next event (this worker at once).
                    dev.coalesce_generation.fetch_add(1, Ordering::AcqRel);
                    self.sync_coalesce();
                    log::info!("interrupt moderation now {c:?}");
                    let _ = reply.send(c);
                }
                Command::CaptureStart(path, reply) => {
                    let common = self.common();
                    // The old capture, if any, is finished first.
                    common.capture = None;
                    let started = Capture::start(&path)
                        .map(|c| common.capture = Some(c))
                        .map_err(|e| format!("{}: {e}", path.display()));
                    if started.is_ok() {
                        log::info!("capturing to {}", path.display());
                    }
                    let _ = reply.send(started);
                }
                Command::CaptureStop(reply) => {
                    let was = self.common().capture.take().is_some();
                    let _ = reply.send(was);
                }
                Command::ListForwards(reply) => {
                    let _ = reply.send(lock(&dev.shards[0]).forwards());
                }
                Command::AddForward(f, reply) => {
                    let added = lock(&dev.shards[0])
                        .add_forward(f)
                        .map_err(|e| e.to_string());
                    if added.is_ok() {
                        log::info!(
                            "forward {} {} -> guest port {} opened",
                            f.protocol,
                            f.host,
                            f.guest_port
                        );
                    }
                    let _ = reply.send(added);
                }
                Command::RemoveForward(f, reply) => {
                    let _ = reply.send(lock(&dev.shards[0]).remove_forward(f.protocol, f.host));
                }
                Command::Multicast(reply) => {
                    let home = lock(&dev.shards[0]);
                    let cfg = home.config();
                    let _ = reply.send(MulticastState {
                        querier: cfg.mcast_querier,
                        query_interval_s: cfg.mcast_query_interval.total_secs(),
                        ipv4: home.multicast_groups(false),
                        ipv6: home.multicast_groups(true),
                        now: self.now,
                    });
                }
                Command::GetPathMtus(reply) => {
                    let _ = reply.send(lock(&dev.shards[0]).path_mtus().to_vec());
                }
                Command::SetPathMtus(table, reply) => {
                    let mut set = Ok(());
                    for shard in &dev.shards {
                        set = lock(shard).set_path_mtus(table.clone());
                        if set.is_err() {
                            break;
                        }
                    }
                    if set.is_ok() {
                        log::info!("path MTUs now {table:?}");
                    }
                    let _ = reply.send(set);
                }
                Command::GetTcpOptions(reply) => {
                    let _ = reply.send(lock(&dev.shards[0]).tcp_options());
                }
                Command::SetTcpOptions(options, reply) => {
                    for shard in &dev.shards {
                        lock(shard).set_tcp_options(options);
                    }
                    log::info!("TCP options of new connections now {options}");
                    let _ = reply.send(options);
                }
                Command::Inject(frames, reply) => {
                    let mut home = lock(&dev.shards[0]);
                    let queued = frames.iter().filter(|f| home.inject(f)).count();
                    self.touched |= 1;
                    let _ = reply.send(queued);
                }
                Command::GetImpair(reply) => {
                    let now = self.now;
                    let mut state = ImpairState::default();
                    impair_state_into(self.common(), now, &mut state, true);
                    let _ = reply.send(state);
                }
                Command::SetImpair(change, reply) => {
                    let now = self.now;
                    let common = self.common();
                    let ImpairChange {
                        rules,
                        seed,
                        schedule,
                    } = change;
                    if let Some(seed) = seed {
                        common.impair.set_seed(seed);
                    }
                    if let Some(rules) = rules {
                        // New rules in force cancel a pending schedule.
                        common.impair.cancel_schedule();
                        set_impairment(common, rules, None);
                    }
                    if let Some(steps) = schedule {
                        let n = steps.len();
                        common.impair.set_schedule(now, steps);
                        log::info!("link impairment schedule of {n} steps set");
                    }
                    let mut state = ImpairState::default();
                    impair_state_into(common, now, &mut state, true);
                    let _ = reply.send(state);
                }
                Command::Probe(name, params, reply) => {
                    let mut flows = Vec::new();
                    for shard in &dev.shards[1..] {
                        flows.extend(lock(shard).tcp_flows());
                    }
                    let mut home = lock(&dev.shards[0]);
                    flows.extend(home.tcp_flows());
                    let sent = home.send_probe_among(&name, &params, flows);
                    self.touched |= 1;
                    match &sent {
                        Ok((built, _)) => log::info!("probe {name} {params:?}: {built} frames"),
                        Err(e) => log::info!("probe {name} refused: {e}"),
                    }
                    let _ = reply.send(sent.map_err(|e| e.to_string()));
                }
            }
        }
    }

    /// Impairments and capture, taken now if the event started without them (on worker 0, for
    /// a command: it holds no shard, so the lock order pair, common, shard holds).
    fn common(&mut self) -> &mut Common {
        let common = self.common.get_or_insert_with(|| lock(&self.dev.common));
        common
    }

    /// Follows the guest's choice of queue pairs (`ethtool -L`, seen as ring enables): each
    /// shard's frames leave on the pair it folds onto.
    fn sync_active_pairs(&mut self) {
        let dev = self.dev;
        let pairs = dev.pairs.len();
        if dev.active_pairs.load(Ordering::Acquire) == dev.shared.active_queue_pairs(pairs) {
            return;
        }
        // Two workers can see the enables change at once: the count is read again, swapped and
        // published under the snapshot's lock, so that the last one to publish has read the
        // newest enables and the stats say what the device uses. (Read and published apart, a
        // worker that read 3 of 4 pairs could publish after one that read 4, and the stats kept
        // saying 3 while the device used 4.)
        let mut snapshot = lock(&dev.shared.snapshot);
        let active = dev.shared.active_queue_pairs(pairs);
        if dev.active_pairs.swap(active, Ordering::AcqRel) != active {
            log::info!("guest uses {active} of {pairs} queue pairs");
            snapshot.active_queue_pairs = active;
            drop(snapshot);
            // The pairs that now deliver other shards' frames look at once.
            for q in 0..pairs {
                if q != self.p {
                    dev.wake(q);
                }
            }
        }
    }

    /// Drains the TX queue (bounded by [`TX_BUDGET`]) into the stack; returns whether chains were
    /// returned to the guest.
    fn process_tx(&mut self, tx: &Vring) -> bool {
        if !queue_ready(tx) {
            return false;
        }
        let (dev, p, now) = (self.dev, self.p, self.now);
        let pair = &mut *self.pair;
        let guard = pair.mem.memory();
        let mem: &GuestMemory = &guard;
        let mut returned = 0usize;
        let mut slot = ShardSlot::default();
        pair.tx_pending = false;
        'outer: loop {
            if let Err(e) = tx.disable_notification() {
                dev.queue_error(&mut pair.stats, now, Queue::Tx, e);
                break;
            }
            loop {
                if returned >= TX_BUDGET {
                    pair.stats.tx_budget_exhausted += 1;
                    pair.tx_pending = true;
                    break 'outer;
                }
                let chain = tx.get_mut().get_queue_mut().pop_descriptor_chain(mem);
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                if !head_in_ring(tx, head) {
                    // The guest put a head outside its own ring in the avail ring: there is no
                    // chain to read and no element that could name it in the used ring.
                    returned += 1;
                    dev.count_fault(&mut pair.stats, now, Queue::Tx, head, ChainFault::Structure);
                    continue;
                }
                // The frame is read into this pair's shard's ingress buffer, from where its TCP
                // payload reaches the host socket without another copy (netstack's
                // `Stack::ingress_buffer`), unless the impairments take it first (they hold,
                // duplicate and rewrite frames: the pair's own buffer).
                let impaired = self
                    .common
                    .as_deref()
                    .is_some_and(|c| c.impair.active(LinkDirection::FromGuest));
                let hdr = pair.negotiated.header_len;
                let result = if impaired {
                    read_tx_chain(mem, chain, &mut pair.tx_buf, &pair.negotiated)
                } else {
                    let stack = slot.get(dev, p, now, &mut pair.stats, &mut pair.inbox_scratch);
                    let room = stack.ingress_buffer(pair.tx_buf.len());
                    read_tx_chain(mem, chain, room, &pair.negotiated)
                };
                if let Err(e) = tx.add_used(head, 0) {
                    dev.queue_error(&mut pair.stats, now, Queue::Tx, e);
                    break 'outer;
                }
                returned += 1;
                match result {
                    Ok((len, meta)) => {
                        dev.count_towards_fault();
                        pair.stats.count_tx(len - hdr, meta);
                        if !impaired {
                            let stack =
                                slot.get(dev, p, now, &mut pair.stats, &mut pair.inbox_scratch);
                            let frame = stack.ingress_frame(hdr..len);
                            let capture =
                                self.common.as_deref_mut().and_then(|c| c.capture.as_mut());
                            if let Some(capture) = capture {
                                record_outbound(capture, &mut pair.stats, frame, meta);
                            }
                            if dev.shard_map.shard_of(frame) == p {
                                self.touched |= 1 << p;
                                stack.process_ingress(now, hdr..len, meta);
                                continue;
                            }
                            // Another pair's shard: through the pair's own buffer, as an
                            // impaired frame goes.
                            pair.tx_buf[hdr..len].copy_from_slice(frame);
                        }
                        let frame = &pair.tx_buf[hdr..len];
                        let mut ingress = Ingress {
                            dev,
                            p,
                            slot: &mut slot,
                            touched: &mut self.touched,
                            stats: &mut pair.stats,
                            scratch: &mut pair.inbox_scratch,
                        };
                        match self.common.as_deref_mut() {
                            Some(c) if impaired => {
                                impair_from_guest(c, &mut ingress, p, now, frame, meta)
                            }
                            // Captured already, from the ingress buffer.
                            _ => ingress.deliver(None, now, frame, meta),
                        }
                    }
                    Err(fault) => dev.count_fault(&mut pair.stats, now, Queue::Tx, head, fault),
                }
            }
            match tx.enable_notification() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    dev.queue_error(&mut pair.stats, now, Queue::Tx, e);
                    break;
                }
            }
        }
        returned > 0
    }

    /// Hands the guest's frames whose delay is over to the stack.
    fn release_from_guest(&mut self) {
        let (dev, p, now) = (self.dev, self.p, self.now);
        let Some(common) = self.common.as_deref_mut() else {
            return;
        };
        let mut slot = ShardSlot::default();
        let pair = &mut *self.pair;
        while let Some(h) = common.lines.take_due(p, LinkDirection::FromGuest, now) {
            let mut ingress = Ingress {
                dev,
                p,
                slot: &mut slot,
                touched: &mut self.touched,
                stats: &mut pair.stats,
                scratch: &mut pair.inbox_scratch,
            };
            ingress.deliver(common.capture.as_mut(), now, &h.frame, h.meta);
            common.lines.recycle(h.frame);
        }
    }

    /// The guest's frames of this event are all in: each shard that took some finishes their
    /// batch (one write to the host and one ACK per connection). Returns the shards with frames
    /// for the guest, one bit each.
    fn flush_touched(&mut self) -> u32 {
        let mut pending = 0;
        for q in 0..self.dev.shards.len() {
            if self.touched & (1 << q) == 0 {
                continue;
            }
            let mut shard = lock_shard(self.dev, q, &mut self.pair.stats);
            shard.flush(self.now);
            if shard.has_pending() {
                pending |= 1 << q;
            }
        }
        pending
    }

    /// Whether the queue's interrupt should be raised now. The guest's wish is taken when buffers
    /// are used (`fresh`): EVENT_IDX's used_event for this batch, as a NIC latches an interrupt
    /// cause when a frame arrives while the driver has interrupts enabled. Moderation (see
    /// [`crate::moderation`]) then only decides when an owed interrupt goes out: it merges
    /// interrupts, it never adds one. (Asking the guest only when the timer fires would look at a
    /// wider window of used_event and could signal batches the guest had polled already.)
    fn moderate(&mut self, vring: &Vring, queue: Queue, fresh: bool) -> bool {
        let now = self.now;
        if fresh {
            let wanted = self.guest_wants_interrupt(vring, queue);
            let pair = &mut *self.pair;
            let (owed, m) = match queue {
                Queue::Rx => (&mut pair.rx_owed, &mut pair.rx_mod),
                Queue::Tx => (&mut pair.tx_owed, &mut pair.tx_mod),
            };
            if wanted {
                *owed = true;
            } else if !*owed {
                m.not_wanted();
            }
        }
        let pair = &mut *self.pair;
        let (owed, m) = match queue {
            Queue::Rx => (&mut pair.rx_owed, &mut pair.rx_mod),
            Queue::Tx => (&mut pair.tx_owed, &mut pair.tx_mod),
        };
        if !*owed {
            return false;
        }
        match m.decide(now) {
            Decision::At(_) => {
                if fresh {
                    match queue {
                        Queue::Rx => pair.stats.rx_interrupts_moderated += 1,
                        Queue::Tx => pair.stats.tx_interrupts_moderated += 1,
                    }
                }
                false
            }
            Decision::Now | Decision::Idle => {
                if queue == Queue::Rx && m.due_to_starvation(now) {
                    pair.stats.rx_interrupts_starved += 1;
                }
                m.signalled(now);
                *owed = false;
                match queue {
                    Queue::Rx => pair.stats.rx_interrupts += 1,
                    Queue::Tx => pair.stats.tx_interrupts += 1,
                }
                true
            }
        }
    }

    /// Whether the guest wants an interrupt for the chains used (EVENT_IDX's used_event, or the
    /// NO_INTERRUPT flag without it); a batch it does not want one for is counted here.
    fn guest_wants_interrupt(&mut self, vring: &Vring, queue: Queue) -> bool {
        let wanted = match queue {
            Queue::Rx => self.rx_needs_notification(vring),
            Queue::Tx => vring.needs_notification(),
        };
        match wanted {
            Ok(true) => true,
            Ok(false) => {
                match queue {
                    Queue::Rx => self.pair.stats.rx_interrupts_suppressed += 1,
                    Queue::Tx => self.pair.stats.tx_interrupts_suppressed += 1,
                }
                false
            }
            Err(e) => {
                self.queue_error(queue, e);
                false
            }
        }
    }

    /// virtio-queue's needs_notification for the RX ring, whose used elements
    /// [`RxWriter::publish`] counts itself: with EVENT_IDX, whether the guest's used_event lies
    /// among the elements published since the last call (the inequality Linux's
    /// virtqueue_kick_prepare uses, which also covers a batch); without it, always.
    fn rx_needs_notification(&mut self, vring: &Vring) -> Result<bool, virtio_queue::Error> {
        let added = std::mem::take(&mut self.pair.rx_used_added);
        let state = vring.get_ref();
        let queue = state.get_queue();
        if !queue.event_idx_enabled() {
            return Ok(true);
        }
        // The used elements and index are written before used_event is read.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        let size = u64::from(queue.size());
        let used_event_at = GuestAddress(queue.avail_ring()).unchecked_add(4 + 2 * size);
        let guard = self.pair.mem.memory();
        let used_event: u16 = guard
            .load(used_event_at, std::sync::atomic::Ordering::Relaxed)
            .map(u16::from_le)
            .map_err(virtio_queue::Error::GuestMemory)?;
        let used = std::num::Wrapping(queue.next_used());
        let old = used - std::num::Wrapping(added);
        Ok(used - std::num::Wrapping(used_event) - std::num::Wrapping(1) < used - old)
    }

    /// Writes the frames for this pair into the guest's RX buffers: first those the impairments
    /// held whose time has come, then the queues of the shards this pair delivers for (its own,
    /// and those of pairs the guest does not use). Returns whether any were written.
    fn process_rx(&mut self, rx: &Vring) -> bool {
        let (dev, p, now) = (self.dev, self.p, self.now);
        if !queue_ready(rx) {
            return false;
        }
        let active = dev.active_pairs.load(Ordering::Acquire).max(1);
        if p >= active {
            return false;
        }
        let pair = &mut *self.pair;
        let guard = pair.mem.memory();
        let mem: &GuestMemory = &guard;
        let mut delivered = 0usize;
        // Impairments and capture, split once: the capture is lent to each frame's writer, the
        // rest to the lines and the impairments.
        let (mut capture, mut shaping) = match self.common.as_deref_mut() {
            Some(Common {
                impair,
                lines,
                impair_scratch,
                impair_gather,
                capture,
                ..
            }) => (
                capture.as_mut(),
                Some((impair, lines, impair_scratch, impair_gather)),
            ),
            None => (None, None),
        };
        let impaired = shaping
            .as_ref()
            .is_some_and(|(impair, ..)| impair.active(LinkDirection::ToGuest));
        // The shards this pair delivers for, in turn.
        let mut shards = (p..dev.shards.len()).step_by(active);
        let mut shard: Option<MutexGuard<'_, Stack<HostSockets>>> = None;
        // Each iteration delivers or drops one frame, or moves to the next shard, or stops; the
        // shards' queues and the lines are bounded.
        for _ in 0..=(netstack::stack::TX_QUEUE_CAPACITY + 1) * dev.shards.len() + MAX_HELD_FRAMES {
            let mut egress = Egress {
                writer: RxWriter {
                    mem,
                    vring: rx,
                    negotiated: pair.negotiated,
                    stats: &mut pair.stats,
                    segments: &mut pair.rx_segments,
                    chains: &mut pair.rx_chains,
                    used: &mut pair.rx_used,
                    used_added: &mut pair.rx_used_added,
                    last_fault: None,
                    starved_at: None,
                },
                capture: capture.as_deref_mut(),
                written: 0,
                ring_full: false,
            };
            let held = shaping.as_mut().and_then(|(_, lines, ..)| {
                lines
                    .take_due(p, LinkDirection::ToGuest, now)
                    .map(|h| (h, lines))
            });
            let idle = if let Some((h, lines)) = held {
                if egress.write(FrameParts::whole(&h.frame), h.meta) {
                    lines.recycle(h.frame);
                } else {
                    lines.put_back(p, LinkDirection::ToGuest, h);
                }
                false
            } else {
                if shard.is_none() {
                    match shards.next() {
                        Some(q) => {
                            // Another pair's shard folded onto this one: its worker publishes
                            // what delivering changed in its counters.
                            if q != p {
                                self.touched |= 1 << q;
                            }
                            shard = Some(lock_shard(dev, q, egress.writer.stats));
                        }
                        None => break,
                    }
                }
                let stack = shard.as_deref_mut().expect("a shard is held");
                let outcome = match shaping.as_mut() {
                    Some((impair, lines, scratch, gather)) if impaired => {
                        stack.dispatch_on(0, now, |parts, meta| {
                            let frame = parts.gather(gather);
                            impair_to_guest(
                                impair,
                                lines,
                                scratch,
                                &mut egress,
                                p,
                                now,
                                frame,
                                meta,
                            );
                            true
                        })
                    }
                    _ => stack.dispatch_on(0, now, |frame, meta| egress.write(frame, meta)),
                };
                if matches!(outcome, netstack::stack::Dispatch::Idle) {
                    // This shard is done: the next one, if any.
                    shard = None;
                }
                false
            };
            let (written, ring_full, fault, starved_at) = (
                egress.written,
                egress.ring_full,
                egress.writer.last_fault,
                egress.writer.starved_at,
            );
            if let Some((head, fault)) = fault {
                // Counted by the writer; the warning is rate-limited.
                dev.warn_limited(
                    now,
                    format_args!("Rx chain at descriptor {head} returned unused: {fault:?}"),
                );
            }
            delivered += written;
            if ring_full {
                // Out of buffers: ask for a kick when the guest refills, unless it already did.
                // A frame that needed more buffers than were posted leaves them unused (the
                // attempt was rewound), so the question is whether the guest posted beyond where
                // the attempt ran out: the notification is enabled from there (with EVENT_IDX
                // the avail event is set there, so the guest's next refill kicks), and a retry
                // happens only if it did, instead of re-walking the same chains until it does.
                let rewound = rx.get_ref().get_queue().next_avail();
                if let Some(at) = starved_at {
                    rx.get_mut().get_queue_mut().set_next_avail(at);
                }
                let posted = rx.enable_notification();
                rx.get_mut().get_queue_mut().set_next_avail(rewound);
                match posted {
                    Ok(true) => {
                        let _ = rx.disable_notification();
                        continue;
                    }
                    Ok(false) => {
                        pair.stats.rx_ring_full += 1;
                        dev.fds[p].rx_blocked.store(true, Ordering::Release);
                        break;
                    }
                    Err(e) => {
                        dev.queue_error(&mut pair.stats, now, Queue::Rx, e);
                        break;
                    }
                }
            }
            if idle {
                break;
            }
        }
        delivered > 0
    }

    /// Re-arms the timerfd for the next deadline of this pair's shard (or immediately for
    /// leftover TX work). `shard_due` is the shard's next timer.
    ///
    /// Deadlines move later with nearly every frame (a refreshed timer), so the timer is only
    /// re-armed when the new deadline is earlier than the armed one; firing early costs one
    /// wake-up that re-arms for the real deadline, where re-arming per batch would cost a syscall
    /// per batch.
    fn arm_timer(&mut self, shard_due: Option<Instant>) {
        let (p, now) = (self.p, self.now);
        let (impair_due, held_due) = match self.common.as_deref() {
            Some(c) => (
                if p == 0 { c.impair.poll_at() } else { None },
                [LinkDirection::ToGuest, LinkDirection::FromGuest]
                    .into_iter()
                    .filter_map(|d| c.lines.next_release(p, d))
                    .min(),
            ),
            None => (None, None),
        };
        let pair = &mut *self.pair;
        let deadline = if pair.tx_pending {
            Some(now)
        } else {
            [
                shard_due,
                impair_due,
                held_due,
                pair.rx_mod.deadline(now),
                pair.tx_mod.deadline(now),
            ]
            .into_iter()
            .flatten()
            .min()
        };
        let Some(deadline) = deadline else {
            return; // a stale armed timer only causes one spurious, harmless wake-up
        };
        if pair.timer_deadline.is_some_and(|armed| armed <= deadline) {
            return;
        }
        let after = std::time::Duration::from_micros((deadline - now).total_micros());
        match pair.timer.set(Some(after)) {
            Ok(()) => pair.timer_deadline = Some(deadline),
            Err(e) => warn!("cannot arm the device timer: {e}"),
        }
    }

    /// Publishes this pair's counters and its shard's (`stack`), and on pair 0 the guest's
    /// addresses when the link changed; with impairments on, their state.
    fn publish(&mut self, stack: &Stack<HostSockets>) {
        let dev = self.dev;
        if let Some(slots) = dev.shared.pairs.get() {
            let mut slot = lock(&slots[self.p]);
            slot.queue.clone_from(&self.pair.stats);
            slot.stack.clone_from(stack.stats());
            slot.rx_itr = self.pair.rx_mod.throttle_rate();
        }
        let link_changed = self.p == 0 && stack.link_generation() != self.pair.published_link;
        if !link_changed && self.common.is_none() {
            return;
        }
        let mut snap = lock(&dev.shared.snapshot);
        if link_changed {
            self.pair.published_link = stack.link_generation();
            snap.guest_mac = stack.guest_mac();
            snap.guest_ipv4 = stack.leases().iter().find(|l| l.bound).map(|l| l.addr);
            snap.guest_ipv6 = stack.guest_ipv6();
            snap.dhcpv6_leases.clear();
            snap.dhcpv6_leases
                .extend(stack.dhcpv6_leases().iter().map(|l| l.addr));
        }
        if let Some(common) = self.common.as_deref() {
            impair_state_into(common, self.now, &mut snap.impair, false);
        }
    }
}

/// The way from the guest into the stack: what crossed the link (after the impairments) is
/// captured as it arrives and handed to the shard its flow belongs to.
struct Ingress<'a, 'd> {
    dev: &'d NetDevice,
    p: usize,
    slot: &'a mut ShardSlot<'d>,
    touched: &'a mut u32,
    stats: &'a mut DeviceStats,
    /// Where a shard's inbox is emptied into (kept by the pair, so that nothing is allocated
    /// per drain).
    scratch: &'a mut VecDeque<Mailed>,
}

impl Ingress<'_, '_> {
    fn deliver(
        &mut self,
        capture: Option<&mut Capture>,
        now: Instant,
        frame: &[u8],
        meta: FrameMeta,
    ) {
        if let Some(c) = capture {
            record_outbound(c, self.stats, frame, meta);
        }
        let q = self.dev.shard_map.shard_of(frame);
        if q != self.p {
            self.stats.tx_cross_shard += 1;
            // Another pair's shard: rather than wait while its worker has it, leave the frame
            // in its inbox (its worker, or whoever takes it next, processes it first).
            if let Some(stack) = self.slot.try_get(self.dev, q, now, self.scratch) {
                *self.touched |= 1 << q;
                stack.process_frame_meta(now, frame, meta);
                return;
            }
            if self.dev.post_to_inbox(q, frame, meta) {
                self.stats.tx_cross_shard_queued += 1;
                return;
            }
        }
        *self.touched |= 1 << q;
        self.slot
            .get(self.dev, q, now, self.stats, self.scratch)
            .process_frame_meta(now, frame, meta);
    }
}

/// Records a frame from the guest in the capture.
fn record_outbound(capture: &mut Capture, stats: &mut DeviceStats, frame: &[u8], meta: FrameMeta) {
    if capture.record(CaptureDirection::Outbound, frame, meta.checksum) {
        stats.capture_frames += 1;
    } else {
        stats.capture_drops += 1;
    }
}

/// Carries out the impairments' verdict on the guest's frame: copies that go now reach the
/// stack at once (a corrupted one through the scratch buffer), delayed ones wait on the pair's
/// line.
fn impair_from_guest(
    common: &mut Common,
    ingress: &mut Ingress,
    p: usize,
    now: Instant,
    frame: &[u8],
    meta: FrameMeta,
) {
    let Common {
        impair,
        lines,
        impair_scratch,
        capture,
        ..
    } = common;
    let Some(verdict) = impair.decide(LinkDirection::FromGuest, frame, now) else {
        ingress.deliver(capture.as_mut(), now, frame, meta);
        return;
    };
    let stats = &mut *ingress.stats;
    stats.tx_impair_duplicated += u64::from(verdict.duplicated);
    stats.tx_loss_injected += u64::from(verdict.lost);
    if carries_tcp_data(frame) {
        stats.tx_loss_injected_tcp_data += u64::from(verdict.lost);
    }
    stats.tx_impair_queue_drops += u64::from(verdict.limited);
    const DIR: LinkDirection = LinkDirection::FromGuest;
    for copy in verdict.copies.into_iter().flatten() {
        let corrupted = copy.corrupt.is_some();
        let meta_out = copy_meta(meta, corrupted);
        let mut class = None;
        if copy.release > now {
            let held = lines.hold(p, DIR, copy.release, frame.len(), meta_out, |b| {
                class = write_copy(b, frame, meta, copy.corrupt, &verdict.view)
            });
            if held {
                ingress.stats.tx_impair_delayed += 1;
            } else {
                ingress.stats.tx_impair_queue_drops += 1;
                impair.count_line_drop(verdict.rule);
            }
        } else if corrupted {
            class = write_copy(impair_scratch, frame, meta, copy.corrupt, &verdict.view);
            ingress.deliver(capture.as_mut(), now, impair_scratch, meta_out);
        } else {
            ingress.deliver(capture.as_mut(), now, frame, meta);
        }
        if let Some(c) = class {
            ingress.stats.tx_impair_corrupted += 1;
            impair.count_corruption(verdict.rule, c);
        }
    }
}

/// Which way a chain's buffers go, from the device's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// TX: every descriptor must be readable (not VIRTQ_DESC_F_WRITE).
    DeviceReads,
    /// RX: every descriptor must be device-writable.
    DeviceWrites,
}

/// Walks a descriptor chain, checking each descriptor's direction and the chain's structure, and
/// hands each buffer to `visit`. The iterator of virtio-queue stops early, with the last descriptor
/// still pointing on, when a chain loops, runs past the queue size or has an unreadable indirect
/// table: that is a `Structure` fault, as is an empty chain.
fn walk_chain(
    chain: DescriptorChain<&GuestMemory>,
    direction: Direction,
    mut visit: impl FnMut(GuestAddress, usize) -> Result<(), ChainFault>,
) -> Result<(), ChainFault> {
    let mut descriptors = 0usize;
    let mut last_has_next = false;
    for desc in chain {
        descriptors += 1;
        last_has_next = desc.has_next();
        if desc.is_write_only() != (direction == Direction::DeviceWrites) {
            return Err(ChainFault::Direction);
        }
        visit(desc.addr(), desc.len() as usize)?;
    }
    if descriptors == 0 || last_has_next {
        return Err(ChainFault::Structure);
    }
    Ok(())
}

/// Copies a TX chain into `tx_buf`; returns the length of header plus frame, and what the header
/// asks of the device.
fn read_tx_chain(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    tx_buf: &mut [u8],
    negotiated: &Negotiated,
) -> Result<(usize, FrameMeta), ChainFault> {
    let mut len = 0usize;
    walk_chain(chain, Direction::DeviceReads, |addr, dlen| {
        let end = len.checked_add(dlen).ok_or(ChainFault::Oversize)?;
        if end > tx_buf.len() {
            return Err(ChainFault::Oversize);
        }
        mem.read_slice(&mut tx_buf[len..end], addr)
            .map_err(|_| ChainFault::Memory)?;
        len = end;
        Ok(())
    })?;
    let hdr = negotiated.header_len;
    if len < hdr + netstack::wire::ethernet::HEADER_LEN {
        return Err(ChainFault::Runt);
    }
    let meta = TxHeader::parse(&tx_buf[..hdr])
        .meta(negotiated, len - hdr)
        .map_err(|_| ChainFault::Offload)?;
    Ok((len, meta))
}

/// Fuzzing entry: `data` is a guest's memory image (rings, descriptors, indirect tables,
/// buffers) and a few settings; the device walks its TX chains and writes frames into its RX
/// chains as it would for a guest. Invariants: no panic; every used element names a chain head
/// inside the ring and never claims more bytes than were offered; the used index moves by
/// exactly the elements written.
#[doc(hidden)]
pub fn fuzz_rings(data: &[u8]) {
    const MEM: usize = 64 << 10;
    if data.len() < 8 {
        return;
    }
    let (settings, image) = data.split_at(8);
    let mut memory = vec![0u8; MEM];
    let n = image.len().min(MEM);
    memory[..n].copy_from_slice(&image[..n]);
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else {
        return;
    };
    if mem.write_slice(&memory, GuestAddress(0)).is_err() {
        return;
    }
    // Queue sizes are powers of two up to 256; the rings sit at fixed places, descriptors first.
    let size = 1u16 << (settings[0] % 9);
    let negotiated = Negotiated {
        header_len: if settings[1] & 1 != 0 {
            virtio_net::HEADER_LEN_V1
        } else {
            virtio_net::HEADER_LEN_LEGACY
        },
        mergeable_rx: settings[1] & 2 != 0,
        event_idx: settings[1] & 4 != 0,
        csum: settings[1] & 8 != 0,
        host_tso4: settings[1] & 16 != 0,
        host_tso6: settings[1] & 32 != 0,
        host_ecn: settings[1] & 64 != 0,
        host_uso: settings[1] & 128 != 0,
        ..Negotiated::default()
    };
    let atomic = GuestMemoryAtomic::new(mem);
    let make = |desc: u64, avail: u64, used: u64| -> Option<Vring> {
        let v = Vring::new(atomic.clone(), 256).ok()?;
        v.set_queue_size(size);
        v.set_queue_info(desc, avail, used).ok()?;
        v.set_queue_event_idx(negotiated.event_idx);
        v.set_queue_ready(true);
        v.set_enabled(true);
        Some(v)
    };
    let (Some(tx), Some(rx)) = (make(0x0000, 0x1000, 0x1800), make(0x2000, 0x3000, 0x3800)) else {
        return;
    };
    let guard = atomic.memory();
    let mem: &GuestMemory = &guard;
    let mut tx_buf = vec![0u8; MAX_FRAME_LEN + virtio_net::HEADER_LEN_V1];
    for _ in 0..usize::from(size) + 1 {
        let chain = tx.get_mut().get_queue_mut().pop_descriptor_chain(mem);
        let Some(chain) = chain else { break };
        let head = chain.head_index();
        // As the device does: a head outside the ring is skipped, never returned.
        if !head_in_ring(&tx, head) {
            continue;
        }
        if let Ok((len, _)) = read_tx_chain(mem, chain, &mut tx_buf, &negotiated) {
            assert!(len <= tx_buf.len());
        }
        let _ = tx.add_used(head, 0);
    }
    let mut stats = DeviceStats::default();
    let (mut segments, mut chains, mut used) = (Vec::new(), Vec::new(), Vec::new());
    let mut used_added = 0u16;
    let frame_len = 14 + usize::from(u16::from_le_bytes([settings[2], settings[3]])) % 9000;
    let frame = vec![0x5a; frame_len];
    let start = rx.get_ref().get_queue().next_used();
    for _ in 0..usize::from(settings[4] % 8) + 1 {
        let mut w = RxWriter {
            mem,
            vring: &rx,
            negotiated,
            stats: &mut stats,
            segments: &mut segments,
            chains: &mut chains,
            used: &mut used,
            used_added: &mut used_added,
            last_fault: None,
            starved_at: None,
        };
        if !w.write_frame(FrameParts::whole(&frame), FrameMeta::NONE) {
            break;
        }
    }
    let end = rx.get_ref().get_queue().next_used();
    assert_eq!(end.wrapping_sub(start), used_added);
    // Every element published: a head inside the ring, no more bytes than a frame and header.
    for i in 0..used_added {
        let slot = u64::from(start.wrapping_add(i) % size);
        let mut elem = [0u8; 8];
        if mem
            .read_slice(&mut elem, GuestAddress(0x3800 + 4 + 8 * slot))
            .is_ok()
        {
            let id = u32::from_le_bytes(elem[..4].try_into().expect("4"));
            let len = u32::from_le_bytes(elem[4..].try_into().expect("4"));
            assert!(id < u32::from(size), "used id {id} outside the ring");
            assert!(len as usize <= frame_len + virtio_net::HEADER_LEN_V1);
        }
    }
}

/// Raises the queue's interrupt (writes the call eventfd, a KVM irqfd under QEMU).
fn raise(vring: &Vring) {
    if let Err(e) = vring.signal_used_queue() {
        debug!("signal used queue: {e}");
    }
}

/// Whether a chain head the guest put in the avail ring names a descriptor of the ring. One that
/// does not (a hostile or broken guest) has nothing to read, and cannot be returned: a used
/// element naming it would make the guest's driver declare the ring broken (Linux's BAD_RING).
fn head_in_ring(vring: &Vring, head: u16) -> bool {
    head < vring.get_ref().get_queue().size()
}

/// Whether the ring is set up and enabled (a pair the guest switched off is left alone).
fn queue_ready(vring: &Vring) -> bool {
    let state = vring.get_ref();
    state.get_queue().ready() && state.is_enabled()
}

/// The way to the guest: frames written into its RX buffers, captured as they cross.
struct Egress<'a, 'w> {
    writer: RxWriter<'w>,
    capture: Option<&'a mut Capture>,
    /// Frames written (or dropped for good as too big for the guest's buffers).
    written: usize,
    /// The guest had no buffers for a frame.
    ring_full: bool,
}

impl Egress<'_, '_> {
    /// Writes one frame; false when the guest has no buffers for it.
    fn write(&mut self, frame: FrameParts<'_>, meta: FrameMeta) -> bool {
        if !self.writer.write_frame(frame, meta) {
            self.ring_full = true;
            return false;
        }
        self.written += 1;
        if let Some(c) = self.capture.as_mut() {
            if c.record_parts(CaptureDirection::Inbound, &frame.pieces(), meta.checksum) {
                self.writer.stats.capture_frames += 1;
            } else {
                self.writer.stats.capture_drops += 1;
            }
        }
        true
    }
}

/// The metadata a copy travels with: a corrupted one has its checksum completed (see
/// [`write_copy`]), so the receiver verifies it. A guest's segmentation frame keeps its GSO
/// request with a checksum over the whole frame, which the stack verifies whole; one to the guest
/// is cut into segments instead (`segments_to_guest`).
fn copy_meta(meta: FrameMeta, corrupted: bool) -> FrameMeta {
    if corrupted {
        FrameMeta {
            checksum: None,
            ..meta
        }
    } else {
        meta
    }
}

/// Writes a copy of `frame` into `out`. With a flip, a partial checksum is completed first (a
/// NIC computes it before the wire; netem does the same before it corrupts), so the receiver
/// verifies it, and then the bit is flipped. Returns where the flip landed.
fn write_copy(
    out: &mut Vec<u8>,
    frame: &[u8],
    meta: FrameMeta,
    flip: Option<(usize, u8)>,
    view: &FrameView,
) -> Option<Corruption> {
    out.clear();
    out.extend_from_slice(frame);
    let (at, mask) = flip?;
    if let Some(c) = meta.checksum {
        c.complete(out);
    }
    let class = view.classify_flip(out, at, mask);
    if let Some(b) = out.get_mut(at) {
        *b ^= mask;
    }
    Some(class)
}

/// Carries out the impairments' verdict on a frame leaving the stack for the guest. The frame
/// always leaves the stack's queue (its fate is decided once): copies that go now are written,
/// or wait on the line if the guest has no buffers; delayed copies wait on the line.
#[allow(clippy::too_many_arguments)]
fn impair_to_guest(
    impair: &mut Impairment,
    lines: &mut DelayLines,
    scratch: &mut Vec<u8>,
    egress: &mut Egress,
    p: usize,
    now: Instant,
    frame: &[u8],
    meta: FrameMeta,
) {
    const DIR: LinkDirection = LinkDirection::ToGuest;
    let verdict = match impair.decide(DIR, frame, now) {
        Some(v) if !v.untouched(now) => v,
        _ => {
            if egress.ring_full || !egress.write(FrameParts::whole(frame), meta) {
                let held = lines.hold(p, DIR, now, frame.len(), meta, |b| {
                    b.extend_from_slice(frame)
                });
                egress.writer.stats.rx_impair_queue_drops += u64::from(!held);
            }
            return;
        }
    };
    let stats = &mut *egress.writer.stats;
    stats.rx_impair_duplicated += u64::from(verdict.duplicated);
    stats.rx_loss_injected += u64::from(verdict.lost);
    if carries_tcp_data(frame) {
        stats.rx_loss_injected_tcp_data += u64::from(verdict.lost);
    }
    stats.rx_impair_queue_drops += u64::from(verdict.limited);
    for copy in verdict.copies.into_iter().flatten() {
        // A corrupted TCP segmentation frame goes as the segments it stands for, the bit flipped
        // in one of them (see crate::impair::segment).
        if let (Some(flip), Some(gso), Some(l4)) = (copy.corrupt, meta.gso, verdict.view.l4) {
            if segment::count(frame, gso) > 0 {
                let target = SegmentTarget {
                    gso,
                    l3: verdict.view.l3,
                    l4,
                    flip,
                    release: copy.release,
                    rule: verdict.rule,
                };
                let class =
                    segments_to_guest(impair, lines, scratch, egress, p, now, frame, target);
                egress.writer.stats.rx_impair_corrupted += 1;
                impair.count_corruption(verdict.rule, class);
                continue;
            }
        }
        let corrupted = copy.corrupt.is_some();
        let meta_out = copy_meta(meta, corrupted);
        let mut class = None;
        let mut hold_at = (copy.release > now).then_some(copy.release);
        if hold_at.is_none() && !egress.ring_full {
            let sent = if corrupted {
                class = write_copy(scratch, frame, meta, copy.corrupt, &verdict.view);
                egress.write(FrameParts::whole(scratch), meta_out)
            } else {
                egress.write(FrameParts::whole(frame), meta)
            };
            if !sent {
                hold_at = Some(now);
            }
        } else if hold_at.is_none() {
            hold_at = Some(now);
        }
        if let Some(at) = hold_at {
            let mut c = None;
            let held = lines.hold(p, DIR, at, frame.len(), meta_out, |b| {
                c = write_copy(b, frame, meta, copy.corrupt, &verdict.view)
            });
            class = class.or(c);
            count_held_to_guest(impair, egress, verdict.rule, held, at > now);
        }
        if let Some(c) = class {
            egress.writer.stats.rx_impair_corrupted += 1;
            impair.count_corruption(verdict.rule, c);
        }
    }
}

/// Counts a copy to the guest put on the delay line: dropped when the line was full, delayed
/// when it waits for a later time (not just for the guest's buffers).
fn count_held_to_guest(
    impair: &mut Impairment,
    egress: &mut Egress,
    rule: usize,
    held: bool,
    later: bool,
) {
    let stats = &mut *egress.writer.stats;
    if !held {
        stats.rx_impair_queue_drops += 1;
        impair.count_line_drop(rule);
    } else if later {
        stats.rx_impair_delayed += 1;
    }
}

/// A corrupted segmentation frame to cut into segments: its segmentation, where its IP and TCP
/// headers start, the flip, when it crosses, and the rule that took it.
struct SegmentTarget {
    gso: netstack::offload::Gso,
    l3: usize,
    l4: usize,
    flip: (usize, u8),
    release: Instant,
    rule: usize,
}

/// Sends the segments a corrupted segmentation frame stands for, one of them with the flipped
/// bit, each written now or held like any copy; returns where the flip landed.
#[allow(clippy::too_many_arguments)]
fn segments_to_guest(
    impair: &mut Impairment,
    lines: &mut DelayLines,
    scratch: &mut Vec<u8>,
    egress: &mut Egress,
    p: usize,
    now: Instant,
    frame: &[u8],
    t: SegmentTarget,
) -> Corruption {
    const DIR: LinkDirection = LinkDirection::ToGuest;
    let (flip_in, at) = segment::locate(t.flip.0, t.gso);
    let mut class = Corruption::Other;
    for k in 0..segment::count(frame, t.gso) {
        if !segment::write(frame, t.gso, t.l3, t.l4, k, scratch) {
            break;
        }
        if k == flip_in {
            class = FrameView::parse(scratch).classify_flip(scratch, at, t.flip.1);
            if let Some(b) = scratch.get_mut(at) {
                *b ^= t.flip.1;
            }
        }
        let hold_at = if t.release > now {
            Some(t.release)
        } else if egress.ring_full || !egress.write(FrameParts::whole(scratch), FrameMeta::NONE) {
            Some(now)
        } else {
            None
        };
        if let Some(when) = hold_at {
            let held = lines.hold(p, DIR, when, scratch.len(), FrameMeta::NONE, |b| {
                b.extend_from_slice(scratch)
            });
            count_held_to_guest(impair, egress, t.rule, held, when > now);
        }
    }
    class
}

/// Writes one frame into as many RX chains as it needs.
struct RxWriter<'a> {
    mem: &'a GuestMemory,
    vring: &'a Vring,
    negotiated: Negotiated,
    stats: &'a mut DeviceStats,
    segments: &'a mut Vec<(GuestAddress, u32)>,
    chains: &'a mut Vec<RxChain>,
    /// Used elements (head, bytes written) of the frame being written, published together.
    used: &'a mut Vec<(u16, u32)>,
    /// Counts what [`RxWriter::publish`] put on the used ring ([`Pair::rx_used_added`]).
    used_added: &'a mut u16,
    /// The last bad chain met, for the (rate-limited) log; all are counted.
    last_fault: Option<(u16, ChainFault)>,
    /// The avail index up to which the guest had posted buffers when a frame did not fit them.
    starved_at: Option<u16>,
}

impl RxWriter<'_> {
    /// Collects the writable segments of one chain into `segments`.
    fn gather(&mut self, chain: DescriptorChain<&GuestMemory>) -> Result<usize, ChainFault> {
        let start = self.segments.len();
        let mut capacity = 0usize;
        let (mem, segments) = (self.mem, &mut *self.segments);
        let walked = walk_chain(chain, Direction::DeviceWrites, |addr, len| {
            if !vm_memory::GuestMemoryBackend::check_range(mem, addr, len) {
                return Err(ChainFault::Memory);
            }
            if len > 0 {
                segments.push((addr, len as u32));
                capacity += len;
            }
            Ok(())
        });
        let result = match walked {
            Ok(()) if capacity < self.negotiated.header_len => Err(ChainFault::TooSmall),
            Ok(()) => Ok(capacity),
            Err(fault) => Err(fault),
        };
        if result.is_err() {
            self.segments.truncate(start);
        }
        result
    }

    /// Returns true when the frame was consumed (delivered or dropped for good), false when the guest
    /// is out of buffers and the frame should wait. Chains are only committed (returned to the guest,
    /// bad ones counted) when the frame is; an attempt that runs out of buffers is rewound.
    fn write_frame(&mut self, frame: FrameParts<'_>, meta: FrameMeta) -> bool {
        let hdr_len = self.negotiated.header_len;
        let total = hdr_len + frame.len();
        self.segments.clear();
        self.chains.clear();
        let (start_avail, ring_size) = {
            let state = self.vring.get_ref();
            (
                state.get_queue().next_avail(),
                usize::from(state.get_queue().size()),
            )
        };
        let mut capacity = 0usize;
        let mut good = 0usize;
        // Gather chains until the frame fits: one chain without MRG_RXBUF, as many as needed with it.
        while capacity < total && (self.negotiated.mergeable_rx || good == 0) {
            let chain = self
                .vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(self.mem);
            let Some(chain) = chain else {
                if self.chains.len() >= ring_size {
                    // The whole ring cannot hold this frame: waiting would never end.
                    break;
                }
                // Out of buffers: put the chains back for the next attempt, noting how far the
                // guest had posted (a retry before it posts more would walk the same chains).
                self.starved_at = Some(self.vring.get_ref().get_queue().next_avail());
                self.rewind(start_avail);
                return false;
            };
            let head = chain.head_index();
            let first = self.segments.len();
            match self.gather(chain) {
                Ok(cap) => {
                    self.chains.push(RxChain::Good {
                        head,
                        segments: (first, self.segments.len()),
                    });
                    capacity += cap;
                    good += 1;
                }
                Err(fault) => self.chains.push(RxChain::Bad { head, fault }),
            }
        }
        if capacity < total {
            // The frame does not fit the guest's buffers: drop it, keep the good chains for the next
            // frame, and return the bad chains that came before them so they cannot wedge RX.
            self.stats.rx_drop_too_big += 1;
            self.rewind(start_avail);
            self.return_bad_prefix();
            return true;
        }

        let mut hdr = [0u8; virtio_net::HEADER_LEN_V1];
        virtio_net::write_rx_header(&mut hdr[..hdr_len], good as u16, meta);
        // The virtio-net header, then the frame's pieces, gathered into the chains' segments.
        let [head, first, second] = frame.pieces();
        let mut pieces = [&hdr[..hdr_len], head, first, second];
        let mut piece = 0usize;
        let chains = std::mem::take(self.chains);
        for c in &chains {
            match *c {
                RxChain::Bad { head, fault } => {
                    self.fault(head, fault);
                    if head_in_ring(self.vring, head) {
                        self.used.push((head, 0));
                    }
                }
                RxChain::Good {
                    head,
                    segments: (a, b),
                } => {
                    let mut written = 0u32;
                    for &(addr, len) in &self.segments[a..b] {
                        let mut off = 0usize;
                        let len = len as usize;
                        while off < len {
                            while piece < pieces.len() && pieces[piece].is_empty() {
                                piece += 1;
                            }
                            let Some(src) = pieces.get_mut(piece) else {
                                break;
                            };
                            let n = src.len().min(len - off);
                            // The range was checked in `gather`; a failure here means the guest
                            // unmapped memory under us, and the frame is cut short.
                            let _ = self
                                .mem
                                .write_slice(&src[..n], addr.unchecked_add(off as u64));
                            *src = &src[n..];
                            off += n;
                        }
                        written += off as u32;
                    }
                    self.used.push((head, written));
                    self.stats.rx_chains += 1;
                }
            }
        }
        self.publish();
        *self.chains = chains;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += frame.len() as u64;
        self.stats.rx_csum_partial += u64::from(meta.checksum.is_some());
        self.stats.rx_gso_frames += u64::from(meta.gso.is_some());
        true
    }

    fn rewind(&self, next_avail: u16) {
        self.vring
            .get_mut()
            .get_queue_mut()
            .set_next_avail(next_avail);
    }

    fn fault(&mut self, head: u16, fault: ChainFault) {
        self.stats.count_fault(Queue::Rx, fault);
        self.last_fault = Some((head, fault));
    }

    /// After a rewind, returns the bad chains that were gathered before the first good one so that
    /// a hostile chain at the head of the ring cannot wedge RX.
    fn return_bad_prefix(&mut self) {
        for i in 0..self.chains.len() {
            let RxChain::Bad { head, fault } = self.chains[i] else {
                break;
            };
            // Re-pop to advance past it; the ring still holds the same chain at this position.
            let _ = self
                .vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(self.mem);
            self.fault(head, fault);
            if head_in_ring(self.vring, head) {
                self.used.push((head, 0));
            }
        }
        self.publish();
    }

    /// Puts the used elements gathered in `used` on the used ring and makes them visible with
    /// one store of the used index. A frame over several mergeable buffers must appear whole: a
    /// driver that saw its first buffer (with num_buffers = N) before the others were published
    /// finds "buffers missing", counts rx_length_errors and drops it (Linux's receive_mergeable),
    /// which TCP then repairs as loss. virtio-queue's add_used publishes the index for every
    /// element, so RX writes the ring itself (VIRTIO 1.2 §2.7.8: the device writes the used
    /// elements, then the index).
    fn publish(&mut self) {
        if self.used.is_empty() {
            return;
        }
        let mut state = self.vring.get_mut();
        let queue = state.get_queue_mut();
        let size = queue.size();
        let ring = GuestAddress(queue.used_ring());
        let start = queue.next_used();
        if size == 0 {
            self.used.clear();
            return;
        }
        for (i, &(head, len)) in self.used.iter().enumerate() {
            let slot = start.wrapping_add(i as u16) % size;
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            // Past the ring's own checks (set up by QEMU, within guest memory); a failure means
            // the guest unmapped its ring, and the queue is lost either way.
            let _ = self
                .mem
                .write_slice(&elem, ring.unchecked_add(4 + 8 * u64::from(slot)));
        }
        let next = start.wrapping_add(self.used.len() as u16);
        // Release: the frame's bytes and the elements are visible before the index that
        // announces them.
        let _ = self.mem.store(
            u16::to_le(next),
            ring.unchecked_add(2),
            std::sync::atomic::Ordering::Release,
        );
        queue.set_next_used(next);
        *self.used_added = self.used_added.wrapping_add(self.used.len() as u16);
        self.used.clear();
    }
}

impl VhostUserBackend for NetDevice {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        2 * self.pairs.len()
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        virtio_net::offered_features(self.offloads, self.pairs.len())
    }

    fn acked_features(&self, features: u64) {
        // A (re)connected frontend: a new link for the stack, fresh interrupt state. Locks are
        // taken one at a time (a pair, or a shard), never nested.
        let negotiated = Negotiated::from_features(features);
        let coalesce = *lock(&self.coalesce);
        for pair in &self.pairs {
            let mut pair = lock(pair);
            pair.moderate_as(coalesce);
            let event_idx = pair.negotiated.event_idx;
            pair.negotiated = Negotiated {
                event_idx,
                ..negotiated
            };
        }
        lock(&self.shards[0]).link_up();
        for shard in &self.shards {
            lock(shard).set_guest_offloads(negotiated.guest);
        }
        lock(&self.shared.snapshot).acked_features = features;
        debug!("features acked: {features:#x} ({negotiated:?})");
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        virtio_net::offered_protocol_features()
    }

    fn set_event_idx(&self, enabled: bool) {
        for pair in &self.pairs {
            lock(pair).negotiated.event_idx = enabled;
        }
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        for pair in &self.pairs {
            lock(pair).mem = mem.clone();
        }
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        // One worker per pair: its RX and TX rings are the worker's rings 0 and 1.
        (0..self.pairs.len()).map(|p| 0b11u64 << (2 * p)).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        // Without an exit event the worker never stops and dropping the daemon hangs.
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        // Worker `thread_id` serves pair `thread_id` and shard `thread_id`: its rings are
        // `vrings[0]` (RX) and `[1]` (TX).
        let p = thread_id.min(self.pairs.len() - 1);
        let now = self.now();
        let mut w = Worker {
            dev: self,
            p,
            now,
            pair: lock(&self.pairs[p]),
            common: self
                .engaged
                .load(Ordering::Acquire)
                .then(|| lock(&self.common)),
            touched: 0,
        };
        w.pair.stats.worker_events += 1;
        w.sync_coalesce();
        w.sync_active_pairs();
        let (rx, tx) = (&vrings[0], &vrings[1]);
        let mut tx_used = false;
        let before = {
            let s = &w.pair.stats;
            (
                s.tx_frames,
                s.tx_bytes,
                s.rx_frames,
                s.rx_bytes,
                s.rx_ring_full,
            )
        };
        match device_event {
            RX_QUEUE_EVENT => {
                w.pair.stats.rx_kicks += 1;
                self.fds[p].rx_blocked.store(false, Ordering::Release);
                // The guest posted buffers; it need not tell us again until we run out.
                if queue_ready(rx) {
                    if let Err(e) = rx.disable_notification() {
                        w.queue_error(Queue::Rx, e);
                    }
                }
            }
            TX_QUEUE_EVENT => {
                w.pair.stats.tx_kicks += 1;
                tx_used = w.process_tx(tx);
            }
            TIMER_EVENT => {
                w.pair.timer.acknowledge();
                w.pair.timer_deadline = None;
                if p == 0 {
                    if let Some(c) = w.common.as_deref_mut() {
                        if c.impair.run_schedule(now) > 0 {
                            impair_rules_changed(c);
                        }
                    }
                }
                lock_shard(self, p, &mut w.pair.stats).poll(now);
                w.touched |= 1 << p;
                if w.pair.tx_pending {
                    tx_used = w.process_tx(tx);
                }
            }
            WAKE_EVENT => {
                let _ = self.fds[p].wake.read();
                self.fds[p].woken.store(false, Ordering::Release);
            }
            CONTROL_EVENT => w.run_commands(),
            HOST_EVENT => {
                let mut shard = lock_shard(self, p, &mut w.pair.stats);
                let pair = &mut *w.pair;
                let n = shard.host().ready(&mut pair.host_events);
                for i in 0..n {
                    let sock = netstack::SocketId(pair.host_events[i].data() as u32);
                    shard.host_ready(now, sock);
                }
                w.touched |= 1 << p;
            }
            other => debug!("unexpected device event {other}"),
        }
        w.release_from_guest();
        // Datagrams another shard reassembled for this one, guest frames other workers left
        // while it was busy.
        let mail = self.shard_map.has_mail(p);
        if mail || self.inbox_waiting[p].load(Ordering::Acquire) {
            let pair = &mut *w.pair;
            let mut shard = lock_shard(self, p, &mut pair.stats);
            self.drain_inbox(p, &mut shard, now, &mut pair.inbox_scratch);
            if mail {
                shard.take_mail(now);
            }
            w.touched |= 1 << p;
        }
        let pending = w.flush_touched();
        let rx_used = w.process_rx(rx);
        // Used chains count as at least one frame each batch (a bad chain is returned too).
        let pair = &mut *w.pair;
        if tx_used {
            let frames = (pair.stats.tx_frames - before.0).max(1);
            pair.tx_mod
                .used(now, frames, pair.stats.tx_bytes - before.1);
        }
        if rx_used {
            let frames = (pair.stats.rx_frames - before.2).max(1);
            pair.rx_mod
                .used(now, frames, pair.stats.rx_bytes - before.3);
        }
        if pair.stats.rx_ring_full != before.4 {
            // The guest has no buffers left for what waits: it needs its interrupt to make room.
            pair.rx_mod.starved();
        }
        // Interrupts go out after the counters are published, so that whatever the guest sees after
        // an interrupt is already in the stats.
        let tx_irq = w.moderate(tx, Queue::Tx, tx_used);
        let rx_irq = w.moderate(rx, Queue::Rx, rx_used);
        {
            let shard = lock_shard(self, p, &mut w.pair.stats);
            let due = shard.poll_at();
            w.publish(&shard);
            drop(shard);
            w.arm_timer(due);
        }
        // Whatever this event changed (rules, a schedule, the lines, a capture through a command)
        // decides whether the next events take the shared part.
        if let Some(c) = w.common.as_deref() {
            self.engaged.store(c.engaged(), Ordering::Release);
        }
        let touched = w.touched;
        drop(w);
        // Other workers with work from this event: a shard this worker fed (its timers moved,
        // its counters changed), frames for a pair to deliver, mail to take.
        for q in 0..self.pairs.len() {
            if q == p {
                continue;
            }
            let fed = touched & (1 << q) != 0;
            let mail = self.shard_map.has_mail(q) || self.inbox_waiting[q].load(Ordering::Acquire);
            let deliver = (0..self.shards.len())
                .any(|s| pending & (1 << s) != 0 && self.delivering_pair(s) == q)
                && !self.fds[q].rx_blocked.load(Ordering::Acquire);
            if fed || mail || deliver {
                self.wake(q);
            }
        }
        // RX first: a reply the guest waits for (an echo, a response) is handled before the
        // completion of the request that caused it, as passt orders them.
        if rx_irq {
            raise(rx);
        }
        if tx_irq {
            raise(tx);
        }
        Ok(())
    }
}
