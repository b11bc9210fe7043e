#!/usr/bin/env bash
# Demo: installs what it needs, builds virtgate, starts it, boots a Linux guest attached to it and
# shows the guest getting its DHCP lease and pinging the gateway, then virtgate's counters.
# Everything runs inside one temporary directory that is removed on exit or Ctrl-C, and no process
# outlives the script.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release -p virtgate -p guest-tests --bin virtgate --bin demo

work=$(mktemp -d -t virtgate-demo.XXXXXX)
demo_pid=""
cleanup() {
    trap - EXIT INT TERM
    if [ -n "$demo_pid" ]; then
        kill -TERM "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    # Anything the demo started (virtgate, QEMU) lives in our process group's children.
    pkill -TERM -P $$ 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

VIRTGATE_BIN="$PWD/target/release/virtgate" TMPDIR="$work" target/release/demo "$@" &
demo_pid=$!
wait "$demo_pid"
demo_pid=""
