//! The VM harness: boots a real Linux guest on a virtgate NIC under QEMU and drives it over the serial
//! console.
//!
//! - [`GuestImage`]: the guest, prepared once per test run and cached under `target/guest/`: a
//!   Debian kernel ([`GuestKernel`], fetched by `scripts/setup.sh`: 6.1 by default, 6.12 and 5.10
//!   for the matrix), its virtio modules, busybox-static, the guest programs and an init script,
//!   packed into an uncompressed initramfs built here.
//! - [`Virtgate`]: a virtgate process on a private socket with a stats file.
//! - [`Vm`]: QEMU under TCG (`VIRTGATE_ACCEL=kvm` to opt in) attached to a [`Virtgate`]. Commands are
//!   framed by unique markers and return the exit status; every wait has a timeout; both processes
//!   are killed on drop, also when a test panics, and the console log is printed on failure.
//!
//! Nothing here skips: a missing QEMU, kernel or binary is a failed test with the reason.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod cpio;
pub mod dns;
pub mod exerciser;
pub mod transfer;

pub use exerciser::{CallChain, Counters};

/// The MAC the harness gives the guest NIC (`-device virtio-net-pci,mac=`).
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

/// The guest kernels scripts/setup.sh unpacks (`--all-kernels` for all but the first): the
/// name a test binary or `VIRTGATE_GUEST_KERNEL` uses, and the cache directory.
pub const GUEST_KERNELS: [(&str, &str); 3] = [
    ("6.1", "kernel"),
    ("6.12", "kernel-6.12"),
    ("5.10", "kernel-5.10"),
];

/// A guest kernel: Debian's image unpacked by scripts/setup.sh into a directory holding
/// `vmlinuz`, `version`, `modules/NAME.ko` and `modules.load` (the NIC's modules this kernel
/// has as files, in load order: virtio's, then TUN for the forwarding scenarios; the rest are
/// built in).
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// `6.1`, `6.12`, `5.10`, or the directory given.
    pub name: String,
    pub dir: PathBuf,
}

impl GuestKernel {
    /// The kernel this test process boots. A test binary named `linux_X_Y_*` (the matrix:
    /// `tests/linux_6_12_foundation.rs`) boots Linux X.Y whatever the environment says, so that
    /// its test names say which kernel ran; the other binaries boot `VIRTGATE_GUEST_KERNEL` (a
    /// name above or a directory laid out the same way), 6.1 by default.
    pub fn current() -> &'static GuestKernel {
        static KERNEL: OnceLock<GuestKernel> = OnceLock::new();
        KERNEL.get_or_init(|| {
            let named = std::env::current_exe()
                .ok()
                .and_then(|exe| kernel_of_binary(&exe.file_name()?.to_string_lossy()));
            let chosen = named
                .or_else(|| std::env::var("VIRTGATE_GUEST_KERNEL").ok())
                .unwrap_or_else(|| GUEST_KERNELS[0].0.to_string());
            GuestKernel::named(&chosen).unwrap_or_else(|e| panic!("guest kernel: {e}"))
        })
    }

    /// A kernel by its name in [`GUEST_KERNELS`], or a directory.
    pub fn named(name: &str) -> Result<GuestKernel, String> {
        let dir = match GUEST_KERNELS.iter().find(|(n, _)| *n == name) {
            Some((_, dir)) => guest_cache().join(dir),
            None if name.contains('/') => PathBuf::from(name),
            None => {
                let names: Vec<_> = GUEST_KERNELS.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "{name:?} is neither one of {names:?} nor a directory"
                ));
            }
        };
        if !dir.join("vmlinuz").is_file() || !dir.join("modules.load").is_file() {
            let hint = if name == GUEST_KERNELS[0].0 {
                "scripts/setup.sh"
            } else {
                "scripts/setup.sh --all-kernels"
            };
            return Err(format!(
                "Linux {name}: {} has no vmlinuz or modules.load: run {hint}",
                dir.display()
            ));
        }
        Ok(GuestKernel {
            name: name.to_string(),
            dir,
        })
    }

    /// The kernel's release (`uname -r` in the guest), as setup recorded it.
    pub fn release(&self) -> String {
        std::fs::read_to_string(self.dir.join("version"))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    }

    /// Major and minor version, from the release (`6.12.95+deb12-amd64` is (6, 12)).
    pub fn version(&self) -> (u32, u32) {
        let release = self.release();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// At least this version.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version() >= (major, minor)
    }

    /// The NIC's modules as files, in load order: (name, the module's bytes).
    fn modules(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let path = self.dir.join("modules.load");
        let list =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        list.split_whitespace()
            .map(|m| {
                Ok((
                    m.to_string(),
                    read_file(&self.dir.join(format!("modules/{m}.ko")))?,
                ))
            })
            .collect()
    }
}

/// The kernel a test binary's name asks for: `linux_6_12_foundation-0123abcd` is 6.12.
fn kernel_of_binary(file_name: &str) -> Option<String> {
    let rest = file_name.strip_prefix("linux_")?;
    let numbers: Vec<&str> = rest
        .split('_')
        .take_while(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    (numbers.len() >= 2).then(|| numbers.join("."))
}

/// The workspace root (guest-tests/..).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("guest-tests lives in the workspace")
        .to_path_buf()
}

