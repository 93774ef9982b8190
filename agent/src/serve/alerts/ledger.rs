//! Acting once per firing: what the receiver remembers of each alert, by fingerprint.
//!
//! Alertmanager re-sends a group's alerts every `group_interval` while it changes and every
//! `repeat_interval` while it does not, and an HA pair may both deliver; a resolved alert also
//! rides along in later notifications of its group. An alert is one *firing* from its
//! `startsAt` until it resolves; a new firing of the same alert (same labels, so the same
//! fingerprint) gets a new `startsAt`. So:
//!
//! | remembered          | received            | verdict                                   |
//! |---------------------|---------------------|-------------------------------------------|
//! | nothing             | firing or resolved  | act                                       |
//! | firing since T      | firing since T      | duplicate (re-sent)                       |
//! | firing since T      | firing since T'     | act (it resolved unseen and fired again)  |
//! | firing since T      | resolved, since T   | act: end it                               |
//! | firing since T      | resolved, since T'  | duplicate (a late resolve of an old firing)|
//! | resolved, since T   | firing since T      | duplicate (a late copy of the old firing) |
//! | resolved            | firing since T'     | act (fired again)                         |
//! | resolved            | resolved            | duplicate                                 |
//!
//! An empty `startsAt` matches only as "the same firing" where that makes the alert act again:
//! a firing after a resolve always acts. Memory is bounded: an entry goes after
//! `remember_seconds` without being sent, and past `remember_max` entries the one unseen
//! longest goes. Everything is forgotten when this agent's leadership term changes, so a new
//! term acts on alerts a previous leader (maybe this agent, earlier) already saw.
//!
//! Pure: time is an argument. [`Ledger::decide`] changes nothing; [`Ledger::commit`] applies
//! a decision once its actions are queued, so a refused call leaves the ledger as it was.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::payload::AlertStatus;

/// One alert of a notification, as the ledger sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence<'a> {
    pub fingerprint: &'a str,
    pub status: AlertStatus,
    pub starts_at: &'a str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Act,
    Duplicate(Repeat),
}

/// Why a received alert changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Repeat {
    #[error(
        "already acted on this firing (same fingerprint and startsAt); Alertmanager re-sends it"
    )]
    StillFiring,
    #[error("already ended")]
    AlreadyResolved,
    #[error("this firing has already resolved (a late copy)")]
    StaleFiring,
    #[error("resolves an earlier firing; the current one goes on")]
    StaleResolve,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    status: AlertStatus,
    starts_at: String,
    last_seen: Instant,
}

/// A decision over one notification, to be committed once acted on.
#[derive(Debug)]
pub struct Decision {
    pub verdicts: Vec<Verdict>,
    term: u64,
    /// The state of every alert received (duplicates too: being sent keeps it remembered).
    updates: Vec<(String, AlertStatus, String)>,
}

#[derive(Debug)]
pub struct Ledger {
    retention: Duration,
    capacity: usize,
    term: Option<u64>,
    entries: HashMap<String, Entry>,
}

