#!/usr/bin/env bash
# Idempotent install of what virtgate's demo and tests need:
#   - Debian packages: qemu-system-x86 (10.x from bookworm-backports on Debian 12), busybox-static, cpio
#   - the guest kernel: Debian's linux-image-amd64 (6.1 on bookworm), unpacked into $VIRTGATE_GUEST_CACHE;
#     with --all-kernels also 6.12 (bookworm-backports) and 5.10 (bullseye), the guest-kernel matrix
#   - with --distro, mmdebstrap and libarchive-tools, and the Debian guest image of
#     guest-tests/tests/distro.rs (scripts/distro-image.sh)
#   - with --libvirt, Debian's libvirt daemon, QEMU driver and clients (virsh, virt-xml-validate
#     with xmllint) for guest-tests/tests/libvirt.rs, which runs a libvirtd of its own
#   - promtool (Debian's prometheus package), unpacked into target/tools
# Nothing downloaded here is ever committed; it all lives under target/.
set -euo pipefail

with_qemu72=0
all_kernels=0
distro=0
libvirt=0
for arg in "$@"; do
    case "$arg" in
        --qemu-7.2) with_qemu72=1 ;;
        --all-kernels) all_kernels=1 ;;
        --distro) distro=1 ;;
        --libvirt) libvirt=1 ;;
        *) echo "usage: $0 [--qemu-7.2] [--all-kernels] [--distro] [--libvirt]" >&2; exit 2 ;;
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
for p in busybox-static cpio xz-utils tshark python3-venv systemd binutils tmux; do have_pkg "$p" || missing+=("$p"); done
# The distribution guests' image is built by mmdebstrap and turned into a newc archive by bsdtar.
if [ "$distro" = 1 ]; then
    for p in mmdebstrap libarchive-tools; do have_pkg "$p" || missing+=("$p"); done
fi
# libvirt without libvirt-daemon-system (which would bring systemd-sysv and start services): the
# test runs its own libvirtd.
if [ "$libvirt" = 1 ]; then
    for p in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libxml2-utils; do
        have_pkg "$p" || missing+=("$p")
    done
fi
if [ ${#missing[@]} -gt 0 ]; then
    apt_update
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# Guest kernels: Debian's image packages, each unpacked into its own directory of the cache:
#   kernel/         the default, the package linux-image-amd64 depends on (6.1 on bookworm)
#   kernel-6.12/    bookworm-backports' linux-image-amd64 (--all-kernels)
#   kernel-5.10/    bullseye's linux-image-amd64, through an apt configuration of its own that
#                   leaves the system's sources alone (--all-kernels)
# Each holds vmlinuz, version, modules/NAME.ko (decompressed) and modules.load: the NIC's modules
# this kernel has as files, in load order (the others are built in, or do not exist yet: 5.10
# has no virtio_pci_*_dev). Unpacked once; a cache without modules.load is unpacked again.
# The modules the harness loads, in order (guest-tests/src/lib.rs reads modules.load).
nic_modules="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
    drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/core/failover
    drivers/net/net_failover drivers/net/virtio_net drivers/net/tun"

# unpack_kernel DEB DIR: the kernel and the NIC's modules of the image package DEB into DIR.
unpack_kernel() {
    local deb=$1 dir=$2 root kver mods m f name
    root=$(mktemp -d "$cache/unpack.XXXXXX")
    dpkg-deb -x "$deb" "$root"
    kver=$(ls "$root/lib/modules")
    mods="$root/lib/modules/$kver"
    rm -rf "$dir"
    mkdir -p "$dir/modules"
    cp "$root"/boot/vmlinuz-* "$dir/vmlinuz"
    : >"$dir/modules.load.tmp"
    for m in $nic_modules; do
        name=${m##*/}
        f=$(ls "$mods/kernel/$m.ko"* 2>/dev/null | head -1 || true)
        if [ -n "$f" ]; then
            # Compressed as the release ships them (xz on 6.12); busybox's insmod takes plain ones.
            case "$f" in
                *.xz) xz -dc "$f" >"$dir/modules/$name.ko" ;;
                *.zst) zstd -qdc "$f" >"$dir/modules/$name.ko" ;;
                *) cp "$f" "$dir/modules/$name.ko" ;;
            esac
            echo "$name" >>"$dir/modules.load.tmp"
        elif grep -q "/$name.ko$" "$mods/modules.builtin"; then
            log "$kver: $name is built in"
        else
            case "$name" in
                virtio_pci_modern_dev | virtio_pci_legacy_dev) log "$kver: no $name (part of virtio_pci)" ;;
                *) log "module $m missing from $deb"; rm -rf "$root"; exit 1 ;;
            esac
        fi
    done
    mv "$dir/modules.load.tmp" "$dir/modules.load"
    echo "$kver" >"$dir/version"
    rm -rf "$root"
}

