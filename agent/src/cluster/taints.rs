//! The soft anti-return taint `ballast.io/hot:PreferNoSchedule`: on every node the planner holds
//! as a source, on no other. Every round reconciles all nodes against the planner's memory, so a
//! new leader removes orphans (taints left by a leader that died, or on nodes that cooled down
//! meanwhile) in its first round.
//!
//! A change is a JSON merge patch of `spec.taints` (the whole list: merge patches replace lists)
//! with `metadata.resourceVersion` as a precondition, so a taint someone else added in between is
//! never overwritten: a 409 reads the node again and recomputes, a bounded number of times.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::{
    api::{Patch, PatchParams},
    Api, ResourceExt,
};
use serde_json::json;

use super::fence::{Fence, Fenced};
use crate::rebalance::RebalanceState;

pub const HOT_TAINT: &str = "ballast.io/hot";
const EFFECT: &str = "PreferNoSchedule";
/// Attempts per node and round when the node keeps changing under us.
const ATTEMPTS: usize = 3;

fn is_ours(taint: &Taint) -> bool {
    taint.key == HOT_TAINT && taint.effect == EFFECT
}

pub fn has_hot_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(is_ours))
}

/// Nodes the planner's memory holds as a source of any resource.
pub fn sources(state: &RebalanceState) -> BTreeSet<String> {
    state
        .nodes
        .iter()
        .filter(|(_, resources)| resources.values().any(|h| h.source))
        .map(|(name, _)| name.clone())
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub node: String,
    /// `true`: add the taint; `false`: remove it.
    pub hot: bool,
}

/// What to change so that exactly the `sources` among `nodes` (name, carries the taint) carry it.
pub fn changes<'a>(
    nodes: impl IntoIterator<Item = (&'a str, bool)>,
    sources: &BTreeSet<String>,
) -> Vec<Change> {
    let mut out: Vec<Change> = nodes
        .into_iter()
        .filter_map(|(name, tainted)| {
            let hot = sources.contains(name);
            (hot != tainted).then(|| Change {
                node: name.to_owned(),
                hot,
            })
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// `taints` with ours added (`hot`) or removed; `None` when they already are as wanted. Other
/// taints are kept as they are, in their order.
pub fn with_hot_taint(taints: &[Taint], hot: bool) -> Option<Vec<Taint>> {
    let present = taints.iter().any(is_ours);
    match (hot, present) {
        (true, false) => {
            let mut out = taints.to_vec();
            out.push(Taint {
                key: HOT_TAINT.into(),
                effect: EFFECT.into(),
                value: None,
                time_added: None,
            });
            Some(out)
        }
        (false, true) => Some(taints.iter().filter(|t| !is_ours(t)).cloned().collect()),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaintError {
    #[error("{0}")]
    Fenced(#[from] Fenced),
    #[error("the node kept changing: {ATTEMPTS} attempts met a newer resourceVersion")]
    Conflicts,
    #[error("no answer within the time leadership had left")]
    TimedOut,
    #[error("{0}")]
    Api(#[from] kube::Error),
}

/// Makes `node` carry the taint or not. `known` is the node as last seen (the watch's copy) to
/// save a read; a conflict reads it again. Checks the fence before every write.
pub async fn apply(
    nodes: &Api<Node>,
    known: Option<Node>,
    name: &str,
    hot: bool,
    fence: &Fence,
    term: u64,
) -> Result<bool, TaintError> {
    let mut node = match known {
        Some(node) => node,
        None => nodes.get(name).await?,
    };
    for _ in 0..ATTEMPTS {
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let Some(taints) = with_hot_taint(&current, hot) else {
            return Ok(false);
        };
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": taints},
        });
        let permit = fence.check_now(term)?;
        let patched = tokio::time::timeout(
            permit.remaining,
            nodes.patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map_err(|_| TaintError::TimedOut)?;
        match patched {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                node = nodes.get(name).await?;
            }
            Err(error) => return Err(error.into()),
        }
    }
    Err(TaintError::Conflicts)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{load::score::Resource, rebalance::state::Hysteresis};

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            value: None,
            time_added: None,
        }
    }

    #[test]
    fn sources_are_nodes_with_any_resource_in_the_source_state() {
        let hysteresis = |source| Hysteresis {
            source,
            abnormal_rounds: 0,
            normal_rounds: 0,
        };
        let state = RebalanceState {
            nodes: BTreeMap::from([
                (
                    "hot".to_string(),
                    BTreeMap::from([
                        (Resource::Cpu, hysteresis(false)),
                        (Resource::Memory, hysteresis(true)),
                    ]),
                ),
                (
                    "warming".to_string(),
                    BTreeMap::from([(
                        Resource::Cpu,
                        Hysteresis {
                            source: false,
                            abnormal_rounds: 2,
                            normal_rounds: 0,
                        },
                    )]),
                ),
            ]),
            ..RebalanceState::default()
        };
        assert_eq!(sources(&state), BTreeSet::from(["hot".to_string()]));
    }

    #[test]
    fn reconciliation_adds_to_sources_and_removes_orphans() {
        let sources = BTreeSet::from(["a".to_string(), "b".to_string(), "gone".to_string()]);
        let nodes = [("a", false), ("b", true), ("c", true), ("d", false)];
        assert_eq!(
            changes(nodes, &sources),
            [
                Change {
                    node: "a".into(),
                    hot: true
                },
                Change {
                    node: "c".into(),
                    hot: false
                },
            ],
            "b already carries it; a source that left the cluster is not patched"
        );
        assert!(changes(nodes.iter().map(|(n, _)| (*n, false)), &BTreeSet::new()).is_empty());
        // A new leader with no sources in memory clears every taint.
        let all_tainted = [("a", true), ("b", true)];
        assert_eq!(changes(all_tainted, &BTreeSet::new()).len(), 2);
    }

    #[test]
    fn other_taints_are_kept_in_order() {
        let others = vec![taint("dedicated", "NoSchedule"), taint("x", "NoExecute")];
        let added = with_hot_taint(&others, true).expect("a change");
        assert_eq!(added.len(), 3);
        assert_eq!(&added[..2], &others[..]);
        assert!(is_ours(&added[2]));
        assert_eq!(with_hot_taint(&added, true), None, "already there");
        assert_eq!(with_hot_taint(&added, false), Some(others.clone()));
        assert_eq!(with_hot_taint(&others, false), None, "nothing to remove");
        // Someone else's taint with our key but another effect is not ours to remove.
        let foreign = vec![taint(HOT_TAINT, "NoSchedule")];
        assert_eq!(with_hot_taint(&foreign, false), None);
        assert_eq!(with_hot_taint(&[], true).map(|t| t.len()), Some(1));
    }

    #[test]
    fn a_node_carries_it_only_with_the_soft_effect() {
        let node = |taints: Vec<Taint>| Node {
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(has_hot_taint(&node(vec![taint(HOT_TAINT, EFFECT)])));
        assert!(!has_hot_taint(&node(vec![taint(HOT_TAINT, "NoSchedule")])));
        assert!(!has_hot_taint(&Node::default()));
    }
}
