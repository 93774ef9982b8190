//! Where cgroups live: the cgroup v2 mount (detected, never assumed: `/sys/fs/cgroup` on pure v2
//! hosts, `/sys/fs/cgroup/unified` on hybrid ones), the v1 controller mounts, and the map from
//! cgroup id (a v2 directory's inode number, what `bpf_get_current_cgroup_id()` returns) to path.

use std::{
    collections::HashMap,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum HierarchyError {
    #[error(
        "cgroup v2 is not mounted; mount it (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or boot \
         with systemd.unified_cgroup_hierarchy=1, and in a container mount the host's /sys/fs/cgroup"
    )]
    NoCgroup2,
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// cgroup mounts of this host as seen by this process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    v2: Option<PathBuf>,
    /// v1 controller name -> mount point (`cpu` and `cpuacct` often share one).
    v1: HashMap<String, PathBuf>,
}

impl Mounts {
    pub fn v2_root(&self) -> Result<&Path, HierarchyError> {
        self.v2.as_deref().ok_or(HierarchyError::NoCgroup2)
    }

    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses /proc/self/mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS`.
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split_whitespace().nth(4) else { continue };
        let mut right = right.split_whitespace();
        let (Some(fstype), _source, super_options) = (right.next(), right.next(), right.next().unwrap_or("")) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        match fstype {
            // The first cgroup2 mount wins; later ones are usually bind mounts of the same tree.
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(mount_point),
            "cgroup" => {
                for option in super_options.split(',') {
                    if matches!(option, "cpu" | "cpuacct" | "memory" | "cpuset" | "blkio" | "pids") {
                        mounts.v1.entry(option.to_string()).or_insert_with(|| mount_point.clone());
                    }
                }
            }
            _ => {}
        }
    }
    mounts
}

pub fn read_mounts() -> Result<Mounts, HierarchyError> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|source| HierarchyError::Read { path: path.into(), source })?;
    let mounts = parse_mountinfo(&text);
    mounts.v2_root()?;
    Ok(mounts)
}

/// A process's cgroup memberships (/proc/PID/cgroup).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    v2: Option<String>,
    v1: HashMap<String, String>,
}

impl ProcCgroups {
    /// Path in the v2 hierarchy (`0::/path`).
    pub fn v2_path(&self) -> Option<&str> {
        self.v2.as_deref()
    }

    /// Path in the v1 hierarchy of `controller`.
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1.get(controller).map(String::as_str)
    }
}

/// Parses `hierarchy-id:controllers:path` lines.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut out = ProcCgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else { continue };
        if id == "0" && controllers.is_empty() {
            out.v2 = Some(path.to_string());
        } else {
            for controller in controllers.split(',').filter(|c| !c.is_empty()) {
                out.v1.insert(controller.to_string(), path.to_string());
            }
        }
    }
    out
}

/// The cgroup id of a v2 directory: its inode number.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// id <-> path of every cgroup below a v2 root, from one walk.
#[derive(Clone, Debug, Default)]
pub struct CgroupTree {
    by_id: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
}

impl CgroupTree {
    /// Walks the hierarchy iteratively. Cgroups that vanish mid-walk are normal (containers end
    /// all the time) and are skipped; only an unreadable root is an error.
    pub fn scan(root: &Path) -> Result<Self, HierarchyError> {
        let root_id = cgroup_id(root).map_err(|source| HierarchyError::Read { path: root.display().to_string(), source })?;
        let mut tree = Self::default();
        tree.insert(root_id, "/".to_string());
        let mut pending = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, relative)) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                if !kind.is_dir() {
                    continue;
                }
                let Ok(metadata) = entry.metadata() else { continue };
                let path = format!("{relative}/{}", entry.file_name().to_string_lossy());
                tree.insert(metadata.ino(), path.clone());
                pending.push((entry.path(), path));
            }
        }
        Ok(tree)
    }

    fn insert(&mut self, id: u64, path: String) {
        self.by_path.insert(path.clone(), id);
        self.by_id.insert(id, path);
    }

    pub fn path_of(&self, id: u64) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    pub fn id_of(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_id.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// On hybrid hosts the v1 controller keeps the same relative path as v2 (systemd and the kubelet
/// mirror them); the directory is returned only if it exists.
pub fn v1_dir(mounts: &Mounts, controller: &str, v2_relative_path: &str) -> Option<PathBuf> {
    let root = mounts.v1_mount(controller)?;
    let relative = v2_relative_path.trim_start_matches('/');
    let dir = if relative.is_empty() { root.to_path_buf() } else { root.join(relative) };
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
27 25 0:25 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 27 0:26 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
29 27 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
33 27 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
34 27 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,memory
";

    const PURE_V2: &str = "\
22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
26 23 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.v2_root().ok(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(m.v1_mount("cpu"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(m.v1_mount("cpuacct"), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(m.v1_mount("memory"), Some(Path::new("/sys/fs/cgroup/memory")));
    }

    #[test]
    fn pure_v2_host() {
        let m = parse_mountinfo(PURE_V2);
        assert_eq!(m.v2_root().ok(), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(m.v1_mount("cpu"), None);
    }

    #[test]
    fn no_cgroup2_is_a_clear_error() {
        let m = parse_mountinfo("22 1 0:21 / /proc rw - proc proc rw\n");
        assert!(matches!(m.v2_root(), Err(HierarchyError::NoCgroup2)));
    }

    #[test]
    fn escaped_mount_points() {
        let m = parse_mountinfo("1 2 0:3 / /mnt/with\\040space rw shared:1 - cgroup2 none rw\n");
        assert_eq!(m.v2_root().ok(), Some(Path::new("/mnt/with space")));
    }

    #[test]
    fn optional_fields_are_skipped() {
        let m = parse_mountinfo("1 2 0:3 / /c rw shared:1 master:2 propagate_from:3 - cgroup2 none rw\n");
        assert_eq!(m.v2_root().ok(), Some(Path::new("/c")));
    }

    #[test]
    fn proc_cgroup_files() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/224a\n1:cpu,cpuacct:/x\n0::/\n";
        let p = parse_proc_cgroup(hybrid);
        assert_eq!(p.v2_path(), Some("/"));
        assert_eq!(p.v1_path("memory"), Some("/process_api/224a"));
        assert_eq!(p.v1_path("cpuacct"), Some("/x"));
        let pure = parse_proc_cgroup("0::/system.slice/sshd.service\n");
        assert_eq!(pure.v2_path(), Some("/system.slice/sshd.service"));
        assert_eq!(pure.v1_path("cpu"), None);
    }

    #[test]
    fn scan_maps_inodes_to_paths() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(root.path().join("a/b")).expect("mkdir");
        std::fs::create_dir_all(root.path().join("c")).expect("mkdir");
        std::fs::write(root.path().join("a/cgroup.procs"), "").expect("file");
        let tree = CgroupTree::scan(root.path()).expect("scan");
        assert_eq!(tree.len(), 4);
        let b = cgroup_id(&root.path().join("a/b")).expect("ino");
        assert_eq!(tree.path_of(b), Some("/a/b"));
        assert_eq!(tree.id_of("/c"), cgroup_id(&root.path().join("c")).ok());
        assert_eq!(tree.path_of(cgroup_id(root.path()).expect("ino")), Some("/"));
    }

    #[test]
    fn scan_of_a_missing_root_is_an_error() {
        assert!(CgroupTree::scan(Path::new("/nonexistent/cgroup")).is_err());
    }

    /// Read-only: finds this process's own cgroup in the real hierarchy.
    #[test]
    fn real_hierarchy_contains_own_cgroup() {
        let mounts = read_mounts().expect("cgroup v2 is mounted on every supported host");
        let root = mounts.v2_root().expect("checked by read_mounts");
        let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").expect("readable"));
        let tree = CgroupTree::scan(root).expect("scan");
        let path = own.v2_path().expect("a v2 line");
        assert!(tree.id_of(path).is_some(), "own cgroup {path} found");
    }
}
