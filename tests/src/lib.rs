//! Shared fixtures for the integration tests: cgroups the tests create (and only those), agent
//! processes, and ground truth read from the kernel's own accounting; in [`deploy`], the
//! deployment artefacts and the real tools that check them; in [`apiserver`], the Kubernetes API
//! test double; in [`cluster`], several agents in cluster mode against it; in [`rbac`], RBAC
//! rules judged as the apiserver's authorizer judges calls; in [`monitoring`], real Prometheus
//! and Alertmanager for the end-to-end test.
//!
//! Rules kept here so no test has to remember them: cgroups are created beneath the cgroup the
//! test process already sits in (per hierarchy, from /proc/self/cgroup), every process a test
//! starts is killed and every cgroup it created is removed on drop, and a test that needs root
//! fails instead of skipping when `CI=true`.

pub mod deploy;

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead, BufReader, Write},
    net::TcpListener,
    os::{
        fd::AsRawFd,
        unix::{fs::MetadataExt, process::CommandExt},
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use ballast::collect::cgroup::hierarchy::{self, Mounts};

pub mod apiserver;
pub mod cluster;
pub mod monitoring;
pub mod rbac;

/// Whether the suite runs in CI (`CI=true`), where a missing privilege or tool fails a test
/// instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// True when the test may run. Outside CI a non-root run skips (with a message); in CI a
/// missing privilege is a failure, because the suite exists to run these for real.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if in_ci() {
        panic!("CI=true but not running as root: kernel tests must run in CI");
    }
    eprintln!("not root: kernel test not run (run `cargo xtask test` as root)");
    false
}

/// Directory holding the workspace's built binaries (`target/debug`), found from the test
/// executable's own location (`target/debug/deps/...`).
fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let deps = exe
        .parent()
        .ok_or_else(|| anyhow!("test executable has no directory"))?;
    let dir = if deps.ends_with("deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

/// The `ballast` binary (built by `cargo xtask test` before the tests run); `BALLAST_BIN` wins.
pub fn ballast_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BALLAST_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = bin_dir()?.join("ballast");
    if !path.is_file() {
        bail!(
            "{} not found: build it first (`cargo build -p ballast`), or run `cargo xtask test`",
            path.display()
        );
    }
    Ok(path)
}

/// The workload generator of this crate.
pub fn load_bin() -> Result<PathBuf> {
    let path = bin_dir()?.join("ballast-load");
    if !path.is_file() {
        bail!(
            "{} not found: run the tests through cargo, which builds it",
            path.display()
        );
    }
    Ok(path)
}

/// A cgroup created by a test, beneath the test process's own cgroup; removed on drop together
/// with every process the test started in it.
pub struct TestCgroup {
    /// Path relative to the cgroup v2 mount, as the agent labels it.
    pub path: String,
    pub v2_dir: PathBuf,
    /// v1 cgroups of the same relative path the processes also join (hybrid hosts).
    v1_dirs: Vec<PathBuf>,
    /// Every directory this cgroup created or shares (see [`SHARED_DIRS`]), in any hierarchy,
    /// parents before children.
    created: Vec<PathBuf>,
    children: Vec<Child>,
}

impl TestCgroup {
    /// `NAME-PID` beneath the test process's own v2 cgroup.
    pub fn new(name: &str) -> Result<Self> {
        Self::at(&own_v2_path()?, &format!("{name}-{}", std::process::id()))
    }

    /// `NAME-PID/BELOW` beneath the test process's own v2 cgroup (intermediate directories
    /// created too): e.g. a kubelet-style `kubepods/burstable/pod<uid>/<container id>`, which
    /// the agent recognises anywhere in a path.
    pub fn nested(name: &str, below: &str) -> Result<Self> {
        Self::at(
            &own_v2_path()?,
            &format!("{name}-{}/{below}", std::process::id()),
        )
    }

    /// `NAME-PID/BELOW` (`NAME-PID` for an empty `below`) beneath the test process's own v1
    /// `controller` cgroup, at that same relative path in v2 too, so that the agent, which
    /// looks for a v2 cgroup's v1 files at the same path (as a kubelet lays them out), finds
    /// them; for hosts where the test's own v1 and v2 cgroups differ. The v2 path must be
    /// beneath the test's own v2 cgroup.
    pub fn mirroring_v1(controller: &str, name: &str, below: &str) -> Result<Self> {
        let name = format!("{name}-{}", std::process::id());
        let below = match below {
            "" => name,
            below => format!("{name}/{below}"),
        };
        Self::at(&own_v1_path(controller)?, &below)
    }

