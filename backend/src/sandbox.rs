//! The process sandbox, applied once start-up has opened what it needs (the QEMU and API sockets,
//! the forwards' listeners, the resolver configuration) and before any thread is started, so
//! that every thread inherits it:
//!
//! 1. privileges: started as root with `--user`, virtgate becomes that user and keeps only
//!    CAP_NET_RAW (raw ICMP sockets for ping) when the user's group may not open ping sockets
//!    (`net.ipv4.ping_group_range`), nothing otherwise;
//! 2. the filesystem (Landlock, where the kernel has it): writes only beneath the directories of
//!    the QEMU socket, the API socket, the stats file, the `--pcap` file and each `--capture-dir`;
//!    reading is not restricted;
//! 3. system calls (seccomp, `seccompiler`): an allow-list of what virtgate does, with the
//!    arguments checked where it matters (no executable memory, only unix and IP sockets, four
//!    ioctls). Anything else raises SIGSYS, whose handler writes one line naming the call and
//!    ends the process.
//!
//! `--sandbox off` skips 2 and 3 (for debugging, e.g. under strace or with a profiler).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use log::{info, warn};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// What the sandbox needs to know.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Apply Landlock and seccomp.
    pub enabled: bool,
    /// Become this user (uid, gid) after start-up.
    pub user: Option<(u32, u32)>,
    /// Directories virtgate may write beneath.
    pub writable: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("dropping privileges to uid {uid}: {source}")]
    User { uid: u32, source: io::Error },
    #[error("Landlock: {0}")]
    Landlock(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
}

/// The directory a file or socket path lives in.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Sandbox {
    /// Applies the sandbox to the process; call it on the main thread before starting threads.
    pub fn apply(&self) -> Result<(), SandboxError> {
        if let Some((uid, gid)) = self.user {
            drop_privileges(uid, gid).map_err(|source| SandboxError::User { uid, source })?;
        }
        if !self.enabled {
            warn!("sandbox off (--sandbox off): no Landlock, no seccomp filter");
            return Ok(());
        }
        self.landlock()?;
        install_sigsys_handler();
        let (filter, calls) = filter().map_err(|e| SandboxError::Seccomp(e.to_string()))?;
        seccompiler::apply_filter_all_threads(&filter)
            .map_err(|e| SandboxError::Seccomp(e.to_string()))?;
        info!("seccomp filter on: {calls} system calls allowed");
        Ok(())
    }

    fn landlock(&self) -> Result<(), SandboxError> {
        use landlock::{
            path_beneath_rules, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
            ABI,
        };
        let abi = ABI::V3;
        let write = AccessFs::from_write(abi);
        let err = |e: landlock::RulesetError| SandboxError::Landlock(e.to_string());
        let status = Ruleset::default()
            .handle_access(write)
            .map_err(err)?
            .create()
            .map_err(err)?
            .add_rules(path_beneath_rules(&self.writable, write))
            .map_err(err)?
            .restrict_self()
            .map_err(err)?;
        let dirs: Vec<_> = self
            .writable
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        match status.ruleset {
            RulesetStatus::FullyEnforced => {
                info!("Landlock on: writes only beneath {}", dirs.join(", "))
            }
            RulesetStatus::PartiallyEnforced => info!(
                "Landlock partly on (an older kernel): writes only beneath {}",
                dirs.join(", ")
            ),
            RulesetStatus::NotEnforced => {
                warn!("Landlock is not available in this kernel: file writes are not restricted")
            }
        }
        Ok(())
    }
}

/// Becomes `uid`/`gid` with no supplementary groups, keeping CAP_NET_RAW only where ping sockets
/// are not allowed to `gid`. Must run before any thread starts: capabilities are per thread.
fn drop_privileges(uid: u32, gid: u32) -> io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let keep_raw = !ping_sockets_allowed(gid);
    // SAFETY: prctl, setgroups, setresgid and setresuid with plain integer arguments and a null
    // group list of length 0.
    unsafe {
        // Drop every other capability from the bounding set while we still may.
        for cap in 0..=63 {
            if cap != CAP_NET_RAW || !keep_raw {
                libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
            }
        }
        check(libc::prctl(
            libc::PR_SET_KEEPCAPS,
            u64::from(keep_raw),
            0,
            0,
            0,
        ))?;
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(gid, gid, gid))?;
        check(libc::setresuid(uid, uid, uid))?;
    }
    set_capabilities(if keep_raw { 1 << CAP_NET_RAW } else { 0 })?;
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
    info!(
        "running as uid {uid} gid {gid}{}",
        if keep_raw {
            ", keeping CAP_NET_RAW for raw ICMP sockets"
        } else {
            " with no capabilities (ping sockets are allowed)"
        }
    );
    Ok(())
}

const CAP_NET_RAW: u32 = 13;

