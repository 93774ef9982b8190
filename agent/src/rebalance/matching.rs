//! Kubernetes matching rules the planner needs: taints against tolerations, nodeSelector and
//! required node affinity against node labels, PDBs against the pods they cover.

use std::collections::BTreeMap;

use super::snapshot::{
    LabelSelector, LabelSelectorOperator, Node, NodeSelectorOperator, NodeSelectorRequirement, Pdb,
    Pod, Taint, TaintEffect,
};

/// Why a node cannot take a pod, before resources and load are looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mismatch {
    NodeSelector,
    Affinity,
    Taint,
}

/// Whether the scheduler's filters (nodeSelector, required node affinity, NoSchedule and
/// NoExecute taints) let `pod` onto `node`.
pub fn placeable(pod: &Pod, node: &Node) -> Result<(), Mismatch> {
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return Err(Mismatch::NodeSelector);
    }
    if !pod.required_affinity.is_empty()
        && !pod.required_affinity.iter().any(|term| {
            // An empty term matches nothing, as in Kubernetes.
            !term.match_expressions.is_empty()
                && term
                    .match_expressions
                    .iter()
                    .all(|r| node_requirement(r, &node.labels))
        })
    {
        return Err(Mismatch::Affinity);
    }
    if node
        .taints
        .iter()
        .any(|taint| taint.effect != TaintEffect::PreferNoSchedule && !tolerated(taint, pod))
    {
        return Err(Mismatch::Taint);
    }
    Ok(())
}

/// Untolerated `PreferNoSchedule` taints: the scheduler avoids such nodes, so they rank last.
pub fn soft_taints(pod: &Pod, node: &Node) -> usize {
    node.taints
        .iter()
        .filter(|taint| taint.effect == TaintEffect::PreferNoSchedule && !tolerated(taint, pod))
        .count()
}

fn tolerated(taint: &Taint, pod: &Pod) -> bool {
    pod.tolerations.iter().any(|t| t.tolerates(taint))
}

fn node_requirement(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let as_int = |s: &str| s.trim().parse::<i64>().ok();
    let compare = |wanted: std::cmp::Ordering| match (value, r.values.as_slice()) {
        (Some(v), [bound]) => match (as_int(v), as_int(bound)) {
            (Some(v), Some(bound)) => v.cmp(&bound) == wanted,
            _ => false,
        },
        _ => false,
    };
    match r.operator {
        NodeSelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
        NodeSelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
        NodeSelectorOperator::Exists => value.is_some(),
        NodeSelectorOperator::DoesNotExist => value.is_none(),
        NodeSelectorOperator::Gt => compare(std::cmp::Ordering::Greater),
        NodeSelectorOperator::Lt => compare(std::cmp::Ordering::Less),
    }
}

/// Whether `pdb` covers `pod`: same namespace, and its selector selects the pod's labels.
pub fn covers(pdb: &Pdb, pod: &Pod) -> bool {
    pdb.namespace == pod.namespace && selects(&pdb.selector, &pod.labels)
}

