//! Command-line arguments and their validation into a [`Config`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::Parser;
use netstack::wire::{EthernetAddress, Ipv4Address, Ipv4Cidr};
use netstack::Duration;

/// What `virtgate --version` prints after the name: the version and the git revision built.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("VIRTGATE_GIT_REV"),
    ")"
);

/// A vhost-user-net backend with an in-process gateway: QEMU attaches with `-netdev vhost-user`.
#[derive(Debug, Parser)]
#[command(name = "virtgate", version = VERSION, about, long_about = None)]
pub struct Args {
    /// The unix socket QEMU connects to (`-chardev socket,path=...`).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// Exit when the first QEMU connection ends instead of waiting for the next one.
    #[arg(long)]
    pub once: bool,

    /// Write counters as JSON to this file at every disconnect, on SIGUSR1, and at exit.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// The guest network; the gateway is host 2, DNS host 3, the DHCP pool starts at host 15.
    #[arg(long, value_name = "CIDR", default_value = "10.0.2.0/24")]
    pub ipv4_net: String,

    /// The gateway's IPv4 address [default: host 2 of --ipv4-net].
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,

    /// The DNS address handed to the guest [default: host 3 of --ipv4-net].
    #[arg(long, value_name = "IP")]
    pub dns: Option<String>,

    /// First address of the DHCP pool [default: host 15 of --ipv4-net].
    #[arg(long, value_name = "IP")]
    pub dhcp_start: Option<String>,

    /// Number of addresses in the DHCP pool.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub dhcp_pool_size: u32,

    /// DHCP lease time in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86400)]
    pub lease_time: u64,

    /// Do not answer DHCP; the guest configures itself statically.
    #[arg(long)]
    pub no_dhcp: bool,

    /// Domain name handed out by DHCP (option 15).
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,

    /// Link MTU advertised by DHCP (option 26), 68 to 65520.
    #[arg(long, value_name = "BYTES", default_value_t = 1500)]
    pub mtu: u16,

    /// The gateway's MAC address.
    #[arg(long, value_name = "MAC", default_value = "52:55:0a:00:02:02")]
    pub gateway_mac: String,

    /// Inbound port forward, repeatable: `tcp|udp:[HOST_ADDR:]HOST_PORT:GUEST_PORT`; HOST_ADDR
    /// defaults to 127.0.0.1 (give 0.0.0.0 to accept from the network), IPv6 in brackets.
    #[arg(long = "forward", value_name = "SPEC")]
    pub forwards: Vec<String>,

    /// An emulated narrower path behind the gateway, repeatable: `PREFIX=MTU`
    /// (`198.51.100.0/24=1400`, `fd00::2=1280`); larger guest packets towards it get ICMP
    /// "fragmentation needed" (IPv4 with DF) or Packet Too Big (IPv6). Changed at run time with
    /// `virtgate ctl path-mtu`.
    #[arg(long = "path-mtu", value_name = "PREFIX=MTU")]
    pub path_mtus: Vec<String>,

    /// A network behind the guest, repeatable (`192.168.77.0/24`, `fd77:1::/64`): the guest
    /// routes it (its ip_forward), so packets from it are accepted from the guest and packets
    /// for it go to the guest as their next hop.
    #[arg(long = "route-via-guest", value_name = "PREFIX")]
    pub routes_via_guest: Vec<String>,

    /// Resolver for the guest's DNS queries, repeatable: `ADDR[:PORT]` [default: the nameservers
    /// of --resolv-conf].
    #[arg(long = "dns-upstream", value_name = "ADDR[:PORT]")]
    pub dns_upstreams: Vec<String>,

    /// Where the default DNS upstreams come from.
    #[arg(long, value_name = "PATH", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,

    /// RX interrupt moderation, the packet timer (e1000 RDTR): signal this many microseconds
    /// after the last frame, restarted by each frame (0: off).
    #[arg(long, value_name = "USECS", default_value_t = 0)]
    pub rx_usecs: u32,

    /// RX frame-count threshold: signal as soon as this many frames wait (0: off; needs
    /// --rx-usecs or --rx-usecs-abs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub rx_frames: u32,

    /// RX absolute timer (e1000 RADV): never delay an interrupt more than this many
    /// microseconds after the first unsignalled frame (0: off).
    #[arg(long, value_name = "USECS", default_value_t = 0)]
    pub rx_usecs_abs: u32,

