//! The renew loop on paused tokio time, against an in-memory Lease that keeps the API server's
//! rules (create conflicts when it exists, replace conflicts on a stale resourceVersion) and can
//! cut one client off as a partition would.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex,
};

use kube::core::Status;

use super::*;

#[derive(Default)]
struct Stored {
    lease: Option<Lease>,
    version: u64,
}

/// One client's handle on the shared Lease.
#[derive(Clone)]
struct Memory {
    stored: Arc<Mutex<Stored>>,
    /// While set, every call of this client hangs (its requests never arrive).
    cut_off: Arc<AtomicBool>,
}

fn conflict(message: &str) -> kube::Error {
    kube::Error::Api(Status::failure(message, "Conflict").with_code(409).boxed())
}

impl Memory {
    async fn reach(&self) {
        if self.cut_off.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn stored(&self) -> std::sync::MutexGuard<'_, Stored> {
        self.stored
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn holder(&self) -> String {
        let stored = self.stored();
        LeaseRecord::from_spec(stored.lease.as_ref().and_then(|l| l.spec.as_ref())).holder
    }
}

impl LeaseApi for Memory {
    async fn get(&self) -> Result<Option<Lease>, kube::Error> {
        self.reach().await;
        Ok(self.stored().lease.clone())
    }

    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
        let lease = lease.clone();
        async move {
            self.reach().await;
            let mut stored = self.stored();
            if stored.lease.is_some() {
                return Err(conflict("already exists"));
            }
            stored.version += 1;
            let mut lease = lease;
            lease.metadata.resource_version = Some(stored.version.to_string());
            stored.lease = Some(lease.clone());
            Ok(lease)
        }
    }

