//! What the control side and the vring worker share: the [`Command`]s the API sends the worker,
//! the [`Snapshot`] the worker publishes once per batch (counters, addresses, impairments), and
//! [`Shared`], which holds both. Neither side imports the other: the API (`api`), the stats
//! (`stats`) and the relay reach the device only through this module.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use netstack::wire::{EthernetAddress, Ipv4Address};

use crate::impair::LinkDirection;
use crate::moderation::Coalesce;

/// The largest frame virtgate accepts from the guest: a 64 KiB IP packet and its Ethernet header.
pub const MAX_FRAME_LEN: usize = 65535 + 14;

/// What the API asks of the vring worker.
#[derive(Debug)]
pub enum Command {
    GetCoalesce(Sender<Coalesce>),
    SetCoalesce(Coalesce, Sender<Coalesce>),
    CaptureStart(PathBuf, Sender<Result<(), String>>),
    CaptureStop(Sender<bool>),
    ListForwards(Sender<Vec<netstack::Forward>>),
    AddForward(netstack::Forward, Sender<Result<(), String>>),
    RemoveForward(netstack::Forward, Sender<bool>),
    GetPathMtus(Sender<Vec<netstack::pmtu::PathMtu>>),
    /// The querier's settings and the guest's memberships.
    Multicast(Sender<MulticastState>),
    SetPathMtus(Vec<netstack::pmtu::PathMtu>, Sender<Result<(), String>>),
    GetTcpOptions(Sender<netstack::TcpOptions>),
    /// The TCP options of connections opened from now on; answers them.
    SetTcpOptions(netstack::TcpOptions, Sender<netstack::TcpOptions>),
    /// Frames for the guest's RX path, exactly as given; answers how many were queued.
    Inject(Vec<Vec<u8>>, Sender<usize>),
    /// The impairments in force, their counters and the pending schedule.
    GetImpair(Sender<ImpairState>),
    /// Changes the impairments; answers the new state.
    SetImpair(ImpairChange, Sender<ImpairState>),
    /// A probe by name with its parameters; answers how many frames were built and queued.
    Probe(
        String,
        BTreeMap<String, String>,
        Sender<Result<(usize, usize), String>>,
    ),
}

/// A change of the impairments: new rules now (cancelling a pending schedule), a new seed, a
/// schedule of (milliseconds from now, rules or None to restore).
#[derive(Debug, Default)]
pub struct ImpairChange {
    pub rules: Option<Vec<crate::impair::RuleSpec>>,
    pub seed: Option<u64>,
    #[allow(clippy::type_complexity)]
    pub schedule: Option<Vec<(u64, Option<Vec<crate::impair::RuleSpec>>)>>,
}

/// What the worker reports of the multicast querier (`GET /multicast`).
#[derive(Debug)]
pub struct MulticastState {
    pub querier: bool,
    pub query_interval_s: u64,
    pub ipv4: Vec<netstack::multicast::Membership>,
    pub ipv6: Vec<netstack::multicast::Membership>,
    /// The stack's clock when this was taken (memberships expire against it).
    pub now: netstack::Instant,
}

