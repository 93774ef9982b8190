//! The migratability report (`ballast check`): for every workload of a snapshot, whether Ballast
//! can move it safely and, if not, every reason. Pure: a snapshot, a policy and the time in, a
//! report out; equal inputs give equal reports, whatever the order of the snapshot's lists.
//!
//! The planner's own rules decide: every eligibility rule ([`eligibility::refusals`]) and the PDB
//! limit are asked of every pod, and where a node could take it comes from the scheduler's
//! filters the planner uses ([`placeable`]). The report adds what the planner does not check but
//! makes a move riskier (no PDB, no readiness probe, ordered StatefulSets, Jobs, few nodes).
//!
//! Three severities: `excluded` (Ballast never moves it, by design or by the policy's choice:
//! DaemonSets, static pods, opted out, excluded namespaces, critical priority, StatefulSets
//! disallowed), `blocking` (Ballast would move it but cannot now) and `warning` (Ballast moves
//! it; read why it is riskier). A workload is as bad as its worst pod.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    eligibility::{self, WorkloadView},
    matching::{covers, placeable, Mismatch},
    plan::SkipReason,
    policy::Policy,
    snapshot::{
        ClusterSnapshot, Node, NodeSelectorTerm, Pdb, Pod, PodManagementPolicy, Timestamp,
        Toleration,
    },
};

/// The report on every workload of a snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The `now` the report was made for (pod ages are counted from it).
    pub at: Timestamp,
    /// By namespace, kind, name.
    pub workloads: Vec<WorkloadReport>,
    pub summary: Summary,
}

/// One workload: a controller's pods, or a pod of its own (bare or static, kind `Pod`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadReport {
    pub namespace: String,
    /// The controller's kind as the snapshot has it (`Deployment`, `StatefulSet`, `ReplicaSet`,
    /// `DaemonSet`, `Job`, ...), or `Pod` for a pod without a controller or a static pod.
    pub kind: String,
    pub name: String,
    /// Its pods in the snapshot, pending ones too.
    pub pods: u32,
    /// Of those, the Ready ones.
    pub ready: u32,
    pub movable: Movable,
    /// Excluded first, then blocking, then warnings; each reason once. An excluded workload
    /// lists only its exclusions: nothing else changes the answer.
    pub reasons: Vec<Finding>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Movable {
    /// Ballast moves it, nothing to say.
    Yes,
    /// Ballast moves it; some reasons make that riskier.
    WithWarnings,
    /// Ballast would move it but cannot now.
    No,
    /// Ballast never moves it (by design or by the policy's choice).
    Excluded,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Excluded,
    Blocking,
    Warning,
}

/// One reason, for some or all of a workload's pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub reason: Reason,
    pub severity: Severity,
    /// How many of the workload's pods it applies to.
    pub pods: u32,
    /// What it is about, for the first pod it applies to (by name).
    pub detail: String,
}

