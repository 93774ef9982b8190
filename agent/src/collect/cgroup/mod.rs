//! The cgroup v2 hierarchy: where it is mounted, which cgroup an id names, and what runs in it.

pub mod hierarchy;
pub mod identity;
