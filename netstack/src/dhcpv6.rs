//! The DHCPv6 server (RFC 8415) for the one guest link: stateless configuration (DNS servers and
//! search list for Information-Request, §18.3.6) always, addresses from a pool (IA_NA) when the
//! mode is stateful.
//!
//! Bindings are keyed by the client's DUID and IAID and keep their address across renewals, so a
//! guest that asks again gets the same address (§18.3.4 "the server SHOULD assign the same").
//! A client that asks for rapid commit gets its Reply straight away (§18.3.1).

use crate::config::{Dhcpv6Mode, Ipv6Config};
use crate::time::{Duration, Instant};
use crate::wire::dhcpv6::{msg, opt, status, Dhcpv6Repr, IaAddress, IaNa};
use crate::wire::Ipv6Address;

/// Bindings held at most (the pool bounds it too).
const MAX_BINDINGS: usize = 1024;
/// Address lifetimes handed out: preferred and valid (RFC 8415 §21.6), and the renewal times
/// T1/T2 at 0.5 and 0.8 of preferred (§21.4).
const PREFERRED: u32 = 3600;
const VALID: u32 = 7200;

#[derive(Debug, Clone)]
struct Binding {
    duid: Vec<u8>,
    iaid: u32,
    addr: Ipv6Address,
    expires_at: Instant,
}

/// A binding, as shown to users and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcpv6Lease {
    pub addr: Ipv6Address,
    pub iaid: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Dhcpv6Server {
    bindings: Vec<Binding>,
}

/// What to answer: the reply to build (its IA and status), or nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    Ignore,
    Reply {
        msg_type: u8,
        ia: Option<(u32, Result<Ipv6Address, u16>)>,
        status: Option<u16>,
        rapid_commit: bool,
    },
}

