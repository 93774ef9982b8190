//! The text of a plan: why a node is a source, why a pod moves, why no node could take it.

use std::collections::BTreeMap;

use super::{
    classify::Thresholds,
    loads::Loads,
    plan::{Destination, Figures},
    predict::NodeModel,
    snapshot::{ClusterSnapshot, Pod},
};
use crate::load::score::Resource;

/// Why no destination took a pod, counted over the nodes looked at.
#[derive(Default)]
pub struct Rejections {
    pub looked_at: usize,
    by_reason: BTreeMap<&'static str, usize>,
}

impl Rejections {
    pub fn count(&mut self, reason: &'static str) {
        *self.by_reason.entry(reason).or_default() += 1;
    }

    pub fn describe(&self) -> String {
        if self.looked_at == 0 {
            return "no node can take pods this round (none Ready, schedulable, with fresh load and not hot itself)".to_owned();
        }
        let mut reasons: Vec<(&str, usize)> =
            self.by_reason.iter().map(|(r, n)| (*r, *n)).collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!(
            "none of {} candidate nodes fits: {}",
            self.looked_at,
            parts.join(", ")
        )
    }
}

fn pressure_name(resource: Resource) -> &'static str {
    match resource {
        Resource::Cpu => "contention",
        Resource::Memory => "reclaim",
        Resource::Network => "retransmits",
    }
}

/// E.g. `cpu utilisation 0.93 (high 0.85, low 0.70), contention 0.31 (high 0.25, low 0.10)`.
pub fn describe_resource(thresholds: &Thresholds, loads: &Loads, resource: Resource) -> String {
    let (u_band, p_band) = thresholds.of(resource);
    let load = loads.get(resource);
    let mut parts = Vec::new();
    if let Some(u) = load.utilisation {
        parts.push(format!(
            "utilisation {u:.2} (high {:.2}, low {:.2})",
            u_band.high, u_band.low
        ));
    }
    if let Some(p) = load.pressure {
        parts.push(format!(
            "{} {p:.3} (high {:.3}, low {:.3})",
            pressure_name(resource),
            p_band.high,
            p_band.low
        ));
    }
    if parts.is_empty() {
        parts.push("not measured".to_owned());
    }
    format!("{resource} {}", parts.join(", "))
}

pub fn describe_source(
    thresholds: &Thresholds,
    model: &NodeModel,
    resources: &[Resource],
    snapshot: &ClusterSnapshot,
    node: &str,
) -> String {
    let hot: Vec<String> = resources
        .iter()
        .map(|r| describe_resource(thresholds, &model.loads, *r))
        .collect();
    let mut detail = format!("source: {}", hot.join("; "));
    let throttled = snapshot
        .node_loads
        .get(node)
        .and_then(|l| l.cpu_throttled_share)
        .filter(|s| *s > 0.0);
    if let Some(share) = throttled {
        detail.push_str(&format!(
            "; CFS throttling {:.0}% of periods (own CPU limits, never a reason)",
            share * 100.0
        ));
    }
    detail
}

pub fn eviction_reason(
    thresholds: &Thresholds,
    pod: &Pod,
    source: &str,
    resources: &[Resource],
    (before, after): (&Figures, &Figures),
    destination: &Destination,
    snapshot: &ClusterSnapshot,
) -> String {
    let changes: Vec<String> = resources
        .iter()
        .map(|r| {
            let (u_band, p_band) = thresholds.of(*r);
            let b = before.get(r).cloned().unwrap_or_default();
            let a = after.get(r).cloned().unwrap_or_default();
            let mut parts = Vec::new();
            if let (Some(b), Some(a)) = (b.utilisation, a.utilisation) {
                parts.push(format!(
                    "utilisation {b:.2} -> {a:.2} (target {:.2})",
                    u_band.low
                ));
            }
            if let (Some(b), Some(a)) = (b.pressure, a.pressure) {
                parts.push(format!(
                    "{} {b:.3} -> {a:.3} (target {:.3})",
                    pressure_name(*r),
                    p_band.low
                ));
            }
            format!("{r} {}", parts.join(", "))
        })
        .collect();
    let mut reason = format!(
        "{source} is hot; moving {}/{} (priority {}, {:?}) takes {}; best fit {} (score {:.2})",
        pod.namespace,
        pod.name,
        pod.priority,
        pod.qos,
        changes.join("; "),
        destination.node,
        destination.score,
    );
    let load = snapshot.pod_loads.get(&pod.uid);
    if let Some(contention) = load.and_then(|l| l.cpu_contention).filter(|c| *c > 0.0) {
        reason.push_str(&format!(
            "; it waits {contention:.2} s per CPU-second for a CPU here"
        ));
    }
    if let Some(share) = load
        .and_then(|l| l.cpu_throttled_share)
        .filter(|s| *s > 0.0)
    {
        reason.push_str(&format!(
            "; throttled {:.0}% of periods by its own limit (not counted)",
            share * 100.0
        ));
    }
    reason
}

pub fn evacuation_reason(
    pod: &Pod,
    source: &str,
    alerts: &str,
    destination: &Destination,
) -> String {
    format!(
        "{alerts} asks to evacuate {source}; moving {}/{} (priority {}, {:?}), one pod at a time; best fit {} (score {:.2})",
        pod.namespace, pod.name, pod.priority, pod.qos, destination.node, destination.score,
    )
}
