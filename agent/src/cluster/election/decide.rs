//! What a candidate does with the Lease it sees: client-go's `tryAcquireOrRenew`, as a pure
//! function of the observed record, the candidate's identity and its own monotonic clock.
//!
//! Clock skew: a foreign Lease's `renewTime` is never compared with this host's clock. As in
//! client-go, a candidate notes on its own monotonic clock when it last saw the record change,
//! and the Lease counts as expired only once the record has stayed unchanged for
//! `leaseDurationSeconds` of that clock. A holder whose wall clock runs hours ahead or behind is
//! judged by whether it keeps renewing, not by what time it writes.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::LeaseSpec, apimachinery::pkg::apis::meta::v1::MicroTime, jiff::Timestamp,
};
use tokio::time::Instant;

/// The election's timing; [`ElectionConfig::default`] is client-go's (15 s / 10 s / 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How long followers wait on an unchanged Lease before taking it.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal (see `fence`).
    pub renew_deadline: Duration,
    /// How often candidates look at the Lease and the leader renews it.
    pub retry_period: Duration,
}

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--lease-duration ({lease:?}) must be longer than --renew-deadline ({renew:?}): the gap is what keeps an old leader from acting once a new one may have taken over")]
    LeaseNotLongerThanDeadline { lease: Duration, renew: Duration },
    #[error("--renew-deadline ({renew:?}) must be longer than --retry-period ({retry:?}), or the leader could not retry a single failed renewal in time")]
    DeadlineNotLongerThanRetry { renew: Duration, retry: Duration },
    #[error(
        "--lease-duration must be a whole number of seconds (the Lease stores seconds), got {0:?}"
    )]
    FractionalLease(Duration),
}

impl ElectionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_duration.subsec_nanos() != 0 || self.lease_duration.is_zero() {
            return Err(ConfigError::FractionalLease(self.lease_duration));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(ConfigError::LeaseNotLongerThanDeadline {
                lease: self.lease_duration,
                renew: self.renew_deadline,
            });
        }
        if self.renew_deadline <= self.retry_period {
            return Err(ConfigError::DeadlineNotLongerThanRetry {
                renew: self.renew_deadline,
                retry: self.retry_period,
            });
        }
        Ok(())
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The fields of a Lease's spec the election reads and writes (client-go's
/// `LeaderElectionRecord`). An empty holder means nobody holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub holder: String,
    pub lease_duration_seconds: i32,
    pub acquire_time: Option<Timestamp>,
    pub renew_time: Option<Timestamp>,
    pub transitions: i32,
}

impl LeaseRecord {
    pub fn from_spec(spec: Option<&LeaseSpec>) -> Self {
        let Some(spec) = spec else {
            return Self::default();
        };
        Self {
            holder: spec.holder_identity.clone().unwrap_or_default(),
            lease_duration_seconds: spec.lease_duration_seconds.unwrap_or(0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }

    /// The spec to write; fields the election does not own (preferredHolder, strategy) are
    /// kept from `base`.
    pub fn to_spec(&self, base: Option<&LeaseSpec>) -> LeaseSpec {
        let mut spec = base.cloned().unwrap_or_default();
        spec.holder_identity = Some(self.holder.clone());
        spec.lease_duration_seconds = Some(self.lease_duration_seconds);
        spec.acquire_time = self.acquire_time.map(MicroTime);
        spec.renew_time = self.renew_time.map(MicroTime);
        spec.lease_transitions = Some(self.transitions);
        spec
    }

    /// How long followers must see it unchanged before it expires.
    fn duration(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.lease_duration_seconds).unwrap_or(0))
    }
}

/// A record and when this candidate first saw it as it is now, on its own clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub record: LeaseRecord,
    pub since: Instant,
}

/// Remembers the last record seen and when it changed.
#[derive(Clone, Debug, Default)]
pub struct Observer {
    last: Option<Observed>,
}

impl Observer {
    /// Notes `record` as seen at `now`; the time only moves when the record differs.
    pub fn observe(&mut self, record: LeaseRecord, now: Instant) -> &Observed {
        match self.last.take_if(|last| last.record == record) {
            Some(unchanged) => self.last.insert(unchanged),
            None => self.last.insert(Observed { record, since: now }),
        }
    }

    /// Forgets what was seen (the Lease was deleted).
    pub fn forget(&mut self) {
        self.last = None;
    }
}

/// What to do this retry period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by me.
    Create,
    /// It is mine: write a fresh renewTime.
    Renew,
    /// Released (empty holder) or not renewed for its duration as I observed it: take it over.
    Acquire,
    /// Someone else holds it and renewed it within its duration: wait.
    Follow {
        holder: String,
        /// The earliest moment it may expire, if it is not renewed again.
        expires: Instant,
    },
}

