//! Leader election on the `coordination.k8s.io/v1` Lease `ballast-leader`, with client-go's
//! semantics (see [`decide`]) and the renew loop written here.
//!
//! Why not kube-lease-manager or kube-leader-election: neither fences. They report "leader"
//! from the last answer they got and keep doing so while a renewal hangs, so a partitioned
//! leader would go on evicting after its Lease expired for everyone else. Here every successful
//! renewal feeds the [`Fence`] with the time the request was *sent*, and the leader loop asks the
//! fence before each write; the loop itself is small, so owning it costs little.
//!
//! Each retry period: the leader replaces the Lease directly with the resourceVersion of its
//! last write (one call); a candidate reads it and decides (one call, two when it takes over).
//! A 409 means someone else wrote the Lease: it is read again and decided afresh. On shutdown
//! the leader releases the Lease (no holder, 1 s duration) so a candidate takes over at its next
//! look instead of waiting out the lease duration.

pub mod decide;
#[cfg(test)]
mod tests;

use std::{future::Future, time::Duration};

use k8s_openapi::{api::coordination::v1::Lease, jiff::Timestamp};
use kube::{
    api::{ObjectMeta, PostParams},
    Api,
};
use tokio::{sync::watch, time::Instant};
use tracing::{info, warn};

use self::decide::{
    decide, next_record, released, Decision, ElectionConfig, LeaseRecord, Observer,
};
use super::fence::Fence;

/// The Lease's name, in the agents' namespace.
pub const LEASE_NAME: &str = "ballast-leader";

/// What this agent is right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not leading; `holder` is who holds the Lease, when known.
    Candidate { holder: Option<String> },
    /// Leading in `term` (see [`Fence`]).
    Leader { term: u64 },
}

/// The three Lease calls the election makes; [`Api<Lease>`] in the agent, an in-memory Lease
/// with the API server's resourceVersion rules in the loop's tests.
pub trait LeaseApi: Send + Sync + 'static {
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
    /// PUT with `lease.metadata.resourceVersion` as the precondition (409 when stale).
    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
}

impl LeaseApi for Api<Lease> {
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send {
        self.get_opt(LEASE_NAME)
    }

    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
        let lease = lease.clone();
        async move { Api::create(self, &PostParams::default(), &lease).await }
    }

    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
        let lease = lease.clone();
        async move { Api::replace(self, LEASE_NAME, &PostParams::default(), &lease).await }
    }
}

/// The outcome of one look at the Lease.
enum Outcome {
    /// I hold it: written successfully by a request sent at the given instant.
    Holding { sent: Instant },
    /// Someone else holds it; it may expire at `expires` (when known) if not renewed.
    Following {
        holder: String,
        expires: Option<Instant>,
    },
}

pub struct Elector<L> {
    leases: L,
    identity: String,
    config: ElectionConfig,
    fence: Fence,
    role: watch::Sender<Role>,
    observer: Observer,
    /// The Lease as last written or read, for the leader's one-call renewal.
    cached: Option<Lease>,
}

