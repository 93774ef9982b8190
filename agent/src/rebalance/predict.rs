//! Predicting a node's load after a pod leaves or arrives.
//!
//! Utilisation moves by the pod's usage over the node's capacity. Pressure is modelled as a
//! queue: `pressure = k * u / (1 - u)` (the waiting time of an M/M/1 queue at utilisation `u`),
//! with `k` fitted to the node's own figures. That makes pressure fall steeply when a saturated
//! node is relieved and rise steeply when a busy node is filled, which is what run-queue wait and
//! reclaim do. A destination with no pressure yet gets the cluster's median `k`, so an idle-
//! looking node is not assumed to stay pressure-free whatever lands on it. Crude, but monotone:
//! less usage never predicts more pressure.

use super::{
    loads::{index, Loads},
    snapshot::{Node, NodeLoad, Pod, PodLoad},
};
use crate::load::score::{Resource, ResourceLoad};

/// Utilisation is clamped below 1 in the queue model, where the curve is vertical.
const SATURATED: f64 = 0.99;

/// What a pod uses, for the resources that can be predicted.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_cores: f64,
    pub memory_bytes: f64,
    pub network_bytes_per_second: Option<f64>,
}

impl Usage {
    /// `None` unless CPU and working set were measured: without them no move can be predicted.
    pub fn of(load: &PodLoad) -> Option<Usage> {
        let valid = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
        Some(Usage {
            cpu_cores: valid(load.cpu_cores)?,
            memory_bytes: valid(load.working_set_bytes)?,
            network_bytes_per_second: valid(load.network_bytes_per_second),
        })
    }

    /// What the pod asked for, for a pod that must move although its use was not measured (an
    /// evacuation): the best estimate there is, and the one the scheduler places it by.
    pub fn requested(pod: &Pod) -> Usage {
        Usage {
            cpu_cores: pod.requests.cpu_millicores as f64 / 1000.0,
            memory_bytes: pod.requests.memory_bytes as f64,
            network_bytes_per_second: None,
        }
    }
}

/// A node's current (possibly already predicted) figures and what predicting them needs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeModel {
    pub loads: Loads,
    capacity: [Option<f64>; 3],
    /// The node's own pressure slope per resource, fitted once from the measured figures.
    slope: [f64; 3],
}

fn queue(utilisation: f64) -> f64 {
    let u = utilisation.clamp(0.0, SATURATED);
    u / (1.0 - u)
}

impl NodeModel {
    pub fn new(node: &Node, load: &NodeLoad) -> Self {
        let positive = |v: f64| (v.is_finite() && v > 0.0).then_some(v);
        let capacity = [
            positive(node.allocatable.cpu_millicores as f64 / 1000.0),
            positive(node.allocatable.memory_bytes as f64),
            load.network_capacity_bytes_per_second.and_then(positive),
        ];
        let loads = Loads::new(|r| load.resource(r).clone());
        let slope = Resource::ALL.map(|r| {
            let load = load.resource(r);
            match (load.utilisation, load.pressure) {
                (Some(u), Some(p)) if queue(u) > 0.0 && p.is_finite() && p > 0.0 => p / queue(u),
                _ => 0.0,
            }
        });
        Self {
            loads,
            capacity,
            slope,
        }
    }

    /// Utilisation the pod adds on this node, per resource; `None` where capacity or the pod's
    /// usage is unknown.
    pub fn share(&self, usage: &Usage, resource: Resource) -> Option<f64> {
        let used = match resource {
            Resource::Cpu => Some(usage.cpu_cores),
            Resource::Memory => Some(usage.memory_bytes),
            Resource::Network => usage.network_bytes_per_second,
        }?;
        Some(used / self.capacity[index(resource)]?)
    }

