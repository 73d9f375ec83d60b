//! Deterministic randomness: one PCG stream per purpose, derived from the seed, and samplers
//! written here over raw 64-bit draws so the bytes a seed gives never change with a
//! dependency's sampling code.

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// A seeded random stream.
pub struct Rand(Pcg64Mcg);

impl Rand {
    /// The stream `purpose` of `seed`: streams of one seed are independent of each other.
    pub fn stream(seed: u64, purpose: u64) -> Rand {
        Rand(Pcg64Mcg::seed_from_u64(mix(seed ^ mix(purpose))))
    }

    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in lo..=hi.
    pub fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// An item chosen by weight.
    pub fn weighted<T: Copy>(&mut self, items: &[(T, f64)]) -> T {
        let total: f64 = items.iter().map(|(_, w)| w).sum();
        let mut u = self.unit() * total;
        for &(item, weight) in items {
            if u < weight {
                return item;
            }
            u -= weight;
        }
        items[items.len() - 1].0
    }

    /// Exponentially distributed with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Normally distributed (Box-Muller).
    pub fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        mean + sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// 1 + a geometric number of extra trials with the given mean total.
    pub fn count_with_mean(&mut self, mean: f64) -> u32 {
        1 + self.exp(mean - 1.0).floor() as u32
    }

    /// A random UUID (version 4 layout) into `out`.
    pub fn uuid(&mut self, out: &mut String) {
        let hi = (self.u64() & 0xffff_ffff_ffff_0fff) | 0x4000;
        let lo = (self.u64() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
        use std::fmt::Write;
        out.clear();
        write!(
            out,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
        .expect("write to String");
    }
}

/// SplitMix64's finaliser: spreads nearby seeds far apart.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Zipf-like popularity over ranks 0..n: rank k is drawn with weight 1 / (k + 1)^s.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|k| {
                total += 1.0 / ((k + 1) as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn sample(&self, rng: &mut Rand) -> usize {
        let u = rng.unit() * self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&c| c <= u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_repeat_for_a_seed_and_differ_between_seeds_and_purposes() {
        let draw = |seed, purpose| {
            let mut r = Rand::stream(seed, purpose);
            (0..4).map(|_| r.u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 1), draw(7, 1));
        assert_ne!(draw(7, 1), draw(8, 1));
        assert_ne!(draw(7, 1), draw(7, 2));
    }

    #[test]
    fn samplers_have_the_asked_shape() {
        let mut r = Rand::stream(1, 1);
        let n = 200_000;
        let mean = (0..n).map(|_| r.exp(20.0)).sum::<f64>() / n as f64;
        assert!((mean - 20.0).abs() < 0.3, "{mean}");
        let below: Vec<u64> = (0..n).map(|_| r.below(10)).collect();
        assert!(below.iter().all(|&b| b < 10));
        let counts = (0..10).map(|k| below.iter().filter(|&&b| b == k).count());
        assert!(counts.into_iter().all(|c| (19_000..21_000).contains(&c)));
        let normal = (0..n).map(|_| r.normal(5.0, 2.0)).sum::<f64>() / n as f64;
        assert!((normal - 5.0).abs() < 0.05, "{normal}");
        let sessions = (0..n).map(|_| r.count_with_mean(8.0) as f64).sum::<f64>() / n as f64;
        assert!((sessions - 8.0).abs() < 0.6, "{sessions}");
    }

    #[test]
    fn zipf_makes_low_ranks_popular_in_proportion() {
        let z = Zipf::new(1000, 1.0);
        let mut r = Rand::stream(3, 3);
        let mut hits = vec![0u32; 1000];
        for _ in 0..300_000 {
            hits[z.sample(&mut r)] += 1;
        }
        // Rank 0 is drawn twice as often as rank 1 and ten times as often as rank 9.
        let ratio = |a: usize, b: usize| hits[a] as f64 / hits[b] as f64;
        assert!((ratio(0, 1) - 2.0).abs() < 0.1, "{}", ratio(0, 1));
        assert!((ratio(0, 9) - 10.0).abs() < 1.0, "{}", ratio(0, 9));
        assert!(hits[999] > 0);
    }

    #[test]
    fn uuids_have_the_version_4_layout() {
        let mut r = Rand::stream(9, 9);
        let mut id = String::new();
        r.uuid(&mut id);
        assert_eq!(id.len(), 36);
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
    }
}