fn guest_cache() -> PathBuf {
    std::env::var_os("VIRTGATE_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/guest"))
}

/// The virtgate binary under test: `$VIRTGATE_BIN`, else the release build.
pub fn virtgate_bin() -> PathBuf {
    let p = std::env::var_os("VIRTGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/virtgate"));
    assert!(
        p.is_file(),
        "virtgate binary {} not found: run `cargo build --release -p virtgate` or scripts/test.sh",
        p.display()
    );
    p
}

/// The guest's init: load the NIC driver, say READY, then read commands from the console.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo 1 > /proc/sys/kernel/printk
for m in MODULE_LIST; do insmod /lib/modules/$m.ko || echo "insmod $m failed"; done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
stty -echo 2>/dev/null
echo "VIRTGATE""-GUEST-KERNEL $(uname -r)"
echo "VIRTGATE""-GUEST-READY"
# Booted by something other than the harness (libvirt in guest-tests/tests/libvirt.rs), nobody
# types the lease request: virtgate.dhcp on the command line asks for it here.
if grep -qw virtgate.dhcp /proc/cmdline; then
    ip link set eth0 up
    udhcpc -i eth0 -n -q -t 10 -T 2 >/dev/console 2>&1 &
fi
export PS1=''
# The command shell reads the console as a script file, so it is not interactive: an interactive ash
# exits when a background job ends while its line editor waits for input. It is not PID 1 either,
# so orphans are reaped here.
sh /dev/console </dev/null >/dev/console 2>&1 &
shell=$!
while kill -0 $shell 2>/dev/null; do wait $shell; done
echo "VIRTGATE-GUEST-SHELL-EXITED"
while :; do sleep 3600; done
"#;

/// udhcpc's event script: apply the lease (address, router, DNS, MTU) and record it for tests.
/// Only IPv4 addresses are flushed: the IPv6 ones, the link-local first, are the kernel's.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    { echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "dns=$dns";
      echo "lease=$lease"; echo "mtu=$mtu"; echo "domain=$domain"; echo "serverid=$serverid"; } > /run/lease
    ;;
esac
exit 0
"#;

/// The guest kernel's command line: the serial console, quiet, the initramfs's init.
pub const KERNEL_APPEND: &str = "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init";
/// What the guest's init prints on the console when its shell is ready for commands.
pub const READY_MARKER: &str = "VIRTGATE-GUEST-READY";

/// The prepared guest: kernel, initramfs and the kernel command line they boot with.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub append: String,
}

impl GuestImage {
    /// Builds (once per process, and atomically on disk so parallel test processes agree) the
    /// initramfs from the cached kernel modules and the host's busybox-static.
    pub fn get() -> &'static GuestImage {
        static IMAGE: OnceLock<GuestImage> = OnceLock::new();
        IMAGE.get_or_init(|| GuestImage::build(&[]).unwrap_or_else(|e| panic!("guest image: {e}")))
    }

    /// An image that also holds these host programs (dynamically linked ones with the libraries
    /// `ldd` names, at the same paths), for tools such as iperf3 that are not built here.
    pub fn with_host_programs(programs: &[PathBuf]) -> GuestImage {
        GuestImage::build(programs).unwrap_or_else(|e| panic!("guest image: {e}"))
    }

    fn build(host_programs: &[PathBuf]) -> Result<GuestImage, String> {
        let cache = guest_cache();
        let guest_kernel = GuestKernel::current();
        let kernel = guest_kernel.dir.join("vmlinuz");
        let modules = guest_kernel.modules()?;
        let busybox = host_busybox()?;
        let mut archive = cpio::Archive::new();
        for dir in [
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "proc",
            "sys",
            "dev",
            "etc",
            "run",
            "tmp",
            "lib",
            "lib/modules",
            "etc/udhcpc",
        ] {
            archive.dir(dir);
        }
        archive.file("bin/busybox", 0o755, &read_file(&busybox)?);
        let names: Vec<&str> = modules.iter().map(|(m, _)| m.as_str()).collect();
        let init = INIT.replace("MODULE_LIST", &names.join(" "));
        archive.file("init", 0o755, init.as_bytes());
        archive.file("etc/udhcpc/default.script", 0o755, UDHCPC_SCRIPT.as_bytes());
        archive.file("etc/resolv.conf", 0o644, b"");
        for (m, ko) in &modules {
            archive.file(&format!("lib/modules/{m}.ko"), 0o644, ko);
        }
        for (name, bytes) in guest_programs()? {
            archive.file(&format!("usr/bin/{name}"), 0o755, &bytes);
        }
        let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
        for file in host_program_files(host_programs)? {
            let rel = file.strip_prefix("/").unwrap_or(&file).to_path_buf();
            for anc in rel.ancestors().skip(1) {
                if !anc.as_os_str().is_empty() && dirs.insert(anc.to_path_buf()) {
                    archive.dir(&anc.to_string_lossy());
                }
            }
            archive.file(&rel.to_string_lossy(), 0o755, &read_file(&file)?);
        }
        let bytes = archive.finish();
        let digest = fnv1a(&bytes);
        let initramfs = cache.join(format!("initramfs-{digest:016x}.cpio"));
        write_once(&initramfs, || Ok(bytes))?;
        Ok(GuestImage {
            kernel,
            initramfs,
            append: KERNEL_APPEND.to_string(),
        })
    }

    /// A Debian 12 guest with systemd as init and its own network stack (`virtgate.net=`:
    /// `networkd`, `ifupdown` or `dhcpcd`): the image scripts/distro-image.sh builds (from
    /// Debian's archive, cached) with, appended, this kernel's NIC modules and an `/init` that
    /// loads them with busybox and hands over to systemd. The console shell is a systemd service
    /// of the image (guest-tests/distro/files), so [`Vm::run`] works as with the busybox guest.
    pub fn distro(stack: &str) -> GuestImage {
        GuestImage::build_distro(stack).unwrap_or_else(|e| panic!("distribution image: {e}"))
    }

    fn build_distro(stack: &str) -> Result<GuestImage, String> {
        let script = workspace_root().join("scripts/distro-image.sh");
        let out = Command::new(&script)
            .env("VIRTGATE_GUEST_CACHE", guest_cache())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): run scripts/setup.sh --distro",
                script.display(),
                out.status
            ));
        }
        let rootfs = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let kernel = GuestKernel::current();
        let modules = kernel.modules()?;
        let busybox = host_busybox()?;
        // The overlay: a second newc archive after the image's (the kernel unpacks both).
        let mut overlay = cpio::Archive::new();
        overlay.dir("virtgate");
        overlay.dir("virtgate/modules");
        overlay.file("virtgate/busybox", 0o755, &read_file(&busybox)?);
        for (m, ko) in &modules {
            overlay.file(&format!("virtgate/modules/{m}.ko"), 0o644, ko);
        }
        let names: Vec<&str> = modules.iter().map(|(m, _)| m.as_str()).collect();
        let init = format!(
            "#!/virtgate/busybox sh\n\
             # The NIC's modules of the booted kernel (the image has no kernel), then systemd.\n\
             for m in {}; do /virtgate/busybox insmod /virtgate/modules/$m.ko; done\n\
             exec /sbin/init\n",
            names.join(" ")
        );
        overlay.file("init", 0o755, init.as_bytes());
        let overlay = overlay.finish();
        let name = rootfs
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let initramfs = guest_cache().join(format!(
            "{name}-{:016x}.cpio",
            fnv1a(&overlay) ^ fnv1a(kernel.release().as_bytes())
        ));
        write_once(&initramfs, || {
            let mut bytes = read_file(&rootfs)?;
            // newc archives are padded to 4 bytes; the kernel skips the zeros between archives.
            bytes.resize(bytes.len().next_multiple_of(512), 0);
            bytes.extend_from_slice(&overlay);
            Ok(bytes)
        })?;
        Ok(GuestImage {
            kernel: kernel.dir.join("vmlinuz"),
            initramfs,
            append: format!(
                "{KERNEL_APPEND} net.ifnames=0 systemd.show_status=0 virtgate.net={stack}"
            ),
        })
    }
}

