//! One-shot reads of the whole cluster for the commands that look at it once (`ballast plan
//! --from-cluster`, `ballast check --from-cluster`), where the leader keeps watches instead:
//! every object of a kind across all namespaces, 500 per page as the watches' lists page, and a
//! refusal said for people (which call, which server, what to do).

use k8s_openapi::api::{
    core::v1::{Node, Pod},
    policy::v1::PodDisruptionBudget,
};
use kube::{api::ListParams, Api, Resource};
use serde::de::DeserializeOwned;

use super::client::{self, ApiClient};

/// A list that failed; the message names the resource, the server and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ListError(String);

/// Every object of `K`, cluster-wide (`what` names the resource in errors: "pods").
pub async fn list_all<K>(api: &ApiClient, what: &str) -> Result<Vec<K>, ListError>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let objects: Api<K> = Api::all(api.client.clone());
    let mut params = ListParams::default().limit(500);
    let mut all = Vec::new();
    loop {
        let page = objects
            .list(&params)
            .await
            .map_err(|error| ListError(client::explain(&error, &format!("listing {what}"), api)))?;
        all.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(all),
        }
    }
}

/// What a snapshot is captured from: every node, pod and PodDisruptionBudget.
pub struct Objects {
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub pdbs: Vec<PodDisruptionBudget>,
}

impl Objects {
    pub async fn read(api: &ApiClient) -> Result<Self, ListError> {
        Ok(Self {
            nodes: list_all(api, "nodes").await?,
            pods: list_all(api, "pods").await?,
            pdbs: list_all(api, "poddisruptionbudgets").await?,
        })
    }
}
