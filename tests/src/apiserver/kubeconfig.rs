//! Kubeconfig files that point a client (the agent, kubectl, an in-process `kube::Client`) at
//! the double with a bearer token equal to its identity.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// An identity doubles as a token and a file name: keep it to what is safe for both.
fn check_identity(identity: &str) -> Result<()> {
    let safe = identity
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'));
    if identity.is_empty() || !safe || identity.starts_with('.') {
        bail!("identity {identity:?} cannot be a token and a file name: use letters, digits and -_.:@");
    }
    Ok(())
}

/// The kubeconfig document (JSON, which every kubeconfig reader accepts as YAML).
pub fn document(url: &str, identity: &str) -> Result<Value> {
    check_identity(identity)?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "ballast-api-double", "cluster": {"server": url}}],
        "users": [{"name": identity, "user": {"token": identity}}],
        "contexts": [{"name": "ballast-api-double", "context": {
            "cluster": "ballast-api-double", "user": identity, "namespace": "default"
        }}],
        "current-context": "ballast-api-double",
    }))
}

/// Writes `DIR/IDENTITY.kubeconfig` and returns its path.
pub fn write(dir: &Path, url: &str, identity: &str) -> Result<PathBuf> {
    let text = serde_json::to_string_pretty(&document(url, identity)?)?;
    let path = dir.join(format!("{identity}.kubeconfig"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_must_be_safe_tokens_and_file_names() {
        assert!(document("http://127.0.0.1:1", "agent-0").is_ok());
        for bad in ["", "../x", "a b", ".hidden"] {
            assert!(document("http://127.0.0.1:1", bad).is_err(), "{bad}");
        }
        let doc = document("http://127.0.0.1:1", "agent-0").expect("valid identity");
        assert_eq!(doc["users"][0]["user"]["token"], "agent-0");
    }
}
