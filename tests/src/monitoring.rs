//! Debian's Prometheus and Alertmanager, run for real on loopback for the end-to-end test
//! (`tests/e2e.rs`). Their configurations are derived from the shipped ones
//! (`deploy/monitoring/prometheus.yml`, `deploy/monitoring/alertmanager.yml`,
//! `deploy/rules/ballast.rules.yaml`) with what a test must change: static targets instead of
//! Kubernetes discovery, second-long intervals, loopback addresses, an alert's `for:` shortened.
//! Each server has a temp dir of its own (configuration, storage, log) and a free 127.0.0.1 port,
//! and is stopped on drop (SIGTERM, SIGKILL after 5 s), also on panic; its files are kept when
//! the test fails or `BALLAST_E2E_KEEP` is set.
//!
//! Configuration files are written as JSON, which is YAML too.

use std::{
    fs::File,
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::{deploy, in_ci};

/// The two programs, from the Debian packages `cargo xtask setup` installs.
#[derive(Clone, Debug)]
pub struct Programs {
    pub prometheus: PathBuf,
    pub alertmanager: PathBuf,
}

impl Programs {
    /// The programs, or `None` (with a message) when one is missing outside CI. With `CI=true`
    /// a missing program is a failure: the suite exists to run this for real.
    pub fn find() -> Option<Self> {
        let found = deploy::on_path("prometheus", "prometheus").and_then(|prometheus| {
            // Debian names Alertmanager's binary after its package.
            deploy::on_path("prometheus-alertmanager", "prometheus-alertmanager").map(
                |alertmanager| Self {
                    prometheus,
                    alertmanager,
                },
            )
        });
        match found {
            Ok(programs) => Some(programs),
            Err(missing) => {
                if in_ci() {
                    panic!("CI=true but {missing}");
                }
                eprintln!("{missing}: end-to-end test not run");
                None
            }
        }
    }
}

/// A port free on 127.0.0.1 now (the server binds it a moment later; a lost race shows as the
/// server exiting, with its log in the error).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// One server process with its directory.
struct Server {
    name: &'static str,
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts `program ARGS` (stdout and stderr to `DIR/NAME.log`) and waits until
    /// `/-/ready` answers 200.
    fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: tempfile::TempDir,
        address: String,
    ) -> Result<Self> {
        let log = File::create(dir.path().join(format!("{name}.log")))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = Self {
            name,
            child,
            address,
            dir,
        };
        let timeout = Duration::from_secs(30);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited while starting ({status}); its log ends:\n{}",
                    server.log_tail(30)
                );
            }
            if let Ok(response) = ureq::get(&server.url("/-/ready")).call() {
                if response.status() == 200 {
                    return Ok(server);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{name} not ready within {timeout:?}; its log ends:\n{}",
                    server.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.dir.path().join(format!("{}.log", self.name))) {
            let _ = file.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// GET `path` with `query`, the JSON body whatever the status (the APIs explain errors in
    /// it).
    fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<(u16, Value)> {
        let mut request = ureq::get(&self.url(path));
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        let mut response = request
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .with_context(|| format!("GET {path} of {}", self.name))?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_json::<Value>().with_context(|| {
            format!(
                "{} answered GET {path} with {status} and no JSON",
                self.name
            )
        })?;
        Ok((status, body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: signalling our own child process, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() || std::env::var_os("BALLAST_E2E_KEEP").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "{} files (configuration, log) kept in {}",
                self.name,
                self.dir.path().display()
            );
        }
    }
}

/// An agent Prometheus scrapes: its address and the node it runs on (the `node` label, which
/// the shipped configuration takes from the pod's node by relabelling).
#[derive(Clone, Debug)]
pub struct ScrapeTarget {
    pub node: String,
    pub address: String,
}

/// `deploy/monitoring/prometheus.yml` for a test: every `interval` (scrape, evaluation, scrape
/// timeout), the rule file `rules`, Alertmanager at `alertmanager`, and the `ballast` job with
/// static targets labelled as its relabelling would label them, in place of Kubernetes
/// discovery. Everything else is kept (job name, metrics path, honor_labels, external labels).
pub fn prometheus_config(
    shipped: &Value,
    targets: &[ScrapeTarget],
    rules: &Path,
    alertmanager: &str,
    interval: &str,
) -> Result<Value> {
    let mut config = shipped.clone();
    let global = config
        .get_mut("global")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("prometheus.yml has no `global` section"))?;
    for key in ["scrape_interval", "evaluation_interval", "scrape_timeout"] {
        global.insert(key.into(), json!(interval));
    }
    config["rule_files"] = json!([rules.display().to_string()]);
    config["alerting"]["alertmanagers"] =
        json!([{"static_configs": [{"targets": [alertmanager]}]}]);
    let job = config["scrape_configs"]
        .as_array_mut()
        .and_then(|jobs| {
            jobs.iter_mut()
                .find(|job| job["job_name"] == json!("ballast"))
        })
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("prometheus.yml has no scrape job `ballast`"))?;
    if job.remove("kubernetes_sd_configs").is_none() {
        bail!("the `ballast` job of prometheus.yml no longer discovers pods; update the e2e configuration");
    }
    job.remove("relabel_configs");
    let statics: Vec<Value> = targets
        .iter()
        .map(|t| json!({"targets": [t.address], "labels": {"node": t.node}}))
        .collect();
    job.insert("static_configs".into(), json!(statics));
    Ok(config)
}

