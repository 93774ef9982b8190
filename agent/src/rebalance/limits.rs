//! Limits that span rounds: the token bucket and the per-workload cooldown with backoff.

use super::{
    policy::{CooldownPolicy, TokenBucketPolicy},
    snapshot::Timestamp,
    state::{Arrival, InFlight, TokenBucket, WorkloadMemory},
};

/// The bucket refilled up to `now`: `refill_per_minute` tokens per minute, at most `burst`. A
/// bucket never counted is full; a clock that went backwards adds nothing.
pub fn refill(bucket: &TokenBucket, policy: &TokenBucketPolicy, now: Timestamp) -> TokenBucket {
    let burst = f64::from(policy.burst);
    let tokens = match bucket.updated {
        None => burst,
        Some(updated) => {
            let elapsed = now.seconds_since(updated).max(0) as f64;
            (bucket.tokens + elapsed * policy.refill_per_minute / 60.0).min(burst)
        }
    };
    TokenBucket {
        tokens: tokens.max(0.0),
        updated: Some(match bucket.updated {
            Some(updated) => updated.max(now),
            None => now,
        }),
    }
}

/// Whether the workload is resting, and until when.
pub fn cooling_down(memory: &WorkloadMemory, now: Timestamp) -> Option<Timestamp> {
    memory.cooldown_until.filter(|until| *until > now)
}

// The backoff. Every eviction makes its workload rest `base_seconds`; each *strike* doubles the
// rest, up to `max_seconds`, and a window (`window_seconds`) without a strike clears them. A
// strike is the workload coming back to a hot node: its replacement arrives on a source, or on
// the node it was evicted from, so the move did not take and trying again soon would likely do
// the same. Being moved off a node it was moved onto (arrived on while that node was not hot)
// within the window is not allowed at all (eligibility: `came_back`): that is the ping-pong
// itself, and backing off only after it would not undo the move. Moving a second replica of a big workload off the
// same hot node is neither: spreading a workload piled onto a few nodes takes many moves of
// that one workload, and counting each as a repeat held a 60-replica rollout to three moves in
// two hours (BENCHMARKS.md, session 4).

/// The workload's memory after evicting `in_flight` from its source at `now`: it rests
/// `base * 2^strikes`.
pub fn record_eviction(
    memory: &WorkloadMemory,
    policy: &CooldownPolicy,
    now: Timestamp,
    in_flight: InFlight,
) -> WorkloadMemory {
    let strikes = live_strikes(memory, policy, now);
    WorkloadMemory {
        cooldown_until: Some(now.plus_seconds(cooldown_seconds(policy, strikes))),
        strikes,
        in_flight: Some(in_flight),
        arrivals: recent_arrivals(memory, policy, now).cloned().collect(),
        ..memory.clone()
    }
}

/// The workload's memory once the replacement of its eviction in flight is seen Ready on `node`
/// at `now`. `hot`: that node is a source this round or the one the pod was evicted from. That
/// is a strike, and the rest is counted again from `now`, doubled; it is not an arrival for the
/// `came_back` rule (the planner did not send it there, and moving it off is a retry, which the
/// backoff paces). Otherwise the arrival is remembered for the window.
pub fn record_arrival(
    memory: &WorkloadMemory,
    policy: &CooldownPolicy,
    now: Timestamp,
    node: &str,
    hot: bool,
) -> WorkloadMemory {
    let mut next = WorkloadMemory {
        in_flight: None,
        arrivals: recent_arrivals(memory, policy, now).cloned().collect(),
        strikes: live_strikes(memory, policy, now),
        ..memory.clone()
    };
    if hot {
        next.strikes = next.strikes.saturating_add(1);
        next.last_strike = Some(now);
        let rest = now.plus_seconds(cooldown_seconds(policy, next.strikes));
        next.cooldown_until = next.cooldown_until.max(Some(rest));
    } else {
        next.arrivals.retain(|a| a.node != node);
        next.arrivals.push(Arrival {
            node: node.to_owned(),
            at: now,
        });
    }
    next
}

/// The strikes that still count at `now`: none once a window has passed since the last one.
fn live_strikes(memory: &WorkloadMemory, policy: &CooldownPolicy, now: Timestamp) -> u32 {
    match memory.last_strike {
        Some(at) if now.seconds_since(at) < window(policy) => memory.strikes,
        _ => 0,
    }
}

fn recent_arrivals<'m>(
    memory: &'m WorkloadMemory,
    policy: &CooldownPolicy,
    now: Timestamp,
) -> impl Iterator<Item = &'m Arrival> + 'm {
    let window = window(policy);
    memory
        .arrivals
        .iter()
        .filter(move |a| now.seconds_since(a.at) < window)
}

