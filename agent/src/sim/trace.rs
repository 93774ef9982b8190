//! Load traces: how much of a resource one replica demands over time, as a sum of simple
//! components (a constant level, a daily wave, periodic spikes, a ramp, noise). The sum is
//! clipped at zero. Noise comes from counter-based draws, so a replica's demand at a given time is
//! the same whichever node it runs on and whichever policy moved it.

use std::f64::consts::TAU;

use serde::{Deserialize, Serialize};

use super::rng;

/// One term of a trace. In a scenario file: `cpu = [{ constant = 0.4 }, { noise = 0.05 }]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Component {
    /// A fixed level.
    Constant(f64),
    /// `amplitude * sin(2π (t + phase) / period)`: a day compressed to `period_seconds`.
    Diurnal {
        amplitude: f64,
        period_seconds: f64,
        #[serde(default)]
        phase_seconds: f64,
    },
    /// `height` for `duration_seconds` out of every `every_seconds`, starting at `offset_seconds`.
    Spikes {
        height: f64,
        every_seconds: f64,
        duration_seconds: f64,
        #[serde(default)]
        offset_seconds: f64,
    },
    /// 0 until `start_seconds`, rising linearly to `to` at `end_seconds`, then staying there
    /// (a leak, a cache warming up, traffic moving over).
    Ramp {
        to: f64,
        start_seconds: f64,
        end_seconds: f64,
    },
    /// Uniform noise in `-amplitude..amplitude`, drawn anew at every tick.
    Noise(f64),
}

/// Why a trace cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TraceError {
    #[error("component {index} has a value that is not a finite number")]
    NotFinite { index: usize },
    #[error("component {index}: period_seconds must be > 0")]
    Period { index: usize },
    #[error("component {index}: spikes need every_seconds > 0 and 0 <= duration_seconds <= every_seconds")]
    Spikes { index: usize },
    #[error("component {index}: a ramp needs end_seconds > start_seconds")]
    Ramp { index: usize },
    #[error("component {index}: noise amplitude must be >= 0")]
    Noise { index: usize },
}

/// A replica's demand of one resource over time: the sum of its components, at least 0.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Trace(pub Vec<Component>);

impl Trace {
    pub fn constant(value: f64) -> Self {
        Self(vec![Component::Constant(value)])
    }

