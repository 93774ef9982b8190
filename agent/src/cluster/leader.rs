//! The leader's loop: while this agent leads, every round interval: gather -> snapshot -> plan ->
//! execute (evictions, Events, taints) -> persist the planner's memory -> record the round.
//!
//! Alerts (the webhook's [`AlertAction`]s) add rounds off the interval: one at once when an alert
//! asks to relieve or drain a node, and one every `evacuation_pace` while a node is drained, so
//! that its next pod goes soon after the previous one's replacement is Ready. What the alerts
//! ask stays in force, in every round, until they resolve ([`ActiveAlerts`]).
//!
//! Leadership is checked by the fence immediately before every write; a refusal ends the round
//! at once (`fenced`) and the loop waits for leadership again. A new leadership (a new term)
//! starts the watches afresh and reads the planner's memory from the cluster, so a failover
//! neither resets cooldowns nor leaves orphan taints: its first round reconciles them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::{Api, Client, ResourceExt};
use tokio::{sync::watch, time::Instant};
use tracing::{error, info, warn};

use super::{
    alerted::ActiveAlerts,
    capture::capture,
    decisions::{
        DecisionLog, EvictionResult, ExcludedNode, ExecutedEviction, RoundRecord, RoundResult,
        RoundTrigger, TaintChanges,
    },
    election::Role,
    execute::{Executor, Subject},
    fence::{Fence, Fenced},
    gather::AgentLoads,
    memory::StateStore,
    metrics::{self as round_metrics, RoundFigures},
    taints::{self, TaintError},
    view::ClusterView,
};
use crate::{
    rebalance::{
        plan::{Eviction, NodeStatus},
        plan_directed, Directives, Plan, Policy, RebalanceState, Timestamp,
    },
    serve::alerts::{AlertAction, AlertReceiver},
};

/// How the leader works.
#[derive(Clone)]
pub struct LeaderSettings {
    pub identity: String,
    /// The agents' namespace (the state ConfigMap lives there).
    pub namespace: String,
    pub round_interval: Duration,
    pub policy: Policy,
    /// Everything runs, nothing is evicted, tainted or persisted; decisions are recorded.
    pub dry_run: bool,
    pub loads: AgentLoads,
    /// Bound on one API write (within what the fence leaves).
    pub call_timeout: Duration,
    /// How long an alert's action lasts without its end (the webhook's `remember_seconds`).
    pub alert_hold: Duration,
    /// How often a node being drained is looked at between scheduled rounds.
    pub evacuation_pace: Duration,
}

fn unix_now() -> (Timestamp, f64) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (Timestamp(since.as_secs() as i64), since.as_secs_f64())
}

/// Runs until `shutdown`: leads whenever `role` says so, and takes the webhook's actions from
/// `alerts` (`None` without the webhook) while it does.
pub async fn run(
    client: Client,
    settings: LeaderSettings,
    fence: Fence,
    mut role: watch::Receiver<Role>,
    decisions: Arc<DecisionLog>,
    mut alerts: Option<AlertReceiver>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let term = tokio::select! {
            changed = role.wait_for(|r| matches!(r, Role::Leader { .. })) => match changed {
                Ok(role) => match *role {
                    Role::Leader { term } => term,
                    Role::Candidate { .. } => continue,
                },
                Err(_) => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let mut leadership = Leadership::new(&client, &settings, &fence, term, &decisions);
        let outcome = {
            let lead = leadership.lead(alerts.as_mut());
            tokio::pin!(lead);
            tokio::select! {
                _ = &mut lead => None,
                _ = role.wait_for(|r| *r != Role::Leader { term }) => None,
                _ = shutdown.wait_for(|stop| *stop) => Some(()),
            }
        };
        if outcome.is_some() {
            leadership.step_down().await;
            return;
        }
        info!(term, "leadership over; rounds stopped");
    }
}

/// One term's worth of leading.
struct Leadership<'a> {
    client: &'a Client,
    settings: &'a LeaderSettings,
    fence: &'a Fence,
    term: u64,
    decisions: &'a DecisionLog,
    view: Option<ClusterView>,
    state: RebalanceState,
    /// What the alerts firing ask; a new leadership starts without (Alertmanager re-sends).
    alerts: ActiveAlerts,
}