/// client-go's rule: a missing Lease is created; my own is renewed (whatever its age: the
/// resourceVersion precondition on the write decides); a foreign one is taken when its holder is
/// empty or it stayed unchanged for its `leaseDurationSeconds` on my clock.
pub fn decide(observed: Option<&Observed>, identity: &str, now: Instant) -> Decision {
    let Some(observed) = observed else {
        return Decision::Create;
    };
    let record = &observed.record;
    if record.holder == identity {
        return Decision::Renew;
    }
    if record.holder.is_empty() {
        return Decision::Acquire;
    }
    let expires = observed.since + record.duration();
    if now < expires {
        Decision::Follow {
            holder: record.holder.clone(),
            expires,
        }
    } else {
        Decision::Acquire
    }
}

/// The record to write for `decision` at wall time `now`; `None` for [`Decision::Follow`].
/// Taking over (from anyone, released or expired) counts a transition and sets acquireTime;
/// renewing keeps both.
pub fn next_record(
    decision: &Decision,
    previous: Option<&LeaseRecord>,
    identity: &str,
    config: &ElectionConfig,
    now: Timestamp,
) -> Option<LeaseRecord> {
    let mine = |acquire_time, transitions| LeaseRecord {
        holder: identity.to_owned(),
        lease_duration_seconds: config.lease_seconds(),
        acquire_time: Some(acquire_time),
        renew_time: Some(now),
        transitions,
    };
    match decision {
        Decision::Create => Some(mine(now, 0)),
        Decision::Renew => {
            let previous = previous?;
            Some(mine(
                previous.acquire_time.unwrap_or(now),
                previous.transitions,
            ))
        }
        Decision::Acquire => Some(mine(
            now,
            previous.map_or(0, |p| p.transitions.saturating_add(1)),
        )),
        Decision::Follow { .. } => None,
    }
}