impl Ledger {
    /// Remembers at most `capacity` alerts, each for `retention` after it was last received.
    pub fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            retention,
            capacity,
            term: None,
            entries: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The verdict on each occurrence, in order; a fingerprint twice in one notification is
    /// judged against its first appearance.
    pub fn decide(&self, term: u64, occurrences: &[Occurrence<'_>], now: Instant) -> Decision {
        let mut seen: HashMap<&str, (AlertStatus, &str)> = HashMap::new();
        let mut verdicts = Vec::with_capacity(occurrences.len());
        let mut updates = Vec::with_capacity(occurrences.len());
        for occurrence in occurrences {
            let remembered = seen
                .get(occurrence.fingerprint)
                .copied()
                .or_else(|| self.remembered(term, occurrence.fingerprint, now));
            let verdict = verdict(remembered, occurrence);
            // A duplicate leaves the remembered firing as it was (a late resolve of an old
            // firing must not end the current one).
            let kept = match (verdict, remembered) {
                (Verdict::Duplicate(_), Some(previous)) => previous,
                _ => (occurrence.status, occurrence.starts_at),
            };
            seen.insert(occurrence.fingerprint, kept);
            verdicts.push(verdict);
            updates.push((
                occurrence.fingerprint.to_string(),
                kept.0,
                kept.1.to_string(),
            ));
        }
        Decision {
            verdicts,
            term,
            updates,
        }
    }

    /// Applies a decision: forgets a previous term and expired entries, records the received
    /// alerts as seen `now`, then forgets the longest unseen past the capacity.
    pub fn commit(&mut self, decision: Decision, now: Instant) {
        if self.term != Some(decision.term) {
            self.entries.clear();
            self.term = Some(decision.term);
        }
        let retention = self.retention;
        self.entries
            .retain(|_, entry| now.saturating_duration_since(entry.last_seen) <= retention);
        for (fingerprint, status, starts_at) in decision.updates {
            self.entries.insert(
                fingerprint,
                Entry {
                    status,
                    starts_at,
                    last_seen: now,
                },
            );
        }
        self.forget_past_capacity();
    }

    fn remembered(
        &self,
        term: u64,
        fingerprint: &str,
        now: Instant,
    ) -> Option<(AlertStatus, &str)> {
        if self.term != Some(term) {
            return None;
        }
        let entry = self.entries.get(fingerprint)?;
        (now.saturating_duration_since(entry.last_seen) <= self.retention)
            .then_some((entry.status, entry.starts_at.as_str()))
    }

    fn forget_past_capacity(&mut self) {
        let excess = self.entries.len().saturating_sub(self.capacity);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(Instant, String)> = self
            .entries
            .iter()
            .map(|(fingerprint, entry)| (entry.last_seen, fingerprint.clone()))
            .collect();
        by_age.select_nth_unstable_by_key(excess - 1, |(seen, _)| *seen);
        for (_, fingerprint) in &by_age[..excess] {
            self.entries.remove(fingerprint);
        }
    }
}

fn verdict(remembered: Option<(AlertStatus, &str)>, received: &Occurrence<'_>) -> Verdict {
    use AlertStatus::{Firing, Resolved};
    let Some((status, starts_at)) = remembered else {
        return Verdict::Act;
    };
    let same_firing = starts_at == received.starts_at;
    match (status, received.status) {
        (Firing, Firing) if same_firing => Verdict::Duplicate(Repeat::StillFiring),
        (Firing, Firing) => Verdict::Act,
        (Firing, Resolved)
            if !same_firing && !starts_at.is_empty() && !received.starts_at.is_empty() =>
        {
            Verdict::Duplicate(Repeat::StaleResolve)
        }
        (Firing, Resolved) => Verdict::Act,
        (Resolved, Firing) if same_firing && !starts_at.is_empty() => {
            Verdict::Duplicate(Repeat::StaleFiring)
        }
        (Resolved, Firing) => Verdict::Act,
        (Resolved, Resolved) => Verdict::Duplicate(Repeat::AlreadyResolved),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertStatus::{Firing, Resolved};

    const T1: &str = "2024-05-01T10:00:00Z";
    const T2: &str = "2024-05-01T11:00:00Z";
    const HOUR: Duration = Duration::from_secs(3600);

    fn at(
        fingerprint: &'static str,
        status: AlertStatus,
        starts_at: &'static str,
    ) -> Occurrence<'static> {
        Occurrence {
            fingerprint,
            status,
            starts_at,
        }
    }

    /// Decides and commits one notification; returns the verdicts.
    fn receive(
        ledger: &mut Ledger,
        term: u64,
        now: Instant,
        alerts: &[Occurrence<'_>],
    ) -> Vec<Verdict> {
        let decision = ledger.decide(term, alerts, now);
        let verdicts = decision.verdicts.clone();
        ledger.commit(decision, now);
        verdicts
    }

    use Verdict::{Act, Duplicate};

    #[test]
    fn a_resent_firing_acts_once_and_its_resolve_ends_it_once() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Firing, T1)]), [Act]);
        for i in 1..5 {
            assert_eq!(
                receive(&mut ledger, 1, t0 + minute * i, &[at("a", Firing, T1)]),
                [Duplicate(Repeat::StillFiring)]
            );
        }
        assert_eq!(
            receive(&mut ledger, 1, t0 + minute * 6, &[at("a", Resolved, T1)]),
            [Act]
        );
        assert_eq!(
            receive(&mut ledger, 1, t0 + minute * 7, &[at("a", Resolved, T1)]),
            [Duplicate(Repeat::AlreadyResolved)]
        );
    }

    #[test]
    fn a_refire_after_a_resolve_acts_again_but_a_late_copy_does_not() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        receive(&mut ledger, 1, t0, &[at("a", Firing, T1)]);
        receive(&mut ledger, 1, t0, &[at("a", Resolved, T1)]);
        assert_eq!(
            receive(&mut ledger, 1, t0, &[at("a", Firing, T1)]),
            [Duplicate(Repeat::StaleFiring)]
        );
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Firing, T2)]), [Act]);
        // A late resolve of the first firing does not end the second...
        assert_eq!(
            receive(&mut ledger, 1, t0, &[at("a", Resolved, T1)]),
            [Duplicate(Repeat::StaleResolve)]
        );
        assert_eq!(
            receive(&mut ledger, 1, t0, &[at("a", Firing, T2)]),
            [Duplicate(Repeat::StillFiring)]
        );
        // ... its own resolve does.
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Resolved, T2)]), [Act]);
    }

    #[test]
    fn a_new_starts_at_while_firing_is_a_new_firing() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        receive(&mut ledger, 1, t0, &[at("a", Firing, T1)]);
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Firing, T2)]), [Act]);
    }

    #[test]
    fn without_starts_at_the_status_alone_decides_and_a_refire_acts() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Firing, "")]), [Act]);
        assert_eq!(
            receive(&mut ledger, 1, t0, &[at("a", Firing, "")]),
            [Duplicate(Repeat::StillFiring)]
        );
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Resolved, "")]), [Act]);
        assert_eq!(receive(&mut ledger, 1, t0, &[at("a", Firing, "")]), [Act]);
    }

    #[test]
    fn an_unknown_resolve_ends_whatever_a_previous_leader_started() {
        let mut ledger = Ledger::new(HOUR, 100);
        assert_eq!(
            receive(&mut ledger, 1, Instant::now(), &[at("a", Resolved, T1)]),
            [Act]
        );
    }

    #[test]
    fn repeats_within_one_notification_count_once() {
        let mut ledger = Ledger::new(HOUR, 100);
        let verdicts = receive(
            &mut ledger,
            1,
            Instant::now(),
            &[
                at("a", Firing, T1),
                at("b", Firing, T1),
                at("a", Firing, T1),
                at("a", Resolved, T1),
            ],
        );
        assert_eq!(verdicts, [Act, Act, Duplicate(Repeat::StillFiring), Act]);
    }

    #[test]
    fn deciding_changes_nothing_until_committed() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        let first = ledger.decide(1, &[at("a", Firing, T1)], t0);
        assert_eq!(first.verdicts, [Act]);
        // Not committed (the actions could not be queued): the retry acts.
        let retry = ledger.decide(1, &[at("a", Firing, T1)], t0);
        assert_eq!(retry.verdicts, [Act]);
        assert!(ledger.is_empty());
        ledger.commit(retry, t0);
        assert_eq!(
            ledger.decide(1, &[at("a", Firing, T1)], t0).verdicts,
            [Duplicate(Repeat::StillFiring)]
        );
    }

    #[test]
    fn an_alert_unseen_for_the_retention_is_forgotten_and_sending_keeps_it() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        receive(
            &mut ledger,
            1,
            t0,
            &[at("a", Firing, T1), at("b", Firing, T1)],
        );
        // `a` is re-sent within the retention, `b` is not.
        let half = HOUR / 2;
        assert_eq!(
            receive(&mut ledger, 1, t0 + half * 2, &[at("a", Firing, T1)]),
            [Duplicate(Repeat::StillFiring)]
        );
        assert_eq!(
            receive(&mut ledger, 1, t0 + half * 3, &[at("a", Firing, T1)]),
            [Duplicate(Repeat::StillFiring)]
        );
        assert_eq!(ledger.len(), 1, "b expired at the last commit");
        assert_eq!(
            receive(&mut ledger, 1, t0 + half * 3, &[at("b", Firing, T1)]),
            [Act]
        );
        // Exactly at the retention it is still remembered, just past it not.
        let last = t0 + half * 3;
        assert_eq!(
            ledger
                .decide(1, &[at("a", Firing, T1)], last + HOUR)
                .verdicts,
            [Duplicate(Repeat::StillFiring)]
        );
        assert_eq!(
            ledger
                .decide(
                    1,
                    &[at("a", Firing, T1)],
                    last + HOUR + Duration::from_millis(1)
                )
                .verdicts,
            [Act]
        );
    }

    #[test]
    fn past_capacity_the_longest_unseen_go() {
        let mut ledger = Ledger::new(HOUR, 3);
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        for (i, fingerprint) in ["a", "b", "c", "d"].into_iter().enumerate() {
            receive(
                &mut ledger,
                1,
                t0 + second * i as u32,
                &[at(fingerprint, Firing, T1)],
            );
        }
        assert_eq!(ledger.len(), 3);
        let now = t0 + second * 10;
        assert_eq!(
            ledger.decide(1, &[at("a", Firing, T1)], now).verdicts,
            [Act],
            "a, the oldest, went"
        );
        for fingerprint in ["b", "c", "d"] {
            assert_eq!(
                ledger
                    .decide(1, &[at(fingerprint, Firing, T1)], now)
                    .verdicts,
                [Duplicate(Repeat::StillFiring)],
                "{fingerprint}"
            );
        }
        // One notification larger than the capacity still leaves the ledger at capacity.
        let many: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let alerts: Vec<Occurrence<'_>> = many
            .iter()
            .map(|f| Occurrence {
                fingerprint: f,
                status: Firing,
                starts_at: T1,
            })
            .collect();
        receive(&mut ledger, 1, now, &alerts);
        assert_eq!(ledger.len(), 3);
    }

    #[test]
    fn a_new_term_forgets_what_an_earlier_one_saw() {
        let mut ledger = Ledger::new(HOUR, 100);
        let t0 = Instant::now();
        receive(&mut ledger, 1, t0, &[at("a", Firing, T1)]);
        // Leadership lost and regained: the alert's action must be started again.
        assert_eq!(ledger.decide(2, &[at("a", Firing, T1)], t0).verdicts, [Act]);
        receive(&mut ledger, 2, t0, &[at("b", Firing, T1)]);
        assert_eq!(
            ledger.len(),
            1,
            "the first term's entries went at the first commit of the second"
        );
    }
}