/// The rule groups of `deploy/rules` as a rule file in which alert `alert` waits `for_` instead
/// of its own `for:` (every other rule unchanged).
pub fn rules_with_shorter_for(groups: &Value, alert: &str, for_: &str) -> Result<Value> {
    let mut groups = groups.clone();
    let rule = groups
        .as_array_mut()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array_mut().into_iter().flatten())
        .find(|rule| rule["alert"] == json!(alert))
        .ok_or_else(|| anyhow!("deploy/rules has no alert {alert}"))?;
    if rule.get("for").is_none() {
        bail!("alert {alert} has no `for:` to shorten");
    }
    rule["for"] = json!(for_);
    Ok(json!({ "groups": groups }))
}

/// `deploy/monitoring/alertmanager.yml` for a test: the `ballast` receiver's webhook once per
/// URL in `webhooks` (each agent, as a Service over all agents would reach any of them), with
/// the token from `credentials_file`, and its route's group interval `group_interval`.
pub fn alertmanager_config(
    shipped: &Value,
    webhooks: &[String],
    credentials_file: &Path,
    group_interval: &str,
) -> Result<Value> {
    let mut config = shipped.clone();
    let route = config["route"]["routes"]
        .as_array_mut()
        .and_then(|routes| {
            routes
                .iter_mut()
                .find(|r| r["receiver"] == json!("ballast"))
        })
        .ok_or_else(|| anyhow!("alertmanager.yml has no route to the `ballast` receiver"))?;
    route["group_interval"] = json!(group_interval);
    let receiver = config["receivers"]
        .as_array_mut()
        .and_then(|receivers| receivers.iter_mut().find(|r| r["name"] == json!("ballast")))
        .ok_or_else(|| anyhow!("alertmanager.yml has no receiver `ballast`"))?;
    let template = receiver["webhook_configs"]
        .get(0)
        .cloned()
        .ok_or_else(|| anyhow!("the `ballast` receiver has no webhook_config"))?;
    if template
        .pointer("/http_config/authorization/credentials_file")
        .is_none()
    {
        bail!("the `ballast` webhook no longer reads its token from a credentials_file; update the e2e configuration");
    }
    let configs: Vec<Value> = webhooks
        .iter()
        .map(|url| {
            let mut config = template.clone();
            config["url"] = json!(url);
            config["http_config"]["authorization"]["credentials_file"] =
                json!(credentials_file.display().to_string());
            config
        })
        .collect();
    receiver["webhook_configs"] = json!(configs);
    Ok(config)
}

/// A running Prometheus.
pub struct Prometheus {
    server: Server,
}

impl Prometheus {
    /// Writes `rules` and the shipped configuration made for a test by [`prometheus_config`]
    /// (scraping `targets`, alerting `alertmanager`, every `interval`) into a temp dir, and
    /// starts Prometheus on a free loopback port.
    pub fn start(
        program: &Path,
        targets: &[ScrapeTarget],
        alertmanager: &str,
        rules: &Value,
        interval: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let rules_file = dir.path().join("ballast.rules.yaml");
        write_json(&rules_file, rules)?;
        let shipped = deploy::read_yaml(&deploy::deploy_dir().join("monitoring/prometheus.yml"))?;
        let config = prometheus_config(&shipped, targets, &rules_file, alertmanager, interval)?;
        let config_file = dir.path().join("prometheus.yml");
        write_json(&config_file, &config)?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let storage = dir.path().join("data");
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", storage.display()),
            format!("--web.listen-address={address}"),
            "--log.level=warn".to_string(),
        ];
        Ok(Self {
            server: Server::start("prometheus", program, &args, dir, address)?,
        })
    }

    /// `/api/v1/query` at the present time: the result vector (a scalar as one element), or
    /// Prometheus' own error.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>> {
        let (status, body) = self.server.get_json("/api/v1/query", &[("query", expr)])?;
        if body["status"] != json!("success") {
            bail!(
                "Prometheus answered {status}: {} {}",
                body["errorType"].as_str().unwrap_or("?"),
                body["error"].as_str().unwrap_or("(no error message)")
            );
        }
        let data = &body["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().cloned().unwrap_or_default(),
            Some("scalar" | "string") => vec![data["result"].clone()],
            other => bail!("unexpected resultType {other:?} for {expr}"),
        })
    }

    /// `/api/v1/label/LABEL/values` of the series `selector` matches over the last `range`, as
    /// Grafana fills a `label_values(SELECTOR, LABEL)` variable for its time range.
    pub fn label_values(
        &self,
        label: &str,
        selector: &str,
        range: Duration,
    ) -> Result<Vec<String>> {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .saturating_sub(range)
            .as_secs()
            .to_string();
        let path = format!("/api/v1/label/{label}/values");
        let (status, body) = self
            .server
            .get_json(&path, &[("match[]", selector), ("start", &start)])?;
        if body["status"] != json!("success") {
            bail!(
                "Prometheus answered {status}: {}",
                body["error"].as_str().unwrap_or("(no error message)")
            );
        }
        Ok(body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect())
    }

    /// `/api/v1/alerts`: the alerts of the alerting rules, pending and firing.
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let (_, body) = self.server.get_json("/api/v1/alerts", &[])?;
        Ok(body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }
}

