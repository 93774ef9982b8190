//! Offline checks of everything under deploy/, each by the real tool for it: the kustomize
//! library renders every kustomization, kubernetes-validate checks every object against the
//! Kubernetes OpenAPI schemas (oldest and newest supported version), promtool checks and
//! unit-tests the rules and parses every dashboard query, amtool checks the Alertmanager example.
//! The objects the schemas cannot judge (least privilege, the CRDs' contents) are checked here.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};
use ballast::rebalance::Policy;
use ballast_tests::deploy::{
    alerting_rules, dashboard_queries, dashboard_variables, dashboards, default_variables,
    deploy_dir, expand, panels, read_yaml, recording_rules, rule_groups, run, DeployCopy, Tools,
};
use serde_json::{json, Value};

/// The Kubernetes versions the manifests must be valid for: the oldest Ballast supports and the
/// newest kubernetes-validate ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];

/// The kustomizations a user applies (and the base they share).
const KUSTOMIZATIONS: [&str; 4] = [
    "base",
    "overlays/dry-run",
    "overlays/production",
    "monitoring",
];

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn is_operator_crd(object: &Value) -> bool {
    object["apiVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
}

fn find<'a>(objects: &'a [Value], wanted: &str) -> Result<&'a Value> {
    let mut matching = objects.iter().filter(|o| kind(o) == wanted);
    let (Some(found), None) = (matching.next(), matching.next()) else {
        bail!("expected exactly one {wanted} in the rendered objects");
    };
    Ok(found)
}

/// Runs kubernetes-validate (strict: unknown fields are errors) on `objects` for every supported
/// version; returns how many object validations passed.
fn validate_schemas(tools: &Tools, objects: &[Value], scratch: &Path, name: &str) -> Result<usize> {
    let file = scratch.join(format!("{}.yaml", name.replace('/', "-")));
    // JSON documents are YAML documents.
    let stream: Vec<String> = objects.iter().map(Value::to_string).collect();
    std::fs::write(&file, stream.join("\n---\n"))?;
    let mut passed = 0;
    for version in KUBERNETES_VERSIONS {
        let output = run(Command::new(&tools.kubernetes_validate)
            .args(["--strict", "--kubernetes-version", version])
            .arg(&file))?;
        let report = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success(),
            "{name} does not validate against Kubernetes {version}:\n{report}"
        );
        let ok = report
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        ensure!(
            ok == objects.len(),
            "{name}: {ok} of {} objects validated against {version} (no schema for some?):\n{report}",
            objects.len()
        );
        passed += ok;
    }
    Ok(passed)
}

#[test]
fn every_manifest_renders_and_validates_against_the_kubernetes_schemas() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let copy = DeployCopy::new(true)?;
    let scratch = tempfile::tempdir()?;
    let mut validations = 0;
    for name in KUSTOMIZATIONS {
        let objects = tools.kustomize_build(&copy.path(name))?;
        let (crds, core): (Vec<Value>, Vec<Value>) = objects.into_iter().partition(is_operator_crd);
        if name == "monitoring" {
            let kinds: BTreeSet<&str> = crds.iter().map(kind).collect();
            assert_eq!(kinds, BTreeSet::from(["PrometheusRule", "ServiceMonitor"]));
            assert!(
                core.is_empty(),
                "deploy/monitoring holds only operator objects"
            );
        } else {
            assert!(crds.is_empty(), "{name} needs no operator CRDs");
            let kinds: BTreeSet<&str> = core.iter().map(kind).collect();
            for wanted in [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "DaemonSet",
                "Service",
                "ConfigMap",
            ] {
                assert!(kinds.contains(wanted), "{name} renders no {wanted}");
            }
            validations += validate_schemas(&tools, &core, scratch.path(), name)?;
        }
    }
    eprintln!(
        "kubernetes-validate: {validations} object validations passed (Kubernetes {})",
        KUBERNETES_VERSIONS.join(", ")
    );
    Ok(())
}

#[test]
fn an_overlay_without_tokens_does_not_render() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let copy = DeployCopy::new(false)?;
    for overlay in ["overlays/dry-run", "overlays/production"] {
        let Err(error) = tools.kustomize_build(&copy.path(overlay)) else {
            bail!("{overlay} rendered without token files: a known token could be deployed");
        };
        let message = error.to_string();
        assert!(
            message.contains("secrets/load-token"),
            "{overlay}: the error should name the missing file: {message}"
        );
    }
    Ok(())
}

