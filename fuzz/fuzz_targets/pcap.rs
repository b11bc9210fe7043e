//! The capture readers behind `virtgate ctl inject`: pcap, pcapng and hex text. Nothing longer
//! than the limit given comes out, and no frame comes out of nothing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    const MAX: usize = 65549;
    if let Ok(frames) = virtgate::pcapfile::read_frames(data, MAX) {
        assert!(frames.iter().all(|f| f.len() <= MAX));
        assert!(frames.iter().map(Vec::len).sum::<usize>() <= data.len());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(frame) = virtgate::pcapfile::parse_hex(text, MAX) {
            assert!(frame.len() <= MAX && frame.len() * 2 <= text.len());
        }
    }
});
