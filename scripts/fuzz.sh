#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ on stable Rust (no sanitizer: coverage instrumentation
# through plain rustc flags, docs/fuzzing.md) and runs each for a bounded time.
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS each (default 40)
#   scripts/fuzz.sh stack 3600       one target for an hour
#   FUZZ_JOBS=2 scripts/fuzz.sh ...  libFuzzer workers per target
#
# New inputs that add coverage land in target/fuzz-corpus/TARGET (kept between runs); the seeds in
# fuzz/corpus/TARGET are read, never written. A crash stops with a non-zero status and leaves the
# input in target/fuzz-artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=(wire stack rings relay api pcap impair)
if [ -n "${1:-}" ]; then targets=("$1"); fi
seconds=${2:-${FUZZ_SECONDS:-40}}
jobs=${FUZZ_JOBS:-1}
triple=x86_64-unknown-linux-gnu

# libfuzzer-sys compiles libFuzzer (C++): g++ from Debian.
if ! command -v g++ >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends g++ >&2
fi

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the flags off build scripts; a target directory of its own keeps the
# instrumented build apart from the workspace's.
cargo build --release --locked --manifest-path fuzz/Cargo.toml --target "$triple" \
    --target-dir target/fuzz-build --bins

for t in "${targets[@]}"; do
    bin="target/fuzz-build/$triple/release/$t"
    corpus="target/fuzz-corpus/$t"
    artifacts="target/fuzz-artifacts/$t"
    mkdir -p "$corpus" "$artifacts" "fuzz/corpus/$t"
    echo "== fuzz $t for ${seconds}s"
    parallel=()
    # Several workers fork and log to files of their own (target/fuzz-logs).
    if [ "$jobs" -gt 1 ]; then
        mkdir -p target/fuzz-logs
        parallel=(-fork="$jobs")
    fi
    # The fuzzer's own status decides; grep only trims its output (and may match nothing). The
    # statuses are read straight after the pipeline: anything run in between (an `|| true`
    # after a failed pipeline under pipefail) would replace them.
    set +e
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=70000 \
        -print_final_stats=1 "${parallel[@]}" \
        -artifact_prefix="$artifacts/" "$corpus" "fuzz/corpus/$t" 2>&1 |
        grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|.*panicked|.*deadly signal|Test unit written)"
    statuses=("${PIPESTATUS[@]}")
    set -e
    status=${statuses[0]}
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $t failed (status $status); inputs in $artifacts" >&2
        exit 1
    fi
done
