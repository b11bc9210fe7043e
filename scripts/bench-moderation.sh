#!/usr/bin/env bash
# Benchmark (not a test): interrupt moderation at several settings against the same guest, in one
# run: RX interrupts per frame during a download, and ping round trips.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p virtgate -p guest-tests --bin virtgate --bin bench-moderation
work=$(mktemp -d -t virtgate-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
VIRTGATE_BIN="$PWD/target/release/virtgate" TMPDIR="$work" target/release/bench-moderation
