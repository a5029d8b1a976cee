//! `streamcdn check-config FILE [--role ROLE]`: loads and validates a file the way a
//! role's start does, then says what that role will bind: only the listeners the role
//! opens, each marked when it is every interface and when it comes from a default
//! rather than the file, so an operator sees what a server will expose before it does.

use std::net::SocketAddr;
use std::path::Path;

use streamcdn_config::{Config, Listen};

/// The process roles `check-config` knows; `Up` is every role at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckedRole {
    Up,
    Ingest,
    Edge,
    Archiver,
    Router,
}

impl CheckedRole {
    fn name(self) -> &'static str {
        match self {
            CheckedRole::Up => "up",
            CheckedRole::Ingest => "ingest",
            CheckedRole::Edge => "edge",
            CheckedRole::Archiver => "archiver",
            CheckedRole::Router => "router",
        }
    }

    /// The role a file is for when its name says so (`ingest.toml`, as the systemd
    /// units name them).
    pub fn from_file_name(file: &Path) -> Option<CheckedRole> {
        let stem = file.file_stem()?.to_str()?;
        [
            CheckedRole::Up,
            CheckedRole::Ingest,
            CheckedRole::Edge,
            CheckedRole::Archiver,
            CheckedRole::Router,
        ]
        .into_iter()
        .find(|role| role.name() == stem)
    }
}

/// One listener a role opens: what it serves, its dotted key and where it binds.
struct Listener {
    what: &'static str,
    key: &'static str,
    addr: SocketAddr,
}

fn listeners(role: CheckedRole, config: &Config) -> Vec<Listener> {
    let mut found = Vec::new();
    let mut add = |what, key, listen: Listen| {
        if let Some(addr) = listen.addr() {
            found.push(Listener { what, key, addr });
        }
    };
    let ingest = matches!(role, CheckedRole::Up | CheckedRole::Ingest);
    let edge = matches!(role, CheckedRole::Up | CheckedRole::Edge);
    let router = matches!(role, CheckedRole::Up | CheckedRole::Router);
    if ingest {
        add("RTMP", "rtmp.listen", Listen::At(config.rtmp.listen));
        add("RTMPS", "rtmp.tls_listen", config.rtmp.tls_listen);
        add("SRT (UDP)", "srt.listen", config.srt.listen);
        add("WebRTC (UDP)", "webrtc.listen", config.webrtc.listen);
        add(
            "HTTP origin",
            "origin.listen",
            Listen::At(config.origin.listen),
        );
    }
    if edge {
        add(
            "playback (HTTP)",
            "http.listen",
            Listen::At(config.http.listen),
        );
        add(
            "playback (HTTPS)",
            "http.tls_listen",
            config.http.tls_listen,
        );
    }
    if router {
        add(
            "DNS (UDP and TCP)",
            "router.dns_listen",
            Listen::At(config.router.dns_listen),
        );
        add(
            "HTTP redirects and RUM",
            "router.http_listen",
            Listen::At(config.router.http_listen),
        );
        add(
            "federation (mutual TLS)",
            "federation.listen",
            config.federation.listen,
        );
    }
    add("admin API", "admin.listen", Listen::At(config.admin.listen));
    found
}

/// Whether the TOML document sets the dotted `key`.
fn sets(document: &toml::Table, key: &str) -> bool {
    let mut table = document;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        match table.get(part) {
            Some(toml::Value::Table(inner)) if parts.peek().is_some() => table = inner,
            Some(_) => return parts.peek().is_none(),
            None => return false,
        }
    }
    false
}

/// The report for a file that loaded: the role, then each listener on its own line.
pub fn report(file: &Path, text: &str, config: &Config, role: CheckedRole, named: bool) -> String {
    let document: toml::Table = text.parse().unwrap_or_default();
    let how = if named {
        ""
    } else {
        "; name another with --role"
    };
    let mut out = format!(
        "{}: OK ({} provider(s); as the {} role{how})\n",
        file.display(),
        config.providers.len(),
        role.name()
    );
    out.push_str(&format!("the {} role listens on:\n", role.name()));
    for listener in listeners(role, config) {
        let mut notes = Vec::new();
        if listener.addr.ip().is_unspecified() {
            notes.push("every interface".to_owned());
        }
        if !sets(&document, listener.key) {
            notes.push(format!("default: set {} to change it", listener.key));
        }
        let line = if notes.is_empty() {
            format!("  {:<24} {}\n", listener.what, listener.addr)
        } else {
            format!(
                "  {:<24} {:<22} ({})\n",
                listener.what,
                listener.addr.to_string(),
                notes.join("; ")
            )
        };
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, role: CheckedRole) -> String {
        let config = Config::parse(text, Path::new("x.toml")).unwrap();
        report(Path::new("x.toml"), text, &config, role, true)
    }

    #[test]
    fn an_ingest_lists_only_what_it_binds_and_flags_wildcards_and_defaults() {
        let text = "[origin]\nlisten = \"10.0.0.5:8088\"\n\n[rtmp]\ntls_listen = \"off\"\n";
        let out = check(text, CheckedRole::Ingest);
        assert!(
            out.contains("RTMP ") && out.contains("0.0.0.0:1935"),
            "{out}"
        );
        assert!(
            out.contains("every interface; default: set rtmp.listen"),
            "{out}"
        );
        assert!(
            out.contains("10.0.0.5:8088") && !out.contains("RTMPS"),
            "{out}"
        );
        assert!(!out.contains("8080") && !out.contains("8443"), "{out}");
        assert!(!out.contains("5353") && !out.contains("9443"), "{out}");
        let line = out.lines().find(|l| l.contains("HTTP origin")).unwrap();
        assert!(!line.contains('('), "set and not a wildcard: {line}");
    }

    #[test]
    fn each_role_names_its_own_listeners() {
        let edge = check("", CheckedRole::Edge);
        assert!(
            edge.contains("0.0.0.0:8080") && edge.contains("0.0.0.0:8443"),
            "{edge}"
        );
        assert!(!edge.contains("1935"), "{edge}");
        let archiver = check("", CheckedRole::Archiver);
        assert_eq!(
            archiver.lines().filter(|l| l.starts_with("  ")).count(),
            1,
            "{archiver}"
        );
        let router = check("", CheckedRole::Router);
        assert!(
            router.contains("5353") && router.contains("8082"),
            "{router}"
        );
        let up = check("", CheckedRole::Up);
        for port in ["1935", "8088", "8080", "5353", "8081"] {
            assert!(up.contains(port), "{port}: {up}");
        }
    }

    #[test]
    fn roles_are_found_by_file_name() {
        assert_eq!(
            CheckedRole::from_file_name(Path::new("/etc/streamcdn/edge.toml")),
            Some(CheckedRole::Edge)
        );
        assert_eq!(CheckedRole::from_file_name(Path::new("mine.toml")), None);
    }
}