/// Why a round stopped early.
enum Stop {
    Fenced(Fenced),
    Failed(String),
}

impl From<Fenced> for Stop {
    fn from(fenced: Fenced) -> Self {
        Stop::Fenced(fenced)
    }
}

impl<'a> Leadership<'a> {
    fn new(
        client: &'a Client,
        settings: &'a LeaderSettings,
        fence: &'a Fence,
        term: u64,
        decisions: &'a DecisionLog,
    ) -> Self {
        Self {
            client,
            settings,
            fence,
            term,
            decisions,
            view: None,
            state: RebalanceState::default(),
            alerts: ActiveAlerts::new(settings.alert_hold),
        }
    }

    fn executor(&self) -> Executor<'_> {
        Executor {
            client: self.client,
            identity: &self.settings.identity,
            fence: self.fence,
            term: self.term,
            call_timeout: self.settings.call_timeout,
        }
    }

    fn dry_run(&self) -> bool {
        self.settings.dry_run || self.settings.policy.dry_run
    }

    /// Returns when a round is fenced (the loop then waits for leadership to be regained).
    async fn lead(&mut self, mut alerts: Option<&mut AlertReceiver>) {
        info!(
            term = self.term,
            dry_run = self.dry_run(),
            "leading: starting the cluster view"
        );
        let view = ClusterView::start(self.client);
        while !view.ready(Duration::from_secs(30)).await {
            warn!("the cluster view (nodes, pods, PDBs) is not complete after 30 s; still waiting");
        }
        self.view = Some(view);
        let mut store = StateStore::new(
            Api::<ConfigMap>::namespaced(self.client.clone(), &self.settings.namespace),
            self.settings.identity.clone(),
        );
        self.state = match store.load().await {
            Ok(Some(state)) => {
                info!(
                    rounds = state.rounds,
                    workloads = state.workloads.len(),
                    "planner memory loaded"
                );
                state
            }
            Ok(None) => {
                info!("no planner memory in the cluster yet; starting fresh");
                RebalanceState::default()
            }
            Err(why) => {
                error!(%why, "the planner memory cannot be read; starting fresh (it is overwritten after this round)");
                RebalanceState::default()
            }
        };
        let mut ticks = tokio::time::interval(self.settings.round_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pace = tokio::time::interval(self.settings.evacuation_pace);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let draining = self.alerts.evacuating();
            let trigger = tokio::select! {
                _ = ticks.tick() => RoundTrigger::Schedule,
                _ = pace.tick(), if draining => RoundTrigger::Evacuation,
                Some(action) = next_action(&mut alerts) => {
                    if !self.take_actions(action, &mut alerts) {
                        continue;
                    }
                    RoundTrigger::Alert
                }
            };
            if self.round(&mut store, trigger).await == RoundResult::Fenced {
                return;
            }
            // The schedule is kept (hysteresis counts scheduled rounds); the pace counts from
            // the last round of any kind.
            pace.reset();
        }
    }

    /// Takes in `first` and every action queued behind it (one round serves them all); whether
    /// they ask for a round now.
    fn take_actions(
        &mut self,
        first: AlertAction,
        alerts: &mut Option<&mut AlertReceiver>,
    ) -> bool {
        let now = std::time::Instant::now();
        let mut round_now = false;
        let mut action = Some(first);
        while let Some(taken) = action {
            info!(
                action = taken.name(),
                node = taken.node(),
                fingerprint = taken.fingerprint(),
                "alert action"
            );
            round_now |= self.alerts.apply(taken, now).round_now;
            action = alerts.as_mut().and_then(|a| a.try_recv().ok());
        }
        round_now
    }

    async fn round(&mut self, store: &mut StateStore, trigger: RoundTrigger) -> RoundResult {
        let started = Instant::now();
        let (now, _) = unix_now();
        let expired = self.alerts.expire(std::time::Instant::now());
        if expired > 0 {
            warn!(
                expired,
                "alert actions dropped: no end within the hold (remember_seconds)"
            );
        }
        let directives = self.alerts.directives(trigger != RoundTrigger::Schedule);
        round_metrics::alert_actions(&directives);
        let mut record = RoundRecord {
            at: now,
            leader: self.settings.identity.clone(),
            term: self.term,
            trigger,
            alerts: directives.clone(),
            dry_run: self.dry_run(),
            result: RoundResult::Planned,
            error: None,
            duration_seconds: 0.0,
            excluded_nodes: BTreeMap::new(),
            capture_problems: Vec::new(),
            evictions: Vec::new(),
            taints: TaintChanges::default(),
            plan: None,
        };
        let mut hot_taints = 0;
        let outcome = self
            .plan_and_act(store, now, &directives, &mut record, &mut hot_taints)
            .await;
        match outcome {
            Ok(()) => {}
            Err(Stop::Fenced(why)) => {
                warn!(%why, "round stopped: leadership ended");
                record.result = RoundResult::Fenced;
                record.error = Some(why.to_string());
            }
            Err(Stop::Failed(why)) => {
                error!(%why, "round failed");
                record.result = RoundResult::Failed;
                record.error = Some(why);
            }
        }
        record.duration_seconds = started.elapsed().as_secs_f64();
        let excluded: BTreeMap<String, _> = record
            .excluded_nodes
            .iter()
            .map(|(node, e)| (node.clone(), e.reason))
            .collect();
        round_metrics::round(&RoundFigures {
            result: record.result,
            duration_seconds: record.duration_seconds,
            finished_at_unix: unix_now().1,
            plan: record.plan.as_ref(),
            state: &self.state,
            now,
            excluded: &excluded,
            hot_taints,
        });
        info!(
            result = record.result.as_str(),
            trigger = ?trigger,
            evictions = record.evictions.len(),
            excluded = record.excluded_nodes.len(),
            taints_added = record.taints.added.len(),
            taints_removed = record.taints.removed.len(),
            seconds = record.duration_seconds,
            "round"
        );
        let result = record.result;
        self.decisions.record(record);
        result
    }

    async fn plan_and_act(
        &mut self,
        store: &mut StateStore,
        now: Timestamp,
        directives: &Directives,
        record: &mut RoundRecord,
        hot_taints: &mut usize,
    ) -> Result<(), Stop> {
        let Some(view) = &self.view else {
            return Err(Stop::Failed("no cluster view".into()));
        };
        let (nodes, pods, pdbs) = (view.nodes(), view.pods(), view.pdbs());
        let (loads, excluded) = self.settings.loads.collect(&nodes, &pods).await;
        for (node, (reason, detail)) in &excluded {
            warn!(node = %node, reason = reason.as_str(), %detail, "node left out of this round");
        }
        record.excluded_nodes = excluded
            .into_iter()
            .map(|(node, (reason, detail))| (node, ExcludedNode { reason, detail }))
            .collect();
        let captured = capture(
            nodes.iter().map(|n| n.as_ref()),
            pods.iter().map(|p| p.as_ref()),
            pdbs.iter().map(|p| p.as_ref()),
            loads,
        );
        for problem in &captured.problems {
            warn!(%problem, "object left out of the snapshot");
        }
        record.capture_problems = captured.problems;
        let mut policy = self.settings.policy.clone();
        policy.dry_run = self.dry_run();
        let (plan, mut next) =
            plan_directed(&captured.snapshot, &self.state, &policy, now, directives);
        record.plan = Some(plan.clone());
        let dry_run = plan.dry_run;
        if !dry_run && !plan.evictions.is_empty() {
            // Write-ahead: the cooldowns of what is about to be evicted survive a failover.
            self.persist(store, &next).await?;
        }
        let executed = self.evict(&plan, &nodes).await;
        let fenced = executed.iter().any(|e| e.result == EvictionResult::Fenced);
        for done in &executed {
            if done.result != EvictionResult::Evicted {
                clear_in_flight(&mut next, &done.pod.uid);
            }
        }
        record.evictions = executed;
        if fenced {
            self.state = next;
            return Err(Stop::Fenced(Fenced::NotLeader));
        }
        if !dry_run {
            record.taints = self
                .reconcile_taints(&nodes, &hot_nodes(&plan, &next))
                .await?;
        }
        *hot_taints = count_hot(&nodes, &record.taints);
        self.state = next;
        if !dry_run {
            self.persist(store, &self.state).await?;
        }
        Ok(())
    }

    async fn persist(&self, store: &mut StateStore, state: &RebalanceState) -> Result<(), Stop> {
        match store.save(state, self.fence, self.term).await {
            Ok(0) => Ok(()),
            Ok(dropped) => {
                warn!(dropped, "planner memory above its size bound: the least relevant workload entries were left out");
                Ok(())
            }
            Err(super::memory::SaveError::Fenced(fenced)) => Err(Stop::Fenced(fenced)),
            Err(error) => Err(Stop::Failed(error.to_string())),
        }
    }

    /// Evicts in the plan's order; stops at the first fence refusal (the rest are `fenced`).
    async fn evict(&self, plan: &Plan, nodes: &[Arc<Node>]) -> Vec<ExecutedEviction> {
        let executor = self.executor();
        let mut done = Vec::new();
        for (i, eviction) in plan.evictions.iter().enumerate() {
            let outcome = match executor.evict(plan, eviction).await {
                Ok(outcome) => outcome,
                Err(why) => {
                    done.extend(not_sent(plan, &plan.evictions[i..], why));
                    return done;
                }
            };
            round_metrics::eviction(outcome.result, &outcome.resource);
            info!(
                pod = %outcome.pod,
                source = %outcome.source,
                resource = %outcome.resource,
                result = outcome.result.as_str(),
                detail = %outcome.detail,
                reason = %eviction.reason,
                "eviction"
            );
            if outcome.result == EvictionResult::Evicted {
                if let Err(why) = self.events(eviction, nodes).await {
                    done.push(outcome);
                    done.extend(not_sent(plan, &plan.evictions[i + 1..], why));
                    return done;
                }
            }
            done.push(outcome);
        }
        done
    }

    /// The Events on the evicted pod and on its source node.
    async fn events(&self, eviction: &Eviction, nodes: &[Arc<Node>]) -> Result<(), Fenced> {
        let executor = self.executor();
        let node_uid = nodes
            .iter()
            .find(|n| n.name_any() == eviction.source)
            .and_then(|n| n.metadata.uid.clone());
        let pod = Subject {
            kind: "Pod",
            namespace: Some(&eviction.pod.namespace),
            name: &eviction.pod.name,
            uid: Some(&eviction.pod.uid),
        };
        let node = Subject {
            kind: "Node",
            namespace: None,
            name: &eviction.source,
            uid: node_uid.as_deref(),
        };
        let node_message = format!("evicted {}: {}", eviction.pod, eviction.reason);
        for (subject, message) in [
            (pod, eviction.reason.as_str()),
            (node, node_message.as_str()),
        ] {
            if let Err(why) = executor.record_event(&subject, message).await? {
                warn!(%why, object = subject.name, "the Event was not recorded");
            }
        }
        Ok(())
    }

    /// Taints exactly `sources`; orphans are removed.
    async fn reconcile_taints(
        &self,
        nodes: &[Arc<Node>],
        sources: &BTreeSet<String>,
    ) -> Result<TaintChanges, Stop> {
        let current = nodes
            .iter()
            .map(|n| (n.name_any(), taints::has_hot_taint(n)))
            .collect::<Vec<_>>();
        let changes = taints::changes(current.iter().map(|(n, t)| (n.as_str(), *t)), sources);
        self.apply_taints(nodes, changes).await
    }

    async fn apply_taints(
        &self,
        nodes: &[Arc<Node>],
        changes: Vec<taints::Change>,
    ) -> Result<TaintChanges, Stop> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut done = TaintChanges::default();
        for change in changes {
            let known = nodes
                .iter()
                .find(|n| n.name_any() == change.node)
                .map(|n| n.as_ref().clone());
            match taints::apply(&api, known, &change.node, change.hot, self.fence, self.term).await
            {
                Ok(_) if change.hot => done.added.push(change.node),
                Ok(_) => done.removed.push(change.node),
                Err(TaintError::Fenced(fenced)) => return Err(Stop::Fenced(fenced)),
                Err(error) => {
                    warn!(node = %change.node, hot = change.hot, %error, "taint not changed; retried next round");
                    done.failed.insert(change.node, error.to_string());
                }
            }
        }
        Ok(done)
    }

    /// Leaving on shutdown: our taints come off (the next leader puts back those still needed
    /// in its first round), so an uninstall leaves none behind.
    async fn step_down(&mut self) {
        if self.dry_run() {
            return;
        }
        let Some(view) = &self.view else {
            return;
        };
        let nodes = view.nodes();
        let changes: Vec<taints::Change> = nodes
            .iter()
            .filter(|n| taints::has_hot_taint(n))
            .map(|n| taints::Change {
                node: n.name_any(),
                hot: false,
            })
            .collect();
        if changes.is_empty() {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(5), self.apply_taints(&nodes, changes)).await {
            Ok(Ok(done)) => info!(removed = done.removed.len(), "taints removed on shutdown"),
            Ok(Err(_)) => warn!("leadership ended before the taints could be removed; the next leader reconciles them"),
            Err(_) => warn!("removing the taints took too long; the next leader reconciles them"),
        }
    }
}