    /// TX interrupt moderation, the packet timer (e1000 TIDV), microseconds (0: off).
    #[arg(long, value_name = "USECS", default_value_t = 0)]
    pub tx_usecs: u32,

    /// TX frame-count threshold (0: off; needs --tx-usecs or --tx-usecs-abs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub tx_frames: u32,

    /// TX absolute timer (e1000 TADV), microseconds (0: off).
    #[arg(long, value_name = "USECS", default_value_t = 0)]
    pub tx_usecs_abs: u32,

    /// Interrupt throttle (e1000 ITR): at most this many interrupts per second per queue (0: no
    /// limit).
    #[arg(long, value_name = "PER_SECOND", default_value_t = 0)]
    pub itr: u32,

    /// Adaptive RX moderation (e1000's dynamic ITR, with a class for TSO and jumbo frames): the
    /// RX throttle follows the traffic; a request/response or a ping after a quiet spell gets its
    /// interrupt at once. On by default; `--adaptive-rx=false` raises every interrupt the guest
    /// asks for as soon as its frames are written.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub adaptive_rx: bool,

    /// Offloads offered to the guest: `all`, `none`, or a list of csum (checksums both ways), tso
    /// (TCP segmentation both ways; needs csum), ecn (TSO with CWR; needs tso), uso (UDP
    /// segmentation from the guest; needs csum).
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub offloads: String,

    /// RX/TX queue pairs (VIRTIO_NET_F_MQ), 1 to 8, one worker thread each; QEMU needs
    /// `-netdev vhost-user,...,queues=N` and `-device virtio-net-pci,mq=on,...`.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub queues: usize,

    /// Serve the control API (HTTP and JSON) on this unix socket: stats, Prometheus metrics,
    /// interrupt moderation, packet capture; `virtgate ctl` talks to it.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,

    /// Serve Prometheus metrics (`GET /metrics`, nothing else of the API) over HTTP on this TCP
    /// address, e.g. 127.0.0.1:9591; the control API stays on its unix socket.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_address: Option<std::net::SocketAddr>,

    /// Capture every frame at the guest boundary, both directions, into this pcapng file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,

    /// A directory the control API may write captures into (repeatable); the directories of
    /// the sockets and the stats file are writable anyway. Other paths are refused while the
    /// sandbox is on.
    #[arg(long, value_name = "DIR")]
    pub capture_dir: Vec<PathBuf>,

    /// The sandbox after start-up: a seccomp allow-list of system calls and Landlock write
    /// restrictions (docs/security.md); `off` for debugging.
    #[arg(long, value_name = "on|off", default_value = "on")]
    pub sandbox: String,

    /// Started as root: become this user (a name or `UID[:GID]`) once the sockets are open, keeping
    /// only CAP_NET_RAW, and that only where ping sockets are not allowed to the user's group.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Link impairments, netem's behaviours per direction and flow (docs/impairments.md), e.g.
    /// 'to-guest: loss 2% delay 20ms jitter 5ms; from-guest: tcp port 80: corrupt 0.1%'.
    /// Repeatable; the rules add up in order.
    #[arg(long, value_name = "RULES")]
    pub impair: Vec<String>,

    /// Seed of the impairments' random decisions: the same seed, rules and frames give the same
    /// decisions.
    #[arg(long, value_name = "N", default_value_t = 1, alias = "loss-seed")]
    pub impair_seed: u64,

    /// Drop this percentage of frames at random in each direction: short for
    /// --impair 'both: loss PERCENT%' (after the --impair rules).
    #[arg(long, value_name = "PERCENT", default_value_t = 0.0)]
    pub loss: f64,

    /// Do not map the gateway address to the host's loopback.
    #[arg(long)]
    pub no_map_gw: bool,

    /// Send nothing unasked when a guest's driver comes up (by default the gateway announces its
    /// addresses: gratuitous ARP, unsolicited Neighbor Advertisements, a Router Advertisement).
    #[arg(long)]
    pub no_link_announce: bool,

    /// Accept guest packets from any address of the network, not only the ones it was given
    /// (its DHCP lease, the IPv6 addresses it claimed with DAD): see docs/gateway.md.
    #[arg(long)]
    pub no_source_check: bool,

    /// Send no multicast queries (by default virtgate is the link's IGMPv3/MLDv2 querier, as a
    /// router is, and tracks the guest's memberships: `virtgate ctl multicast`).
    #[arg(long)]
    pub no_mcast_querier: bool,

