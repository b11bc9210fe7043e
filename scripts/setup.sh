#!/usr/bin/env bash
# Idempotent install of what virtgate's demo and tests need:
#   - Debian packages: qemu-system-x86 (10.x from bookworm-backports on Debian 12), busybox-static, cpio
#   - the guest kernel: Debian's linux-image-amd64 (6.1 on bookworm), unpacked into $VIRTGATE_GUEST_CACHE
#   - promtool (Debian's prometheus package), unpacked into target/tools
# Nothing downloaded here is ever committed; it all lives under target/.
set -euo pipefail

with_qemu72=0
for arg in "$@"; do
    case "$arg" in
        --qemu-7.2) with_qemu72=1 ;;
        *) echo "usage: $0 [--qemu-7.2]" >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIRTGATE_GUEST_CACHE:-$repo/target/guest}
mkdir -p "$cache"

log() { printf 'setup: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        log "not root and no sudo: install qemu-system-x86 busybox-static cpio tshark yourself"; fi
fi

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        $SUDO apt-get update -qq >&2
        apt_updated=1
    fi
}

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Debian 12 ships QEMU 7.2, which crashes under TCG with vhost-user + MSI-X (see docs/qemu-interop.md).
# bookworm-backports (same Debian archive) carries QEMU 10.
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
qemu_target=()
if [ "$codename" = bookworm ]; then
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding the bookworm-backports suite"
        echo "deb http://deb.debian.org/debian bookworm-backports main" |
            $SUDO tee /etc/apt/sources.list.d/virtgate-backports.list >/dev/null
        apt_updated=0
    fi
    qemu_target=(-t bookworm-backports)
fi

qemu_ok=0
if command -v qemu-system-x86_64 >/dev/null 2>&1; then
    qemu_major=$(qemu-system-x86_64 --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
    if [ "$codename" != bookworm ] || [ "${qemu_major:-0}" -ge 8 ]; then qemu_ok=1; fi
fi
if [ "$qemu_ok" = 0 ]; then
    apt_update
    log "installing qemu-system-x86 ${qemu_target[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        "${qemu_target[@]}" qemu-system-x86 >&2
fi

missing=()
# tshark reads back the packet captures in the capture tests; python3-venv makes the virtual
# environment the Python client's tests run in; systemd's systemd-analyze checks the unit in
# dist/systemd, binutils strips the packaged binary, tmux is the terminal `ctl watch` is tested in.
for p in busybox-static cpio tshark python3-venv systemd binutils tmux; do have_pkg "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    apt_update
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The guest kernel: the image package linux-image-amd64 depends on (the distribution's default, not
# backports). Unpacked once; later runs find $cache/kernel/vmlinuz and the modules (a cache from
# before a module was added to the list is unpacked again).
if [ ! -s "$cache/kernel/vmlinuz" ] || [ ! -d "$cache/kernel/modules" ] ||
    ! ls "$cache"/kernel/modules/tun.ko* >/dev/null 2>&1; then
    apt_update
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        log "cannot resolve the package behind linux-image-amd64"; exit 1
    fi
    log "fetching guest kernel $pkg"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    chmod a+rwx "$tmp" # apt's download user writes here
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -qq "$pkg" >&2)
    dpkg-deb -x "$tmp"/*.deb "$tmp/root"
    rm -rf "$cache/kernel"
    mkdir -p "$cache/kernel/modules"
    cp "$tmp"/root/boot/vmlinuz-* "$cache/kernel/vmlinuz"
    kver=$(ls "$tmp/root/lib/modules")
    mods="$tmp/root/lib/modules/$kver/kernel"
    for m in drivers/virtio/virtio_ring.ko drivers/virtio/virtio.ko \
        drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko \
        drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko \
        drivers/net/virtio_net.ko drivers/net/tun.ko; do
        # Debian compresses modules on some releases; keep whatever form the package has.
        f=$(ls "$mods/$m"* 2>/dev/null | head -1)
        if [ -z "$f" ]; then log "module $m missing from $pkg"; exit 1; fi
        cp "$f" "$cache/kernel/modules/"
    done
    echo "$kver" >"$cache/kernel/version"
    rm -rf "$tmp"
    trap - EXIT
fi

# promtool, Prometheus's checker of /metrics and of queries (backend/tests/metrics.rs): unpacked from
# Debian's prometheus package into target/tools, not installed (the package would start a server).
tools=$repo/target/tools
if [ ! -x "$tools/promtool" ]; then
    apt_update
    log "fetching promtool from Debian's prometheus package"
    mkdir -p "$tools"
    tmp=$(mktemp -d "$tools/dl.XXXXXX")
    chmod a+rwx "$tmp"
    (cd "$tmp" && apt-get download -qq prometheus >&2)
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mv "$tmp/root/usr/bin/promtool" "$tools/promtool"
    rm -rf "$tmp"
fi

# Optionally, Debian 12's own QEMU 7.2 unpacked beside the system one (not installed), so that the
# guest tests also run against it: it needs vectors=0 under TCG and exercises the older client.
if [ "$with_qemu72" = 1 ] && [ "$codename" = bookworm ] && [ ! -x "$cache/qemu-7.2/usr/bin/qemu-system-x86_64" ]; then
    apt_update
    pick() { apt-cache madison "$1" | awk -v p="$2" '$3 ~ p {print $3; exit}'; }
    v_x86=$(pick qemu-system-x86 '^1:7\.2')
    v_common=$(pick qemu-system-common '^1:7\.2')
    v_data=$(pick qemu-system-data '^1:7\.2')
    if [ -n "$v_x86" ] && [ -n "$v_common" ] && [ -n "$v_data" ]; then
        log "fetching QEMU $v_x86 into $cache/qemu-7.2"
        tmp=$(mktemp -d "$cache/dl.XXXXXX")
        chmod a+rwx "$tmp"
        (cd "$tmp" && apt-get download -qq "qemu-system-x86=$v_x86" "qemu-system-common=$v_common" \
            "qemu-system-data=$v_data" >&2)
        for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
        rm -rf "$cache/qemu-7.2"
        mv "$tmp/root" "$cache/qemu-7.2"
        rm -rf "$tmp"
    else
        log "QEMU 7.2 is not in the package lists; the 7.2 matrix will not run"
    fi
fi

log "ready: $(qemu-system-x86_64 --version | head -1); guest kernel $(cat "$cache/kernel/version")"
