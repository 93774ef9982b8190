//! Ballast node agent: measures per-container pressure (collect), models load (load), serves it
//! over HTTP (serve) and shows it in a terminal (cli); plans rebalancing evictions (rebalance)
//! and tries them on a simulated cluster (sim).

pub mod cli;
pub mod cluster;
pub mod collect;
pub mod load;
pub mod rebalance;
pub mod serve;
pub mod sim;
pub mod state;
