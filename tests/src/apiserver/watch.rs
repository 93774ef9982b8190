//! Watches: a chunked response of newline-delimited JSON `WatchEvent`s. A watch from a
//! resourceVersion replays the retained changes after it, then streams live ones; one from
//! "0" (or none) starts with the current objects as ADDED; `sendInitialEvents` ends that
//! initial state with the `k8s.io/initial-events-end` bookmark. A resourceVersion older than
//! the retained history answers a single ERROR event carrying a 410 Expired Status, as the
//! watch cache does. Objects that start or stop matching the selectors arrive as ADDED or
//! DELETED. Bookmarks (when allowed) come every `bookmark_interval`; the watch ends cleanly
//! after `timeoutSeconds`, and is broken mid-stream when its identity is partitioned.

use std::{collections::VecDeque, io, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::{json, Value};
use tokio::{
    sync::{mpsc, watch as signal},
    time::{interval_at, sleep_until, Instant, Interval},
};

use super::{
    list::Filter,
    resource::Kind,
    status::ApiError,
    store::{Change, EventType},
    Shared,
};

/// The watch parameters besides the filter.
#[derive(Clone, Debug)]
pub struct WatchParams {
    pub resource_version: Option<String>,
    pub timeout: Duration,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

fn line(event: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(event).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

struct Stream {
    shared: Arc<Shared>,
    kind: Kind,
    filter: Filter,
    /// Changes at or below this were replayed from the history (or precede the watch).
    start_rv: u64,
    pending: VecDeque<Bytes>,
    /// `None` once the watch has nothing more to send.
    changes: Option<mpsc::UnboundedReceiver<Arc<Change>>>,
    deadline: Instant,
    bookmarks: Option<Interval>,
    partitions: signal::Receiver<u64>,
    identity: Option<String>,
}

enum Wake {
    Timeout,
    Change(Option<Arc<Change>>),
    Bookmark,
    PartitionChanged,
}

impl Stream {
    /// The event a change makes for this watch, if any.
    fn event(&self, change: &Change) -> Option<Value> {
        if change.kind != self.kind || change.rv <= self.start_rv {
            return None;
        }
        let matches = |object: &Value| self.filter.matches(&change.key, object);
        let before = change.previous.as_ref().is_some_and(matches);
        let (kind, object) = match change.event {
            EventType::Added => (
                matches(&change.object).then_some(EventType::Added)?,
                change.object.clone(),
            ),
            EventType::Deleted => (before.then_some(EventType::Deleted)?, change.object.clone()),
            EventType::Modified => match (before, matches(&change.object)) {
                (true, true) => (EventType::Modified, change.object.clone()),
                (false, true) => (EventType::Added, change.object.clone()),
                (true, false) => {
                    // The object left the selection: the watch cache sends its previous state
                    // at the new resourceVersion.
                    let mut previous = change.previous.clone()?;
                    previous["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                    (EventType::Deleted, previous)
                }
                (false, false) => return None,
            },
        };
        Some(json!({"type": kind.wire(), "object": object}))
    }

    fn push_change(&mut self, change: &Change) {
        if let Some(event) = self.event(change) {
            self.pending.push_back(line(&event));
        }
    }

    fn bookmark(kind: Kind, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(&json!({"type": "BOOKMARK", "object": {
            "kind": kind.kind(), "apiVersion": kind.api_version(), "metadata": metadata
        }}))
    }

    /// Queues a bookmark at the store's revision, after every change up to it: the channel is
    /// drained under the store lock, so no earlier change can still be in flight.
    fn push_bookmark(&mut self) {
        let shared = Arc::clone(&self.shared);
        let store = shared.store();
        let mut drained = Vec::new();
        if let Some(changes) = self.changes.as_mut() {
            while let Ok(change) = changes.try_recv() {
                drained.push(change);
            }
        }
        let rv = store.revision();
        drop(store);
        for change in drained {
            self.push_change(&change);
        }
        self.pending.push_back(Self::bookmark(self.kind, rv, false));
    }

    fn cut_off(&self) -> bool {
        self.shared.faults.is_partitioned(self.identity.as_deref())
    }

    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        loop {
            if self.cut_off() {
                self.changes = None;
                self.pending.clear();
                return Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the watch's client is partitioned from the server",
                )));
            }
            if let Some(line) = self.pending.pop_front() {
                return Some(Ok(line));
            }
            let wake = {
                let Stream {
                    changes,
                    deadline,
                    bookmarks,
                    partitions,
                    ..
                } = self;
                let changes = changes.as_mut()?;
                let bookmark = async {
                    match bookmarks {
                        Some(interval) => {
                            interval.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = sleep_until(*deadline) => Wake::Timeout,
                    change = changes.recv() => Wake::Change(change),
                    _ = bookmark => Wake::Bookmark,
                    _ = partitions.changed() => Wake::PartitionChanged,
                }
            };
            match wake {
                Wake::Timeout | Wake::Change(None) => return None,
                Wake::Change(Some(change)) => self.push_change(&change),
                Wake::Bookmark => self.push_bookmark(),
                Wake::PartitionChanged => {}
            }
        }
    }
}

/// Starts a watch of `kind` for `identity`.
pub fn watch(
    shared: &Arc<Shared>,
    kind: Kind,
    filter: Filter,
    params: &WatchParams,
    identity: Option<String>,
) -> Result<Response, ApiError> {
    if params.send_initial_events && !params.bookmarks {
        return Err(ApiError::bad_request(
            "sendInitialEvents is forbidden for watch unless allowWatchBookmarks=true",
        ));
    }
    let requested = match params.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => Some(
            rv.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))?,
        ),
    };
    let period = shared.config.bookmark_interval;
    let mut store = shared.store();
    let mut stream = Stream {
        shared: Arc::clone(shared),
        kind,
        filter,
        start_rv: store.revision(),
        pending: VecDeque::new(),
        changes: Some(store.subscribe(&[kind])),
        deadline: Instant::now() + params.timeout,
        bookmarks: params
            .bookmarks
            .then(|| interval_at(Instant::now() + period, period)),
        partitions: shared.faults.partition_changes(),
        identity,
    };
    match requested {
        Some(rv) if !params.send_initial_events => {
            let Some(replay) = store.changes_after(rv) else {
                let expired = ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    store.compacted()
                ));
                let error = line(&json!({"type": "ERROR", "object": expired.status()}));
                return Ok(stream_response(Body::from(error)));
            };
            let replay: Vec<Arc<Change>> = replay.cloned().collect();
            stream.start_rv = rv;
            for change in &replay {
                stream.push_change(change);
            }
        }
        _ => {
            for (key, object) in store.objects(kind) {
                if stream.filter.matches(key, object) {
                    let added = line(&json!({"type": "ADDED", "object": object}));
                    stream.pending.push_back(added);
                }
            }
            if params.send_initial_events {
                let end = Stream::bookmark(kind, store.revision(), true);
                stream.pending.push_back(end);
            }
        }
    }
    drop(store);
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let item = stream.next().await?;
        Some((item, stream))
    });
    Ok(stream_response(Body::from_stream(body)))
}

fn stream_response(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
