//! Certificates this deployment makes for itself when none is configured: the playback
//! listener's self-signed pair (`<data_dir>/tls/`) and a federation participant's CA
//! with a certificate it signed (`<data_dir>/federation/`). The one place that calls
//! `rcgen`; each caller says what the certificate names and where it goes.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The names every generated certificate is valid for: this machine.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, Error)]
pub enum CertsError {
    #[error(transparent)]
    Generate(#[from] rcgen::Error),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A certificate and its private key, PEM.
pub struct Generated {
    pub cert: String,
    pub key: String,
}

/// [`LOOPBACK_NAMES`], then each of `more` not already there.
pub fn names_with(more: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = LOOPBACK_NAMES.map(String::from).into();
    for name in more {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn params(common_name: &str, names: Vec<String>) -> Result<rcgen::CertificateParams, CertsError> {
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    Ok(params)
}

/// A self-signed certificate for `names` (host names or IP addresses), its subject
/// `CN=common_name`, with a new key.
pub fn self_signed(common_name: &str, names: Vec<String>) -> Result<Generated, CertsError> {
    let key = rcgen::KeyPair::generate()?;
    let cert = params(common_name, names)?.self_signed(&key)?;
    Ok(Generated {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A new CA (`CN=ca_name`; its key is not kept: nothing else is ever signed by it) and
/// a certificate it signed for `names`, its subject `CN=common_name`: the CA's
/// certificate (PEM) and the signed pair.
pub fn signed_by_new_ca(
    ca_name: &str,
    common_name: &str,
    names: Vec<String>,
) -> Result<(String, Generated), CertsError> {
    let mut ca_params = params(ca_name, Vec::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let cert = params(common_name, names)?.signed_by(&key, &issuer)?;
    Ok((
        ca_cert.pem(),
        Generated {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
    ))
}

impl Generated {
    /// Writes the key (readable by its owner only) and then the certificate, each
    /// durably: a certificate on disk always has its key beside it.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), CertsError> {
        write(key, &self.key, 0o600)?;
        write(cert, &self.cert, 0o644)
    }
}

/// Writes `pem` durably with `mode`, naming the file when it fails.
pub fn write(path: &Path, pem: &str, mode: u32) -> Result<(), CertsError> {
    crate::durable::write_with_mode(path, pem.as_bytes(), mode).map_err(|source| {
        CertsError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_comes_first_and_names_are_not_repeated() {
        let names = names_with(["cdn.example".to_owned(), "127.0.0.1".to_owned()]);
        assert_eq!(names, ["localhost", "127.0.0.1", "::1", "cdn.example"]);
    }

    #[test]
    fn generated_pairs_are_pem_and_the_key_is_private() {
        let own = self_signed("streamcdn self-signed", names_with([])).unwrap();
        assert!(own.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(own.key.contains("PRIVATE KEY-----"));
        let (ca, signed) = signed_by_new_ca("a CA", "AS64496:1", names_with([])).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(ca, signed.cert);

        let dir = std::env::temp_dir().join(format!("streamcdn-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        own.write(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), own.cert);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = own.write(&dir.join("no/cert.pem"), &dir.join("no/key.pem"));
        let e = missing.expect_err("no such directory").to_string();
        assert!(e.starts_with("writing ") && e.contains("no/key.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
