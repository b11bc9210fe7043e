"""The Python client against a real virtgate (VIRTGATE_BIN, or virtgate on PATH)."""

import os
import socket
import time

import pytest

from virtgate import Virtgate, VirtgateClient, VirtgateError, vhost_user_args


@pytest.fixture
def vg():
    with Virtgate(args=["--impair", "to-guest: arp: pass", "--impair-seed", "3"]) as v:
        yield v


def test_a_process_starts_serves_and_stops(vg):
    assert vg.is_running()
    assert os.path.exists(vg.socket) and os.path.exists(vg.api_socket)
    stats = vg.client.stats()
    assert {"guest", "virtio", "device", "queues", "stack", "impair"} <= stats.keys()
    assert vg.client.counter("device", "rx_frames") == 0
    assert "# TYPE virtgate_device_rx_frames_total counter" in vg.client.metrics()
    code = vg.shutdown()
    assert code == 0, vg.log()
    assert not vg.is_running()


def test_bad_arguments_fail_the_launch_with_virtgates_message():
    with pytest.raises(VirtgateError, match="--impair"):
        Virtgate(args=["--impair", "to-guest: delay 5"]).launch()


def test_impairments_are_set_listed_cleared_and_refused_with_the_reason(vg):
    c = vg.client
    state = c.impairments()
    assert state["seed"] == 3
    assert [r["rule"] for r in state["rules"]] == ["to-guest: arp: pass"]
    state = c.impair(["both: loss 2% delay 20ms jitter 5ms", "from-guest: tcp port 80: corrupt 0.1%"], seed=9)
    assert [(r["direction"], r["rule"]) for r in state["rules"]] == [
        ("to-guest", "to-guest: loss 2% delay 20ms jitter 5ms"),
        ("from-guest", "from-guest: loss 2% delay 20ms jitter 5ms"),
        ("from-guest", "from-guest: tcp port 80: corrupt 0.1%"),
    ]
    assert state["seed"] == 9
    assert state["rules"][0]["counters"]["matched"] == 0
    assert 'virtgate_impair_dropped_total{rule="2",direction="from-guest"} 0' in c.metrics()
    with pytest.raises(VirtgateError) as e:
        c.impair("to-guest: los 5%")
    assert e.value.status == 400 and "not an action" in e.value.message
    assert len(c.impairments()["rules"]) == 3, "a refused change changes nothing"
    with c.impaired("from-guest: icmp: loss 100%") as inside:
        assert inside["rules"][0]["rule"] == "from-guest: icmp: loss 100%"
    assert len(c.impairments()["rules"]) == 3, "the rules of before came back"
    assert c.impair_clear()["rules"] == []


def test_a_schedule_is_timed_by_virtgate(vg):
    c = vg.client
    start = time.monotonic()
    state = c.impair_schedule([(0.3, "both: loss 100%"), (0.6, None)])
    assert [s.get("restore", False) for s in state["schedule"]] == [False, True]
    deadline = start + 10
    while len(c.impairments()["rules"]) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert time.monotonic() - start >= 0.3
    while c.impairments()["rules"][0]["rule"] != "to-guest: arp: pass":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert time.monotonic() - start >= 0.6
    assert c.impairments()["schedule"] == []


def test_moderation_link_forwards_and_path_mtus(vg):
    c = vg.client
    assert c.coalesce(rx_usecs=100, rx_usecs_abs=400)["rx_usecs"] == 100
    assert c.coalesce()["rx_usecs_abs"] == 400
    with pytest.raises(VirtgateError, match="rx_frames"):
        c.coalesce(rx_frames=8, rx_usecs=0, rx_usecs_abs=0)
    assert c.link()
    c.link_down()
    assert not c.link()
    c.link_up()
    assert c.link()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    spec = f"tcp:127.0.0.1:{port}:22"
    c.forward_add(spec)
    assert {"protocol": "tcp", "host": f"127.0.0.1:{port}", "guest_port": 22} in c.forwards()
    c.forward_remove(spec)
    assert c.forwards() == []
    assert c.set_path_mtus(["198.51.100.0/24=1400"]) == ["198.51.100.0/24=1400"]
    assert c.path_mtus() == ["198.51.100.0/24=1400"]
    assert c.set_path_mtus([]) == []
    assert c.tcp_options() == {"timestamps": True, "sack": True, "window_scale": True}
    assert c.tcp_options(timestamps=False)["timestamps"] is False
    assert c.tcp_options() == {"timestamps": False, "sack": True, "window_scale": True}
    with pytest.raises(VirtgateError, match="mss"):
        c.tcp_options(mss=True)


class FakePacket:
    """What scapy's packets offer: bytes(packet) is the wire form."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data


def test_frames_probes_and_captures(vg, tmp_path):
    c = vg.client
    arp = bytes.fromhex("ffffffffffff525500000202" "0806" "0001080006040001" "5255000002020a000202" "0000000000000a00020f")
    with c.capture(os.path.join(vg.dir, "cap.pcapng")) as path:
        answer = c.inject([arp, FakePacket(arp)])
        assert answer["injected"] + answer["dropped"] == 2
    with open(path, "rb") as f:
        assert f.read(4) == b"\x0a\x0d\x0d\x0a", "a pcapng section header"
    with pytest.raises(TypeError):
        c.inject([12])
    with pytest.raises(VirtgateError) as e:
        c.inject([b""])
    assert e.value.status == 400
    names = {p["name"] for p in c.probes()}
    assert "ipv4-frag-reversed" in names
    with pytest.raises(VirtgateError, match="no probe called no-such-probe"):
        c.probe("no-such-probe")


def test_an_unreachable_api_is_a_clear_error(tmp_path):
    with pytest.raises(VirtgateError, match="cannot reach the API"):
        VirtgateClient(tmp_path / "nothing.sock").stats()


def test_qemu_arguments_share_the_guests_memory():
    args = vhost_user_args("/run/vg.sock", 512, mac="52:54:00:12:34:56", queues=2)
    joined = " ".join(args)
    assert "memory-backend-memfd,id=vg0mem,size=512M,share=on" in joined
    assert "socket,id=vg0c,path=/run/vg.sock" in joined
    assert "vhost-user,id=vg0,chardev=vg0c,queues=2" in joined
    assert "virtio-net-pci,netdev=vg0,mac=52:54:00:12:34:56,mq=on,vectors=6" in joined
