//! The deployment artefacts in `deploy/` and the real tools that check them: kustomize (the
//! kustomize library, through the test venv), kubernetes-validate, promtool and amtool.
//!
//! Shared by the offline validation (`tests/deploy.rs`) and the end-to-end test that runs every
//! dashboard query and recording rule against a real Prometheus: [`dashboard_queries`],
//! [`recording_rules`] and [`expand`] give it the expressions exactly as Grafana would send them.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// Where `cargo xtask setup` creates the venv with kustomize and kubernetes-validate (keep in
/// step with xtask/src/setup.rs); `BALLAST_VENV` overrides it.
const DEFAULT_VENV: &str = "/opt/ballast-venv";

pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

pub fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// A copy of deploy/ in a temporary directory with test tokens in the overlays' secrets/, as a
/// user's checkout looks after following deploy/README.md. Tokens of the work tree stay behind.
pub struct DeployCopy {
    dir: tempfile::TempDir,
}

impl DeployCopy {
    pub fn new(with_tokens: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        copy_tree(&deploy_dir(), dir.path())?;
        if with_tokens {
            for overlay in ["dry-run", "production"] {
                let secrets = dir.path().join("overlays").join(overlay).join("secrets");
                std::fs::write(secrets.join("load-token"), format!("{overlay}-load-token"))?;
                std::fs::write(
                    secrets.join("alerts-token"),
                    format!("{overlay}-alerts-token"),
                )?;
            }
        }
        Ok(Self { dir })
    }

    pub fn path(&self, kustomization: &str) -> PathBuf {
        self.dir.path().join(kustomization)
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if from.file_name().is_none_or(|n| n != "secrets")
            || entry.file_name() == ".gitignore"
        {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The programs the deployment checks run.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The venv's interpreter, which has the kustomize library (pykustomize).
    pub python: PathBuf,
    pub kubernetes_validate: PathBuf,
    pub promtool: PathBuf,
    pub amtool: PathBuf,
}

impl Tools {
    /// The tools, or `None` (with a message) when one is missing outside CI. With `CI=true` a
    /// missing tool is a failure: the suite exists to run these checks for real.
    pub fn find() -> Option<Self> {
        match Self::locate() {
            Ok(tools) => Some(tools),
            Err(missing) => {
                if crate::in_ci() {
                    panic!("CI=true but {missing}");
                }
                eprintln!("{missing}: deployment checks not run");
                None
            }
        }
    }

    fn locate() -> Result<Self, String> {
        let venv = std::env::var_os("BALLAST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
        let in_venv = |name: &str| {
            let path = venv.join("bin").join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} is missing; run `cargo xtask setup` (it creates the venv)",
                    path.display()
                ))
            }
        };
        Ok(Self {
            python: in_venv("python")?,
            kubernetes_validate: in_venv("kubernetes-validate")?,
            promtool: on_path("promtool", "prometheus")?,
            amtool: on_path("amtool", "prometheus-alertmanager")?,
        })
    }

    /// `kustomize build DIR`: the rendered objects, or kustomize's own error.
    pub fn kustomize_build(&self, dir: &Path) -> Result<Vec<Value>> {
        let script = workspace_root().join("tests/tools/kustomize_build.py");
        let output = run(Command::new(&self.python).arg(&script).arg(dir))?;
        if !output.status.success() {
            bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
        }
        yaml_documents(&String::from_utf8_lossy(&output.stdout))
            .with_context(|| format!("parsing the output of kustomize build {}", dir.display()))
    }
}

/// The program `name` on PATH, or what to do: `package` is the Debian package that has it,
/// which `cargo xtask setup` installs.
pub fn on_path(name: &str, package: &str) -> Result<PathBuf, String> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| {
            format!("{name} is not on PATH; run `cargo xtask setup` (Debian package {package})")
        })
}

/// Runs `command` to completion; an error only when it cannot be started.
pub fn run(command: &mut Command) -> Result<Output> {
    command
        .output()
        .with_context(|| format!("starting {command:?}"))
}

/// Every document of a multi-document YAML stream.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    Ok(serde_saphyr::from_multiple::<Value>(text)?)
}

pub fn read_yaml(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The Grafana dashboards, by file.
pub fn dashboards() -> Result<Vec<(PathBuf, Value)>> {
    let dir = deploy_dir().join("grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|e| e == "json"));
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let dashboard: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Ok((path, dashboard))
        })
        .collect()
}

