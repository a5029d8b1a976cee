//! `[federation]`: this deployment as a participant of a CDN federation (CDNI) — its id,
//! its mutual-TLS identity and listener, and its partners.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use streamcdn_cdni::CdnPid;

use crate::checks::Invalid;
use crate::units::Listen;

/// This deployment as a participant of a CDN federation (CDNI): its id, the mutual-TLS
/// listener partners send configurations and RFC 8007 trigger commands to, and the
/// partners it delegates to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// This participant's CDN PID (RFC 8007 §4.6): `AS<number>:<qualifier>`. Its
    /// certificate's subject common name must be this id.
    pub participant: CdnPid,
    /// The federation listener (HTTPS, client certificates required); `"off"` turns it
    /// off.
    pub listen: Listen,
    /// PEM certificate (naming `participant`) and key, used both to serve and to call
    /// partners, and the CA certificates partners' certificates must chain to. None
    /// set: a CA and a certificate generated once in `<node.data_dir>/federation/`
    /// (partners then need that CA).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// Which of our servers carry partners' configurations: node ids or sites. Empty:
    /// every edge.
    pub carry_on: Vec<String>,
    pub partners: Vec<PartnerConfig>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            participant: CdnPid {
                asn: 64496,
                qualifier: 1,
            },
            listen: Listen::At(([0, 0, 0, 0], 9443).into()),
            cert: None,
            key: None,
            ca: None,
            carry_on: Vec::new(),
            partners: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub id: CdnPid,
    /// The partner's federation listener, `https://host:port`.
    pub url: String,
    /// Configurations (ours, or ones we carry for their owner) we delegate to it.
    #[serde(default)]
    pub delegate: Vec<String>,
}

impl FederationConfig {
    pub(crate) fn validate(&self) -> Result<(), Invalid> {
        let set = [&self.cert, &self.key, &self.ca];
        if set.iter().any(|p| p.is_some()) && !set.iter().all(|p| p.is_some()) {
            return Err((
                "federation.cert".into(),
                "federation.cert, federation.key and federation.ca go together".into(),
            ));
        }
        let mut partners = HashSet::new();
        for (i, partner) in self.partners.iter().enumerate() {
            let key = format!("federation.partners[{i}]");
            if partner.id == self.participant {
                return Err((
                    format!("{key}.id"),
                    format!("{} is this participant", partner.id),
                ));
            }
            if !partners.insert(partner.id) {
                return Err((
                    format!("{key}.id"),
                    format!("{} is listed twice", partner.id),
                ));
            }
            if !partner.url.starts_with("https://") || partner.url.len() <= 8 {
                return Err((
                    format!("{key}.url"),
                    format!("{:?} is not an https:// URL", partner.url),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::parse;
    use crate::Listen;

    #[test]
    fn federation_is_checked_at_start() {
        let c = parse("").unwrap();
        assert_eq!(c.federation.participant.to_string(), "AS64496:1");
        assert_eq!(c.federation.listen, Listen::At(([0, 0, 0, 0], 9443).into()));
        let text = "[federation]\nparticipant = \"AS64500:1\"\n\n[[federation.partners]]\nid = \"AS64496:1\"\nurl = \"https://127.0.1.1:9443\"\ndelegate = [\"live-b\"]\n\n[[configurations]]\nid = \"live-b\"\nhostnames = [\"live.b.test\"]\n";
        let c = parse(text).unwrap();
        assert_eq!(c.federation.partners[0].delegate, ["live-b"]);
        let e = parse("[federation]\nparticipant = \"64500\"\n").unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (2, Some("federation.participant"))
        );
        let e = parse("[[federation.partners]]\nid = \"AS64496:1\"\nurl = \"https://x\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("is this participant"), "{e}");
        let e = parse("[[federation.partners]]\nid = \"AS1:1\"\nurl = \"http://x\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("federation.partners[0].url"));
        let e = parse("[federation]\ncert = \"c.pem\"\n").unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let twice = "[[configurations]]\nid = \"a\"\nhostnames = [\"x.test\"]\n\n[[configurations]]\nid = \"b\"\nhostnames = [\"X.test\"]\n";
        let e = parse(twice).unwrap_err();
        assert_eq!(
            (e.line, e.key.as_deref()),
            (7, Some("configurations[1].hostnames"))
        );
        let e = parse("[[configurations]]\nid = \"a/b\"\nhostnames = [\"x.test\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("configurations[0].id"));
    }
}
