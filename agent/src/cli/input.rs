//! What the planning commands read: a cluster snapshot, a policy, JSON files, the time, and
//! (`--from-cluster`) the API, on a runtime of its own.

use std::{
    future::Future,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};

use crate::rebalance::{ClusterSnapshot, Policy, Timestamp};

pub fn read(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = read(path, what)?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a valid {what} (format: agent/src/rebalance/README.md)",
            path.display()
        )
    })
}

/// A snapshot that parses and passes [`ClusterSnapshot::validate`].
pub fn snapshot(path: &Path) -> Result<ClusterSnapshot> {
    let snapshot: ClusterSnapshot = read_json(path, "cluster snapshot")?;
    snapshot
        .validate()
        .with_context(|| format!("{} is not a usable cluster snapshot", path.display()))?;
    Ok(snapshot)
}

/// The policy in `path`, or the defaults.
pub fn policy(path: Option<&Path>) -> Result<Policy> {
    match path {
        Some(path) => Policy::from_toml(&read(path, "policy")?)
            .with_context(|| format!("{} is not a usable policy", path.display())),
        None => Ok(Policy::default()),
    }
}

/// `--now`, or the clock.
pub fn now(seconds: Option<i64>) -> Result<Timestamp> {
    match seconds {
        Some(seconds) => Ok(Timestamp(seconds)),
        None => Ok(Timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .context("the system clock is before 1970; pass --now")?
                .as_secs() as i64,
        )),
    }
}

/// Runs `reading` (calls to the API) to completion on a single-threaded runtime: the planning
/// commands are synchronous around one read of the cluster.
pub fn block_on<T>(reading: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime failed")?
        .block_on(reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_policy_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/policy.toml");
        let policy = policy(Some(&path)).expect("the shipped policy is usable");
        assert_eq!(policy, Policy::default());
    }

    #[test]
    fn malformed_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("snap.json");
        std::fs::write(&path, r#"{"nodes": [{"name": "a"}], "pods": []}"#).expect("written");
        let text = format!("{:#}", snapshot(&path).expect_err("malformed"));
        assert!(
            text.contains("snap.json is not a valid cluster snapshot"),
            "{text}"
        );
        assert!(text.contains("missing field `allocatable`"), "{text}");
        let text = format!(
            "{:#}",
            snapshot(&dir.path().join("absent.json")).expect_err("missing")
        );
        assert!(
            text.contains("cannot read the cluster snapshot file"),
            "{text}"
        );
        std::fs::write(
            &path,
            r#"{"nodes": [], "pods": [
                {"namespace": "a", "name": "p", "uid": "u", "qos": "Burstable", "ready": true, "start_time": 0},
                {"namespace": "a", "name": "q", "uid": "u", "qos": "Burstable", "ready": true, "start_time": 0}
            ]}"#,
        )
        .expect("written");
        let text = format!("{:#}", snapshot(&path).expect_err("duplicate uid"));
        assert!(
            text.contains("snap.json is not a usable cluster snapshot")
                && text.contains("pod uid \"u\" appears twice"),
            "{text}"
        );
        let policy_path = dir.path().join("policy.toml");
        std::fs::write(&policy_path, "[eligibility]\nmin_replica = 2\n").expect("written");
        let text = format!("{:#}", policy(Some(&policy_path)).expect_err("typo"));
        assert!(
            text.contains("policy.toml is not a usable policy") && text.contains("min_replica"),
            "{text}"
        );
    }
}
