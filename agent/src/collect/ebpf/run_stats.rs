//! When the kernel's BPF run-time statistics are on, and what they say.
//!
//! They are one switch for the whole node (`kernel.bpf_stats_enabled`): while on, *every* BPF
//! program on it (the CNI's datapath included) pays two clock reads per run, about 4-5 % of a
//! context-switch storm on a 2-vCPU VM (BENCHMARKS.md). Sampling measures the programs' cost
//! for a few seconds a minute.

use std::os::fd::OwnedFd;

use aya::sys::{enable_stats, Stats};
use tracing::{debug, warn};

/// When statistics are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunStats {
    /// On while the agent runs.
    Always,
    /// On for the last [`SAMPLE_WINDOW_NS`] of every [`SAMPLE_PERIOD_NS`].
    Sampled,
    /// Never turned on by the agent.
    Off,
}

/// Sampling period of [`RunStats::Sampled`].
pub const SAMPLE_PERIOD_NS: u64 = 60_000_000_000;
/// Length of each sampling window.
pub const SAMPLE_WINDOW_NS: u64 = 5_000_000_000;

impl RunStats {
    /// Whether statistics should be on `since_start_ns` after the first collection. Sampling
    /// windows close each period rather than open it, so start-up is not measured.
    pub fn wanted(self, since_start_ns: u64) -> bool {
        match self {
            RunStats::Always => true,
            RunStats::Off => false,
            RunStats::Sampled => {
                since_start_ns % SAMPLE_PERIOD_NS >= SAMPLE_PERIOD_NS - SAMPLE_WINDOW_NS
            }
        }
    }
}

/// Run-time statistics of one kernel program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Run-time statistics of the kernel programs, as far as they were measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStatsReport {
    /// Whether statistics are being collected right now. Counts only advance while they are, so
    /// the cost per run is `rate(run seconds) / rate(runs)` in every mode.
    pub enabled: bool,
    pub programs: Vec<ProgramStats>,
}

/// The switch itself: holds the BPF_ENABLE_STATS descriptor while statistics should be on.
#[derive(Debug)]
pub struct RunStatsSwitch {
    mode: RunStats,
    held: Option<OwnedFd>,
    /// Monotonic time of the first decision (the origin of sampling windows).
    origin_ns: Option<u64>,
    /// Statistics have been on at least once (before that, counts would be a fake zero).
    seen: bool,
    /// The kernel refused to enable statistics (logged once).
    refused: bool,
}

impl RunStatsSwitch {
    pub fn new(mode: RunStats) -> Self {
        Self {
            mode,
            held: None,
            origin_ns: None,
            seen: false,
            refused: false,
        }
    }

    /// Turns statistics on or off as the mode wants at `now_ns` (CLOCK_MONOTONIC).
    pub fn schedule(&mut self, now_ns: u64) {
        let origin = *self.origin_ns.get_or_insert(now_ns);
        let wanted = self.mode.wanted(now_ns.saturating_sub(origin));
        match (wanted, self.held.is_some()) {
            (true, false) if !self.refused => match enable_stats(Stats::RunTime) {
                Ok(fd) => {
                    self.held = Some(fd);
                    self.seen = true;
                    debug!("BPF run-time statistics on");
                }
                Err(err) => {
                    self.refused = true;
                    warn!(error = %err, "BPF run-time statistics unavailable");
                }
            },
            (false, true) => {
                self.held = None;
                debug!("BPF run-time statistics off");
            }
            _ => {}
        }
    }

    /// Whether statistics are on now.
    pub fn enabled(&self) -> bool {
        self.held.is_some()
    }

    /// Whether they have been on at least once.
    pub fn seen(&self) -> bool {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_windows_close_each_period() {
        let s = 1_000_000_000;
        assert!(!RunStats::Sampled.wanted(0));
        assert!(!RunStats::Sampled.wanted(54 * s));
        assert!(RunStats::Sampled.wanted(55 * s));
        assert!(RunStats::Sampled.wanted(59 * s + s / 2));
        assert!(!RunStats::Sampled.wanted(60 * s));
        assert!(RunStats::Sampled.wanted(119 * s));
        assert!(RunStats::Always.wanted(0) && !RunStats::Off.wanted(55 * s));
    }
}
