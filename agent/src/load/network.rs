//! Network load over one collection window: rates of the kernel's per-socket-owner counters.
//! `None` when packets are not counted per cgroup (no eBPF), never 0.

use ballast_common::NetCounters;
use serde::{Deserialize, Serialize};

use super::counter::{counter_delta, rate_per_second};

/// Traffic rates of one cgroup (or the node).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkFigures {
    pub receive_bytes_per_second: Option<f64>,
    pub transmit_bytes_per_second: Option<f64>,
    pub receive_packets_per_second: Option<f64>,
    pub transmit_packets_per_second: Option<f64>,
    /// `None` as well when the kernel programs count packets but not retransmissions.
    pub tcp_retransmits_per_second: Option<f64>,
}

/// Rates between two observations `window_ns` apart; `retransmits` says whether the
/// retransmission counter is live.
pub fn network_figures(
    before: Option<&NetCounters>,
    now: Option<&NetCounters>,
    window_ns: u64,
    retransmits: bool,
) -> NetworkFigures {
    let (Some(before), Some(now)) = (before, now) else {
        return NetworkFigures::default();
    };
    let rate = |field: fn(&NetCounters) -> u64| {
        rate_per_second(counter_delta(field(before), field(now)), window_ns)
    };
    NetworkFigures {
        receive_bytes_per_second: rate(|n| n.rx_bytes),
        transmit_bytes_per_second: rate(|n| n.tx_bytes),
        receive_packets_per_second: rate(|n| n.rx_packets),
        transmit_packets_per_second: rate(|n| n.tx_packets),
        tcp_retransmits_per_second: if retransmits {
            rate(|n| n.tcp_retransmits)
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(scale: u64) -> NetCounters {
        NetCounters {
            rx_bytes: 1000 * scale,
            rx_packets: 10 * scale,
            tx_bytes: 500 * scale,
            tx_packets: 5 * scale,
            tcp_retransmits: scale,
        }
    }

    #[test]
    fn rates_per_second() {
        let f = network_figures(Some(&counters(1)), Some(&counters(3)), 2_000_000_000, true);
        assert_eq!(f.receive_bytes_per_second, Some(1000.0));
        assert_eq!(f.transmit_packets_per_second, Some(5.0));
        assert_eq!(f.tcp_retransmits_per_second, Some(1.0));
    }

    #[test]
    fn not_counted_is_none() {
        assert_eq!(
            network_figures(None, Some(&counters(1)), 1_000, true),
            NetworkFigures::default()
        );
        let f = network_figures(Some(&counters(1)), Some(&counters(2)), 1_000_000_000, false);
        assert_eq!(f.tcp_retransmits_per_second, None);
        assert!(f.receive_bytes_per_second.is_some());
    }
}
