//! `[http]`: the viewers' playback listeners (HTTP and HTTPS) and their certificate.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::checks::{http_url, Invalid};
use crate::units::{ByteSize, Listen};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Playback for viewers (the edge cache).
    pub listen: SocketAddr,
    /// Largest request head accepted; larger ones get 431.
    pub max_header_size: ByteSize,
    /// The URL viewers and lower tiers reach this listener at, announced in the node
    /// directory. Defaults to `http://<listen>` unless listen is unspecified (0.0.0.0).
    pub advertise: Option<String>,
    /// Playback over HTTPS (HTTP/2 and HTTP/1.1), the same routes as `listen`; `"off"`
    /// turns it off.
    pub tls_listen: Listen,
    /// PEM certificate chain (leaf first) and private key for `tls_listen`, reloaded
    /// when the files change. Neither set: a self-signed certificate generated once in
    /// `<node.data_dir>/tls/`.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl HttpConfig {
    /// The announced playback URL, without a trailing slash; `None` when it cannot be
    /// derived.
    pub fn advertised_url(&self) -> Option<String> {
        match &self.advertise {
            Some(url) => Some(url.trim_end_matches('/').to_owned()),
            None if self.listen.ip().is_unspecified() => None,
            None => Some(format!("http://{}", self.listen)),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8080).into(),
            max_header_size: ByteSize(16 * 1024),
            advertise: None,
            tls_listen: Listen::At(([0, 0, 0, 0], 8443).into()),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl HttpConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        if let Some(url) = &self.advertise {
            http_url("http.advertise", url)?;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err((
                    "http.tls_cert".into(),
                    "needs http.tls_key (the certificate's private key) too".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "http.tls_key".into(),
                    "needs http.tls_cert (the key's certificate) too".into(),
                ))
            }
            _ => {}
        }
        if self.tls_listen.addr() == Some(self.listen) {
            return Err((
                "http.tls_listen".into(),
                "must differ from http.listen".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::tests::parse;

    #[test]
    fn tls_cert_and_key_come_together() {
        let c = parse("[http]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(c.http.tls_key.as_deref(), Some(Path::new("k.pem")));
        let e = parse("[http]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (2, Some("http.tls_cert")));
        assert!(e.to_string().contains("http.tls_key"), "{e}");
        let e = parse("[http]\n\ntls_key = \"k.pem\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_deref()), (3, Some("http.tls_key")));
    }
}
