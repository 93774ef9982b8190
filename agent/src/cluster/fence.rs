//! Fencing: the leader may change the cluster only while its last successful Lease renewal is
//! younger than the renew deadline, counted from when that renewal request was *sent*, on the
//! monotonic clock.
//!
//! Why this is enough: followers take over only after seeing the Lease unchanged for the lease
//! duration (15 s), counted from when *they* saw the last renewal, which is after it was sent.
//! The leader stops at sent + renew deadline (10 s), so the two never act at the same time,
//! with the difference (5 s) as the margin for clock rate differences and for a write that was
//! permitted just before the deadline and is still in flight: every permit carries the time
//! left, and the write is given at most that long.
//!
//! A term number separates leaderships: a round that began under one term can never write under
//! a later one, even if this agent lost and regained the Lease in between.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    #[error("not the leader")]
    NotLeader,
    #[error("leadership changed since this round began (term {began}, now {now})")]
    TermChanged { began: u64, now: u64 },
    #[error("the last successful Lease renewal was sent {age:?} ago, at or past the renew deadline {deadline:?}")]
    Expired { age: Duration, deadline: Duration },
}

/// Leave to write: the term it belongs to and how long it stays valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permit {
    pub term: u64,
    /// Time left before the renew deadline; a write must not take longer.
    pub remaining: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// When the last successful renewal of the current term was sent; `None` while not leading.
    renewal_sent: Option<Instant>,
    term: u64,
}

/// Shared between the elector (which renews and revokes) and the leader loop (which checks).
#[derive(Clone, Debug)]
pub struct Fence {
    state: Arc<Mutex<State>>,
    renew_deadline: Duration,
}

/// The rule itself: a renewal sent at `sent` permits writes strictly before `sent + deadline`.
pub fn time_left(sent: Instant, now: Instant, deadline: Duration) -> Result<Duration, Fenced> {
    let age = now.saturating_duration_since(sent);
    if age < deadline {
        Ok(deadline - age)
    } else {
        Err(Fenced::Expired { age, deadline })
    }
}

impl Fence {
    pub fn new(renew_deadline: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            renew_deadline,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A renewal (or acquisition) sent at `sent` succeeded. Starts a new term when not leading
    /// (or when the previous renewal had already expired); returns the term.
    pub fn renewed(&self, sent: Instant, now: Instant) -> u64 {
        let mut state = self.lock();
        let live = state
            .renewal_sent
            .is_some_and(|previous| time_left(previous, now, self.renew_deadline).is_ok());
        if !live {
            state.term += 1;
        }
        // A late answer to an older request must not move the time back.
        state.renewal_sent = Some(match state.renewal_sent {
            Some(previous) if live && previous > sent => previous,
            _ => sent,
        });
        state.term
    }

    /// Leadership is over (lost, or given up): nothing more may be written under this term.
    pub fn revoke(&self) {
        self.lock().renewal_sent = None;
    }

    /// The current term, while leading and within the deadline.
    pub fn leading_term(&self, now: Instant) -> Option<u64> {
        self.permit(now).ok().map(|p| p.term)
    }

    /// Leave to write at `now`, in whatever term is current.
    pub fn permit(&self, now: Instant) -> Result<Permit, Fenced> {
        let state = self.lock();
        let sent = state.renewal_sent.ok_or(Fenced::NotLeader)?;
        let remaining = time_left(sent, now, self.renew_deadline)?;
        Ok(Permit {
            term: state.term,
            remaining,
        })
    }

    /// Leave to write at `now` for a round that began in `term`: checked immediately before every
    /// eviction, taint change, Event and state write.
    pub fn check(&self, term: u64, now: Instant) -> Result<Permit, Fenced> {
        let permit = self.permit(now)?;
        if permit.term != term {
            return Err(Fenced::TermChanged {
                began: term,
                now: permit.term,
            });
        }
        Ok(permit)
    }

    /// [`Fence::check`] now.
    pub fn check_now(&self, term: u64) -> Result<Permit, Fenced> {
        self.check(term, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEADLINE: Duration = Duration::from_secs(10);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_boundary_is_the_deadline_after_sending() {
        let sent = Instant::now();
        assert_eq!(time_left(sent, sent, DEADLINE), Ok(DEADLINE));
        assert_eq!(time_left(sent, sent + ms(9_999), DEADLINE), Ok(ms(1)));
        assert_eq!(
            time_left(sent, sent + DEADLINE, DEADLINE),
            Err(Fenced::Expired {
                age: DEADLINE,
                deadline: DEADLINE
            }),
            "exactly at the deadline is too late"
        );
        assert!(time_left(sent, sent + ms(60_000), DEADLINE).is_err());
        // A clock reading before the send (cannot happen on a monotonic clock) is age 0.
        assert_eq!(time_left(sent + ms(5), sent, DEADLINE), Ok(DEADLINE));
    }

    #[test]
    fn not_leading_means_no_permit() {
        let fence = Fence::new(DEADLINE);
        let now = Instant::now();
        assert_eq!(fence.permit(now), Err(Fenced::NotLeader));
        assert_eq!(fence.leading_term(now), None);
    }

    #[test]
    fn measured_from_the_send_not_the_answer() {
        let fence = Fence::new(DEADLINE);
        let sent = Instant::now();
        // The renewal took 4 s to come back: 6 s are left, not 10.
        let term = fence.renewed(sent, sent + ms(4_000));
        let permit = fence.check(term, sent + ms(4_000)).expect("leading");
        assert_eq!(permit.remaining, ms(6_000));
        assert!(fence.check(term, sent + ms(9_999)).is_ok());
        assert!(matches!(
            fence.check(term, sent + DEADLINE),
            Err(Fenced::Expired { .. })
        ));
    }

    #[test]
    fn renewals_extend_the_term_and_a_late_answer_does_not_shorten_it() {
        let fence = Fence::new(DEADLINE);
        let t0 = Instant::now();
        let term = fence.renewed(t0, t0);
        assert_eq!(
            fence.renewed(t0 + ms(2_000), t0 + ms(2_100)),
            term,
            "same term"
        );
        // The answer to a request sent at t0 + 1 s arrives last.
        assert_eq!(fence.renewed(t0 + ms(1_000), t0 + ms(2_200)), term);
        assert_eq!(
            fence.check(term, t0 + ms(11_000)).map(|p| p.remaining),
            Ok(ms(1_000)),
            "still counted from the renewal sent at +2 s"
        );
    }

    #[test]
    fn revoking_ends_the_term_and_a_new_one_refuses_old_rounds() {
        let fence = Fence::new(DEADLINE);
        let t0 = Instant::now();
        let first = fence.renewed(t0, t0);
        fence.revoke();
        assert_eq!(fence.check(first, t0 + ms(1)), Err(Fenced::NotLeader));
        let second = fence.renewed(t0 + ms(2_000), t0 + ms(2_000));
        assert_ne!(first, second);
        assert_eq!(
            fence.check(first, t0 + ms(2_001)),
            Err(Fenced::TermChanged {
                began: first,
                now: second
            })
        );
        assert!(fence.check(second, t0 + ms(2_001)).is_ok());
    }

    #[test]
    fn a_renewal_after_expiry_starts_a_new_term() {
        let fence = Fence::new(DEADLINE);
        let t0 = Instant::now();
        let first = fence.renewed(t0, t0);
        // Partitioned for 12 s, then a renewal gets through (nobody else took the Lease).
        let second = fence.renewed(t0 + ms(12_000), t0 + ms(12_050));
        assert_ne!(first, second, "a round of the expired term must not resume");
        assert!(fence.check(second, t0 + ms(12_050)).is_ok());
    }
}
