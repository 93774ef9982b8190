//! One planning round, in order: refill the token bucket and model every node with fresh load;
//! classify the nodes (hysteresis) and pick the destinations; read the pods once (requests per
//! node, pods of the sources, workloads); release workloads whose replacement is Ready; then,
//! hottest source first, walk its eligible pods in order of least disruption and most relief and
//! move each to the best fitting destination until the source is under its target or a limit
//! stops it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::BuildHasher,
};

use foldhash::fast::FixedState;

use super::{
    classify::{step, Thresholds, Verdict},
    directives::{alerts_text, Directives},
    eligibility::{self, WorkloadView},
    explain::{describe_resource, describe_source, evacuation_reason, eviction_reason, Rejections},
    limits::{in_flight_expired, record_arrival, record_eviction, refill, worth_keeping},
    loads::Loads,
    matching::{covers, placeable, soft_taints, Mismatch},
    plan::{
        Destination, Eviction, ExpiredInFlight, NodeReport, NodeSkip, NodeStatus, Plan, PodRef,
        PodSkip, SkipReason, Summary,
    },
    policy::Policy,
    predict::{median_slopes, NodeModel, Usage},
    snapshot::{ClusterSnapshot, Node, Pod, Timestamp, WorkloadKey},
    state::{InFlight, RebalanceState},
};
use crate::load::score::Resource;

/// `(namespace, owner kind, owner name)`: a workload without allocating its key.
type WorkloadId<'a> = (&'a str, &'a str, &'a str);

fn workload_id(pod: &Pod) -> Option<WorkloadId<'_>> {
    pod.owner
        .as_ref()
        .map(|o| (pod.namespace.as_str(), o.kind.as_str(), o.name.as_str()))
}

/// Maps used only for lookups (never iterated, so their order cannot leak into a plan), with a
/// fast fixed-seed hash: a round hashes every pod of the cluster.
type FastMap<K, V> = HashMap<K, V, FixedState>;

/// Pods are grouped by this hash of their owner's name alone (one string read per pod); a group
/// may hold several workloads (same name in other namespaces or kinds, or a collision), so
/// members are filtered by their exact id where it matters.
fn workload_hash(owner_name: &str) -> u64 {
    FixedState::default().hash_one(owner_name)
}

struct NodeEntry<'a> {
    node: &'a Node,
    /// Present when the node is Ready and its agent's load is fresh.
    model: Option<NodeModel>,
    requested_cpu: u64,
    requested_memory: u64,
    requested_extended: BTreeMap<&'a str, u64>,
    pods: Vec<usize>,
    /// Resources in the source state after this round's classification (or an alert's).
    source: Vec<Resource>,
    /// An alert asks to drain it.
    evacuating: bool,
}

impl<'a> NodeEntry<'a> {
    /// Whether the pod's requests fit in what is not requested yet; `Err` says what is short,
    /// phrased for the no-destination summary.
    fn fits(&self, pod: &Pod) -> Result<(), &'static str> {
        let alloc = &self.node.allocatable;
        if self
            .requested_cpu
            .saturating_add(pod.requests.cpu_millicores)
            > alloc.cpu_millicores
        {
            return Err("lack free cpu for its requests");
        }
        if self
            .requested_memory
            .saturating_add(pod.requests.memory_bytes)
            > alloc.memory_bytes
        {
            return Err("lack free memory for its requests");
        }
        let extended_fits = pod.requests.extended.iter().all(|(name, wanted)| {
            let used = self
                .requested_extended
                .get(name.as_str())
                .copied()
                .unwrap_or(0);
            let capacity = alloc.extended.get(name).copied().unwrap_or(0);
            used.saturating_add(*wanted) <= capacity
        });
        if !extended_fits {
            return Err("lack free extended resources for its requests");
        }
        Ok(())
    }

    /// Pods are moved off it this round (if the limits allow).
    fn drained(&self) -> bool {
        !self.source.is_empty() || self.evacuating
    }

    fn add_requests(&mut self, pod: &'a Pod) {
        self.requested_cpu = self
            .requested_cpu
            .saturating_add(pod.requests.cpu_millicores);
        self.requested_memory = self
            .requested_memory
            .saturating_add(pod.requests.memory_bytes);
        for (name, quantity) in &pod.requests.extended {
            let used = self.requested_extended.entry(name.as_str()).or_default();
            *used = used.saturating_add(*quantity);
        }
    }
}

/// A pod that passed eligibility, with what moving it would do.
struct Candidate {
    pod: usize,
    usage: Usage,
    /// Weighted utilisation it frees on the source's hot resources.
    relief: f64,
}

struct Ranked {
    soft_taints: usize,
    score: f64,
    node: usize,
    after: Loads,
}

