#!/usr/bin/env python3
"""Regenerates the counter tables of docs/counters.md from the doc comments of the counter structs
(backend/src/device.rs DeviceStats, netstack/src/stats.rs Stats, backend/src/impair/mod.rs
RuleCounters). The text before the first table
is kept. A unit test (stats::doc_tests) fails when a counter is missing from the document."""
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent


def extract(path, struct):
    s = (root / path).read_text()
    i = s.index("pub struct " + struct)
    body = s[s.index("{", i) + 1:]
    body = body[:body.index("\n    }\n")]
    out, doc = [], []
    for line in body.splitlines():
        l = line.strip()
        if l.startswith("///"):
            doc.append(l[3:].strip())
        elif l.endswith(","):
            out.append((l[:-1], " ".join(doc)))
            doc = []
    return out


doc = root / "docs/counters.md"
head = doc.read_text().split("## device")[0]
parts = [head, "## device: per queue pair, like `ethtool -S`\n\n`device` holds each counter summed over the queue pairs; `queues.pairs[K]` holds pair K's own\n(`--queues`), and `queues.active_pairs` how many pairs the guest uses.\n\n| counter | meaning |\n| --- | --- |\n"]
parts += [f"| `{n}` | {d} |\n" for n, d in extract("backend/src/control.rs", "DeviceStats")]
parts.append("\n## stack: per protocol, and one `drop_*` counter per reason\n\n| counter | meaning |\n| --- | --- |\n")
parts += [f"| `{n}` | {d} |\n" for n, d in extract("netstack/src/stats.rs", "Stats")]
parts.append("\n## impair: per link impairment rule\n\n`impair.rules[N].counters` in the stats document and `GET /impair`; `virtgate_impair_<name>_total{rule=\"N\",direction=\"to-guest\"}` in `/metrics` (docs/impairments.md). They start from zero whenever the rules are replaced; the `device` counters `*_loss_injected*` and `*_impair_*` keep the totals.\n\n| counter | meaning |\n| --- | --- |\n")
parts += [f"| `{n}` | {d} |\n" for n, d in extract("backend/src/impair/mod.rs", "RuleCounters")]
doc.write_text("".join(parts))
