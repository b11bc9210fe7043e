//! The foundation suite (tests/foundation.rs) on Debian's Linux 6.12: the guest-kernel matrix
//! (docs/testing.md, "Guest kernels"). This binary's name selects the kernel
//! (`guest_tests::GuestKernel::current`), so every test name here says which kernel ran.
//! `scripts/setup.sh --all-kernels` fetches it.

#[path = "foundation.rs"]
mod suite;
