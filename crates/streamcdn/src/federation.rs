//! This deployment as a participant of a CDN federation: its mutual-TLS identity, its
//! partners and the HTTPS clients that call them, and the configuration documents
//! exchanged on delegation.
//!
//! A participant's certificate names its CDN PID as the subject's common name
//! (`CN=AS64496:1`) and chains to a CA both sides trust (`federation.ca`). The
//! federation listener asks every client for a certificate and checks it against that
//! CA; a client checks the server's against the same CA and that it names the partner
//! it meant to call. With nothing configured, a CA and a certificate are generated
//! once in `<data_dir>/federation/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use http_body_util::Full;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use streamcdn_cdni::CdnPid;
use streamcdn_config::{Config, FederationConfig};
use tokio_rustls::TlsAcceptor;

/// The path under which the federation interface lives on the listener.
pub const TRIGGERS_PATH: &str = "/cdni/v1/triggers";
pub const CONFIGURATIONS_PATH: &str = "/cdni/v1/configurations";

pub type PartnerClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The CDN PID a certificate names: its subject's common name.
pub fn participant_of(certificate: &CertificateDer<'_>) -> Option<CdnPid> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok()?.parse().ok()
}

/// The PEM files of this participant's identity.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn configured_or_generated(config: &Config) -> anyhow::Result<Files> {
    let federation = &config.federation;
    if let (Some(cert), Some(key), Some(ca)) = (&federation.cert, &federation.key, &federation.ca) {
        return Ok(Files {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        });
    }
    generate(federation, &config.node.data_dir.join("federation"))
}

/// A CA and a certificate naming the participant, made once (delete the directory to
/// make new ones).
fn generate(federation: &FederationConfig, dir: &Path) -> anyhow::Result<Files> {
    let files = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    };
    if files.cert.exists() && files.key.exists() && files.ca.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("streamcdn federation CA of {}", federation.participant),
    );
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    if let Some(addr) = federation
        .listen
        .addr()
        .filter(|a| !a.ip().is_unspecified())
    {
        names.push(addr.ip().to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        federation.participant.to_string(),
    );
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    crate::tls::write_atomically(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
    crate::tls::write_atomically(&files.cert, cert.pem().as_bytes(), 0o644)?;
    crate::tls::write_atomically(&files.ca, ca_cert.pem().as_bytes(), 0o644)?;
    tracing::info!(dir = %dir.display(), participant = %federation.participant, "generated a federation CA and certificate");
    Ok(files)
}

/// This participant's certificate, key and trust anchors, checked.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl Identity {
    /// Blocking file work: call off the async workers.
    pub fn load(config: &Config) -> anyhow::Result<Identity> {
        let files = configured_or_generated(config)?;
        let read = |path: &Path, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("reading federation {what} {}", path.display()))
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&files.cert, "cert")?)
                .collect::<Result<_, _>>()
                .with_context(|| format!("federation.cert {}", files.cert.display()))?;
        let leaf = chain.first().with_context(|| {
            format!(
                "federation.cert {} holds no certificate",
                files.cert.display()
            )
        })?;
        let us = config.federation.participant;
        match participant_of(leaf) {
            Some(named) if named == us => {}
            named => anyhow::bail!(
                "federation.cert {} names {} but federation.participant is {us}: the certificate's subject CN must be the participant id",
                files.cert.display(),
                named.map_or("no participant id".to_owned(), |n| n.to_string())
            ),
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "key")?)
            .with_context(|| format!("federation.key {}", files.key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(&files.ca, "CA")?) {
            let ca = ca.with_context(|| format!("federation.ca {}", files.ca.display()))?;
            roots
                .add(ca)
                .with_context(|| format!("federation.ca {}", files.ca.display()))?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "federation.ca {} holds no certificate",
            files.ca.display()
        );
        Ok(Identity {
            chain,
            key,
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The listener's TLS: our certificate, and a client certificate from the CA
    /// required of everyone.
    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("federation.cert and federation.key do not make a pair")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// An HTTPS client that presents our certificate and accepts only `partner`'s.
    pub fn client_for(&self, partner: CdnPid) -> anyhow::Result<PartnerClient> {
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()?;
        let verifier = Arc::new(PartnerVerifier {
            webpki,
            expected: partner,
        });
        let tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(http);
        Ok(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        )
    }
}

/// The CA's check, then that the certificate names the partner we meant to call.
#[derive(Debug)]
struct PartnerVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    expected: CdnPid,
}

impl ServerCertVerifier for PartnerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match participant_of(end_entity) {
            Some(named) if named == self.expected => Ok(ServerCertVerified::assertion()),
            named => Err(rustls::Error::General(format!(
                "the partner's certificate names {} instead of {}",
                named.map_or("no participant".to_owned(), |n| n.to_string()),
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

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

/// A partner as configured, with its client.
pub struct Partner {
    pub id: CdnPid,
    /// `https://host:port`, no trailing slash.
    pub url: String,
    /// Configuration ids we delegate to it.
    pub delegate: Vec<String>,
    pub client: PartnerClient,
}

pub fn partners(config: &Config, identity: &Identity) -> anyhow::Result<BTreeMap<CdnPid, Partner>> {
    config
        .federation
        .partners
        .iter()
        .map(|p| {
            Ok((
                p.id,
                Partner {
                    id: p.id,
                    url: p.url.trim_end_matches('/').to_owned(),
                    delegate: p.delegate.clone(),
                    client: identity.client_for(p.id)?,
                },
            ))
        })
        .collect()
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

    #[test]
    fn generated_identity_names_the_participant() {
        let dir = std::env::temp_dir().join(format!("streamcdn-fed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default();
        config.node.data_dir = dir.clone();
        config.federation.participant = "AS64511:7".parse().unwrap();
        let identity = Identity::load(&config).unwrap();
        assert_eq!(
            participant_of(&identity.chain[0]),
            Some(config.federation.participant)
        );
        assert!(identity.acceptor().is_ok());
        // Kept: a second start uses the same certificate.
        let again = Identity::load(&config).unwrap();
        assert_eq!(again.chain, identity.chain);
        // A certificate naming someone else is refused at start.
        config.federation.participant = "AS64511:8".parse().unwrap();
        let refused = Identity::load(&config).err().unwrap().to_string();
        assert!(refused.contains("names AS64511:7"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
