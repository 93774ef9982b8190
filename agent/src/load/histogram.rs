//! Quantiles of the kernel's log2 run-queue wait histogram (bucket layout in `ballast_common`).

use ballast_common::{wait_bucket_upper_ns, WAIT_HIST_BUCKETS};

use super::counter::counter_delta;

/// Per-bucket increase between two cumulative histograms.
pub fn bucket_deltas(previous: &[u64; WAIT_HIST_BUCKETS], current: &[u64; WAIT_HIST_BUCKETS]) -> [u64; WAIT_HIST_BUCKETS] {
    let mut out = [0; WAIT_HIST_BUCKETS];
    for (k, slot) in out.iter_mut().enumerate() {
        *slot = counter_delta(previous[k], current[k]);
    }
    out
}

/// Lower bound of bucket `k`, ns.
fn lower_ns(k: usize) -> u64 {
    if k == 0 {
        0
    } else {
        wait_bucket_upper_ns(k - 1).unwrap_or(0)
    }
}

/// The `q` quantile in seconds, interpolating linearly inside the bucket that holds rank
/// `q * total`, as Prometheus' `histogram_quantile` does. The last bucket is open, so a rank
/// there answers with its lower bound (2^32 ns ≈ 4.29 s): "at least this". `None` for an empty
/// histogram or a `q` outside [0, 1].
pub fn quantile_seconds(buckets: &[u64; WAIT_HIST_BUCKETS], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (k, &count) in buckets.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let lower = lower_ns(k) as f64;
            let Some(upper) = wait_bucket_upper_ns(k) else { return Some(lower / 1e9) };
            let within = ((rank - below as f64) / count as f64).clamp(0.0, 1.0);
            return Some((lower + (upper as f64 - lower) * within) / 1e9);
        }
        below += count;
    }
    None
}

/// Finite upper bounds of the buckets, seconds (the `le` labels; `+Inf` is implied).
pub fn bucket_upper_bounds_seconds() -> [f64; WAIT_HIST_BUCKETS - 1] {
    let mut out = [0.0; WAIT_HIST_BUCKETS - 1];
    for (k, slot) in out.iter_mut().enumerate() {
        *slot = wait_bucket_upper_ns(k).unwrap_or(u64::MAX) as f64 / 1e9;
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX_SECONDS: f64 = 4.294_967_296;

    #[test]
    fn single_bucket_interpolates_inside_it() {
        let mut h = [0; WAIT_HIST_BUCKETS];
        h[3] = 100; // [4096, 8192) ns
        let p50 = quantile_seconds(&h, 0.5).unwrap_or(0.0);
        assert!((p50 - 6144e-9).abs() < 1e-12);
        assert_eq!(quantile_seconds(&h, 1.0), Some(8192e-9));
    }

    #[test]
    fn p99_finds_the_tail() {
        let mut h = [0; WAIT_HIST_BUCKETS];
        h[1] = 990; // ~1-2 µs
        h[15] = 10; // [2^24, 2^25) ns ≈ 16.8-33.6 ms
        let p50 = quantile_seconds(&h, 0.5).unwrap_or(0.0);
        let p99 = quantile_seconds(&h, 0.99).unwrap_or(0.0);
        assert!(p50 < 2.1e-6, "p50 {p50}");
        assert!(p99 <= 2048e-9, "p99 {p99}: rank 990 of 1000 is still in the first bucket");
        assert!(quantile_seconds(&h, 0.999).unwrap_or(0.0) > 0.016);
    }

    #[test]
    fn open_last_bucket_answers_its_lower_bound() {
        let mut h = [0; WAIT_HIST_BUCKETS];
        h[WAIT_HIST_BUCKETS - 1] = 4;
        assert_eq!(quantile_seconds(&h, 0.5), Some(MAX_SECONDS));
    }

    #[test]
    fn empty_and_out_of_range() {
        let h = [0; WAIT_HIST_BUCKETS];
        assert_eq!(quantile_seconds(&h, 0.5), None);
        let mut one = [0; WAIT_HIST_BUCKETS];
        one[0] = 1;
        assert_eq!(quantile_seconds(&one, -0.1), None);
        assert_eq!(quantile_seconds(&one, 1.5), None);
        assert_eq!(quantile_seconds(&one, f64::NAN), None);
        assert_eq!(quantile_seconds(&one, 0.0), Some(0.0));
    }

    #[test]
    fn bounds_double_from_one_microsecond() {
        let bounds = bucket_upper_bounds_seconds();
        assert!((bounds[0] - 1.024e-6).abs() < 1e-15);
        assert!((bounds[bounds.len() - 1] - MAX_SECONDS).abs() < 1e-9);
        assert!(bounds.windows(2).all(|w| (w[1] / w[0] - 2.0).abs() < 1e-12));
    }

    #[test]
    fn deltas_per_bucket() {
        let mut a = [0; WAIT_HIST_BUCKETS];
        let mut b = [0; WAIT_HIST_BUCKETS];
        a[2] = 5;
        b[2] = 8;
        b[4] = 1;
        let d = bucket_deltas(&a, &b);
        assert_eq!((d[2], d[4], d.iter().sum::<u64>()), (3, 1, 4));
    }

    proptest! {
        #[test]
        fn quantiles_are_monotone_and_bounded(counts in proptest::collection::vec(0u64..1000, WAIT_HIST_BUCKETS), q1 in 0.0f64..=1.0, q2 in 0.0f64..=1.0) {
            let mut h = [0; WAIT_HIST_BUCKETS];
            h.copy_from_slice(&counts);
            let (lo, hi) = if q1 <= q2 { (q1, q2) } else { (q2, q1) };
            match (quantile_seconds(&h, lo), quantile_seconds(&h, hi)) {
                (Some(a), Some(b)) => {
                    prop_assert!(a <= b + 1e-15);
                    prop_assert!((0.0..=MAX_SECONDS).contains(&a) && (0.0..=MAX_SECONDS).contains(&b));
                }
                (None, None) => prop_assert_eq!(counts.iter().sum::<u64>(), 0),
                other => prop_assert!(false, "inconsistent answers {:?}", other),
            }
        }
    }
}
