//! The counters users read: a JSON document written to `--stats-file` and logged at exit.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::control::Snapshot;

fn counters(each: impl FnOnce(&mut dyn FnMut(&'static str, u64))) -> Value {
    let mut map = Map::new();
    each(&mut |name, v| {
        map.insert(name.to_string(), Value::from(v));
    });
    Value::Object(map)
}

/// The JSON form of a snapshot.
pub fn to_json(snap: &Snapshot, host_mtu: Option<u16>) -> Value {
    json!({
        "guest": {
            "mac": snap.guest_mac.map(|m| m.to_string()),
            "ipv4": snap.guest_ipv4.map(|a| a.to_string()),
            "ipv6": snap.guest_ipv6.map(|a| a.to_string()),
            "dhcpv6_leases": snap.dhcpv6_leases.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        },
        "virtio": {
            "acked_features": format!("{:#x}", snap.acked_features),
            "host_mtu": host_mtu,
        },
        "device": counters(|f| snap.device.for_each(f)),
        "queues": {
            "active_pairs": snap.active_queue_pairs,
            "pairs": snap.queues.iter().map(|q| counters(|f| q.for_each(f))).collect::<Vec<_>>(),
            "rx_itr": snap.rx_itr,
        },
        "stack": counters(|f| snap.stack.for_each(f)),
        "impair": impair_json(&snap.impair, false),
    })
}

/// The impairments' JSON form (`GET /impair`, and `impair` in the stats document, which leaves
/// out the schedule).
pub fn impair_json(state: &crate::control::ImpairState, with_schedule: bool) -> Value {
    let mut v = json!({
        "seed": state.seed,
        "rules": state.rules.iter().enumerate().map(|(i, r)| json!({
            "index": i,
            "direction": r.direction.name(),
            "rule": r.rule,
            "counters": counters(|f| r.counters.for_each(f)),
        })).collect::<Vec<_>>(),
        "schedule": state.schedule.iter().map(|(ms, rules)| match rules {
            Some(r) => json!({ "in_ms": ms, "rules": r }),
            None => json!({ "in_ms": ms, "restore": true }),
        }).collect::<Vec<_>>(),
        "held": { "to_guest": state.held[0], "from_guest": state.held[1], "bytes": state.held_bytes },
    });
    if !with_schedule {
        if let Some(m) = v.as_object_mut() {
            m.remove("schedule");
        }
    }
    v
}

/// Writes the document atomically (temporary file, then rename) so readers never see half of it.
pub fn write_file(path: &Path, doc: &Value) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer_pretty(&mut f, doc)?;
        f.write_all(b"\n")?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// One line per non-zero counter, for the log at exit.
pub fn summary(snap: &Snapshot) -> String {
    let mut out = String::new();
    let mut add = |prefix: &str, name: &str, v: u64| {
        if v != 0 {
            out.push_str(&format!("  {prefix}.{name} = {v}\n"));
        }
    };
    snap.device.for_each(|n, v| add("device", n, v));
    snap.stack.for_each(|n, v| add("stack", n, v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_every_counter_and_the_guest() {
        let mut snap = Snapshot::default();
        snap.device.rx_frames = 7;
        snap.stack.icmp_rx_echo_requests = 3;
        snap.guest_mac = Some("52:54:00:12:34:56".parse().unwrap());
        let v = to_json(&snap, Some(1500));
        assert_eq!(v["device"]["rx_frames"], 7);
        assert_eq!(v["stack"]["icmp_rx_echo_requests"], 3);
        assert_eq!(v["stack"]["drop_tx_queue_full"], 0);
        assert_eq!(v["guest"]["mac"], "52:54:00:12:34:56");
        assert_eq!(v["virtio"]["host_mtu"], 1500);
        let dir = std::env::temp_dir().join(format!("virtgate-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stats.json");
        write_file(&path, &v).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, v);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(summary(&snap).contains("device.rx_frames = 7"));
    }
}

#[cfg(test)]
mod doc_tests {
    use crate::control::DeviceStats;

    /// docs/counters.md names every counter, so the documentation cannot fall behind the code.
    #[test]
    fn every_counter_is_documented() {
        let doc = include_str!("../../docs/counters.md");
        let mut missing = Vec::new();
        DeviceStats::default().for_each(|name, _| {
            if !doc.contains(&format!("| `{name}` |")) {
                missing.push(name);
            }
        });
        netstack::Stats::default().for_each(|name, _| {
            if !doc.contains(&format!("| `{name}` |")) {
                missing.push(name);
            }
        });
        crate::impair::RuleCounters::default().for_each(|name, _| {
            if !doc.contains(&format!("| `{name}` |")) {
                missing.push(name);
            }
        });
        assert!(missing.is_empty(), "undocumented counters: {missing:?}");
    }
}
