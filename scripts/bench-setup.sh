#!/usr/bin/env bash
# Builds what the side-by-side benchmarks compare virtgate with and prints the path of the
# `passt` binary on stdout (nothing else goes to stdout):
#   - passt with vhost-user: Debian 12's package predates it, so the source of Debian 13's
#     (trixie) package is fetched with a deb-src line for trixie on the archive the machine uses,
#     and built with `make` into target/bench/passt-VERSION/.
#   - iperf3 and the C compiler from Debian.
# Idempotent; nothing downloaded is ever committed. Exits non-zero with a message on stderr when
# passt cannot be had (the benchmark then runs without it and says so).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${VIRTGATE_BENCH_CACHE:-$repo/target/bench}
mkdir -p "$cache"
log() { printf 'bench-setup: %s\n' "$*" >&2; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in iperf3 gcc make; do have_pkg "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# A passt built before is reused.
built=$(ls -d "$cache"/passt-*/passt 2>/dev/null | sort | tail -1 || true)
if [ -n "$built" ] && [ -x "$built" ] && [ -x "$built.avx2" ]; then
    echo "$built"
    exit 0
fi

# The same mirror the machine's Debian sources use, with the trixie suite for sources only.
mirror=$(grep -rhoE 'https?://[^ ]*/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null |
    grep -v security | head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}
list=/etc/apt/sources.list.d/virtgate-trixie-src.list
if [ ! -f "$list" ]; then
    log "adding deb-src for trixie from $mirror (sources only: no package is installed from it)"
    echo "deb-src $mirror trixie main" | $SUDO tee "$list" >/dev/null
fi
$SUDO apt-get update -qq >&2 || log "apt-get update reported errors; trying anyway"

src="$cache/src"
mkdir -p "$src"
(
    cd "$src"
    # The .dsc has answered 404 on this archive before; the orig tarball is all that is needed,
    # so a failing source download is not fatal while a tarball arrived.
    apt-get source --download-only passt >&2 || true
)
tarball=$(ls "$src"/passt_*.orig.tar.* 2>/dev/null | sort | tail -1 || true)
if [ -z "$tarball" ]; then
    log "could not download passt's source from $mirror (trixie)"
    exit 1
fi
version=$(basename "$tarball" | sed -E 's/^passt_(.*)\.orig\.tar\..*$/\1/')
dir="$cache/passt-$version"
rm -rf "$dir"
mkdir -p "$dir"
tar -xf "$tarball" -C "$dir" --strip-components=1
log "building passt $version"
# passt execs passt.avx2 beside it on CPUs with AVX2 (its faster checksums): build both.
make -C "$dir" -j"$(nproc)" passt passt.avx2 >&2
if ! "$dir/passt" --help 2>&1 | grep -q vhost-user; then
    log "passt $version has no --vhost-user"
    exit 1
fi
echo "$dir/passt"
