//! Rebalancing: one planning round turns a cluster snapshot, the planner's memory and a policy
//! into evictions with reasons. Pure: no I/O, no clock (time is an argument), deterministic.
//!
//! - [`snapshot`]: the input data (nodes, pods, PDBs, the agents' load);
//! - [`policy`]: thresholds, eligibility and limits, read from TOML;
//! - [`directives`]: what active alerts ask of a round (relieve a node now, drain one);
//! - [`state`]: what is remembered between rounds (hysteresis, cooldowns, token bucket);
//! - [`plan`]: the output types and [`plan::plan`], the round itself;
//! - [`migratability`]: the report of `ballast check`, whether each workload can be moved and why
//!   not, by the same rules.

mod classify;
pub mod directives;
mod eligibility;
mod explain;
#[cfg(test)]
pub(crate) mod fixtures;
mod limits;
mod loads;
mod matching;
pub mod migratability;
pub mod plan;
pub mod policy;
mod predict;
#[cfg(test)]
mod properties;
mod round;
pub mod snapshot;
pub mod state;

pub use directives::Directives;
pub use plan::{plan, plan_directed, Plan};
pub use policy::Policy;
pub use snapshot::{ClusterSnapshot, Timestamp};
pub use state::RebalanceState;
