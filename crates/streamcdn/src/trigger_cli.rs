//! `streamcdn trigger purge|invalidate|preposition URL...`: posts an RFC 8007 command
//! to a CIS's admin API and follows it (polling with `If-None-Match`) until it is final,
//! printing the status and how many servers are done. Succeeds only on `complete`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::http::{header, Method, StatusCode};
use streamcdn_cdni::wire::PayloadType;
use streamcdn_cdni::{parse_status, TriggerStatus};

use streamcdn_federation::call::{call, client, Client};
use streamcdn_federation::shared::{ACTIVE_CIS_HEADER, TRIGGERS_PATH};
use streamcdn_registry::{NodeRecord, Role};

const POLL_EVERY: Duration = Duration::from_millis(25);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The command's JSON: `content.urls` and, unless prepositioning, `content.patterns`.
pub fn command_json(operation: &str, urls: &[String], patterns: &[String]) -> serde_json::Value {
    let mut trigger = serde_json::Map::new();
    trigger.insert("type".into(), operation.into());
    if !urls.is_empty() {
        trigger.insert("content.urls".into(), urls.into());
    }
    if !patterns.is_empty() {
        let patterns: Vec<_> = patterns
            .iter()
            .map(|p| serde_json::json!({ "pattern": p }))
            .collect();
        trigger.insert("content.patterns".into(), patterns.into());
    }
    serde_json::json!({ "trigger": trigger })
}

/// The admin token to send: given, else `STREAMCDN_ADMIN_TOKEN`, else the one `up`
/// generated in `./data/admin-token` (the quickstart's directory), else none.
pub fn admin_token(given: Option<&str>) -> Option<String> {
    given
        .map(str::to_owned)
        .or_else(|| std::env::var("STREAMCDN_ADMIN_TOKEN").ok())
        .or_else(|| {
            std::fs::read_to_string(
                std::path::Path::new("data").join(crate::quickstart::ADMIN_TOKEN_FILE),
            )
            .ok()
            .map(|t| t.trim().to_owned())
        })
        .filter(|t| !t.is_empty())
}

