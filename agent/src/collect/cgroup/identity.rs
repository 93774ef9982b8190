//! What runs in a cgroup, read from its path: Kubernetes pod and container (both kubelet cgroup
//! drivers; containerd, CRI-O and Docker runtimes), plain Docker containers, systemd services,
//! or anything else (kept by path). Names (namespace, pod, container) come later from the API
//! and are attached to the identity then.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Containerd,
    Crio,
    Docker,
}

/// Exactly one per cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// The pod-level cgroup (its containers are children).
    KubernetesPod { pod_uid: String, qos: QosClass },
    /// A container of a pod (including the sandbox/pause container).
    KubernetesContainer { pod_uid: String, qos: QosClass, container_id: String, runtime: Option<Runtime> },
    /// A Docker container outside Kubernetes.
    DockerContainer { container_id: String },
    /// A systemd service (`*.service`) outside Kubernetes.
    SystemdService { unit: String },
    /// Anything else: slices, sessions, the root, unknown layouts. The path says what it is.
    Other,
}

/// Names from the Kubernetes API, attached once known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KubeNames {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Path below the cgroup v2 mount ("/" is the root).
    pub path: String,
    pub workload: Workload,
    pub names: Option<KubeNames>,
}

impl Identity {
    pub fn with_names(mut self, names: KubeNames) -> Self {
        self.names = Some(names);
        self
    }

    /// First 12 hex digits of the container id, as `docker ps` and `crictl ps` show it.
    pub fn container_id_short(&self) -> Option<&str> {
        match &self.workload {
            Workload::KubernetesContainer { container_id, .. } | Workload::DockerContainer { container_id } => {
                container_id.get(..12)
            }
            _ => None,
        }
    }

    /// A short label for people: names when known, else pod/container ids, unit, or the path.
    pub fn short_label(&self) -> String {
        if let Some(names) = &self.names {
            return match &names.container {
                Some(container) => format!("{}/{}/{container}", names.namespace, names.pod),
                None => format!("{}/{}", names.namespace, names.pod),
            };
        }
        match &self.workload {
            Workload::KubernetesPod { pod_uid, .. } => format!("pod {}", short_uid(pod_uid)),
            Workload::KubernetesContainer { pod_uid, .. } => {
                format!("pod {} ctr {}", short_uid(pod_uid), self.container_id_short().unwrap_or("?"))
            }
            Workload::DockerContainer { .. } => format!("docker {}", self.container_id_short().unwrap_or("?")),
            Workload::SystemdService { unit } => unit.clone(),
            Workload::Other => self.path.clone(),
        }
    }
}