/// A file's bytes, or an error naming it.
fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `path` unless it exists, with what `bytes` makes, atomically (a temporary file renamed),
/// so that test processes building the same cached file in parallel agree.
fn write_once(path: &Path, bytes: impl FnOnce() -> Result<Vec<u8>, String>) -> Result<(), String> {
    if path.is_file() {
        return Ok(());
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes()?).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The host's busybox-static, which the guests run as their tools (and the distribution guest's
/// `/init`).
fn host_busybox() -> Result<PathBuf, String> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| "busybox-static is not installed: run scripts/setup.sh".to_string())
}

/// The programs and the shared libraries they load (from `ldd`), as absolute host paths.
fn host_program_files(programs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for p in programs {
        files.push(p.clone());
        let out = Command::new("ldd")
            .arg(p)
            .output()
            .map_err(|e| format!("ldd {}: {e}", p.display()))?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(path) = path.filter(|p| p.starts_with('/')) {
                let path = PathBuf::from(path);
                if !files.contains(&path) {
                    files.push(path);
                }
            }
        }
    }
    Ok(files)
}

/// Static guest programs built from `guest-tests/guest/*.c` (what busybox lacks: UDP and TCP test
/// tools, NDP/DHCPv6 probes, `channels` for ethtool's -l/-L); compiled once with the host's gcc
/// into the cache.
fn guest_programs() -> Result<Vec<(String, Vec<u8>)>, String> {
    let src_dir = workspace_root().join("guest-tests/guest");
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(&src_dir) else {
        return Ok(out);
    };
    let mut sources: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for src in sources {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let code = std::fs::read(&src).map_err(|e| e.to_string())?;
        let bin = guest_cache().join(format!("prog-{name}-{:016x}", fnv1a(&code)));
        if !bin.is_file() {
            let tmp = bin.with_extension(format!("{}.tmp", std::process::id()));
            let status = Command::new("cc")
                .args(["-static", "-O2", "-Wall", "-o"])
                .arg(&tmp)
                .arg(&src)
                .status()
                .map_err(|e| format!("cc: {e}"))?;
            if !status.success() {
                return Err(format!("compiling {} failed", src.display()));
            }
            std::fs::rename(&tmp, &bin).map_err(|e| e.to_string())?;
        }
        out.push((name, std::fs::read(&bin).map_err(|e| e.to_string())?));
    }
    Ok(out)
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A fresh directory under the temp dir, unique to this process and call (`virtgate-TAG-PID-N`).
pub fn unique_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "virtgate-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Text collected from a child's output by a reader thread.
#[derive(Clone, Default)]
struct Log {
    inner: Arc<(Mutex<String>, Condvar)>,
}

impl Log {
    fn spawn_reader(&self, stream: impl Read + Send + 'static) {
        let log = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).replace('\r', "");
                        let (m, cv) = &*log.inner;
                        m.lock().unwrap().push_str(&text);
                        cv.notify_all();
                    }
                }
            }
        });
    }

    fn text(&self) -> String {
        self.inner.0.lock().unwrap().clone()
    }

    /// Waits until `pred` finds something in the text from `from` on; returns its result.
    fn wait_for<T>(
        &self,
        from: usize,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut text = m.lock().unwrap();
        loop {
            if let Some(found) = pred(text.get(from..).unwrap_or("")) {
                return Some(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            text = cv.wait_timeout(text, deadline - now).unwrap().0;
        }
    }

    fn len(&self) -> usize {
        self.inner.0.lock().unwrap().len()
    }
}

/// A running virtgate on a private socket.
pub struct Virtgate {
    child: Option<Child>,
    dir: PathBuf,
    pub socket: PathBuf,
    pub stats_file: PathBuf,
    /// The control API's socket (`--api-socket`: the test's own, or one in the private dir).
    pub api: PathBuf,
    log: Log,
}

impl Virtgate {
    /// Starts virtgate with extra arguments and waits until its socket accepts connections.
    ///
    /// The host's resolvers are never used (`--resolv-conf /dev/null`): tests reach only what they
    /// create on the loopback, and give `--dns-upstream` when they need DNS.
    pub fn start(extra: &[&str]) -> Virtgate {
        virtgate_bin(); // fail before creating anything
        Virtgate::start_in(&unique_dir("vg"), extra)
    }

    /// [`Virtgate::start`] with another virtgate binary (a benchmark's A/B comparison).
    pub fn start_binary(bin: &Path, extra: &[&str]) -> Virtgate {
        Virtgate::spawn(&unique_dir("vg"), Command::new(bin), extra)
    }

    /// Starts virtgate with its socket and stats file in `dir` (to restart on the same socket).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Virtgate {
        Virtgate::spawn(dir, Command::new(virtgate_bin()), extra)
    }

    /// Runs a command in virtgate's network namespace (`nsenter --net`); it must succeed. For a
    /// virtgate from [`Virtgate::start_isolated`], whose namespace the test owns.
    pub fn netns_run(&self, args: &[&str]) {
        let out = Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg("--")
            .args(args)
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "{args:?} in virtgate's namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a thread that joined virtgate's network namespace (setns(2) changes only the
    /// calling thread): sockets it opens live there. Returns the thread's handle.
    pub fn in_netns<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid())).expect("netns");
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) with an open namespace file and a valid nstype; it affects only
            // this thread, which owns nothing yet.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Starts virtgate with extra environment variables (the test-only fault injection).
    pub fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> Virtgate {
        let mut cmd = Command::new(virtgate_bin());
        cmd.envs(env.iter().copied());
        Virtgate::spawn(&unique_dir("vg"), cmd, extra)
    }

    /// Starts virtgate in a network namespace of its own (`unshare --net`, as root), which has
    /// only a loopback that is down: every host socket it opens fails with "network unreachable",
    /// and no packet can leave the machine. The QEMU socket is a path, so QEMU still reaches it.
    pub fn start_isolated(extra: &[&str]) -> Virtgate {
        let mut cmd = Command::new("unshare");
        cmd.arg("--net").arg("--").arg(virtgate_bin());
        Virtgate::spawn(&unique_dir("vg"), cmd, extra)
    }

    fn spawn(dir: &Path, mut cmd: Command, extra: &[&str]) -> Virtgate {
        let dir = dir.to_path_buf();
        let socket = dir.join("vm.sock");
        // A socket file left by a virtgate that was killed is not this one's: wait for the new
        // file (virtgate replaces a stale one), whose inode differs.
        let stale = std::fs::metadata(&socket).ok().map(|m| m.ino());
        let stats_file = dir.join("stats.json");
        let api = match extra.iter().position(|a| *a == "--api-socket") {
            Some(i) => PathBuf::from(extra[i + 1]),
            None => {
                cmd.arg("--api-socket").arg(dir.join("api.sock"));
                dir.join("api.sock")
            }
        };
        let mut child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--stats-file")
            .arg(&stats_file)
            .args(["--resolv-conf", "/dev/null"])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("VIRTGATE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn virtgate");
        let log = Log::default();
        log.spawn_reader(child.stderr.take().unwrap());
        let mut vg = Virtgate {
            child: Some(child),
            dir,
            socket,
            stats_file,
            api,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&vg.socket).map_or(true, |m| Some(m.ino()) == stale) {
            if let Some(status) = vg.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("virtgate exited early ({status}):\n{}", vg.log.text());
            }
            assert!(Instant::now() < deadline, "virtgate socket never appeared");
            std::thread::sleep(Duration::from_millis(20));
        }
        vg
    }

    /// The directory of its sockets and stats file, where it may also write captures (the
    /// sandbox's Landlock rules allow writes only there and under `--capture-dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Asks virtgate for fresh counters (SIGUSR1) and reads the stats file.
    pub fn stats(&self) -> serde_json::Value {
        let before = std::fs::metadata(&self.stats_file)
            .and_then(|m| m.modified())
            .ok();
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        unsafe { libc::kill(self.pid(), libc::SIGUSR1) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now_mod = std::fs::metadata(&self.stats_file)
                .and_then(|m| m.modified())
                .ok();
            if now_mod.is_some() && now_mod != before {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "stats file not written after SIGUSR1"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.read_stats()
    }

    /// `virtgate ctl ARGS...` against this virtgate's API: its output, or its error message.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(virtgate_bin())
            .arg("ctl")
            .arg("--api-socket")
            .arg(&self.api)
            .args(args)
            .output()
            .expect("run virtgate ctl");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// [`Virtgate::try_ctl`] that must succeed.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("virtgate ctl {args:?}: {e}"))
    }

    /// Sends a built-in probe (`virtgate ctl probe NAME --KEY VALUE...`); returns the frames
    /// queued, which must be all that were built.
    pub fn probe(&self, name: &str, params: &[(&str, &str)]) -> u64 {
        let mut args = vec!["probe", name];
        let keys: Vec<String> = params.iter().map(|(k, _)| format!("--{k}")).collect();
        for ((_, v), k) in params.iter().zip(&keys) {
            args.push(k);
            args.push(v);
        }
        let out: serde_json::Value =
            serde_json::from_str(&self.ctl(&args)).expect("probe answers JSON");
        assert_eq!(out["dropped"], 0, "probe {name}: {out}");
        out["frames"].as_u64().expect("frames")
    }

    /// One counter of the stats document (`stack` or `device` section), fresh.
    pub fn counter(&self, section: &str, name: &str) -> i64 {
        let s = self.stats();
        s[section][name]
            .as_i64()
            .unwrap_or_else(|| panic!("no counter {section}.{name}"))
    }

    /// The counter once it has reached `at_least` (polled for up to `timeout`; its value then, or
    /// what it is at the deadline): a worker publishes its counters after the batch that sent
    /// the guest the frame a test waited for, so a read right after the guest saw it can be a
    /// batch behind.
    pub fn counter_at_least(
        &self,
        section: &str,
        name: &str,
        at_least: i64,
        timeout: Duration,
    ) -> i64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.counter(section, name);
            if v >= at_least || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads the stats file as it is.
    pub fn read_stats(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.stats_file).expect("stats file");
        serde_json::from_str(&text).expect("stats file is JSON")
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit status.
    /// Waits (bounded) for virtgate to exit on its own; its status, or None if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) with our child's pid and a valid signal number.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("virtgate ignored SIGTERM:\n{}", self.log.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills virtgate outright (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Virtgate {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- virtgate log ----\n{}", self.log.text());
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Options for a VM.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// QEMU's own user-mode network (`-netdev user`, libslirp) instead of virtgate: the baseline
    /// of the benchmarks.
    pub user_net: bool,
    /// Host programs to put in the guest image (see [`GuestImage::with_host_programs`]).
    pub host_programs: Vec<PathBuf>,
    pub memory_mib: u32,
    pub mac: String,
    /// `reconnect=N` on the chardev: QEMU reconnects to a restarted virtgate.
    pub reconnect_secs: Option<u32>,
    pub boot_timeout: Duration,
    /// Queue pairs of the NIC (`queues=` on the netdev, `mq=on` on the device; virtgate needs
    /// `--queues` as many).
    pub queue_pairs: u32,
    /// Guest CPUs (Linux's virtio-net uses as many queue pairs as CPUs by default).
    pub cpus: u32,
    /// Another guest than the busybox one (e.g. [`GuestImage::distro`]).
    pub image: Option<GuestImage>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            user_net: false,
            host_programs: Vec::new(),
            memory_mib: 512,
            mac: GUEST_MAC.into(),
            reconnect_secs: None,
            boot_timeout: Duration::from_secs(120),
            queue_pairs: 1,
            cpus: 1,
            image: None,
        }
    }
}