/// What became of an eviction in flight.
enum Settled {
    /// Its replacement is Ready on this node; `true`: a hot one (a source, or where it left).
    Arrived(String, bool),
    /// The workload has no pods any more.
    Gone,
    /// No Ready replacement within the timeout.
    Expired,
}

/// A key that sorts like `f64::total_cmp`, for ordered sets of scores.
fn order_key(value: f64) -> u64 {
    let bits = value.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

pub fn run(
    snapshot: &ClusterSnapshot,
    state: &RebalanceState,
    policy: &Policy,
    now: Timestamp,
    directives: &Directives,
) -> (Plan, RebalanceState) {
    let mut round = Round::new(snapshot, state, policy, now, directives);
    round.classify();
    round.index_pods();
    round.release_in_flight();
    round.evacuate_nodes();
    round.relieve_sources();
    round.finish()
}

struct Round<'a> {
    snapshot: &'a ClusterSnapshot,
    previous: &'a RebalanceState,
    policy: &'a Policy,
    now: Timestamp,
    directives: &'a Directives,
    nodes: Vec<NodeEntry<'a>>,
    /// Pod indices by [`workload_hash`].
    workloads: FastMap<u64, Vec<usize>>,
    /// Node indices by name (filled with the pods).
    node_index: FastMap<&'a str, usize>,
    thresholds: Thresholds,
    /// Median pressure slopes, for destinations without their own.
    floor: [f64; 3],
    /// Candidate destinations by their current score (see [`order_key`]), lowest first.
    destinations: BTreeSet<(u64, usize)>,
    /// Each destination's key in `destinations`.
    destination_keys: Vec<Option<u64>>,
    next: RebalanceState,
    evictions: Vec<Eviction>,
    expired_in_flight: Vec<ExpiredInFlight>,
    skipped: Vec<PodSkip>,
    reports: Vec<NodeReport>,
    pods_considered: usize,
    per_node: Vec<u32>,
    per_namespace: BTreeMap<&'a str, u32>,
    evicted_workloads: BTreeSet<WorkloadId<'a>>,
    pdb_remaining: Vec<u32>,
    pdbs_by_namespace: FastMap<&'a str, Vec<usize>>,
}

impl<'a> Round<'a> {
    fn new(
        snapshot: &'a ClusterSnapshot,
        previous: &'a RebalanceState,
        policy: &'a Policy,
        now: Timestamp,
        directives: &'a Directives,
    ) -> Self {
        let nodes: Vec<NodeEntry<'a>> = snapshot
            .nodes
            .iter()
            .map(|node| NodeEntry {
                node,
                model: snapshot
                    .node_loads
                    .get(&node.name)
                    .filter(|load| load.fresh && node.ready)
                    .map(|load| NodeModel::new(node, load)),
                requested_cpu: 0,
                requested_memory: 0,
                requested_extended: BTreeMap::new(),
                pods: Vec::new(),
                source: Vec::new(),
                evacuating: directives.evacuates(&node.name),
            })
            .collect();
        let thresholds = Thresholds::for_round(
            &policy.classification,
            nodes
                .iter()
                .filter_map(|n| n.model.as_ref().map(|m| &m.loads)),
        );
        let floor = median_slopes(nodes.iter().filter_map(|n| n.model.as_ref()));
        let mut pdbs_by_namespace: FastMap<&str, Vec<usize>> = FastMap::default();
        for (i, pdb) in snapshot.pdbs.iter().enumerate() {
            pdbs_by_namespace
                .entry(pdb.namespace.as_str())
                .or_default()
                .push(i);
        }
        let next = RebalanceState {
            nodes: BTreeMap::new(),
            workloads: previous.workloads.clone(),
            tokens: refill(&previous.tokens, &policy.limits.token_bucket, now),
            rounds: previous.rounds.saturating_add(1),
        };
        Self {
            snapshot,
            previous,
            policy,
            now,
            directives,
            per_node: vec![0; nodes.len()],
            nodes,
            workloads: FastMap::default(),
            node_index: FastMap::default(),
            thresholds,
            floor,
            destinations: BTreeSet::new(),
            destination_keys: Vec::new(),
            next,
            evictions: Vec::new(),
            expired_in_flight: Vec::new(),
            skipped: Vec::new(),
            reports: Vec::new(),
            pods_considered: 0,
            per_namespace: BTreeMap::new(),
            evicted_workloads: BTreeSet::new(),
            pdb_remaining: snapshot
                .pdbs
                .iter()
                .map(|p| p.disruptions_allowed)
                .collect(),
            pdbs_by_namespace,
        }
    }