    fn at(parent: &str, below: &str) -> Result<Self> {
        let mounts = hierarchy::read_mounts().context("reading cgroup mounts")?;
        let root = v2_root(&mounts)?;
        let own = own_v2_path()?;
        let path = format!("{}/{below}", parent.trim_end_matches('/'));
        let mut created = Vec::new();
        let made = create_beneath(&root, &own, &path, &mut created);
        let mut cgroup = Self {
            path,
            v2_dir: PathBuf::new(),
            v1_dirs: Vec::new(),
            created,
            children: Vec::new(),
        };
        // On an error the drop removes what was created so far.
        cgroup.v2_dir = made?;
        Ok(cgroup)
    }

    /// Also puts the cgroup's processes into a v1 `cpu` cgroup of the same relative path with a
    /// CFS quota (hybrid hosts keep the cpu controller in v1). Requires that path to be beneath
    /// the test process's own v1 cpu cgroup, as on this machine kind.
    pub fn with_v1_cpu_quota(mut self, quota_us: u64, period_us: u64) -> Result<Self> {
        let dir = self.v1_child("cpu", true)?;
        std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
        std::fs::write(dir.join("cpu.cfs_quota_us"), quota_us.to_string())?;
        Ok(self)
    }

    /// Also puts the cgroup's processes into a v1 `memory` cgroup with a limit (hybrid hosts keep
    /// the memory controller in v1), created beneath the test process's own v1 memory cgroup;
    /// its path mirrors the v2 one only where that is beneath it (see [`Self::mirroring_v1`]).
    pub fn with_v1_memory_limit(mut self, bytes: u64) -> Result<Self> {
        let dir = self.v1_child("memory", false)?;
        std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())?;
        Ok(self)
    }

    /// Creates a v1 `controller` cgroup beneath the test process's own: at the v2 cgroup's
    /// relative path where that is beneath it (so the agent finds it the way it finds a
    /// kubelet's), else, unless `mirror` requires that, named like this one's last component.
    fn v1_child(&mut self, controller: &str, mirror: bool) -> Result<PathBuf> {
        let mounts = hierarchy::read_mounts()?;
        let root = mounts
            .v1_mount(controller)
            .ok_or_else(|| {
                anyhow!("no v1 {controller} controller mounted; this test needs a hybrid host")
            })?
            .to_path_buf();
        let own_v1 = own_v1_path(controller)?;
        let path = if is_beneath(&self.path, &own_v1) {
            self.path.clone()
        } else if mirror {
            bail!(
                "own v1 {controller} cgroup {own_v1} is not an ancestor of {}; cannot mirror paths",
                self.path
            );
        } else {
            let name = self.path.rsplit('/').next().unwrap_or_default();
            format!("{}/{name}", own_v1.trim_end_matches('/'))
        };
        let dir = create_beneath(&root, &own_v1, &path, &mut self.created)?;
        self.v1_dirs.push(dir.clone());
        Ok(dir)
    }

    /// The cgroup id the kernel programs see: the v2 directory's inode number.
    pub fn id(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.v2_dir)?.ino())
    }

    /// Starts `ballast-load ARGS` inside this cgroup (it joins before exec, so none of its CPU
    /// time is charged elsewhere). Returns its stdout for readiness lines.
    pub fn spawn_load(&mut self, args: &[&str]) -> Result<(u32, BufReader<ChildStdout>)> {
        self.spawn(load_bin()?.as_os_str(), args)
    }

    /// Starts `program ARGS` inside this cgroup (joined before exec, as `spawn_load`).
    pub fn spawn(
        &mut self,
        program: &std::ffi::OsStr,
        args: &[&str],
    ) -> Result<(u32, BufReader<ChildStdout>)> {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut procs = vec![CString::new(
            self.v2_dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )?];
        for v1 in &self.v1_dirs {
            procs.push(CString::new(
                v1.join("cgroup.procs")
                    .into_os_string()
                    .into_encoded_bytes(),
            )?);
        }
        // SAFETY: the closure runs between fork and exec and only calls open/write/close, which
        // are async-signal-safe; the paths were allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                for file in &procs {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // "0" moves the writing process itself.
                    let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                    libc::close(fd);
                    if written != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command.spawn().with_context(|| {
            format!("starting {} in the test cgroup", program.to_string_lossy())
        })?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let pid = child.id();
        self.children.push(child);
        Ok((pid, BufReader::new(stdout)))
    }

    /// `usage_usec` of the cgroup's v2 `cpu.stat`, in ns: the kernel's own CPU accounting.
    pub fn cpu_usage_ns(&self) -> Result<u64> {
        let text = std::fs::read_to_string(self.v2_dir.join("cpu.stat"))?;
        let usec = text
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .ok_or_else(|| anyhow!("no usage_usec in cpu.stat"))?;
        Ok(usec.trim().parse::<u64>()? * 1000)
    }

    /// Kills and reaps the processes this test started in the cgroup.
    pub fn stop_processes(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        self.stop_processes();
        for dir in self.created.iter().rev() {
            let mut shared = SHARED_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
            match shared.get_mut(dir) {
                Some(users) if *users > 1 => {
                    *users -= 1;
                    continue;
                }
                Some(_) => {
                    shared.remove(dir);
                }
                None => drop(shared),
            }
            remove_cgroup_dir(dir);
        }
    }
}

