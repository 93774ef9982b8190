//! The planner's policy: thresholds, hysteresis, eligibility, limits. Read from TOML; every field
//! has a default (shown by `Policy::default()` and documented beside it), unknown fields are
//! rejected and [`Policy::validate`] names the field and the fix of the first problem.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::load::score::Resource;

/// Pods at or above this priority are `system-cluster-critical` / `system-node-critical`.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The annotation a pod uses to opt out (`"false"`) or opt in (`"true"`, see
/// [`EligibilityPolicy`]).
pub const EVICT_ANNOTATION: &str = "ballast.io/evict";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Plan as usual but mark the plan as not to be executed. Changes nothing else.
    pub dry_run: bool,
    pub classification: Classification,
    pub eligibility: EligibilityPolicy,
    pub selection: SelectionPolicy,
    pub limits: Limits,
}

/// How a node's resource is judged abnormal (a source) or normal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Classification {
    pub mode: ThresholdMode,
    /// Consecutive abnormal rounds before a node's resource becomes a source (default 3).
    pub abnormal_rounds: u32,
    /// Consecutive normal rounds before a source is released (default 3).
    pub normal_rounds: u32,
    pub cpu: ResourceThresholds,
    pub memory: ResourceThresholds,
    pub network: ResourceThresholds,
}

/// Whether thresholds are absolute values or offsets above the mean of the fresh nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMode {
    #[default]
    Absolute,
    /// `high` and `low` are added to the cluster mean of the figure this round.
    Deviation,
}

/// The two figures of one resource, each with its own band.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceThresholds {
    pub utilisation: Band,
    /// In the resource's pressure unit (see `snapshot::NodeLoad`).
    pub pressure: Band,
}

