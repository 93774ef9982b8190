//! Limits that span rounds: the token bucket and the per-workload cooldown with backoff.

use super::{
    policy::{CooldownPolicy, TokenBucketPolicy},
    snapshot::Timestamp,
    state::{InFlight, TokenBucket, WorkloadMemory},
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

/// The workload's memory after an eviction at `now`: an eviction within `window_seconds` of the
/// previous one is a strike, and each strike doubles the cooldown (up to `max_seconds`); a quiet
/// window clears the strikes.
pub fn record_eviction(
    memory: &WorkloadMemory,
    policy: &CooldownPolicy,
    now: Timestamp,
    in_flight: InFlight,
) -> WorkloadMemory {
    let again_soon = memory
        .last_eviction
        .is_some_and(|last| now.seconds_since(last) < window(policy));
    let strikes = if again_soon {
        memory.strikes.saturating_add(1)
    } else {
        0
    };
    WorkloadMemory {
        last_eviction: Some(now),
        cooldown_until: Some(now.plus_seconds(cooldown_seconds(policy, strikes))),
        strikes,
        in_flight: Some(in_flight),
    }
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

/// Whether the memory still matters at `now`: an eviction in flight, a cooldown running, or
/// strikes that a new eviction within the window would build on.
pub fn worth_keeping(memory: &WorkloadMemory, policy: &CooldownPolicy, now: Timestamp) -> bool {
    memory.in_flight.is_some()
        || cooling_down(memory, now).is_some()
        || memory
            .last_eviction
            .is_some_and(|last| now.seconds_since(last) < window(policy))
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

    #[test]
    fn cooldown_doubles_while_evictions_keep_coming_and_resets_after_a_quiet_window() {
        let policy = CooldownPolicy {
            base_seconds: 100,
            max_seconds: 350,
            window_seconds: 1000,
        };
        let first = record_eviction(
            &WorkloadMemory::default(),
            &policy,
            Timestamp(0),
            in_flight(0),
        );
        assert_eq!(first.cooldown_until, Some(Timestamp(100)));
        assert_eq!(cooling_down(&first, Timestamp(50)), Some(Timestamp(100)));
        assert_eq!(cooling_down(&first, Timestamp(100)), None);
        let second = record_eviction(&first, &policy, Timestamp(200), in_flight(200));
        assert_eq!(second.strikes, 1);
        assert_eq!(second.cooldown_until, Some(Timestamp(400)));
        let third = record_eviction(&second, &policy, Timestamp(500), in_flight(500));
        assert_eq!(third.strikes, 2);
        assert_eq!(third.cooldown_until, Some(Timestamp(850)), "capped at max");
        let quiet = record_eviction(&third, &policy, Timestamp(5000), in_flight(5000));
        assert_eq!(quiet.strikes, 0);
        assert_eq!(quiet.cooldown_until, Some(Timestamp(5100)));
    }

    #[test]
    fn huge_strike_counts_saturate() {
        let policy = CooldownPolicy::default();
        assert_eq!(cooldown_seconds(&policy, 200), policy.max_seconds as i64);
    }

    #[test]
    fn memory_is_dropped_once_nothing_is_left_to_remember() {
        let policy = CooldownPolicy::default();
        let mut memory = record_eviction(
            &WorkloadMemory::default(),
            &policy,
            Timestamp(0),
            in_flight(0),
        );
        assert!(worth_keeping(&memory, &policy, Timestamp(0)));
        memory.in_flight = None;
        assert!(worth_keeping(&memory, &policy, Timestamp(3599)));
        assert!(!worth_keeping(&memory, &policy, Timestamp(3600)));
    }
}