netstack::counters! {
    /// Per-queue-pair device counters, like `ethtool -S`.
    pub struct DeviceStats {
        /// Frames written into the guest's RX buffers.
        rx_frames,
        /// Bytes of those frames (without the virtio-net header).
        rx_bytes,
        /// Descriptor chains consumed on RX (more than frames with mergeable buffers).
        rx_chains,
        /// Guest kicks on the RX queue.
        rx_kicks,
        /// Events this pair's worker handled, each one batch (guest kicks, its timer, its
        /// shard's host sockets, wake-ups by other workers, the control API): frames per event
        /// is the batch size.
        worker_events,
        /// Interrupts raised on the RX queue.
        rx_interrupts,
        /// RX interrupts the guest did not want (EVENT_IDX's used_event, or NO_INTERRUPT).
        rx_interrupts_suppressed,
        /// Batches of used RX buffers whose interrupt moderation held back (`--rx-usecs`...).
        rx_interrupts_moderated,
        /// Batches that stopped because the guest had no RX buffers.
        rx_ring_full,
        /// RX interrupts raised before moderation's time because the guest had no buffers left
        /// (as an e1000's RXDMT0 cause): with moderation on, a sign the guest is ring-bound.
        rx_interrupts_starved,
        /// Frames too large for a single RX chain without MRG_RXBUF.
        rx_drop_too_big,
        /// RX chains with a read-only descriptor.
        rx_bad_desc_direction,
        /// RX chains pointing outside guest memory.
        rx_bad_desc_memory,
        /// RX chains that loop, run past the queue, or have an unreadable indirect table.
        rx_bad_chain,
        /// RX chains too small to hold a virtio-net header.
        rx_bad_chain_too_small,
        /// Frames taken from the guest's TX queue.
        tx_frames,
        /// Bytes of those frames (without the virtio-net header).
        tx_bytes,
        /// Guest kicks on the TX queue.
        tx_kicks,
        /// Interrupts raised on the TX queue (used chains returned).
        tx_interrupts,
        /// TX interrupts the guest did not want.
        tx_interrupts_suppressed,
        /// Batches of used TX chains whose interrupt moderation held back (`--tx-usecs`...).
        tx_interrupts_moderated,
        /// TX chains with a write-only descriptor.
        tx_bad_desc_direction,
        /// TX chains pointing outside guest memory.
        tx_bad_desc_memory,
        /// TX chains that loop, run past the queue, or have an unreadable indirect table.
        tx_bad_chain,
        /// TX frames shorter than the virtio-net header plus an Ethernet header.
        tx_drop_runt,
        /// TX frames longer than MAX_FRAME_LEN.
        tx_drop_oversize,
        /// TX frames whose virtio-net header asks for an offload that was not negotiated, or
        /// describes one that does not fit the frame.
        tx_drop_offload,
        /// TX frames whose TCP/UDP checksum the guest left to us (NEEDS_CSUM).
        tx_csum_partial,
        /// TX frames carrying several segments (the guest's TSO or USO).
        tx_gso_frames,
        /// RX frames whose checksum we left to the guest (GUEST_CSUM).
        rx_csum_partial,
        /// RX frames carrying several segments (the guest takes TSO).
        rx_gso_frames,
        /// Times the TX budget ran out and the batch continued later.
        tx_budget_exhausted,
        /// Guest frames from this pair's TX queue that belonged to another pair's stack shard
        /// (the guest sent a flow's segments from another CPU's queue).
        tx_cross_shard,
        /// Of `tx_cross_shard`, frames left in their shard's inbox because another worker had
        /// the shard (copied once, processed first by its next holder) instead of waiting.
        tx_cross_shard_queued,
        /// Times this pair's worker found a stack shard's lock taken and waited for it.
        shard_lock_waits,
        /// Time this pair's worker waited for stack shards' locks, in nanoseconds (seconds in `/metrics`).
        shard_lock_wait_ns,
        /// Errors reading ring indices (a guest that corrupts its rings).
        queue_errors,
        /// Frames handed to the packet capture (`--pcap`), both directions.
        capture_frames,
        /// Frames the capture could not take (its writer fell behind): missing from the file.
        capture_drops,
        /// Guest frames (copies) an impairment's loss model dropped (`--impair`, `--loss`).
        tx_loss_injected,
        /// Frames (copies) to the guest an impairment's loss model dropped.
        rx_loss_injected,
        /// Of `tx_loss_injected`, TCP segments that carried data (the guest must resend them).
        tx_loss_injected_tcp_data,
        /// Of `rx_loss_injected`, TCP segments that carried data (virtgate must resend them).
        rx_loss_injected_tcp_data,
        /// Guest frames an impairment duplicated.
        tx_impair_duplicated,
        /// Frames to the guest an impairment duplicated.
        rx_impair_duplicated,
        /// Guest frames (copies) an impairment corrupted (one bit flipped).
        tx_impair_corrupted,
        /// Frames (copies) to the guest an impairment corrupted.
        rx_impair_corrupted,
        /// Guest frames (copies) that waited on virtgate's side (delay, jitter, rate).
        tx_impair_delayed,
        /// Frames (copies) to the guest that waited on virtgate's side.
        rx_impair_delayed,
        /// Guest frames (copies) dropped by a full rate queue (`limit`) or a full delay line.
        tx_impair_queue_drops,
        /// Frames (copies) to the guest dropped by a full rate queue or a full delay line.
        rx_impair_queue_drops,
    }
}

