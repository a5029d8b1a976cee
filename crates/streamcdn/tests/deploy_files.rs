//! The deployment aids in `deploy/` stay true to the code they deploy:
//!
//! - `deploy/grafana/streamcdn.json` selects only metrics the code records, each the way
//!   its type allows (counters through `rate`/`increase`, `_bucket` only for histograms
//!   the exporter gives buckets), with a unit, legends and the `$instance` variable;
//! - `deploy/systemd/streamcdn-<role>.service` exists for every server subcommand of the
//!   binary, and runs that subcommand with flags it has, after `check-config` on the
//!   same file, for longer than the shutdown grace; `systemd-analyze verify` accepts the
//!   units when it is installed;
//! - every `deploy/config/<role>.toml` passes `streamcdn check-config` and what its role
//!   checks at start.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use streamcdn_config::{Config, RegistryBackend};

const BIN: &str = env!("CARGO_BIN_EXE_streamcdn");
/// Where the units expect the binary (their install steps put it there).
const INSTALLED_BIN: &str = "/usr/local/bin/streamcdn";
/// Series Prometheus itself adds to every scrape target.
const PROMETHEUS_SERIES: &[&str] = &["up", "scrape_duration_seconds", "scrape_samples_scraped"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Files of `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    found
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_bin(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

// ------------------------------------------------------------------ the binary's CLI

/// The binary's subcommands, from `streamcdn --help`.
fn subcommands() -> Vec<String> {
    let out = run_bin(&["--help"]);
    assert!(out.status.success(), "streamcdn --help: {}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let commands: Vec<String> = help
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        // A continuation of a long description is indented further.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    assert!(
        !commands.is_empty(),
        "no subcommands found in streamcdn --help:\n{help}"
    );
    commands
}

/// `streamcdn <command> --help`.
fn command_help(command: &str) -> String {
    let out = run_bin(&[command, "--help"]);
    assert!(
        out.status.success(),
        "streamcdn {command} --help: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The subcommands that run a server: the ones taking `--config` (not `check-config`,
/// which takes a file argument, nor the `trigger` client).
fn server_roles() -> Vec<String> {
    subcommands()
        .into_iter()
        .filter(|command| command_help(command).contains("--config"))
        .collect()
}

// ------------------------------------------------------------------ systemd units

/// A unit file as (section, key, value) entries, comments and blank lines left out.
struct Unit {
    path: PathBuf,
    sections: BTreeSet<String>,
    entries: Vec<(String, String, String)>,
}

impl Unit {
    fn parse(path: &Path) -> Unit {
        let text = read(path);
        let mut sections = BTreeSet::new();
        let mut entries = Vec::new();
        let mut section = String::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
                sections.insert(section.clone());
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{}:{}: not `Key=value`: {line}", path.display(), n + 1));
            assert!(
                !section.is_empty(),
                "{}:{}: entry outside any section",
                path.display(),
                n + 1
            );
            entries.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
        Unit {
            path: path.to_owned(),
            sections,
            entries,
        }
    }

    fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
            .collect()
    }

    /// The one value of `key` in `section`.
    fn one(&self, section: &str, key: &str) -> &str {
        match self.all(section, key).as_slice() {
            [value] => value,
            values => panic!(
                "{}: expected exactly one {key}= in [{section}], found {values:?}",
                self.path.display()
            ),
        }
    }
}

/// A systemd time span as these units write it: `30s`, `2min`, `90`.
fn time_span(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("not a time span: {text:?}"));
    match unit {
        "" | "s" | "sec" => Duration::from_secs(number),
        "min" | "m" => Duration::from_secs(number * 60),
        _ => panic!("unexpected time unit in {text:?}"),
    }
}

#[test]
fn every_server_role_has_a_unit_that_runs_it() {
    let root = workspace_root();
    let roles = server_roles();
    let units = files(&root.join("deploy/systemd"), ".service");
    let sysusers = read(&root.join("deploy/sysusers.d/streamcdn.conf"));
    let declared_users: Vec<&str> = sysusers
        .lines()
        .filter(|l| l.starts_with('u'))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();

    let mut covered = BTreeSet::new();
    for path in &units {
        let unit = Unit::parse(path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for section in ["Unit", "Service", "Install"] {
            assert!(
                unit.sections.contains(section),
                "{name} has no [{section}] section"
            );
        }

        let exec_start = unit.one("Service", "ExecStart");
        let argv: Vec<&str> = exec_start.split_whitespace().collect();
        assert_eq!(
            argv.first(),
            Some(&INSTALLED_BIN),
            "{name}: ExecStart should run {INSTALLED_BIN}"
        );
        let role = *argv
            .get(1)
            .unwrap_or_else(|| panic!("{name}: ExecStart names no subcommand"));
        assert!(
            roles.iter().any(|r| r == role),
            "{name}: ExecStart runs `streamcdn {role}`, which is not a server subcommand of \
             the binary (those are {roles:?})"
        );
        assert_eq!(
            name,
            format!("streamcdn-{role}.service"),
            "a unit is named after the role it runs"
        );
        covered.insert(role.to_owned());

        let help = command_help(role);
        for flag in argv.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(flag),
                "{name}: `streamcdn {role}` has no {flag} flag:\n{help}"
            );
        }
        let config = argv
            .iter()
            .position(|a| *a == "--config")
            .and_then(|i| argv.get(i + 1))
            .unwrap_or_else(|| panic!("{name}: ExecStart passes no --config FILE"));
        assert_eq!(
            *config,
            format!("/etc/streamcdn/{role}.toml"),
            "{name}: the configuration is /etc/streamcdn/<role>.toml"
        );
        let example = root.join(format!("deploy/config/{role}.toml"));
        assert!(
            example.is_file(),
            "{name} runs with {config}, but there is no example {}",
            example.display()
        );
        assert_eq!(
            unit.one("Service", "ExecStartPre"),
            format!("{INSTALLED_BIN} check-config {config}"),
            "{name}: ExecStartPre checks the file ExecStart uses"
        );

        let user = unit.one("Service", "User");
        assert!(
            declared_users.contains(&user),
            "{name} runs as {user}, which deploy/sysusers.d/streamcdn.conf does not create"
        );
        assert_eq!(unit.one("Service", "Restart"), "on-failure", "{name}");
        assert_eq!(unit.one("Service", "KillSignal"), "SIGTERM", "{name}");
        assert!(
            unit.all("Service", "ExecReload").is_empty(),
            "{name}: the binary handles no reload signal (certificates reload by themselves)"
        );
        let loaded = Config::load(&example).unwrap_or_else(|e| panic!("{e}"));
        // `context::run` drains for up to drain_timeout, waits shutdown_grace + 1 s for
        // the roles, then up to 3 s for the node record's withdrawal.
        let grace = loaded.node.shutdown_grace;
        let drain = loaded.node.drain_timeout;
        let stop = time_span(unit.one("Service", "TimeoutStopSec"));
        assert!(
            stop > drain + grace + Duration::from_secs(4),
            "{name}: TimeoutStopSec {stop:?} leaves no room after node.drain_timeout \
             {drain:?} and node.shutdown_grace {grace:?} (+1 s for the roles, +3 s to leave \
             the node directory)"
        );
        assert_eq!(unit.one("Service", "StateDirectory"), "streamcdn", "{name}");
        let data_dir = &loaded.node.data_dir;
        assert!(
            data_dir.starts_with("/var/lib/streamcdn"),
            "{}: node.data_dir {} is outside the unit's writable /var/lib/streamcdn",
            example.display(),
            data_dir.display()
        );
    }

    let missing: Vec<&String> = roles.iter().filter(|r| !covered.contains(*r)).collect();
    assert!(
        missing.is_empty(),
        "server subcommands without a unit in deploy/systemd/: {missing:?}"
    );
    let configs = files(&root.join("deploy/config"), ".toml");
    for config in &configs {
        let role = config.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            covered.contains(&role),
            "{} has no unit deploy/systemd/streamcdn-{role}.service",
            config.display()
        );
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("systemd-analyze"))
            .find(|p| p.is_file())
    }) else {
        println!(
            "systemd-analyze was not found: the units were not verified by systemd \
             (the other checks of deploy/ still ran; `apt-get install systemd` to add this one)"
        );
        return;
    };
    let root = workspace_root();
    // A copy naming the binary just built, which exists (verify checks ExecStart's).
    let dir = std::env::temp_dir().join(format!("streamcdn-deploy-units-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let mut copies = Vec::new();
    for unit in files(&root.join("deploy/systemd"), ".service") {
        let copy = dir.join(unit.file_name().unwrap());
        fs::write(&copy, read(&unit).replace(INSTALLED_BIN, BIN)).unwrap();
        copies.push(copy);
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&copies)
        .output()
        .expect("systemd-analyze runs");
    let _ = fs::remove_dir_all(&dir);
    // Warnings (an unknown key, a bad value) leave the exit status 0: any line about our
    // units counts. Lines about the machine's own units do not.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_ours: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("streamcdn"))
        .collect();
    assert!(
        out.status.success() && about_ours.is_empty(),
        "systemd-analyze verify refuses deploy/systemd/: {}",
        describe(&out)
    );
    println!("systemd-analyze verify accepted {} units", copies.len());
}

// ------------------------------------------------------------------ example configurations

#[test]
fn example_configs_pass_check_config_and_their_roles_checks() {
    let root = workspace_root();
    let configs = files(&root.join("deploy/config"), ".toml");
    assert!(!configs.is_empty(), "no deploy/config/*.toml");
    for path in &configs {
        let out = run_bin(&["check-config", path.to_str().unwrap()]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(": OK"),
            "streamcdn check-config {}: {}",
            path.display(),
            describe(&out)
        );
        // What main.rs checks when the role starts, beyond check-config.
        let config = Config::load(path).unwrap();
        let redis = config.registry.backend == RegistryBackend::Redis;
        let role = path.file_stem().unwrap().to_string_lossy().into_owned();
        match role.as_str() {
            "ingest" => {
                assert!(
                    !config.providers.is_empty(),
                    "{}: the ingest role needs [[providers]]",
                    path.display()
                );
                assert!(
                    config.origin.advertised_url().is_some(),
                    "{}: the ingest role needs origin.advertise with a wildcard listen",
                    path.display()
                );
            }
            "edge" => assert!(
                redis || !config.edge.parents.is_empty(),
                "{}: the edge role needs edge.parents or the Redis registry",
                path.display()
            ),
            "archiver" | "router" => assert!(
                redis,
                "{}: the {role} role needs the Redis registry",
                path.display()
            ),
            _ => {}
        }
    }
}

// ------------------------------------------------------------------ Grafana dashboard

/// Every `.rs` file under `dir`, recursively.
fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source of every crate's `src/`, with all whitespace removed so a macro call
/// reads `counter!("name"` however it is formatted.
fn crate_sources() -> String {
    let mut paths = Vec::new();
    for krate in fs::read_dir(workspace_root().join("crates")).unwrap() {
        let src = krate.unwrap().path().join("src");
        if src.is_dir() {
            rust_sources(&src, &mut paths);
        }
    }
    assert!(!paths.is_empty(), "no sources under crates/*/src");
    paths
        .iter()
        .map(|p| read(p))
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

fn metric_type(sources: &str, name: &str) -> Option<MetricType> {
    [
        ("counter!", MetricType::Counter),
        ("gauge!", MetricType::Gauge),
        ("histogram!", MetricType::Histogram),
    ]
    .into_iter()
    .find(|(mac, _)| sources.contains(&format!("{mac}(\"{name}\"")))
    .map(|(_, kind)| kind)
}

/// The name suffixes the exporter renders as histograms with buckets (the rest are
/// summaries): `Matcher::Suffix("...")` in `admin.rs`.
fn bucketed_suffixes() -> Vec<String> {
    let admin = read(&workspace_root().join("crates/streamcdn/src/admin.rs"));
    let suffixes: Vec<String> = admin
        .split("Matcher::Suffix(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    assert!(
        !suffixes.is_empty(),
        "admin.rs sets buckets for no metric (Matcher::Suffix); this test needs updating"
    );
    suffixes
}

/// Index past the group opened at `start` (`{`, `[` or `(`), quotes respected.
fn skip_group(chars: &[char], start: usize) -> usize {
    let (open, close) = match chars[start] {
        '{' => ('{', '}'),
        '[' => ('[', ']'),
        _ => ('(', ')'),
    };
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_quoted(chars, i) - 1,
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index past the string literal starting at `start`.
fn skip_quoted(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metrics a PromQL expression selects, each with the function applied to it
/// directly (`rate` in `rate(x[5m])`), if any. Label matchers, ranges, strings,
/// variables, numbers, `by (...)` lists and function names are not metrics.
fn selected_metrics(expr: &str) -> Vec<(String, Option<String>)> {
    let chars: Vec<char> = expr.chars().collect();
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let word_at = |i: usize| -> String {
        chars[i..]
            .iter()
            .take_while(|c| is_name_char(**c))
            .collect()
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_quoted(&chars, i);
        } else if c == '{' || c == '[' {
            i = skip_group(&chars, i);
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (is_name_char(chars[i]) || chars[i] == '{' || chars[i] == '}')
            {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_name_char(c) {
            let start = i;
            let word = word_at(i);
            i += word.len();
            let next = next_non_space(i);
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                if chars.get(next) == Some(&'(') {
                    i = skip_group(&chars, next);
                }
                continue;
            }
            if matches!(word.as_str(), "and" | "or" | "unless" | "bool" | "offset") {
                continue;
            }
            let next_word = if next < chars.len() {
                word_at(next)
            } else {
                String::new()
            };
            if chars.get(next) == Some(&'(') || next_word == "by" || next_word == "without" {
                continue; // a function or an aggregation
            }
            // The function whose `(` directly precedes the metric.
            let mut j = start;
            while j > 0 && chars[j - 1].is_whitespace() {
                j -= 1;
            }
            let function = (j > 0 && chars[j - 1] == '(').then(|| {
                let end = j - 1;
                let mut k = end;
                while k > 0 && is_name_char(chars[k - 1]) {
                    k -= 1;
                }
                chars[k..end].iter().collect::<String>()
            });
            found.push((word, function.filter(|f| !f.is_empty())));
        } else {
            i += 1;
        }
    }
    found
}

#[test]
fn selected_metrics_reads_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (le, instance) (rate(streamcdn_x_bucket{job=~"$job", le!="+Inf"}[$__rate_interval]))) / ignoring (a) sum without (b) (streamcdn_g{q="rate(y)"} offset 5m) * 8 + up"#;
    assert_eq!(
        selected_metrics(expr),
        vec![
            ("streamcdn_x_bucket".to_owned(), Some("rate".to_owned())),
            ("streamcdn_g".to_owned(), None),
            ("up".to_owned(), None),
        ]
    );
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

#[test]
fn dashboard_uses_only_metrics_the_code_emits() {
    let path = workspace_root().join("deploy/grafana/streamcdn.json");
    let dashboard: Value = serde_json::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(
        dashboard["__inputs"]
            .as_array()
            .is_some_and(|inputs| inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
        "the dashboard takes its datasource as the DS_PROMETHEUS input"
    );
    assert!(
        dashboard["templating"]["list"]
            .as_array()
            .is_some_and(|vars| vars.iter().any(|v| v["name"] == "instance")),
        "the dashboard has an `instance` variable"
    );

    let sources = crate_sources();
    let bucketed = bucketed_suffixes();
    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("panel {title:?} has no unit"));
        }
        if panel["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!("panel {title:?} does not use ${{DS_PROMETHEUS}}"));
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if target["legendFormat"].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{title:?}: {expr} has no legend"));
            }
            if !expr.contains("instance=~\"$instance\"") {
                problems.push(format!("{title:?}: {expr} ignores the $instance variable"));
            }
            let selected = selected_metrics(expr);
            if selected.is_empty() {
                problems.push(format!("{title:?}: {expr} selects no metric"));
            }
            for (name, function) in selected {
                let counted = matches!(function.as_deref(), Some("rate" | "irate" | "increase"));
                if !name.starts_with("streamcdn_") {
                    if !PROMETHEUS_SERIES.contains(&name.as_str()) {
                        problems.push(format!(
                            "{title:?}: {name} is neither a streamcdn_ metric nor a series \
                             Prometheus adds ({PROMETHEUS_SERIES:?})"
                        ));
                    }
                    continue;
                }
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                checked.insert(base.to_owned());
                if !sources.contains(&format!("\"{base}\"")) {
                    problems.push(format!(
                        "{title:?}: {base} appears nowhere in crates/*/src: the dashboard has \
                         drifted from the code"
                    ));
                    continue;
                }
                let Some(kind) = metric_type(&sources, base) else {
                    problems.push(format!(
                        "{title:?}: {base} is not recorded with metrics::counter!, gauge! or \
                         histogram! with its name as the first argument"
                    ));
                    continue;
                };
                let has_buckets = bucketed.iter().any(|s| base.ends_with(s.as_str()));
                match kind {
                    MetricType::Counter if name != base => {
                        problems.push(format!("{title:?}: {name}: {base} is a counter"))
                    }
                    MetricType::Counter if !counted => problems.push(format!(
                        "{title:?}: counter {name} is used without rate() or increase()"
                    )),
                    MetricType::Gauge if name != base || counted => problems.push(format!(
                        "{title:?}: gauge {name} is used as a counter or a histogram"
                    )),
                    MetricType::Histogram if name.ends_with("_bucket") => {
                        if !has_buckets {
                            problems.push(format!(
                                "{title:?}: {base} is rendered as a summary (admin.rs sets \
                                 buckets only for names ending in {bucketed:?}): it has no \
                                 _bucket series; use its quantile label"
                            ));
                        }
                        if !counted || !expr.contains("histogram_quantile") {
                            problems.push(format!(
                                "{title:?}: {name} belongs in histogram_quantile(φ, sum by \
                                 (le) (rate(...)))"
                            ));
                        }
                    }
                    MetricType::Histogram if name == base => {
                        if has_buckets {
                            problems.push(format!(
                                "{title:?}: {base} is a histogram with buckets: select \
                                 {base}_bucket, _sum or _count"
                            ));
                        } else if !expr.contains("quantile=") {
                            problems.push(format!(
                                "{title:?}: summary {base} is selected without its quantile \
                                 label"
                            ));
                        }
                    }
                    MetricType::Histogram if !counted => problems.push(format!(
                        "{title:?}: {name} is a counter: use rate() or increase()"
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}:\n  {}",
        path.display(),
        problems.join("\n  ")
    );
    assert!(
        checked.len() >= 20,
        "the dashboard shows only {} streamcdn metrics: {checked:?}",
        checked.len()
    );
}