    /// Steps every node's hysteresis (not in an off-schedule round), makes the nodes an alert
    /// asks to relieve sources of what is above their floor, reports the nodes that are not
    /// plainly normal and picks the destinations (never a node being evacuated).
    fn classify(&mut self) {
        let classification = &self.policy.classification;
        let directives = self.directives;
        let mut destinations = Vec::new();
        for (i, entry) in self.nodes.iter_mut().enumerate() {
            let name = &entry.node.name;
            let previous = self.previous.nodes.get(name);
            let Some(model) = &entry.model else {
                // Unknown load: the counters stay as they were, the node is on neither side.
                if let Some(previous) = previous {
                    self.next.nodes.insert(name.clone(), previous.clone());
                }
                if entry.evacuating {
                    // Drained all the same: evacuation does not depend on load.
                    continue;
                }
                let (skip, detail) = if entry.node.ready {
                    (
                        NodeSkip::LoadUnknown,
                        "no fresh load from its agent: unknown, so neither a source nor a destination",
                    )
                } else {
                    (
                        NodeSkip::NotReady,
                        "not Ready: neither a source nor a destination",
                    )
                };
                self.reports.push(NodeReport {
                    node: name.clone(),
                    status: NodeStatus::Excluded,
                    resources: Vec::new(),
                    skip: Some(skip),
                    detail: detail.to_owned(),
                });
                continue;
            };
            let mut hysteresis = BTreeMap::new();
            let mut abnormal = Vec::new();
            let mut counting = Vec::new();
            let relieve = directives.relieves(name);
            for resource in Resource::ALL {
                let before = previous
                    .and_then(|p| p.get(&resource))
                    .cloned()
                    .unwrap_or_default();
                let verdict = self.thresholds.verdict(&model.loads, resource);
                let after = match directives.off_schedule {
                    true => before,
                    false => step(&before, verdict, classification),
                };
                let above_floor = !self.thresholds.under_target(&model.loads, resource);
                if after.source || (relieve && above_floor) {
                    entry.source.push(resource);
                } else if verdict == Verdict::Abnormal {
                    abnormal.push(resource);
                    counting.push(format!(
                        "{resource} abnormal {} of {} rounds ({})",
                        after.abnormal_rounds,
                        classification.abnormal_rounds,
                        describe_resource(&self.thresholds, &model.loads, resource)
                    ));
                }
                if after != Default::default() {
                    hysteresis.insert(resource, after);
                }
            }
            if !hysteresis.is_empty() {
                self.next.nodes.insert(name.clone(), hysteresis);
            }
            if entry.evacuating {
                continue;
            }
            if entry.source.is_empty() && relieve {
                let alerts = alerts_text(&directives.relieve[name]);
                self.reports.push(NodeReport {
                    node: name.clone(),
                    status: NodeStatus::Alerted,
                    resources: Vec::new(),
                    skip: Some(NodeSkip::UnderTarget),
                    detail: format!(
                        "{alerts} asks to relieve it, but it is at or under its release thresholds on every resource (the hysteresis floor): left alone"
                    ),
                });
            }
            if entry.source.is_empty() {
                if !abnormal.is_empty() {
                    self.reports.push(NodeReport {
                        node: name.clone(),
                        status: NodeStatus::Abnormal,
                        resources: abnormal,
                        skip: None,
                        detail: counting.join("; "),
                    });
                }
                if !entry.node.unschedulable {
                    destinations.push(i);
                }
            }
        }
        self.destination_keys = vec![None; self.nodes.len()];
        for i in destinations {
            let score = self.nodes[i]
                .model
                .as_ref()
                .and_then(|m| self.score(&m.loads));
            // A node with nothing measured cannot be judged as a destination.
            if let Some(score) = score {
                self.destinations.insert((order_key(score), i));
                self.destination_keys[i] = Some(order_key(score));
            }
        }
    }

    /// Moves a destination to its place for its new load.
    fn reorder_destination(&mut self, node: usize, loads: &Loads) {
        let Some(old) = self.destination_keys[node] else {
            return;
        };
        self.destinations.remove(&(old, node));
        let key = self.score(loads).map(order_key);
        if let Some(key) = key {
            self.destinations.insert((key, node));
        }
        self.destination_keys[node] = key;
    }

