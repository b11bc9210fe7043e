//! `scripts/bench-vm.sh`: the same guest against several backends in one run, interleaved
//! (A, B, C, A, B, C ...) so that the machine's load drifts over all of them alike:
//!
//! - virtgate with its defaults (MTU 1500, offloads), with `--mtu 65520`, with `--offloads none`,
//!   with `--offloads csum` (no segmentation offload, as passt), and that without TCP timestamps
//!   (`--tcp-options sack,wscale`: passt negotiates no timestamps);
//! - passt in vhost-user mode (`$VIRTGATE_PASST`, built by `scripts/bench-setup.sh`) at its default
//!   MTU 65520 and at `-m 1500`;
//! - QEMU's `-netdev user` (libslirp).
//!
//! Each run boots the guest, measures ping to the gateway, TCP request/response against an echo
//! server on the host, iperf3 each way against an iperf3 server on the host's loopback (reached as
//! 10.0.2.2 everywhere: passt is given slirp's addresses and maps the gateway to the host), the
//! CPU time of the backend process and of QEMU per byte moved, the guest's interrupts per MB, and
//! the backend's wake-ups (context switches) per MB moved and per second while the guest idles.
//! A benchmark, not a test: it prints medians with their ranges and the ratios virtgate / passt,
//! and asserts nothing.
//!
//! Environment: `VIRTGATE_BENCH_ROUNDS` (default 3), `VIRTGATE_BENCH_SECONDS` per iperf3
//! direction (default 8), `VIRTGATE_BENCH_ONLY` (comma-separated labels to run), `VIRTGATE_PASST`,
//! `VIRTGATE_BENCH_ALT` (another virtgate binary, run as the `alt` configurations beside the
//! others: an A/B comparison of two builds in one interleaved run), `VIRTGATE_BENCH_STATS`
//! (virtgate's counters that moved during each iperf3 direction, and for every backend the
//! guest's: its virtio interrupts per ring and its kernel's TCP counters, on stderr).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guest_tests::{unique_dir, Virtgate, Vm, VmOptions};

/// The guest's view in every backend (slirp's defaults; virtgate's too).
const GATEWAY: &str = "10.0.2.2";
const RR_EXCHANGES: u32 = 2000;
const RR_SIZE: u32 = 64;
const PINGS: u32 = 20;
const IDLE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Virtgate(&'static [&'static str]),
    /// The binary in `$VIRTGATE_BENCH_ALT`, with these arguments (an A/B comparison of builds).
    Alt(&'static [&'static str]),
    /// passt with this MTU (None: its default, 65520).
    Passt(Option<u16>),
    Slirp,
}

struct Config {
    label: &'static str,
    backend: Backend,
}

const CONFIGS: [Config; 8] = [
    Config {
        label: "virtgate",
        backend: Backend::Virtgate(&[]),
    },
    Config {
        label: "virtgate --mtu 65520",
        backend: Backend::Virtgate(&["--mtu", "65520"]),
    },
    Config {
        label: "virtgate --offloads none",
        backend: Backend::Virtgate(&["--offloads", "none"]),
    },
    // No segmentation offload, like passt: passt negotiates no offload at all but marks every
    // frame to the guest DATA_VALID (with no TCP checksum in it), so its guest verifies nothing;
    // the spec's way to the same guest work is checksum offload (docs/performance.md).
    Config {
        label: "virtgate --offloads csum",
        backend: Backend::Virtgate(&["--offloads", "csum"]),
    },
    // And without TCP timestamps, which passt does not negotiate either (docs/gateway.md); the
    // label has no comma, which separates labels in VIRTGATE_BENCH_ONLY.
    Config {
        label: "virtgate --offloads csum --tcp-options (no ts)",
        backend: Backend::Virtgate(&["--offloads", "csum", "--tcp-options", "sack,wscale"]),
    },
    Config {
        label: "passt (MTU 65520)",
        backend: Backend::Passt(None),
    },
    Config {
        label: "passt -m 1500",
        backend: Backend::Passt(Some(1500)),
    },
    Config {
        label: "slirp",
        backend: Backend::Slirp,
    },
];

