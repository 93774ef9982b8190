//! The planner's durable memory: `RebalanceState` (hysteresis, cooldowns, in-flight evictions,
//! token bucket) in the ConfigMap `ballast-state` of the agents' namespace, written after every
//! round (before the evictions too, when there are any: a leader that dies mid-round leaves the
//! cooldowns of what it was about to evict) and read by every new leader, so that failover
//! resets nothing.
//!
//! Size-bounded (512 KiB of JSON, half of what a ConfigMap holds): above it, the workload
//! entries that matter least (no eviction in flight, the oldest cooldown or strike first) are
//! dropped with a log line saying how many; in-flight evictions and node hysteresis are never
//! dropped, and if those alone are too large the write is refused and the previous state stays.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{ObjectMeta, PostParams},
    Api,
};

use super::fence::{Fence, Fenced};
use crate::rebalance::{state::WorkloadMemory, RebalanceState, Timestamp};

pub const CONFIGMAP: &str = "ballast-state";
pub const KEY: &str = "state.json";
pub const LIMIT_BYTES: usize = 512 * 1024;
const ATTEMPTS: usize = 3;

/// The state as stored, and how many workload entries had to be left out to fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub json: String,
    pub dropped: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the planner state needs {bytes} bytes even without any droppable entry, above the {limit}-byte bound; it is not written (the previous one stays)")]
pub struct TooLarge {
    pub bytes: usize,
    pub limit: usize,
}

/// When a workload entry last mattered: its cooldown's end, its last strike or its last
/// replacement seen Ready.
fn relevance(memory: &WorkloadMemory) -> Option<Timestamp> {
    let arrived = memory.arrivals.iter().map(|a| a.at).max();
    memory.cooldown_until.max(memory.last_strike).max(arrived)
}