    /// One pass over the pods: requests per node, the pods of each source, pods by workload.
    /// Skipped when there is neither a source nor an eviction in flight: a quiet round reads no
    /// pod.
    fn index_pods(&mut self) {
        let any_in_flight = self.next.workloads.values().any(|w| w.in_flight.is_some());
        if !any_in_flight && !self.nodes.iter().any(NodeEntry::drained) {
            return;
        }
        let snapshot = self.snapshot;
        self.node_index = snapshot
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.as_str(), i))
            .collect();
        let index = &self.node_index;
        for (i, pod) in snapshot.pods.iter().enumerate() {
            if let Some(owner) = &pod.owner {
                self.workloads
                    .entry(workload_hash(&owner.name))
                    .or_default()
                    .push(i);
            }
            let Some(entry) = pod
                .node
                .as_deref()
                .and_then(|name| index.get(name))
                .and_then(|i| self.nodes.get_mut(*i))
            else {
                continue;
            };
            entry.add_requests(pod);
            if entry.drained() {
                entry.pods.push(i);
            }
        }
    }

    /// Settles the evictions in flight. One is released when its workload has a Ready pod
    /// started since the eviction (its replacement: the earliest such, where it arrived; see
    /// [`record_arrival`]) or no pods any more, and given up on after
    /// `limits.in_flight_timeout_seconds` without a replacement.
    fn release_in_flight(&mut self) {
        let timeout = self.policy.limits.in_flight_timeout_seconds;
        let settled: Vec<(WorkloadKey, Settled)> = self
            .next
            .workloads
            .iter()
            .filter_map(|(key, memory)| {
                let in_flight = memory.in_flight.as_ref()?;
                let mut parts = key.0.splitn(3, '/');
                let id = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let mut members = self.members(id).peekable();
                if members.peek().is_none() {
                    return Some((key.clone(), Settled::Gone));
                }
                let replacement = members
                    .filter(|pod| {
                        pod.ready
                            && pod.node.is_some()
                            && pod.uid != in_flight.pod_uid
                            && pod.start_time >= in_flight.evicted_at
                    })
                    .min_by(|a, b| a.start_time.cmp(&b.start_time).then(a.uid.cmp(&b.uid)));
                match replacement {
                    Some(pod) => {
                        let node = pod.node.as_deref().unwrap_or_default();
                        let hot = node == in_flight.source
                            || self
                                .node_index
                                .get(node)
                                .is_some_and(|i| !self.nodes[*i].source.is_empty());
                        Some((key.clone(), Settled::Arrived(node.to_owned(), hot)))
                    }
                    None if in_flight_expired(in_flight, timeout, self.now) => {
                        Some((key.clone(), Settled::Expired))
                    }
                    None => None,
                }
            })
            .collect();
        let cooldown = &self.policy.limits.cooldown;
        for (key, settled) in settled {
            let Some(memory) = self.next.workloads.get_mut(&key) else {
                continue;
            };
            match settled {
                Settled::Arrived(node, hot) => {
                    *memory = record_arrival(memory, cooldown, self.now, &node, hot);
                }
                Settled::Gone => memory.in_flight = None,
                Settled::Expired => {
                    if let Some(in_flight) = memory.in_flight.take() {
                        self.expired_in_flight.push(ExpiredInFlight {
                            workload: key,
                            pod: in_flight.pod_name,
                            source: in_flight.source,
                            evicted_at: in_flight.evicted_at,
                        });
                    }
                }
            }
        }
    }

    fn limits_exhausted(&self) -> bool {
        self.evictions.len() >= self.policy.limits.per_round as usize
            || self.next.tokens.tokens < 1.0
    }

    fn relieve_sources(&mut self) {
        let mut sources: Vec<(f64, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.source.is_empty() && !n.evacuating)
            .filter_map(|(i, n)| Some((self.thresholds.node_level(&n.model.as_ref()?.loads), i)))
            .collect();
        sources.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| self.nodes[a.1].node.name.cmp(&self.nodes[b.1].node.name))
        });
        for (_, source) in sources {
            if self.directives.acts_on(&self.nodes[source].node.name) {
                self.relieve(source);
            } else {
                self.wait_for_schedule(source);
            }
        }
    }

    /// A source left for the next scheduled round: this one was run for an alert elsewhere.
    fn wait_for_schedule(&mut self, source: usize) {
        let entry = &self.nodes[source];
        let Some(model) = &entry.model else {
            return;
        };
        let name = &entry.node.name;
        let mut detail =
            describe_source(&self.thresholds, model, &entry.source, self.snapshot, name);
        detail.push_str("; this round was run for an alert on another node: relieved in the next scheduled round");
        self.reports.push(NodeReport {
            node: name.clone(),
            status: NodeStatus::Source,
            resources: entry.source.clone(),
            skip: Some(NodeSkip::OffSchedule),
            detail,
        });
    }

    /// Drains the nodes alerts ask to evacuate, by name, before any load-driven relief: an
    /// operator's alert (failing hardware, a disk) outranks load.
    fn evacuate_nodes(&mut self) {
        let mut evacuating: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].evacuating)
            .collect();
        evacuating.sort_by(|a, b| self.nodes[*a].node.name.cmp(&self.nodes[*b].node.name));
        for node in evacuating {
            self.evacuate(node);
        }
    }

    /// Moves one eligible pod off `node`, unless an earlier one from it is still in flight;
    /// every other pod waits its turn.
    fn evacuate(&mut self, node: usize) {
        let name = self.nodes[node].node.name.clone();
        let alerts = self
            .directives
            .evacuate
            .get(&name)
            .map(alerts_text)
            .unwrap_or_default();
        let mut ahead: Option<String> = self.next.workloads.iter().find_map(|(key, memory)| {
            let in_flight = memory.in_flight.as_ref().filter(|f| f.source == name)?;
            Some(format!(
                "the replacement of {} ({key}) is not Ready yet",
                in_flight.pod_name
            ))
        });
        let candidates = self.candidates(node, &[]);
        let eligible = candidates.len();
        for candidate in candidates {
            let pod = &self.snapshot.pods[candidate.pod];
            if let Some(ahead) = &ahead {
                self.skip(
                    pod,
                    node,
                    SkipReason::EvacuationQueued,
                    format!("the evacuation moves one pod at a time: {ahead}"),
                );
                continue;
            }
            if let Err((reason, detail)) = self.within_limits(pod, node) {
                self.skip(pod, node, reason, detail);
                continue;
            }
            match self.rank_destinations(pod, &candidate.usage, f64::INFINITY) {
                Ok(ranked) => {
                    self.evict(&candidate, node, &[], ranked);
                    ahead = Some(format!("{}/{} goes first", pod.namespace, pod.name));
                }
                Err(rejections) => {
                    self.skip(pod, node, SkipReason::NoDestination, rejections.describe());
                }
            }
        }
        let moved = self.per_node[node];
        let detail = match eligible {
            0 => format!("evacuating ({alerts}): no eligible pod left on it (see the skipped pods for the others)"),
            _ => format!(
                "evacuating ({alerts}): {moved} of {eligible} eligible pod(s) moved this round, one at a time"
            ),
        };
        self.reports.push(NodeReport {
            node: name,
            status: NodeStatus::Evacuating,
            resources: Vec::new(),
            skip: None,
            detail,
        });
    }

    fn relieve(&mut self, source: usize) {
        let snapshot = self.snapshot;
        let entry = &self.nodes[source];
        let Some(model) = &entry.model else {
            return;
        };
        let name = entry.node.name.clone();
        let resources = entry.source.clone();
        let mut detail = describe_source(&self.thresholds, model, &resources, snapshot, &name);
        let unpredictable = resources
            .iter()
            .copied()
            .find(|r| model.loads.get(*r).utilisation.is_none());
        let report = |skip: Option<NodeSkip>, detail: String| NodeReport {
            node: name.clone(),
            status: NodeStatus::Source,
            resources: resources.clone(),
            skip,
            detail,
        };
        if self.under_target(source) {
            detail.push_str("; already under its release thresholds, waiting out the hysteresis");
            self.reports
                .push(report(Some(NodeSkip::UnderTarget), detail));
            return;
        }
        if let Some(r) = unpredictable {
            detail.push_str(&format!(
                "; {r} utilisation not measured: the relief of a move cannot be predicted"
            ));
            self.reports
                .push(report(Some(NodeSkip::LoadIncomplete), detail));
            return;
        }
        if self.limits_exhausted() {
            detail.push_str("; the round's eviction limit or the token bucket ran out first");
            self.reports
                .push(report(Some(NodeSkip::LimitReached), detail));
            return;
        }
        for candidate in self.candidates(source, &resources) {
            let pod = &snapshot.pods[candidate.pod];
            if self.under_target(source) {
                self.skip(
                    pod,
                    source,
                    SkipReason::TargetReached,
                    "the node reached its target with the evictions before it".to_owned(),
                );
                continue;
            }
            if let Err((reason, detail)) = self.within_limits(pod, source) {
                self.skip(pod, source, reason, detail);
                continue;
            }
            let level = self.source_level(source);
            match self.rank_destinations(pod, &candidate.usage, level) {
                Ok(ranked) => self.evict(&candidate, source, &resources, ranked),
                Err(rejections) => self.skip(
                    pod,
                    source,
                    SkipReason::NoDestination,
                    rejections.describe(),
                ),
            }
        }
        let evicted = self.per_node[source];
        if self.under_target(source) {
            detail.push_str(&format!("; {evicted} eviction(s) bring it under target"));
            self.reports.push(report(None, detail));
        } else {
            detail.push_str(&format!(
                "; still above target after {evicted} eviction(s) (see the skipped pods)"
            ));
            self.reports
                .push(report(Some(NodeSkip::TargetNotReached), detail));
        }
    }

    /// Whether every hot resource of `source` is at or under its release thresholds now.
    fn under_target(&self, source: usize) -> bool {
        let entry = &self.nodes[source];
        entry.model.as_ref().is_none_or(|m| {
            entry
                .source
                .iter()
                .all(|r| self.thresholds.under_target(&m.loads, *r))
        })
    }

    fn skip(&mut self, pod: &Pod, node: usize, reason: SkipReason, detail: String) {
        self.pods_considered += 1;
        self.skipped.push(PodSkip {
            pod: PodRef::from(pod),
            node: self.nodes[node].node.name.clone(),
            reason,
            detail,
        });
    }

    /// The eligible pods of `source`, least disruptive first (lower priority, then lower QoS),
    /// then most relief of `resources`; the others are recorded as skipped. Without `resources`
    /// (an evacuation) relief does not matter, a pod without measured load is placed by its
    /// requests, and having come back recently is no refusal: the node takes no pods.
    fn candidates(&mut self, source: usize, resources: &[Resource]) -> Vec<Candidate> {
        let weights = &self.policy.selection.weights;
        let snapshot = self.snapshot;
        let evacuating = resources.is_empty();
        let mut candidates = Vec::new();
        let pods = self.nodes[source].pods.clone();
        for i in pods {
            let pod = &snapshot.pods[i];
            let view = self.workload_view(pod);
            let policy = self.policy;
            let (eligibility, cooldown) = (&policy.eligibility, &policy.limits.cooldown);
            let refusal = match evacuating {
                false => eligibility::check(pod, &view, eligibility, cooldown, self.now).err(),
                true => eligibility::refusals(pod, &view, eligibility, cooldown, self.now)
                    .into_iter()
                    .find(|r| r.reason != SkipReason::CameBack),
            };
            if let Some(refusal) = refusal {
                self.skip(pod, source, refusal.reason, refusal.detail);
                continue;
            }
            let measured = snapshot.pod_loads.get(&pod.uid).and_then(Usage::of);
            if evacuating {
                let usage = measured.unwrap_or_else(|| Usage::requested(pod));
                candidates.push(Candidate {
                    pod: i,
                    usage,
                    relief: 0.0,
                });
                continue;
            }
            let usage = measured;
            let Some(usage) = usage.filter(|u| {
                !resources.contains(&Resource::Network) || u.network_bytes_per_second.is_some()
            }) else {
                self.skip(
                    pod,
                    source,
                    SkipReason::LoadUnknown,
                    "its load was not measured: what moving it changes cannot be predicted"
                        .to_owned(),
                );
                continue;
            };
            let Some(model) = &self.nodes[source].model else {
                continue;
            };
            let relief: f64 = resources
                .iter()
                .map(|r| weights.of(*r) * model.share(&usage, *r).unwrap_or(0.0))
                .sum();
            if relief <= 0.0 {
                let hot: Vec<String> = resources.iter().map(Resource::to_string).collect();
                self.skip(
                    pod,
                    source,
                    SkipReason::NoRelief,
                    format!("uses none of what the node is hot on ({})", hot.join(", ")),
                );
                continue;
            }
            candidates.push(Candidate {
                pod: i,
                usage,
                relief,
            });
        }
        let pods = &self.snapshot.pods;
        candidates.sort_by(|a, b| {
            let (pa, pb) = (&pods[a.pod], &pods[b.pod]);
            pa.priority
                .cmp(&pb.priority)
                .then(pa.qos.cmp(&pb.qos))
                .then(b.relief.total_cmp(&a.relief))
                .then_with(|| pa.uid.cmp(&pb.uid))
        });
        candidates
    }

    /// The pods of workload `id`.
    fn members<'s>(&'s self, id: WorkloadId<'s>) -> impl Iterator<Item = &'a Pod> + 's {
        let snapshot = self.snapshot;
        self.workloads
            .get(&workload_hash(id.2))
            .into_iter()
            .flatten()
            .map(move |i| &snapshot.pods[*i])
            .filter(move |pod| workload_id(pod) == Some(id))
    }

    fn workload_view(&self, pod: &Pod) -> WorkloadView<'_> {
        let Some(id) = workload_id(pod) else {
            return WorkloadView::default();
        };
        WorkloadView::of(
            self.members(id),
            pod.workload().and_then(|key| self.next.workloads.get(&key)),
        )
    }

    /// The limits that change within the round: one per workload, per node, per namespace, per
    /// round, the token bucket and the PDBs.
    fn within_limits(&self, pod: &Pod, source: usize) -> Result<(), (SkipReason, String)> {
        let limits = &self.policy.limits;
        if workload_id(pod).is_some_and(|id| self.evicted_workloads.contains(&id)) {
            return Err((
                SkipReason::WorkloadLimit,
                "another pod of its workload is already evicted this round (one in flight)"
                    .to_owned(),
            ));
        }
        if self.per_node[source] >= limits.per_node {
            return Err((
                SkipReason::NodeLimit,
                format!(
                    "limits.per_node ({}) reached for this node",
                    limits.per_node
                ),
            ));
        }
        let in_namespace = self
            .per_namespace
            .get(pod.namespace.as_str())
            .copied()
            .unwrap_or(0);
        if in_namespace >= limits.per_namespace {
            return Err((
                SkipReason::NamespaceLimit,
                format!(
                    "limits.per_namespace ({}) reached for {}",
                    limits.per_namespace, pod.namespace
                ),
            ));
        }
        if self.evictions.len() >= limits.per_round as usize {
            return Err((
                SkipReason::RoundLimit,
                format!("limits.per_round ({}) reached", limits.per_round),
            ));
        }
        if self.next.tokens.tokens < 1.0 {
            return Err((
                SkipReason::RateLimit,
                format!(
                    "token bucket empty ({:.2} tokens; refills {} per minute)",
                    self.next.tokens.tokens, limits.token_bucket.refill_per_minute
                ),
            ));
        }
        if let Some(pdb) = self
            .covering_pdbs(pod)
            .find(|i| self.pdb_remaining[*i] == 0)
        {
            let pdb = &self.snapshot.pdbs[pdb];
            return Err((
                SkipReason::Pdb,
                format!(
                    "PodDisruptionBudget {}/{} allows no more disruptions ({} allowed, all used)",
                    pdb.namespace, pdb.name, pdb.disruptions_allowed
                ),
            ));
        }
        Ok(())
    }

    fn covering_pdbs<'s>(&'s self, pod: &'s Pod) -> impl Iterator<Item = usize> + 's {
        self.pdbs_by_namespace
            .get(pod.namespace.as_str())
            .into_iter()
            .flatten()
            .copied()
            .filter(move |i| covers(&self.snapshot.pdbs[*i], pod))
    }

    /// The source's level now: destinations must end below it.
    fn source_level(&self, source: usize) -> f64 {
        self.nodes[source]
            .model
            .as_ref()
            .map_or(0.0, |m| self.thresholds.node_level(&m.loads))
    }

    /// The destinations that fit and end below `source_level` (infinite for an evacuation),
    /// best first, at most `destinations_reported`.
    fn rank_destinations(
        &self,
        pod: &Pod,
        usage: &Usage,
        source_level: f64,
    ) -> Result<Vec<Ranked>, Rejections> {
        let keep = self.policy.selection.destinations_reported;
        let mut rejections = Rejections::default();
        let mut best: Vec<Ranked> = Vec::with_capacity(keep + 1);
        for &(key, d) in &self.destinations {
            // Placing load never lowers a score, so a node whose score is already above the
            // last one kept cannot rank among them (unless soft taints reorder the kept ones).
            let full = best.len() == keep && best.iter().all(|b| b.soft_taints == 0);
            if full && best.last().is_some_and(|b| order_key(b.score) < key) {
                break;
            }
            let entry = &self.nodes[d];
            let Some(model) = &entry.model else {
                continue;
            };
            rejections.looked_at += 1;
            if let Err(mismatch) = placeable(pod, entry.node) {
                rejections.count(match mismatch {
                    Mismatch::NodeSelector => "do not match its nodeSelector",
                    Mismatch::Affinity => "do not match its required node affinity",
                    Mismatch::Taint => "have taints it does not tolerate",
                });
                continue;
            }
            if let Err(short) = entry.fits(pod) {
                rejections.count(short);
                continue;
            }
            let after = model.after(usage, true, &self.floor);
            let levels = self.thresholds.levels(&after);
            let level = levels.iter().flatten().fold(0.0, |a: f64, b| a.max(*b));
            if level > 1.0 {
                rejections.count("would go above their high thresholds");
                continue;
            }
            if level >= source_level {
                rejections.count("would end at least as loaded as the source");
                continue;
            }
            let Some(score) = self.weighted(&levels) else {
                rejections.count("have no measured load");
                continue;
            };
            let ranked = Ranked {
                soft_taints: soft_taints(pod, entry.node),
                score,
                node: d,
                after,
            };
            let position = best.partition_point(|b| self.ranks_before(b, &ranked));
            if position < keep {
                best.insert(position, ranked);
                best.truncate(keep);
            }
        }
        if best.is_empty() {
            Err(rejections)
        } else {
            Ok(best)
        }
    }

    /// Untolerated soft taints last, then lower score, then name.
    fn ranks_before(&self, a: &Ranked, b: &Ranked) -> bool {
        a.soft_taints
            .cmp(&b.soft_taints)
            .then(a.score.total_cmp(&b.score))
            .then_with(|| {
                self.nodes[a.node]
                    .node
                    .name
                    .cmp(&self.nodes[b.node].node.name)
            })
            .is_lt()
    }

    /// "Least loaded after placement": the weighted mean of each resource's level (its worse
    /// figure relative to the high threshold) over the measured resources.
    fn score(&self, loads: &Loads) -> Option<f64> {
        self.weighted(&self.thresholds.levels(loads))
    }

    /// The score of per-resource levels (see [`Thresholds::levels`]).
    fn weighted(&self, levels: &[Option<f64>; 3]) -> Option<f64> {
        let weights = &self.policy.selection.weights;
        let (sum, total) = Resource::ALL
            .iter()
            .zip(levels)
            .filter_map(|(r, level)| Some((weights.of(*r), (*level)?)))
            .filter(|(w, _)| *w > 0.0)
            .fold((0.0, 0.0), |(s, t), (w, level)| (s + w * level, t + w));
        (total > 0.0).then(|| sum / total)
    }

    fn evict(
        &mut self,
        candidate: &Candidate,
        source: usize,
        resources: &[Resource],
        ranked: Vec<Ranked>,
    ) {
        let snapshot = self.snapshot;
        let pod = &snapshot.pods[candidate.pod];
        let (Some(workload), Some(best)) = (pod.workload(), ranked.first()) else {
            // Unreachable: candidates have an owner, rankings a first.
            return;
        };
        // A node being evacuated may have no load measured: its figures are then left out.
        let source_model = self.nodes[source].model.as_ref();
        let source_before = source_model
            .map(|m| m.loads.to_figures())
            .unwrap_or_default();
        let after = source_model.map(|m| m.after(&candidate.usage, false, &[0.0; 3]));
        let source_after = after.as_ref().map(Loads::to_figures).unwrap_or_default();
        let destinations: Vec<Destination> = ranked
            .iter()
            .map(|r| Destination {
                node: self.nodes[r.node].node.name.clone(),
                score: r.score,
                before: self.nodes[r.node]
                    .model
                    .as_ref()
                    .map(|m| m.loads.to_figures())
                    .unwrap_or_default(),
                after: r.after.to_figures(),
            })
            .collect();
        if let (Some(model), Some(after)) = (self.nodes[source].model.as_mut(), after) {
            model.loads = after;
        }
        let destination = &mut self.nodes[best.node];
        destination.add_requests(pod);
        if let Some(model) = destination.model.as_mut() {
            model.loads = best.after.clone();
        }
        self.reorder_destination(best.node, &best.after);
        let source_name = self.nodes[source].node.name.clone();
        self.per_node[source] += 1;
        *self
            .per_namespace
            .entry(pod.namespace.as_str())
            .or_default() += 1;
        if let Some(id) = workload_id(pod) {
            self.evicted_workloads.insert(id);
        }
        let covering: Vec<usize> = self.covering_pdbs(pod).collect();
        for i in covering {
            self.pdb_remaining[i] = self.pdb_remaining[i].saturating_sub(1);
        }
        self.next.tokens.tokens -= 1.0;
        let memory = self.next.workloads.entry(workload.clone()).or_default();
        *memory = record_eviction(
            memory,
            &self.policy.limits.cooldown,
            self.now,
            InFlight {
                pod_uid: pod.uid.clone(),
                pod_name: pod.name.clone(),
                source: source_name.clone(),
                evicted_at: self.now,
            },
        );
        let reason = match self.directives.evacuate.get(&source_name) {
            Some(alerts) if resources.is_empty() => {
                evacuation_reason(pod, &source_name, &alerts_text(alerts), &destinations[0])
            }
            _ => eviction_reason(
                &self.thresholds,
                pod,
                &source_name,
                resources,
                (&source_before, &source_after),
                &destinations[0],
                snapshot,
            ),
        };
        self.pods_considered += 1;
        self.evictions.push(Eviction {
            pod: PodRef::from(pod),
            workload,
            source: source_name,
            destinations,
            source_before,
            source_after,
            reason,
        });
    }

    fn finish(mut self) -> (Plan, RebalanceState) {
        let cooldown = &self.policy.limits.cooldown;
        let now = self.now;
        self.next
            .workloads
            .retain(|_, memory| worth_keeping(memory, cooldown, now));
        self.reports
            .sort_by(|a, b| a.status.cmp(&b.status).then_with(|| a.node.cmp(&b.node)));
        let summary = Summary {
            nodes: self.nodes.len(),
            nodes_with_fresh_load: self.nodes.iter().filter(|n| n.model.is_some()).count(),
            sources: self.nodes.iter().filter(|n| !n.source.is_empty()).count(),
            pods_considered: self.pods_considered,
            evictions: self.evictions.len(),
            tokens_left: self.next.tokens.tokens,
        };
        let plan = Plan {
            at: self.now,
            dry_run: self.policy.dry_run,
            evictions: self.evictions,
            skipped_pods: self.skipped,
            nodes: self.reports,
            expired_in_flight: self.expired_in_flight,
            summary,
        };
        (plan, self.next)
    }
}

#[cfg(test)]
mod directed_tests;
#[cfg(test)]
mod tests;