fn short_uid(uid: &str) -> &str {
    uid.get(..8).unwrap_or(uid)
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A pod UID as the kubelet writes it (36 chars, hex and dashes).
fn is_pod_uid(uid: &str) -> bool {
    uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// `<prefix><id>.scope` of a runtime's container scope (systemd driver), or a bare id
/// (cgroupfs driver).
fn container_component(component: &str) -> Option<(String, Option<Runtime>)> {
    if is_container_id(component) {
        return Some((component.to_string(), None));
    }
    let stem = component.strip_suffix(".scope")?;
    // crio-conmon-<id> is CRI-O's monitor process, not the container.
    if stem.starts_with("crio-conmon-") {
        return None;
    }
    let (runtime, id) = [("cri-containerd-", Runtime::Containerd), ("crio-", Runtime::Crio), ("docker-", Runtime::Docker)]
        .into_iter()
        .find_map(|(prefix, runtime)| stem.strip_prefix(prefix).map(|id| (runtime, id)))?;
    is_container_id(id).then(|| (id.to_string(), Some(runtime)))
}

/// Pod component of either driver: `kubepods-burstable-pod<uid_with_underscores>.slice` or
/// `pod<uid>`, with the QoS class it implies (or `None` to take it from the parent component).
fn pod_component(component: &str) -> Option<(String, Option<QosClass>)> {
    if let Some(stem) = component.strip_suffix(".slice") {
        let (qos, rest) = if let Some(rest) = stem.strip_prefix("kubepods-burstable-pod") {
            (QosClass::Burstable, rest)
        } else if let Some(rest) = stem.strip_prefix("kubepods-besteffort-pod") {
            (QosClass::BestEffort, rest)
        } else if let Some(rest) = stem.strip_prefix("kubepods-pod") {
            (QosClass::Guaranteed, rest)
        } else {
            return None;
        };
        let uid = rest.replace('_', "-");
        return is_pod_uid(&uid).then_some((uid, Some(qos)));
    }
    let uid = component.strip_prefix("pod")?;
    is_pod_uid(uid).then(|| (uid.to_string(), None))
}

/// The QoS class a cgroupfs-driver parent component names (`burstable`, `besteffort`), or
/// Guaranteed when the pod sits directly under `kubepods`.
fn qos_from_parent(parent: Option<&str>) -> QosClass {
    match parent {
        Some("burstable") | Some("kubepods-burstable.slice") => QosClass::Burstable,
        Some("besteffort") | Some("kubepods-besteffort.slice") => QosClass::BestEffort,
        _ => QosClass::Guaranteed,
    }
}

pub fn identify(path: &str) -> Identity {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    Identity { path: path.to_string(), workload: workload(&components), names: None }
}

fn workload(components: &[&str]) -> Workload {
    // Kubernetes: find the pod component anywhere (nested setups such as kind or k3s prefix it).
    if let Some(index) = components.iter().position(|c| pod_component(c).is_some()) {
        let Some((pod_uid, qos)) = pod_component(components[index]) else { return Workload::Other };
        let qos = qos.unwrap_or_else(|| qos_from_parent(index.checked_sub(1).map(|i| components[i])));
        return match components.get(index + 1) {
            None => Workload::KubernetesPod { pod_uid, qos },
            Some(child) if components.len() == index + 2 => match container_component(child) {
                Some((container_id, runtime)) => Workload::KubernetesContainer { pod_uid, qos, container_id, runtime },
                None => Workload::Other,
            },
            Some(_) => Workload::Other,
        };
    }
    let Some(last) = components.last() else { return Workload::Other };
    if let Some((container_id, runtime)) = container_component(last) {
        let is_docker = runtime == Some(Runtime::Docker)
            || (runtime.is_none() && components.len() >= 2 && components[components.len() - 2] == "docker");
        if is_docker {
            return Workload::DockerContainer { container_id };
        }
        return Workload::Other;
    }
    if last.ends_with(".service") && last.len() > ".service".len() {
        return Workload::SystemdService { unit: (*last).to_string() };
    }
    Workload::Other
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9";
    const UID_SYSTEMD: &str = "1b2c3d4e_5f60_4718_8293_a4b5c6d7e8f9";

    fn container(qos: QosClass, runtime: Option<Runtime>) -> Workload {
        Workload::KubernetesContainer { pod_uid: UID.into(), qos, container_id: ID.into(), runtime }
    }

    fn pod(qos: QosClass) -> Workload {
        Workload::KubernetesPod { pod_uid: UID.into(), qos }
    }

    #[test]
    fn real_world_paths() {
        use QosClass::*;
        use Runtime::*;
        let cases: Vec<(String, Workload)> = vec![
            // systemd driver, three QoS classes x three runtimes
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"), container(Burstable, Some(Containerd))),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"), container(BestEffort, Some(Containerd))),
            (format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"), container(Guaranteed, Some(Containerd))),
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"), container(Burstable, Some(Crio))),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"), container(BestEffort, Some(Crio))),
            (format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/crio-{ID}.scope"), container(Guaranteed, Some(Crio))),
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"), container(Burstable, Some(Docker))),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"), container(BestEffort, Some(Docker))),
            (format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/docker-{ID}.scope"), container(Guaranteed, Some(Docker))),
            // systemd driver, pod level
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"), pod(Burstable)),
            (format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice"), pod(Guaranteed)),
            // CRI-O's conmon monitor is not the container
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/crio-conmon-{ID}.scope"), Workload::Other),
            // cgroupfs driver, three QoS classes
            (format!("/kubepods/burstable/pod{UID}/{ID}"), container(Burstable, None)),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), container(BestEffort, None)),
            (format!("/kubepods/pod{UID}/{ID}"), container(Guaranteed, None)),
            (format!("/kubepods/besteffort/pod{UID}"), pod(BestEffort)),
            (format!("/kubepods/pod{UID}"), pod(Guaranteed)),
            // nested (kind, k3s)
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"), container(BestEffort, Some(Containerd))),
            (format!("/docker/{ID}/kubepods/burstable/pod{UID}/{ID}"), container(Burstable, None)),
            // Docker outside Kubernetes
            (format!("/system.slice/docker-{ID}.scope"), Workload::DockerContainer { container_id: ID.into() }),
            (format!("/docker/{ID}"), Workload::DockerContainer { container_id: ID.into() }),
            // systemd
            ("/system.slice/nginx.service".into(), Workload::SystemdService { unit: "nginx.service".into() }),
            ("/system.slice/containerd.service".into(), Workload::SystemdService { unit: "containerd.service".into() }),
            ("/user.slice/user-1000.slice/session-3.scope".into(), Workload::Other),
            ("/user.slice".into(), Workload::Other),
            // junk
            ("/".into(), Workload::Other),
            ("".into(), Workload::Other),
            ("/kubepods/burstable/podnot-a-uid/abc".into(), Workload::Other),
            (format!("/kubepods/burstable/pod{UID}/{}", &ID[..20]), Workload::Other),
            (format!("/system.slice/docker-{}.scope", ID.to_uppercase()), Workload::Other),
            ("/../..".into(), Workload::Other),
            ("/.service".into(), Workload::Other),
        ];
        for (path, want) in cases {
            assert_eq!(identify(&path).workload, want, "path {path}");
        }
    }

    #[test]
    fn labels_for_people() {
        let c = identify(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(c.container_id_short(), Some("0123456789ab"));
        assert_eq!(c.short_label(), "pod 1b2c3d4e ctr 0123456789ab");
        let named = c.with_names(KubeNames { namespace: "shop".into(), pod: "web-1".into(), container: Some("app".into()) });
        assert_eq!(named.short_label(), "shop/web-1/app");
        assert_eq!(identify("/system.slice/sshd.service").short_label(), "sshd.service");
        assert_eq!(identify("/user.slice").short_label(), "/user.slice");
    }

    proptest! {
        #[test]
        fn never_panics(path in ".*") {
            let identity = identify(&path);
            prop_assert_eq!(identity.path, path);
        }

        #[test]
        fn never_panics_on_path_like_input(parts in proptest::collection::vec("[a-z0-9_.-]{0,70}", 0..8)) {
            let _ = identify(&format!("/{}", parts.join("/")));
        }
    }
}
