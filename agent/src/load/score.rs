//! Load scores: one window's figures per resource in, a score with a one-line reason out.
//!
//! Each resource (CPU, memory, network) has two figures. Utilisation is how much of what is
//! allocatable is in use: it measures headroom. Pressure is how much work is already being slowed
//! down (run-queue wait, reclaim stall, retransmits): it measures harm. Both feed the score;
//! pressure is divided by a per-resource scale, the value that counts as "fully pressured", so the
//! three resources can be compared. A figure that was not measured is left out and the remaining
//! ones are renormalised: a missing measurement must never read as an idle resource.
//!
//! CFS throttling is the subject hitting its own CPU limit; moving it to another node does not help
//! it, so it is named in the reason but never counted in a pressure or a score.
//!
//! Pure: no I/O, no clock, no logging. Time comes in as `now_ns`, monotonic nanoseconds.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

/// Utilisation counts up to this much in a score: an over-committed subject (cores used above its
/// limit, bursting network) scores higher than a full one, but one absurd reading cannot swamp the
/// other resources. Scores therefore lie in 0..=2, and above 1 only when over capacity.
const UTILISATION_CAP: f64 = 2.0;

/// Normalised pressure counts up to this much: past its scale a resource is simply "fully
/// pressured"; how far past is shown in [`ResourceScore::pressure_normalised`].
const PRESSURE_CAP: f64 = 1.0;

/// A resource the score covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Memory,
    Network,
}

impl Resource {
    /// Every resource, in the order used for listings and to break ties.
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Memory, Resource::Network];

    /// The lowercase name used in JSON, metric labels and text.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Network => "network",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was measured of one subject (a container or a node) over one window. `None` means "not
/// measured", never zero.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadInputs {
    /// CPU time used per second: 1.0 is one full core.
    pub cores_used: Option<f64>,
    /// A node's CPUs; a container's CPU limit, `None` when it has none.
    pub cores_allocatable: Option<f64>,
    /// Seconds of run-queue wait per second of CPU used: contention from neighbours.
    pub runqueue_wait_per_cpu_second: Option<f64>,
    /// Share of CFS periods throttled (0..=1). Self-inflicted by the CPU limit: reported, never
    /// counted (see [`score`]).
    pub throttled_share: Option<f64>,
    pub working_set_bytes: Option<f64>,
    pub memory_allocatable_bytes: Option<f64>,
    /// Seconds stalled in memory reclaim per second of wall time.
    pub reclaim_stall_per_second: Option<f64>,
    pub network_bytes_per_second: Option<f64>,
    /// Link or shaped capacity; often unknown.
    pub network_capacity_bytes_per_second: Option<f64>,
    pub retransmits_per_second: Option<f64>,
    pub packets_per_second: Option<f64>,
}

/// The two figures of one resource. `None` means "not measured".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceLoad {
    /// Used / allocatable; above 1 when over capacity.
    pub utilisation: Option<f64>,
    /// Contention in the resource's own unit (see [`resource_loads`]).
    pub pressure: Option<f64>,
}

/// Utilisation and pressure of every resource, all three always present:
/// - cpu: cores used / cores allocatable; pressure = run-queue wait per CPU-second.
/// - memory: working set / allocatable bytes; pressure = reclaim stall per second.
/// - network: bytes per second / capacity; pressure = retransmits per packet.
///
/// The retransmit ratio needs a packet count: `Some(0.0)` when packets were measured and there
/// were no retransmits (even with no packets: nothing was lost), `None` when packets or
/// retransmits are unknown, or when retransmits were counted against zero packets (the two
/// counters disagree, so no ratio can be formed).
pub fn resource_loads(inputs: &LoadInputs) -> BTreeMap<Resource, ResourceLoad> {
    let retransmit_ratio = match (
        measured(inputs.retransmits_per_second),
        measured(inputs.packets_per_second),
    ) {
        (Some(0.0), Some(_)) => Some(0.0),
        (Some(retransmits), Some(packets)) => ratio(retransmits, packets),
        _ => None,
    };
    BTreeMap::from([
        (
            Resource::Cpu,
            ResourceLoad {
                utilisation: share(inputs.cores_used, inputs.cores_allocatable),
                pressure: measured(inputs.runqueue_wait_per_cpu_second),
            },
        ),
        (
            Resource::Memory,
            ResourceLoad {
                utilisation: share(inputs.working_set_bytes, inputs.memory_allocatable_bytes),
                pressure: measured(inputs.reclaim_stall_per_second),
            },
        ),
        (
            Resource::Network,
            ResourceLoad {
                utilisation: share(
                    inputs.network_bytes_per_second,
                    inputs.network_capacity_bytes_per_second,
                ),
                pressure: retransmit_ratio,
            },
        ),
    ])
}

/// A figure as measured. NaN, infinite or negative values cannot come from a real measurement of
/// these quantities, so they count as "not measured" instead of poisoning a score.
fn measured(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

/// `numerator / denominator` for a finite, non-negative numerator; `None` without a positive
/// denominator (no capacity, no share). Saturates at `f64::MAX` rather than becoming infinite, so
/// the result stays ordered and serialisable (JSON has no infinity).
fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| (numerator / denominator).min(f64::MAX))
}

fn share(used: Option<f64>, capacity: Option<f64>) -> Option<f64> {
    ratio(measured(used)?, measured(capacity)?)
}

/// Exponentially weighted moving average over irregular time steps.
///
/// An update `dt` after the previous one has weight `1 - 2^(-dt / half_life)`, so after one
/// half-life a step input has moved the average halfway, whatever the sampling rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    half_life_ns: u64,
    value: Option<f64>,
    /// Time of the latest update that carried a value; meaningless while `value` is `None`.
    updated_ns: u64,
}

impl Ewma {
    /// A half-life of 0 means no smoothing: every update replaces the value.
    pub fn new(half_life_ns: u64) -> Self {
        Self {
            half_life_ns,
            value: None,
            updated_ns: 0,
        }
    }