/// Whether `selector` selects a pod with `labels` (the namespace is checked by the caller).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    selector
        .match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && selector.match_expressions.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.operator {
                LabelSelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                LabelSelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                LabelSelectorOperator::Exists => value.is_some(),
                LabelSelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::snapshot::{Toleration, TolerationOperator};
    use crate::rebalance::{
        fixtures::{node, pod},
        snapshot::{LabelSelectorRequirement, NodeSelectorTerm},
    };

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.to_owned(),
            value: value.to_owned(),
            effect,
        }
    }

    fn toleration(
        key: Option<&str>,
        operator: TolerationOperator,
        value: &str,
        effect: Option<TaintEffect>,
    ) -> Toleration {
        Toleration {
            key: key.map(str::to_owned),
            operator,
            value: value.to_owned(),
            effect,
        }
    }

    #[test]
    fn hard_taints_need_a_toleration_soft_ones_do_not() {
        let mut n = node("n", 4000, 8 << 30);
        let mut p = pod("p", "n");
        for effect in [TaintEffect::NoSchedule, TaintEffect::NoExecute] {
            n.taints = vec![taint("dedicated", "gpu", effect)];
            assert_eq!(placeable(&p, &n), Err(Mismatch::Taint));
        }
        n.taints = vec![taint("hot", "", TaintEffect::PreferNoSchedule)];
        assert_eq!(placeable(&p, &n), Ok(()));
        assert_eq!(soft_taints(&p, &n), 1);
        p.tolerations = vec![toleration(
            Some("hot"),
            TolerationOperator::Exists,
            "",
            None,
        )];
        assert_eq!(soft_taints(&p, &n), 0);
    }

    #[test]
    fn toleration_operators_and_effects() {
        let t = taint("dedicated", "gpu", TaintEffect::NoSchedule);
        use TolerationOperator::{Equal, Exists};
        let cases = [
            (toleration(Some("dedicated"), Equal, "gpu", None), true),
            (toleration(Some("dedicated"), Equal, "cpu", None), false),
            (toleration(Some("dedicated"), Exists, "", None), true),
            (toleration(Some("other"), Exists, "", None), false),
            (toleration(None, Exists, "", None), true),
            (toleration(None, Equal, "", None), false),
            (
                toleration(Some("dedicated"), Exists, "", Some(TaintEffect::NoExecute)),
                false,
            ),
            (
                toleration(Some("dedicated"), Exists, "", Some(TaintEffect::NoSchedule)),
                true,
            ),
        ];
        for (toleration, expected) in cases {
            assert_eq!(toleration.tolerates(&t), expected, "{toleration:?}");
        }
    }

    #[test]
    fn node_selector_needs_every_label() {
        let mut n = node("n", 4000, 8 << 30);
        n.labels = labels(&[("zone", "a"), ("disk", "ssd")]);
        let mut p = pod("p", "n");
        p.node_selector = labels(&[("zone", "a")]);
        assert_eq!(placeable(&p, &n), Ok(()));
        p.node_selector = labels(&[("zone", "a"), ("disk", "hdd")]);
        assert_eq!(placeable(&p, &n), Err(Mismatch::NodeSelector));
    }

    #[test]
    fn affinity_operators() {
        let node_labels = labels(&[("zone", "a"), ("cores", "16")]);
        let req = |key: &str, operator, values: &[&str]| NodeSelectorRequirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        };
        use NodeSelectorOperator::*;
        let cases = [
            (req("zone", In, &["a", "b"]), true),
            (req("zone", In, &["b"]), false),
            (req("zone", NotIn, &["b"]), true),
            (req("zone", NotIn, &["a"]), false),
            (req("absent", NotIn, &["a"]), true),
            (req("zone", Exists, &[]), true),
            (req("absent", Exists, &[]), false),
            (req("absent", DoesNotExist, &[]), true),
            (req("zone", DoesNotExist, &[]), false),
            (req("cores", Gt, &["8"]), true),
            (req("cores", Gt, &["16"]), false),
            (req("cores", Lt, &["32"]), true),
            (req("cores", Lt, &["16"]), false),
            (req("zone", Gt, &["1"]), false),
            (req("cores", Gt, &["1", "2"]), false),
            (req("absent", Lt, &["5"]), false),
        ];
        for (r, expected) in cases {
            assert_eq!(node_requirement(&r, &node_labels), expected, "{r:?}");
        }
    }

    #[test]
    fn affinity_terms_are_ored_and_an_empty_term_matches_nothing() {
        let mut n = node("n", 4000, 8 << 30);
        n.labels = labels(&[("zone", "a")]);
        let mut p = pod("p", "n");
        let zone = |z: &str| NodeSelectorTerm {
            match_expressions: vec![NodeSelectorRequirement {
                key: "zone".to_owned(),
                operator: NodeSelectorOperator::In,
                values: vec![z.to_owned()],
            }],
        };
        p.required_affinity = vec![zone("b"), zone("a")];
        assert_eq!(placeable(&p, &n), Ok(()));
        p.required_affinity = vec![zone("b")];
        assert_eq!(placeable(&p, &n), Err(Mismatch::Affinity));
        p.required_affinity = vec![NodeSelectorTerm::default()];
        assert_eq!(placeable(&p, &n), Err(Mismatch::Affinity));
    }

    #[test]
    fn label_selectors() {
        let pod_labels = labels(&[("app", "web"), ("tier", "front")]);
        let mut s = LabelSelector::default();
        assert!(selects(&s, &pod_labels), "empty selector selects all");
        s.match_labels = labels(&[("app", "web")]);
        assert!(selects(&s, &pod_labels));
        s.match_expressions = vec![LabelSelectorRequirement {
            key: "tier".to_owned(),
            operator: LabelSelectorOperator::NotIn,
            values: vec!["front".to_owned()],
        }];
        assert!(!selects(&s, &pod_labels));
        s.match_expressions[0].operator = LabelSelectorOperator::In;
        assert!(selects(&s, &pod_labels));
        s.match_labels = labels(&[("app", "db")]);
        assert!(!selects(&s, &pod_labels));
    }
}
