//! Where the leader's webhook is, for a follower relaying an Alertmanager call
//! ([`crate::serve::alerts::forward`]): the leader's identity is its pod's name, so its address
//! is that pod's IP (one GET, remembered briefly: notifications come in bursts) and the agents'
//! port.

use std::{
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::gather::agent_url;
use crate::serve::alerts::forward::LeaderLocator;

/// How long a leader's address is reused without asking the API again.
const REMEMBERED: Duration = Duration::from_secs(30);

pub struct PodLocator {
    pods: Api<Pod>,
    namespace: String,
    port: u16,
    /// `(leader, url, when looked up)`.
    last: Mutex<Option<(String, String, Instant)>>,
}

impl PodLocator {
    /// The agents' pods in `namespace`, serving on `port`.
    pub fn new(pods: Api<Pod>, namespace: String, port: u16) -> Self {
        Self {
            pods,
            namespace,
            port,
            last: Mutex::new(None),
        }
    }

    fn remembered(&self, leader: &str) -> Option<String> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()
            .filter(|(who, _, at)| who == leader && at.elapsed() < REMEMBERED)
            .map(|(_, url, _)| url.clone())
    }

    async fn look_up(&self, leader: &str) -> Result<String, String> {
        if let Some(url) = self.remembered(leader) {
            return Ok(url);
        }
        let namespace = &self.namespace;
        let pod = self
            .pods
            .get_opt(leader)
            .await
            .map_err(|e| format!("reading its pod {namespace}/{leader} failed: {e}"))?
            .ok_or_else(|| format!("its pod {namespace}/{leader} does not exist"))?;
        let ip = pod
            .status
            .and_then(|s| s.pod_ip)
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .ok_or_else(|| format!("its pod {namespace}/{leader} has no IP yet"))?;
        let url = agent_url(ip, self.port, "/v1/alerts");
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((leader.to_owned(), url.clone(), Instant::now()));
        Ok(url)
    }
}

impl LeaderLocator for PodLocator {
    fn locate<'a>(&'a self, leader: &'a str) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.look_up(leader))
    }

    fn forget(&self, leader: &str) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref().is_some_and(|(who, _, _)| who == leader) {
            *last = None;
        }
    }
}
