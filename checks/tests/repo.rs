//! The repository checked against the binaries: `docs/configuration.md` documents every
//! option of both, with the default each binary's `--help` gives; `compose.yaml` is valid (`docker-compose config`), every service runs one of
//! our binaries with env vars that binary accepts, the eight seed nodes are there once
//! each; the Dockerfile copies paths that exist and every workspace member.
#![allow(clippy::unwrap_used, missing_docs)]

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;

use repo_checks::{documents_env, env_vars_of, help_of, yaml_documents, LIBRARY_ENV, ROOT};

fn resolved_compose() -> Value {
    let out = Command::new("docker-compose")
        .args([
            "-f",
            &format!("{ROOT}/compose.yaml"),
            "--profile",
            "tracing",
            "config",
        ])
        .output()
        .expect("docker-compose runs (Debian package docker-compose; scripts/test installs it)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&out.stdout).remove(0)
}

/// The configuration page's tables: each row's variable (first column, in backticks) and
/// its documented default (third column), for rows that name a variable.
fn documented_options(page: &str) -> Vec<(String, String)> {
    page.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "", variable, flag, default, meaning, ""
            let var = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            Some((var.to_string(), cells.get(3)?.to_string()))
        })
        .collect()
}

/// The `[default: …]` clap shows for the option whose env var is `var`, if any.
fn help_default(help: &str, var: &str) -> Option<String> {
    // An option's block starts at its flag line (indented less than its text).
    let mut blocks = vec![String::new()];
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent < 8 {
            blocks.push(String::new());
        }
        let block = blocks.last_mut()?;
        block.push_str(line);
        block.push('\n');
    }
    let block = blocks
        .iter()
        .find(|b| b.contains(&format!("[env: {var}=")) || b.contains(&format!("[env: {var}]")))?;
    // clap's own `[default: …]` stands on a line of its own; one written in the text
    // (for a default clap cannot show) counts when it is a number.
    let own = block
        .lines()
        .find_map(|l| l.trim().strip_prefix("[default: ")?.strip_suffix(']'));
    let written = || {
        let text = block.split_once("[default: ")?.1.split(']').next()?;
        text.parse::<f64>().is_ok().then_some(text)
    };
    Some(own.or_else(written)?.split(']').next()?.to_string())
}

#[test]
fn the_configuration_page_documents_every_option_with_its_default() {
    let page = std::fs::read_to_string(format!("{ROOT}/docs/configuration.md")).unwrap();
    let documented = documented_options(&page);
    for binary in ["handlers", "gateway"] {
        let help = help_of(binary);
        let vars = env_vars_of(&help);
        assert!(vars.len() > 10, "{binary}: {vars:?}");
        for var in vars {
            // One prefix for the mesh's options, the `nats` CLI's names for NATS', and
            // one unit for durations.
            assert!(
                var.starts_with("MESH_") || var.starts_with("NATS_"),
                "{binary}: {var} has neither the MESH_ nor the NATS_ prefix"
            );
            assert!(
                !var.ends_with("_SECS"),
                "{binary}: {var}: durations are _MS"
            );
            let Some((_, doc_default)) = documented.iter().find(|(v, _)| *v == var) else {
                panic!("docs/configuration.md has no row for {var} ({binary})");
            };
            // The page may say more ("3600000 (1 h)"), never something else.
            let doc_default = doc_default.replace('`', "");
            match help_default(&help, &var) {
                Some(default) => assert!(
                    doc_default == default || doc_default.starts_with(&format!("{default} ")),
                    "{var} ({binary}): --help says the default is {default:?}, \
                     docs/configuration.md says {doc_default:?}"
                ),
                None => assert!(
                    doc_default.parse::<f64>().is_err(),
                    "{var} ({binary}): docs/configuration.md gives the default \
                     {doc_default:?}, --help gives none"
                ),
            }
        }
    }
}

#[test]
fn the_checks_read_the_configuration_tables() {
    let rows = documented_options(
        "| `MESH_A` | `--a` | 5000 | x |\n| `MESH_B` | `--b` | `UI` | y |\n| not | a | row |",
    );
    assert_eq!(
        rows,
        [
            ("MESH_A".into(), "5000".into()),
            ("MESH_B".into(), "`UI`".into())
        ]
    );
    let help = "  -a, --a <A>\n          x\n          [env: MESH_X=]\n          [default: 1]\n      --b <B>\n          y\n          \n          [env: MESH_A=]\n          [default: 5000]\n      --c <C>\n          [default: the limit] in text\n          [env: MESH_C=]\n      --d <D>\n          work [default: 0].\n          [env: MESH_D=]\n";
    assert_eq!(help_default(help, "MESH_A").as_deref(), Some("5000"));
    assert_eq!(help_default(help, "MESH_X").as_deref(), Some("1"));
    assert_eq!(help_default(help, "MESH_C"), None, "not a number");
    assert_eq!(help_default(help, "MESH_D").as_deref(), Some("0"));
}