/// The QEMU binary and its major version.
fn qemu() -> (PathBuf, u32) {
    let bin = std::env::var_os("VIRTGATE_QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"));
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "QEMU ({}) not runnable: {e}; run scripts/setup.sh",
                bin.display()
            )
        });
    let text = String::from_utf8_lossy(&out.stdout);
    let major = text
        .split("version ")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read QEMU's version from {text:?}"));
    (bin, major)
}

/// The major version of the QEMU the guests boot with (`VIRTGATE_QEMU`).
pub fn qemu_major() -> u32 {
    qemu().1
}

/// Extra QEMU arguments from `$VIRTGATE_QEMU_ARGS` (split on white space), e.g. `-L DIR` for a QEMU
/// unpacked outside the system paths.
fn extra_qemu_args() -> Vec<String> {
    std::env::var("VIRTGATE_QEMU_ARGS")
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// A guest attached to a virtgate socket.
pub struct Vm {
    child: Option<Child>,
    stdin: ChildStdin,
    console: Log,
    next_id: u64,
}

/// The address family a test runs over: the same test, once for each (rstest
/// `#[values(Family::V4, Family::V6)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The gateway's address as the guest dials it (the host's loopback behind it).
    pub fn gateway(self) -> &'static str {
        match self {
            Family::V4 => "10.0.2.2",
            Family::V6 => "fd00::2",
        }
    }

    /// The gateway's address in a URL.
    pub fn url_host(self) -> &'static str {
        match self {
            Family::V4 => "10.0.2.2",
            Family::V6 => "[fd00::2]",
        }
    }

    /// The DNS address handed to the guest.
    pub fn dns(self) -> &'static str {
        match self {
            Family::V4 => "10.0.2.3",
            Family::V6 => "fd00::3",
        }
    }

    /// The host loopback the gateway's address maps to.
    pub fn loopback(self) -> std::net::IpAddr {
        match self {
            Family::V4 => std::net::Ipv4Addr::LOCALHOST.into(),
            Family::V6 => std::net::Ipv6Addr::LOCALHOST.into(),
        }
    }

    /// `--forward` host side for `port` on this family's loopback.
    pub fn forward_host(self, port: u16) -> String {
        match self {
            Family::V4 => format!("127.0.0.1:{port}"),
            Family::V6 => format!("[::1]:{port}"),
        }
    }

    /// How a guest server on a dual-stack socket sees a host client of a forward: the gateway,
    /// IPv4-mapped for IPv4.
    pub fn gateway_as_seen_by_guest_server(self) -> &'static str {
        match self {
            Family::V4 => "::ffff:10.0.2.2",
            Family::V6 => "fd00::2",
        }
    }

    /// Brings the guest up for this family (IPv6: dual stack, nothing configured by hand).
    pub fn bring_up(self, vm: &mut Vm) {
        match self {
            Family::V4 => {
                vm.bring_up();
            }
            Family::V6 => {
                vm.bring_up_dual_stack();
            }
        }
    }
}