/// The next webhook action, or never without the webhook.
async fn next_action(alerts: &mut Option<&mut AlertReceiver>) -> Option<AlertAction> {
    match alerts {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The nodes that carry the hot taint after this round: the planner's sources, the nodes an
/// alert had relieved as sources and those being drained (new pods should go elsewhere).
fn hot_nodes(plan: &Plan, state: &RebalanceState) -> BTreeSet<String> {
    let mut hot = taints::sources(state);
    hot.extend(
        plan.nodes
            .iter()
            .filter(|r| matches!(r.status, NodeStatus::Source | NodeStatus::Evacuating))
            .map(|r| r.node.clone()),
    );
    hot
}

/// The evictions a fence refusal kept from being sent.
fn not_sent(plan: &Plan, rest: &[Eviction], why: Fenced) -> Vec<ExecutedEviction> {
    rest.iter()
        .map(|eviction| ExecutedEviction {
            pod: eviction.pod.clone(),
            source: eviction.source.clone(),
            resource: super::execute::resource_of(plan, eviction),
            result: EvictionResult::Fenced,
            detail: format!("not sent: {why}"),
        })
        .collect()
}

/// A workload whose eviction did not happen has nothing in flight (its cooldown stays: it is
/// what keeps the next attempt from coming before its time).
fn clear_in_flight(state: &mut RebalanceState, pod_uid: &str) {
    for memory in state.workloads.values_mut() {
        if memory
            .in_flight
            .as_ref()
            .is_some_and(|f| f.pod_uid == pod_uid)
        {
            memory.in_flight = None;
        }
    }
}

/// Nodes carrying the taint after this round's changes.
fn count_hot(nodes: &[Arc<Node>], changes: &TaintChanges) -> usize {
    let mut hot: BTreeSet<String> = nodes
        .iter()
        .filter(|n| taints::has_hot_taint(n))
        .map(|n| n.name_any())
        .collect();
    hot.extend(changes.added.iter().cloned());
    for removed in &changes.removed {
        hot.remove(removed);
    }
    hot.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebalance::{
        snapshot::WorkloadKey,
        state::{InFlight, WorkloadMemory},
    };

    #[test]
    fn a_failed_eviction_leaves_nothing_in_flight_but_keeps_the_cooldown() {
        let key = WorkloadKey::new("shop", "Deployment", "web");
        let mut state = RebalanceState::default();
        state.workloads.insert(
            key.clone(),
            WorkloadMemory {
                cooldown_until: Some(Timestamp(400)),
                strikes: 0,
                last_strike: None,
                arrivals: Vec::new(),
                in_flight: Some(InFlight {
                    pod_uid: "uid-1".into(),
                    pod_name: "web-1".into(),
                    source: "node-a".into(),
                    evicted_at: Timestamp(100),
                }),
            },
        );
        clear_in_flight(&mut state, "uid-other");
        assert!(state.workloads[&key].in_flight.is_some());
        clear_in_flight(&mut state, "uid-1");
        assert_eq!(state.workloads[&key].in_flight, None);
        assert_eq!(state.workloads[&key].cooldown_until, Some(Timestamp(400)));
    }
}
