//! What the agent knows right now: the last snapshot, the load of the last window and how the
//! signals are measured. Written by the collection loop, read by the HTTP handlers.

use std::sync::{Arc, Mutex, RwLock};

use crate::{
    cluster::names::PodDirectory,
    collect::{ebpf::RunStatsReport, sample::Mode, sample::Snapshot},
    load::{
        model::{LoadModel, Scores},
        score::ScoreConfig,
        window_load, WindowLoad,
    },
};

/// One consistent view, swapped whole under the lock so readers never see half an update.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub snapshot: Option<Snapshot>,
    pub load: Option<WindowLoad>,
    /// Load scores of the node and containers after the last window.
    pub scores: Option<Scores>,
    pub program_stats: Option<RunStatsReport>,
    /// Collections that failed since start (the previous view stays published).
    pub failed_collections: u64,
}

#[derive(Debug)]
pub struct AgentState {
    pub node_name: String,
    pub cpu_mode: Mode,
    /// How memory pressure is measured (set once the collector is up).
    pub memory_mode: Mode,
    /// How network pressure is measured (set once the collector is up).
    pub network_mode: Mode,
    pub fallback_reason: Option<String>,
    /// Whether run-queue wait excludes throttled time (`None` when wait is not measured).
    pub wait_excludes_throttling: Option<bool>,
    pub interval_seconds: f64,
    view: RwLock<View>,
    model: Mutex<LoadModel>,
    /// Names of this node's pods (cluster mode; empty otherwise).
    names: RwLock<Arc<PodDirectory>>,
}

impl AgentState {
    pub fn new(
        node_name: String,
        cpu_mode: Mode,
        fallback_reason: Option<String>,
        interval_seconds: f64,
    ) -> Self {
        Self {
            node_name,
            cpu_mode,
            memory_mode: Mode::Unavailable,
            network_mode: Mode::Unavailable,
            fallback_reason,
            wait_excludes_throttling: None,
            interval_seconds,
            view: RwLock::new(View::default()),
            model: Mutex::new(LoadModel::new(ScoreConfig::default())),
            names: RwLock::new(Arc::default()),
        }
    }

    /// Replaces the scoring configuration (validated by the caller); the model starts over.
    pub fn set_score_config(&mut self, config: ScoreConfig) {
        self.model = Mutex::new(LoadModel::new(config));
    }

    /// Publishes a new snapshot; the load is computed against the previous one.
    pub fn publish(&self, snapshot: Snapshot, program_stats: Option<RunStatsReport>) {
        let mut view = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let load = view
            .snapshot
            .as_ref()
            .and_then(|previous| window_load(previous, &snapshot));
        if let Some(load) = &load {
            let mut model = self
                .model
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            view.scores = Some(model.update(load, snapshot.at_ns));
        }
        view.load = load.or_else(|| view.load.take());
        view.snapshot = Some(snapshot);
        view.program_stats = program_stats;
    }

    pub fn record_failure(&self) {
        let mut view = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.failed_collections += 1;
    }

    /// The pod names known now (cheap: shared, replaced whole by [`AgentState::set_names`]).
    pub fn names(&self) -> Arc<PodDirectory> {
        self.names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_names(&self, directory: PodDirectory) {
        *self
            .names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(directory);
    }

    /// A copy of the current view (cheap enough at a scrape every few seconds, and it keeps the
    /// lock short).
    pub fn view(&self) -> View {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
