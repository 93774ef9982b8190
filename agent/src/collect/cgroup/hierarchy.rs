//! Where cgroups live: the cgroup mounts, a process's cgroups, and the cgroup v2 tree by id.
//!
//! The kernel programs name cgroups by id, and a cgroup v2 directory's inode number is that id
//! (what `bpf_get_current_cgroup_id()` returns), so walking the v2 hierarchy and noting inode
//! numbers turns ids into paths. The v2 mount point is read from mountinfo, never assumed: it is
//! `/sys/fs/cgroup` on pure v2 hosts and `/sys/fs/cgroup/unified` on hybrid ones, where the cpu,
//! cpuacct and memory controllers still live in v1 hierarchies that usually mirror the v2 paths.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    fs, io,
    os::unix::{
        ffi::OsStringExt,
        fs::{DirEntryExt, MetadataExt},
    },
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Where the mounts of this process's mount namespace are listed.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The v1 controllers whose mount points are recorded (CPU throttling and usage on hybrid hosts,
/// memory). Super options mix controllers with flags, so only known names are taken.
const V1_CONTROLLERS: [&str; 3] = ["cpu", "cpuacct", "memory"];

/// Why the cgroup hierarchy could not be found or walked.
#[derive(Debug, Error)]
pub enum HierarchyError {
    #[error("reading {path} failed: {source}; mount procfs at /proc, where the agent finds the cgroup mounts")]
    Mountinfo {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cgroup v2 is not mounted; mount it with `mount -t cgroup2 none /sys/fs/cgroup/unified` or boot \
         with systemd.unified_cgroup_hierarchy=1 (in a container, also mount the host's /sys/fs/cgroup)"
    )]
    V2NotMounted,
    #[error(
        "walking the cgroup v2 hierarchy failed at {path}: {source}; run the agent as root (or with read \
         access to the cgroup filesystem) and mount the host's cgroup2 filesystem into its container"
    )]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Mount points of the cgroup v2 hierarchy and of the v1 hierarchies the agent reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    v2: Option<PathBuf>,
    v1: BTreeMap<&'static str, PathBuf>,
}

impl Mounts {
    /// The cgroup v2 mount point, or an error saying how to mount it.
    pub fn v2_root(&self) -> Result<&Path, HierarchyError> {
        self.v2.as_deref().ok_or(HierarchyError::V2NotMounted)
    }

    /// The mount point of v1 `controller` (`cpu`, `cpuacct` or `memory`), if it is mounted.
    pub fn v1_mount(&self, controller: &str) -> Option<&Path> {
        self.v1.get(controller).map(PathBuf::as_path)
    }
}

/// A mount point being considered for a hierarchy, and whether it shows the hierarchy's root.
struct Candidate {
    mount_point: PathBuf,
    whole: bool,
}

impl Candidate {
    /// Keeps the first mount of a hierarchy, unless a later one shows its whole tree and the
    /// first only a subtree (a bind mount of one cgroup, as container runtimes make), whose
    /// paths would not be the hierarchy's.
    fn offer(slot: &mut Option<Candidate>, new: Candidate) {
        if slot.as_ref().is_none_or(|old| !old.whole && new.whole) {
            *slot = Some(new);
        }
    }
}

/// Finds the cgroup2 mount and the v1 `cpu`, `cpuacct` and `memory` mounts in the text of
/// `/proc/<pid>/mountinfo`. Lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Mounts {
    let mut v2 = None;
    let mut v1: BTreeMap<&'static str, Option<Candidate>> = BTreeMap::new();
    for line in text.lines() {
        // id parent major:minor root mount-point options [optional fields...] - fstype source
        // super-options
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(separator) = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6) else {
            continue;
        };
        let (Some(root), Some(mount_point), Some(fstype)) =
            (fields.get(3), fields.get(4), fields.get(separator + 1))
        else {
            continue;
        };
        let candidate = || Candidate {
            mount_point: unescape(mount_point),
            whole: *root == "/",
        };
        match *fstype {
            "cgroup2" => Candidate::offer(&mut v2, candidate()),
            "cgroup" => {
                let super_options = fields.get(separator + 3).copied().unwrap_or_default();
                for controller in V1_CONTROLLERS {
                    if super_options.split(',').any(|option| option == controller) {
                        Candidate::offer(v1.entry(controller).or_default(), candidate());
                    }
                }
            }
            _ => {}
        }
    }
    Mounts {
        v2: v2.map(|c| c.mount_point),
        v1: v1
            .into_iter()
            .filter_map(|(name, c)| Some((name, c?.mount_point)))
            .collect(),
    }
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) if digits[0] <= b'3' => {
                out.push(digits.iter().fold(0u8, |value, d| value * 8 + (d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Reads this process's mountinfo and finds the cgroup mounts.
pub fn read_mounts() -> Result<Mounts, HierarchyError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| HierarchyError::Mountinfo {
        path: PathBuf::from(MOUNTINFO),
        source,
    })?;
    Ok(parse_mountinfo(&text))
}

/// The cgroups of one process, from `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    v2: Option<String>,
    v1: BTreeMap<String, String>,
}

impl ProcCgroups {
    /// The process's cgroup v2 path (the `0::` line), relative to the v2 mount.
    pub fn v2_path(&self) -> Option<&str> {
        self.v2.as_deref()
    }

    /// The process's path in the v1 hierarchy of `controller` (or `name=systemd` and the like).
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.v1.get(controller).map(String::as_str)
    }
}

