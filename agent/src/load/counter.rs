//! Cumulative counter arithmetic: deltas that survive resets, rates that refuse to invent a value
//! for an empty window, and a small keeper of the previous sample per key.
//!
//! The kernel (and cgroupfs) only ever hand out running totals; everything Ballast reasons about is
//! a rate over a window. Doing the subtraction in one place keeps the reset rule and the "no time,
//! no rate" rule identical for every signal. Pure: time comes in as arguments, nothing is read.

use std::{collections::HashMap, hash::Hash};

/// Increase of a cumulative counter from `previous` to `current`.
///
/// A counter that went down was reset: the cgroup was recreated under the same id, the agent
/// reloaded its maps, or a narrower (u32) or u64 source wrapped. It is treated as a new series that
/// started from zero, so the increase is `current` itself. That is what Prometheus' `rate()`
/// assumes; it under-counts by whatever happened between the last read and the reset, which is
/// unknowable, but it never produces the huge bogus value a wrapping subtraction would. Never
/// underflows.
pub fn counter_delta(previous: u64, current: u64) -> u64 {
    current.checked_sub(previous).unwrap_or(current)
}

/// `delta` per second over `interval_ns`.
///
/// `None` for an empty interval: no time passed, so there is no rate, and a made-up 0 would read
/// as "idle" to whoever consumes it.
pub fn rate_per_second(delta: u64, interval_ns: u64) -> Option<f64> {
    (interval_ns > 0).then(|| delta as f64 * 1e9 / interval_ns as f64)
}

/// Increase of one counter between two observations, and the time between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delta {
    /// Increase of the counter, reset-aware (see [`counter_delta`]).
    pub value: u64,
    /// Time between the two observations, ns; 0 when both carry the same timestamp.
    pub interval_ns: u64,
}

impl Delta {
    /// The increase per second; `None` when no time passed (see [`rate_per_second`]).
    pub fn per_second(&self) -> Option<f64> {
        rate_per_second(self.value, self.interval_ns)
    }
}

/// Last value and time seen for one key.
#[derive(Clone, Copy, Debug)]
struct Seen {
    value: u64,
    at_ns: u64,
}

/// Remembers the previous sample of a cumulative counter per key (for example a cgroup id), so
/// that each new reading turns into a [`Delta`].
///
/// One entry per live key and no allocation per observation once a key is known; keys that went
/// away are dropped with [`CounterTrack::retain`].
#[derive(Clone, Debug)]
pub struct CounterTrack<K> {
    last: HashMap<K, Seen>,
}

