//! Who a cgroup belongs to, read from its path alone.
//!
//! The kernel programs report cgroup ids, the hierarchy walk turns ids into paths, and the
//! kubelet, the container runtimes and systemd encode pod UIDs, QoS classes and container ids in
//! those paths. So CPU time can be attributed without asking any API; names (namespace, pod,
//! container) are attached later from the Kubernetes API, for people.
//!
//! Recognised layouts, anywhere in the path (kind, k3s, minikube and CI runners put a prefix
//! such as `/kubelet.slice/`, `/system.slice/containerd.service/`, `/docker/<id>/` or
//! `/actions_job/<id>/` in front):
//! - kubelet systemd driver: `kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid, '-' written as '_'>.slice/<runtime>-<id>.scope`, guaranteed pods
//!   directly under `kubepods.slice` as `kubepods-pod<uid>.slice`, and runc's `slice:prefix:id`
//!   form (`kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`) that some setups leave as a
//!   directory name;
//! - kubelet cgroupfs driver: `kubepods/burstable/pod<uid>/<id>`, `kubepods/besteffort/...`,
//!   `kubepods/pod<uid>/<id>` for guaranteed pods; the id may carry a runtime prefix;
//! - runtime prefixes `cri-containerd-`, `crio-`, `docker-`, and `crio-conmon-` (CRI-O's monitor
//!   process, which runs in the pod but is not the container);
//! - Docker outside Kubernetes: `docker-<id>.scope` (systemd driver), `/docker/<id>` and
//!   `/actions_job/<id>` (cgroupfs driver; GitHub Actions sets that cgroup parent);
//! - systemd units: the last component if it is a `.service`, `.slice` or `.scope` name.
//!
//! Container ids must be 64 lowercase hex digits and pod UIDs UUIDs (or the 32-hex-digit hash
//! the kubelet uses as the UID of static pods). Anything not recognised is `Workload::Other`
//! with the path kept: nothing here guesses.

use serde::Serialize;

/// Kubernetes QoS class of a pod, from where the kubelet placed its cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Container runtime that named a container's cgroup (known only from a runtime prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
}

/// What runs in a cgroup; exactly one per cgroup.
///
/// A cgroup below a container's own cgroup (a container that makes sub-cgroups, such as
/// Docker-in-Docker or systemd in a container) belongs to that container: its tasks are the
/// container's. The path tells such cgroups apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// A pod's own cgroup; its containers are its children.
    KubernetesPod { pod_uid: String, qos: QosClass },
    /// A container of a pod, the sandbox (pause) container included: its path looks the same.
    KubernetesContainer {
        pod_uid: String,
        qos: QosClass,
        container_id: String,
        runtime: Option<Runtime>,
    },
    /// CRI-O's `conmon` monitoring the container `container_id`: pod overhead, not the container.
    KubernetesConmon {
        pod_uid: String,
        qos: QosClass,
        container_id: String,
    },
    /// The kubelet's pod tree: `kubepods` itself (`qos: None`) or its burstable/besteffort tier.
    KubernetesQosTier { qos: Option<QosClass> },
    /// A Docker container outside Kubernetes (a kind node, a CI job container).
    DockerContainer { container_id: String },
    /// A systemd service, e.g. `nginx.service` or `user@1000.service`.
    SystemdService { unit: String },
    /// A systemd slice, e.g. `system.slice` or `user-1000.slice`.
    SystemdSlice { unit: String },
    /// A systemd scope, e.g. `session-3.scope` or `init.scope`.
    SystemdScope { unit: String },
    /// Anything else: the root, unknown layouts, malformed paths. The path says what it is.
    Other,
}

/// Names from the Kubernetes API, attached once known.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct KubeNames {
    pub namespace: String,
    pub pod: String,
    /// `None` for a pod-level cgroup or a container the API does not list (the sandbox).
    pub container: Option<String>,
}

