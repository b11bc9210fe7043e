"""Starting and stopping a virtgate process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO, List, Mapping, Optional, Sequence, Type, Union

from .client import VirtgateClient, VirtgateError

__all__ = ["Virtgate"]

PathLike = Union[str, "os.PathLike[str]"]


def _find_binary(binary: Optional[PathLike]) -> str:
    if binary is not None:
        return os.fspath(binary)
    env = os.environ.get("VIRTGATE_BIN")
    if env:
        return env
    found = shutil.which("virtgate")
    if found is None:
        raise VirtgateError("no virtgate binary: give binary=, set VIRTGATE_BIN, or put virtgate on PATH")
    return found


class Virtgate:
    """A virtgate process on sockets of its own, as a context manager::

        with Virtgate(args=["--mtu", "9000"]) as vg:
            ...  # QEMU connects to vg.socket; vg.client talks to the API

    ``launch()`` starts it with ``--socket DIR/vm.sock --api-socket DIR/api.sock`` (in a fresh
    temporary directory unless ``socket_dir`` is given) and ``args``, and returns once both sockets
    exist; ``shutdown()`` sends SIGTERM and waits. Its log (stderr) goes to ``DIR/virtgate.log``.
    """

    def __init__(
        self,
        binary: Optional[PathLike] = None,
        args: Sequence[str] = (),
        *,
        socket_dir: Optional[PathLike] = None,
        env: Optional[Mapping[str, str]] = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.binary = _find_binary(binary)
        self.args: List[str] = list(args)
        self._own_dir = socket_dir is None
        self.dir = os.fspath(socket_dir) if socket_dir is not None else ""
        self.env = dict(env) if env is not None else None
        self.start_timeout = start_timeout
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def socket(self) -> str:
        """The vhost-user socket QEMU connects to."""
        return os.path.join(self.dir, "vm.sock")

    @property
    def api_socket(self) -> str:
        return os.path.join(self.dir, "api.sock")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "virtgate.log")

    @property
    def client(self) -> VirtgateClient:
        return VirtgateClient(self.api_socket)

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None

    def log(self) -> str:
        """What virtgate logged so far."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> "Virtgate":
        if self._proc is not None:
            raise VirtgateError("already launched")
        if self._own_dir:
            self.dir = tempfile.mkdtemp(prefix="virtgate-")
        os.makedirs(self.dir, exist_ok=True)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self._log = open(self.log_path, "wb")
        cmd = [self.binary, "--socket", self.socket, "--api-socket", self.api_socket, *self.args]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        deadline = time.monotonic() + self.start_timeout
        while not (os.path.exists(self.socket) and os.path.exists(self.api_socket)):
            code = self._proc.poll()
            if code is not None:
                self._close_log()
                raise VirtgateError(f"virtgate exited with status {code} at start: {self.log().strip()}")
            if time.monotonic() >= deadline:
                self.shutdown()
                raise VirtgateError(f"virtgate's sockets did not appear within {self.start_timeout} s")
            time.sleep(0.02)
        return self

    def shutdown(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()
        self._proc = None
        if self._own_dir and self.dir:
            for name in ("vm.sock", "api.sock"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except OSError:
                    pass
        return proc.returncode

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "Virtgate":
        return self.launch()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.shutdown()
