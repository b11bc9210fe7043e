//! Writes the seed corpus of the fuzz targets (fuzz/corpus/TARGET): the protocol samples of
//! `netstack::testing::guest_frames` and, if a capture file is given, the frames a real guest sent
//! in it (for example one written with `virtgate ctl capture start` during a guest test).
//!
//!     cargo run -p virtgate --example fuzz-seeds -- fuzz/corpus [CAPTURE.pcapng]

use std::path::Path;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus directory");
    std::fs::write(d.join(name), bytes).expect("seed file");
}

/// A stack-target script: a quiet setup, then each frame behind a zero virtio-net header, then
/// connects completing, host data and time passing.
fn stack_script(frames: &[&[u8]]) -> Vec<u8> {
    let mut s = vec![0u8, 0];
    for f in frames {
        s.push(0);
        s.extend_from_slice(&[0; 10]);
        s.extend_from_slice(&(f.len() as u16).to_le_bytes());
        s.extend_from_slice(f);
    }
    s.extend_from_slice(&[5, 6, 40, 7, 8]);
    s
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "fuzz/corpus".into());
    let dir = Path::new(&dir);
    let samples = netstack::testing::guest_frames();
    let dad = &samples
        .iter()
        .find(|(n, _)| *n == "ndp-dad")
        .expect("a DAD sample")
        .1;
    for (name, frame) in &samples {
        write(dir, "stack", name, &stack_script(&[dad, frame]));
        // The wire target: the frame to the Ethernet parser, its payload to the IP parsers,
        // and the upper layer to the rest (picked by the first byte).
        write(
            dir,
            "wire",
            &format!("{name}-eth"),
            &[&[0u8][..], frame].concat(),
        );
        let ip = &frame[14..];
        let pick = if frame[12..14] == [0x86, 0xdd] {
            3u8
        } else {
            2
        };
        write(
            dir,
            "wire",
            &format!("{name}-ip"),
            &[&[pick][..], ip].concat(),
        );
    }
    if let Some(capture) = args.next() {
        let data = std::fs::read(&capture).expect("the capture file");
        let frames = virtgate::pcapfile::read_frames(&data, 65549).expect("a capture");
        let guest = netstack::testing::GUEST_MAC.0;
        let from_guest: Vec<&[u8]> = frames
            .iter()
            .filter(|f| f.get(6..12) == Some(&guest[..]))
            .map(Vec::as_slice)
            .collect();
        for (i, chunk) in from_guest.chunks(8).enumerate() {
            write(
                dir,
                "stack",
                &format!("guest-session-{i:03}"),
                &stack_script(chunk),
            );
        }
        write(
            dir,
            "pcap",
            "guest-session.pcapng",
            &data[..data.len().min(16 << 10)],
        );
    }
    // The other targets: a well-formed instance each.
    write(
        dir,
        "api",
        "put-coalesce",
        b"PUT /coalesce HTTP/1.1\r\nHost: virtgate\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"rx_usecs\": 50}",
    );
    write(dir, "api", "get-stats", b"GET /stats HTTP/1.1\r\n\r\n");
    let mut relay = Vec::new();
    for (request, payload) in [
        (1u32, &[][..]),
        (18, &[0, 0, 0, 0, 1, 0, 0, 0][..]),
        (2, &[0, 0, 0, 0x40, 0, 0, 0, 0][..]),
        (20, &[0xdc, 5, 0, 0, 0, 0, 0, 0][..]),
        (4, &[][..]),
    ] {
        relay.extend_from_slice(&request.to_le_bytes());
        relay.extend_from_slice(&(1u32 | 8).to_le_bytes());
        relay.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        relay.extend_from_slice(payload);
    }
    write(dir, "relay", "enable-features-mtu-reset", &relay);
    write(
        dir,
        "pcap",
        "hex",
        b"52:54:00:12:34:56 52:55:0a:00:02:02 08 06 00 01",
    );
    let mut rings = vec![8u8, 0b11, 0xdc, 5, 3, 0, 0, 0];
    rings.resize(8 + 0x4000, 0);
    write(dir, "rings", "empty-rings", &rings);
}
