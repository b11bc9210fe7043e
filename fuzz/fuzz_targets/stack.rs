//! Stack ingress: a script of guest frames (raw, or the protocol samples of
//! `netstack::testing::guest_frames` with bytes flipped), each behind a virtio-net header read the
//! way the device reads it, interleaved with host events (connects completing, host data) and the
//! clock moving on. Invariants: no panic; every frame the stack emits is well formed
//! (`check_emitted`, offloads completed first); the tables stay within their documented bounds.
#![no_main]

use netstack::host::{ScriptedHost, ScriptedSocket};
use netstack::offload::GuestOffloads;
use netstack::{Config, Instant, Stack};
use virtgate::virtio_net::{Negotiated, TxHeader};

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Some(head)
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let mut data = input;
    let Some(&[setup, offloads]) = take(&mut data, 2).map(|b| [b[0], b[1]]).as_ref() else {
        return;
    };
    let mtu = [1500u16, 9000, 1280, 576, 68, 65520][usize::from(setup % 6)];
    let mut cfg = Config {
        mtu,
        ..Config::default()
    };
    if mtu < 1280 {
        cfg.ipv6 = None;
    }
    if setup & 0x80 != 0 {
        cfg.tcp_memory = netstack::config::MIN_TCP_MEMORY;
    }
    let Ok(mut s) = Stack::with_host(cfg, ScriptedHost::new()) else {
        return;
    };
    let guest = GuestOffloads {
        partial_checksum: offloads & 1 != 0,
        tso4: offloads & 3 == 3,
        tso6: offloads & 5 == 5,
    };
    s.set_guest_offloads(guest);
    let negotiated = Negotiated {
        csum: offloads & 8 != 0,
        host_tso4: offloads & 16 != 0,
        host_tso6: offloads & 32 != 0,
        host_ecn: offloads & 64 != 0,
        host_uso: offloads & 128 != 0,
        ..Negotiated::default()
    };
    let samples = netstack::testing::guest_frames();
    let gateway_mac = s.config().gateway_mac;
    let mut now = Instant::ZERO;
    let mut frame = Vec::new();
    for _ in 0..64 {
        let Some(op) = take(&mut data, 1).map(|b| b[0]) else {
            break;
        };
        match op % 8 {
            // A frame behind a virtio-net header: raw bytes, or a sample with flipped bytes.
            0..=4 => {
                let Some(hdr) = take(&mut data, 10) else {
                    break;
                };
                frame.clear();
                if op % 8 < 3 {
                    let Some(len) = take(&mut data, 2) else { break };
                    let len = usize::from(u16::from_le_bytes([len[0], len[1]])) % 4096;
                    let n = len.min(data.len());
                    frame.extend_from_slice(take(&mut data, n).unwrap_or_default());
                } else {
                    let Some(pick) = take(&mut data, 3) else {
                        break;
                    };
                    frame.extend_from_slice(&samples[usize::from(pick[0]) % samples.len()].1);
                    let at = usize::from(pick[1]) % frame.len().max(1);
                    if let Some(b) = frame.get_mut(at) {
                        *b ^= pick[2];
                    }
                }
                if let Ok(meta) = TxHeader::parse(hdr).meta(&negotiated, frame.len()) {
                    s.process_frame_meta(now, &frame, meta);
                }
            }
            // The host completes every pending connect (some refuse).
            5 => {
                let pending: Vec<_> = s
                    .host()
                    .sockets
                    .iter()
                    .filter(|(_, k)| matches!(k, ScriptedSocket::Tcp(_)))
                    .map(|(id, _)| *id)
                    .collect();
                for (i, id) in pending.into_iter().enumerate() {
                    let result = if (usize::from(op) + i) % 5 == 0 {
                        Err(std::io::ErrorKind::ConnectionRefused)
                    } else {
                        Ok(())
                    };
                    s.host_mut().tcp_connected.entry(id).or_insert(result);
                    s.host_ready(now, id);
                }
            }
            // Host data (or an end of stream) for every TCP socket.
            6 => {
                let Some(n) = take(&mut data, 1) else { break };
                let ids: Vec<_> = s.host().sockets.keys().copied().collect();
                for id in ids {
                    let chunk = (n[0] != 0).then(|| vec![n[0]; usize::from(n[0]) * 97]);
                    s.host_mut()
                        .tcp_incoming
                        .entry(id)
                        .or_default()
                        .push_back(chunk);
                    s.host_ready(now, id);
                }
            }
            // Time passes: timers fire.
            _ => {
                let Some(n) = take(&mut data, 1) else { break };
                now = now + netstack::Duration::from_millis(u64::from(n[0]) * 250);
                s.poll(now);
            }
        }
        // Everything emitted is well formed.
        for _ in 0..4096 {
            let mut out = None;
            s.dispatch(now, |f, meta| {
                let mut f = f.to_vec();
                if let Some(c) = meta.checksum {
                    c.complete(&mut f);
                }
                out = Some(f);
                true
            });
            let Some(f) = out else { break };
            netstack::testing::check_emitted(&f, gateway_mac);
        }
        let st = s.stats();
        assert!(st.tcp_connections <= netstack::tcp::MAX_CONNECTIONS as u64);
        assert!(
            st.flows_active
                <= (netstack::flows::MAX_FLOWS + netstack::flows::MAX_FORWARD_FLOWS) as u64
        );
        assert!(st.multicast_groups <= 2 * netstack::multicast::MAX_GROUPS as u64);
    }
});
