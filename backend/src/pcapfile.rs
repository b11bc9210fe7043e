//! Reading the frames of a capture file for `inject`: classic pcap (microsecond or nanosecond,
//! either byte order) and pcapng (Section Header, Interface Description, Enhanced and Simple
//! Packet blocks; other blocks are skipped). Only Ethernet captures (link type 1) are taken.
//!
//! Bounds: at most [`MAX_FRAMES`] frames, each at most the `max_frame` bytes the caller gives (the
//! device's largest frame); anything larger or malformed is an error that says where, never a
//! panic.

/// The most frames one inject request carries.
pub const MAX_FRAMES: usize = 4096;

const LINKTYPE_ETHERNET: u32 = 1;

/// The frames of a pcap or pcapng file, in file order.
pub fn read_frames(data: &[u8], max_frame: usize) -> Result<Vec<Vec<u8>>, String> {
    match data.get(..4) {
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => read_pcapng(data, max_frame),
        Some(m) if pcap_order(m).is_some() => read_pcap(data, max_frame),
        _ => Err("not a pcap or pcapng file (unknown magic number)".into()),
    }
}

/// Reads integers in the byte order a file declared.
#[derive(Debug, Clone, Copy)]
struct Order {
    big: bool,
}

impl Order {
    fn u16(self, b: &[u8], at: usize) -> Option<u16> {
        let v: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        })
    }

    fn u32(self, b: &[u8], at: usize) -> Option<u32> {
        let v: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        })
    }
}

/// The byte order of a classic pcap file from its magic number (microsecond or nanosecond).
fn pcap_order(magic: &[u8]) -> Option<Order> {
    match magic {
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => Some(Order { big: true }),
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => Some(Order { big: false }),
        _ => None,
    }
}

fn push_frame(
    frames: &mut Vec<Vec<u8>>,
    frame: &[u8],
    at: usize,
    max_frame: usize,
) -> Result<(), String> {
    if frame.is_empty() || frame.len() > max_frame {
        return Err(format!(
            "the frame at byte {at} is {} bytes (1 to {max_frame} can be injected)",
            frame.len()
        ));
    }
    if frames.len() == MAX_FRAMES {
        return Err(format!("more than {MAX_FRAMES} frames"));
    }
    frames.push(frame.to_vec());
    Ok(())
}

fn read_pcap(data: &[u8], max_frame: usize) -> Result<Vec<Vec<u8>>, String> {
    let o = pcap_order(&data[..4]).ok_or("bad pcap magic")?;
    let linktype = o.u32(data, 20).ok_or("pcap header truncated")? & 0x0fff_ffff;
    if linktype != LINKTYPE_ETHERNET {
        return Err(format!(
            "link type {linktype}: only Ethernet (1) can be injected"
        ));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let (Some(caplen), Some(_)) = (o.u32(data, at + 8), o.u32(data, at + 12)) else {
            return Err(format!("record header at byte {at} truncated"));
        };
        let start = at + 16;
        let end = start
            .checked_add(caplen as usize)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("record at byte {at} runs past the end of the file"))?;
        push_frame(&mut frames, &data[start..end], at, max_frame)?;
        at = end;
    }
    Ok(frames)
}

fn read_pcapng(data: &[u8], max_frame: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut frames = Vec::new();
    // Per section: the byte order and the link type of each interface.
    let mut order = Order { big: false };
    let mut interfaces: Vec<u32> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let block_type = data
            .get(at..at + 4)
            .ok_or_else(|| format!("block at byte {at} truncated"))?;
        if block_type == [0x0a, 0x0d, 0x0d, 0x0a] {
            order = match data.get(at + 8..at + 12) {
                Some([0x1a, 0x2b, 0x3c, 0x4d]) => Order { big: true },
                Some([0x4d, 0x3c, 0x2b, 0x1a]) => Order { big: false },
                _ => return Err(format!("section header at byte {at}: bad byte-order magic")),
            };
            interfaces.clear();
        }
        let kind = order.u32(data, at).ok_or("truncated")?;
        let len = order
            .u32(data, at + 4)
            .ok_or_else(|| format!("block at byte {at} truncated"))? as usize;
        if len < 12 || len % 4 != 0 || at + len > data.len() {
            return Err(format!("block at byte {at} has a bad length {len}"));
        }
        let body = &data[at + 8..at + len - 4];
        match kind {
            // Interface Description: link type, reserved, snap length.
            1 => interfaces.push(u32::from(order.u16(body, 0).ok_or("short IDB")?)),
            // Enhanced Packet: interface, timestamp (2), captured length, original length.
            6 => {
                let iface = order.u32(body, 0).ok_or("short EPB")? as usize;
                let caplen = order.u32(body, 12).ok_or("short EPB")? as usize;
                check_ethernet(&interfaces, iface, at)?;
                let frame = body
                    .get(20..20 + caplen)
                    .ok_or_else(|| format!("packet block at byte {at} truncated"))?;
                push_frame(&mut frames, frame, at, max_frame)?;
            }
            // Simple Packet: original length, then the packet (as much as the block holds).
            3 => {
                check_ethernet(&interfaces, 0, at)?;
                let orig = order.u32(body, 0).ok_or("short SPB")? as usize;
                let frame = &body[4..];
                push_frame(&mut frames, &frame[..orig.min(frame.len())], at, max_frame)?;
            }
            _ => {}
        }
        at += len;
    }
    Ok(frames)
}

