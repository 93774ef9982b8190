//! The kube client: from `--kubeconfig`, else `KUBECONFIG`, else the pod's service account
//! (in-cluster), with every request counted (`ballast_api_requests_total`).
//!
//! kube's built-in retry (429/503/504 with backoff, up to 15 times) is turned off: the election
//! bounds every call by its fence, and an eviction refused with 429 by a PodDisruptionBudget is
//! "not now" for this round, never something to hammer the API server with.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use kube::{
    client::ClientBuilder,
    config::{KubeConfigOptions, Kubeconfig},
    Client, Config,
};

use super::api_metrics::CountRequests;

/// How long connecting to the API server may take before a call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the client's configuration came from, for logs and errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    Flag(PathBuf),
    Environment(String),
    InCluster,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Flag(path) => write!(f, "--kubeconfig {}", path.display()),
            ConfigSource::Environment(value) => write!(f, "KUBECONFIG={value}"),
            ConfigSource::InCluster => f.write_str("the pod's service account (in-cluster)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the kubeconfig {path}: {source}; check the file given to --kubeconfig")]
    ReadKubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("the kubeconfig from {from} is not usable: {source}")]
    Kubeconfig {
        from: ConfigSource,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes API to talk to: not in a pod ({source}) and neither --kubeconfig nor KUBECONFIG is set; pass --kubeconfig, or run with --standalone to measure this node alone")]
    NotInCluster {
        source: kube::config::InClusterError,
    },
    #[error("cannot build a client for {url} (from {from}): {source}")]
    Build {
        url: String,
        from: ConfigSource,
        source: kube::Error,
    },
}

/// A connected client: what the agent and the `--from-cluster` commands use.
#[derive(Clone)]
pub struct ApiClient {
    pub client: Client,
    /// The API server's URL, for messages.
    pub url: String,
    pub source: ConfigSource,
    /// The kubeconfig context's namespace, or the service account's.
    pub default_namespace: String,
}

async fn load_config(kubeconfig: Option<&Path>) -> Result<(Config, ConfigSource), ClientError> {
    let options = KubeConfigOptions::default();
    let (from, loaded) = if let Some(path) = kubeconfig {
        let file = Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
            path: path.to_owned(),
            source,
        })?;
        let from = ConfigSource::Flag(path.to_owned());
        (from, Config::from_custom_kubeconfig(file, &options).await)
    } else if let Some(value) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let from = ConfigSource::Environment(value.to_string_lossy().into_owned());
        (from, Config::from_kubeconfig(&options).await)
    } else {
        let config = Config::incluster().map_err(|source| ClientError::NotInCluster { source })?;
        return Ok((config, ConfigSource::InCluster));
    };
    match loaded {
        Ok(config) => Ok((config, from)),
        Err(source) => Err(ClientError::Kubeconfig { from, source }),
    }
}

/// Builds the client; no request is made yet.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<ApiClient, ClientError> {
    let (mut config, source) = load_config(kubeconfig).await?;
    config.default_retry = false;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let url = config.cluster_url.to_string();
    let default_namespace = config.default_namespace.clone();
    let builder = ClientBuilder::try_from(config).map_err(|source_error| ClientError::Build {
        url: url.clone(),
        from: source.clone(),
        source: source_error,
    })?;
    let client = builder.with_layer(&CountRequests).build();
    Ok(ApiClient {
        client,
        url,
        source,
        default_namespace,
    })
}

/// A failed call, said for people: what it was, against which server, and what to do.
pub fn explain(error: &kube::Error, what: &str, api: &ApiClient) -> String {
    match error {
        kube::Error::Api(status) if status.code == 401 => format!(
            "{what}: the API server at {} refused our credentials (401) from {}; check the token",
            api.url, api.source
        ),
        kube::Error::Api(status) if status.code == 403 => format!(
            "{what}: forbidden (403) at {} for the credentials from {}: {}; grant them the permission (the agents': deploy/base/rbac.yaml; `ballast check --from-cluster`: its --help lists what it needs)",
            api.url, api.source, status.message
        ),
        kube::Error::Api(status) => format!(
            "{what}: the API server at {} answered {} {}: {}",
            api.url, status.code, status.reason, status.message
        ),
        other => format!(
            "{what}: cannot reach the API server at {} (from {}): {other}; check the address and the network",
            api.url, api.source
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_plain_http_kubeconfig_with_a_bearer_token_is_accepted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: http://127.0.0.1:6443\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: agent-1\n    namespace: ballast\ncurrent-context: double\nusers:\n- name: agent-1\n  user:\n    token: agent-1\n",
        )
        .expect("written");
        let api = connect(Some(&path)).await.expect("a client");
        assert_eq!(api.url, "http://127.0.0.1:6443/");
        assert_eq!(api.default_namespace, "ballast");
        assert_eq!(api.source, ConfigSource::Flag(path.clone()));
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_names_the_flag() {
        let message = match connect(Some(Path::new("/nonexistent/kubeconfig"))).await {
            Ok(_) => String::new(),
            Err(error) => error.to_string(),
        };
        assert!(message.contains("--kubeconfig"), "{message}");
        assert!(message.contains("/nonexistent/kubeconfig"), "{message}");
    }
}