    fn replace(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send {
        let lease = lease.clone();
        async move {
            self.reach().await;
            let mut stored = self.stored();
            let current = stored.version.to_string();
            if lease.metadata.resource_version.as_deref() != Some(current.as_str()) {
                return Err(conflict("the object has been modified"));
            }
            stored.version += 1;
            let mut lease = lease;
            lease.metadata.resource_version = Some(stored.version.to_string());
            stored.lease = Some(lease.clone());
            Ok(lease)
        }
    }
}

struct Agent {
    identity: String,
    fence: Fence,
    role: watch::Receiver<Role>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    cut_off: Arc<AtomicBool>,
}

fn start(stored: &Arc<Mutex<Stored>>, identity: &str) -> Agent {
    let config = ElectionConfig::default();
    let fence = Fence::new(config.renew_deadline);
    let (role_tx, role) = watch::channel(Role::Candidate { holder: None });
    let (stop, shutdown) = watch::channel(false);
    let cut_off = Arc::new(AtomicBool::new(false));
    let memory = Memory {
        stored: stored.clone(),
        cut_off: cut_off.clone(),
    };
    let elector = Elector::new(memory, identity.into(), config, fence.clone(), role_tx);
    Agent {
        identity: identity.into(),
        fence,
        role,
        stop,
        task: tokio::spawn(elector.run(shutdown)),
        cut_off,
    }
}

fn leading(agent: &Agent) -> bool {
    agent.fence.permit(Instant::now()).is_ok()
}

/// Steps paused time by 100 ms until `done` or `limit`; returns the time it took. Fails if two
/// agents may write at the same instant at any step.
async fn run_until(agents: &[&Agent], limit: Duration, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        let writers: Vec<&str> = agents
            .iter()
            .filter(|a| leading(a))
            .map(|a| a.identity.as_str())
            .collect();
        assert!(
            writers.len() <= 1,
            "two agents may write at once: {writers:?}"
        );
        assert!(started.elapsed() < limit, "not done within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn exactly_one_of_three_leads() {
    let stored = Arc::default();
    let agents = [
        start(&stored, "a"),
        start(&stored, "b"),
        start(&stored, "c"),
    ];
    let refs: Vec<&Agent> = agents.iter().collect();
    run_until(&refs, Duration::from_secs(5), || agents.iter().any(leading)).await;
    // Stable for a minute: the same one leads, the others follow it.
    let leader = agents.iter().position(leading).expect("a leader");
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(agents.iter().filter(|a| leading(a)).count(), 1);
        assert!(leading(&agents[leader]));
    }
    let holder = agents[leader].identity.clone();
    for (i, agent) in agents.iter().enumerate() {
        let role = agent.role.borrow().clone();
        if i == leader {
            assert!(matches!(role, Role::Leader { .. }), "{role:?}");
        } else {
            assert_eq!(
                role,
                Role::Candidate {
                    holder: Some(holder.clone())
                }
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_killed_leader_is_replaced_within_lease_duration_plus_retry_period() {
    let stored = Arc::default();
    let a = start(&stored, "a");
    run_until(&[&a], Duration::from_secs(5), || leading(&a)).await;
    let b = start(&stored, "b");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(!leading(&b));
    // kill -9: no release, the renewals just stop.
    a.task.abort();
    let took = run_until(&[&b], Duration::from_secs(30), || leading(&b)).await;
    assert!(
        took <= Duration::from_secs(15 + 2),
        "took over after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(13),
        "took over after {took:?}: before the Lease could have expired"
    );
    let memory = Memory {
        stored,
        cut_off: Arc::default(),
    };
    assert_eq!(memory.holder(), "b");
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_leader_stops_before_anyone_else_starts() {
    let stored = Arc::default();
    let a = start(&stored, "a");
    run_until(&[&a], Duration::from_secs(5), || leading(&a)).await;
    let b = start(&stored, "b");
    tokio::time::sleep(Duration::from_secs(7)).await;
    a.cut_off.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    // The old leader is fenced within the renew deadline; the new one starts only later;
    // `run_until` checks at every step that they never overlap.
    let fenced = run_until(&[&a, &b], Duration::from_secs(11), || !leading(&a)).await;
    assert!(fenced <= Duration::from_secs(10), "fenced after {fenced:?}");
    let taken = run_until(&[&a, &b], Duration::from_secs(30), || leading(&b)).await;
    assert!(
        cut.elapsed() <= Duration::from_secs(15 + 2 + 1),
        "{:?}",
        cut.elapsed()
    );
    assert!(taken > Duration::ZERO);
    assert!(matches!(*a.role.borrow(), Role::Candidate { .. }));
    // The partition heals: the old leader follows the new one and never writes again.
    a.cut_off.store(false, Ordering::SeqCst);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!leading(&a));
        assert!(leading(&b));
    }
    assert_eq!(
        *a.role.borrow(),
        Role::Candidate {
            holder: Some("b".into())
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_graceful_shutdown_releases_and_the_next_takes_over_within_a_retry_period() {
    let stored = Arc::default();
    let a = start(&stored, "a");
    run_until(&[&a], Duration::from_secs(5), || leading(&a)).await;
    let b = start(&stored, "b");
    tokio::time::sleep(Duration::from_secs(9)).await;
    a.stop.send_replace(true);
    let Agent { task, .. } = a;
    task.await.expect("the elector stops");
    let memory = Memory {
        stored: stored.clone(),
        cut_off: Arc::default(),
    };
    assert_eq!(memory.holder(), "", "released");
    let took = run_until(&[&b], Duration::from_secs(5), || leading(&b)).await;
    assert!(took <= Duration::from_secs(2), "took over after {took:?}");
    let record =
        LeaseRecord::from_spec(memory.stored().lease.as_ref().and_then(|l| l.spec.as_ref()));
    assert_eq!(record.holder, "b");
    assert_eq!(record.transitions, 1, "a created it, b took it over");
    assert_eq!(record.lease_duration_seconds, 15);
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_hangs_past_the_deadline_fences_and_the_leader_recovers_if_nobody_took_over()
{
    let stored = Arc::default();
    let a = start(&stored, "a");
    run_until(&[&a], Duration::from_secs(5), || leading(&a)).await;
    let first = a.fence.leading_term(Instant::now()).expect("leading");
    a.cut_off.store(true, Ordering::SeqCst);
    run_until(&[&a], Duration::from_secs(11), || !leading(&a)).await;
    a.cut_off.store(false, Ordering::SeqCst);
    run_until(&[&a], Duration::from_secs(5), || leading(&a)).await;
    let second = a.fence.leading_term(Instant::now()).expect("leading again");
    assert_ne!(
        first, second,
        "a new term: rounds of the old one cannot resume"
    );
}