impl<K> Default for CounterTrack<K> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> CounterTrack<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `value` for `key`, read at `now_ns` (a monotonic clock, ns), and returns the change
    /// since the previous observation of the key.
    ///
    /// `None` on the first observation of a key, since a rate needs two points, and also when
    /// `now_ns` is earlier than the previous observation: a sample from the past means a
    /// discontinuity (or a caller bug), so the series restarts from this reading instead of
    /// pretending to know the interval. Equal timestamps give a delta with `interval_ns == 0`,
    /// whose [`Delta::per_second`] is `None`.
    pub fn observe(&mut self, key: K, value: u64, now_ns: u64) -> Option<Delta> {
        let seen = Seen {
            value,
            at_ns: now_ns,
        };
        let previous = self.last.insert(key, seen)?;
        let interval_ns = now_ns.checked_sub(previous.at_ns)?;
        Some(Delta {
            value: counter_delta(previous.value, value),
            interval_ns,
        })
    }

    /// Keeps only the keys for which `keep` is true, e.g. the cgroups that still exist, so that a
    /// removed cgroup neither leaks memory nor lends its old value to a recreated one.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.last.retain(|key, _| keep(key));
    }

    /// Number of keys remembered.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn deltas() {
        let u32_max = u64::from(u32::MAX);
        let cases = [
            // (previous, current, expected, why)
            (0, 0, 0, "nothing happened"),
            (5, 5, 0, "equal values"),
            (5, 9, 4, "normal increase"),
            (9, 5, 5, "reset: a new series from zero"),
            (9, 0, 0, "reset to exactly zero"),
            (u64::MAX - 1, u64::MAX, 1, "increase up to the u64 edge"),
            (0, u64::MAX, u64::MAX, "the largest possible increase"),
            (u64::MAX, u64::MAX, 0, "equal at the u64 edge"),
            (u64::MAX, 3, 3, "u64 source wrapped: read as a reset"),
            (u32_max - 2, 4, 4, "u32 source wrapped: read as a reset"),
            (
                u32_max,
                u32_max + 1,
                1,
                "a u32-sized value is nothing special in a u64",
            ),
        ];
        for (previous, current, want, why) in cases {
            assert_eq!(
                counter_delta(previous, current),
                want,
                "{previous} -> {current}: {why}"
            );
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate_per_second(500, 1_000_000_000), Some(500.0));
        assert_eq!(rate_per_second(500, 500_000_000), Some(1000.0));
        assert_eq!(rate_per_second(0, 1), Some(0.0));
        assert_eq!(rate_per_second(7, 0), None);
        assert_eq!(
            rate_per_second(0, 0),
            None,
            "an empty window has no rate, not a rate of 0"
        );
        assert_eq!(rate_per_second(u64::MAX, 1), Some(u64::MAX as f64 * 1e9));
    }

    #[test]
    fn track_needs_two_points_per_key() {
        let mut track = CounterTrack::new();
        assert!(track.is_empty());
        assert_eq!(track.observe(7u64, 100, 1_000), None);
        assert_eq!(
            track.observe(8u64, 5, 1_000),
            None,
            "each key starts its own series"
        );
        assert_eq!(
            track.observe(7, 150, 2_000),
            Some(Delta {
                value: 50,
                interval_ns: 1_000
            })
        );
        assert_eq!(
            track.observe(8, 6, 3_000),
            Some(Delta {
                value: 1,
                interval_ns: 2_000
            })
        );
        assert_eq!(track.len(), 2);
    }

    #[test]
    fn track_rates_resets_and_odd_clocks() {
        let mut track = CounterTrack::new();
        track.observe("a", 1_000, 0);
        let d = track.observe("a", 3_000, 500_000_000);
        assert_eq!(d.and_then(|d| d.per_second()), Some(4_000.0));
        // The cgroup was recreated: the new reading is the whole increase.
        assert_eq!(
            track.observe("a", 40, 1_000_000_000),
            Some(Delta {
                value: 40,
                interval_ns: 500_000_000
            })
        );
        // Same instant: a delta, but no rate.
        let same = track.observe("a", 40, 1_000_000_000);
        assert_eq!(
            same,
            Some(Delta {
                value: 0,
                interval_ns: 0
            })
        );
        assert_eq!(same.and_then(|d| d.per_second()), None);
        // A reading from the past restarts the series from there.
        assert_eq!(track.observe("a", 50, 10), None);
        assert_eq!(
            track.observe("a", 60, 20),
            Some(Delta {
                value: 10,
                interval_ns: 10
            })
        );
    }

    #[test]
    fn retain_forgets_removed_keys() {
        let mut track = CounterTrack::new();
        for id in 0u64..5 {
            track.observe(id, id * 10, 0);
        }
        track.retain(|id| id % 2 == 0);
        assert_eq!(track.len(), 3);
        assert_eq!(
            track.observe(1, 100, 10),
            None,
            "a forgotten key starts over"
        );
        assert_eq!(
            track.observe(2, 25, 10),
            Some(Delta {
                value: 5,
                interval_ns: 10
            })
        );
        track.retain(|_| false);
        assert!(track.is_empty());
    }

    /// A monotone series: a start and non-negative steps, small enough never to overflow.
    fn monotone() -> impl Strategy<Value = Vec<u64>> {
        (
            0u64..1 << 40,
            proptest::collection::vec(0u64..1 << 20, 1..50),
        )
            .prop_map(|(start, steps)| {
                steps
                    .iter()
                    .scan(start, |value, step| {
                        *value += step;
                        Some(*value)
                    })
                    .fold(vec![start], |mut values, v| {
                        values.push(v);
                        values
                    })
            })
    }

    proptest! {
        #[test]
        fn delta_never_exceeds_current(previous: u64, current: u64) {
            prop_assert!(counter_delta(previous, current) <= current);
        }

        #[test]
        fn delta_is_the_difference_when_not_reset(a: u64, b: u64) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert_eq!(counter_delta(lo, hi), hi - lo);
        }

        #[test]
        fn deltas_of_a_monotone_series_add_up(values in monotone()) {
            let sum: u64 = values.windows(2).map(|w| counter_delta(w[0], w[1])).sum();
            prop_assert_eq!(Some(sum), values.last().map(|last| last - values[0]));
        }

        #[test]
        fn track_deltas_add_up_and_intervals_cover_the_span(values in monotone(), tick in 1u64..1_000_000_000) {
            let mut track = CounterTrack::new();
            let mut sum = (0u64, 0u64);
            for (i, value) in values.iter().enumerate() {
                if let Some(d) = track.observe((), *value, i as u64 * tick) {
                    sum = (sum.0 + d.value, sum.1 + d.interval_ns);
                }
            }
            let span = (values.len() as u64 - 1) * tick;
            prop_assert_eq!(Some(sum), values.last().map(|last| (last - values[0], span)));
        }
    }
}
