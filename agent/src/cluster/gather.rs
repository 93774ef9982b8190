//! Load gathering: find the agents (pods in the agents' namespace with the agent label, Running,
//! with an IP; from the leader's pod watch, no extra API call) and GET every agent's /v1/load in
//! parallel, each with its own timeout and the shared bearer token.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use k8s_openapi::api::core::v1::Pod;

use super::{
    capture::Loads,
    loads::{assemble, node_loads, Answer, Exclusion},
};
use crate::serve::{api::LoadResponse, auth::TokenFile};

/// The default agent label selector.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=ballast";
/// At most this many agents are asked at once: 1,000 nodes whose agents all time out still take
/// only four timeouts.
const PARALLEL: usize = 256;
/// A /v1/load document larger than this is refused (a node with thousands of containers is
/// well under it).
const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;

/// An equality-based label selector (`key=value,key2=value2`): what the agents' label is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSelector(BTreeMap<String, String>);

impl std::str::FromStr for AgentSelector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let pairs = text
            .split(',')
            .map(|pair| {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    format!("`{pair}` in `{text}` is not key=value (only equality selectors are supported)")
                })?;
                let (key, value) = (key.trim(), value.trim().trim_start_matches('='));
                if key.is_empty() || key.ends_with('!') {
                    return Err(format!(
                        "`{pair}` in `{text}` is not key=value (only equality selectors are supported)"
                    ));
                }
                Ok((key.to_owned(), value.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self(pairs))
    }
}

impl AgentSelector {
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.0
            .iter()
            .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
    }
}

/// `http://IP:PORT/path` of an agent (IPv6 in brackets).
pub fn agent_url(ip: IpAddr, port: u16, path: &str) -> String {
    match ip {
        IpAddr::V4(ip) => format!("http://{ip}:{port}{path}"),
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}{path}"),
    }
}

/// What discovery needs of an agent's pod: a pod of the agents' namespace matching the
/// selector, Running, with a pod IP and a node, not terminating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentPod {
    pub node: String,
    pub ip: IpAddr,
    pub ready: bool,
    /// `status.startTime`, seconds since the epoch.
    pub started: Option<i64>,
}

impl AgentPod {
    /// `None` for any other pod.
    pub fn of(pod: &Pod, namespace: &str, selector: &AgentSelector) -> Option<Self> {
        let meta = &pod.metadata;
        if meta.namespace.as_deref() != Some(namespace)
            || meta.deletion_timestamp.is_some()
            || !selector.matches(meta.labels.as_ref())
        {
            return None;
        }
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        Some(Self {
            node: pod.spec.as_ref()?.node_name.clone()?,
            ip: status.pod_ip.as_deref()?.parse().ok()?,
            ready: status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            started: status.start_time.as_ref().map(|t| t.0.as_second()),
        })
    }
}

/// One agent's `/v1/load` per node. With two agents on a node (a rollout), the Ready one, then
/// the newest.
pub fn discover(agents: impl IntoIterator<Item = AgentPod>, port: u16) -> BTreeMap<String, String> {
    let mut best: BTreeMap<String, AgentPod> = BTreeMap::new();
    for agent in agents {
        match best.get(&agent.node) {
            Some(current) if (current.ready, current.started) >= (agent.ready, agent.started) => {}
            _ => {
                best.insert(agent.node.clone(), agent);
            }
        }
    }
    best.into_iter()
        .map(|(node, agent)| (node, agent_url(agent.ip, port, "/v1/load")))
        .collect()
}