/// Removes an empty cgroup directory, waiting (at most 5 s) for the kernel to finish moving
/// its dead tasks out, which it must before the directory can go.
fn remove_cgroup_dir(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Directories between a test's own cgroup and its test cgroups (e.g. `NAME-PID` of
/// [`TestCgroup::nested`]) that this process created, with how many live test cgroups lie
/// beneath each: the last of them removes it. A directory this process did not create is never
/// removed.
static SHARED_DIRS: Mutex<BTreeMap<PathBuf, usize>> = Mutex::new(BTreeMap::new());

/// Whether cgroup path `path` is `ancestor` or beneath it.
fn is_beneath(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    ancestor.is_empty()
        || path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Creates the directory of cgroup `path` (relative to the hierarchy at `root`), which must be
/// new and beneath `base`, and whichever directories between `base` and it are missing; records
/// in `created` the new directory and every one between that this process created (shared, see
/// [`SHARED_DIRS`]). Returns the directory of `path`.
fn create_beneath(
    root: &Path,
    base: &str,
    path: &str,
    created: &mut Vec<PathBuf>,
) -> Result<PathBuf> {
    if !is_beneath(path, base) || path.trim_end_matches('/') == base.trim_end_matches('/') {
        bail!("cgroup {path} is not beneath the test's own cgroup {base}");
    }
    let below = &path[base.trim_end_matches('/').len()..];
    let mut dir = root.join(base.trim_start_matches('/'));
    let parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|part| matches!(*part, "." | "..")) {
        bail!("cgroup path {path} has a `.` or `..` component");
    }
    let create = |dir: &Path| {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))
    };
    let mut shared = SHARED_DIRS.lock().unwrap_or_else(PoisonError::into_inner);
    for (i, part) in parts.iter().enumerate() {
        dir.push(part);
        if i + 1 == parts.len() {
            create(&dir)?;
        } else if let Some(users) = shared.get_mut(&dir) {
            *users += 1;
        } else if dir.exists() {
            // Not ours: used, never removed.
            continue;
        } else {
            create(&dir)?;
            shared.insert(dir.clone(), 1);
        }
        created.push(dir.clone());
    }
    Ok(dir)
}

/// Reads lines from a workload until one equals `expected`.
pub fn wait_line(stdout: &mut BufReader<ChildStdout>, expected: &str) -> Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            bail!("workload exited before printing `{expected}`");
        }
        if line.trim() == expected {
            return Ok(());
        }
    }
}

/// A file of `mib` MiB in `dir` (on disk, not tmpfs: its pages must be reclaimable), not in the
/// page cache, so that whoever reads it next is charged for its pages.
pub fn uncached_file(dir: &Path, mib: u64) -> Result<PathBuf> {
    let path = dir.join("reread.bin");
    let mut file = std::fs::File::create(&path)?;
    let chunk = vec![0x5au8; 1 << 20];
    for _ in 0..mib {
        file.write_all(&chunk)?;
    }
    file.sync_all()?;
    // SAFETY: plain syscall on a file descriptor this function owns; it only drops the clean
    // page-cache pages of this one file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        bail!("posix_fadvise: error {rc}");
    }
    Ok(path)
}

/// Field 2 of /proc/PID/schedstat: the task's total run-queue wait, ns, summed over threads.
pub fn run_delay_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let text = std::fs::read_to_string(task?.path().join("schedstat"))?;
        let field = text
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("short schedstat"))?;
        total += field.parse::<u64>()?;
    }
    Ok(total)
}

fn v2_root(mounts: &Mounts) -> Result<PathBuf> {
    Ok(mounts
        .v2_root()
        .context("cgroup v2 is not mounted")?
        .to_path_buf())
}

fn own_v2_path() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    hierarchy::parse_proc_cgroup(&text)
        .v2_path()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no cgroup v2 line in /proc/self/cgroup"))
}

fn own_v1_path(controller: &str) -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    hierarchy::parse_proc_cgroup(&text)
        .v1_path(controller)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no v1 {controller} line in /proc/self/cgroup"))
}

/// A `ballast agent --standalone` process on a free loopback port; SIGTERM on drop.
pub struct Agent {
    child: Child,
    pub base_url: String,
}