/// The arrival of one of the workload's replacements on `node` within the window, if any.
pub fn arrived_within_window<'m>(
    memory: &'m WorkloadMemory,
    policy: &CooldownPolicy,
    node: &str,
    now: Timestamp,
) -> Option<&'m Arrival> {
    recent_arrivals(memory, policy, now).find(|a| a.node == node)
}

/// `base * 2^strikes`, at most `max`.
pub fn cooldown_seconds(policy: &CooldownPolicy, strikes: u32) -> i64 {
    let factor = 1u64.checked_shl(strikes).unwrap_or(u64::MAX);
    let seconds = policy
        .base_seconds
        .saturating_mul(factor)
        .min(policy.max_seconds);
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Whether an eviction in flight has waited `timeout_seconds` or more for a Ready replacement:
/// then it stops blocking its workload (the replacement may be stuck Pending or crash-looping);
/// the cooldown, `min_replicas` and the PDBs still apply.
pub fn in_flight_expired(in_flight: &InFlight, timeout_seconds: u64, now: Timestamp) -> bool {
    now.seconds_since(in_flight.evicted_at) >= i64::try_from(timeout_seconds).unwrap_or(i64::MAX)
}

/// Whether the memory still matters at `now`: an eviction in flight, a cooldown running, strikes
/// that still count or arrivals a new eviction could come back from.
pub fn worth_keeping(memory: &WorkloadMemory, policy: &CooldownPolicy, now: Timestamp) -> bool {
    memory.in_flight.is_some()
        || cooling_down(memory, now).is_some()
        || live_strikes(memory, policy, now) > 0
        || recent_arrivals(memory, policy, now).next().is_some()
}

fn window(policy: &CooldownPolicy) -> i64 {
    i64::try_from(policy.window_seconds).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(at: i64) -> InFlight {
        InFlight {
            pod_uid: "u".to_owned(),
            pod_name: "p".to_owned(),
            source: "n".to_owned(),
            evicted_at: Timestamp(at),
        }
    }

    #[test]
    fn bucket_starts_full_refills_and_caps() {
        let policy = TokenBucketPolicy {
            burst: 5,
            refill_per_minute: 6.0,
        };
        let full = refill(&TokenBucket::default(), &policy, Timestamp(100));
        assert_eq!(full.tokens, 5.0);
        let empty = TokenBucket {
            tokens: 0.0,
            updated: Some(Timestamp(100)),
        };
        assert_eq!(refill(&empty, &policy, Timestamp(130)).tokens, 3.0);
        assert_eq!(refill(&empty, &policy, Timestamp(10_000)).tokens, 5.0);
        // A clock going backwards adds nothing and does not move the reference back.
        let back = refill(&empty, &policy, Timestamp(50));
        assert_eq!(back.tokens, 0.0);
        assert_eq!(back.updated, Some(Timestamp(100)));
    }

    const POLICY: CooldownPolicy = CooldownPolicy {
        base_seconds: 100,
        max_seconds: 350,
        window_seconds: 1000,
    };

    #[test]
    fn moving_more_replicas_off_the_same_hot_node_is_no_strike() {
        let mut memory = WorkloadMemory::default();
        for at in [0, 100, 200, 300] {
            memory = record_eviction(&memory, &POLICY, Timestamp(at), in_flight(at));
            assert_eq!(memory.strikes, 0);
            assert_eq!(memory.cooldown_until, Some(Timestamp(at + 100)));
            // Each replacement lands on a node that is not hot.
            memory = record_arrival(&memory, &POLICY, Timestamp(at + 60), "cold", false);
            assert_eq!(memory.in_flight, None);
            assert_eq!(memory.strikes, 0);
            assert_eq!(memory.cooldown_until, Some(Timestamp(at + 100)));
        }
        assert_eq!(cooling_down(&memory, Timestamp(350)), Some(Timestamp(400)));
        assert_eq!(cooling_down(&memory, Timestamp(400)), None);
    }

    #[test]
    fn arriving_on_a_hot_node_is_a_strike_and_doubles_the_rest_up_to_max() {
        let first = record_eviction(
            &WorkloadMemory::default(),
            &POLICY,
            Timestamp(0),
            in_flight(0),
        );
        let landed = record_arrival(&first, &POLICY, Timestamp(60), "hot", true);
        assert!(landed.arrivals.is_empty(), "a retry, not a move to protect");
        assert_eq!(landed.strikes, 1);
        assert_eq!(landed.last_strike, Some(Timestamp(60)));
        assert_eq!(
            landed.cooldown_until,
            Some(Timestamp(260)),
            "counted again from the arrival, doubled"
        );
        let second = record_eviction(&landed, &POLICY, Timestamp(300), in_flight(300));
        assert_eq!(second.strikes, 1);
        assert_eq!(second.cooldown_until, Some(Timestamp(500)));
        let again = record_arrival(&second, &POLICY, Timestamp(360), "hot", true);
        assert_eq!(again.strikes, 2);
        assert_eq!(again.cooldown_until, Some(Timestamp(710)), "capped at max");
        let huge = WorkloadMemory {
            strikes: 200,
            last_strike: Some(Timestamp(360)),
            ..again.clone()
        };
        let capped = record_eviction(&huge, &POLICY, Timestamp(400), in_flight(400));
        assert_eq!(capped.cooldown_until, Some(Timestamp(750)));
    }

    #[test]
    fn a_window_without_a_strike_clears_the_strikes() {
        let struck = WorkloadMemory {
            strikes: 3,
            last_strike: Some(Timestamp(0)),
            ..WorkloadMemory::default()
        };
        let soon = record_eviction(&struck, &POLICY, Timestamp(999), in_flight(999));
        assert_eq!(soon.strikes, 3);
        assert_eq!(soon.cooldown_until, Some(Timestamp(999 + 350)));
        let quiet = record_eviction(&struck, &POLICY, Timestamp(1000), in_flight(1000));
        assert_eq!(quiet.strikes, 0);
        assert_eq!(quiet.cooldown_until, Some(Timestamp(1100)));
        let landed = record_arrival(&struck, &POLICY, Timestamp(1000), "hot", true);
        assert_eq!(landed.strikes, 1, "a new strike starts from zero");
    }

    #[test]
    fn arrivals_are_remembered_per_node_for_the_window() {
        let mut memory = WorkloadMemory::default();
        memory = record_arrival(&memory, &POLICY, Timestamp(0), "a", false);
        memory = record_arrival(&memory, &POLICY, Timestamp(500), "b", false);
        memory = record_arrival(&memory, &POLICY, Timestamp(600), "a", false);
        let nodes: Vec<(&str, i64)> = memory
            .arrivals
            .iter()
            .map(|a| (a.node.as_str(), a.at.0))
            .collect();
        assert_eq!(nodes, [("b", 500), ("a", 600)]);
        let found = |node, at| arrived_within_window(&memory, &POLICY, node, Timestamp(at));
        assert_eq!(found("a", 1599).map(|a| a.at), Some(Timestamp(600)));
        assert_eq!(found("a", 1600), None);
        assert_eq!(found("b", 1499).map(|a| a.at), Some(Timestamp(500)));
        assert_eq!(found("b", 1500), None);
        assert_eq!(found("c", 700), None);
        // An eviction keeps only the arrivals still within the window.
        let evicted = record_eviction(&memory, &POLICY, Timestamp(1550), in_flight(1550));
        assert_eq!(evicted.arrivals.len(), 1);
    }

    #[test]
    fn an_eviction_in_flight_expires_after_the_timeout() {
        let eviction = in_flight(1000);
        assert!(!in_flight_expired(&eviction, 600, Timestamp(1599)));
        assert!(in_flight_expired(&eviction, 600, Timestamp(1600)));
        assert!(!in_flight_expired(&eviction, u64::MAX, Timestamp(i64::MAX)));
    }

    #[test]
    fn huge_strike_counts_saturate() {
        let policy = CooldownPolicy::default();
        assert_eq!(cooldown_seconds(&policy, 200), policy.max_seconds as i64);
    }

    #[test]
    fn memory_is_dropped_once_nothing_is_left_to_remember() {
        let mut memory = record_eviction(
            &WorkloadMemory::default(),
            &POLICY,
            Timestamp(0),
            in_flight(0),
        );
        assert!(worth_keeping(&memory, &POLICY, Timestamp(0)));
        memory.in_flight = None;
        assert!(
            worth_keeping(&memory, &POLICY, Timestamp(99)),
            "cooling down"
        );
        assert!(!worth_keeping(&memory, &POLICY, Timestamp(100)));
        let struck = record_arrival(&memory, &POLICY, Timestamp(50), "hot", true);
        assert!(worth_keeping(&struck, &POLICY, Timestamp(1049)), "strike");
        assert!(!worth_keeping(&struck, &POLICY, Timestamp(1050)));
        let landed = record_arrival(&memory, &POLICY, Timestamp(50), "cold", false);
        assert!(worth_keeping(&landed, &POLICY, Timestamp(1049)), "arrival");
        assert!(!worth_keeping(&landed, &POLICY, Timestamp(1050)));
    }
}