/// A cgroup's path, what runs in it, and (once known) its Kubernetes names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Identity {
    /// Path relative to the cgroup v2 mount ("/" is the root).
    pub path: String,
    pub workload: Workload,
    pub names: Option<KubeNames>,
}

impl Identity {
    /// Attaches names looked up in the Kubernetes API for this pod or container.
    pub fn attach_names(&mut self, names: KubeNames) {
        self.names = Some(names);
    }

    /// The pod UID of a Kubernetes pod, container or conmon cgroup.
    pub fn pod_uid(&self) -> Option<&str> {
        match &self.workload {
            Workload::KubernetesPod { pod_uid, .. }
            | Workload::KubernetesContainer { pod_uid, .. }
            | Workload::KubernetesConmon { pod_uid, .. } => Some(pod_uid),
            _ => None,
        }
    }

    /// The full container id of a container (or of the container a conmon monitors).
    pub fn container_id(&self) -> Option<&str> {
        match &self.workload {
            Workload::KubernetesContainer { container_id, .. }
            | Workload::KubernetesConmon { container_id, .. }
            | Workload::DockerContainer { container_id } => Some(container_id),
            _ => None,
        }
    }

    /// The first 12 hex digits of the container id, as `docker ps` and `crictl ps` show it.
    pub fn container_id_short(&self) -> Option<&str> {
        self.container_id().and_then(|id| id.get(..12))
    }

    /// A short label for people: names when known, else ids, unit name, or the path.
    pub fn short_label(&self) -> String {
        let label = match (&self.names, &self.workload) {
            (Some(names), _) => match &names.container {
                Some(container) => format!("{}/{}/{container}", names.namespace, names.pod),
                None => format!("{}/{}", names.namespace, names.pod),
            },
            (None, Workload::KubernetesPod { pod_uid, .. }) => {
                format!("pod {}", short_uid(pod_uid))
            }
            (None, Workload::KubernetesContainer { pod_uid, .. }) => {
                format!(
                    "pod {}/ctr {}",
                    short_uid(pod_uid),
                    self.container_id_short().unwrap_or("?")
                )
            }
            (None, Workload::KubernetesConmon { pod_uid, .. }) => {
                format!(
                    "pod {}/conmon {}",
                    short_uid(pod_uid),
                    self.container_id_short().unwrap_or("?")
                )
            }
            (None, Workload::KubernetesQosTier { qos }) => match qos {
                None => "kubepods".to_string(),
                Some(QosClass::Guaranteed) => "kubepods/guaranteed".to_string(),
                Some(QosClass::Burstable) => "kubepods/burstable".to_string(),
                Some(QosClass::BestEffort) => "kubepods/besteffort".to_string(),
            },
            (None, Workload::DockerContainer { .. }) => {
                format!("docker {}", self.container_id_short().unwrap_or("?"))
            }
            (
                None,
                Workload::SystemdService { unit }
                | Workload::SystemdSlice { unit }
                | Workload::SystemdScope { unit },
            ) => return unit.clone(),
            (None, Workload::Other) => return self.path.clone(),
        };
        // Sub-cgroups of a container share its label; the part of the path below the
        // container keeps them apart.
        match nested_suffix(&self.path) {
            Some(suffix) => format!("{label}{suffix}"),
            None => label,
        }
    }
}

/// Identifies the cgroup at `path` (relative to the cgroup v2 mount, starting with '/').
pub fn identify(path: &str) -> Identity {
    Identity {
        path: path.to_string(),
        workload: classify(path).0,
        names: None,
    }
}

/// The workload, and how many leading path components name it (the rest are sub-cgroups).
fn classify(path: &str) -> (Workload, usize) {
    let Some(parts) = components(path) else {
        return (Workload::Other, 0);
    };
    kubernetes(&parts)
        .or_else(|| docker(&parts))
        .or_else(|| systemd(&parts))
        .unwrap_or((Workload::Other, parts.len()))
}