/// A reason, written as one snake_case string in JSON (`local_storage`, `no_pdb`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reason {
    /// A refusal of the planner's own, with the name `ballast plan` gives it.
    Planner(SkipReason),
    /// What only the report looks at.
    Check(CheckReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckReason {
    /// No Ready, schedulable node but its own passes its nodeSelector, required node affinity
    /// and taints: there is nowhere to move it (blocking).
    Pinned,
    /// Fewer nodes it may run on than its replicas + 1: a moved replica lands beside another.
    FewNodes,
    /// No PodDisruptionBudget covers it: nothing outside Ballast limits concurrent disruptions.
    NoPdb,
    /// Ready only means its containers started: Ballast's "replacement is Ready" is weak.
    NoReadinessProbe,
    /// The snapshot does not say whether it has a readiness probe.
    ReadinessProbeUnknown,
    /// A StatefulSet with `podManagementPolicy: OrderedReady` (or not said: Kubernetes' default).
    OrderedReadiness,
    /// A Job's pod starts its work over after an eviction.
    JobRestarts,
}

impl Reason {
    pub fn severity(self) -> Severity {
        match self {
            Reason::Planner(reason) => match reason {
                SkipReason::Mirror
                | SkipReason::DaemonSet
                | SkipReason::SystemCritical
                | SkipReason::OptedOut
                | SkipReason::Namespace
                | SkipReason::StatefulSetsDisallowed => Severity::Excluded,
                SkipReason::NoController
                | SkipReason::LocalStorage
                | SkipReason::ExtendedResources
                | SkipReason::NotReady
                | SkipReason::TooYoung
                | SkipReason::StatefulSetUnsettled
                | SkipReason::InFlight
                | SkipReason::MinReplicas
                | SkipReason::Cooldown
                | SkipReason::CameBack
                | SkipReason::Pdb => Severity::Blocking,
                // Reasons of a round (load, limits, destinations): the report never gives them.
                SkipReason::LoadUnknown
                | SkipReason::NoRelief
                | SkipReason::TargetReached
                | SkipReason::WorkloadLimit
                | SkipReason::NodeLimit
                | SkipReason::NamespaceLimit
                | SkipReason::RoundLimit
                | SkipReason::RateLimit
                | SkipReason::NoDestination
                | SkipReason::EvacuationQueued => Severity::Blocking,
            },
            Reason::Check(CheckReason::Pinned) => Severity::Blocking,
            Reason::Check(_) => Severity::Warning,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub workloads: usize,
    pub movable: MovableCounts,
    /// Workloads per reason, in the order of [`Finding`]s (severity, then reason).
    pub reasons: Vec<ReasonCount>,
}

/// Workloads per [`Movable`] answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovableCounts {
    pub yes: usize,
    pub with_warnings: usize,
    pub no: usize,
    pub excluded: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: Reason,
    pub severity: Severity,
    pub workloads: usize,
}

/// The report on every workload of `snapshot` under `policy` at `now`. Pure and deterministic;
/// the order of the snapshot's nodes, pods and PDBs does not change it.
pub fn report(snapshot: &ClusterSnapshot, policy: &Policy, now: Timestamp) -> Report {
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&Pod>> = BTreeMap::new();
    for pod in &snapshot.pods {
        groups.entry(identity(pod)).or_default().push(pod);
    }
    let mut nodes: Vec<&Node> = snapshot.nodes.iter().collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut pdbs: BTreeMap<&str, Vec<&Pdb>> = BTreeMap::new();
    for pdb in &snapshot.pdbs {
        pdbs.entry(&pdb.namespace).or_default().push(pdb);
    }
    for in_namespace in pdbs.values_mut() {
        in_namespace.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let context = Context {
        nodes: &nodes,
        pdbs,
        policy,
        now,
    };
    let workloads: Vec<WorkloadReport> = groups
        .into_iter()
        .map(|((namespace, kind, name), mut members)| {
            members.sort_by(|a, b| (&a.name, &a.uid).cmp(&(&b.name, &b.uid)));
            context.workload(namespace, kind, name, &members)
        })
        .collect();
    let summary = summarise(&workloads);
    Report {
        at: now,
        workloads,
        summary,
    }
}

/// `(namespace, kind, name)`: the controller, or the pod itself when it has none or is static
/// (the static pods of a node share their owner, the Node, but are unrelated).
fn identity(pod: &Pod) -> (&str, &str, &str) {
    match &pod.owner {
        Some(owner) if !pod.mirror && owner.kind != "Node" => {
            (&pod.namespace, &owner.kind, &owner.name)
        }
        _ => (&pod.namespace, "Pod", &pod.name),
    }
}

struct Context<'a> {
    /// By name.
    nodes: &'a [&'a Node],
    /// By namespace, then by name.
    pdbs: BTreeMap<&'a str, Vec<&'a Pdb>>,
    policy: &'a Policy,
    now: Timestamp,
}

/// The reasons found so far for one workload: how many pods each applies to, and the detail of
/// the first.
#[derive(Default)]
struct Tally(BTreeMap<Reason, (u32, String)>);

impl Tally {
    fn add(&mut self, reason: Reason, detail: impl FnOnce() -> String) {
        self.0
            .entry(reason)
            .and_modify(|(pods, _)| *pods = pods.saturating_add(1))
            .or_insert_with(|| (1, detail()));
    }
}

impl<'a> Context<'a> {
    fn workload(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        members: &[&'a Pod],
    ) -> WorkloadReport {
        let view = WorkloadView::of(members.iter().copied(), None);
        let mut tally = Tally::default();
        let mut placements = Placements::default();
        for pod in members {
            let refusals = eligibility::refusals(
                pod,
                &view,
                &self.policy.eligibility,
                &self.policy.limits.cooldown,
                self.now,
            );
            for refusal in refusals {
                tally.add(Reason::Planner(refusal.reason), || refusal.detail);
            }
            self.disruption_budgets(pod, &mut tally);
            readiness_probe(pod, &mut tally);
            controller(pod, &mut tally);
            let fit = placements.of(pod, self.nodes);
            fit.judge(pod, view.pods, &mut tally);
        }
        let mut reasons: Vec<Finding> = tally
            .0
            .into_iter()
            .map(|(reason, (pods, detail))| Finding {
                reason,
                severity: reason.severity(),
                pods,
                detail,
            })
            .collect();
        reasons.sort_by_key(|f| (f.severity, f.reason));
        let worst = reasons.first().map(|f| f.severity);
        if worst == Some(Severity::Excluded) {
            reasons.retain(|f| f.severity == Severity::Excluded);
        }
        let movable = match worst {
            None => Movable::Yes,
            Some(Severity::Warning) => Movable::WithWarnings,
            Some(Severity::Blocking) => Movable::No,
            Some(Severity::Excluded) => Movable::Excluded,
        };
        WorkloadReport {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            pods: view.pods,
            ready: view.ready,
            movable,
            reasons,
        }
    }

    /// No PDB covers the pod (a warning), or one that does allows no disruption now (the
    /// planner's `pdb` refusal, with nothing evicted yet).
    fn disruption_budgets(&self, pod: &Pod, tally: &mut Tally) {
        let mut covering = self
            .pdbs
            .get(pod.namespace.as_str())
            .into_iter()
            .flatten()
            .filter(|pdb| covers(pdb, pod))
            .peekable();
        if covering.peek().is_none() {
            tally.add(Reason::Check(CheckReason::NoPdb), || {
                "no PodDisruptionBudget covers it: Ballast moves one pod at a time, but nothing stops a drain or another controller from disrupting more at once".to_owned()
            });
            return;
        }
        if let Some(pdb) = covering.find(|pdb| pdb.disruptions_allowed == 0) {
            tally.add(Reason::Planner(SkipReason::Pdb), || {
                format!(
                    "PodDisruptionBudget {}/{} allows 0 disruptions now",
                    pdb.namespace, pdb.name
                )
            });
        }
    }
}

fn readiness_probe(pod: &Pod, tally: &mut Tally) {
    match pod.has_readiness_probe {
        Some(true) => {}
        Some(false) => tally.add(Reason::Check(CheckReason::NoReadinessProbe), || {
            "no readiness probe: Ready only means its containers started, so Ballast may move the next pod before the replacement serves".to_owned()
        }),
        None => tally.add(Reason::Check(CheckReason::ReadinessProbeUnknown), || {
            "the snapshot does not say whether it has a readiness probe (has_readiness_probe)"
                .to_owned()
        }),
    }
}

/// What the controller's kind adds: ordered StatefulSets and Jobs.
fn controller(pod: &Pod, tally: &mut Tally) {
    let Some(owner) = &pod.owner else {
        return;
    };
    match owner.kind.as_str() {
        "StatefulSet" => {
            let detail = match owner.pod_management_policy {
                Some(PodManagementPolicy::Parallel) => return,
                Some(PodManagementPolicy::OrderedReady) => "podManagementPolicy OrderedReady",
                None => "podManagementPolicy not in the snapshot (Kubernetes' default is OrderedReady)",
            };
            tally.add(Reason::Check(CheckReason::OrderedReadiness), || {
                format!("{detail}: the controller recreates a moved pod only once every lower ordinal is Ready and waits on it before the higher ones; Ballast moves one pod at a time, but a replacement that never becomes Ready stalls the whole StatefulSet")
            });
        }
        "Job" => tally.add(Reason::Check(CheckReason::JobRestarts), || {
            "a Job's pod starts its work over after an eviction (and it counts against backoffLimit unless the Job's podFailurePolicy ignores DisruptionTarget)".to_owned()
        }),
        _ => {}
    }
}

/// Where a pod may run: the Ready, schedulable nodes its nodeSelector, required node affinity
/// and tolerations let it onto (the planner's destination filters, load and free requests aside:
/// they change by the minute).
struct Fit<'a> {
    /// Their names, ascending.
    nodes: Vec<&'a str>,
    /// Ready, schedulable nodes it may not run on, by the filter that rules each out.
    ruled_out: BTreeMap<Mismatch, u32>,
    /// Ready, schedulable nodes.
    candidates: u32,
}

/// A pod's scheduling constraints.
type Constraints<'a> = (
    &'a BTreeMap<String, String>,
    &'a [NodeSelectorTerm],
    &'a [Toleration],
);

