"""Shape the link under a real guest and check what its kernel counted against what virtgate says
it did. Run: `VIRTGATE_BIN=path/to/virtgate python -m pytest examples/pytest-guest`."""

import hashlib
import os
import re
import socket
import threading


def serve_upload(size: int):
    """A host server on the loopback that reads `size` bytes and answers their MD5; returns its
    port and a function giving the digest it computed."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(120)
    result = {}

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(120)
        h, got = hashlib.md5(), 0
        while got < size:
            chunk = conn.recv(65536)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
        result["md5"] = h.hexdigest()
        conn.sendall((result["md5"] + "\n").encode())
        conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], result


def test_lost_data_segments_are_resent_by_the_guest(virtgate, guest):
    size = 4 << 20
    port, _ = serve_upload(size)
    guest.sh(f"dd if=/dev/urandom of=/tmp/up bs=1024 count={size // 1024} 2>/dev/null")
    local = guest.sh("md5sum /tmp/up").split()[0]
    before = guest.counters()
    # The 5th and 6th data segments the guest sends are lost: a window makes the test exact.
    state = virtgate.client.impair("from-guest: tcp data frames 5-6: loss 100%")
    assert state["rules"][0]["counters"]["dropped"] == 0
    remote = guest.sh(f"nc 10.0.2.2 {port} </tmp/up").split()[0]
    after = guest.counters()
    rule = virtgate.client.impairments()["rules"][0]["counters"]
    assert remote == local, "the bytes arrived intact"
    assert rule["dropped_tcp_data"] == 2, rule
    assert after["Tcp.RetransSegs"] > before["Tcp.RetransSegs"], "every lost segment was resent"


def test_delay_shows_in_the_guests_ping(virtgate, guest):
    virtgate.client.impair("both: icmp: delay 40ms")
    out = guest.sh("ping -c 3 -i 0.3 10.0.2.3")
    low = float(re.search(r"min/avg/max = ([0-9.]+)/", out).group(1))
    assert low >= 80.0, out
    rules = virtgate.client.impairments()["rules"]
    assert [r["counters"]["delayed"] for r in rules] == [3, 3]


def test_corrupted_frames_are_what_the_guest_rejects(virtgate, guest):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    payload = os.urandom(2 << 20)

    def send():
        conn, _ = server.accept()
        conn.sendall(payload)
        conn.close()

    threading.Thread(target=send, daemon=True).start()
    before = guest.counters()
    # One bit flipped in the 3rd to the 6th data segments to the guest.
    virtgate.client.impair("to-guest: ipv4 tcp data frames 3-6: corrupt 100%")
    digest = guest.sh(f"nc 10.0.2.2 {server.getsockname()[1]} </dev/null | md5sum").split()[0]
    after = guest.counters()
    rule = virtgate.client.impairments()["rules"][0]["counters"]
    assert digest == hashlib.md5(payload).hexdigest()
    assert rule["corrupted"] == 4, rule
    assert rule["corrupted_tcp"] > 0, rule
    assert after["Tcp.InCsumErrors"] - before["Tcp.InCsumErrors"] == rule["corrupted_tcp"]