/// "/a/b" below the component that names a container, if the path goes deeper than that.
fn nested_suffix(path: &str) -> Option<String> {
    let parts = components(path)?;
    let (_, owned) = classify(path);
    let below = parts.get(owned..).filter(|rest| !rest.is_empty())?;
    Some(format!("/{}", below.join("/")))
}

/// The components of an absolute, canonical path; `None` for anything the hierarchy walk or
/// `/proc/<pid>/cgroup` would never produce (relative paths, empty, `.` or `..` components).
fn components(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(parts)
}

fn short_uid(uid: &str) -> String {
    match uid.get(..8) {
        Some(head) if head.len() < uid.len() => format!("{head}…"),
        _ => uid.to_string(),
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Container ids of containerd, CRI-O and Docker: 64 lowercase hex digits.
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && is_lower_hex(id)
}

/// A pod UID: a lowercase UUID, or the 32-hex-digit config hash of a static pod.
fn is_pod_uid(uid: &str) -> bool {
    if uid.len() == 32 {
        return is_lower_hex(uid);
    }
    uid.len() == 36
        && uid.split('-').map(str::len).eq([8, 4, 4, 4, 12])
        && uid.split('-').all(is_lower_hex)
}

/// A pod: its UID (with dashes) and QoS class.
struct Pod {
    uid: String,
    qos: QosClass,
}

/// What a component directly below a pod names.
enum PodChild {
    Container {
        id: String,
        runtime: Option<Runtime>,
    },
    Conmon {
        id: String,
    },
}

/// The runtime prefixes of container cgroup names (`<prefix>-<id>[.scope]`).
const RUNTIME_PREFIXES: [(&str, Runtime); 3] = [
    ("cri-containerd", Runtime::Containerd),
    ("crio", Runtime::CriO),
    ("docker", Runtime::Docker),
];
/// CRI-O's monitor; checked before `crio-`, which it starts with.
const CONMON_PREFIX: &str = "crio-conmon-";

/// `<runtime>-<id>.scope` (systemd driver), `<runtime>-<id>` or a bare `<id>` (cgroupfs driver).
fn pod_child(component: &str) -> Option<PodChild> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if let Some(id) = name.strip_prefix(CONMON_PREFIX) {
        return is_container_id(id).then(|| PodChild::Conmon { id: id.to_string() });
    }
    if name.len() == component.len() && is_container_id(name) {
        return Some(PodChild::Container {
            id: name.to_string(),
            runtime: None,
        });
    }
    RUNTIME_PREFIXES.iter().find_map(|(prefix, runtime)| {
        let id = name.strip_prefix(prefix)?.strip_prefix('-')?;
        is_container_id(id).then(|| PodChild::Container {
            id: id.to_string(),
            runtime: Some(*runtime),
        })
    })
}

/// The QoS tier a systemd slice stem or a kubelet cgroup name ends with: `Some(None)` for
/// `kubepods` itself. Systemd slice names repeat their ancestry ("kubelet-kubepods-burstable"),
/// so whatever precedes `kubepods` must end with '-'.
fn tier_of(stem: &str) -> Option<Option<QosClass>> {
    let tiers = [
        ("kubepods-burstable", Some(QosClass::Burstable)),
        ("kubepods-besteffort", Some(QosClass::BestEffort)),
        ("kubepods", None),
    ];
    tiers.into_iter().find_map(|(tier, qos)| {
        let before = stem.strip_suffix(tier)?;
        (before.is_empty() || before.ends_with('-')).then_some(qos)
    })
}

/// A systemd-driver pod slice: `[<prefix>-]kubepods[-burstable|-besteffort]-pod<uid>.slice`,
/// where the UID's dashes are written as underscores (a dash separates slice levels).
fn systemd_pod(component: &str) -> Option<Pod> {
    let stem = component.strip_suffix(".slice")?;
    let (tier, escaped_uid) = stem.rsplit_once("-pod")?;
    if escaped_uid.contains('-') {
        return None;
    }
    let uid = escaped_uid.replace('_', "-");
    if !is_pod_uid(&uid) {
        return None;
    }
    let qos = tier_of(tier)?.unwrap_or(QosClass::Guaranteed);
    Some(Pod { uid, qos })
}