/// Asks agents for their load.
#[derive(Clone)]
pub struct Gatherer {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Gatherer {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            // No idle connections kept: each would keep its read buffer, grown to a whole
            // document, until the next round (about 70 MB at 1,000 nodes); a round reconnects.
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build(connector),
            timeout,
        }
    }

    /// The answer of every node in `nodes` (its agent's document, or why there is none), each
    /// passed through `reduce` as soon as it comes: at most [`PARALLEL`] whole documents are
    /// held at once, not one per node.
    pub async fn gather<T: Send + 'static>(
        &self,
        nodes: &[String],
        agents: &BTreeMap<String, String>,
        authorization: Option<&HeaderValue>,
        reduce: impl Fn(&str, Answer) -> T + Clone + Send + 'static,
    ) -> BTreeMap<String, T> {
        // Owned inputs only: the futures run concurrently and must not borrow across awaits.
        let asks: Vec<_> = nodes
            .iter()
            .map(|node| {
                let gatherer = self.clone();
                let node = node.clone();
                let url = agents.get(&node).cloned();
                let authorization = authorization.cloned();
                let reduce = reduce.clone();
                async move {
                    let answer = match url {
                        Some(url) => gatherer.fetch(&url, authorization.as_ref()).await,
                        None => Answer::NoAgent,
                    };
                    let reduced = reduce(&node, answer);
                    (node, reduced)
                }
            })
            .collect();
        futures::stream::iter(asks)
            .buffer_unordered(PARALLEL)
            .collect()
            .await
    }

    async fn fetch(&self, url: &str, authorization: Option<&HeaderValue>) -> Answer {
        match tokio::time::timeout(self.timeout, self.get(url, authorization)).await {
            Ok(Ok(doc)) => Answer::Load(Box::new(doc)),
            Ok(Err(why)) => Answer::Failed(format!("{url}: {why}")),
            Err(_) => Answer::Failed(format!("{url}: no answer within {:?}", self.timeout)),
        }
    }

    async fn get(
        &self,
        url: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<LoadResponse, String> {
        let mut request = Request::get(url);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("bad request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(format!("answered {status}: {}", text.trim()));
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a /v1/load document: {e}"))
    }
}

/// Everything needed to ask the agents of a cluster for their load.
#[derive(Clone)]
pub struct AgentLoads {
    pub gatherer: Gatherer,
    /// The agents' namespace.
    pub namespace: String,
    pub selector: AgentSelector,
    pub port: u16,
    /// The shared token, read again every round (rotation).
    pub token: Option<TokenFile>,
    /// Loads older than this are stale (default: three of the agent's intervals).
    pub max_age: Option<Duration>,
}

impl AgentLoads {
    /// The loads of `nodes`, from `agents` (see [`AgentPod::of`]), and the nodes left out.
    pub async fn collect(
        &self,
        nodes: &[std::sync::Arc<k8s_openapi::api::core::v1::Node>],
        agents: impl IntoIterator<Item = AgentPod>,
    ) -> (Loads, BTreeMap<String, (Exclusion, String)>) {
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let agents = discover(agents, self.port);
        let authorization = match &self.token {
            Some(file) => match file.read() {
                Ok(token) => Some(token.authorization()),
                Err(error) => {
                    tracing::error!(%error, "asking the agents without a token; they will refuse");
                    None
                }
            },
            None => None,
        };
        let max_age = self.max_age;
        let reduce = move |node: &str, answer| node_loads(node, answer, max_age);
        let answers = self
            .gatherer
            .gather(&names, &agents, authorization.as_ref(), reduce)
            .await;
        assemble(answers)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn agent(name: &str, node: &str, ip: &str, phase: &str, ready: bool, started: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ballast",
                "labels": {"app.kubernetes.io/name": "ballast", "pod-template-generation": "1"}},
            "spec": {"nodeName": node, "containers": [{"name": "agent"}]},
            "status": {"phase": phase, "podIP": ip, "startTime": started,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .expect("a valid Pod")
    }

    #[test]
    fn selectors() {
        let s: AgentSelector = "app.kubernetes.io/name=ballast, tier = agent"
            .parse()
            .expect("valid");
        let labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "ballast".to_string()),
            ("tier".to_string(), "agent".to_string()),
        ]);
        assert!(s.matches(Some(&labels)));
        assert!(!s.matches(None));
        let one: AgentSelector = "a==b".parse().expect("== is equality too");
        assert_eq!(
            one,
            AgentSelector(BTreeMap::from([("a".into(), "b".into())]))
        );
        for bad in ["app", "a!=b", "=x", "a in (b)"] {
            assert!(bad.parse::<AgentSelector>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_running_agent_per_node() {
        let selector: AgentSelector = AGENT_SELECTOR.parse().expect("valid");
        let mut other_namespace = agent(
            "x",
            "node-z",
            "10.0.0.9",
            "Running",
            true,
            "2026-01-01T00:00:00Z",
        );
        other_namespace.metadata.namespace = Some("default".into());
        let mut unlabelled = agent(
            "y",
            "node-z",
            "10.0.0.9",
            "Running",
            true,
            "2026-01-01T00:00:00Z",
        );
        unlabelled.metadata.labels = None;
        let mut terminating = agent(
            "t",
            "node-y",
            "10.0.0.8",
            "Running",
            true,
            "2026-01-01T00:00:00Z",
        );
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = [
            agent(
                "a",
                "node-a",
                "10.0.0.1",
                "Running",
                true,
                "2026-01-01T00:00:00Z",
            ),
            // A rollout on node-b: the new agent is not Ready yet, the old one is.
            agent(
                "b-old",
                "node-b",
                "10.0.0.2",
                "Running",
                true,
                "2026-01-01T00:00:00Z",
            ),
            agent(
                "b-new",
                "node-b",
                "10.0.0.3",
                "Running",
                false,
                "2026-01-02T00:00:00Z",
            ),
            // Both Ready on node-c: the newer one.
            agent(
                "c-old",
                "node-c",
                "10.0.0.4",
                "Running",
                true,
                "2026-01-01T00:00:00Z",
            ),
            agent(
                "c-new",
                "node-c",
                "10.0.0.5",
                "Running",
                true,
                "2026-01-02T00:00:00Z",
            ),
            agent(
                "d",
                "node-d",
                "10.0.0.6",
                "Pending",
                false,
                "2026-01-01T00:00:00Z",
            ),
            agent(
                "e",
                "node-e",
                "fd00::7",
                "Running",
                true,
                "2026-01-01T00:00:00Z",
            ),
            agent(
                "f",
                "node-f",
                "not-an-ip",
                "Running",
                true,
                "2026-01-01T00:00:00Z",
            ),
            other_namespace,
            unlabelled,
            terminating,
        ];
        let found = discover(
            pods.iter()
                .filter_map(|p| AgentPod::of(p, "ballast", &selector)),
            9477,
        );
        assert_eq!(
            found,
            BTreeMap::from([
                (
                    "node-a".to_string(),
                    "http://10.0.0.1:9477/v1/load".to_string()
                ),
                (
                    "node-b".to_string(),
                    "http://10.0.0.2:9477/v1/load".to_string()
                ),
                (
                    "node-c".to_string(),
                    "http://10.0.0.5:9477/v1/load".to_string()
                ),
                (
                    "node-e".to_string(),
                    "http://[fd00::7]:9477/v1/load".to_string()
                ),
            ])
        );
    }

    /// A real HTTP agent on loopback: a document, a 401, a hang and a closed port.
    #[tokio::test]
    async fn answers_refusals_and_timeouts() {
        use axum::{routing::get, Router};

        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/examples/load-node-a.json"),
        )
        .expect("the example");
        let app = Router::new()
            .route(
                "/ok/v1/load",
                get(move |headers: http::HeaderMap| {
                    let doc = doc.clone();
                    async move {
                        if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes())
                            == Some(b"Bearer t0k3n")
                        {
                            (StatusCode::OK, doc)
                        } else {
                            (
                                StatusCode::UNAUTHORIZED,
                                "{\"error\":\"missing or wrong bearer token\"}".into(),
                            )
                        }
                    }
                }),
            )
            .route(
                "/slow/v1/load",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("bound");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let closed_port = closed.local_addr().expect("bound").port();
        drop(closed);

        let gatherer = Gatherer::new(Duration::from_millis(300));
        let agents = BTreeMap::from([
            ("node-a".to_string(), format!("http://{address}/ok/v1/load")),
            ("slow".to_string(), format!("http://{address}/slow/v1/load")),
            (
                "closed".to_string(),
                format!("http://127.0.0.1:{closed_port}/v1/load"),
            ),
        ]);
        let nodes: Vec<String> = ["node-a", "slow", "closed", "no-agent"]
            .map(String::from)
            .into();
        let right = HeaderValue::from_static("Bearer t0k3n");
        let answers = gatherer
            .gather(&nodes, &agents, Some(&right), |_, a| a)
            .await;
        assert!(matches!(&answers["node-a"], Answer::Load(doc) if doc.node == "node-a"));
        assert!(
            matches!(&answers["slow"], Answer::Failed(why) if why.contains("no answer within"))
        );
        assert!(
            matches!(&answers["closed"], Answer::Failed(why) if why.contains("request failed"))
        );
        assert!(matches!(answers["no-agent"], Answer::NoAgent));
        let wrong = HeaderValue::from_static("Bearer wrong");
        let refused = gatherer
            .gather(&nodes[..1], &agents, Some(&wrong), |_, a| a)
            .await;
        assert!(
            matches!(&refused["node-a"], Answer::Failed(why) if why.contains("401")),
            "{:?}",
            refused["node-a"]
        );
    }
}
