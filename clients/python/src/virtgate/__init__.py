"""Control virtgate from Python: start it, read its counters, shape its link, inject frames.

virtgate is a vhost-user-net backend for QEMU guests with an in-process gateway stack. Its control
API is HTTP with JSON bodies on a unix socket (``--api-socket``); this package speaks it with the
standard library only. The shape follows QEMU's Python packages: :class:`Virtgate` starts and stops
a virtgate process as ``qemu.machine.QEMUMachine`` does QEMU, and :class:`VirtgateClient` talks to
a running one as ``qemu.qmp``'s ``QEMUMonitorProtocol`` does to QMP::

    from virtgate import Virtgate

    with Virtgate(args=["--impair", "to-guest: delay 20ms"]) as vg:
        # start QEMU with virtgate.qemu.vhost_user_args(vg.socket, ...)
        vg.client.impair("both: loss 2%")
        print(vg.client.stats()["device"]["rx_loss_injected"])
"""

from .client import VirtgateClient, VirtgateError
from .process import Virtgate
from .qemu import vhost_user_args

__all__ = ["Virtgate", "VirtgateClient", "VirtgateError", "vhost_user_args"]
__version__ = "0.1.0"