/// What other threads may read about the device: published once per batch (see
/// [`Shared::snapshot`]).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The device counters summed over the queue pairs.
    pub device: DeviceStats,
    /// Each queue pair's counters (`ethtool -S`'s per-queue lines).
    pub queues: Vec<DeviceStats>,
    /// Queue pairs the guest uses (of those configured).
    pub active_queue_pairs: usize,
    /// Each queue pair's RX interrupt throttle in force, interrupts per second (0: none): the
    /// adaptive class's or `--itr`'s.
    pub rx_itr: Vec<u32>,
    pub stack: netstack::Stats,
    pub guest_mac: Option<EthernetAddress>,
    /// The address of the guest's first bound DHCP lease.
    pub guest_ipv4: Option<Ipv4Address>,
    /// The guest's global IPv6 address as last seen in its traffic.
    pub guest_ipv6: Option<netstack::wire::Ipv6Address>,
    /// Addresses bound by DHCPv6.
    pub dhcpv6_leases: Vec<netstack::wire::Ipv6Address>,
    pub acked_features: u64,
    /// The link impairments in force and their counters.
    pub impair: ImpairState,
}

/// The impairments as the API and the stats show them.
#[derive(Debug, Clone, Default)]
pub struct ImpairState {
    pub seed: u64,
    pub rules: Vec<ImpairRuleState>,
    /// Scheduled changes: milliseconds from now, and the rules (None: restore those in force
    /// when the schedule was set).
    pub schedule: Vec<(u64, Option<String>)>,
    /// Frames waiting on virtgate's side: [to the guest, from the guest].
    pub held: [usize; 2],
    /// Bytes of buffers the delay lines hold.
    pub held_bytes: usize,
    /// Changes with every new rule set (the snapshot rebuilds the texts only then).
    pub generation: u64,
}

#[derive(Debug, Clone)]
pub struct ImpairRuleState {
    pub direction: LinkDirection,
    /// The rule in its canonical text.
    pub rule: String,
    pub counters: crate::impair::RuleCounters,
}

/// What one queue pair's worker publishes after each batch: its queue's counters and its stack
/// shard's.
#[derive(Debug, Clone, Default)]
pub struct PairCounters {
    pub queue: DeviceStats,
    pub stack: netstack::Stats,
    /// The RX interrupt throttle in force, interrupts per second (0: none).
    pub rx_itr: u32,
}

/// State shared between the workers, the vhost-user relay and the main thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// The device-wide part of the snapshot (addresses, features, impairments); the counters are
    /// in `pairs`, summed by [`Shared::snapshot`].
    pub snapshot: Mutex<Snapshot>,
    /// Each pair's counters, in a slot of their own so that the workers publish without waiting
    /// for each other (set once by the device).
    pub pairs: std::sync::OnceLock<Vec<Mutex<PairCounters>>>,
    /// Requests of the control API for the vring worker (see [`crate::api`]).
    pub commands: Mutex<Vec<Command>>,
    /// The MTU QEMU announced with VHOST_USER_NET_SET_MTU (`host_mtu=` on the device), if any.
    pub host_mtu: Mutex<Option<u16>>,
    /// Rings QEMU enabled (VHOST_USER_SET_VRING_ENABLE, seen by the relay), one bit per ring: the
    /// guest's choice of queue pairs (`ethtool -L`).
    pub rings_enabled: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The queue pairs in use: the leading pairs whose two rings are enabled, at least one.
    pub fn active_queue_pairs(&self, configured: usize) -> usize {
        let mask = self
            .rings_enabled
            .load(std::sync::atomic::Ordering::Acquire);
        (0..configured)
            .take_while(|p| (mask >> (2 * p)) & 0b11 == 0b11)
            .count()
            .max(1)
    }

    /// The device as the workers last published it, the counters summed over the pairs.
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(pairs) = self.pairs.get() {
            snap.queues.clear();
            snap.rx_itr.clear();
            for slot in pairs {
                let part = slot.lock().unwrap_or_else(|e| e.into_inner());
                snap.device.add(&part.queue);
                snap.stack.add(&part.stack);
                snap.queues.push(part.queue.clone());
                snap.rx_itr.push(part.rx_itr);
            }
        }
        snap
    }
}
