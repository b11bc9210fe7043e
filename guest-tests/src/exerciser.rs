//! What the kernel-path tests read in the guest: every network counter the kernel keeps, the call
//! chains of a kernel function (ftrace's function tracer with stack traces, instead of a kernel
//! patched with `dump_stack()`), and the reasons of dropped packets (`skb:kfree_skb`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::Vm;

/// The guest's counters by name: `nstat` names for `/proc/net/snmp`, `/proc/net/netstat` and
/// `/proc/net/snmp6` (`IpInReceives`, `IpExtInCsumErrors`, `TcpExtTCPFastRetrans`,
/// `Ip6InHdrErrors`), `eth0.NAME` for the interface statistics in sysfs, and `softnet.processed`,
/// `softnet.dropped`, `softnet.time_squeeze` (summed over CPUs) from `/proc/net/softnet_stat`.
#[derive(Debug, Clone, Default)]
pub struct Counters(pub HashMap<String, i64>);

impl Counters {
    /// The counter `name`; a name the guest does not have is a test bug, so it panics.
    pub fn get(&self, name: &str) -> i64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("the guest has no counter {name}"))
    }

    /// How much `name` grew since `before`.
    pub fn delta(&self, before: &Counters, name: &str) -> i64 {
        self.get(name) - before.get(name)
    }

    fn parse(text: &str) -> Counters {
        let mut out = HashMap::new();
        let mut sections = text.split("\n==\n");
        // snmp and netstat: "Proto: names" / "Proto: values" line pairs; nstat joins the two.
        for (proto, name, v) in crate::snmp_values(sections.next().unwrap_or("")) {
            out.insert(format!("{proto}{name}"), v);
        }
        // snmp6: "Name value".
        for l in sections.next().unwrap_or("").lines() {
            if let Some((n, v)) = l.split_once(char::is_whitespace) {
                if let Ok(v) = v.trim().parse() {
                    out.insert(n.to_string(), v);
                }
            }
        }
        // sysfs statistics: "name:value" (grep's file prefix).
        for l in sections.next().unwrap_or("").lines() {
            if let Some((n, v)) = l.split_once(':') {
                if let Ok(v) = v.trim().parse() {
                    out.insert(format!("eth0.{n}"), v);
                }
            }
        }
        // softnet_stat: hex columns per CPU.
        let mut softnet = [0i64; 3];
        for l in sections.next().unwrap_or("").lines() {
            for (i, col) in l.split_whitespace().take(3).enumerate() {
                softnet[i] += i64::from_str_radix(col, 16).unwrap_or(0);
            }
        }
        for (i, n) in ["processed", "dropped", "time_squeeze"].iter().enumerate() {
            out.insert(format!("softnet.{n}"), softnet[i]);
        }
        Counters(out)
    }
}

/// One call chain as ftrace printed it: the traced function first, then its callers.
pub type CallChain = Vec<String>;

impl Vm {
    /// Prepares a booted guest for crafted traffic: ICMP error rate limits off for both families
    /// (probes provoke many errors), fragment reassembly timeouts of `frag_timeout_s` (so that
    /// expiry scenarios finish quickly), and tracefs mounted.
    pub fn prepare_for_probes(&mut self, frag_timeout_s: u32) {
        self.sh(&format!(
            "sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0 \
             net.ipv4.icmp_msgs_burst=10000 net.ipv4.icmp_msgs_per_sec=10000 \
             net.ipv4.ipfrag_time={frag_timeout_s} net.ipv6.ip6frag_time={frag_timeout_s}"
        ));
        self.sh("grep -q ' /sys/kernel/tracing ' /proc/mounts || mount -t tracefs nodev /sys/kernel/tracing");
    }

    /// Every network counter of the guest (see [`Counters`]).
    pub fn counters(&mut self) -> Counters {
        Counters::parse(&self.sh(
            "cat /proc/net/snmp /proc/net/netstat; echo ==; cat /proc/net/snmp6; echo ==; \
             (cd /sys/class/net/eth0/statistics && grep . *); echo ==; cat /proc/net/softnet_stat",
        ))
    }

