#!/usr/bin/env bash
# Benchmark (not a test): the same guest against virtgate (defaults, --mtu 65520, --offloads
# none, --offloads csum with and without TCP timestamps), passt in vhost-user mode (MTU 65520 and 1500) and QEMU's -netdev user, interleaved in
# one run: iperf3 both ways, CPU per byte of the backend and of QEMU, TCP request/response and
# ping latency, guest interrupts per MB, idle wake-ups. See docs/performance.md.
#
#   scripts/bench-vm.sh                           3 rounds of every configuration
#   VIRTGATE_BENCH_ROUNDS=5 scripts/bench-vm.sh
#   VIRTGATE_BENCH_ONLY="virtgate,passt -m 1500" scripts/bench-vm.sh
#
# passt is built from Debian 13's source by scripts/bench-setup.sh; when that fails the bench
# says so and runs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if passt=$(scripts/bench-setup.sh); then
    export VIRTGATE_PASST="$passt"
else
    echo "bench-vm: passt could not be built; running without it" >&2
    unset VIRTGATE_PASST
fi
cargo build --release -p virtgate -p guest-tests --bin virtgate --bin bench-vm
work=$(mktemp -d -t virtgate-bench.XXXXXX)
# passt drops to the user nobody when started as root: it must reach its socket's directory.
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
VIRTGATE_BIN="$PWD/target/release/virtgate" TMPDIR="$work" target/release/bench-vm