/// Above `high` a round counts as abnormal (trigger); below `low` as normal (release). A source
/// is relieved down to `low`, and a destination must stay below `high` after the move.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub high: f64,
    pub low: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EligibilityPolicy {
    /// Only these namespaces (empty: all). Overridden by the opt-in annotation.
    pub namespaces_include: BTreeSet<String>,
    /// Never these namespaces (default `kube-system`). Overridden by the opt-in annotation.
    pub namespaces_exclude: BTreeSet<String>,
    /// Move pods with emptyDir / hostPath volumes (their data is lost). Default false.
    pub allow_local_storage: bool,
    /// Move pods requesting GPUs or other extended resources. Default false.
    pub allow_extended_resources: bool,
    /// Pods younger than this are left alone (default 300 s): just scheduled, still warming up.
    pub min_pod_age_seconds: u64,
    /// A workload with fewer Ready replicas than this is left alone (default 2: a single replica
    /// would be down between eviction and replacement).
    pub min_replicas: u32,
    /// Pods at or above this priority are never moved (default: system-critical, 2000000000).
    pub critical_priority: i32,
    /// Move StatefulSet pods (strictly one at a time per StatefulSet, only when all are Ready).
    pub allow_statefulsets: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelectionPolicy {
    /// Weight of each resource in the destination score ("least loaded after placement").
    pub weights: Weights,
    /// How many ranked destinations each eviction reports (default 3).
    pub destinations_reported: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    pub cpu: f64,
    pub memory: f64,
    pub network: f64,
}

impl Weights {
    pub fn of(&self, resource: Resource) -> f64 {
        match resource {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Network => self.network,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Evictions per round, whole cluster (default 10).
    pub per_round: u32,
    /// Evictions per source node per round (default 2).
    pub per_node: u32,
    /// Evictions per namespace per round (default 5).
    pub per_namespace: u32,
    /// An eviction whose replacement is not Ready after this long stops blocking the next one of
    /// its workload (default 600 s): the replacement may be stuck Pending or crash-looping, and
    /// one lost pod must not hold its workload forever. The PDBs and the cooldown still apply.
    pub in_flight_timeout_seconds: u64,
    pub token_bucket: TokenBucketPolicy,
    pub cooldown: CooldownPolicy,
}

/// Rate limit across rounds: each eviction takes a token; tokens come back at a steady rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenBucketPolicy {
    /// Most tokens held (default 20): the largest burst.
    pub burst: u32,
    /// Tokens added per minute (default 10).
    pub refill_per_minute: f64,
}

/// After an eviction a workload rests `base_seconds`; each time it comes back to a hot node (it is
/// evicted again from a node one of its replacements arrived on within `window_seconds`, or a
/// replacement arrives on a source or on the node it left) the rest doubles, up to
/// `max_seconds`; a window without that clears the doubling (see `limits`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CooldownPolicy {
    /// Default 120 s: the replacement's start plus two half-lives of the load model, so that the
    /// next eviction of the workload is decided on load that shows the previous one.
    pub base_seconds: u64,
    /// Default 21600 s (6 h).
    pub max_seconds: u64,
    /// Default 3600 s: how long arrivals and strikes are remembered.
    pub window_seconds: u64,
}

impl Default for Classification {
    fn default() -> Self {
        Self {
            mode: ThresholdMode::Absolute,
            abnormal_rounds: 3,
            normal_rounds: 3,
            // Contention of 0.25 s per CPU-second is the load model's half-scale: work runs about
            // 25% slower. Released at 0.1.
            cpu: ResourceThresholds {
                utilisation: Band {
                    high: 0.85,
                    low: 0.70,
                },
                pressure: Band {
                    high: 0.25,
                    low: 0.10,
                },
            },
            // 2% of the time stalled in reclaim is already felt; released at 0.5%.
            memory: ResourceThresholds {
                utilisation: Band {
                    high: 0.90,
                    low: 0.80,
                },
                pressure: Band {
                    high: 0.02,
                    low: 0.005,
                },
            },
            // 2% retransmits cut TCP throughput several-fold.
            network: ResourceThresholds {
                utilisation: Band {
                    high: 0.80,
                    low: 0.60,
                },
                pressure: Band {
                    high: 0.02,
                    low: 0.005,
                },
            },
        }
    }
}

impl Classification {
    pub fn of(&self, resource: Resource) -> &ResourceThresholds {
        match resource {
            Resource::Cpu => &self.cpu,
            Resource::Memory => &self.memory,
            Resource::Network => &self.network,
        }
    }
}

impl Default for EligibilityPolicy {
    fn default() -> Self {
        Self {
            namespaces_include: BTreeSet::new(),
            namespaces_exclude: BTreeSet::from(["kube-system".to_owned()]),
            allow_local_storage: false,
            allow_extended_resources: false,
            min_pod_age_seconds: 300,
            min_replicas: 2,
            critical_priority: SYSTEM_CRITICAL_PRIORITY,
            allow_statefulsets: true,
        }
    }
}

impl Default for SelectionPolicy {
    fn default() -> Self {
        Self {
            // As the load score: network counts half, its capacity is often unknown.
            weights: Weights {
                cpu: 1.0,
                memory: 1.0,
                network: 0.5,
            },
            destinations_reported: 3,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_round: 10,
            per_node: 2,
            per_namespace: 5,
            in_flight_timeout_seconds: 600,
            token_bucket: TokenBucketPolicy::default(),
            cooldown: CooldownPolicy::default(),
        }
    }
}

impl Default for TokenBucketPolicy {
    fn default() -> Self {
        Self {
            burst: 20,
            refill_per_minute: 10.0,
        }
    }
}

impl Default for CooldownPolicy {
    fn default() -> Self {
        Self {
            base_seconds: 120,
            max_seconds: 21_600,
            window_seconds: 3_600,
        }
    }
}

/// Why a policy cannot be used. Each names the field and says what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy: {0}\n(fix the TOML above; unknown fields are rejected, every field has a default and may be left out)")]
    Parse(toml::de::Error),
    #[error("policy: {field} = {value} is not a number >= 0; write a finite, non-negative value")]
    NotNonNegative { field: String, value: f64 },
    #[error("policy: {field}.high ({high}) must be above {field}.low ({low}); the trigger threshold has to exceed the release threshold or nodes flap between source and normal")]
    BandOrder { field: String, high: f64, low: f64 },
    #[error("policy: {field} = 0; write at least 1")]
    Zero { field: &'static str },
    #[error("policy: limits.cooldown.max_seconds ({max}) is below limits.cooldown.base_seconds ({base}); raise max_seconds or lower base_seconds")]
    CooldownOrder { base: u64, max: u64 },
    #[error("policy: selection.weights are all 0; give at least one resource a weight > 0")]
    NoWeight,
    #[error("policy: eligibility.namespaces_include and namespaces_exclude both name {namespace:?}; keep it in one of them")]
    NamespaceInBoth { namespace: String },
}

impl Policy {
    /// Parses a TOML policy and validates it.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(PolicyError::Parse)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks every number and band; reports the first problem.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let non_negative = |field: String, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(PolicyError::NotNonNegative { field, value })
            }
        };
        let c = &self.classification;
        if c.abnormal_rounds == 0 {
            return Err(PolicyError::Zero {
                field: "classification.abnormal_rounds",
            });
        }
        if c.normal_rounds == 0 {
            return Err(PolicyError::Zero {
                field: "classification.normal_rounds",
            });
        }
        for resource in Resource::ALL {
            let thresholds = c.of(resource);
            for (figure, band) in [
                ("utilisation", thresholds.utilisation),
                ("pressure", thresholds.pressure),
            ] {
                let field = format!("classification.{resource}.{figure}");
                non_negative(format!("{field}.high"), band.high)?;
                non_negative(format!("{field}.low"), band.low)?;
                if band.high <= band.low {
                    return Err(PolicyError::BandOrder {
                        field,
                        high: band.high,
                        low: band.low,
                    });
                }
            }
        }
        let w = &self.selection.weights;
        for resource in Resource::ALL {
            non_negative(format!("selection.weights.{resource}"), w.of(resource))?;
        }
        if Resource::ALL.iter().all(|r| w.of(*r) == 0.0) {
            return Err(PolicyError::NoWeight);
        }
        if self.selection.destinations_reported == 0 {
            return Err(PolicyError::Zero {
                field: "selection.destinations_reported",
            });
        }
        let l = &self.limits;
        for (field, value) in [
            ("limits.per_round", l.per_round),
            ("limits.per_node", l.per_node),
            ("limits.per_namespace", l.per_namespace),
            ("limits.token_bucket.burst", l.token_bucket.burst),
        ] {
            if value == 0 {
                return Err(PolicyError::Zero { field });
            }
        }
        if l.in_flight_timeout_seconds == 0 {
            return Err(PolicyError::Zero {
                field: "limits.in_flight_timeout_seconds",
            });
        }
        non_negative(
            "limits.token_bucket.refill_per_minute".to_owned(),
            l.token_bucket.refill_per_minute,
        )?;
        if l.cooldown.max_seconds < l.cooldown.base_seconds {
            return Err(PolicyError::CooldownOrder {
                base: l.cooldown.base_seconds,
                max: l.cooldown.max_seconds,
            });
        }
        let e = &self.eligibility;
        if let Some(namespace) = e
            .namespaces_include
            .intersection(&e.namespaces_exclude)
            .next()
        {
            return Err(PolicyError::NamespaceInBoth {
                namespace: namespace.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_an_empty_file_means_defaults() {
        assert!(Policy::default().validate().is_ok());
        assert_eq!(Policy::from_toml("").ok(), Some(Policy::default()));
    }

    #[test]
    fn defaults_round_trip_through_toml() {
        let text = toml::to_string(&Policy::default()).unwrap_or_default();
        assert_eq!(Policy::from_toml(&text).ok(), Some(Policy::default()));
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults() {
        let policy = Policy::from_toml(
            "dry_run = true\n[classification]\nabnormal_rounds = 5\n[classification.cpu]\nutilisation = { high = 0.9, low = 0.6 }\npressure = { high = 0.3, low = 0.1 }\n[limits]\nper_round = 3\n",
        );
        let policy = policy.unwrap_or_default();
        assert!(policy.dry_run);
        assert_eq!(policy.classification.abnormal_rounds, 5);
        assert_eq!(policy.classification.normal_rounds, 3);
        assert_eq!(policy.classification.cpu.utilisation.high, 0.9);
        assert_eq!(policy.limits.per_round, 3);
        assert_eq!(policy.limits.per_node, 2);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = Policy::from_toml("[limits]\nper_rounds = 3\n").err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("per_rounds"), "{text}");
    }

    #[test]
    fn trigger_must_exceed_release() {
        let err = Policy::from_toml(
            "[classification.memory]\nutilisation = { high = 0.8, low = 0.8 }\npressure = { high = 0.02, low = 0.005 }\n",
        )
        .err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("classification.memory.utilisation.high (0.8) must be above"),
            "{text}"
        );
    }

    #[test]
    fn each_invalid_field_is_named() {
        type Change = fn(&mut Policy);
        let cases: [(Change, &str); 9] = [
            (
                |p| p.classification.abnormal_rounds = 0,
                "classification.abnormal_rounds",
            ),
            (
                |p| p.classification.normal_rounds = 0,
                "classification.normal_rounds",
            ),
            (
                |p| p.classification.network.pressure.low = -1.0,
                "classification.network.pressure.low",
            ),
            (
                |p| p.selection.weights.cpu = f64::NAN,
                "selection.weights.cpu",
            ),
            (|p| p.limits.per_node = 0, "limits.per_node"),
            (
                |p| p.limits.in_flight_timeout_seconds = 0,
                "limits.in_flight_timeout_seconds",
            ),
            (
                |p| p.limits.token_bucket.refill_per_minute = -1.0,
                "limits.token_bucket.refill_per_minute",
            ),
            (
                |p| p.limits.cooldown.max_seconds = 1,
                "limits.cooldown.max_seconds",
            ),
            (
                |p| {
                    p.eligibility
                        .namespaces_include
                        .insert("kube-system".to_owned());
                },
                "namespaces_include",
            ),
        ];
        for (change, field) in cases {
            let mut policy = Policy::default();
            change(&mut policy);
            let text = policy
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(text.contains(field), "{field}: {text}");
        }
        let mut policy = Policy::default();
        policy.selection.weights = Weights {
            cpu: 0.0,
            memory: 0.0,
            network: 0.0,
        };
        assert!(matches!(policy.validate(), Err(PolicyError::NoWeight)));
    }
}