/// Parses `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path` lines, where the v2 line is
/// `0::/path`. Malformed lines are skipped.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroups {
    let mut cgroups = ProcCgroups::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id.parse::<u32>().is_err() {
            continue;
        }
        // The kernel marks a v2 cgroup removed under a (zombie) process; the path is still its.
        let path = path.strip_suffix(" (deleted)").unwrap_or(path).to_string();
        if id == "0" && controllers.is_empty() {
            cgroups.v2 = Some(path);
        } else {
            for controller in controllers.split(',').filter(|c| !c.is_empty()) {
                cgroups.v1.insert(controller.to_string(), path.clone());
            }
        }
    }
    cgroups
}

/// The cgroup id of a cgroup v2 directory: its inode number.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// Every cgroup of a v2 hierarchy at one instant: id → path (relative to the mount, "/" for the
/// root) and back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupTree {
    paths: HashMap<u64, String>,
    ids: HashMap<String, u64>,
}

impl CgroupTree {
    /// Walks the hierarchy mounted at `root`. Cgroups removed during the walk are skipped (that
    /// is normal on a busy node); any other error fails the walk, since a partial tree would make
    /// live cgroups look removed.
    pub fn scan(root: &Path) -> Result<Self, HierarchyError> {
        let walk_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HierarchyError::Walk { path, source }
        };
        let meta = fs::metadata(root).map_err(walk_error(root))?;
        if !meta.is_dir() {
            return Err(walk_error(root)(io::Error::from(
                io::ErrorKind::NotADirectory,
            )));
        }
        let mut tree = Self::default();
        tree.insert(meta.ino(), "/".to_string());
        // Something mounted below the root is another filesystem, not a cgroup: never entered.
        let mounted_below = fs::read_to_string(MOUNTINFO)
            .map(|text| mount_points_below(&text, root))
            .unwrap_or_default();
        // Depth-first with an explicit stack: the hierarchy's depth is not ours to bound.
        let mut pending = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, relative)) = pending.pop() {
            for (name, id) in subdirs(&dir).map_err(walk_error(&dir))? {
                let path = dir.join(&name);
                if mounted_below.contains(&path) {
                    continue;
                }
                // Cgroup names are practically always UTF-8; a lossy name only affects labels.
                let child = format!("{relative}/{}", name.to_string_lossy());
                tree.insert(id, child.clone());
                pending.push((path, child));
            }
        }
        Ok(tree)
    }

    /// Forgets a cgroup found to be gone since the walk.
    pub fn remove(&mut self, id: u64) {
        if let Some(path) = self.paths.remove(&id) {
            self.ids.remove(&path);
        }
    }

    fn insert(&mut self, id: u64, path: String) {
        self.ids.insert(path.clone(), id);
        self.paths.insert(id, path);
    }

    /// The path of the cgroup with this id, if it existed at the walk.
    pub fn path_of(&self, id: u64) -> Option<&str> {
        self.paths.get(&id).map(String::as_str)
    }

    /// The id of the cgroup at this path ("/" for the root), if it existed at the walk.
    pub fn id_of(&self, path: &str) -> Option<u64> {
        self.ids.get(path).copied()
    }

    /// Every cgroup id, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.paths.keys().copied()
    }

    /// The number of cgroups, the root included.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the tree has no cgroups (only a default-constructed one).
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Whether an error means the file or directory went away while we looked: cgroups are removed
/// all the time, and kernfs answers ENODEV for a node removed under an open handle.
fn vanished(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ENODEV)
}