/// The offloads a test runs with: virtgate's default (every offload the guest kernel takes:
/// partial checksums and TSO both ways) or `--offloads none` (the guest computes and verifies
/// every checksum and segments everything itself). rstest: `#[values(Offloads::All, Offloads::None)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    All,
    None,
}

impl Offloads {
    /// virtgate arguments: `extra` with this setting.
    pub fn args<'a>(self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut v = extra.to_vec();
        if self == Offloads::None {
            v.extend(["--offloads", "none"]);
        }
        v
    }

    /// The end of a test: the guest's driver negotiated exactly these offloads, and its TCP and
    /// UDP counted no checksum error.
    pub fn check(self, vm: &mut Vm) {
        let features = vm.assert_no_checksum_errors();
        // CSUM (0), GUEST_CSUM (1), GUEST_TSO4 (7), GUEST_TSO6 (8), HOST_TSO4 (11), HOST_TSO6 (12).
        let bits: u64 = [0, 1, 7, 8, 11, 12].iter().fold(0, |a, b| a | (1 << b));
        let expected = match self {
            Offloads::All => bits,
            Offloads::None => 0,
        };
        assert_eq!(
            features & bits,
            expected,
            "negotiated features {features:#x}"
        );
    }
}

/// The result of a guest command.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: String,
}