fn check_ethernet(interfaces: &[u32], iface: usize, at: usize) -> Result<(), String> {
    match interfaces.get(iface) {
        Some(&LINKTYPE_ETHERNET) => Ok(()),
        Some(t) => Err(format!(
            "packet at byte {at}: link type {t}, only Ethernet (1) can be injected"
        )),
        None => Err(format!(
            "packet at byte {at} names interface {iface}, which is not described"
        )),
    }
}

/// A frame given as hex text (white space and `:` between bytes allowed), 1 to `max_frame` bytes.
pub fn parse_hex(text: &str, max_frame: usize) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if digits.len() % 2 != 0 {
        return Err("hex frame: an odd number of digits".into());
    }
    let frame = digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("hex frame: {:?} is not a byte", String::from_utf8_lossy(p)))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    if frame.is_empty() || frame.len() > max_frame {
        return Err(format!(
            "hex frame: {} bytes (1 to {max_frame} can be injected)",
            frame.len()
        ));
    }
    Ok(frame)
}

/// The frames as hex text (what the API takes).
pub fn to_hex(frame: &[u8]) -> String {
    frame.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 65549;

    fn read_frames_max(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        read_frames(data, MAX)
    }

    fn parse_hex_max(text: &str) -> Result<Vec<u8>, String> {
        parse_hex(text, MAX)
    }

    fn pcap(big: bool, nano: bool, linktype: u32, frames: &[&[u8]]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend(w32(if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
        f.extend(w16(2));
        f.extend(w16(4));
        f.extend(w32(0));
        f.extend(w32(0));
        f.extend(w32(65535));
        f.extend(w32(linktype));
        for fr in frames {
            f.extend(w32(1));
            f.extend(w32(2));
            f.extend(w32(fr.len() as u32));
            f.extend(w32(fr.len() as u32));
            f.extend_from_slice(fr);
        }
        f
    }

    #[test]
    fn classic_pcap_in_both_byte_orders_and_resolutions() {
        let frames: [&[u8]; 2] = [&[1; 60], &[2; 70]];
        for big in [false, true] {
            for nano in [false, true] {
                let got = read_frames_max(&pcap(big, nano, 1, &frames)).unwrap();
                assert_eq!(got, vec![vec![1u8; 60], vec![2u8; 70]]);
            }
        }
        let e = read_frames_max(&pcap(false, false, 113, &frames)).unwrap_err();
        assert!(e.contains("link type 113"), "{e}");
        let mut cut = pcap(false, false, 1, &frames);
        cut.truncate(cut.len() - 3);
        assert!(read_frames_max(&cut).unwrap_err().contains("past the end"));
        assert!(read_frames_max(b"nonsense").is_err());
        assert!(read_frames_max(&[]).is_err());
    }

    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        body.resize(body.len().div_ceil(4) * 4, 0);
        let len = (12 + body.len()) as u32;
        let mut b = kind.to_le_bytes().to_vec();
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.extend(len.to_le_bytes());
        b
    }

    #[test]
    fn pcapng_enhanced_and_simple_packets() {
        let mut f = block(
            0x0a0d_0d0a,
            &[
                0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        );
        f.extend(block(1, &[1, 0, 0, 0, 0, 0, 0, 0]));
        let mut epb = vec![0u8; 12];
        epb.extend(61u32.to_le_bytes());
        epb.extend(61u32.to_le_bytes());
        epb.extend([7u8; 61]);
        f.extend(block(6, &epb));
        f.extend(block(5, &[0; 8])); // statistics: skipped
        let mut spb = 20u32.to_le_bytes().to_vec();
        spb.extend([9u8; 20]);
        f.extend(block(3, &spb));
        assert_eq!(
            read_frames_max(&f).unwrap(),
            vec![vec![7u8; 61], vec![9u8; 20]]
        );
        // A packet naming an interface that was never described.
        let mut bad = epb.clone();
        bad[0] = 3;
        let mut g = f[..f.len() - block(3, &spb).len()].to_vec();
        g.extend(block(6, &bad));
        assert!(read_frames_max(&g).unwrap_err().contains("interface 3"));
        // A block whose length runs past the file.
        let mut h = f.clone();
        h.truncate(h.len() - 2);
        assert!(read_frames_max(&h).is_err());
    }

    #[test]
    fn capture_files_written_by_virtgate_read_back() {
        // The capture writer's own pcapng (see crate::capture) is the most common input.
        let dir = std::env::temp_dir().join(format!("vg-pcapfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.pcapng");
        let mut c = crate::capture::Capture::start(&path).unwrap();
        assert!(c.record(crate::capture::Direction::Inbound, &[3u8; 64], None));
        assert!(c.record(crate::capture::Direction::Outbound, &[4u8; 66], None));
        drop(c);
        let got = read_frames_max(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(got, vec![vec![3u8; 64], vec![4u8; 66]]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn hex_frames() {
        assert_eq!(
            parse_hex_max("52:54 00\n12").unwrap(),
            vec![0x52, 0x54, 0, 0x12]
        );
        assert!(parse_hex_max("525").is_err());
        assert!(parse_hex_max("zz").is_err());
        assert!(parse_hex_max("").is_err());
        assert!(parse_hex("abcdef", 2).unwrap_err().contains("1 to 2"));
        assert_eq!(to_hex(&[0xab, 1]), "ab01");
    }
}
