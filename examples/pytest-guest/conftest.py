"""Fixtures for guest tests on virtgate: a virtgate process, a QEMU guest attached to it, and a
way to run commands in the guest and read its counters.

Copy this directory into your own suite and change `guest_image()` and `Guest.__init__()` to boot your
own guest; the tests only need `guest.run()` and `guest.counters()`.

Environment: VIRTGATE_BIN (the virtgate binary; default: on PATH), VIRTGATE_QEMU (default
qemu-system-x86_64), VIRTGATE_ACCEL (default tcg), VIRTGATE_KERNEL and VIRTGATE_INITRD (default:
the repository's test guest, built by `cargo run -p guest-tests --bin guest-image`).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import threading
import time
from typing import Dict, Tuple

import pytest

from virtgate import Virtgate, vhost_user_args

MEMORY_MIB = 512
REPO = pathlib.Path(__file__).resolve().parents[2]


def guest_image() -> Dict[str, str]:
    """Kernel, initramfs, kernel command line and the console line that says the guest is ready."""
    if os.environ.get("VIRTGATE_KERNEL") and os.environ.get("VIRTGATE_INITRD"):
        return {
            "kernel": os.environ["VIRTGATE_KERNEL"],
            "initramfs": os.environ["VIRTGATE_INITRD"],
            "append": "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
            "ready": "VIRTGATE-GUEST-READY",
        }
    out = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "guest-tests", "--bin", "guest-image"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


class Guest:
    """A QEMU guest whose serial console is a shell: `run()` sends a command and waits for its
    output and exit status, between markers the command's own output cannot contain."""

    def __init__(self, socket: str) -> None:
        image = guest_image()
        qemu = os.environ.get("VIRTGATE_QEMU", "qemu-system-x86_64")
        accel = os.environ.get("VIRTGATE_ACCEL", "tcg")
        cmd = [
            qemu, "-accel", accel, "-m", f"{MEMORY_MIB}M", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-monitor", "none",
            "-kernel", image["kernel"], "-initrd", image["initramfs"], "-append", image["append"],
            *vhost_user_args(socket, MEMORY_MIB, mac="52:54:00:12:34:56"),
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._text = ""
        self._lock = threading.Condition()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()
        self._wait_for(lambda t: image["ready"] in t or None, 180, "the guest to boot")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for chunk in iter(lambda: self.proc.stdout.read1(4096), b""):  # type: ignore[union-attr]
            with self._lock:
                self._text += chunk.decode("utf-8", "replace").replace("\r", "")
                self._lock.notify_all()

    def _wait_for(self, found, timeout: float, what: str, start: int = 0):
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                result = found(self._text[start:])
                if result is not None:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"waiting for {what}; the console said:\n{self._text[-3000:]}")
                self._lock.wait(min(left, 0.2))

    def run(self, command: str, timeout: float = 120) -> Tuple[int, str]:
        """Runs `command` in the guest's shell; returns (exit status, output)."""
        self._next += 1
        n = self._next
        with self._lock:
            start = len(self._text)
        # The markers are split in the command text so that the echoed command never matches.
        line = f"echo '__VG''BEGIN_{n}'; {{ {command}\n}} 2>&1; echo \"__VG\"\"END_{n} $?\"\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()
        begin, end = f"__VGBEGIN_{n}\n", f"__VGEND_{n} "

        def found(text: str):
            b = text.find(begin)
            if b < 0:
                return None
            body = text[b + len(begin):]
            e = body.find(end)
            if e < 0 or "\n" not in body[e + len(end):]:
                return None
            status = int(body[e + len(end):].split("\n", 1)[0])
            return status, body[:e]

        return self._wait_for(found, timeout, command, start)

    def sh(self, command: str, timeout: float = 120) -> str:
        """Runs a command that must succeed; returns its output."""
        status, out = self.run(command, timeout)
        assert status == 0, f"{command}: exit {status}\n{out}"
        return out

    def counters(self) -> Dict[str, int]:
        """The guest kernel's IP, ICMP, TCP and UDP counters as `Proto.Name`
        (/proc/net/snmp and /proc/net/netstat)."""
        lines = self.sh("cat /proc/net/snmp /proc/net/netstat").splitlines()
        out: Dict[str, int] = {}
        for names, values in zip(lines, lines[1:]):
            p1, _, n = names.partition(":")
            p2, _, v = values.partition(":")
            if p1 != p2 or not n.split() or n.split()[0].lstrip("-").isdigit():
                continue
            for name, value in zip(n.split(), v.split()):
                if value.lstrip("-").isdigit():
                    out[f"{p1}.{name}"] = int(value)
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="session")
def virtgate():
    """One virtgate for the session; each test sets the impairments it needs."""
    with Virtgate(args=["--resolv-conf", "/dev/null", "--impair-seed", "1"]) as vg:
        yield vg


@pytest.fixture(scope="session")
def guest(virtgate):
    """One guest for the session, with its address from virtgate's DHCP."""
    g = Guest(virtgate.socket)
    try:
        g.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
        g.sh("ip link set eth0 up")
        g.sh("udhcpc -i eth0 -n -q -t 10 -T 2", timeout=90)
        yield g
    finally:
        g.close()


@pytest.fixture(autouse=True)
def no_impairments_after(virtgate):
    """Every test starts and ends on a clean link."""
    virtgate.client.impair_clear()
    yield
    virtgate.client.impair_clear()
