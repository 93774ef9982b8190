//! Measuring: kernel programs and cgroupfs readers, per cgroup.

pub mod btf;
pub mod cgroup;
pub mod cgroupfs;
pub mod collector;
pub mod ebpf;
pub mod sample;
pub mod worker;
