//! The subcommands: thin wiring of collect, load and serve, and terminal output.

pub mod agent;
pub mod plan;
pub mod simulate;
pub mod top;
