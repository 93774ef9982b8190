//! Classification: this round's thresholds, whether a node's resource is abnormal or normal, and
//! the hysteresis that turns consecutive rounds into "source" and back.

use super::{
    loads::{index, Loads},
    policy::{Band, Classification, ThresholdMode},
    state::Hysteresis,
};
use crate::load::score::Resource;

/// The bands in force this round, per resource: absolute, or the policy's offsets added to the
/// mean of the nodes that measured the figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// (utilisation, pressure) in the order of [`Resource::ALL`].
    bands: [(Band, Band); 3],
}

/// What one round says about one node resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A measured figure is above its high threshold.
    Abnormal,
    /// Every measured figure is at or below its low threshold.
    Normal,
    /// Between the thresholds: neither counts.
    Between,
    /// Nothing measured: the counters stay as they are.
    Unknown,
}

impl Thresholds {
    /// `loads` are the fresh nodes' loads; only deviation mode looks at them.
    pub fn for_round<'a>(
        policy: &Classification,
        loads: impl Iterator<Item = &'a Loads> + Clone,
    ) -> Self {
        let bands = Resource::ALL.map(|resource| {
            let configured = policy.of(resource);
            let (utilisation, pressure) = match policy.mode {
                ThresholdMode::Absolute => (configured.utilisation, configured.pressure),
                ThresholdMode::Deviation => {
                    let mean = |pick: fn(&crate::load::score::ResourceLoad) -> Option<f64>| {
                        let (sum, count) = loads
                            .clone()
                            .filter_map(|l| pick(l.get(resource)))
                            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
                        if count == 0 {
                            0.0
                        } else {
                            sum / count as f64
                        }
                    };
                    let shift = |band: Band, by: f64| Band {
                        high: band.high + by,
                        low: band.low + by,
                    };
                    (
                        shift(configured.utilisation, mean(|l| l.utilisation)),
                        shift(configured.pressure, mean(|l| l.pressure)),
                    )
                }
            };
            (utilisation, pressure)
        });
        Self { bands }
    }

    /// (utilisation band, pressure band) of `resource`.
    pub fn of(&self, resource: Resource) -> (Band, Band) {
        self.bands[index(resource)]
    }

    pub fn verdict(&self, loads: &Loads, resource: Resource) -> Verdict {
        let (u_band, p_band) = self.of(resource);
        let load = loads.get(resource);
        let (mut measured, mut all_low) = (false, true);
        for (value, band) in [(load.utilisation, u_band), (load.pressure, p_band)] {
            let Some(value) = value else {
                continue;
            };
            if value > band.high {
                return Verdict::Abnormal;
            }
            measured = true;
            all_low &= value <= band.low;
        }
        match (measured, all_low) {
            (false, _) => Verdict::Unknown,
            (true, true) => Verdict::Normal,
            (true, false) => Verdict::Between,
        }
    }

    /// How loaded a resource is relative to its high thresholds: the larger of utilisation / high
    /// and pressure / high over the measured figures; `None` when nothing is measured. Above 1
    /// means abnormal.
    pub fn level(&self, loads: &Loads, resource: Resource) -> Option<f64> {
        let (u_band, p_band) = self.of(resource);
        let load = loads.get(resource);
        [(load.utilisation, u_band), (load.pressure, p_band)]
            .into_iter()
            .filter_map(|(value, band)| Some(relative(value?, band.high)))
            .reduce(f64::max)
    }

    /// [`Thresholds::level`] of every resource, in the order of [`Resource::ALL`]: one pass that
    /// says whether a node stays under its high thresholds (every level at most 1), how loaded it
    /// is (the highest) and how it scores.
    pub fn levels(&self, loads: &Loads) -> [Option<f64>; 3] {
        Resource::ALL.map(|r| self.level(loads, r))
    }

    /// The node's level: the highest of its resources (0 when nothing is measured).
    pub fn node_level(&self, loads: &Loads) -> f64 {
        Resource::ALL
            .iter()
            .filter_map(|r| self.level(loads, *r))
            .fold(0.0, f64::max)
    }

    /// Whether every measured figure of `resource` is at or under its low threshold: the target a
    /// source is relieved to.
    pub fn under_target(&self, loads: &Loads, resource: Resource) -> bool {
        matches!(
            self.verdict(loads, resource),
            Verdict::Normal | Verdict::Unknown
        )
    }
}