    /// The querier's Query Interval in seconds (RFC 3376 §8.2), 2 to 3600.
    #[arg(long, value_name = "SECS", default_value_t = 125)]
    pub mcast_query_interval: u64,

    /// Serve no IPv6 (frames are dropped and counted).
    #[arg(long)]
    pub no_ipv6: bool,

    /// The IPv6 prefix announced for SLAAC (a /64); the gateway is host 2, DNS host 3.
    #[arg(long, value_name = "CIDR", default_value = "fd00::/64")]
    pub ipv6_prefix: String,

    /// Valid lifetime of the prefix in router advertisements, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 86400)]
    pub ipv6_valid_lifetime: u64,

    /// Preferred lifetime of the prefix in router advertisements, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 14400)]
    pub ipv6_preferred_lifetime: u64,

    /// How long the guest keeps the gateway as its default IPv6 router, seconds (0: not a
    /// default router).
    #[arg(long, value_name = "SECS", default_value_t = 1800)]
    pub router_lifetime: u64,

    /// The longest time between unsolicited router advertisements, seconds (4 to 1800).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub ra_interval: u64,

    /// DHCPv6: `off`, `stateless` (DNS configuration only; RA "other" flag) or `stateful`
    /// (addresses too; RA "managed" flag).
    #[arg(long, value_name = "MODE", default_value = "stateless")]
    pub dhcpv6: String,

    /// First address of the stateful DHCPv6 pool [default: host 0x100 of --ipv6-prefix].
    #[arg(long, value_name = "IP")]
    pub dhcpv6_start: Option<String>,

    /// Number of addresses in the stateful DHCPv6 pool.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub dhcpv6_pool_size: u32,

    /// TCP keepalive for idle connections, towards the guest and on host sockets:
    /// `IDLE,INTERVAL,PROBES` in seconds and a count, or `off`.
    #[arg(long, value_name = "IDLE,INTERVAL,PROBES", default_value = "7200,75,9")]
    pub tcp_keepalive: String,

    /// TCP options the gateway negotiates with the guest: `all`, `none`, or a list of ts
    /// (timestamps), sack, wscale (window scaling). Changed at run time with
    /// `PUT /tcp-options`; a connection keeps what it negotiated.
    #[arg(long, value_name = "LIST", default_value = "all")]
    pub tcp_options: String,

    /// Bytes of TCP data buffered at once over all connections (both ways), with a K, M or G
    /// suffix (powers of 1024); past it host sockets wait unread and the guest's windows stop
    /// growing. At least 512K.
    #[arg(long, value_name = "BYTES", default_value = "64M")]
    pub tcp_memory: String,