    /// The average; `None` until a value has been seen.
    pub fn value(&self) -> Option<f64> {
        self.value
    }

    /// Folds in `value` observed at `now_ns`. The first value is taken as is. `None` (and a
    /// non-finite value) leaves the average and its time untouched, so the next real value weighs
    /// in with the whole gap. An update at the same instant or earlier than the previous one has
    /// weight 0: time that did not pass cannot move the average, and the latest time is kept so a
    /// stray timestamp from the past does not inflate the next step.
    pub fn update(&mut self, value: Option<f64>, now_ns: u64) {
        let Some(x) = value.filter(|v| v.is_finite()) else {
            return;
        };
        let Some(v) = self.value else {
            self.value = Some(x);
            self.updated_ns = now_ns;
            return;
        };
        let dt_ns = now_ns.saturating_sub(self.updated_ns);
        let weight = if dt_ns == 0 {
            0.0
        } else {
            // With a half-life of 0 the exponent is -inf and the weight 1, never 0/0.
            1.0 - (-(dt_ns as f64) / self.half_life_ns as f64).exp2()
        };
        // The convex form cannot overflow for finite inputs, unlike `v + w * (x - v)`; the clamp
        // removes the last-bit rounding that could otherwise step outside [v, x].
        let next = v * (1.0 - weight) + x * weight;
        self.value = Some(next.clamp(v.min(x), v.max(x)));
        self.updated_ns = self.updated_ns.max(now_ns);
    }
}

/// Smoothed utilisation and pressure of one resource.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct ResourceAverages {
    utilisation: Ewma,
    pressure: Ewma,
}

/// The last window's figures and their moving averages, per resource.
///
/// A figure that stops being measured keeps its last average; whoever holds this decides how old
/// is too old (e.g. by when the subject was last seen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmoothedLoad {
    half_life_ns: u64,
    raw: BTreeMap<Resource, ResourceLoad>,
    averages: BTreeMap<Resource, ResourceAverages>,
}

impl SmoothedLoad {
    pub fn new(half_life_ns: u64) -> Self {
        Self {
            half_life_ns,
            raw: BTreeMap::new(),
            averages: BTreeMap::new(),
        }
    }

    /// Records one window's figures, taken at `now_ns`.
    pub fn update(&mut self, loads: &BTreeMap<Resource, ResourceLoad>, now_ns: u64) {
        for (resource, load) in loads {
            let averages = self
                .averages
                .entry(*resource)
                .or_insert_with(|| ResourceAverages {
                    utilisation: Ewma::new(self.half_life_ns),
                    pressure: Ewma::new(self.half_life_ns),
                });
            averages.utilisation.update(load.utilisation, now_ns);
            averages.pressure.update(load.pressure, now_ns);
        }
        self.raw.clone_from(loads);
    }

    /// The figures of the last window, unsmoothed.
    pub fn raw(&self) -> &BTreeMap<Resource, ResourceLoad> {
        &self.raw
    }

    /// The averages of every resource; `None` where nothing was ever measured.
    pub fn smoothed(&self) -> BTreeMap<Resource, ResourceLoad> {
        Resource::ALL
            .iter()
            .map(|resource| {
                let load = self
                    .averages
                    .get(resource)
                    .map(|a| ResourceLoad {
                        utilisation: a.utilisation.value(),
                        pressure: a.pressure.value(),
                    })
                    .unwrap_or_default();
                (*resource, load)
            })
            .collect()
    }
}

/// How much each resource counts in the total score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreWeights {
    pub cpu: f64,
    pub memory: f64,
    pub network: f64,
}

impl ScoreWeights {
    fn of(&self, resource: Resource) -> f64 {
        match resource {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Network => self.network,
        }
    }
}

/// How one resource's score is made of its two figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceTerms {
    pub utilisation_weight: f64,
    pub pressure_weight: f64,
    /// The pressure that counts as "fully pressured", in the resource's pressure unit.
    pub pressure_scale: f64,
}

/// Everything the score and the smoothing depend on. Check it with [`ScoreConfig::validate`]
/// before use; [`score`] never panics or returns NaN on a bad one, but its numbers mean nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreConfig {
    pub weights: ScoreWeights,
    pub cpu: ResourceTerms,
    pub memory: ResourceTerms,
    pub network: ResourceTerms,
    /// Half-life of the moving averages ([`SmoothedLoad`]), ns.
    pub half_life_ns: u64,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            // CPU and memory are what pod requests and limits describe and what moving a pod
            // relieves; network counts half, since capacity is often unknown and retransmits can
            // come from far away.
            weights: ScoreWeights {
                cpu: 1.0,
                memory: 1.0,
                network: 0.5,
            },
            // Pressure counts twice utilisation for CPU and memory: it is harm already done, while
            // a busy subject that nobody waits on is doing fine.
            cpu: ResourceTerms {
                utilisation_weight: 1.0,
                pressure_weight: 2.0,
                // Half a second of waiting per second of work: everything runs about 1.5x slower.
                pressure_scale: 0.5,
            },
            memory: ResourceTerms {
                utilisation_weight: 1.0,
                pressure_weight: 2.0,
                // 5% of the time stalled in reclaim is already a badly thrashing workload.
                pressure_scale: 0.05,
            },
            network: ResourceTerms {
                utilisation_weight: 1.0,
                pressure_weight: 1.0,
                // 1% loss already cuts TCP throughput several-fold (throughput ~ 1/sqrt(loss)).
                pressure_scale: 0.01,
            },
            // 30 s: a one-second spike barely moves the average (about 2%), a sustained change
            // shows at 90% within about 100 s, well before a rebalancing round acts on it.
            half_life_ns: 30_000_000_000,
        }
    }
}