/// A cgroupfs-driver pod directory `pod<uid>` at `parts[index]`, under `kubepods` (guaranteed)
/// or `kubepods/burstable|besteffort`.
fn cgroupfs_pod(parts: &[&str], index: usize) -> Option<Pod> {
    let uid = parts.get(index)?.strip_prefix("pod")?;
    if !is_pod_uid(uid) {
        return None;
    }
    let parent = |up: usize| index.checked_sub(up).and_then(|i| parts.get(i)).copied();
    let qos = match (parent(2), parent(1)?) {
        (_, "kubepods") => QosClass::Guaranteed,
        (Some("kubepods"), "burstable") => QosClass::Burstable,
        (Some("kubepods"), "besteffort") => QosClass::BestEffort,
        _ => return None,
    };
    Some(Pod {
        uid: uid.to_string(),
        qos,
    })
}

/// runc's systemd `slice:prefix:id` form used as a directory name:
/// `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`.
fn colon_container(component: &str) -> Option<Workload> {
    let mut fields = component.splitn(3, ':');
    let pod = systemd_pod(fields.next()?)?;
    let prefix = fields.next()?;
    let id = fields.next()?;
    let runtime = RUNTIME_PREFIXES
        .iter()
        .find(|(p, _)| *p == prefix)
        .map(|(_, runtime)| *runtime)?;
    is_container_id(id).then(|| Workload::KubernetesContainer {
        pod_uid: pod.uid,
        qos: pod.qos,
        container_id: id.to_string(),
        runtime: Some(runtime),
    })
}

/// The outermost pod in the path and what below it the path names, else a QoS tier cgroup.
fn kubernetes(parts: &[&str]) -> Option<(Workload, usize)> {
    for (index, part) in parts.iter().enumerate() {
        if let Some(container) = colon_container(part) {
            return Some((container, index + 1));
        }
        let Some(pod) = systemd_pod(part).or_else(|| cgroupfs_pod(parts, index)) else {
            continue;
        };
        let Some(child) = parts.get(index + 1) else {
            return Some((
                Workload::KubernetesPod {
                    pod_uid: pod.uid,
                    qos: pod.qos,
                },
                index + 1,
            ));
        };
        let workload = match pod_child(child) {
            Some(PodChild::Container { id, runtime }) => Workload::KubernetesContainer {
                pod_uid: pod.uid,
                qos: pod.qos,
                container_id: id,
                runtime,
            },
            Some(PodChild::Conmon { id }) => Workload::KubernetesConmon {
                pod_uid: pod.uid,
                qos: pod.qos,
                container_id: id,
            },
            // Not a container: an unknown layout, not something to attribute to the pod.
            None => return Some((Workload::Other, parts.len())),
        };
        return Some((workload, index + 2));
    }
    qos_tier(parts).map(|qos| (Workload::KubernetesQosTier { qos }, parts.len()))
}

/// A path ending in the kubelet's pod tree: `kubepods[.slice]` or its burstable/besteffort tier.
fn qos_tier(parts: &[&str]) -> Option<Option<QosClass>> {
    let (last, before) = parts.split_last()?;
    if let Some(stem) = last.strip_suffix(".slice") {
        return tier_of(stem);
    }
    match (before.last().copied(), *last) {
        (_, "kubepods") => Some(None),
        (Some("kubepods"), "burstable") => Some(Some(QosClass::Burstable)),
        (Some("kubepods"), "besteffort") => Some(Some(QosClass::BestEffort)),
        _ => None,
    }
}

