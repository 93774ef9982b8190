//! Cumulative counter arithmetic: deltas that survive resets, and rates that refuse to invent
//! a value for an empty window.

/// Increase of a cumulative counter from `previous` to `current`.
///
/// A counter that went down was reset (its cgroup was recreated, the agent reloaded its maps, or
/// a narrower source wrapped): it is a new series that started from zero, so the increase is
/// `current` itself, which is what Prometheus' `rate()` assumes too. Never underflows.
pub fn counter_delta(previous: u64, current: u64) -> u64 {
    if current >= previous {
        current - previous
    } else {
        current
    }
}

/// `delta` per second over `interval_ns`; `None` for an empty interval (no time, no rate).
pub fn rate_per_second(delta: u64, interval_ns: u64) -> Option<f64> {
    (interval_ns > 0).then(|| delta as f64 * 1e9 / interval_ns as f64)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn deltas() {
        let cases = [
            (0, 0, 0),
            (5, 5, 0),
            (5, 9, 4),
            (9, 5, 5),              // reset: a new series from zero
            (u64::MAX - 1, u64::MAX, 1),
            (u64::MAX, 3, 3),       // wrap of the source reads as a reset
            (0, u64::MAX, u64::MAX),
        ];
        for (previous, current, want) in cases {
            assert_eq!(counter_delta(previous, current), want, "{previous} -> {current}");
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate_per_second(500, 1_000_000_000), Some(500.0));
        assert_eq!(rate_per_second(500, 500_000_000), Some(1000.0));
        assert_eq!(rate_per_second(0, 1), Some(0.0));
        assert_eq!(rate_per_second(7, 0), None);
    }

    proptest! {
        #[test]
        fn delta_never_exceeds_current(previous: u64, current: u64) {
            prop_assert!(counter_delta(previous, current) <= current);
        }

        #[test]
        fn deltas_of_a_monotone_series_add_up(mut steps in proptest::collection::vec(0u64..1_000_000, 1..50), start in 0u64..1_000_000) {
            let mut values = vec![start];
            for step in steps.drain(..) {
                let last = values[values.len() - 1];
                values.push(last + step);
            }
            let sum: u64 = values.windows(2).map(|w| counter_delta(w[0], w[1])).sum();
            prop_assert_eq!(sum, values[values.len() - 1] - values[0]);
        }
    }
}