#[test]
fn the_daemonset_runs_with_least_privilege() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let copy = DeployCopy::new(true)?;
    let objects = tools.kustomize_build(&copy.path("overlays/production"))?;
    let daemonset = find(&objects, "DaemonSet")?;
    let pod = &daemonset["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().context("no containers")?;
    assert_eq!(containers.len(), 1);
    let agent = &containers[0];
    let security = &agent["securityContext"];

    assert_eq!(security["privileged"], json!(false));
    assert_eq!(security["allowPrivilegeEscalation"], json!(false));
    assert_eq!(security["readOnlyRootFilesystem"], json!(true));
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let added: BTreeSet<&str> = security["capabilities"]["add"]
        .as_array()
        .context("no capabilities added")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(added, BTreeSet::from(["BPF", "NET_ADMIN", "PERFMON"]));
    for host_namespace in ["hostPID", "hostNetwork", "hostIPC"] {
        assert_ne!(pod[host_namespace], json!(true), "{host_namespace}");
    }
    assert_eq!(pod["priorityClassName"], json!("system-node-critical"));
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        daemonset["spec"]["updateStrategy"]["type"],
        json!("RollingUpdate")
    );
    for resource in ["cpu", "memory"] {
        for bound in ["requests", "limits"] {
            assert!(
                agent["resources"][bound][resource].is_string(),
                "no {bound}.{resource} for the agent"
            );
        }
    }

    // Host paths: exactly the cgroup tree and the kernel's BTF, each mounted read-only.
    let volumes = pod["volumes"].as_array().context("no volumes")?;
    let host_paths: BTreeMap<&str, &str> = volumes
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v["hostPath"]["path"].as_str()?)))
        .collect();
    assert_eq!(
        host_paths.values().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["/sys/fs/cgroup", "/sys/kernel/btf"])
    );
    let mounts = agent["volumeMounts"]
        .as_array()
        .context("no volume mounts")?;
    for mount in mounts {
        assert_eq!(mount["readOnly"], json!(true), "{mount} is writable");
    }
    for name in host_paths.keys() {
        assert!(
            mounts.iter().any(|m| m["name"] == json!(name)),
            "host path volume {name} is not mounted"
        );
    }

    // Cluster mode, in-cluster credentials, identity from the Downward API, files it reads
    // from the Secret and the ConfigMap that the build generated.
    let args: Vec<&str> = agent["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"agent"));
    assert!(!args
        .iter()
        .any(|a| a.starts_with("--standalone") || a.starts_with("--kubeconfig")));
    assert!(args.contains(&"--listen=0.0.0.0:9477"));
    let env: BTreeMap<&str, &str> = agent["env"]
        .as_array()
        .context("no env")?
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        env,
        BTreeMap::from([
            ("NODE_NAME", "spec.nodeName"),
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ])
    );
    let mount_of = |volume: &str| -> Result<&str> {
        mounts
            .iter()
            .find(|m| m["name"] == json!(volume))
            .and_then(|m| m["mountPath"].as_str())
            .with_context(|| format!("volume {volume} is not mounted"))
    };
    let secret = find(&objects, "Secret")?;
    let secret_volume = volumes
        .iter()
        .find(|v| v["secret"]["secretName"] == secret["metadata"]["name"])
        .context("the DaemonSet does not mount the generated Secret")?;
    let tokens = mount_of(secret_volume["name"].as_str().unwrap_or_default())?;
    for key in ["load-token", "alerts-token"] {
        assert!(secret["data"][key].is_string(), "the Secret has no {key}");
    }
    assert!(args.contains(&format!("--load-token-file={tokens}/load-token").as_str()));
    assert!(args.contains(&format!("--alerts-token-file={tokens}/alerts-token").as_str()));
    let config_map = find(&objects, "ConfigMap")?;
    let policy_volume = volumes
        .iter()
        .find(|v| v["configMap"]["name"] == config_map["metadata"]["name"])
        .context("the DaemonSet does not mount the generated policy ConfigMap")?;
    let policy = mount_of(policy_volume["name"].as_str().unwrap_or_default())?;
    assert!(args.contains(&format!("--policy={policy}/policy.toml").as_str()));

    // The Service and the pods agree on the label agents discover each other by, and an
    // unready agent stays a scrape target (so it is reported down, not forgotten).
    let service = find(&objects, "Service")?;
    assert_eq!(service["spec"]["publishNotReadyAddresses"], json!(true));
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pod_labels["app.kubernetes.io/name"], json!("ballast"));
    for (key, value) in service["spec"]["selector"]
        .as_object()
        .context("no selector")?
    {
        assert_eq!(&pod_labels[key], value, "Service selector {key}");
    }
    Ok(())
}

