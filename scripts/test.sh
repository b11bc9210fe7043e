#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), checks formatting and lints,
# builds virtgate in release mode and runs every test of the workspace, the guest tests included,
# then every fuzz target for a bounded time.
# Guest tests boot QEMU under TCG; set VIRTGATE_ACCEL=kvm where nested KVM works.
set -euo pipefail
cd "$(dirname "$0")/.."

# Every guest kernel of the matrix, the distribution guests' image and libvirt (docs/testing.md).
scripts/setup.sh --qemu-7.2 --all-kernels --distro --libvirt

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

# The Python client (clients/python) against a real virtgate, and the example pytest suite
# (examples/pytest-guest) with a real guest, in a virtual environment made here with pytest
# from PyPI.
echo "== python client and example suite"
venv="$PWD/target/pyvenv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check pytest mypy ./clients/python
"$venv/bin/mypy" --strict clients/python/src/virtgate
cargo build --release --locked -p guest-tests --bin guest-image
"$venv/bin/python" -m pytest -q clients/python/tests examples/pytest-guest

# The foundation guest tests again with Debian 12's QEMU 7.2 (vectors=0 under TCG, QEMU 7.2's
# vhost-user client, reconnects), and the multiqueue ones (QEMU's MQ path without MSI-X), when
# setup could unpack it. The gateway tests do not depend on the QEMU version and run once.
qemu72="$PWD/target/guest/qemu-7.2"
if [ -x "$qemu72/usr/bin/qemu-system-x86_64" ] && "$qemu72/usr/bin/qemu-system-x86_64" --version >/dev/null 2>&1; then
    echo "== guest tests with $("$qemu72/usr/bin/qemu-system-x86_64" --version | head -1)"
    export VIRTGATE_QEMU="$qemu72/usr/bin/qemu-system-x86_64"
    export VIRTGATE_QEMU_ARGS="-L $qemu72/usr/share/qemu -L /usr/share/seabios"
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run -p guest-tests --test foundation --locked --profile ci
        cargo nextest run -p guest-tests --test nic --locked --profile ci queue_pairs
    else
        cargo test -p guest-tests --test foundation --locked
        cargo test -p guest-tests --test nic --locked queue_pairs
    fi
else
    echo "== QEMU 7.2 matrix not run: no runnable QEMU 7.2 under $qemu72"
fi

# The Debian package (scripts/package-deb.sh): installed into a scratch root with dpkg, and run
# from there.
echo "== package"
deb=$(scripts/package-deb.sh)
scratch=$(mktemp -d)
mkdir -p "$scratch/var/lib/dpkg/info" "$scratch/var/lib/dpkg/updates"
touch "$scratch/var/lib/dpkg/status"
# libc6 is the host's, not the scratch root's.
dpkg --root="$scratch" --force-depends --force-not-root -i "$deb" >/dev/null
# Each output is taken whole before grep looks at it (grep -q stopping early would fail the
# writer under pipefail).
status=$(dpkg --root="$scratch" -s virtgate)
grep -qx "Status: install ok installed" <<<"$status"
version=$("$scratch/usr/bin/virtgate" --version)
grep -Eqx "virtgate [0-9.]+ \(git [0-9a-f]{12}\)" <<<"$version"
help=$("$scratch/usr/bin/virtgate" --help)
grep -q -- "--socket" <<<"$help"
help=$("$scratch/usr/bin/virtgate" ctl --help)
grep -q -- "--api-socket" <<<"$help"
for f in usr/share/man/man1/virtgate.1.gz usr/share/man/man1/virtgate-ctl.1.gz \
    usr/share/bash-completion/completions/virtgate usr/share/zsh/vendor-completions/_virtgate \
    usr/share/fish/vendor_completions.d/virtgate.fish usr/lib/systemd/system/virtgate@.service \
    usr/share/doc/virtgate/README.md usr/share/doc/virtgate/copyright; do
    test -s "$scratch/$f" || { echo "package: $f missing" >&2; exit 1; }
done
bash -n "$scratch/usr/share/bash-completion/completions/virtgate"
page=$(zcat "$scratch/usr/share/man/man1/virtgate.1.gz")
grep -q '^\.TH virtgate 1' <<<"$page"
rm -rf "$scratch"

# Every fuzz target for a bounded time (docs/fuzzing.md; under 3 minutes in all): a crash fails.
echo "== fuzz"
FUZZ_SECONDS=20 scripts/fuzz.sh
