//! virtgate under libvirt: the documented domain (dist/libvirt/virtgate-vm.xml) passes libvirt's
//! schema, and a domain built from its vhost-user parts, started by a libvirtd of the test's own
//! through virsh, boots a TCG guest that gets its DHCP lease through virtgate.
//!
//! The libvirtd is private: it runs in a mount namespace of its own (`unshare -m`) with its
//! configuration, state, logs and sockets bind-mounted from the test's directory, so nothing of
//! the host's libvirt is used or changed. Its qemu.conf runs QEMU as root without cgroups, a
//! security driver or virtlogd (none of which this machine's container offers); the domain is
//! what a user's libvirt would run. scripts/setup.sh --libvirt installs Debian's libvirt daemon,
//! QEMU driver and clients, and the user and group their QEMU driver expects.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use guest_tests::{GuestImage, Virtgate};

fn workspace_file(path: &str) -> PathBuf {
    guest_tests::workspace_root().join(path)
}

/// `virt-xml-validate FILE domain`: libvirt's schema check.
fn validate(file: &Path) {
    let out = Command::new("virt-xml-validate")
        .arg(file)
        .arg("domain")
        .output()
        .expect(
            "virt-xml-validate (libvirt-clients, with xmllint): run scripts/setup.sh --libvirt",
        );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("validates"),
        "{}: {text}",
        file.display()
    );
}

#[test]
fn the_documented_domain_passes_libvirts_schema() {
    validate(&workspace_file("dist/libvirt/virtgate-vm.xml"));
}

/// A libvirtd of the test's own; stopped (its domain destroyed first) on drop.
struct Libvirtd {
    dir: PathBuf,
    child: Child,
}

impl Libvirtd {
    fn start(dir: &Path) -> Libvirtd {
        for sub in ["etc", "run", "lib", "cache", "log"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(
            dir.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n\
             security_driver = \"none\"\ncgroup_controllers = [ ]\nnamespaces = [ ]\n\
             stdio_handler = \"file\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/libvirtd.conf"),
            "unix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
        )
        .unwrap();
        let d = dir.display();
        let script = format!(
            "set -e; mkdir -p /etc/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /run/libvirt; \
             mount --bind {d}/etc /etc/libvirt; mount --bind {d}/lib /var/lib/libvirt; \
             mount --bind {d}/cache /var/cache/libvirt; mount --bind {d}/log /var/log/libvirt; \
             mount --bind {d}/run /run/libvirt; exec libvirtd"
        );
        let log = std::fs::File::create(dir.join("libvirtd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare");
        let libvirtd = Libvirtd {
            dir: dir.to_path_buf(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while libvirtd
            .virsh(&["version"])
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "libvirtd did not answer within 30 s (scripts/setup.sh --libvirt installs it):\n{}",
                libvirtd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        libvirtd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }

    fn virsh(&self, args: &[&str]) -> std::io::Result<Output> {
        let uri = format!(
            "qemu:///system?socket={}/run/libvirt-sock",
            self.dir.display()
        );
        Command::new("virsh").args(["-c", &uri]).args(args).output()
    }

    /// virsh that must succeed: its standard output.
    fn must(&self, args: &[&str]) -> String {
        let out = self.virsh(args).expect("virsh (libvirt-clients)");
        assert!(
            out.status.success(),
            "virsh {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // QEMU daemonizes under libvirt: destroy every domain before libvirtd goes.
        if let Ok(out) = self.virsh(&["list", "--name"]) {
            for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = self.virsh(&["destroy", name]);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The element `<tag ...>...</tag>` of `xml` that starts with `start`, as written (after the
/// file's leading comment, which names the elements too).
fn element<'a>(xml: &'a str, start: &str, tag: &str) -> &'a str {
    let body = xml.find("-->").map_or(0, |i| i + 3);
    let from = body
        + xml[body..]
            .find(start)
            .unwrap_or_else(|| panic!("no {start} in the documented domain"));
    let end = xml[from..].find(&format!("</{tag}>")).unwrap() + from + tag.len() + 3;
    &xml[from..end]
}

#[test]
fn a_libvirt_domain_gets_its_lease_through_virtgate() {
    const MAC: &str = "52:54:00:12:34:57";
    let dir = std::env::temp_dir().join(format!("virtgate-libvirt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let vg_dir = dir.join("virtgate");
    std::fs::create_dir_all(&vg_dir).unwrap();
    let mut vg = Virtgate::start_in(&vg_dir, &[]);
    let libvirtd = Libvirtd::start(&dir.join("libvirt"));

    // The documented domain's memory backing and interface, with the test's socket and MAC, in a
    // TCG domain that boots the harness's guest (its init asks for a lease: virtgate.dhcp).
    let documented =
        std::fs::read_to_string(workspace_file("dist/libvirt/virtgate-vm.xml")).unwrap();
    let memory = element(&documented, "<memoryBacking>", "memoryBacking");
    let interface = element(&documented, "<interface type='vhostuser'>", "interface")
        .replace(
            "/run/virtgate/vm1/vm.sock",
            &vg.socket.display().to_string(),
        )
        .replace("52:54:00:12:34:56", MAC);
    let image = GuestImage::get();
    let name = format!("virtgate-test-{}", std::process::id());
    let qemu =
        std::env::var("VIRTGATE_QEMU").unwrap_or_else(|_| "/usr/bin/qemu-system-x86_64".into());
    let console = dir.join("console.log");
    let domain = format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  {memory}
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{append} virtgate.dhcp</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{qemu}</emulator>
    {interface}
    <serial type='file'>
      <source path='{console}'/>
    </serial>
  </devices>
</domain>
",
        kernel = image.kernel.display(),
        initrd = image.initramfs.display(),
        append = image.append,
        console = console.display(),
    );
    let file = dir.join("domain.xml");
    std::fs::write(&file, &domain).unwrap();
    validate(&file);

    libvirtd.must(&["define", file.to_str().unwrap()]);
    libvirtd.must(&["start", &name]);
    assert_eq!(libvirtd.must(&["domstate", &name]).trim(), "running");
    // virtgate's side: the guest's MAC, and the lease bound to it.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = vg.stats();
        if s["guest"]["ipv4"] == "10.0.2.15" {
            assert_eq!(s["guest"]["mac"], MAC, "{s:#}");
            assert!(s["stack"]["dhcp_tx_acks"].as_u64().unwrap() >= 1, "{s:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no lease after 120 s: {s:#}\nconsole:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let booted = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(booted.contains("lease of 10.0.2.15 obtained"), "{booted}");

    // The documented <reconnect>: a virtgate that dies (and is restarted, as systemd's
    // Restart=on-failure does) gets QEMU back, and the guest's link comes up on it again (its
    // kernel announces itself: IPv6 router solicitation, MLD reports).
    vg.kill();
    let vg = Virtgate::start_in(&vg_dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = vg.stats();
        if s["guest"]["mac"] == MAC {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU did not come back to the restarted virtgate: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    libvirtd.must(&["destroy", &name]);
    assert_eq!(libvirtd.must(&["domstate", &name]).trim(), "shut off");
    libvirtd.must(&["undefine", &name]);
    drop(libvirtd);
    let _ = std::fs::remove_dir_all(&dir);
}
