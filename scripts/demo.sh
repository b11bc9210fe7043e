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
        # The demo runs in its own process group with virtgate and QEMU: end them all.
        kill -TERM -- "-$demo_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 -- "-$demo_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

set -m # the demo gets a process group of its own, so cleanup can signal all of it
VIRTGATE_BIN="$PWD/target/release/virtgate" TMPDIR="$work" target/release/demo "$@" &
demo_pid=$!
set +m
status=0
wait "$demo_pid" || status=$?
demo_pid=""
exit "$status"
