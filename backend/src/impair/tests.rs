use super::*;

fn tcp4(payload: usize, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20 + payload];
    f[12..14].copy_from_slice(&frame::ETHERTYPE_IPV4.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    f[23] = frame::PROTO_TCP;
    f[26..30].copy_from_slice(&[10, 0, 2, 2]);
    f[30..34].copy_from_slice(&[10, 0, 2, 15]);
    f[34..36].copy_from_slice(&8080u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 5 << 4;
    f[47] = flags;
    f
}

fn imp(rules: &str, seed: u64) -> Impairment {
    Impairment::new(parse_rules(rules).unwrap(), seed)
}

const NOW: Instant = Instant::from_secs(10);
const TO: LinkDirection = LinkDirection::ToGuest;
const FROM: LinkDirection = LinkDirection::FromGuest;

#[test]
fn no_rule_in_a_direction_takes_nothing() {
    let mut i = imp("from-guest: loss 100%", 1);
    assert!(i.decide(TO, &tcp4(10, 80, 0x10), NOW).is_none());
    assert!(!i.active(TO) && i.active(FROM));
    let v = i.decide(FROM, &tcp4(10, 80, 0x10), NOW).unwrap();
    assert_eq!(v.copies, [None, None]);
}

#[test]
fn random_loss_drops_its_share_and_repeats_per_seed() {
    let run = |seed| {
        let mut i = imp("to-guest: loss 10%", seed);
        let f = tcp4(100, 80, 0x18);
        let kept: Vec<bool> = (0..100_000)
            .map(|_| i.decide(TO, &f, NOW).unwrap().copies[0].is_some())
            .collect();
        (kept, i.rules()[0].counters.clone())
    };
    let (a, ca) = run(5);
    let (b, _) = run(5);
    let (c, _) = run(6);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!((9_500..10_500).contains(&ca.dropped), "{ca:?}");
    assert_eq!(ca.dropped, ca.dropped_tcp_data);
    assert_eq!(ca.matched, 100_000);
}

#[test]
fn gilbert_elliott_loses_in_bursts() {
    // p 1%, r 30%, all lost in the bad state, none in the good: bursts of about 1/r frames.
    let mut i = imp("to-guest: loss gemodel 1% 30% 100% 0%", 1);
    let f = tcp4(0, 80, 0x10);
    let lost: Vec<bool> = (0..200_000)
        .map(|_| i.decide(TO, &f, NOW).unwrap().copies[0].is_none())
        .collect();
    let drops = lost.iter().filter(|&&l| l).count();
    let bursts = lost.windows(2).filter(|w| !w[0] && w[1]).count();
    let mean_burst = drops as f64 / bursts as f64;
    // The stationary loss is p / (p + r) = 3.2%; the mean burst 1 / r = 3.3 frames.
    assert!(
        (0.025..0.04).contains(&(drops as f64 / 200_000.0)),
        "{drops}"
    );
    assert!((2.8..3.9).contains(&mean_burst), "{mean_burst}");
}

#[test]
fn duplicates_are_extra_copies_with_their_own_fate() {
    let mut i = imp("from-guest: duplicate 100% delay 10ms", 1);
    let v = i.decide(FROM, &tcp4(10, 80, 0x18), NOW).unwrap();
    let later = NOW + netstack::Duration::from_millis(10);
    assert_eq!(v.copies[0].unwrap().release, later);
    assert_eq!(v.copies[1].unwrap().release, later);
    assert_eq!(i.rules()[0].counters.duplicated, 1);
    assert!(!v.untouched(NOW));
    let mut i = imp("from-guest: duplicate 100% loss 50%", 3);
    let mut copies = [0usize; 3];
    for _ in 0..10_000 {
        let v = i.decide(FROM, &tcp4(10, 80, 0x18), NOW).unwrap();
        copies[v.copies.iter().flatten().count()] += 1;
        // What survives is always first.
        assert!(v.copies[0].is_some() || v.copies[1].is_none());
    }
    assert!(copies.iter().all(|&n| n > 2000), "{copies:?}");
}

#[test]
fn delay_with_jitter_stays_in_its_band_and_has_its_mean() {
    for dist in ["uniform", "normal", "pareto", "paretonormal"] {
        let mut i = imp(
            &format!("to-guest: delay 20ms jitter 5ms distribution {dist}"),
            1,
        );
        let f = tcp4(10, 80, 0x18);
        let d: Vec<u64> = (0..20_000)
            .map(|_| {
                (i.decide(TO, &f, NOW).unwrap().copies[0].unwrap().release - NOW).total_micros()
            })
            .collect();
        let mean = d.iter().sum::<u64>() as f64 / d.len() as f64;
        assert!((19_000.0..21_000.0).contains(&mean), "{dist}: {mean}");
        if dist == "uniform" {
            assert!(d.iter().all(|&x| (15_000..=25_000).contains(&x)));
        }
    }
}

#[test]
fn reordering_sends_some_frames_at_once_and_gap_spaces_them() {
    let mut i = imp("to-guest: delay 10ms reorder 100% gap 5", 1);
    let f = tcp4(10, 80, 0x18);
    let at_once: Vec<bool> = (0..20)
        .map(|_| i.decide(TO, &f, NOW).unwrap().copies[0].unwrap().release == NOW)
        .collect();
    // Every fifth frame goes at once, the four before it wait.
    let expect: Vec<bool> = (1..=20).map(|n| n % 5 == 0).collect();
    assert_eq!(at_once, expect);
    assert_eq!(i.rules()[0].counters.reordered, 4);
    assert_eq!(i.rules()[0].counters.delayed, 16);
}

#[test]
fn the_rate_queue_serialises_bursts_and_tail_drops_past_its_limit() {
    // 8 Mbit/s is one byte per microsecond.
    let mut i = imp("to-guest: rate 8mbit limit 3", 1);
    let f = tcp4(946, 80, 0x18); // 1000 bytes
    let releases: Vec<Option<u64>> = (0..5)
        .map(|_| i.decide(TO, &f, NOW).unwrap().copies[0].map(|c| (c.release - NOW).total_micros()))
        .collect();
    assert_eq!(
        releases,
        vec![Some(1000), Some(2000), Some(3000), None, None]
    );
    assert_eq!(i.rules()[0].counters.limit_drops, 2);
    // Once the queue has drained, the link is idle again.
    let later = NOW + netstack::Duration::from_millis(10);
    let c = i.decide(TO, &f, later).unwrap().copies[0].unwrap();
    assert_eq!((c.release - later).total_micros(), 1000);
    // A burst lets that many bytes through at once after idling.
    let mut i = imp("to-guest: rate 8mbit burst 2000b overhead 24", 1);
    let f = tcp4(922, 80, 0x18); // 976 + 24 = 1000 bytes
    let r: Vec<u64> = (0..4)
        .map(|_| (i.decide(TO, &f, NOW).unwrap().copies[0].unwrap().release - NOW).total_micros())
        .collect();
    assert_eq!(r, vec![0, 0, 1000, 2000]);
}

#[test]
fn the_first_rule_that_matches_takes_the_frame_and_windows_count_matches() {
    let mut i = imp(
        "to-guest: tcp flags syn,!ack: pass; to-guest: tcp data frames 3-4: loss 100%; to-guest: delay 1ms",
        1,
    );
    let syn = tcp4(0, 80, frame::tcp_flags::SYN);
    let ack = tcp4(0, 80, frame::tcp_flags::ACK);
    let data = tcp4(100, 80, frame::tcp_flags::ACK);
    assert!(i.decide(TO, &syn, NOW).unwrap().untouched(NOW));
    assert_eq!(i.decide(TO, &syn, NOW).unwrap().rule, 0);
    // A pure ACK is not data: the catch-all delays it.
    assert_eq!(i.decide(TO, &ack, NOW).unwrap().rule, 2);
    let fates: Vec<(usize, bool)> = (0..6)
        .map(|_| {
            let v = i.decide(TO, &data, NOW).unwrap();
            (v.rule, v.copies[0].is_none())
        })
        .collect();
    assert_eq!(
        fates,
        vec![
            (2, false),
            (2, false),
            (1, true),
            (1, true),
            (2, false),
            (2, false)
        ]
    );
    assert_eq!(i.rules()[1].counters.dropped_tcp_data, 2);
    assert_eq!(i.rules()[1].counters.matched, 2);
}

#[test]
fn ports_addresses_and_protocols_narrow_a_rule() {
    let mut i = imp(
        "to-guest: udp port 80: loss 100%; to-guest: tcp dst 10.0.2.0/24 dport 81-90: loss 100%",
        1,
    );
    assert!(i.decide(TO, &tcp4(1, 80, 0x18), NOW).is_none());
    assert!(i.decide(TO, &tcp4(1, 85, 0x18), NOW).is_some());
    assert!(i.decide(TO, &tcp4(1, 91, 0x18), NOW).is_none());
}

#[test]
fn corruption_picks_a_bit_after_the_ethernet_header() {
    let mut i = imp("from-guest: corrupt 100%", 9);
    let f = tcp4(100, 80, 0x18);
    for _ in 0..1000 {
        let v = i.decide(FROM, &f, NOW).unwrap();
        let (at, mask) = v.copies[0].unwrap().corrupt.unwrap();
        assert!((14..f.len()).contains(&at));
        assert_eq!(mask.count_ones(), 1);
    }
    assert_eq!(i.rules()[0].counters.corrupted, 1000);
}

#[test]
fn a_schedule_changes_rules_on_time_and_restores_them() {
    let mut i = imp("to-guest: delay 5ms", 1);
    i.set_schedule(
        NOW,
        vec![
            (2500, None),
            (2000, Some(parse_rules("both: loss 100%").unwrap())),
        ],
    );
    assert_eq!(
        i.poll_at(),
        Some(NOW + netstack::Duration::from_millis(2000))
    );
    assert_eq!(
        i.run_schedule(NOW + netstack::Duration::from_millis(1999)),
        0
    );
    assert_eq!(
        i.run_schedule(NOW + netstack::Duration::from_millis(2000)),
        1
    );
    assert_eq!(i.rules().len(), 2);
    assert_eq!(
        i.run_schedule(NOW + netstack::Duration::from_millis(3000)),
        1
    );
    assert_eq!(i.specs(), parse_rules("to-guest: delay 5ms").unwrap());
    assert_eq!(i.poll_at(), None);
}
