//! This deployment as a participant of a CDN federation: its mutual-TLS identity, its
//! partners and the HTTPS clients that call them.
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

use axum::body::Bytes;
use http_body_util::Full;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use streamcdn_cdni::CdnPid;
use streamcdn_config::{Config, FederationConfig};
use streamcdn_support::certs;
use streamcdn_support::http_client::ClientOptions;
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// Why the identity cannot be set up: what was being done (naming the setting or
/// file), and the cause.
#[derive(Debug, Error)]
#[error("{what}{}", cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
pub struct IdentityError {
    what: String,
    #[source]
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

fn invalid(what: String) -> IdentityError {
    IdentityError { what, cause: None }
}

/// Names what was being done when a step fails.
trait Doing<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, IdentityError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Doing<T> for Result<T, E> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, IdentityError> {
        self.map_err(|cause| IdentityError {
            what: what(),
            cause: Some(Box::new(cause)),
        })
    }
}

impl<T> Doing<T> for Option<T> {
    fn doing(self, what: impl FnOnce() -> String) -> Result<T, IdentityError> {
        self.ok_or_else(|| invalid(what()))
    }
}

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

fn configured_or_generated(config: &Config) -> Result<Files, IdentityError> {
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
fn generate(federation: &FederationConfig, dir: &Path) -> Result<Files, IdentityError> {
    let files = Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        ca: dir.join("ca.pem"),
    };
    if files.cert.exists() && files.key.exists() && files.ca.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).doing(|| format!("creating {}", dir.display()))?;
    let listening = federation
        .listen
        .addr()
        .filter(|a| !a.ip().is_unspecified())
        .map(|a| a.ip().to_string());
    let (ca, pair) = certs::signed_by_new_ca(
        &format!("streamcdn federation CA of {}", federation.participant),
        &federation.participant.to_string(),
        certs::names_with(listening),
    )
    .doing(|| "generating the federation CA and certificate".to_owned())?;
    // Each names the file it could not write.
    pair.write(&files.cert, &files.key)
        .and_then(|()| certs::write(&files.ca, &ca, 0o644))
        .map_err(|e| invalid(e.to_string()))?;
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
    pub fn load(config: &Config) -> Result<Identity, IdentityError> {
        let files = configured_or_generated(config)?;
        let read = |path: &Path, what: &str| {
            std::fs::read(path).doing(|| format!("reading federation {what} {}", path.display()))
        };
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&read(&files.cert, "cert")?)
                .collect::<Result<_, _>>()
                .doing(|| format!("federation.cert {}", files.cert.display()))?;
        let leaf = chain.first().doing(|| {
            format!(
                "federation.cert {} holds no certificate",
                files.cert.display()
            )
        })?;
        let us = config.federation.participant;
        match participant_of(leaf) {
            Some(named) if named == us => {}
            named => {
                return Err(invalid(format!(
                "federation.cert {} names {} but federation.participant is {us}: the certificate's subject CN must be the participant id",
                files.cert.display(),
                named.map_or("no participant id".to_owned(), |n| n.to_string())
            )))
            }
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&files.key, "key")?)
            .doing(|| format!("federation.key {}", files.key.display()))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&read(&files.ca, "CA")?) {
            let ca = ca.doing(|| format!("federation.ca {}", files.ca.display()))?;
            roots
                .add(ca)
                .doing(|| format!("federation.ca {}", files.ca.display()))?;
        }
        if roots.is_empty() {
            return Err(invalid(format!(
                "federation.ca {} holds no certificate",
                files.ca.display()
            )));
        }
        Ok(Identity {
            chain,
            key,
            roots: Arc::new(roots),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        })
    }

    /// The listener's TLS: our certificate, and a client certificate from the CA
    /// required of everyone.
    pub fn acceptor(&self) -> Result<TlsAcceptor, IdentityError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), self.provider.clone())
                .build()
                .doing(|| "federation.ca".to_owned())?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .doing(|| "TLS versions".to_owned())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .doing(|| "federation.cert and federation.key do not make a pair".to_owned())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// An HTTPS client that presents our certificate and accepts only `partner`'s.
    pub fn client_for(&self, partner: CdnPid) -> Result<PartnerClient, IdentityError> {
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .doing(|| "federation.ca".to_owned())?;
        let verifier = Arc::new(PartnerVerifier {
            webpki,
            expected: partner,
        });
        let tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .doing(|| "TLS versions".to_owned())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .doing(|| "federation.cert and federation.key".to_owned())?;
        let options = ClientOptions::new()
            .under_tls()
            .connect_timeout(Duration::from_secs(2))
            .keep_idle_for(Duration::from_secs(30));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(options.connector());
        Ok(options.builder().build(connector))
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

/// A partner as configured, with its client.
pub struct Partner {
    pub id: CdnPid,
    /// `https://host:port`, no trailing slash.
    pub url: String,
    /// Configuration ids we delegate to it.
    pub delegate: Vec<String>,
    pub client: PartnerClient,
}

pub fn partners(
    config: &Config,
    identity: &Identity,
) -> Result<BTreeMap<CdnPid, Partner>, IdentityError> {
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
