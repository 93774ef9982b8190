//! Quantiles of the kernel's log2 run-queue wait histogram (bucket layout in `ballast_common`).
//!
//! The kernel keeps cumulative per-bucket counts; over a window Ballast wants "how long did the
//! typical and the unlucky wait last", so this module turns two readings into per-bucket deltas and
//! those into quantiles, the same way Prometheus' `histogram_quantile` would from the exported
//! buckets, so that `/v1/load` and a PromQL query over `/metrics` agree. Pure: no I/O, no clock.

use ballast_common::{wait_bucket_upper_ns, WAIT_HIST_BUCKETS};

use super::counter::counter_delta;

/// Per-bucket increase between two cumulative histograms; each bucket is its own counter, so a
/// reset is handled per bucket exactly as [`counter_delta`] does.
pub fn bucket_deltas(
    previous: &[u64; WAIT_HIST_BUCKETS],
    current: &[u64; WAIT_HIST_BUCKETS],
) -> [u64; WAIT_HIST_BUCKETS] {
    std::array::from_fn(|k| counter_delta(previous[k], current[k]))
}

/// Lower bound of bucket `k`, ns: 0 for the first bucket, the previous bucket's upper bound after.
fn lower_ns(k: usize) -> u64 {
    k.checked_sub(1).and_then(wait_bucket_upper_ns).unwrap_or(0)
}

/// The `q` quantile of a histogram of per-bucket counts (typically [`bucket_deltas`]), seconds.
///
/// Follows Prometheus' `histogram_quantile`: the answer lies in the first bucket whose cumulative
/// count reaches rank `q * total`, linearly interpolated between that bucket's lower and upper
/// bound (bucket 0 starts at 0), i.e. waits are assumed to be spread evenly inside a bucket. Empty
/// buckets are never chosen, so `q = 0` answers the lower bound of the first non-empty bucket,
/// the shortest wait the histogram can vouch for. The last bucket is open (2^32 ns and up), so a rank that lands
/// there answers its lower bound, 2^32 ns = 4.294967296 s, to be read as "at least this"; that is
/// also what Prometheus does for its `+Inf` bucket, and it keeps every answer within
/// [0, 4.294967296] s.
///
/// `None` for an empty histogram (no waits, no latency; not a latency of 0) and for a `q` outside
/// [0, 1] or NaN.
pub fn quantile_seconds(buckets: &[u64; WAIT_HIST_BUCKETS], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    // u128: 24 u64 counts cannot overflow it, so no saturation games.
    let total: u128 = buckets.iter().map(|&c| u128::from(c)).sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u128;
    for (k, &count) in buckets.iter().enumerate() {
        let through = below + u128::from(count);
        if count > 0 && through as f64 >= rank {
            let lower = lower_ns(k) as f64;
            let Some(upper) = wait_bucket_upper_ns(k) else {
                return Some(lower / 1e9);
            };
            // Clamped so rounding in `rank` cannot step outside the bucket (and break monotonicity).
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some((lower + (upper as f64 - lower) * within) / 1e9);
        }
        below = through;
    }
    // Unreachable: q <= 1 makes rank <= total, which the last non-empty bucket reaches.
    None
}

/// Finite upper bounds of the buckets in seconds, ascending: the `le` labels of the exported
/// histogram (the open last bucket is the implied `+Inf`).
pub fn bucket_upper_bounds_seconds() -> [f64; WAIT_HIST_BUCKETS - 1] {
    // Every k below the last bucket has a finite bound; the fallback only keeps this panic-free.
    std::array::from_fn(|k| wait_bucket_upper_ns(k).map_or(f64::INFINITY, |ns| ns as f64 / 1e9))
}

/// Buckets of the coarse histogram: ×4 steps from 1 µs to 4.3 s, plus the open last one.
pub const COARSE_BUCKETS: usize = WAIT_HIST_BUCKETS / 2;

/// The kernel's 24 log2 buckets merged pairwise into 12 ×4 buckets. Per-container series use it:
/// half the series per container at the same 1 µs .. 4 s range, which keeps a node with hundreds
/// of containers affordable to scrape and store; node-wide figures keep full resolution.
pub fn coarsen(buckets: &[u64; WAIT_HIST_BUCKETS]) -> [u64; COARSE_BUCKETS] {
    let mut out = [0u64; COARSE_BUCKETS];
    for (k, slot) in out.iter_mut().enumerate() {
        *slot = buckets[2 * k].saturating_add(buckets[2 * k + 1]);
    }
    out
}