#[test]
fn rbac_grants_exact_verbs_and_writes_only_what_it_names() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let copy = DeployCopy::new(true)?;
    let objects = tools.kustomize_build(&copy.path("overlays/production"))?;
    let writes = ["create", "update", "patch", "delete", "deletecollection"];
    for role in objects
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRole" | "Role"))
    {
        let name = format!("{} {}", kind(role), role["metadata"]["name"]);
        for rule in role["rules"].as_array().context("a role without rules")? {
            for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                let wildcard = rule[field].as_array().is_some_and(|values| {
                    values
                        .iter()
                        .any(|v| v.as_str().is_some_and(|s| s.contains('*')))
                });
                assert!(!wildcard, "{name}: wildcard in {field}: {rule}");
            }
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let resources: Vec<&str> = rule["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let named = rule["resourceNames"]
                .as_array()
                .is_some_and(|n| !n.is_empty());
            // Updates and patches of the agent's own objects only under their fixed names.
            if kind(role) == "Role" && verbs.iter().any(|v| matches!(*v, "update" | "patch")) {
                assert!(named, "{name}: update/patch without resourceNames: {rule}");
            }
            // Cluster-wide writes: evictions, the soft taint on nodes, Events. Nothing else.
            if kind(role) == "ClusterRole" {
                for verb in verbs.iter().filter(|v| writes.contains(v)) {
                    for resource in &resources {
                        assert!(
                            matches!(
                                (*resource, *verb),
                                ("pods/eviction", "create")
                                    | ("nodes", "patch")
                                    | ("events", "create")
                            ),
                            "{name}: unexpected cluster-wide {verb} on {resource}"
                        );
                    }
                }
            }
        }
    }
    for binding in objects
        .iter()
        .filter(|o| matches!(kind(o), "ClusterRoleBinding" | "RoleBinding"))
    {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "ballast", "namespace": "ballast-system"}])
        );
    }
    Ok(())
}

#[test]
fn the_policies_the_agents_get_parse_and_only_dry_run_differs() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let example = std::fs::read_to_string(deploy_dir().join("examples/policy.toml"))?;
    let base = std::fs::read_to_string(deploy_dir().join("base/policy.toml"))?;
    assert!(
        base == example,
        "deploy/base/policy.toml differs from deploy/examples/policy.toml: copy the example over it"
    );
    let copy = DeployCopy::new(true)?;
    for (overlay, dry_run) in [("overlays/production", false), ("overlays/dry-run", true)] {
        let objects = tools.kustomize_build(&copy.path(overlay))?;
        let text = find(&objects, "ConfigMap")?["data"]["policy.toml"]
            .as_str()
            .with_context(|| format!("{overlay}: the ConfigMap has no policy.toml"))?
            .to_string();
        let policy = Policy::from_toml(&text).with_context(|| format!("{overlay}: policy"))?;
        let expected = Policy {
            dry_run,
            ..Policy::default()
        };
        assert_eq!(policy, expected, "{overlay}");
    }
    Ok(())
}

/// Runs promtool and fails with its output unless it succeeds.
fn promtool(tools: &Tools, args: &[&str], files: &[PathBuf]) -> Result<String> {
    let output = run(Command::new(&tools.promtool).args(args).args(files))?;
    let report = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "promtool {}:\n{report}",
        args.join(" ")
    );
    Ok(report)
}

fn write_rule_file(dir: &Path, name: &str, groups: &Value) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, json!({ "groups": groups }).to_string())?;
    Ok(path)
}

