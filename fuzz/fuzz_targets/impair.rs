//! The link impairments: the rule grammar on arbitrary text (its canonical form is stable), and
//! the policy's verdicts on arbitrary frames.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtgate::impair::fuzz(data));