    /// More logging: -v for debug, -vv for per-packet traces (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Why the arguments do not make a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{option}: {value:?} is not {expected}")]
    Parse {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("--ipv4-net {0}: host {1} does not exist in this network")]
    NoSuchHost(Ipv4Cidr, u32),
    #[error("--forward {0}: {1}")]
    Forward(String, &'static str),
    #[error("--path-mtu {0}")]
    PathMtu(String),
    #[error("--route-via-guest {0}")]
    RouteViaGuest(String),
    #[error("--loss {0}: must be a percentage from 0 to 100")]
    Loss(f64),
    #[error("--{0}: {1}")]
    Coalesce(&'static str, &'static str),
    #[error("--impair: {0}")]
    Impair(String),
    #[error("--queues {0}: must be 1 to 8")]
    Queues(usize),
    #[error("--offloads {0:?}: {1}")]
    Offloads(String, String),
    #[error("--tcp-options {0:?}: {1}")]
    TcpOptions(String, String),
    #[error(transparent)]
    Stack(#[from] netstack::ConfigError),
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    /// `--impair` (and `--loss`) rules, and their seed.
    pub impair: Vec<crate::impair::RuleSpec>,
    pub impair_seed: u64,
    pub once: bool,
    pub stats_file: Option<PathBuf>,
    pub stack: netstack::Config,
    pub coalesce: crate::moderation::Coalesce,
    pub offloads: crate::virtio_net::Offloads,
    pub queue_pairs: usize,
    pub pcap: Option<PathBuf>,
    pub api_socket: Option<PathBuf>,
    pub metrics_address: Option<std::net::SocketAddr>,
    pub verbose: u8,
    pub sandbox: crate::sandbox::Sandbox,
}

fn parse<T: std::str::FromStr>(
    option: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<T, ConfigError> {
    value.parse().map_err(|_| ConfigError::Parse {
        option,
        value: value.to_string(),
        expected,
    })
}

impl Args {
    /// The interrupt moderation settings, checked: timers up to one second, and a frame
    /// threshold only with a timer (or frames would wait for ever on a quiet link).
    fn coalesce(&self) -> Result<crate::moderation::Coalesce, ConfigError> {
        use crate::moderation::{Coalesce, QueueCoalesce};
        let queue = |usecs: u32, frames: u32, abs: u32, names: [&'static str; 3]| {
            for (v, name) in [(usecs, names[0]), (abs, names[2])] {
                if v > 1_000_000 {
                    return Err(ConfigError::Coalesce(name, "at most 1000000 microseconds"));
                }
            }
            if frames > 0 && usecs == 0 && abs == 0 {
                return Err(ConfigError::Coalesce(
                    names[1],
                    "needs a timer too (the usecs or usecs-abs option of the same queue)",
                ));
            }
            Ok(QueueCoalesce {
                usecs,
                frames,
                usecs_abs: abs,
            })
        };
        if self.itr > 1_000_000 {
            return Err(ConfigError::Coalesce("itr", "at most 1000000 per second"));
        }
        Ok(Coalesce {
            rx: queue(
                self.rx_usecs,
                self.rx_frames,
                self.rx_usecs_abs,
                ["rx-usecs", "rx-frames", "rx-usecs-abs"],
            )?,
            tx: queue(
                self.tx_usecs,
                self.tx_frames,
                self.tx_usecs_abs,
                ["tx-usecs", "tx-frames", "tx-usecs-abs"],
            )?,
            itr: self.itr,
            adaptive_rx: self.adaptive_rx,
        })
    }

    /// Validates the arguments; every inconsistency is reported with the option that caused it.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let coalesce = self.coalesce()?;
        let net: Ipv4Cidr = parse(
            "ipv4-net",
            &self.ipv4_net,
            "an IPv4 prefix like 10.0.2.0/24",
        )?;
        let host = |n: u32| net.host(n).ok_or(ConfigError::NoSuchHost(net, n));
        let addr = |option, v: &Option<String>, default: u32| -> Result<Ipv4Address, ConfigError> {
            match v {
                Some(v) => parse(option, v, "an IPv4 address"),
                None => host(default),
            }
        };
        let stack = netstack::Config {
            gateway_mac: parse::<EthernetAddress>(
                "gateway-mac",
                &self.gateway_mac,
                "a MAC address",
            )?,
            ipv4_net: net,
            gateway_ipv4: addr("gateway", &self.gateway, 2)?,
            dns_ipv4: addr("dns", &self.dns, 3)?,
            dhcp_start: addr("dhcp-start", &self.dhcp_start, 15)?,
            dhcp_pool_size: self.dhcp_pool_size,
            dhcp_enabled: !self.no_dhcp,
            lease_time: Duration::from_secs(self.lease_time),
            mtu: self.mtu,
            domain_name: self.domain,
            map_gateway_to_loopback: !self.no_map_gw,
            dns_upstreams: if self.dns_upstreams.is_empty() {
                resolv_conf_nameservers(&self.resolv_conf)
            } else {
                self.dns_upstreams
                    .iter()
                    .map(|v| parse_upstream(v))
                    .collect::<Result<_, _>>()?
            },
            forwards: self
                .forwards
                .iter()
                .map(|f| parse_forward(f))
                .collect::<Result<_, _>>()?,
            tcp_keepalive: parse_keepalive(&self.tcp_keepalive)?,
            tcp_memory: parse_bytes("tcp-memory", &self.tcp_memory)?,
            tcp_options: netstack::TcpOptions::parse(&self.tcp_options)
                .map_err(|e| ConfigError::TcpOptions(self.tcp_options.clone(), e))?,
            link_announce: !self.no_link_announce,
            source_check: !self.no_source_check,
            path_mtus: parse_path_mtus(&self.path_mtus).map_err(ConfigError::PathMtu)?,
            routes_via_guest: self
                .routes_via_guest
                .iter()
                .map(|p| {
                    p.parse()
                        .map_err(|e| ConfigError::RouteViaGuest(format!("{p}: {e}")))
                })
                .collect::<Result<_, _>>()?,
            mcast_querier: !self.no_mcast_querier,
            mcast_query_interval: Duration::from_secs(self.mcast_query_interval),
            ipv6: if self.no_ipv6 {
                None
            } else {
                let prefix: netstack::wire::Ipv6Cidr = parse(
                    "ipv6-prefix",
                    &self.ipv6_prefix,
                    "an IPv6 prefix like fd00::/64",
                )?;
                Some(netstack::Ipv6Config {
                    prefix,
                    gateway: prefix.host(2),
                    dns: prefix.host(3),
                    valid_lifetime: Duration::from_secs(self.ipv6_valid_lifetime),
                    preferred_lifetime: Duration::from_secs(self.ipv6_preferred_lifetime),
                    router_lifetime: Duration::from_secs(self.router_lifetime),
                    ra_interval: Duration::from_secs(self.ra_interval),
                    dhcpv6: match self.dhcpv6.as_str() {
                        "off" => netstack::Dhcpv6Mode::Off,
                        "stateless" => netstack::Dhcpv6Mode::Stateless,
                        "stateful" => netstack::Dhcpv6Mode::Stateful,
                        _ => {
                            return Err(ConfigError::Parse {
                                option: "dhcpv6",
                                value: self.dhcpv6.clone(),
                                expected: "off, stateless or stateful",
                            })
                        }
                    },
                    dhcpv6_start: match &self.dhcpv6_start {
                        Some(v) => parse("dhcpv6-start", v, "an IPv6 address")?,
                        None => prefix.host(0x100),
                    },
                    dhcpv6_pool_size: self.dhcpv6_pool_size,
                })
            },
        };
        stack.validate()?;
        if !(0.0..=100.0).contains(&self.loss) {
            return Err(ConfigError::Loss(self.loss));
        }
        let mut impair_text = self.impair.join(";");
        if self.loss > 0.0 {
            impair_text += &format!(";both: loss {}%", self.loss);
        }
        let impair = crate::impair::parse_rules(&impair_text).map_err(ConfigError::Impair)?;
        let offloads = crate::virtio_net::Offloads::parse(&self.offloads)
            .map_err(|e| ConfigError::Offloads(self.offloads.clone(), e))?;
        if !(1..=crate::device::MAX_QUEUE_PAIRS).contains(&self.queues) {
            return Err(ConfigError::Queues(self.queues));
        }
        let enabled = match self.sandbox.as_str() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError::Parse {
                    option: "sandbox",
                    value: other.to_string(),
                    expected: "on or off",
                })
            }
        };
        let user = self.user.as_deref().map(parse_user).transpose()?;
        let mut writable: Vec<PathBuf> = [Some(&self.socket), self.api_socket.as_ref()]
            .into_iter()
            .chain([self.stats_file.as_ref(), self.pcap.as_ref()])
            .flatten()
            .map(|p| crate::sandbox::parent_dir(p))
            .chain(self.capture_dir.iter().cloned())
            .collect();
        writable.sort();
        writable.dedup();
        let sandbox = crate::sandbox::Sandbox {
            enabled,
            user,
            writable,
        };
        Ok(Config {
            sandbox,
            coalesce,
            offloads,
            queue_pairs: self.queues,
            pcap: self.pcap,
            api_socket: self.api_socket,
            metrics_address: self.metrics_address,
            impair,
            impair_seed: self.impair_seed,
            socket: self.socket,
            once: self.once,
            stats_file: self.stats_file,
            stack,
            verbose: self.verbose,
        })
    }
}