/// Mount points strictly below `root`, from the text of a mountinfo file.
fn mount_points_below(mountinfo: &str, root: &Path) -> HashSet<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split_ascii_whitespace().nth(4))
        .map(unescape)
        .filter(|point| point != root && point.starts_with(root))
        .collect()
}

/// The sub-directories of `dir` (never following symlinks) with their inode numbers, all from
/// the directory entries themselves; nothing if `dir` itself went away.
fn subdirs(dir: &Path) -> io::Result<Vec<(OsString, u64)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if vanished(&error) => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            // The directory was removed while being listed: its children went with it.
            Err(error) if vanished(&error) => break,
            Err(error) => return Err(error),
        };
        // Type and inode come with the directory entry (kernfs fills both in): a cgroup
        // directory holds some thirty control files, and stat-ing entries made the walk the
        // agent's main cost at 500 cgroups.
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => found.push((entry.file_name(), entry.ino())),
            Ok(_) => {}
            Err(error) if vanished(&error) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

/// The v1 `controller` directory mirroring the v2 cgroup at `v2_relative_path`, if it exists
/// (on hybrid hosts systemd and the kubelet create the same relative path in each hierarchy).
pub fn v1_dir(mounts: &Mounts, controller: &str, v2_relative_path: &str) -> Option<PathBuf> {
    let mut dir = mounts.v1_mount(controller)?.to_path_buf();
    for part in v2_relative_path.split('/').filter(|p| !p.is_empty()) {
        // Never leave the mount.
        if part == "." || part == ".." {
            return None;
        }
        dir.push(part);
    }
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use std::{
        os::unix::fs::symlink,
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        thread,
    };

    use super::*;

    /// This machine: a hybrid host with each v1 controller on its own mount and v2 at
    /// /sys/fs/cgroup/unified (no optional fields).
    const HYBRID_SEPARATE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd hybrid host (Ubuntu 20.04): optional fields, cpu and cpuacct co-mounted.
    const HYBRID_SYSTEMD: &str = "\
24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 24 0:30 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
41 35 0:36 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
42 35 0:37 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
43 35 0:38 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,net_cls,net_prio
";

    /// A pure v2 host (Fedora, Ubuntu 22.04+, Debian 12).
    const PURE_V2: &str = "\
22 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/root rw,seclabel,attr2,inode64,noquota
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw,seclabel
24 23 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:3 - securityfs securityfs rw
26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,seclabel,nsdelegate,memory_recursiveprot
27 23 0:24 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:5 - pstore pstore rw,seclabel
28 23 0:25 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:6 - bpf bpf rw,mode=700
";

    #[test]
    fn hybrid_host_with_separate_controllers() -> Result<(), HierarchyError> {
        let mounts = parse_mountinfo(HYBRID_SEPARATE);
        assert_eq!(mounts.v2_root()?, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            mounts.v1_mount("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu"))
        );
        assert_eq!(
            mounts.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct"))
        );
        assert_eq!(
            mounts.v1_mount("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            mounts.v1_mount("pids"),
            None,
            "only the controllers the agent reads are kept"
        );
        Ok(())
    }

    #[test]
    fn hybrid_host_with_optional_fields_and_comounted_controllers() -> Result<(), HierarchyError> {
        let mounts = parse_mountinfo(HYBRID_SYSTEMD);
        assert_eq!(mounts.v2_root()?, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            mounts.v1_mount("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            mounts.v1_mount("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            mounts.v1_mount("memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        Ok(())
    }

    #[test]
    fn pure_v2_host() -> Result<(), HierarchyError> {
        let mounts = parse_mountinfo(PURE_V2);
        assert_eq!(mounts.v2_root()?, Path::new("/sys/fs/cgroup"));
        assert_eq!(mounts.v1_mount("cpu"), None);
        Ok(())
    }

    #[test]
    fn escapes_and_many_optional_fields() -> Result<(), HierarchyError> {
        let text = "\
50 22 0:40 / /run/my\\040cgroups\\134v2 rw,relatime shared:30 master:4 propagate_from:2 unbindable - cgroup2 none rw
51 22 0:41 / /mnt/cpu\\011tab rw - cgroup cgroup rw,cpuacct,cpu
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.v2_root()?, Path::new("/run/my cgroups\\v2"));
        assert_eq!(mounts.v1_mount("cpu"), Some(Path::new("/mnt/cpu\ttab")));
        assert_eq!(
            unescape("a\\12b\\9999\\"),
            PathBuf::from("a\\12b\\9999\\"),
            "not escapes: kept"
        );
        Ok(())
    }

    #[test]
    fn whole_hierarchy_preferred_over_a_bind_mounted_subtree() -> Result<(), HierarchyError> {
        let text = "\
60 22 0:38 /kubepods/pod1 /run/pod-cgroup rw - cgroup2 cgroup2 rw
61 22 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
62 22 0:38 / /elsewhere rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            parse_mountinfo(text).v2_root()?,
            Path::new("/sys/fs/cgroup")
        );
        Ok(())
    }

    #[test]
    fn missing_cgroup2_says_how_to_mount_it() {
        let v1_only: String = HYBRID_SEPARATE
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        for text in [v1_only.as_str(), "", "garbage\n1 2 3\n"] {
            let mounts = parse_mountinfo(text);
            match mounts.v2_root() {
                Err(error @ HierarchyError::V2NotMounted) => {
                    let message = error.to_string();
                    assert!(
                        message.contains("mount -t cgroup2 none /sys/fs/cgroup/unified"),
                        "{message}"
                    );
                    assert!(
                        message.contains("systemd.unified_cgroup_hierarchy=1"),
                        "{message}"
                    );
                }
                other => panic!("expected V2NotMounted, got {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_lines_are_skipped() -> Result<(), HierarchyError> {
        let text = format!(
            "no separator here at all\n1 2 3 / /x rw - \n7 8 0:1 / /fake rw,relatime cgroup2 cgroup2 rw\n{}",
            PURE_V2
        );
        assert_eq!(
            parse_mountinfo(&text).v2_root()?,
            Path::new("/sys/fs/cgroup")
        );
        Ok(())
    }

    #[test]
    fn proc_cgroup_on_a_hybrid_host() {
        // This machine.
        let text = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/c7984f391d1b6d4d6638d388ec8c3f00
2:cpuacct:/
1:cpu:/
0::/
";
        let cgroups = parse_proc_cgroup(text);
        assert_eq!(cgroups.v2_path(), Some("/"));
        assert_eq!(
            cgroups.v1_path("memory"),
            Some("/process_api/c7984f391d1b6d4d6638d388ec8c3f00")
        );
        assert_eq!(cgroups.v1_path("cpu"), Some("/"));
        assert_eq!(cgroups.v1_path("name=systemd"), Some("/"));
        assert_eq!(cgroups.v1_path("blkio"), None);

        // A systemd host with co-mounted controllers, in a kubelet-managed pod.
        let pod = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1e597579_417e_482f_bf65_5fe170c3aebd.slice/cri-containerd-d7dfb4a21fe1703a8537e60d5af248af729315d187b24a538102d14874c8117d.scope";
        let text =
            format!("12:cpu,cpuacct:{pod}\n11:memory:{pod}\n1:name=systemd:{pod}\n0::{pod}\n");
        let cgroups = parse_proc_cgroup(&text);
        assert_eq!(cgroups.v2_path(), Some(pod));
        assert_eq!(cgroups.v1_path("cpu"), Some(pod));
        assert_eq!(cgroups.v1_path("cpuacct"), Some(pod));
    }

    #[test]
    fn proc_cgroup_on_a_pure_v2_host() {
        let cgroups = parse_proc_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n");
        assert_eq!(
            cgroups.v2_path(),
            Some("/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(cgroups.v1_path("cpu"), None);

        let odd = parse_proc_cgroup("garbage\nx::/nope\n0::/odd:name:with:colons (deleted)\n");
        assert_eq!(odd.v2_path(), Some("/odd:name:with:colons"));
        assert_eq!(parse_proc_cgroup("").v2_path(), None);
    }

    #[test]
    fn scan_maps_inode_numbers_to_paths() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        for dir in ["a/b/c", "a/d", "e"] {
            fs::create_dir_all(root.join(dir))?;
        }
        fs::write(root.join("a/cgroup.procs"), "")?;
        symlink(root.join("a"), root.join("link-to-a"))?;

        let tree = CgroupTree::scan(root)?;
        let expected = ["/", "/a", "/a/b", "/a/b/c", "/a/d", "/e"];
        assert_eq!(
            tree.len(),
            expected.len(),
            "files and symlinks are not cgroups"
        );
        assert!(!tree.is_empty());
        for path in expected {
            let ino = fs::metadata(root.join(path.trim_start_matches('/')))?.ino();
            assert_eq!(tree.id_of(path), Some(ino), "{path}");
            assert_eq!(tree.path_of(ino), Some(path));
            assert_eq!(cgroup_id(&root.join(path.trim_start_matches('/')))?, ino);
        }
        let mut ids: Vec<u64> = tree.ids().collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), expected.len());
        assert_eq!(tree.id_of("/link-to-a"), None);
        Ok(())
    }

    #[test]
    fn scan_of_a_missing_root_names_it() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let missing = tmp.path().join("not-there");
        match CgroupTree::scan(&missing) {
            Err(error @ HierarchyError::Walk { .. }) => {
                assert!(
                    error.to_string().contains(&missing.display().to_string()),
                    "{error}"
                );
            }
            other => panic!("expected a walk error, got {other:?}"),
        }
        let file = tmp.path().join("file");
        fs::write(&file, "").expect("write");
        assert!(matches!(
            CgroupTree::scan(&file),
            Err(HierarchyError::Walk { .. })
        ));
    }

    #[test]
    fn mounts_below_the_root_are_not_cgroups() {
        let text = "30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid shared:9 - cgroup2 cgroup2 rw\n\
                    41 30 0:40 / /sys/fs/cgroup/unified/odd\\040dir rw - tmpfs tmpfs rw\n\
                    42 25 0:41 / /sys/fs/cgroup/unifiedx rw - tmpfs tmpfs rw\n";
        let below = mount_points_below(text, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            below,
            HashSet::from([PathBuf::from("/sys/fs/cgroup/unified/odd dir")])
        );
    }

    #[test]
    fn a_directory_that_vanished_has_no_children() -> io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let gone = tmp.path().join("gone");
        fs::create_dir(&gone)?;
        fs::remove_dir(&gone)?;
        assert_eq!(subdirs(&gone)?, Vec::new());
        Ok(())
    }

    #[test]
    fn cgroups_coming_and_going_during_the_walk_are_tolerated(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().to_path_buf();
        fs::create_dir(root.join("stable"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (root, stop) = (root.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let dir = root.join(format!("c{}", n % 16));
                    let _ = fs::create_dir_all(dir.join("x/y"));
                    let _ = fs::remove_dir_all(&dir);
                    n += 1;
                }
            })
        };
        for _ in 0..300 {
            let tree = CgroupTree::scan(&root)?;
            assert!(tree.id_of("/stable").is_some());
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().map_err(|_| "churn thread panicked")?;
        Ok(())
    }

    #[test]
    fn v1_dir_mirrors_the_v2_path() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let cpu = tmp.path().join("cpu");
        fs::create_dir_all(cpu.join("kubepods/burstable"))?;
        let mounts = parse_mountinfo(&format!(
            "70 22 0:29 / {} rw - cgroup cgroup rw,cpu\n",
            cpu.display()
        ));
        assert_eq!(
            v1_dir(&mounts, "cpu", "/kubepods/burstable"),
            Some(cpu.join("kubepods/burstable"))
        );
        assert_eq!(v1_dir(&mounts, "cpu", "/"), Some(cpu.clone()));
        assert_eq!(
            v1_dir(&mounts, "cpu", "/kubepods/besteffort"),
            None,
            "not mirrored"
        );
        assert_eq!(
            v1_dir(&mounts, "cpu", "/kubepods/../.."),
            None,
            "stays in the mount"
        );
        assert_eq!(
            v1_dir(&mounts, "memory", "/kubepods"),
            None,
            "controller not mounted"
        );
        Ok(())
    }

    /// Read-only: walks this machine's real cgroup v2 hierarchy and finds the test's own cgroup.
    #[test]
    fn finds_own_cgroup_in_the_real_hierarchy() -> Result<(), Box<dyn std::error::Error>> {
        let mounts = read_mounts()?;
        let root = mounts.v2_root()?.to_path_buf();
        let own = parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup")?)
            .v2_path()
            .ok_or("no v2 line in /proc/self/cgroup")?
            .to_string();
        let tree = CgroupTree::scan(&root)?;
        let dir = match own.trim_start_matches('/') {
            "" => root.clone(),
            relative => root.join(relative),
        };
        assert_eq!(
            tree.id_of(&own),
            Some(cgroup_id(&dir)?),
            "own cgroup {own} under {}",
            root.display()
        );
        assert_eq!(tree.id_of("/"), Some(cgroup_id(&root)?));
        Ok(())
    }
}
