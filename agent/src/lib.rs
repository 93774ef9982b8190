//! Ballast node agent: measures per-container pressure (collect), models load (load), serves it
//! over HTTP (serve) and shows it in a terminal (cli).

pub mod cli;
pub mod collect;
pub mod load;
pub mod serve;
pub mod state;
