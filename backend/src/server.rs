//! The process lifecycle: one device and one vhost-user daemon for the life of the process, serving
//! QEMU connections one after another on the same socket.
//!
//! Threads: the main thread accepts QEMU and waits for each connection to end; two relay threads per
//! connection move vhost-user messages (see [`crate::relay`]); the daemon's request thread applies
//! them; one vring worker runs the device and the stack; a signal thread handles SIGINT/SIGTERM
//! (clean exit) and SIGUSR1 (write the stats file).

use std::io;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use log::{debug, error, info, warn};
use netstack::Stack;
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::Config;
use crate::control::Shared;
use crate::device::{NetDevice, CONTROL_EVENT, HOST_EVENT, TIMER_EVENT, WAKE_EVENT};
use crate::host::HostSockets;
use crate::relay::{Relay, RelayShutdown};
use crate::{stats, sys};

/// Why virtgate could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot set up the device")]
    Device(#[source] io::Error),
    #[error("invalid stack configuration")]
    Stack(#[from] netstack::ConfigError),
    #[error("cannot create the vhost-user daemon: {0}")]
    Daemon(String),
    #[error("cannot register the device's timer or host sockets with the vring worker")]
    RegisterTimer(#[source] io::Error),
    #[error("cannot open an inbound forward")]
    Forward(#[source] io::Error),
    #[error("socket {0} is in use by a running process")]
    SocketInUse(PathBuf),
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot serve metrics on {address}")]
    BindMetrics {
        address: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the internal daemon socket")]
    PrivateSocket(#[source] io::Error),
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    #[error("accepting a connection failed")]
    Accept(#[source] io::Error),
    #[error("cannot set up the sandbox (--sandbox off runs without it)")]
    Sandbox(#[from] crate::sandbox::SandboxError),
}

/// Binds the QEMU-facing socket; the file appears only once it listens. A leftover socket file
/// nobody listens on is replaced; a live one is an error rather than silently stolen.
fn bind_public(path: &Path) -> Result<UnixListener, ServerError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(ServerError::Bind {
                path: path.into(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
            });
        }
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::SocketInUse(path.into()));
        }
    }
    sys::bind_listening(path).map_err(|source| ServerError::Bind {
        path: path.into(),
        source,
    })
}

/// The daemon's side: an abstract-namespace listener (no file to clean up, nothing to race with).
fn bind_private() -> io::Result<(UnixListener, SocketAddr)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("virtgate-{}-{nanos:08x}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    Ok((listener, addr))
}

/// Waits until `listener` has a connection or `stop` fires; true means a connection is ready.
fn wait_for_connection(listener: &UnixListener, stop: &EventFd) -> io::Result<bool> {
    let ready = sys::poll_readable(&[stop.as_raw_fd(), listener.as_raw_fd()], None)?;
    Ok(ready == Some(1))
}

struct Control {
    stopping: AtomicBool,
    stop: EventFd,
    current: Mutex<Option<RelayShutdown>>,
    shared: Arc<Shared>,
    stats_file: Option<PathBuf>,
    /// The signal thread and the main thread both write the file; one at a time.
    stats_lock: Mutex<()>,
    /// The link (the control API's `link/down`, `link/up`): while down, QEMU is refused.
    link_up: AtomicBool,
}

impl crate::api::Link for Control {
    /// Down closes QEMU's connection (the guest sees its carrier drop; with `reconnect=` QEMU
    /// keeps trying) and refuses new ones until the link is up again. The stack keeps its state.
    fn set_up(&self, up: bool) {
        let was = self.link_up.swap(up, Ordering::SeqCst);
        if was == up {
            return;
        }
        info!("link {}", if up { "up" } else { "down" });
        if !up {
            self.with_current_relay(RelayShutdown::disconnect_qemu);
        }
    }

    fn is_up(&self) -> bool {
        self.link_up.load(Ordering::SeqCst)
    }
}

impl Control {
    fn write_stats(&self) {
        let Some(path) = &self.stats_file else { return };
        let _one_writer = self.stats_lock.lock().unwrap_or_else(|e| e.into_inner());
        let host_mtu = *self
            .shared
            .host_mtu
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let doc = stats::to_json(&self.shared.snapshot(), host_mtu);
        if let Err(e) = stats::write_file(path, &doc) {
            warn!("cannot write stats file {}: {e}", path.display());
        }
    }

    fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.write(1);
        self.with_current_relay(RelayShutdown::shutdown);
    }

    /// Runs `f` on the relay of the connection being served, if any.
    fn with_current_relay(&self, f: impl FnOnce(&RelayShutdown)) {
        if let Some(relay) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            f(relay);
        }
    }
}

/// Runs virtgate until a signal (or, with `--once`, the first disconnect).
pub fn run(config: Config) -> Result<(), ServerError> {
    // Signals are caught before any socket appears: whoever sees QEMU's socket (a test, a
    // service manager) may send SIGTERM at once, and gets the orderly shutdown rather than the
    // default action. What arrives before the signal thread starts waits for it.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR1]).map_err(ServerError::Signals)?;
    let shared = Arc::new(Shared::default());
    // One stack shard per queue pair, each with its own host sockets (see docs/architecture.md,
    // "Queue pairs in parallel").
    let hosts = (0..config.queue_pairs.clamp(1, crate::device::MAX_QUEUE_PAIRS))
        .map(|_| {
            let mut host = HostSockets::new()?;
            host.set_tcp_keepalive(config.stack.tcp_keepalive);
            Ok(host)
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(ServerError::Device)?;
    let mut shards = Stack::sharded(config.stack.clone(), hosts)?;
    shards[0].open_forwards().map_err(ServerError::Forward)?;
    // Everything that needs a path or a privilege is opened now; then the sandbox, before the
    // first thread, so that every thread has it (crate::sandbox).
    // The metrics address and the API's socket first (a metrics address in use leaves no socket
    // file behind): once QEMU's socket appears, everything is ready.
    let metrics_listener = match config.metrics_address {
        Some(address) => Some(
            crate::api::bind_metrics(address)
                .map_err(|source| ServerError::BindMetrics { address, source })?,
        ),
        None => None,
    };
    let api_listener = match &config.api_socket {
        Some(path) => Some(crate::api::bind(path).map_err(|source| ServerError::Bind {
            path: path.clone(),
            source,
        })?),
        None => None,
    };
    let public = bind_public(&config.socket).inspect_err(|_| {
        if let Some(path) = &config.api_socket {
            let _ = std::fs::remove_file(path);
        }
    })?;
    let (private, private_addr) = bind_private().map_err(ServerError::PrivateSocket)?;
    let mut private: Listener = private.into();
    // A service manager's socket is connected before the sandbox closes the file system; one
    // that cannot be reached is a warning, not a reason to refuse to serve.
    let notifier = crate::notify::Notifier::from_env().unwrap_or_else(|e| {
        warn!("NOTIFY_SOCKET: {e}; readiness is not reported");
        None
    });
    config.sandbox.apply()?;
    let device = NetDevice::new(shards, Arc::clone(&shared))
        .map_err(ServerError::Device)?
        .with_coalesce(config.coalesce)
        .with_offloads(config.offloads)
        .with_capture(match &config.pcap {
            Some(path) => Some(crate::capture::Capture::start(path).map_err(|e| {
                ServerError::Device(std::io::Error::new(
                    e.kind(),
                    format!("--pcap {}: {e}", path.display()),
                ))
            })?),
            None => None,
        })
        .with_impairment(crate::impair::Impairment::new(
            config.impair.clone(),
            config.impair_seed,
        ));
    let pair_fds: Vec<_> = (0..device.queue_pairs())
        .map(|p| (device.timer_fd(p), device.wake_fd(p), device.host_fd(p)))
        .collect();
    let control_fd = device.control_fd();
    let control_notifier = match &config.api_socket {
        Some(_) => Some(device.control_notifier().map_err(ServerError::Device)?),
        None => None,
    };
    let backend = Arc::new(device);
    let mut daemon = VhostUserDaemon::new(
        "virtgate".to_string(),
        Arc::clone(&backend),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| ServerError::Daemon(e.to_string()))?;
    let handlers = daemon.get_epoll_handlers();
    // Each pair's worker waits on its own timer, wake-up and its shard's host sockets; pair 0's
    // also on the control API.
    for (handler, (timer_fd, wake_fd, host_fd)) in handlers.iter().zip(&pair_fds) {
        handler
            .register_listener(*timer_fd, EventSet::IN, u64::from(TIMER_EVENT))
            .map_err(ServerError::RegisterTimer)?;
        handler
            .register_listener(*wake_fd, EventSet::IN, u64::from(WAKE_EVENT))
            .map_err(ServerError::RegisterTimer)?;
        handler
            .register_listener(*host_fd, EventSet::IN, u64::from(HOST_EVENT))
            .map_err(ServerError::RegisterTimer)?;
    }
    handlers[0]
        .register_listener(control_fd, EventSet::IN, u64::from(CONTROL_EVENT))
        .map_err(ServerError::RegisterTimer)?;

    let control = Arc::new(Control {
        stopping: AtomicBool::new(false),
        stop: EventFd::new(EFD_NONBLOCK).map_err(ServerError::Signals)?,
        current: Mutex::new(None),
        shared: Arc::clone(&shared),
        stats_file: config.stats_file.clone(),
        stats_lock: Mutex::new(()),
        link_up: AtomicBool::new(true),
    });
    if let (Some(path), Some(listener), Some(wake)) =
        (&config.api_socket, api_listener, control_notifier)
    {
        let handle = crate::api::DeviceHandle {
            shared: Arc::clone(&shared),
            wake,
            link: Arc::clone(&control) as Arc<dyn crate::api::Link>,
        };
        crate::api::serve(listener, handle).map_err(|source| ServerError::Bind {
            path: path.clone(),
            source,
        })?;
    }
    if let Some(listener) = metrics_listener {
        crate::api::serve_metrics(listener, Arc::clone(&shared)).map_err(ServerError::Device)?;
    }
    let signal_handle = signals.handle();
    let signal_control = Arc::clone(&control);
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGUSR1 => signal_control.write_stats(),
                    _ => {
                        info!("signal {sig}: shutting down");
                        signal_control.request_stop();
                    }
                }
            }
        })
        .map_err(ServerError::Signals)?;

    match config.stack.dns_upstreams.first() {
        Some(up) => info!("DNS queries to {} go to {up}", config.stack.dns_ipv4),
        None => warn!(
            "no DNS resolver found (give --dns-upstream or --resolv-conf): DNS queries to {} go unanswered",
            config.stack.dns_ipv4
        ),
    }
    info!(
        "serving a virtio-net NIC on {} (gateway {} at {}, DHCP {})",
        config.socket.display(),
        config.stack.gateway_ipv4,
        config.stack.gateway_mac,
        if config.stack.dhcp_enabled {
            "on"
        } else {
            "off"
        }
    );
    if let Some(n) = &notifier {
        let status = format!("serving a virtio-net NIC on {}", config.socket.display());
        if let Err(e) = n.ready(&status) {
            warn!("NOTIFY_SOCKET: {e}; readiness is not reported");
        }
    }
    let result = serve(
        &config,
        &control,
        &public,
        &mut private,
        &private_addr,
        &mut daemon,
    );

    if let Some(n) = &notifier {
        let _ = n.stopping();
    }
    // Stop the worker, then the signal thread; remove the socket only if it is still ours.
    handlers[0].send_exit_event();
    drop(handlers);
    drop(daemon);
    signal_handle.close();
    let _ = signal_thread.join();
    let _ = std::fs::remove_file(&config.socket);
    if let Some(api) = &config.api_socket {
        let _ = std::fs::remove_file(api);
    }
    control.write_stats();
    let snap = shared.snapshot();
    info!("final counters:\n{}", stats::summary(&snap));
    result
}

