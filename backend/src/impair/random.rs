//! The impairments' randomness: a seeded generator, netem's correlated draws, and the delay
//! distributions.
//!
//! Everything is deterministic: a rule's generator is seeded from `--impair-seed` and the rule's
//! place in the list, so the same seed, rules and frames give the same decisions.

/// xorshift64* (Vigna 2016): fast, small, and good enough for choosing frames.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator for stream `stream` of `seed` (each rule draws from its own stream).
    pub fn new(seed: u64, stream: u64) -> Self {
        // splitmix64 spreads nearby seeds and streams over the whole state space.
        let mut z = seed
            .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Rng { state: z.max(1) }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A probability with netem's correlation: each draw is `(1 - c) * u + c * previous`, so with
/// correlation `c` the decisions come in runs (netem's `get_crandom`; like netem's, the
/// correlation also narrows the spread of the draws, so a correlated 10% drops somewhat fewer
/// than 10%, which netem's documentation warns about too).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Chance {
    /// 0 to 1.
    pub p: f64,
    /// 0 to 1.
    pub correlation: f64,
}

/// The state of one correlated stream of draws.
#[derive(Debug, Clone, Copy, Default)]
pub struct Correlated {
    last: f64,
}

impl Correlated {
    /// The next draw in [0, 1).
    pub fn draw(&mut self, rng: &mut Rng, correlation: f64) -> f64 {
        let u = rng.unit();
        if correlation <= 0.0 {
            return u;
        }
        self.last = (1.0 - correlation) * u + correlation * self.last;
        self.last
    }

    /// Whether the event of `chance` happens now.
    pub fn happens(&mut self, rng: &mut Rng, chance: Chance) -> bool {
        if chance.p <= 0.0 {
            return false;
        }
        if chance.p >= 1.0 {
            return true;
        }
        self.draw(rng, chance.correlation) < chance.p
    }
}

/// How a delay's jitter is spread around the delay (netem's `distribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Uniform in delay ± jitter (netem's default without a table).
    #[default]
    Uniform,
    /// Normal with the jitter as standard deviation.
    Normal,
    /// Pareto (shape 3) scaled to the jitter as standard deviation: a long tail of late frames.
    Pareto,
    /// A quarter normal, three quarters Pareto (netem's `paretonormal`).
    ParetoNormal,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
            Distribution::Pareto => "pareto",
            Distribution::ParetoNormal => "paretonormal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "uniform" => Distribution::Uniform,
            "normal" => Distribution::Normal,
            "pareto" => Distribution::Pareto,
            "paretonormal" => Distribution::ParetoNormal,
            _ => return None,
        })
    }

    /// A value of mean 0 and standard deviation 1 (uniform: in [-1, 1)) for the draw `u` in
    /// [0, 1), by the inverse of the distribution function, as netem's tables are indexed by a
    /// (possibly correlated) uniform draw. `v` is a second, independent draw for the mixture.
    pub fn standard(self, u: f64, v: f64) -> f64 {
        match self {
            Distribution::Uniform => 2.0 * u - 1.0,
            Distribution::Normal => normal_quantile(u),
            Distribution::Pareto => pareto_standard(u),
            Distribution::ParetoNormal => 0.25 * normal_quantile(u) + 0.75 * pareto_standard(v),
        }
    }
}

/// Pareto of shape 3 and scale 1 (mean 1.5, standard deviation sqrt(3)/2), standardised.
fn pareto_standard(u: f64) -> f64 {
    const SHAPE: f64 = 3.0;
    const MEAN: f64 = 1.5;
    const STD_DEV: f64 = 0.866_025_403_784_438_6;
    // The tail is cut at u = 1 - 1e-9 (a thousand standard deviations).
    let x = (1.0 - u.min(1.0 - 1e-9)).powf(-1.0 / SHAPE);
    (x - MEAN) / STD_DEV
}

/// The standard normal distribution's quantile function (P. J. Acklam's rational approximation,
/// relative error under 1.2e-9).
fn normal_quantile(u: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.024_25;
    let u = u.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if u < LOW {
        tail((-2.0 * u.ln()).sqrt())
    } else if u > 1.0 - LOW {
        -tail((-2.0 * (1.0 - u).ln()).sqrt())
    } else {
        let q = u - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(d: Distribution) -> (f64, f64) {
        let mut rng = Rng::new(1, 0);
        let n = 200_000;
        let xs: Vec<f64> = (0..n)
            .map(|_| {
                let (u, v) = (rng.unit(), rng.unit());
                d.standard(u, v)
            })
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn distributions_are_centred_and_scaled() {
        let (m, s) = moments(Distribution::Normal);
        assert!(m.abs() < 0.01 && (s - 1.0).abs() < 0.01, "{m} {s}");
        let (m, s) = moments(Distribution::Uniform);
        assert!(
            m.abs() < 0.01 && (s - 1.0 / 3f64.sqrt()).abs() < 0.01,
            "{m} {s}"
        );
        // Pareto's tail makes its sample deviation converge slowly: the mean is the check.
        let (m, _) = moments(Distribution::Pareto);
        assert!(m.abs() < 0.02, "{m}");
        assert!(normal_quantile(0.975) > 1.95 && normal_quantile(0.975) < 1.97);
        assert!(normal_quantile(0.001) < -3.0);
    }

    #[test]
    fn generators_repeat_per_seed_and_differ_per_stream() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::new(7, 2);
                move |_| r.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn correlation_makes_runs() {
        let runs = |c: f64| {
            let mut rng = Rng::new(3, 0);
            let mut s = Correlated::default();
            let chance = Chance {
                p: 0.5,
                correlation: c,
            };
            let draws: Vec<bool> = (0..10_000).map(|_| s.happens(&mut rng, chance)).collect();
            draws.windows(2).filter(|w| w[0] != w[1]).count()
        };
        // Independent draws change about every other time; correlated ones far less often.
        assert!(runs(0.0) > 4_500);
        assert!(runs(0.9) < 2_000);
    }
}