/// With `$VIRTGATE_BENCH_ALT`: the same virtgate configurations with that binary.
const ALT_CONFIGS: [Config; 4] = [
    Config {
        label: "alt",
        backend: Backend::Alt(&[]),
    },
    Config {
        label: "alt --mtu 65520",
        backend: Backend::Alt(&["--mtu", "65520"]),
    },
    Config {
        label: "alt --offloads none",
        backend: Backend::Alt(&["--offloads", "none"]),
    },
    Config {
        label: "alt --offloads csum",
        backend: Backend::Alt(&["--offloads", "csum"]),
    },
];

/// One run's figures, by row name (rows a backend cannot report are absent).
type Sample = BTreeMap<&'static str, f64>;

/// The rows, in the order printed, with how many decimals.
const ROWS: [(&str, usize); 16] = [
    ("guest → host, Mbit/s", 0),
    ("host → guest, Mbit/s", 0),
    ("guest → host retransmissions", 0),
    ("host → guest retransmissions", 0),
    ("backend CPU ns/byte, guest → host", 2),
    ("backend CPU ns/byte, host → guest", 2),
    ("backend wake-ups per MB, guest → host", 1),
    ("backend wake-ups per MB, host → guest", 1),
    ("QEMU CPU ns/byte, guest → host", 2),
    ("QEMU CPU ns/byte, host → guest", 2),
    ("guest interrupts per MB, guest → host", 1),
    ("guest RX interrupts per MB, host → guest", 1),
    ("TCP RR p50, µs", 0),
    ("TCP RR p99, µs", 0),
    ("ping p50 to the gateway, ms", 2),
    ("backend wake-ups/s, idle guest", 1),
];

/// User+system CPU seconds of a process (all its threads).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Context switches of all of a process's threads: each is a wake-up (or a preemption).
fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The guest's own view for `VIRTGATE_BENCH_STATS`: its virtio interrupts by ring (`irq input.0`,
/// `irq output.0` ...) and the kernel's TCP counters (`/proc/net/snmp`'s Tcp and
/// `/proc/net/netstat`'s TcpExt rows, named as `nstat` names them: [`Vm::counters`]).
fn guest_counters(vm: &mut Vm) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = vm
        .counters()
        .0
        .into_iter()
        .filter(|(k, _)| k.starts_with("Tcp"))
        .collect();
    for (ring, n) in virtio_interrupts(vm) {
        out.insert(format!("irq {ring}"), n as i64);
    }
    out
}

/// `VIRTGATE_BENCH_STATS`: the guest's counters that moved during one iperf3 direction.
fn print_guest_deltas(
    label: &str,
    reverse: bool,
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
) {
    let dir = if reverse {
        "host → guest"
    } else {
        "guest → host"
    };
    let moved: Vec<String> = after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            // Gauges (CurrEstab) and the counters of every connection alike are noise here.
            (d > 0 && k != "TcpCurrEstab").then(|| format!("{k} {d}"))
        })
        .collect();
    eprintln!("   {label}, {dir}, guest: {}", moved.join(", "));
}

/// The guest's interrupts per ring of virtio0 (`input.0`, `output.0` ...), summed over CPUs.
fn virtio_interrupts(vm: &mut Vm) -> Vec<(String, u64)> {
    vm.sh("cat /proc/interrupts")
        .lines()
        .filter_map(|l| {
            let ring = l.split_whitespace().last()?.strip_prefix("virtio0-")?;
            let n = l
                .split_whitespace()
                .skip(1)
                .map_while(|v| v.parse::<u64>().ok())
                .sum();
            Some((ring.to_string(), n))
        })
        .collect()
}

