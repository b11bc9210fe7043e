#!/usr/bin/env bash
# Benchmark (not a test): the same guest against virtgate and against QEMU's -netdev user, in one
# run. iperf3 guest->host and host->guest, a ping RTT series, and virtgate's CPU seconds per GB.
# Installs iperf3 from Debian (it is copied into the guest with its libraries).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v iperf3 >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends iperf3 >&2
fi
cargo build --release -p virtgate -p guest-tests --bin virtgate --bin bench-vm
work=$(mktemp -d -t virtgate-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
VIRTGATE_BIN="$PWD/target/release/virtgate" TMPDIR="$work" target/release/bench-vm