/// One query a dashboard sends, before Grafana expands its variables.
#[derive(Clone, Debug)]
pub struct Query {
    pub dashboard: String,
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

/// Every panel's every target (panels nested in collapsed rows too).
pub fn dashboard_queries() -> Result<Vec<Query>> {
    let mut queries = Vec::new();
    for (path, dashboard) in dashboards()? {
        let title =
            text(&dashboard, "title").ok_or_else(|| anyhow!("{} has no title", path.display()))?;
        for panel in panels(&dashboard) {
            let panel_title = text(panel, "title").unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = text(target, "expr").ok_or_else(|| {
                    anyhow!("{title}: panel {panel_title:?} has a target without expr")
                })?;
                queries.push(Query {
                    dashboard: title.to_string(),
                    panel: panel_title.to_string(),
                    ref_id: text(target, "refId").unwrap_or_default().to_string(),
                    expr: expr.to_string(),
                });
            }
        }
    }
    Ok(queries)
}

/// A dashboard variable filled from Prometheus: Grafana's `label_values(SELECTOR, LABEL)`.
#[derive(Clone, Debug)]
pub struct LabelVariable {
    pub dashboard: String,
    pub name: String,
    /// PromQL series selector, before Grafana expands the variables in it.
    pub selector: String,
    pub label: String,
}

/// Every variable of type `query` of every dashboard.
pub fn dashboard_variables() -> Result<Vec<LabelVariable>> {
    let mut variables = Vec::new();
    for (path, dashboard) in dashboards()? {
        let title =
            text(&dashboard, "title").ok_or_else(|| anyhow!("{} has no title", path.display()))?;
        let list = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten();
        for variable in list.filter(|v| v["type"] == "query") {
            let name = text(variable, "name").unwrap_or_default();
            let query = variable["query"]["query"].as_str().unwrap_or_default();
            let (selector, label) = query
                .trim()
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .ok_or_else(|| {
                    anyhow!(
                        "{title}: variable {name} is not label_values(SELECTOR, LABEL): {query:?}"
                    )
                })?;
            variables.push(LabelVariable {
                dashboard: title.to_string(),
                name: name.to_string(),
                selector: selector.trim().to_string(),
                label: label.trim().to_string(),
            });
        }
    }
    Ok(variables)
}

/// A dashboard's panels, rows' nested panels included.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Values for every variable the dashboards use when nothing is selected: "All" for the
/// templated labels, and the intervals Grafana would pick for a one-hour range.
pub fn default_variables() -> BTreeMap<String, String> {
    [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "1h"),
        ("cluster", ".*"),
        ("node", ".*"),
        ("namespace", ".*"),
        ("pod", ".*"),
        ("workload", ".*"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `expr` with Grafana's `$name` and `${name}` replaced from `values`; an unknown variable is an
/// error (a query that could never be sent as written).
pub fn expand(expr: &str, values: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in {expr:?}"))?;
            (&braced[..end], end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = values
            .get(name)
            .ok_or_else(|| anyhow!("unknown variable ${name} in {expr:?}"))?;
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The rule groups of `deploy/rules/ballast.rules.yaml`.
pub fn rule_groups() -> Result<Value> {
    let rules = read_yaml(&deploy_dir().join("rules/ballast.rules.yaml"))?;
    Ok(rules["groups"].clone())
}

/// Every recording rule: (name it records, expression).
pub fn recording_rules() -> Result<Vec<(String, String)>> {
    rules_with("record")
}

/// Every alerting rule: (alert name, expression).
pub fn alerting_rules() -> Result<Vec<(String, String)>> {
    rules_with("alert")
}

fn rules_with(kind: &str) -> Result<Vec<(String, String)>> {
    let groups = rule_groups()?;
    let mut out = Vec::new();
    for group in groups.as_array().into_iter().flatten() {
        for rule in group["rules"].as_array().into_iter().flatten() {
            if let Some(name) = text(rule, kind) {
                let expr = text(rule, "expr").ok_or_else(|| anyhow!("rule {name} has no expr"))?;
                out.push((name.to_string(), expr.to_string()));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_replaces_grafana_variables_and_rejects_unknown_ones() -> Result<()> {
        let variables = default_variables();
        assert_eq!(
            expand(
                "rate(x{node=~\"$node\"}[$__rate_interval]) / ${node}",
                &variables
            )?,
            "rate(x{node=~\".*\"}[1m]) / .*"
        );
        assert!(expand("x{a=\"$nope\"}", &variables).is_err());
        assert!(expand("x{a=\"${node\"}", &variables).is_err());
        Ok(())
    }
}