/// `state` as compact JSON of at most `limit` bytes, dropping what matters least if needed.
pub fn encode(state: &RebalanceState, limit: usize) -> Result<Encoded, TooLarge> {
    let json = |state: &RebalanceState| serde_json::to_string(state).unwrap_or_default();
    let whole = json(state);
    if whole.len() <= limit {
        return Ok(Encoded {
            json: whole,
            dropped: 0,
        });
    }
    let mut droppable: Vec<_> = state
        .workloads
        .iter()
        .filter(|(_, memory)| memory.in_flight.is_none())
        .map(|(key, memory)| (relevance(memory), key.clone()))
        .collect();
    droppable.sort();
    let without = |count: usize| {
        let mut trimmed = state.clone();
        for (_, key) in &droppable[..count] {
            trimmed.workloads.remove(key);
        }
        json(&trimmed)
    };
    let everything = without(droppable.len());
    if everything.len() > limit {
        return Err(TooLarge {
            bytes: everything.len(),
            limit,
        });
    }
    // The fewest entries to drop: binary search over how many of the least relevant go.
    let (mut low, mut high) = (0, droppable.len());
    while low < high {
        let middle = (low + high) / 2;
        if without(middle).len() <= limit {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(Encoded {
        json: without(low),
        dropped: low,
    })
}

/// The state in a ConfigMap's data; `Ok(None)` when it holds none.
pub fn decode(data: Option<&BTreeMap<String, String>>) -> Result<Option<RebalanceState>, String> {
    let Some(text) = data.and_then(|d| d.get(KEY)) else {
        return Ok(None);
    };
    serde_json::from_str(text)
        .map(Some)
        .map_err(|error| format!("ConfigMap {CONFIGMAP} key {KEY} is not a planner state: {error}"))
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{0}")]
    Fenced(#[from] Fenced),
    #[error("{0}")]
    TooLarge(#[from] TooLarge),
    #[error("ConfigMap {CONFIGMAP} kept changing under us ({ATTEMPTS} conflicts)")]
    Conflicts,
    #[error("writing ConfigMap {CONFIGMAP} took longer than leadership had left")]
    TimedOut,
    #[error("writing ConfigMap {CONFIGMAP} failed: {0}")]
    Api(#[from] kube::Error),
}

/// Reads and writes the state ConfigMap, remembering its last resourceVersion.
pub struct StateStore {
    api: Api<ConfigMap>,
    identity: String,
    limit: usize,
    last: Option<ConfigMap>,
}

impl StateStore {
    pub fn new(api: Api<ConfigMap>, identity: String) -> Self {
        Self {
            api,
            identity,
            limit: LIMIT_BYTES,
            last: None,
        }
    }

    /// The stored state: `Ok(None)` when there is none yet, `Err` when it cannot be read or
    /// is not a state (the caller starts fresh and says so).
    pub async fn load(&mut self) -> Result<Option<RebalanceState>, String> {
        let config_map = self
            .api
            .get_opt(CONFIGMAP)
            .await
            .map_err(|error| format!("reading ConfigMap {CONFIGMAP} failed: {error}"))?;
        let state = decode(config_map.as_ref().and_then(|c| c.data.as_ref()));
        self.last = config_map;
        state
    }

    /// Writes `state` (fence-checked before each attempt); returns how many entries were
    /// dropped to fit.
    pub async fn save(
        &mut self,
        state: &RebalanceState,
        fence: &Fence,
        term: u64,
    ) -> Result<usize, SaveError> {
        let encoded = encode(state, self.limit)?;
        for _ in 0..ATTEMPTS {
            let permit = fence.check_now(term)?;
            let mut config_map = self.last.clone().unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIGMAP.into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            });
            config_map.data = Some(BTreeMap::from([(KEY.to_owned(), encoded.json.clone())]));
            config_map
                .metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .extend([
                    ("ballast.io/written-by".to_owned(), self.identity.clone()),
                    ("ballast.io/rounds".to_owned(), state.rounds.to_string()),
                ]);
            let write = async {
                if self.last.is_some() {
                    self.api
                        .replace(CONFIGMAP, &PostParams::default(), &config_map)
                        .await
                } else {
                    self.api.create(&PostParams::default(), &config_map).await
                }
            };
            let written = tokio::time::timeout(permit.remaining, write)
                .await
                .map_err(|_| SaveError::TimedOut)?;
            match written {
                Ok(written) => {
                    self.last = Some(written);
                    return Ok(encoded.dropped);
                }
                // Stale resourceVersion, created meanwhile, or deleted meanwhile: read again.
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
                    self.last = self.api.get_opt(CONFIGMAP).await?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(SaveError::Conflicts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::{
        snapshot::WorkloadKey,
        state::{Arrival, Hysteresis, InFlight},
    };

    fn state(workloads: usize, in_flight: usize) -> RebalanceState {
        let mut state = RebalanceState::default();
        for i in 0..workloads {
            state.workloads.insert(
                WorkloadKey::new("shop", "Deployment", &format!("web-{i:05}")),
                WorkloadMemory {
                    cooldown_until: Some(Timestamp(2_000 + i as i64)),
                    strikes: 0,
                    last_strike: None,
                    arrivals: vec![Arrival {
                        node: "node-b".into(),
                        at: Timestamp(1_500 + i as i64),
                    }],
                    in_flight: (i < in_flight).then(|| InFlight {
                        pod_uid: format!("uid-{i}"),
                        pod_name: format!("web-{i}-x"),
                        source: "node-a".into(),
                        evicted_at: Timestamp(1_000 + i as i64),
                    }),
                },
            );
        }
        state.nodes.insert(
            "node-a".into(),
            BTreeMap::from([(
                crate::load::score::Resource::Cpu,
                Hysteresis {
                    source: true,
                    abnormal_rounds: 0,
                    normal_rounds: 1,
                },
            )]),
        );
        state.rounds = 42;
        state
    }

    #[test]
    fn a_small_state_is_stored_whole_and_reads_back() {
        let state = state(10, 2);
        let encoded = encode(&state, LIMIT_BYTES).expect("fits");
        assert_eq!(encoded.dropped, 0);
        let data = BTreeMap::from([(KEY.to_string(), encoded.json)]);
        assert_eq!(decode(Some(&data)), Ok(Some(state)));
        assert_eq!(decode(None), Ok(None));
        assert_eq!(decode(Some(&BTreeMap::new())), Ok(None));
    }

    #[test]
    fn a_large_state_drops_the_least_relevant_entries_just_enough() {
        let state = state(5_000, 10);
        let whole = serde_json::to_string(&state).expect("serialises").len();
        let limit = whole / 2;
        let encoded = encode(&state, limit).expect("fits after trimming");
        assert!(encoded.json.len() <= limit);
        let kept: RebalanceState = serde_json::from_str(&encoded.json).expect("valid");
        assert_eq!(kept.workloads.len(), 5_000 - encoded.dropped);
        assert!(
            encoded.dropped > 2_000 && encoded.dropped < 2_600,
            "{}",
            encoded.dropped
        );
        // One entry fewer would not have fitted: the fewest were dropped.
        let mut one_more = kept.clone();
        let first_dropped = state
            .workloads
            .keys()
            .find(|k| !kept.workloads.contains_key(k))
            .expect("something was dropped");
        one_more.workloads.insert(
            first_dropped.clone(),
            state.workloads[first_dropped].clone(),
        );
        assert!(serde_json::to_string(&one_more).expect("serialises").len() > limit);
        // The oldest went first, in-flight evictions and hysteresis stayed.
        assert!(
            kept.workloads
                .values()
                .filter(|m| m.in_flight.is_some())
                .count()
                == 10
        );
        assert!(kept
            .workloads
            .contains_key(&WorkloadKey::new("shop", "Deployment", "web-04999")));
        assert!(!kept
            .workloads
            .contains_key(&WorkloadKey::new("shop", "Deployment", "web-00010")));
        assert_eq!(kept.nodes, state.nodes);
        assert_eq!(kept.rounds, 42);
    }

    #[test]
    fn a_state_that_cannot_fit_is_refused() {
        let state = state(2_000, 2_000);
        let error = encode(&state, 10_000).expect_err("too large");
        assert!(error.bytes > 10_000);
        assert!(error.to_string().contains("is not written"), "{error}");
    }

    #[test]
    fn garbage_in_the_config_map_is_an_error_that_names_it() {
        let data = BTreeMap::from([(KEY.to_string(), "{not json".to_string())]);
        let error = decode(Some(&data)).err().unwrap_or_default();
        assert!(
            error.contains("ballast-state") && error.contains("state.json"),
            "{error}"
        );
    }
}