impl Agent {
    /// Starts the agent with `extra` arguments and waits until it reports healthy.
    pub fn start(extra: &[&str]) -> Result<Self> {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(ballast_bin()?)
            .args(["agent", "--standalone", "--listen", &listen])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the agent")?;
        let agent = Self {
            child,
            base_url: format!("http://{listen}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(response) = ureq::get(&format!("{}/healthz", agent.base_url)).call() {
                if response.status() == 200 {
                    return Ok(agent);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("agent did not become healthy within 30 s")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get_text(&self, path: &str) -> Result<String> {
        let mut response = ureq::get(&format!("{}{path}", self.base_url)).call()?;
        Ok(response.body_mut().read_to_string()?)
    }

    /// `/metrics`, parsed by a Prometheus text-format parser.
    pub fn scrape(&self) -> Result<prometheus_parse::Scrape> {
        let text = self.get_text("/metrics")?;
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .context("parsing /metrics")
    }

    pub fn load(&self) -> Result<ballast::serve::api::LoadResponse> {
        Ok(serde_json::from_str(&self.get_text("/v1/load")?)?)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> Result<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill()?;
        bail!("agent did not exit within 10 s of SIGTERM")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
    }
}

/// Value of the sample of `family` whose `cgroup` label is `path` and whose `extra` labels match.
pub fn sample_for(
    scrape: &prometheus_parse::Scrape,
    family: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Option<f64> {
    let mut labels = vec![("cgroup", path)];
    labels.extend_from_slice(extra);
    sample_with(scrape, family, &labels)
}

/// Value of the sample of `family` carrying all of `labels`.
pub fn sample_with(
    scrape: &prometheus_parse::Scrape,
    family: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    use prometheus_parse::Value;
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == family && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        match (matches, &s.value) {
            (true, Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => Some(*v),
            _ => None,
        }
    })
}

/// The value of `family` for cgroup `path` once it stops moving (two scrapes a second apart agree),
/// i.e. after the agent has charged everything the cgroup's finished workload did.
pub fn settled_value(agent: &Agent, family: &str, path: &str) -> Result<f64> {
    let mut last: Option<f64> = None;
    eventually(Duration::from_secs(15), || {
        let now = sample_for(&agent.scrape()?, family, path, &[]);
        let stable = match (last, now) {
            (Some(a), Some(b)) if a == b => Some(b),
            _ => None,
        };
        last = now;
        if stable.is_none() {
            std::thread::sleep(Duration::from_millis(900));
        }
        Ok(stable)
    })
    .with_context(|| format!("{family} of {path} never settled (last value {last:?})"))
}

/// Polls `probe` until it returns `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, mut probe: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Keys of every loaded `CGROUP_CPU` map on this host (any agent's), read through the bpf()
/// syscall like bpftool does.
pub fn cgroup_ids_in_kernel_maps() -> Result<Vec<u64>> {
    use aya::maps::{loaded_maps, Map, MapData, PerCpuHashMap};
    let mut ids = Vec::new();
    for info in loaded_maps() {
        let info = info?;
        if info.name_as_str() != Some("CGROUP_CPU") {
            continue;
        }
        let map = Map::PerCpuHashMap(MapData::from_id(info.id())?);
        let map: PerCpuHashMap<MapData, u64, ballast_common::CpuCounters> = map.try_into()?;
        for key in map.keys() {
            ids.push(key?);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test cgroups sharing directories this process created (a nested parent, the v2 mirror of
    /// the own v1 memory cgroup) leave nothing behind, whichever goes first, and a directory
    /// that was there before is left alone.
    #[test]
    fn shared_parents_go_with_the_last_cgroup_beneath_them() -> Result<()> {
        if !privileged() {
            return Ok(());
        }
        let mounts = hierarchy::read_mounts()?;
        let root = v2_root(&mounts)?;
        let own = own_v2_path()?;
        let parent = root
            .join(own.trim_start_matches('/'))
            .join(format!("ballast-shared-{}", std::process::id()));
        for first_goes_first in [true, false] {
            let first = TestCgroup::nested("ballast-shared", "a/x")?;
            let second = TestCgroup::nested("ballast-shared", "a/y")?;
            assert!(parent.join("a/x").is_dir() && parent.join("a/y").is_dir());
            let (early, late) = match first_goes_first {
                true => (first, second),
                false => (second, first),
            };
            let late_dir = late.v2_dir.clone();
            drop(early);
            assert!(late_dir.is_dir(), "the other cgroup's directory stays");
            drop(late);
            assert!(!parent.exists(), "{} left behind", parent.display());
        }
        std::fs::create_dir(&parent)?;
        drop(TestCgroup::nested("ballast-shared", "z")?);
        let kept = parent.is_dir();
        std::fs::remove_dir(&parent)?;
        assert!(kept, "a directory that was there before is left alone");
        Ok(())
    }
}
