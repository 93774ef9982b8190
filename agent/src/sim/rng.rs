//! Seeded randomness for the simulator: SplitMix64, small, fast and the same on every platform.
//!
//! Two uses. A sequential stream ([`SplitMix64`]) breaks the scheduler's ties, as kube-scheduler
//! picks at random among equally scored nodes. Counter-based draws ([`unit`]) give each replica's
//! load noise as a function of (seed, replica, tick) alone, so the policies compared on one seed
//! see exactly the same load whatever they evict.

/// The SplitMix64 generator (Steele, Lea, Flood 2014).
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 output function: a bijective mix of all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in `0..n`; `n` must be positive (0 gives 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: uniform enough for n far below 2^64, and no modulo bias worth a loop.
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// A stable 64-bit hash of a string (FNV-1a), to turn names into counters for [`unit`].
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A uniform draw in `[0, 1)` that depends only on its inputs.
pub fn unit(seed: u64, stream: u64, counter: u64) -> f64 {
    let z = mix(mix(seed ^ mix(stream.wrapping_add(GOLDEN_GAMMA))).wrapping_add(counter));
    // The top 53 bits fill an f64 mantissa exactly.
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        let mut c = SplitMix64::new(43);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [0u32; 5];
        for _ in 0..1000 {
            seen[rng.below(5)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 150), "{seen:?}");
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn unit_draws_are_uniform_and_counter_based() {
        let draws: Vec<f64> = (0..2000).map(|i| unit(7, 3, i)).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.03, "{mean}");
        assert_eq!(unit(7, 3, 10), draws[10]);
        assert_ne!(unit(7, 4, 10), draws[10]);
        assert_ne!(unit(8, 3, 10), draws[10]);
    }

    #[test]
    fn names_hash_apart() {
        assert_ne!(name_hash("api-0"), name_hash("api-1"));
        assert_eq!(name_hash("api-0"), name_hash("api-0"));
    }
}