#[test]
#[ignore = "external: needs docker-compose; ./scripts/test installs it and runs this"]
fn compose_services_use_only_what_the_binaries_accept() {
    let compose = resolved_compose();
    let services = compose["services"].as_object().unwrap();
    let topology = handlers::Topology::load(&Path::new(ROOT).join("topology/seed.toml")).unwrap();
    let mut nodes = BTreeSet::new();
    // One image for the stack, built once: by the nats service, which runs Debian's
    // nats-server from it.
    let nats = &services["nats"];
    let image = nats["image"].as_str().unwrap();
    assert!(
        nats["build"].is_object(),
        "the nats service builds the image"
    );
    assert_eq!(nats["command"][0], "nats-server");
    assert_eq!(
        nats["command"].to_string(),
        r#"["nats-server","--config","/etc/nats-mesh/nats-server.conf"]"#
    );
    // That file, as the Dockerfile copies it: JetStream in /data (the volume), the
    // monitoring port the health check asks, and explicit storage limits.
    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY deploy/nats/nats-server.conf /etc/nats-mesh/"));
    let conf =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/nats/nats-server.conf")).unwrap();
    for line in [
        "http_port: 8222",
        "store_dir: \"/data\"",
        "max_file_store:",
        "max_memory_store:",
    ] {
        assert!(
            conf.contains(line),
            "deploy/nats/nats-server.conf lacks {line}"
        );
    }
    assert_eq!(nats["volumes"][0], "nats-data:/data:rw");
    for (name, service) in services {
        if name == "nats" {
            continue;
        }
        // Optional services, each behind its profile.
        match name.as_str() {
            "jaeger" => {
                assert!(
                    service["image"]
                        .as_str()
                        .unwrap()
                        .starts_with("jaegertracing/jaeger:2."),
                    "Jaeger 2 (v1 reached its end of life)"
                );
                assert_eq!(service["profiles"], serde_json::json!(["tracing"]));
                continue;
            }
            "prometheus" | "grafana" => {
                let profile = if name == "prometheus" {
                    "metrics"
                } else {
                    "dashboards"
                };
                assert_eq!(service["profiles"], serde_json::json!([profile]));
                // What it mounts is in the repository.
                for volume in service["volumes"].as_array().unwrap() {
                    // `source:target[:mode]`, or an object with `source`.
                    let source = volume["source"]
                        .as_str()
                        .or_else(|| volume.as_str().and_then(|v| v.split(':').next()))
                        .unwrap();
                    assert!(Path::new(source).exists(), "{name} mounts missing {source}");
                }
                continue;
            }
            _ => assert!(service.get("profiles").is_none(), "{name}"),
        }
        assert_eq!(service["image"], image, "{name} runs the stack's image");
        assert!(
            service.get("build").is_none(),
            "{name} builds the image again"
        );
        assert!(
            service["healthcheck"]["test"].is_array(),
            "{name} has a healthcheck"
        );
        assert_eq!(
            service["depends_on"]["nats"]["condition"], "service_healthy",
            "{name}"
        );
        let binary = service["command"][0].as_str().unwrap();
        assert!(
            binary == "handlers" || binary == "gateway",
            "{name} runs {binary}"
        );
        let help = help_of(binary);
        for (key, value) in service["environment"].as_object().unwrap() {
            assert!(
                LIBRARY_ENV.contains(&key.as_str())
                    || key.starts_with("OTEL_")
                    || documents_env(&help, key),
                "service {name} sets {key}, which `{binary} --help` does not list"
            );
            if key == "MESH_ONLY" {
                let node = value.as_str().unwrap();
                assert!(
                    topology.get(node).is_some(),
                    "{name}: no node {node} in seed.toml"
                );
                assert!(nodes.insert(node.to_string()), "node {node} served twice");
            }
        }
        // Tracing is off unless asked for (the viewer is behind the `tracing` profile).
        if let Some(endpoint) = service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"].as_str() {
            assert_eq!(endpoint, "", "{name}");
        }
        if binary == "handlers" {
            let topology_file = service["environment"]["MESH_TOPOLOGY"].as_str().unwrap();
            assert_eq!(topology_file, "/etc/nats-mesh/seed.toml");
        }
    }
    let expected: BTreeSet<_> = topology.nodes.iter().map(|n| n.name.to_string()).collect();
    assert_eq!(nodes, expected, "every seed node is its own service");
    assert!(services.contains_key("gateway"));
}