impl Dhcpv6Server {
    pub(crate) fn leases(&self) -> impl Iterator<Item = Dhcpv6Lease> + '_ {
        self.bindings.iter().map(|b| Dhcpv6Lease {
            addr: b.addr,
            iaid: b.iaid,
        })
    }

    /// Decides the answer to `m`, a client message whose server identifier (if any) was checked
    /// against ours by the caller (`for_us`).
    pub(crate) fn handle(
        &mut self,
        now: Instant,
        cfg: &Ipv6Config,
        m: &Dhcpv6Repr,
        for_us: bool,
    ) -> Answer {
        self.expire(now);
        let stateful = cfg.dhcpv6 == Dhcpv6Mode::Stateful;
        let Some(duid) = m.client_id else {
            // Every client message but Information-Request carries a Client Identifier (§16).
            return if m.msg_type == msg::INFORMATION_REQUEST && m.server_id.is_none_or(|_| for_us) {
                Answer::Reply {
                    msg_type: msg::REPLY,
                    ia: None,
                    status: None,
                    rapid_commit: false,
                }
            } else {
                Answer::Ignore
            };
        };
        let reply = |ia, status| Answer::Reply {
            msg_type: msg::REPLY,
            ia,
            status,
            rapid_commit: false,
        };
        match m.msg_type {
            msg::INFORMATION_REQUEST => {
                if m.server_id.is_some() && !for_us {
                    return Answer::Ignore;
                }
                reply(None, None)
            }
            msg::SOLICIT => {
                // §16.2: a Solicit carries no Server Identifier.
                if m.server_id.is_some() || !stateful {
                    return Answer::Ignore;
                }
                let Some(ia) = m.ia_na else {
                    return Answer::Ignore;
                };
                let rapid = m.rapid_commit;
                let got = if rapid {
                    self.bind(now, cfg, duid, ia.iaid)
                } else {
                    self.pick(cfg, duid, ia.iaid)
                };
                Answer::Reply {
                    msg_type: if rapid { msg::REPLY } else { msg::ADVERTISE },
                    ia: Some((ia.iaid, got.ok_or(status::NO_ADDRS_AVAIL))),
                    status: None,
                    rapid_commit: rapid,
                }
            }
            msg::REQUEST | msg::RENEW => {
                if !for_us || !stateful {
                    return Answer::Ignore;
                }
                let Some(ia) = m.ia_na else {
                    return reply(None, None);
                };
                let got = self.bind(now, cfg, duid, ia.iaid);
                reply(Some((ia.iaid, got.ok_or(status::NO_ADDRS_AVAIL))), None)
            }
            msg::REBIND | msg::CONFIRM => {
                // No Server Identifier (§16.5, §16.7): any server that knows the link answers.
                if m.server_id.is_some() || !stateful {
                    return Answer::Ignore;
                }
                let Some(ia) = m.ia_na else {
                    return Answer::Ignore;
                };
                let on_link = ia.addr.is_none_or(|a| cfg.prefix.contains(a.addr));
                if m.msg_type == msg::CONFIRM {
                    // §18.3.3: only whether the addresses are on this link.
                    let code = if on_link {
                        status::SUCCESS
                    } else {
                        status::NOT_ON_LINK
                    };
                    return reply(None, Some(code));
                }
                let got = self.bind(now, cfg, duid, ia.iaid);
                reply(Some((ia.iaid, got.ok_or(status::NO_ADDRS_AVAIL))), None)
            }
            msg::RELEASE | msg::DECLINE => {
                if !for_us {
                    return Answer::Ignore;
                }
                // §18.3.7/§18.3.8: forget the binding (a declined address is in use by someone
                // else; with a pool this large, skipping it is not worth the bookkeeping).
                let before = self.bindings.len();
                if let Some(ia) = m.ia_na {
                    self.bindings
                        .retain(|b| !(b.duid == duid && b.iaid == ia.iaid));
                }
                let code = if self.bindings.len() < before {
                    status::SUCCESS
                } else {
                    status::NO_BINDING
                };
                reply(None, Some(code))
            }
            _ => Answer::Ignore,
        }
    }

    /// The address this client's IA has or would get, without binding it.
    fn pick(&self, cfg: &Ipv6Config, duid: &[u8], iaid: u32) -> Option<Ipv6Address> {
        if let Some(b) = self
            .bindings
            .iter()
            .find(|b| b.duid == duid && b.iaid == iaid)
        {
            return Some(b.addr);
        }
        let start = u128::from_be_bytes(cfg.dhcpv6_start.0);
        (0..u128::from(cfg.dhcpv6_pool_size))
            .map(|i| Ipv6Address((start + i).to_be_bytes()))
            .find(|a| self.bindings.iter().all(|b| b.addr != *a))
    }

    fn bind(
        &mut self,
        now: Instant,
        cfg: &Ipv6Config,
        duid: &[u8],
        iaid: u32,
    ) -> Option<Ipv6Address> {
        let addr = self.pick(cfg, duid, iaid)?;
        let expires_at = now + Duration::from_secs(u64::from(VALID));
        if let Some(b) = self
            .bindings
            .iter_mut()
            .find(|b| b.duid == duid && b.iaid == iaid)
        {
            b.expires_at = expires_at;
            return Some(addr);
        }
        if self.bindings.len() >= MAX_BINDINGS {
            return None;
        }
        self.bindings.push(Binding {
            duid: duid.to_vec(),
            iaid,
            addr,
            expires_at,
        });
        Some(addr)
    }

    fn expire(&mut self, now: Instant) {
        self.bindings.retain(|b| b.expires_at > now);
    }
}

/// The IA_NA option of an answer: the address with its lifetimes, or the status that explains
/// its absence.
pub(crate) fn ia_option<'a>(iaid: u32, got: Result<Ipv6Address, u16>) -> IaNa<'a> {
    match got {
        Ok(addr) => IaNa {
            iaid,
            t1: PREFERRED / 2,
            t2: PREFERRED * 4 / 5,
            addr: Some(IaAddress {
                addr,
                preferred: PREFERRED,
                valid: VALID,
            }),
            status: None,
        },
        Err(code) => IaNa {
            iaid,
            t1: 0,
            t2: 0,
            addr: None,
            status: Some((code, "no addresses available")),
        },
    }
}

