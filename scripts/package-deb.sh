#!/usr/bin/env bash
# Builds the Debian package (target/debian/virtgate_VERSION_ARCH.deb) with dpkg-deb and prints
# its path: the binary, its man pages and shell completions (rendered from the clap definitions
# by `virtgate generate`), the systemd unit, the README and docs. Checked by scripts/test.sh,
# which installs it into a scratch root and runs it from there.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p virtgate >&2
bin=target/release/virtgate
version=$("$bin" --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
root=target/debian/root
rm -rf "$root"
install -d "$root/DEBIAN" "$root/usr/bin"
# The release profile keeps debug information for profiling; the package does not ship it.
objcopy --strip-debug "$bin" "$root/usr/bin/virtgate"
chmod 755 "$root/usr/bin/virtgate"
man="$root/usr/share/man/man1"
"$bin" generate man "$man"
gzip -9n "$man"/*.1
install -d "$root/usr/share/bash-completion/completions" \
    "$root/usr/share/zsh/vendor-completions" "$root/usr/share/fish/vendor_completions.d"
"$bin" generate completions bash > "$root/usr/share/bash-completion/completions/virtgate"
"$bin" generate completions zsh > "$root/usr/share/zsh/vendor-completions/_virtgate"
"$bin" generate completions fish > "$root/usr/share/fish/vendor_completions.d/virtgate.fish"
install -D -m 644 dist/systemd/virtgate@.service "$root/usr/lib/systemd/system/virtgate@.service"
doc="$root/usr/share/doc/virtgate"
install -D -m 644 README.md "$doc/README.md"
install -d "$doc/docs"
install -m 644 docs/*.md "$doc/docs/"
license=$(awk -F'"' '/^license *=/ {print $2; exit}' Cargo.toml)
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: virtgate

Files: *
Copyright: the virtgate authors
License: $license
COPYRIGHT
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: virtgate
Version: $version
Architecture: $arch
Maintainer: virtgate developers <virtgate@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34)
Recommends: qemu-system-x86 | qemu-system
Section: net
Priority: optional
Description: vhost-user virtio-net backend with a NIC model and a userspace gateway
 virtgate serves a virtio-net NIC to QEMU guests over vhost-user and is their
 IPv4/IPv6 gateway: DHCP, router advertisements, DNS, TCP and UDP to host
 sockets, port forwarding. Its NIC model has interrupt moderation, offloads,
 multiqueue, link control and packet capture, all scriptable through a
 control API (virtgate ctl).
CONTROL
out=target/debian/virtgate_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$root" "$out" >&2
echo "$out"