/// The outermost Docker container in the path: `docker-<id>.scope`, or `<id>` under `docker`
/// or `actions_job`.
fn docker(parts: &[&str]) -> Option<(Workload, usize)> {
    parts.iter().enumerate().find_map(|(index, part)| {
        let id = match part
            .strip_prefix("docker-")
            .and_then(|rest| rest.strip_suffix(".scope"))
        {
            Some(id) => id,
            None => {
                let parent = index.checked_sub(1).and_then(|i| parts.get(i))?;
                if !matches!(*parent, "docker" | "actions_job") {
                    return None;
                }
                part
            }
        };
        is_container_id(id).then(|| {
            (
                Workload::DockerContainer {
                    container_id: id.to_string(),
                },
                index + 1,
            )
        })
    })
}

/// The last component, if it is a systemd unit name. Runtime scopes and kubelet slices that
/// did not match above (a malformed id or UID, a container outside any pod) are not treated as
/// plain units.
fn systemd(parts: &[&str]) -> Option<(Workload, usize)> {
    let unit = *parts.last()?;
    let (stem, kind) = unit.rsplit_once('.')?;
    let valid = !stem.is_empty()
        && unit.len() <= 255
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b));
    let runtime_scope = kind == "scope"
        && RUNTIME_PREFIXES.iter().any(|(prefix, _)| {
            stem.strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('-'))
        });
    // Valid kubelet slices matched above; one that did not is malformed, not a plain slice.
    let kubelet_slice = kind == "slice" && stem.split('-').any(|word| word == "kubepods");
    if !valid || runtime_scope || kubelet_slice {
        return None;
    }
    let unit = unit.to_string();
    let workload = match kind {
        "service" => Workload::SystemdService { unit },
        "slice" => Workload::SystemdSlice { unit },
        "scope" => Workload::SystemdScope { unit },
        _ => return None,
    };
    Some((workload, parts.len()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: &str = "3f1e2d4c5b6a79880123456789abcdef0fedcba9876543210a1b2c3d4e5f6071";
    const ID2: &str = "d7dfb4a21fe1703a8537e60d5af248af729315d187b24a538102d14874c8117d";
    const UID: &str = "1e597579-417e-482f-bf65-5fe170c3aebd";
    const UID_: &str = "1e597579_417e_482f_bf65_5fe170c3aebd";
    /// A static pod's UID (the kubelet's hash of its manifest).
    const STATIC_UID: &str = "187bff14cccb94f179e943eacce55bb3";

    fn ctr(qos: QosClass, runtime: Option<Runtime>) -> Workload {
        Workload::KubernetesContainer {
            pod_uid: UID.into(),
            qos,
            container_id: ID.into(),
            runtime,
        }
    }

    fn pod(qos: QosClass) -> Workload {
        Workload::KubernetesPod {
            pod_uid: UID.into(),
            qos,
        }
    }

    fn conmon(qos: QosClass) -> Workload {
        Workload::KubernetesConmon {
            pod_uid: UID.into(),
            qos,
            container_id: ID.into(),
        }
    }

    fn docker_ctr(id: &str) -> Workload {
        Workload::DockerContainer {
            container_id: id.into(),
        }
    }

    #[test]
    fn real_world_paths() {
        use QosClass::{BestEffort, Burstable, Guaranteed};
        use Runtime::{Containerd, CriO, Docker};
        let sd_burstable =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        let sd_besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
        );
        let sd_guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
        let unit = |name: &str| name.to_string();
        let cases: Vec<(String, Workload)> = vec![
            // systemd driver: three QoS classes x three runtimes, and the pod level.
            (format!("{sd_burstable}/cri-containerd-{ID}.scope"), ctr(Burstable, Some(Containerd))),
            (format!("{sd_besteffort}/cri-containerd-{ID}.scope"), ctr(BestEffort, Some(Containerd))),
            (format!("{sd_guaranteed}/cri-containerd-{ID}.scope"), ctr(Guaranteed, Some(Containerd))),
            (format!("{sd_burstable}/crio-{ID}.scope"), ctr(Burstable, Some(CriO))),
            (format!("{sd_besteffort}/crio-{ID}.scope"), ctr(BestEffort, Some(CriO))),
            (format!("{sd_guaranteed}/crio-{ID}.scope"), ctr(Guaranteed, Some(CriO))),
            (format!("{sd_burstable}/docker-{ID}.scope"), ctr(Burstable, Some(Docker))),
            (format!("{sd_besteffort}/docker-{ID}.scope"), ctr(BestEffort, Some(Docker))),
            (format!("{sd_guaranteed}/docker-{ID}.scope"), ctr(Guaranteed, Some(Docker))),
            (sd_burstable.clone(), pod(Burstable)),
            (sd_besteffort.clone(), pod(BestEffort)),
            (sd_guaranteed.clone(), pod(Guaranteed)),
            (format!("{sd_burstable}/crio-conmon-{ID}.scope"), conmon(Burstable)),
            (
                format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{ID}.scope"),
                Workload::KubernetesContainer {
                    pod_uid: STATIC_UID.into(),
                    qos: Burstable,
                    container_id: ID.into(),
                    runtime: Some(Containerd),
                },
            ),
            // cgroupfs driver: three QoS classes; containerd and Docker use the bare id.
            (format!("/kubepods/burstable/pod{UID}/{ID}"), ctr(Burstable, None)),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), ctr(BestEffort, None)),
            (format!("/kubepods/pod{UID}/{ID}"), ctr(Guaranteed, None)),
            (format!("/kubepods/burstable/pod{UID}/crio-{ID}"), ctr(Burstable, Some(CriO))),
            (format!("/kubepods/besteffort/pod{UID}/crio-conmon-{ID}"), conmon(BestEffort)),
            (format!("/kubepods/pod{UID}/crio-{ID}"), ctr(Guaranteed, Some(CriO))),
            (format!("/kubepods/burstable/pod{UID}"), pod(Burstable)),
            (format!("/kubepods/besteffort/pod{UID}"), pod(BestEffort)),
            (format!("/kubepods/pod{UID}"), pod(Guaranteed)),
            // The kubelet's pod tree itself.
            ("/kubepods.slice".into(), Workload::KubernetesQosTier { qos: None }),
            ("/kubepods.slice/kubepods-burstable.slice".into(), Workload::KubernetesQosTier { qos: Some(Burstable) }),
            ("/kubepods/besteffort".into(), Workload::KubernetesQosTier { qos: Some(BestEffort) }),
            ("/kubepods".into(), Workload::KubernetesQosTier { qos: None }),
            // Nested setups: kind (kubelet cgroup root /kubelet), minikube, k3s, CI runners, and
            // a kind node seen from its Docker host.
            (
                format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                ctr(BestEffort, Some(Containerd)),
            ),
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice"), pod(Guaranteed)),
            (
                "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice".into(),
                Workload::KubernetesQosTier { qos: Some(Burstable) },
            ),
            (
                format!("/docker/{ID2}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"),
                ctr(BestEffort, Some(CriO)),
            ),
            (
                format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"),
                ctr(Burstable, Some(Containerd)),
            ),
            (format!("/actions_job/{ID2}/kubelet/kubepods/burstable/pod{UID}/{ID}"), ctr(Burstable, None)),
            (
                format!("/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"),
                ctr(Guaranteed, Some(Containerd)),
            ),
            // Sub-cgroups of a container (Docker-in-Docker moves itself to /init) are the container.
            (format!("{sd_burstable}/cri-containerd-{ID}.scope/init"), ctr(Burstable, Some(Containerd))),
            // Docker outside Kubernetes.
            (format!("/system.slice/docker-{ID2}.scope"), docker_ctr(ID2)),
            (format!("/docker/{ID2}"), docker_ctr(ID2)),
            (format!("/actions_job/{ID2}"), docker_ctr(ID2)),
            (format!("/system.slice/docker-{ID2}.scope/system.slice/containerd.service"), docker_ctr(ID2)),
            // systemd.
            ("/system.slice/nginx.service".into(), Workload::SystemdService { unit: unit("nginx.service") }),
            ("/system.slice/containerd.service".into(), Workload::SystemdService { unit: unit("containerd.service") }),
            (
                "/user.slice/user-1000.slice/user@1000.service".into(),
                Workload::SystemdService { unit: unit("user@1000.service") },
            ),
            (
                "/system.slice/system-systemd\\x2dfsck.slice".into(),
                Workload::SystemdSlice { unit: unit("system-systemd\\x2dfsck.slice") },
            ),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                Workload::SystemdScope { unit: unit("session-3.scope") },
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-org.gnome.Terminal.slice/vte-spawn-5f2c.scope".into(),
                Workload::SystemdScope { unit: unit("vte-spawn-5f2c.scope") },
            ),
            ("/init.scope".into(), Workload::SystemdScope { unit: unit("init.scope") }),
            ("/user.slice".into(), Workload::SystemdSlice { unit: unit("user.slice") }),
            ("/system.slice/system-getty.slice".into(), Workload::SystemdSlice { unit: unit("system-getty.slice") }),
            // The root and junk.
            ("/".into(), Workload::Other),
            ("".into(), Workload::Other),
            ("..".into(), Workload::Other),
            (format!("/../kubepods/pod{UID}/{ID}"), Workload::Other),
            (format!("kubepods/pod{UID}/{ID}"), Workload::Other),
            (format!("/kubepods/burstable/pod{UID}/{ID}/"), Workload::Other),
            (format!("/kubepods//pod{UID}"), Workload::Other),
            ("/kubepods/burstable/podnot-a-uid/abc".into(), Workload::Other),
            (format!("/kubepods/burstable/pod{UID_}/{ID}"), Workload::Other),
            (format!("/kubepods/burstable/pod{UID}/{}", &ID[..20]), Workload::Other),
            (format!("/kubepods/burstable/pod{UID}/not-a-container"), Workload::Other),
            (format!("/kubepods/guaranteed/pod{UID}/{ID}"), Workload::Other),
            (format!("/elsewhere/pod{UID}/{ID}"), Workload::Other),
            (format!("{sd_burstable}/cri-containerd-{}x.scope", &ID[..63]), Workload::Other),
            (format!("{sd_burstable}/cri-containerd-{}.scope", ID.to_uppercase()), Workload::Other),
            ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice".into(), Workload::Other),
            (format!("/kubepods.slice/kubepods-pod{UID_}.sli"), Workload::Other),
            // Not the kubelet's: a slice that merely looks alike.
            (
                format!("/kubepods.slice/notkubepods-pod{UID_}.slice"),
                Workload::SystemdSlice { unit: format!("notkubepods-pod{UID_}.slice") },
            ),
            (format!("/system.slice/docker-{}.scope", ID.to_uppercase()), Workload::Other),
            (format!("/system.slice/cri-containerd-{ID}.scope"), Workload::Other),
            (format!("/system.slice/{ID}"), Workload::Other),
            ("/system.slice/.service".into(), Workload::Other),
            ("/system.slice/nginx service".into(), Workload::Other),
            (
                "/system.slice/docker-compose@shop.service".into(),
                Workload::SystemdService { unit: unit("docker-compose@shop.service") },
            ),
            ("/lxc.payload.web".into(), Workload::Other),
        ];
        for (path, want) in cases {
            let identity = identify(&path);
            assert_eq!(identity.workload, want, "path {path:?}");
            assert_eq!(identity.path, path);
            assert_eq!(identity.names, None);
        }
    }

    #[test]
    fn labels_for_people() {
        let mut c = identify(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(c.pod_uid(), Some(UID));
        assert_eq!(c.container_id(), Some(ID));
        assert_eq!(c.container_id_short(), Some("3f1e2d4c5b6a"));
        assert_eq!(c.short_label(), "pod 1e597579…/ctr 3f1e2d4c5b6a");
        c.attach_names(KubeNames {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: Some("app".into()),
        });
        assert_eq!(c.short_label(), "shop/web-1/app");

        let nested = identify(&format!("/kubepods/burstable/pod{UID}/{ID}/init/x"));
        assert_eq!(
            nested.short_label(),
            "pod 1e597579…/ctr 3f1e2d4c5b6a/init/x"
        );
        let mut p = identify(&format!("/kubepods/pod{UID}"));
        assert_eq!(p.short_label(), "pod 1e597579…");
        assert_eq!(p.container_id_short(), None);
        p.attach_names(KubeNames {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: None,
        });
        assert_eq!(p.short_label(), "shop/web-1");
        let static_pod = identify(&format!("/kubepods/pod{STATIC_UID}"));
        assert_eq!(static_pod.short_label(), "pod 187bff14…");

        let monitor = identify(&format!("/kubepods/pod{UID}/crio-conmon-{ID}"));
        assert_eq!(monitor.short_label(), "pod 1e597579…/conmon 3f1e2d4c5b6a");
        assert_eq!(
            identify(&format!("/docker/{ID2}")).short_label(),
            "docker d7dfb4a21fe1"
        );
        assert_eq!(
            identify("/kubepods.slice/kubepods-besteffort.slice").short_label(),
            "kubepods/besteffort"
        );
        assert_eq!(
            identify("/system.slice/sshd.service").short_label(),
            "sshd.service"
        );
        assert_eq!(identify("/user.slice").short_label(), "user.slice");
        assert_eq!(identify("/").short_label(), "/");
        assert_eq!(
            identify("/lxc.payload.web/x").short_label(),
            "/lxc.payload.web/x"
        );
        assert_eq!(identify("/system.slice/sshd.service").container_id(), None);
    }

    #[test]
    fn serialises_with_lowercase_names() -> Result<(), serde_json::Error> {
        let identity = identify(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"));
        let json = serde_json::to_value(&identity)?;
        assert_eq!(json["workload"]["kind"], "kubernetes_container");
        assert_eq!(json["workload"]["qos"], "besteffort");
        assert_eq!(json["workload"]["runtime"], "crio");
        assert_eq!(json["workload"]["pod_uid"], UID);
        assert_eq!(json["names"], serde_json::Value::Null);
        Ok(())
    }

    /// Path-like strings made of the pieces real paths are made of, so the generated inputs
    /// reach every branch rather than only the "not a path" one.
    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("kubepods".to_string()),
            Just("kubepods.slice".to_string()),
            Just("burstable".to_string()),
            Just("besteffort".to_string()),
            Just("kubepods-burstable.slice".to_string()),
            Just(format!("kubepods-burstable-pod{UID_}.slice")),
            Just(format!("kubelet-kubepods-pod{UID_}.slice")),
            Just(format!("pod{UID}")),
            Just(ID.to_string()),
            Just(format!("cri-containerd-{ID}.scope")),
            Just(format!("crio-conmon-{ID}")),
            Just(format!("kubepods-pod{UID_}.slice:crio:{ID}")),
            Just("docker".to_string()),
            Just(format!("docker-{ID}.scope")),
            Just("nginx.service".to_string()),
            Just("..".to_string()),
            Just(String::new()),
            "[a-z0-9_.:@-]{0,70}",
            ".{0,8}",
        ];
        proptest::collection::vec(piece, 0..8).prop_map(|parts| format!("/{}", parts.join("/")))
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(path in ".*") {
            let identity = identify(&path);
            let _ = identity.short_label();
            prop_assert_eq!(identity.path, path);
        }

        #[test]
        fn never_panics_on_path_like_strings(path in path_like()) {
            let identity = identify(&path);
            let _ = identity.short_label();
            let _ = identity.container_id_short();
            prop_assert_eq!(identity.path, path);
        }
    }
}
