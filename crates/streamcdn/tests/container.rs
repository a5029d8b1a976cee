//! The container image and the compose cluster stay deployable:
//!
//! - `image_runs_up_and_a_stream_plays_through_it`: scripts/container-smoke.sh with this
//!   build's binary: podman builds the Dockerfile's `runtime-prebuilt` target over a
//!   Debian base bootstrapped on this machine, runs its default command (`streamcdn up`)
//!   with published ports, ffmpeg publishes over RTMP and ffprobe decodes the HLS played
//!   back; the admin API answers with the generated token; SIGTERM stops it cleanly.
//! - `compose_file_runs_roles_with_valid_mounted_configs`: deploy/compose/compose.yaml
//!   runs every server role with a file of deploy/compose/config/ that passes
//!   `check-config` and the role's own start checks, keeps each role's data directory on a
//!   volume, and names in its URLs only hosts the compose network resolves; its
//!   haproxy.cfg passes `haproxy -c`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;
use streamcdn_config::{Config, RegistryBackend};

const BIN: &str = env!("CARGO_BIN_EXE_streamcdn");

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn image_runs_up_and_a_stream_plays_through_it() {
    for (tool, package) in [
        ("podman", "podman runc"),
        ("ffmpeg", "ffmpeg"),
        ("ffprobe", "ffmpeg"),
        ("curl", "curl"),
    ] {
        common::tool_or(tool, &format!("apt-get install {package}"));
    }
    let script = workspace_root().join("scripts/container-smoke.sh");
    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .arg(BIN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    // Reading both pipes to the end lets the script run to its own exit; a hang is cut
    // off by the test runner's timeout, and the script removes its container on exit.
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || std::io::read_to_string(stdout));
    let err_reader = std::thread::spawn(move || std::io::read_to_string(stderr));
    let status = child.wait().expect("wait for the smoke script");
    let out = Output {
        status,
        stdout: out_reader.join().unwrap().unwrap_or_default().into_bytes(),
        stderr: err_reader.join().unwrap().unwrap_or_default().into_bytes(),
    };
    assert!(
        out.status.success(),
        "scripts/container-smoke.sh failed (it says which tool or step; `apt-get install podman runc debootstrap` \
         and root are what it needs beyond ffmpeg and curl): {}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("container smoke: OK"),
        "the smoke script exited 0 without its verdict: {}",
        describe(&out)
    );
    println!("{stdout}(test: {:.1} s)", started.elapsed().as_secs_f64());
}