impl Output {
    /// Panics with the output unless the command succeeded.
    pub fn ok(self) -> String {
        assert_eq!(self.status, 0, "guest command failed:\n{}", self.stdout);
        self.stdout
    }
}

impl Vm {
    /// Boots a guest on `socket` and waits for its shell.
    pub fn boot(socket: &Path, opts: &VmOptions) -> Vm {
        Vm::try_boot(socket, opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Vm::boot`], or why not: QEMU exited (with its output) or the guest did not boot in time.
    pub fn try_boot(socket: &Path, opts: &VmOptions) -> Result<Vm, String> {
        let owned;
        let image = if let Some(image) = &opts.image {
            image
        } else if opts.host_programs.is_empty() {
            GuestImage::get()
        } else {
            owned = GuestImage::with_host_programs(&opts.host_programs);
            &owned
        };
        let (qemu, major) = qemu();
        let accel = std::env::var("VIRTGATE_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut chardev = format!("socket,id=c0,path={}", socket.display());
        if let Some(r) = opts.reconnect_secs {
            // QEMU 9.2 replaced `reconnect` (seconds) with `reconnect-ms`; 10 drops the old name.
            if major >= 10 {
                let _ = write!(chardev, ",reconnect-ms={}", r * 1000);
            } else {
                let _ = write!(chardev, ",reconnect={r}");
            }
        }
        let mut device = format!("virtio-net-pci,netdev=n0,mac={},romfile=", opts.mac);
        if major < 8 {
            // QEMU 7.2 under TCG crashes in msix_set_vector_notifiers with vhost-user and MSI-X.
            device.push_str(",vectors=0");
        }
        let mut netdev = "vhost-user,id=n0,chardev=c0".to_string();
        if opts.queue_pairs > 1 {
            let q = opts.queue_pairs;
            let _ = write!(netdev, ",queues={q}");
            device.push_str(",mq=on");
            if major >= 8 {
                // A vector per ring, one for the control queue, one for config changes.
                let _ = write!(device, ",vectors={}", 2 * q + 2);
            }
        }
        let mem = opts.memory_mib;
        let cpus = opts.cpus.max(1).to_string();
        let mut cmd = Command::new(qemu);
        cmd.args(["-accel", &accel, "-m", &format!("{mem}M"), "-smp", &cpus])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-no-reboot",
            ])
            .args(["-serial", "stdio", "-monitor", "none"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initramfs)
            .args(["-append", &image.append])
            .args([
                "-object",
                &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            ])
            .args(["-numa", "node,memdev=mem"])
            .args(if opts.user_net {
                vec!["-netdev".to_string(), "user,id=n0".to_string()]
            } else {
                vec![
                    "-chardev".to_string(),
                    chardev.clone(),
                    "-netdev".to_string(),
                    netdev.clone(),
                ]
            })
            .args(["-device", &device])
            .args(extra_qemu_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn QEMU");
        let console = Log::default();
        console.spawn_reader(child.stdout.take().unwrap());
        console.spawn_reader(child.stderr.take().unwrap());
        let stdin = child.stdin.take().unwrap();
        let mut vm = Vm {
            child: Some(child),
            stdin,
            console,
            next_id: 0,
        };
        let deadline = Instant::now() + opts.boot_timeout;
        loop {
            let ready = vm.console.wait_for(0, Duration::from_millis(200), |t| {
                t.contains(READY_MARKER).then_some(())
            });
            if ready.is_some() {
                // The kernel that booted is the one the test binary asked for (a test name that
                // says 6.12 ran on 6.12).
                let booted = vm.console.wait_for(0, Duration::ZERO, |t| {
                    let line = t.split("VIRTGATE-GUEST-KERNEL ").nth(1)?.lines().next()?;
                    Some(line.trim().to_string())
                });
                let expected = GuestKernel::current().release();
                if booted.as_deref() != Some(expected.as_str()) {
                    return Err(format!(
                        "the guest booted {booted:?}, not Linux {} ({expected}):\n{}",
                        GuestKernel::current().name,
                        vm.console()
                    ));
                }
                return Ok(vm);
            }
            if let Some(status) = vm.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // Let the readers take the last of QEMU's output.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("QEMU exited ({status}):\n{}", vm.console()));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "guest did not boot within {:?}; QEMU said:\n{}",
                    opts.boot_timeout,
                    vm.console()
                ));
            }
        }
    }

    /// The console text so far.
    pub fn console(&self) -> String {
        self.console.text()
    }

    /// Runs a shell command in the guest; returns its exit status and output.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Output {
        self.next_id += 1;
        let id = self.next_id;
        let start = self.console.len();
        // The markers are split in the command text so that an echoed command line never matches.
        let line =
            format!("echo '__VG''BEGIN_{id}'; {{ {cmd}\n}} 2>&1; echo \"__VG\"\"END_{id} $?\"\n");
        self.stdin
            .write_all(line.as_bytes())
            .expect("write to console");
        self.stdin.flush().expect("flush console");
        let begin = format!("__VGBEGIN_{id}\n");
        let end = format!("__VGEND_{id} ");
        let found = self.console.wait_for(start, timeout, |t| {
            let b = t.find(&begin)?;
            let body = &t[b + begin.len()..];
            let e = body.find(&end)?;
            let rest = &body[e + end.len()..];
            let nl = rest.find('\n')?;
            let status = rest[..nl].trim().parse().ok()?;
            Some(Output {
                status,
                stdout: body[..e].to_string(),
            })
        });
        found.unwrap_or_else(|| panic!("guest command timed out after {timeout:?}: {cmd}"))
    }

    /// Brings eth0 up with IPv6 off (so that the only traffic is what a test makes), waits for the
    /// carrier, sets the ICMP error rate limit to 0 (tests provoke several), and runs udhcpc;
    /// returns the lease as the udhcpc script recorded it.
    pub fn bring_up(&mut self) -> std::collections::HashMap<String, String> {
        // IPv4-only unless a test asks for IPv6 (`bring_up_dual_stack`): the counters IPv4
        // tests compare stay free of IPv6 chatter.
        self.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1");
        self.bring_up_link()
    }

    /// Brings eth0 up with IPv4 (DHCP) and IPv6 (SLAAC from the gateway's router
    /// advertisements, nothing configured by hand), and waits until the global IPv6 address has
    /// passed duplicate address detection. Returns the DHCP lease.
    pub fn bring_up_dual_stack(&mut self) -> std::collections::HashMap<String, String> {
        let lease = self.bring_up_link();
        self.sh("i=0; until ip -6 addr show dev eth0 scope global | grep inet6 | grep -qv tentative || [ $i -ge 150 ]; do sleep 0.1; i=$((i+1)); done");
        let addrs = self.sh("ip -6 addr show dev eth0 scope global");
        assert!(
            addrs.contains("scope global") && !addrs.contains("tentative"),
            "no SLAAC address: {addrs}"
        );
        lease
    }

    fn bring_up_link(&mut self) -> std::collections::HashMap<String, String> {
        self.sh("sysctl -qw net.ipv4.icmp_ratelimit=0");
        self.sh("ip link set eth0 up");
        self.sh("i=0; while [ \"$(cat /sys/class/net/eth0/carrier)\" != 1 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; grep -qx 1 /sys/class/net/eth0/carrier");
        self.run("udhcpc -i eth0 -n -q -t 10 -T 2", Duration::from_secs(90))
            .ok();
        self.sh("cat /run/lease")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect()
    }

    /// Runs a command that must succeed and returns its output.
    /// Asserts that the guest's TCP and UDP (both families) counted no checksum error, and
    /// returns the negotiated virtio feature bits (from sysfs) for the caller to check.
    pub fn assert_no_checksum_errors(&mut self) -> u64 {
        let snmp = parse_snmp(&self.sh("cat /proc/net/snmp"));
        for key in ["Tcp.InCsumErrors", "Udp.InCsumErrors"] {
            assert_eq!(snmp.get(key), Some(&0), "{key}");
        }
        let snmp6 = self.sh("cat /proc/net/snmp6");
        let udp6 = snmp6
            .lines()
            .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
            .map(|v| v.trim().to_string());
        if let Some(v) = udp6 {
            assert_eq!(v, "0", "Udp6InCsumErrors");
        }
        self.virtio_features()
    }

    /// The virtio-net device's negotiated feature bits, as the guest driver sees them
    /// (`/sys/bus/virtio/devices/*/features`: one character per bit, bit 0 first).
    pub fn virtio_features(&mut self) -> u64 {
        let bits = self.sh("cat /sys/class/net/eth0/device/features");
        bits.trim()
            .chars()
            .take(64)
            .enumerate()
            .filter(|(_, c)| *c == '1')
            .fold(0u64, |acc, (i, _)| acc | (1 << i))
    }

    pub fn sh(&mut self, cmd: &str) -> String {
        self.run(cmd, Duration::from_secs(60)).ok()
    }

    /// QEMU's process id (for its CPU time), while it runs.
    pub fn qemu_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether QEMU is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Kills QEMU.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- guest console ----\n{}", self.console.text());
        }
        self.kill();
    }
}

/// Parses `/proc/net/snmp`-style text (`Proto: names` / `Proto: values` line pairs) into
/// `Proto.Name → value`.
pub fn parse_snmp(text: &str) -> std::collections::HashMap<String, i64> {
    snmp_values(text)
        .map(|(proto, name, v)| (format!("{proto}.{name}"), v))
        .collect()
}

/// The (protocol, counter name, value) triples of `/proc/net/snmp`-style text.
pub(crate) fn snmp_values(text: &str) -> impl Iterator<Item = (&str, &str, i64)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for pair in lines.windows(2) {
        let (Some((p1, names)), Some((p2, values))) =
            (pair[0].split_once(':'), pair[1].split_once(':'))
        else {
            continue;
        };
        if p1 != p2 || names.split_whitespace().any(|n| n.parse::<i64>().is_ok()) {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse() {
                out.push((p1, n, v));
            }
        }
    }
    out.into_iter()
}

/// A named scenario of a test that shares one booted guest ([`run_scenarios`]).
pub type Scenario<C> = (&'static str, fn(&mut C));

/// Runs scenarios one after the other on one booted guest (`ctx` holds it): a guest boot under
/// TCG costs more than most scenarios, so scenarios that need the same virtgate options share
/// one, each asserting only the deltas of the counters it reads. Every scenario runs even when an
/// earlier one failed, unless the guest died (`alive`); the test fails at the end naming each
/// failed scenario. `VIRTGATE_SCENARIOS=name,name` runs only those (a test none of whose
/// scenarios is named fails, so that a misspelt name is not a pass).
pub fn run_scenarios<C>(scenarios: &[Scenario<C>], ctx: &mut C, alive: impl Fn(&mut C) -> bool) {
    let only: Option<Vec<String>> = std::env::var("VIRTGATE_SCENARIOS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    if let Some(names) = &only {
        assert!(
            scenarios.iter().any(|(s, _)| names.iter().any(|n| n == s)),
            "VIRTGATE_SCENARIOS={names:?} names none of this test's scenarios"
        );
    }
    let mut failed = Vec::new();
    for (name, scenario) in scenarios {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == name)) {
            continue;
        }
        let start = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(ctx)));
        let took = start.elapsed();
        match result {
            Ok(()) => eprintln!("scenario {name}: ok ({took:.1?})"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("scenario {name}: FAILED ({took:.1?}): {msg}");
                failed.push(*name);
                if !alive(ctx) {
                    eprintln!("the guest is gone: the remaining scenarios are not run");
                    break;
                }
            }
        }
    }
    assert!(failed.is_empty(), "failed scenarios: {failed:?}");
}

/// A loopback UDP port nobody listens on (bound once and released).
pub fn unused_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// A loopback TCP port nobody listens on (bound once and released).
pub fn unused_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free TCP port")
        .port()
}

/// Makes a file executable (for scripts written by tests).
pub fn make_executable(path: &Path) {
    let mut p = std::fs::metadata(path).unwrap().permissions();
    p.set_mode(0o755);
    std::fs::set_permissions(path, p).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_binary_names_its_kernel() {
        assert_eq!(
            kernel_of_binary("linux_6_12_foundation-0123abcd").as_deref(),
            Some("6.12")
        );
        assert_eq!(
            kernel_of_binary("linux_5_10_foundation").as_deref(),
            Some("5.10")
        );
        assert_eq!(kernel_of_binary("foundation-0123abcd"), None);
        assert_eq!(kernel_of_binary("linux_paths-01"), None);
        assert_eq!(kernel_of_binary("linux_6_foundation"), None);
    }

    #[test]
    fn an_unknown_kernel_name_is_explained() {
        let e = GuestKernel::named("4.19").unwrap_err();
        assert!(e.contains("\"4.19\" is neither one of"), "{e}");
        let e = GuestKernel::named("/nonexistent/kernel").unwrap_err();
        assert!(e.contains("no vmlinuz or modules.load"), "{e}");
    }
}
