#!/usr/bin/env bash
# Builds the Debian guest image of the distribution tests (guest-tests/tests/distro.rs): Debian 12
# (bookworm) from Debian's archive by mmdebstrap, systemd as init, with three network stacks
# installed and none started (the kernel command line picks one: virtgate.net=networkd, ifupdown
# or dhcpcd; guest-tests/distro/files/usr/local/sbin/virtgate-net). No kernel inside: the harness
# boots its own (guest_tests::GuestKernel) and adds that kernel's NIC modules and an /init that
# loads them before systemd starts (guest_tests::GuestImage::distro).
#
# Output: $VIRTGATE_GUEST_CACHE/debian-bookworm-DIGEST.cpio (newc, the rootfs as an initramfs),
# DIGEST over this script and guest-tests/distro/files, so a changed recipe builds a new image.
# The package set and the suite are fixed and SOURCE_DATE_EPOCH pins the timestamps; the packages
# are bookworm's current ones (point releases change them). Prints the image's path.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIRTGATE_GUEST_CACHE:-$repo/target/guest}
files=$repo/guest-tests/distro/files
mkdir -p "$cache"
log() { printf 'distro-image: %s\n' "$*" >&2; }

digest=$( (cat "$0"; cd "$files" && find . -type f | sort | xargs sha256sum) | sha256sum | cut -c1-16)
image=$cache/debian-bookworm-$digest.cpio
if [ -s "$image" ]; then
    echo "$image"
    exit 0
fi

packages=(
    systemd systemd-sysv udev dbus         # init, device events, the bus resolvectl/networkctl use
    systemd-resolved                        # networkd's resolver (its own stub on 127.0.0.53)
    ifupdown isc-dhcp-client                # ifupdown with dhclient and dhclient -6
    dhcpcd                                  # dhcpcd's service
    iproute2 iputils-ping procps wget netbase
)
tmp=$(mktemp -d "$cache/distro.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building $image with mmdebstrap (bookworm, ${#packages[@]} packages and their dependencies)"
SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --variant=minbase \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="cp -a '$files'/. \"\$1\"/" \
    --customize-hook='systemctl --root="$1" enable virtgate-console.service virtgate-net.service' \
    --customize-hook='systemctl --root="$1" disable systemd-networkd.service systemd-resolved.service networking.service dhcpcd.service' \
    --customize-hook='systemctl --root="$1" mask serial-getty@ttyS0.service getty@tty1.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer' \
    --customize-hook='echo virtgate-guest >"$1/etc/hostname"; rm -f "$1/etc/resolv.conf"; : >"$1/etc/resolv.conf"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    bookworm "$tmp/rootfs.tar" http://deb.debian.org/debian >&2
# The rootfs as a newc archive (what the kernel unpacks as an initramfs), without unpacking it
# here (no root needed for the device nodes).
bsdtar --format newc -cf "$tmp/rootfs.cpio" @"$tmp/rootfs.tar"
mv "$tmp/rootfs.cpio" "$image"
log "$(du -h "$image" | cut -f1) in $image"
echo "$image"
