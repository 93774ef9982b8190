//! Fault injection: what the network and an unhealthy apiserver do to requests. Faults are
//! decided per request before the server looks at it, in this order: partition (the request
//! hangs while the identity is cut off and its connection is closed unanswered when the cut
//! heals; its open watches are broken at once), dropped connections (closed without a
//! response), added latency, failures of the next N requests, failures at a seeded random
//! rate.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{bail, Result};
use ballast::sim::rng::SplitMix64;
use tokio::sync::watch;

/// Which requests a fault applies to; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    identity: Option<String>,
    resource: Option<String>,
    writes_only: bool,
}

impl Scope {
    /// Every request.
    pub fn all() -> Self {
        Self::default()
    }

    /// Requests of one client identity (its bearer token).
    pub fn identity(identity: &str) -> Self {
        Self::all().and_identity(identity)
    }

    pub fn and_identity(mut self, identity: &str) -> Self {
        self.identity = Some(identity.to_string());
        self
    }

    /// Requests to one resource, named as in URLs: `leases`, `pods`, `pods/eviction`, `nodes`.
    pub fn and_resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }

    /// Only requests that change something (every method but GET).
    pub fn writes(mut self) -> Self {
        self.writes_only = true;
        self
    }

    fn matches(&self, request: &RequestSummary) -> bool {
        self.identity
            .as_ref()
            .is_none_or(|i| Some(i.as_str()) == request.identity.as_deref())
            && self
                .resource
                .as_ref()
                .is_none_or(|r| *r == request.resource)
            && (!self.writes_only || request.write)
    }
}

/// What the fault plan looks at in a request.
#[derive(Clone, Debug)]
pub(crate) struct RequestSummary {
    pub identity: Option<String>,
    /// `plural` or `plural/subresource` ("" when the path names no resource).
    pub resource: String,
    pub write: bool,
}

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Serve,
    /// Answer with this failure status instead of serving.
    Fail(u16),
    /// Close the connection without answering.
    Drop,
}

#[derive(Debug)]
struct Countdown {
    scope: Scope,
    left: u32,
    status: Option<u16>,
}

#[derive(Debug)]
struct ErrorRate {
    scope: Scope,
    probability: f64,
    status: u16,
    rng: SplitMix64,
}

#[derive(Debug, Default)]
struct Plan {
    latencies: Vec<(Scope, Duration)>,
    /// Fail (`status: Some`) or drop (`None`) the next `left` matching requests.
    countdowns: Vec<Countdown>,
    rates: Vec<ErrorRate>,
    partitioned: BTreeSet<String>,
}

/// Handle on the server's fault plan; clones share it.
#[derive(Clone, Debug)]
pub struct Faults {
    plan: Arc<Mutex<Plan>>,
    /// Bumped whenever the set of partitioned identities changes, so that hanging requests and
    /// open watches re-check theirs.
    partitions: Arc<watch::Sender<u64>>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            plan: Arc::default(),
            partitions: Arc::new(watch::channel(0).0),
        }
    }
}

fn check_failure_status(status: u16) -> Result<()> {
    if !(400..=599).contains(&status) {
        bail!("injected status {status} is not an HTTP error: use 400-599");
    }
    Ok(())
}

impl Faults {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `delay` before every request in `scope` is served (delays of matching scopes add up).
    pub fn latency(&self, scope: Scope, delay: Duration) {
        self.plan().latencies.push((scope, delay));
    }

    /// Answers the next `count` requests in `scope` with `status` (a 4xx or 5xx) and a Status
    /// body worded like that failure.
    pub fn fail_next(&self, scope: Scope, count: u32, status: u16) -> Result<()> {
        check_failure_status(status)?;
        self.plan().countdowns.push(Countdown {
            scope,
            left: count,
            status: Some(status),
        });
        Ok(())
    }

    /// Answers each request in `scope` with `status` with `probability`, drawn from a generator
    /// seeded with `seed` (the same sequence of requests sees the same failures).
    pub fn error_rate(&self, scope: Scope, probability: f64, status: u16, seed: u64) -> Result<()> {
        check_failure_status(status)?;
        if !(0.0..=1.0).contains(&probability) {
            bail!("error probability {probability} is not within 0..=1");
        }
        self.plan().rates.push(ErrorRate {
            scope,
            probability,
            status,
            rng: SplitMix64::new(seed),
        });
        Ok(())
    }

    /// Closes the connection of the next `count` requests in `scope` without any response.
    pub fn drop_next(&self, scope: Scope, count: u32) {
        self.plan().countdowns.push(Countdown {
            scope,
            left: count,
            status: None,
        });
    }