/// Whether the client wants DNS configuration (it asked in its Option Request; RFC 8415 §18.3
/// lets a server send what was asked).
pub(crate) fn wants(m: &Dhcpv6Repr, code: u16) -> bool {
    m.requests(code) || (code == opt::DNS_SERVERS && m.oro.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: Dhcpv6Mode) -> Ipv6Config {
        Ipv6Config {
            dhcpv6: mode,
            dhcpv6_pool_size: 2,
            ..Ipv6Config::default()
        }
    }

    fn client(
        msg_type: u8,
        duid: &'static [u8],
        server: Option<&'static [u8]>,
    ) -> Dhcpv6Repr<'static> {
        Dhcpv6Repr {
            msg_type,
            transaction_id: 1,
            client_id: Some(duid),
            server_id: server,
            ia_na: Some(IaNa {
                iaid: 1,
                t1: 0,
                t2: 0,
                addr: None,
                status: None,
            }),
            ..Dhcpv6Repr::default()
        }
    }

    fn address(a: &Answer) -> Option<Ipv6Address> {
        match a {
            Answer::Reply {
                ia: Some((_, Ok(addr))),
                ..
            } => Some(*addr),
            _ => None,
        }
    }

    #[test]
    fn stateful_solicit_request_renew_release() {
        let c = cfg(Dhcpv6Mode::Stateful);
        let mut s = Dhcpv6Server::default();
        let t = Instant::from_secs(1);
        let adv = s.handle(t, &c, &client(msg::SOLICIT, b"A", None), false);
        assert!(matches!(
            adv,
            Answer::Reply {
                msg_type: msg::ADVERTISE,
                ..
            }
        ));
        let offered = address(&adv).unwrap();
        assert_eq!(offered, c.dhcpv6_start);
        assert_eq!(s.leases().count(), 0, "an Advertise binds nothing");
        let reply = s.handle(t, &c, &client(msg::REQUEST, b"A", Some(b"us")), true);
        assert_eq!(address(&reply), Some(offered));
        // Another client gets the next address; a third finds the pool empty.
        let b = s.handle(t, &c, &client(msg::REQUEST, b"B", Some(b"us")), true);
        assert_ne!(address(&b), Some(offered));
        let full = s.handle(t, &c, &client(msg::REQUEST, b"C", Some(b"us")), true);
        assert!(matches!(
            full,
            Answer::Reply {
                ia: Some((1, Err(status::NO_ADDRS_AVAIL))),
                ..
            }
        ));
        // Renewal keeps the address; a request for another server is not ours.
        let renew = s.handle(t, &c, &client(msg::RENEW, b"A", Some(b"us")), true);
        assert_eq!(address(&renew), Some(offered));
        assert_eq!(
            s.handle(t, &c, &client(msg::REQUEST, b"A", Some(b"them")), false),
            Answer::Ignore
        );
        let rel = s.handle(t, &c, &client(msg::RELEASE, b"A", Some(b"us")), true);
        assert!(matches!(
            rel,
            Answer::Reply {
                status: Some(status::SUCCESS),
                ..
            }
        ));
        assert_eq!(s.leases().count(), 1);
        // Bindings expire.
        s.expire(t + Duration::from_secs(u64::from(VALID)));
        assert_eq!(s.leases().count(), 0);
    }

    #[test]
    fn rapid_commit_binds_at_once_and_stateless_mode_assigns_nothing() {
        let c = cfg(Dhcpv6Mode::Stateful);
        let mut s = Dhcpv6Server::default();
        let mut m = client(msg::SOLICIT, b"A", None);
        m.rapid_commit = true;
        let r = s.handle(Instant::ZERO, &c, &m, false);
        assert!(matches!(
            r,
            Answer::Reply {
                msg_type: msg::REPLY,
                rapid_commit: true,
                ..
            }
        ));
        assert_eq!(s.leases().count(), 1);

        let c = cfg(Dhcpv6Mode::Stateless);
        let mut s = Dhcpv6Server::default();
        assert_eq!(
            s.handle(Instant::ZERO, &c, &client(msg::SOLICIT, b"A", None), false),
            Answer::Ignore
        );
        let info = Dhcpv6Repr {
            msg_type: msg::INFORMATION_REQUEST,
            ..Dhcpv6Repr::default()
        };
        assert!(matches!(
            s.handle(Instant::ZERO, &c, &info, false),
            Answer::Reply {
                msg_type: msg::REPLY,
                ia: None,
                ..
            }
        ));
    }

    #[test]
    fn confirm_says_whether_the_address_is_on_link() {
        let c = cfg(Dhcpv6Mode::Stateful);
        let mut s = Dhcpv6Server::default();
        let mut m = client(msg::CONFIRM, b"A", None);
        m.ia_na.as_mut().unwrap().addr = Some(IaAddress {
            addr: "2001:db8::1".parse().unwrap(),
            preferred: 0,
            valid: 0,
        });
        assert!(matches!(
            s.handle(Instant::ZERO, &c, &m, false),
            Answer::Reply {
                status: Some(status::NOT_ON_LINK),
                ..
            }
        ));
    }
}
