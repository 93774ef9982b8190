//! Measuring: kernel programs and cgroupfs readers, per cgroup.

pub mod cgroup;
pub mod cgroupfs;