/// capset(2): `caps` permitted and effective, nothing inheritable, for the calling thread.
fn set_capabilities(caps: u64) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let low = Data {
        effective: caps as u32,
        permitted: caps as u32,
        inheritable: 0,
    };
    let high = Data {
        effective: (caps >> 32) as u32,
        permitted: (caps >> 32) as u32,
        inheritable: 0,
    };
    let data = [low, high];
    // SAFETY: capset with a version-3 header and the two data structs that version reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether `gid` may open ICMP ping sockets (`net.ipv4.ping_group_range`).
fn ping_sockets_allowed(gid: u32) -> bool {
    let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range") else {
        return false;
    };
    let mut it = range.split_whitespace().map(str::parse::<u32>);
    matches!((it.next(), it.next()), (Some(Ok(lo)), Some(Ok(hi))) if lo <= gid && gid <= hi)
}

/// The system calls virtgate makes once started, by thread: the vring workers (epoll, eventfd,
/// timerfd, guest memory mapped shared), the vhost-user relay (SCM_RIGHTS messages), the host
/// sockets of the stack (TCP, UDP, ICMP), the control API, the capture writer and the stats file,
/// the signal thread, and the Rust runtime (threads, memory, futexes, panics).
fn allowed_syscalls() -> Vec<i64> {
    vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_close,
        libc::SYS_openat,
        libc::SYS_newfstatat,
        libc::SYS_fstat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_fcntl,
        libc::SYS_dup,
        libc::SYS_dup3,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_munmap,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_mremap,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_restart_syscall,
        libc::SYS_tgkill,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_prctl,
        libc::SYS_uname,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_eventfd2,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_settime,
        libc::SYS_timerfd_gettime,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_socketpair,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_connect,
        libc::SYS_getsockname,
        libc::SYS_getpeername,
        libc::SYS_setsockopt,
        libc::SYS_getsockopt,
        libc::SYS_sendto,
        libc::SYS_recvfrom,
        libc::SYS_sendmsg,
        libc::SYS_recvmsg,
        libc::SYS_sendmmsg,
        libc::SYS_recvmmsg,
        libc::SYS_shutdown,
        // A panic's backtrace (crate::main's hook) resolves file names against the cwd.
        libc::SYS_getcwd,
        libc::SYS_readlink,
    ]
}

/// The compiled filter and how many system calls it allows.
fn filter() -> Result<(BpfProgram, usize), seccompiler::BackendError> {
    let cond = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed_syscalls()
        .into_iter()
        .map(|s| (s, Vec::new()))
        .collect();
    // Memory: never executable (guest memory is mapped read-write, shared).
    let no_exec = || -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
        Ok(vec![SeccompRule::new(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64),
            0,
        )?])?])
    };
    rules.insert(libc::SYS_mmap, no_exec()?);
    rules.insert(libc::SYS_mprotect, no_exec()?);
    // Sockets: unix (the API, socketpairs) and IP (the stack's host sockets) only.
    let mut socket = Vec::new();
    for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
        socket.push(SeccompRule::new(vec![cond(
            0,
            SeccompCmpOp::Eq,
            family as u64,
        )?])?);
    }
    rules.insert(libc::SYS_socket, socket);
    // ioctl: non-blocking mode, bytes readable, the urgent mark, and the terminal check of the
    // logger.
    let mut ioctl = Vec::new();
    for request in [libc::FIONBIO, libc::FIONREAD, SIOCATMARK, libc::TCGETS] {
        ioctl.push(SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, request)?])?);
    }
    rules.insert(libc::SYS_ioctl, ioctl);
    let calls = rules.len();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok((filter.try_into()?, calls))
}

/// SIOCATMARK (the libc crate does not export it for every target).
const SIOCATMARK: libc::c_ulong = 0x8905;

/// SIGSYS from the filter: one line naming the call, then the default action (the process ends,
/// killed by SIGSYS). Only async-signal-safe calls: write(2) on a stack buffer, sigaction, raise.
extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // siginfo_t for SIGSYS (x86_64): si_call_addr at offset 16, si_syscall (int) at 24.
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler.
    let nr = unsafe { *(info as *const u8).add(24).cast::<i32>() };
    let mut msg = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        let k = bytes.len().min(msg.len() - n);
        msg[n..n + k].copy_from_slice(&bytes[..k]);
        n += k;
    };
    put(b"virtgate: seccomp: system call ");
    let mut digits = [0u8; 12];
    let mut d = digits.len();
    let mut v = nr.unsigned_abs();
    loop {
        d -= 1;
        digits[d] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    put(&digits[d..]);
    put(b" is not allowed (`ausyscall NUMBER` names it; --sandbox off to debug); exiting\n");
    // SAFETY: write(2) of a stack buffer to stderr, then restoring the default action and
    // raising the signal again: all async-signal-safe.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), n);
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        libc::raise(libc::SIGSYS);
    }
}

fn install_sigsys_handler() {
    // SAFETY: a zeroed sigaction with a handler of the SA_SIGINFO signature and an empty mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}
