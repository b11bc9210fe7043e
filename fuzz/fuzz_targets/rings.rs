//! Descriptor rings in guest memory, as a hostile guest may lay them out: the device's TX chain
//! walk and RX frame writing (see `virtgate::device::fuzz_rings` for the invariants).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtgate::device::fuzz_rings(data));
