//! A configuration as delegated between participants, shaped after RFC 8006: a host
//! index whose hosts carry `MI.SourceMetadata` (where to fetch from) and
//! `MI.CachePolicy` (the cache rule), plus the configuration's id and owner.

use serde::{Deserialize, Serialize};
use streamcdn_cdni::CdnPid;

/// A configuration as delegated, shaped after RFC 8006: a host index whose hosts carry
/// `MI.SourceMetadata` naming where to fetch from, plus the configuration's id and
/// owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigurationDocument {
    pub id: String,
    pub owner: CdnPid,
    pub hosts: Vec<HostEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub host: String,
    #[serde(rename = "host-metadata")]
    pub host_metadata: HostMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMetadata {
    pub metadata: Vec<GenericMetadata>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericMetadata {
    #[serde(rename = "generic-metadata-type")]
    pub kind: String,
    #[serde(rename = "generic-metadata-value")]
    pub value: serde_json::Value,
}

const SOURCE_METADATA: &str = "MI.SourceMetadata";
const CACHE_POLICY: &str = "MI.CachePolicy";
/// Largest configuration document taken.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

impl ConfigurationDocument {
    /// `max_ttl_secs`: the cache rule, as `MI.CachePolicy` `internal` (RFC 8006 §4.2.5).
    pub fn new(
        id: &str,
        owner: CdnPid,
        hostnames: &[String],
        origin: &str,
        max_ttl_secs: Option<u64>,
    ) -> Self {
        let (scheme, endpoint) = origin.split_once("://").unwrap_or(("http", origin));
        let source = serde_json::json!({
            "sources": [{
                "endpoints": [endpoint.trim_end_matches('/')],
                "protocol": if scheme == "https" { "https/1.1" } else { "http/1.1" },
            }]
        });
        let mut metadata = vec![GenericMetadata {
            kind: SOURCE_METADATA.into(),
            value: source,
        }];
        if let Some(secs) = max_ttl_secs {
            metadata.push(GenericMetadata {
                kind: CACHE_POLICY.into(),
                value: serde_json::json!({ "internal": secs, "external": "as-is" }),
            });
        }
        ConfigurationDocument {
            id: id.to_owned(),
            owner,
            hosts: hostnames
                .iter()
                .map(|host| HostEntry {
                    host: host.to_ascii_lowercase(),
                    host_metadata: HostMetadata {
                        metadata: metadata.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Parses and checks a received document: hostnames, one http source.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        let document: ConfigurationDocument =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if document.id.is_empty()
            || document.id.len() > 64
            || !document
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!(
                "id {:?}: 1-64 letters, digits, '-', '_', '.'",
                document.id
            ));
        }
        if document.hosts.is_empty() || document.hosts.len() > 100 {
            return Err("hosts: 1 to 100 entries".into());
        }
        for host in &document.hosts {
            let name = &host.host;
            if name.is_empty()
                || name.len() > 253
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'))
            {
                return Err(format!("host {name:?} is not a DNS name"));
            }
        }
        document.origin()?;
        Ok(document)
    }

    /// The cache rule: the first host's `MI.CachePolicy` `internal` seconds, if any.
    pub fn max_ttl_secs(&self) -> Option<u64> {
        self.hosts
            .first()?
            .host_metadata
            .metadata
            .iter()
            .find(|m| m.kind == CACHE_POLICY)?
            .value
            .get("internal")?
            .as_u64()
    }

    pub fn hostnames(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| h.host.to_ascii_lowercase())
            .collect()
    }

    /// Where carrying edges fetch from: the first host's first `MI.SourceMetadata`
    /// endpoint, as `http://endpoint`.
    pub fn origin(&self) -> Result<String, String> {
        let source = self
            .hosts
            .first()
            .and_then(|h| {
                h.host_metadata
                    .metadata
                    .iter()
                    .find(|m| m.kind == SOURCE_METADATA)
            })
            .ok_or("no MI.SourceMetadata")?;
        let first = source
            .value
            .get("sources")
            .and_then(|s| s.get(0))
            .ok_or("MI.SourceMetadata has no sources")?;
        let endpoint = first
            .get("endpoints")
            .and_then(|e| e.get(0))
            .and_then(|e| e.as_str())
            .ok_or("the source has no endpoints")?;
        let protocol = first
            .get("protocol")
            .and_then(|p| p.as_str())
            .unwrap_or("http/1.1");
        if protocol != "http/1.1" {
            return Err(format!(
                "source protocol {protocol:?}: only http/1.1 is fetched"
            ));
        }
        if endpoint.is_empty()
            || endpoint.len() > 261
            || endpoint.contains(['/', '?', '#', '@', ' '])
        {
            return Err(format!("endpoint {endpoint:?} is not host[:port]"));
        }
        Ok(format!("http://{endpoint}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_name_their_origin() {
        let owner: CdnPid = "AS64496:1".parse().unwrap();
        let document = ConfigurationDocument::new(
            "live-a",
            owner,
            &["Live.A.test".into()],
            "http://127.0.1.1:8080/",
            Some(30),
        );
        let bytes = serde_json::to_vec(&document).unwrap();
        let parsed = ConfigurationDocument::parse(&bytes).unwrap();
        assert_eq!(parsed, document);
        assert_eq!(parsed.origin().unwrap(), "http://127.0.1.1:8080");
        assert_eq!(parsed.hostnames(), ["live.a.test"]);
        assert_eq!(parsed.max_ttl_secs(), Some(30));
        let without =
            ConfigurationDocument::new("x", owner, &["x.test".into()], "http://h:1", None);
        assert_eq!(without.max_ttl_secs(), None);
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.contains("\"generic-metadata-type\":\"MI.SourceMetadata\"")
                && text.contains("\"generic-metadata-type\":\"MI.CachePolicy\""),
            "{text}"
        );
        for bad in [
            text.replace("127.0.1.1:8080", "evil/path"),
            text.replace("live.a.test", "live a"),
            text.replace("live-a", "../x"),
            "{".into(),
        ] {
            assert!(
                ConfigurationDocument::parse(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }
}
