//! The playback listener's certificate: `http.tls_cert` and `http.tls_key`, or a
//! self-signed pair generated once in `<node.data_dir>/tls/`. Handshakes take the pair
//! from a resolver whose `Arc` is swapped when the files change, so new connections get
//! a renewed certificate without a restart; a bad new pair is logged and the old kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use streamcdn_config::HttpConfig;
use streamcdn_support::certs;
use streamcdn_urls::authority::Authority;
use thiserror::Error;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// What the playback listener's TLS setup can fail on; each names the setting (or the
/// generated file) at fault.
#[derive(Debug, Error)]
pub enum CertError {
    #[error("{what}: cannot read {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {} is not valid PEM: {source}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("{what}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what}: {} holds no PEM private key", path.display())]
    NoKey { what: &'static str, path: PathBuf },
    #[error("{what}: {} is not a usable private key: {source}", path.display())]
    UnsupportedKey {
        what: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{what}: the certificate in {} cannot be parsed: {source}", path.display())]
    BadCertificate {
        what: &'static str,
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{what}: {} is not the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        what: &'static str,
        key: PathBuf,
        cert: PathBuf,
    },
    #[error("cannot generate a self-signed certificate in {}: {message}", dir.display())]
    Generate { dir: PathBuf, message: String },
}

/// Where the pair lives.
#[derive(Debug, Clone)]
struct CertFiles {
    cert: PathBuf,
    key: PathBuf,
    /// Made by [`generated`] rather than named in the configuration.
    generated: bool,
}

/// Size and modification time of both files (`None`: missing), to notice a change.
type Stamps = [Option<(SystemTime, u64)>; 2];

impl CertFiles {
    /// What errors call the certificate and the key.
    fn names(&self) -> (&'static str, &'static str) {
        if self.generated {
            ("generated certificate", "generated key")
        } else {
            ("`http.tls_cert`", "`http.tls_key`")
        }
    }

    fn stamps(&self) -> Stamps {
        [&self.cert, &self.key].map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
    }

    fn read(&self, path: &Path, what: &'static str) -> Result<Vec<u8>, CertError> {
        std::fs::read(path).map_err(|source| CertError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    }

    /// Reads and checks the pair: a certificate chain, a key rustls can sign with, and
    /// the key belonging to the chain's first certificate.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
        let (cert_name, key_name) = self.names();
        let cert_pem = self.read(&self.cert, cert_name)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| CertError::Pem {
                what: cert_name,
                path: self.cert.clone(),
                source,
            })?;
        if chain.is_empty() {
            return Err(CertError::NoCertificate {
                what: cert_name,
                path: self.cert.clone(),
            });
        }
        let key_pem = self.read(&self.key, key_name)?;
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(key) => key,
            Err(pem::Error::NoItemsFound) => {
                return Err(CertError::NoKey {
                    what: key_name,
                    path: self.key.clone(),
                })
            }
            Err(source) => {
                return Err(CertError::Pem {
                    what: key_name,
                    path: self.key.clone(),
                    source,
                })
            }
        };
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|source| CertError::UnsupportedKey {
                what: key_name,
                path: self.key.clone(),
                source,
            })?;
        let pair = CertifiedKey::new(chain, signing_key);
        match pair.keys_match() {
            // A key type whose public half rustls cannot derive is taken on trust.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(pair)
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(CertError::KeyMismatch {
                    what: key_name,
                    key: self.key.clone(),
                    cert: self.cert.clone(),
                })
            }
            Err(source) => Err(CertError::BadCertificate {
                what: cert_name,
                path: self.cert.clone(),
                source,
            }),
        }
    }
}

/// The names a generated certificate is valid for: loopback, and the hosts viewers are
/// told to use (`http.advertise`, and `http.tls_listen` when it is a specific address).
fn generated_names(http: &HttpConfig) -> Vec<String> {
    let advertised = http.advertise.as_deref().and_then(url_host);
    let listening = http
        .tls_listen
        .addr()
        .filter(|a| !a.ip().is_unspecified())
        .map(|a| a.ip().to_string());
    certs::names_with(advertised.into_iter().chain(listening))
}

/// The host of `scheme://host[:port][/...]`, without IPv6 brackets.
fn url_host(url: &str) -> Option<String> {
    Authority::parse(url).map(|authority| authority.host.to_owned())
}

/// `<data_dir>/tls/cert.pem` and `key.pem`, generated on the first start and kept
/// after (delete them to generate a new pair).
fn generated(http: &HttpConfig, data_dir: &Path) -> Result<CertFiles, CertError> {
    let dir = data_dir.join("tls");
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        generated: true,
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let failed = |message: String| CertError::Generate {
        dir: dir.clone(),
        message,
    };
    let pair = certs::self_signed("streamcdn self-signed", generated_names(http))
        .map_err(|e| failed(e.to_string()))?;
    std::fs::create_dir_all(&dir).map_err(|e| failed(e.to_string()))?;
    pair.write(&files.cert, &files.key)
        .map_err(|e| failed(e.to_string()))?;
    tracing::info!(dir = %dir.display(), "generated a self-signed TLS certificate");
    Ok(files)
}

/// SHA-256 of a certificate's DER, as `AB:CD:...` (what `openssl x509 -fingerprint
/// -sha256` and browsers show).
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn leaf_fingerprint(pair: &CertifiedKey) -> String {
    pair.cert.first().map(fingerprint).unwrap_or_default()
}

/// Hands every handshake the current pair; [`Certificates::watch`] replaces it.
#[derive(Debug)]
struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn get(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, pair: CertifiedKey) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The playback listener's certificate, loaded and checked, and kept current.
pub struct Certificates {
    files: CertFiles,
    stamps: Stamps,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingCert>,
}