fn serve(
    config: &Config,
    control: &Control,
    public: &UnixListener,
    private: &mut Listener,
    private_addr: &SocketAddr,
    daemon: &mut VhostUserDaemon<Arc<NetDevice>>,
) -> Result<(), ServerError> {
    loop {
        if control.stopping.load(Ordering::SeqCst)
            || !wait_for_connection(public, &control.stop).map_err(ServerError::Accept)?
        {
            return Ok(());
        }
        let (qemu, _) = match public.accept() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(ServerError::Accept(e)),
        };
        if !control.link_up.load(Ordering::SeqCst) {
            // The link is down: QEMU is turned away (and retries with `reconnect=`).
            debug!("link down: QEMU refused");
            drop(qemu);
            continue;
        }
        info!("QEMU connected");
        if let Err(e) = serve_connection(qemu, control, private, private_addr, daemon) {
            error!("connection ended with an error: {e}");
        }
        control.write_stats();
        info!("QEMU disconnected");
        if config.once {
            return Ok(());
        }
    }
}

/// The rings of the device: one worker per pair, two rings each.
fn num_rings(daemon: &VhostUserDaemon<Arc<NetDevice>>) -> usize {
    2 * daemon.get_epoll_handlers().len()
}

fn serve_connection(
    qemu: UnixStream,
    control: &Control,
    private: &mut Listener,
    private_addr: &SocketAddr,
    daemon: &mut VhostUserDaemon<Arc<NetDevice>>,
) -> io::Result<()> {
    let daemon_side = UnixStream::connect_addr(private_addr)?;
    daemon
        .start(private)
        .map_err(|e| io::Error::other(format!("daemon start: {e}")))?;
    let (relay, shutdown) = Relay::spawn(
        qemu,
        daemon_side,
        Arc::clone(&control.shared),
        num_rings(daemon),
    )?;
    *control.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(shutdown);
    if control.stopping.load(Ordering::SeqCst) {
        control.request_stop();
    }
    let relay_result = relay.join();
    control
        .current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match daemon.wait() {
        Ok(())
        | Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected | VhostUserError::PartialMessage,
        )) => {}
        Err(e) => warn!("vhost-user session ended: {e}"),
    }
    relay_result
}