    /// Polls the counters until each of `want` has grown by at least its amount since `before`
    /// (bounded by `timeout`); returns the last reading, so the caller can assert exact values
    /// and see what did not move.
    pub fn wait_counters(
        &mut self,
        before: &Counters,
        want: &[(&str, i64)],
        timeout: Duration,
    ) -> Counters {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.counters();
            if want.iter().all(|(k, n)| now.delta(before, k) >= *n) {
                return now;
            }
            if Instant::now() >= deadline {
                let got: Vec<String> = want
                    .iter()
                    .map(|(k, n)| format!("{k} +{} (wanted +{n})", now.delta(before, k)))
                    .collect();
                panic!("guest counters did not move: {}", got.join(", "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts ftrace's function tracer on `function` (from `available_filter_functions`) with a
    /// stack trace per call: the view a `dump_stack()` patch gives, without patching.
    pub fn trace_calls_start(&mut self, function: &str) {
        self.sh(&format!(
            "cd /sys/kernel/tracing && echo 0 > tracing_on && echo > trace && \
             echo {function} > set_ftrace_filter && echo function > current_tracer && \
             echo 1 > options/func_stack_trace && echo 1 > tracing_on; cd /"
        ));
    }

    /// Stops the tracer and returns the call chains it recorded (at most `limit`).
    pub fn trace_calls_stop(&mut self, limit: usize) -> Vec<CallChain> {
        let text = self.sh(
            "cd /sys/kernel/tracing && echo 0 > tracing_on && cat trace && \
             echo 0 > options/func_stack_trace && echo nop > current_tracer && \
             echo > set_ftrace_filter; cd /",
        );
        parse_stack_traces(&text, limit)
    }

    /// Starts recording dropped packets with their reason (the `skb:kfree_skb` tracepoint).
    pub fn trace_drops_start(&mut self) {
        self.sh(
            "cd /sys/kernel/tracing && echo 0 > tracing_on && echo > trace && \
             echo 1 > events/skb/kfree_skb/enable && echo 1 > tracing_on; cd /",
        );
    }

    /// Stops recording drops; returns how many packets were dropped for each reason
    /// (`OTHERHOST`, `UNHANDLED_PROTO`, `IP_CSUM`...).
    pub fn trace_drops_stop(&mut self) -> HashMap<String, usize> {
        let text = self.sh(
            "cd /sys/kernel/tracing && echo 0 > tracing_on && cat trace && \
             echo 0 > events/skb/kfree_skb/enable; cd /",
        );
        let mut out = HashMap::new();
        for l in text.lines().filter(|l| l.contains("kfree_skb:")) {
            if let Some(r) = l.split("reason: ").nth(1) {
                *out.entry(r.trim().to_string()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// The `<stack trace>` blocks of an ftrace buffer: lines ` => function+0x..`, innermost first.
fn parse_stack_traces(text: &str, limit: usize) -> Vec<CallChain> {
    let mut chains = Vec::new();
    let mut current: Option<CallChain> = None;
    for l in text.lines() {
        let t = l.trim_start();
        if let Some(f) = t.strip_prefix("=> ") {
            // "ip6_rcv_core", "receive_buf [virtio_net]" or "func+0x1a/0x40".
            let name = f.split(['+', ' ']).next().unwrap_or(f).to_string();
            let chain = current.get_or_insert_with(Vec::new);
            // A bare address is ftrace's own trampoline, not a caller.
            if !name.starts_with("0x") {
                chain.push(name);
            }
        } else if let Some(c) = current.take() {
            chains.push(c);
        }
    }
    chains.extend(current);
    chains.truncate(limit);
    chains
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse_every_source() {
        let text = "Ip: Forwarding InReceives\nIp: 1 42\nIcmpMsg: InType3\nIcmpMsg: 5\n\
                    IpExt: InCsumErrors ReasmOverlaps\nIpExt: 7 2\n==\nIp6InReceives   \t9\n\
                    Icmp6InEchos 3\n==\nrx_dropped:4\nrx_packets:100\n==\n\
                    0000000a 00000001 00000002 00000000\n00000005 00000000 00000001 00000000\n";
        let c = Counters::parse(text);
        assert_eq!(c.get("IpInReceives"), 42);
        assert_eq!(c.get("IcmpMsgInType3"), 5);
        assert_eq!(c.get("IpExtReasmOverlaps"), 2);
        assert_eq!(c.get("Ip6InReceives"), 9);
        assert_eq!(c.get("eth0.rx_dropped"), 4);
        assert_eq!(c.get("softnet.processed"), 15);
        assert_eq!(c.get("softnet.time_squeeze"), 3);
    }

    #[test]
    fn stack_traces_parse_into_chains() {
        let text = "# tracer: function\n  <idle>-0 [000] ..s1. 1.0: ip6_rcv_core <-ipv6_rcv\n\
                    <idle>-0 [000] ..s1. 1.0: <stack trace>\n => 0xffffffffc049e083\n => ip6_rcv_core\n => ipv6_rcv+0x3a/0x100\n\
                    => __netif_receive_skb_one_core\n => virtnet_poll [virtio_net]\n\
                    <idle>-0 [000] ..s1. 2.0: ip6_rcv_core <-ipv6_rcv\n <idle>-0 [000] ..s1. 2.0: <stack trace>\n\
                    => ip6_rcv_core\n => ipv6_list_rcv\n";
        let chains = parse_stack_traces(text, 10);
        assert_eq!(chains.len(), 2);
        assert_eq!(
            chains[0],
            [
                "ip6_rcv_core",
                "ipv6_rcv",
                "__netif_receive_skb_one_core",
                "virtnet_poll"
            ]
        );
        assert_eq!(chains[1], ["ip6_rcv_core", "ipv6_list_rcv"]);
        assert_eq!(parse_stack_traces(text, 1).len(), 1);
    }
}