#[test]
fn dockerfile_copies_what_exists_and_every_member() {
    let dockerfile = std::fs::read_to_string(format!("{ROOT}/Dockerfile")).unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<_> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                Path::new(ROOT).join(source).exists(),
                "Dockerfile copies missing {source}"
            );
        }
    }
    let manifest = std::fs::read_to_string(format!("{ROOT}/Cargo.toml")).unwrap();
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .unwrap()
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>();
    for member in members {
        assert!(
            dockerfile.contains(&format!("COPY {member}/Cargo.toml {member}/")),
            "the dependency layer of the Dockerfile misses {member}"
        );
    }
}

/// The gateway's modules (one per file, `lib` for the crate root), each with the
/// modules it uses (`use crate::…`, `use super::…` and paths written inline, before its
/// tests): a module and those it declares (its children) are not counted as using
/// each other.
fn gateway_module_uses() -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(ROOT).join("gateway/src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.ends_with("bin") {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let module_of = |path: &Path| {
        let rel = path.strip_prefix(&src).unwrap().with_extension("");
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        match parts.as_slice() {
            [only] if only == "lib" => "lib".to_string(),
            [dirs @ .., last] if last == "mod" => dirs.join("::"),
            all => all.join("::"),
        }
    };
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut uses = std::collections::BTreeMap::new();
    for file in &files {
        let module = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let parent = match module.rsplit_once("::") {
            Some((parent, _)) => parent.to_string(),
            None => "lib".to_string(),
        };
        let mut paths = Vec::new();
        for statement in code.split(';') {
            let statement = statement.trim();
            let Some(tree) = statement
                .strip_prefix("pub use ")
                .or_else(|| statement.strip_prefix("use "))
            else {
                continue;
            };
            paths.extend(expand_use(&tree.split_whitespace().collect::<String>()));
        }
        for start in ["crate::", "super::"] {
            for (at, _) in code.match_indices(start) {
                let path: String = code[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                paths.push(path);
            }
        }
        let mut used = BTreeSet::new();
        for path in paths {
            let absolute = if let Some(rest) = path.strip_prefix("crate::") {
                rest.to_string()
            } else if let Some(rest) = path.strip_prefix("super::") {
                if parent == "lib" {
                    rest.to_string()
                } else {
                    format!("{parent}::{rest}")
                }
            } else {
                continue;
            };
            let segments: Vec<&str> = absolute.split("::").collect();
            let target = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|m| modules.contains(m))
                .unwrap_or_else(|| "lib".to_string());
            let related = target.starts_with(&format!("{module}::"))
                || module.starts_with(&format!("{target}::"));
            if target != module && !related {
                used.insert(target);
            }
        }
        uses.insert(module, used);
    }
    uses
}

/// The paths a `use` tree (without spaces) names: `a::{b, c::{d, e}}` is `a::b`,
/// `a::c::d` and `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_use(&format!("{prefix}{p}")))
        .map(|p| p.trim_end_matches("::self").to_string())
        .collect()
}

/// A cycle in `uses`, if there is one.
fn find_cycle(uses: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        uses: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in uses.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, uses, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    uses.keys()
        .find_map(|start| visit(start, uses, &mut Vec::new(), &mut done))
}

#[test]
fn the_gateways_modules_import_each_other_in_no_circle() {
    let uses = gateway_module_uses();
    assert!(uses.len() > 20, "{uses:?}");
    assert!(
        uses["sse::hub"].contains("sse::log"),
        "the reader misses uses: {:?}",
        uses["sse::hub"]
    );
    if let Some(cycle) = find_cycle(&uses) {
        panic!(
            "the gateway's modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn use_trees_expand_and_circles_are_found() {
    assert_eq!(
        expand_use("super::{frame,history::{self,History},log::Log}"),
        [
            "super::frame",
            "super::history",
            "super::history::History",
            "super::log::Log"
        ]
    );
    let graph = |edges: &[(&str, &str)]| {
        let mut uses = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for (from, to) in edges {
            uses.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            uses.entry(to.to_string()).or_default();
        }
        uses
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
