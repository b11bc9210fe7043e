"""The QEMU side of a vhost-user NIC on virtgate."""

from __future__ import annotations

import os
from typing import List, Optional, Union

__all__ = ["vhost_user_args"]


def vhost_user_args(
    socket: Union[str, "os.PathLike[str]"],
    memory_mib: int,
    *,
    mac: Optional[str] = None,
    queues: int = 1,
    reconnect_ms: Optional[int] = None,
    netdev_id: str = "vg0",
) -> List[str]:
    """QEMU arguments for a virtio-net NIC served by virtgate at ``socket``: the guest's memory as
    a shared memfd (vhost-user needs it; ``memory_mib`` must be the machine's ``-m``), the chardev,
    the netdev and the device. ``reconnect_ms`` makes QEMU reconnect when virtgate restarts (QEMU
    9.2 or later; older ones take ``reconnect=`` in seconds)."""
    chardev = f"socket,id={netdev_id}c,path={os.fspath(socket)}"
    if reconnect_ms is not None:
        chardev += f",reconnect-ms={reconnect_ms}"
    netdev = f"vhost-user,id={netdev_id},chardev={netdev_id}c"
    device = f"virtio-net-pci,netdev={netdev_id}"
    if mac:
        device += f",mac={mac}"
    if queues > 1:
        netdev += f",queues={queues}"
        device += f",mq=on,vectors={2 * queues + 2}"
    return [
        "-object", f"memory-backend-memfd,id={netdev_id}mem,size={memory_mib}M,share=on",
        "-numa", f"node,memdev={netdev_id}mem",
        "-chardev", chardev,
        "-netdev", netdev,
        "-device", device,
    ]