fn wall_now() -> Timestamp {
    Timestamp::now()
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl<L: LeaseApi> Elector<L> {
    pub fn new(
        leases: L,
        identity: String,
        config: ElectionConfig,
        fence: Fence,
        role: watch::Sender<Role>,
    ) -> Self {
        Self {
            leases,
            identity,
            config,
            fence,
            role,
            observer: Observer::default(),
            cached: None,
        }
    }

    fn leading(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader { .. })
    }

    /// Campaigns and renews until `shutdown`, then releases the Lease if it holds it.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        metrics::gauge!("ballast_leader", "identity" => self.identity.clone()).set(0.0);
        loop {
            let pause = self.step().await;
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        self.release().await;
    }

    /// One look at the Lease, bounded in time: while leading by what the fence has left, else by
    /// the renew deadline. Returns how long to wait before the next: the retry period, or less
    /// when a followed Lease expires sooner (so a dead leader is replaced within the lease
    /// duration plus one retry period of its last renewal being seen).
    async fn step(&mut self) -> Duration {
        let retry = self.config.retry_period;
        let bound = match self.fence.permit(Instant::now()) {
            Ok(permit) if self.leading() => permit.remaining,
            _ => self.config.renew_deadline,
        };
        let outcome = tokio::time::timeout(bound, self.try_acquire_or_renew()).await;
        match outcome {
            Ok(Ok(Outcome::Holding { sent })) => {
                let term = self.fence.renewed(sent, Instant::now());
                if self.role.borrow().clone() != (Role::Leader { term }) {
                    info!(identity = %self.identity, term, "became the leader");
                    metrics::counter!("ballast_leader_transitions_total").increment(1);
                    metrics::gauge!("ballast_leader", "identity" => self.identity.clone()).set(1.0);
                    self.role.send_replace(Role::Leader { term });
                }
                retry
            }
            Ok(Ok(Outcome::Following { holder, expires })) => {
                self.step_down(Some(holder), "another agent holds the Lease");
                expires.map_or(retry, |at| {
                    retry.min(at.saturating_duration_since(Instant::now()))
                })
            }
            Ok(Err(error)) => {
                warn!(%error, lease = LEASE_NAME, "looking at the Lease failed; retrying");
                self.cached = None;
                self.check_deadline();
                retry
            }
            Err(_) => {
                warn!(
                    lease = LEASE_NAME,
                    timeout = ?bound,
                    "the Lease call did not answer in time; retrying"
                );
                self.cached = None;
                self.check_deadline();
                retry
            }
        }
    }

    /// While leading, the fence's deadline passing without a renewal ends the leadership.
    fn check_deadline(&mut self) {
        if self.leading() && self.fence.permit(Instant::now()).is_err() {
            self.step_down(None, "no successful renewal within the renew deadline");
        }
    }

    fn step_down(&mut self, holder: Option<String>, why: &str) {
        let was_leading = self.leading();
        self.fence.revoke();
        if was_leading {
            warn!(identity = %self.identity, why, "lost the leadership; stopping at once");
            metrics::gauge!("ballast_leader", "identity" => self.identity.clone()).set(0.0);
        }
        let role = Role::Candidate { holder };
        if *self.role.borrow() != role {
            self.role.send_replace(role);
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, kube::Error> {
        // The leader's fast path: renew over its own last write; a 409 falls through to a read.
        if self.leading() {
            if let Some(lease) = self.cached.clone() {
                match self.write(Some(lease), Decision::Renew).await {
                    Err(error) if is_conflict(&error) => self.cached = None,
                    other => return other,
                }
            }
        }
        let lease = self.leases.get().await?;
        let decision = self.observe_and_decide(lease.as_ref());
        match self.write(lease, decision).await {
            Err(error) if is_conflict(&error) => {
                // Someone else wrote it between our read and write: read again, decide again.
                let lease = self.leases.get().await?;
                let decision = self.observe_and_decide(lease.as_ref());
                self.write(lease, decision).await
            }
            other => other,
        }
    }

    fn observe_and_decide(&mut self, lease: Option<&Lease>) -> Decision {
        let now = Instant::now();
        match lease {
            Some(lease) => {
                let observed = self
                    .observer
                    .observe(LeaseRecord::from_spec(lease.spec.as_ref()), now);
                decide(Some(observed), &self.identity, now)
            }
            None => {
                self.observer.forget();
                decide(None, &self.identity, now)
            }
        }
    }

    /// Writes what `decision` calls for over `lease` (its resourceVersion is the precondition).
    async fn write(
        &mut self,
        lease: Option<Lease>,
        decision: Decision,
    ) -> Result<Outcome, kube::Error> {
        let previous = lease
            .as_ref()
            .map(|l| LeaseRecord::from_spec(l.spec.as_ref()));
        let Some(record) = next_record(
            &decision,
            previous.as_ref(),
            &self.identity,
            &self.config,
            wall_now(),
        ) else {
            let holder = previous.map(|p| p.holder).unwrap_or_default();
            let expires = match decision {
                Decision::Follow { expires, .. } => Some(expires),
                _ => None,
            };
            self.cached = None;
            return Ok(Outcome::Following { holder, expires });
        };
        let sent = Instant::now();
        let started = std::time::Instant::now();
        let written = match lease {
            Some(mut lease) => {
                lease.spec = Some(record.to_spec(lease.spec.as_ref()));
                self.leases.replace(&lease).await
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(record.to_spec(None)),
                };
                self.leases.create(&lease).await
            }
        };
        metrics::histogram!("ballast_lease_renew_seconds").record(started.elapsed().as_secs_f64());
        let written = written?;
        self.observer.observe(
            LeaseRecord::from_spec(written.spec.as_ref()),
            Instant::now(),
        );
        self.cached = Some(written);
        Ok(Outcome::Holding { sent })
    }

    /// Steps down and, if the Lease is still ours, releases it (bounded: 2 s).
    async fn release(&mut self) {
        let was_leading = self.leading();
        self.step_down(None, "shutting down");
        if !was_leading {
            return;
        }
        let cached = self.cached.take();
        let release = async {
            match self.release_over(cached).await {
                Err(error) if is_conflict(&error) => self.release_over(None).await,
                other => other,
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), release).await {
            Ok(Ok(true)) => info!(lease = LEASE_NAME, "released the Lease"),
            Ok(Ok(false)) => info!(lease = LEASE_NAME, "the Lease was no longer ours"),
            Ok(Err(error)) => warn!(
                %error,
                "releasing the Lease failed; the next leader takes over after its duration"
            ),
            Err(_) => warn!(
                "releasing the Lease timed out; the next leader takes over after its duration"
            ),
        }
    }

    /// Writes the released record over `lease` (read now when `None`) if it is still ours.
    async fn release_over(&self, lease: Option<Lease>) -> Result<bool, kube::Error> {
        let mut lease = match lease {
            Some(lease) => lease,
            None => match self.leases.get().await? {
                Some(lease) => lease,
                None => return Ok(false),
            },
        };
        let record = LeaseRecord::from_spec(lease.spec.as_ref());
        if record.holder != self.identity {
            return Ok(false);
        }
        lease.spec = Some(released(&record, wall_now()).to_spec(lease.spec.as_ref()));
        self.leases.replace(&lease).await.map(|_| true)
    }
}
