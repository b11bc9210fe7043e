//! virtgate: a vhost-user-net backend whose NIC model and gateway stack live in-process.
//!
//! Module map:
//! - [`config`]: command-line arguments, validated into a [`config::Config`].
//! - [`server`]: the process lifecycle: the QEMU-facing socket, reconnects, signals, the stats file.
//! - [`relay`]: the vhost-user message pre-filter between QEMU and the vhost-user daemon
//!   (early SET_VRING_ENABLE, NET_SET_MTU, connection hand-over).
//! - [`device`]: the virtio-net device model: TX/RX queue processing and the stack's clock.
//! - [`inbox`]: a stack shard's inbox for guest frames that crossed from another pair's queue
//!   while the shard was busy.
//! - [`control`]: what the control side and the device share: the API's commands, the published
//!   [`control::Snapshot`] of counters and state, the device counters.
//! - [`virtio_net`]: feature negotiation and the virtio-net header.
//! - [`host`]: real non-blocking host sockets behind one epoll descriptor (the stack's `HostIo`).
//! - [`stats`]: the published counters and their JSON form.
//! - [`frontend`]: an in-process vhost-user frontend (memfd guest memory, split rings) that drives
//!   the device in tests and benchmarks without QEMU; `frontend::guest_tcp` is a scripted guest
//!   TCP endpoint for bulk transfers through the gateway.
//! - [`sys`]: small Linux wrappers (timerfd).
//! - [`moderation`]: interrupt moderation, a pure policy object (e1000's timers and throttle).
//! - [`impair`]: link impairments (netem's loss, duplication, corruption, delay, reordering and
//!   rate, per direction and flow), a pure policy object, and the delay lines frames wait in.
//! - [`capture`]: the pcapng packet capture and its writer thread.
//! - [`api`]: the control API (HTTP and JSON on a unix socket); [`ctl`]: `virtgate ctl`, its client.
//! - [`pcapfile`]: reading pcap and pcapng files for `inject`.
//! - [`sandbox`]: privileges, Landlock and the seccomp allow-list applied after start-up.
//! - [`notify`]: readiness for a service manager (systemd's `NOTIFY_SOCKET`).
//! - [`generate`]: `virtgate generate`: man pages and shell completions from the clap definitions.

pub mod api;
pub mod capture;
pub mod config;
pub mod control;
pub mod ctl;
pub mod device;
pub mod frontend;
pub mod generate;
pub mod host;
pub mod impair;
pub mod inbox;
pub mod moderation;
pub mod notify;
pub mod pcapfile;
pub mod relay;
pub mod sandbox;
pub mod server;
pub mod stats;
pub mod sys;
pub mod virtio_net;
