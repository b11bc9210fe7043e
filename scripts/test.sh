#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), checks formatting and lints,
# builds virtgate in release mode and runs every test of the workspace, the guest tests included.
# Guest tests boot QEMU under TCG; set VIRTGATE_ACCEL=kvm where nested KVM works.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --release --locked -p virtgate
export VIRTGATE_BIN="$PWD/target/release/virtgate"

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --profile ci
else
    cargo test --workspace --locked
fi
