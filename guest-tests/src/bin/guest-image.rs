//! `guest-image`: builds (or finds in the cache) the test guest the harness boots — Debian's
//! kernel and an initramfs with busybox and the guest programs — and prints where it is, as JSON:
//! `{"kernel", "initramfs", "append", "ready"}`. For guest test suites outside Rust (the pytest
//! example in `examples/pytest-guest`): boot QEMU with `-kernel`, `-initrd` and `-append`, and the
//! guest prints `ready` on its serial console when its shell is there.

use guest_tests::GuestImage;

fn main() {
    let image = GuestImage::get();
    let doc = serde_json::json!({
        "kernel": image.kernel,
        "initramfs": image.initramfs,
        "append": guest_tests::KERNEL_APPEND,
        "ready": guest_tests::READY_MARKER,
    });
    println!("{doc}");
}
