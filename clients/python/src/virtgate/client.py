"""The control API client: one HTTP request per call over virtgate's unix socket."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

__all__ = ["VirtgateClient", "VirtgateError"]

Frame = Union[bytes, bytearray, memoryview, Any]
"""A frame: bytes, or anything ``bytes()`` turns into its wire form (a scapy packet)."""

Rules = Union[str, Sequence[str]]
"""Impairment rules in the ``--impair`` grammar (docs/impairments.md), or a list of such texts."""


class VirtgateError(Exception):
    """The API refused a request (``status`` is the HTTP status: 400 for a bad body or setting,
    404 for no such thing, 503 when the device did not answer), or could not be reached
    (``status`` is None)."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message if status is None else f"{status}: {message}")
        self.status = status
        self.message = message


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("virtgate", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def _frame_bytes(frame: Frame) -> bytes:
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return bytes(frame)
    if isinstance(frame, (int, str)):
        # bytes(12) would be twelve zero bytes, bytes("ab") an error without an encoding.
        raise TypeError(f"a frame must be bytes or a packet bytes() accepts, not {type(frame).__name__}")
    try:
        return bytes(frame)
    except TypeError as e:
        raise TypeError(f"a frame must be bytes or a packet bytes() accepts, not {type(frame).__name__}") from e


def _rules_text(rules: Rules) -> Union[str, List[str]]:
    return rules if isinstance(rules, str) else list(rules)


class VirtgateClient:
    """A running virtgate's control API (``virtgate --api-socket PATH``).

    Every method is one request on a fresh connection (the API serves one request per
    connection); errors raise :class:`VirtgateError`. ``timeout`` bounds each request in seconds
    (an inject spaced with ``interval_us`` may take up to a minute: its own timeout is longer).
    """

    def __init__(self, api_socket: Union[str, "os.PathLike[str]"], timeout: float = 10.0) -> None:
        self.api_socket = os.fspath(api_socket)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"VirtgateClient({self.api_socket!r})"

    # The one generic call, like QMP's cmd().
    def request(self, method: str, path: str, body: Optional[Any] = None, timeout: Optional[float] = None) -> Any:
        """Sends ``method path`` with ``body`` as JSON; returns the answer decoded (JSON, or text
        for ``/metrics``)."""
        conn = _UnixHTTPConnection(self.api_socket, self.timeout if timeout is None else timeout)
        data = b"" if body is None else json.dumps(body).encode()
        try:
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as e:
            raise VirtgateError(f"cannot reach the API at {self.api_socket}: {e}") from e
        finally:
            conn.close()
        text = raw.decode("utf-8", "replace")
        if resp.status != 200:
            try:
                message = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                message = text.strip()
            raise VirtgateError(message, resp.status)
        if resp.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(text)
        return text

    def _object(self, method: str, path: str, body: Optional[Any] = None, timeout: Optional[float] = None) -> Dict[str, Any]:
        v = self.request(method, path, body, timeout)
        if not isinstance(v, dict):
            raise VirtgateError(f"{method} {path}: the answer is not a JSON object")
        return v

    def _array(self, method: str, path: str) -> List[Any]:
        v = self.request(method, path)
        if not isinstance(v, list):
            raise VirtgateError(f"{method} {path}: the answer is not a JSON array")
        return v

    # Counters.
    def stats(self) -> Dict[str, Any]:
        """The stats document: ``guest``, ``virtio``, ``device``, ``queues``, ``stack``, ``impair``."""
        return self._object("GET", "/stats")

    def metrics(self) -> str:
        """Every counter in the Prometheus text format."""
        v = self.request("GET", "/metrics")
        if not isinstance(v, str):
            raise VirtgateError("GET /metrics: the answer is not text")
        return v

    def counter(self, section: str, name: str) -> int:
        """One counter of the stats document, e.g. ``counter("device", "rx_frames")``."""
        value = self.stats()[section][name]
        if not isinstance(value, int):
            raise KeyError(f"{section}.{name} is not a counter")
        return value

    def wait_for(self, predicate: Callable[[Dict[str, Any]], Any], timeout: float = 10.0, interval: float = 0.05) -> Dict[str, Any]:
        """Polls the stats until ``predicate(stats)`` is true; returns them. Raises
        ``TimeoutError`` with the last document after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if predicate(s):
                return s
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the counters did not reach the expected state within {timeout} s: {s}")
            time.sleep(interval)

    # Interrupt moderation (ethtool -C's names, with underscores).
    def coalesce(self, **settings: Union[int, bool]) -> Dict[str, Any]:
        """The moderation settings; with keyword arguments (``rx_usecs=100``...), changes those."""
        if not settings:
            return self._object("GET", "/coalesce")
        return self._object("PUT", "/coalesce", settings)

    # Link impairments (docs/impairments.md).
    def impairments(self) -> Dict[str, Any]:
        """The seed, the rules with their counters, the pending schedule, the frames waiting."""
        return self._object("GET", "/impair")

    def impair(self, rules: Rules, *, seed: Optional[int] = None) -> Dict[str, Any]:
        """Replaces the rules (fresh counters; a pending schedule is cancelled)."""
        body: Dict[str, Any] = {"rules": _rules_text(rules)}
        if seed is not None:
            body["seed"] = seed
        return self._object("PUT", "/impair", body)

    def impair_clear(self) -> Dict[str, Any]:
        """No rules, no schedule."""
        return self._object("DELETE", "/impair")

    def impair_schedule(self, steps: Iterable[Tuple[float, Optional[Rules]]], *, seed: Optional[int] = None) -> Dict[str, Any]:
        """Schedules changes, timed by virtgate itself: ``steps`` are ``(seconds from now, rules)``,
        rules ``None`` restoring those in force now. E.g. a 500 ms outage in 2 s:
        ``impair_schedule([(2.0, "both: loss 100%"), (2.5, None)])``."""
        out = []
        for after, rules in steps:
            step: Dict[str, Any] = {"after_ms": int(round(after * 1000))}
            if rules is None:
                step["restore"] = True
            else:
                step["rules"] = _rules_text(rules)
            out.append(step)
        body: Dict[str, Any] = {"steps": out}
        if seed is not None:
            body["seed"] = seed
        return self._object("POST", "/impair/schedule", body)

    @contextmanager
    def impaired(self, rules: Rules, *, seed: Optional[int] = None) -> Iterator[Dict[str, Any]]:
        """Rules for the duration of a ``with`` block; the rules of before come back after it.
        Yields the state right after the rules were installed."""
        before = [r["rule"] for r in self.impairments()["rules"]]
        try:
            yield self.impair(rules, seed=seed)
        finally:
            self.impair(before)

    # Packet capture.
    def capture_start(self, path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]:
        """Starts a pcapng capture into ``path`` (opened by virtgate: give a path it can write)."""
        return self._object("POST", "/capture/start", {"file": os.path.abspath(os.fspath(path))})

    def capture_stop(self) -> bool:
        """Stops the capture; the file is complete when this returns. True if one ran."""
        return bool(self._object("POST", "/capture/stop")["stopped"])

    @contextmanager
    def capture(self, path: Union[str, "os.PathLike[str]"]) -> Iterator[str]:
        """Captures for the duration of a ``with`` block."""
        self.capture_start(path)
        try:
            yield os.fspath(path)
        finally:
            self.capture_stop()

    # Frames and probes.
    def inject(self, frames: Iterable[Frame], *, interval_us: int = 0, fix_checksums: bool = False) -> Dict[str, Any]:
        """Puts Ethernet frames on the guest's RX path exactly as given, in order; returns
        ``{"injected": N, "dropped": N}``. Frames are bytes or scapy packets."""
        hexes = [_frame_bytes(f).hex() for f in frames]
        timeout = self.timeout + interval_us * len(hexes) / 1e6 + 10
        return self._object(
            "POST",
            "/inject",
            {"frames": hexes, "interval_us": interval_us, "fix_checksums": fix_checksums},
            timeout=timeout,
        )

    def inject_file(self, path: Union[str, "os.PathLike[str]"], *, interval_us: int = 0, fix_checksums: bool = False) -> Dict[str, Any]:
        """Injects the frames of a pcap or pcapng file (read by virtgate)."""
        return self._object(
            "POST",
            "/inject",
            {"file": os.path.abspath(os.fspath(path)), "interval_us": interval_us, "fix_checksums": fix_checksums},
            timeout=self.timeout + 70,
        )

    def probes(self) -> List[Dict[str, Any]]:
        """Every built-in probe: name, what it drives, what proves it, its parameters."""
        return self._array("GET", "/probes")

    def probe(self, name: str, **params: Union[str, int]) -> Dict[str, Any]:
        """Sends a built-in probe (docs/kernel-paths.md) with its parameters."""
        return self._object("POST", "/probe", {"name": name, "params": {k: str(v) for k, v in params.items()}})

    # The link and the gateway.
    def link(self) -> bool:
        """Whether the link is up (QEMU may be connected)."""
        return bool(self._object("GET", "/link")["up"])

    def link_down(self) -> None:
        """Closes QEMU's connection and refuses new ones: the guest sees its carrier go."""
        self.request("POST", "/link/down")

    def link_up(self) -> None:
        self.request("POST", "/link/up")

    def forwards(self) -> List[Dict[str, Any]]:
        return self._array("GET", "/forwards")

    def forward_add(self, spec: str) -> Dict[str, Any]:
        """Opens an inbound forward, ``tcp|udp:[ADDR:]PORT:GUEST_PORT`` (``--forward``'s syntax)."""
        return self._object("POST", "/forwards", {"spec": spec})

    def forward_remove(self, spec: str) -> None:
        self.request("DELETE", "/forwards", {"spec": spec})

    def path_mtus(self) -> List[str]:
        return list(self._object("GET", "/path-mtu")["paths"])

    def set_path_mtus(self, paths: Sequence[str]) -> List[str]:
        """Replaces the emulated path MTUs (``["198.51.100.0/24=1400"]``; empty clears)."""
        return list(self._object("PUT", "/path-mtu", {"paths": list(paths)})["paths"])

    # TCP options negotiated with the guest (docs/gateway.md).
    def tcp_options(self, **options: bool) -> Dict[str, bool]:
        """``{"timestamps", "sack", "window_scale"}``; with keyword arguments (``timestamps=False``),
        changes those for connections opened from now on."""
        if not options:
            return dict(self._object("GET", "/tcp-options"))
        return dict(self._object("PUT", "/tcp-options", options))

    def multicast(self) -> Dict[str, Any]:
        return self._object("GET", "/multicast")