/// The compose file as JSON (compose files are YAML; PyYAML reads them).
fn compose_file(path: &Path) -> Value {
    let out = Command::new(common::tool_or("python3", "apt-get install python3"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} does not parse as YAML (PyYAML: `apt-get install python3-yaml`): {}",
        path.display(),
        describe(&out)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML writes JSON")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The host of an `http://` or `redis://` URL.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .to_owned()
}

#[test]
fn compose_file_runs_roles_with_valid_mounted_configs() {
    let dir = workspace_root().join("deploy/compose");
    let compose = compose_file(&dir.join("compose.yaml"));
    let services = compose["services"]
        .as_object()
        .expect("compose.yaml has services");
    let volumes: BTreeSet<&str> = compose["volumes"]
        .as_object()
        .map(|v| v.keys().map(String::as_str).collect())
        .unwrap_or_default();

    // Every name the compose network resolves.
    let names: BTreeSet<String> = services.keys().cloned().collect();

    let mut roles_run = BTreeMap::new();
    for (name, service) in services {
        let command = strings(&service["command"]);
        let Some(role) = command.first() else {
            continue;
        };
        if !["ingest", "edge", "archiver", "router", "up"].contains(&role.as_str()) {
            continue;
        }
        let image = service["image"].as_str().unwrap_or_default();
        assert!(
            image.contains("streamcdn"),
            "service {name} runs `{role}` on image {image:?}, not the streamcdn image"
        );
        let config_at = command
            .iter()
            .position(|arg| arg == "--config")
            .and_then(|i| command.get(i + 1))
            .unwrap_or_else(|| panic!("service {name}: `{role}` without --config: {command:?}"));

        // The file mounted at --config, and the named volumes with where they are mounted.
        let mut config_file = None;
        let mut volume_targets = Vec::new();
        for mount in strings(&service["volumes"]) {
            let parts: Vec<&str> = mount.split(':').collect();
            let (source, target) = (parts[0], parts.get(1).copied().unwrap_or_default());
            if target == config_at {
                assert!(
                    parts.get(2) == Some(&"ro"),
                    "service {name}: mount its configuration read-only: {mount}"
                );
                config_file = Some(dir.join(source));
            } else if volumes.contains(source) {
                volume_targets.push(PathBuf::from(target));
            }
        }
        let config_file = config_file.unwrap_or_else(|| {
            panic!("service {name}: nothing is mounted at its --config {config_at}")
        });

        let out = Command::new(BIN)
            .arg("check-config")
            .arg(&config_file)
            .output()
            .expect("run streamcdn check-config");
        assert!(
            out.status.success(),
            "service {name}: streamcdn check-config {}: {}",
            config_file.display(),
            describe(&out)
        );
        let config =
            Config::load(&config_file).unwrap_or_else(|e| panic!("{}: {e}", config_file.display()));
        // What main.rs checks when the role starts, beyond check-config.
        let redis = config.registry.backend == RegistryBackend::Redis;
        match role.as_str() {
            "ingest" => assert!(!config.providers.is_empty(), "{name}: no [[providers]]"),
            "edge" => assert!(redis, "{name}: an edge of the cluster uses the registry"),
            "archiver" | "router" => assert!(redis, "{name}: needs registry.backend = \"redis\""),
            _ => {}
        }
        assert!(
            volume_targets
                .iter()
                .any(|target| config.node.data_dir.starts_with(target)),
            "service {name}: node.data_dir {} is on none of its volumes {volume_targets:?}: its state would \
             not survive the container",
            config.node.data_dir.display()
        );

        // Every other server it reaches is a name of the compose network.
        let mut reached = vec![config.registry.url.clone()];
        reached.extend(config.edge.parents.clone());
        reached.extend(config.origin.advertise.clone());
        reached.extend(config.archive.s3.endpoint.clone());
        reached.extend(config.http.advertise.clone());
        for url in reached.iter().filter(|url| !url.is_empty()) {
            let host = url_host(url);
            assert!(
                host == "127.0.0.1" || names.contains(&host),
                "service {name}: {url} names {host}, which is no service of compose.yaml ({names:?})"
            );
        }
        roles_run.insert(name.clone(), (role.clone(), config));
    }

    let mut roles: Vec<&str> = roles_run.values().map(|(r, _)| r.as_str()).collect();
    roles.sort();
    assert_eq!(
        roles,
        ["archiver", "edge", "edge", "ingest", "ingest", "router"],
        "the README's cluster: 2 ingest, archiver, mid-tier and edge, router"
    );
    for other in ["redis", "s3", "haproxy"] {
        assert!(services.contains_key(other), "compose.yaml has no {other}");
    }
    let redis_command = strings(&services["redis"]["command"]).join(" ");
    assert!(
        redis_command.contains("--appendonly yes"),
        "Redis keeps the registry on disk: {redis_command}"
    );

    // The ingest servers and the archiver share one data directory.
    let ingest_dirs: BTreeSet<&Path> = roles_run
        .values()
        .filter(|(role, _)| role == "ingest" || role == "archiver")
        .map(|(_, config)| config.node.data_dir.as_path())
        .collect();
    assert_eq!(
        ingest_dirs.len(),
        1,
        "ingest servers and their archiver share node.data_dir: {ingest_dirs:?}"
    );

    let haproxy = common::tool_or("haproxy", "apt-get install haproxy");
    let out = Command::new(haproxy)
        .args(["-c", "-f"])
        .arg(dir.join("haproxy.cfg"))
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c -f deploy/compose/haproxy.cfg: {}",
        describe(&out)
    );
    let text = std::fs::read_to_string(dir.join("haproxy.cfg")).expect("read haproxy.cfg");
    for (name, (role, _)) in &roles_run {
        if role == "ingest" {
            assert!(
                text.contains(&format!("{name}:1935")),
                "haproxy.cfg does not send publishers to {name}:1935"
            );
        }
    }
}