/// The [`Fit`] of each distinct set of constraints met in a workload (its pods almost always
/// share one), so that a large cluster is walked once per workload, not once per pod.
#[derive(Default)]
struct Placements<'a> {
    known: Vec<(Constraints<'a>, Fit<'a>)>,
}

impl<'a> Placements<'a> {
    fn of(&mut self, pod: &'a Pod, nodes: &[&'a Node]) -> &Fit<'a> {
        let constraints: Constraints<'a> =
            (&pod.node_selector, &pod.required_affinity, &pod.tolerations);
        let at = match self.known.iter().position(|(c, _)| *c == constraints) {
            Some(at) => at,
            None => {
                self.known.push((constraints, Fit::new(pod, nodes)));
                self.known.len() - 1
            }
        };
        &self.known[at].1
    }
}

impl<'a> Fit<'a> {
    /// `nodes` sorted by name.
    fn new(pod: &Pod, nodes: &[&'a Node]) -> Self {
        let mut fit = Fit {
            nodes: Vec::new(),
            ruled_out: BTreeMap::new(),
            candidates: 0,
        };
        for node in nodes.iter().filter(|n| n.ready && !n.unschedulable) {
            fit.candidates = fit.candidates.saturating_add(1);
            match placeable(pod, node) {
                Ok(()) => fit.nodes.push(&node.name),
                Err(mismatch) => *fit.ruled_out.entry(mismatch).or_default() += 1,
            }
        }
        fit
    }

    /// `pinned` when no node but its own may take the pod (whatever rules the others out);
    /// `few_nodes` when its nodeSelector or required affinity rule nodes out and leave fewer
    /// than the workload's replicas + 1 (taints alone are the cluster's layout, not the pod's).
    fn judge(&self, pod: &Pod, replicas: u32, tally: &mut Tally) {
        let fits = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        let on_own = pod
            .node
            .as_deref()
            .is_some_and(|own| self.nodes.binary_search(&own).is_ok());
        if fits == u32::from(on_own) {
            tally.add(Reason::Check(CheckReason::Pinned), || {
                format!(
                    "no Ready, schedulable node but its own may take it (of {}, ruled out: {})",
                    self.candidates,
                    self.ruled_out_by()
                )
            });
        } else if self.narrowed_by_its_own_rules() && fits < replicas.saturating_add(1) {
            tally.add(Reason::Check(CheckReason::FewNodes), || {
                format!(
                    "{fits} of {} Ready, schedulable nodes may take it (ruled out: {}) for {replicas} replicas: a moved replica lands beside another",
                    self.candidates,
                    self.ruled_out_by()
                )
            });
        }
    }

    /// Whether its own nodeSelector or required affinity rule a node out.
    fn narrowed_by_its_own_rules(&self) -> bool {
        self.ruled_out
            .keys()
            .any(|m| matches!(m, Mismatch::NodeSelector | Mismatch::Affinity))
    }

    /// `nodeSelector 2, untolerated taints 1`, or `none`.
    fn ruled_out_by(&self) -> String {
        let parts: Vec<String> = self
            .ruled_out
            .iter()
            .map(|(mismatch, n)| {
                let filter = match mismatch {
                    Mismatch::NodeSelector => "nodeSelector",
                    Mismatch::Affinity => "required node affinity",
                    Mismatch::Taint => "untolerated taints",
                };
                format!("{filter} {n}")
            })
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

fn summarise(workloads: &[WorkloadReport]) -> Summary {
    let mut movable = MovableCounts::default();
    let mut reasons: BTreeMap<(Severity, Reason), usize> = BTreeMap::new();
    for w in workloads {
        *match w.movable {
            Movable::Yes => &mut movable.yes,
            Movable::WithWarnings => &mut movable.with_warnings,
            Movable::No => &mut movable.no,
            Movable::Excluded => &mut movable.excluded,
        } += 1;
        for f in &w.reasons {
            *reasons.entry((f.severity, f.reason)).or_default() += 1;
        }
    }
    Summary {
        workloads: workloads.len(),
        movable,
        reasons: reasons
            .into_iter()
            .map(|((severity, reason), workloads)| ReasonCount {
                reason,
                severity,
                workloads,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