/// A running Alertmanager (clustering off: it binds nothing but its loopback port).
pub struct Alertmanager {
    server: Server,
}

impl Alertmanager {
    /// Starts Alertmanager with the shipped configuration made for a test by
    /// [`alertmanager_config`], the token in a file of its directory.
    pub fn start(
        program: &Path,
        webhooks: &[String],
        token: &str,
        group_interval: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let token_file = dir.path().join("alerts-token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        let shipped = deploy::read_yaml(&deploy::deploy_dir().join("monitoring/alertmanager.yml"))?;
        let config = alertmanager_config(&shipped, webhooks, &token_file, group_interval)?;
        let config_file = dir.path().join("alertmanager.yml");
        write_json(&config_file, &config)?;
        let address = format!("127.0.0.1:{}", free_port()?);
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address={address}"),
            // No gossip with peers (it would listen on every interface).
            "--cluster.listen-address=".to_string(),
            "--log.level=warn".to_string(),
        ];
        Ok(Self {
            server: Server::start("alertmanager", program, &args, dir, address)?,
        })
    }

    /// `host:port`, as Prometheus' alerting configuration names it.
    pub fn address(&self) -> &str {
        &self.server.address
    }

    /// `/api/v2/alerts`: the alerts it holds.
    pub fn alerts(&self) -> Result<Vec<Value>> {
        let (_, body) = self.server.get_json("/api/v2/alerts", &[])?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(file: &str) -> Value {
        deploy::read_yaml(&deploy::deploy_dir().join("monitoring").join(file)).expect("shipped")
    }

    #[test]
    fn the_prometheus_configuration_keeps_the_job_and_replaces_discovery_by_static_targets(
    ) -> Result<()> {
        let targets = [ScrapeTarget {
            node: "n0".into(),
            address: "127.0.0.2:9477".into(),
        }];
        let config = prometheus_config(
            &shipped("prometheus.yml"),
            &targets,
            Path::new("/tmp/rules.yaml"),
            "127.0.0.1:9093",
            "1s",
        )?;
        assert_eq!(config["global"]["scrape_interval"], "1s");
        assert_eq!(config["global"]["scrape_timeout"], "1s");
        assert_eq!(config["rule_files"], json!(["/tmp/rules.yaml"]));
        let job = &config["scrape_configs"][0];
        assert_eq!(job["job_name"], "ballast");
        assert_eq!(job["honor_labels"], true);
        assert!(job.get("kubernetes_sd_configs").is_none());
        assert_eq!(
            job["static_configs"],
            json!([{"targets": ["127.0.0.2:9477"], "labels": {"node": "n0"}}])
        );
        assert_eq!(
            config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"],
            json!(["127.0.0.1:9093"])
        );
        Ok(())
    }

    #[test]
    fn only_the_named_alert_waits_less() -> Result<()> {
        let groups = deploy::rule_groups()?;
        let rules = rules_with_shorter_for(&groups, "BallastNodeCPUContention", "2s")?;
        let alerts: Vec<(String, String)> = rules["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .filter_map(|r| Some((r["alert"].as_str()?.into(), r["for"].as_str()?.into())))
            .collect();
        assert!(alerts.contains(&("BallastNodeCPUContention".into(), "2s".into())));
        assert!(alerts
            .iter()
            .all(|(name, for_)| name == "BallastNodeCPUContention" || for_ != "2s"));
        assert!(rules_with_shorter_for(&groups, "NoSuchAlert", "2s").is_err());
        Ok(())
    }

    #[test]
    fn the_alertmanager_configuration_posts_to_every_agent_with_the_token_file() -> Result<()> {
        let urls = [
            "http://127.0.0.2:9477/v1/alerts".to_string(),
            "http://127.0.0.3:9477/v1/alerts".to_string(),
        ];
        let config = alertmanager_config(
            &shipped("alertmanager.yml"),
            &urls,
            Path::new("/tmp/token"),
            "1s",
        )?;
        let receiver = config["receivers"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "ballast"))
            .expect("the ballast receiver");
        let hooks = receiver["webhook_configs"].as_array().expect("webhooks");
        assert_eq!(hooks.len(), 2);
        for (hook, url) in hooks.iter().zip(&urls) {
            assert_eq!(hook["url"], json!(url));
            assert_eq!(hook["send_resolved"], true);
            assert_eq!(
                hook["http_config"]["authorization"]["credentials_file"],
                "/tmp/token"
            );
        }
        Ok(())
    }
}
