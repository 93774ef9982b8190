//! The subcommands: thin wiring of collect, load and serve, and terminal output.

pub mod agent;
mod input;
pub mod plan;
pub mod simulate;
mod text;
pub mod top;
