//! The subcommands: thin wiring of collect, load and serve, and terminal output.

pub mod agent;
pub mod check;
mod input;
pub mod plan;
pub mod simulate;
mod text;
pub mod top;