/// The guest's interrupts of virtio0's rings whose name contains `which` (e.g. "input"), summed
/// over CPUs and queues.
fn guest_interrupts(vm: &mut Vm, which: &str) -> f64 {
    virtio_interrupts(vm)
        .iter()
        .filter(|(ring, _)| ring.contains(which))
        .map(|(_, n)| *n as f64)
        .sum()
}

struct Iperf {
    mbps: f64,
    bytes: f64,
    retransmits: f64,
}

fn iperf(vm: &mut Vm, port: u16, seconds: u32, reverse: bool) -> Iperf {
    let cmd = format!(
        "iperf3 -c {GATEWAY} -p {port} -t {seconds} -J {}",
        if reverse { "-R" } else { "" }
    );
    let out = vm.run(&cmd, Duration::from_secs(u64::from(seconds) + 60));
    let json: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output ({e}): {}", out.stdout));
    let end = &json["end"];
    Iperf {
        mbps: end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0)
            / 1e6,
        bytes: end["sum_received"]["bytes"].as_f64().unwrap_or(0.0),
        retransmits: end["sum_sent"]["retransmits"].as_f64().unwrap_or(f64::NAN),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn ping_p50_ms(vm: &mut Vm) -> f64 {
    let out = vm
        .run(
            &format!("ping -c {PINGS} -i 0.2 {GATEWAY}"),
            Duration::from_secs(60),
        )
        .stdout;
    let mut times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    median(&mut times)
}

/// `rr n=N p50_us=N p99_us=N ...` from the guest's tcpclient.
fn rr(vm: &mut Vm, port: u16) -> (f64, f64) {
    let out = vm
        .run(
            &format!("tcpclient {GATEWAY} {port} rr {RR_EXCHANGES}x{RR_SIZE}"),
            Duration::from_secs(120),
        )
        .stdout;
    let field = |name: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field("p50_us="), field("p99_us="))
}

/// The host's TCP echo server for the request/response test (one connection at a time).
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("echo server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || echo(conn));
        }
    });
    port
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 65536];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

fn iperf_server(port: u16) -> Child {
    Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 on the host: apt-get install iperf3")
}