/// Runs the command; `Ok(true)` when it completed.
pub async fn run(
    admin: &str,
    token: Option<&str>,
    operation: &str,
    urls: &[String],
    patterns: &[String],
    timeout: Duration,
) -> anyhow::Result<bool> {
    let client = client();
    let admin = admin.trim_end_matches('/');
    let body = serde_json::to_vec(&command_json(operation, urls, patterns))?;
    let bearer: Vec<(&str, String)> = token
        .map(|t| ("authorization", format!("Bearer {t}")))
        .into_iter()
        .collect();
    let mut headers = bearer.clone();
    headers.push((
        "content-type",
        PayloadType::Command.content_type().to_owned(),
    ));
    let admin = find_cis(&client, admin, &bearer).await?;
    let url = format!("{admin}{TRIGGERS_PATH}");
    let started = Instant::now();
    let (status, answer_headers, answer) =
        call(&client, Method::POST, &url, &headers, body, CALL_TIMEOUT)
            .await
            .with_context(|| format!("cannot send the command to {url}"))?;
    if status != StatusCode::CREATED {
        bail!(
            "{url} refused the command: {status}: {}",
            String::from_utf8_lossy(&answer).trim()
        );
    }
    let location = answer_headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the CIS gave no Location")?
        .to_owned();
    println!("{operation}: trigger {location}");
    let mut etag = String::new();
    let mut last_line = String::new();
    loop {
        let mut conditional = bearer.clone();
        conditional.push(("if-none-match", etag.clone()));
        let (status, headers, body) = call(
            &client,
            Method::GET,
            &location,
            &conditional,
            Vec::new(),
            CALL_TIMEOUT,
        )
        .await
        .with_context(|| format!("cannot follow the trigger at {location}"))?;
        if status == StatusCode::OK {
            etag = headers
                .get(header::ETAG)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let resource = parse_status(content_type, &body)
                .map_err(|e| anyhow::anyhow!("{location}: {e}"))?;
            let servers = format!("{location}/servers");
            let (_, _, list) = call(
                &client,
                Method::GET,
                &servers,
                &bearer,
                Vec::new(),
                CALL_TIMEOUT,
            )
            .await
            .with_context(|| format!("cannot read the servers' states at {servers}"))?;
            let list: Vec<serde_json::Value> = serde_json::from_slice(&list).unwrap_or_default();
            let done = list
                .iter()
                .filter(|s| s["state"] == "complete" || s["state"] == "failed")
                .count();
            let line =
                format!("{:?}, servers {done}/{} done", resource.status, list.len()).to_lowercase();
            if line != last_line {
                println!("  {:>7.3} s  {line}", started.elapsed().as_secs_f64());
                last_line = line;
            }
            if resource.status.is_final() {
                for server in &list {
                    println!(
                        "  {} {}",
                        server["server"].as_str().unwrap_or("?"),
                        server["state"].as_str().unwrap_or("?")
                    );
                }
                for error in &resource.errors {
                    println!(
                        "  error {}: {}",
                        error.error.as_str(),
                        error.description.as_deref().unwrap_or("")
                    );
                }
                return Ok(resource.status == TriggerStatus::Complete);
            }
        } else if status != StatusCode::NOT_MODIFIED {
            bail!(
                "{location} answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            );
        }
        if started.elapsed() > timeout {
            bail!("not final after {timeout:?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// What one admin API says to the trigger API.
enum CisAnswer {
    /// It is the active CIS.
    Active,
    /// A CIS standing by, naming the active one's admin API.
    StandingBy(String),
    /// No CIS there (an ingest's, edge's or archiver's admin API).
    NotACis,
}

async fn ask_cis(
    client: &Client,
    admin: &str,
    bearer: &[(&str, String)],
) -> anyhow::Result<CisAnswer> {
    let url = format!("{admin}{TRIGGERS_PATH}");
    let (status, headers, body) = call(client, Method::GET, &url, bearer, Vec::new(), CALL_TIMEOUT)
        .await
        .with_context(|| {
            format!("cannot reach the admin API at {admin} (asked {url}); --admin names the admin API of a server running `up` or `router`")
        })?;
    match status {
        StatusCode::OK => Ok(CisAnswer::Active),
        StatusCode::NOT_FOUND => Ok(CisAnswer::NotACis),
        StatusCode::SERVICE_UNAVAILABLE => match headers
            .get(ACTIVE_CIS_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(active) => Ok(CisAnswer::StandingBy(active.trim_end_matches('/').to_owned())),
            None => bail!("{url} answered {status}: {}", String::from_utf8_lossy(&body).trim()),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => bail!(
            "{url} answered {status}: give an admin token (--token, $STREAMCDN_ADMIN_TOKEN or ./data/admin-token)"
        ),
        _ => bail!("{url} answered {status}: {}", String::from_utf8_lossy(&body).trim()),
    }
}

/// The admin API of the active CIS: `admin` itself, the active one a standby names, or
/// (when `admin` runs no CIS, like an ingest's) a router found in its node directory.
async fn find_cis(
    client: &Client,
    admin: &str,
    bearer: &[(&str, String)],
) -> anyhow::Result<String> {
    match ask_cis(client, admin, bearer).await? {
        CisAnswer::Active => return Ok(admin.to_owned()),
        CisAnswer::StandingBy(active) => {
            println!("{admin} stands by; the active CIS is {active}");
            return Ok(active);
        }
        CisAnswer::NotACis => {}
    }
    let url = format!("{admin}/api/v1/nodes");
    let (status, _, body) = call(client, Method::GET, &url, bearer, Vec::new(), CALL_TIMEOUT)
        .await
        .with_context(|| format!("cannot read the node directory at {url}"))?;
    if status != StatusCode::OK {
        bail!("{admin} runs no CIS, and {url} answered {status}: name the CIS's admin API with --admin");
    }
    let nodes: Vec<NodeRecord> = serde_json::from_slice(&body)
        .with_context(|| format!("{url} did not answer a node list"))?;
    let candidates = cis_candidates(&nodes);
    for candidate in &candidates {
        let found = match ask_cis(client, candidate, bearer).await {
            Ok(CisAnswer::Active) => candidate.clone(),
            Ok(CisAnswer::StandingBy(active)) => active,
            Ok(CisAnswer::NotACis) | Err(_) => continue,
        };
        println!("{admin} runs no CIS; found the CIS at {found} in its node directory");
        return Ok(found);
    }
    bail!(
        "{admin} runs no CIS and none of the routers in its node directory answered ({}): name the CIS's admin API with --admin",
        if candidates.is_empty() { "none listed with an admin address".to_owned() } else { candidates.join(", ") }
    )
}

/// The admin APIs of the servers that run a CIS (`router`, `up`), as announced.
fn cis_candidates(nodes: &[NodeRecord]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.roles.contains(&Role::Router))
        .filter_map(|n| n.addresses.admin.as_ref())
        .map(|a| a.trim_end_matches('/').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use streamcdn_registry::NodeAddresses;

    #[test]
    fn routers_with_an_admin_address_are_the_cis_candidates() {
        let node = |id: &str, roles: Vec<Role>, admin: Option<&str>| NodeRecord {
            id: id.into(),
            cluster: "c".into(),
            origin: String::new(),
            roles,
            site: String::new(),
            addresses: NodeAddresses {
                admin: admin.map(str::to_owned),
                ..NodeAddresses::default()
            },
            load: Default::default(),
            capacity: None,
            draining: false,
        };
        let nodes = [
            node("ingest", vec![Role::Ingest], Some("http://10.0.0.1:8081")),
            node("router", vec![Role::Router], Some("http://10.0.0.2:8081/")),
            node("hidden", vec![Role::Router], None),
            node(
                "up",
                vec![Role::Ingest, Role::Edge, Role::Router],
                Some("http://10.0.0.3:8081"),
            ),
        ];
        assert_eq!(
            cis_candidates(&nodes),
            ["http://10.0.0.2:8081", "http://10.0.0.3:8081"]
        );
    }

    #[test]
    fn commands_parse_as_the_cis_reads_them() {
        let json = command_json(
            "purge",
            &["http://h/p/s/r/000001.m4s".into()],
            &["*/p/s/*".into()],
        );
        let bytes = serde_json::to_vec(&json).unwrap();
        let parsed = streamcdn_cdni::parse_operator_command(
            Some(PayloadType::Command.content_type()),
            &bytes,
        );
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
