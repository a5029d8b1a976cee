//! Where a trigger goes, typed: one of the local participant's servers (its control
//! endpoint, its tier, and the partner configuration whose cache holds the content) or
//! a partner participant (a dCDN) the command is cascaded to; and what each is sent
//! (its share of the command's references).
//!
//! Kept as text in the persisted collection (`<control>`, `<control>#<configuration>`,
//! `cdni:<pid>`), read back here and nowhere else. A server's tier travels in the node
//! directory as the `tier` query parameter of its `control` address
//! ([`Tier::announce`], [`Tier::of_address`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pid::CdnPid;
use crate::wire::References;

/// Where a server sits among the caches: the top tier is handled first, then the
/// mid-tier, then the edges below them, so no cache refills from one not yet handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Top,
    Mid,
    Edge,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Top => "top",
            Tier::Mid => "mid",
            Tier::Edge => "edge",
        }
    }

    /// The `control` address a server announces: its control URL, with its tier.
    pub fn announce(self, control_url: &str) -> String {
        format!("{control_url}?tier={}", self.as_str())
    }

    /// The tier a `control` address announces (an edge, if it says nothing we know).
    pub fn of_address(url: &str) -> Tier {
        let query = url.split_once('?').map_or("", |(_, query)| query);
        let named = query.split('&').find_map(|pair| pair.strip_prefix("tier="));
        match named {
            Some("top") => Tier::Top,
            Some("mid") => Tier::Mid,
            _ => Tier::Edge,
        }
    }
}

/// One of our servers, as a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTarget {
    /// The URL its control endpoint is asked at (as announced).
    pub control: String,
    pub tier: Tier,
    /// The partner configuration whose cache holds the content; `None`: our own
    /// content, in the server's default cache.
    pub configuration: Option<String>,
}

/// A server or dCDN a trigger must reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum TargetId {
    Server(ServerTarget),
    Partner(CdnPid),
}

/// How a partner is named in the kept text.
const PARTNER_PREFIX: &str = "cdni:";

impl TargetId {
    /// A server by its announced `control` address (the tier read from it).
    pub fn server(control: &str, configuration: Option<String>) -> TargetId {
        TargetId::Server(ServerTarget {
            control: control.to_owned(),
            tier: Tier::of_address(control),
            configuration,
        })
    }

    /// When it is handled: servers by tier, partners after every server (they fill
    /// from our servers' origin, not from our caches).
    pub fn stage_rank(&self) -> usize {
        match self {
            TargetId::Server(server) => server.tier as usize,
            TargetId::Partner(_) => Tier::Edge as usize,
        }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetId::Server(ServerTarget {
                control,
                configuration: Some(configuration),
                ..
            }) => write!(f, "{control}#{configuration}"),
            TargetId::Server(server) => f.write_str(&server.control),
            TargetId::Partner(pid) => write!(f, "{PARTNER_PREFIX}{pid}"),
        }
    }
}

/// Reads the kept text back; anything that is not a partner is a server.
impl From<&str> for TargetId {
    fn from(text: &str) -> Self {
        if let Some(pid) = text
            .strip_prefix(PARTNER_PREFIX)
            .and_then(|pid| pid.parse().ok())
        {
            return TargetId::Partner(pid);
        }
        match text.split_once('#') {
            Some((control, configuration)) => {
                TargetId::server(control, Some(configuration.to_owned()))
            }
            None => TargetId::server(text, None),
        }
    }
}

impl From<String> for TargetId {
    fn from(text: String) -> Self {
        TargetId::from(text.as_str())
    }
}

impl From<TargetId> for String {
    fn from(target: TargetId) -> Self {
        target.to_string()
    }
}

/// A target and what it is sent: its share of the command's references (a server gets
/// the URLs and patterns of the configurations it carries; a partner those of the
/// configurations delegated to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub target: TargetId,
    pub references: References,
}

/// A target with nothing of its own to be sent (the whole command applies).
impl From<TargetId> for Assignment {
    fn from(target: TargetId) -> Self {
        Assignment {
            target,
            references: References::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tier_comes_from_the_control_address() {
        let control = "http://a:1/_streamcdn/control";
        assert_eq!(Tier::of_address(&Tier::Top.announce(control)), Tier::Top);
        assert_eq!(
            Tier::of_address("http://a:1/_streamcdn/control?tier=mid&x=1"),
            Tier::Mid
        );
        assert_eq!(Tier::of_address(control), Tier::Edge);
        assert_eq!(Tier::of_address("http://a:1/c?notier=top"), Tier::Edge);
        assert!(Tier::Top < Tier::Mid && Tier::Mid < Tier::Edge);
    }

    #[test]
    fn targets_keep_their_text() {
        for text in [
            "http://e1/_streamcdn/control?tier=top",
            "http://e1/_streamcdn/control?tier=mid#live-b",
            "cdni:AS64496:1",
        ] {
            let target = TargetId::from(text);
            assert_eq!(target.to_string(), text);
            let json = serde_json::to_string(&target).unwrap();
            assert_eq!(serde_json::from_str::<TargetId>(&json).unwrap(), target);
        }
        assert_eq!(
            TargetId::from("http://m/c?tier=mid#live-b"),
            TargetId::Server(ServerTarget {
                control: "http://m/c?tier=mid".into(),
                tier: Tier::Mid,
                configuration: Some("live-b".into()),
            })
        );
        assert_eq!(
            TargetId::from("cdni:AS64496:1"),
            TargetId::Partner("AS64496:1".parse().unwrap())
        );
    }
}
