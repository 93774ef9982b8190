//! Modelling load: cumulative counters in, rates and pressure figures out. Pure: no I/O, no clock.

pub mod counter;
pub mod cpu;
pub mod histogram;
