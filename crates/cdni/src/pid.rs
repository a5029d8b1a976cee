//! CDN Provider IDs and the `cdn-path` of a command (RFC 8007 §4.6).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A CDN PID: `AS` + the provider's AS number + `:` + a qualifier, e.g. `AS64496:1`
/// (§4.6; Appendix A: `"AS[0-9]+:[0-9]+"`). Compared by value, so `AS64496:01` is
/// `AS64496:1`: loop detection errs on the side of seeing ourselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CdnPid {
    pub asn: u32,
    pub qualifier: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PidError {
    #[error("{0:?} does not start with \"AS\"")]
    NoAsPrefix(String),
    #[error("{0:?} has no \":<qualifier>\"")]
    NoQualifier(String),
    #[error("{0:?}: the AS number and the qualifier are decimal numbers below 2^32")]
    NotANumber(String),
}

impl FromStr for CdnPid {
    type Err = PidError;

    fn from_str(s: &str) -> Result<Self, PidError> {
        let rest = s
            .strip_prefix("AS")
            .ok_or_else(|| PidError::NoAsPrefix(s.to_owned()))?;
        let (asn, qualifier) = rest
            .split_once(':')
            .ok_or_else(|| PidError::NoQualifier(s.to_owned()))?;
        let number = |part: &str| {
            // `u32::from_str` alone would take a leading `+`.
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        match (number(asn), number(qualifier)) {
            (Some(asn), Some(qualifier)) => Ok(CdnPid { asn, qualifier }),
            _ => Err(PidError::NotANumber(s.to_owned())),
        }
    }
}

impl fmt::Display for CdnPid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AS{}:{}", self.asn, self.qualifier)
    }
}

impl Serialize for CdnPid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CdnPid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The CDNs that have already issued a command to their dCDNs, oldest first (§4.6).
/// Empty for a command our own operator originates here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CdnPath(Vec<CdnPid>);

impl CdnPath {
    pub fn new(pids: Vec<CdnPid>) -> Self {
        CdnPath(pids)
    }

    pub fn pids(&self) -> &[CdnPid] {
        &self.0
    }

    /// A dCDN rejects a command whose path already holds its own PID (§4.6).
    pub fn contains(&self, pid: &CdnPid) -> bool {
        self.0.contains(pid)
    }

    /// The path of the command as we cascade it: every CDN appends its PID to each
    /// command it originates or cascades (§4.6).
    pub fn cascaded_by(&self, us: CdnPid) -> CdnPath {
        let mut pids = self.0.clone();
        pids.push(us);
        CdnPath(pids)
    }

    /// Transit CDNs do not cascade a command to a dCDN already listed (§4.6).
    pub fn may_cascade_to(&self, dcdn: &CdnPid) -> bool {
        !self.contains(dcdn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_in_the_rfc_form_only() {
        let pid: CdnPid = "AS64496:1".parse().unwrap();
        assert_eq!(
            pid,
            CdnPid {
                asn: 64496,
                qualifier: 1
            }
        );
        assert_eq!(pid.to_string(), "AS64496:1");
        assert_eq!(
            "AS4294967295:0".parse::<CdnPid>().map(|p| p.asn),
            Ok(u32::MAX)
        );
        assert_eq!("AS64496:01".parse::<CdnPid>(), Ok(pid));
        for bad in [
            "",
            "as64496:1",
            "64496:1",
            "AS64496",
            "AS:1",
            "AS64496:",
            "AS+1:1",
            "AS1:-1",
            "AS4294967296:0",
            "AS64496:1:2",
            " AS64496:1",
            "AS64496:1 ",
            "ASx:1",
        ] {
            assert!(bad.parse::<CdnPid>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn path_detects_loops_and_grows_on_cascade() {
        let a: CdnPid = "AS64496:1".parse().unwrap();
        let b: CdnPid = "AS64500:0".parse().unwrap();
        let path = CdnPath::new(vec![a]);
        assert!(path.contains(&a) && !path.contains(&b));
        let forwarded = path.cascaded_by(b);
        assert_eq!(forwarded.pids(), &[a, b]);
        assert!(!forwarded.may_cascade_to(&a));
        assert_eq!(
            serde_json::to_string(&forwarded).unwrap(),
            r#"["AS64496:1","AS64500:0"]"#
        );
    }
}
