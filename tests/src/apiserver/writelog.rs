//! What the server saw: every request that is not a GET (accepted, refused, failed by a fault
//! or dropped), with when it was answered and who sent it; every request of any kind with its
//! authorization attributes (verb, group, resource, namespace, name: what RBAC judges); and the
//! number of requests of every kind per identity.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use super::request_info::RequestInfo;

/// One non-GET request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteRecord {
    /// When the server answered (after the change, if any, took effect), since it started.
    pub at: Duration,
    pub wall: SystemTime,
    /// The bearer token presented ("" without one).
    pub identity: String,
    pub method: String,
    pub path: String,
    /// The object's kind (`Lease`, `Pod`, ...); `Eviction` for `pods/NAME/eviction`; "" for a
    /// path that names no served resource.
    pub kind: String,
    /// "" for cluster-scoped objects.
    pub namespace: String,
    /// The object's name (for a create, the name it was created under; "" when refused before
    /// one was known).
    pub name: String,
    /// The HTTP status answered; 0 when the connection was closed without an answer (a dropped
    /// connection or a partition).
    pub status: u16,
}

/// One request of any kind, as an authorizer would see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// When the server answered (for a watch: when its stream began), since it started.
    pub at: Duration,
    /// The bearer token presented ("" without one).
    pub identity: String,
    pub info: RequestInfo,
    /// As in [`WriteRecord::status`].
    pub status: u16,
}

#[derive(Debug, Default)]
struct Log {
    writes: Vec<WriteRecord>,
    requests: Vec<RequestRecord>,
    counts: BTreeMap<String, u64>,
}

/// The server's log.
#[derive(Debug)]
pub struct WriteLog {
    started: Instant,
    log: Mutex<Log>,
}

impl WriteLog {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            log: Mutex::default(),
        }
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts a request of `identity` (requests without a token are not counted).
    pub fn count(&self, identity: Option<&str>) {
        if let Some(identity) = identity {
            *self.log().counts.entry(identity.to_string()).or_default() += 1;
        }
    }

    pub fn record(&self, mut record: WriteRecord) {
        record.at = self.since_start();
        record.wall = SystemTime::now();
        self.log().writes.push(record);
    }

    pub fn record_request(&self, mut record: RequestRecord) {
        record.at = self.since_start();
        self.log().requests.push(record);
    }

    pub fn writes(&self) -> Vec<WriteRecord> {
        self.log().writes.clone()
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log().requests.clone()
    }

    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.log().counts.clone()
    }
}
