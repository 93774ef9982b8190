//! A discrete-time cluster simulator: the planner, unchanged, against a model of the cluster
//! (nodes, workloads with load traces, kube-scheduler's placement by requests, eviction and
//! restart delays, PDBs), side by side with the descheduler's LowNodeUtilization baseline on the
//! same scenario and seed.
//!
//! Pure: no I/O, no clock (simulated time is a counter), randomness from the scenario's seed.

pub mod baseline;
pub mod cluster;
pub mod metrics;
pub mod physics;
pub mod report;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod scheduler;
pub mod snapshot;
pub mod trace;

/// Why a simulation cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("replica {slot} of workload `{workload}` fits on no node at the start of the run: lower its requests, add nodes, or fix its place_on / node_selector")]
    InitialPlacement { workload: String, slot: u32 },
}
