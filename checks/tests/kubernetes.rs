//! The Kubernetes manifests (`deploy/kubernetes/`), offline: every overlay renders with
//! `kubectl kustomize`; every object validates against the Kubernetes schemas of
//! [`KUBERNETES`] (`kubernetes-validate --strict`) and every KEDA ScaledObject against
//! `deploy/kubernetes/schemas/keda-scaledobject.schema.json`; and the manifests use what
//! the binaries accept: the stack's image, the gateway's port and probe paths, env vars
//! each binary's `--help` lists, the seed topology, the permissions example, the queue's
//! stream and consumer. No cluster runs here: nothing is applied.
#![allow(clippy::unwrap_used, missing_docs)]

use std::{collections::BTreeMap, path::Path, process::Command};

use serde_json::Value;

use repo_checks::{documents_env, help_of, yaml_documents, LIBRARY_ENV, ROOT};

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.30.0";
const OVERLAYS: &[&str] = &["dev", "production"];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// `kubectl kustomize` of an overlay: the YAML it renders.
fn render(overlay: &str) -> Vec<u8> {
    let dir = format!("{ROOT}/deploy/kubernetes/overlays/{overlay}");
    let out = Command::new("kubectl")
        .args(["kustomize", &dir])
        .output()
        .expect("kubectl runs (kustomize v5, kubectl 1.27 or later; scripts/setup test says how)");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `program` with `args` and a file holding `contents`; its output when it succeeds.
fn run_on_file(program: &str, args: &[&str], name: &str, contents: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    let out = Command::new(program)
        .args(args)
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/setup test installs it): {e}"));
    std::fs::remove_file(&path).unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} on {name}:\n{text}");
    text
}

/// Checks every ScaledObject against the KEDA schema (Python's jsonschema).
fn validate_scaled_objects(objects: &[&Value]) {
    let script = "import sys, json, jsonschema\n\
        schema = json.load(open(sys.argv[1]))\n\
        jsonschema.Draft7Validator.check_schema(schema)\n\
        for o in json.load(open(sys.argv[2])):\n\
        \x20   jsonschema.validate(o, schema, cls=jsonschema.Draft7Validator)\n";
    let schema = format!("{ROOT}/deploy/kubernetes/schemas/keda-scaledobject.schema.json");
    run_on_file(
        "python3",
        &["-c", script, &schema],
        "scaledobjects.json",
        serde_json::to_string(objects).unwrap().as_bytes(),
    );
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    of_kind(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// A generated object's name without kustomize's hash suffix.
fn base_name(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, hash))
            if hash.len() == 10 && hash.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            base
        }
        _ => name,
    }
}

/// The environment a container gets: its `env` and what `envFrom` brings from the
/// overlay's ConfigMaps and Secrets (name to value; a Secret's value decoded, a Secret
/// made outside the overlay as `None` per key it is documented to hold).
fn environment(objects: &[Value], container: &Value) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let (kind, reference) = if from["configMapRef"].is_object() {
            ("ConfigMap", &from["configMapRef"])
        } else {
            ("Secret", &from["secretRef"])
        };
        let name = reference["name"].as_str().unwrap();
        match of_kind(objects, kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
        {
            Some(source) => {
                for (key, value) in source["data"].as_object().unwrap() {
                    let value = value.as_str().unwrap();
                    let value = if kind == "Secret" {
                        let decoded = Command::new("base64")
                            .arg("-d")
                            .stdin(std::process::Stdio::piped())
                            .stdout(std::process::Stdio::piped())
                            .spawn()
                            .and_then(|mut child| {
                                use std::io::Write;
                                child.stdin.take().unwrap().write_all(value.as_bytes())?;
                                child.wait_with_output()
                            })
                            .unwrap();
                        String::from_utf8(decoded.stdout).unwrap()
                    } else {
                        value.to_string()
                    };
                    env.insert(key.clone(), Some(value));
                }
            }
            // Made beforehand (production): the keys the overlay documents.
            None => {
                let optional = reference["optional"] == true;
                let keys: &[&str] = match base_name(name) {
                    "nats-mesh-gateway-api" => {
                        &["MESH_GATEWAY_API_TOKEN", "MESH_GATEWAY_READ_TOKEN"]
                    }
                    _ => &["NATS_USER", "NATS_PASSWORD"],
                };
                assert!(
                    optional || name.ends_with("-nats"),
                    "{name}: a Secret the overlay neither makes nor documents"
                );
                for key in keys {
                    env.insert(key.to_string(), None);
                }
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        env.insert(
            var["name"].as_str().unwrap().to_string(),
            var["value"].as_str().map(str::to_string),
        );
    }
    env
}

/// The users and passwords of the permissions example.
fn permission_users() -> BTreeMap<String, String> {
    let conf = read("examples/permissions/nats-server.conf");
    let mut users = BTreeMap::new();
    let mut user = None;
    for line in conf.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("user: ") {
            user = Some(name.to_string());
        } else if let Some(password) = line.strip_prefix("password: ") {
            users.insert(user.take().unwrap(), password.to_string());
        }
    }
    users
}