/// A running passt in vhost-user mode, given slirp's addresses so that the guest's view is the
/// same as with the others.
struct Passt {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Passt {
    fn start(bin: &Path, mtu: Option<u16>) -> Passt {
        let dir = unique_dir("passt");
        // passt drops to nobody when started as root: its directory must be reachable.
        let _ = std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777));
        let socket = dir.join("passt.sock");
        let mut cmd = Command::new(bin);
        cmd.args(["-f", "-q", "-t", "none", "-u", "none"])
            .args(["--vhost-user", "-s"])
            .arg(&socket)
            .args(["-4", "-a", "10.0.2.15", "-n", "24", "-g", GATEWAY])
            .args(["--map-host-loopback", GATEWAY])
            .args(["--no-dhcp-dns", "--no-dhcp-search"]);
        if let Some(m) = mtu {
            cmd.args(["-m", &m.to_string()]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn passt");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("passt exited: {status}");
            }
            assert!(Instant::now() < deadline, "passt made no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Passt { child, socket, dir }
    }
}

impl Drop for Passt {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Lets unprivileged ICMP echo sockets be opened by every group while the bench runs (passt,
/// running as nobody, needs it for ping; virtgate then uses them too), and puts the old range
/// back at the end.
struct PingGroupRange(Option<String>);

const PING_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

impl PingGroupRange {
    fn open_to_all() -> PingGroupRange {
        let old = std::fs::read_to_string(PING_RANGE).ok();
        if std::fs::write(PING_RANGE, "0 2147483647").is_err() {
            eprintln!("note: cannot widen {PING_RANGE}; passt's ping may fail");
        }
        PingGroupRange(old)
    }
}

impl Drop for PingGroupRange {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write(PING_RANGE, old.trim());
        }
    }
}

struct Ports {
    iperf: u16,
    echo: u16,
}

/// Boots the guest on one backend and measures everything once.
fn measure(
    config: &Config,
    (passt, alt): (Option<&Path>, Option<&Path>),
    opts: &VmOptions,
    ports: &Ports,
    seconds: u32,
) -> Sample {
    let mut virtgate = None;
    let mut passt_proc = None;
    let (mut vm, backend_pid) = match config.backend {
        Backend::Virtgate(args) | Backend::Alt(args) => {
            let vg = match config.backend {
                Backend::Alt(_) => Virtgate::start_binary(alt.expect("alt binary"), args),
                _ => Virtgate::start(args),
            };
            let vm = Vm::boot(&vg.socket, opts);
            let pid = vg.pid() as u32;
            virtgate = Some(vg);
            (vm, Some(pid))
        }
        Backend::Passt(mtu) => {
            let p = Passt::start(passt.expect("passt"), mtu);
            let vm = Vm::boot(&p.socket, opts);
            let pid = p.child.id();
            passt_proc = Some(p);
            (vm, Some(pid))
        }
        Backend::Slirp => {
            let slirp = VmOptions {
                user_net: true,
                ..opts.clone()
            };
            (Vm::boot(Path::new("/nonexistent"), &slirp), None)
        }
    };
    let qemu_pid = vm.qemu_pid().expect("QEMU runs");
    vm.bring_up();
    let mut s = Sample::new();

    // Idle: nothing runs in the guest; what wakes the backend now is its own doing.
    if let Some(pid) = backend_pid {
        let c0 = context_switches(pid);
        std::thread::sleep(IDLE);
        let c1 = context_switches(pid);
        s.insert(
            "backend wake-ups/s, idle guest",
            (c1 - c0) as f64 / IDLE.as_secs_f64(),
        );
    }

    s.insert("ping p50 to the gateway, ms", ping_p50_ms(&mut vm));
    let (p50, p99) = rr(&mut vm, ports.echo);
    s.insert("TCP RR p50, µs", p50);
    s.insert("TCP RR p99, µs", p99);

    for reverse in [false, true] {
        let irq_in0 = guest_interrupts(&mut vm, "input");
        let irq_all0 = guest_interrupts(&mut vm, "put");
        let backend0 = backend_pid.map(cpu_seconds);
        let switches0 = backend_pid.map(context_switches);
        let qemu0 = cpu_seconds(qemu_pid);
        let with_stats = std::env::var_os("VIRTGATE_BENCH_STATS").is_some();
        let stats0 = virtgate
            .as_ref()
            .filter(|_| with_stats)
            .map(|vg| vg.stats());
        let guest0 = with_stats.then(|| guest_counters(&mut vm));
        let r = iperf(&mut vm, ports.iperf, seconds, reverse);
        if let (Some(vg), Some(before)) = (virtgate.as_ref(), stats0) {
            print_counter_deltas(config.label, reverse, &before, &vg.stats());
        }
        if let Some(before) = guest0 {
            let after = guest_counters(&mut vm);
            print_guest_deltas(config.label, reverse, &before, &after);
        }
        let qemu = cpu_seconds(qemu_pid) - qemu0;
        let backend = backend_pid.zip(backend0).map(|(p, c)| cpu_seconds(p) - c);
        let switches = backend_pid
            .zip(switches0)
            .map(|(p, c)| context_switches(p).saturating_sub(c));
        let mb = r.bytes / 1e6;
        let (dir, irq_row) = if reverse {
            (
                "host → guest",
                (
                    "guest RX interrupts per MB, host → guest",
                    guest_interrupts(&mut vm, "input") - irq_in0,
                ),
            )
        } else {
            (
                "guest → host",
                (
                    "guest interrupts per MB, guest → host",
                    guest_interrupts(&mut vm, "put") - irq_all0,
                ),
            )
        };
        // Rows of this direction by their first words ("QEMU CPU" ...).
        let row = |what: &str| -> &'static str {
            ROWS.iter()
                .map(|(name, _)| *name)
                .find(|name| name.starts_with(what) && name.contains(dir))
                .expect("row")
        };
        s.insert(row(dir), r.mbps);
        s.insert(row(&format!("{dir} retransmissions")), r.retransmits);
        if r.bytes > 0.0 {
            s.insert(row("QEMU CPU"), qemu * 1e9 / r.bytes);
            if let Some(b) = backend {
                s.insert(row("backend CPU"), b * 1e9 / r.bytes);
            }
            if let Some(w) = switches {
                s.insert(row("backend wake-ups"), w as f64 / mb);
            }
            s.insert(irq_row.0, irq_row.1 / mb);
        }
    }
    vm.kill();
    drop(virtgate);
    drop(passt_proc);
    s
}