#[test]
fn rules_pass_promtool_and_every_alert_is_tested_firing_and_not_firing() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let rules = deploy_dir().join("rules");
    let report = promtool(
        &tools,
        &["check", "rules"],
        &[rules.join("ballast.rules.yaml")],
    )?;
    eprint!("{report}");

    let mut test_files: Vec<PathBuf> = std::fs::read_dir(rules.join("tests"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    test_files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    test_files.sort();
    ensure!(
        !test_files.is_empty(),
        "no promtool tests in deploy/rules/tests"
    );
    let report = promtool(&tools, &["test", "rules"], &test_files)?;
    eprint!("{report}");
    assert_eq!(
        report.matches("SUCCESS").count(),
        test_files.len(),
        "{report}"
    );

    // Each alert needs a case where it fires and one where it does not.
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut cases = 0;
    for file in &test_files {
        let tests = read_yaml(file)?;
        for test in tests["tests"].as_array().into_iter().flatten() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap_or_default().to_string();
                let alerts = case["exp_alerts"].as_array().map_or(0, Vec::len);
                if alerts > 0 {
                    firing.insert(name);
                } else {
                    quiet.insert(name);
                }
                cases += 1;
            }
        }
    }
    let alerts = alerting_rules()?;
    for (alert, _) in &alerts {
        assert!(
            firing.contains(alert),
            "no promtool case where {alert} fires"
        );
        assert!(
            quiet.contains(alert),
            "no promtool case where {alert} stays quiet"
        );
    }
    eprintln!(
        "promtool test rules: {cases} alert cases over {} alerts, all passed",
        alerts.len()
    );
    Ok(())
}

#[test]
fn the_prometheus_rule_carries_the_rule_file_and_promtool_accepts_it() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let copy = DeployCopy::new(true)?;
    let objects = tools.kustomize_build(&copy.path("monitoring"))?;
    let rule = find(&objects, "PrometheusRule")?;
    assert!(
        rule["spec"]["groups"] == rule_groups()?,
        "deploy/monitoring/prometheusrule.yaml spec.groups differ from deploy/rules/ballast.rules.yaml: \
         copy the groups of the rule file (the file to edit) into it"
    );
    let scratch = tempfile::tempdir()?;
    let file = write_rule_file(
        scratch.path(),
        "prometheusrule.json",
        &rule["spec"]["groups"],
    )?;
    promtool(&tools, &["check", "rules"], &[file])?;

    // The ServiceMonitor selects the Service's port and labels every series with its node.
    let monitor = find(&objects, "ServiceMonitor")?;
    let base = tools.kustomize_build(&copy.path("base"))?;
    let service = find(&base, "Service")?;
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("no selector")?
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "ServiceMonitor selector {key}"
        );
    }
    let ports: Vec<&Value> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for endpoint in monitor["spec"]["endpoints"]
        .as_array()
        .context("no endpoints")?
    {
        assert!(
            ports.iter().any(|p| p["name"] == endpoint["port"]),
            "ServiceMonitor port {} is not a port of the Service",
            endpoint["port"]
        );
        let relabelings = endpoint["relabelings"]
            .as_array()
            .context("no relabelings")?;
        assert!(relabelings.iter().any(|r| {
            r["sourceLabels"] == json!(["__meta_kubernetes_pod_node_name"])
                && r["targetLabel"] == json!("node")
        }));
    }
    Ok(())
}

#[test]
fn the_prometheus_and_alertmanager_examples_pass_their_checkers() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let monitoring = deploy_dir().join("monitoring");
    let output = run(Command::new(&tools.amtool)
        .args(["check-config"])
        .arg(monitoring.join("alertmanager.yml")))?;
    ensure!(
        output.status.success(),
        "amtool check-config deploy/monitoring/alertmanager.yml:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // Debian's Prometheus is built without Kubernetes service discovery, so promtool rejects
    // kubernetes_sd_configs; everything else (relabelling, rule files, alerting) is checked with
    // the discovery swapped for file discovery.
    let mut config = read_yaml(&monitoring.join("prometheus.yml"))?;
    let scratch = tempfile::tempdir()?;
    for job in config["scrape_configs"]
        .as_array_mut()
        .context("no scrape_configs")?
    {
        let object = job
            .as_object_mut()
            .context("a scrape config is not a map")?;
        ensure!(
            object.remove("kubernetes_sd_configs").is_some(),
            "the example scrape job discovers its targets through Kubernetes"
        );
        let targets = scratch.path().join("targets/*.json");
        object.insert("file_sd_configs".into(), json!([{ "files": [targets] }]));
    }
    let rule_files: Vec<Value> = config["rule_files"]
        .as_array()
        .context("no rule_files")?
        .iter()
        .filter_map(Value::as_str)
        .map(|relative| json!(monitoring.join(relative)))
        .collect();
    config["rule_files"] = json!(rule_files);
    let file = scratch.path().join("prometheus.json");
    std::fs::write(&file, config.to_string())?;
    promtool(&tools, &["check", "config"], &[file])?;
    Ok(())
}