/// Finite upper bounds of [`coarsen`]'s buckets, seconds: the kernel bounds 2^(11+2k) ns.
pub fn coarse_upper_bounds_seconds() -> [f64; COARSE_BUCKETS - 1] {
    let fine = bucket_upper_bounds_seconds();
    let mut out = [0.0; COARSE_BUCKETS - 1];
    for (k, slot) in out.iter_mut().enumerate() {
        *slot = fine[2 * k + 1];
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Lower bound of the open last bucket: 2^32 ns.
    const MAX_SECONDS: f64 = 4.294_967_296;

    fn with(counts: &[(usize, u64)]) -> [u64; WAIT_HIST_BUCKETS] {
        let mut h = [0; WAIT_HIST_BUCKETS];
        for &(k, c) in counts {
            h[k] = c;
        }
        h
    }

    fn close(got: Option<f64>, want: f64) -> bool {
        got.is_some_and(|g| (g - want).abs() <= want.abs() * 1e-12 + 1e-18)
    }

    #[test]
    fn single_bucket_interpolates_inside_it() {
        let h = with(&[(3, 100)]); // [4096, 8192) ns
        assert!(
            close(quantile_seconds(&h, 0.0), 4096e-9),
            "q=0 is the bucket's lower bound"
        );
        assert!(close(quantile_seconds(&h, 0.25), 5120e-9));
        assert!(close(quantile_seconds(&h, 0.5), 6144e-9));
        assert!(
            close(quantile_seconds(&h, 1.0), 8192e-9),
            "q=1 is the bucket's upper bound"
        );
    }

    #[test]
    fn first_bucket_starts_at_zero() {
        let h = with(&[(0, 10)]); // [0, 1024) ns
        assert_eq!(quantile_seconds(&h, 0.0), Some(0.0));
        assert!(close(quantile_seconds(&h, 0.5), 512e-9));
        assert!(close(quantile_seconds(&h, 1.0), 1024e-9));
    }

    #[test]
    fn uniform_spread_over_two_buckets() {
        // 100 waits in [1024, 2048) and 100 in [2048, 4096) ns.
        let h = with(&[(1, 100), (2, 100)]);
        assert!(close(quantile_seconds(&h, 0.25), 1536e-9));
        assert!(
            close(quantile_seconds(&h, 0.5), 2048e-9),
            "the median sits on the shared bound"
        );
        assert!(close(quantile_seconds(&h, 0.75), 3072e-9));
        assert!(close(quantile_seconds(&h, 1.0), 4096e-9));
    }

    #[test]
    fn p50_and_p99_of_a_long_tail() {
        // 990 short waits in [1024, 2048) ns, 10 long ones in [2^24, 2^25) ns (16.8 to 33.6 ms).
        let h = with(&[(1, 990), (15, 10)]);
        // Rank 500 of 990 in the first bucket.
        assert!(close(
            quantile_seconds(&h, 0.5),
            (1024.0 + 1024.0 * 500.0 / 990.0) * 1e-9
        ));
        // Rank 990 is the last short wait: the top of the first bucket.
        assert!(close(quantile_seconds(&h, 0.99), 2048e-9));
        // Rank 995 is halfway through the tail bucket.
        assert!(close(
            quantile_seconds(&h, 0.995),
            1.5 * (1u64 << 24) as f64 * 1e-9
        ));
        assert!(close(quantile_seconds(&h, 1.0), (1u64 << 25) as f64 * 1e-9));
    }

    #[test]
    fn empty_buckets_between_are_skipped() {
        let h = with(&[(2, 1), (10, 1)]); // [2048, 4096) and [2^19, 2^20) ns
        assert!(close(quantile_seconds(&h, 0.5), 4096e-9));
        // Just past the first bucket's share the answer jumps to the second non-empty bucket,
        // never into the empty ones between.
        let just_past = quantile_seconds(&h, 0.5 + 1e-9).unwrap_or(0.0);
        assert!(just_past >= (1u64 << 19) as f64 * 1e-9, "{just_past}");
    }

    #[test]
    fn open_last_bucket_answers_its_lower_bound() {
        let h = with(&[(WAIT_HIST_BUCKETS - 1, 4)]);
        assert_eq!(quantile_seconds(&h, 0.0), Some(MAX_SECONDS));
        assert_eq!(quantile_seconds(&h, 0.5), Some(MAX_SECONDS));
        assert_eq!(quantile_seconds(&h, 1.0), Some(MAX_SECONDS));
        let mixed = with(&[(0, 1), (WAIT_HIST_BUCKETS - 1, 1)]);
        assert_eq!(quantile_seconds(&mixed, 1.0), Some(MAX_SECONDS));
    }

    #[test]
    fn empty_and_out_of_range() {
        let h = [0; WAIT_HIST_BUCKETS];
        for q in [0.0, 0.5, 1.0] {
            assert_eq!(quantile_seconds(&h, q), None, "no waits at q={q}");
        }
        let one = with(&[(0, 1)]);
        for q in [-0.1, 1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(quantile_seconds(&one, q), None, "q={q}");
        }
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let h = [u64::MAX; WAIT_HIST_BUCKETS];
        let p50 = quantile_seconds(&h, 0.5).unwrap_or(-1.0);
        assert!((0.0..=MAX_SECONDS).contains(&p50), "{p50}");
        assert_eq!(quantile_seconds(&h, 1.0), Some(MAX_SECONDS));
    }

    #[test]
    fn bounds_double_from_one_microsecond() {
        let bounds = bucket_upper_bounds_seconds();
        assert_eq!(bounds.len(), WAIT_HIST_BUCKETS - 1);
        assert!((bounds[0] - 1.024e-6).abs() < 1e-15);
        assert_eq!(bounds[bounds.len() - 1], MAX_SECONDS);
        assert!(bounds.windows(2).all(|w| w[1] == 2.0 * w[0]));
        for (k, bound) in bounds.iter().enumerate() {
            assert_eq!(
                Some(*bound),
                wait_bucket_upper_ns(k).map(|ns| ns as f64 / 1e9)
            );
        }
    }

    #[test]
    fn deltas_per_bucket() {
        let a = with(&[(2, 5), (7, u64::MAX)]);
        let b = with(&[(2, 8), (4, 1), (7, 2)]);
        let d = bucket_deltas(&a, &b);
        assert_eq!(
            (d[2], d[4], d[7]),
            (3, 1, 2),
            "bucket 7 was reset and counts from zero"
        );
        assert_eq!(d.iter().sum::<u64>(), 6);
        assert_eq!(bucket_deltas(&b, &b), [0; WAIT_HIST_BUCKETS]);
    }

    #[test]
    fn coarse_buckets_merge_pairs_and_keep_the_range() {
        let mut fine = [0u64; WAIT_HIST_BUCKETS];
        fine[0] = 1;
        fine[1] = 2;
        fine[22] = 3;
        fine[23] = 4;
        let coarse = coarsen(&fine);
        assert_eq!(
            (coarse[0], coarse[11], coarse.iter().sum::<u64>()),
            (3, 7, 10)
        );
        let bounds = coarse_upper_bounds_seconds();
        assert!(
            (bounds[0] - 2.048e-6).abs() < 1e-15,
            "first bound {}",
            bounds[0]
        );
        assert!((bounds[10] - 2.147_483_648).abs() < 1e-9);
        assert!(bounds.windows(2).all(|w| (w[1] / w[0] - 4.0).abs() < 1e-12));
    }

    proptest! {
        #[test]
        fn quantiles_are_monotone_and_bounded(
            counts in proptest::array::uniform::<_, WAIT_HIST_BUCKETS>(prop_oneof![3 => Just(0u64), 5 => 0u64..1000, 1 => any::<u64>()]),
            q1 in 0.0f64..=1.0,
            q2 in 0.0f64..=1.0,
        ) {
            let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
            match (quantile_seconds(&counts, lo), quantile_seconds(&counts, hi)) {
                (Some(a), Some(b)) => {
                    prop_assert!(a <= b, "q {lo} -> {a}, q {hi} -> {b}");
                    prop_assert!((0.0..=MAX_SECONDS).contains(&a) && (0.0..=MAX_SECONDS).contains(&b));
                }
                (None, None) => prop_assert!(counts.iter().all(|&c| c == 0)),
                other => prop_assert!(false, "inconsistent answers {:?}", other),
            }
        }

        #[test]
        fn quantile_lies_in_a_non_empty_bucket(
            counts in proptest::array::uniform::<_, WAIT_HIST_BUCKETS>(prop_oneof![3 => Just(0u64), 1 => 1u64..1000]),
            q in 0.0f64..=1.0,
        ) {
            if let Some(seconds) = quantile_seconds(&counts, q) {
                let ns = seconds * 1e9;
                let inside = (0..WAIT_HIST_BUCKETS).filter(|&k| counts[k] > 0).any(|k| {
                    let upper = wait_bucket_upper_ns(k).map_or(lower_ns(k) as f64, |u| u as f64);
                    (lower_ns(k) as f64 - 1e-3..=upper + 1e-3).contains(&ns)
                });
                prop_assert!(inside, "{ns} ns is in no non-empty bucket of {:?}", counts);
            }
        }
    }
}