/// The record a leader writes when it steps down, as client-go does with ReleaseOnCancel: no
/// holder and a 1 s duration, so that the next candidate takes over at its next look.
pub fn released(previous: &LeaseRecord, now: Timestamp) -> LeaseRecord {
    LeaseRecord {
        holder: String::new(),
        lease_duration_seconds: 1,
        acquire_time: Some(now),
        renew_time: Some(now),
        transitions: previous.transitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "ballast-abc";
    const OTHER: &str = "ballast-xyz";

    fn wall(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + seconds).expect("valid time")
    }

    fn held_by(holder: &str, renewed_at: i64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.into(),
            lease_duration_seconds: 15,
            acquire_time: Some(wall(0)),
            renew_time: Some(wall(renewed_at)),
            transitions: 3,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, ME, Instant::now()), Decision::Create);
        let created = next_record(
            &Decision::Create,
            None,
            ME,
            &ElectionConfig::default(),
            wall(5),
        );
        assert_eq!(
            created,
            Some(LeaseRecord {
                holder: ME.into(),
                lease_duration_seconds: 15,
                acquire_time: Some(wall(5)),
                renew_time: Some(wall(5)),
                transitions: 0,
            })
        );
    }

    #[test]
    fn my_own_lease_is_renewed_even_when_old() {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        let observed = observer.observe(held_by(ME, 0), t0).clone();
        for later in [0, 14, 15, 600] {
            assert_eq!(
                decide(Some(&observed), ME, t0 + secs(later)),
                Decision::Renew
            );
        }
        let renewed = next_record(
            &Decision::Renew,
            Some(&observed.record),
            ME,
            &ElectionConfig::default(),
            wall(30),
        )
        .expect("a record");
        assert_eq!(renewed.acquire_time, Some(wall(0)), "acquireTime kept");
        assert_eq!(renewed.renew_time, Some(wall(30)));
        assert_eq!(renewed.transitions, 3, "no transition on renewal");
    }

    #[test]
    fn a_foreign_lease_is_followed_until_it_stays_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        let observed = observer.observe(held_by(OTHER, 0), t0).clone();
        assert_eq!(
            decide(Some(&observed), ME, t0),
            Decision::Follow {
                holder: OTHER.into(),
                expires: t0 + secs(15)
            }
        );
        assert!(matches!(
            decide(Some(&observed), ME, t0 + Duration::from_millis(14_999)),
            Decision::Follow { .. }
        ));
        assert_eq!(
            decide(Some(&observed), ME, t0 + secs(15)),
            Decision::Acquire
        );
    }

    #[test]
    fn renewals_push_the_expiry_out() {
        let t0 = Instant::now();
        let mut observer = Observer::default();
        observer.observe(held_by(OTHER, 0), t0);
        // Seen unchanged again at +10 s: still counted from t0.
        let same = observer.observe(held_by(OTHER, 0), t0 + secs(10)).clone();
        assert_eq!(same.since, t0);
        // Renewed at +12 s: the clock starts over.
        let renewed = observer.observe(held_by(OTHER, 12), t0 + secs(12)).clone();
        assert_eq!(renewed.since, t0 + secs(12));
        assert!(matches!(
            decide(Some(&renewed), ME, t0 + secs(20)),
            Decision::Follow { .. }
        ));
        assert_eq!(decide(Some(&renewed), ME, t0 + secs(27)), Decision::Acquire);
    }

    #[test]
    fn the_holders_wall_clock_does_not_matter() {
        let t0 = Instant::now();
        // A holder whose clock is an hour ahead stopped renewing: expires on my clock anyway.
        let mut observer = Observer::default();
        let ahead = observer.observe(held_by(OTHER, 3600), t0).clone();
        assert!(matches!(
            decide(Some(&ahead), ME, t0 + secs(14)),
            Decision::Follow { .. }
        ));
        assert_eq!(decide(Some(&ahead), ME, t0 + secs(15)), Decision::Acquire);
        // A holder whose clock is an hour behind keeps renewing: it is live, though its
        // renewTime looks long expired.
        let mut observer = Observer::default();
        observer.observe(held_by(OTHER, -3600), t0);
        let behind = observer
            .observe(held_by(OTHER, -3598), t0 + secs(14))
            .clone();
        assert!(matches!(
            decide(Some(&behind), ME, t0 + secs(20)),
            Decision::Follow { .. }
        ));
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_counts_a_transition() {
        let t0 = Instant::now();
        let release = released(&held_by(OTHER, 10), wall(11));
        assert_eq!(release.holder, "");
        assert_eq!(release.lease_duration_seconds, 1);
        assert_eq!(release.transitions, 3);
        let mut observer = Observer::default();
        let observed = observer.observe(release, t0).clone();
        assert_eq!(decide(Some(&observed), ME, t0), Decision::Acquire);
        let taken = next_record(
            &Decision::Acquire,
            Some(&observed.record),
            ME,
            &ElectionConfig::default(),
            wall(12),
        )
        .expect("a record");
        assert_eq!(taken.holder, ME);
        assert_eq!(taken.acquire_time, Some(wall(12)));
        assert_eq!(
            taken.lease_duration_seconds, 15,
            "my duration, not the released 1 s"
        );
        assert_eq!(taken.transitions, 4);
    }

    #[test]
    fn an_expired_foreign_lease_is_taken_over_with_a_transition() {
        let expired = held_by(OTHER, 0);
        let taken = next_record(
            &Decision::Acquire,
            Some(&expired),
            ME,
            &ElectionConfig::default(),
            wall(100),
        );
        assert_eq!(
            taken.map(|r| (r.holder, r.transitions)),
            Some((ME.into(), 4))
        );
        assert_eq!(
            next_record(
                &Decision::Follow {
                    holder: OTHER.into(),
                    expires: Instant::now()
                },
                Some(&expired),
                ME,
                &ElectionConfig::default(),
                wall(0)
            ),
            None
        );
    }

    #[test]
    fn a_lease_with_a_zero_or_negative_duration_expires_at_once() {
        let t0 = Instant::now();
        for seconds in [0, -5] {
            let mut record = held_by(OTHER, 0);
            record.lease_duration_seconds = seconds;
            let mut observer = Observer::default();
            let observed = observer.observe(record, t0).clone();
            assert_eq!(decide(Some(&observed), ME, t0), Decision::Acquire);
        }
    }

    #[test]
    fn records_round_trip_through_the_lease_spec() {
        let record = held_by(ME, 7);
        let base = LeaseSpec {
            preferred_holder: Some("someone".into()),
            strategy: Some("OldestEmulationVersion".into()),
            ..LeaseSpec::default()
        };
        let spec = record.to_spec(Some(&base));
        assert_eq!(spec.preferred_holder.as_deref(), Some("someone"), "kept");
        assert_eq!(LeaseRecord::from_spec(Some(&spec)), record);
        assert_eq!(LeaseRecord::from_spec(None), LeaseRecord::default());
        // MicroTime in JSON, as the API server stores it.
        let json = serde_json::to_value(&spec).expect("serialises");
        assert_eq!(json["renewTime"], "2026-01-01T00:00:07.000000Z");
        assert_eq!(json["holderIdentity"], ME);
        assert_eq!(json["leaseTransitions"], 3);
    }

    #[test]
    fn timing_is_checked() {
        assert_eq!(ElectionConfig::default().validate(), Ok(()));
        let with = |lease, renew, retry| ElectionConfig {
            lease_duration: secs(lease),
            renew_deadline: secs(renew),
            retry_period: secs(retry),
        };
        assert!(matches!(
            with(10, 10, 2).validate(),
            Err(ConfigError::LeaseNotLongerThanDeadline { .. })
        ));
        assert!(matches!(
            with(15, 2, 2).validate(),
            Err(ConfigError::DeadlineNotLongerThanRetry { .. })
        ));
        let fractional = ElectionConfig {
            lease_duration: Duration::from_millis(1500),
            ..ElectionConfig::default()
        };
        assert!(matches!(
            fractional.validate(),
            Err(ConfigError::FractionalLease(_))
        ));
        let message = with(10, 10, 2)
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("--lease-duration"), "{message}");
    }
}
