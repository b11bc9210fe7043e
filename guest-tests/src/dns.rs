//! A DNS server on the host's loopback for the guest tests: virtgate's upstream resolver
//! (`--dns-upstream`), knowing one name, so that a test can tell what the guest resolved through
//! the gateway from what it could have found elsewhere.

use std::net::UdpSocket;

/// A DNS server on the host loopback that knows one name, for as long as the test runs (its
/// thread ends with the process); returns its port.
pub fn serve(name: &'static str, addr: [u8; 4]) -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..n], name, addr) {
                let _ = s.send_to(&reply, from);
            }
        }
    });
    port
}

/// RFC 1035 §4.1: answers an A query for `name` with `addr`; other names get NXDOMAIN, other types
/// an empty answer.
pub fn answer(q: &[u8], name: &str, addr: [u8; 4]) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    let mut at = 12;
    let mut labels = Vec::new();
    while at < q.len() && q[at] != 0 {
        let len = q[at] as usize;
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + len)?).to_string());
        at += 1 + len;
    }
    let qend = at + 5; // zero label, type, class
    let qtype = u16::from_be_bytes([*q.get(at + 1)?, *q.get(at + 2)?]);
    let known = labels.join(".").eq_ignore_ascii_case(name);
    let answer = known && qtype == 1;
    let mut r = q[..2].to_vec(); // id
    r.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }]); // QR RD RA, NOERROR/NXDOMAIN
    r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..qend)?);
    if answer {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&addr);
    }
    Some(r)
}