#[test]
#[ignore = "external: needs kubectl (kustomize v5) and kubernetes-validate; ./scripts/test installs them and runs this"]
fn every_overlay_renders_validates_and_uses_what_the_binaries_accept() {
    let compose = read("compose.yaml");
    let health = read("gateway/src/api/health.rs");
    let seed = read("topology/seed.toml");
    let users = permission_users();
    for overlay in OVERLAYS {
        let yaml = render(overlay);
        let report = run_on_file(
            "kubernetes-validate",
            &["--strict", "-k", KUBERNETES],
            &format!("{overlay}.yaml"),
            &yaml,
        );
        let objects = yaml_documents(&yaml);
        let scaled = of_kind(&objects, "ScaledObject");
        // Every object has its schema: Kubernetes' own, or KEDA's below.
        for line in report
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
        {
            assert!(line.contains("kind ScaledObject"), "{overlay}: {line}");
        }
        validate_scaled_objects(&scaled);

        let deployments = of_kind(&objects, "Deployment");
        let mut binaries = BTreeMap::new();
        for deployment in deployments.iter().chain(&of_kind(&objects, "StatefulSet")) {
            let name = deployment["metadata"]["name"].as_str().unwrap();
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            // The image's user `mesh` (Dockerfile: useradd --uid 10001).
            assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{name}");
            for container in pod["containers"].as_array().unwrap() {
                let image = container["image"].as_str().unwrap();
                assert!(
                    compose.contains(&format!("${{MESH_IMAGE:-{image}}}")),
                    "{name} runs {image}, not the stack's image"
                );
                let security = &container["securityContext"];
                assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
                for bound in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            container["resources"][bound][resource].is_string(),
                            "{name}: no {bound}.{resource}"
                        );
                    }
                }
                let command: Vec<&str> = container["command"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                if command[0] == "nats-server" {
                    continue;
                }
                assert!(
                    ["handlers", "gateway"].contains(&command[0]),
                    "{name} runs {command:?}"
                );
                let help = help_of(command[0]);
                for flag in &command[1..] {
                    assert!(
                        help.lines()
                            .any(|l| l.trim().split([' ', ',']).any(|w| w == *flag)),
                        "{name}: `{} --help` lists no {flag}",
                        command[0]
                    );
                }
                let env = environment(&objects, container);
                for key in env.keys() {
                    assert!(
                        LIBRARY_ENV.contains(&key.as_str())
                            || key.starts_with("OTEL_")
                            || documents_env(&help, key),
                        "{overlay}: {name} sets {key}, which `{} --help` does not list",
                        command[0]
                    );
                }
                // Its NATS user is one of the permissions example's, by role.
                let role = match (command[0], command.contains(&"--functions")) {
                    ("gateway", _) => "gateway",
                    (_, true) => "runner",
                    _ => "node",
                };
                assert!(env.contains_key("NATS_USER"), "{name}: no NATS credentials");
                if let (Some(Some(user)), Some(Some(password))) =
                    (env.get("NATS_USER"), env.get("NATS_PASSWORD"))
                {
                    assert_eq!(user, role, "{name}");
                    assert_eq!(users.get(user), Some(password), "{name}: {user}'s password");
                }
                // Probes: the gateway's own paths on its port; handlers' --ping.
                for probe in ["readinessProbe", "livenessProbe"] {
                    let probe = &container[probe];
                    if command[0] == "gateway" {
                        let path = probe["httpGet"]["path"].as_str().unwrap();
                        assert!(health.contains(&format!("path = \"{path}\"")), "{path}");
                        assert_eq!(probe["httpGet"]["port"], "http");
                    } else {
                        let mut ping: Vec<&str> = command.clone();
                        ping.push("--ping");
                        assert_eq!(probe["exec"]["command"], serde_json::json!(ping), "{name}");
                    }
                }
                if command[0] == "gateway" {
                    let listen = env["MESH_GATEWAY_LISTEN"].clone().unwrap();
                    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
                    assert_eq!(container["ports"][0]["containerPort"], port);
                    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
                    assert_eq!(annotations["prometheus.io/port"], port.to_string());
                    assert_eq!(annotations["prometheus.io/path"], "/metrics");
                }
                if command[0] == "handlers" && role == "node" {
                    // The topology file is the ConfigMap's copy of the seed topology.
                    let file = env["MESH_TOPOLOGY"].clone().unwrap();
                    let (dir, key) = file.rsplit_once('/').unwrap();
                    let mount = container["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|m| m["mountPath"] == dir)
                        .unwrap();
                    let volume = pod["volumes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|v| v["name"] == mount["name"])
                        .unwrap();
                    let map = named(
                        &objects,
                        "ConfigMap",
                        volume["configMap"]["name"].as_str().unwrap(),
                    );
                    assert_eq!(
                        map["data"][key], seed,
                        "the topology ConfigMap is topology/seed.toml"
                    );
                }
                let replicas = env["MESH_STREAM_REPLICAS"].clone().unwrap();
                let wanted = if *overlay == "production" { "3" } else { "1" };
                assert_eq!(replicas, wanted, "{overlay}: {name}");
                binaries.insert(name.to_string(), role);
            }
        }
        assert_eq!(
            binaries
                .values()
                .copied()
                .collect::<std::collections::BTreeSet<_>>(),
            ["gateway", "node", "runner"].into(),
            "{overlay}: gateways, nodes and runners"
        );
        // Gateways: a Service on the port, and a disruption budget.
        let service = named(&objects, "Service", "gateway");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
        let budget = named(&objects, "PodDisruptionBudget", "gateway");
        assert_eq!(
            budget["spec"]["selector"]["matchLabels"],
            named(&objects, "Deployment", "gateway")["spec"]["selector"]["matchLabels"]
        );
        // Scaling: KEDA on the queue's consumer in production, CPU alone without it;
        // never both on one Deployment.
        let autoscalers = of_kind(&objects, "HorizontalPodAutoscaler");
        for target in ["runner", "gateway"] {
            let by_keda = scaled
                .iter()
                .filter(|s| s["spec"]["scaleTargetRef"]["name"] == target)
                .count();
            let by_hpa = autoscalers
                .iter()
                .filter(|h| h["spec"]["scaleTargetRef"]["name"] == target)
                .count();
            assert_eq!(by_keda + by_hpa, 1, "{overlay}: {target} scaled once");
            if *overlay == "production" {
                assert_eq!(by_keda, 1, "{target} scales by backlog in production");
            }
        }
        for object in &scaled {
            let trigger = object["spec"]["triggers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == "nats-jetstream")
                .unwrap();
            assert_eq!(trigger["metadata"]["stream"], schemas::job::STREAM);
            assert_eq!(trigger["metadata"]["consumer"], schemas::job::CONSUMER);
        }
        if *overlay == "dev" {
            // Its NATS server: the permissions example and the compose stack's limits.
            let config = of_kind(&objects, "ConfigMap")
                .into_iter()
                .find(|m| base_name(m["metadata"]["name"].as_str().unwrap()) == "nats-config")
                .unwrap();
            assert_eq!(
                config["data"]["permissions.conf"],
                read("examples/permissions/nats-server.conf")
            );
            let conf = config["data"]["nats-server.conf"].as_str().unwrap();
            let compose_conf = read("deploy/nats/nats-server.conf");
            for line in compose_conf
                .lines()
                .filter(|l| !l.starts_with('#') && (l.contains("max_") || l.contains("store_dir")))
            {
                assert!(conf.contains(line), "dev's NATS config lacks {line}");
            }
            assert!(conf.contains("include ./permissions.conf"));
        } else {
            assert!(
                of_kind(&objects, "Secret").is_empty(),
                "production credentials are never in the repository"
            );
        }
    }
}