#[test]
fn dashboards_are_grafana_dashboards_and_every_query_parses() -> Result<()> {
    let Some(tools) = Tools::find() else {
        return Ok(());
    };
    let mut uids = BTreeSet::new();
    for (path, dashboard) in dashboards()? {
        let file = path.display();
        assert!(
            dashboard["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Ballast / ")),
            "{file}: title"
        );
        let uid = dashboard["uid"]
            .as_str()
            .with_context(|| format!("{file}: no uid"))?;
        assert!(
            uid.len() <= 40 && uids.insert(uid.to_string()),
            "{file}: uid {uid} too long or taken"
        );
        assert!(
            dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 39),
            "{file}: schemaVersion"
        );
        let variables = dashboard["templating"]["list"]
            .as_array()
            .with_context(|| format!("{file}: no templating"))?;
        let by_name: BTreeMap<&str, &Value> = variables
            .iter()
            .filter_map(|v| Some((v["name"].as_str()?, v)))
            .collect();
        assert_eq!(
            by_name.get("datasource").map(|v| &v["type"]),
            Some(&json!("datasource")),
            "{file}"
        );
        assert_eq!(
            by_name["datasource"]["query"],
            json!("prometheus"),
            "{file}"
        );
        for wanted in ["cluster", "node"] {
            assert!(
                by_name.contains_key(wanted),
                "{file}: no ${wanted} variable"
            );
        }
        for variable in variables.iter().filter(|v| v["type"] == json!("query")) {
            assert_eq!(
                variable["datasource"]["uid"],
                json!("${datasource}"),
                "{file}: {variable}"
            );
        }
        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(panel["id"].as_u64()),
                "{file}: panel id of {title:?} taken"
            );
            if panel["type"] == json!("row") {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"],
                json!("${datasource}"),
                "{file}: {title:?}"
            );
            let targets = panel["targets"]
                .as_array()
                .with_context(|| format!("{file}: {title:?} has no targets"))?;
            assert!(!targets.is_empty(), "{file}: {title:?} has no targets");
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"],
                    json!("${datasource}"),
                    "{file}: {title:?}"
                );
            }
        }
    }

    // Every query, as Grafana sends it with every variable at "All", and every recording rule,
    // as one rule file for promtool to parse.
    let variables = default_variables();
    let mut rules = Vec::new();
    let queries = dashboard_queries()?;
    for (i, query) in queries.iter().enumerate() {
        let expr = expand(&query.expr, &variables)
            .with_context(|| format!("{} / {} {}", query.dashboard, query.panel, query.ref_id))?;
        rules.push(json!({ "record": format!("dashboard:query_{i}"), "expr": expr }));
    }
    // label_values(SELECTOR, LABEL): the selector is PromQL.
    let selectors = dashboard_variables()?;
    for (i, variable) in selectors.iter().enumerate() {
        rules.push(json!({ "record": format!("dashboard:variable_{i}"), "expr": expand(&variable.selector, &variables)? }));
    }
    let recorded = recording_rules()?;
    for (record, expr) in &recorded {
        rules.push(json!({ "record": record, "expr": expr }));
    }
    let scratch = tempfile::tempdir()?;
    let file = write_rule_file(
        scratch.path(),
        "queries.json",
        &json!([{ "name": "queries", "rules": rules }]),
    )?;
    let report = promtool(&tools, &["check", "rules"], &[file])?;
    assert!(
        report.contains(&format!("{} rules found", rules.len())),
        "{report}"
    );
    eprintln!(
        "promtool parsed {} dashboard queries, {} variable selectors, {} recording rules",
        queries.len(),
        selectors.len(),
        recorded.len()
    );
    Ok(())
}