    /// The figures after `usage` leaves (`arrives == false`) or arrives. Arrivals use at least
    /// `floor` as pressure slope. Figures that cannot be predicted stay as they are.
    pub fn after(&self, usage: &Usage, arrives: bool, floor: &[f64; 3]) -> Loads {
        Loads::new(|r| {
            let load = self.loads.get(r).clone();
            let (Some(u), Some(share)) = (load.utilisation, self.share(usage, r)) else {
                return load;
            };
            let u_after = if arrives {
                u + share
            } else {
                (u - share).max(0.0)
            };
            let own = self.slope[index(r)];
            let slope = if arrives {
                own.max(floor[index(r)])
            } else {
                own
            };
            ResourceLoad {
                utilisation: Some(u_after),
                pressure: load
                    .pressure
                    .map(|p| (p + slope * (queue(u_after) - queue(u))).max(0.0)),
            }
        })
    }
}

/// Per resource, the median of the positive slopes (0 when there are none).
pub fn median_slopes<'a>(models: impl Iterator<Item = &'a NodeModel>) -> [f64; 3] {
    let mut per_resource: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for model in models {
        for (values, slope) in per_resource.iter_mut().zip(model.slope) {
            if slope > 0.0 {
                values.push(slope);
            }
        }
    }
    per_resource.map(|mut values| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::fixtures::{node, node_load, GIB};

    fn model(cpu_u: f64, cpu_p: f64) -> NodeModel {
        let mut load = node_load(cpu_u, 0.5);
        load.cpu.pressure = Some(cpu_p);
        NodeModel::new(&node("n", 4000, 16 * GIB), &load)
    }

    fn cpu(loads: &Loads) -> (f64, f64) {
        let l = loads.get(Resource::Cpu);
        (l.utilisation.unwrap_or(-1.0), l.pressure.unwrap_or(-1.0))
    }

    #[test]
    fn leaving_lowers_utilisation_and_pressure_steeply_near_saturation() {
        let m = model(0.95, 0.5);
        let usage = Usage {
            cpu_cores: 0.6,
            memory_bytes: GIB as f64,
            network_bytes_per_second: None,
        };
        let (u, p) = cpu(&m.after(&usage, false, &[0.0; 3]));
        assert!((u - 0.80).abs() < 1e-9);
        // 0.5 * (0.8 / 0.2) / (0.95 / 0.05) = 0.105
        assert!((p - 0.5 * 4.0 / 19.0).abs() < 1e-9, "{p}");
        let after = m.after(&usage, false, &[0.0; 3]);
        let memory = after.get(Resource::Memory);
        assert!((memory.utilisation.unwrap_or(0.0) - (0.5 - 1.0 / 16.0)).abs() < 1e-9);
    }

    #[test]
    fn arriving_uses_the_median_slope_when_the_node_has_none() {
        let m = model(0.5, 0.0);
        let usage = Usage {
            cpu_cores: 1.0,
            memory_bytes: 0.0,
            network_bytes_per_second: None,
        };
        let (u, p) = cpu(&m.after(&usage, true, &[0.1, 0.0, 0.0]));
        assert!((u - 0.75).abs() < 1e-9);
        assert!((p - 0.1 * (3.0 - 1.0)).abs() < 1e-9, "{p}");
    }

    #[test]
    fn unknown_capacity_or_usage_leaves_the_figure_alone() {
        let mut load = node_load(0.5, 0.5);
        load.network.utilisation = Some(0.7);
        let m = NodeModel::new(&node("n", 4000, 16 * GIB), &load);
        let usage = Usage {
            cpu_cores: 1.0,
            memory_bytes: 0.0,
            network_bytes_per_second: Some(1e6),
        };
        assert_eq!(m.share(&usage, Resource::Network), None);
        assert_eq!(
            m.after(&usage, true, &[0.0; 3])
                .get(Resource::Network)
                .utilisation,
            Some(0.7)
        );
    }

    #[test]
    fn median_of_positive_slopes() {
        let models = [
            model(0.5, 0.1),
            model(0.5, 0.3),
            model(0.5, 0.0),
            model(0.5, 0.2),
        ];
        let median = median_slopes(models.iter());
        assert!((median[0] - 0.2).abs() < 1e-9);
        assert_eq!(median[1], 0.0);
    }
}