/// `value / high`; with a high of 0 or below (deviation mode around a mean of 0) any value above
/// it reads as `f64::MAX`. Either way the result is above 1 exactly when `value > high`, so a
/// level above 1 means abnormal, and it stays finite and ordered.
fn relative(value: f64, high: f64) -> f64 {
    if high > 0.0 {
        value / high
    } else if value > high {
        f64::MAX
    } else {
        0.0
    }
}

/// The next hysteresis state of one node resource.
///
/// Not a source: `abnormal_rounds` counts consecutive abnormal rounds (anything else resets it);
/// at `policy.abnormal_rounds` the resource becomes a source. A source: `normal_rounds` counts
/// consecutive normal rounds (anything else resets it); at `policy.normal_rounds` it is released.
/// An unknown round changes nothing.
pub fn step(previous: &Hysteresis, verdict: Verdict, policy: &Classification) -> Hysteresis {
    if verdict == Verdict::Unknown {
        return previous.clone();
    }
    if previous.source {
        if verdict != Verdict::Normal {
            return Hysteresis {
                source: true,
                abnormal_rounds: 0,
                normal_rounds: 0,
            };
        }
        let normal_rounds = previous.normal_rounds.saturating_add(1);
        if normal_rounds >= policy.normal_rounds {
            Hysteresis::default()
        } else {
            Hysteresis {
                source: true,
                abnormal_rounds: 0,
                normal_rounds,
            }
        }
    } else {
        if verdict != Verdict::Abnormal {
            return Hysteresis::default();
        }
        let abnormal_rounds = previous.abnormal_rounds.saturating_add(1);
        if abnormal_rounds >= policy.abnormal_rounds {
            Hysteresis {
                source: true,
                abnormal_rounds: 0,
                normal_rounds: 0,
            }
        } else {
            Hysteresis {
                source: false,
                abnormal_rounds,
                normal_rounds: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::load::score::ResourceLoad;

    fn figures(cpu_u: Option<f64>, cpu_p: Option<f64>) -> Loads {
        Loads::from_figures(&BTreeMap::from([(
            Resource::Cpu,
            ResourceLoad {
                utilisation: cpu_u,
                pressure: cpu_p,
            },
        )]))
    }

    fn absolute() -> Thresholds {
        let f: Vec<Loads> = Vec::new();
        Thresholds::for_round(&Classification::default(), f.iter())
    }

    #[test]
    fn verdicts_follow_the_bands() {
        let t = absolute();
        // Default cpu: utilisation 0.70..0.85, pressure 0.10..0.25.
        let v = |u, p| t.verdict(&figures(u, p), Resource::Cpu);
        assert_eq!(v(Some(0.9), None), Verdict::Abnormal);
        assert_eq!(v(Some(0.5), Some(0.3)), Verdict::Abnormal);
        assert_eq!(v(Some(0.5), Some(0.05)), Verdict::Normal);
        assert_eq!(v(Some(0.8), Some(0.05)), Verdict::Between);
        assert_eq!(v(Some(0.5), Some(0.2)), Verdict::Between);
        assert_eq!(v(None, None), Verdict::Unknown);
        assert_eq!(
            t.verdict(&figures(Some(0.99), None), Resource::Memory),
            Verdict::Unknown
        );
    }

    #[test]
    fn deviation_mode_shifts_bands_by_the_mean() {
        let policy = Classification {
            mode: ThresholdMode::Deviation,
            cpu: crate::rebalance::policy::ResourceThresholds {
                utilisation: Band {
                    high: 0.2,
                    low: 0.1,
                },
                pressure: Band {
                    high: 0.2,
                    low: 0.1,
                },
            },
            ..Classification::default()
        };
        let nodes = [
            figures(Some(0.2), None),
            figures(Some(0.4), None),
            figures(Some(0.9), None),
        ];
        let t = Thresholds::for_round(&policy, nodes.iter());
        // Mean 0.5: high 0.7, low 0.6.
        assert_eq!(t.verdict(&nodes[2], Resource::Cpu), Verdict::Abnormal);
        assert_eq!(t.verdict(&nodes[1], Resource::Cpu), Verdict::Normal);
        assert_eq!(
            t.verdict(&figures(Some(0.65), None), Resource::Cpu),
            Verdict::Between
        );
    }

    #[test]
    fn becomes_a_source_after_n_consecutive_abnormal_rounds() {
        let policy = Classification::default(); // 3 and 3
        let mut h = Hysteresis::default();
        for round in 1..=2 {
            h = step(&h, Verdict::Abnormal, &policy);
            assert!(!h.source);
            assert_eq!(h.abnormal_rounds, round);
        }
        h = step(&h, Verdict::Abnormal, &policy);
        assert!(h.source);
        assert_eq!(h.abnormal_rounds, 0);
    }

    #[test]
    fn a_non_abnormal_round_resets_the_abnormal_count() {
        let policy = Classification::default();
        for interruption in [Verdict::Between, Verdict::Normal] {
            let mut h = Hysteresis::default();
            h = step(&h, Verdict::Abnormal, &policy);
            h = step(&h, Verdict::Abnormal, &policy);
            h = step(&h, interruption, &policy);
            assert_eq!(h, Hysteresis::default());
            h = step(&h, Verdict::Abnormal, &policy);
            assert!(!h.source, "count restarted after {interruption:?}");
        }
    }

    #[test]
    fn a_source_is_released_after_m_consecutive_normal_rounds() {
        let policy = Classification {
            normal_rounds: 2,
            ..Classification::default()
        };
        let source = Hysteresis {
            source: true,
            ..Hysteresis::default()
        };
        let h = step(&source, Verdict::Normal, &policy);
        assert!(h.source);
        assert_eq!(h.normal_rounds, 1);
        let h = step(&h, Verdict::Normal, &policy);
        assert_eq!(h, Hysteresis::default());
    }

    #[test]
    fn a_source_stays_while_between_or_abnormal() {
        let policy = Classification::default();
        let counting = Hysteresis {
            source: true,
            abnormal_rounds: 0,
            normal_rounds: 2,
        };
        for verdict in [Verdict::Between, Verdict::Abnormal] {
            let h = step(&counting, verdict, &policy);
            assert!(h.source);
            assert_eq!(h.normal_rounds, 0, "{verdict:?} resets the normal count");
        }
    }

    #[test]
    fn an_unknown_round_changes_nothing() {
        let policy = Classification::default();
        for h in [
            Hysteresis {
                source: false,
                abnormal_rounds: 2,
                normal_rounds: 0,
            },
            Hysteresis {
                source: true,
                abnormal_rounds: 0,
                normal_rounds: 2,
            },
        ] {
            assert_eq!(step(&h, Verdict::Unknown, &policy), h);
        }
    }

    #[test]
    fn one_round_suffices_when_policy_says_one() {
        let policy = Classification {
            abnormal_rounds: 1,
            normal_rounds: 1,
            ..Classification::default()
        };
        let h = step(&Hysteresis::default(), Verdict::Abnormal, &policy);
        assert!(h.source);
        assert!(!step(&h, Verdict::Normal, &policy).source);
    }

    #[test]
    fn level_is_the_worse_figure_relative_to_high() {
        let t = absolute();
        let level = t.level(&figures(Some(0.425), Some(0.5)), Resource::Cpu);
        assert_eq!(level, Some(2.0)); // pressure 0.5 / 0.25
        assert_eq!(t.level(&figures(None, None), Resource::Cpu), None);
    }
}
