//! Frames a scripted guest sends (the guest of [`super::guest_tcp`]: its MAC and address).

use netstack::wire::{
    ethernet, ipv4, EtherType, EthernetRepr, Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Repr,
};

use super::guest_tcp::{GUEST_IP, GUEST_MAC};

/// An ICMP echo request (identifier 0x4242) from the guest to `dst`, through the gateway: to the
/// DNS address the stack answers it itself; to the gateway's it goes through a host ICMP socket.
pub fn echo_request(dst: Ipv4Address, seq: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x4242,
        seq_no: seq,
        data,
    };
    let ip = Ipv4Repr {
        src: GUEST_IP,
        dst,
        protocol: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        ttl: 64,
    };
    let mut f = vec![0u8; ethernet::HEADER_LEN + ipv4::HEADER_LEN + icmp.buffer_len()];
    EthernetRepr {
        src: GUEST_MAC,
        dst: netstack::Config::default().gateway_mac,
        ethertype: EtherType::Ipv4,
    }
    .emit(&mut f);
    ip.emit(&mut f[ethernet::HEADER_LEN..], seq);
    icmp.emit(&mut f[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]);
    f
}
