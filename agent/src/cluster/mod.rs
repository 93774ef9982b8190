//! Talking to Kubernetes: the agent in a cluster (identity enrichment, authenticated /v1/load),
//! leader election with fencing, and the leader's rounds (cluster view, load gathering, plan,
//! evictions, soft taints, Events, durable planner memory); one-shot reads of the cluster for
//! `ballast plan` and `ballast check`.
//!
//! The pure parts (election decisions, the fence's rule, snapshot and load conversion, taint
//! reconciliation, the state's size bound) are unit-tested beside their code; the I/O around them
//! is thin.

pub mod alerted;
pub mod api_metrics;
pub mod capture;
pub mod client;
pub mod decisions;
pub mod election;
pub mod execute;
pub mod fence;
pub mod gather;
pub mod leader;
pub mod loads;
pub mod locate;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod quantity;
pub mod read;
pub mod taints;
pub mod view;