/// Why a [`ScoreConfig`] cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ScoreConfigError {
    #[error("score config: {field} must be a finite number >= 0, got {value}")]
    BadWeight { field: String, value: f64 },
    #[error("score config: weights.cpu, weights.memory and weights.network are all 0; at least one must be > 0")]
    NoResourceWeight,
    #[error("score config: {resource}.utilisation_weight and {resource}.pressure_weight are both 0; at least one must be > 0")]
    NoTermWeight { resource: Resource },
    #[error("score config: {resource}.pressure_scale (the pressure that counts as fully pressured) must be a finite number > 0, got {value}")]
    BadPressureScale { resource: Resource, value: f64 },
    #[error("score config: half_life_ns must be > 0")]
    ZeroHalfLife,
}

impl ScoreConfig {
    /// The terms of one resource.
    pub fn terms(&self, resource: Resource) -> &ResourceTerms {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
            Resource::Network => &self.network,
        }
    }

    /// Checks that every weight is finite and >= 0 with at least one > 0 in each group, that every
    /// pressure scale is finite and > 0, and that the half-life is > 0. Reports the first problem.
    pub fn validate(&self) -> Result<(), ScoreConfigError> {
        let weight = |field: String, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(value)
            } else {
                Err(ScoreConfigError::BadWeight { field, value })
            }
        };
        let mut resource_weights = 0.0;
        for resource in Resource::ALL {
            resource_weights += weight(format!("weights.{resource}"), self.weights.of(resource))?;
        }
        if resource_weights == 0.0 {
            return Err(ScoreConfigError::NoResourceWeight);
        }
        for resource in Resource::ALL {
            let terms = self.terms(resource);
            let utilisation = weight(
                format!("{resource}.utilisation_weight"),
                terms.utilisation_weight,
            )?;
            let pressure = weight(format!("{resource}.pressure_weight"), terms.pressure_weight)?;
            if utilisation == 0.0 && pressure == 0.0 {
                return Err(ScoreConfigError::NoTermWeight { resource });
            }
            if !(terms.pressure_scale.is_finite() && terms.pressure_scale > 0.0) {
                return Err(ScoreConfigError::BadPressureScale {
                    resource,
                    value: terms.pressure_scale,
                });
            }
        }
        if self.half_life_ns == 0 {
            return Err(ScoreConfigError::ZeroHalfLife);
        }
        Ok(())
    }
}

/// The score of one resource and what it was made of.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceScore {
    /// In 0..=2, above 1 only when over capacity; `None` when neither figure was measured.
    pub score: Option<f64>,
    pub utilisation: Option<f64>,
    pub pressure: Option<f64>,
    /// Pressure / scale, uncapped (the score counts at most 1).
    pub pressure_normalised: Option<f64>,
}

/// The load score of a subject (a container or a node).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadScore {
    /// Weighted mean of the measured resource scores, in 0..=2; `None` when nothing counted was
    /// measured.
    pub score: Option<f64>,
    /// Every resource, measured or not.
    pub per_resource: BTreeMap<Resource, ResourceScore>,
    /// As given (`None` when outside 0..=1), for display next to the score; never part of it.
    pub throttled_share: Option<f64>,
    /// One line for a human, the resource that weighs most first.
    pub reason: String,
}

/// Scores `loads` (typically [`resource_loads`] or [`SmoothedLoad::smoothed`]).
///
/// Per resource: `(uw * min(utilisation, 2) + pw * min(pressure / scale, 1)) / (uw + pw)` over the
/// measured terms only. Total: the mean of the measured resource scores weighted by
/// [`ScoreConfig::weights`], again over the measured ones. A term or resource with weight 0 is left
/// out entirely: to the score, a figure that does not count is the same as one not measured.
/// `throttled_share` only appears in the reason and in [`LoadScore::throttled_share`].
pub fn score(
    loads: &BTreeMap<Resource, ResourceLoad>,
    throttled_share: Option<f64>,
    config: &ScoreConfig,
) -> LoadScore {
    let per_resource: BTreeMap<Resource, ResourceScore> = Resource::ALL
        .iter()
        .map(|resource| {
            let load = loads.get(resource).cloned().unwrap_or_default();
            (*resource, resource_score(&load, config.terms(*resource)))
        })
        .collect();
    let total = weighted_mean(
        per_resource
            .iter()
            .map(|(resource, s)| (config.weights.of(*resource), s.score)),
    );
    // A share outside 0..=1 is no measurement (see `measured`).
    let throttled_share = measured(throttled_share).filter(|share| *share <= 1.0);
    LoadScore {
        reason: reason(total, &per_resource, throttled_share, config),
        score: total,
        per_resource,
        throttled_share,
    }
}

fn resource_score(load: &ResourceLoad, terms: &ResourceTerms) -> ResourceScore {
    let utilisation = measured(load.utilisation);
    let pressure = measured(load.pressure);
    let pressure_normalised = pressure.and_then(|p| ratio(p, terms.pressure_scale));
    let score = weighted_mean([
        (
            terms.utilisation_weight,
            utilisation.map(|u| u.min(UTILISATION_CAP)),
        ),
        (
            terms.pressure_weight,
            pressure_normalised.map(|n| n.min(PRESSURE_CAP)),
        ),
    ]);
    ResourceScore {
        score,
        utilisation,
        pressure,
        pressure_normalised,
    }
}

/// Mean of the measured values with a positive weight, weighted and renormalised over them; `None`
/// when there are none. The final check only matters for an unvalidated config (infinite
/// weights), where the answer would otherwise be NaN.
fn weighted_mean(terms: impl IntoIterator<Item = (f64, Option<f64>)>) -> Option<f64> {
    let (sum, total) = terms
        .into_iter()
        .filter_map(|(weight, value)| Some((weight, value?)))
        .filter(|(weight, _)| *weight > 0.0)
        .fold((0.0, 0.0), |(sum, total), (weight, value)| {
            (sum + weight * value, total + weight)
        });
    (total > 0.0)
        .then(|| sum / total)
        .filter(|mean| mean.is_finite())
}