    pub fn validate(&self) -> Result<(), TraceError> {
        for (index, component) in self.0.iter().enumerate() {
            let numbers: &[f64] = match component {
                Component::Constant(v) | Component::Noise(v) => &[*v],
                Component::Diurnal {
                    amplitude,
                    period_seconds,
                    phase_seconds,
                } => &[*amplitude, *period_seconds, *phase_seconds],
                Component::Spikes {
                    height,
                    every_seconds,
                    duration_seconds,
                    offset_seconds,
                } => &[*height, *every_seconds, *duration_seconds, *offset_seconds],
                Component::Ramp {
                    to,
                    start_seconds,
                    end_seconds,
                } => &[*to, *start_seconds, *end_seconds],
            };
            if !numbers.iter().all(|v| v.is_finite()) {
                return Err(TraceError::NotFinite { index });
            }
            match component {
                Component::Diurnal { period_seconds, .. } if *period_seconds <= 0.0 => {
                    return Err(TraceError::Period { index })
                }
                Component::Spikes {
                    every_seconds,
                    duration_seconds,
                    ..
                } if *every_seconds <= 0.0
                    || *duration_seconds < 0.0
                    || duration_seconds > every_seconds =>
                {
                    return Err(TraceError::Spikes { index })
                }
                Component::Ramp {
                    start_seconds,
                    end_seconds,
                    ..
                } if end_seconds <= start_seconds => return Err(TraceError::Ramp { index }),
                Component::Noise(amplitude) if *amplitude < 0.0 => {
                    return Err(TraceError::Noise { index })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The demand at `seconds` into the run, for the replica whose noise stream is `stream`;
    /// `tick` numbers the draw (one per simulation tick).
    pub fn at(&self, seconds: f64, seed: u64, stream: u64, tick: u64) -> f64 {
        let sum: f64 = self
            .0
            .iter()
            .enumerate()
            .map(|(index, component)| match component {
                Component::Constant(v) => *v,
                Component::Diurnal {
                    amplitude,
                    period_seconds,
                    phase_seconds,
                } => amplitude * (TAU * (seconds + phase_seconds) / period_seconds).sin(),
                Component::Spikes {
                    height,
                    every_seconds,
                    duration_seconds,
                    offset_seconds,
                } => {
                    let since = seconds - offset_seconds;
                    if since >= 0.0 && since.rem_euclid(*every_seconds) < *duration_seconds {
                        *height
                    } else {
                        0.0
                    }
                }
                Component::Ramp {
                    to,
                    start_seconds,
                    end_seconds,
                } => {
                    let progress =
                        ((seconds - start_seconds) / (end_seconds - start_seconds)).clamp(0.0, 1.0);
                    to * progress
                }
                Component::Noise(amplitude) => {
                    // Each noise component has its own draws: several may be stacked.
                    let draw = rng::unit(seed, stream, tick.wrapping_mul(16) + index as u64);
                    amplitude * (2.0 * draw - 1.0)
                }
            })
            .sum();
        sum.max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(trace: &Trace, seconds: f64) -> f64 {
        trace.at(seconds, 1, 2, seconds as u64)
    }

    #[test]
    fn components_add_up_and_clip_at_zero() {
        let trace = Trace(vec![
            Component::Constant(1.0),
            Component::Diurnal {
                amplitude: 0.5,
                period_seconds: 400.0,
                phase_seconds: 0.0,
            },
        ]);
        assert!((at(&trace, 0.0) - 1.0).abs() < 1e-9);
        assert!((at(&trace, 100.0) - 1.5).abs() < 1e-9);
        assert!((at(&trace, 300.0) - 0.5).abs() < 1e-9);
        let negative = Trace(vec![Component::Constant(-1.0)]);
        assert_eq!(at(&negative, 5.0), 0.0);
    }

    #[test]
    fn spikes_and_ramps_follow_their_windows() {
        let spikes = Trace(vec![Component::Spikes {
            height: 2.0,
            every_seconds: 100.0,
            duration_seconds: 20.0,
            offset_seconds: 50.0,
        }]);
        assert_eq!(at(&spikes, 40.0), 0.0);
        assert_eq!(at(&spikes, 60.0), 2.0);
        assert_eq!(at(&spikes, 80.0), 0.0);
        assert_eq!(at(&spikes, 165.0), 2.0);
        let ramp = Trace(vec![Component::Ramp {
            to: 4.0,
            start_seconds: 100.0,
            end_seconds: 200.0,
        }]);
        assert_eq!(at(&ramp, 50.0), 0.0);
        assert_eq!(at(&ramp, 150.0), 2.0);
        assert_eq!(at(&ramp, 500.0), 4.0);
    }

    #[test]
    fn noise_is_bounded_reproducible_and_per_replica() {
        let trace = Trace(vec![Component::Constant(1.0), Component::Noise(0.2)]);
        let values: Vec<f64> = (0..200).map(|t| trace.at(t as f64, 9, 1, t)).collect();
        assert!(values.iter().all(|v| (0.8..=1.2).contains(v)));
        assert!(values.iter().any(|v| (v - 1.0).abs() > 0.1));
        assert_eq!(trace.at(3.0, 9, 1, 3), values[3]);
        assert_ne!(trace.at(3.0, 9, 2, 3), values[3]);
    }

    #[test]
    fn bad_components_are_named() {
        let cases = [
            (
                Component::Constant(f64::NAN),
                TraceError::NotFinite { index: 1 },
            ),
            (
                Component::Diurnal {
                    amplitude: 1.0,
                    period_seconds: 0.0,
                    phase_seconds: 0.0,
                },
                TraceError::Period { index: 1 },
            ),
            (
                Component::Spikes {
                    height: 1.0,
                    every_seconds: 10.0,
                    duration_seconds: 20.0,
                    offset_seconds: 0.0,
                },
                TraceError::Spikes { index: 1 },
            ),
            (
                Component::Ramp {
                    to: 1.0,
                    start_seconds: 10.0,
                    end_seconds: 10.0,
                },
                TraceError::Ramp { index: 1 },
            ),
            (Component::Noise(-0.1), TraceError::Noise { index: 1 }),
        ];
        for (component, error) in cases {
            let trace = Trace(vec![Component::Constant(1.0), component]);
            assert_eq!(trace.validate(), Err(error));
        }
        assert_eq!(Trace::constant(1.0).validate(), Ok(()));
    }
}
