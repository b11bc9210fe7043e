//! Path-MTU emulation: a narrower link somewhere behind the gateway, per destination prefix
//! (`--path-mtu PREFIX=MTU`, and at run time through the control API).
//!
//! A guest packet leaving through the gateway towards such a prefix that is larger than the
//! path's MTU is treated as a router in front of that link treats it: IPv4 with DF set gets
//! Destination Unreachable code 4 with the next-hop MTU (RFC 1191 §4) and is dropped; IPv4
//! without DF would be fragmented on that link (RFC 791), which changes nothing for a gateway that
//! terminates the packet, so it passes and is counted; IPv6 gets Packet Too Big (RFC 8201,
//! RFC 4443 §3.2) and is dropped. The guest's PMTU cache and TCP MSS follow, as they would on a
//! real path. A large segment (TSO/USO) is measured by the packets it stands for, not by its
//! own length.
//!
//! Bound: at most [`MAX_PATH_MTUS`] entries; the longest matching prefix applies.

use core::fmt;
use core::str::FromStr;

use crate::wire::{IpAddress, IpPrefix};

/// The most path-MTU entries.
pub const MAX_PATH_MTUS: usize = 64;

/// One emulated path: destinations in `prefix` are behind a link of `mtu` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathMtu {
    pub prefix: IpPrefix,
    pub mtu: u16,
}

impl fmt::Display for PathMtu {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}={}", self.prefix, self.mtu)
    }
}

impl FromStr for PathMtu {
    type Err = String;

    /// `PREFIX=MTU`: `198.51.100.0/24=1400`, `2001:db8::/32=1280`, `10.0.2.2=576` (a host). The
    /// MTU is 68 to 65535 for IPv4 (RFC 791), 1280 to 65535 for IPv6 (RFC 8200 §5).
    fn from_str(s: &str) -> Result<Self, String> {
        let (prefix, mtu) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected PREFIX=MTU"))?;
        let mtu: u16 = mtu
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the MTU is a number up to 65535"))?;
        let prefix: IpPrefix = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let least = match prefix {
            IpPrefix::V4(_) => 68,
            IpPrefix::V6(_) => 1280,
        };
        if mtu < least {
            return Err(format!(
                "{s:?}: an IPv{} MTU is at least {least}",
                if least == 68 { 4 } else { 6 }
            ));
        }
        Ok(PathMtu { prefix, mtu })
    }
}

/// Checks a table: its size bound.
pub fn validate(table: &[PathMtu]) -> Result<(), String> {
    if table.len() > MAX_PATH_MTUS {
        return Err(format!("at most {MAX_PATH_MTUS} path MTUs"));
    }
    Ok(())
}

/// The MTU of the path to `dst`: the entry with the longest matching prefix.
pub fn lookup(table: &[PathMtu], dst: IpAddress) -> Option<u16> {
    table
        .iter()
        .filter(|p| p.prefix.contains(dst))
        .max_by_key(|p| p.prefix.prefix_len())
        .map(|p| p.mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_are_checked() {
        let p: PathMtu = "198.51.100.0/24=1400".parse().unwrap();
        assert_eq!(p.to_string(), "198.51.100.0/24=1400");
        let h: PathMtu = "10.0.2.2=576".parse().unwrap();
        assert_eq!(h.to_string(), "10.0.2.2/32=576");
        let v6: PathMtu = "2001:db8::/32=1280".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32=1280");
        for bad in [
            "198.51.100.0/24",
            "198.51.100.0/33=1400",
            "198.51.100.0/24=67",
            "2001:db8::/32=1279",
            "nonsense=1400",
            "10.0.0.0/8=70000",
        ] {
            assert!(bad.parse::<PathMtu>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let t: Vec<PathMtu> = [
            "198.51.100.0/24=1400",
            "198.51.100.128/25=1300",
            "::/0=1400",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let v4 = |s: &str| IpAddress::V4(s.parse::<std::net::Ipv4Addr>().unwrap().into());
        assert_eq!(lookup(&t, v4("198.51.100.1")), Some(1400));
        assert_eq!(lookup(&t, v4("198.51.100.200")), Some(1300));
        assert_eq!(lookup(&t, v4("192.0.2.1")), None);
        let v6 = IpAddress::V6("2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().into());
        assert_eq!(lookup(&t, v6), Some(1400));
        assert!(validate(&vec![t[0]; MAX_PATH_MTUS + 1]).is_err());
    }
}