/// E.g. `score 0.62: cpu 0.81 (utilisation 0.70, contention 0.46 s wait per cpu-second = 0.92 of
/// scale), memory 0.35 (...); network not measured; throttled 40% of periods (own CPU limit, not
/// counted)`.
fn reason(
    total: Option<f64>,
    per_resource: &BTreeMap<Resource, ResourceScore>,
    throttled_share: Option<f64>,
    config: &ScoreConfig,
) -> String {
    let mut scored: Vec<(Resource, &ResourceScore, f64)> = per_resource
        .iter()
        .filter_map(|(resource, s)| Some((*resource, s, s.score?)))
        .collect();
    // Dominant first: the largest share of the total (weight x score), then the higher score; the
    // sort is stable, so full ties keep the resource order.
    let weight = |resource: Resource| config.weights.of(resource);
    scored.sort_by(|(ra, _, a), (rb, _, b)| {
        (weight(*rb) * b)
            .total_cmp(&(weight(*ra) * a))
            .then(b.total_cmp(a))
    });
    let mut sections = Vec::new();
    if !scored.is_empty() {
        let parts: Vec<String> = scored
            .iter()
            .map(|(resource, s, value)| {
                let not_counted = if weight(*resource) > 0.0 {
                    ""
                } else {
                    "weight 0, not counted; "
                };
                format!(
                    "{resource} {value:.2} ({not_counted}{}, {})",
                    describe_utilisation(s.utilisation),
                    describe_pressure(*resource, s.pressure, s.pressure_normalised),
                )
            })
            .collect();
        sections.push(parts.join(", "));
    }
    let unmeasured: Vec<String> = per_resource
        .iter()
        .filter(|(_, s)| s.score.is_none())
        .map(|(resource, _)| resource.to_string())
        .collect();
    if !unmeasured.is_empty() {
        sections.push(format!("{} not measured", unmeasured.join(", ")));
    }
    if let Some(share) = throttled_share.filter(|s| *s > 0.0) {
        let percent = share * 100.0;
        // "0%" would contradict mentioning it at all.
        let percent = if percent < 1.0 {
            "<1".to_owned()
        } else {
            format!("{percent:.0}")
        };
        sections.push(format!(
            "throttled {percent}% of periods (own CPU limit, not counted)"
        ));
    }
    let head = match total {
        Some(total) => format!("score {total:.2}"),
        None => "no score".to_owned(),
    };
    format!("{head}: {}", sections.join("; "))
}

fn describe_utilisation(utilisation: Option<f64>) -> String {
    match utilisation {
        Some(u) if u > UTILISATION_CAP => {
            format!("utilisation {}, counted as {UTILISATION_CAP}", number(u, 2))
        }
        Some(u) => format!("utilisation {}", number(u, 2)),
        None => "utilisation not measured".to_owned(),
    }
}

fn describe_pressure(resource: Resource, pressure: Option<f64>, normalised: Option<f64>) -> String {
    let what = match resource {
        Resource::Cpu => "contention",
        Resource::Memory => "reclaim stall",
        Resource::Network => "retransmits",
    };
    let (Some(p), Some(n)) = (pressure, normalised) else {
        return format!("{what} not measured");
    };
    // Each resource in the unit and precision its scale is usually written in.
    let value = match resource {
        Resource::Cpu => format!("{} s wait per cpu-second", number(p, 2)),
        Resource::Memory => format!("{} s per second", number(p, 3)),
        Resource::Network => format!("{}% of packets", number((p * 100.0).min(f64::MAX), 2)),
    };
    let capped = if n > PRESSURE_CAP {
        format!(", counted as {PRESSURE_CAP}")
    } else {
        String::new()
    };
    format!("{what} {value} = {} of scale{capped}", number(n, 2))
}