impl Certificates {
    /// The configured pair, or the generated one (made now if missing); fails on a pair
    /// that cannot be served. Blocking file work: call off the async workers.
    pub fn open(http: &HttpConfig, data_dir: &Path) -> Result<Self, CertError> {
        let files = match (&http.tls_cert, &http.tls_key) {
            (Some(cert), Some(key)) => CertFiles {
                cert: cert.clone(),
                key: key.clone(),
                generated: false,
            },
            // The configuration's validation lets only both or neither through.
            _ => generated(http, data_dir)?,
        };
        // Ring, named here rather than the process default, which another dependency
        // could have installed differently.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Stamped before reading, so a change during the load is seen on the next poll.
        let stamps = files.stamps();
        let pair = files.load(&provider)?;
        Ok(Self {
            files,
            stamps,
            provider,
            resolver: Arc::new(ReloadingCert {
                current: RwLock::new(Arc::new(pair)),
            }),
        })
    }

    /// The served certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> String {
        leaf_fingerprint(&self.resolver.get())
    }

    /// The generated certificate's file, if this is one.
    pub fn generated_at(&self) -> Option<&Path> {
        self.files.generated.then_some(self.files.cert.as_path())
    }

    /// [`Certificates::open`] off the async workers, with an acceptor offering `alpn`;
    /// `what` names the listener in errors.
    pub async fn load(
        http: &HttpConfig,
        data_dir: &Path,
        alpn: &[&[u8]],
        what: &str,
    ) -> anyhow::Result<(Self, TlsAcceptor)> {
        use anyhow::Context as _;
        let (http, data_dir) = (http.clone(), data_dir.to_owned());
        let certificates = tokio::task::spawn_blocking(move || Self::open(&http, &data_dir))
            .await
            .with_context(|| format!("loading the TLS certificate for {what}"))??;
        let acceptor = certificates
            .acceptor(alpn)
            .with_context(|| format!("cannot set up TLS for {what}"))?;
        Ok((certificates, acceptor))
    }

    /// Accepts TLS 1.2 and 1.3 and offers `alpn` (most preferred first; empty for RTMPS).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor, rustls::Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.resolver.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Polls the files until shutdown; a changed pair that loads replaces the served
    /// one, a bad one is logged and the old one kept.
    pub async fn watch(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_POLL) => {}
                _ = shutdown.changed() => return,
            }
            let (files, provider, seen) = (self.files.clone(), self.provider.clone(), self.stamps);
            let polled = tokio::task::spawn_blocking(move || {
                let now = files.stamps();
                (now != seen).then(|| (now, files.load(&provider)))
            })
            .await;
            let Ok(Some((stamps, loaded))) = polled else {
                continue;
            };
            // Remembered even when the pair is bad: it is retried once the files change
            // again (as when the key is written after the certificate).
            self.stamps = stamps;
            match loaded {
                Ok(pair) => {
                    let fingerprint = leaf_fingerprint(&pair);
                    self.resolver.set(pair);
                    tracing::info!(%fingerprint, cert = %self.files.cert.display(), "TLS certificate reloaded");
                    metrics::counter!("streamcdn_tls_reloads_total", "outcome" => "loaded")
                        .increment(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but cannot be served; keeping the previous one");
                    metrics::counter!("streamcdn_tls_reloads_total", "outcome" => "refused")
                        .increment(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(advertise: Option<&str>) -> HttpConfig {
        HttpConfig {
            advertise: advertise.map(str::to_owned),
            ..HttpConfig::default()
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("streamcdn-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("http://cdn.example:8080").as_deref(),
            Some("cdn.example")
        );
        assert_eq!(
            url_host("http://[2001:db8::1]:80/x").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(url_host("http://10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(url_host("nonsense"), None);
    }

    #[test]
    fn generated_once_then_reused_with_a_private_key_file() {
        let dir = temp_dir("generate");
        let first = Certificates::open(&http(Some("http://cdn.example:8080")), &dir).unwrap();
        let again = Certificates::open(&http(None), &dir).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(first.fingerprint().len(), 32 * 3 - 1);
        assert_eq!(
            first.generated_at(),
            Some(dir.join("tls/cert.pem").as_path())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("tls/key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_pairs_name_the_setting() {
        let dir = temp_dir("bad");
        let a = Certificates::open(&http(None), &dir.join("a")).unwrap();
        let b = Certificates::open(&http(None), &dir.join("b")).unwrap();
        let configured = |cert: &Path, key: &Path| HttpConfig {
            tls_cert: Some(cert.to_owned()),
            tls_key: Some(key.to_owned()),
            ..HttpConfig::default()
        };
        let open = |cert: &Path, key: &Path| {
            Certificates::open(&configured(cert, key), &dir)
                .err()
                .expect("refused")
                .to_string()
        };
        assert!(Certificates::open(&configured(&a.files.cert, &a.files.key), &dir).is_ok());
        let e = open(&a.files.cert, &b.files.key);
        assert!(
            e.starts_with("`http.tls_key`: ") && e.contains("is not the private key"),
            "{e}"
        );
        let e = open(&a.files.key, &a.files.key);
        assert!(
            e.starts_with("`http.tls_cert`: ") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = open(&a.files.cert, &a.files.cert);
        assert!(
            e.starts_with("`http.tls_key`: ") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = open(&dir.join("missing.pem"), &a.files.key);
        assert!(e.starts_with("`http.tls_cert`: cannot read"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