# fetch_kernel DIR META [APT OPTIONS...]: the image package the metapackage META (e.g.
# linux-image-amd64, or linux-image-amd64=VERSION) depends on, as those options' sources have it,
# into DIR, unless it is there.
fetch_kernel() {
    local dir=$1 meta=$2 pkg tmp
    shift 2
    [ -s "$dir/vmlinuz" ] && [ -s "$dir/modules.load" ] && return 0
    pkg=$(apt-cache "$@" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        log "cannot resolve the package behind $meta ($*)"; exit 1
    fi
    log "fetching guest kernel $pkg into $dir"
    tmp=$(mktemp -d "$cache/dl.XXXXXX")
    chmod a+rwx "$tmp" # apt's download user writes here
    (cd "$tmp" && apt-get "$@" download -qq "$pkg" >&2)
    unpack_kernel "$tmp"/*.deb "$dir"
    rm -rf "$tmp"
}

if [ ! -s "$cache/kernel/vmlinuz" ] || [ ! -s "$cache/kernel/modules.load" ]; then
    apt_update
fi
fetch_kernel "$cache/kernel" linux-image-amd64
if [ "$all_kernels" = 1 ]; then
    if [ "$codename" = bookworm ] && [ ! -s "$cache/kernel-6.12/modules.load" ]; then
        apt_update
        v=$(apt-cache madison linux-image-amd64 | awk '$3 ~ /^6\.12\./ {print $3; exit}')
        if [ -z "$v" ]; then log "no 6.12 linux-image-amd64 in bookworm-backports"; exit 1; fi
        fetch_kernel "$cache/kernel-6.12" "linux-image-amd64=$v"
    fi
    if [ ! -s "$cache/kernel-5.10/modules.load" ]; then
        # bullseye's lists in the cache, not the system's: nothing of the host's apt changes.
        bullseye="$cache/apt-bullseye"
        mkdir -p "$bullseye/lists/partial" "$bullseye/archives/partial"
        printf '%s\n' "deb http://deb.debian.org/debian bullseye main" \
            "deb http://deb.debian.org/debian-security bullseye-security main" >"$bullseye/sources.list"
        apt_bullseye=(-o "Dir::Etc::SourceList=$bullseye/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$bullseye/lists" -o "Dir::Cache=$bullseye" -o Dir::Cache::pkgcache=
            -o Dir::Cache::srcpkgcache= -o "Dir::Cache::archives=$bullseye/archives")
        log "apt-get update (bullseye, for the 5.10 guest kernel)"
        $SUDO apt-get "${apt_bullseye[@]}" update -qq >&2
        fetch_kernel "$cache/kernel-5.10" linux-image-amd64 "${apt_bullseye[@]}"
    fi
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

# The user and groups libvirt's QEMU driver resolves at start-up even when its qemu.conf names
# others (what libvirt-daemon-system's postinst creates).
if [ "$libvirt" = 1 ]; then
    getent group kvm >/dev/null || $SUDO groupadd --system kvm
    getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
    getent passwd libvirt-qemu >/dev/null || $SUDO useradd --system --no-create-home \
        --home-dir /var/lib/libvirt --shell /usr/sbin/nologin --gid kvm libvirt-qemu
fi

if [ "$distro" = 1 ]; then
    VIRTGATE_GUEST_CACHE=$cache "$repo/scripts/distro-image.sh" >/dev/null
fi

kernels=$(cat "$cache"/kernel*/version 2>/dev/null | tr '\n' ' ')
log "ready: $(qemu-system-x86_64 --version | head -1); guest kernels $kernels"