/// `value` with `decimals` decimals, or in scientific notation once it is large: a broken or
/// absurd reading must not turn the one-line reason into a 300-digit number.
fn number(value: f64, decimals: usize) -> String {
    if value < 1e6 {
        format!("{value:.decimals$}")
    } else {
        format!("{value:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    /// Every figure measured, with the example of the module docs' CPU numbers.
    fn busy_node() -> LoadInputs {
        LoadInputs {
            cores_used: Some(1.4),
            cores_allocatable: Some(2.0),
            runqueue_wait_per_cpu_second: Some(0.46),
            throttled_share: None,
            working_set_bytes: Some(4e9),
            memory_allocatable_bytes: Some(8e9),
            reclaim_stall_per_second: Some(0.01),
            network_bytes_per_second: Some(3e7),
            network_capacity_bytes_per_second: Some(1e8),
            retransmits_per_second: Some(4.0),
            packets_per_second: Some(1000.0),
        }
    }

    #[test]
    fn cpu_figures() {
        let loads = resource_loads(&busy_node());
        let cpu = &loads[&Resource::Cpu];
        assert!(close(cpu.utilisation, 0.7));
        assert_eq!(cpu.pressure, Some(0.46));
        let no_limit = LoadInputs {
            cores_allocatable: None,
            ..busy_node()
        };
        assert_eq!(
            resource_loads(&no_limit)[&Resource::Cpu].utilisation,
            None,
            "a container without a CPU limit has no CPU utilisation, not 0"
        );
    }

    #[test]
    fn memory_figures() {
        let loads = resource_loads(&busy_node());
        let memory = &loads[&Resource::Memory];
        assert!(close(memory.utilisation, 0.5));
        assert_eq!(memory.pressure, Some(0.01));
    }

    #[test]
    fn network_figures() {
        let net = |retransmits, packets| {
            resource_loads(&LoadInputs {
                retransmits_per_second: retransmits,
                packets_per_second: packets,
                ..busy_node()
            })[&Resource::Network]
                .pressure
        };
        assert!(close(
            resource_loads(&busy_node())[&Resource::Network].utilisation,
            0.3
        ));
        assert!(close(net(Some(4.0), Some(1000.0)), 0.004));
        assert_eq!(net(Some(0.0), Some(1000.0)), Some(0.0));
        assert_eq!(
            net(Some(0.0), Some(0.0)),
            Some(0.0),
            "measured silence: nothing lost"
        );
        assert_eq!(
            net(Some(3.0), Some(0.0)),
            None,
            "retransmits against no packets: no ratio"
        );
        assert_eq!(net(Some(0.0), None), None, "packets unknown");
        assert_eq!(net(None, Some(1000.0)), None, "retransmits unknown");
        let no_capacity = LoadInputs {
            network_capacity_bytes_per_second: None,
            ..busy_node()
        };
        assert_eq!(
            resource_loads(&no_capacity)[&Resource::Network].utilisation,
            None
        );
    }

    #[test]
    fn nothing_measured_is_none_everywhere() {
        let loads = resource_loads(&LoadInputs::default());
        assert_eq!(loads.len(), 3, "every resource is listed");
        assert!(loads.values().all(|l| *l == ResourceLoad::default()));
        let scored = score(&loads, None, &ScoreConfig::default());
        assert_eq!(scored.score, None, "nothing measured is not idle");
        assert!(scored.per_resource.values().all(|s| s.score.is_none()
            && s.utilisation.is_none()
            && s.pressure.is_none()
            && s.pressure_normalised.is_none()));
        assert_eq!(scored.reason, "no score: cpu, memory, network not measured");
        assert_eq!(
            score(&BTreeMap::new(), None, &ScoreConfig::default()),
            scored,
            "a missing resource is the same as an unmeasured one"
        );
    }

    #[test]
    fn impossible_values_are_not_measurements() {
        for bad in [f64::NAN, f64::INFINITY, -1.0] {
            let inputs = LoadInputs {
                cores_used: Some(bad),
                cores_allocatable: Some(2.0),
                runqueue_wait_per_cpu_second: Some(bad),
                working_set_bytes: Some(1.0),
                memory_allocatable_bytes: Some(bad),
                ..LoadInputs::default()
            };
            let loads = resource_loads(&inputs);
            assert_eq!(loads[&Resource::Cpu], ResourceLoad::default(), "{bad}");
            assert_eq!(loads[&Resource::Memory].utilisation, None, "{bad}");
        }
        let zero_capacity = LoadInputs {
            cores_used: Some(0.5),
            cores_allocatable: Some(0.0),
            ..LoadInputs::default()
        };
        assert_eq!(
            resource_loads(&zero_capacity)[&Resource::Cpu].utilisation,
            None
        );
        let tiny_capacity = LoadInputs {
            cores_used: Some(1e300),
            cores_allocatable: Some(1e-300),
            ..LoadInputs::default()
        };
        assert_eq!(
            resource_loads(&tiny_capacity)[&Resource::Cpu].utilisation,
            Some(f64::MAX),
            "saturates instead of turning infinite"
        );
    }

    #[test]
    fn resource_score_formula() {
        let config = ScoreConfig::default();
        let load = |utilisation, pressure| {
            BTreeMap::from([(
                Resource::Cpu,
                ResourceLoad {
                    utilisation,
                    pressure,
                },
            )])
        };
        let cpu = |utilisation, pressure| {
            score(&load(utilisation, pressure), None, &config).per_resource[&Resource::Cpu].clone()
        };
        // (1 * 0.7 + 2 * 0.46 / 0.5) / 3
        let both = cpu(Some(0.7), Some(0.46));
        assert!(close(both.score, (0.7 + 2.0 * 0.92) / 3.0));
        assert!(close(both.pressure_normalised, 0.92));
        assert!(close(cpu(Some(0.7), None).score, 0.7), "renormalised");
        assert!(close(cpu(None, Some(0.46)).score, 0.92), "renormalised");
        assert_eq!(cpu(None, None).score, None);
        let over = cpu(Some(3.0), Some(1.5));
        assert!(close(over.score, (2.0 + 2.0) / 3.0), "capped at 2 and 1");
        assert!(close(over.pressure_normalised, 3.0), "shown uncapped");
        assert!(close(over.utilisation, 3.0), "shown uncapped");
    }

    #[test]
    fn total_is_the_weighted_mean_of_measured_resources() {
        let config = ScoreConfig::default();
        let all = score(&resource_loads(&busy_node()), None, &config);
        let s = |r| all.per_resource[&r].score.unwrap_or(f64::NAN);
        let want = (s(Resource::Cpu) + s(Resource::Memory) + 0.5 * s(Resource::Network)) / 2.5;
        assert!(close(all.score, want));
        let cpu_only = LoadInputs {
            cores_used: Some(1.4),
            cores_allocatable: Some(2.0),
            ..LoadInputs::default()
        };
        assert!(
            close(score(&resource_loads(&cpu_only), None, &config).score, 0.7),
            "renormalised over the one measured resource"
        );
    }

    #[test]
    fn zero_weights_leave_terms_out() {
        let mut config = ScoreConfig::default();
        config.weights.memory = 0.0;
        let memory_only = LoadInputs {
            working_set_bytes: Some(6.0),
            memory_allocatable_bytes: Some(8.0),
            ..LoadInputs::default()
        };
        let scored = score(&resource_loads(&memory_only), None, &config);
        assert_eq!(
            scored.score, None,
            "the only measured resource does not count"
        );
        assert_eq!(
            scored.reason,
            "no score: memory 0.75 (weight 0, not counted; utilisation 0.75, reclaim stall not \
             measured); cpu, network not measured"
        );
    }

    #[test]
    fn reason_names_the_dominant_resource_first_and_throttling_apart() {
        let inputs = LoadInputs {
            network_bytes_per_second: None,
            retransmits_per_second: None,
            ..busy_node()
        };
        let scored = score(&resource_loads(&inputs), Some(0.4), &ScoreConfig::default());
        let r = &scored.reason;
        assert!(
            r.starts_with(&format!(
                "score {:.2}: cpu 0.85 (",
                scored.score.unwrap_or(f64::NAN)
            )),
            "{r}"
        );
        assert!(
            r.contains(
                "cpu 0.85 (utilisation 0.70, contention 0.46 s wait per cpu-second = 0.92 of scale), "
            ),
            "{r}"
        );
        assert!(
            r.contains(
                "memory 0.30 (utilisation 0.50, reclaim stall 0.010 s per second = 0.20 of scale)"
            ),
            "{r}"
        );
        assert!(r.contains("; network not measured; "), "{r}");
        assert!(
            r.ends_with("throttled 40% of periods (own CPU limit, not counted)"),
            "{r}"
        );

        // Memory now dominates: it comes first.
        let thrashing = LoadInputs {
            reclaim_stall_per_second: Some(0.2),
            working_set_bytes: Some(7.9e9),
            ..busy_node()
        };
        let scored = score(
            &resource_loads(&thrashing),
            Some(0.0),
            &ScoreConfig::default(),
        );
        let r = &scored.reason;
        assert!(r.contains(": memory 1.00 ("), "{r}");
        assert!(r.contains("= 4.00 of scale, counted as 1)"), "{r}");
        assert!(
            r.contains(
                "network 0.35 (utilisation 0.30, retransmits 0.40% of packets = 0.40 of scale)"
            ),
            "{r}"
        );
        assert!(
            !r.contains("throttled"),
            "0% throttled is not worth a word: {r}"
        );
        assert!(!r.contains("not measured"), "{r}");
    }

    #[test]
    fn reason_for_partial_and_capped_figures() {
        let inputs = LoadInputs {
            cores_used: Some(5.0),
            cores_allocatable: Some(2.0),
            throttled_share: Some(0.001),
            ..LoadInputs::default()
        };
        let scored = score(
            &resource_loads(&inputs),
            inputs.throttled_share,
            &ScoreConfig::default(),
        );
        assert_eq!(
            scored.reason,
            "score 2.00: cpu 2.00 (utilisation 2.50, counted as 2, contention not measured); \
             memory, network not measured; throttled <1% of periods (own CPU limit, not counted)"
        );
        assert_eq!(scored.throttled_share, Some(0.001));
        let impossible = score(&resource_loads(&inputs), Some(1.5), &ScoreConfig::default());
        assert_eq!(
            impossible.throttled_share, None,
            "a share above 1 is no measurement"
        );
        assert!(!impossible.reason.contains("throttled"));

        // Retransmits against a vanishing packet count: the ratio saturates, the reason stays short.
        let absurd = LoadInputs {
            retransmits_per_second: Some(7000.0),
            packets_per_second: Some(1e-308),
            ..LoadInputs::default()
        };
        let scored = score(&resource_loads(&absurd), None, &ScoreConfig::default());
        assert!(
            scored.reason.starts_with(
                "score 1.00: network 1.00 (utilisation not measured, retransmits 1.80e308% of \
                 packets = 1.80e308 of scale, counted as 1)"
            ),
            "{}",
            scored.reason
        );
    }

    #[test]
    fn default_config_is_valid_and_round_trips() {
        let config = ScoreConfig::default();
        assert_eq!(config.validate(), Ok(()));
        let json = serde_json::to_string(&config).expect("serialises");
        let back: ScoreConfig = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, config);
    }

    #[test]
    fn config_validation_errors() {
        let check = |edit: fn(&mut ScoreConfig), want: ScoreConfigError, message: &str| {
            let mut config = ScoreConfig::default();
            edit(&mut config);
            let got = config.validate();
            assert_eq!(got, Err(want));
            assert_eq!(
                got.err().map(|e| e.to_string()).unwrap_or_default(),
                message
            );
        };
        check(
            |c| c.weights.memory = -1.0,
            ScoreConfigError::BadWeight {
                field: "weights.memory".into(),
                value: -1.0,
            },
            "score config: weights.memory must be a finite number >= 0, got -1",
        );
        check(
            |c| c.network.pressure_weight = f64::INFINITY,
            ScoreConfigError::BadWeight {
                field: "network.pressure_weight".into(),
                value: f64::INFINITY,
            },
            "score config: network.pressure_weight must be a finite number >= 0, got inf",
        );
        check(
            |c| {
                c.weights = ScoreWeights {
                    cpu: 0.0,
                    memory: 0.0,
                    network: 0.0,
                }
            },
            ScoreConfigError::NoResourceWeight,
            "score config: weights.cpu, weights.memory and weights.network are all 0; at least one must be > 0",
        );
        check(
            |c| {
                c.memory.utilisation_weight = 0.0;
                c.memory.pressure_weight = 0.0;
            },
            ScoreConfigError::NoTermWeight {
                resource: Resource::Memory,
            },
            "score config: memory.utilisation_weight and memory.pressure_weight are both 0; at least one must be > 0",
        );
        check(
            |c| c.cpu.pressure_scale = 0.0,
            ScoreConfigError::BadPressureScale {
                resource: Resource::Cpu,
                value: 0.0,
            },
            "score config: cpu.pressure_scale (the pressure that counts as fully pressured) must be a finite number > 0, got 0",
        );
        check(
            |c| c.half_life_ns = 0,
            ScoreConfigError::ZeroHalfLife,
            "score config: half_life_ns must be > 0",
        );
        // NaN is not equal to itself, so this one is checked by message only.
        let mut config = ScoreConfig::default();
        config.network.pressure_scale = f64::NAN;
        assert_eq!(
            config.validate().err().map(|e| e.to_string()).unwrap_or_default(),
            "score config: network.pressure_scale (the pressure that counts as fully pressured) must be a finite number > 0, got NaN"
        );
    }

    #[test]
    fn json_shape() {
        let scored = score(
            &resource_loads(&LoadInputs {
                cores_used: Some(1.0),
                cores_allocatable: Some(4.0),
                ..LoadInputs::default()
            }),
            None,
            &ScoreConfig::default(),
        );
        let json = serde_json::to_value(&scored).expect("serialises");
        assert_eq!(json["per_resource"]["cpu"]["utilisation"], 0.25);
        assert!(
            json["per_resource"]["cpu"]["pressure"].is_null(),
            "not measured is null, not 0"
        );
        assert!(json["per_resource"]["network"]["score"].is_null());
        let back: LoadScore = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, scored);
    }

    #[test]
    fn ewma_basics() {
        let mut e = Ewma::new(10 * SECOND);
        assert_eq!(e.value(), None);
        e.update(None, 0);
        assert_eq!(e.value(), None);
        e.update(Some(4.0), 5 * SECOND);
        assert_eq!(e.value(), Some(4.0), "the first value is taken as is");
        e.update(None, 100 * SECOND);
        e.update(Some(f64::NAN), 100 * SECOND);
        assert_eq!(e.value(), Some(4.0), "no value, no change");
        e.update(Some(8.0), 15 * SECOND);
        assert_eq!(
            e.value(),
            Some(6.0),
            "one half-life after the last real value"
        );
        e.update(Some(100.0), 15 * SECOND);
        assert_eq!(e.value(), Some(6.0), "no time passed: weight 0");
        e.update(Some(100.0), SECOND);
        assert_eq!(
            e.value(),
            Some(6.0),
            "a time from the past: weight 0, no panic"
        );
        e.update(Some(2.0), 25 * SECOND);
        assert_eq!(
            e.value(),
            Some(4.0),
            "dt counts from the latest time seen, not the stray one"
        );

        let mut raw = Ewma::new(0);
        raw.update(Some(1.0), 0);
        raw.update(Some(9.0), 0);
        assert_eq!(raw.value(), Some(1.0));
        raw.update(Some(9.0), 1);
        assert_eq!(raw.value(), Some(9.0), "half-life 0: no smoothing");
    }

    #[test]
    fn smoothed_load_keeps_raw_and_average() {
        let mut smoothed = SmoothedLoad::new(10 * SECOND);
        assert_eq!(smoothed.smoothed(), resource_loads(&LoadInputs::default()));
        let window = |wait| {
            resource_loads(&LoadInputs {
                runqueue_wait_per_cpu_second: wait,
                ..LoadInputs::default()
            })
        };
        smoothed.update(&window(Some(0.0)), 0);
        smoothed.update(&window(Some(1.0)), 10 * SECOND);
        assert_eq!(smoothed.raw(), &window(Some(1.0)));
        assert_eq!(smoothed.smoothed()[&Resource::Cpu].pressure, Some(0.5));
        smoothed.update(&window(None), 20 * SECOND);
        assert_eq!(smoothed.raw()[&Resource::Cpu].pressure, None);
        assert_eq!(
            smoothed.smoothed()[&Resource::Cpu].pressure,
            Some(0.5),
            "a missing window does not drag the average to 0"
        );
        assert_eq!(
            smoothed.smoothed()[&Resource::Memory],
            ResourceLoad::default()
        );
    }

    /// A figure that may be missing, zero, ordinary or huge, or not a real measurement at all.
    fn any_figure() -> impl Strategy<Value = Option<f64>> {
        prop_oneof![
            Just(None),
            Just(Some(0.0)),
            (0.0..1e4f64).prop_map(Some),
            (proptest::num::f64::POSITIVE
                | proptest::num::f64::NORMAL
                | proptest::num::f64::SUBNORMAL)
                .prop_map(Some),
            any::<f64>().prop_map(Some),
        ]
    }

    fn any_inputs() -> impl Strategy<Value = LoadInputs> {
        proptest::collection::vec(any_figure(), 11).prop_map(|f| LoadInputs {
            cores_used: f[0],
            cores_allocatable: f[1],
            runqueue_wait_per_cpu_second: f[2],
            throttled_share: f[3],
            working_set_bytes: f[4],
            memory_allocatable_bytes: f[5],
            reclaim_stall_per_second: f[6],
            network_bytes_per_second: f[7],
            network_capacity_bytes_per_second: f[8],
            retransmits_per_second: f[9],
            packets_per_second: f[10],
        })
    }

    /// Every figure measured and every ratio defined.
    fn measured_inputs() -> impl Strategy<Value = LoadInputs> {
        (
            proptest::collection::vec(0.0..1e3f64, 7),
            (0.1..256.0f64, 1e6..1e12f64, 1e3..1e10f64, 1.0..1e6f64),
        )
            .prop_map(|(f, (cpus, memory, capacity, packets))| LoadInputs {
                cores_used: Some(f[0]),
                cores_allocatable: Some(cpus),
                runqueue_wait_per_cpu_second: Some(f[1]),
                throttled_share: Some(f[2] / 1e3),
                working_set_bytes: Some(f[3] * 1e7),
                memory_allocatable_bytes: Some(memory),
                reclaim_stall_per_second: Some(f[4] / 1e3),
                network_bytes_per_second: Some(f[5] * 1e6),
                network_capacity_bytes_per_second: Some(capacity),
                retransmits_per_second: Some(f[6]),
                packets_per_second: Some(packets),
            })
    }

    /// Zero now and then, to exercise left-out terms without making most configs invalid.
    fn weight() -> impl Strategy<Value = f64> {
        prop_oneof![1 => Just(0.0), 4 => 0.0..10.0f64]
    }

    fn terms() -> impl Strategy<Value = ResourceTerms> {
        (weight(), weight(), 1e-3..10.0f64).prop_map(|(u, p, scale)| ResourceTerms {
            utilisation_weight: u,
            pressure_weight: p,
            pressure_scale: scale,
        })
    }

    fn valid_config() -> impl Strategy<Value = ScoreConfig> {
        (
            (weight(), weight(), weight()),
            (terms(), terms(), terms()),
            1u64..u64::MAX,
        )
            .prop_map(
                |((cpu, memory, network), (c, m, n), half_life_ns)| ScoreConfig {
                    weights: ScoreWeights {
                        cpu,
                        memory,
                        network,
                    },
                    cpu: c,
                    memory: m,
                    network: n,
                    half_life_ns,
                },
            )
            .prop_filter("valid configs only", |c| c.validate().is_ok())
    }

    /// Adds `by` to one of the figures that measure load (a utilisation numerator or a pressure).
    fn raise(inputs: &LoadInputs, which: usize, by: f64) -> LoadInputs {
        let mut raised = inputs.clone();
        let figure = match which {
            0 => &mut raised.cores_used,
            1 => &mut raised.runqueue_wait_per_cpu_second,
            2 => &mut raised.working_set_bytes,
            3 => &mut raised.reclaim_stall_per_second,
            4 => &mut raised.network_bytes_per_second,
            _ => &mut raised.retransmits_per_second,
        };
        *figure = figure.map(|v| v + by);
        raised
    }

    proptest! {
        #[test]
        fn more_load_never_lowers_a_score(
            inputs in measured_inputs(),
            which in 0usize..6,
            by in 0.0..1e9f64,
            config in valid_config(),
        ) {
            let before = score(&resource_loads(&inputs), None, &config);
            let after = score(&resource_loads(&raise(&inputs, which, by)), None, &config);
            for resource in Resource::ALL {
                prop_assert!(
                    after.per_resource[&resource].score >= before.per_resource[&resource].score,
                    "{resource}: {before:?} -> {after:?}"
                );
            }
            prop_assert!(after.score >= before.score, "{before:?} -> {after:?}");
        }

        #[test]
        fn a_zero_weight_resource_never_changes_the_total(
            inputs in any_inputs(),
            other in any_inputs(),
            config in valid_config(),
        ) {
            let mut config = config;
            config.weights.memory = 0.0;
            prop_assume!(config.validate().is_ok());
            let changed = LoadInputs {
                working_set_bytes: other.working_set_bytes,
                memory_allocatable_bytes: other.memory_allocatable_bytes,
                reclaim_stall_per_second: other.reclaim_stall_per_second,
                ..inputs.clone()
            };
            prop_assert_eq!(
                score(&resource_loads(&inputs), None, &config).score,
                score(&resource_loads(&changed), None, &config).score
            );
        }

        #[test]
        fn more_weight_moves_the_total_toward_that_resource(
            inputs in measured_inputs(),
            which in 0usize..3,
            extra in 1e-3..100.0f64,
            config in valid_config(),
        ) {
            let resource = Resource::ALL[which];
            let loads = resource_loads(&inputs);
            let before = score(&loads, None, &config);
            let mut heavier = config.clone();
            match resource {
                Resource::Cpu => heavier.weights.cpu += extra,
                Resource::Memory => heavier.weights.memory += extra,
                Resource::Network => heavier.weights.network += extra,
            }
            let after = score(&loads, None, &heavier);
            // Everything is measured and a valid config counts something in every resource and
            // in the total, so all three exist.
            let (target, before, after) = (
                before.per_resource[&resource].score.unwrap_or(f64::NAN),
                before.score.unwrap_or(f64::NAN),
                after.score.unwrap_or(f64::NAN),
            );
            let eps = 1e-12;
            prop_assert!(
                (after - target).abs() <= (before - target).abs() + eps,
                "toward {target}: {before} -> {after}"
            );
            prop_assert!(
                (after - before) * (target - before) >= -eps,
                "same direction as {target}: {before} -> {after}"
            );
        }

        #[test]
        fn throttling_never_changes_the_score(
            inputs in any_inputs(),
            a in any_figure(),
            b in any_figure(),
            config in valid_config(),
        ) {
            let loads = resource_loads(&inputs);
            let (x, y) = (score(&loads, a, &config), score(&loads, b, &config));
            prop_assert_eq!(x.score, y.score);
            prop_assert_eq!(x.per_resource, y.per_resource);
        }

        #[test]
        fn scores_are_finite_and_bounded(inputs in any_inputs(), config in valid_config()) {
            let scored = score(&resource_loads(&inputs), inputs.throttled_share, &config);
            let in_range = |s: Option<f64>| s.is_none_or(|s| s.is_finite() && (0.0..=2.0).contains(&s));
            prop_assert!(in_range(scored.score), "{scored:?}");
            for s in scored.per_resource.values() {
                prop_assert!(in_range(s.score), "{scored:?}");
                for figure in [s.utilisation, s.pressure, s.pressure_normalised] {
                    prop_assert!(figure.is_none_or(|f| f.is_finite() && f >= 0.0), "{scored:?}");
                }
            }
            prop_assert!(!scored.reason.contains("NaN") && !scored.reason.contains("inf"));
        }

        #[test]
        fn ewma_moves_halfway_in_one_half_life(
            a in 0.0..1e6f64,
            b in 0.0..1e6f64,
            half_life_ns in 1u64..1 << 50,
            start_ns in 0u64..1 << 60,
        ) {
            let mut e = Ewma::new(half_life_ns);
            e.update(Some(a), start_ns);
            e.update(Some(b), start_ns + half_life_ns);
            let v = e.value().unwrap_or(f64::NAN);
            prop_assert!((v - (a + b) / 2.0).abs() <= 1e-9, "{a} -> {b}: {v}");
        }

        #[test]
        fn ewma_stays_within_its_inputs(
            steps in proptest::collection::vec(
                (prop_oneof![Just(None), (-1e9..1e9f64).prop_map(Some)], 0u64..1 << 40, any::<bool>()),
                1..40,
            ),
            half_life_ns in 0u64..1 << 40,
        ) {
            let mut e = Ewma::new(half_life_ns);
            let mut now_ns = 1u64 << 50;
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for (value, dt, backwards) in steps {
                // Clocks that stand still or step back must be survived too.
                now_ns = if backwards { now_ns - dt } else { now_ns + dt };
                e.update(value, now_ns);
                if let Some(v) = value {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                prop_assert_eq!(e.value().is_some(), lo <= hi);
                if let Some(avg) = e.value() {
                    prop_assert!((lo..=hi).contains(&avg), "{avg} outside [{lo}, {hi}]");
                }
            }
        }
    }
}