/// `--user`: a user name (its primary group) or `UID[:GID]`.
fn parse_user(v: &str) -> Result<(u32, u32), ConfigError> {
    let bad = || ConfigError::Parse {
        option: "user",
        value: v.to_string(),
        expected: "a user name or UID[:GID]",
    };
    if let Some((uid, gid)) = v.split_once(':') {
        return Ok((
            uid.parse().map_err(|_| bad())?,
            gid.parse().map_err(|_| bad())?,
        ));
    }
    if let Ok(uid) = v.parse::<u32>() {
        return Ok((uid, uid));
    }
    let name = std::ffi::CString::new(v).map_err(|_| bad())?;
    // SAFETY: getpwnam with a NUL-terminated name; the entry is read at once, before any other
    // call could overwrite it (start-up is single-threaded).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(ConfigError::Parse {
            option: "user",
            value: v.to_string(),
            expected: "a user that exists",
        });
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// A byte count with an optional K, M or G suffix (powers of 1024).
fn parse_bytes(option: &'static str, v: &str) -> Result<usize, ConfigError> {
    let bad = || ConfigError::Parse {
        option,
        value: v.to_string(),
        expected: "a byte count such as 65536, 512K, 64M or 1G",
    };
    let (digits, shift) = match v.as_bytes().last() {
        Some(b'K' | b'k') => (&v[..v.len() - 1], 10),
        Some(b'M' | b'm') => (&v[..v.len() - 1], 20),
        Some(b'G' | b'g') => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: usize = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// `IDLE,INTERVAL,PROBES` (seconds, seconds, count; all at least 1) or `off`.
fn parse_keepalive(v: &str) -> Result<Option<netstack::Keepalive>, ConfigError> {
    if v == "off" {
        return Ok(None);
    }
    let bad = || ConfigError::Parse {
        option: "tcp-keepalive",
        value: v.to_string(),
        expected: "IDLE,INTERVAL,PROBES (seconds, seconds, count, each at least 1) or off",
    };
    let parts: Vec<u64> = v
        .split(',')
        .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [idle, interval, probes] = parts[..] else {
        return Err(bad());
    };
    if idle == 0 || interval == 0 || probes == 0 || probes > 255 || idle > 86400 * 365 {
        return Err(bad());
    }
    Ok(Some(netstack::Keepalive {
        idle: Duration::from_secs(idle),
        interval: Duration::from_secs(interval.min(86400)),
        probes: probes as u32,
    }))
}

/// `ADDR` or `ADDR:PORT` (IPv6 in brackets with a port), port 53 by default.
fn parse_upstream(v: &str) -> Result<SocketAddr, ConfigError> {
    let err = || ConfigError::Parse {
        option: "dns-upstream",
        value: v.to_string(),
        expected: "ADDR or ADDR:PORT",
    };
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    v.parse::<SocketAddr>().map_err(|_| err())
}

/// The `nameserver` lines of a resolv.conf; empty if there is none (virtgate still starts).
pub fn resolv_conf_nameservers(path: &Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            // Link-local IPv6 servers carry a zone (`%eth0`) that a socket address cannot hold.
            let addr = words.next()?.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Parses `--path-mtu` specs (`PREFIX=MTU`, see [`netstack::pmtu`]), checking the table's bound.
pub fn parse_path_mtus(specs: &[String]) -> Result<Vec<netstack::pmtu::PathMtu>, String> {
    let table = specs
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<_>, _>>()?;
    netstack::pmtu::validate(&table)?;
    Ok(table)
}

/// `udp:[HOST_ADDR:]HOST_PORT:GUEST_PORT`.
pub fn parse_forward(spec: &str) -> Result<netstack::Forward, ConfigError> {
    let err = |why| ConfigError::Forward(spec.to_string(), why);
    let (proto, rest) = spec
        .split_once(':')
        .ok_or_else(|| err("expected tcp|udp:[HOST_ADDR:]HOST_PORT:GUEST_PORT"))?;
    let protocol = match proto {
        "tcp" => netstack::ForwardProtocol::Tcp,
        "udp" => netstack::ForwardProtocol::Udp,
        _ => return Err(err("the protocol must be tcp or udp")),
    };
    let (host, guest_port) = rest
        .rsplit_once(':')
        .ok_or_else(|| err("expected HOST_PORT:GUEST_PORT"))?;
    let guest_port: u16 = guest_port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| err("the guest port must be 1-65535"))?;
    let host = if let Ok(port) = host.parse::<u16>() {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    } else {
        host.parse::<SocketAddr>()
            .map_err(|_| err("the host side must be PORT, ADDR:PORT or [ADDR]:PORT"))?
    };
    Ok(netstack::Forward {
        protocol,
        host,
        guest_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config, String> {
        let mut full = vec!["virtgate", "--socket", "/tmp/x.sock"];
        full.extend_from_slice(args);
        Args::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .into_config()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_slirp_compatible() {
        let c = config(&[]).unwrap();
        assert_eq!(
            c.stack,
            netstack::Config {
                dns_upstreams: resolv_conf_nameservers(Path::new("/etc/resolv.conf")),
                ..netstack::Config::default()
            }
        );
    }

    #[test]
    fn coalescing_options() {
        let c = config(&["--rx-usecs", "100", "--rx-frames", "16", "--itr", "8000"]).unwrap();
        assert_eq!(
            c.offloads,
            crate::virtio_net::Offloads::ALL,
            "all by default"
        );
        assert_eq!(c.coalesce.rx.usecs, 100);
        assert_eq!(c.coalesce.rx.frames, 16);
        assert_eq!(c.coalesce.itr, 8000);
        // By default only the adaptive RX throttle; `=false` turns it off, bare means on.
        let adaptive_only = crate::moderation::Coalesce {
            adaptive_rx: true,
            ..Default::default()
        };
        assert_eq!(config(&[]).unwrap().coalesce, adaptive_only);
        assert_eq!(
            config(&["--adaptive-rx=false"]).unwrap().coalesce,
            Default::default()
        );
        assert_eq!(config(&["--adaptive-rx"]).unwrap().coalesce, adaptive_only);
        assert!(config(&["--adaptive-rx=maybe"])
            .unwrap_err()
            .contains("--adaptive-rx"));
        for (args, needle) in [
            (&["--rx-frames", "8"][..], "--rx-frames"),
            (&["--tx-usecs-abs", "2000000"][..], "--tx-usecs-abs"),
            (&["--itr", "2000000"][..], "--itr"),
        ] {
            let e = config(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn offload_options() {
        use crate::virtio_net::Offloads;
        assert_eq!(
            config(&["--offloads", "none"]).unwrap().offloads,
            Offloads::NONE
        );
        assert_eq!(
            config(&["--offloads", "csum,uso"]).unwrap().offloads,
            Offloads {
                csum: true,
                uso: true,
                ..Offloads::NONE
            }
        );
        assert_eq!(config(&[]).unwrap().queue_pairs, 1);
        assert_eq!(config(&["--queues", "4"]).unwrap().queue_pairs, 4);
        for bad in ["0", "9"] {
            let e = config(&["--queues", bad]).unwrap_err();
            assert!(e.contains("--queues"), "{e}");
        }
        let e = config(&["--offloads", "tso"]).unwrap_err();
        assert!(e.contains("--offloads") && e.contains("csum"), "{e}");
        let e = config(&["--offloads", "lro"]).unwrap_err();
        assert!(e.contains("lro"), "{e}");
    }

    #[test]
    fn ipv6_options() {
        let c = config(&[
            "--ipv6-prefix",
            "fd12:3456::/64",
            "--dhcpv6",
            "stateful",
            "--ipv6-valid-lifetime",
            "600",
            "--ipv6-preferred-lifetime",
            "300",
        ])
        .unwrap();
        let v6 = c.stack.ipv6.unwrap();
        assert_eq!(v6.gateway.to_string(), "fd12:3456::2");
        assert_eq!(v6.dns.to_string(), "fd12:3456::3");
        assert_eq!(v6.dhcpv6_start.to_string(), "fd12:3456::100");
        assert_eq!(v6.dhcpv6, netstack::Dhcpv6Mode::Stateful);
        assert_eq!(v6.valid_lifetime, Duration::from_secs(600));
        assert!(config(&["--no-ipv6"]).unwrap().stack.ipv6.is_none());
        for (args, needle) in [
            (&["--ipv6-prefix", "fd00::/48"][..], "/64"),
            (&["--ipv6-prefix", "nonsense"][..], "--ipv6-prefix"),
            (&["--dhcpv6", "maybe"][..], "--dhcpv6"),
            (&["--mtu", "1000"][..], "1280"),
        ] {
            let e = config(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert!(config(&["--mtu", "1000", "--no-ipv6"]).is_ok());
    }

    #[test]
    fn tcp_options_are_all_by_default_and_listed_otherwise() {
        use netstack::TcpOptions;
        assert_eq!(config(&[]).unwrap().stack.tcp_options, TcpOptions::ALL);
        let opts = |v: &str| config(&["--tcp-options", v]).map(|c| c.stack.tcp_options);
        assert_eq!(opts("none").unwrap(), TcpOptions::NONE);
        assert_eq!(
            opts("sack, wscale").unwrap(),
            TcpOptions {
                timestamps: false,
                ..TcpOptions::ALL
            }
        );
        assert_eq!(opts("ts").unwrap().to_string(), "ts");
        for bad in ["mss", "ts,,sack", "TS"] {
            let e = opts(bad).unwrap_err();
            assert!(
                e.contains("--tcp-options") && e.contains("wscale"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn tcp_memory_is_a_byte_count_of_at_least_one_connection() {
        assert_eq!(config(&[]).unwrap().stack.tcp_memory, 64 << 20);
        for (v, want) in [("1G", 1 << 30), ("512k", 512 << 10), ("1048576", 1 << 20)] {
            assert_eq!(config(&["--tcp-memory", v]).unwrap().stack.tcp_memory, want);
        }
        for bad in ["lots", "12Q", "", "99999999999999999999G"] {
            let e = config(&["--tcp-memory", bad]).unwrap_err();
            assert!(e.contains("--tcp-memory"), "{bad}: {e}");
        }
        let e = config(&["--tcp-memory", "64K"]).unwrap_err();
        assert!(e.contains("TCP memory"), "{e}");
    }

    #[test]
    fn keepalive_is_three_numbers_or_off() {
        let c = config(&["--tcp-keepalive", "30,5,3"]).unwrap();
        assert_eq!(
            c.stack.tcp_keepalive,
            Some(netstack::Keepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(5),
                probes: 3,
            })
        );
        assert_eq!(
            config(&["--tcp-keepalive", "off"])
                .unwrap()
                .stack
                .tcp_keepalive,
            None
        );
        for bad in ["30,5", "0,5,3", "30,5,3,1", "x,5,3", "30,5,0"] {
            let e = config(&["--tcp-keepalive", bad]).unwrap_err();
            assert!(e.contains("--tcp-keepalive"), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_follow_the_network() {
        let c = config(&["--ipv4-net", "192.168.77.0/24", "--mtu", "65520"]).unwrap();
        assert_eq!(c.stack.gateway_ipv4, Ipv4Address::new(192, 168, 77, 2));
        assert_eq!(c.stack.dns_ipv4, Ipv4Address::new(192, 168, 77, 3));
        assert_eq!(c.stack.dhcp_start, Ipv4Address::new(192, 168, 77, 15));
        assert_eq!(c.stack.mtu, 65520);
    }

    #[test]
    fn forwards_and_upstreams() {
        let c = config(&[
            "--forward",
            "udp:5353:53",
            "--forward",
            "udp:0.0.0.0:6000:60",
            "--forward",
            "udp:[::1]:7000:70",
            "--dns-upstream",
            "127.0.0.1:5300",
            "--dns-upstream",
            "::1",
            "--no-map-gw",
        ])
        .unwrap();
        let f = &c.stack.forwards;
        assert_eq!(f[0].host, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(f[0].guest_port, 53);
        assert_eq!(f[1].host, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(f[2].host, "[::1]:7000".parse().unwrap());
        assert_eq!(
            c.stack.dns_upstreams,
            vec![
                "127.0.0.1:5300".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(!c.stack.map_gateway_to_loopback);
    }

    #[test]
    fn resolv_conf_is_read() {
        let dir = std::env::temp_dir().join(format!("virtgate-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("resolv.conf");
        std::fs::write(
            &p,
            "# comment\nsearch example\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\noptions x\n",
        )
        .unwrap();
        assert_eq!(
            resolv_conf_nameservers(&p),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        assert!(resolv_conf_nameservers(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_flags_get_clear_errors() {
        for (args, needle) in [
            (&["--ipv4-net", "10.0.2.0"][..], "--ipv4-net"),
            (&["--gateway", "10.0.2.300"][..], "--gateway"),
            (&["--mtu", "65521"][..], "MTU 65521"),
            (&["--mtu", "70000"][..], "70000"),
            (&["--gateway-mac", "01:00:5e:00:00:01"][..], "unicast"),
            (&["--dns", "10.0.2.2"][..], "must differ"),
            (&["--ipv4-net", "10.0.2.0/29"][..], "host 15"),
            (&["--lease-time", "10"][..], "lease time"),
            (&["--no-such-flag"][..], "--no-such-flag"),
            (&["--forward", "udp:53"][..], "HOST_PORT:GUEST_PORT"),
            (&["--forward", "udp:5353:0"][..], "guest port"),
            (&["--forward", "sctp:1:2"][..], "protocol"),
            (&["--forward", "udp:localhost:1:2"][..], "host side"),
            (
                &["--forward", "udp:1:2", "--forward", "udp:1:3"][..],
                "two udp forwards",
            ),
            (&["--dns-upstream", "nowhere"][..], "--dns-upstream"),
            (&["--loss", "101"][..], "--loss"),
            (&["--path-mtu", "10.0.0.0/8"][..], "PREFIX=MTU"),
            (&["--path-mtu", "fd00::/64=1000"][..], "at least 1280"),
            (&["--mcast-query-interval", "1"][..], "query interval"),
            (
                &["--route-via-guest", "192.168.77.0/33"][..],
                "--route-via-guest",
            ),
            (
                &["--route-via-guest", "10.0.2.0/24"][..],
                "gateway's own address",
            ),
        ] {
            let err = config(args).unwrap_err();
            assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        }
    }
}
