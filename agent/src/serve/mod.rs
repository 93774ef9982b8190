//! Serving HTTP: /metrics, /v1/load, /healthz.

pub mod exposition;