/// `VIRTGATE_BENCH_STATS`: virtgate's device counters (and its stack's TCP ones) that moved
/// during one iperf3 direction, for where the wake-ups and interrupts come from.
fn print_counter_deltas(
    label: &str,
    reverse: bool,
    before: &serde_json::Value,
    after: &serde_json::Value,
) {
    let dir = if reverse {
        "host → guest"
    } else {
        "guest → host"
    };
    let mut moved = Vec::new();
    for (section, keep) in [("device", ""), ("stack", "tcp_")] {
        if let Some(counters) = after[section].as_object() {
            for (name, v) in counters {
                let delta = v
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(before[section][name].as_u64().unwrap_or(0));
                if delta > 0 && name.starts_with(keep) {
                    moved.push(format!("{name} {delta}"));
                }
            }
        }
    }
    eprintln!("   {label}, {dir}: {}", moved.join(", "));
}

fn env_u32(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let iperf_bin = PathBuf::from("/usr/bin/iperf3");
    assert!(
        iperf_bin.is_file(),
        "iperf3 is not installed (scripts/bench-setup.sh installs it)"
    );
    let rounds = env_u32("VIRTGATE_BENCH_ROUNDS", 3).max(1);
    let seconds = env_u32("VIRTGATE_BENCH_SECONDS", 8).max(1);
    // Labels separated by commas (so no label has one); empty or unset: every configuration.
    let only: Option<Vec<String>> = std::env::var("VIRTGATE_BENCH_ONLY")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let passt = std::env::var_os("VIRTGATE_PASST")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if passt.is_none() {
        println!("passt is not available (scripts/bench-setup.sh could not build it): its columns are left out");
    }
    let alt = std::env::var_os("VIRTGATE_BENCH_ALT")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    let configs: Vec<&Config> = CONFIGS
        .iter()
        .chain(ALT_CONFIGS.iter().filter(|_| alt.is_some()))
        .filter(|c| passt.is_some() || !matches!(c.backend, Backend::Passt(_)))
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|l| l == c.label)))
        .collect();

    let _ping = PingGroupRange::open_to_all();
    let ports = Ports {
        iperf: guest_tests::unused_tcp_port(),
        echo: echo_server(),
    };
    let mut server = iperf_server(ports.iperf);
    // iperf3 listens within a moment; the guest's first connection retries anyway.
    std::thread::sleep(Duration::from_millis(300));
    let opts = VmOptions {
        host_programs: vec![iperf_bin],
        ..VmOptions::default()
    };

    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, c) in configs.iter().enumerate() {
            println!("== round {round}/{rounds}: {}", c.label);
            let s = measure(
                c,
                (passt.as_deref(), alt.as_deref()),
                &opts,
                &ports,
                seconds,
            );
            println!(
                "   {:.0} / {:.0} Mbit/s, RR p50 {:.0} µs",
                s.get("guest → host, Mbit/s").unwrap_or(&f64::NAN),
                s.get("host → guest, Mbit/s").unwrap_or(&f64::NAN),
                s.get("TCP RR p50, µs").unwrap_or(&f64::NAN)
            );
            samples[i].push(s);
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let accel = std::env::var("VIRTGATE_ACCEL").unwrap_or_else(|_| "tcg".into());
    let qemu = Command::new(std::env::var("VIRTGATE_QEMU").unwrap_or("qemu-system-x86_64".into()))
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    println!(
        "\n{rounds} interleaved rounds, guest under {accel} ({qemu}), iperf3 {seconds} s each way to the host's 127.0.0.1, \
         {RR_EXCHANGES} RR exchanges of {RR_SIZE} B, {PINGS} pings, {} s idle; median [min–max]\n",
        IDLE.as_secs()
    );
    let mut table = String::new();
    table.push_str("| |");
    for c in &configs {
        table.push_str(&format!(" {} |", c.label));
    }
    table.push_str("\n| --- |");
    for _ in &configs {
        table.push_str(" ---: |");
    }
    table.push('\n');
    let mut medians: Vec<BTreeMap<&str, f64>> = configs.iter().map(|_| BTreeMap::new()).collect();
    for (row, decimals) in ROWS {
        table.push_str(&format!("| {row} |"));
        for (i, _) in configs.iter().enumerate() {
            let mut v: Vec<f64> = samples[i]
                .iter()
                .filter_map(|s| s.get(row).copied())
                .filter(|v| v.is_finite())
                .collect();
            if v.is_empty() {
                table.push_str(" – |");
                continue;
            }
            let m = median(&mut v);
            medians[i].insert(row, m);
            let (lo, hi) = (v[0], v[v.len() - 1]);
            if v.len() > 1 && lo != hi {
                table.push_str(&format!(
                    " {m:.decimals$} [{lo:.decimals$}–{hi:.decimals$}] |"
                ));
            } else {
                table.push_str(&format!(" {m:.decimals$} |"));
            }
        }
        table.push('\n');
    }
    println!("{table}");

    // Ratios of medians, virtgate over its counterpart at the same MTU. For rates higher is
    // better; for costs and latencies lower is.
    let find = |label: &str| configs.iter().position(|c| c.label == label);
    let pairs = [
        ("virtgate", "passt -m 1500"),
        ("virtgate --mtu 65520", "passt (MTU 65520)"),
        ("virtgate --offloads none", "passt -m 1500"),
        ("virtgate --offloads csum", "passt -m 1500"),
        (
            "virtgate --offloads csum --tcp-options (no ts)",
            "passt -m 1500",
        ),
        ("virtgate", "slirp"),
        ("alt", "virtgate"),
        ("alt --mtu 65520", "virtgate --mtu 65520"),
        ("alt --mtu 65520", "passt (MTU 65520)"),
        ("alt --offloads none", "virtgate --offloads none"),
        ("alt --offloads csum", "virtgate --offloads csum"),
    ];
    let mut ratios = String::from("| ratio of medians |");
    let present: Vec<(usize, usize, &str, &str)> = pairs
        .iter()
        .filter_map(|(a, b)| Some((find(a)?, find(b)?, *a, *b)))
        .collect();
    for (_, _, a, b) in &present {
        ratios.push_str(&format!(" {a} / {b} |"));
    }
    ratios.push_str("\n| --- |");
    for _ in &present {
        ratios.push_str(" ---: |");
    }
    ratios.push('\n');
    for (row, _) in ROWS {
        ratios.push_str(&format!("| {row} |"));
        for (a, b, _, _) in &present {
            match (medians[*a].get(row), medians[*b].get(row)) {
                (Some(x), Some(y)) if *y != 0.0 => ratios.push_str(&format!(" {:.2} |", x / y)),
                _ => ratios.push_str(" – |"),
            }
        }
        ratios.push('\n');
    }
    println!("{ratios}");
    let out = guest_tests::workspace_root().join("target/bench");
    let _ = std::fs::create_dir_all(&out);
    let file = out.join("bench-vm.md");
    if std::fs::write(&file, format!("{table}\n{ratios}")).is_ok() {
        println!("(tables written to {})", file.display());
    }
}