    /// Cuts `identity` off the server (`on`) or heals the cut. While cut, its requests hang
    /// (a healed cut closes them unanswered: they never arrived) and its open watches are
    /// broken mid-stream.
    pub fn partition(&self, identity: &str, on: bool) {
        let changed = {
            let mut plan = self.plan();
            if on {
                plan.partitioned.insert(identity.to_string())
            } else {
                plan.partitioned.remove(identity)
            }
        };
        if changed {
            self.partitions.send_modify(|epoch| *epoch += 1);
        }
    }

    /// Removes every fault, partitions included.
    pub fn clear(&self) {
        *self.plan() = Plan::default();
        self.partitions.send_modify(|epoch| *epoch += 1);
    }

    pub(crate) fn is_partitioned(&self, identity: Option<&str>) -> bool {
        identity.is_some_and(|i| self.plan().partitioned.contains(i))
    }

    /// Notifications of partition changes (for watches and hanging requests).
    pub(crate) fn partition_changes(&self) -> watch::Receiver<u64> {
        self.partitions.subscribe()
    }

    /// Waits while `identity` is partitioned; returns at once otherwise.
    pub(crate) async fn wait_while_partitioned(&self, identity: Option<&str>) {
        let mut changes = self.partition_changes();
        while self.is_partitioned(identity) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// The added latency and the verdict for one request (countdowns and random draws are
    /// consumed here).
    pub(crate) fn decide(&self, request: &RequestSummary) -> (Duration, Verdict) {
        let mut plan = self.plan();
        let delay = plan
            .latencies
            .iter()
            .filter(|(scope, _)| scope.matches(request))
            .map(|(_, d)| *d)
            .sum();
        if let Some(countdown) = plan
            .countdowns
            .iter_mut()
            .find(|c| c.left > 0 && c.scope.matches(request))
        {
            countdown.left -= 1;
            let verdict = countdown.status.map_or(Verdict::Drop, Verdict::Fail);
            plan.countdowns.retain(|c| c.left > 0);
            return (delay, verdict);
        }
        for rate in plan.rates.iter_mut().filter(|r| r.scope.matches(request)) {
            // 53 random bits make a uniform draw in [0, 1).
            let draw = (rate.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if draw < rate.probability {
                return (delay, Verdict::Fail(rate.status));
            }
        }
        (delay, Verdict::Serve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(identity: &str, resource: &str, write: bool) -> RequestSummary {
        RequestSummary {
            identity: Some(identity.into()),
            resource: resource.into(),
            write,
        }
    }

    #[test]
    fn countdowns_apply_to_their_scope_only_and_run_out() {
        let faults = Faults::default();
        faults
            .fail_next(Scope::identity("a").and_resource("leases"), 2, 503)
            .expect("valid status");
        faults.drop_next(Scope::all().writes(), 1);
        assert_eq!(
            faults.decide(&request("b", "leases", false)).1,
            Verdict::Serve
        );
        assert_eq!(
            faults.decide(&request("a", "leases", false)).1,
            Verdict::Fail(503)
        );
        assert_eq!(
            faults.decide(&request("a", "leases", true)).1,
            Verdict::Fail(503)
        );
        assert_eq!(
            faults.decide(&request("a", "leases", true)).1,
            Verdict::Drop
        );
        assert_eq!(
            faults.decide(&request("a", "leases", true)).1,
            Verdict::Serve
        );
        assert!(faults.fail_next(Scope::all(), 1, 200).is_err());
    }

    #[test]
    fn error_rates_are_reproducible_from_the_seed() {
        let outcomes = |seed| {
            let faults = Faults::default();
            faults
                .error_rate(Scope::all(), 0.3, 500, seed)
                .expect("valid rate");
            (0..200)
                .map(|_| faults.decide(&request("a", "pods", false)).1 == Verdict::Fail(500))
                .collect::<Vec<_>>()
        };
        let first = outcomes(7);
        assert_eq!(first, outcomes(7));
        assert_ne!(first, outcomes(8));
        let failures = first.iter().filter(|f| **f).count();
        assert!((40..=80).contains(&failures), "{failures}");
    }

    #[test]
    fn latencies_add_up_and_partitions_are_per_identity() {
        let faults = Faults::default();
        faults.latency(Scope::all(), Duration::from_millis(10));
        faults.latency(Scope::identity("a"), Duration::from_millis(5));
        assert_eq!(
            faults.decide(&request("a", "pods", false)).0,
            Duration::from_millis(15)
        );
        assert_eq!(
            faults.decide(&request("b", "pods", false)).0,
            Duration::from_millis(10)
        );
        faults.partition("a", true);
        assert!(faults.is_partitioned(Some("a")) && !faults.is_partitioned(Some("b")));
        faults.clear();
        assert!(!faults.is_partitioned(Some("a")));
    }
}
